//! Runs the InfiniBand collector on small roots written by each test, with
//! malformed or unusual files that the fixture roots do not contain.
//!
//! The roots need symlinks, as sysfs has them, and only Unix targets can
//! create them with stable Rust.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use hw_collector_guest::{CollectOptions, Root};
use hw_collector_infiniband::{KEY_PREFIX, Scan, scan};

const PCI_FUNCTION: &str = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0";

/// A root below the system's temporary directory, removed on drop.
struct TempRoot {
    base: PathBuf,
}

impl TempRoot {
    /// Creates a root with one RDMA device `mlx5_0` of a PCI function, whose
    /// files are all well-formed and whose port 1 is an active HDR port.
    fn with_device(test: &str) -> Self {
        let base = std::env::temp_dir().join(format!("hw-collector-infiniband-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = Self { base };

        root.write(&format!("{PCI_FUNCTION}/vendor"), "0x15b3");
        root.write(&format!("{PCI_FUNCTION}/device"), "0x101b");
        root.write(&format!("{PCI_FUNCTION}/net/ib0/mtu"), "2044");
        let device = format!("{PCI_FUNCTION}/infiniband/mlx5_0");
        root.write(&format!("{device}/node_type"), "1: CA");
        root.write(&format!("{device}/fw_ver"), "20.39.1002");
        root.write(&format!("{device}/hca_type"), "MT4123");
        root.write(&format!("{device}/board_id"), "MT_0000000223");
        root.write(&format!("{device}/node_guid"), "1070:fd03:0013:a8a4");
        root.write(&format!("{device}/sys_image_guid"), "1070:fd03:0013:a8a4");
        root.write(&format!("{device}/ports/1/state"), "4: ACTIVE");
        root.write(&format!("{device}/ports/1/phys_state"), "5: LinkUp");
        root.write(&format!("{device}/ports/1/rate"), "200 Gb/sec (4X HDR)");
        root.write(&format!("{device}/ports/1/link_layer"), "InfiniBand");
        root.link(&format!("{device}/device"), "../../../0000:01:00.0");
        root.link(
            "sys/class/infiniband/mlx5_0",
            "../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/infiniband/mlx5_0",
        );
        root
    }

    fn device_file(&self, file: &str) -> String {
        format!("{PCI_FUNCTION}/infiniband/mlx5_0/{file}")
    }

    /// Writes a file as sysfs does, with a trailing newline.
    fn write(&self, path: &str, text: &str) {
        self.write_bytes(path, format!("{text}\n").as_bytes());
    }

    fn write_bytes(&self, path: &str, bytes: &[u8]) {
        let target = self.base.join(path);
        fs::create_dir_all(target.parent().expect("file has a parent")).expect("create parent directory");
        fs::write(&target, bytes).expect("write file");
    }

    fn link(&self, path: &str, target: &str) {
        let link = self.base.join(path);
        fs::create_dir_all(link.parent().expect("link has a parent")).expect("create parent directory");
        symlink(target, &link).expect("create symlink");
    }

    fn scan(&self, include_identifiers: bool) -> Scan {
        scan(&Root::at(&self.base), &CollectOptions { include_identifiers }).expect("scan succeeds")
    }

    fn path(&self) -> &Path {
        &self.base
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn value<'a>(scan: &'a Scan, name: &str) -> Option<&'a str> {
    let key = format!("{KEY_PREFIX}{name}");
    scan.attributes.iter().find(|attribute| attribute.key == key).map(|attribute| attribute.value.as_str())
}

fn warned_about(scan: &Scan, text: &str) -> bool {
    scan.warnings.iter().any(|warning| warning.contains(text))
}

#[test]
fn well_formed_hdr_device() {
    let root = TempRoot::with_device("well-formed");
    let scan = root.scan(true);
    assert_eq!(scan.warnings, Vec::<String>::new());
    assert_eq!(value(&scan, "mlx5_0.port1.rate"), Some("200 Gb/sec (4X HDR)"));
    assert_eq!(value(&scan, "mlx5_0.port1.link_layer"), Some("InfiniBand"));
    assert_eq!(value(&scan, "mlx5_0.netdevs"), Some("ib0"));
    assert_eq!(value(&scan, "mlx5_0.node_guid"), Some("1070:fd03:0013:a8a4"));
    assert_eq!(value(&scan, "active_ports_by_rate"), Some("200 Gb/sec (4X HDR): 1"));
    assert_eq!(value(&scan, "ports_by_link_layer"), Some("InfiniBand: 1"));
}

#[test]
fn malformed_state_skipped() {
    let root = TempRoot::with_device("malformed-state");
    root.write(&root.device_file("ports/1/state"), "ACTIVE");
    let scan = root.scan(false);
    assert_eq!(value(&scan, "mlx5_0.port1.state"), None);
    assert!(warned_about(&scan, "ports/1/state"), "{:?}", scan.warnings);
    // The port is still counted, but not as active.
    assert_eq!(value(&scan, "port_count"), Some("1"));
    assert_eq!(value(&scan, "active_port_count"), Some("0"));
    assert_eq!(value(&scan, "active_ports_by_rate"), None);
    // The other files of the port are kept.
    assert_eq!(value(&scan, "mlx5_0.port1.phys_state"), Some("5: LinkUp"));
}

#[test]
fn malformed_rate_skipped() {
    let root = TempRoot::with_device("malformed-rate");
    root.write(&root.device_file("ports/1/rate"), "fast");
    let scan = root.scan(false);
    assert_eq!(value(&scan, "mlx5_0.port1.rate"), None);
    assert!(warned_about(&scan, "ports/1/rate"), "{:?}", scan.warnings);
    assert_eq!(value(&scan, "active_port_count"), Some("1"));
    assert_eq!(value(&scan, "active_ports_by_rate"), None);
}

#[test]
fn malformed_guid_skipped() {
    let root = TempRoot::with_device("malformed-guid");
    root.write(&root.device_file("node_guid"), "10:70:fd:13:a8:a4");
    let scan = root.scan(true);
    assert_eq!(value(&scan, "mlx5_0.node_guid"), None);
    assert_eq!(value(&scan, "mlx5_0.sys_image_guid"), Some("1070:fd03:0013:a8a4"));
    assert!(warned_about(&scan, "node_guid"), "{:?}", scan.warnings);
}

/// Without identifiers the GUID files are not read, so a malformed one
/// causes no warning either.
#[test]
fn malformed_guid_unread_without_identifiers() {
    let root = TempRoot::with_device("malformed-guid-unread");
    root.write(&root.device_file("node_guid"), "garbage");
    let scan = root.scan(false);
    assert_eq!(scan.warnings, Vec::<String>::new());
}

#[test]
fn binary_board_id_skipped() {
    let root = TempRoot::with_device("binary-board-id");
    root.write_bytes(&root.device_file("board_id"), b"MT_\xff\xfe\x00\n");
    let scan = root.scan(false);
    assert_eq!(value(&scan, "mlx5_0.board_id"), None);
    assert!(warned_about(&scan, "board_id"), "{:?}", scan.warnings);
    assert_eq!(value(&scan, "mlx5_0.fw_ver"), Some("20.39.1002"));
}

#[test]
fn overlong_fw_ver_skipped() {
    let root = TempRoot::with_device("overlong-fw-ver");
    root.write(&root.device_file("fw_ver"), &"1".repeat(65));
    let scan = root.scan(false);
    assert_eq!(value(&scan, "mlx5_0.fw_ver"), None);
    assert!(warned_about(&scan, "fw_ver"), "{:?}", scan.warnings);
}

#[test]
fn malformed_pci_id_skipped() {
    let root = TempRoot::with_device("malformed-pci-id");
    root.write(&format!("{PCI_FUNCTION}/vendor"), "0x15b3b");
    let scan = root.scan(false);
    assert_eq!(value(&scan, "mlx5_0.pci_vendor_id"), None);
    assert_eq!(value(&scan, "mlx5_0.pci_device_id"), Some("0x101b"));
    assert!(warned_about(&scan, "vendor"), "{:?}", scan.warnings);
}

#[test]
fn non_numeric_port_skipped() {
    let root = TempRoot::with_device("non-numeric-port");
    root.write(&root.device_file("ports/first/state"), "4: ACTIVE");
    let scan = root.scan(false);
    assert_eq!(value(&scan, "port_count"), Some("1"));
    assert!(warned_about(&scan, "ports/first"), "{:?}", scan.warnings);
}

/// Ports sort by number, not by name, so port 10 follows port 2.
#[test]
fn ports_sorted_numerically() {
    let root = TempRoot::with_device("ports-sorted");
    for port in ["2", "10"] {
        root.write(&root.device_file(&format!("ports/{port}/state")), "1: DOWN");
    }
    let scan = root.scan(false);
    let states: Vec<&str> = scan
        .attributes
        .iter()
        .filter(|attribute| attribute.key.ends_with(".state"))
        .map(|attribute| attribute.key.trim_start_matches(KEY_PREFIX))
        .collect();
    assert_eq!(states, ["mlx5_0.port1.state", "mlx5_0.port2.state", "mlx5_0.port10.state"]);
}

#[test]
fn device_name_unfit_for_keys_skipped() {
    let root = TempRoot::with_device("unfit-name");
    let long = "d".repeat(41);
    root.write(&format!("sys/devices/virtual/infiniband/{long}/node_type"), "1: CA");
    root.link(&format!("sys/class/infiniband/{long}"), &format!("../../devices/virtual/infiniband/{long}"));
    let scan = root.scan(false);
    assert_eq!(value(&scan, "device_count"), Some("1"));
    assert!(warned_about(&scan, &long), "{:?}", scan.warnings);
}

/// Soft-RoCE and other devices without a PCI parent have no PCI attributes,
/// and that is not a malformed file.
#[test]
fn device_without_pci_parent() {
    let root = TempRoot::with_device("no-pci-parent");
    root.write("sys/devices/virtual/infiniband/rxe0/node_type", "1: CA");
    root.write("sys/devices/virtual/infiniband/rxe0/ports/1/link_layer", "Ethernet");
    root.link("sys/class/infiniband/rxe0", "../../devices/virtual/infiniband/rxe0");
    let scan = root.scan(false);
    assert_eq!(scan.warnings, Vec::<String>::new());
    assert_eq!(value(&scan, "device_count"), Some("2"));
    assert_eq!(value(&scan, "rxe0.node_type"), Some("1: CA"));
    assert_eq!(value(&scan, "rxe0.pci_address"), None);
    assert_eq!(value(&scan, "ports_by_link_layer"), Some("Ethernet: 1, InfiniBand: 1"));
}

/// A device whose PCI function is an SR-IOV virtual function is counted,
/// not described.
#[test]
fn virtual_function_counted_only() {
    let root = TempRoot::with_device("virtual-function");
    let vf = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.2";
    root.write(&format!("{vf}/infiniband/mlx5_2/node_type"), "1: CA");
    root.link(&format!("{vf}/infiniband/mlx5_2/device"), "../../../0000:01:00.2");
    root.link(&format!("{vf}/physfn"), "../0000:01:00.0");
    root.link("sys/class/infiniband/mlx5_2", "../../devices/pci0000:00/0000:00:01.0/0000:01:00.2/infiniband/mlx5_2");
    let scan = root.scan(false);
    assert_eq!(value(&scan, "device_count"), Some("1"));
    assert_eq!(value(&scan, "virtual_function_device_count"), Some("1"));
    assert_eq!(value(&scan, "mlx5_2.node_type"), None);
}

/// An empty class directory means the RDMA core is loaded without devices.
#[test]
fn empty_class_directory() {
    let root = TempRoot::with_device("empty-class");
    fs::remove_file(root.path().join("sys/class/infiniband/mlx5_0")).expect("remove link");
    let scan = root.scan(false);
    assert_eq!(value(&scan, "device_count"), Some("0"));
    assert_eq!(value(&scan, "port_count"), Some("0"));
    assert_eq!(value(&scan, "active_ports_by_rate"), None);
}
