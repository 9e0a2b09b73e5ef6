//! Command-line arguments, and their validation into typed settings before
//! any guest is loaded or request sent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::aiod::{AiodSettings, RetryPolicy};
use crate::collection::CollectSettings;
use crate::logging::LogFormat;
use crate::policy::{LimitOverrides, Policy};
use crate::runtime::ComponentCache;

/// Exit status for invalid configuration (EX_USAGE from sysexits.h).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "hw-agent",
    version,
    about = "Discover this node's hardware with sandboxed WebAssembly collectors and register it on AI-on-Demand"
)]
pub struct Cli {
    /// Configuration file (TOML) whose keys are the long options with `_` for `-`, such as `interval = "5m"`; flags and environment variables override it.
    #[arg(long, global = true, env = crate::config::CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter in RUST_LOG syntax, such as `info` or `hw_agent=debug`; logs go to stderr. Cranelift's crates stay at `warn` unless named [default: $RUST_LOG, else `info` for `run` and `warn` for the other commands].
    #[arg(long, global = true, env = "HW_AGENT_LOG")]
    pub log: Option<String>,

    /// Log format: `human` lines, or `json` objects (one per line) for a cluster's log collector.
    #[arg(long, global = true, env = "HW_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

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
    /// Run in a Kubernetes DaemonSet pod: publish this node's report; the elected leader registers the cluster and hands off credentials.
    Run(Box<RunCommand>),
    /// Manage the Kubernetes credentials the platform gets.
    Credentials(CredentialsCommand),
    /// Print the NodeHardwareReport CustomResourceDefinition as YAML.
    Crd,
    /// List, inspect and try collector plugins, and print the built-in policy.
    Plugins(PluginsCommand),
}

#[derive(Debug, Args)]
pub struct PluginsCommand {
    #[command(subcommand)]
    pub action: PluginsAction,
}

#[derive(Debug, Subcommand)]
pub enum PluginsAction {
    /// List the built-in collectors and the plugins of --plugin-dir, with what each requests and what the policy decides.
    List(CollectArgs),
    /// Print a component's world, WIT version, SHA-256 and requested capabilities, and the policy's decision.
    Inspect {
        /// The component file (`.wasm`).
        file: PathBuf,
        #[command(flatten)]
        collect: CollectArgs,
    },
    /// Run a component once against --host-root, as a collection would, and print its outcome and records as JSON.
    Test {
        /// The component file (`.wasm`).
        file: PathBuf,
        #[command(flatten)]
        collect: CollectArgs,
    },
    /// Print the built-in collector policy (TOML), a starting point for --policy.
    Policy,
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

    /// Collector policy file (TOML): capabilities, SHA-256 pins and limits per collector [default: the built-in policy, printed by `hw-agent plugins policy`].
    #[arg(long, env = "HW_AGENT_POLICY")]
    pub policy: Option<PathBuf>,

    /// Default linear-memory limit of each collector, in MiB [default: the policy's memory_mib, 64]. Policy entries of single collectors override it.
    #[arg(long, env = "HW_AGENT_MEMORY_LIMIT_MIB")]
    pub memory_limit_mib: Option<u64>,

    /// Default run-time limit of a collector's own code in one call, in milliseconds [default: the policy's deadline_ms, 2000].
    #[arg(long, env = "HW_AGENT_DEADLINE_MS")]
    pub deadline_ms: Option<u64>,

    /// Instance allocator. `on-demand` maps each collector's memory per call and returns it afterwards. `pooling` reserves memory slots once and keeps part of each resident, so instantiation is faster but the agent uses about 8 MiB more resident memory.
    #[arg(long, env = "HW_AGENT_ALLOCATOR", value_enum, default_value_t = AllocatorChoice::OnDemand)]
    pub allocator: AllocatorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AllocatorChoice {
    /// wasmtime's pooling allocator, where the machine can reserve it.
    Pooling,
    /// Memory mapped per instance.
    OnDemand,
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

    #[command(flatten)]
    pub aiod: AiodArgs,

    /// Asset name [default: the node's hostname].
    #[arg(long, env = "AIOD_ASSET_NAME")]
    pub name: Option<String>,
}

/// How to reach AIoD and as whom. `register` needs all of the required
/// ones; `run` and `credentials` work without AIoD when none is given.
#[derive(Debug, Clone, Args)]
pub struct AiodArgs {
    /// Base URL of the AIoD REST API, e.g. https://api.aiod.eu.
    #[arg(long, env = "AIOD_API_URL")]
    pub api_url: Option<String>,

