//! The agent against a fake Kubernetes API server (`fake-kube`, real HTTPS
//! on loopback, real kube-rs client): publishing, leader election,
//! credentials, RBAC denials and the nodes collector.

mod common;

use std::path::Path;
use std::time::Duration;

use fake_kube::FakeCluster;
use hw_agent::cluster::credentials::{Access, CredentialSettings, Credentials, TokenMethod};
use hw_agent::cluster::lease::{LeaderElector, LeaseTiming};
use hw_agent::cluster::publish::{PublishError, PublishOutcome, Publisher};
use hw_agent::cluster::{Connection, connect};
use hw_agent::collection::Collection;
use hw_agent::report::model::NodeReport;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "test-admin-token";

async fn cluster() -> (FakeCluster, Connection, tempfile::TempDir) {
    let fake = FakeCluster::start().await.expect("fake API server starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, ADMIN_TOKEN).expect("kubeconfig written");
    let connection = connect(Some(&kubeconfig)).await.expect("client connects");
    (fake, connection, dir)
}

/// Builds a Node the way a kubelet registers it.
pub fn node(name: &str, gpus: u32) -> Value {
    let mut capacity =
        json!({"cpu": "64", "memory": "527921152Ki", "pods": "110", "ephemeral-storage": "1874176000Ki"});
    let mut labels = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "gpu-large",
    });
    if gpus > 0 {
        capacity["nvidia.com/gpu"] = json!(gpus.to_string());
        labels["nvidia.com/gpu.product"] = json!("NVIDIA-H100-80GB-HBM3");
        labels["nvidia.com/gpu.memory"] = json!("81559");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "osImage": "Ubuntu 24.04.1 LTS",
                "kernelVersion": "6.8.0-45-generic", "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.33.2", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""
            }
        }
    })
}

async fn fixture_report(root: &str) -> NodeReport {
    let cache = tempfile::tempdir().expect("cache dir");
    let settings = common::settings(&common::fixture(root), None, cache.path());
    Collection::load(&settings).await.expect("collectors load").collect().await
}

fn lines(fake: &FakeCluster) -> Vec<String> {
    fake.requests().iter().map(|request| request.line()).collect()
}

const REPORT_PATH: &str = "/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports/node-1";

