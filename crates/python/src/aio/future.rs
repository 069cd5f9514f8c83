//! A Tiffany task awaiting an asyncio future.
//!
//! `await fut` in a coroutine yields the future itself (with
//! `fut._asyncio_future_blocking` set). When a Tiffany task yields one, the
//! driver ([`crate::body`]) asks [`wait_future`] for a system call: a kernel
//! event made for this wait, set by a done callback on the future, and the
//! task waits on it (`EventWait`). When the task is resumed, [`resumed`]
//! removes the event; if the task was cancelled meanwhile, the future is
//! cancelled too (as an asyncio task cancels what it awaits). The future
//! completes on the loop's engine task, on the same scheduler.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::{IntoPyObjectExt, intern};
use tiffany_scheduler::{EventId, Resume, SystemCall, TaskId};

/// A wait on an asyncio future: the future, and the event made for it.
type Wait = (Py<PyAny>, Option<EventId>);

thread_local! {
    /// Tasks of this thread waiting on an asyncio future: the future and the
    /// event made for the wait (none when the future is a Tiffany asyncio
    /// task, joined through the kernel).
    static WAITS: RefCell<HashMap<TaskId, Wait>> = RefCell::new(HashMap::new());
    /// `WAITS.len()`, read on every resume of every Python task (cheap).
    static WAITING: Cell<usize> = const { Cell::new(0) };
}

/// The done callback: sets the wait's event.
#[pyclass(module = "tiffany._native", name = "_FutureWaker", frozen)]
struct Waker {
    event: u64,
}

#[pymethods]
impl Waker {
    fn __call__(&self, _future: &Bound<'_, PyAny>) {
        if let Ok((kernel, _)) = crate::current::current_kernel() {
            kernel.set_event(EventId::from_raw(self.event));
        }
    }
}

/// If `yielded` is an asyncio future (or a future-like object), the system
/// call that waits for it; `None` for anything else.
pub(crate) fn wait_future(
    py: Python<'_>,
    yielded: &Bound<'_, PyAny>,
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
    let event = kernel.new_event();
    let waker = Waker { event: event.get() }.into_py_any(py)?;
    if let Err(e) = yielded.call_method1(intern!(py, "add_done_callback"), (waker,)) {
        kernel.remove_event(event);
        return Err(e);
    }
    note(task, yielded.clone().unbind(), Some(event));
    Ok(Some(SystemCall::EventWait(event)))
}

/// Records that `task` waits for `future` (for `Task._fut_waiter`, and so
/// that a cancelled wait cancels the future).
fn note(task: TaskId, future: Py<PyAny>, event: Option<EventId>) {
    let previous = WAITS.with(|w| w.borrow_mut().insert(task, (future, event)));
    if previous.is_none() {
        WAITING.with(|n| n.set(n.get() + 1));
    }
}

/// If `yielded` is a Tiffany asyncio task (`tiffany._task.Task`) of this
/// scheduler, the kernel join that waits for it: no event, no callback.
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
    let (kernel, _) = crate::current::current_kernel()?;
    let Some(task) = kernel.current_task() else {
        return Ok(None);
    };
    note(task, yielded.clone().unbind(), None);
    Ok(Some(SystemCall::Join(target)))
}

/// The future (or task) the task `task` awaits, if any.
pub(crate) fn waiting_on(py: Python<'_>, task: TaskId) -> Option<Py<PyAny>> {
    WAITS.with(|w| w.borrow().get(&task).map(|(f, _)| f.clone_ref(py)))
}

/// Called when a Python task is resumed: ends its future wait, if any
/// (cancelling the future if the task was cancelled).
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
    let Some((future, event)) = WAITS.with(|w| w.borrow_mut().remove(&task)) else {
        return;
    };
    WAITING.with(|n| n.set(n.get().saturating_sub(1)));
    if let Some(event) = event {
        kernel.remove_event(event);
    }
    if matches!(answer, Some(Resume::Cancelled))
        && let Err(e) = future.bind(py).call_method0(intern!(py, "cancel"))
    {
        crate::errors::log_callback_error(py, "cancelling an awaited asyncio future", e);
    }
}
