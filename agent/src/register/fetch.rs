//! Fetching Rancher's import manifest with the trust the hub asked for: the pinned CA
//! (strict), the system trust store (system-store) or no verification (insecure, with a
//! warning). Retries transient failures (connect errors, timeouts, 5xx) a few times but
//! never a 4xx: a refused token will not become valid by asking again. Error texts name
//! the Rancher host at most, never the URL's path (it holds the registration token).

use std::time::Duration;

use tracing::{info, warn};
use vclink_proto::Secret;

use super::RegisterError;
use crate::tls::{self, Trust};

/// Largest manifest accepted (Rancher's is a few KiB).
const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
/// Attempts for transient failures.
const ATTEMPTS: u32 = 3;

/// The TLS mode text stored in the registration Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Verify against the given CA (system roots when none is given).
    Strict,
    /// Verify against the system trust store.
    SystemStore,
    /// Do not verify.
    Insecure,
}

impl TlsMode {
    /// Parses `strict`, `system-store` or `insecure` (empty means strict).
    pub fn parse(text: &str) -> Result<Self, RegisterError> {
        match text.trim() {
            "" | "strict" => Ok(Self::Strict),
            "system-store" => Ok(Self::SystemStore),
            "insecure" => Ok(Self::Insecure),
            other => Err(RegisterError::Input(format!(
                "unknown TLS mode {:?} in the registration Secret (expected strict, system-store or insecure)",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }

    /// The trust to use for Rancher given the CA bundle from the Secret.
    pub fn trust(self, ca_pem: &str) -> Trust {
        match self {
            Self::Strict if ca_pem.trim().is_empty() => Trust::System,
            Self::Strict => Trust::Pem(ca_pem.to_string()),
            Self::SystemStore => Trust::System,
            Self::Insecure => Trust::Insecure,
        }
    }
}

/// `https://host[:port]` of a URL, safe to print.
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => "Rancher".into(),
        },
        Err(_) => "Rancher".into(),
    }
}

/// What an HTTP status from the import endpoint means for a user.
pub fn explain_status(code: u16) -> &'static str {
    match code {
        400 | 401 | 403 => "the registration token was not accepted by Rancher",
        404 => "Rancher does not know this import URL",
        429 => "Rancher is rate limiting requests",
        500..=599 => "Rancher failed to serve the manifest",
        _ => "unexpected answer from Rancher",
    }
}

/// The innermost cause of an error, lower-cased and without `(os error N)` noise.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Downloads the manifest.
pub async fn fetch_manifest(url: &Secret, trust: &Trust) -> Result<String, RegisterError> {
    let site = origin(url.expose());
    if *trust == Trust::Insecure {
        warn!(rancher = %site, "fetching the import manifest WITHOUT verifying Rancher's certificate (TLS mode insecure)");
    }
    let tls = tls::client_config(trust, &[b"h2", b"http/1.1"])
        .map_err(|e| RegisterError::Input(format!("Rancher CA: {e}")))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            RegisterError::Fetch(format!(
                "cannot build the HTTP client: {}",
                root_cause(&e.without_url())
            ))
        })?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let transient = match client.get(url.expose()).send().await {
            Ok(resp) if resp.status().is_success() => {
                let body = resp.bytes().await.map_err(|e| {
                    RegisterError::Fetch(format!(
                        "reading the manifest from {site} failed: {}",
                        root_cause(&e.without_url())
                    ))
                })?;
                if body.len() > MAX_MANIFEST_BYTES {
                    return Err(RegisterError::Fetch(format!(
                        "the manifest from {site} is larger than {MAX_MANIFEST_BYTES} bytes"
                    )));
                }
                info!(rancher = %site, bytes = body.len(), "fetched the import manifest");
                return String::from_utf8(body.to_vec()).map_err(|_| {
                    RegisterError::Fetch(format!("the manifest from {site} is not UTF-8 text"))
                });
            }
            Ok(resp) => {
                let code = resp.status().as_u16();
                let e = RegisterError::Fetch(format!("HTTP {code} ({})", explain_status(code)));
                if !resp.status().is_server_error() {
                    return Err(e);
                }
                e
            }
            Err(e) => {
                let cause = root_cause(&e.without_url());
                let hint = if cause.contains("certificate") || cause.contains("issuer") {
                    " (Rancher's certificate is not trusted with the configured TLS mode)"
                } else {
                    ""
                };
                let e =
                    RegisterError::Fetch(format!("cannot reach Rancher at {site}: {cause}{hint}"));
                // An untrusted certificate does not fix itself by asking again.
                if !hint.is_empty() {
                    return Err(e);
                }
                e
            }
        };
        if attempt >= ATTEMPTS {
            return Err(transient);
        }
        warn!(attempt, error = %transient, "fetching the import manifest failed; retrying");
        tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_modes_select_the_trust() {
        assert_eq!(
            TlsMode::parse("strict").expect("mode").trust(""),
            Trust::System
        );
        assert_eq!(
            TlsMode::parse("strict\n").expect("mode").trust("PEM"),
            Trust::Pem("PEM".into())
        );
        assert_eq!(
            TlsMode::parse("system-store").expect("mode").trust("PEM"),
            Trust::System
        );
        assert_eq!(
            TlsMode::parse("insecure").expect("mode").trust("PEM"),
            Trust::Insecure
        );
        assert!(TlsMode::parse("yolo").is_err());
    }

    #[test]
    fn origin_hides_the_token_path() {
        assert_eq!(
            origin("https://rancher.example.com/v3/import/tok_c-m-1.yaml"),
            "https://rancher.example.com"
        );
        assert_eq!(
            origin("https://10.0.0.1:8443/v3/import/tok.yaml"),
            "https://10.0.0.1:8443"
        );
    }

    #[test]
    fn statuses_are_explained() {
        assert!(explain_status(400).contains("token was not accepted"));
        assert!(explain_status(503).contains("failed"));
    }
}
