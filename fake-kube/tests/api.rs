//! The fake's HTTPS interface against kube-apiserver's behaviour: status codes,
//! `Status` bodies, list pagination, patches, tokens and recorded requests.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use fake_kube::FakeCluster;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token";
const NODES: &str = "/api/v1/nodes";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/aiod-hw-agent/leases";
const ACCOUNTS: &str = "/api/v1/namespaces/aiod-hw-agent/serviceaccounts";
const SECRETS: &str = "/api/v1/namespaces/aiod-hw-agent/secrets";
const REPORTS: &str = "/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const MERGE: &str = "application/merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";
const JSON_PATCH: &str = "application/json-patch+json";

struct Harness {
    fake: FakeCluster,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: u16,
    body: Value,
}

impl Harness {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = FakeCluster::start().await.expect("fake API server starts");
        let dir = tempfile::tempdir().expect("temporary directory");
        fake.write_kubeconfig(&dir.path().join("kubeconfig"), ADMIN_TOKEN).expect("kubeconfig written");
        let ca = reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).expect("CA certificate");
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTPS client");
        Self { fake, http, _dir: dir }
    }

    async fn send_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.fake.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", content_type.unwrap_or("application/json")).body(body.to_string());
        }
        let response = request.send().await.expect("request reaches the fake");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("response body");
        Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    async fn send(&self, method: Method, path: &str, content_type: Option<&str>, body: Option<&Value>) -> Answer {
        self.send_as(Some(ADMIN_TOKEN), method, path, content_type, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, None, Some(&body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(Method::PUT, path, None, Some(&body)).await
    }

    async fn patch(&self, path: &str, content_type: &str, body: Value) -> Answer {
        self.send(Method::PATCH, path, Some(content_type), Some(&body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None, None).await
    }

    /// Creates a service account and returns a token the TokenRequest API issued for it.
    async fn service_account_token(&self, name: &str) -> String {
        let created = self.post(ACCOUNTS, json!({"metadata": {"name": name}})).await;
        assert_eq!(created.status, 201, "{}", created.body);
        let issued = self.post(&format!("{ACCOUNTS}/{name}/token"), json!({"spec": {}})).await;
        assert_eq!(issued.status, 201, "{}", issued.body);
        issued.body["status"]["token"].as_str().expect("token").to_owned()
    }
}

fn node(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": {}, "status": {"capacity": {"cpu": "8"}}})
}

fn lease(name: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15},
    })
}

fn resource_version(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"].as_str().expect("resourceVersion").parse().expect("numeric resourceVersion")
}

#[tokio::test]
async fn version_and_seeded_objects() {
    let harness = Harness::start().await;
    let version = harness.get("/version").await;
    assert_eq!(version.status, 200);
    assert_eq!(version.body["major"], "1");
    assert_eq!(version.body["minor"], "33");
    assert_eq!(version.body["gitVersion"], "v1.33.2");
    assert_eq!(version.body["platform"], "linux/amd64");

    let namespaces = harness.get("/api/v1/namespaces").await;
    let names: Vec<&str> = namespaces.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["aiod-hw-agent", "default", "kube-system"]);

    let kube_system = harness.fake.object("/api/v1/namespaces/kube-system").expect("kube-system");
    let uid = kube_system["metadata"]["uid"].as_str().expect("uid");
    assert!(uuid_like(uid), "{uid}");
    assert_eq!(kube_system["metadata"]["labels"]["kubernetes.io/metadata.name"], "kube-system");
    for role in ["cluster-admin", "admin", "view"] {
        let path = format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}");
        assert_eq!(harness.get(&path).await.status, 200, "{role}");
    }
    assert!(harness.fake.object("/api/v1/namespaces/default/serviceaccounts/default").is_some());
}

fn uuid_like(text: &str) -> bool {
    let groups: Vec<usize> = text.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && text.chars().all(|character| character == '-' || character.is_ascii_hexdigit())
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let harness = Harness::start().await;
    for token in [None, Some("wrong-token")] {
        let answer = harness.send_as(token, Method::GET, "/api/v1/nodes", None, None).await;
        assert_eq!(answer.status, 401, "{token:?}");
        assert_eq!(
            answer.body,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        );
    }
}

