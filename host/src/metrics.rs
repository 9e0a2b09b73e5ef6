//! Prometheus metrics of `hw-agent run`, served at `/metrics` in the
//! OpenMetrics text format.
//!
//! Every family is registered when [`Metrics`] is built. Those without
//! labels are in every scrape from the first second. A labelled family
//! appears with its first label set, because the OpenMetrics text format
//! writes no family without samples. Names follow Prometheus' conventions: `hw_agent_` prefix,
//! base units (seconds, bytes), `_total` on counters.

use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::publish::PublishOutcome;
use crate::report::model::{CollectorStatus, NodeReport};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CollectorLabels {
    collector: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CollectorStatusLabels {
    collector: String,
    /// The report's status: ok, error, timeout, limit_exceeded, denied.
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    collector: String,
    /// memory, table, stack, handles, output, records, deadline or timeout.
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AiodRequestLabels {
    /// `api` for the REST API, `token` for the OIDC token endpoint.
    endpoint: String,
    method: String,
    /// `success`, `http_error` or `transport_error` (no response).
    outcome: String,
    /// The HTTP status code, or `none` without a response.
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Collector and collection durations: 1 ms to about 16 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The outcome of one AIoD request attempt, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A response with this status.
    Status(u16),
    /// No response: connection, TLS or timeout failure.
    Transport,
}

/// The agent's metrics. Cheap to update from any task; [`Metrics::encode`]
/// renders them for a scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    collector_runs: Family<CollectorStatusLabels, Counter>,
    collector_duration: HistogramFamily<CollectorLabels>,
    collector_limit_hits: Family<LimitLabels, Counter>,
    collection_duration: Histogram,
    publishes: Family<OutcomeLabels, Counter>,
    last_publish: Gauge<f64, AtomicU64>,
    aiod_requests: Family<AiodRequestLabels, Counter>,
    credentials_expiry: Gauge<f64, AtomicU64>,
    leader: Gauge,
    leader_rounds: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("hw_agent");
        let metrics = Self {
            registry: Registry::default(),
            collector_runs: Family::default(),
            collector_duration: Family::new_with_constructor(duration_histogram),
            collector_limit_hits: Family::default(),
            collection_duration: duration_histogram(),
            publishes: Family::default(),
            last_publish: Gauge::default(),
            aiod_requests: Family::default(),
            credentials_expiry: Gauge::default(),
            leader: Gauge::default(),
            leader_rounds: Family::default(),
        };
        registry.register(
            "build",
            "The agent's version; the value is always 1",
            Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION").to_owned() }),
        );
        registry.register(
            "collector_runs",
            "Collector calls by collector and report status (ok, error, timeout, limit_exceeded, denied)",
            metrics.collector_runs.clone(),
        );
        registry.register_with_unit(
            "collector_duration",
            "Wall time of one collector call: staging, instantiation and collect",
            Unit::Seconds,
            metrics.collector_duration.clone(),
        );
        registry.register(
            "collector_limit_hits",
            "Collector calls stopped by a sandbox limit, by collector and limit",
            metrics.collector_limit_hits.clone(),
        );
        registry.register_with_unit(
            "collection_duration",
            "Wall time of one whole node collection, all collectors in parallel",
            Unit::Seconds,
            metrics.collection_duration.clone(),
        );
        registry.register(
            "node_report_publishes",
            "Rounds of publishing this node's NodeHardwareReport, by outcome (created, updated, unchanged, failed)",
            metrics.publishes.clone(),
        );
        registry.register(
            "node_report_last_success_timestamp_seconds",
            "Unix time of the last round that published this node's report or found it current",
            metrics.last_publish.clone(),
        );
        registry.register(
            "aiod_requests",
            "Attempts of AIoD requests, retries included, by endpoint, method, outcome and HTTP status",
            metrics.aiod_requests.clone(),
        );
        registry.register(
            "credentials_expiry_timestamp_seconds",
            "Unix time at which the platform's current token expires; 0 when this pod has issued none",
            metrics.credentials_expiry.clone(),
        );
        registry.register("leader", "1 while this pod holds the leader Lease, else 0", metrics.leader.clone());
        registry.register(
            "leader_rounds",
            "Leader rounds (aggregate, register, keep credentials) by outcome (success, failure)",
            metrics.leader_rounds.clone(),
        );
        root.register_collector(Box::new(ProcessCollector));
        Self { registry: root, ..metrics }
    }

    /// Counts a node collection: each collector's status, duration and
    /// limit hit, and the whole collection's time.
    pub fn observe_collection(&self, report: &NodeReport, elapsed: std::time::Duration) {
        self.collection_duration.observe(elapsed.as_secs_f64());
        for outcome in &report.collectors {
            let status = serde_json::to_value(outcome.status)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", outcome.status));
            self.collector_runs.get_or_create(&CollectorStatusLabels { collector: outcome.name.clone(), status }).inc();
            if outcome.status != CollectorStatus::Denied {
                self.collector_duration
                    .get_or_create(&CollectorLabels { collector: outcome.name.clone() })
                    .observe(outcome.duration_ms / 1e3);
            }
            if let Some(limit) = &outcome.limit {
                self.collector_limit_hits
                    .get_or_create(&LimitLabels { collector: outcome.name.clone(), limit: limit.clone() })
                    .inc();
            }
        }
    }

    /// Counts a publish round; `None` for a failed one.
    pub fn observe_publish(&self, outcome: Option<PublishOutcome>) {
        let label = match outcome {
            Some(PublishOutcome::Created) => "created",
            Some(PublishOutcome::Updated) => "updated",
            Some(PublishOutcome::Unchanged) => "unchanged",
            None => "failed",
        };
        self.publishes.get_or_create(&OutcomeLabels { outcome: label.to_owned() }).inc();
        if outcome.is_some() {
            self.last_publish.set(unix_now());
        }
    }

    /// Counts one attempt of an AIoD request.
    pub fn observe_aiod_request(&self, endpoint: &str, method: &str, outcome: RequestOutcome) {
        let (outcome, status) = match outcome {
            RequestOutcome::Status(code) if (200..400).contains(&code) => ("success", code.to_string()),
            RequestOutcome::Status(code) => ("http_error", code.to_string()),
            RequestOutcome::Transport => ("transport_error", "none".to_owned()),
        };
        self.aiod_requests
            .get_or_create(&AiodRequestLabels {
                endpoint: endpoint.to_owned(),
                method: method.to_owned(),
                outcome: outcome.to_owned(),
                status,
            })
            .inc();
    }

    /// Records when the platform's token expires; `None` clears it (no
    /// token, or one without an expiry).
    pub fn set_credentials_expiry(&self, expires_at: Option<chrono::DateTime<chrono::Utc>>) {
        let seconds = expires_at.map(|time| time.timestamp_millis() as f64 / 1e3).unwrap_or(0.0);
        self.credentials_expiry.set(seconds);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn observe_leader_round(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.leader_rounds.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 << 10);
        // Writing to a String cannot fail, so an encoder error is a bug in a
        // metric. An empty scrape shows it more clearly than a partial one.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|since| since.as_secs_f64()).unwrap_or(0.0)
}

/// The process metrics every Prometheus client exports (`process_*`), read
/// from `/proc/self` on each scrape, so an operator sees what the agent
/// costs on the node beside what it reports.
#[derive(Debug)]
struct ProcessCollector;

/// The fields of `/proc/self/stat` the process metrics use.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStat {
    cpu_seconds: f64,
    threads: i64,
    start_time_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

impl ProcessStat {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        let ticks = rustix::param::clock_ticks_per_second();
        Self::parse(&stat, boot_time, ticks, rustix::param::page_size() as u64)
    }

    /// Parses `/proc/[pid]/stat` (proc(5)). The command name in parentheses
    /// may contain spaces, so fields are counted after its closing `)`.
    fn parse(stat: &str, boot_time: u64, ticks_per_second: u64, page_size: u64) -> Option<Self> {
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        // `fields[0]` is field 3 (state), so field N is `fields[N - 3]`.
        let field = |number: usize| fields.get(number - 3).and_then(|value| value.parse::<u64>().ok());
        let ticks = ticks_per_second.max(1) as f64;
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: i64::try_from(field(20)?).ok()?,
            start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.saturating_mul(page_size),
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = ProcessStat::read() else { return Ok(()) };
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|entries| entries.count() as i64).ok();

        let cpu = ConstCounter::new(stat.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<Unit>, f64); 4] = [
            ("process_resident_memory", "Resident memory size", Some(Unit::Bytes), stat.resident_bytes as f64),
            ("process_virtual_memory", "Virtual memory size", Some(Unit::Bytes), stat.virtual_bytes as f64),
            ("process_start_time", "Start time since the Unix epoch", Some(Unit::Seconds), stat.start_time_seconds),
            ("process_threads", "Number of OS threads", None, stat.threads as f64),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?)?;
        }
        if let Some(open_fds) = open_fds {
            // The directory handle itself is one of the entries.
            let gauge = ConstGauge::new((open_fds - 1).max(0));
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_after_command_name() {
        // A command name with spaces and a `)` of its own.
        let stat = "4242 (hw agent) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 7 0 12000 \
                    104857600 5120 18446744073709551615 1 1 0 0 0 0 0 4096 17384 0 0 0 17 1 0 0 0 0 0";
        let parsed = ProcessStat::parse(stat, 1_700_000_000, 100, 4096).expect("parses");
        assert_eq!(parsed.cpu_seconds, 3.0);
        assert_eq!(parsed.threads, 7);
        assert_eq!(parsed.start_time_seconds, 1_700_000_120.0);
        assert_eq!(parsed.virtual_bytes, 104_857_600);
        assert_eq!(parsed.resident_bytes, 5120 * 4096);
        assert_eq!(ProcessStat::parse("4242 (truncated", 0, 100, 4096), None);
        assert_eq!(ProcessStat::parse("4242 (short) S 1 2", 0, 100, 4096), None);
    }

    #[test]
    fn unlabelled_families_are_exported_from_the_start() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        for family in [
            "hw_agent_build_info{version=",
            "hw_agent_collection_duration_seconds_count 0",
            "hw_agent_node_report_last_success_timestamp_seconds 0",
            "hw_agent_credentials_expiry_timestamp_seconds 0",
            "hw_agent_leader 0",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn observations_carry_their_labels() {
        let metrics = Metrics::new();
        metrics.observe_aiod_request("api", "PUT", RequestOutcome::Status(200));
        metrics.observe_aiod_request("api", "PUT", RequestOutcome::Status(503));
        metrics.observe_aiod_request("token", "POST", RequestOutcome::Transport);
        metrics.observe_publish(Some(PublishOutcome::Created));
        metrics.observe_publish(None);
        metrics.set_leader(true);
        let expiry = chrono::DateTime::from_timestamp(1_900_000_000, 0).expect("time");
        metrics.set_credentials_expiry(Some(expiry));
        let text = metrics.encode();
        for line in [
            r#"hw_agent_aiod_requests_total{endpoint="api",method="PUT",outcome="success",status="200"} 1"#,
            r#"hw_agent_aiod_requests_total{endpoint="api",method="PUT",outcome="http_error",status="503"} 1"#,
            r#"hw_agent_aiod_requests_total{endpoint="token",method="POST",outcome="transport_error",status="none"} 1"#,
            r#"hw_agent_node_report_publishes_total{outcome="created"} 1"#,
            r#"hw_agent_node_report_publishes_total{outcome="failed"} 1"#,
            "hw_agent_leader 1",
            "hw_agent_credentials_expiry_timestamp_seconds 1900000000.0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
