//! The hardware model: partial reports from collectors, merged into one
//! node report, and readable summaries of it.

pub mod model;
mod summary;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::runtime::CollectorRun;
use model::{
    Accelerator, AgentInfo, BlockDevice, CollectorOutcome, CollectorStatus, Cpu, Memory, NODE_REPORT_SCHEMA,
    NetworkInterface, NodeIdentity, NodeReport, OperatingSystem,
};
pub use summary::{human_bytes, keywords, summary_html, summary_line, summary_table};

/// Maximum length of a kept attribute value, in characters. The whole report must fit
/// AIoD's 65,535-character description, so one collector cannot be allowed
/// to fill it.
pub const ATTRIBUTE_VALUE_MAX_CHARS: usize = 1024;

/// Most attributes kept from one collector.
pub const ATTRIBUTES_PER_COLLECTOR_MAX: usize = 256;

/// OS and kernel facts as a collector reports them, before they are placed
/// in the report's `node` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsFacts {
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    pub kernel_version: Option<String>,
    pub architecture: Option<String>,
    pub name: Option<String>,
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

/// One collector's result, in the host's model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Partial {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub os: Option<OsFacts>,
    pub accelerators: Option<Vec<Accelerator>>,
    pub storage: Option<Vec<BlockDevice>>,
    pub network: Option<Vec<NetworkInterface>>,
    pub attributes: Vec<(String, String)>,
}

/// Merges collector runs, in order, into a node report.
///
/// A single-valued section (cpu, memory, os) comes from the first collector
/// that provides it; a later one is ignored with a warning on that
/// collector. Lists are concatenated, and accelerators are de-duplicated by
/// PCI address. Unless `include_identifiers` is set, serial numbers, MAC
/// addresses and device UUIDs are removed whatever a collector returned.
pub fn merge(runs: Vec<CollectorRun>, include_identifiers: bool) -> NodeReport {
    let mut merged = Partial::default();
    let mut owners: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut attributes = BTreeMap::new();
    let mut collectors = Vec::with_capacity(runs.len());

    for run in runs {
        let mut outcome = CollectorOutcome {
            name: run.name.clone(),
            version: run.version.clone(),
            source: run.source.to_string(),
            sha256: run.sha256.clone(),
            status: CollectorStatus::Ok,
            duration_ms: (run.duration.as_secs_f64() * 1e6).round() / 1e3,
            error: None,
            limit: None,
            warnings: Vec::new(),
        };
        match run.result {
            Ok(partial) => absorb(&mut merged, &mut owners, &mut attributes, partial, &mut outcome),
            Err(failure) => {
                outcome.status = failure.status;
                outcome.error = Some(failure.message);
                outcome.limit = failure.limit.map(str::to_owned);
            }
        }
        collectors.push(outcome);
    }

    if !include_identifiers {
        strip_identifiers(&mut merged);
    }

    let unknown = unknown_sections(&merged, &collectors);
    let os = merged.os.unwrap_or_default();
    let architecture = os.architecture.or_else(|| merged.cpu.as_ref().and_then(|cpu| cpu.architecture.clone()));
    NodeReport {
        schema: NODE_REPORT_SCHEMA.to_owned(),
        generated_at: chrono::Utc::now(),
        agent: AgentInfo { name: "hw-agent".to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() },
        node: NodeIdentity {
            hostname: os.hostname,
            architecture,
            kernel: os.kernel,
            kernel_version: os.kernel_version,
            os: OperatingSystem { name: os.name, id: os.id, version_id: os.version_id, pretty_name: os.pretty_name },
        },
        cpu: merged.cpu,
        memory: merged.memory,
        accelerators: merged.accelerators,
        storage: merged.storage,
        network: merged.network,
        attributes,
        unknown,
        collectors,
    }
}

