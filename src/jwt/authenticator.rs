use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::Algorithm;
use super::claims::{self, ClaimRules, strings};
use super::dpop::{Binding, DPOP_NONCE, Dpop, DpopConfig};
use super::jose;
use super::keys::{JwtKey, KeySet, KeySource, install_provider};
use super::replay::{ReplayAnswer, ReplayError};
use super::revocation::{RevocationStore, TokenFacts};
use crate::auth::{Authenticator, Outcome, ReadyOrBoxed, ResponseHeader};
use crate::clock::{Clock, SystemClock};
use crate::error::FailurePolicy;
use crate::error::{AuthError, ConfigError};
use crate::extract::TokenExtractor;
use crate::head::RequestHead;
use crate::identity::{Identity, RoleModel};

/// The default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

struct Config {
    issuer: String,
    audiences: Vec<String>,
    keys: Arc<dyn KeySource>,
    algorithms: Vec<Algorithm>,
    leeway: f64,
    typ: Option<String>,
    max_age: Option<Duration>,
    required: Vec<String>,
    subject_claims: Vec<String>,
    scope_claims: Vec<String>,
    role_claims: Vec<String>,
    tenant_claim: Option<String>,
    plan_claim: Option<String>,
    role_model: Option<RoleModel>,
    extractor: TokenExtractor,
    clock: Arc<dyn Clock>,
    cache: Option<TokenCache>,
    revocation: Option<(Arc<dyn RevocationStore>, FailurePolicy)>,
    dpop: Option<Dpop>,
}

/// The verified-token cache, keyed by the token's trailing characters (see [`cache_key`]).
/// quick_cache rather than moka (kept for the caches off the hot path: unknown `kid`s,
/// revocations): this one is read on every request, and a quick_cache hit (a sharded read
/// lock and one probe) costs a fraction of moka's, whose hit also records the read for its
/// eviction policy. It needs no time-to-live:
/// every hit checks `exp` itself. Its default hasher is foldhash with a random seed; the
/// keys are signature characters, which a caller cannot choose without a valid signature.
type TokenCache = quick_cache::sync::Cache<CacheKey, Arc<CachedToken>>;

/// How many trailing characters of a token key the cache (they fall in the signature).
const CACHE_KEY_LEN: usize = 32;

/// The cache key: the token's last [`CACHE_KEY_LEN`] bytes, inline, so that a lookup
/// compares keys without following a pointer. Only a lookup handle: a hit still compares
/// the whole text.
type CacheKey = [u8; CACHE_KEY_LEN];

fn cache_key(bytes: &[u8]) -> CacheKey {
    let tail = &bytes[bytes.len().saturating_sub(CACHE_KEY_LEN)..];
    let mut key = [0; CACHE_KEY_LEN];
    key[CACHE_KEY_LEN - tail.len()..].copy_from_slice(tail);
    key
}

/// A verified token, remembered by its exact text. Shared: a hit costs one reference count.
struct CachedToken {
    token: Box<str>,
    identity: Identity,
    /// SHA-256 of the token, for a DPoP proof's `ath` (when DPoP is on): computed once per
    /// token rather than once per request.
    ath: Option<[u8; 32]>,
    /// Whether the token has a `cnf` claim (is sender-constrained): an unbound token's
    /// bearer hit needs no look at the request's certificate or the claims again.
    bound: bool,
    exp: f64,
    iat: Option<f64>,
    key: JwtKey,
}

/// The default capacity of the verified-token cache.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 10_000;

/// Verifies bearer JWTs strictly and maps them to an [`Identity`].
///
/// Made with [`JwtAuthenticator::builder`]; cheap to clone. See the [module docs](super)
/// for every rule it enforces.
#[derive(Clone)]
pub struct JwtAuthenticator {
    config: Arc<Config>,
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("issuer", &self.config.issuer)
            .field("audiences", &self.config.audiences)
            .field("algorithms", &self.config.algorithms)
            .field("keys", &self.config.keys)
            .finish_non_exhaustive()
    }
}

/// Configures a [`JwtAuthenticator`].
#[must_use]
pub struct JwtAuthenticatorBuilder {
    issuer: String,
    audiences: Vec<String>,
    keys: Option<Arc<dyn KeySource>>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    typ: Option<String>,
    max_age: Option<Duration>,
    required: Vec<String>,
    subject_claims: Vec<String>,
    scope_claims: Vec<String>,
    role_claims: Vec<String>,
    tenant_claim: Option<String>,
    plan_claim: Option<String>,
    role_model: Option<RoleModel>,
    extractor: TokenExtractor,
    clock: Arc<dyn Clock>,
    cache_capacity: u64,
    revocation: Option<Arc<dyn RevocationStore>>,
    revocation_policy: FailurePolicy,
    dpop: Option<DpopConfig>,
}