    /// PEM file of the CA that signs the API's and token endpoint's certificates [default: the system roots].
    #[arg(long, env = "AIOD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// OIDC token endpoint, e.g. https://auth.aiod.eu/aiod-auth/realms/aiod/protocol/openid-connect/token.
    #[arg(long, env = "AIOD_TOKEN_URL")]
    pub token_url: Option<String>,

    /// OIDC client id of the connector's service account.
    #[arg(long, env = "AIOD_CLIENT_ID")]
    pub client_id: Option<String>,

    /// File holding the client secret (trailing whitespace is ignored).
    #[arg(long, env = "AIOD_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// Connector platform name; the client needs the `platform_<NAME>` role.
    #[arg(long, env = "AIOD_PLATFORM")]
    pub platform: Option<String>,

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

/// The cluster, and the address the platform reaches it at.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Kubeconfig file [default: $KUBECONFIG, else the pod's service account inside a cluster, else ~/.kube/config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the agent: it holds the Lease and the platform's ServiceAccount.
    #[arg(long, env = "POD_NAMESPACE", default_value = "aiod-hw-agent")]
    pub namespace: String,

    /// API server URL handed to the platform [default: the kubeconfig's server]. Required inside a cluster, where the client's own address is an in-cluster service IP.
    #[arg(long, env = "HW_AGENT_API_SERVER_URL")]
    pub api_server_url: Option<String>,

    /// Cluster name for the asset [default: the kubeconfig's cluster name, else `kubernetes`].
    #[arg(long, env = "HW_AGENT_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
}

/// The platform's rights and token lifetime.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Rights of the platform's ServiceAccount: `cluster-admin`, `namespace:NAME` (ClusterRole admin in NAME) or `clusterrole:NAME`.
    #[arg(long, env = "HW_AGENT_PLATFORM_ACCESS", default_value = "cluster-admin")]
    pub access: String,

    /// Lifetime of each token, such as `24h` (at least 10m); it is rotated when a fifth of it remains.
    #[arg(long, env = "HW_AGENT_TOKEN_TTL", default_value = "24h")]
    pub token_ttl: String,

