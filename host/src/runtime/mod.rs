//! The collector runtime: the only code that touches wasmtime.
//!
//! Every call into a guest goes through [`Runtime::call_guest`], which builds
//! a fresh `Store` with memory, table and handle limits, a run-time deadline
//! on the guest's own code, a wall-clock tokio timeout around the whole call
//! (host calls included) and the filesystem grants, and turns any trap into a
//! typed [`GuestFailure`]. A store without those limits cannot be built
//! anywhere else, and a store is never used for a second call, so a trapped
//! instance is never reused.

mod bindings;
mod cache;
mod limits;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, ResourceTableError};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::report::Partial;
use crate::report::model::CollectorStatus;
use crate::sources::FilesystemGrants;

pub use bindings::node_world::{
    AcceleratorResource, ExtendedResource, KeyValue, NodeCondition, NodeObject, NodeRecord, NodeSystemInfo, NodeTaint,
    ResourceAmounts,
};
use bindings::node_world::{NodeCollector, NodeCollectorPre};
pub use bindings::{Capability, CollectError, CollectOptions, CollectorInfo};
use bindings::{Collector, CollectorPre, GuestLogLevel, PartialReport};
pub use cache::{CacheUse, ComponentCache};
pub use limits::{GuestLimits, LimitExceeded};

/// The WIT package version this host implements.
pub const WIT_PACKAGE: &str = "aiod:hw-agent";
pub const WIT_VERSION: &str = "0.2.0";

/// How often the epoch advances; the deadline's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Native stack a guest may use. Deep recursion past it traps as a stack
/// overflow, reported as the `stack` limit.
const MAX_WASM_STACK: usize = 512 << 10;

/// Bytes of guest stderr kept to explain a trap (a Rust panic prints there).
const STDERR_CAPTURE_BYTES: usize = 16 * 1024;

const MAX_LOG_MESSAGE_BYTES: usize = 2048;

/// Concurrent component instances the pooling allocator has slots for: the
/// built-in collectors, plugins and `nodes` of one or two overlapping
/// collections, with room for the handful of core instances each creates.
const POOL_COMPONENT_INSTANCES: u32 = 64;
const POOL_CORE_INSTANCES: u32 = 512;
const POOL_MEMORIES: u32 = 128;
const POOL_TABLES: u32 = 256;

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

/// Returns the SHA-256 of a component, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

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
    /// SHA-256 of the component bytes, as lowercase hex.
    pub sha256: String,
    /// Time to compile or load from the cache, type-check and call `info`.
    pub load_duration: Duration,
    /// World, WIT version, imports and exports, read at load.
    pub summary: ComponentSummary,
    pre: CollectorPre<GuestState>,
}

impl LoadedCollector {
    /// Returns the SHA-256 to report: a plugin's, or `None` for a built-in.
    pub fn plugin_sha256(&self) -> Option<String> {
        match self.source {
            CollectorSource::Plugin(_) => Some(self.sha256.clone()),
            CollectorSource::BuiltIn => None,
        }
    }
}

impl std::fmt::Debug for LoadedCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCollector")
            .field("info", &self.info)
            .field("source", &self.source)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The reason a guest call returned no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFailure {
    pub status: CollectorStatus,
    pub message: String,
    /// The sandbox limit that stopped the call: `memory`, `table`, `stack`,
    /// `handles`, `output`, `records`, `deadline` (run time) or `timeout`
    /// (wall clock).
    pub limit: Option<&'static str>,
}

impl GuestFailure {
    pub fn error(message: impl Into<String>) -> Self {
        Self { status: CollectorStatus::Error, message: message.into(), limit: None }
    }

    fn limit(limit: LimitExceeded) -> Self {
        Self { status: CollectorStatus::LimitExceeded, message: limit.to_string(), limit: Some(limit.resource) }
    }

