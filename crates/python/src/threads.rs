//! Reaching a running scheduler from other threads.
//!
//! [`Handle`] is `tiffany.Scheduler.handle()`: spawn, cancel and shut down from
//! any thread. [`Completion`] is how `tiffany.to_thread` waits: a task awaits
//! it, a worker thread calls `notify()`, and the scheduler wakes the task
//! through an in-memory readiness channel (no file descriptor, no polling).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tiffany_scheduler::{Body, Handle as KernelHandle, Interest, IoToken, SpawnOptions};

use crate::body::PyBody;
use crate::errors::spawn_error;
use crate::syscall::{Kind, Syscall, check_seconds};

/// A thread-safe handle to a scheduler: spawn, cancel and shut down from any
/// thread; each call wakes the scheduler if it is idle.
#[pyclass(module = "tiffany._native", name = "Handle", frozen)]
pub struct Handle {
    pub(crate) kernel: KernelHandle,
    pub(crate) sched: u64,
}

#[pymethods]
impl Handle {
    /// Spawns a coroutine on the scheduler; returns the new task's id.
    #[pyo3(signature = (coro, *, priority = crate::args::Priority::DEFAULT, name = None))]
    fn spawn(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        priority: crate::args::Priority,
        name: Option<String>,
    ) -> PyResult<u64> {
        crate::scheduler::check_task_object(py, coro)?;
        let mut options = SpawnOptions::priority(priority.0);
        options.name = name.map(|n| n.as_str().into());
        let body = Body::custom(Box::new(PyBody::new(py, coro.clone().unbind(), self.sched)));
        self.kernel
            .spawn_body(options, body)
            .map(|id| id.get())
            .map_err(|e| spawn_error(py, &e))
    }

    /// Asks the scheduler to cancel the task with this id.
    fn cancel(&self, task_id: u64) -> PyResult<()> {
        self.kernel
            .cancel(tiffany_scheduler::TaskId::from_raw(task_id))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Starts a shutdown and returns at once.
    fn request_shutdown(&self, timeout: f64) -> PyResult<()> {
        let t = check_seconds("timeout", timeout)?;
        self.kernel
            .request_shutdown(crate::syscall::seconds(t))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Shuts the scheduler down and waits for the result ("clean" or
    /// "timeout"). Not from the scheduler's own thread.
    fn shutdown(&self, py: Python<'_>, timeout: f64) -> PyResult<&'static str> {
        let t = crate::syscall::seconds(check_seconds("timeout", timeout)?);
        let kernel = self.kernel.clone();
        py.detach(move || kernel.shutdown(t))
            .map(|r| r.name())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }
}

/// A one-shot wake-up from another thread: await it in a task, call
/// `notify()` from anywhere.
#[pyclass(module = "tiffany._native", name = "Completion", frozen)]
pub struct Completion {
    kernel: KernelHandle,
    token: IoToken,
}

#[pymethods]
impl Completion {
    /// A completion on the running scheduler (call it from a task).
    #[new]
    fn new() -> PyResult<Self> {
        let (kernel, token) = crate::current::new_channel()?;
        Ok(Completion { kernel, token })
    }

    /// Wakes the task awaiting this completion. Thread-safe.
    fn notify(&self) {
        // A scheduler that is gone has nobody left to wake.
        let _ = self.kernel.notify_io(self.token, Interest::Readable);
    }

    /// Releases the channel (after the await, or if it is abandoned).
    fn close(&self) {
        crate::current::close_channel(self.token);
    }

    fn __await__(&self) -> Syscall {
        Syscall::new(Kind::Channel {
            token: self.token.get(),
        })
    }
}