#[tokio::test]
async fn missing_objects_are_not_found() {
    let harness = Harness::start().await;
    let node = harness.get("/api/v1/nodes/x").await;
    assert_eq!(node.status, 404);
    assert_eq!(
        node.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "nodes \"x\" not found", "reason": "NotFound",
            "details": {"name": "x", "kind": "nodes"}, "code": 404,
        })
    );

    let missing_lease = harness.get(&format!("{LEASES}/l")).await;
    assert_eq!(missing_lease.status, 404);
    assert_eq!(missing_lease.body["message"], "leases.coordination.k8s.io \"l\" not found");
    assert_eq!(missing_lease.body["details"], json!({"name": "l", "group": "coordination.k8s.io", "kind": "leases"}));

    for path in ["/api/v1/pods", "/apis/example.com/v1/widgets", "/api/v1/nodes/x/proxy", "/api/v1/secrets/s"] {
        let unknown = harness.get(path).await;
        assert_eq!(unknown.status, 404, "{path}");
        assert_eq!(unknown.body["message"], "the server could not find the requested resource", "{path}");
        assert_eq!(unknown.body["reason"], "NotFound", "{path}");
    }
}

#[tokio::test]
async fn create_fills_metadata_and_rejects_duplicates() {
    let harness = Harness::start().await;
    let created = harness.post(LEASES, lease("l")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["kind"], "Lease");
    assert_eq!(created.body["metadata"]["namespace"], "aiod-hw-agent");
    assert!(uuid_like(created.body["metadata"]["uid"].as_str().expect("uid")));
    assert!(created.body["metadata"]["creationTimestamp"].as_str().is_some_and(|time| time.ends_with('Z')));
    assert!(resource_version(&created.body) > 0);

    let duplicate = harness.post(LEASES, lease("l")).await;
    assert_eq!(duplicate.status, 409);
    assert_eq!(duplicate.body["reason"], "AlreadyExists");
    assert_eq!(duplicate.body["message"], "leases.coordination.k8s.io \"l\" already exists");
    assert_eq!(duplicate.body["details"], json!({"name": "l", "group": "coordination.k8s.io", "kind": "leases"}));

    let generated = harness.post(ACCOUNTS, json!({"metadata": {"generateName": "agent-"}})).await;
    assert_eq!(generated.status, 201);
    let name = generated.body["metadata"]["name"].as_str().expect("generated name");
    assert!(name.starts_with("agent-"), "{name}");
    assert_eq!(name.len(), "agent-".len() + 5, "{name}");
}

