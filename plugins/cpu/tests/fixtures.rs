//! Runs the cpu collector on the recorded and reconstructed machines in
//! `fixtures/roots`. The expected values are the ones `fixtures/generate.py`
//! writes. `this-machine` is recorded, so its checks compare against the
//! recorded files instead of fixed numbers.

use std::fs;

use hw_collector_cpu::collect_cpu;
use hw_collector_guest::{CpuCache, CpuInfo, CpuPackage, Root, parse_cpu_list};

const ROOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/roots");

const KIB: u64 = 1024;

fn root(name: &str) -> Root {
    Root::at(format!("{ROOTS}/{name}"))
}

fn collect(name: &str) -> CpuInfo {
    collect_cpu(&root(name)).unwrap_or_else(|error| panic!("collect_cpu failed on {name}: {error:?}"))
}

/// Returns the package's cache of this level, type and size, failing the
/// test when there is none.
fn cache<'a>(package: &'a CpuPackage, level: u8, cache_type: &str, size_bytes: u64) -> &'a CpuCache {
    package
        .caches
        .iter()
        .find(|cache| cache.level == level && cache.cache_type == cache_type && cache.size_bytes == size_bytes)
        .unwrap_or_else(|| panic!("no L{level} {cache_type} cache of {size_bytes} bytes in {:?}", package.caches))
}

// ---------------------------------------------------------------- Intel Xeon, 2 sockets

#[test]
fn xeon_two_sockets_count_cores() {
    let cpu = collect("intel-xeon-2s-nvidia");
    assert_eq!(cpu.sockets, 2);
    assert_eq!(cpu.cores, 32);
    assert_eq!(cpu.threads, 64);
    assert_eq!(cpu.packages.len(), 2);
}

#[test]
fn xeon_architecture_inferred_without_arch_file() {
    let cpu = collect("intel-xeon-2s-nvidia");
    assert_eq!(cpu.architecture.as_deref(), Some("x86_64"));
}

#[test]
fn xeon_package_identity() {
    let cpu = collect("intel-xeon-2s-nvidia");
    let package = &cpu.packages[0];
    assert_eq!(package.id, 0);
    assert_eq!(package.vendor.as_deref(), Some("GenuineIntel"));
    assert_eq!(package.model_name.as_deref(), Some("Intel(R) Xeon(R) Gold 6326 CPU @ 2.90GHz"));
    assert_eq!(package.family, Some(6));
    assert_eq!(package.model, Some(106));
    assert_eq!(package.stepping, Some(6));
    assert_eq!(package.microcode.as_deref(), Some("0xd0003a5"));
}

#[test]
fn xeon_packages_split_cores_and_threads() {
    let cpu = collect("intel-xeon-2s-nvidia");
    for package in &cpu.packages {
        assert_eq!(package.cores, 16, "package {}", package.id);
        assert_eq!(package.threads, 32, "package {}", package.id);
    }
    assert_eq!(cpu.packages[1].id, 1);
}

#[test]
fn xeon_frequency_range_mhz() {
    let cpu = collect("intel-xeon-2s-nvidia");
    assert_eq!(cpu.packages[0].min_mhz, Some(800.0));
    assert_eq!(cpu.packages[0].max_mhz, Some(3500.0));
}

#[test]
fn xeon_flags_in_kernel_order() {
    let cpu = collect("intel-xeon-2s-nvidia");
    let flags = &cpu.packages[0].flags;
    assert_eq!(flags.len(), 149);
    assert_eq!(flags.first().map(String::as_str), Some("fpu"));
    assert_eq!(flags.last().map(String::as_str), Some("arch_capabilities"));
    assert!(flags.iter().any(|flag| flag == "avx512f"));
}

#[test]
fn xeon_caches_per_package() {
    let cpu = collect("intel-xeon-2s-nvidia");
    let package = &cpu.packages[1];
    assert_eq!(package.caches.len(), 4);

    let l1d = cache(package, 1, "Data", 48 * KIB);
    assert_eq!(l1d.instances, 16);
    assert_eq!(l1d.shared_cpu_count, 2);
    assert_eq!(l1d.ways_of_associativity, Some(12));
    assert_eq!(l1d.coherency_line_size_bytes, Some(64));

    let l1i = cache(package, 1, "Instruction", 32 * KIB);
    assert_eq!(l1i.instances, 16);
    assert_eq!(l1i.ways_of_associativity, Some(8));

    let l2 = cache(package, 2, "Unified", 1280 * KIB);
    assert_eq!(l2.instances, 16);
    assert_eq!(l2.shared_cpu_count, 2);
    assert_eq!(l2.ways_of_associativity, Some(20));

    let l3 = cache(package, 3, "Unified", 24576 * KIB);
    assert_eq!(l3.instances, 1);
    assert_eq!(l3.shared_cpu_count, 32);
    assert_eq!(l3.ways_of_associativity, Some(12));
}

