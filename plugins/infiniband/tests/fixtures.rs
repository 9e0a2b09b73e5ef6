//! Runs the InfiniBand collector on the machines in `fixtures/roots`. The
//! expected values are the ones `fixtures/generate.py` writes: the Xeon root
//! has a dual-port ConnectX-6 whose two functions run RoCE, one port with
//! link and one without. The other roots have no RDMA devices.

use std::collections::BTreeMap;

use hw_collector_guest::{CollectError, CollectOptions, Root};
use hw_collector_infiniband::{KEY_PREFIX, Scan, collect_infiniband, scan};

const ROOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/roots");

fn scan_with(name: &str, include_identifiers: bool) -> Scan {
    let root = Root::at(format!("{ROOTS}/{name}"));
    scan(&root, &CollectOptions { include_identifiers })
        .unwrap_or_else(|error| panic!("scan failed on {name}: {error:?}"))
}

/// Returns the attributes by key name, without the prefix.
fn attributes(scan: &Scan) -> BTreeMap<&str, &str> {
    scan.attributes
        .iter()
        .map(|attribute| {
            let name = attribute.key.strip_prefix(KEY_PREFIX).unwrap_or_else(|| panic!("key {}", attribute.key));
            (name, attribute.value.as_str())
        })
        .collect()
}

/// Checks `key` against the rules of `validate_attribute_key` in the host's
/// report module: a lowercase DNS subdomain, a slash, and 1 to 63 characters
/// of `[A-Za-z0-9._-]`.
fn is_valid_key(key: &str) -> bool {
    let Some((prefix, name)) = key.split_once('/') else {
        return false;
    };
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    prefix_ok && name_ok
}

// ---------------------------------------------------------------- Intel Xeon with a ConnectX-6

#[test]
fn xeon_summary() {
    let scan = scan_with("intel-xeon-2s-nvidia", false);
    let found = attributes(&scan);
    assert_eq!(found["device_count"], "2");
    assert_eq!(found["port_count"], "2");
    assert_eq!(found["active_port_count"], "1");
    assert_eq!(found["active_ports_by_rate"], "100 Gb/sec (4X EDR): 1");
    assert_eq!(found["ports_by_link_layer"], "Ethernet: 2");
    assert!(!found.contains_key("virtual_function_device_count"));
}

/// The summary leads the list, so that the host's per-collector attribute
/// limit drops device attributes before it drops the summary.
#[test]
fn xeon_summary_first() {
    let scan = scan_with("intel-xeon-2s-nvidia", false);
    let first = scan.attributes.first().expect("at least one attribute");
    assert_eq!(first.key, format!("{KEY_PREFIX}device_count"));
}

#[test]
fn xeon_device_files() {
    let scan = scan_with("intel-xeon-2s-nvidia", false);
    let found = attributes(&scan);
    assert_eq!(found["mlx5_0.node_type"], "1: CA");
    assert_eq!(found["mlx5_0.fw_ver"], "20.39.1002");
    assert_eq!(found["mlx5_0.hca_type"], "MT4123");
    assert_eq!(found["mlx5_0.board_id"], "MT_0000000223");
    assert_eq!(found["mlx5_1.fw_ver"], "20.39.1002");
}

#[test]
fn xeon_pci_function_and_netdev() {
    let scan = scan_with("intel-xeon-2s-nvidia", false);
    let found = attributes(&scan);
    assert_eq!(found["mlx5_0.pci_address"], "0000:98:00.0");
    assert_eq!(found["mlx5_0.pci_vendor_id"], "0x15b3");
    assert_eq!(found["mlx5_0.pci_device_id"], "0x101b");
    assert_eq!(found["mlx5_0.netdevs"], "ens2f0np0");
    assert_eq!(found["mlx5_1.pci_address"], "0000:98:00.1");
    assert_eq!(found["mlx5_1.netdevs"], "ens2f1np1");
}

