//! Process tasks: output and exit status, input, environment, limits,
//! timeouts and cancellation reaching a whole process group, start errors.
//!
//! Deterministic: no test sleeps to wait for something or asserts on a
//! duration. A timeout test gives a short timeout to a child that would
//! sleep far longer and asserts on `timed_out`. Where a test must see a
//! process die, it waits on the process's pidfd (a bounded watchdog against
//! hangs, never an assertion on time). The timeouts that must let a shell
//! start a grandchild and print its pid first are a second: generous on a
//! loaded machine, and the tests run side by side. One test must cancel
//! after the process task has reaped its child, which no event reports: it
//! looks every millisecond, bounded. Every run is bounded too
//! ([`bounded`]): a run that never ends fails its test.
#![cfg(all(feature = "async-io", target_os = "linux"))]

use std::cell::RefCell;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a signalled child may take to exit, and the reaper to reap
/// it: far more than either takes (milliseconds), and well under a mutation
/// run's per-mutant timeout, so a child that is never stopped or reaped
/// fails an assertion rather than a timeout.
const EXIT_BOUND: Duration = Duration::from_secs(10);
use tiffany_scheduler::process::{self, Completed, ExecError, ExecSpec};
use tiffany_scheduler::{
    EventKind, Interest, Outcome, Scheduler, SpawnOptions, Spawner, TaskEvent, TaskId,
};

fn sched() -> Scheduler {
    Scheduler::builder().build().expect("a poller")
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["sh", "-c", script])
}

/// Runs `f` (which makes its own scheduler and runs it) on a thread of its
/// own, bounded by [`EXIT_BOUND`]: a run that never notices its child's end
/// fails the test instead of hanging it.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    crate::common::within(EXIT_BOUND, f)
}

/// Runs one process task to its end and returns its outcome (bounded).
fn run(spec: ExecSpec) -> Result<Completed, ExecError> {
    bounded(move || {
        let s = sched();
        let id = process::spawn(&s, spec, SpawnOptions::default())?;
        s.run();
        outcome(&s, id)
    })
}

fn outcome(s: &Scheduler, id: TaskId) -> Result<Completed, ExecError> {
    match s.outcome(id).expect("the task ended") {
        Outcome::Done(v) => Ok(v.downcast_ref::<Completed>().expect("a Completed").clone()),
        Outcome::Failed(e) => Err(e
            .payload()
            .and_then(|p| p.downcast_ref::<ExecError>())
            .expect("an ExecError payload")
            .clone()),
        Outcome::Cancelled => panic!("the process task was cancelled"),
    }
}

/// A fresh, empty directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tiffany-process-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pids(out: &[u8]) -> Vec<i32> {
    String::from_utf8_lossy(out)
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect()
}

/// A pidfd for `pid`, or `None` if no such process exists (reaped).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ESRCH)
        );
        return None;
    }
    // SAFETY: a new descriptor we own.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Asserts that the process behind `fd` has exited (waiting for it, within
/// the watchdog).
fn assert_exits(fd: &OwnedFd, what: &str) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, EXIT_BOUND.as_millis() as i32) };
    assert_eq!(n, 1, "{what} is still running");
}

/// Asserts that `pid` no longer exists at all (exited and reaped).
fn assert_reaped(pid: i32) {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    assert_eq!(r, -1, "process {pid} still exists (a zombie?)");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ESRCH)
    );
}

/// Asserts that the child of a timed-out run was reaped and that the
/// grandchild whose pid it printed first is not running.
fn assert_group_gone(done: &Completed) {
    let grandchild = pids(&done.stdout)[0];
    assert_reaped(done.pid as i32);
    // The grandchild held stdout open, so the run ended after it exited; it
    // is an orphan now, reaped (or not yet) by init: it must not be running.
    if let Some(fd) = pidfd(grandchild) {
        assert_exits(&fd, "the grandchild");
    }
}

#[test]
fn output_and_exit_code() {
    let done = run(sh("echo out; echo err >&2; exit 3")).unwrap();
    assert_eq!(done.stdout, b"out\n");
    assert_eq!(done.stderr, b"err\n");
    assert_eq!(done.returncode, Some(3));
    assert_eq!(done.signal, None);
    assert_eq!((done.stdout_bytes, done.stderr_bytes), (4, 4));
    assert!(!done.stdout_truncated && !done.stderr_truncated && !done.timed_out);
    assert!(!done.success());
    assert_reaped(done.pid as i32);
}

