//! How a task on a Tiffany loop is woken in asyncio's order.
//!
//! In asyncio every step of a task is a callback in the loop's one FIFO
//! ready queue: its first step, the step after a bare `yield`
//! (`asyncio.sleep(0)`), the step after an awaited future completes (the
//! future schedules its done callbacks with `call_soon`, in the order they
//! were added). On a Tiffany loop every such wake goes through the same
//! FIFO (ADR 11): a task that waits for its next asyncio step blocks on a
//! kernel event (its *step event*, one per task), and a [`Waker`] — queued
//! in the FIFO for a first step or a bare `yield`, or added as the awaited
//! future's done callback — sets it when the engine reaches it. The engine
//! then hands the turn over at once (it yields to the kernel with the rest
//! of its iteration kept), so the task steps exactly where asyncio would
//! step it. Kernel-level wakes (`tiffany.sleep`, `join`, `Event`, kernel
//! I/O) stay the kernel's.
//!
//! A plain Tiffany task (`tiffany.spawn`) awaiting an asyncio future waits
//! the same way, on an event made for the wait.
//!
//! `Task.cancel()` of a task waiting for its step (or running, or queued)
//! is asyncio's `_must_cancel`: kept here ([`must_cancel`]) and thrown at
//! the task's next step; only a task blocked in a kernel-level wait gets
//! the kernel's edge (see [`super::task`]).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::{IntoPyObjectExt, intern};
use rustc_hash::{FxHashMap, FxHashSet};
use tiffany_scheduler::{EventId, Resume, SystemCall, TaskId};

/// A task's wait for its next asyncio step.
struct Wait {
    /// The awaited future (none for a first step or a bare `yield`).
    future: Option<Py<PyAny>>,
    waker: Py<Waker>,
    event: EventId,
    /// The event was made for this wait (a plain task's): removed after it.
    owned: bool,
}

thread_local! {
    /// Tasks of this thread waiting for an asyncio step.
    /// (Fx-hashed: SipHash's removal was a twentieth of a `sleep(0)` switch.)
    static WAITS: RefCell<FxHashMap<TaskId, Wait>> = RefCell::new(FxHashMap::default());
    /// `WAITS.len()`, read on every resume of every Python task (cheap).
    static WAITING: Cell<usize> = const { Cell::new(0) };
    /// A waker fired in the engine's current callback: the engine hands
    /// the turn over before its next one.
    static HANDOFF: Cell<bool> = const { Cell::new(false) };
    /// asyncio's `_must_cancel`: tasks to throw a `CancelledError` into at
    /// their next step.
    static MUST: RefCell<FxHashSet<TaskId>> = RefCell::new(FxHashSet::default());
    static MUSTS: Cell<usize> = const { Cell::new(0) };
}

/// Wakes one task for its next asyncio step (a FIFO entry, or an awaited
/// future's done callback): sets the task's step event, once.
#[pyclass(module = "tiffany._native", name = "_StepWaker", frozen)]
pub(crate) struct Waker {
    event: u64,
    armed: AtomicBool,
}

impl Waker {
    /// A waker for `event`, armed.
    fn armed(py: Python<'_>, event: EventId) -> PyResult<Py<Waker>> {
        Py::new(
            py,
            Waker {
                event: event.get(),
                armed: AtomicBool::new(true),
            },
        )
    }

    /// Sets the event if the wait it was made for is still on, and asks
    /// the engine to hand the turn over.
    #[inline]
    pub(crate) fn fire(&self) {
        if !self.armed.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Ok((kernel, _)) = crate::current::current_kernel()
            && kernel.set_event(EventId::from_raw(self.event))
        {
            HANDOFF.set(true);
        }
    }
}

#[pymethods]
impl Waker {
    #[pyo3(signature = (*_args))]
    fn __call__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.fire();
    }
}

/// Whether a waker fired since the last call (cleared by the reading).
#[inline]
pub(crate) fn take_handoff() -> bool {
    HANDOFF.replace(false)
}

fn note(task: TaskId, wait: Wait) {
    let previous = WAITS.with(|w| w.borrow_mut().insert(task, wait));
    match previous {
        None => WAITING.with(|n| n.set(n.get() + 1)),
        Some(old) => old.waker.get().armed.store(false, Ordering::Relaxed),
    }
}

/// Queues `task`'s next step at the back of loop `lp`'s FIFO (a first
/// step, or the step after a bare `yield`): the task then blocks on its
/// step event until the engine reaches the entry.
pub(crate) fn queue_step(
    py: Python<'_>,
    lp: &Bound<'_, PyAny>,
    task: TaskId,
    event: EventId,
) -> PyResult<SystemCall> {
    let waker = Waker::armed(py, event)?;
    super::core::LoopCore::push_step(lp, waker.clone_ref(py).into_any())?;
    note(
        task,
        Wait {
            future: None,
            waker,
            event,
            owned: false,
        },
    );
    Ok(SystemCall::EventWait(event))
}

