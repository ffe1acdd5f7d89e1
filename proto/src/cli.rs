//! What both binaries do the same way around their `main`: print an error and its
//! causes on one line (the form every fatal error and logged failure takes, so a
//! message reads the same from the hub and the agent) and, with the `cli` feature, set
//! up logging to stderr. Kept here because the proto crate is the one both binaries
//! share; the logging part is behind a feature so the contract stays free of a
//! logging stack for everyone else.

use std::error::Error as StdError;

/// An error chain on one line, each cause once: a cause whose text its parent already
/// quotes (a `{0}`-formatted source) is not repeated, and line breaks inside a message
/// become spaces.
pub fn chain_line<'a>(chain: impl Iterator<Item = &'a (dyn StdError + 'static)>) -> String {
    let mut out = String::new();
    for cause in chain {
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// [`chain_line`] of `e` and its sources.
pub fn error_line(e: &(dyn StdError + 'static)) -> String {
    chain_line(std::iter::successors(Some(e), |&e| e.source()))
}

/// Sets up logging to stderr (`RUST_LOG` filters, default `info`; JSON lines with
/// `json`), coloured only when stderr is a terminal so piped and collected logs carry
/// no escape codes. A second call does nothing.
#[cfg(feature = "cli")]
pub fn init_tracing(json: bool) {
    use std::io::IsTerminal;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // kube's client logs every failed request at ERROR before returning it; the
    // binaries log the same failure once with its context, so kube's copy is off
    // unless asked for.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("kube_client"))
        && let Ok(d) = "kube_client::client::builder=off".parse()
    {
        filter = filter.add_directive(d);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Quoting(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("connection\nrefused")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the catalog")]
    struct Outer(#[source] Quoting);

    #[test]
    fn each_cause_appears_once_on_one_line() {
        assert_eq!(
            error_line(&Outer(Quoting(Inner))),
            "reading the catalog: connection refused"
        );
    }
}
