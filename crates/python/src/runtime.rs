//! `tiffany.Scheduler`, `tiffany.Task` and the functions that find the current
//! scheduler.
//!
//! A Python scheduler wraps one kernel scheduler on the thread that created it.
//! While it runs, it is the thread's *current* scheduler: `tiffany.spawn`,
//! `tiffany.now` and `tiffany.current_task` inside tasks reach it through a
//! thread-local stack.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tiffany_scheduler::{
    Accounting, Body, Clock, EventKind, Outcome, PRI_DEFAULT, Scheduler as Kernel, SpawnOptions,
    TaskEvent, TaskId,
};

use crate::body::PyBody;
use crate::convert::value_to_py;
use crate::errors::{TaskCancelled, spawn_error, task_error};
use crate::syscall::{Kind, Syscall, check_seconds};

static NEXT_SCHEDULER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The schedulers running on this thread, innermost last.
    static CURRENT: RefCell<Vec<Current>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone)]
struct Current {
    kernel: Kernel,
    id: u64,
    callback_errors: Rc<Cell<u64>>,
}

fn current() -> PyResult<Current> {
    CURRENT
        .with(|c| c.borrow().last().cloned())
        .ok_or_else(|| PyRuntimeError::new_err("no tiffany scheduler is running on this thread"))
}

/// Logs an exception raised by a user callback on the "tiffany" logger.
fn log_callback_error(py: Python<'_>, what: &str, err: PyErr) {
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

/// A task: its id, name and priority, its state, and its outcome once done.
///
/// Awaiting a task joins it: the result, or the task's exception re-raised,
/// or `TaskCancelled`.
#[pyclass(module = "tiffany._native", name = "Task", unsendable)]
pub struct Task {
    id: TaskId,
    name: Option<String>,
    priority: u8,
    kernel: Kernel,
    sched: u64,
    callback_errors: Rc<Cell<u64>>,
}

impl Task {
    fn new(cur: &Current, id: TaskId, name: Option<String>, priority: u8) -> Self {
        cur.kernel.retain(id);
        Task {
            id,
            name,
            priority,
            kernel: cur.kernel.clone(),
            sched: cur.id,
            callback_errors: cur.callback_errors.clone(),
        }
    }

    fn outcome(&self) -> Option<Outcome> {
        self.kernel.outcome(self.id)
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.kernel.release(self.id);
    }
}

#[pymethods]
impl Task {
    /// The task's id (unique within its scheduler, increasing).
    #[getter]
    fn id(&self) -> u64 {
        self.id.get()
    }

    /// The name given at spawn, or None.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The priority (0 first, 255 last).
    #[getter]
    fn priority(&self) -> u8 {
        self.priority
    }

    /// One of "pending", "scheduled", "running", "sleeping", "waiting",
    /// "throttled", "finished", "failed", "cancelled".
    #[getter]
    fn state(&self) -> &'static str {
        match self.kernel.state(self.id) {
            Some(s) => s.name(),
            None => "finished",
        }
    }

    /// Whether the task has ended (finished, failed or cancelled).
    fn done(&self) -> bool {
        self.outcome().is_some()
    }

    /// The task's return value; re-raises its exception; raises
    /// `TaskCancelled` if it was cancelled and `RuntimeError` if not done.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.outcome() {
            None => Err(PyRuntimeError::new_err(format!(
                "task {} is not done",
                self.id
            ))),
            Some(Outcome::Done(v)) => Ok(value_to_py(py, &v)),
            Some(Outcome::Failed(e)) => Err(task_error(py, &e)),
            Some(Outcome::Cancelled) => Err(TaskCancelled::new_err(format!(
                "task {} was cancelled",
                self.id
            ))),
        }
    }

    /// The task's exception, or None if it returned; raises `TaskCancelled`
    /// if it was cancelled and `RuntimeError` if not done.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.outcome() {
            None => Err(PyRuntimeError::new_err(format!(
                "task {} is not done",
                self.id
            ))),
            Some(Outcome::Done(_)) => Ok(None),
            Some(Outcome::Failed(e)) => Ok(Some(task_error(py, &e).into_value(py).into_any())),
            Some(Outcome::Cancelled) => Err(TaskCancelled::new_err(format!(
                "task {} was cancelled",
                self.id
            ))),
        }
    }

    /// Cancels the task; returns whether it was still live.
    fn cancel(&self) -> bool {
        self.kernel.cancel(self.id)
    }

    /// Calls `fn(task)` once the task has ended (at once if it already has),
    /// on the scheduler's thread between steps. Exceptions are logged.
    fn add_done_callback(slf: PyRef<'_, Self>, callback: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let errors = slf.callback_errors.clone();
        let task: Py<Task> = slf.into_pyobject(py)?.unbind();
        let kernel = task.borrow(py).kernel.clone();
        let id = task.borrow(py).id;
        let registered = kernel.on_task_end(id, move |_, _| {
            Python::attach(|py| {
                if let Err(e) = callback.call1(py, (task.clone_ref(py),)) {
                    errors.set(errors.get() + 1);
                    log_callback_error(py, "a done callback", e);
                }
            })
        });
        if !registered {
            return Err(PyRuntimeError::new_err("the task's record is gone"));
        }
        Ok(())
    }

    fn __await__(&self) -> Syscall {
        Syscall::new(Kind::Join {
            target: self.id.get(),
            sched: self.sched,
            timeout: None,
        })
    }

    fn __repr__(&self) -> String {
        match &self.name {
            Some(n) => format!("<Task {} {:?} {}>", self.id, n, self.state()),
            None => format!("<Task {} {}>", self.id, self.state()),
        }
    }

    fn __hash__(&self) -> u64 {
        self.id.get() ^ (self.sched << 48)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<Task>() {
            Ok(o) => {
                let o = o.borrow();
                o.id == self.id && o.sched == self.sched
            }
            Err(_) => false,
        }
    }
}

