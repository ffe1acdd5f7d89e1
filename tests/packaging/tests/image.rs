//! The one image: the Dockerfile builds the binaries the charts and the registration Job
//! run, under the paths they use, as non-root 65532. No Docker engine runs here, so this
//! reads the Dockerfile; `scripts/check-image.sh` builds the release binaries and runs
//! them (an ignored test here runs it).

use std::process::Command;

use vclink_packaging_tests::repo_root;

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

/// Runs `scripts/check-image.sh`: the release build the Dockerfile makes, every
/// `/usr/local/bin` path it names answering `--help`, and the sizes in
/// `target/bench/binary-size.txt`. Ignored by default because the fat-LTO release build
/// takes minutes; `VCLINK_CHECK_IMAGE_NO_BUILD=1` checks an existing release build only.
#[test]
#[ignore = "release build (minutes): cargo test -p vclink-packaging-tests --test image -- --ignored"]
fn check_image_script_passes_and_reports_sizes() {
    let root = repo_root();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("tests/packaging/scripts/check-image.sh"));
    if std::env::var("VCLINK_CHECK_IMAGE_NO_BUILD").is_ok_and(|v| v == "1") {
        cmd.arg("--no-build");
    }
    let out = cmd.output().expect("run check-image.sh");
    assert!(
        out.status.success(),
        "check-image.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sizes = std::fs::read_to_string(root.join("target/bench/binary-size.txt"))
        .expect("binary-size.txt");
    for bin in ["vclink-hub", "vclink-agent"] {
        let line = sizes
            .lines()
            .find(|l| l.starts_with(bin))
            .unwrap_or_else(|| panic!("no size for {bin}: {sizes}"));
        let bytes: u64 = line
            .split('\t')
            .nth(1)
            .and_then(|b| b.strip_suffix(" bytes"))
            .and_then(|b| b.parse().ok())
            .unwrap_or_else(|| panic!("unparsable line {line:?}"));
        assert!(
            bytes > 1_000_000,
            "{bin} is {bytes} bytes: not a real build"
        );
    }
}
