//! Properties of the scheduler over random programs, on the virtual clock:
//! every task ends exactly once, nothing runs after its end, priorities are
//! respected, and the same program always gives the same events.

use std::collections::HashMap;
use std::sync::Once;
use std::time::Duration;

use crate::common::*;
use proptest::prelude::*;
use tiffany_scheduler::*;

/// What a task in a random program does, step by step.
#[derive(Clone, Debug)]
enum Op {
    Yield,
    Sleep(u8),
    /// Join an earlier top-level task (never a later one: no deadlocks).
    Join(usize),
    JoinTimeout(usize, u8),
    /// Cancel any top-level task, itself included.
    Cancel(usize),
    Log,
    Now,
    /// Spawn a child that sleeps this long, and maybe join it.
    Spawn(u8, bool),
    Panic,
}

#[derive(Clone, Debug)]
struct TaskSpec {
    priority: u8,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Yield),
        3 => (0u8..20).prop_map(Op::Sleep),
        2 => any::<usize>().prop_map(Op::Join),
        2 => (any::<usize>(), 0u8..15).prop_map(|(t, d)| Op::JoinTimeout(t, d)),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => Just(Op::Log),
        1 => Just(Op::Now),
        2 => (0u8..10, any::<bool>()).prop_map(|(d, j)| Op::Spawn(d, j)),
        1 => Just(Op::Panic),
    ]
}

fn program() -> impl Strategy<Value = Vec<TaskSpec>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![0u8, 5, 10, 10, 10, 128, 255]),
            prop::collection::vec(op(), 0..8),
        )
            .prop_map(|(priority, ops)| TaskSpec { priority, ops }),
        1..12,
    )
}

const PLANNED: &str = "planned failure";

/// Keeps the planned panics of random programs out of the test output.
fn quiet_planned_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            let planned = message.is_some_and(|m| m.starts_with(PLANNED));
            if !planned {
                default(info);
            }
        }));
    });
}

struct Outcome {
    events: Vec<TaskEvent>,
    pal: String,
    order: Vec<TaskId>,
    live_after: usize,
}