    fn hit(status: CollectorStatus, limit: &'static str, message: String) -> Self {
        Self { status, message, limit: Some(limit) }
    }
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
    /// SHA-256 of a plugin's component, as lowercase hex; `None` for a
    /// built-in, which the agent's version identifies.
    pub sha256: Option<String>,
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

/// Summary of a component, read from its type without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSummary {
    /// `collector` or `node-collector`, from the exports; `None` for neither.
    pub world: Option<&'static str>,
    /// The `aiod:hw-agent` version its imports name.
    pub wit_version: Option<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// The instance allocator the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorKind {
    /// Pre-reserved slots for memories, tables and instances, reused
    /// between calls.
    Pooling,
    /// Memory mapped and unmapped per instance, used where the pool's
    /// address-space reservation fails.
    OnDemand,
}

impl std::fmt::Display for AllocatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AllocatorKind::Pooling => "pooling",
            AllocatorKind::OnDemand => "on-demand",
        })
    }
}

/// Settings fixed when the engine is built.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub cache: ComponentCache,
    /// Use the pooling allocator when the machine allows it.
    pub pooling: bool,
    /// The largest memory and table limit any collector gets: the size of a
    /// pool slot.
    pub max_memory_bytes: usize,
    pub max_table_elements: usize,
}

/// State of one guest store.
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: limits::GuestLimiter,
    collector: String,
    log_records: usize,
    max_log_records: usize,
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
        if self.log_records > self.max_log_records {
            if self.log_records == self.max_log_records + 1 {
                tracing::warn!(collector = %self.collector, limit = self.max_log_records, "collector log limit reached; dropping further records");
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

/// Sets a guest call's cancel flag when the caller stops waiting for it,
/// after a timeout or when the collection itself is dropped at shutdown, so
/// the guest traps at its next epoch tick instead of running on unobserved.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

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

/// Engine, linkers and cache shared by all collector runs. Cloning is cheap.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<GuestState>,
    /// The collector linker plus the `cluster` import, for `nodes` only.
    node_linker: Linker<GuestState>,
    cache: ComponentCache,
    allocator: AllocatorKind,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.inner.cache)
            .field("allocator", &self.inner.allocator)
            .finish_non_exhaustive()
    }
}

/// The future of one guest call, borrowing its store.
type GuestFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// One kind of call into a guest: instantiate, then call one export.
trait GuestCall: Send {
    type Output: Send;
    fn run(self, store: &mut Store<GuestState>) -> GuestFuture<'_, Self::Output>;
}

struct InfoCall(CollectorPre<GuestState>);

impl GuestCall for InfoCall {
    type Output = CollectorInfo;
    fn run(self, store: &mut Store<GuestState>) -> GuestFuture<'_, CollectorInfo> {
        Box::pin(async move {
            let instance = self.0.instantiate_async(&mut *store).await?;
            instance.call_info(&mut *store).await
        })
    }
}

struct CollectCall(CollectorPre<GuestState>, CollectOptions);

impl GuestCall for CollectCall {
    type Output = Result<PartialReport, CollectError>;
    fn run(self, store: &mut Store<GuestState>) -> GuestFuture<'_, Self::Output> {
        Box::pin(async move {
            let instance = self.0.instantiate_async(&mut *store).await?;
            instance.call_collect(&mut *store, self.1).await
        })
    }
}

struct NodeInfoCall(NodeCollectorPre<GuestState>);

impl GuestCall for NodeInfoCall {
    type Output = CollectorInfo;
    fn run(self, store: &mut Store<GuestState>) -> GuestFuture<'_, CollectorInfo> {
        Box::pin(async move {
            let instance = self.0.instantiate_async(&mut *store).await?;
            instance.call_info(&mut *store).await
        })
    }
}

struct CollectNodesCall(NodeCollectorPre<GuestState>, CollectOptions);

