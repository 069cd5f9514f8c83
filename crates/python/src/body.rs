//! The driver: a Python coroutine (or generator) as a kernel task body.
//!
//! The scheduler resumes a [`PyBody`] with the answer to its last system call.
//! The body converts the answer to a Python value (or an exception to throw),
//! resumes the coroutine with `PyIter_Send` — no Python frame between the kernel
//! and the task — and turns what the coroutine yields into the next
//! [`SystemCall`]. A generator that yields another generator calls it as a
//! subroutine (trampolining, as in pyos): the body keeps a stack of them and
//! passes return values and exceptions between them.

use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;
use smallvec::{SmallVec, smallvec};
use tiffany_scheduler::{
    Interest, IoReady, JoinResult, Resume, Step, SystemCall, TaskBody, TaskError, TaskId, Value,
};

use crate::aio::task::{AioTask, End};
use crate::convert::value_to_py;
use crate::errors::{Cancelled, JoinTimeout, TaskCancelled, task_error};
use crate::sockets::{Attempt, SockOp};
use crate::syscall::Kind;

/// A Python task's coroutine stack.
pub(crate) struct PyBody {
    /// The root coroutine or generator, then the generators it called.
    /// Inline while only the root is on it (almost always), so a task costs
    /// no second allocation.
    stack: SmallVec<[Held; 1]>,
    /// The scheduler this task belongs to (joins of other schedulers' tasks are refused).
    /// (32 bits keep the body within 64 bytes: no thread makes 4 billion
    /// schedulers.)
    sched: u32,
    /// A descriptor registered for the current I/O wait, released on resume.
    held_fd: HeldFd,
    /// The object the current wait is about (an `Event`), kept alive until
    /// the task resumes.
    kept: Option<Py<PyAny>>,
    /// The socket operation the task waits to retry, if any (boxed: most
    /// tasks never have one, and every task pays for the field).
    pending: Option<Box<SockOp>>,
    /// The asyncio side of a task made through asyncio (`loop.create_task`).
    aio: Option<Box<AioTask>>,
}

impl PyBody {
    pub(crate) fn new(py: Python<'_>, coro: Py<PyAny>, sched: u64) -> Self {
        let generator = is_generator(py, coro.bind(py));
        PyBody {
            stack: smallvec![Held::hidden(py, coro, generator)],
            sched: u32::try_from(sched).unwrap_or(u32::MAX),
            held_fd: HeldFd::NONE,
            kept: None,
            pending: None,
            aio: None,
        }
    }

    /// The body of a task made through asyncio: its steps run in the task's
    /// context, as asyncio's current task, and its end completes the task's
    /// future (see [`crate::aio::task`]).
    pub(crate) fn new_aio(py: Python<'_>, coro: Py<PyAny>, sched: u64, aio: Box<AioTask>) -> Self {
        let mut body = PyBody::new(py, coro, sched);
        body.aio = Some(aio);
        body
    }
}

/// A descriptor registered for the current I/O wait (`-1`: none): an
/// `Option<i32>` would take 8 bytes of every task.
#[derive(Clone, Copy)]
struct HeldFd(i32);

impl HeldFd {
    const NONE: HeldFd = HeldFd(-1);

    fn take(&mut self) -> Option<i32> {
        let fd = std::mem::replace(self, HeldFd::NONE).0;
        (fd >= 0).then_some(fd)
    }
}

/// A coroutine (or generator) on a task's stack.
///
/// While the kernel holds a task's coroutine, the coroutine is alive whatever
/// else refers to it, so the cyclic garbage collector cannot learn anything
/// from scanning it; yet with many live tasks, scanning them was most of the
/// cost of spawning (every full collection walked every coroutine). So a
/// task's root coroutine is untracked by the collector while the kernel holds
/// it: what it refers to counts as referenced from outside, which it is. It is
/// tracked again before the kernel lets go of it, so a cycle through it is
/// collected as usual once the task has ended.
pub(crate) struct Held {
    obj: Py<PyAny>,
    /// Untracked by us: track it again before letting go.
    hidden: bool,
    /// A (pyos-style) generator rather than a coroutine.
    generator: bool,
}

impl Held {
    /// Holds a nested generator as it is.
    fn nested_generator(obj: Py<PyAny>) -> Self {
        Held {
            obj,
            hidden: false,
            generator: true,
        }
    }

