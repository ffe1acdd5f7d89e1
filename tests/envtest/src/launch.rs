//! Starting the server processes of one cluster and waiting until they serve.
//!
//! Ports are picked by binding `127.0.0.1:0` and releasing the socket, so another
//! process can grab one before the server binds it; [`launch`] reports that as
//! [`LaunchError::PortInUse`] and the caller retries with fresh ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::install::KubeBinaries;
use crate::kubeconfig::{self, Auth};
use crate::pki::ClientIdentity;
use crate::procs::{Supervised, Watchdog};

/// Issuer of ServiceAccount tokens (and the default API audience), as in real clusters.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";

/// How long etcd + kube-apiserver get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long kube-controller-manager gets to start its controllers.
const CM_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines quoted in errors.
const TAIL: usize = 30;

/// Why a launch attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaunchError {
    /// A server could not bind its port; retry with new ports.
    #[error("{0}")]
    PortInUse(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Files written once per cluster, shared by every attempt.
pub(crate) struct Files {
    pub(crate) dir: PathBuf,
    pub(crate) ca_pem: String,
    pub(crate) admin: ClientIdentity,
    pub(crate) name: String,
}

impl Files {
    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

/// The result of a successful launch.
pub(crate) struct Running {
    pub(crate) port: u16,
    pub(crate) url: String,
    /// In start order: etcd, kube-apiserver, kube-controller-manager.
    pub(crate) procs: Vec<Supervised>,
}

/// Three distinct free loopback ports.
fn free_ports() -> std::io::Result<[u16; 3]> {
    let ls = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    Ok([
        ls[0].local_addr()?.port(),
        ls[1].local_addr()?.port(),
        ls[2].local_addr()?.port(),
    ])
}

fn etcd_args(data: &str, client: u16, peer: u16) -> Vec<String> {
    let c = format!("http://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    vec![
        format!("--data-dir={data}"),
        format!("--listen-client-urls={c}"),
        format!("--advertise-client-urls={c}"),
        format!("--listen-peer-urls={p}"),
        format!("--initial-advertise-peer-urls={p}"),
        format!("--initial-cluster=default={p}"),
        // Test data: durability is worthless, fsync latency is not.
        "--unsafe-no-fsync".into(),
        "--quota-backend-bytes=1073741824".into(),
        "--snapshot-count=5000".into(),
        "--logger=zap".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(f: &Files, etcd: u16, port: u16, controller_manager: bool) -> Vec<String> {
    let mut a = vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--insecure-port=0".into(),
        format!("--cert-dir={}", f.path("certs")),
        format!("--tls-cert-file={}", f.path("apiserver.crt")),
        format!("--tls-private-key-file={}", f.path("apiserver.key")),
        format!("--client-ca-file={}", f.path("ca.crt")),
        format!("--service-account-key-file={}", f.path("sa.pub")),
        format!("--service-account-signing-key-file={}", f.path("sa.key")),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
        "--authorization-mode=RBAC".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--allow-privileged=true".into(),
        // Save CPU on a shared 2-core machine.
        "--enable-priority-and-fairness=false".into(),
        "--profiling=false".into(),
        "--endpoint-reconciler-type=none".into(),
    ];
    if !controller_manager {
        // Without the ServiceAccount controllers no `default` ServiceAccount exists and
        // this plugin would reject every Pod; no kubelet runs them anyway.
        a.push("--disable-admission-plugins=ServiceAccount".into());
    }
    a
}

fn controller_manager_args(f: &Files) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", f.path("admin.kubeconfig")),
        // GC + Job as asked; namespace deletion and ServiceAccounts (with their legacy
        // token Secrets) so namespaces and Pods behave as in a real cluster.
        "--controllers=garbagecollector,job,namespace,serviceaccount,serviceaccount-token".into(),
        format!("--service-account-private-key-file={}", f.path("sa.key")),
        format!("--root-ca-file={}", f.path("ca.crt")),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=false".into(),
        "--secure-port=0".into(),
        "--port=0".into(),
    ]
}

fn failure(p: &mut Supervised, what: &str) -> LaunchError {
    let tail = p.log_tail(TAIL);
    let msg = format!(
        "{} {what}; last {TAIL} lines of {}:\n{tail}",
        p.name,
        p.log.display()
    );
    if tail.contains("address already in use") {
        LaunchError::PortInUse(msg)
    } else {
        LaunchError::Other(anyhow::anyhow!(msg))
    }
}

/// First exited process, as an error.
fn check_exited(procs: &mut [Supervised]) -> Result<(), LaunchError> {
    for p in procs.iter_mut() {
        if let Some(status) = p.exit_status() {
            return Err(failure(p, &format!("exited ({status})")));
        }
    }
    Ok(())
}

async fn readyz(client: &kube::Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

/// Starts etcd + kube-apiserver (+ controller manager) and waits until they serve.
/// On error every process started here is stopped (by `Supervised`'s drop).
pub(crate) async fn launch(
    bins: &KubeBinaries,
    f: &Files,
    watchdog: &Watchdog,
    attempt: u32,
    controller_manager: bool,
    extra_apiserver_args: &[String],
) -> Result<Running, LaunchError> {
    let [etcd_port, peer_port, port] = free_ports().map_err(anyhow::Error::from)?;
    let url = format!("https://127.0.0.1:{port}");
    kubeconfig::write(
        &f.dir.join("admin.kubeconfig"),
        &f.name,
        &url,
        &f.ca_pem,
        &f.admin,
    )
    .map_err(anyhow::Error::from)?;
    let log = |n: &str| f.dir.join(format!("{n}.log"));
    let spawn = |name, bin: &Path, args: &[String], log_path| {
        Supervised::spawn(name, bin, args, log_path, watchdog)
            .map_err(|e| anyhow::anyhow!("cannot start {name} ({}): {e}", bin.display()))
    };

    let mut procs = Vec::new();
    let etcd_data = f.path(&format!("etcd-{attempt}"));
    procs.push(spawn(
        "etcd",
        &bins.etcd,
        &etcd_args(&etcd_data, etcd_port, peer_port),
        log("etcd"),
    )?);
    let mut args = apiserver_args(f, etcd_port, port, controller_manager);
    args.extend(extra_apiserver_args.iter().cloned());
    procs.push(spawn(
        "kube-apiserver",
        &bins.apiserver,
        &args,
        log("kube-apiserver"),
    )?);

    let client = kubeconfig::client(&f.name, &url, &f.ca_pem, Auth::Cert(&f.admin)).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        check_exited(&mut procs)?;
        if readyz(&client).await {
            break;
        }
        if Instant::now() > deadline {
            let api = failure(&mut procs[1], "not ready after 90 s");
            let etcd_tail = procs[0].log_tail(TAIL);
            return Err(LaunchError::Other(anyhow::anyhow!(
                "{api}\n--- etcd log tail:\n{etcd_tail}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if controller_manager {
        procs.push(spawn(
            "kube-controller-manager",
            &bins.controller_manager,
            &controller_manager_args(f),
            log("kube-controller-manager"),
        )?);
        wait_controllers_started(&mut procs).await?;
    }
    Ok(Running { port, url, procs })
}

/// Waits until the controller manager logs that its controllers started.
async fn wait_controllers_started(procs: &mut [Supervised]) -> Result<(), LaunchError> {
    let deadline = Instant::now() + CM_TIMEOUT;
    let cm_index = procs.len() - 1;
    loop {
        check_exited(procs)?;
        let text = std::fs::read_to_string(&procs[cm_index].log).unwrap_or_default();
        if ["garbagecollector", "job", "namespace"]
            .iter()
            .all(|c| text.contains(&format!("Started \"{c}\"")))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(failure(
                &mut procs[cm_index],
                "did not start its controllers in 60 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
