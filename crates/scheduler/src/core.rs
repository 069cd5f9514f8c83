//! The scheduler's state and every rule that changes it.
//!
//! `Core` is the single-threaded heart of the scheduler: the task table, the
//! ready queue, the timers, the reactor, the counters. Its methods never call
//! user code (no task body, no subscriber, no hook): the driver in
//! [`scheduler`](crate::scheduler) borrows the core, takes a task out, lets go
//! of the core while the task runs, and borrows it again to apply what the task
//! asked for. That split is what lets a Python task call back into the scheduler
//! (to spawn, say) in the middle of its step.

use std::collections::VecDeque;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::backpressure::{Change, Gate, Watermarks};
use crate::body::{Body, Step};
use crate::budget::Accounting;
use crate::clock::TimeSource;
use crate::error::{SpawnError, SyscallError};
use crate::event::{EventId, EventWait, Events};
use crate::handle::{Command, Shared};
use crate::ids::IdMap;
use crate::io::{Interest, IoReady, IoToken, Reactor, WaitStart};
use crate::metrics::Metrics;
use crate::outcome::{JoinResult, Outcome, TaskError, Value};
use crate::ready::{ReadyKey, ReadyQueue};
use crate::scope::{
    ScopeAnswer, ScopeCall, ScopeId, ScopeOptions, ScopeRec, ScopeRef, effective_deadline,
    effectively_cancelled,
};
use crate::shard::{RemoteJoins, RemoteNotify, RemoteTasks};
use crate::shutdown::{Advance, Shutdown, ShutdownResult};
use crate::syscall::{Resume, SystemCall};
use crate::table::Table;
use crate::task::{Priority, SpawnOptions, TaskId, TaskInfo, TaskState, WaitReason};
use crate::telemetry::{EventKind, TaskEvent};
use crate::timer::{TimerKind, Timers};
use crate::waiter::Waiter;

/// Settings fixed when the scheduler is built (the quantum may change later).
pub(crate) struct Config {
    pub(crate) quantum: Duration,
    pub(crate) accounting: Accounting,
    /// What one step costs under [`Accounting::PerStep`], in nanoseconds.
    pub(crate) step_cost: u64,
    pub(crate) watermarks: Watermarks,
    pub(crate) retain_finished: usize,
    pub(crate) timing: bool,
    pub(crate) stack_size: usize,
    /// Poll I/O without blocking at least this often while busy.
    pub(crate) io_poll_interval: Duration,
}

/// Whether the task's code is effectively cancelled now (see
/// [`crate::scope`]), and whether it has been told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cancel {
    No,
    /// Effectively cancelled, not yet seen by the task.
    Requested,
    /// The task has been resumed with `Cancelled` at least once since it
    /// became effectively cancelled.
    Delivered,
}

/// A task's record. Kept small (every live task has one, and a busy
/// scheduler walks them in no particular order): durations are stored as
/// nanoseconds, and what most tasks never use lives in [`Extra`], allocated
/// on first use.
struct Task {
    id: TaskId,
    state: TaskState,
    body: Option<Body>,
    input: Option<Resume>,
    outcome: Option<Outcome>,
    io: Option<(IoToken, Interest)>,
    /// Its name, if it has one. (In the record, not in [`Extra`]: every
    /// task made through asyncio has one, and a box of its own for it was
    /// an allocation and a sixth of such a task's memory.)
    name: Option<Arc<str>>,
    /// Dependencies, dependents, joiners and scopes, if the task has any.
    extra: Option<Box<Extra>>,
    /// CPU time charged so far, in nanoseconds.
    budget_used: u64,
    /// When it became ready (run latency) or blocked (wait time), in
    /// nanoseconds of scheduler time.
    since: u64,
    generation: u32,
    pending_deps: u32,
    retains: u32,
    throttles: u32,
    priority: Priority,
    system: bool,
    daemon: bool,
    started: bool,
    queued: bool,
    cancel: Cancel,
    /// The task as a whole was cancelled (its root scope).
    root_cancelled: bool,
    /// A pending *edge* cancellation (asyncio's `Task.cancel`, see
    /// [`Core::cancel_edge`]): delivered once, as the root's would be, then
    /// gone.
    edge: bool,
    /// The last `Cancelled` delivered to the task consumed its edge.
    edge_taken: bool,
    retained_window: bool,
    /// Someone registered an end callback: report the end to the driver.
    watch_end: bool,
    /// Someone received the outcome (a join, or an explicit observation).
    observed: bool,
    /// Its body runs on a stack of its own (a native task): it is never
    /// part of a nested step ([`Core::begin_nested`]).
    stackful: bool,
    /// A shutdown's deadline passed while it was alive: it has been
    /// cancelled, and is abandoned the next time it would park.
    abandon: bool,
    /// It passed the admission gate and holds one unit of capacity for its
    /// next spawn, until it spawns or parks.
    admitted: bool,
}

/// The parts of a task record that most tasks never use.
#[derive(Default)]
struct Extra {
    /// The tasks it was made to wait for (for cycle detection).
    deps: Vec<TaskId>,
    /// Tasks waiting for it to finish before they start.
    dependents: Vec<ReadyKey>,
    /// Tasks blocked joining it.
    joiners: Vec<Waiter>,
    /// Its open cancel scopes, innermost last.
    scopes: Vec<ScopeRec>,
    /// The id of the last scope it entered.
    last_scope: u32,
}

/// A duration as whole nanoseconds (saturating: 584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    // 64-bit arithmetic (this runs several times per step; `as_nanos` is a
    // 128-bit product).
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

impl Task {
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn name(&self) -> Option<&Arc<str>> {
        self.name.as_ref()
    }

    fn has_joiners(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| !e.joiners.is_empty())
    }

    fn key(&self, slot: usize) -> ReadyKey {
        ReadyKey { slot, id: self.id }
    }

    fn waiter(&self, slot: usize) -> Waiter {
        Waiter {
            slot,
            task: self.id,
            generation: self.generation,
        }
    }

    fn is_blocked(&self) -> bool {
        matches!(
            self.state,
            TaskState::Sleeping { .. } | TaskState::Waiting(_)
        )
    }
}

/// Work a command hands back to the driver, to run outside the core's borrow.
pub(crate) enum Deferred {
    Plain(Box<dyn FnOnce() + Send>),
    WithScheduler(Box<dyn FnOnce(&crate::Scheduler) + Send>),
}

/// What the driver does after a step was applied.
pub(crate) enum Next {
    /// Resume the same task at once with this answer.
    Continue(Resume),
    /// The task is parked (blocked, queued or throttled): store its body.
    Park,
    /// The task yielded and its run has been charged. The driver resumes it
    /// at once if it would be the next to run anyway ([`Core::rerun_yielded`]),
    /// else queues it behind its peers ([`Core::queue_yielded`]).
    Yielded,
    /// The task ended: drop its body (outside the core borrow).
    End,
}

/// What a nested step ([`Core::begin_nested`]) keeps of the run it
/// interrupts.
pub(crate) struct Nested {
    outer: (usize, TaskId),
    slice_start: Duration,
    slice_steps: u32,
    now_fresh: bool,
    /// When the nested run began (its slice's start).
    began: Duration,
}

/// The scheduler's state.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) clock: TimeSource,
    tasks: Table<Task>,
    ids: IdMap,
    ready: ReadyQueue,
    pub(crate) timers: Timers,
    pub(crate) reactor: Reactor,
    shared: Arc<Shared>,
    live: usize,
    live_nondaemon: usize,
    pub(crate) metrics: Metrics,
    pub(crate) subscribed: bool,
    /// Hand events to subscribers once this many have gathered (1: after
    /// every step); the smallest `max_batch` of the subscribers.
    pub(crate) event_batch: usize,
    pub(crate) events: Vec<TaskEvent>,
    /// Time at the start of the current step (refreshed once per step).
    now: Duration,
    slice_start: Duration,
    slice_steps: u32,
    /// A clock reading taken when the last run ended, reused as the start of
    /// the next run (one read per step instead of two). Dropped whenever time
    /// passes outside a run (timers, I/O, idle waits).
    pub(crate) carried_now: Option<Duration>,
    /// Whether `now` was read at the start of the step that is running.
    now_fresh: bool,
    /// When I/O was last polled.
    last_io_poll: Duration,
    current: Option<(usize, TaskId)>,
    shutdown: Option<Shutdown>,
    pub(crate) finish_order: Option<Vec<TaskId>>,
    retention: VecDeque<ReadyKey>,
    /// Bodies to drop once the core is no longer borrowed.
    pub(crate) graveyard: Vec<Body>,
    /// Watched tasks that ended, for the driver's end callbacks.
    pub(crate) ended: Vec<(TaskId, Outcome)>,
    /// Failures nobody was waiting for, for the driver's report.
    pub(crate) unobserved: Vec<(TaskId, TaskError)>,
    gate: Gate,
    held: VecDeque<ReadyKey>,
    admit_waiters: VecDeque<Waiter>,
    pub(crate) events_sync: Events,
    pub(crate) has_listener: bool,
    /// Valid entries in the ready queue (tasks with `queued` set).
    queued: usize,
    /// The other shards' tasks, when this scheduler is part of a pool.
    remote: Option<Arc<dyn RemoteTasks>>,
    /// Local joins of other shards' tasks.
    remote_joins: RemoteJoins,
    /// Tasks marked to be abandoned when they next park (a shutdown
    /// deadline passed): while zero, a step pays one compare for it.
    abandoning: usize,
}

/// Whether `w` is still a task's current wait.
fn waiting(tasks: &Table<Task>, w: &Waiter) -> bool {
    tasks
        .get(w.slot)
        .is_some_and(|t| t.id == w.task && t.generation == w.generation && t.is_blocked())
}

macro_rules! emit {
    ($core:expr, $task:expr, $kind:expr) => {
        if $core.subscribed {
            let time = $core.event_time();
            $core.events.push(TaskEvent {
                time,
                task: $task,
                kind: $kind,
            });
        }
    };
}

