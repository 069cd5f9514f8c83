//! Crash and fault injection: a scripted workload (appends, group commits,
//! compactions) is crashed, or made to fail, at every numbered I/O call of
//! the simulated file system; recovery (itself crashed at each of its own
//! calls) must then return every acknowledged record and nothing that was
//! never appended, and recovering twice must give the same state.

use std::sync::Arc;

mod common;
use common::{append_from_threads, thread_records};

use proptest::prelude::*;
use tiffany_wal::fault::{Fault, FaultFs, Fill};
use tiffany_wal::{DropCause, Options, Record, Wal};

const LOG: &str = "data/jobs.wal";

type Rec = (u16, Vec<u8>);

/// The records a log may hold: those it started from (after a compaction)
/// and those appended since, of which the first `acked` were acknowledged.
#[derive(Debug, Default, Clone)]
struct Epoch {
    base: Vec<Rec>,
    appended: Vec<Rec>,
    acked: usize,
}

/// What the workload did, as far as its caller knows.
#[derive(Debug, Default)]
struct Model {
    epochs: Vec<Epoch>,
    /// The first epoch recovery may return: the last compaction acknowledged.
    min_epoch: usize,
    /// Records attempted so far.
    next: usize,
}

impl Model {
    fn current(&mut self) -> &mut Epoch {
        self.epochs.last_mut().unwrap()
    }

    /// Whether `got` is a state the log may recover to.
    fn allows(&self, got: &[Rec]) -> bool {
        self.epochs[self.min_epoch..].iter().any(|e| {
            got.len() >= e.base.len()
                && got[..e.base.len()] == e.base[..]
                && got.len() - e.base.len() >= e.acked
                && got.len() - e.base.len() <= e.appended.len()
                && got[e.base.len()..] == e.appended[..got.len() - e.base.len()]
        })
    }
}

fn rec(i: usize) -> Rec {
    // Versions 1 and 2 side by side; bodies from 0 to a few tear chunks long.
    let version = 1 + (i % 2) as u16;
    let body = format!("job {i};").repeat(i % 5).into_bytes();
    (version, body)
}

fn records(replayed: &[Record]) -> Vec<Rec> {
    replayed
        .iter()
        .map(|r| (r.version, r.body.clone()))
        .collect()
}

fn open(fs: &FaultFs, options: &Options) -> Result<(Wal, tiffany_wal::Replay), tiffany_wal::Error> {
    Wal::open_with(Arc::new(fs.clone()), LOG, options)
}

/// The scripted workload. Stops at the first error; the model records what
/// was attempted and what was acknowledged up to then.
fn workload(fs: &FaultFs, model: &mut Model) {
    run(fs, model, &SCRIPT);
}

/// Opens the log (with a 64-byte write buffer, so that buffered appends are
/// written before they are synced) and runs `ops`, up to the first error.
fn run(fs: &FaultFs, model: &mut Model, ops: &[Op]) {
    model.epochs.push(Epoch::default());
    if let Ok((wal, _)) = open(fs, &Options::new().write_buffer(64)) {
        let _ = ops.iter().try_for_each(|op| model.apply(&wal, *op));
    }
}

/// One step of a workload.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `append`: buffered, not acknowledged.
    Append,
    /// `append_durable`: acknowledged when it returns.
    AppendDurable,
    /// `sync_all`: everything appended is acknowledged when it returns.
    Sync,
    /// `compact` to every `n`th record.
    Compact(usize),
}

/// The scripted workload: durable appends one at a time; a group of
/// buffered appends (past the write buffer, so some are written before the
/// sync) then one sync for all; a compaction; more appends and a second
/// compaction; a durable append; an append never synced.
const SCRIPT: [Op; 15] = [
    Op::AppendDurable,
    Op::AppendDurable,
    Op::Append,
    Op::Append,
    Op::Append,
    Op::Append,
    Op::Sync,
    Op::Compact(2),
    Op::Append,
    Op::Append,
    Op::Append,
    Op::Sync,
    Op::Compact(1),
    Op::AppendDurable,
    Op::Append,
];

impl Model {
    /// A new record, noted as attempted before it is appended.
    fn attempt(&mut self) -> Rec {
        self.next += 1;
        let r = rec(self.next);
        self.current().appended.push(r.clone());
        r
    }

    /// Everything attempted in the current epoch is acknowledged (one
    /// thread: a sync covers every earlier append).
    fn ack(&mut self) {
        let e = self.current();
        e.acked = e.appended.len();
    }

