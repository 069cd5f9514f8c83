//! Ctrl-C (SIGINT) while a scheduler runs on the main thread.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::prelude::*;

use crate::current::Current;

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
                hit: std::sync::atomic::AtomicBool::new(false),
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
