//! The operator's collector policy: which capabilities each collector is
//! granted, which plugin builds are pinned, and the limits of each call.
//!
//! A collector declares its capabilities in `info`. It runs only when the
//! policy grants all of them, and then it gets exactly what it requested:
//! a collector that requests `/sys/class/infiniband` can read that directory, not
//! every path the policy would allow.

mod paths;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::runtime::{Capability, GuestLimits};

pub use paths::{forbidden_reason, grant_conflict, normalize_guest_path};

/// The policy used when no file is given.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");

/// The collector that alone may be granted the node list.
pub const NODES_COLLECTOR: &str = "nodes";

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Origin of the policy, for messages: a file path or "the built-in policy".
    origin: String,
    read: Vec<String>,
    limits: GuestLimits,
    require_sha256: bool,
    collectors: BTreeMap<String, CollectorRules>,
}

#[derive(Debug, Clone, Default)]
struct CollectorRules {
    read: Vec<String>,
    node_list: bool,
    sha256: Option<String>,
    limits: LimitOverrides,
}

/// Permissions of one collector: the paths it requested (all within its
/// grants), the node list, and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub read: Vec<String>,
    pub node_list: bool,
    pub limits: GuestLimits,
}

#[derive(Debug, Deserialize, Default)]
struct PolicyFile {
    #[serde(default)]
    defaults: DefaultsFile,
    #[serde(default)]
    collectors: BTreeMap<String, CollectorFile>,
}

#[derive(Debug, Deserialize, Default)]
struct DefaultsFile {
    read: Option<Vec<String>>,
    require_sha256: Option<bool>,
    #[serde(flatten)]
    limits: LimitOverrides,
}

#[derive(Debug, Deserialize, Default)]
struct CollectorFile {
    read: Option<Vec<String>>,
    node_list: Option<bool>,
    sha256: Option<String>,
    #[serde(flatten)]
    limits: LimitOverrides,
}

/// Limits a policy section may set; `None` keeps the inherited value.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub memory_mib: Option<u64>,
    pub table_elements: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub output_bytes: Option<u64>,
    pub max_records: Option<u64>,
    pub max_handles: Option<u64>,
    pub log_records: Option<u64>,
}

/// Each limit key with its allowed range.
const LIMIT_RANGES: &[(&str, u64, u64)] = &[
    ("memory_mib", 1, 4_096),
    ("table_elements", 100, 10_000_000),
    ("deadline_ms", 10, 600_000),
    ("timeout_ms", 100, 3_600_000),
    ("output_bytes", 1_024, 1 << 30),
    ("max_records", 1, 10_000_000),
    ("max_handles", 16, 65_536),
    ("log_records", 0, 100_000),
];

impl LimitOverrides {
    fn entries(&self) -> [(&'static str, Option<u64>); 8] {
        [
            ("memory_mib", self.memory_mib),
            ("table_elements", self.table_elements),
            ("deadline_ms", self.deadline_ms),
            ("timeout_ms", self.timeout_ms),
            ("output_bytes", self.output_bytes),
            ("max_records", self.max_records),
            ("max_handles", self.max_handles),
            ("log_records", self.log_records),
        ]
    }

    /// Checks every set value against its range; `setting` turns a key into
    /// the name the message gives, such as `[defaults] memory_mib`.
    fn validate(&self, setting: impl Fn(&str) -> String) -> Result<(), String> {
        for ((key, value), (_, min, max)) in self.entries().iter().zip(LIMIT_RANGES) {
            if let Some(value) = value
                && !(*min..=*max).contains(value)
            {
                return Err(format!("{} = {value} is out of range; use {min} to {max}", setting(key)));
            }
        }
        Ok(())
    }

    /// Returns these overrides, with `base`'s value where this one has none.
    fn or(self, base: LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            memory_mib: self.memory_mib.or(base.memory_mib),
            table_elements: self.table_elements.or(base.table_elements),
            deadline_ms: self.deadline_ms.or(base.deadline_ms),
            timeout_ms: self.timeout_ms.or(base.timeout_ms),
            output_bytes: self.output_bytes.or(base.output_bytes),
            max_records: self.max_records.or(base.max_records),
            max_handles: self.max_handles.or(base.max_handles),
            log_records: self.log_records.or(base.log_records),
        }
    }

