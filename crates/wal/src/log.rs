//! The log itself: opening and replaying, appending with group commit, compaction.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;

use crate::error::Error;
use crate::format::{self, FRAME_HEADER_LEN, HEADER_LEN, Header, MAX_RECORD_SIZE};
use crate::fs::{self, File, FileSystem, Lock, RealFs};

/// Largest record body accepted by default: 16 MiB.
pub const DEFAULT_MAX_RECORD_SIZE: u32 = 16 << 20;
/// Buffered, unsynced bytes past which [`Wal::append`] writes them to the file: 1 MiB.
pub const DEFAULT_WRITE_BUFFER: usize = 1 << 20;
/// Compaction writes its new file in pieces of about this many bytes.
const COMPACT_CHUNK: usize = 1 << 20;

/// How to open a log. Built with [`Options::new`] and its setters.
///
/// ```
/// use tiffany_wal::Options;
/// let options = Options::new().repair(true).max_record_size(1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    create: bool,
    repair: bool,
    max_record_size: u32,
    write_buffer: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options::new()
    }
}

impl Options {
    /// The defaults: create the log if missing, no repair, records up to
    /// [`DEFAULT_MAX_RECORD_SIZE`], a [`DEFAULT_WRITE_BUFFER`] write buffer.
    pub fn new() -> Options {
        Options {
            create: true,
            repair: false,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            write_buffer: DEFAULT_WRITE_BUFFER,
        }
    }

    /// Whether opening a missing log creates it (default `true`). Without
    /// it, a missing log is [`Error::NotFound`].
    pub fn create(mut self, create: bool) -> Options {
        self.create = create;
        self
    }

    /// Whether opening a log with a corrupt record in the middle keeps the
    /// records before it and drops the rest (default `false`: such a log is
    /// [`Error::Corrupt`] and is left untouched). What was dropped is in
    /// [`Replay::dropped`].
    pub fn repair(mut self, repair: bool) -> Options {
        self.repair = repair;
        self
    }

    /// The largest record body, in bytes, that appends accept and replay
    /// believes (default [`DEFAULT_MAX_RECORD_SIZE`], at most
    /// [`format::MAX_RECORD_SIZE`]). Replay never allocates for a length
    /// over it: such a frame is damage. Do not lower it below the size of
    /// records already in a log.
    pub fn max_record_size(mut self, bytes: u32) -> Options {
        self.max_record_size = bytes.min(MAX_RECORD_SIZE);
        self
    }

    /// How many appended, not yet written bytes [`Wal::append`] buffers
    /// before writing them to the file itself (default
    /// [`DEFAULT_WRITE_BUFFER`]). Writing is not syncing: see [`Wal::sync`].
    pub fn write_buffer(mut self, bytes: usize) -> Options {
        self.write_buffer = bytes;
        self
    }
}

/// One record read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The version the record was appended with: the body's schema, for the
    /// caller to read old bodies and migrate them.
    pub version: u16,
    /// Where its frame starts in the file (for messages and tools; offsets
    /// change when the log is compacted).
    pub offset: u64,
    /// The body, as appended.
    pub body: Vec<u8>,
}

/// What opening a log found: the records to replay, and what was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Every intact record, in the order they were appended.
    pub records: Vec<Record>,
    /// Whether the log did not exist and was created empty.
    pub created: bool,
    /// The damaged end of the file that was cut off, if any. Show it to the
    /// operator: it is a warning for a torn tail, and data loss for a repair.
    pub dropped: Option<Dropped>,
}

/// A damaged stretch of a log that replay did not return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Why it was dropped.
    pub cause: DropCause,
    /// Where it starts: the file now ends here.
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes: u64,
    /// How many intact records were among the dropped bytes (after the
    /// damaged one): 0 for a plain torn write.
    pub records: u64,
}

/// Why a stretch of a log was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// The end of the log was never completely written: a crash during an
    /// append. The records in it had not been acknowledged as durable.
    TornTail,
    /// A corrupt record in the middle of the log, dropped with everything
    /// after it because [`Options::repair`] was set.
    Repaired,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.cause {
            DropCause::TornTail => "torn tail",
            DropCause::Repaired => "repair: corrupt record",
        };
        write!(
            f,
            "{what} at byte {}: dropped {} bytes holding {} intact record(s)",
            self.offset, self.bytes, self.records
        )
    }
}

