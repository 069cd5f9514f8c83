//! Stopping a child after its task is gone: the background reaper.
//!
//! A cancelled process task cannot wait for its child any more: every
//! blocking call of a cancelled task is answered `Cancelled` at once. So the
//! task signals the group (`SIGTERM`) and hands the child to a short-lived
//! thread, which waits for it to exit for up to the grace, sends `SIGKILL` to
//! the group, and reaps it. The scheduler's thread never blocks on a child,
//! and no child is left a zombie.
//!
//! If no thread can be started (the process is out of threads), the group is
//! killed at once and the child reaped on the spot: a `SIGKILL`ed process
//! exits promptly, and a zombie would be worse.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Child;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::sys;

/// Children handed to the reaper and not reaped yet.
static PENDING: Mutex<usize> = Mutex::new(0);
static REAPED: Condvar = Condvar::new();

/// Signals the group of `child` with `SIGTERM`, then in the background waits
/// up to `grace` for the child to exit, kills the group and reaps the child.
pub(super) fn stop(child: Child, pidfd: OwnedFd, grace: Duration) {
    let pgid = pid_of(&child);
    if grace.is_zero() {
        sys::kill_group(pgid, libc::SIGKILL);
    } else {
        sys::kill_group(pgid, libc::SIGTERM);
    }
    *PENDING.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    let job = Mutex::new(Some((child, pidfd)));
    let job = std::sync::Arc::new(job);
    let theirs = job.clone();
    let started = std::thread::Builder::new()
        .name("tiffany-reaper".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let taken = theirs.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some((child, pidfd)) = taken {
                sys::readable_within(pidfd.as_raw_fd(), grace);
                // Closed before the child counts as reaped: a caller of
                // `wait_for_reaper` then sees every descriptor given back.
                drop(pidfd);
                finish(child);
            }
        });
    if started.is_err() {
        let taken = job.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((child, pidfd)) = taken {
            drop(pidfd);
            finish(child);
        }
    }
}

/// Kills what is left of the group and reaps the child.
fn finish(mut child: Child) {
    sys::kill_group(pid_of(&child), libc::SIGKILL);
    // The child is ours and was just sent SIGKILL: this returns promptly.
    let _ = child.wait();
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    *pending = pending.saturating_sub(1);
    REAPED.notify_all();
}

fn pid_of(child: &Child) -> libc::pid_t {
    libc::pid_t::try_from(child.id()).unwrap_or(0)
}

/// How many stopped children the background reaper has not reaped yet.
pub fn pending_reaps() -> usize {
    *PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until the background reaper has reaped every child handed to it
/// (those of cancelled process tasks), at most `timeout`. Returns whether
/// none is left. A daemon calls it before it exits; tests call it to check
/// that no zombie is left.
pub fn wait_for_reaper(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    while *pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        pending = REAPED
            .wait_timeout(pending, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}
