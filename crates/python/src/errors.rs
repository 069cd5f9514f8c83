//! The exceptions of the `tiffany` package.

use pyo3::create_exception;
use pyo3::exceptions::{PyBaseException, PyException, PyRuntimeError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use tiffany_scheduler::{SpawnError as KernelSpawnError, TaskError};

create_exception!(
    tiffany,
    Cancelled,
    PyBaseException,
    "Raised inside a cancelled task at its `await`, so its `finally` blocks run.\n\n\
     A BaseException, like asyncio.CancelledError: `except Exception` does not swallow it."
);
create_exception!(
    tiffany,
    TaskCancelled,
    PyException,
    "Raised to whoever joins (awaits) a task that was cancelled."
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
    TaskFailed,
    PyRuntimeError,
    "Raised to whoever joins a native (Rust) task that panicked; the message is the panic's."
);

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

/// The exception a joiner receives for a failed task: the task's own exception
/// if it was a Python task, else `TaskFailed` with the panic's message.
pub(crate) fn task_error(py: Python<'_>, e: &TaskError) -> PyErr {
    if let Some(payload) = e.payload()
        && let Some(exc) = payload.downcast_ref::<Py<PyAny>>()
    {
        return PyErr::from_value(exc.bind(py).clone());
    }
    if let Some(exec) = e
        .payload()
        .and_then(|p| p.downcast_ref::<tiffany_scheduler::process::ExecError>())
    {
        return crate::process::exec_error(py, exec);
    }
    TaskFailed::new_err(e.message().to_owned())
}
