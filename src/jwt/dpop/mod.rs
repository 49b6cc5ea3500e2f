//! Sender-constrained tokens: DPoP (RFC 9449) and certificate-bound tokens (RFC 8705).
//!
//! A bearer token works for whoever holds it. A *bound* token names, in its `cnf` claim, a
//! key its client holds, and is accepted only with proof of that key:
//!
//! * `cnf.jkt` (DPoP): each request carries `Authorization: DPoP <token>` and one `DPoP`
//!   header holding a proof JWT signed with the client's key;
//! * `cnf["x5t#S256"]` (mutual TLS): the request arrived over a TLS connection whose
//!   client certificate has that SHA-256 thumbprint (a [`ClientCertificate`] request
//!   extension, see `tower_api_guard::mtls`).
//!
//! [`JwtAuthenticator`](super::JwtAuthenticator) checks both; configure DPoP with
//! [`JwtAuthenticatorBuilder::dpop`](super::JwtAuthenticatorBuilder::dpop).
//!
//! # What is checked
//!
//! The proof, strictly and in order of cheapness: at most 8 KiB, a compact JWS with
//! canonical base64url and duplicate-free JSON; `typ` exactly `dpop+jwt`; `alg` asymmetric
//! and in the allow-list (never `none`, never `HS*`); the `jwk` header a public key of a
//! supported type that fits `alg`, without private members, and not a key of the token's
//! issuer; the signature; `htm` equal to the method; `htu` equal to the request's external
//! URI without query and fragment after RFC 3986 normalisation (a proof whose `htu` has a
//! query or fragment is refused); `iat` within the window (±60 s by default, on the
//! authenticator's clock); the server nonce when nonces are on; `ath` equal to
//! `base64url(SHA-256(token))`. Then the token is verified as usual, its `cnf.jkt` must equal
//! the RFC 7638 thumbprint of the proof's key, and last the proof's `jti` must be new to the
//! replay cache — last, so that only proofs bound to a valid token can fill the cache.
//!
//! Binding rules, whatever the [`DpopMode`]: a token with `cnf.jkt` presented as `Bearer`
//! is refused (no downgrade), as is a `DPoP` request whose token has no `cnf.jkt`; a token
//! with `cnf["x5t#S256"]` needs the matching client certificate; a `cnf` with any other
//! confirmation method is refused (it cannot be checked here).
//!
//! # The external URI
//!
//! `htu` names the URI the client called, which behind a proxy is not the one the server
//! sees. It is the configured [`ExternalOrigin`] plus the request's path; from a peer in
//! the trusted-proxy list ([`DpopConfig::trusted_proxies`]) the origin is read from
//! `Forwarded` (`proto`, `host` of its last element) or `X-Forwarded-Proto` /
//! `X-Forwarded-Host` / `X-Forwarded-Port`. The `Host` header is never believed: a proof
//! made for one server must not pass at another.
//!
//! # Errors
//!
//! | what | status | `WWW-Authenticate` |
//! |---|---|---|
//! | proof missing, malformed, not matching, replayed | 401 | `DPoP error="invalid_dpop_proof", algs="…"` |
//! | nonce missing or stale | 401 + `DPoP-Nonce` | `DPoP error="use_dpop_nonce"` |
//! | two `DPoP` headers | 400 | `error="invalid_request"` |
//! | bad token with the `DPoP` scheme | 401 | `DPoP error="invalid_token"` |
//! | bound token as `Bearer` | 401 | `Bearer error="invalid_token"` beside `DPoP algs="…"` |
//!
//! A `Bearer` challenge goes beside the `DPoP` one unless DPoP is
//! [required](DpopMode::Required). gRPC requests get `UNAUTHENTICATED`. The reasons go to
//! `tracing`, never the proof.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use tower_api_guard::jwt::{DpopConfig, DpopMode, ExternalOrigin, JwtAuthenticator};
//! use tower_api_guard::testing::TestIssuer;
//!
//! let issuer = TestIssuer::new("https://issuer.example");
//! let jwt = JwtAuthenticator::builder("https://issuer.example", "my-api")
//!     .keys(issuer.static_keys())
//!     .dpop(
//!         DpopConfig::new(DpopMode::Allowed)
//!             .external_origin(ExternalOrigin::parse("https://api.example.com").unwrap()),
//!     )
//!     .build()
//!     .unwrap();
//! # let _ = jwt; }
//! ```

mod htu;
mod nonce;
mod proof;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

