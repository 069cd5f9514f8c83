//! Process tasks: run a command as a task, its output captured, its whole
//! process group stopped on timeout or cancel.
//!
//! Agents run tools, and tools are processes. A *process task* starts a
//! command and ends when the command has ended, with a [`Completed`]: the exit
//! code or the signal that killed it, and what it wrote to stdout and stderr.
//! Other tasks join it like any task (a Python task awaits it).
//!
//! ```
//! use std::time::Duration;
//! use tiffany_scheduler::{JoinResult, Scheduler, SpawnOptions};
//! use tiffany_scheduler::process::{self, Completed, ExecSpec};
//!
//! let sched = Scheduler::new();
//! let spec = ExecSpec::new(["sh", "-c", "echo hello; exit 3"]).timeout(Duration::from_secs(10));
//! let task = process::spawn(&sched, spec, SpawnOptions::default()).unwrap();
//! sched.run();
//! let done = sched.value(task).unwrap();
//! let done = done.downcast_ref::<Completed>().unwrap();
//! assert_eq!(done.stdout, b"hello\n");
//! assert_eq!(done.returncode, Some(3));
//! ```
//!
//! ## Waiting for a child without blocking the thread
//!
//! A scheduler's thread runs every task, so no task may block it, and the
//! usual way to wait for a child, `waitpid(2)`, blocks. Linux gives a process
//! a file descriptor instead: a *pidfd* (`pidfd_open(2)`) becomes readable
//! when the process exits. With it, a child is one more I/O source, like the
//! pipes of its stdin, stdout and stderr.
//!
//! A kernel task waits on one source at a time, and a process task has up to
//! five: the pidfd, the three pipes, and a timer for its timeout. So each
//! process task keeps a private epoll set holding them all (level-triggered),
//! and registers the set's own descriptor with the scheduler as one source:
//! an epoll descriptor is readable while any descriptor in its set is ready.
//! The task waits until its set is readable, asks the set what is ready
//! (`epoll_wait` with a zero timeout), handles it — reads output, writes
//! input, collects the exit status, acts on the timer — and waits again. The
//! child is reaped only once its pidfd says it has exited, so the reap never
//! blocks.
//!
//! ## Output within limits
//!
//! Each of stdout and stderr is captured up to [`ExecSpec::capture_limit`]
//! bytes. What comes after is still read (a child must never stall on a full
//! pipe) but only counted: [`Completed::stdout_bytes`] says how much the
//! child wrote, [`Completed::stdout_truncated`] whether some was dropped.
//! Memory per task is bounded by twice the limit plus a 16 KiB read buffer.
//!
//! A run ends when the child has exited *and* both pipes have reached their
//! end, as Python's `subprocess.run` does: a background process that keeps
//! the pipes open keeps the run going (until its timeout).
//!
//! ## Process groups, timeouts and cancellation
//!
//! The child starts in a process group of its own, so a signal to the group
//! reaches whatever it started (a shell's children, a build's compilers).
//! When the [timeout](ExecSpec::timeout) passes, the group gets `SIGTERM`;
//! if the run has not ended after [`ExecSpec::kill_grace`] (2 s by default),
//! the group gets `SIGKILL`, and the run ends as soon as the child is reaped.
//! [`Completed::timed_out`] records it. A process that left the group
//! (`setsid`, a daemon) is beyond reach, as it is for a shell.
//!
//! The timeout is measured on the real monotonic clock (a `timerfd` in the
//! task's epoll set), also under the scheduler's virtual clock: a child runs
//! in real time whatever the scheduler's clock says.
//!
//! Cancelling the task stops the child the same way: `SIGTERM` to the group
//! at once, `SIGKILL` after the grace. A cancelled task cannot wait (its
//! blocking calls are answered `Cancelled`), so it ends at once and hands the
//! child to a short-lived background thread that waits out the grace, kills
//! the group and reaps the child: no zombie is left behind, and the
//! scheduler's thread never blocks. [`wait_for_reaper`] waits for those
//! threads (a daemon, before it exits).
//!
//! ## Telemetry
//!
//! Besides its task's usual events, a process task logs (a `Log` event, in
//! the PAL) when it starts its child — the program's name and the pid, never
//! the arguments, which may hold secrets — and each signal a timeout sends
//! to the group.
//!
//! ## Errors
//!
//! A spec that cannot describe a command (empty argv, a NUL byte in an
//! argument) is refused by [`spawn`] with [`ExecError::InvalidSpec`]. A
//! command that cannot start (not found, not executable, a missing working
//! directory) fails the task with [`ExecError::Start`] as the error's
//! payload ([`TaskError::payload`](crate::TaskError::payload)), carrying the
//! OS error number. A non-zero exit is not an error: it is in the
//! [`Completed`].
//!
//! ## Platform
//!
//! Linux 5.3 or later (pidfd), with the `async-io` feature: the private
//! epoll set needs the scheduler's real poller, not the in-memory readiness
//! channel. The module does not exist otherwise.
//!
//! The process must ignore `SIGPIPE` (Rust programs and CPython do), or
//! writing stdin to a child that exits without reading it would kill it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::body::Body;
use crate::error::{SpawnError, SyscallError};
use crate::scheduler::Scheduler;
use crate::task::{SpawnOptions, TaskId};

