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
//! runs on the daemon's threads and needs no GIL: it knows each function's
//! name and the shape of its signature ([`Signature`], read once by
//! `tiffany._serve` when `serve` starts), so a job whose args do not fit
//! its function is refused at submit, as Python's call would refuse them,
//! before anything is written to the log.

use std::collections::BTreeMap;
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
    /// Checked for its type and length here, read by Python.
    #[serde(default)]
    args: Vec<serde_json::Value>,
    /// Checked for its type and names here, read by Python.
    #[serde(default)]
    kwargs: serde_json::Map<String, serde_json::Value>,
}

/// The shape of a served function's signature, as `inspect.signature`
/// gives it: what [`Signature::bind`] needs to tell whether a call fits.
#[derive(Debug, Default, FromPyObject)]
#[pyo3(from_item_all)]
pub struct Signature {
    /// The parameters that take a positional argument, in order:
    /// `(name, required)`.
    positional: Vec<(String, bool)>,
    /// How many of `positional` are positional-only (before a `/`).
    positional_only: usize,
    /// Whether it has `*args`.
    var_positional: bool,
    /// The keyword-only parameters: `(name, required)`.
    keyword_only: Vec<(String, bool)>,
    /// Whether it has `**kwargs`.
    var_keyword: bool,
}

impl Signature {
    /// Whether `function(*args, **kwargs)` with `positional` args and the
    /// keyword names `keywords` binds; else the `TypeError` message Python
    /// would give.
    fn bind<'a>(
        &self,
        function: &str,
        positional: usize,
        keywords: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let most = self.positional.len();
        if positional > most && !self.var_positional {
            let least = self.positional.iter().filter(|p| p.1).count();
            let takes = if least == most {
                format!("{most}")
            } else {
                format!("from {least} to {most}")
            };
            let s = if most == 1 && least == most { "" } else { "s" };
            let were = if positional == 1 { "was" } else { "were" };
            return Err(format!(
                "{function}() takes {takes} positional argument{s} but {positional} {were} given"
            ));
        }
        let mut filled: Vec<bool> = (0..most).map(|i| i < positional).collect();
        let mut keyword_filled = vec![false; self.keyword_only.len()];
        for key in keywords {
            if let Some(i) = self.positional.iter().position(|p| p.0 == key) {
                if i < self.positional_only {
                    if self.var_keyword {
                        continue;
                    }
                    return Err(format!(
                        "{function}() got some positional-only arguments passed as keyword arguments: '{key}'"
                    ));
                }
                if filled[i] {
                    return Err(format!(
                        "{function}() got multiple values for argument '{key}'"
                    ));
                }
                filled[i] = true;
            } else if let Some(i) = self.keyword_only.iter().position(|p| p.0 == key) {
                keyword_filled[i] = true;
            } else if !self.var_keyword {
                return Err(format!(
                    "{function}() got an unexpected keyword argument '{key}'"
                ));
            }
        }
        let missing = |params: &[(String, bool)], filled: &[bool]| -> Vec<String> {
            params
                .iter()
                .zip(filled)
                .filter(|((_, required), filled)| *required && !**filled)
                .map(|((name, _), _)| format!("'{name}'"))
                .collect()
        };
        for (names, kind) in [
            (missing(&self.positional, &filled), "positional"),
            (missing(&self.keyword_only, &keyword_filled), "keyword-only"),
        ] {
            if !names.is_empty() {
                let n = names.len();
                let s = if n == 1 { "" } else { "s" };
                return Err(format!(
                    "{function}() missing {n} required {kind} argument{s}: {}",
                    english_list(&names)
                ));
            }
        }
        Ok(())
    }
}

