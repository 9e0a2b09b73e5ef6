//! The agent's commands: collect, register, demo, run, credentials and crd.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use secrecy::SecretString;
use serde_json::Value;

use crate::aiod::{AiodClient, AiodSettings, Registration, RetryPolicy, asset_body, machine_resource_identifier};
use crate::cli::{
    CollectCommand, ConfigError, CredentialsCommand, CredentialsVerb, DemoCommand, OutputFormat, RegisterCommand,
    RunCommand,
};
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

/// Loads the collectors and runs one collection.
pub async fn collect_report(settings: CollectSettings) -> anyhow::Result<NodeReport> {
    let collection = Collection::load(&settings).await?;
    Ok(collection.collect().await)
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
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
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
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{verb} computational asset: {}", summary_line(&report));
    }
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
        "Registered this machine on an embedded AIoD mock at {} (TLS with a temporary CA, removed on exit).",
        mock.base_url()
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

/// Prints the NodeHardwareReport CustomResourceDefinition.
pub fn crd() -> Result<(), CommandError> {
    write_stdout(&crate::cluster::crd::crd_yaml()?)?;
    Ok(())
}

/// `hw-agent run`: the DaemonSet pod, until SIGTERM or Ctrl-C.
pub async fn run(command: RunCommand) -> Result<(), CommandError> {
    let settings = command.settings()?;
    let connection = connect_cluster(settings.kube.kubeconfig.as_deref()).await?;
    if settings.aiod.is_some()
        && let Err(error) = crate::agent::handed_off_server_url(&settings.kube.api_server_url, &connection)
    {
        // Node reports do not need it, so this is not fatal: the leader
        // registers the cluster but hands off no credentials.
        tracing::error!(error = %format!("{error:#}"), "credentials will not be handed off");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %settings.node_name,
        identity = %settings.identity,
        namespace = %settings.kube.namespace,
        api_server = %connection.server_url,
        interval = %humanize(settings.interval),
        lease = %settings.lease_name,
        lease_duration = %humanize(settings.lease_duration),
        listen = %settings.listen.map(|address| address.to_string()).unwrap_or_else(|| "off".to_owned()),
        policy = %settings.collect.policy.origin(),
        plugin_dir = %settings.collect.plugin_dir.as_deref().map(|dir| dir.display().to_string()).unwrap_or_else(|| "none".to_owned()),
        aiod = settings.aiod.as_ref().map(|aiod| aiod.api_url.as_str()).unwrap_or("not configured"),
        sources = %crate::config::sources().summary(),
        "configuration"
    );
    // Bound before the collectors load: a port in use is a configuration
    // error, found before minutes of compiling on a first start.
    let listener = match settings.listen {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await.map_err(|error| {
            ConfigError(format!("--listen {address} cannot be bound ({error}); pick a free port or `off`"))
        })?),
        None => None,
    };
    let grace = settings.shutdown_grace;
    let state = crate::endpoints::EndpointState {
        metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
        ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    // Signals are counted from here on, so a SIGTERM while the collectors
    // compile stops the start instead of killing the process.
    let (signals_tx, mut signals) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            wait_for_termination().await;
            signals_tx.send_modify(|count| *count += 1);
        }
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    // The endpoints stop only after the drain, so probes and scrapes still
    // get responses (`/readyz` returns 503) while the pod stops.
    let (endpoints_tx, endpoints_rx) = tokio::sync::watch::channel(false);
    // Served while the collectors load, so the startup probe reaches a live
    // process during a first start's compilation.
    if let Some(listener) = listener {
        let address = listener.local_addr().map(|address| address.to_string()).unwrap_or_default();
        tracing::info!(%address, "serving /metrics, /healthz and /readyz");
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::endpoints::serve(listener, state, endpoints_rx).await {
                tracing::error!(error = %format!("{error:#}"), "the metrics and health endpoint stopped");
            }
        });
    }
    let agent = tokio::select! {
        agent = crate::agent::Agent::start(settings, connection, state) => agent?,
        _ = signals.changed() => {
            tracing::info!("termination requested while loading the collectors; stopping");
            return Ok(());
        }
    };
    let mut running = tokio::spawn(agent.run(shutdown_rx));
    tokio::select! {
        _ = &mut running => return Ok(()),
        _ = signals.changed() => {}
    }
    tracing::info!(grace = %humanize(grace), "termination requested; finishing the work in flight and releasing the lease");
    let _ = shutdown_tx.send(true);
    tokio::select! {
        _ = &mut running => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace = %humanize(grace), "the work in flight did not finish within the shutdown grace period; exiting without it");
        }
        _ = signals.changed() => {
            tracing::warn!("second termination signal; exiting without waiting for the work in flight");
        }
    }
    let _ = endpoints_tx.send(true);
    Ok(())
}

