//! Start-up checks of the hub's own inputs, run before the first request to the API
//! server or Rancher: a wrong flag or an unreadable file is reported as such (naming the
//! flag and path) instead of hiding behind a connection error or never being reached,
//! e.g. on a standby that waits for the lease before it would load its certificate.

use anyhow::Context;

use crate::config::{AgentAuthMode, Args};

/// Checks every input that needs no network; the error names the flag and the path.
pub fn check(args: &Args) -> anyhow::Result<()> {
    let provider = rustls::crypto::ring::default_provider();
    crate::grpc::certreload::load_pair(&args.tls_cert_file, &args.tls_key_file, &provider)?;
    crate::owners::RoleMapping::from_arg(args.owner_role_mapping.as_deref())
        .context("--owner-role-mapping")?;
    if let Some(path) = &args.rancher_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading --rancher-ca-file {}", path.display()))?;
        crate::identity::proxy::tls_config(Some(&pem))
            .with_context(|| format!("--rancher-ca-file {}", path.display()))?;
    }
    if args.agent_auth == AgentAuthMode::TokenReview {
        let url = args.rancher_url.as_deref().context(
            "--agent-auth=tokenreview needs --rancher-url (Rancher's server URL) to reach its cluster proxy",
        )?;
        anyhow::ensure!(
            url.starts_with("https://"),
            "--rancher-url {url:?} must be an https:// URL of Rancher"
        );
        let sa_ok = args
            .agent_service_account
            .split_once('/')
            .is_some_and(|(ns, name)| {
                vclink_proto::validate::is_dns1123_label(ns) && !name.is_empty()
            });
        anyhow::ensure!(
            sa_ok,
            "--agent-service-account {:?} must be <namespace>/<name>, e.g. vclink-system/vclink-agent",
            args.agent_service_account
        );
        match (&args.rancher_token_file, &args.rancher_user) {
            (Some(path), None) => {
                // Only that it is readable: its content is a credential and never printed.
                std::fs::metadata(path).with_context(|| {
                    format!(
                        "--rancher-token-file {} cannot be read; mount the Rancher token Secret there",
                        path.display()
                    )
                })?;
            }
            (None, Some(_)) => {}
            _ => anyhow::bail!(
                "--agent-auth=tokenreview needs exactly one of --rancher-user (the hub issues and rotates its own token) or --rancher-token-file"
            ),
        }
    }
    Ok(())
}

/// Whether `e` failed because a server could not be reached (refused, DNS, timeout), so
/// the caller adds which server.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.to_string().contains("client error (Connect)")
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                )
            })
    })
}
