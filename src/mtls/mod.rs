//! Mutual TLS (feature `mtls`): client certificates reach the layers as a
//! [`ClientCertificate`] request extension.
//!
//! * certificate-bound access tokens (RFC 8705 §3): [`JwtAuthenticator`](crate::jwt::JwtAuthenticator)
//!   accepts a token whose `cnf["x5t#S256"]` is set only over a connection whose client
//!   certificate has that thumbprint;

mod identity;

pub use self::identity::{CertSubject, ClientCertAuthenticator, ClientCertAuthenticatorBuilder};
pub use crate::cert::ClientCertificate;
