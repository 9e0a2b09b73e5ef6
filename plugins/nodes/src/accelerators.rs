//! Accelerators among a node's extended resources, and the feature-discovery
//! labels that name their product and memory.

use crate::labels::Labels;
use crate::{AcceleratorResource, ResourceAmounts};

/// Pattern of the extended resource names an accelerator row matches.
#[derive(Debug, Clone, Copy)]
pub enum ResourceMatch {
    Exact(&'static str),
    Prefix(&'static str),
    /// `amd.com/<compute>_<memory>`, such as `amd.com/cpx_nps4`: the names the
    /// AMD device plugin gives GPU partitions under its `mixed` resource
    /// naming strategy.
    AmdPartition,
}

impl ResourceMatch {
    fn matches(self, resource: &str) -> bool {
        match self {
            Self::Exact(name) => resource == name,
            Self::Prefix(prefix) => resource.starts_with(prefix),
            Self::AmdPartition => is_amd_partition(resource),
        }
    }
}

/// A node label key, either fixed or derived from the resource name the way
/// NVIDIA GPU Feature Discovery derives its keys (`<resource>.product`).
#[derive(Debug, Clone, Copy)]
pub enum LabelKey {
    Fixed(&'static str),
    ResourceSuffix(&'static str),
}

impl LabelKey {
    fn key(self, resource: &str) -> String {
        match self {
            Self::Fixed(key) => key.to_owned(),
            Self::ResourceSuffix(suffix) => format!("{resource}{suffix}"),
        }
    }
}

/// A label that gives the memory of one device, and the unit of its value.
#[derive(Debug, Clone, Copy)]
pub enum MemoryLabel {
    /// A whole number of MiB, such as `81559`.
    Mebibytes(LabelKey),
    /// A whole number of GiB followed by `G`, such as `192G`.
    GibibytesWithG(LabelKey),
}

/// One row of [`ACCELERATORS`].
#[derive(Debug, Clone, Copy)]
pub struct AcceleratorKind {
    pub resource: ResourceMatch,
    /// The `vendor` of the record: `nvidia`, `amd` or `intel` for those
    /// companies' products, otherwise the resource name's domain, as the WIT
    /// specifies.
    pub vendor: &'static str,
    /// Labels that may name the product, in order of preference.
    pub product_labels: &'static [LabelKey],
    /// Labels that may give the memory per device, in order of preference.
    pub memory_labels: &'static [MemoryLabel],
}

/// Extended resources that are accelerators, with the vendor and the node
/// labels that describe each. The first matching row wins.
///
/// Label sources:
/// - NVIDIA GPU Feature Discovery labels each resource as
///   `<resource>.product` and `<resource>.memory` (MiB, NVML's total memory
///   divided by 1024²), so MIG resources such as `nvidia.com/mig-1g.10gb`
///   have their own keys. A time-sliced GPU renamed to
///   `nvidia.com/gpu.shared` keeps the `nvidia.com/gpu.*` keys.
/// - GKE sets `cloud.google.com/gke-accelerator` (such as `nvidia-l4`) on GPU
///   nodes, where GPU Feature Discovery is often absent, and
///   `cloud.google.com/gke-tpu-accelerator` (such as `tpu-v5-lite-podslice`)
///   on TPU nodes.
/// - The AMD GPU node labeller (ROCm/k8s-device-plugin) sets
///   `amd.com/gpu.product-name` (the sysfs `product_name` with spaces turned
///   into `_`) and `amd.com/gpu.vram` (`<N>G`, the VRAM size in bytes divided
///   by 2^30 and rounded to the nearest integer), with `beta.amd.com/` copies.
///   It sets these plain keys only when all GPUs of the node agree.
/// - Intel's NFD rules for data-center GPUs set `gpu.intel.com/product` (such
///   as `Max_1550`). Intel's `gpu.intel.com/memory.max` is the sum over all
///   GPUs of the node, not the memory of one, so it is not used.
/// - Intel Gaudi (`habana.ai`), AWS Neuron and Xilinx FPGAs have no standard
///   product or memory label.
pub const ACCELERATORS: &[AcceleratorKind] = &[
    AcceleratorKind {
        resource: ResourceMatch::Exact("nvidia.com/gpu"),
        vendor: "nvidia",
        product_labels: NVIDIA_GPU_PRODUCT_LABELS,
        memory_labels: NVIDIA_GPU_MEMORY_LABELS,
    },
    AcceleratorKind {
        resource: ResourceMatch::Exact("nvidia.com/gpu.shared"),
        vendor: "nvidia",
        product_labels: NVIDIA_GPU_PRODUCT_LABELS,
        memory_labels: NVIDIA_GPU_MEMORY_LABELS,
    },
    AcceleratorKind {
        resource: ResourceMatch::Prefix("nvidia.com/mig-"),
        vendor: "nvidia",
        product_labels: &[LabelKey::ResourceSuffix(".product")],
        memory_labels: &[MemoryLabel::Mebibytes(LabelKey::ResourceSuffix(".memory"))],
    },
    AcceleratorKind {
        resource: ResourceMatch::Exact("amd.com/gpu"),
        vendor: "amd",
        product_labels: AMD_PRODUCT_LABELS,
        memory_labels: &[
            MemoryLabel::GibibytesWithG(LabelKey::Fixed("amd.com/gpu.vram")),
            MemoryLabel::GibibytesWithG(LabelKey::Fixed("beta.amd.com/gpu.vram")),
        ],
    },
    // The VRAM label describes a whole GPU, not one partition of it.
    AcceleratorKind {
        resource: ResourceMatch::AmdPartition,
        vendor: "amd",
        product_labels: AMD_PRODUCT_LABELS,
        memory_labels: &[],
    },
    AcceleratorKind {
        resource: ResourceMatch::Exact("gpu.intel.com/i915"),
        vendor: "intel",
        product_labels: &[LabelKey::Fixed("gpu.intel.com/product")],
        memory_labels: &[],
    },
    AcceleratorKind {
        resource: ResourceMatch::Exact("gpu.intel.com/xe"),
        vendor: "intel",
        product_labels: &[LabelKey::Fixed("gpu.intel.com/product")],
        memory_labels: &[],
    },
    // Habana Labs, maker of Gaudi, is part of Intel.
    AcceleratorKind {
        resource: ResourceMatch::Exact("habana.ai/gaudi"),
        vendor: "intel",
        product_labels: &[],
        memory_labels: &[],
    },
    // `neuron` and `neurondevice` count devices, `neuroncore` counts cores.
    AcceleratorKind {
        resource: ResourceMatch::Prefix("aws.amazon.com/neuron"),
        vendor: "aws.amazon.com",
        product_labels: &[],
        memory_labels: &[],
    },
    AcceleratorKind {
        resource: ResourceMatch::Exact("google.com/tpu"),
        vendor: "google.com",
        product_labels: &[LabelKey::Fixed("cloud.google.com/gke-tpu-accelerator")],
        memory_labels: &[],
    },
    // The Xilinx FPGA device plugin names resources
    // `xilinx.com/fpga-<shell>-<timestamp>`. Xilinx is part of AMD.
    AcceleratorKind {
        resource: ResourceMatch::Prefix("xilinx.com/fpga-"),
        vendor: "amd",
        product_labels: &[],
        memory_labels: &[],
    },
];

const NVIDIA_GPU_PRODUCT_LABELS: &[LabelKey] =
    &[LabelKey::Fixed("nvidia.com/gpu.product"), LabelKey::Fixed("cloud.google.com/gke-accelerator")];
const NVIDIA_GPU_MEMORY_LABELS: &[MemoryLabel] = &[MemoryLabel::Mebibytes(LabelKey::Fixed("nvidia.com/gpu.memory"))];

const AMD_PRODUCT_LABELS: &[LabelKey] =
    &[LabelKey::Fixed("amd.com/gpu.product-name"), LabelKey::Fixed("beta.amd.com/gpu.product-name")];

/// Returns the table row for an extended resource, or `None` when it is not
/// an accelerator.
pub fn accelerator_kind(resource: &str) -> Option<&'static AcceleratorKind> {
    ACCELERATORS.iter().find(|kind| kind.resource.matches(resource))
}

/// Lists one record per accelerator resource in `capacity`, in resource name
/// order. A resource with a capacity of 0 is left out, although it stays in
/// `capacity.extended`. Label values that do not parse are reported through
/// `warn`.
pub fn accelerators(
    capacity: &ResourceAmounts,
    allocatable: &ResourceAmounts,
    labels: &Labels<'_>,
    warn: &mut dyn FnMut(String),
) -> Vec<AcceleratorResource> {
    let mut records = Vec::new();
    for resource in &capacity.extended {
        let Some(kind) = accelerator_kind(&resource.name) else {
            continue;
        };
        if resource.amount == 0 {
            continue;
        }
        let allocatable = allocatable
            .extended
            .iter()
            .find(|entry| entry.name == resource.name)
            .map(|entry| entry.amount)
            .unwrap_or(0);
        let product =
            kind.product_labels.iter().find_map(|label| labels.get(&label.key(&resource.name))).map(str::to_owned);
        let memory_bytes = memory_bytes(kind, &resource.name, labels, warn);
        records.push(AcceleratorResource {
            resource: resource.name.clone(),
            vendor: kind.vendor.to_owned(),
            count: resource.amount,
            allocatable,
            product,
            memory_bytes,
        });
    }
    records
}

/// Reads the first memory label present. A present label that does not parse
/// ends the search, so that a malformed preferred label is reported instead of
/// silently replaced by a less specific one.
fn memory_bytes(
    kind: &AcceleratorKind,
    resource: &str,
    labels: &Labels<'_>,
    warn: &mut dyn FnMut(String),
) -> Option<u64> {
    for label in kind.memory_labels {
        let (key, suffix, shift, unit) = match *label {
            MemoryLabel::Mebibytes(key) => (key, "", 20, "a whole number of MiB"),
            MemoryLabel::GibibytesWithG(key) => (key, "G", 30, "a whole number of GiB followed by G"),
        };
        let key = key.key(resource);
        let Some(value) = labels.get(&key) else {
            continue;
        };
        let bytes = parse_scaled(value, suffix, shift);
        if bytes.is_none() {
            warn(format!(
                "label {key} is {value:?}, which is not {unit} that fits in 64 bits; the memory of {resource} is left out"
            ));
        }
        return bytes;
    }
    None
}

/// Parses `<digits><suffix>` and multiplies the number by `2^shift`.
fn parse_scaled(value: &str, suffix: &str, shift: u32) -> Option<u64> {
    let digits = value.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    number.checked_mul(1u64 << shift)
}

fn is_amd_partition(resource: &str) -> bool {
    let Some(name) = resource.strip_prefix("amd.com/") else {
        return false;
    };
    let Some((compute, memory)) = name.split_once('_') else {
        return false;
    };
    let compute_modes = ["spx", "dpx", "tpx", "qpx", "cpx"];
    let memory_digits = memory.strip_prefix("nps").unwrap_or("");
    compute_modes.contains(&compute)
        && !memory_digits.is_empty()
        && memory_digits.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor_of(resource: &str) -> Option<&'static str> {
        accelerator_kind(resource).map(|kind| kind.vendor)
    }

    #[test]
    fn table_matches_known_resources() {
        let cases = [
            ("nvidia.com/gpu", Some("nvidia")),
            ("nvidia.com/gpu.shared", Some("nvidia")),
            ("nvidia.com/mig-1g.10gb", Some("nvidia")),
            ("nvidia.com/mig-3g.40gb", Some("nvidia")),
            ("amd.com/gpu", Some("amd")),
            ("amd.com/cpx_nps4", Some("amd")),
            ("amd.com/spx_nps1", Some("amd")),
            ("gpu.intel.com/i915", Some("intel")),
            ("gpu.intel.com/xe", Some("intel")),
            ("habana.ai/gaudi", Some("intel")),
            ("aws.amazon.com/neuron", Some("aws.amazon.com")),
            ("aws.amazon.com/neuroncore", Some("aws.amazon.com")),
            ("aws.amazon.com/neurondevice", Some("aws.amazon.com")),
            ("google.com/tpu", Some("google.com")),
            ("xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_3_1-0", Some("amd")),
        ];
        for (resource, expected) in cases {
            assert_eq!(vendor_of(resource), expected, "{resource}");
        }
    }

    #[test]
    fn table_skips_non_accelerators() {
        let resources = [
            "nvidia.com/gpu.memory",
            "amd.com/gpu.vram",
            "amd.com/cpx_nps",
            "amd.com/xyz_nps1",
            "gpu.intel.com/i915_monitoring",
            "gpu.intel.com/millicores",
            "gpu.intel.com/memory.max",
            "gpu.intel.com/tiles",
            "hugepages-2Mi",
            "vpc.amazonaws.com/efa",
            "example.com/gpu",
        ];
        for resource in resources {
            assert_eq!(vendor_of(resource), None, "{resource}");
        }
    }

    #[test]
    fn scaled_memory_labels() {
        assert_eq!(parse_scaled("81559", "", 20), Some(81_559 << 20));
        assert_eq!(parse_scaled("192G", "G", 30), Some(192 << 30));
        assert_eq!(parse_scaled("192", "G", 30), None);
        assert_eq!(parse_scaled("G", "G", 30), None);
        assert_eq!(parse_scaled("-1", "", 20), None);
        assert_eq!(parse_scaled("1.5G", "G", 30), None);
        assert_eq!(parse_scaled("99999999999999999999", "", 20), None);
        assert_eq!(parse_scaled("17592186044416", "", 20), None);
    }
}
