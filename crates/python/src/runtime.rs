//! `tiffany.Scheduler`, `tiffany.Task` and the functions that find the current
//! scheduler.
//!
//! A Python scheduler wraps one kernel scheduler on the thread that created it.
//! While it runs, it is the thread's *current* scheduler: `tiffany.spawn`,
//! `tiffany.now` and `tiffany.current_task` inside tasks reach it through a
//! thread-local stack.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyWeakrefReference};
use tiffany_scheduler::{
    Accounting, Body, Clock, EventKind, IoToken, Outcome, PRI_DEFAULT, Scheduler as Kernel,
    SpawnOptions, Spawner, TaskEvent, TaskId, TaskState,
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
    /// An exception raised by a signal handler while the scheduler waited.
    interrupt: Rc<RefCell<Option<PyErr>>>,
    /// Descriptors registered with the reactor, with how many waits use each.
    io: Rc<RefCell<HashMap<i32, IoReg>>>,
}

/// A descriptor registered with the reactor, and what uses it.
pub(crate) struct IoReg {
    token: IoToken,
    /// Waits in progress on it.
    waits: usize,
    /// A weak reference to the socket (or file) object it was registered
    /// for. With one, the registration outlives the wait: the object cannot
    /// change its descriptor, so while it is alive and the same object asks
    /// again, the registration is still the descriptor's. Without one (a raw
    /// descriptor number), it ends with the last wait, since nothing tells
    /// the number's next owner from this one.
    owner: Option<Py<PyWeakrefReference>>,
}

impl IoReg {
    fn owned_by(&self, py: Python<'_>, owner: Option<&Bound<'_, PyAny>>) -> bool {
        match (&self.owner, owner) {
            (None, None) => true,
            (Some(r), Some(o)) => r.bind(py).upgrade().is_some_and(|alive| alive.is(o)),
            _ => false,
        }
    }
}

/// Registers `fd` for a wait (or counts one more wait on it). `owner` is the
/// object the descriptor belongs to, when known: its registration is kept
/// for the next wait (see [`IoReg::owner`]).
pub(crate) fn io_acquire(
    py: Python<'_>,
    fd: i32,
    owner: Option<&Bound<'_, PyAny>>,
) -> PyResult<IoToken> {
    let cur = current()?;
    let stale = {
        let mut io = cur.io.borrow_mut();
        match io.get_mut(&fd) {
            Some(reg) => {
                let same = reg.owned_by(py, owner);
                if same || reg.waits > 0 {
                    // The same owner, or a wait in progress shows the
                    // descriptor is open and registered: share the registration.
                    reg.waits += 1;
                    if !same && let Some(o) = owner {
                        reg.owner = PyWeakrefReference::new(o).ok().map(Bound::unbind);
                    }
                    return Ok(reg.token);
                }
                // Left by an object that is gone (or by another one): the
                // number may have been closed and reused since. Start afresh.
                io.remove(&fd).map(|reg| reg.token)
            }
            None => None,
        }
    };
    if let Some(token) = stale {
        cur.kernel.deregister_io(token);
    }
    struct Fd(i32);
    impl tiffany_scheduler::IoSource for Fd {
        fn raw_fd(&self) -> i32 {
            self.0
        }
    }
    let token = cur.kernel.register_io(&Fd(fd)).map_err(PyErr::from)?;
    // An object that cannot be weakly referenced is treated as a number.
    let owner = owner.and_then(|o| PyWeakrefReference::new(o).ok().map(Bound::unbind));
    cur.io.borrow_mut().insert(
        fd,
        IoReg {
            token,
            waits: 1,
            owner,
        },
    );
    Ok(token)
}

/// Ends one wait on `fd`; a registration without an owner ends with its
/// last wait.
pub(crate) fn io_release(fd: i32) {
    let Ok(cur) = current() else { return };
    let mut io = cur.io.borrow_mut();
    if let Some(reg) = io.get_mut(&fd) {
        reg.waits = reg.waits.saturating_sub(1);
        if reg.waits == 0 && reg.owner.is_none() {
            let token = reg.token;
            io.remove(&fd);
            drop(io);
            cur.kernel.deregister_io(token);
        }
    }
}

