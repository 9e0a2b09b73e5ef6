//! The leader's aggregation of 1,000 and 5,000 node reports, and the
//! serialisation of the reports the agent writes.
//!
//! - `aggregate/<shape>/<nodes>`: folding every Node and NodeHardwareReport
//!   into the cluster report;
//! - `describe/<shape>/<nodes>`: condensing it into AIoD's 65,535-character
//!   `description.plain`;
//! - `serialise/...`: a node report as `hw-agent collect` prints it, the
//!   NodeHardwareReport object a pod applies, and a cluster report.
//!
//! `uniform` is four machine types; `diverse` gives every node a profile of
//! its own, the worst case for grouping. Run with
//! `cargo bench -p hw-agent --bench aggregate`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::synthetic;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hw_agent::cluster::aggregate::describe;

fn aggregation(c: &mut Criterion) {
    let fixtures = synthetic::fixture_reports();
    let mut group = c.benchmark_group("cluster");
    group.sample_size(20);
    for count in [1_000usize, 5_000] {
        for (shape, (nodes, reports)) in
            [("uniform", synthetic::uniform(&fixtures, count)), ("diverse", synthetic::diverse(&fixtures, count))]
        {
            group.bench_function(BenchmarkId::new(format!("aggregate/{shape}"), count), |b| {
                b.iter(|| synthetic::cluster_report(&nodes, &reports))
            });
            let report = synthetic::cluster_report(&nodes, &reports);
            group.bench_function(BenchmarkId::new(format!("describe/{shape}"), count), |b| {
                b.iter(|| describe(&report).expect("fits"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("serialise");
    // The two-socket GPU server: the largest of the fixture reports.
    let node_report = &fixtures[0];
    group.bench_function("node_report_json", |b| b.iter(|| serde_json::to_vec(node_report).expect("serialises")));
    let object = synthetic::hardware_object("gpu-00000", node_report);
    group
        .bench_function("node_hardware_report_object", |b| b.iter(|| serde_json::to_vec(&object).expect("serialises")));
    let (nodes, reports) = synthetic::uniform(&fixtures, 5_000);
    let report = synthetic::cluster_report(&nodes, &reports);
    group.bench_function("cluster_report_5000", |b| b.iter(|| serde_json::to_vec(&report).expect("serialises")));
    group.finish();
}

criterion_group!(benches, aggregation);
criterion_main!(benches);