impl GuestCall for CollectNodesCall {
    type Output = Result<Vec<NodeRecord>, CollectError>;
    fn run(self, store: &mut Store<GuestState>) -> GuestFuture<'_, Self::Output> {
        Box::pin(async move {
            let instance = self.0.instantiate_async(&mut *store).await?;
            instance.call_collect_nodes(&mut *store, self.1).await
        })
    }
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Self> {
        let (engine, allocator) = build_engine(&options)?;

        let mut linker = Linker::new(&engine);
        // NOTE: this links every WASI 0.2 interface, sockets included, so a
        // collector that merely links `std::net` still loads. The WasiCtx of
        // every store denies each socket and name lookup.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
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
        let inner = RuntimeInner { engine, linker, node_linker, cache: options.cache, allocator, _ticker: ticker };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Returns the instance allocator in use.
    pub fn allocator(&self) -> AllocatorKind {
        self.inner.allocator
    }

    /// Compiles (or loads from cache) and type-checks a component, then calls
    /// its `info` export with no grants. `limits` bound that call.
    pub async fn load(
        &self,
        bytes: Arc<[u8]>,
        source: CollectorSource,
        limits: GuestLimits,
    ) -> anyhow::Result<LoadedCollector> {
        let started = Instant::now();
        let sha256 = sha256_hex(&bytes);
        let (component, cache) = self.compile(bytes).await?;
        let summary = summarize_component(&self.inner.engine, &component);
        check_world(&summary)?;
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component does not fit the collector world of this agent")?;
        let pre = CollectorPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export the collector world")?;

        let label = source.to_string();
        let info = self
            .call_guest(InfoCall(pre.clone()), &FilesystemGrants::default(), &label, limits, None)
            .await
            .map_err(|failure| anyhow::anyhow!("`info` failed: {failure}"))?;
        Ok(LoadedCollector { info, source, cache, sha256, load_duration: started.elapsed(), summary, pre })
    }

    /// Compiles and checks the `nodes` collector, then calls its `info`.
    pub async fn load_node_collector(&self, bytes: &'static [u8]) -> anyhow::Result<LoadedNodeCollector> {
        let (component, _) = self.compile(Arc::from(bytes)).await.context("failed to compile the nodes component")?;
        let instance_pre = self
            .inner
            .node_linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component does not fit the node-collector world of this agent")?;
        let pre = NodeCollectorPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export the node-collector world")?;
        let info = self
            .call_guest(NodeInfoCall(pre.clone()), &FilesystemGrants::default(), "nodes", GuestLimits::default(), None)
            .await
            .map_err(|failure| anyhow::anyhow!("`info` failed: {failure}"))?;
        Ok(LoadedNodeCollector { info, pre })
    }

    /// Compiles a component, or loads it from the cache, on a blocking
    /// thread: Cranelift takes tens of milliseconds per component.
    async fn compile(&self, bytes: Arc<[u8]>) -> anyhow::Result<(Component, CacheUse)> {
        check_component_header(&bytes)?;
        let engine = self.inner.engine.clone();
        let cache = self.inner.cache.clone();
        tokio::task::spawn_blocking(move || cache.load(&engine, &bytes))
            .await
            .context("the compiler thread panicked")?
            .context("failed to compile the component")
    }

    /// Reads a component's world, WIT version, imports and exports without
    /// running it.
    pub async fn summarize(&self, bytes: Arc<[u8]>) -> anyhow::Result<ComponentSummary> {
        let (component, _) = self.compile(bytes).await?;
        Ok(summarize_component(&self.inner.engine, &component))
    }

    /// Runs the `nodes` collector over the given Node objects.
    pub async fn collect_nodes(
        &self,
        collector: &LoadedNodeCollector,
        nodes: Vec<NodeObject>,
        limits: GuestLimits,
    ) -> Result<Vec<NodeRecord>, GuestFailure> {
        let options = CollectOptions { include_identifiers: false };
        let call = CollectNodesCall(collector.pre.clone(), options);
        let records = self
            .call_guest(call, &FilesystemGrants::default(), "nodes", limits, Some(nodes))
            .await?
            .map_err(|error| GuestFailure::error(error.to_string()))?;
        check_records(records.len(), &limits)?;
        let size: usize = records.iter().map(record_size).sum();
        check_output(size, &limits)?;
        Ok(records)
    }

    /// Runs one collector's `collect` in a fresh store with the given grants
    /// and limits.
    pub async fn collect(
        &self,
        collector: &LoadedCollector,
        grants: &FilesystemGrants,
        limits: GuestLimits,
        options: CollectOptions,
    ) -> CollectorRun {
        let name = collector.info.name.clone();
        let started = Instant::now();
        let call = CollectCall(collector.pre.clone(), options);
        // NOTE: the records and output caps apply after wasmtime has lifted
        // the result into host memory. Until then only the guest's memory
        // limit bounds it, and the lifted form can be a few times larger.
        let result = match self.call_guest(call, grants, &name, limits, None).await {
            Ok(Ok(report)) => check_records(bindings::record_count(&report), &limits).and_then(|()| {
                let partial = Partial::from(report);
                let size = serde_json::to_vec(&partial).map_or(usize::MAX, |json| json.len());
                check_output(size, &limits).map(|()| partial)
            }),
            Ok(Err(error)) => Err(GuestFailure::error(error.to_string())),
            Err(failure) => Err(failure),
        };

        let duration = started.elapsed();
        match &result {
            Ok(_) => {
                tracing::debug!(collector = %name, duration_ms = duration.as_secs_f64() * 1e3, "collector finished");
                crate::logging::repeats().clear(&format!("collector `{name}` failed"));
            }
            // A collector that fails every round is logged once per window.
            Err(failure) => crate::logging::repeats().warn(&format!("collector `{name}` failed"), &failure.message),
        }
        CollectorRun {
            name,
            version: Some(collector.info.version.clone()),
            source: collector.source.clone(),
            sha256: collector.plugin_sha256(),
            duration,
            result,
        }
    }

    /// Wraps every guest call: a fresh store with limits, deadline and
    /// grants, and a wall-clock timeout. The store is dropped on return, so
    /// no instance outlives its call.
    ///
    /// The guest runs on a blocking thread of its own, with WASI's file
    /// operations performed on that thread: handing each of the thousands of
    /// sysfs reads of a large machine to another thread made a collection
    /// several times slower. The caller waits with a timeout, so a guest
    /// stuck in a read that never returns costs that thread, not the
    /// collection. Once cancelled, the guest traps at its next epoch tick.
    async fn call_guest<C: GuestCall + 'static>(
        &self,
        call: C,
        grants: &FilesystemGrants,
        collector: &str,
        limits: GuestLimits,
        cluster_nodes: Option<Vec<NodeObject>>,
    ) -> Result<C::Output, GuestFailure> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut store = self
            .new_store(grants, collector, limits, cluster_nodes, stderr.clone(), Arc::clone(&cancelled))
            .map_err(|error| GuestFailure::error(format!("{error:#}")))?;

        let _cancel = CancelOnDrop(cancelled);
        let handle = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || handle.block_on(call.run(&mut store)));
        let timeout = Duration::from_millis(limits.timeout_ms);
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(Ok(output))) => Ok(output),
            Ok(Ok(Err(error))) => Err(classify(&error, &stderr, &limits)),
            Ok(Err(error)) => Err(GuestFailure::error(format!("the thread running the collector failed: {error}"))),
            Err(_) => Err(GuestFailure::hit(
                CollectorStatus::Timeout,
                "timeout",
                format!(
                    "wall-clock timeout of {} ms exceeded, most often because the collector was blocked \
                         in a host call such as a read that never returns",
                    limits.timeout_ms
                ),
            )),
        }
    }

    fn new_store(
        &self,
        grants: &FilesystemGrants,
        collector: &str,
        limits: GuestLimits,
        cluster_nodes: Option<Vec<NodeObject>>,
        stderr: MemoryOutputPipe,
        cancelled: Arc<AtomicBool>,
    ) -> anyhow::Result<Store<GuestState>> {
        // No environment variables, arguments, stdin or clocks beyond the
        // WASI defaults, and no network: a collector reads files only.
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .allow_blocking_current_thread(true)
            .stderr(stderr);
        for preopen in &grants.preopens {
            wasi.preopened_dir(&preopen.host, &preopen.guest, FsPerms::ReadOnly)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("failed to grant {} as {}", preopen.host.display(), preopen.guest))?;
        }

        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_handles);
        let state = GuestState {
            wasi: wasi.build(),
            table,
            limiter: limits::GuestLimiter::new(limits),
            collector: collector.to_owned(),
            log_records: 0,
            max_log_records: limits.log_records,
            cluster_nodes,
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.limiter);

        // Each epoch tick that passes while guest code runs counts against
        // the deadline, so time spent waiting in host calls is not charged.
        // A call the caller gave up on traps at its next tick.
        let budget = deadline_ticks(limits.deadline_ms);
        let mut ticks = 0;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks += 1;
            if ticks >= budget || cancelled.load(Ordering::Relaxed) {
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        Ok(store)
    }
}

