//! The scheduler: spawn tasks, run them, shut down.
//!
//! [`Scheduler`] is the public face of the kernel. It owns the `core`
//! state and drives it: take the next ready task, resume it *without* holding
//! the core, apply its system call, deliver events to subscribers, and when
//! nothing is runnable, sleep in the reactor until the next timer, I/O event or
//! wake (or, on the virtual clock, jump to the next timer).
//!
//! A task's life, from `spawn` to done, in the order the code runs it:
//!
//! 1. [`Scheduler::spawn`] → `Core::spawn`: id, record, `Spawned` event, and into
//!    the ready queue (or `Pending` until its dependencies finish).
//! 2. [`Scheduler::run`] → `Scheduler::step` → `Core::next_ready`: popped,
//!    `Running`, resumed through its [`Body`].
//! 3. The body answers a [`Step`]: `Core::after_step` applies a system call
//!    (answer at once, throttle, or block on a timer, join or I/O), or ends it.
//! 4. A blocked task is woken by `Core::wake` (timer, joined task's end, I/O
//!    readiness, cancel), goes back to the ready queue, and step 2 repeats.
//! 5. `Core::finish`: outcome recorded, joiners woken, dependents released or
//!    cancelled, `Done`/`Failed`/`Cancelled` event, record freed when nothing
//!    can ask for it any more.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::instrument;

use crate::backpressure::BackPressureListener;
use crate::body::{Body, NativeTask, Step, TaskResult};
use crate::builder::{
    BlockingWrapper, Builder, DeadlockReport, FailureReport, InterruptCheck, PRESSURE_RECHECK,
};
use crate::cadence::Cadence;
use crate::clock::Clock;
use crate::core::{Core, Deferred, Next};
use crate::deadlock::Deadlock;
use crate::error::{SpawnError, SyscallError};
use crate::event::EventId;
use crate::handle::{Command, Handle, Shared};
use crate::io::{Interest, IoSource, IoToken};
use crate::metrics::MetricsSnapshot;
use crate::outcome::{Outcome, TaskError, Value};
use crate::scope::{ScopeAnswer, ScopeCall, ScopeId, ScopeOptions, ScopeRef, ScopeStatus};
use crate::shard::Spawner;
use crate::shutdown::{ShutdownHook, ShutdownResult};
use crate::task::{SpawnOptions, TaskId, TaskInfo, TaskState};
use crate::telemetry::{EventSubscriber, TaskEvent};

/// Called once when a watched task ends (see [`Scheduler::on_task_end`]).
pub type EndCallback = Box<dyn FnOnce(TaskId, &Outcome)>;

/// Called when the scheduler runs out of ready tasks, to take in more work
/// (a shard pool's queues); returns how many tasks it spawned.
pub(crate) type Intake = Box<dyn FnMut(&Scheduler) -> usize>;

/// The callbacks a binding plugs in through the [`Builder`].
pub(crate) struct Callbacks {
    pub(crate) listener: Option<Box<dyn BackPressureListener>>,
    pub(crate) blocking: Option<BlockingWrapper>,
    pub(crate) interrupt: Option<InterruptCheck>,
    pub(crate) unobserved: Option<FailureReport>,
    pub(crate) deadlock: Option<DeadlockReport>,
    pub(crate) intake: Option<Intake>,
}

struct Inner {
    core: RefCell<Core>,
    subscribers: RefCell<Vec<Box<dyn EventSubscriber>>>,
    hooks: RefCell<Vec<Box<dyn ShutdownHook>>>,
    listener: RefCell<Option<Box<dyn BackPressureListener>>>,
    blocking: Option<BlockingWrapper>,
    interrupt: RefCell<Option<InterruptCheck>>,
    unobserved: RefCell<Option<FailureReport>>,
    deadlock: RefCell<Option<DeadlockReport>>,
    /// The step count when a deadlock was last reported (one report per stall).
    deadlock_seen: Cell<Option<u64>>,
    /// The deadlock that ended the last run.
    last_deadlock: RefCell<Option<Deadlock>>,
    intake: RefCell<Option<Intake>>,
    shared: Arc<Shared>,
    running: Cell<bool>,
    /// [`Scheduler::stop_run`] was called: the run returns at once.
    stop: Cell<bool>,
    cadence: Cadence,
    end_callbacks: RefCell<HashMap<TaskId, Vec<EndCallback>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Pending commands hold task bodies and deferred work: drop them (and
        // run the deferred closures) here, on this thread.
        for cmd in self.shared.close() {
            if let Command::Defer(f) = cmd
                && panic::catch_unwind(AssertUnwindSafe(f)).is_err()
            {
                tracing::error!(target: "tiffany::handle", "a deferred closure panicked");
            }
        }
    }
}

/// When a run loop stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Every non-daemon task finished (daemons are then cancelled) — `run`.
    AllDone,
    /// A shutdown completed and every task ended — `serve`.
    Shutdown,
    /// The shutdown in progress completed — a nested drain.
    ShutdownComplete,
}

