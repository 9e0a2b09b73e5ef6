//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use hw_agent::collection::CollectSettings;
use hw_agent::runtime::GuestLimits;

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
        limits: GuestLimits::default(),
        include_identifiers: false,
    }
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

/// Returns the path of the fault collector that build.rs compiles for tests.
pub fn fault_component() -> PathBuf {
    PathBuf::from(env!("HW_AGENT_COMPONENT_FAULT"))
}
