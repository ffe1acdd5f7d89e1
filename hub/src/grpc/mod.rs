//! The agent edge: everything between an agent's TCP connection and the hub's shared
//! state. It never touches the Rancher adapter; identities come from
//! [`crate::identity`], state changes go through [`crate::state::Hub`].
//!
//! - [`service`]: the tonic service `vclink.v1.Link` (Hello, authentication, limits,
//!   feeding the session state machine into the hub).
//! - [`reverify`]: checking a stream's token again while it runs, and `Reauth`.
//! - [`tls`]: the listener's rustls config and concurrent-handshake accept loop.
//! - [`certreload`]: the serving certificate, re-read when its files change.
//! - [`forward`]: a standby replica's byte-for-byte forwarding to the leader (no loops).
//! - [`edge`]: the server around the service and every bound on a client that is not
//!   yet authenticated (connections, handshakes, streams, Hello size, HTTP/2 windows).
//! - [`gate`]: fair shares of the handshake and unauthenticated-stream budgets by
//!   client IP (per-IP caps, a reserve for IPs with recently verified agents).
//! - [`health`]: `grpc.health.v1` for probes (also on a plaintext `--health-listen`).

pub(crate) mod certreload;
pub mod edge;
pub mod forward;
pub mod gate;
pub(crate) mod health;
pub(crate) mod reverify;
pub mod service;
pub mod tls;
