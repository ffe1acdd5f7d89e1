//! Unit tests of the hub's flags: defaults as documented, value parsers and the
//! combinations [`super::Args::validate`] refuses.

use super::*;

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn defaults_match_the_documentation() {
    let a = Args::try_parse_from(["vclink-hub", "--tls-cert-file", "c", "--tls-key-file", "k"])
        .unwrap();
    assert_eq!(a.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(a.metrics_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(a.fleet_workspace, "fleet-default");
    assert_eq!(a.removal_grace, Duration::from_secs(300));
    assert_eq!(a.registration_tls_mode, RegistrationTlsMode::Auto);
    assert_eq!(
        a.agent_auth,
        AgentAuthMode::TokenReview,
        "secure by default"
    );
    assert_eq!(a.agent_service_account, "vclink-system/vclink-agent");
    assert_eq!(a.owner_sync, OwnerSyncMode::Enabled);
    assert_eq!(a.owner_role_mapping, None);
    assert_eq!(a.max_vclusters_per_namespace, 50);
    assert_eq!(a.host_selector.to_string(), "vclink.io/agent=enabled");
    assert!(!a.allow_nested_hosts);
    assert!(HostSelector::parse("a=b").is_ok());
    assert!(HostSelector::parse("vclink.io/agent").is_err());
    assert!(HostSelector::parse("=x").is_err());
    assert!(HostSelector::parse("a=b,c=d").is_err());
}

fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
    let mut v = vec!["vclink-hub", "--tls-cert-file", "c", "--tls-key-file", "k"];
    v.extend_from_slice(extra);
    Args::try_parse_from(v)
}

#[test]
fn qps_is_bounded_and_a_tiny_value_is_a_clear_error() {
    let e = parse(&["--kube-qps", "1e-20"]).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    assert!(parse(&["--rancher-qps", "NaN"]).is_err());
    assert!(parse(&["--rancher-qps", "inf"]).is_err());
    assert!(parse(&["--kube-qps", "10001"]).is_err());
    assert_eq!(parse(&["--kube-qps", "0.1"]).unwrap().kube_qps, 0.1);
}

#[test]
fn the_defaults_validate_and_bad_combinations_do_not() {
    let a = parse(&["--leader-election"]).unwrap();
    assert_eq!(a.validate(), Ok(()));
    assert_eq!(a.max_unauthenticated_streams, 256);
    assert_eq!(a.max_streams_per_connection, 4);
    let a = parse(&[
        "--leader-election",
        "--leader-election-lease-duration",
        "15s",
        "--leader-election-renew-deadline",
        "13s",
        "--leader-election-retry-period",
        "2s",
    ])
    .unwrap();
    let e = a.validate().unwrap_err();
    assert!(
        e.contains("--leader-election-renew-deadline")
            && e.contains("--leader-election-retry-period"),
        "{e}"
    );
    assert!(
        parse(&["--forward-idle-timeout", "10s"])
            .unwrap()
            .validate()
            .is_err()
    );
    assert!(
        parse(&["--tls-handshake-timeout", "0s"])
            .unwrap()
            .validate()
            .is_err()
    );
    assert!(parse(&["--max-unauthenticated-streams", "0"]).is_err());
    assert!(parse(&["--hello-max-bytes", "10"]).is_err());
}

#[test]
fn leader_timings_need_room_for_one_retry() {
    let s = Duration::from_secs;
    assert!(leader_timings(s(15), s(10), s(2)).is_ok());
    assert!(leader_timings(s(12), s(10), s(2)).is_err(), "10 + 2 = 12");
    assert!(leader_timings(s(15), s(2), s(2)).is_err());
    assert!(leader_timings(s(15), s(10), Duration::ZERO).is_err());
}

#[test]
fn owner_sync_accepts_the_charts_modes() {
    let parse = |v: &str| {
        Args::try_parse_from([
            "vclink-hub",
            "--tls-cert-file",
            "c",
            "--tls-key-file",
            "k",
            "--owner-sync",
            v,
        ])
        .map(|a| a.owner_sync)
    };
    assert_eq!(parse("perCluster").unwrap(), OwnerSyncMode::PerCluster);
    assert_eq!(parse("disabled").unwrap(), OwnerSyncMode::Disabled);
    assert_eq!(parse("false").unwrap(), OwnerSyncMode::Disabled);
    assert!(parse("sometimes").is_err());
}

fn with_workspaces(extra: &[&str]) -> Args {
    let mut argv = vec!["vclink-hub", "--tls-cert-file", "c", "--tls-key-file", "k"];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).unwrap()
}

#[test]
fn workspace_flags_default_to_the_single_legacy_workspace() {
    let a = with_workspaces(&[]);
    assert_eq!(a.fleet_workspace_for_project, "");
    assert!(!a.create_fleet_workspaces);
    let w = a.workspaces().expect("defaults are valid");
    assert!(!w.is_mapped());
    assert_eq!(w.default_workspace(), "fleet-default");
    assert!(a.validate().is_ok());
}

#[test]
fn workspace_mapping_is_checked_at_start() {
    let a = with_workspaces(&[
        "--fleet-workspace-for-project",
        "p-abc12=team-a,Team B=ws-b",
        "--create-fleet-workspaces",
    ]);
    assert!(a.create_fleet_workspaces);
    assert!(a.validate().is_ok());
    let w = a.workspaces().unwrap();
    assert_eq!(
        w.choose("c-m-h", "c-m-h:p-abc12", None).0,
        "team-a",
        "the flag reaches the choice"
    );
    for (flag, value, want) in [
        (
            "--fleet-workspace-for-project",
            "p-abc12=team-a,p-abc12=team-b",
            "listed twice",
        ),
        (
            "--fleet-workspace-for-project",
            "p-abc12=Team_A",
            "not a valid namespace name",
        ),
        (
            "--fleet-workspace-for-project",
            "just-a-name",
            "expected <project>=<workspace>",
        ),
        ("--fleet-workspace", "Fleet", "--fleet-workspace"),
        ("--fleet-workspace", "fleet-local", "reserved"),
    ] {
        let err = with_workspaces(&[flag, value]).validate().expect_err(value);
        assert!(err.contains(want), "{flag} {value}: {err}");
    }
}