/// If `yielded` is an asyncio future (or a future-like object), the system
/// call that waits for it; `None` for anything else. `step` is the task's
/// step event (an asyncio task's), else an event is made for the wait.
pub(crate) fn wait_future(
    py: Python<'_>,
    yielded: &Bound<'_, PyAny>,
    step: Option<EventId>,
) -> PyResult<Option<SystemCall>> {
    let Ok(blocking) = yielded.getattr(intern!(py, "_asyncio_future_blocking")) else {
        return Ok(None);
    };
    if !blocking.is_truthy()? {
        return Err(PyRuntimeError::new_err(format!(
            "yield was used instead of yield from in task with {}",
            yielded.repr()?
        )));
    }
    yielded.setattr(intern!(py, "_asyncio_future_blocking"), false)?;
    let (kernel, _) = crate::current::current_kernel()?;
    let Some(task) = kernel.current_task() else {
        return Err(PyRuntimeError::new_err(
            "an asyncio future can only be awaited from a task",
        ));
    };
    let (event, owned) = match step {
        Some(e) => (e, false),
        None => (kernel.new_event(), true),
    };
    let waker = Waker::armed(py, event)?;
    if let Err(e) = yielded.call_method1(
        intern!(py, "add_done_callback"),
        (waker.clone_ref(py).into_py_any(py)?,),
    ) {
        if owned {
            kernel.remove_event(event);
        }
        return Err(e);
    }
    note(
        task,
        Wait {
            future: Some(yielded.clone().unbind()),
            waker,
            event,
            owned,
        },
    );
    Ok(Some(SystemCall::EventWait(event)))
}

/// If `yielded` is a Tiffany asyncio task (`tiffany._task.Task`) of this
/// scheduler, the kernel join that waits for it: what a plain Tiffany task
/// awaiting one does (it has no place in asyncio's order to keep; an
/// asyncio task awaits it as a future, see [`wait_future`]).
pub(crate) fn join_task(
    py: Python<'_>,
    yielded: &Bound<'_, PyAny>,
    sched: u64,
) -> PyResult<Option<SystemCall>> {
    if !super::task::is_task(py, yielded) {
        return Ok(None);
    }
    let owner: u64 = yielded.getattr(intern!(py, "_tsched_id"))?.extract()?;
    if owner != sched {
        return Ok(None);
    }
    let target = TaskId::from_raw(super::task::kernel_id(yielded)?);
    yielded.setattr(intern!(py, "_asyncio_future_blocking"), false)?;
    Ok(Some(SystemCall::Join(target)))
}

/// The future (or task) the task `task` awaits, if any.
pub(crate) fn waiting_on(py: Python<'_>, task: TaskId) -> Option<Py<PyAny>> {
    WAITS.with(|w| {
        w.borrow()
            .get(&task)
            .and_then(|wait| wait.future.as_ref().map(|f| f.clone_ref(py)))
    })
}

/// Whether `task` waits for its step event (a FIFO entry or an awaited
/// future's callback will wake it).
pub(crate) fn waits_for_step(task: TaskId) -> bool {
    WAITING.with(Cell::get) > 0 && WAITS.with(|w| w.borrow().contains_key(&task))
}

/// Called when a Python task is resumed: ends its wait, if any (cancelling
/// the awaited future if the task was cancelled).
pub(crate) fn resumed(py: Python<'_>, answer: Option<&Resume>) {
    if WAITING.with(Cell::get) == 0 {
        return;
    }
    let Ok((kernel, _)) = crate::current::current_kernel() else {
        return;
    };
    let Some(task) = kernel.current_task() else {
        return;
    };
    let Some(wait) = WAITS.with(|w| w.borrow_mut().remove(&task)) else {
        return;
    };
    WAITING.with(|n| n.set(n.get().saturating_sub(1)));
    wait.waker.get().armed.store(false, Ordering::Relaxed);
    if wait.owned {
        kernel.remove_event(wait.event);
    } else {
        kernel.clear_event(wait.event);
    }
    if let Some(future) = wait.future
        && matches!(answer, Some(Resume::Cancelled))
        && let Err(e) = future.bind(py).call_method0(intern!(py, "cancel"))
    {
        crate::errors::log_callback_error(py, "cancelling an awaited asyncio future", e);
    }
}

/// Forgets `task`'s wait (the task is gone).
pub(crate) fn forget(task: TaskId) {
    if let Some(wait) = WAITS.with(|w| w.borrow_mut().remove(&task)) {
        WAITING.with(|n| n.set(n.get().saturating_sub(1)));
        wait.waker.get().armed.store(false, Ordering::Relaxed);
    }
    take_must(task);
}

/// Marks `task` to be thrown a `CancelledError` at its next step.
pub(crate) fn must_cancel(task: TaskId) {
    if MUST.with(|m| m.borrow_mut().insert(task)) {
        MUSTS.with(|n| n.set(n.get() + 1));
    }
}

/// Whether `task` is marked (see [`must_cancel`]).
pub(crate) fn must_pending(task: TaskId) -> bool {
    MUSTS.with(Cell::get) > 0 && MUST.with(|m| m.borrow().contains(&task))
}

/// Takes `task`'s mark (see [`must_cancel`]); whether it had one.
#[inline]
pub(crate) fn take_must(task: TaskId) -> bool {
    if MUSTS.with(Cell::get) == 0 {
        return false;
    }
    let had = MUST.with(|m| m.borrow_mut().remove(&task));
    if had {
        MUSTS.with(|n| n.set(n.get().saturating_sub(1)));
    }
    had
}
