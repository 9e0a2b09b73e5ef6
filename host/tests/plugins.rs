//! Plugins as an operator and an author meet them: the example InfiniBand
//! collector and the template loaded from a plugin directory, and the
//! `hw-agent plugins` commands run as the real binary.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use hw_agent::report::model::CollectorStatus;

const IB: &str = "infiniband.hw-agent.aiod.eu";

fn hw_agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hw-agent")).args(args).output().expect("run hw-agent")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn infiniband_example_loads_from_plugin_directory() {
    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::copy(common::test_component("infiniband"), plugins.path().join("infiniband.wasm")).expect("install plugin");
    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("intel-xeon-2s-nvidia"), Some(plugins.path()), cache.path());

    let report = common::collect_once(&settings);
    let outcome = report.collectors.iter().find(|outcome| outcome.name == "infiniband").expect("infiniband ran");
    assert_eq!(outcome.status, CollectorStatus::Ok, "{:?}", outcome.error);
    assert!(outcome.source.ends_with("infiniband.wasm"));
    let attribute = |name: &str| report.attributes.get(&format!("{IB}/{name}")).map(String::as_str);
    assert_eq!(attribute("device_count"), Some("2"));
    assert_eq!(attribute("mlx5_0.port1.state"), Some("4: ACTIVE"));
    assert_eq!(attribute("mlx5_0.port1.rate"), Some("100 Gb/sec (4X EDR)"));
    assert_eq!(attribute("mlx5_0.pci_address"), Some("0000:98:00.0"));
    assert_eq!(attribute("mlx5_0.node_guid"), None, "GUIDs identify hardware and are left out by default");
    for name in ["cpu", "gpu", "system"] {
        let built_in = report.collectors.iter().find(|outcome| outcome.name == name).expect("built-in ran");
        assert_eq!(built_in.status, CollectorStatus::Ok, "{name}");
    }
}

#[test]
fn infiniband_example_without_rdma_is_an_error_entry() {
    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::copy(common::test_component("infiniband"), plugins.path().join("infiniband.wasm")).expect("install plugin");
    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("amd-epyc-instinct"), Some(plugins.path()), cache.path());

    let report = common::collect_once(&settings);
    let outcome = report.collectors.iter().find(|outcome| outcome.name == "infiniband").expect("infiniband ran");
    assert_eq!(outcome.status, CollectorStatus::Error);
    assert!(outcome.error.as_deref().unwrap_or_default().contains("/sys/class/infiniband"), "{:?}", outcome.error);
    assert!(report.cpu.is_some());
}

#[test]
fn template_reads_only_its_grant() {
    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::copy(common::test_component("template"), plugins.path().join("template.wasm")).expect("install plugin");
    let cache = tempfile::tempdir().expect("cache directory");
    let root = common::fixture("intel-xeon-2s-nvidia");
    let settings = common::settings(&root, Some(plugins.path()), cache.path());

    let report = common::collect_once(&settings);
    let release = fs::read_to_string(root.join("proc/sys/kernel/osrelease")).expect("fixture osrelease");
    assert_eq!(report.attributes.get("example.com/kernel-release").map(String::as_str), Some(release.trim()));
}

