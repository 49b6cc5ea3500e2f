//! Mutual TLS (feature `mtls`): client certificates reach the layers as a
//! [`ClientCertificate`] request extension.
//!
//! * certificate-bound access tokens (RFC 8705 §3): [`JwtAuthenticator`](crate::jwt::JwtAuthenticator)
//!   accepts a token whose `cnf["x5t#S256"]` is set only over a connection whose client
//!   certificate has that thumbprint;
//! * a TLS server that puts the extension there: [`server_config`] builds a rustls
//!   configuration in which client certificates are requested, optional, and verified
//!   against your CA; [`serve_tls`] (or [`serve_tls_with_shutdown`]) serves any tower
//!   service, an axum `Router` included, over HTTP/1.1 and HTTP/2, reading each connection's
//!   certificate once and inserting it, with the peer address, into every request through
//!   [`WithConnection`] (reusable in a hyper accept loop of your own).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_api_guard::mtls::{ClientCertificate, serve_tls, server_config};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = server_config(
//!     &std::fs::read("server.pem")?,
//!     &std::fs::read("server.key")?,
//!     Some(&std::fs::read("client-ca.pem")?),
//! )?;
//! let app = Router::new().route(
//!     "/",
//!     get(|cert: Option<axum::Extension<ClientCertificate>>| async move {
//!         match cert {
//!             Some(axum::Extension(cert)) => cert.x5t_s256(),
//!             None => "no client certificate".to_owned(),
//!         }
//!     }),
//! );
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! serve_tls(listener, config, app).await?;
//! # Ok(())
//! # }
//! ```

mod serve;

pub use crate::cert::ClientCertificate;
pub use serve::{WithConnection, serve_tls, serve_tls_with_shutdown, server_config};
