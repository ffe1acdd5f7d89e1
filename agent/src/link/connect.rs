//! What connecting to the hub takes, apart from the session that runs over the
//! connection: checking `--hub-url` and reading the token file (also at start-up, so a
//! bad setting fails before any connect), the TLS 1.3 channel with the hub CA re-read
//! at every connect (a rotated CA file is picked up without a restart), the refused
//! certificate recorded for [`super::diagnose`], and the backoff between attempts.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::warn;
use vclink_proto::Secret;

use super::{LinkConfig, LinkError, diagnose};
use crate::tls::{Tls13Only, Trust, verifier};

/// Checks `--hub-url` before anything connects: an `https://` URL with a host.
pub(crate) fn check_hub_url(url: &str) -> Result<(), LinkError> {
    let bad = |why: &str| {
        LinkError::Url(format!(
            "--hub-url {url:?} {why}; use the hub's gRPC URL, e.g. https://vclink-hub.example.com:443"
        ))
    };
    let uri: tonic::transport::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("is not an https:// URL (the hub speaks only TLS)"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(())
}

/// Reads the bearer token (trimmed); fails when missing or empty.
pub(crate) fn read_token(path: &std::path::Path) -> Result<Secret, LinkError> {
    let text = std::fs::read_to_string(path).map_err(|cause| LinkError::Token {
        path: path.to_path_buf(),
        cause,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(LinkError::Token {
            path: path.to_path_buf(),
            cause: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(Secret::new(token))
}

/// Exponential backoff with jitter: each delay is drawn from [base/2, base], base doubling
/// from `min` up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            base: min,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(self.max);
        let half = base.as_millis() as u64 / 2;
        Duration::from_millis(half + rand::rng().random_range(0..=half))
    }

    /// Back to the minimum after a successful session.
    pub fn reset(&mut self) {
        self.base = self.min;
    }
}

/// A hub's retry hint `h`, drawn from [h/2, h] (at least 1 s) so agents refused together
/// do not all return at one instant.
pub(crate) fn jittered(h: Duration) -> Duration {
    let half = (h.max(Duration::from_secs(1)).as_millis() as u64) / 2;
    Duration::from_millis(half + rand::rng().random_range(0..=half))
}

/// Builds the TLS channel to the hub (lazily connected by the first request).
pub(crate) async fn connect(cfg: &LinkConfig) -> Result<Channel, LinkError> {
    let uri: tonic::transport::Uri = cfg
        .hub_url
        .parse()
        .map_err(|e| LinkError::Url(format!("{e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| LinkError::Url("the URL has no host".into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if cfg.trust == Trust::Insecure {
        warn!(hub = %cfg.hub_url, "connecting to the hub WITHOUT verifying its certificate (--insecure-skip-hub-verify)");
    }
    let trust = current_trust(cfg);
    // The certificate a verification refused, so the error can name it.
    let seen: diagnose::CertSlot = Arc::default();
    let tls13 = Tls13Only::new(verifier(&trust)?).on_refused(diagnose::recorder(seen.clone()));
    let endpoint = Endpoint::from_shared(cfg.hub_url.clone())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .tls_config_with_verifier(
            ClientTlsConfig::new().domain_name(host.clone()),
            Arc::new(tls13),
        )?;
    endpoint.connect().await.map_err(|e| {
        let cert = seen.lock().ok().and_then(|s| s.clone());
        let expected = diagnose::expected_ca(&trust, cfg.hub_ca_file.as_ref());
        LinkError::Connect(diagnose::connect_failure(
            &cfg.hub_url,
            &host,
            &e,
            cert,
            &expected,
        ))
    })
}

/// The hub CA as the file holds it now; the last good one if the file is unreadable or
/// half-written (checked at start-up, so a bad file here is a rotation in progress).
fn current_trust(cfg: &LinkConfig) -> Trust {
    let (Some(path), Trust::Pem(_)) = (&cfg.hub_ca_file, &cfg.trust) else {
        return cfg.trust.clone();
    };
    match std::fs::read_to_string(path) {
        Ok(pem) if crate::tls::roots_from_pem(&pem).is_ok() => Trust::Pem(pem),
        Ok(_) => {
            warn!(file = %path.display(), "the hub CA file holds no usable certificate now; using the one read before");
            cfg.trust.clone()
        }
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot re-read the hub CA file; using the one read before");
            cfg.trust.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_hub_ca_is_used_at_the_next_connect_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("ca.crt");
        let first = vclink_envtest::CertificateAuthority::new("first").expect("ca");
        let second = vclink_envtest::CertificateAuthority::new("second").expect("ca");
        std::fs::write(&file, first.cert_pem()).expect("write");
        let cfg = LinkConfig {
            hub_url: "https://hub.example:8443".into(),
            trust: Trust::Pem(first.cert_pem().to_owned()),
            hub_ca_file: Some(file.clone()),
            cluster_id: "c-m-abcd1234".into(),
            token_file: dir.path().join("token"),
            instance: "agent-0".into(),
        };
        std::fs::write(&file, second.cert_pem()).expect("write");
        assert_eq!(
            current_trust(&cfg),
            Trust::Pem(second.cert_pem().to_owned())
        );
        std::fs::write(&file, "-----BEGIN CERT").expect("write");
        assert_eq!(
            current_trust(&cfg),
            Trust::Pem(first.cert_pem().to_owned()),
            "a half-written file falls back to the CA read at start-up"
        );
        let system = LinkConfig {
            trust: Trust::System,
            ..cfg
        };
        assert_eq!(current_trust(&system), Trust::System);
    }

    #[test]
    fn a_retry_hint_is_jittered_below_itself_and_at_least_half_a_second() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(5));
            assert!(
                d >= Duration::from_millis(2500) && d <= Duration::from_secs(5),
                "{d:?}"
            );
        }
        let d = jittered(Duration::ZERO);
        assert!(
            d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
            "{d:?}"
        );
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let first = b.next_delay();
        assert!(
            first >= Duration::from_millis(500) && first <= Duration::from_secs(1),
            "{first:?}"
        );
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.next_delay();
        }
        assert!(
            last >= Duration::from_secs(30) && last <= Duration::from_secs(60),
            "{last:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn token_file_problems_are_reported_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let e = read_token(&missing).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        assert!(read_token(&empty).is_err());
        let ok = dir.path().join("tok");
        std::fs::write(&ok, "abc.def\n").expect("write");
        assert_eq!(read_token(&ok).expect("token").expose(), "abc.def");
    }
}
