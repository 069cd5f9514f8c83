//! Stale ready-queue entries: a task that ended (or went back to waiting)
//! while its id sat in the ready queue is never resumed, and popping the stale
//! entry does not panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::*;
use tiffany_scheduler::*;

#[test]
fn cancel_queued_task_before_it_started() {
    let s = vsched();
    let log = logged(&s);
    let (dropped, guard) = drop_flag();
    let victim = s
        .spawn(move |_cx| {
            // Only reached if the task runs: forgetting the guard keeps the flag unset.
            std::mem::forget(guard);
            panic!("a task cancelled before it started must never run");
        })
        .unwrap();
    let other = s.spawn(|_cx| 5).unwrap();
    assert_eq!(s.state(victim), Some(TaskState::Scheduled));

    assert!(s.cancel(victim), "the task was live");
    assert_eq!(s.state(victim), Some(TaskState::Cancelled));
    assert!(!s.cancel(victim), "a second cancel finds it ended");
    // Its closure (and what it captured) is dropped without running.
    assert!(is_set(&dropped));

    let order = s.run();
    assert_eq!(
        order,
        vec![other],
        "only the other task finishes during run"
    );
    let events = log.events();
    assert_eq!(task_kinds(&events, victim), vec!["spawned", "cancelled"]);
    assert_eq!(s.metrics().cancelled, 1);
    assert_eq!(s.metrics().failed, 0);
    assert_eq!(value_of::<i32>(&s, other), 5);
}

