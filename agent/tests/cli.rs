//! The agent binary as a person meets it: `--help` for itself and its subcommands, the
//! kubectl plugin name, and a table of wrong invocations and environments (bad flags,
//! missing files, an unreachable or untrusted hub, no Kubernetes credentials). Each case
//! runs the real binary with a deadline and checks what a person reads: the exit code,
//! the message once and on one line, naming the flag / path / URL, no ANSI escapes, and
//! never the token. Besides that, this test makes `cargo test --workspace` build the
//! `vclink-agent` binary that the end-to-end suite runs as a real process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_vclink-agent");
/// The token every case's token file holds; it must never be printed.
const TOKEN: &str = "sekret-projected-token-0123456789";

fn help(args: &[&str]) -> String {
    let out = Command::new(AGENT)
        .args(args)
        .arg("--help")
        .output()
        .expect("run vclink-agent");
    assert!(
        out.status.success(),
        "vclink-agent {args:?} --help failed: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn top_level_help_lists_the_subcommands() {
    let h = help(&[]);
    for sub in ["run", "register", "status"] {
        assert!(h.contains(sub), "{h}");
    }
}

#[test]
fn run_help_names_the_hub_and_job_flags() {
    let h = help(&["run"]);
    for flag in [
        "--hub-url",
        "--cluster-id",
        "--token-file",
        "--job-image",
        "--job-image-pull-secret",
        "--job-node-selector",
        "--job-toleration",
        "--job-priority-class-name",
    ] {
        assert!(h.contains(flag), "missing {flag} in:\n{h}");
    }
}

#[test]
fn register_help_names_its_inputs() {
    let h = help(&["register"]);
    for flag in ["--kubeconfig", "--registration-dir", "--service-url"] {
        assert!(h.contains(flag), "missing {flag} in:\n{h}");
    }
}

#[cfg(unix)]
#[test]
fn a_kubectl_vclink_symlink_is_the_kubectl_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("kubectl-vclink");
    std::os::unix::fs::symlink(AGENT, &plugin).expect("symlink");
    // What kubectl runs for `kubectl vclink status --help`.
    let out = Command::new(&plugin)
        .args(["status", "--help"])
        .output()
        .expect("run plugin");
    assert!(out.status.success(), "{out:?}");
    let h = String::from_utf8_lossy(&out.stdout);
    assert!(h.contains("kubectl vclink status"), "{h}");
    assert!(h.contains("--json"), "{h}");
}

/// The files and servers the cases point at.
struct World {
    dir: tempfile::TempDir,
    /// A kubeconfig whose server refuses connections.
    kubeconfig: PathBuf,
    /// A token file holding [`TOKEN`].
    token: PathBuf,
    /// The CA the agent is told to trust.
    trusted_ca: PathBuf,
    /// A TLS listener whose certificate comes from another CA.
    untrusted_hub: String,
    /// A port nothing listens on.
    closed_port: u16,
    _rt: tokio::runtime::Runtime,
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

impl World {
    fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let closed = closed_port();
        let kubeconfig = write(
            dir.path(),
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{closed}\n    insecure-skip-tls-verify: true\n\
                 users:\n- name: u\n  user:\n    token: {TOKEN}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
            ),
        );
        let token = write(dir.path(), "token", TOKEN);
        let trusted = vclink_envtest::CertificateAuthority::new("agent-trusted-ca").expect("ca");
        let trusted_ca = write(dir.path(), "hub-ca.crt", trusted.cert_pem());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let untrusted_hub = rt.block_on(untrusted_listener());
        Self {
            dir,
            kubeconfig,
            token,
            trusted_ca,
            untrusted_hub,
            closed_port: closed,
            _rt: rt,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A TLS 1.3 server with a certificate for localhost from a CA the agent does not trust.
async fn untrusted_listener() -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let other = vclink_envtest::CertificateAuthority::new("some-other-ca").expect("ca");
    let leaf = other
        .issue_server(&["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf");
    let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    format!("https://localhost:{port}")
}

/// One wrong invocation.
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// `Some(code)`: the process must exit with it; `None`: it keeps running (it retries),
    /// and is stopped once `must` appeared.
    exit: Option<i32>,
    /// Appears exactly once (in a still-running process: once within its line).
    must: String,
    /// Also appear somewhere in the output (path, URL, flag, fix).
    also: Vec<String>,
}

/// Runs a case to its end, or until `must` appears, within `deadline`.
fn run(case: &Case, deadline: Duration) -> (Option<i32>, String) {
    let stop_at = case.exit.is_none().then_some(case.must.as_str());
    vclink_envtest::cli::run_scrubbed(AGENT, &case.args, &case.env, stop_at, deadline)
}

fn s(v: &str) -> String {
    v.to_string()
}

fn run_args(w: &World, hub: &str, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        s("run"),
        s("--hub-url"),
        s(hub),
        s("--cluster-id"),
        s("c-m-abcd1234"),
        s("--token-file"),
        w.token.display().to_string(),
        s("--hub-ca-file"),
        w.trusted_ca.display().to_string(),
    ];
    a.extend(extra.iter().map(|e| e.to_string()));
    a
}