mod reaper;
mod sys;
mod task;

pub use reaper::{pending_reaps, wait_for_reaper};

/// Default capture limit per stream: 1 MiB.
pub const DEFAULT_CAPTURE_LIMIT: usize = 1 << 20;
/// Default time between `SIGTERM` and `SIGKILL`: 2 s.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// What to run and how: a command line, its environment, working directory
/// and input, and the limits of the run.
///
/// ```
/// use std::time::Duration;
/// use tiffany_scheduler::process::ExecSpec;
///
/// let spec = ExecSpec::new(["grep", "-c", "x"])
///     .env("LC_ALL", "C")
///     .stdin(b"x\ny\nx\n".to_vec())
///     .timeout(Duration::from_secs(5));
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    /// The program (looked up in `PATH` unless it has a slash) and its
    /// arguments. Must not be empty.
    pub argv: Vec<OsString>,
    /// Variables set for the child, on top of the inherited environment or,
    /// with [`env_clear`](Self::env_clear), instead of it.
    pub env: Vec<(OsString, OsString)>,
    /// Start the child with only [`env`](Self::env), inheriting nothing
    /// (Python's `subprocess` semantics for `env=`). Default `false`: extend.
    pub env_clear: bool,
    /// The child's working directory (default: the current one).
    pub cwd: Option<PathBuf>,
    /// Bytes written to the child's stdin, which is then closed. `None`: stdin
    /// is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Bytes kept of each of stdout and stderr; the rest is counted and
    /// dropped. Default [`DEFAULT_CAPTURE_LIMIT`].
    pub capture_limit: usize,
    /// After this long (real time), stop the process group. Default: none.
    pub timeout: Option<Duration>,
    /// Time between `SIGTERM` and `SIGKILL` when stopping the group (zero:
    /// `SIGKILL` at once). Default [`DEFAULT_KILL_GRACE`].
    pub kill_grace: Duration,
}

impl ExecSpec {
    /// A spec running `argv`, with the defaults for everything else.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        ExecSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            stdin: None,
            capture_limit: DEFAULT_CAPTURE_LIMIT,
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the child with only the variables given by [`env`](Self::env).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the bytes written to stdin.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Sets the capture limit per stream, in bytes.
    pub fn capture_limit(mut self, bytes: usize) -> Self {
        self.capture_limit = bytes;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the grace between `SIGTERM` and `SIGKILL`.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Checks that the spec describes a command: a non-empty argv, no NUL
    /// byte in any argument, variable or path, no `=` in a variable's name.
    pub fn validate(&self) -> Result<(), ExecError> {
        let invalid = |what: String| Err(ExecError::InvalidSpec(what));
        if self.argv.is_empty() {
            return invalid("argv is empty".into());
        }
        if self.argv[0].is_empty() {
            return invalid("the program name is empty".into());
        }
        for (i, arg) in self.argv.iter().enumerate() {
            if has_nul(arg) {
                return invalid(format!("argv[{i}] contains a NUL byte"));
            }
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.as_bytes().contains(&b'=') || has_nul(key) {
                return invalid(format!(
                    "environment variable name {key:?} is empty or contains '=' or a NUL byte"
                ));
            }
            if has_nul(value) {
                return invalid(format!("environment variable {key:?} contains a NUL byte"));
            }
        }
        if let Some(dir) = &self.cwd
            && has_nul(dir.as_os_str())
        {
            return invalid("cwd contains a NUL byte".into());
        }
        Ok(())
    }
}

fn has_nul(s: &OsStr) -> bool {
    s.as_bytes().contains(&0)
}

/// How a command ended: the value of a process task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completed {
    /// The child's process id (also its process group's id).
    pub pid: u32,
    /// The exit code, if the child exited (rather than being killed by a signal).
    pub returncode: Option<i32>,
    /// The signal that killed the child, if one did.
    pub signal: Option<i32>,
    /// What the child wrote to stdout, up to the capture limit.
    pub stdout: Vec<u8>,
    /// What the child wrote to stderr, up to the capture limit.
    pub stderr: Vec<u8>,
    /// Bytes the child wrote to stdout in all (kept and dropped).
    pub stdout_bytes: u64,
    /// Bytes the child wrote to stderr in all (kept and dropped).
    pub stderr_bytes: u64,
    /// Whether stdout went past the capture limit (the rest was dropped).
    pub stdout_truncated: bool,
    /// Whether stderr went past the capture limit (the rest was dropped).
    pub stderr_truncated: bool,
    /// Whether the timeout passed and the group was signalled.
    pub timed_out: bool,
}

