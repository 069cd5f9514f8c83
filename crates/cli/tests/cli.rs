//! The `tiffany` command against a real `tiffanyd`.

#[path = "../../daemon/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const TIFFANY: &str = env!("CARGO_BIN_EXE_tiffany");

fn tiffany(socket: &std::path::Path, args: &[&str]) -> Output {
    Command::new(TIFFANY)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("TIFFANY_SOCKET")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn daemon_not_running() {
    let dir = TempDir::new("cli-none");
    let o = tiffany(&dir.path().join("none.sock"), &["health"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
}

#[test]
fn submit_exec_get_ls_wait_logs_cancel() {
    let dir = TempDir::new("cli");
    let d = Daemon::start(dir.path(), &[]);
    let s = d.socket.as_path();
    let t = |args: &[&str]| tiffany(s, args);
    assert!(ok(&t(&["health"])).starts_with("serving"));

    let id = ok(&t(&["exec", "--", "sh", "-c", "echo hi; echo oops >&2"]))
        .trim()
        .to_string();
    assert_eq!(code(&t(&["wait", &id])), 0);
    assert_eq!(ok(&t(&["logs", &id])), "hi\n");
    assert_eq!(ok(&t(&["logs", &id, "--stderr"])), "oops\n");
    let job: serde_json::Value = serde_json::from_str(&ok(&t(&["--json", "get", &id]))).unwrap();
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["args"]["argv"][0], "sh");

    let bad = ok(&t(&["exec", "--", "sh", "-c", "exit 5"]))
        .trim()
        .to_string();
    let w = t(&["wait", &bad]);
    assert_eq!(code(&w), 1, "wait exits non-zero for a failed job");
    assert!(
        ok(&Output {
            status: std::process::ExitStatus::default(),
            ..w
        })
        .contains("exit 5")
    );

    let after = ok(&t(&["exec", "--after", &bad, "--", "true"]))
        .trim()
        .to_string();
    assert_eq!(code(&t(&["wait", &after])), 1);
    let j: serde_json::Value = serde_json::from_str(&ok(&t(&["--json", "get", &after]))).unwrap();
    assert_eq!(j["state"], "cancelled");

    let k1 = ok(&t(&[
        "submit",
        "sleep",
        "--args",
        r#"{"seconds": 0}"#,
        "--key",
        "k",
    ]));
    let k2 = ok(&t(&[
        "submit",
        "sleep",
        "--args",
        r#"{"seconds": 5}"#,
        "--key",
        "k",
    ]));
    assert_eq!(k1, k2);

    let long = ok(&t(&[
        "submit",
        "sleep",
        "--args",
        r#"{"seconds": 60}"#,
        "--priority",
        "3",
    ]))
    .trim()
    .to_string();
    assert!(
        ok(&t(&["cancel", &long])).contains("cancelled") || {
            // It may have been running: the cancel lands a moment later.
            code(&t(&["wait", &long, "--timeout", "10"])) == 1
        }
    );
    let to = ok(&t(&["exec", "--timeout", "0.2", "--", "sleep", "30"]))
        .trim()
        .to_string();
    assert_eq!(code(&t(&["wait", &to])), 1);
    assert!(ok(&t(&["get", &to])).contains("timed_out"));

    let lines = ok(&t(&["--json", "ls", "--state", "failed"]));
    let failed: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"].to_string(), bad);
    assert_eq!(ok(&t(&["ls", "--limit", "2"])).lines().count(), 2);

    // Clear errors and exit codes.
    let o = t(&["get", "987654"]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("no job 987654"));
    let o = t(&["submit", "teleport"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown kind"));
    assert_eq!(code(&t(&["ls", "--state", "sleepy"])), 2);
    assert_eq!(code(&t(&["exec", "--args", "[1]", "--", "true"])), 2);
    assert_eq!(code(&t(&["get", "not-a-number"])), 2);
}

#[test]
fn watch_one_job_prints_lines_until_it_ends() {
    let dir = TempDir::new("cli-watch");
    let d = Daemon::start(dir.path(), &[]);
    let id = ok(&tiffany(
        &d.socket,
        &["submit", "sleep", "--args", r#"{"seconds": 0.3}"#],
    ))
    .trim()
    .to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let socket = d.socket.clone();
    std::thread::spawn(move || {
        let _ = tx.send(tiffany(&socket, &["watch", &id]));
    });
    let o = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("watch ends with the job");
    let out = ok(&o);
    assert!(out.lines().last().unwrap().contains("succeeded"), "{out}");
}

#[test]
fn overload_is_retried() {
    let dir = TempDir::new("cli-retry");
    let d = Daemon::start(dir.path(), &["--max-running", "1", "--max-queued", "1"]);
    let t = |args: &[&str]| tiffany(&d.socket, args);
    ok(&t(&["submit", "sleep", "--args", r#"{"seconds": 0.2}"#]));
    ok(&t(&["submit", "sleep", "--args", r#"{"seconds": 0.2}"#]));
    // The queue is full until the first ends: this one is retried, then accepted.
    let id = ok(&t(&["submit", "sleep", "--args", r#"{"seconds": 0}"#]))
        .trim()
        .to_string();
    assert_eq!(code(&t(&["wait", &id])), 0);
}

#[test]
fn shutdown_and_the_wal_tools() {
    let dir = TempDir::new("cli-wal");
    let mut d = Daemon::start(dir.path(), &[]);
    let t = |args: &[&str]| tiffany(&d.socket, args);
    let id = ok(&t(&["exec", "--", "echo", "x"])).trim().to_string();
    assert_eq!(code(&t(&["wait", &id])), 0);
    ok(&t(&["shutdown", "--grace", "2"]));
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));

    let data = d.data.to_str().unwrap().to_string();
    let w = |args: &[&str]| {
        tiffany(
            &d.socket,
            &[&["wal"], args, &["--data-dir", &data]].concat(),
        )
    };
    assert!(ok(&w(&["verify"])).contains("ok"));
    let records = ok(&w(&["inspect"]));
    let types: Vec<String> = records
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["record"]["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, ["job", "started", "ended"]);
    assert!(ok(&w(&["compact"])).contains("compacted"));
    assert!(
        ok(&w(&["verify"])).contains("ok, 2 records"),
        "meta + one job"
    );

    // Corrupt the middle: verify says where, exit 1.
    let path = d.data.join("jobs.wal");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[24 + 20 + 3] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let o = w(&["verify"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("corrupt") || String::from_utf8_lossy(&o.stdout).contains("byte"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn tcp_with_a_token_over_tls() {
    let dir = TempDir::new("cli-tls");
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let cert = TestCert::new(dir.path(), "cert", "127.0.0.1");
    // A certificate that did not sign the daemon's: a wrong CA.
    TestCert::new(dir.path(), "other", "127.0.0.1");
    std::fs::write(p("wrong"), "nope\n").unwrap();
    let (_daemon, addr) = start_tcp(dir.path(), "cli-token\n", Some(&cert));
    let tcp = |token: &str, ca: Option<&str>, args: &[&str]| {
        let mut c = Command::new(TIFFANY);
        c.args(["--tcp", &addr, "--token-file", &p(token)]);
        if let Some(ca) = ca {
            c.args(["--tls-ca", &p(ca)]);
        }
        c.args(args)
            .env_remove("TIFFANY_SOCKET")
            .env_remove("TIFFANY_TCP")
            .env_remove("TIFFANY_TOKEN_FILE")
            .env_remove("TIFFANY_TLS_CA")
            .output()
            .unwrap()
    };
    // With the CA and the token: every command works over TLS.
    assert!(ok(&tcp("token", Some("cert.pem"), &["health"])).starts_with("serving"));
    let id = ok(&tcp(
        "token",
        Some("cert.pem"),
        &["exec", "--", "echo", "tls"],
    ));
    let id = id.trim();
    ok(&tcp(
        "token",
        Some("cert.pem"),
        &["wait", id, "--timeout", "30"],
    ));
    assert_eq!(ok(&tcp("token", Some("cert.pem"), &["logs", id])), "tls\n");
    // A wrong token: UNAUTHENTICATED, exit 1.
    let o = tcp("wrong", Some("cert.pem"), &["health"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("unauthenticated"), "{}", stderr(&o));
    // Plain TCP to the TLS port, and a CA that did not sign the certificate: exit 3, said.
    let o = tcp("token", None, &["health"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("--tls-ca"), "{}", stderr(&o));
    let o = tcp("token", Some("other.pem"), &["health"]);
    assert_eq!(code(&o), 3);
    assert!(
        stderr(&o).contains("invalid peer certificate"),
        "{}",
        stderr(&o)
    );
    // A CA file that is not there: bad arguments, exit 2.
    let o = tcp("token", Some("missing.pem"), &["health"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("missing.pem"), "{}", stderr(&o));
}

#[test]
fn vsock_and_tls_arguments_are_checked() {
    let dir = TempDir::new("cli-vsock");
    let s = dir.path().join("none.sock");
    let o = tiffany(&s, &["--vsock", "three:7070", "health"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("CID:PORT"), "{}", stderr(&o));
    let o = tiffany(&s, &["--vsock", "3:7070", "--tcp", "127.0.0.1:1", "health"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not both"), "{}", stderr(&o));
    let o = tiffany(&s, &["--vsock", "3:7070", "--tls-ca", "ca.pem", "health"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--tls-ca is for --tcp"),
        "{}",
        stderr(&o)
    );
    let o = tiffany(
        &s,
        &[
            "--vsock",
            "3:7070",
            "--token-file",
            "/nonexistent/token",
            "health",
        ],
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("/nonexistent/token"), "{}", stderr(&o));
}