#[test]
fn xeon_two_numa_nodes() {
    let cpu = collect("intel-xeon-2s-nvidia");
    assert_eq!(cpu.numa_nodes.len(), 2);
    let node1 = &cpu.numa_nodes[1];
    assert_eq!(node1.id, 1);
    assert_eq!(node1.cpus, (16..32).chain(48..64).collect::<Vec<u32>>());
    assert_eq!(node1.memory_bytes, Some(264557716 * KIB));
    assert_eq!(cpu.packages[0].numa_nodes, vec![0]);
    assert_eq!(cpu.packages[1].numa_nodes, vec![1]);
}

#[test]
fn xeon_not_hybrid() {
    let cpu = collect("intel-xeon-2s-nvidia");
    assert!(cpu.packages[0].core_types.is_empty());
}

// ---------------------------------------------------------------- AMD EPYC, NPS4

#[test]
fn epyc_one_socket_count_cores() {
    let cpu = collect("amd-epyc-instinct");
    assert_eq!(cpu.sockets, 1);
    assert_eq!(cpu.cores, 16);
    assert_eq!(cpu.threads, 32);
    assert_eq!(cpu.architecture.as_deref(), Some("x86_64"));
}

#[test]
fn epyc_package_identity() {
    let cpu = collect("amd-epyc-instinct");
    let package = &cpu.packages[0];
    assert_eq!(package.vendor.as_deref(), Some("AuthenticAMD"));
    assert_eq!(package.model_name.as_deref(), Some("AMD EPYC 9124 16-Core Processor"));
    assert_eq!(package.family, Some(25));
    assert_eq!(package.model, Some(17));
    assert_eq!(package.stepping, Some(1));
    assert_eq!(package.microcode.as_deref(), Some("0xa101148"));
    assert_eq!(package.flags.len(), 161);
}

#[test]
fn epyc_frequency_range_mhz() {
    let cpu = collect("amd-epyc-instinct");
    assert_eq!(cpu.packages[0].min_mhz, Some(1500.0));
    assert_eq!(cpu.packages[0].max_mhz, Some(3000.0));
}

#[test]
fn epyc_l3_per_ccd() {
    let cpu = collect("amd-epyc-instinct");
    let package = &cpu.packages[0];
    assert_eq!(package.caches.len(), 4);

    let l1d = cache(package, 1, "Data", 32 * KIB);
    assert_eq!(l1d.instances, 16);
    assert_eq!(l1d.shared_cpu_count, 2);

    let l1i = cache(package, 1, "Instruction", 32 * KIB);
    assert_eq!(l1i.instances, 16);

    let l2 = cache(package, 2, "Unified", 1024 * KIB);
    assert_eq!(l2.instances, 16);
    assert_eq!(l2.ways_of_associativity, Some(8));

    let l3 = cache(package, 3, "Unified", 32768 * KIB);
    assert_eq!(l3.instances, 4);
    assert_eq!(l3.shared_cpu_count, 8);
    assert_eq!(l3.ways_of_associativity, Some(16));
}

#[test]
fn epyc_nps4_four_numa_nodes() {
    let cpu = collect("amd-epyc-instinct");
    assert_eq!(cpu.numa_nodes.len(), 4);
    assert_eq!(cpu.numa_nodes[1].cpus, vec![4, 5, 6, 7, 20, 21, 22, 23]);
    assert_eq!(cpu.numa_nodes[3].memory_bytes, Some(99291600 * KIB));
    assert_eq!(cpu.packages[0].numa_nodes, vec![0, 1, 2, 3]);
}

#[test]
fn epyc_not_hybrid() {
    let cpu = collect("amd-epyc-instinct");
    assert!(cpu.packages[0].core_types.is_empty());
}

// ---------------------------------------------------------------- Ampere Altra (arm64)

#[test]
fn altra_one_socket_count_cores() {
    let cpu = collect("arm64-ampere-altra");
    assert_eq!(cpu.sockets, 1);
    assert_eq!(cpu.cores, 32);
    assert_eq!(cpu.threads, 32);
}

#[test]
fn altra_architecture_from_arch_file() {
    let cpu = collect("arm64-ampere-altra");
    assert_eq!(cpu.architecture.as_deref(), Some("aarch64"));
}

