//! The job-runner seam without Python: a host runs the kernel on a thread of
//! its own, gives the daemon a runner for a kind of its own ("upper": a
//! native task that upper-cases a string), and the daemon runs those jobs
//! on that kernel with its queue, dependencies, timeouts and cancel.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::*;
use tiffany_daemon::client::connect_unix;
use tiffany_daemon::config::Args;
use tiffany_daemon::proto;
use tiffany_daemon::runner::{Host, JobEnd, JobRunner};
use tiffany_scheduler::{Outcome, Scheduler, SpawnOptions, Spawner, TaskId};
use tonic::Code;

struct Upper;

#[derive(serde::Deserialize)]
struct UpperArgs {
    text: String,
    #[serde(default)]
    nap: f64,
}

impl JobRunner for Upper {
    fn serves(&self, kind: &str) -> bool {
        kind == "upper"
    }

    fn check(&self, _kind: &str, args: &str) -> Result<(), String> {
        serde_json::from_str::<UpperArgs>(args)
            .map(drop)
            .map_err(|e| format!("upper args: {e}"))
    }

    fn start(
        &self,
        sched: &Scheduler,
        _id: u64,
        _kind: &str,
        args: &str,
        options: SpawnOptions,
    ) -> Result<TaskId, String> {
        let a: UpperArgs = serde_json::from_str(args).map_err(|e| e.to_string())?;
        if a.text == "refuse" {
            return Err("refused to start".into());
        }
        sched
            .spawn_with(options, move |cx| {
                cx.sleep(Duration::from_secs_f64(a.nap));
                a.text.to_uppercase()
            })
            .map_err(|e| e.to_string())
    }

    fn end(&self, outcome: &Outcome) -> JobEnd {
        match outcome {
            Outcome::Done(v) => match v.downcast_ref::<String>() {
                Some(s) if s.is_empty() => JobEnd::Failed("nothing to upper-case".into()),
                Some(s) => JobEnd::Succeeded(serde_json::to_string(s).unwrap()),
                None => JobEnd::Failed("no string".into()),
            },
            Outcome::Failed(e) => JobEnd::Failed(e.message().into()),
            Outcome::Cancelled => JobEnd::Cancelled,
        }
    }
}

fn upper(text: &str, nap: f64) -> proto::JobSpec {
    spec(
        "upper",
        &serde_json::json!({"text": text, "nap": nap}).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_runner_runs_its_kind_on_the_hosts_kernel() {
    let dir = TempDir::new("runner");
    let socket = dir.path().join("run/d.sock");
    let args = Args::parse_from([
        "tiffanyd".into(),
        format!("--socket={}", socket.display()),
        format!("--data-dir={}", dir.path().join("data").display()),
        "--config=/dev/null".into(),
    ]);
    // The host's kernel, on a thread of the host's.
    let (tx, rx) = std::sync::mpsc::channel();
    let kernel_thread = std::thread::spawn(move || {
        let sched = Scheduler::new();
        tx.send(sched.handle()).unwrap();
        sched.serve();
    });
    let kernel = rx.recv().unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let host = Host {
        kernel,
        runner: Arc::new(Upper),
        stop: stop.clone(),
        ready: Some(ready_tx),
    };
    let daemon = std::thread::spawn(move || tiffany_daemon::server::main_hosted(args, host));
    tokio::task::spawn_blocking(move || ready.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the hosted daemon serves within 30 s");
    let mut c = connect_unix(&socket).await.unwrap();
    let wait = |id| proto::WaitRequest {
        id,
        timeout_seconds: Some(30.0),
    };

    let j = c.submit(upper("hello", 0.0)).await.unwrap().into_inner();
    let done = c.wait(wait(j.id)).await.unwrap().into_inner();
    assert_eq!(done.state, proto::JobState::Succeeded as i32);
    assert_eq!(done.result.as_deref(), Some("\"HELLO\""));

    // The runner's check answers at submit; its start and end errors fail the job.
    let e = c.submit(spec("upper", "{}")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("upper args:"), "{}", e.message());
    for (text, why) in [
        ("refuse", "refused to start"),
        ("", "nothing to upper-case"),
    ] {
        let j = c.submit(upper(text, 0.0)).await.unwrap().into_inner();
        let done = c.wait(wait(j.id)).await.unwrap().into_inner();
        assert_eq!(done.state, proto::JobState::Failed as i32);
        assert_eq!(done.error.as_deref(), Some(why));
    }
    // Kinds the runner does not serve are still the engine's.
    let s = c
        .submit(spec("sleep", r#"{"seconds": 0}"#))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        c.wait(wait(s.id)).await.unwrap().into_inner().state,
        proto::JobState::Succeeded as i32
    );

    // Timeout, cancel and dependencies apply to the runner's jobs.
    let mut t = upper("slow", 60.0);
    t.timeout_seconds = Some(0.1);
    let t = c.submit(t).await.unwrap().into_inner();
    assert_eq!(
        c.wait(wait(t.id)).await.unwrap().into_inner().state,
        proto::JobState::TimedOut as i32
    );
    let long = c.submit(upper("long", 60.0)).await.unwrap().into_inner();
    let mut after = upper("after", 0.0);
    after.after = vec![long.id];
    let after = c.submit(after).await.unwrap().into_inner();
    c.cancel(proto::CancelRequest { id: long.id })
        .await
        .unwrap();
    assert_eq!(
        c.wait(wait(long.id)).await.unwrap().into_inner().state,
        proto::JobState::Cancelled as i32
    );
    let after = c.wait(wait(after.id)).await.unwrap().into_inner();
    assert_eq!(after.state, proto::JobState::Cancelled as i32);

    // The host stops the daemon; the daemon stops the host's kernel.
    stop.notify_one();
    let result = tokio::task::spawn_blocking(move || daemon.join().unwrap())
        .await
        .unwrap();
    assert!(result.is_ok(), "{:?}", result.err().map(|e| e.message));
    tokio::task::spawn_blocking(move || kernel_thread.join().unwrap())
        .await
        .unwrap();
    assert!(!socket.exists());
}
