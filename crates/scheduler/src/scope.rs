//! Cancel scopes: where a cancellation starts and where it stops.
//!
//! A task does not carry a single "cancelled" flag. It carries a stack of
//! *cancel scopes*, trio's model: a scope is a region of the task's code that
//! can be cancelled as a unit, by a call ([`Scheduler::cancel_scope`]) or by
//! its deadline passing (a kernel timer, so under the virtual clock the
//! clock jumps to it like to any sleep). Below every scope the task has a
//! root scope; cancelling the task ([`Scheduler::cancel`],
//! [`TaskContext::cancel`]) cancels that root, so a task cancelled as a whole
//! ends cancelled unless it catches the unwind or exception.
//!
//! A task is *effectively cancelled* when one of its scopes is cancelled
//! and no shielded scope lies between that scope and the code that runs
//! (inside it). While it is, every blocking system call answers
//! [`Resume::Cancelled`] at once — cancellation is level-triggered, so a
//! cancelled operation can never block forever — and a task blocked when
//! it becomes so is woken with `Cancelled`. Non-blocking calls (spawn, log,
//! the scope calls themselves) are answered as usual.
//!
//! The unwind (native) or exception (Python) travels out through the
//! scopes. The scope that was cancelled *absorbs* it when it is left: the
//! task goes on after the scope, as if its body had returned. A scope whose
//! enclosing scopes are also cancelled (and visible through no shield)
//! lets it pass, so the outermost cancelled scope is the one that stops it
//! — the root, for a task cancelled as a whole, which then ends
//! [`Outcome::Cancelled`](crate::Outcome::Cancelled).
//!
//! A shielded scope hides the cancellation of the scopes around it: inside
//! it, blocking calls work again (clean-up that must await, in a `finally`
//! or a destructor). Its own cancellation and deadline still apply.
//!
//! One exception to shields: when a shutdown's deadline passes, a task
//! blocked inside a shield is woken with `Cancelled` anyway and, if it
//! parks again, abandoned — a shield cannot hold a shutdown past its
//! deadline.
//!
//! Native tasks use [`TaskContext::scope`], [`TaskContext::move_on_after`],
//! [`TaskContext::shield`] and friends; foreign bodies (the Python binding)
//! call [`Scheduler::enter_scope`] and [`Scheduler::exit_scope`] from
//! inside their step.
//!
//! [`Scheduler::cancel_scope`]: crate::Scheduler::cancel_scope
//! [`Scheduler::cancel`]: crate::Scheduler::cancel
//! [`Scheduler::enter_scope`]: crate::Scheduler::enter_scope
//! [`Scheduler::exit_scope`]: crate::Scheduler::exit_scope
//! [`TaskContext::cancel`]: crate::TaskContext::cancel
//! [`TaskContext::scope`]: crate::TaskContext::scope
//! [`TaskContext::move_on_after`]: crate::TaskContext::move_on_after
//! [`TaskContext::shield`]: crate::TaskContext::shield
//! [`Resume::Cancelled`]: crate::Resume::Cancelled

use std::fmt;
use std::time::Duration;

use crate::task::TaskId;

/// A scope's number within its task: `1` for the first one entered, then
/// increasing; never reused within the task. (The root scope has no id: it
/// is cancelled through the task.)
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeId(pub(crate) u32);

impl ScopeId {
    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Rebuilds an id from its raw number (a foreign binding's handle). An
    /// id the task never issued is answered as unknown.
    pub const fn from_raw(raw: u32) -> Self {
        ScopeId(raw)
    }
}

impl fmt::Debug for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeId({})", self.0)
    }
}

/// A scope of some task: what [`Scheduler::cancel_scope`](crate::Scheduler::cancel_scope)
/// and the scope calls of other tasks name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScopeRef {
    /// The task that entered the scope.
    pub task: TaskId,
    /// The scope within that task.
    pub scope: ScopeId,
}

/// How a scope is entered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeOptions {
    /// When the scope cancels itself, on the scheduler's clock (time since
    /// the scheduler started). `None`: never by itself.
    pub deadline: Option<Duration>,
    /// Whether the scope hides the cancellation of the scopes around it.
    pub shield: bool,
}

impl ScopeOptions {
    /// A plain scope: no deadline, no shield.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the deadline (absolute, on the scheduler's clock).
    pub fn deadline(mut self, at: Duration) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Shields the scope.
    pub fn shielded(mut self) -> Self {
        self.shield = true;
        self
    }
}

