//! The process task's body: a small state machine the scheduler resumes.
//!
//! Each resume drains what the private epoll set reports (output, room for
//! input, the child's exit, the timer), then either ends the task or asks the
//! kernel to wait until the set is readable again.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::sys::{self, Epoll, Timer};
use super::{Completed, ExecError, ExecSpec, reaper};
use crate::body::{Step, TaskBody};
use crate::io::{Interest, IoToken};
use crate::outcome::{TaskError, Value};
use crate::syscall::{Resume, SystemCall};

/// Keys of the sources in the private epoll set.
const KEY_PIDFD: u64 = 0;
const KEY_STDOUT: u64 = 1;
const KEY_STDERR: u64 = 2;
const KEY_STDIN: u64 = 3;
const KEY_TIMER: u64 = 4;

/// Reads per stream per resume: a child that writes without pause still
/// lets the task give the thread back (its quantum is charged meanwhile).
const READS_PER_STEP: usize = 16;
/// Bytes per read.
const CHUNK: usize = 16 * 1024;

/// One output pipe and what was captured from it.
struct Capture {
    pipe: Option<OwnedFd>,
    key: u64,
    data: Vec<u8>,
    total: u64,
    limit: usize,
}

impl Capture {
    fn new(pipe: Option<OwnedFd>, key: u64, limit: usize) -> Self {
        Capture {
            pipe,
            key,
            data: Vec::new(),
            total: 0,
            limit,
        }
    }

    /// Keeps what fits under the limit; counts the rest.
    fn keep(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.limit.saturating_sub(self.data.len());
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Reads what is available now (bounded); closes the pipe at its end.
    fn drain(&mut self, epoll: &Epoll, scratch: &mut [u8]) {
        for _ in 0..READS_PER_STEP {
            let Some(fd) = self.pipe.as_ref().map(AsRawFd::as_raw_fd) else {
                return;
            };
            match sys::read(fd, scratch) {
                Ok(Some(0)) | Err(_) => {
                    // End of stream (or a broken pipe, which ends it too).
                    epoll.remove(fd);
                    self.pipe = None;
                    return;
                }
                Ok(Some(n)) => self.keep(&scratch[..n]),
                Ok(None) => return,
            }
        }
    }

    fn truncated(&self) -> bool {
        self.total > self.data.len() as u64
    }
}

/// Where a run is in its timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Within the timeout (or none was set).
    Running,
    /// The timeout passed: the group got `SIGTERM`; the timer now measures the grace.
    Terminating,
    /// The grace passed too: the group got `SIGKILL`.
    Killed,
}

/// A child being watched.
struct Running {
    child: Child,
    pgid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    status: Option<Option<ExitStatus>>,
    stdin: Option<OwnedFd>,
    input: Vec<u8>,
    written: usize,
    stdout: Capture,
    stderr: Capture,
    timer: Option<Timer>,
    phase: Phase,
    kill_grace: Duration,
    keys: Vec<u64>,
    scratch: Vec<u8>,
    /// Messages for the telemetry, made one `Log` call each between waits.
    notes: Vec<String>,
}

impl Running {
    /// Starts the child and puts its descriptors in `epoll`.
    fn start(spec: ExecSpec, epoll: &Epoll) -> Result<Running, ExecError> {
        let ExecSpec {
            argv,
            env,
            env_clear,
            cwd,
            stdin,
            capture_limit,
            timeout,
            kill_grace,
        } = spec;
        let Some((program, args)) = argv.split_first() else {
            return Err(ExecError::InvalidSpec("argv is empty".into()));
        };
        let mut cmd = Command::new(program);
        cmd.args(args);
        if env_clear {
            cmd.env_clear();
        }
        cmd.envs(env);
        if let Some(dir) = &cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group, so that a timeout or a cancel reaches every
        // process it starts.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| ExecError::start(program, &e))?;
        let pgid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        let pipe_in = child.stdin.take().map(OwnedFd::from);
        let pipe_out = child.stdout.take().map(OwnedFd::from);
        let pipe_err = child.stderr.take().map(OwnedFd::from);
        let mut run = Running {
            child,
            pgid,
            pidfd: None,
            status: None,
            stdin: pipe_in,
            input: stdin.unwrap_or_default(),
            written: 0,
            stdout: Capture::new(pipe_out, KEY_STDOUT, capture_limit),
            stderr: Capture::new(pipe_err, KEY_STDERR, capture_limit),
            timer: None,
            phase: Phase::Running,
            kill_grace,
            keys: Vec::with_capacity(8),
            scratch: Vec::new(),
            // The program's name and the pid only: arguments may hold secrets.
            notes: vec![format!(
                "exec: started {} as pid {pgid}",
                Path::new(program).display()
            )],
        };
        // From here on a failure must not leave the child running.
        match run.watch(epoll, timeout) {
            Ok(()) => Ok(run),
            Err(e) => {
                run.stop(epoll);
                Err(ExecError::io("setting up the watch on the child", &e))
            }
        }
    }

