//! One node collection: load the built-in and plugin collectors, run them
//! against the host root, and merge their results into a node report.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::report::merge;
use crate::report::model::{CollectorStatus, NodeReport};
use crate::runtime::{
    self, BUILT_IN, CollectOptions, CollectorRun, CollectorSource, ComponentCache, GuestFailure, GuestLimits,
    LoadedCollector, Runtime,
};
use crate::sources::HostRoot;

/// Everything a collection needs, validated by the CLI.
#[derive(Debug, Clone)]
pub struct CollectSettings {
    pub host_root: PathBuf,
    pub plugin_dir: Option<PathBuf>,
    /// `None` disables the compiled-component cache.
    pub cache_dir: Option<PathBuf>,
    pub limits: GuestLimits,
    pub include_identifiers: bool,
}

/// Loaded collectors, ready to collect as often as needed.
#[derive(Debug)]
pub struct Collection {
    runtime: Runtime,
    root: HostRoot,
    collectors: Vec<LoadedCollector>,
    /// Collectors that could not be loaded, reported with every collection.
    load_failures: Vec<CollectorRun>,
    include_identifiers: bool,
}

impl Collection {
    /// Loads the built-in collectors and every `*.wasm` in the plugin
    /// directory. A plugin that fails to load becomes an error entry in each
    /// report; it does not stop the others. A plugin whose `info` name equals
    /// a built-in's replaces that built-in.
    pub fn load(settings: &CollectSettings) -> anyhow::Result<Self> {
        crate::sources::remove_stale_staging();
        let root = HostRoot::new(&settings.host_root)?;
        let runtime = Runtime::new(settings.limits, ComponentCache::new(settings.cache_dir.clone()))?;

        let mut collectors: Vec<LoadedCollector> = Vec::new();
        let mut load_failures = Vec::new();
        for (name, bytes) in BUILT_IN {
            match load_one(&runtime, bytes, CollectorSource::BuiltIn, &root) {
                Ok(collector) => collectors.push(collector),
                Err(failure) => load_failures.push(failure.named((*name).to_owned())),
            }
        }

        if let Some(dir) = &settings.plugin_dir {
            for path in runtime::plugin_files(dir)? {
                let name = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        load_failures
                            .push(LoadFailure::new(&path, format!("failed to read the plugin: {error}")).named(name));
                        continue;
                    }
                };
                match load_one(&runtime, &bytes, CollectorSource::Plugin(path.clone()), &root) {
                    Ok(plugin) => {
                        if let Some(position) = collectors.iter().position(|known| known.info.name == plugin.info.name)
                        {
                            tracing::info!(collector = %plugin.info.name, plugin = %path.display(), "plugin replaces the collector of the same name");
                            collectors.remove(position);
                        }
                        collectors.push(plugin);
                    }
                    Err(failure) => load_failures.push(failure.named(name)),
                }
            }
        }

        tracing::info!(
            loaded = collectors.len(),
            failed = load_failures.len(),
            collectors = %collectors.iter().map(|collector| collector.info.name.as_str()).collect::<Vec<_>>().join(","),
            "collectors loaded"
        );
        Ok(Self { runtime, root, collectors, load_failures, include_identifiers: settings.include_identifiers })
    }

    /// Returns the runtime the collectors were loaded into; the `nodes` collector
    /// shares its engine and cache.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn collectors(&self) -> &[LoadedCollector] {
        &self.collectors
    }

    /// Runs every collector once and merges the result.
    pub fn collect(&self) -> NodeReport {
        let options = CollectOptions { include_identifiers: self.include_identifiers };
        let mut runs = self.runtime.collect_all(&self.collectors, &self.root, options);
        runs.extend(self.load_failures.iter().map(CollectorRun::clone_failure));
        merge(runs, self.include_identifiers)
    }
}

/// A collector that could not be loaded, before its name is known.
struct LoadFailure {
    source: CollectorSource,
    duration: Duration,
    message: String,
}

impl LoadFailure {
    fn new(path: &std::path::Path, message: String) -> Self {
        Self { source: CollectorSource::Plugin(path.to_path_buf()), duration: Duration::ZERO, message }
    }

    fn named(self, name: String) -> CollectorRun {
        tracing::warn!(collector = %name, source = %self.source, error = %self.message, "failed to load collector");
        CollectorRun {
            name,
            version: None,
            source: self.source,
            duration: self.duration,
            result: Err(GuestFailure { status: CollectorStatus::Error, message: self.message }),
        }
    }
}

fn load_one(
    runtime: &Runtime,
    bytes: &[u8],
    source: CollectorSource,
    root: &HostRoot,
) -> Result<LoadedCollector, LoadFailure> {
    let started = Instant::now();
    runtime.load(bytes, source.clone(), root).map_err(|error| LoadFailure {
        source,
        duration: started.elapsed(),
        message: format!("failed to load: {error:#}"),
    })
}

impl CollectorRun {
    /// Copies a load failure so it can be reported with every collection.
    fn clone_failure(&self) -> CollectorRun {
        CollectorRun {
            name: self.name.clone(),
            version: self.version.clone(),
            source: self.source.clone(),
            duration: self.duration,
            result: match &self.result {
                Ok(_) => Err(GuestFailure { status: CollectorStatus::Error, message: "not run".to_owned() }),
                Err(failure) => Err(failure.clone()),
            },
        }
    }
}
