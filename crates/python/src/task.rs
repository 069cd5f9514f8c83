//! `tiffany.Task` and `tiffany.join`: a task seen from Python.

use std::cell::Cell;
use std::rc::Rc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tiffany_scheduler::{Outcome, Scheduler as Kernel, TaskId, TaskState};

use crate::convert::value_to_py;
use crate::current::Current;
use crate::errors::{TaskCancelled, log_callback_error, spawn_error, task_error};
use crate::owner::ThreadBound;
use crate::syscall::{Kind, Syscall, check_seconds};

/// A task: its id, name and priority, its state, and its outcome once done.
///
/// Awaiting a task joins it: the result, or the task's exception re-raised,
/// or `TaskCancelled`.
///
/// Its id, name and priority can be read on any thread; everything that asks
/// the scheduler belongs to the scheduler's thread (see [`crate::owner`]).
#[pyclass(module = "tiffany._native", name = "Task", frozen)]
pub struct Task {
    pub(crate) id: TaskId,
    name: Option<String>,
    priority: u8,
    pub(crate) sched: u64,
    link: ThreadBound<Link>,
}

/// A task's hold on its record in the kernel, released (and an unretrieved
/// failure logged) when the `Task` goes, on the scheduler's thread.
struct Link {
    id: TaskId,
    kernel: Kernel,
    callback_errors: Rc<Cell<u64>>,
}

impl Task {
    pub(crate) fn new(cur: &Current, id: TaskId, name: Option<String>, priority: u8) -> Self {
        cur.kernel.retain(id);
        let link = Link {
            id,
            kernel: cur.kernel.clone(),
            callback_errors: cur.callback_errors.clone(),
        };
        Task {
            id,
            name,
            priority,
            sched: cur.id,
            link: ThreadBound::new(link, cur.kernel.internal_handle()),
        }
    }

    /// The kernel, on the scheduler's thread; a `RuntimeError` elsewhere.
    #[inline]
    fn kernel(&self) -> PyResult<&Kernel> {
        self.link.get("Task").map(|l| &l.kernel)
    }

    fn outcome(&self) -> PyResult<Option<Outcome>> {
        Ok(self.kernel()?.outcome(self.id))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The state first: it is a copy, the outcome a clone of shared values.
        if self.kernel.state(self.id) == Some(TaskState::Failed)
            && let Some(Outcome::Failed(e)) = self.kernel.outcome(self.id)
            && !self.kernel.observe(self.id)
        {
            Python::attach(|py| {
                crate::errors::log_task_failure(
                    py,
                    self.id,
                    "whose exception was never retrieved",
                    &e,
                );
            });
        }
        self.kernel.release(self.id);
    }
}

#[pymethods]
impl Task {
    /// The task's id (unique within its scheduler, increasing).
    #[getter]
    fn id(&self) -> u64 {
        self.id.get()
    }

    /// The name given at spawn, or None.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The priority (0 first, 255 last).
    #[getter]
    fn priority(&self) -> u8 {
        self.priority
    }