    fn watch(&mut self, epoll: &Epoll, timeout: Option<Duration>) -> std::io::Result<()> {
        let pidfd = sys::pidfd_open(self.pgid)?;
        epoll.add(pidfd.as_raw_fd(), KEY_PIDFD, libc::EPOLLIN)?;
        self.pidfd = Some(pidfd);
        for capture in [&self.stdout, &self.stderr] {
            if let Some(fd) = capture.pipe.as_ref().map(AsRawFd::as_raw_fd) {
                sys::set_nonblocking(fd)?;
                epoll.add(fd, capture.key, libc::EPOLLIN)?;
            }
        }
        if let Some(fd) = self.stdin.as_ref().map(AsRawFd::as_raw_fd) {
            sys::set_nonblocking(fd)?;
            epoll.add(fd, KEY_STDIN, libc::EPOLLOUT)?;
        }
        if let Some(t) = timeout {
            let timer = Timer::new()?;
            timer.arm(t)?;
            epoll.add(timer.as_raw_fd(), KEY_TIMER, libc::EPOLLIN)?;
            self.timer = Some(timer);
        }
        self.scratch = vec![0; CHUNK];
        Ok(())
    }

    /// Handles what is ready now; returns whether the run is over.
    fn advance(&mut self, epoll: &Epoll) -> std::io::Result<bool> {
        let mut keys = std::mem::take(&mut self.keys);
        epoll.ready(&mut keys)?;
        for &key in &keys {
            match key {
                KEY_STDOUT => self.stdout.drain(epoll, &mut self.scratch),
                KEY_STDERR => self.stderr.drain(epoll, &mut self.scratch),
                KEY_STDIN => self.feed(epoll),
                KEY_PIDFD => self.check_exit(epoll),
                _ => {}
            }
        }
        // The timer last: a run that ended in this same wake-up is not stopped.
        if keys.contains(&KEY_TIMER) {
            self.on_timer(epoll);
        }
        self.keys = keys;
        let exited = self.status.is_some();
        if exited && self.stdin.is_some() {
            self.close_stdin(epoll);
        }
        let pipes_open = self.stdout.pipe.is_some() || self.stderr.pipe.is_some();
        if exited && pipes_open && self.phase == Phase::Killed {
            // A process that left the group may hold the pipes: take what is
            // there and stop waiting for their end.
            self.stdout.drain(epoll, &mut self.scratch);
            self.stderr.drain(epoll, &mut self.scratch);
            return Ok(true);
        }
        Ok(exited && !pipes_open)
    }

    /// Writes what the pipe takes of the input; closes it when all is written
    /// or the child closed its end.
    fn feed(&mut self, epoll: &Epoll) {
        while let Some(fd) = self.stdin.as_ref().map(AsRawFd::as_raw_fd) {
            let rest = &self.input[self.written..];
            if rest.is_empty() {
                return self.close_stdin(epoll);
            }
            match sys::write(fd, rest) {
                Ok(Some(n)) => self.written += n,
                Ok(None) => return,
                // EPIPE: the child does not read its input; not an error of the run.
                Err(_) => return self.close_stdin(epoll),
            }
        }
    }

    fn close_stdin(&mut self, epoll: &Epoll) {
        if let Some(fd) = self.stdin.take() {
            epoll.remove(fd.as_raw_fd());
        }
    }

    fn check_exit(&mut self, epoll: &Epoll) {
        match self.child.try_wait() {
            Ok(Some(status)) => self.status = Some(Some(status)),
            Ok(None) => return,
            // Reaped by someone else (SIGCHLD ignored, say): its status is lost.
            Err(_) => self.status = Some(None),
        }
        if let Some(fd) = self.pidfd.take() {
            epoll.remove(fd.as_raw_fd());
        }
    }

    fn on_timer(&mut self, epoll: &Epoll) {
        let Some(timer) = &self.timer else { return };
        if !timer.fired() {
            return;
        }
        if self.status.is_some() && self.stdout.pipe.is_none() && self.stderr.pipe.is_none() {
            // The run ended in the same wake-up: nothing is left to stop.
            return;
        }
        match self.phase {
            Phase::Running if !self.kill_grace.is_zero() => {
                sys::kill_group(self.pgid, libc::SIGTERM);
                self.notes.push(format!(
                    "exec: timeout, SIGTERM to process group {}",
                    self.pgid
                ));
                self.phase = Phase::Terminating;
                if timer.arm(self.kill_grace).is_err() {
                    self.kill(epoll);
                }
            }
            Phase::Running | Phase::Terminating => self.kill(epoll),
            Phase::Killed => {}
        }
    }

