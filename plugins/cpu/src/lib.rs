//! The `cpu` collector: packages, cores, threads, caches, ISA flags,
//! frequencies, NUMA nodes and hybrid core types, read from `/proc/cpuinfo`
//! and `/sys/devices/system/cpu`.

mod arm;
mod cpuinfo;

use std::collections::{BTreeMap, BTreeSet};

use hw_collector_guest::{
    Capability, CollectError, CollectOptions, CollectorInfo, CoreType, CpuCache, CpuInfo, CpuPackage, Guest, NumaNode,
    PartialReport, Root, parse_cpu_list,
};

use cpuinfo::Processor;

const CPU_SYSFS: &str = "/sys/devices/system/cpu";

// Only the component export on wasm32 names this type.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Collector;

impl Guest for Collector {
    fn info() -> CollectorInfo {
        CollectorInfo {
            name: "cpu".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
            capabilities: vec![
                Capability::ReadPath("/proc/cpuinfo".to_owned()),
                Capability::ReadPath("/sys".to_owned()),
            ],
        }
    }

    fn collect(_options: CollectOptions) -> Result<PartialReport, CollectError> {
        let cpu = collect_cpu(&Root::sandbox())?;
        Ok(PartialReport {
            cpu: Some(cpu),
            memory: None,
            os: None,
            accelerators: None,
            storage: None,
            network: None,
            attributes: Vec::new(),
        })
    }
}

#[cfg(target_arch = "wasm32")]
hw_collector_guest::bindings::export_collector!(Collector with_types_in hw_collector_guest::bindings);

/// The position of one logical CPU in the topology.
#[derive(Debug, Clone, Copy)]
struct Placement {
    cpu: u32,
    package: u32,
    die: u32,
    core: u32,
}

/// Reads the CPU description of the machine below `root`.
pub fn collect_cpu(root: &Root) -> Result<CpuInfo, CollectError> {
    let text = root
        .read("/proc/cpuinfo")
        .map_err(|error| CollectError::Io(format!("failed to read /proc/cpuinfo: {error}")))?;
    let (processors, global) = cpuinfo::parse(&text);
    if processors.is_empty() {
        return Err(CollectError::InvalidData("/proc/cpuinfo lists no processor".to_owned()));
    }
    let by_number: BTreeMap<u32, &Processor> =
        processors.iter().map(|processor| (processor.number, processor)).collect();

    // `online` is what `nproc` counts. Without sysfs, cpuinfo lists exactly
    // the online CPUs.
    let online = root
        .read_opt(format!("{CPU_SYSFS}/online"))
        .and_then(|list| parse_cpu_list(&list))
        .unwrap_or_else(|| by_number.keys().copied().collect());

    let placements: Vec<Placement> = online.iter().map(|&cpu| place(root, cpu, by_number.get(&cpu).copied())).collect();
    let numa_nodes = numa_nodes(root);

    let mut packages_by_id: BTreeMap<u32, Vec<Placement>> = BTreeMap::new();
    for placement in &placements {
        packages_by_id.entry(placement.package).or_default().push(*placement);
    }

    let packages: Vec<CpuPackage> =
        packages_by_id.iter().map(|(&id, members)| package(root, id, members, &by_number, &numa_nodes)).collect();

    let architecture =
        root.read_opt("/proc/sys/kernel/arch").or_else(|| cpuinfo::infer_architecture(processors.first(), &global));

    Ok(CpuInfo {
        architecture,
        sockets: packages.len() as u32,
        cores: packages.iter().map(|package| package.cores).sum(),
        threads: placements.len() as u32,
        packages,
        numa_nodes,
    })
}

fn place(root: &Root, cpu: u32, processor: Option<&Processor>) -> Placement {
    let topology = format!("{CPU_SYSFS}/cpu{cpu}/topology");
    // Some arm64 kernels report physical_package_id -1 when firmware gives no
    // socket information; that machine has one package as far as we can tell.
    let package = root
        .parse::<i64>(format!("{topology}/physical_package_id"))
        .and_then(|id| u32::try_from(id).ok())
        .or_else(|| processor.and_then(|processor| processor.get_u32("physical id")))
        .unwrap_or(0);
    let die = root.parse::<u32>(format!("{topology}/die_id")).unwrap_or(0);
    let core = root
        .parse::<u32>(format!("{topology}/core_id"))
        .or_else(|| processor.and_then(|processor| processor.get_u32("core id")))
        .unwrap_or(cpu);
    Placement { cpu, package, die, core }
}