#[test]
fn zero_exit_is_success() {
    let done = run(ExecSpec::new(["true"])).unwrap();
    assert_eq!(done.returncode, Some(0));
    assert!(done.success());
    assert!(done.stdout.is_empty());
}

#[test]
fn death_by_signal_is_recorded() {
    let done = run(sh("kill -KILL $$")).unwrap();
    assert_eq!(done.returncode, None);
    assert_eq!(done.signal, Some(libc::SIGKILL));
    assert!(!done.timed_out);
}

#[test]
fn stdin_is_fed_while_output_is_read() {
    // Larger than a pipe's buffer both ways: input and output must flow
    // together or the child and the task would wait for each other.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let done = run(ExecSpec::new(["cat"]).stdin(input.clone())).unwrap();
    assert_eq!(done.returncode, Some(0));
    assert_eq!(done.stdout, input);
}

#[test]
fn without_stdin_the_child_reads_end_of_file() {
    let done = run(ExecSpec::new(["cat"])).unwrap();
    assert_eq!(done.returncode, Some(0));
    assert!(done.stdout.is_empty());
}

#[test]
fn a_child_that_ignores_its_input_does_not_fail_the_run() {
    let done = run(sh("exit 0").stdin(vec![b'x'; 1 << 20])).unwrap();
    assert_eq!(done.returncode, Some(0));
}

#[test]
fn env_extends_and_cwd_applies() {
    let dir = temp_dir("cwd");
    let done = run(
        sh("echo \"$TIFFANY_X\"; pwd; test -n \"$PATH\" && echo inherited")
            .env("TIFFANY_X", "forty two")
            .cwd(&dir),
    )
    .unwrap();
    let expected = format!(
        "forty two\n{}\ninherited\n",
        dir.canonicalize().unwrap().display()
    );
    assert_eq!(String::from_utf8_lossy(&done.stdout), expected);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn env_clear_replaces_the_environment() {
    let done = run(ExecSpec::new(["/usr/bin/env"])
        .env_clear()
        .env("ONLY", "this"))
    .unwrap();
    assert_eq!(done.stdout, b"ONLY=this\n");
}

#[test]
fn output_past_the_limit_is_counted_and_dropped() {
    // A megabyte on stdout against a 1000-byte limit: the child must not
    // stall on a full pipe, and finishes with its stderr line.
    let done = run(sh("head -c 1000000 /dev/zero; echo done >&2").capture_limit(1000)).unwrap();
    assert_eq!(done.returncode, Some(0));
    assert_eq!(done.stdout.len(), 1000);
    assert!(done.stdout_truncated);
    assert_eq!(done.stdout_bytes, 1_000_000);
    assert_eq!(done.stderr, b"done\n");
    assert!(!done.stderr_truncated);
}

#[test]
fn a_zero_limit_keeps_nothing() {
    let done = run(sh("echo abc").capture_limit(0)).unwrap();
    assert!(done.stdout.is_empty());
    assert!(done.stdout_truncated);
    assert_eq!(done.stdout_bytes, 4);
}

/// The run lasts until every output has ended, not only until the child
/// exits: the shell closes its stdout, then leaves a background process
/// that keeps the stderr pipe open and writes to it only once the shell is
/// reaped (while the shell is a zombie, `kill -0` still finds it). The
/// stdout's end comes before the exit, so a run that ended at the exit
/// once one pipe had ended would miss the line, every time.
#[test]
fn the_run_waits_for_each_output_to_end() {
    let done = run(sh("main=$$; echo out; exec >&-; \
         (while kill -0 $main 2>/dev/null; do sleep 0.01; done; echo late >&2) &"))
    .unwrap();
    assert_eq!(done.returncode, Some(0));
    assert_eq!(done.stdout, b"out\n");
    assert_eq!(done.stderr, b"late\n");
}

/// The run lasts until the child exits, not only until its outputs end:
/// a child that closes both first and then reads 4 MiB of input (the task
/// must feed it through many resumes after it saw the outputs end) still
/// has its exit code.
#[test]
fn the_run_waits_for_the_exit_after_the_outputs_end() {
    let input = vec![b'x'; 4 << 20];
    let done = run(sh("exec >&- 2>&-; cat >/dev/null; exit 3").stdin(input)).unwrap();
    assert_eq!(done.returncode, Some(3));
    assert!(done.stdout.is_empty() && done.stderr.is_empty());
}

#[test]
fn timeout_terminates_the_whole_group() {
    // The shell starts a grandchild, prints its pid, and waits for it: both
    // must be gone when the run ends.
    let done = run(sh("sleep 100 & echo $!; wait")
        .timeout(Duration::from_secs(1))
        .kill_grace(Duration::from_secs(60)))
    .unwrap();
    assert!(done.timed_out);
    assert_eq!(done.signal, Some(libc::SIGTERM));
    assert_group_gone(&done);
}

/// A timeout reaches a child that closed its outputs (the stderr alone, or
/// both) and runs on: the timer's "nothing left to stop" check needs the
/// exit *and* both pipes' ends. A run that took a closed pipe for the end
/// would let the child run on: the bounded run fails.
#[test]
fn a_timeout_reaches_a_child_whose_outputs_are_closed() {
    for script in ["exec 2>&-; sleep 100", "exec >&- 2>&-; sleep 100"] {
        let done = run(sh(script)
            .timeout(Duration::from_secs(1))
            .kill_grace(Duration::from_secs(60)))
        .unwrap();
        assert!(done.timed_out, "{script}");
        assert_eq!(done.signal, Some(libc::SIGTERM), "{script}");
        assert_reaped(done.pid as i32);
    }
}

#[test]
fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
    let done = run(sh("trap '' TERM; sleep 100 & echo $!; wait")
        .timeout(Duration::from_secs(1))
        .kill_grace(Duration::from_millis(200)))
    .unwrap();
    assert!(done.timed_out);
    assert_eq!(done.signal, Some(libc::SIGKILL));
    assert_group_gone(&done);
}

