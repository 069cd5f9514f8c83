//! The job store: where the daemon keeps every job and every change to a
//! job, so that a restart (or a crash) loses nothing it acknowledged.
//!
//! [`JobStore`] is the interface the daemon uses; [`WalStore`], on the
//! write-ahead log of `tiffany-wal`, is its first implementation (a store
//! shared by several daemons, on a database, is meant to fit the same
//! interface). The daemon calls `record_*` under its own lock, so that the
//! store sees changes in the order they happened, and waits for
//! [`JobStore::make_durable`] outside it, through the `wal-flusher` system
//! task ([`crate::system`]), before it tells a client: concurrent waits
//! share one `fdatasync` (group commit).
//!
//! ## Records (ADR 9)
//!
//! Each record body is a JSON object, record version [`RECORD_VERSION`]
//! (version 1), tagged by `"type"`:
//!
//! - `job`: a whole [`JobRecord`] (a submission, and every job in a
//!   compacted log);
//! - `started`: `{"id", "attempt", "at"}`, a job started running;
//! - `ended`: a whole [`JobRecord`] in a final state, with its output;
//! - `meta`: `{"next_id"}`, written first by a compaction, so that ids are
//!   never reused even for jobs the retention policy dropped
//!   ([`crate::retention`]).
//!
//! Replay ([`Replayed::from_records`]) applies them in order. A job that
//! had not ended is queued again; its `attempts` count the starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tiffany_wal::{Options, Record, Wal};

use crate::job::{JobRecord, JobState};

/// The record version the daemon writes.
pub const RECORD_VERSION: u16 = 1;

/// The job log's file name in the data directory.
pub const LOG_FILE: &str = "jobs.wal";

/// One record of the job log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogRecord {
    /// A whole job: a submission, or a job in a compacted log.
    Job {
        /// The job.
        job: JobRecord,
    },
    /// A job started.
    Started {
        /// Its id.
        id: u64,
        /// Its attempt number (1 for the first start).
        attempt: u32,
        /// Unix seconds.
        at: f64,
    },
    /// A job ended: its final record.
    Ended {
        /// The job, final.
        job: JobRecord,
    },
    /// The first id not yet given.
    Meta {
        /// The next id.
        next_id: u64,
    },
}

impl LogRecord {
    /// The record's body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a body of record version `version`.
    pub fn decode(version: u16, body: &[u8]) -> Result<LogRecord, String> {
        match version {
            1 => serde_json::from_slice::<FlatRecord>(body)
                .map_err(|e| e.to_string())
                .and_then(FlatRecord::into_record)
                .map_err(|e| format!("bad job record: {e}")),
            v => Err(format!(
                "unknown job record version {v} (this daemon reads 1)"
            )),
        }
    }
}

/// The tag of a [`LogRecord`] body.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RecordType {
    Job,
    Started,
    Ended,
    Meta,
}

/// A [`LogRecord`] body as a plain struct: every variant's fields, optional.
///
/// Replay reads bodies through it rather than through the tagged enum:
/// serde reads an internally tagged enum by first copying the whole object
/// into an intermediate tree (the tag could come last), which was most of a
/// replay's time; a struct is read straight from the bytes. The bytes are
/// the same (ADR 9).
#[derive(Deserialize)]
struct FlatRecord {
    #[serde(rename = "type")]
    kind: RecordType,
    job: Option<JobRecord>,
    id: Option<u64>,
    attempt: Option<u32>,
    at: Option<f64>,
    next_id: Option<u64>,
}

impl FlatRecord {
    fn into_record(self) -> Result<LogRecord, String> {
        let missing = |field: &str| format!("missing field `{field}`");
        Ok(match self.kind {
            RecordType::Job => LogRecord::Job {
                job: self.job.ok_or_else(|| missing("job"))?,
            },
            RecordType::Ended => LogRecord::Ended {
                job: self.job.ok_or_else(|| missing("job"))?,
            },
            RecordType::Started => LogRecord::Started {
                id: self.id.ok_or_else(|| missing("id"))?,
                attempt: self.attempt.ok_or_else(|| missing("attempt"))?,
                at: self.at.ok_or_else(|| missing("at"))?,
            },
            RecordType::Meta => LogRecord::Meta {
                next_id: self.next_id.ok_or_else(|| missing("next_id"))?,
            },
        })
    }
}

