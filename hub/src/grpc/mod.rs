//! The agent-facing gRPC service `vclink.v1.Link`: authentication seam, the pure
//! per-stream state machine, and the tonic service that drives it.

pub mod auth;
pub mod service;
pub mod session;
