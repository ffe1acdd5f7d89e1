//! The gRPC listener speaks TLS 1.3 only and offers h2: a TLS 1.3 client completes the
//! handshake, a TLS 1.2-only client is refused.

use std::sync::Arc;

use futures::StreamExt;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_util::sync::CancellationToken;

fn client(ca_pem: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn only_tls13_is_accepted() {
    let ca = vclink_envtest::CertificateAuthority::new("hub-tls-test").unwrap();
    let serving = ca.issue_server(&["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c"), &serving.cert_pem).unwrap();
    std::fs::write(dir.path().join("k"), &serving.key_pem).unwrap();
    let cfg =
        vclink_hub::grpc::tls::server_config(&dir.path().join("c"), &dir.path().join("k")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let mut incoming = vclink_hub::grpc::tls::incoming(listener, cfg, stop.clone());
    let name = ServerName::try_from("localhost").unwrap();

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = client(ca.cert_pem(), &[&rustls::version::TLS13])
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert!(incoming.next().await.unwrap().is_ok());

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let old = client(ca.cert_pem(), &[&rustls::version::TLS12])
        .connect(name, tcp)
        .await;
    assert!(old.is_err(), "a TLS 1.2-only client must be refused");

    let bad = vclink_hub::grpc::tls::server_config(&dir.path().join("k"), &dir.path().join("c"));
    assert!(bad.is_err(), "swapped cert and key must fail at start");
    stop.cancel();
}
