//! The engine: the job table, the queue, and the bridge to the kernel.
//!
//! Jobs wait in the engine's own queue (by priority, then id) until their
//! dependencies have succeeded and fewer than `max_running` jobs run; then
//! the engine starts each on the kernel through its [`Handle`] (an exec job
//! as a process task, a sleep job as a native task) and registers an end
//! callback that sends the outcome back over a channel. No tokio thread
//! ever blocks on the kernel, and the kernel never blocks on tokio.
//!
//! Every change is recorded in the [`JobStore`] under the engine's lock (so
//! the log's order is the table's order). A submission is acknowledged, a
//! job runs (and is shown running), and a job's end is shown to anyone, only
//! once its record is durable. Every end, of a running job or of a queued
//! one, takes one path (`Engine::finish`). Per job the engine keeps its
//! record (with an exec job's output, at most the capture limit per stream,
//! once) and, while it runs, a few words of bookkeeping. After its end a
//! job is kept as the [`retention`](crate::retention) policy says.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tiffany_scheduler::process::{self, Completed, ExecError, ExecSpec};
use tiffany_scheduler::{Handle, Outcome, Scheduler, SpawnOptions, Spawner, TaskId};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::job::{JobRecord, JobState, Output, Work, unix_now};
use crate::metrics::Histogram;
use crate::proto;
use crate::retention::{Policy, Retention};
use crate::runner::{JobEnd, JobRunner};
use crate::store::{JobStore, Replayed, StoreError, Ticket};
use crate::system::System;

/// Settings the engine reads at each decision (reloadable with SIGHUP).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Jobs running at once.
    pub max_running: usize,
    /// Jobs queued at most; more submissions get RESOURCE_EXHAUSTED.
    pub max_queued: usize,
    /// Largest `args`, bytes.
    pub max_args_bytes: usize,
    /// Bytes kept of each of an exec job's stdout and stderr.
    pub capture_limit: usize,
    /// How long ended jobs are kept.
    pub retention: Policy,
}

/// A job was started on the kernel, or ended there.
enum KernelNews {
    Started {
        job: u64,
        attempt: u32,
        task: TaskId,
    },
    Ended {
        job: u64,
        attempt: u32,
        end: RawEnd,
    },
}

/// Why a job ends (see [`Engine::finish`]).
enum Ending {
    /// Its kernel task ended (attempt `attempt`).
    Ran { attempt: u32, end: RawEnd },
    /// It was queued, and is cancelled: a client's cancel, a dependency that failed.
    Dropped { why: String },
}

/// How a kernel task ended, in plain data.
enum RawEnd {
    Completed(Completed),
    Done,
    /// A runner's job ended (see [`JobRunner::end`]).
    Runner(JobEnd),
    Failed(String),
    Cancelled,
}

struct Running {
    attempt: u32,
    task: Option<TaskId>,
    cancel: bool,
    timed_out: bool,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<u64, JobRecord>,
    keys: HashMap<String, u64>,
    /// Jobs accepted but whose submit record is not yet durable.
    pending: BTreeSet<u64>,
    /// Queued jobs whose dependencies are met: (priority, id).
    ready: BTreeSet<(u8, u64)>,
    /// Queued jobs waiting for dependencies: how many are unmet.
    blocked: HashMap<u64, usize>,
    /// Dependency → jobs waiting for it.
    dependents: HashMap<u64, Vec<u64>>,
    running: HashMap<u64, Running>,
    /// Jobs whose end is being made durable.
    ending: BTreeSet<u64>,
    queued: usize,
    next_id: u64,
    draining: bool,
    /// Past the drain's grace: ends are not recorded (the jobs run again).
    interrupting: bool,
    /// Ended jobs, in the order of their ends, and the ones pinned.
    retention: Retention,
}

impl State {
    /// The answer for a job id not in the table.
    fn missing(&self, id: u64) -> Status {
        if id >= 1 && id < self.next_id {
            Status::not_found(format!(
                "job {id} ended and was dropped by the retention policy \
                 (--retain-jobs, --retain-seconds)"
            ))
        } else {
            Status::not_found(format!("no job {id}"))
        }
    }

