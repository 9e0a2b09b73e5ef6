//! Log output: the tracing subscriber, and a limiter for errors that repeat
//! every round.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::ValueEnum;

/// The format of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event, coloured on a terminal.
    Human,
    /// One JSON object per line, with the event's fields and its spans, for
    /// log collectors in a cluster.
    Json,
}

/// Compiler crates that log every instruction at debug and trace level: over
/// a million lines for one cold start.
const COMPILER_TARGETS: &[&str] =
    &["cranelift_codegen", "cranelift_frontend", "cranelift_entity", "wasmtime_internal_cranelift", "regalloc2"];

/// kube-rs logs every failed request at ERROR without the request; the
/// agent reports the same failure with the action and the fix.
const KUBE_REQUEST_LOG: &str = "kube_client::client::builder";

/// Caps the compiler crates at `warn` unless the filter names them, so
/// `--log trace` shows the agent's own work instead of Cranelift internals,
/// and silences kube-rs's duplicate request errors.
pub fn directives(filter: &str) -> String {
    let mut directives = filter.to_owned();
    for target in COMPILER_TARGETS {
        if !filter.contains(target) {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    if !filter.contains(KUBE_REQUEST_LOG) {
        directives.push_str(&format!(",{KUBE_REQUEST_LOG}=off"));
    }
    directives
}

/// Parses `filter` (RUST_LOG syntax) and installs the global subscriber
/// writing to stderr. Returns the parse error's text for a bad filter.
pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("the filter is empty and would silence every message, errors included".to_owned());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(directives(filter)).map_err(|error| error.to_string())?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // The current span's fields sit beside the event's, so each line
        // names the collector or round it belongs to.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    Ok(())
}

/// Decides whether an error that may repeat every round is logged: the
/// first occurrence of a message is, then the same message again only once
/// per `window`, with the number of times it was held back in between.
/// A pod whose API server is down for an hour logs a handful of lines, not
/// one every retry.
#[derive(Debug)]
pub struct RepeatLimiter {
    window: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

/// The decision for one occurrence of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Log it; `suppressed` occurrences since the last logged one were not.
    Log { suppressed: u64 },
    /// Do not log it.
    Suppress,
}

/// The time a repeated error stays quiet after it was logged. Failures are
/// retried every 30 s and rounds run every few minutes, so a lasting
/// failure logs about four lines an hour. The metrics count every one.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Returns the process's limiter, shared by every loop and collector.
pub fn repeats() -> &'static RepeatLimiter {
    static REPEATS: std::sync::LazyLock<RepeatLimiter> = std::sync::LazyLock::new(|| RepeatLimiter::new(REPEAT_WINDOW));
    &REPEATS
}

/// Distinct messages remembered at most; the oldest are forgotten first.
const REMEMBERED_MESSAGES: usize = 256;

impl RepeatLimiter {
    pub fn new(window: Duration) -> Self {
        Self { window, seen: Mutex::new(HashMap::new()) }
    }

    /// Records one occurrence of `key` (usually the whole message) at `now`.
    pub fn check_at(&self, key: &str, now: Instant) -> Repeat {
        let Ok(mut seen) = self.seen.lock() else { return Repeat::Log { suppressed: 0 } };
        if let Some(entry) = seen.get_mut(key) {
            if now.duration_since(entry.logged_at) < self.window {
                entry.suppressed += 1;
                return Repeat::Suppress;
            }
            let suppressed = entry.suppressed;
            *entry = Seen { logged_at: now, suppressed: 0 };
            return Repeat::Log { suppressed };
        }
        if seen.len() >= REMEMBERED_MESSAGES
            && let Some(oldest) = seen.iter().min_by_key(|(_, entry)| entry.logged_at).map(|(key, _)| key.clone())
        {
            seen.remove(&oldest);
        }
        seen.insert(key.to_owned(), Seen { logged_at: now, suppressed: 0 });
        Repeat::Log { suppressed: 0 }
    }

    pub fn check(&self, key: &str) -> Repeat {
        self.check_at(key, Instant::now())
    }

    /// Logs `message` at ERROR under `what` unless the same pair was logged
    /// within the window; `repeated` counts the lines held back since.
    pub fn error(&self, what: &str, message: &str) {
        if let Repeat::Log { suppressed } = self.check(&format!("{what}\u{0}{message}")) {
            tracing::error!(error = %message, repeated = suppressed, "{what}");
        }
    }

    /// As [`RepeatLimiter::error`], at WARN.
    pub fn warn(&self, what: &str, message: &str) {
        if let Repeat::Log { suppressed } = self.check(&format!("{what}\u{0}{message}")) {
            tracing::warn!(error = %message, repeated = suppressed, "{what}");
        }
    }

    /// Forgets every key that starts with `key_prefix`, so the next
    /// occurrence is logged at once: called when the failing work succeeds
    /// again.
    pub fn clear(&self, key_prefix: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|key, _| !key.starts_with(key_prefix));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_logs_once_per_window() {
        let limiter = RepeatLimiter::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(limiter.check_at("down", start), Repeat::Log { suppressed: 0 });
        for seconds in [10, 20, 59] {
            assert_eq!(limiter.check_at("down", start + Duration::from_secs(seconds)), Repeat::Suppress);
        }
        // Another message is not held back by the first.
        assert_eq!(limiter.check_at("other", start + Duration::from_secs(30)), Repeat::Log { suppressed: 0 });
        assert_eq!(limiter.check_at("down", start + Duration::from_secs(61)), Repeat::Log { suppressed: 3 });
        assert_eq!(limiter.check_at("down", start + Duration::from_secs(62)), Repeat::Suppress);
        limiter.clear("do");
        assert_eq!(limiter.check_at("down", start + Duration::from_secs(63)), Repeat::Log { suppressed: 0 });
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = RepeatLimiter::new(Duration::from_secs(60));
        let start = Instant::now();
        for index in 0..1_000u64 {
            limiter.check_at(&format!("message {index}"), start + Duration::from_millis(index));
        }
        assert!(limiter.seen.lock().expect("lock").len() <= REMEMBERED_MESSAGES);
    }

    #[test]
    fn compiler_crates_are_capped_unless_named() {
        let capped = directives("trace");
        assert!(capped.contains("cranelift_codegen=warn"), "{capped}");
        assert!(capped.contains("kube_client::client::builder=off"), "{capped}");
        let named = directives("cranelift_codegen=debug");
        assert!(!named.contains("cranelift_codegen=warn"), "{named}");
    }
}
