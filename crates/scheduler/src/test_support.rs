//! Helpers shared by the kernel's unit tests.

use std::time::Duration;

/// How long [`within`] waits before it fails the test.
pub(crate) const BOUND: Duration = Duration::from_secs(10);

/// Runs `f` on a thread of its own and gives back what it returns (or
/// re-raises its panic); fails the test after [`BOUND`] instead of hanging
/// it when `f` never returns (a wait that never ends, a loop that never
/// stops).
pub(crate) fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(BOUND) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().unwrap_err())
        }
        Err(e) => panic!("did not return within {BOUND:?}: {e}"),
    }
}
