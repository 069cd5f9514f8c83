//! How a task on a Tiffany loop is woken in asyncio's order.
//!
//! In asyncio every step of a task is a callback in the loop's one FIFO
//! ready queue: its first step, the step after a bare `yield`
//! (`asyncio.sleep(0)`), the step after an awaited future completes (the
//! future schedules its done callbacks with `call_soon`, in the order they
//! were added). On a Tiffany loop every such wake goes through the same
//! FIFO (ADR 11): a task that waits for its next asyncio step blocks on a
//! kernel event (its *step event*, one per task), and a [`Waker`] — queued
//! in the FIFO for a first step or a bare `yield`, or added as the awaited
//! future's done callback — wakes it when the engine reaches it. The engine
//! then steps the task at once, inside its own turn, right after that
//! callback ([`Kernel::step_now`](tiffany_scheduler::Scheduler::step_now),
//! the direct hand-off of ADR 12); when the kernel must schedule the task
//! instead, the waker sets the event and the engine hands the turn over (it
//! yields with the rest of its iteration kept). Either way the task steps
//! exactly where asyncio would step it. Kernel-level wakes (`tiffany.sleep`,
//! `join`, `Event`, kernel I/O) stay the kernel's.
//!
//! A plain Tiffany task (`tiffany.spawn`) awaiting an asyncio future waits
//! the same way, on an event made for the wait.
//!
//! `Task.cancel()` of a task waiting for its step (or running, or queued)
//! is asyncio's `_must_cancel`: kept here ([`must_cancel`]) and thrown at
//! the task's next step; only a task blocked in a kernel-level wait gets
//! the kernel's edge (see [`super::task`]).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::{IntoPyObjectExt, intern};
use rustc_hash::{FxHashMap, FxHashSet};
use tiffany_scheduler::{EventId, Resume, SystemCall, TaskId};

/// A task's wait for its next asyncio step.
struct Wait {
    /// The awaited future (none for a first step or a bare `yield`).
    future: Option<Py<PyAny>>,
    waker: Py<Waker>,
    event: EventId,
    /// The event was made for this wait (a plain task's): removed after it.
    owned: bool,
}

/// This thread's side of the asyncio waits, in one thread-local: a
/// thread-local of a shared library costs a call into the dynamic linker
/// (`__tls_get_addr`) per access, and a wake touched several of them (one
/// per variable) where it now makes one access per function.
struct Local {
    /// Tasks of this thread waiting for an asyncio step.
    /// (Fx-hashed: SipHash's removal was a twentieth of a `sleep(0)` switch.)
    waits: RefCell<FxHashMap<TaskId, Wait>>,
    /// `waits.len()`, read on every resume of every Python task (cheap).
    waiting: Cell<usize>,
    /// A waker fired in the engine's current callback: the engine hands
    /// the turn over before its next one.
    handoff: Cell<bool>,
    /// The engine is running one of its ready callbacks: a waker fired in
    /// it leaves its wake in `pending` for the engine.
    engine_turn: Cell<bool>,
    pending: Cell<Option<Py<Waker>>>,
    /// The engine's reference to the waker whose task it is stepping now
    /// (see [`wake_now`]).
    handed: Cell<Option<Py<Waker>>>,
    /// asyncio's `_must_cancel`: tasks to throw a `CancelledError` into at
    /// their next step.
    must: RefCell<FxHashSet<TaskId>>,
    /// `must.len()`.
    musts: Cell<usize>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            waits: RefCell::new(FxHashMap::with_hasher(rustc_hash::FxBuildHasher)),
            waiting: Cell::new(0),
            handoff: Cell::new(false),
            engine_turn: Cell::new(false),
            pending: Cell::new(None),
            handed: Cell::new(None),
            must: RefCell::new(FxHashSet::with_hasher(rustc_hash::FxBuildHasher)),
            musts: Cell::new(0),
        }
    };
}

