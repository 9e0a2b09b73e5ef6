//! Runs the system collector on the recorded and reconstructed machines in
//! `fixtures/roots`. The expected values are the ones `fixtures/generate.py`
//! writes. `this-machine` is recorded, so its checks compare against the
//! recorded files instead of fixed numbers.

use std::fs;
use std::path::{Path, PathBuf};

use hw_collector_guest::{BlockDevice, CollectOptions, MemoryInfo, NetworkInterface, OsInfo, PartialReport, Root};
use hw_collector_system::collect_system;

const ROOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/roots");

const KIB: u64 = 1024;
const SECTOR: u64 = 512;

fn collect_with(name: &str, include_identifiers: bool) -> PartialReport {
    let root = Root::at(format!("{ROOTS}/{name}"));
    collect_system(&root, &CollectOptions { include_identifiers })
        .unwrap_or_else(|error| panic!("collect_system failed on {name}: {error:?}"))
}

fn memory(name: &str) -> MemoryInfo {
    collect_with(name, false).memory.expect("memory section")
}

fn os(name: &str) -> OsInfo {
    collect_with(name, false).os.expect("os section")
}

fn storage_with(name: &str, include_identifiers: bool) -> Vec<BlockDevice> {
    collect_with(name, include_identifiers).storage.expect("storage section")
}

fn network_with(name: &str, include_identifiers: bool) -> Vec<NetworkInterface> {
    collect_with(name, include_identifiers).network.expect("network section")
}

fn disk<'a>(devices: &'a [BlockDevice], name: &str) -> &'a BlockDevice {
    devices.iter().find(|device| device.name == name).unwrap_or_else(|| panic!("no block device {name}"))
}

fn interface<'a>(interfaces: &'a [NetworkInterface], name: &str) -> &'a NetworkInterface {
    interfaces.iter().find(|interface| interface.name == name).unwrap_or_else(|| panic!("no network interface {name}"))
}

fn disk_names(devices: &[BlockDevice]) -> Vec<&str> {
    devices.iter().map(|device| device.name.as_str()).collect()
}

fn interface_names(interfaces: &[NetworkInterface]) -> Vec<&str> {
    interfaces.iter().map(|interface| interface.name.as_str()).collect()
}

// ---------------------------------------------------------------- Intel Xeon, Ubuntu 22.04

#[test]
fn xeon_memory_totals() {
    let memory = memory("intel-xeon-2s-nvidia");
    assert_eq!(memory.total_bytes, 528082920 * KIB);
    assert_eq!(memory.available_bytes, Some(491117115 * KIB));
    assert_eq!(memory.swap_total_bytes, Some(8388604 * KIB));
}

#[test]
fn xeon_hugepage_pools() {
    let pools = memory("intel-xeon-2s-nvidia").hugepages;
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0].page_size_bytes, 2048 * KIB);
    assert_eq!(pools[0].total, 1024);
    assert_eq!(pools[0].free, 768);
    assert_eq!(pools[1].page_size_bytes, 1048576 * KIB);
    assert_eq!(pools[1].total, 16);
    assert_eq!(pools[1].free, 16);
}

#[test]
fn xeon_os_ubuntu_2204() {
    let os = os("intel-xeon-2s-nvidia");
    assert_eq!(os.name.as_deref(), Some("Ubuntu"));
    assert_eq!(os.id.as_deref(), Some("ubuntu"));
    assert_eq!(os.version_id.as_deref(), Some("22.04"));
    assert_eq!(os.pretty_name.as_deref(), Some("Ubuntu 22.04.3 LTS"));
    assert_eq!(os.hostname.as_deref(), Some("gpu-node-01"));
    assert_eq!(os.kernel.as_deref(), Some("5.15.0-91-generic"));
    assert_eq!(os.kernel_version.as_deref(), Some("#101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023"));
}