#[test]
fn altra_identity_from_part_codes() {
    let cpu = collect("arm64-ampere-altra");
    let package = &cpu.packages[0];
    assert_eq!(package.vendor.as_deref(), Some("ARM"));
    assert_eq!(package.model_name.as_deref(), Some("Neoverse-N1"));
    assert_eq!(package.family, None);
    assert_eq!(package.model, Some(0xd0c));
    assert_eq!(package.stepping, Some(1));
    assert_eq!(package.microcode, None);
}

#[test]
fn altra_features_as_flags() {
    let cpu = collect("arm64-ampere-altra");
    let flags = &cpu.packages[0].flags;
    assert_eq!(flags.len(), 17);
    assert_eq!(flags.first().map(String::as_str), Some("fp"));
    assert!(flags.iter().any(|flag| flag == "atomics"));
}

#[test]
fn altra_frequency_range_mhz() {
    let cpu = collect("arm64-ampere-altra");
    assert_eq!(cpu.packages[0].min_mhz, Some(1000.0));
    assert_eq!(cpu.packages[0].max_mhz, Some(1700.0));
}

#[test]
fn altra_private_caches_only() {
    let cpu = collect("arm64-ampere-altra");
    let package = &cpu.packages[0];
    assert_eq!(package.caches.len(), 3);

    let l1d = cache(package, 1, "Data", 64 * KIB);
    assert_eq!(l1d.instances, 32);
    assert_eq!(l1d.shared_cpu_count, 1);
    assert_eq!(l1d.ways_of_associativity, Some(4));

    let l1i = cache(package, 1, "Instruction", 64 * KIB);
    assert_eq!(l1i.instances, 32);

    let l2 = cache(package, 2, "Unified", 1024 * KIB);
    assert_eq!(l2.instances, 32);
    assert_eq!(l2.shared_cpu_count, 1);
}

#[test]
fn altra_single_numa_node() {
    let cpu = collect("arm64-ampere-altra");
    assert_eq!(cpu.numa_nodes.len(), 1);
    assert_eq!(cpu.numa_nodes[0].cpus.len(), 32);
    assert_eq!(cpu.numa_nodes[0].memory_bytes, Some(263585344 * KIB));
}

#[test]
fn altra_not_hybrid() {
    let cpu = collect("arm64-ampere-altra");
    assert!(cpu.packages[0].core_types.is_empty());
}

// ---------------------------------------------------------------- Intel hybrid laptop

#[test]
fn hybrid_count_cores_and_threads() {
    let cpu = collect("intel-hybrid-laptop");
    assert_eq!(cpu.sockets, 1);
    assert_eq!(cpu.cores, 12);
    assert_eq!(cpu.threads, 16);
    assert_eq!(cpu.architecture.as_deref(), Some("x86_64"));
}

#[test]
fn hybrid_package_identity() {
    let cpu = collect("intel-hybrid-laptop");
    let package = &cpu.packages[0];
    assert_eq!(package.vendor.as_deref(), Some("GenuineIntel"));
    assert_eq!(package.model_name.as_deref(), Some("12th Gen Intel(R) Core(TM) i7-1260P"));
    assert_eq!(package.family, Some(6));
    assert_eq!(package.model, Some(154));
    assert_eq!(package.stepping, Some(3));
    assert_eq!(package.microcode.as_deref(), Some("0x430"));
}

#[test]
fn hybrid_package_frequency_spans_core_types() {
    let cpu = collect("intel-hybrid-laptop");
    assert_eq!(cpu.packages[0].min_mhz, Some(400.0));
    assert_eq!(cpu.packages[0].max_mhz, Some(4700.0));
}

#[test]
fn hybrid_core_types_from_pmus() {
    let cpu = collect("intel-hybrid-laptop");
    let types = &cpu.packages[0].core_types;
    assert_eq!(types.len(), 2);

    let atom = types.iter().find(|core_type| core_type.name == "cpu_atom").expect("cpu_atom core type");
    assert_eq!(atom.cores, 8);
    assert_eq!(atom.threads, 8);
    assert_eq!(atom.max_mhz, Some(3400.0));

    let core = types.iter().find(|core_type| core_type.name == "cpu_core").expect("cpu_core core type");
    assert_eq!(core.cores, 4);
    assert_eq!(core.threads, 8);
    assert_eq!(core.max_mhz, Some(4700.0));
}

