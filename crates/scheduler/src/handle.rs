//! The thread-safe handle: reach a scheduler from other threads.
//!
//! A [`Scheduler`](crate::Scheduler) lives on one thread. A [`Handle`] is
//! `Send + Clone` and lets any thread spawn native tasks, cancel tasks, report
//! I/O readiness and shut the scheduler down. Commands go into an inbox and
//! wake the scheduler if it sleeps in its poller; the scheduler carries them out
//! between steps.
//!
//! Ids and capacity are shared atomically, so a spawn through a handle is
//! answered at once: its id, or a refusal (capacity, shutting down). A spawn
//! accepted before a shutdown began is never lost: it runs during the drain.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::ThreadId;
use std::time::Duration;

use crate::body::Body;
use crate::error::{HandleError, SpawnError};
use crate::io::{Interest, IoToken, Waker};
use crate::metrics::MetricsSnapshot;
use crate::native::TaskContext;
use crate::outcome::Outcome;
use crate::shutdown::ShutdownResult;
use crate::task::{SpawnOptions, TaskId};

pub(crate) enum Command {
    Spawn {
        id: TaskId,
        body: Body,
        options: SpawnOptions,
    },
    Cancel(TaskId),
    NotifyIo(IoToken, Interest),
    Shutdown {
        timeout: Duration,
        reply: Option<mpsc::Sender<ShutdownResult>>,
    },
    /// A task of another shard ended; `key` names the local join waiting for it.
    RemoteJoined {
        key: u64,
        outcome: Outcome,
    },
    /// A copy of the metrics, for another thread.
    Metrics(mpsc::Sender<MetricsSnapshot>),
}

/// State shared between a scheduler and its handles.
pub(crate) struct Shared {
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) live: AtomicUsize,
    pub(crate) capacity: Option<usize>,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) closed: AtomicBool,
    pub(crate) pending: AtomicBool,
    pub(crate) inbox: Mutex<Vec<Command>>,
    pub(crate) waker: Waker,
    pub(crate) thread: ThreadId,
}

impl Shared {
    /// Reserves one unit of capacity and an id, or says why not.
    pub(crate) fn admit_spawn(&self) -> Result<TaskId, SpawnError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SpawnError::Closed);
        }
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SpawnError::ShuttingDown);
        }
        match self.capacity {
            None => {
                self.live.fetch_add(1, Ordering::Relaxed);
            }
            Some(cap) => {
                self.live
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                        (n < cap).then_some(n + 1)
                    })
                    .map_err(|_| SpawnError::CapacityExceeded)?;
            }
        }
        Ok(TaskId(self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    pub(crate) fn send(&self, cmd: Command) -> Result<(), HandleError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(HandleError::Closed);
        }
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cmd);
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
        Ok(())
    }

    pub(crate) fn take_inbox(&self) -> Vec<Command> {
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A `Send + Clone` handle to a scheduler on another thread.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Spawns a native task at the default priority.
    pub fn spawn<F, R>(&self, f: F) -> Result<TaskId, SpawnError>
    where
        F: FnOnce(&mut TaskContext<'_>) -> R + Send + 'static,
        R: Send + Sync + 'static,
    {
        self.spawn_with(SpawnOptions::default(), f)
    }

    /// Spawns a native task with options. Capacity and shutdown are checked
    /// at once; dependencies only when the scheduler receives the task, and a
    /// refusal then is reported as a `SpawnDenied` event (and logged), the
    /// returned id naming no task.
    pub fn spawn_with<F, R>(&self, options: SpawnOptions, f: F) -> Result<TaskId, SpawnError>
    where
        F: FnOnce(&mut TaskContext<'_>) -> R + Send + 'static,
        R: Send + Sync + 'static,
    {
        self.spawn_body(Body::native(f)?, options)
    }

    /// Spawns any body.
    pub fn spawn_body(&self, body: Body, options: SpawnOptions) -> Result<TaskId, SpawnError> {
        let id = self.shared.admit_spawn()?;
        if self
            .shared
            .send(Command::Spawn { id, body, options })
            .is_err()
        {
            return Err(SpawnError::Closed);
        }
        Ok(id)
    }

    /// Asks the scheduler to cancel a task.
    pub fn cancel(&self, task: TaskId) -> Result<(), HandleError> {
        self.shared.send(Command::Cancel(task))
    }

    /// Reports readiness of a registered source (the in-memory readiness
    /// channel; with `async-io` it adds to what the poller reports).
    pub fn notify_io(&self, token: IoToken, interest: Interest) -> Result<(), HandleError> {
        self.shared.send(Command::NotifyIo(token, interest))
    }

    /// Starts a shutdown and returns at once (safe from signal handlers'
    /// threads and from the scheduler's own thread).
    pub fn request_shutdown(&self, timeout: Duration) -> Result<(), HandleError> {
        self.shared.send(Command::Shutdown {
            timeout,
            reply: None,
        })
    }

    /// Shuts the scheduler down and waits for the result. Must not be called
    /// from the scheduler's own thread (it would wait for itself).
    pub fn shutdown(&self, timeout: Duration) -> Result<ShutdownResult, HandleError> {
        if std::thread::current().id() == self.shared.thread {
            return Err(HandleError::WouldDeadlock);
        }
        let (tx, rx) = mpsc::channel();
        self.shared.send(Command::Shutdown {
            timeout,
            reply: Some(tx),
        })?;
        rx.recv().map_err(|_| HandleError::Closed)
    }

    /// A copy of the scheduler's metrics, taken on its thread between steps.
    /// Must not be called from the scheduler's own thread.
    pub fn metrics(&self) -> Result<MetricsSnapshot, HandleError> {
        if std::thread::current().id() == self.shared.thread {
            return Err(HandleError::WouldDeadlock);
        }
        let (tx, rx) = mpsc::channel();
        self.shared.send(Command::Metrics(tx))?;
        rx.recv().map_err(|_| HandleError::Closed)
    }

    /// Wakes the scheduler if it sleeps in its poller (it then looks for work).
    pub(crate) fn wake(&self) {
        self.shared.waker.wake();
    }

    /// Tells a scheduler that a task of another shard, which one of its tasks
    /// joins, has ended.
    pub(crate) fn remote_joined(&self, key: u64, outcome: Outcome) {
        let _ = self.shared.send(Command::RemoteJoined { key, outcome });
    }

    /// Whether the scheduler has begun shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
    }

    /// Whether the scheduler is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}