/// Renders a duration as `90s`, the form the options take.
fn humanize(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// Connects to the cluster. The client connects lazily, so every failure
/// here is in the configuration (no kubeconfig, invalid YAML, no current
/// context) and exits with status 64.
async fn connect_cluster(kubeconfig: Option<&Path>) -> Result<crate::cluster::Connection, ConfigError> {
    crate::cluster::connect(kubeconfig).await.map_err(|error| {
        // The first line of each part only: a YAML parser's message goes on
        // to quote the lines around the error, which in a kubeconfig (or a
        // secret passed as one by mistake) hold tokens.
        let first_line = |text: String| text.lines().next().unwrap_or_default().to_owned();
        let cause = first_line(error.root_cause().to_string());
        let top = first_line(error.to_string());
        if top.contains(&cause) { ConfigError(top) } else { ConfigError(format!("{top}: {cause}")) }
    })
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
async fn wait_for_termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `hw-agent credentials mint|show|rotate|revoke`.
pub async fn credentials(command: CredentialsCommand) -> Result<(), CommandError> {
    use crate::cluster::credentials::{CredentialSettings, Credentials};

    let request = command.action.request();
    let kube = request.kube.settings(&request.access)?;
    let aiod = match request.aiod {
        Some(aiod) => aiod.settings()?,
        None => None,
    };
    let connection = connect_cluster(kube.kubeconfig.as_deref()).await?;
    let credentials = Credentials::new(
        connection.client.clone(),
        CredentialSettings {
            namespace: kube.namespace.clone(),
            access: kube.access.clone(),
            token_ttl: kube.token_ttl,
        },
    );
    match request.verb {
        CredentialsVerb::Show => {
            let status = credentials.status().await.map_err(anyhow::Error::from)?;
            let text = if request.json {
                serde_json::to_string_pretty(&status).context("failed to serialise the status")? + "\n"
            } else {
                credential_status_text(&status)
            };
            write_stdout(&text)?;
        }
        CredentialsVerb::Revoke => {
            let deleted = credentials.revoke().await.map_err(anyhow::Error::from)?;
            let text = if deleted.is_empty() {
                "nothing to revoke: no platform credentials exist in this cluster\n".to_owned()
            } else {
                format!(
                    "deleted: {}\nevery token issued for the ServiceAccount stops working now\n",
                    deleted.join(", ")
                )
            };
            write_stdout(&text)?;
        }
        CredentialsVerb::Mint | CredentialsVerb::Rotate => {
            // Everything that can fail without writing to the cluster is
            // checked first, so a failed mint leaves no unused token behind.
            let server_url = crate::agent::handed_off_server_url(&kube.api_server_url, &connection);
            if (request.write_kubeconfig.is_some() || aiod.is_some())
                && let Err(error) = &server_url
            {
                return Err(ConfigError(format!("{error:#}")).into());
            }
            let platform = match aiod {
                Some(aiod) => {
                    let (uid, _) =
                        crate::cluster::cluster_identity(&connection.client).await.map_err(anyhow::Error::from)?;
                    let client = AiodClient::connect(aiod).await?;
                    let asset = client.find(&uid).await?.with_context(|| {
                        format!(
                            "the cluster (kube-system UID {uid}) is not registered on platform `{}` yet; run the \
                             agent's DaemonSet, whose leader registers it, then hand off again",
                            client.settings().platform
                        )
                    })?;
                    Some((uid, client, asset))
                }
                None => None,
            };

            let token = credentials.mint().await.map_err(anyhow::Error::from)?;
            let mut lines = vec![
                format!("user:       {}", token.user),
                format!("access:     {}", token.access),
                format!("method:     {}", token.method.as_str()),
                format!(
                    "expires at: {}",
                    token
                        .expires_at
                        .map(|time| time.to_rfc3339())
                        .unwrap_or_else(|| "never (legacy Secret)".to_owned())
                ),
            ];
            if let (Some(path), Ok(server_url)) = (request.write_kubeconfig, &server_url) {
                write_kubeconfig(path, server_url, connection.ca_pem.as_deref(), &token)?;
                lines.push(format!("kubeconfig: {} (mode 0600; it holds the token)", path.display()));
            }
            if let (Some((uid, client, asset)), Ok(server_url)) = (platform, server_url) {
                let cluster_name = crate::agent::cluster_name(&kube.cluster_name, &connection);
                let cluster = crate::agent::ClusterAccess {
                    name: &cluster_name,
                    uid: &uid,
                    api_server_url: server_url,
                    ca_pem: connection.ca_pem.as_deref(),
                };
                let hand_off = crate::agent::hand_off_token(
                    &client,
                    &credentials,
                    &asset,
                    &token,
                    &cluster,
                    kube.platform_key_id.clone(),
                    None,
                )
                .await?;
                lines.push(format!("handed off: asset {asset}, platform key {}", hand_off.key_id));
            } else if request.write_kubeconfig.is_none() {
                lines.push(
                    "not handed off: AIoD is not configured (--api-url ...) and no --write-kubeconfig was given"
                        .to_owned(),
                );
            }
            write_stdout(&(lines.join("\n") + "\n"))?;
        }
    }
    Ok(())
}

fn credential_status_text(status: &crate::cluster::credentials::CredentialStatus) -> String {
    let Some(account) = &status.service_account else {
        return format!(
            "no platform credentials in namespace {}; create them with `hw-agent credentials mint`\n",
            status.namespace
        );
    };
    let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let mut text = format!("service account: {}/{account}\n", status.namespace);
    text.push_str(&format!("user:            {}\n", show(&status.user)));
    text.push_str(&format!("access:          {}\n", show(&status.access)));
    for binding in &status.bindings {
        text.push_str(&format!("binding:         {binding}\n"));
    }
    text.push_str(&format!("token method:    {}\n", show(&status.method)));
    text.push_str(&format!("issued at:       {}\n", show(&status.issued_at)));
    text.push_str(&format!("expires at:      {}\n", show(&status.expires_at)));
    text.push_str(&format!("rotate at:       {}\n", show(&status.rotate_at)));
    text.push_str(&format!("handed off to:   {}\n", show(&status.handed_off_to)));
    text.push_str(&format!("platform key:    {}\n", show(&status.platform_key_id)));
    text
}

/// Writes a kubeconfig holding the token, readable by the owner only.
fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: Option<&str>,
    token: &crate::cluster::credentials::IssuedToken,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut cluster = serde_json::json!({"server": server_url});
    if let Some(pem) = ca_pem {
        cluster["certificate-authority-data"] = Value::from(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": token.user, "user": {"token": secrecy::ExposeSecret::expose_secret(&token.token)}}],
        "contexts": [{"name": "aiod-platform", "context": {"cluster": "cluster", "user": token.user}}],
        "current-context": "aiod-platform",
    });
    let text =
        serde_saphyr::to_string(&config).map_err(|error| anyhow::anyhow!("failed to write the kubeconfig: {error}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(())
}
