//! The thread-safe handle: other threads spawn into a running scheduler and
//! wake it when it is idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

/// A scheduler that reports each time it is about to block in its poller.
fn signalling_idle(clock: Clock) -> (Scheduler, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let s = Scheduler::builder()
        .clock(clock)
        .blocking_wrapper(Box::new(move |wait: &mut dyn FnMut()| {
            let _ = tx.send(());
            wait();
        }))
        .build()
        .unwrap();
    (s, rx)
}

fn spawn_wakes_an_idle_scheduler(clock: Clock) {
    let (s, idle) = signalling_idle(clock);
    let log = logged(&s);
    let handle = s.handle();
    let (ran_tx, ran_rx) = mpsc::channel();
    let other = std::thread::spawn(move || {
        let fail = |what: &str| -> ! {
            let _ = handle.request_shutdown(Duration::ZERO);
            panic!("{what}");
        };
        // Only once the scheduler is idle, with nothing to do.
        await_signal(&idle, &handle, "the scheduler never went idle");
        let id = handle
            .spawn(move |cx| {
                ran_tx.send(cx.tid()).unwrap();
                42u32
            })
            .unwrap();
        match ran_rx.recv_timeout(WATCHDOG) {
            Ok(ran) => assert_eq!(ran, id),
            Err(_) => fail("the spawned task never ran"),
        }
        let result = handle.shutdown(Duration::from_secs(1)).unwrap();
        (id, result)
    });
    let served = s.serve();
    let (id, result) = other.join().unwrap();

    assert_eq!(served, ShutdownResult::Clean);
    assert_eq!(result, ShutdownResult::Clean);
    assert_eq!(value_of::<u32>(&s, id), 42);
    assert_eq!(
        task_kinds(&log.events(), id),
        vec!["spawned", "running", "done"]
    );
}

#[test]
fn handle_spawn_wakes_an_idle_scheduler_virtual_clock() {
    spawn_wakes_an_idle_scheduler(Clock::Virtual);
}

#[test]
fn handle_spawn_wakes_an_idle_scheduler_real_clock() {
    spawn_wakes_an_idle_scheduler(Clock::Real);
}

#[test]
fn spawns_from_many_threads_all_run_before_the_shutdown_completes() {
    within(WATCHDOG, || {
        const THREADS: usize = 4;
        const EACH: usize = 25;
        let s = vsched();
        let count = Arc::new(AtomicUsize::new(0));
        let handle = s.handle();
        let c = count.clone();
        let coordinator = std::thread::spawn(move || {
            let spawners: Vec<_> = (0..THREADS)
                .map(|_| {
                    let h = handle.clone();
                    let c = c.clone();
                    std::thread::spawn(move || {
                        (0..EACH)
                            .map(|_| {
                                let c = c.clone();
                                h.spawn(move |cx| {
                                    cx.yield_now();
                                    c.fetch_add(1, Ordering::SeqCst);
                                })
                                .unwrap()
                            })
                            .collect::<Vec<TaskId>>()
                    })
                })
                .collect();
            let mut ids: Vec<TaskId> = spawners
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            // Accepted spawns are never lost, even if the shutdown comes first.
            let result = handle.shutdown(Duration::from_secs(60)).unwrap();
            ids.sort();
            (ids, result)
        });
        let served = s.serve();
        let (ids, result) = coordinator.join().unwrap();
        assert_eq!(served, ShutdownResult::Clean);
        assert_eq!(result, ShutdownResult::Clean);
        assert_eq!(count.load(Ordering::SeqCst), THREADS * EACH);
        let expected: Vec<TaskId> = (1..=(THREADS * EACH) as u64)
            .map(TaskId::from_raw)
            .collect();
        assert_eq!(ids, expected, "unique ids from every thread");
        assert_eq!(s.metrics().done, (THREADS * EACH) as u64);
    });
}

