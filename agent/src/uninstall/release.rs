//! Reading a Helm release from its storage Secrets: Helm keeps each revision of a
//! release in a Secret `sh.helm.release.v1.<release>.v<N>` of type `helm.sh/release.v1`,
//! labelled `owner=helm`, `name=<release>`, `version=<N>`, whose `release` key holds the
//! release as JSON, gzip-compressed, then base64-encoded (standard alphabet) — on top of
//! the base64 Kubernetes itself applies to Secret data. The JSON's `manifest` is the
//! multi-document YAML Helm applied. Pure (no I/O) so it is unit-tested on payloads built
//! the way Helm builds them.

use std::io::Read;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

/// Type of Helm's release storage Secrets.
pub const RELEASE_SECRET_TYPE: &str = "helm.sh/release.v1";
/// Largest decompressed release the agent reads (a vCluster release is tens of KiB;
/// the bound keeps a hostile "gzip bomb" from exhausting the agent's memory).
const MAX_RELEASE_BYTES: u64 = 16 * 1024 * 1024;

/// The label selector of the storage Secrets of `release` (list them with it).
pub fn secret_selector(release: &str) -> String {
    format!("owner=helm,name={release}")
}

/// The name prefix of the storage Secrets of `release`.
pub fn secret_prefix(release: &str) -> String {
    format!("sh.helm.release.v1.{release}.v")
}

/// The fields of a Helm release the uninstall needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Release {
    /// Release name.
    pub name: String,
    /// Namespace it was installed in.
    #[serde(default)]
    pub namespace: String,
    /// Revision.
    #[serde(default)]
    pub version: u64,
    /// The rendered objects, multi-document YAML.
    #[serde(default)]
    pub manifest: String,
}

/// One object the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind`, e.g. `StatefulSet`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (empty: the release's namespace, or cluster-scoped).
    pub namespace: String,
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)?;
        if !self.namespace.is_empty() {
            write!(f, " (namespace {})", self.namespace)?;
        }
        Ok(())
    }
}

/// Why a release could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No `release` key.
    #[error("it has no `release` data")]
    NoData,
    /// Not base64.
    #[error("its `release` data is not base64")]
    Base64,
    /// Not gzip, or larger than the agent reads.
    #[error("its `release` data is not a gzip stream of at most 16 MiB")]
    Gzip,
    /// Not a Helm release's JSON.
    #[error("its `release` data is not a Helm release: {0}")]
    Json(String),
}

/// Decodes the `release` value of a storage Secret (the bytes after Kubernetes' own
/// base64): base64 → gzip → JSON. Like Helm, it also accepts an uncompressed JSON body.
pub fn decode(data: &[u8]) -> Result<Release, DecodeError> {
    let text: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|_| DecodeError::Base64)?;
    let json = if raw.starts_with(&[0x1f, 0x8b, 0x08]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_RELEASE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|_| DecodeError::Gzip)?;
        if out.len() as u64 > MAX_RELEASE_BYTES {
            return Err(DecodeError::Gzip);
        }
        out
    } else {
        raw
    };
    serde_json::from_slice(&json).map_err(|e| DecodeError::Json(e.to_string()))
}

/// The revision of a storage Secret of `release` in `namespace`: only a Secret of
/// Helm's type, labels and name counts (others are not Helm's record of this release).
pub fn revision_of(secret: &Secret, release: &str) -> Option<u64> {
    if secret.type_.as_deref() != Some(RELEASE_SECRET_TYPE) {
        return None;
    }
    let labels = secret.metadata.labels.as_ref()?;
    if labels.get("owner").map(String::as_str) != Some("helm")
        || labels.get("name").map(String::as_str) != Some(release)
    {
        return None;
    }
    let name = secret.metadata.name.as_deref()?;
    let n: u64 = name.strip_prefix(&secret_prefix(release))?.parse().ok()?;
    match labels.get("version") {
        Some(v) if v.parse::<u64>().ok() != Some(n) => None,
        _ => Some(n),
    }
}

/// The latest release among `secrets` (the storage Secrets of `release` in
/// `namespace`), decoded and checked to be that release; with the names of all storage
/// Secrets of the release (what is deleted last).
pub fn latest(
    secrets: &[Secret],
    release: &str,
    namespace: &str,
) -> Result<Option<(Release, Vec<String>)>, String> {
    let mut revisions: Vec<(u64, &Secret)> = secrets
        .iter()
        .filter_map(|s| revision_of(s, release).map(|n| (n, s)))
        .collect();
    revisions.sort_by_key(|(n, _)| *n);
    let Some((n, newest)) = revisions.last() else {
        return Ok(None);
    };
    let name = newest.metadata.name.clone().unwrap_or_default();
    let data = newest
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .ok_or_else(|| format!("Helm release Secret {name}: {}", DecodeError::NoData))?;
    let rel = decode(&data.0).map_err(|e| format!("Helm release Secret {name}: {e}"))?;
    if rel.name != release || (!rel.namespace.is_empty() && rel.namespace != namespace) {
        return Err(format!(
            "Helm release Secret {name} holds release {}/{}, not {namespace}/{release}",
            rel.namespace, rel.name
        ));
    }
    if rel.version != 0 && rel.version != *n {
        return Err(format!(
            "Helm release Secret {name} holds revision {}, not {n}",
            rel.version
        ));
    }
    let names = revisions
        .iter()
        .filter_map(|(_, s)| s.metadata.name.clone())
        .collect();
    Ok(Some((rel, names)))
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: DocMeta,
}

#[derive(Deserialize, Default)]
struct DocMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

/// The objects a manifest lists, in its order; documents that are empty, comments
/// only, or not an object with a kind and a name are skipped (Helm skips the first
/// kinds too; the last it could not have applied). A `List` is not expanded: Helm
/// charts do not render them and vCluster's does not.
pub fn listed(manifest: &str) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(manifest) {
        let value = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|e| format!("the release manifest is not YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        let Ok(d) = serde_yaml_ng::from_value::<Doc>(value) else {
            continue;
        };
        if d.kind.is_empty() || d.metadata.name.is_empty() || d.api_version.is_empty() {
            continue;
        }
        out.push(Listed {
            api_version: d.api_version,
            kind: d.kind,
            name: d.metadata.name,
            namespace: d.metadata.namespace,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "release_tests.rs"]
mod tests;
