//! Edge cancellation (`Scheduler::cancel_edge`, asyncio's `Task.cancel`):
//! one `Cancelled` per edge, after which the task may block again; shields
//! hide it; a task that never ran is resumed with it rather than dropped.
//! And `Scheduler::stop_run`: a run returns with its tasks still suspended.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiffany_scheduler::*;

/// Records every input; sleeps 10 s after each (a `Cancelled` is swallowed),
/// and ends after `steps` resumes.
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    steps: usize,
    shield: bool,
}

impl TaskBody for Recorder {
    fn resume(&mut self, input: Option<Resume>) -> Step {
        let what = match &input {
            None => "start".to_string(),
            Some(Resume::Cancelled) => "cancelled".to_string(),
            Some(other) => format!("{other:?}"),
        };
        self.seen.lock().unwrap().push(what);
        if self.seen.lock().unwrap().len() >= self.steps {
            return Step::Done(Value::unit());
        }
        if self.shield && input.is_none() {
            // Sleep inside a shielded scope for the task's whole life.
            self.shield = false;
            return Step::Syscall(SystemCall::Scope(ScopeCall::Enter(
                ScopeOptions::new().shielded(),
            )));
        }
        Step::Syscall(SystemCall::Sleep(Duration::from_secs(10)))
    }
}

fn recorder(sched: &Scheduler, steps: usize, shield: bool) -> (TaskId, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let body = Body::custom(Box::new(Recorder {
        seen: seen.clone(),
        steps,
        shield,
    }));
    let id = sched
        .spawn_body(SpawnOptions::default(), body)
        .expect("spawn");
    (id, seen)
}

thread_local! {
    /// The test's scheduler, for the bodies that call it (a body is `Send`).
    static SCHED: RefCell<Option<Scheduler>> = const { RefCell::new(None) };
}

fn virtual_sched() -> Scheduler {
    let sched = Scheduler::builder()
        .clock(Clock::Virtual)
        .build()
        .expect("scheduler");
    SCHED.with(|s| *s.borrow_mut() = Some(sched.clone()));
    sched
}

fn with_sched<R>(f: impl FnOnce(&Scheduler) -> R) -> R {
    SCHED.with(|s| f(s.borrow().as_ref().expect("a test scheduler")))
}

#[test]
fn an_edge_is_delivered_once_and_the_task_blocks_again() {
    let sched = virtual_sched();
    let (id, seen) = recorder(&sched, 4, false);
    assert!(!sched.edge_pending(id), "no edge yet");
    // Two edges before the task ran: one delivery (asyncio's rule), at its
    // first resume.
    assert!(sched.cancel_edge(id));
    assert!(sched.cancel_edge(id));
    assert!(sched.edge_pending(id));
    sched.run();
    let seen = seen.lock().unwrap();
    // cancelled (the first resume), then two full sleeps: not cancelled again.
    assert_eq!(*seen, ["cancelled", "Unit", "Unit", "Unit"]);
    assert_eq!(sched.now(), Duration::from_secs(30));
    assert!(matches!(sched.outcome(id), Some(Outcome::Done(_))));
}

#[test]
fn an_edge_wakes_a_sleeping_task_once() {
    let sched = virtual_sched();
    let (id2, seen2) = recorder(&sched, 3, false);
    // Let it start and sleep, then cancel it once from a helper task.
    spawn_edge_at(&sched, id2);
    sched.run();
    // Woken at 1 s by the edge, then a whole 10 s sleep.
    assert_eq!(*seen2.lock().unwrap(), ["start", "cancelled", "Unit"]);
    assert_eq!(sched.now(), Duration::from_secs(11));
    assert!(!sched.edge_pending(id2));
}

/// Spawns an [`EdgeAt`] of `target`.
fn spawn_edge_at(sched: &Scheduler, target: TaskId) {
    sched
        .spawn_body(
            SpawnOptions::default(),
            Body::custom(Box::new(EdgeAt {
                target,
                done: false,
            })),
        )
        .expect("spawn");
}

/// Sleeps 1 s, then cancels `target` once (an edge) and ends.
struct EdgeAt {
    target: TaskId,
    done: bool,
}

