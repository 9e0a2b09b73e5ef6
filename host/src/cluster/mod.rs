//! The agent as a Kubernetes citizen: the API client, and errors that name
//! the permission a denied request needed.
//!
//! Kubernetes is the agent's store and coordinator. Each node's report is a
//! `NodeHardwareReport` ([`crd`], [`publish`]); one pod holds a
//! `coordination.k8s.io/v1` Lease ([`lease`]) and, while it does, aggregates
//! the cluster ([`nodes`], [`aggregate`]), registers it on AIoD and mints
//! the platform's credentials ([`credentials`]).

pub mod aggregate;
pub mod crd;
pub mod credentials;
pub mod lease;
pub mod nodes;
pub mod publish;

use std::fmt;
use std::future::Future;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The agent makes no watch or long-running request, so no response takes long.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The field manager of every write, so `kubectl get --show-managed-fields`
/// shows which fields the agent owns.
pub const FIELD_MANAGER: &str = "hw-agent";

/// A client for one cluster, and what the platform needs to reach it.
#[derive(Clone)]
pub struct Connection {
    pub client: kube::Client,
    /// The API server URL this client talks to.
    pub server_url: String,
    /// PEM of the CA(s) the client trusts for the API server, if any.
    pub ca_pem: Option<String>,
    /// The kubeconfig's cluster name of the current context.
    pub kubeconfig_cluster: Option<String>,
    /// True when the configuration came from the pod's service account, so
    /// `server_url` is an in-cluster address.
    pub in_cluster: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("server_url", &self.server_url)
            .field("kubeconfig_cluster", &self.kubeconfig_cluster)
            .field("in_cluster", &self.in_cluster)
            .finish_non_exhaustive()
    }
}

/// Connects with `kubeconfig`, else `KUBECONFIG`, else the pod's service
/// account when running in a cluster, else `~/.kube/config`.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<Connection> {
    crate::aiod::tls::install_crypto_provider();
    let env_kubeconfig = std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty());
    let (config, kubeconfig_cluster, in_cluster) = if let Some(path) = kubeconfig {
        let file = Kubeconfig::read_from(path).with_context(|| {
            format!("failed to read --kubeconfig {}; pass a readable kubeconfig file", path.display())
        })?;
        let cluster = current_cluster(&file);
        let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("--kubeconfig {} has no usable current context", path.display()))?;
        (config, cluster, false)
    } else if env_kubeconfig.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let config = kube::Config::incluster()
            .context("failed to load the pod's service-account configuration; is the ServiceAccount token mounted?")?;
        (config, None, true)
    } else {
        let file = Kubeconfig::read()
            .context("no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG, or run inside a cluster")?;
        let cluster = current_cluster(&file);
        let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .context("the kubeconfig has no usable current context")?;
        (config, cluster, false)
    };

    let mut config = config;
    // Bound every request: without a read timeout a request to an API
    // server that accepts connections but never responds waits forever.
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(READ_TIMEOUT);
    let server_url = config.cluster_url.to_string().trim_end_matches('/').to_owned();
    let ca_pem =
        config.root_cert.as_ref().map(|certificates| certificates.iter().map(|der| pem_certificate(der)).collect());
    let client = kube::Client::try_from(config).context("failed to build the Kubernetes client")?;
    Ok(Connection { client, server_url, ca_pem, kubeconfig_cluster, in_cluster })
}

fn current_cluster(file: &Kubeconfig) -> Option<String> {
    let current = file.current_context.as_deref()?;
    let context = file.contexts.iter().find(|named| named.name == current)?;
    context.context.as_ref().map(|context| context.cluster.clone())
}

fn pem_certificate(der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The purpose of a request to the API server, so that a failure can name
/// the permission it needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The RBAC verb: get, list, create, update, patch or delete.
    pub verb: &'static str,
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The resource, with a subresource as `serviceaccounts/token`.
    pub resource: &'static str,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Action {
    pub fn cluster(verb: &'static str, group: &'static str, resource: &'static str, name: Option<&str>) -> Self {
        Self { verb, group, resource, namespace: None, name: name.map(str::to_owned) }
    }

    pub fn namespaced(
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        namespace: &str,
        name: Option<&str>,
    ) -> Self {
        Self { verb, group, resource, namespace: Some(namespace.to_owned()), name: name.map(str::to_owned) }
    }

    /// Formats the RBAC rule that allows this action, as YAML for a Role or ClusterRole.
    pub fn rule(&self) -> String {
        format!("{{apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [\"{}\"]}}", self.group, self.resource, self.verb)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(name) = &self.name {
            write!(f, " `{name}`")?;
        }
        match &self.namespace {
            Some(namespace) => write!(f, " in namespace `{namespace}`"),
            None => Ok(()),
        }
    }
}

