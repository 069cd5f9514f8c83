//! CPU budgets: a busy task whose calls never block is throttled behind its
//! peers once it used its quantum. Per-step accounting makes it exact.

use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

/// 1 ms charged per resume, 3 ms quantum: three calls per turn.
fn throttling() -> Scheduler {
    Scheduler::builder()
        .virtual_clock()
        .accounting(Accounting::PerStep(ms(1)))
        .quantum(ms(3))
        .build()
        .unwrap()
}

fn logger(
    name: &'static str,
    n: usize,
    trace: Trace<String>,
) -> impl FnOnce(&mut TaskContext<'_>) + Send + 'static {
    move |cx| {
        for i in 0..n {
            trace.push(format!("{name}{i}"));
            cx.log(format!("{name}{i}"));
        }
    }
}

#[test]
fn busy_logger_is_throttled_and_its_peer_runs_in_between() {
    let s = throttling();
    let log = logged(&s);
    let trace = Trace::new();
    let a = s.spawn(logger("a", 6, trace.clone())).unwrap();
    let b = s.spawn(logger("b", 6, trace.clone())).unwrap();

    s.run();

    assert_eq!(
        trace.get(),
        [
            "a0", "a1", "a2", "b0", "b1", "b2", "a3", "a4", "a5", "b3", "b4", "b5"
        ]
    );
    let (ia, ib) = (Some(a.get()), Some(b.get()));
    let log_ev = |t, m: &str| (t, format!("log {m}"));
    let mut expected: Vec<(Option<u64>, String)> =
        vec![(ia, "spawned".into()), (ib, "spawned".into())];
    for (turn, task) in [(0, ia), (0, ib), (1, ia), (1, ib)] {
        let name = if task == ia { "a" } else { "b" };
        expected.push((task, "running".into()));
        for i in 0..3 {
            expected.push(log_ev(task, &format!("{name}{}", turn * 3 + i)));
        }
        expected.push((task, "throttled".into()));
    }
    for task in [ia, ib] {
        expected.push((task, "running".into()));
        expected.push((task, "done".into()));
    }
    let actual: Vec<(Option<u64>, String)> = log
        .events()
        .iter()
        .map(|e| {
            let name = match &e.kind {
                EventKind::Log { message } => format!("log {message}"),
                k => k.name().to_string(),
            };
            (e.task.map(TaskId::get), name)
        })
        .collect();
    assert_eq!(actual, expected);

    // Each throttle charged exactly the quantum.
    for e in log.events() {
        if let EventKind::Throttled { used } = e.kind {
            assert_eq!(used, ms(3));
        }
    }
    let m = s.metrics();
    assert_eq!(m.throttles, 4);
    assert!(
        s.prometheus()
            .contains("tiffany_task_budget_throttle_total 4\n")
    );
    let info = s.info(a).unwrap();
    assert_eq!(info.throttles, 2);
    // Two full quanta plus the final one-step turn.
    assert_eq!(info.budget_used, ms(7));
    // Throttling costs no virtual time.
    assert_eq!(s.now(), Duration::ZERO);
}

#[test]
fn busy_now_caller_is_throttled_too() {
    let s = throttling();
    let log = logged(&s);
    let trace = Trace::new();
    let t = trace.clone();
    let busy = s
        .spawn(move |cx| {
            for i in 0..9 {
                t.push(format!("busy{i}"));
                cx.now();
            }
        })
        .unwrap();
    let t = trace.clone();
    let peer = s.spawn(move |_cx| t.push("peer".to_string())).unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        [
            "busy0", "busy1", "busy2", "peer", "busy3", "busy4", "busy5", "busy6", "busy7", "busy8"
        ]
    );
    assert_eq!(count_kind(&log.events(), busy, "throttled"), 3);
    assert_eq!(count_kind(&log.events(), peer, "throttled"), 0);
    assert_eq!(s.metrics().throttles, 3);
}

