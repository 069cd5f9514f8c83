//! Back-pressure: at the high watermark intake pauses (admission waits, I/O
//! wake-ups are held), below the low watermark it resumes. System tasks are
//! never held.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

fn with_listener(p: &Pressure) -> Scheduler {
    Scheduler::builder()
        .virtual_clock()
        .backpressure(p.listener())
        .build()
        .unwrap()
}

/// Spawns a task that sleeps 1 ms (so the scheduler goes idle once and
/// reads the pressure), passes the admission gate and returns the time it
/// passed.
fn spawn_admission(s: &Scheduler) -> TaskId {
    s.spawn(|cx| {
        cx.sleep(ms(1));
        cx.admit();
        cx.now()
    })
    .unwrap()
}

#[test]
fn admission_waits_while_paused_and_proceeds_after_resume() {
    // Bounded: a system task held at the gate leaves every producer
    // waiting under a pressure nobody lowers (the test fails, not hangs).
    within(Duration::from_secs(10), || {
        let pressure = Pressure::new(1.0);
        let s = with_listener(&pressure);
        let log = logged(&s);
        let admitted = Trace::new();
        let mut producers = Vec::new();
        for name in ["p1", "p2"] {
            let a = admitted.clone();
            producers.push(
                s.spawn(move |cx| {
                    // Let the scheduler go idle once, so it reads the pressure.
                    cx.sleep(ms(1));
                    cx.admit();
                    a.push((name, cx.now()));
                })
                .unwrap(),
            );
        }
        let a = admitted.clone();
        let p = pressure.clone();
        s.spawn_with(SpawnOptions::system(), move |cx| {
            cx.sleep(ms(2));
            // A system task passes the gate while intake is paused.
            cx.admit();
            a.push(("system", cx.now()));
            cx.sleep(ms(3));
            p.set(0.0);
        })
        .unwrap();

        s.run();

        assert_eq!(
            admitted.get(),
            vec![("system", ms(2)), ("p1", ms(5)), ("p2", ms(5))]
        );
        let events = log.events();
        assert_eq!(global_kinds(&events), vec!["paused", "resumed"]);
        let paused = events.iter().find(|e| e.kind.name() == "paused").unwrap();
        assert_eq!(paused.kind, EventKind::Paused { pressure: 1.0 });
        assert_eq!(paused.time, Duration::ZERO);
        let resumed = events.iter().find(|e| e.kind.name() == "resumed").unwrap();
        assert_eq!(resumed.kind, EventKind::Resumed { pressure: 0.0 });
        assert_eq!(resumed.time, ms(5));
        for p in producers {
            // Each producer blocked at the gate once (its wait: sleep + admission).
            assert_eq!(count_kind(&events, p, "running"), 3);
        }
        assert_eq!(s.metrics().backpressure_pauses, 1);
        assert!(
            s.prometheus()
                .contains("tiffany_backpressure_pauses_total 1\n")
        );
        assert!(!s.is_paused());
        assert_eq!(s.pressure(), 0.0);
    });
}

#[test]
fn admit_passes_when_not_paused() {
    within(Duration::from_secs(10), || {
        let pressure = Pressure::new(0.2);
        let s = with_listener(&pressure);
        let log = logged(&s);
        let t = spawn_admission(&s);
        s.run();
        assert_eq!(value_of::<Duration>(&s, t), ms(1));
        assert!(global_kinds(&log.events()).is_empty());
        assert_eq!(s.metrics().backpressure_pauses, 0);
    });
}

/// A reader (spawned with `reader`) waits on a socket; a writer task writes
/// at 1 ms; a system task sets the pressure to 0 at 5 ms. Returns when the
/// reader woke, the events not tied to a task, and the pauses counted.
fn io_wake(initial: f64, reader: SpawnOptions) -> (Duration, Vec<&'static str>, u64) {
    let pressure = Pressure::new(initial);
    let s = with_listener(&pressure);
    let log = logged(&s);
    let (sock_r, sock_w) = UnixStream::pair().unwrap();
    let token = s.register_io(&sock_r).unwrap();
    let reader = s
        .spawn_with(reader, move |cx| {
            cx.io_wait(token, Interest::Readable).unwrap();
            drop(sock_r);
            cx.now()
        })
        .unwrap();
    spawn_writer(&s, token, ms(1), sock_w, b"x");
    let p = pressure.clone();
    s.spawn_with(SpawnOptions::system(), move |cx| {
        cx.sleep(ms(5));
        p.set(0.0);
    })
    .unwrap();
    s.run();
    (
        value_of::<Duration>(&s, reader),
        global_kinds(&log.events()),
        s.metrics().backpressure_pauses,
    )
}