    /// Runs `op` on `wal`, noting what is attempted before the call and
    /// what is acknowledged after it.
    fn apply(&mut self, wal: &Wal, op: Op) -> Result<(), tiffany_wal::Error> {
        match op {
            Op::Append => {
                let (v, b) = self.attempt();
                wal.append(v, &b)?;
            }
            Op::AppendDurable => {
                let (v, b) = self.attempt();
                wal.append_durable(v, &b)?;
                self.ack();
            }
            Op::Sync => {
                wal.sync_all()?;
                self.ack();
            }
            Op::Compact(n) => {
                // Recovery may return the new epoch from the start of the
                // call, and must from its success on.
                let e = self.current();
                let live: Vec<Rec> = e
                    .base
                    .iter()
                    .chain(&e.appended)
                    .step_by(n)
                    .cloned()
                    .collect();
                self.epochs.push(Epoch {
                    base: live.clone(),
                    ..Epoch::default()
                });
                wal.compact(live)?;
                self.min_epoch = self.epochs.len() - 1;
            }
        }
        Ok(())
    }
}

/// Opens the log as recovery does and checks the result against the model;
/// then opens it again and checks that nothing changes.
fn recover_and_check(fs: &FaultFs, model: &Model, what: &str) -> Vec<Rec> {
    let (wal, replay) = open(fs, &Options::new()).unwrap_or_else(|e| panic!("{what}: {e}"));
    drop(wal);
    if let Some(d) = replay.dropped {
        assert_eq!(d.cause, DropCause::TornTail, "{what}: {d}");
    }
    let got = records(&replay.records);
    assert!(
        model.allows(&got),
        "{what}: recovered {} records {got:?}\nmodel {model:#?}",
        got.len()
    );
    let (_, again) = open(fs, &Options::new()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        records(&again.records),
        got,
        "{what}: second recovery differs"
    );
    assert_eq!(again.dropped, None, "{what}: second recovery dropped more");
    got
}

/// Recovers `crashed` (a rebooted file system), first crashing recovery at
/// each of its own calls (and rebooting again), then without a crash.
fn recover_through_crashes(crashed: &FaultFs, model: &Model, what: &str, seed: u64, fill: Fill) {
    let probe = crashed.fork();
    let _ = open(&probe, &Options::new());
    let recovery_calls = probe.calls();
    for m in 1..=recovery_calls {
        let fs = crashed.fork();
        fs.inject(m, Fault::Crash);
        assert!(
            open(&fs, &Options::new()).is_err(),
            "{what}: recovery survived a crash at {m}"
        );
        fs.restart(seed ^ (m << 32), fill);
        recover_and_check(&fs, model, &format!("{what}, recovery crashed at call {m}"));
    }
    recover_and_check(&crashed.fork(), model, what);
}

/// The number of numbered calls the workload makes without faults.
fn workload_calls() -> u64 {
    let fs = FaultFs::new();
    let mut model = Model::default();
    workload(&fs, &mut model);
    assert!(!fs.crashed());
    let calls = fs.calls();
    // The clean run's state is the model's last, complete or not.
    fs.restart(0, Fill::Garbage);
    recover_and_check(&fs, &model, "no crash");
    calls
}

#[test]
fn crash_at_every_call() {
    let calls = workload_calls();
    assert!(calls > 20, "the workload makes {calls} calls");
    eprintln!("the workload makes {calls} calls");
    for n in 1..=calls {
        for fill in [Fill::Garbage, Fill::Zeros] {
            for seed in 0..8u64 {
                let fs = FaultFs::new();
                fs.inject(n, Fault::Crash);
                let mut model = Model::default();
                workload(&fs, &mut model);
                assert!(fs.crashed(), "no crash at call {n}");
                fs.restart(seed * 1000 + n, fill);
                let what = format!("crash at call {n}/{calls}, {fill:?}, seed {seed}");
                recover_through_crashes(&fs, &model, &what, seed + n, fill);
            }
        }
    }
}

#[test]
fn failure_at_every_call() {
    let calls = workload_calls();
    for n in 1..=calls {
        let fs = FaultFs::new();
        fs.inject(n, Fault::Fail);
        let mut model = Model::default();
        workload(&fs, &mut model);
        // Reopening without a crash sees what the page cache holds...
        let what = format!("failure at call {n}/{calls}");
        recover_and_check(&fs.fork(), &model, &what);
        // ...and after a crash, what the disk kept.
        for fill in [Fill::Garbage, Fill::Zeros] {
            let crashed = fs.fork();
            crashed.restart(n, fill);
            recover_and_check(
                &crashed,
                &model,
                &format!("{what}, then a crash ({fill:?})"),
            );
        }
    }
}

