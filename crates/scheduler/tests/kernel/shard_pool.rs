//! The sharded executor: every task runs exactly once under stealing, joins
//! across shards, shutdown of the whole pool, per-shard telemetry.

use crate::common::WATCHDOG;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tiffany_scheduler::{
    Executor, JoinResult, Outcome, Scheduler, ShardPool, ShutdownResult, SpawnOptions, Spawner,
    TaskId,
};

/// How long a task waits for its peer to show up on the other shard before
/// giving up (so a broken pool fails an assertion instead of hanging); the
/// peer shows up within milliseconds when stealing works.
const RENDEZVOUS: Duration = Duration::from_secs(5);

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

#[test]
fn every_task_runs_exactly_once_and_an_idle_shard_steals() {
    let pool = ShardPool::new(2);
    let runs: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let threads_seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    // The first task keeps shard 0 busy (it yields until another thread has
    // run a task), so shard 1 can only get work by stealing from shard 0's
    // queue: every task is keyed to shard 0.
    let seen = threads_seen.clone();
    let r = runs.clone();
    pool.spawn_with(SpawnOptions::default().keyed(0), move |cx| {
        seen.lock().unwrap().insert(thread_name());
        // Never hold a lock across a system call: the task may be
        // throttled there, and the next task on this thread would block on it.
        let tid = cx.tid().get();
        r.lock().unwrap().push((tid, thread_name()));
        // Bounded: without stealing this fails below instead of hanging.
        let started = std::time::Instant::now();
        while seen.lock().unwrap().len() < 2 && started.elapsed() < RENDEZVOUS {
            cx.yield_now();
        }
    })
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..500 {
        let seen = threads_seen.clone();
        let r = runs.clone();
        ids.push(
            pool.spawn_with(SpawnOptions::default().keyed(0), move |cx| {
                seen.lock().unwrap().insert(thread_name());
                // Never hold a lock across a system call: the task may be
                // throttled there, and the next task on this thread would block on it.
                let tid = cx.tid().get();
                r.lock().unwrap().push((tid, thread_name()));
            })
            .unwrap(),
        );
    }
    let finished = pool.run();
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 501);
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for (id, _) in runs.iter() {
        *counts.entry(*id).or_default() += 1;
    }
    assert!(counts.values().all(|&c| c == 1), "a task ran twice");
    assert_eq!(finished.len(), 501);
    assert_eq!(finished.iter().collect::<HashSet<_>>().len(), 501);
    for id in ids {
        assert!(counts.contains_key(&id.get()));
    }
    let on_shard_1 = runs.iter().filter(|(_, t)| t == "tiffany-shard-1").count();
    assert!(on_shard_1 > 0, "shard 1 never stole a task");
}

