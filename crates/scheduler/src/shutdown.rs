//! Graceful shutdown: stop intake, drain, cancel the rest, run hooks.
//!
//! A shutdown goes through fixed steps, each marked by an event:
//!
//! 1. `ShutdownBegin`: new spawns fail with [`SpawnError::ShuttingDown`](crate::SpawnError::ShuttingDown).
//! 2. Drain: tasks keep running until every non-daemon task has finished, or the
//!    deadline passes. Daemon tasks are then cancelled.
//! 3. At the deadline, every task still alive is cancelled and resumed once
//!    more to clean up. One that parks again — it awaits in its cleanup, or
//!    swallows the cancellation and carries on — is *abandoned* there: its
//!    body is dropped without being resumed (a Python coroutine is closed,
//!    so its `finally` blocks still run; a native coroutine's stack is
//!    unwound) and it is recorded as cancelled. So no task can hold a
//!    shutdown past its deadline.
//! 4. [`ShutdownHook`]s run, in registration order, after the last task ended
//!    (flush a log here).
//! 5. `ShutdownComplete { clean }`, where `clean` means no task was still
//!    alive at the deadline.
//!
//! A task that asks for the shutdown is not part of the drain it waits for (it
//! would wait for itself); it resumes with the result after the hooks ran.
//!
//! Two more ways in, for Ctrl-C ([`Handle::interrupt`](crate::Handle::interrupt)
//! and [`Handle::abort`](crate::Handle::abort)): an *interrupt* cancels every
//! task at once and waits, however long, for them to unwind (their cleanup
//! may await); an *abort* abandons every task still alive at once. A first
//! Ctrl-C interrupts, a second aborts — as `asyncio.run` does.
//!
//! Why abandon rather than wait: a deadline that a task can defeat (by
//! catching the cancellation in a loop) is no deadline, and a service that
//! cannot stop within its grace period gets killed uncleanly by its
//! supervisor instead. Abandoning still runs the task's `finally` blocks
//! and the hooks, so logs are flushed.

use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::waiter::Waiter;

/// Where a shutdown stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for non-daemon tasks to finish.
    Draining,
    /// Remaining tasks were cancelled; waiting for them to unwind.
    Cancelling {
        /// Nothing was alive at the deadline (only daemons were cancelled).
        clean: bool,
    },
    /// Hooks ran; the result is known.
    Complete(ShutdownResult),
}

/// What the kernel must do next for a shutdown (see [`Shutdown::advance`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Advance {
    /// Nothing yet: tasks are still draining or unwinding.
    Wait,
    /// Every non-daemon task finished: cancel the daemons.
    CancelDaemons,
    /// Every task ended: run the hooks, then complete with this result.
    RunHooks(ShutdownResult),
}

/// A shutdown under way: its phase, deadline and who waits for it.
pub(crate) struct Shutdown {
    phase: Phase,
    /// When the drain ends (the earliest deadline asked for).
    deadline: Duration,
    /// The deadline has passed: the remaining tasks were cancelled.
    deadline_passed: bool,
    /// At the deadline, cancel and wait for the tasks to unwind however long
    /// (an interrupt), instead of abandoning those that park again.
    patient: bool,
    /// The task that asked for it (not part of the drain), if any.
    requester: Option<Waiter>,
    /// Other threads waiting for the result.
    replies: Vec<Sender<ShutdownResult>>,
}

impl Shutdown {
    /// A shutdown that drains until `deadline`.
    pub(crate) fn new(deadline: Duration, requester: Option<Waiter>, patient: bool) -> Self {
        Shutdown {
            phase: Phase::Draining,
            deadline,
            deadline_passed: false,
            patient,
            requester,
            replies: Vec::new(),
        }
    }

    /// A later request: it can only bring the deadline closer (a caller
    /// asking for 20 ms is not kept waiting by an earlier request that
    /// allowed an hour). Returns the new deadline to arm, if it moved.
    pub(crate) fn bring_closer(&mut self, deadline: Duration, patient: bool) -> Option<Duration> {
        if self.deadline_passed || deadline >= self.deadline {
            return None;
        }
        self.deadline = deadline;
        self.patient = patient;
        Some(deadline)
    }

