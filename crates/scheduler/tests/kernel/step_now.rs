//! `Scheduler::step_now`, the direct hand-off: a task blocked on an event is
//! stepped inside the running task's turn, as the running task for the
//! time of its step, and the caller is the running task again afterwards.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiffany_scheduler::*;

thread_local! {
    /// The test's scheduler, for the bodies that call it (a body is `Send`).
    static SCHED: RefCell<Option<Scheduler>> = const { RefCell::new(None) };
}

fn with_sched<R>(f: impl FnOnce(&Scheduler) -> R) -> R {
    SCHED.with(|s| f(s.borrow().as_ref().expect("a test scheduler")))
}

fn sched_with(builder: Builder) -> Scheduler {
    let sched = builder.virtual_clock().build().expect("scheduler");
    SCHED.with(|s| *s.borrow_mut() = Some(sched.clone()));
    sched
}

type Log = Arc<Mutex<Vec<String>>>;

/// A custom body run by a closure (resume count, input) -> step.
struct Script {
    f: Box<dyn FnMut(usize, Option<Resume>) -> Step + Send>,
    n: usize,
    dropped: Option<Arc<AtomicBool>>,
}

impl TaskBody for Script {
    fn resume(&mut self, input: Option<Resume>) -> Step {
        self.n += 1;
        (self.f)(self.n, input)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Some(d) = &self.dropped {
            d.store(true, Ordering::SeqCst);
        }
    }
}

fn script(f: impl FnMut(usize, Option<Resume>) -> Step + Send + 'static) -> Body {
    Body::custom(Box::new(Script {
        f: Box::new(f),
        n: 0,
        dropped: None,
    }))
}

fn spawn(sched: &Scheduler, priority: Priority, body: Body) -> TaskId {
    sched
        .spawn_body(SpawnOptions::priority(priority), body)
        .expect("spawn")
}

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

fn current() -> String {
    match with_sched(|s| s.current_task()) {
        Some(t) => format!("t{}", t.get()),
        None => "none".into(),
    }
}

/// A task `w` blocked on a new event at its first resume, that ends when
/// stepped again; with its event and log.
fn waiter_w(sched: &Scheduler) -> (EventId, Log, TaskId) {
    let ev = sched.new_event();
    let log: Log = Log::default();
    let w = spawn(
        sched,
        PRI_DEFAULT,
        waiter(&log, "w", ev, |_| Step::Done(Value::unit())),
    );
    (ev, log, w)
}

/// A task that blocks on `event` at its first resume, then on each resume
/// logs who is current and what it got, and answers `then(n)`.
fn waiter(
    log: &Log,
    name: &'static str,
    event: EventId,
    mut then: impl FnMut(usize) -> Step + Send + 'static,
) -> Body {
    let log = log.clone();
    script(move |n, input| {
        if n == 1 {
            return Step::Syscall(SystemCall::EventWait(event));
        }
        push(&log, format!("{name} runs as {} with {input:?}", current()));
        then(n)
    })
}

