//! Leader election over a `coordination.k8s.io/v1` Lease, so the hub can run as several
//! replicas. The hub keeps every agent stream and the reconcile state in memory, so
//! exactly one replica may serve agents and write to Rancher: the Lease holder. The
//! others stand by (live, ready to take over, forwarding agents to the leader) and retry.
//!
//! The algorithm is client-go's: a standby takes the Lease only when its record has not
//! changed for the lease duration *as observed on this replica's own clock* (so clock
//! skew between nodes does not matter); every write carries the resourceVersion read, so
//! two standbys cannot both win. A leader that cannot renew within the renew deadline
//! steps down: its work is cancelled and the process exits non-zero, to come back as a
//! standby; a leader shutting down releases the Lease so a standby takes over at once.
//!
//! Agents reach the hub through one Service that selects every replica (all are Ready, so
//! a rolling update never waits on a standby). The leader writes its own address
//! (`--pod-ip` and the gRPC port) into the Lease's `vclink.io/leader-address` annotation;
//! a standby forwards every gRPC connection it receives there, byte for byte (TLS stays
//! end to end, `grpc::forward`). This needs `get`/`update` on the one Lease object and
//! nothing else: no Pod labels, no Endpoints.
//!
//! Hand-written rather than a crate: the maintained lease crates lag kube's major
//! versions, and this is one small loop over one object.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vclink_proto::ratelimit::Fence;

use crate::config::Args;

/// Annotation of the Lease naming the leader's gRPC address (`<ip>:<port>`).
pub const ANNOTATION_LEADER_ADDRESS: &str = "vclink.io/leader-address";

/// Settings of one elector.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace and name of the Lease.
    pub namespace: String,
    pub lease: String,
    /// Unique per process: `<pod or host>_<random>`.
    pub identity: String,
    /// This replica's gRPC address (`<pod ip>:<port>`) for standbys to forward to.
    pub advertise: Option<String>,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// From the hub's flags; `None` when leader election is off.
    pub fn from_args(args: &Args, default_namespace: &str) -> anyhow::Result<Option<Self>> {
        if !args.leader_election {
            return Ok(None);
        }
        let (d, r, p) = (
            args.leader_election_lease_duration,
            args.leader_election_renew_deadline,
            args.leader_election_retry_period,
        );
        crate::config::leader_timings(d, r, p).map_err(anyhow::Error::msg)?;
        let base = args
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "vclink-hub".to_owned());
        if args.pod_ip.is_none() {
            tracing::warn!(
                "--leader-election without --pod-ip: standbys cannot forward agents to this \
                 replica when it leads; only a Service routing to the leader alone works"
            );
        }
        let suffix: u32 = rand::rng().random();
        Ok(Some(LeaderConfig {
            namespace: args
                .leader_election_namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_owned()),
            lease: args.leader_election_lease.clone(),
            identity: format!("{base}_{suffix:08x}"),
            advertise: args
                .pod_ip
                .map(|ip| std::net::SocketAddr::new(ip, args.listen.port()).to_string()),
            lease_duration: d,
            renew_deadline: r,
            retry_period: p,
        }))
    }
}

/// Why a leader stopped leading.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its work was cancelled (shutdown): release the Lease.
    Stopped,
    /// It could not keep the Lease; the reason is for the log.
    Lost(String),
}

/// What this replica last saw in the Lease, and when (its own monotonic clock).
#[derive(PartialEq, Eq)]
struct Record {
    holder: String,
    renew: Option<String>,
    duration: i32,
}

impl Record {
    /// The fields of `spec` whose change means the holder is alive; a missing duration
    /// counts as `default_duration`.
    fn of(spec: &LeaseSpec, default_duration: i32) -> Self {
        Record {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            renew: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            duration: spec.lease_duration_seconds.unwrap_or(default_duration),
        }
    }
}

