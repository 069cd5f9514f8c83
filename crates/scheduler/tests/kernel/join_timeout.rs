//! Join with a timeout, on the virtual clock.

use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

#[test]
fn timeout_at_exactly_the_deadline_target_keeps_running() {
    let s = vsched();
    let log = logged(&s);
    let target = s
        .spawn(|cx| {
            cx.sleep(ms(100));
            7i32
        })
        .unwrap();
    let joiner = s
        .spawn(move |cx| {
            let first = cx.join_timeout(target, ms(30));
            let first_at = cx.now();
            let second = cx.join(target);
            let second_at = cx.now();
            (
                matches!(first, JoinResult::Timeout),
                first_at,
                second
                    .value()
                    .and_then(|v| v.downcast_ref::<i32>().copied()),
                second_at,
            )
        })
        .unwrap();
    let order = s.run();
    assert_eq!(
        value_of::<(bool, Duration, Option<i32>, Duration)>(&s, joiner),
        (true, ms(30), Some(7), ms(100))
    );
    assert_eq!(order, vec![target, joiner]);
    assert_eq!(s.state(target), Some(TaskState::Finished));
    // The timeout did not touch the target: it slept its full 100 ms once.
    assert_eq!(
        task_kinds(&log.events(), target),
        vec!["spawned", "running", "sleep", "running", "done"]
    );
    assert_eq!(
        task_kinds(&log.events(), joiner),
        vec![
            "spawned", "running", "join", "running", "join", "running", "done"
        ]
    );
}

#[test]
fn target_finishing_first_answers_success_before_the_deadline() {
    let s = vsched();
    let target = s
        .spawn(|cx| {
            cx.sleep(ms(20));
            "value"
        })
        .unwrap();
    let joiner = s
        .spawn(move |cx| {
            let r = cx.join_timeout(target, ms(500));
            (
                r.value().and_then(|v| v.downcast_ref::<&str>().copied()),
                cx.now(),
            )
        })
        .unwrap();
    s.run();
    assert_eq!(
        value_of::<(Option<&str>, Duration)>(&s, joiner),
        (Some("value"), ms(20))
    );
}

#[test]
fn repeated_timeouts_then_success() {
    let s = vsched();
    let target = s.spawn(|cx| cx.sleep(ms(35))).unwrap();
    let joiner = s
        .spawn(move |cx| {
            let mut timeouts = Vec::new();
            loop {
                match cx.join_timeout(target, ms(10)) {
                    JoinResult::Timeout => timeouts.push(cx.now()),
                    JoinResult::Success(_) => return (timeouts, cx.now()),
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .unwrap();
    s.run();
    assert_eq!(
        value_of::<(Vec<Duration>, Duration)>(&s, joiner),
        (vec![ms(10), ms(20), ms(30)], ms(35))
    );
}

#[test]
fn zero_timeout_and_finished_targets_answer_at_once() {
    let s = vsched();
    let log = logged(&s);
    let done = s.spawn(|_cx| 1u8).unwrap();
    let sleeper = s.spawn(|cx| cx.sleep(ms(5))).unwrap();
    let joiner = s
        .spawn(move |cx| {
            let a = matches!(
                cx.join_timeout(sleeper, Duration::ZERO),
                JoinResult::Timeout
            );
            let b = cx.join_timeout(done, ms(1)).is_success();
            let c = cx.join(done).is_success();
            (a, b, c, cx.now())
        })
        .unwrap();
    s.run();
    assert_eq!(
        value_of::<(bool, bool, bool, Duration)>(&s, joiner),
        (true, true, true, Duration::ZERO)
    );
    assert_eq!(
        count_kind(&log.events(), joiner, "join"),
        0,
        "never blocked"
    );
}

#[test]
fn joining_self_or_an_unknown_task_fails_with_a_reason() {
    let s = vsched();
    let t = s
        .spawn(|cx| {
            let me = cx.tid();
            let own = match cx.join(me) {
                JoinResult::Failed(e) => e.message().to_string(),
                other => format!("{other:?}"),
            };
            let unknown = match cx.join_timeout(TaskId::from_raw(424_242), ms(1)) {
                JoinResult::Failed(e) => e.message().to_string(),
                other => format!("{other:?}"),
            };
            (own, unknown)
        })
        .unwrap();
    s.run();
    let (own, unknown) = value_of::<(String, String)>(&s, t);
    assert_eq!(own, SyscallError::JoinSelf.to_string());
    assert_eq!(
        unknown,
        SyscallError::UnknownTask(TaskId::from_raw(424_242)).to_string()
    );
}

#[test]
fn timed_out_joiner_is_not_woken_again_when_the_target_ends() {
    // After its join timed out the joiner sleeps past the target's end; the
    // target's end must not cut that sleep short.
    let s = vsched();
    let target = s.spawn(|cx| cx.sleep(ms(20))).unwrap();
    let joiner = s
        .spawn(move |cx| {
            let timed_out = matches!(cx.join_timeout(target, ms(10)), JoinResult::Timeout);
            cx.sleep(ms(40));
            (timed_out, cx.now())
        })
        .unwrap();
    s.run();
    assert_eq!(value_of::<(bool, Duration)>(&s, joiner), (true, ms(50)));
}

#[test]
fn many_joiners_some_cancelled_some_timed_out_the_rest_get_the_value_once() {
    let s = vsched();
    let target = s
        .spawn(|cx| {
            cx.sleep(ms(100));
            7u32
        })
        .unwrap();
    let results = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut joiners = Vec::new();
    for i in 0..300u64 {
        let results = results.clone();
        joiners.push(
            s.spawn(move |cx| {
                let r = if i % 3 == 0 {
                    cx.join_timeout(target, ms(10 + i))
                } else {
                    cx.join(target)
                };
                results.lock().unwrap().push((i, r));
            })
            .unwrap(),
        );
    }
    s.spawn({
        let to_cancel: Vec<TaskId> = joiners.iter().copied().skip(1).step_by(3).collect();
        let results = results.clone();
        move |cx| {
            cx.sleep(ms(5));
            for t in to_cancel {
                assert!(cx.cancel(t));
            }
            // More joiners while the list holds stale entries: the list is
            // pruned as it grows, and no live joiner may be lost.
            for i in 300..600u64 {
                let results = results.clone();
                cx.spawn(move |cx| {
                    let r = cx.join(target);
                    // Recorded under an index the check below expects to succeed.
                    results.lock().unwrap().push((3 * i + 2, r));
                })
                .unwrap();
            }
        }
    })
    .unwrap();
    s.run();
    let results = results.lock().unwrap();
    // Cancelled joiners recorded nothing; every other joiner exactly once.
    assert_eq!(results.len(), 200 + 300);
    for (i, r) in results.iter() {
        match i % 3 {
            // A timeout due at the instant the target wakes fires first: the
            // target has not run (and ended) yet.
            0 if 10 + i <= 100 => assert!(matches!(r, JoinResult::Timeout), "{i}: {r:?}"),
            0 | 2 => assert!(matches!(r, JoinResult::Success(_)), "{i}: {r:?}"),
            _ => panic!("cancelled joiner {i} recorded {r:?}"),
        }
    }
}
