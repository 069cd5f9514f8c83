//! A run that can never make progress says so instead of hanging.

use std::sync::{Arc, Mutex};

use crate::common::*;
use tiffany_scheduler::*;

/// Every run here is bounded: a run that never ends (the deadlock missed,
/// the idle wait never giving up) fails the test instead of hanging it.
const BOUND: std::time::Duration = std::time::Duration::from_secs(10);

fn reporting(builder: Builder) -> (Scheduler, Arc<Mutex<Vec<Deadlock>>>) {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r = reports.clone();
    let s = builder
        .on_deadlock(Box::new(move |d: &Deadlock| {
            r.lock().unwrap().push(d.clone())
        }))
        .build()
        .unwrap();
    (s, reports)
}

#[test]
fn two_tasks_joining_each_other_are_reported_and_the_run_ends() {
    within(BOUND, || {
        let (s, reports) = reporting(Scheduler::builder().virtual_clock());
        // Task 1 joins task 2, which joins task 1.
        let a = s
            .spawn_with(SpawnOptions::default().with_name("a"), |cx| {
                cx.join(TaskId::from_raw(2));
            })
            .unwrap();
        let b = s.spawn(move |cx| cx.join(a)).unwrap();
        s.run_until_idle();
        let d = s.take_deadlock().expect("a deadlock");
        assert_eq!(reports.lock().unwrap().as_slice(), std::slice::from_ref(&d));
        assert_eq!(
            d.blocked,
            vec![
                BlockedTask {
                    id: a,
                    name: Some("a".into()),
                    waits_for: format!("is joining task {b}"),
                },
                BlockedTask {
                    id: b,
                    name: None,
                    waits_for: format!("is joining task {a}"),
                },
            ]
        );
        assert_eq!(
            d.to_string(),
            format!(
                "deadlock: 2 tasks are blocked and nothing can wake them; task {a} (a) is joining task {b}; task {b} is joining task {a}"
            )
        );
    });
}

#[test]
fn a_lone_event_waiter_is_reported() {
    within(BOUND, || {
        let (s, _) = reporting(Scheduler::builder().virtual_clock());
        let ev = s.new_event();
        let t = s.spawn(move |cx| cx.event_wait(ev).unwrap()).unwrap();
        s.run_until_idle();
        let d = s.take_deadlock().expect("a deadlock");
        assert_eq!(d.blocked.len(), 1);
        assert_eq!(d.blocked[0].id, t);
        assert_eq!(
            d.blocked[0].waits_for,
            format!("is waiting for {ev} to be set")
        );
    });
}

#[test]
fn a_live_outside_handle_is_not_a_deadlock() {
    within(BOUND, || {
        // Another thread could still set the event: the scheduler waits.
        let (s, reports) = reporting(Scheduler::builder().virtual_clock());
        let ev = s.new_event();
        s.spawn(move |cx| cx.event_wait(ev).unwrap()).unwrap();
        let handle = s.handle();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let setter = std::thread::spawn(move || {
            rx.recv_timeout(WATCHDOG).expect("the scheduler blocked");
            handle.set_event(ev).unwrap();
        });
        let tx2 = tx.clone();
        s.subscribe(move |e: &TaskEvent| {
            if e.kind.name() == "event_wait" {
                let _ = tx2.send(());
            }
        });
        s.run_until_idle();
        setter.join().unwrap();
        assert!(reports.lock().unwrap().is_empty());
        assert!(s.take_deadlock().is_none());
        assert_eq!(s.live_tasks(), 0);
    });
}

#[test]
fn an_internal_handle_does_not_keep_a_deadlocked_run_waiting() {
    within(BOUND, || {
        let (s, _) = reporting(Scheduler::builder().virtual_clock());
        let _plumbing = s.internal_handle();
        let ev = s.new_event();
        s.spawn(move |cx| cx.event_wait(ev).unwrap()).unwrap();
        s.run_until_idle();
        assert!(s.take_deadlock().is_some());
    });
}

#[test]
fn under_the_real_clock_a_deadlock_is_reported_once() {
    within(BOUND, || {
        let (s, reports) = reporting(Scheduler::builder());
        let a = s.spawn(|cx| cx.join(TaskId::from_raw(2))).unwrap();
        s.spawn(move |cx| cx.join(a)).unwrap();
        // Without an interrupt check nothing can end the wait: the run ends
        // after the one report (with one, it would wait for Ctrl-C).
        s.run_until_idle();
        assert_eq!(reports.lock().unwrap().len(), 1);
        assert!(
            s.take_deadlock().is_none(),
            "kept only for the virtual clock"
        );
    });
}

