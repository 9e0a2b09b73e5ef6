//! The sandbox as a security boundary: every misbehaviour of the fault
//! collector becomes one typed outcome in the report, nothing it was not
//! granted reaches it, and every other collector's facts are still there.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use hw_agent::collection::{CollectSettings, Collection};
use hw_agent::policy::Policy;
use hw_agent::report::model::{CollectorOutcome, CollectorStatus, NodeReport};

/// Limits of the fault collector in these tests, tighter than the defaults
/// so that each fault is hit quickly. The built-in collectors keep the
/// defaults.
const FAULT_POLICY: &str = "
[collectors.fault]
memory_mib = 16
deadline_ms = 300
timeout_ms = 2000
";

/// A copy of the recorded machine root with the fault mode and the bait the
/// fault collector tries to reach.
struct FaultRoot {
    root: tempfile::TempDir,
    plugins: tempfile::TempDir,
    cache: tempfile::TempDir,
    policy: tempfile::TempDir,
}

impl FaultRoot {
    fn new(mode: &str) -> Self {
        let root = tempfile::tempdir().expect("root directory");
        let base = root.path();
        common::copy_tree(&common::fixture("this-machine"), base);
        fs::write(base.join("sys/hw-agent-fault-mode"), mode).expect("write fault mode");

        // Stand-ins for the agent's own /proc entries, which hold its
        // secrets on a live root.
        for entry in ["proc/self", "proc/1"] {
            fs::create_dir_all(base.join(entry)).expect("create process directory");
            fs::write(base.join(entry).join("environ"), "AIOD_CLIENT_SECRET=leak").expect("write environ");
            fs::write(base.join(entry).join("mem"), "leak").expect("write mem");
        }
        // Secrets in the host root: none is granted, so none may be read.
        for secret in [
            "var/run/secrets/kubernetes.io/serviceaccount/token",
            "run/secrets/kubernetes.io/serviceaccount/token",
            "var/lib/kubelet/pods/0000/volumes/token",
            "etc/kubernetes/admin.conf",
            "secret.txt",
        ] {
            let path = base.join(secret);
            fs::create_dir_all(path.parent().expect("parent")).expect("create secret directory");
            fs::write(&path, "leak").expect("write secret");
        }
        // Symlinks inside the granted /sys that point out of it.
        let sys = base.join("sys");
        std::os::unix::fs::symlink("../secret.txt", sys.join("hw-agent-escape-relative")).expect("symlink");
        std::os::unix::fs::symlink("/secret.txt", sys.join("hw-agent-escape-absolute")).expect("symlink");
        std::os::unix::fs::symlink("../..", sys.join("hw-agent-escape-dir")).expect("symlink");
        std::os::unix::fs::symlink("hw-agent-fault-mode", sys.join("hw-agent-inside")).expect("symlink");

        let plugins = tempfile::tempdir().expect("plugin directory");
        fs::copy(common::test_component("fault"), plugins.path().join("fault.wasm")).expect("install fault collector");
        let policy = tempfile::tempdir().expect("policy directory");
        fs::write(policy.path().join("policy.toml"), FAULT_POLICY).expect("write policy");
        Self { root, plugins, cache: tempfile::tempdir().expect("cache directory"), policy }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn policy_path(&self) -> PathBuf {
        self.policy.path().join("policy.toml")
    }

    fn write_policy(&self, text: &str) {
        fs::write(self.policy_path(), text).expect("write policy");
    }

    fn settings(&self) -> CollectSettings {
        let mut settings = common::settings(self.path(), Some(self.plugins.path()), self.cache.path());
        settings.policy = Policy::load(&self.policy_path()).expect("valid policy");
        settings
    }

    fn collect(&self) -> NodeReport {
        common::collect_once(&self.settings())
    }
}

fn collect_with_fault(mode: &str) -> NodeReport {
    FaultRoot::new(mode).collect()
}

fn outcome<'a>(report: &'a NodeReport, name: &str) -> &'a CollectorOutcome {
    report.collectors.iter().find(|outcome| outcome.name == name).unwrap_or_else(|| panic!("no outcome for {name}"))
}

fn error_of(report: &NodeReport, name: &str) -> String {
    outcome(report, name).error.clone().unwrap_or_default()
}

fn attribute<'a>(report: &'a NodeReport, name: &str) -> &'a str {
    let key = format!("test.hw-agent/{name}");
    report.attributes.get(&key).map(String::as_str).unwrap_or_else(|| panic!("attribute {key} missing"))
}

