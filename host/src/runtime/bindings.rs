//! Host bindings for the `collector` world, and the conversion of a guest's
//! result into the host's report model. This is the only `bindgen!` call.

use crate::report::model::{
    Accelerator, AcceleratorKind, BlockDevice, CoreType, Cpu, CpuCache, CpuPackage, HugepagePool, Memory,
    NetworkInterface, NumaNode,
};
use crate::report::{OsFacts, Partial};

// Exports are async so a guest call can be cancelled by a tokio timeout
// while it waits in a host call. The host's own imports (logging, the node
// list) stay synchronous because they return at once.
wasmtime::component::bindgen!({
    world: "collector",
    path: "../wit",
    exports: { default: async },
});

use aiod::hw_agent::types as wit;

pub use aiod::hw_agent::logging::Level as GuestLogLevel;
pub use wit::Capability;

/// Counts the records of a result: list elements of the typed categories
/// plus attributes. Strings inside a record (CPU flags) are bytes, not
/// records, and are bounded by the output limit.
pub fn record_count(report: &wit::PartialReport) -> usize {
    let cpu = report.cpu.as_ref().map_or(0, |cpu| {
        cpu.numa_nodes.len()
            + cpu.packages.iter().map(|package| 1 + package.caches.len() + package.core_types.len()).sum::<usize>()
    });
    let memory = report.memory.as_ref().map_or(0, |memory| memory.hugepages.len());
    cpu + memory
        + report.accelerators.as_ref().map_or(0, Vec::len)
        + report.storage.as_ref().map_or(0, Vec::len)
        + report.network.as_ref().map_or(0, Vec::len)
        + report.attributes.len()
}

impl From<wit::PartialReport> for Partial {
    fn from(report: wit::PartialReport) -> Self {
        Partial {
            cpu: report.cpu.map(Cpu::from),
            memory: report.memory.map(Memory::from),
            os: report.os.map(OsFacts::from),
            accelerators: report.accelerators.map(|list| list.into_iter().map(Accelerator::from).collect()),
            storage: report.storage.map(|list| list.into_iter().map(BlockDevice::from).collect()),
            network: report.network.map(|list| list.into_iter().map(NetworkInterface::from).collect()),
            attributes: report.attributes.into_iter().map(|attribute| (attribute.key, attribute.value)).collect(),
        }
    }
}

impl From<wit::CpuInfo> for Cpu {
    fn from(cpu: wit::CpuInfo) -> Self {
        Cpu {
            architecture: cpu.architecture,
            sockets: cpu.sockets,
            cores: cpu.cores,
            threads: cpu.threads,
            packages: cpu.packages.into_iter().map(CpuPackage::from).collect(),
            numa_nodes: cpu
                .numa_nodes
                .into_iter()
                .map(|node| NumaNode { id: node.id, cpus: node.cpus, memory_bytes: node.memory_bytes })
                .collect(),
        }
    }
}

impl From<wit::CpuPackage> for CpuPackage {
    fn from(package: wit::CpuPackage) -> Self {
        CpuPackage {
            id: package.id,
            vendor: package.vendor,
            model_name: package.model_name,
            family: package.family,
            model: package.model,
            stepping: package.stepping,
            microcode: package.microcode,
            cores: package.cores,
            threads: package.threads,
            min_mhz: package.min_mhz,
            max_mhz: package.max_mhz,
            flags: package.flags,
            caches: package
                .caches
                .into_iter()
                .map(|cache| CpuCache {
                    level: cache.level,
                    cache_type: cache.cache_type,
                    size_bytes: cache.size_bytes,
                    ways_of_associativity: cache.ways_of_associativity,
                    coherency_line_size_bytes: cache.coherency_line_size_bytes,
                    instances: cache.instances,
                    shared_cpu_count: cache.shared_cpu_count,
                })
                .collect(),
            numa_nodes: package.numa_nodes,
            core_types: package
                .core_types
                .into_iter()
                .map(|core_type| CoreType {
                    name: core_type.name,
                    cores: core_type.cores,
                    threads: core_type.threads,
                    max_mhz: core_type.max_mhz,
                })
                .collect(),
        }
    }
}

impl From<wit::MemoryInfo> for Memory {
    fn from(memory: wit::MemoryInfo) -> Self {
        Memory {
            total_bytes: memory.total_bytes,
            available_bytes: memory.available_bytes,
            swap_total_bytes: memory.swap_total_bytes,
            hugepages: memory
                .hugepages
                .into_iter()
                .map(|pool| HugepagePool { page_size_bytes: pool.page_size_bytes, total: pool.total, free: pool.free })
                .collect(),
        }
    }
}

impl From<wit::OsInfo> for OsFacts {
    fn from(os: wit::OsInfo) -> Self {
        OsFacts {
            hostname: os.hostname,
            kernel: os.kernel,
            kernel_version: os.kernel_version,
            architecture: os.architecture,
            name: os.name,
            id: os.id,
            version_id: os.version_id,
            pretty_name: os.pretty_name,
        }
    }
}

impl From<wit::Accelerator> for Accelerator {
    fn from(device: wit::Accelerator) -> Self {
        Accelerator {
            pci_address: device.pci_address,
            kind: match device.kind {
                wit::AcceleratorKind::Gpu => AcceleratorKind::Gpu,
                wit::AcceleratorKind::ProcessingAccelerator => AcceleratorKind::ProcessingAccelerator,
            },
            vendor_id: format!("{:04x}", device.vendor_id),
            device_id: format!("{:04x}", device.device_id),
            subsystem_vendor_id: device.subsystem_vendor_id.map(|id| format!("{id:04x}")),
            subsystem_device_id: device.subsystem_device_id.map(|id| format!("{id:04x}")),
            class_code: format!("{:06x}", device.class_code),
            vendor: device.vendor,
            model_name: device.model_name,
            driver: device.driver,
            driver_version: device.driver_version,
            memory_bytes: device.memory_bytes,
            numa_node: device.numa_node,
            uuid: device.uuid,
        }
    }
}

impl From<wit::BlockDevice> for BlockDevice {
    fn from(device: wit::BlockDevice) -> Self {
        BlockDevice {
            name: device.name,
            size_bytes: device.size_bytes,
            rotational: device.rotational,
            removable: device.removable,
            model: device.model,
            vendor: device.vendor,
            transport: device.transport,
            serial: device.serial,
        }
    }
}

impl From<wit::NetworkInterface> for NetworkInterface {
    fn from(interface: wit::NetworkInterface) -> Self {
        NetworkInterface {
            name: interface.name,
            physical: interface.physical,
            speed_mbps: interface.speed_mbps,
            mtu: interface.mtu,
            driver: interface.driver,
            operstate: interface.operstate,
            mac_address: interface.mac_address,
        }
    }
}

/// Bindings of the `node-collector` world, which adds the `cluster` import.
/// The shared interfaces reuse the types generated above, so one `logging`
/// implementation serves both worlds.
pub mod node_world {
    wasmtime::component::bindgen!({
        world: "node-collector",
        path: "../wit",
        exports: { default: async },
        with: {
            "aiod:hw-agent/types": super::aiod::hw_agent::types,
            "aiod:hw-agent/logging": super::aiod::hw_agent::logging,
        },
    });

    pub use aiod::hw_agent::cluster::{KeyValue, NodeCondition, NodeObject, NodeSystemInfo, NodeTaint};
    pub use aiod::hw_agent::node_records::{AcceleratorResource, ExtendedResource, ResourceAmounts};
}
