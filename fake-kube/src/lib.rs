//! A small in-memory Kubernetes API server on loopback, for testing hw-agent with the
//! real kube-rs client and no cluster.
//!
//! [`FakeCluster::start`] serves HTTPS on `127.0.0.1` with a private CA. Responses
//! carry the status codes and `Status` bodies of kube-apiserver 1.33. The served
//! resources are nodes, namespaces, service accounts (with the TokenRequest API),
//! secrets (with the legacy token controller), leases, RBAC objects,
//! NodeHardwareReports and CRDs. Tests drive faults through its methods: denied
//! requests, a disabled TokenRequest API, a short token lifetime, an unavailable server.
//!
//! Not implemented: watches, aggregated discovery, finalizers and garbage collection,
//! and admission beyond name validation and the check that a namespace exists. Objects
//! live in one `BTreeMap` keyed by API path, behind one mutex that each request holds
//! while it is handled.

mod discovery;
mod handler;
mod patch;
mod rbac;
mod resources;
mod select;
mod state;
mod status;
mod tls;

use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::handler::ApiRequest;
use crate::resources::Target;
use crate::state::{Credential, State};
use crate::status::{Reply, ReplyBody};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// kube-apiserver's default limit on a request body (3 MiB).
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// One request as the fake received it, with the response status.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub content_type: Option<String>,
    /// The body parsed as JSON; `None` when it was empty or not JSON.
    pub body: Option<Value>,
    pub status: u16,
}

impl RecordedRequest {
    /// Formats the request as `PATCH /apis/...?fieldManager=hw-agent -> 200`, for assertion messages.
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {} -> {}", self.method, self.path, self.status)
        } else {
            format!("{} {}?{} -> {}", self.method, self.path, self.query, self.status)
        }
    }
}

/// A service account token that the TokenRequest API or the legacy token controller issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub namespace: String,
    pub service_account: String,
    pub token: String,
    /// RFC 3339 in UTC; `None` for legacy Secret tokens, which do not expire.
    pub expiration_timestamp: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    addr: SocketAddr,
}

