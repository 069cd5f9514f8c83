//! asyncio tasks as kernel tasks.
//!
//! On a Tiffany loop, `loop.create_task(coro)` (and so `asyncio.create_task`,
//! `ensure_future`, `gather`, `TaskGroup`, ...) spawns a kernel task whose
//! body is the usual [`PyBody`](crate::body::PyBody) driver with an
//! [`AioTask`] attached, and returns a `tiffany._task.Task` — a subclass of
//! `asyncio.Task` whose future half (result, callbacks, `await`) is the C
//! `Future`'s, and whose stepping is the kernel's. Around each step the
//! driver enters the task's `contextvars.Context` and makes it asyncio's
//! current task of the loop (what `asyncio.current_task()` reads); when the
//! coroutine ends, the driver completes the future (its done callbacks are
//! scheduled with `call_soon`, as asyncio does).
//!
//! Every asyncio-visible wake of the task (its first step, the step after a
//! bare `yield`, the step after an awaited future completes) is an entry of
//! the loop's FIFO, in asyncio's order (see [`super::future`]).
//!
//! `task.cancel(msg)` is asyncio's edge, for a task of either door
//! (`tiffany.spawn` or asyncio's): it cancels the future the task
//! awaits, if any, or else marks the task so that its next asyncio step
//! throws `asyncio.CancelledError(msg)`; a task blocked in a kernel-level
//! wait gets the kernel's one `Cancelled` instead ([`Kernel::cancel_edge`]),
//! for which the driver throws the same. A Tiffany scope's
//! cancellation inside the task stays level-triggered (`tiffany.Cancelled`).

use std::cell::Cell;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use tiffany_scheduler::{
    Body, EventId, PRI_DEFAULT, Scheduler as Kernel, SpawnOptions, TaskError, TaskId, TaskState,
    Value, WaitReason,
};

use crate::body::PyBody;
use crate::current::Current;

// Not in the limited API, but stable since Python 3.7 (the context of a
// step is entered and left around it, as `Context.run` does).
unsafe extern "C" {
    fn PyContext_CopyCurrent() -> *mut ffi::PyObject;
    fn PyContext_Enter(ctx: *mut ffi::PyObject) -> c_int;
    fn PyContext_Exit(ctx: *mut ffi::PyObject) -> c_int;
}

/// A Tiffany event loop was made in this process (`EventLoop.__init__`
/// says so through [`_loop_made`]). Until then no Tiffany loop can be
/// running, and `tiffany.spawn` (in a `Scheduler.run` program) returns its
/// handle without asking asyncio for the running loop, which was a
/// twentieth of such a spawn.
static LOOP_MADE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The priority of `with tiffany.priority(n):` around a task's creation.
    static PRIORITY: Cell<Option<u8>> = const { Cell::new(None) };
}

/// What a kernel task made through asyncio carries beside its coroutine.
pub(crate) struct AioTask {
    /// The `tiffany._task.Task` object (the asyncio face of the task).
    pub(crate) task: Py<PyAny>,
    /// The task's `contextvars.Context`.
    pub(crate) context: Py<PyAny>,
    /// The loop the task belongs to.
    pub(crate) lp: Py<PyAny>,
    /// The kernel event the task blocks on while it waits for its next
    /// asyncio step (see [`super::future`]).
    pub(crate) step_event: EventId,
    /// The waker of the FIFO entry of its next step, while it waits for a
    /// first step or the step after a bare `yield` (see
    /// [`super::future::queue_step`]).
    pub(crate) yield_waker: Cell<Option<Py<super::future::Waker>>>,
    /// The waker of its last such wait, once that wait ended: armed again
    /// for the next one if nothing else holds it (see
    /// [`super::future::queue_step`]).
    pub(crate) spare_waker: Cell<Option<Py<super::future::Waker>>>,
    /// The coroutine was started.
    pub(crate) started: bool,
    /// Its priority is not the engine's: its first step and bare `yield`s
    /// are the kernel's to schedule (so `with tiffany.priority(1)` beats
    /// the default), not entries of the loop's FIFO.
    pub(crate) by_kernel: bool,
}

/// What the stdlib gives us, looked up once.
pub(crate) struct Stdlib {
    task_type: Py<PyType>,
    /// `_asyncio.Future` and `_asyncio.Task`: with `tiffany._task.Task`,
    /// the futures whose waits take [`FutureOps`]'s direct path.
    future_type: Py<PyType>,
    c_task_type: Py<PyType>,
    pub(crate) future_ops: FutureOps,
    slots: TaskSlots,
    current_tasks: Py<PyDict>,
    register_task: Py<PyAny>,
    future_init: ffi::initproc,
    set_result: Py<PyAny>,
    set_exception: Py<PyAny>,
    future_cancel: Py<PyAny>,
    get_running_loop: Py<PyAny>,
}

