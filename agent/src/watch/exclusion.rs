//! Why a vCluster the agent sees is not (or no longer) to be imported, decided from its
//! Service and namespace alone (pure). The rule behind it: leaving the catalog is never
//! mistaken for deletion. A vCluster that is opted out, in a namespace that stopped
//! matching `--namespace-selector`, stripped of its `app=vcluster` label, or carrying a
//! field that fails validation is still reported, with an [`Exclusion`] and a reason a
//! user can act on; only the Service's deletion is a `Remove`.
//!
//! Precedence when several apply: an explicit un-import (`vclink.io/import: "false"`,
//! the only exclusion that leads to a deletion) wins over an opt-out, which wins over the
//! namespace selector, then the removed label, then a validation failure. A reported
//! vCluster always passes the hub's validation: fields that fail it are blanked (the
//! hub must not act on them for an excluded vCluster anyway).

use vclink_proto::keys;
use vclink_proto::limits::MAX_MESSAGE_TEXT;
use vclink_proto::v1::exclusion::Kind;
use vclink_proto::v1::{Exclusion, Quota, VCluster};
use vclink_proto::validate;

use super::model::TrackedService;

/// What the agent knows about a Service's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceView<'a> {
    /// The namespace matches `--namespace-selector` (always true without one).
    pub selected: bool,
    /// Its `field.cattle.io/projectId` annotation.
    pub project: Option<&'a str>,
}

