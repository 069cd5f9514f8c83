//! Sharding: several schedulers on several threads, sharing the work.
//!
//! One [`Scheduler`] runs one task at a time on one thread. A [`ShardPool`]
//! runs `n` of them, one per thread, for native tasks that need more than one
//! core. The pattern is the usual one for work-stealing runtimes, kept small:
//!
//! - **Routing.** A task spawned into the pool goes into the queue of one
//!   shard: the shard its key names ([`SpawnOptions::keyed`]), or the next
//!   one in turn. Queues are `crossbeam` injectors: any thread may push, any
//!   shard may take.
//! - **Intake.** A shard takes tasks from its queue only when it has nothing
//!   ready to run, a few at a time, so work stays in the queues where idle
//!   shards can reach it.
//! - **Stealing.** A shard with nothing to do takes from the other shards'
//!   queues before it goes to sleep; pushing a task wakes its shard and any
//!   idle one. A task is stolen only before it starts: once a shard has
//!   started a task it stays there (its stack, timers and waits live in that
//!   shard's scheduler). Tasks it spawns from inside (`cx.spawn`) are local to
//!   that shard too.
//! - **Ids and joins.** Ids come from one counter, so they are unique across
//!   the pool. A task can join any task spawned into the pool, wherever it
//!   runs: the pool keeps each such task's outcome until it is asked for, and
//!   tells the joiner's shard when the task ends.
//! - **Telemetry.** Each shard keeps its own metrics; [`ShardPool::prometheus`]
//!   exposes them together with a `shard` label.
//! - **A shard that panics.** A task's panic is that task's failure; a panic
//!   of the shard's own thread (a kernel bug) stops the whole pool instead of
//!   leaving it waiting for the dead shard's tasks. The dead shard's scheduler
//!   is dropped (its tasks' destructors run, its inbox closes: a
//!   [`Handle`] to it answers [`HandleError::Closed`]); its pool tasks end
//!   as failed with the panic's message, which wakes their joiners on other
//!   shards; queued tasks are cancelled and new spawns refused; the other
//!   shards shut down at once (a zero drain: their tasks are cancelled, and
//!   abandoned if they do not end). Then [`ShardPool::run`] panics on the
//!   caller's thread with the shard's index and the panic's message, as
//!   [`std::thread::scope`] re-raises a scoped thread's panic;
//!   [`ShardPool::try_run`] returns it as a [`ShardPanic`] instead. A
//!   [`PoolHandle::shutdown`] made meanwhile, or after, returns
//!   [`ShutdownResult::Timeout`] (the dead shard did not shut down clean).
//!
//! Python tasks do not go into a pool: they stay on the scheduler of the
//! thread that runs them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_deque::{Injector, Steal};

use crate::body::{Body, NativeTask, TaskResult};
use crate::builder::Builder;
use crate::error::{HandleError, SpawnError};
use crate::handle::Handle;
use crate::metrics::{MetricsSnapshot, to_prometheus_all};
use crate::outcome::Outcome;
use crate::scheduler::Scheduler;
use crate::shutdown::ShutdownResult;
use crate::task::{SpawnOptions, TaskId};

/// Spawn native tasks: the one spawning interface of a [`Scheduler`], its
/// [`Handle`], a [`ShardPool`] and its [`PoolHandle`].
///
/// Each implements [`spawn_with`](Spawner::spawn_with); [`spawn`](Spawner::spawn)
/// is the same with the default options. (A task spawns children through
/// its [`TaskContext`](crate::TaskContext), which has the same two
/// methods.) Bring it into scope with `use tiffany_scheduler::Spawner` (or
/// the crate's glob).
pub trait Spawner {
    /// Spawns a native task with options: priority, dependencies, name,
    /// daemon, system, routing key.
    fn spawn_with<R: TaskResult>(
        &self,
        options: SpawnOptions,
        f: impl NativeTask<R>,
    ) -> Result<TaskId, SpawnError>;

    /// Spawns a native task with the default options.
    fn spawn<R: TaskResult>(&self, f: impl NativeTask<R>) -> Result<TaskId, SpawnError> {
        self.spawn_with(SpawnOptions::default(), f)
    }
}

/// Spawn and run tasks: a single [`Scheduler`] or a [`ShardPool`], so code
/// can be written against either.
pub trait Executor: Spawner {
    /// Runs until every task has finished; returns the ids in the order they
    /// finished.
    fn run(&self) -> Vec<TaskId>;
}

impl Executor for Scheduler {
    fn run(&self) -> Vec<TaskId> {
        Scheduler::run(self)
    }
}

/// Other schedulers' tasks, for joins and cancels across shards.
pub(crate) trait RemoteTasks: Send + Sync {
    /// Asks to be told when `task` ends. `None`: not a task of the pool;
    /// `Some(Some(outcome))`: it has already ended; `Some(None)`: `notify`
    /// will be called.
    fn watch(&self, task: TaskId, notify: RemoteNotify) -> Option<Option<Outcome>>;
    /// Cancels a task of the pool. `None`: not a task of the pool.
    fn cancel(&self, task: TaskId) -> Option<bool>;
}

/// The joins a shard's tasks have made of other shards' tasks, by key: the
/// owning shard sends the key back with the outcome
/// ([`Handle::remote_joined`](crate::Handle)), and the key names the waiter
/// to wake. A waiter woken meanwhile (a timeout, a cancel) stays until its
/// key comes back; waking it again is harmless (its wait generation moved on).
#[derive(Default)]
pub(crate) struct RemoteJoins {
    waits: rustc_hash::FxHashMap<u64, crate::waiter::Waiter>,
    next_key: u64,
}