#[test]
fn the_nested_task_is_current_for_its_step_and_the_caller_after() {
    let sched = sched_with(Scheduler::builder());
    let events = EventLog::new();
    sched.subscribe(events.clone());
    let log: Log = Log::default();
    let ev = sched.new_event();
    let w = spawn(
        &sched,
        PRI_DEFAULT,
        waiter(&log, "w", ev, |_| Step::Done(Value::unit())),
    );
    let l = log.clone();
    let engine = spawn(
        &sched,
        PRI_DEFAULT,
        script(move |n, _| {
            if n == 1 {
                // Let the waiter block first.
                return Step::Syscall(SystemCall::Yield);
            }
            push(&l, format!("engine before: {}", current()));
            let stepped = with_sched(|s| s.step_now(w, ev));
            push(
                &l,
                format!("stepped {stepped}; engine after: {}", current()),
            );
            Step::Done(Value::unit())
        }),
    );
    sched.run();
    let e = engine.get();
    let wi = w.get();
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            format!("engine before: t{e}"),
            format!("w runs as t{wi} with Some(Bool(true))"),
            format!("stepped true; engine after: t{e}"),
        ]
    );
    assert_eq!(sched.state(w), Some(TaskState::Finished));
    // Events: the nested task's `Running` and `Done` come inside the
    // engine's run, which has no `Yield`/`Running` of its own around them.
    let kinds: Vec<(u64, &'static str)> = events
        .events()
        .iter()
        .filter_map(|ev| Some((ev.task?.get(), ev.kind.name())))
        .filter(|(_, k)| *k != "spawned")
        .collect();
    let after = kinds
        .iter()
        .rposition(|(t, k)| *t == e && *k == "running")
        .expect("the engine's last run");
    assert_eq!(
        kinds[after..].to_vec(),
        vec![(e, "running"), (wi, "running"), (wi, "done"), (e, "done")]
    );
}

#[test]
fn the_nested_step_is_charged_to_its_task_and_throttled_by_its_budget() {
    // Every resume costs 1 ms; the quantum is 3 ms.
    let sched = sched_with(
        Scheduler::builder()
            .quantum(Duration::from_millis(3))
            .accounting(Accounting::PerStep(Duration::from_millis(1))),
    );
    let log: Log = Log::default();
    let ev = sched.new_event();
    // The nested task asks for its id again and again (answered at once):
    // its third step uses its quantum and it is throttled.
    let w = spawn(
        &sched,
        PRI_DEFAULT,
        waiter(&log, "w", ev, |n| {
            if n < 8 {
                Step::Syscall(SystemCall::GetTid)
            } else {
                Step::Done(Value::unit())
            }
        }),
    );
    let l = log.clone();
    let engine = spawn(
        &sched,
        PRI_DEFAULT,
        script(move |n, input| match n {
            1 => Step::Syscall(SystemCall::Yield),
            2 => {
                let stepped = with_sched(|s| s.step_now(w, ev));
                push(&l, format!("stepped {stepped}"));
                push(
                    &l,
                    format!("w is {:?}", with_sched(|s| s.state(w)).expect("w")),
                );
                // Two calls answered at once: the engine's own slice (one
                // step so far) is not the nested one's, so it is not
                // throttled at its second.
                Step::Syscall(SystemCall::GetTid)
            }
            3 => {
                push(&l, format!("engine got {input:?}"));
                Step::Syscall(SystemCall::Now)
            }
            _ => {
                push(&l, "engine goes on".to_string());
                Step::Done(Value::unit())
            }
        }),
    );
    sched.retain(w);
    sched.retain(engine);
    sched.run();
    let log = log.lock().unwrap().clone();
    let wi = w.get();
    assert_eq!(log[0], format!("w runs as t{wi} with Some(Bool(true))"));
    assert_eq!(
        log[1],
        format!("w runs as t{wi} with Some(Tid(TaskId({wi})))")
    );
    assert_eq!(
        log[2],
        format!("w runs as t{wi} with Some(Tid(TaskId({wi})))")
    );
    assert_eq!(log[3], "stepped true");
    assert_eq!(log[4], "w is Throttled");
    assert_eq!(
        log[5],
        format!("engine got Some(Tid(TaskId({})))", engine.get())
    );
    assert_eq!(log[6], "engine goes on");
    // Throttled in its nested step, and once more in a run of its own.
    assert_eq!(sched.info(w).expect("w").throttles, 2);
    assert_eq!(sched.info(engine).expect("engine").throttles, 0);
    assert_eq!(sched.state(w), Some(TaskState::Finished));
}