impl fmt::Debug for JwtAuthenticatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticatorBuilder")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Start configuring: tokens must carry exactly `issuer` as `iss` and `audience` in `aud`.
    pub fn builder(
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> JwtAuthenticatorBuilder {
        JwtAuthenticatorBuilder {
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            keys: None,
            algorithms: Algorithm::ASYMMETRIC.to_vec(),
            leeway: DEFAULT_LEEWAY,
            typ: None,
            max_age: None,
            required: Vec::new(),
            subject_claims: vec!["sub".into()],
            scope_claims: vec!["scope".into(), "scp".into()],
            role_claims: vec!["roles".into()],
            tenant_claim: None,
            plan_claim: None,
            role_model: None,
            extractor: TokenExtractor::default(),
            clock: Arc::new(SystemClock),
            cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
            revocation: None,
            revocation_policy: FailurePolicy::Closed,
            dpop: None,
        }
    }

    /// The key source's state, for a readiness endpoint.
    pub fn key_status(&self) -> super::KeySourceStatus {
        self.config.keys.status()
    }

    /// How many verified tokens the cache holds now (0 when it is off).
    pub fn cached_tokens(&self) -> u64 {
        self.config
            .cache
            .as_ref()
            .map_or(0, |cache| cache.len() as u64)
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Verify a token outside a layer (a WebSocket handshake, a message queue). The
    /// extractor's length cap applies. A sender-constrained token (`cnf`) is refused here,
    /// since there is no proof or certificate to check: use
    /// [`verify_request`](Self::verify_request).
    ///
    /// # Errors
    /// Exactly the rejections the layer would give.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > self.config.extractor.max_token_len() {
            return Err(AuthError::invalid_token("token longer than the cap")
                .with_code(crate::error::ReasonCode::TooLarge));
        }
        let binding = Binding::NONE;
        match self.verify_token(token.to_owned(), false, binding).await? {
            Some(identity) => Ok(identity),
            None => Err(AuthError::invalid_token("no identity")),
        }
    }

    /// Authenticate a request head outside a layer, exactly as the layer would: the
    /// bearer token, or the `DPoP` token and proof, and the client certificate from the
    /// head's extensions for certificate-bound tokens.
    ///
    /// # Errors
    /// Exactly the rejections the layer would give.
    pub async fn verify_request(&self, head: &RequestHead<'_>) -> Result<Identity, AuthError> {
        let credential = self
            .extract(head)?
            .ok_or_else(|| self.missing_credentials())?;
        match self.authenticate(credential).await? {
            Some(identity) => Ok(identity),
            None => Err(AuthError::invalid_token("no identity")),
        }
    }

    fn rules(&self) -> ClaimRules<'_> {
        let c = &*self.config;
        ClaimRules {
            issuer: &c.issuer,
            audiences: &c.audiences,
            leeway: c.leeway,
            max_age: c.max_age,
            required: &c.required,
            subject_claims: &c.subject_claims,
            scope_claims: &c.scope_claims,
            role_claims: &c.role_claims,
            tenant_claim: c.tenant_claim.as_deref(),
            plan_claim: c.plan_claim.as_deref(),
            role_model: c.role_model.as_ref(),
        }
    }

    /// The synchronous path: a full verification (signature and claims), timed for
    /// `tower_api_guard_verification_seconds`. `Err(UnknownKid)` means: the `kid` is
    /// unknown to `set`; that is not timed (the token was not checked: the verification
    /// after the key set's refetch is).
    fn verify_now(&self, token: &str, set: &KeySet) -> Result<Identity, Step> {
        let timer = crate::metrics::Timer::start();
        let result = self.verify_and_cache(token, set);
        if !matches!(result, Err(Step::UnknownKid(_))) {
            timer.verification(crate::metrics::Method::Jwt);
        }
        result
    }

    /// [`verify_now`](Self::verify_now), untimed.
    fn verify_and_cache(&self, token: &str, set: &KeySet) -> Result<Identity, Step> {
        let c = &*self.config;
        let verified = verify_jws(token, set, &c.algorithms, c.typ.as_deref())?;
        let claims = jose::parse_object(&verified.payload).map_err(|r| {
            AuthError::invalid_token(r).with_code(crate::error::ReasonCode::Malformed)
        })?;
        let iat = claims.get("iat").and_then(serde_json::Value::as_f64);
        let exp = claims.get("exp").and_then(serde_json::Value::as_f64);
        let identity = claims::validate(claims, &self.rules(), c.clock.now_unix())?;
        // Every token cached here is a compact JWS within the length cap, so inside the
        // b64token alphabet: `extract` matches plain bearer headers against the cache before
        // scanning them, and relies on that.
        if let (Some(cache), Some(exp)) = (&c.cache, exp) {
            cache.insert(
                cache_key(token.as_bytes()),
                Arc::new(CachedToken {
                    token: Box::from(token),
                    identity: identity.clone(),
                    bound: identity.claims().get("cnf").is_some(),
                    ath: c.dpop.as_ref().map(|_| {
                        use sha2::Digest as _;
                        sha2::Sha256::digest(token.as_bytes()).into()
                    }),
                    exp,
                    iat,
                    key: verified.key,
                }),
            );
            #[cfg(feature = "metrics")]
            crate::metrics::cache_entries(crate::metrics::Cache::Token, cache.len() as u64);
        }
        Ok(identity)
    }

    /// A cache hit: the exact same token text was verified before, is still within its
    /// time limits, and the key that verified it is still in the set.
    fn cached(&self, token: &[u8], set: &KeySet) -> Option<Identity> {
        self.cached_entry(token, set)
            .map(|entry| entry.identity.clone())
    }

    /// The cache entry behind [`cached`](Self::cached); one lookup for
    /// `tower_api_guard_cache_requests_total` when the cache is on.
    fn cached_entry(&self, token: &[u8], set: &KeySet) -> Option<Arc<CachedToken>> {
        let cache = self.config.cache.as_ref()?;
        let entry = self.lookup(cache, token, set);
        crate::metrics::cache(crate::metrics::Cache::Token, entry.is_some());
        entry
    }

    /// [`cached_entry`](Self::cached_entry), uncounted.
    fn lookup(&self, cache: &TokenCache, token: &[u8], set: &KeySet) -> Option<Arc<CachedToken>> {
        let c = &*self.config;
        let key = cache_key(token);
        let entry = cache.get(&key)?;
        if entry.token.as_bytes() != token {
            // Another token with the same trailing text: verify it in full, and leave the
            // cached one alone.
            return None;
        }
        let now = c.clock.now_unix();
        let fresh = now - c.leeway < entry.exp
            && c.max_age.is_none_or(|max| {
                entry
                    .iat
                    .is_some_and(|iat| now - iat <= max.as_secs_f64() + c.leeway)
            });
        let key_held = match entry.key.kid() {
            Some(kid) => set.get(kid).is_some_and(|k| k.same_key(&entry.key)),
            None => set.keys().iter().any(|k| k.same_key(&entry.key)),
        };
        if fresh && key_held {
            Some(entry)
        } else {
            cache.remove(&key);
            None
        }
    }

    /// A cache hit for `token` against the current key set, if there is one.
    fn cached_now(&self, token: &[u8]) -> Option<Arc<CachedToken>> {
        self.config.cache.as_ref()?;
        let set = self.config.keys.current().ok()?;
        self.cached_entry(token, &set)
    }

    /// A bearer credential from a cache hit: an unbound token needs nothing beside it.
    fn cached_bearer(entry: &CachedToken, head: &RequestHead<'_>) -> JwtCredential {
        let binding = if entry.bound {
            Binding::of(head)
        } else {
            Binding::UNBOUND
        };
        JwtCredential::new(Credential::Cached(entry.identity.clone()), binding)
    }

    /// Verify `token`; `cache_checked` says the cache was already asked, in `extract`.
    pub(crate) fn verify_token(
        &self,
        token: String,
        cache_checked: bool,
        binding: Binding,
    ) -> JwtFuture {
        let set = match self.config.keys.current() {
            Ok(set) => set,
            Err(e) => return JwtFuture::ready(Err(e)),
        };
        if !cache_checked && let Some(identity) = self.cached(token.as_bytes(), &set) {
            return self.conclude(identity, binding);
        }
        match self.verify_now(&token, &set) {
            Ok(identity) => self.conclude(identity, binding),
            Err(Step::Reject(e)) => JwtFuture::ready(Err(e)),
            Err(Step::UnknownKid(kid)) => match self.config.keys.refresh_for_unknown_kid(&kid) {
                None => JwtFuture::ready(Err(AuthError::invalid_token("unknown kid")
                    .with_code(crate::error::ReasonCode::UnknownKid))),
                Some(refresh) => {
                    let this = self.clone();
                    JwtFuture(ReadyOrBoxed::boxed(async move {
                        let set = refresh.await?;
                        match this.verify_now(&token, &set) {
                            Ok(identity) => this.conclude(identity, binding).await,
                            Err(Step::Reject(e)) => Err(e),
                            Err(Step::UnknownKid(_)) => {
                                Err(AuthError::invalid_token("unknown kid")
                                    .with_code(crate::error::ReasonCode::UnknownKid))
                            }
                        }
                    }))
                }
            },
        }
    }
}