/// `'a'`, `'a' and 'b'`, `'a', 'b' and 'c'` (as Python's messages list names).
fn english_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Runs `python` jobs: `start(id, args_json)` (a Python callable from
/// `tiffany._serve`) makes the job's coroutine, which returns `(ok, text)`:
/// the result as JSON text, or the failure's message.
struct PyRunner {
    /// The served functions by name, with their signature's shape (`None`
    /// when `inspect` could not read one: the call is then checked when the
    /// job runs).
    functions: BTreeMap<String, Option<Signature>>,
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
        let Some(signature) = self.functions.get(&a.function) else {
            let served: Vec<&str> = self.functions.keys().map(String::as_str).collect();
            return Err(format!(
                "python args: unknown function {:?} (this host serves: {})",
                a.function,
                served.join(", ")
            ));
        };
        match signature {
            Some(sig) => sig
                .bind(
                    &a.function,
                    a.args.len(),
                    a.kwargs.keys().map(String::as_str),
                )
                .map_err(|e| format!("python args: {e}")),
            None => Ok(()),
        }
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
/// this thread, serving `python` jobs for `functions` (name → the shape of
/// its signature, or `None`) through `start(id, args_json) -> coroutine`; returns once the daemon has
/// stopped. Bad settings raise `ValueError`; a daemon that cannot start
/// (a live socket, a corrupt log) raises `RuntimeError`.
#[pyfunction]
pub fn serve_daemon(
    py: Python<'_>,
    argv: Vec<String>,
    functions: BTreeMap<String, Option<Signature>>,
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
            functions,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(names: &[(&str, bool)]) -> Vec<(String, bool)> {
        names.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    /// `async def f(a, b=1, /, c=2, *, d, e=3)`
    fn shape() -> Signature {
        Signature {
            positional: params(&[("a", true), ("b", false), ("c", false)]),
            positional_only: 2,
            var_positional: false,
            keyword_only: params(&[("d", true), ("e", false)]),
            var_keyword: false,
        }
    }

    #[test]
    fn calls_that_fit_bind() {
        let sig = shape();
        assert_eq!(sig.bind("f", 1, ["d"]), Ok(()));
        assert_eq!(sig.bind("f", 3, ["d", "e"]), Ok(()));
        assert_eq!(sig.bind("f", 2, ["c", "d"]), Ok(()));
    }

    #[test]
    fn calls_that_do_not_fit_get_pythons_message() {
        let sig = shape();
        let cases: [(usize, &[&str], &str); 6] = [
            (
                4,
                &["d"],
                "f() takes from 1 to 3 positional arguments but 4 were given",
            ),
            (1, &[], "f() missing 1 required keyword-only argument: 'd'"),
            (0, &["d"], "f() missing 1 required positional argument: 'a'"),
            (1, &["d", "z"], "f() got an unexpected keyword argument 'z'"),
            (3, &["c", "d"], "f() got multiple values for argument 'c'"),
            (
                1,
                &["b", "d"],
                "f() got some positional-only arguments passed as keyword arguments: 'b'",
            ),
        ];
        for (n, keys, message) in cases {
            assert_eq!(sig.bind("f", n, keys.iter().copied()), Err(message.into()));
        }
    }

    #[test]
    fn star_args_and_kwargs_take_the_rest() {
        let sig = Signature {
            positional: params(&[("a", true), ("b", true)]),
            positional_only: 1,
            var_positional: true,
            keyword_only: vec![],
            var_keyword: true,
        };
        assert_eq!(sig.bind("g", 5, ["a", "x"]), Ok(()));
        assert_eq!(
            sig.bind("g", 0, []),
            Err("g() missing 2 required positional arguments: 'a' and 'b'".into())
        );
        let one = Signature {
            positional: params(&[("a", true)]),
            ..Signature::default()
        };
        assert_eq!(
            one.bind("h", 2, []),
            Err("h() takes 1 positional argument but 2 were given".into())
        );
        assert_eq!(
            Signature::default().bind("k", 1, []),
            Err("k() takes 0 positional arguments but 1 was given".into())
        );
    }

    #[test]
    fn names_are_listed_as_python_lists_them() {
        let names: Vec<String> = ["'a'", "'b'", "'c'"].map(String::from).to_vec();
        assert_eq!(english_list(&names[..1]), "'a'");
        assert_eq!(english_list(&names[..2]), "'a' and 'b'");
        assert_eq!(english_list(&names), "'a', 'b' and 'c'");
    }
}