/// An event given to `on_event` callbacks: one transition of one task (or of
/// the scheduler).
#[pyclass(module = "tiffany._native", name = "TaskEvent", frozen)]
pub struct PyTaskEvent {
    event: TaskEvent,
}

#[pymethods]
impl PyTaskEvent {
    /// "spawned", "running", "yield", "sleep", "io_wait", "join", "done",
    /// "failed", "cancelled", "throttled", "paused", "resumed", "spawn_denied",
    /// "shutdown_begin", "shutdown_complete" or "log".
    #[getter]
    fn kind(&self) -> &'static str {
        self.event.kind.name()
    }

    /// The task's id, or None for scheduler-wide events.
    #[getter]
    fn task_id(&self) -> Option<u64> {
        self.event.task.map(TaskId::get)
    }

    /// The scheduler's time of the event, in seconds.
    #[getter]
    fn time(&self) -> f64 {
        self.event.time.as_secs_f64()
    }

    /// The event's details (for example `{"until": 0.05}` for "sleep").
    #[getter]
    fn detail<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        match &self.event.kind {
            EventKind::Spawned {
                priority,
                name,
                deps,
            } => {
                d.set_item("priority", priority)?;
                d.set_item("name", name.as_deref())?;
                d.set_item("deps", deps)?;
            }
            EventKind::Sleep { until } => d.set_item("until", until.as_secs_f64())?,
            EventKind::IoWait { token, interest } => {
                d.set_item("token", token.get())?;
                d.set_item("interest", interest.name())?;
            }
            EventKind::Join { target } => d.set_item("target", target.get())?,
            EventKind::Failed { message } => d.set_item("error", &**message)?,
            EventKind::Throttled { used } => d.set_item("used", used.as_secs_f64())?,
            EventKind::Paused { pressure } | EventKind::Resumed { pressure } => {
                d.set_item("pressure", pressure)?
            }
            EventKind::SpawnDenied { reason } => d.set_item("reason", reason)?,
            EventKind::ShutdownBegin { timeout } => d.set_item("timeout", timeout.as_secs_f64())?,
            EventKind::ShutdownComplete { clean } => d.set_item("clean", clean)?,
            EventKind::Log { message } => d.set_item("message", &**message)?,
            EventKind::Running | EventKind::Yield | EventKind::Done | EventKind::Cancelled => {}
        }
        Ok(d)
    }

    /// The event as one PAL line (JSON).
    fn to_json(&self) -> String {
        self.event.to_json()
    }

    fn __repr__(&self) -> String {
        format!("<TaskEvent {}>", self.event.to_json())
    }
}

