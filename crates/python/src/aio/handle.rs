//! `tiffany._native.LoopHandle`: a scheduled callback (asyncio's `Handle` and
//! `TimerHandle` in one native class).
//!
//! A handle holds the callback, its arguments, the `contextvars.Context` it
//! runs in and its loop. Running it calls `context.run(callback, *args)`; an
//! `Exception` (or any `BaseException` but `KeyboardInterrupt` and
//! `SystemExit`, as in asyncio) goes to the loop's exception handler.
//! Running a one-shot handle (`call_soon`, timers) or cancelling any handle
//! drops the callback and arguments at once, so a handle kept by its owner
//! keeps nothing alive; a reader's or writer's handle is held by the
//! selector while registered and cancelled when removed. That is also why it is
//! not tracked by the cyclic garbage collector: a pending handle is held by
//! its loop, and one that has run or was cancelled refers to nothing but its
//! loop (with many pending callbacks, the collector's scans of them were a
//! fifth of the cost of `call_soon`).
//!
//! Running a handle is one vectorcall of `Context.run(context, callback,
//! *args)`: the arguments are passed in place, with no tuple per callback.
//! A one-shot handle that ran and that nothing else refers to (no
//! reference, no weak reference) goes back to its loop, which reuses it for
//! the next `call_soon` or timer; reuse is unobservable, and it saves an
//! allocation and a deallocation per callback.

use pyo3::exceptions::{PyAttributeError, PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use smallvec::SmallVec;

/// A callback scheduled on a Tiffany event loop.
///
/// Handles are made and dropped at the rate of `call_soon`, so their memory
/// is kept on a free list (a dropped handle's memory serves the next one).
#[pyclass(
    module = "tiffany._native",
    name = "LoopHandle",
    weakref,
    freelist = 4096
)]
pub struct Handle {
    /// The callback; `None` once a one-shot handle ran or any was cancelled.
    callback: Option<Py<PyAny>>,
    /// Its positional arguments (for most callbacks, the shared empty tuple).
    args: Option<Py<PyTuple>>,
    /// The `contextvars.Context` it runs in.
    context: Option<Py<PyAny>>,
    pub(crate) loop_: Option<Py<PyAny>>,
    pub(crate) cancelled: bool,
    /// The deadline of a timer on the loop's clock (NaN: not a timer).
    pub(crate) when: f64,
    /// Whether a timer is in its loop's heap.
    pub(crate) scheduled: bool,
    /// Runs once (`call_soon`, timers); a reader's or writer's handle runs
    /// each time its descriptor is ready.
    oneshot: bool,
    /// In debug mode, where it was made (asyncio's `_source_traceback`: a
    /// `traceback.StackSummary` ending at the caller of `call_soon`, ...).
    source_traceback: Option<Py<PyAny>>,
}

/// Where the running Python code is, as asyncio's debug mode records it
/// (`format_helpers.extract_stack(sys._getframe(0))`: called from native
/// code, frame 0 is the Python caller of `call_soon`, `call_later`, ...).
pub(crate) fn source_traceback(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static FNS: pyo3::sync::PyOnceLock<(Py<PyAny>, Py<PyAny>)> = pyo3::sync::PyOnceLock::new();
    let (getframe, extract) = FNS.get_or_try_init(py, || {
        Ok::<_, PyErr>((
            py.import("sys")?.getattr("_getframe")?.unbind(),
            py.import("asyncio.format_helpers")?
                .getattr("extract_stack")?
                .unbind(),
        ))
    })?;
    let frame = getframe.bind(py).call1((0,))?;
    Ok(extract.bind(py).call1((frame,))?.unbind())
}

/// `LoopHandle.__weakrefoffset__`: where a handle keeps its weak
/// references (`None` if the layout is not a plain offset).
fn weaklist_offset(py: Python<'_>) -> Option<isize> {
    static OFFSET: pyo3::sync::PyOnceLock<Option<isize>> = pyo3::sync::PyOnceLock::new();
    *OFFSET.get_or_init(py, || {
        py.get_type::<Handle>()
            .getattr("__weakrefoffset__")
            .and_then(|o| o.extract::<isize>())
            .ok()
            .filter(|&o| o > 0)
    })
}

