//! The daemon's system tasks: the WAL flusher and the metrics sampler are
//! kernel tasks at priority 0, and keep working while jobs at priority 255
//! keep the kernel busy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TempDir;
use tiffany_daemon::job::{JobRecord, JobState};
use tiffany_daemon::store::{JobStore, WalStore, log_path};
use tiffany_daemon::system::System;
use tiffany_scheduler::{Handle, Scheduler, SpawnOptions, Spawner};

fn kernel() -> (Handle, std::thread::JoinHandle<()>) {
    tiffany_daemon::server::start_kernel(None).unwrap()
}

fn job(id: u64) -> JobRecord {
    JobRecord {
        id,
        kind: "sleep".into(),
        args: r#"{"seconds": 0}"#.into(),
        priority: 10,
        after: vec![],
        key: None,
        timeout: None,
        state: JobState::Queued,
        attempts: 0,
        exit_code: None,
        result: None,
        error: None,
        created_at: 1.8e9,
        started_at: None,
        finished_at: None,
        output: None,
    }
}

/// Runs `f` with the scheduler, on its thread; returns what it returned.
fn with<T: Send + 'static>(kernel: &Handle, f: impl FnOnce(&Scheduler) -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    kernel
        .with_scheduler(move |s| {
            let _ = tx.send(f(s));
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn the_flusher_and_the_metrics_sampler_run_at_priority_0_ahead_of_busy_jobs() {
    let dir = TempDir::new("system");
    let (store, _, _) = WalStore::open(dir.path(), false, u64::MAX).unwrap();
    let store = Arc::new(store);
    let (kernel, thread) = kernel();
    let system = Arc::new(System::start(&kernel, store.clone(), Duration::from_millis(5)).unwrap());

    // Both are kernel tasks, named, at priority 0.
    let tasks = system.tasks;
    let (flusher, metrics) = with(&kernel, move |s| {
        (
            s.info(tasks.flusher).unwrap(),
            s.info(tasks.metrics).unwrap(),
        )
    });
    assert_eq!(flusher.priority, 0);
    assert_eq!(flusher.name.as_deref(), Some("wal-flusher"));
    assert_eq!(metrics.priority, 0);
    assert_eq!(metrics.name.as_deref(), Some("metrics"));

    // Jobs at priority 255 that never stop asking for the kernel.
    let stop = Arc::new(AtomicBool::new(false));
    for i in 0..4 {
        let stop = stop.clone();
        kernel
            .spawn_with(
                SpawnOptions::priority(255).with_name(format!("busy-{i}")),
                move |cx| {
                    while !stop.load(Ordering::Relaxed) {
                        cx.yield_now();
                    }
                },
            )
            .unwrap();
    }

    // The sampler keeps sampling...
    let before = system.samples();
    let deadline = Instant::now() + Duration::from_secs(20);
    while system.samples() < before + 3 {
        assert!(Instant::now() < deadline, "the metrics task starved");
        std::thread::sleep(Duration::from_millis(5));
    }
    let m = system.metrics().expect("a sample");
    assert!(m.to_prometheus().contains("tiffany_"), "a kernel sample");

    // ...and the flusher makes records durable, one sync for a batch.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let syncs_before = store.stats().fsyncs;
    rt.block_on(async {
        let mut waits = Vec::new();
        for id in 1..=8 {
            let ticket = store.record_submitted(&job(id)).unwrap();
            let system = system.clone();
            waits.push(tokio::spawn(async move { system.durable(ticket).await }));
        }
        for w in waits {
            tokio::time::timeout(Duration::from_secs(20), w)
                .await
                .expect("the flusher starved")
                .unwrap()
                .unwrap();
        }
    });
    let syncs = store.stats().fsyncs - syncs_before;
    assert!((1..8).contains(&syncs), "{syncs} syncs for 8 waits");
    let on_disk = tiffany_wal::read(log_path(dir.path()), &tiffany_wal::Options::new()).unwrap();
    assert_eq!(on_disk.records.len(), 8, "every record reached the file");

    stop.store(true, Ordering::Relaxed);
    kernel.shutdown(Duration::from_secs(5)).unwrap();
    thread.join().unwrap();

    // With the kernel gone, waiting for durability still works (on a thread).
    rt.block_on(async {
        let ticket = store.record_submitted(&job(9)).unwrap();
        system.durable(ticket).await.unwrap();
    });
    let on_disk = tiffany_wal::read(log_path(dir.path()), &tiffany_wal::Options::new()).unwrap();
    assert_eq!(on_disk.records.len(), 9);
}

#[test]
fn the_kernel_keeps_no_copy_of_a_finished_jobs_output() {
    let (kernel, thread) = kernel();
    let baseline = with(&kernel, |s| s.task_records());
    // 50 tasks that each end with 1 MiB of "output", each end heard by a
    // callback, as the engine hears of a job's end.
    let (tx, rx) = mpsc::channel();
    with(&kernel, move |s| {
        for _ in 0..50 {
            let task = s.spawn(|_cx| vec![7u8; 1 << 20]).unwrap();
            let tx = tx.clone();
            s.on_task_end(task, move |_, outcome| {
                let _ = tx.send(matches!(outcome, tiffany_scheduler::Outcome::Done(_)));
            });
        }
    });
    for _ in 0..50 {
        assert!(rx.recv_timeout(Duration::from_secs(20)).unwrap());
    }
    // Their records (and the megabytes in them) are gone once heard of.
    let records = with(&kernel, |s| s.task_records());
    assert_eq!(records, baseline);
    kernel.shutdown(Duration::from_secs(5)).unwrap();
    thread.join().unwrap();
}
