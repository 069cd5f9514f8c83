//! The builder's settings: each one takes effect, and setting one keeps the
//! ones set before it (a chain of setters is one configuration).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

type Setter = Box<dyn FnOnce(Builder) -> Builder>;

/// Every setter, with a value other than its default.
fn every_setter() -> Vec<(&'static str, Setter)> {
    vec![
        ("virtual_clock", Box::new(|b: Builder| b.virtual_clock())),
        ("quantum", Box::new(|b: Builder| b.quantum(ms(7)))),
        (
            "accounting",
            Box::new(|b: Builder| b.accounting(Accounting::PerStep(Duration::from_micros(3)))),
        ),
        (
            "backpressure",
            Box::new(|b: Builder| b.backpressure(|| 0.0)),
        ),
        (
            "watermarks",
            Box::new(|b: Builder| {
                b.watermarks(Watermarks {
                    high: 0.9,
                    low: 0.1,
                    check_interval: 5,
                })
            }),
        ),
        (
            "maintenance_interval",
            Box::new(|b: Builder| b.maintenance_interval(3)),
        ),
        (
            "io_poll_interval",
            Box::new(|b: Builder| b.io_poll_interval(ms(1))),
        ),
        ("stack_size", Box::new(|b: Builder| b.stack_size(64 * 1024))),
        (
            "retain_finished",
            Box::new(|b: Builder| b.retain_finished(9)),
        ),
        (
            "timing_metrics",
            Box::new(|b: Builder| b.timing_metrics(false)),
        ),
        (
            "blocking_wrapper",
            Box::new(|b: Builder| b.blocking_wrapper(Box::new(|wait| wait()))),
        ),
        (
            "interrupt_check",
            Box::new(|b: Builder| b.interrupt_check(Box::new(|| None))),
        ),
        (
            "on_unobserved_failure",
            Box::new(|b: Builder| b.on_unobserved_failure(Box::new(|_, _| {}))),
        ),
        (
            "on_deadlock",
            Box::new(|b: Builder| b.on_deadlock(Box::new(|_| {}))),
        ),
    ]
}

/// A capacity of one set first survives every other setter: a second spawn
/// is refused.
#[test]
fn each_setter_keeps_the_settings_made_before_it() {
    for (name, set) in every_setter() {
        let s = set(Scheduler::builder().capacity(1)).build().unwrap();
        s.spawn(|_| ()).unwrap();
        assert!(
            matches!(s.spawn(|_| ()), Err(SpawnError::CapacityExceeded)),
            "`{name}` dropped the capacity set before it"
        );
    }
}

/// A native task that needs far more than the default 32 KiB of stack runs
/// on a scheduler built with a larger stack size.
#[test]
fn stack_size_sets_the_stack_of_native_tasks() {
    fn deep(n: u32) -> u64 {
        // 4 KiB of locals a frame, kept alive across the recursion.
        let frame = std::hint::black_box([n as u8; 4096]);
        if n == 0 {
            return frame[0] as u64;
        }
        deep(n - 1) + frame[4095] as u64
    }
    let s = Scheduler::builder()
        .virtual_clock()
        .stack_size(1024 * 1024)
        .build()
        .unwrap();
    // About 256 KiB of frames: eight times the default stack.
    let t = s.spawn(|_| deep(64)).unwrap();
    s.run();
    assert_eq!(value_of::<u64>(&s, t), (1..=64u64).sum::<u64>());
}