fn cases(w: &World) -> Vec<Case> {
    let kube = || vec![("KUBECONFIG", w.kubeconfig.display().to_string())];
    let closed_hub = format!("https://127.0.0.1:{}", w.closed_port);
    let ok = "https://hub.example.com:443";
    let garbage_ca = write(w.dir.path(), "garbage-ca.crt", "not a certificate\n");
    let empty_token = write(w.dir.path(), "empty-token", "\n");
    let missing_token = w.path("no-such-token");
    let missing_kubeconfig = w.path("no-such-kubeconfig");
    let flag_case = |name, extra: &[&str], must: &str, flag: &str| Case {
        name,
        args: run_args(w, ok, extra),
        env: kube(),
        exit: Some(2),
        must: s(must),
        also: vec![s(flag)],
    };
    let with_token = |name, token: &Path, must: &str| Case {
        name,
        args: {
            let mut a = run_args(w, ok, &[]);
            a[6] = token.display().to_string();
            a
        },
        env: kube(),
        exit: Some(1),
        must: s(must),
        also: vec![token.display().to_string(), s("--token-file")],
    };
    let token_missing = with_token("missing token file", &missing_token, "does not exist");
    let token_empty = with_token("empty token file", &empty_token, "is empty");
    vec![
        Case {
            name: "no --hub-url",
            args: vec![s("run"), s("--cluster-id"), s("c-m-abcd1234")],
            env: vec![],
            exit: Some(2),
            must: s("required arguments were not provided"),
            also: vec![s("--hub-url <URL>")],
        },
        Case {
            name: "plain-http hub URL",
            args: run_args(w, "http://hub.example.com:80", &[]),
            env: kube(),
            exit: Some(1),
            must: s("is not an https:// URL"),
            also: vec![s("--hub-url"), s("http://hub.example.com:80")],
        },
        Case {
            name: "bad cluster id",
            args: {
                let mut a = run_args(w, ok, &[]);
                a[4] = s("My_Cluster");
                a
            },
            env: kube(),
            exit: Some(1),
            must: s("is not a Rancher cluster id"),
            also: vec![s("--cluster-id"), s("My_Cluster")],
        },
        Case {
            name: "missing hub CA file",
            args: {
                let mut a = run_args(w, ok, &[]);
                a[8] = w.path("no-such-ca.crt").display().to_string();
                a
            },
            env: kube(),
            exit: Some(1),
            must: s("cannot read the hub CA file"),
            also: vec![
                w.path("no-such-ca.crt").display().to_string(),
                s("--hub-ca-file"),
            ],
        },
        Case {
            name: "hub CA file without a certificate",
            args: {
                let mut a = run_args(w, ok, &[]);
                a[8] = garbage_ca.display().to_string();
                a
            },
            env: kube(),
            exit: Some(1),
            must: s("holds no usable PEM certificate"),
            also: vec![garbage_ca.display().to_string()],
        },
        token_missing,
        token_empty,
        flag_case(
            "node selector without =",
            &["--job-node-selector", "linux"],
            "is not KEY=VALUE",
            "--job-node-selector",
        ),
        flag_case(
            "toleration that is not JSON",
            &["--job-toleration", "{key: cattle.io/os"],
            "not a Kubernetes Toleration as JSON",
            "--job-toleration",
        ),
        flag_case(
            "pull secret with an invalid name",
            &["--job-image-pull-secret", "Reg_Cred"],
            "is not a Kubernetes object name",
            "--job-image-pull-secret",
        ),
        flag_case(
            "CPU limit that is not a quantity",
            &["--job-cpu-limit", "half"],
            "is not a Kubernetes quantity",
            "--job-cpu-limit",
        ),
        Case {
            name: "KUBECONFIG names a missing file",
            args: run_args(w, ok, &[]),
            env: vec![("KUBECONFIG", missing_kubeconfig.display().to_string())],
            exit: Some(1),
            must: s("cannot be used"),
            also: vec![missing_kubeconfig.display().to_string()],
        },
        Case {
            name: "status without Kubernetes credentials",
            args: vec![s("status")],
            env: vec![("KUBECONFIG", missing_kubeconfig.display().to_string())],
            exit: Some(1),
            must: s("cannot be used"),
            also: vec![missing_kubeconfig.display().to_string(), s("KUBECONFIG")],
        },
        Case {
            name: "status against an API server that refuses connections",
            args: vec![s("status"), s("--json")],
            env: kube(),
            exit: Some(1),
            must: s("cannot list the vCluster Services"),
            also: vec![
                format!("127.0.0.1:{}", w.closed_port),
                s("onnection refused"),
            ],
        },
        Case {
            name: "hub port closed",
            args: run_args(w, &closed_hub, &[]),
            env: kube(),
            exit: None,
            must: format!("cannot connect to the hub at {closed_hub}: connection refused"),
            also: vec![],
        },
        Case {
            name: "hub host does not resolve",
            args: run_args(w, "https://vclink-hub.nowhere.invalid:443", &[]),
            env: kube(),
            exit: None,
            must: s("DNS lookup of vclink-hub.nowhere.invalid failed"),
            also: vec![s("https://vclink-hub.nowhere.invalid:443")],
        },
        Case {
            name: "hub certificate from a CA the agent does not trust",
            args: run_args(w, &w.untrusted_hub, &[]),
            env: kube(),
            exit: None,
            must: s("TLS certificate verification failed on the agent's side"),
            also: vec![
                w.untrusted_hub.clone(),
                s("some-other-ca"),
                w.trusted_ca.display().to_string(),
                s("not signed by a CA the agent trusts"),
            ],
        },
        Case {
            name: "hub certificate checked against the system store",
            args: run_args(w, &w.untrusted_hub, &[])[..7].to_vec(),
            env: kube(),
            exit: None,
            must: s("TLS certificate verification failed on the agent's side"),
            also: vec![s("system trust store")],
        },
    ]
}

