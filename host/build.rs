//! Builds the collector components for `wasm32-wasip2` so that `hw-agent`
//! can embed them, the way wasmtime builds its guest test programs.
//!
//! The collectors are compiled by a nested `cargo build` into
//! `collectors/` below the outer target directory, a directory of their own: sharing the outer
//! build's directory would deadlock on its lock. The outer build's flags are
//! removed from the environment because they are meant for the host target.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Collector crates and the file name of the component each produces.
const BUILT_IN: &[(&str, &str)] = &[
    ("hw-collector-cpu", "hw_collector_cpu.wasm"),
    ("hw-collector-gpu", "hw_collector_gpu.wasm"),
    ("hw-collector-system", "hw_collector_system.wasm"),
    // The cluster-level collector of the `node-collector` world, embedded
    // apart from the node collectors.
    ("hw-collector-nodes", "hw_collector_nodes.wasm"),
];
/// Test-only collectors: built here so tests get them, never embedded.
const TEST_ONLY: &[(&str, &str)] = &[
    ("hw-collector-fault", "hw_collector_fault.wasm"),
    ("hw-collector-template", "hw_collector_template.wasm"),
    ("hw-collector-infiniband", "hw_collector_infiniband.wasm"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ sits inside the workspace").to_path_buf();
    for watched in [
        "wit",
        "plugins/guest",
        "plugins/cpu",
        "plugins/gpu",
        "plugins/system",
        "plugins/fault",
        "plugins/nodes",
        "plugins/template",
        "plugins/infiniband",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());

    ensure_target_installed();

    // Follow an absolute CARGO_TARGET_DIR, so two clones built with their
    // own target directories do not share one collector build.
    let outer_target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .unwrap_or_else(|| workspace.join("target"));
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target_dir = outer_target.join("collectors");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--locked", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for (package, _) in BUILT_IN.iter().chain(TEST_ONLY) {
        command.args(["--package", package]);
    }
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
    ] {
        command.env_remove(variable);
    }
    let status = command.status().expect("failed to run cargo to build the collector components");
    assert!(status.success(), "building the collector components for {TARGET} failed (see the cargo output above)");

    let out_dir = target_dir.join(TARGET).join("release");
    for (package, file) in BUILT_IN.iter().chain(TEST_ONLY) {
        let path = out_dir.join(file);
        assert!(path.is_file(), "{package} built, but {} is missing", path.display());
        let variable = format!("HW_AGENT_COMPONENT_{}", package.trim_start_matches("hw-collector-").to_uppercase());
        println!("cargo:rustc-env={variable}={}", path.display());
    }
}

/// Installs the wasm32-wasip2 standard library through rustup when it is
/// missing, so a fresh machine builds with a plain `cargo build`.
fn ensure_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(sysroot) = &sysroot
        && is_installed(sysroot)
    {
        return;
    }

    // Inside a build script `RUSTUP_TOOLCHAIN` names the toolchain cargo runs
    // with, which is the one rust-toolchain.toml pins.
    let mut command = Command::new("rustup");
    command.args(["target", "add", TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        command.args(["--toolchain", &toolchain]);
    }
    let installed = command.status().map(|status| status.success()).unwrap_or(false);
    assert!(
        installed,
        "the {TARGET} target is not installed and `rustup target add {TARGET}` failed; install it by hand and build again"
    );
}

fn is_installed(sysroot: &Path) -> bool {
    sysroot.join("lib").join("rustlib").join(TARGET).join("lib").is_dir()
}