impl JwtAuthenticator {
    /// A verified identity: check how the token was presented against its `cnf` (DPoP
    /// proof, client certificate), then remember the proof's `jti` (the replay check comes
    /// last, so that only proofs bound to a valid token fill the cache), then revocation.
    fn conclude(&self, identity: Identity, binding: Binding) -> JwtFuture {
        if let Err(e) = binding.check(&identity) {
            return JwtFuture::ready(Err(e));
        }
        let (Some(proof), Some(dpop)) = (binding.proof, &self.config.dpop) else {
            return self.after_verification(identity);
        };
        match dpop.replay.insert(&proof.replay_key, dpop.replay_ttl()) {
            ReplayAnswer::Fresh => self.after_verification(identity),
            ReplayAnswer::Replayed => JwtFuture::ready(Err(replayed())),
            ReplayAnswer::Failed(e) => match self.replay_failed(&e) {
                Ok(()) => self.after_verification(identity),
                Err(e) => JwtFuture::ready(Err(e)),
            },
            ReplayAnswer::Wait(answer) => {
                let this = self.clone();
                JwtFuture(ReadyOrBoxed::boxed(async move {
                    match answer.await {
                        Ok(true) => {}
                        Ok(false) => return Err(replayed()),
                        Err(e) => this.replay_failed(&e)?,
                    }
                    this.check_revocation(identity).await
                }))
            }
        }
    }

    /// A replay cache failed: the policy decides.
    fn replay_failed(&self, error: &ReplayError) -> Result<(), AuthError> {
        let policy = self
            .config
            .dpop
            .as_ref()
            .map_or(FailurePolicy::Closed, |d| d.replay_policy);
        crate::metrics::store_failed(
            crate::gate::LayerKind::Auth,
            crate::metrics::Store::Replay,
            policy,
        );
        match policy {
            FailurePolicy::Open => {
                tracing::warn!(target: "tower_api_guard::dpop", reason = %error.reason(), "DPoP replay cache failed; letting the request through (fail open)");
                Ok(())
            }
            _ => {
                tracing::warn!(target: "tower_api_guard::dpop", reason = %error.reason(), "DPoP replay cache failed; rejecting (fail closed)");
                Err(AuthError::unavailable(
                    "DPoP replay cache failed",
                    Duration::from_secs(1),
                ))
            }
        }
    }