impl Core {
    pub(crate) fn new(
        config: Config,
        clock: TimeSource,
        reactor: Reactor,
        shared: Arc<Shared>,
        remote: Option<Arc<dyn RemoteTasks>>,
    ) -> Self {
        let gate = Gate::new(config.watermarks);
        Core {
            config,
            clock,
            tasks: Table::default(),
            ids: IdMap::default(),
            ready: ReadyQueue::default(),
            timers: Timers::default(),
            reactor,
            shared,
            live: 0,
            live_nondaemon: 0,
            metrics: Metrics::default(),
            subscribed: false,
            event_batch: usize::MAX,
            events: Vec::new(),
            now: Duration::ZERO,
            slice_start: Duration::ZERO,
            slice_steps: 0,
            carried_now: None,
            now_fresh: false,
            last_io_poll: Duration::ZERO,
            current: None,
            shutdown: None,
            finish_order: None,
            retention: VecDeque::new(),
            graveyard: Vec::new(),
            ended: Vec::new(),
            unobserved: Vec::new(),
            gate,
            held: VecDeque::new(),
            admit_waiters: VecDeque::new(),
            events_sync: Events::default(),
            has_listener: false,
            queued: 0,
            remote,
            remote_joins: RemoteJoins::default(),
            abandoning: 0,
        }
    }

    /// Whether the driver has work to do between steps: events to hand to
    /// subscribers, bodies to drop, end callbacks or failure reports to run.
    #[inline]
    pub(crate) fn has_chores(&self) -> bool {
        self.events_due()
            || !self.graveyard.is_empty()
            || !self.ended.is_empty()
            || !self.unobserved.is_empty()
    }

    /// Whether the latest clock reading (one a step already took: no clock
    /// read here) shows a timer due, or I/O left unpolled for longer than
    /// the configured interval: then the loop looks at timers and I/O
    /// before the next step, so a due task of a higher priority preempts at
    /// the next system call of the running one.
    #[inline]
    pub(crate) fn chores_due(&self) -> bool {
        let timer = self.timers.next_deadline_nanos();
        let io = self.reactor.has_sources();
        if timer.is_none() && !io {
            // Nothing to look at (a pure compute or yield workload): no
            // clock arithmetic on its hot path.
            return false;
        }
        let now = self.latest_reading();
        timer.is_some_and(|d| d <= nanos(now))
            || (io && now.saturating_sub(self.last_io_poll) >= self.config.io_poll_interval)
    }

    /// Whether enough events have gathered to hand them to subscribers.
    #[inline]
    pub(crate) fn events_due(&self) -> bool {
        self.subscribed && self.events.len() >= self.event_batch
    }

    // ----- time -----------------------------------------------------------

    /// Reads the clock and caches the reading for this step.
    #[inline]
    pub(crate) fn refresh_now(&mut self) -> Duration {
        self.now = self.clock.now();
        self.now
    }

    /// The latest clock reading taken, without reading the clock: the one
    /// taken as the last run ended if it is still to be handed on, else the
    /// cached one.
    #[inline]
    fn latest_reading(&self) -> Duration {
        self.carried_now.unwrap_or(self.now)
    }

    /// The time a task is stamped with as it becomes ready or blocks, in
    /// nanoseconds: the latest reading (see
    /// [`latest_reading`](Core::latest_reading)). A task's stamp feeds only
    /// the timing metrics (run latency, wait time), so without them it is 0
    /// and costs nothing.
    #[inline]
    fn stamp(&self) -> u64 {
        if self.config.timing {
            nanos(self.latest_reading())
        } else {
            0
        }
    }

    /// The time stamped on an event: a reading of this step if there is one
    /// (the one taken as the step ended, else the one taken as it began),
    /// so that events cost no clock read of their own on the hot path.
    fn event_time(&self) -> Duration {
        if let Some(t) = self.carried_now {
            return t;
        }
        if self.now_fresh {
            return self.now;
        }
        self.clock.now()
    }

    // ----- lookups ----------------------------------------------------------

