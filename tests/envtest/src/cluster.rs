//! [`Cluster`]: one isolated etcd + kube-apiserver (+ kube-controller-manager) on
//! loopback, with its own CA, admin identity, ServiceAccount signing key and data
//! directory. Dropping it stops every process (see [`crate::procs`] for how nothing
//! survives even when the test process is killed) and removes the data directory,
//! unless `VCLINK_KEEP_TEST_DATA=1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::install;
use crate::kubeconfig::{self, Auth};
use crate::launch::{self, Files, LaunchError};
use crate::pki::{CertificateAuthority, ClientIdentity, ServiceAccountKeys};
use crate::procs::{Supervised, Watchdog};
use crate::slots::Slot;

/// Launch attempts when a picked port was taken by someone else meanwhile.
const ATTEMPTS: u32 = 4;

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Also run kube-controller-manager (garbage collector + Job controller).
    pub controller_manager: bool,
    /// Extra DNS names / IPs for the API server's serving certificate (e.g. a
    /// vCluster's `<name>`, `<name>.<ns>`); 127.0.0.1 and localhost are always there.
    pub extra_sans: Vec<String>,
    /// Extra kube-apiserver flags (`--flag=value`).
    pub extra_apiserver_args: Vec<String>,
}

/// One running, isolated cluster. Dropping it stops all its processes and removes
/// its data directory.
pub struct Cluster {
    name: String,
    url: String,
    port: u16,
    ca: CertificateAuthority,
    admin: ClientIdentity,
    kubeconfig: PathBuf,
    data_dir: PathBuf,
    /// Start order: etcd, kube-apiserver, kube-controller-manager.
    procs: Vec<Supervised>,
    watchdog: Option<Watchdog>,
    /// Removes the directory on drop; `None` once kept or removed.
    tempdir: Option<tempfile::TempDir>,
    /// This test's share of the API-server limit; a field, so it is released only after
    /// `Drop` has stopped the processes.
    _slot: Slot,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

fn write_file(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join(name))?
        .write_all(contents.as_bytes())
}

impl Cluster {
    /// Starts etcd + kube-apiserver (+ controller manager) and waits until `/readyz`.
    ///
    /// The test's first cluster waits for a free API-server slot (see [`crate::slots`]);
    /// its further clusters share that slot.
    ///
    /// The first call on a machine may build the Kubernetes binaries (minutes; progress
    /// on stderr). Without the controller manager the `ServiceAccount` admission plugin
    /// is disabled, since nothing would create the `default` ServiceAccounts Pods need.
    pub async fn start(name: &str, opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bins = tokio::task::spawn_blocking(install::binaries).await??;
        let slot = Slot::for_this_test().await?;

        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let tempdir = tempfile::Builder::new()
            .prefix(&format!("vclink-envtest-{safe}-"))
            .tempdir()?;
        let dir = tempdir.path().to_path_buf();

        let ca = CertificateAuthority::new(&format!("vclink-envtest-{safe}-ca"))?;
        let mut sans: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "10.96.0.1",
        ]
        .map(String::from)
        .to_vec();
        sans.extend(opts.extra_sans.iter().cloned());
        let serving = ca.issue_server(&sans)?;
        let admin = ca.issue_client("admin", &["system:masters"])?;
        let sa = ServiceAccountKeys::generate()?;
        write_file(&dir, "ca.crt", ca.cert_pem())?;
        write_file(&dir, "apiserver.crt", &serving.cert_pem)?;
        write_file(&dir, "apiserver.key", &serving.key_pem)?;
        write_file(&dir, "sa.key", &sa.private_key_pem)?;
        write_file(&dir, "sa.pub", &sa.public_key_pem)?;

