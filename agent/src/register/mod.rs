//! `vclink-agent register`: what the registration Job runs next to a vCluster. Reads the
//! credential and TLS settings from the mounted registration Secret, points the vCluster's
//! kubeconfig at its Service, fetches Rancher's import manifest and applies it inside the
//! vCluster. On failure it exits non-zero with ONE line saying why (also written to the
//! termination log, which the agent reads back) and never shows the manifest URL.

pub(crate) mod apply;
pub(crate) mod fetch;
pub(crate) mod kubeconfig;

use std::path::Path;
use std::process::ExitCode;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::info;
use vclink_proto::Secret;

use crate::config::RegisterArgs;
use crate::jobs::spec::secret_keys;

/// Why a registration failed; `Display` is the one-line reason a user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The Job's inputs (Secret files, kubeconfig) are missing or wrong.
    #[error("{0}")]
    Input(String),
    /// Fetching the manifest failed.
    #[error("fetching the Rancher import manifest failed: {0}")]
    Fetch(String),
    /// The manifest is not what Rancher serves.
    #[error("the Rancher import manifest is invalid: {0}")]
    Manifest(String),
    /// The vCluster API server could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The vCluster API server refused an object.
    #[error("{0}")]
    Apply(String),
}

fn read(dir: &Path, key: &str, required: bool) -> Result<String, RegisterError> {
    let path = dir.join(key);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(RegisterError::Input(format!(
            "cannot read {} from the registration Secret: {}",
            path.display(),
            fetch::root_cause(&e)
        ))),
    }
}

/// Removes anything of the credential that slipped into a reason, and keeps one line.
pub fn redact(reason: &str, url: &Secret) -> String {
    let mut out = reason.replace(['\n', '\r'], " ");
    let raw = url.expose();
    if !raw.is_empty() {
        out = out.replace(raw, "<manifest URL>");
        if let Some(last) = raw.rsplit('/').next().filter(|s| s.len() >= 8) {
            out = out.replace(last, "<redacted>");
        }
    }
    out
}

/// Does the registration; returns how many objects were applied.
pub async fn run(args: &RegisterArgs) -> Result<usize, (RegisterError, Secret)> {
    let mut url = Secret::default();
    let res = async {
        url = Secret::new(
            read(&args.registration_dir, secret_keys::MANIFEST_URL, true)?
                .trim()
                .to_string(),
        );
        if url.is_empty() {
            return Err(RegisterError::Input(
                "the registration Secret holds an empty manifest-url".into(),
            ));
        }
        let mode =
            fetch::TlsMode::parse(&read(&args.registration_dir, secret_keys::TLS_MODE, false)?)?;
        let trust = mode.trust(&read(&args.registration_dir, secret_keys::CA, false)?);

        let mut kc = Kubeconfig::read_from(&args.kubeconfig).map_err(|e| {
            RegisterError::Input(format!(
                "cannot read the vCluster kubeconfig {}: {}",
                args.kubeconfig.display(),
                fetch::root_cause(&e)
            ))
        })?;
        kubeconfig::rewrite(&mut kc, args.service_url.as_deref());
        let server = kubeconfig::current_server(&kc).unwrap_or_else(|| "(unknown)".into());
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| {
                RegisterError::Input(format!(
                    "the vCluster kubeconfig is unusable: {}",
                    fetch::root_cause(&e)
                ))
            })?;
        let client = kube::Client::try_from(config).map_err(|e| {
            RegisterError::Input(format!(
                "cannot build a client for the vCluster: {}",
                fetch::root_cause(&e)
            ))
        })?;

        let manifest = fetch::fetch_manifest(&url, &trust).await?;
        let objects = apply::parse_manifest(&manifest)?;
        info!(objects = objects.len(), vcluster = %server, "applying the import manifest");
        apply::apply_all(&client, objects, &server).await
    }
    .await;
    res.map_err(|e| (e, url))
}

/// Entry point of the subcommand: runs, reports, and maps to an exit code.
pub(crate) fn main(args: RegisterArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(n) => {
            info!(objects = n, "registration complete");
            ExitCode::SUCCESS
        }
        Err((e, url)) => {
            let line = redact(&e.to_string(), &url);
            eprintln!("{line}");
            // Best effort: the kubelet copies it into the pod status for the agent to read.
            let _ = std::fs::write(&args.termination_log, format!("{line}\n"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_url_and_token_and_newlines() {
        let url = Secret::new("https://rancher.example.com/v3/import/abcdef123456_c-m-1.yaml");
        let r = redact(
            "GET https://rancher.example.com/v3/import/abcdef123456_c-m-1.yaml\nfailed abcdef123456_c-m-1.yaml",
            &url,
        );
        assert!(!r.contains("abcdef123456"), "{r}");
        assert!(!r.contains('\n'));
    }

    #[test]
    fn missing_secret_files_give_a_clear_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read(dir.path(), "manifest-url", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("manifest-url") && e.contains("registration Secret"),
            "{e}"
        );
        assert_eq!(read(dir.path(), "ca.crt", false).expect("optional"), "");
    }
}