#[test]
fn a_zero_grace_kills_at_once() {
    let done = run(sh("sleep 100 & echo $!; wait")
        .timeout(Duration::from_secs(1))
        .kill_grace(Duration::ZERO))
    .unwrap();
    assert!(done.timed_out);
    assert_eq!(done.signal, Some(libc::SIGKILL));
    assert_group_gone(&done);
}

#[test]
fn a_fast_command_does_not_time_out() {
    let done = run(sh("echo quick").timeout(Duration::from_secs(600))).unwrap();
    assert!(!done.timed_out);
    assert_eq!(done.stdout, b"quick\n");
}

/// What the shell of [`cancel_a_running_group`] does after it started the
/// sleeper.
enum Shell<'a> {
    /// `sh -c '<prefix> sleep 100 & echo $$ $! > fifo; wait'`: the shell
    /// waits for the sleeper. The pidfds returned are the shell's and the
    /// sleeper's.
    Waits(&'a str),
    /// `sh -c 'exec >&-; sleep 100 & echo $$ $! > fifo'`: the shell closes
    /// its stdout and exits; the sleeper holds the stderr pipe. The cancel
    /// comes once the process task has reaped the shell. The pidfd returned
    /// is the sleeper's.
    ExitsFirst,
}

/// Runs the `shell` script as a process task with `grace`; a native task
/// learns the shell's and the sleeper's pids through the fifo, opens pidfds
/// for them while they surely run, then cancels the process task. Returns
/// the pids and pidfds once the run ended (the process task cancelled).
fn cancel_a_running_group(shell: Shell<'_>, grace: Duration) -> (Vec<i32>, Vec<OwnedFd>) {
    let dir = temp_dir("cancel");
    let fifo = dir.join("pids");
    let path = CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // Open the reading end first (non-blocking), so the child's open for
    // writing does not wait.
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    assert!(fd >= 0);
    // SAFETY: a new descriptor we own.
    let reader = unsafe { OwnedFd::from_raw_fd(fd) };

    let exits_first = matches!(shell, Shell::ExitsFirst);
    let script = match shell {
        Shell::Waits(prefix) => format!(
            "{prefix} sleep 100 & echo $$ $! > '{}'; wait",
            fifo.display()
        ),
        Shell::ExitsFirst => format!("exec >&-; sleep 100 & echo $$ $! > '{}'", fifo.display()),
    };
    bounded(move || {
        let s = sched();
        let token = s.register_io(&reader).unwrap();
        let exec =
            process::spawn(&s, sh(&script).kill_grace(grace), SpawnOptions::default()).unwrap();
        let watcher = s
            .spawn(move |cx| {
                let mut text = Vec::new();
                loop {
                    cx.io_wait(token, Interest::Readable).unwrap();
                    let mut buf = [0u8; 64];
                    // SAFETY: `buf` is valid for its length.
                    let n = unsafe { libc::read(reader.as_raw_fd(), buf.as_mut_ptr().cast(), 64) };
                    if n > 0 {
                        text.extend_from_slice(&buf[..n as usize]);
                    }
                    if text.ends_with(b"\n") {
                        break;
                    }
                }
                let both = pids(&text);
                let fds: Vec<OwnedFd> = if exits_first {
                    let sleeper = pidfd(both[1]).expect("running");
                    // Until the process task has reaped the shell (a zombie
                    // still has a pidfd), looking every millisecond, bounded.
                    let since = std::time::Instant::now();
                    while pidfd(both[0]).is_some() {
                        assert!(since.elapsed() < EXIT_BOUND, "the shell was never reaped");
                        cx.sleep(Duration::from_millis(1));
                    }
                    vec![sleeper]
                } else {
                    both.iter().map(|&p| pidfd(p).expect("running")).collect()
                };
                assert!(cx.cancel(exec));
                (both, fds)
            })
            .unwrap();
        s.run();
        let _ = std::fs::remove_dir_all(dir);
        assert!(matches!(s.outcome(exec), Some(Outcome::Cancelled)));
        let value = s.value(watcher).expect("the watcher failed");
        let (both, fds) = value.downcast_ref::<(Vec<i32>, Vec<OwnedFd>)>().unwrap();
        let fds = fds.iter().map(|fd| fd.try_clone().unwrap()).collect();
        (both.clone(), fds)
    })
}

