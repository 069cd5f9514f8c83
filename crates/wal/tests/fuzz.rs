//! A fuzzed log never panics the reader, and never yields a record that
//! was not written: logs written by the log itself are truncated, have bytes
//! flipped, overwritten or zeroed, and garbage appended, then read and opened
//! (with and without repair).

use std::sync::Arc;

use proptest::prelude::*;
use tiffany_wal::fault::FaultFs;
use tiffany_wal::format::HEADER_LEN;
use tiffany_wal::{Options, Wal};

#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Overwrite(usize, Vec<u8>),
    Zero(usize, usize),
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(at, bytes)| Damage::Overwrite(at, bytes)),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Damage::Zero(at, len)),
        prop::collection::vec(any::<u8>(), 1..100).prop_map(Damage::Append),
    ]
}

/// Applies `damage` to `bytes`; returns the first offset it may have changed.
fn apply(bytes: &mut Vec<u8>, damage: &Damage) -> usize {
    let len = bytes.len().max(1);
    match damage {
        Damage::Truncate(at) => {
            let at = at % len;
            bytes.truncate(at);
            at
        }
        Damage::Flip(at, mask) => {
            let at = at % len;
            if let Some(b) = bytes.get_mut(at) {
                *b ^= mask;
            }
            at
        }
        Damage::Overwrite(at, new) => {
            let at = at % len;
            for (i, b) in new.iter().enumerate() {
                if let Some(old) = bytes.get_mut(at + i) {
                    *old = *b;
                }
            }
            at
        }
        Damage::Zero(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            bytes[at.min(end)..end].fill(0);
            at
        }
        Damage::Append(garbage) => {
            let at = bytes.len();
            bytes.extend_from_slice(garbage);
            at
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn damaged_logs_never_panic_or_invent_records(
        written in prop::collection::vec((1..4u16, prop::collection::vec(any::<u8>(), 0..60)), 0..12),
        synced_every in 1..4usize,
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let fs = FaultFs::new();
        let (wal, _) = Wal::open_with(Arc::new(fs.clone()), "log", &Options::new()).unwrap();
        let mut frame_ends = Vec::new();
        for (i, (version, body)) in written.iter().enumerate() {
            let pos = wal.append(*version, body).unwrap();
            frame_ends.push(wal.size() as usize);
            if i % synced_every == 0 {
                wal.sync(pos).unwrap();
            }
        }
        wal.close().unwrap();

        let mut bytes = fs.read_file("log").unwrap();
        let first_change = damages.iter().map(|d| apply(&mut bytes, d)).min().unwrap();
        fs.write_file("log", &bytes);
        // The frames that end before any change must all come back (when the
        // header is intact); nothing else may, except records as written.
        let intact = frame_ends.iter().filter(|&&end| end <= first_change).count();

        for repair in [false, true] {
            let options = Options::new().repair(repair);
            let read = tiffany_wal::read_with(&fs, "log", &options);
            let fs_copy = fs.fork();
            let opened = Wal::open_with(Arc::new(fs_copy.clone()), "log", &options);
            prop_assert_eq!(read.is_ok(), opened.is_ok());
            let Ok((wal, replay)) = opened else {
                prop_assert!(
                    first_change < HEADER_LEN as usize || !repair,
                    "repair failed with an intact header"
                );
                continue;
            };
            drop(wal);
            prop_assert_eq!(&read.unwrap().records, &replay.records);
            prop_assert!(replay.records.len() <= written.len());
            for (got, (version, body)) in replay.records.iter().zip(&written) {
                prop_assert_eq!(got.version, *version);
                prop_assert_eq!(&got.body, body);
            }
            if first_change >= HEADER_LEN as usize {
                prop_assert!(replay.records.len() >= intact);
            }
            // Opening again finds the same records and nothing more to drop.
            let (_, again) = Wal::open_with(Arc::new(fs_copy), "log", &options).unwrap();
            prop_assert_eq!(&again.records, &replay.records);
            prop_assert_eq!(again.dropped, None);
        }
    }
}
