//! Graceful shutdown: drain, cancel at the deadline, hooks after the last
//! task, then the result; no spawns afterwards.

use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

const HOUR: Duration = Duration::from_secs(3600);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Records shutdown events and ends of tasks into `order`.
fn record_events(s: &Scheduler, order: &Trace<String>) {
    let o = order.clone();
    s.subscribe(move |e: &TaskEvent| {
        if e.task.is_none() && e.kind.name().starts_with("shutdown") {
            o.push(format!("event {}", e.kind.name()));
        }
    });
}

fn add_hooks(s: &Scheduler, order: &Trace<String>) {
    for name in ["hook1", "hook2"] {
        let o = order.clone();
        s.add_shutdown_hook(move |r: ShutdownResult| o.push(format!("{name} {}", r.name())));
    }
}

#[test]
fn clean_shutdown_drains_then_hooks_then_returns() {
    let s = vsched();
    let log = logged(&s);
    let order = Trace::new();
    record_events(&s, &order);
    add_hooks(&s, &order);
    for n in [1u64, 2] {
        let o = order.clone();
        s.spawn(move |cx| {
            cx.sleep(secs(n));
            o.push(format!("task{n} end"));
        })
        .unwrap();
    }

    assert!(!s.is_shutting_down());
    let result = s.shutdown(secs(10));
    order.push("returned".to_string());

    assert_eq!(result, ShutdownResult::Clean);
    assert_eq!(
        order.get(),
        vec![
            "event shutdown_begin",
            "task1 end",
            "task2 end",
            "hook1 clean",
            "hook2 clean",
            "event shutdown_complete",
            "returned"
        ]
    );
    assert_eq!(s.now(), secs(2), "did not wait for the deadline");
    let global = global_events(&log.events());
    assert_eq!(
        global,
        vec![
            EventKind::ShutdownBegin { timeout: secs(10) },
            EventKind::ShutdownComplete { clean: true }
        ]
    );
    assert!(s.is_shutting_down());
    assert_eq!(s.live_tasks(), 0);

    // No more spawns, from anywhere.
    assert_denied(s.spawn(|_cx| ()), SpawnError::ShuttingDown);
    let handle = s.handle();
    assert!(handle.is_shutting_down());
    assert_denied(handle.spawn(|_cx| ()), SpawnError::ShuttingDown);
    // A second shutdown reports the same result without running hooks again.
    assert_eq!(s.shutdown(secs(1)), ShutdownResult::Clean);
    assert_eq!(order.get().len(), 7);
    assert!(s.run().is_empty());
}

#[test]
fn timeout_cancels_sleepers_at_the_deadline() {
    let s = vsched();
    let log = logged(&s);
    let order = Trace::new();
    record_events(&s, &order);
    add_hooks(&s, &order);
    let (dropped, guard) = drop_flag();
    let o = order.clone();
    let sleeper = s
        .spawn(move |cx| {
            let _guard = guard;
            cx.sleep(HOUR);
            o.push("sleeper woke".to_string());
        })
        .unwrap();
    let quick = s.spawn(|cx| cx.sleep(ms(10))).unwrap();
    let never = s
        .spawn_with(SpawnOptions::default().with_deps(&[sleeper]), |_cx| ())
        .unwrap();

    let result = s.shutdown(secs(1));
    order.push("returned".to_string());

    assert_eq!(result, ShutdownResult::Timeout);
    assert_eq!(s.now(), secs(1), "cancelled exactly at the deadline");
    assert!(is_set(&dropped));
    assert_eq!(s.state(sleeper), Some(TaskState::Cancelled));
    assert_eq!(s.state(never), Some(TaskState::Cancelled));
    assert_eq!(s.state(quick), Some(TaskState::Finished));
    assert_eq!(
        order.get(),
        vec![
            "event shutdown_begin",
            "hook1 timeout",
            "hook2 timeout",
            "event shutdown_complete",
            "returned"
        ]
    );
    let events = log.events();
    let sleeper_end = events
        .iter()
        .find(|e| e.task == Some(sleeper) && e.kind == EventKind::Cancelled)
        .unwrap();
    assert_eq!(sleeper_end.time, secs(1));
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::ShutdownComplete { clean: false }
    );
}

