//! Builds the `node-record` of one Node object.

use std::collections::{BTreeMap, BTreeSet};

use crate::accelerators::accelerators;
use crate::labels::Labels;
use crate::quantity::{Rounding, parse_quantity};
use crate::{ExtendedResource, KeyValue, NodeCondition, NodeObject, NodeRecord, ResourceAmounts};

/// Prefix of the role labels kubectl shows under ROLES
/// (`node-role.kubernetes.io/control-plane`, usually with an empty value).
const ROLE_LABEL_PREFIX: &str = "node-role.kubernetes.io/";
/// The older role label, whose value is the role (`master`, `node`).
const LEGACY_ROLE_LABEL: &str = "kubernetes.io/role";

const INSTANCE_TYPE_LABELS: &[&str] = &["node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"];
const ZONE_LABELS: &[&str] = &["topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"];
const REGION_LABELS: &[&str] = &["topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region"];

const READY_CONDITION: &str = "Ready";

/// The records of a node list, and one warning per value that was left out
/// because it did not parse.
#[derive(Debug)]
pub struct NodeRecords {
    /// One record per Node object, in input order.
    pub records: Vec<NodeRecord>,
    /// Messages naming the node, the resource or label, and the value.
    pub warnings: Vec<String>,
}

/// Builds the records of all nodes, in input order.
pub fn build_node_records(nodes: &[NodeObject]) -> NodeRecords {
    let mut warnings = Vec::new();
    let records = nodes.iter().map(|node| build_node_record(node, &mut warnings)).collect();
    NodeRecords { records, warnings }
}

/// Builds the record of one node and appends a warning for each value that
/// was left out.
pub fn build_node_record(node: &NodeObject, warnings: &mut Vec<String>) -> NodeRecord {
    let labels = Labels::new(&node.labels);
    let mut warn = |message: String| warnings.push(format!("node {:?}: {message}", node.name));

    let capacity = resource_amounts(&node.capacity, "capacity", &mut warn);
    let allocatable = resource_amounts(&node.allocatable, "allocatable", &mut warn);
    let accelerators = accelerators(&capacity, &allocatable, &labels, &mut warn);
    let (ready, pressure) = condition_summary(&node.conditions);
    let info = node.node_info.as_ref();

    NodeRecord {
        name: node.name.clone(),
        uid: node.uid.clone(),
        roles: roles(&labels),
        architecture: info.and_then(|info| non_empty(&info.architecture)),
        operating_system: info.and_then(|info| non_empty(&info.operating_system)),
        os_image: info.and_then(|info| non_empty(&info.os_image)),
        kernel_version: info.and_then(|info| non_empty(&info.kernel_version)),
        kubelet_version: info.and_then(|info| non_empty(&info.kubelet_version)),
        container_runtime: info.and_then(|info| non_empty(&info.container_runtime_version)),
        instance_type: labels.first(INSTANCE_TYPE_LABELS).map(str::to_owned),
        zone: labels.first(ZONE_LABELS).map(str::to_owned),
        region: labels.first(REGION_LABELS).map(str::to_owned),
        capacity,
        allocatable,
        accelerators,
        ready,
        pressure,
        taints: node.taints.clone(),
        unschedulable: node.unschedulable,
        created: node.creation_timestamp.clone(),
    }
}

/// Collects the roles from both role label forms, sorted and without
/// duplicates, as kubectl derives its ROLES column.
fn roles(labels: &Labels<'_>) -> Vec<String> {
    let mut roles = BTreeSet::new();
    for (key, value) in labels.iter() {
        if let Some(role) = key.strip_prefix(ROLE_LABEL_PREFIX) {
            if !role.is_empty() {
                roles.insert(role);
            }
        } else if key == LEGACY_ROLE_LABEL && !value.is_empty() {
            roles.insert(value);
        }
    }
    roles.into_iter().map(str::to_owned).collect()
}

/// Parses `status.capacity` or `status.allocatable`. `cpu` becomes
/// millicores and `memory`, `ephemeral-storage` and `pods` whole units, all
/// rounded up as apimachinery's `MilliValue` and `Value` round. Every other
/// resource is rounded down, as the WIT specifies for extended resources.
fn resource_amounts(entries: &[KeyValue], list: &str, warn: &mut dyn FnMut(String)) -> ResourceAmounts {
    let mut amounts = ResourceAmounts {
        cpu_millicores: None,
        memory_bytes: None,
        ephemeral_storage_bytes: None,
        pods: None,
        extended: Vec::new(),
    };
    let mut extended = BTreeMap::new();

    for entry in entries {
        let (scale, rounding) = match entry.key.as_str() {
            "cpu" => (3, Rounding::Up),
            "memory" | "ephemeral-storage" | "pods" => (0, Rounding::Up),
            _ => (0, Rounding::Down),
        };
        let amount = match parse_quantity(&entry.value).and_then(|quantity| quantity.to_u64(scale, rounding)) {
            Ok(amount) => amount,
            Err(error) => {
                warn(format!(
                    "{list} {} is {:?}, which is {error}; it is left out of the record",
                    entry.key, entry.value
                ));
                continue;
            }
        };
        match entry.key.as_str() {
            "cpu" => amounts.cpu_millicores = Some(amount),
            "memory" => amounts.memory_bytes = Some(amount),
            "ephemeral-storage" => amounts.ephemeral_storage_bytes = Some(amount),
            "pods" => amounts.pods = Some(amount),
            _ => {
                extended.insert(entry.key.clone(), amount);
            }
        }
    }

    amounts.extended = extended.into_iter().map(|(name, amount)| ExtendedResource { name, amount }).collect();
    amounts
}

/// Returns the `Ready` status and the sorted types of the other conditions
/// whose status is `True`. Like kubectl's STATUS column, any `Ready` status
/// other than `True` (`False`, `Unknown`) counts as not ready.
fn condition_summary(conditions: &[NodeCondition]) -> (Option<bool>, Vec<String>) {
    let ready = conditions
        .iter()
        .find(|condition| condition.condition_type == READY_CONDITION)
        .map(|condition| condition.status == "True");
    let pressure: BTreeSet<&str> = conditions
        .iter()
        .filter(|condition| condition.condition_type != READY_CONDITION && !condition.condition_type.is_empty())
        .filter(|condition| condition.status == "True")
        .map(|condition| condition.condition_type.as_str())
        .collect();
    (ready, pressure.into_iter().map(str::to_owned).collect())
}

fn non_empty(value: &str) -> Option<String> {
    if value.trim().is_empty() { None } else { Some(value.to_owned()) }
}
