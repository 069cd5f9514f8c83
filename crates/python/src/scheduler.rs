//! `tiffany.Scheduler` and the module functions that reach the running one
//! (`tiffany.spawn`, `tiffany.now`, `tiffany.current_task`).
//!
//! A Python scheduler wraps one kernel scheduler on the thread that created it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tiffany_scheduler::{
    Body, Clock, PRI_DEFAULT, Scheduler as Kernel, SpawnOptions, TaskEvent, TaskId,
};

use crate::args::{Capacity, Priority, Quantum, check_callable};
use crate::body::PyBody;
use crate::current::{Current, Enter, NEXT_SCHEDULER, current};
use crate::errors::{log_callback_error, spawn_error};
use crate::owner::ThreadBound;
use crate::signals::SigintGuard;
use crate::syscall::check_seconds;
use crate::task::Task;
use crate::telemetry::PyTaskEvent;

/// A scheduler for Python (and native) tasks on the current thread.
#[pyclass(module = "tiffany._native", name = "Scheduler")]
pub struct PyScheduler {
    /// Used on the thread that made the scheduler only (see `owner`).
    cur: ThreadBound<Current>,
}

impl PyScheduler {
    /// The scheduler, on its own thread; a `RuntimeError` on any other.
    #[inline]
    pub(crate) fn cur(&self) -> PyResult<&Current> {
        self.cur.get("Scheduler")
    }
}

fn parse_clock(clock: &str) -> PyResult<Clock> {
    match clock {
        "real" => Ok(Clock::Real),
        "virtual" => Ok(Clock::Virtual),
        other => Err(PyValueError::new_err(format!(
            "clock must be \"real\" or \"virtual\", got {other:?}"
        ))),
    }
}

/// Refuses anything that is not a coroutine or a generator, with a hint,
/// and a coroutine (or generator) that is already a task's.
pub(crate) fn check_task_object(py: Python<'_>, coro: &Bound<'_, PyAny>) -> PyResult<()> {
    if is_task_object(py, coro)? {
        // A task's root coroutine is hidden from the garbage collector while
        // the kernel holds it (see `body::Held`), and a coroutine or
        // generator is tracked from its creation otherwise: an untracked
        // one is held by a task already.
        // SAFETY: the GIL is held and `coro` is a live object.
        if crate::body::is_exact_task_type(py, coro)
            && unsafe { pyo3::ffi::PyObject_GC_IsTracked(coro.as_ptr()) } == 0
        {
            return Err(PyRuntimeError::new_err(
                "this coroutine is already running as a task: a coroutine object can be \
                 spawned once (call the async function again for another task)",
            ));
        }
        return Ok(());
    }
    let what = coro
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let hint = if coro.is_callable() {
        " (did you forget to call the async function?)"
    } else {
        ""
    };
    Err(PyTypeError::new_err(format!(
        "spawn() needs a coroutine or a generator, got {what}{hint}"
    )))
}

/// The types a task can be made of: coroutine and generator types (checked by
/// identity first, the common case), then the `collections.abc` classes.
struct TaskTypes {
    coroutine: Py<PyAny>,
    generator: Py<PyAny>,
    abc_coroutine: Py<PyAny>,
    abc_generator: Py<PyAny>,
}

static TASK_TYPES: pyo3::sync::PyOnceLock<TaskTypes> = pyo3::sync::PyOnceLock::new();

fn task_types(py: Python<'_>) -> PyResult<&TaskTypes> {
    TASK_TYPES.get_or_try_init(py, || {
        let types = py.import("types")?;
        let abc = py.import("collections.abc")?;
        Ok(TaskTypes {
            coroutine: types.getattr("CoroutineType")?.unbind(),
            generator: types.getattr("GeneratorType")?.unbind(),
            abc_coroutine: abc.getattr("Coroutine")?.unbind(),
            abc_generator: abc.getattr("Generator")?.unbind(),
        })
    })
}

fn is_task_object(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let t = task_types(py)?;
    let ty = obj.get_type();
    if ty.is(t.coroutine.bind(py)) || ty.is(t.generator.bind(py)) {
        return Ok(true);
    }
    Ok(obj.is_instance(t.abc_coroutine.bind(py))? || obj.is_instance(t.abc_generator.bind(py))?)
}

