//! Tasks: identity, priority and the lifecycle a task moves through.
//!
//! A task is a record owned by the scheduler. From `spawn` to its end it moves
//! through the states of [`TaskState`]:
//!
//! ```text
//!            deps pending            resumed              syscall that blocks
//! spawn ──► Pending ──────► Scheduled ──────► Running ──────────────────► Sleeping / Waiting
//!   │                         ▲   ▲              │  │                          │
//!   └─────────────────────────┘   │ budget used  │  │ returns / panics / unwinds│ woken
//!                                 └── Throttled ◄┘  ▼                          │
//!                                              Finished | Failed | Cancelled   │
//!                                 Scheduled ◄──────────────────────────────────┘
//! ```
//!
//! Ids are 64-bit, start at 1, increase with every spawn and are never reused
//! within one scheduler, so an id seen in a log names exactly one task.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::io::{Interest, IoToken};

/// A task's priority: `0` runs first, `255` last; FIFO among equals.
pub type Priority = u8;

/// Priority of system tasks: they run before every other task and are never
/// held back by back-pressure.
pub const PRI_SYSTEM: Priority = 0;
/// Priority of a task spawned without one.
pub const PRI_DEFAULT: Priority = 10;
/// The lowest priority.
pub const PRI_LOWEST: Priority = 255;

/// A task's identity: unique and increasing within one scheduler.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The raw number, as it appears in events and logs.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from its raw number (for ids read back from a log or a
    /// foreign language binding). The scheduler treats an id it never issued as
    /// unknown, never as a crash.
    pub const fn from_raw(raw: u64) -> Self {
        TaskId(raw)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a blocked task is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// Another task to finish.
    Join(TaskId),
    /// An I/O source to become ready.
    Io(IoToken, Interest),
    /// The back-pressure admission gate to open.
    Admission,
    /// The shutdown it asked for to complete.
    Shutdown,
    /// Held by back-pressure after its I/O became ready.
    Held,
    /// An event to be set.
    Event(crate::event::EventId),
}

/// Where a task is in its life. Updated on every transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Spawned, waiting for its dependencies to finish.
    Pending,
    /// In the ready queue.
    Scheduled,
    /// Being resumed right now.
    Running,
    /// Asleep until `wake_at` (scheduler time since its start).
    Sleeping {
        /// When the task wakes, on the scheduler's clock.
        wake_at: Duration,
    },
    /// Blocked on a join, I/O, admission or shutdown.
    Waiting(WaitReason),
    /// Used its CPU quantum and was put behind its peers; it is in the ready queue.
    Throttled,
    /// Returned normally.
    Finished,
    /// Panicked (native) or raised (Python).
    Failed,
    /// Cancelled before or while running.
    Cancelled,
}

impl TaskState {
    /// Whether the task has ended (finished, failed or cancelled).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// The state's name as used by the Python API and the PAL: `"pending"`,
    /// `"scheduled"`, `"running"`, `"sleeping"`, `"waiting"`, `"throttled"`,
    /// `"finished"`, `"failed"` or `"cancelled"`.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Scheduled => "scheduled",
            TaskState::Running => "running",
            TaskState::Sleeping { .. } => "sleeping",
            TaskState::Waiting(_) => "waiting",
            TaskState::Throttled => "throttled",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// How a task is spawned: priority, dependencies, name and flags.
#[derive(Clone, Debug)]
pub struct SpawnOptions {
    /// Scheduling priority (`0` first). Default [`PRI_DEFAULT`].
    pub priority: Priority,
    /// Tasks that must finish successfully before this one starts.
    pub deps: Vec<TaskId>,
    /// A name for logs and events.
    pub name: Option<Arc<str>>,
    /// A daemon task does not keep [`run`](crate::Scheduler::run) going: once
    /// every other task has finished, daemon tasks are cancelled.
    pub daemon: bool,
    /// A system task is never held by back-pressure
    /// ([`SpawnOptions::system`] gives it [`PRI_SYSTEM`] too).
    pub system: bool,
    /// Where a [`ShardPool`](crate::ShardPool) runs the task: the shard
    /// `key % shards` (tasks with the same key share a thread). `None`: the
    /// next shard in turn. A single scheduler ignores it.
    pub key: Option<u64>,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            priority: PRI_DEFAULT,
            deps: Vec::new(),
            name: None,
            daemon: false,
            system: false,
            key: None,
        }
    }
}

impl SpawnOptions {
    /// Options with the given priority.
    pub fn priority(priority: Priority) -> Self {
        SpawnOptions {
            priority,
            ..Self::default()
        }
    }

    /// Options for a system task: [`PRI_SYSTEM`], never held by back-pressure.
    pub fn system() -> Self {
        SpawnOptions {
            priority: PRI_SYSTEM,
            system: true,
            ..Self::default()
        }
    }

    /// Sets the dependencies.
    pub fn with_deps(mut self, deps: &[TaskId]) -> Self {
        self.deps = deps.to_vec();
        self
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the priority (0 first, 255 last).
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the routing key (see [`SpawnOptions::key`]).
    pub fn keyed(mut self, key: u64) -> Self {
        self.key = Some(key);
        self
    }

    /// Marks the task as a daemon (see [`SpawnOptions::daemon`]).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }
}

/// A read-only view of a task, for introspection.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    /// The task's id.
    pub id: TaskId,
    /// Its name, if it was given one.
    pub name: Option<Arc<str>>,
    /// Its priority.
    pub priority: Priority,
    /// Its current state.
    pub state: TaskState,
    /// CPU time charged to it so far (see [`Accounting`](crate::Accounting)).
    pub budget_used: Duration,
    /// How many times it was throttled.
    pub throttles: u64,
    /// Whether it is a system task.
    pub system: bool,
    /// Whether it is a daemon task.
    pub daemon: bool,
}
