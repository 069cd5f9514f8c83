//! Ctrl-C (SIGINT) while a scheduler runs on the main thread.
//!
//! As in asyncio: the first Ctrl-C cancels every task and lets them unwind
//! (their `finally` blocks run, however long they take); a second one
//! abandons whatever is still alive (its coroutine is closed) and `run()`
//! raises `KeyboardInterrupt` at once. A task that swallows `Cancelled`
//! cannot keep the program running past the second Ctrl-C.

use std::sync::atomic::{AtomicU32, Ordering};

use pyo3::prelude::*;

use crate::current::Current;

/// The SIGINT handler installed for a `run()`: the first Ctrl-C
/// interrupts (cancels every task and waits for them), the next aborts
/// (abandons what is left); `run()` then raises `KeyboardInterrupt`.
#[pyclass(module = "tiffany._native", name = "_SigintHandler", frozen)]
struct SigintHandler {
    /// An internal handle: the handler is no reason to wait for a wake-up
    /// from outside (deadlock detection).
    handle: tiffany_scheduler::Handle,
    hits: AtomicU32,
}

#[pymethods]
impl SigintHandler {
    fn __call__(&self, _signum: i32, _frame: Py<PyAny>) {
        // A scheduler that is gone has nothing left to stop.
        let _ = if self.hits.fetch_add(1, Ordering::SeqCst) == 0 {
            self.handle.interrupt()
        } else {
            self.handle.abort()
        };
    }
}

pub(crate) struct SigintGuard {
    installed: Option<(Py<PyAny>, Py<SigintHandler>)>,
}

impl SigintGuard {
    pub(crate) fn install(py: Python<'_>, cur: &Current) -> PyResult<Self> {
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
                handle: cur.kernel.internal_handle(),
                hits: AtomicU32::new(0),
            },
        )?;
        let previous = signal.call_method1("signal", (sigint, handler.clone_ref(py)))?;
        Ok(SigintGuard {
            installed: Some((previous.unbind(), handler)),
        })
    }

    /// Puts the previous handler back; returns whether Ctrl-C was pressed.
    pub(crate) fn restore(mut self, py: Python<'_>) -> PyResult<bool> {
        let Some((previous, handler)) = self.installed.take() else {
            return Ok(false);
        };
        let signal = py.import("signal")?;
        signal.call_method1("signal", (signal.getattr("SIGINT")?, previous))?;
        Ok(handler.get().hits.load(Ordering::SeqCst) > 0)
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
