//! Runs the gpu collector on the recorded and reconstructed machines in
//! `fixtures/roots`. The expected values are the ones `fixtures/generate.py`
//! writes. `this-machine` is recorded, so its checks hold for any recording.

use std::fs;

use hw_collector_gpu::collect_accelerators;
use hw_collector_guest::{Accelerator, AcceleratorKind, CollectOptions, Root};

const ROOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/roots");

const GIB: u64 = 1024 * 1024 * 1024;

fn collect_with(name: &str, include_identifiers: bool) -> Vec<Accelerator> {
    let root = Root::at(format!("{ROOTS}/{name}"));
    collect_accelerators(&root, &CollectOptions { include_identifiers })
        .unwrap_or_else(|error| panic!("collect_accelerators failed on {name}: {error:?}"))
}

fn collect(name: &str) -> Vec<Accelerator> {
    collect_with(name, false)
}

fn addresses(accelerators: &[Accelerator]) -> Vec<&str> {
    accelerators.iter().map(|accelerator| accelerator.pci_address.as_str()).collect()
}

// ---------------------------------------------------------------- Intel Xeon with NVIDIA GPUs

#[test]
fn xeon_lists_nvidia_gpus_only() {
    let accelerators = collect("intel-xeon-2s-nvidia");
    assert_eq!(accelerators.len(), 3);
    assert_eq!(addresses(&accelerators), ["0000:4b:00.0", "0000:ca:00.0", "0000:e3:00.0"]);
}

#[test]
fn xeon_skips_aspeed_bmc() {
    let accelerators = collect("intel-xeon-2s-nvidia");
    assert!(accelerators.iter().all(|accelerator| accelerator.vendor_id != 0x1a03));
}

