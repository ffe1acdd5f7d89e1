//! Renders both charts with every values file of `tests/packaging/values` as a new user
//! would, with Helm's own Go SDK: strict lint clean, values accepted by the schema, output
//! equal to the reviewed snapshot, and the properties a reviewer checks by hand asserted
//! here (restricted pods, registry rules, least-privilege RBAC, TLS wiring). The Fleet
//! bundle, Rancher's Apps page and scheduling have their own test files.

use std::collections::BTreeSet;

use serde_json::Value;
use vclink_packaging_tests::objects::{Object, objects};
use vclink_packaging_tests::snapshot::{Compared, compare, snapshot_text};
use vclink_packaging_tests::{CASES, cases, render};

fn rendered(name: &str) -> Vec<Object> {
    let case = cases::case(name).expect("case");
    let r = render(case).expect("render");
    assert_eq!(
        r.schema_error, None,
        "{name}: values rejected by values.schema.json"
    );
    objects(name, &r).expect("objects")
}

fn find<'a>(objs: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objs.iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} in {:?}",
                objs.iter()
                    .map(|o| (o.kind(), o.name()))
                    .collect::<Vec<_>>()
            )
        })
}

fn rules(o: &Object) -> Vec<Value> {
    o.value["rules"].as_array().cloned().unwrap_or_default()
}

fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Which verbs the rules give on `group`/`resource`, and whether any of them is limited by name.
fn grants(o: &Object, group: &str, resource: &str) -> Vec<(BTreeSet<String>, BTreeSet<String>)> {
    rules(o)
        .iter()
        .filter(|r| {
            strs(&r["apiGroups"]).contains(group) && strs(&r["resources"]).contains(resource)
        })
        .map(|r| (strs(&r["verbs"]), strs(&r["resourceNames"])))
        .collect()
}

fn pod_spec(o: &Object) -> &Value {
    &o.value["spec"]["template"]["spec"]
}

fn assert_restricted(name: &str, pod: &Value) {
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{name}"
    );
    for c in pod["containers"].as_array().expect("containers") {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(
            strs(&sc["capabilities"]["drop"]),
            BTreeSet::from(["ALL".to_string()]),
            "{name}"
        );
        assert!(
            c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object(),
            "{name}: resources"
        );
    }
}

