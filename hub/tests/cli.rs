//! The hub binary answers `--help` with the flags an operator needs. Besides checking
//! the CLI, this integration test makes `cargo test --workspace` build the `vclink-hub`
//! binary that the end-to-end suite runs as a real process.

use std::process::Command;

#[test]
fn help_names_the_operator_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_vclink-hub"))
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
    ] {
        assert!(h.contains(flag), "missing {flag} in:\n{h}");
    }
}