/// The C `Future`'s own pieces a task's wait uses, called directly for
/// the C futures (and tasks) that do not override them: the
/// `_asyncio_future_blocking` descriptor's get and set, and
/// `add_done_callback` called in place. Through the attribute protocol
/// (a lookup along the type's MRO each, a bound method, an argument
/// tuple) they were about a twentieth of a wake of a task awaiting I/O.
pub(crate) struct FutureOps {
    blocking: Field,
    add_done_callback: Py<PyAny>,
}

/// The `__slots__` of `tiffany._task.Task` a task's making writes (and the
/// kernel side reads), through their member descriptors: a store through
/// `setattr` was a fifth of making a task, most of it the generic
/// attribute protocol around the descriptor's own store.
struct TaskSlots {
    kid: Field,
    tstep: Field,
    tmeta: Field,
    tcoro: Field,
    tctx: Field,
    tname: Field,
}

impl TaskSlots {
    fn new(task: &Bound<'_, PyType>) -> PyResult<Self> {
        Ok(TaskSlots {
            kid: Field::of(task, "_kid")?,
            tstep: Field::of(task, "_tstep")?,
            tmeta: Field::of(task, "_tmeta")?,
            tcoro: Field::of(task, "_tcoro")?,
            tctx: Field::of(task, "_tctx")?,
            tname: Field::of(task, "_tname")?,
        })
    }
}

/// A data descriptor of a type (a C getset or a `__slots__` member), whose
/// own get and set are called directly: no lookup along the type's MRO, no
/// generic attribute protocol around them.
struct Field {
    descr: Py<PyAny>,
    get: ffi::descrgetfunc,
    set: ffi::descrsetfunc,
}

impl Field {
    /// The data descriptor `name` of the type `ty` (in its own `__dict__`).
    fn of(ty: &Bound<'_, PyType>, name: &str) -> PyResult<Self> {
        let descr = ty.getattr("__dict__")?.get_item(name)?;
        let dty = descr.get_type();
        // SAFETY: a live type object; the slots of a data descriptor's type.
        let (get, set) = unsafe {
            (
                ffi::PyType_GetSlot(dty.as_type_ptr(), ffi::Py_tp_descr_get),
                ffi::PyType_GetSlot(dty.as_type_ptr(), ffi::Py_tp_descr_set),
            )
        };
        if get.is_null() || set.is_null() {
            return Err(PyRuntimeError::new_err(format!(
                "{}.{name} is not a data descriptor",
                ty.name()?
            )));
        }
        Ok(Field {
            descr: descr.unbind(),
            // SAFETY: the slots hold a descrgetfunc and a descrsetfunc.
            get: unsafe { std::mem::transmute::<*mut std::ffi::c_void, ffi::descrgetfunc>(get) },
            set: unsafe { std::mem::transmute::<*mut std::ffi::c_void, ffi::descrsetfunc>(set) },
        })
    }

    /// `obj.<field>`; `obj` must be an instance of the field's type.
    #[inline]
    fn get<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: the descriptor's own get on an instance of its type.
        unsafe {
            Bound::from_owned_ptr_or_err(
                obj.py(),
                (self.get)(
                    self.descr.as_ptr(),
                    obj.as_ptr(),
                    obj.get_type().as_type_ptr().cast(),
                ),
            )
        }
    }

    /// `obj.<field> = value`; `obj` must be an instance of the field's type.
    #[inline]
    fn set(&self, obj: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: the descriptor's own set on an instance of its type.
        let status = unsafe { (self.set)(self.descr.as_ptr(), obj.as_ptr(), value.as_ptr()) };
        if status < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(())
    }
}

impl FutureOps {
    fn new(future: &Bound<'_, PyType>) -> PyResult<Self> {
        Ok(FutureOps {
            blocking: Field::of(future, "_asyncio_future_blocking")?,
            add_done_callback: future.getattr("add_done_callback")?.unbind(),
        })
    }

    /// `fut._asyncio_future_blocking`.
    pub(crate) fn blocking(&self, fut: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.blocking.get(fut)?.is_truthy()
    }

    /// `fut._asyncio_future_blocking = False`.
    pub(crate) fn clear_blocking(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        self.blocking
            .set(fut, pyo3::types::PyBool::new(fut.py(), false).as_any())
    }

    /// `fut.add_done_callback(callback)`.
    pub(crate) fn add_done_callback(
        &self,
        fut: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let args = [fut.as_ptr(), callback.as_ptr()];
        // SAFETY: the unbound C method, called with its instance first;
        // both arguments are live for the call.
        unsafe {
            Bound::from_owned_ptr_or_err(
                fut.py(),
                super::handle::object_vectorcall(
                    self.add_done_callback.as_ptr(),
                    args.as_ptr(),
                    args.len(),
                    std::ptr::null_mut(),
                ),
            )
        }
        .map(drop)
    }
}

