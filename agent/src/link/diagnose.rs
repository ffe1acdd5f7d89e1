//! Turns a failed connect to the hub into a sentence a person can act on. tonic reports
//! every failure as "transport error"; the cause is buried in the error's source chain
//! (rustls errors inside `std::io::Error`s, connect errors from the HTTP client). This
//! module walks that chain and names the failure: a TLS certificate the agent does not
//! trust (with the hub certificate's subject and issuer, recorded by [`recorder`] while
//! the handshake ran, and the CA the agent expected), the hub refusing the handshake,
//! connection refused, DNS, or a timeout — always with the hub URL.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::CertificateError;

use crate::tls::{RefusedHook, Trust};

/// Subject and issuer of the certificate a verification refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeenCert {
    /// Subject DN (RFC 4514 text).
    pub subject: String,
    /// Issuer DN (RFC 4514 text).
    pub issuer: String,
}

/// Where [`recorder`] leaves the last refused certificate.
pub(crate) type CertSlot = Arc<Mutex<Option<SeenCert>>>;

/// Subject and issuer of a DER certificate (empty strings when it does not parse).
pub(crate) fn describe(der: &[u8]) -> SeenCert {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => SeenCert {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
        },
        Err(_) => SeenCert::default(),
    }
}

/// The hook for [`crate::tls::Tls13Only::on_refused`] that records the certificate a
/// verification refused into `slot`, so the error can name it.
pub(crate) fn recorder(slot: CertSlot) -> RefusedHook {
    Box::new(move |der| {
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(describe(der));
        }
    })
}

/// What the agent trusted, in words.
pub(crate) fn expected_ca(trust: &Trust, ca_file: Option<&PathBuf>) -> String {
    match (trust, ca_file) {
        (Trust::Pem(_), Some(path)) => format!("a CA in {} (--hub-ca-file)", path.display()),
        (Trust::Pem(_), None) => "a CA in the configured bundle".into(),
        (Trust::System, _) => "a CA of the system trust store (no --hub-ca-file set)".into(),
        (Trust::Insecure, _) => "nothing (--insecure-skip-hub-verify)".into(),
    }
}

