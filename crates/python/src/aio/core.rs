//! `tiffany._native.LoopCore`: the engine of `tiffany.EventLoop`, and the
//! kernel task that runs it.
//!
//! The Python class `tiffany.EventLoop` mixes this class in before the
//! stdlib's `_UnixSelectorEventLoop`, so the stdlib keeps its protocols,
//! SSL, pipes, signals and `sock_*` methods, while the hot path —
//! `call_soon`, timers, readiness and the dispatch of callbacks here, the
//! socket I/O of TCP and Unix transports in [`super::transport`] — is
//! native.
//!
//! While the loop runs, all of asyncio is **one kernel task** (an [`Engine`]
//! body) beside Tiffany's tasks, on the same scheduler and clock. Each resume
//! is one asyncio iteration, in uvloop's order: move due timers to the ready
//! queue, run the callbacks that were ready when the iteration started, then
//! ask the selector's epoll set without blocking and run the I/O callbacks it
//! gives. Then the engine yields (more is ready, or the poll found something)
//! or blocks with a single system call: wait until the selector's epoll set is
//! readable, with the next timer as timeout. So under the virtual clock the
//! kernel jumps straight to the next asyncio timer when nothing is runnable.

use std::cell::UnsafeCell;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tiffany_scheduler::{
    Body, ClockReader, Interest, IoToken, Resume, SpawnOptions, Step, SystemCall, TaskBody, Value,
};

use super::handle::{Handle, run_handle};
use super::selector::{EVENT_READ, EVENT_WRITE, Selector};

/// A timer in the heap: earliest deadline first, then first scheduled.
struct Timer {
    when: f64,
    seq: u64,
    handle: Py<Handle>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap.
        other
            .when
            .total_cmp(&self.when)
            .then(other.seq.cmp(&self.seq))
    }
}

/// State touched only with the GIL held: every access takes a `Python`
/// token, and no Python code runs while it is borrowed (what is dropped is
/// moved out first), so the GIL serialises it. Cheaper than a mutex on the
/// path of every callback.
struct GilCell<T>(UnsafeCell<T>);

// SAFETY: see above; access requires the GIL (a `Python` token).
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    fn new(value: T) -> Self {
        GilCell(UnsafeCell::new(value))
    }

    /// Runs `f` on the state. `f` must not call into Python nor drop a
    /// Python object (which may run arbitrary code).
    #[inline]
    fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the GIL is held (the token) and `f` does not re-enter
        // Python, so no other borrow of the state can exist meanwhile.
        f(unsafe { &mut *self.0.get() })
    }
}

#[derive(Default)]
struct State {
    /// Callbacks to run: native handles or any object with `_run()` and
    /// `_cancelled` (asyncio's own handles, from signal handling).
    ready: VecDeque<Py<PyAny>>,
    timers: BinaryHeap<Timer>,
    seq: u64,
    /// One-shot handles that ran and that nothing refers to any more:
    /// `call_soon` and the timers reuse them (see `Handle::is_spare`).
    spares: Vec<Py<Handle>>,
    /// What `call_soon` gives back for a task's wake (see
    /// `LoopCore::queue_waker`), made on first use.
    inert: Option<Py<Handle>>,
}

/// How many spare handles a loop keeps.
const SPARES: usize = 4096;

/// The native part of `tiffany.EventLoop`.
#[pyclass(module = "tiffany._native", name = "LoopCore", subclass, frozen)]
pub struct LoopCore {
    state: GilCell<State>,
    /// asyncio's `_closed` and `_debug`, kept natively (read on every call).
    closed: AtomicBool,
    debug: AtomicBool,
    stopping: AtomicBool,
    cancelled_timers: AtomicUsize,
    /// An error that ends the run (KeyboardInterrupt, SystemExit from a callback).
    fatal: Mutex<Option<PyErr>>,
    /// Whether an engine task is alive.
    engine_alive: AtomicBool,
    /// Hosted by a `tiffany.run`: the engine is spawned (as a daemon task)
    /// when asyncio first has work, so a run that never uses asyncio never
    /// sees it.
    hosted: AtomicBool,
    /// The engine is running an iteration (what is queued now will be seen).
    in_iteration: AtomicBool,
    /// The engine was woken through the self-pipe since its last iteration.
    notified: AtomicBool,
    /// The scheduler's clock, readable from any thread (`loop.time()`).
    clock: OnceLock<ClockReader>,
    /// The engine's I/O token (its raw value plus one; 0 while no engine runs): a
    /// wake on the loop's thread marks it ready in the kernel directly.
    engine_token: std::sync::atomic::AtomicU64,
    /// The engine is blocked in its wait (not queued in the kernel).
    engine_blocked: AtomicBool,
    /// How many tasks the loop has made (they are named `Task-<n>`).
    tasks_made: std::sync::atomic::AtomicU64,
}

