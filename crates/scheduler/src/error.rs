//! Errors the scheduler returns instead of panicking.

use std::fmt;

use crate::io::IoToken;
use crate::task::TaskId;

/// Why a spawn was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// The scheduler already holds as many live tasks as its capacity allows
    /// ([`Builder::capacity`](crate::Builder::capacity)).
    CapacityExceeded,
    /// The scheduler is shutting down and accepts no new tasks.
    ShuttingDown,
    /// The dependencies would form a cycle (including a task depending on itself).
    Cycle(TaskId),
    /// A dependency names a task this scheduler does not know (never spawned, or
    /// its record was already freed).
    UnknownDependency(TaskId),
    /// The native task's stack could not be allocated (for example, the
    /// process reached `vm.max_map_count`).
    StackAllocation(String),
    /// A dependency can only be added to a task that has not started.
    AlreadyStarted(TaskId),
    /// The scheduler behind a [`Handle`](crate::Handle) is gone.
    Closed,
    /// [`spawn_waiting`](crate::Scheduler::spawn_waiting) needs an event of
    /// this scheduler that is not set, and a task without dependencies.
    CannotWait(crate::event::EventId),
}

impl SpawnError {
    /// A short machine-readable reason: `capacity`, `shutting_down`, `cycle`,
    /// `unknown_dependency`, `stack_allocation`, `already_started`, `closed`
    /// or `cannot_wait`.
    pub fn reason(&self) -> &'static str {
        match self {
            SpawnError::CapacityExceeded => "capacity",
            SpawnError::ShuttingDown => "shutting_down",
            SpawnError::Cycle(_) => "cycle",
            SpawnError::UnknownDependency(_) => "unknown_dependency",
            SpawnError::StackAllocation(_) => "stack_allocation",
            SpawnError::AlreadyStarted(_) => "already_started",
            SpawnError::Closed => "closed",
            SpawnError::CannotWait(_) => "cannot_wait",
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::CapacityExceeded => {
                f.write_str("spawn refused: the scheduler is at its capacity of live tasks")
            }
            SpawnError::ShuttingDown => {
                f.write_str("spawn refused: the scheduler is shutting down")
            }
            SpawnError::Cycle(id) => {
                write!(
                    f,
                    "spawn refused: depending on task {id} would form a cycle"
                )
            }
            SpawnError::UnknownDependency(id) => {
                write!(
                    f,
                    "spawn refused: dependency {id} is not a task of this scheduler"
                )
            }
            SpawnError::StackAllocation(msg) => {
                write!(
                    f,
                    "spawn refused: could not allocate a coroutine stack: {msg}"
                )
            }
            SpawnError::AlreadyStarted(id) => {
                write!(
                    f,
                    "task {id} has already started; dependencies can only be added before"
                )
            }
            SpawnError::Closed => f.write_str("spawn refused: the scheduler is gone"),
            SpawnError::CannotWait(e) => write!(
                f,
                "spawn refused: a task spawned waiting needs {e} to be an event of this \
                 scheduler that is not set, and no dependencies"
            ),
        }
    }
}

impl std::error::Error for SpawnError {}

/// Why a system call could not be carried out. The task receives it as the
/// call's answer ([`Resume::Error`](crate::Resume::Error)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyscallError {
    /// The task id is not known to this scheduler.
    UnknownTask(TaskId),
    /// A task tried to join itself, which could never finish.
    JoinSelf,
    /// The I/O token was never registered, or was deregistered.
    UnknownIoToken(IoToken),
    /// Another task is already waiting on this source for this interest.
    IoBusy(IoToken),
    /// A shutdown was requested while one is already under way.
    ShutdownInProgress,
    /// The event was never created, or was removed.
    UnknownEvent(crate::event::EventId),
    /// The task has no open cancel scope with this id (never entered, or
    /// already left).
    UnknownScope(TaskId, crate::scope::ScopeId),
    /// The call needs a calling task, and no task is running.
    NotInTask,
}

impl fmt::Display for SyscallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyscallError::UnknownTask(id) => write!(f, "task {id} is not known to this scheduler"),
            SyscallError::JoinSelf => f.write_str("a task cannot join itself"),
            SyscallError::UnknownIoToken(t) => write!(f, "I/O token {} is not registered", t.get()),
            SyscallError::IoBusy(t) => write!(
                f,
                "another task is already waiting on I/O token {} for the same interest",
                t.get()
            ),
            SyscallError::ShutdownInProgress => f.write_str("a shutdown is already under way"),
            SyscallError::UnknownEvent(e) => write!(f, "{e} is not known to this scheduler"),
            SyscallError::UnknownScope(t, s) => {
                write!(f, "task {t} has no open cancel scope {}", s.get())
            }
            SyscallError::NotInTask => f.write_str("this call can only be made from inside a task"),
        }
    }
}

impl std::error::Error for SyscallError {}

/// Why a [`Handle`](crate::Handle) operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// The scheduler is gone.
    Closed,
    /// The call would wait for the scheduler from the scheduler's own thread,
    /// which could never complete.
    WouldDeadlock,
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::Closed => f.write_str("the scheduler is gone"),
            HandleError::WouldDeadlock => f.write_str(
                "this call waits for the scheduler and cannot be made from the scheduler's own thread",
            ),
        }
    }
}

impl std::error::Error for HandleError {}
