//! The hub binary as an operator meets it: `--help` with the flags an operator needs, and
//! a table of wrong invocations and environments (missing or broken TLS files, Rancher
//! flags, no Kubernetes credentials, an unreachable API server). Each case runs the real
//! binary with a deadline and checks the exit code, that the message appears once and on
//! one line, names the flag and path, carries no ANSI escapes and never the Rancher token
//! — and that the hub's own inputs are checked before it contacts the API server.
//! Besides that, this test makes `cargo test --workspace` build the `vclink-hub` binary
//! that the end-to-end suite runs as a real process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const HUB: &str = env!("CARGO_BIN_EXE_vclink-hub");
/// The Rancher token the token-file cases hold; it must never be printed.
const TOKEN: &str = "token-abcde:sekretsekretsekretsekret";

#[test]
fn help_names_the_operator_flags() {
    let out = Command::new(HUB)
        .arg("--help")
        .output()
        .expect("run vclink-hub");
    assert!(out.status.success(), "vclink-hub --help failed: {out:?}");
    let h = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--tls-cert-file",
        "--fleet-workspace",
        "--removal-grace",
        "--health-listen",
    ] {
        assert!(h.contains(flag), "missing {flag} in:\n{h}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One wrong invocation.
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    exit: i32,
    /// Appears exactly once.
    must: String,
    /// Also appear.
    also: Vec<String>,
    /// Must not appear (e.g. the API server's address: it was never contacted).
    never: Vec<String>,
}

fn run(case: &Case, deadline: Duration) -> (Option<i32>, String) {
    vclink_envtest::cli::run_scrubbed(HUB, &case.args, &case.env, None, deadline)
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn wrong_invocations_say_what_is_wrong_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = vclink_envtest::CertificateAuthority::new("hub-cli-ca").expect("ca");
    let one = ca.issue_server(&["localhost".to_string()]).expect("leaf");
    let two = ca.issue_server(&["localhost".to_string()]).expect("leaf");
    let cert = write(d, "tls.crt", &one.cert_pem);
    let key = write(d, "tls.key", &one.key_pem);
    let other_key = write(d, "other.key", &two.key_pem);
    let garbage = write(d, "garbage.pem", "this is not PEM\n");
    let token = write(d, "rancher-token", TOKEN);
    let missing = |n: &str| d.join(n).display().to_string();
    let api_port = closed_port();
    let api = format!("127.0.0.1:{api_port}");
    let kubeconfig = write(
        d,
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{api}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: u\n  user:\n    token: {TOKEN}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
        ),
    );
    let kube = || vec![("KUBECONFIG", kubeconfig.display().to_string())];
    let base = |cert: &Path, key: &Path, extra: &[&str]| {
        let mut a = vec![
            s("--tls-cert-file"),
            cert.display().to_string(),
            s("--tls-key-file"),
            key.display().to_string(),
            s("--metrics-listen"),
            s("127.0.0.1:0"),
            s("--listen"),
            s("127.0.0.1:0"),
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let trusting = ["--agent-auth", "trust-claimed"];
    let file_case = |name, args: Vec<String>, must: &str, also: Vec<String>| Case {
        name,
        args,
        env: kube(),
        exit: 1,
        must: s(must),
        also,
        never: vec![api.clone()],
    };
    let cases = vec![
        Case {
            name: "no --tls-cert-file",
            args: vec![s("--tls-key-file"), key.display().to_string()],
            env: kube(),
            exit: 2,
            must: s("required arguments were not provided"),
            also: vec![s("--tls-cert-file")],
            never: vec![api.clone()],
        },
        file_case(
            "missing certificate file",
            base(&d.join("no.crt"), &key, &trusting),
            "reading --tls-cert-file",
            vec![missing("no.crt")],
        ),
        file_case(
            "missing key file",
            base(&cert, &d.join("no.key"), &trusting),
            "reading --tls-key-file",
            vec![missing("no.key")],
        ),
        file_case(
            "certificate file without a certificate",
            base(&garbage, &key, &trusting),
            "holds no PEM certificate",
            vec![garbage.display().to_string(), s("--tls-cert-file")],
        ),
        file_case(
            "key file without a key",
            base(&cert, &garbage, &trusting),
            "holds no PEM private key",
            vec![garbage.display().to_string(), s("--tls-key-file")],
        ),
        file_case(
            "key of another certificate",
            base(&cert, &other_key, &trusting),
            "do not form a usable pair",
            vec![other_key.display().to_string()],
        ),
        file_case(
            "missing Rancher CA file",
            base(
                &cert,
                &key,
                &[
                    "--agent-auth",
                    "trust-claimed",
                    "--rancher-ca-file",
                    &missing("rancher-ca.crt"),
                ],
            ),
            "reading --rancher-ca-file",
            vec![missing("rancher-ca.crt")],
        ),
        file_case(
            "tokenreview without --rancher-url",
            base(
                &cert,
                &key,
                &["--rancher-token-file", &token.display().to_string()],
            ),
            "needs --rancher-url",
            vec![],
        ),
        file_case(
            "missing Rancher token file",
            base(
                &cert,
                &key,
                &[
                    "--rancher-url",
                    "https://rancher.example.com",
                    "--rancher-token-file",
                    &missing("no-token"),
                ],
            ),
            "--rancher-token-file",
            vec![missing("no-token")],
        ),
        file_case(
            "malformed agent service account",
            base(
                &cert,
                &key,
                &[
                    "--rancher-url",
                    "https://rancher.example.com",
                    "--rancher-token-file",
                    &token.display().to_string(),
                    "--agent-service-account",
                    "vclink-agent",
                ],
            ),
            "must be <namespace>/<name>",
            vec![s("--agent-service-account")],
        ),
        Case {
            name: "KUBECONFIG names a missing file",
            args: base(&cert, &key, &trusting),
            env: vec![("KUBECONFIG", missing("no-kubeconfig"))],
            exit: 1,
            must: s("cannot be used"),
            also: vec![missing("no-kubeconfig")],
            never: vec![],
        },
        Case {
            name: "API server refuses connections",
            args: base(&cert, &key, &trusting),
            env: kube(),
            exit: 1,
            must: s("onnection refused"),
            also: vec![api.clone()],
            never: vec![],
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let (code, out) = run(case, Duration::from_secs(60));
        if std::env::var_os("VCLINK_SHOW_CASES").is_some() {
            eprintln!("=== {} (exit {code:?})\n{out}", case.name);
        }
        let mut problems = Vec::new();
        if code != Some(case.exit) {
            problems.push(format!("exit {code:?}, expected {}", case.exit));
        }
        let count = out.matches(&case.must).count();
        if count != 1 {
            problems.push(format!("{:?} appears {count} times", case.must));
        }
        for also in &case.also {
            if !out.contains(also.as_str()) {
                problems.push(format!("does not name {also:?}"));
            }
        }
        for never in &case.never {
            if out.contains(never.as_str()) {
                problems.push(format!("mentions {never:?} (contacted too early?)"));
            }
        }
        if out.contains('\u{1b}') {
            problems.push("ANSI escape in piped output".into());
        }
        if out.contains("sekretsekret") {
            problems.push("a token appears in the output".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n--- output ---\n{out}",
                case.name,
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
