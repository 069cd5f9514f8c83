//! # Tiffany's kernel
//!
//! A coroutine-first task scheduler. Tasks are coroutines that run until they
//! make a *system call* — sleep, join, cancel, wait for I/O, spawn — and the
//! scheduler decides who runs next. The idea is David Beazley's "pyos" grown
//! into a runtime: priorities, virtual time, I/O readiness, cancellation and
//! timeouts, failure isolation, CPU budgets, capacity limits, back-pressure,
//! graceful shutdown and telemetry, on one thread, without locks on the hot path.
//!
//! ```
//! use std::time::Duration;
//! use tiffany_scheduler::{Scheduler, SpawnOptions, Spawner, PRI_SYSTEM};
//!
//! let sched = Scheduler::builder().virtual_clock().build().unwrap();
//! let a = sched.spawn(|cx| { cx.sleep(Duration::from_secs(3600)); "slept an hour" }).unwrap();
//! let b = sched.spawn_with(SpawnOptions::priority(PRI_SYSTEM), |cx| cx.yield_now()).unwrap();
//! let c = sched.spawn_with(SpawnOptions::default().with_deps(&[a]), |cx| cx.log("after a")).unwrap();
//! assert_eq!(sched.run(), vec![b, a, c]);      // the order tasks finished
//! assert_eq!(sched.now(), Duration::from_secs(3600)); // in microseconds of wall time
//! ```
//!
//! ## Where each concept lives
//!
//! | concept | module |
//! | --- | --- |
//! | the scheduler and its loop | [`scheduler`] |
//! | its settings | [`builder`] |
//! | task ids, priorities, states | [`task`] |
//! | system calls and their answers | [`syscall`] |
//! | cancel scopes: where a cancellation starts and stops | [`scope`] |
//! | what a task is made of (native or custom bodies) | [`body`], [`native`] |
//! | values, errors, join results | [`outcome`] |
//! | real and virtual clocks | [`clock`] |
//! | I/O readiness | [`io`] |
//! | events tasks wait for (set once, wake all) | [`event`] |
//! | CPU budgets | [`budget`] |
//! | back-pressure | [`backpressure`] |
//! | graceful shutdown | [`shutdown`] |
//! | runs that can never make progress | [`deadlock`] |
//! | cross-thread handle | [`handle`] |
//! | several schedulers on several threads | [`shard`] |
//! | events and the PAL | [`telemetry`] |
//! | Prometheus metrics | [`metrics`] |
//!
//! The state and the rules that change it are in `core` (private); the ready
//! queue, timer heap and wait generations in `ready`, `timer` and `waiter`.
//!
//! ## Features
//!
//! - `async-io` (default): I/O readiness from `mio` (epoll). Without it,
//!   readiness comes from an in-memory channel with the same API.

#![warn(missing_docs)]

/// The crate README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod backpressure;
pub mod body;
pub mod budget;
pub mod builder;
mod cadence;
pub mod clock;
mod core;
pub mod deadlock;
pub mod error;
pub mod event;
pub mod handle;
mod ids;
pub mod io;
pub mod metrics;
pub mod native;
pub mod outcome;
#[cfg(all(feature = "async-io", target_os = "linux"))]
pub mod process;
mod ready;
pub mod scheduler;
pub mod scope;
pub mod shard;
pub mod shutdown;
mod slot_id;
pub mod syscall;
mod table;
pub mod task;
pub mod telemetry;
#[cfg(test)]
mod test_support;
mod timer;
mod waiter;

pub use backpressure::{BackPressureListener, Watermarks};
pub use body::{Body, NativeTask, Step, TaskBody, TaskResult};
pub use budget::{Accounting, DEFAULT_QUANTUM};
pub use builder::Builder;
pub use clock::{Clock, ClockReader, TickClock};
pub use deadlock::{BlockedTask, Deadlock};
pub use error::{HandleError, SpawnError, SyscallError};
pub use event::EventId;
pub use handle::Handle;
pub use io::{Interest, IoReady, IoSource, IoToken};
pub use metrics::MetricsSnapshot;
pub use native::TaskContext;
pub use outcome::{JoinResult, Outcome, TaskError, Value};
pub use scheduler::Scheduler;
pub use scope::{ScopeAnswer, ScopeCall, ScopeId, ScopeOptions, ScopeRef, ScopeStatus};
pub use shard::{Executor, PoolHandle, ShardPanic, ShardPool, Spawner};
pub use shutdown::{ShutdownHook, ShutdownResult};
pub use syscall::{Resume, SpawnRequest, SystemCall};
pub use task::{
    PRI_DEFAULT, PRI_LOWEST, PRI_SYSTEM, Priority, SpawnOptions, TaskId, TaskInfo, TaskState,
    WaitReason,
};
pub use telemetry::{EventKind, EventLog, EventSubscriber, Field, PalWriter, TaskEvent};
