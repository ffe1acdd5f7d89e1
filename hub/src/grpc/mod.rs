//! The agent edge: everything between an agent's TCP connection and the hub's shared
//! state. It never touches the Rancher adapter; identities come from
//! [`crate::identity`], state changes go through [`crate::state::Hub`].
//!
//! - [`service`]: the tonic service `vclink.v1.Link` (Hello, authentication, limits,
//!   re-verification, feeding the session state machine into the hub).
//! - [`tls`]: the listener's rustls config and concurrent-handshake accept loop.
//! - [`certreload`]: the serving certificate, re-read when its files change.
//! - [`forward`]: a standby replica's byte-for-byte forwarding to the leader.

pub(crate) mod certreload;
pub(crate) mod forward;
pub mod service;
pub mod tls;
