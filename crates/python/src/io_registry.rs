//! Descriptors registered with the reactor for I/O waits.
//!
//! Each scheduler keeps a map from descriptor to registration; a wait
//! acquires it (registering the descriptor if needed) and releases it when
//! the task resumes. A socket object's registration outlives its waits.

use pyo3::prelude::*;
use pyo3::types::PyWeakrefReference;
use tiffany_scheduler::IoToken;

/// A descriptor registered with the reactor, and what uses it.
pub(crate) struct IoReg {
    token: IoToken,
    /// Waits in progress on it.
    waits: usize,
    /// A weak reference to the socket (or file) object it was registered
    /// for. With one, the registration outlives the wait: the object cannot
    /// change its descriptor, so while it is alive and the same object asks
    /// again, the registration is still the descriptor's. Without one (a raw
    /// descriptor number), it ends with the last wait, since nothing tells
    /// the number's next owner from this one.
    owner: Option<Py<PyWeakrefReference>>,
}

impl IoReg {
    fn owned_by(&self, py: Python<'_>, owner: Option<&Bound<'_, PyAny>>) -> bool {
        match (&self.owner, owner) {
            (None, None) => true,
            (Some(r), Some(o)) => r.bind(py).upgrade().is_some_and(|alive| alive.is(o)),
            _ => false,
        }
    }
}

/// Registers `fd` for a wait (or counts one more wait on it). `owner` is the
/// object the descriptor belongs to, when known: its registration is kept
/// for the next wait (see [`IoReg::owner`]).
pub(crate) fn io_acquire(
    py: Python<'_>,
    fd: i32,
    owner: Option<&Bound<'_, PyAny>>,
) -> PyResult<IoToken> {
    let cur = crate::current::current()?;
    let stale = {
        let mut io = cur.io.borrow_mut();
        match io.get_mut(&fd) {
            Some(reg) => {
                let same = reg.owned_by(py, owner);
                if same || reg.waits > 0 {
                    // The same owner, or a wait in progress shows the
                    // descriptor is open and registered: share the registration.
                    reg.waits += 1;
                    if !same && let Some(o) = owner {
                        reg.owner = PyWeakrefReference::new(o).ok().map(Bound::unbind);
                    }
                    return Ok(reg.token);
                }
                // Left by an object that is gone (or by another one): the
                // number may have been closed and reused since. Start afresh.
                io.remove(&fd).map(|reg| reg.token)
            }
            None => None,
        }
    };
    if let Some(token) = stale {
        cur.kernel.deregister_io(token);
    }
    struct Fd(i32);
    impl tiffany_scheduler::IoSource for Fd {
        fn raw_fd(&self) -> i32 {
            self.0
        }
    }
    let token = cur
        .kernel
        .register_io(&Fd(fd))
        .map_err(|e| crate::errors::io_error(&e))?;
    // An object that cannot be weakly referenced is treated as a number.
    let owner = owner.and_then(|o| PyWeakrefReference::new(o).ok().map(Bound::unbind));
    cur.io.borrow_mut().insert(
        fd,
        IoReg {
            token,
            waits: 1,
            owner,
        },
    );
    Ok(token)
}

/// Ends one wait on `fd`; a registration without an owner ends with its
/// last wait.
pub(crate) fn io_release(fd: i32) {
    let Ok(cur) = crate::current::current() else {
        return;
    };
    let mut io = cur.io.borrow_mut();
    if let Some(reg) = io.get_mut(&fd) {
        reg.waits = reg.waits.saturating_sub(1);
        if reg.waits == 0 && reg.owner.is_none() {
            let token = reg.token;
            io.remove(&fd);
            drop(io);
            cur.kernel.deregister_io(token);
        }
    }
}
