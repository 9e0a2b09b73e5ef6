//! `hw-agent run`: the DaemonSet pod's loop.
//!
//! Every pod collects its node and publishes the report. One pod, elected
//! through a Lease, also aggregates the cluster, registers it on AIoD and
//! keeps the platform's credentials fresh. Leader work runs only while the
//! Lease is held: losing it cancels the work in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use chrono::Utc;
use kube::Api;
use kube::api::DeleteParams;
use secrecy::ExposeSecret as _;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::aiod::{AiodClient, CredentialsPlaintext, KeyPolicy, cluster_asset_body};
use crate::cli::RunSettings;
use crate::cluster::aggregate::{ClusterInfo, ClusterInputs, aggregate, describe};
use crate::cluster::crd::{GROUP, NodeHardwareReport, PLURAL};
use crate::cluster::credentials::{CredentialSettings, Credentials, IssuedToken};
use crate::cluster::lease::{LeaderElector, LeaseTiming};
use crate::cluster::nodes::{ClusterNode, list_nodes, node_object};
use crate::cluster::publish::{PublishOutcome, Publisher};
use crate::cluster::{Action, Connection, KubeError, call_optional, list_all};
use crate::collection::Collection;
use crate::endpoints::EndpointState;
use crate::logging::repeats;
use crate::metrics::Metrics;
use crate::policy::NODES_COLLECTOR;
use crate::report::model::AgentInfo;
use crate::runtime::{GuestLimits, LoadedNodeCollector, NODES_COMPONENT};

/// Wait after a failed round before trying again, unless the interval is shorter.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// How long an unchanged cluster asset goes without a write. The periodic
/// write recreates an asset someone deleted on the platform.
const ASSET_RESYNC: Duration = Duration::from_secs(3_600);

