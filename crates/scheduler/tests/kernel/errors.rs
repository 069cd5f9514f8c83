//! Error messages are part of the contract: a user reads them in a log or a
//! Python traceback (the bindings pass them on), so each says what went wrong
//! and names what it is about.

use crate::common::*;
#[cfg(all(feature = "async-io", target_os = "linux"))]
use tiffany_scheduler::process::ExecError;
use tiffany_scheduler::*;

#[test]
fn spawn_errors_say_why_the_spawn_was_refused() {
    let t = TaskId::from_raw(7);
    let cases = [
        (
            SpawnError::CapacityExceeded,
            "spawn refused: the scheduler is at its capacity of live tasks",
        ),
        (
            SpawnError::ShuttingDown,
            "spawn refused: the scheduler is shutting down",
        ),
        (
            SpawnError::Cycle(t),
            "spawn refused: depending on task 7 would form a cycle",
        ),
        (
            SpawnError::UnknownDependency(t),
            "spawn refused: dependency 7 is not a task of this scheduler",
        ),
        (
            SpawnError::StackAllocation("out of maps".into()),
            "spawn refused: could not allocate a coroutine stack: out of maps",
        ),
        (
            SpawnError::AlreadyStarted(t),
            "task 7 has already started; dependencies can only be added before",
        ),
        (SpawnError::Closed, "spawn refused: the scheduler is gone"),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn system_call_errors_name_what_they_are_about() {
    let s = vsched();
    let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
    let token = s.register_io(&pipe_r).unwrap();
    let event = s.new_event();
    let cases = [
        (
            SyscallError::UnknownTask(TaskId::from_raw(9)),
            "task 9 is not known to this scheduler".to_string(),
        ),
        (
            SyscallError::JoinSelf,
            "a task cannot join itself".to_string(),
        ),
        (
            SyscallError::UnknownIoToken(token),
            format!("I/O token {} is not registered", token.get()),
        ),
        (
            SyscallError::IoBusy(token),
            format!(
                "another task is already waiting on I/O token {} for the same interest",
                token.get()
            ),
        ),
        (
            SyscallError::ShutdownInProgress,
            "a shutdown is already under way".to_string(),
        ),
        (
            SyscallError::UnknownEvent(event),
            format!("{event} is not known to this scheduler"),
        ),
        (
            SyscallError::UnknownScope(TaskId::from_raw(4), ScopeId::from_raw(2)),
            "task 4 has no open cancel scope 2".to_string(),
        ),
        (
            SyscallError::NotInTask,
            "this call can only be made from inside a task".to_string(),
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
    assert!(event.to_string().starts_with("event "), "{event}");
}

#[test]
fn handle_errors_say_why_the_call_cannot_be_made() {
    assert_eq!(HandleError::Closed.to_string(), "the scheduler is gone");
    assert_eq!(
        HandleError::WouldDeadlock.to_string(),
        "this call waits for the scheduler and cannot be made from the scheduler's own thread"
    );
}

#[cfg(all(feature = "async-io", target_os = "linux"))]
#[test]
fn exec_errors_name_the_command_and_the_cause() {
    let start = ExecError::Start {
        program: std::ffi::OsString::from("no-such-tool"),
        errno: Some(2),
        message: "No such file or directory".into(),
    };
    assert_eq!(
        start.to_string(),
        "cannot start \"no-such-tool\": No such file or directory"
    );
    assert_eq!(start.errno(), Some(2));
    let io = ExecError::Io {
        context: "opening a pidfd",
        errno: Some(24),
        message: "Too many open files".into(),
    };
    assert_eq!(
        io.to_string(),
        "process task failed opening a pidfd: Too many open files"
    );
    assert_eq!(io.errno(), Some(24));
    assert_eq!(
        ExecError::InvalidSpec("empty argv".into()).to_string(),
        "invalid command: empty argv"
    );
    assert_eq!(
        ExecError::Spawn(SpawnError::Closed).to_string(),
        "spawn refused: the scheduler is gone"
    );
    assert_eq!(ExecError::Spawn(SpawnError::Closed).errno(), None);
    assert_eq!(
        ExecError::Kernel(SyscallError::JoinSelf).to_string(),
        "process task: a task cannot join itself"
    );
}

/// A native task's failure carries the panic's message, whatever the
/// payload's type.
#[test]
fn task_errors_carry_the_panic_message() {
    let s = vsched();
    let text = s.spawn(|_| -> u8 { panic!("static text") }).unwrap();
    let formatted = s.spawn(|_| -> u8 { panic!("formatted {}", 42) }).unwrap();
    let other = s.spawn(|_| -> u8 { std::panic::panic_any(17u32) }).unwrap();
    s.retain(text);
    s.retain(formatted);
    s.retain(other);
    s.run();
    let message = |id| match s.outcome(id) {
        Some(Outcome::Failed(e)) => e.to_string(),
        o => panic!("task {id} did not fail: {o:?}"),
    };
    assert_eq!(message(text), "static text");
    assert_eq!(message(formatted), "formatted 42");
    assert_eq!(message(other), "task panicked with a non-string payload");
}