    /// `future` with this authenticator's DPoP challenge on its error, when DPoP is on.
    fn with_challenge(&self, future: JwtFuture, on_dpop: bool) -> JwtFuture {
        if self.config.dpop.is_none() {
            return future;
        }
        match future.0 {
            ReadyOrBoxed::Ready(Some(Err(e))) => JwtFuture::ready(Err(self.challenge(e, on_dpop))),
            ready @ ReadyOrBoxed::Ready(_) => JwtFuture(ready),
            boxed @ ReadyOrBoxed::Boxed(_) => {
                let this = self.clone();
                JwtFuture(ReadyOrBoxed::boxed(async move {
                    boxed.await.map_err(|e| this.challenge(e, on_dpop))
                }))
            }
        }
    }

    fn challenge(&self, error: AuthError, on_dpop: bool) -> AuthError {
        match &self.config.dpop {
            Some(dpop) => dpop.challenge(error, on_dpop),
            None => error,
        }
    }

    /// A verified identity: ready, unless a revocation store must be asked.
    fn after_verification(&self, identity: Identity) -> JwtFuture {
        if self.config.revocation.is_none() {
            return JwtFuture::ready(Ok(Some(identity)));
        }
        let this = self.clone();
        JwtFuture(ReadyOrBoxed::boxed(async move {
            this.check_revocation(identity).await
        }))
    }

    async fn check_revocation(&self, identity: Identity) -> Outcome {
        let Some((store, policy)) = &self.config.revocation else {
            return Ok(Some(identity));
        };
        let issued_at = identity
            .claim("iat")
            .and_then(serde_json::Value::as_f64)
            .map(|iat| std::time::UNIX_EPOCH + Duration::from_secs_f64(iat));
        let facts = TokenFacts {
            jti: identity.claim("jti").and_then(serde_json::Value::as_str),
            subject: identity.subject(),
            issued_at,
        };
        match store.is_revoked(&facts).await {
            Ok(false) => Ok(Some(identity)),
            Ok(true) => Err(AuthError::invalid_token("token revoked")
                .with_code(crate::error::ReasonCode::Revoked)),
            Err(e) => {
                crate::metrics::store_failed(
                    crate::gate::LayerKind::Auth,
                    crate::metrics::Store::Revocation,
                    *policy,
                );
                match policy {
                    FailurePolicy::Closed => {
                        tracing::warn!(target: "tower_api_guard::revocation", reason = %e.reason(), "revocation check failed; rejecting (fail closed)");
                        Err(AuthError::unavailable(
                            "revocation store failed",
                            Duration::from_secs(1),
                        ))
                    }
                    FailurePolicy::Open => {
                        tracing::warn!(target: "tower_api_guard::revocation", reason = %e.reason(), "revocation check failed; letting the request through (fail open)");
                        Ok(Some(identity))
                    }
                }
            }
        }
    }
}

fn replayed() -> AuthError {
    AuthError::invalid_dpop_proof("proof replayed").with_code(crate::error::ReasonCode::DpopReplay)
}

/// Why the synchronous path stopped.
pub(crate) enum Step {
    Reject(AuthError),
    UnknownKid(String),
}

impl From<AuthError> for Step {
    fn from(e: AuthError) -> Self {
        Step::Reject(e)
    }
}

/// A JWS whose signature checked out.
pub(crate) struct VerifiedJws {
    pub payload: Vec<u8>,
    /// The key that verified the signature.
    pub key: JwtKey,
}

/// The JWS layer: compact form, canonical base64url, strict header, algorithm allow-list
/// and key fit, signature. No claims are looked at.
pub(crate) fn verify_jws(
    token: &str,
    set: &KeySet,
    algorithms: &[Algorithm],
    typ: Option<&str>,
) -> Result<VerifiedJws, Step> {
    let invalid = |r: &'static str| {
        Step::Reject(AuthError::invalid_token(r).with_code(crate::error::ReasonCode::Malformed))
    };
    let algorithm = |r: &'static str| {
        Step::Reject(
            AuthError::invalid_token(r).with_code(crate::error::ReasonCode::AlgorithmNotAllowed),
        )
    };
    let compact = jose::split_compact(token).map_err(invalid)?;
    let header_bytes = jose::decode_b64url(compact.header).map_err(invalid)?;
    let payload = jose::decode_b64url(compact.claims).map_err(invalid)?;
    let signature = jose::decode_b64url(compact.signature).map_err(invalid)?;
    let header = jose::parse_object(&header_bytes).map_err(invalid)?;
    let header = jose::parse_header(&header).map_err(invalid)?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(algorithm("alg none"));
    }
    let alg: Algorithm = header
        .alg
        .parse()
        .map_err(|_| algorithm("alg not supported"))?;
    if !algorithms.contains(&alg) {
        return Err(algorithm("alg not allowed"));
    }
    if let Some(required) = typ
        && !typ_matches(header.typ.as_deref(), required)
    {
        return Err(invalid("typ does not match"));
    }
    if let Some(kid) = header.kid.as_deref()
        && set.get(kid).is_none()
    {
        return Err(Step::UnknownKid(kid.to_owned()));
    }
    if set.is_empty() {
        // No key yet (a remote source before its first fetch): ask the source.
        return Err(Step::UnknownKid(header.kid.unwrap_or_default()));
    }
    let mut any_key = false;
    for key in set.candidates(header.kid.as_deref(), alg) {
        any_key = true;
        if key.verify(alg, compact.signing_input.as_bytes(), &signature) {
            return Ok(VerifiedJws {
                payload,
                key: key.clone(),
            });
        }
    }
    if any_key {
        Err(Step::Reject(
            AuthError::invalid_token("signature does not verify")
                .with_code(crate::error::ReasonCode::BadSignature),
        ))
    } else {
        Err(invalid("no key fits the token's alg"))
    }
}