#[test]
fn wrong_invocations_say_what_is_wrong_once() {
    let w = World::new();
    let cases = cases(&w);
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let (code, out) = run(case, Duration::from_secs(60));
        let mut problems = Vec::new();
        if code != case.exit {
            problems.push(format!("exit {code:?}, expected {:?}", case.exit));
        }
        let count = out.matches(&case.must).count();
        match case.exit {
            Some(_) if count != 1 => {
                problems.push(format!("{:?} appears {count} times", case.must))
            }
            None if count == 0 => problems.push(format!("{:?} never appears", case.must)),
            _ => {}
        }
        // Once per line too: a retrying agent repeats the line, never the cause in it.
        for line in out.lines().filter(|l| l.contains(&case.must)) {
            if line.matches(&case.must).count() != 1 {
                problems.push(format!("repeated within a line: {line}"));
            }
        }
        for also in &case.also {
            if !out.contains(also.as_str()) {
                problems.push(format!("does not name {also:?}"));
            }
        }
        if out.contains('\u{1b}') {
            problems.push("ANSI escape in piped output".into());
        }
        if out.contains(TOKEN) {
            problems.push("the token appears in the output".into());
        }
        if std::env::var_os("VCLINK_SHOW_CASES").is_some() {
            eprintln!("=== {} (exit {code:?})\n{out}", case.name);
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
