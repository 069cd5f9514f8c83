//! Settings: flags, environment variables (`TIFFANY_` + the key in upper
//! case), a TOML file (`--config`, default `$XDG_CONFIG_HOME/tiffany/tiffanyd.toml`
//! if present) whose keys are the long flags in snake case, and defaults.
//! A flag beats its variable, which beats the file, which beats the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::engine::Limits;
use crate::retention::Policy;

/// `tiffanyd`'s command line.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "tiffanyd",
    version,
    about = "Tiffany's job daemon: runs jobs on the kernel, serves gRPC (tiffany.v1)"
)]
pub struct Args {
    /// Unix socket to serve on [default: $XDG_RUNTIME_DIR/tiffany/tiffanyd.sock, else in the data dir].
    #[arg(long, env = "TIFFANY_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Directory of the job log [default: $XDG_STATE_HOME/tiffany, else ~/.local/state/tiffany].
    #[arg(long, env = "TIFFANY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file [default: $XDG_CONFIG_HOME/tiffany/tiffanyd.toml if present].
    #[arg(long, env = "TIFFANY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Also serve TCP here (loopback unless TLS or --insecure-tcp); needs --token-file.
    #[arg(long, env = "TIFFANY_TCP_ADDR")]
    pub tcp_addr: Option<String>,
    /// Also serve AF_VSOCK on this port (any CID: the daemon inside a microVM); needs --token-file.
    #[arg(long, env = "TIFFANY_VSOCK_PORT")]
    pub vsock_port: Option<u32>,
    /// File holding the bearer token TCP and vsock clients must send.
    #[arg(long, env = "TIFFANY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate (PEM) for TCP.
    #[arg(long, env = "TIFFANY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for TCP.
    #[arg(long, env = "TIFFANY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Allow a non-loopback TCP address without TLS (the token crosses the network in clear).
    #[arg(long, env = "TIFFANY_INSECURE_TCP")]
    pub insecure_tcp: bool,
    /// Serve GET /metrics and /healthz over HTTP here (off unless given).
    #[arg(long, env = "TIFFANY_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Jobs running at once [default: 4 × cores]. Reloadable.
    #[arg(long, env = "TIFFANY_MAX_RUNNING")]
    pub max_running: Option<usize>,
    /// Jobs queued at most before Submit answers RESOURCE_EXHAUSTED [default: 100000]. Reloadable.
    #[arg(long, env = "TIFFANY_MAX_QUEUED")]
    pub max_queued: Option<usize>,
    /// Largest job args, bytes [default: 1 MiB].
    #[arg(long, env = "TIFFANY_MAX_ARGS_BYTES")]
    pub max_args_bytes: Option<usize>,
    /// Output kept per stream of an exec job, bytes [default: 1 MiB].
    #[arg(long, env = "TIFFANY_CAPTURE_LIMIT")]
    pub capture_limit: Option<usize>,
    /// Seconds running jobs get to finish on SIGTERM/SIGINT [default: 30]. Reloadable.
    #[arg(long, env = "TIFFANY_GRACE")]
    pub grace: Option<f64>,
    /// Start even if the log is corrupt in the middle: keep what precedes, drop the rest.
    #[arg(long, env = "TIFFANY_REPAIR")]
    pub repair: bool,
    /// Write the kernel's event log (PAL, JSON lines) to this file.
    #[arg(long, env = "TIFFANY_PAL_FILE")]
    pub pal_file: Option<PathBuf>,
    /// Log filter (as RUST_LOG) [default: RUST_LOG, else info]. Reloadable.
    #[arg(long, env = "TIFFANY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Compact the job log when it grows past this many bytes [default: 64 MiB].
    #[arg(long, env = "TIFFANY_COMPACT_BYTES")]
    pub compact_bytes: Option<u64>,
    /// Ended jobs kept at most; the oldest ends are dropped first [default: all]. Reloadable.
    #[arg(long, env = "TIFFANY_RETAIN_JOBS")]
    pub retain_jobs: Option<usize>,
    /// Seconds an ended job is kept after its end [default: forever]. Reloadable.
    #[arg(long, env = "TIFFANY_RETAIN_SECONDS")]
    pub retain_seconds: Option<f64>,
}