/// Linux 5.15 has no /proc/sys/kernel/arch, and this collector does not guess.
#[test]
fn xeon_os_architecture_absent() {
    assert_eq!(os("intel-xeon-2s-nvidia").architecture, None);
}

#[test]
fn xeon_storage_skips_loop() {
    let devices = storage_with("intel-xeon-2s-nvidia", false);
    assert_eq!(disk_names(&devices), ["nvme0n1", "nvme1n1", "sda"]);
}

#[test]
fn xeon_nvme_disk() {
    let devices = storage_with("intel-xeon-2s-nvidia", false);
    let nvme = disk(&devices, "nvme0n1");
    assert_eq!(nvme.size_bytes, 7501476528 * SECTOR);
    assert_eq!(nvme.transport.as_deref(), Some("nvme"));
    assert_eq!(nvme.rotational, Some(false));
    assert_eq!(nvme.removable, Some(false));
    assert_eq!(nvme.model.as_deref(), Some("SAMSUNG MZQL23T8HCLS-00A07"));
    assert_eq!(nvme.vendor, None);
    assert_eq!(nvme.serial, None);
}

/// The dual-port NVMe is listed once, under its multipath name, and its
/// hidden per-controller path device is left out.
#[test]
fn xeon_multipath_nvme_listed_once() {
    let devices = storage_with("intel-xeon-2s-nvidia", false);
    let nvme = disk(&devices, "nvme1n1");
    assert_eq!(nvme.size_bytes, 7501476528 * SECTOR);
    assert_eq!(nvme.transport.as_deref(), Some("nvme"));
    assert_eq!(nvme.model.as_deref(), Some("SAMSUNG MZWLJ3T8HBLS-00007"));
    assert!(devices.iter().all(|device| device.name != "nvme1c1n1"));
}

#[test]
fn xeon_sata_disk() {
    let devices = storage_with("intel-xeon-2s-nvidia", false);
    let sata = disk(&devices, "sda");
    assert_eq!(sata.size_bytes, 937703088 * SECTOR);
    assert_eq!(sata.transport.as_deref(), Some("sata"));
    assert_eq!(sata.rotational, Some(false));
    assert_eq!(sata.model.as_deref(), Some("SAMSUNG MZ7L3480"));
    // The SCSI vendor field is space-padded to eight characters.
    assert_eq!(sata.vendor.as_deref(), Some("ATA"));
}

#[test]
fn xeon_serials_with_identifiers() {
    let devices = storage_with("intel-xeon-2s-nvidia", true);
    assert_eq!(disk(&devices, "nvme0n1").serial.as_deref(), Some("S64HNE0T401234"));
    assert_eq!(disk(&devices, "nvme1n1").serial.as_deref(), Some("S55KNC0R300456"));
    assert_eq!(disk(&devices, "sda").serial, None);
}

#[test]
fn xeon_network_skips_lo_and_veth() {
    let interfaces = network_with("intel-xeon-2s-nvidia", false);
    assert_eq!(interface_names(&interfaces), ["bond0", "eno1", "eno2", "ens2f0np0", "ens2f1np1"]);
}

#[test]
fn xeon_bond_kept_as_virtual() {
    let interfaces = network_with("intel-xeon-2s-nvidia", false);
    let bond = interface(&interfaces, "bond0");
    assert!(!bond.physical);
    assert_eq!(bond.speed_mbps, Some(20000));
    assert_eq!(bond.mtu, Some(9000));
    assert_eq!(bond.driver, None);
    assert_eq!(bond.operstate.as_deref(), Some("up"));
}

#[test]
fn xeon_mlx5_port_at_100g() {
    let interfaces = network_with("intel-xeon-2s-nvidia", false);
    let port = interface(&interfaces, "ens2f0np0");
    assert!(port.physical);
    assert_eq!(port.speed_mbps, Some(100000));
    assert_eq!(port.mtu, Some(4200));
    assert_eq!(port.driver.as_deref(), Some("mlx5_core"));
    assert_eq!(port.operstate.as_deref(), Some("up"));
}

