//! CPU budgets: a busy task cannot starve its peers.
//!
//! Each time a task is taken from the ready queue it gets a fresh *quantum*
//! (default 5 ms). A task that blocks (sleep, join, I/O, yield) gives the CPU
//! away anyway. But a task whose system calls are all answered at once (spawn,
//! log, cancel, a join of a finished task) would otherwise keep running; once it
//! has used its quantum, its next system call re-queues it behind the ready
//! tasks of its priority (`Throttled`), and the throttle is counted.
//!
//! How the time is charged is a choice:
//! [`Accounting::Measured`] charges the wall time each run took (the default
//! with the real clock), [`Accounting::PerStep`] charges a fixed cost per
//! resume (the default with the virtual clock), so that under virtual time
//! throttling, like everything else, repeats exactly.

use std::time::Duration;

/// Default CPU quantum.
pub const DEFAULT_QUANTUM: Duration = Duration::from_millis(5);
/// Default cost of one resume under [`Accounting::PerStep`].
pub const DEFAULT_STEP_COST: Duration = Duration::from_micros(100);

/// How a task's CPU use is charged against its quantum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accounting {
    /// Wall time measured around each run.
    Measured,
    /// A fixed cost per resume: deterministic.
    PerStep(Duration),
}