impl Current {
    /// Spawns `coro` with `options` (and `name`).
    pub(crate) fn spawn_task(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        mut options: SpawnOptions,
        name: Option<String>,
    ) -> PyResult<Task> {
        check_task_object(py, coro)?;
        if let Some(n) = &name {
            options.name = Some(n.as_str().into());
        }
        let priority = options.priority;
        let body = Body::custom(Box::new(PyBody::new(py, coro.clone().unbind(), self.id)));
        match self.kernel.spawn_body(options, body) {
            Ok(id) => Ok(Task::new(self, id, name, priority)),
            Err(e) => Err(spawn_error(py, &e)),
        }
    }

    /// The kernel ids of `deps` (`Task` handles or Tiffany asyncio tasks of
    /// this scheduler), and whether one has ended failed or cancelled with
    /// its record gone (the kernel judges the others itself).
    fn deps(&self, py: Python<'_>, deps: &Bound<'_, PyAny>) -> PyResult<(Vec<TaskId>, bool)> {
        let mut out = Vec::new();
        let mut doomed = false;
        for d in deps.try_iter()? {
            let d = d?;
            let (id, sched) = if let Ok(t) = d.cast::<Task>() {
                let t = t.borrow();
                (t.id, t.sched)
            } else if crate::aio::task::is_task(py, &d) {
                let facts = crate::aio::task::facts(&d)?;
                let (id, sched) = (TaskId::from_raw(facts.id), facts.sched);
                if sched == self.id && self.kernel.state(id).is_none() {
                    // Ended, and its record is gone: its future tells how.
                    if d.call_method0("cancelled")?.is_truthy()?
                        || !d.call_method0("exception")?.is_none()
                    {
                        doomed = true;
                    }
                    continue;
                }
                (id, sched)
            } else {
                return Err(PyTypeError::new_err(
                    "deps must be tasks returned by spawn() or create_task()",
                ));
            };
            if sched != self.id {
                let err = tiffany_scheduler::SpawnError::UnknownDependency(id);
                return Err(spawn_error(py, &err));
            }
            out.push(id);
        }
        Ok((out, doomed))
    }

    /// `spawn(coro, priority=, deps=, name=, daemon=)` on this scheduler:
    /// a `Task` handle (see [`PyScheduler::spawn`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        priority: Priority,
        deps: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        daemon: bool,
    ) -> PyResult<Task> {
        let (deps, doomed) = self.checked_deps(py, coro, deps)?;
        let options = SpawnOptions::priority(priority.0)
            .with_deps(&deps)
            .daemon(daemon);
        let task = self.spawn_task(py, coro, options, name)?;
        if doomed {
            self.kernel.cancel(task.id);
        }
        Ok(task)
    }

    /// [`Self::deps`], closing `coro` if they are refused.
    fn checked_deps(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        deps: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Vec<TaskId>, bool)> {
        match deps.map(|d| self.deps(py, d)).transpose() {
            Ok(d) => Ok(d.unwrap_or_default()),
            Err(e) => {
                // A refused coroutine is closed, as it is for every other refusal,
                // so it does not warn "never awaited".
                if check_task_object(py, coro).is_ok() {
                    coro.call_method0("close")?;
                }
                Err(e)
            }
        }
    }

    /// `tiffany.spawn`: for a coroutine while a Tiffany loop runs on this
    /// scheduler, an asyncio task of that loop (`tiffany._task.Task`, the
    /// one task object, see ADR 13) carrying the spawn options; else a
    /// `Task` handle.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn_any(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        priority: Priority,
        deps: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        daemon: bool,
    ) -> PyResult<Py<PyAny>> {
        // A generator (pyos-style) task, or a raw system call, has no
        // asyncio face: a handle.
        let coroutine = coro.get_type().is(task_types(py)?.coroutine.bind(py));
        let lp = if coroutine {
            crate::aio::task::running_loop_of(py, self)?
        } else {
            None
        };
        let Some(lp) = lp else {
            let task = self.spawn(py, coro, priority, deps, name, daemon)?;
            return Ok(Py::new(py, task)?.into_any());
        };
        let (deps, doomed) = self.checked_deps(py, coro, deps)?;
        let spawned = crate::aio::task::Spawned {
            priority: priority.0,
            deps,
            daemon,
            doomed,
        };
        crate::aio::task::spawn_on_loop(py, self, &lp, coro, name, spawned)
    }
}