/// A job store failed: the daemon cannot keep its promises and says so.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<tiffany_wal::Error> for StoreError {
    fn from(e: tiffany_wal::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// A receipt for a recorded change: pass it to [`JobStore::make_durable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    /// Bytes written.
    pub bytes_written: u64,
    /// `fdatasync` calls.
    pub fsyncs: u64,
    /// Size of the store now.
    pub size: u64,
}

/// Where the daemon keeps its jobs. Calls that record are quick (they
/// buffer); [`make_durable`](Self::make_durable) blocks until the changes
/// up to a ticket survive a crash.
pub trait JobStore: Send + Sync + 'static {
    /// A job was accepted.
    fn record_submitted(&self, job: &JobRecord) -> Result<Ticket, StoreError>;
    /// A job started (its `attempt`-th start).
    fn record_started(&self, id: u64, attempt: u32, at: f64) -> Result<Ticket, StoreError>;
    /// A job ended (`job` is final).
    fn record_ended(&self, job: &JobRecord) -> Result<Ticket, StoreError>;
    /// Blocks until every change up to `ticket` is durable.
    fn make_durable(&self, ticket: Ticket) -> Result<(), StoreError>;
    /// Whether the store has grown enough to be worth compacting.
    fn wants_compaction(&self) -> bool;
    /// Replaces the store's contents with these jobs (and the next id).
    fn compact(
        &self,
        jobs: &mut dyn Iterator<Item = &JobRecord>,
        next_id: u64,
    ) -> Result<(), StoreError>;
    /// Counters.
    fn stats(&self) -> StoreStats;
    /// Makes everything durable and closes.
    fn close(&self) -> Result<(), StoreError>;
}

/// What replaying a store gave: the jobs and the next id.
#[derive(Clone, Debug, Default)]
pub struct Replayed {
    /// Every job, by id, as the log left it (unfinished ones as they were).
    pub jobs: BTreeMap<u64, JobRecord>,
    /// The first id not given yet.
    pub next_id: u64,
}

impl Replayed {
    /// Applies log records in order. Bodies are decoded on every core (the
    /// bulk of a replay's time), then applied in order on this thread.
    pub fn from_records(records: &[Record]) -> Result<Replayed, StoreError> {
        let mut out = Replayed {
            jobs: BTreeMap::new(),
            next_id: 1,
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = records.len().div_ceil(threads).max(1024);
        let decode = |part: &[Record]| -> Result<Vec<LogRecord>, StoreError> {
            part.iter()
                .map(|r| {
                    LogRecord::decode(r.version, &r.body)
                        .map_err(|e| StoreError(format!("record at byte {}: {e}", r.offset)))
                })
                .collect()
        };
        let decoded: Vec<Result<Vec<LogRecord>, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = records
                .chunks(chunk)
                .map(|part| scope.spawn(move || decode(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(StoreError("decoding the job log failed".into())))
                })
                .collect()
        });
        for part in decoded {
            for rec in part? {
                out.apply(rec);
            }
        }
        Ok(out)
    }

    /// Applies one record.
    pub fn apply(&mut self, rec: LogRecord) {
        match rec {
            LogRecord::Job { job } | LogRecord::Ended { job } => {
                self.next_id = self.next_id.max(job.id.saturating_add(1));
                self.jobs.insert(job.id, job);
            }
            LogRecord::Started { id, attempt, at } => {
                if let Some(job) = self.jobs.get_mut(&id)
                    && !job.state.is_final()
                {
                    job.state = JobState::Running;
                    job.attempts = job.attempts.max(attempt);
                    job.started_at = Some(at);
                }
            }
            LogRecord::Meta { next_id } => self.next_id = self.next_id.max(next_id),
        }
    }
}

/// The job store on the write-ahead log: one file, `jobs.wal`, in the data
/// directory.
#[derive(Debug)]
pub struct WalStore {
    wal: Wal,
    compact_bytes: u64,
}

impl WalStore {
    /// Opens (or creates) the log in `data_dir` and replays it. With
    /// `repair`, a corrupt record in the middle drops it and what follows
    /// (said in the returned warning) instead of refusing to start.
    pub fn open(
        data_dir: &Path,
        repair: bool,
        compact_bytes: u64,
    ) -> Result<(WalStore, Replayed, Option<String>), StoreError> {
        let path = log_path(data_dir);
        let (wal, replay) = Wal::open(&path, &Options::new().repair(repair))?;
        let warning = replay.dropped.map(|d| d.to_string());
        let replayed = Replayed::from_records(&replay.records)?;
        Ok((WalStore { wal, compact_bytes }, replayed, warning))
    }

