//! Determinism: on the virtual clock the same program gives the same PAL,
//! byte for byte.

use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

struct RunRecord {
    pal: String,
    order: Vec<TaskId>,
    now: Duration,
    metrics: MetricsSnapshot,
}

/// Many tasks with sleeps, joins, yields, spawns, cancels, throttling, a
/// failure and a shutdown at the end.
fn workload() -> RunRecord {
    let s = Scheduler::builder()
        .virtual_clock()
        .accounting(Accounting::PerStep(Duration::from_micros(250)))
        .quantum(ms(1))
        .build()
        .unwrap();
    let log = logged(&s);
    let mut ids = Vec::new();
    for i in 0..40u64 {
        let priority = [3u8, 10, 10, 40, 200][(i % 5) as usize];
        let earlier = ids.clone();
        let id = s
            .spawn_with(SpawnOptions::priority(priority), move |cx| {
                let mut acc = i;
                for step in 0..(i % 7) {
                    match (i + step) % 6 {
                        0 => cx.yield_now(),
                        1 => cx.sleep(ms((i * 7 + step * 3) % 23)),
                        2 => {
                            if let Some(&t) =
                                earlier.get((step as usize * 5) % (earlier.len().max(1)))
                            {
                                let r = cx.join_timeout(t, ms(5 + step));
                                acc += r.is_success() as u64;
                            }
                        }
                        3 => {
                            let child = cx
                                .spawn(move |cx| {
                                    cx.sleep(ms(step + 1));
                                    step * 2
                                })
                                .unwrap();
                            if step % 2 == 0 {
                                cx.cancel(child);
                            } else {
                                acc += cx.join(child).is_success() as u64;
                            }
                        }
                        4 => {
                            for _ in 0..6 {
                                cx.log(format!("task {i} busy"));
                            }
                        }
                        _ => {
                            if let Some(&t) = earlier.last() {
                                cx.cancel(t);
                            }
                        }
                    }
                }
                if i == 17 {
                    panic!("planned failure in task {i}");
                }
                acc
            })
            .unwrap();
        ids.push(id);
    }
    let order = s.run();
    // More work, then a shutdown that has to cancel a sleeper.
    s.spawn(|cx| cx.sleep(Duration::from_secs(10))).unwrap();
    s.spawn(|cx| cx.sleep(ms(3))).unwrap();
    assert_eq!(s.shutdown(ms(100)), ShutdownResult::Timeout);
    RunRecord {
        pal: log.to_pal(),
        order,
        now: s.now(),
        metrics: s.metrics(),
    }
}

#[test]
fn two_runs_of_the_same_workload_give_the_same_pal() {
    let first = workload();
    let second = workload();
    assert!(first.pal.lines().count() > 300, "a non-trivial workload");
    assert_eq!(first.order, second.order);
    assert_eq!(first.now, second.now);
    assert_eq!(first.metrics, second.metrics);
    if first.pal != second.pal {
        let diff = first
            .pal
            .lines()
            .zip(second.pal.lines())
            .position(|(a, b)| a != b);
        panic!("PALs differ at line {diff:?}");
    }
    // The workload did exercise what it claims to.
    let m = &first.metrics;
    assert!(m.throttles > 0, "{m:?}");
    assert!(m.cancelled > 0, "{m:?}");
    assert_eq!(m.failed, 1);
    assert!(first.pal.contains("\"event\":\"join\""));
    assert!(first.pal.contains("\"event\":\"yield\""));
    assert!(first.pal.contains("\"event\":\"sleep\""));
}

#[test]
fn determinism_holds_across_threads() {
    // Each thread has its own coroutine pool; the PAL must not depend on it.
    let here = workload().pal;
    let there = std::thread::spawn(|| workload().pal).join().unwrap();
    assert_eq!(here, there);
}

/// A small program whose event sequence is written out in full: what the
/// kernel must produce, not only what it produced last time. Priorities,
/// a yield, sleeps woken in deadline order, a join, a cancel and a
/// dependency, on the virtual clock.
#[test]
fn a_small_program_gives_exactly_its_expected_events() {
    let s = vsched();
    let log = logged(&s);
    let sleeper = s
        .spawn_with(SpawnOptions::default().with_name("sleeper"), |cx| {
            cx.sleep(ms(20));
            1u8
        })
        .unwrap();
    let urgent = s
        .spawn_with(SpawnOptions::priority(1), |cx| {
            cx.yield_now();
            cx.sleep(ms(10));
        })
        .unwrap();
    let victim = s.spawn(|cx| cx.sleep(ms(50))).unwrap();
    s.spawn_with(SpawnOptions::default().with_deps(&[urgent]), move |cx| {
        cx.cancel(victim);
        cx.join(sleeper);
    })
    .unwrap();
    s.run();
    let expected = [
        r#"{"ts":0.0,"task_id":1,"event":"spawned","priority":10,"name":"sleeper"}"#,
        r#"{"ts":0.0,"task_id":2,"event":"spawned","priority":1}"#,
        r#"{"ts":0.0,"task_id":3,"event":"spawned","priority":10}"#,
        r#"{"ts":0.0,"task_id":4,"event":"spawned","priority":10,"deps":1}"#,
        r#"{"ts":0.0,"task_id":2,"event":"running"}"#,
        r#"{"ts":0.0,"task_id":2,"event":"yield"}"#,
        r#"{"ts":0.0,"task_id":2,"event":"running"}"#,
        r#"{"ts":0.0,"task_id":2,"event":"sleep","until":0.01}"#,
        r#"{"ts":0.0,"task_id":1,"event":"running"}"#,
        r#"{"ts":0.0,"task_id":1,"event":"sleep","until":0.02}"#,
        r#"{"ts":0.0,"task_id":3,"event":"running"}"#,
        r#"{"ts":0.0,"task_id":3,"event":"sleep","until":0.05}"#,
        r#"{"ts":0.01,"task_id":2,"event":"running"}"#,
        r#"{"ts":0.01,"task_id":2,"event":"done"}"#,
        r#"{"ts":0.01,"task_id":4,"event":"running"}"#,
        r#"{"ts":0.01,"task_id":4,"event":"join","target":1}"#,
        // Woken by the cancel, it runs once more to unwind its stack.
        r#"{"ts":0.01,"task_id":3,"event":"running"}"#,
        r#"{"ts":0.01,"task_id":3,"event":"cancelled"}"#,
        r#"{"ts":0.02,"task_id":1,"event":"running"}"#,
        r#"{"ts":0.02,"task_id":1,"event":"done"}"#,
        r#"{"ts":0.02,"task_id":4,"event":"running"}"#,
        r#"{"ts":0.02,"task_id":4,"event":"done"}"#,
    ];
    let pal = log.to_pal();
    let lines: Vec<&str> = pal.lines().collect();
    assert_eq!(lines, expected, "PAL:\n{pal}");
}