/// `f(*args)` for a C function (an unbound method of the C `Future`),
/// with the arguments in place: no tuple, and no `tp_call`, which is what
/// a call through the stable ABI makes of it.
fn call_in_place(py: Python<'_>, f: &Py<PyAny>, args: &[&Bound<'_, PyAny>]) -> PyResult<()> {
    let argv: smallvec::SmallVec<[*mut ffi::PyObject; 2]> =
        args.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: a live callable, live arguments for the length of the call.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            super::handle::object_vectorcall(
                f.as_ptr(),
                argv.as_ptr(),
                argv.len(),
                std::ptr::null_mut(),
            ),
        )
    }
    .map(drop)
}

/// The [`FutureOps`] for `fut`, if it is a C future or task (or a
/// `tiffany._task.Task`), whose `_asyncio_future_blocking` and
/// `add_done_callback` are the C `Future`'s.
#[inline]
pub(crate) fn future_ops<'a>(py: Python<'_>, fut: &Bound<'_, PyAny>) -> Option<&'a FutureOps> {
    let std = STDLIB.get(py)?;
    let ty = fut.get_type();
    (ty.is(std.future_type.bind(py))
        || ty.is(std.c_task_type.bind(py))
        || ty.is(std.task_type.bind(py)))
    .then_some(&std.future_ops)
}

// SAFETY: only used with the GIL held; the init function pointer is a
// process-wide C function.
unsafe impl Send for Stdlib {}
unsafe impl Sync for Stdlib {}

static STDLIB: PyOnceLock<Stdlib> = PyOnceLock::new();