/// A running port without link reports speed -1, which means unknown.
#[test]
fn xeon_port_without_link_has_no_speed() {
    let interfaces = network_with("intel-xeon-2s-nvidia", false);
    let port = interface(&interfaces, "ens2f1np1");
    assert_eq!(port.speed_mbps, None);
    assert_eq!(port.operstate.as_deref(), Some("down"));
}

#[test]
fn xeon_bond_member_driver() {
    let interfaces = network_with("intel-xeon-2s-nvidia", false);
    let member = interface(&interfaces, "eno1");
    assert!(member.physical);
    assert_eq!(member.driver.as_deref(), Some("i40e"));
    assert_eq!(member.speed_mbps, Some(10000));
}

#[test]
fn xeon_mac_hidden_by_default() {
    let interfaces = network_with("intel-xeon-2s-nvidia", false);
    assert!(interfaces.iter().all(|interface| interface.mac_address.is_none()));
}

#[test]
fn xeon_mac_with_identifiers() {
    let interfaces = network_with("intel-xeon-2s-nvidia", true);
    assert_eq!(interface(&interfaces, "ens2f0np0").mac_address.as_deref(), Some("b8:3f:d2:1c:7a:40"));
    assert_eq!(interface(&interfaces, "bond0").mac_address.as_deref(), Some("3c:ec:ef:5a:10:2e"));
}

// ---------------------------------------------------------------- AMD EPYC, Rocky Linux 9.3

#[test]
fn epyc_memory_totals() {
    let memory = memory("amd-epyc-instinct");
    assert_eq!(memory.total_bytes, 395853720 * KIB);
    assert_eq!(memory.swap_total_bytes, Some(4194300 * KIB));
}

#[test]
fn epyc_hugepage_pools_empty() {
    let pools = memory("amd-epyc-instinct").hugepages;
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0].page_size_bytes, 2048 * KIB);
    assert_eq!(pools[1].page_size_bytes, 1048576 * KIB);
    assert!(pools.iter().all(|pool| pool.total == 0));
}

#[test]
fn epyc_os_rocky_93() {
    let os = os("amd-epyc-instinct");
    assert_eq!(os.name.as_deref(), Some("Rocky Linux"));
    assert_eq!(os.id.as_deref(), Some("rocky"));
    assert_eq!(os.version_id.as_deref(), Some("9.3"));
    assert_eq!(os.pretty_name.as_deref(), Some("Rocky Linux 9.3 (Blue Onyx)"));
    assert_eq!(os.hostname.as_deref(), Some("rocm-node-03"));
    assert_eq!(os.kernel.as_deref(), Some("5.14.0-362.8.1.el9_3.x86_64"));
    assert_eq!(os.architecture, None);
}

#[test]
fn epyc_storage_skips_loops() {
    let devices = storage_with("amd-epyc-instinct", false);
    assert_eq!(disk_names(&devices), ["nvme0n1"]);
    assert_eq!(devices[0].size_bytes, 7501476528 * SECTOR);
    assert_eq!(devices[0].model.as_deref(), Some("Micron_7450_MTFDKCC3T8TFR"));
    assert_eq!(devices[0].transport.as_deref(), Some("nvme"));
}

#[test]
fn epyc_network_keeps_bridge() {
    let interfaces = network_with("amd-epyc-instinct", false);
    assert_eq!(interface_names(&interfaces), ["br0", "ens1f0np0", "ens1f1np1"]);
    let bridge = interface(&interfaces, "br0");
    assert!(!bridge.physical);
    assert_eq!(bridge.driver, None);
}

#[test]
fn epyc_bnxt_port_at_25g() {
    let interfaces = network_with("amd-epyc-instinct", false);
    let port = interface(&interfaces, "ens1f0np0");
    assert!(port.physical);
    assert_eq!(port.speed_mbps, Some(25000));
    assert_eq!(port.driver.as_deref(), Some("bnxt_en"));
}

