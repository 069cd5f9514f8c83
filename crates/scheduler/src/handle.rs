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

use crate::body::{Body, NativeTask, TaskResult};
use crate::error::{HandleError, SpawnError};
use crate::event::EventId;
use crate::io::{Interest, IoToken, Waker};
use crate::metrics::MetricsSnapshot;
use crate::outcome::Outcome;
use crate::shard::Spawner;
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
    /// Set a kernel event (from another thread).
    SetEvent(EventId),
    /// Run a closure on the scheduler's thread.
    Defer(Box<dyn FnOnce() + Send>),
    /// Run a closure with the scheduler, on its thread.
    With(Box<dyn FnOnce(&crate::Scheduler) + Send>),
    /// Cancel every task now and wait for them to unwind (a first Ctrl-C).
    Interrupt,
    /// Abandon every task still alive (a second Ctrl-C).
    Abort,
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
    /// Handles given out with [`Scheduler::handle`](crate::Scheduler::handle)
    /// that are still alive: each could wake the scheduler from outside, so
    /// while there is one, a scheduler with nothing else to wait for is not
    /// deadlocked.
    pub(crate) outside_handles: AtomicUsize,
}

impl Shared {
    /// Reserves one unit of capacity and an id, or says why not.
    pub(crate) fn admit_spawn(&self) -> Result<TaskId, SpawnError> {
        self.check_open()?;
        if !self.reserve_unit() {
            return Err(SpawnError::CapacityExceeded);
        }
        Ok(self.next_id())
    }

    /// Whether spawns are still accepted.
    pub(crate) fn check_open(&self) -> Result<(), SpawnError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SpawnError::Closed);
        }
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SpawnError::ShuttingDown);
        }
        Ok(())
    }

    /// The next task id.
    pub(crate) fn next_id(&self) -> TaskId {
        TaskId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Takes one unit of capacity for a task to come; `false` at capacity.
    pub(crate) fn reserve_unit(&self) -> bool {
        match self.capacity {
            None => {
                self.live.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(cap) => self
                .live
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                    (n < cap).then_some(n + 1)
                })
                .is_ok(),
        }
    }

    /// Gives back a unit taken with [`reserve_unit`](Self::reserve_unit).
    pub(crate) fn release_unit(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn send(&self, cmd: Command) -> Result<(), HandleError> {
        self.try_send(cmd).map_err(|_| HandleError::Closed)
    }

    /// Queues a command, or gives it back if the scheduler is gone. The
    /// check is made under the inbox lock, which the scheduler also takes to
    /// close: a command is either queued before the scheduler's last drain
    /// (and dropped on its thread) or given back, never left behind.
    fn try_send(&self, cmd: Command) -> Result<(), Command> {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::Acquire) {
            return Err(cmd);
        }
        inbox.push(cmd);
        drop(inbox);
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
        Ok(())
    }

    /// Marks the scheduler gone and takes what is left in its inbox (to be
    /// dropped on the scheduler's thread).
    pub(crate) fn close(&self) -> Vec<Command> {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Release);
        std::mem::take(&mut *inbox)
    }

    pub(crate) fn take_inbox(&self) -> Vec<Command> {
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A `Send + Clone` handle to a scheduler on another thread.
///
/// A handle from [`Scheduler::handle`](crate::Scheduler::handle) counts as
/// something that may wake the scheduler from outside: while one is alive, a
/// scheduler whose tasks all wait is not reported as deadlocked (see
/// [`Deadlock`](crate::Deadlock)). One from
/// [`Scheduler::internal_handle`](crate::Scheduler::internal_handle) does not
/// (for a binding's own plumbing: signal handlers, destructors).
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
    /// Counted in [`Shared::outside_handles`].
    outside: bool,
}