impl LoopCore {
    /// The number naming the next task the loop makes (`Task-<n>`).
    pub(crate) fn next_task_number(&self) -> u64 {
        self.tasks_made.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn timer_cancelled(&self) {
        self.cancelled_timers.fetch_add(1, Ordering::Relaxed);
    }

    fn push_ready(&self, py: Python<'_>, item: Py<PyAny>) {
        self.state.with(py, |st| st.ready.push_back(item));
    }

    fn pop_ready(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.with(py, |st| st.ready.pop_front())
    }

    fn ready_len(&self, py: Python<'_>) -> usize {
        self.state.with(py, |st| st.ready.len())
    }

    /// Moves the timers due by `now` to the ready queue; drops cancelled ones.
    fn fire_timers(&self, py: Python<'_>, now: f64) {
        let compact = {
            let cancelled = self.cancelled_timers.load(Ordering::Relaxed);
            cancelled > 100 && cancelled * 2 > self.state.with(py, |st| st.timers.len())
        };
        let mut due = Vec::new();
        if compact {
            let timers = self.state.with(py, |st| std::mem::take(&mut st.timers));
            let (keep, gone): (Vec<_>, Vec<_>) = timers
                .into_vec()
                .into_iter()
                .partition(|t| !t.handle.borrow(py).cancelled);
            self.state.with(py, |st| st.timers = keep.into());
            self.cancelled_timers.store(0, Ordering::Relaxed);
            due.extend(gone.into_iter().map(|t| (t.handle, false)));
        }
        loop {
            let popped = self.state.with(py, |st| {
                let top = st.timers.peek()?;
                let cancelled = top.handle.borrow(py).cancelled;
                if !cancelled && top.when > now {
                    return None;
                }
                st.timers.pop().map(|t| (t.handle, !cancelled))
            });
            let Some((handle, run)) = popped else { break };
            if !run {
                let c = self.cancelled_timers.load(Ordering::Relaxed);
                self.cancelled_timers
                    .store(c.saturating_sub(1), Ordering::Relaxed);
            }
            due.push((handle, run));
        }
        for (h, run) in due {
            h.borrow_mut(py).scheduled = false;
            if run {
                self.push_ready(py, h.into_any());
            }
        }
    }

    fn next_timer(&self, py: Python<'_>) -> Option<f64> {
        self.state.with(py, |st| st.timers.peek().map(|t| t.when))
    }

    fn schedule_timer(&self, py: Python<'_>, handle: &Py<Handle>, when: f64) {
        handle.borrow_mut(py).scheduled = true;
        let handle = handle.clone_ref(py);
        self.state.with(py, |st| {
            st.seq += 1;
            let seq = st.seq;
            st.timers.push(Timer { when, seq, handle });
        });
    }

    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err("Event loop is closed"));
        }
        Ok(())
    }
}

fn debug_checks(
    slf: &Bound<'_, LoopCore>,
    callback: &Bound<'_, PyAny>,
    method: &str,
) -> PyResult<()> {
    let py = slf.py();
    if !slf.get().debug.load(Ordering::Relaxed) {
        if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "a callable object was expected by {method}(), got {callback}"
            )));
        }
        return Ok(());
    }
    slf.call_method0(intern!(py, "_check_thread"))?;
    slf.call_method1(intern!(py, "_check_callback"), (callback, method))?;
    Ok(())
}

