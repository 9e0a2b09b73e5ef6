//! The credentials hand-off extension over real TLS: the key endpoint, the
//! PUT and GET routes with their error bodies, what reaches the state
//! database, and the operator's `aiod-mock credentials` commands run through
//! the real binary.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use aiod_mock::credentials::{CredentialsKey, seal};
use aiod_mock::{Client, FaultConfig, MockConfig, RunningMock};
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use rand::Rng as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Bounds every test so a missing response fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

const KEY_PATH: &str = "/extensions/hw-agent/credentials-key";

const KEY_CHANGED: &str = "the platform key changed after the hand-off; have the agent hand off again";

struct Harness {
    mock: RunningMock,
    http: reqwest::Client,
    state: Arc<tempfile::TempDir>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().expect("state directory"))).await
    }

    /// Starts a mock on an existing state directory, as a restart does.
    async fn start_in(state: Arc<tempfile::TempDir>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = |spec: &str| spec.parse::<Client>().expect("client spec");
        let mock = aiod_mock::start(MockConfig {
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            state_dir: state.path().to_path_buf(),
            clients: vec![
                client("lab-connector:s1:platform_lab"),
                client("other-connector:s2:platform_other"),
                client("alice:s3:"),
                client("bob:s4:"),
                client("editor:s5:update_computational_assets"),
            ],
            token_lifetime: Duration::from_secs(300),
            auto_publish: false,
            platforms: vec!["lab".to_owned(), "other".to_owned()],
            tls_names: Vec::new(),
            faults: FaultConfig::default(),
        })
        .await
        .expect("mock starts");
        let ca = reqwest::Certificate::from_pem(mock.ca_pem.as_bytes()).expect("CA certificate");
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTPS client");
        Self { mock, http, state }
    }

    fn state_dir(&self) -> &Path {
        self.state.path()
    }

    async fn token(&self, client_id: &str, secret: &str) -> String {
        let form = [("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret)];
        let response = self.http.post(self.mock.token_url()).form(&form).send().await.expect("token request");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("token body");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.mock.base_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let bytes = response.bytes().await.expect("response body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Creates a published asset of platform `lab` and returns its identifier.
    async fn create_asset(&self, connector_token: &str, resource_identifier: &str) -> String {
        let body = json!({"platform": "lab", "platform_resource_identifier": resource_identifier, "name": "cluster"});
        let (status, created) =
            self.send(Method::POST, "/computational_assets", Some(connector_token), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{created}");
        created["identifier"].as_str().expect("identifier").to_owned()
    }

    async fn public_key(&self) -> ([u8; 32], String) {
        let (status, document) = self.send(Method::GET, KEY_PATH, None, None).await;
        assert_eq!(status, StatusCode::OK);
        let bytes = URL_SAFE_NO_PAD.decode(document["public_key"].as_str().expect("public_key")).expect("base64url");
        let public_key: [u8; 32] = bytes.try_into().expect("32-byte public key");
        (public_key, document["key_id"].as_str().expect("key_id").to_owned())
    }

    async fn put_credentials(&self, identifier: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(Method::PUT, &credentials_path(identifier), token, Some(body)).await
    }

    async fn stop(self) {
        self.mock.shutdown().await;
    }
}

fn credentials_path(identifier: &str) -> String {
    format!("/extensions/hw-agent/computational_assets/{identifier}/credentials")
}

fn random_token() -> String {
    rand::rng().sample_iter(&rand::distr::Alphanumeric).take(40).map(char::from).collect()
}

/// Cluster credentials as the agent seals them: compact JSON, with the
/// fields in the agent's order rather than alphabetical.
fn cluster_credentials(token: &str) -> String {
    format!(
        r#"{{"schema":"aiod-hw-agent/cluster-credentials/v1","api_server_url":"https://10.20.30.40:6443","certificate_authority_data":"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==","user":"aiod-platform","token":"{token}","expires_at":null,"access":["get","list"]}}"#
    )
}

/// Builds the expected output of `credentials show` for
/// [`cluster_credentials`]: indented, in the same field order.
fn shown_cluster_credentials(token: &str) -> String {
    format!(
        r#"{{
  "schema": "aiod-hw-agent/cluster-credentials/v1",
  "api_server_url": "https://10.20.30.40:6443",
  "certificate_authority_data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
  "user": "aiod-platform",
  "token": "{token}",
  "expires_at": null,
  "access": [
    "get",
    "list"
  ]
}}
"#
    )
}

/// Seals `plaintext` for `identifier` and builds the PUT body.
fn sealed_body(public_key: &[u8; 32], key_id: &str, plaintext: &[u8], identifier: &str) -> Value {
    let (encapsulated_key, ciphertext) = seal(public_key, plaintext, identifier);
    json!({
        "key_id": key_id,
        "encapsulated_key": URL_SAFE_NO_PAD.encode(encapsulated_key),
        "ciphertext": URL_SAFE_NO_PAD.encode(ciphertext),
    })
}

fn assert_detail(body: &Value, expected: &str) {
    assert_eq!(body["detail"].as_str(), Some(expected), "body: {body}");
    let reference = body["reference"].as_str().expect("reference");
    assert_eq!(reference.len(), 32, "reference is a 32-hex uuid4: {reference}");
}

async fn within_timeout(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

/// Runs `aiod-mock credentials ARGS --state-dir STATE_DIR` to completion.
async fn run_credentials_command(args: &[&str], state_dir: &Path) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_aiod-mock"))
        .arg("credentials")
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .env_remove("AIOD_MOCK_STATE_DIR")
        .output()
        .await
        .expect("run aiod-mock credentials")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn key_endpoint_shape_and_key_id() {
    within_timeout(async {
        let harness = Harness::start().await;
        let stored = CredentialsKey::load_or_create(harness.state_dir()).expect("the mock's key");

        for prefix in ["", "/v2", "/v3"] {
            let (status, document) = harness.send(Method::GET, &format!("{prefix}{KEY_PATH}"), None, None).await;
            assert_eq!(status, StatusCode::OK, "prefix {prefix:?}");
            let object = document.as_object().expect("object");
            assert_eq!(object.len(), 6, "exactly six fields: {document}");
            assert_eq!(document["kem"], "DHKEM(X25519, HKDF-SHA256)");
            assert_eq!(document["kdf"], "HKDF-SHA256");
            assert_eq!(document["aead"], "ChaCha20Poly1305");
            assert_eq!(document["info"], "aiod-hw-agent credentials v1");

            let encoded = document["public_key"].as_str().expect("public_key");
            assert!(!encoded.contains('='), "no padding: {encoded}");
            let public_key = URL_SAFE_NO_PAD.decode(encoded).expect("base64url");
            assert_eq!(public_key.len(), 32);
            assert_eq!(public_key, stored.public_key_bytes());

            let expected_id = hex::encode(&Sha256::digest(&public_key)[..8]);
            assert_eq!(document["key_id"], expected_id.as_str());
            assert_eq!(stored.key_id(), expected_id);
        }

        let (status, _) = harness.send(Method::POST, KEY_PATH, None, None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

        let output = run_credentials_command(&["key"], harness.state_dir()).await;
        assert!(output.status.success(), "stderr: {}", text(&output.stderr));
        let printed: Value = serde_json::from_slice(&output.stdout).expect("key JSON");
        let (_, served) = harness.send(Method::GET, KEY_PATH, None, None).await;
        assert_eq!(printed, served, "`credentials key` prints what the route serves");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn hand_off_then_show_prints_plaintext() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let identifier = harness.create_asset(&connector, "cluster-1").await;
        let (public_key, key_id) = harness.public_key().await;

        let secret = random_token();
        let plaintext = cluster_credentials(&secret).into_bytes();
        let body = sealed_body(&public_key, &key_id, &plaintext, &identifier);
        let ciphertext_bytes = URL_SAFE_NO_PAD.decode(body["ciphertext"].as_str().expect("ciphertext")).expect("b64");
        let (status, response) = harness.put_credentials(&identifier, Some(&connector), body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{response}");
        assert_eq!(response, Value::Null, "204 has no body");

        let (status, metadata) =
            harness.send(Method::GET, &format!("/v2{}", credentials_path(&identifier)), Some(&connector), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(metadata.as_object().map(|object| object.len()), Some(3), "metadata only: {metadata}");
        assert_eq!(metadata["key_id"], key_id.as_str());
        assert_eq!(metadata["ciphertext_bytes"], json!(ciphertext_bytes.len()));
        let received_at = metadata["received_at"].as_str().expect("received_at");
        chrono::DateTime::parse_from_rfc3339(received_at).expect("received_at is RFC 3339");

        // The mock is still running, so this also reads a live WAL database.
        let output = run_credentials_command(&["show", &identifier], harness.state_dir()).await;
        assert!(output.status.success(), "stderr: {}", text(&output.stderr));
        assert_eq!(text(&output.stdout), shown_cluster_credentials(&secret));

        // A second hand-off replaces the first.
        let replacement = random_token();
        let body = sealed_body(&public_key, &key_id, cluster_credentials(&replacement).as_bytes(), &identifier);
        let (status, _) = harness.put_credentials(&identifier, Some(&connector), body).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let output = run_credentials_command(&["show", &identifier], harness.state_dir()).await;
        assert!(output.status.success(), "stderr: {}", text(&output.stderr));
        assert_eq!(text(&output.stdout), shown_cluster_credentials(&replacement));
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn owner_and_update_role_may_hand_off() {
    within_timeout(async {
        let harness = Harness::start().await;
        let alice = harness.token("alice", "s3").await;
        let editor = harness.token("editor", "s5").await;
        let (status, created) =
            harness.send(Method::POST, "/computational_assets", Some(&alice), Some(json!({"name": "draft"}))).await;
        assert_eq!(status, StatusCode::OK);
        let identifier = created["identifier"].as_str().expect("identifier").to_owned();
        let (public_key, key_id) = harness.public_key().await;

        for token in [&alice, &editor] {
            let body = sealed_body(&public_key, &key_id, b"{}", &identifier);
            let (status, response) = harness.put_credentials(&identifier, Some(token), body).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{response}");
            let (status, _) = harness.send(Method::GET, &credentials_path(&identifier), Some(token), None).await;
            assert_eq!(status, StatusCode::OK);
        }
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn ciphertext_is_bound_to_its_asset() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let asset_a = harness.create_asset(&connector, "cluster-a").await;
        let asset_b = harness.create_asset(&connector, "cluster-b").await;
        let (public_key, key_id) = harness.public_key().await;
        let rejected = json!({"detail": "The ciphertext does not open with the platform's key for this asset."});

        let sealed_for_a = sealed_body(&public_key, &key_id, b"{\"token\":\"x\"}", &asset_a);
        let (status, body) = harness.put_credentials(&asset_b, Some(&connector), sealed_for_a.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, rejected);
        let (status, _) = harness.send(Method::GET, &credentials_path(&asset_b), Some(&connector), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a rejected hand-off is not stored");

        let mut tampered = sealed_for_a.clone();
        let mut ciphertext = URL_SAFE_NO_PAD.decode(tampered["ciphertext"].as_str().expect("ciphertext")).expect("b64");
        ciphertext[0] ^= 1;
        tampered["ciphertext"] = json!(URL_SAFE_NO_PAD.encode(&ciphertext));
        let (status, body) = harness.put_credentials(&asset_a, Some(&connector), tampered).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "an altered ciphertext");
        assert_eq!(body, rejected);

        let other_dir = tempfile::tempdir().expect("directory");
        let other_key = CredentialsKey::load_or_create(other_dir.path()).expect("another key");
        let sealed_elsewhere = sealed_body(other_key.public_key_bytes(), &key_id, b"{}", &asset_a);
        let (status, body) = harness.put_credentials(&asset_a, Some(&connector), sealed_elsewhere).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "sealed to another key under the current key id");
        assert_eq!(body, rejected);

        let (status, _) = harness.put_credentials(&asset_a, Some(&connector), sealed_for_a).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "the same body opens for the asset it was sealed for");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn stale_key_id_gets_409() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let identifier = harness.create_asset(&connector, "cluster-stale").await;
        let (public_key, key_id) = harness.public_key().await;

        let body = sealed_body(&public_key, "0000000000000000", b"{}", &identifier);
        let (status, body) = harness.put_credentials(&identifier, Some(&connector), body).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let expected = format!(
            "Key id 0000000000000000 does not match the platform's current credentials key {key_id}. \
             Fetch /extensions/hw-agent/credentials-key and seal again."
        );
        assert_eq!(body, json!({"detail": expected}));
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn missing_or_invalid_token_gets_401() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let identifier = harness.create_asset(&connector, "cluster-anonymous").await;
        let (public_key, key_id) = harness.public_key().await;
        let body = sealed_body(&public_key, &key_id, b"{}", &identifier);

        let (status, response) = harness.put_credentials(&identifier, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_detail(&response, "No token found - This endpoint requires authorization. You need to be logged in.");
        let (status, response) = harness.send(Method::GET, &credentials_path(&identifier), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_detail(&response, "No token found - This endpoint requires authorization. You need to be logged in.");

        let (status, response) = harness.put_credentials(&identifier, Some("not-a-token"), body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_detail(&response, "Invalid authentication token");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn other_platform_gets_403() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let other = harness.token("other-connector", "s2").await;
        let bob = harness.token("bob", "s4").await;
        let identifier = harness.create_asset(&connector, "cluster-foreign").await;
        let (public_key, key_id) = harness.public_key().await;
        let body = sealed_body(&public_key, &key_id, b"{}", &identifier);
        let (status, _) = harness.put_credentials(&identifier, Some(&connector), body.clone()).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        for token in [&other, &bob] {
            let (status, response) = harness.put_credentials(&identifier, Some(token), body.clone()).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_detail(&response, "You do not have permission to edit computational_assets.");
            let (status, response) = harness.send(Method::GET, &credentials_path(&identifier), Some(token), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_detail(&response, "You do not have permission to edit computational_assets.");
        }

        let stale = sealed_body(&public_key, "0000000000000000", b"{}", &identifier);
        let (status, _) = harness.put_credentials(&identifier, Some(&other), stale).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "permission is checked before the key id");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deleted_or_unknown_asset_gets_404() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let identifier = harness.create_asset(&connector, "cluster-deleted").await;
        let (public_key, key_id) = harness.public_key().await;

        let (status, body) = harness.send(Method::GET, &credentials_path(&identifier), Some(&connector), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "nothing handed off yet");
        assert_eq!(
            body,
            json!({"detail": format!("No credentials were handed off for computational_asset '{identifier}'.")})
        );

        let body = sealed_body(&public_key, &key_id, b"{}", &identifier);
        let (status, _) = harness.put_credentials(&identifier, Some(&connector), body.clone()).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) =
            harness.send(Method::DELETE, &format!("/computational_assets/{identifier}"), Some(&connector), None).await;
        assert_eq!(status, StatusCode::OK);

        let deleted = format!("Computational_asset '{identifier}' not found in the database, because it was deleted.");
        let (status, response) = harness.put_credentials(&identifier, Some(&connector), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_detail(&response, &deleted);
        let (status, response) =
            harness.send(Method::GET, &credentials_path(&identifier), Some(&connector), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_detail(&response, &deleted);

        let output = run_credentials_command(&["show", &identifier], harness.state_dir()).await;
        assert!(!output.status.success(), "deleting the asset discards its hand-off");
        assert!(text(&output.stderr).contains("no credentials were handed off"), "{}", text(&output.stderr));

        let unknown = "comp_doesnotexist";
        let body = sealed_body(&public_key, &key_id, b"{}", unknown);
        let (status, response) = harness.put_credentials(unknown, Some(&connector), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_detail(&response, "Computational_asset 'comp_doesnotexist' not found in the database.");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_bodies_get_422() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let identifier = harness.create_asset(&connector, "cluster-invalid").await;
        let (public_key, key_id) = harness.public_key().await;
        let valid = sealed_body(&public_key, &key_id, b"{}", &identifier);

        let (status, body) = harness.put_credentials(&identifier, Some(&connector), json!({})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let missing =
            |name: &str| json!({"loc": ["body", name], "msg": "field required", "type": "value_error.missing"});
        assert_eq!(body, json!({"detail": [missing("key_id"), missing("encapsulated_key"), missing("ciphertext")]}));

        let mut bad_base64 = valid.clone();
        bad_base64["ciphertext"] = json!("not base64!");
        let (status, body) = harness.put_credentials(&identifier, Some(&connector), bad_base64).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["detail"][0]["loc"], json!(["body", "ciphertext"]));
        assert_eq!(body["detail"][0]["type"], "value_error");

        let encapsulated_key =
            URL_SAFE_NO_PAD.decode(valid["encapsulated_key"].as_str().expect("encapsulated_key")).expect("b64");
        let mut padded = valid.clone();
        padded["encapsulated_key"] = json!(URL_SAFE.encode(&encapsulated_key));
        let (status, body) = harness.put_credentials(&identifier, Some(&connector), padded).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "padding is rejected");
        assert_eq!(body["detail"][0]["loc"], json!(["body", "encapsulated_key"]));

        let mut short = valid.clone();
        short["encapsulated_key"] = json!(URL_SAFE_NO_PAD.encode(&encapsulated_key[..31]));
        let (status, body) = harness.put_credentials(&identifier, Some(&connector), short).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["detail"][0]["loc"], json!(["body", "encapsulated_key"]));
        assert_eq!(body["detail"][0]["type"], "value_error");
        assert!(body["detail"][0]["msg"].as_str().expect("msg").contains("got 31"), "{body}");

        let mut not_a_string = valid.clone();
        not_a_string["key_id"] = json!(5);
        let (status, body) = harness.put_credentials(&identifier, Some(&connector), not_a_string).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body,
            json!({"detail": [{"loc": ["body", "key_id"], "msg": "str type expected", "type": "type_error.str"}]})
        );

        let (status, body) = harness.put_credentials(&identifier, Some(&connector), json!([1])).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["detail"][0]["type"], "type_error.dict");

        let (status, _) = harness.put_credentials(&identifier, Some(&connector), valid).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "the valid body is accepted");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn database_contains_no_plaintext() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let identifier = harness.create_asset(&connector, "cluster-at-rest").await;
        let (public_key, key_id) = harness.public_key().await;
        let token = random_token();
        let plaintext = cluster_credentials(&token).into_bytes();
        let body = sealed_body(&public_key, &key_id, &plaintext, &identifier);
        let ciphertext = URL_SAFE_NO_PAD.decode(body["ciphertext"].as_str().expect("ciphertext")).expect("b64");
        let (status, _) = harness.put_credentials(&identifier, Some(&connector), body).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let mut stored = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let path = harness.state_dir().join(format!("aiod-mock.sqlite3{suffix}"));
            if let Ok(bytes) = std::fs::read(&path) {
                assert!(!contains(&bytes, token.as_bytes()), "{} contains the bearer token", path.display());
                assert!(!contains(&bytes, b"10.20.30.40"), "{} contains the API server", path.display());
                stored.push(bytes);
            }
        }
        assert!(!stored.is_empty(), "the database files exist");
        assert!(stored.iter().any(|bytes| contains(bytes, &ciphertext)), "the ciphertext itself is stored");
        harness.stop().await;
    })
    .await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Starts the `aiod-mock` binary with debug logging to `log`, and returns it
/// with its base URL, read from the line it prints once it listens.
async fn spawn_mock_process(state_dir: &Path, log: &Path) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;

    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aiod-mock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--platform", "lab", "--client", "lab-connector:s1:platform_lab"])
        .arg("--state-dir")
        .arg(state_dir)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start aiod-mock");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::io::BufReader::new(stdout).read_line(&mut line).await.expect("listening line");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("https://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (child, url)
}

/// The real binary, killed with SIGKILL after a hand-off: the key and the
/// hand-off survive, and the debug log contains neither the secret nor
/// the private key.
#[tokio::test]
async fn key_and_hand_off_survive_restart() {
    within_timeout(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let state = tempfile::tempdir().expect("state directory");
        let logs = tempfile::tempdir().expect("log directory");
        let log = logs.path().join("aiod-mock.log");
        let (mut child, url) = spawn_mock_process(state.path(), &log).await;
        let ca = std::fs::read(state.path().join("ca.pem")).expect("CA file");
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA")])
            .build()
            .expect("client");

        let form = [("grant_type", "client_credentials"), ("client_id", "lab-connector"), ("client_secret", "s1")];
        let token: Value = http
            .post(format!("{url}/realms/aiod/protocol/openid-connect/token"))
            .form(&form)
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token body");
        let bearer = token["access_token"].as_str().expect("access token").to_owned();
        let body = json!({"platform": "lab", "platform_resource_identifier": "cluster-restart", "name": "cluster"});
        let created: Value = http
            .post(format!("{url}/computational_assets"))
            .bearer_auth(&bearer)
            .json(&body)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("post body");
        let identifier = created["identifier"].as_str().expect("identifier").to_owned();

        let key_before: Value =
            http.get(format!("{url}{KEY_PATH}")).send().await.expect("key").json().await.expect("key body");
        let public_key: [u8; 32] = URL_SAFE_NO_PAD
            .decode(key_before["public_key"].as_str().expect("public_key"))
            .expect("base64url")
            .try_into()
            .expect("32 bytes");
        let secret = random_token();
        let plaintext = cluster_credentials(&secret).into_bytes();
        let sealed = sealed_body(&public_key, key_before["key_id"].as_str().expect("key_id"), &plaintext, &identifier);
        let response = http
            .put(format!("{url}{}", credentials_path(&identifier)))
            .bearer_auth(&bearer)
            .json(&sealed)
            .send()
            .await
            .expect("put");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let metadata_before: Value = http
            .get(format!("{url}{}", credentials_path(&identifier)))
            .bearer_auth(&bearer)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("metadata");
        child.kill().await.expect("kill -9");

        let (mut restarted, url) = spawn_mock_process(state.path(), &log).await;
        let key_after: Value =
            http.get(format!("{url}{KEY_PATH}")).send().await.expect("key").json().await.expect("key body");
        assert_eq!(key_after, key_before, "the key survives a restart");
        let bearer: Value = http
            .post(format!("{url}/realms/aiod/protocol/openid-connect/token"))
            .form(&form)
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token body");
        let metadata_after: Value = http
            .get(format!("{url}{}", credentials_path(&identifier)))
            .bearer_auth(bearer["access_token"].as_str().expect("access token"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("metadata");
        assert_eq!(metadata_after, metadata_before, "the hand-off survives a restart");
        restarted.kill().await.expect("stop mock");

        let output = run_credentials_command(&["show", &identifier], state.path()).await;
        assert!(output.status.success(), "stderr: {}", text(&output.stderr));
        assert_eq!(text(&output.stdout), shown_cluster_credentials(&secret));

        let log_text = std::fs::read_to_string(&log).expect("log");
        assert!(log_text.contains("credentials handed off"), "the hand-off is logged: {log_text}");
        assert!(!log_text.contains(&secret), "the log contains the handed-off token");
        let private_key = std::fs::read_to_string(state.path().join("credentials-x25519.key")).expect("key file");
        assert!(!log_text.contains(private_key.trim()), "the log contains the private key");
    })
    .await;
}

#[tokio::test]
async fn rotate_key_then_show_reports_key_change() {
    within_timeout(async {
        let harness = Harness::start().await;
        let connector = harness.token("lab-connector", "s1").await;
        let identifier = harness.create_asset(&connector, "cluster-rotated").await;
        let (public_key, old_key_id) = harness.public_key().await;
        let body = sealed_body(&public_key, &old_key_id, b"{\"token\":\"x\"}", &identifier);
        let (status, _) = harness.put_credentials(&identifier, Some(&connector), body).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let state = Arc::clone(&harness.state);
        harness.stop().await;

        let output = run_credentials_command(&["rotate-key"], state.path()).await;
        assert!(output.status.success(), "stderr: {}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(stderr.contains("can no longer be opened"), "{stderr}");
        assert!(stderr.contains("1 stored"), "{stderr}");
        let new_key: Value = serde_json::from_slice(&output.stdout).expect("new key JSON");
        let new_key_id = new_key["key_id"].as_str().expect("key_id").to_owned();
        assert_ne!(new_key_id, old_key_id);

        let output = run_credentials_command(&["show", &identifier], state.path()).await;
        assert!(!output.status.success());
        assert!(output.stdout.is_empty(), "nothing is printed on stdout");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(KEY_CHANGED), "{stderr}");
        assert!(stderr.contains(&old_key_id), "names the key of the hand-off: {stderr}");
        assert!(stderr.contains(&new_key_id), "names the key in the state directory: {stderr}");

        let restarted = Harness::start_in(state).await;
        let (new_public_key, served_key_id) = restarted.public_key().await;
        assert_eq!(served_key_id, new_key_id, "a restarted mock serves the new key");
        let connector = restarted.token("lab-connector", "s1").await;
        let body = sealed_body(&public_key, &old_key_id, b"{}", &identifier);
        let (status, _) = restarted.put_credentials(&identifier, Some(&connector), body).await;
        assert_eq!(status, StatusCode::CONFLICT, "the old key id is stale");
        let body = sealed_body(&new_public_key, &new_key_id, b"{\"token\":\"y\"}", &identifier);
        let (status, _) = restarted.put_credentials(&identifier, Some(&connector), body).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let output = run_credentials_command(&["show", &identifier], restarted.state_dir()).await;
        assert!(output.status.success(), "stderr: {}", text(&output.stderr));
        assert_eq!(serde_json::from_slice::<Value>(&output.stdout).expect("JSON"), json!({"token": "y"}));
        restarted.stop().await;
    })
    .await;
}

#[tokio::test]
async fn show_errors_name_the_fix() {
    within_timeout(async {
        let missing = Path::new("/nonexistent/aiod-mock-state");
        for args in [&["show", "comp_x"][..], &["key"], &["rotate-key"]] {
            let output = run_credentials_command(args, missing).await;
            assert!(!output.status.success(), "{args:?}");
            let stderr = text(&output.stderr);
            assert!(stderr.contains("/nonexistent/aiod-mock-state"), "{args:?}: {stderr}");
            assert!(stderr.contains("does not exist"), "{args:?}: {stderr}");
        }

        // Reading an empty directory reports it and leaves it empty.
        let empty = tempfile::tempdir().expect("empty dir");
        let output = run_credentials_command(&["show", "comp_x"], empty.path()).await;
        assert!(!output.status.success());
        assert!(text(&output.stderr).contains("holds no aiod-mock database"), "{}", text(&output.stderr));
        assert_eq!(std::fs::read_dir(empty.path()).expect("read dir").count(), 0, "show created files");

        let harness = Harness::start().await;
        let output = run_credentials_command(&["show", "comp_nothing"], harness.state_dir()).await;
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        assert!(stderr.contains("no credentials were handed off for asset comp_nothing"), "{stderr}");
        assert!(stderr.contains("have the agent hand them off"), "{stderr}");
        harness.stop().await;
    })
    .await;
}
