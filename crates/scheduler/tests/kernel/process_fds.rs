//! Process tasks give back every descriptor they open: the epoll set, the
//! pidfd, the pipes and the timer (after a normal end, a start error, a
//! timeout and a cancel).
//!
//! A test binary of its own, with one test: it counts the process's open
//! descriptors, which other tests running alongside would change.
#![cfg(all(feature = "async-io", target_os = "linux"))]

use std::time::Duration;

use tiffany_scheduler::process::{self, ExecSpec};
use tiffany_scheduler::{Scheduler, SpawnOptions, Spawner};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["sh", "-c", script])
}

#[test]
fn no_descriptor_outlives_its_task() {
    // On a thread of its own, bounded: a run that never ends fails the test.
    crate::common::within(Duration::from_secs(20), || {
        let s = Scheduler::builder().build().unwrap();
        let before = open_fds();
        let specs = [
            sh("echo out; echo err >&2").stdin(b"in".to_vec()),
            ExecSpec::new(["tiffany-no-such-command"]),
            sh("sleep 100").timeout(Duration::from_millis(50)),
        ];
        for _ in 0..3 {
            for spec in specs.clone() {
                process::spawn(&s, spec, SpawnOptions::default()).unwrap();
            }
            let cancelled = process::spawn(&s, sh("sleep 100"), SpawnOptions::default()).unwrap();
            s.spawn(move |cx| {
                cx.yield_now();
                cx.cancel(cancelled)
            })
            .unwrap();
            s.run();
        }
        // Bounded well under a mutation run's per-mutant timeout.
        assert!(process::wait_for_reaper(Duration::from_secs(10)));
        assert_eq!(open_fds(), before);
    });
}
