//! The agent-facing gRPC service `vclink.v1.Link`: authentication seam, the pure
//! per-stream state machine, the scope check against the hub's state, and the tonic
//! service that drives it (limits, re-verification, token rotation).

pub mod auth;
pub mod scope;
pub mod service;
pub mod session;