impl RemoteJoins {
    /// A key for the next join.
    pub(crate) fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    /// The joiner waiting under `key`.
    pub(crate) fn insert(&mut self, key: u64, waiter: crate::waiter::Waiter) {
        self.waits.insert(key, waiter);
    }

    /// Takes the joiner of `key`, if it is still there.
    pub(crate) fn take(&mut self, key: u64) -> Option<crate::waiter::Waiter> {
        self.waits.remove(&key)
    }
}

/// How to tell a shard that a task it joins has ended.
pub(crate) struct RemoteNotify {
    pub(crate) handle: Handle,
    pub(crate) key: u64,
}

/// Pool tasks whose outcome is kept after they end, waiting to be joined.
const RETAIN_OUTCOMES: usize = 65_536;
/// How many queued tasks an idle shard takes in at once.
const INTAKE_BATCH: usize = 16;

struct Job {
    id: TaskId,
    body: Body,
    options: SpawnOptions,
}

enum Entry {
    /// Not ended yet (queued or running).
    Live {
        watchers: Vec<RemoteNotify>,
        /// The shard running it, once taken in.
        shard: Option<usize>,
        /// Cancelled before it was taken in: it will not run.
        cancelled: bool,
    },
    Done(Outcome),
}

#[derive(Default)]
struct Registry {
    entries: HashMap<TaskId, Entry>,
    /// Ended tasks, oldest first, to forget their outcomes eventually.
    done: VecDeque<TaskId>,
    /// Every pool task's id in the order it ended.
    order: Vec<TaskId>,
}

struct Pool {
    queues: Vec<Injector<Job>>,
    next_id: Arc<AtomicU64>,
    turn: AtomicUsize,
    /// Pool tasks not ended yet.
    pending: AtomicUsize,
    registry: Mutex<Registry>,
    /// Signalled when `pending` reaches zero or a shutdown is asked for.
    settled: Condvar,
    handles: Mutex<Vec<Option<Handle>>>,
    /// Each shard's last shutdown result, once its thread ended.
    results: Mutex<Vec<Option<ShutdownResult>>>,
    idle: Vec<AtomicBool>,
    shutting_down: AtomicBool,
    stack_size: usize,
    /// The first shard whose thread panicked, and the panic's message.
    panicked: Mutex<Option<ShardPanic>>,
    /// Test hook: the shard whose next intake panics (`usize::MAX`: none),
    /// standing for a kernel bug on a shard's thread.
    #[cfg(test)]
    trip: AtomicUsize,
}

/// A shard's thread panicked (a kernel bug, not a task's panic): the pool
/// was stopped. Returned by [`ShardPool::try_run`]; [`ShardPool::run`]
/// panics with its text. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPanic {
    /// The index of the shard whose thread panicked.
    pub shard: usize,
    /// The panic's message.
    pub message: String,
}

impl fmt::Display for ShardPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shard {} of the pool panicked (the pool was stopped): {}",
            self.shard, self.message
        )
    }
}

impl std::error::Error for ShardPanic {}

