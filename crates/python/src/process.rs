//! `tiffany.exec` and `tiffany.Completed`: a command run as a kernel
//! process task (`tiffany_scheduler::process`).
//!
//! The task runs no Python: every argument is converted to Rust here, before
//! the spawn, and the task's value (a Rust `Completed`) becomes a Python
//! [`PyCompleted`] only when it is read ([`completed_to_py`], through
//! `convert::value_to_py`). A command that cannot start fails the task with
//! an `ExecError`, which a joiner receives as the `OSError` subclass Python
//! itself would raise ([`exec_error`]: `FileNotFoundError`,
//! `PermissionError`...).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use tiffany_scheduler::process::{self, Completed, DEFAULT_CAPTURE_LIMIT, ExecError, ExecSpec};
use tiffany_scheduler::{PRI_DEFAULT, SpawnOptions};

use crate::errors::{TaskFailed, spawn_error};
use crate::syscall::{check_seconds, seconds};
use crate::task::Task;

/// How a command ended: `tiffany.Completed`.
#[pyclass(module = "tiffany._native", name = "Completed", frozen)]
pub struct PyCompleted {
    done: Completed,
    stdout: Py<PyBytes>,
    stderr: Py<PyBytes>,
}

#[pymethods]
impl PyCompleted {
    /// The exit code; `-N` if signal `N` killed the command (as in
    /// `subprocess`); `None` if the status was lost (reaped elsewhere).
    #[getter]
    fn returncode(&self) -> Option<i32> {
        self.done
            .returncode
            .or(self.done.signal.map(|s| s.saturating_neg()))
    }

    /// The signal that killed the command, or `None`.
    #[getter]
    fn signal(&self) -> Option<i32> {
        self.done.signal
    }

    /// What the command wrote to stdout, up to the capture limit.
    #[getter]
    fn stdout(&self, py: Python<'_>) -> Py<PyBytes> {
        self.stdout.clone_ref(py)
    }

    /// What the command wrote to stderr, up to the capture limit.
    #[getter]
    fn stderr(&self, py: Python<'_>) -> Py<PyBytes> {
        self.stderr.clone_ref(py)
    }

    /// Bytes written to stdout in all, kept and dropped.
    #[getter]
    fn stdout_bytes(&self) -> u64 {
        self.done.stdout_bytes
    }

    /// Bytes written to stderr in all, kept and dropped.
    #[getter]
    fn stderr_bytes(&self) -> u64 {
        self.done.stderr_bytes
    }

    /// Whether stdout went past the capture limit.
    #[getter]
    fn stdout_truncated(&self) -> bool {
        self.done.stdout_truncated
    }

    /// Whether stderr went past the capture limit.
    #[getter]
    fn stderr_truncated(&self) -> bool {
        self.done.stderr_truncated
    }

    /// Whether the timeout passed and the process group was stopped.
    #[getter]
    fn timed_out(&self) -> bool {
        self.done.timed_out
    }

    /// The command's process id (also its process group's).
    #[getter]
    fn pid(&self) -> u32 {
        self.done.pid
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let mut flags = String::new();
        for (set, name) in [
            (self.done.timed_out, " timed_out"),
            (self.done.stdout_truncated, " stdout_truncated"),
            (self.done.stderr_truncated, " stderr_truncated"),
        ] {
            if set {
                flags.push_str(name);
            }
        }
        format!(
            "<tiffany.Completed pid={} returncode={} stdout={}B stderr={}B{flags}>",
            self.done.pid,
            self.returncode()
                .map_or_else(|| "None".to_owned(), |c| c.to_string()),
            self.stdout.bind(py).as_bytes().len(),
            self.stderr.bind(py).as_bytes().len(),
        )
    }
}

/// The Python object for a process task's value.
pub(crate) fn completed_to_py(py: Python<'_>, done: &Completed) -> Py<PyAny> {
    let obj = PyCompleted {
        done: Completed {
            stdout: Vec::new(),
            stderr: Vec::new(),
            ..done.clone()
        },
        stdout: PyBytes::new(py, &done.stdout).unbind(),
        stderr: PyBytes::new(py, &done.stderr).unbind(),
    };
    match Py::new(py, obj) {
        Ok(o) => o.into_any(),
        Err(_) => py.None(),
    }
}

/// The exception for a process task's failure: `OSError(errno, strerror,
/// program)` (which Python turns into `FileNotFoundError`,
/// `PermissionError`...) when the OS said why, else `TaskFailed`.
pub(crate) fn exec_error(py: Python<'_>, e: &ExecError) -> PyErr {
    let Some(errno) = e.errno() else {
        return TaskFailed::new_err(e.to_string());
    };
    let strerror = py
        .import("os")
        .and_then(|os| os.call_method1("strerror", (errno,)))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| e.to_string());
    match e {
        ExecError::Start { program, .. } => {
            PyOSError::new_err((errno, strerror, program.to_string_lossy().into_owned()))
        }
        _ => PyOSError::new_err((errno, format!("{e}"))),
    }
}