/// One replica's view of the election.
pub struct Elector {
    cfg: LeaderConfig,
    leases: Api<Lease>,
    /// The current leader's address, as the Lease says (None: unknown or expired).
    leader_address: watch::Sender<Option<String>>,
    observed: Option<(Record, Instant)>,
    /// Holder seen by the last failed attempt (for status and logs).
    pub holder: Option<String>,
    /// Whether this replica may write: held for the renew deadline after each renewal
    /// (measured from before the request), closed on loss or release.
    fence: Fence,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: LeaderConfig) -> Self {
        Elector {
            leases: Api::namespaced(client, &cfg.namespace),
            leader_address: watch::Sender::new(None),
            cfg,
            observed: None,
            holder: None,
            fence: Fence::closed(),
        }
    }

    /// The write fence the leader's writers check (see [`Fence`]).
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.cfg
    }

    /// Follows the leader's address (what a standby forwards agents to).
    pub fn leader_address(&self) -> watch::Receiver<Option<String>> {
        self.leader_address.subscribe()
    }

    /// Waits until this replica holds the Lease. `Ok(false)`: `shutdown` came first.
    pub async fn acquire(&mut self, shutdown: &CancellationToken) -> anyhow::Result<bool> {
        let mut logged_holder: Option<String> = None;
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    self.fence.extend_until(started + self.cfg.renew_deadline);
                    tracing::info!(lease = %self.lease_ref(), identity = %self.cfg.identity, "acquired the leader lease; serving");
                    return Ok(true);
                }
                Ok(false) => {
                    if self.holder != logged_holder {
                        tracing::info!(lease = %self.lease_ref(), holder = self.holder.as_deref().unwrap_or(""), "standing by: another replica leads");
                        logged_holder = self.holder.clone();
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.lease_ref(), error = %e, "leader election: cannot read or write the lease; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(jitter(self.cfg.retry_period)) => {}
            }
        }
    }

    /// Renews the Lease every retry period until `work` is cancelled (→ `Stopped`) or
    /// renewal fails for the renew deadline or another replica took it (→ `Lost`, and
    /// `work` is cancelled so this replica stops writing at once).
    pub async fn hold(&mut self, work: &CancellationToken) -> Outcome {
        let mut last_renewed = Instant::now();
        loop {
            tokio::select! {
                _ = work.cancelled() => return Outcome::Stopped,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            let budget = self
                .cfg
                .renew_deadline
                .saturating_sub(last_renewed.elapsed())
                .max(Duration::from_millis(100));
            let started = Instant::now();
            let lost = match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    // A standby takes over no earlier than the lease duration after it
                    // saw this renewal, which it saw after `started`.
                    self.fence.extend_until(started + self.cfg.renew_deadline);
                    last_renewed = Instant::now();
                    continue;
                }
                Ok(Ok(false)) => Some(format!(
                    "replica {} holds the lease now",
                    self.holder.as_deref().unwrap_or("?")
                )),
                Ok(Err(e)) if last_renewed.elapsed() >= self.cfg.renew_deadline => Some(format!(
                    "could not renew for {:?}: {e}",
                    self.cfg.renew_deadline
                )),
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.lease_ref(), error = %e, "could not renew the leader lease; retrying");
                    None
                }
                Err(_) if last_renewed.elapsed() >= self.cfg.renew_deadline => Some(format!(
                    "could not renew for {:?}: the API server did not answer",
                    self.cfg.renew_deadline
                )),
                Err(_) => None,
            };
            if let Some(reason) = lost {
                self.fence.close();
                work.cancel();
                return Outcome::Lost(reason);
            }
        }
    }

    /// Gives the Lease up (holder cleared, 1 s duration) so a standby takes over now.
    pub async fn release(&mut self) -> anyhow::Result<()> {
        self.fence.close();
        let Some(mut lease) = self.leases.get_opt(&self.cfg.lease).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.cfg.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Some(a) = lease.metadata.annotations.as_mut() {
            a.remove(ANNOTATION_LEADER_ADDRESS);
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.leases
            .replace(&self.cfg.lease, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.lease_ref(), "released the leader lease");
        Ok(())
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.cfg.namespace, self.cfg.lease)
    }

    /// One round: `Ok(true)` if this replica holds the Lease afterwards. A conflict
    /// (someone else wrote the Lease between our read and write — another replica, or
    /// `helm upgrade` relabelling it) is re-read and decided again, a few times.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        for _ in 0..3 {
            if let Some(held) = self.attempt().await? {
                return Ok(held);
            }
        }
        // Still contended: do not assume the Lease is ours (a leader steps down).
        Ok(false)
    }

    /// Read, decide, write. `Ok(None)`: the write conflicted.
    async fn attempt(&mut self) -> Result<Option<bool>, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.leases.get_opt(&self.cfg.lease).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.lease.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    annotations: self
                        .cfg
                        .advertise
                        .as_ref()
                        .map(|a| [(ANNOTATION_LEADER_ADDRESS.to_owned(), a.clone())].into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(l) => Ok(Some(self.won(&l))),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                Err(e) => Err(e),
            };
        };
        let record = Record::of(lease.spec.get_or_insert_with(LeaseSpec::default), duration);
        let holder = record.holder.clone();
        let held_for = u64::try_from(record.duration.max(1)).unwrap_or(1);
        let seen_at = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record, seen_at));
        let mine = holder == self.cfg.identity;
        let expired = holder.is_empty() || seen_at.elapsed() >= Duration::from_secs(held_for);
        if !mine && !expired {
            let address = lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_LEADER_ADDRESS))
                .cloned();
            let address = forwardable(address, self.cfg.advertise.as_deref());
            self.leader_address
                .send_if_modified(|a| replace_if_changed(a, address));
            self.holder = Some(holder);
            return Ok(Some(false));
        }
        self.leader_address
            .send_if_modified(|a| replace_if_changed(a, None));
        let annotations = lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        match &self.cfg.advertise {
            Some(addr) => annotations.insert(ANNOTATION_LEADER_ADDRESS.to_owned(), addr.clone()),
            None => annotations.remove(ANNOTATION_LEADER_ADDRESS),
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.cfg.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now);
        // `replace` sends the resourceVersion just read: a concurrent winner makes it 409.
        match self
            .leases
            .replace(&self.cfg.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => Ok(Some(self.won(&l))),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records the Lease this replica just wrote; always `true` (it holds it).
    fn won(&mut self, lease: &Lease) -> bool {
        let spec = lease.spec.clone().unwrap_or_default();
        self.observed = Some((Record::of(&spec, 0), Instant::now()));
        self.holder = Some(self.cfg.identity.clone());
        true
    }
}