#[tokio::test]
async fn create_validates_name_and_namespace() {
    let harness = Harness::start().await;
    let unnamed = harness.post(LEASES, json!({"metadata": {}})).await;
    assert_eq!(unnamed.status, 422);
    assert_eq!(
        unnamed.body["message"],
        "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName is required"
    );

    let upper = harness.post(REPORTS, json!({"metadata": {"name": "Node-1"}})).await;
    assert_eq!(upper.status, 422);
    assert_eq!(upper.body["reason"], "Invalid");
    let message = upper.body["message"].as_str().expect("message");
    assert!(
        message.starts_with("NodeHardwareReport.hw-agent.aiod.eu \"Node-1\" is invalid: metadata.name: Invalid value: \"Node-1\": a lowercase RFC 1123 subdomain"),
        "{message}"
    );

    let no_namespace = harness
        .post("/apis/rbac.authorization.k8s.io/v1/namespaces/ml-jobs/rolebindings", json!({"metadata": {"name": "b"}}))
        .await;
    assert_eq!(no_namespace.status, 404);
    assert_eq!(no_namespace.body["message"], "namespaces \"ml-jobs\" not found");

    let mismatch = harness.post(LEASES, json!({"metadata": {"name": "l", "namespace": "default"}})).await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(
        mismatch.body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
}

#[tokio::test]
async fn update_checks_the_resource_version() {
    let harness = Harness::start().await;
    let created = harness.post(LEASES, lease("l")).await.body;
    let path = format!("{LEASES}/l");

    let mut renewed = created.clone();
    renewed["spec"]["holderIdentity"] = json!("pod-b");
    let updated = harness.put(&path, renewed.clone()).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["spec"]["holderIdentity"], "pod-b");
    assert_eq!(updated.body["metadata"]["uid"], created["metadata"]["uid"]);
    assert!(resource_version(&updated.body) > resource_version(&created));

    let stale = harness.put(&path, renewed.clone()).await;
    assert_eq!(stale.status, 409);
    assert_eq!(
        stale.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Operation cannot be fulfilled on leases.coordination.k8s.io \"l\": the object has been modified; please apply your changes to the latest version and try again",
            "reason": "Conflict",
            "details": {"name": "l", "group": "coordination.k8s.io", "kind": "leases"},
            "code": 409,
        })
    );

    // Leases need a resourceVersion on update (AllowUnconditionalUpdate is false).
    let unconditional = harness.put(&path, lease("l")).await;
    assert_eq!(unconditional.status, 422);
    assert_eq!(
        unconditional.body["message"],
        "leases.coordination.k8s.io \"l\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );

    let renamed = harness.put(&path, lease("other")).await;
    assert_eq!(renamed.status, 400);
    assert_eq!(renamed.body["message"], "the name of the object (other) does not match the name on the URL (l)");

    // Leases may be created with PUT; nodes may not.
    assert_eq!(harness.put(&format!("{LEASES}/fresh"), lease("fresh")).await.status, 201);
    let missing_node = harness.put("/api/v1/nodes/n", node("n", json!({}))).await;
    assert_eq!(missing_node.status, 404);
    assert_eq!(missing_node.body["message"], "nodes \"n\" not found");
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let harness = Harness::start().await;
    for name in ["node-c", "node-a", "node-e", "node-b", "node-d"] {
        harness.fake.add_node(node(name, json!({})));
    }

    let first = harness.get(&format!("{NODES}?limit=2")).await.body;
    assert_eq!(first["kind"], "NodeList");
    assert_eq!(first["apiVersion"], "v1");
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["metadata"]["name"], "node-a");
    assert!(items[0].get("kind").is_none(), "{}", items[0]);
    assert!(items[0].get("apiVersion").is_none(), "{}", items[0]);

    let mut names: Vec<String> = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(token) => format!("{NODES}?limit=2&continue={token}"),
            None => format!("{NODES}?limit=2"),
        };
        let page = harness.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        names.extend(
            page.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|item| item["metadata"]["name"].as_str().expect("name").to_owned()),
        );
        token = page.body["metadata"]["continue"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["node-a", "node-b", "node-c", "node-d", "node-e"]);

    let invalid = harness.get(&format!("{NODES}?continue=%21%21")).await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.body["reason"], "BadRequest");
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let harness = Harness::start().await;
    harness.fake.add_node(node("gpu-1", json!({"accelerator": "nvidia", "pool": "a"})));
    harness.fake.add_node(node("gpu-2", json!({"accelerator": "amd"})));
    harness.fake.add_node(node("cpu-1", json!({"pool": "b"})));

    let cases = [
        ("labelSelector=accelerator%3Dnvidia", vec!["gpu-1"]),
        ("labelSelector=accelerator", vec!["gpu-1", "gpu-2"]),
        ("labelSelector=%21accelerator", vec!["cpu-1"]),
        ("labelSelector=accelerator%21%3Dnvidia", vec!["cpu-1", "gpu-2"]),
        ("labelSelector=pool+in+(a,b),accelerator", vec!["gpu-1"]),
        ("fieldSelector=metadata.name%3Dgpu-2", vec!["gpu-2"]),
        ("fieldSelector=metadata.name%21%3Dgpu-2&labelSelector=pool", vec!["cpu-1", "gpu-1"]),
    ];
    for (query, expected) in cases {
        let list = harness.get(&format!("{NODES}?{query}")).await;
        assert_eq!(list.status, 200, "{query}: {}", list.body);
        let names: Vec<&str> = list.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|item| item["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, expected, "{query}");
    }

    let unsupported = harness.get(&format!("{NODES}?fieldSelector=spec.podCIDR%3Dx")).await;
    assert_eq!(unsupported.status, 400);
    assert_eq!(unsupported.body["message"], "field label not supported: spec.podCIDR");
}