fn env<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn every_case_lints_strictly_and_matches_its_snapshot() {
    let mut failures = Vec::new();
    for case in CASES {
        let r = render(case).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.schema_error, None,
            "{}: values rejected by values.schema.json",
            case.name
        );
        assert!(
            r.lint_problems().is_empty(),
            "{}: helm lint --strict: {:?}",
            case.name,
            r.lint_problems()
        );
        match compare(&case.snapshot_path(), &snapshot_text(case, &r)).expect("snapshot") {
            Compared::Same | Compared::Updated => {}
            Compared::Differs(d) => failures.push(format!(
                "{}: rendered output differs from {} (review, then VCLINK_UPDATE_SNAPSHOTS=1):\n{d}",
                case.name,
                case.snapshot_path().display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_typo_in_values_is_refused_by_the_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("typo.yaml");
    std::fs::write(&bad, "replicas: 3\n").expect("write");
    let r = vclink_packaging_tests::helm::render_with(
        cases::case("hub-default").expect("case"),
        &[bad],
    )
    .expect("render");
    let err = r
        .schema_error
        .expect("replicas (instead of replicaCount) must be refused");
    assert!(err.contains("replicas"), "the message names the key: {err}");
    std::fs::write(dir.path().join("mode.yaml"), "registrationTlsMode: none\n").expect("write");
    let r = vclink_packaging_tests::helm::render_with(
        cases::case("hub-default").expect("case"),
        &[dir.path().join("mode.yaml")],
    )
    .expect("render");
    assert!(
        r.schema_error.is_some(),
        "an unknown TLS mode must be refused"
    );
}

#[test]
fn hub_pods_are_restricted_and_wired_to_their_certificate() {
    let objs = rendered("hub-default");
    let dep = find(&objs, "Deployment", "vclink-hub");
    let pod = pod_spec(dep);
    assert_restricted("hub", pod);
    assert_eq!(pod["containers"][0]["image"], "ghcr.io/vclink/vclink:0.1.0");
    assert!(
        pod["containers"][0]["command"].is_null(),
        "the hub uses the image's ENTRYPOINT"
    );
    assert_eq!(
        env(pod, "VCLINK_TLS_CERT_FILE"),
        Some("/etc/vclink/tls/tls.crt")
    );
    assert_eq!(env(pod, "VCLINK_FLEET_WORKSPACE"), Some("fleet-default"));
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "vclink-hub-tls");
    let secret = find(&objs, "Secret", "vclink-hub-tls");
    assert_eq!(secret.value["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(
            secret.value["data"][key]
                .as_str()
                .is_some_and(|s| s.len() > 100),
            "generated {key}"
        );
    }
    let svc = find(&objs, "Service", "vclink-hub");
    assert_eq!(svc.value["spec"]["ports"][0]["port"], 8443);
    let metrics = find(&objs, "Service", "vclink-hub-metrics");
    assert_eq!(
        metrics.value["spec"]["type"], "ClusterIP",
        "metrics never leave the cluster"
    );
    assert_eq!(
        find(&objs, "PodDisruptionBudget", "vclink-hub").value["spec"]["maxUnavailable"],
        1
    );
}

#[test]
fn cert_manager_replaces_the_generated_secret() {
    let objs = rendered("hub-cert-manager");
    assert!(
        !objs.iter().any(|o| o.kind() == "Secret"),
        "no generated Secret when cert-manager issues it"
    );
    let cert = find(&objs, "Certificate", "vclink-hub");
    assert_eq!(cert.value["spec"]["secretName"], "vclink-hub-tls");
    assert!(strs(&cert.value["spec"]["dnsNames"]).contains("vclink-hub.example.com"));
    assert!(strs(&cert.value["spec"]["dnsNames"]).contains("vclink-hub.vclink-system.svc"));
    assert_eq!(
        find(&objs, "Service", "vclink-hub").value["spec"]["type"],
        "LoadBalancer"
    );
}

#[test]
fn the_system_default_registry_is_used_for_every_image() {
    let hub = rendered("hub-custom-registry");
    let pod = pod_spec(find(&hub, "Deployment", "vclink-hub"));
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.internal:5000/vclink/vclink@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(pod["imagePullSecrets"][0]["name"], "internal-registry");
    let agent = rendered("agent-custom-registry");
    let pod = pod_spec(find(&agent, "Deployment", "vclink-agent"));
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.internal:5000/vclink/vclink:0.1.0"
    );
    assert_eq!(
        env(pod, "VCLINK_JOB_IMAGE"),
        Some("registry.internal:5000/vclink/vclink:0.1.0"),
        "Job image follows the agent's"
    );
}

#[test]
fn hub_rbac_is_least_privilege() {
    let objs = rendered("hub-default");
    let cr = find(&objs, "ClusterRole", "vclink-hub");
    // Secrets: only Rancher's token Secret, by name, never all Secrets.
    let secrets = grants(cr, "", "secrets");
    assert_eq!(secrets.len(), 1);
    assert_eq!(
        secrets[0].1,
        BTreeSet::from(["crt-token-default-token".to_string()])
    );
    // Registration tokens: only default-token.
    assert!(
        grants(cr, "management.cattle.io", "clusterregistrationtokens")
            .iter()
            .all(|(_, n)| n.contains("default-token"))
    );
    // Nothing anywhere grants "*"; no self-grant role, no RoleBinding rights, no `bind`.
    for o in objs.iter().filter(|o| o.kind() == "ClusterRole") {
        for r in rules(o) {
            assert!(
                !strs(&r["verbs"]).contains("*") && !strs(&r["resources"]).contains("*"),
                "{} grants *: {r}",
                o.name()
            );
        }
    }
    assert!(!objs.iter().any(|o| o.name().ends_with("crtb-grant")));
    assert!(grants(cr, "rbac.authorization.k8s.io", "clusterroles").is_empty());
    assert!(grants(cr, "rbac.authorization.k8s.io", "rolebindings").is_empty());
    assert!(
        grants(cr, "management.cattle.io", "clusterroletemplatebindings")
            .iter()
            .all(|(v, _)| !v.contains("create") && !v.contains("delete")),
        "owner CRTBs are written as the impersonated Rancher user"
    );
    // Impersonation of the hub's Rancher user only.
    assert_eq!(
        grants(cr, "", "users"),
        vec![(
            BTreeSet::from(["impersonate".to_string()]),
            BTreeSet::from(["vclink-hub".to_string()])
        )]
    );
    assert!(
        !rules(cr)
            .iter()
            .any(|r| strs(&r["verbs"]).contains("escalate"))
    );
    // Provisioning clusters: written only in the workspace; read cluster-wide by one
    // watch (every Fleet workspace the hub may use).
    let ws = find(&objs, "Role", "vclink-hub-workspace");
    assert_eq!(ws.namespace(), Some("fleet-default"));
    assert_eq!(
        grants(cr, "provisioning.cattle.io", "clusters"),
        vec![(
            BTreeSet::from(["list".to_string(), "watch".to_string()]),
            BTreeSet::new()
        )]
    );
    // Rancher objects of the TokenReview-only credential.
    let rt = find(&objs, "RoleTemplate", "vclink-hub-tokenreview");
    assert_eq!(rt.value["context"], "cluster");
    assert_eq!(rules(rt).len(), 1);
    assert_eq!(
        strs(&rules(rt)[0]["verbs"]),
        BTreeSet::from(["create".to_string()])
    );
    assert_eq!(
        strs(&rules(rt)[0]["resources"]),
        BTreeSet::from(["tokenreviews".to_string()])
    );
    let gr = find(&objs, "GlobalRole", "vclink-hub");
    assert_eq!(
        gr.value["rules"],
        serde_json::json!([]),
        "no rights in the local cluster"
    );
    assert_eq!(
        strs(&gr.value["inheritedClusterRoles"]),
        BTreeSet::from(["vclink-hub-tokenreview".to_string()])
    );
    let grb = find(&objs, "GlobalRoleBinding", "vclink-hub");
    assert_eq!(
        (
            grb.value["userName"].as_str(),
            grb.value["globalRoleName"].as_str()
        ),
        (Some("vclink-hub"), Some("vclink-hub"))
    );
    let creates = find(&objs, "GlobalRoleBinding", "vclink-hub-clusters-create");
    assert_eq!(creates.value["globalRoleName"], "clusters-create");
    assert_eq!(creates.value["userName"], "vclink-hub");
}

#[test]
fn owner_sync_disabled_drops_every_crtb_and_binding_right() {
    let objs = rendered("hub-custom-registry");
    let cr = find(&objs, "ClusterRole", "vclink-hub");
    assert!(
        grants(cr, "management.cattle.io", "clusterroletemplatebindings")
            .iter()
            .all(|(v, _)| !v.contains("create"))
    );
    assert!(grants(cr, "rbac.authorization.k8s.io", "rolebindings").is_empty());
    assert!(!objs.iter().any(|o| o.name().ends_with("crtb-grant")));
    assert!(
        !objs
            .iter()
            .any(|o| o.api_version() == "management.cattle.io/v3"),
        "rancherCredential.create=false"
    );
    assert_eq!(
        find(&objs, "Role", "vclink-hub-workspace").namespace(),
        Some("fleet-vclusters")
    );
}

#[test]
fn monitoring_and_network_policy_render_when_asked() {
    let objs = rendered("hub-monitoring");
    let sm = find(&objs, "ServiceMonitor", "vclink-hub");
    assert_eq!(sm.value["spec"]["endpoints"][0]["port"], "metrics");
    let np = find(&objs, "NetworkPolicy", "vclink-hub");
    let from = np.value["spec"]["ingress"][0]["from"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        from.len(),
        3,
        "the two sources of the values, then the hub's own pods"
    );
    assert_eq!(
        from[2]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "vclink-hub",
        "standby replicas may forward agent connections to the leader"
    );
    assert!(
        !objs.iter().any(|o| o.kind() == "Secret"),
        "existingSecret: nothing generated"
    );
    let pod = pod_spec(find(&objs, "Deployment", "vclink-hub"));
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "my-hub-tls");
}

