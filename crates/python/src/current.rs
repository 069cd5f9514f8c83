//! The thread's current scheduler.
//!
//! While a Python scheduler runs, it is the thread's *current* scheduler:
//! `tiffany.spawn`, `tiffany.now` and `tiffany.current_task` inside tasks
//! reach it through a thread-local stack (a scheduler run from inside a task
//! of another one goes on top, and comes off when its run ends).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tiffany_scheduler::{IoToken, Scheduler as Kernel};

use crate::io_registry::IoReg;

pub(crate) static NEXT_SCHEDULER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The schedulers running on this thread, innermost last.
    static CURRENT: RefCell<Vec<Current>> = const { RefCell::new(Vec::new()) };
}

/// What a Python scheduler shares with its tasks and the module functions.
#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) kernel: Kernel,
    pub(crate) id: u64,
    pub(crate) callback_errors: Rc<Cell<u64>>,
    /// An exception raised by a signal handler while the scheduler waited.
    pub(crate) interrupt: Rc<RefCell<Option<PyErr>>>,
    /// Descriptors registered with the reactor, with how many waits use each.
    pub(crate) io: Rc<RefCell<HashMap<i32, IoReg>>>,
}

/// Ends the running scheduler's run with `err` (KeyboardInterrupt or
/// SystemExit from a task): shut down now, re-raise from `run()`.
pub(crate) fn interrupt_with(err: PyErr) {
    if let Ok(cur) = current() {
        cur.interrupt.borrow_mut().get_or_insert(err);
        let _ = cur
            .kernel
            .internal_handle()
            .request_shutdown(Duration::ZERO);
    }
}

/// A new in-memory channel on the running scheduler, and a handle to notify it.
pub(crate) fn new_channel() -> PyResult<(tiffany_scheduler::Handle, IoToken)> {
    let cur = current()?;
    Ok((cur.kernel.internal_handle(), cur.kernel.register_channel()))
}

/// Releases a channel made by [`new_channel`].
pub(crate) fn close_channel(token: IoToken) {
    if let Ok(cur) = current() {
        cur.kernel.deregister_io(token);
    }
}

/// Makes `cur` the thread's current scheduler until the guard drops.
pub(crate) struct Enter;

impl Enter {
    pub(crate) fn new(cur: &Current) -> Self {
        CURRENT.with(|c| c.borrow_mut().push(cur.clone()));
        Enter
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().pop());
    }
}

/// The token of a channel on the current scheduler.
pub(crate) fn channel_token(raw: u64) -> PyResult<IoToken> {
    current()?;
    Ok(IoToken::from_raw(raw))
}

fn not_running() -> PyErr {
    PyRuntimeError::new_err("no tiffany scheduler is running on this thread")
}

/// The running scheduler of this thread and its id.
pub(crate) fn current_kernel() -> PyResult<(Kernel, u64)> {
    // Only the kernel is cloned: `current()` clones (and later drops) every
    // shared part of `Current`, which was a hundred instructions of each
    // asyncio task's step and end.
    CURRENT
        .with(|c| c.borrow().last().map(|c| (c.kernel.clone(), c.id)))
        .ok_or_else(not_running)
}

/// The running scheduler of this thread.
pub(crate) fn current() -> PyResult<Current> {
    CURRENT
        .with(|c| c.borrow().last().cloned())
        .ok_or_else(not_running)
}
