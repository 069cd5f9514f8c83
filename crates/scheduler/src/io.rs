//! I/O readiness: sources, interests, and the reactor that watches them.
//!
//! A task that would block on a file descriptor does not block the thread: it
//! registers the descriptor once ([`Scheduler::register_io`](crate::Scheduler::register_io))
//! and asks to be woken when it is readable or writable
//! ([`SystemCall::IoWait`](crate::SystemCall::IoWait)). The scheduler keeps
//! running other tasks; when nothing is runnable it sleeps in the reactor until
//! the nearest timer, an I/O event, or a wake from another thread.
//!
//! With the `async-io` feature (the default) the reactor is a `mio::Poll`
//! (epoll on Linux). Readiness there is *level* semantics for the task: a wait on
//! a source that is already ready answers at once, even if its edge was reported
//! long ago or never (a `poll(2)` check covers the gap before the task sleeps).
//!
//! Without the feature there is no poller: readiness comes from an in-memory
//! channel ([`Scheduler::notify_io`](crate::Scheduler::notify_io),
//! [`Handle::notify_io`](crate::Handle::notify_io)), which keeps the same API for
//! platforms and tests without epoll, and for user-space sources (channels) in
//! both modes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use slab::Slab;

use crate::waiter::Waiter;

/// Something with a file descriptor the reactor can watch.
pub trait IoSource {
    /// The raw descriptor. It must stay open while registered.
    fn raw_fd(&self) -> RawFd;

    /// An id for logs (by default the descriptor's number). The scheduler
    /// identifies a registered source by the [`IoToken`] it hands out.
    fn id(&self) -> u64 {
        self.raw_fd() as u64
    }
}

impl<T: AsRawFd> IoSource for T {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

/// The id of a registered I/O source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoToken(u64);

crate::slot_id::slot_id!(IoToken, "token");

/// Which readiness a task waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    /// Data to read, a connection to accept, or end of stream.
    Readable,
    /// Room to write, or a connection established.
    Writable,
}

impl Interest {
    /// `"readable"` or `"writable"`.
    pub fn name(self) -> &'static str {
        match self {
            Interest::Readable => "readable",
            Interest::Writable => "writable",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Interest::Readable => READABLE,
            Interest::Writable => WRITABLE,
        }
    }
}

/// How an I/O wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoReady {
    /// The source is ready (or has an error or hang-up the task will see when it
    /// reads or writes).
    Ready,
    /// The wait's timeout passed first.
    Timeout,
}

const READABLE: u8 = 1;
const WRITABLE: u8 = 2;

struct Source {
    #[cfg_attr(not(feature = "async-io"), allow(dead_code))]
    fd: RawFd,
    generation: u32,
    /// Readiness seen and not yet handed to a waiter.
    ready: u8,
    reader: Option<Waiter>,
    writer: Option<Waiter>,
}

impl Source {
    fn waiter_mut(&mut self, interest: Interest) -> &mut Option<Waiter> {
        match interest {
            Interest::Readable => &mut self.reader,
            Interest::Writable => &mut self.writer,
        }
    }
}

/// What [`Reactor::wait_for`] decided.
pub(crate) enum WaitStart {
    /// Ready now: answer at once.
    Ready,
    /// The task must block; it is recorded as the waiter.
    Blocked,
}

