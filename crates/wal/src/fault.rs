//! A simulated file system for crash and fault tests.
//!
//! [`FaultFs`] keeps files in memory and models what a real file system keeps
//! after a power cut. Each file has two states: what reads see now, and what
//! is durable. Writes, truncations and directory changes are *pending* until
//! a sync makes them durable: [`File::sync_data`] for a file's bytes and
//! length, [`FileSystem::sync_dir`] for directory entries (the simulation has
//! one directory: every path is in it).
//!
//! Every call that changes something — `create`, `write_all_at`,
//! `sync_data`, `set_len`, `rename`, `remove`, `sync_dir` — is *numbered*
//! from 1. A test can make call `N` fail ([`Fault::Fail`]: it returns an
//! error and changes nothing, the world goes on) or crash there
//! ([`Fault::Crash`]: the call takes effect — a write or rename pending, a
//! sync done — but returns an error, and so does every later call through
//! any handle: the process died during the call). [`FaultFs::restart`] then
//! produces the state a machine would find after rebooting: durable state,
//! plus a random part of what was pending — whole writes kept or lost, writes
//! torn into kept, lost and [`Fill`]ed pieces, truncations kept or lost, and a
//! random prefix of the pending directory changes. Locks
//! ([`FileSystem::lock`]) are not files: they are released by the crash.
//!
//! ```
//! use std::sync::Arc;
//! use tiffany_wal::fault::{Fault, FaultFs, Fill};
//! use tiffany_wal::{Options, Wal};
//!
//! let fs = FaultFs::new();
//! fs.inject(3, Fault::Crash);
//! let opened = Wal::open_with(Arc::new(fs.clone()), "log", &Options::new());
//! assert!(opened.is_err()); // creating a log takes more than three calls
//! fs.restart(1, Fill::Garbage);
//! let (_wal, replay) = Wal::open_with(Arc::new(fs.clone()), "log", &Options::new()).unwrap();
//! assert!(replay.records.is_empty());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{File, FileSystem, Lock};

/// What happens at an injected call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call returns an error and has no effect; later calls work.
    Fail,
    /// The call takes effect (as far as any unsynced change does) but
    /// returns an error, and every later call fails until
    /// [`FaultFs::restart`]: the process died during the call. Crashing at
    /// the call before shows the state without it.
    Crash,
}

/// What the torn parts of a pending write hold after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Random bytes.
    Garbage,
    /// Zero bytes.
    Zeros,
}

/// The kind of a numbered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// [`FileSystem::create`].
    Create,
    /// [`File::write_all_at`].
    Write,
    /// [`File::sync_data`].
    SyncData,
    /// [`File::set_len`].
    SetLen,
    /// [`FileSystem::rename`].
    Rename,
    /// [`FileSystem::remove`].
    Remove,
    /// [`FileSystem::sync_dir`].
    SyncDir,
}

/// A numbered call, as passed to the hook set with [`FaultFs::set_hook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The call's number since the last restart, from 1.
    pub number: u64,
    /// What the call does.
    pub kind: CallKind,
}

/// A hook run before each numbered call, outside the file system's lock.
pub type Hook = Arc<dyn Fn(Call) + Send + Sync>;

/// Pieces a pending write is torn into after a crash.
const TEAR_CHUNK: usize = 16;

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
enum NameChange {
    Link(PathBuf, usize),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

#[derive(Default, Clone)]
struct World {
    generation: u64,
    calls: u64,
    faults: BTreeMap<u64, Fault>,
    crashed: bool,
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    pending_names: Vec<NameChange>,
    /// Paths locked with [`FileSystem::lock`] (not files: a lock is memory
    /// of the process, gone in a crash).
    locks: BTreeSet<PathBuf>,
    hook: Option<Hook>,
}

/// An in-memory file system that numbers its calls and fails or crashes on
/// demand. Clones share the same files. See the [module documentation](self).
#[derive(Clone, Default)]
pub struct FaultFs {
    world: Arc<Mutex<World>>,
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.lock();
        f.debug_struct("FaultFs")
            .field("calls", &w.calls)
            .field("crashed", &w.crashed)
            .field("files", &w.names.keys().collect::<Vec<_>>())
            .finish()
    }
}

struct FaultFile {
    world: Arc<Mutex<World>>,
    generation: u64,
    inode: usize,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("inode", &self.inode)
            .finish()
    }
}

