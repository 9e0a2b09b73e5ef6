//! The node report: the JSON document `hw-agent collect` prints and the AIoD
//! asset carries in `description.plain`. `docs/report-schema.md` documents
//! every field.
//!
//! Sizes are integers in bytes and frequencies are in MHz. A section whose
//! collector failed is `null`, with the reason under `unknown`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Identifies this document format; bumped on incompatible changes.
pub const NODE_REPORT_SCHEMA: &str = "aiod-hw-agent/node-report/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub schema: String,
    pub generated_at: DateTime<Utc>,
    pub agent: AgentInfo,
    pub node: NodeIdentity,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub accelerators: Option<Vec<Accelerator>>,
    pub storage: Option<Vec<BlockDevice>>,
    pub network: Option<Vec<NetworkInterface>>,
    /// Namespaced facts outside the typed sections (`example.com/fabric`).
    pub attributes: BTreeMap<String, String>,
    /// The reason each `null` section is unknown, keyed by section name.
    pub unknown: BTreeMap<String, String>,
    pub collectors: Vec<CollectorOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub hostname: Option<String>,
    /// Kernel machine name: `x86_64`, `aarch64`, ...
    pub architecture: Option<String>,
    /// Kernel release, as `uname -r` prints it.
    pub kernel: Option<String>,
    pub kernel_version: Option<String>,
    pub os: OperatingSystem,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatingSystem {
    pub name: Option<String>,
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub architecture: Option<String>,
    pub sockets: u32,
    pub cores: u32,
    /// Online logical CPUs.
    pub threads: u32,
    pub packages: Vec<CpuPackage>,
    pub numa_nodes: Vec<NumaNode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuPackage {
    pub id: u32,
    pub vendor: Option<String>,
    pub model_name: Option<String>,
    pub family: Option<u32>,
    pub model: Option<u32>,
    pub stepping: Option<u32>,
    pub microcode: Option<String>,
    pub cores: u32,
    pub threads: u32,
    pub min_mhz: Option<f64>,
    pub max_mhz: Option<f64>,
    pub flags: Vec<String>,
    pub caches: Vec<CpuCache>,
    pub numa_nodes: Vec<u32>,
    pub core_types: Vec<CoreType>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuCache {
    pub level: u8,
    /// `Data`, `Instruction` or `Unified`.
    #[serde(rename = "type")]
    pub cache_type: String,
    pub size_bytes: u64,
    pub ways_of_associativity: Option<u32>,
    pub coherency_line_size_bytes: Option<u32>,
    pub instances: u32,
    pub shared_cpu_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreType {
    pub name: String,
    pub cores: u32,
    pub threads: u32,
    pub max_mhz: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: Vec<u32>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
    pub hugepages: Vec<HugepagePool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepagePool {
    pub page_size_bytes: u64,
    pub total: u64,
    pub free: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceleratorKind {
    Gpu,
    ProcessingAccelerator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accelerator {
    pub pci_address: String,
    pub kind: AcceleratorKind,
    /// PCI vendor and device ids as four hex digits, as `lspci -n` prints them.
    pub vendor_id: String,
    pub device_id: String,
    pub subsystem_vendor_id: Option<String>,
    pub subsystem_device_id: Option<String>,
    /// The 24-bit PCI class code as six hex digits.
    pub class_code: String,
    pub vendor: Option<String>,
    pub model_name: Option<String>,
    pub driver: Option<String>,
    pub driver_version: Option<String>,
    pub memory_bytes: Option<u64>,
    pub numa_node: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub name: String,
    pub size_bytes: u64,
    pub rotational: Option<bool>,
    pub removable: Option<bool>,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub transport: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub name: String,
    pub physical: bool,
    pub speed_mbps: Option<u32>,
    pub mtu: Option<u32>,
    pub driver: Option<String>,
    pub operstate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

/// The outcome of one collector's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectorStatus {
    Ok,
    /// The collector returned an error, trapped, or could not be loaded.
    Error,
    /// The collector ran past its run-time deadline or wall-clock timeout.
    Timeout,
    /// The collector hit a memory, table, stack, handle, record or output limit.
    LimitExceeded,
    /// The policy did not grant a capability the collector requested, or the
    /// plugin did not match its SHA-256 pin, so it was not run.
    Denied,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorOutcome {
    pub name: String,
    pub version: Option<String>,
    /// `built-in`, or the path of the plugin file.
    pub source: String,
    /// SHA-256 of the plugin file, as lowercase hex; absent for built-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub status: CollectorStatus,
    /// Wall time of instantiation and `collect`, in milliseconds.
    pub duration_ms: f64,
    pub error: Option<String>,
    /// The sandbox limit that stopped the collector, with status `timeout`
    /// or `limit_exceeded`: `memory`, `table`, `stack`, `handles`, `output`,
    /// `records`, `deadline` (run time) or `timeout` (wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Parts of the collector's result the host dropped, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