/// A scheduler for Python (and native) tasks on the current thread.
#[pyclass(module = "tiffany._native", name = "Scheduler", unsendable)]
pub struct PyScheduler {
    cur: Current,
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

fn is_task_object(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let types = py.import("types")?;
    if obj.is_instance(&types.getattr("CoroutineType")?)?
        || obj.is_instance(&types.getattr("GeneratorType")?)?
    {
        return Ok(true);
    }
    let abc = py.import("collections.abc")?;
    Ok(obj.is_instance(&abc.getattr("Coroutine")?)?
        || obj.is_instance(&abc.getattr("Generator")?)?)
}

impl PyScheduler {
    fn spawn_inner(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        mut options: SpawnOptions,
        name: Option<String>,
    ) -> PyResult<Task> {
        if !is_task_object(py, coro)? {
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
            return Err(PyTypeError::new_err(format!(
                "spawn() needs a coroutine or a generator, got {what}{hint}"
            )));
        }
        if let Some(n) = &name {
            options.name = Some(n.as_str().into());
        }
        let priority = options.priority;
        let body = Body::custom(Box::new(PyBody::new(coro.clone().unbind(), self.cur.id)));
        match self.cur.kernel.spawn_body(body, options) {
            Ok(id) => Ok(Task::new(&self.cur, id, name, priority)),
            Err(e) => Err(spawn_error(py, &e)),
        }
    }

    fn deps(&self, deps: &Bound<'_, PyAny>) -> PyResult<Vec<TaskId>> {
        let mut out = Vec::new();
        for d in deps.try_iter()? {
            let d = d?;
            let t = d.cast::<Task>().map_err(|_| {
                PyTypeError::new_err("deps must be Task objects returned by spawn()")
            })?;
            let t = t.borrow();
            if t.sched != self.cur.id {
                return Err(PyValueError::new_err(
                    "a dependency belongs to another scheduler",
                ));
            }
            out.push(t.id);
        }
        Ok(out)
    }
}

#[pymethods]
impl PyScheduler {
    #[new]
    #[pyo3(signature = (*, clock = "real", quantum = 0.005, capacity = None, backpressure = None))]
    fn new(
        clock: &str,
        quantum: f64,
        capacity: Option<usize>,
        backpressure: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let clock = parse_clock(clock)?;
        let quantum = check_seconds("quantum", quantum)?;
        if quantum == 0.0 {
            return Err(PyValueError::new_err("quantum must be > 0"));
        }
        let mut b = Kernel::builder()
            .clock(clock)
            .quantum(Duration::from_secs_f64(quantum))
            .retain_finished(0)
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
        if clock == Clock::Virtual {
            b = b.accounting(Accounting::PerStep(Duration::from_micros(100)));
        }
        if let Some(c) = capacity {
            if c == 0 {
                return Err(PyValueError::new_err("capacity must be at least 1"));
            }
            b = b.capacity(c);
        }
        let callback_errors = Rc::new(Cell::new(0u64));
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
        Ok(PyScheduler {
            cur: Current {
                kernel,
                id: NEXT_SCHEDULER.fetch_add(1, Ordering::Relaxed),
                callback_errors,
            },
        })
    }

    /// Spawns a coroutine (or generator) as a task.
    #[pyo3(signature = (coro, *, priority = PRI_DEFAULT, deps = None, name = None, daemon = false))]
    fn spawn(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        priority: u8,
        deps: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        daemon: bool,
    ) -> PyResult<Task> {
        let deps = match deps {
            Some(d) => self.deps(d)?,
            None => Vec::new(),
        };
        let options = SpawnOptions::priority(priority)
            .with_deps(&deps)
            .daemon(daemon);
        self.spawn_inner(py, coro, options, name)
    }

    /// Spawns a system task: priority 0, never held by back-pressure.
    #[pyo3(signature = (coro, *, name = None))]
    fn spawn_system(
        &self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        name: Option<String>,
    ) -> PyResult<Task> {
        self.spawn_inner(py, coro, SpawnOptions::system(), name)
    }