    /// Holds a task's root object, untracked if it is a plain coroutine or
    /// generator (`exact`: its type is known to be one of them).
    fn hidden(py: Python<'_>, obj: Py<PyAny>, generator: bool) -> Self {
        let ptr = obj.as_ptr();
        let exact = generator || is_coroutine(py, obj.bind(py));
        // SAFETY: the GIL is held and `ptr` is a live object; a coroutine or
        // generator is a garbage-collected type, tracked from its creation.
        let hidden = exact && unsafe { ffi::PyObject_GC_IsTracked(ptr) } == 1;
        if hidden {
            // SAFETY: as above; it is tracked, so untracking is allowed.
            unsafe { ffi::PyObject_GC_UnTrack(ptr.cast()) };
        }
        Held {
            obj,
            hidden,
            generator,
        }
    }
}

impl std::ops::Deref for Held {
    type Target = Py<PyAny>;

    fn deref(&self) -> &Py<PyAny> {
        &self.obj
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.hidden {
            return;
        }
        let ptr = self.obj.as_ptr();
        Python::attach(|_| {
            // SAFETY: the GIL is held and our reference keeps the object
            // alive; it must be tracked again before its last reference goes
            // (its deallocator untracks it unconditionally).
            unsafe {
                if ffi::PyObject_GC_IsTracked(ptr) == 0 {
                    ffi::PyObject_GC_Track(ptr.cast());
                }
            }
        });
    }
}

/// What to resume the top of the stack with.
enum Input {
    /// The first resume of a coroutine or generator: send `None`.
    Start,
    Send(Py<PyAny>),
    Throw(PyErr),
}

/// What a yielded object comes to.
enum Translated {
    /// A system call for the kernel.
    Call(SystemCall),
    /// An answer the driver has at once (a socket operation that did not
    /// block): resume the coroutine with it without a trip through the kernel.
    Now(Input),
}

/// How one resume of one coroutine ended.
enum Outcome {
    Yielded(Py<PyAny>),
    Returned(Py<PyAny>),
    Raised(PyErr),
}

// Inlined into both copies of `PyBody::step_inner` (each step calls it).
#[inline(always)]
fn resume_one(py: Python<'_>, coro: &Py<PyAny>, generator: bool, input: Input) -> Outcome {
    let input = match input {
        Input::Start => Input::Send(py.None()),
        Input::Send(value) if !generator && value.is_none(py) => {
            // A coroutine's await of a Syscall returns what is sent; `None`
            // there means "start", so "no value" travels as the unit sentinel.
            // A generator task receives the value itself.
            // SAFETY: the sentinel lives for the whole process.
            Input::Send(unsafe { Bound::from_borrowed_ptr(py, crate::syscall::unit()) }.unbind())
        }
        other => other,
    };
    match input {
        Input::Start => unreachable!("mapped above"),
        Input::Send(value) => {
            let mut result: *mut ffi::PyObject = std::ptr::null_mut();
            // SAFETY: both pointers are valid objects for the duration of the
            // call; PyIter_Send returns a new reference in `result` (or NULL
            // with an exception set).
            let status = unsafe { ffi::PyIter_Send(coro.as_ptr(), value.as_ptr(), &mut result) };
            match status {
                ffi::PySendResult::PYGEN_NEXT => {
                    // SAFETY: a new, non-null reference.
                    Outcome::Yielded(unsafe { Bound::from_owned_ptr(py, result) }.unbind())
                }
                ffi::PySendResult::PYGEN_RETURN => {
                    Outcome::Returned(unsafe { Bound::from_owned_ptr(py, result) }.unbind())
                }
                _ => Outcome::Raised(PyErr::take(py).unwrap_or_else(|| {
                    PyRuntimeError::new_err("task raised without an exception set")
                })),
            }
        }
        Input::Throw(err) => {
            let exc = err.into_value(py);
            match coro.bind(py).call_method1("throw", (exc,)) {
                Ok(v) => Outcome::Yielded(v.unbind()),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                    let value = e
                        .value(py)
                        .getattr("value")
                        .map(Bound::unbind)
                        .unwrap_or_else(|_| py.None());
                    Outcome::Returned(value)
                }
                Err(e) => Outcome::Raised(e),
            }
        }
    }
}

