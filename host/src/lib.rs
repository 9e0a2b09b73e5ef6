//! `hw-agent`: discovers a node's hardware through sandboxed WebAssembly
//! collectors and registers it as an AI-on-Demand computational asset.

pub mod agent;
pub mod aiod;
pub mod cli;
pub mod cluster;
pub mod collection;
pub mod commands;
pub mod config;
pub mod endpoints;
pub mod logging;
pub mod metrics;
pub mod plugins;
pub mod policy;
pub mod report;
pub mod runtime;
pub mod sources;