fn kernel_now(py: Python<'_>, lp: &Bound<'_, PyAny>) -> PyResult<f64> {
    lp.call_method0(intern!(py, "time"))?.extract()
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        LoopCore {
            state: GilCell::new(State::default()),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            cancelled_timers: AtomicUsize::new(0),
            fatal: Mutex::new(None),
            engine_alive: AtomicBool::new(false),
            hosted: AtomicBool::new(false),
            in_iteration: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            clock: OnceLock::new(),
            tasks_made: std::sync::atomic::AtomicU64::new(0),
            engine_token: std::sync::atomic::AtomicU64::new(0),
            engine_blocked: AtomicBool::new(false),
        }
    }

    /// Binds the loop to the clock of `scheduler` (once, at construction).
    fn _set_clock(&self, scheduler: &Bound<'_, crate::scheduler::PyScheduler>) -> PyResult<()> {
        let reader = scheduler.borrow().cur()?.kernel.clock_reader();
        self.clock
            .set(reader)
            .map_err(|_| PyRuntimeError::new_err("the loop's clock is already set"))
    }

    /// The kernel's clock, in seconds (the virtual clock starts at 0.0).
    ///
    /// Any thread may read it (as asyncio allows): the clock is read
    /// without the scheduler, which belongs to the loop's thread.
    fn time(&self) -> PyResult<f64> {
        match self.clock.get() {
            Some(c) => Ok(c.now().as_secs_f64()),
            None => Err(PyRuntimeError::new_err("the loop has no clock yet")),
        }
    }

    /// Makes a task of `coro`: a kernel task of the loop's scheduler (see
    /// `tiffany._task.Task`), unless a task factory is set
    /// (`set_task_factory`), which then makes it as in asyncio.
    #[pyo3(signature = (coro, *, name = None, context = None))]
    fn create_task(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        slf.get().check_closed()?;
        let factory = slf.getattr(intern!(py, "_task_factory"))?;
        if !factory.is_none() {
            let task = match context {
                Some(c) if !c.is_none() => {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item(intern!(py, "context"), c)?;
                    factory.call((slf, coro), Some(&kwargs))?
                }
                _ => factory.call1((slf, coro))?,
            };
            if let Some(n) = name.filter(|n| !n.is_none()) {
                py.import("asyncio.tasks")?
                    .getattr("_set_task_name")?
                    .call1((&task, n))?;
            }
            return Ok(task.unbind());
        }
        let sched = slf
            .getattr(intern!(py, "_sched"))?
            .cast_into::<crate::scheduler::PyScheduler>()
            .map_err(|_| PyRuntimeError::new_err("Event loop is closed"))?;
        let me = slf.get();
        let number = me.next_task_number();
        let cur = sched.borrow().cur()?.clone();
        // Hosted by `tiffany.run` with no engine yet: the kernel schedules
        // the task's steps, so a run that never uses asyncio's callbacks
        // never starts the engine.
        let fifo = !me.hosted.load(Ordering::Relaxed) || me.engine_alive.load(Ordering::Relaxed);
        let task = super::task::create(
            py,
            &cur,
            slf.as_any(),
            coro,
            name,
            context,
            number,
            fifo,
            None,
        )?;
        Ok(task)
    }

    /// Schedules `callback(*args)` for the next iteration.
    #[pyo3(signature = (callback, *args, context = None))]
    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        slf.get().check_closed()?;
        if super::future::is_waker(callback) && !slf.get().debug.load(Ordering::Relaxed) {
            return Self::queue_waker(slf, callback);
        }
        debug_checks(slf, callback, "call_soon")?;
        Self::_call_soon(slf, callback, args, context)
    }

    /// `call_soon` without the checks (what `call_soon_threadsafe` uses).
    #[pyo3(signature = (callback, args, context = None))]
    fn _call_soon(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let h = Self::new_handle(slf, callback, args, context, f64::NAN)?;
        slf.get().push_ready(py, h.clone_ref(py).into_any());
        Self::wake(slf);
        Ok(h)
    }

    /// Wakes the loop from another thread: one byte into its self-pipe.
    ///
    /// The stdlib's version sends the byte with `socket.send`, which lets go
    /// of the GIL for the system call. The loop's thread, woken by that very
    /// byte, can then take the GIL and run the callback while the thread that
    /// called `call_soon_threadsafe` has not reached its next line — anyio's
    /// worker threads, for one, still hold the call's context there. This one
    /// keeps the GIL, as uvloop's does: a non-blocking `send` of one byte
    /// does not wait (a full pipe means a wake is already pending), so the
    /// caller runs on until it blocks or its switch interval ends.
    fn _write_to_self(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let csock = slf.getattr(intern!(py, "_csock"))?;
        if csock.is_none() {
            return Ok(());
        }
        let fd: i32 = csock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Ok(()); // closed by `loop.close()`
        }
        let byte = 0u8;
        loop {
            // SAFETY: `fd` is the loop's own socket, open while `_csock`
            // holds it (closing it needs the GIL, which this thread holds);
            // the buffer is one byte that lives across the call.
            let sent = unsafe {
                libc::send(
                    fd,
                    (&raw const byte).cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            // As the stdlib's: a failed wake is not the caller's error (a
            // full pipe already holds a wake).
            if sent >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Ok(());
            }
        }
    }

    /// Schedules `callback(*args)` at `when` on the loop's clock.
    #[pyo3(signature = (when, callback, *args, context = None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: f64,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        if when.is_nan() {
            return Err(PyValueError::new_err("when must be a number, not NaN"));
        }
        slf.get().check_closed()?;
        debug_checks(slf, callback, "call_at")?;
        Self::schedule_at(slf, when, callback, args, context)
    }

    /// Schedules `callback(*args)` after `delay` seconds.
    #[pyo3(signature = (delay, callback, *args, context = None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: Option<f64>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let Some(delay) = delay else {
            return Err(PyTypeError::new_err("delay must not be None"));
        };
        if delay.is_nan() {
            return Err(PyValueError::new_err("delay must be a number, not NaN"));
        }
        slf.get().check_closed()?;
        // Before reading the clock: in debug mode, a call from another
        // thread gets asyncio's error, not the scheduler's.
        debug_checks(slf, callback, "call_later")?;
        let now = kernel_now(slf.py(), slf.as_any())?;
        Self::schedule_at(slf, now + delay, callback, args, context)
    }

    /// Queues an existing handle (asyncio's `_add_callback`).
    fn _add_callback(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let cancelled = match handle.cast::<Handle>() {
            Ok(h) => h.borrow().cancelled,
            Err(_) => handle.getattr("_cancelled")?.is_truthy()?,
        };
        if !cancelled {
            slf.get().push_ready(slf.py(), handle.clone().unbind());
            Self::wake(slf);
        }
        Ok(())
    }

    /// Hosted mode (`tiffany.run`): the engine starts on demand, as a daemon task.
    fn _set_hosted(slf: &Bound<'_, Self>, hosted: bool) {
        let me = slf.get();
        me.hosted.store(hosted, Ordering::Relaxed);
        let pending = me
            .state
            .with(slf.py(), |st| st.ready.len() + st.timers.len());
        if hosted && pending > 0 {
            Self::wake(slf);
        }
    }

    fn _timer_handle_cancelled(&self, _handle: &Bound<'_, PyAny>) {}

    /// Asks the loop to stop after the current iteration.
    fn stop(slf: &Bound<'_, Self>) {
        slf.get().stopping.store(true, Ordering::Relaxed);
        if slf.get().engine_alive.load(Ordering::Relaxed) {
            Self::wake(slf);
        }
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    #[setter(_stopping)]
    fn set_stopping(&self, value: bool) {
        self.stopping.store(value, Ordering::Relaxed);
    }

    /// Drops every pending callback and timer (on close).
    fn _clear(&self, py: Python<'_>) {
        let st = self.state.with(py, std::mem::take);
        for t in &st.timers {
            t.handle.borrow_mut(py).scheduled = false;
        }
        drop(st);
    }

    /// How many callbacks are ready and timers pending (for tests and repr).
    fn _pending(&self, py: Python<'_>) -> (usize, usize) {
        self.state.with(py, |st| (st.ready.len(), st.timers.len()))
    }

    #[getter]
    fn _closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    #[setter(_closed)]
    fn set_closed(&self, value: bool) {
        self.closed.store(value, Ordering::Relaxed);
    }

    /// Whether the loop is in debug mode (asyncio's `get_debug`, native: the
    /// C `Future.__init__` calls it for every future and task).
    fn get_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    #[getter]
    fn _debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    #[setter(_debug)]
    fn set_debug_flag(&self, value: bool) {
        self.debug.store(value, Ordering::Relaxed);
    }

    /// Watches `fd` for reading: `callback(*args)` runs when it is readable.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_interest(slf, fd, callback, args, EVENT_READ)
    }

    /// Watches `fd` for writing.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_interest(slf, fd, callback, args, EVENT_WRITE)
    }

    /// Stops watching `fd` for reading; answers whether it was watched.
    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_interest(slf, fd, EVENT_READ)
    }

    /// Stops watching `fd` for writing; answers whether it was watched.
    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_interest(slf, fd, EVENT_WRITE)
    }

    /// Whether the loop's engine task is alive (a run that a task's
    /// `SystemExit` ended leaves it suspended, for the next run).
    fn _engine_running(&self) -> bool {
        self.engine_alive.load(Ordering::Relaxed)
    }

    /// Spawns the engine task on the running Tiffany scheduler (`run_forever`
    /// calls this from inside the scheduler's run); returns its `Task`.
    #[pyo3(signature = (*, daemon = false))]
    fn _spawn_engine(slf: &Bound<'_, Self>, daemon: bool) -> PyResult<crate::task::Task> {
        let py = slf.py();
        // The loop's own scheduler (also before its run starts: the engine
        // is then queued ahead of nothing but the tasks made already).
        let sched = slf
            .getattr(intern!(py, "_sched"))?
            .cast_into::<crate::scheduler::PyScheduler>()
            .map_err(|_| PyRuntimeError::new_err("Event loop is closed"))?;
        let cur = sched.borrow().cur()?.clone();
        let kernel = cur.kernel.clone();
        if slf.get().engine_alive.swap(true, Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err(
                "this loop's engine is already running",
            ));
        }
        let selector = slf
            .getattr(intern!(py, "_selector"))?
            .cast_into::<Selector>()
            .map_err(|_| PyRuntimeError::new_err("the loop's selector is not tiffany's"))?
            .unbind();
        let fd = selector.get().raw_fd();
        let token = match kernel.register_io(&Fd(fd)) {
            Ok(t) => t,
            Err(e) => {
                slf.get().engine_alive.store(false, Ordering::Relaxed);
                return Err(PyErr::from(e));
            }
        };
        slf.get()
            .engine_token
            .store(token.get() + 1, Ordering::Relaxed);
        let body = Engine {
            lp: slf.clone().unbind(),
            selector,
            token: Some(token),
            fd,
            busy_events: 0,
            scratch: Vec::new(),
            handles: Vec::new(),
            remaining: None,
            draining: false,
        };
        let options = SpawnOptions {
            name: Some("asyncio".into()),
            ..SpawnOptions::default()
        }
        .daemon(daemon);
        let priority = options.priority;
        match kernel.spawn_body(options, Body::custom(Box::new(body))) {
            Ok(id) => Ok(crate::task::Task::new(
                &cur,
                id,
                Some("asyncio".into()),
                priority,
            )),
            Err(e) => {
                slf.get().engine_alive.store(false, Ordering::Relaxed);
                kernel.deregister_io(token);
                Err(crate::errors::spawn_error(py, &e))
            }
        }
    }

    /// The error that ended the last run (KeyboardInterrupt, SystemExit), once.
    fn _take_fatal(&self) -> Option<PyErr> {
        self.fatal.lock().expect("fatal").take()
    }
}