#[test]
fn io_wakeups_are_held_while_paused() {
    within(Duration::from_secs(10), || {
        assert_eq!(
            io_wake(1.0, SpawnOptions::default()),
            (ms(5), vec!["paused", "resumed"], 1)
        );
    });
}

#[test]
fn io_wakeups_run_at_once_when_not_paused() {
    within(Duration::from_secs(10), || {
        assert_eq!(io_wake(0.0, SpawnOptions::default()), (ms(1), vec![], 0));
    });
}

#[test]
fn system_tasks_woken_by_io_are_not_held() {
    within(Duration::from_secs(10), || {
        assert_eq!(
            io_wake(1.0, SpawnOptions::system()),
            (ms(1), vec!["paused", "resumed"], 1)
        );
    });
}

/// Two readers woken by I/O while paused are both held; cancelling one of
/// them takes only its own entry out of the held queue, so the other still
/// runs when intake resumes.
#[test]
fn cancelling_one_held_task_leaves_the_others_held() {
    within(Duration::from_secs(10), || {
        let pressure = Pressure::new(1.0);
        let s = with_listener(&pressure);
        let mut readers = Vec::new();
        for _ in 0..2 {
            let (sock_r, sock_w) = UnixStream::pair().unwrap();
            let token = s.register_io(&sock_r).unwrap();
            readers.push(
                s.spawn(move |cx| {
                    cx.io_wait(token, Interest::Readable).unwrap();
                    drop(sock_r);
                    cx.now()
                })
                .unwrap(),
            );
            spawn_writer(&s, token, ms(1), sock_w, b"x");
        }
        let (first, second) = (readers[0], readers[1]);
        let p = pressure.clone();
        s.spawn_with(SpawnOptions::system(), move |cx| {
            cx.sleep(ms(2));
            assert!(cx.cancel(first));
            cx.sleep(ms(3));
            p.set(0.0);
        })
        .unwrap();
        s.run();
        assert_eq!(s.state(first), Some(TaskState::Cancelled));
        assert_eq!(value_of::<Duration>(&s, second), ms(5));
    });
}

#[test]
fn watermark_gap_prevents_flapping() {
    within(Duration::from_secs(10), || {
        let pressure = Pressure::new(1.0);
        let s = with_listener(&pressure);
        let log = logged(&s);
        let t = spawn_admission(&s);
        let p = pressure.clone();
        s.spawn_with(SpawnOptions::system(), move |cx| {
            cx.sleep(ms(2));
            p.set(0.6); // below high, not below low: stays paused
            cx.sleep(ms(2));
            p.set(0.9);
            cx.sleep(ms(2));
            p.set(0.4); // below low: resumes
        })
        .unwrap();
        s.run();
        assert_eq!(value_of::<Duration>(&s, t), ms(6));
        assert_eq!(global_kinds(&log.events()), vec!["paused", "resumed"]);
        assert_eq!(s.metrics().backpressure_pauses, 1);
        assert_eq!(s.pressure(), 0.4);
    });
}

#[test]
fn repeated_pauses_are_counted() {
    within(Duration::from_secs(10), || {
        let pressure = Pressure::new(0.0);
        let s = with_listener(&pressure);
        let log = logged(&s);
        let p = pressure.clone();
        s.spawn(move |cx| {
            for _ in 0..3 {
                p.set(0.95);
                cx.sleep(ms(1));
                p.set(0.1);
                cx.sleep(ms(1));
            }
        })
        .unwrap();
        s.run();
        assert_eq!(s.metrics().backpressure_pauses, 3);
        assert_eq!(
            global_kinds(&log.events()),
            vec![
                "paused", "resumed", "paused", "resumed", "paused", "resumed"
            ]
        );
    });
}