impl Shared {
    /// Locks the state; a panic in another request does not make it unusable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake API server. Dropping it stops the server too, without waiting.
pub struct FakeCluster {
    shared: Arc<Shared>,
    ca_pem: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeCluster {
    /// Shows the address only, because the state contains bearer tokens.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("FakeCluster").field("addr", &self.shared.addr).finish_non_exhaustive()
    }
}

impl FakeCluster {
    /// Generates the TLS material, seeds the objects of a fresh cluster (namespaces
    /// `default`, `kube-system` and `aiod-hw-agent`, cluster roles `cluster-admin`, `admin`
    /// and `view`) and serves on `127.0.0.1` at a free port, inside the caller's runtime.
    pub async fn start() -> anyhow::Result<FakeCluster> {
        let material = tls::generate()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.context("failed to listen on 127.0.0.1")?;
        let addr = listener.local_addr().context("failed to read the bound address")?;
        let shared = Arc::new(Shared { state: Mutex::new(State::new(material.ca_pem.clone())), addr });
        let (stop, stopped) = watch::channel(false);
        let acceptor = TlsAcceptor::from(material.server_config);
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&shared), stopped));
        tracing::info!(%addr, "fake Kubernetes API server listening");
        Ok(FakeCluster { shared, ca_pem: material.ca_pem, stop, task: Some(task) })
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes a kubeconfig with cluster `fake`, user `admin` (bearer `token`) and current
    /// context `fake`. A new `token` is accepted from then on as the user `admin`, who may
    /// do everything not [denied](Self::deny). A token that the fake issued keeps
    /// authenticating as its service account. The file is created with mode 0600 on Unix.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        // JSON strings are valid YAML double-quoted scalars, which escapes any token safely.
        let quote = |text: &str| serde_json::to_string(text).context("failed to quote a kubeconfig value");
        let kubeconfig = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
             users:\n\
             - name: admin\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: admin\n\
             current-context: fake\n\
             preferences: {{}}\n",
            server = quote(&self.url())?,
            ca = quote(&STANDARD.encode(&self.ca_pem))?,
            token = quote(token)?,
        );
        write_private(path, kubeconfig.as_bytes())
            .with_context(|| format!("failed to write the kubeconfig {}", path.display()))?;
        // A token the fake issued keeps its service account identity and revocation.
        self.shared.lock().credentials.entry(token.to_owned()).or_insert(Credential::Admin);
        Ok(())
    }

    /// Stores a v1 Node, filling `metadata.uid`, `resourceVersion` and
    /// `creationTimestamp` when missing.
    ///
    /// # Panics
    /// When the node has no `metadata.name`.
    pub fn add_node(&self, node: Value) {
        let name = state::meta_str(&node, "name").expect("add_node needs a node with metadata.name").to_owned();
        let nodes = resources::find("", "v1", "nodes").expect("nodes are in the resource table");
        let key = nodes.object_path(None, &name);
        self.shared.lock().put_fixture(nodes, &key, node, true);
    }

    /// Deletes a node without garbage-collecting the objects it owns, so that tests
    /// can check how the agent handles reports of nodes that are gone.
    pub fn remove_node(&self, name: &str) {
        let mut state = self.shared.lock();
        if state.objects.remove(&format!("/api/v1/nodes/{name}")).is_some() {
            state.bump();
        }
    }

    /// Denies every request for `verb` on `resource` in API `group` with a 403 as RBAC
    /// would. `resource` is a plural, or `plural/subresource` such as
    /// `serviceaccounts/token`; `group` is `""` for the core group. Verbs are get, list,
    /// create, update, patch, delete and deletecollection.
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        self.shared.lock().denials.insert((verb.to_owned(), group.to_owned(), resource.to_owned()));
    }

    /// Turns RBAC on or off (off by default). While on, a request made with a
    /// service-account token succeeds only when a stored RoleBinding or
    /// ClusterRoleBinding grants it, and creating a binding needs the `bind`
    /// verb on its role. The admin token stays unrestricted. Put the Roles and
    /// bindings with [`put_object`](Self::put_object).
    pub fn enforce_rbac(&self, enforced: bool) {
        self.shared.lock().rbac_enforced = enforced;
    }

    /// Removes every denial.
    pub fn allow_all(&self) {
        self.shared.lock().denials.clear();
    }

    /// Turns the TokenRequest API on (the default) or off; when off,
    /// `POST .../serviceaccounts/{name}/token` gets a 404 as on a server without it.
    pub fn set_token_request_enabled(&self, enabled: bool) {
        self.shared.lock().token_request_enabled = enabled;
    }

    /// Caps TokenRequest `expirationSeconds`; longer requests are shortened, as with
    /// kube-apiserver's `--service-account-max-token-expiration`.
    pub fn set_max_token_seconds(&self, max: Option<i64>) {
        self.shared.lock().max_token_seconds = max;
    }

    /// While `down`, every request gets 503 ServiceUnavailable, as from an API server
    /// that is not ready. Use [`shutdown`](Self::shutdown) for an unreachable server.
    pub fn set_unavailable(&self, down: bool) {
        self.shared.lock().unavailable = down;
    }

    /// Stops the server: closes the listener and every open connection, so later
    /// requests fail to connect.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "the fake API server task failed");
        }
        tracing::info!(addr = %self.shared.addr, "fake Kubernetes API server stopped");
    }

    /// Returns every request so far, in the order the fake handled them.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Returns the stored object at an API path such as `/api/v1/namespaces/kube-system`.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.shared.lock().objects.get(path).cloned()
    }

    /// Returns the stored objects of a collection path such as
    /// `/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports`, sorted by name, with kind
    /// and apiVersion. A path that names no collection gives an empty list.
    pub fn objects(&self, collection_path: &str) -> Vec<Value> {
        let Target::Collection { resource, namespace } = resources::parse_path(collection_path) else {
            return Vec::new();
        };
        let state = self.shared.lock();
        state.collection(resource, namespace.as_deref()).into_iter().map(|(_, object)| object.clone()).collect()
    }

    /// Stores `object` at an object path as test setup (a Lease held by a dead pod, a
    /// stale report), filling uid and creationTimestamp when missing. It always takes a
    /// new resourceVersion and runs no controller.
    ///
    /// # Panics
    /// When `path` does not name an object of a served resource.
    pub fn put_object(&self, path: &str, object: Value) {
        let Target::Object { resource, namespace, name, subresource: None } = resources::parse_path(path) else {
            panic!("put_object: {path} is not the path of an object of a resource the fake serves");
        };
        let key = resource.object_path(namespace.as_deref(), &name);
        self.shared.lock().put_fixture(resource, &key, object, false);
    }

    /// Returns every token issued so far by the TokenRequest API or the legacy token controller.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.shared.lock().issued.clone()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}

/// Accepts connections until `stopped` changes, then aborts every connection task so
/// that clients with pooled connections see the server go away.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(acceptor.clone(), stream, peer, Arc::clone(&shared)));
                }
                Err(error) => tracing::warn!(%error, "failed to accept a connection"),
            },
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(acceptor: TlsAcceptor, stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(respond(&shared, request).await) }
    });
    if let Err(error) = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Reads the request, handles it under the state lock and records it.
async fn respond(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());

    let collected = Limited::new(body, MAX_BODY_BYTES).collect().await.map(|collected| collected.to_bytes());
    let (bytes, too_large) = match collected {
        Ok(bytes) => (bytes, false),
        Err(error) => {
            tracing::debug!(%path, %error, "failed to read the request body");
            (Bytes::new(), true)
        }
    };
    let (body, body_error) = if bytes.is_empty() {
        (None, None)
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => (Some(value), None),
            Err(error) => (None, Some(error.to_string())),
        }
    };
    let api_request = ApiRequest {
        method: parts.method.clone(),
        path: path.clone(),
        params: handler::parse_query(&query),
        content_type: content_type.clone(),
        token,
        body,
        body_error,
    };

    let reply = {
        let mut state = shared.lock();
        let reply = if too_large {
            status::too_large(MAX_BODY_BYTES)
        } else {
            handler::handle(&mut state, &api_request, shared.addr)
        };
        state.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query,
            content_type,
            body: api_request.body,
            status: reply.status,
        });
        reply
    };
    tracing::debug!(method = %parts.method, %path, status = reply.status, "handled a request");
    into_response(reply)
}

fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let (content_type, bytes) = match reply.body {
        ReplyBody::Json(value) => ("application/json", Bytes::from(value.to_string())),
        ReplyBody::Text(text) => ("text/plain; charset=utf-8", Bytes::from_static(text.as_bytes())),
    };
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}
