//! End-to-end tests: the real `tiffanyd` on a temporary socket, driven
//! through the generated gRPC client.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use tiffany_daemon::proto::{self, JobState};
use tonic::Code;

#[tokio::test]
async fn submit_get_list_wait_logs() {
    let dir = TempDir::new("basic");
    let d = Daemon::start(dir.path(), &[]);
    let mut c = d.client().await;
    let ok = c
        .submit(exec(&["sh", "-c", "echo out; echo err >&2"]))
        .await
        .unwrap()
        .into_inner();
    let bad = c
        .submit(exec(&["sh", "-c", "exit 7"]))
        .await
        .unwrap()
        .into_inner();
    let missing = c
        .submit(exec(&["/nonexistent/program"]))
        .await
        .unwrap()
        .into_inner();
    assert!(bad.id > ok.id && missing.id > bad.id, "ids increase");
    let ok = wait(&mut c, ok.id).await;
    assert_eq!(state(&ok), JobState::Succeeded);
    assert_eq!(ok.exit_code, Some(0));
    assert_eq!(ok.attempts, 1);
    assert!(ok.started_at.is_some() && ok.finished_at.is_some());
    let bad = wait(&mut c, bad.id).await;
    assert_eq!(state(&bad), JobState::Failed);
    assert_eq!(bad.exit_code, Some(7));
    let missing = wait(&mut c, missing.id).await;
    assert_eq!(state(&missing), JobState::Failed);
    assert!(missing.error.unwrap().contains("cannot start"));

    let logs = c
        .logs(proto::LogsRequest { id: ok.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logs.stdout, b"out\n");
    assert_eq!(logs.stderr, b"err\n");
    let got = c
        .get(proto::GetRequest { id: bad.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, bad);

    let all = c
        .list(proto::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.jobs.len(), 3);
    let failed = c
        .list(proto::ListRequest {
            state: JobState::Failed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        failed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![bad.id, missing.id]
    );
    let page = c
        .list(proto::ListRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.jobs.len(), 2);
    let rest = c
        .list(proto::ListRequest {
            page_token: page.next_page_token,
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.jobs.len(), 1);
    assert!(rest.next_page_token.is_empty());

    // The socket is owner-only, in an owner-only directory.
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(d.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
}

#[tokio::test]
async fn cancel_watch_and_priorities() {
    let dir = TempDir::new("cancel");
    let d = Daemon::start(dir.path(), &["--max-running", "1"]);
    let mut c = d.client().await;
    let mut events = c
        .watch(proto::WatchRequest { id: None })
        .await
        .unwrap()
        .into_inner();
    let running = c.submit(exec(&["sleep", "30"])).await.unwrap().into_inner();
    let queued = c.submit(sleep(30.0)).await.unwrap().into_inner();
    let mut low = sleep(0.0);
    low.priority = Some(200);
    let low = c.submit(low).await.unwrap().into_inner();
    let mut high = sleep(0.0);
    high.priority = Some(1);
    let high = c.submit(high).await.unwrap().into_inner();

    let cancelled = c
        .cancel(proto::CancelRequest { id: queued.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&cancelled), JobState::Cancelled);
    c.cancel(proto::CancelRequest { id: running.id })
        .await
        .unwrap();
    let running = wait(&mut c, running.id).await;
    assert_eq!(state(&running), JobState::Cancelled);
    let (high, low) = (wait(&mut c, high.id).await, wait(&mut c, low.id).await);
    assert_eq!(state(&high), JobState::Succeeded);
    assert!(
        high.started_at < low.started_at,
        "priority 1 ran before priority 200"
    );

    // The watch saw every state change of the first job, in order.
    let mut seen = Vec::new();
    while seen.last() != Some(&JobState::Cancelled) {
        let e = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        let j = e.job.unwrap();
        if j.id == running.id {
            seen.push(state(&j));
        }
    }
    assert_eq!(
        seen,
        vec![JobState::Queued, JobState::Running, JobState::Cancelled]
    );

    // A watch of one job ends nothing else in.
    let mut one = c.watch(proto::WatchRequest { id: Some(424242) }).await;
    assert_eq!(one.as_mut().err().map(|s| s.code()), Some(Code::NotFound));
    let next = c.submit(sleep(0.0)).await.unwrap().into_inner();
    let mut one = c
        .watch(proto::WatchRequest { id: Some(next.id) })
        .await
        .unwrap()
        .into_inner();
    let _ = c.submit(sleep(0.0)).await.unwrap();
    let w = wait(&mut c, next.id).await;
    assert_eq!(state(&w), JobState::Succeeded);
    // Its events (or some of them, if the stream began after they were sent) are only its own.
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(300), one.message()).await
    {
        assert_eq!(e.job.unwrap().id, next.id);
    }
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let dir = TempDir::new("timeout");
    let d = Daemon::start(dir.path(), &[]);
    let mut c = d.client().await;
    let mut s = exec(&["sh", "-c", "sleep 60 & echo $!; wait"]);
    s.timeout_seconds = Some(0.5);
    let job = c.submit(s).await.unwrap().into_inner();
    let job = wait(&mut c, job.id).await;
    assert_eq!(state(&job), JobState::TimedOut, "{job:?}");
    let logs = c
        .logs(proto::LogsRequest { id: job.id })
        .await
        .unwrap()
        .into_inner();
    let grandchild: i32 = String::from_utf8_lossy(&logs.stdout)
        .trim()
        .parse()
        .unwrap();
    // The grandchild is gone (or a zombie awaiting its new parent's reap): bounded wait.
    let gone = || match std::fs::read_to_string(format!("/proc/{grandchild}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gone() {
        assert!(
            std::time::Instant::now() < deadline,
            "grandchild {grandchild} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A sleep job times out too.
    let mut s = sleep(30.0);
    s.timeout_seconds = Some(0.2);
    let j = c.submit(s).await.unwrap().into_inner();
    assert_eq!(state(&wait(&mut c, j.id).await), JobState::TimedOut);
}

#[tokio::test]
async fn dependencies_and_idempotency_keys() {
    let dir = TempDir::new("deps");
    let d = Daemon::start(dir.path(), &[]);
    let mut c = d.client().await;
    let a = c.submit(sleep(0.2)).await.unwrap().into_inner();
    let mut b = exec(&["true"]);
    b.after = vec![a.id];
    let b = c.submit(b).await.unwrap().into_inner();
    let f = c.submit(exec(&["false"])).await.unwrap().into_inner();
    let mut g = sleep(0.0);
    g.after = vec![f.id, a.id];
    let g = c.submit(g).await.unwrap().into_inner();
    let mut h = sleep(0.0);
    h.after = vec![g.id];
    let h = c.submit(h).await.unwrap().into_inner();
    let (a, b) = (wait(&mut c, a.id).await, wait(&mut c, b.id).await);
    assert_eq!(state(&b), JobState::Succeeded);
    assert!(b.started_at.unwrap() >= a.finished_at.unwrap());
    let g = wait(&mut c, g.id).await;
    assert_eq!(state(&g), JobState::Cancelled);
    assert!(g.error.unwrap().contains(&format!("dependency {}", f.id)));
    assert_eq!(state(&wait(&mut c, h.id).await), JobState::Cancelled);
    // A job after one that already failed is cancelled at once.
    let mut late = sleep(0.0);
    late.after = vec![f.id];
    let late = c.submit(late).await.unwrap().into_inner();
    assert_eq!(state(&wait(&mut c, late.id).await), JobState::Cancelled);

    let mut k = sleep(0.0);
    k.key = Some("once".into());
    let first = c.submit(k.clone()).await.unwrap().into_inner();
    let mut other = exec(&["false"]);
    other.key = Some("once".into());
    let again = c.submit(other).await.unwrap().into_inner();
    assert_eq!(again.id, first.id);
    assert_eq!(again.kind, "sleep");
    let all = c
        .list(proto::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.jobs
            .iter()
            .filter(|j| j.key.as_deref() == Some("once"))
            .count(),
        1
    );
}

#[tokio::test]
async fn overload_answers_resource_exhausted_and_accepted_jobs_finish() {
    let dir = TempDir::new("overload");
    let d = Daemon::start(dir.path(), &["--max-running", "1", "--max-queued", "5"]);
    let c = d.client().await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move { c.submit(sleep(0.02)).await }));
    }
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(j) => accepted.push(j.into_inner().id),
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.metadata().get("retry-after-ms").is_some());
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "some submissions were refused");
    assert!(!accepted.is_empty());
    let mut c = c.clone();
    for id in accepted {
        assert_eq!(state(&wait(&mut c, id).await), JobState::Succeeded);
    }
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument_and_the_daemon_keeps_serving() {
    let dir = TempDir::new("malformed");
    let d = Daemon::start(dir.path(), &["--max-args-bytes", "1000"]);
    let mut c = d.client().await;
    let real = c.submit(sleep(0.0)).await.unwrap().into_inner();
    let mut cases = vec![
        ("missing kind", spec("", "{}")),
        ("unknown kind", spec("teleport", "{}")),
        (
            "python outside Python",
            spec("python", r#"{"function": "f"}"#),
        ),
        ("args not JSON", spec("sleep", "{not json")),
        ("args wrong type", spec("sleep", r#"{"seconds": "ten"}"#)),
        ("exec without argv", spec("exec", r#"{"env": {}}"#)),
        ("argv wrong type", spec("exec", r#"{"argv": "ls"}"#)),
        (
            "args too big",
            spec(
                "sleep",
                &format!(r#"{{"seconds": 0, "pad": "{}"}}"#, "x".repeat(2000)),
            ),
        ),
    ];
    let mut p = sleep(0.0);
    p.priority = Some(256);
    cases.push(("priority out of range", p));
    let mut dep = sleep(0.0);
    dep.after = vec![999_999];
    cases.push(("unknown dependency", dep));
    let mut t = sleep(0.0);
    t.timeout_seconds = Some(-1.0);
    cases.push(("negative timeout", t));
    // Over 1 MiB (the default limit's size) still reaches the check: the server takes 16 MiB.
    cases.push(("args of 2 MiB", spec("sleep", &"x".repeat(2 << 20))));
    for (what, s) in cases {
        let e = c.submit(s).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(!e.message().is_empty(), "{what}");
    }
    let e = c.get(proto::GetRequest { id: 424242 }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("424242"));
    for e in [
        c.cancel(proto::CancelRequest { id: 424242 })
            .await
            .unwrap_err(),
        c.wait(proto::WaitRequest {
            id: 424242,
            timeout_seconds: None,
        })
        .await
        .unwrap_err(),
        c.logs(proto::LogsRequest { id: 424242 }).await.unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::NotFound);
    }
    let e = c
        .list(proto::ListRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .list(proto::ListRequest {
            state: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .wait(proto::WaitRequest {
            id: real.id,
            timeout_seconds: Some(f64::NAN),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let h = c
        .health(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, "serving");
    assert_eq!(state(&wait(&mut c, real.id).await), JobState::Succeeded);
}

#[tokio::test]
async fn live_socket_refused_stale_socket_replaced() {
    let dir = TempDir::new("socket");
    let d = Daemon::start(dir.path(), &[]);
    let other = TempDir::new("socket2");
    std::fs::create_dir_all(other.path().join("run")).unwrap();
    // Same socket, another data directory: refused, exit 1, clear message.
    let sock = d.socket.to_str().unwrap().to_string();
    let refused = match Daemon::try_start(other.path(), &["--socket", &sock]) {
        Err(r) => r,
        Ok(_) => panic!("a second daemon started on a live socket"),
    };
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("another tiffanyd is serving"),
        "{}",
        refused.stderr
    );
    drop(d);

    // A stale socket file (no one listening) is replaced.
    let stale = TempDir::new("stale");
    std::fs::create_dir_all(stale.path().join("run")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(stale.path().join("run/tiffanyd.sock")).unwrap());
    let d = Daemon::start(stale.path(), &[]);
    d.client()
        .await
        .health(proto::HealthRequest {})
        .await
        .unwrap();
    assert!(
        d.wait_line("stale socket", Duration::from_secs(1))
            .is_some()
    );
}

#[tokio::test]
async fn metrics_and_healthz() {
    let dir = TempDir::new("metrics");
    let d = Daemon::start(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let addr = d.addr_of("serving /metrics");
    let mut c = d.client().await;
    let j = c.submit(sleep(0.0)).await.unwrap().into_inner();
    wait(&mut c, j.id).await;
    let get = |path: &str| http_get(&addr, path);
    let m = get("/metrics");
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    for name in [
        "tiffany_jobs{state=\"succeeded\"} 1",
        "tiffany_jobs_submitted_total 1",
        "tiffany_wal_bytes_total",
        "tiffany_wal_fsyncs_total",
        "tiffany_submit_seconds_bucket",
        "tiffany_submit_seconds_count 1",
    ] {
        assert!(m.contains(name), "{name} missing from\n{m}");
    }
    let h = get("/healthz");
    assert!(h.starts_with("HTTP/1.1 200") && h.ends_with("ok\n"), "{h}");
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let dir = TempDir::new("sighup");
    let conf = dir.path().join("tiffanyd.toml");
    std::fs::write(&conf, "max_running = 1\nmax_queued = 50\n").unwrap();
    let d = Daemon::start(dir.path(), &["--config", conf.to_str().unwrap()]);
    std::fs::write(&conf, "max_running = 3\nmax_queued = 50\ngrace = 5\n").unwrap();
    d.signal(libc::SIGHUP);
    let line = d
        .wait_line("SIGHUP", Duration::from_secs(10))
        .expect("reload logged");
    assert!(line.contains("max_running: 1 -> 3"), "{line}");
    assert!(line.contains("grace"), "{line}");
    // Three jobs now run at once.
    let mut c = d.client().await;
    let ids: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(c.submit(sleep(30.0)).await.unwrap().into_inner().id);
        }
        v
    };
    until_health(&mut c, |h| h.running == 3).await;
    for id in ids {
        c.cancel(proto::CancelRequest { id }).await.unwrap();
    }
    // A broken config is refused and the daemon goes on.
    std::fs::write(&conf, "max_running = \"many\"\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        d.wait_line("config not reloaded", Duration::from_secs(10))
            .is_some()
    );
    c.health(proto::HealthRequest {}).await.unwrap();
}

#[tokio::test]
async fn start_refuses_bad_settings() {
    let dir = TempDir::new("refuse");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let t = token.to_str().unwrap();
    let r = Daemon::try_start(dir.path(), &["--tcp-addr", "0.0.0.0:0", "--token-file", t])
        .err()
        .expect("refused");
    assert_eq!(r.status.code(), Some(2));
    assert!(r.stderr.contains("without TLS"), "{}", r.stderr);
    let r = Daemon::try_start(dir.path(), &["--tcp-addr", "127.0.0.1:0"])
        .err()
        .expect("refused");
    assert!(r.stderr.contains("--token-file"), "{}", r.stderr);
    let r = Daemon::try_start(dir.path(), &["--max-running", "0"])
        .err()
        .expect("refused");
    assert_eq!(r.status.code(), Some(2));
}