#[test]
fn a_failed_log_refuses_work_until_reopened() {
    let fs = FaultFs::new();
    let (wal, _) = open(&fs, &Options::new()).unwrap();
    wal.append_durable(1, b"kept").unwrap();
    fs.inject(fs.calls() + 2, Fault::Fail); // the sync after the next write
    assert!(matches!(
        wal.append_durable(1, b"lost"),
        Err(tiffany_wal::Error::Io {
            op: "fdatasync",
            ..
        })
    ));
    assert!(matches!(
        wal.append(1, b"more"),
        Err(tiffany_wal::Error::Failed { .. })
    ));
    drop(wal);
    let (_, replay) = open(&fs, &Options::new()).unwrap();
    assert_eq!(replay.records[0].body, b"kept");
}

#[test]
fn a_failed_compaction_before_the_rename_leaves_the_log_usable() {
    let fs = FaultFs::new();
    let (wal, _) = open(&fs, &Options::new()).unwrap();
    wal.append_durable(1, b"a").unwrap();
    wal.append_durable(1, b"b").unwrap();
    // Compaction's calls: create, write, fdatasync, rename, directory sync.
    fs.inject(fs.calls() + 4, Fault::Fail);
    assert!(wal.compact([(1, b"b")]).is_err());
    wal.append_durable(1, b"c").unwrap();
    drop(wal);
    let (_, replay) = open(&fs, &Options::new()).unwrap();
    let bodies: Vec<&[u8]> = replay.records.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, [&b"a"[..], b"b", b"c"]);
    assert_eq!(fs.paths(), [std::path::PathBuf::from(LOG)]);
}

/// Threads appending durably (sharing syncs) are crashed at each numbered
/// call after the open: every record a thread was told is durable comes
/// back, each thread's records in its order, and nothing else. Which calls
/// the crash lands on depends on the threads' timing; the property does not.
#[test]
fn crash_during_concurrent_group_commits() {
    const THREADS: u8 = 4;
    const EACH: u8 = 8;
    for n in 1.. {
        let mut crashed_any = false;
        for fill in [Fill::Garbage, Fill::Zeros] {
            let fs = FaultFs::new();
            let (wal, _) = open(&fs, &Options::new()).unwrap();
            fs.inject(fs.calls() + n, Fault::Crash);
            let acked = append_from_threads(&Arc::new(wal), THREADS, EACH);
            if !fs.crashed() {
                continue;
            }
            crashed_any = true;
            fs.restart(n, fill);
            let (_, replay) = open(&fs, &Options::new()).unwrap();
            for r in &replay.records {
                assert!(r.body.len() == 2 && r.body[0] < THREADS && r.body[1] < EACH);
            }
            for t in 0..THREADS {
                let got = thread_records(&replay.records, t);
                let what = format!("crash at call {n} ({fill:?}), thread {t}");
                assert_eq!(got, (0..got.len() as u8).collect::<Vec<_>>(), "{what}");
                assert!(got.len() >= acked[t as usize], "{what}: acked {acked:?}");
            }
            let (_, again) = open(&fs, &Options::new()).unwrap();
            assert_eq!(again.records, replay.records);
        }
        if !crashed_any {
            assert!(n > 8, "the threads made only {n} calls");
            break;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random workloads, crashed at a random call (or not at all: a power
    /// cut after the last call), then recovered through crashes.
    #[test]
    fn random_workloads_crashed_anywhere(
        ops in prop::collection::vec(
            prop_oneof![
                3 => Just(Op::Append),
                3 => Just(Op::AppendDurable),
                1 => Just(Op::Sync),
                1 => (1..4usize).prop_map(Op::Compact),
            ],
            1..30,
        ),
        crash_at in 1..100u64,
        seed in any::<u64>(),
        zeros in any::<bool>(),
    ) {
        let fill = if zeros { Fill::Zeros } else { Fill::Garbage };
        let fs = FaultFs::new();
        fs.inject(crash_at, Fault::Crash);
        let mut model = Model::default();
        run(&fs, &mut model, &ops);
        fs.restart(seed, fill);
        let what = format!("{ops:?} crashed at call {crash_at}, {fill:?}, seed {seed}");
        recover_through_crashes(&fs, &model, &what, seed.rotate_left(17), fill);
    }
}