/// `os.fsencode(obj)` as an `OsString`: `str`, `bytes` or a path-like object.
fn fs_string(
    fsencode: &Bound<'_, PyAny>,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<OsString> {
    let bytes = fsencode.call1((obj,)).map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be str, bytes or os.PathLike, not {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    let bytes = bytes.cast::<PyBytes>()?;
    Ok(OsString::from_vec(bytes.as_bytes().to_vec()))
}

/// Builds the kernel's spec from `exec`'s arguments (all Python work is here).
fn spec_from_py(
    py: Python<'_>,
    argv: &Bound<'_, PyAny>,
    env: Option<&Bound<'_, PyAny>>,
    cwd: Option<&Bound<'_, PyAny>>,
    stdin: Option<&Bound<'_, PyAny>>,
) -> PyResult<ExecSpec> {
    let fsencode = py.import("os")?.getattr("fsencode")?;
    if argv.is_instance_of::<PyString>() || argv.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "argv must be a sequence of arguments, not a single string",
        ));
    }
    let mut args = Vec::new();
    for (i, item) in argv.try_iter()?.enumerate() {
        args.push(fs_string(&fsencode, &item?, &format!("argv[{i}]"))?);
    }
    let mut spec = ExecSpec::new(args);
    if let Some(env) = env {
        // Like subprocess: the mapping is the whole environment.
        spec = spec.env_clear();
        for pair in env.call_method0("items")?.try_iter()? {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
            let key = fs_string(&fsencode, &key, "an environment variable's name")?;
            let value = fs_string(&fsencode, &value, "an environment variable's value")?;
            spec = spec.env(key, value);
        }
    }
    if let Some(dir) = cwd {
        spec = spec.cwd(fs_string(&fsencode, dir, "cwd")?);
    }
    if let Some(input) = stdin {
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(input).map_err(|_| {
            PyTypeError::new_err(format!(
                "stdin must be a bytes-like object, not {}",
                input
                    .get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        spec = spec.stdin(buffer.to_vec(py)?);
    }
    Ok(spec)
}

/// `tiffany.exec(argv, *, timeout=None, env=None, cwd=None, stdin=None,
/// capture_limit=1_048_576, kill_grace=2.0, priority=10, name=None)`: runs
/// a command as a native task on the running scheduler; awaiting the task
/// gives a `Completed`.
#[pyfunction]
#[pyo3(
    name = "exec",
    signature = (
        argv, *, timeout = None, env = None, cwd = None, stdin = None,
        capture_limit = DEFAULT_CAPTURE_LIMIT as i64, kill_grace = 2.0,
        priority = PRI_DEFAULT, name = None
    ),
    // The defaults as Python shows them (the signature's are Rust constants).
    text_signature = "(argv, *, timeout=None, env=None, cwd=None, stdin=None, capture_limit=1048576, kill_grace=2.0, priority=10, name=None)"
)]
#[allow(clippy::too_many_arguments)]
pub fn exec(
    py: Python<'_>,
    argv: &Bound<'_, PyAny>,
    timeout: Option<f64>,
    env: Option<&Bound<'_, PyAny>>,
    cwd: Option<&Bound<'_, PyAny>>,
    stdin: Option<&Bound<'_, PyAny>>,
    capture_limit: i64,
    kill_grace: f64,
    priority: u8,
    name: Option<String>,
) -> PyResult<Task> {
    let capture_limit = usize::try_from(capture_limit).map_err(|_| {
        PyValueError::new_err(format!("capture_limit must be >= 0, got {capture_limit}"))
    })?;
    let timeout = timeout
        .map(|t| check_seconds("timeout", t).map(seconds))
        .transpose()?;
    let kill_grace = seconds(check_seconds("kill_grace", kill_grace)?);
    let mut spec = spec_from_py(py, argv, env, cwd, stdin)?
        .capture_limit(capture_limit)
        .kill_grace(kill_grace);
    spec.timeout = timeout;
    let (kernel, _) = crate::current::current_kernel()?;
    let mut options = SpawnOptions::priority(priority);
    options.name = name.as_deref().map(Into::into);
    let id = process::spawn(&kernel, spec, options).map_err(|e| match e {
        ExecError::InvalidSpec(what) => PyValueError::new_err(what),
        ExecError::Spawn(e) => spawn_error(py, &e),
        other => exec_error(py, &other),
    })?;
    Ok(Task::new(&crate::current::current()?, id, name, priority))
}
