//! The `nodes` collector: turns the cluster's Node objects, which the host
//! lists through the `cluster` import, into one `node-record` per node with
//! roles, placement, parsed capacity and allocatable amounts, accelerators
//! and health.
//!
//! The mapping ([`build_node_records`], the [`quantity`] parser and the
//! [`accelerators`] table) works on the generated record types, which compile
//! on the host target too, so it runs as ordinary unit tests. Only the
//! component export is limited to wasm32.

pub mod accelerators;
mod labels;
pub mod quantity;
mod record;

pub use record::{NodeRecords, build_node_record, build_node_records};

/// Generated bindings for the `node-collector` world. This crate runs its own
/// `generate!` because `hw-collector-guest` generates the `collector` world,
/// which has other exports and no `cluster` import.
pub mod bindings {
    wit_bindgen::generate!({
        world: "node-collector",
        path: "../../wit",
        additional_derives: [PartialEq],
    });
}

pub use bindings::aiod::hw_agent::cluster::{KeyValue, NodeCondition, NodeObject, NodeSystemInfo, NodeTaint};
pub use bindings::aiod::hw_agent::node_records::{AcceleratorResource, ExtendedResource, NodeRecord, ResourceAmounts};
pub use bindings::aiod::hw_agent::types::{Capability, CollectError, CollectOptions, CollectorInfo};

use bindings::aiod::hw_agent::logging::Level;

/// Warnings logged per collection. A cluster of identical nodes with one
/// malformed value would otherwise log the same line once per node.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
const MAX_LOGGED_WARNINGS: usize = 20;

// Only the component export on wasm32 names this type, so on other targets
// it and the logging helpers below count as dead code.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct NodesCollector;

impl bindings::Guest for NodesCollector {
    fn info() -> CollectorInfo {
        CollectorInfo {
            name: "nodes".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
            capabilities: vec![Capability::NodeList],
        }
    }

    /// Lists the nodes through the host and maps them in input order.
    ///
    /// `options.include_identifiers` has no effect here: a node record contains
    /// no MAC address, serial number or device UUID. Its `uid` is the Node
    /// object's API identifier, which the host needs to match records to
    /// nodes, so it is always returned.
    fn collect_nodes(_options: CollectOptions) -> Result<Vec<NodeRecord>, CollectError> {
        let nodes = bindings::aiod::hw_agent::cluster::list_nodes().map_err(CollectError::Io)?;
        let NodeRecords { records, warnings } = build_node_records(&nodes);
        log_warnings(&warnings);
        log(Level::Debug, &format!("built {} node records", records.len()));
        Ok(records)
    }
}

/// The component export. The export macro expands to `unsafe` ABI glue in
/// this crate, which the workspace's `unsafe_code = "deny"` would reject.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{NodesCollector, bindings};

    bindings::export!(NodesCollector with_types_in bindings);
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn log_warnings(warnings: &[String]) {
    for warning in warnings.iter().take(MAX_LOGGED_WARNINGS) {
        log(Level::Warn, warning);
    }
    let skipped = warnings.len().saturating_sub(MAX_LOGGED_WARNINGS);
    if skipped > 0 {
        log(Level::Warn, &format!("{skipped} more warnings about node values were not logged"));
    }
}

/// Sends a log record to the host. Outside the sandbox (native unit tests)
/// there is no host, so the record is dropped.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::aiod::hw_agent::logging::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}