/// A scope operation: the payload of [`SystemCall::Scope`](crate::SystemCall::Scope).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeCall {
    /// Enter a new innermost scope of the calling task; answered
    /// [`ScopeAnswer::Entered`].
    Enter(ScopeOptions),
    /// Leave a scope of the calling task (with any scopes still open inside
    /// it); answered [`ScopeAnswer::Exited`].
    Exit(ScopeId),
    /// Cancel a scope (of any task of this scheduler); answered
    /// [`ScopeAnswer::Status`].
    Cancel(ScopeRef),
    /// Change a scope's deadline; answered [`ScopeAnswer::Status`].
    SetDeadline(ScopeRef, Option<Duration>),
    /// Shield a scope or lift its shield; answered [`ScopeAnswer::Status`].
    SetShield(ScopeRef, bool),
    /// Read a scope's state; answered [`ScopeAnswer::Status`].
    Status(ScopeRef),
    /// The earliest deadline that applies to the calling task's code now;
    /// answered [`ScopeAnswer::Deadline`].
    EffectiveDeadline,
}

/// A scope's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeStatus {
    /// Whether it was cancelled (by a call or by its deadline).
    pub cancelled: bool,
    /// Its deadline, if it has one.
    pub deadline: Option<Duration>,
    /// Whether it is shielded.
    pub shield: bool,
}

/// The answer to a [`ScopeCall`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeAnswer {
    /// The new scope's id.
    Entered(ScopeId),
    /// The scope was left.
    Exited {
        /// Whether it had been cancelled.
        cancelled: bool,
        /// Whether it is the scope that stops the cancellation: it was
        /// cancelled, and the code around it is not effectively cancelled.
        /// A cancellation unwinding out of the scope should then be caught
        /// there.
        absorbs: bool,
    },
    /// The scope's state after the call.
    Status(ScopeStatus),
    /// The earliest deadline that applies (`None`: no deadline; an
    /// effectively cancelled task answers `Some(ZERO)`, already past).
    Deadline(Option<Duration>),
}

/// One scope on a task's stack (kernel side).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScopeRec {
    pub(crate) id: ScopeId,
    pub(crate) cancelled: bool,
    pub(crate) shield: bool,
    pub(crate) deadline: Option<Duration>,
}

impl ScopeRec {
    pub(crate) fn status(&self) -> ScopeStatus {
        ScopeStatus {
            cancelled: self.cancelled,
            deadline: self.deadline,
            shield: self.shield,
        }
    }
}

/// Whether code inside `scopes` (innermost last), above a root that is
/// `root_cancelled`, is effectively cancelled.
pub(crate) fn effectively_cancelled(scopes: &[ScopeRec], root_cancelled: bool) -> bool {
    for s in scopes.iter().rev() {
        if s.cancelled {
            return true;
        }
        if s.shield {
            return false;
        }
    }
    root_cancelled
}

/// The earliest deadline that applies to code inside `scopes`: those of the
/// scopes up to the innermost shield (inclusive).
pub(crate) fn effective_deadline(scopes: &[ScopeRec]) -> Option<Duration> {
    let mut earliest: Option<Duration> = None;
    for s in scopes.iter().rev() {
        if let Some(d) = s.deadline {
            earliest = Some(earliest.map_or(d, |e| e.min(d)));
        }
        if s.shield {
            break;
        }
    }
    earliest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u32, cancelled: bool, shield: bool) -> ScopeRec {
        ScopeRec {
            id: ScopeId(id),
            cancelled,
            shield,
            deadline: None,
        }
    }

    #[test]
    fn a_shield_hides_outer_cancellation_but_not_its_own() {
        assert!(effectively_cancelled(&[], true));
        assert!(!effectively_cancelled(&[], false));
        assert!(!effectively_cancelled(&[rec(1, false, true)], true));
        assert!(effectively_cancelled(&[rec(1, true, true)], false));
        assert!(effectively_cancelled(
            &[rec(1, false, true), rec(2, true, false)],
            false
        ));
        assert!(effectively_cancelled(
            &[rec(1, true, false), rec(2, false, false)],
            false
        ));
        assert!(!effectively_cancelled(
            &[rec(1, true, false), rec(2, false, true)],
            false
        ));
    }

    #[test]
    fn the_effective_deadline_stops_at_a_shield() {
        let mut a = rec(1, false, false);
        a.deadline = Some(Duration::from_secs(1));
        let mut b = rec(2, false, true);
        b.deadline = Some(Duration::from_secs(5));
        let mut c = rec(3, false, false);
        c.deadline = Some(Duration::from_secs(9));
        assert_eq!(effective_deadline(&[a]), Some(Duration::from_secs(1)));
        assert_eq!(effective_deadline(&[a, b, c]), Some(Duration::from_secs(5)));
        assert_eq!(effective_deadline(&[a, c]), Some(Duration::from_secs(1)));
        assert_eq!(effective_deadline(&[]), None);
    }
}
