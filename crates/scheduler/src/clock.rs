//! Clocks: real monotonic time, or virtual time that jumps.
//!
//! The scheduler measures time as a [`Duration`] since it was created. With the
//! real clock that is monotonic wall time. With the virtual clock ([`TickClock`])
//! time stands still while tasks run and *jumps* to the next timer's deadline
//! when nothing is runnable, like trio's autojump `MockClock`: an hour of
//! sleeping takes microseconds, and two runs of the same program see the same
//! times.
//!
//! The real clock is read on every step (CPU accounting, run latency, event
//! time stamps), so its cost is on the hot path. It reads the CPU's
//! time-stamp counter through [`quanta`], calibrated against the monotonic
//! clock once per process, where the counter is reliable (invariant TSC), and
//! the monotonic clock otherwise: about 8 ns a reading on the benchmark
//! machine, against 24 ns for `Instant::elapsed`.
//!
//! Real I/O does not stop for virtual time. When tasks wait on I/O and timers
//! are pending, the virtual scheduler first looks for I/O without blocking and
//! then jumps; only when no timer is pending does it block in the poller for
//! outside events. A program that mixes real sockets with virtual sleeps is
//! therefore deterministic only in the order of its timers, not of its I/O.

use std::sync::OnceLock;
use std::time::Duration;

/// Which clock a scheduler uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// Monotonic wall time.
    #[default]
    Real,
    /// Virtual time ([`TickClock`]): jumps to the next deadline when idle.
    Virtual,
}

/// Virtual time: a counter that only moves when the scheduler jumps it.
#[derive(Clone, Copy, Debug, Default)]
pub struct TickClock {
    now: Duration,
}

impl TickClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        TickClock::default()
    }

    /// The current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Moves time forward to `t` (never backward).
    pub fn advance_to(&mut self, t: Duration) {
        self.now = self.now.max(t);
    }
}

/// The process's calibrated real clock (calibration takes about a
/// millisecond, so it is done once and the clock shared).
fn real_clock() -> quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new).clone()
}

/// The scheduler's time source.
pub(crate) enum TimeSource {
    /// Real time since `start`, a raw reading of `clock`.
    Real {
        clock: quanta::Clock,
        start: u64,
    },
    Virtual(TickClock),
}

impl TimeSource {
    pub(crate) fn new(clock: Clock) -> Self {
        match clock {
            Clock::Real => {
                let clock = real_clock();
                let start = clock.raw();
                TimeSource::Real { clock, start }
            }
            Clock::Virtual => TimeSource::Virtual(TickClock::new()),
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> Duration {
        match self {
            TimeSource::Real { clock, start } => {
                Duration::from_nanos(clock.delta_as_nanos(*start, clock.raw()))
            }
            TimeSource::Virtual(c) => c.now(),
        }
    }

    pub(crate) fn is_virtual(&self) -> bool {
        matches!(self, TimeSource::Virtual(_))
    }

    pub(crate) fn kind(&self) -> Clock {
        match self {
            TimeSource::Real { .. } => Clock::Real,
            TimeSource::Virtual(_) => Clock::Virtual,
        }
    }

    /// Jumps virtual time to `t`; does nothing on the real clock.
    pub(crate) fn jump_to(&mut self, t: Duration) {
        if let TimeSource::Virtual(c) = self {
            c.advance_to(t);
        }
    }
}
