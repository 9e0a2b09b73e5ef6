//! A collector that misbehaves on request, so tests can check that the host
//! contains each failure. It is built with the built-in collectors but never
//! embedded in `hw-agent`.
//!
//! The mode is the content of `/sys/hw-agent-fault-mode` in the host root the
//! test passes, because a collector has no arguments or environment. Modes:
//!
//! - `ok` (or an unknown mode): returns `test.hw-agent/fault-mode` with the mode.
//! - `panic`, `unreachable`: trap at once.
//! - `spin`: loops forever.
//! - `memory`: allocates 1 MiB blocks until the memory limit stops it.
//! - `recursion`: recurses until the WebAssembly call stack overflows.
//! - `error`: returns `CollectError::NotSupported`.
//! - `output`: returns about 8 MiB of attributes.
//! - `records`: returns 100,000 small attributes, about 3 MB.
//! - `proc-self`: reports which of the agent's own `/proc` entries it can read.
//! - `dotdot`, `symlink`, `sa-token`: try to read outside the `/sys` grant and
//!   report each attempt as `denied` or `leaked:<start of the content>`.
//! - `env`: counts the environment variables and arguments it is given.
//! - `sockets`: tries TCP, UDP and a name lookup.
//! - `files`: opens one file 10,000 times and keeps every handle.
//! - `block`: reads a FIFO that has no writer, so the read blocks in the host.
//! - `logs`: sends 1,000 log records of 64 KiB each.
//!
//! Attribute keys are `test.hw-agent/<name>`.

// The export macro, the only user of this code, exists on wasm32 only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::fs::File;
use std::hint::black_box;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use hw_collector_guest::{
    Attribute, Capability, CollectError, CollectOptions, CollectorInfo, Guest, Level, PartialReport, Root,
};

const MODE_FILE: &str = "/sys/hw-agent-fault-mode";

/// Prefix of every attribute key this collector returns.
const KEY_PREFIX: &str = "test.hw-agent/";

/// Maximum number of characters of leaked content or of an error message put
/// in an attribute value.
const EXCERPT_CHARS: usize = 64;

struct Collector;

impl Guest for Collector {
    fn info() -> CollectorInfo {
        CollectorInfo {
            name: "fault".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
            capabilities: vec![Capability::ReadPath("/sys".to_owned())],
        }
    }

    fn collect(_options: CollectOptions) -> Result<PartialReport, CollectError> {
        let mode = Root::sandbox().read_opt(MODE_FILE).unwrap_or_else(|| "ok".to_owned());
        match mode.as_str() {
            "panic" => panic!("fault collector asked to panic"),
            "unreachable" => trap_unreachable(),
            "spin" => spin(),
            "memory" => allocate_forever(),
            "recursion" => Ok(overflow_call_stack()),
            "error" => Err(CollectError::NotSupported("fault collector asked to fail".to_owned())),
            "output" => Ok(oversized_output()),
            "records" => Ok(too_many_records()),
            // Reports which of the agent's own /proc entries it could read.
            "proc-self" => Ok(attributes(&[
                ("test.hw-agent/proc-self-environ", readable("/proc/self/environ")),
                ("test.hw-agent/proc-self-mem", readable("/proc/self/mem")),
                ("test.hw-agent/proc-1-environ", readable("/proc/1/environ")),
            ])),
            "dotdot" => Ok(escape_with_dotdot()),
            "symlink" => Ok(escape_with_symlinks()),
            "sa-token" => Ok(read_kubernetes_secrets()),
            "env" => Ok(inspect_environment()),
            "sockets" => Ok(open_sockets()),
            "files" => Ok(open_many_files()),
            "block" => Ok(read_fifo()),
            "logs" => Ok(send_large_logs()),
            _ => Ok(attributes(&[("test.hw-agent/fault-mode", mode.as_str())])),
        }
    }
}

fn readable(path: &str) -> &'static str {
    if std::fs::read(path).is_ok() { "readable" } else { "denied" }
}

fn attributes(pairs: &[(&str, &str)]) -> PartialReport {
    report(pairs.iter().map(|(key, value)| Attribute { key: (*key).to_owned(), value: (*value).to_owned() }).collect())
}

/// Builds an attribute with the key `test.hw-agent/<name>`.
fn attribute(name: &str, value: impl Into<String>) -> Attribute {
    Attribute { key: format!("{KEY_PREFIX}{name}"), value: value.into() }
}

/// Builds attributes `<name>-1`, `<name>-2`, ... from the values in order.
fn numbered(name: &str, values: impl IntoIterator<Item = String>) -> Vec<Attribute> {
    values.into_iter().enumerate().map(|(index, value)| attribute(&format!("{name}-{}", index + 1), value)).collect()
}

fn report(attributes: Vec<Attribute>) -> PartialReport {
    PartialReport { cpu: None, memory: None, os: None, accelerators: None, storage: None, network: None, attributes }
}

