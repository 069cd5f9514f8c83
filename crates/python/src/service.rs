//! Service mode from Python: `tiffanyd` and `tiffany` as functions (the
//! package's console scripts call them), and a blocking client of the
//! daemon's gRPC API that `tiffany.Client` wraps.

use std::sync::{Arc, Mutex};

use clap::Parser;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tiffany_daemon::client::{
    TcpClient, UnixClient, connect_tcp, connect_unix, connect_vsock, error_chain, host_of,
};
use tiffany_daemon::job::JobState;
use tiffany_daemon::proto;
use tonic::Status;

create_exception!(
    tiffany,
    RpcError,
    PyException,
    "A request to tiffanyd failed: args are (code, message), code a gRPC status name in snake case."
);

/// Runs `tiffanyd` with `argv` (program name first); returns its exit code.
#[pyfunction]
pub fn daemon_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(
        move || match tiffany_daemon::config::Args::try_parse_from(argv) {
            Ok(args) => tiffany_daemon::server::main_with(args),
            Err(e) => {
                let _ = e.print();
                if e.use_stderr() { 2 } else { 0 }
            }
        },
    )
}

/// Runs `tiffany` with `argv` (program name first); returns its exit code.
#[pyfunction]
pub fn cli_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(move || tiffany_cli::main_with(argv))
}

fn code_name(s: &Status) -> &'static str {
    use tonic::Code::*;
    match s.code() {
        InvalidArgument => "invalid_argument",
        NotFound => "not_found",
        ResourceExhausted => "resource_exhausted",
        Unauthenticated => "unauthenticated",
        PermissionDenied => "permission_denied",
        Unavailable => "unavailable",
        DeadlineExceeded => "deadline_exceeded",
        Cancelled => "cancelled",
        _ => "internal",
    }
}

fn rpc_err(s: Status) -> PyErr {
    rpc_err_with(s, "")
}

/// As [`rpc_err`], with `hint` added to the message of a connection failure.
fn rpc_err_with(s: Status, hint: &str) -> PyErr {
    // A failure of the connection itself (a reset, a refused TLS handshake,
    // an HTTP/2 error) is not the daemon's answer: it carries its cause as
    // the status's source, or shows up as UNKNOWN with a transport message.
    let source = std::error::Error::source(&s);
    let broken =
        source.is_some() || (s.code() == tonic::Code::Unknown && s.message().contains("transport"));
    if !broken {
        return RpcError::new_err((code_name(&s), s.message().to_string()));
    }
    let mut message = match source.map(error_chain) {
        Some(chain) if chain.starts_with(s.message()) => chain,
        Some(chain) => format!("{}: {chain}", s.message()),
        None => s.message().to_string(),
    };
    message.push_str(hint);
    RpcError::new_err(("unavailable", message))
}

fn unavailable(msg: String) -> PyErr {
    RpcError::new_err(("unavailable", msg))
}

enum Conn {
    Unix(UnixClient),
    Tcp(TcpClient),
}

/// Calls `$method` with `$req` on whichever client `$conn` holds.
macro_rules! call {
    ($conn:expr, $method:ident, $req:expr) => {
        match $conn {
            Conn::Unix(c) => c.clone().$method($req).await,
            Conn::Tcp(c) => c.clone().$method($req).await,
        }
    };
}

/// A blocking client of one daemon (the GIL is released while it waits).
#[pyclass(module = "tiffany._native")]
pub struct DaemonClient {
    rt: Arc<tokio::runtime::Runtime>,
    conn: Conn,
    /// Added to connection failures (plain TCP: TLS may be missing).
    hint: &'static str,
}

impl DaemonClient {
    fn rpc_err(&self, s: Status) -> PyErr {
        rpc_err_with(s, self.hint)
    }
}

const PLAIN_TCP_HINT: &str = " (if it serves TLS, pass its CA as tls_ca=)";

fn job_text(j: &proto::Job) -> String {
    tiffany_cli::job_json(j).to_string()
}

