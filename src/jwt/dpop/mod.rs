//! DPoP (RFC 9449): sender-constrained access tokens.

mod htu;

pub use htu::ExternalOrigin;
