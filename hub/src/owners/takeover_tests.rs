//! Unit tests of [`super`]: which CRTBs count as the operator's, which are adopted and
//! which are stale.

use super::*;
use crate::owners::desired::Parent;

const VC: &str = "c-m-vc000001";
const UID: &str = "svc-uid-1";
const OPERATOR: &str = "vcluster-rancher-operator";

fn user(n: &str) -> Subject {
    Subject::User {
        name: n.into(),
        principal: String::new(),
    }
}

fn crtb(name: &str, role: &str, s: Subject, operator_uid: Option<&str>) -> Binding {
    Binding {
        namespace: VC.into(),
        name: name.into(),
        role: role.into(),
        scope: VC.into(),
        subject: Some(s),
        uid: format!("uid-{name}"),
        resource_version: "7".into(),
        operator_uid: operator_uid.map(str::to_string),
        ..Binding::default()
    }
}

fn operators_crtb(u: &str) -> Binding {
    crtb(
        &format!("vcluster-{u}-co"),
        "cluster-owner",
        user(u),
        Some(UID),
    )
}

fn creator(u: &str) -> Binding {
    crtb(CREATOR_CRTB, "cluster-owner", user(u), None)
}

fn want(name: &str, role: &str, s: Subject) -> (String, Desired) {
    (
        name.to_string(),
        Desired {
            name: name.into(),
            role: role.into(),
            subject: s,
            parents: vec![Parent {
                kind: "prtb",
                namespace: "ns".into(),
                name: "p".into(),
            }],
        },
    )
}

#[test]
fn only_the_operators_exact_shape_counts() {
    assert!(is_operator_binding(&operators_crtb("u-alice"), VC, UID));
    let another_vcluster = crtb(
        "vcluster-u-alice-co",
        "cluster-owner",
        user("u-alice"),
        Some("x"),
    );
    let another_role = crtb(
        "vcluster-u-alice-co",
        "cluster-member",
        user("u-alice"),
        Some(UID),
    );
    let another_name = crtb(
        "vcluster-u-bob-co",
        "cluster-owner",
        user("u-alice"),
        Some(UID),
    );
    let no_labels = crtb(
        "vcluster-u-alice-co",
        "cluster-owner",
        user("u-alice"),
        None,
    );
    let group = crtb(
        "vcluster-devs-co",
        "cluster-owner",
        Subject::Group {
            name: "devs".into(),
            principal: String::new(),
        },
        Some(UID),
    );
    let mut elsewhere = operators_crtb("u-alice");
    elsewhere.scope = "c-m-other".into();
    let mut going = operators_crtb("u-alice");
    going.deleting = true;
    for b in [
        another_vcluster,
        another_role,
        another_name,
        no_labels,
        group,
        elsewhere,
        going,
    ] {
        assert!(!is_operator_binding(&b, VC, UID), "{b:?}");
    }
}

#[test]
fn only_in_clusters_the_operator_created() {
    let alice = operators_crtb("u-alice");
    let by_operator = creator(OPERATOR);
    let by_hub = creator("vclink-hub");
    assert_eq!(
        operator_bindings(&[&alice, &by_operator], VC, UID, Some(OPERATOR)).len(),
        1
    );
    assert!(operator_bindings(&[&alice, &by_hub], VC, UID, Some(OPERATOR)).is_empty());
    assert!(operator_bindings(&[&alice], VC, UID, Some(OPERATOR)).is_empty());
    assert!(operator_bindings(&[&alice, &by_operator], VC, UID, None).is_empty());
    assert!(!created_by([&by_operator], ""));
}

#[test]
fn a_wanted_grant_adopts_the_operators_binding_and_the_rest_is_stale() {
    let alice = operators_crtb("u-alice");
    let gone = operators_crtb("u-gone");
    let w: BTreeMap<_, _> = [
        want(
            "vco-a",
            "cluster-owner",
            Subject::User {
                name: "u-alice".into(),
                principal: "local://u-alice".into(),
            },
        ),
        want("vco-b", "cluster-owner", user("u-bob")),
    ]
    .into_iter()
    .collect();
    let t = takeover(&w, &[], &[&alice, &gone]);
    assert_eq!(t.adopt.len(), 1);
    assert_eq!(t.adopt[0].0.name, "vcluster-u-alice-co");
    assert_eq!(t.adopt[0].1.name, "vco-a");
    assert_eq!(t.stale, [&gone]);
}

#[test]
fn a_role_change_or_an_existing_binding_of_ours_makes_it_stale() {
    let alice = operators_crtb("u-alice");
    // The mapping now grants another role: nothing to adopt, the operator's is stale.
    let w: BTreeMap<_, _> = [want("vco-a", "vc-admin", user("u-alice"))]
        .into_iter()
        .collect();
    let t = takeover(&w, &[], &[&alice]);
    assert!(t.adopt.is_empty());
    assert_eq!(t.stale, [&alice]);
    // Ours already makes the grant: the operator's is a duplicate.
    let w: BTreeMap<_, _> = [want("vco-a", "cluster-owner", user("u-alice"))]
        .into_iter()
        .collect();
    let ours = OwnedCrtb {
        name: "vco-a".into(),
        uid: "u".into(),
        role: "cluster-owner".into(),
        subject: Some(user("u-alice")),
        key: None,
        deleting: false,
    };
    let t = takeover(&w, &[&ours], &[&alice]);
    assert!(t.adopt.is_empty());
    assert_eq!(t.stale, [&alice]);
}
