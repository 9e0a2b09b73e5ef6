//! `hw-agent plugins`: list, inspect and try collector components, for
//! operators deciding what to grant and for plugin authors.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;

use crate::cli::{ConfigError, PluginsAction, PluginsCommand};
use crate::collection::{Collection, Slot, load_slot, run_one};
use crate::commands::{CommandError, write_stdout};
use crate::policy::DEFAULT_POLICY;
use crate::report::model::CollectorStatus;
use crate::runtime::{
    Capability, CollectOptions, CollectorSource, ComponentCache, Runtime, RuntimeOptions, WIT_PACKAGE, WIT_VERSION,
    sha256_hex,
};
use crate::sources::HostRoot;

pub async fn plugins(command: PluginsCommand) -> Result<(), CommandError> {
    match command.action {
        PluginsAction::List(args) => {
            // Listing loads the collectors but never collects, so any
            // existing directory serves as the root.
            let mut settings = args.settings_without_root()?;
            settings.host_root = std::path::PathBuf::from("/");
            list(&settings).await
        }
        PluginsAction::Inspect { file, collect } => inspect(&file, &collect.settings_without_root()?).await,
        PluginsAction::Test { file, collect } => test(&file, &collect.settings()?).await,
        PluginsAction::Policy => {
            write_stdout(DEFAULT_POLICY)?;
            Ok(())
        }
    }
}

/// Prints every collector the next collection would consider, with its
/// capabilities and the policy's decision.
async fn list(settings: &crate::collection::CollectSettings) -> Result<(), CommandError> {
    let collection = Collection::load(settings).await?;
    let mut text = format!("policy: {}\n", collection.policy().origin());
    let _ = writeln!(text, "allocator: {}", collection.runtime().allocator());
    for slot in collection.slots().await {
        let (status, detail) = match &slot {
            Slot::Ready { grant, .. } => ("ready", format!("reads {}", list_or_none(&grant.read))),
            Slot::Denied { reason, .. } => ("denied", reason.clone()),
            Slot::Failed { message, .. } => ("failed", message.clone()),
            Slot::Rejected { reason, .. } => ("denied", reason.clone()),
        };
        let (version, sha256, capabilities) = match &slot {
            Slot::Ready { collector, .. } | Slot::Denied { collector, .. } => (
                collector.info.version.clone(),
                collector.sha256.clone(),
                describe_capabilities(&collector.info.capabilities),
            ),
            Slot::Failed { sha256, .. } => ("-".to_owned(), sha256.clone().unwrap_or_default(), "-".to_owned()),
            Slot::Rejected { sha256, .. } => ("-".to_owned(), sha256.clone(), "-".to_owned()),
        };
        let _ = writeln!(text, "\n{} {version} ({})", slot.name(), slot.source());
        let _ = writeln!(text, "  status:       {status}: {detail}");
        let _ = writeln!(text, "  requests:     {capabilities}");
        let _ = writeln!(text, "  sha256:       {}", if sha256.is_empty() { "-" } else { &sha256 });
    }
    write_stdout(&text)?;
    Ok(())
}

/// Prints what a component is and what the policy would let it do, without
/// running `collect`.
async fn inspect(file: &Path, settings: &crate::collection::CollectSettings) -> Result<(), CommandError> {
    let bytes = read_component(file)?;
    let runtime = runtime_for(settings)?;
    let mut text = format!("file:          {}\n", file.display());
    let _ = writeln!(text, "size:          {} bytes", bytes.len());
    let _ = writeln!(text, "sha256:        {}", sha256_hex(&bytes));
    let slot = load_slot(
        &runtime,
        &settings.policy,
        Arc::clone(&bytes),
        CollectorSource::Plugin(file.to_path_buf()),
        &stem(file),
    )
    .await;
    // A loaded collector carries its summary; only a file that did not load
    // is read again, to say what it is.
    let summary = match &slot {
        Slot::Ready { collector, .. } | Slot::Denied { collector, .. } => collector.summary.clone(),
        Slot::Failed { .. } | Slot::Rejected { .. } => runtime.summarize(bytes).await.map_err(|error| {
            CommandError::Failed(error.context(format!("{} is not a WebAssembly component", file.display())))
        })?,
    };
    let version = summary.wit_version.clone().unwrap_or_else(|| "none".to_owned());
    let world = summary.world.unwrap_or("neither collector nor node-collector");
    let _ = writeln!(text, "world:         {WIT_PACKAGE}/{world}@{version}");
    let _ = writeln!(text, "wit version:   {version} (this agent implements {WIT_VERSION})");
    let _ = writeln!(text, "imports:       {}", summary.imports.join(", "));
    let _ = writeln!(text, "exports:       {}", summary.exports.join(", "));

    let failure = match &slot {
        Slot::Ready { collector, grant } => {
            write_info(&mut text, collector);
            let _ = writeln!(
                text,
                "policy:        granted by {}; reads {}",
                settings.policy.origin(),
                list_or_none(&grant.read)
            );
            None
        }
        Slot::Denied { collector, reason } => {
            write_info(&mut text, collector);
            let _ = writeln!(text, "policy:        denied: {reason}");
            None
        }
        Slot::Failed { message, .. } => Some(message.clone()),
        Slot::Rejected { reason, .. } => {
            let _ = writeln!(text, "policy:        denied: {reason}");
            None
        }
    };
    if let Some(message) = &failure {
        let _ = writeln!(text, "load:          {message}");
    }
    write_stdout(&text)?;
    match failure {
        Some(message) => Err(CommandError::Failed(anyhow::anyhow!("{}: {message}", file.display()))),
        None => Ok(()),
    }
}

