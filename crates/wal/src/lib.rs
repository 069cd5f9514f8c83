//! # Tiffany's write-ahead log
//!
//! A write-ahead log is how a service keeps a promise across a crash: before
//! it tells a client "accepted" or "done", it appends a record saying so to
//! a file and makes sure the record has reached the disk. After a crash —
//! a `kill -9`, a power cut — the service reads the log from the start and
//! rebuilds its state from the records. Anything it had acknowledged is
//! there; anything half-written is recognised as such and thrown away.
//!
//! This crate is that file, and nothing else: it knows records only as
//! opaque bytes with a version number. `tiffanyd` puts its job records in
//! it, behind its job-store interface.
//!
//! ## Records and frames
//!
//! A record is a body (bytes) and a *record version* (a `u16` from 1), the
//! version of the body's schema: when the daemon changes how it encodes a
//! job, it bumps the version, and on replay it reads both kinds and migrates
//! the old ones. The log stores each record in a *frame*: a 20-byte header
//! holding the body's length, a CRC-32C checksum, the record version and a
//! *durable mark*, then the body. The file starts with a header of its own:
//! magic bytes, the format version, and a random *salt*. Every checksum
//! covers the salt and the frame's own offset, so a frame is only valid in
//! the file, and at the place, it was written for: bytes left over from an
//! older file (before a compaction) or shifted by damage never pass. The
//! byte layout is in [`format`](mod@format).
//!
//! ## Durability and group commit
//!
//! Writing to a file puts bytes in the page cache; only `fdatasync` makes
//! them durable, and it costs a disk flush, a millisecond or more. So the log
//! separates the two: [`Wal::append`] frames a record into a buffer and
//! returns its [`Position`]; [`Wal::sync`] waits until a position is
//! durable. [`Wal::append_durable`] does both, and is what to call before
//! acknowledging anything.
//!
//! When many threads append at once, they share syncs (*group commit*): one
//! of them, the leader, writes everything buffered so far and syncs once,
//! while the others wait; records appended meanwhile form the next batch.
//! Sixteen writers therefore need far fewer than sixteen syncs per round.
//! [`Wal::stats`] counts the bytes written and syncs made.
//!
//! Directory entries need syncs of their own: a new or renamed file can
//! vanish in a crash unless its directory is synced too. The log creates
//! files only by writing them under a temporary name, syncing, renaming and
//! syncing the directory.
//!
//! ## Recovery
//!
//! [`Wal::open`] replays the log: it returns every intact record in order
//! ([`Replay`]) and leaves the log ready for appends. What it does with
//! damage depends on where the damage is:
//!
//! - A **torn tail** — the end of the file holds a half-written batch,
//!   because the machine stopped during an append — is normal after a
//!   crash. Nothing in it was acknowledged (acknowledgement comes after the
//!   sync, and the sync covers the whole batch). It is cut off, and reported
//!   in [`Replay::dropped`] so that the operator sees a warning.
//! - A **corrupt record in the middle** — a bad frame followed by intact
//!   frames written after it was known to be durable — means the disk lost
//!   data it had promised to keep. Opening stops with [`Error::Corrupt`],
//!   saying where; with [`Options::repair`] it keeps the records before the
//!   damage and drops the rest, reporting what it dropped.
//!
//! The durable mark tells the two apart: each frame records how far the file
//! was durable when the frame was written. An intact frame after a bad one
//! whose mark reaches past the bad one proves that the bad bytes had been
//! synced. Pages of one unsynced batch may reach the disk in any order, so
//! intact frames can follow a torn one; their marks do not reach it.
//!
//! ## Compaction
//!
//! The log only grows. [`Wal::compact`] replaces it with the records the
//! caller still needs (for the daemon: one record per job that matters),
//! written to a new file with a new salt, synced, and renamed over the log.
//! The caller decides when, for example when [`Wal::size`] passes a threshold.
//!
//! ## One writer
//!
//! An open [`Wal`] holds an exclusive lock on the log (an `flock` on
//! [`lock_path`]): a second daemon, or an offline tool that would write, gets
//! [`Error::Locked`]. [`read`] takes no lock and changes nothing, for tools
//! that only look.
//!
//! ## Where each concept lives
//!
//! | concept | items |
//! | --- | --- |
//! | opening and replaying, appending, syncing, compacting | [`Wal`], [`Options`], [`Replay`], [`Record`] |
//! | durability | [`Position`], [`Wal::sync`], [`Wal::append_durable`] |
//! | damage found on open | [`Dropped`], [`DropCause`], [`Error::Corrupt`] |
//! | metrics | [`Stats`], [`Wal::stats`], [`Wal::size`] |
//! | reading without opening for writes | [`read`] |
//! | the bytes on disk | [`format`](mod@format) |
//! | the file system under the log | [`fs`] |
//! | crashes and I/O failures, simulated | [`fault`] |
//! | what can go wrong | [`Error`] |
//!
//! ## Example
//!
//! ```
//! use tiffany_wal::{Options, Wal};
//!
//! let dir = std::env::temp_dir().join(format!("tiffany-wal-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("jobs.wal");
//!
//! let (wal, replay) = Wal::open(&path, &Options::new()).unwrap();
//! assert!(replay.created);
//! wal.append_durable(1, br#"{"job":1,"state":"queued"}"#).unwrap();
//! let p = wal.append(1, br#"{"job":1,"state":"running"}"#).unwrap();
//! wal.sync(p).unwrap();
//! drop(wal);
//!
//! let (wal, replay) = Wal::open(&path, &Options::new()).unwrap();
//! assert_eq!(replay.records.len(), 2);
//! assert_eq!(replay.records[1].version, 1);
//! assert_eq!(replay.records[1].body, br#"{"job":1,"state":"running"}"#);
//! wal.compact([(1, br#"{"job":1,"state":"running"}"#)]).unwrap();
//! # drop(wal);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! ## Testing crashes
//!
//! All file I/O goes through the [`fs::FileSystem`] trait. [`fault::FaultFs`]
//! implements it in memory, numbers every call that changes something, and
//! can fail or crash at any of them, then reboot into what a real disk
//! might hold: this crate's tests crash a workload at every call and check
//! that recovery returns every acknowledged record and nothing else.

#![warn(missing_docs)]

/// The crate README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod error;
pub mod fault;
pub mod format;
pub mod fs;
mod log;

pub use error::Error;
pub use log::{
    Compaction, DEFAULT_MAX_RECORD_SIZE, DEFAULT_WRITE_BUFFER, DropCause, Dropped, Options,
    Position, Record, Replay, Stats, Wal, lock_path, read, read_with, temporary_path,
};