impl LoopCore {
    /// A task of loop `lp` ended with `KeyboardInterrupt` or `SystemExit`:
    /// as in asyncio, it comes out of `run_forever` (the run ends now, the
    /// loop stays usable). `false` if the loop is hosted by `tiffany.run`
    /// (the error is then the scheduler's to handle).
    pub(crate) fn task_fatal(lp: &Bound<'_, PyAny>, err: PyErr) -> bool {
        let Ok(slf) = lp.cast::<LoopCore>() else {
            return false;
        };
        let me = slf.get();
        if me.hosted.load(Ordering::Relaxed) {
            return false;
        }
        let Ok((kernel, _)) = crate::current::current_kernel() else {
            return false;
        };
        me.fatal.lock().expect("fatal").get_or_insert(err);
        kernel.stop_run();
        true
    }

    /// A task's wake as the done callback of the future it awaits (a
    /// [`Waker`](super::future::Waker), which the future schedules with
    /// `call_soon(waker, future, context=...)` when it completes): the
    /// waker itself is the FIFO's entry, as for a task's first step, with
    /// no handle around it. A handle would be filled with the waker, its
    /// argument and the context the future copied, taken apart when run and
    /// recycled — all for a call that ignores its argument and its context
    /// and runs no Python code (with it, a streams echo's round trip missed
    /// the instruction cache 4% more often). The future drops what
    /// `call_soon` returns: it gets the loop's one inert handle (never
    /// queued, never run).
    /// Not in debug mode, where every callback has its own handle, with its
    /// source traceback.
    #[inline(never)]
    fn queue_waker(slf: &Bound<'_, Self>, callback: &Bound<'_, PyAny>) -> PyResult<Py<Handle>> {
        let me = slf.get();
        let py = slf.py();
        let inert = match me
            .state
            .with(py, |st| st.inert.as_ref().map(|h| h.clone_ref(py)))
        {
            Some(h) => h,
            None => {
                let h = Handle::create(
                    py,
                    &py.None().into_bound(py),
                    &PyTuple::empty(py),
                    None,
                    slf.clone().into_any().unbind(),
                    f64::NAN,
                )?;
                me.state.with(py, |st| st.inert = Some(h.clone_ref(py)));
                h
            }
        };
        me.push_ready(py, callback.clone().unbind());
        Self::wake(slf);
        Ok(inert)
    }