/// Builds the engine, with the pooling allocator when requested and the
/// machine grants its address-space reservation.
fn build_engine(options: &RuntimeOptions) -> anyhow::Result<(Engine, AllocatorKind)> {
    if options.pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_COMPONENT_INSTANCES)
            .total_core_instances(POOL_CORE_INSTANCES)
            .total_memories(POOL_MEMORIES)
            .total_tables(POOL_TABLES)
            .total_stacks(POOL_COMPONENT_INSTANCES)
            .max_memory_size(options.max_memory_bytes)
            .table_elements(options.max_table_elements)
            .max_core_instances_per_component(limits::MAX_CORE_INSTANCES as u32)
            .max_memories_per_component(limits::MAX_MEMORIES as u32)
            .max_tables_per_component(limits::MAX_TABLES as u32)
            .max_memories_per_module(4)
            .max_tables_per_module(4)
            // Keep the first MiB of a freed memory slot mapped, so the next
            // instance's stack and data do not fault in fresh pages.
            .linear_memory_keep_resident(1 << 20);
        let mut config = engine_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&config) {
            Ok(engine) => return Ok((engine, AllocatorKind::Pooling)),
            Err(error) => tracing::warn!(
                error = %format!("{error:#}"),
                "the pooling allocator is not available on this machine; using on-demand allocation"
            ),
        }
    }
    let engine =
        Engine::new(&engine_config()).map_err(anyhow::Error::from).context("failed to create the wasmtime engine")?;
    Ok((engine, AllocatorKind::OnDemand))
}

fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(MAX_WASM_STACK);
    // Collectors spend their time in WASI file reads, not in their own
    // code. Cranelift's fastest compile settings therefore halve a cold
    // start (404 ms to 222 ms for the three built-ins on a 2-vCPU EPYC), and
    // a warm collection stays within noise (docs/BENCHMARKS.md).
    // NOTE: a plugin that computes heavily runs slower than with the
    // optimising defaults; none of the shipped collectors does.
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    config.cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
    config
}

fn deadline_ticks(deadline_ms: u64) -> u64 {
    let tick_ms = EPOCH_TICK.as_millis() as u64;
    deadline_ms.div_ceil(tick_ms).max(1)
}

fn check_records(count: usize, limits: &GuestLimits) -> Result<(), GuestFailure> {
    if count > limits.max_records {
        return Err(GuestFailure::limit(LimitExceeded {
            resource: "records",
            requested: count,
            limit: limits.max_records,
        }));
    }
    Ok(())
}

fn check_output(size: usize, limits: &GuestLimits) -> Result<(), GuestFailure> {
    if size > limits.output_bytes {
        return Err(GuestFailure::limit(LimitExceeded {
            resource: "output",
            requested: size,
            limit: limits.output_bytes,
        }));
    }
    Ok(())
}

/// Turns a failed guest call into a report status and a one-line reason.
fn classify(error: &wasmtime::Error, stderr: &MemoryOutputPipe, limits: &GuestLimits) -> GuestFailure {
    tracing::debug!(error = ?error, "guest call failed");
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return GuestFailure::limit(limit.clone());
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return GuestFailure::hit(
            CollectorStatus::LimitExceeded,
            "handles",
            format!("handles limit exceeded: more than {} open files, directories or streams", limits.max_handles),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return GuestFailure::hit(
                CollectorStatus::Timeout,
                "deadline",
                format!("run-time deadline of {} ms exceeded", limits.deadline_ms),
            );
        }
        Some(Trap::StackOverflow) => {
            return GuestFailure::hit(
                CollectorStatus::LimitExceeded,
                "stack",
                format!("stack limit exceeded: the call stack grew past {} KiB", MAX_WASM_STACK >> 10),
            );
        }
        _ => {}
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
    GuestFailure::error(message)
}

