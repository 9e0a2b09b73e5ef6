//! One node collection: load the built-in and plugin collectors, decide what
//! the policy lets each of them read, run them against the host root, and
//! merge their results into a node report.
//!
//! The plugin directory is read again before every collection, so adding,
//! replacing or removing a `.wasm` file takes effect at the next collection
//! without a restart. A file is compiled again only when its SHA-256 changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument as _;

use crate::policy::{Grant, NODES_COLLECTOR, Policy};
use crate::report::merge;
use crate::report::model::{CollectorStatus, NodeReport};
use crate::runtime::{
    self, BUILT_IN, CollectOptions, CollectorRun, CollectorSource, ComponentCache, GuestFailure, LoadedCollector,
    Runtime, RuntimeOptions,
};
use crate::sources::HostRoot;

/// Everything a collection needs, validated by the CLI.
#[derive(Debug, Clone)]
pub struct CollectSettings {
    pub host_root: PathBuf,
    pub plugin_dir: Option<PathBuf>,
    /// `None` disables the compiled-component cache.
    pub cache_dir: Option<PathBuf>,
    pub policy: Policy,
    /// Use wasmtime's pooling allocator where the machine allows it. It
    /// makes each instantiation faster but keeps part of every used slot
    /// resident (about 8 MiB more RSS in `hw-agent run`), so it is opt-in.
    pub pooling: bool,
    pub include_identifiers: bool,
}

/// A collector with the policy's decision: ready to run with its grant,
/// denied, or not loadable.
#[derive(Debug, Clone)]
pub enum Slot {
    Ready {
        collector: LoadedCollector,
        grant: Grant,
    },
    Denied {
        collector: LoadedCollector,
        reason: String,
    },
    Failed {
        name: String,
        source: CollectorSource,
        sha256: Option<String>,
        duration: Duration,
        message: String,
    },
    /// A plugin the policy rejects before running any of its code: an
    /// unpinned digest under `require_sha256`, or a reserved name.
    Rejected {
        name: String,
        source: CollectorSource,
        sha256: String,
        reason: String,
    },
}

impl Slot {
    pub fn name(&self) -> &str {
        match self {
            Slot::Ready { collector, .. } | Slot::Denied { collector, .. } => &collector.info.name,
            Slot::Failed { name, .. } | Slot::Rejected { name, .. } => name,
        }
    }

    /// Returns the SHA-256 of a plugin's file; `None` for a built-in.
    pub fn plugin_sha256(&self) -> Option<String> {
        match self {
            Slot::Ready { collector, .. } | Slot::Denied { collector, .. } => collector.plugin_sha256(),
            Slot::Failed { source: CollectorSource::Plugin(_), sha256, .. } => sha256.clone(),
            Slot::Failed { .. } => None,
            Slot::Rejected { sha256, .. } => Some(sha256.clone()),
        }
    }

    pub fn source(&self) -> &CollectorSource {
        match self {
            Slot::Ready { collector, .. } | Slot::Denied { collector, .. } => &collector.source,
            Slot::Failed { source, .. } | Slot::Rejected { source, .. } => source,
        }
    }

    /// Returns the outcome reported for a collector that does not run, or
    /// `None` for a ready one.
    pub fn skipped_run(&self) -> Option<CollectorRun> {
        let (status, message, version, duration) = match self {
            Slot::Ready { .. } => return None,
            Slot::Denied { collector, reason } => {
                (CollectorStatus::Denied, reason.clone(), Some(collector.info.version.clone()), Duration::ZERO)
            }
            Slot::Failed { message, duration, .. } => (CollectorStatus::Error, message.clone(), None, *duration),
            Slot::Rejected { reason, .. } => (CollectorStatus::Denied, reason.clone(), None, Duration::ZERO),
        };
        Some(CollectorRun {
            name: self.name().to_owned(),
            version,
            source: self.source().clone(),
            sha256: self.plugin_sha256(),
            duration,
            result: Err(GuestFailure { status, message, limit: None }),
        })
    }
}

