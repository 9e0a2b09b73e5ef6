//! A subset of Kubernetes' RBAC authorizer, for checking that a set of
//! Roles and bindings grants a service account everything it uses.
//!
//! Rules come from the ClusterRoles, ClusterRoleBindings, Roles and
//! RoleBindings stored in the fake. A rule matches when its apiGroups,
//! resources and verbs contain the request's (or `*`), and its
//! resourceNames are empty or contain the object's name. Aggregated
//! ClusterRoles and non-resource URLs are not modelled; every identity may
//! read `/version`, as `system:discovery` allows on a real server.

use serde_json::Value;

use crate::state::State;

/// The attributes of a request that RBAC rules match on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub user: &'a str,
    pub verb: &'a str,
    pub group: &'a str,
    /// `plural` or `plural/subresource`.
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    /// Empty when the URL names no object (list, create).
    pub name: &'a str,
}

/// Returns true when a binding stored in `state` grants the request.
pub(crate) fn allows(state: &State, request: &Request<'_>) -> bool {
    let subject_matches = |binding: &Value| {
        binding["subjects"].as_array().into_iter().flatten().any(|subject| subject_user(subject) == request.user)
    };
    let bindings = state.objects.iter().filter(|(key, _)| {
        key.starts_with("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/")
            || (key.starts_with("/apis/rbac.authorization.k8s.io/v1/namespaces/") && key.contains("/rolebindings/"))
    });
    for (_, binding) in bindings {
        if !subject_matches(binding) {
            continue;
        }
        // A RoleBinding grants only inside its own namespace.
        let binding_namespace = binding["metadata"]["namespace"].as_str();
        if let Some(namespace) = binding_namespace
            && request.namespace != Some(namespace)
        {
            continue;
        }
        let Some(rules) = role_rules(state, &binding["roleRef"], binding_namespace) else { continue };
        if rules.iter().any(|rule| rule_matches(rule, request)) {
            return true;
        }
    }
    false
}

fn subject_user(subject: &Value) -> String {
    match subject["kind"].as_str() {
        Some("ServiceAccount") => format!(
            "system:serviceaccount:{}:{}",
            subject["namespace"].as_str().unwrap_or_default(),
            subject["name"].as_str().unwrap_or_default()
        ),
        _ => subject["name"].as_str().unwrap_or_default().to_owned(),
    }
}

fn role_rules(state: &State, role_ref: &Value, namespace: Option<&str>) -> Option<Vec<Value>> {
    let name = role_ref["name"].as_str()?;
    let key = match (role_ref["kind"].as_str()?, namespace) {
        ("ClusterRole", _) => format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"),
        ("Role", Some(namespace)) => format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}"),
        _ => return None,
    };
    state.objects.get(&key)?["rules"].as_array().cloned()
}

fn rule_matches(rule: &Value, request: &Request<'_>) -> bool {
    let contains = |field: &str, value: &str| {
        rule[field]
            .as_array()
            .into_iter()
            .flatten()
            .any(|item| item.as_str() == Some(value) || item.as_str() == Some("*"))
    };
    if !(contains("apiGroups", request.group)
        && contains("resources", request.resource)
        && contains("verbs", request.verb))
    {
        return false;
    }
    match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => {
            !request.name.is_empty() && names.iter().any(|name| name.as_str() == Some(request.name))
        }
        _ => true,
    }
}

/// Checks the escalation rule for a new binding: the creator must hold the
/// `bind` verb on the role it references. A real server also accepts a
/// creator that already has every permission of the role; the agent never
/// does for `cluster-admin`, so that path is not modelled.
pub(crate) fn may_bind(state: &State, user: &str, binding: &Value, namespace: Option<&str>) -> bool {
    let role_ref = &binding["roleRef"];
    let (resource, role_namespace) = match role_ref["kind"].as_str() {
        Some("Role") => ("roles", namespace),
        _ => ("clusterroles", None),
    };
    let request = Request {
        user,
        verb: "bind",
        group: "rbac.authorization.k8s.io",
        resource,
        namespace: role_namespace.or(namespace),
        name: role_ref["name"].as_str().unwrap_or_default(),
    };
    allows(state, &request)
}