#[tokio::test]
async fn merge_patch_merges_and_removes_keys() {
    let harness = Harness::start().await;
    harness.fake.add_node(node("n", json!({"a": "1", "b": "2"})));
    let before = harness.fake.object("/api/v1/nodes/n").expect("node");

    let patched = harness.patch("/api/v1/nodes/n", MERGE, json!({"metadata": {"labels": {"a": null, "c": "3"}}})).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    assert!(resource_version(&patched.body) > resource_version(&before));
    assert_eq!(patched.body["status"], before["status"], "the main resource does not write status");

    let strategic = harness
        .patch("/api/v1/nodes/n", "application/strategic-merge-patch+json", json!({"spec": {"unschedulable": true}}))
        .await;
    assert_eq!(strategic.status, 200);
    assert_eq!(strategic.body["spec"]["unschedulable"], true);

    let no_op = harness.patch("/api/v1/nodes/n", MERGE, json!({"spec": {"unschedulable": true}})).await;
    assert_eq!(
        resource_version(&no_op.body),
        resource_version(&strategic.body),
        "a no-op patch keeps the resourceVersion"
    );

    let stale = harness.patch("/api/v1/nodes/n", MERGE, json!({"metadata": {"resourceVersion": "1"}})).await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.body["reason"], "Conflict");

    let missing = harness.patch("/api/v1/nodes/ghost", MERGE, json!({})).await;
    assert_eq!(missing.status, 404);

    let wrong_type = harness.patch("/api/v1/nodes/n", "application/json", json!({})).await;
    assert_eq!(wrong_type.status, 415);
    assert_eq!(wrong_type.body["reason"], "UnsupportedMediaType");
}

#[tokio::test]
async fn json_patch_applies_operations_or_fails_whole() {
    let harness = Harness::start().await;
    harness.fake.add_node(node("n", json!({"a": "1", "gone": "x"})));
    let operations = json!([
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "10"},
        {"op": "remove", "path": "/metadata/labels/gone"},
        {"op": "add", "path": "/spec/taints", "value": [{"key": "k", "effect": "NoSchedule"}]},
    ]);
    let patched = harness.patch("/api/v1/nodes/n", JSON_PATCH, operations).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["metadata"]["labels"], json!({"a": "10", "b": "2"}));
    assert_eq!(patched.body["spec"]["taints"][0]["key"], "k");

    let before = harness.fake.object("/api/v1/nodes/n").expect("node");
    let failing = json!([
        {"op": "add", "path": "/metadata/labels/c", "value": "3"},
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
    ]);
    let failed = harness.patch("/api/v1/nodes/n", JSON_PATCH, failing).await;
    assert_eq!(failed.status, 422);
    assert_eq!(failed.body["message"], "testing value /metadata/labels/a failed: test failed");
    assert_eq!(harness.fake.object("/api/v1/nodes/n"), Some(before), "a failed patch changes nothing");

    let malformed = harness.patch("/api/v1/nodes/n", JSON_PATCH, json!({"op": "add"})).await;
    assert_eq!(malformed.status, 400);
}