/// The config file: the long flags in snake case.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    socket: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    tcp_addr: Option<String>,
    vsock_port: Option<u32>,
    token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure_tcp: Option<bool>,
    metrics_addr: Option<String>,
    max_running: Option<usize>,
    max_queued: Option<usize>,
    max_args_bytes: Option<usize>,
    capture_limit: Option<usize>,
    grace: Option<f64>,
    repair: Option<bool>,
    pal_file: Option<PathBuf>,
    log_level: Option<String>,
    compact_bytes: Option<u64>,
    retain_jobs: Option<usize>,
    retain_seconds: Option<f64>,
}

/// Every setting, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The Unix socket.
    pub socket: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The config file read, if any.
    pub config: Option<PathBuf>,
    /// TCP address.
    pub tcp_addr: Option<SocketAddr>,
    /// vsock port.
    pub vsock_port: Option<u32>,
    /// Token file.
    pub token_file: Option<PathBuf>,
    /// TLS certificate.
    pub tls_cert: Option<PathBuf>,
    /// TLS key.
    pub tls_key: Option<PathBuf>,
    /// Allow clear-text TCP beyond loopback.
    pub insecure_tcp: bool,
    /// Metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// Reloadable limits.
    pub limits: Limits,
    /// Drain grace.
    pub grace: Duration,
    /// Repair a corrupt log.
    pub repair: bool,
    /// PAL file.
    pub pal_file: Option<PathBuf>,
    /// Log filter.
    pub log_level: Option<String>,
    /// Compaction threshold, bytes.
    pub compact_bytes: u64,
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The default data directory: `$XDG_STATE_HOME/tiffany`, else `~/.local/state/tiffany`.
pub fn default_data_dir() -> PathBuf {
    match env_dir("XDG_STATE_HOME") {
        Some(d) => d.join("tiffany"),
        None => env_dir("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/state/tiffany"),
    }
}

/// The default socket for a data directory: `$XDG_RUNTIME_DIR/tiffany/tiffanyd.sock`,
/// else `tiffanyd.sock` in the data directory.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    match env_dir("XDG_RUNTIME_DIR") {
        Some(d) => d.join("tiffany/tiffanyd.sock"),
        None => data_dir.join("tiffanyd.sock"),
    }
}

/// The default config file, if it exists.
fn default_config() -> Option<PathBuf> {
    let base = env_dir("XDG_CONFIG_HOME").or_else(|| env_dir("HOME").map(|h| h.join(".config")))?;
    let p = base.join("tiffany/tiffanyd.toml");
    p.exists().then_some(p)
}

/// Reads a config file.
pub fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

fn parse_addr(what: &str, s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not an address like 127.0.0.1:7070"))
}

impl Settings {
    /// Resolves settings from the command line, environment and config file.
    pub fn resolve(args: &Args) -> Result<Settings, String> {
        let config = args.config.clone().or_else(default_config);
        let file = match &config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        Self::merge(args, &file, config)
    }