    /// Returns `base` with the values this section sets.
    pub fn apply(&self, base: GuestLimits) -> GuestLimits {
        let size = |value: Option<u64>, current: usize| value.map_or(current, |value| value as usize);
        GuestLimits {
            memory_bytes: self.memory_mib.map_or(base.memory_bytes, |mib| (mib as usize) << 20),
            table_elements: size(self.table_elements, base.table_elements),
            deadline_ms: self.deadline_ms.unwrap_or(base.deadline_ms),
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            output_bytes: size(self.output_bytes, base.output_bytes),
            max_records: size(self.max_records, base.max_records),
            max_handles: size(self.max_handles, base.max_handles),
            log_records: size(self.log_records, base.log_records),
        }
    }
}

impl Policy {
    /// Returns the built-in policy.
    pub fn built_in() -> Self {
        Self::parse(DEFAULT_POLICY, "the built-in policy", None).expect("the built-in policy is valid")
    }

    /// Reads and validates a policy file. Collector entries of the built-in
    /// policy that the file does not name stay in force, so a file that only
    /// adds a plugin keeps the `nodes` collector's grants.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = crate::config::read_small_file(path, "policy file")?;
        let origin = path.display().to_string();
        Self::parse(&text, &origin, Some(Self::built_in()))
            .map_err(|error| if error.contains(&origin) { error } else { format!("{origin}: {error}") })
    }

    fn parse(text: &str, origin: &str, inherit: Option<Policy>) -> Result<Self, String> {
        // The message and line only: toml's own rendering quotes the source
        // line, which for a file mistaken for the policy can be a secret.
        let invalid = |error: toml::de::Error| crate::config::toml_error(text, &format!("policy {origin}"), &error);
        let table: toml::Table = toml::from_str(text).map_err(invalid)?;
        check_keys(&table).map_err(|error| format!("invalid policy {origin}: {error}"))?;
        let file: PolicyFile = table.try_into().map_err(invalid)?;
        file.defaults.limits.validate(|key| format!("[defaults] {key}"))?;
        let limits = file.defaults.limits.apply(GuestLimits::default());
        check_timeouts("defaults", &limits)?;

        let default_read = file
            .defaults
            .read
            .unwrap_or_else(|| inherit.as_ref().map(|policy| policy.read.clone()).unwrap_or_default());
        let read = validate_grants("defaults", &default_read)?;

        // A key the file sets replaces the inherited value; keys it leaves
        // out keep it, so `[collectors.nodes] memory_mib = 1024` keeps the
        // node list grant.
        let mut collectors = inherit.map(|policy| policy.collectors).unwrap_or_default();
        for (name, entry) in file.collectors {
            let section = format!("collectors.{name}");
            let base = collectors.remove(&name).unwrap_or_default();
            entry.limits.validate(|key| format!("[{section}] {key}"))?;
            let rules = CollectorRules {
                read: match &entry.read {
                    Some(read) => validate_grants(&section, read)?,
                    None => base.read,
                },
                node_list: entry.node_list.unwrap_or(base.node_list),
                sha256: entry.sha256.map(|pin| validate_sha256(&section, &pin)).transpose()?.or(base.sha256),
                limits: entry.limits.or(base.limits),
            };
            check_timeouts(&section, &rules.limits.apply(limits))?;
            if rules.node_list && name != NODES_COLLECTOR {
                return Err(format!(
                    "[{section}] node_list = true is not allowed; only the built-in `{NODES_COLLECTOR}` collector may read the cluster's Node objects"
                ));
            }
            collectors.insert(name, rules);
        }

        Ok(Self {
            origin: origin.to_owned(),
            read,
            limits,
            require_sha256: file.defaults.require_sha256.unwrap_or(false),
            collectors,
        })
    }

    /// Returns where the policy came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Returns the default limits.
    pub fn limits(&self) -> GuestLimits {
        self.limits
    }

    /// Replaces default limits, as command-line flags do. Collector entries
    /// still override them. `setting` names a key in messages, such as the
    /// flag that set it.
    pub fn override_defaults(
        &mut self,
        overrides: &LimitOverrides,
        setting: impl Fn(&str) -> String,
    ) -> Result<(), String> {
        overrides.validate(setting)?;
        self.limits = overrides.apply(self.limits);
        // A deadline raised on the command line raises the wall-clock
        // timeout with it, which must never be the shorter of the two.
        self.limits.timeout_ms = self.limits.timeout_ms.max(self.limits.deadline_ms);
        Ok(())
    }

    /// Returns the limits of the named collector.
    pub fn limits_for(&self, collector: &str) -> GuestLimits {
        let mut limits = match self.collectors.get(collector) {
            Some(rules) => rules.limits.apply(self.limits),
            None => self.limits,
        };
        // A deadline raised on the command line may pass a collector's own
        // timeout, which must never be the shorter of the two.
        limits.timeout_ms = limits.timeout_ms.max(limits.deadline_ms);
        limits
    }

    /// Returns the SHA-256 pin of the named collector, as lowercase hex.
    pub fn pin(&self, collector: &str) -> Option<&str> {
        self.collectors.get(collector).and_then(|rules| rules.sha256.as_deref())
    }

    /// Checks a plugin's SHA-256 against its pin. Built-in collectors are
    /// part of the agent binary and are not pinned.
    pub fn check_pin(&self, collector: &str, sha256: &str) -> Result<(), String> {
        match self.pin(collector) {
            Some(pin) if pin == sha256 => Ok(()),
            Some(pin) => Err(format!(
                "the plugin's SHA-256 is {sha256}, but {} pins collector `{collector}` to {pin}; \
                 install the pinned build or update sha256 in [collectors.{collector}]",
                self.origin
            )),
            None if self.require_sha256 => Err(format!(
                "{} requires a SHA-256 pin for every plugin and has none for `{collector}`; \
                 add sha256 = \"{sha256}\" to [collectors.{collector}] if this build is trusted",
                self.origin
            )),
            None => Ok(()),
        }
    }

    /// Rejects a plugin before it is compiled when the policy requires pins
    /// and no collector entry pins its digest, so no code of an unknown
    /// build runs, `info` included.
    pub fn check_digest_allowed(&self, sha256: &str) -> Result<(), String> {
        if !self.require_sha256 || self.collectors.values().any(|rules| rules.sha256.as_deref() == Some(sha256)) {
            return Ok(());
        }
        Err(format!(
            "{} requires a SHA-256 pin for every plugin, and no collector entry pins {sha256}; \
             add sha256 = \"{sha256}\" to the plugin's [collectors.NAME] entry if this build is trusted",
            self.origin
        ))
    }

    /// Decides whether a collector may run with the capabilities it requests.
    /// The error names the first capability that is not granted and the fix.
    pub fn decide(&self, collector: &str, capabilities: &[Capability]) -> Result<Grant, String> {
        let rules = self.collectors.get(collector);
        let granted: Vec<&String> =
            self.read.iter().chain(rules.map(|rules| &rules.read).into_iter().flatten()).collect();
        let mut read = Vec::new();
        let mut node_list = false;
        for capability in capabilities {
            match capability {
                Capability::ReadPath(requested) => {
                    let path = normalize_guest_path(requested).map_err(|reason| {
                        format!("requests read access to `{requested}`, which is invalid: {reason}")
                    })?;
                    if let Some(reason) = forbidden_reason(&path) {
                        return Err(format!("requests read access to {path}, which no collector is granted: {reason}"));
                    }
                    if path == "/proc" {
                        return Err("requests read access to /proc as a whole, which holds the agent's own process; \
                             request the /proc files it reads, such as /proc/cpuinfo"
                            .to_owned());
                    }
                    if !granted.iter().any(|grant| paths::covers(grant, &path)) {
                        return Err(format!(
                            "requests read access to {path}, which {} does not grant it; add it to `read` in [collectors.{collector}]",
                            self.origin
                        ));
                    }
                    read.push(path);
                }
                Capability::NodeList => {
                    if !rules.is_some_and(|rules| rules.node_list) {
                        return Err(format!(
                            "requests the cluster's node list, which {} grants only to the built-in `{NODES_COLLECTOR}` collector",
                            self.origin
                        ));
                    }
                    node_list = true;
                }
                // TODO: offer NVML through a host import that queries the
                // driver on the collector's behalf.
                Capability::Nvml => {
                    return Err("requests NVML, which this agent does not provide yet".to_owned());
                }
            }
        }
        read.sort();
        read.dedup();
        let read = paths::outermost(read);
        Ok(Grant { read, node_list, limits: self.limits_for(collector) })
    }

    /// Returns the largest memory limit any collector may get, which sizes
    /// the slots of the pooling allocator.
    pub fn max_memory_bytes(&self) -> usize {
        self.max_limit(|limits| limits.memory_bytes)
    }

    /// Returns the largest table limit any collector may get.
    pub fn max_table_elements(&self) -> usize {
        self.max_limit(|limits| limits.table_elements)
    }

    /// Returns the largest value of one limit over the defaults and every
    /// collector entry.
    fn max_limit(&self, limit: impl Fn(&GuestLimits) -> usize) -> usize {
        self.collectors.keys().map(|name| limit(&self.limits_for(name))).fold(limit(&self.limits), usize::max)
    }
}