#[test]
fn cancel_stops_the_whole_group_and_reaps_the_child() {
    let (both, fds) = cancel_a_running_group(Shell::Waits(""), Duration::from_secs(5));
    assert_exits(&fds[0], "the child");
    assert_exits(&fds[1], "the grandchild");
    assert!(
        process::wait_for_reaper(EXIT_BOUND),
        "the reaper never finished"
    );
    assert_reaped(both[0]);
}

/// A run whose child has exited but whose output is still held by a
/// process of its group (here the stderr alone): a cancel ends that process
/// too.
#[test]
fn cancel_after_the_exit_stops_what_holds_an_output() {
    let (_, fds) = cancel_a_running_group(Shell::ExitsFirst, Duration::from_secs(5));
    assert_exits(&fds[0], "the sleeper holding the stderr pipe");
}

/// A cancelled child that ignores `SIGTERM` is the reaper's until its grace
/// ends or it exits: counted in `pending_reaps` meanwhile, not after.
#[test]
fn a_child_being_reaped_is_pending_until_it_exits() {
    let (both, fds) =
        cancel_a_running_group(Shell::Waits("trap '' TERM;"), Duration::from_secs(600));
    assert_eq!(process::pending_reaps(), 1, "the reaper has the child");
    assert!(!process::wait_for_reaper(Duration::ZERO));
    // Ended from another thread, long before its grace, while this one
    // waits for the reaper: the wait ends with the reap. (The delay gives a
    // wait that does not wait the time to return first and fail.)
    let shell = both[0];
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: plain integer arguments; the pid is a live child's (not
        // reaped: the reaper still has it).
        unsafe { libc::kill(shell, libc::SIGKILL) }
    });
    assert!(
        process::wait_for_reaper(EXIT_BOUND),
        "the wait did not last until the reap"
    );
    assert_eq!(killer.join().unwrap(), 0);
    assert_exits(&fds[0], "the child");
    assert_eq!(process::pending_reaps(), 0);
    assert_reaped(both[0]);
    assert_exits(&fds[1], "the grandchild (killed with the group)");
}