fn dead() -> io::Error {
    io::Error::other("simulated crash: the process is dead")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl World {
    /// Runs numbered call `number` (`effect`), or fails or crashes it as injected.
    fn perform<T>(
        &mut self,
        generation: Option<u64>,
        number: u64,
        effect: impl FnOnce(&mut World) -> io::Result<T>,
    ) -> io::Result<T> {
        if self.crashed || generation.is_some_and(|g| g != self.generation) {
            return Err(dead());
        }
        match self.faults.remove(&number) {
            None => effect(self),
            Some(Fault::Fail) => Err(io::Error::other(format!(
                "injected failure at call {number}"
            ))),
            Some(Fault::Crash) => {
                // The call was under way: its effect is there, pending like
                // any unsynced change, but the process dies before it returns.
                let _ = effect(self);
                self.crashed = true;
                Err(dead())
            }
        }
    }

    fn check_alive(&self, generation: u64) -> io::Result<()> {
        if self.crashed || generation != self.generation {
            Err(dead())
        } else {
            Ok(())
        }
    }

    fn change_names(&mut self, change: NameChange) {
        apply_name_change(&mut self.names, &change);
        self.pending_names.push(change);
    }
}

fn apply_name_change(names: &mut BTreeMap<PathBuf, usize>, change: &NameChange) {
    match change {
        NameChange::Link(path, inode) => {
            names.insert(path.clone(), *inode);
        }
        NameChange::Unlink(path) => {
            names.remove(path);
        }
        NameChange::Rename(from, to) => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    let end = offset + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset..end].copy_from_slice(bytes);
}

/// splitmix64: a small deterministic generator for the crash model.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What survives of one pending write: per chunk, the new bytes, nothing, or fill.
fn tear(data: &mut Vec<u8>, offset: u64, bytes: &[u8], rng: &mut Rng, fill: Fill) {
    // 0: all kept, 1: all lost, 2: a prefix kept and the rest filled, 3: chunk by chunk.
    let mode = rng.below(4);
    let cut = rng.below(bytes.len() as u64 / TEAR_CHUNK as u64 + 1) as usize;
    for (i, chunk) in bytes.chunks(TEAR_CHUNK).enumerate() {
        let fate = match mode {
            0 => 0,
            1 => 1,
            2 if i < cut => 0,
            2 => 2,
            _ => rng.below(3),
        };
        let at = offset + (i * TEAR_CHUNK) as u64;
        match fate {
            0 => write_into(data, at, chunk),
            1 => {}
            _ => {
                let filled: Vec<u8> = match fill {
                    Fill::Zeros => vec![0; chunk.len()],
                    Fill::Garbage => chunk.iter().map(|_| rng.next() as u8).collect(),
                };
                write_into(data, at, &filled);
            }
        }
    }
}

impl FaultFs {
    /// An empty file system.
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An independent copy of this file system, in its current state
    /// (pending changes, call count, faults and hook included).
    pub fn fork(&self) -> FaultFs {
        let world = self.lock().clone();
        FaultFs {
            world: Arc::new(Mutex::new(world)),
        }
    }

    /// Makes numbered call `number` (counted from the last restart) fail or crash.
    pub fn inject(&self, number: u64, fault: Fault) {
        self.lock().faults.insert(number, fault);
    }

    /// How many numbered calls there have been since the last restart.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Whether an injected crash has happened (and [`FaultFs::restart`] not yet been called).
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Runs `hook` before every numbered call (outside the file system's
    /// lock, so it may block to hold a call back); `None` removes it.
    pub fn set_hook(&self, hook: Option<Hook>) {
        self.lock().hook = hook;
    }

    /// Simulates a power cut and a reboot: every file keeps its durable state
    /// plus a random part of its pending writes (torn pieces hold `fill`),
    /// the directory keeps its durable entries plus a random prefix of its
    /// pending changes. Handles opened before are dead; call numbers and
    /// injected faults start afresh. The same `seed` gives the same result.
    pub fn restart(&self, seed: u64, fill: Fill) {
        let mut w = self.lock();
        let mut rng = Rng(seed);
        for inode in &mut w.inodes {
            let mut data = inode.durable.clone();
            for op in &inode.pending {
                match op {
                    Pending::Write {
                        offset,
                        data: bytes,
                    } => tear(&mut data, *offset, bytes, &mut rng, fill),
                    Pending::SetLen(len) => {
                        if rng.below(2) == 0 {
                            data.resize(*len as usize, 0);
                        }
                    }
                }
            }
            inode.pending.clear();
            inode.durable = data.clone();
            inode.data = data;
        }
        let kept = rng.below(w.pending_names.len() as u64 + 1) as usize;
        let mut names = w.durable_names.clone();
        for change in &w.pending_names[..kept] {
            apply_name_change(&mut names, change);
        }
        w.pending_names.clear();
        w.durable_names = names.clone();
        w.names = names;
        w.generation += 1;
        w.locks.clear();
        w.calls = 0;
        w.faults.clear();
        w.crashed = false;
    }

    /// The bytes a file holds now (what reads see), if it exists.
    pub fn read_file(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let w = self.lock();
        let inode = *w.names.get(path.as_ref())?;
        Some(w.inodes[inode].data.clone())
    }

    /// Replaces a file's bytes, durably and without numbering a call (for
    /// tests that damage a log by hand).
    pub fn write_file(&self, path: impl AsRef<Path>, bytes: &[u8]) {
        let mut w = self.lock();
        let path = path.as_ref().to_path_buf();
        let inode = match w.names.get(&path) {
            Some(&inode) => inode,
            None => {
                w.inodes.push(Inode::default());
                let inode = w.inodes.len() - 1;
                w.names.insert(path.clone(), inode);
                w.durable_names.insert(path, inode);
                inode
            }
        };
        let file = &mut w.inodes[inode];
        file.data = bytes.to_vec();
        file.durable = bytes.to_vec();
        file.pending.clear();
    }

    /// The paths that exist now.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }

    /// Numbers a call, runs the hook, and applies `f` to the world if the call may go ahead.
    fn call<T>(
        world: &Arc<Mutex<World>>,
        generation: Option<u64>,
        kind: CallKind,
        f: impl FnOnce(&mut World) -> io::Result<T>,
    ) -> io::Result<T> {
        let lock = || world.lock().unwrap_or_else(|e| e.into_inner());
        let (number, hook) = {
            let mut w = lock();
            if w.crashed || generation.is_some_and(|g| g != w.generation) {
                return Err(dead());
            }
            w.calls += 1;
            (w.calls, w.hook.clone())
        };
        if let Some(hook) = hook {
            hook(Call { number, kind });
        }
        lock().perform(generation, number, f)
    }

    fn file(&self, inode: usize) -> Arc<dyn File> {
        let generation = self.lock().generation;
        Arc::new(FaultFile {
            world: self.world.clone(),
            generation,
            inode,
        })
    }
}

impl FileSystem for FaultFs {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        let inode = {
            let w = self.lock();
            if w.crashed {
                return Err(dead());
            }
            *w.names.get(path).ok_or_else(|| not_found(path))?
        };
        Ok(self.file(inode))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        let inode = FaultFs::call(&self.world, None, CallKind::Create, |w| {
            w.inodes.push(Inode::default());
            let inode = w.inodes.len() - 1;
            w.change_names(NameChange::Link(path.to_path_buf(), inode));
            Ok(inode)
        })?;
        Ok(self.file(inode))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FaultFs::call(&self.world, None, CallKind::Rename, |w| {
            if !w.names.contains_key(from) {
                return Err(not_found(from));
            }
            w.change_names(NameChange::Rename(from.to_path_buf(), to.to_path_buf()));
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        FaultFs::call(&self.world, None, CallKind::Remove, |w| {
            if !w.names.contains_key(path) {
                return Err(not_found(path));
            }
            w.change_names(NameChange::Unlink(path.to_path_buf()));
            Ok(())
        })
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Lock>> {
        let mut w = self.lock();
        if w.crashed {
            return Err(dead());
        }
        if !w.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", path.display()),
            ));
        }
        Ok(Box::new(FaultLock {
            world: self.world.clone(),
            generation: w.generation,
            path: path.to_path_buf(),
        }))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        FaultFs::call(&self.world, None, CallKind::SyncDir, |w| {
            w.durable_names = w.names.clone();
            w.pending_names.clear();
            Ok(())
        })
    }
}

/// A lock held in a [`FaultFs`].
struct FaultLock {
    world: Arc<Mutex<World>>,
    generation: u64,
    path: PathBuf,
}

impl fmt::Debug for FaultLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FaultLock").field(&self.path).finish()
    }
}

impl Lock for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        if w.generation == self.generation {
            w.locks.remove(&self.path);
        }
    }
}

impl FaultFile {
    fn call<T>(&self, kind: CallKind, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let inode = self.inode;
        FaultFs::call(&self.world, Some(self.generation), kind, |w| {
            Ok(f(&mut w.inodes[inode]))
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Inode) -> T) -> io::Result<T> {
        let w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        w.check_alive(self.generation)?;
        Ok(f(&w.inodes[self.inode]))
    }
}

impl File for FaultFile {
    fn size(&self) -> io::Result<u64> {
        self.read(|i| i.data.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read(|i| {
            let start = (offset as usize).min(i.data.len());
            let n = buf.len().min(i.data.len() - start);
            buf[..n].copy_from_slice(&i.data[start..start + n]);
            n
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.call(CallKind::Write, |i| {
            write_into(&mut i.data, offset, buf);
            i.pending.push(Pending::Write {
                offset,
                data: buf.to_vec(),
            });
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.call(CallKind::SyncData, |i| {
            i.durable = i.data.clone();
            i.pending.clear();
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.call(CallKind::SetLen, |i| {
            i.data.resize(len as usize, 0);
            i.pending.push(Pending::SetLen(len));
        })
    }
}
