//! The gRPC service `tiffany.v1.Tiffany`, over the [`Engine`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::job::JobState;
use crate::proto;
use crate::proto::tiffany_server::Tiffany;

/// The service: answers requests from the engine's table.
#[derive(Clone)]
pub struct Service {
    engine: Arc<Engine>,
    shutdown: mpsc::UnboundedSender<Option<Duration>>,
    closing: watch::Receiver<bool>,
}

impl Service {
    /// A service over `engine`; a Shutdown request sends its grace on
    /// `shutdown`; Watch streams end when `closing` turns true.
    pub fn new(
        engine: Arc<Engine>,
        shutdown: mpsc::UnboundedSender<Option<Duration>>,
        closing: watch::Receiver<bool>,
    ) -> Self {
        Service {
            engine,
            shutdown,
            closing,
        }
    }
}

fn seconds(what: &str, s: Option<f64>) -> Result<Option<Duration>, Status> {
    match s {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(Status::invalid_argument(format!(
            "{what} {s} is not a number of seconds from 0 to 1e9"
        ))),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Tiffany for Service {
    async fn submit(&self, req: Request<proto::JobSpec>) -> Result<Response<proto::Job>, Status> {
        let job = self.engine.submit(req.into_inner()).await?;
        Ok(Response::new(job.to_proto()))
    }

    async fn get(&self, req: Request<proto::GetRequest>) -> Result<Response<proto::Job>, Status> {
        Ok(Response::new(
            self.engine.get(req.into_inner().id)?.to_proto(),
        ))
    }

    async fn list(
        &self,
        req: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let req = req.into_inner();
        let state = match proto::JobState::try_from(req.state) {
            Ok(s) => JobState::from_proto(s),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown state {}",
                    req.state
                )));
            }
        };
        let from = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse::<u64>()
                .map_err(|_| Status::invalid_argument("page_token is not one this server gave"))?
        };
        let size = match req.page_size {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let (jobs, next) = self.engine.list(state, from, size);
        Ok(Response::new(proto::ListResponse {
            jobs: jobs.iter().map(|j| j.to_proto()).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn cancel(
        &self,
        req: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        Ok(Response::new(
            self.engine.cancel(req.into_inner().id).await?.to_proto(),
        ))
    }

    async fn wait(&self, req: Request<proto::WaitRequest>) -> Result<Response<proto::Job>, Status> {
        let req = req.into_inner();
        let timeout = seconds("timeout", req.timeout_seconds)?;
        Ok(Response::new(
            self.engine.wait(req.id, timeout).await?.to_proto(),
        ))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<proto::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let only = req.into_inner().id;
        if let Some(id) = only {
            self.engine.get(id)?;
        }
        let mut rx = self.engine.subscribe();
        let mut closing = self.closing.clone();
        let (tx, out) = mpsc::channel(256);
        // Forward events until the client goes away or the daemon closes.
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = closing.wait_for(|c| *c) => return,
                    _ = tx.closed() => return,
                    e = rx.recv() => e,
                };
                let msg = match item {
                    Ok(job) if only.is_none_or(|id| id == job.id) => Ok(proto::JobEvent {
                        job: Some(job.to_proto()),
                    }),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::data_loss(format!(
                        "watch fell behind: {n} events were dropped"
                    ))),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let lagged = msg.is_err();
                if tx.send(msg).await.is_err() || lagged {
                    return;
                }
            }
        });
        let stream = ReceiverStream::new(out);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn logs(
        &self,
        req: Request<proto::LogsRequest>,
    ) -> Result<Response<proto::LogsResponse>, Status> {
        let job = self.engine.get(req.into_inner().id)?;
        let out = job.output.unwrap_or_default();
        Ok(Response::new(proto::LogsResponse {
            stdout: out.stdout.into_bytes(),
            stderr: out.stderr.into_bytes(),
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
        }))
    }

    async fn shutdown(
        &self,
        req: Request<proto::ShutdownRequest>,
    ) -> Result<Response<proto::ShutdownResponse>, Status> {
        let grace = seconds("grace", req.into_inner().grace_seconds)?;
        let _ = self.shutdown.send(grace);
        Ok(Response::new(proto::ShutdownResponse {}))
    }

    async fn health(
        &self,
        _req: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthResponse>, Status> {
        let (queued, running) = self.engine.load();
        let (_, jobs) = self.engine.counts();
        Ok(Response::new(proto::HealthResponse {
            status: if self.engine.is_draining() {
                "draining"
            } else {
                "serving"
            }
            .into(),
            version: env!("CARGO_PKG_VERSION").into(),
            queued,
            running,
            jobs,
        }))
    }
}

/// Checks TCP requests' `authorization: Bearer <token>`, in constant time.
#[derive(Clone)]
pub struct TokenCheck {
    expected: Arc<Vec<u8>>,
}

impl TokenCheck {
    /// A check for `token`.
    pub fn new(token: &str) -> Self {
        TokenCheck {
            expected: Arc::new(format!("Bearer {token}").into_bytes()),
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if constant_time_eq(given, &self.expected) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("a valid bearer token is required"))
        }
    }
}