    /// Lets go of the ended jobs `policy` no longer keeps at `now`.
    fn expire(&mut self, policy: &Policy, now: f64) {
        for id in self.retention.expire(policy, now) {
            if let Some(job) = self.jobs.remove(&id)
                && let Some(k) = job.key
                && self.keys.get(&k) == Some(&id)
            {
                self.keys.remove(&k);
            }
        }
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct EngineCounters {
    /// Jobs accepted since start.
    pub submitted: AtomicU64,
    /// Submit latency, seconds.
    pub submit_seconds: Histogram,
}

/// The job engine (see the module docs).
pub struct Engine {
    state: Mutex<State>,
    limits: Mutex<Limits>,
    store: Arc<dyn JobStore>,
    kernel: Handle,
    /// Runs the kinds the engine does not (a host's, e.g. `python`).
    runner: Option<Arc<dyn JobRunner>>,
    system: Arc<System>,
    events: broadcast::Sender<JobRecord>,
    news: mpsc::UnboundedSender<KernelNews>,
    changed: tokio::sync::Notify,
    /// Counters for metrics.
    pub counters: EngineCounters,
}

fn internal(e: StoreError) -> Status {
    tracing::error!("job store: {e}");
    Status::internal(format!("job store failed: {e}"))
}

impl Engine {
    /// An engine over `store`, holding the jobs `replayed` from it, running
    /// jobs on `kernel`, whose `system` tasks make the store durable.
    /// Unfinished jobs are queued again. Call from inside a tokio runtime:
    /// it starts the task that hears from the kernel.
    pub fn start(
        store: Arc<dyn JobStore>,
        replayed: Replayed,
        kernel: Handle,
        system: Arc<System>,
        limits: Limits,
    ) -> Arc<Engine> {
        Self::start_with_runner(store, replayed, kernel, system, limits, None)
    }

    /// As [`start`](Self::start), with `runner` running the kinds it
    /// serves (see [`crate::runner`]).
    pub fn start_with_runner(
        store: Arc<dyn JobStore>,
        replayed: Replayed,
        kernel: Handle,
        system: Arc<System>,
        limits: Limits,
        runner: Option<Arc<dyn JobRunner>>,
    ) -> Arc<Engine> {
        let (news_tx, news_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let engine = Arc::new(Engine {
            state: Mutex::new(State {
                next_id: replayed.next_id.max(1),
                ..State::default()
            }),
            limits: Mutex::new(limits),
            store,
            kernel,
            runner,
            system,
            events,
            news: news_tx,
            changed: tokio::sync::Notify::new(),
            counters: EngineCounters::default(),
        });
        {
            let mut st = engine.lock();
            let mut unfinished = Vec::new();
            let mut ends = Vec::new();
            for (id, mut job) in replayed.jobs {
                if let Some(k) = &job.key {
                    st.keys.insert(k.clone(), id);
                }
                if job.state.is_final() {
                    ends.push((job.finished_at.unwrap_or(0.0), id));
                } else {
                    job.state = JobState::Queued;
                    st.retention.pin(&job.after);
                    unfinished.push(id);
                }
                st.jobs.insert(id, job);
            }
            ends.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (at, id) in ends {
                st.retention.ended(id, at);
            }
            let policy = engine.limits().retention;
            st.expire(&policy, unix_now());
            if !unfinished.is_empty() {
                tracing::info!(
                    jobs = unfinished.len(),
                    "queued again the jobs that had not ended"
                );
            }
            for id in unfinished {
                st.queued += 1;
                st.pending.insert(id);
            }
        }
        tokio::spawn(engine.clone().hear_kernel(news_rx));
        tokio::spawn(Self::expire_by_age(Arc::downgrade(&engine)));
        // Admit the replayed jobs (their records are durable already).
        let ids: Vec<u64> = engine.lock().pending.iter().copied().collect();
        for id in ids {
            engine.clone().admit(id);
        }
        engine.dispatch();
        engine
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current limits.
    pub fn limits(&self) -> Limits {
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the limits (SIGHUP); starts more jobs if there is room now,
    /// and lets go of the ended jobs a new retention policy no longer keeps.
    pub fn set_limits(self: &Arc<Self>, limits: Limits) {
        let policy = limits.retention;
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
        self.lock().expire(&policy, unix_now());
        self.dispatch();
    }

    /// Once a second, while the engine lives, lets go of the ended jobs
    /// older than `--retain-seconds` (a count bound is applied at each end).
    async fn expire_by_age(engine: std::sync::Weak<Engine>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let policy = engine.limits().retention;
            if policy.max_age.is_some() {
                engine.lock().expire(&policy, unix_now());
            }
        }
    }

    /// Ended jobs kept now, and dropped by the retention policy since start.
    pub fn retention_counts(&self) -> (u64, u64) {
        let st = self.lock();
        (st.retention.kept() as u64, st.retention.dropped())
    }

    /// Live job events (every state change shown to clients).
    pub fn subscribe(&self) -> broadcast::Receiver<JobRecord> {
        self.events.subscribe()
    }

    /// Store counters.
    pub fn store_stats(&self) -> crate::store::StoreStats {
        self.store.stats()
    }

    /// Jobs by state, and the total.
    pub fn counts(&self) -> (HashMap<JobState, u64>, u64) {
        let st = self.lock();
        let mut by = HashMap::new();
        for j in st.jobs.values() {
            *by.entry(j.state).or_insert(0) += 1;
        }
        (by, st.jobs.len() as u64)
    }

    /// Whether the engine is draining (refusing submissions).
    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// Accepts a job: checks it, records it durably, queues it.
    pub async fn submit(self: &Arc<Self>, spec: proto::JobSpec) -> Result<JobRecord, Status> {
        let t0 = Instant::now();
        let limits = self.limits();
        if spec.args.len() > limits.max_args_bytes {
            return Err(Status::invalid_argument(format!(
                "args is {} bytes, over the limit of {} (--max-args-bytes)",
                spec.args.len(),
                limits.max_args_bytes
            )));
        }
        match self.runner_for(&spec.kind) {
            Some(r) => r.check(&spec.kind, &spec.args),
            None => Work::parse(&spec.kind, &spec.args).map(drop),
        }
        .map_err(Status::invalid_argument)?;
        let priority = match spec.priority {
            None => crate::job::DEFAULT_PRIORITY,
            Some(p) if p <= 255 => p as u8,
            Some(p) => {
                return Err(Status::invalid_argument(format!(
                    "priority {p} is out of range (0 to 255)"
                )));
            }
        };
        let timeout = match spec.timeout_seconds {
            None => None,
            Some(0.0) => None,
            Some(t) if t.is_finite() && t > 0.0 && t < 1e9 => Some(t),
            Some(t) => {
                return Err(Status::invalid_argument(format!(
                    "timeout {t} is not a number of seconds from 0 to 1e9"
                )));
            }
        };
        if spec
            .key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 1024)
        {
            return Err(Status::invalid_argument("key must be 1 to 1024 bytes"));
        }
        let (job, ticket) = {
            let mut st = self.lock();
            if let Some(k) = &spec.key
                && let Some(id) = st.keys.get(k)
                && let Some(job) = st.jobs.get(id)
            {
                return Ok(job.clone());
            }
            if st.draining {
                return Err(Status::unavailable("the daemon is shutting down"));
            }
            for dep in &spec.after {
                if !st.jobs.contains_key(dep) {
                    return Err(Status::invalid_argument(format!(
                        "after: {}",
                        st.missing(*dep).message()
                    )));
                }
            }
            if st.queued >= limits.max_queued {
                let mut status = Status::resource_exhausted(format!(
                    "{} jobs are queued (--max-queued {}): retry later",
                    st.queued, limits.max_queued
                ));
                status.metadata_mut().insert(
                    "retry-after-ms",
                    tonic::metadata::MetadataValue::from(100u32),
                );
                return Err(status);
            }
            let id = st.next_id;
            let job = JobRecord {
                id,
                kind: spec.kind.clone(),
                args: spec.args.clone(),
                priority,
                after: spec.after.clone(),
                key: spec.key.clone(),
                timeout,
                state: JobState::Queued,
                attempts: 0,
                exit_code: None,
                result: None,
                error: None,
                created_at: unix_now(),
                started_at: None,
                finished_at: None,
                output: None,
            };
            let ticket = self.store.record_submitted(&job).map_err(internal)?;
            st.next_id += 1;
            if let Some(k) = &job.key {
                st.keys.insert(k.clone(), id);
            }
            st.jobs.insert(id, job.clone());
            st.retention.pin(&job.after);
            st.pending.insert(id);
            st.queued += 1;
            (job, ticket)
        };
        self.durable(ticket).await?;
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(job.clone());
        self.clone().admit(job.id);
        self.dispatch();
        self.counters
            .submit_seconds
            .observe(t0.elapsed().as_secs_f64());
        Ok(job)
    }

    /// Waits until the store is durable up to `ticket` (the `wal-flusher`
    /// system task shares one sync between concurrent waits).
    async fn durable(&self, ticket: Ticket) -> Result<(), Status> {
        self.system.durable(ticket).await.map_err(internal)
    }

    /// The daemon's system tasks on the kernel.
    pub fn system(&self) -> &System {
        &self.system
    }

    /// A durably accepted job joins the queue: ready, waiting for
    /// dependencies, or cancelled because one did not succeed.
    fn admit(self: Arc<Self>, id: u64) {
        let mut st = self.lock();
        if !st.pending.remove(&id) {
            return;
        }
        let Some(job) = st.jobs.get(&id) else { return };
        if job.state != JobState::Queued {
            return;
        }
        let (priority, after) = (job.priority, job.after.clone());
        let mut unmet = 0;
        for dep in &after {
            match st.jobs.get(dep).map(|d| d.state) {
                Some(JobState::Succeeded) => {}
                Some(s) if s.is_final() => {
                    drop(st);
                    let why = format!("dependency {dep} ended {}", s.name());
                    tokio::spawn(self.clone().finish(id, Ending::Dropped { why }));
                    return;
                }
                _ => {
                    unmet += 1;
                    st.dependents.entry(*dep).or_default().push(id);
                }
            }
        }
        if unmet == 0 {
            st.ready.insert((priority, id));
        } else {
            st.blocked.insert(id, unmet);
        }
    }

    /// Starts queued jobs while there is room.
    ///
    /// Each job's `started` record is made durable before the job runs (and
    /// before anyone sees it running), so that `attempts` counts every start
    /// even across a crash; the starts of one round share one sync.
    fn dispatch(self: &Arc<Self>) {
        let max_running = self.limits().max_running.max(1);
        let mut starts = Vec::new();
        let mut last = None;
        {
            let mut st = self.lock();
            if st.draining {
                return;
            }
            while st.running.len() < max_running {
                let Some((_, id)) = st.ready.pop_first() else {
                    break;
                };
                let Some(job) = st.jobs.get(&id) else {
                    continue;
                };
                if job.state != JobState::Queued {
                    continue;
                }
                let (attempt, at) = (job.attempts + 1, unix_now());
                st.queued = st.queued.saturating_sub(1);
                st.running.insert(
                    id,
                    Running {
                        attempt,
                        task: None,
                        cancel: false,
                        timed_out: false,
                    },
                );
                match self.store.record_started(id, attempt, at) {
                    Ok(t) => last = Some(t),
                    Err(e) => tracing::error!("job store: {e}"),
                }
                starts.push((id, attempt, at));
            }
        }
        if starts.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(ticket) = last
                && let Err(e) = me.durable(ticket).await
            {
                tracing::error!("job starts could not be made durable: {e}");
            }
            for (id, attempt, at) in starts {
                let job = {
                    let mut st = me.lock();
                    if st.running.get(&id).is_none_or(|r| r.attempt != attempt) {
                        continue;
                    }
                    if st.interrupting {
                        // A drain's grace ended first: it runs on the next start.
                        st.running.remove(&id);
                        drop(st);
                        me.changed.notify_waiters();
                        continue;
                    }
                    let Some(job) = st.jobs.get_mut(&id) else {
                        continue;
                    };
                    job.state = JobState::Running;
                    job.attempts = attempt;
                    job.started_at = Some(at);
                    job.clone()
                };
                let _ = me.events.send(job.clone());
                me.launch(job);
            }
        });
    }

    /// The runner of `kind`, if a host's runner serves it.
    fn runner_for(&self, kind: &str) -> Option<&Arc<dyn JobRunner>> {
        self.runner.as_ref().filter(|r| r.serves(kind))
    }

    /// Starts job `id`'s attempt `attempt` on the kernel: `spawn` makes its
    /// task (on the kernel's thread), `end` reads how the task ended; the
    /// start and the end come back to [`hear_kernel`](Self::hear_kernel).
    fn start_on_kernel(
        &self,
        id: u64,
        attempt: u32,
        spawn: impl FnOnce(&Scheduler) -> Result<TaskId, String> + Send + 'static,
        end: impl FnOnce(&Outcome) -> RawEnd + Send + 'static,
    ) {
        let tx = self.news.clone();
        let sent = self.kernel.with_scheduler(move |sched| match spawn(sched) {
            Ok(task) => {
                let _ = tx.send(KernelNews::Started {
                    job: id,
                    attempt,
                    task,
                });
                let tx2 = tx.clone();
                sched.on_task_end(task, move |_, outcome| {
                    let _ = tx2.send(KernelNews::Ended {
                        job: id,
                        attempt,
                        end: end(outcome),
                    });
                });
            }
            Err(e) => {
                let _ = tx.send(KernelNews::Ended {
                    job: id,
                    attempt,
                    end: RawEnd::Failed(e),
                });
            }
        });
        if sent.is_err() {
            let _ = self.news.send(KernelNews::Ended {
                job: id,
                attempt,
                end: RawEnd::Cancelled,
            });
        }
    }

    /// Starts `job` on the kernel.
    fn launch(&self, job: JobRecord) {
        let (id, attempt) = (job.id, job.attempts);
        let options = SpawnOptions::default()
            .with_priority(job.priority)
            .with_name(format!("job-{id}"));
        if let Some(runner) = self.runner_for(&job.kind).cloned() {
            let ender = runner.clone();
            self.start_on_kernel(
                id,
                attempt,
                move |sched| runner.start(sched, id, &job.kind, &job.args, options),
                move |outcome| RawEnd::Runner(ender.end(outcome)),
            );
            return;
        }
        let work = match Work::parse(&job.kind, &job.args) {
            Ok(w) => w,
            Err(e) => {
                let _ = self.news.send(KernelNews::Ended {
                    job: id,
                    attempt,
                    end: RawEnd::Failed(e),
                });
                return;
            }
        };
        let capture_limit = self.limits().capture_limit;
        let timeout = job.timeout.map(Duration::from_secs_f64);
        let spawn = move |sched: &Scheduler| match work {
            Work::Exec {
                argv,
                env,
                cwd,
                stdin,
            } => {
                let mut spec = ExecSpec::new(argv).capture_limit(capture_limit);
                for (k, v) in env {
                    spec = spec.env(k, v);
                }
                if let Some(c) = cwd {
                    spec = spec.cwd(c);
                }
                if let Some(s) = stdin {
                    spec = spec.stdin(s.into_bytes());
                }
                if let Some(t) = timeout {
                    spec = spec.timeout(t);
                }
                process::spawn(sched, spec, options).map_err(|e| e.to_string())
            }
            Work::Sleep(d) => sched
                .spawn_with(options, move |cx| cx.sleep(d))
                .map_err(|e| e.to_string()),
        };
        let end = |outcome: &Outcome| match outcome {
            Outcome::Done(v) => match v.downcast_ref::<Completed>() {
                Some(c) => RawEnd::Completed(c.clone()),
                None => RawEnd::Done,
            },
            Outcome::Failed(e) => {
                let msg = match e.payload().and_then(|p| p.downcast_ref::<ExecError>()) {
                    Some(x) => x.to_string(),
                    None => e.message().to_string(),
                };
                RawEnd::Failed(msg)
            }
            Outcome::Cancelled => RawEnd::Cancelled,
        };
        self.start_on_kernel(id, attempt, spawn, end);
    }

    async fn hear_kernel(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<KernelNews>) {
        while let Some(news) = rx.recv().await {
            match news {
                KernelNews::Started { job, attempt, task } => {
                    let (cancel, timeout) = {
                        let mut st = self.lock();
                        let timeout = st.jobs.get(&job).and_then(|j| j.timeout);
                        let is_exec = st.jobs.get(&job).is_some_and(|j| j.kind == "exec");
                        match st.running.get_mut(&job) {
                            Some(r) if r.attempt == attempt => {
                                r.task = Some(task);
                                (r.cancel, if is_exec { None } else { timeout })
                            }
                            _ => (false, None),
                        }
                    };
                    if cancel {
                        let _ = self.kernel.cancel(task);
                    }
                    if let Some(t) = timeout {
                        let me = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs_f64(t)).await;
                            let task = {
                                let mut st = me.lock();
                                match st.running.get_mut(&job) {
                                    Some(r) if r.attempt == attempt => {
                                        r.timed_out = true;
                                        r.task
                                    }
                                    _ => None,
                                }
                            };
                            if let Some(task) = task {
                                let _ = me.kernel.cancel(task);
                            }
                        });
                    }
                }
                KernelNews::Ended { job, attempt, end } => {
                    tokio::spawn(self.clone().finish(job, Ending::Ran { attempt, end }));
                }
            }
        }
    }

    /// Ends a job: records its final state, waits until that is durable,
    /// then updates the tables and tells everyone ([`ended`](Self::ended)).
    /// The one path for every end: a running job's kernel task ended, or a
    /// queued job was cancelled (by a client, or a dependency that failed).
    ///
    /// Returns the job's final record if this call ended it.
    async fn finish(self: Arc<Self>, id: u64, how: Ending) -> Option<JobRecord> {
        let (job, ticket) = {
            let mut st = self.lock();
            let current = st.jobs.get(&id)?;
            let mut job = current.clone();
            match how {
                Ending::Ran { attempt, end } => {
                    let r = st.running.get(&id)?;
                    if r.attempt != attempt {
                        return None;
                    }
                    if st.interrupting {
                        // Stopped by a drain: not an end; the job runs again on the next start.
                        st.running.remove(&id);
                        drop(st);
                        self.changed.notify_waiters();
                        return None;
                    }
                    settle(&mut job, end, r.cancel, r.timed_out);
                }
                Ending::Dropped { why } => {
                    if job.state != JobState::Queued
                        || st.ending.contains(&id)
                        || st.running.contains_key(&id)
                    {
                        return None;
                    }
                    job.state = JobState::Cancelled;
                    job.error = Some(why);
                }
            }
            job.finished_at = Some(unix_now());
            let ticket = match self.store.record_ended(&job) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!("job store: {e}");
                    return None;
                }
            };
            st.ending.insert(id);
            (job, ticket)
        };
        if let Err(e) = self.durable(ticket).await {
            tracing::error!("job {id}: its end could not be made durable: {e}");
            return None;
        }
        {
            let mut st = self.lock();
            st.ending.remove(&id);
            if st.running.remove(&id).is_none() {
                // It was queued: it leaves the queue.
                st.ready.remove(&(job.priority, id));
                st.blocked.remove(&id);
                st.pending.remove(&id);
                st.queued = st.queued.saturating_sub(1);
            }
            st.jobs.insert(id, job.clone());
            st.retention.unpin(&job.after);
            st.retention
                .ended(id, job.finished_at.unwrap_or_else(unix_now));
            let policy = self.limits().retention;
            st.expire(&policy, unix_now());
        }
        self.ended(job.clone());
        Some(job)
    }

    /// A job's end is durable: tell everyone, release its dependents, start more.
    fn ended(self: &Arc<Self>, job: JobRecord) {
        let mut shown = job.clone();
        shown.output = None;
        let _ = self.events.send(shown);
        self.changed.notify_waiters();
        let dependents = self.lock().dependents.remove(&job.id).unwrap_or_default();
        for d in dependents {
            if job.state == JobState::Succeeded {
                let mut st = self.lock();
                let now_ready = match st.blocked.get_mut(&d) {
                    Some(n) => {
                        *n -= 1;
                        *n == 0
                    }
                    None => false,
                };
                if now_ready {
                    st.blocked.remove(&d);
                    if let Some(p) = st.jobs.get(&d).map(|j| j.priority) {
                        st.ready.insert((p, d));
                    }
                }
            } else {
                let why = format!("dependency {} ended {}", job.id, job.state.name());
                tokio::spawn(self.clone().finish(d, Ending::Dropped { why }));
            }
        }
        self.dispatch();
        self.maybe_compact();
    }

    fn maybe_compact(self: &Arc<Self>) {
        if !self.store.wants_compaction() {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let st = me.lock();
            if !me.store.wants_compaction() {
                return;
            }
            if let Err(e) = me.store.compact(&mut st.jobs.values(), st.next_id) {
                tracing::error!("compacting the job log: {e}");
            }
        });
    }

    /// Compacts the store now (the caller is on a blocking thread).
    pub fn compact_now(&self) -> Result<(), StoreError> {
        let st = self.lock();
        self.store.compact(&mut st.jobs.values(), st.next_id)
    }

    /// A job by id.
    pub fn get(&self, id: u64) -> Result<JobRecord, Status> {
        let st = self.lock();
        st.jobs.get(&id).cloned().ok_or_else(|| st.missing(id))
    }

    /// Jobs from id `from` on, of `state` if given, at most `limit`; and
    /// the id to continue from, if there are more.
    pub fn list(
        &self,
        state: Option<JobState>,
        from: u64,
        limit: usize,
    ) -> (Vec<JobRecord>, Option<u64>) {
        let st = self.lock();
        let mut out = Vec::new();
        for (id, job) in st.jobs.range(from..) {
            if state.is_some_and(|s| s != job.state) {
                continue;
            }
            if out.len() == limit {
                return (out, Some(*id));
            }
            let mut j = job.clone();
            j.output = None;
            out.push(j);
        }
        (out, None)
    }

    /// Cancels a job that has not ended; answers the job as it is then.
    pub async fn cancel(self: &Arc<Self>, id: u64) -> Result<JobRecord, Status> {
        let (queued, task) = {
            let mut st = self.lock();
            let Some(job) = st.jobs.get(&id) else {
                return Err(st.missing(id));
            };
            if job.state.is_final() {
                return Ok(job.clone());
            }
            match st.running.get_mut(&id) {
                // Running, or starting (its start is being made durable).
                Some(r) => {
                    r.cancel = true;
                    (false, r.task)
                }
                None => (true, None),
            }
        };
        if queued {
            let ended = self
                .clone()
                .finish(
                    id,
                    Ending::Dropped {
                        why: "cancelled".into(),
                    },
                )
                .await;
            // The retention policy may have let go of it already.
            if let Some(job) = ended {
                return Ok(self.get(id).unwrap_or(job));
            }
        } else if let Some(task) = task {
            let _ = self.kernel.cancel(task);
        }
        self.get(id)
    }

    /// Waits until job `id` has ended, or `timeout` passes.
    pub async fn wait(&self, id: u64, timeout: Option<Duration>) -> Result<JobRecord, Status> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut events = self.events.subscribe();
        loop {
            let job = self.get(id)?;
            if job.state.is_final() {
                return Ok(job);
            }
            let next = async {
                loop {
                    match events.recv().await {
                        Ok(j) if j.id == id && j.state.is_final() => return Some(j),
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return None,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            let ended = match deadline {
                Some(d) => match tokio::time::timeout_at(d, next).await {
                    Ok(ended) => ended,
                    Err(_) => return self.get(id),
                },
                None => next.await,
            };
            if let Some(shown) = ended {
                // The retention policy may have let go of it already.
                return Ok(self.get(id).unwrap_or(shown));
            }
        }
    }

    /// Drains: refuses new jobs, lets running ones finish for up to
    /// `grace`, then stops the rest without recording an end (they run
    /// again on the next start), and closes the store.
    pub async fn drain(&self, grace: Duration) {
        self.lock().draining = true;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.changed.notified();
            let busy = {
                let st = self.lock();
                st.running.len() + st.ending.len()
            };
            if busy == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let tasks: Vec<TaskId> = {
            let mut st = self.lock();
            st.interrupting = true;
            st.running.values().filter_map(|r| r.task).collect()
        };
        if !tasks.is_empty() {
            tracing::warn!(
                jobs = tasks.len(),
                "grace over: stopping running jobs; they run again on the next start"
            );
        }
        for t in tasks {
            let _ = self.kernel.cancel(t);
        }
        // Ends in flight finish being recorded; stopped jobs report back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.changed.notified();
            let busy = {
                let st = self.lock();
                st.running.len() + st.ending.len()
            };
            if busy == 0 || tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }

    /// Flushes and closes the store (after [`drain`](Self::drain)).
    pub fn close_store(&self) -> Result<(), StoreError> {
        self.store.close()
    }

    /// Queued and running counts.
    pub fn load(&self) -> (u64, u64) {
        let st = self.lock();
        (st.queued as u64, st.running.len() as u64)
    }
}

/// Writes how a running job ended into its record: state, exit code,
/// result, error and output. `cancel`: a client asked to cancel it;
/// `timed_out`: its (non-exec) timeout passed.
fn settle(job: &mut JobRecord, end: RawEnd, cancel: bool, timed_out: bool) {
    let timed_out_msg =
        |job: &JobRecord| format!("timed out after {} s", job.timeout.unwrap_or(0.0));
    match end {
        RawEnd::Completed(c) => {
            job.exit_code = c.returncode;
            job.result = Some(
                serde_json::json!({
                    "exit_code": c.returncode,
                    "signal": c.signal,
                    "timed_out": c.timed_out,
                    "stdout_bytes": c.stdout_bytes,
                    "stderr_bytes": c.stderr_bytes,
                })
                .to_string(),
            );
            if c.timed_out {
                job.state = JobState::TimedOut;
                job.error = Some(timed_out_msg(job));
            } else if cancel && c.returncode != Some(0) {
                job.state = JobState::Cancelled;
                job.error = Some("cancelled".into());
            } else if c.returncode == Some(0) {
                job.state = JobState::Succeeded;
            } else {
                job.state = JobState::Failed;
                job.error = Some(match (c.returncode, c.signal) {
                    (Some(code), _) => format!("exited with code {code}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    _ => "ended without an exit status".into(),
                });
            }
            // The captured bytes move into the record (one copy, at most
            // the capture limit per stream).
            job.output = Some(Output {
                stdout: String::from_utf8(c.stdout)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                stderr: String::from_utf8(c.stderr)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                stdout_truncated: c.stdout_truncated,
                stderr_truncated: c.stderr_truncated,
            });
        }
        RawEnd::Done => {
            job.state = JobState::Succeeded;
            job.result = Some("null".into());
        }
        RawEnd::Failed(msg) | RawEnd::Runner(JobEnd::Failed(msg)) => {
            job.state = JobState::Failed;
            job.error = Some(msg);
        }
        RawEnd::Runner(JobEnd::Succeeded(result)) => {
            job.state = JobState::Succeeded;
            job.result = Some(result);
        }
        RawEnd::Cancelled | RawEnd::Runner(JobEnd::Cancelled) if timed_out => {
            job.state = JobState::TimedOut;
            job.error = Some(timed_out_msg(job));
        }
        RawEnd::Cancelled | RawEnd::Runner(JobEnd::Cancelled) => {
            job.state = JobState::Cancelled;
            job.error = Some("cancelled".into());
        }
    }
}
