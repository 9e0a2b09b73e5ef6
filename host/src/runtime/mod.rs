//! The collector runtime: the only code that touches wasmtime.
//!
//! Every call into a guest goes through [`Runtime::call_guest`], which builds
//! a fresh `Store` with memory and table limits, an epoch deadline and the
//! filesystem grants, and turns any trap into a typed [`GuestFailure`]. A
//! store without those limits cannot be built anywhere else.

mod bindings;
mod cache;
mod limits;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::report::Partial;
use crate::report::model::CollectorStatus;
use crate::sources::{FilesystemGrants, HostRoot};

pub use bindings::node_world::{
    AcceleratorResource, ExtendedResource, KeyValue, NodeCondition, NodeObject, NodeRecord, NodeSystemInfo, NodeTaint,
    ResourceAmounts,
};
use bindings::node_world::{NodeCollector, NodeCollectorPre};
pub use bindings::{CollectError, CollectOptions, CollectorInfo};
use bindings::{Collector, CollectorPre, GuestLogLevel};
pub use cache::{CacheUse, ComponentCache};
pub use limits::{GuestLimits, LimitExceeded};

/// The WIT package version this host implements.
pub const WIT_PACKAGE: &str = "aiod:hw-agent";
pub const WIT_VERSION: &str = "0.1.0";

/// How often the epoch advances; the deadline's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of guest stderr kept to explain a trap (a Rust panic prints there).
const STDERR_CAPTURE_BYTES: usize = 16 * 1024;

/// Guest log records accepted per call; more are counted and dropped.
const MAX_LOG_RECORDS: usize = 200;
const MAX_LOG_MESSAGE_BYTES: usize = 2048;

/// The cluster-level `nodes` collector, the only component linked against
/// the `cluster` import.
pub const NODES_COMPONENT: &[u8] = include_bytes!(env!("HW_AGENT_COMPONENT_NODES"));

/// The interface only the built-in `nodes` collector may import.
const CLUSTER_INTERFACE: &str = "aiod:hw-agent/cluster";

/// The built-in collector components, compiled by `build.rs`.
pub const BUILT_IN: &[(&str, &[u8])] = &[
    ("cpu", include_bytes!(env!("HW_AGENT_COMPONENT_CPU"))),
    ("gpu", include_bytes!(env!("HW_AGENT_COMPONENT_GPU"))),
    ("system", include_bytes!(env!("HW_AGENT_COMPONENT_SYSTEM"))),
];

/// The origin of a collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorSource {
    BuiltIn,
    Plugin(PathBuf),
}

impl std::fmt::Display for CollectorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CollectorSource::BuiltIn => f.write_str("built-in"),
            CollectorSource::Plugin(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A compiled, type-checked collector ready to instantiate.
#[derive(Clone)]
pub struct LoadedCollector {
    pub info: CollectorInfo,
    pub source: CollectorSource,
    pub cache: CacheUse,
    pre: CollectorPre<GuestState>,
}

impl std::fmt::Debug for LoadedCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCollector")
            .field("info", &self.info)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The reason a guest call returned no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFailure {
    pub status: CollectorStatus,
    pub message: String,
}

impl std::fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One collector's result: its facts, or why there are none.
#[derive(Debug)]
pub struct CollectorRun {
    pub name: String,
    pub version: Option<String>,
    pub source: CollectorSource,
    pub duration: Duration,
    pub result: Result<Partial, GuestFailure>,
}

/// A compiled `nodes` collector, ready to instantiate with the cluster's Node objects.
#[derive(Clone)]
pub struct LoadedNodeCollector {
    pub info: CollectorInfo,
    pre: NodeCollectorPre<GuestState>,
}

impl std::fmt::Debug for LoadedNodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedNodeCollector").field("info", &self.info).finish_non_exhaustive()
    }
}

/// State of one guest store.
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: limits::GuestLimiter,
    collector: String,
    log_records: usize,
    /// The Node objects handed to the `nodes` collector; taken by its one
    /// `list-nodes` call. Always `None` for other collectors, whose linker
    /// lacks the import anyway.
    cluster_nodes: Option<Vec<NodeObject>>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::aiod::hw_agent::logging::Host for GuestState {
    fn log(&mut self, level: GuestLogLevel, message: String) {
        self.log_records += 1;
        if self.log_records > MAX_LOG_RECORDS {
            if self.log_records == MAX_LOG_RECORDS + 1 {
                tracing::warn!(collector = %self.collector, limit = MAX_LOG_RECORDS, "collector log limit reached; dropping further records");
            }
            return;
        }
        let message = truncate(&message, MAX_LOG_MESSAGE_BYTES);
        let collector = self.collector.as_str();
        match level {
            GuestLogLevel::Trace => tracing::trace!(collector, "{message}"),
            GuestLogLevel::Debug => tracing::debug!(collector, "{message}"),
            GuestLogLevel::Info => tracing::info!(collector, "{message}"),
            GuestLogLevel::Warn => tracing::warn!(collector, "{message}"),
            GuestLogLevel::Error => tracing::error!(collector, "{message}"),
        }
    }
}

