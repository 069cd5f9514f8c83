//! Native tasks: Rust closures on stackful coroutines.
//!
//! A native task is a closure running on its own small stack (may's coroutine
//! engine, the `generator` crate). The scheduler resumes it synchronously on its
//! own thread: a stack switch in, the closure runs until it makes a system call
//! through its [`TaskContext`], a stack switch out. No thread hand-off, no
//! allocation per step.
//!
//! Stacks are `mmap`ed (32 KiB by default plus a guard page: two mappings each),
//! so Linux's default `vm.max_map_count` caps live native tasks near 32,000 and a
//! fresh stack costs a few microseconds. Finished tasks' coroutines are therefore
//! kept for reuse (the `pool` module: per thread, and what ended threads left behind for
//! the others), and a failed allocation becomes a
//! [`SpawnError::StackAllocation`] rather than an abort.
//!
//! Cancellation unwinds the task from the system call it is suspended in, with
//! `resume_unwind` (which does not run the panic hook): its destructors run, and
//! the unwind stops at the cancel scope that was cancelled
//! ([`TaskContext::scope`], [`TaskContext::move_on_after`]), or at the
//! coroutine's base when the task as a whole was cancelled — never in the
//! scheduler. A panic in the task likewise ends only that task, as
//! [`Step::Failed`].
//!
//! A native task must never call into Python (CPython overflows a 32 KiB stack)
//! and should not block its thread: it shares it with every other task. For the
//! same reason it must not hold a blocking lock (a `std::sync::Mutex` guard)
//! across a system call, as async Rust must not across an `.await`: any call
//! may park the task (a yield, a wait, or a throttle when its quantum is used),
//! and the next task on the thread that tries the lock blocks the thread for
//! good. Take what the call returns first, then lock.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use generator::{Generator, Gn, Scope};

use crate::body::{Body, NativeTask, Step, TaskResult};
use crate::error::{SpawnError, SyscallError};
use crate::event::EventId;
use crate::io::{Interest, IoReady, IoToken};
use crate::outcome::{JoinResult, TaskError, Value};
use crate::scheduler::Scheduler;
use crate::scope::{ScopeAnswer, ScopeCall, ScopeOptions, ScopeRef, ScopeStatus};
use crate::shutdown::ShutdownResult;
use crate::syscall::{Resume, SpawnRequest, SystemCall};
use crate::task::{SpawnOptions, TaskId};

/// Default native stack size in bytes (32 KiB).
pub const DEFAULT_STACK_SIZE: usize = 32 * 1024;
/// Smallest native stack size accepted, in bytes.
pub const MIN_STACK_SIZE: usize = 8 * 1024;

const WORD: usize = std::mem::size_of::<usize>();

/// What a native coroutine hands back to the scheduler.
pub(crate) enum Yielded {
    Call(SystemCall),
    Return(Value),
}

/// What the scheduler sends into a native coroutine on each resume: a
/// pointer to the slot holding the answer, and the scheduler to ask for a
/// yield in place (null when it cannot succeed during this resume), both
/// alive for the length of that resume.
///
/// The engine reads what is sent into a coroutine with a volatile load, and
/// LLVM splits a volatile load of an enum like [`Resume`] into single bytes
/// (64 instructions a yield, a third of the coroutine side of a round trip).
/// Two pointers are two loads; the task moves the answer out of the slot
/// before it can yield again, while the slot is still alive.
struct Handoff {
    answer: *mut Option<Resume>,
    in_place: *const Scheduler,
}

// SAFETY: the pointers are only followed on the thread that resumes the
// coroutine, during that resume (see `NativeBody::resume`).
unsafe impl Send for Handoff {}

type NativeGen = Generator<'static, Handoff, Yielded>;

mod pool;
pub(crate) use pool::set_limit as set_pool_limit;

/// The unwind payload that carries a cancellation through a native task.
struct CancelUnwind;

/// Number of pooled coroutine stacks on this thread (for tests and metrics).
pub fn pooled_stacks() -> usize {
    pool::pooled()
}

/// Number of coroutine stacks that ended threads left for others to reuse
/// (for tests and metrics).
pub fn reserved_stacks() -> usize {
    pool::reserved()
}

fn stack_words(stack_size: usize) -> usize {
    let page = 4096;
    let bytes = stack_size.max(MIN_STACK_SIZE).div_ceil(page) * page;
    bytes / WORD
}

/// A native task's coroutine.
pub(crate) struct NativeBody {
    coro: Option<NativeGen>,
    words: usize,
    /// Set when the coroutine overflowed its stack: it is not reused.
    poisoned: bool,
}

