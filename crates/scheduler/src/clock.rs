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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
    Real { clock: quanta::Clock, start: u64 },
    /// Virtual time; every jump is also published (in nanoseconds) for
    /// [`ClockReader`]s on other threads.
    Virtual(TickClock, Arc<AtomicU64>),
}

/// Reads a scheduler's clock from any thread
/// ([`Scheduler::clock_reader`](crate::Scheduler::clock_reader)).
///
/// The scheduler itself belongs to one thread; its clock does not need to:
/// a reader of the real clock reads the same calibrated counter from the
/// same start, and a reader of the virtual clock sees the time of the
/// scheduler's last jump. Reading costs no lock.
#[derive(Clone, Debug)]
pub struct ClockReader(ReaderKind);

#[derive(Clone, Debug)]
enum ReaderKind {
    Real { clock: quanta::Clock, start: u64 },
    Virtual(Arc<AtomicU64>),
}

impl ClockReader {
    /// The scheduler's time, as [`Scheduler::now`](crate::Scheduler::now)
    /// would answer on its own thread.
    #[inline]
    pub fn now(&self) -> Duration {
        match &self.0 {
            ReaderKind::Real { clock, start } => {
                Duration::from_nanos(clock.delta_as_nanos(*start, clock.raw()))
            }
            ReaderKind::Virtual(nanos) => Duration::from_nanos(nanos.load(Ordering::Acquire)),
        }
    }
}

impl TimeSource {
    pub(crate) fn new(clock: Clock) -> Self {
        match clock {
            Clock::Real => {
                let clock = real_clock();
                let start = clock.raw();
                TimeSource::Real { clock, start }
            }
            Clock::Virtual => TimeSource::Virtual(TickClock::new(), Arc::new(AtomicU64::new(0))),
        }
    }

    /// A reader of this clock for other threads.
    pub(crate) fn reader(&self) -> ClockReader {
        ClockReader(match self {
            TimeSource::Real { clock, start } => ReaderKind::Real {
                clock: clock.clone(),
                start: *start,
            },
            TimeSource::Virtual(_, published) => ReaderKind::Virtual(published.clone()),
        })
    }

    #[inline]
    pub(crate) fn now(&self) -> Duration {
        match self {
            TimeSource::Real { clock, start } => {
                Duration::from_nanos(clock.delta_as_nanos(*start, clock.raw()))
            }
            TimeSource::Virtual(c, _) => c.now(),
        }
    }

    pub(crate) fn is_virtual(&self) -> bool {
        matches!(self, TimeSource::Virtual(..))
    }

    pub(crate) fn kind(&self) -> Clock {
        match self {
            TimeSource::Real { .. } => Clock::Real,
            TimeSource::Virtual(..) => Clock::Virtual,
        }
    }

    /// Jumps virtual time to `t`; does nothing on the real clock.
    pub(crate) fn jump_to(&mut self, t: Duration) {
        if let TimeSource::Virtual(c, published) = self {
            c.advance_to(t);
            let nanos = u64::try_from(c.now().as_nanos()).unwrap_or(u64::MAX);
            published.store(nanos, Ordering::Release);
        }
    }
}
