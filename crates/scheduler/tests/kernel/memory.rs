//! Memory: finished tasks' records are freed, so a long-running scheduler
//! does not grow; `retain_finished(n)` keeps at most the last `n`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::common::*;
use tiffany_scheduler::*;

const TASKS: usize = 10_000;

/// Runs `TASKS` short tasks, spawned by one task, and returns the highest
/// number of task records seen after any task ended.
fn run_many(s: &Scheduler) -> usize {
    let max = Rc::new(Cell::new(0usize));
    let slot: Rc<RefCell<Option<Scheduler>>> = Rc::new(RefCell::new(Some(s.clone())));
    let (m, sl) = (max.clone(), slot.clone());
    s.subscribe(move |e: &TaskEvent| {
        if is_terminal(&e.kind)
            && let Some(s) = sl.borrow().as_ref()
        {
            m.set(m.get().max(s.task_records()));
        }
    });
    s.spawn(|cx| {
        for i in 0..TASKS {
            cx.spawn(move |cx| {
                if i % 2 == 0 {
                    cx.yield_now();
                }
                i
            })
            .unwrap();
        }
    })
    .unwrap();
    let order = s.run();
    assert_eq!(order.len(), TASKS + 1);
    // Break the subscriber's reference cycle.
    slot.borrow_mut().take();
    max.get()
}

#[test]
fn no_retention_frees_every_record() {
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(0)
        .build()
        .unwrap();
    let max = run_many(&s);
    assert_eq!(s.task_records(), 0);
    assert_eq!(s.live_tasks(), 0);
    assert_eq!(s.metrics().done, TASKS as u64 + 1);
    // Only live tasks were ever held: the spawner outruns its children by one
    // quantum at a time, never by thousands.
    assert!(max < 200, "at most {max} records at once");
}

#[test]
fn a_window_of_n_keeps_at_most_n_finished_records() {
    const N: usize = 100;
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(N)
        .build()
        .unwrap();
    let max = run_many(&s);
    assert_eq!(s.task_records(), N);
    assert!(max < N + 200, "at most {max} records at once");
    // The oldest are forgotten, the newest kept.
    assert_eq!(s.state(TaskId::from_raw(2)), None);
    let last = TaskId::from_raw(TASKS as u64 + 1);
    assert_eq!(s.state(last), Some(TaskState::Finished));
    assert_eq!(value_of::<usize>(&s, last), TASKS - 1);
}

#[test]
fn many_runs_do_not_accumulate_records() {
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(0)
        .build()
        .unwrap();
    for round in 0..100u64 {
        for i in 0..100u64 {
            s.spawn(move |cx| cx.sleep(ms((round + i) % 4))).unwrap();
        }
        s.run();
        assert_eq!(s.task_records(), 0, "round {round}");
    }
    assert_eq!(s.metrics().done, 10_000);
}

#[test]
fn retain_keeps_a_record_until_released() {
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(0)
        .build()
        .unwrap();
    let kept = s.spawn(|_cx| 7u8).unwrap();
    let gone = s.spawn(|_cx| 8u8).unwrap();
    assert!(s.retain(kept));
    s.run();
    assert_eq!(s.task_records(), 1);
    assert_eq!(value_of::<u8>(&s, kept), 7);
    assert_eq!(s.state(gone), None);
    assert!(!s.retain(gone));
    s.release(kept);
    assert_eq!(s.task_records(), 0);
    assert_eq!(s.state(kept), None);
}

#[test]
fn a_joined_record_lives_until_the_joiner_has_its_answer() {
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(0)
        .build()
        .unwrap();
    let target = s.spawn(|cx| {
        cx.sleep(ms(5));
        "result"
    });
    let target = target.unwrap();
    let joiner = s
        .spawn(move |cx| {
            cx.join(target)
                .value()
                .and_then(|v| v.downcast_ref::<&str>().copied())
        })
        .unwrap();
    // The joiner's own record is kept by retain so the test can read it.
    assert!(s.retain(joiner));
    s.run();
    assert_eq!(value_of::<Option<&str>>(&s, joiner), Some("result"));
    assert_eq!(
        s.state(target),
        None,
        "freed once the joiner had its answer"
    );
    s.release(joiner);
    assert_eq!(s.task_records(), 0);
}
