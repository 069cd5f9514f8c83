//! The daemon's system tasks: its own work on its kernel, at priority 0
//! ([`SpawnOptions::system`]), ahead of every job (jobs run at 0–255, 10 by
//! default) and never held by the kernel's back-pressure.
//!
//! - **`wal-flusher`** decides when the job log is synced (group commit):
//!   it sleeps until someone waits for durability, hands one sync to the
//!   flusher thread, sleeps until that sync is done, and starts the next
//!   one for everything that asked meanwhile. The `fdatasync` itself runs
//!   on that thread (`tiffany-wal-sync`), not on the kernel's: a sync of a
//!   regular file blocks for as long as the disk takes (a millisecond or
//!   more), and the kernel's I/O registry cannot wait for it without
//!   blocking (epoll reports regular files as always ready; there is no
//!   completion-based disk I/O in the kernel). The task and the thread talk
//!   through in-memory readiness channels ([`Handle::notify_io`]), so the
//!   kernel never blocks on the disk and the thread never runs a task.
//! - **`metrics`** samples the kernel's metrics every period on the kernel's
//!   thread (between steps, right after the task wakes); `/metrics` serves
//!   the latest sample, so a scrape costs the kernel nothing.
//!
//! If the kernel is gone (the daemon is stopping), waiting for durability
//! falls back to syncing on a blocking thread of the tokio runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tiffany_scheduler::{
    Handle, Interest, IoToken, MetricsSnapshot, SpawnOptions, Spawner, TaskId,
};
use tokio::sync::watch;

use crate::store::{JobStore, StoreError, Ticket};

/// How the syncs stand, as the flusher thread publishes it.
#[derive(Clone, Debug, Default)]
struct Synced {
    /// Every request numbered up to this one is durable.
    upto: u64,
    /// The last sync failed.
    error: Option<String>,
    /// The flusher task has ended (kernel shutdown): sync without it.
    gone: bool,
}

/// Marks the flusher gone when its task ends, however it ends.
struct GoneOnDrop(watch::Sender<Synced>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        self.0.send_modify(|s| s.gone = true);
    }
}

/// The kernel tasks' ids, for introspection and tests.
#[derive(Clone, Copy, Debug)]
pub struct SystemTasks {
    /// The `wal-flusher` task.
    pub flusher: TaskId,
    /// The `metrics` task.
    pub metrics: TaskId,
}

/// The daemon's system tasks, seen from tokio (see the module docs).
pub struct System {
    kernel: Handle,
    store: Arc<dyn JobStore>,
    request: IoToken,
    requested: Arc<AtomicU64>,
    synced: watch::Receiver<Synced>,
    sample: Arc<Mutex<Option<MetricsSnapshot>>>,
    samples: Arc<AtomicU64>,
    /// The tasks' ids.
    pub tasks: SystemTasks,
}

impl System {
    /// Starts the system tasks on `kernel` (and the flusher thread), syncing
    /// `store`, sampling metrics every `period`. Blocks until the kernel has
    /// spawned them (at most 10 s): call it before the tokio runtime runs.
    pub fn start(
        kernel: &Handle,
        store: Arc<dyn JobStore>,
        period: Duration,
    ) -> Result<System, String> {
        let requested = Arc::new(AtomicU64::new(0));
        let (synced_tx, synced) = watch::channel(Synced::default());
        let sample = Arc::new(Mutex::new(None));
        let samples = Arc::new(AtomicU64::new(0));
        let (reply_tx, reply_rx) = mpsc::channel();
        let (req2, store2, sample2, samples2, handle) = (
            requested.clone(),
            store.clone(),
            sample.clone(),
            samples.clone(),
            kernel.clone(),
        );
        kernel
            .with_scheduler(move |sched| {
                let request = sched.register_channel();
                let done = sched.register_channel();
                let (work_tx, work_rx) = mpsc::channel::<u64>();
                let thread_handle = handle.clone();
                let thread_tx = synced_tx.clone();
                let thread = std::thread::Builder::new()
                    .name("tiffany-wal-sync".into())
                    .spawn(move || {
                        for upto in work_rx {
                            let r = store2.make_durable(Ticket(u64::MAX));
                            thread_tx.send_modify(|s| match r {
                                Ok(()) => s.upto = s.upto.max(upto),
                                Err(e) => s.error = Some(e.0),
                            });
                            let _ = thread_handle.notify_io(done, Interest::Readable);
                        }
                    });
                if let Err(e) = thread {
                    let _ = reply_tx.send(Err(format!("cannot start the sync thread: {e}")));
                    return;
                }
                let options = SpawnOptions::system().daemon(true).with_name("wal-flusher");
                let flusher = sched.spawn_with(options, move |cx| {
                    let _gone = GoneOnDrop(synced_tx);
                    loop {
                        if cx.io_wait(request, Interest::Readable).is_err() {
                            return;
                        }
                        // Everything appended before these requests is covered.
                        let upto = req2.load(Ordering::Acquire);
                        if work_tx.send(upto).is_err()
                            || cx.io_wait(done, Interest::Readable).is_err()
                        {
                            return;
                        }
                    }
                });
                let options = SpawnOptions::system().daemon(true).with_name("metrics");
                let metrics = sched.spawn_with(options, move |cx| {
                    loop {
                        let (slot, n) = (sample2.clone(), samples2.clone());
                        let sampled = handle.with_scheduler(move |s| {
                            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.metrics());
                            n.fetch_add(1, Ordering::Release);
                        });
                        if sampled.is_err() {
                            return;
                        }
                        cx.sleep(period);
                    }
                });
                let _ = reply_tx.send(match (flusher, metrics) {
                    (Ok(flusher), Ok(metrics)) => Ok((request, SystemTasks { flusher, metrics })),
                    (Err(e), _) | (_, Err(e)) => Err(format!("cannot spawn a system task: {e}")),
                });
            })
            .map_err(|e| format!("the kernel is not running: {e}"))?;
        let (request, tasks) = reply_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the kernel did not start the system tasks".to_string())??;
        Ok(System {
            kernel: kernel.clone(),
            store,
            request,
            requested,
            synced,
            sample,
            samples,
            tasks,
        })
    }

    /// Waits until every change recorded before the call (up to `ticket`)
    /// is durable: asks the `wal-flusher` task, which shares one sync
    /// between everyone who asked meanwhile.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        let mine = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let mut synced = self.synced.clone();
        if self
            .kernel
            .notify_io(self.request, Interest::Readable)
            .is_ok()
        {
            let r = synced
                .wait_for(|s| s.upto >= mine || s.error.is_some() || s.gone)
                .await
                .map(|s| s.clone());
            match r {
                Ok(s) if s.upto >= mine => return Ok(()),
                Ok(Synced { error: Some(e), .. }) => return Err(StoreError(e)),
                _ => {}
            }
        }
        // The flusher is gone: sync on a blocking thread.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.make_durable(ticket))
            .await
            .map_err(|e| StoreError(format!("syncing the job log: {e}")))?
    }

    /// The latest sample of the kernel's metrics (`None` before the first).
    pub fn metrics(&self) -> Option<MetricsSnapshot> {
        self.sample
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many samples the `metrics` task has taken.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Acquire)
    }
}