fn report(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "hw-agent.aiod.eu/v1alpha1", "kind": "NodeHardwareReport", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn apply_creates_then_merges_and_drops_omitted_fields() {
    let harness = Harness::start().await;
    let path = format!("{REPORTS}/node-1");

    let unmanaged = harness.patch(&path, APPLY, report("node-1", json!({}))).await;
    assert_eq!(unmanaged.status, 422);
    assert_eq!(unmanaged.body["reason"], "Invalid");
    assert_eq!(
        unmanaged.body["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );

    let apply_path = format!("{path}?fieldManager=hw-agent&force=true");
    let created = harness
        .patch(&apply_path, APPLY, report("node-1", json!({"nodeName": "node-1", "gpus": 4, "old": true})))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["metadata"]["generation"], 1);
    assert_eq!(created.body["metadata"]["managedFields"][0]["manager"], "hw-agent");
    assert_eq!(created.body["metadata"]["managedFields"][0]["operation"], "Apply");

    // A field set by another writer survives; the field hw-agent stopped applying goes.
    let merged = harness.patch(&path, MERGE, json!({"metadata": {"labels": {"team": "ml"}}})).await;
    assert_eq!(merged.status, 200);
    let applied = harness.patch(&apply_path, APPLY, report("node-1", json!({"nodeName": "node-1", "gpus": 8}))).await;
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert_eq!(applied.body["spec"], json!({"nodeName": "node-1", "gpus": 8}));
    assert_eq!(applied.body["metadata"]["labels"], json!({"team": "ml"}));
    assert_eq!(applied.body["metadata"]["generation"], 2);

    let again = harness.patch(&apply_path, APPLY, report("node-1", json!({"nodeName": "node-1", "gpus": 8}))).await;
    assert_eq!(resource_version(&again.body), resource_version(&applied.body), "an unchanged apply writes nothing");

    let force_on_merge = harness.patch(&format!("{path}?force=true"), MERGE, json!({})).await;
    assert_eq!(force_on_merge.status, 422);
    assert_eq!(
        force_on_merge.body["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
}

#[tokio::test]
async fn token_request_shortens_and_validates_expiry() {
    let harness = Harness::start().await;
    harness.post(ACCOUNTS, json!({"metadata": {"name": "hw-agent"}})).await;
    harness.fake.set_max_token_seconds(Some(3600));
    let token_path = format!("{ACCOUNTS}/hw-agent/token");

    let issued = harness.post(&token_path, json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}})).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    assert_eq!(issued.body["kind"], "TokenRequest");
    assert_eq!(issued.body["spec"]["expirationSeconds"], 3600);
    let token = issued.body["status"]["token"].as_str().expect("token");
    assert_eq!(token.len(), 48);
    let expires = issued.body["status"]["expirationTimestamp"].as_str().expect("expirationTimestamp");
    assert!(expires.ends_with('Z'), "{expires}");
    let lifetime = expires.parse::<DateTime<Utc>>().expect("RFC 3339") - Utc::now();
    assert!((3590..=3600).contains(&lifetime.num_seconds()), "{lifetime}");

    let recorded = harness.fake.issued_tokens();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].namespace, "aiod-hw-agent");
    assert_eq!(recorded[0].service_account, "hw-agent");
    assert_eq!(recorded[0].token, token);
    assert_eq!(recorded[0].expiration_timestamp.as_deref(), Some(expires));
    assert_eq!(harness.send_as(Some(token), Method::GET, "/version", None, None).await.status, 200);

    let short = harness.post(&token_path, json!({"spec": {"expirationSeconds": 599}})).await;
    assert_eq!(short.status, 422);
    assert_eq!(
        short.body["message"],
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );

    harness.fake.set_max_token_seconds(None);
    let default = harness.post(&token_path, json!({"spec": {}})).await;
    assert_eq!(default.body["spec"]["expirationSeconds"], 3600);
    assert_eq!(default.body["spec"]["audiences"], json!(["https://kubernetes.default.svc.cluster.local"]));

    let missing = harness.post(&format!("{ACCOUNTS}/ghost/token"), json!({"spec": {}})).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["message"], "serviceaccounts \"ghost\" not found");
}

#[tokio::test]
async fn token_request_can_be_disabled() {
    let harness = Harness::start().await;
    harness.post(ACCOUNTS, json!({"metadata": {"name": "hw-agent"}})).await;
    harness.fake.set_token_request_enabled(false);
    let disabled = harness.post(&format!("{ACCOUNTS}/hw-agent/token"), json!({"spec": {}})).await;
    assert_eq!(disabled.status, 404);
    assert_eq!(disabled.body["message"], "the server could not find the requested resource");
    assert!(harness.fake.issued_tokens().is_empty());

    harness.fake.set_token_request_enabled(true);
    assert_eq!(harness.post(&format!("{ACCOUNTS}/hw-agent/token"), json!({"spec": {}})).await.status, 201);
}

#[tokio::test]
async fn legacy_token_secret_is_filled_after_create() {
    let harness = Harness::start().await;
    harness.post(ACCOUNTS, json!({"metadata": {"name": "platform"}})).await;
    let secret = json!({
        "metadata": {"name": "platform-token", "annotations": {"kubernetes.io/service-account.name": "platform"}},
        "type": "kubernetes.io/service-account-token",
    });
    let created = harness.post(SECRETS, secret).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.body.pointer("/data/token").is_none(), "the controller fills the token after the create");

    let stored = harness.get(&format!("{SECRETS}/platform-token")).await.body;
    let decode = |field: &str| {
        let encoded = stored["data"][field].as_str().unwrap_or_else(|| panic!("data.{field} in {stored}"));
        String::from_utf8(STANDARD.decode(encoded).expect("base64")).expect("UTF-8")
    };
    let token = decode("token");
    assert_eq!(decode("namespace"), "aiod-hw-agent");
    assert_eq!(decode("ca.crt"), harness.fake.ca_pem());
    let account_uid = harness.fake.object(&format!("{ACCOUNTS}/platform")).expect("account")["metadata"]["uid"].clone();
    assert_eq!(stored["metadata"]["annotations"]["kubernetes.io/service-account.uid"], account_uid);

    let issued = harness.fake.issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].token, token);
    assert_eq!(issued[0].expiration_timestamp, None);
    assert_eq!(harness.send_as(Some(&token), Method::GET, "/version", None, None).await.status, 200);

    // Deleting the Secret revokes its token.
    assert_eq!(harness.delete(&format!("{SECRETS}/platform-token")).await.status, 200);
    assert_eq!(harness.send_as(Some(&token), Method::GET, "/version", None, None).await.status, 401);
}