    /// Queues `item` (a task's step: a [`Waker`](super::future::Waker)) at
    /// the back of loop `lp`'s ready FIFO, as `call_soon` would.
    pub(crate) fn push_step(lp: &Bound<'_, PyAny>, item: Py<PyAny>) -> PyResult<()> {
        let slf = lp
            .cast::<LoopCore>()
            .map_err(|_| PyRuntimeError::new_err("the task's loop is not a tiffany loop"))?;
        slf.get().check_closed()?;
        slf.get().push_ready(lp.py(), item);
        Self::wake(slf);
        Ok(())
    }

    /// A one-shot handle (`when`: NaN, or a timer's deadline): a spare one
    /// if the loop has one, else a new one.
    fn new_handle(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        when: f64,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let h = Self::new_handle_inner(slf, callback, args, context, when)?;
        if slf.get().debug.load(Ordering::Relaxed) {
            let tb = super::handle::source_traceback(py)?;
            h.borrow_mut(py).set_source_traceback(tb);
        }
        Ok(h)
    }

    fn new_handle_inner(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        when: f64,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        if let Some(h) = slf.get().state.with(py, |st| st.spares.pop()) {
            let context = match context {
                Some(c) if !c.is_none(py) => c,
                _ => match super::handle::copy_context(py) {
                    Ok(c) => c.unbind(),
                    Err(e) => {
                        slf.get().state.with(py, |st| st.spares.push(h));
                        return Err(e);
                    }
                },
            };
            h.borrow_mut(py).reuse(callback, args, context, when);
            return Ok(h);
        }
        let lp = slf.clone().into_any().unbind();
        Handle::create(py, callback, args, context, lp, when)
    }

    /// Keeps `item` (a queued callback that ran) for reuse if nothing else
    /// refers to it.
    fn recycle(&self, py: Python<'_>, item: Bound<'_, PyAny>) {
        let Ok(h) = item.cast_into::<Handle>() else {
            return;
        };
        if !Handle::is_spare(py, &h) {
            return;
        }
        let h = h.unbind();
        let rejected = self.state.with(py, |st| {
            if st.spares.len() < SPARES {
                st.spares.push(h);
                None
            } else {
                Some(h)
            }
        });
        drop(rejected);
    }

    /// Makes a timer handle for `when` and puts it in the heap (the checks are done).
    fn schedule_at(
        slf: &Bound<'_, Self>,
        when: f64,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let h = Self::new_handle(slf, callback, args, context, when)?;
        slf.get().schedule_timer(py, &h, when);
        Self::wake(slf);
        Ok(h)
    }