/// Ends the running scheduler's run with `err` (KeyboardInterrupt or
/// SystemExit from a task): shut down now, re-raise from `run()`.
pub(crate) fn interrupt_with(err: PyErr) {
    if let Ok(cur) = current() {
        cur.interrupt.borrow_mut().get_or_insert(err);
        let _ = cur.kernel.handle().request_shutdown(Duration::ZERO);
    }
}

/// A new in-memory channel on the running scheduler, and a handle to notify it.
pub(crate) fn new_channel() -> PyResult<(tiffany_scheduler::Handle, IoToken)> {
    let cur = current()?;
    Ok((cur.kernel.handle(), cur.kernel.register_channel()))
}

/// Releases a channel made by [`new_channel`].
pub(crate) fn close_channel(token: IoToken) {
    if let Ok(cur) = current() {
        cur.kernel.deregister_io(token);
    }
}

/// Makes `cur` the thread's current scheduler until the guard drops.
struct Enter;

impl Enter {
    fn new(cur: &Current) -> Self {
        CURRENT.with(|c| c.borrow_mut().push(cur.clone()));
        Enter
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().pop());
    }
}

/// The token of a channel on the current scheduler.
pub(crate) fn channel_token(raw: u64) -> PyResult<IoToken> {
    current()?;
    Ok(IoToken::from_raw(raw))
}

/// A `Task` object for a task just spawned on the running scheduler (a
/// native task spawned by another module of this crate).
pub(crate) fn task_for(id: TaskId, name: Option<String>, priority: u8) -> PyResult<Task> {
    Ok(Task::new(&current()?, id, name, priority))
}

/// The running scheduler of this thread and its id.
pub(crate) fn current_kernel() -> PyResult<(Kernel, u64)> {
    current().map(|c| (c.kernel, c.id))
}

fn current() -> PyResult<Current> {
    CURRENT
        .with(|c| c.borrow().last().cloned())
        .ok_or_else(|| PyRuntimeError::new_err("no tiffany scheduler is running on this thread"))
}