#[test]
fn agent_has_its_projected_identity_and_no_secret_reads() {
    let objs = rendered("agent-default");
    let dep = find(&objs, "Deployment", "vclink-agent");
    let pod = pod_spec(dep);
    assert_restricted("agent", pod);
    assert_eq!(dep.value["spec"]["replicas"], 1);
    assert_eq!(
        pod["serviceAccountName"], "vclink-agent",
        "the name the hub expects by default"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "the agent needs its own cluster's API"
    );
    assert_eq!(
        strs(&pod["containers"][0]["command"]),
        BTreeSet::from(["/usr/local/bin/vclink-agent".into(), "run".into()])
    );
    let projected = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find_map(|v| v["projected"]["sources"][0]["serviceAccountToken"].as_object())
        .expect("projected token volume");
    assert_eq!(projected["audience"], "vclink-hub");
    assert_eq!(projected["expirationSeconds"], 3600);
    assert_eq!(
        env(pod, "VCLINK_TOKEN_FILE"),
        Some("/var/run/secrets/vclink/token")
    );
    assert_eq!(env(pod, "VCLINK_CLUSTER_ID"), Some("c-m-ab12cd34"));
    let cr = find(&objs, "ClusterRole", "vclink-agent");
    for (verbs, _) in grants(cr, "", "secrets") {
        assert!(
            verbs.is_disjoint(&BTreeSet::from([
                "get".into(),
                "list".into(),
                "watch".into()
            ])),
            "agent reads Secrets: {verbs:?}"
        );
    }
    assert_eq!(
        grants(cr, "", "services")[0].0,
        BTreeSet::from(["get".into(), "list".into(), "watch".into(), "patch".into()])
    );
    assert_eq!(
        grants(cr, "", "resourcequotas")
            .into_iter()
            .map(|(verbs, _)| verbs)
            .collect::<Vec<_>>(),
        vec![BTreeSet::from(["list".into(), "watch".into()])],
        "the agent only reads ResourceQuotas"
    );
    let custom = rendered("agent-custom-registry");
    assert!(
        grants(find(&custom, "ClusterRole", "vclink-agent"), "", "pods").is_empty(),
        "rbac.readPods=false"
    );
    let pod = pod_spec(find(&custom, "Deployment", "vclink-agent"));
    assert_eq!(
        env(pod, "VCLINK_NAMESPACE_SELECTOR"),
        Some("vclink.io/import=true")
    );
    assert_eq!(
        env(pod, "VCLINK_HUB_CA_FILE"),
        Some("/etc/vclink/hub-ca/ca.crt")
    );
}

