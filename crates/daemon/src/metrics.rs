//! `/metrics` and `/healthz` over HTTP: a small HTTP/1.1 responder (two
//! GET paths need no web framework), Prometheus text.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::engine::Engine;
use crate::job::JobState;

/// Upper bounds of the submit latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// A Prometheus histogram with fixed buckets, lock-free.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Appends the histogram as Prometheus text under `name`.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut total = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            total += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {total}");
        }
        total += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

/// The whole `/metrics` page: the kernel's metrics (the `metrics` system
/// task's latest sample), then the daemon's.
pub fn render(engine: &Engine) -> String {
    let mut out = engine
        .system()
        .metrics()
        .map(|m| m.to_prometheus())
        .unwrap_or_default();
    let (by_state, _) = engine.counts();
    out.push_str("# HELP tiffany_jobs Jobs by state.\n# TYPE tiffany_jobs gauge\n");
    for s in JobState::ALL {
        let n = by_state.get(&s).copied().unwrap_or(0);
        let _ = writeln!(out, "tiffany_jobs{{state=\"{}\"}} {n}", s.name());
    }
    let c = &engine.counters;
    let _ = writeln!(
        out,
        "# HELP tiffany_jobs_submitted_total Jobs accepted since start.\n# TYPE tiffany_jobs_submitted_total counter\ntiffany_jobs_submitted_total {}",
        c.submitted.load(Ordering::Relaxed)
    );
    let (kept, dropped) = engine.retention_counts();
    let _ = writeln!(
        out,
        "# HELP tiffany_jobs_ended_kept Ended jobs the retention policy keeps now.\n# TYPE tiffany_jobs_ended_kept gauge\ntiffany_jobs_ended_kept {kept}"
    );
    let _ = writeln!(
        out,
        "# HELP tiffany_jobs_dropped_total Ended jobs dropped by the retention policy since start.\n# TYPE tiffany_jobs_dropped_total counter\ntiffany_jobs_dropped_total {dropped}"
    );
    let st = engine.store_stats();
    let _ = writeln!(
        out,
        "# HELP tiffany_wal_bytes_total Bytes written to the job log since start.\n# TYPE tiffany_wal_bytes_total counter\ntiffany_wal_bytes_total {}",
        st.bytes_written
    );
    let _ = writeln!(
        out,
        "# HELP tiffany_wal_fsyncs_total fdatasync calls on the job log since start.\n# TYPE tiffany_wal_fsyncs_total counter\ntiffany_wal_fsyncs_total {}",
        st.fsyncs
    );
    c.submit_seconds.render(
        "tiffany_submit_seconds",
        "Submit latency, from request to durable acknowledgement.",
        &mut out,
    );
    out
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (bounded), then answer and close.
            loop {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    conn.read(&mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(k)) => {
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == buf.len() {
                            break;
                        }
                    }
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render(&engine)),
                ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET only\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
