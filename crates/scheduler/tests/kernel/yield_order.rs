//! Yield: equal-priority tasks take turns, round robin.

use crate::common::*;
use tiffany_scheduler::*;

fn worker(
    name: &'static str,
    steps: usize,
    trace: Trace<(&'static str, usize)>,
) -> impl FnOnce(&mut TaskContext<'_>) + Send + 'static {
    move |cx| {
        for step in 0..steps {
            trace.push((name, step));
            cx.yield_now();
        }
    }
}

#[test]
fn three_tasks_interleave_round_robin() {
    let s = vsched();
    let log = logged(&s);
    let trace = Trace::new();
    let a = s.spawn(worker("A", 4, trace.clone())).unwrap();
    let b = s.spawn(worker("B", 4, trace.clone())).unwrap();
    let c = s.spawn(worker("C", 4, trace.clone())).unwrap();

    let order = s.run();

    let expected: Vec<(&str, usize)> = (0..4)
        .flat_map(|step| [("A", step), ("B", step), ("C", step)])
        .collect();
    assert_eq!(trace.get(), expected);
    assert_eq!(order, vec![a, b, c]);

    // The event log agrees: resumes go A B C A B C ... (5 each: 4 yields + the end).
    let running: Vec<TaskId> = log
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Running)
        .map(|e| e.task.unwrap())
        .collect();
    let expected_running: Vec<TaskId> = (0..5).flat_map(|_| [a, b, c]).collect();
    assert_eq!(running, expected_running);
    assert_eq!(count_kind(&log.events(), a, "yield"), 4);
    // Yields never move the virtual clock.
    assert_eq!(s.now(), std::time::Duration::ZERO);
}

#[test]
fn uneven_yield_counts_keep_the_rotation() {
    let s = vsched();
    let trace = Trace::new();
    s.spawn(worker("A", 1, trace.clone())).unwrap();
    s.spawn(worker("B", 3, trace.clone())).unwrap();
    s.spawn(worker("C", 2, trace.clone())).unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec![("A", 0), ("B", 0), ("C", 0), ("B", 1), ("C", 1), ("B", 2)]
    );
}

