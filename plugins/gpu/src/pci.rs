//! PCI identifiers the collector needs to name devices without the pci.ids
//! database, which is not part of the granted filesystem.

/// Returns the vendor name of a PCI vendor id, for vendors that make GPUs or
/// accelerators.
pub fn vendor_name(vendor_id: u16) -> Option<&'static str> {
    Some(match vendor_id {
        0x10de => "NVIDIA",
        0x1002 | 0x1022 => "AMD",
        0x8086 => "Intel",
        0x1da3 => "Habana Labs",
        0x1d0f => "Amazon",
        0x1ae0 => "Google",
        0x1e52 => "Tenstorrent",
        0x1a03 => "ASPEED",
        0x102b => "Matrox",
        _ => return None,
    })
}

/// True for display controllers that drive a console but compute nothing:
/// server BMC graphics and the emulated adapters of hypervisors. Reporting
/// them as accelerators would put a phantom GPU on almost every server.
pub fn is_basic_display(vendor_id: u16, device_id: u16) -> bool {
    matches!(
        (vendor_id, device_id),
        // ASPEED BMC graphics (AST2x00) and Matrox G200 server parts.
        (0x1a03, _)
            | (0x102b, 0x0522..=0x0538)
            // QEMU/Bochs stdvga, Cirrus, VMware SVGA, virtio-gpu, Hyper-V.
            | (0x1234, 0x1111)
            | (0x1013, 0x00b8)
            | (0x15ad, 0x0405)
            | (0x1af4, 0x1050)
            | (0x1414, 0x5353)
    )
}

/// Returns a model name for well-known data-centre parts, used only when the
/// driver does not report one (no driver loaded, or an AMD board whose FRU
/// has no product name).
///
/// NOTE: device ids are shared by some board variants (memory size, form
/// factor), so these names stop at the level the id determines.
pub fn device_name(vendor_id: u16, device_id: u16) -> Option<&'static str> {
    Some(match (vendor_id, device_id) {
        (0x10de, 0x1db1) => "Tesla V100-SXM2-16GB",
        (0x10de, 0x1db4) => "Tesla V100-PCIE-16GB",
        (0x10de, 0x1db5) => "Tesla V100-SXM2-32GB",
        (0x10de, 0x1eb8) => "Tesla T4",
        (0x10de, 0x20b0) => "A100-SXM4-40GB",
        (0x10de, 0x20b2) => "A100-SXM4-80GB",
        (0x10de, 0x20b5) => "A100 80GB PCIe",
        (0x10de, 0x20f1) => "A100-PCIE-40GB",
        (0x10de, 0x2330) => "H100 SXM5 80GB",
        (0x10de, 0x2331) => "H100 PCIe",
        (0x10de, 0x26b5) => "L40",
        (0x10de, 0x26b9) => "L40S",
        (0x10de, 0x27b8) => "L4",
        (0x1002, 0x738c) => "Instinct MI100",
        (0x1002, 0x7408) => "Instinct MI250X",
        (0x1002, 0x740c) => "Instinct MI250X / MI250",
        (0x1002, 0x740f) => "Instinct MI210",
        (0x1002, 0x74a1) => "Instinct MI300X",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_and_display_tables() {
        assert_eq!(vendor_name(0x10de), Some("NVIDIA"));
        assert_eq!(vendor_name(0x0001), None);
        assert!(is_basic_display(0x1a03, 0x2000));
        assert!(!is_basic_display(0x10de, 0x2330));
        assert_eq!(device_name(0x1002, 0x74a1), Some("Instinct MI300X"));
    }
}
