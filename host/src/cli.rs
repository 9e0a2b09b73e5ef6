//! Command-line arguments, and their validation into typed settings before
//! any guest is loaded or request sent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::aiod::{AiodSettings, RetryPolicy};
use crate::collection::CollectSettings;
use crate::runtime::{ComponentCache, GuestLimits};

/// Exit status for invalid configuration (EX_USAGE from sysexits.h).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "hw-agent",
    version,
    about = "Discover this node's hardware with sandboxed WebAssembly collectors and register it on AI-on-Demand"
)]
pub struct Cli {
    /// Log filter in RUST_LOG syntax, such as `info` or `hw_agent=debug`; logs go to stderr. Cranelift's crates stay at `warn` unless named.
    #[arg(long, global = true, env = "HW_AGENT_LOG", default_value = "warn")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this node's hardware report.
    Collect(CollectCommand),
    /// Collect, then register or update this node as an AIoD computational asset.
    Register(RegisterCommand),
    /// Start an embedded AIoD mock over TLS, register this node on it and read the asset back.
    Demo(DemoCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The JSON node report.
    Json,
    /// A readable summary.
    Table,
}

/// Options shared by every command that collects.
#[derive(Debug, Clone, Args)]
pub struct CollectArgs {
    /// Root of the filesystem to inspect; collectors read its proc/, sys/ and etc/os-release.
    #[arg(long, env = "HW_AGENT_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,

    /// Directory of extra collector components (`*.wasm`), loaded after the built-in ones.
    #[arg(long, env = "HW_AGENT_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// Directory for compiled components [default: the user cache directory, e.g. ~/.cache/aiod-hw-agent/components].
    #[arg(long, env = "HW_AGENT_CACHE_DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component on each run instead of caching the result.
    #[arg(long)]
    pub no_cache: bool,

    /// Include MAC addresses, disk serial numbers and GPU UUIDs in the report.
    #[arg(long, env = "HW_AGENT_INCLUDE_IDENTIFIERS")]
    pub include_identifiers: bool,

    /// Linear-memory limit of each collector, in MiB.
    #[arg(long, env = "HW_AGENT_MEMORY_LIMIT_MIB", default_value_t = 64)]
    pub memory_limit_mib: u64,