impl TaskBody for EdgeAt {
    fn resume(&mut self, _input: Option<Resume>) -> Step {
        if self.done {
            assert!(with_sched(|s| s.cancel_edge(self.target)));
            return Step::Done(Value::unit());
        }
        self.done = true;
        Step::Syscall(SystemCall::Sleep(Duration::from_secs(1)))
    }
}

#[test]
fn a_shield_hides_an_edge() {
    let sched = virtual_sched();
    // Enters a shield at its first resume, then sleeps 10 s three times.
    let (id, seen) = recorder(&sched, 5, true);
    spawn_edge_at(&sched, id);
    sched.run();
    // The edge at 1 s never reached it: three whole sleeps.
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "start",
            "Scope(Entered(ScopeId(1)))",
            "Unit",
            "Unit",
            "Unit"
        ]
    );
    assert_eq!(sched.now(), Duration::from_secs(30));
}

#[test]
fn stop_run_returns_with_the_tasks_suspended() {
    let sched = virtual_sched();
    let (id, seen) = recorder(&sched, 5, false);
    sched
        .spawn_body(
            SpawnOptions::default(),
            Body::custom(Box::new(StopAt { slept: false })),
        )
        .expect("spawn");
    sched.run();
    // Stopped at 15 s: the recorder slept once (0–10 s) and sleeps again.
    assert_eq!(sched.now(), Duration::from_secs(15));
    assert_eq!(*seen.lock().unwrap(), ["start", "Unit"]);
    assert!(matches!(sched.state(id), Some(TaskState::Sleeping { .. })));
    // The next run goes on with it.
    sched.run();
    assert_eq!(seen.lock().unwrap().len(), 5);
    assert!(matches!(sched.outcome(id), Some(Outcome::Done(_))));
}

/// Sleeps 15 s, then stops the run and ends.
struct StopAt {
    slept: bool,
}

impl TaskBody for StopAt {
    fn resume(&mut self, _input: Option<Resume>) -> Step {
        if self.slept {
            with_sched(Scheduler::stop_run);
            return Step::Done(Value::unit());
        }
        self.slept = true;
        Step::Syscall(SystemCall::Sleep(Duration::from_secs(15)))
    }
}

/// Records each input with what `take_edge` answers (twice, to see the
/// answer is given once): enters a scope with a 25 s deadline, then sleeps
/// 10 s, 10 s and 20 s.
struct EdgeReader {
    seen: Arc<Mutex<Vec<(String, bool, bool)>>>,
}

impl TaskBody for EdgeReader {
    fn resume(&mut self, input: Option<Resume>) -> Step {
        let what = match &input {
            None => "start".to_string(),
            Some(Resume::Cancelled) => "cancelled".to_string(),
            Some(other) => format!("{other:?}"),
        };
        let (first, second) = with_sched(|s| {
            let me = s.current_task().expect("resumed by the scheduler");
            (s.take_edge(me), s.take_edge(me))
        });
        let mut seen = self.seen.lock().unwrap();
        seen.push((what, first, second));
        Step::Syscall(match seen.len() {
            1 => SystemCall::Scope(ScopeCall::Enter(
                ScopeOptions::new().deadline(Duration::from_secs(25)),
            )),
            2 | 3 => SystemCall::Sleep(Duration::from_secs(10)),
            4 => SystemCall::Sleep(Duration::from_secs(20)),
            _ => return Step::Done(Value::unit()),
        })
    }
}

#[test]
fn take_edge_tells_an_edge_from_a_scope_cancellation_once() {
    let sched = virtual_sched();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let id = sched
        .spawn_body(
            SpawnOptions::default(),
            Body::custom(Box::new(EdgeReader { seen: seen.clone() })),
        )
        .expect("spawn");
    spawn_edge_at(&sched, id);
    sched.run();
    let seen = seen.lock().unwrap();
    let row = |what: &str, first: bool| (what.to_string(), first, false);
    assert_eq!(
        *seen,
        [
            row("start", false),
            row("Scope(Entered(ScopeId(1)))", false),
            // The edge at 1 s: told once.
            row("cancelled", true),
            // A whole sleep (1 s to 11 s).
            row("Unit", false),
            // The scope's deadline at 25 s: not the edge.
            row("cancelled", false),
        ]
    );
    assert_eq!(sched.now(), Duration::from_secs(25));
    assert!(!sched.take_edge(TaskId::from_raw(9_999)));
}