    fn slot_of(&self, id: TaskId) -> Option<usize> {
        self.ids.get(id)
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn live_nondaemon(&self) -> usize {
        self.live_nondaemon
    }

    /// Tasks waiting in the ready queue (stale entries not counted).
    pub(crate) fn ready_len(&self) -> usize {
        self.queued
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub(crate) fn state(&self, id: TaskId) -> Option<TaskState> {
        self.slot_of(id).map(|s| self.tasks[s].state)
    }

    pub(crate) fn info(&self, id: TaskId) -> Option<TaskInfo> {
        let t = &self.tasks[self.slot_of(id)?];
        Some(TaskInfo {
            id: t.id,
            name: t.name().cloned(),
            priority: t.priority,
            state: t.state,
            budget_used: Duration::from_nanos(t.budget_used),
            throttles: u64::from(t.throttles),
            system: t.system,
            daemon: t.daemon,
        })
    }

    pub(crate) fn outcome(&self, id: TaskId) -> Option<Outcome> {
        self.tasks[self.slot_of(id)?].outcome.clone()
    }

    pub(crate) fn known_records(&self) -> usize {
        self.tasks.len()
    }

    // ----- spawning ---------------------------------------------------------

    /// Creates a task. `reserved` is an id (and capacity unit) already taken
    /// through a handle.
    #[inline]
    pub(crate) fn spawn(
        &mut self,
        body: Body,
        options: SpawnOptions,
        reserved: Option<TaskId>,
    ) -> Result<TaskId, SpawnError> {
        self.spawn_inner(body, options, reserved, None)
    }

    /// Creates a task already waiting on `event` (see
    /// [`Scheduler::spawn_waiting`](crate::Scheduler::spawn_waiting)).
    pub(crate) fn spawn_waiting(
        &mut self,
        body: Body,
        options: SpawnOptions,
        event: EventId,
    ) -> Result<TaskId, SpawnError> {
        if !options.deps.is_empty() {
            return Err(self.deny(body, SpawnError::CannotWait(event)));
        }
        if self.events_sync.is_set(event) != Some(false) {
            return Err(self.deny(body, SpawnError::CannotWait(event)));
        }
        self.spawn_inner(body, options, None, Some(event))
    }

    fn spawn_inner(
        &mut self,
        body: Body,
        options: SpawnOptions,
        reserved: Option<TaskId>,
        wait_on: Option<EventId>,
    ) -> Result<TaskId, SpawnError> {
        let id = match reserved {
            Some(id) => id,
            None => match self.admitted_spawner() {
                // The spawner passed the admission gate: its unit is this task's.
                Some(slot) => {
                    self.tasks[slot].admitted = false;
                    if let Err(e) = self.shared.check_open() {
                        self.unreserve();
                        return Err(self.deny(body, e));
                    }
                    self.shared.next_id()
                }
                None => match self.shared.admit_spawn() {
                    Ok(id) => id,
                    Err(e) => return Err(self.deny(body, e)),
                },
            },
        };
        // Dependencies: each must be known; an ended one counts as met if it
        // succeeded and cancels the new task if it did not.
        let mut pending = 0u32;
        let mut doomed = false;
        for &dep in &options.deps {
            let Some(slot) = self.slot_of(dep) else {
                self.unreserve();
                return Err(self.deny(body, SpawnError::UnknownDependency(dep)));
            };
            match &self.tasks[slot].outcome {
                None => pending += 1,
                Some(Outcome::Done(_)) => {}
                Some(_) => doomed = true,
            }
        }
        let now = nanos(self.now);
        let extra = (!options.deps.is_empty()).then(|| {
            Box::new(Extra {
                deps: options.deps.clone(),
                ..Extra::default()
            })
        });
        let stackful = body.is_stackful();
        let slot = self.tasks.insert(Task {
            id,
            state: TaskState::Pending,
            body: Some(body),
            input: None,
            outcome: None,
            io: None,
            name: options.name.clone(),
            extra,
            budget_used: 0,
            since: now,
            generation: 0,
            pending_deps: pending,
            retains: 0,
            throttles: 0,
            priority: options.priority,
            system: options.system,
            daemon: options.daemon,
            started: false,
            queued: false,
            cancel: Cancel::No,
            root_cancelled: false,
            edge: false,
            edge_taken: false,
            retained_window: false,
            watch_end: false,
            observed: false,
            stackful,
            abandon: false,
            admitted: false,
        });
        self.ids.insert(id, slot);
        self.live += 1;
        if !options.daemon {
            self.live_nondaemon += 1;
        }
        self.metrics.spawned += 1;
        emit!(
            self,
            Some(id),
            EventKind::Spawned {
                priority: options.priority,
                name: options.name.clone(),
                deps: options.deps.len(),
            }
        );
        let key = ReadyKey { slot, id };
        for &dep in &options.deps {
            let dslot = self.ids.get(dep).expect("checked above");
            if self.tasks[dslot].outcome.is_none() {
                self.tasks[dslot].extra().dependents.push(key);
            }
        }
        if doomed {
            self.cancel_unstarted(slot);
        } else if let Some(event) = wait_on {
            // Checked by `spawn_waiting`: a known event, not set, no deps.
            let w = self.tasks[slot].waiter(slot);
            let tasks = &self.tasks;
            let blocked = self.events_sync.wait(event, w, |x| waiting(tasks, x));
            debug_assert!(matches!(blocked, Some(EventWait::Blocked)));
            let t = &mut self.tasks[slot];
            t.state = TaskState::Waiting(WaitReason::Event(event));
            emit!(self, Some(id), EventKind::EventWait { event });
        } else if pending == 0 {
            self.make_ready(slot);
        }
        Ok(id)
    }

    /// Spawns a body under an id reserved elsewhere (a shard pool's shared
    /// ids), taking its unit of capacity here.
    pub(crate) fn spawn_with_id(
        &mut self,
        id: TaskId,
        body: Body,
        options: SpawnOptions,
    ) -> Result<TaskId, SpawnError> {
        // The reserved path expects the capacity unit taken; a refusal gives it back.
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        self.spawn(body, options, Some(id))
    }

    /// Applies a command from another thread. A deferred closure comes back
    /// to be run outside the core's borrow.
    pub(crate) fn apply_command(&mut self, cmd: Command) -> Option<Deferred> {
        match cmd {
            Command::Spawn { id, body, options } => {
                if self.shutdown_result().is_some() {
                    // The shutdown already completed: nothing can run it.
                    self.graveyard.push(body);
                    self.unreserve();
                } else if let Err(e) = self.spawn(body, options, Some(id)) {
                    tracing::warn!(target: "tiffany::handle", task = id.get(), error = %e, "spawn from a handle refused");
                }
            }
            Command::Cancel(id) => {
                let _ = self.cancel(id);
            }
            Command::NotifyIo(token, interest) => {
                self.notify_io(token, interest);
            }
            Command::RemoteJoined { key, outcome } => self.remote_joined(key, outcome),
            Command::Metrics(reply) => {
                let _ = reply.send(self.metrics.snapshot(self.ready_len(), self.live()));
            }
            Command::SetEvent(event) => {
                self.set_event(event);
            }
            Command::Defer(f) => return Some(Deferred::Plain(f)),
            Command::With(f) => return Some(Deferred::WithScheduler(f)),
            Command::Interrupt => {
                if self.shutdown_result().is_none() {
                    self.begin_shutdown(Duration::ZERO, None, true);
                    // At once: the deadline is now.
                    let now = self.clock.now();
                    self.fire_timers(now);
                }
            }
            Command::Abort => {
                if self.shutdown_result().is_none() {
                    self.abort();
                }
            }
            Command::Shutdown { timeout, reply } => {
                if let Some(r) = self.shutdown_result() {
                    if let Some(tx) = reply {
                        let _ = tx.send(r);
                    }
                } else {
                    self.begin_shutdown(timeout, None, false);
                    if let (Some(tx), Some(state)) = (reply, self.shutdown.as_mut()) {
                        state.reply_to(tx);
                    }
                }
            }
        }
        None
    }

    fn unreserve(&self) {
        self.shared.release_unit();
    }

    /// The running task's slot, if it holds an admission unit.
    fn admitted_spawner(&self) -> Option<usize> {
        let (slot, _) = self.current?;
        self.tasks[slot].admitted.then_some(slot)
    }

    /// Gives back the admission unit the task in `slot` holds, if any.
    fn drop_admission(&mut self, slot: usize) {
        let t = &mut self.tasks[slot];
        if std::mem::take(&mut t.admitted) {
            self.shared.release_unit();
            self.wake_admitted();
        }
    }

    /// Lets tasks through the admission gate while intake is open and there
    /// is room: each takes one unit of capacity for its next spawn, so a
    /// spawn right after `admit()` fits.
    fn wake_admitted(&mut self) {
        while !self.gate.paused() {
            let Some(&w) = self.admit_waiters.front() else {
                return;
            };
            if !waiting(&self.tasks, &w) {
                self.admit_waiters.pop_front();
                continue;
            }
            if !self.shared.reserve_unit() {
                return;
            }
            self.admit_waiters.pop_front();
            self.tasks[w.slot].admitted = true;
            self.wake(w, Resume::Unit, false);
        }
    }

    /// Admits the task in `slot` at once if intake is open and there is room.
    fn try_admit(&mut self, slot: usize) -> bool {
        let t = &self.tasks[slot];
        if t.system || t.admitted {
            return true;
        }
        if self.gate.paused() || !self.admit_waiters.is_empty() || !self.shared.reserve_unit() {
            return false;
        }
        self.tasks[slot].admitted = true;
        true
    }

    fn deny(&mut self, body: Body, e: SpawnError) -> SpawnError {
        self.metrics.spawn_denied += 1;
        emit!(self, None, EventKind::SpawnDenied { reason: e.reason() });
        self.graveyard.push(body);
        e
    }

    /// Makes `task` wait for `on` as well. Only for tasks that have not started.
    pub(crate) fn add_dependency(&mut self, task: TaskId, on: TaskId) -> Result<(), SpawnError> {
        let slot = self
            .slot_of(task)
            .ok_or(SpawnError::UnknownDependency(task))?;
        let on_slot = self.slot_of(on).ok_or(SpawnError::UnknownDependency(on))?;
        if task == on || self.depends_on(on, task) {
            self.metrics.spawn_denied += 1;
            emit!(self, Some(task), EventKind::SpawnDenied { reason: "cycle" });
            return Err(SpawnError::Cycle(on));
        }
        let t = &self.tasks[slot];
        if t.started || t.state.is_terminal() {
            return Err(SpawnError::AlreadyStarted(task));
        }
        match self.tasks[on_slot].outcome {
            Some(Outcome::Done(_)) => return Ok(()),
            Some(_) => {
                self.cancel_unstarted(slot);
                return Ok(());
            }
            None => {}
        }
        let key = self.tasks[slot].key(slot);
        self.tasks[on_slot].extra().dependents.push(key);
        let t = &mut self.tasks[slot];
        t.extra().deps.push(on);
        t.pending_deps += 1;
        if t.state == TaskState::Scheduled {
            // Still queued but not started: it waits again. Its queue entry
            // stays (and keeps `queued` set, so it is never queued twice): if
            // the task is still pending when the entry is popped, it is skipped.
            t.state = TaskState::Pending;
        }
        Ok(())
    }

    /// Whether `from` (transitively) waits for `to`.
    fn depends_on(&self, from: TaskId, to: TaskId) -> bool {
        let mut stack = vec![from];
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = stack.pop() {
            if id == to {
                return true;
            }
            if !seen.insert(id) {
                continue;
            }
            if let Some(slot) = self.slot_of(id) {
                let t = &self.tasks[slot];
                if t.outcome.is_none()
                    && let Some(e) = &t.extra
                {
                    stack.extend(e.deps.iter().copied());
                }
            }
        }
        false
    }

    // ----- readiness ---------------------------------------------------------

    #[inline]
    fn make_ready(&mut self, slot: usize) {
        let now = self.stamp();
        let t = &mut self.tasks[slot];
        if t.state != TaskState::Throttled {
            t.state = TaskState::Scheduled;
        }
        t.since = now;
        if !t.queued {
            t.queued = true;
            let (priority, key) = (t.priority, t.key(slot));
            self.ready.push(priority, key);
            self.queued += 1;
        }
    }

    /// Takes the next runnable task out: its slot, body and input.
    #[inline]
    pub(crate) fn next_ready(&mut self) -> Option<(usize, Body, Option<Resume>)> {
        loop {
            let key = self.ready.pop()?;
            let Some(t) = self.tasks.get_mut(key.slot).filter(|t| t.id == key.id) else {
                continue;
            };
            if !t.queued {
                continue;
            }
            t.queued = false;
            self.queued -= 1;
            if !matches!(t.state, TaskState::Scheduled | TaskState::Throttled) || t.body.is_none() {
                // A stale entry: the task ended or went back to waiting.
                self.try_free(key.slot);
                continue;
            }
            if t.cancel == Cancel::Requested && !t.started && t.root_cancelled {
                // Never ran: end it without running it. (An edge alone is
                // delivered at the first resume, as asyncio throws it into
                // the coroutine's first step.)
                self.cancel_unstarted(key.slot);
                continue;
            }
            let mut input = t.input.take();
            if t.cancel == Cancel::Requested {
                input = Some(Resume::Cancelled);
                self.delivered(key.slot);
            }
            let t = &mut self.tasks[key.slot];
            let body = t.body.take();
            self.begin_run(key.slot);
            return body.map(|b| (key.slot, b, input));
        }
    }

    /// Stores a parked task's body back.
    #[inline]
    pub(crate) fn park(&mut self, slot: usize, body: Body) {
        self.tasks[slot].body = Some(body);
        self.current = None;
        self.now_fresh = false;
    }

    /// Starts a run of the task in `slot`, taken from the ready queue or
    /// resumed after a yield: its state, the clock reading and run latency,
    /// a fresh quantum, the step count, and the `Running` event.
    #[inline]
    fn begin_run(&mut self, slot: usize) {
        let timing = self.config.timing || self.config.accounting == Accounting::Measured;
        let t = &mut self.tasks[slot];
        t.started = true;
        t.state = TaskState::Running;
        let since = t.since;
        let id = t.id;
        if timing {
            let now = match self.carried_now.take() {
                Some(t) => {
                    self.now = t;
                    t
                }
                None => self.refresh_now(),
            };
            if self.config.timing {
                self.metrics
                    .run_latency
                    .observe_nanos(nanos(now).saturating_sub(since));
            }
            self.slice_start = now;
        }
        self.now_fresh = timing;
        self.slice_steps = 1;
        self.metrics.steps += 1;
        self.current = Some((slot, id));
        emit!(self, Some(id), EventKind::Running);
    }

    /// Whether a task that just yielded would be the next to run anyway: no
    /// ready task of its priority or a higher one that it must go behind.
    #[inline]
    pub(crate) fn would_run_next(&self, slot: usize) -> bool {
        !self.ready.has_at_or_above(self.tasks[slot].priority)
    }

    /// Whether no task is queued, at any priority (the first, cheap test
    /// for a yield in place: a task that yields with others ready takes the
    /// long way).
    #[inline]
    pub(crate) fn nothing_ready(&self) -> bool {
        self.ready.is_empty()
    }

    /// Whether the running task in `slot`, with no other task ready, may
    /// yield in place ([`Scheduler::yield_in_place`](crate::Scheduler)): not
    /// cancelled (its yield must be answered `Cancelled`), no chores are
    /// pending, and the yield's two events would not fill a subscriber's
    /// batch (which must then be handed over between the steps).
    #[inline]
    pub(crate) fn may_yield_in_place(&self, slot: usize) -> bool {
        self.tasks[slot].cancel == Cancel::No
            && !self.has_chores()
            && (!self.subscribed || self.events.len() + 2 < self.event_batch)
    }

    /// Resumes a task that just yielded without queueing it, when
    /// [`would_run_next`](Core::would_run_next) said it would be taken straight
    /// back out: the same bookkeeping as a trip through the queue, minus the
    /// trip. Returns its input (`Unit`, or `Cancelled` if a callback run since
    /// the yield cancelled it).
    #[inline]
    pub(crate) fn rerun_yielded(&mut self, slot: usize) -> Resume {
        let now = self.stamp();
        let t = &mut self.tasks[slot];
        t.since = now;
        let input = if t.cancel == Cancel::Requested {
            self.delivered(slot);
            Resume::Cancelled
        } else {
            Resume::Unit
        };
        self.begin_run(slot);
        input
    }

    /// Queues a task that just yielded behind the ready tasks of its priority.
    #[inline(always)]
    pub(crate) fn queue_yielded(&mut self, slot: usize, body: Body) {
        self.tasks[slot].input = Some(Resume::Unit);
        self.requeue(slot);
        self.park(slot, body);
    }

    // ----- nested steps (the direct hand-off) ----------------------------------

    /// The slot of `task` if the running task may step it now, inside its
    /// own turn ([`Scheduler::step_now`](crate::Scheduler::step_now)): `task`
    /// is blocked waiting for `event` and not cancelled; neither it nor the
    /// running task is stackful; both have the same priority; no task of
    /// that priority or a higher one is ready (it would have run first);
    /// and no chores are pending. `None` otherwise: the caller then wakes
    /// it the ordinary way.
    #[inline]
    pub(crate) fn nested_target(&self, task: TaskId, event: EventId) -> Option<usize> {
        let (outer, _) = self.current?;
        let slot = self.slot_of(task)?;
        let t = &self.tasks[slot];
        let o = &self.tasks[outer];
        let ok = slot != outer
            && t.state == TaskState::Waiting(WaitReason::Event(event))
            && t.cancel == Cancel::No
            && t.body.is_some()
            && !t.stackful
            && !o.stackful
            && t.priority == o.priority
            && !self.ready.has_at_or_above(t.priority)
            && !self.has_chores();
        ok.then_some(slot)
    }

    /// Starts a nested step of the task in `slot` (checked by
    /// [`nested_target`](Core::nested_target)) inside the running task's
    /// turn: its wait ends as if its event had been set (answer
    /// `Bool(true)`), and it becomes the running task, with a slice of its
    /// own, as if it had been taken from the ready queue. Returns its body
    /// and what the interrupted run needs back ([`end_nested`](Core::end_nested)).
    pub(crate) fn begin_nested(&mut self, slot: usize) -> (Body, Resume, Nested) {
        let saved = Nested {
            outer: self.current.expect("a nested step inside a run"),
            slice_start: self.slice_start,
            slice_steps: self.slice_steps,
            now_fresh: self.now_fresh,
            began: Duration::ZERO,
        };
        let timing = self.config.timing;
        let now = self.now;
        let stamp = self.stamp();
        let t = &mut self.tasks[slot];
        t.generation = t.generation.wrapping_add(1);
        if timing {
            self.metrics
                .wait_time
                .observe_nanos(nanos(now).saturating_sub(t.since));
        }
        let t = &mut self.tasks[slot];
        t.since = stamp;
        t.input = None;
        let body = t.body.take().expect("checked by nested_target");
        // The nested run reads the clock itself: a reading carried from an
        // earlier nested step would charge it for the outer task's time.
        self.carried_now = None;
        self.begin_run(slot);
        let began = self.slice_start;
        (body, Resume::Bool(true), Nested { began, ..saved })
    }

    /// Ends a nested step (its task has parked, yielded or ended): the
    /// interrupted task is the running one again, its slice as it was —
    /// the nested run's time is not part of it.
    pub(crate) fn end_nested(&mut self, saved: Nested) {
        let timing = self.config.timing || self.config.accounting == Accounting::Measured;
        self.slice_start = saved.slice_start;
        if timing {
            let end = self.carried_now.take().unwrap_or_else(|| self.clock.now());
            self.now = end;
            let nested = end.saturating_sub(saved.began);
            self.slice_start = saved.slice_start.saturating_add(nested);
        }
        self.slice_steps = saved.slice_steps;
        self.current = Some(saved.outer);
        self.now_fresh = saved.now_fresh;
    }

    /// The CPU time of the current run so far, in nanoseconds. Under
    /// [`Accounting::Measured`] this reads the clock, and `carry` keeps the
    /// reading for the next run to start with.
    #[inline]
    fn slice_used(&mut self, carry: bool) -> u64 {
        match self.config.accounting {
            Accounting::Measured => {
                let now = self.clock.now();
                if carry {
                    self.carried_now = Some(now);
                }
                nanos(now.saturating_sub(self.slice_start))
            }
            // 64-bit arithmetic: `Duration * u32` is checked 96-bit math.
            Accounting::PerStep(_) => self
                .config
                .step_cost
                .saturating_mul(u64::from(self.slice_steps)),
        }
    }

    /// Charges the current run and answers whether the quantum is used up.
    fn quantum_used(&mut self, slot: usize) -> Option<Duration> {
        let used = self.slice_used(false);
        (used >= nanos(self.config.quantum)).then(|| {
            let t = &mut self.tasks[slot];
            t.budget_used = t.budget_used.saturating_add(used);
            Duration::from_nanos(used)
        })
    }

    /// Charges a run that ended with the task parking or ending.
    #[inline]
    fn charge(&mut self, slot: usize) {
        let used = self.slice_used(true);
        let t = &mut self.tasks[slot];
        t.budget_used = t.budget_used.saturating_add(used);
    }

    // ----- applying a step ----------------------------------------------------

    /// Applies what the task's step produced. (Inlined into both of its
    /// callers, the loop's step and a nested step: called once per step.)
    #[inline(always)]
    pub(crate) fn after_step(&mut self, slot: usize, step: Step) -> Next {
        let next = match step {
            Step::Syscall(call) => self.syscall(slot, call),
            Step::Done(v) => self.end(slot, Outcome::Done(v)),
            Step::Failed(e) => self.end(slot, Outcome::Failed(e)),
            Step::Cancelled => self.end(slot, Outcome::Cancelled),
        };
        if self.abandoning == 0 {
            return next;
        }
        self.abandon_if_marked(slot, next)
    }

    /// A task marked at a shutdown deadline that parks again after its one
    /// resume (it did not end) is abandoned where it stands.
    #[cold]
    #[inline(never)]
    fn abandon_if_marked(&mut self, slot: usize, next: Next) -> Next {
        if matches!(next, Next::Park | Next::Yielded) && self.tasks[slot].abandon {
            self.abandon(slot);
            return Next::End;
        }
        next
    }

    /// Marks a live task to be abandoned the next time it parks.
    fn mark_abandon(&mut self, slot: usize) {
        let t = &mut self.tasks[slot];
        if t.outcome.is_none() && !t.abandon {
            t.abandon = true;
            self.abandoning += 1;
        }
    }

    fn end(&mut self, slot: usize, outcome: Outcome) -> Next {
        self.drop_admission(slot);
        self.charge(slot);
        self.current = None;
        self.finish(slot, outcome);
        self.now_fresh = false;
        Next::End
    }

    /// Answers at once, or throttles the task if its quantum is used.
    fn answer(&mut self, slot: usize, answer: Resume) -> Next {
        if let Some(used) = self.quantum_used(slot) {
            let t = &mut self.tasks[slot];
            t.input = Some(answer);
            t.throttles = t.throttles.saturating_add(1);
            t.state = TaskState::Throttled;
            let id = t.id;
            self.metrics.throttles += 1;
            emit!(self, Some(id), EventKind::Throttled { used });
            self.requeue(slot);
            return Next::Park;
        }
        self.slice_steps += 1;
        self.metrics.steps += 1;
        Next::Continue(answer)
    }

    /// Puts the running task at the back of its priority's queue.
    fn requeue(&mut self, slot: usize) {
        self.current = None;
        self.make_ready(slot);
    }

    /// Blocks the running task in `state`; returns its waiter for the wait's entries.
    fn block(&mut self, slot: usize, state: TaskState) -> Waiter {
        self.charge(slot);
        self.current = None;
        let now = self.stamp();
        let t = &mut self.tasks[slot];
        t.state = state;
        t.since = now;
        t.waiter(slot)
    }

    fn is_cancelled(&self, slot: usize) -> bool {
        self.tasks[slot].cancel != Cancel::No
    }

    /// Applies a system call (inlined into [`after_step`](Core::after_step),
    /// as the loop's hot path).
    #[inline(always)]
    fn syscall(&mut self, slot: usize, call: SystemCall) -> Next {
        let id = self.tasks[slot].id;
        // Level-triggered cancellation: a cancelled task never blocks again.
        let blocking = matches!(
            call,
            SystemCall::Yield
                | SystemCall::Sleep(_)
                | SystemCall::SleepUntil(_)
                | SystemCall::Join(_)
                | SystemCall::JoinTimeout { .. }
                | SystemCall::IoWait { .. }
                | SystemCall::EventWait(_)
                | SystemCall::Admit
        );
        if blocking && !matches!(call, SystemCall::Admit) && self.tasks[slot].admitted {
            // An admission is for a spawn right after it, not across a wait
            // (a throttle at the admit itself, or at a call answered at
            // once, keeps it: the task's next spawn is still "right after").
            self.drop_admission(slot);
        }
        if blocking && self.is_cancelled(slot) {
            self.delivered(slot);
            self.tasks[slot].input = Some(Resume::Cancelled);
            self.requeue(slot);
            return Next::Park;
        }
        match call {
            SystemCall::Yield => self.yield_task(slot, id),
            SystemCall::Sleep(d) if d.is_zero() => self.yield_task(slot, id),
            SystemCall::Sleep(d) => {
                let until = self.clock.now().saturating_add(d);
                self.sleep_until(slot, id, until)
            }
            SystemCall::SleepUntil(t) => {
                if t <= self.clock.now() {
                    self.yield_task(slot, id)
                } else {
                    self.sleep_until(slot, id, t)
                }
            }
            SystemCall::Join(target) => self.join(slot, id, target, None),
            SystemCall::JoinTimeout { target, dur } => self.join(slot, id, target, Some(dur)),
            SystemCall::Cancel(target) => {
                let r = match self.cancel(target) {
                    Ok(live) => Resume::Bool(live),
                    Err(e) => Resume::Error(e),
                };
                self.answer(slot, r)
            }
            SystemCall::IoWait {
                token,
                interest,
                timeout,
                after_would_block,
            } => self.io_wait(slot, id, token, interest, timeout, after_would_block),
            SystemCall::Spawn(req) => {
                let req = *req;
                let r = self.spawn(req.body, req.options, None);
                self.answer(slot, Resume::Spawned(r))
            }
            SystemCall::GetTid => self.answer(slot, Resume::Tid(id)),
            SystemCall::Now => {
                let now = self.clock.now();
                self.answer(slot, Resume::Time(now))
            }
            SystemCall::Log(message) => {
                tracing::info!(target: "tiffany::task", task = id.get(), "{message}");
                emit!(
                    self,
                    Some(id),
                    EventKind::Log {
                        message: Arc::from(message)
                    }
                );
                self.answer(slot, Resume::Unit)
            }
            SystemCall::Admit => {
                if self.try_admit(slot) {
                    self.answer(slot, Resume::Unit)
                } else {
                    let w = self.block(slot, TaskState::Waiting(WaitReason::Admission));
                    self.admit_waiters.push_back(w);
                    Next::Park
                }
            }
            SystemCall::Shutdown(timeout) => {
                if self.shutdown.is_some() {
                    return self.answer(slot, Resume::Error(SyscallError::ShutdownInProgress));
                }
                let w = self.block(slot, TaskState::Waiting(WaitReason::Shutdown));
                self.begin_shutdown(timeout, Some(w), false);
                Next::Park
            }
            SystemCall::EventWait(event) => self.event_wait(slot, id, event),
            SystemCall::EventSet(event) => {
                let known = self.set_event(event);
                self.answer(slot, Resume::Bool(known))
            }
            SystemCall::Done(v) => self.end(slot, Outcome::Done(v)),
            SystemCall::Scope(call) => {
                // Answered at once and never throttled: a scope's exit runs
                // while a cancellation unwinds, and must not be answered
                // `Cancelled` in its stead.
                let r = match self.scope_call(Some(slot), call) {
                    Ok(a) => Resume::Scope(a),
                    Err(e) => Resume::Error(e),
                };
                self.slice_steps += 1;
                self.metrics.steps += 1;
                Next::Continue(r)
            }
        }
    }

    fn event_wait(&mut self, slot: usize, id: TaskId, event: EventId) -> Next {
        let w = self.tasks[slot].waiter(slot);
        let tasks = &self.tasks;
        match self.events_sync.wait(event, w, |x| waiting(tasks, x)) {
            None => self.answer(slot, Resume::Error(SyscallError::UnknownEvent(event))),
            Some(EventWait::Set) => self.answer(slot, Resume::Bool(true)),
            Some(EventWait::Blocked) => {
                let w2 = self.block(slot, TaskState::Waiting(WaitReason::Event(event)));
                debug_assert_eq!(w, w2);
                emit!(self, Some(id), EventKind::EventWait { event });
                Next::Park
            }
        }
    }

    /// Sets an event and wakes its waiters; `false` for an unknown event.
    pub(crate) fn set_event(&mut self, event: EventId) -> bool {
        let Some(waiters) = self.events_sync.set(event) else {
            return false;
        };
        for w in waiters {
            self.wake(w, Resume::Bool(true), false);
        }
        true
    }

    /// Removes an event nobody waits on; `false` if unknown or waited on.
    pub(crate) fn remove_event(&mut self, event: EventId) -> bool {
        let tasks = &self.tasks;
        self.events_sync.remove(event, |x| waiting(tasks, x))
    }

    #[inline(always)]
    pub(crate) fn yield_task(&mut self, slot: usize, id: TaskId) -> Next {
        self.charge(slot);
        self.current = None;
        emit!(self, Some(id), EventKind::Yield);
        self.now_fresh = false;
        Next::Yielded
    }

    fn sleep_until(&mut self, slot: usize, id: TaskId, until: Duration) -> Next {
        let w = self.block(slot, TaskState::Sleeping { wake_at: until });
        self.timers.push(until, TimerKind::Wake(w));
        emit!(self, Some(id), EventKind::Sleep { until });
        Next::Park
    }

    fn join(&mut self, slot: usize, id: TaskId, target: TaskId, timeout: Option<Duration>) -> Next {
        if target == id {
            return self.answer(slot, Resume::Error(SyscallError::JoinSelf));
        }
        let Some(tslot) = self.slot_of(target) else {
            return self.join_remote(slot, id, target, timeout);
        };
        if let Some(outcome) = &self.tasks[tslot].outcome {
            let r = outcome.to_join_result();
            self.tasks[tslot].observed = true;
            return self.answer(slot, Resume::Joined(r));
        }
        if timeout.is_some_and(|d| d.is_zero()) {
            return self.answer(slot, Resume::Joined(JoinResult::Timeout));
        }
        let w = self.block(slot, TaskState::Waiting(WaitReason::Join(target)));
        // Joiners woken some other way (a timeout, a cancel) stay in the list
        // as stale entries, skipped when the target ends; they are pruned
        // here as the list grows, so removing one never scans the list (which
        // made cancelling n joiners of one task cost n²).
        let mut joiners = std::mem::take(&mut self.tasks[tslot].extra().joiners);
        let n = joiners.len();
        if n >= 64 && n.is_power_of_two() {
            joiners.retain(|j| waiting(&self.tasks, j));
        }
        joiners.push(w);
        self.tasks[tslot].extra().joiners = joiners;
        if let Some(d) = timeout {
            let at = self.clock.now().saturating_add(d);
            self.timers.push(at, TimerKind::Wake(w));
        }
        emit!(self, Some(id), EventKind::Join { target });
        Next::Park
    }

    /// Joins a task that lives on another shard of the pool (if any): the
    /// shard that owns it is asked to tell this one when it ends
    /// ([`RemoteJoins`]), and the joiner blocks like a local join (with its
    /// timeout on this scheduler's timers).
    fn join_remote(
        &mut self,
        slot: usize,
        id: TaskId,
        target: TaskId,
        timeout: Option<Duration>,
    ) -> Next {
        let Some(remote) = self.remote.clone() else {
            return self.answer(slot, Resume::Error(SyscallError::UnknownTask(target)));
        };
        let key = self.remote_joins.next_key();
        let notify = RemoteNotify {
            handle: crate::Handle::new(self.shared.clone(), false),
            key,
        };
        match remote.watch(target, notify) {
            None => self.answer(slot, Resume::Error(SyscallError::UnknownTask(target))),
            Some(Some(outcome)) => self.answer(slot, Resume::Joined(outcome.to_join_result())),
            Some(None) if timeout.is_some_and(|d| d.is_zero()) => {
                self.answer(slot, Resume::Joined(JoinResult::Timeout))
            }
            Some(None) => {
                let w = self.block(slot, TaskState::Waiting(WaitReason::Join(target)));
                self.remote_joins.insert(key, w);
                if let Some(d) = timeout {
                    let at = self.clock.now().saturating_add(d);
                    self.timers.push(at, TimerKind::Wake(w));
                }
                emit!(self, Some(id), EventKind::Join { target });
                Next::Park
            }
        }
    }

    /// Another shard's task, joined here under `key`, has ended.
    pub(crate) fn remote_joined(&mut self, key: u64, outcome: Outcome) {
        if let Some(w) = self.remote_joins.take(key) {
            self.wake(w, Resume::Joined(outcome.to_join_result()), false);
        }
    }

    fn io_wait(
        &mut self,
        slot: usize,
        id: TaskId,
        token: IoToken,
        interest: Interest,
        timeout: Option<Duration>,
        after_would_block: bool,
    ) -> Next {
        if !self.reactor.is_registered(token) {
            return self.answer(slot, Resume::Error(SyscallError::UnknownIoToken(token)));
        }
        // The waiter the task will have once blocked: generation unchanged.
        let w = self.tasks[slot].waiter(slot);
        match self.reactor.wait_for(token, interest, w, after_would_block) {
            Err(e) => self.answer(slot, Resume::Error(e)),
            Ok(WaitStart::Ready) => self.answer(slot, Resume::Io(IoReady::Ready)),
            Ok(WaitStart::Blocked) => {
                if timeout.is_some_and(|d| d.is_zero()) {
                    self.reactor.cancel_wait(token, interest, w);
                    return self.answer(slot, Resume::Io(IoReady::Timeout));
                }
                let w2 = self.block(slot, TaskState::Waiting(WaitReason::Io(token, interest)));
                debug_assert_eq!(w, w2);
                self.tasks[slot].io = Some((token, interest));
                if let Some(d) = timeout {
                    let at = self.clock.now().saturating_add(d);
                    self.timers.push(at, TimerKind::Wake(w));
                }
                emit!(self, Some(id), EventKind::IoWait { token, interest });
                Next::Park
            }
        }
    }

    // ----- waking -------------------------------------------------------------

    /// Ends a wait with `input`, if `w` is still the task's current wait.
    /// Returns whether the task was woken.
    pub(crate) fn wake(&mut self, w: Waiter, input: Resume, from_io: bool) -> bool {
        let now = self.now;
        let timing = self.config.timing;
        let Some(t) = self.tasks.get_mut(w.slot) else {
            return false;
        };
        if t.id != w.task || t.generation != w.generation || !t.is_blocked() {
            return false;
        }
        t.generation = t.generation.wrapping_add(1);
        if timing {
            self.metrics
                .wait_time
                .observe_nanos(nanos(now).saturating_sub(t.since));
        }
        let state = t.state;
        let io = t.io.take();
        t.input = Some(input);
        // Entries elsewhere for this wait are now stale by generation and
        // skipped where they are found (joiner and event lists are pruned as
        // they grow); the admission queue is kept exact.
        if state == TaskState::Waiting(WaitReason::Admission) {
            self.admit_waiters.retain(|a| a.task != w.task);
        }
        if let Some((token, interest)) = io {
            self.reactor.cancel_wait(token, interest, w);
        }
        let t = &self.tasks[w.slot];
        if from_io && self.gate.paused() && !t.system {
            let key = t.key(w.slot);
            self.tasks[w.slot].state = TaskState::Waiting(WaitReason::Held);
            self.held.push_back(key);
            return true;
        }
        self.make_ready(w.slot);
        true
    }

    /// Fires every timer due at `now`.
    pub(crate) fn fire_timers(&mut self, now: Duration) {
        self.now = now;
        self.carried_now = None;
        while let Some(kind) = self.timers.pop_due(now) {
            match kind {
                TimerKind::Wake(w) => {
                    let input = match self
                        .tasks
                        .get(w.slot)
                        .filter(|t| t.id == w.task)
                        .map(|t| t.state)
                    {
                        Some(TaskState::Sleeping { .. }) => Resume::Unit,
                        Some(TaskState::Waiting(WaitReason::Join(_))) => {
                            Resume::Joined(JoinResult::Timeout)
                        }
                        Some(TaskState::Waiting(WaitReason::Io(..))) => {
                            Resume::Io(IoReady::Timeout)
                        }
                        _ => continue,
                    };
                    self.wake(w, input, false);
                }
                TimerKind::ShutdownDeadline => self.shutdown_deadline(),
                TimerKind::ScopeDeadline { slot, task, scope } => {
                    if self.scope_timer_live(slot, task, scope) {
                        self.scope_deadline_passed(slot, scope, now);
                    }
                }
            }
        }
        self.prefetch_upcoming();
    }

    /// Starts loading what the next timers will touch while the task just
    /// woken runs: the body of the next one to fire (its record was asked for
    /// one wake ago) and the record of the one after it. With many sleepers
    /// woken in no particular order, each of these is otherwise a wait for
    /// memory on the wake's critical path.
    fn prefetch_upcoming(&self) {
        let (next, after) = self.timers.upcoming();
        if let Some(TimerKind::Wake(w)) = next
            && let Some(body) = self.tasks.get(w.slot).and_then(|t| t.body.as_ref())
        {
            body.prefetch();
        }
        if let Some(TimerKind::Wake(w)) = after {
            self.tasks.prefetch(w.slot);
        }
    }

    /// Whether a timer entry still has something to do.
    fn timer_is_live(&self, kind: TimerKind) -> bool {
        match kind {
            TimerKind::Wake(w) => self
                .tasks
                .get(w.slot)
                .is_some_and(|t| t.id == w.task && t.generation == w.generation && t.is_blocked()),
            TimerKind::ShutdownDeadline => self
                .shutdown
                .as_ref()
                .is_some_and(Shutdown::deadline_pending),
            TimerKind::ScopeDeadline { slot, task, scope } => {
                self.scope_timer_live(slot, task, scope)
            }
        }
    }

    /// The earliest deadline that still matters, dropping stale entries on
    /// the way, so the virtual clock never jumps to a wait that already ended.
    pub(crate) fn next_live_deadline(&mut self) -> Option<Duration> {
        loop {
            let (deadline, kind) = self.timers.peek()?;
            if self.timer_is_live(kind) {
                return Some(deadline);
            }
            self.timers.pop();
        }
    }

    /// Polls the reactor (non-blocking unless `timeout` says otherwise) and
    /// wakes the tasks whose I/O is ready.
    pub(crate) fn poll_io(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        let mut woken = Vec::new();
        self.last_io_poll = self.latest_reading();
        self.carried_now = None;
        self.reactor.poll(timeout, |w| woken.push(w))?;
        if !woken.is_empty() || timeout != Some(Duration::ZERO) {
            self.now = self.clock.now();
            self.last_io_poll = self.now;
        }
        for w in woken {
            self.wake(w, Resume::Io(IoReady::Ready), true);
        }
        Ok(())
    }

    /// Readiness reported through the in-memory channel.
    pub(crate) fn notify_io(&mut self, token: IoToken, interest: Interest) -> bool {
        if !self.reactor.is_registered(token) {
            return false;
        }
        if let Some(w) = self.reactor.set_ready(token, interest) {
            self.wake(w, Resume::Io(IoReady::Ready), true);
        }
        true
    }

    pub(crate) fn deregister_io(&mut self, token: IoToken) -> bool {
        match self.reactor.deregister(token) {
            None => false,
            Some(waiters) => {
                for w in waiters {
                    if let Some(t) = self.tasks.get_mut(w.slot) {
                        t.io = None;
                    }
                    self.wake(w, Resume::Error(SyscallError::UnknownIoToken(token)), false);
                }
                true
            }
        }
    }

    // ----- ending -------------------------------------------------------------

    fn finish(&mut self, slot: usize, outcome: Outcome) {
        let t = &mut self.tasks[slot];
        debug_assert!(t.outcome.is_none(), "a task ends once");
        if let Some((token, interest)) = t.io.take() {
            let w = t.waiter(slot);
            self.reactor.cancel_wait(token, interest, w);
        }
        let t = &mut self.tasks[slot];
        t.state = match outcome {
            Outcome::Done(_) => TaskState::Finished,
            Outcome::Failed(_) => TaskState::Failed,
            Outcome::Cancelled => TaskState::Cancelled,
        };
        t.generation = t.generation.wrapping_add(1);
        if std::mem::take(&mut t.abandon) {
            self.abandoning -= 1;
        }
        let t = &mut self.tasks[slot];
        let id = t.id;
        let daemon = t.daemon;
        let (joiners, dependents) = match &mut t.extra {
            Some(e) => (
                std::mem::take(&mut e.joiners),
                std::mem::take(&mut e.dependents),
            ),
            None => (Vec::new(), Vec::new()),
        };
        if let Some(b) = t.body.take() {
            self.graveyard.push(b);
        }
        self.live -= 1;
        self.shared.live.fetch_sub(1, Ordering::Relaxed);
        if !daemon {
            self.live_nondaemon -= 1;
        }
        if !self.admit_waiters.is_empty() {
            // Room freed: let the next task through the admission gate.
            self.wake_admitted();
        }
        match &outcome {
            Outcome::Done(_) => {
                self.metrics.done += 1;
                emit!(self, Some(id), EventKind::Done);
            }
            Outcome::Failed(e) => {
                self.metrics.failed += 1;
                emit!(
                    self,
                    Some(id),
                    EventKind::Failed {
                        message: Arc::from(e.message())
                    }
                );
            }
            Outcome::Cancelled => {
                self.metrics.cancelled += 1;
                emit!(self, Some(id), EventKind::Cancelled);
            }
        }
        if let Some(order) = &mut self.finish_order {
            order.push(id);
        }
        if self.tasks[slot].watch_end {
            self.ended.push((id, outcome.clone()));
        }
        let observed = !joiners.is_empty();
        self.tasks[slot].observed = observed;
        if let Outcome::Failed(e) = &outcome
            && !observed
            && self.tasks[slot].retains == 0
        {
            self.unobserved.push((id, e.clone()));
        }
        let result = outcome.to_join_result();
        let success = matches!(outcome, Outcome::Done(_));
        self.tasks[slot].outcome = Some(outcome);
        for j in joiners {
            self.wake(j, Resume::Joined(result.clone()), false);
        }
        for d in dependents {
            let Some(dt) = self.tasks.get_mut(d.slot).filter(|t| t.id == d.id) else {
                continue;
            };
            if dt.outcome.is_some() {
                continue;
            }
            if success {
                dt.pending_deps = dt.pending_deps.saturating_sub(1);
                if dt.pending_deps == 0 && dt.state == TaskState::Pending {
                    self.make_ready(d.slot);
                }
            } else if !dt.started {
                self.cancel_unstarted(d.slot);
            }
        }
        if self.config.retain_finished > 0 {
            self.tasks[slot].retained_window = true;
            self.retention.push_back(ReadyKey { slot, id });
            while self.retention.len() > self.config.retain_finished {
                if let Some(old) = self.retention.pop_front()
                    && let Some(t) = self.tasks.get_mut(old.slot).filter(|t| t.id == old.id)
                {
                    t.retained_window = false;
                    self.try_free(old.slot);
                }
            }
        }
        self.try_free(slot);
    }

    /// Frees a finished record once nothing can ask for it.
    fn try_free(&mut self, slot: usize) {
        let Some(t) = self.tasks.get(slot) else {
            return;
        };
        if t.outcome.is_none() || t.retains > 0 || t.retained_window || t.queued || t.has_joiners()
        {
            return;
        }
        let id = t.id;
        self.tasks.remove(slot);
        self.ids.remove(id);
    }

    pub(crate) fn retain(&mut self, id: TaskId) -> bool {
        match self.slot_of(id) {
            Some(s) => {
                self.tasks[s].retains += 1;
                true
            }
            None => false,
        }
    }

    /// Asks to be told when `id` ends. `false` if it already ended or is unknown.
    pub(crate) fn watch_end(&mut self, id: TaskId) -> bool {
        match self.slot_of(id) {
            Some(s) if self.tasks[s].outcome.is_none() => {
                self.tasks[s].watch_end = true;
                true
            }
            _ => false,
        }
    }

    /// Marks a task's outcome as received; returns whether it already was.
    pub(crate) fn observe(&mut self, id: TaskId) -> bool {
        match self.slot_of(id) {
            Some(s) => std::mem::replace(&mut self.tasks[s].observed, true),
            None => true,
        }
    }

    pub(crate) fn release(&mut self, id: TaskId) {
        if let Some(s) = self.slot_of(id) {
            let t = &mut self.tasks[s];
            t.retains = t.retains.saturating_sub(1);
            self.try_free(s);
        }
    }

    // ----- cancellation ---------------------------------------------------------

    /// Cancels a task; returns whether it was still live.
    pub(crate) fn cancel(&mut self, target: TaskId) -> Result<bool, SyscallError> {
        let Some(slot) = self.slot_of(target) else {
            return match &self.remote {
                Some(remote) => remote
                    .cancel(target)
                    .ok_or(SyscallError::UnknownTask(target)),
                None => Err(SyscallError::UnknownTask(target)),
            };
        };
        let t = &mut self.tasks[slot];
        if t.outcome.is_some() {
            return Ok(false);
        }
        if t.root_cancelled {
            return Ok(true);
        }
        t.root_cancelled = true;
        if !t.started && t.state != TaskState::Running {
            t.cancel = Cancel::Requested;
            self.cancel_unstarted(slot);
            return Ok(true);
        }
        self.refresh_cancel(slot);
        Ok(true)
    }

    /// Brings a live task's cancellation state up to date with its scopes:
    /// a task that has just become effectively cancelled is woken with
    /// `Cancelled` if it is blocked (running or queued, it sees it when next
    /// resumed or at its next blocking call); one that no longer is (it left
    /// the cancelled scope, or entered a shield) may block again.
    fn refresh_cancel(&mut self, slot: usize) {
        let t = &mut self.tasks[slot];
        let scopes = t.extra.as_ref().map_or(&[][..], |e| &e.scopes[..]);
        if !effectively_cancelled(scopes, t.root_cancelled || t.edge) {
            t.cancel = Cancel::No;
            return;
        }
        if t.cancel != Cancel::No {
            return;
        }
        t.cancel = Cancel::Requested;
        if t.is_blocked() {
            self.deliver_cancel(slot);
        }
    }

    /// Wakes a blocked task with `Cancelled`.
    fn deliver_cancel(&mut self, slot: usize) {
        let t = &mut self.tasks[slot];
        let w = t.waiter(slot);
        if t.state == TaskState::Waiting(WaitReason::Held) {
            t.generation = t.generation.wrapping_add(1);
            t.input = Some(Resume::Cancelled);
            let id = t.id;
            self.held.retain(|k| k.id != id);
            self.make_ready(slot);
        } else {
            self.wake(w, Resume::Cancelled, false);
        }
        self.delivered(slot);
    }

    /// Records that the task in `slot` is being resumed with `Cancelled`.
    /// A pending edge the delivery reaches (no shield hides the root) is
    /// consumed by it; if nothing else cancels the task's code, the task
    /// may block again afterwards.
    fn delivered(&mut self, slot: usize) {
        let t = &mut self.tasks[slot];
        t.cancel = Cancel::Delivered;
        t.edge_taken = false;
        if !t.edge {
            return;
        }
        let scopes = t.extra.as_ref().map_or(&[][..], |e| &e.scopes[..]);
        if scopes.iter().any(|s| s.shield) {
            // Delivered for a scope inside a shield: the edge waits.
            return;
        }
        let level = effectively_cancelled(scopes, t.root_cancelled);
        t.edge = false;
        t.edge_taken = true;
        if !level {
            t.cancel = Cancel::No;
        }
    }

    /// Cancels a task *once* (asyncio's `Task.cancel`, ADR 10): the task
    /// is resumed with `Cancelled` at its current (or next) suspension, as
    /// for a cancelled root scope, but only once — the edge is consumed by
    /// that delivery, and the task may block again afterwards. Shields hide
    /// it as they hide the root's cancellation. A task that never ran is
    /// resumed (with `Cancelled`) rather than dropped. Returns whether the
    /// task was still live.
    pub(crate) fn cancel_edge(&mut self, target: TaskId) -> Result<bool, SyscallError> {
        let slot = self
            .slot_of(target)
            .ok_or(SyscallError::UnknownTask(target))?;
        let t = &mut self.tasks[slot];
        if t.outcome.is_some() {
            return Ok(false);
        }
        t.edge = true;
        self.refresh_cancel(slot);
        Ok(true)
    }

    /// Renames a task. Its `Spawned` event, if it has not been handed to
    /// the subscribers yet (a name set right after the spawn, as asyncio's
    /// `create_task` does), carries the new name.
    pub(crate) fn set_name(&mut self, target: TaskId, name: &str) -> bool {
        let Some(slot) = self.slot_of(target) else {
            return false;
        };
        let name: Arc<str> = name.into();
        self.tasks[slot].name = Some(name.clone());
        if let Some(TaskEvent {
            kind: EventKind::Spawned { name: spawned, .. },
            ..
        }) = self
            .events
            .iter_mut()
            .rev()
            .find(|e| e.task == Some(target) && matches!(e.kind, EventKind::Spawned { .. }))
        {
            *spawned = Some(name);
        }
        true
    }

    /// Whether the task has an edge cancellation pending (not yet delivered).
    pub(crate) fn edge_pending(&self, target: TaskId) -> bool {
        self.slot_of(target)
            .is_some_and(|s| self.tasks[s].edge && self.tasks[s].outcome.is_none())
    }

    /// Whether the last `Cancelled` delivered to the task consumed its
    /// edge (rather than coming from a cancelled scope or root); cleared by
    /// the reading.
    pub(crate) fn take_edge(&mut self, target: TaskId) -> bool {
        match self.slot_of(target) {
            Some(s) => std::mem::take(&mut self.tasks[s].edge_taken),
            None => false,
        }
    }

    // ----- cancel scopes -----------------------------------------------------------

    /// Carries out a scope call: `caller` is the running task (for
    /// `Enter`, `Exit` and `EffectiveDeadline`).
    pub(crate) fn scope_call(
        &mut self,
        caller: Option<usize>,
        call: ScopeCall,
    ) -> Result<ScopeAnswer, SyscallError> {
        let Some(slot) = (match call {
            ScopeCall::Enter(_) | ScopeCall::Exit(_) | ScopeCall::EffectiveDeadline => caller,
            ScopeCall::Cancel(r)
            | ScopeCall::SetDeadline(r, _)
            | ScopeCall::SetShield(r, _)
            | ScopeCall::Status(r) => self.slot_of(r.task),
        }) else {
            return Err(match call {
                ScopeCall::Cancel(r)
                | ScopeCall::SetDeadline(r, _)
                | ScopeCall::SetShield(r, _)
                | ScopeCall::Status(r) => SyscallError::UnknownTask(r.task),
                _ => SyscallError::NotInTask,
            });
        };
        match call {
            ScopeCall::Enter(options) => Ok(ScopeAnswer::Entered(self.enter_scope(slot, options))),
            ScopeCall::Exit(scope) => self.exit_scope(slot, scope),
            ScopeCall::EffectiveDeadline => {
                let t = &self.tasks[slot];
                if t.cancel != Cancel::No {
                    return Ok(ScopeAnswer::Deadline(Some(Duration::ZERO)));
                }
                let scopes = t.extra.as_ref().map_or(&[][..], |e| &e.scopes[..]);
                Ok(ScopeAnswer::Deadline(effective_deadline(scopes)))
            }
            ScopeCall::Cancel(r) => {
                self.with_scope(slot, r, |s| s.cancelled = true)?;
                self.scope_status(slot, r)
            }
            ScopeCall::SetShield(r, shield) => {
                self.with_scope(slot, r, |s| s.shield = shield)?;
                self.scope_status(slot, r)
            }
            ScopeCall::SetDeadline(r, deadline) => {
                self.with_scope(slot, r, |s| s.deadline = deadline)?;
                if let Some(at) = deadline {
                    self.arm_scope_deadline(slot, r.scope, at);
                }
                self.scope_status(slot, r)
            }
            ScopeCall::Status(r) => self.scope_status(slot, r),
        }
    }

    fn scope_status(&self, slot: usize, r: ScopeRef) -> Result<ScopeAnswer, SyscallError> {
        self.tasks[slot]
            .extra
            .as_ref()
            .and_then(|e| e.scopes.iter().find(|s| s.id == r.scope))
            .map(|s| ScopeAnswer::Status(s.status()))
            .ok_or(SyscallError::UnknownScope(r.task, r.scope))
    }

    /// Changes an open scope of the task in `slot` (a live task's), then
    /// brings the task's cancellation up to date.
    fn with_scope(
        &mut self,
        slot: usize,
        r: ScopeRef,
        change: impl FnOnce(&mut ScopeRec),
    ) -> Result<(), SyscallError> {
        let t = &mut self.tasks[slot];
        let scope = t
            .extra
            .as_mut()
            .filter(|_| t.outcome.is_none())
            .and_then(|e| e.scopes.iter_mut().find(|s| s.id == r.scope))
            .ok_or(SyscallError::UnknownScope(r.task, r.scope))?;
        change(scope);
        self.refresh_cancel(slot);
        Ok(())
    }

    fn enter_scope(&mut self, slot: usize, options: ScopeOptions) -> ScopeId {
        let now = self.clock.now();
        let extra = self.tasks[slot].extra();
        extra.last_scope = extra.last_scope.wrapping_add(1).max(1);
        let id = ScopeId(extra.last_scope);
        let due = options.deadline.filter(|&d| d <= now);
        extra.scopes.push(ScopeRec {
            id,
            cancelled: due.is_some(),
            shield: options.shield,
            deadline: options.deadline,
        });
        if let Some(at) = options.deadline.filter(|&d| d > now) {
            self.arm_scope_deadline(slot, id, at);
        }
        self.refresh_cancel(slot);
        id
    }

    fn exit_scope(&mut self, slot: usize, scope: ScopeId) -> Result<ScopeAnswer, SyscallError> {
        let t = &mut self.tasks[slot];
        let id = t.id;
        let Some(extra) = t.extra.as_mut() else {
            return Err(SyscallError::UnknownScope(id, scope));
        };
        let Some(at) = extra.scopes.iter().rposition(|s| s.id == scope) else {
            return Err(SyscallError::UnknownScope(id, scope));
        };
        let cancelled = extra.scopes[at].cancelled;
        // Scopes still open inside it are left with it.
        extra.scopes.truncate(at);
        let outer = effectively_cancelled(&extra.scopes, t.root_cancelled);
        self.refresh_cancel(slot);
        Ok(ScopeAnswer::Exited {
            cancelled,
            absorbs: cancelled && !outer,
        })
    }

    /// Arms a timer for a scope's deadline (cancelled at once if it passed).
    fn arm_scope_deadline(&mut self, slot: usize, scope: ScopeId, at: Duration) {
        if at <= self.clock.now() {
            self.scope_deadline_passed(slot, scope, at);
            return;
        }
        let task = self.tasks[slot].id;
        self.timers
            .push(at, TimerKind::ScopeDeadline { slot, task, scope });
    }

    /// A scope's deadline `at` passed: cancels the scope if it still has
    /// that deadline.
    fn scope_deadline_passed(&mut self, slot: usize, scope: ScopeId, at: Duration) {
        let Some(s) = self.tasks[slot]
            .extra
            .as_mut()
            .and_then(|e| e.scopes.iter_mut().find(|s| s.id == scope))
        else {
            return;
        };
        if s.cancelled || s.deadline.is_none_or(|d| d > at) {
            return;
        }
        s.cancelled = true;
        self.refresh_cancel(slot);
    }

    /// Whether a scope deadline timer still has something to do.
    fn scope_timer_live(&self, slot: usize, task: TaskId, scope: ScopeId) -> bool {
        self.tasks.get(slot).is_some_and(|t| {
            t.id == task
                && t.outcome.is_none()
                && t.extra.as_ref().is_some_and(|e| {
                    e.scopes
                        .iter()
                        .any(|s| s.id == scope && !s.cancelled && s.deadline.is_some())
                })
        })
    }

    /// Ends a task that never ran as cancelled, without running it.
    fn cancel_unstarted(&mut self, slot: usize) {
        let t = &mut self.tasks[slot];
        t.cancel = Cancel::Delivered;
        if t.queued {
            // Its queue entry turns stale; it is skipped when popped.
            t.queued = false;
            self.queued -= 1;
        }
        self.finish(slot, Outcome::Cancelled);
    }

    /// Cancels every live task except the one given.
    fn cancel_all(&mut self, except: Option<TaskId>, daemons_only: bool) -> usize {
        let mut ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.outcome.is_none() && Some(t.id) != except && (!daemons_only || t.daemon)
            })
            .map(|(_, t)| t.id)
            .collect();
        ids.sort();
        let n = ids.len();
        for id in ids {
            let _ = self.cancel(id);
        }
        n
    }