impl PyBody {
    #[inline(always)]
    fn input(&self, py: Python<'_>, answer: Option<Resume>) -> Input {
        let Some(answer) = answer else {
            return Input::Start;
        };
        match answer {
            Resume::Unit => Input::Send(py.None()),
            Resume::Tid(t) => Input::Send(int(py, t.get())),
            Resume::Time(t) => Input::Send(float(py, t.as_secs_f64())),
            Resume::Bool(b) => Input::Send(
                pyo3::types::PyBool::new(py, b)
                    .to_owned()
                    .into_any()
                    .unbind(),
            ),
            Resume::Spawned(Ok(t)) => Input::Send(int(py, t.get())),
            Resume::Spawned(Err(e)) => Input::Throw(crate::errors::spawn_error(py, &e)),
            Resume::Joined(JoinResult::Success(v)) => Input::Send(value_to_py(py, &v)),
            Resume::Joined(JoinResult::Failed(e)) => Input::Throw(task_error(py, &e)),
            Resume::Joined(JoinResult::Cancelled) => {
                Input::Throw(TaskCancelled::new_err("the joined task was cancelled"))
            }
            Resume::Joined(JoinResult::Timeout) => {
                Input::Throw(JoinTimeout::new_err("join timed out; the task goes on"))
            }
            Resume::Io(IoReady::Ready) => Input::Send(py.None()),
            Resume::Io(IoReady::Timeout) => {
                Input::Throw(PyTimeoutError::new_err("I/O wait timed out"))
            }
            Resume::Shutdown(r) => Input::Send(PyString::new(py, r.name()).into_any().unbind()),
            Resume::Cancelled => Input::Throw(Cancelled::new_err("task cancelled")),
            Resume::Error(e) => Input::Throw(PyRuntimeError::new_err(e.to_string())),
            // A Python body never makes a scope call through a step (it
            // calls the scheduler directly: `crate::scope`).
            Resume::Scope(a) => Input::Throw(PyRuntimeError::new_err(format!(
                "unexpected scope answer {a:?}"
            ))),
        }
    }