fn assert_built_ins_kept(report: &NodeReport) {
    for name in ["cpu", "gpu", "system"] {
        assert_eq!(outcome(report, name).status, CollectorStatus::Ok, "{name} was affected");
    }
    assert!(report.cpu.is_some());
    assert!(report.memory.is_some());
    assert!(report.accelerators.is_some());
}

/// Asserts that no attribute of the fault collector carries leaked content.
fn assert_nothing_leaked(report: &NodeReport) {
    for (key, value) in &report.attributes {
        assert!(!value.starts_with("leaked"), "{key} = {value}");
        assert!(!value.contains("AIOD_CLIENT_SECRET"), "{key} = {value}");
    }
}

#[test]
fn fault_ok_mode_adds_attribute() {
    let report = collect_with_fault("ok");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    assert_eq!(attribute(&report, "fault-mode"), "ok");
    assert_built_ins_kept(&report);
}

#[test]
fn panicking_collector_is_an_error() {
    let report = collect_with_fault("panic");
    assert_eq!(outcome(&report, "fault").limit, None, "a trap is not a limit hit");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Error);
    let error = error_of(&report, "fault");
    assert!(error.contains("fault collector asked to panic"), "panic message missing: {error}");
    assert_built_ins_kept(&report);
}

#[test]
fn unreachable_trap_is_an_error() {
    let report = collect_with_fault("unreachable");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Error);
    assert!(error_of(&report, "fault").contains("unreachable"), "{}", error_of(&report, "fault"));
    assert_built_ins_kept(&report);
}

#[test]
fn spinning_collector_times_out() {
    let report = collect_with_fault("spin");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Timeout);
    assert_eq!(outcome(&report, "fault").limit.as_deref(), Some("deadline"));
    assert!(error_of(&report, "fault").contains("run-time deadline of 300 ms"), "{}", error_of(&report, "fault"));
    assert_built_ins_kept(&report);
}

#[test]
fn memory_bomb_exceeds_limit() {
    let report = collect_with_fault("memory");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::LimitExceeded);
    assert_eq!(outcome(&report, "fault").limit.as_deref(), Some("memory"));
    let error = error_of(&report, "fault");
    assert!(error.contains("memory limit exceeded"), "{error}");
    assert!(error.contains(&(16u64 << 20).to_string()), "the per-plugin limit applies: {error}");
    assert_built_ins_kept(&report);
}

#[test]
fn deep_recursion_exceeds_stack_limit() {
    let report = collect_with_fault("recursion");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::LimitExceeded);
    assert_eq!(outcome(&report, "fault").limit.as_deref(), Some("stack"));
    assert!(error_of(&report, "fault").contains("stack limit exceeded"), "{}", error_of(&report, "fault"));
    assert_built_ins_kept(&report);
}

#[test]
fn oversized_output_is_rejected() {
    let report = collect_with_fault("output");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::LimitExceeded);
    assert_eq!(outcome(&report, "fault").limit.as_deref(), Some("output"));
    assert!(error_of(&report, "fault").contains("output limit exceeded"), "{}", error_of(&report, "fault"));
    assert!(!report.attributes.keys().any(|key| key.starts_with("test.hw-agent/")), "nothing of it is kept");
    assert_built_ins_kept(&report);
}

#[test]
fn too_many_records_are_rejected() {
    let report = collect_with_fault("records");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::LimitExceeded);
    assert_eq!(outcome(&report, "fault").limit.as_deref(), Some("records"));
    let error = error_of(&report, "fault");
    assert!(error.contains("records limit exceeded: requested 100000, limit 65536"), "{error}");
    assert_built_ins_kept(&report);
}

#[test]
fn dotdot_paths_stay_inside() {
    let report = collect_with_fault("dotdot");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    let tried: Vec<(&String, &String)> =
        report.attributes.iter().filter(|(key, _)| key.starts_with("test.hw-agent/dotdot-")).collect();
    assert!(tried.len() >= 5, "every escape was tried: {tried:?}");
    for (key, value) in tried {
        assert_eq!(value, "denied", "{key}");
    }
    assert_built_ins_kept(&report);
}

#[test]
fn symlinks_cannot_leave_the_grant() {
    let report = collect_with_fault("symlink");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    for link in ["symlink-relative", "symlink-absolute", "symlink-dir"] {
        assert_eq!(attribute(&report, link), "denied", "{link}");
    }
    assert_eq!(attribute(&report, "symlink-inside"), "readable:symlink", "a link inside the grant still works");
    assert_nothing_leaked(&report);
    assert_built_ins_kept(&report);
}