#[test]
fn inspect_prints_world_and_capabilities() {
    let component = common::test_component("infiniband");
    let output = hw_agent(&["plugins", "inspect", path_arg(&component)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let sha256 = hw_agent::runtime::sha256_hex(&fs::read(&component).expect("read component"));
    assert!(text.contains(&format!("sha256:        {sha256}")), "{text}");
    assert!(text.contains("world:         aiod:hw-agent/collector@0.2.0"), "{text}");
    assert!(text.contains("requests:      read /sys"), "{text}");
    assert!(text.contains("policy:        granted by the built-in policy; reads /sys"), "{text}");
}

#[test]
fn inspect_names_both_versions_of_an_old_build() {
    let dir = tempfile::tempdir().expect("directory");
    let bytes = fs::read(common::test_component("template")).expect("read component");
    let old = common::with_wit_version(&bytes, "0.2.0", "0.1.0");
    let file = dir.path().join("old.wasm");
    fs::write(&file, old).expect("write old build");

    let output = hw_agent(&["plugins", "inspect", path_arg(&file)]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains("wit version:   0.1.0 (this agent implements 0.2.0)"), "{text}");
    assert!(text.contains("aiod:hw-agent@0.1.0"), "{text}");
    assert!(text.contains("aiod:hw-agent@0.2.0"), "{text}");
}

#[test]
fn test_command_prints_records_as_json() {
    let component = common::test_component("infiniband");
    let root = common::fixture("intel-xeon-2s-nvidia");
    let output = hw_agent(&["plugins", "test", path_arg(&component), "--host-root", path_arg(&root), "--no-cache"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let document: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON output");
    assert_eq!(document["status"], "ok");
    assert_eq!(document["name"], "infiniband");
    assert_eq!(document["records"]["attributes"][format!("{IB}/device_count")], "2");
    assert!(document["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0));
}

#[test]
fn test_command_fails_for_a_trapping_collector() {
    let root = tempfile::tempdir().expect("root");
    fs::create_dir_all(root.path().join("sys")).expect("create sys");
    fs::write(root.path().join("sys/hw-agent-fault-mode"), "unreachable").expect("write mode");
    let component = common::test_component("fault");
    let output =
        hw_agent(&["plugins", "test", path_arg(&component), "--host-root", path_arg(root.path()), "--no-cache"]);
    assert_eq!(output.status.code(), Some(1));
    let document: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON output");
    assert_eq!(document["status"], "error");
    assert!(document["error"].as_str().is_some_and(|error| error.contains("unreachable")), "{document}");
    assert!(document["records"].is_null());
    assert!(stderr(&output).contains("collector `fault` error"), "{}", stderr(&output));
}

#[test]
fn test_command_reports_a_denial() {
    let dir = tempfile::tempdir().expect("directory");
    let policy = dir.path().join("policy.toml");
    fs::write(&policy, "[defaults]\nrequire_sha256 = true\n").expect("write policy");
    let component = common::test_component("template");
    let root = common::fixture("this-machine");
    let output = hw_agent(&[
        "plugins",
        "test",
        path_arg(&component),
        "--host-root",
        path_arg(&root),
        "--policy",
        path_arg(&policy),
        "--no-cache",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let document: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON output");
    assert_eq!(document["status"], "denied");
    let error = document["error"].as_str().unwrap_or_default();
    assert!(error.contains("requires a SHA-256 pin"), "{document}");
    assert!(error.contains(document["sha256"].as_str().unwrap_or("?")), "the message names the digest to pin");
    assert!(document["load_ms"].is_null(), "an unpinned build is rejected before it is compiled");
}

#[test]
fn list_shows_every_decision() {
    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::copy(common::test_component("template"), plugins.path().join("template.wasm")).expect("install template");
    fs::write(plugins.path().join("broken.wasm"), b"\0asm garbage").expect("write broken plugin");
    let output = hw_agent(&["plugins", "list", "--plugin-dir", path_arg(plugins.path()), "--no-cache"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("policy: the built-in policy"), "{text}");
    assert!(text.contains("cpu 0.1.0 (built-in)"), "{text}");
    assert!(text.contains("status:       ready: reads /proc/sys/kernel/osrelease"), "{text}");
    assert!(text.contains("status:       failed: failed to load"), "{text}");
}

#[test]
fn printed_policy_is_a_valid_policy_file() {
    let output = hw_agent(&["plugins", "policy"]);
    assert!(output.status.success());
    let dir = tempfile::tempdir().expect("directory");
    let policy = dir.path().join("policy.toml");
    fs::write(&policy, stdout(&output)).expect("write policy");
    let listed = hw_agent(&["plugins", "list", "--policy", path_arg(&policy), "--no-cache"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains(&format!("policy: {}", policy.display())));
}

#[test]
fn invalid_policy_exits_with_usage_status() {
    let dir = tempfile::tempdir().expect("directory");
    let policy = dir.path().join("policy.toml");
    for (text, expected) in [
        ("[defaults]\ndeadline_ms = 1\n", "[defaults] deadline_ms = 1 is out of range; use 10 to 600000"),
        ("[defaults]\nread = [\"/var\"]\n", "/var/run/secrets"),
        ("[collectors.x]\nsha256 = \"abc\"\n", "[collectors.x] sha256"),
        ("[defaults]\nmemory = 1\n", "unknown key `memory` in [defaults]"),
    ] {
        fs::write(&policy, text).expect("write policy");
        let output = hw_agent(&["collect", "--policy", path_arg(&policy), "--no-cache"]);
        assert_eq!(output.status.code(), Some(64), "{text}");
        assert!(stderr(&output).contains(expected), "{text}: {}", stderr(&output));
    }
}

#[test]
fn plugin_named_nodes_is_rejected() {
    // The same-length rewrite makes the fault collector's `info` report the
    // name `nodes`, as a hostile plugin could to get that collector's limits.
    let bytes = fs::read(common::test_component("fault")).expect("read component");
    let renamed = common::replace_all(&bytes, b"fault", b"nodes");
    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::write(plugins.path().join("impostor.wasm"), renamed).expect("install plugin");
    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("this-machine"), Some(plugins.path()), cache.path());

    let report = common::collect_once(&settings);
    let outcome = report.collectors.iter().find(|outcome| outcome.name == "nodes").expect("impostor reported");
    assert_eq!(outcome.status, CollectorStatus::Denied);
    assert!(outcome.error.as_deref().unwrap_or_default().contains("reserved"), "{:?}", outcome.error);
    assert!(report.cpu.is_some());
}

#[test]
fn odd_plugin_entries_are_reported() {
    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::create_dir(plugins.path().join("directory.wasm")).expect("create directory");
    std::os::unix::fs::symlink("missing.wasm", plugins.path().join("dangling.wasm")).expect("symlink");
    fs::write(plugins.path().join("text.WASM"), "not a component").expect("write text");
    let made = Command::new("mkfifo").arg(plugins.path().join("fifo.wasm")).status().expect("run mkfifo");
    assert!(made.success());

    let output = hw_agent(&["plugins", "list", "--plugin-dir", path_arg(plugins.path()), "--no-cache"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.matches("not a regular file").count(), 2, "directory and FIFO: {text}");
    assert!(text.contains("failed to read the plugin"), "dangling link: {text}");
    assert!(text.contains("is not WebAssembly"), "text file: {text}");
}

#[test]
fn policy_that_is_not_a_file_fails_fast() {
    let dir = tempfile::tempdir().expect("directory");
    let fifo = dir.path().join("policy.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success());
    let output = hw_agent(&["collect", "--policy", path_arg(&fifo), "--no-cache"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("is not a regular file"), "{}", stderr(&output));

    let secret = dir.path().join("secret");
    fs::write(&secret, "client-secret-abc123\n").expect("write secret");
    let output = hw_agent(&["collect", "--policy", path_arg(&secret), "--no-cache"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(!stderr(&output).contains("abc123"), "a file mistaken for the policy is not quoted: {}", stderr(&output));
}
