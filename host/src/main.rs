//! The `hw-agent` command line.

use std::process::ExitCode;

use hw_agent::cli::{Command, EXIT_CONFIG};
use hw_agent::commands::{self, CommandError};
use hw_agent::config::{self, ParseError};

fn main() -> ExitCode {
    let parsed = match config::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ParseError::Clap(error)) => {
            let usage_error = error.use_stderr();
            let _ = error.print();
            return if usage_error { ExitCode::from(EXIT_CONFIG) } else { ExitCode::SUCCESS };
        }
        Err(ParseError::Config(message)) => {
            print_error(format_args!("error: {message}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cli = parsed.cli;
    let sources = parsed.sources;
    // `run` logs each lifecycle event at info; the one-shot commands print
    // their result on stdout and keep stderr for warnings.
    let default_filter = if matches!(cli.command, Command::Run(_)) { "info" } else { "warn" };
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|filter| !filter.trim().is_empty()))
        .unwrap_or_else(|| default_filter.to_owned());
    if let Err(error) = hw_agent::logging::init(&filter, cli.log_format) {
        let place = sources.describe("log").map(|place| format!(" ({place})")).unwrap_or_default();
        print_error(format_args!(
            "error: invalid log filter `{filter}`{place}: {error}; use a RUST_LOG filter such as `info` or `hw_agent=debug`"
        ));
        return ExitCode::from(EXIT_CONFIG);
    }
    config::set_sources(sources.clone());

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
            print_error(format_args!("error: {}", sources.annotate(&error.to_string())));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(CommandError::Failed(error)) => {
            print_error(format_args!("error: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes one error line to stderr. A closed stderr (`2>&- ` or a pipe to
/// `head`) loses the message instead of panicking, as `eprintln!` would.
fn print_error(message: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}