impl NativeBody {
    pub(crate) fn new<F, R>(stack_size: usize, f: F) -> Result<Self, SpawnError>
    where
        F: FnOnce(&mut TaskContext<'_>) -> R + Send + 'static,
        R: Send + Sync + 'static,
    {
        let words = stack_words(stack_size);
        let code = move |mut scope: Scope<'_, 'static, Handoff, Yielded>| {
            let in_place = scope
                .get_yield()
                .map_or(std::ptr::null(), |handoff| handoff.in_place);
            let mut cx = TaskContext {
                scope,
                in_place,
                tid: None,
                stack_size: words * WORD,
            };
            Yielded::Return(Value::new(f(&mut cx)))
        };
        let coro = match pool::take(words) {
            Some(mut g) => {
                g.scoped_init(code);
                g
            }
            None => {
                // The engine panics when mmap fails; turn that into an error.
                // Catching it here keeps the process alive; the panic message
                // still goes through the panic hook.
                panic::catch_unwind(AssertUnwindSafe(|| Gn::new_scoped_opt(words, code))).map_err(
                    |p| {
                        SpawnError::StackAllocation(TaskError::from_panic(&*p).message().to_owned())
                    },
                )?
            }
        };
        Ok(NativeBody {
            coro: Some(coro),
            words,
            poisoned: false,
        })
    }

    #[inline]
    pub(crate) fn resume(&mut self, input: Option<Resume>, in_place: Option<&Scheduler>) -> Step {
        let Some(coro) = self.coro.as_mut() else {
            return Step::Failed(TaskError::new("native task resumed after it ended"));
        };
        let mut slot = input;
        let handoff = Handoff {
            answer: &mut slot,
            in_place: in_place.map_or(std::ptr::null(), std::ptr::from_ref),
        };
        // `slot` outlives the resume; the task takes the answer out of it at
        // once (an answer it never takes, on a first resume, is dropped here).
        match panic::catch_unwind(AssertUnwindSafe(|| coro.raw_send(Some(handoff)))) {
            Ok(Some(Yielded::Call(call))) => Step::Syscall(call),
            Ok(Some(Yielded::Return(v))) => Step::Done(v),
            Ok(None) => Step::Failed(TaskError::new("native task resumed after it ended")),
            Err(payload) => self.unwound(payload),
        }
    }

    fn unwound(&mut self, payload: Box<dyn Any + Send>) -> Step {
        if payload.is::<CancelUnwind>() {
            return Step::Cancelled;
        }
        if let Some(e) = payload.downcast_ref::<generator::Error>() {
            self.poisoned = true;
            return Step::Failed(TaskError::new(match e {
                generator::Error::StackErr => "native task overflowed its stack".to_owned(),
                other => format!("native task's coroutine failed: {other:?}"),
            }));
        }
        Step::Failed(TaskError::from_panic(&*payload))
    }
}

impl Drop for NativeBody {
    fn drop(&mut self) {
        let Some(mut coro) = self.coro.take() else {
            return;
        };
        if self.poisoned {
            return;
        }
        if !coro.is_done() {
            // Never started: its closure is dropped. Suspended: it unwinds from
            // its yield point so its destructors run.
            if panic::catch_unwind(AssertUnwindSafe(|| coro.cancel())).is_err() {
                return;
            }
        }
        if coro.is_done() {
            pool::give(self.words, coro);
        }
    }
}

/// A native task's view of the scheduler: every system call, as methods.
///
/// Each call suspends the task until the scheduler answers. A call answered by
/// [`Resume::Cancelled`] unwinds the task from that point (destructors run)
/// to the cancel scope that was cancelled; while the task is inside a
/// cancelled scope (and no shield), every blocking call unwinds again.
///
/// ```
/// use std::time::Duration;
/// use tiffany_scheduler::{Scheduler, Spawner};
///
/// let sched = Scheduler::builder().virtual_clock().build().unwrap();
/// let t = sched.spawn(|cx| {
///     // Gives up on a slow step after 5 s, and goes on.
///     let slow = cx.move_on_after(Duration::from_secs(5), |cx| {
///         cx.sleep(Duration::from_secs(60));
///         "finished"
///     });
///     assert_eq!(slow, None);
///     cx.sleep(Duration::from_secs(1)); // not cancelled any more
///     cx.now()
/// }).unwrap();
/// sched.run();
/// assert_eq!(sched.value(t).unwrap().downcast_ref::<Duration>(), Some(&Duration::from_secs(6)));
/// ```
pub struct TaskContext<'s> {
    scope: Scope<'s, 'static, Handoff, Yielded>,
    /// The scheduler to ask for a yield in place, as sent with the latest
    /// resume (a task of a shard pool may move between schedulers while it
    /// is suspended); null when other tasks were ready at that resume.
    in_place: *const Scheduler,
    tid: Option<TaskId>,
    stack_size: usize,
}

