//! Strict bearer-JWT verification.
//!
//! [`JwtAuthenticator`] parses each token once with its own strict JOSE parser and uses
//! `jsonwebtoken`'s crypto providers for the signature only. What it enforces:
//!
//! **Form.** Compact serialization only (three segments; JWE and JSON serialization are
//! rejected); canonical base64url (no padding, `+`, `/`, whitespace or non-zero trailing
//! bits); header and claims must be JSON objects; duplicate member names are rejected at
//! every depth; nesting is bounded (32); the token is length-capped (8 KiB) before any
//! decoding.
//!
//! **Header.** `alg` must be in the configured allow-list *and* fit the key (RSA ≥ 2048
//! bits for `RS*`/`PS*`, P-256 for `ES256`, P-384 for `ES384`, Ed25519 for `EdDSA`);
//! `none` is never accepted; `HS*` only with an explicitly configured shared secret, never
//! from a JWK set and never keyed with a public key. `crit` and `b64` are rejected. `jku`,
//! `jwk`, `x5u`, `x5c` are never used and never fetched. `kid` is an opaque lookup key of at
//! most 256 bytes. An optional `typ` requirement (e.g. `at+jwt`).
//!
//! **Claims.** `exp` is required; `nbf` and `iat` are honoured; leeway 60 s by default;
//! `iss` must equal the configured issuer exactly; `aud` is required, a string or a
//! non-empty array containing a configured audience; optional maximum age and required
//! claims. A registered claim of the wrong JSON type is an error, never "absent"; dates must
//! be finite numbers between 0 and year 9999, so huge values cannot overflow.
//!
//! **Identity.** Subject from `sub` (or configured fallbacks such as `client_id`), scopes
//! from `scope` (space-delimited) or `scp` (string or array), roles from configurable claim
//! paths such as Keycloak's `realm_access.roles`; a scope or role claim of the wrong type is
//! a 401.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tower_api_guard::jwt::{Algorithm, JwtAuthenticator};
//! use tower_api_guard::testing::TestIssuer;
//!
//! let issuer = TestIssuer::new("https://issuer.example");
//! let jwt = JwtAuthenticator::builder("https://issuer.example", "my-api")
//!     .keys(issuer.static_keys())
//!     .algorithms([Algorithm::RS256, Algorithm::ES256])
//!     .role_claims(["roles", "realm_access.roles"])
//!     .build()
//!     .unwrap();
//!
//! let token = issuer.token().audience("my-api").scope("items:read").mint();
//! let identity = jwt.verify(&token).await.unwrap();
//! assert!(identity.has_scope("items:read"));
//!
//! let wrong_audience = issuer.token().audience("other-api").mint();
//! assert!(jwt.verify(&wrong_audience).await.is_err());
//! # });
//! ```

mod algorithm;
mod authenticator;
pub(crate) mod claims;
pub mod dpop;
mod issuers;
pub(crate) mod jose;
pub(crate) mod keys;
pub(crate) mod remote;
mod replay;
mod revocation;

pub use algorithm::{Algorithm, UnknownAlgorithm};
pub use authenticator::{
    DEFAULT_LEEWAY, JwtAuthenticator, JwtAuthenticatorBuilder, JwtCredential, JwtFuture,
    verify_signature,
};
pub use dpop::{DpopConfig, DpopMode, DpopNonces, ExternalOrigin};
pub use issuers::JwtIssuers;
pub use keys::{
    JwtKey, KeySet, KeySetFuture, KeySource, MAX_KIDLESS_CANDIDATES, MIN_RSA_BITS, StaticKeys,
};
#[cfg(feature = "reqwest")]
pub use remote::ReqwestFetcher;
pub use remote::{
    FetchError, FetchFuture, FetchRequest, FetchResponse, JwksFetcher, KeySourceStatus, RemoteJwks,
    RemoteJwksBuilder, parse_max_age,
};
#[cfg(feature = "redis")]
pub use replay::RedisReplayCache;
pub use replay::{MemoryReplayCache, ReplayAnswer, ReplayCache, ReplayError, ReplayFuture};
#[cfg(feature = "redis")]
pub use revocation::RedisRevocations;
pub use revocation::{
    DEFAULT_MAX_TOKEN_LIFETIME, MemoryRevocations, RevocationError, RevocationFuture,
    RevocationStore, TokenFacts,
};
