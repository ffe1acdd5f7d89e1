//! TLS plumbing for the Rancher simulator: the HTTPS server's rustls config (own CA,
//! SAN 127.0.0.1/localhost) and clients that present an API server's admin certificate
//! (kube clients for watches, reqwest clients for the cluster proxy).

use std::sync::Arc;

use base64::Engine;
use kube::{Client, Config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use vclink_envtest::ClientIdentity;

use crate::error::{Result, SimError};

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SimError::Tls(format!("bad certificate PEM: {e}")))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| SimError::Tls(format!("bad key PEM: {e}")))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The HTTPS server's config (HTTP/1.1; the API server's webhook client and kubectl
/// both speak it).
pub fn server_config(identity: &ClientIdentity) -> Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs(&identity.cert_pem)?, key(&identity.key_pem)?)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A client config trusting `ca_pem` and presenting `identity`.
pub fn client_config(ca_pem: &str, identity: &ClientIdentity) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem)? {
        roots.add(c).map_err(|e| SimError::Tls(e.to_string()))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(&identity.cert_pem)?, key(&identity.key_pem)?)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A kube client for `url` authenticated by `identity`'s client certificate.
pub fn kube_client(url: &str, ca_pem: &str, identity: &ClientIdentity) -> Result<Client> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let uri = url
        .parse()
        .map_err(|e| SimError::Tls(format!("bad API server URL: {e}")))?;
    let mut cfg = Config::new(uri);
    cfg.root_cert = Some(certs(ca_pem)?.into_iter().map(|c| c.to_vec()).collect());
    cfg.auth_info.client_certificate_data = Some(b64(&identity.cert_pem));
    cfg.auth_info.client_key_data = Some(b64(&identity.key_pem).into());
    Client::try_from(cfg).map_err(SimError::Kube)
}

/// A reqwest client trusting `ca_pem` and presenting `identity` (no overall timeout:
/// it carries watch streams).
pub fn http_client(ca_pem: &str, identity: &ClientIdentity) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(ca_pem, identity)?)
        .build()
        .map_err(|e| SimError::Tls(e.to_string()))
}