#[test]
fn service_account_token_is_unreachable() {
    let report = collect_with_fault("sa-token");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    let tried: Vec<(&String, &String)> =
        report.attributes.iter().filter(|(key, _)| key.starts_with("test.hw-agent/sa-token-")).collect();
    assert_eq!(tried.len(), 4, "{tried:?}");
    for (key, value) in tried {
        assert_eq!(value, "denied", "{key}");
    }
    assert_built_ins_kept(&report);
}

#[test]
fn agent_proc_entries_stay_hidden() {
    let report = collect_with_fault("proc-self");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    for name in ["proc-self-environ", "proc-self-mem", "proc-1-environ"] {
        assert_eq!(attribute(&report, name), "denied", "{name}");
    }
    assert_built_ins_kept(&report);
}

#[test]
fn environment_is_empty() {
    // The test process has PATH, HOME and cargo's variables; none may pass.
    assert!(std::env::var_os("PATH").is_some());
    let report = collect_with_fault("env");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    assert_eq!(attribute(&report, "env-count"), "0");
    assert_eq!(attribute(&report, "env-path"), "absent");
    assert_built_ins_kept(&report);
}

#[test]
fn sockets_are_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let fault = FaultRoot::new("sockets");
    let target = listener.local_addr().expect("address").to_string();
    fs::write(fault.path().join("sys/hw-agent-fault-target"), &target).expect("write target");

    let report = fault.collect();
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    for name in ["socket-tcp", "socket-udp", "socket-dns"] {
        assert!(attribute(&report, name).starts_with("denied"), "{name} = {}", attribute(&report, name));
    }
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(error) if error.kind() == std::io::ErrorKind::WouldBlock),
        "the collector reached the listener: {accepted:?}"
    );
    assert_built_ins_kept(&report);
}

#[test]
fn thousands_of_files_hit_handle_limit() {
    let report = collect_with_fault("files");
    let fault = outcome(&report, "fault");
    assert_eq!(fault.status, CollectorStatus::LimitExceeded, "{:?}", fault.error);
    assert_eq!(fault.limit.as_deref(), Some("handles"));
    assert!(error_of(&report, "fault").contains("handles limit exceeded"), "{}", error_of(&report, "fault"));
    assert_built_ins_kept(&report);
}

#[test]
fn blocked_host_call_times_out() {
    let fault = FaultRoot::new("block");
    let fifo = fault.path().join("sys/hw-agent-fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");

    let runtime = common::tokio_runtime();
    let settings = fault.settings();
    let report =
        runtime.block_on(async { Collection::load(&settings).await.expect("collectors load").collect().await });

    // Open the write end so the host thread stuck in the guest's open(2)
    // returns and the tokio runtime can shut down. O_NONBLOCK (0o4000 on
    // Linux) makes this fail at once, instead of hanging, if no reader is
    // waiting.
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = fs::OpenOptions::new().write(true).custom_flags(0o4000).open(&fifo);
    }
    drop(runtime);

    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Timeout);
    assert_eq!(outcome(&report, "fault").limit.as_deref(), Some("timeout"));
    assert!(error_of(&report, "fault").contains("wall-clock timeout of 2000 ms"), "{}", error_of(&report, "fault"));
    assert_built_ins_kept(&report);
}

#[test]
fn log_flood_is_capped() {
    let report = collect_with_fault("logs");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    assert_eq!(attribute(&report, "logs"), "sent");
    assert_built_ins_kept(&report);
}

#[test]
fn collector_error_is_reported() {
    let report = collect_with_fault("error");
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Error);
    assert!(error_of(&report, "fault").contains("fault collector asked to fail"), "{}", error_of(&report, "fault"));
    assert_built_ins_kept(&report);
}

#[test]
fn trapped_instance_is_not_reused() {
    let fault = FaultRoot::new("panic");
    let runtime = common::tokio_runtime();
    let settings = fault.settings();
    runtime.block_on(async {
        let collection = Collection::load(&settings).await.expect("collectors load");
        let first = collection.collect().await;
        assert_eq!(outcome(&first, "fault").status, CollectorStatus::Error);
        fs::write(fault.path().join("sys/hw-agent-fault-mode"), "ok").expect("write fault mode");
        let second = collection.collect().await;
        assert_eq!(outcome(&second, "fault").status, CollectorStatus::Ok, "{:?}", outcome(&second, "fault").error);
    });
}