#[test]
fn the_agent_refuses_to_render_without_hub_and_cluster_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "{}\n").expect("write");
    let case = vclink_packaging_tests::Case {
        values: &[],
        ..*cases::case("agent-default").expect("case")
    };
    let err = vclink_packaging_tests::helm::render_with(&case, &[empty])
        .expect_err("missing hub.url must fail");
    assert!(err.to_string().contains("hub.url is required"), "{err}");
}

/// The environment variables a binary's clap definition reads (every subcommand).
fn declared_env(cmd: clap::Command) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![cmd];
    while let Some(cmd) = stack.pop() {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned()),
        );
        stack.extend(cmd.get_subcommands().cloned());
    }
    out
}

/// Every environment variable a chart sets must be one its binary reads (a name the
/// binary does not declare is silently ignored, which is how settings get lost).
fn assert_env_is_read(case: &str, deployment: &str, binary: clap::Command) {
    let declared = declared_env(binary);
    assert!(
        declared.len() > 5,
        "found only {declared:?} for {deployment}"
    );
    let objs = rendered(case);
    let pod = pod_spec(find(&objs, "Deployment", deployment));
    for e in pod["containers"][0]["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default();
        assert!(
            name == "RUST_LOG" || declared.contains(name),
            "{case}: {deployment} sets {name}, which the binary does not read"
        );
    }
}

#[test]
fn the_charts_set_only_environment_variables_the_binaries_read() {
    for case in [
        "hub-default",
        "hub-custom-registry",
        "hub-monitoring",
        "hub-rancher-apps",
    ] {
        assert_env_is_read(
            case,
            "vclink-hub",
            <vclink_hub::config::Args as clap::CommandFactory>::command(),
        );
    }
    for case in [
        "agent-default",
        "agent-custom-registry",
        "agent-rancher-apps",
    ] {
        assert_env_is_read(case, "vclink-agent", vclink_agent::config::command());
    }
}

#[test]
fn the_agent_default_job_image_is_the_chart_image() {
    let objs = rendered("agent-default");
    let pod = pod_spec(find(&objs, "Deployment", "vclink-agent"));
    let image = pod["containers"][0]["image"].as_str().unwrap_or_default();
    let repo = image.rsplit_once(':').map(|(r, _)| r).unwrap_or(image);
    assert_eq!(repo, "ghcr.io/vclink/vclink");
    // The binary's own default (its crate version), as `vclink-agent run --help` shows it:
    // the chart's image at its appVersion.
    let run = vclink_agent::config::command()
        .find_subcommand("run")
        .expect("vclink-agent run")
        .clone();
    let default: Vec<String> = run
        .get_arguments()
        .find(|a| a.get_long() == Some("job-image"))
        .expect("--job-image")
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        default,
        [image],
        "--job-image defaults to the chart's image"
    );
}