/// Busy work of `d` in real time: what measured accounting charges.
fn busy(d: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A hand-off under measured accounting (the real clock, read around each
/// run), with the timing metrics on or off (either reads the clock around
/// a nested step): the engine works `before`, then steps a waiter that
/// works `nested`. Returns what the waiter and the engine were charged.
fn measured_hand_off(timing: bool, before: Duration, nested: Duration) -> (Duration, Duration) {
    let sched = Scheduler::builder()
        .accounting(Accounting::Measured)
        .timing_metrics(timing)
        .build()
        .expect("scheduler");
    SCHED.with(|s| *s.borrow_mut() = Some(sched.clone()));
    let ev = sched.new_event();
    let log: Log = Log::default();
    let w = spawn(
        &sched,
        PRI_DEFAULT,
        waiter(&log, "w", ev, move |_| {
            busy(nested);
            Step::Done(Value::unit())
        }),
    );
    let engine = spawn(
        &sched,
        PRI_DEFAULT,
        script(move |n, _| match n {
            1 => Step::Syscall(SystemCall::Yield),
            _ => {
                busy(before);
                assert!(with_sched(|s| s.step_now(w, ev)));
                Step::Done(Value::unit())
            }
        }),
    );
    sched.retain(w);
    sched.retain(engine);
    sched.run();
    assert!(matches!(sched.outcome(w), Some(Outcome::Done(_))));
    let used = |t| sched.info(t).expect("a retained task").budget_used;
    (used(w), used(engine))
}

#[test]
fn measured_time_of_the_nested_step_is_not_the_callers() {
    for timing in [true, false] {
        let (w_used, e_used) = measured_hand_off(timing, Duration::ZERO, Duration::from_millis(20));
        assert!(w_used >= Duration::from_millis(20), "w charged {w_used:?}");
        assert!(
            e_used < Duration::from_millis(20),
            "the engine charged {e_used:?} (timing {timing}): the nested step's time included"
        );
    }
}

/// The other side of the test above: the caller is still charged its own
/// time around the nested step. (Its slice resumes counting from the
/// nested step's start; counted from anything else, the caller's time
/// vanishes.)
#[test]
fn measured_time_of_the_caller_around_a_nested_step_is_its_own() {
    for timing in [true, false] {
        let (_, e_used) = measured_hand_off(timing, Duration::from_millis(25), Duration::ZERO);
        assert!(
            e_used >= Duration::from_millis(20),
            "the engine charged {e_used:?} (timing {timing}) for 25 ms of its own work"
        );
    }
}

#[test]
fn a_nested_step_may_spawn_cancel_set_events_hand_off_again_and_end() {
    let sched = sched_with(Scheduler::builder());
    let log: Log = Log::default();
    let ev = sched.new_event();
    let ev2 = sched.new_event();
    let ev3 = sched.new_event();
    let dropped = Arc::new(AtomicBool::new(false));
    // A sleeper the nested step cancels.
    let victim = spawn(
        &sched,
        PRI_DEFAULT,
        script(|n, input| match n {
            1 => Step::Syscall(SystemCall::Sleep(Duration::from_secs(60))),
            _ if matches!(input, Some(Resume::Cancelled)) => Step::Cancelled,
            _ => Step::Done(Value::unit()),
        }),
    );
    // A task the nested step hands off to in turn.
    let inner = spawn(
        &sched,
        PRI_DEFAULT,
        waiter(&log, "inner", ev2, |_| Step::Done(Value::unit())),
    );
    // A task woken by an event the nested step sets (the ordinary way).
    spawn(
        &sched,
        PRI_DEFAULT,
        waiter(&log, "woken", ev3, |_| Step::Done(Value::unit())),
    );
    let l = log.clone();
    let child_log = log.clone();
    let d = dropped.clone();
    let w = sched
        .spawn_body(
            SpawnOptions::default(),
            Body::custom(Box::new(Script {
                f: Box::new(move |n, input| match n {
                    1 => Step::Syscall(SystemCall::EventWait(ev)),
                    2 => {
                        push(&l, format!("w runs as {}", current()));
                        // A nested step inside the nested step.
                        let again = with_sched(|s| s.step_now(inner, ev2));
                        push(&l, format!("handed off again {again}; w is {}", current()));
                        let cl = child_log.clone();
                        let child = with_sched(|s| {
                            s.spawn_body(
                                SpawnOptions::default(),
                                script(move |_, _| {
                                    push(&cl, "child runs");
                                    Step::Done(Value::unit())
                                }),
                            )
                        });
                        push(&l, format!("spawned {}", child.is_ok()));
                        assert!(with_sched(|s| s.set_event(ev3)));
                        Step::Syscall(SystemCall::Cancel(victim))
                    }
                    _ => {
                        push(&l, format!("w cancel answered {input:?}; ends"));
                        Step::Done(Value::unit())
                    }
                }),
                n: 0,
                dropped: Some(d),
            })),
        )
        .expect("spawn");
    let l = log.clone();
    let dd = dropped.clone();
    let engine = spawn(
        &sched,
        PRI_DEFAULT,
        script(move |n, _| {
            if n == 1 {
                return Step::Syscall(SystemCall::Yield);
            }
            let stepped = with_sched(|s| s.step_now(w, ev));
            push(
                &l,
                format!(
                    "engine: stepped {stepped}, current {}, w's body dropped {}",
                    current(),
                    dd.load(Ordering::SeqCst)
                ),
            );
            Step::Done(Value::unit())
        }),
    );
    sched.retain(victim);
    sched.retain(w);
    sched.run();
    let (e, wi, ii) = (engine.get(), w.get(), inner.get());
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log[..6],
        [
            format!("w runs as t{wi}"),
            format!("inner runs as t{ii} with Some(Bool(true))"),
            format!("handed off again true; w is t{wi}"),
            "spawned true".to_string(),
            "w cancel answered Some(Bool(true)); ends".to_string(),
            format!("engine: stepped true, current t{e}, w's body dropped true"),
        ]
    );
    // The spawned child and the task woken the ordinary way run afterwards.
    assert_eq!(log.len(), 8, "{log:?}");
    assert!(log[6..].contains(&"child runs".to_string()), "{log:?}");
    assert!(
        log[6..].iter().any(|l| l.starts_with("woken runs")),
        "{log:?}"
    );
    assert_eq!(sched.state(victim), Some(TaskState::Cancelled));
    assert_eq!(sched.state(w), Some(TaskState::Finished));
}

#[test]
fn step_now_falls_back_when_the_task_must_go_the_ordinary_way() {
    let sched = sched_with(Scheduler::builder());
    let ev = sched.new_event();
    let other = sched.new_event();
    let log: Log = Log::default();
    // Blocked on `ev`, default priority.
    let w = spawn(
        &sched,
        PRI_DEFAULT,
        waiter(&log, "w", ev, |_| Step::Done(Value::unit())),
    );
    // Blocked on `ev`, another priority.
    let high = spawn(
        &sched,
        PRI_SYSTEM,
        waiter(&log, "high", ev, |_| Step::Done(Value::unit())),
    );
    // Asleep, not waiting for an event.
    let sleeper = spawn(
        &sched,
        PRI_DEFAULT,
        script(|n, _| match n {
            1 => Step::Syscall(SystemCall::Sleep(Duration::from_secs(1))),
            _ => Step::Done(Value::unit()),
        }),
    );
    // A native (stackful) task waiting for `ev`.
    let native = sched
        .spawn(move |cx| {
            let _ = cx.event_wait(ev);
        })
        .expect("spawn");
    // Outside any task: nothing to nest in.
    assert!(!sched.step_now(w, ev));
    let l = log.clone();
    spawn(
        &sched,
        PRI_DEFAULT,
        script(move |n, _| {
            if n == 1 {
                return Step::Syscall(SystemCall::Yield);
            }
            let me = with_sched(|s| s.current_task()).expect("current");
            let tries = [
                ("the wrong event", w, other),
                ("another priority", high, ev),
                ("not waiting for an event", sleeper, ev),
                ("a native task", native, ev),
                ("itself", me, ev),
            ];
            for (what, task, event) in tries {
                push(
                    &l,
                    format!("{what}: {}", with_sched(|s| s.step_now(task, event))),
                );
            }
            // A task of the same priority made ready: it would run first.
            with_sched(|s| {
                s.spawn_body(
                    SpawnOptions::default(),
                    script(|_, _| Step::Done(Value::unit())),
                )
            })
            .expect("spawn");
            push(
                &l,
                format!(
                    "a task of the same priority is ready: {}",
                    with_sched(|s| s.step_now(w, ev))
                ),
            );
            Step::Done(Value::unit())
        }),
    );
    sched.run_until_idle();
    let log = log.lock().unwrap().clone();
    let tries: Vec<&String> = log.iter().filter(|l| l.contains(": ")).collect();
    assert_eq!(
        tries,
        [
            "the wrong event: false",
            "another priority: false",
            "not waiting for an event: false",
            "a native task: false",
            "itself: false",
            "a task of the same priority is ready: false",
        ]
    );
    // None of them was stepped: `w` is still waiting for its event.
    assert!(!log.iter().any(|l| l.starts_with("w runs")), "{log:?}");
}

#[test]
fn step_now_refuses_during_a_stop_and_does_what_the_loop_has_due_first() {
    let sched = sched_with(Scheduler::builder());
    let (ev, log, w) = waiter_w(&sched);
    // First run: a stop is requested, then a hand-off is tried.
    let l = log.clone();
    spawn(
        &sched,
        PRI_DEFAULT,
        script(move |n, _| {
            if n == 1 {
                // Let `w` block on its event first.
                return Step::Syscall(SystemCall::Yield);
            }
            push(
                &l,
                format!("stop asked: {}", with_sched(Scheduler::stop_requested)),
            );
            with_sched(Scheduler::stop_run);
            push(
                &l,
                format!("stop asked: {}", with_sched(Scheduler::stop_requested)),
            );
            push(
                &l,
                format!("during a stop: {}", with_sched(|s| s.step_now(w, ev))),
            );
            Step::Done(Value::unit())
        }),
    );
    sched.run();
    push(&log, format!("stop asked: {}", sched.stop_requested()));
    // Second run: a command from a handle is due (a spawn of a task of
    // `w`'s priority); the hand-off does the loop's pass first, and the
    // spawned task, ready, goes first.
    let l = log.clone();
    let mut handle = Some(sched.handle());
    spawn(
        &sched,
        PRI_DEFAULT,
        script(move |_, _| {
            let h = handle.take().expect("resumed once");
            h.spawn(|_cx| ()).expect("a spawn through the handle");
            drop(h);
            push(
                &l,
                format!("with a command due: {}", with_sched(|s| s.step_now(w, ev))),
            );
            Step::Done(Value::unit())
        }),
    );
    sched.run_until_idle();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "stop asked: false",
            "stop asked: true",
            "during a stop: false",
            "stop asked: false",
            "with a command due: false",
        ]
    );
    assert_eq!(
        sched.state(w),
        Some(TaskState::Waiting(WaitReason::Event(ev)))
    );
}

