//! Cancel scopes: a cancellation starts at a scope (by a call, a deadline or
//! the task's own cancel), is level-triggered inside it, is hidden by a
//! shield, and stops at the scope that was cancelled, after which the task
//! goes on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use tiffany_scheduler::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn move_on_after_cuts_a_sleep_short_and_the_task_goes_on() {
    let s = vsched();
    let trace = Trace::new();
    let tr = trace.clone();
    let t = s
        .spawn(move |cx| {
            let r = cx.move_on_after(secs(5), |cx| {
                cx.sleep(secs(60));
                "finished"
            });
            tr.push(format!("{r:?} at {:?}", cx.now()));
            // Outside the cancelled scope the task may block again.
            cx.sleep(secs(1));
            let quick = cx.move_on_after(secs(5), |cx| {
                cx.sleep(secs(1));
                "quick"
            });
            tr.push(format!("{quick:?} at {:?}", cx.now()));
            7u32
        })
        .unwrap();
    s.run();
    assert_eq!(value_of::<u32>(&s, t), 7);
    assert_eq!(trace.get(), vec!["None at 5s", "Some(\"quick\") at 7s"]);
    // The second scope's deadline (12 s) was left behind: the virtual clock
    // does not jump to it.
    assert_eq!(s.now(), secs(7));
}

#[test]
fn a_cancelled_scope_is_level_triggered_until_it_is_left() {
    let s = vsched();
    let trace = Trace::new();
    let tr = trace.clone();
    s.spawn(move |cx| {
        let r = cx.scope(ScopeOptions::new(), |cx, me| {
            assert!(cx.cancel_scope(me));
            // Every blocking call inside unwinds; catch the first to prove
            // the second is cancelled too.
            let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cx.sleep(secs(10));
            }));
            tr.push(format!("first unwound: {}", first.is_err()));
            cx.yield_now();
            tr.push("not reached".to_string());
        });
        tr.push(format!("scope gave {r:?}"));
        cx.sleep(secs(1));
        tr.push(format!("slept after, at {:?}", cx.now()));
    })
    .unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec![
            "first unwound: true",
            "scope gave None",
            "slept after, at 1s"
        ]
    );
}

#[test]
fn nested_scopes_the_outermost_cancelled_scope_absorbs() {
    let s = vsched();
    let trace = Trace::new();
    let tr = trace.clone();
    s.spawn(move |cx| {
        let outer = cx.scope(ScopeOptions::new(), |cx, outer| {
            let inner = cx.scope(ScopeOptions::new(), |cx, inner| {
                cx.cancel_scope(inner);
                cx.cancel_scope(outer);
                cx.sleep(secs(1));
            });
            tr.push(format!("inner gave {inner:?}"));
        });
        tr.push(format!("outer gave {outer:?}"));
        // An inner scope cancelled alone stops at itself.
        let outer = cx.scope(ScopeOptions::new(), |cx, _| {
            let inner = cx.move_on_after(secs(2), |cx| cx.sleep(secs(9)));
            tr.push(format!("inner2 gave {inner:?} at {:?}", cx.now()));
            "outer2 ran on"
        });
        tr.push(format!("{outer:?}"));
    })
    .unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec![
            "outer gave None",
            "inner2 gave None at 2s",
            "Some(\"outer2 ran on\")"
        ]
    );
}

#[test]
fn a_shield_lets_a_cancelled_task_block_for_its_cleanup() {
    let s = vsched();
    let trace = Trace::new();
    let tr = trace.clone();
    let victim = s
        .spawn(move |cx| {
            struct Cleanup<'a, 'b>(&'a mut TaskContext<'b>, Trace<String>);
            impl Drop for Cleanup<'_, '_> {
                fn drop(&mut self) {
                    let cx = &mut *self.0;
                    // Cleanup that must block, while the task unwinds.
                    cx.shield(|cx| cx.sleep(Duration::from_secs(3)));
                    self.1.push(format!("cleaned up at {:?}", cx.now()));
                    // Outside the shield the task is cancelled again.
                    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        cx.sleep(Duration::from_secs(3))
                    }));
                    self.1
                        .push(format!("unshielded sleep unwound: {}", again.is_err()));
                }
            }
            let guard = Cleanup(cx, tr);
            guard.0.sleep(secs(100));
        })
        .unwrap();
    s.spawn(move |cx| {
        cx.sleep(secs(1));
        cx.cancel(victim);
        let r = cx.join(victim);
        assert!(matches!(r, JoinResult::Cancelled), "{r:?}");
        cx.now()
    })
    .unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec!["cleaned up at 4s", "unshielded sleep unwound: true"]
    );
    assert_eq!(s.outcome(victim).map(|o| o.label()), Some("cancelled"));
}

