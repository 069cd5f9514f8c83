//! The kernel's cancel scopes, for `tiffany.CancelScope` (`python/tiffany/_scope.py`).
//!
//! A Python task enters and leaves scopes from inside its step: these
//! functions call the scheduler directly (no trip through the ready queue),
//! on the running task. Cancelling a scope, moving its deadline or its
//! shield name the task and may be called from anywhere on the scheduler's
//! thread (a done callback, another task). Deadlines are seconds on the
//! scheduler's clock (`tiffany.now()`); `None` or `inf` is no deadline.

use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tiffany_scheduler::{
    ScopeAnswer, ScopeCall, ScopeId, ScopeOptions, ScopeRef, ScopeStatus, SyscallError, TaskId,
};

use crate::current::current;

/// A deadline in seconds as the kernel's: `None` for none (or `inf`), the
/// start of the clock for one before it (already past).
fn to_deadline(at: Option<f64>) -> PyResult<Option<Duration>> {
    match at {
        None => Ok(None),
        Some(s) if s.is_nan() => Err(PyValueError::new_err("a deadline cannot be NaN")),
        Some(s) if s == f64::INFINITY => Ok(None),
        Some(s) if s <= 0.0 => Ok(Some(Duration::ZERO)),
        Some(s) => Ok(Some(
            Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX),
        )),
    }
}

fn call(call: ScopeCall) -> PyResult<Result<ScopeAnswer, SyscallError>> {
    Ok(current()?.kernel.scope(call))
}

fn scope_ref(task: u64, scope: u32) -> ScopeRef {
    ScopeRef {
        task: TaskId::from_raw(task),
        scope: ScopeId::from_raw(scope),
    }
}

type Status = Option<(bool, Option<f64>, bool)>;

fn status(answer: Result<ScopeAnswer, SyscallError>) -> Status {
    match answer {
        Ok(ScopeAnswer::Status(ScopeStatus {
            cancelled,
            deadline,
            shield,
        })) => Some((cancelled, deadline.map(|d| d.as_secs_f64()), shield)),
        _ => None,
    }
}

/// `_scope_enter(deadline, shield) -> (task_id, scope_id)`: enters a scope
/// of the running task. `RuntimeError` outside a task.
#[pyfunction]
#[pyo3(signature = (deadline, shield))]
pub fn _scope_enter(deadline: Option<f64>, shield: bool) -> PyResult<(u64, u32)> {
    let options = ScopeOptions {
        deadline: to_deadline(deadline)?,
        shield,
    };
    let cur = current()?;
    let Some(task) = cur.kernel.current_task() else {
        return Err(PyRuntimeError::new_err(
            "a cancel scope can only be entered inside a tiffany task",
        ));
    };
    match cur.kernel.scope(ScopeCall::Enter(options)) {
        Ok(ScopeAnswer::Entered(id)) => Ok((task.get(), id.get())),
        Ok(other) => Err(PyRuntimeError::new_err(format!(
            "unexpected answer {other:?}"
        ))),
        Err(e) => Err(PyRuntimeError::new_err(e.to_string())),
    }
}

/// `_scope_exit(task_id, scope_id) -> (cancelled, absorbs)`: leaves a
/// scope of the running task. `RuntimeError` if the task has no such open
/// scope (left already), or if another task is running. With no task
/// (or no scheduler) running — the coroutine is being closed because its task was abandoned
/// or dropped, and its `with` blocks unwind — nothing is left to do:
/// `(False, False)`.
#[pyfunction]
pub fn _scope_exit(task: u64, scope: u32) -> PyResult<(bool, bool)> {
    let Ok(cur) = current() else {
        return Ok((false, false));
    };
    match cur.kernel.current_task() {
        None => return Ok((false, false)),
        Some(t) if t.get() != task => {
            return Err(PyRuntimeError::new_err(format!(
                "a cancel scope of task {task} cannot be exited from task {t}"
            )));
        }
        Some(_) => {}
    }
    match cur.kernel.scope(ScopeCall::Exit(ScopeId::from_raw(scope))) {
        Ok(ScopeAnswer::Exited { cancelled, absorbs }) => Ok((cancelled, absorbs)),
        Ok(other) => Err(PyRuntimeError::new_err(format!(
            "unexpected answer {other:?}"
        ))),
        Err(e) => Err(PyRuntimeError::new_err(format!(
            "cancel scope exited out of order or from another task: {e}"
        ))),
    }
}

/// `_scope_cancel(task_id, scope_id) -> status or None`: cancels an open scope.
#[pyfunction]
pub fn _scope_cancel(task: u64, scope: u32) -> PyResult<Status> {
    Ok(status(call(ScopeCall::Cancel(scope_ref(task, scope)))?))
}

/// `_scope_set_deadline(task_id, scope_id, deadline) -> status or None`.
#[pyfunction]
#[pyo3(signature = (task, scope, deadline))]
pub fn _scope_set_deadline(task: u64, scope: u32, deadline: Option<f64>) -> PyResult<Status> {
    let at = to_deadline(deadline)?;
    Ok(status(call(ScopeCall::SetDeadline(
        scope_ref(task, scope),
        at,
    ))?))
}

/// `_scope_set_shield(task_id, scope_id, shield) -> status or None`.
#[pyfunction]
pub fn _scope_set_shield(task: u64, scope: u32, shield: bool) -> PyResult<Status> {
    Ok(status(call(ScopeCall::SetShield(
        scope_ref(task, scope),
        shield,
    ))?))
}

/// `_scope_status(task_id, scope_id) -> (cancelled, deadline, shield) or None`.
#[pyfunction]
pub fn _scope_status(task: u64, scope: u32) -> PyResult<Status> {
    Ok(status(call(ScopeCall::Status(scope_ref(task, scope)))?))
}

/// `tiffany.current_effective_deadline()`: the earliest deadline that
/// applies to the running task's code now (its scopes' up to the innermost
/// shield), in seconds on the scheduler's clock; `inf` if none, `-inf`
/// while the task is effectively cancelled. `RuntimeError` outside a task.
#[pyfunction]
pub fn current_effective_deadline() -> PyResult<f64> {
    match call(ScopeCall::EffectiveDeadline)? {
        Ok(ScopeAnswer::Deadline(None)) => Ok(f64::INFINITY),
        Ok(ScopeAnswer::Deadline(Some(d))) if d.is_zero() => Ok(f64::NEG_INFINITY),
        Ok(ScopeAnswer::Deadline(Some(d))) => Ok(d.as_secs_f64()),
        Ok(other) => Err(PyRuntimeError::new_err(format!(
            "unexpected answer {other:?}"
        ))),
        Err(_) => Err(PyRuntimeError::new_err(
            "current_effective_deadline() can only be called inside a tiffany task",
        )),
    }
}

/// Adds the scope functions to the module.
pub(crate) fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_scope_enter, m)?)?;
    m.add_function(wrap_pyfunction!(_scope_exit, m)?)?;
    m.add_function(wrap_pyfunction!(_scope_cancel, m)?)?;
    m.add_function(wrap_pyfunction!(_scope_set_deadline, m)?)?;
    m.add_function(wrap_pyfunction!(_scope_set_shield, m)?)?;
    m.add_function(wrap_pyfunction!(_scope_status, m)?)?;
    m.add_function(wrap_pyfunction!(current_effective_deadline, m)?)?;
    Ok(())
}