/// Rejects a file that is not a component with a message that names what it
/// is, before wasmtime's parser reports the first byte it did not expect.
fn check_component_header(bytes: &[u8]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    // The version and layer fields of a core module (version 1, layer 0).
    const CORE_MODULE: &[u8] = &[1, 0, 0, 0];
    anyhow::ensure!(
        bytes.starts_with(MAGIC),
        "the file is not WebAssembly (it does not start with \\0asm); build the collector with \
         `cargo build --release --target wasm32-wasip2`"
    );
    anyhow::ensure!(
        bytes.get(4..8) != Some(CORE_MODULE),
        "the file is a core WebAssembly module, not a component; build the collector for wasm32-wasip2, \
         which produces a component, or wrap the module with `wasm-tools component new`"
    );
    Ok(())
}

/// Returns the `aiod:hw-agent` version an import name carries
/// (`aiod:hw-agent/types@0.2.0` gives `0.2.0`), `unversioned` for an
/// unversioned one, or `None` for an import of another package.
fn imported_wit_version(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(WIT_PACKAGE)?;
    Some(rest.rsplit_once('@').map_or("unversioned", |(_, version)| version))
}

/// Reads a component's imports and exports from its type.
fn summarize_component(engine: &Engine, component: &Component) -> ComponentSummary {
    let component_type = component.component_type();
    let imports: Vec<String> = component_type.imports(engine).map(|(name, _)| name.to_owned()).collect();
    let exports: Vec<String> = component_type.exports(engine).map(|(name, _)| name.to_owned()).collect();
    let wit_version = imports.iter().find_map(|name| imported_wit_version(name)).map(str::to_owned);
    let world = if exports.iter().any(|name| name == "collect-nodes") {
        Some("node-collector")
    } else if exports.iter().any(|name| name == "collect") {
        Some("collector")
    } else {
        None
    };
    ComponentSummary { world, wit_version, imports, exports }
}

/// Rejects a component built against another version of the WIT package,
/// naming both versions, before instantiation fails with a cryptic
/// "import not found".
fn check_world(summary: &ComponentSummary) -> anyhow::Result<()> {
    for name in &summary.imports {
        anyhow::ensure!(
            !name.starts_with(CLUSTER_INTERFACE),
            "the component imports {name}, which only the built-in `nodes` collector is granted; \
             a collector plugin reads the node it runs on, not the cluster's Node objects"
        );
        let Some(version) = imported_wit_version(name) else { continue };
        anyhow::ensure!(
            version == WIT_VERSION,
            "the component imports {name}, built against {WIT_PACKAGE}@{version}, but this agent implements \
             {WIT_PACKAGE}@{WIT_VERSION}; rebuild the collector against this agent's wit/ directory"
        );
    }
    for required in ["info", "collect"] {
        anyhow::ensure!(
            summary.exports.iter().any(|name| name == required),
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

/// Largest plugin file read, in bytes. Components of the built-in
/// collectors are well under 1 MiB.
pub const PLUGIN_MAX_BYTES: u64 = 64 << 20;

/// Lists every entry of a plugin directory whose name ends in `.wasm`
/// (any case), sorted by name. Directories, FIFOs and dangling links are
/// listed too, so that [`read_plugin`] can report them instead of skipping
/// them without a word.
pub fn plugin_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read plugin directory {}; check --plugin-dir", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("wasm")))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads a plugin file: a regular file (or a link to one) of at most
/// [`PLUGIN_MAX_BYTES`], so a FIFO cannot hang the agent and a huge file
/// cannot exhaust its memory.
pub fn read_plugin(path: &Path) -> Result<Vec<u8>, String> {
    let metadata = std::fs::metadata(path).map_err(|error| format!("failed to read the plugin: {error}"))?;
    if !metadata.is_file() {
        return Err("the plugin is not a regular file; put the component's .wasm file here".to_owned());
    }
    if metadata.len() > PLUGIN_MAX_BYTES {
        return Err(format!(
            "the plugin has {} bytes, more than the {PLUGIN_MAX_BYTES} a collector component may have",
            metadata.len()
        ));
    }
    std::fs::read(path).map_err(|error| format!("failed to read the plugin: {error}"))
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
