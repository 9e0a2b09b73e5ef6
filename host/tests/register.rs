//! Registration against the real mock over real TLS, started on port 0 with
//! fresh certificates for each test.

mod common;

use std::path::Path;
use std::time::Duration;

use aiod_mock::{Client, MockConfig, RunningMock};
use hw_agent::aiod::{AiodClient, AiodSettings, RetryPolicy};
use hw_agent::commands::register_node;
use hw_agent::report::model::NodeReport;
use secrecy::SecretString;
use serde_json::Value;

const AGENT_SECRET: &str = "agent-secret-7f3a9c";
const ADMIN_SECRET: &str = "admin-secret-2b8e1d";
/// Bounds every test so a missing response fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn start_mock(state_dir: &Path, agent_roles: &[&str]) -> RunningMock {
    start_mock_with(state_dir, agent_roles, Duration::from_secs(300), aiod_mock::FaultConfig::default()).await
}

async fn start_mock_with(
    state_dir: &Path,
    agent_roles: &[&str],
    token_lifetime: Duration,
    faults: aiod_mock::FaultConfig,
) -> RunningMock {
    let clients = vec![
        Client {
            id: "agent".to_owned(),
            secret: AGENT_SECRET.to_owned(),
            roles: agent_roles.iter().map(|role| (*role).to_owned()).collect(),
        },
        Client { id: "admin".to_owned(), secret: ADMIN_SECRET.to_owned(), roles: vec!["create_platforms".to_owned()] },
    ];
    aiod_mock::start(MockConfig {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        state_dir: state_dir.to_path_buf(),
        clients,
        token_lifetime,
        auto_publish: false,
        // Registered here rather than over HTTP, so fault injection cannot
        // break the test's own setup.
        platforms: vec!["lab".to_owned()],
        tls_names: Vec::new(),
        faults,
    })
    .await
    .expect("mock starts")
}

fn aiod_settings(mock: &RunningMock, ca: &Path, client_id: &str, secret: &str, platform: &str) -> AiodSettings {
    AiodSettings {
        api_url: mock.base_url(),
        token_url: mock.token_url(),
        ca_cert: Some(ca.to_path_buf()),
        client_id: client_id.to_owned(),
        client_secret: SecretString::from(secret.to_owned()),
        platform: platform.to_owned(),
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy::default(),
    }
}

async fn create_platform(mock: &RunningMock, name: &str) {
    let admin = AiodClient::connect(aiod_settings(mock, &mock.ca_path, "admin", ADMIN_SECRET, name))
        .await
        .expect("admin token");
    admin.create_platform(name).await.expect("platform created");
}

/// Copies the recorded machine root and adds a machine id, as a real root has.
fn machine_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("root directory");
    common::copy_tree(&common::fixture("this-machine"), root.path());
    std::fs::write(root.path().join("etc/machine-id"), "4c4c4544004b4a108035b4c04f4e5931\n").expect("write machine id");
    root
}

async fn list_platform_assets(mock: &RunningMock, platform: &str) -> Vec<Value> {
    let http = hw_agent::aiod::tls::http_client(Some(&mock.ca_path), Duration::from_secs(10)).expect("client");
    http.get(format!("{}/platforms/{platform}/computational_assets?limit=1000", mock.base_url()))
        .send()
        .await
        .expect("list request")
        .json()
        .await
        .expect("list body")
}

#[tokio::test]
async fn register_twice_updates_one_asset() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let state = tempfile::tempdir().expect("state directory");
        let mock = start_mock(state.path(), &["platform_lab"]).await;
        create_platform(&mock, "lab").await;
        let root = machine_root();
        let cache = tempfile::tempdir().expect("cache directory");
        let collect = common::settings(root.path(), None, cache.path());
        let settings = aiod_settings(&mock, &mock.ca_path, "agent", AGENT_SECRET, "lab");

        let (first, _) = register_node(collect.clone(), settings.clone(), None).await.expect("first registration");
        let (second, report) = register_node(collect, settings.clone(), None).await.expect("second registration");

        assert!(first.created);
        assert!(!second.created);
        assert_eq!(first.identifier, second.identifier);
        assert!(first.identifier.starts_with("comp_"));
        assert_eq!(first.identifier.len(), 29);

        let assets = list_platform_assets(&mock, "lab").await;
        assert_eq!(assets.len(), 1, "exactly one asset for this machine");

        let client = AiodClient::connect(settings).await.expect("client");
        let asset = client.get(&first.identifier).await.expect("read back");
        let plain = asset["description"]["plain"].as_str().expect("description.plain");
        let stored: NodeReport = serde_json::from_str(plain).expect("description.plain is a node report");
        assert_eq!(stored, report, "the asset carries the latest report");
        assert_eq!(asset["platform"], "lab");
        assert_eq!(asset["type"], "compute node");
        assert!(asset["platform_resource_identifier"].as_str().expect("resource id").starts_with("node-"));
        assert!(asset["description"]["html"].as_str().expect("html").contains("<ul>"));
        mock.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn certificate_from_other_ca_is_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let state = tempfile::tempdir().expect("state directory");
        let other = tempfile::tempdir().expect("other state directory");
        let mock = start_mock(state.path(), &["platform_lab"]).await;
        let other_ca = aiod_mock::tls::ensure_material(other.path(), &[]).expect("other CA").ca;

        let error = AiodClient::connect(aiod_settings(&mock, &other_ca, "agent", AGENT_SECRET, "lab"))
            .await
            .expect_err("a server outside the CA file must be refused");
        let message = format!("{error:#}");
        assert!(message.contains("certificate verification failed"), "{message}");
        assert!(message.contains("--ca-cert"), "the message says how to fix it: {message}");
        mock.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// Registers the machine root as client `agent` with `agent_roles` and
