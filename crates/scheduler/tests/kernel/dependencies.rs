//! Dependencies between tasks: chains, diamonds, refused cycles and unknown
//! ids, and cancellation of everything downstream of a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

/// A task body that records `(name, time)` when it runs.
fn mark(
    name: &'static str,
    sleep: Duration,
    trace: &Trace<(&'static str, Duration)>,
) -> impl FnOnce(&mut TaskContext<'_>) + Send + 'static {
    let trace = trace.clone();
    move |cx| {
        if !sleep.is_zero() {
            cx.sleep(sleep);
        }
        trace.push((name, cx.now()));
    }
}

#[test]
fn chain_runs_each_link_after_the_previous() {
    let s = vsched();
    let trace = Trace::new();
    // Spawned in reverse priority so only the dependencies impose the order.
    let a = s
        .spawn_with(SpawnOptions::priority(200), mark("a", ms(10), &trace))
        .unwrap();
    let b = s
        .spawn_with(
            SpawnOptions::default().with_deps(&[a]),
            mark("b", ms(5), &trace),
        )
        .unwrap();
    let c = s
        .spawn_with(
            SpawnOptions::priority(1).with_deps(&[b]),
            mark("c", Duration::ZERO, &trace),
        )
        .unwrap();
    assert_eq!(s.state(b), Some(TaskState::Pending));
    assert_eq!(s.state(c), Some(TaskState::Pending));
    let order = s.run();
    assert_eq!(order, vec![a, b, c]);
    assert_eq!(
        trace.get(),
        vec![("a", ms(10)), ("b", ms(15)), ("c", ms(15))]
    );
}

#[test]
fn diamond_bottom_waits_for_both_sides() {
    let s = vsched();
    let log = logged(&s);
    let trace = Trace::new();
    let top = s.spawn(mark("top", ms(5), &trace)).unwrap();
    let left = s
        .spawn_with(
            SpawnOptions::default().with_deps(&[top]),
            mark("left", ms(10), &trace),
        )
        .unwrap();
    let right = s
        .spawn_with(
            SpawnOptions::default().with_deps(&[top]),
            mark("right", ms(20), &trace),
        )
        .unwrap();
    let bottom = s
        .spawn_with(
            SpawnOptions::default().with_deps(&[left, right]),
            mark("bottom", Duration::ZERO, &trace),
        )
        .unwrap();
    let order = s.run();
    assert_eq!(order, vec![top, left, right, bottom]);
    assert_eq!(
        trace.get(),
        vec![
            ("top", ms(5)),
            ("left", ms(15)),
            ("right", ms(25)),
            ("bottom", ms(25))
        ]
    );
    let spawned = log
        .events()
        .into_iter()
        .find(|e| e.task == Some(bottom))
        .unwrap();
    assert_eq!(
        spawned.kind,
        EventKind::Spawned {
            priority: PRI_DEFAULT,
            name: None,
            deps: 2
        }
    );
    assert!(spawned.to_json().contains("\"deps\":2"));
}

#[test]
fn cycles_and_self_dependencies_are_refused() {
    let s = vsched();
    let log = logged(&s);
    let trace = Trace::new();
    let a = s.spawn(mark("a", Duration::ZERO, &trace)).unwrap();
    let b = s.spawn(mark("b", Duration::ZERO, &trace)).unwrap();
    let c = s.spawn(mark("c", Duration::ZERO, &trace)).unwrap();

    assert_eq!(s.add_dependency(a, a), Err(SpawnError::Cycle(a)));
    s.add_dependency(b, a).unwrap();
    assert_eq!(s.add_dependency(a, b), Err(SpawnError::Cycle(b)));
    s.add_dependency(c, b).unwrap();
    // a <- b <- c: a on c would close the loop transitively.
    assert_eq!(s.add_dependency(a, c), Err(SpawnError::Cycle(c)));
    assert_eq!(SpawnError::Cycle(c).reason(), "cycle");

    assert_eq!(s.state(a), Some(TaskState::Scheduled));
    assert_eq!(s.state(b), Some(TaskState::Pending));
    assert_eq!(s.metrics().spawn_denied, 3);
    let denied: Vec<TaskEvent> = log
        .events()
        .into_iter()
        .filter(|e| e.kind.name() == "spawn_denied")
        .collect();
    assert_eq!(denied.len(), 3);
    assert!(
        denied
            .iter()
            .all(|e| e.kind == EventKind::SpawnDenied { reason: "cycle" })
    );

    let order = s.run();
    assert_eq!(order, vec![a, b, c]);
    let names: Vec<&str> = trace.get().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
}

#[test]
fn unknown_ids_are_refused() {
    let s = vsched();
    let log = logged(&s);
    let ghost = TaskId::from_raw(999);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    assert_denied(
        s.spawn_with(SpawnOptions::default().with_deps(&[ghost]), move |_cx| {
            r.store(true, Ordering::SeqCst)
        }),
        SpawnError::UnknownDependency(ghost),
    );
    let a = s.spawn(|_cx| ()).unwrap();
    assert_eq!(
        s.add_dependency(a, ghost),
        Err(SpawnError::UnknownDependency(ghost))
    );
    assert_eq!(
        s.add_dependency(ghost, a),
        Err(SpawnError::UnknownDependency(ghost))
    );
    let inner = s
        .spawn(move |cx| cx.spawn_with(SpawnOptions::default().with_deps(&[ghost]), |_cx| ()))
        .unwrap();
    let order = s.run();
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(order, vec![a, inner]);
    assert_eq!(
        value_of::<Result<TaskId, SpawnError>>(&s, inner),
        Err(SpawnError::UnknownDependency(ghost))
    );
    let denied: Vec<EventKind> = log
        .events()
        .into_iter()
        .filter(|e| e.kind.name() == "spawn_denied")
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        denied,
        vec![
            EventKind::SpawnDenied {
                reason: "unknown_dependency"
            };
            2
        ]
    );
}

#[test]
fn failed_dependency_cancels_dependents_transitively() {
    let s = vsched();
    let log = logged(&s);
    let ran = Trace::new();
    let bad = s
        .spawn(|cx| -> () {
            cx.sleep(ms(1));
            panic!("upstream failure")
        })
        .unwrap();
    let ok = s.spawn(|_cx| ()).unwrap();
    let r = ran.clone();
    let b = s
        .spawn_with(SpawnOptions::default().with_deps(&[bad]), move |_cx| {
            r.push("b")
        })
        .unwrap();
    let r = ran.clone();
    let c = s
        .spawn_with(SpawnOptions::default().with_deps(&[b]), move |_cx| {
            r.push("c")
        })
        .unwrap();
    let r = ran.clone();
    let d = s
        .spawn_with(SpawnOptions::default().with_deps(&[c, ok]), move |_cx| {
            r.push("d")
        })
        .unwrap();
    let joiner = s
        .spawn(move |cx| matches!(cx.join(d), JoinResult::Cancelled))
        .unwrap();

    let order = s.run();
    assert!(ran.get().is_empty(), "no dependent ran: {:?}", ran.get());
    assert_eq!(s.state(bad), Some(TaskState::Failed));
    for t in [b, c, d] {
        assert_eq!(s.state(t), Some(TaskState::Cancelled), "task {t}");
        assert_eq!(count_kind(&log.events(), t, "running"), 0);
    }
    assert!(value_of::<bool>(&s, joiner));
    assert_eq!(order, vec![ok, bad, b, c, d, joiner]);
    assert_eq!(s.now(), ms(1));

    // A new dependent of an already failed task is cancelled at once.
    let late = s
        .spawn_with(SpawnOptions::default().with_deps(&[bad]), |_cx| ())
        .unwrap();
    assert_eq!(s.state(late), Some(TaskState::Cancelled));
}

#[test]
fn cancelled_dependency_cancels_dependents() {
    let s = vsched();
    let up = s.spawn(|cx| cx.sleep(ms(100))).unwrap();
    let down = s
        .spawn_with(SpawnOptions::default().with_deps(&[up]), |_cx| ())
        .unwrap();
    s.spawn(move |cx| {
        cx.sleep(ms(10));
        cx.cancel(up);
    })
    .unwrap();
    s.run();
    assert_eq!(s.state(up), Some(TaskState::Cancelled));
    assert_eq!(s.state(down), Some(TaskState::Cancelled));
    assert_eq!(s.now(), ms(10));
}

#[test]
fn finished_dependency_is_already_met() {
    let s = vsched();
    let a = s.spawn(|_cx| 1).unwrap();
    s.run();
    let b = s
        .spawn_with(SpawnOptions::default().with_deps(&[a]), |_cx| 2)
        .unwrap();
    assert_eq!(s.state(b), Some(TaskState::Scheduled));
    let order = s.run();
    assert_eq!(order, vec![b]);
    assert_eq!(value_of::<i32>(&s, b), 2);
}

#[test]
fn dependency_on_a_started_task_is_refused() {
    let s = vsched();
    let a = s.spawn(|cx| cx.sleep(ms(10))).unwrap();
    let b = s.spawn(|cx| cx.sleep(ms(10))).unwrap();
    // A system task checks while both have started and are asleep.
    let checker = s
        .spawn(move |cx| {
            cx.sleep(ms(1));
            cx.tid()
        })
        .unwrap();
    let s2 = s.clone();
    let result = Trace::new();
    let r = result.clone();
    let mut once = Some(());
    s.subscribe(move |e: &TaskEvent| {
        if e.task == Some(checker) && e.kind.name() == "sleep" && once.take().is_some() {
            r.push(s2.add_dependency(a, b));
        }
    });
    s.run();
    assert_eq!(result.get(), vec![Err(SpawnError::AlreadyStarted(a))]);
}

#[test]
fn dependents_of_a_dependency_run_in_priority_order() {
    let s = vsched();
    let trace = Trace::new();
    let gate = s.spawn(|cx| cx.sleep(ms(3))).unwrap();
    for p in [70u8, 20, 45] {
        let t = trace.clone();
        s.spawn_with(SpawnOptions::priority(p).with_deps(&[gate]), move |_cx| {
            t.push(p)
        })
        .unwrap();
    }
    s.run();
    assert_eq!(trace.get(), vec![20, 45, 70]);
}

#[test]
fn a_task_given_two_dependencies_later_waits_for_both() {
    let s = vsched();
    let trace = Trace::new();
    let b = s.spawn(mark("b", Duration::ZERO, &trace)).unwrap();
    let first = s
        .spawn(mark("first", Duration::from_secs(1), &trace))
        .unwrap();
    let second = s
        .spawn(mark("second", Duration::from_secs(2), &trace))
        .unwrap();
    s.add_dependency(b, first).unwrap();
    s.add_dependency(b, second).unwrap();
    assert_eq!(s.state(b), Some(TaskState::Pending));
    s.run();
    assert_eq!(
        trace.get(),
        vec![
            ("first", Duration::from_secs(1)),
            ("second", Duration::from_secs(2)),
            ("b", Duration::from_secs(2)),
        ]
    );
}