#[tokio::test]
async fn node_report_is_written_only_when_it_changes() {
    let (fake, connection, _dir) = cluster().await;
    fake.add_node(node("node-1", 4));
    let node_uid = fake.object("/api/v1/nodes/node-1").expect("node stored")["metadata"]["uid"].clone();
    let report = fixture_report("intel-xeon-2s-nvidia").await;
    let mut publisher = Publisher::new(connection.client.clone(), "node-1");
    fake.clear_requests();

    assert_eq!(publisher.publish(&report).await.expect("first publish"), PublishOutcome::Created);
    let first = lines(&fake);
    assert_eq!(first.len(), 3, "{first:#?}");
    assert!(first[0].starts_with(&format!("GET {REPORT_PATH}")), "{first:#?}");
    assert!(first[0].ends_with("404"), "{first:#?}");
    assert!(first[1].starts_with("GET /api/v1/nodes/node-1"), "{first:#?}");
    assert!(first[1].ends_with("200"), "{first:#?}");
    assert!(first[2].starts_with(&format!("PATCH {REPORT_PATH}")), "{first:#?}");
    let patch = &fake.requests()[2];
    assert_eq!(patch.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert!(patch.query.contains("fieldManager=hw-agent"), "{}", patch.query);
    assert!(patch.query.contains("force=true"), "{}", patch.query);

    let stored = fake.object(REPORT_PATH).expect("report stored");
    assert_eq!(stored["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(stored["metadata"]["ownerReferences"][0]["uid"], node_uid);
    assert_eq!(stored["spec"]["nodeName"], "node-1");
    assert_eq!(stored["spec"]["report"]["cpu"]["sockets"], 2);
    assert_eq!(stored["spec"]["summary"]["cpuThreads"], json!(report.cpu.as_ref().map(|cpu| cpu.threads)));

    // The same hardware collected again: free memory and timestamps differ, the fingerprint does not.
    fake.clear_requests();
    let mut again = report.clone();
    again.generated_at += chrono::Duration::seconds(600);
    if let Some(memory) = again.memory.as_mut() {
        memory.available_bytes = memory.available_bytes.map(|bytes| bytes / 2);
    }
    assert_eq!(publisher.publish(&again).await.expect("second publish"), PublishOutcome::Unchanged);
    let second = lines(&fake);
    assert_eq!(second.len(), 1, "an unchanged report must cost one GET: {second:#?}");
    assert!(second[0].starts_with("GET "), "{second:#?}");

    // A changed report is written, without reading the Node again.
    fake.clear_requests();
    let mut changed = report.clone();
    if let Some(memory) = changed.memory.as_mut() {
        memory.total_bytes -= 1 << 30;
    }
    assert_eq!(publisher.publish(&changed).await.expect("third publish"), PublishOutcome::Updated);
    let third = lines(&fake);
    assert_eq!(third.len(), 2, "{third:#?}");
    assert!(third[0].starts_with("GET "), "{third:#?}");
    assert!(third[1].starts_with("PATCH "), "{third:#?}");

    // An object someone deleted is recreated at the next round.
    fake.clear_requests();
    let _ = connection_delete(&connection, "node-1").await;
    assert_eq!(publisher.publish(&changed).await.expect("fourth publish"), PublishOutcome::Created);
    assert!(fake.object(REPORT_PATH).is_some());

    // The Node is deleted and its report with it: the pod must not bring
    // the report back with the old Node's UID.
    fake.remove_node("node-1");
    let _ = connection_delete(&connection, "node-1").await;
    let error = publisher.publish(&changed).await.expect_err("the Node is gone");
    assert!(matches!(error, PublishError::NoSuchNode(_)), "{error}");
    assert!(fake.object(REPORT_PATH).is_none());
}

async fn connection_delete(connection: &Connection, name: &str) -> Result<(), kube::Error> {
    use hw_agent::cluster::crd::NodeHardwareReport;
    let api: kube::Api<NodeHardwareReport> = kube::Api::all(connection.client.clone());
    api.delete(name, &Default::default()).await.map(|_| ())
}

#[tokio::test]
async fn report_of_a_missing_node_is_not_published() {
    let (fake, connection, _dir) = cluster().await;
    let report = fixture_report("amd-epyc-instinct").await;
    let mut publisher = Publisher::new(connection.client.clone(), "ghost");
    let error = publisher.publish(&report).await.expect_err("no such node");
    assert!(matches!(error, PublishError::NoSuchNode(ref name) if name == "ghost"), "{error}");
    assert!(error.to_string().contains("spec.nodeName"), "{error}");
    assert!(fake.requests().iter().all(|request| request.method != "PATCH"), "nothing may be written");
}

#[tokio::test]
async fn denied_patch_names_the_rule_to_add() {
    let (fake, connection, _dir) = cluster().await;
    fake.add_node(node("node-1", 0));
    fake.deny("patch", "hw-agent.aiod.eu", "nodehardwarereports");
    let report = fixture_report("arm64-ampere-altra").await;
    let error = Publisher::new(connection.client.clone(), "node-1").publish(&report).await.expect_err("denied");
    let text = error.to_string();
    assert!(text.contains("denied patch nodehardwarereports.hw-agent.aiod.eu `node-1`:"), "{text}");
    assert!(
        text.contains(r#"{apiGroups: ["hw-agent.aiod.eu"], resources: ["nodehardwarereports"], verbs: ["patch"]}"#),
        "{text}"
    );
    assert!(text.contains("cannot patch resource"), "the server's own words are kept: {text}");
}

#[tokio::test]
async fn unreachable_api_server_is_reported_as_such() {
    let (fake, connection, _dir) = cluster().await;
    fake.add_node(node("node-1", 0));
    fake.shutdown().await;
    let report = fixture_report("arm64-ampere-altra").await;
    let error = Publisher::new(connection.client.clone(), "node-1").publish(&report).await.expect_err("down");
    let text = error.to_string();
    assert!(text.contains("cannot reach the Kubernetes API server"), "{text}");
}

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/aiod-hw-agent/leases/hw-agent-leader";

fn elector(connection: &Connection, identity: &str, lease_seconds: u64) -> LeaderElector {
    LeaderElector::new(
        connection.client.clone(),
        "aiod-hw-agent",
        "hw-agent-leader",
        identity,
        LeaseTiming::from_lease_duration(Duration::from_secs(lease_seconds)),
    )
}

#[tokio::test]
async fn leadership_passes_on_when_the_holder_stops_renewing() {
    let (fake, connection, _dir) = cluster().await;
    let mut pod_a = elector(&connection, "pod-a", 1);
    let mut pod_b = elector(&connection, "pod-b", 1);

    fake.clear_requests();
    assert!(pod_a.try_acquire_or_renew().await.expect("a campaigns"), "a creates the lease");
    assert_eq!(
        lines(&fake),
        [
            format!("GET {LEASE_PATH} -> 404"),
            "POST /apis/coordination.k8s.io/v1/namespaces/aiod-hw-agent/leases -> 201".to_owned()
        ]
    );
    assert!(!pod_b.try_acquire_or_renew().await.expect("b campaigns"), "a live holder keeps it");
    assert!(pod_a.try_acquire_or_renew().await.expect("a renews"), "the holder renews");
    let lease = fake.object(LEASE_PATH).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "pod-a");
    assert_eq!(lease["spec"]["leaseTransitions"], 0);

    // pod-a dies: b reads the same record for a whole lease duration, then takes over.
    assert!(!pod_b.try_acquire_or_renew().await.expect("b campaigns"));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(pod_b.try_acquire_or_renew().await.expect("b takes over"), "an expired lease passes on");
    let lease = fake.object(LEASE_PATH).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "pod-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // pod-a comes back: it must not take the lease back while b renews.
    assert!(!pod_a.try_acquire_or_renew().await.expect("a campaigns again"));
}

#[tokio::test]
async fn racing_candidates_cannot_both_win() {
    let (fake, connection, _dir) = cluster().await;
    fake.put_object(
        LEASE_PATH,
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "hw-agent-leader", "namespace": "aiod-hw-agent"},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1}
        }),
    );
    // A free lease, four candidates at once: all read the same
    // resourceVersion, so exactly one update succeeds and the rest get 409.
    let mut candidates: Vec<LeaderElector> =
        (0..4).map(|index| elector(&connection, &format!("pod-{index}"), 1)).collect();
    let outcomes =
        futures_util::future::join_all(candidates.iter_mut().map(|candidate| candidate.try_acquire_or_renew())).await;
    let winners = outcomes.iter().filter(|outcome| matches!(outcome, Ok(true))).count();
    assert_eq!(winners, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(Result::is_ok), "a lost race is not an error: {outcomes:?}");
}