/// Runs one component against the host root, as a collection would, and
/// prints its outcome and records as JSON. Exits non-zero unless it
/// succeeded, so plugin tests can run it in CI.
async fn test(file: &Path, settings: &crate::collection::CollectSettings) -> Result<(), CommandError> {
    let bytes = read_component(file)?;
    let runtime = runtime_for(settings)?;
    let root = HostRoot::new(&settings.host_root)?;
    let sha256 = sha256_hex(&bytes);
    let source = CollectorSource::Plugin(file.to_path_buf());
    let slot = load_slot(&runtime, &settings.policy, bytes, source, &stem(file)).await;

    let (run, load_ms, cache) = match slot {
        Slot::Ready { collector, grant } => {
            let load_ms = collector.load_duration.as_secs_f64() * 1e3;
            let cache = format!("{:?}", collector.cache).to_lowercase();
            let options = CollectOptions { include_identifiers: settings.include_identifiers };
            (run_one(runtime, root, collector, grant, options).await, Some(load_ms), Some(cache))
        }
        other => (other.skipped_run().context("a collector that is not ready has an outcome")?, None, None),
    };

    let (status, error, records) = match &run.result {
        Ok(partial) => (CollectorStatus::Ok, None, Some(records_json(partial)?)),
        Err(failure) => (failure.status, Some(failure.message.clone()), None),
    };
    let document = json!({
        "name": run.name,
        "version": run.version,
        "source": run.source.to_string(),
        "sha256": sha256,
        "status": status,
        "error": error,
        "load_ms": load_ms,
        "cache": cache,
        "duration_ms": run.duration.as_secs_f64() * 1e3,
        "records": records,
    });
    let text = serde_json::to_string_pretty(&document).context("failed to serialise the outcome")? + "\n";
    write_stdout(&text)?;
    match error {
        Some(message) => Err(CommandError::Failed(anyhow::anyhow!(
            "collector `{}` {}: {message}",
            run.name,
            serde_json::to_value(status).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

/// Renders a result with its attributes as one JSON object, as the node
/// report shows them, rather than as a list of pairs.
fn records_json(partial: &crate::report::Partial) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(partial).context("failed to serialise the records")?;
    let attributes: serde_json::Map<String, serde_json::Value> =
        partial.attributes.iter().map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone()))).collect();
    value["attributes"] = serde_json::Value::Object(attributes);
    Ok(value)
}

fn write_info(text: &mut String, collector: &crate::runtime::LoadedCollector) {
    let _ = writeln!(text, "name:          {}", collector.info.name);
    let _ = writeln!(text, "version:       {}", collector.info.version);
    let _ = writeln!(text, "description:   {}", collector.info.description);
    let _ = writeln!(text, "requests:      {}", describe_capabilities(&collector.info.capabilities));
}

fn runtime_for(settings: &crate::collection::CollectSettings) -> Result<Runtime, CommandError> {
    Ok(Runtime::new(RuntimeOptions {
        cache: ComponentCache::new(settings.cache_dir.clone()),
        pooling: settings.pooling,
        max_memory_bytes: settings.policy.max_memory_bytes(),
        max_table_elements: settings.policy.max_table_elements(),
    })?)
}

fn read_component(file: &Path) -> Result<Arc<[u8]>, CommandError> {
    let bytes = crate::runtime::read_plugin(file)
        .map_err(|error| ConfigError(format!("{}: {error}; pass a .wasm component", file.display())))?;
    Ok(Arc::from(bytes))
}

fn stem(file: &Path) -> String {
    file.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Renders capabilities as `read /sys, node list`.
pub fn describe_capabilities(capabilities: &[Capability]) -> String {
    let parts: Vec<String> = capabilities
        .iter()
        .map(|capability| match capability {
            Capability::ReadPath(path) => format!("read {path}"),
            Capability::NodeList => "node list".to_owned(),
            Capability::Nvml => "NVML".to_owned(),
        })
        .collect();
    list_or_none(&parts)
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "nothing".to_owned() } else { items.join(", ") }
}
