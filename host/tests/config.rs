//! Configuration as the real binary takes it: every invalid value exits
//! with status 64 and a message that names it, its source and what is
//! allowed, before a port is bound or a collector loaded.

use std::path::Path;
use std::process::{Command, Output};

const EXIT_CONFIG: i32 = 64;

/// Runs `hw-agent` with a clean environment for its own variables.
fn hw_agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hw-agent"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("HW_AGENT_") || name.starts_with("AIOD_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("hw-agent runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes a kubeconfig whose API server these runs never contact.
fn kubeconfig(dir: &Path) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:9\n\
         users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
         current-context: c\n",
    )
    .expect("kubeconfig written");
    path.to_string_lossy().into_owned()
}

fn run_args<'a>(kubeconfig: &'a str, cache: &'a str) -> Vec<&'a str> {
    vec!["run", "--kubeconfig", kubeconfig, "--cache-dir", cache, "--host-root", "/"]
}

#[test]
fn invalid_file_value_names_the_file_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "node_name = \"gpu-001\"\ninterval = \"5 minutes\"\nlisten = \"127.0.0.1:0\"\n")
        .expect("config written");
    let (kubeconfig, cache) = (kubeconfig(dir.path()), dir.path().join("cache"));
    let mut args = run_args(&kubeconfig, cache.to_str().expect("utf-8"));
    let config = config.to_string_lossy().into_owned();
    args.extend(["--config", &config]);
    let output = hw_agent(&args, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{message}");
    assert!(message.contains("--interval `5 minutes` is not a duration; write it like `90s`"), "{message}");
    assert!(message.contains(&format!("(--interval was set by `interval` in {config})")), "{message}");
    assert!(!cache.exists(), "no collector was compiled before the error");
}

#[test]
fn invalid_environment_value_names_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (kubeconfig, cache) = (kubeconfig(dir.path()), dir.path().join("cache"));
    let args = run_args(&kubeconfig, cache.to_str().expect("utf-8"));
    let output =
        hw_agent(&args, &[("NODE_NAME", "gpu-001"), ("HW_AGENT_LEASE_DURATION", "2h"), ("HW_AGENT_LISTEN", "off")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{message}");
    assert!(message.contains("--lease-duration 2h is out of range; use 1s to 1h"), "{message}");
    assert!(message.contains("(--lease-duration was set by HW_AGENT_LEASE_DURATION)"), "{message}");
}

#[test]
fn busy_listen_port_fails_before_loading() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = busy.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let (kubeconfig, cache) = (kubeconfig(dir.path()), dir.path().join("cache"));
    let mut args = run_args(&kubeconfig, cache.to_str().expect("utf-8"));
    args.extend(["--node-name", "gpu-001", "--listen", &address]);
    let output = hw_agent(&args, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{message}");
    assert!(message.contains(&format!("--listen {address} cannot be bound")), "{message}");
    assert!(!cache.exists(), "no collector was compiled before the error");
}

#[test]
fn unknown_file_key_and_bad_enumeration_exit_64() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (text, expected) in [
        ("intervall = \"5m\"\n", "unknown key `intervall`"),
        ("log_format = \"xml\"\n", "[possible values: human, json]"),
        ("no_cache = 1\n", "`no_cache` = 1 is not allowed; use true or false"),
    ] {
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("config written");
        let output = hw_agent(&["collect", "--config", &config.to_string_lossy()], &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{text}: {message}");
        assert!(message.contains(expected), "{text}: {message}");
        assert!(output.stdout.is_empty(), "{text}: nothing was collected");
    }
}

#[test]
fn invalid_log_filter_exits_64() {
    let output = hw_agent(&["collect", "--log", "hw_agent=loud"], &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{message}");
    assert!(message.contains("invalid log filter `hw_agent=loud`"), "{message}");
}

#[test]
fn config_file_sets_collect_options() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/roots/intel-xeon-2s-nvidia");
    std::fs::write(
        &config,
        format!("host_root = {:?}\ncache_dir = {:?}\n", root.display().to_string(), dir.path().join("cache")),
    )
    .expect("config written");
    let output = hw_agent(&["collect", "--config", &config.to_string_lossy(), "--format", "json"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["cpu"]["sockets"], 2, "the file's host_root was inspected");
    assert!(dir.path().join("cache").is_dir(), "the file's cache_dir was used");
}

#[test]
fn broken_kubeconfig_error_hides_its_contents() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: eyJSECRETTOKEN: x: y\n",
    )
    .expect("kubeconfig written");
    let cache = dir.path().join("cache");
    let output = hw_agent(
        &["run", "--kubeconfig", &kubeconfig.to_string_lossy(), "--cache-dir", &cache.to_string_lossy()],
        &[("NODE_NAME", "gpu-001"), ("HW_AGENT_LISTEN", "off")],
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{message}");
    assert!(!message.contains("SECRETTOKEN"), "the token reached the error: {message}");
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
}

#[test]
fn invalid_environment_value_names_variable_not_flag() {
    let output = hw_agent(&["collect"], &[("HW_AGENT_DEADLINE_MS", "abc")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{message}");
    assert!(message.starts_with("error: HW_AGENT_DEADLINE_MS: invalid value 'abc'"), "{message}");
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
}

#[test]
fn help_works_with_broken_config_file() {
    let output = hw_agent(&["--help"], &[("HW_AGENT_CONFIG", "/nonexistent/config.toml")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage"));
}

#[test]
fn secret_file_must_be_regular() {
    let output = hw_agent(
        &["register", "--api-url", "https://127.0.0.1:9", "--token-url", "https://127.0.0.1:9/token"],
        &[("AIOD_CLIENT_ID", "agent"), ("AIOD_PLATFORM", "lab"), ("AIOD_CLIENT_SECRET_FILE", "/dev/zero")],
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{message}");
    assert!(message.contains("--client-secret-file /dev/zero is not a regular file"), "{message}");
    let output = hw_agent(&["collect", "--config", "/dev/zero"], &[]);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{}", stderr(&output));
}

#[test]
fn policy_denying_node_list_fails_before_loading() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[collectors.nodes]\nnode_list = false\n").expect("policy written");
    let (kubeconfig, cache) = (kubeconfig(dir.path()), dir.path().join("cache"));
    let mut args = run_args(&kubeconfig, cache.to_str().expect("utf-8"));
    let policy = policy.to_string_lossy().into_owned();
    args.extend(["--node-name", "gpu-001", "--listen", "off", "--policy", &policy]);
    let output = hw_agent(&args, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{message}");
    assert!(message.contains("denies the built-in `nodes` collector the node list"), "{message}");
    assert!(!cache.exists(), "no collector was compiled before the error");
}
