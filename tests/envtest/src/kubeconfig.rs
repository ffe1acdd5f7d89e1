//! Kubeconfig documents and kube clients for a cluster.
//!
//! Every client goes through a `Kubeconfig` (CA, client certificate or token embedded
//! as data) and `kube::Config::from_custom_kubeconfig`, so the files we hand to other
//! processes and the clients we build in-process authenticate the same way.

use std::path::Path;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::ClientIdentity;

/// How a kubeconfig authenticates.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// A client certificate + key.
    Cert(&'a ClientIdentity),
    /// A bearer token.
    Token(&'a str),
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The kubeconfig as a JSON value (YAML is a superset, so it serializes either way).
fn document(name: &str, server: &str, ca_pem: &str, auth: Auth<'_>) -> serde_json::Value {
    let user = match auth {
        Auth::Cert(id) => serde_json::json!({
            "client-certificate-data": b64(&id.cert_pem),
            "client-key-data": b64(&id.key_pem),
        }),
        Auth::Token(t) => serde_json::json!({ "token": t }),
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": name, "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{ "name": name, "user": user }],
        "contexts": [{ "name": name, "context": { "cluster": name, "user": name } }],
        "current-context": name,
    })
}

/// Kubeconfig YAML text.
pub(crate) fn yaml(name: &str, server: &str, ca_pem: &str, auth: Auth<'_>) -> String {
    // A JSON value of strings/arrays/objects always serializes.
    serde_yaml_ng::to_string(&document(name, server, ca_pem, auth)).unwrap_or_default()
}

/// Writes a kubeconfig file readable only by the owner (it holds a private key).
pub(crate) fn write(
    path: &Path,
    name: &str,
    server: &str,
    ca_pem: &str,
    id: &ClientIdentity,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(yaml(name, server, ca_pem, Auth::Cert(id)).as_bytes())
}

/// A kube client for the given server and identity.
pub(crate) async fn client(
    name: &str,
    server: &str,
    ca_pem: &str,
    auth: Auth<'_>,
) -> anyhow::Result<kube::Client> {
    let kc: Kubeconfig = serde_json::from_value(document(name, server, ca_pem, auth))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
