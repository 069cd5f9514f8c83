//! `tiffany.Event`: a flag tasks wait for; `set()` wakes them all.
//!
//! The Python face of the kernel's events (`tiffany_scheduler::event`), with
//! asyncio's API: `await ev.wait()`, `ev.set()`, `ev.clear()`, `ev.is_set()`.
//! An `Event` can be made anywhere; it belongs to the scheduler on which it is
//! first waited on (as an asyncio `Event` binds to its loop), and keeps a
//! `set()` made before that. A waiter costs one entry in the kernel's list.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tiffany_scheduler::{EventId, Scheduler as Kernel};

use crate::syscall::{Kind, Syscall};

struct Binding {
    kernel: Kernel,
    sched: u64,
    id: EventId,
}

/// An event: tasks wait until it is set.
#[pyclass(module = "tiffany._native", name = "Event", unsendable)]
pub struct Event {
    binding: Option<Binding>,
    /// The flag before the event is bound to a scheduler.
    early: bool,
}

#[pymethods]
impl Event {
    #[new]
    fn new() -> Self {
        Event {
            binding: None,
            early: false,
        }
    }

    /// Whether the event is set.
    fn is_set(&self) -> bool {
        match &self.binding {
            Some(b) => b.kernel.is_event_set(b.id).unwrap_or(false),
            None => self.early,
        }
    }

    /// Sets the event: every task waiting on it wakes, and later waits
    /// return at once until `clear()`.
    fn set(&mut self) {
        match &self.binding {
            Some(b) => {
                b.kernel.set_event(b.id);
            }
            None => self.early = true,
        }
    }

    /// Clears the event: later waits block until it is set again.
    fn clear(&mut self) {
        match &self.binding {
            Some(b) => {
                b.kernel.clear_event(b.id);
            }
            None => self.early = false,
        }
    }

    /// `await ev.wait()`: returns `True` once the event is set (at once if
    /// it is). Raises `RuntimeError` outside a running scheduler, or on a
    /// scheduler other than the one the event belongs to.
    fn wait(&mut self) -> PyResult<Syscall> {
        let (kernel, sched) = crate::current::current_kernel()?;
        let b = match &self.binding {
            Some(b) if b.sched != sched => {
                return Err(PyRuntimeError::new_err(
                    "this Event belongs to another scheduler",
                ));
            }
            Some(b) => b,
            None => {
                let id = kernel.new_event();
                if self.early {
                    kernel.set_event(id);
                }
                self.binding.insert(Binding { kernel, sched, id })
            }
        };
        Ok(Syscall::new(Kind::EventWait {
            event: b.id.get(),
            sched: b.sched,
        }))
    }

    fn __repr__(&self) -> String {
        format!(
            "<tiffany.Event {}>",
            if self.is_set() { "set" } else { "clear" }
        )
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // Frees the kernel's slot unless tasks still wait on it (they hold
        // no reference to this object, only to the event).
        if let Some(b) = self.binding.take() {
            b.kernel.remove_event(b.id);
        }
    }
}
