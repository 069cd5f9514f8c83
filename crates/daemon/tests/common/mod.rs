//! Starting the real `tiffanyd` on a temporary socket and data directory.
//! Every wait is bounded; readiness is read from the daemon's own log.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tiffany_daemon::client::{UnixClient, connect_unix};
use tiffany_daemon::proto;

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tfd-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `tiffanyd` binary: this package's, or (from the CLI's tests) the one
/// beside `tiffany` (built first if missing).
pub fn bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_tiffanyd") {
        return PathBuf::from(p);
    }
    let Some(cli) = option_env!("CARGO_BIN_EXE_tiffany") else {
        panic!("built neither for tiffanyd's tests nor for tiffany's");
    };
    let cli = PathBuf::from(cli);
    let daemon = cli.with_file_name("tiffanyd");
    // `cargo nextest run --workspace` (or `-p tiffany-daemon -p tiffany-cli`)
    // builds it; built here only when missing (testing the CLI's package alone).
    if !daemon.exists() {
        let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args(["build", "-q", "-p", "tiffany-daemon", "--bin", "tiffanyd"])
            .status()
            .expect("cargo build tiffanyd");
        assert!(status.success(), "cannot build tiffanyd");
    }
    daemon
}

/// A running daemon.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub data: PathBuf,
    lines: Receiver<String>,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// How a daemon that was expected to fail at start ended.
pub struct Refused {
    pub status: ExitStatus,
    pub stderr: String,
}

fn spawn(dir: &Path, extra: &[&str]) -> (Child, Receiver<String>, Arc<Mutex<Vec<String>>>) {
    let mut cmd = Command::new(bin());
    if !extra.contains(&"--socket") {
        cmd.arg("--socket").arg(dir.join("run/tiffanyd.sock"));
    }
    let mut child = cmd
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("TIFFANY_SOCKET")
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tiffanyd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (child, rx, log)
}

impl Daemon {
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        match Daemon::try_start(dir, extra) {
            Ok(d) => d,
            Err(r) => panic!("tiffanyd did not start ({}): {}", r.status, r.stderr),
        }
    }

    /// Starts a daemon and waits (at most 30 s) for it to be ready, or to exit.
    pub fn try_start(dir: &Path, extra: &[&str]) -> Result<Daemon, Refused> {
        let (mut child, lines, log) = spawn(dir, extra);
        let mut d = Daemon {
            child: None,
            socket: dir.join("run/tiffanyd.sock"),
            data: dir.join("data"),
            lines,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match d
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) if l.contains("tiffanyd ready") => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    return Err(Refused {
                        status,
                        stderr: d.log.lock().unwrap().join("\n"),
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!(
                        "tiffanyd not ready in 30 s: {}",
                        d.log.lock().unwrap().join("\n")
                    );
                }
            }
        }
        d.child = Some(child);
        Ok(d)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits (bounded) for a log line containing `pattern`; returns it.
    pub fn wait_line(&self, pattern: &str, timeout: Duration) -> Option<String> {
        if let Some(l) = self
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(pattern))
        {
            return Some(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) if l.contains(pattern) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The address a log line `... addr=HOST:PORT ...` containing `what` names.
    pub fn addr_of(&self, what: &str) -> String {
        let line = self
            .wait_line(what, Duration::from_secs(10))
            .expect("address line");
        let at = line.find("addr=").expect("addr=") + 5;
        line[at..].split_whitespace().next().unwrap().to_string()
    }

    pub async fn client(&self) -> UnixClient {
        connect_unix(&self.socket).await.expect("connect")
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits (bounded) for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let (tx, rx) = channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(timeout) {
            Ok(s) => s.unwrap(),
            Err(_) => {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!(
                    "tiffanyd did not exit in {timeout:?}: {}",
                    self.log.lock().unwrap().join("\n")
                );
            }
        }
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A self-signed test certificate (made by `rcgen`), written into a test's
/// directory: the certificate as `<stem>.pem`, its key as `<stem>-key.pem`.
pub struct TestCert {
    /// The certificate, PEM (a client's CA).
    pub pem: String,
    /// Where the certificate is.
    pub cert: PathBuf,
    /// Where its private key is.
    pub key: PathBuf,
}

impl TestCert {
    /// A certificate for `host` (a name or an IP address).
    pub fn new(dir: &Path, stem: &str, host: &str) -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let pem = made.cert.pem();
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        TestCert { pem, cert, key }
    }
}

/// Starts a daemon serving TCP on a free port of 127.0.0.1 with `token`
/// written to `dir/token` (as given: a trailing newline is the daemon's to
/// trim), over TLS with `tls` if given. Returns it and the address it serves.
pub fn start_tcp(dir: &Path, token: &str, tls: Option<&TestCert>) -> (Daemon, String) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let mut args = vec![
        "--tcp-addr".to_string(),
        "127.0.0.1:0".to_string(),
        "--token-file".to_string(),
        token_file.to_str().unwrap().to_string(),
    ];
    if let Some(tls) = tls {
        for (flag, path) in [("--tls-cert", &tls.cert), ("--tls-key", &tls.key)] {
            args.push(flag.to_string());
            args.push(path.to_str().unwrap().to_string());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(dir, &args);
    let addr = d.addr_of("serving TCP");
    (d, addr)
}

pub fn spec(kind: &str, args: &str) -> proto::JobSpec {
    proto::JobSpec {
        kind: kind.into(),
        args: args.into(),
        ..Default::default()
    }
}

pub fn exec(argv: &[&str]) -> proto::JobSpec {
    spec("exec", &serde_json::json!({ "argv": argv }).to_string())
}

pub fn sleep(seconds: f64) -> proto::JobSpec {
    spec("sleep", &format!("{{\"seconds\": {seconds}}}"))
}

pub fn state(job: &proto::Job) -> proto::JobState {
    proto::JobState::try_from(job.state).unwrap()
}

/// Waits for a job to end (at most 30 s).
pub async fn wait(c: &mut UnixClient, id: u64) -> proto::Job {
    c.wait(proto::WaitRequest {
        id,
        timeout_seconds: Some(30.0),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Submits `n` jobs running `echo x`, keyed `k0`, `k1`, ..., one after
/// the other, each waited for to its end; returns their final records.
pub async fn run_keyed_echoes(c: &mut UnixClient, n: usize) -> Vec<proto::Job> {
    let mut ended = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = exec(&["echo", "x"]);
        s.key = Some(format!("k{i}"));
        let j = c.submit(s).await.unwrap().into_inner();
        ended.push(wait(c, j.id).await);
    }
    ended
}

/// Asks for the daemon's health until `ready` holds (at most 10 s; the
/// polling is for a state change the daemon does not announce).
pub async fn until_health(c: &mut UnixClient, ready: impl Fn(&proto::HealthResponse) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = c
            .health(proto::HealthRequest {})
            .await
            .unwrap()
            .into_inner();
        if ready(&h) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health never became ready: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET path` over HTTP/1.1 from `addr` (the metrics server): the whole
/// answer, head and body (reads bounded at 10 s).
#[allow(dead_code)]
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
