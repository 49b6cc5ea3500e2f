//! # tower-api-guard
//!
//! Tower layers that protect an HTTP or gRPC API. Authentication produces one
//! [`Identity`]; everything after it (guards, rate limits, handlers) reads that
//! identity and never cares which credential produced it.
//!
//! ```text
//! request ─► [Auth: JWT | API key | both] ─► [Require: scopes / roles / ownership / policy] ─► handler
//! ```
//!
//! * [`auth`]: [`AuthLayer`](auth::AuthLayer), the [`Authenticator`](auth::Authenticator)
//!   trait and its combinators `or` and `optional`.
//! * [`jwt`] (feature `jwt`): strict bearer-JWT verification.
//! * [`extract`]: where credentials are read from (bearer header, custom header, cookie).
//! * [`error`]: [`AuthError`], [`ConfigError`], [`FailurePolicy`].
//! * [`render`]: how a rejection becomes a response (RFC 6750 for HTTP, gRPC statuses);
//!   one renderer set on the outermost layer applies to the whole stack.
//! * [`gate`]: the one mechanism every layer is built on (for the curious and for
//!   contributors: users meet it only through the layers).
//! * `api_key` (feature `api-key`): checksummed API keys looked up by digest.
//! * `rate_limit` (feature `rate-limit`): per-identity GCRA limits with standard headers,
//!   and the in-flight limit.
//! * `GuardLayer` (feature `rate-limit`): the usual stack in one layer — the brute-force
//!   guard (`auth::BruteForceGuardLayer`), authentication, the rate limit — for one axum
//!   `route_layer`.
//! * `authz` (feature `authz`): `RequireLayer`, scope / role / expression / predicate guards,
//!   fallible async checks, ownership, and the route table.
//! * `policy` (features `policy`, `cedar`, `rego`, `opa`): policy engines behind
//!   `RequireLayer` (Cedar, Rego in process, an OPA sidecar), reloaded without a deploy.
//! * `axum` (feature `axum`): extractors for [`Identity`] and `Claims<T>`.
//! * `testing` (feature `testing`): `TestIssuer`, key pairs, token minting and a JWKS server;
//!   `caller`, `with_identity` and `IdentityLayer`, to test guards and limiters without a
//!   credential.
//!
//! # Example
//!
//! ```
//! # #[cfg(all(feature = "jwt", feature = "testing"))]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_api_guard::{auth::AuthLayer, jwt::JwtAuthenticator, testing::TestIssuer, Identity};
//! use http::{Request, Response, StatusCode};
//!
//! let issuer = TestIssuer::new("https://issuer.example");
//! let jwt = JwtAuthenticator::builder("https://issuer.example", "my-api")
//!     .keys(issuer.static_keys())
//!     .build()
//!     .unwrap();
//!
//! let service = ServiceBuilder::new()
//!     .layer(AuthLayer::new(jwt))
//!     .service_fn(|req: Request<String>| async move {
//!         let identity = req.extensions().get::<Identity>().unwrap();
//!         Ok::<_, std::convert::Infallible>(Response::new(identity.subject().to_owned()))
//!     });
//!
//! let token = issuer.token().subject("alice").audience("my-api").mint();
//! let request = Request::get("/")
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(String::new())
//!     .unwrap();
//! let response = service.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let response = service.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(all(
    feature = "jwt",
    not(any(feature = "aws-lc-rs", feature = "rust-crypto"))
))]
compile_error!(
    "tower-api-guard: the `jwt` feature needs a crypto backend: enable `aws-lc-rs` (default) or `rust-crypto`"
);

pub mod auth;
pub mod body;
#[cfg(feature = "jwt")]
mod cert;
#[cfg(any(feature = "jwt", feature = "rate-limit", feature = "policy"))]
mod client;
pub mod clock;
pub mod error;
pub mod extract;
pub mod gate;
mod head;
pub mod identity;
pub mod render;

#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "authz")]
#[cfg_attr(docsrs, doc(cfg(feature = "authz")))]
pub mod authz;

#[cfg(feature = "policy")]
#[cfg_attr(docsrs, doc(cfg(feature = "policy")))]
pub mod policy;

#[cfg(feature = "api-key")]
#[cfg_attr(docsrs, doc(cfg(feature = "api-key")))]
pub mod api_key;

#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub mod rate_limit;

#[cfg(feature = "mtls")]
#[cfg_attr(docsrs, doc(cfg(feature = "mtls")))]
pub mod mtls;

#[cfg(feature = "upstream")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream")))]
pub mod upstream;

#[cfg(feature = "introspection")]
#[cfg_attr(docsrs, doc(cfg(feature = "introspection")))]
pub mod introspection;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub mod audit;
pub mod metrics;

#[cfg(feature = "rate-limit")]
mod stack;
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub use stack::{Guard, GuardLayer};

#[cfg(feature = "redis")]
mod redis_conn;
#[cfg(feature = "redis")]
pub use redis_conn::RedisConnection;

#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use cert::ClientCertificate;
#[cfg(any(feature = "jwt", feature = "rate-limit", feature = "policy"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "jwt", feature = "rate-limit", feature = "policy")))
)]
pub use client::ClientAddr;
pub use error::{
    AuthError, AuthErrorKind, ConfigError, ConfigErrorKind, DpopChallenge, FailurePolicy,
    ReasonCode,
};
pub use head::RequestHead;
pub use identity::{Identity, RoleModel, Roles, Scopes, Source};
