//! Objects that belong to one thread: a `Scheduler`, its `Task`s, a bound `Event`.
//!
//! A kernel scheduler is single-threaded (its state is behind `Rc`), so the
//! Python objects that hold it may only be used on the thread that made it.
//! PyO3's `unsendable` would enforce that with a panic (a
//! `pyo3_runtime.PanicException`, not an `Exception`), and would print one
//! more when such an object is dropped on another thread. [`ThreadBound`]
//! checks the thread itself: a use from another thread raises a
//! `RuntimeError` that says which object belongs to which thread and what to
//! use instead; a drop on another thread is sent to the owner thread through
//! the scheduler's handle (`Handle::defer`), or leaked if the scheduler is
//! gone, and prints nothing.

use std::mem::ManuallyDrop;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tiffany_scheduler::Handle as KernelHandle;

/// The calling thread, as Python's `threading.get_ident()` sees it.
fn this_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

/// A value usable only on the thread that made it (see the module's docs).
pub(crate) struct ThreadBound<T: 'static> {
    owner: u64,
    /// Runs the drop of a value dropped on another thread on the owner's.
    home: KernelHandle,
    value: ManuallyDrop<T>,
}

// SAFETY: the value is only reached through `get`, which checks that the
// caller is the owner thread, and only dropped on the owner thread (see Drop).
unsafe impl<T: 'static> Send for ThreadBound<T> {}
// SAFETY: as above: shared references to the value never leave the owner thread.
unsafe impl<T: 'static> Sync for ThreadBound<T> {}

impl<T: 'static> ThreadBound<T> {
    /// Binds `value` to the calling thread; `home` is the handle of the
    /// scheduler of that thread, which runs a drop made elsewhere.
    pub(crate) fn new(value: T, home: KernelHandle) -> Self {
        ThreadBound {
            owner: this_thread(),
            home,
            value: ManuallyDrop::new(value),
        }
    }

    /// The value, on the owner thread; a `RuntimeError` naming `what` (the
    /// Python class) and both threads anywhere else.
    #[inline]
    pub(crate) fn get(&self, what: &str) -> PyResult<&T> {
        if this_thread() == self.owner {
            Ok(&self.value)
        } else {
            Err(wrong_thread(what, self.owner))
        }
    }
}

impl<T: 'static> Drop for ThreadBound<T> {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the field is not used afterwards.
        let value = unsafe { ManuallyDrop::take(&mut self.value) };
        if this_thread() == self.owner {
            drop(value);
            return;
        }
        struct AssertSend<T>(T);
        // SAFETY: the value moves to the owner thread untouched and is
        // dropped there (or leaked).
        unsafe impl<T> Send for AssertSend<T> {}
        let parcel = AssertSend(value);
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let parcel = parcel;
            drop(parcel.0);
        });
        if let Err(job) = self.home.defer(job) {
            // The scheduler is gone: never drop its values on this thread.
            std::mem::forget(job);
        }
    }
}

/// The error for a use of `what` from a thread other than `owner`.
fn wrong_thread(what: &str, owner: u64) -> PyErr {
    let name = |ident: u64| {
        Python::attach(|py| {
            py.import("threading")
                .and_then(|t| t.getattr("_active")?.get_item(ident))
                .and_then(|t| t.getattr("name"))
                .map(|n| format!("{n}"))
                .unwrap_or_else(|_| format!("thread {ident}"))
        })
    };
    PyRuntimeError::new_err(format!(
        "this {what} belongs to thread '{}' (its scheduler's) and cannot be used from \
         thread '{}': a scheduler and its objects stay on their own thread; from other \
         threads use Scheduler.handle() (a Handle: spawn, cancel, shutdown) or a \
         tiffany.lowlevel.Completion (notify())",
        name(owner),
        name(this_thread()),
    ))
}