impl Clone for Handle {
    fn clone(&self) -> Self {
        Handle::new(self.shared.clone(), self.outside)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.outside {
            self.shared.outside_handles.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Spawner for Handle {
    /// Spawns a native task on the handle's scheduler. Capacity and shutdown
    /// are checked at once; dependencies only when the scheduler receives
    /// the task, and a refusal then is reported as a `SpawnDenied` event
    /// (and logged), the returned id naming no task.
    fn spawn_with<R: TaskResult>(
        &self,
        options: SpawnOptions,
        f: impl NativeTask<R>,
    ) -> Result<TaskId, SpawnError> {
        self.spawn_body(options, Body::native(f)?)
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("closed", &self.is_closed())
            .field("outside", &self.outside)
            .finish()
    }
}

impl Handle {
    /// A handle on `shared`; `outside` ones are counted as possible wakers.
    pub(crate) fn new(shared: Arc<Shared>, outside: bool) -> Self {
        if outside {
            shared.outside_handles.fetch_add(1, Ordering::Relaxed);
        }
        Handle { shared, outside }
    }

    /// Spawns a ready-made body (see [`Spawner::spawn_with`]).
    pub fn spawn_body(&self, options: SpawnOptions, body: Body) -> Result<TaskId, SpawnError> {
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

    /// Sets a kernel event from any thread: its waiters wake (see
    /// [`Scheduler::set_event`](crate::Scheduler::set_event)).
    pub fn set_event(&self, event: EventId) -> Result<(), HandleError> {
        self.shared.send(Command::SetEvent(event))
    }

    /// Runs `f` on the scheduler's thread, between steps (or, if the
    /// scheduler is dropped first, as it is dropped, on its thread). Gives
    /// `f` back if the scheduler is already gone: the caller must then not
    /// drop it on a thread where that is unsafe (leak it instead).
    ///
    /// A binding uses this to drop objects that belong to the scheduler's
    /// thread when their last reference goes away on another one.
    pub fn defer(&self, f: Box<dyn FnOnce() + Send>) -> Result<(), Box<dyn FnOnce() + Send>> {
        match self.shared.try_send(Command::Defer(f)) {
            Ok(()) => Ok(()),
            Err(Command::Defer(f)) => Err(f),
            Err(_) => unreachable!("try_send gives back the command it was given"),
        }
    }

    /// Runs `f` with the scheduler, on its thread, between steps: what the
    /// scheduler's own API can do (register I/O sources, watch a task's end,
    /// start a process task) becomes reachable from any thread. Dropped
    /// unrun if the scheduler goes away first. A service (the daemon) uses
    /// it to start jobs and to be told when they end without blocking its
    /// own threads: `f` sends the answer back on a channel of its choosing.
    pub fn with_scheduler(
        &self,
        f: impl FnOnce(&crate::Scheduler) + Send + 'static,
    ) -> Result<(), HandleError> {
        self.shared.send(Command::With(Box::new(f)))
    }

    /// Shuts down now: every task is cancelled at once and the scheduler
    /// waits for them to unwind, however long that takes (what a first
    /// Ctrl-C does). [`abort`](Self::abort) ends the wait.
    pub fn interrupt(&self) -> Result<(), HandleError> {
        self.shared.send(Command::Interrupt)
    }

    /// Abandons every task still alive: each is recorded as cancelled and its
    /// body dropped without being resumed again (a Python coroutine is
    /// closed, so its `finally` blocks run); the shutdown, begun if it was
    /// not, completes as [`ShutdownResult::Timeout`]. What a second Ctrl-C
    /// does.
    pub fn abort(&self) -> Result<(), HandleError> {
        self.shared.send(Command::Abort)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::Scheduler;

    /// Only outside handles count as possible wakers, and each one stops
    /// counting when dropped (else a deadlock after a handle was given back
    /// would wait forever instead of being reported).
    #[test]
    fn outside_handles_are_counted_until_dropped() {
        let s = Scheduler::builder().virtual_clock().build().unwrap();
        let count = |h: &super::Handle| h.shared.outside_handles.load(Ordering::Acquire);
        let internal = s.internal_handle();
        assert_eq!(count(&internal), 0);
        let a = s.handle();
        let b = a.clone();
        assert_eq!(count(&internal), 2);
        drop(a);
        assert_eq!(count(&internal), 1);
        drop(b);
        assert_eq!(count(&internal), 0);
        drop(internal.clone());
        assert_eq!(count(&internal), 0);
    }

    #[test]
    fn a_fresh_handle_is_not_shutting_down() {
        let s = Scheduler::builder().virtual_clock().build().unwrap();
        let h = s.handle();
        assert!(!h.is_shutting_down());
        assert!(!h.is_closed());
    }
}
