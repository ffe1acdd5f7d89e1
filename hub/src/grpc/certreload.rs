//! The gRPC listener's certificate, re-read when its files change. cert-manager (and the
//! kubelet, when the chart's generated Secret is replaced) rewrite the mounted files in
//! place; a hub that read them once would serve an expired certificate after the next
//! renewal. rustls asks this resolver for the certificate on every handshake; at most
//! once per [`CHECK_INTERVAL`] it compares the files' modification times (no timer, no
//! watch: an idle hub does nothing) and loads a changed pair. A pair that does not load
//! — half-written during the swap, or a key that does not match — is logged and the
//! previous certificate stays in use until a good pair appears.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rustls_pki_types::pem::{Error as PemError, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// How often a handshake may look at the files' modification times.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Serves the current certificate of `cert`/`key`, reloading changed files.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    checked: Instant,
    stamp: Option<(SystemTime, SystemTime)>,
    current: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the pair now (a bad pair fails start-up with a message naming the file).
    pub fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let stamp = stamp(cert, key);
        let current = Arc::new(load_pair(cert, key, &provider)?);
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            interval,
            state: Mutex::new(State {
                checked: Instant::now(),
                stamp,
                current,
            }),
        })
    }

    /// The certificate to serve now, after reloading it if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.checked.elapsed() < self.interval {
            return s.current.clone();
        }
        s.checked = Instant::now();
        let now = stamp(&self.cert, &self.key);
        if now.is_none() || now == s.stamp {
            return s.current.clone();
        }
        match load_pair(&self.cert, &self.key, &self.provider) {
            Ok(ck) => {
                tracing::info!(cert = %self.cert.display(), "loaded the renewed TLS certificate");
                s.current = Arc::new(ck);
                s.stamp = now;
            }
            Err(e) => tracing::warn!(
                cert = %self.cert.display(),
                error = format!("{e:#}"),
                "the TLS certificate files changed but do not load; still serving the previous certificate"
            ),
        }
        s.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Modification times of both files (following the kubelet's symlinks).
fn stamp(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

/// Reads and checks one certificate chain and key.
pub fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let c = std::fs::read(cert)
        .with_context(|| format!("reading --tls-cert-file {}", cert.display()))?;
    let k =
        std::fs::read(key).with_context(|| format!("reading --tls-key-file {}", key.display()))?;
    let certs = CertificateDer::pem_slice_iter(&c)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "--tls-cert-file {} is not a PEM certificate file",
                cert.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--tls-cert-file {} holds no PEM certificate",
        cert.display()
    );
    let key_der = match PrivateKeyDer::from_pem_slice(&k) {
        Ok(key) => key,
        Err(PemError::NoItemsFound) => {
            anyhow::bail!("--tls-key-file {} holds no PEM private key", key.display())
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("--tls-key-file {} is not a PEM key file", key.display())
            });
        }
    };
    CertifiedKey::from_der(certs, key_der, provider).with_context(|| {
        format!(
            "--tls-cert-file {} and --tls-key-file {} do not form a usable pair (a key of another certificate?)",
            cert.display(),
            key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec![cn.to_owned()]).expect("rcgen");
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&c, ck.cert.pem()).expect("write");
        std::fs::write(&k, ck.signing_key.serialize_pem()).expect("write");
        (c, k)
    }

    fn leaf(ck: &CertifiedKey) -> Vec<u8> {
        ck.cert[0].as_ref().to_vec()
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, k) = pair(dir.path(), "first.example");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let r = ReloadingCert::load(&c, &k, provider, Duration::ZERO).expect("load");
        let first = leaf(&r.current());
        assert_eq!(
            leaf(&r.current()),
            first,
            "unchanged files: same certificate"
        );

        // Renewal rewrites both files (mtime moves forward).
        std::thread::sleep(Duration::from_millis(20));
        pair(dir.path(), "second.example");
        let second = leaf(&r.current());
        assert_ne!(second, first, "the renewed certificate is served");

        // A half-written renewal: the new certificate without its key.
        std::thread::sleep(Duration::from_millis(20));
        let other =
            rcgen::generate_simple_self_signed(vec!["third.example".to_owned()]).expect("rcgen");
        std::fs::write(&c, other.cert.pem()).expect("write");
        assert_eq!(
            leaf(&r.current()),
            second,
            "a certificate that does not match its key is not served"
        );
        assert!(
            ReloadingCert::load(
                &c,
                &k,
                Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()),
                Duration::ZERO
            )
            .is_err()
        );
    }
}
