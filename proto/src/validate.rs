//! Validation of every field an agent sends. The hub runs these before a message can
//! touch any state; the error text says which field is wrong and why, and never echoes
//! more than a short, sanitized prefix of the offending value.

use crate::limits::{MAX_MESSAGE_TEXT, MAX_SNAPSHOT_CHUNK};
use crate::v1::{Hello, RegistrationProgress, Remove, Snapshot, VCluster};

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct Invalid {
    /// Dotted path of the field, e.g. `snapshot.vclusters[3].namespace`.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

type Result<T = ()> = std::result::Result<T, Invalid>;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// DNS-1123 label: 1–63 chars of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Kubernetes UID: the canonical 8-4-4-4-12 lowercase hex form.
pub fn is_uid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

fn label(field: &str, v: &str) -> Result {
    if is_dns1123_label(v) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "must be a DNS-1123 label (≤63 chars of a-z, 0-9, '-'), got {}",
                preview(v)
            ),
        ))
    }
}

fn optional_label(field: &str, v: &str) -> Result {
    if v.is_empty() {
        Ok(())
    } else {
        label(field, v)
    }
}

fn uid(field: &str, v: &str) -> Result {
    if is_uid(v) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a Kubernetes UID, got {}", preview(v)),
        ))
    }
}

fn text(field: &str, v: &str, max: usize) -> Result {
    if v.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

/// A short printable preview of untrusted input for error messages.
fn preview(v: &str) -> String {
    let p: String = v
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if v.chars().count() > 40 {
        format!("{p:?}…")
    } else {
        format!("{p:?}")
    }
}

/// Validates a Hello.
pub fn hello(h: &Hello) -> Result {
    label("hello.cluster_id", &h.cluster_id)?;
    text("hello.agent_version", &h.agent_version, 64)?;
    text("hello.instance", &h.instance, 253)?;
    if h.capabilities.len() > 32 {
        return Err(invalid("hello.capabilities", "more than 32 entries"));
    }
    for (i, c) in h.capabilities.iter().enumerate() {
        text(&format!("hello.capabilities[{i}]"), c, 64)?;
    }
    Ok(())
}

/// Validates one vCluster description.
pub fn vcluster(field: &str, v: &VCluster) -> Result {
    uid(&format!("{field}.uid"), &v.uid)?;
    label(&format!("{field}.namespace"), &v.namespace)?;
    label(&format!("{field}.name"), &v.name)?;
    if !v.project_id.is_empty() {
        let ok = v.project_id.len() <= 127
            && v.project_id
                .split_once(':')
                .is_some_and(|(c, p)| is_dns1123_label(c) && is_dns1123_label(p));
        if !ok {
            return Err(invalid(
                format!("{field}.project_id"),
                format!(
                    "must be \"<cluster-id>:<project-id>\", got {}",
                    preview(&v.project_id)
                ),
            ));
        }
    }
    optional_label(&format!("{field}.requested_name"), &v.requested_name)?;
    optional_label(
        &format!("{field}.recorded_cluster_id"),
        &v.recorded_cluster_id,
    )?;
    optional_label(&format!("{field}.requested_prefix"), &v.requested_prefix)?;
    if v.requested_prefix.len() > MAX_PREFIX {
        return Err(invalid(
            format!("{field}.requested_prefix"),
            format!("longer than {MAX_PREFIX} characters"),
        ));
    }
    labels(&format!("{field}.labels"), &v.labels)?;
    if let Some(q) = &v.quota {
        optional_label(&format!("{field}.quota.name"), &q.name)?;
        if q.hard.len() > MAX_QUOTA_ENTRIES {
            return Err(invalid(
                format!("{field}.quota.hard"),
                format!("more than {MAX_QUOTA_ENTRIES} entries"),
            ));
        }
        for (k, val) in &q.hard {
            if !is_label_key(k) {
                return Err(invalid(
                    format!("{field}.quota.hard"),
                    format!("resource name {} is not a qualified name", preview(k)),
                ));
            }
            text(&format!("{field}.quota.hard[{k}]"), val, 64)?;
        }
    }
    text(
        &format!("{field}.vcluster_version"),
        &v.vcluster_version,
        64,
    )?;
    if let Some(x) = &v.exclusion {
        // An unknown kind is allowed (a newer agent's); it must be treated as EXCLUDED.
        text(
            &format!("{field}.exclusion.reason"),
            &x.reason,
            MAX_MESSAGE_TEXT,
        )?;
    }
    Ok(())
}

/// Longest name prefix: leaves room for `-<namespace>-<name>` (the name is shortened
/// with a hash suffix when the whole is over 63 characters anyway).
pub const MAX_PREFIX: usize = 40;
/// Most labels one vCluster may report (Kubernetes sets no limit; Services with more are
/// reported with none of them and a reason the agent shows).
pub const MAX_LABELS: usize = 64;
/// Most `spec.hard` entries of a reported ResourceQuota.
pub const MAX_QUOTA_ENTRIES: usize = 32;

/// A Kubernetes qualified name with an optional DNS-subdomain prefix
/// (`example.org/team`, `app`): the rule for label keys and resource names.
pub fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix
        .is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns1123_label));
    name_ok && prefix_ok
}