/// A failed request to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// RBAC denied the request; the message carries the rule to add.
    #[error(
        "the Kubernetes API server denied {action}: {message}; add the rule {rule} to the agent's {role} \
         (docker/kubernetes/rbac.yaml)",
        rule = action.rule(),
        role = if action.namespace.is_some() { "ClusterRole, or to a Role in that namespace" } else { "ClusterRole" }
    )]
    Forbidden { action: Action, message: String },
    /// The API server could not be reached or did not respond.
    #[error("cannot reach the Kubernetes API server (to {action}): {message}; check --kubeconfig and the network")]
    Unreachable { action: Action, message: String },
    /// Any other answer: not found, conflict, invalid, server error.
    #[error("failed to {action}: HTTP {code} {reason}: {message}")]
    Api { action: Action, code: u16, reason: String, message: String },
    /// A response the client could not use.
    #[error("failed to {action}: {message}")]
    Other { action: Action, message: String },
}

impl KubeError {
    pub fn from_kube(action: Action, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 403 => {
                KubeError::Forbidden { action, message: status.message.clone() }
            }
            kube::Error::Api(status) => KubeError::Api {
                action,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            kube::Error::HyperError(error) => KubeError::Unreachable { action, message: error.to_string() },
            kube::Error::Service(error) => KubeError::Unreachable { action, message: error.to_string() },
            other => KubeError::Other { action, message: other.to_string() },
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Forbidden { .. } => Some(403),
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 409 Conflict: the object changed since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, KubeError::Api { code: 409, reason, .. } if reason == "Conflict")
    }

    /// 409 AlreadyExists: a create lost a race.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, KubeError::Api { code: 409, reason, .. } if reason == "AlreadyExists")
    }
}

/// Checks for an RFC 1123 label, the form of namespace and Lease names.
pub fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Lists every object of `api`, 500 per request, following `continue` tokens.
pub async fn list_all<K>(api: &kube::Api<K>, action: Action) -> Result<Vec<K>, KubeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut objects = Vec::new();
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let page = call(action.clone(), api.list(&params)).await?;
        objects.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(objects),
        }
    }
}

/// Awaits a kube call and tags its failure with what it was for.
pub async fn call<T>(action: Action, request: impl Future<Output = Result<T, kube::Error>>) -> Result<T, KubeError> {
    request.await.map_err(|error| KubeError::from_kube(action, error))
}

/// Like [`call`], but a 404 is `None`.
pub async fn call_optional<T>(
    action: Action,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Option<T>, KubeError> {
    match call(action, request).await {
        Ok(value) => Ok(Some(value)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Reads the `kube-system` Namespace's UID, which identifies the cluster for
/// as long as it exists, and the server's version.
pub async fn cluster_identity(client: &kube::Client) -> Result<(String, String), KubeError> {
    use k8s_openapi::api::core::v1::Namespace;
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let namespace =
        call(Action::cluster("get", "", "namespaces", Some("kube-system")), namespaces.get("kube-system")).await?;
    let uid = namespace.metadata.uid.ok_or_else(|| KubeError::Other {
        action: Action::cluster("get", "", "namespaces", Some("kube-system")),
        message: "the namespace has no metadata.uid".to_owned(),
    })?;
    let version = call(Action::cluster("get", "", "version", None), client.apiserver_version()).await?;
    Ok((uid, version.git_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_error_names_the_rule_to_add() {
        let error = KubeError::Forbidden {
            action: Action::cluster("patch", "hw-agent.aiod.eu", "nodehardwarereports", Some("node-1")),
            message: "denied".to_owned(),
        };
        let text = error.to_string();
        assert!(text.contains("patch nodehardwarereports.hw-agent.aiod.eu `node-1`"), "{text}");
        assert!(
            text.contains(r#"{apiGroups: ["hw-agent.aiod.eu"], resources: ["nodehardwarereports"], verbs: ["patch"]}"#),
            "{text}"
        );
        assert!(text.contains("ClusterRole"), "{text}");
    }

    #[test]
    fn pem_lines_are_64_characters() {
        let pem = pem_certificate(&[7u8; 100]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.lines().all(|line| line.len() <= 64));
    }
}