/// Wakes one task for its next asyncio step (a FIFO entry, or an awaited
/// future's done callback): sets the task's step event, once.
#[pyclass(module = "tiffany._native", name = "_StepWaker", frozen)]
pub(crate) struct Waker {
    event: u64,
    /// The task that waits (for the direct hand-off).
    task: AtomicU64,
    armed: AtomicBool,
    /// The wake set the step event (the ordinary way, not the hand-off):
    /// whoever ends the wait clears it ([`end_step_wait`]).
    set: AtomicBool,
}

/// The type object of [`Waker`], once one was made (until then nothing can
/// be one): what [`is_waker`] compares with.
static WAKER_TYPE: AtomicPtr<pyo3::ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// Whether `obj` is a [`Waker`]: one load and one comparison, for
/// `call_soon`, which asks it of every callback (pyo3's type check looks
/// the class's type object up first).
#[inline]
pub(crate) fn is_waker(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a live object; its type pointer is read, not dereferenced.
    let ty = unsafe { pyo3::ffi::Py_TYPE(obj.as_ptr()) };
    std::ptr::eq(ty, WAKER_TYPE.load(Ordering::Relaxed))
}

impl Waker {
    /// A waker of `task` through `event`, armed.
    pub(crate) fn armed(py: Python<'_>, event: EventId, task: TaskId) -> PyResult<Py<Waker>> {
        if WAKER_TYPE.load(Ordering::Relaxed).is_null() {
            // (`_StepWaker` has no subclasses: its instances are exactly of it.)
            WAKER_TYPE.store(
                <Waker as pyo3::PyTypeInfo>::type_object_raw(py),
                Ordering::Relaxed,
            );
        }
        let waker = Py::new(
            py,
            Waker {
                event: event.get(),
                task: AtomicU64::new(task.get()),
                armed: AtomicBool::new(true),
                set: AtomicBool::new(false),
            },
        )?;
        // It refers to no Python object: the cycle collector has nothing
        // to learn from it (and one per wait was a share of its walks).
        super::task::untrack(waker.bind(py).as_any());
        Ok(waker)
    }

    /// A waker of `task` through `event`: `spare` (the task's waker of its
    /// last wait on that event) armed again if nothing else holds it any
    /// more, else a new one. (The engine dropped its entry when it ran it,
    /// and lent its own reference to the step, see [`wake_now`]: a switch
    /// between tasks, or a wait for a future, then makes no Python object.)
    fn armed_or_spare(
        py: Python<'_>,
        event: EventId,
        task: TaskId,
        spare: Option<Py<Waker>>,
    ) -> PyResult<Py<Waker>> {
        match spare {
            // SAFETY: a live object, the GIL held.
            Some(w) if unsafe { pyo3::ffi::Py_REFCNT(w.as_ptr()) } == 1 => {
                let me = w.get();
                me.set.store(false, Ordering::Relaxed);
                me.armed.store(true, Ordering::Relaxed);
                Ok(w)
            }
            _ => Waker::armed(py, event, task),
        }
    }

    /// Names the task the waker wakes (a first step's waker is made before
    /// the task has its id).
    pub(crate) fn set_task(&self, task: TaskId) {
        self.task.store(task.get(), Ordering::Relaxed);
    }

    /// Wakes the task if the wait it was made for is still on. In a
    /// callback of the engine's ready queue, the wake is left to the engine
    /// ([`engine_turn`]), which steps the task at once, right after the
    /// callback ([`wake_now`]); anywhere else it sets the event and asks
    /// the engine to hand the turn over.
    #[inline]
    pub(crate) fn fire(slf: &Bound<'_, Waker>) {
        let me = slf.get();
        if !me.armed.swap(false, Ordering::Relaxed) {
            return;
        }
        let left = LOCAL.with(|l| {
            if !l.engine_turn.get() {
                return false;
            }
            let pending = l.pending.take();
            if pending.is_none() {
                l.pending.set(Some(slf.clone().unbind()));
                return true;
            }
            l.pending.set(pending);
            false
        });
        if !left {
            me.set_event();
        }
    }

    fn task(&self) -> TaskId {
        TaskId::from_raw(self.task.load(Ordering::Relaxed))
    }

    fn event(&self) -> EventId {
        EventId::from_raw(self.event)
    }