fn run_program(specs: &[TaskSpec]) -> Outcome {
    quiet_planned_panics();
    let s = Scheduler::builder()
        .virtual_clock()
        // Small quantum so busy stretches get throttled too.
        .accounting(Accounting::PerStep(ms(1)))
        .quantum(ms(3))
        .build()
        .unwrap();
    let log = logged(&s);
    let n = specs.len();
    for (index, spec) in specs.iter().enumerate() {
        let ops = spec.ops.clone();
        // Top-level tasks are spawned first, so task `k` has id `k + 1`.
        let id = |k: usize| TaskId::from_raw(k as u64 + 1);
        let spawned = s
            .spawn_with(SpawnOptions::priority(spec.priority), move |cx| {
                for op in ops {
                    match op {
                        Op::Yield => cx.yield_now(),
                        Op::Sleep(d) => cx.sleep(ms(d as u64)),
                        Op::Join(k) if index > 0 => {
                            cx.join(id(k % index));
                        }
                        Op::JoinTimeout(k, d) if index > 0 => {
                            cx.join_timeout(id(k % index), ms(d as u64));
                        }
                        Op::Join(_) | Op::JoinTimeout(..) => cx.yield_now(),
                        Op::Cancel(k) => {
                            cx.cancel(id(k % n));
                        }
                        Op::Log => cx.log(format!("task {index}")),
                        Op::Now => {
                            cx.now();
                        }
                        Op::Spawn(d, join) => {
                            let c = cx.spawn(move |cx| cx.sleep(ms(d as u64))).unwrap();
                            if join {
                                cx.join(c);
                            }
                        }
                        Op::Panic => panic!("{PLANNED} in task {index}"),
                    }
                }
                index
            })
            .unwrap();
        assert_eq!(spawned, id(index));
    }
    let order = s.run();
    Outcome {
        events: log.events(),
        pal: log.to_pal(),
        order,
        live_after: s.live_tasks(),
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_spawned_task_finishes_exactly_once(specs in program()) {
        let out = run_program(&specs);
        let spawned: Vec<TaskId> = out
            .events
            .iter()
            .filter(|e| e.kind.name() == "spawned")
            .map(|e| e.task.unwrap())
            .collect();
        prop_assert!(spawned.len() >= specs.len());
        let mut ends: HashMap<TaskId, usize> = HashMap::new();
        for e in &out.events {
            if is_terminal(&e.kind) {
                *ends.entry(e.task.unwrap()).or_default() += 1;
            }
        }
        for id in &spawned {
            prop_assert_eq!(ends.get(id).copied(), Some(1), "task {} ends once", id);
        }
        prop_assert_eq!(ends.len(), spawned.len());
        // run() reports each task once, in the order of the terminal events.
        let terminal_order: Vec<TaskId> = out
            .events
            .iter()
            .filter(|e| is_terminal(&e.kind))
            .map(|e| e.task.unwrap())
            .collect();
        prop_assert_eq!(&out.order, &terminal_order);
        let mut sorted = out.order.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), spawned.len());
        prop_assert_eq!(out.live_after, 0);
    }

    #[test]
    fn nothing_is_resumed_after_it_finished(specs in program()) {
        let out = run_program(&specs);
        let mut ended: HashMap<TaskId, usize> = HashMap::new();
        for (i, e) in out.events.iter().enumerate() {
            let Some(task) = e.task else { continue };
            if let Some(at) = ended.get(&task) {
                prop_assert!(
                    false,
                    "task {} has event {} at {} after its end at {}",
                    task, e.kind.name(), i, at
                );
            }
            if is_terminal(&e.kind) {
                ended.insert(task, i);
            }
        }
        // And nothing runs between a resume and that task's own park or end:
        // the events of a resume belong to the task that was resumed.
        let mut current: Option<TaskId> = None;
        for e in &out.events {
            match e.kind.name() {
                "running" => current = e.task,
                "yield" | "sleep" | "join" | "log" | "throttled" | "done" | "failed" => {
                    prop_assert_eq!(e.task, current, "{} outside its own step", e.kind.name());
                }
                _ => {}
            }
        }
    }

    #[test]
    fn same_program_same_events(specs in program()) {
        let first = run_program(&specs);
        let second = run_program(&specs);
        prop_assert_eq!(&first.order, &second.order);
        prop_assert_eq!(first.events, second.events);
        prop_assert_eq!(first.pal, second.pal);
    }

    #[test]
    fn one_step_tasks_finish_in_priority_then_spawn_order(
        priorities in prop::collection::vec(any::<u8>(), 1..40)
    ) {
        let s = vsched();
        let ids: Vec<TaskId> = priorities
            .iter()
            .map(|&p| s.spawn_with(SpawnOptions::priority(p), |_cx| ()).unwrap())
            .collect();
        let order = s.run();
        let mut expected: Vec<(u8, usize)> =
            priorities.iter().copied().zip(0..).collect();
        expected.sort();
        let expected: Vec<TaskId> = expected.into_iter().map(|(_, i)| ids[i]).collect();
        prop_assert_eq!(order, expected);
    }

    #[test]
    fn no_lower_priority_task_runs_while_a_higher_one_is_ready(
        tasks in prop::collection::vec((any::<u8>(), 0usize..5, any::<bool>()), 1..30)
    ) {
        // Tasks only yield or make calls answered at once (never block), so
        // every task is ready from its spawn to its end: the resumes must go
        // by priority, never back up.
        let s = Scheduler::builder()
            .virtual_clock()
            .accounting(Accounting::PerStep(ms(1)))
            .quantum(ms(2))
            .build()
            .unwrap();
        let log = logged(&s);
        let mut priority_of = HashMap::new();
        for &(p, steps, busy) in &tasks {
            let id = s
                .spawn_with(SpawnOptions::priority(p), move |cx| {
                    for _ in 0..steps {
                        if busy {
                            cx.now();
                        } else {
                            cx.yield_now();
                        }
                    }
                })
                .unwrap();
            priority_of.insert(id, p);
        }
        s.run();
        let resumed: Vec<u8> = log
            .events()
            .iter()
            .filter(|e| e.kind == EventKind::Running)
            .map(|e| priority_of[&e.task.unwrap()])
            .collect();
        prop_assert!(
            resumed.windows(2).all(|w| w[0] <= w[1]),
            "resumes by priority: {:?}", resumed
        );
        prop_assert_eq!(s.now(), Duration::ZERO);
    }
}