/// `contextvars.copy_context`, looked up once.
pub(crate) fn copy_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static COPY: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let f = COPY.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("contextvars")?.getattr("copy_context")?.unbind())
    })?;
    f.bind(py).call0()
}

impl Handle {
    /// A new one-shot handle (`call_soon`, timers), untracked by the cyclic
    /// garbage collector (see the module's documentation).
    pub(crate) fn create(
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        loop_: Py<PyAny>,
        when: f64,
    ) -> PyResult<Py<Handle>> {
        let context = match context {
            Some(c) if !c.is_none(py) => c,
            _ => copy_context(py)?.unbind(),
        };
        let handle = Handle {
            callback: Some(callback.clone().unbind()),
            args: Some(args.clone().unbind()),
            context: Some(context),
            loop_: Some(loop_),
            cancelled: false,
            when,
            scheduled: false,
            oneshot: true,
            source_traceback: None,
        };
        let h = Py::new(py, handle)?;
        // SAFETY: the GIL is held and `h` is a live object of a GC type,
        // tracked since its creation; untracking an object is always
        // allowed (its deallocator untracks it again, which is harmless).
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(h.as_ptr().cast()) };
        Ok(h)
    }

    /// Makes a spare handle (see [`Handle::is_spare`]) a new one-shot handle
    /// of the same loop.
    pub(crate) fn reuse(
        &mut self,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Py<PyAny>,
        when: f64,
    ) {
        debug_assert!(self.callback.is_none() && self.args.is_none() && self.context.is_none());
        self.callback = Some(callback.clone().unbind());
        self.args = Some(args.clone().unbind());
        self.context = Some(context);
        self.cancelled = false;
        self.when = when;
        self.scheduled = false;
        self.source_traceback = None;
    }

    /// Records where the handle was made (debug mode).
    pub(crate) fn set_source_traceback(&mut self, tb: Py<PyAny>) {
        self.source_traceback = Some(tb);
    }

    /// Whether a one-shot handle that ran (or was cancelled) can be reused:
    /// `item`, the caller's reference, is its only one, and no weak
    /// reference to it exists. Reusing it is then unobservable.
    pub(crate) fn is_spare(py: Python<'_>, item: &Bound<'_, Handle>) -> bool {
        // (`item` is the caller's own reference.)
        // SAFETY: a live object (the caller holds a reference).
        if unsafe { ffi::Py_REFCNT(item.as_ptr()) } != 1 {
            return false;
        }
        let Some(offset) = weaklist_offset(py) else {
            return false;
        };
        // SAFETY: `offset` is the type's `tp_weaklistoffset` (positive): the
        // object holds its weak-reference list pointer there, NULL when
        // no weak reference to it exists.
        let weakrefs = unsafe {
            *item
                .as_ptr()
                .cast::<u8>()
                .offset(offset)
                .cast::<*mut ffi::PyObject>()
        };
        if !weakrefs.is_null() {
            return false;
        }
        let me = item.borrow();
        me.oneshot && me.callback.is_none() && !me.scheduled
    }

    /// A handle for a descriptor's readiness: it runs each time.
    pub(crate) fn create_io(
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        loop_: Py<PyAny>,
    ) -> PyResult<Py<Handle>> {
        let h = Self::create(py, callback, args, None, loop_, f64::NAN)?;
        h.borrow_mut(py).oneshot = false;
        Ok(h)
    }

    pub(crate) fn is_timer(&self) -> bool {
        !self.when.is_nan()
    }
}