    /// The ordinary wake: sets the step event (noted, for [`end_step_wait`]
    /// to clear it) and asks the engine to hand the turn over to the task.
    fn set_event(&self) {
        self.set.store(true, Ordering::Relaxed);
        if let Ok((kernel, _)) = crate::current::current_kernel()
            && kernel.set_event(self.event())
        {
            LOCAL.with(|l| l.handoff.set(true));
        }
    }
}

/// Ends a wait for an asyncio step through `waker` (the task resumed, by
/// its waker or any other way): the waker is disarmed, and the step event
/// cleared if the waker set it. (Only then: the hand-off never sets it, and
/// the event lives in a table a switch between many tasks would otherwise
/// touch once more per step.)
#[inline]
pub(crate) fn end_step_wait(kernel: Option<&tiffany_scheduler::Scheduler>, waker: &Waker) {
    waker.armed.store(false, Ordering::Relaxed);
    if waker.set.load(Ordering::Relaxed)
        && let Some(kernel) = kernel
    {
        kernel.clear_event(EventId::from_raw(waker.event));
    }
}

/// Runs `f` (one callback of the engine's ready queue) with the wakes it
/// fires left to the engine; gives back what `f` returned, the wake it left
/// ([`wake_now`] steps its task) and whether it asked for a hand-off
/// ([`take_handoff`]). (One access to the thread-local before the callback
/// and one after: four, one per question, were a share of every callback.)
#[inline]
pub(crate) fn engine_turn<R>(f: impl FnOnce() -> R) -> (R, Option<Py<Waker>>, bool) {
    LOCAL.with(|l| l.engine_turn.set(true));
    let r = f();
    let (pending, handoff) = LOCAL.with(|l| {
        l.engine_turn.set(false);
        (l.pending.take(), l.handoff.replace(false))
    });
    (r, pending, handoff)
}

/// Wakes a task the engine's callback left to it (see [`engine_turn`]):
/// the direct hand-off — the kernel steps the task now, inside the
/// engine's turn ([`Kernel::step_now`](tiffany_scheduler::Scheduler::step_now)) —
/// or, when the kernel says the task must go the ordinary way, its step
/// event is set and the engine hands the turn over ([`take_handoff`]).
#[inline]
pub(crate) fn wake_now(kernel: &tiffany_scheduler::Scheduler, waker: Py<Waker>) {
    let (task, event) = {
        let w = waker.get();
        (w.task(), w.event())
    };
    // The reference is lent to the step ([`take_handed`]): the task that
    // steps drops it with its own, so its waker is then free to be armed
    // again for its next bare `yield` ([`queue_step`]).
    let outer = LOCAL.with(|l| l.handed.replace(Some(waker)));
    let stepped = kernel.step_now(task, event);
    if let Some(waker) = LOCAL.with(|l| l.handed.replace(outer))
        && !stepped
    {
        waker.get().set_event();
    }
}

/// Drops the engine's reference to `waker` if [`wake_now`] lent it to this
/// step.
#[inline]
pub(crate) fn take_handed(waker: &Py<Waker>) {
    LOCAL.with(|l| take_handed_in(l, waker));
}

/// [`take_handed`] with this thread's [`Local`] at hand.
#[inline]
fn take_handed_in(l: &Local, waker: &Py<Waker>) {
    let handed = l.handed.take();
    if let Some(h) = handed
        && !h.is(waker)
    {
        l.handed.set(Some(h));
    }
}

#[pymethods]
impl Waker {
    #[pyo3(signature = (*_args))]
    fn __call__(slf: &Bound<'_, Self>, _args: &Bound<'_, pyo3::types::PyTuple>) {
        Waker::fire(slf);
    }
}

/// Whether a waker fired since the last call (cleared by the reading).
#[inline]
pub(crate) fn take_handoff() -> bool {
    LOCAL.with(|l| l.handoff.replace(false))
}

fn note(task: TaskId, wait: Wait) {
    LOCAL.with(|l| {
        let previous = l.waits.borrow_mut().insert(task, wait);
        match previous {
            None => l.waiting.set(l.waiting.get() + 1),
            Some(old) => old.waker.get().armed.store(false, Ordering::Relaxed),
        }
    });
}