impl bindings::aiod::hw_agent::types::Host for GuestState {}

impl bindings::node_world::aiod::hw_agent::cluster::Host for GuestState {
    fn list_nodes(&mut self) -> Result<Vec<NodeObject>, String> {
        self.cluster_nodes.take().ok_or_else(|| "the node list was already read in this call".to_owned())
    }
}

impl bindings::node_world::aiod::hw_agent::node_records::Host for GuestState {}

/// Advances the engine's epoch on a background thread until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("hw-agent-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Engine, linker and cache shared by all collector runs.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    /// The collector linker plus the `cluster` import, for `nodes` only.
    node_linker: Linker<GuestState>,
    cache: ComponentCache,
    limits: GuestLimits,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cache", &self.cache).field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(limits: GuestLimits, cache: ComponentCache) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine =
            Engine::new(&config).map_err(anyhow::Error::from).context("failed to create the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        // NOTE: this links every WASI 0.2 interface, sockets included; the
        // WasiCtx below denies all network use, so a socket call fails.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("failed to link WASI")?;
        let mut node_linker = linker.clone();
        Collector::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("failed to link the collector host interfaces")?;
        NodeCollector::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut node_linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("failed to link the node collector host interfaces")?;

        let ticker = EpochTicker::start(engine.clone());
        Ok(Self { engine, linker, node_linker, cache, limits, _ticker: ticker })
    }

    /// Compiles (or loads from cache) and type-checks a component, then calls
    /// its `info` export. The host root supplies the grants for that call.
    pub fn load(&self, bytes: &[u8], source: CollectorSource, root: &HostRoot) -> anyhow::Result<LoadedCollector> {
        let (component, cache) = self.cache.load(&self.engine, bytes).context("failed to compile the component")?;
        check_world(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component does not fit the collector world of this agent")?;
        let pre = CollectorPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export the collector world")?;

        let grants = root.grants()?;
        let label = source.to_string();
        let info = self
            .call_guest(&grants, &label, self.limits, None, |store| {
                pre.instantiate(&mut *store).and_then(|collector| collector.call_info(store))
            })
            .map_err(|failure| anyhow::anyhow!("`info` failed: {failure}"))?;
        Ok(LoadedCollector { info, source, cache, pre })
    }

    /// Compiles and checks the `nodes` collector. It gets no filesystem:
    /// its only input is the node list the host passes through `cluster`.
    pub fn load_node_collector(&self, bytes: &[u8]) -> anyhow::Result<LoadedNodeCollector> {
        let (component, _) = self.cache.load(&self.engine, bytes).context("failed to compile the nodes component")?;
        let instance_pre = self
            .node_linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component does not fit the node-collector world of this agent")?;
        let pre = NodeCollectorPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export the node-collector world")?;
        let info = self
            .call_guest(&FilesystemGrants::default(), "nodes", self.limits, None, |store| {
                pre.instantiate(&mut *store).and_then(|collector| collector.call_info(store))
            })
            .map_err(|failure| anyhow::anyhow!("`info` failed: {failure}"))?;
        Ok(LoadedNodeCollector { info, pre })
    }

    /// Runs the `nodes` collector over the given Node objects. `limits`
    /// replaces the runtime's defaults, because a large cluster's node list
    /// needs more memory and output than one machine's facts.
    pub fn collect_nodes(
        &self,
        collector: &LoadedNodeCollector,
        nodes: Vec<NodeObject>,
        limits: GuestLimits,
    ) -> Result<Vec<NodeRecord>, GuestFailure> {
        let records = self
            .call_guest(&FilesystemGrants::default(), "nodes", limits, Some(nodes), |store| {
                let options = CollectOptions { include_identifiers: false };
                collector.pre.instantiate(&mut *store).and_then(|instance| instance.call_collect_nodes(store, options))
            })?
            .map_err(|error| GuestFailure { status: CollectorStatus::Error, message: error.to_string() })?;
        let size: usize = records.iter().map(record_size).sum();
        if size > limits.output_bytes {
            return Err(GuestFailure {
                status: CollectorStatus::LimitExceeded,
                message: LimitExceeded { resource: "output", requested: size, limit: limits.output_bytes }.to_string(),
            });
        }
        Ok(records)
    }

    /// Runs every collector concurrently, each in its own store, and returns
    /// their results in the order given.
    pub fn collect_all(
        &self,
        collectors: &[LoadedCollector],
        root: &HostRoot,
        options: CollectOptions,
    ) -> Vec<CollectorRun> {
        thread::scope(|scope| {
            let handles: Vec<_> = collectors
                .iter()
                .map(|collector| scope.spawn(move || self.collect(collector, root, options)))
                .collect();
            handles
                .into_iter()
                .zip(collectors)
                .map(|(handle, collector)| {
                    handle.join().unwrap_or_else(|_| CollectorRun {
                        name: collector.info.name.clone(),
                        version: Some(collector.info.version.clone()),
                        source: collector.source.clone(),
                        duration: Duration::ZERO,
                        result: Err(GuestFailure {
                            status: CollectorStatus::Error,
                            message: "the host thread running this collector panicked".to_owned(),
                        }),
                    })
                })
                .collect()
        })
    }

    /// Runs one collector's `collect` in a fresh store.
    pub fn collect(&self, collector: &LoadedCollector, root: &HostRoot, options: CollectOptions) -> CollectorRun {
        let name = collector.info.name.clone();
        let span = tracing::debug_span!("collector.run", collector = %name, source = %collector.source);
        let _entered = span.enter();
        let started = Instant::now();

        let result = root
            .grants()
            .map_err(|error| GuestFailure { status: CollectorStatus::Error, message: format!("{error:#}") })
            .and_then(|grants| {
                self.call_guest(&grants, &name, self.limits, None, |store| {
                    collector.pre.instantiate(&mut *store).and_then(|instance| instance.call_collect(store, options))
                })
            })
            .and_then(|answer| match answer {
                Ok(report) => Ok(Partial::from(report)),
                Err(error) => Err(GuestFailure { status: CollectorStatus::Error, message: error.to_string() }),
            })
            .and_then(|partial| self.check_output(partial));

        let duration = started.elapsed();
        match &result {
            Ok(_) => tracing::debug!(duration_ms = duration.as_secs_f64() * 1e3, "collector finished"),
            Err(failure) => tracing::warn!(status = ?failure.status, error = %failure.message, "collector failed"),
        }
        CollectorRun {
            name,
            version: Some(collector.info.version.clone()),
            source: collector.source.clone(),
            duration,
            result,
        }
    }

    /// Rejects a result larger than the output limit, measured as the JSON
    /// it would add to the report.
    fn check_output(&self, partial: Partial) -> Result<Partial, GuestFailure> {
        let size = serde_json::to_vec(&partial).map(|json| json.len()).unwrap_or(usize::MAX);
        if size > self.limits.output_bytes {
            return Err(GuestFailure {
                status: CollectorStatus::LimitExceeded,
                message: LimitExceeded { resource: "output", requested: size, limit: self.limits.output_bytes }
                    .to_string(),
            });
        }
        Ok(partial)
    }

    /// Wraps every guest call: a fresh store with limits, deadline and grants.
    /// The instance is dropped with the store, so a trapped instance is never
    /// reused.
    fn call_guest<R>(
        &self,
        grants: &FilesystemGrants,
        collector: &str,
        limits: GuestLimits,
        cluster_nodes: Option<Vec<NodeObject>>,
        call: impl FnOnce(&mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestFailure> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let mut store = self
            .new_store(grants, collector, limits, cluster_nodes, stderr.clone())
            .map_err(|error| GuestFailure { status: CollectorStatus::Error, message: format!("{error:#}") })?;

        call(&mut store).map_err(|error| classify(&error, &stderr))
    }

    fn new_store(
        &self,
        grants: &FilesystemGrants,
        collector: &str,
        limits: GuestLimits,
        cluster_nodes: Option<Vec<NodeObject>>,
        stderr: MemoryOutputPipe,
    ) -> anyhow::Result<Store<GuestState>> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .stderr(stderr);
        for preopen in &grants.preopens {
            wasi.preopened_dir(&preopen.host, &preopen.guest, FsPerms::ReadOnly)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("failed to grant {} as {}", preopen.host.display(), preopen.guest))?;
        }

        let state = GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: limits::GuestLimiter::new(limits),
            collector: collector.to_owned(),
            log_records: 0,
            cluster_nodes,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(deadline_ticks(limits.deadline_ms));
        store.epoch_deadline_trap();
        Ok(store)
    }
}