/// A coroutine scheduler on the current thread.
///
/// Cheap to clone (it is a reference-counted handle to one scheduler); not
/// `Send`: use [`Scheduler::handle`] to reach it from other threads.
///
/// ```
/// use std::time::Duration;
/// use tiffany_scheduler::{Scheduler, JoinResult, Spawner};
///
/// let sched = Scheduler::builder().virtual_clock().build().unwrap();
/// let child = sched.spawn(|cx| { cx.sleep(Duration::from_millis(50)); 21 * 2 }).unwrap();
/// sched.spawn(move |cx| match cx.join(child) {
///     JoinResult::Success(v) => assert_eq!(v.downcast_ref::<i32>(), Some(&42)),
///     other => panic!("{other:?}"),
/// }).unwrap();
/// let order = sched.run();
/// assert_eq!(order.len(), 2);
/// assert_eq!(sched.now(), Duration::from_millis(50));
/// ```
#[derive(Clone)]
pub struct Scheduler {
    inner: Rc<Inner>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl Scheduler {
    /// A scheduler with the default settings (real clock, 5 ms quantum, no
    /// capacity limit).
    ///
    /// # Panics
    ///
    /// If the OS refuses to create a poller (file descriptors exhausted); use
    /// [`Scheduler::builder`] and [`Builder::build`] to handle that as an error.
    pub fn new() -> Self {
        Builder::default()
            .build()
            .unwrap_or_else(|e| panic!("tiffany: cannot create the scheduler's poller: {e}"))
    }

    /// A builder for the options.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Puts a scheduler together from what [`Builder::build`] made.
    pub(crate) fn from_parts(
        core: Core,
        shared: Arc<Shared>,
        cadence: Cadence,
        callbacks: Callbacks,
    ) -> Scheduler {
        Scheduler {
            inner: Rc::new(Inner {
                core: RefCell::new(core),
                subscribers: RefCell::new(Vec::new()),
                hooks: RefCell::new(Vec::new()),
                listener: RefCell::new(callbacks.listener),
                blocking: callbacks.blocking,
                interrupt: RefCell::new(callbacks.interrupt),
                unobserved: RefCell::new(callbacks.unobserved),
                deadlock: RefCell::new(callbacks.deadlock),
                deadlock_seen: Cell::new(None),
                last_deadlock: RefCell::new(None),
                intake: RefCell::new(callbacks.intake),
                shared,
                running: Cell::new(false),
                stop: Cell::new(false),
                cadence,
                end_callbacks: RefCell::new(HashMap::new()),
            }),
        }
    }

    // ----- spawning -----------------------------------------------------------

    /// Spawns a ready-made body: a custom [`TaskBody`](crate::TaskBody) (a
    /// binding's coroutine, a state machine) or a native [`Body`].
    pub fn spawn_body(&self, options: SpawnOptions, body: Body) -> Result<TaskId, SpawnError> {
        let r = self.inner.core.borrow_mut().spawn(body, options, None);
        self.after_user_call();
        r
    }

    /// Spawns `body` already waiting on `event`, as if its first step had
    /// been a wait for it: it does not take a turn until the event is set
    /// (or a [`step_now`](Scheduler::step_now) for that event steps it), so
    /// a task whose first step belongs to someone else's schedule (an
    /// asyncio task, started by its loop's FIFO entry) costs no kernel step
    /// before it. Its first resume gets `Bool(true)`, as the wait's answer.
    /// Refused (`SpawnError::CannotWait`) for an unknown or set event and
    /// for a task with dependencies.
    pub fn spawn_waiting(
        &self,
        options: SpawnOptions,
        body: Body,
        event: EventId,
    ) -> Result<TaskId, SpawnError> {
        let r = self
            .inner
            .core
            .borrow_mut()
            .spawn_waiting(body, options, event);
        self.after_user_call();
        r
    }

    /// Makes `task` (not started yet) also wait for `on`. Refuses cycles,
    /// self-dependencies and unknown ids.
    pub fn add_dependency(&self, task: TaskId, on: TaskId) -> Result<(), SpawnError> {
        let r = self.inner.core.borrow_mut().add_dependency(task, on);
        self.after_user_call();
        r
    }

    /// Cancels a task: a task that never ran ends at once; a suspended one is
    /// resumed with `Cancelled`; the running one sees it at its next blocking
    /// call. Returns whether the task was still live.
    pub fn cancel(&self, task: TaskId) -> bool {
        let r = self.inner.core.borrow_mut().cancel(task).unwrap_or(false);
        self.after_user_call();
        r
    }

    /// Cancels a task once, asyncio's way (an *edge*): it is resumed with
    /// `Cancelled` at its current or next suspension, once; afterwards it
    /// may block again. Shields hide it as they hide a task cancellation; a
    /// task that never ran is resumed with `Cancelled` rather than dropped.
    /// [`take_edge`](Self::take_edge) tells a body that a `Cancelled` it
    /// received was this edge. Returns whether the task was still live.
    pub fn cancel_edge(&self, task: TaskId) -> bool {
        let r = self
            .inner
            .core
            .borrow_mut()
            .cancel_edge(task)
            .unwrap_or(false);
        self.after_user_call();
        r
    }

    /// Renames a task: its [`info`](Self::info) and the failure reports
    /// name it so from now on, and so does its `Spawned` event if the
    /// subscribers have not been handed it yet (a name set right after the
    /// spawn, as asyncio's `create_task` sets it). Returns whether the
    /// task's record exists.
    pub fn set_name(&self, task: TaskId, name: &str) -> bool {
        self.inner.core.borrow_mut().set_name(task, name)
    }

    /// Whether the task has an edge cancellation ([`cancel_edge`](Self::cancel_edge))
    /// not yet delivered.
    pub fn edge_pending(&self, task: TaskId) -> bool {
        self.inner.core.borrow().edge_pending(task)
    }

    /// Whether the last `Cancelled` the task was resumed with was its edge
    /// cancellation (not a cancelled scope or a task cancellation); the
    /// answer is given once.
    pub fn take_edge(&self, task: TaskId) -> bool {
        self.inner.core.borrow_mut().take_edge(task)
    }

    /// Carries out a cancel-scope call (see [`crate::scope`]). `Enter`,
    /// `Exit` and `EffectiveDeadline` act on the running task and are for a
    /// custom body to call from inside its step (the Python binding's
    /// `CancelScope`); `Cancel`, `SetDeadline`, `SetShield` and `Status` name
    /// their task and may be called from anywhere on the scheduler's thread.
    /// A native task makes the same calls through its [`TaskContext`](crate::TaskContext).
    pub fn scope(&self, call: ScopeCall) -> Result<ScopeAnswer, SyscallError> {
        let r = self.inner.core.borrow_mut().scope_call_from_step(call);
        self.after_user_call();
        r
    }

    /// Cancels a scope of a task: the code inside it sees `Cancelled` at
    /// its blocking calls (woken at once if blocked, unless a shield inside
    /// the scope hides it), and the scope absorbs the cancellation when the
    /// task leaves it. Returns the scope's state after the call.
    pub fn cancel_scope(&self, scope: ScopeRef) -> Result<ScopeStatus, SyscallError> {
        match self.scope(ScopeCall::Cancel(scope))? {
            ScopeAnswer::Status(s) => Ok(s),
            other => unreachable!("Cancel answered {other:?}"),
        }
    }

    /// Enters a new innermost cancel scope of the running task; for a
    /// custom body, from inside its step. `Err(NotInTask)` outside a task.
    pub fn enter_scope(&self, options: ScopeOptions) -> Result<ScopeId, SyscallError> {
        match self.scope(ScopeCall::Enter(options))? {
            ScopeAnswer::Entered(id) => Ok(id),
            other => unreachable!("Enter answered {other:?}"),
        }
    }

    /// Leaves a cancel scope of the running task (and any still open inside
    /// it). Answers [`ScopeAnswer::Exited`]: whether the scope had been
    /// cancelled, and whether it absorbs the cancellation.
    pub fn exit_scope(&self, scope: ScopeId) -> Result<ScopeAnswer, SyscallError> {
        self.scope(ScopeCall::Exit(scope))
    }

    // ----- running ----------------------------------------------------------

    /// Runs until every task has finished (daemon tasks are cancelled once the
    /// others are done) and returns the ids in the order they finished.
    #[instrument(level = "debug", skip(self))]
    pub fn run(&self) -> Vec<TaskId> {
        self.inner.core.borrow_mut().finish_order = Some(Vec::new());
        self.run_loop(Until::AllDone);
        self.inner
            .core
            .borrow_mut()
            .finish_order
            .take()
            .unwrap_or_default()
    }

    /// Ends the current run (of [`run`](Self::run), [`run_until_idle`](Self::run_until_idle)
    /// or [`serve`](Self::serve)) as soon as the running step parks: the
    /// run returns and every live task stays as it is — suspended or
    /// ready — for the next run to go on with. This is how an asyncio
    /// loop's `stop()` returns from `run_forever` while its tasks live on.
    /// Outside a run, nothing happens.
    pub fn stop_run(&self) {
        if self.inner.running.get() {
            self.inner.stop.set(true);
        }
    }

    /// Runs until every task has finished, without recording the order (for
    /// long runs).
    #[instrument(level = "debug", skip(self))]
    pub fn run_until_idle(&self) {
        self.run_loop(Until::AllDone);
    }

    /// Runs as a service: keeps running while idle, until a shutdown (from a
    /// task, a [`Handle`] or an interrupt) has completed and every task ended.
    #[instrument(level = "debug", skip(self))]
    pub fn serve(&self) -> ShutdownResult {
        self.run_loop(Until::Shutdown);
        self.inner
            .core
            .borrow()
            .shutdown_result()
            .unwrap_or(ShutdownResult::Clean)
    }

    /// Shuts down: refuses new spawns, lets tasks finish until `timeout`,
    /// cancels the rest, runs the hooks, and returns how it went.
    ///
    /// Called while the scheduler is running on this thread (from a custom
    /// body or a subscriber), it drains the other tasks right there; the
    /// caller is not part of the drain.
    #[instrument(level = "info", skip(self))]
    pub fn shutdown(&self, timeout: Duration) -> ShutdownResult {
        {
            let mut core = self.inner.core.borrow_mut();
            if let Some(r) = core.shutdown_result() {
                return r;
            }
            // Called from inside a task (a Python task calling this directly):
            // that task is not part of the drain it waits for.
            let requester = core.current_waiter();
            core.begin_shutdown(timeout, requester, false);
        }
        let was_running = self.inner.running.replace(false);
        self.run_loop(Until::ShutdownComplete);
        self.inner.running.set(was_running);
        self.inner
            .core
            .borrow()
            .shutdown_result()
            .unwrap_or(ShutdownResult::Timeout)
    }

    /// A thread-safe handle to this scheduler. While it (or a clone) is
    /// alive, it counts as something that may wake the scheduler from
    /// outside, so a run in which every task waits is not reported as a
    /// [`Deadlock`].
    pub fn handle(&self) -> Handle {
        Handle::new(self.inner.shared.clone(), true)
    }

    /// A thread-safe handle that does not count as a possible outside
    /// waker for deadlock detection: for a binding's own plumbing (a signal
    /// handler, routing destructors to this thread), which keeps a handle
    /// for the scheduler's whole life without being a reason to wait.
    pub fn internal_handle(&self) -> Handle {
        Handle::new(self.inner.shared.clone(), false)
    }

    /// The deadlock that ended the last run, if one did (virtual clock).
    pub fn take_deadlock(&self) -> Option<Deadlock> {
        self.inner.last_deadlock.borrow_mut().take()
    }

    // ----- configuration ------------------------------------------------------

    /// Changes the CPU quantum.
    pub fn set_quantum(&self, quantum: Duration) {
        self.inner.core.borrow_mut().config.quantum = quantum;
    }

    /// Adds an event subscriber. Events are built only while someone subscribes.
    pub fn subscribe(&self, subscriber: impl EventSubscriber + 'static) {
        let batch = subscriber.max_batch().max(1);
        self.inner
            .subscribers
            .borrow_mut()
            .push(Box::new(subscriber));
        let mut core = self.inner.core.borrow_mut();
        core.subscribed = true;
        core.event_batch = core.event_batch.min(batch);
    }

    /// Calls `callback` once `task` has ended, on the scheduler's thread between
    /// steps. If the task has already ended (and its record exists) the
    /// callback runs at once. Returns `false` (and drops the callback) for an
    /// unknown task.
    pub fn on_task_end(
        &self,
        task: TaskId,
        callback: impl FnOnce(TaskId, &Outcome) + 'static,
    ) -> bool {
        let watching = self.inner.core.borrow_mut().watch_end(task);
        if watching {
            self.inner
                .end_callbacks
                .borrow_mut()
                .entry(task)
                .or_default()
                .push(Box::new(callback));
            return true;
        }
        let outcome = self.inner.core.borrow().outcome(task);
        match outcome {
            Some(o) => {
                self.run_end_callback(task, &o, Box::new(callback));
                true
            }
            None => false,
        }
    }

    /// Counts a failure of a callback that the caller caught itself (for
    /// bindings whose callbacks raise instead of panicking).
    pub fn record_callback_error(&self) {
        if let Ok(mut core) = self.inner.core.try_borrow_mut() {
            core.metrics.callback_errors += 1;
        }
    }

    fn run_end_callback(&self, task: TaskId, outcome: &Outcome, cb: EndCallback) {
        if panic::catch_unwind(AssertUnwindSafe(|| cb(task, outcome))).is_err() {
            tracing::error!(target: "tiffany::telemetry", task = task.get(), "an end callback panicked");
            self.record_callback_error();
        }
    }

    /// Adds a hook run at the end of a shutdown, after the last task.
    pub fn add_shutdown_hook(&self, hook: impl ShutdownHook + 'static) {
        self.inner.hooks.borrow_mut().push(Box::new(hook));
    }

    /// Sets (or replaces) the back-pressure listener.
    pub fn set_backpressure_listener(&self, listener: impl BackPressureListener + 'static) {
        *self.inner.listener.borrow_mut() = Some(Box::new(listener));
        self.inner.core.borrow_mut().has_listener = true;
    }

    // ----- I/O ------------------------------------------------------------------

    /// Registers a source with the reactor; tasks then wait on its token.
    pub fn register_io(&self, source: &impl IoSource) -> io::Result<IoToken> {
        self.inner
            .core
            .borrow_mut()
            .reactor
            .register(source.raw_fd())
    }

    /// Registers a source without a file descriptor: an in-memory readiness
    /// channel. Tasks wait on its token like on any source; readiness comes
    /// from [`notify_io`](Self::notify_io) or [`Handle::notify_io`] (from any
    /// thread). Useful for completions from other threads.
    pub fn register_channel(&self) -> IoToken {
        self.inner.core.borrow_mut().reactor.register_channel()
    }

    /// Deregisters a source; tasks waiting on it are answered with an error.
    pub fn deregister_io(&self, token: IoToken) -> bool {
        let r = self.inner.core.borrow_mut().deregister_io(token);
        self.after_user_call();
        r
    }

    /// Reports readiness through the in-memory channel. Returns `false` for an
    /// unknown token.
    pub fn notify_io(&self, token: IoToken, interest: Interest) -> bool {
        let r = self.inner.core.borrow_mut().notify_io(token, interest);
        self.after_user_call();
        r
    }

    // ----- events ---------------------------------------------------------------

    /// Creates an event (clear). Tasks wait on it with
    /// [`SystemCall::EventWait`](crate::SystemCall::EventWait); see [`crate::event`].
    pub fn new_event(&self) -> EventId {
        self.inner.core.borrow_mut().events_sync.create()
    }

    /// Sets an event: every task waiting on it is woken, and later waits are
    /// answered at once until it is cleared. Returns `false` for an unknown
    /// event.
    pub fn set_event(&self, event: EventId) -> bool {
        let r = self.inner.core.borrow_mut().set_event(event);
        self.after_user_call();
        r
    }

    /// Clears an event: later waits block until it is set again. Returns
    /// `false` for an unknown event.
    pub fn clear_event(&self, event: EventId) -> bool {
        self.inner.core.borrow_mut().events_sync.clear(event)
    }

    /// Whether an event is set (`None` for an unknown event).
    pub fn is_event_set(&self, event: EventId) -> Option<bool> {
        self.inner.core.borrow().events_sync.is_set(event)
    }

    /// Removes an event nobody waits on, freeing its slot; returns whether it
    /// was removed (`false` if unknown, or if tasks still wait on it). Safe
    /// to call from a destructor that may run while the scheduler is busy
    /// (it then does nothing and answers `false`).
    pub fn remove_event(&self, event: EventId) -> bool {
        match self.inner.core.try_borrow_mut() {
            Ok(mut core) => core.remove_event(event),
            Err(_) => false,
        }
    }

    /// How many events exist.
    pub fn event_count(&self) -> usize {
        self.inner.core.borrow().events_sync.len()
    }

    // ----- introspection --------------------------------------------------------

    /// The scheduler's time (virtual clock: starts at zero, moves only by jumps).
    pub fn now(&self) -> Duration {
        self.inner.core.borrow().clock.now()
    }

    /// A reader of this scheduler's clock that may be sent to, and read
    /// on, any thread (the scheduler itself stays on its own).
    pub fn clock_reader(&self) -> crate::clock::ClockReader {
        self.inner.core.borrow().clock.reader()
    }

    /// Which clock this scheduler uses.
    pub fn clock(&self) -> Clock {
        self.inner.core.borrow().clock.kind()
    }

    /// A task's state, while its record exists.
    pub fn state(&self, task: TaskId) -> Option<TaskState> {
        self.inner.core.borrow().state(task)
    }

    /// A task's details, while its record exists.
    pub fn info(&self, task: TaskId) -> Option<TaskInfo> {
        self.inner.core.borrow().info(task)
    }

    /// A finished task's outcome, while its record exists.
    pub fn outcome(&self, task: TaskId) -> Option<Outcome> {
        self.inner.core.borrow().outcome(task)
    }

    /// A finished task's value, if it returned one and its record exists.
    pub fn value(&self, task: TaskId) -> Option<Value> {
        self.inner.core.borrow().value_of(task)
    }

    /// A failed task's error, while its record exists.
    pub fn error(&self, task: TaskId) -> Option<TaskError> {
        self.inner.core.borrow().error_of(task)
    }

    /// Keeps a task's record (and outcome) until [`release`](Self::release).
    /// Returns `false` if the record is already gone.
    pub fn retain(&self, task: TaskId) -> bool {
        self.inner.core.borrow_mut().retain(task)
    }

    /// Marks a task's outcome as received by someone (a binding's
    /// `result()`); returns whether it already had been (joined, or observed
    /// before). Unknown tasks count as observed.
    pub fn observe(&self, task: TaskId) -> bool {
        self.inner.core.borrow_mut().observe(task)
    }

    /// Drops one [`retain`](Self::retain); the record is freed once nothing
    /// else needs it.
    pub fn release(&self, task: TaskId) {
        if let Ok(mut core) = self.inner.core.try_borrow_mut() {
            core.release(task);
        }
    }

    /// The task being resumed right now, if any.
    pub fn current_task(&self) -> Option<TaskId> {
        self.inner.core.borrow().current_task()
    }

    /// Tasks not yet ended.
    pub fn live_tasks(&self) -> usize {
        self.inner.core.borrow().live()
    }

    /// Task records held (live tasks plus finished ones still retained).
    pub fn task_records(&self) -> usize {
        self.inner.core.borrow().known_records()
    }

    /// The last pressure reading (0.0–1.0).
    pub fn pressure(&self) -> f64 {
        self.inner.core.borrow().pressure()
    }

    /// Whether intake is paused by back-pressure.
    pub fn is_paused(&self) -> bool {
        self.inner.core.borrow().paused()
    }

    /// Whether a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.core.borrow().shutting_down()
    }