    /// Turns a yielded object into a system call, or an error to throw back.
    #[inline(always)]
    fn translate(
        &mut self,
        py: Python<'_>,
        yielded: &Bound<'_, PyAny>,
        aio: Option<&AioStep<'_>>,
    ) -> Result<Translated, PyErr> {
        let Some(kind) = crate::syscall::kind_of(yielded) else {
            if let Some(aio) = aio {
                return translate_aio(py, yielded, aio).map(Translated::Call);
            }
            if yielded.is_none() {
                // asyncio's bare `yield` (`asyncio.sleep(0)`) in a Tiffany
                // task: a kernel yield.
                return Ok(Translated::Call(SystemCall::Yield));
            }
            if let Some(call) = crate::aio::future::join_task(py, yielded, u64::from(self.sched))? {
                // Kept: the join's answer is not the await's; the awaited
                // task's future gives it when the coroutine resumes.
                self.kept = Some(yielded.clone().unbind());
                return Ok(Translated::Call(call));
            }
            if let Some(call) = crate::aio::future::wait_future(py, yielded, None, None)? {
                return Ok(Translated::Call(call));
            }
            return Err(PyTypeError::new_err(format!(
                "a tiffany task can only await tiffany's awaitables (sleep, join, tasks, ...); \
                 it yielded {}",
                yielded
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|_| "an object".into())
            )));
        };
        Ok(Translated::Call(match kind {
            Kind::Yield => SystemCall::Yield,
            Kind::Sleep(s) => SystemCall::Sleep(crate::syscall::seconds(s)),
            Kind::Join {
                target,
                sched,
                timeout,
            } => {
                if sched != u64::from(self.sched) {
                    return Err(PyRuntimeError::new_err(
                        "cannot join a task of another scheduler",
                    ));
                }
                let target = TaskId::from_raw(target);
                match timeout {
                    None => SystemCall::Join(target),
                    Some(t) => SystemCall::JoinTimeout {
                        target,
                        dur: crate::syscall::seconds(t),
                    },
                }
            }
            Kind::GetTid => SystemCall::GetTid,
            Kind::Admit => SystemCall::Admit,
            Kind::Shutdown(t) => SystemCall::Shutdown(crate::syscall::seconds(t)),
            Kind::Io {
                fd,
                writable,
                timeout,
            } => {
                let token = crate::io_registry::io_acquire(py, fd, None)?;
                self.held_fd = HeldFd(fd);
                SystemCall::IoWait {
                    token,
                    interest: if writable {
                        Interest::Writable
                    } else {
                        Interest::Readable
                    },
                    timeout: timeout.map(crate::syscall::seconds),
                    after_would_block: false,
                }
            }
            Kind::Channel { token } => SystemCall::IoWait {
                token: crate::current::channel_token(token)?,
                interest: Interest::Readable,
                timeout: None,
                after_would_block: false,
            },
            Kind::EventWait { event, sched } => {
                if sched != u64::from(self.sched) {
                    return Err(PyRuntimeError::new_err(
                        "this Event belongs to another scheduler",
                    ));
                }
                self.kept = crate::syscall::operands_of(yielded).0.map(Bound::unbind);
                SystemCall::EventWait(tiffany_scheduler::EventId::from_raw(event))
            }
            Kind::Sock(op) => {
                let (sock, data) = crate::syscall::operands_of(yielded);
                return self.sock_attempt(py, Box::new(SockOp::new(op, sock, data)?));
            }
        }))
    }

    /// Tries a socket operation: its result at once, or a wait for readiness
    /// (the operation is kept and retried when the task is woken).
    fn sock_attempt(&mut self, py: Python<'_>, mut op: Box<SockOp>) -> Result<Translated, PyErr> {
        match op.attempt(py)? {
            Attempt::Done(value) => Ok(Translated::Now(Input::Send(value))),
            Attempt::Wait { fd, writable } => {
                let token = crate::io_registry::io_acquire(py, fd, Some(op.sock().bind(py)))?;
                self.held_fd = HeldFd(fd);
                self.pending = Some(op);
                Ok(Translated::Call(SystemCall::IoWait {
                    token,
                    interest: if writable {
                        Interest::Writable
                    } else {
                        Interest::Readable
                    },
                    timeout: None,
                    after_would_block: true,
                }))
            }
        }
    }

    fn step(&mut self, py: Python<'_>, answer: Option<Resume>) -> Step {
        let Some(mut aio) = self.aio.take() else {
            return match self.step_inner::<false>(py, answer, None, None) {
                Ok(step) => step,
                Err(end) => plain_end(py, end),
            };
        };
        crate::aio::task::enter(py, &aio);
        let (kernel, id) = match crate::current::current_kernel() {
            Ok((kernel, _)) => {
                let id = kernel.current_task();
                (Some(kernel), id)
            }
            Err(_) => (None, None),
        };
        // Whichever way it was woken, its wait for a FIFO step is over.
        if let Some(waker) = aio.yield_waker.take() {
            crate::aio::future::end_step_wait(kernel.as_ref(), waker.get());
            crate::aio::future::take_handed(&waker);
            aio.spare_waker.set(Some(waker));
        }
        let cancelled = matches!(answer, Some(Resume::Cancelled));
        let edge = cancelled
            && kernel
                .as_ref()
                .zip(id)
                .is_some_and(|(k, id)| k.take_edge(id));
        // asyncio's `_must_cancel` (a scope's `Cancelled` goes first; the
        // kernel's edge is the same request).
        let must = (edge || !cancelled) && id.is_some_and(crate::aio::future::take_must);
        let first = if edge || must {
            Some(Input::Throw(crate::aio::task::edge_error(py, &aio)))
        } else if !aio.started {
            Some(Input::Start)
        } else {
            None
        };
        aio.started = true;
        let ctx = kernel.as_ref().zip(id).map(|(kernel, id)| AioStep {
            aio: &aio,
            kernel,
            id,
        });
        let step = match self.step_inner::<true>(py, answer, first, ctx.as_ref()) {
            Ok(Step::Syscall(call)) => {
                // Marked while it ran, and now blocking in a kernel-level
                // wait: the kernel's edge wakes it from there.
                if let (Some(k), Some(id)) = (&kernel, id)
                    && !matches!(&call, SystemCall::EventWait(e) if *e == aio.step_event)
                    && crate::aio::future::take_must(id)
                {
                    k.cancel_edge(id);
                }
                Step::Syscall(call)
            }
            Ok(step) => step,
            Err(end) => crate::aio::task::finish(py, &aio, end),
        };
        crate::aio::task::leave(py, &aio);
        self.aio = Some(aio);
        step
    }

    /// Runs the coroutine stack to its next system call; `Err` when the
    /// root coroutine ended. `first` replaces the input the answer would give.
    /// `AIO`: an asyncio task's step (`aio` given); a plain task's step is
    /// its own copy, with the asyncio branches folded away and inlined into
    /// [`step`](PyBody::step) as it was before asyncio tasks existed.
    fn step_inner<const AIO: bool>(
        &mut self,
        py: Python<'_>,
        answer: Option<Resume>,
        first: Option<Input>,
        aio: Option<&AioStep<'_>>,
    ) -> Result<Step, End> {
        let aio = if AIO { aio } else { None };
        let spare = crate::aio::future::resumed(py, answer.as_ref(), aio.map(|a| (a.kernel, a.id)));
        if let (Some(a), Some(w)) = (aio, spare) {
            a.aio.spare_waker.set(Some(w));
        }
        if let Some(fd) = self.held_fd.take() {
            crate::io_registry::io_release(fd);
        }
        let joined_future = self.kept.take().is_some() && matches!(answer, Some(Resume::Joined(_)));
        let mut input = match self.pending.take() {
            _ if first.is_some() => first.unwrap_or(Input::Start),
            // An asyncio task awaited through a kernel join: resume the
            // `await`, which reads the task's own outcome.
            _ if joined_future => Input::Send(py.None()),
            // Woken for a socket operation: retry it. Any other answer
            // (cancellation) drops the operation and goes to the coroutine.
            Some(op) if matches!(answer, Some(Resume::Io(IoReady::Ready))) => {
                match self.sock_attempt(py, op) {
                    Ok(Translated::Call(call)) => return Ok(Step::Syscall(call)),
                    Ok(Translated::Now(input)) => input,
                    Err(e) => Input::Throw(e),
                }
            }
            _ => self.input(py, answer),
        };
        loop {
            let Some(top) = self.stack.last() else {
                return Ok(Step::Failed(TaskError::new(
                    "python task resumed after it ended",
                )));
            };
            match resume_one(py, top, top.generator, input) {
                Outcome::Yielded(obj) => {
                    let bound = obj.bind(py);
                    if is_generator(py, bound) {
                        // Trampolining: call the generator as a subroutine.
                        self.stack.push(Held::nested_generator(obj));
                        input = Input::Start;
                        continue;
                    }
                    match self.translate(py, bound, aio) {
                        Ok(Translated::Call(call)) => return Ok(Step::Syscall(call)),
                        Ok(Translated::Now(now)) => input = now,
                        Err(e) => input = Input::Throw(e),
                    }
                }
                Outcome::Returned(value) => {
                    self.stack.pop();
                    if self.stack.is_empty() {
                        return Err(End::Returned(value));
                    }
                    input = Input::Send(value);
                }
                Outcome::Raised(err) => {
                    self.stack.pop();
                    if self.stack.is_empty() {
                        return Err(End::Raised(err));
                    }
                    input = Input::Throw(err);
                }
            }
        }
    }
}

