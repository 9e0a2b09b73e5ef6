//! Synthetic clusters for the aggregation tests and benchmarks. The
//! hardware reports come from the real collectors run over the fixture
//! roots. The Kubernetes side is built the way the `nodes` collector
//! returns it.

use std::collections::BTreeMap;

use chrono::Utc;
use hw_agent::cluster::aggregate::{ClusterInfo, ClusterInputs, ClusterReport, aggregate};
use hw_agent::cluster::crd::{NodeHardwareReport, NodeHardwareReportSpec, ReportSummary};
use hw_agent::cluster::nodes::{ClusterNode, NodeAccelerators, Resources};
use hw_agent::report::model::{AgentInfo, NodeReport};

pub const ROOTS: [&str; 4] = ["intel-xeon-2s-nvidia", "amd-epyc-instinct", "arm64-ampere-altra", "intel-hybrid-laptop"];

pub fn fixture_reports() -> Vec<NodeReport> {
    let cache = tempfile::tempdir().expect("cache dir");
    ROOTS.iter().map(|root| super::collect_once(&super::settings(&super::fixture(root), None, cache.path()))).collect()
}

pub fn cluster_node(name: &str, report: &NodeReport, memory_jitter: u64, ready: bool) -> ClusterNode {
    let gpus = report.accelerators.as_ref().map(Vec::len).unwrap_or(0) as u64;
    let memory = report.memory.as_ref().map(|memory| memory.total_bytes).unwrap_or(0) - memory_jitter;
    let mut extended = BTreeMap::new();
    if gpus > 0 {
        extended.insert("nvidia.com/gpu".to_owned(), gpus);
    }
    let resources = Resources {
        cpu_millicores: report.cpu.as_ref().map(|cpu| u64::from(cpu.threads) * 1000),
        memory_bytes: Some(memory),
        ephemeral_storage_bytes: Some(1 << 40),
        pods: Some(110),
        extended,
    };
    ClusterNode {
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        roles: Vec::new(),
        architecture: report.node.architecture.clone(),
        operating_system: Some("linux".to_owned()),
        os_image: Some("Ubuntu 24.04.1 LTS".to_owned()),
        kernel_version: report.node.kernel.clone(),
        kubelet_version: Some("v1.33.2".to_owned()),
        container_runtime: Some("containerd://1.7.22".to_owned()),
        instance_type: None,
        zone: Some("zone-a".to_owned()),
        region: None,
        capacity: resources.clone(),
        allocatable: resources,
        accelerators: (gpus > 0)
            .then(|| NodeAccelerators {
                resource: "nvidia.com/gpu".to_owned(),
                vendor: "nvidia".to_owned(),
                count: gpus,
                allocatable: gpus,
                product: None,
                memory_bytes: None,
            })
            .into_iter()
            .collect(),
        ready: Some(ready),
        pressure: Vec::new(),
        taints: Vec::new(),
        unschedulable: false,
        created: None,
    }
}

pub fn hardware_object(name: &str, report: &NodeReport) -> NodeHardwareReport {
    NodeHardwareReport::new(
        name,
        NodeHardwareReportSpec {
            node_name: name.to_owned(),
            fingerprint: "synthetic".to_owned(),
            agent_version: "test".to_owned(),
            summary: ReportSummary::of(report),
            report: serde_json::to_value(report).expect("serialises"),
        },
    )
}

/// Builds a cluster of `count` nodes of the four fixture machine types in turn,
/// named `gpu-00000`, `mi-00001`...: four profiles, one per type, and one
/// node in a hundred not ready.
pub fn uniform(fixtures: &[NodeReport], count: usize) -> (Vec<ClusterNode>, Vec<NodeHardwareReport>) {
    let mut nodes = Vec::with_capacity(count);
    let mut reports = Vec::with_capacity(count);
    for index in 0..count {
        let kind = index % 4;
        let name = format!("{}-{index:05}", ["gpu", "mi", "arm", "edge"][kind]);
        // Identical machines differ by a few MiB of firmware reservations.
        nodes.push(cluster_node(&name, &fixtures[kind], (index as u64 % 7) << 20, index % 100 != 0));
        reports.push(hardware_object(&name, &fixtures[kind]));
    }
    (nodes, reports)
}

/// Builds a cluster of `count` nodes with random-looking names and a
/// distinct memory size each, so no two share a profile (the worst case for
/// grouping). The nodes run three kubelet versions, one in ten has no
/// report, and one report belongs to a node that was deleted.
pub fn diverse(fixtures: &[NodeReport], count: usize) -> (Vec<ClusterNode>, Vec<NodeHardwareReport>) {
    let mut nodes = Vec::with_capacity(count);
    let mut reports = Vec::with_capacity(count);
    for index in 0..count {
        let name = format!("host-{:08x}", (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32);
        let mut report = fixtures[index % 4].clone();
        if let Some(memory) = report.memory.as_mut() {
            memory.total_bytes += (index as u64) << 30;
        }
        let mut node = cluster_node(&name, &report, 0, true);
        node.kubelet_version = Some(format!("v1.33.{}", index % 3));
        nodes.push(node);
        if index % 10 != 0 {
            reports.push(hardware_object(&name, &report));
        }
    }
    reports.push(hardware_object("deleted-node", &fixtures[0]));
    (nodes, reports)
}

/// Aggregates a synthetic cluster as the leader does, with a fixed cluster
/// name, UID and Kubernetes version.
pub fn cluster_report(nodes: &[ClusterNode], reports: &[NodeHardwareReport]) -> ClusterReport {
    aggregate(&ClusterInputs {
        cluster: ClusterInfo {
            name: "synthetic".to_owned(),
            uid: "0b5c7c52-0a4e-4a8e-9d7f-1f2e3d4c5b6a".to_owned(),
            kubernetes_version: "v1.33.2".to_owned(),
        },
        nodes,
        reports,
        agent: AgentInfo { name: "hw-agent".to_owned(), version: "test".to_owned() },
        generated_at: Utc::now(),
    })
}
