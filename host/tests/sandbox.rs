//! A misbehaving collector becomes an entry in the report with its reason,
//! and every other collector's facts are still there.

mod common;

use std::fs;
use std::path::Path;

use hw_agent::collection::Collection;
use hw_agent::report::model::{CollectorOutcome, CollectorStatus, NodeReport};

/// Runs the built-ins plus the fault collector in `mode` on a copy of the
/// recorded machine root.
fn collect_with_fault(mode: &str) -> NodeReport {
    let root = tempfile::tempdir().expect("root directory");
    common::copy_tree(&common::fixture("this-machine"), root.path());
    fs::write(root.path().join("sys/hw-agent-fault-mode"), mode).expect("write fault mode");
    // Stand-ins for the agent's own /proc entries, which hold its secrets on
    // a live root; no collector may read them.
    for entry in ["proc/self", "proc/1"] {
        fs::create_dir_all(root.path().join(entry)).expect("create process directory");
        fs::write(root.path().join(entry).join("environ"), "AIOD_CLIENT_SECRET=leak").expect("write environ");
        fs::write(root.path().join(entry).join("mem"), "leak").expect("write mem");
    }

    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::copy(common::fault_component(), plugins.path().join("fault.wasm")).expect("install fault collector");

    let cache = tempfile::tempdir().expect("cache directory");
    let mut settings = common::settings(root.path(), Some(plugins.path()), cache.path());
    settings.limits.deadline_ms = 300;
    settings.limits.memory_bytes = 16 << 20;
    Collection::load(&settings).expect("collectors load").collect()
}

fn outcome<'a>(report: &'a NodeReport, name: &str) -> &'a CollectorOutcome {
    report.collectors.iter().find(|outcome| outcome.name == name).unwrap_or_else(|| panic!("no outcome for {name}"))
}

fn assert_built_ins_kept(report: &NodeReport) {
    for name in ["cpu", "gpu", "system"] {
        assert_eq!(outcome(report, name).status, CollectorStatus::Ok, "{name} was affected");
    }
    assert!(report.cpu.is_some());
    assert!(report.memory.is_some());
    assert!(report.accelerators.is_some());
}

#[test]
fn fault_ok_mode_adds_attribute() {
    let report = collect_with_fault("ok");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    assert_eq!(report.attributes.get("test.hw-agent/fault-mode").map(String::as_str), Some("ok"));
    assert_built_ins_kept(&report);
}

#[test]
fn panicking_collector_is_an_error() {
    let report = collect_with_fault("panic");
    let fault = outcome(&report, "fault");
    assert_eq!(fault.status, CollectorStatus::Error);
    let error = fault.error.as_deref().unwrap_or_default();
    assert!(error.contains("fault collector asked to panic"), "panic message missing: {error}");
    assert_built_ins_kept(&report);
}

#[test]
fn unreachable_trap_is_an_error() {
    let report = collect_with_fault("unreachable");
    let fault = outcome(&report, "fault");
    assert_eq!(fault.status, CollectorStatus::Error);
    assert!(fault.error.as_deref().unwrap_or_default().contains("unreachable"), "{:?}", fault.error);
    assert_built_ins_kept(&report);
}

#[test]
fn spinning_collector_times_out() {
    let report = collect_with_fault("spin");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Timeout);
    assert_built_ins_kept(&report);
}

#[test]
fn memory_bomb_exceeds_limit() {
    let report = collect_with_fault("memory");
    let fault = outcome(&report, "fault");
    assert_eq!(fault.status, CollectorStatus::LimitExceeded);
    assert!(fault.error.as_deref().unwrap_or_default().contains("memory limit exceeded"), "{:?}", fault.error);
    assert_built_ins_kept(&report);
}

#[test]
fn collector_error_is_reported() {
    let report = collect_with_fault("error");
    let fault = outcome(&report, "fault");
    assert_eq!(fault.status, CollectorStatus::Error);
    assert!(fault.error.as_deref().unwrap_or_default().contains("fault collector asked to fail"), "{:?}", fault.error);
    assert_built_ins_kept(&report);
}

#[test]
fn invalid_plugin_file_is_reported() {
    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::write(plugins.path().join("broken.wasm"), b"not a component").expect("write broken plugin");
    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("this-machine"), Some(plugins.path()), cache.path());

    let report = Collection::load(&settings).expect("collectors load").collect();
    let broken = outcome(&report, "broken");
    assert_eq!(broken.status, CollectorStatus::Error);
    assert!(broken.error.as_deref().unwrap_or_default().contains("failed to load"), "{:?}", broken.error);
    assert!(broken.source.ends_with("broken.wasm"));
    assert_built_ins_kept(&report);
}

#[test]
fn compiled_components_are_cached() {
    use hw_agent::runtime::CacheUse;

    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("this-machine"), None, cache.path());

    let cold = Collection::load(&settings).expect("collectors load");
    assert!(cold.collectors().iter().all(|collector| collector.cache == CacheUse::Miss));
    let entries = fs::read_dir(cache.path()).expect("cache directory").count();
    assert_eq!(entries, 3, "one compiled artifact per built-in collector");

    let warm = Collection::load(&settings).expect("collectors load");
    assert!(warm.collectors().iter().all(|collector| collector.cache == CacheUse::Hit));
}

#[test]
fn corrupt_cache_entry_is_recompiled() {
    use hw_agent::runtime::CacheUse;

    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("this-machine"), None, cache.path());
    drop(Collection::load(&settings).expect("collectors load"));
    for entry in fs::read_dir(cache.path()).expect("cache directory") {
        fs::write(entry.expect("cache entry").path(), b"garbage").expect("corrupt entry");
    }

    let reloaded = Collection::load(&settings).expect("collectors load");
    assert!(reloaded.collectors().iter().all(|collector| collector.cache == CacheUse::Miss));
    let report = reloaded.collect();
    assert_built_ins_kept(&report);
    assert!(Path::new(cache.path()).read_dir().expect("cache directory").count() >= 3);
}

#[test]
fn agent_proc_entries_stay_hidden() {
    let report = collect_with_fault("proc-self");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    for key in ["test.hw-agent/proc-self-environ", "test.hw-agent/proc-self-mem", "test.hw-agent/proc-1-environ"] {
        assert_eq!(report.attributes.get(key).map(String::as_str), Some("denied"), "{key}");
    }
    assert_built_ins_kept(&report);
}

#[test]
fn shared_cache_directory_is_not_used() {
    use hw_agent::runtime::CacheUse;
    use std::os::unix::fs::PermissionsExt as _;

    let cache = tempfile::tempdir().expect("cache directory");
    fs::set_permissions(cache.path(), fs::Permissions::from_mode(0o777)).expect("make the cache world-writable");
    let settings = common::settings(&common::fixture("this-machine"), None, cache.path());

    let collection = Collection::load(&settings).expect("collectors load");
    assert!(collection.collectors().iter().all(|collector| collector.cache == CacheUse::Disabled));
    assert_eq!(fs::read_dir(cache.path()).expect("cache directory").count(), 0, "nothing is written there");
}
