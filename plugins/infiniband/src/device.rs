//! Reads RDMA devices and their ports from `/sys/class/infiniband`.

use std::fs;
use std::io;

use hw_collector_guest::{CollectError, Root, parse_hex};

use crate::sysfs::{is_guid, is_key_safe_name, is_pci_address, is_plain_text, parse_numbered, parse_rate};

pub const CLASS_DIR: &str = "/sys/class/infiniband";

/// `ACTIVE` in the PortState numbering of the InfiniBand Architecture
/// Specification, which `ports/N/state` prints as `4: ACTIVE`.
const PORT_STATE_ACTIVE: u32 = 4;

/// One RDMA device (an InfiniBand HCA or a RoCE or iWARP adapter), as
/// `/sys/class/infiniband/<name>` describes it. Every field is `None` or
/// empty when its file is missing or malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaDevice {
    pub name: String,
    /// `1: CA` for an InfiniBand or RoCE channel adapter, `4: RNIC` for an iWARP adapter.
    pub node_type: Option<String>,
    pub fw_ver: Option<String>,
    pub hca_type: Option<String>,
    pub board_id: Option<String>,
    /// Read only when identifiers are requested.
    pub node_guid: Option<String>,
    /// Read only when identifiers are requested.
    pub sys_image_guid: Option<String>,
    /// `None` for a device without a PCI parent, such as Soft-RoCE (`rxe`).
    pub pci_address: Option<String>,
    pub pci_vendor_id: Option<u16>,
    pub pci_device_id: Option<u16>,
    /// Network interfaces of the device's PCI function (`device/net`), sorted.
    pub netdevs: Vec<String>,
    /// Sorted by port number.
    pub ports: Vec<RdmaPort>,
}

/// One `ports/<number>` directory of an RDMA device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaPort {
    pub number: u16,
    /// The logical port state as printed, such as `4: ACTIVE`.
    pub state: Option<String>,
    /// The physical port state as printed, such as `5: LinkUp`.
    pub phys_state: Option<String>,
    /// The link rate as printed, such as `200 Gb/sec (4X HDR)`.
    pub rate: Option<String>,
    /// `rate` in tenths of Gb/s, for ordering.
    pub rate_tenths_gbps: Option<u32>,
    /// `InfiniBand` or `Ethernet`.
    pub link_layer: Option<String>,
}

impl RdmaPort {
    pub fn is_active(&self) -> bool {
        self.state.as_deref().and_then(parse_numbered).is_some_and(|(number, _)| number == PORT_STATE_ACTIVE)
    }
}

/// RDMA devices found below the root, and the reasons for every file or
/// device that was skipped as malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaDevices {
    /// Devices of physical functions, sorted by name.
    pub devices: Vec<RdmaDevice>,
    /// Devices skipped because their PCI function is an SR-IOV virtual function.
    pub virtual_functions: usize,
    pub warnings: Vec<String>,
}

/// Reads every RDMA device of `/sys/class/infiniband`.
///
/// Devices of SR-IOV virtual functions (whose PCI function has a `physfn`
/// link) are counted but not described, because they are slices of an
/// adapter that its physical function already describes. Their number
/// follows the SR-IOV configuration rather than the hardware.
///
/// Fails with `NotSupported` when the class directory does not exist, which
/// means that the kernel's RDMA core (`ib_core`) is not loaded.
pub fn read_devices(root: &Root, include_identifiers: bool) -> Result<RdmaDevices, CollectError> {
    if !root.exists("/sys/class") {
        return Err(CollectError::NotSupported(
            "sysfs is not available because /sys/class is missing. Grant read access to the host's /sys".to_owned(),
        ));
    }
    let entries = match fs::read_dir(root.path(CLASS_DIR)) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(CollectError::NotSupported(format!(
                "{CLASS_DIR} does not exist: the kernel's RDMA core (ib_core) is not loaded, \
                 so this node has no usable InfiniBand, RoCE or iWARP device"
            )));
        }
        Err(error) => return Err(CollectError::Io(format!("failed to list {CLASS_DIR}: {error}"))),
    };

    let mut reader = Reader { root, warnings: Vec::new() };
    let mut names = Vec::new();
    for entry in entries {
        match entry.map(|entry| entry.file_name().into_string()) {
            Ok(Ok(name)) => names.push(name),
            Ok(Err(name)) => reader.warn(format!("skipping RDMA device {name:?}: the name is not UTF-8")),
            Err(error) => reader.warn(format!("skipping an entry of {CLASS_DIR}: {error}")),
        }
    }
    names.sort();

    let mut found = RdmaDevices::default();
    for name in names {
        if !is_key_safe_name(&name) {
            reader.warn(format!(
                "skipping RDMA device {name:?}: attribute keys need a name of 1 to {} characters of [A-Za-z0-9._-]",
                crate::sysfs::DEVICE_NAME_MAX_CHARS
            ));
            continue;
        }
        if root.exists(format!("{CLASS_DIR}/{name}/device/physfn")) {
            found.virtual_functions += 1;
            continue;
        }
        found.devices.push(reader.device(name, include_identifiers));
    }
    found.warnings = reader.warnings;
    Ok(found)
}