    /// In hosted mode, starts the engine if asyncio has work and no engine
    /// runs (only on the scheduler's thread, inside its run).
    ///
    /// Work queued from outside the engine's iteration (a Tiffany task on the
    /// loop's thread calling `call_soon`, `call_later`, ...) wakes the engine
    /// through the self-pipe, once per iteration, so it recomputes its wait.
    fn wake(slf: &Bound<'_, Self>) {
        let me = slf.get();
        if me.engine_alive.load(Ordering::Relaxed) {
            if me.in_iteration.load(Ordering::Relaxed) || me.notified.swap(true, Ordering::Relaxed)
            {
                return;
            }
            // On the loop's thread, inside its run: make the engine ready in
            // the kernel at once (so a task's `sleep(0)` lets the callbacks
            // it queued run first, as in asyncio). Elsewhere: the self-pipe.
            let token = me.engine_token.load(Ordering::Relaxed);
            if token != 0
                && let Ok((kernel, _)) = crate::current::current_kernel()
                && kernel.notify_io(IoToken::from_raw(token - 1), Interest::Readable)
            {
                return;
            }
            if let Err(e) = Self::_write_to_self(slf) {
                crate::errors::log_callback_error(slf.py(), "waking the asyncio engine", e);
            }
            return;
        }
        if me.hosted.load(Ordering::Relaxed)
            && !me.engine_alive.load(Ordering::Relaxed)
            && crate::current::current_kernel().is_ok()
            && let Err(e) = Self::_spawn_engine(slf, true)
        {
            crate::errors::log_callback_error(slf.py(), "starting the asyncio engine", e);
        }
    }

    fn selector<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Selector>> {
        let sel = slf.getattr(intern!(slf.py(), "_selector"))?;
        sel.cast_into::<Selector>()
            .map_err(|_| PyRuntimeError::new_err("the loop's selector is not tiffany's"))
    }

