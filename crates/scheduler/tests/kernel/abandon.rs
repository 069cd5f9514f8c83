//! A shutdown deadline cannot be held up: tasks still alive when it passes
//! are cancelled, resumed once to clean up, and abandoned if they park again;
//! an interrupt cancels and waits; an abort abandons at once.

use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

/// A task that swallows every cancellation and goes back to sleep, forever
/// (what `while True: try: await sleep(10) except Cancelled: pass` does).
struct Swallower {
    cancels_seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _guard: DropFlag,
}

impl TaskBody for Swallower {
    fn resume(&mut self, input: Option<Resume>) -> Step {
        if matches!(input, Some(Resume::Cancelled)) {
            self.cancels_seen
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Step::Syscall(SystemCall::Sleep(Duration::from_secs(10)))
    }
}

fn swallower() -> (
    Body,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (dropped, guard) = drop_flag();
    let body = Body::custom(Box::new(Swallower {
        cancels_seen: seen.clone(),
        _guard: guard,
    }));
    (body, seen, dropped)
}

/// The bound on a run that ends with an abort: an abort that does nothing
/// leaves a swallower sleeping forever in virtual time, which fails the
/// test here instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

fn seen(n: &std::sync::atomic::AtomicU64) -> u64 {
    n.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn a_task_swallowing_cancellation_cannot_hold_a_shutdown_past_its_deadline() {
    within(BOUND, || {
        for s in [vsched(), Scheduler::builder().build().expect("a poller")] {
            let (body, cancels, dropped) = swallower();
            let id = s.spawn_body(SpawnOptions::default(), body).unwrap();
            let hook_ran = Trace::new();
            let h = hook_ran.clone();
            s.add_shutdown_hook(move |r: ShutdownResult| h.push(r));

            let result = s.shutdown(ms(200));

            assert_eq!(result, ShutdownResult::Timeout);
            assert_eq!(hook_ran.get(), vec![ShutdownResult::Timeout]);
            // Resumed exactly once with `Cancelled` after the deadline, then
            // abandoned when it went back to sleep: its body was dropped.
            assert_eq!(seen(&cancels), 1);
            assert!(is_set(&dropped));
            assert_eq!(s.state(id), Some(TaskState::Cancelled));
            let m = s.metrics();
            assert_eq!((m.cancelled, m.abandoned, m.live_tasks), (1, 1, 0));
        }
    });
}

#[test]
fn a_task_that_unwinds_at_the_deadline_is_cancelled_not_abandoned() {
    within(BOUND, || {
        let s = vsched();
        let (dropped, guard) = drop_flag();
        let id = s
            .spawn(move |cx| {
                let _guard = guard;
                cx.sleep(Duration::from_secs(3600));
            })
            .unwrap();
        assert_eq!(s.shutdown(ms(50)), ShutdownResult::Timeout);
        assert!(is_set(&dropped));
        assert_eq!(s.state(id), Some(TaskState::Cancelled));
        assert_eq!(s.metrics().abandoned, 0);
        assert_eq!(s.now(), ms(50));
    });
}

/// Sleeps; resumed with `Cancelled`, cleans up with a call answered at once
/// (it sets an event), then ends as cancelled.
struct Cleaner {
    event: EventId,
    log: Trace<&'static str>,
}

impl TaskBody for Cleaner {
    fn resume(&mut self, input: Option<Resume>) -> Step {
        match input {
            Some(Resume::Cancelled) => {
                self.log.push("cancelled");
                Step::Syscall(SystemCall::EventSet(self.event))
            }
            Some(Resume::Bool(_)) => {
                self.log.push("cleaned up");
                Step::Cancelled
            }
            _ => Step::Syscall(SystemCall::Sleep(Duration::from_secs(3600))),
        }
    }
}

/// Only parking again after the deadline's resume abandons a task: a call
/// answered at once in its cleanup (no park) lets the cleanup go on to its
/// end.
#[test]
fn a_cleanup_may_make_calls_answered_at_once_past_the_deadline() {
    within(BOUND, || {
        let s = vsched();
        let log = Trace::new();
        let body = Body::custom(Box::new(Cleaner {
            event: s.new_event(),
            log: log.clone(),
        }));
        let id = s.spawn_body(SpawnOptions::default(), body).unwrap();
        assert_eq!(s.shutdown(ms(50)), ShutdownResult::Timeout);
        assert_eq!(log.get(), vec!["cancelled", "cleaned up"]);
        assert_eq!(s.state(id), Some(TaskState::Cancelled));
        assert_eq!(s.metrics().abandoned, 0);
    });
}

#[test]
fn a_shutdown_from_a_task_returns_timeout_past_a_swallower() {
    within(BOUND, || {
        let s = vsched();
        let (body, cancels, _dropped) = swallower();
        s.spawn_body(SpawnOptions::default(), body).unwrap();
        let asker = s
            .spawn(|cx| cx.shutdown(ms(200)).expect("no shutdown under way"))
            .unwrap();
        s.run_until_idle();
        assert_eq!(
            value_of::<ShutdownResult>(&s, asker),
            ShutdownResult::Timeout
        );
        assert_eq!(seen(&cancels), 1);
        assert_eq!(s.now(), ms(200));
    });
}

#[test]
fn a_swallower_gets_cancelled_again_only_behind_the_other_ready_tasks() {
    within(BOUND, || {
        // After an interrupt (no deadline), a task that swallows `Cancelled`
        // gets it again at each blocking call, one turn of the loop later: a
        // peer that yields keeps running in between.
        let s = vsched();
        let (body, cancels, _dropped) = swallower();
        let swallow = s.spawn_body(SpawnOptions::default(), body).unwrap();
        let peer_turns = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let turns = peer_turns.clone();
        let peer = s
            .spawn(move |cx| {
                for _ in 0..100 {
                    turns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cx.yield_now()));
                }
            })
            .unwrap();
        let handle = s.internal_handle();
        s.spawn(move |cx| {
            cx.yield_now();
            handle.interrupt().unwrap();
            cx.yield_now();
        })
        .unwrap();
        // The interrupt is patient: stop it with an abort once the peer is done.
        let abort = s.internal_handle();
        s.on_task_end(peer, move |_, _| abort.abort().unwrap());
        s.run_until_idle();
        let (c, p) = (seen(&cancels), seen(&peer_turns));
        // The peer swallowed its cancellations too and ran all its turns; the
        // swallower saw one cancellation per turn of the peer, not a burst.
        assert_eq!(p, 100);
        assert!((90..=102).contains(&c), "swallower saw {c} cancellations");
        assert_eq!(s.state(swallow), Some(TaskState::Cancelled));
        assert!(s.metrics().abandoned >= 1);
    });
}