#[cfg(target_arch = "wasm32")]
fn trap_unreachable() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap_unreachable() -> ! {
    std::process::abort()
}

fn spin() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn allocate_forever() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&blocks);
    }
}

/// Calls [`recurse`] with a depth that no call stack can hold, so the host's
/// WebAssembly stack limit traps it.
fn overflow_call_stack() -> PartialReport {
    // `black_box` hides the depth, so LLVM cannot specialise `recurse` for it.
    let total = recurse(black_box(u64::MAX));
    report(vec![attribute("recursion", format!("returned:{total}"))])
}

/// Recurses `depth` times, one WebAssembly call frame per level.
///
/// The argument and result are scalars, which stay in WebAssembly locals, so
/// only the host's native call stack grows and the shadow stack in linear
/// memory does not. `black_box` is not used in here because rustc passes its
/// argument through memory, which puts 16 bytes per level on the shadow
/// stack. Instead the multiply and add after the call keep it from being a
/// tail call. LLVM's tail recursion elimination turns only a single
/// associative operation on the result into an accumulator, so it cannot make
/// this a loop (checked in the wasm32-wasip2 assembly of Rust 1.95).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    recurse(depth - 1).wrapping_mul(3).wrapping_add(depth)
}

/// Returns 2,048 attributes with 4,096-character values, about 8 MiB, which
/// is more than the host's 4 MiB output limit.
fn oversized_output() -> PartialReport {
    let value = "x".repeat(4_096);
    report((0..2_048).map(|index| attribute(&format!("output-{index}"), value.clone())).collect())
}

/// Returns 100,000 attributes, more than the host's limit of 65,536 records,
/// in about 3 MB, which is less than its 4 MiB output limit.
fn too_many_records() -> PartialReport {
    report((0..100_000).map(|index| attribute(&format!("r{index}"), "x")).collect())
}

/// Tries to leave the `/sys` grant through `..` components.
fn escape_with_dotdot() -> PartialReport {
    let outcomes = [
        try_read("/sys/../etc/passwd"),
        try_read("/sys/../../../etc/hostname"),
        try_read("/proc/../sys/../etc/shadow"),
        try_read("../etc/passwd"),
        try_list("/sys/class/../../.."),
    ];
    report(numbered("dotdot", outcomes))
}

/// Follows the symlinks the test creates inside `/sys`: three lead out of the
/// grant and one stays inside it.
fn escape_with_symlinks() -> PartialReport {
    let inside = match read_text("/sys/hw-agent-inside") {
        Ok(text) => format!("readable:{}", excerpt(&text)),
        Err(_) => "denied".to_owned(),
    };
    report(vec![
        attribute("symlink-relative", try_read("/sys/hw-agent-escape-relative")),
        attribute("symlink-absolute", try_read("/sys/hw-agent-escape-absolute")),
        attribute("symlink-dir", try_list("/sys/hw-agent-escape-dir")),
        attribute("symlink-inside", inside),
    ])
}

/// Tries to read the pod's service account token, the kubelet's pod
/// directory and the cluster admin kubeconfig.
fn read_kubernetes_secrets() -> PartialReport {
    let outcomes = [
        try_read("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        try_read("/run/secrets/kubernetes.io/serviceaccount/token"),
        try_list("/var/lib/kubelet/pods"),
        try_read("/etc/kubernetes/admin.conf"),
    ];
    report(numbered("sa-token", outcomes))
}

/// Returns `leaked:<start of the file>` if the file can be read, else `denied`.
fn try_read(path: &str) -> String {
    escape_outcome(read_text(path))
}

/// Returns `leaked:<entry names joined by commas>` if the directory can be
/// listed, else `denied`.
fn try_list(path: &str) -> String {
    escape_outcome(list_names(path))
}

fn escape_outcome(result: io::Result<String>) -> String {
    match result {
        Ok(text) => format!("leaked:{}", excerpt(&text)),
        Err(_) => "denied".to_owned(),
    }
}

/// Reads a file through `std::fs` rather than [`Root`], so the path reaches
/// WASI exactly as written.
fn read_text(path: &str) -> io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Lists a directory's entry names, sorted and joined by commas. Unlike
/// [`Root::list`], it returns the error instead of an empty list.
fn list_names(path: &str) -> io::Result<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names.join(","))
}

/// Returns at most [`EXCERPT_CHARS`] characters of the trimmed text. It counts
/// characters, not bytes, so it never splits a UTF-8 sequence.
fn excerpt(text: &str) -> String {
    text.trim().chars().take(EXCERPT_CHARS).collect()
}

