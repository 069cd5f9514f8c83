//! Job runners: kinds of job the daemon does not run itself.
//!
//! `tiffanyd` runs `exec` and `sleep` jobs on its own. A program that hosts
//! the daemon (the Python package's `tiffany.serve`) can add kinds with a
//! [`JobRunner`]: the engine asks it to check a job's args at submit, to
//! start the job as a task on the kernel when the job's turn comes, and to
//! say how the task's [`Outcome`] ends the job. Everything else — the
//! queue, priorities, dependencies, timeouts, cancellation, the log — is the
//! engine's, as for any other job.
//!
//! A runner's [`start`](JobRunner::start) and [`end`](JobRunner::end) are
//! called on the kernel's thread (through [`Handle::with_scheduler`] and
//! [`Scheduler::on_task_end`]), so a runner whose tasks belong to that thread
//! (Python coroutines, which only the thread that holds the interpreter may
//! resume) may touch them there; [`check`](JobRunner::check) is called on
//! the daemon's own threads and must not need the kernel.
//!
//! [`Handle::with_scheduler`]: tiffany_scheduler::Handle::with_scheduler

use std::sync::Arc;

use tiffany_scheduler::{Outcome, Scheduler, SpawnOptions, TaskId};
use tokio::sync::Notify;

/// How a runner's task ended the job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEnd {
    /// Succeeded, with this result (JSON text).
    Succeeded(String),
    /// Failed, with this message.
    Failed(String),
    /// The task was cancelled (a client's cancel, or the job's timeout).
    Cancelled,
}

/// Runs the jobs of the kinds it [`serves`](JobRunner::serves) (see the module docs).
pub trait JobRunner: Send + Sync + 'static {
    /// Whether this runner runs jobs of `kind`.
    fn serves(&self, kind: &str) -> bool;

    /// Checks a job's `args` (JSON text) at submit: an error is the
    /// INVALID_ARGUMENT message. Called on the daemon's threads.
    fn check(&self, kind: &str, args: &str) -> Result<(), String>;

    /// Starts job `id` on `sched` (on the kernel's thread) with `options`
    /// (its priority and name); returns its task, or why it cannot start
    /// (the job then fails with that message).
    fn start(
        &self,
        sched: &Scheduler,
        id: u64,
        kind: &str,
        args: &str,
        options: SpawnOptions,
    ) -> Result<TaskId, String>;

    /// How the task's `outcome` ends the job (on the kernel's thread).
    fn end(&self, outcome: &Outcome) -> JobEnd;
}

/// What a program hosting the daemon gives it instead of a kernel thread of
/// its own: the kernel (which the host runs on a thread of its choosing,
/// until the daemon shuts it down), the runner of the host's kinds, and a
/// way to ask the daemon to drain and stop.
pub struct Host {
    /// The host's kernel; the daemon starts every job on it and shuts it
    /// down when it stops.
    pub kernel: tiffany_scheduler::Handle,
    /// Runs the host's kinds.
    pub runner: Arc<dyn JobRunner>,
    /// Notified: the daemon drains (with its `grace`) and stops, as on SIGTERM.
    pub stop: Arc<Notify>,
    /// Sent `()` once the daemon serves (when it logs "tiffanyd ready");
    /// dropped unsent if it cannot start.
    pub ready: Option<std::sync::mpsc::Sender<()>>,
}