#[test]
fn xeon_h100_described_by_driver() {
    let accelerators = collect("intel-xeon-2s-nvidia");
    let h100 = &accelerators[0];
    assert!(matches!(h100.kind, AcceleratorKind::Gpu));
    assert_eq!(h100.class_code, 0x030200);
    assert_eq!(h100.vendor_id, 0x10de);
    assert_eq!(h100.device_id, 0x2330);
    assert_eq!(h100.subsystem_vendor_id, Some(0x10de));
    assert_eq!(h100.subsystem_device_id, Some(0x16c1));
    assert_eq!(h100.vendor.as_deref(), Some("NVIDIA"));
    assert_eq!(h100.model_name.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(h100.driver.as_deref(), Some("nvidia"));
    assert_eq!(h100.driver_version.as_deref(), Some("535.129.03"));
    assert_eq!(h100.memory_bytes, Some(80 * GIB));
    assert_eq!(h100.numa_node, Some(0));
}

#[test]
fn xeon_second_h100_on_node_one() {
    let accelerators = collect("intel-xeon-2s-nvidia");
    let h100 = &accelerators[1];
    assert_eq!(h100.model_name.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(h100.numa_node, Some(1));
}

/// The L40S model name states no memory size, and the NVIDIA driver
/// exposes none outside NVML, so its memory stays unknown.
#[test]
fn xeon_l40s_memory_unknown() {
    let accelerators = collect("intel-xeon-2s-nvidia");
    let l40s = &accelerators[2];
    assert_eq!(l40s.device_id, 0x26b9);
    assert_eq!(l40s.model_name.as_deref(), Some("NVIDIA L40S"));
    assert_eq!(l40s.driver_version.as_deref(), Some("535.129.03"));
    assert_eq!(l40s.memory_bytes, None);
    assert_eq!(l40s.subsystem_device_id, Some(0x1851));
}

#[test]
fn xeon_uuid_hidden_by_default() {
    let accelerators = collect("intel-xeon-2s-nvidia");
    assert!(accelerators.iter().all(|accelerator| accelerator.uuid.is_none()));
}

#[test]
fn xeon_uuid_with_identifiers() {
    let accelerators = collect_with("intel-xeon-2s-nvidia", true);
    assert_eq!(accelerators[0].uuid.as_deref(), Some("GPU-3f6a2c1e-8d4b-5e7f-9a0c-1b2d3e4f5a6b"));
    assert_eq!(accelerators[2].uuid.as_deref(), Some("GPU-c5d6e7f8-0912-3a4b-5c6d-7e8f90a1b2c3"));
}

// ---------------------------------------------------------------- AMD EPYC with Instinct MI210

#[test]
fn epyc_lists_three_mi210() {
    let accelerators = collect("amd-epyc-instinct");
    assert_eq!(accelerators.len(), 3);
    assert_eq!(addresses(&accelerators), ["0000:43:00.0", "0000:83:00.0", "0000:c3:00.0"]);
}

#[test]
fn epyc_mi210_through_drm_card() {
    let accelerators = collect("amd-epyc-instinct");
    let mi210 = &accelerators[0];
    // Class 0x0380 (other display controller) has base class 0x03, so the kind is GPU.
    assert!(matches!(mi210.kind, AcceleratorKind::Gpu));
    assert_eq!(mi210.class_code, 0x038000);
    assert_eq!(mi210.vendor_id, 0x1002);
    assert_eq!(mi210.device_id, 0x740f);
    assert_eq!(mi210.vendor.as_deref(), Some("AMD"));
    assert_eq!(mi210.model_name.as_deref(), Some("Instinct MI210"));
    assert_eq!(mi210.memory_bytes, Some(68702699520));
    assert_eq!(mi210.driver.as_deref(), Some("amdgpu"));
    assert_eq!(mi210.driver_version, None);
    assert_eq!(mi210.numa_node, Some(1));
    assert_eq!(mi210.uuid, None);
}

#[test]
fn epyc_second_mi210_on_node_two() {
    let accelerators = collect("amd-epyc-instinct");
    assert_eq!(accelerators[1].model_name.as_deref(), Some("Instinct MI210"));
    assert_eq!(accelerators[1].numa_node, Some(2));
}

/// The third board has an empty product_name and no DRM card. Its model
/// comes from the collector's own table and its memory from the PCI
/// function directory.
#[test]
fn epyc_empty_product_name_uses_table() {
    let accelerators = collect("amd-epyc-instinct");
    let mi210 = &accelerators[2];
    assert_eq!(mi210.model_name.as_deref(), Some("Instinct MI210"));
    assert_eq!(mi210.memory_bytes, Some(68702699520));
    assert_eq!(mi210.numa_node, Some(3));
}

#[test]
fn epyc_skips_aspeed_bmc() {
    let accelerators = collect("amd-epyc-instinct");
    assert!(accelerators.iter().all(|accelerator| accelerator.vendor_id != 0x1a03));
}

// ---------------------------------------------------------------- Ampere Altra

#[test]
fn altra_bmc_only_gives_empty_list() {
    let accelerators = collect("arm64-ampere-altra");
    assert!(accelerators.is_empty());
}

// ---------------------------------------------------------------- Intel hybrid laptop

#[test]
fn laptop_lists_integrated_gpu() {
    let accelerators = collect("intel-hybrid-laptop");
    assert_eq!(accelerators.len(), 1);
    assert_eq!(accelerators[0].pci_address, "0000:00:02.0");
}

#[test]
fn laptop_iris_xe_shares_system_memory() {
    let accelerators = collect("intel-hybrid-laptop");
    let igpu = &accelerators[0];
    assert!(matches!(igpu.kind, AcceleratorKind::Gpu));
    assert_eq!(igpu.class_code, 0x030000);
    assert_eq!(igpu.vendor_id, 0x8086);
    assert_eq!(igpu.device_id, 0x46a6);
    assert_eq!(igpu.vendor.as_deref(), Some("Intel"));
    assert_eq!(igpu.model_name, None);
    assert_eq!(igpu.driver.as_deref(), Some("i915"));
    assert_eq!(igpu.driver_version, None);
    assert_eq!(igpu.memory_bytes, None);
    // Laptops report numa_node -1, which means no affinity.
    assert_eq!(igpu.numa_node, None);
}

// ---------------------------------------------------------------- recorded machine

fn recorded_pci_addresses() -> Vec<String> {
    fs::read_dir(format!("{ROOTS}/this-machine/sys/bus/pci/devices"))
        .map(|entries| {
            entries.filter_map(Result::ok).map(|entry| entry.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default()
}

#[test]
fn recorded_accelerators_are_recorded_devices() {
    let accelerators = collect("this-machine");
    let recorded = recorded_pci_addresses();
    for accelerator in &accelerators {
        assert!(recorded.contains(&accelerator.pci_address), "{}", accelerator.pci_address);
    }
}

#[test]
fn recorded_accelerators_have_accelerator_classes() {
    let accelerators = collect("this-machine");
    for accelerator in &accelerators {
        let base_class = accelerator.class_code >> 16;
        assert!(base_class == 0x03 || base_class == 0x12, "{:06x}", accelerator.class_code);
    }
}

#[test]
fn recorded_skips_aspeed_bmc() {
    let accelerators = collect("this-machine");
    assert!(accelerators.iter().all(|accelerator| accelerator.vendor_id != 0x1a03));
}

#[test]
fn recorded_uuid_hidden_by_default() {
    let accelerators = collect("this-machine");
    assert!(accelerators.iter().all(|accelerator| accelerator.uuid.is_none()));
}