/// Queues the next step of an asyncio task at the back of loop `lp`'s
/// FIFO (a first step, or the step after a bare `yield`) through a waker of
/// `task` and `event`, its step event (reusing `spare`, its last one, if
/// it can). The task keeps the waker
/// ([`AioTask`](super::task::AioTask)) and blocks on the event until the
/// engine reaches the entry; whichever way it resumes, it ends the wait
/// with [`end_step_wait`]. (Such a wait is not in this module's map of
/// waits: with many tasks, one more lookup per step in a large table was a
/// cache miss per step.)
pub(crate) fn queue_step(
    py: Python<'_>,
    lp: &Bound<'_, PyAny>,
    task: TaskId,
    event: EventId,
    spare: Option<Py<Waker>>,
) -> PyResult<Py<Waker>> {
    let waker = Waker::armed_or_spare(py, event, task, spare)?;
    super::core::LoopCore::push_step(lp, waker.clone_ref(py).into_any())?;
    Ok(waker)
}

/// If `yielded` is an asyncio future (or a future-like object), the system
/// call that waits for it; `None` for anything else. `step` is an asyncio
/// task's step event, the running scheduler and the task; else an event is
/// made for the wait (of the running task).
pub(crate) fn wait_future(
    py: Python<'_>,
    yielded: &Bound<'_, PyAny>,
    step: Option<(EventId, &tiffany_scheduler::Scheduler, TaskId)>,
    spare: Option<Py<Waker>>,
) -> PyResult<Option<SystemCall>> {
    let ops = super::task::future_ops(py, yielded);
    let blocking = match ops {
        Some(ops) => ops.blocking(yielded)?,
        None => match yielded.getattr(intern!(py, "_asyncio_future_blocking")) {
            Ok(b) => b.is_truthy()?,
            Err(_) => return Ok(None),
        },
    };
    if !blocking {
        return Err(PyRuntimeError::new_err(format!(
            "yield was used instead of yield from in task with {}",
            yielded.repr()?
        )));
    }
    match ops {
        Some(ops) => ops.clear_blocking(yielded)?,
        None => yielded.setattr(intern!(py, "_asyncio_future_blocking"), false)?,
    }
    let fetched;
    let (event, owned, kernel, task) = match step {
        Some((e, kernel, task)) => (e, false, kernel, task),
        None => {
            fetched = crate::current::current_kernel()?.0;
            let Some(task) = fetched.current_task() else {
                return Err(PyRuntimeError::new_err(
                    "an asyncio future can only be awaited from a task",
                ));
            };
            (fetched.new_event(), true, &fetched, task)
        }
    };
    let waker = Waker::armed_or_spare(py, event, task, spare)?;
    let added = match ops {
        Some(ops) => ops.add_done_callback(yielded, waker.bind(py).as_any()),
        None => yielded
            .call_method1(
                intern!(py, "add_done_callback"),
                (waker.clone_ref(py).into_py_any(py)?,),
            )
            .map(drop),
    };
    if let Err(e) = added {
        if owned {
            kernel.remove_event(event);
        }
        return Err(e);
    }
    note(
        task,
        Wait {
            future: Some(yielded.clone().unbind()),
            waker,
            event,
            owned,
        },
    );
    Ok(Some(SystemCall::EventWait(event)))
}

/// If `yielded` is a Tiffany asyncio task (`tiffany._task.Task`) of this
/// scheduler, the kernel join that waits for it: what a plain Tiffany task
/// awaiting one does (it has no place in asyncio's order to keep; an
/// asyncio task awaits it as a future, see [`wait_future`]).
pub(crate) fn join_task(
    py: Python<'_>,
    yielded: &Bound<'_, PyAny>,
    sched: u64,
) -> PyResult<Option<SystemCall>> {
    if !super::task::is_task(py, yielded) {
        return Ok(None);
    }
    let facts = super::task::facts(yielded)?;
    if facts.sched != sched {
        return Ok(None);
    }
    let target = TaskId::from_raw(facts.id);
    yielded.setattr(intern!(py, "_asyncio_future_blocking"), false)?;
    Ok(Some(SystemCall::Join(target)))
}

