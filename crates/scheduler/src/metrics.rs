//! Metrics: counters and histograms kept on the scheduler's thread, exposed in
//! the Prometheus text format.
//!
//! The scheduler owns its metrics and updates them without atomics or locks
//! (they are plain integers on its own thread). A scrape takes a
//! [`MetricsSnapshot`], a copy, and encodes it with the `prometheus-client`
//! crate, so the hot path pays for an add, never for a lock.
//!
//! Every name carries the product's namespace, `tiffany_`, as exporters'
//! names do, so that they cannot collide with another library's in a shared
//! registry or on a shared scrape ([`NAMESPACE`]).
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `tiffany_scheduler_ready_queue_depth` | gauge | tasks in the ready queue |
//! | `tiffany_scheduler_live_tasks` | gauge | tasks not yet ended |
//! | `tiffany_tasks_spawned_total` | counter | tasks created |
//! | `tiffany_tasks_total{outcome}` | counter | tasks ended, by `done`, `failed`, `cancelled` |
//! | `tiffany_tasks_abandoned_total` | counter | tasks abandoned at a shutdown deadline (also counted as cancelled) |
//! | `tiffany_task_spawn_denied_total` | counter | spawns refused |
//! | `tiffany_task_run_latency_seconds` | histogram | time from ready to running |
//! | `tiffany_task_wait_time_seconds` | histogram | time blocked (sleep, join, I/O) |
//! | `tiffany_task_budget_throttle_total` | counter | throttles |
//! | `tiffany_backpressure_pauses_total` | counter | pauses of intake |
//! | `tiffany_callback_errors_total` | counter | subscriber, hook and listener failures |
//! | `tiffany_scheduler_steps_total` | counter | task resumes |

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Histogram bucket bounds in seconds: 1 ms to 2 s.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds.
const BUCKET_NANOS: [u64; LATENCY_BUCKETS.len()] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
];

/// A histogram with the fixed [`LATENCY_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&mut self, d: Duration) {
        self.observe_nanos(d.as_secs().saturating_mul(1_000_000_000) + u64::from(d.subsec_nanos()));
    }

    /// Records one observation given in nanoseconds.
    #[inline]
    pub fn observe_nanos(&mut self, nanos: u64) {
        // Integer compares against the bounds in nanoseconds, and a multiply
        // (not a division) for the sum: this runs on every step.
        let i = BUCKET_NANOS
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(BUCKET_NANOS.len());
        self.counts[i] += 1;
        self.sum += nanos as f64 * 1e-9;
        self.count += 1;
    }

    /// `(upper bound, count in this bucket)` pairs, `+Inf` last. Not
    /// cumulative: the encoder accumulates them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// A copy of a scheduler's metrics at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Tasks in the ready queue.
    pub ready_queue_depth: u64,
    /// Tasks not yet ended.
    pub live_tasks: u64,
    /// Tasks created.
    pub spawned: u64,
    /// Tasks that returned.
    pub done: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks abandoned at a shutdown deadline (also counted in `cancelled`).
    pub abandoned: u64,
    /// Spawns refused.
    pub spawn_denied: u64,
    /// Throttles.
    pub throttles: u64,
    /// Back-pressure pauses.
    pub backpressure_pauses: u64,
    /// Failures of subscribers, hooks and listeners.
    pub callback_errors: u64,
    /// Task resumes.
    pub steps: u64,
    /// Time from ready to running.
    pub run_latency: Histogram,
    /// Time blocked.
    pub wait_time: Histogram,
    /// Labels added to every series (for example `shard`).
    pub labels: Vec<(String, String)>,
}

/// The scheduler's live metrics (single-threaded).
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) spawned: u64,
    pub(crate) done: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    pub(crate) abandoned: u64,
    pub(crate) spawn_denied: u64,
    pub(crate) throttles: u64,
    pub(crate) backpressure_pauses: u64,
    pub(crate) callback_errors: u64,
    pub(crate) steps: u64,
    pub(crate) run_latency: Histogram,
    pub(crate) wait_time: Histogram,
}

impl Metrics {
    pub(crate) fn snapshot(&self, ready: usize, live: usize) -> MetricsSnapshot {
        MetricsSnapshot {
            ready_queue_depth: ready as u64,
            live_tasks: live as u64,
            spawned: self.spawned,
            done: self.done,
            failed: self.failed,
            cancelled: self.cancelled,
            abandoned: self.abandoned,
            spawn_denied: self.spawn_denied,
            throttles: self.throttles,
            backpressure_pauses: self.backpressure_pauses,
            callback_errors: self.callback_errors,
            steps: self.steps,
            run_latency: self.run_latency.clone(),
            wait_time: self.wait_time.clone(),
            labels: Vec::new(),
        }
    }
}

impl MetricsSnapshot {
    /// The snapshot in the Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        to_prometheus_all(std::slice::from_ref(self))
    }

    /// Adds a label to every series (for example `("shard", "0")`).
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
}