/// What a yielded object comes to in a task made through asyncio: a bare
/// `yield` queues its next step at the back of the loop's FIFO; a future
/// is awaited through its done callback (its wake is then a FIFO entry
/// too, in the order of the future's callbacks).
fn translate_aio(
    py: Python<'_>,
    yielded: &Bound<'_, PyAny>,
    step: &AioStep<'_>,
) -> Result<SystemCall, PyErr> {
    let (aio, id) = (step.aio, step.id);
    if yielded.is_none() {
        if aio.by_kernel {
            return Ok(SystemCall::Yield);
        }
        let waker = crate::aio::future::queue_step(
            py,
            aio.lp.bind(py),
            id,
            aio.step_event,
            aio.spare_waker.take(),
        )?;
        aio.yield_waker.set(Some(waker));
        return Ok(SystemCall::EventWait(aio.step_event));
    }
    match crate::aio::future::wait_future(
        py,
        yielded,
        Some((aio.step_event, step.kernel, id)),
        aio.spare_waker.take(),
    )? {
        Some(call) => {
            if crate::aio::future::must_pending(id) {
                // Cancelled while running: the future it now awaits is
                // cancelled instead (asyncio's `__step`).
                let msg = aio
                    .task
                    .bind(py)
                    .getattr(intern!(py, "_cmsg"))
                    .unwrap_or_else(|_| py.None().into_bound(py));
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item(intern!(py, "msg"), msg)?;
                if yielded
                    .call_method(intern!(py, "cancel"), (), Some(&kwargs))?
                    .is_truthy()?
                {
                    crate::aio::future::take_must(id);
                }
            }
            Ok(call)
        }
        None => Err(PyRuntimeError::new_err(format!(
            "Task got bad yield: {}",
            yielded
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "an object".into())
        ))),
    }
}

/// The asyncio side of a step: the task's [`AioTask`], and the running
/// scheduler and the task's id, looked up once per step (a thread-local
/// lookup each time was a twentieth of an `asyncio.sleep(0)` switch).
pub(crate) struct AioStep<'a> {
    aio: &'a AioTask,
    kernel: &'a tiffany_scheduler::Scheduler,
    id: TaskId,
}