impl TaskContext<'_> {
    /// Makes a system call and returns the scheduler's answer. Unwinds the task
    /// if the answer is [`Resume::Cancelled`].
    pub fn syscall(&mut self, call: SystemCall) -> Resume {
        let sent = self.scope.yield_(Yielded::Call(call));
        let answer = sent.and_then(|handoff| {
            self.in_place = handoff.in_place;
            // SAFETY: the scheduler sends a pointer to a slot that lives
            // until this resume ends (`NativeBody::resume`); it is read
            // once, here.
            unsafe { (*handoff.answer).take() }
        });
        match answer {
            Some(Resume::Cancelled) => panic::resume_unwind(Box::new(CancelUnwind)),
            Some(answer) => answer,
            None => panic!(
                "native task resumed without an answer to {}",
                "its system call"
            ),
        }
    }

    /// Goes behind every ready task of the same priority.
    ///
    /// When no such task is ready and the scheduler has nothing else due,
    /// the task would be taken straight back out of the queue: the yield is
    /// then done in place, without leaving the task's stack (the scheduler's
    /// bookkeeping, events and metrics are those of a full round trip).
    pub fn yield_now(&mut self) {
        // SAFETY: the pointer was sent by the scheduler that is resuming
        // this task, whose `step` is below us on this thread's stack.
        let scheduler = unsafe { self.in_place.as_ref() };
        if scheduler.is_some_and(Scheduler::yield_in_place) {
            return;
        }
        self.syscall(SystemCall::Yield);
    }

    /// Sleeps for `d` on the scheduler's clock (`Duration::ZERO` yields,
    /// like [`yield_now`](TaskContext::yield_now)).
    pub fn sleep(&mut self, d: Duration) {
        if d.is_zero() {
            return self.yield_now();
        }
        self.syscall(SystemCall::Sleep(d));
    }

    /// Sleeps until `t` on the scheduler's clock.
    pub fn sleep_until(&mut self, t: Duration) {
        self.syscall(SystemCall::SleepUntil(t));
    }

    /// The scheduler's current time.
    pub fn now(&mut self) -> Duration {
        match self.syscall(SystemCall::Now) {
            Resume::Time(t) => t,
            other => unexpected("Now", other),
        }
    }

    /// Waits for `target` to finish and returns its outcome. Joining a finished
    /// task answers at once; an unknown task or the task itself answers `Failed`
    /// with the reason.
    pub fn join(&mut self, target: TaskId) -> JoinResult {
        self.join_answer(SystemCall::Join(target))
    }

    /// Like [`join`](Self::join), answering [`JoinResult::Timeout`] after `dur`.
    pub fn join_timeout(&mut self, target: TaskId, dur: Duration) -> JoinResult {
        self.join_answer(SystemCall::JoinTimeout { target, dur })
    }

    fn join_answer(&mut self, call: SystemCall) -> JoinResult {
        match self.syscall(call) {
            Resume::Joined(r) => r,
            Resume::Error(e) => JoinResult::Failed(TaskError::new(e.to_string())),
            other => unexpected("Join", other),
        }
    }

    /// Cancels `target` as a whole (its outermost cancel scope: the code in
    /// all its scopes sees `Cancelled`, and, unless it catches the unwind,
    /// it ends cancelled); returns whether it was still live. To cancel
    /// only part of a task, cancel one of its scopes
    /// ([`cancel_scope`](Self::cancel_scope)).
    pub fn cancel(&mut self, target: TaskId) -> bool {
        match self.syscall(SystemCall::Cancel(target)) {
            Resume::Bool(live) => live,
            Resume::Error(_) => false,
            other => unexpected("Cancel", other),
        }
    }

    /// Waits until the registered source is ready for `interest`.
    pub fn io_wait(&mut self, token: IoToken, interest: Interest) -> Result<IoReady, SyscallError> {
        self.io_wait_call(token, interest, None)
    }

    /// Like [`io_wait`](Self::io_wait), answering [`IoReady::Timeout`] after `timeout`.
    pub fn io_wait_timeout(
        &mut self,
        token: IoToken,
        interest: Interest,
        timeout: Duration,
    ) -> Result<IoReady, SyscallError> {
        self.io_wait_call(token, interest, Some(timeout))
    }

    fn io_wait_call(
        &mut self,
        token: IoToken,
        interest: Interest,
        timeout: Option<Duration>,
    ) -> Result<IoReady, SyscallError> {
        match self.syscall(SystemCall::IoWait {
            token,
            interest,
            timeout,
            after_would_block: false,
        }) {
            Resume::Io(r) => Ok(r),
            Resume::Error(e) => Err(e),
            other => unexpected("IoWait", other),
        }
    }

    /// Waits until `event` is set (at once if it is). `Err` for an unknown
    /// event. See [`crate::event`].
    pub fn event_wait(&mut self, event: EventId) -> Result<(), SyscallError> {
        match self.syscall(SystemCall::EventWait(event)) {
            Resume::Bool(_) => Ok(()),
            Resume::Error(e) => Err(e),
            other => unexpected("EventWait", other),
        }
    }

    /// Sets `event`, waking every task waiting on it; `false` for an unknown
    /// event.
    pub fn event_set(&mut self, event: EventId) -> bool {
        match self.syscall(SystemCall::EventSet(event)) {
            Resume::Bool(known) => known,
            other => unexpected("EventSet", other),
        }
    }

    /// Spawns a native task at the default priority. The child gets this
    /// task's stack size.
    pub fn spawn<R: TaskResult>(&mut self, f: impl NativeTask<R>) -> Result<TaskId, SpawnError> {
        self.spawn_with(SpawnOptions::default(), f)
    }

    /// Spawns a native task with options (priority, dependencies, name, ...).
    pub fn spawn_with<R: TaskResult>(
        &mut self,
        options: SpawnOptions,
        f: impl NativeTask<R>,
    ) -> Result<TaskId, SpawnError> {
        let body = Body::native_with_stack(self.stack_size, f)?;
        self.spawn_body(options, body)
    }

    /// Spawns a ready-made body (a custom [`TaskBody`](crate::TaskBody)).
    pub fn spawn_body(&mut self, options: SpawnOptions, body: Body) -> Result<TaskId, SpawnError> {
        match self.syscall(SystemCall::Spawn(Box::new(SpawnRequest { body, options }))) {
            Resume::Spawned(r) => r,
            other => unexpected("Spawn", other),
        }
    }

    /// This task's id.
    pub fn tid(&mut self) -> TaskId {
        if let Some(t) = self.tid {
            return t;
        }
        match self.syscall(SystemCall::GetTid) {
            Resume::Tid(t) => {
                self.tid = Some(t);
                t
            }
            other => unexpected("GetTid", other),
        }
    }

    /// Runs `f` inside a new cancel scope (see [`crate::scope`]) and leaves
    /// the scope when `f` returns or unwinds. `f` receives the scope's
    /// reference, to cancel it ([`cancel_scope`](Self::cancel_scope)), move
    /// its deadline or shield it — or to hand to another task, which may
    /// cancel it through its own context.
    ///
    /// Returns `Some(value)` when `f` returned (even if the scope was
    /// cancelled meanwhile: `f` made no blocking call after), and `None`
    /// when a cancellation unwound `f` and this scope absorbed it — the
    /// scope was cancelled, and the code around it is not. A cancellation
    /// of an enclosing scope, or a panic, goes on unwinding.
    pub fn scope<R>(
        &mut self,
        options: ScopeOptions,
        f: impl FnOnce(&mut Self, ScopeRef) -> R,
    ) -> Option<R> {
        let task = self.tid();
        let scope = match self.syscall(SystemCall::Scope(ScopeCall::Enter(options))) {
            Resume::Scope(ScopeAnswer::Entered(id)) => id,
            other => unexpected("Scope(Enter)", other),
        };
        let ran = panic::catch_unwind(AssertUnwindSafe(|| f(self, ScopeRef { task, scope })));
        if let Err(payload) = &ran
            && payload.is::<generator::Error>()
        {
            // The coroutine itself is being torn down (dropped while
            // suspended, or its stack overflowed): no more system calls.
            let Err(payload) = ran else { unreachable!() };
            panic::resume_unwind(payload);
        }
        let absorbs = match self.syscall(SystemCall::Scope(ScopeCall::Exit(scope))) {
            Resume::Scope(ScopeAnswer::Exited { absorbs, .. }) => absorbs,
            other => unexpected("Scope(Exit)", other),
        };
        match ran {
            Ok(value) => Some(value),
            Err(payload) if absorbs && payload.is::<CancelUnwind>() => None,
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// Runs `f` in a scope cancelled `timeout` from now on the scheduler's
    /// clock (trio's `move_on_after`): `None` if the deadline cut it short.
    pub fn move_on_after<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut Self) -> R,
    ) -> Option<R> {
        let at = self.now().saturating_add(timeout);
        self.move_on_at(at, f)
    }

    /// Runs `f` in a scope cancelled at `deadline` on the scheduler's clock:
    /// `None` if the deadline cut it short.
    pub fn move_on_at<R>(
        &mut self,
        deadline: Duration,
        f: impl FnOnce(&mut Self) -> R,
    ) -> Option<R> {
        self.scope(ScopeOptions::new().deadline(deadline), |cx, _| f(cx))
    }

    /// Runs `f` in a shielded scope: cancellations of the scopes around it
    /// (the task's own cancellation included) do not reach it, so clean-up
    /// code may block. Only a shutdown's deadline breaks through (see
    /// [`crate::scope`]).
    pub fn shield<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        match self.scope(ScopeOptions::new().shielded(), |cx, _| f(cx)) {
            Some(value) => value,
            // Nothing else holds the shield's reference, so nothing cancels it.
            None => unreachable!("an unreachable shield absorbed a cancellation"),
        }
    }

    /// Cancels a scope (of this task or another of this scheduler); returns
    /// whether the scope was still open.
    pub fn cancel_scope(&mut self, scope: ScopeRef) -> bool {
        self.scope_call(ScopeCall::Cancel(scope)).is_some()
    }

    /// Sets or clears a scope's deadline (absolute, on the scheduler's
    /// clock; one already past cancels the scope at once); returns the
    /// scope's state, or `None` if it is not open.
    pub fn set_scope_deadline(
        &mut self,
        scope: ScopeRef,
        deadline: Option<Duration>,
    ) -> Option<ScopeStatus> {
        self.scope_call(ScopeCall::SetDeadline(scope, deadline))
    }

    /// Shields a scope or lifts its shield; returns the scope's state, or
    /// `None` if it is not open.
    pub fn set_scope_shield(&mut self, scope: ScopeRef, shield: bool) -> Option<ScopeStatus> {
        self.scope_call(ScopeCall::SetShield(scope, shield))
    }

    /// A scope's state, or `None` if it is not open.
    pub fn scope_status(&mut self, scope: ScopeRef) -> Option<ScopeStatus> {
        self.scope_call(ScopeCall::Status(scope))
    }

    /// The earliest deadline that applies to this task's code now (those of
    /// its scopes up to the innermost shield); `Some(ZERO)` while it is
    /// effectively cancelled.
    pub fn effective_deadline(&mut self) -> Option<Duration> {
        match self.syscall(SystemCall::Scope(ScopeCall::EffectiveDeadline)) {
            Resume::Scope(ScopeAnswer::Deadline(d)) => d,
            other => unexpected("Scope(EffectiveDeadline)", other),
        }
    }

    fn scope_call(&mut self, call: ScopeCall) -> Option<ScopeStatus> {
        match self.syscall(SystemCall::Scope(call)) {
            Resume::Scope(ScopeAnswer::Status(s)) => Some(s),
            Resume::Error(_) => None,
            other => unexpected("Scope", other),
        }
    }

    /// Records a message in the telemetry.
    pub fn log(&mut self, message: impl Into<String>) {
        self.syscall(SystemCall::Log(message.into()));
    }

    /// Waits at the back-pressure admission gate until intake is open.
    pub fn admit(&mut self) {
        self.syscall(SystemCall::Admit);
    }

    /// Shuts the scheduler down: other tasks may finish until `timeout`, the
    /// rest are cancelled, hooks run, then this task resumes with the result.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<ShutdownResult, SyscallError> {
        match self.syscall(SystemCall::Shutdown(timeout)) {
            Resume::Shutdown(r) => Ok(r),
            Resume::Error(e) => Err(e),
            other => unexpected("Shutdown", other),
        }
    }
}

#[cold]
fn unexpected(call: &str, answer: Resume) -> ! {
    panic!("scheduler answered {call} with {answer:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A native stack is the size asked for, rounded up to whole pages, and
    /// never below [`MIN_STACK_SIZE`]; the default is 32 KiB, the minimum
    /// 8 KiB, as documented.
    #[test]
    fn stacks_are_whole_pages_of_at_least_the_minimum() {
        assert_eq!(stack_words(DEFAULT_STACK_SIZE) * WORD, 32 * 1024);
        assert_eq!(stack_words(0) * WORD, 8 * 1024);
        assert_eq!(stack_words(MIN_STACK_SIZE) * WORD, 8 * 1024);
        assert_eq!(stack_words(8 * 1024 + 1) * WORD, 12 * 1024);
        assert_eq!(stack_words(64 * 1024) * WORD, 64 * 1024);
    }
}
