//! The cluster's Node objects: listed by the host, handed to the sandboxed
//! `nodes` collector through the `cluster` import, and returned as records.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use serde::{Deserialize, Serialize};

use super::{Action, KubeError, list_all};
use crate::runtime::{self, NodeObject};

/// Lists every Node, sorted by name.
pub async fn list_nodes(client: &kube::Client) -> Result<Vec<Node>, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut nodes = list_all(&api, Action::cluster("list", "", "nodes", None)).await?;
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(nodes)
}

/// Extracts the parts of a Node the `nodes` collector reads.
pub fn node_object(node: &Node) -> NodeObject {
    let status = node.status.as_ref();
    let spec = node.spec.as_ref();
    let pairs = |map: Option<&BTreeMap<String, Quantity>>| -> Vec<runtime::KeyValue> {
        map.into_iter()
            .flatten()
            .map(|(key, quantity)| runtime::KeyValue { key: key.clone(), value: quantity.0.clone() })
            .collect()
    };
    NodeObject {
        name: node.metadata.name.clone().unwrap_or_default(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        creation_timestamp: node.metadata.creation_timestamp.as_ref().map(|time| time.0.to_string()),
        labels: node
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(key, value)| runtime::KeyValue { key: key.clone(), value: value.clone() })
            .collect(),
        capacity: pairs(status.and_then(|status| status.capacity.as_ref())),
        allocatable: pairs(status.and_then(|status| status.allocatable.as_ref())),
        node_info: status.and_then(|status| status.node_info.as_ref()).map(|info| runtime::NodeSystemInfo {
            architecture: info.architecture.clone(),
            operating_system: info.operating_system.clone(),
            os_image: info.os_image.clone(),
            kernel_version: info.kernel_version.clone(),
            container_runtime_version: info.container_runtime_version.clone(),
            kubelet_version: info.kubelet_version.clone(),
        }),
        conditions: status
            .and_then(|status| status.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|condition| runtime::NodeCondition {
                condition_type: condition.type_.clone(),
                status: condition.status.clone(),
                reason: condition.reason.clone(),
                last_transition_time: condition.last_transition_time.as_ref().map(|time| time.0.to_string()),
            })
            .collect(),
        taints: spec
            .and_then(|spec| spec.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|taint| runtime::NodeTaint {
                key: taint.key.clone(),
                value: taint.value.clone(),
                effect: taint.effect.clone(),
            })
            .collect(),
        unschedulable: spec.and_then(|spec| spec.unschedulable).unwrap_or(false),
        provider_id: spec.and_then(|spec| spec.provider_id.clone()),
    }
}

/// Parsed capacity or allocatable resources of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millicores: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub ephemeral_storage_bytes: Option<u64>,
    pub pods: Option<u64>,
    /// Extended resources (`nvidia.com/gpu`, `hugepages-1Gi`, ...) by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extended: BTreeMap<String, u64>,
}

/// Accelerators a device plugin advertises on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAccelerators {
    pub resource: String,
    pub vendor: String,
    pub count: u64,
    pub allocatable: u64,
    pub product: Option<String>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: String,
}

/// One node as the `nodes` collector describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub name: String,
    pub uid: String,
    pub roles: Vec<String>,
    pub architecture: Option<String>,
    pub operating_system: Option<String>,
    pub os_image: Option<String>,
    pub kernel_version: Option<String>,
    pub kubelet_version: Option<String>,
    pub container_runtime: Option<String>,
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub region: Option<String>,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub accelerators: Vec<NodeAccelerators>,
    pub ready: Option<bool>,
    pub pressure: Vec<String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub created: Option<String>,
}

impl From<runtime::ResourceAmounts> for Resources {
    fn from(amounts: runtime::ResourceAmounts) -> Self {
        Resources {
            cpu_millicores: amounts.cpu_millicores,
            memory_bytes: amounts.memory_bytes,
            ephemeral_storage_bytes: amounts.ephemeral_storage_bytes,
            pods: amounts.pods,
            extended: amounts.extended.into_iter().map(|resource| (resource.name, resource.amount)).collect(),
        }
    }
}

impl From<runtime::NodeRecord> for ClusterNode {
    fn from(record: runtime::NodeRecord) -> Self {
        ClusterNode {
            name: record.name,
            uid: record.uid,
            roles: record.roles,
            architecture: record.architecture,
            operating_system: record.operating_system,
            os_image: record.os_image,
            kernel_version: record.kernel_version,
            kubelet_version: record.kubelet_version,
            container_runtime: record.container_runtime,
            instance_type: record.instance_type,
            zone: record.zone,
            region: record.region,
            capacity: record.capacity.into(),
            allocatable: record.allocatable.into(),
            accelerators: record
                .accelerators
                .into_iter()
                .map(|device| NodeAccelerators {
                    resource: device.resource,
                    vendor: device.vendor,
                    count: device.count,
                    allocatable: device.allocatable,
                    product: device.product,
                    memory_bytes: device.memory_bytes,
                })
                .collect(),
            ready: record.ready,
            pressure: record.pressure,
            taints: record
                .taints
                .into_iter()
                .map(|taint| Taint { key: taint.key, value: taint.value, effect: taint.effect })
                .collect(),
            unschedulable: record.unschedulable,
            created: record.created,
        }
    }
}