#[test]
fn shutdown_from_inside_a_task_excludes_the_caller() {
    let s = vsched();
    let order = Trace::new();
    add_hooks(&s, &order);
    let o = order.clone();
    let worker = s
        .spawn(move |cx| {
            cx.sleep(secs(1));
            o.push("worker end".to_string());
        })
        .unwrap();
    let o = order.clone();
    let requester = s
        .spawn(move |cx| {
            cx.sleep(ms(1));
            let r = cx.shutdown(secs(30));
            o.push(format!("requester resumed {:?} at {:?}", r, cx.now()));
            // Still allowed to do non-spawning work after the shutdown.
            cx.log("after shutdown");
            "requester done"
        })
        .unwrap();
    let late = s
        .spawn(move |cx| {
            cx.sleep(ms(500));
            // During the drain: no new tasks, no second shutdown.
            (cx.spawn(|_cx| ()), cx.shutdown(secs(1)))
        })
        .unwrap();

    let finished = s.run();

    assert_eq!(
        order.get(),
        vec![
            "worker end".to_string(),
            "hook1 clean".to_string(),
            "hook2 clean".to_string(),
            "requester resumed Ok(Clean) at 1s".to_string()
        ]
    );
    assert_eq!(finished, vec![late, worker, requester]);
    assert_eq!(value_of::<&str>(&s, requester), "requester done");
    assert_eq!(
        value_of::<(
            Result<TaskId, SpawnError>,
            Result<ShutdownResult, SyscallError>
        )>(&s, late),
        (
            Err(SpawnError::ShuttingDown),
            Err(SyscallError::ShutdownInProgress)
        )
    );
}

#[test]
fn shutdown_from_a_task_with_a_timeout_cancels_the_others_not_itself() {
    let s = vsched();
    let sleeper = s.spawn(|cx| cx.sleep(HOUR)).unwrap();
    let requester = s
        .spawn(|cx| {
            let r = cx.shutdown(secs(10));
            (r, cx.now())
        })
        .unwrap();
    s.run();
    assert_eq!(
        value_of::<(Result<ShutdownResult, SyscallError>, Duration)>(&s, requester),
        (Ok(ShutdownResult::Timeout), secs(10))
    );
    assert_eq!(s.state(sleeper), Some(TaskState::Cancelled));
    assert_eq!(s.state(requester), Some(TaskState::Finished));
}

#[test]
fn daemons_do_not_hold_up_a_clean_shutdown() {
    let s = vsched();
    let daemon = s
        .spawn_with(SpawnOptions::default().daemon(true), |cx| {
            loop {
                cx.sleep(secs(1));
            }
        })
        .unwrap();
    let worker = s.spawn(|cx| cx.sleep(secs(3))).unwrap();
    assert_eq!(s.shutdown(HOUR), ShutdownResult::Clean);
    assert_eq!(s.state(daemon), Some(TaskState::Cancelled));
    assert_eq!(s.state(worker), Some(TaskState::Finished));
    assert_eq!(s.now(), secs(3));
}

#[test]
fn handle_shutdown_from_another_thread_while_serving() {
    let s = vsched();
    let order = Trace::new();
    add_hooks(&s, &order);
    let (started_tx, started_rx) = mpsc::channel();
    let o = order.clone();
    let task = s
        .spawn(move |cx| {
            cx.sleep(ms(20));
            started_tx.send(()).unwrap();
            o.push("task end".to_string());
        })
        .unwrap();
    let handle = s.handle();
    let stopper = std::thread::spawn(move || {
        await_signal(&started_rx, &handle, "the task never ran");
        handle.shutdown(secs(5))
    });
    let served = s.serve();
    let replied = stopper.join().unwrap();

    assert_eq!(served, ShutdownResult::Clean);
    assert_eq!(replied, Ok(ShutdownResult::Clean));
    assert_eq!(order.get(), vec!["task end", "hook1 clean", "hook2 clean"]);
    assert_eq!(s.state(task), Some(TaskState::Finished));
    assert_denied(s.spawn(|_cx| ()), SpawnError::ShuttingDown);
}

