//! Graceful shutdown: stop intake, drain, cancel the rest, run hooks.
//!
//! A shutdown goes through fixed steps, each marked by an event:
//!
//! 1. `ShutdownBegin`: new spawns fail with [`SpawnError::ShuttingDown`](crate::SpawnError::ShuttingDown).
//! 2. Drain: tasks keep running until every non-daemon task has finished, or the
//!    deadline passes. Daemon tasks are then cancelled.
//! 3. At the deadline, every task still live is cancelled and allowed to unwind.
//! 4. [`ShutdownHook`]s run, in registration order, after the last task ended
//!    (flush a log here).
//! 5. `ShutdownComplete { clean }`, where `clean` means no task had to be
//!    cancelled at the deadline.
//!
//! A task that asks for the shutdown is not part of the drain it waits for (it
//! would wait for itself); it resumes with the result after the hooks ran.

/// How a shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShutdownResult {
    /// Every task finished before the deadline.
    Clean,
    /// Some tasks had to be cancelled at the deadline.
    Timeout,
}

impl ShutdownResult {
    /// `"clean"` or `"timeout"`.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownResult::Clean => "clean",
            ShutdownResult::Timeout => "timeout",
        }
    }
}

/// Work to do once a shutdown has drained every task, before it returns.
pub trait ShutdownHook {
    /// Runs once, on the scheduler's thread, after the last task ended.
    fn on_shutdown(&mut self, result: ShutdownResult);
}

impl<F: FnMut(ShutdownResult)> ShutdownHook for F {
    fn on_shutdown(&mut self, result: ShutdownResult) {
        self(result)
    }
}
