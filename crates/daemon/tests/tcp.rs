//! TCP: a bearer token on every request, TLS.

mod common;

use common::*;
use tiffany_daemon::client::connect_tcp;
use tiffany_daemon::proto;
use tonic::Code;

#[tokio::test]
async fn tcp_requires_the_token() {
    let dir = TempDir::new("tcp");
    let (_daemon, addr) = start_tcp(dir.path(), "s3cret-token\n", None);
    for bad in [
        None,
        Some("wrong"),
        Some("s3cret-toke"),
        Some("s3cret-token2"),
    ] {
        let mut c = connect_tcp(&addr, bad, None).await.unwrap();
        let e = c.health(proto::HealthRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}");
        let e = c.submit(sleep(0.0)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let mut c = connect_tcp(&addr, Some("s3cret-token"), None)
        .await
        .unwrap();
    let j = c.submit(sleep(0.0)).await.unwrap().into_inner();
    assert_eq!(
        c.get(proto::GetRequest { id: j.id })
            .await
            .unwrap()
            .into_inner()
            .id,
        j.id
    );
}

#[tokio::test]
async fn tcp_over_tls_with_a_test_certificate() {
    let dir = TempDir::new("tls");
    let cert = TestCert::new(dir.path(), "cert", "localhost");
    let (_daemon, addr) = start_tcp(dir.path(), "tls-token", Some(&cert));
    let mut c = connect_tcp(
        &addr,
        Some("tls-token"),
        Some((cert.pem.as_bytes(), "localhost")),
    )
    .await
    .unwrap();
    let h = c
        .health(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, "serving");
    // Without TLS, the TLS port does not answer gRPC.
    if let Ok(mut plain) = connect_tcp(&addr, Some("tls-token"), None).await {
        assert!(plain.health(proto::HealthRequest {}).await.is_err());
    }
    // The wrong token over TLS.
    let mut c = connect_tcp(
        &addr,
        Some("nope"),
        Some((cert.pem.as_bytes(), "localhost")),
    )
    .await
    .unwrap();
    assert_eq!(
        c.health(proto::HealthRequest {}).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}
