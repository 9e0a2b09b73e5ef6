//! The `hw-agent` command line.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use hw_agent::cli::{Cli, Command, EXIT_CONFIG};
use hw_agent::commands::{self, CommandError};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage_error = error.use_stderr();
            let _ = error.print();
            return if usage_error { ExitCode::from(EXIT_CONFIG) } else { ExitCode::SUCCESS };
        }
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(log_directives(&cli.log)) {
        Ok(filter) => filter,
        Err(error) => {
            print_error(format_args!(
                "error: invalid --log filter `{}`: {error}; use a RUST_LOG filter such as `info`",
                cli.log
            ));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            print_error(format_args!("error: failed to start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Collect(command) => commands::collect(command).await,
            Command::Register(command) => commands::register(command).await,
            Command::Demo(command) => commands::demo(command).await,
            Command::Run(command) => commands::run(*command).await,
            Command::Credentials(command) => commands::credentials(command).await,
            Command::Crd => commands::crd(),
            Command::Plugins(command) => hw_agent::plugins::plugins(command).await,
        }
    });
    // A collector cancelled by its wall-clock timeout can leave a blocking
    // thread stuck in a read that never returns (a FIFO, a hung device).
    // Dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CommandError::Config(error)) => {
            print_error(format_args!("error: {error}"));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(CommandError::Failed(error)) => {
            print_error(format_args!("error: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Compiler crates that log every instruction at debug and trace level: over
/// a million lines for one cold start.
const COMPILER_TARGETS: &[&str] =
    &["cranelift_codegen", "cranelift_frontend", "cranelift_entity", "wasmtime_internal_cranelift", "regalloc2"];

/// kube-rs logs every failed request at ERROR without the request; the
/// agent reports the same failure with the action and the fix.
const KUBE_REQUEST_LOG: &str = "kube_client::client::builder";

/// Caps the compiler crates at `warn` unless the filter names them, so
/// `--log trace` shows the agent's own work instead of Cranelift internals,
/// and silences kube-rs's duplicate request errors.
fn log_directives(filter: &str) -> String {
    let mut directives = filter.to_owned();
    for target in COMPILER_TARGETS {
        if !filter.contains(target) {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    if !filter.contains(KUBE_REQUEST_LOG) {
        directives.push_str(&format!(",{KUBE_REQUEST_LOG}=off"));
    }
    directives
}

/// Writes one error line to stderr. A closed stderr (`2>&- ` or a pipe to
/// `head`) loses the message instead of panicking, as `eprintln!` would.
fn print_error(message: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}