    fn add_interest(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        which: u32,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        slf.get().check_closed()?;
        let h = Handle::create_io(py, callback, args, slf.clone().into_any().unbind())?;
        if slf.get().debug.load(Ordering::Relaxed) {
            let tb = super::handle::source_traceback(py)?;
            h.borrow_mut(py).set_source_traceback(tb);
        }
        let sel = Self::selector(slf)?;
        if let Some(old) = sel.get().add_interest(py, fd, which, h.clone_ref(py))? {
            old.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Self::wake(slf);
        Ok(h)
    }

    fn remove_interest(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, which: u32) -> PyResult<bool> {
        let py = slf.py();
        if slf.get().closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let Ok(sel) = Self::selector(slf) else {
            return Ok(false);
        };
        match sel.get().remove_interest(py, fd, which)? {
            Some(old) => {
                old.bind(py).call_method0(intern!(py, "cancel"))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Runs one queued callback: a native handle, or an object with `_run()`
/// and `_cancelled` (asyncio's own handles).
fn run_item(py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
    match item.cast::<Handle>() {
        Ok(h) => run_handle(py, h),
        Err(_) => {
            if let Ok(w) = item.cast::<super::future::Waker>() {
                super::future::Waker::fire(w);
                return Ok(());
            }
            if !item.getattr(intern!(py, "_cancelled"))?.is_truthy()? {
                item.call_method0(intern!(py, "_run"))?;
            }
            Ok(())
        }
    }
}

/// The kernel task that runs asyncio's iterations.
struct Engine {
    lp: Py<LoopCore>,
    selector: Py<Selector>,
    /// The selector's epoll set in the kernel's poller, while registered
    /// (see [`Engine::wait`]).
    token: Option<IoToken>,
    /// The selector's descriptor (what `token` registers).
    fd: i32,
    /// I/O callbacks the iterations ran since the engine last blocked: past
    /// [`BUSY_EVENTS`] the selector's set leaves the kernel's poller.
    busy_events: usize,
    scratch: Vec<(i32, u32)>,
    handles: Vec<Py<PyAny>>,
    /// An iteration handed the turn over to a woken task with this many of
    /// its callbacks left to run.
    remaining: Option<usize>,
    /// `stop()` was seen: the engine yielded once so that the tasks its
    /// last iteration woke take their step (asyncio runs a task's wake-up
    /// in the iteration after the one that woke it, and a `stop()` in that
    /// iteration does not prevent it), and it ends when resumed.
    draining: bool,
}

/// How many events the engine takes from its selector without blocking
/// before it takes the selector's epoll set out of the kernel's poller.
///
/// While the set is registered there, every socket event runs the kernel's
/// wake-up callback twice (the selector's set, then the poller's); a busy
/// loop never blocks, so the second one is pure cost. Leaving the poller
/// costs an `epoll_ctl`, coming back (when the engine next blocks) two
/// system calls more: a loop that blocks after every few events keeps its
/// registration.
const BUSY_EVENTS: usize = 64;

/// The selector's descriptor, as the kernel's poller registers it.
struct Fd(i32);

impl tiffany_scheduler::IoSource for Fd {
    fn raw_fd(&self) -> i32 {
        self.0
    }
}

/// The clock's resolution: timers due within it fire in this iteration.
const RESOLUTION: f64 = 1e-9;

impl Engine {
    /// Starts an iteration: fires due timers and runs the callbacks that are
    /// ready. `true` if it handed the turn over before the end (see
    /// [`run_items`](Engine::run_items)); the selector is asked once the
    /// callbacks have all run ([`poll_io`](Engine::poll_io)).
    fn iteration(
        &mut self,
        py: Python<'_>,
        kernel: &tiffany_scheduler::Scheduler,
        now: f64,
    ) -> PyResult<bool> {
        let lp = self.lp.clone_ref(py);
        let core = lp.get();
        core.in_iteration.store(true, Ordering::Relaxed);
        core.notified.store(false, Ordering::Relaxed);
        core.fire_timers(py, now + RESOLUTION);
        let n = core.ready_len(py);
        self.run_items(py, kernel, n)
    }

    /// Runs the next `n` ready callbacks. A task a callback woke for its
    /// asyncio step (a [`Waker`](super::future::Waker)) steps right after
    /// that callback, in the FIFO's order (ADR 12): inside the engine's turn
    /// (the direct hand-off), or, when the kernel must schedule it, the run
    /// ends early — the rest is kept in `remaining` and the engine yields.
    /// `true` then.
    fn run_items(
        &mut self,
        py: Python<'_>,
        kernel: &tiffany_scheduler::Scheduler,
        n: usize,
    ) -> PyResult<bool> {
        let core = self.lp.get();
        let debug = core.debug.load(Ordering::Relaxed);
        super::future::take_handoff();
        for i in 0..n {
            let Some(item) = core.pop_ready(py) else {
                break;
            };
            let (ran, pending, mut handoff) =
                super::future::engine_turn(|| self.run_one(py, item.into_bound(py), debug));
            // The task a callback woke steps now, in the engine's turn, or
            // (when the kernel must schedule it) the engine hands the turn
            // over to it.
            let stopped = pending.is_some_and(|wake| {
                super::future::wake_now(kernel, wake);
                handoff |= super::future::take_handoff();
                kernel.stop_requested()
            });
            if let Err(e) = ran {
                core.in_iteration.store(false, Ordering::Relaxed);
                return Err(e);
            }
            // A step that ended the run (`KeyboardInterrupt` in the task)
            // parks the engine too, with the rest of its iteration kept.
            if handoff || stopped {
                self.remaining = Some(n - i - 1);
                return Ok(true);
            }
        }
        self.remaining = None;
        Ok(false)
    }

    /// The end of an iteration, once its callbacks have run: asks the
    /// selector (without blocking) and runs the I/O callbacks it gives at
    /// once, and answers how many. That is uvloop's order (libuv polls after
    /// its idle phase and calls the I/O callbacks from the poll), where
    /// asyncio's loop polls first and queues the I/O callbacks behind the
    /// ready ones: a reader or a write started by this iteration's callbacks
    /// is seen by this iteration's poll, not the next one's.
    fn poll_io(&mut self, py: Python<'_>) -> PyResult<usize> {
        let core = self.lp.get();
        if core.stopping.load(Ordering::Relaxed) {
            core.in_iteration.store(false, Ordering::Relaxed);
            return Ok(0);
        }
        let debug = core.debug.load(Ordering::Relaxed);
        let mut io = std::mem::take(&mut self.handles);
        io.clear();
        let mut result = self
            .selector
            .get()
            .dispatch(py, &mut self.scratch, &mut io, 0)
            .map(|()| io.len());
        let mut handles = io.drain(..);
        if result.is_ok() {
            for h in handles.by_ref() {
                if let Err(e) = self.run_one(py, h.into_bound(py), debug) {
                    result = Err(e);
                    break;
                }
            }
        }
        // After an error that ends the run, what was not run stays queued.
        for h in handles {
            core.push_ready(py, h);
        }
        self.handles = io;
        core.in_iteration.store(false, Ordering::Relaxed);
        result
    }

    /// Runs one callback (timed in debug mode) and keeps its handle for reuse.
    fn run_one(&self, py: Python<'_>, item: Bound<'_, PyAny>, debug: bool) -> PyResult<()> {
        let ran = if debug {
            self.run_timed(py, &item)
        } else {
            run_item(py, &item)
        };
        self.lp.get().recycle(py, item);
        ran
    }

    /// Debug mode: runs a callback and warns on asyncio's logger if it took
    /// at least `loop.slow_callback_duration` seconds (as asyncio does).
    fn run_timed(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let what = item.repr().map(|r| r.to_string()).unwrap_or_default();
        let start = std::time::Instant::now();
        run_item(py, item)?;
        let took = start.elapsed().as_secs_f64();
        let slow: f64 = self
            .lp
            .bind(py)
            .getattr(intern!(py, "slow_callback_duration"))
            .and_then(|v| v.extract())
            .unwrap_or(0.1);
        if took >= slow {
            let logger = py
                .import("logging")?
                .call_method1("getLogger", ("asyncio",))?;
            logger.call_method1("warning", ("Executing %s took %.3f seconds", what, took))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Step {
        let core = self.lp.get();
        core.engine_alive.store(false, Ordering::Relaxed);
        core.in_iteration.store(false, Ordering::Relaxed);
        core.engine_blocked.store(false, Ordering::Relaxed);
        core.engine_token.store(0, Ordering::Relaxed);
        if let Some(token) = self.token.take()
            && let Ok((kernel, _)) = crate::current::current_kernel()
        {
            kernel.deregister_io(token);
        }
        Step::Done(Value::unit())
    }

    /// Nothing is queued and the iteration's poll found nothing: blocks,
    /// with one wait in the kernel's poller, where the selector's epoll set
    /// is then registered. The wait needs no readiness check of its own
    /// (the `poll(2)` the kernel makes for a wait that may find its source
    /// ready): the set was just found empty and nothing ran since, and what
    /// arrives after makes an edge in the poller.
    fn wait(&mut self, kernel: &tiffany_scheduler::Scheduler, timeout: Option<Duration>) -> Step {
        self.busy_events = 0;
        let token = match self.token {
            Some(t) => t,
            None => match kernel.register_io(&Fd(self.fd)) {
                Ok(t) => *self.token.insert(t),
                Err(e) => {
                    *self.lp.get().fatal.lock().expect("fatal") = Some(PyErr::from(e));
                    return self.finish();
                }
            },
        };
        let core = self.lp.get();
        // A wake on the loop's thread marks the engine ready through its
        // token (see `LoopCore::wake`).
        core.engine_token.store(token.get() + 1, Ordering::Relaxed);
        core.engine_blocked.store(true, Ordering::Relaxed);
        Step::Syscall(SystemCall::IoWait {
            token,
            interest: Interest::Readable,
            timeout,
            after_would_block: true,
        })
    }
}

impl TaskBody for Engine {
    fn resume(&mut self, input: Option<Resume>) -> Step {
        // SAFETY: as for `PyBody`: a Python scheduler run holds the GIL on
        // this thread whenever it resumes a task.
        let py = unsafe { Python::assume_attached() };
        if matches!(input, Some(Resume::Cancelled)) {
            // The scheduler is shutting down (Ctrl-C, or the run that hosted
            // the loop ended): leave; the loop's state stays for the next run.
            self.finish();
            return Step::Cancelled;
        }
        let Ok((kernel, _)) = crate::current::current_kernel() else {
            return self.finish();
        };
        let core = self.lp.get();
        core.engine_blocked.store(false, Ordering::Relaxed);
        if self.draining {
            // `run_forever` returns; the loop's tasks stay suspended in the
            // kernel for the next run.
            kernel.stop_run();
            return self.finish();
        }
        let ran = match self.remaining {
            // The rest of an iteration that handed the turn over.
            Some(n) => self.run_items(py, &kernel, n),
            None => {
                let now = kernel.now().as_secs_f64();
                self.iteration(py, &kernel, now)
            }
        };
        let found = match ran.and_then(|handed_over| {
            if handed_over {
                Ok(None)
            } else {
                self.poll_io(py).map(Some)
            }
        }) {
            Ok(None) => return Step::Syscall(SystemCall::Yield),
            Ok(Some(found)) => found,
            Err(e) => {
                // KeyboardInterrupt or SystemExit from a callback: it comes
                // out of `run_forever` now (the tasks stay for the next run).
                self.remaining = None;
                *self.lp.get().fatal.lock().expect("fatal") = Some(e);
                kernel.stop_run();
                return self.finish();
            }
        };
        let core = self.lp.get();
        if core.stopping.swap(false, Ordering::Relaxed) {
            if core.hosted.load(Ordering::Relaxed) {
                return self.finish();
            }
            self.draining = true;
            return Step::Syscall(SystemCall::Yield);
        }
        if found > 0 {
            // The selector may have more: the next iteration asks again.
            self.busy_events += found;
            if self.busy_events >= BUSY_EVENTS
                && let Some(token) = self.token.take()
            {
                core.engine_token.store(0, Ordering::Relaxed);
                kernel.deregister_io(token);
            }
            return Step::Syscall(SystemCall::Yield);
        }
        if core.ready_len(py) > 0 {
            return Step::Syscall(SystemCall::Yield);
        }
        // A timer beyond the clock's range (`asyncio.sleep(math.inf)`) never
        // fires: the engine then waits for I/O or a wake-up alone.
        let timeout = core.next_timer(py).and_then(|when| {
            let now = kernel.now().as_secs_f64();
            let delay = (when - now).max(0.0);
            (delay <= crate::syscall::MAX_SECONDS).then(|| Duration::from_secs_f64(delay))
        });
        if timeout == Some(Duration::ZERO) {
            // A timer is due: the next iteration runs it.
            return Step::Syscall(SystemCall::Yield);
        }
        self.wait(&kernel, timeout)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.lp.get().engine_alive.store(false, Ordering::Relaxed);
    }
}
