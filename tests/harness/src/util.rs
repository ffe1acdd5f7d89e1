//! Small helpers shared by the harness and the end-to-end tests: waiting on a condition
//! with a deadline (never sleep-and-hope), picking free loopback ports, and a minimal
//! plain-HTTP GET for probing `/readyz` and scraping `/metrics` without pulling an HTTP
//! client (and its TLS stack) into the harness.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often [`wait_for`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A condition that timed out.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
pub struct WaitTimeout {
    /// What was awaited, as given by the caller.
    pub what: String,
    /// How long we waited.
    pub after: Duration,
    /// The last error the condition returned, if any.
    pub last_error: Option<String>,
}

/// What a condition closure may return: `bool`, `Option<T>`, `Result<bool, E>` or
/// `Result<Option<T>, E>`. `Ok(None)`/`false` mean "not yet"; an `Err` also means "not
/// yet" (the API may be briefly unavailable) but is remembered for the timeout message.
pub trait Check {
    /// The value handed back once the condition holds.
    type Output;
    /// `Ok(Some(v))` done, `Ok(None)` not yet, `Err(msg)` not yet with a reason.
    fn into_check(self) -> Result<Option<Self::Output>, String>;
}

impl Check for bool {
    type Output = ();
    fn into_check(self) -> Result<Option<()>, String> {
        Ok(self.then_some(()))
    }
}

impl<T> Check for Option<T> {
    type Output = T;
    fn into_check(self) -> Result<Option<T>, String> {
        Ok(self)
    }
}

impl<E: Display> Check for Result<bool, E> {
    type Output = ();
    fn into_check(self) -> Result<Option<()>, String> {
        self.map(|b| b.then_some(())).map_err(|e| format!("{e:#}"))
    }
}

impl<T, E: Display> Check for Result<Option<T>, E> {
    type Output = T;
    fn into_check(self) -> Result<Option<T>, String> {
        self.map_err(|e| format!("{e:#}"))
    }
}

/// Polls `condition` every [`POLL_INTERVAL`] until it holds or `timeout` passes.
///
/// ```ignore
/// let uid = wait_for("provisioning cluster for vc1", Duration::from_secs(30), || async {
///     Ok::<_, kube::Error>(api.get_opt("vc1").await?.and_then(|c| c.metadata.uid))
/// }).await?;
/// ```
pub async fn wait_for<F, Fut, C>(
    what: &str,
    timeout: Duration,
    mut condition: F,
) -> Result<C::Output, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
    C: Check,
{
    let start = tokio::time::Instant::now();
    let mut last_error = None;
    loop {
        match condition().await.into_check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() >= timeout {
            return Err(WaitTimeout {
                what: what.to_owned(),
                after: timeout,
                last_error,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A condition that stopped holding while [`holds_for`] watched it.
#[derive(Debug, thiserror::Error)]
#[error("{what} stopped holding after {after:?}{}", detail.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
pub struct NoLongerHolds {
    /// What was expected to keep holding, as given by the caller.
    pub what: String,
    /// How long it held.
    pub after: Duration,
    /// The error the condition returned, if it failed with one.
    pub detail: Option<String>,
}

/// The opposite of [`wait_for`]: checks every [`POLL_INTERVAL`] that `condition` keeps
/// holding for all of `period` (e.g. "the Rancher cluster still exists while the agent is
/// away"). A condition that returns "not yet" or an error fails at once. This is how a
/// test asserts that something does *not* happen within a time that matters (a grace
/// period), rather than sleeping and checking once.
pub async fn holds_for<F, Fut, C>(
    what: &str,
    period: Duration,
    mut condition: F,
) -> Result<(), NoLongerHolds>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
    C: Check,
{
    let start = tokio::time::Instant::now();
    loop {
        match condition().await.into_check() {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(NoLongerHolds {
                    what: what.to_owned(),
                    after: start.elapsed(),
                    detail: None,
                });
            }
            Err(e) => {
                return Err(NoLongerHolds {
                    what: what.to_owned(),
                    after: start.elapsed(),
                    detail: Some(e),
                });
            }
        }
        if start.elapsed() >= period {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The answer to [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body as text (lossy).
    pub body: String,
}

/// A plain-HTTP/1.0 GET of `path` on `addr` (`127.0.0.1:port`), for health and metrics
/// endpoints. Bounded by a 5 s timeout.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<HttpResponse> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        parse_http_response(&buf).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response")
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("GET http://{addr}{path} timed out"),
            )
        })?
}

fn parse_http_response(buf: &[u8]) -> Option<HttpResponse> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(HttpResponse {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move { (now >= 3).then_some(now) }
        })
        .await
        .expect("holds");
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn wait_for_names_what_it_waited_for_and_the_last_error() {
        let err = wait_for("the moon", Duration::from_millis(250), || async {
            Err::<bool, _>("no moon")
        })
        .await
        .expect_err("never holds");
        let msg = err.to_string();
        assert!(msg.contains("the moon"), "{msg}");
        assert!(msg.contains("no moon"), "{msg}");
    }

    #[tokio::test]
    async fn holds_for_fails_as_soon_as_the_condition_breaks() {
        holds_for("always", Duration::from_millis(250), || async { true })
            .await
            .expect("holds");
        let mut n = 0;
        let err = holds_for("n below 3", Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move { now < 3 }
        })
        .await
        .expect_err("breaks on the third check");
        assert!(err.after < Duration::from_secs(2), "{err}");
        assert!(err.to_string().contains("n below 3"), "{err}");
    }

    #[test]
    fn parses_status_and_body() {
        let r =
            parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").expect("parse");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "ok");
        assert!(parse_http_response(b"garbage").is_none());
    }
}
