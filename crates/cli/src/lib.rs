//! # tiffany: the command-line client of `tiffanyd`
//!
//! Every command is one gRPC call (or a stream of them) to a running
//! daemon over its Unix socket — `--socket`, else `TIFFANY_SOCKET`, else
//! the daemon's default — or over TCP (`--tcp HOST:PORT` with
//! `--token-file`, and `--tls-ca` for a daemon serving TLS), or over
//! AF_VSOCK (`--vsock CID:PORT` with `--token-file`: a daemon in a
//! microVM) — except `wal`, which reads a job log offline.
//! `--json` prints machine-readable output (a job as a JSON object, one
//! object per line for lists and events).
//!
//! Exit codes: 0 success; 1 a failed request, or `wait` on a job that did
//! not succeed; 2 bad arguments; 3 the daemon is not running; 4 no such job.
//! A submission refused with RESOURCE_EXHAUSTED is retried with backoff.

#![warn(missing_docs)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use serde_json::{Value, json};
use tiffany_daemon::client::{Bearer, TcpClient, connect_tcp, error_chain, host_of, unix_channel};
use tiffany_daemon::job::JobState;
use tiffany_daemon::proto::{self, tiffany_client::TiffanyClient};
use tonic::{Code, Status};

/// `tiffany`'s command line.
#[derive(Parser, Debug)]
#[command(
    name = "tiffany",
    version,
    about = "Submit and follow jobs on a tiffanyd daemon"
)]
pub struct Cli {
    /// The daemon's socket [default: TIFFANY_SOCKET, else the daemon's default].
    #[arg(long, env = "TIFFANY_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Reach the daemon over TCP at HOST:PORT instead (its --tcp-addr; needs --token-file).
    #[arg(long, env = "TIFFANY_TCP", global = true)]
    pub tcp: Option<String>,
    /// Reach the daemon over AF_VSOCK at CID:PORT instead (its --vsock-port; needs --token-file).
    #[arg(long, env = "TIFFANY_VSOCK", global = true)]
    pub vsock: Option<String>,
    /// File holding the daemon's bearer token, for --tcp and --vsock.
    #[arg(long, env = "TIFFANY_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle that signed the daemon's TLS certificate: --tcp over TLS (default: plain TCP).
    #[arg(long, env = "TIFFANY_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by `submit` and `exec`.
#[derive(ClapArgs, Debug, Clone, Default)]
pub struct JobOptions {
    /// The kind's arguments, a JSON object.
    #[arg(long)]
    pub args: Option<String>,
    /// 0 (first) to 255 (last) [default: 10].
    #[arg(long)]
    pub priority: Option<u32>,
    /// A job that must succeed first (repeatable).
    #[arg(long)]
    pub after: Vec<u64>,
    /// Seconds the job may run.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Idempotency key: a repeated key gives back the first job.
    #[arg(long)]
    pub key: Option<String>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Submit a job of KIND (exec, sleep, python); prints its id.
    Submit {
        /// exec, sleep, or python (a daemon hosted by tiffany.serve).
        kind: String,
        /// The job's options.
        #[command(flatten)]
        options: JobOptions,
    },
    /// Run a command as a job: `tiffany exec [options] -- CMD ARGS...`; prints its id.
    Exec {
        /// The job's options.
        #[command(flatten)]
        options: JobOptions,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show a job.
    Get {
        /// The job's id.
        id: u64,
    },
    /// List jobs.
    Ls {
        /// Only jobs in this state (queued, running, succeeded, failed, cancelled, timed_out).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Cancel a job.
    Cancel {
        /// The job's id.
        id: u64,
    },
    /// Wait for a job to end; exit 0 if it succeeded.
    Wait {
        /// The job's id.
        id: u64,
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Print a job's captured output.
    Logs {
        /// The job's id.
        id: u64,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// Follow job events: of every job, or of one until it ends.
    Watch {
        /// Only this job.
        id: Option<u64>,
    },
    /// Drain and stop the daemon.
    Shutdown {
        /// Seconds running jobs get to finish [default: the daemon's --grace].
        #[arg(long)]
        grace: Option<f64>,
    },
    /// Whether the daemon is serving.
    Health,
    /// Offline tools over a job log.
    Wal {
        /// What to do.
        #[command(subcommand)]
        command: WalCommand,
    },
}

/// `tiffany wal ...`.
#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Check a log; exit 1 and say where it is damaged.
    Verify {
        /// The daemon's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print a log's records as JSON lines.
    Inspect {
        /// The daemon's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Rewrite a log from its live state (the daemon must be stopped).
    Compact {
        /// The daemon's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// A failure, with its exit code.
#[derive(Debug)]
pub struct CliError {
    /// The message for stderr.
    pub message: String,
    /// The exit code.
    pub code: i32,
}

impl CliError {
    fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code,
        }
    }
}

fn from_status(s: Status, target: &str) -> CliError {
    match s.code() {
        Code::Unauthenticated => CliError::new(
            1,
            format!(
                "unauthenticated: {} (give the daemon's token with --token-file)",
                s.message()
            ),
        ),
        Code::NotFound => CliError::new(4, s.message()),
        Code::InvalidArgument => CliError::new(2, format!("invalid request: {}", s.message())),
        Code::Unavailable => CliError::new(
            3,
            format!("tiffanyd on {target} is unavailable: {}", s.message()),
        ),
        Code::ResourceExhausted => CliError::new(1, format!("daemon overloaded: {}", s.message())),
        _ => CliError::new(1, format!("{:?}: {}", s.code(), s.message())),
    }
}

/// The socket to use: `--socket`/`TIFFANY_SOCKET`, else the daemon's default.
pub fn socket_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        tiffany_daemon::config::default_socket(&tiffany_daemon::config::default_data_dir())
    })
}

/// A client of the daemon over either transport (over the Unix socket,
/// requests carry no token).
pub type Client = TcpClient;

/// Connects to the daemon on `socket`.
pub async fn connect(socket: &Path) -> Result<Client, CliError> {
    let channel = unix_channel(socket).await.map_err(|e| {
        CliError::new(
            3,
            format!(
                "tiffanyd is not running on {} ({}); start it with `tiffanyd`",
                socket.display(),
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
            ),
        )
    })?;
    let bearer = Bearer::new(None).map_err(|e| CliError::new(2, e))?;
    Ok(TiffanyClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(tiffany_daemon::server::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(tiffany_daemon::server::MAX_MESSAGE_BYTES))
}

/// Connects over TCP to `addr`, with the token in `token_file` and, with
/// `tls_ca`, over TLS trusting that PEM bundle for the address's host.
pub async fn connect_over_tcp(
    addr: &str,
    token_file: Option<&Path>,
    tls_ca: Option<&Path>,
) -> Result<Client, CliError> {
    let token = read_token(token_file)?;
    let ca = match tls_ca {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| CliError::new(2, format!("cannot read {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let tls = ca.as_deref().map(|ca| (ca, host_of(addr)));
    connect_tcp(addr, token.as_deref(), tls).await.map_err(|e| {
        let hint = if tls_ca.is_none() {
            " (if it serves TLS, give its CA with --tls-ca)"
        } else {
            ""
        };
        CliError::new(3, format!("cannot reach tiffanyd at {addr}: {e}{hint}"))
    })
}

/// The bearer token in `token_file`, if given.
fn read_token(token_file: Option<&Path>) -> Result<Option<String>, CliError> {
    match token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| CliError::new(2, format!("cannot read {}: {e}", p.display())))?;
            Ok(Some(t.trim().to_string()))
        }
        None => Ok(None),
    }
}

/// Connects over AF_VSOCK to `addr` (`CID:PORT`), with the token in
/// `token_file`.
pub async fn connect_over_vsock(addr: &str, token_file: Option<&Path>) -> Result<Client, CliError> {
    let (cid, port) = tiffany_daemon::client::parse_vsock(addr)
        .map_err(|e| CliError::new(2, format!("--vsock: {e}")))?;
    let token = read_token(token_file)?;
    tiffany_daemon::client::connect_vsock(cid, port, token.as_deref())
        .await
        .map_err(|e| {
            CliError::new(
                3,
                format!("cannot reach tiffanyd over vsock at {addr}: {e}"),
            )
        })
}

/// What a request failed with: the daemon's answer, or for a failure of
/// the connection itself (a reset, a refused TLS handshake, an HTTP/2
/// error: a status carrying its cause as its source) UNAVAILABLE with that
/// cause.
fn describe(s: &Status) -> Status {
    match std::error::Error::source(s).map(error_chain) {
        Some(chain) if chain.starts_with(s.message()) => Status::unavailable(chain),
        Some(chain) => Status::unavailable(format!("{}: {chain}", s.message())),
        None => s.clone(),
    }
}

fn state_name(state: i32) -> &'static str {
    proto::JobState::try_from(state)
        .ok()
        .and_then(JobState::from_proto)
        .map_or("unspecified", JobState::name)
}

/// A job as JSON.
pub fn job_json(j: &proto::Job) -> Value {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .map(|t| serde_json::from_str::<Value>(t).unwrap_or(Value::String(t.into())))
    };
    json!({
        "id": j.id,
        "kind": j.kind,
        "args": serde_json::from_str::<Value>(&j.args).unwrap_or(Value::String(j.args.clone())),
        "priority": j.priority,
        "after": j.after,
        "key": j.key,
        "timeout": j.timeout_seconds,
        "state": state_name(j.state),
        "attempts": j.attempts,
        "exit_code": j.exit_code,
        "result": parse(&j.result),
        "error": j.error,
        "created_at": j.created_at,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
    })
}

fn job_line(j: &proto::Job) -> String {
    let mut s = format!(
        "{:>8}  {:<9}  {:<5}  p{:<3}",
        j.id,
        state_name(j.state),
        j.kind,
        j.priority
    );
    if let Some(c) = j.exit_code {
        s.push_str(&format!("  exit {c}"));
    }
    if let Some(e) = &j.error {
        s.push_str(&format!("  {e}"));
    }
    s
}

fn print_job(j: &proto::Job, as_json: bool) {
    if as_json {
        println!("{}", job_json(j));
    } else {
        println!("{}", job_line(j));
    }
}

fn spec(kind: String, args: String, o: &JobOptions) -> proto::JobSpec {
    proto::JobSpec {
        kind,
        args,
        priority: o.priority,
        after: o.after.clone(),
        timeout_seconds: o.timeout,
        key: o.key.clone(),
    }
}

/// Submits, retrying RESOURCE_EXHAUSTED with exponential backoff (up to ~1 min).
async fn submit_with_retry(
    client: &mut Client,
    spec: proto::JobSpec,
    target: &str,
) -> Result<proto::Job, CliError> {
    let mut delay = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.submit(spec.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if s.code() == Code::ResourceExhausted
                    && tokio::time::Instant::now() < deadline =>
            {
                let hint = s
                    .metadata()
                    .get("retry-after-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_millis)
                    .unwrap_or(delay);
                tokio::time::sleep(hint.max(delay)).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(s) => return Err(from_status(describe(&s), target)),
        }
    }
}

fn exec_args(options: &JobOptions, command: Vec<String>) -> Result<String, CliError> {
    let mut obj = match &options.args {
        Some(a) => match serde_json::from_str::<Value>(a) {
            Ok(Value::Object(m)) => m,
            _ => return Err(CliError::new(2, "--args must be a JSON object")),
        },
        None => serde_json::Map::new(),
    };
    obj.insert("argv".into(), json!(command));
    Ok(Value::Object(obj).to_string())
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32, CliError> {
    let socket = socket_path(cli.socket.clone());
    let as_json = cli.json;
    if let Command::Wal { command } = cli.command {
        return wal(command);
    }
    if cli.vsock.is_some() && cli.tcp.is_some() {
        return Err(CliError::new(2, "give --tcp or --vsock, not both"));
    }
    if cli.tls_ca.is_some() && cli.tcp.is_none() {
        return Err(CliError::new(
            2,
            "--tls-ca is for --tcp (vsock and the Unix socket need no TLS)",
        ));
    }
    let (mut client, target) = match (&cli.tcp, &cli.vsock) {
        (None, Some(addr)) => (
            connect_over_vsock(addr, cli.token_file.as_deref()).await?,
            format!("vsock {addr}"),
        ),
        (Some(addr), _) => (
            connect_over_tcp(addr, cli.token_file.as_deref(), cli.tls_ca.as_deref()).await?,
            if cli.tls_ca.is_some() {
                format!("{addr} (TLS)")
            } else {
                format!("{addr} (plain TCP: if it serves TLS, give its CA with --tls-ca)")
            },
        ),
        (None, None) => (connect(&socket).await?, socket.display().to_string()),
    };
    let st = |s: Status| from_status(describe(&s), &target);
    match cli.command {
        Command::Submit { kind, options } => {
            let args = options.args.clone().unwrap_or_else(|| "{}".into());
            let job = submit_with_retry(&mut client, spec(kind, args, &options), &target).await?;
            if as_json {
                print_job(&job, true)
            } else {
                println!("{}", job.id)
            }
        }
        Command::Exec { options, command } => {
            let args = exec_args(&options, command)?;
            let job = submit_with_retry(&mut client, spec("exec".into(), args, &options), &target)
                .await?;
            if as_json {
                print_job(&job, true)
            } else {
                println!("{}", job.id)
            }
        }
        Command::Get { id } => {
            let job = client
                .get(proto::GetRequest { id })
                .await
                .map_err(st)?
                .into_inner();
            if as_json {
                print_job(&job, true);
            } else {
                println!("{:#}", job_json(&job));
            }
        }
        Command::Ls { state, limit } => {
            let state = match state {
                None => proto::JobState::Unspecified,
                Some(s) => JobState::from_name(&s)
                    .ok_or_else(|| CliError::new(2, format!("unknown state {s:?}")))?
                    .to_proto(),
            };
            let mut token = String::new();
            let mut shown = 0;
            loop {
                let page = client
                    .list(proto::ListRequest {
                        state: state as i32,
                        page_token: token.clone(),
                        page_size: (limit - shown).clamp(1, 1000) as u32,
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                for j in &page.jobs {
                    if shown < limit {
                        print_job(j, as_json);
                        shown += 1;
                    }
                }
                if page.next_page_token.is_empty() || shown >= limit {
                    break;
                }
                token = page.next_page_token;
            }
        }
        Command::Cancel { id } => {
            let job = client
                .cancel(proto::CancelRequest { id })
                .await
                .map_err(st)?
                .into_inner();
            print_job(&job, as_json);
        }
        Command::Wait { id, timeout } => {
            let job = client
                .wait(proto::WaitRequest {
                    id,
                    timeout_seconds: timeout,
                })
                .await
                .map_err(st)?
                .into_inner();
            print_job(&job, as_json);
            return Ok(if job.state == proto::JobState::Succeeded as i32 {
                0
            } else {
                1
            });
        }
        Command::Logs { id, stderr } => {
            let logs = client
                .logs(proto::LogsRequest { id })
                .await
                .map_err(st)?
                .into_inner();
            let (bytes, cut) = if stderr {
                (logs.stderr, logs.stderr_truncated)
            } else {
                (logs.stdout, logs.stdout_truncated)
            };
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            let _ = out.flush();
            if cut {
                eprintln!("tiffany: output truncated at the daemon's capture limit");
            }
        }
        Command::Watch { id } => {
            let mut stream = client
                .watch(proto::WatchRequest { id })
                .await
                .map_err(st)?
                .into_inner();
            let live = std::io::stdout().is_terminal() && !as_json;
            let mut table: std::collections::BTreeMap<u64, proto::Job> = Default::default();
            loop {
                let event = match stream.message().await {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(s) => return Err(st(s)),
                };
                let Some(job) = event.job else { continue };
                // Watching one job ends with its end.
                let done = id.is_some()
                    && state_name(job.state) != "queued"
                    && state_name(job.state) != "running";
                if live {
                    table.insert(job.id, job);
                    while table.len() > 30 {
                        table.pop_first();
                    }
                    let mut out = String::from("\x1b[H\x1b[2J      id  state      kind   prio\n");
                    for j in table.values() {
                        out.push_str(&job_line(j));
                        out.push('\n');
                    }
                    print!("{out}");
                    let _ = std::io::stdout().flush();
                } else {
                    print_job(&job, as_json);
                    let _ = std::io::stdout().flush();
                }
                if done {
                    break;
                }
            }
        }
        Command::Shutdown { grace } => {
            client
                .shutdown(proto::ShutdownRequest {
                    grace_seconds: grace,
                })
                .await
                .map_err(st)?;
            if !as_json {
                println!("tiffanyd is draining");
            }
        }
        Command::Health => {
            let h = client
                .health(proto::HealthRequest {})
                .await
                .map_err(st)?
                .into_inner();
            if as_json {
                println!(
                    "{}",
                    json!({"status": h.status, "version": h.version, "queued": h.queued, "running": h.running, "jobs": h.jobs})
                );
            } else {
                println!(
                    "{} (version {}): {} queued, {} running, {} jobs",
                    h.status, h.version, h.queued, h.running, h.jobs
                );
            }
        }
        Command::Wal { .. } => unreachable!("handled above"),
    }
    Ok(0)
}

/// The offline log tools.
fn wal(command: WalCommand) -> Result<i32, CliError> {
    use tiffany_daemon::store::{JobStore, LogRecord, Replayed, WalStore, log_path};
    match command {
        WalCommand::Verify { data_dir } => {
            let path = log_path(&data_dir);
            let replay = tiffany_wal::read(&path, &tiffany_wal::Options::new().create(false))
                .map_err(|e| CliError::new(1, format!("{}: {e}", path.display())))?;
            for r in &replay.records {
                if let Err(e) = LogRecord::decode(r.version, &r.body) {
                    return Err(CliError::new(
                        1,
                        format!("{}: record at byte {}: {e}", path.display(), r.offset),
                    ));
                }
            }
            match replay.dropped {
                Some(d) => {
                    println!(
                        "{}: {} good records, then {d}",
                        path.display(),
                        replay.records.len()
                    );
                    Ok(1)
                }
                None => {
                    println!("{}: ok, {} records", path.display(), replay.records.len());
                    Ok(0)
                }
            }
        }
        WalCommand::Inspect { data_dir } => {
            let path = log_path(&data_dir);
            let replay = tiffany_wal::read(&path, &tiffany_wal::Options::new().create(false))
                .map_err(|e| CliError::new(1, format!("{}: {e}", path.display())))?;
            let mut out = std::io::stdout().lock();
            for r in &replay.records {
                let body: Value = serde_json::from_slice(&r.body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into()));
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"offset": r.offset, "version": r.version, "record": body})
                );
            }
            if let Some(d) = replay.dropped {
                eprintln!("tiffany: {d}");
            }
            Ok(0)
        }
        WalCommand::Compact { data_dir } => {
            let (store, replayed, warning): (WalStore, Replayed, _) =
                WalStore::open(&data_dir, false, u64::MAX)
                    .map_err(|e| CliError::new(1, format!("{}: {e}", data_dir.display())))?;
            if let Some(w) = warning {
                eprintln!("tiffany: {w}");
            }
            let before = store.stats().size;
            store
                .compact(&mut replayed.jobs.values(), replayed.next_id)
                .map_err(|e| CliError::new(1, e.to_string()))?;
            store.close().map_err(|e| CliError::new(1, e.to_string()))?;
            println!(
                "compacted: {before} -> {} bytes, {} jobs",
                store.stats().size,
                replayed.jobs.len()
            );
            Ok(0)
        }
    }
}

/// `tiffany`'s `main`: parses `args`, runs, returns the exit code.
pub fn main_with<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tiffany: cannot start: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tiffany: {}", e.message);
            e.code
        }
    }
}
