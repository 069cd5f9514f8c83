//! Cancellation: a parent cancels its child, the child unwinds (destructors
//! run), joiners see `Cancelled`, and the parent carries on.

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn parent_cancels_child_destructor_runs_parent_completes() {
    let s = vsched();
    let log = logged(&s);
    let (dropped, guard) = drop_flag();
    let ids = Trace::new();
    let ids2 = ids.clone();
    let parent = s
        .spawn(move |cx| {
            let child = child(cx, move |cx| {
                let _guard = guard;
                cx.sleep(HOUR);
                "child finished its sleep"
            });
            ids2.push(child);
            // Let the child start and block in its sleep.
            cx.sleep(ms(1));
            let was_live = cx.cancel(child);
            let joined = cx.join(child);
            (
                was_live,
                matches!(joined, JoinResult::Cancelled),
                is_set(&dropped),
                cx.now(),
            )
        })
        .unwrap();

    let order = s.run();
    let child = ids.get()[0];
    assert_eq!(
        value_of::<(bool, bool, bool, Duration)>(&s, parent),
        (true, true, true, ms(1)),
        "(cancel answered live, join answered Cancelled, destructor ran before the join returned, time)"
    );
    assert_eq!(order, vec![child, parent]);
    assert_eq!(s.state(child), Some(TaskState::Cancelled));
    assert_eq!(s.state(parent), Some(TaskState::Finished));
    assert!(matches!(s.outcome(child), Some(Outcome::Cancelled)));
    assert!(s.value(child).is_none());
    // The hour-long sleep was cut short.
    assert_eq!(s.now(), ms(1));
    assert_eq!(
        task_kinds(&log.events(), child),
        vec!["spawned", "running", "sleep", "running", "cancelled"]
    );
    let m = s.metrics();
    assert_eq!((m.done, m.cancelled, m.failed), (1, 1, 0));
}

#[test]
fn every_joiner_of_a_cancelled_task_gets_cancelled() {
    let s = vsched();
    let target = s.spawn(|cx| cx.sleep(HOUR)).unwrap();
    let mut joiners = Vec::new();
    for _ in 0..3 {
        joiners.push(
            s.spawn(move |cx| matches!(cx.join(target), JoinResult::Cancelled))
                .unwrap(),
        );
    }
    let with_timeout = s
        .spawn(move |cx| matches!(cx.join_timeout(target, HOUR * 2), JoinResult::Cancelled))
        .unwrap();
    s.spawn(move |cx| {
        cx.sleep(ms(3));
        assert!(cx.cancel(target));
    })
    .unwrap();
    s.run();
    for j in joiners.into_iter().chain([with_timeout]) {
        assert!(value_of::<bool>(&s, j), "joiner {j} did not get Cancelled");
    }
    assert_eq!(s.now(), ms(3));
}

#[test]
fn cancel_answers_whether_the_task_was_live() {
    let s = vsched();
    let quick = s.spawn(|_cx| ()).unwrap();
    let t = s
        .spawn(move |cx| {
            let finished = cx.cancel(quick);
            let unknown = cx.cancel(TaskId::from_raw(9_999));
            (finished, unknown)
        })
        .unwrap();
    s.run();
    assert_eq!(value_of::<(bool, bool)>(&s, t), (false, false));
    assert!(!s.cancel(quick));
    assert!(!s.cancel(TaskId::from_raw(9_999)));
    assert_eq!(s.state(quick), Some(TaskState::Finished));
}

#[test]
fn cancellation_is_level_triggered_cleanup_runs_but_never_blocks() {
    // The child catches the cancellation unwind, does non-blocking clean-up,
    // then tries to sleep again: that sleep is cancelled at once.
    let s = vsched();
    let log = logged(&s);
    let trace = Trace::new();
    let tr = trace.clone();
    let victim = s
        .spawn(move |cx| {
            let caught = panic::catch_unwind(AssertUnwindSafe(|| cx.sleep(HOUR)));
            tr.push(format!("caught: {}", caught.is_err()));
            cx.log("cleaning up");
            tr.push(format!("cleanup at {:?}", cx.now()));
            cx.sleep(HOUR);
            tr.push("slept after cancel".to_string());
        })
        .unwrap();
    s.spawn(move |cx| {
        cx.sleep(ms(2));
        cx.cancel(victim)
    })
    .unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec!["caught: true".to_string(), "cleanup at 2ms".to_string()]
    );
    assert_eq!(s.state(victim), Some(TaskState::Cancelled));
    assert_eq!(s.now(), ms(2));
    let events = log.events();
    assert_eq!(count_kind(&events, victim, "log"), 1);
    assert_eq!(
        count_kind(&events, victim, "sleep"),
        1,
        "the second sleep never blocked"
    );
}

#[test]
fn cancel_a_task_blocked_in_join() {
    let s = vsched();
    let (dropped, guard) = drop_flag();
    let slow = s.spawn(|cx| cx.sleep(HOUR)).unwrap();
    let waiter = s
        .spawn(move |cx| {
            let _guard = guard;
            cx.join(slow);
            "joined"
        })
        .unwrap();
    s.spawn(move |cx| {
        cx.sleep(ms(5));
        cx.cancel(waiter);
        // The slow task keeps going; cancel it too so the run is short.
        cx.sleep(ms(5));
        cx.cancel(slow);
    })
    .unwrap();
    s.run();
    assert_eq!(s.state(waiter), Some(TaskState::Cancelled));
    assert!(is_set(&dropped));
    assert_eq!(s.state(slow), Some(TaskState::Cancelled));
    assert_eq!(s.now(), ms(10));
}

#[test]
fn cancel_from_outside_and_from_a_handle() {
    let s = vsched();
    let a = s.spawn(|cx| cx.sleep(HOUR)).unwrap();
    let b = s.spawn(|cx| cx.sleep(HOUR)).unwrap();
    let handle = s.handle();
    // Cancels through the handle's inbox, from the scheduler's own thread.
    s.spawn(move |cx| {
        cx.sleep(ms(7));
        handle.cancel(b).unwrap();
    })
    .unwrap();
    // `a` has not started yet: cancelled on the spot.
    assert!(s.cancel(a));
    assert_eq!(s.state(a), Some(TaskState::Cancelled));
    s.run();
    assert_eq!(s.state(b), Some(TaskState::Cancelled));
    assert_eq!(s.now(), ms(7));
}

#[test]
fn a_task_cancelling_itself_ends_at_its_next_blocking_call() {
    let s = vsched();
    let trace = Trace::new();
    let tr = trace.clone();
    let t = s
        .spawn(move |cx| {
            let me = cx.tid();
            assert!(cx.cancel(me));
            tr.push("still running");
            cx.log("non-blocking calls still answer");
            cx.yield_now();
            tr.push("after yield");
        })
        .unwrap();
    s.run();
    assert_eq!(trace.get(), vec!["still running"]);
    assert_eq!(s.state(t), Some(TaskState::Cancelled));
}
