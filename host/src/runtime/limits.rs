//! Resource limits of one guest store. A limit hit becomes an error that
//! aborts the guest, so the host can report `limit_exceeded` with the
//! resource and amount instead of a generic trap.

use std::fmt;

/// Bounds applied to one collector call. The policy file sets defaults and
/// per-collector overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Maximum size of each linear memory, in bytes.
    pub memory_bytes: usize,
    /// Maximum number of elements in each table.
    pub table_elements: usize,
    /// Run-time budget of the guest's own code in one call, in milliseconds,
    /// counted in epoch ticks while guest code runs. Time the guest spends
    /// waiting in a host call (a slow file read) is not counted here but in
    /// `timeout_ms`.
    pub deadline_ms: u64,
    /// Wall-clock budget of one call, host calls included, in milliseconds.
    /// A tokio timeout drops the guest when it passes, even when it is
    /// blocked in a host call that never returns.
    pub timeout_ms: u64,
    /// Maximum size of a collector's result, as serialised JSON, in bytes.
    pub output_bytes: usize,
    /// Maximum number of records in a result: list elements of the typed
    /// categories plus attributes, or node records.
    pub max_records: usize,
    /// Maximum number of resource handles the guest has open at once:
    /// files, directories and streams.
    pub max_handles: usize,
    /// Log records the guest may send per call; more are counted and dropped.
    pub log_records: usize,
}

impl Default for GuestLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            deadline_ms: 2_000,
            timeout_ms: 10_000,
            output_bytes: 4 << 20,
            max_records: 65_536,
            max_handles: 1_024,
            log_records: 200,
        }
    }
}

/// The error a limiter raises inside the guest; found again in the trap's
/// error chain to classify the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    pub resource: &'static str,
    pub requested: usize,
    pub limit: usize,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} limit exceeded: requested {}, limit {}", self.resource, self.requested, self.limit)
    }
}

impl std::error::Error for LimitExceeded {}

/// A `wasmtime::ResourceLimiter` that fails the growth with [`LimitExceeded`]
/// rather than returning -1 to the guest. Rust guests abort on a failed
/// allocation anyway, and the error keeps the reason.
#[derive(Debug)]
pub struct GuestLimiter {
    limits: GuestLimits,
}

impl GuestLimiter {
    pub fn new(limits: GuestLimits) -> Self {
        Self { limits }
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            return Err(
                LimitExceeded { resource: "memory", requested: desired, limit: self.limits.memory_bytes }.into()
            );
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            return Err(
                LimitExceeded { resource: "table", requested: desired, limit: self.limits.table_elements }.into()
            );
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Core instances one component may create. A component instantiates a
/// handful of core modules (its own code, the WASI adapter, shims).
pub const MAX_CORE_INSTANCES: usize = 64;
/// Tables one component may create.
pub const MAX_TABLES: usize = 64;
/// Linear memories one component may create.
pub const MAX_MEMORIES: usize = 16;
