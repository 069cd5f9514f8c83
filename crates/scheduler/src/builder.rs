//! The builder: every setting of a scheduler, and how it is put together.
//!
//! [`Builder`] collects the settings (clock, quantum and accounting,
//! capacity and back-pressure, the loop's cadence, stacks, retention,
//! timing metrics) and the callbacks a binding plugs in (a wrapper around
//! blocking waits, an interrupt check, reports of unobserved failures and
//! deadlocks); [`Builder::build`] makes the kernel's state (`Core`), the
//! state shared with handles, and the [`Scheduler`] that drives them.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backpressure::{BackPressureListener, Watermarks};
use crate::budget::{Accounting, DEFAULT_QUANTUM, DEFAULT_STEP_COST};
use crate::cadence::Cadence;
use crate::clock::{Clock, TimeSource};
use crate::core::{Config, Core};
use crate::deadlock::Deadlock;
use crate::handle::Shared;
use crate::io::Reactor;
use crate::native::DEFAULT_STACK_SIZE;
use crate::outcome::TaskError;
use crate::scheduler::{Callbacks, Intake, Scheduler};
use crate::shard::RemoteTasks;
use crate::task::TaskId;

/// How long a paused, idle scheduler waits before reading the pressure again.
pub(crate) const PRESSURE_RECHECK: Duration = Duration::from_millis(10);
/// Look at timers and I/O at least every this many passes while busy.
const MAINTENANCE_INTERVAL: u32 = 61;
/// Poll I/O without blocking at least this often while busy.
const IO_POLL_INTERVAL: Duration = Duration::from_micros(100);

/// Called for a task that failed while nothing was waiting for it (no
/// joiner, no retain): the failure would otherwise go unnoticed.
pub type FailureReport = Box<dyn FnMut(TaskId, &TaskError)>;

/// Called when no task can ever make progress again (see [`crate::deadlock`]).
pub type DeadlockReport = Box<dyn FnMut(&Deadlock)>;

/// Wraps each blocking wait in the reactor (the Python bindings release the GIL here).
pub type BlockingWrapper = Box<dyn Fn(&mut dyn FnMut())>;
/// Called after each blocking wait; returning `true` asks for a shutdown with
/// the given timeout (the Python bindings check for Ctrl-C here).
pub type InterruptCheck = Box<dyn FnMut() -> Option<Duration>>;

/// Configures and builds a [`Scheduler`].
pub struct Builder {
    clock: Clock,
    quantum: Duration,
    accounting: Option<Accounting>,
    capacity: Option<usize>,
    listener: Option<Box<dyn BackPressureListener>>,
    watermarks: Watermarks,
    maintenance_interval: u32,
    io_poll_interval: Duration,
    stack_size: usize,
    retain_finished: usize,
    timing: bool,
    blocking: Option<BlockingWrapper>,
    interrupt: Option<InterruptCheck>,
    unobserved: Option<FailureReport>,
    deadlock: Option<DeadlockReport>,
    pub(crate) id_source: Option<Arc<AtomicU64>>,
    pub(crate) intake: Option<Intake>,
    pub(crate) remote: Option<Arc<dyn RemoteTasks>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            clock: Clock::Real,
            quantum: DEFAULT_QUANTUM,
            accounting: None,
            capacity: None,
            listener: None,
            watermarks: Watermarks::default(),
            maintenance_interval: MAINTENANCE_INTERVAL,
            io_poll_interval: IO_POLL_INTERVAL,
            stack_size: DEFAULT_STACK_SIZE,
            retain_finished: 4096,
            timing: true,
            blocking: None,
            interrupt: None,
            unobserved: None,
            deadlock: None,
            id_source: None,
            intake: None,
            remote: None,
        }
    }
}

impl Builder {
    /// The clock: [`Clock::Real`] (default) or [`Clock::Virtual`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Shorthand for `clock(Clock::Virtual)`.
    pub fn virtual_clock(self) -> Self {
        self.clock(Clock::Virtual)
    }

    /// The CPU quantum per run (default 5 ms).
    pub fn quantum(mut self, quantum: Duration) -> Self {
        self.quantum = quantum;
        self
    }

    /// How CPU use is charged (default: measured on the real clock, 100 µs per
    /// resume on the virtual clock).
    pub fn accounting(mut self, accounting: Accounting) -> Self {
        self.accounting = Some(accounting);
        self
    }

    /// The most live tasks at once; spawns beyond fail with
    /// [`SpawnError::CapacityExceeded`]. Also makes live/capacity part of the
    /// back-pressure.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// A back-pressure listener.
    pub fn backpressure(mut self, listener: impl BackPressureListener + 'static) -> Self {
        self.listener = Some(Box::new(listener));
        self
    }

    /// Back-pressure watermarks and check interval.
    pub fn watermarks(mut self, watermarks: Watermarks) -> Self {
        self.watermarks = watermarks;
        self
    }

