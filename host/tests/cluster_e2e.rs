//! End to end: the real `hw-agent run` binary against a fake Kubernetes API
//! server and the real AIoD mock, both over TLS on loopback. The leader
//! registers the cluster and hands off credentials, and the token the mock
//! decrypts is the one the fake cluster issued.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aiod_mock::{Client, MockConfig, RunningMock};
use base64::Engine as _;
use fake_kube::FakeCluster;
use hw_agent::aiod::{AiodClient, AiodSettings, KeyPolicy, RetryPolicy};
use secrecy::SecretString;
use serde_json::{Value, json};

const AGENT_SECRET: &str = "agent-secret-51c2e0";
const PLATFORM: &str = "k8s_site";
const PUBLIC_API_SERVER: &str = "https://k8s.example.org:6443";

async fn start_mock(state_dir: &Path, listen: &str) -> RunningMock {
    aiod_mock::start(MockConfig {
        listen: listen.parse().expect("loopback address"),
        state_dir: state_dir.to_path_buf(),
        clients: vec![Client {
            id: "agent".to_owned(),
            secret: AGENT_SECRET.to_owned(),
            roles: vec![format!("platform_{PLATFORM}")],
        }],
        token_lifetime: Duration::from_secs(300),
        auto_publish: false,
        platforms: vec![PLATFORM.to_owned()],
        tls_names: Vec::new(),
        faults: aiod_mock::FaultConfig::default(),
    })
    .await
    .expect("mock starts")
}

fn node(name: &str, gpus: u32) -> Value {
    let mut capacity = json!({"cpu": "64", "memory": "527921152Ki", "pods": "110"});
    if gpus > 0 {
        capacity["nvidia.com/gpu"] = json!(gpus.to_string());
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/arch": "amd64"}},
        "spec": {},
        "status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "osImage": "Ubuntu 24.04.1 LTS",
                         "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://1.7.22",
                         "kubeletVersion": "v1.33.2", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""}
        }
    })
}

/// The agent process; its log goes to a file that failures print.
struct Agent(Child, std::path::PathBuf);

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path, mock: &RunningMock, node_name: &str, cache: &Path) -> Agent {
    start_agent_with(dir, "kubeconfig", mock, node_name, cache)
}

/// Starts `hw-agent run` with part of its settings in a configuration
/// file, part in environment variables and part as flags, logging JSON, and
/// with its metrics and health endpoints on a free loopback port.
fn start_agent_with(dir: &Path, kubeconfig: &str, mock: &RunningMock, node_name: &str, cache: &Path) -> Agent {
    let secret = dir.join("client-secret");
    std::fs::write(&secret, AGENT_SECRET).expect("secret file");
    let config = dir.join(format!("{node_name}.toml"));
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\nlease_duration = \"2s\"\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
             cluster_name = \"lab-cluster\"\ntoken_ttl = \"2h\"\nplatform = \"{PLATFORM}\"\nclient_id = \"agent\"\n\
             shutdown_grace = \"10s\"\n"
        ),
    )
    .expect("config file");
    let child = Command::new(env!("CARGO_BIN_EXE_hw-agent"))
        .arg("run")
        .args(["--config", &config.to_string_lossy()])
        .args(["--kubeconfig", &dir.join(kubeconfig).to_string_lossy()])
        .args(["--host-root", &common::fixture("intel-xeon-2s-nvidia").to_string_lossy()])
        .args(["--cache-dir", &cache.to_string_lossy()])
        .args(["--node-name", node_name, "--pod-name", &format!("hw-agent-{node_name}")])
        .args(["--api-server-url", PUBLIC_API_SERVER])
        .args(["--api-url", &mock.base_url(), "--token-url", &mock.token_url()])
        .args(["--ca-cert", &mock.ca_path.to_string_lossy()])
        .env("AIOD_CLIENT_SECRET_FILE", &secret)
        .env("HW_AGENT_LOG", "info")
        .env_remove("HW_AGENT_CONFIG")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).expect("log file"))
        .spawn()
        .expect("hw-agent starts");
    Agent(child, dir.join("agent.log"))
}