#[test]
fn a_task_waiting_on_a_dependency_names_it() {
    within(BOUND, || {
        let (s, _) = reporting(Scheduler::builder().virtual_clock());
        let ev = s.new_event();
        let first = s.spawn(move |cx| cx.event_wait(ev).unwrap()).unwrap();
        let second = s
            .spawn_with(SpawnOptions::default().with_deps(&[first]), |_| ())
            .unwrap();
        s.run_until_idle();
        let d = s.take_deadlock().unwrap();
        assert_eq!(d.blocked[1].id, second);
        assert_eq!(
            d.blocked[1].waits_for,
            format!("waits for its dependencies (tasks {first})")
        );
    });
}

#[test]
fn a_deadlock_while_paused_with_nothing_held_is_reported() {
    within(BOUND, || {
        // Back-pressure pauses the scheduler, but no task is held or waits
        // at the admission gate: a new reading could let nothing go, so the
        // lone event waiter is a deadlock as it would be unpaused.
        let (s, reports) = reporting(Scheduler::builder().virtual_clock());
        s.set_backpressure_listener(|| 1.0);
        let ev = s.new_event();
        let t = s.spawn(move |cx| cx.event_wait(ev).unwrap()).unwrap();
        s.run_until_idle();
        assert!(s.is_paused());
        assert_eq!(reports.lock().unwrap().len(), 1);
        assert_eq!(s.take_deadlock().expect("a deadlock").blocked[0].id, t);
    });
}

#[test]
fn a_deadlock_after_an_admission_wait_cut_short_is_reported() {
    within(BOUND, || {
        // Paused, the task waits at the admission gate until its scope's
        // deadline cancels the wait; then it waits for an event nobody
        // sets. Its admission wait is over (nothing waits at the gate), so
        // this is the deadlock above, reported the same way.
        let (s, reports) = reporting(Scheduler::builder().virtual_clock());
        s.set_backpressure_listener(|| 1.0);
        let ev = s.new_event();
        let t = s
            .spawn(move |cx| {
                // (The loop reads the pressure between steps.)
                cx.sleep(ms(1));
                let admitted = cx.move_on_after(ms(10), |cx| cx.admit());
                assert!(admitted.is_none(), "admitted while paused");
                cx.event_wait(ev).unwrap();
            })
            .unwrap();
        s.run_until_idle();
        assert!(s.is_paused());
        assert_eq!(s.now(), ms(11));
        assert_eq!(reports.lock().unwrap().len(), 1);
        assert_eq!(s.take_deadlock().expect("a deadlock").blocked[0].id, t);
    });
}

#[test]
fn a_paused_admission_waiter_is_not_a_deadlock_while_the_pressure_may_drop() {
    within(BOUND, || {
        // Paused, a task waits at the admission gate with nothing else to
        // run: not a deadlock, since the next pressure reading may let it
        // through. The loop reads the pressure again (every 10 ms of real
        // time) and the second reading after the wait began is low.
        let (s, reports) = reporting(Scheduler::builder().virtual_clock());
        let waiting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = waiting.clone();
        let mut reads_since = 0;
        s.set_backpressure_listener(move || {
            if !w.load(std::sync::atomic::Ordering::SeqCst) {
                return 1.0;
            }
            reads_since += 1;
            if reads_since > 1 { 0.0 } else { 1.0 }
        });
        let t = s
            .spawn(move |cx| {
                // (The loop reads the pressure between steps.)
                cx.sleep(ms(1));
                waiting.store(true, std::sync::atomic::Ordering::SeqCst);
                cx.admit();
                cx.now()
            })
            .unwrap();
        s.run_until_idle();
        assert!(reports.lock().unwrap().is_empty(), "reported a deadlock");
        assert_eq!(s.state(t), Some(TaskState::Finished));
        assert!(!s.is_paused());
    });
}

#[test]
fn work_made_by_the_deadlock_report_is_run() {
    within(BOUND, || {
        // The report sets the event the lone waiter waits for: the run goes
        // on and the waiter finishes, instead of ending with it ready.
        let sched: std::rc::Rc<std::cell::RefCell<Option<(Scheduler, EventId)>>> =
            Default::default();
        let slot = sched.clone();
        let s = Scheduler::builder()
            .virtual_clock()
            .on_deadlock(Box::new(move |_d: &Deadlock| {
                if let Some((s, ev)) = slot.borrow_mut().take() {
                    assert!(s.set_event(ev));
                }
            }))
            .build()
            .unwrap();
        let ev = s.new_event();
        *sched.borrow_mut() = Some((s.clone(), ev));
        let t = s.spawn(move |cx| cx.event_wait(ev).unwrap()).unwrap();
        s.run_until_idle();
        assert!(sched.borrow().is_none(), "the report ran");
        assert_eq!(s.state(t), Some(TaskState::Finished));
        assert_eq!(s.live_tasks(), 0);
    });
}
