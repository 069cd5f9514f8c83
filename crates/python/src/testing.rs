//! `tiffany.testing`: native (Rust) tasks on a Python scheduler.
//!
//! Two small native tasks that show (and test) that native and Python tasks
//! share one scheduler, one id space and one ready queue, and can join each
//! other. They are not part of the everyday API: `tiffany.testing` re-exports
//! them as functions taking the scheduler.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tiffany_scheduler::{PRI_DEFAULT, SpawnOptions, Spawner};

use crate::args::Priority;
use crate::errors::spawn_error;
use crate::scheduler::PyScheduler;
use crate::syscall::{check_seconds, seconds};
use crate::task::Task;

/// Spawns on `sched` a native task that joins `task` and returns its result:
/// it fails if `task` failed and is cancelled if `task` was.
#[pyfunction]
#[pyo3(signature = (sched, task, *, name = None))]
pub fn spawn_native_join(
    py: Python<'_>,
    sched: &Bound<'_, PyScheduler>,
    task: &Bound<'_, Task>,
    name: Option<String>,
) -> PyResult<Task> {
    let sched = sched.borrow();
    let cur = sched.cur()?;
    let target = {
        let t = task.borrow();
        if t.sched != cur.id {
            return Err(PyRuntimeError::new_err(
                "cannot join a task of another scheduler",
            ));
        }
        t.id
    };
    let options = SpawnOptions {
        name: name.as_deref().map(Into::into),
        ..SpawnOptions::default()
    };
    let id = cur
        .kernel
        .spawn_with(options, move |cx| match cx.join(target) {
            tiffany_scheduler::JoinResult::Success(v) => v,
            tiffany_scheduler::JoinResult::Failed(e) => {
                std::panic::resume_unwind(Box::new(format!("joined task failed: {}", e.message())))
            }
            _ => {
                // Cancelled (or a timeout, which a plain join cannot give):
                // end cancelled too, through level-triggered cancellation.
                let me = cx.tid();
                cx.cancel(me);
                cx.yield_now();
                tiffany_scheduler::Value::unit()
            }
        })
        .map_err(|e| spawn_error(py, &e))?;
    Ok(Task::new(cur, id, name, PRI_DEFAULT))
}

/// Spawns on `sched` a native task that sleeps `seconds` on the kernel's
/// clock and returns `result`; Python tasks can await it like any task.
#[pyfunction]
#[pyo3(signature = (sched, seconds, result = None, *, priority = Priority::DEFAULT, name = None))]
pub fn spawn_native_sleep(
    py: Python<'_>,
    sched: &Bound<'_, PyScheduler>,
    seconds: f64,
    result: Option<Py<PyAny>>,
    priority: Priority,
    name: Option<String>,
) -> PyResult<Task> {
    let sched = sched.borrow();
    let cur = sched.cur()?;
    let d = self::seconds(check_seconds("seconds", seconds)?);
    let mut options = SpawnOptions::priority(priority.0);
    options.name = name.as_deref().map(Into::into);
    let result = result.unwrap_or_else(|| py.None());
    // The closure only moves the object; it never touches Python.
    let id = cur
        .kernel
        .spawn_with(options, move |cx| {
            cx.sleep(d);
            result
        })
        .map_err(|e| spawn_error(py, &e))?;
    Ok(Task::new(cur, id, name, priority.0))
}