/// `typ` matching per RFC 8725 §3.11 / RFC 9068: case-insensitive, with an optional
/// `application/` prefix.
fn typ_matches(typ: Option<&str>, required: &str) -> bool {
    let Some(typ) = typ else { return false };
    let strip = |s: &str| -> String {
        let lower = s.to_ascii_lowercase();
        lower
            .strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(lower)
    };
    strip(typ) == strip(required)
}

impl JwtAuthenticatorBuilder {
    /// Also accept tokens whose `aud` holds `audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Where the verification keys come from: [`StaticKeys`](super::StaticKeys) or any
    /// [`KeySource`].
    pub fn keys(mut self, keys: impl KeySource) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// The algorithm allow-list. Default: every asymmetric algorithm
    /// ([`Algorithm::ASYMMETRIC`]); a token's `alg` must also fit the key it names.
    /// `HS*` work only with keys made by [`JwtKey::hmac_secret`](super::JwtKey::hmac_secret).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock-skew allowance for `exp`, `nbf`, `iat` (default 60 s, at most 5 min).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Require the header's `typ`, e.g. `at+jwt` for RFC 9068 access tokens (matched
    /// case-insensitively, `application/` prefix allowed).
    pub fn require_typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// Reject tokens whose `iat` is older than `max_age` (and tokens without `iat`).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Claims that must be present (dotted paths allowed).
    pub fn require_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required = strings(claims);
        self
    }

    /// Claims tried in order for the subject (default `["sub"]`; e.g. `["sub", "client_id"]`).
    pub fn subject_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subject_claims = strings(claims);
        self
    }

    /// Claims holding scopes (default `["scope", "scp"]`; Auth0 uses `permissions`).
    ///
    /// `scope` must be a space-delimited string (RFC 8693 §4.2, RFC 9068 §2.2.3); any other
    /// scope claim may be such a string or an array of strings. A named claim of another
    /// type (a `scope` array, a number, an array holding a non-string) is a 401
    /// `invalid_token`, never "no scopes".
    pub fn scope_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scope_claims = strings(claims);
        self
    }

    /// Claim paths holding roles (default `["roles"]`; Keycloak: `realm_access.roles`).
    pub fn role_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.role_claims = strings(claims);
        self
    }

    /// Preset for Keycloak: roles from `realm_access.roles`, plus
    /// `resource_access.<client>.roles` when `client` is given; scopes from `scope`.
    pub fn keycloak(self, client: Option<&str>) -> Self {
        let mut roles = vec!["realm_access.roles".to_owned()];
        if let Some(client) = client {
            roles.push(format!("resource_access.{client}.roles"));
        }
        self.role_claims(roles).scope_claims(["scope"])
    }

    /// Preset for Auth0: scopes from `scope` and `permissions` (RBAC), roles from `roles`.
    pub fn auth0(self) -> Self {
        self.scope_claims(["scope", "permissions"])
            .role_claims(["roles"])
    }

    /// Preset for Microsoft Entra ID: scopes from `scp`, app roles from `roles`, tenant from
    /// `tid`, subject from `sub` (or `oid`).
    pub fn entra_id(self) -> Self {
        self.scope_claims(["scp"])
            .role_claims(["roles"])
            .tenant_claim("tid")
            .subject_claims(["sub", "oid"])
    }

    /// Claim path holding the tenant (e.g. Entra ID's `tid`).
    pub fn tenant_claim(mut self, claim: impl Into<String>) -> Self {
        self.tenant_claim = Some(claim.into());
        self
    }

    /// Expand roles through a hierarchy and grant their permissions, once per token.
    pub fn role_model(mut self, model: RoleModel) -> Self {
        self.role_model = Some(model);
        self
    }

    /// Claim path holding the rate-limit plan.
    pub fn plan_claim(mut self, claim: impl Into<String>) -> Self {
        self.plan_claim = Some(claim.into());
        self
    }

    /// Where tokens are read from (default: `Authorization: Bearer`, 8 KiB cap).
    pub fn extractor(mut self, extractor: TokenExtractor) -> Self {
        self.extractor = extractor;
        self
    }

    /// The clock (default: the system clock). Tests use
    /// [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The capacity of the verified-token cache (default 10,000 tokens; `0` turns it off).
    ///
    /// A hit (the exact same token text, verified before) skips the signature check. An
    /// entry never outlives the token's `exp` (or the maximum age), is ignored once its key
    /// leaves the key set, and only ever matches a byte-identical token.
    ///
    /// # Performance
    /// A hit costs well under a microsecond; see the README's benchmark table.
    pub fn token_cache(mut self, capacity: u64) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Ask `store` whether each verified token (cache hits included) was revoked.
    /// A store failure rejects with 503 unless the policy says
    /// [`FailurePolicy::Open`] (see [`revocation_failure_policy`](Self::revocation_failure_policy)).
    pub fn revocation(mut self, store: impl RevocationStore) -> Self {
        self.revocation = Some(Arc::new(store));
        self
    }

    /// What a revocation-store failure does (default [`FailurePolicy::Closed`]: 503).
    pub fn revocation_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.revocation_policy = policy;
        self
    }

    /// Accept DPoP-bound tokens (RFC 9449) as `config` says; see [`super::dpop`].
    ///
    /// Without it (or with [`DpopMode::Off`](super::DpopMode::Off)) the `DPoP` scheme is
    /// not accepted and DPoP-bound tokens are refused. Certificate-bound tokens
    /// (`cnf["x5t#S256"]`) are checked either way.
    pub fn dpop(mut self, config: DpopConfig) -> Self {
        self.dpop = Some(config);
        self
    }

    /// Finish.
    ///
    /// # Errors
    /// An empty issuer or audience, no keys, an empty key set, an empty algorithm
    /// allow-list, a leeway over 5 minutes, or no subject claim.
    pub fn build(self) -> Result<JwtAuthenticator, ConfigError> {
        install_provider();
        if self.issuer.is_empty() {
            return Err(ConfigError::setting("issuer is empty"));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::setting("audience is empty"));
        }
        let keys = self
            .keys
            .ok_or_else(|| ConfigError::setting("no keys configured"))?;
        keys.check()?;
        if self.algorithms.is_empty() {
            return Err(ConfigError::setting("the algorithm allow-list is empty"));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(ConfigError::setting("leeway over 5 minutes"));
        }
        if self.subject_claims.is_empty() {
            return Err(ConfigError::setting("no subject claim configured"));
        }
        let dpop = match self.dpop {
            Some(config) => config.build(self.clock.clone())?,
            None => None,
        };
        Ok(JwtAuthenticator {
            config: Arc::new(Config {
                issuer: self.issuer,
                audiences: self.audiences,
                keys,
                algorithms: self.algorithms,
                leeway: self.leeway.as_secs_f64(),
                typ: self.typ,
                max_age: self.max_age,
                required: self.required,
                subject_claims: self.subject_claims,
                scope_claims: self.scope_claims,
                role_claims: self.role_claims,
                tenant_claim: self.tenant_claim,
                plan_claim: self.plan_claim,
                role_model: self.role_model,
                extractor: self.extractor,
                clock: self.clock,
                revocation: self.revocation.map(|store| (store, self.revocation_policy)),
                dpop,
                cache: (self.cache_capacity > 0).then(|| {
                    TokenCache::new(usize::try_from(self.cache_capacity).unwrap_or(usize::MAX))
                }),
            }),
        })
    }
}

