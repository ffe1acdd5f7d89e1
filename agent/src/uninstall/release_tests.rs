use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

const MANIFEST: &str = "---\n# Source: vcluster/templates/serviceaccount.yaml\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: vc-vc1\n  namespace: team-a\n---\n# Source: vcluster/templates/service.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: vc1\n  namespace: team-a\n  labels:\n    app: vcluster\n    release: vc1\n---\n# Source: vcluster/templates/statefulset.yaml\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: vc1\n  namespace: team-a\n---\n# Source: empty.yaml\n---\n";

/// The `release` value Helm's Secrets driver stores: the release as JSON, gzip at best
/// compression, base64 with the standard alphabet (Kubernetes base64s it once more on
/// the wire; [`ByteString`] holds the bytes after that).
pub(crate) fn helm_encode(release: &serde_json::Value) -> Vec<u8> {
    let json = serde_json::to_vec(release).expect("json");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json).expect("gzip");
    let gz = gz.finish().expect("gzip");
    base64::engine::general_purpose::STANDARD
        .encode(gz)
        .into_bytes()
}

fn release_json(name: &str, ns: &str, version: u64) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "info": {"status": "deployed", "description": "Install complete"},
        "chart": {"metadata": {"name": "vcluster", "version": "0.24.1"}},
        "config": {},
        "manifest": MANIFEST,
        "version": version,
        "namespace": ns,
    })
}

fn storage_secret(release: &str, version: u64, data: Vec<u8>) -> Secret {
    let labels: BTreeMap<String, String> =
        [("owner", "helm"), ("name", release), ("status", "deployed")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("version".to_string(), version.to_string())])
            .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("sh.helm.release.v1.{release}.v{version}")),
            labels: Some(labels),
            ..Default::default()
        },
        type_: Some(RELEASE_SECRET_TYPE.into()),
        data: Some(BTreeMap::from([("release".into(), ByteString(data))])),
        ..Default::default()
    }
}

#[test]
fn a_release_encoded_like_helm_decodes() {
    let r = decode(&helm_encode(&release_json("vc1", "team-a", 3))).expect("decodes");
    assert_eq!(
        (r.name.as_str(), r.namespace.as_str(), r.version),
        ("vc1", "team-a", 3)
    );
    assert_eq!(r.manifest, MANIFEST);
    let objs = listed(&r.manifest).expect("yaml");
    assert_eq!(
        objs.iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect::<Vec<_>>(),
        vec!["ServiceAccount/vc-vc1", "Service/vc1", "StatefulSet/vc1"]
    );
}

#[test]
fn uncompressed_json_is_accepted_and_garbage_is_an_error() {
    let plain = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&release_json("vc1", "team-a", 1)).expect("json"));
    assert_eq!(decode(plain.as_bytes()).expect("plain").name, "vc1");
    assert_eq!(decode(b"not base64!"), Err(DecodeError::Base64));
    let not_json = base64::engine::general_purpose::STANDARD.encode(b"hello");
    assert!(matches!(
        decode(not_json.as_bytes()),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn a_gzip_bomb_is_refused() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1024 * 1024];
    for _ in 0..17 {
        gz.write_all(&zeros).expect("gzip");
    }
    let data = base64::engine::general_purpose::STANDARD
        .encode(gz.finish().expect("gzip"))
        .into_bytes();
    assert_eq!(decode(&data), Err(DecodeError::Gzip));
}

#[test]
fn the_latest_revision_of_this_release_is_read() {
    let secrets = vec![
        storage_secret("vc1", 1, helm_encode(&release_json("vc1", "team-a", 1))),
        storage_secret("vc1", 10, helm_encode(&release_json("vc1", "team-a", 10))),
        storage_secret("vc1", 2, b"broken, but not the latest".to_vec()),
    ];
    let (r, names) = latest(&secrets, "vc1", "team-a")
        .expect("ok")
        .expect("found");
    assert_eq!(r.version, 10, "10 sorts after 2 as a number");
    assert_eq!(
        names,
        vec![
            "sh.helm.release.v1.vc1.v1",
            "sh.helm.release.v1.vc1.v2",
            "sh.helm.release.v1.vc1.v10"
        ]
    );
}

#[test]
fn secrets_that_are_not_helms_record_of_this_release_are_ignored() {
    let good = storage_secret("vc1", 1, helm_encode(&release_json("vc1", "team-a", 1)));
    let mut wrong_type = good.clone();
    wrong_type.type_ = Some("Opaque".into());
    let mut other_release = good.clone();
    other_release.metadata.name = Some("sh.helm.release.v1.vc10.v1".into());
    let mut bad_version_label = good.clone();
    if let Some(l) = bad_version_label.metadata.labels.as_mut() {
        l.insert("version".into(), "7".into());
    }
    for s in [wrong_type, other_release, bad_version_label] {
        assert_eq!(revision_of(&s, "vc1"), None, "{:?}", s.metadata);
    }
    assert_eq!(revision_of(&good, "vc1"), Some(1));
    assert_eq!(latest(&[], "vc1", "team-a"), Ok(None));
}

#[test]
fn a_secret_holding_another_release_is_an_error() {
    let s = storage_secret("vc1", 1, helm_encode(&release_json("vc2", "team-a", 1)));
    let e = latest(&[s], "vc1", "team-a").unwrap_err();
    assert!(e.contains("not team-a/vc1"), "{e}");
    let s = storage_secret("vc1", 1, helm_encode(&release_json("vc1", "team-b", 1)));
    assert!(latest(&[s], "vc1", "team-a").is_err());
}

#[test]
fn bad_manifest_yaml_is_an_error_and_odd_documents_are_skipped() {
    assert!(listed("a: [unclosed").is_err());
    let odd = "---\n- a list\n---\nkind: ConfigMap\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n";
    let objs = listed(odd).expect("yaml");
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0].name, "ok");
}