    /// Hand off only to a platform key with this key id (16 hex characters), and refuse any other.
    #[arg(long, env = "HW_AGENT_PLATFORM_KEY_ID")]
    pub platform_key_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunCommand {
    #[command(flatten)]
    pub collect: CollectArgs,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub aiod: AiodArgs,

    #[command(flatten)]
    pub access: AccessArgs,

    /// The Node this pod runs on; set it from the downward API (`spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,

    /// Identity in the leader election; set it from the downward API (`metadata.name`) [default: the node name].
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Time between collections, such as `10m` or `90s`.
    #[arg(long, env = "HW_AGENT_INTERVAL", default_value = "10m")]
    pub interval: String,

    /// Name of the Lease in the agent's namespace.
    #[arg(long, env = "HW_AGENT_LEASE_NAME", default_value = "hw-agent-leader")]
    pub lease_name: String,

    /// How long the Lease holds without renewal, such as `15s`.
    #[arg(long, env = "HW_AGENT_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,

    /// Address of the HTTP endpoints: Prometheus metrics at `/metrics`, probes at `/healthz` and `/readyz`; `off` disables them.
    #[arg(long, visible_alias = "health-listen", env = "HW_AGENT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,

    /// Time allowed after SIGTERM to finish the work in flight and release the Lease before exiting, such as `20s`; keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "HW_AGENT_SHUTDOWN_GRACE", default_value = "20s")]
    pub shutdown_grace: String,
}

#[derive(Debug, Args)]
pub struct CredentialsCommand {
    #[command(subcommand)]
    pub action: CredentialsAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsVerb {
    Mint,
    Show,
    Rotate,
    Revoke,
}

#[derive(Debug, Subcommand)]
pub enum CredentialsAction {
    /// Create the platform's ServiceAccount and binding and issue a token; hand it off when AIoD is configured.
    Mint(CredentialsArgs),
    /// Show the ServiceAccount, binding, token expiry and last hand-off (never the token).
    Show(ShowCredentialsArgs),
    /// Issue a new token and hand it off; the old one stays valid until it expires.
    Rotate(CredentialsArgs),
    /// Delete what `mint` created; every token of the ServiceAccount stops working.
    Revoke(RevokeCredentialsArgs),
}

/// One `credentials` subcommand with its options, in a common shape.
#[derive(Debug)]
pub struct CredentialsRequest<'a> {
    pub verb: CredentialsVerb,
    pub kube: &'a KubeArgs,
    pub access: AccessArgs,
    pub aiod: Option<&'a AiodArgs>,
    pub write_kubeconfig: Option<&'a std::path::Path>,
    pub json: bool,
}

impl CredentialsAction {
    pub fn request(&self) -> CredentialsRequest<'_> {
        let default_access =
            || AccessArgs { access: "cluster-admin".to_owned(), token_ttl: "24h".to_owned(), platform_key_id: None };
        match self {
            CredentialsAction::Mint(args) | CredentialsAction::Rotate(args) => CredentialsRequest {
                verb: if matches!(self, CredentialsAction::Mint(_)) {
                    CredentialsVerb::Mint
                } else {
                    CredentialsVerb::Rotate
                },
                kube: &args.kube,
                access: args.access.clone(),
                aiod: Some(&args.aiod),
                write_kubeconfig: args.write_kubeconfig.as_deref(),
                json: false,
            },
            CredentialsAction::Show(args) => CredentialsRequest {
                verb: CredentialsVerb::Show,
                kube: &args.kube,
                access: default_access(),
                aiod: None,
                write_kubeconfig: None,
                json: args.json,
            },
            CredentialsAction::Revoke(args) => CredentialsRequest {
                verb: CredentialsVerb::Revoke,
                kube: &args.kube,
                access: AccessArgs { access: args.access.clone(), ..default_access() },
                aiod: None,
                write_kubeconfig: None,
                json: false,
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct ShowCredentialsArgs {
    #[command(flatten)]
    pub kube: KubeArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeCredentialsArgs {
    #[command(flatten)]
    pub kube: KubeArgs,

    /// Access whose binding is deleted, besides the one recorded on the ServiceAccount.
    #[arg(long, env = "HW_AGENT_PLATFORM_ACCESS", default_value = "cluster-admin")]
    pub access: String,
}

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub aiod: AiodArgs,

    #[command(flatten)]
    pub access: AccessArgs,

    /// Also write a kubeconfig with the new token to this file (mode 0600), for a manual hand-off.
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
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
    /// Validates the options.
    pub fn settings(&self) -> Result<CollectSettings, ConfigError> {
        self.build_settings(true)
    }

    /// Validates the options of a command that reads no host root
    /// (`plugins list` and `plugins inspect`), so a `HW_AGENT_HOST_ROOT` meant
    /// for the DaemonSet does not stop them.
    pub fn settings_without_root(&self) -> Result<CollectSettings, ConfigError> {
        self.build_settings(false)
    }

    fn build_settings(&self, check_root: bool) -> Result<CollectSettings, ConfigError> {
        if check_root && !self.host_root.is_dir() {
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
        let cache_dir = if self.no_cache { None } else { self.cache_dir.clone().or_else(ComponentCache::default_dir) };
        Ok(CollectSettings {
            host_root: self.host_root.clone(),
            plugin_dir: self.plugin_dir.clone(),
            cache_dir,
            policy: self.policy()?,
            pooling: self.allocator == AllocatorChoice::Pooling,
            include_identifiers: self.include_identifiers,
        })
    }

    /// Reads the policy file, or the built-in policy, and applies the limit
    /// flags to its defaults.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let mut policy = match &self.policy {
            Some(path) => Policy::load(path).map_err(|error| ConfigError(format!("--policy: {error}")))?,
            None => Policy::built_in(),
        };
        let overrides = LimitOverrides {
            memory_mib: self.memory_limit_mib,
            deadline_ms: self.deadline_ms,
            ..LimitOverrides::default()
        };
        let flag = |key: &str| match key {
            "memory_mib" => "--memory-limit-mib".to_owned(),
            "deadline_ms" => "--deadline-ms".to_owned(),
            other => other.to_owned(),
        };
        policy.override_defaults(&overrides, flag).map_err(ConfigError)?;
        Ok(policy)
    }
}

impl RegisterCommand {
    pub fn settings(&self) -> Result<AiodSettings, ConfigError> {
        if let Some(name) = &self.name
            && (name.trim().is_empty() || name.chars().count() > 256)
        {
            return Err(ConfigError(format!("--name `{name}` is invalid; an asset name is 1-256 characters")));
        }
        self.aiod.settings()?.ok_or_else(|| {
            ConfigError(
                "register needs AIoD: pass --api-url, --token-url, --client-id, --client-secret-file and --platform"
                    .to_owned(),
            )
        })
    }
}

impl AiodArgs {
    /// `None` when no AIoD option is given; an error when only some are.
    pub fn settings(&self) -> Result<Option<AiodSettings>, ConfigError> {
        let given = [
            ("--api-url", self.api_url.is_some()),
            ("--token-url", self.token_url.is_some()),
            ("--client-id", self.client_id.is_some()),
            ("--client-secret-file", self.client_secret_file.is_some()),
            ("--platform", self.platform.is_some()),
        ];
        if given.iter().all(|(_, present)| !present) {
            return Ok(None);
        }
        let missing: Vec<&str> = given.iter().filter(|(_, present)| !present).map(|(flag, _)| *flag).collect();
        if !missing.is_empty() {
            return Err(ConfigError(format!(
                "AIoD is partly configured: {} missing; pass all of --api-url, --token-url, --client-id, \
                 --client-secret-file and --platform (or their AIOD_* variables), or none",
                missing.join(", ")
            )));
        }
        let (Some(api_url), Some(token_url), Some(client_id), Some(client_secret_file), Some(platform)) =
            (&self.api_url, &self.token_url, &self.client_id, &self.client_secret_file, &self.platform)
        else {
            return Ok(None);
        };
        for (flag, url) in [("--api-url", api_url), ("--token-url", token_url)] {
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
        if !valid_platform_name(platform) {
            return Err(ConfigError(format!(
                "--platform `{platform}` is invalid; use 1-64 characters of a-z, 0-9, `_` and `-`, such as `my_site`"
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
        check_small_file("--client-secret-file", client_secret_file, SECRET_FILE_MAX_BYTES)?;
        let secret = std::fs::read_to_string(client_secret_file).map_err(|error| {
            ConfigError(format!(
                "failed to read --client-secret-file {}: {error}; the file must hold the OIDC client secret",
                client_secret_file.display()
            ))
        })?;
        let secret = secret.trim_end();
        if secret.is_empty() {
            return Err(ConfigError(format!("--client-secret-file {} is empty", client_secret_file.display())));
        }
        Ok(Some(AiodSettings {
            api_url: api_url.clone(),
            token_url: token_url.clone(),
            ca_cert: self.ca_cert.clone(),
            client_id: client_id.clone(),
            client_secret: SecretString::from(secret.to_owned()),
            platform: platform.clone(),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            retry: RetryPolicy {
                max_retries: self.max_retries,
                base_delay: Duration::from_millis(self.retry_base_ms),
                ..RetryPolicy::default()
            },
        }))
    }
}

/// Largest client secret file read, in bytes.
const SECRET_FILE_MAX_BYTES: u64 = 64 << 10;

/// Checks that `path` is a regular file of at most `max_bytes`, so a FIFO or
/// `/dev/zero` given by mistake fails at once instead of hanging or filling
/// memory. The message never shows the file's contents.
fn check_small_file(flag: &str, path: &std::path::Path, max_bytes: u64) -> Result<(), ConfigError> {
    let shown = path.display();
    let metadata =
        std::fs::metadata(path).map_err(|error| ConfigError(format!("failed to read {flag} {shown}: {error}")))?;
    if !metadata.is_file() {
        return Err(ConfigError(format!("{flag} {shown} is not a regular file; pass the path of a file")));
    }
    if metadata.len() > max_bytes {
        return Err(ConfigError(format!(
            "{flag} {shown} has {} bytes, more than the {max_bytes} allowed; check that it is the right file",
            metadata.len()
        )));
    }
    Ok(())
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

    check_small_file("--ca-cert", path, crate::config::MAX_FILE_BYTES)?;
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

/// Parses a duration such as `90`, `90s`, `10m`, `1h30m` or `7d`; a bare
/// number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("`{text}` is not a duration; write it like `90s`, `10m`, `1h30m` or `7d`");
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(invalid()),
        };
        let value: u64 = number.parse().map_err(|_| invalid())?;
        total = value.checked_mul(unit).and_then(|seconds| total.checked_add(seconds)).ok_or_else(invalid)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

/// Validated settings of the Kubernetes side of `run` and `credentials`.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub api_server_url: Option<String>,
    pub cluster_name: Option<String>,
    pub access: crate::cluster::credentials::Access,
    pub token_ttl: Duration,
    pub platform_key_id: Option<String>,
}

/// Checks for an RFC 1123 subdomain, the form of Node and Pod names: they go into
/// API paths, so anything else is rejected rather than escaped.
fn valid_dns_subdomain(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl KubeArgs {
    pub fn settings(&self, access: &AccessArgs) -> Result<KubeSettings, ConfigError> {
        if !crate::cluster::is_dns_label(&self.namespace) {
            return Err(ConfigError(format!(
                "--namespace `{}` is not a Kubernetes namespace name; use 1-63 characters of a-z, 0-9 and `-`",
                self.namespace
            )));
        }
        if let Some(path) = &self.kubeconfig
            && !path.is_file()
        {
            return Err(ConfigError(format!(
                "--kubeconfig {} is not a file; pass the path of a kubeconfig",
                path.display()
            )));
        }
        if let Some(url) = &self.api_server_url {
            let parsed = reqwest::Url::parse(url).map_err(|error| {
                ConfigError(format!(
                    "--api-server-url {url} is not a URL ({error}); pass the address the platform reaches the API server at, such as https://k8s.example.org:6443"
                ))
            })?;
            if parsed.scheme() != "https" || parsed.host_str().is_none_or(str::is_empty) {
                return Err(ConfigError(format!(
                    "--api-server-url {url} must be an https:// URL with a host, such as https://k8s.example.org:6443"
                )));
            }
        }
        if let Some(name) = &self.cluster_name
            && (name.trim().is_empty() || name.chars().count() > 256)
        {
            return Err(ConfigError(format!("--cluster-name `{name}` is invalid; use 1-256 characters")));
        }
        let parsed_access =
            access.access.parse().map_err(|message: String| ConfigError(format!("--access {message}")))?;
        let token_ttl =
            parse_duration(&access.token_ttl).map_err(|message| ConfigError(format!("--token-ttl {message}")))?;
        if token_ttl > Duration::from_secs(u64::from(u32::MAX)) {
            return Err(ConfigError(format!(
                "--token-ttl {} is longer than the TokenRequest API's maximum of 4294967295 seconds",
                access.token_ttl
            )));
        }
        if token_ttl < crate::cluster::credentials::MIN_TOKEN_TTL {
            return Err(ConfigError(format!(
                "--token-ttl {} is shorter than the TokenRequest API's minimum of 10m",
                access.token_ttl
            )));
        }
        if let Some(key_id) = &access.platform_key_id
            && (key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        {
            return Err(ConfigError(format!(
                "--platform-key-id `{key_id}` is not a key id; it is 16 lowercase hex characters, as the platform's credentials-key route shows"
            )));
        }
        Ok(KubeSettings {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
            api_server_url: self.api_server_url.clone(),
            cluster_name: self.cluster_name.clone(),
            access: parsed_access,
            token_ttl,
            platform_key_id: access.platform_key_id.clone(),
        })
    }
}

/// Validated settings of `hw-agent run`.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub collect: CollectSettings,
    pub kube: KubeSettings,
    pub aiod: Option<AiodSettings>,
    pub node_name: String,
    pub identity: String,
    pub interval: Duration,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub listen: Option<std::net::SocketAddr>,
    pub shutdown_grace: Duration,
}

impl RunCommand {
    pub fn settings(&self) -> Result<RunSettings, ConfigError> {
        let collect = self.collect.settings()?;
        let nodes = crate::policy::NODES_COLLECTOR;
        if let Err(reason) = collect.policy.decide(nodes, &[crate::runtime::Capability::NodeList]) {
            return Err(ConfigError(format!(
                "{} denies the built-in `{nodes}` collector the node list, which the leader needs ({reason}); \
                 keep `node_list = true` in [collectors.{nodes}]",
                collect.policy.origin()
            )));
        }
        let kube = self.kube.settings(&self.access)?;
        let aiod = self.aiod.settings()?;
        if !valid_dns_subdomain(&self.node_name) {
            return Err(ConfigError(format!(
                "--node-name `{}` is not a Node name; set NODE_NAME from the downward API (fieldRef spec.nodeName)",
                self.node_name
            )));
        }
        if let Some(pod) = &self.pod_name
            && !valid_dns_subdomain(pod)
        {
            return Err(ConfigError(format!(
                "--pod-name `{pod}` is not a Pod name; set POD_NAME from the downward API (fieldRef metadata.name)"
            )));
        }
        let interval =
            parse_duration(&self.interval).map_err(|message| ConfigError(format!("--interval {message}")))?;
        if interval < Duration::from_secs(1) {
            return Err(ConfigError(format!("--interval {} is shorter than the minimum of 1s", self.interval)));
        }
        let lease_duration = parse_duration(&self.lease_duration)
            .map_err(|message| ConfigError(format!("--lease-duration {message}")))?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3_600)).contains(&lease_duration) {
            return Err(ConfigError(format!("--lease-duration {} is out of range; use 1s to 1h", self.lease_duration)));
        }
        if !crate::cluster::is_dns_label(&self.lease_name) {
            return Err(ConfigError(format!(
                "--lease-name `{}` is not a valid object name; use 1-63 characters of a-z, 0-9 and `-`",
                self.lease_name
            )));
        }
        let listen = match self.listen.as_str() {
            "off" => None,
            text => Some(text.parse().map_err(|_| {
                ConfigError(format!(
                    "--listen `{text}` is not an address; use IP:PORT such as 0.0.0.0:8080 or [::]:8080, or `off`"
                ))
            })?),
        };
        let shutdown_grace = parse_duration(&self.shutdown_grace)
            .map_err(|message| ConfigError(format!("--shutdown-grace {message}")))?;
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&shutdown_grace) {
            return Err(ConfigError(format!(
                "--shutdown-grace {} is out of range; use 1s to 10m",
                self.shutdown_grace
            )));
        }
        Ok(RunSettings {
            collect,
            kube,
            aiod,
            node_name: self.node_name.clone(),
            identity: self.pod_name.clone().unwrap_or_else(|| self.node_name.clone()),
            interval,
            lease_name: self.lease_name.clone(),
            lease_duration,
            listen,
            shutdown_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "m", "10x", "1.5h", "10m5", "99999999999999999999d"] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(error.contains("10m"), "{error}");
        }
    }
}