fn absorb(
    merged: &mut Partial,
    owners: &mut BTreeMap<&'static str, String>,
    attributes: &mut BTreeMap<String, String>,
    partial: Partial,
    outcome: &mut CollectorOutcome,
) {
    let name = outcome.name.clone();
    let mut single = |section: &'static str, present: bool, taken: bool| -> bool {
        if !present {
            return false;
        }
        if taken {
            let owner = owners.get(section).cloned().unwrap_or_default();
            outcome.warnings.push(format!("`{section}` already provided by collector `{owner}`; this one was ignored"));
            return false;
        }
        owners.insert(section, name.clone());
        true
    };
    if single("cpu", partial.cpu.is_some(), merged.cpu.is_some()) {
        merged.cpu = partial.cpu;
    }
    if single("memory", partial.memory.is_some(), merged.memory.is_some()) {
        merged.memory = partial.memory;
    }
    if single("os", partial.os.is_some(), merged.os.is_some()) {
        merged.os = partial.os;
    }

    if let Some(devices) = partial.accelerators {
        let list = merged.accelerators.get_or_insert_with(Vec::new);
        for device in devices {
            if list.iter().any(|known| known.pci_address == device.pci_address) {
                outcome
                    .warnings
                    .push(format!("accelerator {} already reported; duplicate ignored", device.pci_address));
            } else {
                list.push(device);
            }
        }
    }
    if let Some(devices) = partial.storage {
        merged.storage.get_or_insert_with(Vec::new).extend(devices);
    }
    if let Some(interfaces) = partial.network {
        merged.network.get_or_insert_with(Vec::new).extend(interfaces);
    }

    let count = partial.attributes.len();
    if count > ATTRIBUTES_PER_COLLECTOR_MAX {
        outcome.warnings.push(format!(
            "{} of {count} attributes dropped: at most {ATTRIBUTES_PER_COLLECTOR_MAX} are kept per collector",
            count - ATTRIBUTES_PER_COLLECTOR_MAX
        ));
    }
    for (key, value) in partial.attributes.into_iter().take(ATTRIBUTES_PER_COLLECTOR_MAX) {
        if value.chars().count() > ATTRIBUTE_VALUE_MAX_CHARS {
            outcome.warnings.push(format!(
                "attribute `{key}` dropped: its value is longer than {ATTRIBUTE_VALUE_MAX_CHARS} characters"
            ));
            continue;
        }
        if let Err(reason) = validate_attribute_key(&key) {
            outcome.warnings.push(format!("attribute `{key}` dropped: {reason}"));
            continue;
        }
        match attributes.entry(key) {
            std::collections::btree_map::Entry::Occupied(entry) => {
                outcome.warnings.push(format!("attribute `{}` already set by another collector; ignored", entry.key()));
            }
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(value);
            }
        }
    }
}

/// Checks the `<prefix>/<name>` form of an attribute key: the prefix is a
/// DNS subdomain and the name is at most 63 of `[A-Za-z0-9._-]`, as for
/// Kubernetes label keys, so keys from different vendors cannot collide.
pub fn validate_attribute_key(key: &str) -> Result<(), String> {
    let Some((prefix, name)) = key.split_once('/') else {
        return Err("expected `<dns-prefix>/<name>`, for example `example.com/fabric`".to_owned());
    };
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !prefix_ok {
        return Err(format!("prefix `{prefix}` is not a lowercase DNS subdomain"));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !name_ok {
        return Err(format!("name `{name}` must be 1-63 characters of [A-Za-z0-9._-]"));
    }
    Ok(())
}

fn strip_identifiers(partial: &mut Partial) {
    for device in partial.accelerators.iter_mut().flatten() {
        device.uuid = None;
    }
    for device in partial.storage.iter_mut().flatten() {
        device.serial = None;
    }
    for interface in partial.network.iter_mut().flatten() {
        interface.mac_address = None;
    }
}

/// Explains each missing section by the collectors that failed. A section
/// that no collector covers gets a reason saying so.
fn unknown_sections(merged: &Partial, collectors: &[CollectorOutcome]) -> BTreeMap<String, String> {
    let failed: Vec<String> = collectors
        .iter()
        .filter(|outcome| outcome.status != CollectorStatus::Ok)
        .map(|outcome| format!("collector `{}` {}", outcome.name, status_word(outcome.status)))
        .collect();
    let reason = if failed.is_empty() {
        "no collector reported this section".to_owned()
    } else {
        format!("no collector reported this section ({})", failed.join(", "))
    };

    let sections = [
        ("cpu", merged.cpu.is_none()),
        ("memory", merged.memory.is_none()),
        ("os", merged.os.is_none()),
        ("accelerators", merged.accelerators.is_none()),
        ("storage", merged.storage.is_none()),
        ("network", merged.network.is_none()),
    ];
    sections
        .into_iter()
        .filter(|(_, missing)| *missing)
        .map(|(section, _)| (section.to_owned(), reason.clone()))
        .collect()
}

fn status_word(status: CollectorStatus) -> &'static str {
    match status {
        CollectorStatus::Ok => "succeeded",
        CollectorStatus::Error => "failed",
        CollectorStatus::Timeout => "timed out",
        CollectorStatus::LimitExceeded => "exceeded a limit",
        CollectorStatus::Denied => "was denied by the policy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_attribute_is_dropped_with_warning() {
        let partial = Partial {
            attributes: vec![
                ("example.com/big".to_owned(), "x".repeat(ATTRIBUTE_VALUE_MAX_CHARS + 1)),
                ("example.com/small".to_owned(), "ok".to_owned()),
            ],
            ..Partial::default()
        };
        let run = CollectorRun {
            name: "plugin".to_owned(),
            version: None,
            source: crate::runtime::CollectorSource::BuiltIn,
            sha256: None,
            duration: std::time::Duration::ZERO,
            result: Ok(partial),
        };
        let report = merge(vec![run], false);
        assert!(!report.attributes.contains_key("example.com/big"));
        assert_eq!(report.attributes.get("example.com/small").map(String::as_str), Some("ok"));
        assert_eq!(report.collectors[0].warnings.len(), 1);
    }

    #[test]
    fn attribute_keys() {
        assert!(validate_attribute_key("example.com/fabric").is_ok());
        assert!(validate_attribute_key("fabric").is_err());
        assert!(validate_attribute_key("Example.com/x").is_err());
        assert!(validate_attribute_key("example.com/").is_err());
        assert!(validate_attribute_key("example.com/a b").is_err());
    }
}