fn stdlib(py: Python<'_>) -> PyResult<&'static Stdlib> {
    STDLIB.get_or_try_init(py, || {
        let aio = py.import("_asyncio")?;
        let future = aio.getattr("Future")?.cast_into::<PyType>()?;
        // SAFETY: a live type object; `tp_init` of `_asyncio.Future`.
        let init = unsafe { ffi::PyType_GetSlot(future.as_type_ptr(), ffi::Py_tp_init) };
        if init.is_null() {
            return Err(PyRuntimeError::new_err("_asyncio.Future has no __init__"));
        }
        // SAFETY: the slot holds an initproc.
        let future_init: ffi::initproc = unsafe { std::mem::transmute(init) };
        let task_type = py
            .import("tiffany._task")?
            .getattr("Task")?
            .cast_into::<PyType>()?;
        Ok(Stdlib {
            slots: TaskSlots::new(&task_type)?,
            task_type: task_type.unbind(),
            future_ops: FutureOps::new(&future)?,
            c_task_type: aio.getattr("Task")?.cast_into::<PyType>()?.unbind(),
            future_type: future.clone().unbind(),
            current_tasks: aio
                .getattr("_current_tasks")?
                .cast_into::<PyDict>()?
                .unbind(),
            register_task: aio.getattr("_register_task")?.unbind(),
            future_init,
            set_result: future.getattr("set_result")?.unbind(),
            set_exception: future.getattr("set_exception")?.unbind(),
            future_cancel: future.getattr("cancel")?.unbind(),
            get_running_loop: aio.getattr("_get_running_loop")?.unbind(),
        })
    })
}

/// Whether `obj` is a Tiffany asyncio task (`tiffany._task.Task`).
#[inline]
pub(crate) fn is_task(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
    STDLIB
        .get(py)
        .is_some_and(|s| obj.get_type().is(s.task_type.bind(py)))
}

/// What the kernel says of a task, fixed when it is made, as three
/// `int` slots of a `tiffany._task.Task`: `_kid` (its kernel id),
/// `_tstep` (its step event) and `_tmeta` (its scheduler's id, priority
/// and door, packed by [`pack_meta`]). Ints, not one object: an object
/// the cycle collector tracks was, with the collections it brings on,
/// more than the stores it saved.
pub(crate) struct Facts {
    /// Its kernel id.
    pub(crate) id: u64,
    /// Its scheduler's id (see `crate::current::Current::id`).
    pub(crate) sched: u64,
}

/// `_tmeta`: the scheduler's id, the priority and whether
/// `tiffany.spawn` made the task (`tiffany._task` unpacks it).
fn pack_meta(sched: u64, priority: u8, spawned: bool) -> u64 {
    (sched << 9) | (u64::from(priority) << 1) | u64::from(spawned)
}

/// The [`Facts`] of a Tiffany asyncio task (see [`is_task`]).
pub(crate) fn facts(obj: &Bound<'_, PyAny>) -> PyResult<Facts> {
    let slots = &stdlib(obj.py())?.slots;
    let meta: u64 = slots.tmeta.get(obj)?.extract()?;
    Ok(Facts {
        id: slots.kid.get(obj)?.extract()?,
        sched: meta >> 9,
    })
}

/// The kernel id of a Tiffany asyncio task (see [`is_task`]).
pub(crate) fn kernel_id(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    stdlib(obj.py())?.slots.kid.get(obj)?.extract()
}

/// The options of a task made through Tiffany's door (`tiffany.spawn`)
/// rather than asyncio's: carried to the kernel, and its steps are the
/// kernel's to schedule (a bare `yield` stays a kernel yield).
pub(crate) struct Spawned {
    pub(crate) priority: u8,
    pub(crate) deps: Vec<TaskId>,
    pub(crate) daemon: bool,
    /// A dependency already ended failed or cancelled (its kernel record
    /// gone): the task is cancelled at once, as the kernel does for a
    /// dependency it still knows.
    pub(crate) doomed: bool,
}

/// Makes a task of `coro` on loop `lp` (whose scheduler is `cur`): what
/// `loop.create_task` does when no task factory is set, and what
/// `tiffany.spawn` does while a Tiffany loop runs (`spawned`: its options).
/// `number` names it `Task-<number>` when `name` is `None`. `fifo`: its
/// steps are entries of the loop's FIFO (else, as for a priority other than
/// the default or a spawned task, the kernel schedules them).
#[allow(clippy::too_many_arguments)]
pub(crate) fn create(
    py: Python<'_>,
    cur: &Current,
    lp: &Bound<'_, PyAny>,
    coro: &Bound<'_, PyAny>,
    name: Option<&Bound<'_, PyAny>>,
    context: Option<&Bound<'_, PyAny>>,
    number: u64,
    fifo: bool,
    spawned: Option<Spawned>,
) -> PyResult<Py<PyAny>> {
    if let Err(e) = crate::scheduler::check_task_object(py, coro) {
        if e.is_instance_of::<PyTypeError>(py) {
            return Err(PyTypeError::new_err(format!(
                "a coroutine was expected, got {}",
                coro.repr()?
            )));
        }
        return Err(e);
    }
    let std = stdlib(py)?;
    let task = new_task_object(py, std, lp)?;
    let context = match context {
        Some(c) if !c.is_none() => c.clone().unbind(),
        // SAFETY: a new reference (or NULL with an exception set).
        _ => unsafe { Bound::from_owned_ptr_or_err(py, PyContext_CopyCurrent())? }.unbind(),
    };
    let name: Option<Bound<'_, PyAny>> = match name {
        Some(n) if !n.is_none() => Some(n.str()?.into_any()),
        _ => None,
    };
    let kernel_name: std::sync::Arc<str> = match &name {
        Some(n) => n.extract::<&str>()?.into(),
        None => default_name(number),
    };
    let from_spawn = spawned.is_some();
    let mut doomed = false;
    let options = match spawned {
        Some(s) => {
            doomed = s.doomed;
            SpawnOptions {
                name: Some(kernel_name),
                ..SpawnOptions::priority(s.priority)
                    .with_deps(&s.deps)
                    .daemon(s.daemon)
            }
        }
        None => SpawnOptions {
            name: Some(kernel_name),
            ..SpawnOptions::priority(current_priority())
        },
    };
    let priority = options.priority;
    let step_event = cur.kernel.new_event();
    let by_kernel = from_spawn || !fifo || priority != PRI_DEFAULT;
    // The waker of its first step (named once the task has its id).
    let first = if by_kernel {
        None
    } else {
        Some(super::future::Waker::armed(
            py,
            step_event,
            TaskId::from_raw(0),
        )?)
    };
    let aio = AioTask {
        task: task.clone().unbind(),
        context: context.clone_ref(py),
        lp: lp.clone().unbind(),
        step_event,
        yield_waker: Cell::new(first.as_ref().map(|w| w.clone_ref(py))),
        spare_waker: Cell::new(None),
        started: false,
        by_kernel,
    };
    let body = Body::custom(Box::new(PyBody::new_aio(
        py,
        coro.clone().unbind(),
        cur.id,
        Box::new(aio),
    )));
    // A FIFO task is spawned already waiting on its step event: no kernel
    // turn of its own before its loop's entry starts it. One the kernel
    // schedules starts at its first turn.
    let spawned = if by_kernel {
        cur.kernel.spawn_body(options, body)
    } else {
        cur.kernel.spawn_waiting(options, body, step_event)
    };
    let id = match spawned {
        Ok(id) => id,
        Err(e) => {
            cur.kernel.remove_event(step_event);
            return Err(crate::errors::spawn_error(py, &e));
        }
    };
    // The first step: an entry at the back of the loop's FIFO, as asyncio's
    // `call_soon(self.__step)`.
    if let Some(waker) = first {
        waker.get().set_task(id);
        if let Err(e) = super::core::LoopCore::push_step(lp, waker.into_any()) {
            cur.kernel.cancel(id);
            return Err(e);
        }
    }
    // The kernel's facts (see `Facts`), with the scheduler's id, not the
    // scheduler: the task must not keep its scheduler (which holds the
    // task's body, which holds the task) alive. (`_ncancel` and `_cmsg`
    // stay unset until a `cancel()`: `tiffany._task` reads them with a
    // default.)
    let slots = &std.slots;
    slots.kid.set(&task, id.get().into_pyobject(py)?.as_any())?;
    slots
        .tstep
        .set(&task, step_event.get().into_pyobject(py)?.as_any())?;
    slots.tmeta.set(
        &task,
        pack_meta(cur.id, priority, from_spawn)
            .into_pyobject(py)?
            .as_any(),
    )?;
    slots.tcoro.set(&task, coro)?;
    slots.tctx.set(&task, context.bind(py))?;
    match name {
        Some(n) => slots.tname.set(&task, &n)?,
        None => slots.tname.set(&task, number.into_pyobject(py)?.as_any())?,
    }
    call_in_place(py, &std.register_task, &[&task])?;
    if doomed {
        cur.kernel.cancel(id);
    }
    // While the kernel holds the task, the task object and its context are
    // alive whatever else refers to them, so the cycle collector learns
    // nothing from walking them; with many live tasks that walk was a large
    // part of making them (the same reasoning as for a task's coroutine, see
    // `crate::body::Held`). Tracked again when the kernel lets go (`dropped`).
    untrack(&task);
    untrack(context.bind(py));
    Ok(task.unbind())
}

