//! The `aiod-mock` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aiod_mock::credentials::CredentialsKey;
use aiod_mock::persist::Database;
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
    /// Operate the credentials hand-off extension on a state directory; no server needed.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
}

#[derive(Debug, Subcommand)]
enum CredentialsCommand {
    /// Decrypt the credentials handed off for an asset and print them as JSON; the output contains secrets.
    Show {
        /// Identifier of the computational asset, `comp_...`.
        asset_id: String,
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Print the platform's public credentials key, as GET /extensions/hw-agent/credentials-key returns it.
    Key {
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Replace the credentials key pair; hand-offs sealed to the old key can no longer be opened.
    RotateKey {
        #[command(flatten)]
        state: StateDirArg,
    },
}

#[derive(Debug, clap::Args)]
struct StateDirArg {
    /// State directory of the mock, as given to `aiod-mock serve --state-dir`.
    #[arg(long, env = "AIOD_MOCK_STATE_DIR")]
    state_dir: PathBuf,
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Usage errors exit 64 (EX_USAGE), like hw-agent's, rather than clap's 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage_error = error.use_stderr();
            let _ = error.print();
            return if usage_error { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Credentials(command) => credentials(command),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
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

fn credentials(command: CredentialsCommand) -> ExitCode {
    let result = match command {
        CredentialsCommand::Show { asset_id, state } => show_credentials(&state.state_dir, &asset_id),
        CredentialsCommand::Key { state } => print_key(&state.state_dir),
        CredentialsCommand::RotateKey { state } => rotate_key(&state.state_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the decrypted hand-off, pretty-printed when it is JSON.
fn show_credentials(state_dir: &std::path::Path, asset_id: &str) -> anyhow::Result<()> {
    let plaintext = aiod_mock::credentials::open_stored(state_dir, asset_id)?;
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&plaintext).is_ok();
    match std::str::from_utf8(&plaintext) {
        Ok(text) if is_json => println!("{}", indent_json(text)),
        _ => {
            eprintln!("warning: the credentials of {asset_id} are not JSON; printing them as they are");
            println!("{}", String::from_utf8_lossy(&plaintext));
        }
    }
    Ok(())
}

/// Re-indents valid JSON as `serde_json::to_string_pretty` does, but keeps
/// the key order and the spelling of strings and numbers of the input.
fn indent_json(json: &str) -> String {
    let mut output = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut characters = json.chars().peekable();
    while let Some(character) = characters.next() {
        if in_string {
            output.push(character);
            if escaped {
                escaped = false;
            } else if character == '\\' {
                escaped = true;
            } else if character == '"' {
                in_string = false;
            }
            continue;
        }
        match character {
            '"' => {
                in_string = true;
                output.push(character);
            }
            '{' | '[' => {
                output.push(character);
                while characters.next_if(|next| next.is_ascii_whitespace()).is_some() {}
                // An empty object or array stays on one line.
                if let Some(closing) = characters.next_if(|next| matches!(next, '}' | ']')) {
                    output.push(closing);
                } else {
                    depth += 1;
                    push_line_break(&mut output, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                push_line_break(&mut output, depth);
                output.push(character);
            }
            ',' => {
                output.push(character);
                push_line_break(&mut output, depth);
            }
            ':' => output.push_str(": "),
            character if character.is_ascii_whitespace() => {}
            character => output.push(character),
        }
    }
    output
}

fn push_line_break(output: &mut String, depth: usize) {
    output.push('\n');
    output.push_str(&"  ".repeat(depth));
}

fn print_key(state_dir: &std::path::Path) -> anyhow::Result<()> {
    let key = CredentialsKey::load_or_create(state_dir)?;
    println!("{}", serde_json::to_string_pretty(&key.key_document())?);
    Ok(())
}

/// Replaces the key pair, prints the new public key, and warns on stderr
/// about the hand-offs that the new key cannot open.
fn rotate_key(state_dir: &std::path::Path) -> anyhow::Result<()> {
    let old_key_id = CredentialsKey::load(state_dir).ok().map(|key| key.key_id().to_owned());
    let key = CredentialsKey::rotate(state_dir)?;
    let stranded = Database::open(state_dir)?.count_hand_offs_not_sealed_to(key.key_id())?;
    eprintln!(
        "Replaced credentials key {} with {} in {}. Hand-offs sealed to an earlier key can no longer be opened \
         ({stranded} stored); have the agent hand off again. A running aiod-mock keeps serving the old key until \
         it restarts.",
        old_key_id.as_deref().unwrap_or("(none)"),
        key.key_id(),
        state_dir.display()
    );
    println!("{}", serde_json::to_string_pretty(&key.key_document())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::indent_json;

    #[test]
    fn indent_json_matches_serde_json() {
        let compact = r#"{"b":[1,{"x":"a,b:{c}","y":[]},{}],"a":"quote \" and \\","c":null}"#;
        let value: serde_json::Value = serde_json::from_str(compact).expect("valid JSON");
        let indented = indent_json(compact);
        let reparsed: serde_json::Value = serde_json::from_str(&indented).expect("still valid JSON");
        assert_eq!(reparsed, value);
        let expected = r#"{
  "b": [
    1,
    {
      "x": "a,b:{c}",
      "y": []
    },
    {}
  ],
  "a": "quote \" and \\",
  "c": null
}"#;
        assert_eq!(indented, expected, "key order is kept");
    }

    #[test]
    fn indent_json_is_idempotent() {
        let pretty = "{\n  \"a\": [\n    1,\n    2\n  ]\n}";
        assert_eq!(indent_json(pretty), pretty);
        assert_eq!(indent_json(" [ ] "), "[]");
    }
}