/// A plugin file as last loaded.
#[derive(Debug)]
struct PluginFile {
    /// Size, modification time and inode when it was read; an unchanged
    /// stamp skips reading and hashing the file again.
    stamp: Option<(u64, std::time::SystemTime, u64)>,
    sha256: String,
    slot: Slot,
}

fn file_stamp(path: &Path) -> Option<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?, metadata.ino()))
}

/// Loaded collectors, ready to collect as often as needed.
#[derive(Debug)]
pub struct Collection {
    runtime: Runtime,
    root: HostRoot,
    policy: Policy,
    built_ins: Vec<Slot>,
    plugin_dir: Option<PathBuf>,
    plugins: tokio::sync::Mutex<BTreeMap<PathBuf, PluginFile>>,
    include_identifiers: bool,
}

impl Collection {
    /// Starts the runtime and loads the built-in collectors and every
    /// `*.wasm` in the plugin directory. A plugin that fails to load, or that
    /// the policy denies, becomes an entry in each report; it does not stop
    /// the others. A plugin that the policy lets run and whose `info` name
    /// equals a built-in's replaces that built-in.
    pub async fn load(settings: &CollectSettings) -> anyhow::Result<Self> {
        crate::sources::remove_stale_staging();
        let root = HostRoot::new(&settings.host_root)?;
        let runtime = Runtime::new(RuntimeOptions {
            cache: ComponentCache::new(settings.cache_dir.clone()),
            pooling: settings.pooling,
            max_memory_bytes: settings.policy.max_memory_bytes(),
            max_table_elements: settings.policy.max_table_elements(),
        })?;

        let mut built_ins = Vec::new();
        for (name, bytes) in BUILT_IN {
            let slot = load_slot(&runtime, &settings.policy, Arc::from(*bytes), CollectorSource::BuiltIn, name).await;
            built_ins.push(slot);
        }
        let collection = Self {
            runtime,
            root,
            policy: settings.policy.clone(),
            built_ins,
            plugin_dir: settings.plugin_dir.clone(),
            plugins: tokio::sync::Mutex::new(BTreeMap::new()),
            include_identifiers: settings.include_identifiers,
        };
        collection.refresh_plugins().await?;

        let slots = collection.slots().await;
        tracing::info!(
            allocator = %collection.runtime.allocator(),
            policy = %collection.policy.origin(),
            collectors = %slots.iter().map(|slot| slot.name()).collect::<Vec<_>>().join(","),
            ready = slots.iter().filter(|slot| matches!(slot, Slot::Ready { .. })).count(),
            "collectors loaded"
        );
        Ok(collection)
    }

    /// Returns the runtime the collectors were loaded into; the `nodes` collector
    /// shares its engine and cache.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Returns the collectors of the next collection, in order: the built-ins
    /// that no plugin replaces, then the plugins by file name.
    pub async fn slots(&self) -> Vec<Slot> {
        let plugins = self.plugins.lock().await;
        let mut slots: Vec<Slot> = Vec::new();
        // Only a plugin that runs replaces a built-in: a denied impostor
        // named `cpu` must not remove the CPU facts.
        let plugin_names: Vec<&str> = plugins
            .values()
            .filter(|file| matches!(file.slot, Slot::Ready { .. }))
            .map(|file| file.slot.name())
            .collect();
        for slot in &self.built_ins {
            if plugin_names.contains(&slot.name()) {
                tracing::debug!(collector = %slot.name(), "a plugin replaces the built-in collector of the same name");
                continue;
            }
            slots.push(slot.clone());
        }
        let mut ready_plugins: Vec<&str> = Vec::new();
        for file in plugins.values() {
            // Only plugins that run can clash: a denied build of a name must
            // not hide the pinned build of the same name.
            if let Slot::Ready { collector, .. } = &file.slot {
                let name = collector.info.name.as_str();
                if ready_plugins.contains(&name) {
                    slots.push(Slot::Failed {
                        name: name.to_owned(),
                        source: file.slot.source().clone(),
                        sha256: Some(file.sha256.clone()),
                        duration: Duration::ZERO,
                        message: format!(
                            "another plugin already provides collector `{name}`; remove one of the two files"
                        ),
                    });
                    continue;
                }
                ready_plugins.push(name);
            }
            slots.push(file.slot.clone());
        }
        slots
    }