/// `Task-<number>`, asyncio's name for a task made without one, written
/// in place and copied once. (Through `core::fmt` and a UTF-8 check it
/// was about 350 instructions and a dozen cache lines of code per task.)
fn default_name(number: u64) -> std::sync::Arc<str> {
    const PREFIX: &[u8] = b"Task-";
    // "Task-" and at most 20 digits.
    let mut buf = [0u8; 25];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = number;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = PREFIX.len() + digits.len() - start;
    buf[PREFIX.len()..len].copy_from_slice(&digits[start..]);
    // SAFETY: ASCII letters, a dash and ASCII digits are UTF-8.
    std::sync::Arc::from(unsafe { std::str::from_utf8_unchecked(&buf[..len]) })
}

/// The Tiffany loop asyncio runs on this thread, if its scheduler is `cur`'s.
pub(crate) fn running_loop_of<'py>(
    py: Python<'py>,
    cur: &Current,
) -> PyResult<Option<Bound<'py, super::core::LoopCore>>> {
    if !LOOP_MADE.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let running = stdlib(py)?.get_running_loop.bind(py).call0()?;
    if running.is_none() {
        return Ok(None);
    }
    let Ok(lp) = running.cast_into::<super::core::LoopCore>() else {
        return Ok(None);
    };
    let Ok(sched) = lp
        .getattr(intern!(py, "_sched"))?
        .cast_into::<crate::scheduler::PyScheduler>()
    else {
        return Ok(None);
    };
    let same = sched.borrow().cur().is_ok_and(|c| c.id == cur.id);
    Ok(same.then_some(lp))
}

/// The `tiffany._task.Task` of kernel task `id`, if it is asyncio's current
/// task of a Tiffany loop running on `cur`'s scheduler.
pub(crate) fn current_of(py: Python<'_>, cur: &Current, id: TaskId) -> PyResult<Option<Py<PyAny>>> {
    let Some(lp) = running_loop_of(py, cur)? else {
        return Ok(None);
    };
    let Some(task) = stdlib(py)?.current_tasks.bind(py).get_item(lp)? else {
        return Ok(None);
    };
    let mine = is_task(py, &task) && kernel_id(&task)? == id.get();
    Ok(mine.then(|| task.unbind()))
}

/// `tiffany.spawn` while a Tiffany loop runs on the scheduler: the task is
/// a `tiffany._task.Task` of that loop (the same object as
/// `loop.create_task` makes), with `spawned`'s options.
pub(crate) fn spawn_on_loop(
    py: Python<'_>,
    cur: &Current,
    lp: &Bound<'_, super::core::LoopCore>,
    coro: &Bound<'_, PyAny>,
    name: Option<String>,
    spawned: Spawned,
) -> PyResult<Py<PyAny>> {
    let number = lp.get().next_task_number();
    let name = name.map(|n| pyo3::types::PyString::new(py, &n).into_any());
    create(
        py,
        cur,
        lp.as_any(),
        coro,
        name.as_ref(),
        None,
        number,
        false,
        Some(spawned),
    )
}

/// Stops the cycle collector from tracking `obj` (see [`create`]).
pub(crate) fn untrack(obj: &Bound<'_, PyAny>) {
    // SAFETY: the GIL is held and `obj` is a live object.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 1 {
            ffi::PyObject_GC_UnTrack(obj.as_ptr().cast());
        }
    }
}

