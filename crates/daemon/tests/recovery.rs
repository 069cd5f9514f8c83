//! Durability: crash recovery, drain, a damaged log, the version-1 fixture.

mod common;

use std::time::Duration;

use common::*;
use tiffany_daemon::proto::{self, JobState};
use tiffany_daemon::store::{Replayed, log_path};

async fn all_jobs(c: &mut tiffany_daemon::client::UnixClient) -> Vec<proto::Job> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list(proto::ListRequest {
                page_token: token,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_job() {
    let dir = TempDir::new("crash");
    let mut d = Daemon::start(dir.path(), &["--max-running", "4"]);
    let c = d.client().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..(1000 / 16 + 1) {
                ids.push(c.submit(sleep(0.005)).await.unwrap().into_inner().id);
            }
            ids
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort();
    assert!(acked.len() >= 1000);
    let mut c = c.clone();
    let before = all_jobs(&mut c).await;
    d.kill9();
    let ended_before: Vec<&proto::Job> = before
        .iter()
        .filter(|j| state(j) == JobState::Succeeded)
        .collect();
    assert!(
        ended_before.len() < acked.len(),
        "the kill came while jobs ran"
    );

    let d = Daemon::start(dir.path(), &["--max-running", "4"]);
    let mut c = d.client().await;
    let after = all_jobs(&mut c).await;
    let ids: Vec<u64> = after.iter().map(|j| j.id).collect();
    for id in &acked {
        assert!(ids.contains(id), "acknowledged job {id} lost");
    }
    for j in &ended_before {
        let now = after.iter().find(|a| a.id == j.id).unwrap();
        assert_eq!(now.state, j.state, "job {} ended before the crash", j.id);
        assert_eq!(
            now.finished_at, j.finished_at,
            "job {} never runs again",
            j.id
        );
        assert_eq!(now.attempts, 1);
    }
    for id in &acked {
        let j = wait(&mut c, *id).await;
        assert_eq!(state(&j), JobState::Succeeded, "{j:?}");
        assert!(j.attempts >= 1);
    }
    let next = c.submit(sleep(0.0)).await.unwrap().into_inner();
    assert!(next.id > *acked.last().unwrap(), "ids keep increasing");
}

#[tokio::test]
async fn sigterm_drains_closes_the_log_and_interrupted_jobs_run_again() {
    let dir = TempDir::new("drain");
    let mut d = Daemon::start(dir.path(), &["--grace", "0.5"]);
    let mut c = d.client().await;
    let long = c.submit(exec(&["sleep", "30"])).await.unwrap().into_inner();
    let short = c.submit(sleep(0.1)).await.unwrap().into_inner();
    // Both running before the signal.
    until_health(&mut c, |h| h.running >= 2).await;
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    assert!(!d.socket.exists(), "socket removed");
    assert!(d.log_text().contains("job log flushed and closed"));
    let replay = tiffany_wal::read(log_path(&d.data), &tiffany_wal::Options::new()).unwrap();
    assert!(replay.dropped.is_none(), "the log was closed cleanly");

    let mut d = Daemon::start(dir.path(), &[]);
    let mut c = d.client().await;
    let short = c
        .get(proto::GetRequest { id: short.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&short),
        JobState::Succeeded,
        "finished within the grace"
    );
    assert_eq!(short.attempts, 1);
    let long = c
        .get(proto::GetRequest { id: long.id })
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(state(&long), JobState::Queued | JobState::Running),
        "{long:?}"
    );
    // It runs again (shown running once its second start is durable).
    let long = until_running(&mut c, long.id).await;
    assert_eq!(
        long.attempts, 2,
        "interrupted, not cancelled: it runs again"
    );
    c.cancel(proto::CancelRequest { id: long.id })
        .await
        .unwrap();
    assert_eq!(state(&wait(&mut c, long.id).await), JobState::Cancelled);
    // Shutdown over gRPC drains the same way.
    c.shutdown(proto::ShutdownRequest {
        grace_seconds: Some(1.0),
    })
    .await
    .unwrap();
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[tokio::test]
async fn a_damaged_log() {
    let dir = TempDir::new("damage");
    let mut d = Daemon::start(dir.path(), &[]);
    let mut c = d.client().await;
    for _ in 0..5 {
        let j = c.submit(sleep(0.0)).await.unwrap().into_inner();
        wait(&mut c, j.id).await;
    }
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let path = log_path(&d.data);
    let good = std::fs::read(&path).unwrap();

    // A torn tail: garbage after the last record is cut off with a warning.
    let mut torn = good.clone();
    torn.extend_from_slice(&[0xAB; 37]);
    std::fs::write(&path, &torn).unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    assert!(
        d.wait_line("torn tail", Duration::from_secs(5)).is_some(),
        "{}",
        d.log_text()
    );
    assert_eq!(
        d.client()
            .await
            .list(proto::ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        5
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));

    // A corrupt record in the middle stops start-up, unless --repair.
    let mut bad = good.clone();
    bad[24 + 20 + 10] ^= 0xFF;
    std::fs::write(&path, &bad).unwrap();
    let r = Daemon::try_start(dir.path(), &[]).err().expect("refused");
    assert_eq!(r.status.code(), Some(1));
    assert!(
        r.stderr.contains("corrupt") && r.stderr.contains("--repair"),
        "{}",
        r.stderr
    );
    let d = Daemon::start(dir.path(), &["--repair"]);
    assert!(
        d.wait_line("repair", Duration::from_secs(5)).is_some(),
        "{}",
        d.log_text()
    );
    d.client()
        .await
        .health(proto::HealthRequest {})
        .await
        .unwrap();
}

/// A log written by the first version of the daemon (record version 1) is
/// read by this one: keep this test passing when the record format changes.
#[tokio::test]
async fn reads_the_version_1_fixture() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jobs-v1.wal");
    let replay = tiffany_wal::read(fixture, &tiffany_wal::Options::new()).unwrap();
    assert!(replay.records.iter().all(|r| r.version == 1));
    let state = Replayed::from_records(&replay.records).unwrap();
    assert_eq!(state.jobs.len(), 4);
    assert_eq!(state.next_id, 5);

    let dir = TempDir::new("fixture");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::copy(fixture, dir.path().join("data/jobs.wal")).unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let mut c = d.client().await;
    let get = |id| proto::GetRequest { id };
    let echo = c.get(get(1)).await.unwrap().into_inner();
    assert_eq!(
        (state_of(&echo), echo.exit_code),
        (JobState::Succeeded, Some(0))
    );
    let logs = c
        .logs(proto::LogsRequest { id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logs.stdout, b"hello from v1\n");
    assert_eq!(
        state_of(&c.get(get(2)).await.unwrap().into_inner()),
        JobState::Failed
    );
    assert_eq!(
        state_of(&c.get(get(3)).await.unwrap().into_inner()),
        JobState::Succeeded
    );
    let keyed = c.get(get(4)).await.unwrap().into_inner();
    assert_eq!(keyed.key.as_deref(), Some("fixture-key"));
    assert_eq!(state_of(&keyed), JobState::Cancelled);
    let next = c.submit(sleep(0.0)).await.unwrap().into_inner();
    assert_eq!(next.id, 5);
}

fn state_of(j: &proto::Job) -> JobState {
    state(j)
}

#[tokio::test]
async fn compaction_keeps_every_job_and_the_pal_file_is_written() {
    let dir = TempDir::new("compact");
    let pal = dir.path().join("pal.jsonl");
    let args = [
        "--compact-bytes",
        "4000",
        "--pal-file",
        pal.to_str().unwrap(),
    ];
    let mut d = Daemon::start(dir.path(), &args);
    let mut c = d.client().await;
    let ids: Vec<u64> = run_keyed_echoes(&mut c, 30)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    assert!(
        d.wait_line("compacted the job log", Duration::from_secs(10))
            .is_some(),
        "{}",
        d.log_text()
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
    // 30 jobs were 90 records (job, started, ended); a compacted log holds
    // one per job (plus meta), and what came after the last compaction.
    let records = tiffany_wal::read(log_path(&d.data), &tiffany_wal::Options::new())
        .unwrap()
        .records;
    assert!(records.len() < 80, "compacted: {} records", records.len());
    let pal_text = std::fs::read_to_string(&pal).unwrap();
    assert!(
        pal_text.lines().count() > 30,
        "the kernel's events are in the PAL file"
    );
    assert!(pal_text.lines().all(|l| l.starts_with('{')));

    let d = Daemon::start(dir.path(), &[]);
    let mut c = d.client().await;
    let jobs = all_jobs(&mut c).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    assert!(jobs.iter().all(|j| state(j) == JobState::Succeeded));
    assert_eq!(
        c.logs(proto::LogsRequest { id: ids[0] })
            .await
            .unwrap()
            .into_inner()
            .stdout,
        b"x\n"
    );
    // Keys survive compaction; ids keep increasing.
    let mut again = sleep(0.0);
    again.key = Some("k0".into());
    assert_eq!(c.submit(again).await.unwrap().into_inner().id, ids[0]);
    assert!(c.submit(sleep(0.0)).await.unwrap().into_inner().id > *ids.last().unwrap());
}

#[tokio::test]
async fn a_draining_daemon_refuses_submissions() {
    let dir = TempDir::new("draining");
    let mut d = Daemon::start(dir.path(), &["--grace", "30"]);
    let mut c = d.client().await;
    let long = c.submit(exec(&["sleep", "30"])).await.unwrap().into_inner();
    d.signal(libc::SIGTERM);
    // Bounded: the drain begins as soon as the signal is handled.
    until_health(&mut c, |h| h.status == "draining").await;
    let e = c.submit(sleep(0.0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    // Reads still work during the drain.
    c.get(proto::GetRequest { id: long.id }).await.unwrap();
    c.cancel(proto::CancelRequest { id: long.id })
        .await
        .unwrap();
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

/// Waits (at most 30 s) until the daemon shows job `id` running, through a
/// Watch stream opened before looking, so that no change is missed.
async fn until_running(c: &mut tiffany_daemon::client::UnixClient, id: u64) -> proto::Job {
    let mut events = c
        .watch(proto::WatchRequest { id: Some(id) })
        .await
        .unwrap()
        .into_inner();
    let now = c.get(proto::GetRequest { id }).await.unwrap().into_inner();
    if state(&now) == JobState::Running {
        return now;
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let ev = events.message().await.unwrap().expect("watch ended");
            let job = ev.job.unwrap();
            if state(&job) == JobState::Running {
                return job;
            }
        }
    })
    .await
    .expect("the job never ran")
}

#[tokio::test]
async fn a_start_is_durable_before_the_job_runs_so_attempts_count_it_after_kill_9() {
    let dir = TempDir::new("started");
    let mut d = Daemon::start(dir.path(), &["--max-running", "1"]);
    let mut c = d.client().await;
    let id = c.submit(sleep(3600.0)).await.unwrap().into_inner().id;
    let shown = until_running(&mut c, id).await;
    assert_eq!(shown.attempts, 1);
    // Killed while the job runs: no drain, nothing flushed on the way out.
    d.kill9();

    // The log alone (read without opening it for writes) says it started once.
    let raw = tiffany_wal::read(log_path(&d.data), &tiffany_wal::Options::new()).unwrap();
    let replayed = Replayed::from_records(&raw.records).unwrap();
    let job = &replayed.jobs[&id];
    assert_eq!(
        job.attempts, 1,
        "the start reached the log before the job ran"
    );
    assert_eq!(job.state, tiffany_daemon::job::JobState::Running);

    // Restarted, it runs again, and its second start is counted.
    let d = Daemon::start(dir.path(), &["--max-running", "1"]);
    let mut c = d.client().await;
    let again = until_running(&mut c, id).await;
    assert_eq!(again.attempts, 2, "{again:?}");
}
