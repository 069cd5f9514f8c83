//! A real process appending durably on the real file system is killed
//! with SIGKILL at an arbitrary moment: every record it reported durable
//! before dying is in the log when it is reopened, each writer's records in
//! order, and nothing else. (A killed process loses no page cache: this
//! checks the real file path and recovery from a write cut short, not
//! power loss, which `crash.rs` simulates.)

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

mod common;
use common::{TempDir, thread_records};

use tiffany_wal::{Options, Wal};

const CHILD_ENV: &str = "TIFFANY_WAL_KILL_TEST_LOG";
const THREADS: u8 = 4;
const EACH: u8 = 250;

/// In the child: threads append `[t, i]` durably and report each on stdout
/// once it is durable, until killed (or done).
fn child(path: &str) {
    let (wal, _) = Wal::open(path, &Options::new()).unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    wal.append_durable(1, &[t, i]).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "durable {t} {i}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_killed_writer_keeps_what_it_acknowledged() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return child(&path);
    }
    let dir = TempDir::new("kill");
    let path = dir.path("jobs.wal");
    let mut writer = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_writer_keeps_what_it_acknowledged",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = vec![0usize; THREADS as usize];
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("durable ") else {
            continue; // the test harness's own output
        };
        let (t, i) = rest.split_once(' ').unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, acked[t], "thread {t} reports in order");
        acked[t] += 1;
        if !killed && acked.iter().sum::<usize>() >= 300 {
            writer.kill().unwrap(); // SIGKILL, in the middle of appends
            killed = true;
        }
    }
    // Lines written before the kill were read to the end of the pipe above.
    writer.wait().unwrap();
    assert!(killed, "the writer finished before it could be killed");

    let (_, replay) = Wal::open(&path, &Options::new()).unwrap();
    for t in 0..THREADS {
        let got = thread_records(&replay.records, t);
        assert_eq!(got, (0..got.len() as u8).collect::<Vec<_>>(), "thread {t}");
        assert!(
            got.len() >= acked[t as usize],
            "thread {t}: {} < {}",
            got.len(),
            acked[t as usize]
        );
    }
    assert!(
        replay
            .records
            .iter()
            .all(|r| r.body.len() == 2 && r.body[0] < THREADS)
    );
}
