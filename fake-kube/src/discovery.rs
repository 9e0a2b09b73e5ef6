//! Discovery documents: `/version`, `/api`, `/apis` and the resource lists of each
//! group version, generated from the resource table.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::resources::RESOURCES;
use crate::state::State;

/// `GET /version`. NOTE: gitCommit and buildDate are placeholders, not those of the v1.33.2 release.
pub(crate) fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.2",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-06-17T00:00:00Z",
        "goVersion": "go1.24.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(crate) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

/// The served non-core groups in table order, each with its one version.
fn served_groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for resource in RESOURCES.iter().filter(|resource| !resource.group.is_empty()) {
        if !groups.iter().any(|(group, _)| *group == resource.group) {
            groups.push((resource.group, resource.version));
        }
    }
    groups
}

fn group_json(group: &str, version: &str) -> Value {
    let group_version = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [group_version], "preferredVersion": group_version})
}

pub(crate) fn api_group_list() -> Value {
    let groups: Vec<Value> = served_groups().into_iter().map(|(group, version)| group_json(group, version)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn api_group(name: &str) -> Option<Value> {
    let (group, version) = served_groups().into_iter().find(|(group, _)| *group == name)?;
    let mut body = group_json(group, version);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Some(body)
}

/// Legacy (non-aggregated) discovery of one group version.
///
/// NOTE: aggregated discovery (`Accept: application/json;g=apidiscovery.k8s.io;v=v2`) is
/// not implemented, and `watch` is not listed because the fake does not serve watches.
pub(crate) fn resource_list(state: &State, group: &str, version: &str) -> Option<Value> {
    const VERBS: [&str; 7] = ["create", "delete", "deletecollection", "get", "list", "patch", "update"];
    let mut entries = Vec::new();
    for resource in RESOURCES.iter().filter(|resource| resource.group == group && resource.version == version) {
        entries.push(json!({
            "name": resource.plural,
            "singularName": resource.kind.to_lowercase(),
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": VERBS,
        }));
        if state.status_enabled(resource) {
            entries.push(json!({
                "name": format!("{}/status", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if resource.is("", "serviceaccounts") && state.token_request_enabled {
            entries.push(json!({
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": true,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
    }
    if entries.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}))
}