#[test]
fn the_hub_gets_token_rights_only_when_it_manages_its_own_tokens() {
    let default = rendered("hub-default");
    let cr = find(&default, "ClusterRole", "vclink-hub");
    assert!(
        grants(cr, "management.cattle.io", "tokens").is_empty(),
        "tokenFile mode: no rights on Rancher Tokens"
    );
    let pod = pod_spec(find(&default, "Deployment", "vclink-hub"));
    assert_eq!(
        env(pod, "VCLINK_RANCHER_TOKEN_FILE"),
        Some("/etc/vclink/rancher/token")
    );
    assert_eq!(env(pod, "VCLINK_AGENT_AUTH"), Some("tokenreview"));
    assert_eq!(
        env(pod, "VCLINK_AGENT_SERVICE_ACCOUNT"),
        Some("vclink-system/vclink-agent")
    );
    assert_eq!(env(pod, "VCLINK_RANCHER_USER"), None);
    let managed = rendered("hub-monitoring");
    let cr = find(&managed, "ClusterRole", "vclink-hub");
    let tokens = grants(cr, "management.cattle.io", "tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        tokens[0].0,
        BTreeSet::from(["create".to_string(), "delete".to_string()])
    );
    let users = grants(cr, "management.cattle.io", "users");
    assert_eq!(
        users,
        vec![(
            BTreeSet::from(["get".to_string()]),
            BTreeSet::from(["vclink-hub".to_string()])
        )]
    );
    let pod = pod_spec(find(&managed, "Deployment", "vclink-hub"));
    assert_eq!(env(pod, "VCLINK_RANCHER_USER"), Some("vclink-hub"));
    assert_eq!(env(pod, "VCLINK_RANCHER_TOKEN_FILE"), None);
}

#[test]
fn several_replicas_need_leader_election_and_get_only_their_lease() {
    let objs = rendered("hub-default");
    let lease = find(&objs, "Lease", "vclink-hub");
    assert_eq!(lease.namespace(), Some("vclink-system"));
    let role = find(&objs, "Role", "vclink-hub-leader");
    assert_eq!(
        rules(role),
        vec![serde_json::json!({
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["vclink-hub"],
            "verbs": ["get", "update"],
        })],
        "get/update on the chart's one Lease, nothing else"
    );
    let pod = pod_spec(find(&objs, "Deployment", "vclink-hub"));
    assert_eq!(env(pod, "VCLINK_LEADER_ELECTION"), Some("true"));
    assert_eq!(env(pod, "VCLINK_LEADER_ELECTION_LEASE"), Some("vclink-hub"));
    let pod_ip = pod["containers"][0]["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "VCLINK_POD_IP"))
        .map(|v| v["valueFrom"]["fieldRef"]["fieldPath"].clone());
    assert_eq!(pod_ip, Some(serde_json::json!("status.podIP")));

    let dir = tempfile::tempdir().expect("tmp");
    let three = dir.path().join("three.yaml");
    std::fs::write(&three, "replicaCount: 3\n").expect("write");
    let case = cases::case("hub-default").expect("case");
    let r = vclink_packaging_tests::helm::render_with(case, &[three]).expect("3 replicas render");
    assert_eq!(r.schema_error, None);
    let unsafe_values = dir.path().join("two-without-election.yaml");
    std::fs::write(
        &unsafe_values,
        "replicaCount: 2\nleaderElection:\n  enabled: false\n",
    )
    .expect("write");
    let err = vclink_packaging_tests::helm::render_with(case, &[unsafe_values])
        .expect_err("two replicas without leader election must not render");
    assert!(err.to_string().contains("leaderElection.enabled"), "{err}");
    let single = dir.path().join("single.yaml");
    std::fs::write(&single, "leaderElection:\n  enabled: false\n").expect("write");
    let r = vclink_packaging_tests::helm::render_with(case, &[single]).expect("render");
    let objs = vclink_packaging_tests::objects::objects("hub-default", &r).expect("objects");
    assert!(
        !objs
            .iter()
            .any(|o| o.kind() == "Lease" || o.name() == "vclink-hub-leader"),
        "no Lease and no leader Role without leader election"
    );
}