#[test]
fn cancel_and_notify_through_a_handle_from_another_thread() {
    within(WATCHDOG, || {
        // Both tasks block on I/O nothing will report on its own (a sleeper would
        // not do: an idle virtual clock jumps straight to its deadline).
        let s = vsched();
        let (tx, rx) = mpsc::channel();
        s.subscribe(on_io_wait(tx));
        let (sock_a, _keep_a) = std::os::unix::net::UnixStream::pair().unwrap();
        let (sock_b, _keep_b) = std::os::unix::net::UnixStream::pair().unwrap();
        let token_a = s.register_io(&sock_a).unwrap();
        let token_b = s.register_io(&sock_b).unwrap();
        let (dropped, guard) = drop_flag();
        let victim = s
            .spawn(move |cx| {
                let _guard = guard;
                cx.io_wait(token_a, Interest::Readable)
            })
            .unwrap();
        let waiter = s
            .spawn(move |cx| cx.io_wait(token_b, Interest::Readable))
            .unwrap();
        let handle = s.handle();
        let other = std::thread::spawn(move || {
            for _ in 0..2 {
                await_signal(&rx, &handle, "the tasks never waited");
            }
            handle.cancel(victim).unwrap();
            // In-memory readiness works with and without async-io.
            handle.notify_io(token_b, Interest::Readable).unwrap();
        });
        s.run();
        other.join().unwrap();
        assert_eq!(s.state(victim), Some(TaskState::Cancelled));
        assert!(is_set(&dropped));
        assert_eq!(
            value_of::<Result<IoReady, SyscallError>>(&s, waiter),
            Ok(IoReady::Ready)
        );
        assert_eq!(s.now(), Duration::ZERO);
    });
}

#[test]
fn a_handle_outliving_its_scheduler_reports_closed() {
    let s = vsched();
    let handle = s.handle();
    assert!(!handle.is_closed());
    drop(s);
    assert!(handle.is_closed());
    assert_denied(handle.spawn(|_cx| ()), SpawnError::Closed);
    assert_eq!(handle.cancel(TaskId::from_raw(1)), Err(HandleError::Closed));
    assert_eq!(
        handle.request_shutdown(Duration::ZERO),
        Err(HandleError::Closed)
    );
    let h = handle.clone();
    let r = std::thread::spawn(move || h.shutdown(Duration::ZERO))
        .join()
        .unwrap();
    assert_eq!(r, Err(HandleError::Closed));
}

#[test]
fn spawn_through_a_handle_before_run_is_carried_out_by_run() {
    within(WATCHDOG, || {
        let s = vsched();
        let handle = s.handle();
        let id = std::thread::spawn(move || handle.spawn(|cx| cx.now()).unwrap())
            .join()
            .unwrap();
        assert_eq!(s.state(id), None, "not received yet");
        let order = s.run();
        assert_eq!(order, vec![id]);
        assert_eq!(value_of::<Duration>(&s, id), Duration::ZERO);
    });
}

/// `Handle::with_scheduler` runs a closure with the scheduler on its thread:
/// another thread can use what only the scheduler's own API offers (here:
/// be told, without blocking, when a task ends).
#[test]
fn with_scheduler_reaches_the_schedulers_own_api_from_another_thread() {
    within(WATCHDOG, || {
        let s = Scheduler::builder().build().unwrap();
        let handle = s.handle();
        let (ended_tx, ended_rx) = mpsc::channel::<(TaskId, bool)>();
        let other = std::thread::spawn(move || {
            let (id_tx, id_rx) = mpsc::channel();
            handle
                .with_scheduler(move |sched: &Scheduler| {
                    let id = sched
                        .spawn(|cx| cx.sleep(Duration::from_millis(1)))
                        .unwrap();
                    let tx = ended_tx.clone();
                    sched.on_task_end(id, move |id, outcome| {
                        let _ = tx.send((id, matches!(outcome, Outcome::Done(_))));
                    });
                    let _ = id_tx.send(std::thread::current().id());
                })
                .unwrap();
            let ran_on = await_signal(&id_rx, &handle, "the closure never ran");
            let ended = await_signal(&ended_rx, &handle, "the task never ended");
            handle.shutdown(Duration::from_secs(1)).unwrap();
            (ran_on, ended)
        });
        let result = s.serve();
        let (ran_on, (_, done)) = other.join().unwrap();
        assert_eq!(ran_on, std::thread::current().id());
        assert!(done);
        assert_eq!(result, ShutdownResult::Clean);
    });
}
