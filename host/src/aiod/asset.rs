//! The computational-asset body for a node, and the stable identifier that
//! lets a re-registration find the same asset.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cluster::aggregate::ClusterReport;
use crate::report::model::NodeReport;
use crate::report::{keywords, summary_html};
use crate::sources::resolve_in_root;

/// AIoD's limit on each of `description.plain` and `description.html`, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 65_535;

/// The asset `type` of a single machine. AIoD lowercases types.
const NODE_ASSET_TYPE: &str = "compute node";

/// Derives a stable, non-reversible identifier of the machine below
/// `host_root`: a SHA-256 of its systemd machine id (`/etc/machine-id`,
/// else D-Bus's copy), or of the hostname when neither exists.
///
/// NOTE: the hostname fallback changes when the machine is renamed; every
/// systemd machine has a machine id, so the fallback is rare.
pub fn machine_resource_identifier(host_root: &Path, report: &NodeReport) -> anyhow::Result<String> {
    let machine_id = ["etc/machine-id", "var/lib/dbus/machine-id"].iter().find_map(|relative| {
        let path = resolve_in_root(host_root, Path::new(relative))?;
        std::fs::read_to_string(path).ok().map(|text| text.trim().to_owned()).filter(|text| !text.is_empty())
    });
    let seed = match (machine_id, &report.node.hostname) {
        (Some(machine_id), _) => format!("machine-id:{machine_id}"),
        (None, Some(hostname)) => format!("hostname:{hostname}"),
        (None, None) => anyhow::bail!(
            "cannot identify this machine: {} has no etc/machine-id and the report has no hostname; \
             pass --host-root pointing at the machine's root filesystem",
            host_root.display()
        ),
    };
    // The prefix keeps the hash specific to this use, so it cannot be matched
    // against hashes of the machine id made by other tools.
    let digest = Sha256::digest(format!("aiod-hw-agent/node:{seed}"));
    Ok(format!("node-{}", &hex::encode(digest)[..32]))
}

/// Builds the `ComputationalAssetCreate` body: platform fields, name, type,
/// keywords and the description `{plain: report JSON, html: summary}`.
pub fn asset_body(report: &NodeReport, platform: &str, resource_identifier: &str, name: &str) -> anyhow::Result<Value> {
    let plain = description_json(report)?;
    let html = summary_html(report);
    anyhow::ensure!(
        html.chars().count() <= DESCRIPTION_MAX_CHARS,
        "the HTML summary has {} characters, more than AIoD's {DESCRIPTION_MAX_CHARS}",
        html.chars().count()
    );
    anyhow::ensure!(
        !name.trim().is_empty() && name.chars().count() <= 256,
        "asset name `{name}` must be 1-256 characters; set --name"
    );

    Ok(json!({
        "platform": platform,
        "platform_resource_identifier": resource_identifier,
        "name": name,
        "type": NODE_ASSET_TYPE,
        "version": report.agent.version,
        "keyword": keywords(report),
        "description": {"plain": plain, "html": html},
    }))
}

/// Serialises the report compactly. When it exceeds AIoD's limit, the ISA
/// flag lists (the largest and least searched part) and then the plugin
/// attributes are dropped, and `unknown` records why.
fn description_json(report: &NodeReport) -> anyhow::Result<String> {
    let plain = serde_json::to_string(report).context("failed to serialise the node report")?;
    if plain.chars().count() <= DESCRIPTION_MAX_CHARS {
        return Ok(plain);
    }
    let mut trimmed = report.clone();
    if let Some(cpu) = trimmed.cpu.as_mut() {
        for package in &mut cpu.packages {
            package.flags.clear();
        }
    }
    trimmed.unknown.insert(
        "cpu.packages.flags".to_owned(),
        format!("left out to fit AIoD's {DESCRIPTION_MAX_CHARS}-character description limit"),
    );
    let plain = serde_json::to_string(&trimmed).context("failed to serialise the node report")?;
    if plain.chars().count() <= DESCRIPTION_MAX_CHARS {
        return Ok(plain);
    }
    trimmed.attributes.clear();
    trimmed.unknown.insert(
        "attributes".to_owned(),
        format!("left out to fit AIoD's {DESCRIPTION_MAX_CHARS}-character description limit"),
    );
    let plain = serde_json::to_string(&trimmed).context("failed to serialise the node report")?;
    anyhow::ensure!(
        plain.chars().count() <= DESCRIPTION_MAX_CHARS,
        "the node report has {} characters even without CPU flags and attributes, more than AIoD's {DESCRIPTION_MAX_CHARS}",
        plain.chars().count()
    );
    Ok(plain)
}