#[tokio::test]
async fn deleted_service_account_tokens_are_unauthorized() {
    let harness = Harness::start().await;
    let token = harness.service_account_token("platform").await;
    assert_eq!(harness.send_as(Some(&token), Method::GET, "/api/v1/nodes", None, None).await.status, 200);

    let deleted = harness.delete(&format!("{ACCOUNTS}/platform")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["kind"], "ServiceAccount", "service accounts return the deleted object");
    let rejected = harness.send_as(Some(&token), Method::GET, "/api/v1/nodes", None, None).await;
    assert_eq!(rejected.status, 401);
    assert_eq!(rejected.body["reason"], "Unauthorized");

    // A new account with the same name does not revive the old token.
    harness.post(ACCOUNTS, json!({"metadata": {"name": "platform"}})).await;
    assert_eq!(harness.send_as(Some(&token), Method::GET, "/api/v1/nodes", None, None).await.status, 401);
}

#[tokio::test]
async fn denied_requests_get_the_rbac_message() {
    let harness = Harness::start().await;
    let token = harness.service_account_token("hw-agent").await;
    harness.fake.add_node(node("node-1", json!({})));
    harness.fake.deny("patch", "hw-agent.aiod.eu", "nodehardwarereports");
    harness.fake.deny("get", "coordination.k8s.io", "leases");
    harness.fake.deny("list", "", "nodes");
    harness.fake.deny("create", "", "secrets");
    harness.fake.deny("create", "", "serviceaccounts/token");

    let user = "User \"system:serviceaccount:aiod-hw-agent:hw-agent\"";
    let cases = [
        (
            Method::PATCH,
            format!("{REPORTS}/node-1?fieldManager=hw-agent"),
            format!(
                "nodehardwarereports.hw-agent.aiod.eu \"node-1\" is forbidden: {user} cannot patch resource \"nodehardwarereports\" in API group \"hw-agent.aiod.eu\" at the cluster scope"
            ),
            json!({"name": "node-1", "group": "hw-agent.aiod.eu", "kind": "nodehardwarereports"}),
        ),
        (
            Method::GET,
            format!("{LEASES}/leader"),
            format!(
                "leases.coordination.k8s.io \"leader\" is forbidden: {user} cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"aiod-hw-agent\""
            ),
            json!({"name": "leader", "group": "coordination.k8s.io", "kind": "leases"}),
        ),
        (
            Method::GET,
            NODES.to_owned(),
            format!("nodes is forbidden: {user} cannot list resource \"nodes\" in API group \"\" at the cluster scope"),
            json!({"kind": "nodes"}),
        ),
        (
            Method::POST,
            SECRETS.to_owned(),
            format!(
                "secrets is forbidden: {user} cannot create resource \"secrets\" in API group \"\" in the namespace \"aiod-hw-agent\""
            ),
            json!({"kind": "secrets"}),
        ),
        (
            Method::POST,
            format!("{ACCOUNTS}/hw-agent/token"),
            format!(
                "serviceaccounts \"hw-agent\" is forbidden: {user} cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"aiod-hw-agent\""
            ),
            json!({"name": "hw-agent", "kind": "serviceaccounts"}),
        ),
    ];
    for (method, path, message, details) in cases {
        let content_type = (method == Method::PATCH).then_some(MERGE);
        let answer = harness.send_as(Some(&token), method.clone(), &path, content_type, Some(&json!({}))).await;
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.body);
        assert_eq!(answer.body["reason"], "Forbidden", "{method} {path}");
        assert_eq!(answer.body["code"], 403, "{method} {path}");
        assert_eq!(answer.body["message"], message, "{method} {path}");
        assert_eq!(answer.body["details"], details, "{method} {path}");
    }

    // The admin user is named in its own denials, and allow_all lifts them.
    let admin = harness.get(NODES).await;
    assert!(
        admin.body["message"].as_str().is_some_and(|message| message.contains("User \"admin\" cannot list")),
        "{}",
        admin.body
    );
    harness.fake.allow_all();
    assert_eq!(harness.get(NODES).await.status, 200);
}