/// The credential of a [`JwtAuthenticator`]: the token (or, when the verified-token cache
/// already holds that exact token, its identity, looked up while extracting so that a hit
/// copies nothing), with how it was presented: the checked DPoP proof, the client
/// certificate. Its `Debug` never shows the token.
pub struct JwtCredential {
    token: Credential,
    binding: Binding,
}

enum Credential {
    Token(String),
    Cached(Identity),
    /// Checked as far as could be without waiting (a cache hit whose proof waits for a
    /// shared replay cache).
    Pending(JwtFuture),
}

impl JwtCredential {
    fn new(token: Credential, binding: Binding) -> Self {
        Self { token, binding }
    }

    /// A bearer token read from `head` (whose client certificate it keeps).
    pub(crate) fn bearer(token: String, head: &RequestHead<'_>) -> Self {
        Self::new(Credential::Token(token), Binding::of(head))
    }

    /// The token and its binding, for a credential made by [`bearer`](Self::bearer).
    pub(crate) fn into_token(self) -> Option<(String, Binding)> {
        match self.token {
            Credential::Token(token) => Some((token, self.binding)),
            _ => None,
        }
    }
}

impl fmt::Debug for JwtCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.token {
            Credential::Token(_) => "token",
            Credential::Cached(_) => "cached",
            Credential::Pending(_) => "pending",
        };
        f.debug_struct("JwtCredential")
            .field("kind", &kind)
            .field("dpop", &self.binding.proof.is_some())
            .finish()
    }
}

impl JwtAuthenticator {
    /// A bearer token (or one from the extractor's other sources).
    fn extract_bearer(&self, head: &RequestHead<'_>) -> Result<Option<JwtCredential>, AuthError> {
        // The hot path: a plain bearer token that matches, byte for byte, a token this
        // authenticator verified before. That token passed every check of `extract` then,
        // so its text needs no second scan.
        let raw = self.config.extractor.plain_bearer_unchecked(head.headers);
        if let Some(raw) = raw
            && let Some(entry) = self.cached_now(raw)
        {
            return Ok(Some(Self::cached_bearer(&entry, head)));
        }
        self.extract_bearer_after_miss(head, raw)
    }

    /// [`extract_bearer`](Self::extract_bearer) once the hot path missed with `raw`.
    fn extract_bearer_after_miss(
        &self,
        head: &RequestHead<'_>,
        raw: Option<&[u8]>,
    ) -> Result<Option<JwtCredential>, AuthError> {
        let Some(token) = self.config.extractor.extract(head.headers)? else {
            return Ok(None);
        };
        // The same bytes missed just above: do not ask the cache again.
        let cached = match raw {
            Some(raw) if raw == token.as_bytes() => None,
            _ => self.cached_now(token.as_bytes()),
        };
        Ok(Some(match cached {
            Some(entry) => Self::cached_bearer(&entry, head),
            None => JwtCredential::new(Credential::Token(token.to_owned()), Binding::of(head)),
        }))
    }

