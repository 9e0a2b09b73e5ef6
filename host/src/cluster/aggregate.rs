//! The cluster report: every node's Kubernetes view and hardware report,
//! folded into totals and groups of identical node profiles.
//!
//! The report travels in the asset's `description.plain`, which AIoD caps
//! at 65,535 characters. Grouping alone keeps a uniform 5,000-node cluster
//! small; [`describe`] then condenses step by step (node-name lists, then
//! profile detail, then the smallest groups) and records in `condensed`
//! what it left out. Totals and counts are never condensed, and the JSON is
//! never cut.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::crd::NodeHardwareReport;
use super::nodes::ClusterNode;
use crate::report::model::{AgentInfo, NODE_REPORT_SCHEMA};

pub const CLUSTER_REPORT_SCHEMA: &str = "aiod-hw-agent/cluster-report/v1";

/// AIoD's limit on `description.plain`, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = crate::aiod::DESCRIPTION_MAX_CHARS;

const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub schema: String,
    pub generated_at: DateTime<Utc>,
    pub agent: AgentInfo,
    pub cluster: ClusterInfo,
    pub node_count: u64,
    pub ready_nodes: u64,
    /// Nodes whose `NodeHardwareReport` was found and read.
    pub nodes_with_hardware_report: u64,
    pub totals: Totals,
    /// Groups of nodes with identical profiles, largest first.
    pub groups: Vec<NodeGroup>,
    /// Nodes in groups left out to fit the size limit; zero when none were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_nodes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_groups: u64,
    /// Condensing steps taken to fit AIoD's description limit, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub condensed: Vec<String>,
    /// Problems with individual inputs, such as reports of deleted nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub name: String,
    /// UID of the `kube-system` Namespace: stable for the cluster's life.
    pub uid: String,
    /// The API server's `gitVersion`, such as `v1.33.2`.
    pub kubernetes_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// From hardware reports; nodes without one add nothing here.
    pub cpu_sockets: u64,
    pub cpu_cores: u64,
    pub cpu_threads: u64,
    pub memory_bytes: u64,
    /// Sums of `status.capacity` over all nodes.
    pub capacity: ResourceTotals,
    /// Sums of `status.allocatable` over all nodes.
    pub allocatable: ResourceTotals,
    /// Accelerators by model, from hardware reports where present and from
    /// device-plugin resources otherwise.
    pub accelerators: Vec<AcceleratorCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceTotals {
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub pods: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extended: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AcceleratorCount {
    pub model: String,
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// The properties that make two nodes interchangeable for a platform that
/// schedules work on them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeProfile {
    pub architecture: Option<String>,
    pub cpu_model: Option<String>,
    pub cpu_sockets: Option<u32>,
    pub cpu_cores: Option<u32>,
    pub cpu_threads: Option<u32>,
    /// Installed memory rounded to GiB (firmware reservations differ by a
    /// few MiB between identical machines), or capacity when no hardware
    /// report exists.
    pub memory_gib: Option<u64>,
    pub accelerators: Vec<AcceleratorCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub hardware_report: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeGroup {
    pub count: u64,
    pub ready: u64,
    pub unschedulable: u64,
    pub profile: NodeProfile,
    /// Node names, with numbered runs written as ranges: `gpu-[001-128]`.
    pub nodes: Vec<String>,
    /// Names left out of `nodes` to fit the size limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nodes_omitted: u64,
}

/// The parts of a node report the aggregation reads. Deserialising only
/// these skips the bulk of each report (ISA flags, caches, disks, NICs),
/// which made up most of the aggregation time.
#[derive(Debug, Deserialize)]
struct HardwareFacts {
    schema: String,
    cpu: Option<CpuFacts>,
    memory: Option<MemoryFacts>,
    accelerators: Option<Vec<AcceleratorFacts>>,
}

#[derive(Debug, Deserialize)]
struct CpuFacts {
    architecture: Option<String>,
    sockets: u32,
    cores: u32,
    threads: u32,
    packages: Vec<PackageFacts>,
}

#[derive(Debug, Deserialize)]
struct PackageFacts {
    model_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MemoryFacts {
    total_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct AcceleratorFacts {
    vendor_id: String,
    device_id: String,
    model_name: Option<String>,
    memory_bytes: Option<u64>,
}

/// Inputs of one aggregation.
#[derive(Debug)]
pub struct ClusterInputs<'a> {
    pub cluster: ClusterInfo,
    pub nodes: &'a [ClusterNode],
    pub reports: &'a [NodeHardwareReport],
    pub agent: AgentInfo,
    pub generated_at: DateTime<Utc>,
}

/// Builds the full report: every node in a group, every name listed.
/// Reports whose node no longer exists are skipped with a warning.
pub fn aggregate(inputs: &ClusterInputs<'_>) -> ClusterReport {
    let mut warnings = Vec::new();
    let mut hardware: BTreeMap<&str, HardwareFacts> = BTreeMap::new();
    let known: std::collections::BTreeSet<&str> = inputs.nodes.iter().map(|node| node.name.as_str()).collect();
    for object in inputs.reports {
        let name = object.spec.node_name.as_str();
        if !known.contains(name) {
            warnings.push(format!("ignored the hardware report of node `{name}`, which no longer exists"));
            continue;
        }
        // Deserialising from a borrowed Value skips a deep copy of every report.
        match HardwareFacts::deserialize(&object.spec.report) {
            Ok(report) if report.schema != NODE_REPORT_SCHEMA => warnings.push(format!(
                "ignored the hardware report of node `{name}`: schema `{}` is not `{NODE_REPORT_SCHEMA}`",
                report.schema
            )),
            Ok(report) => {
                hardware.insert(name, report);
            }
            Err(error) => warnings.push(format!("ignored the hardware report of node `{name}`: {error}")),
        }
    }

    let mut totals = Totals::default();
    let mut accelerator_totals: BTreeMap<(String, Option<u64>), u64> = BTreeMap::new();
    let mut groups: BTreeMap<NodeProfile, (u64, u64, u64, Vec<String>)> = BTreeMap::new();
    let mut ready_nodes = 0;
    for node in inputs.nodes {
        let report = hardware.get(node.name.as_str());
        add_resources(&mut totals.capacity, &node.capacity);
        add_resources(&mut totals.allocatable, &node.allocatable);
        if let Some(cpu) = report.and_then(|report| report.cpu.as_ref()) {
            totals.cpu_sockets += u64::from(cpu.sockets);
            totals.cpu_cores += u64::from(cpu.cores);
            totals.cpu_threads += u64::from(cpu.threads);
        }
        if let Some(memory) = report.and_then(|report| report.memory.as_ref()) {
            totals.memory_bytes += memory.total_bytes;
        }
        let profile = profile(node, report);
        for accelerator in &profile.accelerators {
            *accelerator_totals.entry((accelerator.model.clone(), accelerator.memory_bytes)).or_default() +=
                accelerator.count;
        }
        let ready = node.ready == Some(true);
        ready_nodes += u64::from(ready);
        let entry = groups.entry(profile).or_default();
        entry.0 += 1;
        entry.1 += u64::from(ready);
        entry.2 += u64::from(node.unschedulable);
        entry.3.push(node.name.clone());
    }
    totals.accelerators = accelerator_totals
        .into_iter()
        .map(|((model, memory_bytes), count)| AcceleratorCount { model, count, memory_bytes })
        .collect();

    let mut groups: Vec<NodeGroup> = groups
        .into_iter()
        .map(|(profile, (count, ready, unschedulable, names))| NodeGroup {
            count,
            ready,
            unschedulable,
            profile,
            nodes: compress_names(names),
            nodes_omitted: 0,
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.profile.cmp(&b.profile)));

    ClusterReport {
        schema: CLUSTER_REPORT_SCHEMA.to_owned(),
        generated_at: inputs.generated_at,
        agent: inputs.agent.clone(),
        cluster: inputs.cluster.clone(),
        node_count: inputs.nodes.len() as u64,
        ready_nodes,
        nodes_with_hardware_report: hardware.len() as u64,
        totals,
        groups,
        other_nodes: 0,
        other_groups: 0,
        condensed: Vec::new(),
        warnings,
    }
}

fn add_resources(total: &mut ResourceTotals, resources: &super::nodes::Resources) {
    total.cpu_millicores = total.cpu_millicores.saturating_add(resources.cpu_millicores.unwrap_or(0));
    total.memory_bytes = total.memory_bytes.saturating_add(resources.memory_bytes.unwrap_or(0));
    total.ephemeral_storage_bytes =
        total.ephemeral_storage_bytes.saturating_add(resources.ephemeral_storage_bytes.unwrap_or(0));
    total.pods = total.pods.saturating_add(resources.pods.unwrap_or(0));
    for (name, amount) in &resources.extended {
        let entry = total.extended.entry(name.clone()).or_default();
        *entry = entry.saturating_add(*amount);
    }
}

fn profile(node: &ClusterNode, report: Option<&HardwareFacts>) -> NodeProfile {
    let cpu = report.and_then(|report| report.cpu.as_ref());
    let memory_bytes = report
        .and_then(|report| report.memory.as_ref())
        .map(|memory| memory.total_bytes)
        .or(node.capacity.memory_bytes);
    NodeProfile {
        architecture: node.architecture.clone().or_else(|| cpu.and_then(|cpu| cpu.architecture.clone())),
        cpu_model: cpu.and_then(|cpu| cpu.packages.iter().find_map(|package| package.model_name.clone())),
        cpu_sockets: cpu.map(|cpu| cpu.sockets),
        cpu_cores: cpu.map(|cpu| cpu.cores),
        cpu_threads: cpu.map(|cpu| cpu.threads),
        memory_gib: memory_bytes.map(|bytes| (bytes + GIB / 2) / GIB),
        accelerators: accelerators(node, report),
        instance_type: node.instance_type.clone(),
        os_image: node.os_image.clone(),
        kubelet_version: node.kubelet_version.clone(),
        roles: node.roles.clone(),
        hardware_report: report.is_some(),
    }
}

/// Accelerators by model: the PCI model names of the hardware report, which
/// name the exact part, or else the device plugin's resources.
fn accelerators(node: &ClusterNode, report: Option<&HardwareFacts>) -> Vec<AcceleratorCount> {
    let mut counts: BTreeMap<(String, Option<u64>), u64> = BTreeMap::new();
    match report.and_then(|report| report.accelerators.as_ref()) {
        Some(devices) if !devices.is_empty() => {
            for device in devices {
                let model = device
                    .model_name
                    .clone()
                    .unwrap_or_else(|| format!("PCI {}:{}", device.vendor_id, device.device_id));
                *counts.entry((model, device.memory_bytes)).or_default() += 1;
            }
        }
        _ => {
            for device in &node.accelerators {
                let model = device.product.clone().unwrap_or_else(|| device.resource.clone());
                *counts.entry((model, device.memory_bytes)).or_default() += device.count;
            }
        }
    }
    counts.into_iter().map(|((model, memory_bytes), count)| AcceleratorCount { model, count, memory_bytes }).collect()
}

/// Writes numbered runs of names as ranges, the way cluster tools write
/// host lists: `node-001 node-002 node-003 node-007` becomes `node-[001-003,007]`.
/// Names group by the text around their last number and its digit count,
/// so `gpu-9` and `gpu-10` stay apart and no name is ambiguous.
pub fn compress_names(mut names: Vec<String>) -> Vec<String> {
    type Key = (String, String, usize);
    let mut runs: BTreeMap<Key, Vec<u64>> = BTreeMap::new();
    let mut plain = Vec::new();
    for name in names.drain(..) {
        match split_number(&name) {
            Some((prefix, digits, suffix)) if digits.len() <= 18 => {
                let number = digits.parse::<u64>().unwrap_or(0);
                runs.entry((prefix.to_owned(), suffix.to_owned(), digits.len())).or_default().push(number);
            }
            _ => plain.push(name),
        }
    }
    let mut out = plain;
    for ((prefix, suffix, width), mut numbers) in runs {
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.len() == 1 {
            out.push(format!("{prefix}{:0width$}{suffix}", numbers[0]));
            continue;
        }
        let mut parts = Vec::new();
        let mut start = numbers[0];
        let mut end = start;
        for &number in &numbers[1..] {
            if number == end + 1 {
                end = number;
                continue;
            }
            parts.push(range(start, end, width));
            start = number;
            end = number;
        }
        parts.push(range(start, end, width));
        out.push(format!("{prefix}[{}]{suffix}", parts.join(",")));
    }
    out.sort();
    out
}

fn range(start: u64, end: u64, width: usize) -> String {
    if start == end { format!("{start:0width$}") } else { format!("{start:0width$}-{end:0width$}") }
}

/// Splits a name around its last run of ASCII digits.
fn split_number(name: &str) -> Option<(&str, &str, &str)> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end].rfind(|c: char| !c.is_ascii_digit()).map(|index| index + 1).unwrap_or(0);
    Some((&name[..start], &name[start..end], &name[end..]))
}

/// Serialises the report for `description.plain`, condensing it until it
/// fits: first the node-name lists shrink, then the profiles lose their
/// software fields and merge, then the smallest groups fold into
/// `other_groups`. Each step is recorded in `condensed`.
pub fn describe(report: &ClusterReport) -> anyhow::Result<(String, ClusterReport)> {
    let fits = |candidate: &ClusterReport| -> anyhow::Result<Option<String>> {
        let text = serde_json::to_string(candidate)?;
        Ok((text.chars().count() <= DESCRIPTION_MAX_CHARS).then_some(text))
    };
    if let Some(text) = fits(report)? {
        return Ok((text, report.clone()));
    }

    let mut condensed = report.clone();
    for keep in [64usize, 16, 4, 0] {
        let mut candidate = condensed.clone();
        for group in &mut candidate.groups {
            if group.nodes.len() > keep {
                let dropped: u64 = group.nodes[keep..].iter().map(|entry| entry_count(entry)).sum();
                group.nodes.truncate(keep);
                group.nodes_omitted += dropped;
            }
        }
        candidate.condensed =
            vec![format!("node names: at most {keep} entries per group; nodes_omitted counts the rest")];
        if let Some(text) = fits(&candidate)? {
            return Ok((text, candidate));
        }
        condensed = candidate;
    }

    // Merge profiles that differ only in software and placement.
    let mut merged: BTreeMap<NodeProfile, NodeGroup> = BTreeMap::new();
    for group in condensed.groups.drain(..) {
        let mut profile = group.profile.clone();
        profile.os_image = None;
        profile.kubelet_version = None;
        profile.instance_type = None;
        profile.roles.clear();
        let entry = merged.entry(profile.clone()).or_insert_with(|| NodeGroup {
            count: 0,
            ready: 0,
            unschedulable: 0,
            profile,
            nodes: Vec::new(),
            nodes_omitted: 0,
        });
        entry.count += group.count;
        entry.ready += group.ready;
        entry.unschedulable += group.unschedulable;
        entry.nodes_omitted += group.count;
    }
    condensed.groups = merged.into_values().collect();
    condensed.groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.profile.cmp(&b.profile)));
    condensed
        .condensed
        .push("profiles: os_image, kubelet_version, instance_type and roles left out; groups merged".to_owned());
    if let Some(text) = fits(&condensed)? {
        return Ok((text, condensed));
    }

    // Keep the largest groups that fit; binary search on how many.
    let all = condensed.groups.clone();
    let (mut low, mut high) = (0usize, all.len());
    let mut best: Option<(String, ClusterReport)> = None;
    while low <= high {
        let keep = (low + high) / 2;
        let mut candidate = condensed.clone();
        candidate.groups = all[..keep].to_vec();
        candidate.other_groups = (all.len() - keep) as u64;
        candidate.other_nodes = all[keep..].iter().map(|group| group.count).sum();
        candidate
            .condensed
            .push(format!("groups: the {keep} largest kept; other_groups and other_nodes count the rest"));
        candidate.warnings.truncate(20);
        match fits(&candidate)? {
            Some(text) => {
                best = Some((text, candidate));
                low = keep + 1;
            }
            None if keep == 0 => break,
            None => high = keep - 1,
        }
    }
    best.ok_or_else(|| {
        anyhow::anyhow!(
            "the cluster report exceeds AIoD's {DESCRIPTION_MAX_CHARS}-character description even without groups"
        )
    })
}

/// Counts the names a compressed entry such as `node-[001-003,007]` stands for.
fn entry_count(entry: &str) -> u64 {
    let (Some(open), Some(close)) = (entry.find('['), entry.rfind(']')) else { return 1 };
    entry[open + 1..close]
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((start, end)) => end.parse::<u64>().unwrap_or(0).saturating_sub(start.parse::<u64>().unwrap_or(0)) + 1,
            None => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compress_into_ranges() {
        let names = ["node-001", "node-002", "node-003", "node-007", "gpu-9", "gpu-10", "master", "node-100"]
            .map(str::to_owned)
            .to_vec();
        let compressed = compress_names(names);
        assert_eq!(compressed, ["gpu-10", "gpu-9", "master", "node-[001-003,007,100]"]);
        assert_eq!(compressed.iter().map(|entry| entry_count(entry)).sum::<u64>(), 8);
    }

    #[test]
    fn suffix_after_number_is_kept() {
        let names = ["rack1-n1.example", "rack1-n2.example"].map(str::to_owned).to_vec();
        assert_eq!(compress_names(names), ["rack1-n[1-2].example"]);
    }
}