    /// Cancels the daemon tasks once every other task has finished. Harmless
    /// to repeat: a task already cancelled is left alone.
    pub(crate) fn cancel_daemons(&mut self) {
        self.cancel_all(None, true);
    }

    // ----- back-pressure ----------------------------------------------------------

    /// The scheduler's own load: live tasks over capacity.
    pub(crate) fn own_load(&self) -> f64 {
        match self.shared.capacity {
            Some(cap) if cap > 0 => self.live as f64 / cap as f64,
            _ => 0.0,
        }
    }

    /// Whether back-pressure can ever engage.
    pub(crate) fn pressure_enabled(&self) -> bool {
        self.has_listener || self.shared.capacity.is_some()
    }

    /// Applies a pressure reading (already combined with the own load):
    /// on a pause, an event; on a resume, an event, and the held tasks and
    /// the admission gate's waiters are let go.
    pub(crate) fn apply_pressure(&mut self, reading: f64) {
        match self.gate.apply(reading) {
            None => {}
            Some(Change::Paused(pressure)) => {
                self.metrics.backpressure_pauses += 1;
                emit!(self, None, EventKind::Paused { pressure });
            }
            Some(Change::Resumed(pressure)) => {
                emit!(self, None, EventKind::Resumed { pressure });
                while let Some(key) = self.held.pop_front() {
                    if let Some(t) = self.tasks.get_mut(key.slot).filter(|t| t.id == key.id)
                        && t.state == TaskState::Waiting(WaitReason::Held)
                    {
                        self.make_ready(key.slot);
                    }
                }
                self.wake_admitted();
            }
        }
    }

