//! The Linux calls behind process tasks: a private epoll set, a pidfd, a
//! timerfd, non-blocking reads and writes, and signals to a process group.
//!
//! Each wrapper turns a failing call into an [`io::Error`]; none blocks.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Retries a call interrupted by a signal.
fn retry<T: PartialOrd + Default>(mut call: impl FnMut() -> T) -> io::Result<T> {
    loop {
        let r = call();
        if r >= T::default() {
            return Ok(r);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Takes ownership of a descriptor a call returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful call that created it;
    // nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A private epoll set, level-triggered, whose own descriptor the kernel's
/// reactor watches.
pub(super) struct Epoll(OwnedFd);

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Epoll {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: no pointers.
        let fd = retry(|| unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll(owned(fd)))
    }

    /// Watches `fd` for `events` (level-triggered), reporting it as `key`.
    pub(super) fn add(&self, fd: RawFd, key: u64, events: libc::c_int) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: key,
        };
        // SAFETY: `ev` is a valid event for the duration of the call.
        retry(|| unsafe { libc::epoll_ctl(self.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(drop)
    }

    /// Stops watching `fd` (before it is closed: a closed descriptor whose file
    /// is still open elsewhere would stay in the set).
    pub(super) fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`. A failure means it was not watched: nothing to do.
        unsafe { libc::epoll_ctl(self.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// The keys of the descriptors ready now, without waiting.
    pub(super) fn ready(&self, keys: &mut Vec<u64>) -> io::Result<()> {
        const MAX: usize = 8;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        // SAFETY: `events` holds MAX entries; zero timeout.
        let n = retry(|| unsafe {
            libc::epoll_wait(self.as_raw_fd(), events.as_mut_ptr(), MAX as libc::c_int, 0)
        })?;
        keys.clear();
        // `epoll_event` is packed on x86-64: copy the field out, never borrow it.
        keys.extend(events.iter().take(n as usize).map(|e| e.u64));
        Ok(())
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when the process exits
/// (Linux 5.3 and later).
pub(super) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let fd = retry(|| unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    let fd =
        RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd_open: descriptor out of range"))?;
    // pidfd_open sets close-on-exec itself; a pidfd is only polled, never read.
    Ok(owned(fd))
}

/// Whether `fd` is readable within `timeout` (a `poll(2)`; used off the
/// scheduler's thread only, by the background reaper).
pub(super) fn readable_within(fd: RawFd, timeout: Duration) -> bool {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    matches!(retry(|| unsafe { libc::poll(&mut pfd, 1, ms) }), Ok(n) if n > 0)
}

/// A one-shot monotonic timer as a descriptor (`timerfd_create(2)`).
pub(super) struct Timer(OwnedFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Timer {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: no pointers.
        let fd = retry(|| unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        Ok(Timer(owned(fd)))
    }

    /// Fires once, `after` from now (at once for zero).
    pub(super) fn arm(&self, after: Duration) -> io::Result<()> {
        // A zero `it_value` would disarm the timer: fire after a nanosecond instead.
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // SAFETY: `spec` is valid; the old value is not asked for.
        retry(|| unsafe { libc::timerfd_settime(self.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })
            .map(drop)
    }

    /// Whether the timer fired since it was armed (consumes the expiry).
    pub(super) fn fired(&self) -> bool {
        let mut count = [0u8; 8];
        matches!(read(self.as_raw_fd(), &mut count), Ok(Some(8)))
    }
}

/// Makes `fd` non-blocking.
pub(super) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, no pointers.
    let flags = retry(|| unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    retry(|| unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// A non-blocking read: `Ok(Some(n))` (zero at end of stream), `Ok(None)` if
/// nothing is available now.
pub(super) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    match retry(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }) {
        Ok(n) => Ok(Some(n as usize)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// A non-blocking write: `Ok(Some(n))`, `Ok(None)` if the pipe is full.
pub(super) fn write(fd: RawFd, buf: &[u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    match retry(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }) {
        Ok(n) => Ok(Some(n as usize)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends `signal` to every process of the group `pgid`. A group that no
/// longer exists is not an error.
pub(super) fn kill_group(pgid: libc::pid_t, signal: libc::c_int) {
    if pgid > 0 {
        // SAFETY: no pointers; a negative pid names the group.
        unsafe { libc::kill(-pgid, signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::within;

    // Every test here runs through `within`: a `retry` that loops on an
    // error other than EINTR (a would-block read, say) fails it after the
    // bound instead of hanging it.

    /// A pipe: (read end, write end).
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` holds two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        (owned(fds[0]), owned(fds[1]))
    }

    fn is_nonblocking(fd: &OwnedFd) -> bool {
        // SAFETY: no pointers.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_NONBLOCK != 0
    }

    /// `retry` returns a success (zero included) at once, calls again after
    /// an interruption, and gives back any other error. On a thread with a
    /// bound: a retry that loops on an error fails the test, not hangs it.
    #[test]
    fn retry_repeats_interrupted_calls_only() {
        let (zero, three, interrupted_once, calls, failed) = within(|| {
            let mut calls = 0;
            let interrupted_once = retry(|| {
                calls += 1;
                if calls == 1 {
                    // SAFETY: this thread's errno.
                    unsafe { *libc::__errno_location() = libc::EINTR };
                    -1
                } else {
                    5
                }
            });
            // SAFETY: closing an invalid descriptor only fails.
            let failed = retry(|| unsafe { libc::close(-1) }).map_err(|e| e.raw_os_error());
            (
                retry(|| 0),
                retry(|| 3),
                interrupted_once.ok(),
                calls,
                failed,
            )
        });
        assert_eq!(zero.ok(), Some(0));
        assert_eq!(three.ok(), Some(3));
        assert_eq!((interrupted_once, calls), (Some(5), 2));
        assert_eq!(failed, Err(Some(libc::EBADF)));
    }

    /// Non-blocking reads and writes: nothing yet is `None`, end of stream
    /// is `Some(0)`, a full pipe is `None`, a bad descriptor an error.
    #[test]
    fn reads_and_writes_do_not_block() {
        within(|| {
            let (r, w) = pipe();
            set_nonblocking(r.as_raw_fd()).unwrap();
            set_nonblocking(w.as_raw_fd()).unwrap();
            // Twice: the flag is set, not toggled.
            set_nonblocking(r.as_raw_fd()).unwrap();
            assert!(is_nonblocking(&r) && is_nonblocking(&w));
            let mut buf = [0u8; 16];
            assert!(!readable_within(r.as_raw_fd(), Duration::ZERO));
            assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), None);
            assert_eq!(write(w.as_raw_fd(), b"abc").unwrap(), Some(3));
            assert!(readable_within(r.as_raw_fd(), Duration::ZERO));
            assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), Some(3));
            assert_eq!(&buf[..3], b"abc");
            // Fill the pipe (bounded: a pipe holds at most a few MiB).
            let chunk = [7u8; 4096];
            let mut filled = false;
            for _ in 0..4096 {
                if write(w.as_raw_fd(), &chunk).unwrap().is_none() {
                    filled = true;
                    break;
                }
            }
            assert!(filled, "a full pipe never said so");
            drop(w);
            while read(r.as_raw_fd(), &mut buf).unwrap() != Some(0) {}
            assert!(read(-1, &mut buf).is_err());
            assert!(write(-1, b"x").is_err());
            assert!(set_nonblocking(-1).is_err());
        });
    }

    /// A timer fires once after it is armed, and `fired` consumes it; an
    /// epoll set reports the keys of the descriptors ready, and no more once
    /// one is removed.
    #[test]
    fn a_timer_fires_once_and_epoll_reports_its_key() {
        within(|| {
            let timer = Timer::new().unwrap();
            assert!(!timer.fired(), "fired before it was armed");
            let epoll = Epoll::new().unwrap();
            epoll.add(timer.as_raw_fd(), 42, libc::EPOLLIN).unwrap();
            let mut keys = vec![7];
            epoll.ready(&mut keys).unwrap();
            assert_eq!(keys, Vec::<u64>::new());
            timer.arm(Duration::ZERO).unwrap();
            assert!(readable_within(timer.as_raw_fd(), Duration::from_secs(10)));
            epoll.ready(&mut keys).unwrap();
            assert_eq!(keys, vec![42]);
            epoll.remove(timer.as_raw_fd());
            epoll.ready(&mut keys).unwrap();
            assert_eq!(keys, Vec::<u64>::new(), "a removed descriptor was reported");
            assert!(timer.fired());
            assert!(!timer.fired(), "one expiry, seen once");
            assert!(epoll.add(-1, 1, libc::EPOLLIN).is_err());
        });
    }

    /// A pidfd becomes readable when its process exits.
    #[test]
    fn a_pidfd_is_readable_once_its_process_exits() {
        within(|| {
            let mut child = std::process::Command::new("sh")
                .args(["-c", "read line"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let pid = libc::pid_t::try_from(child.id()).unwrap();
            let fd = pidfd_open(pid).unwrap();
            assert!(!readable_within(fd.as_raw_fd(), Duration::ZERO));
            drop(child.stdin.take());
            assert!(readable_within(fd.as_raw_fd(), Duration::from_secs(10)));
            child.wait().unwrap();
            assert!(pidfd_open(-1).is_err());
        });
    }
}