/// The rustls error somewhere in `e`'s source chain (also inside `std::io::Error`s,
/// whose `source()` skips the wrapped error).
fn find_rustls(e: &(dyn StdError + 'static)) -> Option<rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r.clone());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = find_rustls(inner)
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// The `std::io::ErrorKind` of the first I/O error in the chain.
fn find_io_kind(e: &(dyn StdError + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// Every message of the chain, lower-cased, for the failures only text identifies.
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        out.push_str(&err.to_string().to_lowercase());
        out.push_str(" | ");
        cur = err.source();
    }
    out
}

/// The sentence for a failed connect to `url`.
pub(crate) fn connect_failure(
    url: &str,
    host: &str,
    err: &(dyn StdError + 'static),
    seen: Option<SeenCert>,
    expected: &str,
) -> String {
    if let Some(r) = find_rustls(err) {
        return tls_failure(url, host, &r, seen, expected);
    }
    let text = chain_text(err);
    let cause = match find_io_kind(err) {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "connection refused: nothing listens on that address and port; is the hub running, and is the \
             URL's port the hub's gRPC port?"
                .to_string()
        }
        Some(std::io::ErrorKind::ConnectionReset) => {
            "the connection was reset during the handshake; is this the hub's gRPC/TLS port (not a plain-HTTP \
             port or a proxy)?"
                .to_string()
        }
        Some(std::io::ErrorKind::TimedOut) => timeout_text(),
        _ if text.contains("dns error") || text.contains("lookup address") => format!(
            "DNS lookup of {host} failed; check the host name in --hub-url and this cluster's DNS"
        ),
        _ if text.contains("timed out") || text.contains("elapsed") => timeout_text(),
        _ if text.contains("handshake") && text.contains("timeout") => timeout_text(),
        _ if text.contains("h2") && text.contains("negotiat") => {
            "the server did not offer HTTP/2 (ALPN h2); is --hub-url the hub's gRPC port and not an \
             HTTP/1 proxy?"
                .to_string()
        }
        _ => {
            let last = last_message(err);
            format!("{last}; check that the hub is running and reachable from this cluster")
        }
    };
    format!("cannot connect to the hub at {url}: {cause}")
}

fn timeout_text() -> String {
    "no answer within 10s; a firewall, NetworkPolicy or wrong address may drop the connection"
        .into()
}

/// The innermost message of the chain (the most specific one).
fn last_message(err: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn tls_failure(
    url: &str,
    host: &str,
    r: &rustls::Error,
    seen: Option<SeenCert>,
    expected: &str,
) -> String {
    let cert = seen
        .filter(|c| !c.subject.is_empty() || !c.issuer.is_empty())
        .map(|c| {
            format!(
                "; the hub's certificate has subject \"{}\" and issuer \"{}\"",
                c.subject, c.issuer
            )
        })
        .unwrap_or_default();
    match r {
        rustls::Error::InvalidCertificate(ce) => {
            let what = match ce {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    "the hub's certificate is not signed by a CA the agent trusts".to_string()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    format!(
                        "the hub's certificate is not valid for the host name {host} in --hub-url"
                    )
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the hub's certificate has expired".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the hub's certificate is not valid yet (check the clocks)".to_string()
                }
                other => format!("the hub's certificate was refused ({other:?})"),
            };
            format!(
                "TLS certificate verification failed on the agent's side connecting to {url}: {what}{cert}; \
                 the agent expected a certificate issued by {expected}. Put the CA that issued the hub's \
                 serving certificate in the agent's hub CA bundle (chart value hub.caBundle or hub.caSecretName)"
            )
        }
        rustls::Error::AlertReceived(alert) => format!(
            "TLS handshake with the hub at {url} failed on the hub's side: the hub sent the alert {alert:?}; \
             check the hub's log for the handshake error"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "TLS handshake with {url} failed: the server did not speak TLS ({r}); is --hub-url the hub's \
             gRPC/TLS port?"
        ),
        other => format!("TLS handshake with the hub at {url} failed on the agent's side: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(self.1.as_ref())
        }
    }

    #[test]
    fn a_rustls_error_inside_an_io_error_is_named_as_tls() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let e = Wrap("transport error", Box::new(io));
        let seen = SeenCert {
            subject: "CN=hub".into(),
            issuer: "CN=other-ca".into(),
        };
        let m = connect_failure(
            "https://hub:443",
            "hub",
            &e,
            Some(seen),
            "a CA in /etc/ca.crt (--hub-ca-file)",
        );
        assert!(m.contains("TLS certificate verification failed"), "{m}");
        assert!(
            m.contains("agent's side") && m.contains("not signed by a CA"),
            "{m}"
        );
        assert!(
            m.contains("CN=other-ca") && m.contains("/etc/ca.crt"),
            "{m}"
        );
        assert!(m.contains("https://hub:443"), "{m}");
    }

    #[test]
    fn refused_dns_and_timeouts_name_the_cause() {
        let refused = Wrap(
            "transport error",
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        );
        let m = connect_failure("https://127.0.0.1:1", "127.0.0.1", &refused, None, "");
        assert!(
            m.contains("https://127.0.0.1:1") && m.contains("connection refused"),
            "{m}"
        );
        let dns = Wrap(
            "transport error",
            Box::new(Wrap(
                "dns error",
                Box::new(std::io::Error::other(
                    "failed to lookup address information",
                )),
            )),
        );
        // The first I/O error's kind (Other) says nothing; the text does.
        let m = connect_failure(
            "https://nowhere.invalid:443",
            "nowhere.invalid",
            &dns,
            None,
            "",
        );
        assert!(m.contains("DNS lookup of nowhere.invalid failed"), "{m}");
        let slow = Wrap(
            "transport error",
            Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        );
        assert!(connect_failure("https://h:1", "h", &slow, None, "").contains("no answer within"));
    }

    #[test]
    fn certificates_are_described_by_subject_and_issuer() {
        let ca = vclink_envtest::CertificateAuthority::new("describe-ca").expect("ca");
        let leaf = ca.issue_server(&["localhost".to_string()]).expect("leaf");
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(leaf.cert_pem.as_bytes())
            .map(|c: CertificateDer<'static>| c.as_ref().to_vec())
            .expect("der");
        let seen = describe(&der);
        assert!(seen.issuer.contains("describe-ca"), "{seen:?}");
        assert!(!seen.subject.is_empty());
        assert_eq!(describe(b"junk"), SeenCert::default());
    }
}