#[test]
fn listener_can_be_set_later_and_out_of_range_values_are_clamped() {
    within(Duration::from_secs(10), || {
        let s = vsched();
        let pressure = Pressure::new(7.5);
        s.set_backpressure_listener(pressure.listener());
        let t = spawn_admission(&s);
        let p = pressure.clone();
        s.spawn_with(SpawnOptions::system(), move |cx| {
            cx.sleep(ms(3));
            p.set(f64::NAN); // reads as 0
        })
        .unwrap();
        let log = logged(&s);
        s.run();
        assert_eq!(value_of::<Duration>(&s, t), ms(3));
        let kinds = global_events(&log.events());
        assert_eq!(
            kinds,
            vec![
                EventKind::Paused { pressure: 1.0 },
                EventKind::Resumed { pressure: 0.0 }
            ]
        );
    });
}

#[test]
fn cancelling_a_task_waiting_for_admission() {
    within(Duration::from_secs(10), || {
        let pressure = Pressure::new(1.0);
        let s = with_listener(&pressure);
        let (dropped, guard) = drop_flag();
        let waiter = s
            .spawn(move |cx| {
                let _guard = guard;
                cx.sleep(ms(1));
                cx.admit();
                "admitted"
            })
            .unwrap();
        s.spawn_with(SpawnOptions::system(), move |cx| {
            cx.sleep(ms(2));
            cx.cancel(waiter)
        })
        .unwrap();
        s.run();
        assert_eq!(s.state(waiter), Some(TaskState::Cancelled));
        assert!(is_set(&dropped));
        assert!(s.is_paused(), "still paused: nobody lowered the pressure");
        assert_eq!(s.now(), ms(2));
    });
}

#[test]
fn pressure_is_read_every_check_interval_steps() {
    within(Duration::from_secs(10), || {
        let pressure = Pressure::new(0.0);
        let s = Scheduler::builder()
            .virtual_clock()
            .backpressure(pressure.listener())
            .watermarks(Watermarks {
                high: 0.8,
                low: 0.5,
                check_interval: 1,
            })
            .build()
            .unwrap();
        let trace = Trace::new();
        let (t, p) = (trace.clone(), pressure.clone());
        s.spawn(move |cx| {
            p.set(1.0);
            t.push("raised");
            for _ in 0..3 {
                cx.yield_now();
            }
            p.set(0.0);
            t.push("lowered");
        })
        .unwrap();
        let t = trace.clone();
        s.spawn(move |cx| {
            // Two full turns after the pressure rose: it has been read by now.
            cx.yield_now();
            cx.yield_now();
            cx.admit();
            t.push("admitted");
        })
        .unwrap();
        s.run();
        assert_eq!(trace.get(), vec!["raised", "lowered", "admitted"]);
        assert_eq!(s.metrics().backpressure_pauses, 1);
    });
}

/// The scheduler's own load (live tasks over capacity) is part of the
/// pressure, even when the listener reads nothing (planted bug: own load
/// left out).
#[test]
fn the_schedulers_own_load_counts_in_the_pressure() {
    within(Duration::from_secs(10), || {
        let p = Pressure::new(0.0);
        let s = Scheduler::builder()
            .virtual_clock()
            .capacity(10)
            .backpressure(p.listener())
            .watermarks(Watermarks {
                check_interval: 1,
                ..Watermarks::default()
            })
            .build()
            .unwrap();
        let log = logged(&s);
        for _ in 0..10 {
            s.spawn(|cx| cx.sleep(ms(5))).unwrap();
        }
        s.run();
        let paused: Vec<f64> = log
            .events()
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Paused { pressure } => Some(pressure),
                _ => None,
            })
            .collect();
        assert!(
            paused.first().is_some_and(|&p| p >= 0.9),
            "no pause at 10 of 10 live: {paused:?}"
        );
        assert!(s.metrics().backpressure_pauses >= 1);
    });
}