    /// One of "pending", "scheduled", "running", "sleeping", "waiting",
    /// "throttled", "finished", "failed", "cancelled".
    #[getter]
    fn state(&self) -> PyResult<&'static str> {
        Ok(match self.kernel()?.state(self.id) {
            Some(s) => s.name(),
            None => "finished",
        })
    }

    /// `Task[T]` in annotations evaluated at run time.
    #[classmethod]
    fn __class_getitem__(
        cls: &Bound<'_, pyo3::types::PyType>,
        item: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let alias = cls.py().import("types")?.getattr("GenericAlias")?;
        Ok(alias.call1((cls, item))?.unbind())
    }

    /// Whether the task has ended (finished, failed or cancelled).
    fn done(&self) -> PyResult<bool> {
        Ok(self.outcome()?.is_some())
    }

    /// Whether the task ended cancelled (as `asyncio.Future.cancelled`).
    fn cancelled(&self) -> PyResult<bool> {
        Ok(matches!(self.outcome()?, Some(Outcome::Cancelled)))
    }

    /// The task's return value; re-raises its exception; raises
    /// `TaskCancelled` if it was cancelled and `RuntimeError` if not done.
    pub(crate) fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.kernel()?.observe(self.id);
        match self.outcome()? {
            None => Err(PyRuntimeError::new_err(format!(
                "task {} is not done",
                self.id
            ))),
            Some(Outcome::Done(v)) => Ok(value_to_py(py, &v)),
            Some(Outcome::Failed(e)) => Err(task_error(py, &e)),
            Some(Outcome::Cancelled) => Err(TaskCancelled::new_err(format!(
                "task {} was cancelled",
                self.id
            ))),
        }
    }

    /// The task's exception, or None if it returned; raises `TaskCancelled`
    /// if it was cancelled and `RuntimeError` if not done.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.kernel()?.observe(self.id);
        match self.outcome()? {
            None => Err(PyRuntimeError::new_err(format!(
                "task {} is not done",
                self.id
            ))),
            Some(Outcome::Done(_)) => Ok(None),
            Some(Outcome::Failed(e)) => Ok(Some(task_error(py, &e).into_value(py).into_any())),
            Some(Outcome::Cancelled) => Err(TaskCancelled::new_err(format!(
                "task {} was cancelled",
                self.id
            ))),
        }
    }

    /// Cancels the task, the kernel's way: its root scope, level-triggered
    /// (every blocking call raises `tiffany.Cancelled` until it ends; a
    /// `tiffany.Task`'s `cancel()` is asyncio's one-shot instead). Returns
    /// whether it was still live.
    fn cancel(&self) -> PyResult<bool> {
        Ok(self.kernel()?.cancel(self.id))
    }

    /// Makes this task (which must not have started yet) also wait for
    /// `other`. Raises `SpawnError` with reason "cycle" if `other` already
    /// waits for this task (or is this task), "unknown_dependency" if it
    /// belongs to another scheduler.
    fn add_dependency(&self, py: Python<'_>, other: &Bound<'_, Task>) -> PyResult<()> {
        let other = other.borrow();
        if other.sched != self.sched {
            let err = tiffany_scheduler::SpawnError::UnknownDependency(other.id);
            return Err(spawn_error(py, &err));
        }
        self.kernel()?
            .add_dependency(self.id, other.id)
            .map_err(|e| spawn_error(py, &e))
    }

    /// Calls `fn(task)` once the task has ended (at once if it already has),
    /// on the scheduler's thread between steps. Exceptions are logged.
    fn add_done_callback(slf: &Bound<'_, Self>, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        crate::args::check_callable("add_done_callback() callback", callback)?;
        let callback = callback.clone().unbind();
        let link = slf.get().link.get("Task")?;
        let errors = link.callback_errors.clone();
        let kernel = link.kernel.clone();
        let id = slf.get().id;
        let task: Py<Task> = slf.clone().unbind();
        let registered = kernel.on_task_end(id, move |_, _| {
            Python::attach(|py| {
                if let Err(e) = callback.call1(py, (task.clone_ref(py),)) {
                    errors.set(errors.get() + 1);
                    log_callback_error(py, "a done callback", e);
                }
            })
        });
        if !registered {
            return Err(PyRuntimeError::new_err("the task's record is gone"));
        }
        Ok(())
    }

    fn __await__(&self) -> Syscall {
        Syscall::new(Kind::Join {
            target: self.id.get(),
            sched: self.sched,
            timeout: None,
        })
    }

    fn __repr__(&self) -> String {
        let state = self.state().unwrap_or("of another thread");
        match &self.name {
            Some(n) => format!("<Task {} {:?} {}>", self.id, n, state),
            None => format!("<Task {} {}>", self.id, state),
        }
    }

    fn __hash__(&self) -> u64 {
        self.id.get() ^ (self.sched << 48)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<Task>() {
            Ok(o) => {
                let o = o.borrow();
                o.id == self.id && o.sched == self.sched
            }
            Err(_) => false,
        }
    }
}

/// `await tiffany.join(task, timeout=None)`: wait for a task; raises
/// `JoinTimeout` if the timeout passes first. (For an asyncio task of a
/// Tiffany loop, `tiffany.join` in Python wraps this and returns the task's
/// result.)
#[pyfunction]
#[pyo3(signature = (task, timeout = None))]
pub fn join(task: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Syscall> {
    let timeout = timeout
        .map(|s| check_seconds("join() timeout", s))
        .transpose()?;
    let (target, sched) = match task.cast::<Task>() {
        Ok(t) => {
            let t = t.borrow();
            (t.id.get(), t.sched)
        }
        Err(_) if crate::aio::task::is_task(task.py(), task) => {
            let facts = crate::aio::task::facts(task)?;
            (facts.id, facts.sched)
        }
        Err(_) => {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "join() needs a task, got {}",
                task.get_type().name()?
            )));
        }
    };
    Ok(Syscall::new(Kind::Join {
        target,
        sched,
        timeout,
    }))
}
