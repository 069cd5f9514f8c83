//! Task bodies: what the scheduler resumes.
//!
//! The scheduler does not care what a task is made of, only that it can be
//! resumed with a value and answers with a system call, a result or a failure.
//! That contract is [`TaskBody`]. Native Rust closures on stackful coroutines
//! implement it in this crate ([`Body::native`]); the Python bindings implement
//! it for coroutines, in their own crate, without touching the scheduler.

use crate::error::SpawnError;
use crate::native::{NativeBody, TaskContext};
use crate::outcome::{TaskError, Value};
use crate::scheduler::Scheduler;
use crate::syscall::{Resume, SystemCall};

/// What a body answers when resumed.
pub enum Step {
    /// It made a system call and is suspended until the answer.
    Syscall(SystemCall),
    /// It finished with this value.
    Done(Value),
    /// It failed (a panic or an exception).
    Failed(TaskError),
    /// It unwound after being cancelled.
    Cancelled,
}

/// Anything the scheduler can run as a task.
///
/// The scheduler calls [`resume`](TaskBody::resume) on its own thread, one body
/// at a time. The first call gets `None`; later calls get the answer to the
/// system call the body made. After the body answered `Done`, `Failed` or
/// `Cancelled` it is dropped and never resumed again. A body that is cancelled
/// before it ever ran is dropped without being resumed.
pub trait TaskBody: Send {
    /// Runs the body until its next system call or its end.
    fn resume(&mut self, input: Option<Resume>) -> Step;
}

/// A native task: the one place its bound is written.
///
/// A closure `FnOnce(&mut TaskContext) -> R` that is `Send` and `'static`
/// (it may move to another shard's thread before it starts). Every spawn
/// function takes one (`spawn(f)`, `spawn_with(options, f)`); the closure's
/// argument type is inferred through this trait, so `|cx| cx.yield_now()`
/// needs no annotation.
pub trait NativeTask<R: TaskResult>: FnOnce(&mut TaskContext<'_>) -> R + Send + 'static {}

impl<F, R> NativeTask<R> for F
where
    F: FnOnce(&mut TaskContext<'_>) -> R + Send + 'static,
    R: TaskResult,
{
}

/// What a native task may return: `Send + Sync + 'static`, since joiners on
/// any thread read it.
pub trait TaskResult: Send + Sync + 'static {}

impl<R: Send + Sync + 'static> TaskResult for R {}

/// A task body ready to be spawned: native or custom.
pub struct Body(pub(crate) BodyKind);

pub(crate) enum BodyKind {
    Native(NativeBody),
    Custom(Box<dyn TaskBody>),
}

impl Body {
    /// A native task: `f` runs on a stackful coroutine with the default
    /// stack size.
    pub fn native<R: TaskResult>(f: impl NativeTask<R>) -> Result<Body, SpawnError> {
        Self::native_with_stack(crate::native::DEFAULT_STACK_SIZE, f)
    }

    /// A native task with a stack of `stack_size` bytes (rounded up to whole
    /// pages; at least 4 KiB).
    pub fn native_with_stack<R: TaskResult>(
        stack_size: usize,
        f: impl NativeTask<R>,
    ) -> Result<Body, SpawnError> {
        NativeBody::new(stack_size, f).map(|b| Body(BodyKind::Native(b)))
    }

    /// A body of another kind (a Python coroutine, a state machine, ...).
    pub fn custom(body: Box<dyn TaskBody>) -> Body {
        Body(BodyKind::Custom(body))
    }

    /// Whether the body runs on a stack of its own (a native task's
    /// coroutine): such a body is never stepped inside another task's turn
    /// ([`Scheduler::step_now`]), and no task is stepped inside its turn.
    #[inline]
    pub(crate) fn is_stackful(&self) -> bool {
        matches!(self.0, BodyKind::Native(_))
    }

    /// Hints that the body will be resumed soon (a custom body's state is
    /// behind a pointer the record holds).
    #[inline]
    pub(crate) fn prefetch(&self) {
        if let BodyKind::Custom(c) = &self.0 {
            crate::table::prefetch((&**c as *const dyn TaskBody).cast());
        }
    }

    /// Resumes the body. `in_place` is the scheduler a native task may ask
    /// to yield in place during this resume, if it may (see
    /// [`TaskContext::yield_now`]).
    #[inline]
    pub(crate) fn resume(&mut self, input: Option<Resume>, in_place: Option<&Scheduler>) -> Step {
        match &mut self.0 {
            BodyKind::Native(n) => n.resume(input, in_place),
            BodyKind::Custom(c) => c.resume(input),
        }
    }
}