    /// `Authorization: DPoP <token>` with its proof, else a bearer token unless DPoP is
    /// required.
    fn extract_with_dpop(
        &self,
        head: &RequestHead<'_>,
        dpop: &Dpop,
    ) -> Result<Option<JwtCredential>, AuthError> {
        let c = &*self.config;
        // A bearer request (where bearer tokens are allowed) takes the bearer hot path
        // first: a `DPoP` header never matches it.
        let raw = match dpop.required() {
            true => None,
            false => c.extractor.plain_bearer_unchecked(head.headers),
        };
        if let Some(raw) = raw
            && let Some(entry) = self.cached_now(raw)
        {
            return Ok(Some(Self::cached_bearer(&entry, head)));
        }
        let max = c.extractor.max_token_len();
        let dpop_token = crate::extract::scheme_token(head.headers, "DPoP", max)
            .map_err(|e| dpop.challenge(e, true))?;
        let Some(token) = dpop_token else {
            if dpop.required() {
                return match c.extractor.extract(head.headers) {
                    Ok(None) => Ok(None),
                    Ok(Some(_)) => Err(AuthError::invalid_token(
                        "bearer token where DPoP is required",
                    )),
                    Err(e) => Err(e),
                }
                .map_err(|e| dpop.challenge(e, true));
            }
            return self
                .extract_bearer_after_miss(head, raw)
                .map_err(|e| dpop.challenge(e, false));
        };
        let checked = (|| {
            // Another configured source (a cookie, a header) holding a token too is
            // ambiguous. (With `Authorization` as the only source there is none: it holds
            // the DPoP token.)
            if !c.extractor.authorization_only() && c.extractor.extract(head.headers)?.is_some() {
                return Err(AuthError::invalid_request(
                    "credential in more than one place",
                ));
            }
            let keys = c.keys.current().ok();
            // A token verified before knows its hash already.
            let entry = match (&keys, &c.cache) {
                (Some(set), Some(_)) => self.cached_entry(token.as_bytes(), set),
                _ => None,
            };
            let hash = entry.as_ref().and_then(|e| e.ath);
            dpop.check_proof(head, token, hash, keys.as_deref())
                .map(|checked| (checked, entry))
        })()
        .map_err(|e| dpop.challenge(e, true))?;
        let (checked, entry) = checked;
        let mut binding = Binding::of(head);
        binding.proof = Some(Box::new(checked));
        let token = match entry {
            Some(entry) => Credential::Cached(entry.identity.clone()),
            None => Credential::Token(token.to_owned()),
        };
        Ok(Some(JwtCredential::new(token, binding)))
    }
}

impl Authenticator for JwtAuthenticator {
    type Credential = JwtCredential;
    type Future = JwtFuture;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<JwtCredential>, AuthError> {
        match &self.config.dpop {
            None => self.extract_bearer(head),
            Some(dpop) => self.extract_with_dpop(head, dpop),
        }
    }

    fn authenticate_now(&self, credential: JwtCredential) -> Result<Outcome, JwtCredential> {
        match credential.token {
            Credential::Cached(identity) if self.config.revocation.is_none() => {
                let on_dpop = credential.binding.proof.is_some();
                let future =
                    self.with_challenge(self.conclude(identity, credential.binding), on_dpop);
                match future.0 {
                    ReadyOrBoxed::Ready(Some(outcome)) => Ok(outcome),
                    other => Err(JwtCredential::new(
                        Credential::Pending(JwtFuture(other)),
                        Binding::NONE,
                    )),
                }
            }
            token => Err(JwtCredential::new(token, credential.binding)),
        }
    }

    fn authenticate(&self, credential: JwtCredential) -> JwtFuture {
        let on_dpop = credential.binding.proof.is_some();
        let future = match credential.token {
            Credential::Cached(identity) => self.conclude(identity, credential.binding),
            Credential::Token(token) => {
                let checked = self.config.cache.is_some();
                self.verify_token(token, checked, credential.binding)
            }
            Credential::Pending(future) => return future,
        };
        self.with_challenge(future, on_dpop)
    }

    fn missing_credentials(&self) -> AuthError {
        self.challenge(AuthError::missing_credentials(), true)
    }

    fn response_header(&self) -> Option<ResponseHeader> {
        let nonce = self.config.dpop.as_ref()?.nonce()?;
        Some((DPOP_NONCE, nonce))
    }
}

/// The future of [`JwtAuthenticator`]: ready at once unless the token's `kid` is unknown
/// and the key source refreshes, or a revocation store must be asked.
pub struct JwtFuture(ReadyOrBoxed);

impl JwtFuture {
    pub(crate) fn ready(outcome: Outcome) -> Self {
        Self(ReadyOrBoxed::Ready(Some(outcome)))
    }
}

impl fmt::Debug for JwtFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtFuture").finish_non_exhaustive()
    }
}