/// A place in the stream of records appended through one [`Wal`]: the
/// first record appended after opening is at position 1, the next at 2.
/// Positions order appends; [`Wal::sync`] waits until a position is durable.
/// They are not stored: after reopening, counting starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(u64);

impl Position {
    /// How many records had been appended through this handle, including
    /// the one at this position.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Counters since the log was opened, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Bytes written to log files (appends, new files, compactions):
    /// the daemon's `tiffany_wal_bytes_total`.
    pub bytes_written: u64,
    /// `fdatasync` calls on log files: the daemon's `tiffany_wal_fsyncs_total`.
    pub fsyncs: u64,
    /// `fsync` calls on the log's directory.
    pub dir_syncs: u64,
    /// Records appended.
    pub records_appended: u64,
    /// Compactions done.
    pub compactions: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// The log's size in bytes before.
    pub bytes_before: u64,
    /// Its size after.
    pub bytes_after: u64,
    /// How many records it now holds.
    pub records: u64,
}

#[derive(Debug, Default)]
struct Counters {
    bytes_written: AtomicU64,
    fsyncs: AtomicU64,
    dir_syncs: AtomicU64,
    records_appended: AtomicU64,
    compactions: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the mutex guards.
#[derive(Debug)]
struct State {
    file: Arc<dyn File>,
    salt: u64,
    /// Framed records not yet written, starting at file offset `written`.
    pending: Vec<u8>,
    /// An empty buffer kept to swap with `pending`.
    spare: Vec<u8>,
    /// File offsets: the end of everything appended, of what was written, of what is durable.
    end: u64,
    written: u64,
    durable: u64,
    /// Positions: the last appended, the last written, the last durable.
    appended: u64,
    written_pos: u64,
    durable_pos: u64,
    /// A thread is writing or syncing with the lock released.
    busy: bool,
    /// Set by the first I/O error; every later call fails.
    failed: Option<Arc<io::Error>>,
    /// Threads parked until a batch ends, and the next ticket to give one.
    waiters: Vec<Waiter>,
    next_ticket: u64,
}

/// A thread parked in [`Wal::sync`] (or a compaction) while another leads a batch.
#[derive(Debug)]
struct Waiter {
    ticket: u64,
    /// The position it waits for (0: only for the batch to end).
    target: u64,
    thread: Thread,
}

impl State {
    fn check(&self) -> Result<(), Error> {
        match &self.failed {
            Some(cause) => Err(Error::Failed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn fail(&mut self, error: &Error) {
        let cause = match error {
            Error::Io { source, .. } => io::Error::new(source.kind(), source.to_string()),
            other => io::Error::other(other.to_string()),
        };
        self.failed.get_or_insert(Arc::new(cause));
    }

    /// Takes the pending bytes and what they reach: (bytes, their offset, end, position).
    fn take_pending(&mut self) -> (Vec<u8>, u64, u64, u64) {
        let spare = std::mem::take(&mut self.spare);
        let buf = std::mem::replace(&mut self.pending, spare);
        (buf, self.written, self.end, self.appended)
    }

    /// At the end of a batch (or a compaction, or a failure): the waiters to
    /// wake — those whose records are now durable, and one other, to lead
    /// the next batch — taken off the list. Waking only those, rather than
    /// every waiter, saves a context switch per waiter and batch.
    fn take_wakeable(&mut self) -> Vec<Thread> {
        let mut woken = Vec::new();
        let mut leader = false;
        let (failed, durable_pos) = (self.failed.is_some(), self.durable_pos);
        self.waiters.retain(|w| {
            let done = failed || durable_pos >= w.target;
            if done || !leader {
                leader |= !done;
                woken.push(w.thread.clone());
                false
            } else {
                true
            }
        });
        woken
    }

    /// Records that a batch taken with [`State::take_pending`] reached the file.
    fn batch_done(&mut self, mut buf: Vec<u8>, end: u64, pos: u64, synced: bool) {
        self.written = end;
        self.written_pos = pos;
        if synced {
            self.durable = end;
            self.durable_pos = pos;
        }
        buf.clear();
        if buf.capacity() > self.spare.capacity() {
            self.spare = buf;
        }
    }
}

/// A write-ahead log: an append-only file of checksummed records.
/// See the [crate documentation](crate) for the concepts.
///
/// `Wal` is `Send` and `Sync`: share it between threads with an `Arc`.
pub struct Wal {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    tmp_path: PathBuf,
    dir: PathBuf,
    max_record_size: u32,
    write_buffer: usize,
    state: Mutex<State>,
    counters: Counters,
    /// Held while the log is open: one writer per log.
    _lock: Box<dyn Lock>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("path", &self.path)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// The file a new log or a compaction is written to before it is renamed
/// over the log: the log's name with `.new` appended.
pub fn temporary_path(path: &Path) -> PathBuf {
    with_suffix(path, ".new")
}

/// The file locked while a log is open: the log's name with `.lock`
/// appended. It stays, empty, when the log is closed.
pub fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A salt unlike `avoid`, from the standard library's randomly keyed hasher,
/// the time and a counter.
fn new_salt(avoid: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let salt = h.finish();
        if salt != avoid {
            return salt;
        }
    }
}

fn check_record(version: u16, len: usize, max: u32) -> Result<(), Error> {
    if version == 0 {
        return Err(Error::ZeroVersion);
    }
    if len > max as usize {
        return Err(Error::RecordTooLarge { len, max });
    }
    Ok(())
}

/// A log file read completely: the open file, its salt, and what a scan of its frames found.
struct Loaded {
    file: Arc<dyn File>,
    salt: u64,
    scan: format::Scan,
}

/// Reads a log file completely. `Ok(None)` if it does not exist.
fn load(fs: &dyn FileSystem, path: &Path, options: &Options) -> Result<Option<Loaded>, Error> {
    let file = match fs.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let data = fs::read_all(&*file).map_err(|e| Error::io("read", path, e))?;
    let path_buf = || path.to_path_buf();
    let salt = match format::decode_header(&data) {
        Header::Valid { salt } => salt,
        Header::NotAWal => return Err(Error::NotAWal { path: path_buf() }),
        Header::Corrupt => return Err(Error::CorruptHeader { path: path_buf() }),
        Header::Unsupported { version } => {
            return Err(Error::UnsupportedFormat {
                path: path_buf(),
                version,
            });
        }
    };
    let scan = format::scan(&data, salt, options.max_record_size);
    Ok(Some(Loaded { file, salt, scan }))
}

/// Decides what damage found by a scan means: nothing, a torn tail to cut
/// off, a corruption to repair, or an error.
fn judge(path: &Path, scan: &format::Scan, repair: bool) -> Result<Option<Dropped>, Error> {
    let Some(damage) = scan.damage else {
        return Ok(None);
    };
    let cause = match (damage.mid_log, repair) {
        (false, _) => DropCause::TornTail,
        (true, true) => DropCause::Repaired,
        (true, false) => {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                offset: damage.offset,
                next_valid: damage.next_valid.unwrap_or(damage.offset),
                records_after: damage.frames_after,
            });
        }
    };
    Ok(Some(Dropped {
        cause,
        offset: damage.offset,
        bytes: damage.bytes,
        records: damage.frames_after,
    }))
}

/// Reads a log without changing it: the records [`Wal::open`] would replay
/// and what it would drop (a torn tail is reported, not cut off). For
/// offline tools (`tiffany wal verify`, `inspect`). A missing log is
/// [`Error::NotFound`].
pub fn read(path: impl AsRef<Path>, options: &Options) -> Result<Replay, Error> {
    read_with(&RealFs, path, options)
}

/// [`read`] on another file system.
pub fn read_with(
    fs: &dyn FileSystem,
    path: impl AsRef<Path>,
    options: &Options,
) -> Result<Replay, Error> {
    let path = path.as_ref();
    let Loaded { scan, .. } = load(fs, path, options)?.ok_or_else(|| Error::NotFound {
        path: path.to_path_buf(),
    })?;
    let dropped = judge(path, &scan, options.repair)?;
    Ok(Replay {
        records: scan.records,
        created: false,
        dropped,
    })
}

impl Wal {
    /// Opens the log at `path` on the real file system, creating it if it
    /// is missing (unless [`Options::create`] is off), and replays it.
    ///
    /// Replay returns every intact record in order. A torn tail is cut off
    /// and reported in [`Replay::dropped`]; a corrupt record in the middle
    /// is [`Error::Corrupt`] unless [`Options::repair`] is set. Before
    /// returning, the file and its directory are synced, so that what was
    /// replayed is durable even if it had only reached the page cache.
    ///
    /// The log stays locked (an `flock` on [`lock_path`]) until the `Wal` is
    /// dropped: opening it again meanwhile, from this process or another,
    /// is [`Error::Locked`].
    pub fn open(path: impl AsRef<Path>, options: &Options) -> Result<(Wal, Replay), Error> {
        Wal::open_with(Arc::new(RealFs), path, options)
    }