/// Runs a candidate's election loop and waits until it leads; returns the
/// leadership channel, the stop switch and the task.
async fn campaign_until_leading(
    candidate: LeaderElector,
) -> (tokio::sync::watch::Receiver<bool>, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (leading_tx, mut leading_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(candidate.run(leading_tx, stop_rx));
    tokio::time::timeout(Duration::from_secs(10), leading_rx.wait_for(|leader| *leader))
        .await
        .expect("becomes leader in time")
        .expect("channel open");
    (leading_rx, stop_tx, task)
}

#[tokio::test]
async fn holder_releases_the_lease_on_shutdown() {
    let (fake, connection, _dir) = cluster().await;
    let candidate = elector(&connection, "pod-a", 15);
    let (_leading, stop_tx, task) = campaign_until_leading(candidate).await;
    stop_tx.send(true).expect("stop");
    task.await.expect("election ends");
    let lease = fake.object(LEASE_PATH).expect("lease");
    assert!(lease["spec"]["holderIdentity"].is_null() || lease["spec"]["holderIdentity"] == "", "{lease}");
    // A successor need not wait 15 s.
    assert!(elector(&connection, "pod-b", 15).try_acquire_or_renew().await.expect("b campaigns"));
}

fn credentials(connection: &Connection, access: Access, ttl: Duration) -> Credentials {
    Credentials::new(
        connection.client.clone(),
        CredentialSettings { namespace: "aiod-hw-agent".to_owned(), access, token_ttl: ttl },
    )
}

#[tokio::test]
async fn mint_rotate_revoke() {
    let (fake, connection, dir) = cluster().await;
    let platform = credentials(&connection, Access::ClusterAdmin, Duration::from_secs(86_400));

    fake.clear_requests();
    let first = platform.mint().await.expect("mint");
    let minted = lines(&fake);
    let expected_prefixes = [
        "GET /api/v1/namespaces/aiod-hw-agent/serviceaccounts/aiod-platform -> 404",
        "POST /api/v1/namespaces/aiod-hw-agent/serviceaccounts -> 201",
        "GET /api/v1/namespaces/aiod-hw-agent/serviceaccounts/aiod-platform -> 200",
        "GET /apis/rbac.authorization.k8s.io/v1/clusterrolebindings/aiod-platform -> 404",
        "POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings -> 201",
        "POST /api/v1/namespaces/aiod-hw-agent/serviceaccounts/aiod-platform/token -> 201",
        "PATCH /api/v1/namespaces/aiod-hw-agent/serviceaccounts/aiod-platform -> 200",
    ];
    assert_eq!(minted.len(), expected_prefixes.len(), "{minted:#?}");
    for (line, expected) in minted.iter().zip(expected_prefixes) {
        let (method_path, status) = expected.split_once(" -> ").expect("pattern");
        assert!(line.starts_with(method_path), "{line} vs {expected}");
        assert!(line.ends_with(status), "{line} vs {expected}");
    }
    let binding = fake.object("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/aiod-platform").expect("binding");
    assert_eq!(binding["roleRef"]["name"], "cluster-admin");
    assert_eq!(binding["subjects"][0]["name"], "aiod-platform");
    assert_eq!(first.method, TokenMethod::TokenRequest);
    assert_eq!(first.user, "system:serviceaccount:aiod-hw-agent:aiod-platform");
    let issued = fake.issued_tokens();
    assert_eq!(issued.last().map(|token| token.token.as_str()), Some(first.token.expose_secret()));

    // The token authenticates, and the annotations tell `show` when to rotate.
    let status = platform.status().await.expect("status");
    assert_eq!(status.access.as_deref(), Some("cluster-admin"));
    assert!(status.rotate_at.is_some());
    assert!(status.expires_at.is_some());
    assert!(!serde_json::to_string(&status).expect("json").contains(first.token.expose_secret()));

    fake.clear_requests();
    let second = platform.mint().await.expect("rotate");
    assert_ne!(second.token.expose_secret(), first.token.expose_secret());
    let rotated = lines(&fake);
    assert!(
        rotated.iter().all(|line| !line.starts_with("POST /api/v1/namespaces/aiod-hw-agent/serviceaccounts ")),
        "{rotated:#?}"
    );
    assert!(rotated.iter().any(|line| line.contains("/serviceaccounts/aiod-platform/token")), "{rotated:#?}");

    // Revoke deletes what mint created, and the tokens stop working.
    let token_kubeconfig = dir.path().join("platform-kubeconfig");
    fake.write_kubeconfig(&token_kubeconfig, second.token.expose_secret()).expect("kubeconfig");
    let as_platform = connect(Some(&token_kubeconfig)).await.expect("connects");
    assert!(as_platform.client.apiserver_version().await.is_ok(), "the platform token works before revoke");
    let deleted = platform.revoke().await.expect("revoke");
    assert_eq!(deleted, ["ClusterRoleBinding aiod-platform", "ServiceAccount aiod-hw-agent/aiod-platform"]);
    assert!(fake.object("/api/v1/namespaces/aiod-hw-agent/serviceaccounts/aiod-platform").is_none());
    assert!(fake.object("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/aiod-platform").is_none());
    let after = as_platform.client.apiserver_version().await;
    assert!(matches!(after, Err(kube::Error::Api(ref status)) if status.code == 401), "{after:?}");
}

#[tokio::test]
async fn shortened_token_rotates_on_the_granted_expiry() {
    let (fake, connection, _dir) = cluster().await;
    fake.set_max_token_seconds(Some(3_600));
    let token = credentials(&connection, Access::ClusterAdmin, Duration::from_secs(86_400)).mint().await.expect("mint");
    let expires = token.expires_at.expect("expiry");
    let granted = (expires - token.issued_at).num_seconds();
    assert!((3_590..=3_610).contains(&granted), "granted {granted} s");
    let rotate = token.rotate_at().expect("rotation time");
    let until_rotation = (rotate - token.issued_at).num_seconds();
    assert!((2_870..=2_890).contains(&until_rotation), "rotation after {until_rotation} s, expected 48 min");
}

#[tokio::test]
async fn legacy_secret_only_without_token_request() {
    let (fake, connection, _dir) = cluster().await;
    fake.set_token_request_enabled(false);
    fake.put_object(
        "/api/v1/namespaces/ml-jobs",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml-jobs"}}),
    );
    let platform = credentials(&connection, Access::Namespace("ml-jobs".to_owned()), Duration::from_secs(3_600));
    let token = platform.mint().await.expect("mint");
    assert_eq!(token.method, TokenMethod::LegacySecret);
    assert_eq!(token.expires_at, None);
    assert!(fake.object("/api/v1/namespaces/aiod-hw-agent/secrets/aiod-platform-token").is_some());
    let binding = fake
        .object("/apis/rbac.authorization.k8s.io/v1/namespaces/ml-jobs/rolebindings/aiod-platform")
        .expect("binding");
    assert_eq!(binding["roleRef"]["name"], "admin");
    assert_eq!(
        fake.issued_tokens().last().map(|issued| issued.token.clone()).as_deref(),
        Some(token.token.expose_secret())
    );
    let deleted = platform.revoke().await.expect("revoke");
    assert!(deleted.contains(&"Secret aiod-hw-agent/aiod-platform-token".to_owned()), "{deleted:?}");
    assert!(deleted.contains(&"RoleBinding ml-jobs/aiod-platform".to_owned()), "{deleted:?}");
}

#[tokio::test]
async fn denied_token_request_names_the_subresource() {
    let (fake, connection, _dir) = cluster().await;
    fake.deny("create", "", "serviceaccounts/token");
    let error =
        credentials(&connection, Access::ClusterAdmin, Duration::from_secs(3_600)).mint().await.expect_err("denied");
    let text = error.to_string();
    assert!(text.contains("create serviceaccounts/token `aiod-platform` in namespace `aiod-hw-agent`"), "{text}");
    assert!(text.contains(r#"resources: ["serviceaccounts/token"], verbs: ["create"]"#), "{text}");
    assert!(text.contains("Role in that namespace"), "{text}");
}

#[tokio::test]
async fn denied_binding_mentions_the_bind_verb() {
    let (fake, connection, _dir) = cluster().await;
    fake.deny("create", "rbac.authorization.k8s.io", "clusterrolebindings");
    let error = credentials(&connection, Access::ClusterRole("gpu-operator".to_owned()), Duration::from_secs(3_600))
        .mint()
        .await
        .expect_err("denied");
    let text = error.to_string();
    assert!(text.contains(r#"verbs: ["bind"], resourceNames: ["gpu-operator"]"#), "{text}");
}

/// Makes sure the kubeconfig of a test is not world-readable by accident.
#[allow(dead_code)]
fn private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map(|meta| meta.permissions().mode() & 0o077 == 0).unwrap_or(false)
}

#[tokio::test]
async fn nodes_component_reads_capacity_and_accelerators() {
    use hw_agent::cluster::nodes::{ClusterNode, node_object};
    use hw_agent::policy::Policy;
    use hw_agent::runtime::{ComponentCache, NODES_COMPONENT, Runtime, RuntimeOptions};

    let cache = tempfile::tempdir().expect("cache");
    let runtime = Runtime::new(RuntimeOptions {
        cache: ComponentCache::new(Some(cache.path().to_path_buf())),
        pooling: true,
        max_memory_bytes: 512 << 20,
        max_table_elements: 20_000,
    })
    .expect("runtime");
    let collector = runtime.load_node_collector(NODES_COMPONENT).await.expect("the nodes component loads");
    let policy = Policy::built_in();
    let grant = policy.decide("nodes", &collector.info.capabilities).expect("the built-in policy grants nodes");
    assert!(grant.node_list);
    assert_eq!(collector.info.name, "nodes");
    let mut control_plane = node("cp-1", 0);
    control_plane["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("");
    control_plane["spec"]["taints"] = json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = [node("gpu-1", 8), control_plane]
        .into_iter()
        .map(|value| serde_json::from_value(value).expect("a valid Node"))
        .collect();
    let objects = nodes.iter().map(node_object).collect();
    let records = runtime.collect_nodes(&collector, objects, grant.limits).await.expect("the nodes collector runs");
    let records: Vec<ClusterNode> = records.into_iter().map(ClusterNode::from).collect();
    assert_eq!(records.len(), 2);
    let gpu = &records[0];
    assert_eq!(gpu.name, "gpu-1");
    assert_eq!(gpu.capacity.cpu_millicores, Some(64_000));
    assert_eq!(gpu.capacity.memory_bytes, Some(527_921_152 * 1024));
    assert_eq!(gpu.capacity.extended.get("nvidia.com/gpu"), Some(&8));
    assert_eq!(gpu.accelerators.len(), 1);
    assert_eq!(gpu.accelerators[0].count, 8);
    assert_eq!(gpu.accelerators[0].product.as_deref(), Some("NVIDIA-H100-80GB-HBM3"));
    assert_eq!(gpu.accelerators[0].memory_bytes, Some(81_559 << 20));
    assert_eq!(gpu.instance_type.as_deref(), Some("gpu-large"));
    assert_eq!(gpu.ready, Some(true));
    let cp = &records[1];
    assert_eq!(cp.roles, ["control-plane"]);
    assert_eq!(cp.taints.len(), 1);
}

#[tokio::test]
async fn plugin_importing_the_cluster_interface_is_rejected() {
    let plugins = tempfile::tempdir().expect("plugin dir");
    std::fs::write(plugins.path().join("nodes-copy.wasm"), hw_agent::runtime::NODES_COMPONENT).expect("plugin written");
    let cache = tempfile::tempdir().expect("cache");
    let settings = common::settings(&common::fixture("arm64-ampere-altra"), Some(plugins.path()), cache.path());
    let report = Collection::load(&settings).await.expect("the built-in collectors still load").collect().await;
    let failed =
        report.collectors.iter().find(|collector| collector.name == "nodes-copy").expect("a load failure entry");
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("aiod:hw-agent/cluster") && error.contains("only the built-in `nodes` collector"),
        "{error}"
    );
    assert!(report.cpu.is_some(), "the other collectors' facts are still reported");
}

/// A TCP relay that can stop forwarding while keeping connections open:
/// an API server that accepts requests and never responds.
async fn stalling_proxy(target: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let stalled = std::sync::Arc::new(AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stalled);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            let flag = std::sync::Arc::clone(&flag);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { return };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let relay = |mut from: tokio::net::tcp::OwnedReadHalf,
                             mut to: tokio::net::tcp::OwnedWriteHalf,
                             flag: std::sync::Arc<AtomicBool>| async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut buffer = vec![0u8; 16 * 1024];
                    loop {
                        let Ok(read) = from.read(&mut buffer).await else { return };
                        if read == 0 {
                            return;
                        }
                        while flag.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if to.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                };
                let upstream = relay(client_read, server_write, std::sync::Arc::clone(&flag));
                let downstream = relay(server_read, client_write, flag);
                let _ = tokio::join!(upstream, downstream);
            });
        }
    });
    (address.to_string(), stalled)
}