/// A Kubernetes label value: empty, or ≤ 63 of `[A-Za-z0-9-_.]` starting and ending
/// alphanumeric.
pub fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

fn labels(field: &str, m: &std::collections::BTreeMap<String, String>) -> Result {
    if m.len() > MAX_LABELS {
        return Err(invalid(field, format!("more than {MAX_LABELS} entries")));
    }
    for (k, v) in m {
        if !is_label_key(k) {
            return Err(invalid(
                field,
                format!("key {} is not a valid label key", preview(k)),
            ));
        }
        if !is_label_value(v) {
            return Err(invalid(
                field,
                format!("value of {} is not a valid label value", preview(k)),
            ));
        }
    }
    Ok(())
}

/// Validates a snapshot chunk.
pub fn snapshot(s: &Snapshot) -> Result {
    if s.vclusters.len() > MAX_SNAPSHOT_CHUNK {
        return Err(invalid(
            "snapshot.vclusters",
            format!("more than {MAX_SNAPSHOT_CHUNK} entries in one chunk"),
        ));
    }
    for (i, v) in s.vclusters.iter().enumerate() {
        vcluster(&format!("snapshot.vclusters[{i}]"), v)?;
    }
    Ok(())
}

/// Validates a removal.
pub fn remove(r: &Remove) -> Result {
    uid("remove.uid", &r.uid)?;
    label("remove.namespace", &r.namespace)?;
    label("remove.name", &r.name)
}

/// Validates a registration progress report.
pub fn progress(p: &RegistrationProgress) -> Result {
    uid("progress.uid", &p.uid)?;
    optional_label("progress.rancher_cluster_id", &p.rancher_cluster_id)?;
    text("progress.message", &p.message, MAX_MESSAGE_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc() -> VCluster {
        VCluster {
            uid: "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d".into(),
            namespace: "team-a".into(),
            name: "vc1".into(),
            project_id: "c-m-abcd1234:p-xk2lm".into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_well_formed_vcluster() {
        assert_eq!(vcluster("v", &vc()), Ok(()));
    }

    #[test]
    fn rejects_bad_fields_with_the_field_named() {
        let mut v = vc();
        v.namespace = "Team_A".into();
        assert_eq!(vcluster("v", &v).unwrap_err().field, "v.namespace");
        let mut v = vc();
        v.uid = "not-a-uid".into();
        assert_eq!(vcluster("v", &v).unwrap_err().field, "v.uid");
        let mut v = vc();
        v.name = "x".repeat(64);
        assert_eq!(vcluster("v", &v).unwrap_err().field, "v.name");
        let mut v = vc();
        v.project_id = "p-xk2lm".into();
        assert_eq!(vcluster("v", &v).unwrap_err().field, "v.project_id");
    }

    #[test]
    fn exclusion_reason_is_bounded() {
        let mut v = vc();
        v.exclusion = Some(crate::v1::Exclusion {
            kind: crate::v1::exclusion::Kind::Excluded as i32,
            reason: "skip-import is set".into(),
        });
        assert_eq!(vcluster("v", &v), Ok(()));
        v.exclusion = Some(crate::v1::Exclusion {
            kind: 99,
            reason: "x".repeat(MAX_MESSAGE_TEXT + 1),
        });
        assert_eq!(vcluster("v", &v).unwrap_err().field, "v.exclusion.reason");
    }

    #[test]
    fn labels_prefix_and_quota_are_checked() {
        let mut v = vc();
        v.labels.insert("example.org/team".into(), "blue".into());
        v.labels.insert("env".into(), "".into());
        v.requested_prefix = "edge".into();
        v.quota = Some(crate::v1::Quota {
            name: "vc-vc1".into(),
            hard: [("limits.cpu".to_string(), "4".to_string())].into(),
        });
        assert_eq!(vcluster("v", &v), Ok(()));
        let mut bad = v.clone();
        bad.labels.insert("bad key".into(), "x".into());
        assert_eq!(vcluster("v", &bad).unwrap_err().field, "v.labels");
        let mut bad = v.clone();
        bad.labels.insert("ok".into(), "no spaces".into());
        assert_eq!(vcluster("v", &bad).unwrap_err().field, "v.labels");
        let mut bad = v.clone();
        bad.requested_prefix = "Edge!".into();
        assert_eq!(vcluster("v", &bad).unwrap_err().field, "v.requested_prefix");
        let mut bad = v.clone();
        bad.requested_prefix = "p".repeat(MAX_PREFIX + 1);
        assert_eq!(vcluster("v", &bad).unwrap_err().field, "v.requested_prefix");
        let mut bad = v;
        bad.labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(vcluster("v", &bad).unwrap_err().field, "v.labels");
        assert!(is_label_key("a.b-c.example/x_y.z"));
        assert!(!is_label_key("/x") && !is_label_key("Ex ample/x") && !is_label_key(""));
    }

    #[test]
    fn error_preview_is_bounded() {
        let mut v = vc();
        v.name = "A".repeat(10_000);
        let e = vcluster("v", &v).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(uid in ".*", ns in ".*", name in ".*", proj in ".*") {
            let v = VCluster { uid, namespace: ns, name, project_id: proj, ..Default::default() };
            let _ = vcluster("v", &v);
        }
    }
}
