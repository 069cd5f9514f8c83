//! Helpers shared by the integration tests: threads appending records
//! `[thread, i]` durably, and reading each thread's records back.

use std::sync::Arc;

use tiffany_wal::{Record, Wal};

/// Runs `threads` threads; thread `t` appends records `[t, i]` durably for
/// `i` in `0..each`, stopping at the first error. Returns how many records
/// each thread was told are durable.
pub fn append_from_threads(wal: &Arc<Wal>, threads: u8, each: u8) -> Vec<usize> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                (0..each)
                    .take_while(|&i| wal.append_durable(1, &[t, i]).is_ok())
                    .count()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// The `i`s of thread `t`'s records `[t, i]`, in the log's order.
pub fn thread_records(records: &[Record], t: u8) -> Vec<u8> {
    records
        .iter()
        .filter(|r| r.body[0] == t)
        .map(|r| r.body[1])
        .collect()
}
