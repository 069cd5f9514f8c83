//! The file system under the log.
//!
//! Every byte the log reads or writes, and every sync, rename and directory
//! sync, goes through the two small traits here. [`RealFs`] is the operating
//! system's file system; [`crate::fault::FaultFs`] is an in-memory one that
//! numbers each call and can fail or crash at any of them, for tests.
//!
//! The traits take `&self` and positioned reads and writes (`pread`/`pwrite`
//! style), so a file can be shared between threads without a cursor.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// A file system: opens files and changes directory entries.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Opens an existing file for reading and writing. A missing file is an
    /// error of kind [`io::ErrorKind::NotFound`].
    fn open(&self, path: &Path) -> io::Result<Arc<dyn File>>;
    /// Creates a file for reading and writing, emptying it if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn File>>;
    /// Renames `from` to `to`, replacing `to` if it exists (atomically, as `rename(2)`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. A missing file is an error of kind [`io::ErrorKind::NotFound`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable (`fsync` on the directory), so
    /// that files created, renamed or removed in it stay so after a crash.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock named by `path`, held until the returned guard
    /// is dropped, so that two processes (or two handles) never write one
    /// log. A lock held elsewhere is an error of kind
    /// [`io::ErrorKind::WouldBlock`].
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Lock>>;
}

/// A held lock from [`FileSystem::lock`]; dropping it releases the lock.
pub trait Lock: Send + Sync + fmt::Debug {}

/// An open file.
pub trait File: Send + Sync + fmt::Debug {
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads into `buf` from `offset`; returns how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Reads a whole file into memory.
pub(crate) fn read_all(file: &dyn File) -> io::Result<Vec<u8>> {
    let len = file.size()?;
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    let mut data = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut data[done..], done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    data.truncate(done);
    Ok(data)
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(std::fs::File);

/// An open lock file holding an exclusive `flock`, released when it is closed.
#[derive(Debug)]
struct RealLock {
    _file: std::fs::File,
}

impl Lock for RealLock {}

/// Log files hold what the daemon was asked to run: owner-only.
const FILE_MODE: u32 = 0o600;

/// Opens `path` for reading and writing, creating it owner-only if missing,
/// emptying it if `truncate`.
fn create_owner_only(path: &Path, truncate: bool) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(FILE_MODE)
        .open(path)
}

impl FileSystem for RealFs {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        let f = create_owner_only(path, true)?;
        Ok(Arc::new(RealFile(f)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Lock>> {
        let f = create_owner_only(path, false)?;
        match f.try_lock() {
            Ok(()) => Ok(Box::new(RealLock { _file: f })),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another handle", path.display()),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl File for RealFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}