        let watchdog = Watchdog::spawn((!keep_requested()).then_some(dir.as_path()))?;
        let files = Files {
            dir: dir.clone(),
            ca_pem: ca.cert_pem().to_string(),
            admin: admin.clone(),
            name: name.to_string(),
        };
        let mut attempt = 1;
        let running = loop {
            match launch::launch(
                &bins,
                &files,
                &watchdog,
                attempt,
                opts.controller_manager,
                &opts.extra_apiserver_args,
            )
            .await
            {
                Ok(r) => break r,
                Err(LaunchError::PortInUse(msg)) if attempt < ATTEMPTS => {
                    tracing::warn!(cluster = name, attempt, "port taken, retrying: {msg}");
                    attempt += 1;
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cluster {name:?} did not start (data in {}): {e}",
                        keep_on_failure(tempdir).display()
                    ));
                }
            }
        };
        Ok(Cluster {
            name: name.to_string(),
            url: running.url,
            port: running.port,
            ca,
            admin,
            kubeconfig: dir.join("admin.kubeconfig"),
            data_dir: dir,
            procs: running.procs,
            watchdog: Some(watchdog),
            tempdir: Some(tempdir),
            _slot: slot,
        })
    }
    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The API server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The cluster CA (signs serving and client certificates) as PEM.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }
    /// Admin (`system:masters`) client identity.
    pub fn admin_identity(&self) -> &ClientIdentity {
        &self.admin
    }
    /// Admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }
    /// Admin client.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.client_for(Auth::Cert(&self.admin)).await
    }
    /// A client certificate for any user/groups, signed by this cluster's CA.
    ///
    /// Panics only if key generation fails, which ring does not do in practice.
    pub fn issue_identity(&self, user: &str, groups: &[&str]) -> ClientIdentity {
        self.ca
            .client_cert(user, groups)
            .expect("issuing a client certificate from a local CA")
    }
    /// A client authenticated as `user` in `groups` (RBAC applies).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
        let id = self.ca.client_cert(user, groups)?;
        self.client_for(Auth::Cert(&id)).await
    }
    /// A client authenticated by any client identity (e.g. one from
    /// [`Cluster::issue_identity`] or another cluster's CA, to test rejection).
    pub async fn client_with_identity(
        &self,
        identity: &ClientIdentity,
    ) -> anyhow::Result<kube::Client> {
        self.client_for(Auth::Cert(identity)).await
    }
    /// Writes a kubeconfig for `identity` to `path`.
    pub fn write_kubeconfig(&self, identity: &ClientIdentity, path: &Path) -> anyhow::Result<()> {
        kubeconfig::write(path, &self.name, &self.url, self.ca.cert_pem(), identity)?;
        Ok(())
    }
    /// Kubeconfig YAML for `identity` (CA, certificate and key embedded).
    pub fn kubeconfig_yaml(&self, identity: &ClientIdentity) -> String {
        kubeconfig::yaml(
            &self.name,
            &self.url,
            self.ca.cert_pem(),
            Auth::Cert(identity),
        )
    }
    /// A client using a bearer token (e.g. a ServiceAccount token).
    pub async fn client_with_token(&self, token: &str) -> anyhow::Result<kube::Client> {
        self.client_for(Auth::Token(token)).await
    }
    /// A per-cluster scratch directory (removed on drop).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// Path of a server's log (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.data_dir.join(format!("{component}.log"))
    }
    /// PIDs of every process this cluster started (servers and the watchdog).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.procs.iter().map(Supervised::pid).collect();
        pids.extend(self.watchdog.as_ref().map(Watchdog::pid));
        pids
    }
    /// Stops all processes and waits for them to exit.
    pub fn stop(self) {}

    async fn client_for(&self, auth: Auth<'_>) -> anyhow::Result<kube::Client> {
        kubeconfig::client(&self.name, &self.url, self.ca.cert_pem(), auth).await
    }
}

fn keep_requested() -> bool {
    std::env::var("VCLINK_KEEP_TEST_DATA").is_ok_and(|v| v == "1")
}

/// Keeps the data directory of a failed start only when asked to; returns its path.
fn keep_on_failure(dir: tempfile::TempDir) -> PathBuf {
    let path = dir.path().to_path_buf();
    if keep_requested() {
        let _ = dir.keep();
    } else {
        drop(dir);
        return PathBuf::from(format!(
            "{} (removed; set VCLINK_KEEP_TEST_DATA=1 to keep)",
            path.display()
        ));
    }
    path
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // API clients first (apiserver, controller manager) in parallel, etcd last so
        // the API server can shut down cleanly.
        let grace = Duration::from_secs(5);
        let first = 1.min(self.procs.len());
        let (etcd, rest) = self.procs.split_at_mut(first);
        for p in rest.iter_mut() {
            p.terminate();
        }
        let deadline = Instant::now() + grace;
        for p in rest.iter_mut() {
            p.wait_or_kill(deadline);
        }
        for p in etcd.iter_mut() {
            p.stop(grace);
        }
        self.procs.clear();
        drop(self.watchdog.take());
        // Otherwise dropping the TempDir removes the directory.
        if let Some(dir) = self.tempdir.take()
            && keep_requested()
        {
            let path = dir.keep();
            eprintln!(
                "[vclink envtest] kept data of cluster {:?} in {}",
                self.name,
                path.display()
            );
        }
    }
}