#[test]
fn cancel_from_a_task_of_a_queued_unstarted_task() {
    let s = vsched();
    let log = logged(&s);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let victim = s
        .spawn(move |_cx| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    // Higher priority: runs first, while the victim is still queued.
    let killer = s
        .spawn_with(SpawnOptions::priority(1), move |cx| cx.cancel(victim))
        .unwrap();

    let order = s.run();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(value_of::<bool>(&s, killer));
    assert_eq!(s.state(victim), Some(TaskState::Cancelled));
    // The victim ended during the killer's step, before the killer returned.
    assert_eq!(order, vec![victim, killer]);
    assert_eq!(count_kind(&log.events(), victim, "running"), 0);
}

#[test]
fn cancel_after_yield_resumes_once_with_cancellation() {
    let s = vsched();
    let log = logged(&s);
    let steps = Trace::new();
    let (dropped, guard) = drop_flag();
    let st = steps.clone();
    let victim = s
        .spawn(move |cx| {
            let _guard = guard;
            st.push("before yield");
            cx.yield_now();
            st.push("after yield");
        })
        .unwrap();
    // Same priority, spawned second: runs while the victim sits in the queue.
    let killer = s.spawn(move |cx| cx.cancel(victim)).unwrap();

    let order = s.run();
    assert_eq!(steps.get(), vec!["before yield"]);
    assert!(is_set(&dropped), "the victim's destructors ran");
    assert!(value_of::<bool>(&s, killer));
    assert_eq!(order, vec![killer, victim]);
    assert_eq!(
        task_kinds(&log.events(), victim),
        vec!["spawned", "running", "yield", "running", "cancelled"]
    );
}

#[test]
fn cancel_after_wake_before_resume() {
    // Both sleep until 10 ms; at 10 ms both are ready, the killer (higher
    // priority) runs first and cancels the victim while it is queued.
    let s = vsched();
    let log = logged(&s);
    let steps = Trace::new();
    let st = steps.clone();
    let victim = s
        .spawn(move |cx| {
            cx.sleep(ms(10));
            st.push("woke");
        })
        .unwrap();
    let killer = s
        .spawn_with(SpawnOptions::priority(1), move |cx| {
            cx.sleep(ms(10));
            cx.cancel(victim)
        })
        .unwrap();

    s.run();
    assert!(
        steps.get().is_empty(),
        "the victim never got past its sleep"
    );
    assert!(value_of::<bool>(&s, killer));
    assert_eq!(s.state(victim), Some(TaskState::Cancelled));
    assert_eq!(s.now(), ms(10));
    assert_eq!(
        task_kinds(&log.events(), victim),
        vec!["spawned", "running", "sleep", "running", "cancelled"]
    );
}

#[test]
fn stale_entry_of_freed_record_does_not_resume_slot_reuser() {
    // With no retention the cancelled task's record is freed at once and its
    // slot is reused by the next spawn, while its old entry is still queued.
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(0)
        .build()
        .unwrap();
    let log = logged(&s);
    let runs = Arc::new(AtomicUsize::new(0));
    let gone = s
        .spawn(|_cx| -> () { panic!("cancelled before it started") })
        .unwrap();
    assert!(s.cancel(gone));
    assert_eq!(s.state(gone), None, "no retention: the record is freed");
    assert_eq!(s.task_records(), 0);

    let r = runs.clone();
    let reuser = s
        .spawn(move |_cx| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert!(reuser > gone);
    let order = s.run();
    assert_eq!(order, vec![reuser]);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "resumed exactly once");
    let events = log.events();
    assert_eq!(count_kind(&events, reuser, "running"), 1);
    assert_eq!(count_kind(&events, gone, "running"), 0);
    assert_eq!(s.task_records(), 0);
}

#[test]
fn many_stale_entries_from_cancelled_unstarted_tasks() {
    // A queue full of dead entries interleaved with live ones.
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(0)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut live = Vec::new();
    for i in 0..200 {
        let r = runs.clone();
        let id = s
            .spawn(move |cx| {
                r.fetch_add(1, Ordering::SeqCst);
                cx.yield_now();
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        if i % 2 == 0 {
            assert!(s.cancel(id));
        } else {
            live.push(id);
        }
    }
    let order = s.run();
    assert_eq!(order, live);
    assert_eq!(runs.load(Ordering::SeqCst), 2 * live.len());
    assert_eq!(s.metrics().cancelled, 100);
    assert_eq!(s.metrics().done, 100);
}

#[test]
fn add_dependency_on_queued_task_does_not_queue_it_twice() {
    // `b` is queued; a dependency on `a` (which finishes first, at a higher
    // priority) sends it back to Pending, then ready again. It must then take
    // turns with its peer `c` like any other task: b c b c b c.
    let s = vsched();
    let trace = Trace::new();
    let a = s.spawn_with(SpawnOptions::priority(5), |_cx| ()).unwrap();
    let t = trace.clone();
    let b = s
        .spawn(move |cx| {
            for i in 0..3 {
                t.push(format!("b{i}"));
                cx.yield_now();
            }
        })
        .unwrap();
    let t = trace.clone();
    let _c = s
        .spawn(move |cx| {
            for i in 0..3 {
                t.push(format!("c{i}"));
                cx.yield_now();
            }
        })
        .unwrap();
    s.add_dependency(b, a).unwrap();
    assert_eq!(s.state(b), Some(TaskState::Pending));
    s.run();
    assert_eq!(trace.get(), vec!["b0", "c0", "b1", "c1", "b2", "c2"]);
}

/// A freed slot reused by a task of another priority: the old task's stale
/// queue entry (at its own, higher priority) must not run the new one early
/// (planted bug: the id check skipped when taking the next ready task).
#[test]
fn a_stale_entry_does_not_run_the_task_that_reused_its_slot() {
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(0)
        .build()
        .unwrap();
    let trace = Trace::new();
    let t = trace.clone();
    let middle = s
        .spawn_with(SpawnOptions::priority(100), move |_| t.push("middle"))
        .unwrap();
    // Queued at priority 1, then cancelled before it ran: its record is
    // freed (nothing retains it) and its queue entry goes stale.
    let gone = s
        .spawn_with(SpawnOptions::priority(1), |_| {
            panic!("cancelled before it ran")
        })
        .unwrap();
    assert!(s.cancel(gone));
    assert_eq!(s.state(gone), None, "its record is freed");
    // The next spawn takes the freed slot, at the lowest priority.
    let t = trace.clone();
    let last = s
        .spawn_with(SpawnOptions::priority(PRI_LOWEST), move |_| t.push("last"))
        .unwrap();
    assert_eq!(s.run(), vec![middle, last]);
    assert_eq!(trace.get(), vec!["middle", "last"]);
}