fn deadline_ticks(deadline_ms: u64) -> u64 {
    let tick_ms = EPOCH_TICK.as_millis() as u64;
    deadline_ms.div_ceil(tick_ms).max(1)
}

/// Turns a failed guest call into a report status and a one-line reason.
fn classify(error: &wasmtime::Error, stderr: &MemoryOutputPipe) -> GuestFailure {
    tracing::debug!(error = ?error, "guest call failed");
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return GuestFailure { status: CollectorStatus::LimitExceeded, message: limit.to_string() };
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return GuestFailure { status: CollectorStatus::Timeout, message: "run-time deadline exceeded".to_owned() };
    }

    let mut message = match error.downcast_ref::<Trap>() {
        Some(trap) => format!("trapped: {trap}"),
        None => format!("{:#}", error.root_cause()),
    };
    let captured = stderr.contents();
    let guest_output = String::from_utf8_lossy(&captured);
    let guest_output = guest_output.trim();
    if !guest_output.is_empty() {
        message.push_str("; guest stderr: ");
        message.push_str(&truncate(guest_output, 1024));
    }
    GuestFailure { status: CollectorStatus::Error, message }
}

/// Refuses a component built against another version of the WIT package,
/// naming both versions, before instantiation fails with a cryptic
/// "import not found".
fn check_world(engine: &Engine, component: &Component) -> anyhow::Result<()> {
    let component_type = component.component_type();
    for (name, _) in component_type.imports(engine) {
        anyhow::ensure!(
            !name.starts_with(CLUSTER_INTERFACE),
            "the component imports {name}, which only the built-in `nodes` collector is granted; \
             a collector plugin reads the node it runs on, not the cluster's Node objects"
        );
        let Some(rest) = name.strip_prefix(WIT_PACKAGE) else { continue };
        let version = rest.rsplit_once('@').map(|(_, version)| version).unwrap_or("unversioned");
        anyhow::ensure!(
            version == WIT_VERSION,
            "the component imports {name}, built against {WIT_PACKAGE}@{version}, but this agent implements \
             {WIT_PACKAGE}@{WIT_VERSION}; rebuild the collector against this agent's wit/ directory"
        );
    }
    let exports: Vec<&str> = component_type.exports(engine).map(|(name, _)| name).collect();
    for required in ["info", "collect"] {
        anyhow::ensure!(
            exports.contains(&required),
            "the component does not export `{required}`, so it is not a collector (world {WIT_PACKAGE}/collector@{WIT_VERSION})"
        );
    }
    Ok(())
}