/// Runs a handle; an error that must end the loop (KeyboardInterrupt,
/// SystemExit) is returned, every other one goes to the exception handler.
pub(crate) fn run_handle(py: Python<'_>, h: &Bound<'_, Handle>) -> PyResult<()> {
    // A one-shot handle lets go of its callback and arguments as it runs,
    // so a handle kept by its owner holds nothing (and makes no cycle).
    // Bound, not Py: dropping them is a plain decref.
    let (callback, args, context) = {
        let mut me = h.borrow_mut();
        if me.cancelled {
            return Ok(());
        }
        if me.oneshot {
            match (me.callback.take(), me.args.take(), me.context.take()) {
                (Some(c), Some(a), Some(x)) => {
                    (c.into_bound(py), a.into_bound(py), x.into_bound(py))
                }
                _ => return Ok(()),
            }
        } else {
            match (&me.callback, &me.args, &me.context) {
                (Some(c), Some(a), Some(x)) => {
                    (c.bind(py).clone(), a.bind(py).clone(), x.bind(py).clone())
                }
                _ => return Ok(()),
            }
        }
    };
    if super::future::is_waker(&callback) {
        // A task's wake (an awaited future's done callback): it runs no
        // Python code, so neither the context nor a call is needed. (Told
        // by its type pointer: a cast checked every other callback's type
        // against `_StepWaker` along its MRO.)
        // SAFETY: `callback` is exactly a `Waker` (checked above).
        super::future::Waker::fire(unsafe { callback.cast_unchecked::<super::future::Waker>() });
        return Ok(());
    }
    let called = match callback.cast::<super::transport::StreamCore>() {
        // A stream transport's reader: its read path, without a Python call.
        Ok(core) => super::transport::StreamCore::read_ready_in(core, &context),
        Err(_) => run_in_context(
            py,
            &context,
            &callback,
            args.iter_borrowed().map(|a| a.as_ptr()),
        ),
    };
    let Err(err) = called else {
        return Ok(());
    };
    if !h.borrow().oneshot {
        return report(py, h, &callback, &args, err);
    }
    // While the exception handler sees it, the handle shows what it ran
    // (its repr, `_callback`); then it lets go again.
    {
        let mut me = h.borrow_mut();
        me.callback = Some(callback.clone().unbind());
        me.args = Some(args.clone().unbind());
        me.context = Some(context.unbind());
    }
    let result = report(py, h, &callback, &args, err);
    let dropped = {
        let mut me = h.borrow_mut();
        (me.callback.take(), me.args.take(), me.context.take())
    };
    drop(dropped);
    result
}

unsafe extern "C" {
    /// `PyObject_Vectorcall`: exported by CPython from 3.11 on, and in the
    /// stable ABI from 3.12 (so PyO3 declares it for abi3 builds only from
    /// 3.12; this module's minimum is 3.11, which has it too).
    #[link_name = "PyObject_Vectorcall"]
    pub(crate) fn object_vectorcall(
        callable: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;
}

/// `context.run(callback, *args)`, with the arguments passed in place (no
/// tuple, no bound method).
pub(crate) fn call_in_context(
    py: Python<'_>,
    context: &Bound<'_, PyAny>,
    callback: &Bound<'_, PyAny>,
    args: &[&Bound<'_, PyAny>],
) -> PyResult<()> {
    run_in_context(py, context, callback, args.iter().map(|a| a.as_ptr()))
}

/// [`call_in_context`] with the arguments as pointers to live objects that
/// the caller holds for the length of the call.
fn run_in_context(
    py: Python<'_>,
    context: &Bound<'_, PyAny>,
    callback: &Bound<'_, PyAny>,
    args: impl ExactSizeIterator<Item = *mut ffi::PyObject>,
) -> PyResult<()> {
    let run = context_run(py)?;
    let mut argv: SmallVec<[*mut ffi::PyObject; 6]> = SmallVec::with_capacity(args.len() + 2);
    argv.push(context.as_ptr());
    argv.push(callback.as_ptr());
    argv.extend(args);
    // SAFETY: the GIL is held; `run` is `Context.run` and every pointer in
    // `argv` is a live object held by the caller (`context`, `callback`,
    // the arguments) for the length of the call. A NULL result comes with
    // an exception set.
    unsafe {
        let result = object_vectorcall(
            run.as_ptr(),
            argv.as_ptr(),
            argv.len(),
            std::ptr::null_mut(),
        );
        if result.is_null() {
            return Err(PyErr::fetch(py));
        }
        ffi::Py_DECREF(result);
    }
    Ok(())
}

/// `contextvars.Context.run`, unbound: called with the context first, it
/// saves making a bound method per callback.
fn context_run(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static RUN: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    RUN.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("contextvars")?
                .getattr("Context")?
                .getattr("run")?
                .unbind(),
        )
    })
    .map(|r| r.bind(py))
}

