//! Telemetry: the exact event sequence of a small program, the PAL as JSON
//! lines, and the Prometheus text with its values.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::Value as Json;
use tiffany_scheduler::*;

/// A `Write` whose bytes the test can read after the scheduler took the writer.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A sleeper, a logger that joins it, and a yielding task at a higher priority.
fn small_program(s: &Scheduler) -> (TaskId, TaskId, TaskId) {
    let a = s
        .spawn(|cx| {
            cx.sleep(ms(10));
            1
        })
        .unwrap();
    let b = s
        .spawn(move |cx| {
            cx.log("hi");
            cx.join(a).is_success()
        })
        .unwrap();
    let c = s
        .spawn_with(SpawnOptions::priority(5), |cx| cx.yield_now())
        .unwrap();
    (a, b, c)
}

#[test]
fn exact_event_sequence_of_a_small_program() {
    let s = vsched();
    let log = logged(&s);
    let (a, b, c) = small_program(&s);
    let order = s.run();
    assert_eq!(order, vec![c, a, b]);

    let (a, b, c) = (Some(a.get()), Some(b.get()), Some(c.get()));
    let events = log.events();
    assert_eq!(
        kinds(&events),
        vec![
            (a, "spawned"),
            (b, "spawned"),
            (c, "spawned"),
            (c, "running"),
            (c, "yield"),
            (c, "running"),
            (c, "done"),
            (a, "running"),
            (a, "sleep"),
            (b, "running"),
            (b, "log"),
            (b, "join"),
            (a, "running"),
            (a, "done"),
            (b, "running"),
            (b, "done"),
        ]
    );
    // Times: everything at 0 until the sleep ends at 10 ms.
    let times: Vec<Duration> = events.iter().map(|e| e.time).collect();
    assert!(times[..12].iter().all(|t| t.is_zero()));
    assert!(times[12..].iter().all(|t| *t == ms(10)));
    // Details.
    assert_eq!(
        events[0].kind,
        EventKind::Spawned {
            priority: PRI_DEFAULT,
            name: None,
            deps: 0
        }
    );
    assert_eq!(events[8].kind, EventKind::Sleep { until: ms(10) });
    assert_eq!(
        events[10].kind,
        EventKind::Log {
            message: Arc::from("hi")
        }
    );
    assert_eq!(
        events[11].kind,
        EventKind::Join {
            target: TaskId::from_raw(a.unwrap())
        }
    );

    // The PAL of the same run, line by line.
    let pal = log.to_pal();
    let lines: Vec<&str> = pal.lines().collect();
    assert_eq!(lines.len(), 16);
    assert_eq!(
        lines[0],
        r#"{"ts":0.0,"task_id":1,"event":"spawned","priority":10}"#
    );
    assert_eq!(
        lines[8],
        r#"{"ts":0.0,"task_id":1,"event":"sleep","until":0.01}"#
    );
    assert_eq!(
        lines[10],
        r#"{"ts":0.0,"task_id":2,"event":"log","message":"hi"}"#
    );
    assert_eq!(
        lines[11],
        r#"{"ts":0.0,"task_id":2,"event":"join","target":1}"#
    );
    assert_eq!(lines[15], r#"{"ts":0.01,"task_id":2,"event":"done"}"#);
}

#[test]
fn no_events_are_built_before_someone_subscribes() {
    let s = vsched();
    let first = s.spawn(|_cx| ()).unwrap();
    s.run();
    let log = logged(&s);
    let second = s.spawn(|_cx| ()).unwrap();
    s.run();
    let events = log.events();
    assert!(events.iter().all(|e| e.task != Some(first)));
    assert_eq!(
        task_kinds(&events, second),
        vec!["spawned", "running", "done"]
    );
}

const ALL_KINDS: [&str; 16] = [
    "spawned",
    "running",
    "yield",
    "sleep",
    "io_wait",
    "join",
    "done",
    "failed",
    "cancelled",
    "throttled",
    "paused",
    "resumed",
    "spawn_denied",
    "shutdown_begin",
    "shutdown_complete",
    "log",
];

/// A virtual-clock scheduler that charges 1 ms a step, throttles a task
/// after 3 ms, and reads `pressure`: the programs below throttle and pause.
fn throttling(pressure: &Pressure) -> Scheduler {
    Scheduler::builder()
        .virtual_clock()
        .accounting(Accounting::PerStep(ms(1)))
        .quantum(ms(3))
        .backpressure(pressure.listener())
        .build()
        .unwrap()
}

/// A program that produces every kind of event; returns the PAL written by a
/// `PalWriter` and the in-memory log of the same run.
fn every_kind_of_event() -> (String, EventLog) {
    let pressure = Pressure::new(1.0);
    let s = throttling(&pressure);
    let buf = SharedBuf::default();
    s.subscribe(PalWriter::new(buf.clone()));
    let log = logged(&s);
    let (sock_r, mut sock_w) = UnixStream::pair().unwrap();
    let token = s.register_io(&sock_r).unwrap();

    let sleeper = s
        .spawn_with(SpawnOptions::default().with_name("sleeper"), |cx| {
            cx.sleep(ms(10))
        })
        .unwrap();
    s.spawn_with(SpawnOptions::default().with_deps(&[sleeper]), |cx| {
        cx.yield_now()
    })
    .unwrap();
    s.spawn(move |cx| cx.join(sleeper).is_success()).unwrap();
    s.spawn(|cx| {
        for i in 0..4 {
            cx.log(format!("busy {i}"));
        }
    })
    .unwrap();
    s.spawn(|_cx| -> () { panic!("planned failure") }).unwrap();
    s.spawn(move |cx| {
        let r = cx.io_wait_timeout(token, Interest::Readable, ms(5));
        drop(sock_r);
        r
    })
    .unwrap();
    s.spawn(|cx| cx.sleep(Duration::from_secs(3600))).unwrap();
    let p = pressure.clone();
    s.spawn_with(SpawnOptions::system(), move |cx| {
        cx.sleep(ms(15));
        p.set(0.0);
    })
    .unwrap();
    assert!(
        s.spawn_with(
            SpawnOptions::default().with_deps(&[TaskId::from_raw(777)]),
            |_cx| ()
        )
        .is_err()
    );
    assert_eq!(s.shutdown(ms(50)), ShutdownResult::Timeout);
    sock_w.flush().unwrap();
    (buf.text(), log)
}

#[test]
fn pal_lines_are_json_with_ts_task_id_and_event() {
    let (pal, log) = every_kind_of_event();
    assert_eq!(pal, log.to_pal(), "PalWriter and EventLog agree");
    let mut seen = BTreeSet::new();
    let mut last_ts = 0.0;
    for line in pal.lines() {
        let v: Json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let obj = v.as_object().unwrap();
        let ts = obj["ts"].as_f64().expect("ts is a number");
        assert!(ts >= last_ts, "virtual time never goes back: {line}");
        last_ts = ts;
        let task = &obj["task_id"];
        assert!(task.is_u64() || task.is_null(), "{line}");
        let event = obj["event"].as_str().expect("event is a string");
        assert!(ALL_KINDS.contains(&event), "unknown kind {event}");
        seen.insert(event.to_string());
        // Scheduler-wide events have no task; task events have one.
        let global = [
            "paused",
            "resumed",
            "spawn_denied",
            "shutdown_begin",
            "shutdown_complete",
        ];
        assert_eq!(task.is_null(), global.contains(&event), "{line}");
        // Each kind's details.
        let field = |k: &str| {
            obj.get(k)
                .unwrap_or_else(|| panic!("{event} without {k}: {line}"))
        };
        match event {
            "spawned" => assert!(field("priority").is_u64()),
            "sleep" => assert!(field("until").as_f64().unwrap() > ts),
            "io_wait" => {
                assert!(field("token").is_u64());
                assert_eq!(field("interest"), "readable");
            }
            "join" => assert!(field("target").is_u64()),
            "failed" => assert_eq!(field("error"), "planned failure"),
            "throttled" => assert_eq!(field("used").as_f64(), Some(0.003)),
            "paused" => assert_eq!(field("pressure").as_f64(), Some(1.0)),
            "resumed" => assert_eq!(field("pressure").as_f64(), Some(0.0)),
            "spawn_denied" => assert_eq!(field("reason"), "unknown_dependency"),
            "shutdown_begin" => assert_eq!(field("timeout").as_f64(), Some(0.05)),
            "shutdown_complete" => assert_eq!(field("clean"), false),
            "log" => assert!(field("message").as_str().unwrap().starts_with("busy")),
            _ => {}
        }
    }
    let expected: BTreeSet<String> = ALL_KINDS.iter().map(|k| k.to_string()).collect();
    assert_eq!(seen, expected, "every kind of event appears");
    assert!(pal.contains(r#""name":"sleeper""#));
    assert!(pal.contains(r#""deps":1"#));
}

/// Parses `name{labels} value` lines of the Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// A program with known counts: 4 done, 1 failed, 1 cancelled, 2 throttles,
/// 1 pause, and waits of 10, 10 and 20 ms.
fn metered_program() -> Scheduler {
    let pressure = Pressure::new(1.0);
    let s = throttling(&pressure);
    let sleeper = s.spawn(|cx| cx.sleep(ms(10))).unwrap();
    s.spawn(move |cx| cx.join(sleeper).is_success()).unwrap();
    s.spawn(|cx| {
        for _ in 0..6 {
            cx.log("busy");
        }
    })
    .unwrap();
    s.spawn(|_cx| -> () { panic!("planned failure") }).unwrap();
    let victim = s.spawn(|_cx| ()).unwrap();
    assert!(s.cancel(victim));
    let p = pressure.clone();
    s.spawn_with(SpawnOptions::system(), move |cx| {
        cx.sleep(ms(20));
        p.set(0.0);
    })
    .unwrap();
    let text = s.prometheus();
    assert_eq!(sample(&text, "tiffany_scheduler_live_tasks"), 5.0);
    s.run();
    s
}

#[test]
fn ready_queue_depth_counts_queued_tasks() {
    let s = vsched();
    for _ in 0..3 {
        s.spawn(|_cx| ()).unwrap();
    }
    s.spawn_with(
        SpawnOptions::default().with_deps(&[TaskId::from_raw(1)]),
        |_cx| (),
    )
    .unwrap();
    let text = s.prometheus();
    assert_eq!(sample(&text, "tiffany_scheduler_ready_queue_depth"), 3.0);
    assert_eq!(sample(&text, "tiffany_scheduler_live_tasks"), 4.0);
    s.run();
    assert_eq!(s.metrics().ready_queue_depth, 0);
}

#[test]
fn ready_queue_depth_excludes_cancelled_tasks() {
    let s = vsched();
    let a = s.spawn(|_cx| ()).unwrap();
    s.spawn(|_cx| ()).unwrap();
    assert!(s.cancel(a));
    assert_eq!(s.live_tasks(), 1);
    assert_eq!(s.metrics().ready_queue_depth, 1);
    assert!(
        s.prometheus()
            .contains("tiffany_scheduler_ready_queue_depth 1\n")
    );
}

#[test]
fn prometheus_text_has_the_right_values() {
    let s = metered_program();
    let m = s.metrics();
    let text = s.prometheus();
    assert_eq!(sample(&text, "tiffany_scheduler_ready_queue_depth"), 0.0);
    assert_eq!(sample(&text, "tiffany_scheduler_live_tasks"), 0.0);
    assert_eq!(sample(&text, "tiffany_tasks_spawned_total"), 6.0);
    assert!(text.contains("tiffany_tasks_total{outcome=\"done\"} 4\n"));
    assert!(text.contains("tiffany_tasks_total{outcome=\"failed\"} 1\n"));
    assert!(text.contains("tiffany_tasks_total{outcome=\"cancelled\"} 1\n"));
    assert!(text.contains("tiffany_task_budget_throttle_total 2\n"));
    assert!(text.contains("tiffany_backpressure_pauses_total 1\n"));
    assert!(text.contains("tiffany_task_spawn_denied_total 0\n"));
    assert!(text.contains("tiffany_callback_errors_total 0\n"));
    assert_eq!(
        sample(&text, "tiffany_scheduler_steps_total"),
        m.steps as f64
    );
    assert!(text.contains("# TYPE tiffany_task_run_latency_seconds histogram"));
    assert!(text.contains("# TYPE tiffany_task_wait_time_seconds histogram"));

    // Run latency: one observation per resume from the queue, all zero on
    // the virtual clock, so all of them in the first bucket.
    let resumes = m.run_latency.count;
    assert!(resumes >= 8);
    assert_eq!(m.run_latency.counts[0], resumes);
    assert_eq!(
        sample(&text, "tiffany_task_run_latency_seconds_count"),
        resumes as f64
    );
    assert_eq!(sample(&text, "tiffany_task_run_latency_seconds_sum"), 0.0);
    assert_eq!(
        sample(
            &text,
            "tiffany_task_run_latency_seconds_bucket{le=\"0.001\"}"
        ),
        resumes as f64
    );
    // Wait time: the sleeper and the joiner 10 ms, the controller 20 ms.
    assert_eq!(m.wait_time.count, 3);
    assert!((m.wait_time.sum - 0.04).abs() < 1e-12);
    assert_eq!(sample(&text, "tiffany_task_wait_time_seconds_count"), 3.0);
    assert!((sample(&text, "tiffany_task_wait_time_seconds_sum") - 0.04).abs() < 1e-12);
    assert_eq!(
        sample(&text, "tiffany_task_wait_time_seconds_bucket{le=\"0.001\"}"),
        0.0
    );
    assert_eq!(
        sample(&text, "tiffany_task_wait_time_seconds_bucket{le=\"0.005\"}"),
        0.0
    );
    assert_eq!(
        sample(&text, "tiffany_task_wait_time_seconds_bucket{le=\"0.01\"}"),
        2.0
    );

    // The snapshot's own numbers.
    assert_eq!((m.spawned, m.done, m.failed, m.cancelled), (6, 4, 1, 1));
    assert_eq!((m.throttles, m.backpressure_pauses), (2, 1));
    assert_eq!(m.ready_queue_depth, 0);
}

#[test]
fn prometheus_histogram_buckets_are_cumulative_once() {
    let s = metered_program();
    let m = s.metrics();
    let text = s.prometheus();
    let resumes = m.run_latency.count as f64;
    // Every bucket holds all resumes (all were 0 s), and +Inf equals _count.
    for le in ["0.001", "0.0025", "0.01", "1", "2", "+Inf"] {
        assert_eq!(
            sample(
                &text,
                &format!("tiffany_task_run_latency_seconds_bucket{{le=\"{le}\"}}")
            ),
            resumes,
            "le={le}"
        );
    }
    assert_eq!(
        sample(&text, "tiffany_task_wait_time_seconds_bucket{le=\"0.025\"}"),
        3.0
    );
    assert_eq!(
        sample(&text, "tiffany_task_wait_time_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
}

#[test]
fn labels_are_added_to_every_series() {
    let s = vsched();
    s.spawn(|_cx| ()).unwrap();
    s.run();
    let text = s.metrics().with_label("shard", "3").to_prometheus();
    assert!(
        text.contains("tiffany_tasks_total{shard=\"3\",outcome=\"done\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("tiffany_scheduler_ready_queue_depth{shard=\"3\"} 0\n"),
        "{text}"
    );
}

/// Records what a batching subscriber is handed: batches and idle calls.
struct Batcher {
    size: usize,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

#[derive(Debug, PartialEq)]
enum Delivery {
    Batch(Vec<TaskEvent>),
    Idle,
}

impl EventSubscriber for Batcher {
    fn on_event(&mut self, _: &TaskEvent) {
        unreachable!("on_events is overridden");
    }
    fn on_events(&mut self, events: &[TaskEvent]) {
        self.seen
            .lock()
            .unwrap()
            .push(Delivery::Batch(events.to_vec()));
    }
    fn max_batch(&self) -> usize {
        self.size
    }
    fn on_idle(&mut self) {
        self.seen.lock().unwrap().push(Delivery::Idle);
    }
}

/// 8 tasks × 5 yields, then each sleeps a different time and ends.
fn yield_then_sleep(s: &Scheduler) {
    for i in 0..8u64 {
        s.spawn(move |cx| {
            for _ in 0..5 {
                cx.yield_now();
            }
            cx.sleep(ms(10 + i));
        })
        .unwrap();
    }
}

#[test]
fn batching_subscriber_gets_every_event_in_order_in_batches_and_before_each_wait() {
    // The same program twice under the virtual clock: once with a per-step
    // subscriber, once with a batching one alone (with several subscribers
    // the smallest batch wins).
    let reference = vsched();
    let every = logged(&reference);
    yield_then_sleep(&reference);
    reference.run();

    let s = vsched();
    let seen = Arc::new(Mutex::new(Vec::new()));
    s.subscribe(Batcher {
        size: 16,
        seen: seen.clone(),
    });
    yield_then_sleep(&s);
    s.run();
    let seen = seen.lock().unwrap();
    let batches: Vec<&Vec<TaskEvent>> = seen
        .iter()
        .filter_map(|d| match d {
            Delivery::Batch(b) => Some(b),
            Delivery::Idle => None,
        })
        .collect();
    // Nothing lost, nothing reordered.
    let flat: Vec<TaskEvent> = batches.iter().flat_map(|b| b.iter().cloned()).collect();
    assert_eq!(flat, every.events());
    // Batched: at least 16 events per hand-over, except just before a wait.
    for (i, d) in seen.iter().enumerate() {
        if let Delivery::Batch(b) = d {
            assert!(!b.is_empty());
            if seen.get(i + 1) != Some(&Delivery::Idle) {
                assert!(b.len() >= 16, "a batch of {} before more work", b.len());
            }
        }
    }
    assert!(batches.len() < flat.len() / 4, "{} batches", batches.len());
    // Handed over before every wait: the virtual clock only moves while the
    // scheduler waits, so no batch holds events of two different times.
    for b in &batches {
        assert!(b.iter().all(|e| e.time == b[0].time), "{b:?}");
    }
    // The run ends with an idle call, after the last batch.
    assert_eq!(seen.last(), Some(&Delivery::Idle));
    assert!(seen.iter().filter(|d| **d == Delivery::Idle).count() >= 9);
}

#[test]
fn a_lone_yielder_fills_batches_no_further_than_their_size() {
    // A yield done in place (nothing else ready) adds two events without
    // leaving the task; it must leave the handing over of a full batch to
    // the loop, between steps, as a yield the long way does.
    let s = vsched();
    let seen = Arc::new(Mutex::new(Vec::new()));
    s.subscribe(Batcher {
        size: 8,
        seen: seen.clone(),
    });
    let a = s
        .spawn(|cx| {
            for _ in 0..10 {
                cx.yield_now();
            }
        })
        .unwrap();
    s.run();
    let deliveries = std::mem::take(&mut *seen.lock().unwrap());
    let mut names = Vec::new();
    let mut sizes = Vec::new();
    for d in &deliveries {
        if let Delivery::Batch(events) = d {
            sizes.push(events.len());
            names.extend(events.iter().map(|e| {
                assert_eq!(e.task, Some(a));
                e.kind.name()
            }));
        }
    }
    let mut expected = vec!["spawned", "running"];
    for _ in 0..10 {
        expected.extend(["yield", "running"]);
    }
    expected.push("done");
    assert_eq!(names, expected);
    assert!(sizes.iter().all(|n| *n <= 8), "batch sizes {sizes:?}");
    // Full batches are handed over as they fill, not at the end.
    assert!(sizes.len() >= 3, "batch sizes {sizes:?}");
}

/// `steps` counts every resume of a task: a call answered at once resumes
/// the task again within its run, and counts as one.
#[test]
fn a_call_answered_at_once_counts_as_a_step() {
    let s = vsched();
    let ev = s.new_event();
    s.spawn(move |cx| {
        for _ in 0..5 {
            cx.event_set(ev);
        }
    })
    .unwrap();
    s.run();
    // The first resume and five answered sets.
    assert_eq!(s.metrics().steps, 6);
}