fn package(
    root: &Root,
    id: u32,
    members: &[Placement],
    by_number: &BTreeMap<u32, &Processor>,
    numa_nodes: &[NumaNode],
) -> CpuPackage {
    let cpus: BTreeSet<u32> = members.iter().map(|placement| placement.cpu).collect();
    let first = members.iter().find_map(|placement| by_number.get(&placement.cpu).copied());
    let cores: BTreeSet<(u32, u32)> = members.iter().map(|placement| (placement.die, placement.core)).collect();

    let (min_mhz, max_mhz) = frequency_range(root, &cpus);
    let identity = first.map(|processor| identity(processor, members, by_number)).unwrap_or_default();

    CpuPackage {
        id,
        vendor: identity.vendor,
        model_name: identity.model_name,
        family: identity.family,
        model: identity.model,
        stepping: identity.stepping,
        microcode: first.and_then(|processor| processor.get("microcode")).map(str::to_owned),
        cores: cores.len() as u32,
        threads: cpus.len() as u32,
        min_mhz,
        max_mhz,
        flags: first.map(Processor::flags).unwrap_or_default(),
        caches: caches(root, &cpus),
        numa_nodes: numa_nodes
            .iter()
            .filter(|node| node.cpus.iter().any(|cpu| cpus.contains(cpu)))
            .map(|node| node.id)
            .collect(),
        core_types: core_types(root, members, by_number),
    }
}

#[derive(Debug, Default)]
struct Identity {
    vendor: Option<String>,
    model_name: Option<String>,
    family: Option<u32>,
    model: Option<u32>,
    stepping: Option<u32>,
}

fn identity(first: &Processor, members: &[Placement], by_number: &BTreeMap<u32, &Processor>) -> Identity {
    if let Some(vendor) = first.get("vendor_id") {
        return Identity {
            vendor: Some(vendor.to_owned()),
            model_name: first.get("model name").map(str::to_owned),
            family: first.get_u32("cpu family"),
            model: first.get_u32("model"),
            stepping: first.get_u32("stepping"),
        };
    }

    // arm64: the kernel gives implementer and part codes only. A big.LITTLE
    // package has several parts, so the model name lists each in CPU order.
    let implementer = first.get_u32("CPU implementer");
    let mut parts: Vec<String> = Vec::new();
    for placement in members {
        let Some(processor) = by_number.get(&placement.cpu) else { continue };
        let name = part_label(processor);
        if let Some(name) = name.filter(|name| !parts.contains(name)) {
            parts.push(name);
        }
    }
    let model_name =
        first.get("model name").map(str::to_owned).or_else(|| (!parts.is_empty()).then(|| parts.join(" + ")));
    Identity {
        vendor: implementer
            .map(|code| arm::implementer_name(code).map_or_else(|| format!("{code:#04x}"), str::to_owned)),
        model_name,
        family: None,
        model: first.get_u32("CPU part"),
        stepping: first.get_u32("CPU revision"),
    }
}

/// Names an arm64 core by its part, falling back to the raw part code.
fn part_label(processor: &Processor) -> Option<String> {
    let implementer = processor.get_u32("CPU implementer")?;
    let part = processor.get_u32("CPU part")?;
    Some(arm::part_name(implementer, part).map_or_else(|| format!("{part:#05x}"), str::to_owned))
}

/// Returns the lowest minimum and highest maximum `cpuinfo_*_freq` (kHz) of
/// the given CPUs, in MHz. Virtual machines often have no cpufreq at all.
fn frequency_range(root: &Root, cpus: &BTreeSet<u32>) -> (Option<f64>, Option<f64>) {
    let mut min: Option<u64> = None;
    let mut max: Option<u64> = None;
    for cpu in cpus {
        let base = format!("{CPU_SYSFS}/cpu{cpu}/cpufreq");
        if let Some(khz) = root.parse::<u64>(format!("{base}/cpuinfo_min_freq")) {
            min = Some(min.map_or(khz, |current| current.min(khz)));
        }
        if let Some(khz) = root.parse::<u64>(format!("{base}/cpuinfo_max_freq")) {
            max = Some(max.map_or(khz, |current| current.max(khz)));
        }
    }
    (min.map(khz_to_mhz), max.map(khz_to_mhz))
}

fn khz_to_mhz(khz: u64) -> f64 {
    khz as f64 / 1000.0
}