    fn append(&self, rec: &LogRecord) -> Result<Ticket, StoreError> {
        let pos = self.wal.append(RECORD_VERSION, &rec.encode())?;
        Ok(Ticket(pos.get()))
    }
}

/// The log's path in `data_dir`.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOG_FILE)
}

impl JobStore for WalStore {
    fn record_submitted(&self, job: &JobRecord) -> Result<Ticket, StoreError> {
        self.append(&LogRecord::Job { job: job.clone() })
    }

    fn record_started(&self, id: u64, attempt: u32, at: f64) -> Result<Ticket, StoreError> {
        self.append(&LogRecord::Started { id, attempt, at })
    }

    fn record_ended(&self, job: &JobRecord) -> Result<Ticket, StoreError> {
        self.append(&LogRecord::Ended { job: job.clone() })
    }

    fn make_durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        // Positions restart at 1 on open, and so do tickets: they match.
        if ticket.0 <= self.wal.durable_position().get() {
            return Ok(());
        }
        // Everything appended so far: at least the ticket (group commit
        // still shares the sync between concurrent callers).
        self.wal.sync_all().map_err(Into::into)
    }

    fn wants_compaction(&self) -> bool {
        self.wal.size() > self.compact_bytes
    }

    fn compact(
        &self,
        jobs: &mut dyn Iterator<Item = &JobRecord>,
        next_id: u64,
    ) -> Result<(), StoreError> {
        let mut live = vec![(RECORD_VERSION, LogRecord::Meta { next_id }.encode())];
        live.extend(jobs.map(|j| (RECORD_VERSION, LogRecord::Job { job: j.clone() }.encode())));
        let c = self.wal.compact(live)?;
        tracing::info!(
            bytes_before = c.bytes_before,
            bytes_after = c.bytes_after,
            records = c.records,
            "compacted the job log"
        );
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        let s = self.wal.stats();
        StoreStats {
            bytes_written: s.bytes_written,
            fsyncs: s.fsyncs,
            size: self.wal.size(),
        }
    }

    fn close(&self) -> Result<(), StoreError> {
        self.wal.sync_all().map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState) -> JobRecord {
        JobRecord {
            id: 7,
            kind: "exec".into(),
            args: r#"{"argv": ["true"]}"#.into(),
            priority: 3,
            after: vec![1, 2],
            key: Some("k".into()),
            timeout: Some(1.5),
            state,
            attempts: 2,
            exit_code: Some(0),
            result: Some("null".into()),
            error: None,
            created_at: 1.8e9,
            started_at: Some(1.8e9 + 1.0),
            finished_at: None,
            output: Some(crate::job::Output {
                stdout: "out".into(),
                stderr: String::new(),
                stdout_truncated: true,
                stderr_truncated: false,
            }),
        }
    }

    #[test]
    fn every_record_reads_back_as_written() {
        for rec in [
            LogRecord::Job {
                job: job(JobState::Queued),
            },
            LogRecord::Started {
                id: 7,
                attempt: 3,
                at: 1.8e9 + 0.25,
            },
            LogRecord::Ended {
                job: job(JobState::Failed),
            },
            LogRecord::Meta { next_id: 99 },
        ] {
            let body = rec.encode();
            assert_eq!(LogRecord::decode(RECORD_VERSION, &body).unwrap(), rec);
        }
    }

    #[test]
    fn bad_bodies_are_errors_that_say_why() {
        let e = LogRecord::decode(1, br#"{"type": "started", "id": 1, "at": 2.0}"#).unwrap_err();
        assert!(e.contains("missing field `attempt`"), "{e}");
        let e = LogRecord::decode(1, br#"{"type": "job"}"#).unwrap_err();
        assert!(e.contains("missing field `job`"), "{e}");
        let e = LogRecord::decode(1, br#"{"type": "other"}"#).unwrap_err();
        assert!(e.contains("unknown variant `other`"), "{e}");
        let e = LogRecord::decode(1, b"not json").unwrap_err();
        assert!(e.starts_with("bad job record"), "{e}");
        let e = LogRecord::decode(9, b"{}").unwrap_err();
        assert!(e.contains("unknown job record version 9"), "{e}");
    }
}
