//! Mutual TLS (feature `mtls`): client certificates reach the layers as a
//! [`ClientCertificate`] request extension.
//!
//! * certificate-bound access tokens (RFC 8705 §3): [`JwtAuthenticator`](crate::jwt::JwtAuthenticator)
//!   accepts a token whose `cnf["x5t#S256"]` is set only over a connection whose client
//!   certificate has that thumbprint;
//! * [`serve_tls`] serves an axum `Router` (any tower service) over TLS with client
//!   certificates requested and optional ([`server_config`]); each connection's
//!   certificate is read once, at the handshake, and put on every request of it.

mod serve;

pub use crate::cert::ClientCertificate;
pub use serve::{
    HANDSHAKE_TIMEOUT, WithConnection, serve_tls, serve_tls_with_shutdown, server_config,
};
