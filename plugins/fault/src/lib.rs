//! A collector that misbehaves on request, so tests can check that the host
//! contains each failure. It is built with the built-in collectors but never
//! embedded in `hw-agent`.
//!
//! The mode is the content of `/sys/hw-agent-fault-mode` in the host root the
//! test passes, because a collector has no arguments or environment.

// The export macro, the only user of this code, exists on wasm32 only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use hw_collector_guest::{Attribute, CollectError, CollectOptions, CollectorInfo, Guest, PartialReport, Root};

struct Collector;

impl Guest for Collector {
    fn info() -> CollectorInfo {
        CollectorInfo {
            name: "fault".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
        }
    }

    fn collect(_options: CollectOptions) -> Result<PartialReport, CollectError> {
        let mode = Root::sandbox().read_opt("/sys/hw-agent-fault-mode").unwrap_or_else(|| "ok".to_owned());
        match mode.as_str() {
            "panic" => panic!("fault collector asked to panic"),
            "unreachable" => trap_unreachable(),
            "spin" => spin(),
            "memory" => allocate_forever(),
            "error" => Err(CollectError::NotSupported("fault collector asked to fail".to_owned())),
            // Reports which of the agent's own /proc entries it could read.
            "proc-self" => Ok(attributes(&[
                ("test.hw-agent/proc-self-environ", readable("/proc/self/environ")),
                ("test.hw-agent/proc-self-mem", readable("/proc/self/mem")),
                ("test.hw-agent/proc-1-environ", readable("/proc/1/environ")),
            ])),
            _ => Ok(attributes(&[("test.hw-agent/fault-mode", mode.as_str())])),
        }
    }
}

fn readable(path: &str) -> &'static str {
    if std::fs::read(path).is_ok() { "readable" } else { "denied" }
}

fn attributes(pairs: &[(&str, &str)]) -> PartialReport {
    PartialReport {
        cpu: None,
        memory: None,
        os: None,
        accelerators: None,
        storage: None,
        network: None,
        attributes: pairs
            .iter()
            .map(|(key, value)| Attribute { key: (*key).to_owned(), value: (*value).to_owned() })
            .collect(),
    }
}

#[cfg(target_arch = "wasm32")]
fn trap_unreachable() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap_unreachable() -> ! {
    std::process::abort()
}

fn spin() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn allocate_forever() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&blocks);
    }
}

#[cfg(target_arch = "wasm32")]
hw_collector_guest::bindings::export_collector!(Collector with_types_in hw_collector_guest::bindings);
