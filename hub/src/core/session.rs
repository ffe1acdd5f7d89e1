//! The per-stream protocol state machine, pure: it takes one agent message after Hello,
//! validates it, checks that it stays within the stream's verified cluster and the
//! per-agent limit, and turns it into an [`Effect`] for the hub's shared state. A
//! rejected message changes nothing (checked by a property test) and closes the stream
//! with the [`Reject`]'s gRPC code.

use std::collections::HashSet;

use tonic::Code;
use vclink_proto::v1::{AgentMessage, RegistrationProgress, VCluster, agent_message::Msg};
use vclink_proto::validate;

/// What an accepted message means for the hub.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// A complete snapshot: the host's reported set is exactly this.
    Snapshot(Vec<VCluster>),
    /// One vCluster added or changed.
    Upsert(VCluster),
    /// One vCluster gone (by Service UID).
    Remove(String),
    /// Registration progress.
    Progress(RegistrationProgress),
}

/// Why a message was refused; the stream is closed with `code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// gRPC status code.
    pub code: Code,
    /// Low-cardinality metric label.
    pub reason: &'static str,
    /// Message for the agent (no credentials; bounded).
    pub message: String,
}

impl Reject {
    fn invalid(e: validate::Invalid) -> Self {
        Self {
            code: Code::InvalidArgument,
            reason: "invalid",
            message: e.to_string(),
        }
    }

    fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    /// As a gRPC status.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.code, self.message.clone())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Partial {
    generation: u64,
    vclusters: Vec<VCluster>,
    uids: HashSet<String>,
}

/// State of one attached stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    cluster_id: String,
    limit: usize,
    known: HashSet<String>,
    partial: Option<Partial>,
}

impl SessionState {
    /// A stream verified for `cluster_id`, allowed `limit` vClusters.
    pub fn new(cluster_id: impl Into<String>, limit: usize) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            limit,
            known: HashSet::new(),
            partial: None,
        }
    }

    /// Number of vClusters the agent currently reports.
    #[cfg(test)]
    pub fn known(&self) -> usize {
        self.known.len()
    }

    /// Handles one message after Hello. `Ok(None)` means nothing to do (Heartbeat, or a
    /// message kind from a newer agent that this hub does not know and ignores).
    pub fn handle(&mut self, msg: AgentMessage) -> Result<Option<Effect>, Reject> {
        match msg.msg {
            // Reauth is verified by the service (it needs the authenticator, which is
            // async I/O); it never reaches this pure state machine with an effect.
            None | Some(Msg::Heartbeat(_)) | Some(Msg::Reauth(_)) => Ok(None),
            Some(Msg::Hello(_)) => Err(Reject::new(
                Code::InvalidArgument,
                "duplicate_hello",
                "Hello may only be the first message",
            )),
            Some(Msg::Snapshot(s)) => {
                validate::snapshot(&s).map_err(Reject::invalid)?;
                self.scope_all(&s.vclusters)?;
                let mut uids = match &self.partial {
                    Some(p) if p.generation == s.generation => p.uids.clone(),
                    _ => HashSet::new(),
                };
                for v in &s.vclusters {
                    if !uids.insert(v.uid.clone()) {
                        return Err(Reject::new(
                            Code::InvalidArgument,
                            "duplicate_uid",
                            format!("snapshot lists vCluster {} twice", v.uid),
                        ));
                    }
                }
                if uids.len() > self.limit {
                    return Err(self.over_limit());
                }
                // All checks passed: now change state.
                let mut vclusters = match self.partial.take() {
                    Some(p) if p.generation == s.generation => p.vclusters,
                    _ => Vec::new(),
                };
                vclusters.extend(s.vclusters);
                if s.last {
                    self.known = uids;
                    Ok(Some(Effect::Snapshot(vclusters)))
                } else {
                    self.partial = Some(Partial {
                        generation: s.generation,
                        vclusters,
                        uids,
                    });
                    Ok(None)
                }
            }
            Some(Msg::Upsert(u)) => {
                let Some(v) = u.vcluster else {
                    return Err(Reject::new(
                        Code::InvalidArgument,
                        "invalid",
                        "invalid upsert.vcluster: missing",
                    ));
                };
                validate::vcluster("upsert.vcluster", &v).map_err(Reject::invalid)?;
                self.scope(&v)?;
                if !self.known.contains(&v.uid) && self.known.len() >= self.limit {
                    return Err(self.over_limit());
                }
                self.known.insert(v.uid.clone());
                Ok(Some(Effect::Upsert(v)))
            }
            Some(Msg::Remove(r)) => {
                validate::remove(&r).map_err(Reject::invalid)?;
                self.known.remove(&r.uid);
                Ok(Some(Effect::Remove(r.uid)))
            }
            Some(Msg::Progress(p)) => {
                validate::progress(&p).map_err(Reject::invalid)?;
                Ok(Some(Effect::Progress(p)))
            }
        }
    }

    fn over_limit(&self) -> Reject {
        Reject::new(
            Code::ResourceExhausted,
            "too_many_vclusters",
            format!("more than {} vClusters reported by one agent", self.limit),
        )
    }

    fn scope_all(&self, vs: &[VCluster]) -> Result<(), Reject> {
        vs.iter().try_for_each(|v| self.scope(v))
    }

    /// Scope check: an agent may only speak for vClusters of its own cluster. The key of
    /// every vCluster is (stream cluster, uid), so only the project reference can point
    /// elsewhere.
    fn scope(&self, v: &VCluster) -> Result<(), Reject> {
        match v.project_id.split_once(':') {
            Some((cluster, _)) if cluster != self.cluster_id => Err(Reject::new(
                Code::PermissionDenied,
                "foreign_project",
                format!(
                    "vCluster {} names a project of cluster {cluster}, not {}",
                    v.uid, self.cluster_id
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