    /// Runs until every non-daemon task has finished (then cancels daemon
    /// tasks). With `main`, spawns it first and returns its result (or raises
    /// its exception).
    #[pyo3(signature = (main = None))]
    fn run(&self, py: Python<'_>, main: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let main_task = match main {
            Some(m) => {
                Some(self.spawn_inner(py, m, SpawnOptions::default(), Some("main".into()))?)
            }
            None => None,
        };
        CURRENT.with(|c| c.borrow_mut().push(self.cur.clone()));
        struct Pop;
        impl Drop for Pop {
            fn drop(&mut self) {
                CURRENT.with(|c| c.borrow_mut().pop());
            }
        }
        let _pop = Pop;
        self.cur.kernel.run_until_idle();
        match main_task {
            Some(t) => t.result(py),
            None => Ok(py.None()),
        }
    }

    /// The scheduler's time in seconds (the virtual clock starts at 0.0).
    fn now(&self) -> f64 {
        self.cur.kernel.now().as_secs_f64()
    }

    /// Calls `callback(event)` for every event, on the scheduler's thread.
    /// Exceptions are logged (logger "tiffany") and counted.
    fn on_event(&self, callback: Py<PyAny>) {
        let errors = self.cur.callback_errors.clone();
        self.cur.kernel.subscribe(move |e: &TaskEvent| {
            Python::attach(|py| {
                let ev = PyTaskEvent { event: e.clone() };
                if let Err(err) = callback.call1(py, (ev,)) {
                    errors.set(errors.get() + 1);
                    log_callback_error(py, "an on_event callback", err);
                }
            })
        });
    }

    /// The metrics as a dict.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.cur.kernel.metrics();
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
            m.callback_errors + self.cur.callback_errors.get(),
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
    fn prometheus(&self) -> String {
        let mut m = self.cur.kernel.metrics();
        m.callback_errors += self.cur.callback_errors.get();
        m.to_prometheus()
    }

    /// Shuts down: refuses new spawns, lets tasks finish until `timeout`
    /// seconds, cancels the rest. Returns "clean" or "timeout".
    fn shutdown(&self, timeout: f64) -> PyResult<&'static str> {
        let t = check_seconds("timeout", timeout)?;
        Ok(self.cur.kernel.shutdown(Duration::from_secs_f64(t)).name())
    }

    /// The last back-pressure reading (0.0–1.0).
    fn pressure(&self) -> f64 {
        self.cur.kernel.pressure()
    }

    fn __repr__(&self) -> String {
        format!(
            "<tiffany.Scheduler clock={} now={:.6} live={}>",
            match self.cur.kernel.clock() {
                Clock::Real => "real",
                Clock::Virtual => "virtual",
            },
            self.cur.kernel.now().as_secs_f64(),
            self.cur.kernel.live_tasks()
        )
    }
}

/// `tiffany.spawn(coro, ...)`: spawn on the running scheduler.
#[pyfunction]
#[pyo3(signature = (coro, *, priority = PRI_DEFAULT, deps = None, name = None, daemon = false))]
pub fn spawn(
    py: Python<'_>,
    coro: &Bound<'_, PyAny>,
    priority: u8,
    deps: Option<&Bound<'_, PyAny>>,
    name: Option<String>,
    daemon: bool,
) -> PyResult<Task> {
    let cur = current()?;
    let sched = PyScheduler { cur };
    sched.spawn(py, coro, priority, deps, name, daemon)
}

/// `tiffany.now()`: the running scheduler's time in seconds.
#[pyfunction]
pub fn now() -> PyResult<f64> {
    Ok(current()?.kernel.now().as_secs_f64())
}

/// `tiffany.current_task()`: the task being run, or None outside tasks.
#[pyfunction]
pub fn current_task() -> PyResult<Option<Task>> {
    let Ok(cur) = current() else { return Ok(None) };
    Ok(cur.kernel.current_task().map(|id| {
        let (name, priority) = cur
            .kernel
            .info(id)
            .map(|i| (i.name.map(|n| n.to_string()), i.priority))
            .unwrap_or((None, PRI_DEFAULT));
        Task::new(&cur, id, name, priority)
    }))
}

/// `await tiffany.join(task, timeout=None)`: wait for a task; raises
/// `JoinTimeout` if the timeout passes first.
#[pyfunction]
#[pyo3(signature = (task, timeout = None))]
pub fn join(task: &Bound<'_, Task>, timeout: Option<f64>) -> PyResult<Syscall> {
    let t = task.borrow();
    let timeout = timeout
        .map(|s| check_seconds("join() timeout", s))
        .transpose()?;
    Ok(Syscall::new(Kind::Join {
        target: t.id.get(),
        sched: t.sched,
        timeout,
    }))
}
