//! Materialises the volumes a Job's pod mounts — what the kubelet would do — into a
//! local directory per volume: Secret and ConfigMap volumes (honouring `items`, their
//! `path`/`mode`, `defaultMode` and `optional`) and emptyDir. Other volume kinds are left
//! as empty directories; nothing vclink starts uses them.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Secret, Volume};
use kube::Api;

/// Kubernetes' default file mode for Secret and ConfigMap volumes (0644).
const DEFAULT_MODE: i32 = 0o644;

/// A file to write into a volume directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Path relative to the volume root.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Unix permission bits.
    pub mode: u32,
}

/// The files of a key/value volume: every key, or only `items` (a missing item key is an
/// error unless the volume is optional, as with the kubelet).
pub fn files_for(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Vec<VolumeFile>, String> {
    let default_mode = default_mode.unwrap_or(DEFAULT_MODE) as u32 & 0o777;
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data
            .iter()
            .map(|(k, v)| VolumeFile {
                path: k.clone(),
                data: v.clone(),
                mode: default_mode,
            })
            .collect());
    };
    let mut out = Vec::new();
    for it in items {
        match data.get(&it.key) {
            Some(v) => out.push(VolumeFile {
                path: it.path.clone(),
                data: v.clone(),
                mode: it.mode.map(|m| m as u32 & 0o777).unwrap_or(default_mode),
            }),
            None if optional => {}
            None => return Err(format!("references non-existent key {}", it.key)),
        }
    }
    Ok(out)
}

/// Writes `files` below `dir` (created), refusing paths that escape it.
pub fn write_files(dir: &Path, files: &[VolumeFile]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in files {
        if f.path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad volume path {}", f.path),
            ));
        }
        let p = dir.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &f.data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// Why a volume could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeError {
    /// The Secret/ConfigMap does not exist (yet): the kubelet keeps retrying.
    Missing(String),
    /// Anything else.
    Failed(String),
}

impl VolumeError {
    /// The message, in the kubelet's wording.
    pub fn message(&self) -> &str {
        match self {
            VolumeError::Missing(m) | VolumeError::Failed(m) => m,
        }
    }
}

/// Reads the volume's source through `client` and writes it to `root/vol-<volume name>`.
/// Returns the local directory.
pub async fn materialise(
    client: &kube::Client,
    namespace: &str,
    vol: &Volume,
    root: &Path,
) -> Result<PathBuf, VolumeError> {
    use VolumeError::{Failed, Missing};
    let dir = root.join(format!("vol-{}", vol.name));
    let files = if let Some(s) = &vol.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional == Some(true);
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match api
            .get_opt(&name)
            .await
            .map_err(|e| Failed(format!("reading secret {name}: {e}")))?
        {
            Some(sec) => {
                let data: BTreeMap<String, Vec<u8>> = sec
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                files_for(&data, s.items.as_deref(), s.default_mode, optional)
                    .map_err(|e| Failed(format!("secret {name} {e}")))?
            }
            None if optional => Vec::new(),
            None => {
                return Err(Missing(format!(
                    "MountVolume.SetUp failed for volume \"{}\": secret \"{name}\" not found",
                    vol.name
                )));
            }
        }
    } else if let Some(c) = &vol.config_map {
        let name = c.name.clone();
        let optional = c.optional == Some(true);
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        match api
            .get_opt(&name)
            .await
            .map_err(|e| Failed(format!("reading configmap {name}: {e}")))?
        {
            Some(cm) => {
                let mut data: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                files_for(&data, c.items.as_deref(), c.default_mode, optional)
                    .map_err(|e| Failed(format!("configmap {name} {e}")))?
            }
            None if optional => Vec::new(),
            None => {
                return Err(Missing(format!(
                    "MountVolume.SetUp failed for volume \"{}\": configmap \"{name}\" not found",
                    vol.name
                )));
            }
        }
    } else {
        Vec::new()
    };
    write_files(&dir, &files).map_err(|e| Failed(format!("writing volume {}: {e}", vol.name)))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("config".to_owned(), b"kc".to_vec()),
            ("client-key".to_owned(), b"k".to_vec()),
        ])
    }

    #[test]
    fn all_keys_with_default_mode_when_no_items() {
        let f = files_for(&data(), None, Some(0o400), false).expect("files");
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.mode == 0o400));
    }

    #[test]
    fn items_select_rename_and_set_modes() {
        let items = [KeyToPath {
            key: "config".into(),
            path: "sub/kubeconfig".into(),
            mode: Some(0o440),
        }];
        let f = files_for(&data(), Some(&items), None, false).expect("files");
        assert_eq!(
            f,
            [VolumeFile {
                path: "sub/kubeconfig".into(),
                data: b"kc".to_vec(),
                mode: 0o440
            }]
        );
        let missing = [KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }];
        assert!(files_for(&data(), Some(&missing), None, false).is_err());
        assert_eq!(files_for(&data(), Some(&missing), None, true), Ok(vec![]));
    }

    #[test]
    fn writes_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = files_for(&data(), None, None, false).expect("files");
        write_files(dir.path(), &f).expect("write");
        assert_eq!(
            std::fs::read(dir.path().join("config")).expect("read"),
            b"kc"
        );
        let mode = std::fs::metadata(dir.path().join("config"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
        let bad = [VolumeFile {
            path: "../x".into(),
            data: vec![],
            mode: 0o644,
        }];
        assert!(write_files(dir.path(), &bad).is_err());
    }
}
