//! The one image: the Dockerfile builds the binaries the charts and the registration Job
//! run, under the paths they use, as non-root 65532. No Docker engine runs here, so this
//! reads the Dockerfile; `scripts/check-image.sh` builds the release binaries and runs
//! them. When release binaries are present, this test also checks they answer --help.

use std::process::Command;

use vclink_chart_tests::repo_root;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_dockerfile_builds_and_ships_what_the_charts_run() {
    let df = read("Dockerfile");
    assert!(
        df.contains("cargo build --release --locked --bins -p vclink-hub -p vclink-agent"),
        "release build of both binaries"
    );
    assert!(
        df.contains("FROM gcr.io/distroless/cc-debian12:nonroot"),
        "glibc-linked binaries need the cc flavour"
    );
    assert!(
        df.lines().any(|l| l.trim() == "USER 65532:65532"),
        "numeric non-root user"
    );
    assert!(df.contains(r#"ENTRYPOINT ["/usr/local/bin/vclink-hub"]"#));
    for label in ["title", "source", "version", "revision", "licenses"] {
        assert!(
            df.contains(&format!("org.opencontainers.image.{label}=")),
            "OCI label {label}"
        );
    }
    // The binaries the build stage installs are real [[bin]] targets.
    for (krate, bin) in [("hub", "vclink-hub"), ("agent", "vclink-agent")] {
        let manifest = read(&format!("{krate}/Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{bin}\"")),
            "{krate}/Cargo.toml has no [[bin]] {bin}"
        );
        assert!(
            df.contains(&format!("/out/usr/local/bin/{bin}")),
            "the build stage installs {bin}"
        );
    }
    // The agent chart overrides the ENTRYPOINT with the agent binary.
    let agent = read("charts/agent/templates/deployment.yaml");
    assert!(agent.contains(r#"command: ["/usr/local/bin/vclink-agent", "run"]"#));
    // The build context keeps every workspace member (cargo needs all manifests).
    let ignore = read(".dockerignore");
    for member in ["proto", "agent", "hub", "tests"] {
        assert!(
            !ignore.lines().any(|l| l.trim_end_matches('/') == member),
            ".dockerignore drops workspace member {member}"
        );
    }
}

#[test]
fn release_binaries_answer_help_when_built() {
    let dir = repo_root().join("target/release");
    let hub = dir.join("vclink-hub");
    let agent = dir.join("vclink-agent");
    if !hub.exists() || !agent.exists() {
        eprintln!(
            "no release build in {}: run tests/charts/scripts/check-image.sh",
            dir.display()
        );
        return;
    }
    for args in [
        vec![hub.clone(), "--help".into()],
        vec![agent.clone(), "run".into(), "--help".into()],
        vec![agent.clone(), "register".into(), "--help".into()],
    ] {
        let out = Command::new(&args[0])
            .args(&args[1..])
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Usage:"),
            "{args:?} --help: {text}"
        );
    }
}