    /// Reads the plugin directory and loads what changed since the last
    /// read: new files, files whose SHA-256 differs, and removed files.
    pub async fn refresh_plugins(&self) -> anyhow::Result<()> {
        let Some(dir) = &self.plugin_dir else { return Ok(()) };
        let paths = runtime::plugin_files(dir)?;
        let mut plugins = self.plugins.lock().await;

        let removed: Vec<PathBuf> = plugins.keys().filter(|path| !paths.contains(path)).cloned().collect();
        for path in removed {
            plugins.remove(&path);
            tracing::info!(plugin = %path.display(), "plugin removed");
        }

        for path in paths {
            let stamp = file_stamp(&path);
            if stamp.is_some() && plugins.get(&path).is_some_and(|file| file.stamp == stamp) {
                continue;
            }
            let name = plugin_stem(&path);
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || runtime::read_plugin(&path)).await
            };
            let bytes = match read {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(message)) => {
                    let slot = failed(name, CollectorSource::Plugin(path.clone()), None, Duration::ZERO, message);
                    plugins.insert(path, PluginFile { stamp: None, sha256: String::new(), slot });
                    continue;
                }
                Err(error) => return Err(anyhow::anyhow!("the plugin reading thread failed: {error}")),
            };
            let sha256 = runtime::sha256_hex(&bytes);
            if let Some(file) = plugins.get_mut(&path)
                && file.sha256 == sha256
            {
                file.stamp = stamp;
                continue;
            }
            let change = if plugins.contains_key(&path) { "plugin replaced" } else { "plugin added" };
            let slot =
                load_slot(&self.runtime, &self.policy, Arc::from(bytes), CollectorSource::Plugin(path.clone()), &name)
                    .await;
            tracing::info!(plugin = %path.display(), collector = %slot.name(), sha256 = %sha256, "{change}");
            plugins.insert(path, PluginFile { stamp, sha256, slot });
        }
        Ok(())
    }

    /// Reads the plugin directory again, runs every collector the policy
    /// allows, each in its own store and task, and merges the results.
    pub async fn collect(&self) -> NodeReport {
        if let Err(error) = self.refresh_plugins().await {
            tracing::warn!(error = %format!("{error:#}"), "failed to read the plugin directory; keeping the plugins loaded before");
        }
        let options = CollectOptions { include_identifiers: self.include_identifiers };
        let slots = self.slots().await;

        // Start every ready collector first, so they run concurrently, and
        // keep the outcome of the others in place to preserve the order.
        let pending: Vec<Pending> = slots
            .iter()
            .map(|slot| match slot {
                Slot::Ready { collector, grant } => {
                    let (runtime, root) = (self.runtime.clone(), self.root.clone());
                    let (collector, grant) = (collector.clone(), grant.clone());
                    let span = tracing::info_span!("collector", name = %collector.info.name);
                    Pending::Running(tokio::spawn(run_one(runtime, root, collector, grant, options).instrument(span)))
                }
                other => Pending::Done(Box::new(other.skipped_run().expect("only a ready slot has no outcome yet"))),
            })
            .collect();

        let mut runs = Vec::with_capacity(slots.len());
        for (slot, pending) in slots.iter().zip(pending) {
            let run = match pending {
                Pending::Done(run) => *run,
                Pending::Running(task) => task.await.unwrap_or_else(|error| CollectorRun {
                    name: slot.name().to_owned(),
                    version: None,
                    source: slot.source().clone(),
                    sha256: slot.plugin_sha256(),
                    duration: Duration::ZERO,
                    result: Err(GuestFailure::error(format!("the task running this collector failed: {error}"))),
                }),
            };
            runs.push(run);
        }
        merge(runs, self.include_identifiers)
    }
}

