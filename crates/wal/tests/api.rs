//! The log's API on the real file system and on the simulated one: replay,
//! versions, errors, damage, compaction, group commit.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

mod common;
use common::{TempDir, append_from_threads, thread_records};

use tiffany_wal::fault::{CallKind, FaultFs};
use tiffany_wal::format::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use tiffany_wal::{DropCause, Error, Options, Replay, Wal};

fn bodies(replay: &Replay) -> Vec<&[u8]> {
    replay.records.iter().map(|r| &r.body[..]).collect()
}

fn open_fault(fs: &FaultFs, options: &Options) -> Result<(Wal, Replay), Error> {
    Wal::open_with(Arc::new(fs.clone()), "log", options)
}

/// A log on `fs` at "log" holding `bodies`, each appended durably.
fn log_of(fs: &FaultFs, bodies: &[&[u8]]) -> Vec<u64> {
    let (wal, _) = open_fault(fs, &Options::new()).unwrap();
    let mut offsets = Vec::new();
    for body in bodies {
        offsets.push(wal.size());
        wal.append_durable(1, body).unwrap();
    }
    offsets
}

#[test]
fn records_survive_reopening_with_their_versions() {
    let dir = TempDir::new("reopen");
    let path = dir.path("jobs.wal");
    let (wal, replay) = Wal::open(&path, &Options::new()).unwrap();
    assert!(replay.created);
    assert_eq!(wal.size(), HEADER_LEN);
    let p1 = wal.append_durable(1, b"first").unwrap();
    let p2 = wal.append(2, b"second, a newer schema").unwrap();
    let p3 = wal.append(1, b"").unwrap();
    assert_eq!((p1.get(), p2.get(), p3.get()), (1, 2, 3));
    assert_eq!(wal.durable_position(), p1);
    wal.sync(p3).unwrap();
    assert_eq!(wal.durable_position(), p3);
    assert_eq!(wal.appended_position(), p3);
    let stats = wal.stats();
    assert_eq!(stats.records_appended, 3);
    assert_eq!(stats.bytes_written, wal.size());
    wal.close().unwrap();

    let (wal, replay) = Wal::open(&path, &Options::new()).unwrap();
    assert!(!replay.created);
    assert_eq!(replay.dropped, None);
    let versions: Vec<u16> = replay.records.iter().map(|r| r.version).collect();
    assert_eq!(versions, [1, 2, 1]);
    assert_eq!(
        bodies(&replay),
        [&b"first"[..], b"second, a newer schema", b""]
    );
    assert_eq!(replay.records[0].offset, HEADER_LEN);
    assert_eq!(wal.size(), std::fs::metadata(&path).unwrap().len());
    assert_eq!(
        wal.durable_position().get(),
        0,
        "positions count from the open"
    );
}