    /// Whether the deadline timer still has something to do.
    pub(crate) fn deadline_pending(&self) -> bool {
        !self.deadline_passed && !matches!(self.phase, Phase::Complete(_))
    }

    /// The deadline passed. `Some(patient)` if the remaining tasks must now
    /// be cancelled (and, unless patient, abandoned when they park again).
    pub(crate) fn pass_deadline(&mut self) -> Option<bool> {
        if !self.deadline_pending() {
            return None;
        }
        self.deadline_passed = true;
        Some(self.patient)
    }

    /// `n` tasks were still alive at the deadline and have been cancelled.
    pub(crate) fn cancelled_at_deadline(&mut self, n: usize) {
        self.phase = Phase::Cancelling { clean: n == 0 };
    }

    /// Every task was abandoned at once: the result will be a timeout.
    pub(crate) fn aborted(&mut self) {
        if !matches!(self.phase, Phase::Complete(_)) {
            self.deadline_passed = true;
            self.phase = Phase::Cancelling { clean: false };
        }
    }

    /// The next step, given the live tasks the drain waits for and how many
    /// of them are not daemons.
    pub(crate) fn advance(&mut self, live: usize, nondaemon: usize) -> Advance {
        match self.phase {
            Phase::Draining if nondaemon == 0 => {
                self.phase = Phase::Cancelling { clean: true };
                if live == 0 {
                    Advance::RunHooks(ShutdownResult::Clean)
                } else {
                    Advance::CancelDaemons
                }
            }
            Phase::Cancelling { clean } if live == 0 => Advance::RunHooks(if clean {
                ShutdownResult::Clean
            } else {
                ShutdownResult::Timeout
            }),
            _ => Advance::Wait,
        }
    }

    /// The hooks ran: the shutdown is complete. Answers every thread waiting
    /// for the result and gives back the requester to wake.
    pub(crate) fn complete(&mut self, result: ShutdownResult) -> Option<Waiter> {
        self.phase = Phase::Complete(result);
        for r in self.replies.drain(..) {
            let _ = r.send(result);
        }
        self.requester.take()
    }

    /// The result, once complete.
    pub(crate) fn result(&self) -> Option<ShutdownResult> {
        match self.phase {
            Phase::Complete(r) => Some(r),
            _ => None,
        }
    }

    /// The requesting task, while the shutdown is under way.
    pub(crate) fn requester(&self) -> Option<Waiter> {
        self.requester
    }

