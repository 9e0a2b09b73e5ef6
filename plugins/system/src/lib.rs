//! The `system` collector: memory, OS and kernel, block devices and network
//! interfaces.

mod devices;
mod os;

use hw_collector_guest::{
    Capability, CollectError, CollectOptions, CollectorInfo, Guest, HugepagePool, MemoryInfo, PartialReport, Root,
};

pub use devices::{collect_network, collect_storage};
pub use os::{collect_os, parse_os_release};

// Only the component export on wasm32 names this type.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Collector;

impl Guest for Collector {
    fn info() -> CollectorInfo {
        CollectorInfo {
            name: "system".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
            capabilities: vec![
                Capability::ReadPath("/proc/meminfo".to_owned()),
                Capability::ReadPath("/proc/sys/kernel/hostname".to_owned()),
                Capability::ReadPath("/proc/sys/kernel/osrelease".to_owned()),
                Capability::ReadPath("/proc/sys/kernel/version".to_owned()),
                Capability::ReadPath("/proc/sys/kernel/arch".to_owned()),
                Capability::ReadPath("/etc/os-release".to_owned()),
                Capability::ReadPath("/sys".to_owned()),
            ],
        }
    }

    fn collect(options: CollectOptions) -> Result<PartialReport, CollectError> {
        collect_system(&Root::sandbox(), &options)
    }
}

#[cfg(target_arch = "wasm32")]
hw_collector_guest::bindings::export_collector!(Collector with_types_in hw_collector_guest::bindings);

/// Reads memory, OS, storage and network facts of the machine below `root`.
/// Only a missing `/proc/meminfo` fails the whole collection: every other
/// part is optional and comes back empty when its files are absent.
pub fn collect_system(root: &Root, options: &CollectOptions) -> Result<PartialReport, CollectError> {
    let meminfo = root
        .read("/proc/meminfo")
        .map_err(|error| CollectError::Io(format!("failed to read /proc/meminfo: {error}")))?;
    let memory = parse_meminfo(&meminfo, root)?;

    Ok(PartialReport {
        cpu: None,
        memory: Some(memory),
        os: Some(collect_os(root)),
        accelerators: None,
        storage: Some(collect_storage(root, options)),
        network: Some(collect_network(root, options)),
        attributes: Vec::new(),
    })
}

/// Parses `/proc/meminfo` (values in KiB). Huge page pools come from
/// `/sys/kernel/mm/hugepages`, which lists every page size; meminfo only
/// describes the default one, so it is the fallback.
pub fn parse_meminfo(text: &str, root: &Root) -> Result<MemoryInfo, CollectError> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|line| line.split(':').next() == Some(name))?;
        let mut words = line.split(':').nth(1)?.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        Some(match words.next() {
            Some("kB") => value * 1024,
            _ => value,
        })
    };

    let total_bytes =
        field("MemTotal").ok_or_else(|| CollectError::InvalidData("/proc/meminfo has no MemTotal line".to_owned()))?;

    let mut hugepages = Vec::new();
    for name in root.list("/sys/kernel/mm/hugepages") {
        let Some(kib) = name.strip_prefix("hugepages-").and_then(|rest| rest.strip_suffix("kB")?.parse::<u64>().ok())
        else {
            continue;
        };
        let dir = format!("/sys/kernel/mm/hugepages/{name}");
        hugepages.push(HugepagePool {
            page_size_bytes: kib * 1024,
            total: root.parse(format!("{dir}/nr_hugepages")).unwrap_or(0),
            free: root.parse(format!("{dir}/free_hugepages")).unwrap_or(0),
        });
    }
    if hugepages.is_empty()
        && let Some(page_size_bytes) = field("Hugepagesize")
    {
        hugepages.push(HugepagePool {
            page_size_bytes,
            total: field("HugePages_Total").unwrap_or(0),
            free: field("HugePages_Free").unwrap_or(0),
        });
    }
    hugepages.sort_by_key(|pool| pool.page_size_bytes);

    Ok(MemoryInfo {
        total_bytes,
        available_bytes: field("MemAvailable"),
        swap_total_bytes: field("SwapTotal"),
        hugepages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_units_and_default_hugepages() {
        let text = "MemTotal:       16318412 kB\nMemAvailable:   8000000 kB\nSwapTotal:             0 kB\n\
                    HugePages_Total:       4\nHugePages_Free:        2\nHugepagesize:       2048 kB\n";
        let memory = parse_meminfo(text, &Root::at("/nonexistent")).expect("valid meminfo");
        assert_eq!(memory.total_bytes, 16318412 * 1024);
        assert_eq!(memory.available_bytes, Some(8000000 * 1024));
        assert_eq!(memory.swap_total_bytes, Some(0));
        assert_eq!(memory.hugepages.len(), 1);
        assert_eq!(memory.hugepages[0].page_size_bytes, 2048 * 1024);
        assert_eq!(memory.hugepages[0].total, 4);
    }

    #[test]
    fn meminfo_without_total_is_invalid() {
        let result = parse_meminfo("MemFree: 1 kB\n", &Root::at("/nonexistent"));
        assert!(matches!(result, Err(CollectError::InvalidData(_))));
    }
}