    /// A copy of the metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        let core = self.inner.core.borrow();
        core.metrics.snapshot(core.ready_len(), core.live())
    }

    /// The metrics in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        self.metrics().to_prometheus()
    }

    // ----- the loop -------------------------------------------------------------

    fn run_loop(&self, until: Until) {
        let inner = &*self.inner;
        let nested = inner.running.replace(true);
        let _span = tracing::debug_span!("tiffany.run").entered();
        loop {
            if inner.stop.replace(false) {
                break;
            }
            self.pass();
            if self.step() {
                continue;
            }
            // Nothing ready.
            self.maintenance();
            if self.inner.core.borrow().has_ready() || self.intake() > 0 {
                continue;
            }
            if self.progress_shutdown() && until == Until::ShutdownComplete {
                break;
            }
            if self.should_stop(until) {
                break;
            }
            self.subscribers_idle();
            if !self.idle_wait(until) {
                break;
            }
        }
        self.flush();
        self.subscribers_idle();
        // A reading from the last step must not stamp what happens later.
        inner.core.borrow_mut().carried_now = None;
        inner.running.set(nested);
    }

    /// What the loop does on each pass before it runs tasks: the commands
    /// from other threads, and when due, timers, I/O and the interrupt
    /// check (maintenance), and the pressure reading.
    #[inline]
    fn pass(&self) {
        let inner = &*self.inner;
        if inner.shared.pending.load(Ordering::Acquire) {
            self.drain_inbox();
        }
        let due = inner.cadence.pass();
        if due.maintenance || inner.core.borrow().chores_due() {
            self.timers_and_io();
            self.check_interrupt();
        }
        if due.pressure {
            self.check_pressure();
        }
    }

    /// Runs ready tasks, each until it parks or ends. Returns `false` if none
    /// was ready.
    ///
    /// After a task parks, the next ready one is taken at once as long as
    /// the loop has nothing due between two steps ([`quiet_pass`]); else
    /// this returns to the loop, which does what is due first. A task that
    /// yields while nothing else would run before it is resumed without the
    /// trip through the ready queue.
    ///
    /// [`quiet_pass`]: Scheduler::quiet_pass
    #[inline]
    fn step(&self) -> bool {
        let inner = &*self.inner;
        let (first, mut lone) = {
            let mut core = inner.core.borrow_mut();
            (core.next_ready(), core.nothing_ready())
        };
        let Some((mut slot, mut body, mut input)) = first else {
            return false;
        };
        loop {
            // A native task may yield in place only if nothing else is ready
            // as it is resumed: the queue does not shrink while it runs.
            let step: Step = body.resume(input, lone.then_some(self));
            let mut core = inner.core.borrow_mut();
            match core.after_step(slot, step) {
                Next::Continue(answer) => {
                    lone = core.nothing_ready();
                    if core.events_due() {
                        drop(core);
                        self.dispatch_events();
                    }
                    input = Some(answer);
                    continue;
                }
                Next::Park => core.park(slot, body),
                Next::Yielded => {
                    // With chores pending the task goes through the queue:
                    // what the chores make ready must go behind it.
                    if !core.has_chores() && core.would_run_next(slot) && self.quiet_pass(&core) {
                        input = Some(core.rerun_yielded(slot));
                        lone = core.nothing_ready();
                        // Its `Running` event may have filled a batch.
                        if core.events_due() {
                            drop(core);
                            self.dispatch_events();
                        }
                        continue;
                    }
                    core.queue_yielded(slot, body);
                }
                Next::End => {
                    // Dropped outside the borrow: a body's destructor may
                    // call back into the scheduler.
                    drop(core);
                    drop(body);
                    core = inner.core.borrow_mut();
                }
            }
            if core.has_chores() {
                drop(core);
                self.do_chores();
                core = inner.core.borrow_mut();
            }
            if !(core.has_ready() && self.quiet_pass(&core)) || inner.stop.get() {
                return true;
            }
            match core.next_ready() {
                Some(next) => (slot, body, input) = next,
                None => return true,
            }
            lone = core.nothing_ready();
        }
    }

    /// A native task's yield done in place, from the task's own stack (in
    /// the middle of [`step`](Scheduler::step)'s resume of it): when the
    /// task would be taken straight back out of the ready queue, and the
    /// loop has nothing due on its next pass, the yield's bookkeeping is
    /// done (charge, `Yield` and `Running` events, a fresh turn) and the
    /// task goes on without the two stack switches. `false` when the yield
    /// must go the long way; nothing has been done then.
    pub(crate) fn yield_in_place(&self) -> bool {
        let inner = &*self.inner;
        let Ok(mut core) = inner.core.try_borrow_mut() else {
            return false;
        };
        let Some((slot, id)) = core.running().filter(|_| core.nothing_ready()) else {
            return false;
        };
        if !core.may_yield_in_place(slot) || !self.quiet_pass(&core) {
            return false;
        }
        let next = core.yield_task(slot, id);
        debug_assert!(matches!(next, Next::Yielded));
        let input = core.rerun_yielded(slot);
        debug_assert!(matches!(input, crate::syscall::Resume::Unit));
        true
    }

    /// Steps `task` now, inside the running task's turn, on its stack: the
    /// direct hand-off of an event loop to a task it wakes (ADR 12). `task`
    /// must be blocked waiting for `event`; it is resumed as if the event
    /// had been set (answered `Bool(true)`), as the running task for the
    /// time of its step — [`current_task`](Self::current_task) names it,
    /// its run is charged to its own budget (not the caller's) and may be
    /// throttled, its events are its own — and its system calls are
    /// applied as the scheduler's loop applies them: answered at once
    /// (the step goes on), or it blocks, yields (back into the ready
    /// queue), or ends. Then the caller is the running task again, its
    /// slice as it was, and this returns `true`. Everything a step may do
    /// works from the nested one (spawn, cancel, set events, another
    /// nested step).
    ///
    /// Returns `false`, having done nothing, when the task must go the
    /// ordinary way (set the event, and let the scheduler run it): outside
    /// a task's step or inside a nested borrow; `task` is not waiting for
    /// `event`, or is cancelled; either task is native (stackful); their
    /// priorities differ; a task of that priority or a higher one is ready
    /// (it runs first), or the run is being stopped. The step stands in
    /// for a pass of the scheduler's loop and counts as one: what the loop
    /// has due on its next pass (commands from other threads, timers, I/O,
    /// the interrupt check, the pressure reading) is done first, and so are
    /// the events and end callbacks pending, as the loop hands them out
    /// between two runs; if that readies a task that must run first, this
    /// returns `false`.
    pub fn step_now(&self, task: TaskId, event: EventId) -> bool {
        let inner = &*self.inner;
        let Ok(mut core) = inner.core.try_borrow_mut() else {
            return false;
        };
        if core.has_chores() {
            // Handed to subscribers and callbacks first, as the loop would
            // between the caller's run and the task's.
            drop(core);
            self.do_chores();
            core = inner.core.borrow_mut();
        }
        if inner.stop.get() {
            return false;
        }
        let Some(mut slot) = core.nested_target(task, event) else {
            return false;
        };
        if !self.quiet_pass(&core) {
            // The loop has something due: the hand-off stands in for its
            // pass, and does what the pass would do first (in the ordinary
            // way the task, woken, would wait in the ready queue meanwhile).
            drop(core);
            self.pass();
            self.flush();
            core = inner.core.borrow_mut();
            // (Again: the pass may have readied a task that runs first.)
            let Some(again) = core.nested_target(task, event) else {
                return false;
            };
            slot = again;
        }
        let (mut body, answer, saved) = core.begin_nested(slot);
        drop(core);
        let mut input = Some(answer);
        loop {
            let step = body.resume(input, None);
            let mut core = inner.core.borrow_mut();
            match core.after_step(slot, step) {
                Next::Continue(answer) => {
                    if core.events_due() {
                        drop(core);
                        self.dispatch_events();
                    }
                    input = Some(answer);
                    continue;
                }
                Next::Park => core.park(slot, body),
                Next::Yielded => core.queue_yielded(slot, body),
                Next::End => {
                    // Dropped outside the borrow, as the loop does.
                    drop(core);
                    drop(body);
                    core = inner.core.borrow_mut();
                }
            }
            core.end_nested(saved);
            let chores = core.has_chores();
            drop(core);
            if chores {
                self.do_chores();
            }
            return true;
        }
    }

    /// Whether [`stop_run`](Self::stop_run) was called in the current run
    /// (by a nested step, say): the running task should park soon, and the
    /// run then returns.
    pub fn stop_requested(&self) -> bool {
        self.inner.stop.get()
    }

    /// Counts a pass of the loop if nothing is due on it: no command in the
    /// inbox, no maintenance, no pressure check. [`step`](Scheduler::step)
    /// (taking the next task itself, resuming a yielder) and a yield in
    /// place use it to stand in for a pass, so the loop's cadence is the
    /// same whichever way a task goes; when something is due it returns
    /// `false`, counts nothing, and the work goes back through the loop.
    #[inline]
    fn quiet_pass(&self, core: &Core) -> bool {
        let inner = &*self.inner;
        if inner.shared.pending.load(Ordering::Acquire) || core.chores_due() {
            return false;
        }
        inner.cadence.quiet_pass()
    }

    /// Takes in work from the intake (a shard pool), if any.
    fn intake(&self) -> usize {
        let Ok(mut intake) = self.inner.intake.try_borrow_mut() else {
            return 0;
        };
        let Some(f) = intake.as_mut() else {
            return 0;
        };
        let n = f(self);
        drop(intake);
        self.flush();
        n
    }

    /// Spawns a body under an id reserved elsewhere (a shard pool's shared ids).
    pub(crate) fn spawn_with_id(
        &self,
        id: TaskId,
        body: Body,
        options: SpawnOptions,
    ) -> Result<TaskId, SpawnError> {
        let r = self
            .inner
            .core
            .borrow_mut()
            .spawn_with_id(id, body, options);
        self.after_user_call();
        r
    }

    /// Delivers buffered events and drops dead bodies, outside the core borrow.
    #[inline]
    fn flush(&self) {
        if self.inner.core.borrow().has_chores() {
            self.do_chores();
        }
    }

    #[cold]
    #[inline(never)]
    fn do_chores(&self) {
        let (events_due, graveyard, ended, unobserved) = {
            let core = self.inner.core.borrow();
            (
                core.events_due(),
                !core.graveyard.is_empty(),
                !core.ended.is_empty(),
                !core.unobserved.is_empty(),
            )
        };
        if unobserved {
            self.report_unobserved();
        }
        if graveyard {
            let dead = std::mem::take(&mut self.inner.core.borrow_mut().graveyard);
            drop(dead);
        }
        if events_due {
            self.dispatch_events();
        }
        if ended {
            self.dispatch_end_callbacks();
        }
        // Callbacks and destructors ran: the time they took is nobody's, so
        // the reading taken as the last task parked must not start the next
        // task's run (it would be charged for them, and could be throttled
        // at its first system call).
        self.inner.core.borrow_mut().carried_now = None;
    }

    fn report_unobserved(&self) {
        let failures = std::mem::take(&mut self.inner.core.borrow_mut().unobserved);
        let Ok(mut report) = self.inner.unobserved.try_borrow_mut() else {
            return;
        };
        for (task, error) in failures {
            match report.as_mut() {
                Some(f) => {
                    if panic::catch_unwind(AssertUnwindSafe(|| f(task, &error))).is_err() {
                        self.record_callback_error();
                    }
                }
                None => tracing::warn!(
                    target: "tiffany",
                    task = task.get(),
                    error = %error,
                    "a task failed and nothing was waiting for it"
                ),
            }
        }
    }

    fn dispatch_end_callbacks(&self) {
        let ended = std::mem::take(&mut self.inner.core.borrow_mut().ended);
        for (task, outcome) in ended {
            let callbacks = self.inner.end_callbacks.borrow_mut().remove(&task);
            for cb in callbacks.into_iter().flatten() {
                self.run_end_callback(task, &outcome, cb);
            }
        }
    }

    fn dispatch_events(&self) {
        let events: Vec<TaskEvent> = std::mem::take(&mut self.inner.core.borrow_mut().events);
        if events.is_empty() {
            return;
        }
        let errors = self.each_subscriber(|sub| sub.on_events(&events));
        let mut core = self.inner.core.borrow_mut();
        core.metrics.callback_errors += errors;
        // Time spent in subscribers is not the next task's.
        core.carried_now = None;
        // Reuse the buffer.
        let mut events = events;
        events.clear();
        if core.events.is_empty() {
            core.events = events;
        }
    }

    /// Calls `f` on every subscriber (a panic is caught, logged and counted:
    /// returns how many). Subscribers added meanwhile are kept.
    fn each_subscriber(&self, mut f: impl FnMut(&mut Box<dyn EventSubscriber>)) -> u64 {
        let mut subs = std::mem::take(&mut *self.inner.subscribers.borrow_mut());
        let mut errors = 0;
        for sub in subs.iter_mut() {
            if panic::catch_unwind(AssertUnwindSafe(|| f(sub))).is_err() {
                errors += 1;
                tracing::error!(target: "tiffany::telemetry", "an event subscriber panicked");
            }
        }
        let mut slot = self.inner.subscribers.borrow_mut();
        let added = std::mem::take(&mut *slot);
        subs.extend(added);
        *slot = subs;
        errors
    }

    /// Tells subscribers the scheduler is about to wait or end its run.
    fn subscribers_idle(&self) {
        if !self.inner.core.borrow().subscribed {
            return;
        }
        self.dispatch_events();
        let errors = self.each_subscriber(|sub| sub.on_idle());
        let mut core = self.inner.core.borrow_mut();
        core.metrics.callback_errors += errors;
        core.carried_now = None;
    }

    /// After a call from user code outside a step: deliver events, drop bodies.
    fn after_user_call(&self) {
        if !self.inner.running.get() {
            self.flush();
        }
    }

    /// Timers due, I/O without blocking, pressure.
    fn maintenance(&self) {
        self.timers_and_io();
        self.check_pressure();
    }

    /// Fires due timers and looks for I/O without blocking.
    fn timers_and_io(&self) {
        {
            let mut core = self.inner.core.borrow_mut();
            if !core.timers.is_empty() {
                let now = core.clock.now();
                if core.timers.next_deadline().is_some_and(|d| d <= now) {
                    core.fire_timers(now);
                }
            }
            if core.reactor.has_sources()
                && let Err(e) = core.poll_io(Some(Duration::ZERO))
            {
                tracing::error!(target: "tiffany::io", error = %e, "poll failed");
            }
        }
    }

    fn check_pressure(&self) {
        let (enabled, own) = {
            let core = self.inner.core.borrow();
            (core.pressure_enabled(), core.own_load())
        };
        if !enabled {
            return;
        }
        let external = match self.inner.listener.try_borrow_mut() {
            Ok(mut l) => match l.as_mut() {
                Some(listener) => {
                    match panic::catch_unwind(AssertUnwindSafe(|| listener.pressure())) {
                        Ok(p) => p,
                        Err(_) => {
                            tracing::error!(target: "tiffany::backpressure", "the pressure listener panicked");
                            self.inner.core.borrow_mut().metrics.callback_errors += 1;
                            0.0
                        }
                    }
                }
                None => 0.0,
            },
            Err(_) => 0.0,
        };
        let reading = if external.is_nan() {
            own
        } else {
            external.max(own)
        };
        self.inner.core.borrow_mut().apply_pressure(reading);
    }

    /// Carries out the commands other threads sent. The core applies each;
    /// deferred closures run here, outside its borrow.
    fn drain_inbox(&self) {
        for cmd in self.inner.shared.take_inbox() {
            let deferred = self.inner.core.borrow_mut().apply_command(cmd);
            let ok = match deferred {
                None => true,
                Some(Deferred::Plain(f)) => panic::catch_unwind(AssertUnwindSafe(f)).is_ok(),
                Some(Deferred::WithScheduler(f)) => {
                    panic::catch_unwind(AssertUnwindSafe(|| f(self))).is_ok()
                }
            };
            if !ok {
                tracing::error!(target: "tiffany::handle", "a deferred closure panicked");
                self.record_callback_error();
            }
        }
        self.flush();
    }

    /// Advances a shutdown; runs the hooks when it is time. Returns whether the
    /// shutdown is complete.
    fn progress_shutdown(&self) -> bool {
        let result = {
            let mut core = self.inner.core.borrow_mut();
            if !core.shutting_down() {
                return false;
            }
            if core.shutdown_result().is_some() {
                return true;
            }
            core.advance_shutdown()
        };
        self.flush();
        let Some(result) = result else {
            return false;
        };
        let mut hooks = std::mem::take(&mut *self.inner.hooks.borrow_mut());
        for hook in hooks.iter_mut() {
            if panic::catch_unwind(AssertUnwindSafe(|| hook.on_shutdown(result))).is_err() {
                tracing::error!(target: "tiffany::shutdown", "a shutdown hook panicked");
                self.inner.core.borrow_mut().metrics.callback_errors += 1;
            }
        }
        self.inner.core.borrow_mut().complete_shutdown(result);
        self.flush();
        true
    }

    fn should_stop(&self, until: Until) -> bool {
        let mut core = self.inner.core.borrow_mut();
        if core.has_ready() || self.inner.shared.pending.load(Ordering::Acquire) {
            return false;
        }
        match until {
            Until::AllDone => {
                if core.shutdown_result().is_some() {
                    return core.live() == 0;
                }
                if core.shutting_down() {
                    return false;
                }
                if core.live_nondaemon() == 0 {
                    if core.live() == 0 {
                        return true;
                    }
                    core.cancel_daemons();
                    drop(core);
                    self.flush();
                    return false;
                }
                false
            }
            Until::Shutdown => core.shutdown_result().is_some() && core.live() == 0,
            Until::ShutdownComplete => core.shutdown_result().is_some(),
        }
    }

    /// Waits for something to happen. Returns `false` when nothing ever can
    /// (every live task is blocked with no timer, I/O or handle to wake it).
    fn idle_wait(&self, until: Until) -> bool {
        let inner = &*self.inner;
        let mut core = inner.core.borrow_mut();
        if core.has_ready() {
            return true;
        }
        // A command may have arrived after the loop last looked, and its
        // wake-up been swallowed by a non-blocking poll since (maintenance
        // polls I/O without blocking): do not block with it unread. A command
        // sent after this check wakes the poller below.
        if inner.shared.pending.load(Ordering::Acquire) {
            return true;
        }
        let paused_waiting = core.paused() && core.held_or_admitting();
        let next = core.next_live_deadline();
        if core.clock.is_virtual() {
            // Outside I/O first, without blocking.
            if core.reactor.has_sources() {
                let _ = core.poll_io(Some(Duration::ZERO));
                if core.has_ready() {
                    return true;
                }
            }
            if let Some(deadline) = next {
                core.clock.jump_to(deadline);
                core.fire_timers(deadline);
                return true;
            }
        }
        let now = core.clock.now();
        let mut timeout = match next {
            _ if core.clock.is_virtual() => None,
            Some(d) => Some(d.saturating_sub(now)),
            None => None,
        };
        if paused_waiting && core.has_listener {
            timeout = Some(timeout.map_or(PRESSURE_RECHECK, |t| t.min(PRESSURE_RECHECK)));
        }
        // What could still wake a task: a timer, I/O (sockets, pipes,
        // completions from other threads), a handle given out to user code,
        // or, for a service, the shutdown request it waits for.
        let can_wake = timeout.is_some()
            || core.reactor.waiting() > 0
            || inner.shared.outside_handles.load(Ordering::Acquire) > 0
            || until == Until::Shutdown;
        if !can_wake {
            let virtual_clock = core.clock.is_virtual();
            if core.live() > 0 {
                let steps = core.metrics.steps;
                let report = (inner.deadlock_seen.get() != Some(steps)).then(|| {
                    inner.deadlock_seen.set(Some(steps));
                    core.deadlock_report()
                });
                drop(core);
                if let Some(report) = report {
                    self.report_deadlock(&report);
                    if virtual_clock {
                        *inner.last_deadlock.borrow_mut() = Some(report);
                    }
                }
                core = inner.core.borrow_mut();
                // Reporting ran user code: it may have made work.
                if core.has_ready() || inner.shared.pending.load(Ordering::Acquire) {
                    return true;
                }
            }
            // Under the virtual clock nothing but what was checked can move
            // time on: the run ends. Under the real clock, an interrupt
            // check (a binding's Ctrl-C) may still end the wait.
            if virtual_clock || inner.interrupt.borrow().is_none() {
                return false;
            }
        }
        let mut result = Ok(());
        let mut wait = || result = core.poll_io(timeout);
        match &inner.blocking {
            Some(wrapper) => wrapper(&mut wait),
            None => wait(),
        }
        if let Err(e) = result {
            tracing::error!(target: "tiffany::io", error = %e, "poll failed");
        }
        let now = core.clock.now();
        if !core.clock.is_virtual() {
            core.fire_timers(now);
        }
        drop(core);
        self.check_interrupt();
        self.flush();
        true
    }

    /// Hands a deadlock to the `on_deadlock` callback (or logs it).
    fn report_deadlock(&self, report: &Deadlock) {
        let Ok(mut callback) = self.inner.deadlock.try_borrow_mut() else {
            return;
        };
        match callback.as_mut() {
            Some(f) => {
                if panic::catch_unwind(AssertUnwindSafe(|| f(report))).is_err() {
                    drop(callback);
                    tracing::error!(target: "tiffany", "the deadlock callback panicked");
                    self.record_callback_error();
                }
            }
            None => tracing::warn!(target: "tiffany", "{report}"),
        }
    }

    fn check_interrupt(&self) {
        let request = match self.inner.interrupt.try_borrow_mut() {
            Ok(mut check) => check.as_mut().and_then(|f| f()),
            Err(_) => None,
        };
        if let Some(timeout) = request {
            self.inner
                .core
                .borrow_mut()
                .begin_shutdown(timeout, None, false);
        }
    }
}

