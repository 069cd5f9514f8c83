//! Virtual time: sleeps jump the clock instead of waiting, exactly and
//! repeatably. No test here looks at the wall clock.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn sleep_50ms_moves_virtual_time_exactly() {
    let s = vsched();
    assert_eq!(s.clock(), Clock::Virtual);
    assert_eq!(s.now(), Duration::ZERO);
    let log = logged(&s);
    let t = s
        .spawn(|cx| {
            let before = cx.now();
            cx.sleep(ms(50));
            (before, cx.now())
        })
        .unwrap();
    s.run();
    assert_eq!(s.now(), ms(50));
    assert_eq!(
        value_of::<(Duration, Duration)>(&s, t),
        (Duration::ZERO, ms(50))
    );
    let sleep = log
        .events()
        .into_iter()
        .find(|e| e.kind.name() == "sleep")
        .unwrap();
    assert_eq!(sleep.kind, EventKind::Sleep { until: ms(50) });
    assert_eq!(sleep.time, Duration::ZERO);
    // The sleeper was blocked for exactly 50 virtual ms.
    assert_eq!(s.metrics().wait_time.count, 1);
    assert_eq!(s.metrics().wait_time.sum, 0.05);
}

#[test]
fn many_hour_sleeps_complete_in_deadline_order() {
    let s = vsched();
    let trace = Trace::new();
    let mut ids = Vec::new();
    for hours in [100u64, 5, 1, 24] {
        let t = trace.clone();
        ids.push(
            s.spawn(move |cx| {
                cx.sleep(HOUR * hours as u32);
                t.push((hours, cx.now()));
            })
            .unwrap(),
        );
    }
    let order = s.run();
    assert_eq!(order, vec![ids[2], ids[1], ids[3], ids[0]]);
    assert_eq!(
        trace.get(),
        vec![(1, HOUR), (5, HOUR * 5), (24, HOUR * 24), (100, HOUR * 100)]
    );
    assert_eq!(s.now(), HOUR * 100);
}

#[test]
fn consecutive_sleeps_accumulate() {
    let s = vsched();
    let t = s
        .spawn(|cx| {
            let mut seen = Vec::new();
            for d in [ms(1), HOUR, ms(250), Duration::from_secs(86_400 * 365)] {
                cx.sleep(d);
                seen.push(cx.now());
            }
            seen
        })
        .unwrap();
    s.run();
    let year = Duration::from_secs(86_400 * 365);
    assert_eq!(
        value_of::<Vec<Duration>>(&s, t),
        vec![ms(1), ms(1) + HOUR, ms(251) + HOUR, ms(251) + HOUR + year]
    );
    assert_eq!(s.now(), ms(251) + HOUR + year);
}

#[test]
fn sleep_until_absolute_and_past_deadlines() {
    let s = vsched();
    let t = s
        .spawn(|cx| {
            cx.sleep_until(ms(70));
            let a = cx.now();
            // A deadline in the past only yields.
            cx.sleep_until(ms(10));
            (a, cx.now())
        })
        .unwrap();
    s.run();
    assert_eq!(value_of::<(Duration, Duration)>(&s, t), (ms(70), ms(70)));
}

#[test]
fn equal_deadlines_wake_in_the_order_the_sleeps_began() {
    let s = vsched();
    let trace = Trace::new();
    for name in ["first", "second", "third"] {
        let t = trace.clone();
        s.spawn(move |cx| {
            cx.sleep(ms(30));
            t.push(name);
        })
        .unwrap();
    }
    s.run();
    assert_eq!(trace.get(), vec!["first", "second", "third"]);
    assert_eq!(s.now(), ms(30));
}

#[test]
fn time_stands_still_while_tasks_run() {
    let s = vsched();
    let t = s
        .spawn(|cx| {
            let start = cx.now();
            let mut x = 0u64;
            for i in 0..10_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            cx.yield_now();
            (start, cx.now(), x)
        })
        .unwrap();
    s.run();
    let (start, end, _) = value_of::<(Duration, Duration, u64)>(&s, t);
    assert_eq!(start, Duration::ZERO);
    assert_eq!(end, Duration::ZERO);
    assert_eq!(s.now(), Duration::ZERO);
}

#[test]
fn stale_join_timeout_does_not_advance_virtual_time() {
    // The reader joins with a one-hour timeout; the join succeeds at 10 ms and
    // the timeout is moot. Then it waits for I/O from another thread. Nothing
    // is due on the virtual clock, so time must stay at 10 ms.
    let (idle_tx, idle_rx) = mpsc::channel::<()>();
    let s = Scheduler::builder()
        .virtual_clock()
        .blocking_wrapper(Box::new(move |wait: &mut dyn FnMut()| {
            let _ = idle_tx.send(());
            wait();
        }))
        .build()
        .unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let token = s.register_io(&a).unwrap();
    let target = s.spawn(|cx| cx.sleep(ms(10))).unwrap();
    let reader = s
        .spawn(move |cx| {
            assert!(cx.join_timeout(target, HOUR).is_success());
            let joined_at = cx.now();
            assert_eq!(cx.io_wait(token, Interest::Readable), Ok(IoReady::Ready));
            let mut byte = [0u8; 1];
            (&a).read_exact(&mut byte).unwrap();
            (joined_at, cx.now())
        })
        .unwrap();
    let handle = s.handle();
    let writer = std::thread::spawn(move || {
        // The first blocking wait happens once the reader waits for I/O.
        await_signal(&idle_rx, &handle, "the scheduler never went idle");
        b.write_all(b"x").unwrap();
        #[cfg(not(feature = "async-io"))]
        handle.notify_io(token, Interest::Readable).unwrap();
        drop(handle);
    });
    s.run();
    writer.join().unwrap();
    assert_eq!(
        value_of::<(Duration, Duration)>(&s, reader),
        (ms(10), ms(10))
    );
    assert_eq!(s.now(), ms(10));
}

#[test]
fn a_clock_reader_on_another_thread_sees_the_virtual_jumps() {
    let s = vsched();
    let reader = s.clock_reader();
    let on_thread = {
        let r = reader.clone();
        std::thread::spawn(move || r.now()).join().unwrap()
    };
    assert_eq!(on_thread, Duration::ZERO);
    s.spawn(|cx| cx.sleep(HOUR)).unwrap();
    s.run();
    assert_eq!(s.now(), HOUR);
    let r = reader.clone();
    assert_eq!(std::thread::spawn(move || r.now()).join().unwrap(), HOUR);
}

#[test]
fn a_clock_reader_of_the_real_clock_reads_the_schedulers_time() {
    let s = Scheduler::builder().build().expect("a poller");
    let before = s.now();
    let r = s.clock_reader();
    let read = std::thread::spawn(move || r.now()).join().unwrap();
    let after = s.now();
    assert!(
        before <= read && read <= after,
        "{before:?} {read:?} {after:?}"
    );
}