#[test]
fn an_abort_abandons_every_task_at_once() {
    within(BOUND, || {
        let s = vsched();
        let (body, cancels, dropped) = swallower();
        s.spawn_body(SpawnOptions::default(), body).unwrap();
        let (native_dropped, guard) = drop_flag();
        s.spawn(move |cx| {
            let _guard = guard;
            cx.sleep(Duration::from_secs(5));
        })
        .unwrap();
        let h = s.internal_handle();
        s.spawn(move |cx| {
            cx.sleep(ms(1));
            h.abort().unwrap();
        })
        .unwrap();
        let result = Trace::new();
        let r = result.clone();
        s.add_shutdown_hook(move |x: ShutdownResult| r.push(x));
        s.run_until_idle();
        assert_eq!(seen(&cancels), 0, "abandoned without another resume");
        assert!(is_set(&dropped) && is_set(&native_dropped));
        assert_eq!(result.get(), vec![ShutdownResult::Timeout]);
        assert_eq!(s.live_tasks(), 0);
        assert_eq!(s.now(), ms(1));
    });
}

/// Tasks abandoned while they wait in the ready queue leave it: once the
/// abort is done, the queue's depth is 0.
#[test]
fn an_abort_empties_the_ready_queue() {
    within(BOUND, || {
        let s = vsched();
        for _ in 0..2 {
            s.spawn(|cx| {
                loop {
                    cx.yield_now();
                }
            })
            .unwrap();
        }
        let h = s.internal_handle();
        s.spawn(move |cx| {
            cx.yield_now();
            h.abort().unwrap();
        })
        .unwrap();
        s.run_until_idle();
        assert_eq!(s.live_tasks(), 0);
        let m = s.metrics();
        assert_eq!((m.abandoned, m.ready_queue_depth), (2, 0));
    });
}
