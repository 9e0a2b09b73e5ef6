//! Block devices from `/sys/block` and network interfaces from `/sys/class/net`.

use hw_collector_guest::{BlockDevice, CollectOptions, NetworkInterface, Root};

/// Lists block devices that are backed by hardware. Devices below
/// `/sys/devices/virtual/block` (loop, ram, zram, device-mapper, md, nbd)
/// are skipped: they are views of other devices or of memory, and counting
/// them would double the node's storage. Devices of size 0 (an empty card
/// reader or optical drive) are skipped too.
///
/// NVMe namespaces under native multipath are the exception: the usable
/// disk (`nvme1n1`) sits below `/sys/devices/virtual/nvme-subsystem`, and
/// each controller path (`nvme1c1n1`) is a hidden disk that is skipped.
pub fn collect_storage(root: &Root, options: &CollectOptions) -> Vec<BlockDevice> {
    let mut devices = Vec::new();
    for name in root.list("/sys/block") {
        let base = format!("/sys/block/{name}");
        let link = root.link_target(&base).unwrap_or_default();
        let virtual_device = link.contains("/virtual/") && !link.contains("/virtual/nvme-subsystem/");
        if virtual_device || ["loop", "ram", "zram"].iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        if root.parse::<u8>(format!("{base}/hidden")) == Some(1) {
            continue;
        }
        // `size` is always in 512-byte sectors, whatever the logical block size.
        let Some(sectors) = root.parse::<u64>(format!("{base}/size")) else {
            continue;
        };
        if sectors == 0 {
            continue;
        }

        devices.push(BlockDevice {
            size_bytes: sectors * 512,
            rotational: root.parse::<u8>(format!("{base}/queue/rotational")).map(|flag| flag == 1),
            removable: root.parse::<u8>(format!("{base}/removable")).map(|flag| flag == 1),
            model: root.read_opt(format!("{base}/device/model")),
            vendor: root.read_opt(format!("{base}/device/vendor")),
            transport: transport(&name, &link),
            serial: if options.include_identifiers { root.read_opt(format!("{base}/device/serial")) } else { None },
            name,
        });
    }
    devices
}

/// Derives the transport from the device's sysfs path, the way udev's
/// `ID_PATH` does: the bus directories between the PCI function and the disk
/// name the transport.
fn transport(name: &str, link: &str) -> Option<String> {
    let transport = if name.starts_with("nvme") || link.contains("/nvme") {
        "nvme"
    } else if link.contains("/virtio") {
        "virtio"
    } else if link.contains("/usb") {
        "usb"
    } else if link.contains("/mmc_host/") || name.starts_with("mmcblk") {
        "mmc"
    } else if link.contains("/end_device-") {
        "sas"
    } else if link.contains("/ata") {
        "sata"
    } else if name.starts_with("xvd") || link.contains("/vbd-") {
        "xen"
    } else if link.contains("/host") && link.contains("/target") {
        "scsi"
    } else {
        return None;
    };
    Some(transport.to_owned())
}

/// Lists network interfaces: every interface backed by a device, plus bonds
/// and bridges built on them. Other virtual interfaces (loopback, veth pairs
/// of pods, tunnels, ifb) are plumbing whose number changes with the
/// workload, so they are left out.
pub fn collect_network(root: &Root, options: &CollectOptions) -> Vec<NetworkInterface> {
    let mut interfaces = Vec::new();
    for name in root.list("/sys/class/net") {
        let base = format!("/sys/class/net/{name}");
        let physical = root.exists(format!("{base}/device"));
        let aggregate = root.exists(format!("{base}/bonding")) || root.exists(format!("{base}/bridge"));
        if !physical && !aggregate {
            continue;
        }

        interfaces.push(NetworkInterface {
            physical,
            // The kernel reports -1 (or fails the read) while the link is down
            // or when the driver does not know, as virtio-net does.
            speed_mbps: root.parse::<i64>(format!("{base}/speed")).and_then(|speed| u32::try_from(speed).ok()),
            mtu: root.parse(format!("{base}/mtu")),
            driver: root.link_name(format!("{base}/device/driver")),
            operstate: root.read_opt(format!("{base}/operstate")),
            mac_address: if options.include_identifiers { root.read_opt(format!("{base}/address")) } else { None },
            name,
        });
    }
    interfaces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_from_sysfs_paths() {
        let cases = [
            ("nvme0n1", "../devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1", Some("nvme")),
            ("vda", "../devices/pci0000:00/0000:00:02.0/virtio1/block/vda", Some("virtio")),
            ("sda", "../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda", Some("sata")),
            (
                "sdb",
                "../devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
                Some("usb"),
            ),
            (
                "sdc",
                "../devices/pci0000:00/0000:00:01.0/0000:01:00.0/host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block/sdc",
                Some("sas"),
            ),
            ("sdd", "../devices/platform/example/block/sdd", None),
        ];
        for (name, link, expected) in cases {
            assert_eq!(transport(name, link).as_deref(), expected, "{name}");
        }
    }
}