/// Wakes a scheduler that is asleep in its reactor, from any thread.
#[derive(Clone)]
pub(crate) struct Waker {
    #[cfg(feature = "async-io")]
    inner: Arc<mio::Waker>,
    #[cfg(not(feature = "async-io"))]
    inner: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Waker {
    pub(crate) fn wake(&self) {
        #[cfg(feature = "async-io")]
        {
            // A failed wake means the poller is gone: the scheduler has ended.
            let _ = self.inner.wake();
        }
        #[cfg(not(feature = "async-io"))]
        {
            let (flag, cond) = &*self.inner;
            *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cond.notify_one();
        }
    }
}

#[cfg(feature = "async-io")]
const WAKE_TOKEN: mio::Token = mio::Token(usize::MAX);

/// Registered sources and the poller (or in-memory channel) behind them.
pub(crate) struct Reactor {
    sources: Slab<Source>,
    next_generation: u32,
    /// Tasks currently blocked on I/O.
    waiting: usize,
    #[cfg(feature = "async-io")]
    poll: mio::Poll,
    #[cfg(feature = "async-io")]
    events: mio::Events,
    waker: Waker,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Self> {
        #[cfg(feature = "async-io")]
        {
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE_TOKEN)?);
            Ok(Reactor {
                sources: Slab::new(),
                next_generation: 0,
                waiting: 0,
                poll,
                events: mio::Events::with_capacity(1024),
                waker: Waker { inner: waker },
            })
        }
        #[cfg(not(feature = "async-io"))]
        {
            Ok(Reactor {
                sources: Slab::new(),
                next_generation: 0,
                waiting: 0,
                waker: Waker {
                    inner: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
                },
            })
        }
    }

    pub(crate) fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Tasks blocked on I/O right now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Whether any source is registered (outside readiness can arrive).
    pub(crate) fn has_sources(&self) -> bool {
        !self.sources.is_empty()
    }

    pub(crate) fn register(&mut self, fd: RawFd) -> io::Result<IoToken> {
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot register a negative file descriptor",
            ));
        }
        // Refuse a closed descriptor with a clear error rather than a silent hang.
        // SAFETY: fcntl(F_GETFD) only reads the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.insert(fd)
    }

    /// Registers a source without a descriptor: its readiness comes only from
    /// the in-memory channel (`notify_io`).
    pub(crate) fn register_channel(&mut self) -> IoToken {
        // Cannot fail: no descriptor is involved.
        self.insert(-1).unwrap_or(IoToken(u64::MAX))
    }

    fn insert(&mut self, fd: RawFd) -> io::Result<IoToken> {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let entry = self.sources.vacant_entry();
        let token = IoToken::new(entry.key(), generation);
        #[cfg(feature = "async-io")]
        if fd >= 0 {
            self.poll.registry().register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(entry.key()),
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            )?;
        }
        entry.insert(Source {
            fd,
            generation,
            ready: 0,
            reader: None,
            writer: None,
        });
        Ok(token)
    }

    /// Removes a source; returns the tasks that were waiting on it.
    pub(crate) fn deregister(&mut self, token: IoToken) -> Option<Vec<Waiter>> {
        self.lookup(token)?;
        let source = self.sources.remove(token.slot());
        #[cfg(feature = "async-io")]
        if source.fd >= 0 {
            // The descriptor may already be closed; that is not an error here.
            let _ = self
                .poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&source.fd));
        }
        let waiters: Vec<Waiter> = source.reader.into_iter().chain(source.writer).collect();
        self.waiting -= waiters.len();
        Some(waiters)
    }

    fn lookup(&self, token: IoToken) -> Option<&Source> {
        self.sources
            .get(token.slot())
            .filter(|s| s.generation == token.generation())
    }

    fn lookup_mut(&mut self, token: IoToken) -> Option<&mut Source> {
        self.sources
            .get_mut(token.slot())
            .filter(|s| s.generation == token.generation())
    }

    pub(crate) fn is_registered(&self, token: IoToken) -> bool {
        self.lookup(token).is_some()
    }

    /// Starts a wait: answers at once if the source is ready, or records the waiter.
    /// `Err` if the token is unknown or another task already waits for the same interest.
    ///
    /// `after_would_block`: the caller's last call on the source failed with
    /// `EWOULDBLOCK`. Readiness recorded before it is stale (events are only
    /// recorded between task steps, so before that call), and no level check
    /// is needed: the registration is edge-triggered and stays in place, so
    /// anything arriving later produces an event.
    pub(crate) fn wait_for(
        &mut self,
        token: IoToken,
        interest: Interest,
        waiter: Waiter,
        after_would_block: bool,
    ) -> Result<WaitStart, crate::SyscallError> {
        let generation = token.generation();
        let source = self
            .sources
            .get_mut(token.slot())
            .filter(|s| s.generation == generation)
            .ok_or(crate::SyscallError::UnknownIoToken(token))?;
        let bit = interest.bit();
        if after_would_block {
            source.ready &= !bit;
        } else {
            if source.ready & bit != 0 {
                source.ready &= !bit;
                return Ok(WaitStart::Ready);
            }
            #[cfg(feature = "async-io")]
            if source.fd >= 0 && level_ready(source.fd, interest) {
                return Ok(WaitStart::Ready);
            }
        }
        let slot = source.waiter_mut(interest);
        if let Some(existing) = slot
            && existing.task != waiter.task
        {
            return Err(crate::SyscallError::IoBusy(token));
        }
        let fresh = slot.is_none();
        *slot = Some(waiter);
        if fresh {
            self.waiting += 1;
        }
        Ok(WaitStart::Blocked)
    }

    /// Forgets a waiter whose wait ended some other way (timeout, cancel).
    pub(crate) fn cancel_wait(&mut self, token: IoToken, interest: Interest, waiter: Waiter) {
        if let Some(source) = self.lookup_mut(token) {
            let slot = source.waiter_mut(interest);
            if slot.is_some_and(|w| w == waiter) {
                *slot = None;
                self.waiting -= 1;
            }
        }
    }

    /// Records readiness for a source; returns the waiter it wakes, if any.
    pub(crate) fn set_ready(&mut self, token: IoToken, interest: Interest) -> Option<Waiter> {
        let generation = token.generation();
        let source = self
            .sources
            .get_mut(token.slot())
            .filter(|s| s.generation == generation)?;
        Self::mark(source, interest.bit(), &mut self.waiting).pop()
    }

    fn mark(source: &mut Source, bits: u8, waiting: &mut usize) -> Vec<Waiter> {
        let mut woken = Vec::new();
        for interest in [Interest::Readable, Interest::Writable] {
            if bits & interest.bit() == 0 {
                continue;
            }
            match source.waiter_mut(interest).take() {
                Some(w) => {
                    *waiting -= 1;
                    woken.push(w);
                }
                None => source.ready |= interest.bit(),
            }
        }
        woken
    }

    /// Waits for I/O events or a wake, at most `timeout` (`None`: until something
    /// happens; zero: just look). Calls `woken` for each waiter made ready.
    /// Returns whether the wait ended early because of an event or a wake.
    pub(crate) fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut woken: impl FnMut(Waiter),
    ) -> io::Result<()> {
        #[cfg(feature = "async-io")]
        {
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(e),
            }
            for event in self.events.iter() {
                if event.token() == WAKE_TOKEN {
                    continue;
                }
                let mut bits = 0;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    bits |= READABLE;
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    bits |= WRITABLE;
                }
                if let Some(source) = self.sources.get_mut(event.token().0) {
                    for w in Self::mark(source, bits, &mut self.waiting) {
                        woken(w);
                    }
                }
            }
            Ok(())
        }
        #[cfg(not(feature = "async-io"))]
        {
            let _ = &mut woken;
            let (flag, cond) = &*self.waker.inner;
            let mut woke = flag.lock().unwrap_or_else(|e| e.into_inner());
            if !*woke {
                match timeout {
                    Some(t) if t.is_zero() => {}
                    Some(t) => {
                        woke = cond
                            .wait_timeout_while(woke, t, |w| !*w)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    None => {
                        woke = cond
                            .wait_while(woke, |w| !*w)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
            *woke = false;
            Ok(())
        }
    }
}

#[cfg(test)]
impl Reactor {
    /// Whether a wake arrived since the last look (looks without blocking
    /// and consumes it).
    pub(crate) fn take_wake(&mut self) -> bool {
        #[cfg(feature = "async-io")]
        {
            self.poll(Some(Duration::ZERO), |_| {}).unwrap();
            self.events.iter().any(|e| e.token() == WAKE_TOKEN)
        }
        #[cfg(not(feature = "async-io"))]
        {
            let woke = *self.waker.inner.0.lock().unwrap();
            self.poll(Some(Duration::ZERO), |_| {}).unwrap();
            woke
        }
    }
}

/// Whether `fd` is ready for `interest` right now, without blocking.
#[cfg(feature = "async-io")]
fn level_ready(fd: RawFd, interest: Interest) -> bool {
    let events = match interest {
        Interest::Readable => libc::POLLIN,
        Interest::Writable => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskId;

    fn waiter(n: u64) -> Waiter {
        Waiter {
            slot: n as usize,
            task: TaskId(n),
            generation: 1,
        }
    }

    /// Starts a wait of task `n`: `"blocked"`, `"ready"` (answered at
    /// once) or the error.
    fn start(r: &mut Reactor, token: IoToken, interest: Interest, n: u64) -> String {
        describe(r.wait_for(token, interest, waiter(n), false))
    }

    /// [`start`] after the task's call on the source would have blocked.
    fn start_after_would_block(
        r: &mut Reactor,
        token: IoToken,
        interest: Interest,
        n: u64,
    ) -> String {
        describe(r.wait_for(token, interest, waiter(n), true))
    }

    fn describe(r: Result<WaitStart, crate::SyscallError>) -> String {
        match r {
            Ok(WaitStart::Blocked) => "blocked".into(),
            Ok(WaitStart::Ready) => "ready".into(),
            Err(e) => e.to_string(),
        }
    }

    /// Readiness for one interest wakes that interest's waiter only, and is
    /// kept for the other until a wait takes it.
    #[test]
    fn readiness_wakes_the_waiter_of_its_own_interest_only() {
        let mut r = Reactor::new().unwrap();
        let token = r.register_channel();
        let (reader, writer) = (waiter(1), waiter(2));
        assert_eq!(start(&mut r, token, Interest::Readable, 1), "blocked");
        assert_eq!(r.waiting(), 1);
        // Writable: the reader stays asleep; the readiness is kept.
        assert_eq!(r.set_ready(token, Interest::Writable), None);
        assert_eq!(r.waiting(), 1);
        assert_eq!(start(&mut r, token, Interest::Writable, 2), "ready");
        // Taken by that wait: the next writer blocks.
        assert_eq!(start(&mut r, token, Interest::Writable, 2), "blocked");
        assert_eq!(r.waiting(), 2);
        assert_eq!(r.set_ready(token, Interest::Readable), Some(reader));
        assert_eq!(r.set_ready(token, Interest::Writable), Some(writer));
        assert_eq!(r.waiting(), 0);
        // Nobody waits now: both are kept, each for its own interest.
        assert_eq!(r.set_ready(token, Interest::Readable), None);
        assert_eq!(start(&mut r, token, Interest::Readable, 1), "ready");
        assert_eq!(start(&mut r, token, Interest::Writable, 2), "blocked");
    }

    /// A second task waiting for the same interest of a source is refused;
    /// the first stays recorded.
    #[test]
    fn one_waiter_per_interest() {
        let mut r = Reactor::new().unwrap();
        let token = r.register_channel();
        assert_eq!(start(&mut r, token, Interest::Readable, 1), "blocked");
        assert_eq!(
            start(&mut r, token, Interest::Readable, 2),
            crate::SyscallError::IoBusy(token).to_string()
        );
        assert_eq!(r.set_ready(token, Interest::Readable), Some(waiter(1)));
    }

    /// A wake from another thread ends the reactor's sleep: the poller sees
    /// it, once.
    #[test]
    fn a_wake_reaches_the_poller() {
        let mut r = Reactor::new().unwrap();
        assert!(!r.take_wake());
        r.waker().wake();
        assert!(r.take_wake());
        assert!(!r.take_wake(), "one wake, seen once");
    }

    /// A poll without a timeout, or with a long one, sleeps until a wake
    /// from another thread: it does not return before the wake was sent.
    /// A poll that does not wait fails the assertion (it returns before the
    /// other thread's delayed wake); one that is never woken fails after
    /// 10 s.
    #[test]
    fn a_poll_sleeps_until_it_is_woken() {
        use crate::test_support::within;
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        for timeout in [None, Some(Duration::from_secs(30))] {
            let mut r = Reactor::new().unwrap();
            let waker = r.waker();
            let sent = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&sent);
            let t = std::thread::spawn(move || {
                // A head start for a poll that returns without waiting.
                std::thread::sleep(Duration::from_millis(50));
                flag.store(true, SeqCst);
                waker.wake();
            });
            // The poll on a thread of its own, so that a lost wake fails the
            // test after 10 s instead of hanging it.
            within(move || r.poll(timeout, |_| {}).unwrap());
            assert!(
                sent.load(SeqCst),
                "the poll ({timeout:?}) returned before the wake"
            );
            t.join().unwrap();
        }
    }

    /// A deregistered source hands back its waiters and stops counting
    /// them; a cancelled wait is forgotten, and readiness then waits for the
    /// next waiter.
    #[test]
    fn deregister_and_cancel_forget_their_waiters() {
        let mut r = Reactor::new().unwrap();
        let token = r.register_channel();
        assert_eq!(start(&mut r, token, Interest::Readable, 1), "blocked");
        assert_eq!(start(&mut r, token, Interest::Writable, 2), "blocked");
        r.cancel_wait(token, Interest::Writable, waiter(2));
        assert_eq!(r.waiting(), 1);
        assert_eq!(r.set_ready(token, Interest::Writable), None);
        assert_eq!(r.deregister(token), Some(vec![waiter(1)]));
        assert_eq!(r.waiting(), 0);
        assert!(!r.is_registered(token));
        assert_eq!(r.deregister(token), None);
    }

    /// A channel has no descriptor: nothing but `notify_io` makes it ready
    /// (a wait for writing does not answer at once).
    #[test]
    fn a_channel_is_ready_only_when_told() {
        let mut r = Reactor::new().unwrap();
        let token = r.register_channel();
        assert_eq!(start(&mut r, token, Interest::Writable, 1), "blocked");
        assert_eq!(start(&mut r, token, Interest::Readable, 2), "blocked");
        r.poll(Some(Duration::ZERO), |_| panic!("a channel woke a waiter"))
            .unwrap();
        assert_eq!(r.deregister(token).map(|w| w.len()), Some(2));
    }

    /// A call that would have blocked makes its own interest's recorded
    /// readiness stale (the wait blocks, and the readiness is dropped); the
    /// other interest's is kept.
    #[test]
    fn a_would_block_drops_only_its_own_stale_readiness() {
        let mut r = Reactor::new().unwrap();
        let token = r.register_channel();
        assert_eq!(r.set_ready(token, Interest::Readable), None);
        assert_eq!(r.set_ready(token, Interest::Writable), None);
        assert_eq!(
            start_after_would_block(&mut r, token, Interest::Readable, 1),
            "blocked"
        );
        r.cancel_wait(token, Interest::Readable, waiter(1));
        assert_eq!(r.waiting(), 0);
        assert_eq!(start(&mut r, token, Interest::Readable, 1), "blocked");
        assert_eq!(start(&mut r, token, Interest::Writable, 2), "ready");
    }

    /// A token outlives its source: once the slot holds a new source, the
    /// old token reaches nothing (no wait, readiness or cancel lands on the
    /// new source).
    #[test]
    fn a_stale_token_reaches_nothing() {
        let mut r = Reactor::new().unwrap();
        let old = r.register_channel();
        assert_eq!(r.deregister(old).map(|w| w.len()), Some(0));
        let new = r.register_channel();
        assert_eq!(new.slot(), old.slot(), "the slot is reused");
        assert!(r.is_registered(new) && !r.is_registered(old));
        assert_eq!(start(&mut r, new, Interest::Readable, 1), "blocked");
        r.cancel_wait(old, Interest::Readable, waiter(1));
        assert_eq!(r.waiting(), 1);
        assert_eq!(r.set_ready(old, Interest::Readable), None);
        assert_eq!(r.set_ready(old, Interest::Writable), None);
        assert_eq!(
            start(&mut r, old, Interest::Writable, 2),
            crate::SyscallError::UnknownIoToken(old).to_string()
        );
        assert!(r.deregister(old).is_none());
        // The new source saw none of it: its reader still waits, and no
        // writable readiness was recorded for it.
        assert_eq!(start(&mut r, new, Interest::Writable, 2), "blocked");
        assert_eq!(r.set_ready(new, Interest::Readable), Some(waiter(1)));
        assert_eq!(r.waiting(), 1);
    }

    /// Descriptor 0 is a descriptor like any other: only a negative one is
    /// refused as invalid input. (Under nextest stdin is `/dev/null`, which
    /// epoll refuses, so a socket is put on 0 for the test and stdin put
    /// back after.)
    #[test]
    fn descriptor_zero_can_be_registered() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: dup/dup2/close on descriptors this test owns; stdin is
        // restored before the test returns or asserts.
        let saved = unsafe { libc::dup(0) };
        assert!(saved >= 0);
        assert_eq!(unsafe { libc::dup2(a.as_raw_fd(), 0) }, 0);
        let mut r = Reactor::new().unwrap();
        let zero = r.register(0).map(|t| r.deregister(t).is_some());
        let negative = r.register(-1).map_err(|e| e.kind());
        unsafe {
            libc::dup2(saved, 0);
            libc::close(saved);
        }
        assert!(matches!(zero, Ok(true)), "descriptor 0 refused: {zero:?}");
        assert_eq!(negative.err(), Some(io::ErrorKind::InvalidInput));
    }

    #[cfg(feature = "async-io")]
    mod poller {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;

        use super::*;

        fn polled(r: &mut Reactor) -> Vec<Waiter> {
            let mut woken = Vec::new();
            r.poll(Some(Duration::ZERO), |w| woken.push(w)).unwrap();
            woken
        }

        /// Readiness the poller reports wakes the waiter of each interest:
        /// data to read, room to write (a socket with data has both), and a
        /// closed writer (end of stream).
        #[test]
        fn the_poller_wakes_readers_and_writers() {
            let mut r = Reactor::new().unwrap();
            let (a, mut b) = UnixStream::pair().unwrap();
            let token = r.register(a.as_raw_fd()).unwrap();
            // After a would-block: no level check, the poller must say it.
            assert_eq!(
                start_after_would_block(&mut r, token, Interest::Readable, 1),
                "blocked"
            );
            assert_eq!(
                start_after_would_block(&mut r, token, Interest::Writable, 2),
                "blocked"
            );
            b.write_all(b"x").unwrap();
            let mut woken = polled(&mut r);
            woken.sort_by_key(|w| w.slot);
            assert_eq!(woken, vec![waiter(1), waiter(2)]);
            assert_eq!(r.waiting(), 0);

            let (pipe_r, pipe_w) = std::io::pipe().unwrap();
            let token = r.register(pipe_r.as_raw_fd()).unwrap();
            assert_eq!(
                start_after_would_block(&mut r, token, Interest::Readable, 3),
                "blocked"
            );
            assert_eq!(polled(&mut r), vec![]);
            drop(pipe_w);
            assert_eq!(polled(&mut r), vec![waiter(3)]);

            // A writer whose reader is gone is woken (its write then fails).
            for closed in 0..2 {
                let (w, peer): (Box<dyn AsRawFd>, Box<dyn std::any::Any>) = if closed == 0 {
                    let (pipe_r, pipe_w) = std::io::pipe().unwrap();
                    (Box::new(pipe_w), Box::new(pipe_r))
                } else {
                    let (a, b) = UnixStream::pair().unwrap();
                    (Box::new(a), Box::new(b))
                };
                let token = r.register(w.as_raw_fd()).unwrap();
                polled(&mut r);
                assert_eq!(
                    start_after_would_block(&mut r, token, Interest::Writable, 4),
                    "blocked"
                );
                drop(peer);
                assert_eq!(polled(&mut r), vec![waiter(4)], "case {closed}");
            }
        }

        /// A descriptor can be registered again once deregistered (the
        /// poller forgot it), and one without close-on-exec is accepted.
        #[test]
        fn registration_follows_the_descriptor() {
            let mut r = Reactor::new().unwrap();
            let (a, _b) = UnixStream::pair().unwrap();
            let fd = a.as_raw_fd();
            let token = r.register(fd).unwrap();
            assert!(r.deregister(token).is_some());
            let again = r.register(fd).unwrap();
            assert!(r.is_registered(again) && !r.is_registered(token));
            // SAFETY: clears FD_CLOEXEC on a descriptor this test owns.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
            assert!(r.deregister(again).is_some());
            r.register(fd).unwrap();
        }
    }
}