#[test]
fn a_task_spawned_waiting_takes_no_turn_before_its_event_and_may_be_stepped_now() {
    let sched = sched_with(Scheduler::builder());
    let events = EventLog::new();
    sched.subscribe(events.clone());
    let log: Log = Log::default();
    let (ev, ev2) = (sched.new_event(), sched.new_event());
    let first_input = |log: &Log, name: &'static str| {
        let log = log.clone();
        script(move |n, input| {
            push(
                &log,
                format!("{name} resume {n} as {} with {input:?}", current()),
            );
            Step::Done(Value::unit())
        })
    };
    // Stepped in the engine's turn: its first resume is the wait's answer.
    let w = sched
        .spawn_waiting(SpawnOptions::default(), first_input(&log, "w"), ev)
        .expect("spawn waiting");
    assert_eq!(
        sched.state(w),
        Some(TaskState::Waiting(WaitReason::Event(ev)))
    );
    // Woken the ordinary way, by its event.
    let w2 = sched
        .spawn_waiting(SpawnOptions::default(), first_input(&log, "w2"), ev2)
        .expect("spawn waiting");
    let l = log.clone();
    let engine = spawn(
        &sched,
        PRI_DEFAULT,
        script(move |n, _| {
            if n == 1 {
                push(&l, "engine runs first".to_string());
                let stepped = with_sched(|s| s.step_now(w, ev));
                push(&l, format!("stepped {stepped}"));
                with_sched(|s| s.set_event(ev2));
                return Step::Syscall(SystemCall::Yield);
            }
            Step::Done(Value::unit())
        }),
    );
    sched.run();
    let (wi, w2i) = (w.get(), w2.get());
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "engine runs first".to_string(),
            format!("w resume 1 as t{wi} with Some(Bool(true))"),
            "stepped true".to_string(),
            format!("w2 resume 1 as t{w2i} with Some(Bool(true))"),
        ]
    );
    // One `Running` each: no turn was spent blocking on the event.
    for t in [wi, w2i] {
        let runs = events
            .events()
            .iter()
            .filter(|e| e.task.map(|x| x.get()) == Some(t) && e.kind.name() == "running")
            .count();
        assert_eq!(runs, 1, "task {t}");
    }
    assert_eq!(sched.state(engine), Some(TaskState::Finished));
}

