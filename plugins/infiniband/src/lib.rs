//! The `infiniband` collector, an example plugin: InfiniBand HCAs and RoCE
//! adapters, and the state and rate of their ports, from
//! `/sys/class/infiniband`.
//!
//! The agent does not embed this collector. It is built on its own and
//! loaded from the agent's plugin directory. The node report has no
//! InfiniBand section, so every fact is returned as an attribute whose key
//! starts with [`KEY_PREFIX`]: `<device>.<file>` for device files,
//! `<device>.port<N>.<file>` for port files and a few summary keys.

mod device;
mod sysfs;

use std::collections::BTreeMap;

use hw_collector_guest::{
    Attribute, Capability, CollectError, CollectOptions, CollectorInfo, Guest, Level, PartialReport, Root, log,
};

pub use device::{RdmaDevice, RdmaDevices, RdmaPort, read_devices};

/// The DNS prefix of every attribute key this collector returns.
pub const KEY_PREFIX: &str = "infiniband.hw-agent.aiod.eu/";

/// Warnings logged per collection, so that a broken driver with many ports
/// does not flood the host's log.
const MAX_LOGGED_WARNINGS: usize = 20;

// Only the component export on wasm32 names this type.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Collector;

impl Guest for Collector {
    fn info() -> CollectorInfo {
        CollectorInfo {
            name: "infiniband".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
            // The class entries are symlinks into /sys/devices, so a grant of
            // /sys/class/infiniband alone would not resolve them.
            capabilities: vec![Capability::ReadPath("/sys".to_owned())],
        }
    }

    fn collect(options: CollectOptions) -> Result<PartialReport, CollectError> {
        collect_infiniband(&Root::sandbox(), &options)
    }
}

#[cfg(target_arch = "wasm32")]
hw_collector_guest::bindings::export_collector!(Collector with_types_in hw_collector_guest::bindings);

/// The attributes for the RDMA devices below a root, and the warnings about
/// files that were skipped as malformed.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub attributes: Vec<Attribute>,
    pub warnings: Vec<String>,
}

/// Reads the RDMA devices below `root`, logs the warnings about malformed
/// files and returns the attributes as a partial report.
pub fn collect_infiniband(root: &Root, options: &CollectOptions) -> Result<PartialReport, CollectError> {
    let Scan { attributes, warnings } = scan(root, options)?;
    for warning in warnings.iter().take(MAX_LOGGED_WARNINGS) {
        log(Level::Warn, warning);
    }
    let unlogged = warnings.len().saturating_sub(MAX_LOGGED_WARNINGS);
    if unlogged > 0 {
        log(Level::Warn, &format!("{unlogged} more warnings about RDMA device files were not logged"));
    }

    Ok(PartialReport {
        cpu: None,
        memory: None,
        os: None,
        accelerators: None,
        storage: None,
        network: None,
        attributes,
    })
}

/// Reads the RDMA devices below `root` and turns them into attributes.
/// `node_guid` and `sys_image_guid` are read only with
/// `options.include_identifiers`.
pub fn scan(root: &Root, options: &CollectOptions) -> Result<Scan, CollectError> {
    let found = read_devices(root, options.include_identifiers)?;
    Ok(Scan { attributes: attributes(&found), warnings: found.warnings })
}

/// Builds the summary attributes, then the attributes of each device.
///
/// NOTE: the host keeps at most 256 attributes per collector and drops the
/// rest. A device with one port needs 14, so about 17 single-port devices
/// fit in full. The summary comes first so that it is always kept.
fn attributes(found: &RdmaDevices) -> Vec<Attribute> {
    let mut attributes = summary(found);
    for device in &found.devices {
        let name = &device.name;
        let mut add = |file: &str, value: Option<String>| {
            if let Some(value) = value {
                attributes.push(attribute(&format!("{name}.{file}"), value));
            }
        };
        add("node_type", device.node_type.clone());
        add("fw_ver", device.fw_ver.clone());
        add("hca_type", device.hca_type.clone());
        add("board_id", device.board_id.clone());
        add("node_guid", device.node_guid.clone());
        add("sys_image_guid", device.sys_image_guid.clone());
        add("pci_address", device.pci_address.clone());
        add("pci_vendor_id", device.pci_vendor_id.map(|id| format!("0x{id:04x}")));
        add("pci_device_id", device.pci_device_id.map(|id| format!("0x{id:04x}")));
        // Interface names cannot contain whitespace, so a space separates
        // them, as in the kernel's own lists such as `bonding/slaves`.
        add("netdevs", (!device.netdevs.is_empty()).then(|| device.netdevs.join(" ")));

        for port in &device.ports {
            let number = port.number;
            add(&format!("port{number}.state"), port.state.clone());
            add(&format!("port{number}.phys_state"), port.phys_state.clone());
            add(&format!("port{number}.rate"), port.rate.clone());
            add(&format!("port{number}.link_layer"), port.link_layer.clone());
        }
    }
    attributes
}

/// Counts devices and ports, and groups the ports by rate and link layer.
fn summary(found: &RdmaDevices) -> Vec<Attribute> {
    let ports: Vec<&RdmaPort> = found.devices.iter().flat_map(|device| &device.ports).collect();
    let active: Vec<&RdmaPort> = ports.iter().copied().filter(|port| port.is_active()).collect();

    let mut summary = vec![
        attribute("device_count", found.devices.len().to_string()),
        attribute("port_count", ports.len().to_string()),
        attribute("active_port_count", active.len().to_string()),
    ];
    if found.virtual_functions > 0 {
        summary.push(attribute("virtual_function_device_count", found.virtual_functions.to_string()));
    }

    // Only active ports count here, because a port without link reports a
    // driver default (mlx5 prints 40 Gb/sec (4X QDR) for a RoCE port that is down).
    let mut by_rate: BTreeMap<(std::cmp::Reverse<u32>, &str), usize> = BTreeMap::new();
    for port in &active {
        if let (Some(tenths), Some(rate)) = (port.rate_tenths_gbps, port.rate.as_deref()) {
            *by_rate.entry((std::cmp::Reverse(tenths), rate)).or_default() += 1;
        }
    }
    if !by_rate.is_empty() {
        let groups: Vec<String> = by_rate.iter().map(|((_, rate), count)| format!("{rate}: {count}")).collect();
        summary.push(attribute("active_ports_by_rate", groups.join(", ")));
    }

    let mut by_link_layer: BTreeMap<&str, usize> = BTreeMap::new();
    for port in &ports {
        if let Some(link_layer) = port.link_layer.as_deref() {
            *by_link_layer.entry(link_layer).or_default() += 1;
        }
    }
    if !by_link_layer.is_empty() {
        let groups: Vec<String> = by_link_layer.iter().map(|(layer, count)| format!("{layer}: {count}")).collect();
        summary.push(attribute("ports_by_link_layer", groups.join(", ")));
    }
    summary
}

fn attribute(name: &str, value: String) -> Attribute {
    Attribute { key: format!("{KEY_PREFIX}{name}"), value }
}