#[test]
fn ungranted_capability_is_denied() {
    let fault = FaultRoot::new("ok");
    // /sys is granted to the built-ins by name, not to every collector.
    fault.write_policy(
        "[defaults]\nread = [\"/proc\", \"/etc/os-release\"]\n\
         [collectors.cpu]\nread = [\"/sys\"]\n[collectors.gpu]\nread = [\"/sys\"]\n[collectors.system]\nread = [\"/sys\"]\n",
    );
    let report = fault.collect();
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Denied);
    let error = error_of(&report, "fault");
    assert!(error.contains("/sys"), "{error}");
    assert!(error.contains("[collectors.fault]"), "{error}");
    assert!(!report.attributes.contains_key("test.hw-agent/fault-mode"), "a denied collector does not run");
    assert_built_ins_kept(&report);
}

#[test]
fn sha256_pin_decides() {
    let fault = FaultRoot::new("ok");
    let sha256 = hw_agent::runtime::sha256_hex(&fs::read(common::test_component("fault")).expect("read component"));

    fault.write_policy(&format!("{FAULT_POLICY}sha256 = \"{}\"\n", "0".repeat(64)));
    let report = fault.collect();
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Denied);
    assert!(error_of(&report, "fault").contains(&sha256), "the message names the actual digest");
    assert_built_ins_kept(&report);

    fault.write_policy(&format!("{FAULT_POLICY}sha256 = \"{sha256}\"\n"));
    let report = fault.collect();
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Ok);
    assert_eq!(outcome(&report, "fault").sha256.as_deref(), Some(sha256.as_str()), "the report names the build");
    assert_eq!(outcome(&report, "cpu").sha256, None, "built-ins are identified by the agent version");

    fault.write_policy("[defaults]\nrequire_sha256 = true\n");
    let report = fault.collect();
    assert_eq!(outcome(&report, "fault").status, CollectorStatus::Denied);
    assert!(error_of(&report, "fault").contains("requires a SHA-256 pin"), "{}", error_of(&report, "fault"));
    assert_built_ins_kept(&report);
}

#[test]
fn incompatible_wit_version_is_rejected() {
    let fault = FaultRoot::new("ok");
    let bytes = fs::read(common::test_component("fault")).expect("read component");
    let old = common::with_wit_version(&bytes, hw_agent::runtime::WIT_VERSION, "0.1.0");
    assert_ne!(old, bytes, "the component imports versioned aiod:hw-agent interfaces");
    fs::write(fault.plugins.path().join("fault.wasm"), old).expect("install old build");

    let report = fault.collect();
    let entry = outcome(&report, "fault");
    assert_eq!(entry.status, CollectorStatus::Error);
    let error = error_of(&report, "fault");
    assert!(error.contains("aiod:hw-agent@0.1.0"), "{error}");
    assert!(error.contains("aiod:hw-agent@0.2.0"), "{error}");
    assert_built_ins_kept(&report);
}

#[test]
fn plugin_directory_changes_apply_without_restart() {
    let fault = FaultRoot::new("ok");
    let plugin = fault.plugins.path().join("extra.wasm");
    fs::remove_file(fault.plugins.path().join("fault.wasm")).expect("start without plugins");
    let runtime = common::tokio_runtime();
    let settings = fault.settings();
    runtime.block_on(async {
        let collection = Collection::load(&settings).await.expect("collectors load");
        let names = |report: &NodeReport| -> Vec<String> {
            report.collectors.iter().map(|outcome| outcome.name.clone()).collect()
        };
        let before = collection.collect().await;
        assert_eq!(names(&before), ["cpu", "gpu", "system"]);

        fs::copy(common::test_component("fault"), &plugin).expect("add plugin");
        let added = collection.collect().await;
        assert_eq!(outcome(&added, "fault").status, CollectorStatus::Ok);

        fs::copy(common::test_component("template"), &plugin).expect("replace plugin");
        let replaced = collection.collect().await;
        assert!(replaced.collectors.iter().all(|outcome| outcome.name != "fault"), "{:?}", names(&replaced));
        assert_eq!(outcome(&replaced, "template").status, CollectorStatus::Ok);

        fs::remove_file(&plugin).expect("remove plugin");
        let removed = collection.collect().await;
        assert_eq!(names(&removed), ["cpu", "gpu", "system"]);
    });
}

#[test]
fn invalid_plugin_file_is_reported() {
    let plugins = tempfile::tempdir().expect("plugin directory");
    fs::write(plugins.path().join("broken.wasm"), b"not a component").expect("write broken plugin");
    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("this-machine"), Some(plugins.path()), cache.path());

    let report = common::collect_once(&settings);
    let broken = outcome(&report, "broken");
    assert_eq!(broken.status, CollectorStatus::Error);
    assert!(broken.error.as_deref().unwrap_or_default().contains("failed to load"), "{:?}", broken.error);
    assert!(broken.source.ends_with("broken.wasm"));
    assert_built_ins_kept(&report);
}

