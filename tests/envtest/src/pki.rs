//! CONTRACT STUB — to be implemented. Signatures are the agreed API; keep them.

/// A CA able to issue serving and client certificates (rcgen, ring).
pub struct CertificateAuthority {
    _private: (),
}

/// A certificate + private key in PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    /// Certificate chain PEM.
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
}

impl CertificateAuthority {
    /// A new self-signed CA with the given common name.
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        let _ = common_name;
        todo!()
    }
    /// The CA certificate PEM.
    pub fn cert_pem(&self) -> &str {
        todo!()
    }
    /// A serving certificate for the given DNS names / IP addresses.
    pub fn issue_server(&self, sans: &[String]) -> anyhow::Result<ClientIdentity> {
        let _ = sans;
        todo!()
    }
    /// A client certificate: CN = user, O = groups (Kubernetes x509 authn).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> anyhow::Result<ClientIdentity> {
        let _ = (user, groups);
        todo!()
    }
}