    /// Whether intake is paused by back-pressure.
    pub(crate) fn paused(&self) -> bool {
        self.gate.paused()
    }

    /// The last pressure reading.
    pub(crate) fn pressure(&self) -> f64 {
        self.gate.pressure()
    }

    /// Tasks held back or waiting for admission.
    pub(crate) fn held_or_admitting(&self) -> bool {
        !self.held.is_empty() || !self.admit_waiters.is_empty()
    }

    // ----- shutdown ---------------------------------------------------------------

    /// Begins a shutdown (or brings the deadline of the one under way
    /// closer). `patient`: at the deadline, cancel and wait for every task
    /// to unwind (an interrupt) rather than abandon those that park again.
    pub(crate) fn begin_shutdown(
        &mut self,
        timeout: Duration,
        requester: Option<Waiter>,
        patient: bool,
    ) {
        let deadline = self.clock.now().saturating_add(timeout);
        if let Some(state) = &mut self.shutdown {
            if let Some(d) = state.bring_closer(deadline, patient) {
                self.timers.push(d, TimerKind::ShutdownDeadline);
            }
            return;
        }
        self.shared.shutting_down.store(true, Ordering::Release);
        tracing::info!(target: "tiffany::shutdown", ?timeout, live = self.live, "shutdown begins");
        emit!(self, None, EventKind::ShutdownBegin { timeout });
        self.timers.push(deadline, TimerKind::ShutdownDeadline);
        self.shutdown = Some(Shutdown::new(deadline, requester, patient));
    }

