//! Daemon tasks do not keep `run()` going: they are cancelled once every
//! other task has finished.

use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

/// A daemon that ticks every second. Bounded, so a kernel that forgets to
/// cancel it ends the test with a wrong answer instead of a hang.
fn ticker(
    ticks: Trace<Duration>,
) -> impl FnOnce(&mut TaskContext<'_>) -> &'static str + Send + 'static {
    move |cx| {
        for _ in 0..1000 {
            cx.sleep(Duration::from_secs(1));
            ticks.push(cx.now());
        }
        "ran to the end: never cancelled"
    }
}

#[test]
fn run_cancels_daemons_after_the_other_tasks() {
    let s = vsched();
    let ticks = Trace::new();
    let (dropped, guard) = drop_flag();
    let daemon = s
        .spawn_with(SpawnOptions::default().daemon(true), {
            let t = ticker(ticks.clone());
            move |cx| {
                let _guard = guard;
                t(cx)
            }
        })
        .unwrap();
    let worker = s.spawn(|cx| cx.sleep(ms(3500))).unwrap();
    let order = s.run();
    assert_eq!(order, vec![worker, daemon]);
    assert_eq!(s.state(daemon), Some(TaskState::Cancelled));
    assert!(s.info(daemon).unwrap().daemon);
    assert!(is_set(&dropped));
    assert_eq!(
        ticks.get(),
        vec![
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(3)
        ]
    );
    assert_eq!(s.now(), ms(3500));
}

#[test]
fn only_daemons_means_nothing_to_wait_for() {
    let s = vsched();
    let daemon = s
        .spawn_with(SpawnOptions::default().daemon(true), ticker(Trace::new()))
        .unwrap();
    assert_eq!(s.run(), vec![daemon]);
    assert_eq!(s.state(daemon), Some(TaskState::Cancelled));
}

#[test]
fn a_second_run_cancels_its_daemons_too() {
    let s = vsched();
    let first = s
        .spawn_with(SpawnOptions::default().daemon(true), ticker(Trace::new()))
        .unwrap();
    s.spawn(|cx| cx.sleep(ms(10))).unwrap();
    s.run();
    assert_eq!(s.state(first), Some(TaskState::Cancelled));

    let start = s.now();
    let second = s
        .spawn_with(SpawnOptions::default().daemon(true), ticker(Trace::new()))
        .unwrap();
    s.spawn(|cx| cx.sleep(ms(10))).unwrap();
    s.run();
    assert_eq!(
        s.outcome(second).map(|o| o.label()),
        Some("cancelled"),
        "value: {:?}",
        s.value(second)
    );
    assert_eq!(s.now(), start + ms(10));
}

/// A daemon may ask for the shutdown itself: when the drain cancels the
/// daemons, the one that asked is left out and gets the result.
#[test]
fn a_daemon_that_asks_for_the_shutdown_is_not_cancelled_by_it() {
    within(Duration::from_secs(10), || {
        let s = vsched();
        let sleeper = s
            .spawn_with(SpawnOptions::default().daemon(true), |cx| {
                cx.sleep(ms(3_600_000))
            })
            .unwrap();
        let asker = s
            .spawn_with(SpawnOptions::default().daemon(true), |cx| {
                cx.shutdown(ms(200)).expect("no shutdown under way")
            })
            .unwrap();
        s.retain(asker);
        s.run_until_idle();
        assert_eq!(s.state(sleeper), Some(TaskState::Cancelled));
        assert_eq!(value_of::<ShutdownResult>(&s, asker), ShutdownResult::Clean);
    });
}
