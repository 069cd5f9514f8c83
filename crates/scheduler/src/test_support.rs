//! Helpers shared by the kernel's tests: its unit tests (`crate::test_support`)
//! and, included by path, its integration tests (`tests/kernel/common.rs`).

#![allow(dead_code)]

use std::time::Duration;

/// How long [`within`] waits before it fails the test.
pub(crate) const BOUND: Duration = Duration::from_secs(10);

/// [`within_for`] with [`BOUND`].
pub(crate) fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    within_for(BOUND, f)
}

/// Runs `f` on a thread of its own and gives back what it returns (or
/// re-raises its panic); fails the test after `bound` instead of hanging
/// it when `f` never returns (a wait that never ends, a loop that never
/// stops). A scheduler stays on the thread that made it: `f` builds its own.
pub(crate) fn within_for<T: Send + 'static>(
    bound: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(bound) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().unwrap_err())
        }
        Err(e) => panic!("did not return within {bound:?}: {e}"),
    }
}
