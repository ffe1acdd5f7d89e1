//! Unit tests of [`super`] (owner sync's pure decision): which owner CRTBs the role
//! mapping grants from the host project's PRTBs and the host cluster's CRTBs, which
//! principals are skipped, the deterministic names, and the plan from what exists to
//! what should (never touching foreign CRTBs).

use super::*;

const HOST: &str = "c-m-host0001";
const VC: &str = "c-m-vc000001";

fn user(n: &str) -> Subject {
    Subject::User {
        name: n.into(),
        principal: format!("local://{n}"),
    }
}

fn group(p: &str) -> Subject {
    Subject::Group {
        name: String::new(),
        principal: p.into(),
    }
}

fn project(id: &str) -> ProjectInfo {
    ProjectInfo {
        cluster: HOST.into(),
        id: id.into(),
        prtb_namespace: format!("{HOST}-{id}"),
        deleting: false,
    }
}

fn prtb(name: &str, project: &str, role: &str, s: Subject) -> Binding {
    Binding {
        namespace: format!("{HOST}-{project}"),
        name: name.into(),
        role: role.into(),
        scope: format!("{HOST}:{project}"),
        subject: Some(s),
        deleting: false,
        ..Binding::default()
    }
}

fn host_crtb(name: &str, role: &str, s: Subject) -> Binding {
    Binding {
        namespace: HOST.into(),
        name: name.into(),
        role: role.into(),
        scope: HOST.into(),
        subject: Some(s),
        deleting: false,
        ..Binding::default()
    }
}

fn grants(d: &BTreeMap<String, Desired>) -> Vec<(String, String)> {
    let mut v: Vec<_> = d
        .values()
        .map(|d| (d.role.clone(), d.subject.id()))
        .collect();
    v.sort();
    v
}

#[test]
fn default_mapping_grants_owners_members_and_host_owners() {
    let p = project("p-a");
    let prtbs = [
        prtb("b1", "p-a", "project-owner", user("u-alice")),
        prtb("b2", "p-a", "project-member", group("okta_group://devs")),
        prtb("b3", "p-a", "read-only", user("u-bob")),
    ];
    let crtbs = [
        host_crtb("c1", "cluster-owner", user("u-carol")),
        host_crtb("c2", "cluster-member", user("u-dave")),
    ];
    let d = desired(VC, HOST, Some(&p), &prtbs, &crtbs, &RoleMapping::default());
    assert_eq!(
        grants(&d),
        [
            (
                "cluster-owner".into(),
                "group-principal:okta_group://devs".into()
            ),
            ("cluster-owner".into(), "user:u-alice".into()),
            ("cluster-owner".into(), "user:u-carol".into()),
        ]
    );
}

