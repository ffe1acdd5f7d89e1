//! rustls building blocks shared by the hub connection and the `register` manifest fetch:
//! root stores from a PEM bundle or the system trust store, the certificate verifier for
//! each trust choice, and the explicit "accept anything" verifier used only when an
//! operator asked for no verification. Everything uses the ring provider (no aws-lc-rs)
//! and TLS 1.3 only: [`client_config`] offers nothing else, and [`Tls13Only`] makes a
//! verifier refuse every TLS 1.2 handshake where the config is built by someone else
//! (tonic's channel).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a trust configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
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
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide rustls provider (kube and reqwest pick it up);
/// an already installed provider is kept.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses a PEM bundle into a root store.
pub(crate) fn roots_from_pem(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
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
pub(crate) fn system_roots() -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err(TlsError::NoSystemRoots);
    }
    Ok(roots)
}

/// The verifier for a trust choice.
pub(crate) fn verifier(trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
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
pub(crate) fn client_config(
    trust: &Trust,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let v = verifier(trust)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(v)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// The verifier for connections whose rustls config tonic builds (it offers TLS 1.2
/// too): a TLS 1.2 server must sign its key exchange, and this verifier refuses every
/// such signature, so only TLS 1.3 sessions complete. (rustls has no TLS 1.2 suite
/// without a signed key exchange.) It is also the one place that sees the certificate
/// a verification refused, so [`Tls13Only::on_refused`] can hand it to whoever
/// explains the failure afterwards.
pub(crate) struct Tls13Only {
    inner: Arc<dyn ServerCertVerifier>,
    on_refused: Option<RefusedHook>,
}

/// Called with the DER of a server certificate the inner verifier refused.
pub(crate) type RefusedHook = Box<dyn Fn(&[u8]) + Send + Sync>;

impl Tls13Only {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Self {
        Self {
            inner,
            on_refused: None,
        }
    }

    /// Calls `hook` with every server certificate `inner` refuses.
    pub fn on_refused(self, hook: RefusedHook) -> Self {
        Self {
            on_refused: Some(hook),
            ..self
        }
    }
}

impl std::fmt::Debug for Tls13Only {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls13Only")
            .field("inner", &self.inner)
            .field("on_refused", &self.on_refused.is_some())
            .finish()
    }
}

impl ServerCertVerifier for Tls13Only {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if result.is_err()
            && let Some(hook) = &self.on_refused
        {
            hook(end_entity.as_ref());
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "the server offered TLS 1.2; vclink requires TLS 1.3".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (still checks handshake signatures so the session is
/// at least bound to the presented key). Only for explicitly insecure modes.
#[derive(Debug)]
pub(crate) struct AcceptAnyServerCert {
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

    /// A handshake against a server speaking `server_versions`, either with
    /// [`client_config`] or with the config tonic would build (1.2 and 1.3 offered)
    /// around [`Tls13Only`].
    async fn handshake(
        server_versions: &[&'static rustls::SupportedProtocolVersion],
        ours: bool,
    ) -> bool {
        use std::sync::Arc;
        let ca = vclink_envtest::CertificateAuthority::new("t").expect("ca");
        let leaf = ca.issue_server(&["localhost".to_string()]).expect("leaf");
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(server_versions)
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        tokio::spawn(async move {
            if let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        let trust = Trust::Pem(ca.cert_pem().to_string());
        let client = if ours {
            client_config(&trust, &[]).expect("config")
        } else {
            let v = Tls13Only::new(verifier(&trust).expect("verifier"));
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(v))
                .with_no_client_auth()
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn only_tls13_servers_are_accepted() {
        install_default_provider();
        let (v12, v13) = (&rustls::version::TLS12, &rustls::version::TLS13);
        for ours in [true, false] {
            assert!(handshake(&[v13], ours).await, "TLS 1.3 works (ours={ours})");
            assert!(
                !handshake(&[v12], ours).await,
                "TLS 1.2 is refused (ours={ours})"
            );
        }
    }

    #[test]
    fn insecure_trust_builds_a_config() {
        let cfg = client_config(&Trust::Insecure, &[b"h2"]).expect("config");
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