#[tokio::test]
async fn unavailable_server_answers_503() {
    let harness = Harness::start().await;
    harness.fake.set_unavailable(true);
    let down = harness.get(NODES).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body["reason"], "ServiceUnavailable");
    harness.fake.set_unavailable(false);
    assert_eq!(harness.get(NODES).await.status, 200);
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let harness = Harness::start().await;
    harness.fake.clear_requests();
    harness.post(LEASES, lease("l")).await;
    harness
        .patch(&format!("{REPORTS}/node-1?fieldManager=hw-agent&force=true"), APPLY, report("node-1", json!({})))
        .await;
    harness.get("/api/v1/nodes/missing").await;

    let requests = harness.fake.requests();
    let lines: Vec<String> = requests.iter().map(|request| request.line()).collect();
    assert_eq!(
        lines,
        [
            format!("POST {LEASES} -> 201"),
            format!("PATCH {REPORTS}/node-1?fieldManager=hw-agent&force=true -> 201"),
            "GET /api/v1/nodes/missing -> 404".to_owned(),
        ]
    );
    assert_eq!(requests[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(requests[0].body.as_ref().map(|body| body["metadata"]["name"].clone()), Some(json!("l")));
    assert_eq!(requests[1].query, "fieldManager=hw-agent&force=true");
    assert_eq!(requests[1].content_type.as_deref(), Some(APPLY));
    assert_eq!(requests[2].body, None);

    harness.fake.clear_requests();
    assert!(harness.fake.requests().is_empty());
}

#[tokio::test]
async fn delete_returns_status_or_object_and_leaves_dependents() {
    let harness = Harness::start().await;
    harness.fake.add_node(node("node-1", json!({})));
    let node_uid = harness.fake.object("/api/v1/nodes/node-1").expect("node")["metadata"]["uid"].clone();
    let owned = json!({
        "apiVersion": "hw-agent.aiod.eu/v1alpha1", "kind": "NodeHardwareReport",
        "metadata": {"name": "node-1", "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": node_uid}]},
        "spec": {"nodeName": "node-1"},
    });
    assert_eq!(harness.post(REPORTS, owned).await.status, 201);

    let deleted = harness.delete("/api/v1/nodes/node-1").await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["status"], "Success");
    assert_eq!(deleted.body["details"], json!({"name": "node-1", "kind": "nodes", "uid": node_uid}));
    assert_eq!(harness.delete("/api/v1/nodes/node-1").await.status, 404);

    let report = harness.fake.object(&format!("{REPORTS}/node-1")).expect("no garbage collection");
    assert_eq!(report["metadata"]["ownerReferences"][0]["uid"], node_uid);

    harness.fake.add_node(node("node-2", json!({})));
    harness.fake.remove_node("node-2");
    assert!(harness.fake.object("/api/v1/nodes/node-2").is_none());

    let lease_created = harness.post(LEASES, lease("l")).await.body;
    let precondition = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1"}, "propagationPolicy": "Background"});
    let refused = harness.send(Method::DELETE, &format!("{LEASES}/l"), None, Some(&precondition)).await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.body["message"].as_str().is_some_and(|message| message.contains("Precondition failed")),
        "{}",
        refused.body
    );
    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"});
    let removed = harness.send(Method::DELETE, &format!("{LEASES}/l"), None, Some(&options)).await;
    assert_eq!(removed.status, 200);
    assert_eq!(removed.body["details"]["uid"], lease_created["metadata"]["uid"]);
}

