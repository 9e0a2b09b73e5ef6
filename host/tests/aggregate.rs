//! Aggregation of synthetic 5,000-node clusters into a cluster report that
//! fits AIoD's 65,535-character description, with exact totals.
//!
//! The clusters come from `common/synthetic.rs`. Timings are printed, not
//! asserted; `cargo bench -p hw-agent --bench aggregate` measures them
//! (docs/BENCHMARKS.md).

mod common;

use std::time::Instant;

use common::synthetic;
use hw_agent::cluster::aggregate::{ClusterReport, DESCRIPTION_MAX_CHARS, describe};
use hw_agent::cluster::crd::NodeHardwareReport;
use hw_agent::cluster::nodes::ClusterNode;

fn run(nodes: &[ClusterNode], reports: &[NodeHardwareReport], label: &str) -> (String, ClusterReport, ClusterReport) {
    let started = Instant::now();
    let full = synthetic::cluster_report(nodes, reports);
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
    let fixtures = synthetic::fixture_reports();
    let (nodes, reports) = synthetic::uniform(&fixtures, 5_000);
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
    let fixtures = synthetic::fixture_reports();
    // Includes a report whose node was deleted: ignored with a warning.
    let (nodes, reports) = synthetic::diverse(&fixtures, 5_000);
    let (plain, full, condensed) = run(&nodes, &reports, "diverse");
    check_counts(&plain, &full, 5_000);
    assert_eq!(full.nodes_with_hardware_report, 4_500);
    assert!(full.warnings.iter().any(|warning| warning.contains("deleted-node")), "{:?}", full.warnings);
    assert!(!condensed.condensed.is_empty(), "this cluster cannot fit without condensing");
    assert!(condensed.other_groups > 0, "the smallest groups are counted, not listed");
}