#[test]
fn blocking_calls_give_the_cpu_away_without_throttling() {
    let s = throttling();
    for _ in 0..2 {
        s.spawn(|cx| {
            for _ in 0..10 {
                cx.yield_now();
            }
        })
        .unwrap();
    }
    s.run();
    assert_eq!(s.metrics().throttles, 0);
}

#[test]
fn throttling_only_defers_to_equal_priority() {
    let s = throttling();
    let trace = Trace::new();
    let t = trace.clone();
    s.spawn_with(SpawnOptions::priority(50), move |_cx| {
        t.push("low".to_string())
    })
    .unwrap();
    let urgent = s
        .spawn_with(SpawnOptions::priority(5), logger("u", 7, trace.clone()))
        .unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "low"]
    );
    assert_eq!(s.info(urgent).unwrap().throttles, 2);
}

#[test]
fn quantum_can_be_changed_at_run_time() {
    let s = throttling();
    s.set_quantum(ms(100));
    let trace = Trace::new();
    s.spawn(logger("a", 6, trace.clone())).unwrap();
    s.spawn(logger("b", 6, trace.clone())).unwrap();
    s.run();
    assert_eq!(s.metrics().throttles, 0);
    assert_eq!(
        trace.get(),
        [
            "a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2", "b3", "b4", "b5"
        ]
    );
}

#[test]
fn default_virtual_accounting_is_deterministic() {
    // Default on the virtual clock: 100 µs per resume, 5 ms quantum, so a
    // busy task makes 50 calls per turn.
    let s = vsched();
    let trace = Trace::new();
    let t = trace.clone();
    s.spawn(move |cx| {
        for i in 0..120 {
            t.push(i);
            cx.now();
        }
    })
    .unwrap();
    let t = trace.clone();
    s.spawn(move |_cx| t.push(1000)).unwrap();
    s.run();
    let trace = trace.get();
    let peer_at = trace.iter().position(|&x| x == 1000).unwrap();
    assert_eq!(peer_at, 50);
    assert_eq!(s.metrics().throttles, 2);
}

/// On the real clock (measured accounting, the default) a task that burns
/// its quantum between two system calls is throttled (planted bug: measured
/// accounting charging nothing).
#[test]
fn measured_accounting_throttles_a_busy_task_on_the_real_clock() {
    let s = Scheduler::builder()
        .quantum(std::time::Duration::from_millis(1))
        .build()
        .unwrap();
    let id = s
        .spawn(|cx| {
            for _ in 0..3 {
                // Burn well over a quantum of CPU between system calls.
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_millis(3) {
                    std::hint::spin_loop();
                }
                cx.tid();
            }
        })
        .unwrap();
    let peer = s.spawn(|cx| cx.yield_now()).unwrap();
    s.run();
    let info = s.info(id).unwrap();
    assert!(info.throttles >= 1, "never throttled");
    assert!(info.budget_used >= std::time::Duration::from_millis(3));
    assert_eq!(s.state(peer), Some(TaskState::Finished));
    assert!(s.metrics().throttles >= 1);
}

/// A scope call (a shield's enter and exit) resumes the task within its run
/// like any call answered at once: it is a step, and charged as one.
#[test]
fn scope_calls_are_charged_as_steps() {
    let s = Scheduler::builder()
        .virtual_clock()
        .accounting(Accounting::PerStep(ms(1)))
        .quantum(ms(1000))
        .build()
        .unwrap();
    let t = s
        .spawn(|cx| {
            for _ in 0..3 {
                cx.shield(|_| ());
            }
        })
        .unwrap();
    s.retain(t);
    s.run();
    // One run (nothing blocks, the quantum is far off): every step of it
    // charged 1 ms, the first resume and the scope calls alike.
    let steps = s.metrics().steps;
    assert!(steps >= 7, "{steps} steps for a resume and three shields");
    assert_eq!(s.info(t).unwrap().budget_used, ms(steps));
}
