//! The `gpu` collector: GPUs and other accelerators, found by a scan of
//! `/sys/bus/pci/devices` and described with what each vendor's driver
//! exposes (`/proc/driver/nvidia`, amdgpu and i915 sysfs attributes).

mod pci;

use std::collections::BTreeMap;

use hw_collector_guest::{
    Accelerator, AcceleratorKind, Capability, CollectError, CollectOptions, CollectorInfo, Guest, Level, PartialReport,
    Root, log, parse_hex,
};

const PCI_DEVICES: &str = "/sys/bus/pci/devices";
const NVIDIA_PROC: &str = "/proc/driver/nvidia";

/// PCI base class 0x03: display controller (VGA 0x0300, XGA 0x0301, 3D 0x0302).
const CLASS_DISPLAY: u32 = 0x03;
/// PCI base class 0x12: processing accelerator.
const CLASS_PROCESSING_ACCELERATOR: u32 = 0x12;

// Only the component export on wasm32 names this type.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Collector;

impl Guest for Collector {
    fn info() -> CollectorInfo {
        CollectorInfo {
            name: "gpu".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
            capabilities: vec![
                Capability::ReadPath("/proc/driver/nvidia".to_owned()),
                Capability::ReadPath("/sys".to_owned()),
            ],
        }
    }

    fn collect(options: CollectOptions) -> Result<PartialReport, CollectError> {
        let accelerators = collect_accelerators(&Root::sandbox(), &options)?;
        Ok(PartialReport {
            cpu: None,
            memory: None,
            os: None,
            accelerators: Some(accelerators),
            storage: None,
            network: None,
            attributes: Vec::new(),
        })
    }
}

#[cfg(target_arch = "wasm32")]
hw_collector_guest::bindings::export_collector!(Collector with_types_in hw_collector_guest::bindings);

/// Lists the accelerators of the machine below `root`. A machine whose sysfs
/// has no PCI bus (some arm64 boards) has none, which is not an error; a root
/// without sysfs at all is.
pub fn collect_accelerators(root: &Root, options: &CollectOptions) -> Result<Vec<Accelerator>, CollectError> {
    // Without /sys/bus the list would be empty for a reason unrelated
    // to the hardware (a container without /sys mounted), and an
    // empty list means "no accelerators".
    if !root.exists("/sys/bus") {
        return Err(CollectError::NotSupported(
            "sysfs is not available (/sys/bus is missing); mount the host's /sys, read-only, under the host root"
                .to_owned(),
        ));
    }
    let nvidia_driver_version =
        root.read_opt(format!("{NVIDIA_PROC}/version")).and_then(|text| nvidia_driver_version(&text));
    let drm_cards = drm_cards_by_address(root);

    let mut accelerators = Vec::new();
    for address in root.list(PCI_DEVICES) {
        let dir = format!("{PCI_DEVICES}/{address}");
        let Some(class_code) = root.read_opt(format!("{dir}/class")).and_then(|text| parse_hex(&text)) else {
            continue;
        };
        let kind = match class_code >> 16 {
            CLASS_DISPLAY => AcceleratorKind::Gpu,
            CLASS_PROCESSING_ACCELERATOR => AcceleratorKind::ProcessingAccelerator,
            _ => continue,
        };
        let (Some(vendor_id), Some(device_id)) = (read_id(root, &dir, "vendor"), read_id(root, &dir, "device")) else {
            log(Level::Warn, &format!("skipping PCI device {address}: unreadable vendor or device id"));
            continue;
        };
        if pci::is_basic_display(vendor_id, device_id) {
            log(Level::Debug, &format!("skipping {address} ({vendor_id:04x}:{device_id:04x}): basic display adapter"));
            continue;
        }

        let mut accelerator = Accelerator {
            pci_address: address.clone(),
            kind,
            class_code,
            vendor_id,
            device_id,
            subsystem_vendor_id: read_id(root, &dir, "subsystem_vendor"),
            subsystem_device_id: read_id(root, &dir, "subsystem_device"),
            vendor: pci::vendor_name(vendor_id).map(str::to_owned),
            model_name: None,
            driver: root.link_name(format!("{dir}/driver")),
            driver_version: None,
            memory_bytes: None,
            numa_node: root.parse::<i32>(format!("{dir}/numa_node")).filter(|node| *node >= 0),
            uuid: None,
        };
        // The DRM card directory's `device` is this PCI function, so its
        // attributes are read through the card when there is one.
        let device_dir =
            drm_cards.get(&address).map_or_else(|| dir.clone(), |card| format!("/sys/class/drm/{card}/device"));

        match vendor_id {
            0x10de => describe_nvidia(root, &mut accelerator, nvidia_driver_version.as_deref(), options),
            0x1002 => describe_amd(root, &mut accelerator, &device_dir),
            0x8086 => describe_intel(root, &mut accelerator, drm_cards.get(&address).map(String::as_str)),
            _ => {}
        }
        if accelerator.model_name.is_none() {
            accelerator.model_name = pci::device_name(vendor_id, device_id).map(str::to_owned);
        }
        accelerators.push(accelerator);
    }
    Ok(accelerators)
}

