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
//!   [`WithConnection`] (reusable in a hyper accept loop of your own);
//! * certificate identities (service to service): [`ClientCertAuthenticator`] turns the
//!   certificate into an [`Identity`](crate::Identity) whose subject is its SPIFFE ID, DNS
//!   name or common name, with roles and scopes granted per subject; it composes with the
//!   others (`jwt.or(certs)`);
//! * certificates forwarded by a trusted TLS-terminating proxy: [`ForwardedClientCertLayer`]
//!   reads Envoy's `X-Forwarded-Client-Cert` or nginx's escaped PEM header, only from the
//!   proxies of a [`ClientAddr`](crate::ClientAddr), into the same extension.
//!
//! # Example
//!
//! Behind Envoy at `10.0.0.0/8`, services authenticate with their SPIFFE certificates:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::net::SocketAddr;
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_api_guard::auth::AuthLayer;
//! use tower_api_guard::mtls::{ClientCertAuthenticator, ForwardedClientCertLayer};
//! use tower_api_guard::{ClientAddr, Identity};
//!
//! let certs = ClientCertAuthenticator::builder()
//!     .trust_domains(["example.org"])
//!     .grant("spiffe://example.org/billing", ["billing"], ["invoices:write"])
//!     .require_mapping()
//!     .build()
//!     .unwrap();
//! let proxies = ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(ForwardedClientCertLayer::xfcc(proxies))
//!     .layer(AuthLayer::new(certs))
//!     .service_fn(|req: Request<()>| async move {
//!         let identity = req.extensions().get::<Identity>().unwrap();
//!         assert!(identity.has_scope("invoices:write"));
//!         Ok::<_, std::convert::Infallible>(Response::new(()))
//!     });
//!
//! // A workload certificate, as Envoy forwards it (URL-encoded PEM).
//! let mut params = rcgen::CertificateParams::default();
//! params.subject_alt_names =
//!     vec![rcgen::SanType::URI("spiffe://example.org/billing".try_into().unwrap())];
//! let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
//! let escaped: String = cert.pem().bytes().map(|b| format!("%{b:02X}")).collect();
//!
//! let mut request = Request::builder()
//!     .header("x-forwarded-client-cert", format!("By=spiffe://example.org/gw;Cert=\"{escaped}\""))
//!     .body(())
//!     .unwrap();
//! // The TCP peer (axum's `ConnectInfo` does this): the proxy.
//! request.extensions_mut().insert("10.0.0.7:40000".parse::<SocketAddr>().unwrap());
//! let response = svc.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # });
//! ```
//!
//! Serving over TLS, with client certificates optional:
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

mod forwarded;
mod identity;
mod serve;

pub use self::forwarded::{
    CertHeader, DEFAULT_MAX_CERT_HEADER_LEN, ForwardedClientCert, ForwardedClientCertLayer,
    ReadForwardedCert,
};
pub use self::identity::{CertSubject, ClientCertAuthenticator, ClientCertAuthenticatorBuilder};
pub use crate::cert::ClientCertificate;
pub use serve::{WithConnection, serve_tls, serve_tls_with_shutdown, server_config};
