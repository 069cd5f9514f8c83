//! The version-1 fixture: `tests/fixtures/v1.wal`, a small log in format
//! version 1 holding record-version-1 and record-version-2 job records.
//!
//! The file is committed. [`spec_encode`] below re-derives its bytes from
//! the format's description (independently of the crate's encoder), so
//! a change to the format cannot go unnoticed: old logs must stay readable.
//! To write the file anew (only ever for a new fixture, never to make a
//! failing test pass): `TIFFANY_WAL_WRITE_FIXTURE=1 cargo test -p tiffany-wal --test fixture`.

use std::path::PathBuf;
use std::sync::Arc;

use tiffany_wal::fault::FaultFs;
use tiffany_wal::{Options, Wal};

const SALT: u64 = 0x5449_4646_414e_5931;

/// The fixture's records: (record version, body). Version 1 is the
/// daemon's first job schema; version 2 stands for a later one beside it.
const RECORDS: [(u16, &str); 4] = [
    (
        1,
        r#"{"id":1,"kind":"sleep","args":{"seconds":1},"state":"queued"}"#,
    ),
    (1, r#"{"id":1,"state":"running","attempts":1}"#),
    (1, r#"{"id":1,"state":"succeeded","result":null}"#),
    (
        2,
        r#"{"id":2,"kind":"exec","args":{"argv":["true"]},"state":"queued","v":2}"#,
    ),
];

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1.wal")
}

/// A log as format version 1 describes it, each record appended and synced
/// in turn (so each frame's durable mark is its own offset).
fn spec_encode(salt: u64, records: &[(u16, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"TIFFWAL\0");
    out.extend_from_slice(&1u16.to_le_bytes()); // format version
    out.extend_from_slice(&0u16.to_le_bytes()); // reserved
    out.extend_from_slice(&salt.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for (version, body) in records {
        let offset = out.len() as u64;
        let mut rest = Vec::new();
        rest.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rest.extend_from_slice(&version.to_le_bytes());
        rest.extend_from_slice(&0u16.to_le_bytes()); // flags
        rest.extend_from_slice(&offset.to_le_bytes()); // durable mark
        rest.extend_from_slice(body.as_bytes());
        let mut covered = salt.to_le_bytes().to_vec();
        covered.extend_from_slice(&offset.to_le_bytes());
        covered.extend_from_slice(&rest);
        out.extend_from_slice(&crc32c::crc32c(&covered).to_le_bytes());
        out.extend_from_slice(&rest);
    }
    out
}

#[test]
fn the_fixture_is_format_version_1_as_specified() {
    let expected = spec_encode(SALT, &RECORDS);
    if std::env::var_os("TIFFANY_WAL_WRITE_FIXTURE").is_some() {
        std::fs::write(fixture_path(), &expected).unwrap();
    }
    assert_eq!(std::fs::read(fixture_path()).unwrap(), expected);
}

#[test]
fn the_fixture_replays_with_its_record_versions() {
    let fs = FaultFs::new();
    fs.write_file("v1.wal", &std::fs::read(fixture_path()).unwrap());
    let (wal, replay) = Wal::open_with(Arc::new(fs.clone()), "v1.wal", &Options::new()).unwrap();
    assert_eq!(replay.dropped, None);
    let got: Vec<(u16, &str)> = replay
        .records
        .iter()
        .map(|r| (r.version, std::str::from_utf8(&r.body).unwrap()))
        .collect();
    assert_eq!(got, RECORDS);
    // A log opened from the fixture takes appends after its records.
    wal.append_durable(2, b"{}").unwrap();
    drop(wal);
    let (_, replay) = Wal::open_with(Arc::new(fs), "v1.wal", &Options::new()).unwrap();
    assert_eq!(replay.records.len(), RECORDS.len() + 1);
    // And the read-only reader sees the committed file as it is.
    let read = tiffany_wal::read(fixture_path(), &Options::new()).unwrap();
    assert_eq!(read.records.len(), RECORDS.len());
}

#[test]
fn the_writer_writes_what_the_spec_says() {
    let fs = FaultFs::new();
    let (wal, _) = Wal::open_with(Arc::new(fs.clone()), "log", &Options::new()).unwrap();
    for (version, body) in RECORDS {
        wal.append_durable(version, body.as_bytes()).unwrap();
    }
    drop(wal);
    let bytes = fs.read_file("log").unwrap();
    let salt = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    assert_eq!(bytes, spec_encode(salt, &RECORDS));
}
