//! `tiffany._native.LoopHandle`: a scheduled callback (asyncio's `Handle` and
//! `TimerHandle` in one native class).
//!
//! A handle holds the callback, its arguments, the `contextvars.Context` it
//! runs in and its loop. Running it calls `context.run(callback, *args)`; an
//! `Exception` (or any `BaseException` but `KeyboardInterrupt` and
//! `SystemExit`, as in asyncio) goes to the loop's exception handler.
//! Cancelling drops the callback and arguments at once, so a cancelled timer
//! keeps nothing alive.

use pyo3::exceptions::{PyAttributeError, PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit, intern};

/// A callback scheduled on a Tiffany event loop.
#[pyclass(module = "tiffany._native", name = "LoopHandle", weakref)]
pub struct Handle {
    callback: Option<Py<PyAny>>,
    args: Option<Py<PyTuple>>,
    context: Option<Py<PyAny>>,
    pub(crate) loop_: Option<Py<PyAny>>,
    pub(crate) cancelled: bool,
    /// The deadline of a timer on the loop's clock (NaN: not a timer).
    pub(crate) when: f64,
    /// Whether a timer is in its loop's heap.
    pub(crate) scheduled: bool,
}

/// `contextvars.copy_context`, looked up once.
fn copy_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static COPY: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let f = COPY.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("contextvars")?.getattr("copy_context")?.unbind())
    })?;
    f.bind(py).call0()
}

impl Handle {
    pub(crate) fn new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
        loop_: Py<PyAny>,
        when: f64,
    ) -> PyResult<Self> {
        let context = match context {
            Some(c) if !c.is_none(py) => c,
            _ => copy_context(py)?.unbind(),
        };
        Ok(Handle {
            callback: Some(callback),
            args: Some(args),
            context: Some(context),
            loop_: Some(loop_),
            cancelled: false,
            when,
            scheduled: false,
        })
    }

    pub(crate) fn is_timer(&self) -> bool {
        !self.when.is_nan()
    }
}

/// Runs a handle; an error that must end the loop (KeyboardInterrupt,
/// SystemExit) is returned, every other one goes to the exception handler.
pub(crate) fn run_handle(py: Python<'_>, h: &Bound<'_, Handle>) -> PyResult<()> {
    let (callback, args, context) = {
        let me = h.borrow();
        if me.cancelled {
            return Ok(());
        }
        match (&me.callback, &me.args, &me.context) {
            (Some(c), Some(a), Some(x)) => (c.clone_ref(py), a.clone_ref(py), x.clone_ref(py)),
            _ => return Ok(()),
        }
    };
    let args = args.bind(py);
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(callback.bind(py).clone());
    all.extend(args.iter());
    let call = PyTuple::new(py, all)?;
    match context.bind(py).call_method1(intern!(py, "run"), call) {
        Ok(_) => Ok(()),
        Err(e) => report(py, h, &callback, args, e),
    }
}

fn report(
    py: Python<'_>,
    h: &Bound<'_, Handle>,
    callback: &Py<PyAny>,
    args: &Bound<'_, PyTuple>,
    err: PyErr,
) -> PyResult<()> {
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    let source = py
        .import("asyncio.format_helpers")
        .and_then(|m| m.call_method1("_format_callback_source", (callback, args)))
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "<callback>".into());
    let context = PyDict::new(py);
    context.set_item("message", format!("Exception in callback {source}"))?;
    context.set_item("exception", err.into_value(py))?;
    context.set_item("handle", h)?;
    let lp = h.borrow().loop_.as_ref().map(|l| l.clone_ref(py));
    if let Some(lp) = lp {
        lp.bind(py)
            .call_method1(intern!(py, "call_exception_handler"), (context,))?;
    }
    Ok(())
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
            let dropped = (me.callback.take(), me.args.take());
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
        self.args.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.loop_.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _source_traceback(&self) -> Option<Py<PyAny>> {
        None
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
            let src = py
                .import("asyncio.format_helpers")
                .and_then(|m| m.call_method1("_format_callback_source", (cb, args)))
                .map(|s| s.to_string())
                .unwrap_or_default();
            s.push(' ');
            s.push_str(&src);
        }
        s.push('>');
        s
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for o in [&self.callback, &self.context, &self.loop_]
            .into_iter()
            .flatten()
        {
            visit.call(o)?;
        }
        if let Some(a) = &self.args {
            visit.call(a)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.callback = None;
        self.args = None;
        self.context = None;
        self.loop_ = None;
    }
}
