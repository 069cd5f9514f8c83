//! Helpers shared by the kernel's integration tests (the modules of the
//! `kernel` test binary).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiffany_scheduler::{
    EventKind, EventLog, Handle, IoToken, Scheduler, SpawnError, Spawner, TaskContext, TaskEvent,
    TaskId,
};

/// How long a cross-thread test waits for the other side before it gives up.
/// A watchdog against hangs only: no test asserts on wall-clock time. The
/// slowest kernel test takes about 2 s under a load of 7; 15 s keeps a hung
/// cross-thread test failing well inside `just mutants`' 40 s limit, so a
/// mutant it catches counts as caught, not as a timeout.
pub const WATCHDOG: Duration = Duration::from_secs(15);

/// Waits (at most [`WATCHDOG`]) for the scheduler side to signal on `rx`;
/// on a hang, stops the scheduler through `handle` and fails with `what`.
/// What every helper thread of a cross-thread test does before acting.
pub fn await_signal<T>(rx: &mpsc::Receiver<T>, handle: &Handle, what: &str) -> T {
    match rx.recv_timeout(WATCHDOG) {
        Ok(v) => v,
        Err(_) => {
            let _ = handle.request_shutdown(Duration::ZERO);
            panic!("{what}");
        }
    }
}

/// The kernel's own bounded-run helper (`within_for(bound, f)`), shared
/// with its unit tests.
#[path = "../../src/test_support.rs"]
mod test_support;
pub(crate) use test_support::within_for as within;

/// The writer side of the I/O tests: spawns a task that sleeps `after`
/// (virtual time), writes `bytes` to `w` and, without `async-io` (no poller
/// sees the write), reports `token` readable through a handle. The handle
/// also keeps the run from being judged a deadlock while the writer sleeps.
pub fn spawn_writer(
    s: &Scheduler,
    token: IoToken,
    after: Duration,
    mut w: impl std::io::Write + Send + 'static,
    bytes: &'static [u8],
) -> TaskId {
    let handle = s.handle();
    s.spawn(move |cx| {
        cx.sleep(after);
        w.write_all(bytes).unwrap();
        #[cfg(not(feature = "async-io"))]
        handle
            .notify_io(token, tiffany_scheduler::Interest::Readable)
            .unwrap();
        #[cfg(feature = "async-io")]
        let _ = token;
        drop(handle);
    })
    .unwrap()
}

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A scheduler on the virtual clock with default settings.
pub fn vsched() -> Scheduler {
    Scheduler::builder()
        .virtual_clock()
        .build()
        .expect("a poller")
}

/// Subscribes an [`EventLog`] and returns it.
pub fn logged(s: &Scheduler) -> EventLog {
    let log = EventLog::new();
    s.subscribe(log.clone());
    log
}

/// `(task id, event name)` for every event.
pub fn kinds(events: &[TaskEvent]) -> Vec<(Option<u64>, &'static str)> {
    events
        .iter()
        .map(|e| (e.task.map(TaskId::get), e.kind.name()))
        .collect()
}

/// The names of the events of one task, in order.
pub fn task_kinds(events: &[TaskEvent], id: TaskId) -> Vec<&'static str> {
    events
        .iter()
        .filter(|e| e.task == Some(id))
        .map(|e| e.kind.name())
        .collect()
}

/// How many events of one kind name a task has.
pub fn count_kind(events: &[TaskEvent], id: TaskId, name: &str) -> usize {
    events
        .iter()
        .filter(|e| e.task == Some(id) && e.kind.name() == name)
        .count()
}

/// Events not tied to a task (pause, resume, shutdown, spawn denied).
pub fn global_kinds(events: &[TaskEvent]) -> Vec<&'static str> {
    events
        .iter()
        .filter(|e| e.task.is_none())
        .map(|e| e.kind.name())
        .collect()
}

/// Events not tied to a task, with their fields.
pub fn global_events(events: &[TaskEvent]) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| e.task.is_none())
        .map(|e| e.kind.clone())
        .collect()
}

/// Whether the event is a task's end.
pub fn is_terminal(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Done | EventKind::Failed { .. } | EventKind::Cancelled
    )
}

/// A shared, ordered record that tasks (which must be `Send`) append to.
#[derive(Clone, Default)]
pub struct Trace<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Trace<T> {
    pub fn new() -> Self {
        Trace(Arc::new(Mutex::new(Vec::new())))
    }

    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }

    pub fn get(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
}

/// Sets its flag when dropped: proves a task's destructors ran.
pub struct DropFlag(pub Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A flag and a guard that sets it when dropped.
pub fn drop_flag() -> (Arc<AtomicBool>, DropFlag) {
    let flag = Arc::new(AtomicBool::new(false));
    (flag.clone(), DropFlag(flag))
}

pub fn is_set(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}

/// A pressure value a test or a task changes and a listener reads.
#[derive(Clone)]
pub struct Pressure(Arc<AtomicU64>);

impl Pressure {
    pub fn new(p: f64) -> Self {
        Pressure(Arc::new(AtomicU64::new(p.to_bits())))
    }

    pub fn set(&self, p: f64) {
        self.0.store(p.to_bits(), Ordering::SeqCst);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }

    /// A back-pressure listener reading this value.
    pub fn listener(&self) -> impl FnMut() -> f64 + 'static {
        let p = self.clone();
        move || p.get()
    }
}

/// The typed value a finished task returned.
pub fn value_of<T: Clone + 'static>(s: &Scheduler, id: TaskId) -> T {
    s.value(id)
        .unwrap_or_else(|| panic!("task {id} has no value (outcome {:?})", s.outcome(id)))
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("task {id} returned another type"))
        .clone()
}

/// An event subscriber that sends `()` on every `io_wait` event.
pub fn on_io_wait(tx: mpsc::Sender<()>) -> impl FnMut(&TaskEvent) + 'static {
    move |e: &TaskEvent| {
        if matches!(e.kind, EventKind::IoWait { .. }) {
            let _ = tx.send(());
        }
    }
}

/// Spawns from inside a task and unwraps.
pub fn child<F, R>(cx: &mut TaskContext<'_>, f: F) -> TaskId
where
    F: FnOnce(&mut TaskContext<'_>) -> R + Send + 'static,
    R: Send + Sync + 'static,
{
    cx.spawn(f).expect("spawn from a task")
}

/// Asserts a spawn error's kind.
pub fn assert_denied(r: Result<TaskId, SpawnError>, expected: SpawnError) {
    match r {
        Err(e) => assert_eq!(e, expected),
        Ok(id) => panic!("spawn accepted as task {id}, expected {expected:?}"),
    }
}
