//! Events: a flag tasks wait for; setting it wakes every waiter.

use std::sync::{Arc, Mutex};

use crate::common::*;
use tiffany_scheduler::*;

#[test]
fn set_wakes_every_waiter_in_order_and_later_waits_pass() {
    let s = vsched();
    let log = logged(&s);
    let ev = s.new_event();
    let order = Arc::new(Mutex::new(Vec::new()));
    let waiters: Vec<TaskId> = (0..5)
        .map(|i| {
            let order = order.clone();
            s.spawn(move |cx| {
                cx.event_wait(ev).unwrap();
                let now = cx.now();
                order.lock().unwrap().push((i, now));
            })
            .unwrap()
        })
        .collect();
    s.spawn(move |cx| {
        cx.sleep(ms(30));
        assert!(cx.event_set(ev));
        // Set: a later wait returns at once, without blocking.
        cx.event_wait(ev).unwrap();
    })
    .unwrap();
    s.run();
    let order = order.lock().unwrap().clone();
    assert_eq!(order, (0..5).map(|i| (i, ms(30))).collect::<Vec<_>>());
    for w in waiters {
        assert_eq!(count_kind(&log.events(), w, "event_wait"), 1);
    }
    assert_eq!(s.is_event_set(ev), Some(true));
}

#[test]
fn clear_makes_waits_block_again() {
    let s = vsched();
    let ev = s.new_event();
    assert!(s.set_event(ev));
    assert!(s.clear_event(ev));
    assert_eq!(s.is_event_set(ev), Some(false));
    let t = s
        .spawn(move |cx| {
            cx.event_wait(ev).unwrap();
            cx.now()
        })
        .unwrap();
    s.spawn(move |cx| {
        cx.sleep(ms(7));
        cx.event_set(ev);
    })
    .unwrap();
    s.run();
    assert_eq!(value_of::<std::time::Duration>(&s, t), ms(7));
}

#[test]
fn cancelling_a_waiter_leaves_the_others_waiting() {
    let s = vsched();
    let ev = s.new_event();
    let a = s
        .spawn(move |cx| {
            cx.event_wait(ev).unwrap();
            "a woke"
        })
        .unwrap();
    let b = s
        .spawn(move |cx| {
            cx.event_wait(ev).unwrap();
            "b woke"
        })
        .unwrap();
    s.spawn(move |cx| {
        cx.sleep(ms(1));
        assert!(cx.cancel(a));
        cx.sleep(ms(1));
        cx.event_set(ev);
    })
    .unwrap();
    s.run();
    assert!(matches!(s.outcome(a), Some(Outcome::Cancelled)));
    assert_eq!(value_of::<&str>(&s, b), "b woke");
}

#[test]
fn unknown_and_removed_events_are_refused() {
    let s = vsched();
    let ev = s.new_event();
    assert!(s.remove_event(ev));
    assert!(!s.set_event(ev));
    assert!(!s.clear_event(ev));
    assert_eq!(s.is_event_set(ev), None);
    let newer = s.new_event();
    assert_ne!(newer, ev, "a new event in the same slot gets a new id");
    let t = s.spawn(move |cx| cx.event_wait(ev)).unwrap();
    s.run();
    assert_eq!(
        value_of::<Result<(), SyscallError>>(&s, t),
        Err(SyscallError::UnknownEvent(ev))
    );
}

#[test]
fn an_event_with_waiters_is_not_removed_and_cancelled_waiters_are_pruned() {
    let s = vsched();
    assert_eq!(s.event_count(), 0);
    let ev = s.new_event();
    assert_eq!(s.event_count(), 1);
    let waiter = s.spawn(move |cx| cx.event_wait(ev)).unwrap();
    // The waiter blocks; nothing sets the event; the run ends with it blocked.
    s.run_until_idle();
    assert!(!s.remove_event(ev), "a task waits on it");
    assert!(s.cancel(waiter));
    s.run_until_idle();
    assert!(s.remove_event(ev), "its only waiter was cancelled");
    assert_eq!(s.event_count(), 0);

    // Many waits cancelled one after another do not grow the list without bound.
    let ev = s.new_event();
    for _ in 0..1_000 {
        let t = s.spawn(move |cx| cx.event_wait(ev)).unwrap();
        s.run_until_idle();
        assert!(s.cancel(t));
        s.run_until_idle();
    }
    let last = s
        .spawn(move |cx| {
            cx.event_wait(ev).unwrap();
            "woke"
        })
        .unwrap();
    s.set_event(ev);
    s.run();
    assert_eq!(value_of::<&str>(&s, last), "woke");
}

#[test]
fn a_cancelled_task_never_blocks_on_an_event() {
    let s = vsched();
    let ev = s.new_event();
    let t = s
        .spawn(move |cx| {
            let first =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cx.event_wait(ev)));
            assert!(first.is_err(), "cancelled while waiting");
            // Level-triggered: the next wait is answered `Cancelled` at once.
            cx.event_wait(ev)
        })
        .unwrap();
    s.run_until_idle();
    assert!(s.cancel(t));
    s.run();
    assert!(matches!(s.outcome(t), Some(Outcome::Cancelled)));
}

#[test]
fn a_run_whose_tasks_all_wait_forever_ends_instead_of_hanging() {
    // Nothing can set the event: no timer, no I/O, no handle. The run ends
    // (with a warning) and the waiter is still live.
    let s = vsched();
    let ev = s.new_event();
    let t = s.spawn(move |cx| cx.event_wait(ev)).unwrap();
    s.run();
    assert!(s.outcome(t).is_none());
    // A handle could still wake it: then the scheduler waits for it.
    let handle = s.handle();
    let waiter = std::thread::spawn(move || {
        // Cancelling from another thread ends the wait.
        handle.cancel(t).unwrap();
    });
    s.run();
    waiter.join().unwrap();
    assert!(matches!(s.outcome(t), Some(Outcome::Cancelled)));
}