#[test]
fn cancel_before_start_runs_nothing() {
    bounded(|| {
        let dir = temp_dir("unstarted");
        let marker = dir.join("ran");
        let s = sched();
        let exec = process::spawn(
            &s,
            ExecSpec::new(["touch".into(), marker.clone().into_os_string()]),
            SpawnOptions::default(),
        )
        .unwrap();
        assert!(s.cancel(exec));
        s.run();
        assert!(matches!(s.outcome(exec), Some(Outcome::Cancelled)));
        assert!(!marker.exists());
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn command_not_found_is_an_error_with_its_errno() {
    for argv in [["/nonexistent/tiffany-prog"], ["tiffany-no-such-command"]] {
        let err = run(ExecSpec::new(argv)).unwrap_err();
        assert!(matches!(err, ExecError::Start { .. }), "{err:?}");
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert!(err.to_string().contains("tiffany-"), "{err}");
    }
}

#[test]
fn a_file_that_is_not_executable_is_refused_with_eacces() {
    let dir = temp_dir("noexec");
    let file = dir.join("script");
    std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
    let err = run(ExecSpec::new([file.into_os_string()])).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EACCES), "{err:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_working_directory_is_a_start_error() {
    let err = run(sh("true").cwd("/nonexistent/tiffany-dir")).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err:?}");
}

#[test]
fn invalid_specs_are_refused_at_spawn() {
    let s = sched();
    let empty: [&str; 0] = [];
    let cases = [
        ExecSpec::new(empty),
        ExecSpec::new([""]),
        ExecSpec::new(["echo", "a\0b"]),
        sh("true").env("A=B", "x"),
        sh("true").env("", "x"),
        sh("true").env("A", "x\0y"),
        sh("true").cwd("/tmp/a\0b"),
    ];
    for spec in cases {
        let err = process::spawn(&s, spec.clone(), SpawnOptions::default()).unwrap_err();
        assert!(
            matches!(err, ExecError::InvalidSpec(_)),
            "{spec:?}: {err:?}"
        );
    }
    assert_eq!(s.live_tasks(), 0);
}

#[test]
fn many_processes_run_side_by_side_with_other_tasks() {
    bounded(|| {
        let s = sched();
        let ids: Vec<TaskId> = (0..16)
            .map(|i| process::spawn(&s, sh(&format!("echo {i}")), SpawnOptions::default()).unwrap())
            .collect();
        let ticker = s
            .spawn(|cx| {
                for _ in 0..100 {
                    cx.yield_now();
                }
                "ticked"
            })
            .unwrap();
        s.run();
        for (i, id) in ids.into_iter().enumerate() {
            assert_eq!(outcome(&s, id).unwrap().stdout, format!("{i}\n").as_bytes());
        }
        assert_eq!(
            s.value(ticker).unwrap().downcast_ref::<&str>(),
            Some(&"ticked")
        );
    });
}

#[test]
fn the_timeout_is_real_time_under_the_virtual_clock() {
    bounded(|| {
        // The virtual clock jumps an hour while the child runs; the child's
        // ten-minute timeout must not fire because of it.
        let s = crate::common::vsched();
        let exec = process::spawn(
            &s,
            sh("echo fine").timeout(Duration::from_secs(600)),
            SpawnOptions::default(),
        )
        .unwrap();
        s.spawn(|cx| cx.sleep(Duration::from_secs(3600))).unwrap();
        s.run();
        let done = outcome(&s, exec).unwrap();
        assert!(!done.timed_out);
        assert_eq!(done.stdout, b"fine\n");
    });
}

#[test]
fn joiners_receive_the_completed_value() {
    bounded(|| {
        let s = sched();
        let exec = process::spawn(&s, sh("printf hi"), SpawnOptions::default()).unwrap();
        let joiner = s
            .spawn(move |cx| match cx.join(exec) {
                tiffany_scheduler::JoinResult::Success(v) => {
                    v.downcast_ref::<Completed>().unwrap().stdout.clone()
                }
                other => panic!("{other:?}"),
            })
            .unwrap();
        s.run();
        assert_eq!(
            s.value(joiner).unwrap().downcast_ref::<Vec<u8>>(),
            Some(&b"hi".to_vec())
        );
    });
}

#[test]
fn the_start_and_the_stop_are_in_the_telemetry() {
    bounded(|| {
        let s = sched();
        let log = crate::common::logged(&s);
        let quick = process::spawn(&s, sh("true"), SpawnOptions::default()).unwrap();
        let slow = process::spawn(
            &s,
            sh("trap '' TERM; sleep 100")
                .timeout(Duration::from_secs(1))
                .kill_grace(Duration::from_millis(100)),
            SpawnOptions::default(),
        )
        .unwrap();
        s.run();
        let messages = |id: TaskId| -> Vec<String> {
            log.events()
                .into_iter()
                .filter(|e| e.task == Some(id))
                .filter_map(|e| match e.kind {
                    tiffany_scheduler::EventKind::Log { message } => Some(message.to_string()),
                    _ => None,
                })
                .collect()
        };
        let pid = outcome(&s, quick).unwrap().pid;
        assert_eq!(messages(quick), [format!("exec: started sh as pid {pid}")]);
        let pid = outcome(&s, slow).unwrap().pid;
        assert_eq!(
            messages(slow),
            [
                format!("exec: started sh as pid {pid}"),
                format!("exec: timeout, SIGTERM to process group {pid}"),
                format!("exec: timeout, SIGKILL to process group {pid}"),
            ]
        );
    });
}

/// A process task whose I/O registration is taken away under it (its wait
/// answered with an error by the kernel) fails with that error, and its
/// child is stopped; it does not wait again on a token it no longer has
/// (that spins until the bound).
#[test]
fn a_kernel_error_fails_the_run_and_stops_the_child() {
    let (error, pid) = bounded(|| {
        let s = sched();
        let log = crate::common::logged(&s);
        let exec = process::spawn(&s, sh("sleep 100"), SpawnOptions::default()).unwrap();
        // A subscriber runs on the scheduler's thread: once the process
        // task waits on its epoll set, it takes the registration away.
        let owner = s.clone();
        let mut done = false;
        s.subscribe(move |e: &TaskEvent| {
            if let EventKind::IoWait { token, .. } = e.kind
                && e.task == Some(exec)
                && !done
            {
                done = true;
                assert!(owner.deregister_io(token));
            }
        });
        s.run();
        let pid = log.events().into_iter().find_map(|e| match e.kind {
            EventKind::Log { message } if e.task == Some(exec) => message
                .strip_prefix("exec: started sh as pid ")
                .map(|p| p.parse::<i32>().unwrap()),
            _ => None,
        });
        (
            outcome(&s, exec).unwrap_err(),
            pid.expect("the start was logged"),
        )
    });
    assert!(matches!(error, ExecError::Kernel(_)), "{error:?}");
    if let Some(fd) = pidfd(pid) {
        assert_exits(&fd, "the child");
    }
}

/// A process task abandoned by an abort (its body dropped without being
/// resumed again) still stops its child: dropping the body stops it.
#[test]
fn an_abandoned_process_task_stops_its_child() {
    let child = bounded(|| {
        let s = sched();
        let exec = process::spawn(&s, sh("sleep 100"), SpawnOptions::default()).unwrap();
        // A subscriber runs on the scheduler's thread: it learns the child's
        // pid from the start's log line and, once the process task waits on
        // its child, takes a pidfd for it and aborts the run.
        let handle = s.handle();
        let child = Rc::new(RefCell::new(None));
        let seen = Rc::clone(&child);
        let mut pid = None;
        s.subscribe(move |e: &TaskEvent| {
            if e.task != Some(exec) {
                return;
            }
            match &e.kind {
                EventKind::Log { message } => {
                    pid = message
                        .strip_prefix("exec: started sh as pid ")
                        .map(|p| p.parse::<i32>().unwrap());
                }
                EventKind::IoWait { .. } if seen.borrow().is_none() => {
                    let pid = pid.expect("the start is logged before the wait");
                    *seen.borrow_mut() = Some(pidfd(pid).expect("the child runs"));
                    handle.abort().unwrap();
                }
                _ => {}
            }
        });
        s.run();
        assert!(matches!(s.outcome(exec), Some(Outcome::Cancelled)));
        child.take().expect("the process task waited")
    });
    assert_exits(&child, "the child of the abandoned task");
}
