//! A minimal hw-agent collector plugin: it reads the kernel release and
//! returns it as one attribute. Copy this crate to start your own collector.

// Generates the `Guest` trait and the WIT types from the `collector` world.
// In a copy outside this repository, point `path` at your copy of `wit/`.
wit_bindgen::generate!({ world: "collector", path: "../../wit" });

// The world's exports name `CollectorInfo`, `CollectOptions`, `PartialReport`
// and `CollectError`, so `generate!` defines them in this module already.
use aiod::hw_agent::types::{Attribute, Capability};

/// The file this collector reads. The sandbox contains only the paths that
/// `info` requests and the operator's policy grants. Change it to your input.
const KERNEL_RELEASE: &str = "/proc/sys/kernel/osrelease";

struct Template;

impl Guest for Template {
    fn info() -> CollectorInfo {
        CollectorInfo {
            // Change the name. The operator's policy grants capabilities by collector name.
            name: "template".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Example collector: the kernel release".to_owned(),
            // List every path you read. A request the policy does not grant
            // stops the collector from running.
            capabilities: vec![Capability::ReadPath(KERNEL_RELEASE.to_owned())],
        }
    }

    // Replace the body with your own reading and parsing. Fill the typed
    // sections you know and leave the others `None`. Return serial numbers,
    // MAC addresses or UUIDs only if `options.include_identifiers` is set.
    fn collect(_options: CollectOptions) -> Result<PartialReport, CollectError> {
        let release = std::fs::read_to_string(KERNEL_RELEASE)
            .map_err(|error| CollectError::Io(format!("failed to read {KERNEL_RELEASE}: {error}")))?;
        Ok(PartialReport {
            cpu: None,
            memory: None,
            os: None,
            accelerators: None,
            storage: None,
            network: None,
            // Keys are `<dns-prefix>/<name>`. Use a domain you own as the prefix.
            attributes: vec![Attribute {
                key: "example.com/kernel-release".to_owned(),
                value: release.trim().to_owned(),
            }],
        })
    }
}

// The export expands to `unsafe` ABI glue, which this workspace's lints deny
// unless it is allowed here.
#[allow(unsafe_code)]
mod exports {
    use super::Template;

    super::export!(Template with_types_in super);
}