fn read_id(root: &Root, dir: &str, attribute: &str) -> Option<u16> {
    root.read_opt(format!("{dir}/{attribute}")).and_then(|text| parse_hex(&text)).and_then(|id| u16::try_from(id).ok())
}

/// Maps PCI addresses to DRM card names (`card0`), from the `device` link
/// of each `/sys/class/drm/cardN`.
fn drm_cards_by_address(root: &Root) -> BTreeMap<String, String> {
    root.list("/sys/class/drm")
        .into_iter()
        .filter(|name| {
            name.strip_prefix("card").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|card| {
            let address = root.link_name(format!("/sys/class/drm/{card}/device"))?;
            Some((address, card))
        })
        .collect()
}

/// Extracts `535.129.03` from `NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 ...`.
fn nvidia_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|line| line.starts_with("NVRM version:"))?;
    let after = line.split("Kernel Module").nth(1)?;
    after.split_whitespace().next().map(str::to_owned)
}

/// Fills model, driver version and UUID from the NVIDIA driver's
/// `/proc/driver/nvidia/gpus/<pci address>/information`.
fn describe_nvidia(root: &Root, accelerator: &mut Accelerator, driver_version: Option<&str>, options: &CollectOptions) {
    accelerator.driver_version = driver_version.map(str::to_owned);
    let Some(text) = root.read_opt(format!("{NVIDIA_PROC}/gpus/{}/information", accelerator.pci_address)) else {
        return;
    };
    let fields = colon_fields(&text);
    accelerator.model_name = fields.get("Model").cloned();
    if options.include_identifiers {
        accelerator.uuid = fields.get("GPU UUID").cloned();
    }
    // NOTE: the NVIDIA driver exposes no memory size outside NVML. Data-centre
    // model names state it ("NVIDIA H100 80GB HBM3"), so it is read from
    // there; names without a size leave memory unknown.
    accelerator.memory_bytes = accelerator.model_name.as_deref().and_then(memory_from_model_name);
}

/// Fills model and VRAM size from amdgpu's sysfs attributes.
fn describe_amd(root: &Root, accelerator: &mut Accelerator, device_dir: &str) {
    accelerator.model_name = root.read_opt(format!("{device_dir}/product_name"));
    accelerator.memory_bytes = root.parse(format!("{device_dir}/mem_info_vram_total"));
    accelerator.driver_version = root.read_opt("/sys/module/amdgpu/version");
}

/// Fills local-memory size for Intel discrete GPUs. Integrated GPUs share
/// system memory, so their memory stays unknown.
///
/// NOTE: i915 exposes `lmem_total_bytes` on the DRM card; the newer `xe`
/// driver's equivalent is not read yet.
fn describe_intel(root: &Root, accelerator: &mut Accelerator, card: Option<&str>) {
    if let Some(card) = card {
        accelerator.memory_bytes = root.parse(format!("/sys/class/drm/{card}/lmem_total_bytes"));
    }
}

/// Parses `Key:  value` lines, as in the NVIDIA driver's information file.
fn colon_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

/// Reads a memory size stated in a model name, such as `80GB` in
/// `NVIDIA H100 80GB HBM3` or `A100-SXM4-40GB`. Returns bytes (GiB, as GPU
/// vendors use the unit).
fn memory_from_model_name(model: &str) -> Option<u64> {
    model
        .split([' ', '-'])
        .find_map(|token| token.strip_suffix("GB")?.parse::<u64>().ok())
        .map(|gib| gib * 1024 * 1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_version_line() {
        let text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023\nGCC version:  gcc version 12\n";
        assert_eq!(nvidia_driver_version(text).as_deref(), Some("535.129.03"));
        assert_eq!(nvidia_driver_version("garbage"), None);
    }

    #[test]
    fn root_without_sysfs_is_an_error() {
        let empty = std::env::temp_dir().join("hw-collector-gpu-no-sysfs");
        let result = collect_accelerators(&Root::at(&empty), &CollectOptions { include_identifiers: false });
        assert!(matches!(result, Err(CollectError::NotSupported(_))));
    }

    #[test]
    fn memory_in_model_names() {
        assert_eq!(memory_from_model_name("NVIDIA H100 80GB HBM3"), Some(80 << 30));
        assert_eq!(memory_from_model_name("NVIDIA A100-SXM4-40GB"), Some(40 << 30));
        assert_eq!(memory_from_model_name("NVIDIA L40S"), None);
    }
}
