//! Helpers shared by the integration tests: temporary directories, threads
//! appending records `[thread, i]` durably, and reading each thread's
//! records back.

#![allow(dead_code)] // each test binary uses a part of it

use std::path::PathBuf;
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

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tiffany-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
