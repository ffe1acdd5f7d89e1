//! rustls building blocks shared by the hub connection and the `register` manifest fetch:
//! root stores from a PEM bundle or the system trust store, the certificate verifier for
//! each trust choice, and the explicit "accept anything" verifier used only when an
//! operator asked for no verification. Everything uses the ring provider (no aws-lc-rs).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a trust configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM text held no usable certificate.
    #[error("the CA bundle contains no PEM certificate")]
    NoCertificates,
    /// The PEM text could not be parsed.
    #[error("the CA bundle is not valid PEM: {0}")]
    BadPem(String),
    /// The system trust store was empty or unreadable.
    #[error("no usable certificates in the system trust store")]
    NoSystemRoots,
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(String),
}

/// How to trust a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Only the CAs in this PEM bundle.
    Pem(String),
    /// The operating system's trust store.
    System,
    /// No verification at all.
    Insecure,
}

/// The ring crypto provider every TLS connection of the agent uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide rustls provider (kube and reqwest pick it up);
/// an already installed provider is kept.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses a PEM bundle into a root store.
pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| TlsError::BadPem(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::BadPem(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    Ok(roots)
}

/// Loads the system trust store.
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err(TlsError::NoSystemRoots);
    }
    Ok(roots)
}

/// The verifier for a trust choice.
pub fn verifier(trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let roots = match trust {
        Trust::Insecure => return Ok(Arc::new(AcceptAnyServerCert::new())),
        Trust::Pem(pem) => roots_from_pem(pem)?,
        Trust::System => system_roots()?,
    };
    let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(v)
}

/// A complete client configuration (no client certificate) for a trust choice.
pub fn client_config(trust: &Trust, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
    let v = verifier(trust)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(v)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// Accepts any server certificate (still checks handshake signatures so the session is
/// at least bound to the presented key). Only for explicitly insecure modes.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    /// A verifier using ring's signature algorithms.
    pub fn new() -> Self {
        Self {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl Default for AcceptAnyServerCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_pem_is_refused_with_a_clear_error() {
        assert!(matches!(
            roots_from_pem("not a certificate"),
            Err(TlsError::NoCertificates)
        ));
    }

    #[test]
    fn insecure_trust_builds_a_config() {
        let cfg = client_config(&Trust::Insecure, &[b"h2"]).expect("config");
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
