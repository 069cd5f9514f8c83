//! Checked arguments: each refuses every bad value with one message.
//!
//! PyO3's own conversions would accept `True` as a priority, turn `-1` into
//! an `OverflowError` about a C integer, and report a bad `quantum` in three
//! ways; these newtypes say what the argument must be instead.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt};

/// A task priority: an `int` in `0..=255` (not a `bool`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Priority(pub(crate) u8);

impl Priority {
    pub(crate) const DEFAULT: Priority = Priority(tiffany_scheduler::PRI_DEFAULT);
}

impl<'a, 'py> FromPyObject<'a, 'py> for Priority {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
            return Err(PyTypeError::new_err(format!(
                "priority must be an int in 0..=255, got {}",
                type_name(&obj)
            )));
        }
        match obj.extract::<i64>().ok().and_then(|p| u8::try_from(p).ok()) {
            Some(p) => Ok(Priority(p)),
            None => Err(PyValueError::new_err(format!(
                "priority must be in 0..=255, got {}",
                repr(&obj)
            ))),
        }
    }
}

/// A limit on live tasks: an `int` >= 1 (not a `bool`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity(pub(crate) usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Capacity {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        const WHAT: &str = "capacity must be an int >= 1 (or None)";
        if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
            return Err(PyTypeError::new_err(format!(
                "{WHAT}, got {}",
                type_name(&obj)
            )));
        }
        match obj.extract::<i64>().ok().filter(|c| *c >= 1) {
            Some(c) => Ok(Capacity(usize::try_from(c).unwrap_or(usize::MAX))),
            None => Err(PyValueError::new_err(format!("{WHAT}, got {}", repr(&obj)))),
        }
    }
}

/// A CPU quantum in seconds: a finite number > 0.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quantum(pub(crate) std::time::Duration);

impl<'a, 'py> FromPyObject<'a, 'py> for Quantum {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let message = || {
            format!(
                "quantum must be a finite number of seconds > 0 (at most {}), got {}",
                crate::syscall::MAX_SECONDS,
                repr(&obj)
            )
        };
        let number = !obj.is_instance_of::<PyBool>()
            && (obj.is_instance_of::<PyFloat>() || obj.is_instance_of::<PyInt>());
        if !number {
            return Err(PyTypeError::new_err(message()));
        }
        match obj.extract::<f64>() {
            Ok(q) if q > 0.0 && q <= crate::syscall::MAX_SECONDS => {
                Ok(Quantum(std::time::Duration::from_secs_f64(q)))
            }
            _ => Err(PyValueError::new_err(message())),
        }
    }
}

/// Refuses a callback that cannot be called, when it is registered (not
/// when it would first be called, on the scheduler's thread).
pub(crate) fn check_callable(what: &str, callback: &Bound<'_, PyAny>) -> PyResult<()> {
    if callback.is_callable() {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be callable, got {}",
        type_name(&callback.as_borrowed())
    )))
}

fn type_name(obj: &Borrowed<'_, '_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".into())
}

fn repr(obj: &Borrowed<'_, '_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| type_name(obj))
}