fn report(
    py: Python<'_>,
    h: &Bound<'_, Handle>,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    err: PyErr,
) -> PyResult<()> {
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    let source = callback_source(py, callback, args).unwrap_or_else(|| "<callback>".into());
    let context = PyDict::new(py);
    context.set_item("message", format!("Exception in callback {source}"))?;
    context.set_item("exception", err.into_value(py))?;
    context.set_item("handle", h)?;
    if let Some(tb) = h.borrow().source_traceback.as_ref() {
        context.set_item("source_traceback", tb)?;
    }
    let lp = h.borrow().loop_.as_ref().map(|l| l.clone_ref(py));
    if let Some(lp) = lp {
        lp.bind(py)
            .call_method1(intern!(py, "call_exception_handler"), (context,))?;
    }
    Ok(())
}

/// asyncio's description of a callback (`func(args) at file:line`).
fn callback_source(
    py: Python<'_>,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> Option<String> {
    py.import("asyncio.format_helpers")
        .and_then(|m| m.call_method1("_format_callback_source", (callback, args)))
        .map(|s| s.to_string())
        .ok()
}

#[pymethods]
impl Handle {
    /// Cancels the callback: it will not run; its references are dropped.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (dropped, notify) = {
            let mut me = slf.borrow_mut();
            if me.cancelled {
                return Ok(());
            }
            me.cancelled = true;
            let dropped = (me.callback.take(), me.args.take(), me.context.take());
            let notify = if me.is_timer() && me.scheduled {
                me.loop_.as_ref().map(|l| l.clone_ref(py))
            } else {
                None
            };
            (dropped, notify)
        };
        drop(dropped);
        if let Some(lp) = notify
            && let Ok(core) = lp.bind(py).cast::<super::core::LoopCore>()
        {
            core.get().timer_cancelled();
        }
        Ok(())
    }

    /// Whether it was cancelled.
    fn cancelled(&self) -> bool {
        self.cancelled
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.cancelled
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.callback.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.args.as_ref().map(|a| a.clone_ref(py))
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.loop_.as_ref().map(|c| c.clone_ref(py))
    }

    /// In debug mode, where the handle was made (a `traceback.StackSummary`).
    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|t| t.clone_ref(py))
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    /// The deadline of a timer handle, on the loop's clock.
    fn when(&self) -> PyResult<f64> {
        if self.is_timer() {
            Ok(self.when)
        } else {
            Err(PyAttributeError::new_err("not a timer handle"))
        }
    }

    #[getter]
    fn _when(&self) -> PyResult<f64> {
        self.when()
    }

    /// Runs the callback now (as the loop does).
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        run_handle(slf.py(), slf)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let kind = if self.is_timer() {
            "TimerHandle"
        } else {
            "Handle"
        };
        let mut s = format!("<{kind}");
        if self.cancelled {
            s.push_str(" cancelled");
        }
        if self.is_timer() {
            s.push_str(&format!(" when={}", self.when));
        }
        if let (Some(cb), Some(args)) = (&self.callback, &self.args) {
            let src = callback_source(py, cb.bind(py), args.bind(py)).unwrap_or_default();
            s.push(' ');
            s.push_str(&src);
        }
        if let Some(frame) = self.source_traceback.as_ref().and_then(|tb| {
            let last = tb.bind(py).get_item(-1).ok()?;
            Some((
                last.getattr("filename").ok()?.to_string(),
                last.getattr("lineno").ok()?.to_string(),
            ))
        }) {
            s.push_str(&format!(" created at {}:{}", frame.0, frame.1));
        }
        s.push('>');
        s
    }
}
