//! The mock's public HTTPS interface against the behaviour of the real AIoD
//! server: status codes, error bodies, visibility and write rules.

use std::time::Duration;

use aiod_mock::{Client, FaultConfig, MockConfig, RunningMock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Bounds every test so a missing response fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

struct Harness {
    mock: RunningMock,
    http: reqwest::Client,
    state: std::sync::Arc<tempfile::TempDir>,
}

impl Harness {
    async fn start(auto_publish: bool) -> Self {
        let state = std::sync::Arc::new(tempfile::tempdir().expect("state directory"));
        Self::start_in(state, auto_publish).await
    }

    /// Starts a mock on an existing state directory, as a restart does.
    async fn start_in(state: std::sync::Arc<tempfile::TempDir>, auto_publish: bool) -> Self {
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
                client("admin:s5:create_platforms,update_platforms,delete_platforms,update_computational_assets"),
                client("reviewer:s6:review_aiod_resources"),
            ],
            token_lifetime: Duration::from_secs(300),
            auto_publish,
            platforms: vec!["lab".to_owned()],
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

    async fn post_asset(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, "/computational_assets", Some(token), Some(body)).await
    }

    async fn stop(self) {
        self.mock.shutdown().await;
    }
}

fn connector_body(resource_identifier: &str) -> Value {
    json!({"platform": "lab", "platform_resource_identifier": resource_identifier, "name": "node", "type": "Compute Node"})
}

fn assert_detail(body: &Value, expected: &str) {
    assert_eq!(body["detail"].as_str(), Some(expected), "body: {body}");
    let reference = body["reference"].as_str().expect("reference");
    assert_eq!(reference.len(), 32, "reference is a 32-hex uuid4: {reference}");
}