/// Collects the package's caches from `cpuN/cache/indexM`. Each distinct
/// `shared_cpu_list` of a (level, type, size) triple is one instance of that
/// cache. The size is part of the key because hybrid parts have caches of
/// different sizes at one level (P-core and E-core L2 on Intel), and one
/// entry per level would state the wrong size for some of its instances.
fn caches(root: &Root, cpus: &BTreeSet<u32>) -> Vec<CpuCache> {
    struct Seen {
        ways: Option<u32>,
        line_size: Option<u32>,
        instances: BTreeSet<Vec<u32>>,
    }
    let mut seen: BTreeMap<(u8, String, u64), Seen> = BTreeMap::new();

    for cpu in cpus {
        let base = format!("{CPU_SYSFS}/cpu{cpu}/cache");
        for index in root.list(&base).into_iter().filter(|name| name.starts_with("index")) {
            let dir = format!("{base}/{index}");
            let (Some(level), Some(cache_type)) =
                (root.parse::<u8>(format!("{dir}/level")), root.read_opt(format!("{dir}/type")))
            else {
                continue;
            };
            let shared = root
                .read_opt(format!("{dir}/shared_cpu_list"))
                .and_then(|list| parse_cpu_list(&list))
                .unwrap_or_else(|| vec![*cpu]);
            let size_bytes = root.read_opt(format!("{dir}/size")).and_then(|size| parse_size(&size)).unwrap_or(0);
            let entry = seen.entry((level, cache_type, size_bytes)).or_insert_with(|| Seen {
                ways: root.parse(format!("{dir}/ways_of_associativity")),
                line_size: root.parse(format!("{dir}/coherency_line_size")),
                instances: BTreeSet::new(),
            });
            entry.instances.insert(shared);
        }
    }

    seen.into_iter()
        .map(|((level, cache_type, size_bytes), seen)| CpuCache {
            level,
            cache_type,
            size_bytes,
            ways_of_associativity: seen.ways,
            coherency_line_size_bytes: seen.line_size,
            instances: seen.instances.len() as u32,
            shared_cpu_count: seen.instances.iter().map(Vec::len).max().unwrap_or(1) as u32,
        })
        .collect()
}

/// Parses a sysfs cache size such as `48K` or `32768K` or `2M` into bytes.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, ""),
    };
    let value: u64 = digits.parse().ok()?;
    let multiplier = match unit.trim() {
        "" => 1,
        "K" | "KB" | "KiB" => 1024,
        "M" | "MB" | "MiB" => 1024 * 1024,
        "G" | "GB" | "GiB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    Some(value * multiplier)
}

/// Describes hybrid parts. Intel hybrid CPUs have one PMU directory per core
/// type (`/sys/devices/cpu_core`, `/sys/devices/cpu_atom`, Linux 5.13 and
/// later). On arm64 the core types are the distinct CPU parts.
fn core_types(root: &Root, members: &[Placement], by_number: &BTreeMap<u32, &Processor>) -> Vec<CoreType> {
    let mut groups: BTreeMap<String, Vec<Placement>> = BTreeMap::new();
    for pmu in root.list("/sys/devices").into_iter().filter(|name| name.starts_with("cpu_")) {
        let Some(cpus) = root.read_opt(format!("/sys/devices/{pmu}/cpus")).and_then(|list| parse_cpu_list(&list))
        else {
            continue;
        };
        let in_package: Vec<Placement> =
            members.iter().filter(|placement| cpus.contains(&placement.cpu)).copied().collect();
        if !in_package.is_empty() {
            groups.insert(pmu, in_package);
        }
    }

    if groups.is_empty() {
        for placement in members {
            if let Some(label) = by_number.get(&placement.cpu).and_then(|processor| part_label(processor)) {
                groups.entry(label).or_default().push(*placement);
            }
        }
    }

    if groups.len() < 2 {
        return Vec::new();
    }
    groups
        .into_iter()
        .map(|(name, placements)| {
            let cpus: BTreeSet<u32> = placements.iter().map(|placement| placement.cpu).collect();
            let cores: BTreeSet<(u32, u32)> =
                placements.iter().map(|placement| (placement.die, placement.core)).collect();
            CoreType {
                name,
                cores: cores.len() as u32,
                threads: cpus.len() as u32,
                max_mhz: frequency_range(root, &cpus).1,
            }
        })
        .collect()
}

fn numa_nodes(root: &Root) -> Vec<NumaNode> {
    let mut nodes: Vec<NumaNode> = root
        .list("/sys/devices/system/node")
        .into_iter()
        .filter_map(|name| name.strip_prefix("node")?.parse::<u32>().ok())
        .map(|id| {
            let base = format!("/sys/devices/system/node/node{id}");
            NumaNode {
                id,
                cpus: root
                    .read_opt(format!("{base}/cpulist"))
                    .and_then(|list| parse_cpu_list(&list))
                    .unwrap_or_default(),
                memory_bytes: root.read_opt(format!("{base}/meminfo")).and_then(|text| node_mem_total(&text)),
            }
        })
        .collect();
    nodes.sort_by_key(|node| node.id);
    nodes
}

/// Reads `Node 0 MemTotal:  16318412 kB` from a node's meminfo.
fn node_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.contains("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().rev().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_size_units() {
        assert_eq!(parse_size("48K"), Some(48 * 1024));
        assert_eq!(parse_size("2M"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("12Q"), None);
    }

    #[test]
    fn node_meminfo_total() {
        let text = "Node 1 MemTotal:       65843128 kB\nNode 1 MemFree:        1 kB\n";
        assert_eq!(node_mem_total(text), Some(65843128 * 1024));
    }
}