/// Everything the pod's tasks share.
#[derive(Debug)]
pub struct Agent {
    settings: RunSettings,
    connection: Connection,
    collection: Arc<Collection>,
    node_collector: LoadedNodeCollector,
    /// Limits of the `nodes` collector, from its policy entry.
    node_limits: GuestLimits,
    /// Connected on the first leader round that needs it: followers never
    /// talk to AIoD, so an AIoD outage cannot stop node reports.
    aiod: tokio::sync::Mutex<Option<Arc<AiodClient>>>,
    /// True once this node's report has been published (or found current),
    /// false again once the agent stops.
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// The leader's memory within one term. A new term starts empty, so
/// a new leader mints a fresh token: it cannot read the previous leader's.
#[derive(Debug, Default)]
struct LeaderTerm {
    token: Option<IssuedToken>,
    asset: Option<String>,
    handed_off_key: Option<String>,
    /// Fingerprint of the last registered cluster report, and when.
    registered: Option<(String, std::time::Instant)>,
}

impl Agent {
    /// Connects to the cluster and AIoD and loads the collectors.
    pub async fn start(
        settings: RunSettings,
        connection: Connection,
        endpoints: EndpointState,
    ) -> anyhow::Result<Arc<Self>> {
        let collection = Collection::load(&settings.collect).await?;
        let node_collector = collection
            .runtime()
            .load_node_collector(NODES_COMPONENT)
            .await
            .context("failed to load the built-in nodes collector")?;
        let node_limits = collection
            .policy()
            .decide(NODES_COLLECTOR, &node_collector.info.capabilities)
            .map_err(|reason| {
                anyhow::anyhow!(
                    "{} denies the built-in `{NODES_COLLECTOR}` collector, which the leader needs: {reason}",
                    collection.policy().origin()
                )
            })?
            .limits;
        if settings.aiod.is_none() {
            tracing::warn!("AIoD is not configured: node reports are published, the cluster is not registered");
        }
        Ok(Arc::new(Self {
            settings,
            connection,
            collection: Arc::new(collection),
            node_collector,
            node_limits,
            aiod: tokio::sync::Mutex::new(None),
            ready: endpoints.ready,
            metrics: endpoints.metrics,
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Runs until `shutdown` becomes true: the node loop, the election and
    /// leader work side by side. On shutdown the node and leader rounds in
    /// flight finish (drain), and only then is the Lease released, so no
    /// other pod starts leading while this one still writes.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let (leading_tx, leading_rx) = watch::channel(false);
        let (release_tx, release_rx) = watch::channel(false);
        let elector = LeaderElector::new(
            self.connection.client.clone(),
            &self.settings.kube.namespace,
            self.settings.lease_name.clone(),
            self.settings.identity.clone(),
            LeaseTiming::from_lease_duration(self.settings.lease_duration),
        );
        let election = tokio::spawn(elector.run(leading_tx, release_rx));
        let node = tokio::spawn(Arc::clone(&self).node_loop(shutdown.clone()));
        let leader = tokio::spawn(Arc::clone(&self).leader_loop(leading_rx, shutdown.clone()));
        let mut stopping = shutdown.clone();
        let _ = stopping.wait_for(|stop| *stop).await;
        self.ready.store(false, Ordering::Relaxed);
        let _ = tokio::join!(node, leader);
        let _ = release_tx.send(true);
        let _ = election.await;
        self.metrics.set_leader(false);
        tracing::info!("stopped");
    }

    async fn node_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut publisher = Publisher::new(self.connection.client.clone(), self.settings.node_name.clone());
        let mut round: u64 = 0;
        while !*shutdown.borrow() {
            round += 1;
            // Not raced against shutdown: a round in flight finishes, so a
            // report is never left half-written.
            let span = tracing::info_span!("node_round", node = %self.settings.node_name, round);
            let wait = self.node_round(&mut publisher).instrument(span).await;
            if sleep_or_shutdown(wait, &mut shutdown).await {
                return;
            }
        }
    }

    /// Collects and publishes this node's report once; returns how long to
    /// wait before the next round.
    async fn node_round(&self, publisher: &mut Publisher) -> Duration {
        const FAILED: &str = "failed to publish the node report";
        let started = std::time::Instant::now();
        let report = self.collection.collect().await;
        self.metrics.observe_collection(&report, started.elapsed());
        match publisher.publish(&report).await {
            Ok(outcome) => {
                self.metrics.observe_publish(Some(outcome));
                match outcome {
                    PublishOutcome::Unchanged => tracing::debug!("node report unchanged; nothing written"),
                    outcome => tracing::info!(?outcome, "published the node report"),
                }
                repeats().clear(FAILED);
                self.ready.store(true, Ordering::Relaxed);
                self.settings.interval
            }
            Err(error) => {
                self.metrics.observe_publish(None);
                repeats().error(FAILED, &format!("{error:#}"));
                self.settings.interval.min(RETRY_AFTER_FAILURE)
            }
        }
    }

    /// Waits for leadership, runs leader rounds while it lasts, and drops
    /// the work in flight the moment it is lost. On shutdown the round in
    /// flight finishes first.
    async fn leader_loop(self: Arc<Self>, mut leading: watch::Receiver<bool>, shutdown: watch::Receiver<bool>) {
        const FAILED: &str = "leader round failed";
        loop {
            let mut waiting = shutdown.clone();
            tokio::select! {
                changed = leading.wait_for(|leader| *leader) => if changed.is_err() { return },
                _ = waiting.wait_for(|stop| *stop) => return,
            }
            if *shutdown.borrow() {
                return;
            }
            self.metrics.set_leader(true);
            let mut term = LeaderTerm::default();
            let mut stop = shutdown.clone();
            let work = async {
                let mut round: u64 = 0;
                loop {
                    round += 1;
                    let span = tracing::info_span!("leader_round", round);
                    let result = self.leader_round(&mut term).instrument(span).await;
                    self.metrics.observe_leader_round(result.is_ok());
                    let wait = match result {
                        Ok(wait) => {
                            repeats().clear(FAILED);
                            wait
                        }
                        Err(error) => {
                            repeats().error(FAILED, &format!("{error:#}"));
                            self.settings.interval.min(RETRY_AFTER_FAILURE)
                        }
                    };
                    if sleep_or_shutdown(wait, &mut stop).await {
                        return;
                    }
                }
            };
            let stopped = tokio::select! {
                () = work => true,
                _ = leading.wait_for(|leader| !*leader) => {
                    tracing::info!("leader work stopped");
                    false
                }
            };
            // A new term mints its own token; this one's expiry no longer
            // describes anything this pod holds.
            self.metrics.set_leader(false);
            self.metrics.set_credentials_expiry(None);
            if stopped {
                return;
            }
        }
    }

    /// One leader round; returns how long to wait before the next one.
    async fn leader_round(&self, term: &mut LeaderTerm) -> anyhow::Result<Duration> {
        let client = &self.connection.client;
        let nodes = list_nodes(client).await?;
        let objects = nodes.iter().map(node_object).collect::<Vec<_>>();
        let records = self
            .collection
            .runtime()
            .collect_nodes(&self.node_collector, objects, self.node_limits)
            .await
            .map_err(|failure| anyhow::anyhow!("the nodes collector failed ({:?}): {failure}", failure.status))?;
        let mut cluster_nodes: Vec<ClusterNode> = records.into_iter().map(ClusterNode::from).collect();
        cluster_nodes.sort_by(|a, b| a.name.cmp(&b.name));

        let reports = list_reports(client).await?;
        self.delete_stale_reports(&cluster_nodes, &reports).await;

        let (uid, version) = crate::cluster::cluster_identity(client).await?;
        let cluster_name = cluster_name(&self.settings.kube.cluster_name, &self.connection);
        let started = std::time::Instant::now();
        let report = aggregate(&ClusterInputs {
            cluster: ClusterInfo { name: cluster_name.clone(), uid: uid.clone(), kubernetes_version: version },
            nodes: &cluster_nodes,
            reports: &reports,
            agent: AgentInfo { name: "hw-agent".to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() },
            generated_at: Utc::now(),
        });
        let (plain, condensed) = describe(&report)?;
        tracing::debug!(
            nodes = report.node_count,
            groups = report.groups.len(),
            characters = plain.chars().count(),
            aggregation_ms = started.elapsed().as_secs_f64() * 1e3,
            "aggregated the cluster report"
        );

        let Some(aiod) = self.aiod_client().await? else { return Ok(self.settings.interval) };
        let aiod = aiod.as_ref();
        let fingerprint = cluster_fingerprint(&condensed)?;
        let current =
            term.registered.as_ref().is_some_and(|(known, at)| *known == fingerprint && at.elapsed() < ASSET_RESYNC);
        let asset = match (&term.asset, current) {
            (Some(asset), true) => asset.clone(),
            _ => {
                let body = cluster_asset_body(&condensed, plain, &aiod.settings().platform)?;
                let registration = aiod.register(&uid, &body).await?;
                tracing::info!(
                    identifier = %registration.identifier,
                    created = registration.created,
                    "registered the cluster as a computational asset"
                );
                term.registered = Some((fingerprint, std::time::Instant::now()));
                registration.identifier
            }
        };
        self.keep_credentials(aiod, term, &asset, &cluster_name, &uid).await
    }

    /// Returns the AIoD client, connecting (and fetching a token) on first use.
    async fn aiod_client(&self) -> anyhow::Result<Option<Arc<AiodClient>>> {
        let Some(settings) = &self.settings.aiod else { return Ok(None) };
        let mut client = self.aiod.lock().await;
        if let Some(client) = client.as_ref() {
            return Ok(Some(Arc::clone(client)));
        }
        let connected =
            Arc::new(AiodClient::connect_with_metrics(settings.clone(), Some(Arc::clone(&self.metrics))).await?);
        *client = Some(Arc::clone(&connected));
        Ok(Some(connected))
    }

    /// Mints or rotates the token when due, and hands it off when it is new,
    /// the asset is new, or the platform's key changed.
    async fn keep_credentials(
        &self,
        aiod: &AiodClient,
        term: &mut LeaderTerm,
        asset: &str,
        cluster_name: &str,
        cluster_uid: &str,
    ) -> anyhow::Result<Duration> {
        let credentials = Credentials::new(
            self.connection.client.clone(),
            CredentialSettings {
                namespace: self.settings.kube.namespace.clone(),
                access: self.settings.kube.access.clone(),
                token_ttl: self.settings.kube.token_ttl,
            },
        );
        // Without a URL the platform can use there is nothing worth minting.
        let api_server_url = handed_off_server_url(&self.settings.kube.api_server_url, &self.connection)?;
        let now = Utc::now();
        let mut due = term.token.as_ref().is_none_or(|token| token.rotate_at().is_some_and(|at| now >= at));
        if let Some(token) = &term.token
            && !due
        {
            // `hw-agent credentials revoke` or a person may have deleted the
            // ServiceAccount, which voids the token the platform holds.
            let status = credentials.status().await?;
            if status.issued_at.as_deref() != Some(token.issued_at.to_rfc3339().as_str()) {
                tracing::warn!(
                    "the platform's ServiceAccount or token was replaced or deleted outside this leader; minting new credentials"
                );
                due = true;
            }
        }
        if due {
            let rotated = term.token.is_some();
            let token = credentials.mint().await?;
            tracing::info!(
                expires_at = ?token.expires_at.map(|time| time.to_rfc3339()),
                method = ?token.method,
                rotated,
                "issued a token for the platform"
            );
            self.metrics.set_credentials_expiry(token.expires_at);
            term.token = Some(token);
            term.handed_off_key = None;
        }
        let current_key = aiod.credentials_key().await?.key_id;
        let needs_hand_off =
            due || term.asset.as_deref() != Some(asset) || term.handed_off_key.as_deref() != Some(current_key.as_str());
        if let (true, Some(token)) = (needs_hand_off, &term.token) {
            let cluster = ClusterAccess {
                name: cluster_name,
                uid: cluster_uid,
                api_server_url: api_server_url.clone(),
                ca_pem: self.connection.ca_pem.as_deref(),
            };
            let previous = term.handed_off_key.clone();
            let hand_off = hand_off_token(
                aiod,
                &credentials,
                asset,
                token,
                &cluster,
                self.settings.kube.platform_key_id.clone(),
                previous,
            )
            .await?;
            tracing::info!(asset, key_id = %hand_off.key_id, "handed the credentials off to the platform");
            term.asset = Some(asset.to_owned());
            term.handed_off_key = Some(hand_off.key_id);
        }
        let until_rotation = term
            .token
            .as_ref()
            .and_then(IssuedToken::rotate_at)
            .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(self.settings.interval);
        Ok(self.settings.interval.min(until_rotation.max(Duration::from_secs(1))))
    }

    /// Deletes reports of nodes that no longer exist. The garbage collector
    /// does this too through the owner reference, but doing it here also
    /// covers reports that lost it and clusters where the collector lags.
    async fn delete_stale_reports(&self, nodes: &[ClusterNode], reports: &[NodeHardwareReport]) {
        let api: Api<NodeHardwareReport> = Api::all(self.connection.client.clone());
        for report in reports {
            let Some(name) = report.metadata.name.as_deref() else { continue };
            if nodes.binary_search_by(|node| node.name.as_str().cmp(name)).is_ok() {
                continue;
            }
            let action = Action::cluster("delete", GROUP, PLURAL, Some(name));
            match call_optional(action, api.delete(name, &DeleteParams::default())).await {
                Ok(_) => tracing::info!(node = name, "deleted the hardware report of a node that no longer exists"),
                Err(error) => tracing::warn!(node = name, error = %error, "failed to delete a stale hardware report"),
            }
        }
    }
}

/// The cluster as the platform reaches it.
#[derive(Debug)]
pub struct ClusterAccess<'a> {
    pub name: &'a str,
    /// UID of the `kube-system` Namespace.
    pub uid: &'a str,
    pub api_server_url: String,
    /// PEM of the CA that signs the API server's certificate.
    pub ca_pem: Option<&'a str>,
}

/// Seals `token` with the cluster's address for the platform's key, stores
/// it on the platform for `asset`, and records the hand-off as annotations
/// on the platform's ServiceAccount. `previous` is the key id of the last
/// hand-off, read from those annotations when `None`.
pub async fn hand_off_token(
    aiod: &AiodClient,
    credentials: &Credentials,
    asset: &str,
    token: &IssuedToken,
    cluster: &ClusterAccess<'_>,
    pinned_key_id: Option<String>,
    previous: Option<String>,
) -> anyhow::Result<crate::aiod::HandOff> {
    let plaintext = CredentialsPlaintext {
        schema: crate::aiod::CREDENTIALS_SCHEMA,
        cluster_name: cluster.name,
        cluster_uid: cluster.uid,
        api_server_url: &cluster.api_server_url,
        certificate_authority_data: cluster.ca_pem.map(|pem| base64::engine::general_purpose::STANDARD.encode(pem)),
        user: &token.user,
        token: token.token.expose_secret(),
        issued_at: token.issued_at.to_rfc3339(),
        expires_at: token.expires_at.map(|time| time.to_rfc3339()),
        access: token.access.to_string(),
    };
    let plaintext = serde_json::to_vec(&plaintext).context("failed to serialise the credentials")?;
    let previous = match previous {
        Some(key) => Some(key),
        None => credentials.status().await?.platform_key_id,
    };
    let policy = KeyPolicy { pinned: pinned_key_id, previous };
    let hand_off = aiod.hand_off(asset, &plaintext, &policy).await?;
    credentials
        .record(&[("handed-off-to", Some(asset.to_owned())), ("platform-key-id", Some(hand_off.key_id.clone()))])
        .await?;
    Ok(hand_off)
}

/// SHA-256 of a cluster report without its timestamp: equal fingerprints
/// mean the asset needs no update.
fn cluster_fingerprint(report: &crate::cluster::aggregate::ClusterReport) -> anyhow::Result<String> {
    use sha2::{Digest as _, Sha256};
    let mut value = serde_json::to_value(report).context("failed to serialise the cluster report")?;
    if let Some(object) = value.as_object_mut() {
        object.remove("generated_at");
    }
    Ok(hex::encode(Sha256::digest(serde_json::to_vec(&value).context("failed to serialise the cluster report")?)))
}

/// Picks the cluster's name on AIoD: the configured one, else the
/// kubeconfig's cluster name, else `kubernetes`.
pub fn cluster_name(configured: &Option<String>, connection: &Connection) -> String {
    configured.clone().or_else(|| connection.kubeconfig_cluster.clone()).unwrap_or_else(|| "kubernetes".to_owned())
}

/// Picks the API server URL the platform gets: the configured one, else the
/// kubeconfig's. An in-cluster address is refused, since the platform is
/// outside the cluster.
pub fn handed_off_server_url(configured: &Option<String>, connection: &Connection) -> anyhow::Result<String> {
    match configured {
        Some(url) => Ok(url.clone()),
        None if connection.in_cluster => anyhow::bail!(
            "set --api-server-url (HW_AGENT_API_SERVER_URL): inside the cluster the agent reaches the API server at \
             {}, an address the platform cannot use",
            connection.server_url
        ),
        None => Ok(connection.server_url.clone()),
    }
}

/// Lists every NodeHardwareReport.
pub async fn list_reports(client: &kube::Client) -> Result<Vec<NodeHardwareReport>, KubeError> {
    let api: Api<NodeHardwareReport> = Api::all(client.clone());
    list_all(&api, Action::cluster("list", GROUP, PLURAL, None)).await
}

/// Sleeps, or returns early with `true` when shutdown is requested.
async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(duration) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    };
    stopped || *shutdown.borrow()
}