/// Counts the environment variables and arguments the host passes to the
/// guest, and reports whether `PATH` is among them.
fn inspect_environment() -> PartialReport {
    let path = if std::env::var_os("PATH").is_some() { "present" } else { "absent" };
    report(vec![
        attribute("env-count", std::env::vars_os().count().to_string()),
        attribute("env-path", path),
        attribute("args-count", std::env::args_os().count().to_string()),
    ])
}

/// File with the `HOST:PORT` of the TCP listener the test runs on loopback.
const TARGET_FILE: &str = "/sys/hw-agent-fault-target";

/// Tries a TCP connection and a UDP datagram to the test's listener, and a
/// name lookup. Each returns `denied:<error message>` when it fails.
fn open_sockets() -> PartialReport {
    let (tcp, udp) = match read_target() {
        Ok(target) => (connect_tcp(target), send_udp(target)),
        // A missing target is `skipped`, not `denied`, because the sandbox
        // was not tested, so a test that expects `denied` fails.
        Err(reason) => (reason.clone(), reason),
    };
    let dns = match ("localhost", 80).to_socket_addrs() {
        Ok(_) => "resolved".to_owned(),
        Err(error) => denied(&error),
    };
    report(vec![attribute("socket-tcp", tcp), attribute("socket-udp", udp), attribute("socket-dns", dns)])
}

fn read_target() -> Result<SocketAddr, String> {
    let Ok(text) = read_text(TARGET_FILE) else {
        return Err(format!("skipped:missing {TARGET_FILE}"));
    };
    let text = text.trim();
    text.parse().map_err(|_| format!("skipped:invalid target {}", excerpt(text)))
}

fn connect_tcp(target: SocketAddr) -> String {
    match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
        Ok(_) => "connected".to_owned(),
        Err(error) => denied(&error),
    }
}

fn send_udp(target: SocketAddr) -> String {
    let socket = match UdpSocket::bind("0.0.0.0:0") {
        Ok(socket) => socket,
        Err(error) => return denied(&error),
    };
    match socket.send_to(b"hw-agent fault collector", target) {
        Ok(_) => "sent".to_owned(),
        Err(error) => denied(&error),
    }
}

fn denied(error: &io::Error) -> String {
    format!("denied:{}", excerpt(&error.to_string()))
}

/// Opens the mode file 10,000 times and keeps every handle open, to reach
/// the host's limit on open handles. Reports how many opens succeeded and
/// the first error, and keeps trying after an error.
fn open_many_files() -> PartialReport {
    let mut files: Vec<File> = Vec::new();
    let mut first_error: Option<String> = None;
    for _ in 0..10_000 {
        match File::open(MODE_FILE) {
            Ok(file) => files.push(file),
            Err(error) => {
                first_error.get_or_insert_with(|| excerpt(&error.to_string()));
            }
        }
    }
    report(vec![
        attribute("files-opened", files.len().to_string()),
        attribute("files-error", first_error.unwrap_or_else(|| "none".to_owned())),
    ])
}

/// Reads a FIFO that the test creates and never opens for writing. A
/// blocking open(2) of a FIFO for reading waits for a writer, so the call
/// blocks inside the host and this returns only if the host cuts it short.
fn read_fifo() -> PartialReport {
    // Whether the read fails or succeeds does not matter, only that it returned.
    let _ = std::fs::read("/sys/hw-agent-fifo");
    report(vec![attribute("block", "returned")])
}

/// Sends 1,000 log records of 64 KiB each, 64 MiB in all.
fn send_large_logs() -> PartialReport {
    let message = "x".repeat(64 * 1024);
    for _ in 0..1_000 {
        hw_collector_guest::log(Level::Info, &message);
    }
    report(vec![attribute("logs", "sent")])
}

#[cfg(target_arch = "wasm32")]
hw_collector_guest::bindings::export_collector!(Collector with_types_in hw_collector_guest::bindings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_outcome_denied_on_error() {
        assert_eq!(escape_outcome(Err(io::ErrorKind::NotFound.into())), "denied");
    }

    #[test]
    fn escape_outcome_trims_and_truncates() {
        let leaked = escape_outcome(Ok(format!("\n{}\n", "é".repeat(100))));
        assert_eq!(leaked, format!("leaked:{}", "é".repeat(EXCERPT_CHARS)));
    }

    #[test]
    fn numbered_keys_start_at_one() {
        let keys: Vec<String> =
            numbered("dotdot", ["a".to_owned(), "b".to_owned()]).into_iter().map(|attribute| attribute.key).collect();
        assert_eq!(keys, ["test.hw-agent/dotdot-1", "test.hw-agent/dotdot-2"]);
    }

    #[test]
    fn record_mode_keys_are_valid() {
        for attribute in too_many_records().attributes.iter().chain(&oversized_output().attributes) {
            let name = attribute.key.strip_prefix(KEY_PREFIX).expect("key prefix");
            assert!(name.len() <= 63, "{name} is longer than 63 characters");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)),
                "{name} is not label-style"
            );
        }
    }
}
