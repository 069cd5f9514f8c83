//! What can go wrong.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// An error from the log.
///
/// Errors about the file's contents ([`Error::NotAWal`], [`Error::CorruptHeader`],
/// [`Error::UnsupportedFormat`], [`Error::Corrupt`]) come only from opening
/// or reading a log. After an I/O error while appending, syncing or
/// compacting, the log refuses further work ([`Error::Failed`]): what reached
/// the disk is unknown (a failed `fdatasync` may have dropped the data it
/// was to write), and only reopening, which replays what is there, tells.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file system call failed.
    Io {
        /// The call: `"open"`, `"read"`, `"write"`, `"fdatasync"`, `"rename"`, …
        op: &'static str,
        /// The file or directory it was made on.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The log does not exist and [`crate::Options::create`] is off.
    NotFound {
        /// The log's path.
        path: PathBuf,
    },
    /// Another handle, in this process or another, has the log open.
    Locked {
        /// The log's path.
        path: PathBuf,
    },
    /// The file is not a log: it does not start with the log's magic bytes.
    NotAWal {
        /// The file's path.
        path: PathBuf,
    },
    /// The file header's checksum is wrong, so the file's salt is unknown and
    /// none of its records can be trusted. Not repairable.
    CorruptHeader {
        /// The file's path.
        path: PathBuf,
    },
    /// The file was written in a format version this crate does not read
    /// (a newer one).
    UnsupportedFormat {
        /// The file's path.
        path: PathBuf,
        /// The version in its header.
        version: u16,
    },
    /// A record in the middle of the log is corrupt: intact records that were
    /// written after it had been made durable follow it. Opening with
    /// [`crate::Options::repair`] keeps the records before it and drops the rest.
    Corrupt {
        /// The file's path.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// Where the next intact record starts.
        next_valid: u64,
        /// How many intact records follow the bad one (repair drops them).
        records_after: u64,
    },
    /// A record body is longer than [`crate::Options::max_record_size`].
    RecordTooLarge {
        /// The body's length.
        len: usize,
        /// The maximum.
        max: u32,
    },
    /// Record version 0 is reserved (it marks zeroed space on disk).
    ZeroVersion,
    /// An earlier I/O error left the log in an unknown state; reopen it.
    Failed {
        /// The earlier error.
        cause: Arc<io::Error>,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::NotFound { path } => write!(f, "{}: no such log", path.display()),
            Error::Locked { path } => write!(
                f,
                "{}: the log is open elsewhere (is a daemon running on it?)",
                path.display()
            ),
            Error::NotAWal { path } => write!(f, "{}: not a Tiffany log", path.display()),
            Error::CorruptHeader { path } => {
                write!(f, "{}: the log's header is corrupt", path.display())
            }
            Error::UnsupportedFormat { path, version } => write!(
                f,
                "{}: log format version {version} is not supported by this version",
                path.display()
            ),
            Error::Corrupt {
                path,
                offset,
                next_valid,
                records_after,
            } => write!(
                f,
                "{}: corrupt record at byte {offset}, followed by {records_after} intact \
                 record(s) from byte {next_valid}; open with repair to keep the records \
                 before it and drop the rest",
                path.display()
            ),
            Error::RecordTooLarge { len, max } => {
                write!(f, "record of {len} bytes is over the maximum of {max}")
            }
            Error::ZeroVersion => write!(f, "record version 0 is reserved"),
            Error::Failed { cause } => {
                write!(f, "the log failed earlier ({cause}); reopen it")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Failed { cause } => Some(&**cause),
            _ => None,
        }
    }
}