    /// [`Wal::open`] on another file system, such as [`crate::fault::FaultFs`].
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        path: impl AsRef<Path>,
        options: &Options,
    ) -> Result<(Wal, Replay), Error> {
        let path = path.as_ref().to_path_buf();
        let tmp_path = temporary_path(&path);
        let dir = parent_dir(&path);
        let lock = fs.lock(&lock_path(&path)).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Error::Locked { path: path.clone() },
            _ => Error::io("lock", lock_path(&path), e),
        })?;
        // A new file that a creation or compaction did not finish renaming.
        match fs.remove(&tmp_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("remove", tmp_path, e));
            }
            _ => {}
        }
        let counters = Counters::default();
        let (file, salt, end, replay) = match load(&*fs, &path, options)? {
            None if !options.create => return Err(Error::NotFound { path }),
            None => {
                let salt = new_salt(0);
                let files = NewFile {
                    fs: &*fs,
                    path: &path,
                    tmp_path: &tmp_path,
                    dir: &dir,
                    counters: &counters,
                };
                let (file, end) = files.write(salt, &[] as &[(u16, &[u8])]).map_err(|f| f.0)?;
                let replay = Replay {
                    records: Vec::new(),
                    created: true,
                    dropped: None,
                };
                (file, salt, end, replay)
            }
            Some(Loaded { file, salt, scan }) => {
                let dropped = judge(&path, &scan, options.repair)?;
                if dropped.is_some() {
                    file.set_len(scan.end)
                        .map_err(|e| Error::io("truncate", &path, e))?;
                }
                file.sync_data()
                    .map_err(|e| Error::io("fdatasync", &path, e))?;
                Counters::add(&counters.fsyncs, 1);
                fs.sync_dir(&dir)
                    .map_err(|e| Error::io("fsync directory", &dir, e))?;
                Counters::add(&counters.dir_syncs, 1);
                let replay = Replay {
                    records: scan.records,
                    created: false,
                    dropped,
                };
                (file, salt, scan.end, replay)
            }
        };
        let state = State {
            file,
            salt,
            pending: Vec::new(),
            spare: Vec::new(),
            end,
            written: end,
            durable: end,
            appended: 0,
            written_pos: 0,
            durable_pos: 0,
            busy: false,
            failed: None,
            waiters: Vec::new(),
            next_ticket: 0,
        };
        let wal = Wal {
            fs,
            path,
            tmp_path,
            dir,
            max_record_size: options.max_record_size,
            write_buffer: options.write_buffer,
            state: Mutex::new(state),
            counters,
            _lock: lock,
        };
        Ok((wal, replay))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log's size in bytes, counting appended records not yet written.
    /// Compare it with a threshold to decide when to [`Wal::compact`].
    pub fn size(&self) -> u64 {
        self.lock().end
    }

    /// The counters since the log was opened.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            bytes_written: get(&c.bytes_written),
            fsyncs: get(&c.fsyncs),
            dir_syncs: get(&c.dir_syncs),
            records_appended: get(&c.records_appended),
            compactions: get(&c.compactions),
        }
    }

    /// The position of the last record appended.
    pub fn appended_position(&self) -> Position {
        Position(self.lock().appended)
    }

    /// The position up to which records are durable.
    pub fn durable_position(&self) -> Position {
        Position(self.lock().durable_pos)
    }

    /// Appends a record without waiting for it to be durable, and returns
    /// its position: pass it to [`Wal::sync`] to wait. Until then the record
    /// may be lost in a crash (it is buffered in memory, or written but not
    /// synced). Record versions start at 1.
    pub fn append(&self, version: u16, body: &[u8]) -> Result<Position, Error> {
        check_record(version, body.len(), self.max_record_size)?;
        let mut st = self.lock();
        st.check()?;
        let offset = st.end;
        let (salt, durable) = (st.salt, st.durable);
        format::encode_frame(&mut st.pending, salt, offset, durable, version, body);
        st.end += FRAME_HEADER_LEN + body.len() as u64;
        st.appended += 1;
        let pos = st.appended;
        Counters::add(&self.counters.records_appended, 1);
        if st.pending.len() >= self.write_buffer && !st.busy {
            self.drive(st, pos, false)?;
        }
        Ok(Position(pos))
    }

    /// Appends a record and returns once it is durable: the call to use
    /// before acknowledging anything to a client. Concurrent callers share
    /// `fdatasync` calls (group commit).
    pub fn append_durable(&self, version: u16, body: &[u8]) -> Result<Position, Error> {
        let pos = self.append(version, body)?;
        self.sync(pos)?;
        Ok(pos)
    }

    /// Waits until every record up to `position` is durable, writing and
    /// syncing if no other thread is doing it already.
    ///
    /// Group commit: one thread at a time (the leader) writes all pending
    /// records and calls `fdatasync`; threads arriving meanwhile append to
    /// the next batch and park; when the leader is done, it wakes those
    /// whose records it made durable, and one other, which leads the next
    /// batch.
    pub fn sync(&self, position: Position) -> Result<(), Error> {
        let st = self.lock();
        self.drive(st, position.0, true)
    }

    /// Waits until every record appended so far is durable.
    pub fn sync_all(&self) -> Result<(), Error> {
        let st = self.lock();
        let pos = st.appended;
        self.drive(st, pos, true)
    }

    /// Makes everything appended durable and closes the log. Dropping a
    /// `Wal` does no I/O: records appended without a sync are lost.
    pub fn close(self) -> Result<(), Error> {
        self.sync_all()
    }

    /// Parks the calling thread until a batch ends (or spuriously): the
    /// caller re-checks the state when this returns.
    fn park<'a>(&'a self, mut st: MutexGuard<'a, State>, target: u64) -> MutexGuard<'a, State> {
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiters.push(Waiter {
            ticket,
            target,
            thread: std::thread::current(),
        });
        drop(st);
        std::thread::park();
        let mut st = self.lock();
        st.waiters.retain(|w| w.ticket != ticket);
        st
    }

    /// Writes, and syncs if `sync`, until `target` is written (or durable).
    fn drive<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
        sync: bool,
    ) -> Result<(), Error> {
        // A position past the last append (from another handle) means all of them.
        let target = target.min(st.appended);
        loop {
            st.check()?;
            let reached = if sync { st.durable_pos } else { st.written_pos };
            if reached >= target {
                return Ok(());
            }
            if st.busy {
                st = self.park(st, if sync { target } else { 0 });
                continue;
            }
            st.busy = true;
            let (buf, offset, end, pos) = st.take_pending();
            let file = st.file.clone();
            drop(st);
            let result = self.write_batch(&*file, &buf, offset, sync);
            st = self.lock();
            st.busy = false;
            match &result {
                Ok(()) => st.batch_done(buf, end, pos, sync),
                Err(e) => st.fail(e),
            }
            let woken = st.take_wakeable();
            drop(st);
            woken.iter().for_each(Thread::unpark);
            result?;
            st = self.lock();
        }
    }

    /// Writes `buf` at `offset` and syncs the file if `sync`, counting both.
    fn write_batch(
        &self,
        file: &dyn File,
        buf: &[u8],
        offset: u64,
        sync: bool,
    ) -> Result<(), Error> {
        if !buf.is_empty() {
            file.write_all_at(buf, offset)
                .map_err(|e| Error::io("write", &self.path, e))?;
            Counters::add(&self.counters.bytes_written, buf.len() as u64);
        }
        if sync {
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &self.path, e))?;
            Counters::add(&self.counters.fsyncs, 1);
        }
        Ok(())
    }

    /// Replaces the log's contents with `live`, atomically: afterwards the
    /// log holds exactly these records (version, body), in this order, and
    /// records appended later follow them.
    ///
    /// Steps, each crash-safe: make everything appended so far durable in
    /// the current file; write the records to a new file (with a new salt,
    /// so no frame of the old file can ever be read as one of the new) and
    /// `fdatasync` it; rename it over the log; `fsync` the directory. A
    /// crash before the rename is durable leaves the old log, after it the
    /// new one; the leftover new file is removed on the next open.
    ///
    /// Appends wait while a compaction runs. `live` must describe every
    /// record appended before this call that is still wanted: the caller
    /// takes its snapshot so that no append slips in between (for example
    /// under the same lock that orders its appends).
    pub fn compact<I, B>(&self, live: I) -> Result<Compaction, Error>
    where
        I: IntoIterator<Item = (u16, B)>,
        B: AsRef<[u8]>,
    {
        let live: Vec<(u16, B)> = live.into_iter().collect();
        for (version, body) in &live {
            check_record(*version, body.as_ref().len(), self.max_record_size)?;
        }
        let mut st = self.lock();
        loop {
            st.check()?;
            if !st.busy {
                break;
            }
            st = self.park(st, 0);
        }
        let result = self.compact_locked(&mut st, &live);
        // Appends made durable by the flush or refused by a failure: wake their waiters.
        let woken = st.take_wakeable();
        drop(st);
        woken.iter().for_each(Thread::unpark);
        result
    }

    /// [`Wal::compact`] once no batch is under way, with the lock held throughout.
    fn compact_locked<B: AsRef<[u8]>>(
        &self,
        st: &mut State,
        live: &[(u16, B)],
    ) -> Result<Compaction, Error> {
        if st.durable_pos < st.appended || st.durable < st.written {
            let (buf, offset, end, pos) = st.take_pending();
            let file = st.file.clone();
            if let Err(e) = self.write_batch(&*file, &buf, offset, true) {
                st.fail(&e);
                return Err(e);
            }
            st.batch_done(buf, end, pos, true);
        }
        let bytes_before = st.end;
        let salt = new_salt(st.salt);
        let files = NewFile {
            fs: &*self.fs,
            path: &self.path,
            tmp_path: &self.tmp_path,
            dir: &self.dir,
            counters: &self.counters,
        };
        match files.write(salt, live) {
            Ok((file, end)) => {
                st.file = file;
                st.salt = salt;
                (st.end, st.written, st.durable) = (end, end, end);
                Counters::add(&self.counters.compactions, 1);
                Ok(Compaction {
                    bytes_before,
                    bytes_after: end,
                    records: live.len() as u64,
                })
            }
            Err(NewFileError(e, renamed)) => {
                if renamed {
                    // The log may or may not be the new file now: only a reopen can tell.
                    st.fail(&e);
                } else {
                    let _ = self.fs.remove(&self.tmp_path);
                }
                Err(e)
            }
        }
    }
}