#[pymethods]
impl PyScheduler {
    #[new]
    #[pyo3(signature = (*, clock = "real", quantum = Quantum(tiffany_scheduler::DEFAULT_QUANTUM), capacity = None, backpressure = None, timing_metrics = true))]
    pub(crate) fn new(
        clock: &str,
        quantum: Quantum,
        capacity: Option<Capacity>,
        backpressure: Option<Bound<'_, PyAny>>,
        timing_metrics: bool,
    ) -> PyResult<Self> {
        let clock = parse_clock(clock)?;
        if let Some(cb) = &backpressure {
            check_callable("backpressure", cb)?;
        }
        let backpressure = backpressure.map(Bound::unbind);
        let mut b = Kernel::builder()
            .clock(clock)
            .quantum(quantum.0)
            .retain_finished(0)
            .timing_metrics(timing_metrics)
            .blocking_wrapper(Box::new(|wait: &mut dyn FnMut()| {
                struct AssertSend<'a>(&'a mut dyn FnMut());
                // SAFETY: the closure runs on this same thread, inside `detach`,
                // which only releases the GIL around it.
                unsafe impl Send for AssertSend<'_> {}
                let w = AssertSend(wait);
                Python::attach(|py| {
                    py.detach(move || {
                        let w = w;
                        (w.0)()
                    })
                });
            }));
        // Under the virtual clock the kernel charges each step a fixed cost
        // (its default accounting), so runs are deterministic.
        if let Some(Capacity(c)) = capacity {
            b = b.capacity(c);
        }
        let callback_errors = Rc::new(Cell::new(0u64));
        let interrupt: Rc<RefCell<Option<PyErr>>> = Rc::new(RefCell::new(None));
        let pending = interrupt.clone();
        // Run Python's signal handlers while the scheduler waits or works; an
        // exception from one shuts the scheduler down and is re-raised by run().
        b = b.interrupt_check(Box::new(move || {
            Python::attach(|py| match py.check_signals() {
                Ok(()) => None,
                Err(e) => {
                    pending.borrow_mut().get_or_insert(e);
                    Some(Duration::ZERO)
                }
            })
        }));
        // Under the real clock a stall is reported once as a warning (Ctrl-C
        // still ends it); under the virtual clock the run ends and run()
        // raises `Deadlock` with the report.
        if clock == Clock::Real {
            b = b.on_deadlock(Box::new(|deadlock| {
                Python::attach(|py| {
                    let warned = py
                        .import("logging")
                        .and_then(|l| l.call_method1("getLogger", ("tiffany",)))
                        .and_then(|l| l.call_method1("warning", (deadlock.to_string(),)));
                    if let Err(e) = warned {
                        e.write_unraisable(py, None);
                    }
                })
            }));
        }
        // The report names the task: the name travels with the failure (the
        // task's record is gone by the time the kernel reports it).
        b = b.on_unobserved_failure(Box::new(|task, error| {
            Python::attach(|py| {
                crate::errors::log_task_failure(py, task, "which nothing was waiting for", error);
            })
        }));
        if let Some(cb) = backpressure {
            let errors = callback_errors.clone();
            b = b.backpressure(move || {
                Python::attach(|py| match cb.call0(py).and_then(|v| v.extract::<f64>(py)) {
                    Ok(p) => p,
                    Err(e) => {
                        errors.set(errors.get() + 1);
                        log_callback_error(py, "the backpressure callable", e);
                        f64::NAN
                    }
                })
            });
        }
        let kernel = b
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot create a scheduler: {e}")))?;
        let home = kernel.internal_handle();
        let cur = Current {
            kernel,
            id: NEXT_SCHEDULER.fetch_add(1, Ordering::Relaxed),
            callback_errors,
            interrupt,
            io: Rc::new(RefCell::new(HashMap::new())),
        };
        Ok(PyScheduler {
            cur: ThreadBound::new(cur, home),
        })
    }

    /// Spawns a coroutine (or generator) as a task.
    #[pyo3(signature = (coro, *, priority = Priority::DEFAULT, deps = None, name = None, daemon = false))]
    fn spawn(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        priority: Priority,
        deps: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        daemon: bool,
    ) -> PyResult<Task> {
        self.cur()?.spawn(py, coro, priority, deps, name, daemon)
    }

    /// Spawns a system task: priority 0, never held by back-pressure.
    #[pyo3(signature = (coro, *, name = None))]
    fn spawn_system(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        name: Option<String>,
    ) -> PyResult<Task> {
        self.cur()?
            .spawn_task(py, coro, SpawnOptions::system(), name)
    }

    /// Runs until every non-daemon task has finished (then cancels daemon
    /// tasks). With `main`, spawns it first; when `main` ends (returns or
    /// raises), every other task is cancelled (a shutdown with no grace
    /// period: they see `Cancelled`, their `finally` blocks run), as
    /// `asyncio.run` does; then returns `main`'s result or raises its
    /// exception. Raises `Deadlock` if, under the virtual clock, the run
    /// could never make progress again.
    #[pyo3(signature = (main = None))]
    fn run(&self, py: Python<'_>, main: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let main_task = match main {
            Some(m) => {
                let task =
                    self.cur()?
                        .spawn_task(py, m, SpawnOptions::default(), Some("main".into()))?;
                // `main` is the program: when it ends, so does the run.
                let handle = self.cur()?.kernel.internal_handle();
                self.cur()?.kernel.on_task_end(task.id, move |_, _| {
                    let _ = handle.request_shutdown(Duration::ZERO);
                });
                Some(task)
            }
            None => None,
        };
        let _enter = Enter::new(self.cur()?);
        let sigint = SigintGuard::install(py, self.cur()?)?;
        self.cur()?.kernel.run_until_idle();
        let interrupted = sigint.restore(py)?;
        if let Some(err) = self.cur()?.interrupt.borrow_mut().take() {
            return Err(err);
        }
        if interrupted {
            return Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(()));
        }
        if let Some(deadlock) = self.cur()?.kernel.take_deadlock() {
            return Err(crate::errors::Deadlock::new_err(deadlock.to_string()));
        }
        match main_task {
            Some(t) => t.result(py),
            None => Ok(py.None()),
        }
    }

    /// The scheduler's time in seconds (the virtual clock starts at 0.0).
    fn now(&self) -> PyResult<f64> {
        Ok(self.cur()?.kernel.now().as_secs_f64())
    }

    /// Calls `callback(event)` for every event, on the scheduler's thread.
    /// Exceptions are logged (logger "tiffany") and counted.
    fn on_event(&self, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        check_callable("on_event() callback", callback)?;
        let callback = callback.clone().unbind();
        let errors = self.cur()?.callback_errors.clone();
        self.cur()?.kernel.subscribe(move |e: &TaskEvent| {
            Python::attach(|py| {
                let ev = PyTaskEvent::new(e.clone());
                if let Err(err) = callback.call1(py, (ev,)) {
                    errors.set(errors.get() + 1);
                    log_callback_error(py, "an on_event callback", err);
                }
            })
        });
        Ok(())
    }

    /// Calls `callback(batch)` with the events in order, gathered in an
    /// `EventBatch` of at most `max_batch` events: when `max_batch` have
    /// gathered, when the scheduler is about to wait, and when a run ends.
    /// Much cheaper per event than `on_event`. Exceptions are logged (logger
    /// "tiffany") and counted.
    #[pyo3(signature = (callback, max_batch = 1024))]
    fn on_events(&self, callback: &Bound<'_, PyAny>, max_batch: i64) -> PyResult<()> {
        check_callable("on_events() callback", callback)?;
        if max_batch < 1 {
            return Err(PyValueError::new_err(format!(
                "max_batch must be at least 1, got {max_batch}"
            )));
        }
        // Batches are gathered as events come (nothing is allocated up
        // front), so a huge size only means "deliver when the scheduler waits".
        let max_batch = usize::try_from(max_batch).unwrap_or(usize::MAX);
        self.cur()?
            .kernel
            .subscribe(crate::telemetry::BatchSubscriber::new(
                callback.clone().unbind(),
                max_batch,
                self.cur()?.callback_errors.clone(),
            ));
        Ok(())
    }

    /// The metrics as a dict.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.cur()?.kernel.metrics();
        let d = PyDict::new(py);
        d.set_item("ready_queue_depth", m.ready_queue_depth)?;
        d.set_item("live_tasks", m.live_tasks)?;
        d.set_item("spawned", m.spawned)?;
        d.set_item("done", m.done)?;
        d.set_item("failed", m.failed)?;
        d.set_item("cancelled", m.cancelled)?;
        d.set_item("spawn_denied", m.spawn_denied)?;
        d.set_item("throttles", m.throttles)?;
        d.set_item("backpressure_pauses", m.backpressure_pauses)?;
        d.set_item(
            "callback_errors",
            m.callback_errors + self.cur()?.callback_errors.get(),
        )?;
        d.set_item("steps", m.steps)?;
        let hist = |h: &tiffany_scheduler::metrics::Histogram| -> PyResult<Bound<'py, PyDict>> {
            let hd = PyDict::new(py);
            hd.set_item("count", h.count)?;
            hd.set_item("sum", h.sum)?;
            hd.set_item(
                "buckets",
                PyList::new(py, tiffany_scheduler::metrics::LATENCY_BUCKETS)?,
            )?;
            hd.set_item("counts", PyList::new(py, h.counts)?)?;
            Ok(hd)
        };
        d.set_item("run_latency", hist(&m.run_latency)?)?;
        d.set_item("wait_time", hist(&m.wait_time)?)?;
        Ok(d)
    }

    /// The metrics in the Prometheus text format.
    fn prometheus(&self) -> PyResult<String> {
        let cur = self.cur()?;
        let mut m = cur.kernel.metrics();
        m.callback_errors += cur.callback_errors.get();
        Ok(m.to_prometheus())
    }

    /// Shuts down: refuses new spawns, lets tasks finish until `timeout`
    /// seconds, then cancels the rest; a task still alive after that (it
    /// swallowed `Cancelled` and awaited again) is abandoned, its coroutine
    /// closed. Returns "clean" or "timeout".
    fn shutdown(&self, timeout: f64) -> PyResult<&'static str> {
        let t = check_seconds("timeout", timeout)?;
        let _enter = Enter::new(self.cur()?);
        Ok(self
            .cur()?
            .kernel
            .shutdown(crate::syscall::seconds(t))
            .name())
    }

    /// A thread-safe handle: `spawn`, `cancel`, `shutdown` from other threads.
    fn handle(&self) -> PyResult<crate::threads::Handle> {
        let cur = self.cur()?;
        Ok(crate::threads::Handle {
            kernel: cur.kernel.handle(),
            sched: cur.id,
        })
    }

    /// The last back-pressure reading (0.0–1.0).
    fn pressure(&self) -> PyResult<f64> {
        Ok(self.cur()?.kernel.pressure())
    }

    fn __repr__(&self) -> String {
        let Ok(cur) = self.cur() else {
            return "<tiffany.Scheduler of another thread>".into();
        };
        format!(
            "<tiffany.Scheduler clock={} now={:.6} live={}>",
            match cur.kernel.clock() {
                Clock::Real => "real",
                Clock::Virtual => "virtual",
            },
            cur.kernel.now().as_secs_f64(),
            cur.kernel.live_tasks()
        )
    }
}