async fn within_timeout(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

#[tokio::test]
async fn connector_post_publishes_immediately() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let token = harness.token("lab-connector", "s1").await;

        let (status, body) = harness.post_asset(&token, connector_body("pid-1")).await;
        assert_eq!(status, StatusCode::OK);
        let identifier = body["identifier"].as_str().expect("identifier").to_owned();
        assert!(identifier.starts_with("comp_"));
        assert_eq!(identifier.len(), 29);
        assert!(identifier[5..].chars().all(|c| c.is_ascii_alphanumeric()));

        let (status, asset) =
            harness.send(Method::GET, &format!("/computational_assets/{identifier}"), None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(asset["aiod_entry"]["status"], "published");
        assert_eq!(asset["type"], "compute node", "type is lowercased");
        assert_eq!(asset["ai_resource_identifier"], asset["identifier"]);
        assert_eq!(asset["ai_asset_identifier"], asset["identifier"]);
        assert_eq!(asset["keyword"], json!([]), "empty lists are kept");
        assert!(asset.get("version").is_none(), "null fields are left out");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn prefixes_serve_the_same_routes() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let token = harness.token("lab-connector", "s1").await;
        let (_, body) = harness.post_asset(&token, connector_body("pid-prefix")).await;
        let identifier = body["identifier"].as_str().expect("identifier");

        for prefix in ["", "/v2", "/v3"] {
            let (status, asset) =
                harness.send(Method::GET, &format!("{prefix}/computational_assets/{identifier}"), None, None).await;
            assert_eq!(status, StatusCode::OK, "prefix {prefix:?}");
            assert_eq!(asset["identifier"], identifier);
        }
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn missing_and_invalid_tokens_get_401() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let (status, body) = harness.send(Method::POST, "/computational_assets", None, Some(connector_body("x"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_detail(&body, "No token found - This endpoint requires authorization. You need to be logged in.");

        let (status, body) = harness.post_asset("not-a-token", connector_body("x")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_detail(&body, "Invalid authentication token");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn token_endpoint_rejects_bad_requests() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let url = harness.mock.token_url();
        let cases = [
            (
                vec![("grant_type", "client_credentials"), ("client_id", "alice"), ("client_secret", "wrong")],
                401,
                "invalid_client",
            ),
            (
                vec![("grant_type", "password"), ("client_id", "alice"), ("client_secret", "s3")],
                400,
                "unsupported_grant_type",
            ),
            (vec![("client_id", "alice"), ("client_secret", "s3")], 400, "invalid_request"),
        ];
        for (form, status, error) in cases {
            let response = harness.http.post(&url).form(&form).send().await.expect("token request");
            assert_eq!(response.status().as_u16(), status, "{form:?}");
            let body: Value = response.json().await.expect("error body");
            assert_eq!(body["error"], error, "{form:?}");
        }
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn platform_rules_for_users_and_connectors() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let user = harness.token("alice", "s3").await;
        let connector = harness.token("lab-connector", "s1").await;
        let other = harness.token("other-connector", "s2").await;

        let (status, body) = harness.post_asset(&user, connector_body("pid")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_detail(&body, "No permission to set platform or platform resource identifier.");

        let (status, body) = harness.post_asset(&other, connector_body("pid")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_detail(&body, "No permission to upload assets for lab platform.");

        let (status, body) = harness.post_asset(&connector, json!({"platform": "lab", "name": "x"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_detail(&body, "Platform resource identifier may not be none.");

        let (status, body) = harness.post_asset(&connector, json!({"platform_resource_identifier": "p", "name": "x"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_detail(&body, "If platform is NULL, platform_resource_identifier should also be NULL, and vice versa.");

        let other_body = json!({"platform": "other", "platform_resource_identifier": "p", "name": "x"});
        let (status, body) = harness.post_asset(&other, other_body).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        assert_detail(&body, "Platform other does not exist. You can register it using the POST platforms endpoint.");

        let (status, first) = harness.post_asset(&connector, connector_body("dup")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = harness.post_asset(&connector, connector_body("dup")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let expected = format!(
            "There already exists a computational_asset with the same platform and platform_resource_identifier, with identifier={}.",
            first["identifier"].as_str().expect("identifier")
        );
        assert_detail(&body, &expected);
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn user_drafts_are_private() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let alice = harness.token("alice", "s3").await;
        let bob = harness.token("bob", "s4").await;

        let (status, body) = harness.post_asset(&alice, json!({"name": "draft"})).await;
        assert_eq!(status, StatusCode::OK);
        let identifier = body["identifier"].as_str().expect("identifier").to_owned();
        let path = format!("/computational_assets/{identifier}");

        let (status, body) = harness.send(Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_detail(&body, "This asset is not published. It requires authentication to access.");

        let (status, body) = harness.send(Method::GET, &path, Some(&bob), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_detail(&body, "You are not allowed to view this resource.");

        let (status, asset) = harness.send(Method::GET, &path, Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(asset["aiod_entry"]["status"], "draft");
        assert_eq!(asset["platform"], "aiod");
        assert_eq!(asset["platform_resource_identifier"], identifier.as_str());

        let (_, list) = harness.send(Method::GET, "/computational_assets", None, None).await;
        assert_eq!(list, json!([]), "drafts are not listed");
        let (_, count) = harness.send(Method::GET, "/counts/computational_assets", None, None).await;
        assert_eq!(count, json!(0), "drafts are not counted");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn auto_publish_publishes_user_assets() {
    within_timeout(async {
        let harness = Harness::start(true).await;
        let alice = harness.token("alice", "s3").await;
        let (_, body) = harness.post_asset(&alice, json!({"name": "published"})).await;
        let identifier = body["identifier"].as_str().expect("identifier");
        let (status, asset) =
            harness.send(Method::GET, &format!("/computational_assets/{identifier}"), None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(asset["aiod_entry"]["status"], "published");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn put_replaces_the_whole_asset() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let connector = harness.token("lab-connector", "s1").await;
        let bob = harness.token("bob", "s4").await;
        let mut body = connector_body("pid-put");
        body["version"] = json!("1");
        body["description"] = json!({"plain": "old", "html": "<p>old</p>"});
        let (_, created) = harness.post_asset(&connector, body).await;
        let path = format!("/computational_assets/{}", created["identifier"].as_str().expect("identifier"));

        let (status, body) = harness.send(Method::PUT, &path, Some(&bob), Some(connector_body("pid-put"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_detail(&body, "You do not have permission to edit computational_assets.");

        let (status, body) = harness.send(Method::PUT, &path, Some(&connector), Some(connector_body("pid-put"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, Value::Null, "PUT returns null");

        let (_, asset) = harness.send(Method::GET, &path, None, None).await;
        assert!(asset.get("version").is_none(), "an omitted scalar is cleared");
        assert_eq!(asset["description"]["plain"], "old", "an omitted description keeps its value");

        let (status, _) =
            harness.send(Method::PUT, &path, Some(&connector), Some(json!({"name": "no platform"}))).await;
        assert_eq!(status, StatusCode::OK);
        let (_, asset) = harness.send(Method::GET, &path, None, None).await;
        assert!(asset.get("platform").is_none(), "a PUT without platform fields clears them");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn put_onto_another_pair_conflicts() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let connector = harness.token("lab-connector", "s1").await;
        let (_, first) = harness.post_asset(&connector, connector_body("a")).await;
        let (_, second) = harness.post_asset(&connector, connector_body("b")).await;
        let path = format!("/computational_assets/{}", second["identifier"].as_str().expect("identifier"));

        let (status, body) = harness.send(Method::PUT, &path, Some(&connector), Some(connector_body("a"))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .ends_with(&format!("identifier={}.", first["identifier"].as_str().expect("identifier")))
        );
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delete_is_soft_and_frees_the_pair() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let connector = harness.token("lab-connector", "s1").await;
        let bob = harness.token("bob", "s4").await;
        let (_, created) = harness.post_asset(&connector, connector_body("pid-del")).await;
        let identifier = created["identifier"].as_str().expect("identifier").to_owned();
        let path = format!("/computational_assets/{identifier}");

        let (status, body) = harness.send(Method::DELETE, &path, Some(&bob), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_detail(&body, "You do not have permission to delete computational_assets.");

        let (status, body) = harness.send(Method::DELETE, &path, Some(&connector), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, Value::Null);

        let (status, body) = harness.send(Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_detail(
            &body,
            &format!("Computational_asset '{identifier}' not found in the database, because it was deleted."),
        );

        let (status, again) = harness.post_asset(&connector, connector_body("pid-del")).await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(again["identifier"], created["identifier"]);
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn identifiers_and_routes_are_checked() {
    within_timeout(async {
        let harness = Harness::start(false).await;

        let (status, body) = harness.send(Method::GET, "/computational_assets/data_abc", None, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            body["detail"]
                .as_str()
                .expect("string detail")
                .starts_with("'data_abc' is not a valid computational_asset identifier")
        );

        let (status, body) = harness.send(Method::GET, "/computational_assets/comp_doesnotexist", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_detail(&body, "Computational_asset 'comp_doesnotexist' not found in the database.");

        let (status, body) = harness.send(Method::GET, "/nonexistent", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["detail"], "Not Found");

        let (status, body) = harness.send(Method::PATCH, "/computational_assets", None, None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body, json!({"detail": "Method Not Allowed"}));

        let response = harness
            .http
            .get(format!("{}/computational_assets/?limit=5", harness.mock.base_url()))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(response.headers()["location"], "/computational_assets?limit=5");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_bodies_get_pydantic_errors() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let token = harness.token("lab-connector", "s1").await;

        let (status, body) = harness.post_asset(&token, json!({})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body,
            json!({"detail": [{"loc": ["body", "name"], "msg": "field required", "type": "value_error.missing"}]})
        );

        let (status, body) = harness.post_asset(&token, json!({"name": "x".repeat(257)})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["detail"][0]["ctx"], json!({"limit_value": 256}));

        let (status, body) =
            harness.post_asset(&token, json!({"name": "x", "aiod_entry": {"status": "published"}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["detail"][0]["type"], "value_error.extra");

        let response = harness
            .http
            .post(format!("{}/computational_assets", harness.mock.base_url()))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{\"name\": ")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = response.json().await.expect("error body");
        assert_eq!(body["detail"][0]["type"], "json_invalid");
        assert_eq!(body["detail"][0]["loc"], json!(["body", 9]));

        let (status, body) = harness.send(Method::GET, "/computational_assets?limit=5000", None, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["detail"][0]["type"], "value_error.number.not_le");
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let token = harness.token("lab-connector", "s1").await;
        let (status, body) =
            harness.post_asset(&token, json!({"name": "x", "note": [{"value": "y".repeat(2 << 20)}]})).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body["detail"].as_str().expect("detail").contains("larger than"));
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn counts_types_and_platform_lookup() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let token = harness.token("lab-connector", "s1").await;
        let admin = harness.token("admin", "s5").await;
        harness.post_asset(&token, connector_body("c1")).await;
        harness.post_asset(&token, connector_body("c2")).await;

        let (_, count) = harness.send(Method::GET, "/counts/computational_assets", None, None).await;
        assert_eq!(count, json!(2));
        let (_, detailed) = harness.send(Method::GET, "/counts/computational_assets?detailed=true", None, None).await;
        assert_eq!(detailed, json!({"lab": 2}));
        let (_, counts) = harness.send(Method::GET, "/counts", None, None).await;
        assert_eq!(counts, json!({"computational_assets": {"lab": 2}}));
        let (_, types) = harness.send(Method::GET, "/computational_asset_types", None, None).await;
        assert_eq!(types, json!(["compute node"]));

        let (status, body) = harness.send(Method::GET, "/platforms/lab/computational_assets/c1", None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "only built-in platform names are served");
        assert_detail(&body, "platform 'lab' not recognized.");

        let (status, listed) = harness.send(Method::GET, "/platforms/lab/computational_assets", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed.as_array().map(Vec::len), Some(2));

        let (status, body) = harness.send(Method::POST, "/platforms", Some(&admin), Some(json!({"name": "lab"}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_detail(&body, "There already exists a platform with the same name.");
        let (status, body) = harness.send(Method::POST, "/platforms", Some(&token), Some(json!({"name": "new"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_detail(&body, "You do not have permission to create platforms.");
        let (status, created) =
            harness.send(Method::POST, "/platforms", Some(&admin), Some(json!({"name": "new"}))).await;
        assert_eq!(status, StatusCode::OK);
        let number = created["identifier"].as_u64().expect("POST returns a number");
        let (status, platform) = harness.send(Method::GET, &format!("/platforms/{number}"), None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(platform, json!({"name": "new", "identifier": number.to_string()}));
        let (status, _) = harness.send(Method::GET, "/platforms/new", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "platforms are looked up by number only");

        let (status, me) = harness.send(Method::GET, "/authorization_test", Some(&token), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["roles"], json!(["platform_lab"]));
        harness.stop().await;
    })
    .await;
}

/// Many clients at once, each on its own TLS connection: every create gets
/// its own identifier, and racing creates of one (platform, resource
/// identifier) pair leave one asset and 409s for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_nothing() {
    within_timeout(async {
        let harness = std::sync::Arc::new(Harness::start(false).await);
        let token = std::sync::Arc::new(harness.token("lab-connector", "s1").await);
        let ca = reqwest::Certificate::from_pem(harness.mock.ca_pem.as_bytes()).expect("CA certificate");
        let url = format!("{}/computational_assets", harness.mock.base_url());

        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..1000 {
            let client = reqwest::Client::builder().tls_certs_only([ca.clone()]).build().expect("client");
            let token = std::sync::Arc::clone(&token);
            let url = url.clone();
            tasks.spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(token.as_str())
                    .json(&connector_body(&format!("soak-{index}")))
                    .send()
                    .await
                    .expect("request");
                (response.status(), response.json::<Value>().await.expect("body"))
            });
        }
        let mut identifiers = std::collections::BTreeSet::new();
        while let Some(result) = tasks.join_next().await {
            let (status, body) = result.expect("task");
            assert_eq!(status, StatusCode::OK, "{body}");
            identifiers.insert(body["identifier"].as_str().expect("identifier").to_owned());
        }
        assert_eq!(identifiers.len(), 1000, "every writer got a distinct identifier");
        let (_, count) = harness.send(Method::GET, "/counts/computational_assets", None, None).await;
        assert_eq!(count, json!(1000));

        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let harness = std::sync::Arc::clone(&harness);
            let token = std::sync::Arc::clone(&token);
            racers.spawn(async move { harness.post_asset(&token, connector_body("contended")).await.0 });
        }
        let mut statuses = Vec::new();
        while let Some(result) = racers.join_next().await {
            statuses.push(result.expect("task"));
        }
        assert_eq!(statuses.iter().filter(|status| **status == StatusCode::OK).count(), 1);
        assert_eq!(statuses.iter().filter(|status| **status == StatusCode::CONFLICT).count(), 49);
    })
    .await;
}

#[tokio::test]
async fn state_survives_restart() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let token = harness.token("lab-connector", "s1").await;
        let admin = harness.token("admin", "s5").await;
        let alice = harness.token("alice", "s3").await;
        let (_, created) = harness.post_asset(&token, connector_body("persisted")).await;
        let identifier = created["identifier"].as_str().expect("identifier").to_owned();
        let (_, gone) = harness.post_asset(&token, connector_body("deleted-before-restart")).await;
        let gone = gone["identifier"].as_str().expect("identifier").to_owned();
        harness.send(Method::DELETE, &format!("/computational_assets/{gone}"), Some(&token), None).await;
        let (_, draft) = harness.post_asset(&alice, json!({"name": "alice's draft"})).await;
        let draft = draft["identifier"].as_str().expect("identifier").to_owned();
        harness.send(Method::POST, "/platforms", Some(&admin), Some(json!({"name": "added-later"}))).await;
        let state = std::sync::Arc::clone(&harness.state);
        harness.stop().await;

        let restarted = Harness::start_in(state, false).await;
        let (status, asset) =
            restarted.send(Method::GET, &format!("/computational_assets/{identifier}"), None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(asset["platform_resource_identifier"], "persisted");
        assert_eq!(asset["aiod_entry"]["status"], "published");

        let (status, body) = restarted.send(Method::GET, &format!("/computational_assets/{gone}"), None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_detail(
            &body,
            &format!("Computational_asset '{gone}' not found in the database, because it was deleted."),
        );

        let (status, _) = restarted.send(Method::GET, &format!("/computational_assets/{draft}"), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a draft stays private after a restart");
        let alice = restarted.token("alice", "s3").await;
        let (status, _) =
            restarted.send(Method::GET, &format!("/computational_assets/{draft}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK, "its owner still sees it");

        let (_, count) = restarted.send(Method::GET, "/counts/computational_assets?detailed=true", None, None).await;
        assert_eq!(count, json!({"lab": 1}));
        let (_, types) = restarted.send(Method::GET, "/computational_asset_types", None, None).await;
        assert_eq!(types, json!(["compute node"]));
        let (_, platforms) = restarted.send(Method::GET, "/platforms?limit=100", None, None).await;
        let names: Vec<&str> = platforms.as_array().expect("list").iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.contains(&"added-later"), "{names:?}");

        let token = restarted.token("lab-connector", "s1").await;
        let (status, _) = restarted.post_asset(&token, connector_body("persisted")).await;
        assert_eq!(status, StatusCode::CONFLICT, "the stored pair still conflicts after a restart");
        let (status, _) = restarted.post_asset(&token, connector_body("deleted-before-restart")).await;
        assert_eq!(status, StatusCode::OK, "a deleted pair is free after a restart");
        restarted.stop().await;
    })
    .await;
}

/// Starts the `aiod-mock` binary and returns it with its base URL, read from
/// the line it prints once it listens.
async fn spawn_mock_process(state_dir: &std::path::Path) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aiod-mock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--platform", "lab", "--client", "lab-connector:s1:platform_lab"])
        .arg("--state-dir")
        .arg(state_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
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

#[tokio::test]
async fn answered_write_survives_kill() {
    within_timeout(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let state = tempfile::tempdir().expect("state directory");
        let (mut child, url) = spawn_mock_process(state.path()).await;
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
        let token = token["access_token"].as_str().expect("access token");
        let response = http
            .post(format!("{url}/computational_assets"))
            .bearer_auth(token)
            .json(&connector_body("survivor"))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), StatusCode::OK);
        let created: Value = response.json().await.expect("post body");
        // SIGKILL right after the response, so no shutdown code runs.
        child.kill().await.expect("kill -9");

        let (mut restarted, url) = spawn_mock_process(state.path()).await;
        let identifier = created["identifier"].as_str().expect("identifier");
        let response = http.get(format!("{url}/computational_assets/{identifier}")).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::OK, "the answered write was lost");
        restarted.kill().await.expect("stop mock");
    })
    .await;
}

/// Validates `instance` against a component schema of the served OpenAPI
/// document, which is the upstream server's own.
fn assert_matches_schema(document: &Value, schema: &str, instance: &Value) {
    let errors = schema_errors(document, schema, instance);
    assert!(errors.is_empty(), "{schema} mismatch: {errors:?}\ninstance: {instance}");
}

fn schema_errors(document: &Value, schema: &str, instance: &Value) -> Vec<String> {
    let mut root = document.clone();
    root["$ref"] = json!(format!("#/components/schemas/{schema}"));
    let validator = jsonschema::draft202012::new(&root).expect("schema compiles");
    validator.iter_errors(instance).map(|error| format!("{error} at {}", error.instance_path())).collect()
}

#[tokio::test]
async fn responses_match_openapi_schemas() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let (status, document) = harness.send(Method::GET, "/openapi.json", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(document["openapi"], "3.1.0");
        let wrong = json!({"name": 5, "identifier": "comp_x", "keyword": "not a list"});
        assert!(
            !schema_errors(&document, "ComputationalAssetRead", &wrong).is_empty(),
            "the validator catches a bad asset"
        );

        let token = harness.token("lab-connector", "s1").await;
        let mut body = connector_body("schema");
        body["keyword"] = json!(["GPU", "kubernetes"]);
        body["description"] = json!({"plain": "{}", "html": "<p>x</p>"});
        body["is_accessible_for_free"] = json!(true);
        body["date_published"] = json!("2026-01-02T03:04:05Z");
        body["note"] = json!([{"value": "a note"}]);
        let (_, created) = harness.post_asset(&token, body).await;
        let identifier = created["identifier"].as_str().expect("identifier");

        let (_, asset) = harness.send(Method::GET, &format!("/computational_assets/{identifier}"), None, None).await;
        assert_matches_schema(&document, "ComputationalAssetRead", &asset);
        let (_, list) = harness.send(Method::GET, "/computational_assets", None, None).await;
        for item in list.as_array().expect("list") {
            assert_matches_schema(&document, "ComputationalAssetRead", item);
        }
        let (_, platforms) = harness.send(Method::GET, "/platforms", None, None).await;
        for item in platforms.as_array().expect("list") {
            assert_matches_schema(&document, "PlatformRead", item);
        }
        let (_, invalid) = harness.post_asset(&token, json!({})).await;
        assert_matches_schema(&document, "HTTPValidationError", &invalid);
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn submission_review_publishes_a_draft() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let alice = harness.token("alice", "s3").await;
        let bob = harness.token("bob", "s4").await;
        let reviewer = harness.token("reviewer", "s6").await;
        let (_, created) = harness.post_asset(&alice, json!({"name": "to review"})).await;
        let identifier = created["identifier"].as_str().expect("identifier").to_owned();
        let path = format!("/computational_assets/{identifier}");

        let request = json!({"asset_identifiers": [identifier], "comment": "please"});
        let (status, body) = harness.send(Method::POST, "/submissions", Some(&bob), Some(request.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "only the owner submits: {body}");
        let (status, body) = harness.send(Method::POST, "/submissions", Some(&alice), Some(request)).await;
        assert_eq!(status, StatusCode::OK);
        let submission = body["submission_identifier"].as_u64().expect("submission identifier");

        let (_, asset) = harness.send(Method::GET, &path, Some(&alice), None).await;
        assert_eq!(asset["aiod_entry"]["status"], "submitted");
        let (status, body) = harness.send(Method::PUT, &path, Some(&alice), Some(json!({"name": "edit"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_detail(&body, "You cannot edit an asset under submission.");

        let (_, pending) = harness.send(Method::GET, "/submissions?mode=pending", Some(&alice), None).await;
        assert_eq!(pending.as_array().map(Vec::len), Some(1));

        let review = json!({"submission_identifier": submission, "decision": "accepted", "comment": "fine"});
        let (status, _) = harness.send(Method::POST, "/reviews", Some(&alice), Some(review.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "only reviewers review");
        let (status, decided) = harness.send(Method::POST, "/reviews", Some(&reviewer), Some(review)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(decided["decision"], "accepted");

        let (status, asset) = harness.send(Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "published assets are public");
        assert_eq!(asset["aiod_entry"]["status"], "published");
        let (_, view) = harness.send(Method::GET, &format!("/submissions/{submission}"), Some(&alice), None).await;
        assert_eq!(view["reviews"][0]["decision"], "accepted");
        assert_eq!(view["assets"][0]["identifier"], identifier.as_str());
        harness.stop().await;
    })
    .await;
}

#[tokio::test]
async fn retracted_submission_returns_to_draft() {
    within_timeout(async {
        let harness = Harness::start(false).await;
        let alice = harness.token("alice", "s3").await;
        let (_, created) = harness.post_asset(&alice, json!({"name": "retract me"})).await;
        let identifier = created["identifier"].as_str().expect("identifier").to_owned();
        let (_, body) = harness
            .send(Method::POST, "/submissions", Some(&alice), Some(json!({"asset_identifiers": [identifier]})))
            .await;
        let submission = body["submission_identifier"].as_u64().expect("submission identifier");

        let (status, _) =
            harness.send(Method::POST, &format!("/submissions/retract/{submission}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        let (_, asset) =
            harness.send(Method::GET, &format!("/computational_assets/{identifier}"), Some(&alice), None).await;
        assert_eq!(asset["aiod_entry"]["status"], "draft");
        let (_, completed) = harness.send(Method::GET, "/submissions?mode=completed", Some(&alice), None).await;
        assert_eq!(completed.as_array().map(Vec::len), Some(1));
        harness.stop().await;
    })
    .await;
}