#[test]
fn handle_shutdown_times_out_a_blocked_task_while_serving() {
    // The task waits for I/O that never comes; the shutdown's deadline (on
    // the virtual clock) cancels it.
    let s = vsched();
    let (sock_r, _sock_w) = std::os::unix::net::UnixStream::pair().unwrap();
    let token = s.register_io(&sock_r).unwrap();
    let (tx, rx) = mpsc::channel();
    s.subscribe(on_io_wait(tx));
    let (dropped, guard) = drop_flag();
    let blocked = s
        .spawn(move |cx| {
            let _guard = guard;
            cx.io_wait(token, Interest::Readable)
        })
        .unwrap();
    let handle = s.handle();
    let stopper = std::thread::spawn(move || {
        await_signal(&rx, &handle, "the task never waited");
        handle.shutdown(secs(2))
    });
    let served = s.serve();
    assert_eq!(stopper.join().unwrap(), Ok(ShutdownResult::Timeout));
    assert_eq!(served, ShutdownResult::Timeout);
    assert_eq!(s.state(blocked), Some(TaskState::Cancelled));
    assert!(is_set(&dropped));
    assert_eq!(s.now(), secs(2));
}

#[test]
fn handle_shutdown_on_the_scheduler_thread_would_deadlock() {
    let s = vsched();
    assert_eq!(
        s.handle().shutdown(secs(1)),
        Err(HandleError::WouldDeadlock)
    );
    // The non-waiting request works from here, and serve() carries it out.
    s.handle().request_shutdown(secs(1)).unwrap();
    assert_eq!(s.serve(), ShutdownResult::Clean);
}

#[test]
fn a_panicking_hook_is_counted_and_the_others_still_run() {
    let s = vsched();
    let order = Trace::new();
    s.add_shutdown_hook(|_r: ShutdownResult| panic!("hook broke"));
    add_hooks(&s, &order);
    assert_eq!(s.shutdown(secs(1)), ShutdownResult::Clean);
    assert_eq!(order.get(), vec!["hook1 clean", "hook2 clean"]);
    assert_eq!(s.metrics().callback_errors, 1);
}

#[test]
fn a_second_shutdown_request_can_only_bring_the_deadline_closer() {
    // The pool's own drain (no limit) and a user's shutdown(20 ms) can reach
    // a shard in either order; the 20 ms must win either way.
    for first_long in [true, false] {
        let s = vsched();
        let sleeper = s.spawn(|cx| cx.sleep(Duration::from_secs(3600))).unwrap();
        let h = s.handle();
        let (a, b) = if first_long {
            (Duration::MAX, ms(20))
        } else {
            (ms(20), Duration::MAX)
        };
        h.request_shutdown(a).unwrap();
        h.request_shutdown(b).unwrap();
        drop(h);
        assert_eq!(s.serve(), ShutdownResult::Timeout);
        assert_eq!(s.now(), ms(20));
        assert!(matches!(s.outcome(sleeper), Some(Outcome::Cancelled)));
    }
}

thread_local! {
    /// The test's scheduler, for a task body that calls it (a body is `Send`).
    static SCHED: std::cell::RefCell<Option<Scheduler>> = const { std::cell::RefCell::new(None) };
}

/// Calls `Scheduler::shutdown` from inside its step (as a binding's task
/// does) and returns the result.
struct Requester;

impl TaskBody for Requester {
    fn resume(&mut self, _: Option<Resume>) -> Step {
        let r = SCHED.with(|s| s.borrow().as_ref().unwrap().shutdown(ms(100)));
        Step::Done(Value::new(r))
    }
}

/// A task that asks for the shutdown from inside its step is not part of
/// the drain it waits for: the drain ends clean when the others have.
#[test]
fn a_shutdown_asked_from_inside_a_step_does_not_wait_for_its_caller() {
    within(Duration::from_secs(10), || {
        let s = vsched();
        SCHED.with(|c| *c.borrow_mut() = Some(s.clone()));
        s.spawn(|cx| cx.sleep(ms(10))).unwrap();
        let asker = s
            .spawn_body(SpawnOptions::default(), Body::custom(Box::new(Requester)))
            .unwrap();
        s.retain(asker);
        s.run_until_idle();
        SCHED.with(|c| c.borrow_mut().take());
        assert_eq!(value_of::<ShutdownResult>(&s, asker), ShutdownResult::Clean);
        assert_eq!(s.now(), ms(10));
    });
}