#[test]
fn refuses_what_it_cannot_open() {
    let dir = TempDir::new("refuse");
    let missing = dir.path("missing.wal");
    assert!(matches!(
        Wal::open(&missing, &Options::new().create(false)),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        tiffany_wal::read(&missing, &Options::new()),
        Err(Error::NotFound { .. })
    ));

    let other = dir.path("notes.txt");
    std::fs::write(&other, "some text that is not a log").unwrap();
    assert!(matches!(
        Wal::open(&other, &Options::new()),
        Err(Error::NotAWal { .. })
    ));
    assert_eq!(
        std::fs::read(&other).unwrap(),
        b"some text that is not a log",
        "a file that is not a log is left alone"
    );

    let fs = FaultFs::new();
    log_of(&fs, &[b"x"]);
    let mut bytes = fs.read_file("log").unwrap();
    bytes[15] ^= 0x40; // in the salt
    fs.write_file("log", &bytes);
    assert!(matches!(
        open_fault(&fs, &Options::new().repair(true)),
        Err(Error::CorruptHeader { .. })
    ));

    // A newer format version, with a valid header checksum.
    let mut header = bytes[..HEADER_LEN as usize].to_vec();
    header[15] ^= 0x40;
    header[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let crc = crc32c::crc32c(&header[..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(header[..8], MAGIC);
    fs.write_file("log", &header);
    let err = open_fault(&fs, &Options::new()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFormat { version: 2, .. }),
        "{err}"
    );
}

#[test]
fn refuses_bad_records() {
    let fs = FaultFs::new();
    let (wal, _) = open_fault(&fs, &Options::new().max_record_size(8)).unwrap();
    assert!(matches!(
        wal.append(1, b"nine bytes"),
        Err(Error::RecordTooLarge { len: 10, max: 8 })
    ));
    assert!(matches!(wal.append(0, b"x"), Err(Error::ZeroVersion)));
    assert!(matches!(
        wal.compact([(1, b"nine bytes")]),
        Err(Error::RecordTooLarge { .. })
    ));
    wal.append_durable(1, b"fits").unwrap();
}

#[test]
fn a_torn_tail_is_cut_off_and_reported() {
    for tail in [&[0u8; 7][..], b"\x13garbage that is not a frame at all"] {
        let fs = FaultFs::new();
        log_of(&fs, &[b"one", b"two"]);
        let mut bytes = fs.read_file("log").unwrap();
        let good_len = bytes.len() as u64;
        bytes.extend_from_slice(tail);
        fs.write_file("log", &bytes);

        // Reading reports it without changing the file.
        let read = tiffany_wal::read_with(&fs, "log", &Options::new()).unwrap();
        assert_eq!(bodies(&read), [&b"one"[..], b"two"]);
        assert_eq!(fs.read_file("log").unwrap(), bytes);

        let (wal, replay) = open_fault(&fs, &Options::new()).unwrap();
        assert_eq!(bodies(&replay), [&b"one"[..], b"two"]);
        let dropped = replay.dropped.unwrap();
        assert_eq!(dropped, read.dropped.unwrap());
        assert_eq!(dropped.cause, DropCause::TornTail);
        assert_eq!(
            (dropped.offset, dropped.bytes),
            (good_len, tail.len() as u64)
        );
        assert_eq!(dropped.records, 0);
        assert!(dropped.to_string().contains("torn tail"), "{dropped}");
        assert_eq!(fs.read_file("log").unwrap().len() as u64, good_len);
        wal.append_durable(1, b"three").unwrap();
        drop(wal);
        let (_, replay) = open_fault(&fs, &Options::new()).unwrap();
        assert_eq!(bodies(&replay), [&b"one"[..], b"two", b"three"]);
    }
}

#[test]
fn corruption_in_the_middle_stops_open_unless_repair() {
    let fs = FaultFs::new();
    let offsets = log_of(&fs, &[b"one", b"two", b"three", b"four"]);
    let mut bytes = fs.read_file("log").unwrap();
    let len = bytes.len() as u64;
    bytes[offsets[1] as usize + 21] ^= 1; // in the body of "two"
    fs.write_file("log", &bytes);

    let err = open_fault(&fs, &Options::new()).unwrap_err();
    match &err {
        Error::Corrupt {
            offset,
            next_valid,
            records_after,
            ..
        } => {
            assert_eq!(
                (*offset, *next_valid, *records_after),
                (offsets[1], offsets[2], 2)
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("repair"), "{err}");
    assert_eq!(fs.read_file("log").unwrap(), bytes, "left untouched");
    assert!(matches!(
        tiffany_wal::read_with(&fs, "log", &Options::new()),
        Err(Error::Corrupt { .. })
    ));

    let (wal, replay) = open_fault(&fs, &Options::new().repair(true)).unwrap();
    assert_eq!(bodies(&replay), [&b"one"[..]]);
    let dropped = replay.dropped.unwrap();
    assert_eq!(dropped.cause, DropCause::Repaired);
    assert_eq!(
        (dropped.offset, dropped.bytes, dropped.records),
        (offsets[1], len - offsets[1], 2)
    );
    drop(wal);
    let (_, replay) = open_fault(&fs, &Options::new()).unwrap();
    assert_eq!((bodies(&replay), replay.dropped), (vec![&b"one"[..]], None));
}

#[test]
fn corruption_inside_a_compacted_log_is_corruption() {
    // A compacted file is written in one batch: its frames' durable marks
    // say the whole file was durable, so damage to one is not a torn tail.
    let fs = FaultFs::new();
    let (wal, _) = open_fault(&fs, &Options::new()).unwrap();
    wal.compact([(1, b"a"), (1, b"b"), (1, b"c")]).unwrap();
    drop(wal);
    let mut bytes = fs.read_file("log").unwrap();
    bytes[HEADER_LEN as usize + 21 + 20] ^= 1; // the body of "b"
    fs.write_file("log", &bytes);
    assert!(matches!(
        open_fault(&fs, &Options::new()),
        Err(Error::Corrupt {
            records_after: 1,
            ..
        })
    ));
}

#[test]
fn compaction_replaces_the_log_atomically() {
    let dir = TempDir::new("compact");
    let path = dir.path("jobs.wal");
    let (wal, _) = Wal::open(&path, &Options::new()).unwrap();
    for i in 0..100u32 {
        wal.append(1, format!("job {i} queued").as_bytes()).unwrap();
    }
    let unsynced = wal.append(1, b"appended just before compacting").unwrap();
    let before = wal.size();
    let old_header = std::fs::read(&path).unwrap()[..HEADER_LEN as usize].to_vec();
    let done = wal
        .compact([(1, &b"job 7 queued"[..]), (2, b"job 9 v2")])
        .unwrap();
    assert_eq!(done.bytes_before, before);
    assert_eq!(done.bytes_after, wal.size());
    assert_eq!(done.records, 2);
    assert!(wal.durable_position() >= unsynced);
    assert_eq!(wal.stats().compactions, 1);
    let new_header = std::fs::read(&path).unwrap()[..HEADER_LEN as usize].to_vec();
    assert_ne!(old_header[12..20], new_header[12..20], "a new salt");
    wal.append_durable(1, b"after").unwrap();
    drop(wal);

    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut names: Vec<_> = names.iter().map(|n| n.to_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["jobs.wal", "jobs.wal.lock"]);
    let (_, replay) = Wal::open(&path, &Options::new()).unwrap();
    assert_eq!(
        bodies(&replay),
        [&b"job 7 queued"[..], b"job 9 v2", b"after"]
    );
    assert_eq!(replay.records[1].version, 2);
}

#[test]
fn a_leftover_new_file_is_removed_on_open() {
    let fs = FaultFs::new();
    log_of(&fs, &[b"one"]);
    let tmp = tiffany_wal::temporary_path(Path::new("log"));
    fs.write_file(&tmp, b"half a compaction");
    let (_, replay) = open_fault(&fs, &Options::new()).unwrap();
    assert_eq!(bodies(&replay), [&b"one"[..]]);
    assert_eq!(fs.paths(), [PathBuf::from("log")]);
}

/// While one thread's sync is held back, three more records are appended;
/// when it is released, one more sync makes all three durable.
#[test]
fn concurrent_appends_share_one_fsync() {
    let fs = FaultFs::new();
    let (wal, _) = open_fault(&fs, &Options::new()).unwrap();
    let wal = Arc::new(wal);
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let held = Arc::new(Mutex::new(Some((entered_tx, release_rx))));
    let hook_held = held.clone();
    fs.set_hook(Some(Arc::new(move |call| {
        if call.kind == CallKind::SyncData {
            // Hold back the first sync only.
            if let Some((entered, release)) = hook_held.lock().unwrap().take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
        }
    })));
    let fsyncs_before = wal.stats().fsyncs;
    let leader = {
        let wal = wal.clone();
        thread::spawn(move || wal.append_durable(1, b"leader").unwrap())
    };
    entered_rx.recv().unwrap();
    let followers: Vec<_> = [&b"a"[..], b"b", b"c"]
        .into_iter()
        .map(|body| wal.append(1, body).unwrap())
        .collect();
    let waiters: Vec<_> = followers
        .iter()
        .map(|&pos| {
            let wal = wal.clone();
            thread::spawn(move || wal.sync(pos).unwrap())
        })
        .collect();
    release_tx.send(()).unwrap();
    leader.join().unwrap();
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(wal.durable_position(), followers[2]);
    assert_eq!(wal.stats().fsyncs - fsyncs_before, 2);
}

#[test]
fn many_threads_append_durably() {
    let dir = TempDir::new("threads");
    let path = dir.path("jobs.wal");
    let (wal, _) = Wal::open(&path, &Options::new()).unwrap();
    let wal = Arc::new(wal);
    assert_eq!(append_from_threads(&wal, 8, 40), [40; 8]);
    let stats = wal.stats();
    assert_eq!(stats.records_appended, 320);
    assert!(stats.fsyncs <= 321, "{stats:?}");
    drop(wal);
    let (_, replay) = Wal::open(&path, &Options::new()).unwrap();
    assert_eq!(replay.records.len(), 320);
    // Each thread's records in the order it appended them.
    for t in 0..8u8 {
        let mine = thread_records(&replay.records, t);
        assert_eq!(mine, (0..40).collect::<Vec<u8>>());
    }
}

#[test]
fn one_handle_at_a_time() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("lock");
    let path = dir.path("jobs.wal");
    let (wal, _) = Wal::open(&path, &Options::new()).unwrap();
    let err = Wal::open(&path, &Options::new()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    // Reading without writing needs no lock.
    tiffany_wal::read(&path, &Options::new()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "log files are owner-only");
    drop(wal);
    Wal::open(&path, &Options::new()).unwrap();

    let fs = FaultFs::new();
    let (wal, _) = open_fault(&fs, &Options::new()).unwrap();
    assert!(matches!(
        open_fault(&fs, &Options::new()),
        Err(Error::Locked { .. })
    ));
    drop(wal);
    open_fault(&fs, &Options::new()).unwrap();
}

/// Compactions while threads append durably: nobody waits forever, and
/// after the last compaction the log holds its snapshot, then appends made
/// after it, each thread's in order.
#[test]
fn compactions_between_concurrent_appends() {
    let fs = FaultFs::new();
    let (wal, _) = open_fault(&fs, &Options::new()).unwrap();
    let wal = Arc::new(wal);
    let appenders = {
        let wal = wal.clone();
        thread::spawn(move || append_from_threads(&wal, 4, 200))
    };
    for _ in 0..20 {
        wal.compact([(2, b"snapshot")]).unwrap();
    }
    assert_eq!(appenders.join().unwrap(), [200; 4]);
    drop(wal);
    let (_, replay) = open_fault(&fs, &Options::new()).unwrap();
    assert_eq!(
        (replay.records[0].version, &replay.records[0].body[..]),
        (2, &b"snapshot"[..])
    );
    let rest = &replay.records[1..];
    for t in 0..4 {
        let mine = thread_records(rest, t);
        assert!(
            mine.windows(2).all(|w| w[1] == w[0] + 1),
            "thread {t}: {mine:?}"
        );
        // A thread that finished before the last compaction has none left.
        assert!(
            mine.is_empty() || mine.last() == Some(&199),
            "thread {t}: {mine:?}"
        );
    }
}