/// `tiffany.spawn(coro, ...)`: spawn on the running scheduler (an asyncio
/// task of its loop while one runs, see [`Current::spawn_any`]).
#[pyfunction]
#[pyo3(signature = (coro, *, priority = Priority::DEFAULT, deps = None, name = None, daemon = false))]
pub fn spawn(
    py: Python<'_>,
    coro: &Bound<'_, PyAny>,
    priority: Priority,
    deps: Option<&Bound<'_, PyAny>>,
    name: Option<String>,
    daemon: bool,
) -> PyResult<Py<PyAny>> {
    current()?.spawn_any(py, coro, priority, deps, name, daemon)
}

/// `tiffany.now()`: the running scheduler's time in seconds.
#[pyfunction]
pub fn now() -> PyResult<f64> {
    Ok(current()?.kernel.now().as_secs_f64())
}

/// `tiffany.current_task()`: the task being run, or None outside tasks: its
/// `tiffany.Task` when it is an asyncio task of a running Tiffany loop (the
/// object `asyncio.current_task()` gives), else a handle.
#[pyfunction]
pub fn current_task(py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
    let Ok(cur) = current() else { return Ok(None) };
    let Some(id) = cur.kernel.current_task() else {
        return Ok(None);
    };
    if let Some(task) = crate::aio::task::current_of(py, &cur, id)? {
        return Ok(Some(task));
    }
    let (name, priority) = cur
        .kernel
        .info(id)
        .map(|i| (i.name.map(|n| n.to_string()), i.priority))
        .unwrap_or((None, PRI_DEFAULT));
    Ok(Some(
        Py::new(py, Task::new(&cur, id, name, priority))?.into_any(),
    ))
}