pub use self::htu::ExternalOrigin;
pub use self::nonce::{DEFAULT_NONCE_PERIOD, DpopNonces};
pub use self::proof::MAX_PROOF_LEN;
#[cfg(feature = "testing")]
pub(crate) use self::proof::ath;

use super::Algorithm;
use super::keys::KeySet;
use super::replay::{MemoryReplayCache, ReplayCache};
use crate::cert::ClientCertificate;
use crate::client::ClientAddr;
use crate::clock::Clock;
use crate::error::{AuthError, ConfigError, DpopChallenge, FailurePolicy};
use crate::head::RequestHead;
use crate::identity::Identity;

/// The `DPoP` request header.
pub(crate) const DPOP: HeaderName = HeaderName::from_static("dpop");

/// The `DPoP-Nonce` response header.
pub(crate) const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// The default window around the server's clock in which a proof's `iat` must lie.
pub const DEFAULT_PROOF_WINDOW: Duration = Duration::from_secs(60);

/// The default capacity of the in-process replay cache (proofs remembered at once).
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// How an authenticator treats DPoP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopMode {
    /// The `DPoP` scheme is not accepted (it is no credential of this authenticator), and a
    /// DPoP-bound token is refused, since its binding cannot be checked. The behaviour of an
    /// authenticator without DPoP configuration.
    Off,
    /// DPoP-bound tokens must come with a proof; unbound bearer tokens still pass.
    Allowed,
    /// Every token must come with a proof (and be bound to its key).
    Required,
}

/// DPoP settings for [`JwtAuthenticatorBuilder::dpop`](super::JwtAuthenticatorBuilder::dpop).
/// See the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct DpopConfig {
    mode: DpopMode,
    algorithms: Vec<Algorithm>,
    origin: Option<ExternalOrigin>,
    proxies: Option<ClientAddr>,
    window: Duration,
    replay: Option<Arc<dyn ReplayCache>>,
    replay_policy: FailurePolicy,
    nonces: Option<DpopNonces>,
}

impl fmt::Debug for DpopConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopConfig")
            .field("mode", &self.mode)
            .field("algorithms", &self.algorithms)
            .field("origin", &self.origin)
            .field("window", &self.window)
            .field("nonces", &self.nonces.is_some())
            .finish_non_exhaustive()
    }
}

impl DpopConfig {
    /// DPoP in `mode`, with the defaults: every asymmetric algorithm, a ±60 s window, an
    /// in-process replay cache of 100,000 proofs that fails closed, no nonces. An
    /// [external origin](Self::external_origin) or [trusted proxies](Self::trusted_proxies)
    /// must be set unless the mode is [`Off`](DpopMode::Off).
    pub fn new(mode: DpopMode) -> Self {
        Self {
            mode,
            algorithms: Algorithm::ASYMMETRIC.to_vec(),
            origin: None,
            proxies: None,
            window: DEFAULT_PROOF_WINDOW,
            replay: None,
            replay_policy: FailurePolicy::Closed,
            nonces: None,
        }
    }

    /// The origin clients call the API under (`https://api.example.com`), for `htu`.
    pub fn external_origin(mut self, origin: ExternalOrigin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Believe the origin that these proxies forward (`Forwarded` / `X-Forwarded-*`);
    /// requests from any other peer use the [external origin](Self::external_origin).
    pub fn trusted_proxies(mut self, proxies: ClientAddr) -> Self {
        self.proxies = Some(proxies);
        self
    }

    /// The proof algorithms accepted (default: every asymmetric one). `HS*` are refused at
    /// build time.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// A proof's `iat` must lie within `now ± window` (default 60 s, at most 5 minutes).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Where `jti`s are remembered (default: an in-process [`MemoryReplayCache`] of
    /// 100,000 proofs on the authenticator's clock). Several replicas share a
    /// `RedisReplayCache` (feature `redis`).
    pub fn replay_cache(mut self, cache: impl ReplayCache) -> Self {
        self.replay = Some(Arc::new(cache));
        self
    }

    /// What a failing replay cache does (default [`FailurePolicy::Closed`]: 503).
    pub fn replay_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.replay_policy = policy;
        self
    }

    /// Require server nonces (RFC 9449 §8).
    pub fn nonces(mut self, nonces: DpopNonces) -> Self {
        self.nonces = Some(nonces);
        self
    }

    /// The mode.
    pub fn mode(&self) -> DpopMode {
        self.mode
    }

