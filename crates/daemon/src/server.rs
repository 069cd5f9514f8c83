//! Running the daemon: sockets, the kernel thread, signals, shutdown.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tiffany_scheduler::{Handle, PalWriter, Scheduler};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, reload, util::SubscriberInitExt};

use crate::config::{Args, Settings};
use crate::engine::Engine;
use crate::proto::tiffany_server::TiffanyServer;
use crate::runner::Host;
use crate::service::{Service, TokenCheck};
use crate::store::WalStore;
use crate::system::System;

/// Largest gRPC message the server accepts (so that args over
/// `--max-args-bytes` reach the check that names the limit).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// How often the `metrics` system task samples the kernel's metrics.
pub const METRICS_PERIOD: Duration = Duration::from_secs(1);

/// A start-up failure: the message, and the exit code.
#[derive(Debug)]
pub struct StartError {
    /// What went wrong, for the operator.
    pub message: String,
    /// 1 for a runtime condition (a live socket, a locked or corrupt log), 2 for bad settings.
    pub code: i32,
}

fn bad(message: impl Into<String>) -> StartError {
    StartError {
        message: message.into(),
        code: 2,
    }
}

fn fail(message: impl Into<String>) -> StartError {
    StartError {
        message: message.into(),
        code: 1,
    }
}

type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn init_logging(level: Option<&str>) -> Option<FilterHandle> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let (layer, handle) = reload::Layer::new(filter);
    let ok = tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init()
        .is_ok();
    ok.then_some(handle)
}

/// Runs `tiffanyd` with these arguments; returns the process's exit code.
pub fn main_with(args: Args) -> i32 {
    let settings = match Settings::resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tiffanyd: {e}");
            return 2;
        }
    };
    let filter = init_logging(settings.log_level.as_deref());
    match run(args, settings, filter, None) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tiffanyd: {}", e.message);
            e.code
        }
    }
}

/// Runs the daemon with these arguments on a host's kernel (see
/// [`crate::runner`]): as [`main_with`], except that jobs run on
/// `host.kernel` (which the host runs on its own thread, and which this
/// shuts down before it returns), the host's runner runs the kinds it
/// serves, and `host.stop` drains and stops the daemon as SIGTERM does.
/// Blocks until the daemon has stopped; the caller prints nothing.
pub fn main_hosted(args: Args, host: Host) -> Result<(), StartError> {
    let kernel = host.kernel.clone();
    let result = (|| {
        let settings = Settings::resolve(&args).map_err(bad)?;
        // Bad TCP settings are refused before logging is set up: a host
        // whose daemon cannot start keeps its process as it was.
        check_tcp(&settings)?;
        let filter = init_logging(settings.log_level.as_deref());
        run(args, settings, filter, Some(host))
    })();
    // Whatever happened, the host's kernel stops with the daemon.
    let _ = kernel.request_shutdown(Duration::from_secs(2));
    result
}

/// Checks the TCP and vsock settings: a token, and TLS beyond loopback.
fn check_tcp(s: &Settings) -> Result<(), StartError> {
    if s.vsock_port.is_some() && s.token_file.is_none() {
        return Err(bad(
            "--vsock-port needs --token-file: vsock requests must carry a bearer token",
        ));
    }
    let Some(addr) = s.tcp_addr else {
        return Ok(());
    };
    if s.token_file.is_none() {
        return Err(bad(
            "--tcp-addr needs --token-file: TCP requests must carry a bearer token",
        ));
    }
    if s.tls_cert.is_some() != s.tls_key.is_some() {
        return Err(bad("--tls-cert and --tls-key go together"));
    }
    if !addr.ip().is_loopback() && s.tls_cert.is_none() && !s.insecure_tcp {
        return Err(bad(format!(
            "refusing to serve {addr} without TLS: the bearer token would cross the network in clear \
             (give --tls-cert and --tls-key, or --insecure-tcp)"
        )));
    }
    Ok(())
}

/// Makes `dir` (and parents) with mode 0700 if missing.
fn private_dir(dir: &Path) -> Result<(), StartError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))
}

