//! Component test of `vclink-agent register`: a real kube-apiserver plays the vCluster and
//! a small local HTTPS server plays Rancher's import endpoint (with its own CA, pinned in
//! strict mode). Checks that the manifest's objects end up in the cluster, that a second
//! run is harmless, and that failures give one-line reasons without the token.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vclink_agent::config::{LogFormat, RegisterArgs};
use vclink_envtest::{CertificateAuthority, Cluster};

const TOKEN: &str = "tok9f8e7d6c5b4a3";

const MANIFEST: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: proxy-clusterrole-kubeapiserver
rules:
- apiGroups: [""]
  resources: ["nodes/metrics", "nodes/proxy"]
  verbs: ["get", "list", "watch", "create"]
---
apiVersion: v1
kind: Namespace
metadata:
  name: cattle-system
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: cattle
  namespace: cattle-system
---
apiVersion: v1
kind: Secret
metadata:
  name: cattle-credentials-abc
  namespace: cattle-system
type: Opaque
data:
  token: dG9r
"#;

/// Serves MANIFEST at /v3/import/<TOKEN>_c-m-abcd1234.yaml, 400 for any other path.
async fn rancher_stub(ca: &CertificateAuthority) -> String {
    let id = ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()])
        .expect("server cert");
    let certs: Vec<_> = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("a key");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while n < buf.len() {
                    match tls.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(m) => n += m,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path == format!("/v3/import/{TOKEN}_c-m-abcd1234.yaml") {
                    ("200 OK", MANIFEST.to_string())
                } else {
                    ("400 Bad Request", "invalid token".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://127.0.0.1:{}", addr.port())
}

fn write_registration(dir: &Path, url: &str, mode: &str, ca: &str) {
    std::fs::write(dir.join("manifest-url"), url).expect("write");
    std::fs::write(dir.join("tls-mode"), mode).expect("write");
    std::fs::write(dir.join("ca.crt"), ca).expect("write");
}

fn args(kubeconfig: &Path, reg: &Path, log: &Path) -> RegisterArgs {
    RegisterArgs {
        kubeconfig: kubeconfig.to_path_buf(),
        registration_dir: reg.to_path_buf(),
        service_url: None,
        termination_log: log.to_path_buf(),
        log_format: LogFormat::Text,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_applies_the_manifest_and_reports_failures_without_the_token() {
    vclink_agent::tls::install_default_provider();
    let cluster = Cluster::start("register", Default::default())
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    let rancher_ca = CertificateAuthority::generate("rancher-ca").expect("ca");
    let rancher = rancher_stub(&rancher_ca).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("termination-log");
    let a = args(cluster.kubeconfig_path(), dir.path(), &log);

    // Success, twice (idempotent).
    let url = format!("{rancher}/v3/import/{TOKEN}_c-m-abcd1234.yaml");
    write_registration(dir.path(), &url, "strict", rancher_ca.cert_pem());
    for _ in 0..2 {
        let applied = vclink_agent::register::run(&a)
            .await
            .map_err(|(e, _)| e)
            .expect("register");
        assert_eq!(applied, 4);
    }
    Api::<Namespace>::all(client.clone())
        .get("cattle-system")
        .await
        .expect("namespace created");
    Api::<ServiceAccount>::namespaced(client.clone(), "cattle-system")
        .get("cattle")
        .await
        .expect("service account created");

    // A token Rancher refuses: HTTP 400, explained, token not shown.
    let bad = format!("{rancher}/v3/import/wrongtoken12345_c-m-abcd1234.yaml");
    write_registration(dir.path(), &bad, "strict", rancher_ca.cert_pem());
    let (e, shown_url) = vclink_agent::register::run(&a)
        .await
        .expect_err("must fail");
    let line = vclink_agent::register::redact(&e.to_string(), &shown_url);
    assert!(
        line.contains("HTTP 400") && line.contains("not accepted"),
        "{line}"
    );
    assert!(!line.contains("wrongtoken12345"), "{line}");

    // Strict mode with a different CA: Rancher is not trusted.
    let other_ca = CertificateAuthority::generate("other").expect("ca");
    write_registration(dir.path(), &url, "strict", other_ca.cert_pem());
    let (e, _) = vclink_agent::register::run(&a)
        .await
        .expect_err("must fail");
    let line = e.to_string();
    assert!(
        line.contains("cannot reach Rancher") && line.contains("not trusted"),
        "{line}"
    );
    assert!(!line.contains(TOKEN), "{line}");

    // Insecure mode accepts the unknown CA.
    write_registration(dir.path(), &url, "insecure", "");
    vclink_agent::register::run(&a)
        .await
        .map_err(|(e, _)| e)
        .expect("insecure register");

    // An unreachable vCluster API server.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let kc = std::fs::read_to_string(cluster.kubeconfig_path()).expect("kubeconfig");
    let broken = dir.path().join("broken-kubeconfig");
    std::fs::write(
        &broken,
        kc.replace(cluster.url(), &format!("https://127.0.0.1:{port}")),
    )
    .expect("write");
    write_registration(dir.path(), &url, "strict", rancher_ca.cert_pem());
    let (e, _) = vclink_agent::register::run(&args(&broken, dir.path(), &log))
        .await
        .expect_err("must fail");
    let line = e.to_string();
    assert!(
        line.starts_with(&format!(
            "cannot reach the vCluster API server at https://127.0.0.1:{port}"
        )),
        "{line}"
    );
    assert!(line.contains("refused"), "{line}");
}