impl Spawner for Scheduler {
    /// Spawns a native task (at once, in this scheduler's table). Safe to
    /// call while the scheduler runs (from a custom body's step or a
    /// subscriber). With dependencies, it starts once every one finished
    /// successfully, and is cancelled if one fails or is cancelled.
    fn spawn_with<R: TaskResult>(
        &self,
        options: SpawnOptions,
        f: impl NativeTask<R>,
    ) -> Result<TaskId, SpawnError> {
        let stack = self.inner.core.borrow().config.stack_size;
        self.spawn_body(options, Body::native_with_stack(stack, f)?)
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inner.core.try_borrow() {
            Ok(core) => f
                .debug_struct("Scheduler")
                .field("clock", &core.clock.kind())
                .field("now", &core.clock.now())
                .field("live", &core.live())
                .field("ready", &core.ready_len())
                .finish(),
            Err(_) => f.write_str("Scheduler { <running> }"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Scheduler;
    use crate::JoinResult;
    use crate::shard::Spawner;
    use crate::test_support::within;

    /// `Handle::wake` reaches the scheduler's poller: a shard pool wakes an
    /// idle shard with it when it queues work there.
    #[test]
    fn a_handle_wake_reaches_the_poller() {
        let s = Scheduler::builder().build().unwrap();
        let h = s.internal_handle();
        let woken = || s.inner.core.borrow_mut().reactor.take_wake();
        assert!(!woken());
        h.wake();
        assert!(woken());
        assert!(!woken());
    }

    /// A join that times out leaves a stale entry in its target's joiner
    /// list; `join` prunes the entries that are no longer a current wait
    /// as the list grows (at 64, 128, … entries), also those of a task
    /// that is blocked again — here on its next join of the same target.
    /// A task that keeps joining with a timeout must not grow the list
    /// without bound, and a joiner still waiting must stay listed.
    #[test]
    fn stale_joiner_entries_are_pruned_as_the_list_grows() {
        // Bounded: a run that never reaches its deadlock fails, not hangs.
        within(|| {
            let s = Scheduler::builder().virtual_clock().build().unwrap();
            let ev = s.new_event();
            let target = s.spawn(move |cx| cx.event_wait(ev).unwrap()).unwrap();
            let patient = s
                .spawn(move |cx| matches!(cx.join(target), JoinResult::Success(_)))
                .unwrap();
            let looper = s
                .spawn(move |cx| {
                    (0..200)
                        .map(|_| cx.join_timeout(target, Duration::from_millis(1)))
                        .all(|r| matches!(r, JoinResult::Timeout))
                })
                .unwrap();
            s.retain(looper);
            s.retain(patient);
            // The looper ends; the target waits for an event nobody sets and the
            // patient for the target: a deadlock, which ends the run under the
            // virtual clock with both still blocked.
            s.run_until_idle();
            assert!(s.take_deadlock().is_some());
            let value = |t| s.value(t).and_then(|v| v.downcast_ref::<bool>().copied());
            assert_eq!(value(looper), Some(true), "every join timed out");
            // Pruned as the list reached 64 entries (before the looper's
            // joins 64, 127 and 190), down to the patient's: the patient and
            // the eleven latest joins are left, and no stale entry was dropped
            // before the list reached 64.
            let entries = s.inner.core.borrow().joiner_entries(target);
            assert_eq!(entries, 12, "joiner entries after 200 timed-out joins");
            // The patient's entry was kept: the target's end reaches it.
            assert!(s.set_event(ev));
            s.run_until_idle();
            assert_eq!(value(patient), Some(true));
        });
    }
}