fn run_latency_count(s: &Scheduler) -> u64 {
    let text = s.prometheus();
    let line = text
        .lines()
        .find(|l| l.starts_with("tiffany_task_run_latency_seconds_count"))
        .unwrap_or_else(|| panic!("no run latency histogram in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// With timing metrics off the latency histograms stay empty; on (the
/// default) they count every run.
#[test]
fn timing_metrics_off_leaves_the_histograms_empty() {
    for on in [true, false] {
        let s = Scheduler::builder()
            .virtual_clock()
            .timing_metrics(on)
            .build()
            .unwrap();
        for _ in 0..3 {
            s.spawn(|cx| cx.sleep(ms(1))).unwrap();
        }
        s.run();
        let count = run_latency_count(&s);
        if on {
            assert!(count >= 6, "{count} runs timed with timing metrics on");
        } else {
            assert_eq!(count, 0, "runs timed with timing metrics off");
        }
    }
}

/// The interrupt check runs after each blocking wait; once it asks for a
/// shutdown, the tasks left are cancelled and the run ends.
#[test]
fn interrupt_check_can_end_a_run() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let s = Scheduler::builder()
        .interrupt_check(Box::new(move || {
            // The third look asks for a shutdown with no grace.
            (c.fetch_add(1, Ordering::SeqCst) == 2).then_some(Duration::ZERO)
        }))
        .build()
        .unwrap();
    let t = s
        .spawn(|cx| {
            // Bounded: a kernel that ignores the check ends the test anyway.
            for _ in 0..1_000 {
                cx.sleep(Duration::from_micros(100));
            }
        })
        .unwrap();
    s.run();
    assert!(matches!(s.outcome(t), Some(Outcome::Cancelled)));
    assert!(calls.load(Ordering::SeqCst) >= 3);
}

/// A failure nobody waits for reaches the `on_unobserved_failure` report,
/// with the task's id and its error; a joined failure does not.
#[test]
fn unobserved_failures_are_reported() {
    let reported = Trace::new();
    let r = reported.clone();
    let s = Scheduler::builder()
        .virtual_clock()
        .on_unobserved_failure(Box::new(move |id, error| {
            r.push((id, error.to_string()));
        }))
        .build()
        .unwrap();
    let lost = s
        .spawn(|cx| -> u32 {
            cx.sleep(ms(1));
            panic!("nobody is listening")
        })
        .unwrap();
    let joined = s
        .spawn(|cx| -> u32 {
            cx.sleep(ms(2));
            panic!("somebody is listening")
        })
        .unwrap();
    s.spawn(move |cx| {
        let _ = cx.join(joined);
    })
    .unwrap();
    s.run();
    let reported = reported.get();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].0, lost);
    assert!(
        reported[0].1.contains("nobody is listening"),
        "{reported:?}"
    );
}

/// `observe` marks an outcome as received (a binding's `result()`) and says
/// whether it already was: once by itself, at once for a joined task, and
/// always for an id the scheduler does not know.
#[test]
fn observe_answers_whether_the_outcome_was_already_received() {
    let s = vsched();
    let alone = s.spawn(|cx| cx.sleep(ms(1))).unwrap();
    let joined = s.spawn(|cx| cx.sleep(ms(1))).unwrap();
    s.spawn(move |cx| {
        let _ = cx.join(joined);
    })
    .unwrap();
    assert!(s.retain(alone));
    assert!(s.retain(joined));
    s.run();
    assert!(!s.observe(alone), "nobody had received it");
    assert!(s.observe(alone), "received by the first observe");
    assert!(s.observe(joined), "received by its joiner");
    assert!(s.observe(TaskId::from_raw(9_999)));
}