    fn requester_id(&self) -> Option<TaskId> {
        self.shutdown.as_ref()?.requester().map(|w| w.task)
    }

    /// Live tasks the drain waits for (the requester excluded), and how many
    /// of them are not daemons.
    fn drain_counts(&self) -> (usize, usize) {
        let mut live = self.live;
        let mut nondaemon = self.live_nondaemon;
        if let Some(r) = self.requester_id()
            && let Some(t) = self.slot_of(r).map(|s| &self.tasks[s])
            && t.outcome.is_none()
        {
            live -= 1;
            if !t.daemon {
                nondaemon -= 1;
            }
        }
        (live, nondaemon)
    }

    /// The shutdown's deadline passed: every task still alive is cancelled.
    /// Each is resumed once more with `Cancelled` to clean up; one that
    /// parks again (it awaits in its cleanup, or swallows the cancellation)
    /// is abandoned then ([`abandon`](Core::abandon)), so no task can hold
    /// a shutdown past its deadline. A patient shutdown (an interrupt) only
    /// cancels, and waits.
    fn shutdown_deadline(&mut self) {
        let Some(patient) = self.shutdown.as_mut().and_then(Shutdown::pass_deadline) else {
            return;
        };
        let except = self.requester_id();
        let ids = self.live_ids(except);
        let n = ids.len();
        for &id in &ids {
            let _ = self.cancel(id);
            if !patient && let Some(slot) = self.slot_of(id) {
                if self.tasks[slot].is_blocked() {
                    // Blocked inside a shield: a shield cannot hold the
                    // shutdown past its deadline.
                    self.deliver_cancel(slot);
                }
                self.mark_abandon(slot);
            }
        }
        if n > 0 {
            tracing::warn!(target: "tiffany::shutdown", cancelled = n, "shutdown deadline passed");
        }
        if let Some(s) = &mut self.shutdown {
            s.cancelled_at_deadline(n);
        }
    }

