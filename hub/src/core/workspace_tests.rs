//! The mapping parser (what is refused at start, and why) and the workspace choice
//! (most exact entry wins; another cluster's project is never looked up).

use super::*;

const HOST: &str = "c-m-host0001";

fn ws(mapping: &str) -> Workspaces {
    Workspaces::parse("fleet-default", mapping).expect("valid mapping")
}

#[test]
fn empty_mapping_is_the_default_only() {
    let w = ws("");
    assert!(!w.is_mapped());
    assert_eq!(
        w.choose(HOST, "c-m-host0001:p-abc12", Some("Team B")),
        ("fleet-default", MatchedBy::Default)
    );
    assert_eq!(ws("  "), Workspaces::single("fleet-default"));
}

#[test]
fn entries_by_id_qualified_id_and_display_name() {
    let w = ws("p-abc12=team-a, Team B=ws-b,c-m-host0001:p-zzz99=ws-z");
    assert!(w.is_mapped() && w.has_display_names());
    assert_eq!(
        w.choose(HOST, "c-m-host0001:p-abc12", None),
        ("team-a", MatchedBy::ProjectId)
    );
    assert_eq!(
        w.choose(HOST, "c-m-host0001:p-other", Some("Team B")),
        ("ws-b", MatchedBy::DisplayName)
    );
    assert_eq!(
        w.choose(HOST, "c-m-host0001:p-zzz99", None),
        ("ws-z", MatchedBy::Qualified)
    );
    assert_eq!(
        w.choose(HOST, "c-m-host0001:p-other", Some("Team C")),
        ("fleet-default", MatchedBy::Default)
    );
    assert_eq!(
        w.choose(HOST, "", Some("Team B")),
        ("fleet-default", MatchedBy::Default),
        "a namespace in no project"
    );
}

#[test]
fn the_most_exact_entry_wins() {
    // A project owner renaming their project to "Team B" cannot leave the workspace
    // their project id is mapped to.
    let w = ws("Team B=ws-b,p-abc12=team-a,c-m-host0001:p-abc12=pinned");
    assert_eq!(
        w.choose(HOST, "c-m-host0001:p-abc12", Some("Team B")),
        ("pinned", MatchedBy::Qualified)
    );
    let w = ws("Team B=ws-b,p-abc12=team-a");
    assert_eq!(
        w.choose(HOST, "c-m-host0001:p-abc12", Some("Team B")),
        ("team-a", MatchedBy::ProjectId)
    );
}

#[test]
fn a_qualified_entry_matches_only_its_cluster() {
    let w = ws("c-m-host0001:p-abc12=team-a");
    assert_eq!(
        w.choose("c-m-other002", "c-m-other002:p-abc12", None),
        ("fleet-default", MatchedBy::Default)
    );
}

#[test]
fn another_clusters_project_is_never_looked_up() {
    let w = ws("c-m-other002:p-abc12=team-a,p-abc12=team-b,Team B=ws-b");
    assert_eq!(
        w.choose(HOST, "c-m-other002:p-abc12", Some("Team B")),
        ("fleet-default", MatchedBy::Default)
    );
}

#[test]
fn bad_entries_are_refused_with_the_entry_named() {
    let bad = [
        ("p-abc12", "expected <project>=<workspace>"),
        ("=team-a", "no project"),
        ("p-abc12=Team_A", "not a valid namespace name"),
        ("p-abc12=", "not a valid namespace name"),
        ("p-abc12=-ws", "not a valid namespace name"),
        ("p-abc12=fleet-local", "reserved"),
        ("p-abc12=kube-system", "reserved"),
        ("p-abc12=c-m-abcd1234", "reserved"),
        ("p-abc12=team-a,,p-x=team-b", "empty entry"),
        ("p-abc12=team-a,", "empty entry"),
        ("p-abc12=team-a,p-abc12=team-a", "listed twice"),
        ("Team B=ws-b, Team B =ws-c", "listed twice"),
        ("c-m-x:Team=ws", "is not <cluster-id>:<p-id>"),
        ("C-M-X:p-abc12=ws", "is not <cluster-id>:<p-id>"),
    ];
    for (mapping, want) in bad {
        let err = Workspaces::parse("fleet-default", mapping).expect_err(mapping);
        assert!(err.contains(want), "{mapping:?}: {err}");
        assert!(err.contains("--fleet-workspace-for-project"), "{err}");
    }
    let err = Workspaces::parse("Fleet Default", "").expect_err("bad default");
    assert!(err.contains("--fleet-workspace"), "{err}");
}

#[test]
fn dns_labels() {
    for ok in ["a", "fleet-default", "team-a1", &"a".repeat(63)] {
        assert!(is_dns_label(ok), "{ok}");
    }
    for bad in ["", "A", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
}

#[test]
fn project_names_by_cluster_and_id() {
    let mut n = ProjectNames::default();
    n.replace(vec![(HOST.into(), "p-abc12".into(), "Team B".into())]);
    assert_eq!(n.get("c-m-host0001:p-abc12"), Some("Team B"));
    assert_eq!(n.get("c-m-other002:p-abc12"), None);
    n.set(HOST, "p-abc12", None);
    assert_eq!(n.get("c-m-host0001:p-abc12"), None);
}