// ---------------------------------------------------------------- Ampere Altra, Ubuntu 24.04

#[test]
fn altra_memory_totals() {
    let memory = memory("arm64-ampere-altra");
    assert_eq!(memory.total_bytes, 263585344 * KIB);
    assert_eq!(memory.swap_total_bytes, Some(0));
}

#[test]
fn altra_four_hugepage_sizes() {
    let pools = memory("arm64-ampere-altra").hugepages;
    let sizes: Vec<u64> = pools.iter().map(|pool| pool.page_size_bytes).collect();
    assert_eq!(sizes, [64 * KIB, 2048 * KIB, 32768 * KIB, 1048576 * KIB]);
}

#[test]
fn altra_os_ubuntu_2404() {
    let os = os("arm64-ampere-altra");
    assert_eq!(os.name.as_deref(), Some("Ubuntu"));
    assert_eq!(os.version_id.as_deref(), Some("24.04"));
    assert_eq!(os.pretty_name.as_deref(), Some("Ubuntu 24.04.1 LTS"));
    assert_eq!(os.kernel.as_deref(), Some("6.8.0-45-generic"));
    assert_eq!(os.architecture.as_deref(), Some("aarch64"));
}

#[test]
fn altra_single_nvme() {
    let devices = storage_with("arm64-ampere-altra", false);
    assert_eq!(disk_names(&devices), ["nvme0n1"]);
    assert_eq!(devices[0].size_bytes, 1875385008 * SECTOR);
    assert_eq!(devices[0].model.as_deref(), Some("SAMSUNG MZQL2960HCJR-00A07"));
}

#[test]
fn altra_network_on_pci_domain_two() {
    let interfaces = network_with("arm64-ampere-altra", false);
    assert_eq!(interface_names(&interfaces), ["enP2p1s0f0np0"]);
    assert_eq!(interfaces[0].driver.as_deref(), Some("mlx5_core"));
    assert_eq!(interfaces[0].speed_mbps, Some(25000));
}

// ---------------------------------------------------------------- Intel hybrid laptop, Fedora 39

#[test]
fn laptop_memory_totals() {
    let memory = memory("intel-hybrid-laptop");
    assert_eq!(memory.total_bytes, 15660048 * KIB);
    assert_eq!(memory.swap_total_bytes, Some(8388604 * KIB));
    assert_eq!(memory.hugepages.len(), 2);
}

#[test]
fn laptop_os_fedora_39() {
    let os = os("intel-hybrid-laptop");
    assert_eq!(os.name.as_deref(), Some("Fedora Linux"));
    assert_eq!(os.id.as_deref(), Some("fedora"));
    assert_eq!(os.version_id.as_deref(), Some("39"));
    assert_eq!(os.pretty_name.as_deref(), Some("Fedora Linux 39 (Workstation Edition)"));
    assert_eq!(os.kernel.as_deref(), Some("6.5.6-300.fc39.x86_64"));
    assert_eq!(os.kernel_version.as_deref(), Some("#1 SMP PREEMPT_DYNAMIC Fri Oct  6 19:57:21 UTC 2023"));
    assert_eq!(os.architecture.as_deref(), Some("x86_64"));
}

#[test]
fn laptop_storage_skips_zram_and_loop() {
    let devices = storage_with("intel-hybrid-laptop", false);
    assert_eq!(disk_names(&devices), ["nvme0n1"]);
    assert_eq!(devices[0].size_bytes, 1000215216 * SECTOR);
}