    /// The ids of the live tasks, in id order (deterministic), but `except`.
    fn live_ids(&self, except: Option<TaskId>) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.outcome.is_none() && Some(t.id) != except)
            .map(|(_, t)| t.id)
            .collect();
        ids.sort();
        ids
    }

    /// Ends a live task as cancelled without resuming it again: its body is
    /// dropped (a Python coroutine is closed, so its `finally` blocks run; a
    /// native coroutine's stack is unwound). For a task that is running or
    /// was just parked by the driver, the driver drops the body it holds.
    fn abandon(&mut self, slot: usize) {
        let t = &mut self.tasks[slot];
        if t.outcome.is_some() {
            return;
        }
        t.cancel = Cancel::Delivered;
        self.drop_admission(slot);
        let t = &mut self.tasks[slot];
        if t.queued {
            // Its queue entry turns stale; it is skipped when popped.
            t.queued = false;
            self.queued -= 1;
        }
        if self.current.is_some_and(|(s, _)| s == slot) {
            self.charge(slot);
            self.current = None;
            self.now_fresh = false;
        }
        self.metrics.abandoned += 1;
        self.finish(slot, Outcome::Cancelled);
    }

    /// Abandons every live task but the shutdown's requester (and the running
    /// task, which is abandoned when it parks); the shutdown, begun if it was
    /// not, completes as timed out.
    pub(crate) fn abort(&mut self) {
        if self.shutdown.is_none() {
            self.begin_shutdown(Duration::ZERO, None, false);
        }
        let except = self.requester_id();
        let current = self.current;
        for id in self.live_ids(except) {
            let Some(slot) = self.slot_of(id) else {
                continue;
            };
            if current.is_some_and(|(s, _)| s == slot) {
                self.mark_abandon(slot);
            } else {
                self.abandon(slot);
            }
        }
        if let Some(s) = &mut self.shutdown {
            s.aborted();
        }
    }

    /// Moves the shutdown forward; returns `Some(result)` when it is time to
    /// run the hooks.
    pub(crate) fn advance_shutdown(&mut self) -> Option<ShutdownResult> {
        let (live, nondaemon) = self.drain_counts();
        match self.shutdown.as_mut()?.advance(live, nondaemon) {
            Advance::Wait => None,
            Advance::RunHooks(result) => Some(result),
            Advance::CancelDaemons => {
                let except = self.requester_id();
                self.cancel_all(except, true);
                self.advance_shutdown()
            }
        }
    }

    /// Records the result after the hooks ran: event, requester, replies.
    pub(crate) fn complete_shutdown(&mut self, result: ShutdownResult) {
        emit!(
            self,
            None,
            EventKind::ShutdownComplete {
                clean: result == ShutdownResult::Clean
            }
        );
        tracing::info!(target: "tiffany::shutdown", result = result.name(), "shutdown complete");
        let requester = self.shutdown.as_mut().and_then(|s| s.complete(result));
        if let Some(w) = requester {
            self.wake(w, Resume::Shutdown(result), false);
        }
    }

    /// Whether a shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// The task being resumed (its slot and id), if any.
    #[inline]
    pub(crate) fn running(&self) -> Option<(usize, TaskId)> {
        self.current
    }

    pub(crate) fn shutdown_result(&self) -> Option<ShutdownResult> {
        self.shutdown.as_ref()?.result()
    }

    // ----- deadlock -----------------------------------------------------------------

    /// Every live task, in id order, with what it waits for.
    pub(crate) fn deadlock_report(&self) -> crate::deadlock::Deadlock {
        let mut blocked: Vec<crate::deadlock::BlockedTask> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.outcome.is_none())
            .map(|(_, t)| crate::deadlock::BlockedTask {
                id: t.id,
                name: t.name().cloned(),
                waits_for: Self::waits_for(t),
            })
            .collect();
        blocked.sort_by_key(|b| b.id);
        crate::deadlock::Deadlock { blocked }
    }

    fn waits_for(t: &Task) -> String {
        match t.state {
            TaskState::Waiting(WaitReason::Join(target)) => format!("is joining task {target}"),
            TaskState::Waiting(WaitReason::Event(event)) => {
                format!("is waiting for {event} to be set")
            }
            TaskState::Waiting(WaitReason::Io(token, interest)) => {
                format!(
                    "is waiting for I/O source {} to be {}",
                    token.get(),
                    interest.name()
                )
            }
            TaskState::Waiting(WaitReason::Admission) => {
                "is waiting at the admission gate".to_string()
            }
            TaskState::Waiting(WaitReason::Shutdown) => {
                "is waiting for the shutdown it asked for".to_string()
            }
            TaskState::Waiting(WaitReason::Held) => "is held by back-pressure".to_string(),
            TaskState::Pending => {
                let deps = t.extra.as_ref().map(|e| e.deps.clone()).unwrap_or_default();
                let deps: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
                format!("waits for its dependencies (tasks {})", deps.join(", "))
            }
            other => format!("is {}", other.name()),
        }
    }

    // ----- misc -------------------------------------------------------------------

    /// The running task as a waiter (for a shutdown it asks for re-entrantly).
    pub(crate) fn current_waiter(&self) -> Option<Waiter> {
        let (slot, _) = self.current?;
        Some(self.tasks[slot].waiter(slot))
    }

    pub(crate) fn current_task(&self) -> Option<TaskId> {
        self.current.map(|(_, id)| id)
    }

    /// A scope call made by the running task from inside its step (a
    /// foreign body calling the scheduler), or from outside any task.
    pub(crate) fn scope_call_from_step(
        &mut self,
        call: ScopeCall,
    ) -> Result<ScopeAnswer, SyscallError> {
        let caller = self.current.map(|(slot, _)| slot);
        self.scope_call(caller, call)
    }

    pub(crate) fn value_of(&self, id: TaskId) -> Option<Value> {
        match self.outcome(id)? {
            Outcome::Done(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn error_of(&self, id: TaskId) -> Option<TaskError> {
        match self.outcome(id)? {
            Outcome::Failed(e) => Some(e),
            _ => None,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::Core;
    use crate::TaskId;

    impl Core {
        /// How many entries a task's joiner list holds, stale ones
        /// included: the pruning in `join` is otherwise seen only as
        /// memory. (`scheduler::tests` reads it.)
        pub(crate) fn joiner_entries(&self, task: TaskId) -> usize {
            let slot = self.slot_of(task).expect("a live task");
            self.tasks[slot]
                .extra
                .as_ref()
                .map_or(0, |e| e.joiners.len())
        }
    }

    /// Every live task has a record, and a busy scheduler touches them in no
    /// particular order: its size is RSS per task and cache misses per step.
    /// (200 since the name moved into the record: 16 bytes more for every
    /// task, where a named task — every task of an asyncio loop — had a
    /// box of about 130 bytes for it.)
    #[test]
    fn the_task_record_stays_small() {
        assert!(std::mem::size_of::<super::Task>() <= 200);
        assert!(std::mem::size_of::<crate::outcome::TaskError>() <= 8);
    }
}