#[tokio::test]
async fn fixtures_are_stored_and_listed() {
    let harness = Harness::start().await;
    let path = format!("{LEASES}/leader");
    let before = harness.fake.object("/api/v1/namespaces/default").expect("namespace");
    harness.fake.put_object(&path, json!({"spec": {"holderIdentity": "dead-pod", "leaseDurationSeconds": 15}}));
    let stored = harness.fake.object(&path).expect("lease stored");
    assert_eq!(stored["kind"], "Lease");
    assert_eq!(stored["metadata"]["name"], "leader");
    assert_eq!(stored["metadata"]["namespace"], "aiod-hw-agent");
    assert!(resource_version(&stored) > resource_version(&before));

    let fetched = harness.get(&path).await;
    assert_eq!(fetched.body["spec"]["holderIdentity"], "dead-pod");
    let listed = harness.fake.objects(LEASES);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kind"], "Lease");
    assert_eq!(harness.fake.objects("/api/v1/leases").len(), 0);

    let all_accounts = harness.get("/api/v1/serviceaccounts").await;
    assert_eq!(all_accounts.body["items"].as_array().map(Vec::len), Some(3), "one default account per namespace");
}

fn report_crd(status_subresource: bool) -> Value {
    let mut version =
        json!({"name": "v1alpha1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}});
    if status_subresource {
        version["subresources"] = json!({"status": {}});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "nodehardwarereports.hw-agent.aiod.eu"},
        "spec": {
            "group": "hw-agent.aiod.eu",
            "scope": "Cluster",
            "names": {"plural": "nodehardwarereports", "singular": "nodehardwarereport", "kind": "NodeHardwareReport", "listKind": "NodeHardwareReportList"},
            "versions": [version],
        },
    })
}

#[tokio::test]
async fn status_subresource_follows_the_crd() {
    let harness = Harness::start().await;
    let path = format!("{REPORTS}/node-1");
    harness.post(REPORTS, report("node-1", json!({"nodeName": "node-1"}))).await;
    assert_eq!(harness.get(&format!("{path}/status")).await.status, 404, "no CRD, no status subresource");

    let created = harness.post(CRDS, report_crd(true)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let crd = harness.get(&format!("{CRDS}/nodehardwarereports.hw-agent.aiod.eu")).await.body;
    let conditions: Vec<(&str, &str)> = crd["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|condition| {
            (condition["type"].as_str().unwrap_or_default(), condition["status"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(conditions, [("NamesAccepted", "True"), ("Established", "True")]);
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "NodeHardwareReport");

    let ignored = harness.patch(&path, MERGE, json!({"status": {"phase": "Ready"}})).await;
    assert_eq!(ignored.status, 200);
    assert!(ignored.body.get("status").is_none(), "the main resource ignores status: {}", ignored.body);

    let status = harness
        .patch(&format!("{path}/status"), MERGE, json!({"status": {"phase": "Ready"}, "spec": {"nodeName": "x"}}))
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["status"]["phase"], "Ready");
    assert_eq!(status.body["spec"]["nodeName"], "node-1", "the status subresource ignores spec");
    assert_eq!(status.body["metadata"]["generation"], 1, "status does not bump the generation");
}

#[tokio::test]
async fn discovery_lists_served_resources() {
    let harness = Harness::start().await;
    let groups = harness.get("/apis").await.body;
    let names: Vec<&str> =
        groups["groups"].as_array().expect("groups").iter().filter_map(|group| group["name"].as_str()).collect();
    assert!(names.contains(&"hw-agent.aiod.eu"), "{names:?}");
    assert!(names.contains(&"coordination.k8s.io"), "{names:?}");

    let core = harness.get("/api/v1").await.body;
    let resources: Vec<&str> = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|resource| resource["name"].as_str())
        .collect();
    assert!(resources.contains(&"nodes"), "{resources:?}");
    assert!(resources.contains(&"serviceaccounts/token"), "{resources:?}");
    assert_eq!(harness.get("/apis/example.com/v1").await.status, 404);
}

#[tokio::test]
async fn shutdown_makes_the_server_unreachable() {
    let harness = Harness::start().await;
    assert_eq!(harness.get("/version").await.status, 200);
    let url = harness.fake.url();
    let Harness { fake, http, _dir } = harness;
    fake.shutdown().await;
    let after = http.get(format!("{url}/version")).bearer_auth(ADMIN_TOKEN).send().await;
    assert!(after.is_err(), "{after:?}");
}
