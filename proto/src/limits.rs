//! Bounds both sides enforce, so one agent cannot exhaust the hub and a hub cannot
//! flood an agent. Kept together so the README, the hub and the agent agree.

/// Largest encoded gRPC message either side accepts (bytes).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Most vClusters in one Snapshot chunk; larger snapshots are split.
pub const MAX_SNAPSHOT_CHUNK: usize = 500;
/// Default most vClusters one agent may report (the hub's limit is configurable).
pub const DEFAULT_MAX_VCLUSTERS_PER_AGENT: usize = 5_000;
/// Longest free-text message (errors, reasons) carried on the wire.
pub const MAX_MESSAGE_TEXT: usize = 1024;
/// Longest manifest URL the hub sends.
pub const MAX_URL_LEN: usize = 4096;
/// Longest CA bundle the hub sends (bytes of PEM).
pub const MAX_CA_LEN: usize = 64 * 1024;
