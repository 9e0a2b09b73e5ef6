//! Aggregation of synthetic 5,000-node clusters into a cluster report that
//! fits AIoD's 65,535-character description, with exact totals.
//!
//! The hardware reports come from the real collectors run over the fixture
//! roots; the Kubernetes side is built the way the `nodes` collector
//! returns it. Timings are printed, not asserted (docs/BENCHMARKS.md).

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use hw_agent::cluster::aggregate::{
    ClusterInfo, ClusterInputs, ClusterReport, DESCRIPTION_MAX_CHARS, aggregate, describe,
};
use hw_agent::cluster::crd::{NodeHardwareReport, NodeHardwareReportSpec, ReportSummary};
use hw_agent::cluster::nodes::{ClusterNode, NodeAccelerators, Resources};
use hw_agent::report::model::{AgentInfo, NodeReport};

const ROOTS: [&str; 4] = ["intel-xeon-2s-nvidia", "amd-epyc-instinct", "arm64-ampere-altra", "intel-hybrid-laptop"];

fn fixture_reports() -> Vec<NodeReport> {
    let cache = tempfile::tempdir().expect("cache dir");
    ROOTS
        .iter()
        .map(|root| common::collect_once(&common::settings(&common::fixture(root), None, cache.path())))
        .collect()
}

fn cluster_node(name: &str, report: &NodeReport, memory_jitter: u64, ready: bool) -> ClusterNode {
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

fn hardware_object(name: &str, report: &NodeReport) -> NodeHardwareReport {
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

fn run(nodes: &[ClusterNode], reports: &[NodeHardwareReport], label: &str) -> (String, ClusterReport, ClusterReport) {
    let started = Instant::now();
    let full = aggregate(&ClusterInputs {
        cluster: ClusterInfo {
            name: "synthetic".to_owned(),
            uid: "0b5c7c52-0a4e-4a8e-9d7f-1f2e3d4c5b6a".to_owned(),
            kubernetes_version: "v1.33.2".to_owned(),
        },
        nodes,
        reports,
        agent: AgentInfo { name: "hw-agent".to_owned(), version: "test".to_owned() },
        generated_at: Utc::now(),
    });
    let aggregated = started.elapsed();
    let (plain, condensed) = describe(&full).expect("fits");
    println!(
        "{label}: {} nodes, aggregate {:.1} ms, describe {:.1} ms, {} groups, {} characters",
        nodes.len(),
        aggregated.as_secs_f64() * 1e3,
        (started.elapsed() - aggregated).as_secs_f64() * 1e3,
        condensed.groups.len(),
        plain.chars().count()
    );
    (plain, full, condensed)
}

fn check_counts(plain: &str, full: &ClusterReport, nodes: usize) {
    assert!(plain.chars().count() <= DESCRIPTION_MAX_CHARS, "{} characters", plain.chars().count());
    let parsed: ClusterReport = serde_json::from_str(plain).expect("the description is whole JSON");
    assert_eq!(parsed.schema, "aiod-hw-agent/cluster-report/v1");
    assert_eq!(parsed.node_count, nodes as u64);
    let grouped: u64 = parsed.groups.iter().map(|group| group.count).sum::<u64>() + parsed.other_nodes;
    assert_eq!(grouped, nodes as u64, "every node is in a group or counted in other_nodes");
    assert_eq!(parsed.totals, full.totals, "totals are never condensed");
    assert_eq!(parsed.ready_nodes, full.ready_nodes);
}

#[test]
fn uniform_5000_node_cluster_lists_every_node() {
    let fixtures = fixture_reports();
    let mut nodes = Vec::new();
    let mut reports = Vec::new();
    for index in 0..5_000usize {
        let kind = index % 4;
        let name = format!("{}-{index:05}", ["gpu", "mi", "arm", "edge"][kind]);
        // Identical machines differ by a few MiB of firmware reservations.
        nodes.push(cluster_node(&name, &fixtures[kind], (index as u64 % 7) << 20, index % 100 != 0));
        reports.push(hardware_object(&name, &fixtures[kind]));
    }
    let (plain, full, condensed) = run(&nodes, &reports, "uniform");
    check_counts(&plain, &full, 5_000);
    assert_eq!(condensed.groups.len(), 4, "four machine types make four groups");
    assert!(condensed.condensed.is_empty(), "names as ranges fit without condensing: {:?}", condensed.condensed);
    assert_eq!(condensed.ready_nodes, 4_950);
    assert_eq!(
        full.totals.cpu_threads,
        fixtures.iter().map(|report| u64::from(report.cpu.as_ref().map_or(0, |cpu| cpu.threads))).sum::<u64>() * 1_250
    );
    let gpus: u64 = full.totals.accelerators.iter().map(|accelerator| accelerator.count).sum();
    let per_cycle: u64 = fixtures.iter().map(|report| report.accelerators.as_ref().map_or(0, Vec::len) as u64).sum();
    assert_eq!(gpus, per_cycle * 1_250);
    assert!(condensed.groups.iter().all(|group| group.nodes_omitted == 0));
}

#[test]
fn diverse_5000_node_cluster_is_condensed_not_cut() {
    let fixtures = fixture_reports();
    let mut nodes = Vec::new();
    let mut reports = Vec::new();
    for index in 0..5_000usize {
        // Random-looking names and a distinct memory size per node: no two
        // nodes share a profile, the worst case for grouping.
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
    // A report whose node was deleted is ignored with a warning.
    reports.push(hardware_object("deleted-node", &fixtures[0]));
    let (plain, full, condensed) = run(&nodes, &reports, "diverse");
    check_counts(&plain, &full, 5_000);
    assert_eq!(full.nodes_with_hardware_report, 4_500);
    assert!(full.warnings.iter().any(|warning| warning.contains("deleted-node")), "{:?}", full.warnings);
    assert!(!condensed.condensed.is_empty(), "this cluster cannot fit without condensing");
    assert!(condensed.other_groups > 0, "the smallest groups are counted, not listed");
}
