//! Mutual TLS (feature `mtls`): client certificates reach the layers as a
//! [`ClientCertificate`] request extension.
//!
//! * certificate-bound access tokens (RFC 8705 §3): [`JwtAuthenticator`](crate::jwt::JwtAuthenticator)
//!   accepts a token whose `cnf["x5t#S256"]` is set only over a connection whose client
//!   certificate has that thumbprint;

mod forwarded;
mod identity;

pub use self::forwarded::{
    CertHeader, DEFAULT_MAX_CERT_HEADER_LEN, ForwardedClientCert, ForwardedClientCertLayer,
    ReadForwardedCert,
};
pub use self::identity::{CertSubject, ClientCertAuthenticator, ClientCertAuthenticatorBuilder};
pub use crate::cert::ClientCertificate;
