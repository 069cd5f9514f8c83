//! A task's state as the bindings and the PAL name it, and the options a
//! system task is spawned with: each checked directly, so a broken one fails
//! an assertion rather than a program that hangs on it.

use std::time::Duration;

use tiffany_scheduler::*;

/// Every state, with its name and whether it is an end.
fn every_state() -> Vec<(TaskState, &'static str, bool)> {
    vec![
        (TaskState::Pending, "pending", false),
        (TaskState::Scheduled, "scheduled", false),
        (TaskState::Running, "running", false),
        (
            TaskState::Sleeping {
                wake_at: Duration::from_millis(5),
            },
            "sleeping",
            false,
        ),
        (TaskState::Waiting(WaitReason::Admission), "waiting", false),
        (TaskState::Throttled, "throttled", false),
        (TaskState::Finished, "finished", true),
        (TaskState::Failed, "failed", true),
        (TaskState::Cancelled, "cancelled", true),
    ]
}

#[test]
fn every_state_has_its_documented_name() {
    for (state, name, _) in every_state() {
        assert_eq!(state.name(), name, "{state:?}");
    }
}

#[test]
fn only_finished_failed_and_cancelled_are_ends() {
    for (state, _, end) in every_state() {
        assert_eq!(state.is_terminal(), end, "{state:?}");
    }
}

#[test]
fn system_options_have_the_system_priority_and_flag() {
    let o = SpawnOptions::system();
    assert_eq!((o.priority, o.system), (PRI_SYSTEM, true));
    assert!(!o.daemon && o.deps.is_empty() && o.name.is_none() && o.key.is_none());
    let d = SpawnOptions::default();
    assert_eq!((d.priority, d.system), (PRI_DEFAULT, false));
}

/// Each option setter sets its own field and keeps what was set before it.
#[test]
fn each_option_setter_keeps_the_others() {
    let o = SpawnOptions::system()
        .with_deps(&[TaskId::from_raw(3)])
        .with_name("n")
        .keyed(7)
        .daemon(true)
        .with_priority(9);
    assert_eq!(o.priority, 9);
    assert_eq!(o.deps, vec![TaskId::from_raw(3)]);
    assert_eq!(o.name.as_deref(), Some("n"));
    assert_eq!(o.key, Some(7));
    assert!(o.daemon && o.system);
    let o = SpawnOptions::priority(4).keyed(1);
    assert_eq!((o.priority, o.key), (4, Some(1)));
}

thread_local! {
    /// The test's scheduler, for a task that renames the child it spawned.
    static SCHED: std::cell::RefCell<Option<Scheduler>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_rename_reaches_the_info_and_the_spawned_event_not_yet_handed_out() {
    let sched = Scheduler::builder()
        .clock(Clock::Virtual)
        .build()
        .expect("scheduler");
    SCHED.with(|s| *s.borrow_mut() = Some(sched.clone()));
    let log = EventLog::new();
    sched.subscribe(log.clone());
    // Spawned from outside a run: its event is handed out at once, so the
    // rename reaches the info only.
    let outside = sched
        .spawn_with(SpawnOptions::default().with_name("before"), |_cx| {})
        .expect("spawn");
    assert!(sched.set_name(outside, "after"));
    assert_eq!(
        sched.info(outside).expect("a live task").name.as_deref(),
        Some("after")
    );
    // An id this scheduler never issued: nothing renamed.
    assert!(!sched.set_name(TaskId::from_raw(9_999), "nobody"));
    // Spawned and renamed inside a task's step (asyncio's `create_task`
    // then `set_name`): the `Spawned` event carries the new name.
    let child = std::sync::Arc::new(std::sync::Mutex::new(None));
    let child_w = child.clone();
    sched
        .spawn(move |_cx| {
            let id = SCHED.with(|s| {
                let s = s.borrow();
                let s = s.as_ref().expect("the test's scheduler");
                let id = s.spawn(|_cx| {}).expect("spawn");
                // A later spawn's event is not the one renamed.
                let later = s.spawn(|_cx| {}).expect("spawn");
                assert!(s.set_name(id, "renamed"));
                (id, later)
            });
            *child_w.lock().unwrap() = Some(id);
        })
        .expect("spawn");
    sched.run();
    let (child, later) = child.lock().unwrap().expect("the child was spawned");
    let spawned_name = |id: TaskId| -> Vec<Option<String>> {
        log.events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Spawned { name, .. } if e.task == Some(id) => {
                    Some(name.as_deref().map(str::to_owned))
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(spawned_name(outside), [Some("before".to_owned())]);
    assert_eq!(spawned_name(child), [Some("renamed".to_owned())]);
    assert_eq!(spawned_name(later), [None]);
}

/// `on_task_end` for a task that has already ended (its record kept) runs
/// the callback at once, with the outcome; for an unknown task it refuses.
#[test]
fn an_end_callback_for_an_ended_task_runs_at_once() {
    let s = crate::common::vsched();
    let t = s.spawn(|_cx| 7u8).unwrap();
    s.retain(t);
    s.run();
    let seen = std::rc::Rc::new(std::cell::Cell::new(None));
    let r = seen.clone();
    assert!(s.on_task_end(t, move |id, o| r.set(Some((id, o.label())))));
    assert_eq!(seen.get(), Some((t, "done")));
    assert!(!s.on_task_end(TaskId::from_raw(999), |_, _| ()));
}