/// Wi-Fi drivers report no link speed, so the read fails and the speed is unknown.
#[test]
fn laptop_wifi_without_speed() {
    let interfaces = network_with("intel-hybrid-laptop", false);
    assert_eq!(interface_names(&interfaces), ["wlp0s20f3"]);
    let wifi = &interfaces[0];
    assert!(wifi.physical);
    assert_eq!(wifi.driver.as_deref(), Some("iwlwifi"));
    assert_eq!(wifi.speed_mbps, None);
    assert_eq!(wifi.mtu, Some(1500));
}

// ---------------------------------------------------------------- recorded machine

fn recorded(path: &str) -> Option<String> {
    fs::read_to_string(format!("{ROOTS}/this-machine/{path}")).ok()
}

fn recorded_names(dir: &str) -> Vec<String> {
    fs::read_dir(format!("{ROOTS}/this-machine/{dir}"))
        .map(|entries| {
            entries.filter_map(Result::ok).map(|entry| entry.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default()
}

#[test]
fn recorded_memory_matches_meminfo() {
    let meminfo = recorded("proc/meminfo").expect("recorded meminfo");
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("MemTotal line");
    assert_eq!(memory("this-machine").total_bytes, kib * KIB);
}

#[test]
fn recorded_os_matches_os_release() {
    let release = recorded("etc/os-release").expect("recorded os-release");
    let name =
        release.lines().find_map(|line| line.strip_prefix("NAME=")).map(|value| value.trim_matches('"').to_owned());
    assert_eq!(os("this-machine").name, name);
}

#[test]
fn recorded_kernel_matches_osrelease() {
    let expected = recorded("proc/sys/kernel/osrelease").map(|text| text.trim().to_owned());
    assert_eq!(os("this-machine").kernel, expected);
}

#[test]
fn recorded_storage_skips_virtual_devices() {
    let devices = storage_with("this-machine", false);
    let recorded = recorded_names("sys/block");
    for device in &devices {
        assert!(recorded.contains(&device.name), "{}", device.name);
        assert!(!device.name.starts_with("loop"), "{}", device.name);
        assert!(!device.name.starts_with("zram"), "{}", device.name);
        assert!(device.size_bytes > 0, "{}", device.name);
        assert_eq!(device.serial, None);
    }
}

#[test]
fn recorded_network_skips_loopback() {
    let interfaces = network_with("this-machine", false);
    assert!(interfaces.iter().all(|interface| interface.name != "lo"));
    assert!(interfaces.iter().all(|interface| interface.mac_address.is_none()));
}

#[test]
fn recorded_network_lists_backed_or_aggregate() {
    let interfaces = network_with("this-machine", false);
    for interface in &interfaces {
        let base = format!("{ROOTS}/this-machine/sys/class/net/{}", interface.name);
        let aggregate = Path::new(&format!("{base}/bonding")).exists() || Path::new(&format!("{base}/bridge")).exists();
        assert!(interface.physical || aggregate, "{}", interface.name);
    }
}

// ---------------------------------------------------------------- all roots

/// Lists every symlink below `dir` without following any of them.
fn symlinks_below(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            found.push(path);
        } else if kind.is_dir() {
            symlinks_below(&path, found);
        }
    }
}

/// The collector sandbox rejects absolute links and links that leave the
/// granted tree, so every root must hold only relative links that resolve
/// inside it.
#[test]
fn roots_symlinks_stay_inside() {
    let roots = fs::read_dir(ROOTS).expect("fixtures/roots exists");
    let mut checked = 0;
    for root in roots.filter_map(Result::ok).map(|entry| entry.path()) {
        let base = root.canonicalize().expect("root resolves");
        let mut links = Vec::new();
        symlinks_below(&root, &mut links);
        for link in links {
            let target = fs::read_link(&link).expect("readable link");
            assert!(target.is_relative(), "{} -> {}", link.display(), target.display());
            let resolved = link.canonicalize().unwrap_or_else(|error| panic!("{} dangles: {error}", link.display()));
            assert!(resolved.starts_with(&base), "{} leaves its root", link.display());
            checked += 1;
        }
    }
    assert!(checked > 0);
}