impl Pool {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, shard: usize, job: Job) -> Result<TaskId, SpawnError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SpawnError::ShuttingDown);
        }
        let id = job.id;
        self.registry().entries.insert(
            id,
            Entry::Live {
                watchers: Vec::new(),
                shard: None,
                cancelled: false,
            },
        );
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.queues[shard].push(job);
        self.wake(shard);
        Ok(id)
    }

    /// Wakes `shard` and every idle shard (one of them may steal the task).
    fn wake(&self, shard: usize) {
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        for (i, h) in handles.iter().enumerate() {
            if let Some(h) = h
                && (i == shard || self.idle[i].load(Ordering::Acquire))
            {
                h.wake();
            }
        }
    }

    /// Takes a job from queue `index`.
    fn take_from(&self, index: usize) -> Option<Job> {
        loop {
            match self.queues[index].steal() {
                Steal::Success(job) => return Some(job),
                Steal::Empty => return None,
                Steal::Retry => continue,
            }
        }
    }

    /// Steals one job from another shard's queue.
    fn steal(&self, shard: usize) -> Option<Job> {
        let n = self.queues.len();
        (1..n).find_map(|k| self.take_from((shard + k) % n))
    }

    /// Shard `shard`'s intake: spawn up to a batch of queued tasks into `sched`.
    fn intake(self: &Arc<Self>, shard: usize, sched: &Scheduler) -> usize {
        #[cfg(test)]
        if self.trip.load(Ordering::Acquire) == shard {
            panic!("planted kernel bug on shard {shard}");
        }
        let mut taken = 0;
        let mut stolen = false;
        while taken < INTAKE_BATCH && !stolen {
            // Own queue first; steal (one task) only when it is empty, so a
            // busy shard's backlog is shared out one task at a time.
            let job = match self.take_from(shard) {
                Some(job) => job,
                None if taken == 0 => match self.steal(shard) {
                    Some(job) => {
                        stolen = true;
                        job
                    }
                    None => break,
                },
                None => break,
            };
            let cancelled = {
                let mut reg = self.registry();
                match reg.entries.get_mut(&job.id) {
                    Some(Entry::Live {
                        shard: s,
                        cancelled,
                        ..
                    }) => {
                        *s = Some(shard);
                        *cancelled
                    }
                    _ => true,
                }
            };
            let id = job.id;
            if cancelled {
                drop(job);
                self.finish(id, Some(Outcome::Cancelled));
                continue;
            }
            match sched.spawn_with_id(id, job.body, job.options) {
                Ok(_) => {
                    let pool = Arc::clone(self);
                    sched.on_task_end(id, move |id, outcome| {
                        pool.finish(id, Some(outcome.clone()))
                    });
                    taken += 1;
                }
                Err(e) => {
                    tracing::warn!(target: "tiffany::shard", task = id.get(), error = %e, "a pool task was refused by its shard");
                    self.finish(id, Some(Outcome::Cancelled));
                }
            }
        }
        self.idle[shard].store(taken == 0, Ordering::Release);
        taken
    }

    /// Records a pool task's end and tells whoever waits for it.
    fn finish(&self, id: TaskId, outcome: Option<Outcome>) {
        let outcome = outcome.unwrap_or(Outcome::Cancelled);
        // A pool shutdown may already have recorded a queued task's end.
        if matches!(self.registry().entries.get(&id), Some(Entry::Done(_))) {
            return;
        }
        let watchers = {
            let mut reg = self.registry();
            let previous = reg.entries.insert(id, Entry::Done(outcome.clone()));
            reg.order.push(id);
            reg.done.push_back(id);
            while reg.done.len() > RETAIN_OUTCOMES {
                if let Some(old) = reg.done.pop_front() {
                    reg.entries.remove(&old);
                }
            }
            match previous {
                Some(Entry::Live { watchers, .. }) => watchers,
                _ => Vec::new(),
            }
        };
        for w in watchers {
            w.handle.remote_joined(w.key, outcome.clone());
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _guard = self.registry();
            self.settled.notify_all();
        }
    }

    /// Ends every queued task as cancelled (a shutdown of the pool).
    fn cancel_queued(&self) {
        for q in &self.queues {
            loop {
                match q.steal() {
                    Steal::Success(job) => {
                        let id = job.id;
                        drop(job);
                        self.finish(id, Some(Outcome::Cancelled));
                    }
                    Steal::Empty => break,
                    Steal::Retry => continue,
                }
            }
        }
    }

    /// Shard `shard`'s thread panicked and its scheduler is gone: stop the
    /// pool. Its pool tasks end as failed (their joiners wake), queued tasks
    /// as cancelled, and the run is told to stop the other shards.
    fn shard_panicked(&self, failure: ShardPanic) {
        let shard = failure.shard;
        tracing::error!(target: "tiffany::shard", shard, message = %failure.message, "a shard's thread panicked; stopping the pool");
        let error = crate::outcome::TaskError::new(failure.to_string());
        self.lock_panicked().get_or_insert(failure);
        self.shutting_down.store(true, Ordering::Release);
        self.cancel_queued();
        let lost: Vec<TaskId> = self
            .registry()
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Live { shard: Some(s), .. } if *s == shard))
            .map(|(&id, _)| id)
            .collect();
        for id in lost {
            self.finish(id, Some(Outcome::Failed(error.clone())));
        }
        let _guard = self.registry();
        self.settled.notify_all();
    }

    fn lock_panicked(&self) -> MutexGuard<'_, Option<ShardPanic>> {
        self.panicked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RemoteTasks for Pool {
    fn watch(&self, task: TaskId, notify: RemoteNotify) -> Option<Option<Outcome>> {
        let mut reg = self.registry();
        match reg.entries.get_mut(&task)? {
            Entry::Done(outcome) => Some(Some(outcome.clone())),
            Entry::Live { watchers, .. } => {
                watchers.push(notify);
                Some(None)
            }
        }
    }

    fn cancel(&self, task: TaskId) -> Option<bool> {
        let shard = {
            let mut reg = self.registry();
            match reg.entries.get_mut(&task)? {
                Entry::Done(_) => return Some(false),
                Entry::Live { shard: Some(s), .. } => *s,
                Entry::Live { cancelled, .. } => {
                    // Still queued: it will be dropped when taken in.
                    *cancelled = true;
                    return Some(true);
                }
            }
        };
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(h)) = handles.get(shard) {
            let _ = h.cancel(task);
        }
        Some(true)
    }
}

/// A pool of schedulers, one per thread, for native tasks. See the
/// [module documentation](self).
///
/// ```
/// use tiffany_scheduler::{ShardPool, JoinResult, Spawner};
///
/// let pool = ShardPool::new(2);
/// let squares: Vec<_> = (0..8u64).map(|i| pool.spawn(move |_| i * i).unwrap()).collect();
/// let total = pool.spawn(move |cx| {
///     squares.iter().map(|&t| match cx.join(t) {
///         JoinResult::Success(v) => *v.downcast_ref::<u64>().unwrap(),
///         other => panic!("{other:?}"),
///     }).sum::<u64>()
/// }).unwrap();
/// let finished = pool.run();
/// assert_eq!(finished.len(), 9);
/// assert_eq!(pool.value(total).and_then(|v| v.downcast_ref::<u64>().copied()), Some(140));
/// ```
pub struct ShardPool {
    pool: Arc<Pool>,
}

impl ShardPool {
    /// A pool of `shards` schedulers (at least one), with the default settings.
    pub fn new(shards: usize) -> Self {
        Self::with_stack_size(shards, crate::native::DEFAULT_STACK_SIZE)
    }

