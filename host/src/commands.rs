//! The agent's commands: collect, register and demo.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use secrecy::SecretString;
use serde_json::Value;

use crate::aiod::{AiodClient, AiodSettings, Registration, RetryPolicy, asset_body, machine_resource_identifier};
use crate::cli::{CollectCommand, ConfigError, DemoCommand, OutputFormat, RegisterCommand};
use crate::collection::{CollectSettings, Collection};
use crate::report::model::NodeReport;
use crate::report::{summary_line, summary_table};

/// How a command failed, which decides the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Runs one collection on a blocking thread: the wasmtime calls are
/// synchronous and must not stall the async runtime.
pub async fn collect_report(settings: CollectSettings) -> anyhow::Result<NodeReport> {
    tokio::task::spawn_blocking(move || {
        let collection = Collection::load(&settings)?;
        Ok(collection.collect())
    })
    .await
    .context("the collection thread panicked")?
}

pub async fn collect(command: CollectCommand) -> Result<(), CommandError> {
    let settings = command.collect.settings()?;
    let report = collect_report(settings).await?;
    let text = match command.format {
        OutputFormat::Json => serde_json::to_string_pretty(&report).context("failed to serialise the report")? + "\n",
        OutputFormat::Table => summary_table(&report),
    };
    write_stdout(&text)?;
    Ok(())
}

/// Writes to stdout. A closed pipe (`hw-agent collect | head`) is the
/// reader's choice, not an error; other write errors are reported.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("failed to write to standard output"),
    }
}

/// Collects this node and registers or updates its asset. `register` and
/// `demo` both go through here.
pub async fn register_node(
    collect: CollectSettings,
    aiod: AiodSettings,
    name: Option<String>,
) -> anyhow::Result<(Registration, NodeReport)> {
    let host_root = collect.host_root.clone();
    let report = collect_report(collect).await?;
    let resource_identifier = machine_resource_identifier(&host_root, &report)?;
    let name = name.or_else(|| report.node.hostname.clone()).unwrap_or_else(|| resource_identifier.clone());
    let body = asset_body(&report, &aiod.platform, &resource_identifier, &name)?;

    let client = AiodClient::connect(aiod).await?;
    let registration = client.register(&resource_identifier, &body).await?;
    Ok((registration, report))
}

pub async fn register(command: RegisterCommand) -> Result<(), CommandError> {
    let collect = command.collect.settings()?;
    let aiod = command.settings()?;
    let (registration, report) = register_node(collect, aiod, command.name.clone()).await?;
    let verb = if registration.created { "registered" } else { "updated" };
    eprintln!("{verb} computational asset: {}", summary_line(&report));
    write_stdout(&format!("{}\n", registration.identifier))?;
    Ok(())
}

/// Platform name the demo registers as a connector for.
const DEMO_PLATFORM: &str = "hw-agent-demo";

pub async fn demo(command: DemoCommand) -> Result<(), CommandError> {
    let collect = command.collect.settings()?;
    let state =
        tempfile::Builder::new().prefix("hw-agent-demo-").tempdir().context("failed to create a state directory")?;

    let agent_secret = random_secret();
    let admin_secret = random_secret();
    let clients = vec![
        aiod_mock::Client {
            id: "hw-agent-demo".to_owned(),
            secret: agent_secret.clone(),
            roles: vec![format!("platform_{DEMO_PLATFORM}")],
        },
        aiod_mock::Client {
            id: "platform-admin".to_owned(),
            secret: admin_secret.clone(),
            roles: vec!["create_platforms".to_owned()],
        },
    ];
    let mock = aiod_mock::start(aiod_mock::MockConfig {
        listen: "127.0.0.1:0".parse().context("invalid loopback address")?,
        state_dir: state.path().to_path_buf(),
        clients,
        token_lifetime: Duration::from_secs(300),
        auto_publish: false,
        platforms: Vec::new(),
        tls_names: Vec::new(),
        faults: aiod_mock::FaultConfig::default(),
    })
    .await?;

    let result = run_demo(&mock, collect, state.path(), agent_secret, admin_secret).await;
    mock.shutdown().await;
    result.map_err(CommandError::from)
}

async fn run_demo(
    mock: &aiod_mock::RunningMock,
    collect: CollectSettings,
    state_dir: &Path,
    agent_secret: String,
    admin_secret: String,
) -> anyhow::Result<()> {
    let settings = |client_id: &str, secret: String| AiodSettings {
        api_url: mock.base_url(),
        token_url: mock.token_url(),
        ca_cert: Some(state_dir.join(aiod_mock::tls::CA_FILE)),
        client_id: client_id.to_owned(),
        client_secret: SecretString::from(secret),
        platform: DEMO_PLATFORM.to_owned(),
        request_timeout: Duration::from_secs(30),
        retry: RetryPolicy::default(),
    };

    // On the real AIoD an administrator registers the platform once.
    let admin = AiodClient::connect(settings("platform-admin", admin_secret)).await?;
    admin.create_platform(DEMO_PLATFORM).await?;

    let (first, _) = register_node(collect.clone(), settings("hw-agent-demo", agent_secret.clone()), None).await?;
    let (second, report) = register_node(collect, settings("hw-agent-demo", agent_secret.clone()), None).await?;
    anyhow::ensure!(
        first.identifier == second.identifier && !second.created,
        "the second registration created {} instead of updating {}",
        second.identifier,
        first.identifier
    );

    let reader = AiodClient::connect(settings("hw-agent-demo", agent_secret)).await?;
    let asset = reader.get(&first.identifier).await?;
    let stored: NodeReport = asset["description"]["plain"]
        .as_str()
        .context("the asset read back has no description.plain")
        .and_then(|plain| serde_json::from_str(plain).context("description.plain is not a node report"))?;
    anyhow::ensure!(stored == report, "the asset read back does not carry the latest report");

    println!(
        "Registered this machine on an embedded AIoD mock at {} (TLS, CA {}).",
        mock.base_url(),
        mock.ca_path.display()
    );
    println!("identifier:  {}", first.identifier);
    println!("platform:    {} / {}", asset_str(&asset, "platform"), asset_str(&asset, "platform_resource_identifier"));
    println!("name:        {}", asset_str(&asset, "name"));
    println!("status:      {}", asset["aiod_entry"]["status"].as_str().unwrap_or("unknown"));
    println!("keywords:    {}", asset["keyword"].as_array().map(|words| join_strings(words)).unwrap_or_default());
    println!("re-register: updated the same asset (PUT), no duplicate");
    println!();
    print!("{}", summary_table(&stored));
    Ok(())
}

fn asset_str<'a>(asset: &'a Value, key: &str) -> &'a str {
    asset[key].as_str().unwrap_or("unknown")
}

fn join_strings(values: &[Value]) -> String {
    values.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
}

fn random_secret() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}