/// Bytes a node record adds to the cluster report, approximately: the
/// strings it carries plus a fixed overhead per field.
fn record_size(record: &NodeRecord) -> usize {
    let strings = [&record.name, &record.uid].iter().map(|text| text.len()).sum::<usize>()
        + record.roles.iter().map(String::len).sum::<usize>()
        + [
            &record.architecture,
            &record.operating_system,
            &record.os_image,
            &record.kernel_version,
            &record.kubelet_version,
            &record.container_runtime,
            &record.instance_type,
            &record.zone,
            &record.region,
            &record.created,
        ]
        .iter()
        .filter_map(|text| text.as_ref().map(String::len))
        .sum::<usize>()
        + record
            .capacity
            .extended
            .iter()
            .chain(&record.allocatable.extended)
            .map(|item| item.name.len() + 8)
            .sum::<usize>()
        + record.accelerators.iter().map(|item| item.resource.len() + item.vendor.len() + 32).sum::<usize>()
        + record.taints.iter().map(|taint| taint.key.len() + taint.effect.len() + 16).sum::<usize>()
        + record.pressure.iter().map(String::len).sum::<usize>();
    strings + 256
}

fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Reads every `*.wasm` file of a plugin directory, sorted by name.
pub fn plugin_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read plugin directory {}; check --plugin-dir", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wasm") && path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        assert_eq!(deadline_ticks(2_000), 200);
        assert_eq!(deadline_ticks(15), 2);
        assert_eq!(deadline_ticks(0), 1);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("héllo", 2), "h…");
    }
}