/// Parses the JSON log lines of the agent.
fn log_events(agent: &Agent) -> Vec<Value> {
    agent.log().lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Reads the address the agent serves its endpoints on from its log.
async fn endpoint_address(agent: &Agent) -> String {
    wait_for(agent, "the endpoint address in the log", Duration::from_secs(60), async || {
        log_events(agent)
            .into_iter()
            .find(|event| event["message"] == "serving /metrics, /healthz and /readyz")
            .and_then(|event| event["address"].as_str().map(str::to_owned))
    })
    .await
}

/// A plain HTTP/1.1 GET; returns the status code and body.
async fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Finds the value of the sample `line` (metric name and labels) in a scrape.
fn sample(metrics: &str, line: &str) -> Option<f64> {
    metrics.lines().find_map(|sample| sample.strip_prefix(line)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

async fn wait_for<T>(agent: &Agent, what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}; agent log:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cluster_asset(mock: &RunningMock, uid: &str) -> Option<Value> {
    let http = hw_agent::aiod::tls::http_client(Some(&mock.ca_path), Duration::from_secs(10)).expect("client");
    let assets: Vec<Value> = http
        .get(format!("{}/platforms/{PLATFORM}/computational_assets?limit=1000", mock.base_url()))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    assets.into_iter().find(|asset| asset["platform_resource_identifier"] == uid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_registers_and_hands_off() {
    let fake = FakeCluster::start().await.expect("fake API server");
    let dir = tempfile::tempdir().expect("temp dir");
    fake.write_kubeconfig(&dir.path().join("kubeconfig"), "admin-token").expect("kubeconfig");
    for (name, gpus) in [("gpu-001", 8), ("gpu-002", 8), ("cpu-001", 0)] {
        fake.add_node(node(name, gpus));
    }
    let uid = fake.object("/api/v1/namespaces/kube-system").expect("kube-system")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_owned();
    // A report left behind by a Node that was deleted, without an owner
    // reference the garbage collector could follow.
    let stale = "/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports/gpu-099";
    fake.put_object(
        stale,
        json!({"apiVersion": "hw-agent.aiod.eu/v1alpha1", "kind": "NodeHardwareReport", "metadata": {"name": "gpu-099"},
               "spec": {"nodeName": "gpu-099", "fingerprint": "0", "agentVersion": "0", "summary": {}, "report": {}}}),
    );
    let state = tempfile::tempdir().expect("state dir");
    let mock = start_mock(state.path(), "127.0.0.1:0").await;
    let cache = tempfile::tempdir().expect("cache");
    let mut agent = start_agent(dir.path(), &mock, "gpu-001", cache.path());

    let asset =
        wait_for(&agent, "the cluster asset", Duration::from_secs(90), async || cluster_asset(&mock, &uid).await).await;
    assert_eq!(asset["name"], "lab-cluster");
    assert_eq!(asset["type"], "kubernetes cluster");
    let identifier = asset["identifier"].as_str().expect("identifier").to_owned();
    let report: Value = serde_json::from_str(asset["description"]["plain"].as_str().expect("plain")).expect("json");
    assert_eq!(report["schema"], "aiod-hw-agent/cluster-report/v1");
    assert_eq!(report["cluster"]["uid"], uid.as_str());
    assert_eq!(report["cluster"]["kubernetes_version"], "v1.33.2");
    assert_eq!(report["node_count"], 3);
    assert_eq!(report["totals"]["capacity"]["extended"]["nvidia.com/gpu"], 16);
    assert!(fake.object(stale).is_none(), "the leader deletes the report of a Node that no longer exists");

    let plaintext = wait_for(&agent, "the credentials hand-off", Duration::from_secs(60), async || {
        aiod_mock::credentials::open_stored(state.path(), &identifier).ok()
    })
    .await;
    let credentials: Value = serde_json::from_slice(&plaintext).expect("credentials json");
    let issued = fake.issued_tokens();
    let last = issued.last().expect("the fake cluster issued a token");
    assert_eq!(credentials["token"], last.token.as_str(), "the platform got the token the cluster issued");
    assert_eq!(credentials["user"], "system:serviceaccount:aiod-hw-agent:aiod-platform");
    assert_eq!(credentials["api_server_url"], PUBLIC_API_SERVER);
    assert_eq!(credentials["cluster_uid"], uid.as_str());
    let ca = base64::engine::general_purpose::STANDARD
        .decode(credentials["certificate_authority_data"].as_str().expect("ca data"))
        .expect("base64");
    assert_eq!(String::from_utf8(ca).expect("pem").trim(), fake.ca_pem().trim());

    // Anyone can read the asset; the token must not be in it.
    let asset = cluster_asset(&mock, &uid).await.expect("asset");
    assert!(!asset.to_string().contains(last.token.as_str()), "the token leaked into the public asset");
    // The node's own report is published too.
    let published = wait_for(&agent, "the node report", Duration::from_secs(60), async || {
        fake.object("/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports/gpu-001")
    })
    .await;
    assert_eq!(published["spec"]["report"]["cpu"]["sockets"], 2);

    // Someone revokes the credentials by hand: the leader notices at its
    // next round and gives the platform a working token again.
    let tokens_before = fake.issued_tokens().len();
    let admin = hw_agent::cluster::connect(Some(&dir.path().join("kubeconfig"))).await.expect("admin client");
    let revoked = hw_agent::cluster::credentials::Credentials::new(
        admin.client.clone(),
        hw_agent::cluster::credentials::CredentialSettings {
            namespace: "aiod-hw-agent".to_owned(),
            access: hw_agent::cluster::credentials::Access::ClusterAdmin,
            token_ttl: Duration::from_secs(7_200),
        },
    )
    .revoke()
    .await
    .expect("revoke");
    assert!(revoked.contains(&"ServiceAccount aiod-hw-agent/aiod-platform".to_owned()), "{revoked:?}");
    let fresh = wait_for(&agent, "a new token after revoke", Duration::from_secs(60), async || {
        let issued = fake.issued_tokens();
        let newest = issued.last()?.token.clone();
        let stored = aiod_mock::credentials::open_stored(state.path(), &identifier).ok()?;
        let stored: Value = serde_json::from_slice(&stored).ok()?;
        (issued.len() > tokens_before && stored["token"] == newest.as_str()).then_some(newest)
    })
    .await;
    assert_ne!(fresh, last.token, "the revoked token is not handed off again");
    let credentials: Value =
        serde_json::from_slice(&aiod_mock::credentials::open_stored(state.path(), &identifier).expect("opens"))
            .expect("json");

    // The platform rotates its key: the leader notices at its next round
    // and seals the credentials again, to the new key.
    let address = mock.addr.to_string();
    mock.shutdown().await;
    let rotated = aiod_mock::credentials::CredentialsKey::rotate(state.path()).expect("key rotated");
    let mock = start_mock(state.path(), &address).await;
    let reopened = wait_for(&agent, "a hand-off to the new key", Duration::from_secs(60), async || {
        aiod_mock::credentials::open_stored(state.path(), &identifier).ok()
    })
    .await;
    let reopened: Value = serde_json::from_slice(&reopened).expect("credentials json");
    assert_eq!(reopened["token"], credentials["token"], "the same token, sealed to key {}", rotated.key_id());

    // An operator scrapes and probes the pod as they would node_exporter.
    let address = endpoint_address(&agent).await;
    assert_eq!(http_get(&address, "/healthz").await.map(|(status, _)| status), Some(200));
    assert_eq!(http_get(&address, "/readyz").await.map(|(status, _)| status), Some(200));
    let metrics = http_get(&address, "/metrics").await.expect("scrape").1;
    let rounds = sample(&metrics, r#"hw_agent_collector_runs_total{collector="cpu",status="ok"}"#);
    assert!(rounds.is_some_and(|count| count >= 1.0), "cpu runs counted:\n{metrics}");
    assert!(metrics.contains(r#"hw_agent_collector_duration_seconds_count{collector="gpu"}"#), "{metrics}");
    assert_eq!(sample(&metrics, "hw_agent_leader"), Some(1.0), "{metrics}");
    let expiry = sample(&metrics, "hw_agent_credentials_expiry_timestamp_seconds").expect("expiry");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!((now + 3_000.0..now + 7_300.0).contains(&expiry), "a 2h token expires within 2 hours: {expiry}");
    let published = sample(&metrics, r#"hw_agent_node_report_publishes_total{outcome="created"}"#);
    assert_eq!(published, Some(1.0), "{metrics}");
    for request in [
        r#"hw_agent_aiod_requests_total{endpoint="token",method="POST",outcome="success",status="200"}"#,
        r#"hw_agent_aiod_requests_total{endpoint="api",method="GET",outcome="success",status="200"}"#,
    ] {
        assert!(sample(&metrics, request).is_some_and(|count| count >= 1.0), "{request} missing:\n{metrics}");
    }
    assert!(sample(&metrics, "process_resident_memory_bytes").is_some_and(|bytes| bytes > 0.0), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    // SIGTERM: the pod drains, releases the lease and exits 0.
    let status = Command::new("kill").args(["-TERM", &agent.0.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = agent.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "hw-agent did not stop within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = agent.log();
    assert!(exit.success(), "exit {exit:?}; stderr:\n{stderr}");
    // One JSON object per line, with the lifecycle events at info.
    let events = log_events(&agent);
    assert_eq!(events.len(), stderr.lines().count(), "every log line is JSON:\n{stderr}");
    let messages: Vec<&str> = events.iter().filter_map(|event| event["message"].as_str()).collect();
    for lifecycle in [
        "configuration",
        "collectors loaded",
        "became the leader",
        "registered the cluster as a computational asset",
        "issued a token for the platform",
        "termination requested; finishing the work in flight and releasing the lease",
        "released the lease",
        "stopped",
    ] {
        assert!(messages.contains(&lifecycle), "no `{lifecycle}` line in:\n{stderr}");
    }
    let configuration = events.iter().find(|event| event["message"] == "configuration").expect("configuration line");
    let sources = configuration["sources"].as_str().expect("sources");
    assert!(sources.contains("from the file: "), "{sources}");
    assert!(sources.contains("interval"), "{sources}");
    assert!(sources.contains("from the environment: "), "{sources}");
    assert!(sources.contains("client-secret-file"), "{sources}");
    let published = events.iter().find(|event| event["message"] == "published the node report").expect("publish line");
    assert_eq!(published["span"]["name"], "node_round", "the event carries its unit of work: {published}");
    for token in fake.issued_tokens() {
        assert!(!stderr.contains(&token.token), "a token reached the log");
    }
    assert!(!stderr.contains(AGENT_SECRET), "the client secret reached the log");
    let lease =
        fake.object("/apis/coordination.k8s.io/v1/namespaces/aiod-hw-agent/leases/hw-agent-leader").expect("lease");
    assert!(lease["spec"]["holderIdentity"].as_str().unwrap_or("").is_empty(), "the lease was released: {lease}");
    mock.shutdown().await;
}

fn settings(mock: &RunningMock) -> AiodSettings {
    AiodSettings {
        api_url: mock.base_url(),
        token_url: mock.token_url(),
        ca_cert: Some(mock.ca_path.clone()),
        client_id: "agent".to_owned(),
        client_secret: SecretString::from(AGENT_SECRET.to_owned()),
        platform: PLATFORM.to_owned(),
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy::default(),
    }
}

#[tokio::test]
async fn platform_key_change_and_pin() {
    let state = tempfile::tempdir().expect("state dir");
    let mock = start_mock(state.path(), "127.0.0.1:0").await;
    let client = AiodClient::connect(settings(&mock)).await.expect("connects");
    let body = json!({"platform": PLATFORM, "platform_resource_identifier": "cluster-uid-1", "name": "c", "type": "kubernetes cluster"});
    let asset = client.register("cluster-uid-1", &body).await.expect("registers").identifier;
    let key = client.credentials_key().await.expect("key");

    let first = client.hand_off(&asset, b"{\"token\":\"one\"}", &KeyPolicy::default()).await.expect("hand-off");
    assert_eq!(first.key_id, key.key_id);
    assert_eq!(first.key_changed_from, None);

    // The key the agent last used differs from the platform's: noticed and reported.
    let policy = KeyPolicy { pinned: None, previous: Some("0123456789abcdef".to_owned()) };
    let second = client.hand_off(&asset, b"{\"token\":\"two\"}", &policy).await.expect("hand-off");
    assert_eq!(second.key_changed_from.as_deref(), Some("0123456789abcdef"));
    assert_eq!(aiod_mock::credentials::open_stored(state.path(), &asset).expect("opens"), b"{\"token\":\"two\"}");

    // A pinned key that does not match refuses the hand-off and stores nothing new.
    let pinned = KeyPolicy { pinned: Some("fedcba9876543210".to_owned()), previous: None };
    let error = client.hand_off(&asset, b"{\"token\":\"three\"}", &pinned).await.expect_err("refused");
    let text = format!("{error:#}");
    assert!(text.contains("fedcba9876543210"), "{text}");
    assert!(text.contains(&key.key_id), "{text}");
    assert_eq!(aiod_mock::credentials::open_stored(state.path(), &asset).expect("opens"), b"{\"token\":\"two\"}");
    mock.shutdown().await;
}

/// Returns the API path of a manifest object, for the kinds `rbac.yaml` and
/// `namespace.yaml` contain.
fn manifest_path(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().expect("name");
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("aiod-hw-agent");
    match object["kind"].as_str().expect("kind") {
        "Namespace" => format!("/api/v1/namespaces/{name}"),
        "ServiceAccount" => format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}"),
        "ClusterRole" => format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"),
        "ClusterRoleBinding" => format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}"),
        "Role" => format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}"),
        "RoleBinding" => format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}"),
        other => panic!("unexpected kind {other} in the manifests"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_rbac_grants_everything_the_agent_does() {
    let fake = FakeCluster::start().await.expect("fake API server");
    let dir = tempfile::tempdir().expect("temp dir");
    fake.write_kubeconfig(&dir.path().join("kubeconfig"), "admin-token").expect("kubeconfig");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/kubernetes");
    for file in ["namespace.yaml", "rbac.yaml"] {
        let text = std::fs::read_to_string(manifests.join(file)).expect("manifest");
        let objects: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("valid YAML");
        for object in objects {
            fake.put_object(&manifest_path(&object), object);
        }
    }
    fake.add_node(node("gpu-001", 8));
    // A report of a deleted Node, so the leader's delete is exercised too.
    fake.put_object(
        "/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports/gone",
        json!({"apiVersion": "hw-agent.aiod.eu/v1alpha1", "kind": "NodeHardwareReport", "metadata": {"name": "gone"},
               "spec": {"nodeName": "gone", "fingerprint": "0", "agentVersion": "0", "summary": {}, "report": {}}}),
    );

    // The agent authenticates as its own ServiceAccount, as in the DaemonSet.
    let admin = hw_agent::cluster::connect(Some(&dir.path().join("kubeconfig"))).await.expect("admin client");
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(admin.client.clone(), "aiod-hw-agent");
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
            expiration_seconds: Some(3_600),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = accounts.create_token_request("hw-agent", &Default::default(), &request).await.expect("agent token");
    let agent_token = issued.status.expect("status").token;
    fake.write_kubeconfig(&dir.path().join("agent-kubeconfig"), &agent_token).expect("agent kubeconfig");
    fake.enforce_rbac(true);

    let state = tempfile::tempdir().expect("state dir");
    let mock = start_mock(state.path(), "127.0.0.1:0").await;
    let cache = tempfile::tempdir().expect("cache");
    let agent = start_agent_with(dir.path(), "agent-kubeconfig", &mock, "gpu-001", cache.path());
    let uid = fake.object("/api/v1/namespaces/kube-system").expect("kube-system")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_owned();
    let asset =
        wait_for(&agent, "the cluster asset", Duration::from_secs(90), async || cluster_asset(&mock, &uid).await).await;
    let identifier = asset["identifier"].as_str().expect("identifier").to_owned();
    wait_for(&agent, "the credentials hand-off", Duration::from_secs(60), async || {
        aiod_mock::credentials::open_stored(state.path(), &identifier).ok()
    })
    .await;
    wait_for(&agent, "the node report", Duration::from_secs(60), async || {
        fake.object("/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports/gpu-001")
    })
    .await;
    assert!(fake.object("/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports/gone").is_none());

    let denied: Vec<String> =
        fake.requests().iter().filter(|request| request.status == 403).map(|request| request.line()).collect();
    assert!(denied.is_empty(), "rbac.yaml lacks permissions the agent uses: {denied:#?}\nagent log:\n{}", agent.log());

    // And RBAC is really enforced: the agent's token may not read Secrets at large.
    let as_agent = hw_agent::cluster::connect(Some(&dir.path().join("agent-kubeconfig"))).await.expect("agent client");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(as_agent.client, "kube-system");
    let listed = secrets.list(&Default::default()).await;
    assert!(matches!(listed, Err(kube::Error::Api(ref status)) if status.code == 403), "{listed:?}");
    drop(agent);
    mock.shutdown().await;
}

fn credentials_command(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hw-agent"))
        .arg("credentials")
        .args(args)
        .args(["--kubeconfig", &dir.join("kubeconfig").to_string_lossy()])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("hw-agent runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_commands_mint_show_revoke() {
    use std::os::unix::fs::PermissionsExt as _;

    let fake = FakeCluster::start().await.expect("fake API server");
    let dir = tempfile::tempdir().expect("temp dir");
    fake.write_kubeconfig(&dir.path().join("kubeconfig"), "admin-token").expect("kubeconfig");
    let platform_kubeconfig = dir.path().join("platform.kubeconfig");

    let path = dir.path().to_path_buf();
    let nothing = tokio::task::spawn_blocking(move || credentials_command(&path, &["revoke"])).await.expect("joins");
    assert!(nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stdout).contains("nothing to revoke"), "{nothing:?}");

    let path = dir.path().to_path_buf();
    let target = platform_kubeconfig.to_string_lossy().into_owned();
    let minted = tokio::task::spawn_blocking(move || {
        credentials_command(
            &path,
            &["mint", "--access", "clusterrole:view", "--token-ttl", "1h", "--write-kubeconfig", &target],
        )
    })
    .await
    .expect("joins");
    let stdout = String::from_utf8_lossy(&minted.stdout).into_owned();
    assert!(minted.status.success(), "{stdout}{}", String::from_utf8_lossy(&minted.stderr));
    let token = fake.issued_tokens().last().expect("a token was issued").token.clone();
    assert!(!stdout.contains(&token), "mint prints no token: {stdout}");
    assert!(stdout.contains("access:     clusterrole:view"), "{stdout}");
    let mode = std::fs::metadata(&platform_kubeconfig).expect("kubeconfig written").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds a token, so only its owner may read it");
    let as_platform =
        hw_agent::cluster::connect(Some(&platform_kubeconfig)).await.expect("the written kubeconfig works");
    assert!(as_platform.client.apiserver_version().await.is_ok());

    let path = dir.path().to_path_buf();
    let shown =
        tokio::task::spawn_blocking(move || credentials_command(&path, &["show", "--json"])).await.expect("joins");
    let shown_text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.status.success(), "{shown_text}");
    assert!(!shown_text.contains(&token), "show prints no token");
    let status: Value = serde_json::from_str(&shown_text).expect("json");
    assert_eq!(status["access"], "clusterrole:view");
    assert_eq!(status["bindings"][0], "ClusterRoleBinding aiod-platform -> ClusterRole view");

    let path = dir.path().to_path_buf();
    let revoked =
        tokio::task::spawn_blocking(move || credentials_command(&path, &["revoke", "--access", "clusterrole:view"]))
            .await
            .expect("joins");
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let after = as_platform.client.apiserver_version().await;
    assert!(matches!(after, Err(kube::Error::Api(ref status)) if status.code == 401), "{after:?}");

    let path = dir.path().to_path_buf();
    let invalid = tokio::task::spawn_blocking(move || credentials_command(&path, &["mint", "--access", "root"]))
        .await
        .expect("joins");
    assert_eq!(invalid.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("`root` is not an access level"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiod_outage_does_not_stop_node_reports() {
    let fake = FakeCluster::start().await.expect("fake API server");
    let dir = tempfile::tempdir().expect("temp dir");
    fake.write_kubeconfig(&dir.path().join("kubeconfig"), "admin-token").expect("kubeconfig");
    fake.add_node(node("gpu-001", 8));
    let state = tempfile::tempdir().expect("state dir");
    // A mock that is gone: its address refuses connections.
    let mock = start_mock(state.path(), "127.0.0.1:0").await;
    let cache = tempfile::tempdir().expect("cache");
    let agent = start_agent(dir.path(), &mock, "gpu-001", cache.path());
    mock.shutdown().await;
    let published = wait_for(&agent, "the node report", Duration::from_secs(60), async || {
        fake.object("/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports/gpu-001")
    })
    .await;
    assert_eq!(published["spec"]["nodeName"], "gpu-001");
    let mut agent = agent;
    assert!(agent.0.try_wait().expect("wait").is_none(), "the agent keeps running; log:\n{}", agent.log());
}