#[test]
fn prtbs_must_match_the_project_and_its_namespace() {
    let p = project("p-a");
    let mut wrong_project = prtb("b1", "p-a", "project-owner", user("u-x"));
    wrong_project.scope = format!("{HOST}:p-other");
    let mut wrong_ns = prtb("b2", "p-a", "project-owner", user("u-y"));
    wrong_ns.namespace = "p-a".into();
    let mut deleting = prtb("b3", "p-a", "project-owner", user("u-z"));
    deleting.deleting = true;
    let d = desired(
        VC,
        HOST,
        Some(&p),
        &[wrong_project, wrong_ns, deleting],
        &[],
        &RoleMapping::default(),
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn a_project_without_backing_namespace_reads_the_project_name_namespace() {
    let mut p = project("p-a");
    p.prtb_namespace = "p-a".into();
    let mut b = prtb("b1", "p-a", "project-owner", user("u-x"));
    b.namespace = "p-a".into();
    let d = desired(VC, HOST, Some(&p), &[b], &[], &RoleMapping::default());
    assert_eq!(d.len(), 1);
}

#[test]
fn no_project_or_a_deleted_one_leaves_only_host_owners() {
    let prtbs = [prtb("b1", "p-a", "project-owner", user("u-alice"))];
    let crtbs = [host_crtb("c1", "cluster-owner", user("u-carol"))];
    let d = desired(VC, HOST, None, &prtbs, &crtbs, &RoleMapping::default());
    assert_eq!(
        grants(&d),
        [("cluster-owner".into(), "user:u-carol".into())]
    );
    let mut p = project("p-a");
    p.deleting = true;
    let d = desired(VC, HOST, Some(&p), &prtbs, &crtbs, &RoleMapping::default());
    assert_eq!(d.len(), 1);
}

#[test]
fn system_principals_and_service_accounts_are_skipped() {
    let rancher_own = host_crtb(
        "c-m-host0001-fleet-default-owner",
        "cluster-owner",
        Subject::User {
            name: "u-abc".into(),
            principal: "system://provisioning/fleet-default/x".into(),
        },
    );
    let mut sa = prtb("b1", "p-a", "project-owner", user("u-x"));
    sa.subject = None;
    let p = project("p-a");
    let d = desired(
        VC,
        HOST,
        Some(&p),
        &[sa],
        &[rancher_own],
        &RoleMapping::default(),
    );
    assert!(d.is_empty());
}

#[test]
fn custom_mapping_and_exclusion() {
    let m = RoleMapping::from_json(
        r#"{"project": {"project-owner": "cluster-owner", "project-member": null, "lead": "vc-admin"},
            "cluster": {"cluster-member": "cluster-member"}}"#,
    )
    .unwrap();
    let p = project("p-a");
    let prtbs = [
        prtb("b1", "p-a", "project-member", user("u-a")),
        prtb("b2", "p-a", "lead", user("u-b")),
    ];
    let crtbs = [
        host_crtb("c1", "cluster-owner", user("u-c")),
        host_crtb("c2", "cluster-member", user("u-d")),
    ];
    let d = desired(VC, HOST, Some(&p), &prtbs, &crtbs, &m);
    assert_eq!(
        grants(&d),
        [
            ("cluster-member".into(), "user:u-d".into()),
            ("vc-admin".into(), "user:u-b".into())
        ]
    );
}

#[test]
fn one_crtb_per_subject_and_role_with_all_parents() {
    let p = project("p-a");
    let prtbs = [
        prtb("b1", "p-a", "project-owner", user("u-a")),
        prtb("b2", "p-a", "project-member", user("u-a")),
    ];
    let crtbs = [host_crtb("c1", "cluster-owner", user("u-a"))];
    let d = desired(VC, HOST, Some(&p), &prtbs, &crtbs, &RoleMapping::default());
    assert_eq!(d.len(), 1);
    let only = d.values().next().unwrap();
    assert_eq!(only.parents.len(), 3);
    assert_eq!(only.parents[0].kind, "crtb");
}

#[test]
fn names_are_deterministic_bounded_and_distinct() {
    let a = crtb_name(VC, &user("u-alice"), "cluster-owner");
    assert_eq!(a, crtb_name(VC, &user("u-alice"), "cluster-owner"));
    assert!(a.starts_with("vco-cluster-owner-user-u-alice-"), "{a}");
    assert_ne!(
        a,
        crtb_name("c-m-other001", &user("u-alice"), "cluster-owner")
    );
    assert_ne!(a, crtb_name(VC, &user("u-bob"), "cluster-owner"));
    assert_ne!(a, crtb_name(VC, &user("u-alice"), "cluster-member"));
    let long = crtb_name(
        VC,
        &group("okta_group://A-Very-Long-Group-Name/With/Slashes/And.Dots/and-more-and-more"),
        "a-very-long-custom-role-template-name-indeed",
    );
    assert!(long.len() <= 63, "{long} {}", long.len());
    assert!(
        long.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    );
    assert!(!long.contains("--"));
}

fn owned(name: &str, role: &str, s: Subject) -> OwnedCrtb {
    OwnedCrtb {
        name: name.into(),
        uid: format!("uid-{name}"),
        role: role.into(),
        subject: Some(s),
        key: None,
        deleting: false,
    }
}

#[test]
fn plan_creates_missing_deletes_extra_and_leaves_the_rest() {
    let p = project("p-a");
    let prtbs = [
        prtb("b1", "p-a", "project-owner", user("u-a")),
        prtb("b2", "p-a", "project-owner", user("u-b")),
    ];
    let d = desired(VC, HOST, Some(&p), &prtbs, &[], &RoleMapping::default());
    let name_a = crtb_name(VC, &user("u-a"), "cluster-owner");
    let name_b = crtb_name(VC, &user("u-b"), "cluster-owner");
    let keep = owned(
        &name_a,
        "cluster-owner",
        Subject::User {
            name: "u-a".into(),
            principal: "local://u-a".into(),
        },
    );
    let extra = owned("vco-old", "cluster-owner", user("u-gone"));
    let plan = plan(&d, &[&keep, &extra], &HashSet::new());
    assert_eq!(
        plan.create
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>(),
        [name_b]
    );
    assert_eq!(
        plan.delete,
        [("vco-old".to_string(), "uid-vco-old".to_string())]
    );
    assert!(plan.conflicts.is_empty());
}

#[test]
fn plan_accepts_a_filled_in_user_name_and_waits_for_deletions() {
    let want = Subject::User {
        name: String::new(),
        principal: "okta_user://x".into(),
    };
    let p = project("p-a");
    let d = desired(
        VC,
        HOST,
        Some(&p),
        &[prtb("b1", "p-a", "project-owner", want.clone())],
        &[],
        &RoleMapping::default(),
    );
    let name = d.keys().next().unwrap().clone();
    let filled = owned(
        &name,
        "cluster-owner",
        Subject::User {
            name: "u-filled".into(),
            principal: "okta_user://x".into(),
        },
    );
    assert!(plan(&d, &[&filled], &HashSet::new()).is_empty());
    let mut going = filled.clone();
    going.deleting = true;
    assert!(
        plan(&d, &[&going], &HashSet::new()).is_empty(),
        "wait for the old one to go"
    );
    let other = owned(&name, "cluster-member", want);
    assert_eq!(
        plan(&d, &[&other], &HashSet::new()).delete.len(),
        1,
        "wrong grant under our name"
    );
}

#[test]
fn plan_never_touches_foreign_crtbs_and_reports_a_name_clash() {
    let p = project("p-a");
    let d = desired(
        VC,
        HOST,
        Some(&p),
        &[prtb("b1", "p-a", "project-owner", user("u-a"))],
        &[],
        &RoleMapping::default(),
    );
    let name = d.keys().next().unwrap().clone();
    let foreign: HashSet<&str> = [name.as_str(), "users-own"].into_iter().collect();
    let plan = plan(&d, &[], &foreign);
    assert!(plan.create.is_empty() && plan.delete.is_empty());
    assert_eq!(plan.conflicts.len(), 1);
}

#[test]
fn the_reported_project_wins_and_relabels() {
    assert_eq!(
        project_of(HOST, None, Some("p-a")),
        ProjectChoice {
            project: Some("p-a".into()),
            relabel: None
        }
    );
    assert_eq!(
        project_of(HOST, Some("c-m-host0001:p-b"), Some("p-a")),
        ProjectChoice {
            project: Some("p-b".into()),
            relabel: Some(Some("p-b".into()))
        }
    );
    assert_eq!(
        project_of(HOST, Some(""), Some("p-a")),
        ProjectChoice {
            project: None,
            relabel: Some(None)
        }
    );
    assert_eq!(
        project_of(HOST, Some("c-m-host0001:p-a"), Some("p-a")),
        ProjectChoice {
            project: Some("p-a".into()),
            relabel: None
        }
    );
    // Another cluster's project is not this agent's to claim.
    assert_eq!(project_of(HOST, Some("c-m-other:p-x"), None).project, None);
}

#[test]
fn plan_keeps_an_adopted_binding_under_another_name_and_adds_no_duplicate() {
    let p = project("p-a");
    let d = desired(
        VC,
        HOST,
        Some(&p),
        &[prtb("b1", "p-a", "project-owner", user("u-alice"))],
        &[],
        &RoleMapping::default(),
    );
    // The operator's binding, adopted: only a userName, another name.
    let adopted = owned(
        "vcluster-u-alice-co",
        "cluster-owner",
        Subject::User {
            name: "u-alice".into(),
            principal: String::new(),
        },
    );
    assert!(plan(&d, &[&adopted], &HashSet::new()).is_empty());
    // Once the grant is no longer wanted, it goes like any of ours.
    let none = BTreeMap::new();
    assert_eq!(plan(&none, &[&adopted], &HashSet::new()).delete.len(), 1);
}
