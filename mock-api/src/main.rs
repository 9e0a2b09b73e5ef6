//! The `aiod-mock` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aiod_mock::{Client, MockConfig};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "aiod-mock", version, about = "A stand-in for the AI-on-Demand computational-asset API, over TLS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API until interrupted.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address and port to listen on; port 0 picks a free one.
    #[arg(long, env = "AIOD_MOCK_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,

    /// Directory for TLS material and the SQLite state; a CA (`ca.pem`) and server certificate are generated there on first start.
    #[arg(long, env = "AIOD_MOCK_STATE_DIR")]
    state_dir: PathBuf,

    /// A client the token endpoint accepts, as ID:SECRET:ROLE,ROLE (repeatable; roles may be empty).
    #[arg(long = "client", value_name = "ID:SECRET:ROLES")]
    clients: Vec<Client>,

    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "AIOD_MOCK_TOKEN_LIFETIME", default_value_t = 300)]
    token_lifetime: u64,

    /// Publish assets that users (not connectors) create, instead of keeping them as drafts.
    #[arg(long)]
    auto_publish: bool,

    /// Register a platform name at start, as an AIoD administrator would (repeatable).
    #[arg(long = "platform", value_name = "NAME")]
    platforms: Vec<String>,

    /// Extra DNS name or IP address for a newly generated server certificate (repeatable).
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,

    /// Fault injection: delay added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,

    /// Fault injection: share of requests (0.0-1.0) that get a 500 or 503 response without being processed.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,

    /// Fault injection: share of requests (0.0-1.0) whose connection is dropped after processing.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,

    /// Fault injection: seed of the fault sequence, for repeatable runs [default: random].
    #[arg(long)]
    fault_seed: Option<u64>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;

    if args.token_lifetime == 0 {
        eprintln!("error: --token-lifetime must be at least 1 second");
        return ExitCode::from(64);
    }
    if let Some(bad) = args
        .platforms
        .iter()
        .find(|name| name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_uppercase))
    {
        eprintln!("error: --platform `{bad}` is invalid; platform names are 1-64 lowercase characters");
        return ExitCode::from(64);
    }
    let faults = aiod_mock::FaultConfig {
        latency: Duration::from_millis(args.latency_ms),
        error_rate: args.error_rate,
        drop_rate: args.drop_rate,
        seed: args.fault_seed,
    };
    if let Err(message) = faults.validate() {
        eprintln!("error: {message}");
        return ExitCode::from(64);
    }
    if args.clients.is_empty() {
        tracing::warn!("no --client given: the token endpoint will refuse every request");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = MockConfig {
        listen: args.listen,
        state_dir: args.state_dir,
        clients: args.clients,
        token_lifetime: Duration::from_secs(args.token_lifetime),
        auto_publish: args.auto_publish,
        platforms: args.platforms,
        tls_names: args.tls_names,
        faults,
    };
    runtime.block_on(async move {
        let mock = match aiod_mock::start(config).await {
            Ok(mock) => mock,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::FAILURE;
            }
        };
        println!("aiod-mock listening on {} (CA: {})", mock.base_url(), mock.ca_path.display());
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        mock.shutdown().await;
        ExitCode::SUCCESS
    })
}
