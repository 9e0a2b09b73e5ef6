//! The built-in collectors, compiled to components and run through the real
//! runtime against fixture roots and against this machine.

mod common;

use std::fs;

use hw_agent::report::model::{CollectorStatus, NodeReport};

fn collect(root_name: &str) -> NodeReport {
    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture(root_name), None, cache.path());
    common::collect_once(&settings)
}

fn assert_all_ok(report: &NodeReport) {
    let names: Vec<&str> = report.collectors.iter().map(|outcome| outcome.name.as_str()).collect();
    assert_eq!(names, vec!["cpu", "gpu", "system"]);
    for outcome in &report.collectors {
        assert_eq!(outcome.status, CollectorStatus::Ok, "{} failed: {:?}", outcome.name, outcome.error);
    }
    assert!(report.unknown.is_empty(), "unexpected unknown sections: {:?}", report.unknown);
}

#[test]
fn nvidia_node_reports_each_gpu() {
    let report = collect("intel-xeon-2s-nvidia");
    assert_all_ok(&report);

    let accelerators = report.accelerators.as_ref().expect("accelerators section");
    let models: Vec<&str> = accelerators.iter().filter_map(|device| device.model_name.as_deref()).collect();
    assert_eq!(models, vec!["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA L40S"]);
    assert_eq!(accelerators[0].memory_bytes, Some(80 << 30));
    assert_eq!(accelerators[2].memory_bytes, None);
    assert!(accelerators.iter().all(|device| device.vendor.as_deref() == Some("NVIDIA")));
    assert!(accelerators.iter().all(|device| device.driver_version.as_deref() == Some("535.129.03")));
    assert!(accelerators.iter().all(|device| device.uuid.is_none()), "UUIDs need --include-identifiers");
}

#[test]
fn nvidia_node_cpu_and_memory() {
    let report = collect("intel-xeon-2s-nvidia");
    let cpu = report.cpu.as_ref().expect("cpu section");
    assert_eq!(cpu.sockets, 2);
    assert_eq!(cpu.cores, 32);
    assert_eq!(cpu.threads, 64);
    assert_eq!(cpu.packages[0].model_name.as_deref(), Some("Intel(R) Xeon(R) Gold 6326 CPU @ 2.90GHz"));
    assert_eq!(
        report.node.architecture.as_deref(),
        Some("x86_64"),
        "inferred from cpuinfo without /proc/sys/kernel/arch"
    );
    assert!(report.memory.as_ref().expect("memory section").total_bytes > 0);
}

#[test]
fn amd_instinct_node_reports_vram() {
    let report = collect("amd-epyc-instinct");
    assert_all_ok(&report);

    let accelerators = report.accelerators.as_ref().expect("accelerators section");
    assert_eq!(accelerators.len(), 3);
    for device in accelerators {
        assert_eq!(device.vendor.as_deref(), Some("AMD"));
        assert_eq!(device.device_id, "740f");
    }
    assert_eq!(accelerators[0].model_name.as_deref(), Some("Instinct MI210"));
    assert_eq!(accelerators[0].memory_bytes, Some(68_702_699_520));
    assert_eq!(accelerators[0].driver.as_deref(), Some("amdgpu"));
}

#[test]
fn arm_node_without_gpu_has_empty_list() {
    let report = collect("arm64-ampere-altra");
    assert_all_ok(&report);

    assert_eq!(report.accelerators, Some(Vec::new()), "the BMC display adapter is not an accelerator");
    assert_eq!(report.node.architecture.as_deref(), Some("aarch64"));
    let package = &report.cpu.as_ref().expect("cpu section").packages[0];
    assert_eq!(package.model_name.as_deref(), Some("Neoverse-N1"));
    assert_eq!(package.vendor.as_deref(), Some("ARM"));
}

#[test]
fn hybrid_laptop_reports_core_types() {
    let report = collect("intel-hybrid-laptop");
    assert_all_ok(&report);

    let package = &report.cpu.as_ref().expect("cpu section").packages[0];
    let core_types: Vec<(&str, u32, u32)> = package
        .core_types
        .iter()
        .map(|core_type| (core_type.name.as_str(), core_type.cores, core_type.threads))
        .collect();
    assert_eq!(core_types, vec![("cpu_atom", 8, 8), ("cpu_core", 4, 8)]);
}

/// The acceptance check on the machine running the tests: the report must
/// agree with what the kernel reports directly.
#[test]
fn this_machine_matches_kernel() {
    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(std::path::Path::new("/"), None, cache.path());
    let report = common::collect_once(&settings);
    assert_all_ok(&report);

    let cpuinfo = fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    let first_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, value)| value.trim().to_owned());
    let cpu = report.cpu.as_ref().expect("cpu section");
    assert_eq!(cpu.packages[0].model_name, first_model);

    let online = fs::read_to_string("/sys/devices/system/cpu/online").expect("read online CPUs");
    let online_count: u32 = online
        .trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((start, end)) => {
                end.parse::<u32>().expect("cpu number") - start.parse::<u32>().expect("cpu number") + 1
            }
            None => 1,
        })
        .sum();
    assert_eq!(cpu.threads, online_count);

    let meminfo = fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let mem_total_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("MemTotal line");
    assert_eq!(report.memory.as_ref().expect("memory section").total_bytes, mem_total_kib * 1024);

    let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("read kernel release");
    assert_eq!(report.node.kernel.as_deref(), Some(release.trim()));
}
