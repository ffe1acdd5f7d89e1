//! Pure message logic of the hub link: the Hello, splitting a snapshot into chunks
//! bounded by count and by encoded size, the minimal Upsert/Remove diff between what the hub was told and what the
//! agent sees now, and checking a hub's Register before it can create anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use vclink_proto::limits::{MAX_CA_LEN, MAX_MESSAGE_BYTES, MAX_SNAPSHOT_CHUNK, MAX_URL_LEN};
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::{AgentMessage, Hello, Register, Remove, Snapshot, Upsert, VCluster};
use vclink_proto::validate::{is_dns1123_label, is_uid};
use vclink_proto::{PROTOCOL_VERSION, Secret};

use crate::jobs::Registration;

/// Optional features this agent supports.
pub const CAPABILITIES: &[&str] = &["chunked-snapshot"];

/// Wraps a message body.
pub fn msg(m: Msg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

/// The first message of every stream.
pub fn hello(cluster_id: &str, instance: &str) -> AgentMessage {
    msg(Msg::Hello(Hello {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: PROTOCOL_VERSION,
        cluster_id: cluster_id.to_string(),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        instance: instance.chars().take(253).collect(),
    }))
}

/// Most encoded bytes of vClusters in one snapshot chunk: half the message limit, so the
/// envelope and any estimate error stay far from it (500 vClusters with 64 long labels
/// each would otherwise exceed [`MAX_MESSAGE_BYTES`]).
pub const MAX_CHUNK_BYTES: usize = MAX_MESSAGE_BYTES / 2;

/// Splits the full list into chunks of at most [`MAX_SNAPSHOT_CHUNK`] vClusters and at
/// most [`MAX_CHUNK_BYTES`] of encoded vClusters (a vCluster always fits: validation
/// bounds each far below that); the last one has `last = true`, and an empty list is one
/// empty chunk with `last = true`.
pub fn snapshot_chunks(
    generation: u64,
    vclusters: &BTreeMap<String, Arc<VCluster>>,
) -> Vec<Snapshot> {
    let mut chunks: Vec<Vec<VCluster>> = vec![Vec::new()];
    let mut bytes = 0;
    for v in vclusters.values() {
        // Field tag and length prefix included, as the Snapshot encodes it.
        let len = prost::length_delimiter_len(v.encoded_len()) + 1 + v.encoded_len();
        let current = chunks.last().map_or(0, Vec::len);
        if current > 0 && (current >= MAX_SNAPSHOT_CHUNK || bytes + len > MAX_CHUNK_BYTES) {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(c) = chunks.last_mut() {
            c.push(VCluster::clone(v));
        }
    }
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, vclusters)| Snapshot {
            generation,
            vclusters,
            last: i + 1 == n,
        })
        .collect()
}

/// Messages that bring the hub from `sent` to `current`: an Upsert for every new or
/// changed vCluster (an exclusion set or lifted is a change), a Remove for every vanished
/// one, nothing for unchanged ones. The catalog keeps excluded vClusters and drops one
/// only once its Service's deletion is confirmed, so a Remove always means "deleted".
pub fn diff(
    sent: &BTreeMap<String, Arc<VCluster>>,
    current: &BTreeMap<String, Arc<VCluster>>,
) -> Vec<AgentMessage> {
    let mut out = Vec::new();
    for (uid, v) in current {
        // Unchanged entries are shared with the catalog the hub was sent: no deep compare.
        if !sent.get(uid).is_some_and(|s| Arc::ptr_eq(s, v) || s == v) {
            out.push(msg(Msg::Upsert(Upsert {
                vcluster: Some(VCluster::clone(v)),
            })));
        }
    }
    for (uid, v) in sent {
        if !current.contains_key(uid) {
            out.push(msg(Msg::Remove(Remove {
                uid: uid.clone(),
                namespace: v.namespace.clone(),
                name: v.name.clone(),
            })));
        }
    }
    out
}