#[test]
fn cancelling_a_task_reaches_code_inside_its_scopes_and_it_ends_cancelled() {
    let s = vsched();
    let (dropped, guard) = drop_flag();
    let victim = s
        .spawn(move |cx| {
            let _guard = guard;
            cx.move_on_after(secs(100), |cx| cx.sleep(secs(50)));
            "not reached"
        })
        .unwrap();
    s.spawn(move |cx| {
        cx.sleep(secs(1));
        cx.cancel(victim)
    })
    .unwrap();
    s.run();
    assert_eq!(s.outcome(victim).map(|o| o.label()), Some("cancelled"));
    assert!(is_set(&dropped));
    assert_eq!(s.now(), secs(1));
}

#[test]
fn a_scope_of_another_task_can_be_cancelled_and_a_join_in_it_gives_up() {
    let s = vsched();
    let slot: Arc<Mutex<Option<ScopeRef>>> = Arc::default();
    let published = slot.clone();
    let trace = Trace::new();
    let tr = trace.clone();
    let waiter = s
        .spawn(move |cx| {
            let slow = child(cx, |cx| {
                cx.sleep(Duration::from_secs(30));
                "slow done"
            });
            let r = cx.scope(ScopeOptions::new(), |cx, me| {
                *published.lock().unwrap() = Some(me);
                cx.join(slow)
            });
            tr.push(format!(
                "join in scope gave {:?} at {:?}",
                r.is_some(),
                cx.now()
            ));
            // The child was not cancelled with the scope: join it for real.
            let done = cx.join(slow);
            tr.push(format!(
                "then joined {:?} at {:?}",
                done.value().and_then(|v| v.downcast_ref::<&str>().copied()),
                cx.now()
            ));
        })
        .unwrap();
    let canceller = s
        .spawn(move |cx| {
            cx.sleep(secs(2));
            let scope = slot.lock().unwrap().expect("the scope was published");
            assert_eq!(scope.task, waiter);
            assert!(cx.cancel_scope(scope));
            let status = cx
                .scope_status(scope)
                .expect("still open until the waiter runs");
            assert!(status.cancelled);
        })
        .unwrap();
    s.run();
    // The canceller's asserts ran in a task: its outcome tells.
    assert_eq!(s.outcome(canceller).map(|o| o.label()), Some("done"));
    assert_eq!(
        trace.get(),
        vec![
            "join in scope gave false at 2s",
            "then joined Some(\"slow done\") at 30s"
        ]
    );
}

#[test]
fn deadlines_move_and_an_effective_deadline_stops_at_a_shield() {
    let s = vsched();
    let trace = Trace::new();
    let tr = trace.clone();
    s.spawn(move |cx| {
        assert_eq!(cx.effective_deadline(), None);
        let r = cx.scope(ScopeOptions::new().deadline(secs(10)), |cx, me| {
            assert_eq!(cx.effective_deadline(), Some(secs(10)));
            cx.shield(|cx| assert_eq!(cx.effective_deadline(), None));
            // Shielding the scope itself, then lifting the shield.
            let st = cx.set_scope_shield(me, true).expect("the scope is open");
            assert!(st.shield && !st.cancelled);
            assert_eq!(st.deadline, Some(secs(10)));
            assert_eq!(cx.scope_status(me), Some(st));
            let st = cx.set_scope_shield(me, false).expect("the scope is open");
            assert!(!st.shield);
            assert_eq!(cx.effective_deadline(), Some(secs(10)));
            // Pushed back, then brought forward.
            let st = cx.set_scope_deadline(me, Some(secs(20))).unwrap();
            assert_eq!(st.deadline, Some(secs(20)));
            cx.sleep(secs(15));
            tr.push(format!("slept past the old deadline, at {:?}", cx.now()));
            cx.set_scope_deadline(me, Some(secs(16)));
            cx.sleep(secs(100));
        });
        tr.push(format!("{r:?} at {:?}", cx.now()));
        // A deadline already past cancels at once.
        let past = cx.move_on_at(secs(1), |cx| cx.sleep(secs(1)));
        tr.push(format!("{past:?} at {:?}", cx.now()));
        // Errors for scopes that are not open.
        let me = cx.tid();
        let gone = ScopeRef {
            task: me,
            scope: ScopeId::from_raw(999),
        };
        assert!(!cx.cancel_scope(gone));
        assert_eq!(cx.set_scope_shield(gone, true), None);
        assert_eq!(cx.scope_status(gone), None);
    })
    .unwrap();
    s.run();
    assert_eq!(
        trace.get(),
        vec![
            "slept past the old deadline, at 15s",
            "None at 16s",
            "None at 16s"
        ]
    );
}

