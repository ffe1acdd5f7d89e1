//! A cluster that cannot start says why, with the server's own words, and leaves
//! nothing running.

use vclink_envtest::{Cluster, ClusterOptions};

#[tokio::test]
async fn a_bad_apiserver_flag_fails_fast_with_the_log_tail() {
    let before = vclink_envtest::procs::descendants(std::process::id());
    let t0 = std::time::Instant::now();
    let err = Cluster::start(
        "bad",
        ClusterOptions {
            extra_apiserver_args: vec!["--no-such-flag=1".into()],
            ..Default::default()
        },
    )
    .await
    .expect_err("an unknown flag must fail the start");
    let msg = format!("{err:#}");
    eprintln!("start error as a user sees it:\n{msg}");
    assert!(msg.contains("kube-apiserver exited"), "{msg}");
    assert!(msg.contains("unknown flag: --no-such-flag"), "{msg}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(60),
        "failed fast"
    );
    let after = vclink_envtest::procs::descendants(std::process::id());
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(new.is_empty(), "processes left behind: {new:?}");
}
