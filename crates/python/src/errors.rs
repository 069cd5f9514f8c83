//! The exceptions of the `tiffany` package.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyRuntimeError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tiffany_scheduler::{SpawnError as KernelSpawnError, TaskError};

create_exception!(
    tiffany,
    Cancelled,
    pyo3::exceptions::asyncio::CancelledError,
    "Raised inside a cancelled scope at its `await`, so its `finally` blocks run (also in a \
     task the kernel cancels: a shutdown, `TaskHandle.cancel`; a `tiffany.Task`'s \
     `cancel(msg)` raises `asyncio.CancelledError(msg)`).\n\n\
     A subclass of asyncio.CancelledError (a BaseException): `except asyncio.CancelledError` \
     catches both worlds' cancellation, `except Exception` swallows neither. The cancel scope \
     that was cancelled catches it when the task leaves the scope."
);
create_exception!(
    tiffany,
    TaskCancelled,
    pyo3::exceptions::asyncio::CancelledError,
    "Raised to whoever joins a task that was cancelled.\n\n\
     A subclass of asyncio.CancelledError (what awaiting a cancelled asyncio task raises), \
     not of Cancelled: a cancel scope never takes it for its own cancellation, and a task \
     that does not catch it ends cancelled, as in asyncio (ADR 13)."
);
create_exception!(
    tiffany,
    JoinTimeout,
    PyTimeoutError,
    "Raised by `join(task, timeout=...)` when the timeout passes first; the task goes on."
);
create_exception!(
    tiffany,
    SpawnError,
    PyException,
    "A spawn was refused. `.reason` is one of \"capacity\", \"shutting_down\", \"cycle\", \
     \"unknown_dependency\"."
);
create_exception!(
    tiffany,
    Deadlock,
    PyRuntimeError,
    "Raised by `run()` when, under the virtual clock, no task can ever make progress again: \
     every task waits (for a join, an event, admission), no timer is pending and nothing \
     outside can wake one. The message names each blocked task and what it waits for."
);
create_exception!(
    tiffany,
    TaskFailed,
    PyRuntimeError,
    "Raised to whoever joins a native (Rust) task that panicked; the message is the panic's."
);

/// An `OSError` built as Python builds one, `OSError(errno, os.strerror(errno))`:
/// the subclass for the code (`BrokenPipeError`, `ConnectionResetError`, ...),
/// `.errno` and `.strerror` set, no "(os error N)" in the message.
pub(crate) fn os_error(errno: i32) -> PyErr {
    let strerror = Python::attach(|py| {
        py.import("os")
            .and_then(|os| os.call_method1("strerror", (errno,)))
            .and_then(|s| s.extract::<String>())
    })
    .unwrap_or_else(|_| format!("error {errno}"));
    PyOSError::new_err((errno, strerror))
}

/// An `OSError` for an I/O error of the kernel (see [`os_error`]).
pub(crate) fn io_error(e: &std::io::Error) -> PyErr {
    match e.raw_os_error() {
        Some(errno) => os_error(errno),
        None => PyOSError::new_err(e.to_string()),
    }
}

/// A `SpawnError` with its `.reason` set.
pub(crate) fn spawn_error(py: Python<'_>, e: &KernelSpawnError) -> PyErr {
    let err = SpawnError::new_err(e.to_string());
    let reason = match e {
        KernelSpawnError::UnknownDependency(_) => "unknown_dependency",
        other => other.reason(),
    };
    let value = err.value(py);
    if let Err(set) = value.setattr("reason", PyString::new(py, reason)) {
        return set;
    }
    err
}

/// What a failed Python task leaves in the kernel: its exception, and its
/// name (taken while it ran: a finished task's record may be gone by the
/// time its failure is reported).
pub(crate) struct Failure {
    pub(crate) exception: Py<PyAny>,
    pub(crate) task_name: Option<std::sync::Arc<str>>,
    /// An asyncio task's: its future reports an exception nobody retrieved
    /// (as asyncio does), so the kernel's report stays quiet.
    pub(crate) asyncio: bool,
}

/// The exception a joiner receives for a failed task: the task's own exception
/// if it was a Python task, else `TaskFailed` with the panic's message.
pub(crate) fn task_error(py: Python<'_>, e: &TaskError) -> PyErr {
    if let Some(payload) = e.payload()
        && let Some(failure) = payload.downcast_ref::<Failure>()
    {
        return PyErr::from_value(failure.exception.bind(py).clone());
    }
    if let Some(exec) = e
        .payload()
        .and_then(|p| p.downcast_ref::<tiffany_scheduler::process::ExecError>())
    {
        return crate::process::exec_error(py, exec);
    }
    TaskFailed::new_err(e.message().to_owned())
}

/// The name of a failed Python task, as it was when it failed.
pub(crate) fn failed_task_name(e: &TaskError) -> Option<std::sync::Arc<str>> {
    e.payload()?.downcast_ref::<Failure>()?.task_name.clone()
}

/// Logs the failure of a task nobody retrieved, naming the task (`task 7
/// "fetch"`). A `KeyboardInterrupt` or `SystemExit` is not logged: it ends
/// the run and `run()` re-raises it.
pub(crate) fn log_task_failure(
    py: Python<'_>,
    id: tiffany_scheduler::TaskId,
    why: &str,
    error: &TaskError,
) {
    if error
        .payload()
        .and_then(|p| p.downcast_ref::<Failure>())
        .is_some_and(|f| f.asyncio)
    {
        return;
    }
    let name = failed_task_name(error);
    let err = task_error(py, error);
    if err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
    {
        return;
    }
    let task = match name.as_deref() {
        Some(n) => format!("task {id} {n:?}"),
        None => format!("task {id}"),
    };
    log_callback_error(py, &format!("{task}, {why}"), err);
}

/// Logs an exception raised by a user callback on the "tiffany" logger.
pub(crate) fn log_callback_error(py: Python<'_>, what: &str, err: PyErr) {
    let logged = (|| -> PyResult<()> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("tiffany",))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", err.clone_ref(py).into_value(py))?;
        logger.call_method("error", (format!("exception in {what}"),), Some(&kwargs))?;
        Ok(())
    })();
    if logged.is_err() {
        err.write_unraisable(py, None);
    }
}
