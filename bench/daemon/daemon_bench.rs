//! `just bench-daemon` (driven by `bench/daemon/__main__.py`, which
//! writes the numbers into the book's benchmarks page): submit-to-acknowledge
//! throughput and latency of a release `tiffanyd` with fsync on (1 client,
//! 16 concurrent clients), the disk's raw `fdatasync` rate measured in the
//! same run, and the time to replay a 1,000,000-record job log (several
//! times: minimum and median).
//!
//! Options: `--seconds S` per measurement (default 3), `--dir DIR` on the
//! disk to measure (default `target/daemon-bench`), `--records N` (default
//! 1,000,000), `--replays N` (default 5), `--json` (one JSON object on the
//! last line, for the driver).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tiffany_daemon::client::connect_unix;
use tiffany_daemon::job::{JobRecord, JobState};
use tiffany_daemon::proto;
use tiffany_daemon::store::{LogRecord, RECORD_VERSION, WalStore, log_path};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn raw_fdatasync_rate(dir: &Path, seconds: f64) -> f64 {
    let path = dir.join("fsync-probe");
    let f = std::fs::File::create(&path).unwrap();
    let block = [7u8; 128];
    let (start, mut n, mut off) = (Instant::now(), 0u64, 0u64);
    while start.elapsed().as_secs_f64() < seconds {
        f.write_all_at(&block, off).unwrap();
        f.sync_data().unwrap();
        off += block.len() as u64;
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    n as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn submits(socket: &Path, clients: usize, seconds: f64) -> (f64, Vec<Duration>) {
    let base = connect_unix(socket).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                c.submit(proto::JobSpec {
                    kind: "sleep".into(),
                    args: r#"{"seconds": 0}"#.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

/// Replay times (sorted), the log's own read, body decoding on one thread
/// (as replay does it, and through serde's tagged enum), and the log's size.
struct ReplayTimes {
    seconds: Vec<f64>,
    read: f64,
    decode: f64,
    decode_tagged: f64,
    bytes: u64,
}

fn replay(dir: &Path, records: u64, times: usize) -> ReplayTimes {
    let data = dir.join("replay");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    {
        let (wal, _) =
            tiffany_wal::Wal::open(log_path(&data), &tiffany_wal::Options::new()).unwrap();
        for i in 0..records {
            let job = JobRecord {
                id: i / 2 + 1,
                kind: "sleep".into(),
                args: r#"{"seconds": 0}"#.into(),
                priority: 10,
                after: vec![],
                key: None,
                timeout: None,
                state: if i % 2 == 0 {
                    JobState::Queued
                } else {
                    JobState::Succeeded
                },
                attempts: (i % 2) as u32,
                exit_code: None,
                result: None,
                error: None,
                created_at: 1.8e9,
                started_at: None,
                finished_at: None,
                output: None,
            };
            let rec = if i % 2 == 0 {
                LogRecord::Job { job }
            } else {
                LogRecord::Ended { job }
            };
            wal.append(RECORD_VERSION, &rec.encode()).unwrap();
        }
        wal.close().unwrap();
    }
    let size = std::fs::metadata(log_path(&data)).unwrap().len();
    let t = Instant::now();
    let raw = tiffany_wal::read(log_path(&data), &tiffany_wal::Options::new()).unwrap();
    let read_secs = t.elapsed().as_secs_f64();
    // Body decoding alone, on one thread: the way replay reads a body
    // (`LogRecord::decode`, through a plain struct) against serde's
    // internally tagged enum (what replay did before; ADR 9).
    let t = Instant::now();
    for r in &raw.records {
        std::hint::black_box(LogRecord::decode(r.version, &r.body).unwrap());
    }
    let decode_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &raw.records {
        std::hint::black_box(serde_json::from_slice::<LogRecord>(&r.body).unwrap());
    }
    let tagged_secs = t.elapsed().as_secs_f64();
    println!(
        "  decoding {} bodies on one thread: {decode_secs:.2} s (through serde's tagged enum: {tagged_secs:.2} s)",
        raw.records.len()
    );
    drop(raw);
    let mut secs = Vec::new();
    for _ in 0..times.max(1) {
        let t = Instant::now();
        let (store, replayed, _) = WalStore::open(&data, false, u64::MAX).unwrap();
        secs.push(t.elapsed().as_secs_f64());
        assert_eq!(replayed.jobs.len() as u64, records.div_ceil(2));
        drop((store, replayed));
    }
    let _ = std::fs::remove_dir_all(&data);
    secs.sort_by(f64::total_cmp);
    ReplayTimes {
        seconds: secs,
        read: read_secs,
        decode: decode_secs,
        decode_tagged: tagged_secs,
        bytes: size,
    }
}

fn main() {
    let seconds: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let records: u64 = arg("--records")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let replays: usize = arg("--replays").and_then(|s| s.parse().ok()).unwrap_or(5);
    let json = std::env::args().any(|a| a == "--json");
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|| "target/daemon-bench".into()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();

    let raw = raw_fdatasync_rate(&dir, seconds);
    println!("raw fdatasync: {raw:.0}/s");

    let exe = std::env::current_exe().unwrap();
    let tiffanyd = exe.parent().unwrap().parent().unwrap().join("tiffanyd");
    let socket = dir.join("tiffanyd.sock");
    let mut child = Command::new(&tiffanyd)
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--max-running", "1", "--max-queued", "10000000"])
        .env("RUST_LOG", "warn,tiffany_daemon::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build it: cargo build --release -p tiffany-daemon)",
                tiffanyd.display()
            )
        });
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for l in lines.by_ref() {
        if l.unwrap().contains("tiffanyd ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let submit = rt.block_on(async {
        // One long job holds the only slot: every submission stays queued,
        // so the measurement is the submit path alone (one durable record each).
        let mut c = connect_unix(&socket).await.unwrap();
        c.submit(proto::JobSpec {
            kind: "sleep".into(),
            args: r#"{"seconds": 3600}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut out = Vec::new();
        for clients in [1, 16] {
            let (rate, lat) = submits(&socket, clients, seconds).await;
            out.push(serde_json::json!({
                "clients": clients,
                "per_second": rate,
                "x_raw_fdatasync": rate / raw,
                "p50_us": percentile(&lat, 0.5),
                "p99_us": percentile(&lat, 0.99),
                "p999_us": percentile(&lat, 0.999),
            }));
            println!(
                "submit, {clients:>2} client(s): {rate:.0}/s ({:.1}x raw fdatasync); latency p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us",
                rate / raw,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                percentile(&lat, 0.999)
            );
        }
        c.shutdown(proto::ShutdownRequest { grace_seconds: Some(0.1) }).await.unwrap();
        out
    });
    let _ = child.wait();

    let r = replay(&dir, records, replays);
    let (secs, read_secs, size) = (&r.seconds, r.read, r.bytes);
    let (min, median) = (secs[0], secs[secs.len() / 2]);
    println!(
        "replay of {records} records ({:.0} MB) into the job table, {} times: min {min:.2} s, median {median:.2} s",
        size as f64 / 1e6,
        secs.len()
    );
    println!("  (the log's own read and checks: {read_secs:.2} s of that)");
    if json {
        println!(
            "{}",
            serde_json::json!({
                "raw_fdatasync_per_second": raw,
                "submit": submit,
                "replay": {
                    "records": records,
                    "bytes": size,
                    "seconds": secs,
                    "min_seconds": min,
                    "median_seconds": median,
                    "log_read_seconds": read_secs,
                    "decode_seconds": r.decode,
                    "decode_tagged_seconds": r.decode_tagged,
                },
            })
        );
    }
    let _ = std::io::stdout().flush();
    let _ = std::fs::remove_dir_all(&dir);
}
