//! I/O readiness on real descriptors: a pipe and a socket pair.
//!
//! With `async-io` the reactor sees the writes itself (epoll). Without it,
//! readiness comes from the in-memory channel, so the writer reports it with
//! `Handle::notify_io` after writing. Writer threads never sleep: they wait
//! for the reader's `io_wait` event, delivered through an event subscriber.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;

use crate::common::*;
use tiffany_scheduler::*;

/// Waits for the reader's next `io_wait`; on a hang, stops the scheduler and fails.
fn wait_for_reader(rx: &mpsc::Receiver<()>, handle: &Handle) {
    await_signal(rx, handle, "the reader never waited for I/O");
}

#[test]
fn pipe_reader_is_woken_by_a_write() {
    within(std::time::Duration::from_secs(10), || {
        let s = vsched();
        let log = logged(&s);
        let (tx, rx) = mpsc::channel();
        s.subscribe(on_io_wait(tx));
        let (mut pipe_r, mut pipe_w) = std::io::pipe().unwrap();
        let token = s.register_io(&pipe_r).unwrap();
        let reader = s
            .spawn(move |cx| {
                let ready = cx.io_wait(token, Interest::Readable).unwrap();
                let mut buf = [0u8; 5];
                pipe_r.read_exact(&mut buf).unwrap();
                (ready, buf)
            })
            .unwrap();
        let handle = s.handle();
        let writer = std::thread::spawn(move || {
            wait_for_reader(&rx, &handle);
            pipe_w.write_all(b"hello").unwrap();
            #[cfg(not(feature = "async-io"))]
            handle.notify_io(token, Interest::Readable).unwrap();
        });
        let order = s.run();
        writer.join().unwrap();

        assert_eq!(order, vec![reader]);
        assert_eq!(
            value_of::<(IoReady, [u8; 5])>(&s, reader),
            (IoReady::Ready, *b"hello")
        );
        let events = log.events();
        assert_eq!(
            task_kinds(&events, reader),
            vec!["spawned", "running", "io_wait", "running", "done"]
        );
        let wait = events
            .iter()
            .find(|e| matches!(e.kind, EventKind::IoWait { .. }))
            .unwrap();
        assert_eq!(
            wait.kind,
            EventKind::IoWait {
                token,
                interest: Interest::Readable
            }
        );
        assert_eq!(s.metrics().wait_time.count, 1);
    });
}