/// Rejects unknown keys by name. serde's `deny_unknown_fields` does not
/// work together with the flattened limit keys.
fn check_keys(table: &toml::Table) -> Result<(), String> {
    let limit_keys = LIMIT_RANGES.iter().map(|(key, _, _)| *key);
    let defaults_keys: Vec<&str> = ["read", "require_sha256"].into_iter().chain(limit_keys.clone()).collect();
    let collector_keys: Vec<&str> = ["read", "node_list", "sha256"].into_iter().chain(limit_keys).collect();
    let unknown = |section: &str, table: &toml::Table, known: &[&str]| -> Result<(), String> {
        match table.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(format!("unknown key `{key}` in {section}; known keys: {}", known.join(", "))),
            None => Ok(()),
        }
    };
    // serde's messages for a wrong type name neither the key nor the range.
    let integers = |section: &str, table: &toml::Table| -> Result<(), String> {
        for (key, min, max) in LIMIT_RANGES {
            match table.get(*key) {
                None => {}
                Some(toml::Value::Integer(value)) if *value >= 0 => {}
                Some(value) => {
                    return Err(format!(
                        "{section} {key} = {value} is invalid; use a whole number from {min} to {max}"
                    ));
                }
            }
        }
        Ok(())
    };
    unknown("the top level", table, &["defaults", "collectors"])?;
    match table.get("defaults") {
        None => {}
        Some(toml::Value::Table(defaults)) => {
            unknown("[defaults]", defaults, &defaults_keys)?;
            integers("[defaults]", defaults)?;
        }
        Some(_) => return Err("`defaults` must be a table: write it as [defaults]".to_owned()),
    }
    match table.get("collectors") {
        None => {}
        Some(toml::Value::Table(collectors)) => {
            for (name, entry) in collectors {
                let section = format!("[collectors.{name}]");
                let toml::Value::Table(entry) = entry else {
                    return Err(format!("`collectors.{name}` must be a table: write it as {section}"));
                };
                unknown(&section, entry, &collector_keys)?;
                integers(&section, entry)?;
            }
        }
        Some(_) => return Err("`collectors` must hold tables such as [collectors.NAME]".to_owned()),
    }
    Ok(())
}