/// Whether a reader woken by a pipe while a busy task keeps yielding runs
/// before that task ends, with the maintenance pass off (an interval no run
/// reaches) and I/O polled every `io_poll_interval`. The quantum is an hour:
/// on a loaded machine a throttled busy task would leave the loop idle, and
/// an idle loop polls I/O whatever the interval.
#[cfg(feature = "async-io")]
fn reader_runs_while_busy(io_poll_interval: Duration) -> bool {
    use std::io::{Read, Write};
    let s = Scheduler::builder()
        .maintenance_interval(u32::MAX)
        .io_poll_interval(io_poll_interval)
        .quantum(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (mut pipe_r, mut pipe_w) = std::io::pipe().unwrap();
    let token = s.register_io(&pipe_r).unwrap();
    let woke = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicBool::new(false));
    let w = woke.clone();
    s.spawn_with(SpawnOptions::priority(1), move |cx| {
        cx.io_wait(token, Interest::Readable).unwrap();
        let mut buf = [0u8; 2];
        pipe_r.read_exact(&mut buf).unwrap();
        w.store(true, Ordering::SeqCst);
    })
    .unwrap();
    let (w, wr) = (woke.clone(), written.clone());
    // The pipe is written only once the busy task runs: a write before the
    // run would be seen by the poll the run starts with, whatever the
    // interval.
    let (running_tx, running_rx) = std::sync::mpsc::channel::<()>();
    let busy = s
        .spawn_with(SpawnOptions::priority(200), move |cx| {
            cx.yield_now();
            let _ = running_tx.send(());
            // Yield until the pipe was written (at most WATCHDOG), then as
            // long again as it took to get there, at least 100 ms: time
            // enough for a poll every few milliseconds to see it.
            let started = std::time::Instant::now();
            while !wr.load(Ordering::SeqCst) && started.elapsed() < WATCHDOG {
                cx.yield_now();
            }
            let until = started.elapsed().max(ms(100)) * 2;
            while started.elapsed() < until {
                if w.load(Ordering::SeqCst) {
                    return true;
                }
                cx.yield_now();
            }
            false
        })
        .unwrap();
    let writer = std::thread::spawn(move || {
        // Bounded: if the busy task never reports, the write still happens
        // and the assertion on the result fails rather than the test hanging.
        let _ = running_rx.recv_timeout(WATCHDOG);
        pipe_w.write_all(b"hi").unwrap();
        written.store(true, Ordering::SeqCst);
    });
    s.run();
    writer.join().unwrap();
    assert!(is_set(&woke), "the reader never woke");
    value_of::<bool>(&s, busy)
}

/// The time-based I/O poll follows `io_poll_interval`: every millisecond it
/// wakes the reader while the busy task runs; once an hour it does not.
#[cfg(feature = "async-io")]
#[test]
fn io_poll_interval_sets_how_often_io_is_polled_while_busy() {
    assert!(reader_runs_while_busy(ms(1)));
    assert!(!reader_runs_while_busy(Duration::from_secs(3600)));
}

/// Whether a high-priority sleeper wakes before a busy task that yields
/// until it does (at most a million times), on the real clock with
/// per-step accounting and no timing: nothing reads the clock between two
/// maintenance passes, so only they can see the timer due.
fn sleeper_wakes_while_busy(maintenance_interval: u32) -> bool {
    let s = Scheduler::builder()
        .accounting(Accounting::PerStep(Duration::from_micros(1)))
        .timing_metrics(false)
        .maintenance_interval(maintenance_interval)
        .build()
        .unwrap();
    let woke = Arc::new(AtomicBool::new(false));
    let w = woke.clone();
    s.spawn_with(SpawnOptions::priority(1), move |cx| {
        cx.sleep(ms(1));
        w.store(true, Ordering::SeqCst);
    })
    .unwrap();
    let w = woke.clone();
    let busy = s
        .spawn_with(SpawnOptions::priority(200), move |cx| {
            for _ in 0..1_000_000 {
                if w.load(Ordering::SeqCst) {
                    return true;
                }
                cx.yield_now();
            }
            false
        })
        .unwrap();
    s.run();
    assert!(is_set(&woke));
    value_of::<bool>(&s, busy)
}

/// The maintenance pass looks at the timers every `maintenance_interval`
/// passes: every pass, the sleeper preempts the busy task (a million yields
/// take far longer than a millisecond); never, it waits for it to end.
#[test]
fn maintenance_interval_sets_how_often_timers_are_seen_while_busy() {
    assert!(sleeper_wakes_while_busy(1));
    assert!(!sleeper_wakes_while_busy(u32::MAX));
}