/// A collector of one collection: running in its task, or with its outcome.
enum Pending {
    Running(tokio::task::JoinHandle<CollectorRun>),
    Done(Box<CollectorRun>),
}

/// Runs one collector: stages its grants on a blocking thread, then calls it.
pub async fn run_one(
    runtime: Runtime,
    root: HostRoot,
    collector: LoadedCollector,
    grant: Grant,
    options: CollectOptions,
) -> CollectorRun {
    let started = Instant::now();
    let read = grant.read.clone();
    let grants = tokio::task::spawn_blocking(move || root.grants(&read)).await;
    let grants = match grants {
        Ok(Ok(grants)) => grants,
        Ok(Err(error)) => return failed_run(&collector, started, format!("{error:#}")),
        Err(error) => return failed_run(&collector, started, format!("the staging thread failed: {error}")),
    };
    let mut run = runtime.collect(&collector, &grants, grant.limits, options).await;
    run.duration = started.elapsed();
    // The staging directory is removed here, after the store is gone.
    drop(grants);
    run
}

fn failed_run(collector: &LoadedCollector, started: Instant, message: String) -> CollectorRun {
    CollectorRun {
        name: collector.info.name.clone(),
        version: Some(collector.info.version.clone()),
        source: collector.source.clone(),
        sha256: collector.plugin_sha256(),
        duration: started.elapsed(),
        result: Err(GuestFailure::error(message)),
    }
}

/// Loads one component and applies the policy: its SHA-256 pin (plugins
/// only: built-ins are part of the agent) and its capabilities.
pub async fn load_slot(
    runtime: &Runtime,
    policy: &Policy,
    bytes: Arc<[u8]>,
    source: CollectorSource,
    fallback_name: &str,
) -> Slot {
    let started = Instant::now();
    let sha256 = runtime::sha256_hex(&bytes);
    let is_plugin = matches!(source, CollectorSource::Plugin(_));
    if is_plugin && let Err(reason) = policy.check_digest_allowed(&sha256) {
        tracing::warn!(plugin = %source, %reason, "plugin rejected by the policy before loading");
        return Slot::Rejected { name: fallback_name.to_owned(), source, sha256, reason: format!("not run: {reason}") };
    }
    let collector = match runtime.load(bytes, source.clone(), policy.limits()).await {
        Ok(collector) => collector,
        Err(error) => {
            let message = format!("failed to load: {error:#}");
            tracing::warn!(collector = %fallback_name, %source, error = %message, "failed to load collector");
            return failed(fallback_name.to_owned(), source, Some(sha256), started.elapsed(), message);
        }
    };
    let name = collector.info.name.clone();
    if is_plugin && name == NODES_COLLECTOR {
        let reason = format!(
            "not run: the collector name `{NODES_COLLECTOR}` is reserved for the built-in cluster collector and its \
             limits; rename the plugin's collector in its `info`"
        );
        tracing::warn!(plugin = %source, %reason, "plugin rejected by the policy");
        return Slot::Rejected { name, source, sha256, reason };
    }
    let pin = match &source {
        CollectorSource::Plugin(_) => policy.check_pin(&name, &sha256),
        CollectorSource::BuiltIn => Ok(()),
    };
    match pin.and_then(|()| policy.decide(&name, &collector.info.capabilities)) {
        Ok(grant) => Slot::Ready { collector, grant },
        Err(reason) => {
            let reason = format!("not run: {reason}");
            tracing::warn!(collector = %name, %source, %reason, "collector denied by the policy");
            Slot::Denied { collector, reason }
        }
    }
}

fn failed(name: String, source: CollectorSource, sha256: Option<String>, duration: Duration, message: String) -> Slot {
    Slot::Failed { name, source, sha256, duration, message }
}

/// Returns a plugin's file stem, its name until `info` returns the real one.
fn plugin_stem(path: &Path) -> String {
    path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default()
}