/// The future (or task) the task `task` awaits, if any.
pub(crate) fn waiting_on(py: Python<'_>, task: TaskId) -> Option<Py<PyAny>> {
    LOCAL.with(|l| {
        l.waits
            .borrow()
            .get(&task)
            .and_then(|wait| wait.future.as_ref().map(|f| f.clone_ref(py)))
    })
}

/// Whether `task` waits for its step event (a FIFO entry or an awaited
/// future's callback will wake it).
pub(crate) fn waits_for_step(task: TaskId) -> bool {
    LOCAL.with(|l| l.waiting.get() > 0 && l.waits.borrow().contains_key(&task))
}

/// Called when a Python task is resumed: ends its wait, if any (cancelling
/// the awaited future if the task was cancelled). `running`: the running
/// scheduler and the task, if the caller has them at hand. Gives back the
/// waker of a wait on the task's step event, for its next wait
/// ([`Waker::armed_or_spare`]).
#[inline(always)]
pub(crate) fn resumed(
    py: Python<'_>,
    answer: Option<&Resume>,
    running: Option<(&tiffany_scheduler::Scheduler, TaskId)>,
) -> Option<Py<Waker>> {
    LOCAL.with(|l| {
        if l.waiting.get() != 0 {
            end_wait(py, l, answer, running)
        } else {
            None
        }
    })
}

/// [`resumed`] when some task of this thread waits for an asyncio step.
#[inline(never)]
fn end_wait(
    py: Python<'_>,
    l: &Local,
    answer: Option<&Resume>,
    running: Option<(&tiffany_scheduler::Scheduler, TaskId)>,
) -> Option<Py<Waker>> {
    let fetched;
    let (kernel, task) = match running {
        Some(r) => r,
        None => {
            let Ok((kernel, _)) = crate::current::current_kernel() else {
                return None;
            };
            let task = kernel.current_task()?;
            fetched = kernel;
            (&fetched, task)
        }
    };
    let wait = l.waits.borrow_mut().remove(&task)?;
    l.waiting.set(l.waiting.get().saturating_sub(1));
    let spare = if wait.owned {
        wait.waker.get().armed.store(false, Ordering::Relaxed);
        kernel.remove_event(wait.event);
        None
    } else {
        end_step_wait(Some(kernel), wait.waker.get());
        take_handed_in(l, &wait.waker);
        Some(wait.waker)
    };
    if let Some(future) = wait.future
        && matches!(answer, Some(Resume::Cancelled))
        && let Err(e) = future.bind(py).call_method0(intern!(py, "cancel"))
    {
        crate::errors::log_callback_error(py, "cancelling an awaited asyncio future", e);
    }
    spare
}

/// Forgets `task`'s wait (the task is gone).
pub(crate) fn forget(task: TaskId) {
    let removed = LOCAL.with(|l| {
        let wait = l.waits.borrow_mut().remove(&task);
        if wait.is_some() {
            l.waiting.set(l.waiting.get().saturating_sub(1));
        }
        wait
    });
    if let Some(wait) = removed {
        wait.waker.get().armed.store(false, Ordering::Relaxed);
    }
    take_must(task);
}

/// Marks `task` to be thrown a `CancelledError` at its next step.
pub(crate) fn must_cancel(task: TaskId) {
    LOCAL.with(|l| {
        if l.must.borrow_mut().insert(task) {
            l.musts.set(l.musts.get() + 1);
        }
    });
}

/// Whether `task` is marked (see [`must_cancel`]).
pub(crate) fn must_pending(task: TaskId) -> bool {
    LOCAL.with(|l| l.musts.get() > 0 && l.must.borrow().contains(&task))
}

/// Takes `task`'s mark (see [`must_cancel`]); whether it had one.
#[inline]
pub(crate) fn take_must(task: TaskId) -> bool {
    LOCAL.with(|l| {
        if l.musts.get() == 0 {
            return false;
        }
        let had = l.must.borrow_mut().remove(&task);
        if had {
            l.musts.set(l.musts.get().saturating_sub(1));
        }
        had
    })
}