impl Future for JwtFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Check only the JWS layer of `token` against `keys`: compact form, canonical base64url,
/// strict header (no `crit`, no `b64`), `alg` in `algorithms` and fitting the key, and the
/// signature. Returns the payload bytes. **No claim is checked**: use
/// [`JwtAuthenticator`] for access tokens.
///
/// # Errors
/// `invalid_token` with the reason.
pub fn verify_signature(
    token: &str,
    keys: &KeySet,
    algorithms: &[Algorithm],
) -> Result<Vec<u8>, AuthError> {
    install_provider();
    match verify_jws(token, keys, algorithms, None) {
        Ok(v) => Ok(v.payload),
        Err(Step::Reject(e)) => Err(e),
        Err(Step::UnknownKid(_)) => {
            Err(AuthError::invalid_token("unknown kid")
                .with_code(crate::error::ReasonCode::UnknownKid))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AuthErrorKind;
    use crate::jwt::{JwtKey, StaticKeys};

    #[cfg(feature = "testing")]
    mod with_issuer {
        use super::*;
        use crate::testing::TestIssuer;

        fn block_on<F: Future>(f: F) -> F::Output {
            let mut f = std::pin::pin!(f);
            match f
                .as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()))
            {
                Poll::Ready(out) => out,
                Poll::Pending => panic!("static keys never wait"),
            }
        }

        fn jwt(issuer: &TestIssuer) -> JwtAuthenticatorBuilder {
            JwtAuthenticator::builder(issuer.issuer(), "api").keys(issuer.static_keys())
        }

        #[test]
        fn verify_outside_a_layer() {
            let issuer = TestIssuer::new("https://iss");
            let j = jwt(&issuer).build().unwrap();
            let id =
                block_on(j.verify(&issuer.token().subject("a").audience("api").mint())).unwrap();
            assert_eq!(id.subject(), "a");
            assert!(block_on(j.verify(&"a".repeat(9000))).is_err());
        }

        #[test]
        fn empty_payload_is_not_a_jwt() {
            let issuer = TestIssuer::new("https://iss");
            let j = jwt(&issuer).build().unwrap();
            let token = issuer.sign_raw(Algorithm::RS256, r#"{"alg":"RS256","kid":"rs256"}"#, "");
            assert_eq!(token.split('.').nth(1), Some(""));
            let err = block_on(j.verify(&token)).unwrap_err();
            assert_eq!(err.kind(), AuthErrorKind::InvalidToken);
            assert_eq!(err.reason(), "segment is not strict JSON");
        }

        #[test]
        fn kidless_tokens_pick_a_key_by_algorithm() {
            let issuer = TestIssuer::new("https://iss");
            let j = jwt(&issuer).build().unwrap();
            for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
                let t = issuer
                    .token()
                    .audience("api")
                    .algorithm(alg)
                    .without_header("kid")
                    .mint();
                assert!(block_on(j.verify(&t)).is_ok(), "{alg}");
            }
            let t = issuer
                .token()
                .audience("api")
                .header("kid", "unknown".into())
                .mint();
            assert_eq!(block_on(j.verify(&t)).unwrap_err().reason(), "unknown kid");
        }

        #[test]
        fn allow_list_is_enforced_even_when_the_key_fits() {
            let issuer = TestIssuer::new("https://iss");
            let j = jwt(&issuer).algorithms([Algorithm::ES256]).build().unwrap();
            let t = issuer.token().audience("api").mint();
            assert_eq!(
                block_on(j.verify(&t)).unwrap_err().reason(),
                "alg not allowed"
            );
            let t = issuer
                .token()
                .audience("api")
                .algorithm(Algorithm::ES256)
                .mint();
            assert!(block_on(j.verify(&t)).is_ok());
        }
    }

    #[test]
    fn configuration_errors() {
        let keys = || StaticKeys::new([JwtKey::hmac_secret(&[1; 32]).unwrap()]);
        let ok = || JwtAuthenticator::builder("https://iss", "api").keys(keys());
        assert!(ok().build().is_ok());
        assert!(
            JwtAuthenticator::builder("", "api")
                .keys(keys())
                .build()
                .is_err()
        );
        assert!(
            JwtAuthenticator::builder("https://iss", "")
                .keys(keys())
                .build()
                .is_err()
        );
        assert!(
            JwtAuthenticator::builder("https://iss", "api")
                .build()
                .is_err()
        );
        assert!(
            JwtAuthenticator::builder("https://iss", "api")
                .keys(StaticKeys::new([]))
                .build()
                .is_err()
        );
        assert!(ok().algorithms([]).build().is_err());
        assert!(ok().leeway(Duration::from_secs(301)).build().is_err());
        assert!(ok().subject_claims(Vec::<String>::new()).build().is_err());
        let dbg = format!("{:?}", ok().build().unwrap());
        assert!(dbg.contains("https://iss") && !dbg.contains("[1, 1"));
    }

    #[test]
    fn typ_rules() {
        assert!(typ_matches(Some("at+jwt"), "at+jwt"));
        assert!(typ_matches(Some("AT+JWT"), "at+jwt"));
        assert!(typ_matches(Some("application/at+jwt"), "at+jwt"));
        assert!(typ_matches(Some("Application/AT+JWT"), "at+jwt"));
        assert!(!typ_matches(None, "at+jwt"));
        assert!(!typ_matches(Some("JWT"), "at+jwt"));
        assert!(!typ_matches(Some("dpop+jwt"), "at+jwt"));
        assert!(!typ_matches(Some("at+jwt2"), "at+jwt"));
    }
}
