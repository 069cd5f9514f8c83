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