    /// Run-time limit of each collector call, in milliseconds of wall-clock time.
    #[arg(long, env = "HW_AGENT_DEADLINE_MS", default_value_t = 2000)]
    pub deadline_ms: u64,
}

#[derive(Debug, Args)]
pub struct CollectCommand {
    #[command(flatten)]
    pub collect: CollectArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RegisterCommand {
    #[command(flatten)]
    pub collect: CollectArgs,

    /// Base URL of the AIoD REST API, e.g. https://api.aiod.eu.
    #[arg(long, env = "AIOD_API_URL")]
    pub api_url: String,

    /// PEM file of the CA that signs the API's and token endpoint's certificates [default: the system roots].
    #[arg(long, env = "AIOD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// OIDC token endpoint, e.g. https://auth.aiod.eu/aiod-auth/realms/aiod/protocol/openid-connect/token.
    #[arg(long, env = "AIOD_TOKEN_URL")]
    pub token_url: String,

    /// OIDC client id of the connector's service account.
    #[arg(long, env = "AIOD_CLIENT_ID")]
    pub client_id: String,

    /// File holding the client secret (trailing whitespace is ignored).
    #[arg(long, env = "AIOD_CLIENT_SECRET_FILE")]
    pub client_secret_file: PathBuf,

    /// Connector platform name; the client needs the `platform_<NAME>` role.
    #[arg(long, env = "AIOD_PLATFORM")]
    pub platform: String,

    /// Asset name [default: the node's hostname].
    #[arg(long, env = "AIOD_ASSET_NAME")]
    pub name: Option<String>,

    /// Timeout of each HTTP request, in seconds.
    #[arg(long, env = "AIOD_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Retries of a request that failed with a connection error, a timeout, or HTTP 429/500/502/503/504.
    #[arg(long, env = "AIOD_MAX_RETRIES", default_value_t = 5)]
    pub max_retries: u32,

    /// Delay before the first retry, in milliseconds; it doubles on each retry, up to 8 seconds, with jitter.
    #[arg(long, env = "AIOD_RETRY_BASE_MS", default_value_t = 500)]
    pub retry_base_ms: u64,
}

#[derive(Debug, Args)]
pub struct DemoCommand {
    #[command(flatten)]
    pub collect: CollectArgs,
}

/// A configuration error: reported with exit status 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl CollectArgs {
    pub fn settings(&self) -> Result<CollectSettings, ConfigError> {
        if !self.host_root.is_dir() {
            return Err(ConfigError(format!(
                "--host-root {} is not a directory; pass the directory that contains proc/ and sys/ (`/` on this machine)",
                self.host_root.display()
            )));
        }
        if let Some(dir) = &self.plugin_dir
            && !dir.is_dir()
        {
            return Err(ConfigError(format!(
                "--plugin-dir {} is not a directory; create it or leave the option out",
                dir.display()
            )));
        }
        if !(1..=4096).contains(&self.memory_limit_mib) {
            return Err(ConfigError(format!(
                "--memory-limit-mib {} is out of range; use 1 to 4096",
                self.memory_limit_mib
            )));
        }
        if !(10..=600_000).contains(&self.deadline_ms) {
            return Err(ConfigError(format!("--deadline-ms {} is out of range; use 10 to 600000", self.deadline_ms)));
        }
        let cache_dir = if self.no_cache { None } else { self.cache_dir.clone().or_else(ComponentCache::default_dir) };
        Ok(CollectSettings {
            host_root: self.host_root.clone(),
            plugin_dir: self.plugin_dir.clone(),
            cache_dir,
            limits: GuestLimits {
                memory_bytes: (self.memory_limit_mib as usize) << 20,
                deadline_ms: self.deadline_ms,
                ..GuestLimits::default()
            },
            include_identifiers: self.include_identifiers,
        })
    }
}

impl RegisterCommand {
    pub fn settings(&self) -> Result<AiodSettings, ConfigError> {
        for (flag, url) in [("--api-url", &self.api_url), ("--token-url", &self.token_url)] {
            if !url.starts_with("https://") {
                return Err(ConfigError(format!(
                    "{flag} {url} must be an https:// URL; the agent only talks to AIoD over TLS"
                )));
            }
            let parsed = reqwest::Url::parse(url).map_err(|error| {
                ConfigError(format!(
                    "{flag} {url} is not a valid URL ({error}); pass a URL such as https://api.aiod.eu"
                ))
            })?;
            if parsed.host_str().is_none_or(str::is_empty) || parsed.query().is_some() || parsed.fragment().is_some() {
                return Err(ConfigError(format!(
                    "{flag} {url} needs a host and no query or fragment; pass a URL such as https://api.aiod.eu"
                )));
            }
        }
        if let Some(path) = &self.ca_cert {
            check_ca_file(path)?;
        }
        if let Some(name) = &self.name
            && (name.trim().is_empty() || name.chars().count() > 256)
        {
            return Err(ConfigError(format!("--name `{name}` is invalid; an asset name is 1-256 characters")));
        }
        if !valid_platform_name(&self.platform) {
            return Err(ConfigError(format!(
                "--platform `{}` is invalid; use 1-64 characters of a-z, 0-9, `_` and `-`, such as `my_site`",
                self.platform
            )));
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError("--request-timeout-secs must be at least 1".to_owned()));
        }
        if self.max_retries > 20 {
            return Err(ConfigError(format!("--max-retries {} is out of range; use 0 to 20", self.max_retries)));
        }
        if !(1..=60_000).contains(&self.retry_base_ms) {
            return Err(ConfigError(format!("--retry-base-ms {} is out of range; use 1 to 60000", self.retry_base_ms)));
        }
        let secret = std::fs::read_to_string(&self.client_secret_file).map_err(|error| {
            ConfigError(format!(
                "failed to read --client-secret-file {}: {error}; the file must hold the OIDC client secret",
                self.client_secret_file.display()
            ))
        })?;
        let secret = secret.trim_end();
        if secret.is_empty() {
            return Err(ConfigError(format!("--client-secret-file {} is empty", self.client_secret_file.display())));
        }
        Ok(AiodSettings {
            api_url: self.api_url.clone(),
            token_url: self.token_url.clone(),
            ca_cert: self.ca_cert.clone(),
            client_id: self.client_id.clone(),
            client_secret: SecretString::from(secret.to_owned()),
            platform: self.platform.clone(),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            retry: RetryPolicy {
                max_retries: self.max_retries,
                base_delay: Duration::from_millis(self.retry_base_ms),
                ..RetryPolicy::default()
            },
        })
    }
}

/// Accepts 1-64 characters of `[a-z0-9_-]`. AIoD stores platform names
/// lowercase and recommends snake_case, and the name goes into URL paths, so
/// anything else (`..`, `?`, `/`) is refused rather than encoded.
fn valid_platform_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks that a CA file contains at least one well-formed PEM certificate, so a
/// wrong file is reported before anything is collected or sent.
fn check_ca_file(path: &std::path::Path) -> Result<(), ConfigError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;

    let certificates: Result<Vec<CertificateDer<'static>>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|error| {
            ConfigError(format!(
                "failed to read --ca-cert {}: {error}; pass the PEM file of the API's CA",
                path.display()
            ))
        })?
        .collect();
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Ok(()),
        Ok(_) => Err(ConfigError(format!(
            "--ca-cert {} contains no certificate; pass a PEM file with at least one `BEGIN CERTIFICATE` block",
            path.display()
        ))),
        Err(error) => Err(ConfigError(format!(
            "--ca-cert {} is not valid PEM ({error}); pass the PEM file of the API's CA",
            path.display()
        ))),
    }
}