/// An error writing a new log file, and whether the rename over the old
/// one had happened (so the log may be either).
struct NewFileError(Error, bool);

/// Writes whole log files: new logs and compactions.
struct NewFile<'a> {
    fs: &'a dyn FileSystem,
    path: &'a Path,
    tmp_path: &'a Path,
    dir: &'a Path,
    counters: &'a Counters,
}

impl NewFile<'_> {
    /// Writes a log holding `records` with `salt` to the temporary path,
    /// syncs it, renames it over the log and syncs the directory. Returns
    /// the file and its length.
    fn write<B: AsRef<[u8]>>(
        &self,
        salt: u64,
        records: &[(u16, B)],
    ) -> Result<(Arc<dyn File>, u64), NewFileError> {
        let tmp_err = |op, e| NewFileError(Error::io(op, self.tmp_path, e), false);
        let end = HEADER_LEN
            + records
                .iter()
                .map(|(_, b)| FRAME_HEADER_LEN + b.as_ref().len() as u64)
                .sum::<u64>();
        let file = self
            .fs
            .create(self.tmp_path)
            .map_err(|e| tmp_err("create", e))?;
        let mut buf = format::encode_header(salt).to_vec();
        let mut buf_offset = 0;
        let flush = |buf: &mut Vec<u8>, buf_offset: &mut u64| {
            file.write_all_at(buf, *buf_offset)
                .map_err(|e| tmp_err("write", e))?;
            Counters::add(&self.counters.bytes_written, buf.len() as u64);
            *buf_offset += buf.len() as u64;
            buf.clear();
            Ok(())
        };
        for (version, body) in records {
            let offset = buf_offset + buf.len() as u64;
            // Every frame's durable mark is the end of the file: the whole
            // file is durable before it becomes the log.
            format::encode_frame(&mut buf, salt, offset, end, *version, body.as_ref());
            if buf.len() >= COMPACT_CHUNK {
                flush(&mut buf, &mut buf_offset)?;
            }
        }
        if !buf.is_empty() {
            flush(&mut buf, &mut buf_offset)?;
        }
        file.sync_data().map_err(|e| tmp_err("fdatasync", e))?;
        Counters::add(&self.counters.fsyncs, 1);
        self.fs
            .rename(self.tmp_path, self.path)
            .map_err(|e| tmp_err("rename", e))?;
        self.fs
            .sync_dir(self.dir)
            .map_err(|e| NewFileError(Error::io("fsync directory", self.dir, e), true))?;
        Counters::add(&self.counters.dir_syncs, 1);
        Ok((file, end))
    }
}
