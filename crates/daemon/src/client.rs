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

/// A channel to the daemon listening on the Unix socket `socket`.
pub async fn unix_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_owned();
    Endpoint::from_static("http://tiffanyd.invalid")
        .connect_with_connector(service_fn(move |_: Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
}

/// Connects to the daemon listening on the Unix socket `socket`.
pub async fn connect_unix(socket: &Path) -> Result<UnixClient, tonic::transport::Error> {
    let channel = unix_channel(socket).await?;
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

impl Bearer {
    /// Sends `token` (if given) with every request.
    pub fn new(token: Option<&str>) -> Result<Bearer, String> {
        match token {
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| "the token must be printable ASCII".to_string()),
            None => Ok(Bearer(None)),
        }
    }
}

/// The host part of `host:port` (without an IPv6 address's brackets): the
/// name a TLS server's certificate is checked against.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
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
    let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
    with_token(channel, token)
}

/// How long [`connect_vsock`] waits for the connection: a context with no
/// listener, or a machine without the vsock transport, may never answer.
pub const VSOCK_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects over AF_VSOCK to `port` of context `cid` (2 for the host, 1 for
/// this machine's loopback), sending `token` if given; gives up after
/// [`VSOCK_CONNECT_TIMEOUT`].
pub async fn connect_vsock(cid: u32, port: u32, token: Option<&str>) -> Result<TcpClient, String> {
    let endpoint = Endpoint::from_static("http://tiffanyd.invalid");
    let connect = endpoint.connect_with_connector(service_fn(move |_: Uri| async move {
        let addr = tokio_vsock::VsockAddr::new(cid, port);
        Ok::<_, std::io::Error>(TokioIo::new(tokio_vsock::VsockStream::connect(addr).await?))
    }));
    let channel = tokio::time::timeout(VSOCK_CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("no answer in {} s", VSOCK_CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| error_chain(&e))?;
    with_token(channel, token)
}

/// Reads a vsock address written `CID:PORT` (as `--vsock` takes it).
pub fn parse_vsock(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a vsock address CID:PORT (e.g. 3:7070)");
    let (cid, port) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        cid.trim().parse().map_err(|_| bad())?,
        port.trim().parse().map_err(|_| bad())?,
    ))
}

fn with_token(channel: Channel, token: Option<&str>) -> Result<TcpClient, String> {
    Ok(
        TiffanyClient::with_interceptor(channel, Bearer::new(token)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// An error and its sources, as one line (`a: b: c`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host_of("localhost:1"), "localhost");
        assert_eq!(host_of("[::1]:7070"), "::1");
        assert_eq!(host_of("example.org"), "example.org");
    }

    #[test]
    fn vsock_addresses_are_cid_colon_port() {
        assert_eq!(parse_vsock("3:7070"), Ok((3, 7070)));
        assert_eq!(parse_vsock("4294967295:1"), Ok((u32::MAX, 1)));
        for bad in [
            "",
            "3",
            "3:",
            ":7070",
            "x:1",
            "3:-1",
            "3:4294967296",
            "3:7070:1",
        ] {
            let err = parse_vsock(bad).unwrap_err();
            assert!(err.contains("CID:PORT"), "{bad}: {err}");
        }
    }
}