/// Tasks A and B took three turns each, in turn, and every sleep of zero
/// was a yield (no `sleep` event).
fn three_turns_each_by_yields(trace: &Trace<(&'static str, usize)>, log: &EventLog) {
    assert_eq!(
        trace.get(),
        vec![("A", 0), ("B", 0), ("A", 1), ("B", 1), ("A", 2), ("B", 2)]
    );
    let events = log.events();
    assert!(events.iter().all(|e| e.kind.name() != "sleep"));
    assert_eq!(
        events.iter().filter(|e| e.kind == EventKind::Yield).count(),
        6
    );
}

#[test]
fn sleep_zero_is_a_yield() {
    let s = vsched();
    let log = logged(&s);
    let trace = Trace::new();
    for name in ["A", "B"] {
        let t = trace.clone();
        s.spawn(move |cx| {
            for step in 0..3 {
                t.push((name, step));
                cx.sleep(std::time::Duration::ZERO);
            }
        })
        .unwrap();
    }
    s.run();
    three_turns_each_by_yields(&trace, &log);
}

/// Sends `Sleep(0)` itself three times (a native task's `cx.sleep(ZERO)`
/// never reaches the kernel: it yields in the task).
struct ZeroSleeper {
    name: &'static str,
    step: usize,
    trace: Trace<(&'static str, usize)>,
}

impl TaskBody for ZeroSleeper {
    fn resume(&mut self, _: Option<Resume>) -> Step {
        if self.step == 3 {
            return Step::Done(Value::unit());
        }
        self.trace.push((self.name, self.step));
        self.step += 1;
        Step::Syscall(SystemCall::Sleep(std::time::Duration::ZERO))
    }
}

#[test]
fn a_sleep_call_of_zero_is_a_yield() {
    let s = vsched();
    let log = logged(&s);
    let trace = Trace::new();
    for name in ["A", "B"] {
        let body = Body::custom(Box::new(ZeroSleeper {
            name,
            step: 0,
            trace: trace.clone(),
        }));
        s.spawn_body(SpawnOptions::default(), body).unwrap();
    }
    s.run();
    three_turns_each_by_yields(&trace, &log);
}

#[test]
fn task_spawned_mid_run_joins_the_back_of_the_queue() {
    let s = vsched();
    let trace = Trace::new();
    let t = trace.clone();
    let t2 = trace.clone();
    s.spawn(move |cx| {
        cx.spawn(move |_cx| t2.push(("D", 0))).unwrap();
        for step in 0..2 {
            t.push(("A", step));
            cx.yield_now();
        }
    })
    .unwrap();
    s.spawn(worker("B", 2, trace.clone())).unwrap();
    s.spawn(worker("C", 2, trace.clone())).unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec![
            ("A", 0),
            ("B", 0),
            ("C", 0),
            ("D", 0),
            ("A", 1),
            ("B", 1),
            ("C", 1)
        ]
    );
}

// A task that yields while nothing else is ready is resumed at once, without
// a trip through the ready queue (the yield fast path). These tests pin down
// that nothing a trip through the queue would have done is skipped.

#[test]
fn a_lone_yielder_keeps_the_bookkeeping_of_a_trip_through_the_queue() {
    let s = vsched();
    let log = logged(&s);
    let a = s
        .spawn(|cx| {
            for _ in 0..5 {
                cx.yield_now();
            }
        })
        .unwrap();
    s.run();
    let kinds = task_kinds(&log.events(), a);
    let mut expected = vec!["spawned"];
    for _ in 0..5 {
        expected.extend(["running", "yield"]);
    }
    expected.extend(["running", "done"]);
    assert_eq!(kinds, expected);
    let m = s.metrics();
    // One step per run: the first and one after each yield.
    assert_eq!(m.steps, 6);
    assert_eq!(m.run_latency.count, 6);
    // Each run is a fresh turn charged one step's cost.
    assert_eq!(s.info(a).unwrap().budget_used, ms(100) * 6 / 1000);
}

#[test]
fn a_task_made_ready_before_a_yield_runs_before_the_yielder_resumes() {
    let s = vsched();
    let trace = Trace::new();
    let (t, t2) = (trace.clone(), trace.clone());
    s.spawn(move |cx| {
        t.push(("A", 0));
        cx.spawn(move |_cx| t2.push(("D", 0))).unwrap();
        cx.yield_now();
        t.push(("A", 1));
        cx.yield_now();
        t.push(("A", 2));
    })
    .unwrap();
    s.run();
    assert_eq!(trace.get(), vec![("A", 0), ("D", 0), ("A", 1), ("A", 2)]);
}

#[test]
fn a_lone_yielder_does_not_starve_timers() {
    // Real clock: the sleeper's timer is only fired by the loop's
    // maintenance, which the fast path must leave room for. If it did not,
    // this would spin forever (and the test runner's timeout would end it).
    let s = Scheduler::new();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f1, f2) = (flag.clone(), flag.clone());
    s.spawn(move |cx| {
        cx.sleep(ms(2));
        f1.store(true, std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    let spinner = s
        .spawn(move |cx| {
            let mut yields = 0u64;
            while !f2.load(std::sync::atomic::Ordering::SeqCst) {
                cx.yield_now();
                yields += 1;
            }
            yields
        })
        .unwrap();
    s.run();
    assert!(flag.load(std::sync::atomic::Ordering::SeqCst));
    assert!(value_of::<u64>(&s, spinner) > 0);
}

#[test]
fn a_lone_yielder_is_cancelled_from_another_thread() {
    let s = Scheduler::new();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let spinner = s
        .spawn(move |cx| {
            started_tx.send(()).unwrap();
            loop {
                cx.yield_now();
            }
        })
        .unwrap();
    let handle = s.handle();
    let canceller = std::thread::spawn(move || {
        started_rx
            .recv_timeout(WATCHDOG)
            .expect("the spinner started");
        handle.cancel(spinner).expect("the scheduler is alive");
    });
    s.run();
    canceller.join().unwrap();
    assert!(matches!(s.outcome(spinner), Some(Outcome::Cancelled)));
}

thread_local! {
    /// The test's scheduler, for a task body that calls it (a body is `Send`).
    static SCHED: std::cell::RefCell<Option<Scheduler>> = const { std::cell::RefCell::new(None) };
}

/// Counts the events handed to it, in batches of up to `size`.
struct Counter {
    size: usize,
    delivered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EventSubscriber for Counter {
    fn on_event(&mut self, _: &TaskEvent) {
        self.delivered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn max_batch(&self) -> usize {
        self.size
    }
}

/// A yield in place adds the task's `Yield` and `Running` events without a
/// pass of the loop between them, so it is taken only when they leave the
/// subscriber's batch short of full; otherwise the yield goes the long way
/// and the full batch is handed over before the task goes on. So whenever
/// the task runs, at most one batch of its events is still undelivered —
/// also when the subscriber came in the middle of the task's step, with no
/// event gathered yet.
#[test]
fn a_lone_yielder_leaves_at_most_a_batch_of_events_undelivered() {
    for size in 1..=6 {
        let s = vsched();
        SCHED.with(|c| *c.borrow_mut() = Some(s.clone()));
        let delivered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let d = delivered.clone();
        let a = s
            .spawn(move |cx| {
                let counter = Counter {
                    size,
                    delivered: d.clone(),
                };
                SCHED.with(|c| c.borrow().as_ref().unwrap().subscribe(counter));
                (0..8)
                    .map(|_| {
                        cx.yield_now();
                        d.load(std::sync::atomic::Ordering::SeqCst)
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap();
        s.run();
        SCHED.with(|c| c.borrow_mut().take());
        for (i, seen) in value_of::<Vec<usize>>(&s, a).into_iter().enumerate() {
            // Events since the subscription: a `Yield` and a `Running` per
            // yield (the sequence `a_lone_yielder_keeps_the_bookkeeping_…`
            // pins down).
            let made = 2 * (i + 1);
            assert!(
                made - seen <= size,
                "batch {size}: after yield {}, {} of {made} events undelivered",
                i + 1,
                made - seen
            );
        }
    }
}

/// The end of a task cancelled before it started is a chore of the loop
/// (its end callback runs between steps): a yield in place would skip the
/// pass that does it, so the yielder goes the long way and finds the
/// callback done when it resumes.
#[test]
fn a_yield_after_a_cancel_lets_the_end_callback_run_first() {
    let s = vsched();
    let trace = Trace::new();
    let (t, t2) = (trace.clone(), trace.clone());
    let victim_id = std::sync::Arc::new(std::sync::OnceLock::new());
    let v = victim_id.clone();
    let canceller = s
        .spawn(move |cx| {
            let victim = *v.get().unwrap();
            // The victim waits for this task to end: never started.
            assert!(cx.cancel(victim));
            t.push("cancelled");
            cx.yield_now();
            t.push("resumed");
        })
        .unwrap();
    // Spawned waiting for the canceller (never queued: with nothing else
    // ready the canceller's yield could be done in place).
    let victim = s
        .spawn_with(SpawnOptions::default().with_deps(&[canceller]), |_cx| ())
        .unwrap();
    victim_id.set(victim).unwrap();
    assert!(s.on_task_end(victim, move |_, o| {
        assert!(matches!(o, Outcome::Cancelled));
        t2.push("end callback");
    }));
    s.run();
    assert_eq!(trace.get(), vec!["cancelled", "end callback", "resumed"]);
}