impl Completed {
    /// Whether the command exited with code 0 within its timeout.
    pub fn success(&self) -> bool {
        self.returncode == Some(0) && !self.timed_out
    }
}

/// Why a process task could not run its command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// The spec does not describe a command (see [`ExecSpec::validate`]).
    InvalidSpec(String),
    /// The command could not be started: not found, not executable, a
    /// missing working directory...
    Start {
        /// The program, as given.
        program: OsString,
        /// The OS error number (`ENOENT`, `EACCES`, ...), when there is one.
        errno: Option<i32>,
        /// The OS's description.
        message: String,
    },
    /// An OS call the task needs failed (out of descriptors, a kernel
    /// without `pidfd_open`...).
    Io {
        /// What the task was doing.
        context: &'static str,
        /// The OS error number, when there is one.
        errno: Option<i32>,
        /// The OS's description.
        message: String,
    },
    /// The scheduler refused the task.
    Spawn(SpawnError),
    /// The scheduler answered a wait with an error (the source was
    /// deregistered under the task).
    Kernel(SyscallError),
}

impl ExecError {
    fn start(program: &OsStr, e: &io::Error) -> Self {
        ExecError::Start {
            program: program.to_owned(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    fn io(context: &'static str, e: &io::Error) -> Self {
        ExecError::Io {
            context,
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    /// The OS error number behind the error, if there is one (`ENOENT` for
    /// a command that was not found).
    pub fn errno(&self) -> Option<i32> {
        match self {
            ExecError::Start { errno, .. } | ExecError::Io { errno, .. } => *errno,
            _ => None,
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::InvalidSpec(what) => write!(f, "invalid command: {what}"),
            ExecError::Start {
                program, message, ..
            } => write!(f, "cannot start {:?}: {message}", program),
            ExecError::Io {
                context, message, ..
            } => write!(f, "process task failed {context}: {message}"),
            ExecError::Spawn(e) => write!(f, "{e}"),
            ExecError::Kernel(e) => write!(f, "process task: {e}"),
        }
    }
}

impl std::error::Error for ExecError {}

/// Spawns a process task running `spec` on `sched`, with `options`
/// (priority, dependencies, name...). The command starts when the task first
/// runs; the task's value is a [`Completed`], its failure payload an
/// [`ExecError`].
///
/// Refused at once, with nothing started, for an invalid spec, when the OS
/// gives no epoll descriptor, or when the scheduler refuses the spawn.
///
/// The task's epoll set stays registered with `sched` until the task has
/// ended: an end callback, which holds a clone of `sched`, deregisters it
/// then. A scheduler dropped while a process task is still pending is
/// therefore kept alive (with the child) until the process exits; `run`,
/// `serve` and `shutdown` end every task, so run or shut a scheduler down
/// before dropping it. The task belongs to `sched` (a shard pool never moves
/// it).
///
/// `spawn` needs the [`Scheduler`] itself, so it is called on the
/// scheduler's thread (from outside tasks, or from an end callback or an
/// event subscriber): a native task cannot register an I/O source.
pub fn spawn(
    sched: &Scheduler,
    spec: ExecSpec,
    options: SpawnOptions,
) -> Result<TaskId, ExecError> {
    spec.validate()?;
    let epoll =
        Arc::new(sys::Epoll::new().map_err(|e| ExecError::io("creating an epoll set", &e))?);
    let token = sched
        .register_io(&*epoll)
        .map_err(|e| ExecError::io("registering the epoll set", &e))?;
    let body = task::ExecTask::new(spec, epoll.clone(), token);
    let id = match sched.spawn_body(options, Body::custom(Box::new(body))) {
        Ok(id) => id,
        Err(e) => {
            sched.deregister_io(token);
            return Err(ExecError::Spawn(e));
        }
    };
    // Deregister before the descriptor closes: a number reused by another
    // source must never be taken out of the poller by this registration.
    let owner = sched.clone();
    if !sched.on_task_end(id, move |_, _| {
        owner.deregister_io(token);
        drop(epoll);
    }) {
        sched.deregister_io(token);
    }
    Ok(id)
}
