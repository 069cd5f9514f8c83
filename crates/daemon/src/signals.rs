//! Signals: lending the process's SIGTERM, SIGINT and SIGHUP to a hosted
//! daemon, and handing them back.
//!
//! `tiffanyd` owns its process: it installs tokio's handlers for the three
//! signals it acts on (drain, drain, reload) and exits. A daemon hosted by
//! Python (`tiffany.serve`) runs inside a process that goes on after it,
//! and may host another daemon later. Two things about tokio's handlers
//! would then go wrong:
//!
//! - tokio installs a signal's OS handler once per process and never
//!   removes it. After the daemon returns, a SIGTERM or SIGHUP would still
//!   reach tokio's handler, which nobody listens to any more: the process
//!   could no longer be terminated by them.
//! - tokio never installs it again. Once the host puts its own handler back
//!   (Python does for SIGINT), a second daemon's SIGINT would reach the
//!   host's handler, not the daemon's drain.
//!
//! So a hosted run borrows the signals ([`Borrowed`]): it notes each
//! signal's disposition before it starts, puts tokio's handler back if a
//! previous run saved it, and when it ends saves tokio's handler and
//! restores what it found.

use std::sync::Mutex;

/// The signals the daemon acts on.
const HANDLED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// A signal's disposition (`sigaction`), as plain data.
#[derive(Clone, Copy)]
struct Disposition(libc::sigaction);

// SAFETY: a `sigaction` is plain data (a handler's address, flags and a
// signal mask); it is only ever handed back to `sigaction(2)`.
unsafe impl Send for Disposition {}

impl Disposition {
    /// `signal`'s disposition now.
    fn of(signal: libc::c_int) -> Option<Disposition> {
        // SAFETY: a zeroed `sigaction` is a valid out-parameter; a null new
        // action only reads the current one.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            (libc::sigaction(signal, std::ptr::null(), &mut old) == 0).then_some(Disposition(old))
        }
    }

    /// Makes this `signal`'s disposition.
    fn install(&self, signal: libc::c_int) {
        // SAFETY: the action was read from `sigaction(2)` for this signal.
        let rc = unsafe { libc::sigaction(signal, &self.0, std::ptr::null_mut()) };
        if rc != 0 {
            tracing::warn!(
                signal,
                "cannot restore a signal's handler: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// tokio's handlers, saved by the first hosted run that ended.
static TOKIO_HANDLERS: Mutex<Option<[Option<Disposition>; 3]>> = Mutex::new(None);

/// The signals, lent to a hosted daemon's run until this is dropped.
pub(crate) struct Borrowed {
    before: [Option<Disposition>; 3],
}

impl Borrowed {
    /// Notes the dispositions the host has, and puts back tokio's handlers
    /// if an earlier run saved them. Call before tokio's `signal()`.
    pub(crate) fn take() -> Borrowed {
        let before = HANDLED.map(Disposition::of);
        let saved = *TOKIO_HANDLERS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handlers) = saved {
            for (signal, handler) in HANDLED.into_iter().zip(handlers) {
                if let Some(h) = handler {
                    h.install(signal);
                }
            }
        }
        Borrowed { before }
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        let mut saved = TOKIO_HANDLERS.lock().unwrap_or_else(|e| e.into_inner());
        if saved.is_none() {
            *saved = Some(HANDLED.map(Disposition::of));
        }
        for (signal, before) in HANDLED.into_iter().zip(self.before) {
            if let Some(b) = before {
                b.install(signal);
            }
        }
    }
}