/// Prepares the socket path: refuses a live daemon, removes a stale socket.
fn claim_socket(path: &Path) -> Result<(), StartError> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail(format!(
                "another tiffanyd is serving on {} (stop it first, or use --socket)",
                path.display()
            )));
        }
        tracing::warn!(socket = %path.display(), "removing a stale socket left by a daemon that is gone");
        std::fs::remove_file(path).map_err(|e| {
            fail(format!(
                "cannot remove stale socket {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// Starts the daemon's kernel on its own thread (with a PAL file if
/// given); returns its handle and thread.
///
/// The kernel keeps no window of finished tasks' outcomes
/// (`retain_finished(0)`): the daemon hears of each job's end through a
/// callback and keeps the result in its job table, so a window would hold
/// every recent exec job's captured output a second time.
pub fn start_kernel(
    pal_file: Option<PathBuf>,
) -> Result<(Handle, std::thread::JoinHandle<()>), StartError> {
    let pal = match pal_file {
        Some(p) => Some(
            std::fs::File::create(&p)
                .map_err(|e| fail(format!("cannot create PAL file {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("tiffany-kernel".into())
        .spawn(move || {
            let sched = match Scheduler::builder().retain_finished(0).build() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot build the kernel: {e}");
                    return;
                }
            };
            if let Some(f) = pal {
                sched.subscribe(PalWriter::new(std::io::BufWriter::new(f)));
            }
            let _ = tx.send(sched.handle());
            let result = sched.serve();
            tracing::debug!(result = result.name(), "kernel stopped");
        })
        .map_err(|e| fail(format!("cannot start the kernel thread: {e}")))?;
    let handle = rx
        .recv()
        .map_err(|_| fail("the kernel thread did not start"))?;
    Ok((handle, thread))
}

fn run(
    args: Args,
    settings: Settings,
    filter: Option<FilterHandle>,
    host: Option<Host>,
) -> Result<(), StartError> {
    check_tcp(&settings)?;
    let token = match &settings.token_file {
        Some(p) if settings.tcp_addr.is_some() || settings.vsock_port.is_some() => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| bad(format!("cannot read token file {}: {e}", p.display())))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(bad(format!("token file {} is empty", p.display())));
            }
            Some(t)
        }
        _ => None,
    };
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(c), Some(k)) => {
            let cert =
                std::fs::read(c).map_err(|e| bad(format!("cannot read {}: {e}", c.display())))?;
            let key =
                std::fs::read(k).map_err(|e| bad(format!("cannot read {}: {e}", k.display())))?;
            Some(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
        }
        _ => None,
    };
    claim_socket(&settings.socket)?;
    private_dir(&settings.data_dir)?;
    let (store, replayed, warning) =
        WalStore::open(&settings.data_dir, settings.repair, settings.compact_bytes).map_err(
            |e| {
                fail(format!(
                    "cannot open the job log in {}: {e}{}",
                    settings.data_dir.display(),
                    if settings.repair {
                        ""
                    } else {
                        " (--repair keeps what precedes a corrupt record)"
                    }
                ))
            },
        )?;
    if let Some(w) = warning {
        tracing::warn!("job log: {w}");
    }
    tracing::info!(
        jobs = replayed.jobs.len(),
        next_id = replayed.next_id,
        "replayed the job log"
    );
    let (kernel, kernel_thread) = match &host {
        Some(h) => {
            if let Some(p) = &settings.pal_file {
                let f = std::fs::File::create(p)
                    .map_err(|e| fail(format!("cannot create PAL file {}: {e}", p.display())))?;
                let _ = h.kernel.with_scheduler(move |sched| {
                    sched.subscribe(PalWriter::new(std::io::BufWriter::new(f)));
                });
            }
            (h.kernel.clone(), None)
        }
        None => {
            let (k, t) = start_kernel(settings.pal_file.clone())?;
            (k, Some(t))
        }
    };
    let store = Arc::new(store);
    let system = System::start(&kernel, store.clone(), METRICS_PERIOD).map_err(fail)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tiffanyd")
        .build()
        .map_err(|e| fail(format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(serve(
        args,
        settings.clone(),
        filter,
        store,
        replayed,
        kernel.clone(),
        Arc::new(system),
        token,
        tls,
        host,
    ));
    // The kernel: everything was stopped by the drain; give it a moment, then go.
    let _ = kernel.shutdown(Duration::from_secs(2));
    if let Some(t) = kernel_thread {
        let _ = t.join();
    }
    tiffany_scheduler::process::wait_for_reaper(Duration::from_secs(5));
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(&settings.socket);
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    args: Args,
    mut settings: Settings,
    filter: Option<FilterHandle>,
    store: Arc<WalStore>,
    replayed: crate::store::Replayed,
    kernel: Handle,
    system: Arc<System>,
    token: Option<String>,
    tls: Option<ServerTlsConfig>,
    host: Option<Host>,
) -> Result<(), StartError> {
    let hosted = host.is_some();
    let (runner, stop, ready) = match host {
        Some(h) => (Some(h.runner), h.stop, h.ready),
        None => (None, Arc::new(tokio::sync::Notify::new()), None),
    };
    let engine = Engine::start_with_runner(
        store,
        replayed,
        kernel.clone(),
        system,
        settings.limits.clone(),
        runner,
    );
    let (shutdown_tx, mut shutdown_rx) = mpsc::unbounded_channel();
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let service = Service::new(engine.clone(), shutdown_tx, closing.clone());
    let closed = move || {
        let mut c = closing.clone();
        async move {
            let _ = c.wait_for(|v| *v).await;
        }
    };
    let grpc = || {
        TiffanyServer::new(service.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };

    let unix = UnixListener::bind(&settings.socket).map_err(|e| {
        fail(format!(
            "cannot listen on {}: {e}",
            settings.socket.display()
        ))
    })?;
    std::fs::set_permissions(&settings.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("cannot set the socket's mode: {e}")))?;
    let mut servers = Vec::new();
    let unix_server = Server::builder()
        .add_service(grpc())
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), closed());
    let task = tokio::spawn(unix_server);
    servers.push((task.abort_handle(), Some(task)));

    if let (Some(port), Some(token)) = (settings.vsock_port, &token) {
        let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
        let listener = tokio_vsock::VsockListener::bind(addr)
            .map_err(|e| fail(format!("cannot listen on vsock port {port}: {e}")))?;
        let svc =
            tonic::service::interceptor::InterceptedService::new(grpc(), TokenCheck::new(token));
        let vsock_server = Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(listener.incoming(), closed());
        let task = tokio::spawn(vsock_server);
        servers.push((task.abort_handle(), Some(task)));
        tracing::info!(port, "serving AF_VSOCK");
    }
    if let (Some(addr), Some(token)) = (settings.tcp_addr, token) {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| fail(format!("cannot listen on {addr}: {e}")))?;
        let local: SocketAddr = listener.local_addr().unwrap_or(addr);
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| bad(format!("TLS: {e}")))?;
        }
        let svc =
            tonic::service::interceptor::InterceptedService::new(grpc(), TokenCheck::new(&token));
        let tcp_server = builder
            .add_service(svc)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), closed());
        let task = tokio::spawn(tcp_server);
        servers.push((task.abort_handle(), Some(task)));
        tracing::info!(addr = %local, "serving TCP");
    }
    if let Some(addr) = settings.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| fail(format!("cannot listen on {addr} for metrics: {e}")))?;
        let local: SocketAddr = listener.local_addr().unwrap_or(addr);
        let task = tokio::spawn(crate::metrics::serve(listener, engine.clone()));
        servers.push((task.abort_handle(), None));
        tracing::info!(addr = %local, "serving /metrics and /healthz");
    }

    // A host's process goes on after the daemon: it gets its signals back.
    let _signals = hosted.then(crate::signals::Borrowed::take);
    let sig = |k| signal(k).map_err(|e| fail(format!("cannot install signal handlers: {e}")));
    let (mut term, mut int, mut hup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );
    tracing::info!(socket = %settings.socket.display(), data_dir = %settings.data_dir.display(), "tiffanyd ready");
    if let Some(r) = ready {
        let _ = r.send(());
    }
    let grace = loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break settings.grace; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break settings.grace; }
            _ = stop.notified() => { tracing::info!("stop requested by the host: draining"); break settings.grace; }
            g = shutdown_rx.recv() => {
                tracing::info!("shutdown requested: draining");
                break g.flatten().unwrap_or(settings.grace);
            }
            _ = hup.recv() => {
                match settings.reload(&args) {
                    Ok(new) => {
                        let changes = settings.reload_changes(&new);
                        if let (Some(f), Some(level)) = (&filter, &new.log_level) {
                            match EnvFilter::try_new(level) {
                                Ok(fl) => { let _ = f.reload(fl); }
                                Err(e) => tracing::warn!("log_level {level:?}: {e}"),
                            }
                        }
                        let mut limits = settings.limits.clone();
                        limits.max_running = new.limits.max_running;
                        limits.max_queued = new.limits.max_queued;
                        limits.retention = new.limits.retention;
                        engine.set_limits(limits.clone());
                        settings.limits = limits;
                        settings.grace = new.grace;
                        settings.log_level = new.log_level;
                        // Logged once in effect.
                        if changes.is_empty() {
                            tracing::info!("SIGHUP: config reloaded, nothing reloadable changed");
                        } else {
                            tracing::info!("SIGHUP: config reloaded: {}", changes.join(", "));
                        }
                    }
                    Err(e) => tracing::error!("SIGHUP: config not reloaded: {e}"),
                }
            }
        }
    };
    engine.drain(grace).await;
    // Stop serving: answer what is in flight (a Shutdown request), end watches.
    let _ = closing_tx.send(true);
    for (s, graceful) in servers {
        if let Some(g) = graceful {
            let _ = tokio::time::timeout(Duration::from_secs(2), g).await;
        }
        s.abort();
    }
    let engine2 = engine.clone();
    let closed = tokio::task::spawn_blocking(move || engine2.close_store()).await;
    match closed {
        Ok(Ok(())) => tracing::info!("job log flushed and closed"),
        Ok(Err(e)) => tracing::error!("closing the job log: {e}"),
        Err(e) => tracing::error!("closing the job log: {e}"),
    }
    Ok(())
}
