//! Deadlocks: a run in which no task can ever make progress again.
//!
//! Every live task is blocked — joining a task that waits for it, waiting
//! for an event nobody will set, waiting for admission that nothing will
//! grant — no timer is pending, and nothing outside the scheduler can wake a
//! task: no task waits for I/O (a socket, a pipe, a completion from another
//! thread), no handle given out by [`Scheduler::handle`](crate::Scheduler::handle)
//! is alive, and no shutdown is being waited for by a service loop.
//!
//! Under the virtual clock such a run would wait forever, so the scheduler
//! says so instead: it calls the [`Builder::on_deadlock`](crate::Builder::on_deadlock)
//! callback with a [`Deadlock`] naming each blocked task and what it waits
//! for, ends the run, and keeps the report for
//! [`Scheduler::take_deadlock`](crate::Scheduler::take_deadlock). Under the
//! real clock the condition is reported once per stall; the scheduler then
//! goes on waiting if something outside the kernel (a binding's Ctrl-C
//! check) may still end the wait, and ends the run otherwise.
//!
//! Why "nothing outside can wake it" is judged conservatively: a handle held
//! by another thread may spawn or cancel at any moment, and real I/O may
//! arrive, so while either exists the scheduler waits rather than raise a
//! false alarm. A binding's own plumbing (its signal handler, destructors)
//! uses [`Scheduler::internal_handle`](crate::Scheduler::internal_handle),
//! which does not count.

use std::fmt;
use std::sync::Arc;

use crate::task::TaskId;

/// The tasks of a run that can never make progress again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadlock {
    /// Every live task, in id order, with what it waits for.
    pub blocked: Vec<BlockedTask>,
}

/// One task of a [`Deadlock`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedTask {
    /// The task.
    pub id: TaskId,
    /// Its name, if it has one.
    pub name: Option<Arc<str>>,
    /// What it waits for, in words (`"joining task 3"`).
    pub waits_for: String,
}

impl fmt::Display for BlockedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "task {} ({name}) {}", self.id, self.waits_for),
            None => write!(f, "task {} {}", self.id, self.waits_for),
        }
    }
}

impl fmt::Display for Deadlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deadlock: {} task{} blocked and nothing can wake {}",
            self.blocked.len(),
            if self.blocked.len() == 1 {
                " is"
            } else {
                "s are"
            },
            if self.blocked.len() == 1 {
                "it"
            } else {
                "them"
            },
        )?;
        for t in &self.blocked {
            write!(f, "; {t}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Deadlock {}