    pub(crate) fn build(self, clock: Arc<dyn Clock>) -> Result<Option<Dpop>, ConfigError> {
        if self.mode == DpopMode::Off {
            return Ok(None);
        }
        if self.origin.is_none() && self.proxies.is_none() {
            return Err(ConfigError::setting(
                "DPoP needs an external origin (or trusted proxies) to check htu",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::setting(
                "the DPoP algorithm allow-list is empty",
            ));
        }
        if self.algorithms.iter().any(|a| a.is_hmac()) {
            return Err(ConfigError::setting(
                "DPoP proofs are signed with asymmetric keys; HS* is not allowed",
            ));
        }
        if self.window.is_zero() || self.window > Duration::from_secs(300) {
            return Err(ConfigError::setting(
                "the DPoP proof window is between 1 second and 5 minutes",
            ));
        }
        let algs = self
            .algorithms
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let bearer = self.mode == DpopMode::Allowed;
        let replay = match self.replay {
            Some(replay) => replay,
            None => Arc::new(
                MemoryReplayCache::new(
                    NonZeroUsize::new(DEFAULT_REPLAY_CAPACITY).unwrap_or(NonZeroUsize::MIN),
                )
                .clock(clock.clone()),
            ),
        };
        Ok(Some(Dpop {
            mode: self.mode,
            challenge: DpopChallenge::new(algs, bearer),
            algorithms: self.algorithms,
            origin: self.origin,
            proxies: self.proxies,
            window: self.window.as_secs_f64(),
            // A proof first accepted at t has iat ≤ t + window, so it could pass again
            // until iat + window ≤ t + 2·window: remember it that long (and a second more).
            replay_ttl: self.window * 2 + Duration::from_secs(1),
            replay,
            replay_policy: self.replay_policy,
            nonces: self.nonces,
            header_cache: proof::HeaderCache::new(1024),
            clock,
        }))
    }
}

/// DPoP as built into an authenticator (mode `Allowed` or `Required`).
pub(crate) struct Dpop {
    mode: DpopMode,
    challenge: DpopChallenge,
    algorithms: Vec<Algorithm>,
    origin: Option<ExternalOrigin>,
    proxies: Option<ClientAddr>,
    window: f64,
    replay_ttl: Duration,
    pub(crate) replay: Arc<dyn ReplayCache>,
    pub(crate) replay_policy: FailurePolicy,
    nonces: Option<DpopNonces>,
    header_cache: proof::HeaderCache,
    clock: Arc<dyn Clock>,
}

/// A proof that passed its own checks; binding and replay come later.
pub(crate) use self::proof::Checked as CheckedProof;

impl Dpop {
    pub(crate) fn required(&self) -> bool {
        self.mode == DpopMode::Required
    }

    pub(crate) fn replay_ttl(&self) -> Duration {
        self.replay_ttl
    }

    /// `error` with this authenticator's DPoP challenge; `on_dpop`: the request used the
    /// `DPoP` scheme (or no scheme at all), so the error code goes on the `DPoP` challenge.
    pub(crate) fn challenge(&self, error: AuthError, on_dpop: bool) -> AuthError {
        let mut challenge = self.challenge.clone();
        if !on_dpop {
            challenge = challenge.error_on_bearer();
        }
        if let Some(nonces) = &self.nonces {
            challenge = challenge.with_nonce(nonces.current(self.clock.now_unix()));
        }
        error.with_dpop_challenge(challenge)
    }

    /// The current nonce, when nonces are on.
    pub(crate) fn nonce(&self) -> Option<http::HeaderValue> {
        self.nonces
            .as_ref()
            .map(|n| n.current(self.clock.now_unix()))
    }

    /// Check the one `DPoP` header of a request that presented `token` with the `DPoP`
    /// scheme.
    pub(crate) fn check_proof(
        &self,
        head: &RequestHead<'_>,
        token: &str,
        token_hash: Option<[u8; 32]>,
        issuer_keys: Option<&KeySet>,
    ) -> Result<CheckedProof, AuthError> {
        let mut proofs = head.headers.get_all(&DPOP).iter();
        let proof = proofs
            .next()
            .ok_or_else(|| AuthError::invalid_dpop_proof("no DPoP header"))?;
        if proofs.next().is_some() {
            return Err(AuthError::invalid_request("more than one DPoP header"));
        }
        // `HeaderValue::to_str`'s rule, in a loop that vectorizes.
        let proof = crate::extract::visible_ascii(proof)
            .map_err(|_| AuthError::invalid_dpop_proof("DPoP header is not visible ASCII"))?;
        let htu = self.expected_htu(head)?;
        let expected = proof::Expected {
            method: head.method.as_str(),
            htu: &htu,
            token,
            token_hash,
            now: self.clock.now_unix(),
        };
        let rules = proof::Rules {
            algorithms: &self.algorithms,
            window: self.window,
            nonces: self.nonces.as_ref(),
            issuer_keys,
            cache: Some(&self.header_cache),
        };
        proof::check(proof, &expected, &rules)
    }