/// Tracks `obj` again (see [`create`]).
fn retrack(obj: &Bound<'_, PyAny>) {
    // SAFETY: the GIL is held and `obj` is a live object of a garbage
    // collected type (it was tracked when made).
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 0 {
            ffi::PyObject_GC_Track(obj.as_ptr().cast());
        }
    }
}

/// A `tiffany._task.Task` whose future half is initialised for `lp`.
fn new_task_object<'py>(
    py: Python<'py>,
    std: &Stdlib,
    lp: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let ty = std.task_type.bind(py);
    let args = PyTuple::empty(py);
    // SAFETY: the type is a live heap type; its tp_new (the C Task's,
    // inherited) takes (type, args, kwargs) and returns a new reference.
    let obj = unsafe {
        let new = ffi::PyType_GetSlot(ty.as_type_ptr(), ffi::Py_tp_new);
        if new.is_null() {
            return Err(PyRuntimeError::new_err("tiffany._task.Task has no __new__"));
        }
        let new: ffi::newfunc = std::mem::transmute(new);
        Bound::from_owned_ptr_or_err(
            py,
            new(ty.as_type_ptr(), args.as_ptr(), std::ptr::null_mut()),
        )?
    };
    // `loop=` only when `lp` is not the running loop: without it the C
    // `Future.__init__` takes the running loop, with no dict to build.
    let running = std.get_running_loop.call0(py)?;
    let kwargs = if running.is(lp) {
        None
    } else {
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "loop"), lp)?;
        Some(kwargs)
    };
    let kw = kwargs.as_ref().map_or(std::ptr::null_mut(), |k| k.as_ptr());
    // SAFETY: `Future.__init__` on an instance of a Future subclass.
    let status = unsafe { (std.future_init)(obj.as_ptr(), args.as_ptr(), kw) };
    if status < 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(obj)
}

/// Enters a step of the task: its context, and asyncio's current task.
#[inline]
pub(crate) fn enter(py: Python<'_>, aio: &AioTask) {
    // SAFETY: live objects, GIL held.
    unsafe {
        if PyContext_Enter(aio.context.as_ptr()) < 0 {
            let e = PyErr::fetch(py);
            crate::errors::log_callback_error(py, "entering a task's context", e);
        }
        if let Some(std) = STDLIB.get(py)
            && ffi::PyDict_SetItem(
                std.current_tasks.as_ptr(),
                aio.lp.as_ptr(),
                aio.task.as_ptr(),
            ) < 0
        {
            ffi::PyErr_Clear();
        }
    }
}

/// Leaves a step of the task (see [`enter`]).
#[inline]
pub(crate) fn leave(py: Python<'_>, aio: &AioTask) {
    // SAFETY: live objects, GIL held.
    unsafe {
        if let Some(std) = STDLIB.get(py)
            && ffi::PyDict_DelItem(std.current_tasks.as_ptr(), aio.lp.as_ptr()) < 0
        {
            ffi::PyErr_Clear();
        }
        if PyContext_Exit(aio.context.as_ptr()) < 0 {
            ffi::PyErr_Clear();
        }
    }
}

/// The exception to throw into a task resumed with its edge cancellation:
/// `asyncio.CancelledError(msg)`, with the message of the `cancel()` call.
pub(crate) fn edge_error(py: Python<'_>, aio: &AioTask) -> PyErr {
    let task = aio.task.bind(py);
    let msg = task
        .getattr(intern!(py, "_cmsg"))
        .ok()
        .filter(|m| !m.is_none());
    let _ = task.setattr(intern!(py, "_cmsg"), py.None());
    match msg {
        Some(m) => pyo3::exceptions::asyncio::CancelledError::new_err((m.unbind(),)),
        None => pyo3::exceptions::asyncio::CancelledError::new_err(()),
    }
}

/// How a task's coroutine ended.
pub(crate) enum End {
    Returned(Py<PyAny>),
    Raised(PyErr),
}