#[test]
fn ids_are_unique_across_shards() {
    let pool = ShardPool::new(2);
    let ids: Vec<TaskId> = (0..100)
        .map(|i| {
            pool.spawn_with(SpawnOptions::default().keyed(i), |cx| cx.tid())
                .unwrap()
        })
        .collect();
    pool.run();
    for id in &ids {
        match pool.outcome(*id) {
            Some(Outcome::Done(v)) => assert_eq!(v.downcast_ref::<TaskId>(), Some(id)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 100);
}

#[test]
fn joins_across_shards() {
    let pool = ShardPool::new(2);
    // Two tasks that each yield until both shards run one of them: a shard with
    // a ready task takes no more work, so each shard holds exactly one.
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let rendezvous = |seen: Arc<Mutex<HashSet<String>>>,
                      cx: &mut tiffany_scheduler::TaskContext<'_>| {
        seen.lock().unwrap().insert(thread_name());
        let started = std::time::Instant::now();
        while seen.lock().unwrap().len() < 2 && started.elapsed() < RENDEZVOUS {
            cx.yield_now();
        }
    };
    let s = seen.clone();
    let target = pool
        .spawn_with(SpawnOptions::default().keyed(1), move |cx| {
            rendezvous(s, cx);
            for _ in 0..10 {
                cx.yield_now();
            }
            (thread_name(), 42u32)
        })
        .unwrap();
    let s = seen.clone();
    let joiner = pool
        .spawn_with(SpawnOptions::default().keyed(0), move |cx| {
            rendezvous(s, cx);
            let me = thread_name();
            // Bounded: a join whose answer is lost (planted bug: the
            // remote outcome never sent back) fails instead of hanging.
            match cx.join_timeout(target, RENDEZVOUS) {
                JoinResult::Success(v) => {
                    let (their_thread, n) = v.downcast_ref::<(String, u32)>().unwrap().clone();
                    assert_ne!(their_thread, me, "the join did not cross shards");
                    n
                }
                other => panic!("{other:?}"),
            }
        })
        .unwrap();
    pool.run();
    assert_eq!(pool.value(joiner).unwrap().downcast_ref::<u32>(), Some(&42));
}

#[test]
fn joining_a_finished_remote_task_and_failures_cross_shards() {
    let pool = ShardPool::new(2);
    let failing = pool
        .spawn_with(SpawnOptions::default().keyed(1), |_| -> u32 {
            panic!("remote boom")
        })
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let joiner = pool
        .spawn_with(SpawnOptions::default().keyed(0), move |cx| {
            let r = cx.join_timeout(failing, RENDEZVOUS);
            d.fetch_add(1, Ordering::SeqCst);
            match r {
                JoinResult::Failed(e) => e.message().to_owned(),
                other => panic!("{other:?}"),
            }
        })
        .unwrap();
    pool.run();
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert_eq!(
        pool.value(joiner)
            .unwrap()
            .downcast_ref::<String>()
            .map(String::as_str),
        Some("remote boom")
    );
    assert!(matches!(pool.outcome(failing), Some(Outcome::Failed(_))));
}

#[test]
fn cancel_across_shards() {
    let pool = ShardPool::new(2);
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_rx = Arc::new(Mutex::new(started_rx));
    let sleeper = pool
        .spawn_with(SpawnOptions::default().keyed(1), move |cx| {
            started_tx.send(()).unwrap();
            cx.sleep(Duration::from_secs(3600));
        })
        .unwrap();
    // Every wait bounded: a lost cancel or join answer fails, not hangs.
    let canceller = pool
        .spawn_with(SpawnOptions::default().keyed(0), move |cx| {
            let begun = std::time::Instant::now();
            while started_rx.lock().unwrap().try_recv().is_err() {
                assert!(begun.elapsed() < RENDEZVOUS, "the sleeper never started");
                cx.yield_now();
            }
            assert!(cx.cancel(sleeper));
            let r = cx.join_timeout(sleeper, RENDEZVOUS);
            assert!(matches!(r, JoinResult::Cancelled), "{r:?}");
        })
        .unwrap();
    pool.run();
    assert!(matches!(pool.outcome(sleeper), Some(Outcome::Cancelled)));
    assert!(
        matches!(pool.outcome(canceller), Some(Outcome::Done(_))),
        "{:?}",
        pool.outcome(canceller)
    );
}

#[test]
fn shutdown_of_the_whole_pool() {
    let pool = ShardPool::new(2);
    let handle = pool.handle();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let mut sleepers = Vec::new();
    for key in 0..2 {
        let tx = started_tx.clone();
        sleepers.push(
            pool.spawn_with(SpawnOptions::default().keyed(key), move |cx| {
                tx.send(()).unwrap();
                // Bounded: a shutdown that was refused fails the asserts
                // below once these end, instead of hanging the run.
                cx.sleep(Duration::from_secs(10));
            })
            .unwrap(),
        );
    }
    let stopper = std::thread::spawn(move || {
        started_rx.recv_timeout(WATCHDOG).expect("a task started");
        started_rx.recv_timeout(WATCHDOG).expect("a task started");
        let result = handle.shutdown(Duration::from_millis(20));
        let refused = handle.spawn(|_| ()).unwrap_err();
        (result, refused)
    });
    pool.run();
    let (result, refused) = stopper.join().unwrap();
    assert_eq!(result, Ok(ShutdownResult::Timeout));
    assert_eq!(refused, tiffany_scheduler::SpawnError::ShuttingDown);
    for s in sleepers {
        assert!(matches!(pool.outcome(s), Some(Outcome::Cancelled)));
    }
}

#[test]
fn metrics_carry_a_shard_label() {
    // Bounded: a shard that never answers the reader (or never lets its
    // tasks see the go) fails the test instead of hanging it.
    let (snapshots, text) = crate::common::within(WATCHDOG, || {
        let pool = ShardPool::new(2);
        let (tx, rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Arc::new(Mutex::new(go_rx));
        for key in 0..2 {
            let tx = tx.clone();
            let go = go_rx.clone();
            pool.spawn_with(SpawnOptions::default().keyed(key), move |cx| {
                tx.send(()).unwrap();
                while go.lock().unwrap().try_recv().is_err() {
                    cx.yield_now();
                }
            })
            .unwrap();
        }
        // The pool's own accessors, from another thread while it runs.
        std::thread::scope(|scope| {
            let pool = &pool;
            let reader = scope.spawn(move || {
                rx.recv_timeout(WATCHDOG).expect("a task started");
                rx.recv_timeout(WATCHDOG).expect("a task started");
                let snapshots = pool.metrics();
                let text = pool.prometheus();
                go_tx.send(()).unwrap();
                go_tx.send(()).unwrap();
                (snapshots, text)
            });
            pool.run();
            reader.join().unwrap()
        })
    });
    assert_eq!(snapshots.len(), 2);
    for (shard, snap) in snapshots.iter().enumerate() {
        assert_eq!(snap.labels, vec![("shard".to_owned(), shard.to_string())]);
        assert_eq!(snap.live_tasks, 1);
    }
    assert!(
        text.contains("tiffany_scheduler_live_tasks{shard=\"0\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tiffany_scheduler_live_tasks{shard=\"1\"} 1"),
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE tiffany_scheduler_steps_total counter")
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn the_executor_trait_drives_a_scheduler_or_a_pool() {
    fn squares(e: &impl Executor) -> usize {
        for i in 0..10u64 {
            e.spawn(move |_| i * i).unwrap();
        }
        e.spawn_with(SpawnOptions::priority(0), |_| ()).unwrap();
        e.run().len()
    }
    assert_eq!(squares(&Scheduler::new()), 11);
    assert_eq!(squares(&ShardPool::new(2)), 11);
}

/// A join with a timeout of a task on another shard times out (planted bug:
/// a cross-shard `join_timeout` that never timed out).
#[test]
fn a_join_timeout_across_shards_times_out() {
    let pool = ShardPool::new(2);
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Each task yields until both shards run one of them (a shard with a
    // ready task takes no more work), so the join crosses shards.
    let rendezvous = |seen: &Mutex<HashSet<String>>,
                      cx: &mut tiffany_scheduler::TaskContext<'_>| {
        seen.lock().unwrap().insert(thread_name());
        let started = std::time::Instant::now();
        while seen.lock().unwrap().len() < 2 && started.elapsed() < RENDEZVOUS {
            cx.yield_now();
        }
    };
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let s = seen.clone();
    let target = pool
        .spawn_with(SpawnOptions::default().keyed(1), move |cx| {
            rendezvous(&s, cx);
            // Runs until the joiner has timed out (bounded by the watchdog).
            let started = std::time::Instant::now();
            while release_rx.lock().unwrap().try_recv().is_err() && started.elapsed() < RENDEZVOUS {
                cx.sleep(Duration::from_millis(1));
            }
            (thread_name(), 7u32)
        })
        .unwrap();
    let s = seen.clone();
    let joiner = pool
        .spawn_with(SpawnOptions::default().keyed(0), move |cx| {
            rendezvous(&s, cx);
            let r = cx.join_timeout(target, Duration::from_millis(20));
            let _ = release_tx.send(());
            (thread_name(), matches!(r, JoinResult::Timeout))
        })
        .unwrap();
    pool.run();
    let (joiner_thread, timed_out) = pool
        .value(joiner)
        .unwrap()
        .downcast_ref::<(String, bool)>()
        .unwrap()
        .clone();
    let (target_thread, n) = pool
        .value(target)
        .unwrap()
        .downcast_ref::<(String, u32)>()
        .unwrap()
        .clone();
    assert_ne!(
        joiner_thread, target_thread,
        "the join did not cross shards"
    );
    assert!(timed_out, "the join never timed out");
    assert_eq!(n, 7);
}