    /// A pool whose native tasks get stacks of `stack_size` bytes.
    pub fn with_stack_size(shards: usize, stack_size: usize) -> Self {
        let shards = shards.max(1);
        ShardPool {
            pool: Arc::new(Pool {
                queues: (0..shards).map(|_| Injector::new()).collect(),
                next_id: Arc::new(AtomicU64::new(1)),
                turn: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                registry: Mutex::new(Registry::default()),
                settled: Condvar::new(),
                handles: Mutex::new(vec![None; shards]),
                results: Mutex::new(vec![None; shards]),
                idle: (0..shards).map(|_| AtomicBool::new(false)).collect(),
                shutting_down: AtomicBool::new(false),
                stack_size,
                panicked: Mutex::new(None),
                #[cfg(test)]
                trip: AtomicUsize::new(usize::MAX),
            }),
        }
    }

    /// How many shards (threads) the pool runs.
    pub fn shards(&self) -> usize {
        self.pool.queues.len()
    }

    /// A thread-safe handle that spawns into the pool and shuts it down.
    pub fn handle(&self) -> PoolHandle {
        PoolHandle {
            pool: self.pool.clone(),
        }
    }

    /// A pool task's outcome, kept after it ended until it is joined (the most
    /// recent 65,536 are kept).
    pub fn outcome(&self, task: TaskId) -> Option<Outcome> {
        match self.pool.registry().entries.get(&task)? {
            Entry::Done(o) => Some(o.clone()),
            Entry::Live { .. } => None,
        }
    }

    /// A pool task's value, if it ended returning one.
    pub fn value(&self, task: TaskId) -> Option<crate::Value> {
        match self.outcome(task)? {
            Outcome::Done(v) => Some(v),
            _ => None,
        }
    }

    /// Runs the shards until every task spawned into the pool has ended (and
    /// the tasks those spawned locally), then stops them. Returns the pool
    /// tasks' ids in the order they ended.
    ///
    /// # Panics
    ///
    /// If a shard's thread panicked (a kernel bug), once the pool has been
    /// stopped, with the shard and the panic's message (see
    /// [`try_run`](Self::try_run)).
    pub fn run(&self) -> Vec<TaskId> {
        match self.try_run() {
            Ok(order) => order,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// [`run`](Self::run), returning a shard's panic as an error instead of
    /// re-raising it: the pool was stopped (see the
    /// [module documentation](self)). A pool whose shard panicked stays
    /// stopped: a later run returns the same error.
    pub fn try_run(&self) -> Result<Vec<TaskId>, ShardPanic> {
        self.run_with(Duration::MAX);
        if let Some(failure) = self.pool.lock_panicked().clone() {
            return Err(failure);
        }
        Ok(std::mem::take(&mut self.pool.registry().order))
    }

    /// Runs the shards until the pool is idle or shut down; `drain` is how long
    /// the final shutdown of each shard may wait for local tasks.
    fn run_with(&self, drain: Duration) -> Vec<ShutdownResult> {
        let pool = &self.pool;
        let n = self.shards();
        std::thread::scope(|scope| {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let threads: Vec<_> = (0..n)
                .map(|shard| {
                    let pool = Arc::clone(pool);
                    let ready = ready_tx.clone();
                    std::thread::Builder::new()
                        .name(format!("tiffany-shard-{shard}"))
                        .spawn_scoped(scope, move || run_shard(pool, shard, ready))
                        .expect("spawn a shard thread")
                })
                .collect();
            drop(ready_tx);
            // Every shard has registered its handle once it sent its token.
            for _ in 0..n {
                let _ = ready_rx.recv();
            }
            {
                let mut reg = pool.registry();
                while pool.pending.load(Ordering::Acquire) > 0
                    && !pool.shutting_down.load(Ordering::Acquire)
                {
                    reg = pool.settled.wait(reg).unwrap_or_else(|e| e.into_inner());
                }
            }
            let handles: Vec<Handle> = pool
                .handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .flatten()
                .cloned()
                .collect();
            // After a shard's panic the others stop at once, whatever the drain.
            let drain = if pool.lock_panicked().is_some() {
                Duration::ZERO
            } else {
                drain
            };
            for h in &handles {
                let _ = h.request_shutdown(drain);
            }
            let results = threads
                .into_iter()
                .map(|t| t.join().unwrap_or(ShutdownResult::Timeout))
                .collect();
            let mut slots = pool.handles.lock().unwrap_or_else(|e| e.into_inner());
            slots.iter_mut().for_each(|h| *h = None);
            results
        })
    }

    /// Every shard's metrics, each labelled `shard="<index>"`. Only while
    /// the pool runs (from another thread); empty otherwise.
    pub fn metrics(&self) -> Vec<MetricsSnapshot> {
        self.handle().metrics()
    }

    /// Every shard's metrics in one Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        to_prometheus_all(&self.metrics())
    }
}

impl Executor for ShardPool {
    fn run(&self) -> Vec<TaskId> {
        ShardPool::run(self)
    }
}

impl Spawner for ShardPool {
    /// See [`PoolHandle`]'s.
    fn spawn_with<R: TaskResult>(
        &self,
        options: SpawnOptions,
        f: impl NativeTask<R>,
    ) -> Result<TaskId, SpawnError> {
        self.handle().spawn_with(options, f)
    }
}

/// One shard's thread: a scheduler fed from the pool's queues.
fn run_shard(pool: Arc<Pool>, shard: usize, ready: std::sync::mpsc::Sender<()>) -> ShutdownResult {
    let intake_pool = Arc::clone(&pool);
    let remote: Arc<dyn RemoteTasks> = pool.clone();
    let mut builder = Builder::default().stack_size(pool.stack_size);
    builder.id_source = Some(pool.next_id.clone());
    builder.remote = Some(remote);
    builder.intake = Some(Box::new(move |sched: &Scheduler| {
        intake_pool.intake(shard, sched)
    }));
    let sched = match builder.build() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "tiffany::shard", shard, error = %e, "a shard could not start");
            let _ = ready.send(());
            return ShutdownResult::Timeout;
        }
    };
    pool.handles.lock().unwrap_or_else(|e| e.into_inner())[shard] = Some(sched.handle());
    let _ = ready.send(());
    // A panic out of the loop is a kernel bug: the scheduler's state cannot
    // be trusted, so it is dropped (closing its inbox, unwinding its tasks)
    // and the pool is stopped rather than left waiting for it.
    match panic::catch_unwind(AssertUnwindSafe(|| sched.serve())) {
        Ok(result) => {
            pool.results.lock().unwrap_or_else(|e| e.into_inner())[shard] = Some(result);
            result
        }
        Err(payload) => {
            let message = crate::outcome::TaskError::from_panic(&*payload)
                .message()
                .to_owned();
            // First the result, then the handle: a `PoolHandle::shutdown`
            // that finds no handle, or no answer, reads the result.
            pool.results.lock().unwrap_or_else(|e| e.into_inner())[shard] =
                Some(ShutdownResult::Timeout);
            let handle = pool.handles.lock().unwrap_or_else(|e| e.into_inner())[shard].take();
            if panic::catch_unwind(AssertUnwindSafe(move || drop(sched))).is_err() {
                tracing::error!(target: "tiffany::shard", shard, "dropping a panicked shard's scheduler panicked too");
            }
            // Dropping the scheduler closed its inbox, unless a clone of it
            // outlived the drop: close it here too, so that nobody waits
            // for an answer from it (the commands left are dropped unrun).
            if let Some(handle) = handle {
                drop(handle.shared.close());
            }
            pool.shard_panicked(ShardPanic { shard, message });
            ShutdownResult::Timeout
        }
    }
}