#[test]
fn xeon_active_roce_port() {
    let scan = scan_with("intel-xeon-2s-nvidia", false);
    let found = attributes(&scan);
    assert_eq!(found["mlx5_0.port1.state"], "4: ACTIVE");
    assert_eq!(found["mlx5_0.port1.phys_state"], "5: LinkUp");
    assert_eq!(found["mlx5_0.port1.rate"], "100 Gb/sec (4X EDR)");
    assert_eq!(found["mlx5_0.port1.link_layer"], "Ethernet");
}

/// mlx5 reports a RoCE port without link as DOWN and Disabled, at its
/// default rate of 4X QDR.
#[test]
fn xeon_roce_port_without_link() {
    let scan = scan_with("intel-xeon-2s-nvidia", false);
    let found = attributes(&scan);
    assert_eq!(found["mlx5_1.port1.state"], "1: DOWN");
    assert_eq!(found["mlx5_1.port1.phys_state"], "3: Disabled");
    assert_eq!(found["mlx5_1.port1.rate"], "40 Gb/sec (4X QDR)");
}

#[test]
fn xeon_guids_hidden_by_default() {
    let scan = scan_with("intel-xeon-2s-nvidia", false);
    assert!(scan.attributes.iter().all(|attribute| !attribute.key.ends_with("guid")), "{:?}", scan.attributes);
}

#[test]
fn xeon_guids_with_identifiers() {
    let scan = scan_with("intel-xeon-2s-nvidia", true);
    let found = attributes(&scan);
    assert_eq!(found["mlx5_0.node_guid"], "b83f:d203:001c:7a40");
    assert_eq!(found["mlx5_0.sys_image_guid"], "b83f:d203:001c:7a40");
    assert_eq!(found["mlx5_1.node_guid"], "b83f:d203:001c:7a41");
    assert_eq!(found["mlx5_1.sys_image_guid"], "b83f:d203:001c:7a40");
}

#[test]
fn xeon_attribute_count() {
    assert_eq!(scan_with("intel-xeon-2s-nvidia", false).attributes.len(), 5 + 2 * (8 + 4));
    assert_eq!(scan_with("intel-xeon-2s-nvidia", true).attributes.len(), 5 + 2 * (10 + 4));
}

#[test]
fn xeon_keys_pass_host_rules() {
    let scan = scan_with("intel-xeon-2s-nvidia", true);
    for attribute in &scan.attributes {
        assert!(is_valid_key(&attribute.key), "{}", attribute.key);
    }
}

#[test]
fn xeon_no_warnings() {
    assert_eq!(scan_with("intel-xeon-2s-nvidia", true).warnings, Vec::<String>::new());
}

#[test]
fn xeon_report_has_only_attributes() {
    let root = Root::at(format!("{ROOTS}/intel-xeon-2s-nvidia"));
    let report = collect_infiniband(&root, &CollectOptions { include_identifiers: false }).expect("report");
    assert!(report.cpu.is_none());
    assert!(report.memory.is_none());
    assert!(report.os.is_none());
    assert!(report.accelerators.is_none());
    assert!(report.storage.is_none());
    assert!(report.network.is_none());
    assert_eq!(report.attributes.len(), 29);
}

// ---------------------------------------------------------------- roots without RDMA devices

#[test]
fn roots_without_rdma_not_supported() {
    for name in ["amd-epyc-instinct", "arm64-ampere-altra", "intel-hybrid-laptop"] {
        let root = Root::at(format!("{ROOTS}/{name}"));
        let result = scan(&root, &CollectOptions { include_identifiers: false });
        match result {
            Err(CollectError::NotSupported(message)) => {
                assert!(message.contains("/sys/class/infiniband"), "{name}: {message}");
            }
            other => panic!("{name}: expected NotSupported, got {other:?}"),
        }
    }
}

/// A root without /sys at all (a container without the host's sysfs) is
/// reported as such, not as a node without RDMA devices.
#[test]
fn root_without_sysfs_not_supported() {
    let root = Root::at(format!("{ROOTS}/does-not-exist"));
    match scan(&root, &CollectOptions { include_identifiers: false }) {
        Err(CollectError::NotSupported(message)) => assert!(message.contains("sysfs"), "{message}"),
        other => panic!("expected NotSupported, got {other:?}"),
    }
}
