//! The per-stream protocol state machine, pure: it takes one agent message after Hello,
//! validates it, bounds how many vClusters one stream may report at all, and turns it
//! into an [`Effect`] for the hub's shared state. A rejected message changes nothing
//! (checked by a property test) and closes the stream with the [`Reject`]'s gRPC code.
//! Only protocol violations are rejected here; a vCluster that breaks a scope rule or a
//! limit is refused on its own by [`super::scope::Admission`] and the stream goes on.
//!
//! Cost per message: O(1) for `Upsert`, `Remove` and `Progress`, O(n) for a snapshot
//! chunk of n vClusters.

use std::collections::HashSet;

use tonic::Code;
use vclink_proto::v1::{AgentMessage, RegistrationProgress, VCluster, agent_message::Msg};
use vclink_proto::validate;

/// What an accepted message means for the hub.
// One Effect exists per message in flight and is moved, never stored in bulk: boxing
// the report would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
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

/// The retry hint of every "too many at once" refusal (streams, authentications):
/// one wording wherever a client is told to come back.
pub const RETRY_HINT: &str = "retry in 5s";

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

#[derive(Clone, Debug, PartialEq)]
struct Partial {
    generation: u64,
    vclusters: Vec<VCluster>,
    uids: HashSet<String>,
}

/// Most vClusters one stream may report at all (excluded and refused ones included)
/// when the per-agent import limit is `limit`: beyond it the agent is broken or hostile
/// and the stream is closed, so a stream's memory stays bounded.
pub fn reported_cap(limit: usize) -> usize {
    limit
        .saturating_mul(2)
        .saturating_add(vclink_proto::limits::MAX_SNAPSHOT_CHUNK)
}

/// State of one attached stream.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionState {
    cluster_id: String,
    /// [`reported_cap`] of the per-agent limit.
    limit: usize,
    known: HashSet<String>,
    partial: Option<Partial>,
}

impl SessionState {
    /// A stream verified for `cluster_id` whose per-agent import limit is `limit` (it
    /// may report up to [`reported_cap`] vClusters).
    pub fn new(cluster_id: impl Into<String>, limit: usize) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            limit: reported_cap(limit),
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
            format!(
                "more than {} vClusters reported by one agent (excluded ones included)",
                self.limit
            ),
        )
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
