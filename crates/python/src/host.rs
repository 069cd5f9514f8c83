//! `tiffany.serve`: the daemon hosted in a Python process, running
//! `python` jobs — named `async def` functions — on its kernel.
//!
//! The seam is the daemon's [`JobRunner`] (see `tiffany_daemon::runner`):
//! the thread that calls `serve` makes a Python scheduler (the one
//! `tiffany.Scheduler` makes) and runs its kernel until the daemon shuts
//! it down; the daemon runs on a thread of its own and reaches the kernel
//! only through its thread-safe `Handle`, as `tiffanyd` does with the
//! kernel thread it starts itself. The daemon calls [`PyRunner::start`]
//! and [`PyRunner::end`] on the kernel's thread (inside
//! `Handle::with_scheduler` and an end callback), which holds the GIL
//! while the kernel works: that is where a job's coroutine is made,
//! spawned as a Python task, and its result read. [`PyRunner::check`]
//! runs on the daemon's threads and needs no GIL (it only knows the names).

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use serde::Deserialize;
use tiffany_daemon::config::{Args, Settings};
use tiffany_daemon::runner::{Host, JobEnd, JobRunner};
use tiffany_scheduler::{Body, Outcome, Scheduler as Kernel, SpawnOptions, TaskId};

use crate::args::Quantum;
use crate::body::PyBody;
use crate::current::Enter;
use crate::scheduler::PyScheduler;

/// A `python` job's args.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PythonArgs {
    function: String,
    #[serde(default)]
    #[allow(dead_code)] // checked for its type here, read by Python
    args: Vec<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)] // checked for its type here, read by Python
    kwargs: serde_json::Map<String, serde_json::Value>,
}

/// Runs `python` jobs: `start(id, args_json)` (a Python callable from
/// `tiffany._serve`) makes the job's coroutine, which returns `(ok, text)`:
/// the result as JSON text, or the failure's message.
struct PyRunner {
    names: BTreeSet<String>,
    start: Py<PyAny>,
    /// The Python scheduler's id (the tasks' home).
    sched: u64,
}

impl JobRunner for PyRunner {
    fn serves(&self, kind: &str) -> bool {
        kind == "python"
    }

    fn check(&self, _kind: &str, args: &str) -> Result<(), String> {
        let a: PythonArgs = serde_json::from_str(args).map_err(|e| {
            format!(
                "python args: {e} (expected {{\"function\": name, \"args\": [...], \"kwargs\": {{...}}}})"
            )
        })?;
        if !self.names.contains(&a.function) {
            let served: Vec<&str> = self.names.iter().map(String::as_str).collect();
            return Err(format!(
                "python args: unknown function {:?} (this host serves: {})",
                a.function,
                served.join(", ")
            ));
        }
        Ok(())
    }

    fn start(
        &self,
        sched: &Kernel,
        id: u64,
        _kind: &str,
        args: &str,
        options: SpawnOptions,
    ) -> Result<TaskId, String> {
        Python::attach(|py| {
            let coro = self
                .start
                .call1(py, (id, args))
                .map_err(|e| format!("cannot start the function: {e}"))?;
            let body = Body::custom(Box::new(PyBody::new(py, coro, self.sched)));
            sched.spawn_body(options, body).map_err(|e| e.to_string())
        })
    }

    fn end(&self, outcome: &Outcome) -> JobEnd {
        match outcome {
            Outcome::Done(v) => Python::attach(|py| {
                let read = v
                    .downcast_ref::<Py<PyAny>>()
                    .map(|o| o.extract::<(bool, String)>(py));
                match read {
                    Some(Ok((true, json))) => JobEnd::Succeeded(json),
                    Some(Ok((false, message))) => JobEnd::Failed(message),
                    _ => JobEnd::Failed("the job's task returned no (ok, text) pair".into()),
                }
            }),
            Outcome::Failed(e) => JobEnd::Failed(e.message().to_string()),
            Outcome::Cancelled => JobEnd::Cancelled,
        }
    }
}

/// The daemon's settings a host may give: `(snake_case name, is_flag)`.
#[pyfunction]
pub fn daemon_settings() -> Vec<(String, bool)> {
    Args::command()
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| {
            (
                a.get_id().as_str().to_string(),
                !a.get_action().takes_values(),
            )
        })
        .collect()
}

/// Runs the daemon with `argv` (`tiffanyd`'s command line) on a kernel on
/// this thread, serving `python` jobs for the functions `names` through
/// `start(id, args_json) -> coroutine`; returns once the daemon has
/// stopped. Bad settings raise `ValueError`; a daemon that cannot start
/// (a live socket, a corrupt log) raises `RuntimeError`.
#[pyfunction]
pub fn serve_daemon(
    py: Python<'_>,
    argv: Vec<String>,
    names: Vec<String>,
    start: Py<PyAny>,
) -> PyResult<()> {
    let args = Args::try_parse_from(argv)
        .map_err(|e| PyValueError::new_err(e.render().to_string().trim_end().to_string()))?;
    Settings::resolve(&args).map_err(PyValueError::new_err)?;
    let sched = PyScheduler::new(
        "real",
        Quantum(tiffany_scheduler::DEFAULT_QUANTUM),
        None,
        None,
        true,
    )?;
    let cur = sched.cur()?.clone();
    let stop = Arc::new(tokio::sync::Notify::new());
    let host = Host {
        kernel: cur.kernel.handle(),
        runner: Arc::new(PyRunner {
            names: names.into_iter().collect(),
            start,
            sched: cur.id,
        }),
        stop: stop.clone(),
        ready: None,
    };
    let daemon = std::thread::Builder::new()
        .name("tiffanyd".into())
        .spawn(move || tiffany_daemon::server::main_hosted(args, host))
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the daemon's thread: {e}")))?;
    {
        let _enter = Enter::new(&cur);
        cur.kernel.serve();
    }
    // The daemon stops the kernel when it stops; if something else stopped
    // the kernel first (a signal handler that raised), stop the daemon too.
    stop.notify_one();
    let stopped = py.detach(|| daemon.join());
    if let Some(err) = cur.interrupt.borrow_mut().take() {
        return Err(err);
    }
    match stopped {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.code == 2 => Err(PyValueError::new_err(format!("tiffanyd: {}", e.message))),
        Ok(Err(e)) => Err(PyRuntimeError::new_err(format!("tiffanyd: {}", e.message))),
        Err(_) => Err(PyRuntimeError::new_err("the daemon's thread panicked")),
    }
}

/// Adds `serve_daemon` and `daemon_settings` to the module.
pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(serve_daemon, m)?)?;
    m.add_function(wrap_pyfunction!(daemon_settings, m)?)?;
    Ok(())
}
