//! I/O waits with a timeout on the virtual clock.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

/// Every run here is bounded: an I/O wait whose timeout never fires fails
/// the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

type IoAnswer = Result<IoReady, SyscallError>;

#[test]
fn never_ready_source_times_out_at_the_virtual_deadline() {
    within(BOUND, || {
        let s = vsched();
        let log = logged(&s);
        let (sock_r, _sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let t = s
            .spawn(move |cx| {
                let r = cx.io_wait_timeout(token, Interest::Readable, ms(250));
                (r, cx.now())
            })
            .unwrap();
        s.run();
        assert_eq!(
            value_of::<(IoAnswer, Duration)>(&s, t),
            (Ok(IoReady::Timeout), ms(250))
        );
        assert_eq!(s.now(), ms(250));
        assert_eq!(
            task_kinds(&log.events(), t),
            vec!["spawned", "running", "io_wait", "running", "done"]
        );
    });
}

#[test]
fn long_io_timeouts_do_not_wait_on_the_wall_clock() {
    within(BOUND, || {
        let s = vsched();
        let (sock_r, _sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let day = Duration::from_secs(86_400);
        let t = s
            .spawn(move |cx| {
                let r = cx.io_wait_timeout(token, Interest::Readable, day);
                (r, cx.now())
            })
            .unwrap();
        s.run();
        assert_eq!(
            value_of::<(IoAnswer, Duration)>(&s, t),
            (Ok(IoReady::Timeout), day)
        );
    });
}

#[test]
fn after_a_timeout_the_source_is_free_for_the_next_waiter() {
    within(BOUND, || {
        let s = vsched();
        let (sock_r, _sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let first = s
            .spawn(move |cx| {
                let a = cx.io_wait_timeout(token, Interest::Readable, ms(10));
                // The same task waits again.
                let b = cx.io_wait_timeout(token, Interest::Readable, ms(10));
                (a, b, cx.now())
            })
            .unwrap();
        let second = s
            .spawn(move |cx| {
                cx.sleep(ms(25));
                let r = cx.io_wait_timeout(token, Interest::Readable, ms(5));
                (r, cx.now())
            })
            .unwrap();
        s.run();
        assert_eq!(
            value_of::<(IoAnswer, IoAnswer, Duration)>(&s, first),
            (Ok(IoReady::Timeout), Ok(IoReady::Timeout), ms(20))
        );
        assert_eq!(
            value_of::<(IoAnswer, Duration)>(&s, second),
            (Ok(IoReady::Timeout), ms(30))
        );
    });
}

#[test]
fn ready_before_the_deadline_answers_ready_then() {
    within(BOUND, || {
        let s = vsched();
        let (sock_r, sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let reader = s
            .spawn(move |cx| {
                let r = cx.io_wait_timeout(token, Interest::Readable, ms(100));
                let mut b = [0u8; 1];
                (&sock_r).read_exact(&mut b).unwrap();
                (r, cx.now())
            })
            .unwrap();
        spawn_writer(&s, token, ms(10), sock_w, b"!");
        s.run();
        assert_eq!(
            value_of::<(IoAnswer, Duration)>(&s, reader),
            (Ok(IoReady::Ready), ms(10))
        );
    });
}

#[test]
fn zero_timeout_polls_without_blocking() {
    within(BOUND, || {
        let s = vsched();
        let log = logged(&s);
        let (sock_r, _sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let t = s
            .spawn(move |cx| cx.io_wait_timeout(token, Interest::Readable, Duration::ZERO))
            .unwrap();
        s.run();
        assert_eq!(value_of::<IoAnswer>(&s, t), Ok(IoReady::Timeout));
        assert_eq!(count_kind(&log.events(), t, "io_wait"), 0);
        assert_eq!(s.now(), Duration::ZERO);
    });
}

#[test]
fn cancelling_an_io_waiter_frees_the_source() {
    within(BOUND, || {
        let s = vsched();
        let (sock_r, _sock_w) = UnixStream::pair().unwrap();
        let token = s.register_io(&sock_r).unwrap();
        let waiter = s
            .spawn(move |cx| cx.io_wait(token, Interest::Readable))
            .unwrap();
        let canceller = s
            .spawn(move |cx| {
                cx.sleep(ms(5));
                let live = cx.cancel(waiter);
                let after = cx.io_wait_timeout(token, Interest::Readable, ms(5));
                (live, after)
            })
            .unwrap();
        s.run();
        assert_eq!(s.state(waiter), Some(TaskState::Cancelled));
        assert_eq!(
            value_of::<(bool, IoAnswer)>(&s, canceller),
            (true, Ok(IoReady::Timeout))
        );
        assert_eq!(s.now(), ms(10));
    });
}
