//! Every command a [`Handle`] sends is carried out, checked without another
//! thread: a task sends it through an internal handle (one that does not
//! count as an outside waker). A lost command then shows as a failed
//! assertion, not a hang: under the virtual clock a run whose tasks all wait
//! for something that never comes ends as a deadlock, and an I/O wait is
//! given a (virtual) timeout.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

type IoAnswer = Result<IoReady, SyscallError>;

#[test]
fn set_event_wakes_the_waiter() {
    let s = vsched();
    let h = s.internal_handle();
    let ev = s.new_event();
    let waiter = s.spawn(move |cx| cx.event_wait(ev).is_ok()).unwrap();
    s.spawn(move |_| h.set_event(ev).unwrap()).unwrap();
    s.run_until_idle();
    assert!(s.take_deadlock().is_none(), "the set was lost");
    assert_eq!(s.state(waiter), Some(TaskState::Finished));
    assert!(value_of::<bool>(&s, waiter));
}

#[test]
fn cancel_cancels_the_task() {
    let s = vsched();
    let h = s.internal_handle();
    let ev = s.new_event();
    let victim = s.spawn(move |cx| cx.event_wait(ev)).unwrap();
    s.spawn(move |_| h.cancel(victim).unwrap()).unwrap();
    s.run_until_idle();
    assert!(s.take_deadlock().is_none(), "the cancel was lost");
    assert_eq!(s.state(victim), Some(TaskState::Cancelled));
}

#[test]
fn abort_abandons_every_task_and_ends_the_shutdown_as_a_timeout() {
    let s = vsched();
    let h = s.internal_handle();
    let ev = s.new_event();
    let (dropped, guard) = drop_flag();
    let victim = s
        .spawn(move |cx| {
            let _guard = guard;
            cx.event_wait(ev)
        })
        .unwrap();
    s.spawn(move |_| h.abort().unwrap()).unwrap();
    s.run_until_idle();
    assert!(s.take_deadlock().is_none(), "the abort was lost");
    assert_eq!(s.state(victim), Some(TaskState::Cancelled));
    assert!(is_set(&dropped));
    assert_eq!(s.live_tasks(), 0);
    // A later shutdown reports the one the abort ended.
    assert_eq!(s.shutdown(Duration::from_secs(1)), ShutdownResult::Timeout);
}

#[test]
fn notify_io_wakes_the_io_waiter_before_its_timeout() {
    let s = vsched();
    let h = s.internal_handle();
    let token = s.register_channel();
    let second = Duration::from_secs(1);
    let waiter = s
        .spawn(move |cx| {
            let r = cx.io_wait_timeout(token, Interest::Readable, second);
            (r, cx.now())
        })
        .unwrap();
    s.spawn(move |_| h.notify_io(token, Interest::Readable).unwrap())
        .unwrap();
    s.run_until_idle();
    assert_eq!(
        value_of::<(IoAnswer, Duration)>(&s, waiter),
        (Ok(IoReady::Ready), Duration::ZERO)
    );
}

#[test]
fn request_shutdown_from_a_task_shuts_down() {
    let s = vsched();
    let h = s.internal_handle();
    let ev = s.new_event();
    let victim = s.spawn(move |cx| cx.event_wait(ev)).unwrap();
    s.spawn(move |_| h.request_shutdown(Duration::from_secs(5)).unwrap())
        .unwrap();
    s.run_until_idle();
    assert!(s.take_deadlock().is_none(), "the shutdown request was lost");
    assert!(s.is_shutting_down());
    assert_eq!(s.state(victim), Some(TaskState::Cancelled));
}

/// A deferred closure or a `with_scheduler` closure that panics is counted
/// as a callback error; one that returns is not.
#[test]
fn panicking_deferred_closures_are_counted_and_the_others_are_not() {
    let s = vsched();
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handle = s.handle();
    for panics in [false, false, true] {
        let r = ran.clone();
        assert!(
            handle
                .defer(Box::new(move || {
                    r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert!(!panics, "a deferred closure broke");
                }))
                .is_ok()
        );
        let r = ran.clone();
        handle
            .with_scheduler(move |_s: &Scheduler| {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert!(!panics, "a with_scheduler closure broke");
            })
            .unwrap();
    }
    drop(handle);
    s.spawn(|_cx| ()).unwrap();
    s.run();
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(s.metrics().callback_errors, 2);
}

/// A command that arrives while the loop looks whether it is done (here:
/// sent by the pressure listener, after the last task ended) is carried out
/// before the run returns.
#[test]
fn a_command_sent_as_the_last_task_ends_is_carried_out_before_the_run_returns() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = vsched();
    let done = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicBool::new(false));
    let (d, r) = (done.clone(), ran.clone());
    let mut handle = Some(s.handle());
    s.set_backpressure_listener(move || {
        if d.load(Ordering::SeqCst)
            && let Some(h) = handle.take()
        {
            let r = r.clone();
            assert!(
                h.defer(Box::new(move || r.store(true, Ordering::SeqCst)))
                    .is_ok()
            );
        }
        0.0
    });
    let d = done.clone();
    s.spawn(move |_cx| d.store(true, Ordering::SeqCst)).unwrap();
    s.run();
    assert!(done.load(Ordering::SeqCst));
    assert!(
        ran.load(Ordering::SeqCst),
        "the deferred closure did not run"
    );
}
