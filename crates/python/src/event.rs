//! `tiffany.Event`: a flag tasks wait for; `set()` wakes them all.
//!
//! The Python face of the kernel's events (`tiffany_scheduler::event`), with
//! asyncio's API: `await ev.wait()`, `ev.set()`, `ev.clear()`, `ev.is_set()`.
//! An `Event` can be made anywhere; it belongs to the scheduler on which it is
//! first waited on (as an asyncio `Event` binds to its loop), and keeps a
//! `set()` made before that. A waiter costs one entry in the kernel's list.
//!
//! `set()` works from any thread: on another thread than its scheduler's it
//! goes through the scheduler's handle (`Handle::set_event`), which wakes the
//! scheduler. `is_set()`, `clear()` and `wait()` belong to the scheduler's
//! thread (a `RuntimeError` elsewhere, see [`crate::owner`]).

use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tiffany_scheduler::{EventId, Handle as KernelHandle, Scheduler as Kernel};

use crate::owner::ThreadBound;
use crate::syscall::Kind;

/// The kernel's event, freed when the `Event` goes (on the scheduler's
/// thread: see [`ThreadBound`]).
struct Slot {
    kernel: Kernel,
    id: EventId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Frees the kernel's slot unless tasks still wait on it (they hold
        // no reference to this object, only to the event).
        self.kernel.remove_event(self.id);
    }
}

struct Binding {
    slot: ThreadBound<Slot>,
    /// Sets the event from other threads (an internal handle: an `Event`
    /// is no reason to wait for a wake-up from outside).
    handle: KernelHandle,
    sched: u64,
    id: EventId,
}

#[derive(Default)]
struct State {
    binding: Option<Binding>,
    /// The flag before the event is bound to a scheduler.
    early: bool,
}

/// An event: tasks wait until it is set.
#[pyclass(module = "tiffany._native", name = "Event", frozen)]
pub struct Event {
    state: Mutex<State>,
}

impl Event {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the flag half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The system call a wait on this event is (binding it to the running
    /// scheduler if it is not bound yet).
    fn wait_kind(&self) -> PyResult<Kind> {
        let (kernel, sched) = crate::current::current_kernel()?;
        let mut state = self.state();
        let early = state.early;
        let b = match &state.binding {
            Some(b) if b.sched != sched => {
                return Err(PyRuntimeError::new_err(
                    "this Event belongs to another scheduler",
                ));
            }
            Some(b) => b,
            None => {
                let id = kernel.new_event();
                if early {
                    kernel.set_event(id);
                }
                let handle = kernel.internal_handle();
                let slot = ThreadBound::new(Slot { kernel, id }, handle.clone());
                state.binding.insert(Binding {
                    slot,
                    handle,
                    sched,
                    id,
                })
            }
        };
        Ok(Kind::EventWait {
            event: b.id.get(),
            sched: b.sched,
        })
    }
}

#[pymethods]
impl Event {
    #[new]
    fn new() -> Self {
        Event {
            state: Mutex::new(State::default()),
        }
    }

    /// Whether the event is set.
    fn is_set(&self) -> PyResult<bool> {
        let state = self.state();
        match &state.binding {
            Some(b) => Ok(b
                .slot
                .get("Event")?
                .kernel
                .is_event_set(b.id)
                .unwrap_or(false)),
            None => Ok(state.early),
        }
    }

    /// Sets the event: every task waiting on it wakes, and later waits
    /// return at once until `clear()`. Works from any thread.
    fn set(&self) {
        let mut state = self.state();
        match &state.binding {
            Some(b) => match b.slot.get("Event") {
                Ok(slot) => {
                    slot.kernel.set_event(b.id);
                }
                Err(_) => {
                    // Another thread: through the handle. A scheduler that
                    // is gone has nobody left to wake.
                    let _ = b.handle.set_event(b.id);
                }
            },
            None => state.early = true,
        }
    }

    /// Clears the event: later waits block until it is set again.
    fn clear(&self) -> PyResult<()> {
        let mut state = self.state();
        match &state.binding {
            Some(b) => {
                b.slot.get("Event")?.kernel.clear_event(b.id);
            }
            None => state.early = false,
        }
        Ok(())
    }

    /// `await ev.wait()`: returns `True` once the event is set (at once if
    /// it is). Raises `RuntimeError` outside a running scheduler, or on a
    /// scheduler other than the one the event belongs to.
    fn wait<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let kind = slf.get().wait_kind()?;
        // The system call carries the event, and the task keeps it for its
        // wait: `await Event().wait()` must not free the event it waits for.
        crate::syscall::owned_syscall(slf.as_any(), kind, None)
    }

    fn __repr__(&self) -> String {
        match self.is_set() {
            Ok(true) => "<tiffany.Event set>".into(),
            Ok(false) => "<tiffany.Event clear>".into(),
            Err(_) => "<tiffany.Event>".into(),
        }
    }
}