#[tokio::test]
async fn stalled_leader_steps_down() {
    let (fake, _connection, dir) = cluster().await;
    let upstream = fake.url().trim_start_matches("https://").to_owned();
    let (proxy, stalled) = stalling_proxy(upstream.clone()).await;
    // The kubeconfig names 127.0.0.1, which the certificate covers, at the proxy's port.
    let text = std::fs::read_to_string(dir.path().join("kubeconfig")).expect("kubeconfig");
    let port = proxy.rsplit(':').next().expect("port");
    let upstream_port = upstream.rsplit(':').next().expect("port");
    std::fs::write(dir.path().join("proxied"), text.replace(&format!(":{upstream_port}"), &format!(":{port}")))
        .expect("write");
    let proxied = connect(Some(&dir.path().join("proxied"))).await.expect("client through the proxy");

    let candidate = elector(&proxied, "pod-a", 2);
    let (mut leading_rx, stop_tx, task) = campaign_until_leading(candidate).await;

    stalled.store(true, std::sync::atomic::Ordering::Relaxed);
    let stalled_at = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), leading_rx.wait_for(|leader| !*leader))
        .await
        .expect("a leader whose API server stalls steps down")
        .expect("channel open");
    // It must step down before the 2 s lease can pass to another pod.
    assert!(stalled_at.elapsed() < Duration::from_secs(4), "stepped down after {:?}", stalled_at.elapsed());

    stop_tx.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the election ends despite the stall")
        .expect("joins");
}