    /// How many passes of the loop at most between two looks at the timers
    /// and I/O while tasks keep running (default 61; 0 or 1: every pass).
    /// Besides, a due timer is seen at the next system call of the running
    /// task whenever the step read the clock (the real clock with measured
    /// accounting, the default), and I/O is polled at least every
    /// [`io_poll_interval`](Self::io_poll_interval). The `cadence` module's
    /// documentation (in the source) says why.
    pub fn maintenance_interval(mut self, passes: u32) -> Self {
        self.maintenance_interval = passes;
        self
    }

    /// How long at most between two non-blocking polls of I/O while tasks
    /// keep running (default 100 µs), on the clock reading steps already
    /// take. A shorter interval wakes I/O-bound tasks sooner under load; each
    /// poll is a system call.
    pub fn io_poll_interval(mut self, interval: Duration) -> Self {
        self.io_poll_interval = interval;
        self
    }

    /// How many finished native coroutines (with their stacks) this thread
    /// keeps for reuse (default 1024). A larger pool makes bursts of many
    /// short native tasks cheaper; each pooled stack holds two memory
    /// mappings, which count against `vm.max_map_count`.
    pub fn stack_pool(self, coroutines: usize) -> Self {
        crate::native::set_pool_limit(coroutines);
        self
    }

    /// Stack size for native tasks spawned by [`Scheduler::spawn`] and their
    /// children, in bytes (default 32 KiB, at least 8 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// How many finished tasks keep their outcome for a later join, beyond the
    /// ones that are retained, joined or depended on (default 4096). The
    /// oldest are forgotten first, so a long-running scheduler does not grow.
    pub fn retain_finished(mut self, n: usize) -> Self {
        self.retain_finished = n;
        self
    }

    /// Whether to time run latency and wait time for the histograms (default
    /// on). Off saves the histogram updates; with [`Accounting::PerStep`] it
    /// also saves the clock read per step (measured accounting needs it).
    pub fn timing_metrics(mut self, on: bool) -> Self {
        self.timing = on;
        self
    }

    /// Wraps each blocking wait (for example to release a language runtime's lock).
    pub fn blocking_wrapper(mut self, wrapper: BlockingWrapper) -> Self {
        self.blocking = Some(wrapper);
        self
    }

    /// Checked after each blocking wait; `Some(timeout)` starts a shutdown.
    pub fn interrupt_check(mut self, check: InterruptCheck) -> Self {
        self.interrupt = Some(check);
        self
    }

    /// Reports failures nobody was waiting for (default: a `tracing` warning).
    pub fn on_unobserved_failure(mut self, report: FailureReport) -> Self {
        self.unobserved = Some(report);
        self
    }

    /// Called when no task can ever make progress again: under the virtual
    /// clock the run then ends (see [`crate::deadlock`]); under the real
    /// clock it is called once per stall. Default: a `tracing` warning.
    pub fn on_deadlock(mut self, report: DeadlockReport) -> Self {
        self.deadlock = Some(report);
        self
    }

    /// Builds the scheduler. Fails only if the OS refuses a poller.
    pub fn build(self) -> io::Result<Scheduler> {
        let reactor = Reactor::new()?;
        let clock = TimeSource::new(self.clock);
        let accounting = self.accounting.unwrap_or(if clock.is_virtual() {
            Accounting::PerStep(DEFAULT_STEP_COST)
        } else {
            Accounting::Measured
        });
        let shared = Arc::new(Shared {
            next_id: self
                .id_source
                .unwrap_or_else(|| Arc::new(AtomicU64::new(1))),
            live: AtomicUsize::new(0),
            capacity: self.capacity,
            shutting_down: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            inbox: Mutex::new(Vec::new()),
            waker: reactor.waker(),
            thread: std::thread::current().id(),
            outside_handles: AtomicUsize::new(0),
        });
        let config = Config {
            quantum: self.quantum,
            accounting,
            step_cost: match accounting {
                Accounting::PerStep(cost) => crate::core::nanos(cost),
                Accounting::Measured => 0,
            },
            watermarks: self.watermarks,
            retain_finished: self.retain_finished,
            timing: self.timing,
            stack_size: self.stack_size,
            io_poll_interval: self.io_poll_interval,
        };
        let mut core = Core::new(config, clock, reactor, shared.clone(), self.remote);
        core.has_listener = self.listener.is_some();
        Ok(Scheduler::from_parts(
            core,
            shared,
            Cadence::new(self.maintenance_interval, self.watermarks.check_interval),
            Callbacks {
                listener: self.listener,
                blocking: self.blocking,
                interrupt: self.interrupt,
                unobserved: self.unobserved,
                deadlock: self.deadlock,
                intake: self.intake,
            },
        ))
    }
}
