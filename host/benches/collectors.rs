//! Instantiate + collect of each built-in collector, cold and warm, and one
//! whole node collection, on a recorded two-socket GPU server root.
//!
//! - `compile`: a runtime without a cache compiles the component, calls
//!   `info`, then instantiates it and calls `collect`: a first start.
//! - `cache_hit`: the same with the compiled form read from the on-disk
//!   cache: a restart.
//! - `warm/<allocator>`: a loaded component, instantiated and called: every
//!   collection after the first, with the pooling or on-demand allocator.
//!
//! Run with `cargo bench -p hw-agent --bench collectors`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hw_agent::collection::{CollectSettings, Collection, run_one};
use hw_agent::policy::Policy;
use hw_agent::runtime::{BUILT_IN, CollectOptions, CollectorSource, ComponentCache, Runtime, RuntimeOptions};
use hw_agent::sources::HostRoot;

const ROOT: &str = "intel-xeon-2s-nvidia";

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/roots").join(ROOT)
}

fn runtime(cache: Option<&Path>, pooling: bool) -> Runtime {
    let policy = Policy::built_in();
    Runtime::new(RuntimeOptions {
        cache: ComponentCache::new(cache.map(Path::to_path_buf)),
        pooling,
        max_memory_bytes: policy.max_memory_bytes(),
        max_table_elements: policy.max_table_elements(),
    })
    .expect("runtime")
}

/// Loads one component, applies the built-in policy and runs it once.
async fn load_and_collect(runtime: &Runtime, root: &HostRoot, bytes: &'static [u8]) {
    let policy = Policy::built_in();
    let collector =
        runtime.load(Arc::from(bytes), CollectorSource::BuiltIn, policy.limits()).await.expect("component loads");
    let grant = policy.decide(&collector.info.name, &collector.info.capabilities).expect("granted");
    let run =
        run_one(runtime.clone(), root.clone(), collector, grant, CollectOptions { include_identifiers: false }).await;
    assert!(run.result.is_ok(), "{:?}", run.result.err());
}

fn collectors(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let root = HostRoot::new(fixture_root()).expect("fixture root");
    let cache = tempfile::tempdir().expect("cache directory");

    for (name, bytes) in BUILT_IN {
        let mut group = c.benchmark_group(format!("collector/{name}"));
        group.sample_size(20);

        let uncached = runtime(None, true);
        group.bench_function("compile", |b| b.iter(|| tokio.block_on(load_and_collect(&uncached, &root, bytes))));

        let cached = runtime(Some(cache.path()), true);
        tokio.block_on(load_and_collect(&cached, &root, bytes));
        group.bench_function("cache_hit", |b| b.iter(|| tokio.block_on(load_and_collect(&cached, &root, bytes))));

        for (label, pooling) in [("warm/pooling", true), ("warm/on-demand", false)] {
            let runtime = runtime(Some(cache.path()), pooling);
            let policy = Policy::built_in();
            let collector = tokio
                .block_on(runtime.load(Arc::from(*bytes), CollectorSource::BuiltIn, policy.limits()))
                .expect("component loads");
            let grant = policy.decide(&collector.info.name, &collector.info.capabilities).expect("granted");
            let options = CollectOptions { include_identifiers: false };
            group.bench_function(label, |b| {
                b.iter(|| {
                    let run = tokio.block_on(run_one(
                        runtime.clone(),
                        root.clone(),
                        collector.clone(),
                        grant.clone(),
                        options,
                    ));
                    assert!(run.result.is_ok());
                })
            });
        }
        group.finish();
    }

    let settings = CollectSettings {
        host_root: fixture_root(),
        plugin_dir: None,
        cache_dir: Some(cache.path().to_path_buf()),
        policy: Policy::built_in(),
        pooling: true,
        include_identifiers: false,
    };
    let collection = tokio.block_on(Collection::load(&settings)).expect("collectors load");
    let mut group = c.benchmark_group("node");
    group.sample_size(20);
    group.bench_function("collect/warm", |b| b.iter(|| tokio.block_on(collection.collect())));
    group.finish();
}

criterion_group!(benches, collectors);
criterion_main!(benches);
