//! The awaitables: native objects a Python task yields to make a system call.
//!
//! `await tiffany.sleep(1)` builds a [`Syscall`] object; its `__await__` is
//! itself, and its first `__next__` yields itself up through the coroutine's
//! frames to the driver ([`crate::body`]), which turns it into a kernel
//! [`SystemCall`](tiffany_scheduler::SystemCall). The driver resumes the
//! coroutine with the answer: `None` ends the await through `__next__`, any
//! other value through `send`, and a failure is thrown into the coroutine at its
//! `await`. A generator task may `yield` the same objects directly, pyos style.

use pyo3::exceptions::{PyStopIteration, PyValueError};
use pyo3::prelude::*;

/// What a [`Syscall`] asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Yield,
    Sleep(f64),
    Join {
        target: u64,
        sched: u64,
        timeout: Option<f64>,
    },
    GetTid,
    Admit,
    Shutdown(f64),
    /// Wait for a file descriptor (registered by the driver for the wait).
    Io {
        fd: i32,
        writable: bool,
        timeout: Option<f64>,
    },
    /// Wait for an in-memory channel (a completion from another thread).
    Channel {
        token: u64,
    },
}

/// A system call, awaitable from a coroutine or yieldable from a generator.
#[pyclass(module = "tiffany._native", name = "Syscall", freelist = 64)]
pub struct Syscall {
    pub(crate) kind: Kind,
    /// 0: not yet yielded; 1: yielded, waiting for the answer.
    stage: u8,
}

impl Syscall {
    pub(crate) fn new(kind: Kind) -> Self {
        Syscall { kind, stage: 0 }
    }
}

#[pymethods]
impl Syscall {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(mut slf: PyRefMut<'_, Self>) -> Option<Py<PyAny>> {
        if slf.stage == 0 {
            slf.stage = 1;
            let py = slf.py();
            Some(slf.into_pyobject(py).ok()?.into_any().unbind())
        } else {
            None
        }
    }

    /// Resumes the await with `value` (the driver's answer).
    fn send(mut slf: PyRefMut<'_, Self>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if slf.stage == 0 {
            if !value.is_none(py) {
                return Err(PyValueError::new_err(
                    "can't send a value to a system call that has not started",
                ));
            }
            slf.stage = 1;
            return Ok(slf.into_pyobject(py)?.into_any().unbind());
        }
        Err(PyStopIteration::new_err((value,)))
    }

    fn __repr__(&self) -> String {
        match self.kind {
            Kind::Yield => "<tiffany syscall yield>".into(),
            Kind::Sleep(s) => format!("<tiffany syscall sleep {s}>"),
            Kind::Join {
                target, timeout, ..
            } => match timeout {
                Some(t) => format!("<tiffany syscall join {target} timeout={t}>"),
                None => format!("<tiffany syscall join {target}>"),
            },
            Kind::GetTid => "<tiffany syscall get_tid>".into(),
            Kind::Admit => "<tiffany syscall admit>".into(),
            Kind::Shutdown(t) => format!("<tiffany syscall shutdown {t}>"),
            Kind::Io { fd, writable, .. } => format!(
                "<tiffany syscall wait_{} fd={fd}>",
                if writable { "writable" } else { "readable" }
            ),
            Kind::Channel { token } => format!("<tiffany syscall channel {token}>"),
        }
    }
}

/// Checks a duration given in seconds: finite and not negative.
pub(crate) fn check_seconds(name: &str, s: f64) -> PyResult<f64> {
    if !s.is_finite() || s < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a finite number of seconds >= 0, got {s}"
        )));
    }
    Ok(s)
}

/// `await tiffany.sleep(seconds)`: sleep on the scheduler's clock.
#[pyfunction]
pub fn sleep(seconds: f64) -> PyResult<Syscall> {
    Ok(Syscall::new(Kind::Sleep(check_seconds(
        "sleep()", seconds,
    )?)))
}

/// `await tiffany.yield_now()`: go behind every ready task of the same priority.
#[pyfunction]
pub fn yield_now() -> Syscall {
    Syscall::new(Kind::Yield)
}

/// `tid = yield tiffany.GetTid()`: the current task's id (pyos style).
#[pyfunction(name = "GetTid")]
pub fn get_tid() -> Syscall {
    Syscall::new(Kind::GetTid)
}

/// `await tiffany.admit()`: wait at the back-pressure admission gate.
#[pyfunction]
pub fn admit() -> Syscall {
    Syscall::new(Kind::Admit)
}

/// `await tiffany.shutdown(timeout)`: shut the scheduler down from a task.
#[pyfunction]
pub fn shutdown(timeout: f64) -> PyResult<Syscall> {
    Ok(Syscall::new(Kind::Shutdown(check_seconds(
        "shutdown() timeout",
        timeout,
    )?)))
}

/// The file descriptor of an int or of an object with `fileno()`.
pub(crate) fn fd_of(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let fd: i64 = match obj.extract::<i64>() {
        Ok(fd) => fd,
        Err(_) => obj
            .call_method0("fileno")
            .map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err(
                    "expected a file descriptor (int) or an object with fileno()",
                )
            })?
            .extract()?,
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "invalid file descriptor {fd} (closed socket?)"
        )));
    }
    Ok(fd as i32)
}

fn io_wait(obj: &Bound<'_, PyAny>, writable: bool, timeout: Option<f64>) -> PyResult<Syscall> {
    let fd = fd_of(obj)?;
    let timeout = timeout.map(|t| check_seconds("timeout", t)).transpose()?;
    Ok(Syscall::new(Kind::Io {
        fd,
        writable,
        timeout,
    }))
}

/// `await tiffany.wait_readable(fd_or_fileobj, timeout=None)`: wait until
/// readable; raises `TimeoutError` if the timeout passes first.
#[pyfunction]
#[pyo3(signature = (fd, timeout = None))]
pub fn wait_readable(fd: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Syscall> {
    io_wait(fd, false, timeout)
}

/// `await tiffany.wait_writable(fd_or_fileobj, timeout=None)`: wait until
/// writable; raises `TimeoutError` if the timeout passes first.
#[pyfunction]
#[pyo3(signature = (fd, timeout = None))]
pub fn wait_writable(fd: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Syscall> {
    io_wait(fd, true, timeout)
}
