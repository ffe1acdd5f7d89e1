//! Certificates and keys for a test cluster: one CA per cluster that signs the API
//! server's serving certificate and every client identity, plus the ServiceAccount
//! token signing key pair.
//!
//! Everything is ECDSA P-256 (rcgen with ring): kube-apiserver 1.20 accepts ECDSA for
//! serving, client and ServiceAccount keys, and ring cannot generate RSA keys.
//! Kubernetes maps a client certificate's CN to the user and each O to a group; rcgen
//! can hold only one value per attribute type, so client certificates get their subject
//! rewritten and re-signed by [`crate::der`].

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use crate::der;

/// Why a certificate or key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or failed to sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A subject alternative name was neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
    /// The DER produced by rcgen did not have the expected X.509 shape.
    #[error("unexpected certificate encoding: {0}")]
    Der(&'static str),
}

/// A CA able to issue serving and client certificates (rcgen, ring).
pub struct CertificateAuthority {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of debug output.
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// A certificate + private key in PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    /// Certificate chain PEM.
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A ServiceAccount token signing key pair in PEM (ECDSA P-256, ES256 tokens).
#[derive(Clone)]
pub struct ServiceAccountKeys {
    /// PKCS#8 private key PEM (`--service-account-signing-key-file`).
    pub private_key_pem: String,
    /// SubjectPublicKeyInfo PEM (`--service-account-key-file`).
    pub public_key_pem: String,
}

impl std::fmt::Debug for ServiceAccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKeys")
            .field("public_key_pem", &self.public_key_pem)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKeys {
    /// A fresh ECDSA P-256 key pair.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        Ok(Self {
            private_key_pem: key.serialize_pem(),
            public_key_pem: key.public_key_pem(),
        })
    }
}

fn new_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

/// Parses `s` as an IP SAN or a DNS SAN.
fn san(s: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = s
        .to_string()
        .try_into()
        .map_err(|_| PkiError::InvalidSan(s.to_string()))?;
    Ok(SanType::DnsName(name))
}

impl CertificateAuthority {
    /// A new self-signed CA with the given common name.
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        Ok(Self::generate(common_name)?)
    }

    /// Like [`CertificateAuthority::new`] with a typed error.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            params,
            key,
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A serving certificate for the given DNS names / IP addresses.
    pub fn issue_server(&self, sans: &[String]) -> anyhow::Result<ClientIdentity> {
        Ok(self.server_cert(sans)?)
    }

    /// Like [`CertificateAuthority::issue_server`] with a typed error.
    pub fn server_cert(&self, sans: &[String]) -> Result<ClientIdentity, PkiError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cn = sans.first().map(String::as_str).unwrap_or("server");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer())?;
        Ok(ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate: CN = user, O = groups (Kubernetes x509 authn).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> anyhow::Result<ClientIdentity> {
        Ok(self.client_cert(user, groups)?)
    }

    /// Like [`CertificateAuthority::issue_client`] with a typed error.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<ClientIdentity, PkiError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer())?;
        // rcgen keeps one value per attribute type; write the real subject (one O per
        // group) and sign again with the CA key.
        let subject = der::name(user, groups);
        let der = der::replace_subject(cert.der(), &subject, |tbs| {
            rcgen::SigningKey::sign(&self.key, tbs)
        })
        .map_err(|e| match e {
            der::RewriteError::Der(m) => PkiError::Der(m),
            der::RewriteError::Sign(e) => PkiError::Rcgen(e),
        })?;
        Ok(ClientIdentity {
            cert_pem: der::pem("CERTIFICATE", &der),
            key_pem: key.serialize_pem(),
        })
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca: &CertificateAuthority) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        Arc::new(roots)
    }

    #[test]
    fn server_cert_verifies_for_its_sans_only() {
        let ca = CertificateAuthority::new("test-ca").unwrap();
        let id = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into(), "vc1.ns".into()])
            .unwrap();
        let cert = CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&ca), provider())
                .build()
                .unwrap();
        for name in ["localhost", "127.0.0.1", "vc1.ns"] {
            let sn = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&cert, &[], &sn, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = ServerName::try_from("other.example").unwrap();
        assert!(
            verifier
                .verify_server_cert(&cert, &[], &other, &[], UnixTime::now())
                .is_err()
        );
        // A different CA does not vouch for it.
        let ca2 = CertificateAuthority::new("other-ca").unwrap();
        let v2 =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&ca2), provider())
                .build()
                .unwrap();
        let sn = ServerName::try_from("localhost").unwrap();
        assert!(
            v2.verify_server_cert(&cert, &[], &sn, &[], UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn client_cert_carries_user_and_every_group_and_verifies() {
        let ca = CertificateAuthority::new("test-ca").unwrap();
        let id = ca
            .issue_client("alice", &["system:masters", "team-a", "team-b"])
            .unwrap();
        let cert = CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
        let cn: Vec<_> = parsed
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let orgs: Vec<_> = parsed
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cn, ["alice"]);
        assert_eq!(orgs, ["system:masters", "team-a", "team-b"]);
        // The re-signed certificate is accepted by a TLS server trusting the CA.
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&ca), provider())
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .unwrap();
        let ca2 = CertificateAuthority::new("other-ca").unwrap();
        let v2 =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&ca2), provider())
                .build()
                .unwrap();
        assert!(v2.verify_client_cert(&cert, &[], UnixTime::now()).is_err());
        // The key matches the certificate.
        let key = KeyPair::from_pem(&id.key_pem).unwrap();
        assert_eq!(
            key.public_key_raw(),
            parsed.public_key().subject_public_key.data.as_ref()
        );
    }

    #[test]
    fn service_account_keys_are_pem() {
        let k = ServiceAccountKeys::generate().unwrap();
        assert!(k.private_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(k.public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let key = KeyPair::from_pem(&k.private_key_pem).unwrap();
        assert_eq!(key.public_key_pem(), k.public_key_pem);
    }
}