/// A thread-safe handle to a [`ShardPool`]: spawn into it, cancel, shut down.
#[derive(Clone)]
pub struct PoolHandle {
    pool: Arc<Pool>,
}

impl Spawner for PoolHandle {
    /// Spawns a task with options: on the shard its
    /// [`key`](SpawnOptions::keyed) names (`key % shards`), else the next
    /// shard in turn. Dependencies are not supported across the pool: each
    /// must be a task of the shard that runs this one.
    fn spawn_with<R: TaskResult>(
        &self,
        options: SpawnOptions,
        f: impl NativeTask<R>,
    ) -> Result<TaskId, SpawnError> {
        if self.pool.shutting_down.load(Ordering::Acquire) {
            return Err(SpawnError::ShuttingDown);
        }
        let n = self.pool.queues.len();
        let shard = match options.key {
            Some(key) => (key % n as u64) as usize,
            None => self.pool.turn.fetch_add(1, Ordering::Relaxed) % n,
        };
        let body = Body::native_with_stack(self.pool.stack_size, f)?;
        let id = TaskId(self.pool.next_id.fetch_add(1, Ordering::Relaxed));
        self.pool.push(shard, Job { id, body, options })
    }
}

impl PoolHandle {
    /// Cancels a pool task; returns whether it was still live.
    pub fn cancel(&self, task: TaskId) -> bool {
        self.pool.cancel(task).unwrap_or(false)
    }