    fn kill(&mut self, epoll: &Epoll) {
        sys::kill_group(self.pgid, libc::SIGKILL);
        self.notes.push(format!(
            "exec: timeout, SIGKILL to process group {}",
            self.pgid
        ));
        self.phase = Phase::Killed;
        if let Some(timer) = self.timer.take() {
            epoll.remove(timer.as_raw_fd());
        }
    }

    fn completed(self) -> Completed {
        let status = self.status.flatten();
        Completed {
            pid: self.child.id(),
            returncode: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stdout_truncated: self.stdout.truncated(),
            stderr_truncated: self.stderr.truncated(),
            stdout_bytes: self.stdout.total,
            stderr_bytes: self.stderr.total,
            stdout: self.stdout.data,
            stderr: self.stderr.data,
            timed_out: self.phase != Phase::Running,
        }
    }

    /// Stops the child without waiting for it: the group is signalled now,
    /// the child reaped in the background (see [`reaper`]).
    fn stop(mut self, epoll: &Epoll) {
        for fd in [
            self.pidfd.as_ref(),
            self.stdout.pipe.as_ref(),
            self.stderr.pipe.as_ref(),
            self.stdin.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            epoll.remove(fd.as_raw_fd());
        }
        if let Some(timer) = &self.timer {
            epoll.remove(timer.as_raw_fd());
        }
        if self.status.is_some() {
            // Reaped already; only stragglers of the group may be left.
            if self.stdout.pipe.is_some() || self.stderr.pipe.is_some() {
                sys::kill_group(self.pgid, libc::SIGKILL);
            }
            return;
        }
        match self.pidfd.take() {
            Some(pidfd) => reaper::stop(self.child, pidfd, self.kill_grace),
            None => {
                // No pidfd to wait on (it could not be opened): kill and reap now.
                sys::kill_group(self.pgid, libc::SIGKILL);
                let _ = self.child.wait();
            }
        }
    }
}

enum State {
    NotStarted(ExecSpec),
    Running(Box<Running>),
    Ended,
}

/// The body of a process task.
pub(super) struct ExecTask {
    state: State,
    epoll: Arc<Epoll>,
    token: IoToken,
}

impl ExecTask {
    pub(super) fn new(spec: ExecSpec, epoll: Arc<Epoll>, token: IoToken) -> Self {
        ExecTask {
            state: State::NotStarted(spec),
            epoll,
            token,
        }
    }

    fn stop(&mut self) {
        if let State::Running(run) = std::mem::replace(&mut self.state, State::Ended) {
            run.stop(&self.epoll);
        }
    }

    fn fail(&mut self, error: ExecError) -> Step {
        self.stop();
        Step::Failed(TaskError::with_payload(
            error.to_string(),
            Value::new(error),
        ))
    }

    fn wait(&self) -> Step {
        Step::Syscall(SystemCall::IoWait {
            token: self.token,
            interest: Interest::Readable,
            timeout: None,
            after_would_block: false,
        })
    }
}

impl TaskBody for ExecTask {
    fn resume(&mut self, input: Option<Resume>) -> Step {
        match input {
            Some(Resume::Cancelled) => {
                self.stop();
                return Step::Cancelled;
            }
            Some(Resume::Error(e)) => return self.fail(ExecError::Kernel(e)),
            _ => {}
        }
        if let State::NotStarted(_) = &self.state {
            let State::NotStarted(spec) = std::mem::replace(&mut self.state, State::Ended) else {
                return self.fail(ExecError::InvalidSpec("process task resumed twice".into()));
            };
            match Running::start(spec, &self.epoll) {
                Ok(run) => self.state = State::Running(Box::new(run)),
                Err(e) => return self.fail(e),
            }
        }
        let State::Running(run) = &mut self.state else {
            return self.fail(ExecError::InvalidSpec(
                "process task resumed after it ended".into(),
            ));
        };
        match run.advance(&self.epoll) {
            // A note is logged first (answered at once); the next resume
            // looks at the set again, which changes nothing for a run that
            // has ended.
            Ok(_) if !run.notes.is_empty() => Step::Syscall(SystemCall::Log(run.notes.remove(0))),
            Ok(false) => self.wait(),
            Ok(true) => match std::mem::replace(&mut self.state, State::Ended) {
                State::Running(run) => Step::Done(Value::new(run.completed())),
                _ => Step::Done(Value::unit()),
            },
            Err(e) => self.fail(ExecError::io("watching the child", &e)),
        }
    }
}

impl Drop for ExecTask {
    fn drop(&mut self) {
        // Dropped while its child runs (its scheduler went away): stop it.
        self.stop();
    }
}
