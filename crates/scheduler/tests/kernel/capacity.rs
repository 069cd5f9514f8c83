//! Capacity: at most `n` live tasks; spawns beyond are refused, not queued,
//! and ids keep increasing, never reused.

use crate::common::*;
use tiffany_scheduler::*;

#[test]
fn spawn_beyond_capacity_is_refused_with_an_event() {
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(3)
        .build()
        .unwrap();
    let log = logged(&s);
    let ids: Vec<TaskId> = (0..3)
        .map(|i| s.spawn(move |cx| cx.sleep(ms(i + 1))).unwrap())
        .collect();
    assert_denied(s.spawn(|_cx| ()), SpawnError::CapacityExceeded);
    assert_eq!(SpawnError::CapacityExceeded.reason(), "capacity");
    assert_eq!(s.live_tasks(), 3);
    let m = s.metrics();
    assert_eq!((m.spawned, m.spawn_denied), (3, 1));
    let events = log.events();
    let denied: Vec<&TaskEvent> = events
        .iter()
        .filter(|e| e.kind.name() == "spawn_denied")
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].task, None);
    assert_eq!(
        denied[0].kind,
        EventKind::SpawnDenied { reason: "capacity" }
    );
    assert!(denied[0].to_json().contains("\"reason\":\"capacity\""));

    let order = s.run();
    assert_eq!(order, ids);
    // Room again: the refused spawn did not use up an id.
    let next = s.spawn(|_cx| ()).unwrap();
    assert_eq!(next.get(), ids[2].get() + 1);
    assert!(s.prometheus().contains("task_spawn_denied_total 1\n"));
}

#[test]
fn capacity_is_per_live_task_from_tasks_and_handles_too() {
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(2)
        .build()
        .unwrap();
    let handle = s.handle();
    let parent = s
        .spawn(move |cx| {
            let first = cx.spawn(|cx| cx.sleep(ms(5))).unwrap();
            // Parent + first = 2 live: full.
            let refused = cx.spawn(|_cx| ());
            let from_handle = handle.spawn(|_cx| ());
            cx.join(first);
            // first ended: room for one more.
            let later = cx.spawn(|_cx| ());
            (refused, from_handle.err(), later.is_ok())
        })
        .unwrap();
    s.run();
    let (refused, from_handle, later) =
        value_of::<(Result<TaskId, SpawnError>, Option<SpawnError>, bool)>(&s, parent);
    assert_eq!(refused, Err(SpawnError::CapacityExceeded));
    assert_eq!(from_handle, Some(SpawnError::CapacityExceeded));
    assert!(later);
    // Only the refusal the core saw is counted: a handle refuses on its own
    // thread, from the shared counters, without reaching the scheduler.
    assert_eq!(s.metrics().spawn_denied, 1);
}

#[test]
fn cancelling_frees_capacity() {
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(1)
        .build()
        .unwrap();
    let a = s.spawn(|_cx| ()).unwrap();
    assert!(s.spawn(|_cx| ()).is_err());
    assert!(s.cancel(a));
    let b = s.spawn(|_cx| ()).unwrap();
    assert!(b > a);
    assert_eq!(s.run(), vec![b]);
}

#[test]
fn ids_keep_increasing_and_are_never_reused() {
    // No retention, so task slots are reused constantly; ids must not be.
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(4)
        .retain_finished(0)
        .build()
        .unwrap();
    let mut all = Vec::new();
    let mut refused = 0;
    for round in 0..50 {
        for _ in 0..6 {
            match s.spawn(move |cx| cx.sleep(ms(round % 3))) {
                Ok(id) => all.push(id),
                Err(SpawnError::CapacityExceeded) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        s.run();
        assert_eq!(s.task_records(), 0);
    }
    assert_eq!(all.len(), 200);
    assert_eq!(refused, 100);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "ids increase");
    // Refusals take no id: the ids are exactly 1..=200.
    assert_eq!(all.first().unwrap().get(), 1);
    assert_eq!(all.last().unwrap().get(), 200);
}

/// Issue: `admit()` let a task through while the scheduler was full, so a
/// spawn right after it failed. Now it waits for room and holds a unit of
/// capacity for the spawn that follows.
#[test]
fn a_spawn_right_after_admit_always_fits() {
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(100)
        .build()
        .unwrap();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = refused.clone();
    s.spawn(move |cx| {
        for i in 0..300u64 {
            cx.admit();
            if cx.spawn(move |cx| cx.sleep(ms(1 + i % 7))).is_err() {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    s.run();
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(s.metrics().spawned, 301);
    assert_eq!(s.metrics().spawn_denied, 0);
}

#[test]
fn an_unused_admission_is_given_back_when_the_task_waits() {
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(3)
        .build()
        .unwrap();
    // The first task is admitted (holding the last unit), then sleeps
    // without spawning: the unit goes back, and the other spawn fits.
    let t = s
        .spawn(|cx| {
            cx.admit();
            cx.sleep(ms(5));
        })
        .unwrap();
    let other = s
        .spawn(move |cx| {
            cx.sleep(ms(1));
            cx.spawn(|_| ()).is_ok()
        })
        .unwrap();
    s.run();
    assert_eq!(s.state(t), Some(TaskState::Finished));
    assert!(value_of::<bool>(&s, other));
}

/// Several producers admitted at once, throttled now and then (the
/// quantum is a few steps): every spawn right after an admit fits. (A
/// throttle at the admit itself once gave the unit back.)
#[test]
fn spawns_right_after_admit_fit_with_several_throttled_producers() {
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(100)
        .quantum(ms(1))
        .build()
        .unwrap();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..3 {
        let r = refused.clone();
        s.spawn(move |cx| {
            for i in 0..300u64 {
                cx.admit();
                if cx.spawn(move |cx| cx.sleep(ms(10 * (i % 7)))).is_err() {
                    r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
        .unwrap();
    }
    s.run();
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(s.metrics().throttles > 0, "the producers were throttled");
    assert_eq!(s.metrics().spawned, 903);
}

/// A spawn refused after it took its unit of capacity (here: for an
/// unknown dependency) gives the unit back: the next spawn fits.
#[test]
fn a_refused_spawn_gives_its_capacity_back() {
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(1)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            s.spawn_with(
                SpawnOptions::default().with_deps(&[TaskId::from_raw(9_999)]),
                |_cx| ()
            ),
            Err(SpawnError::UnknownDependency(_))
        ));
    }
    s.spawn(|_cx| ())
        .expect("the refused spawns' units were given back");
    s.run();
    assert_eq!(s.metrics().done, 1);
}

/// A task waiting at the admission gate for room is let through as soon as
/// a task ends and frees a unit: its spawn then fits. (Watermarks that never
/// pause intake: a full scheduler otherwise pauses, and the resume lets the
/// waiter through as well.)
#[test]
fn the_end_of_a_task_lets_an_admission_waiter_through() {
    let s = Scheduler::builder()
        .virtual_clock()
        .capacity(2)
        .watermarks(Watermarks {
            high: 2.0,
            low: 0.5,
            check_interval: 64,
        })
        .build()
        .unwrap();
    s.spawn(|cx| cx.sleep(ms(10))).unwrap();
    // Two live tasks fill the capacity: the admission waits for room.
    let w = s
        .spawn(|cx| {
            cx.admit();
            let admitted_at = cx.now();
            (admitted_at, cx.spawn(|_| ()).is_ok())
        })
        .unwrap();
    s.run();
    assert_eq!(
        value_of::<(std::time::Duration, bool)>(&s, w),
        (ms(10), true)
    );
}