struct Labels<'a>(&'a [(String, String)], Option<(&'static str, &'static str)>);

impl prometheus_client::encoding::EncodeLabelSet for Labels<'_> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        for (k, v) in self.0 {
            (k.as_str(), v.as_str()).encode(encoder.encode_label())?;
        }
        if let Some((k, v)) = self.1 {
            (k, v).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Label set type for the (absent) exemplars.
type NoLabels = Vec<(String, String)>;

enum Sample<'a> {
    Counter(u64),
    Gauge(i64),
    Histogram(&'a Histogram),
}

/// A label pair added to one sample (such as `outcome="done"`).
type ExtraLabel = Option<(&'static str, &'static str)>;

/// One sample with its snapshot's labels and an optional extra label.
type LabelledSample<'a> = (&'a [(String, String)], ExtraLabel, Sample<'a>);

struct Series<'a> {
    samples: Vec<LabelledSample<'a>>,
    kind: MetricType,
}

impl EncodeMetric for Series<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        for (labels, extra, sample) in &self.samples {
            let labels = Labels(labels, *extra);
            let mut e = encoder.encode_family(&labels)?;
            match sample {
                Sample::Counter(v) => e.encode_counter::<NoLabels, _, u64>(v, None)?,
                Sample::Gauge(v) => e.encode_gauge(v)?,
                Sample::Histogram(h) => {
                    e.encode_histogram::<NoLabels>(h.sum, h.count, &h.buckets(), None)?
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// Several snapshots (one per shard, say) exposed together: each metric family
/// once, with one series per snapshot, told apart by their labels.
#[derive(Clone, Debug)]
struct Snapshots(Vec<MetricsSnapshot>);

type Family = (&'static str, &'static str, MetricType);

/// The prefix of every metric name.
pub const NAMESPACE: &str = "tiffany";

const FAMILIES: [Family; 12] = [
    (
        "scheduler_ready_queue_depth",
        "Tasks in the ready queue.",
        MetricType::Gauge,
    ),
    (
        "scheduler_live_tasks",
        "Tasks not yet ended.",
        MetricType::Gauge,
    ),
    ("tasks_spawned", "Tasks created.", MetricType::Counter),
    ("tasks", "Tasks ended, by outcome.", MetricType::Counter),
    ("task_spawn_denied", "Spawns refused.", MetricType::Counter),
    (
        "task_run_latency_seconds",
        "Time from ready to running.",
        MetricType::Histogram,
    ),
    (
        "task_wait_time_seconds",
        "Time blocked in sleep, join or I/O.",
        MetricType::Histogram,
    ),
    (
        "task_budget_throttle",
        "Tasks re-queued after using their CPU quantum.",
        MetricType::Counter,
    ),
    (
        "backpressure_pauses",
        "Times intake paused at the high watermark.",
        MetricType::Counter,
    ),
    (
        "callback_errors",
        "Failures of event subscribers, shutdown hooks and pressure listeners.",
        MetricType::Counter,
    ),
    ("scheduler_steps", "Task resumes.", MetricType::Counter),
    (
        "tasks_abandoned",
        "Tasks abandoned at a shutdown deadline (also counted as cancelled).",
        MetricType::Counter,
    ),
];

impl MetricsSnapshot {
    /// The samples of family `index` (in [`FAMILIES`] order).
    fn samples(&self, index: usize) -> Vec<(Option<(&'static str, &'static str)>, Sample<'_>)> {
        let one = |s| vec![(None, s)];
        match index {
            0 => one(Sample::Gauge(self.ready_queue_depth as i64)),
            1 => one(Sample::Gauge(self.live_tasks as i64)),
            2 => one(Sample::Counter(self.spawned)),
            3 => vec![
                (Some(("outcome", "done")), Sample::Counter(self.done)),
                (Some(("outcome", "failed")), Sample::Counter(self.failed)),
                (
                    Some(("outcome", "cancelled")),
                    Sample::Counter(self.cancelled),
                ),
            ],
            4 => one(Sample::Counter(self.spawn_denied)),
            5 => one(Sample::Histogram(&self.run_latency)),
            6 => one(Sample::Histogram(&self.wait_time)),
            7 => one(Sample::Counter(self.throttles)),
            8 => one(Sample::Counter(self.backpressure_pauses)),
            9 => one(Sample::Counter(self.callback_errors)),
            10 => one(Sample::Counter(self.steps)),
            _ => one(Sample::Counter(self.abandoned)),
        }
    }
}

impl Collector for Snapshots {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for (index, (name, help, kind)) in FAMILIES.iter().enumerate() {
            let series = Series {
                samples: self
                    .0
                    .iter()
                    .flat_map(|snap| {
                        snap.samples(index)
                            .into_iter()
                            .map(move |(extra, sample)| (snap.labels.as_slice(), extra, sample))
                    })
                    .collect(),
                kind: *kind,
            };
            let metric_encoder = encoder.encode_descriptor(name, help, None, *kind)?;
            series.encode(metric_encoder)?;
        }
        Ok(())
    }
}

/// Several snapshots in one Prometheus text exposition (each family once).
pub fn to_prometheus_all(snapshots: &[MetricsSnapshot]) -> String {
    let mut registry = Registry::with_prefix(NAMESPACE);
    registry.register_collector(Box::new(Snapshots(snapshots.to_vec())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

impl fmt::Debug for Series<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Series")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_agree_with_the_published_seconds() {
        for (s, n) in LATENCY_BUCKETS.iter().zip(BUCKET_NANOS) {
            assert_eq!((s * 1e9).round() as u64, n);
        }
    }

    #[test]
    fn observations_fall_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(1_000)); // on the 1 ms bound
        h.observe(Duration::from_nanos(1_000_001));
        h.observe(Duration::from_secs(3)); // +Inf
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LATENCY_BUCKETS.len()], 1);
        assert_eq!(h.count, 3);
        assert!((h.sum - 3.002000001).abs() < 1e-9);
        // Whole seconds and nanoseconds add up: 1 s + 500 ns is past 1 s.
        h.observe(Duration::new(1, 500));
        assert_eq!(h.counts[LATENCY_BUCKETS.len() - 1], 1);
        assert_eq!(h.counts[LATENCY_BUCKETS.len() - 2], 0);
    }

    /// Every field of a snapshot appears under its own name, type and
    /// labels (each field a different value, so no two can be swapped).
    #[test]
    fn every_field_is_exposed_under_its_own_name_and_type() {
        let mut run_latency = Histogram::default();
        run_latency.observe(Duration::from_micros(2_000));
        let mut wait_time = Histogram::default();
        wait_time.observe(Duration::from_secs(3));
        wait_time.observe(Duration::from_secs(3));
        let snap = MetricsSnapshot {
            ready_queue_depth: 37,
            live_tasks: 41,
            spawned: 3,
            done: 5,
            failed: 7,
            cancelled: 11,
            abandoned: 13,
            spawn_denied: 17,
            throttles: 19,
            backpressure_pauses: 23,
            callback_errors: 29,
            steps: 31,
            run_latency,
            wait_time,
            labels: Vec::new(),
        }
        .with_label("shard", "2");
        let text = snap.to_prometheus();
        for line in [
            "# TYPE tiffany_scheduler_ready_queue_depth gauge",
            "tiffany_scheduler_ready_queue_depth{shard=\"2\"} 37",
            "# TYPE tiffany_scheduler_live_tasks gauge",
            "tiffany_scheduler_live_tasks{shard=\"2\"} 41",
            "# TYPE tiffany_tasks_spawned_total counter",
            "tiffany_tasks_spawned_total{shard=\"2\"} 3",
            "# TYPE tiffany_tasks_total counter",
            "tiffany_tasks_total{shard=\"2\",outcome=\"done\"} 5",
            "tiffany_tasks_total{shard=\"2\",outcome=\"failed\"} 7",
            "tiffany_tasks_total{shard=\"2\",outcome=\"cancelled\"} 11",
            "# TYPE tiffany_task_spawn_denied_total counter",
            "tiffany_task_spawn_denied_total{shard=\"2\"} 17",
            "# TYPE tiffany_task_run_latency_seconds histogram",
            "tiffany_task_run_latency_seconds_bucket{shard=\"2\",le=\"0.001\"} 0",
            "tiffany_task_run_latency_seconds_bucket{shard=\"2\",le=\"0.0025\"} 1",
            "tiffany_task_run_latency_seconds_sum{shard=\"2\"} 0.002",
            "tiffany_task_run_latency_seconds_count{shard=\"2\"} 1",
            "# TYPE tiffany_task_wait_time_seconds histogram",
            "tiffany_task_wait_time_seconds_bucket{shard=\"2\",le=\"2\"} 0",
            "tiffany_task_wait_time_seconds_bucket{shard=\"2\",le=\"+Inf\"} 2",
            "tiffany_task_wait_time_seconds_sum{shard=\"2\"} 6.0",
            "tiffany_task_wait_time_seconds_count{shard=\"2\"} 2",
            "# TYPE tiffany_task_budget_throttle_total counter",
            "tiffany_task_budget_throttle_total{shard=\"2\"} 19",
            "# TYPE tiffany_backpressure_pauses_total counter",
            "tiffany_backpressure_pauses_total{shard=\"2\"} 23",
            "# TYPE tiffany_callback_errors_total counter",
            "tiffany_callback_errors_total{shard=\"2\"} 29",
            "# TYPE tiffany_scheduler_steps_total counter",
            "tiffany_scheduler_steps_total{shard=\"2\"} 31",
            "# TYPE tiffany_tasks_abandoned_total counter",
            "tiffany_tasks_abandoned_total{shard=\"2\"} 13",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