fn exclusion(kind: Kind, reason: String) -> Exclusion {
    Exclusion {
        kind: kind as i32,
        reason: bounded(reason, MAX_MESSAGE_TEXT),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The reason given for a namespace outside the selector.
pub fn namespace_reason(namespace: &str, selector: &str) -> String {
    format!(
        "namespace {namespace} no longer matches --namespace-selector {selector}; vclink keeps this vCluster's \
         Rancher cluster but manages it no more. Label the namespace to match again, or add the annotation \
         {}: \"false\" to remove it from Rancher.",
        keys::ANNOTATION_IMPORT
    )
}

/// Blanks the optional fields that fail validation, so an excluded vCluster is still a
/// valid message: each field is checked alone on a vCluster that has only it.
fn sanitize(v: &mut VCluster) {
    let base = VCluster {
        uid: v.uid.clone(),
        namespace: v.namespace.clone(),
        name: v.name.clone(),
        ..Default::default()
    };
    let fine = |copy: fn(&mut VCluster, &VCluster), from: &VCluster| {
        let mut probe = base.clone();
        copy(&mut probe, from);
        validate::vcluster("v", &probe).is_ok()
    };
    let from = v.clone();
    if !fine(|x, v| x.project_id.clone_from(&v.project_id), &from) {
        v.project_id.clear();
    }
    if !fine(|x, v| x.requested_name.clone_from(&v.requested_name), &from) {
        v.requested_name.clear();
    }
    if !fine(
        |x, v| x.recorded_cluster_id.clone_from(&v.recorded_cluster_id),
        &from,
    ) {
        v.recorded_cluster_id.clear();
    }
    if !fine(
        |x, v| x.requested_prefix.clone_from(&v.requested_prefix),
        &from,
    ) {
        v.requested_prefix.clear();
    }
    if !fine(|x, v| x.labels.clone_from(&v.labels), &from) {
        v.labels.clear();
    }
    if !fine(|x, v| x.quota.clone_from(&v.quota), &from) {
        v.quota = None;
    }
    if !fine(
        |x, v| x.vcluster_version.clone_from(&v.vcluster_version),
        &from,
    ) {
        v.vcluster_version.clear();
    }
}

/// Why the requested name or prefix cannot be used, naming the annotation it came from.
fn requested_problem(svc: &TrackedService) -> Option<String> {
    let shown = |v: &str| {
        let p: String = v.chars().take(40).collect();
        if v.chars().count() > 40 {
            format!("{p:?}…")
        } else {
            format!("{p:?}")
        }
    };
    if let Some(r) = &svc.requested_name
        && !validate::is_dns1123_label(&r.value)
    {
        return Some(format!(
            "invalid requested_name: the annotation {} must be a DNS-1123 label (at most 63 characters of a-z, 0-9 \
             and '-', starting and ending with a letter or digit), got {}",
            r.annotation,
            shown(&r.value)
        ));
    }
    if let Some(r) = &svc.requested_prefix {
        if r.value.len() > validate::MAX_PREFIX {
            return Some(format!(
                "invalid requested_prefix: the annotation {} is longer than {} characters (it leaves room for \
                 -<namespace>-<name>), got {}",
                r.annotation,
                validate::MAX_PREFIX,
                shown(&r.value)
            ));
        }
        if !validate::is_dns1123_label(&r.value) {
            return Some(format!(
                "invalid requested_prefix: the annotation {} must be a DNS-1123 label (a-z, 0-9 and '-', starting \
                 and ending with a letter or digit), got {}",
                r.annotation,
                shown(&r.value)
            ));
        }
    }
    None
}

/// The vCluster to report for `svc`, or `None` when it is not reported at all: the
/// headless companion Service, or a Service in a namespace outside the selector that
/// vclink never reported (no mark of ours, not reported earlier by this process).
pub fn describe(
    svc: &TrackedService,
    ns: NamespaceView<'_>,
    quota: Option<&Quota>,
    selector: Option<&str>,
    reported_before: bool,
) -> Option<VCluster> {
    if svc.is_skipped() {
        return None;
    }
    if !(ns.selected || svc.marked || reported_before) {
        return None;
    }
    let import = svc
        .annotations
        .get(keys::ANNOTATION_IMPORT)
        .map(|v| v.trim().to_ascii_lowercase());
    let mut invalid = None;
    let mut chosen = match import.as_deref() {
        Some("false") => Some(exclusion(
            Kind::Unimport,
            format!(
                "the annotation {}: \"false\" un-imports this vCluster: vclink deletes its Rancher cluster after the \
                 removal grace. Remove the annotation to keep it.",
                keys::ANNOTATION_IMPORT
            ),
        )),
        None | Some("true") => None,
        Some(_) => {
            invalid = Some(format!(
                "the annotation {} must be \"true\" or \"false\"",
                keys::ANNOTATION_IMPORT
            ));
            None
        }
    };
    if chosen.is_none() && svc.skip_import {
        chosen = Some(exclusion(
            Kind::Excluded,
            format!(
                "the annotation {} (or {}) is \"true\"; vclink keeps this vCluster's Rancher cluster but manages it \
                 no more. Remove the annotation to import it again.",
                keys::ANNOTATION_SKIP_IMPORT,
                keys::ANNOTATION_LOFT_SKIP_IMPORT
            ),
        ));
    }
    if chosen.is_none() && !ns.selected {
        chosen = Some(exclusion(
            Kind::Excluded,
            namespace_reason(&svc.namespace, selector.unwrap_or_default()),
        ));
    }
    if chosen.is_none() && !svc.vcluster_label {
        chosen = Some(exclusion(
            Kind::Excluded,
            "label app=vcluster was removed from this Service; vclink keeps this vCluster's Rancher cluster but \
             manages it no more. Put the label back to import it again."
                .to_string(),
        ));
    }
    let mut v = svc.to_vcluster(ns.project, quota, None);
    if let Some(why) = requested_problem(svc) {
        invalid.get_or_insert(why);
    }
    if let Err(e) = validate::vcluster("vcluster", &v) {
        sanitize(&mut v);
        invalid.get_or_insert_with(|| e.to_string());
    }
    if chosen.is_none()
        && let Some(why) = invalid
    {
        chosen = Some(exclusion(
            Kind::Invalid,
            format!(
                "vclink cannot import this vCluster into Rancher: {why}. Fix or remove the value, or opt out with \
                 the annotation {}: \"true\".",
                keys::ANNOTATION_SKIP_IMPORT
            ),
        ));
    }
    v.exclusion = chosen;
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::model::{NAME_KEYS, PREFIX_KEYS, requested};
    use std::collections::BTreeMap;

    const UID: &str = "00000000-0000-0000-0000-000000000001";
    const SELECTED: NamespaceView<'static> = NamespaceView {
        selected: true,
        project: Some("c-m-abcd1234:p-xk2lm"),
    };
    const OUTSIDE: NamespaceView<'static> = NamespaceView {
        selected: false,
        project: None,
    };

    fn svc(annotations: &[(&str, &str)]) -> TrackedService {
        let annotations: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TrackedService {
            uid: UID.into(),
            namespace: "team-a".into(),
            name: "vc1".into(),
            vcluster_label: true,
            marked: true,
            https_port: 443,
            requested_name: requested(&annotations, NAME_KEYS),
            requested_prefix: requested(&annotations, PREFIX_KEYS),
            annotations,
            ..Default::default()
        }
    }

    fn kind(v: &VCluster) -> Option<Kind> {
        v.exclusion.as_ref().map(|x| x.kind())
    }

    #[test]
    fn a_plain_vcluster_is_imported() {
        let v = describe(&svc(&[]), SELECTED, None, None, false).expect("reported");
        assert_eq!(kind(&v), None);
        assert_eq!(v.project_id, "c-m-abcd1234:p-xk2lm");
    }

    #[test]
    fn opt_outs_are_excluded_not_dropped() {
        let mut s = svc(&[]);
        s.skip_import = true;
        let v = describe(&s, SELECTED, None, None, false).expect("still reported");
        assert_eq!(kind(&v), Some(Kind::Excluded));
        assert!(v.exclusion.expect("x").reason.contains("skip-import"));
    }

    #[test]
    fn leaving_the_namespace_selector_excludes_only_what_vclink_reported() {
        let v =
            describe(&svc(&[]), OUTSIDE, None, Some("team=a"), false).expect("marked: reported");
        assert_eq!(kind(&v), Some(Kind::Excluded));
        let reason = v.exclusion.expect("x").reason;
        assert!(
            reason.contains("no longer matches --namespace-selector team=a"),
            "{reason}"
        );
        let mut never = svc(&[]);
        never.marked = false;
        assert_eq!(describe(&never, OUTSIDE, None, Some("team=a"), false), None);
        assert!(describe(&never, OUTSIDE, None, Some("team=a"), true).is_some());
    }

    #[test]
    fn a_removed_label_is_excluded() {
        let mut s = svc(&[]);
        s.vcluster_label = false;
        let v = describe(&s, SELECTED, None, None, false).expect("reported");
        assert_eq!(kind(&v), Some(Kind::Excluded));
        assert!(
            v.exclusion
                .expect("x")
                .reason
                .contains("label app=vcluster was removed")
        );
    }

    #[test]
    fn invalid_fields_are_reported_invalid_and_blanked() {
        let v = describe(
            &svc(&[("vclink.io/cluster-name", "Not_A_Label")]),
            SELECTED,
            None,
            None,
            false,
        )
        .expect("reported");
        assert_eq!(kind(&v), Some(Kind::Invalid));
        assert!(
            v.exclusion
                .as_ref()
                .expect("x")
                .reason
                .contains("requested_name")
        );
        assert_eq!(v.requested_name, "", "blanked so the message validates");
        assert_eq!(
            v.project_id, "c-m-abcd1234:p-xk2lm",
            "valid fields are kept"
        );
        assert_eq!(validate::vcluster("v", &v), Ok(()));
        let bad_import = describe(
            &svc(&[("vclink.io/import", "no")]),
            SELECTED,
            None,
            None,
            false,
        )
        .expect("reported");
        assert_eq!(kind(&bad_import), Some(Kind::Invalid));
    }

    #[test]
    fn unimport_wins_and_skip_beats_invalid() {
        let mut s = svc(&[
            ("vclink.io/import", "False"),
            ("vclink.io/cluster-name", "Not_A_Label"),
        ]);
        s.skip_import = true;
        let v = describe(&s, OUTSIDE, None, Some("x"), false).expect("reported");
        assert_eq!(kind(&v), Some(Kind::Unimport));
        assert_eq!(validate::vcluster("v", &v), Ok(()));
        let mut s = svc(&[("vclink.io/cluster-name", "Not_A_Label")]);
        s.skip_import = true;
        assert_eq!(
            kind(&describe(&s, SELECTED, None, None, false).expect("reported")),
            Some(Kind::Excluded)
        );
    }

    #[test]
    fn headless_is_never_reported() {
        let mut s = svc(&[]);
        s.headless = true;
        assert_eq!(describe(&s, SELECTED, None, None, true), None);
    }

    #[test]
    fn a_bad_name_or_prefix_names_its_annotation() {
        let cases = [
            ("vclink.io/cluster-name", "Not_A_Label", "requested_name"),
            (
                "platform.vcluster.com/custom-name",
                "-dash",
                "requested_name",
            ),
            ("vclink.io/cluster-name-prefix", "Edge!", "requested_prefix"),
            (
                "platform.vcluster.com/custom-name-prefix",
                &"p".repeat(41),
                "longer than 40",
            ),
        ];
        for (key, value, says) in cases {
            let v = describe(&svc(&[(key, value)]), SELECTED, None, None, false).expect("reported");
            assert_eq!(kind(&v), Some(Kind::Invalid), "{key}");
            let reason = &v.exclusion.as_ref().expect("x").reason;
            assert!(reason.contains(key) && reason.contains(says), "{reason}");
            assert_eq!(validate::vcluster("v", &v), Ok(()), "blanked: {v:?}");
            assert!(v.requested_name.is_empty() && v.requested_prefix.is_empty());
        }
        let ok = describe(
            &svc(&[("vclink.io/cluster-name-prefix", &"p".repeat(40))]),
            SELECTED,
            None,
            None,
            false,
        )
        .expect("reported");
        assert_eq!((kind(&ok), ok.requested_prefix.len()), (None, 40));
    }

    #[test]
    fn the_quota_is_reported_with_the_vcluster() {
        let q = Quota {
            name: "vc-vc1".into(),
            hard: [("limits.cpu".to_string(), "4".to_string())].into(),
        };
        let v = describe(&svc(&[]), SELECTED, Some(&q), None, false).expect("reported");
        assert_eq!(v.quota, Some(q));
        assert_eq!(kind(&v), None);
    }
}