#[test]
fn socket_echo_with_writer_thread_wakes_once_per_message_in_order() {
    within(std::time::Duration::from_secs(10), || {
        const N: usize = 6;
        let s = vsched();
        let log = logged(&s);
        let (tx, rx) = mpsc::channel();
        s.subscribe(on_io_wait(tx));
        let (sock_r, mut sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let reader = s
            .spawn(move |cx| {
                let mut got = Vec::new();
                for _ in 0..N {
                    assert_eq!(cx.io_wait(token, Interest::Readable), Ok(IoReady::Ready));
                    let mut msg = [0u8; 8];
                    (&sock_r).read_exact(&mut msg).unwrap();
                    got.push(String::from_utf8(msg.to_vec()).unwrap());
                }
                got
            })
            .unwrap();
        let handle = s.handle();
        let writer = std::thread::spawn(move || {
            for i in 0..N {
                wait_for_reader(&rx, &handle);
                sock_w.write_all(format!("msg-{i:04}").as_bytes()).unwrap();
                #[cfg(not(feature = "async-io"))]
                handle.notify_io(token, Interest::Readable).unwrap();
            }
        });
        s.run();
        writer.join().unwrap();

        let expected: Vec<String> = (0..N).map(|i| format!("msg-{i:04}")).collect();
        assert_eq!(value_of::<Vec<String>>(&s, reader), expected);
        let events = log.events();
        // One resume to start, then exactly one wake per message.
        assert_eq!(count_kind(&events, reader, "running"), N + 1);
        assert_eq!(count_kind(&events, reader, "io_wait"), N);
        assert_eq!(s.metrics().wait_time.count, N as u64);
    });
}

#[test]
fn readiness_reported_before_the_wait_answers_at_once() {
    // Bounded: readiness that never reaches the reactor leaves the task
    // waiting on a socket whose writer is alive, which is no deadlock.
    within(std::time::Duration::from_secs(10), || {
        let s = vsched();
        let log = logged(&s);
        let (sock_r, _sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        assert!(s.notify_io(token, Interest::Readable));
        let t = s
            .spawn(move |cx| cx.io_wait(token, Interest::Readable))
            .unwrap();
        s.run();
        assert_eq!(
            value_of::<Result<IoReady, SyscallError>>(&s, t),
            Ok(IoReady::Ready)
        );
        // Answered without blocking.
        assert_eq!(count_kind(&log.events(), t, "io_wait"), 0);
        assert_eq!(count_kind(&log.events(), t, "running"), 1);
    });
}

#[cfg(feature = "async-io")]
#[test]
fn data_already_buffered_answers_at_once_level_semantics() {
    within(std::time::Duration::from_secs(10), || {
        let s = vsched();
        let log = logged(&s);
        let (sock_r, mut sock_w) = UnixStream::pair().unwrap();
        sock_w.write_all(b"early").unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let t = s
            .spawn(move |cx| {
                let r = cx.io_wait(token, Interest::Readable);
                let mut buf = [0u8; 5];
                (&sock_r).read_exact(&mut buf).unwrap();
                (r, buf)
            })
            .unwrap();
        s.run();
        assert_eq!(
            value_of::<(Result<IoReady, SyscallError>, [u8; 5])>(&s, t),
            (Ok(IoReady::Ready), *b"early")
        );
        assert_eq!(count_kind(&log.events(), t, "io_wait"), 0);
    });
}

#[test]
fn writer_task_wakes_reader_task() {
    within(std::time::Duration::from_secs(10), || {
        // Both ends driven by tasks on the virtual clock: deterministic.
        let s = vsched();
        let (sock_r, sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let reader = s
            .spawn(move |cx| {
                cx.io_wait(token, Interest::Readable).unwrap();
                let mut buf = [0u8; 4];
                (&sock_r).read_exact(&mut buf).unwrap();
                (cx.now(), buf)
            })
            .unwrap();
        spawn_writer(&s, token, ms(40), sock_w, b"ping");
        s.run();
        assert_eq!(
            value_of::<(std::time::Duration, [u8; 4])>(&s, reader),
            (ms(40), *b"ping")
        );
    });
}

#[test]
fn invalid_waits_are_answered_with_errors() {
    within(std::time::Duration::from_secs(10), || {
        let s = vsched();
        let (sock_r, _sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let first = s
            .spawn(move |cx| cx.io_wait_timeout(token, Interest::Readable, ms(100)))
            .unwrap();
        let second = s
            .spawn(move |cx| cx.io_wait(token, Interest::Readable))
            .unwrap();
        // A token that was never registered: deregister it and wait on it.
        let (other, _o) = UnixStream::pair().unwrap();
        let stale = s.register_io(&other).unwrap();
        assert!(s.deregister_io(stale));
        assert!(!s.deregister_io(stale));
        assert!(!s.notify_io(stale, Interest::Readable));
        let third = s
            .spawn(move |cx| cx.io_wait(stale, Interest::Readable))
            .unwrap();
        s.run();
        assert_eq!(
            value_of::<Result<IoReady, SyscallError>>(&s, first),
            Ok(IoReady::Timeout)
        );
        assert_eq!(
            value_of::<Result<IoReady, SyscallError>>(&s, second),
            Err(SyscallError::IoBusy(token))
        );
        assert_eq!(
            value_of::<Result<IoReady, SyscallError>>(&s, third),
            Err(SyscallError::UnknownIoToken(stale))
        );
    });
}

#[test]
fn deregister_wakes_the_waiter_with_an_error() {
    // Bounded: a deregister that does not reach the waiter leaves it
    // waiting on a socket whose writer is alive, which is no deadlock.
    within(std::time::Duration::from_secs(10), || {
        let s = vsched();
        let (sock_r, _sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        // A subscriber deregisters the source once the reader blocks on it
        // (twice: the second finds nothing); it drops its scheduler clone
        // afterwards so nothing stays alive in a cycle. (A panicking
        // subscriber is only counted, so the answers are checked after.)
        let answers = Trace::new();
        let answers_w = answers.clone();
        let mut sched = Some(s.clone());
        s.subscribe(move |e: &TaskEvent| {
            if matches!(e.kind, EventKind::IoWait { .. })
                && let Some(sc) = sched.take()
            {
                answers_w.push(sc.deregister_io(token));
                answers_w.push(sc.deregister_io(token));
            }
        });
        let t = s
            .spawn(move |cx| cx.io_wait(token, Interest::Readable))
            .unwrap();
        s.run();
        assert_eq!(answers.get(), [true, false]);
        assert_eq!(
            value_of::<Result<IoReady, SyscallError>>(&s, t),
            Err(SyscallError::UnknownIoToken(token))
        );
    });
}

#[test]
fn registering_a_closed_descriptor_fails() {
    struct Fd(i32);
    impl IoSource for Fd {
        fn raw_fd(&self) -> i32 {
            self.0
        }
    }
    let s = vsched();
    // A negative descriptor is refused as bad input, before the kernel is asked.
    let negative = s.register_io(&Fd(-1)).unwrap_err();
    assert_eq!(negative.kind(), std::io::ErrorKind::InvalidInput);
    assert!(negative.to_string().contains("negative"), "{negative}");
    // A descriptor number far above anything open: the kernel's EBADF.
    let closed = s.register_io(&Fd(1_000_000)).unwrap_err();
    assert_eq!(closed.raw_os_error(), Some(libc::EBADF));
}

/// A source's log id is its descriptor's number unless it says otherwise.
#[test]
fn a_sources_default_id_is_its_descriptor() {
    struct Fd(i32);
    impl IoSource for Fd {
        fn raw_fd(&self) -> i32 {
            self.0
        }
    }
    assert_eq!(Fd(7).id(), 7);
    assert_eq!(Fd(12_345).id(), 12_345);
    let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
    assert_eq!(IoSource::id(&pipe_r), pipe_r.as_raw_fd() as u64);
}

#[test]
fn wait_after_would_block_forgets_stale_readiness_and_is_woken_by_new_data() {
    within(std::time::Duration::from_secs(10), || {
        // Readiness recorded while nobody waits, then consumed by a direct read:
        // a wait that says "my read just failed with EWOULDBLOCK" must block
        // until new data, not be answered at once by the stale record.
        let s = vsched();
        let log = logged(&s);
        let (sock_r, sock_w) = UnixStream::pair().unwrap();
        sock_r.set_nonblocking(true).unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let handle = s.handle();
        let writer_handle = s.handle();
        let mut sock_w2 = sock_w.try_clone().unwrap();
        let reader = s
            .spawn(move |cx| {
                (&sock_w).write_all(b"old").unwrap();
                #[cfg(not(feature = "async-io"))]
                handle.notify_io(token, Interest::Readable).unwrap();
                drop(handle);
                // Idle for a while: the scheduler polls and records the readiness.
                cx.sleep(ms(1));
                let mut buf = [0u8; 16];
                let n = (&sock_r).read(&mut buf).unwrap();
                assert_eq!(&buf[..n], b"old");
                let err = (&sock_r).read(&mut buf).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
                let r = cx.syscall(SystemCall::IoWait {
                    token,
                    interest: Interest::Readable,
                    timeout: None,
                    after_would_block: true,
                });
                assert!(matches!(r, Resume::Io(IoReady::Ready)), "{r:?}");
                let woke_at = cx.now();
                let n = (&sock_r).read(&mut buf).unwrap();
                (woke_at, buf[..n].to_vec())
            })
            .unwrap();
        s.spawn(move |cx| {
            cx.sleep(ms(50));
            sock_w2.write_all(b"new").unwrap();
            #[cfg(not(feature = "async-io"))]
            writer_handle.notify_io(token, Interest::Readable).unwrap();
            drop(writer_handle);
        })
        .unwrap();
        s.run();
        assert_eq!(
            value_of::<(std::time::Duration, Vec<u8>)>(&s, reader),
            (ms(50), b"new".to_vec())
        );
        assert_eq!(count_kind(&log.events(), reader, "io_wait"), 1);
    });
}

/// I/O readiness is seen while tasks keep running: with the maintenance
/// pass turned off, only the time-based poll (`io_poll_interval`) can wake
/// the reader before the busy tasks end. (Before, a busy loop polled I/O
/// only every 61 passes; with a writer thread that is still prompt, but the
/// poll was tied to the pass count, not to time.)
#[cfg(feature = "async-io")]
#[test]
fn io_is_polled_while_busy_tasks_keep_running() {
    within(std::time::Duration::from_secs(10), || {
        let s = Scheduler::builder()
            .maintenance_interval(u32::MAX)
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        s.subscribe(on_io_wait(tx));
        let (mut pipe_r, mut pipe_w) = std::io::pipe().unwrap();
        let token = s.register_io(&pipe_r).unwrap();
        let woke = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = woke.clone();
        s.spawn_with(SpawnOptions::priority(1), move |cx| {
            cx.io_wait(token, Interest::Readable).unwrap();
            let mut buf = [0u8; 2];
            pipe_r.read_exact(&mut buf).unwrap();
            w.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .unwrap();
        let busy_saw_it = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w, saw) = (woke.clone(), busy_saw_it.clone());
        s.spawn_with(SpawnOptions::priority(200), move |cx| {
            // Bounded: a broken kernel ends the test, it does not hang it.
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_secs(5) {
                if w.load(std::sync::atomic::Ordering::SeqCst) {
                    saw.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                cx.yield_now();
            }
        })
        .unwrap();
        let handle = s.handle();
        let writer = std::thread::spawn(move || {
            wait_for_reader(&rx, &handle);
            pipe_w.write_all(b"hi").unwrap();
        });
        s.run();
        writer.join().unwrap();
        assert!(is_set(&woke));
        assert!(
            is_set(&busy_saw_it),
            "the reader woke only after the busy task ended"
        );
    });
}

/// `Handle::defer` runs a closure on the scheduler's thread; once the
/// scheduler is gone it gives the closure back instead of dropping it.
#[test]
fn defer_runs_on_the_schedulers_thread_and_gives_back_when_closed() {
    within(std::time::Duration::from_secs(10), || {
        let s = vsched();
        let handle = s.internal_handle();
        let (tx, rx) = mpsc::channel();
        let h = handle.clone();
        std::thread::spawn(move || {
            h.defer(Box::new(move || {
                tx.send(std::thread::current().id()).unwrap()
            }))
            .map_err(|_| "closed")
            .unwrap();
        })
        .join()
        .unwrap();
        s.spawn(|cx| cx.yield_now()).unwrap();
        s.run();
        assert_eq!(rx.try_recv().unwrap(), std::thread::current().id());
        drop(s);
        let given_back = handle.defer(Box::new(|| panic!("must not run")));
        assert!(given_back.is_err());
        std::mem::forget(given_back);
    });
}