    fn expected_htu(&self, head: &RequestHead<'_>) -> Result<String, AuthError> {
        let forwarded = match (&self.proxies, head.extensions) {
            (Some(proxies), Some(extensions)) if proxies.peer_is_trusted(extensions) => {
                htu::forwarded_origin(head.headers)
            }
            _ => None,
        };
        let origin = forwarded
            .as_ref()
            .or(self.origin.as_ref())
            .ok_or_else(|| AuthError::invalid_dpop_proof("no external origin for htu"))?;
        htu::request_htu(origin, head.uri.path()).map_err(AuthError::invalid_dpop_proof)
    }
}

/// How the token of a request is bound, checked against its `cnf` claim.
pub(crate) struct Binding {
    /// The proof, when the request used the `DPoP` scheme.
    pub proof: Option<Box<CheckedProof>>,
    /// The connection's client certificate, when there is one.
    pub cert: Option<ClientCertificate>,
    /// The token is known to have no `cnf` (a verified-token cache hit that remembered
    /// it) and came without a proof: nothing to check.
    pub unbound: bool,
}

impl Binding {
    /// Nothing presented beside the token.
    pub(crate) const NONE: Self = Self {
        proof: None,
        cert: None,
        unbound: false,
    };

    /// A bearer token known to have no `cnf`.
    pub(crate) const UNBOUND: Self = Self {
        proof: None,
        cert: None,
        unbound: true,
    };

    pub(crate) fn of(head: &RequestHead<'_>) -> Self {
        Self {
            proof: None,
            cert: head
                .extensions
                .and_then(|e| e.get::<ClientCertificate>())
                .cloned(),
            unbound: false,
        }
    }

    /// Check the token's `cnf` (RFC 7800) against how the request presented it.
    pub(crate) fn check(&self, identity: &Identity) -> Result<(), AuthError> {
        if self.unbound {
            return Ok(());
        }
        let cnf = match identity.claims().get("cnf") {
            None => None,
            Some(serde_json::Value::Object(cnf)) => Some(cnf),
            Some(_) => return Err(AuthError::invalid_token("cnf is not an object")),
        };
        let Some(cnf) = cnf else {
            return match self.proof {
                Some(_) => Err(AuthError::invalid_token(
                    "DPoP proof with a token that is not DPoP-bound",
                )
                .with_code(crate::error::ReasonCode::BindingMismatch)),
                None => Ok(()),
            };
        };
        let mut jkt = None;
        let mut x5t = None;
        for (name, value) in cnf {
            let value = value
                .as_str()
                .ok_or_else(|| AuthError::invalid_token("cnf member is not a string"))?;
            match name.as_str() {
                "jkt" => jkt = Some(value),
                "x5t#S256" => x5t = Some(value),
                _ => {
                    return Err(AuthError::invalid_token(
                        "cnf holds a confirmation method that is not supported",
                    ));
                }
            }
        }
        match (jkt, &self.proof) {
            (Some(jkt), Some(proof)) if *proof.jkt == *jkt => {}
            (Some(_), Some(_)) => {
                return Err(AuthError::invalid_dpop_proof(
                    "proof key does not match the token's cnf.jkt",
                ));
            }
            (Some(_), None) => {
                return Err(AuthError::invalid_token(
                    "DPoP-bound token presented without a DPoP proof",
                )
                .with_code(crate::error::ReasonCode::BindingMismatch));
            }
            (None, Some(_)) => {
                return Err(AuthError::invalid_token(
                    "DPoP proof with a token that is not DPoP-bound",
                ));
            }
            (None, None) => {}
        }
        if let Some(x5t) = x5t {
            match &self.cert {
                Some(cert) if cert.matches_x5t_s256(x5t) => {}
                Some(_) => {
                    return Err(AuthError::invalid_token(
                        "client certificate does not match the token's cnf x5t#S256",
                    )
                    .with_code(crate::error::ReasonCode::BindingMismatch));
                }
                None => {
                    return Err(AuthError::invalid_token(
                        "certificate-bound token without a client certificate",
                    )
                    .with_code(crate::error::ReasonCode::BindingMismatch));
                }
            }
        }
        Ok(())
    }
}
