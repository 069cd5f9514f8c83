//! Priorities: lower number first, FIFO among equals, system tasks first.

mod common;

use common::*;
use tiffany_scheduler::*;

#[test]
fn tasks_finish_in_priority_order() {
    let s = vsched();
    let trace = Trace::new();
    let mut ids = Vec::new();
    for p in [200u8, 10, 50] {
        let t = trace.clone();
        ids.push(
            s.spawn_with(SpawnOptions::priority(p), move |_cx| t.push(p))
                .unwrap(),
        );
    }
    let order = s.run();
    assert_eq!(trace.get(), vec![10, 50, 200]);
    assert_eq!(order, vec![ids[1], ids[2], ids[0]]);
    assert_eq!(s.info(ids[0]).unwrap().priority, 200);
}

#[test]
fn system_task_runs_first_even_when_spawned_last() {
    let s = vsched();
    let trace = Trace::new();
    for p in [PRI_LOWEST, 1, PRI_DEFAULT] {
        let t = trace.clone();
        s.spawn_with(SpawnOptions::priority(p), move |_cx| {
            t.push(format!("pri {p}"))
        })
        .unwrap();
    }
    let t = trace.clone();
    let sys = s
        .spawn_with(SpawnOptions::system(), move |_cx| {
            t.push("system".to_string())
        })
        .unwrap();
    let order = s.run();
    assert_eq!(order[0], sys);
    assert_eq!(trace.get(), vec!["system", "pri 1", "pri 10", "pri 255"]);
    let info = s.info(sys).unwrap();
    assert!(info.system);
    assert_eq!(info.priority, PRI_SYSTEM);
}

#[test]
fn equal_priorities_run_in_spawn_order() {
    let s = vsched();
    let trace = Trace::new();
    for i in 0..10 {
        let t = trace.clone();
        s.spawn_with(SpawnOptions::priority(42), move |_cx| t.push(i))
            .unwrap();
    }
    s.run();
    assert_eq!(trace.get(), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_yielding_high_priority_task_keeps_the_cpu() {
    // Yield only goes behind tasks of the same priority.
    let s = vsched();
    let trace = Trace::new();
    let t = trace.clone();
    s.spawn_with(SpawnOptions::priority(100), move |_cx| t.push("low"))
        .unwrap();
    let t = trace.clone();
    s.spawn_with(SpawnOptions::priority(5), move |cx| {
        for i in 0..3 {
            t.push(["high 0", "high 1", "high 2"][i]);
            cx.yield_now();
        }
    })
    .unwrap();
    s.run();
    assert_eq!(trace.get(), vec!["high 0", "high 1", "high 2", "low"]);
}

#[test]
fn a_woken_high_priority_task_overtakes_ready_low_priority_tasks() {
    let s = vsched();
    let trace = Trace::new();
    let t = trace.clone();
    s.spawn_with(SpawnOptions::priority(1), move |cx| {
        cx.sleep(ms(10));
        t.push("urgent woke".to_string());
    })
    .unwrap();
    for name in ["a", "b"] {
        let t = trace.clone();
        s.spawn_with(SpawnOptions::priority(100), move |cx| {
            // Busy until well past 10 ms of virtual time.
            for i in 0..3 {
                t.push(format!("{name}{i}"));
                cx.sleep(ms(6));
            }
        })
        .unwrap();
    }
    s.run();
    // At 12 ms both a and b are ready, and so is urgent (since 10 ms).
    assert_eq!(
        trace.get(),
        vec!["a0", "b0", "a1", "b1", "urgent woke", "a2", "b2"]
    );
}

#[test]
fn priority_order_is_kept_inside_a_run_for_tasks_spawned_by_tasks() {
    let s = vsched();
    let trace = Trace::new();
    let t = trace.clone();
    s.spawn_with(SpawnOptions::system(), move |cx| {
        for p in [90u8, 30, 60, 30] {
            let t = t.clone();
            cx.spawn_with(SpawnOptions::priority(p), move |_cx| t.push(p))
                .unwrap();
        }
    })
    .unwrap();
    s.run();
    assert_eq!(trace.get(), vec![30, 30, 60, 90]);
}
