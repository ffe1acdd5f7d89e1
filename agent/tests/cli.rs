//! The agent binary answers `--help` for itself and both subcommands. Besides checking
//! the CLI a stranger starts from, this integration test makes `cargo test --workspace`
//! build the `vclink-agent` binary that the end-to-end suite runs as a real process.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vclink-agent"))
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
    assert!(h.contains("run"), "{h}");
    assert!(h.contains("register"), "{h}");
}

#[test]
fn run_help_names_the_hub_flags() {
    let h = help(&["run"]);
    for flag in ["--hub-url", "--cluster-id", "--token-file", "--job-image"] {
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
