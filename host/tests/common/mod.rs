//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod synthetic;

use std::fs;
use std::path::{Path, PathBuf};

use hw_agent::collection::{CollectSettings, Collection};
use hw_agent::policy::Policy;
use hw_agent::report::model::NodeReport;

/// Returns the path of a recorded or reconstructed machine root under `fixtures/roots`.
pub fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/roots").join(name);
    assert!(path.is_dir(), "fixture root {} is missing", path.display());
    path
}

/// Collection settings for a root, with a private cache directory.
pub fn settings(root: &Path, plugin_dir: Option<&Path>, cache_dir: &Path) -> CollectSettings {
    CollectSettings {
        host_root: root.to_path_buf(),
        plugin_dir: plugin_dir.map(Path::to_path_buf),
        cache_dir: Some(cache_dir.to_path_buf()),
        policy: Policy::built_in(),
        pooling: true,
        include_identifiers: false,
    }
}

/// Starts a multi-threaded tokio runtime, as `hw-agent` runs in.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Loads the collectors and runs one collection.
pub fn collect_once(settings: &CollectSettings) -> NodeReport {
    tokio_runtime().block_on(async { Collection::load(settings).await.expect("collectors load").collect().await })
}

/// Returns the path of a test component that build.rs compiles.
pub fn test_component(variable: &str) -> PathBuf {
    let path = match variable {
        "fault" => env!("HW_AGENT_COMPONENT_FAULT"),
        "template" => env!("HW_AGENT_COMPONENT_TEMPLATE"),
        "infiniband" => env!("HW_AGENT_COMPONENT_INFINIBAND"),
        other => panic!("no test component named {other}"),
    };
    PathBuf::from(path)
}

/// Copies a directory tree, keeping symlinks as symlinks, so a test can add
/// files to a fixture root without touching the original.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create destination directory");
    for entry in fs::read_dir(from).expect("read source directory") {
        let entry = entry.expect("directory entry");
        let source = entry.path();
        let target = to.join(entry.file_name());
        let file_type = entry.file_type().expect("file type");
        if file_type.is_symlink() {
            let link = fs::read_link(&source).expect("read symlink");
            std::os::unix::fs::symlink(link, &target).expect("create symlink");
        } else if file_type.is_dir() {
            copy_tree(&source, &target);
        } else {
            fs::copy(&source, &target).expect("copy file");
        }
    }
}

/// Replaces every occurrence of `from` with `to`, which has the same
/// length, so a component's binary stays well-formed.
pub fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut bytes = bytes.to_vec();
    let mut index = 0;
    while let Some(position) = bytes[index..].windows(from.len()).position(|window| window == from) {
        let start = index + position;
        bytes[start..start + from.len()].copy_from_slice(to);
        index = start + from.len();
    }
    bytes
}

/// Rewrites the `aiod:hw-agent` import names of a component to another
/// package version: what a collector built against that WIT imports.
pub fn with_wit_version(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    for interface in ["types", "logging"] {
        let old = format!("aiod:hw-agent/{interface}@{from}");
        let new = format!("aiod:hw-agent/{interface}@{to}");
        bytes = replace_all(&bytes, old.as_bytes(), new.as_bytes());
    }
    bytes
}
