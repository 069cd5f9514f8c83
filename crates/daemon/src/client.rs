//! Connecting to a daemon: over its Unix socket, or over TCP (and TLS) or
//! AF_VSOCK with a bearer token. Used by the `tiffany` command and the tests.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tower::service_fn;

use crate::proto::tiffany_client::TiffanyClient;
use crate::server::MAX_MESSAGE_BYTES;

/// A client over a Unix socket.
pub type UnixClient = TiffanyClient<Channel>;

/// Connects to the daemon listening on the Unix socket `socket`.
pub async fn connect_unix(socket: &Path) -> Result<UnixClient, tonic::transport::Error> {
    let path = socket.to_owned();
    let channel = Endpoint::from_static("http://tiffanyd.invalid")
        .connect_with_connector(service_fn(move |_: Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await?;
    Ok(TiffanyClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A client over TCP or AF_VSOCK.
pub type TcpClient = TiffanyClient<InterceptedService<Channel, Bearer>>;

/// Connects over TCP to `addr` (`host:port`), sending `token` if given;
/// with `tls`, over TLS, trusting the PEM certificate `ca` for `domain`.
pub async fn connect_tcp(
    addr: &str,
    token: Option<&str>,
    tls: Option<(&[u8], &str)>,
) -> Result<TcpClient, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| e.to_string())?;
    if let Some((ca, domain)) = tls {
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(domain),
            )
            .map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    with_token(channel, token)
}

/// Connects over AF_VSOCK to `port` of context `cid` (2 for the host, 1 for
/// this machine's loopback), sending `token` if given.
pub async fn connect_vsock(cid: u32, port: u32, token: Option<&str>) -> Result<TcpClient, String> {
    let channel = Endpoint::from_static("http://tiffanyd.invalid")
        .connect_with_connector(service_fn(move |_: Uri| async move {
            let addr = tokio_vsock::VsockAddr::new(cid, port);
            Ok::<_, std::io::Error>(TokioIo::new(tokio_vsock::VsockStream::connect(addr).await?))
        }))
        .await
        .map_err(|e| match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        })?;
    with_token(channel, token)
}

fn with_token(channel: Channel, token: Option<&str>) -> Result<TcpClient, String> {
    let bearer = match token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "the token must be printable ASCII".to_string())?,
        ),
        None => None,
    };
    Ok(TiffanyClient::with_interceptor(channel, Bearer(bearer))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