fn check_timeouts(section: &str, limits: &GuestLimits) -> Result<(), String> {
    if limits.timeout_ms < limits.deadline_ms {
        return Err(format!(
            "[{section}] timeout_ms {} is shorter than deadline_ms {}; the wall-clock timeout must be at least the run-time deadline",
            limits.timeout_ms, limits.deadline_ms
        ));
    }
    Ok(())
}

fn validate_grants(section: &str, grants: &[String]) -> Result<Vec<String>, String> {
    grants
        .iter()
        .map(|grant| {
            let path = normalize_guest_path(grant)
                .map_err(|reason| format!("[{section}] read entry `{grant}` is invalid: {reason}"))?;
            if let Some(reason) = paths::grant_conflict(&path) {
                return Err(format!("[{section}] read entry {path} cannot be granted: {reason}"));
            }
            Ok(path)
        })
        .collect()
}

fn validate_sha256(section: &str, pin: &str) -> Result<String, String> {
    let pin = pin.trim().to_ascii_lowercase();
    if pin.len() != 64 || !pin.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(format!(
            "[{section}] sha256 = \"{pin}\" is not a SHA-256 digest; use the 64 hex digits `hw-agent plugins inspect FILE` prints"
        ));
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str) -> Capability {
        Capability::ReadPath(path.to_owned())
    }

    #[test]
    fn shipped_policy_matches_built_in() {
        let shipped = include_str!("../../../docker/kubernetes/policy.toml");
        assert_eq!(
            shipped, DEFAULT_POLICY,
            "docker/kubernetes/policy.toml is out of date; regenerate it with `hw-agent plugins policy > docker/kubernetes/policy.toml`"
        );
    }

    #[test]
    fn built_in_policy_parses() {
        let policy = Policy::built_in();
        assert_eq!(policy.limits(), GuestLimits::default());
        assert_eq!(policy.limits_for("nodes").memory_bytes, 512 << 20);
        assert!(policy.max_memory_bytes() >= 512 << 20);
    }

    #[test]
    fn requested_paths_within_grants_run() {
        let policy = Policy::built_in();
        let grant = policy
            .decide(
                "cpu",
                &[read("/proc/cpuinfo"), read("/sys"), read("/sys/devices/system/cpu"), read("/etc/os-release")],
            )
            .expect("granted");
        assert_eq!(grant.read, vec!["/etc/os-release", "/proc/cpuinfo", "/sys"]);
        assert!(!grant.node_list);
    }

    #[test]
    fn ungranted_path_is_denied() {
        let policy = Policy::built_in();
        let denial = policy.decide("ib", &[read("/sys"), read("/var/log")]).expect_err("denied");
        assert!(denial.contains("/var/log"), "{denial}");
        assert!(denial.contains("[collectors.ib]"), "{denial}");
    }

    #[test]
    fn secrets_and_process_directories_are_denied() {
        let policy = Policy::built_in();
        for path in [
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/proc/self/environ",
            "/proc/1/environ",
            "/proc/kcore",
            "/proc",
        ] {
            let denial = policy.decide("any", &[read(path)]).expect_err(path);
            assert!(denial.contains("/proc") || denial.contains("secrets"), "{path}: {denial}");
        }
    }

    #[test]
    fn escaping_request_is_invalid() {
        let policy = Policy::built_in();
        let denial = policy.decide("any", &[read("/sys/../etc/shadow")]).expect_err("denied");
        assert!(denial.contains("invalid"), "{denial}");
    }

    #[test]
    fn node_list_only_for_nodes() {
        let policy = Policy::built_in();
        assert!(policy.decide("nodes", &[Capability::NodeList]).is_ok_and(|grant| grant.node_list));
        assert!(policy.decide("cpu", &[Capability::NodeList]).is_err());
        let error = Policy::parse("[collectors.evil]\nnode_list = true\n", "test", None).expect_err("rejected");
        assert!(error.contains("[collectors.evil] node_list"), "{error}");
    }

    #[test]
    fn nvml_is_not_provided() {
        let denial = Policy::built_in().decide("gpu", &[Capability::Nvml]).expect_err("denied");
        assert!(denial.contains("NVML"), "{denial}");
    }

    #[test]
    fn file_adds_plugin_and_keeps_nodes() {
        let policy = Policy::parse(
            "[collectors.infiniband]\nread = [\"/sys/class/infiniband\"]\nsha256 = \"AB\"\n",
            "test",
            Some(Policy::built_in()),
        )
        .expect_err("short pin rejected");
        assert!(policy.contains("sha256"), "{policy}");

        let pin = "a".repeat(64);
        let text = format!("[collectors.infiniband]\nread = [\"/opt/ib\"]\nsha256 = \"{pin}\"\ndeadline_ms = 5000\n");
        let policy = Policy::parse(&text, "test", Some(Policy::built_in())).expect("valid");
        assert!(policy.decide("infiniband", &[read("/opt/ib/ports")]).is_ok());
        assert!(policy.decide("other", &[read("/opt/ib")]).is_err(), "grants are per collector");
        assert_eq!(policy.limits_for("infiniband").deadline_ms, 5_000);
        assert_eq!(policy.limits_for("nodes").memory_bytes, 512 << 20, "built-in entries stay");
        assert!(policy.check_pin("infiniband", &pin).is_ok());
        let mismatch = policy.check_pin("infiniband", &"b".repeat(64)).expect_err("mismatch");
        assert!(mismatch.contains(&pin), "{mismatch}");
    }

    #[test]
    fn file_entry_merges_with_built_in_entry() {
        let policy =
            Policy::parse("[collectors.nodes]\nmemory_mib = 1024\n", "test", Some(Policy::built_in())).expect("valid");
        assert_eq!(policy.limits_for("nodes").memory_bytes, 1024 << 20);
        assert_eq!(policy.limits_for("nodes").deadline_ms, 10_000, "unset keys are inherited");
        assert!(policy.decide("nodes", &[Capability::NodeList]).is_ok(), "the node list grant is kept");
    }

    #[test]
    fn required_pin_is_enforced() {
        let policy = Policy::parse("[defaults]\nrequire_sha256 = true\n", "test", None).expect("valid");
        let error = policy.check_pin("dmi", &"c".repeat(64)).expect_err("unpinned");
        assert!(error.contains("[collectors.dmi]"), "{error}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("[defaults]\nmemory_mib = 0\n", "[defaults] memory_mib = 0"),
            ("[defaults]\ndeadline_ms = 5000\ntimeout_ms = 1000\n", "timeout_ms"),
            ("[defaults]\nread = [\"/\"]\n", "read entry `/`"),
            ("[defaults]\nread = [\"/var\"]\n", "/var/run/secrets"),
            ("[defaults]\nread = [\"sys\"]\n", "`sys`"),
            ("[defaults]\nmemory = 5\n", "memory"),
            ("[collectors.x]\nmax_handles = 1\n", "[collectors.x] max_handles"),
            (
                "[defaults]\nmemory_mib = \"64\"\n",
                "[defaults] memory_mib = \"64\" is invalid; use a whole number from 1 to 4096",
            ),
            ("[defaults]\nmemory_mib = -1\n", "[defaults] memory_mib = -1 is invalid"),
            ("[collectors]\nx = 5\n", "`collectors.x` must be a table"),
            ("client-secret-abc123\n", "at line 1"),
        ];
        for (text, expected) in cases {
            let error = Policy::parse(text, "test", None).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("abc123"), "the source line is not quoted: {error}");
        }
    }
}