/// Reads attribute files and records a warning for each one it rejects.
struct Reader<'a> {
    root: &'a Root,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    fn device(&mut self, name: String, include_identifiers: bool) -> RdmaDevice {
        let base = format!("{CLASS_DIR}/{name}");
        let guid = |reader: &mut Self, file: &str| {
            if include_identifiers {
                reader.read_checked(&format!("{base}/{file}"), "a GUID such as `b83f:d203:001c:7a40`", is_guid)
            } else {
                None
            }
        };

        let pci_address = self.root.link_name(format!("{base}/device")).filter(|address| is_pci_address(address));
        let (pci_vendor_id, pci_device_id) = if pci_address.is_some() {
            (self.read_pci_id(&format!("{base}/device/vendor")), self.read_pci_id(&format!("{base}/device/device")))
        } else {
            (None, None)
        };

        RdmaDevice {
            node_type: self.read_checked(&format!("{base}/node_type"), "a node type such as `1: CA`", |text| {
                parse_numbered(text).is_some()
            }),
            fw_ver: self.read_text(&format!("{base}/fw_ver")),
            hca_type: self.read_text(&format!("{base}/hca_type")),
            board_id: self.read_text(&format!("{base}/board_id")),
            node_guid: guid(self, "node_guid"),
            sys_image_guid: guid(self, "sys_image_guid"),
            pci_address,
            pci_vendor_id,
            pci_device_id,
            netdevs: self.netdevs(&format!("{base}/device/net")),
            ports: self.ports(&format!("{base}/ports")),
            name,
        }
    }

    fn ports(&mut self, dir: &str) -> Vec<RdmaPort> {
        let mut ports = Vec::new();
        for entry in self.root.list(dir) {
            let Ok(number) = entry.parse::<u16>() else {
                self.warn(format!("skipping {dir}/{entry}: a port directory is named by its port number"));
                continue;
            };
            let port_dir = format!("{dir}/{entry}");
            let numbered = |text: &str| parse_numbered(text).is_some();
            let rate = self.read_checked(&format!("{port_dir}/rate"), "a rate such as `200 Gb/sec (4X HDR)`", |text| {
                parse_rate(text).is_some()
            });
            ports.push(RdmaPort {
                number,
                state: self.read_checked(&format!("{port_dir}/state"), "a state such as `4: ACTIVE`", numbered),
                phys_state: self.read_checked(
                    &format!("{port_dir}/phys_state"),
                    "a state such as `5: LinkUp`",
                    numbered,
                ),
                rate_tenths_gbps: rate.as_deref().and_then(parse_rate),
                rate,
                link_layer: self.read_text(&format!("{port_dir}/link_layer")),
            });
        }
        ports.sort_by_key(|port| port.number);
        ports
    }

    /// Lists interface names. Linux rejects whitespace, `/` and `:` in them,
    /// so any other name did not come from the kernel.
    fn netdevs(&mut self, dir: &str) -> Vec<String> {
        let mut names = Vec::new();
        for name in self.root.list(dir) {
            if is_plain_text(&name) && !name.contains([' ', '/', ':']) {
                names.push(name);
            } else {
                self.warn(format!("skipping network interface {name:?} in {dir}: not a valid interface name"));
            }
        }
        names
    }

    fn read_pci_id(&mut self, path: &str) -> Option<u16> {
        let text = self.read_checked(path, "a 16-bit hex id such as `0x15b3`", |text| {
            text.starts_with("0x") && parse_hex(text).is_some_and(|id| id <= 0xffff)
        })?;
        parse_hex(&text).and_then(|id| u16::try_from(id).ok())
    }

    fn read_text(&mut self, path: &str) -> Option<String> {
        self.read_checked(path, "one line of printable ASCII", is_plain_text)
    }

    /// Reads an attribute file and keeps its trimmed text if `valid` accepts
    /// it. A missing or empty file is `None` without a warning, because
    /// drivers differ in which attributes they provide.
    fn read_checked(&mut self, path: &str, expected: &str, valid: impl Fn(&str) -> bool) -> Option<String> {
        let text = match self.root.read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                self.warn(format!("skipping {path}: {error}"));
                return None;
            }
        };
        if text.is_empty() {
            return None;
        }
        if !valid(&text) {
            let excerpt: String = text.chars().take(80).collect();
            self.warn(format!("skipping {path}: expected {expected}, found {excerpt:?}"));
            return None;
        }
        Some(text)
    }
}