/// Why a Register was refused (never echoes the credential).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Register from the hub: {0}")]
pub struct BadRegister(pub &'static str);

/// Checks a hub's Register and moves the credential into a [`Secret`].
pub fn registration(r: Register) -> Result<Registration, BadRegister> {
    if !is_uid(&r.uid) {
        return Err(BadRegister("uid is not a Kubernetes UID"));
    }
    if !is_dns1123_label(&r.rancher_cluster_id) {
        return Err(BadRegister("rancher_cluster_id is not a DNS-1123 label"));
    }
    if r.cluster_name.len() > 253 {
        return Err(BadRegister("cluster_name is too long"));
    }
    if r.manifest_url.len() > MAX_URL_LEN || !r.manifest_url.starts_with("https://") {
        return Err(BadRegister(
            "manifest_url must be an https:// URL of bounded length",
        ));
    }
    if r.ca_certs.len() > MAX_CA_LEN {
        return Err(BadRegister("ca_certs is too large"));
    }
    let tls_mode = r.tls_mode();
    Ok(Registration {
        uid: r.uid,
        rancher_cluster_id: r.rancher_cluster_id,
        cluster_name: r.cluster_name,
        manifest_url: Secret::new(r.manifest_url),
        tls_mode,
        ca_certs: r.ca_certs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vclink_proto::v1::TlsMode;

    fn vc(i: usize) -> VCluster {
        VCluster {
            uid: format!("00000000-0000-0000-0000-{i:012}"),
            namespace: "ns".into(),
            name: format!("vc{i}"),
            ..Default::default()
        }
    }

    fn map(n: usize) -> BTreeMap<String, Arc<VCluster>> {
        (0..n)
            .map(|i| (vc(i).uid.clone(), Arc::new(vc(i))))
            .collect()
    }

    #[test]
    fn empty_snapshot_is_one_final_chunk() {
        let c = snapshot_chunks(7, &BTreeMap::new());
        assert_eq!(
            c,
            vec![Snapshot {
                generation: 7,
                vclusters: vec![],
                last: true
            }]
        );
    }

    #[test]
    fn large_snapshots_are_chunked_with_one_generation() {
        let c = snapshot_chunks(3, &map(MAX_SNAPSHOT_CHUNK * 2 + 1));
        assert_eq!(c.len(), 3);
        assert!(
            c.iter()
                .all(|s| s.generation == 3 && s.vclusters.len() <= MAX_SNAPSHOT_CHUNK)
        );
        assert_eq!(
            c.iter().map(|s| s.last).collect::<Vec<_>>(),
            vec![false, false, true]
        );
        assert_eq!(
            c.iter().map(|s| s.vclusters.len()).sum::<usize>(),
            MAX_SNAPSHOT_CHUNK * 2 + 1
        );
        for s in &c {
            assert_eq!(vclink_proto::validate::snapshot(s), Ok(()));
        }
    }

    #[test]
    fn big_vclusters_are_chunked_by_size() {
        // 500 vClusters with 64 labels of 63-character values: ~3 MiB in all.
        let all: BTreeMap<String, Arc<VCluster>> = (0..MAX_SNAPSHOT_CHUNK)
            .map(|i| {
                let mut v = vc(i);
                v.labels = (0..vclink_proto::validate::MAX_LABELS)
                    .map(|l| (format!("example.org/label-{l:02}"), "v".repeat(63)))
                    .collect();
                (v.uid.clone(), Arc::new(v))
            })
            .collect();
        assert!(
            all.values().map(|v| v.encoded_len()).sum::<usize>() > MAX_MESSAGE_BYTES,
            "the test needs a snapshot over the limit"
        );
        let c = snapshot_chunks(1, &all);
        assert!(c.len() > 1, "{}", c.len());
        for s in &c {
            let m = msg(Msg::Snapshot(s.clone()));
            assert!(
                m.encoded_len() <= MAX_CHUNK_BYTES + 64,
                "{}",
                m.encoded_len()
            );
            assert_eq!(vclink_proto::validate::snapshot(s), Ok(()));
        }
        assert_eq!(
            c.iter().map(|s| s.vclusters.len()).sum::<usize>(),
            all.len()
        );
        assert_eq!(c.iter().filter(|s| s.last).count(), 1);
        assert!(c.last().is_some_and(|s| s.last));
        let order: Vec<&str> = c
            .iter()
            .flat_map(|s| &s.vclusters)
            .map(|v| v.uid.as_str())
            .collect();
        assert_eq!(order, all.keys().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn diff_sends_only_changes() {
        let sent = map(3);
        assert!(diff(&sent, &sent).is_empty());
        let mut current = sent.clone();
        current.remove(&vc(0).uid);
        let mut changed = vc(1);
        changed.project_id = "c-m-abcd1234:p-xk2lm".into();
        current.insert(vc(1).uid.clone(), Arc::new(changed));
        // An equal entry in a new allocation is no change either.
        current.insert(vc(2).uid.clone(), Arc::new(vc(2)));
        current.insert(vc(5).uid.clone(), Arc::new(vc(5)));
        let d = diff(&sent, &current);
        let upserts: Vec<_> = d
            .iter()
            .filter_map(|m| match &m.msg {
                Some(Msg::Upsert(u)) => u.vcluster.as_ref().map(|v| v.name.clone()),
                _ => None,
            })
            .collect();
        let removes: Vec<_> = d
            .iter()
            .filter_map(|m| match &m.msg {
                Some(Msg::Remove(r)) => Some(r.name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(upserts, vec!["vc1", "vc5"]);
        assert_eq!(removes, vec!["vc0"]);
    }

    #[test]
    fn an_exclusion_is_an_upsert_not_a_remove() {
        let sent = map(1);
        let mut current = sent.clone();
        let excluded = current.get_mut(&vc(0).uid).expect("vc0");
        Arc::make_mut(excluded).exclusion = Some(vclink_proto::v1::Exclusion {
            kind: vclink_proto::v1::exclusion::Kind::Excluded as i32,
            reason: "skip-import".into(),
        });
        let d = diff(&sent, &current);
        assert_eq!(d.len(), 1);
        let Some(Msg::Upsert(u)) = &d[0].msg else {
            panic!("not an upsert: {d:?}")
        };
        assert!(
            u.vcluster
                .as_ref()
                .and_then(|v| v.exclusion.as_ref())
                .is_some()
        );
    }

    #[test]
    fn hello_carries_protocol_and_identity() {
        let Some(Msg::Hello(h)) = hello("c-m-abcd1234", "agent-0").msg else {
            panic!("not a hello")
        };
        assert_eq!(h.protocol_version, PROTOCOL_VERSION);
        assert_eq!(h.cluster_id, "c-m-abcd1234");
        assert_eq!(vclink_proto::validate::hello(&h), Ok(()));
    }

    #[test]
    fn register_is_checked_and_the_url_is_hidden() {
        let good = Register {
            uid: vc(1).uid,
            rancher_cluster_id: "c-m-abcd1234".into(),
            cluster_name: "x".into(),
            manifest_url: "https://rancher/v3/import/tok_c-m-abcd1234.yaml".into(),
            tls_mode: TlsMode::Insecure as i32,
            ca_certs: String::new(),
        };
        let r = registration(good.clone()).expect("valid");
        assert_eq!(r.tls_mode, TlsMode::Insecure);
        assert!(!format!("{r:?}").contains("tok_"));
        let bad = Register {
            manifest_url: "http://rancher/x".into(),
            ..good.clone()
        };
        let e = registration(bad).unwrap_err().to_string();
        assert!(!e.contains("rancher/x"), "{e}");
        assert!(
            registration(Register {
                uid: "nope".into(),
                ..good
            })
            .is_err()
        );
    }
}