    /// Every shard's metrics, labelled with `shard`, while the pool runs.
    pub fn metrics(&self) -> Vec<MetricsSnapshot> {
        let handles: Vec<Option<Handle>> = self
            .pool
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        handles
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                Some(
                    h.as_ref()?
                        .metrics()
                        .ok()?
                        .with_label("shard", i.to_string()),
                )
            })
            .collect()
    }

    /// Shuts the whole pool down: no more spawns, queued tasks are cancelled,
    /// every shard drains for up to `timeout` then cancels what remains.
    /// Returns `Clean` if every shard was clean. Not from a shard's thread.
    pub fn shutdown(&self, timeout: Duration) -> Result<ShutdownResult, HandleError> {
        self.pool.shutting_down.store(true, Ordering::Release);
        // Queued tasks never start.
        self.pool.cancel_queued();
        let handles: Vec<Option<Handle>> = self
            .pool
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if handles
            .iter()
            .flatten()
            .any(|h| std::thread::current().id() == h.shared.thread)
        {
            return Err(HandleError::WouldDeadlock);
        }
        // Ask every shard first, then wait for all: they drain in parallel.
        let waits: Vec<Option<std::sync::mpsc::Receiver<ShutdownResult>>> = handles
            .iter()
            .map(|h| {
                let h = h.as_ref()?;
                let (tx, rx) = std::sync::mpsc::channel();
                h.shared
                    .send(crate::handle::Command::Shutdown {
                        timeout,
                        reply: Some(tx),
                    })
                    .ok()?;
                Some(rx)
            })
            .collect();
        let mut clean = true;
        for (shard, wait) in waits.into_iter().enumerate() {
            // A shard that already stopped reports the result it stopped with.
            let result = wait
                .and_then(|rx| rx.recv().ok())
                .or_else(|| self.pool.results.lock().unwrap_or_else(|e| e.into_inner())[shard]);
            clean &= result != Some(ShutdownResult::Timeout);
        }
        {
            let _guard = self.pool.registry();
            self.pool.settled.notify_all();
        }
        Ok(if clean {
            ShutdownResult::Clean
        } else {
            ShutdownResult::Timeout
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::within;
    use crate::waiter::Waiter;

    /// Another shard's task that is live as far as a joiner can tell: every
    /// watch is kept, and nobody is ever told of an end.
    #[derive(Default)]
    struct NeverEnds(Mutex<Vec<RemoteNotify>>);

    impl RemoteTasks for NeverEnds {
        fn watch(&self, _: TaskId, notify: RemoteNotify) -> Option<Option<Outcome>> {
            self.0.lock().unwrap().push(notify);
            Some(None)
        }
        fn cancel(&self, _: TaskId) -> Option<bool> {
            Some(false)
        }
    }

    /// A zero-timeout join of another shard's live task is answered
    /// `Timeout` at once, as a local one is: the joiner never blocks (no
    /// `Join` event, no timer).
    #[test]
    fn a_zero_timeout_join_of_a_remote_task_answers_at_once() {
        within(|| {
            let mut builder = Scheduler::builder().virtual_clock();
            builder.remote = Some(Arc::new(NeverEnds::default()));
            let s = builder.build().unwrap();
            let log = crate::EventLog::new();
            s.subscribe(log.clone());
            let remote = TaskId(1_000_000);
            let joiner = s
                .spawn(move |cx| {
                    matches!(
                        cx.join_timeout(remote, Duration::ZERO),
                        crate::JoinResult::Timeout
                    )
                })
                .unwrap();
            s.retain(joiner);
            s.run();
            let timed_out = s
                .value(joiner)
                .and_then(|v| v.downcast_ref::<bool>().copied());
            assert_eq!(timed_out, Some(true));
            let events = log.events();
            assert!(
                events
                    .iter()
                    .all(|e| !matches!(e.kind, crate::EventKind::Join { .. })),
                "the joiner blocked: {events:?}"
            );
        });
    }

    /// Each remote join gets its own key, and a key gives back the joiner
    /// it was recorded with, once: two joins from one shard in flight at
    /// the same time each wake their own joiner.
    #[test]
    fn each_remote_join_has_its_own_key() {
        let waiter = |n: u64| Waiter {
            slot: n as usize,
            task: TaskId(n),
            generation: 1,
        };
        let mut joins = RemoteJoins::default();
        let keys: Vec<u64> = (0..3).map(|_| joins.next_key()).collect();
        assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
        for (n, &key) in keys.iter().enumerate() {
            joins.insert(key, waiter(n as u64));
        }
        assert_eq!(joins.take(keys[1]), Some(waiter(1)));
        assert_eq!(joins.take(keys[1]), None);
        assert_eq!(joins.take(keys[0]), Some(waiter(0)));
        assert_eq!(joins.take(keys[2]), Some(waiter(2)));
    }

    /// `run` returns once every pool task has ended. Bounded: a run that
    /// waits on fails the test after 10 s instead of hanging it.
    #[test]
    fn a_run_returns_once_its_tasks_have_ended() {
        let (mut ids, mut finished) = within(|| {
            let pool = ShardPool::new(2);
            let ids: Vec<TaskId> = (0..4u64)
                .map(|i| {
                    pool.spawn_with(SpawnOptions::default().keyed(i), move |_| i)
                        .unwrap()
                })
                .collect();
            let finished = pool.run();
            (ids, finished)
        });
        ids.sort();
        finished.sort();
        assert_eq!(finished, ids);
    }

    /// A pool whose shards had nothing to cancel shuts down clean: one
    /// that never ran, and one whose run ended. Bounded.
    #[test]
    fn a_pool_with_nothing_left_shuts_down_clean() {
        within(|| {
            let pool = ShardPool::new(2);
            assert_eq!(
                pool.handle().shutdown(Duration::ZERO),
                Ok(ShutdownResult::Clean)
            );
            let pool = ShardPool::new(2);
            pool.spawn(|_| ()).unwrap();
            assert_eq!(pool.run().len(), 1);
            assert_eq!(
                pool.handle().shutdown(Duration::ZERO),
                Ok(ShutdownResult::Clean)
            );
        });
    }

    /// A shutdown ends the tasks still queued as cancelled, on every
    /// shard's queue, and the pool has nothing left pending. Bounded.
    #[test]
    fn a_shutdown_cancels_the_queued_tasks() {
        within(|| {
            let pool = ShardPool::new(2);
            let mut ids = queue(&pool, 0, 2);
            ids.extend(queue(&pool, 1, 2));
            assert_eq!(pool.pool.pending.load(Ordering::Acquire), 4);
            assert_eq!(
                pool.handle().shutdown(Duration::ZERO),
                Ok(ShutdownResult::Clean)
            );
            for id in ids {
                assert!(
                    matches!(pool.outcome(id), Some(Outcome::Cancelled)),
                    "{id:?} was left queued"
                );
            }
            assert_eq!(pool.pool.pending.load(Ordering::Acquire), 0);
        });
    }

    /// A pool has the shards asked for, and at least one.
    #[test]
    fn a_pool_has_the_shards_asked_for_and_at_least_one() {
        assert_eq!(ShardPool::new(3).shards(), 3);
        assert_eq!(ShardPool::new(0).shards(), 1);
    }

    /// Queues `n` trivial tasks on `shard`'s queue (no shard runs yet).
    fn queue(pool: &ShardPool, shard: u64, n: usize) -> Vec<TaskId> {
        let handle = pool.handle();
        (0..n)
            .map(|_| {
                handle
                    .spawn_with(SpawnOptions::default().keyed(shard), |_| ())
                    .unwrap()
            })
            .collect()
    }

    /// A shard takes from its own queue; it steals from the others in turn
    /// (the next shard first), never from its own.
    #[test]
    fn take_reads_one_queue_and_steal_the_others_in_turn() {
        let pool = ShardPool::new(3);
        let own = queue(&pool, 1, 1);
        let next = queue(&pool, 2, 1);
        let after = queue(&pool, 0, 1);
        let p = &pool.pool;
        assert_eq!(p.steal(1).map(|j| j.id), Some(next[0]));
        assert_eq!(p.steal(1).map(|j| j.id), Some(after[0]));
        assert!(p.steal(1).is_none(), "stole from its own queue");
        assert_eq!(p.take_from(1).map(|j| j.id), Some(own[0]));
        assert!(p.take_from(1).is_none());
    }

    /// Intake takes a batch of its own queue at most; with its own queue
    /// empty it steals one task, no more; a task cancelled while queued is
    /// ended, not spawned; a shard that took nothing is idle.
    #[test]
    fn intake_takes_a_batch_or_steals_one() {
        let pool = ShardPool::new(2);
        let sched = Scheduler::new();
        let own = queue(&pool, 0, INTAKE_BATCH + 2);
        let theirs = queue(&pool, 1, 3);
        let p = &pool.pool;
        assert!(pool.handle().cancel(own[0]));
        // The cancelled one is not counted: a full batch after it.
        assert_eq!(p.intake(0, &sched), INTAKE_BATCH);
        assert!(matches!(pool.outcome(own[0]), Some(Outcome::Cancelled)));
        assert!(!p.idle[0].load(Ordering::Acquire));
        assert_eq!(sched.live_tasks(), INTAKE_BATCH);
        for id in &own[1..=INTAKE_BATCH] {
            assert!(sched.state(*id).is_some(), "{id:?} not spawned");
        }
        // The rest of its own queue, and nothing stolen while it had some.
        assert_eq!(p.intake(0, &sched), 1);
        assert!(sched.state(own[INTAKE_BATCH + 1]).is_some());
        assert!(sched.state(theirs[0]).is_none());
        // Own queue empty: one stolen.
        assert_eq!(p.intake(0, &sched), 1);
        assert!(sched.state(theirs[0]).is_some() && sched.state(theirs[1]).is_none());
        // Shard 1 takes the rest of its own; then nothing is left anywhere.
        let other = Scheduler::new();
        assert_eq!(p.intake(1, &other), 2);
        assert!(!p.idle[1].load(Ordering::Acquire));
        assert_eq!(p.intake(1, &other), 0);
        assert!(p.idle[1].load(Ordering::Acquire));
    }

    /// A task pushed onto a busy shard's queue wakes an idle shard, which
    /// steals it: the busy shard (its task always ready) never looks at its
    /// queue, and the idle one sleeps in its poller until woken. Fails in
    /// at most five seconds, not by a hang, when the wake is lost.
    #[test]
    fn a_push_wakes_an_idle_shard_to_steal() {
        const BOUND: Duration = Duration::from_secs(5);
        let pool = ShardPool::new(2);
        let shared = Arc::clone(&pool.pool);
        let busy = pool
            .spawn_with(SpawnOptions::default().keyed(0), move |cx| {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                let mine = usize::from(name == "tiffany-shard-1");
                let other = 1 - mine;
                let started = std::time::Instant::now();
                // The other shard has found nothing to take and gone to sleep.
                while !shared.idle[other].load(Ordering::Acquire) && started.elapsed() < BOUND {
                    cx.yield_now();
                }
                let ran = Arc::new(Mutex::new(None));
                let record = Arc::clone(&ran);
                PoolHandle {
                    pool: Arc::clone(&shared),
                }
                .spawn_with(SpawnOptions::default().keyed(mine as u64), move |_| {
                    *record.lock().unwrap() = std::thread::current().name().map(str::to_owned);
                })
                .unwrap();
                let started = std::time::Instant::now();
                while ran.lock().unwrap().is_none() && started.elapsed() < BOUND {
                    cx.yield_now();
                }
                let ran_on = ran.lock().unwrap().clone();
                (name, ran_on)
            })
            .unwrap();
        let pool = within(move || {
            pool.run();
            pool
        });
        let Some(Outcome::Done(v)) = pool.outcome(busy) else {
            panic!("the busy task did not return");
        };
        let (busy_on, stolen_on) = v.downcast_ref::<(String, Option<String>)>().unwrap();
        let stolen_on = stolen_on
            .as_deref()
            .expect("no shard took the task while its own was busy");
        assert_ne!(stolen_on, busy_on, "the busy shard ran it");
    }

    /// The end of the last pending task wakes whoever waits for the pool to
    /// settle (`ShardPool::run`); an earlier one does not have to. The
    /// waiter holds the registry lock until it waits, and `finish` takes
    /// that lock, so the wake cannot come before the wait.
    #[test]
    fn the_last_end_wakes_the_waiter_for_the_pool_to_settle() {
        const BOUND: Duration = Duration::from_secs(5);
        let pool = ShardPool::new(1);
        let p = Arc::clone(&pool.pool);
        p.pending.store(2, Ordering::Release);
        p.finish(TaskId(1), None);
        assert_eq!(p.pending.load(Ordering::Acquire), 1);
        let reg = p.registry();
        let finisher = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.finish(TaskId(2), None))
        };
        // One wait, not a loop: a wake that never comes shows as a timeout.
        let (_reg, waited) = p.settled.wait_timeout(reg, BOUND).unwrap();
        finisher.join().unwrap();
        assert!(!waited.timed_out(), "the last end woke nobody");
    }

    /// A panic of a shard's own thread (a kernel bug, planted through the
    /// test hook in `intake`) stops the pool instead of hanging it: the run
    /// ends with the shard's index and the message; the dead shard's task
    /// fails, which wakes its joiner on the other shard; the other shard's
    /// hour-long sleeper is cancelled (not drained for an hour); queued
    /// tasks are cancelled; spawns are refused; a shutdown from outside
    /// answers. Bounded: with the fix removed the run hangs and the test
    /// fails after 10 s.
    #[test]
    fn a_panicking_shard_stops_the_pool_with_its_message() {
        const BOUND: Duration = Duration::from_secs(10);
        let pool = Arc::new(ShardPool::new(2));
        let shared = Arc::clone(&pool.pool);
        let hour = Duration::from_secs(3600);
        // `doomed` and `joiner` each keep their shard busy until both have
        // started, so neither is stolen: `doomed` runs on shard 0, `joiner`
        // on shard 1.
        let started: Arc<Mutex<Vec<String>>> = Arc::default();
        let meet = move |cx: &mut crate::TaskContext| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            started.lock().unwrap().push(name);
            let since = std::time::Instant::now();
            while started.lock().unwrap().len() < 2 && since.elapsed() < BOUND {
                cx.yield_now();
            }
        };
        let meet_too = meet.clone();
        let doomed = pool
            .spawn_with(SpawnOptions::default().keyed(0), move |cx| {
                meet(cx);
                cx.sleep(hour);
            })
            .unwrap();
        let shared_in = Arc::clone(&shared);
        let joiner = pool
            .spawn_with(SpawnOptions::default().keyed(1), move |cx| {
                meet_too(cx);
                let on = std::thread::current().name().unwrap_or("").to_owned();
                // A local sleeper that a drain would wait an hour for.
                cx.spawn(move |cx| cx.sleep(hour)).unwrap();
                // Once shard 0 sleeps, trip it and wake it with a push.
                let since = std::time::Instant::now();
                while !shared_in.idle[0].load(Ordering::Acquire) && since.elapsed() < BOUND {
                    cx.yield_now();
                }
                shared_in.trip.store(0, Ordering::Release);
                PoolHandle {
                    pool: Arc::clone(&shared_in),
                }
                .spawn_with(SpawnOptions::default().keyed(0), |_| ())
                .unwrap();
                (on, cx.join(doomed).is_success())
            })
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let runner = Arc::clone(&pool);
        std::thread::spawn(move || {
            let _ = tx.send(runner.try_run());
        });
        let failure = rx
            .recv_timeout(BOUND)
            .expect("the run waited for the dead shard")
            .expect_err("the run did not report the shard's panic");
        assert_eq!(failure.shard, 0);
        assert_eq!(failure.message, "planted kernel bug on shard 0");
        assert!(
            failure.to_string().contains("shard 0") && failure.to_string().contains("planted"),
            "{failure}"
        );
        match pool.outcome(doomed) {
            Some(Outcome::Failed(e)) => assert!(e.message().contains("planted"), "{e}"),
            other => panic!("the dead shard's task: {other:?}"),
        }
        // The joiner ran on the live shard and its join ended (failed, or
        // cancelled by the stop: either way it did not wait on).
        match pool.outcome(joiner) {
            Some(Outcome::Done(v)) => {
                let (on, joined) = v.downcast_ref::<(String, bool)>().unwrap();
                assert_eq!(on, "tiffany-shard-1");
                assert!(!joined, "the dead shard's task was joined as a success");
            }
            Some(Outcome::Cancelled) => {}
            other => panic!("the joiner: {other:?}"),
        }
        assert_eq!(shared.pending.load(Ordering::Acquire), 0);
        assert_eq!(
            pool.spawn(|_| ()).unwrap_err(),
            SpawnError::ShuttingDown,
            "a stopped pool took a spawn"
        );
        assert_eq!(
            pool.handle().shutdown(Duration::ZERO),
            Ok(ShutdownResult::Timeout)
        );
        // A second run ends at once with the same error; `run` re-raises it.
        shared.trip.store(usize::MAX, Ordering::Release);
        assert_eq!(pool.try_run(), Err(failure.clone()));
        let raised = std::panic::catch_unwind(AssertUnwindSafe(|| pool.run()))
            .expect_err("run returned after a shard's panic");
        assert_eq!(raised.downcast_ref::<String>(), Some(&failure.to_string()));
    }

    /// The pool keeps the outcomes of the last [`RETAIN_OUTCOMES`] tasks
    /// that ended, no more and no fewer: the oldest is forgotten first.
    #[test]
    fn outcomes_are_kept_for_the_most_recent_tasks_only() {
        let pool = ShardPool::new(1);
        let ended = RETAIN_OUTCOMES as u64 + 1;
        // As if each had been spawned (finish counts it off).
        pool.pool.pending.store(ended as usize, Ordering::Release);
        // On another thread, bounded: a retention loop that never ends
        // fails the test instead of hanging it.
        let p = Arc::clone(&pool.pool);
        within(move || {
            for id in 1..=ended {
                p.finish(TaskId(id), None);
            }
        });
        assert_eq!(pool.pool.registry().done.len(), RETAIN_OUTCOMES);
        assert!(pool.outcome(TaskId(1)).is_none());
        assert!(matches!(pool.outcome(TaskId(2)), Some(Outcome::Cancelled)));
        assert!(matches!(
            pool.outcome(TaskId(ended)),
            Some(Outcome::Cancelled)
        ));
        assert_eq!(pool.pool.pending.load(Ordering::Acquire), 0);
    }
}