#[pymethods]
impl DaemonClient {
    /// Connects over the Unix socket `socket` (None: `TIFFANY_SOCKET`, else
    /// the daemon's default), or over TCP to `tcp` ("host:port") with `token`,
    /// over TLS if `tls_ca` (a PEM CA bundle's bytes) is given, or over
    /// AF_VSOCK to `vsock` (`(cid, port)`) with `token`.
    #[new]
    #[pyo3(signature = (socket=None, tcp=None, token=None, tls_ca=None, vsock=None))]
    fn new(
        py: Python<'_>,
        socket: Option<String>,
        tcp: Option<String>,
        token: Option<String>,
        tls_ca: Option<Vec<u8>>,
        vsock: Option<(u32, u32)>,
    ) -> PyResult<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("cannot start the client's runtime: {e}")))?;
        let hint = if tcp.is_some() && tls_ca.is_none() {
            PLAIN_TCP_HINT
        } else {
            ""
        };
        let conn = py.detach(|| {
            rt.block_on(async {
                if let Some((cid, port)) = vsock {
                    return connect_vsock(cid, port, token.as_deref())
                        .await
                        .map(Conn::Tcp)
                        .map_err(|e| {
                            format!("cannot reach tiffanyd over vsock at {cid}:{port}: {e}")
                        });
                }
                match tcp {
                    Some(addr) => {
                        let tls = tls_ca.as_deref().map(|ca| (ca, host_of(&addr)));
                        connect_tcp(&addr, token.as_deref(), tls)
                            .await
                            .map(Conn::Tcp)
                            .map_err(|e| {
                                let hint = if tls_ca.is_none() { PLAIN_TCP_HINT } else { "" };
                                format!("cannot reach tiffanyd at {addr}: {e}{hint}")
                            })
                    }
                    None => {
                        let path = tiffany_cli::socket_path(socket.map(Into::into));
                        connect_unix(&path).await.map(Conn::Unix).map_err(|e| {
                            format!(
                                "tiffanyd is not running on {} ({})",
                                path.display(),
                                std::error::Error::source(&e)
                                    .map_or_else(|| e.to_string(), |s| s.to_string())
                            )
                        })
                    }
                }
            })
        });
        Ok(DaemonClient {
            rt: Arc::new(rt),
            conn: conn.map_err(unavailable)?,
            hint,
        })
    }

    /// Submits a job; returns it as JSON text.
    #[allow(clippy::too_many_arguments)] // the job spec's fields, as Python passes them
    #[pyo3(signature = (kind, args, priority, after, timeout, key))]
    fn submit(
        &self,
        py: Python<'_>,
        kind: String,
        args: String,
        priority: u32,
        after: Vec<u64>,
        timeout: Option<f64>,
        key: Option<String>,
    ) -> PyResult<String> {
        let req = proto::JobSpec {
            kind,
            args,
            priority: Some(priority),
            after,
            timeout_seconds: timeout,
            key,
        };
        py.detach(|| {
            self.rt
                .block_on(async { call!(&self.conn, submit, req.clone()) })
        })
        .map(|r| job_text(r.get_ref()))
        .map_err(|s| self.rpc_err(s))
    }

    /// One job, as JSON text.
    fn get(&self, py: Python<'_>, id: u64) -> PyResult<String> {
        py.detach(|| {
            self.rt
                .block_on(async { call!(&self.conn, get, proto::GetRequest { id }) })
        })
        .map(|r| job_text(r.get_ref()))
        .map_err(|s| self.rpc_err(s))
    }

    /// Jobs (of `state` if given), at most `limit`, as JSON texts.
    #[pyo3(signature = (state=None, limit=1000))]
    fn list(&self, py: Python<'_>, state: Option<String>, limit: usize) -> PyResult<Vec<String>> {
        let state = match state {
            None => proto::JobState::Unspecified,
            Some(s) => JobState::from_name(&s)
                .ok_or_else(|| {
                    RpcError::new_err(("invalid_argument", format!("unknown state {s:?}")))
                })?
                .to_proto(),
        };
        py.detach(|| {
            self.rt.block_on(async {
                let mut out = Vec::new();
                let mut token = String::new();
                while out.len() < limit {
                    let req = proto::ListRequest {
                        state: state as i32,
                        page_token: token.clone(),
                        page_size: (limit - out.len()).clamp(1, 1000) as u32,
                    };
                    let page = call!(&self.conn, list, req)?.into_inner();
                    out.extend(page.jobs.iter().map(job_text));
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = page.next_page_token;
                }
                out.truncate(limit);
                Ok(out)
            })
        })
        .map_err(|s| self.rpc_err(s))
    }

    /// Cancels a job; returns it as JSON text.
    fn cancel(&self, py: Python<'_>, id: u64) -> PyResult<String> {
        py.detach(|| {
            self.rt
                .block_on(async { call!(&self.conn, cancel, proto::CancelRequest { id }) })
        })
        .map(|r| job_text(r.get_ref()))
        .map_err(|s| self.rpc_err(s))
    }

    /// Waits for a job to end (or `timeout` seconds); returns it as JSON text.
    #[pyo3(signature = (id, timeout=None))]
    fn wait(&self, py: Python<'_>, id: u64, timeout: Option<f64>) -> PyResult<String> {
        let req = proto::WaitRequest {
            id,
            timeout_seconds: timeout,
        };
        py.detach(|| self.rt.block_on(async { call!(&self.conn, wait, req) }))
            .map(|r| job_text(r.get_ref()))
            .map_err(|s| self.rpc_err(s))
    }

    /// A job's captured output: (stdout, stderr).
    fn logs<'py>(
        &self,
        py: Python<'py>,
        id: u64,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let r = py
            .detach(|| {
                self.rt
                    .block_on(async { call!(&self.conn, logs, proto::LogsRequest { id }) })
            })
            .map_err(|s| self.rpc_err(s))?
            .into_inner();
        Ok((PyBytes::new(py, &r.stdout), PyBytes::new(py, &r.stderr)))
    }

    /// Live job events (of one job, or all): an iterator of JSON texts.
    #[pyo3(signature = (id=None))]
    fn watch(&self, py: Python<'_>, id: Option<u64>) -> PyResult<WatchIter> {
        let stream = py
            .detach(|| {
                self.rt
                    .block_on(async { call!(&self.conn, watch, proto::WatchRequest { id }) })
            })
            .map_err(|s| self.rpc_err(s))?
            .into_inner();
        Ok(WatchIter {
            rt: self.rt.clone(),
            stream: Mutex::new(Some(stream)),
        })
    }

    /// Asks the daemon to drain and stop.
    #[pyo3(signature = (grace=None))]
    fn shutdown(&self, py: Python<'_>, grace: Option<f64>) -> PyResult<()> {
        let req = proto::ShutdownRequest {
            grace_seconds: grace,
        };
        py.detach(|| self.rt.block_on(async { call!(&self.conn, shutdown, req) }))
            .map(|_| ())
            .map_err(|s| self.rpc_err(s))
    }

    /// The daemon's health: (status, queued, running, jobs).
    fn health(&self, py: Python<'_>) -> PyResult<(String, u64, u64, u64)> {
        let h = py
            .detach(|| {
                self.rt
                    .block_on(async { call!(&self.conn, health, proto::HealthRequest {}) })
            })
            .map_err(|s| self.rpc_err(s))?
            .into_inner();
        Ok((h.status, h.queued, h.running, h.jobs))
    }
}

/// An iterator of job events (JSON texts) from `DaemonClient.watch`.
#[pyclass(module = "tiffany._native")]
pub struct WatchIter {
    rt: Arc<tokio::runtime::Runtime>,
    stream: Mutex<Option<tonic::Streaming<proto::JobEvent>>>,
}

#[pymethods]
impl WatchIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let mut guard = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stream) = guard.as_mut() else {
            return Ok(None);
        };
        loop {
            match py.detach(|| self.rt.block_on(stream.message())) {
                Ok(Some(e)) => match e.job {
                    Some(j) => return Ok(Some(job_text(&j))),
                    None => continue,
                },
                Ok(None) => {
                    *guard = None;
                    return Ok(None);
                }
                Err(s) => {
                    *guard = None;
                    return Err(rpc_err(s));
                }
            }
        }
    }

    /// Stops watching.
    fn close(&self) {
        *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Adds the service-mode items to the module.
pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("RpcError", m.py().get_type::<RpcError>())?;
    m.add_class::<DaemonClient>()?;
    m.add_class::<WatchIter>()?;
    m.add_function(wrap_pyfunction!(daemon_main, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    Ok(())
}