    /// Another thread waits for the result.
    pub(crate) fn reply_to(&mut self, tx: Sender<ShutdownResult>) {
        self.replies.push(tx);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskId;

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn waiter() -> Waiter {
        Waiter {
            slot: 3,
            task: TaskId(7),
            generation: 2,
        }
    }

    /// A later request only brings the deadline closer (and then its
    /// patience counts); none moves it once it passed, and it passes once.
    #[test]
    fn a_deadline_only_comes_closer_and_passes_once() {
        let mut s = Shutdown::new(secs(10), None, false);
        assert!(s.deadline_pending());
        assert_eq!(s.bring_closer(secs(20), true), None);
        assert_eq!(s.bring_closer(secs(10), true), None);
        assert_eq!(s.bring_closer(secs(5), true), Some(secs(5)));
        assert!(s.deadline_pending());
        assert_eq!(
            s.pass_deadline(),
            Some(true),
            "the closer request's patience"
        );
        assert!(!s.deadline_pending());
        assert_eq!(s.pass_deadline(), None);
        assert_eq!(s.bring_closer(secs(1), false), None);

        let mut s = Shutdown::new(secs(10), None, false);
        assert_eq!(s.pass_deadline(), Some(false));
        let mut s = Shutdown::new(secs(10), None, true);
        assert_eq!(s.pass_deadline(), Some(true));
    }

    /// Draining waits for the non-daemon tasks; then the daemons are
    /// cancelled, and once every task ended the hooks run: clean.
    #[test]
    fn a_drain_cancels_the_daemons_then_runs_the_hooks() {
        let mut s = Shutdown::new(secs(10), None, false);
        assert_eq!(s.advance(3, 1), Advance::Wait);
        assert_eq!(s.advance(2, 0), Advance::CancelDaemons);
        assert_eq!(s.advance(2, 0), Advance::Wait);
        assert_eq!(s.advance(0, 0), Advance::RunHooks(ShutdownResult::Clean));
        // Nothing alive at all: straight to the hooks.
        let mut s = Shutdown::new(secs(10), None, false);
        assert_eq!(s.advance(0, 0), Advance::RunHooks(ShutdownResult::Clean));
    }

    /// At the deadline: with tasks still alive the result is a timeout,
    /// with none (only daemons were left) it is clean.
    #[test]
    fn tasks_alive_at_the_deadline_make_a_timeout() {
        let mut s = Shutdown::new(secs(10), None, false);
        assert_eq!(s.advance(2, 2), Advance::Wait);
        s.pass_deadline();
        s.cancelled_at_deadline(2);
        assert_eq!(s.advance(1, 1), Advance::Wait);
        assert_eq!(s.advance(0, 0), Advance::RunHooks(ShutdownResult::Timeout));

        let mut s = Shutdown::new(secs(10), None, false);
        s.pass_deadline();
        s.cancelled_at_deadline(0);
        assert_eq!(s.advance(0, 0), Advance::RunHooks(ShutdownResult::Clean));
    }

    /// An abort ends the drain as a timeout and passes the deadline; after
    /// completion it changes nothing.
    #[test]
    fn an_abort_is_a_timeout_unless_already_complete() {
        let mut s = Shutdown::new(secs(10), None, false);
        s.aborted();
        assert!(!s.deadline_pending());
        assert_eq!(s.pass_deadline(), None);
        assert_eq!(s.advance(0, 0), Advance::RunHooks(ShutdownResult::Timeout));

        let mut s = Shutdown::new(secs(10), None, false);
        s.complete(ShutdownResult::Clean);
        s.aborted();
        assert_eq!(s.result(), Some(ShutdownResult::Clean));
    }

    /// Completion answers every thread waiting, gives back the requester
    /// once, and fixes the result.
    #[test]
    fn completion_answers_the_waiters_and_the_requester() {
        let mut s = Shutdown::new(secs(10), Some(waiter()), false);
        assert_eq!(s.requester(), Some(waiter()));
        assert_eq!(s.result(), None);
        let (tx1, rx1) = std::sync::mpsc::channel();
        let (tx2, rx2) = std::sync::mpsc::channel();
        s.reply_to(tx1);
        s.reply_to(tx2);
        assert!(rx1.try_recv().is_err(), "answered before completion");
        assert_eq!(s.complete(ShutdownResult::Timeout), Some(waiter()));
        assert_eq!(rx1.try_recv(), Ok(ShutdownResult::Timeout));
        assert_eq!(rx2.try_recv(), Ok(ShutdownResult::Timeout));
        assert_eq!(s.result(), Some(ShutdownResult::Timeout));
        assert_eq!(s.requester(), None);
        assert!(
            !s.deadline_pending(),
            "a complete shutdown has no deadline to fire"
        );
        assert_eq!(s.advance(0, 0), Advance::Wait);
    }

    /// The results' names, and a closure as a hook.
    #[test]
    fn results_have_names_and_closures_are_hooks() {
        assert_eq!(ShutdownResult::Clean.name(), "clean");
        assert_eq!(ShutdownResult::Timeout.name(), "timeout");
        let mut seen = Vec::new();
        let mut hook = |r: ShutdownResult| seen.push(r);
        ShutdownHook::on_shutdown(&mut hook, ShutdownResult::Timeout);
        assert_eq!(seen, vec![ShutdownResult::Timeout]);
    }
}