    /// Merges flags (and environment) over a file's settings over defaults.
    pub fn merge(
        args: &Args,
        file: &FileConfig,
        config: Option<PathBuf>,
    ) -> Result<Settings, String> {
        let data_dir = args
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(default_data_dir);
        let socket = args
            .socket
            .clone()
            .or_else(|| file.socket.clone())
            .unwrap_or_else(|| default_socket(&data_dir));
        let tcp_addr = match args.tcp_addr.as_ref().or(file.tcp_addr.as_ref()) {
            Some(s) => Some(parse_addr("--tcp-addr", s)?),
            None => None,
        };
        let metrics_addr = match args.metrics_addr.as_ref().or(file.metrics_addr.as_ref()) {
            Some(s) => Some(parse_addr("--metrics-addr", s)?),
            None => None,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let grace = args.grace.or(file.grace).unwrap_or(30.0);
        if !grace.is_finite() || !(0.0..=1e6).contains(&grace) {
            return Err(format!("--grace {grace} must be seconds from 0 to 1e6"));
        }
        let max_running = args.max_running.or(file.max_running).unwrap_or(4 * cores);
        if max_running == 0 {
            return Err("--max-running must be at least 1".into());
        }
        let max_age = match args.retain_seconds.or(file.retain_seconds) {
            None => None,
            Some(s) if s.is_finite() && (0.0..=1e10).contains(&s) => {
                Some(Duration::from_secs_f64(s))
            }
            Some(s) => {
                return Err(format!(
                    "--retain-seconds {s} must be seconds from 0 to 1e10"
                ));
            }
        };
        let retention = Policy {
            max_jobs: args.retain_jobs.or(file.retain_jobs),
            max_age,
        };
        Ok(Settings {
            socket,
            data_dir,
            config,
            tcp_addr,
            vsock_port: args.vsock_port.or(file.vsock_port),
            token_file: args.token_file.clone().or_else(|| file.token_file.clone()),
            tls_cert: args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
            tls_key: args.tls_key.clone().or_else(|| file.tls_key.clone()),
            insecure_tcp: args.insecure_tcp || file.insecure_tcp.unwrap_or(false),
            metrics_addr,
            limits: Limits {
                max_running,
                max_queued: args.max_queued.or(file.max_queued).unwrap_or(100_000),
                max_args_bytes: args
                    .max_args_bytes
                    .or(file.max_args_bytes)
                    .unwrap_or(1 << 20),
                capture_limit: args.capture_limit.or(file.capture_limit).unwrap_or(1 << 20),
                retention,
            },
            grace: Duration::from_secs_f64(grace),
            repair: args.repair || file.repair.unwrap_or(false),
            pal_file: args.pal_file.clone().or_else(|| file.pal_file.clone()),
            log_level: args.log_level.clone().or_else(|| file.log_level.clone()),
            compact_bytes: args
                .compact_bytes
                .or(file.compact_bytes)
                .unwrap_or(64 << 20),
        })
    }

    /// Re-reads the config file (SIGHUP) and returns the new settings.
    pub fn reload(&self, args: &Args) -> Result<Settings, String> {
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        Self::merge(args, &file, self.config.clone())
    }

    /// What changed between `self` and `new` among the reloadable settings,
    /// as `name: old -> new` lines.
    pub fn reload_changes(&self, new: &Settings) -> Vec<String> {
        let mut out = Vec::new();
        let (a, b) = (&self.limits, &new.limits);
        if a.max_running != b.max_running {
            out.push(format!(
                "max_running: {} -> {}",
                a.max_running, b.max_running
            ));
        }
        if a.max_queued != b.max_queued {
            out.push(format!("max_queued: {} -> {}", a.max_queued, b.max_queued));
        }
        let (r, q) = (&a.retention, &b.retention);
        if r.max_jobs != q.max_jobs {
            out.push(format!("retain_jobs: {:?} -> {:?}", r.max_jobs, q.max_jobs));
        }
        if r.max_age != q.max_age {
            out.push(format!(
                "retain_seconds: {:?} -> {:?}",
                r.max_age.map(|d| d.as_secs_f64()),
                q.max_age.map(|d| d.as_secs_f64())
            ));
        }
        if self.grace != new.grace {
            out.push(format!("grace: {:?} -> {:?}", self.grace, new.grace));
        }
        if self.log_level != new.log_level {
            out.push(format!(
                "log_level: {:?} -> {:?}",
                self.log_level, new.log_level
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let file: FileConfig =
            toml::from_str("max_running = 8\nmax_queued = 5\ngrace = 2.5").unwrap();
        let args = Args {
            max_running: Some(3),
            data_dir: Some("/tmp/x".into()),
            ..Args::default()
        };
        let s = Settings::merge(&args, &file, None).unwrap();
        assert_eq!(s.limits.max_running, 3);
        assert_eq!(s.limits.max_queued, 5);
        assert_eq!(s.grace, Duration::from_millis(2500));
        assert!(toml::from_str::<FileConfig>("nope = 1").is_err());
    }

    #[test]
    fn retention_is_read_checked_and_reported_on_reload() {
        let file: FileConfig = toml::from_str("retain_jobs = 100\nretain_seconds = 3600").unwrap();
        let s = Settings::merge(&Args::default(), &file, None).unwrap();
        assert_eq!(s.limits.retention.max_jobs, Some(100));
        assert_eq!(s.limits.retention.max_age, Some(Duration::from_secs(3600)));
        let none = Settings::merge(&Args::default(), &FileConfig::default(), None).unwrap();
        assert!(none.limits.retention.keeps_all());
        assert_eq!(
            s.reload_changes(&none),
            vec![
                "retain_jobs: Some(100) -> None".to_string(),
                "retain_seconds: Some(3600.0) -> None".to_string()
            ]
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e11] {
            let args = Args {
                retain_seconds: Some(bad),
                ..Args::default()
            };
            let err = Settings::merge(&args, &FileConfig::default(), None).unwrap_err();
            assert!(err.contains("--retain-seconds"), "{err}");
        }
    }
}