/// How a plain (Tiffany) task's end answers the kernel.
fn plain_end(py: Python<'_>, end: End) -> Step {
    match end {
        // `None`, the usual result, is the unit value: no allocation.
        End::Returned(value) => Step::Done(if value.is_none(py) {
            Value::unit()
        } else {
            Value::new(value)
        }),
        // Any `CancelledError` ends the task as cancelled (as an asyncio
        // task): tiffany's `Cancelled` is one.
        End::Raised(err) if err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) => {
            Step::Cancelled
        }
        End::Raised(err) => {
            if err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
                || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
            {
                // As in asyncio: these end the whole run, not just the
                // task. The scheduler shuts down (every task sees
                // `Cancelled`) and run() re-raises it.
                crate::current::interrupt_with(err.clone_ref(py));
            }
            let message = err.to_string();
            // The task's name goes with its failure, for the report of a
            // failure nobody waited for.
            let task_name = crate::current::current()
                .ok()
                .and_then(|c| c.kernel.info(c.kernel.current_task()?))
                .and_then(|i| i.name);
            let failure = crate::errors::Failure {
                exception: err.into_value(py).into_any(),
                task_name,
                asyncio: false,
            };
            Step::Failed(TaskError::with_payload(message, Value::new(failure)))
        }
    }
}

impl TaskBody for PyBody {
    fn resume(&mut self, input: Option<Resume>) -> Step {
        // A Python task is only resumed by a scheduler run that Python
        // started (`Scheduler.run`, `Scheduler.shutdown`, `tiffany.run`) on
        // this thread, which holds the GIL throughout except while it waits
        // in its poller (and then it resumes nothing). So the GIL is held
        // here, and `Python::attach`'s thread-local bookkeeping on every step
        // can be skipped.
        // SAFETY: the GIL is held by this thread (see above).
        let py = unsafe { Python::assume_attached() };
        self.step(py, input)
    }
}

impl Drop for PyBody {
    fn drop(&mut self) {
        if let Some(fd) = self.held_fd.take() {
            crate::io_registry::io_release(fd);
        }
        if let Some(aio) = self.aio.take() {
            Python::attach(|py| crate::aio::task::dropped(py, &aio, !self.stack.is_empty()));
        }
        if self.stack.is_empty() {
            return;
        }
        // Close the coroutines (innermost first) so an unfinished one runs its
        // `finally` blocks and an unstarted one does not warn "never awaited".
        Python::attach(|py| {
            for coro in self.stack.drain(..).rev() {
                if let Err(e) = coro.bind(py).call_method0("close") {
                    e.write_unraisable(py, Some(coro.bind(py)));
                }
            }
        });
    }
}

fn int(py: Python<'_>, v: u64) -> Py<PyAny> {
    v.into_pyobject(py)
        .map(|o| o.into_any().unbind())
        .unwrap_or_else(|_| py.None())
}

fn float(py: Python<'_>, v: f64) -> Py<PyAny> {
    pyo3::types::PyFloat::new(py, v).into_any().unbind()
}

/// Whether `obj` is exactly a coroutine or a generator (not a subclass or
/// another implementation of the protocols).
pub(crate) fn is_exact_task_type(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
    is_coroutine(py, obj) || is_generator(py, obj)
}

fn is_coroutine(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
    static CORO_TYPE: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> =
        pyo3::sync::PyOnceLock::new();
    is_type(py, obj, &CORO_TYPE, "CoroutineType")
}

fn is_generator(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
    static GEN_TYPE: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> =
        pyo3::sync::PyOnceLock::new();
    is_type(py, obj, &GEN_TYPE, "GeneratorType")
}

/// Whether `obj`'s type is exactly `types.<name>` (looked up once, in `cell`).
fn is_type(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    cell: &'static pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>>,
    name: &str,
) -> bool {
    let ty = cell.get_or_init(py, || {
        py.import("types")
            .and_then(|m| m.getattr(name))
            .and_then(|t| t.cast_into::<pyo3::types::PyType>().map_err(Into::into))
            .map(Bound::unbind)
            .unwrap_or_else(|e| panic!("types.{name}: {e}"))
    });
    obj.get_type().is(ty.bind(py))
}

#[cfg(test)]
mod tests {
    /// Every task pays for a `PyBody`: keep it small (it was 112 bytes with
    /// an inline socket operation).
    #[test]
    fn a_python_task_body_stays_small() {
        let size = std::mem::size_of::<super::PyBody>();
        assert!(size <= 64, "{size} bytes");
    }
}
