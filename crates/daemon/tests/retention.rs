//! Retention of ended jobs (`--retain-jobs`, `--retain-seconds`): the real
//! `tiffanyd`, driven through the gRPC client.

mod common;

use std::time::Duration;

use common::*;
use tiffany_daemon::proto::{self, JobState};
use tonic::Code;

async fn get(
    c: &mut tiffany_daemon::client::UnixClient,
    id: u64,
) -> Result<proto::Job, tonic::Status> {
    c.get(proto::GetRequest { id })
        .await
        .map(|r| r.into_inner())
}

fn dropped(status: tonic::Status) -> String {
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains("dropped by the retention policy"),
        "{}",
        status.message()
    );
    status.message().to_string()
}

#[tokio::test]
async fn a_count_keeps_the_most_recent_ends_and_frees_their_keys() {
    let dir = TempDir::new("retain-count");
    let mut d = Daemon::start(dir.path(), &["--retain-jobs", "2"]);
    let mut c = d.client().await;
    let ended = run_keyed_echoes(&mut c, 4).await;
    assert!(ended.iter().all(|j| state(j) == JobState::Succeeded));
    let ids: Vec<u64> = ended.iter().map(|j| j.id).collect();
    dropped(get(&mut c, ids[0]).await.unwrap_err());
    dropped(get(&mut c, ids[1]).await.unwrap_err());
    assert_eq!(get(&mut c, ids[3]).await.unwrap().id, ids[3]);
    let listed: Vec<u64> = c
        .list(proto::ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, ids[2..]);
    // Every call naming a dropped job says so; an id never given says that.
    dropped(c.logs(proto::LogsRequest { id: ids[0] }).await.unwrap_err());
    dropped(
        c.cancel(proto::CancelRequest { id: ids[0] })
            .await
            .unwrap_err(),
    );
    let never = get(&mut c, 1_000).await.unwrap_err();
    assert_eq!(never.code(), Code::NotFound);
    assert_eq!(never.message(), "no job 1000");
    let mut after = sleep(0.0);
    after.after = vec![ids[0]];
    let refused = c.submit(after).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("dropped by the retention policy"),
        "{}",
        refused.message()
    );
    // A dropped job's key is free again; a kept one's still answers its job.
    let mut again = sleep(0.0);
    again.key = Some("k0".into());
    let fresh = c.submit(again).await.unwrap().into_inner();
    assert!(fresh.id > ids[3], "a new job, with a new id");
    let mut kept = sleep(0.0);
    kept.key = Some("k3".into());
    assert_eq!(c.submit(kept).await.unwrap().into_inner().id, ids[3]);
    wait(&mut c, fresh.id).await;

    // After a restart the log still holds the dropped jobs (until it is
    // compacted): the policy is applied to them again, and ids go on.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let d = Daemon::start(dir.path(), &["--retain-jobs", "2"]);
    let mut c = d.client().await;
    dropped(get(&mut c, ids[2]).await.unwrap_err());
    assert_eq!(get(&mut c, ids[3]).await.unwrap().id, ids[3]);
    assert_eq!(get(&mut c, fresh.id).await.unwrap().id, fresh.id);
    assert!(c.submit(sleep(0.0)).await.unwrap().into_inner().id > fresh.id);
}

#[tokio::test]
async fn a_job_is_kept_while_an_unfinished_job_depends_on_it() {
    let dir = TempDir::new("retain-pin");
    let d = Daemon::start(dir.path(), &["--retain-jobs", "1"]);
    let mut c = d.client().await;
    let long = c.submit(sleep(60.0)).await.unwrap().into_inner();
    let first = c.submit(sleep(0.0)).await.unwrap().into_inner();
    let mut then = sleep(0.0);
    then.after = vec![first.id, long.id];
    let then = c.submit(then).await.unwrap().into_inner();
    assert_eq!(state(&wait(&mut c, first.id).await), JobState::Succeeded);
    let filler = c.submit(sleep(0.0)).await.unwrap().into_inner();
    assert_eq!(state(&wait(&mut c, filler.id).await), JobState::Succeeded);
    // Two ends, one kept: `first` is held (`then` depends on it) and does
    // not take the place of `filler`, the most recent end.
    assert_eq!(
        state(&get(&mut c, first.id).await.unwrap()),
        JobState::Succeeded
    );
    assert_eq!(get(&mut c, filler.id).await.unwrap().id, filler.id);
    c.cancel(proto::CancelRequest { id: long.id })
        .await
        .unwrap();
    // `long` ends cancelled, so `then` does: the last end, the one kept.
    let then = wait(&mut c, then.id).await;
    assert_eq!(state(&then), JobState::Cancelled);
    assert!(
        then.error
            .unwrap()
            .contains(&format!("dependency {}", long.id))
    );
    for id in [first.id, filler.id, long.id] {
        dropped(get(&mut c, id).await.unwrap_err());
    }
}

#[tokio::test]
async fn cancelling_a_queued_job_answers_its_end_even_when_it_is_not_kept() {
    let dir = TempDir::new("retain-cancel");
    let d = Daemon::start(dir.path(), &["--retain-seconds", "0", "--max-running", "1"]);
    let mut c = d.client().await;
    let _busy = c.submit(sleep(60.0)).await.unwrap().into_inner();
    let queued = c.submit(sleep(0.0)).await.unwrap().into_inner();
    let answer = c
        .cancel(proto::CancelRequest { id: queued.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.id, queued.id);
    assert_eq!(state(&answer), JobState::Cancelled);
    dropped(get(&mut c, queued.id).await.unwrap_err());
}

#[tokio::test]
async fn bad_retention_settings_are_refused_at_start() {
    let dir = TempDir::new("retain-bad");
    let refused = Daemon::try_start(dir.path(), &["--retain-seconds=-1"])
        .err()
        .expect("a negative age must be refused");
    assert!(
        refused.stderr.contains("--retain-seconds"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn a_reload_applies_a_new_policy_at_once_and_metrics_count_the_drops() {
    let dir = TempDir::new("retain-reload");
    let conf = dir.path().join("tiffanyd.toml");
    std::fs::write(&conf, "max_running = 2\n").unwrap();
    let d = Daemon::start(
        dir.path(),
        &[
            "--config",
            conf.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let addr = d.addr_of("serving /metrics");
    let mut c = d.client().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let j = c.submit(sleep(0.0)).await.unwrap().into_inner();
        wait(&mut c, j.id).await;
        ids.push(j.id);
    }
    let metrics = || http_get(&addr, "/metrics");
    let m = metrics();
    assert!(m.contains("tiffany_jobs_ended_kept 3\n"), "{m}");
    assert!(m.contains("tiffany_jobs_dropped_total 0\n"), "{m}");
    // By default every ended job is kept; a reload bounds it at once.
    std::fs::write(&conf, "max_running = 2\nretain_jobs = 1\n").unwrap();
    d.signal(libc::SIGHUP);
    let line = d
        .wait_line("SIGHUP", Duration::from_secs(10))
        .expect("reload logged");
    assert!(line.contains("retain_jobs: None -> Some(1)"), "{line}");
    dropped(get(&mut c, ids[0]).await.unwrap_err());
    dropped(get(&mut c, ids[1]).await.unwrap_err());
    assert_eq!(get(&mut c, ids[2]).await.unwrap().id, ids[2]);
    let m = metrics();
    assert!(m.contains("tiffany_jobs_ended_kept 1\n"), "{m}");
    assert!(m.contains("tiffany_jobs_dropped_total 2\n"), "{m}");
    assert!(m.contains("tiffany_jobs{state=\"succeeded\"} 1\n"), "{m}");
}
