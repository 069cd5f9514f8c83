//! Yield: equal-priority tasks take turns, round robin.

mod common;

use common::*;
use tiffany_scheduler::*;

fn worker(
    name: &'static str,
    steps: usize,
    trace: Trace<(&'static str, usize)>,
) -> impl FnOnce(&mut TaskContext<'_>) + Send + 'static {
    move |cx| {
        for step in 0..steps {
            trace.push((name, step));
            cx.yield_now();
        }
    }
}

#[test]
fn three_tasks_interleave_round_robin() {
    let s = vsched();
    let log = logged(&s);
    let trace = Trace::new();
    let a = s.spawn(worker("A", 4, trace.clone())).unwrap();
    let b = s.spawn(worker("B", 4, trace.clone())).unwrap();
    let c = s.spawn(worker("C", 4, trace.clone())).unwrap();

    let order = s.run();

    let expected: Vec<(&str, usize)> = (0..4)
        .flat_map(|step| [("A", step), ("B", step), ("C", step)])
        .collect();
    assert_eq!(trace.get(), expected);
    assert_eq!(order, vec![a, b, c]);

    // The event log agrees: resumes go A B C A B C ... (5 each: 4 yields + the end).
    let running: Vec<TaskId> = log
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Running)
        .map(|e| e.task.unwrap())
        .collect();
    let expected_running: Vec<TaskId> = (0..5).flat_map(|_| [a, b, c]).collect();
    assert_eq!(running, expected_running);
    assert_eq!(count_kind(&log.events(), a, "yield"), 4);
    // Yields never move the virtual clock.
    assert_eq!(s.now(), std::time::Duration::ZERO);
}

#[test]
fn uneven_yield_counts_keep_the_rotation() {
    let s = vsched();
    let trace = Trace::new();
    s.spawn(worker("A", 1, trace.clone())).unwrap();
    s.spawn(worker("B", 3, trace.clone())).unwrap();
    s.spawn(worker("C", 2, trace.clone())).unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec![("A", 0), ("B", 0), ("C", 0), ("B", 1), ("C", 1), ("B", 2)]
    );
}

#[test]
fn sleep_zero_is_a_yield() {
    let s = vsched();
    let log = logged(&s);
    let trace = Trace::new();
    for name in ["A", "B"] {
        let t = trace.clone();
        s.spawn(move |cx| {
            for step in 0..3 {
                t.push((name, step));
                cx.sleep(std::time::Duration::ZERO);
            }
        })
        .unwrap();
    }
    s.run();
    assert_eq!(
        trace.get(),
        vec![("A", 0), ("B", 0), ("A", 1), ("B", 1), ("A", 2), ("B", 2)]
    );
    let events = log.events();
    assert!(events.iter().all(|e| e.kind.name() != "sleep"));
    assert_eq!(
        events.iter().filter(|e| e.kind == EventKind::Yield).count(),
        6
    );
}

#[test]
fn task_spawned_mid_run_joins_the_back_of_the_queue() {
    let s = vsched();
    let trace = Trace::new();
    let t = trace.clone();
    let t2 = trace.clone();
    s.spawn(move |cx| {
        cx.spawn(move |_cx| t2.push(("D", 0))).unwrap();
        for step in 0..2 {
            t.push(("A", step));
            cx.yield_now();
        }
    })
    .unwrap();
    s.spawn(worker("B", 2, trace.clone())).unwrap();
    s.spawn(worker("C", 2, trace.clone())).unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec![
            ("A", 0),
            ("B", 0),
            ("C", 0),
            ("D", 0),
            ("A", 1),
            ("B", 1),
            ("C", 1)
        ]
    );
}