/// Logs an exception raised by a user callback on the "tiffany" logger.
pub(crate) fn log_callback_error(py: Python<'_>, what: &str, err: PyErr) {
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
        // The state first: it is a copy, the outcome a clone of shared values.
        if self.kernel.state(self.id) == Some(TaskState::Failed)
            && let Some(Outcome::Failed(e)) = self.outcome()
            && !self.kernel.observe(self.id)
        {
            Python::attach(|py| {
                let err = task_error(py, &e);
                log_callback_error(
                    py,
                    &format!("task {} (its exception was never retrieved)", self.id),
                    err,
                );
            });
        }
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
        self.kernel.observe(self.id);
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
        self.kernel.observe(self.id);
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

    /// Makes this task (which must not have started yet) also wait for
    /// `other`. Raises `SpawnError` with reason "cycle" if `other` already
    /// waits for this task (or is this task), "unknown_dependency" if it
    /// belongs to another scheduler.
    fn add_dependency(&self, py: Python<'_>, other: &Bound<'_, Task>) -> PyResult<()> {
        let other = other.borrow();
        if other.sched != self.sched {
            let err = tiffany_scheduler::SpawnError::UnknownDependency(other.id);
            return Err(spawn_error(py, &err));
        }
        self.kernel
            .add_dependency(self.id, other.id)
            .map_err(|e| spawn_error(py, &e))
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

impl PyTaskEvent {
    pub(crate) fn new(event: TaskEvent) -> Self {
        PyTaskEvent { event }
    }
}

#[pymethods]
impl PyTaskEvent {
    /// "spawned", "running", "yield", "sleep", "io_wait", "join", "event_wait", "done",
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
            EventKind::EventWait { event } => d.set_item("event_id", event.get())?,
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

/// Refuses anything that is not a coroutine or a generator, with a hint.
pub(crate) fn check_task_object(py: Python<'_>, coro: &Bound<'_, PyAny>) -> PyResult<()> {
    if is_task_object(py, coro)? {
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

impl PyScheduler {
    fn spawn_inner(
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
        let body = Body::custom(Box::new(PyBody::new(
            py,
            coro.clone().unbind(),
            self.cur.id,
        )));
        match self.cur.kernel.spawn_body(options, body) {
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
                let err = tiffany_scheduler::SpawnError::UnknownDependency(t.id);
                return Err(spawn_error(deps.py(), &err));
            }
            out.push(t.id);
        }
        Ok(out)
    }
}

#[pymethods]
impl PyScheduler {
    #[new]
    #[pyo3(signature = (*, clock = "real", quantum = 0.005, capacity = None, backpressure = None, timing_metrics = true))]
    fn new(
        clock: &str,
        quantum: f64,
        capacity: Option<usize>,
        backpressure: Option<Py<PyAny>>,
        timing_metrics: bool,
    ) -> PyResult<Self> {
        let clock = parse_clock(clock)?;
        let quantum = check_seconds("quantum", quantum)?;
        if quantum == 0.0 {
            return Err(PyValueError::new_err("quantum must be > 0"));
        }
        let mut b = Kernel::builder()
            .clock(clock)
            .quantum(crate::syscall::seconds(quantum))
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
        b = b.on_unobserved_failure(Box::new(|task, error| {
            Python::attach(|py| {
                let err = task_error(py, error);
                log_callback_error(
                    py,
                    &format!("task {task}, which nothing was waiting for"),
                    err,
                );
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
        Ok(PyScheduler {
            cur: Current {
                kernel,
                id: NEXT_SCHEDULER.fetch_add(1, Ordering::Relaxed),
                callback_errors,
                interrupt,
                io: Rc::new(RefCell::new(HashMap::new())),
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
        let deps = match deps.map(|d| self.deps(d)).transpose() {
            Ok(d) => d.unwrap_or_default(),
            Err(e) => {
                // A refused coroutine is closed, as it is for every other refusal,
                // so it does not warn "never awaited".
                if is_task_object(py, coro)? {
                    coro.call_method0("close")?;
                }
                return Err(e);
            }
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
        let _enter = Enter::new(&self.cur);
        let sigint = SigintGuard::install(py, &self.cur)?;
        self.cur.kernel.run_until_idle();
        let interrupted = sigint.restore(py)?;
        if let Some(err) = self.cur.interrupt.borrow_mut().take() {
            return Err(err);
        }
        if interrupted {
            return Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(()));
        }
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

    /// Calls `callback(batch)` with the events in order, gathered in an
    /// `EventBatch` of at most `max_batch` events: when `max_batch` have
    /// gathered, when the scheduler is about to wait, and when a run ends.
    /// Much cheaper per event than `on_event`. Exceptions are logged (logger
    /// "tiffany") and counted.
    #[pyo3(signature = (callback, max_batch = 1024))]
    fn on_events(&self, callback: Py<PyAny>, max_batch: usize) -> PyResult<()> {
        if max_batch == 0 {
            return Err(PyValueError::new_err("max_batch must be at least 1"));
        }
        self.cur
            .kernel
            .subscribe(crate::telemetry::BatchSubscriber::new(
                callback,
                max_batch,
                self.cur.callback_errors.clone(),
            ));
        Ok(())
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
        let _enter = Enter::new(&self.cur);
        Ok(self.cur.kernel.shutdown(crate::syscall::seconds(t)).name())
    }

    /// Spawns a native (Rust) task that joins `task` and returns its result:
    /// it fails if `task` failed and is cancelled if `task` was. Shows that a
    /// native task can wait for a Python one.
    #[pyo3(signature = (task, *, name = None))]
    fn spawn_native_join(
        &self,
        py: Python<'_>,
        task: &Bound<'_, Task>,
        name: Option<String>,
    ) -> PyResult<Task> {
        let target = {
            let t = task.borrow();
            if t.sched != self.cur.id {
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
        let id = self
            .cur
            .kernel
            .spawn_with(options, move |cx| match cx.join(target) {
                tiffany_scheduler::JoinResult::Success(v) => v,
                tiffany_scheduler::JoinResult::Failed(e) => std::panic::resume_unwind(Box::new(
                    format!("joined task failed: {}", e.message()),
                )),
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
        Ok(Task::new(&self.cur, id, name, PRI_DEFAULT))
    }

    /// A thread-safe handle: `spawn`, `cancel`, `shutdown` from other threads.
    fn handle(&self) -> crate::threads::Handle {
        crate::threads::Handle {
            kernel: self.cur.kernel.handle(),
            sched: self.cur.id,
        }
    }

    /// Spawns a native (Rust) task that sleeps `seconds` on the kernel's clock
    /// and returns `result`. It shares the scheduler, ids and ready queue with
    /// Python tasks; Python tasks can await it like any task.
    #[pyo3(signature = (seconds, result = None, *, priority = PRI_DEFAULT, name = None))]
    fn spawn_native_sleep(
        &self,
        py: Python<'_>,
        seconds: f64,
        result: Option<Py<PyAny>>,
        priority: u8,
        name: Option<String>,
    ) -> PyResult<Task> {
        let d = crate::syscall::seconds(check_seconds("seconds", seconds)?);
        let mut options = SpawnOptions::priority(priority);
        options.name = name.as_deref().map(Into::into);
        let result = result.unwrap_or_else(|| py.None());
        // The closure only moves the object; it never touches Python.
        let id = self
            .cur
            .kernel
            .spawn_with(options, move |cx| {
                cx.sleep(d);
                result
            })
            .map_err(|e| spawn_error(py, &e))?;
        Ok(Task::new(&self.cur, id, name, priority))
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

/// Ctrl-C during `run()`: on the main thread, SIGINT starts a shutdown that
/// cancels every task (they see `Cancelled`), and `run()` then raises
/// `KeyboardInterrupt`, as `asyncio.run` does.
#[pyclass(module = "tiffany._native", name = "_SigintHandler", frozen)]
struct SigintHandler {
    handle: tiffany_scheduler::Handle,
    hit: std::sync::atomic::AtomicBool,
}

#[pymethods]
impl SigintHandler {
    fn __call__(&self, _signum: i32, _frame: Py<PyAny>) {
        self.hit.store(true, Ordering::SeqCst);
        let _ = self.handle.request_shutdown(Duration::ZERO);
    }
}

struct SigintGuard {
    installed: Option<(Py<PyAny>, Py<SigintHandler>)>,
}

impl SigintGuard {
    fn install(py: Python<'_>, cur: &Current) -> PyResult<Self> {
        let threading = py.import("threading")?;
        let main = threading.call_method0("main_thread")?;
        let this = threading.call_method0("current_thread")?;
        if !main.is(&this) {
            return Ok(SigintGuard { installed: None });
        }
        let signal = py.import("signal")?;
        let sigint = signal.getattr("SIGINT")?;
        let handler = Py::new(
            py,
            SigintHandler {
                handle: cur.kernel.handle(),
                hit: std::sync::atomic::AtomicBool::new(false),
            },
        )?;
        let previous = signal.call_method1("signal", (sigint, handler.clone_ref(py)))?;
        Ok(SigintGuard {
            installed: Some((previous.unbind(), handler)),
        })
    }

    /// Puts the previous handler back; returns whether Ctrl-C was pressed.
    fn restore(mut self, py: Python<'_>) -> PyResult<bool> {
        let Some((previous, handler)) = self.installed.take() else {
            return Ok(false);
        };
        let signal = py.import("signal")?;
        signal.call_method1("signal", (signal.getattr("SIGINT")?, previous))?;
        Ok(handler.get().hit.load(Ordering::SeqCst))
    }
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        if let Some((previous, _)) = self.installed.take() {
            Python::attach(|py| {
                if let Ok(signal) = py.import("signal")
                    && let Ok(sigint) = signal.getattr("SIGINT")
                {
                    let _ = signal.call_method1("signal", (sigint, previous));
                }
            });
        }
    }
}