/// Completes the task's future as its coroutine ended, and answers the
/// kernel's step.
pub(crate) fn finish(py: Python<'_>, aio: &AioTask, end: End) -> tiffany_scheduler::Step {
    use tiffany_scheduler::Step;
    let Ok(std) = stdlib(py) else {
        return Step::Failed(TaskError::new("asyncio is unavailable"));
    };
    let task = aio.task.bind(py);
    let edge = crate::current::current_kernel()
        .ok()
        .and_then(|(k, _)| Some((k.clone(), k.current_task()?)));
    let (completed, step) = match end {
        End::Returned(value) => {
            if edge
                .as_ref()
                .is_some_and(|(k, id)| super::future::take_must(*id) || k.edge_pending(*id))
            {
                // Cancelled right before the coroutine ended: asyncio marks
                // the task cancelled.
                (
                    call_in_place(py, &std.future_cancel, &[task]),
                    Step::Cancelled,
                )
            } else {
                (
                    call_in_place(py, &std.set_result, &[task, value.bind(py)]),
                    Step::Done(Value::unit()),
                )
            }
        }
        End::Raised(err) if err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) => {
            let msg = err
                .value(py)
                .getattr(intern!(py, "args"))
                .ok()
                .and_then(|a| a.get_item(0).ok())
                .map(Bound::unbind);
            let kwargs = PyDict::new(py);
            let _ = kwargs.set_item(intern!(py, "msg"), msg);
            (
                std.future_cancel.call(py, (task,), Some(&kwargs)).map(drop),
                Step::Cancelled,
            )
        }
        End::Raised(err) => {
            let fatal = err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
                || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py);
            if fatal && !super::core::LoopCore::task_fatal(aio.lp.bind(py), err.clone_ref(py)) {
                crate::current::interrupt_with(err.clone_ref(py));
            }
            let message = err.to_string();
            let exc = err.into_value(py).into_any();
            let done = if exc
                .bind(py)
                .is_instance_of::<pyo3::exceptions::PyStopIteration>()
            {
                let wrapped = PyRuntimeError::new_err("coroutine raised StopIteration");
                call_in_place(
                    py,
                    &std.set_exception,
                    &[task, wrapped.into_value(py).bind(py)],
                )
            } else {
                call_in_place(py, &std.set_exception, &[task, exc.bind(py)])
            };
            let failure = crate::errors::Failure {
                exception: exc,
                task_name: edge
                    .as_ref()
                    .and_then(|(k, id)| k.info(*id))
                    .and_then(|i| i.name),
                asyncio: true,
            };
            (
                done,
                Step::Failed(TaskError::with_payload(message, Value::new(failure))),
            )
        }
    };
    if let Err(e) = completed {
        crate::errors::log_callback_error(py, "completing an asyncio task", e);
    }
    step
}

/// The body of a task is dropped (it ended, or the kernel let go of it
/// unfinished: `unfinished`): its step wait and step event go, and an
/// unfinished task's future is cancelled (see [`abandoned`]).
pub(crate) fn dropped(py: Python<'_>, aio: &AioTask, unfinished: bool) {
    retrack(aio.task.bind(py));
    retrack(aio.context.bind(py));
    if let Ok(kid) = kernel_id(aio.task.bind(py)) {
        super::future::forget(TaskId::from_raw(kid));
    }
    if let Some(waker) = aio.yield_waker.take() {
        super::future::end_step_wait(None, waker.get());
    }
    if let Ok((kernel, _)) = crate::current::current_kernel() {
        kernel.remove_event(aio.step_event);
    }
    if unfinished {
        abandoned(py, aio);
    }
}

/// A task dropped by the kernel without ending (a shutdown abandoned it,
/// or its scheduler went): its future is cancelled, unless its loop is
/// closed (then it stays pending, as asyncio leaves it).
fn abandoned(py: Python<'_>, aio: &AioTask) {
    let task = aio.task.bind(py);
    if task
        .call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
    {
        return;
    }
    let closed = aio
        .lp
        .bind(py)
        .call_method0(intern!(py, "is_closed"))
        .and_then(|c| c.is_truthy())
        .unwrap_or(true);
    if closed {
        return;
    }
    if let Ok(std) = stdlib(py)
        && let Err(e) = std.future_cancel.call1(py, (task,))
    {
        e.write_unraisable(py, Some(task));
    }
}

fn current_priority() -> u8 {
    PRIORITY.with(Cell::get).unwrap_or(PRI_DEFAULT)
}

/// `with tiffany.priority(n):` — asyncio tasks created inside the block
/// (`asyncio.create_task`, `loop.create_task`, `gather`, `TaskGroup`, ...)
/// are kernel tasks of priority `n` (0 first, 255 last); outside any such
/// block they get the default, 10. Blocks nest; the innermost wins.
#[pyclass(module = "tiffany._native", name = "priority", frozen)]
pub struct PriorityBlock {
    value: u8,
    saved: std::sync::Mutex<Vec<Option<u8>>>,
}

