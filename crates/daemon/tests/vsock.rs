//! AF_VSOCK: the same bearer token as TCP. Where the machine has no vsock
//! loopback (the `vsock_loopback` module), the live test says so and returns.

mod common;

use common::*;
use tiffany_daemon::client::connect_vsock;
use tiffany_daemon::proto;
use tokio_vsock::{VMADDR_CID_ANY, VMADDR_CID_LOCAL, VsockAddr, VsockListener, VsockStream};
use tonic::Code;

/// A free vsock port reachable over this machine's loopback, or why not.
async fn loopback_port() -> Result<u32, String> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, u32::MAX))
        .map_err(|e| format!("bind: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?
        .port();
    let connect = VsockStream::connect(VsockAddr::new(VMADDR_CID_LOCAL, port));
    let accept = listener.accept();
    let (c, a) = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        tokio::join!(connect, accept)
    })
    .await
    .map_err(|_| "connect: timed out".to_string())?;
    c.map_err(|e| format!("connect to CID {VMADDR_CID_LOCAL}: {e}"))?;
    a.map_err(|e| format!("accept: {e}"))?;
    Ok(port)
}

#[tokio::test]
async fn vsock_requires_the_token() {
    let port = match loopback_port().await {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: this machine has no vsock loopback ({why})");
            return;
        }
    };
    let dir = TempDir::new("vsock");
    let token = dir.path().join("token");
    std::fs::write(&token, "vsock-token\n").unwrap();
    let port_arg = port.to_string();
    let _d = Daemon::start(
        dir.path(),
        &[
            "--vsock-port",
            &port_arg,
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    for bad in [None, Some("wrong"), Some("vsock-toke")] {
        let mut c = connect_vsock(VMADDR_CID_LOCAL, port, bad).await.unwrap();
        let e = c.health(proto::HealthRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}");
    }
    let mut c = connect_vsock(VMADDR_CID_LOCAL, port, Some("vsock-token"))
        .await
        .unwrap();
    let j = c.submit(sleep(0.0)).await.unwrap().into_inner();
    let got = c.get(proto::GetRequest { id: j.id }).await.unwrap();
    assert_eq!(got.into_inner().id, j.id);
}

#[test]
fn vsock_without_a_token_file_is_refused_at_start() {
    let dir = TempDir::new("vsock-notoken");
    let r = Daemon::try_start(dir.path(), &["--vsock-port", "5000"])
        .err()
        .expect("a vsock port without a token must not start");
    assert_eq!(r.status.code(), Some(2));
    assert!(
        r.stderr.contains("--vsock-port needs --token-file"),
        "{}",
        r.stderr
    );
}
