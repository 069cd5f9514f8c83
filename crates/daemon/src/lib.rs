//! # tiffanyd: Tiffany's kernel as a service
//!
//! A *job* is a unit of work a client hands to a long-lived daemon and asks
//! about later: run this command, sleep this long. The daemon gives each job
//! an id, keeps it in a durable log, runs it on Tiffany's kernel when its
//! turn comes (by priority, after its dependencies, at most `max_running` at
//! once), and remembers how it ended. Clients talk to it over gRPC
//! (`tiffany.v1.Tiffany`, in `proto/`), by default over a Unix socket only
//! its owner can open.
//!
//! The promise the daemon keeps: a job it has acknowledged is never lost,
//! and a job it has reported ended never runs again — across `kill -9` and
//! power cuts. It keeps it with a write-ahead log ([`store`]): the
//! submission's record is durable before `Submit` answers, a job's end is
//! durable before anyone is told, and on start the daemon replays the log,
//! queueing again whatever had not ended.
//!
//! ## Where each part lives
//!
//! | concept | module |
//! | --- | --- |
//! | settings: flags, `TIFFANY_*` variables, the TOML file | [`config`] |
//! | what a job is, its states, its checked arguments | [`job`] |
//! | the job store interface, and the log as its first implementation | [`store`] |
//! | the queue, dependencies, limits, the kernel bridge | [`engine`] |
//! | how long an ended job is kept (`--retain-jobs`, `--retain-seconds`) | [`retention`] |
//! | the gRPC service, bearer tokens | [`service`] |
//! | kinds a host runs (`tiffany.serve`'s `python` jobs) | [`runner`] |
//! | connecting as a client (Unix socket, TCP + token + TLS, vsock + token) | [`client`] |
//! | sockets, signals, drain, the kernel thread | [`server`] |
//! | lending SIGTERM/SIGINT/SIGHUP to a daemon hosted by Python, and back | `signals` |
//! | the WAL flusher and metrics sampler, kernel tasks at priority 0 | [`system`] |
//! | `/metrics` and `/healthz` | [`metrics`] |
//! | the generated protocol types, client and server | [`proto`] |
//!
//! The operator's guide is the book's chapter "Operating tiffanyd".

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod engine;
pub mod job;
pub mod metrics;
pub mod retention;
pub mod runner;
pub mod server;
pub mod service;
mod signals;
pub mod store;
pub mod system;

/// The protocol, generated from `proto/tiffany/v1/tiffany.proto` at build
/// time (ADR 8): messages, the `tiffany_client::TiffanyClient` and the
/// `tiffany_server::Tiffany` trait.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("tiffany.v1");
}