/// returns the error message, creating `existing_platform` first if given.
async fn registration_error(agent_roles: &[&str], existing_platform: Option<&str>, platform: &str) -> String {
    let state = tempfile::tempdir().expect("state directory");
    let mock = start_mock(state.path(), agent_roles).await;
    if let Some(name) = existing_platform {
        create_platform(&mock, name).await;
    }
    let root = machine_root();
    let cache = tempfile::tempdir().expect("cache directory");
    let settings = aiod_settings(&mock, &mock.ca_path, "agent", AGENT_SECRET, platform);

    let error = register_node(common::settings(root.path(), None, cache.path()), settings, None)
        .await
        .expect_err("the registration must be refused");
    mock.shutdown().await;
    format!("{error:#}")
}

#[tokio::test]
async fn unregistered_platform_names_the_fix() {
    let message = tokio::time::timeout(TEST_TIMEOUT, registration_error(&["platform_ghost"], None, "ghost"))
        .await
        .expect("test timed out");
    assert!(message.contains("HTTP 412"), "{message}");
    assert!(message.contains("POST /platforms"), "{message}");
}

#[tokio::test]
async fn missing_connector_role_names_the_role() {
    let message =
        tokio::time::timeout(TEST_TIMEOUT, registration_error(&[], Some("lab"), "lab")).await.expect("test timed out");
    assert!(message.contains("HTTP 403"), "{message}");
    assert!(message.contains("platform_lab"), "{message}");
}

#[tokio::test]
async fn wrong_secret_is_refused_without_echo() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let state = tempfile::tempdir().expect("state directory");
        let mock = start_mock(state.path(), &["platform_lab"]).await;
        let wrong = "wrong-secret-d41d8c";

        let error = AiodClient::connect(aiod_settings(&mock, &mock.ca_path, "agent", wrong, "lab"))
            .await
            .expect_err("a wrong secret must be refused");
        let message = format!("{error:#} {error:?}");
        assert!(message.contains("rejected client `agent`"), "{message}");
        assert!(!message.contains(wrong), "the secret leaked into the error: {message}");
        mock.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[test]
fn demo_command_registers_this_machine() {
    let cache = tempfile::tempdir().expect("cache directory");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hw-agent"))
        .args(["demo", "--host-root"])
        .arg(common::fixture("this-machine"))
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("run hw-agent demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {stderr}");
    assert!(stdout.contains("identifier:  comp_"), "{stdout}");
    assert!(stdout.contains("updated the same asset"), "{stdout}");
}

#[test]
fn invalid_option_exits_with_usage_status() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hw-agent"))
        .args(["collect", "--host-root", "/nonexistent/root"])
        .output()
        .expect("run hw-agent collect");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--host-root /nonexistent/root is not a directory"), "{stderr}");
}

/// Runs `hw-agent register` as a user would, at trace log level, and checks
/// that the client secret appears nowhere in its output.
async fn run_register_command(
    mock: &RunningMock,
    root: &Path,
    cache: &Path,
    secret_file: &Path,
) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hw-agent"));
    command
        .args(["--log", "trace", "register", "--host-root"])
        .arg(root)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--api-url", &mock.base_url(), "--token-url", &mock.token_url(), "--client-id", "agent"])
        .arg("--ca-cert")
        .arg(&mock.ca_path)
        .arg("--client-secret-file")
        .arg(secret_file)
        .args(["--platform", "lab", "--name", "cli-test-node"]);
    command.output().await.expect("run hw-agent register")
}

#[tokio::test]
async fn register_command_keeps_secret_out_of_logs() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let state = tempfile::tempdir().expect("state directory");
        let mock = start_mock(state.path(), &["platform_lab"]).await;
        create_platform(&mock, "lab").await;
        let root = machine_root();
        let cache = tempfile::tempdir().expect("cache directory");
        let secret_file = state.path().join("client-secret");
        std::fs::write(&secret_file, format!("{AGENT_SECRET}\n")).expect("write secret file");

        let first = run_register_command(&mock, root.path(), cache.path(), &secret_file).await;
        let second = run_register_command(&mock, root.path(), cache.path(), &secret_file).await;

        for output in [&first, &second] {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "register failed: {stderr}");
            assert!(!stderr.contains(AGENT_SECRET), "the client secret leaked into the logs");
            assert!(!stderr.contains("Bearer "), "an access token leaked into the logs");
            assert!(
                !String::from_utf8_lossy(&output.stdout).contains(AGENT_SECRET),
                "the client secret leaked into stdout"
            );
        }
        let first_id = String::from_utf8_lossy(&first.stdout).trim().to_owned();
        let second_id = String::from_utf8_lossy(&second.stdout).trim().to_owned();
        assert!(first_id.starts_with("comp_"), "stdout is the identifier: {first_id}");
        assert_eq!(first_id, second_id, "the second run updates the same asset");
        assert!(String::from_utf8_lossy(&second.stderr).contains("updated computational asset"));
        mock.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// Retries that take milliseconds, so fault tests stay quick.
fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy { max_retries, base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(50) }
}

#[tokio::test]
async fn register_survives_injected_faults() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let state = tempfile::tempdir().expect("state directory");
        let faults = aiod_mock::FaultConfig {
            latency: Duration::from_millis(2),
            error_rate: 0.2,
            drop_rate: 0.2,
            seed: Some(20261204),
        };
        let mock = start_mock_with(state.path(), &["platform_lab"], Duration::from_secs(300), faults).await;
        let root = machine_root();
        let cache = tempfile::tempdir().expect("cache directory");
        let mut settings = aiod_settings(&mock, &mock.ca_path, "agent", AGENT_SECRET, "lab");
        settings.retry = fast_retries(15);

        let mut identifiers = Vec::new();
        let mut last_report = None;
        for _ in 0..4 {
            let collect = common::settings(root.path(), None, cache.path());
            let (registration, report) = register_node(collect, settings.clone(), None).await.expect("registration");
            identifiers.push(registration.identifier);
            last_report = Some(report);
        }
        identifiers.dedup();
        assert_eq!(identifiers.len(), 1, "every run registers the same asset");

        // Read back without faults getting in the way: retry until a clean
        // response arrives, which the retry policy already does.
        let assets = loop {
            let http = hw_agent::aiod::tls::http_client(Some(&mock.ca_path), Duration::from_secs(10)).expect("client");
            let response =
                http.get(format!("{}/platforms/lab/computational_assets?limit=1000", mock.base_url())).send().await;
            if let Ok(response) = response
                && response.status().is_success()
            {
                break response.json::<Vec<Value>>().await.expect("list body");
            }
        };
        assert_eq!(assets.len(), 1, "faults must not create a duplicate asset");
        let plain = assets[0]["description"]["plain"].as_str().expect("description.plain");
        let stored: NodeReport = serde_json::from_str(plain).expect("node report");
        assert_eq!(Some(stored), last_report, "the asset carries the latest report");
        mock.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn retries_stop_at_the_bound() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let state = tempfile::tempdir().expect("state directory");
        let faults = aiod_mock::FaultConfig { error_rate: 1.0, seed: Some(1), ..aiod_mock::FaultConfig::default() };
        let mock = start_mock_with(state.path(), &["platform_lab"], Duration::from_secs(300), faults).await;
        let mut settings = aiod_settings(&mock, &mock.ca_path, "agent", AGENT_SECRET, "lab");
        settings.retry = fast_retries(3);

        let error = AiodClient::connect(settings).await.expect_err("every request fails");
        let message = format!("{error:#}");
        assert!(message.contains("after 4 attempts"), "{message}");
        mock.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn expired_token_is_replaced() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let state = tempfile::tempdir().expect("state directory");
        let mock =
            start_mock_with(state.path(), &["platform_lab"], Duration::from_secs(1), aiod_mock::FaultConfig::default())
                .await;
        let settings = aiod_settings(&mock, &mock.ca_path, "agent", AGENT_SECRET, "lab");
        let client = AiodClient::connect(settings).await.expect("client");
        let body =
            serde_json::json!({"platform": "lab", "platform_resource_identifier": "node-expiry", "name": "expiry"});
        let first = client.register("node-expiry", &body).await.expect("first registration");

        // The mock's tokens live one second on its own clock, which a paused
        // tokio clock cannot advance, so this test waits for real.
        tokio::time::sleep(Duration::from_millis(1200)).await;

        let second = client.register("node-expiry", &body).await.expect("registration with a fresh token");
        assert_eq!(first.identifier, second.identifier);
        assert!(!second.created);
        mock.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[test]
fn bad_platform_or_ca_exits_64() {
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "s3cret\n").expect("write secret");
    let not_pem = tempfile::NamedTempFile::new().expect("CA file");
    std::fs::write(not_pem.path(), "this is not a certificate\n").expect("write CA file");

    let run = |platform: &str, ca: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hw-agent"))
            .args(["register", "--api-url", "https://127.0.0.1:1", "--token-url", "https://127.0.0.1:1/token"])
            .args(["--client-id", "agent", "--platform", platform, "--client-secret-file"])
            .arg(secret.path())
            .arg("--ca-cert")
            .arg(ca)
            .output()
            .expect("run hw-agent register")
    };

    let tls = tempfile::tempdir().expect("TLS directory");
    let ca = aiod_mock::tls::ensure_material(tls.path(), &[]).expect("CA").ca;
    let output = run("..", &ca);
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--platform `..` is invalid"));

    let output = run("lab", not_pem.path());
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ca-cert"));
}
