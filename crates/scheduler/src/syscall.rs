//! System calls: how a task asks the scheduler for something.
//!
//! A task runs until it makes a system call; the scheduler carries the call out
//! and resumes the task with the answer, a [`Resume`]. Some calls are answered
//! at once (`Spawn`, `Cancel`, `Log`, `GetTid`, a `Join` of a finished task):
//! the task goes on running, unless it has used its CPU quantum, in which case
//! it is throttled behind its peers first. The others block the task until
//! their event: the next turn (`Yield`), a deadline (`Sleep`), another task's
//! end (`Join`), I/O readiness (`IoWait`), the admission gate (`Admit`) or the
//! end of a shutdown (`Shutdown`).
//!
//! Cancellation is delivered as an answer too: [`Resume::Cancelled`]. While a
//! task is effectively cancelled (inside a cancelled [cancel
//! scope](crate::scope), with no shield in between), every *blocking* call
//! is answered with `Cancelled` at once (cancellation is level-triggered, as
//! in trio), so a cancelled task can run its clean-up code but can never
//! block forever; once it leaves the cancelled scope it may block again.

use std::time::Duration;

use crate::body::Body;
use crate::error::{SpawnError, SyscallError};
use crate::event::EventId;
use crate::io::{Interest, IoReady, IoToken};
use crate::outcome::{JoinResult, Value};
use crate::scope::{ScopeAnswer, ScopeCall};
use crate::shutdown::ShutdownResult;
use crate::task::{SpawnOptions, TaskId};

/// A request from a task to the scheduler.
pub enum SystemCall {
    /// Go behind every ready task of the same priority.
    Yield,
    /// Sleep for a duration (`Sleep(0)` is the same as `Yield`).
    Sleep(Duration),
    /// Sleep until this time on the scheduler's clock.
    SleepUntil(Duration),
    /// Wait for a task to finish and receive its outcome.
    Join(TaskId),
    /// Like `Join`, but answer [`JoinResult::Timeout`] after `dur`.
    JoinTimeout {
        /// The task to wait for.
        target: TaskId,
        /// How long to wait at most.
        dur: Duration,
    },
    /// Cancel a task; answers whether it was still running.
    Cancel(TaskId),
    /// Wait until an I/O source is ready.
    IoWait {
        /// The registered source.
        token: IoToken,
        /// Readable or writable.
        interest: Interest,
        /// Answer [`IoReady::Timeout`] after this long.
        timeout: Option<Duration>,
        /// The caller has just seen `EWOULDBLOCK` for this interest on this
        /// source. The reactor then skips its readiness check (a `poll(2)`
        /// call) and forgets readiness it saw before, which the failed call
        /// has shown to be stale: the source is registered edge-triggered, so
        /// data arriving after that call wakes the task. Leave it `false`
        /// when unsure; the wait is then answered at once if the source is
        /// ready.
        after_would_block: bool,
    },
    /// Wait until the event is set (answered at once if it is); answers
    /// `Bool(true)`. See [`crate::event`].
    EventWait(EventId),
    /// Set the event, waking every task waiting on it; answers whether the
    /// event exists.
    EventSet(EventId),
    /// Spawn a task; answers its id or why it was refused.
    Spawn(Box<SpawnRequest>),
    /// Answer the calling task's id.
    GetTid,
    /// Answer the scheduler's current time.
    Now,
    /// Record a message in the telemetry (PAL and `tracing`).
    Log(String),
    /// Wait at the back-pressure admission gate until intake is open.
    Admit,
    /// Shut the scheduler down, waiting for the other tasks up to the timeout;
    /// answers how it went.
    Shutdown(Duration),
    /// Finish the task now with this value.
    Done(Value),
    /// A cancel-scope operation (see [`crate::scope`]); answered at once with
    /// [`Resume::Scope`] (or [`Resume::Error`]), never throttled.
    Scope(ScopeCall),
}

impl std::fmt::Debug for SystemCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SystemCall::Yield => f.write_str("Yield"),
            SystemCall::Sleep(d) => write!(f, "Sleep({d:?})"),
            SystemCall::SleepUntil(d) => write!(f, "SleepUntil({d:?})"),
            SystemCall::Join(t) => write!(f, "Join({t})"),
            SystemCall::JoinTimeout { target, dur } => {
                write!(f, "JoinTimeout {{ target: {target}, dur: {dur:?} }}")
            }
            SystemCall::Cancel(t) => write!(f, "Cancel({t})"),
            SystemCall::IoWait {
                token,
                interest,
                timeout,
                after_would_block,
            } => write!(
                f,
                "IoWait({token:?}, {interest:?}, {timeout:?}, after_would_block: {after_would_block})"
            ),
            SystemCall::EventWait(e) => write!(f, "EventWait({e})"),
            SystemCall::EventSet(e) => write!(f, "EventSet({e})"),
            SystemCall::Spawn(r) => write!(f, "Spawn({:?})", r.options),
            SystemCall::GetTid => f.write_str("GetTid"),
            SystemCall::Now => f.write_str("Now"),
            SystemCall::Log(m) => write!(f, "Log({m:?})"),
            SystemCall::Admit => f.write_str("Admit"),
            SystemCall::Shutdown(d) => write!(f, "Shutdown({d:?})"),
            SystemCall::Done(v) => write!(f, "Done({v:?})"),
            SystemCall::Scope(c) => write!(f, "Scope({c:?})"),
        }
    }
}

/// A task to spawn from inside another task.
pub struct SpawnRequest {
    /// What the new task runs.
    pub body: Body,
    /// Its priority, dependencies, name and flags.
    pub options: SpawnOptions,
}

/// The answer to a system call: the value a task is resumed with.
#[derive(Debug)]
pub enum Resume {
    /// Nothing to report (`Yield`, `Sleep`, `Log`, `Admit`).
    Unit,
    /// The task's id (`GetTid`).
    Tid(TaskId),
    /// The scheduler's time (`Now`).
    Time(Duration),
    /// Whether the target was still live when cancelled (`Cancel`).
    Bool(bool),
    /// The new task's id or why it was refused (`Spawn`).
    Spawned(Result<TaskId, SpawnError>),
    /// The target's outcome (`Join`, `JoinTimeout`).
    Joined(JoinResult),
    /// Ready or timed out (`IoWait`).
    Io(IoReady),
    /// How the shutdown went (`Shutdown`).
    Shutdown(ShutdownResult),
    /// The answer to a scope call (`Scope`).
    Scope(ScopeAnswer),
    /// The task has been cancelled: unwind.
    Cancelled,
    /// The call was invalid.
    Error(SyscallError),
}