/// P-cores and E-cores have caches of different sizes at the same level, so
/// each size is its own entry with its own instance count.
#[test]
fn hybrid_caches_split_by_size() {
    let cpu = collect("intel-hybrid-laptop");
    let package = &cpu.packages[0];
    assert_eq!(package.caches.len(), 7);

    let p_l1d = cache(package, 1, "Data", 48 * KIB);
    assert_eq!(p_l1d.instances, 4);
    assert_eq!(p_l1d.shared_cpu_count, 2);
    assert_eq!(p_l1d.ways_of_associativity, Some(12));

    let e_l1d = cache(package, 1, "Data", 32 * KIB);
    assert_eq!(e_l1d.instances, 8);
    assert_eq!(e_l1d.shared_cpu_count, 1);
    assert_eq!(e_l1d.ways_of_associativity, Some(8));

    let p_l1i = cache(package, 1, "Instruction", 32 * KIB);
    assert_eq!(p_l1i.instances, 4);

    let e_l1i = cache(package, 1, "Instruction", 64 * KIB);
    assert_eq!(e_l1i.instances, 8);

    let p_l2 = cache(package, 2, "Unified", 1280 * KIB);
    assert_eq!(p_l2.instances, 4);
    assert_eq!(p_l2.shared_cpu_count, 2);
    assert_eq!(p_l2.ways_of_associativity, Some(10));

    let e_l2 = cache(package, 2, "Unified", 2048 * KIB);
    assert_eq!(e_l2.instances, 2);
    assert_eq!(e_l2.shared_cpu_count, 4);
    assert_eq!(e_l2.ways_of_associativity, Some(16));

    let l3 = cache(package, 3, "Unified", 18432 * KIB);
    assert_eq!(l3.instances, 1);
    assert_eq!(l3.shared_cpu_count, 16);
}

#[test]
fn hybrid_single_numa_node() {
    let cpu = collect("intel-hybrid-laptop");
    assert_eq!(cpu.numa_nodes.len(), 1);
    assert_eq!(cpu.numa_nodes[0].cpus, (0..16).collect::<Vec<u32>>());
    assert_eq!(cpu.numa_nodes[0].memory_bytes, Some(15660048 * KIB));
}

// ---------------------------------------------------------------- recorded machine

fn recorded(path: &str) -> Option<String> {
    fs::read_to_string(format!("{ROOTS}/this-machine/{path}")).ok()
}

/// Returns the value of the first `key : value` line of the recorded cpuinfo.
fn recorded_cpuinfo_value(key: &str) -> Option<String> {
    recorded("proc/cpuinfo")?.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.trim().to_owned())
    })
}

#[test]
fn recorded_threads_match_online_list() {
    let cpu = collect("this-machine");
    let online = recorded("sys/devices/system/cpu/online").expect("recorded online list");
    let online = parse_cpu_list(&online).expect("valid online list");
    assert_eq!(cpu.threads as usize, online.len());
    assert_eq!(cpu.packages.iter().map(|package| package.threads).sum::<u32>(), cpu.threads);
}

#[test]
fn recorded_counts_are_consistent() {
    let cpu = collect("this-machine");
    assert!(cpu.sockets >= 1);
    assert_eq!(cpu.sockets as usize, cpu.packages.len());
    assert!(cpu.cores <= cpu.threads);
    assert_eq!(cpu.packages.iter().map(|package| package.cores).sum::<u32>(), cpu.cores);
}

#[test]
fn recorded_model_name_matches_cpuinfo() {
    let cpu = collect("this-machine");
    // arm64 cpuinfo has no model name, so the collector builds one from part codes.
    if let Some(expected) = recorded_cpuinfo_value("model name") {
        assert_eq!(cpu.packages[0].model_name.as_deref(), Some(expected.as_str()));
    }
}

#[test]
fn recorded_vendor_matches_cpuinfo() {
    let cpu = collect("this-machine");
    if let Some(expected) = recorded_cpuinfo_value("vendor_id") {
        assert_eq!(cpu.packages[0].vendor.as_deref(), Some(expected.as_str()));
    }
}

#[test]
fn recorded_architecture_matches_arch_file() {
    let cpu = collect("this-machine");
    if let Some(expected) = recorded("proc/sys/kernel/arch") {
        assert_eq!(cpu.architecture.as_deref(), Some(expected.trim()));
    }
    assert!(cpu.architecture.is_some());
}

#[test]
fn recorded_numa_nodes_match_node_dirs() {
    let cpu = collect("this-machine");
    let node_dirs = fs::read_dir(format!("{ROOTS}/this-machine/sys/devices/system/node"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    entry.file_name().to_string_lossy().strip_prefix("node").is_some_and(|id| id.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(cpu.numa_nodes.len(), node_dirs);
}

#[test]
fn recorded_caches_have_sizes() {
    let cpu = collect("this-machine");
    for cache in cpu.packages.iter().flat_map(|package| &package.caches) {
        assert!(cache.size_bytes > 0, "{cache:?}");
        assert!(cache.instances >= 1, "{cache:?}");
    }
}