/// A standby's retry period with ±20% jitter, so standbys do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// The leader address a standby may forward to: never its own. A hub restarted in the
/// same pod (same IP and port) finds its previous process still named in the Lease until
/// it expires; forwarding there would forward to itself, again and again. That is "no
/// leader yet": connections are closed and agents retry until this replica takes over.
fn forwardable(address: Option<String>, own: Option<&str>) -> Option<String> {
    address.filter(|a| own.is_none_or(|own| !same_address(a, own)))
}

/// Whether two `ip:port` texts name the same socket (`[::1]:1` and `[0:0::1]:1` do).
pub(crate) fn same_address(a: &str, b: &str) -> bool {
    match (
        a.parse::<std::net::SocketAddr>(),
        b.parse::<std::net::SocketAddr>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim() == b.trim(),
    }
}

fn replace_if_changed(current: &mut Option<String>, new: Option<String>) -> bool {
    if *current == new {
        return false;
    }
    *current = new;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_never_forwards_to_its_own_address() {
        let own = Some("10.0.0.5:8443");
        assert_eq!(forwardable(Some("10.0.0.5:8443".into()), own), None);
        assert_eq!(
            forwardable(Some("10.0.0.6:8443".into()), own).as_deref(),
            Some("10.0.0.6:8443")
        );
        assert_eq!(
            forwardable(Some("10.0.0.6:8443".into()), None).as_deref(),
            Some("10.0.0.6:8443")
        );
        assert_eq!(forwardable(None, own), None);
        assert!(same_address("[::1]:8443", "[0:0::1]:8443"));
        assert!(!same_address("10.0.0.5:8443", "10.0.0.5:8444"));
    }
}
