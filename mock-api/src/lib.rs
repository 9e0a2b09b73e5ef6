//! `aiod-mock`: a stand-in for the AI-on-Demand REST API for computational
//! assets, served over TLS, with an OIDC client-credentials token endpoint
//! in the shape of AIoD's Keycloak realm.
//!
//! [`start`] runs the server inside the caller's tokio runtime, which is how
//! `hw-agent demo` and the tests embed it; the `aiod-mock` binary wraps it.
//!
//! Besides AIoD's routes, it serves the credentials hand-off extension, which
//! is not part of AIoD's API: `GET /extensions/hw-agent/credentials-key`, and
//! `GET` and `PUT /extensions/hw-agent/computational_assets/{identifier}/credentials`.
//! See [`credentials`] and `docs/credentials-handoff.md`.

pub mod api;
pub mod auth;
pub mod credentials;
pub mod faults;
pub mod persist;
pub mod store;
pub mod tls;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use auth::Client;
pub use faults::FaultConfig;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one mock server.
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub listen: SocketAddr,
    /// Holds the TLS material (`ca.pem`, `server.pem`, `server.key`), the
    /// credentials key (`credentials-x25519.key`) and the SQLite state
    /// database, so assets, platforms, clients and hand-offs survive a restart.
    pub state_dir: PathBuf,
    pub clients: Vec<Client>,
    pub token_lifetime: Duration,
    pub auto_publish: bool,
    /// Platform names registered at start, besides AIoD's built-in ones.
    pub platforms: Vec<String>,
    /// Host names or IP addresses added to a newly generated server certificate.
    pub tls_names: Vec<String>,
    /// Faults to inject into responses; none by default.
    pub faults: FaultConfig,
}

/// A running mock. Dropping it does not stop the server; call [`RunningMock::shutdown`].
#[derive(Debug)]
pub struct RunningMock {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    pub ca_path: PathBuf,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningMock {
    /// `https://127.0.0.1:PORT`, with the address the server is bound to.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("{}/realms/aiod/protocol/openid-connect/token", self.base_url())
    }

    /// Stops accepting connections, closes the open ones and waits for the
    /// accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Binds the listener, prepares TLS and starts serving in the background.
pub async fn start(config: MockConfig) -> anyhow::Result<RunningMock> {
    let files = tls::ensure_material(&config.state_dir, &config.tls_names)?;
    let tls_config = tls::server_config(&files)?;
    let ca_pem =
        std::fs::read_to_string(&files.ca).with_context(|| format!("failed to read {}", files.ca.display()))?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to listen on {}; pick a free address with --listen", config.listen))?;
    let addr = listener.local_addr().context("failed to read the bound address")?;
    let credentials_key = credentials::CredentialsKey::load_or_create(&config.state_dir)?;

    let mut database = persist::Database::open(&config.state_dir)?;
    let clients = database.merge_clients(&config.clients)?;
    let mut catalogue = database.load_catalogue(store::Catalogue::with_platforms(&config.platforms))?;
    catalogue.attach(database);
    tracing::info!(
        assets = catalogue.assets.len(),
        platforms = catalogue.platforms.len(),
        clients = clients.len(),
        hand_offs = catalogue.hand_offs.len(),
        credentials_key_id = %credentials_key.key_id(),
        "state loaded"
    );

    let state = Arc::new(api::State {
        realm: Mutex::new(auth::Realm::new(clients, config.token_lifetime)),
        catalogue: Mutex::new(catalogue),
        auto_publish: config.auto_publish,
        credentials_key,
    });
    let (shutdown, mut stopped) = watch::channel(false);
    let acceptor = TlsAcceptor::from(tls_config);
    if config.faults.is_active() {
        tracing::warn!(faults = ?config.faults, "fault injection is on");
    }
    let service = faults::FaultInjector::new(config.faults.clone()).wrap(warp::service(api::routes(state)));

    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "failed to accept a connection");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let service = service.clone();
            let mut closing = stopped.clone();
            tokio::spawn(async move {
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
                let builder = auto::Builder::new(TokioExecutor::new());
                let served = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
                // Shutting down closes kept-alive connections too, so a client
                // cannot go on talking to a stopped mock's state.
                tokio::select! {
                    result = served => {
                        if let Err(error) = result {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    }
                    _ = closing.wait_for(|stop| *stop) => tracing::debug!(%peer, "connection closed by shutdown"),
                }
            });
        }
    });

    tracing::info!(%addr, ca = %files.ca.display(), "aiod-mock listening");
    Ok(RunningMock { addr, ca_pem, ca_path: files.ca, shutdown, task })
}