/// The asset `type` of a whole cluster.
const CLUSTER_ASSET_TYPE: &str = "kubernetes cluster";

/// Builds the `ComputationalAssetCreate` body of a cluster. `plain` is the
/// cluster report, already condensed to fit by
/// [`crate::cluster::aggregate::describe`]; the platform resource
/// identifier is the `kube-system` Namespace UID.
pub fn cluster_asset_body(report: &ClusterReport, plain: String, platform: &str) -> anyhow::Result<Value> {
    anyhow::ensure!(
        plain.chars().count() <= DESCRIPTION_MAX_CHARS,
        "the cluster report has {} characters, more than AIoD's {DESCRIPTION_MAX_CHARS}",
        plain.chars().count()
    );
    let html = cluster_html(report);
    let mut keyword: Vec<String> = vec!["kubernetes".to_owned()];
    for group in &report.groups {
        if let Some(architecture) = &group.profile.architecture {
            keyword.push(architecture.to_lowercase());
        }
        keyword.extend(group.profile.accelerators.iter().map(|accelerator| accelerator.model.to_lowercase()));
    }
    if !report.totals.accelerators.is_empty() {
        keyword.push("gpu".to_owned());
    }
    keyword.retain(|word| !word.is_empty() && word.chars().count() <= 250);
    keyword.sort();
    keyword.dedup();
    Ok(json!({
        "platform": platform,
        "platform_resource_identifier": report.cluster.uid,
        "name": report.cluster.name,
        "type": CLUSTER_ASSET_TYPE,
        "version": report.cluster.kubernetes_version,
        "keyword": keyword,
        "description": {"plain": plain, "html": html},
    }))
}

/// Renders a short HTML summary: totals and the largest groups, capped in rows so
/// it always fits the description limit.
fn cluster_html(report: &ClusterReport) -> String {
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut html = format!(
        "<p>Kubernetes cluster <b>{}</b> ({}), {} nodes ({} ready), {} CPU threads, {} memory.</p>",
        escape(&report.cluster.name),
        escape(&report.cluster.kubernetes_version),
        report.node_count,
        report.ready_nodes,
        report.totals.cpu_threads,
        crate::report::human_bytes(report.totals.memory_bytes),
    );
    if !report.totals.accelerators.is_empty() {
        html.push_str("<p>Accelerators: ");
        let parts: Vec<String> = report
            .totals
            .accelerators
            .iter()
            .map(|accelerator| format!("{}× {}", accelerator.count, escape(&accelerator.model)))
            .collect();
        html.push_str(&parts.join(", "));
        html.push_str("</p>");
    }
    html.push_str("<table><tr><th>Nodes</th><th>CPU</th><th>Threads</th><th>Memory</th><th>Accelerators</th></tr>");
    for group in report.groups.iter().take(100) {
        let accelerators: Vec<String> = group
            .profile
            .accelerators
            .iter()
            .map(|accelerator| format!("{}× {}", accelerator.count, escape(&accelerator.model)))
            .collect();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            group.count,
            escape(group.profile.cpu_model.as_deref().unwrap_or("unknown")),
            group.profile.cpu_threads.map(|threads| threads.to_string()).unwrap_or_default(),
            group.profile.memory_gib.map(|gib| format!("{gib} GiB")).unwrap_or_default(),
            accelerators.join(", "),
        ));
    }
    html.push_str("</table>");
    if report.groups.len() > 100 {
        html.push_str(&format!("<p>… and {} more groups.</p>", report.groups.len() - 100));
    }
    html
}