fn load(settings: &CollectSettings) -> Vec<hw_agent::runtime::CacheUse> {
    common::tokio_runtime().block_on(async {
        let collection = Collection::load(settings).await.expect("collectors load");
        collection
            .slots()
            .await
            .iter()
            .filter_map(|slot| match slot {
                hw_agent::collection::Slot::Ready { collector, .. } => Some(collector.cache),
                _ => None,
            })
            .collect()
    })
}

#[test]
fn compiled_components_are_cached() {
    use hw_agent::runtime::CacheUse;

    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("this-machine"), None, cache.path());

    let cold = load(&settings);
    assert_eq!(cold, [CacheUse::Miss; 3]);
    let entries = fs::read_dir(cache.path()).expect("cache directory").count();
    assert_eq!(entries, 3, "one compiled artifact per built-in collector");

    let warm = load(&settings);
    assert_eq!(warm, [CacheUse::Hit; 3]);
}

#[test]
fn corrupt_cache_entry_is_recompiled() {
    use hw_agent::runtime::CacheUse;

    let cache = tempfile::tempdir().expect("cache directory");
    let settings = common::settings(&common::fixture("this-machine"), None, cache.path());
    load(&settings);
    for entry in fs::read_dir(cache.path()).expect("cache directory") {
        fs::write(entry.expect("cache entry").path(), b"garbage").expect("corrupt entry");
    }

    assert_eq!(load(&settings), [CacheUse::Miss; 3]);
    let report = common::collect_once(&settings);
    assert_built_ins_kept(&report);
    assert!(Path::new(cache.path()).read_dir().expect("cache directory").count() >= 3);
}

#[test]
fn shared_cache_directory_is_not_used() {
    use hw_agent::runtime::CacheUse;
    use std::os::unix::fs::PermissionsExt as _;

    let cache = tempfile::tempdir().expect("cache directory");
    fs::set_permissions(cache.path(), fs::Permissions::from_mode(0o777)).expect("make the cache world-writable");
    let settings = common::settings(&common::fixture("this-machine"), None, cache.path());

    assert_eq!(load(&settings), [CacheUse::Disabled; 3]);
    assert_eq!(fs::read_dir(cache.path()).expect("cache directory").count(), 0, "nothing is written there");
}

#[test]
fn on_demand_allocator_collects_the_same() {
    let cache = tempfile::tempdir().expect("cache directory");
    let mut settings = common::settings(&common::fixture("intel-xeon-2s-nvidia"), None, cache.path());
    let pooled = common::collect_once(&settings);
    settings.pooling = false;
    let on_demand = common::collect_once(&settings);
    assert_built_ins_kept(&pooled);
    assert_built_ins_kept(&on_demand);
    assert_eq!(pooled.cpu, on_demand.cpu);
    assert_eq!(pooled.accelerators, on_demand.accelerators);
}

#[test]
fn denied_impostor_keeps_built_in() {
    let fault = FaultRoot::new("ok");
    let (_, cpu) = hw_agent::runtime::BUILT_IN.iter().find(|(name, _)| *name == "cpu").expect("built-in cpu");
    fs::write(fault.plugins.path().join("cpu.wasm"), cpu).expect("install a plugin named cpu");
    fault.write_policy(&format!("[collectors.cpu]\nsha256 = \"{}\"\n", "0".repeat(64)));

    let report = fault.collect();
    let entries: Vec<&CollectorOutcome> = report.collectors.iter().filter(|outcome| outcome.name == "cpu").collect();
    assert_eq!(entries.len(), 2, "the built-in and the denied plugin are both reported");
    assert!(entries.iter().any(|outcome| outcome.source == "built-in" && outcome.status == CollectorStatus::Ok));
    assert!(
        entries.iter().any(|outcome| outcome.source.ends_with("cpu.wasm") && outcome.status == CollectorStatus::Denied)
    );
    assert!(report.cpu.is_some(), "the CPU facts are still there");
}

#[test]
fn cache_of_another_user_is_not_used() {
    use hw_agent::runtime::CacheUse;

    let cache = tempfile::tempdir().expect("cache directory");
    // Only root may give a directory away; elsewhere the check cannot be
    // set up, and the mode test above covers the writable case.
    if std::os::unix::fs::chown(cache.path(), Some(65_534), None).is_err() {
        eprintln!("skipped: changing the owner of a directory needs root");
        return;
    }
    let settings = common::settings(&common::fixture("this-machine"), None, cache.path());
    assert_eq!(load(&settings), [CacheUse::Disabled; 3]);
    assert_eq!(fs::read_dir(cache.path()).expect("cache directory").count(), 0, "nothing is written there");
}
