//! Parsing of `/proc/cpuinfo`, whose keys differ by architecture: x86 has
//! `vendor_id` and `model name`, arm64 has `CPU implementer` and `CPU part`
//! and no model name at all.

use std::collections::BTreeMap;

/// One `processor` block of `/proc/cpuinfo`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Processor {
    pub number: u32,
    pub fields: BTreeMap<String, String>,
}

impl Processor {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str).filter(|value| !value.is_empty())
    }

    pub fn get_u32(&self, key: &str) -> Option<u32> {
        let value = self.get(key)?;
        match value.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => value.parse().ok(),
        }
    }

    /// ISA flags: `flags` on x86, `Features` on Arm, `isa` extensions are not split.
    pub fn flags(&self) -> Vec<String> {
        self.get("flags")
            .or_else(|| self.get("Features"))
            .map(|flags| flags.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

/// Splits `/proc/cpuinfo` into processor blocks. Lines before the first
/// `processor` key and trailing machine-wide blocks (arm's `Hardware`,
/// s390's header) are kept in the returned global map.
pub fn parse(text: &str) -> (Vec<Processor>, BTreeMap<String, String>) {
    let mut processors = Vec::new();
    let mut global = BTreeMap::new();
    let mut current: Option<Processor> = None;

    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();

        if key == "processor" {
            if let Some(done) = current.take() {
                processors.push(done);
            }
            // s390x prints "processor 0: version = ..." lines, which carry the
            // number in the key; those are not processor blocks.
            if let Ok(number) = value.parse() {
                current = Some(Processor { number, fields: BTreeMap::new() });
            }
            continue;
        }

        match current.as_mut() {
            Some(processor) => {
                processor.fields.insert(key.to_owned(), value.to_owned());
            }
            None => {
                global.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    if let Some(done) = current {
        processors.push(done);
    }
    (processors, global)
}

/// Infers the kernel machine name from cpuinfo, for kernels without
/// `/proc/sys/kernel/arch` (added in Linux 6.1).
pub fn infer_architecture(first: Option<&Processor>, global: &BTreeMap<String, String>) -> Option<String> {
    let first = first?;
    let name = if first.get("vendor_id").is_some_and(|vendor| vendor.starts_with("IBM/S390"))
        || global.get("vendor_id").is_some_and(|vendor| vendor.starts_with("IBM/S390"))
    {
        "s390x"
    } else if first.get("vendor_id").is_some() {
        // The `lm` (long mode) flag separates x86_64 from 32-bit x86.
        if first.flags().iter().any(|flag| flag == "lm") { "x86_64" } else { "i686" }
    } else if let Some(version) = first.get("CPU architecture") {
        if version.starts_with('8') || version.starts_with('9') { "aarch64" } else { "arm" }
    } else if first.get("isa").is_some_and(|isa| isa.starts_with("rv64")) {
        "riscv64"
    } else if first.get("cpu").is_some_and(|cpu| cpu.starts_with("POWER")) {
        "ppc64le"
    } else {
        return None;
    };
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_blocks_and_keeps_raw_values() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)  CPU\n\n\
                    processor\t: 1\nvendor_id\t: GenuineIntel\n";
        let (processors, global) = parse(text);
        assert_eq!(processors.len(), 2);
        assert_eq!(processors[1].number, 1);
        assert_eq!(processors[0].get("model name"), Some("Intel(R) Xeon(R)  CPU"));
        assert!(global.is_empty());
    }

    #[test]
    fn parse_keeps_arm_global_lines() {
        let text = "processor\t: 0\nCPU part\t: 0xd0c\n\nHardware\t: Example SoC\n";
        let (processors, _global) = parse(text);
        assert_eq!(processors[0].get_u32("CPU part"), Some(0xd0c));
        // "Hardware" after the last block belongs to that block in this
        // simple format; callers look it up on the last processor if needed.
        assert_eq!(processors[0].get("Hardware"), Some("Example SoC"));
    }

    #[test]
    fn architecture_inference() {
        let x86 = parse("processor : 0\nvendor_id : AuthenticAMD\nflags : fpu lm sse\n").0;
        assert_eq!(infer_architecture(x86.first(), &BTreeMap::new()).as_deref(), Some("x86_64"));
        let arm = parse("processor : 0\nCPU architecture: 8\n").0;
        assert_eq!(infer_architecture(arm.first(), &BTreeMap::new()).as_deref(), Some("aarch64"));
        let unknown = parse("processor : 0\nfoo : bar\n").0;
        assert_eq!(infer_architecture(unknown.first(), &BTreeMap::new()), None);
    }
}