#[test]
fn a_shield_keeps_its_own_deadline() {
    let s = vsched();
    let t = s
        .spawn(move |cx| {
            cx.scope(ScopeOptions::new().shielded().deadline(secs(3)), |cx, _| {
                cx.sleep(secs(10))
            })
            .is_none()
                && cx.now() == secs(3)
        })
        .unwrap();
    s.run();
    assert!(value_of::<bool>(&s, t));
}

#[test]
fn a_shutdown_deadline_breaks_through_a_shield() {
    let s = vsched();
    let (dropped, guard) = drop_flag();
    let stubborn = s
        .spawn(move |cx| {
            let _guard = guard;
            // Would sleep through the shutdown's cancellation.
            cx.shield(|cx| cx.sleep(Duration::from_secs(1000)))
        })
        .unwrap();
    s.spawn(|cx| {
        cx.sleep(secs(1));
        cx.shutdown(secs(5)).unwrap()
    })
    .unwrap();
    s.run();
    assert_eq!(s.outcome(stubborn).map(|o| o.label()), Some("cancelled"));
    assert!(is_set(&dropped));
    assert_eq!(s.now(), secs(6));
}

#[test]
fn scope_calls_from_outside_a_task_are_refused() {
    let s = vsched();
    assert_eq!(
        s.enter_scope(ScopeOptions::new()),
        Err(SyscallError::NotInTask)
    );
    let ghost = ScopeRef {
        task: TaskId::from_raw(77),
        scope: ScopeId::from_raw(1),
    };
    assert_eq!(
        s.cancel_scope(ghost),
        Err(SyscallError::UnknownTask(TaskId::from_raw(77)))
    );
}

/// Scopes with deadlines, shields and cross-task cancels on the virtual
/// clock give the same PAL run after run.
#[test]
fn scopes_are_deterministic_under_the_virtual_clock() {
    fn workload() -> (String, Duration) {
        let s = vsched();
        let log = logged(&s);
        for i in 0..12u64 {
            s.spawn(move |cx| {
                for step in 0..4u64 {
                    let r = cx.move_on_after(ms(3 + (i * 7 + step) % 11), |cx| {
                        cx.sleep(ms((i * 13 + step * 5) % 17));
                        cx.shield(|cx| cx.sleep(ms(1)));
                    });
                    cx.log(format!("task {i} step {step}: {}", r.is_some()));
                }
            })
            .unwrap();
        }
        s.run();
        (log.to_pal(), s.now())
    }
    let first = workload();
    assert!(first.0.contains("step 3"));
    assert_eq!(first, workload());
}

/// A scope left before its deadline leaves its timer behind; when it fires
/// after the task has ended and its record is gone (no retention window),
/// it finds nothing to do.
#[test]
fn a_deadline_timer_outliving_its_task_does_nothing() {
    let s = Scheduler::builder()
        .virtual_clock()
        .retain_finished(0)
        .build()
        .unwrap();
    let t = s.spawn(|cx| cx.move_on_after(ms(10), |_| 1u8)).unwrap();
    // Keeps the run going past the stale timer.
    let sleeper = s.spawn(|cx| cx.sleep(ms(20))).unwrap();
    let order = s.run();
    assert_eq!(order, vec![t, sleeper]);
    assert_eq!(s.now(), ms(20));
    assert_eq!(s.state(t), None, "the record is freed at the end");
}