#[pymethods]
impl PriorityBlock {
    #[new]
    fn new(value: i64) -> PyResult<Self> {
        let value = u8::try_from(value).map_err(|_| {
            PyValueError::new_err(format!("priority must be between 0 and 255, got {value}"))
        })?;
        Ok(PriorityBlock {
            value,
            saved: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The priority the block gives.
    #[getter]
    fn value(&self) -> u8 {
        self.value
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        let me = slf.get();
        let old = PRIORITY.with(|p| p.replace(Some(me.value)));
        me.saved.lock().expect("priority").push(old);
        slf
    }

    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let Some(old) = self.saved.lock().expect("priority").pop() else {
            return Err(PyRuntimeError::new_err(
                "this priority block is not entered",
            ));
        };
        PRIORITY.with(|p| p.set(old));
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("tiffany.priority({})", self.value)
    }
}

/// `_task_cancel(sched, kid, step)` (`step`: the task's step event): asyncio's `_must_cancel` for a task whose
/// future wait was not cancelled: one `CancelledError` at its next asyncio
/// step if it waits for one (or runs, or is queued), else (blocked in a
/// kernel-level wait: `tiffany.sleep`, `join`, `Event`, kernel I/O) the
/// kernel's edge, which wakes it. Whether the task was live.
#[pyfunction]
pub fn _task_cancel(
    sched: &Bound<'_, crate::scheduler::PyScheduler>,
    kid: u64,
    step: u64,
) -> PyResult<bool> {
    let kernel = kernel_of(sched)?;
    let id = TaskId::from_raw(kid);
    if kernel.edge_pending(id) || super::future::must_pending(id) {
        // One is on its way already (asyncio's rule: one per step).
        return Ok(true);
    }
    if super::future::waits_for_step(id) {
        super::future::must_cancel(id);
        return Ok(true);
    }
    let step = EventId::from_raw(step);
    Ok(match kernel.state(id) {
        None => false,
        Some(s) if s.is_terminal() => false,
        // Waiting for its next asyncio step (a FIFO entry will wake it).
        Some(TaskState::Waiting(WaitReason::Event(e))) if e == step => {
            super::future::must_cancel(id);
            true
        }
        Some(
            TaskState::Running | TaskState::Scheduled | TaskState::Throttled | TaskState::Pending,
        ) => {
            super::future::must_cancel(id);
            true
        }
        Some(_) => kernel.cancel_edge(id),
    })
}

/// `_task_edge_pending(sched, kid)`: whether a cancellation waits to be
/// thrown into the task (asyncio's `_must_cancel`).
#[pyfunction]
pub fn _task_edge_pending(
    sched: &Bound<'_, crate::scheduler::PyScheduler>,
    kid: u64,
) -> PyResult<bool> {
    let id = TaskId::from_raw(kid);
    Ok(super::future::must_pending(id) || kernel_of(sched)?.edge_pending(id))
}

/// `_loop_made()`: a Tiffany event loop is being made (see [`LOOP_MADE`]).
#[pyfunction]
pub fn _loop_made() {
    LOOP_MADE.store(true, Ordering::Relaxed);
}

/// `_task_set_name(sched, kid, name)`: renames the kernel task.
#[pyfunction]
pub fn _task_set_name(
    sched: &Bound<'_, crate::scheduler::PyScheduler>,
    kid: u64,
    name: &str,
) -> PyResult<()> {
    kernel_of(sched)?.set_name(TaskId::from_raw(kid), name);
    Ok(())
}

/// `_task_state(sched, kid)`: the kernel's state of the task ("running",
/// "sleeping", ...), or None once its record is gone.
#[pyfunction]
pub fn _task_state(
    sched: &Bound<'_, crate::scheduler::PyScheduler>,
    kid: u64,
) -> PyResult<Option<&'static str>> {
    Ok(kernel_of(sched)?
        .state(TaskId::from_raw(kid))
        .map(TaskState::name))
}

/// `_task_fut_waiter(kid)`: the asyncio future (or task) the task awaits, or None.
#[pyfunction]
pub fn _task_fut_waiter(py: Python<'_>, kid: u64) -> Option<Py<PyAny>> {
    super::future::waiting_on(py, TaskId::from_raw(kid))
}

fn kernel_of(sched: &Bound<'_, crate::scheduler::PyScheduler>) -> PyResult<Kernel> {
    Ok(sched.borrow().cur()?.kernel.clone())
}

/// Adds the task functions and `priority` to the module.
pub(crate) fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PriorityBlock>()?;
    m.add_function(wrap_pyfunction!(_task_cancel, m)?)?;
    m.add_function(wrap_pyfunction!(_loop_made, m)?)?;
    m.add_function(wrap_pyfunction!(_task_edge_pending, m)?)?;
    m.add_function(wrap_pyfunction!(_task_set_name, m)?)?;
    m.add_function(wrap_pyfunction!(_task_fut_waiter, m)?)?;
    m.add_function(wrap_pyfunction!(_task_state, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_default_name_is_task_and_the_number() {
        for (n, name) in [
            (0, "Task-0"),
            (7, "Task-7"),
            (10, "Task-10"),
            (12_345, "Task-12345"),
            (u64::MAX, "Task-18446744073709551615"),
        ] {
            assert_eq!(&*super::default_name(n), name);
        }
    }
}
