//! The loop's cadence: what the scheduler does between two steps, and how often.
//!
//! Between steps the loop has chores besides running the next task: read the
//! inbox of commands from other threads, fire due timers and look for I/O
//! without blocking ("maintenance"), and read the back-pressure. Doing all of
//! them before every step would cost more than a step; doing them rarely
//! would let a due timer of an urgent task wait behind a busy one. So:
//!
//! - the inbox is read whenever a command is pending (one atomic load);
//! - maintenance happens every [`Builder::maintenance_interval`] passes
//!   (default 61), *and* as soon as the clock reading the step already took
//!   shows a timer due or I/O unpolled for too long ([`Core::chores_due`]),
//!   so a due higher-priority task preempts at the next system call of the
//!   running one;
//! - the pressure is read every
//!   [`Watermarks::check_interval`](crate::Watermarks::check_interval) passes.
//!
//! The loop counts a pass for every task it takes; so do the shortcuts that
//! take the next task without going back to the top of the loop (the step
//! taking the next ready task itself, a yield resumed in place): they ask
//! [`Cadence::quiet_pass`] first, which counts the pass only when nothing is
//! due on it, so the cadence is the same whichever way a task goes.
//!
//! [`Builder::maintenance_interval`]: crate::Builder::maintenance_interval
//! [`Core::chores_due`]: crate::core::Core

use std::cell::Cell;

/// What one pass of the loop must do before its step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// Fire due timers and poll I/O without blocking.
    pub(crate) maintenance: bool,
    /// Read the back-pressure.
    pub(crate) pressure: bool,
}

/// Counts passes of the loop and says when each chore is due.
pub(crate) struct Cadence {
    /// Passes until the next maintenance (a countdown: no division per pass).
    maintenance_left: Cell<u32>,
    maintenance_every: u32,
    /// Passes until the next pressure reading.
    pressure_left: Cell<u32>,
    pressure_every: u32,
}

impl Cadence {
    /// A cadence with maintenance every `maintenance_every` passes and a
    /// pressure reading every `pressure_every` (each at least 1).
    pub(crate) fn new(maintenance_every: u32, pressure_every: u32) -> Self {
        let maintenance_every = maintenance_every.max(1);
        let pressure_every = pressure_every.max(1);
        Cadence {
            maintenance_left: Cell::new(maintenance_every),
            maintenance_every,
            pressure_left: Cell::new(pressure_every),
            pressure_every,
        }
    }

    /// Counts a pass of the loop and says what is due on it.
    #[inline]
    pub(crate) fn pass(&self) -> Due {
        Due {
            maintenance: Self::count(&self.maintenance_left, self.maintenance_every),
            pressure: Self::count(&self.pressure_left, self.pressure_every),
        }
    }

    /// Counts a pass if nothing is due on it and says so; when something is
    /// due, counts nothing and answers `false` (the loop's next pass does it).
    #[inline]
    pub(crate) fn quiet_pass(&self) -> bool {
        let (m, p) = (self.maintenance_left.get(), self.pressure_left.get());
        if m <= 1 || p <= 1 {
            return false;
        }
        self.maintenance_left.set(m - 1);
        self.pressure_left.set(p - 1);
        true
    }

    /// Decrements a countdown; `true` (and a reset) when it reaches zero.
    #[inline]
    fn count(left: &Cell<u32>, every: u32) -> bool {
        let n = left.get() - 1;
        if n == 0 {
            left.set(every);
            true
        } else {
            left.set(n);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chore_comes_due_at_its_interval() {
        let c = Cadence::new(3, 2);
        let dues: Vec<Due> = (0..6).map(|_| c.pass()).collect();
        let m: Vec<bool> = dues.iter().map(|d| d.maintenance).collect();
        let p: Vec<bool> = dues.iter().map(|d| d.pressure).collect();
        assert_eq!(m, [false, false, true, false, false, true]);
        assert_eq!(p, [false, true, false, true, false, true]);
    }

    #[test]
    fn a_quiet_pass_counts_like_a_pass_and_refuses_a_due_one() {
        let c = Cadence::new(3, 100);
        assert!(c.quiet_pass());
        assert!(c.quiet_pass());
        // The third pass has maintenance due: not quiet, and not counted.
        assert!(!c.quiet_pass());
        assert!(!c.quiet_pass());
        assert!(c.pass().maintenance);
        assert!(c.quiet_pass());
    }

    #[test]
    fn a_quiet_pass_counts_down_the_pressure_reading_too() {
        let c = Cadence::new(100, 3);
        assert!(c.quiet_pass());
        assert!(c.quiet_pass());
        assert!(!c.quiet_pass(), "the pressure reading is due");
        assert_eq!(
            c.pass(),
            Due {
                maintenance: false,
                pressure: true
            }
        );
    }

    #[test]
    fn an_interval_of_zero_means_every_pass() {
        let c = Cadence::new(0, 0);
        assert_eq!(
            c.pass(),
            Due {
                maintenance: true,
                pressure: true
            }
        );
        assert!(!c.quiet_pass());
    }
}