#[test]
fn spawn_waiting_refuses_a_set_or_unknown_event_and_dependencies() {
    let sched = sched_with(Scheduler::builder());
    let body = || script(|_, _| Step::Done(Value::unit()));
    let set = sched.new_event();
    sched.set_event(set);
    let gone = sched.new_event();
    sched.remove_event(gone);
    let free = sched.new_event();
    let dep = spawn(&sched, PRI_DEFAULT, body());
    for (event, options) in [
        (set, SpawnOptions::default()),
        (gone, SpawnOptions::default()),
        (
            free,
            SpawnOptions {
                deps: vec![dep],
                ..SpawnOptions::default()
            },
        ),
    ] {
        let err = sched.spawn_waiting(options, body(), event).unwrap_err();
        assert_eq!(err, SpawnError::CannotWait(event));
        assert_eq!(err.reason(), "cannot_wait");
        assert!(err.to_string().contains("not set"), "{err}");
    }
    assert_eq!(sched.live_tasks(), 1, "nothing refused was spawned");
    sched.run();
}

/// An abort sent before a hand-off is carried out by the pass the hand-off
/// stands in for: the waiter is abandoned there (no hand-off), and the
/// caller, still running, is still the current task; it is abandoned when
/// it next parks.
#[test]
fn an_abort_carried_out_by_a_hand_off_leaves_the_caller_current() {
    let sched = sched_with(Scheduler::builder());
    let (ev, _, w) = waiter_w(&sched);
    let h = sched.internal_handle();
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let engine = spawn(
        &sched,
        PRI_DEFAULT,
        script(move |n, _| match n {
            1 => Step::Syscall(SystemCall::Yield),
            2 => {
                h.abort().unwrap();
                assert!(!with_sched(|s| s.step_now(w, ev)));
                *s2.lock().unwrap() = Some(with_sched(|s| s.current_task()));
                Step::Syscall(SystemCall::Yield)
            }
            _ => Step::Done(Value::unit()),
        }),
    );
    sched.run_until_idle();
    assert_eq!(*seen.lock().unwrap(), Some(Some(engine)));
    assert_eq!(sched.metrics().abandoned, 2);
}
