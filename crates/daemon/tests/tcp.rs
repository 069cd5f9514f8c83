//! TCP: a bearer token on every request, TLS.

mod common;

use common::*;
use tiffany_daemon::client::connect_tcp;
use tiffany_daemon::proto;
use tonic::Code;

#[tokio::test]
async fn tcp_requires_the_token() {
    let dir = TempDir::new("tcp");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let d = Daemon::start(
        dir.path(),
        &[
            "--tcp-addr",
            "127.0.0.1:0",
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    let addr = d.addr_of("serving TCP");
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
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
    std::fs::write(dir.path().join("token"), "tls-token").unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let d = Daemon::start(
        dir.path(),
        &[
            "--tcp-addr",
            "127.0.0.1:0",
            "--token-file",
            &p("token"),
            "--tls-cert",
            &p("cert.pem"),
            "--tls-key",
            &p("key.pem"),
        ],
    );
    let addr = d.addr_of("serving TCP");
    let mut c = connect_tcp(
        &addr,
        Some("tls-token"),
        Some((cert_pem.as_bytes(), "localhost")),
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
        Some((cert_pem.as_bytes(), "localhost")),
    )
    .await
    .unwrap();
    assert_eq!(
        c.health(proto::HealthRequest {}).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}
