//! Opaque access tokens, checked by the issuer's introspection endpoint (RFC 7662):
//! [`IntrospectionAuthenticator`] (feature `introspection`), and [`JwtOrOpaque`], which
//! routes each bearer token by its shape.
//!
//! What it enforces:
//!
//! * **The call:** `POST token=…&token_type_hint=access_token` as a form, with client
//!   authentication `client_secret_basic` (the default), `client_secret_post` or a bearer
//!   credential ([`ClientAuth`]); the endpoint configured, or found through OIDC / RFC 8414
//!   discovery ([`IntrospectionAuthenticatorBuilder::discover`], whose document must name
//!   the configured issuer exactly). The client ([`IntrospectionClient`]; reqwest by
//!   default) has a timeout, a body cap (64 KiB), accepts JSON only, follows no redirect
//!   to another origin, and never logs the token or the secret.
//! * **The answer:** status 200 and a strict JSON object (duplicate members refused);
//!   `active` must be the JSON boolean `true` (`"true"`, `1` or nothing is not); `iss`
//!   exact when configured; `aud` must hold ours when configured; `exp` / `nbf` with leeway
//!   on the injectable clock; wrong JSON types are errors; `scope` space-delimited; the
//!   subject, roles, tenant, plan and role model as the JWT authenticator makes them. The
//!   identity's source is [`Source::Introspection`].
//! * **The cache:** keyed by SHA-256 of the token (never the token): an active token is
//!   remembered `min(max TTL (60 s), exp − now)`, an inactive one 5 s; bounded; a burst of
//!   requests with one new token makes **one** call (single flight); a hit answers without
//!   waiting. A configured revocation store is asked on hits too.
//! * **Failures:** endpoint down, 5xx, not JSON, too big, slow: `503` with `Retry-After`
//!   once the time budget (2 s) is spent — never a hang, never a 200. Every failure emits a
//!   `tracing` event (target `tower_api_guard::introspection`) without the token. The
//!   budget is a Tokio timer: a call that misses the cache must run on a Tokio runtime with
//!   its time driver (every server runtime has it; a bare `Builder` needs `enable_time`).
//!
//! ```no_run
//! # async fn run() -> Result<(), tower_api_guard::ConfigError> {
//! use tower_api_guard::introspection::{ClientAuth, IntrospectionAuthenticator, JwtOrOpaque};
//! use tower_api_guard::jwt::{JwtAuthenticator, RemoteJwks};
//!
//! let opaque = IntrospectionAuthenticator::builder("https://idp.example/oauth2/introspect")
//!     .client_auth(ClientAuth::basic("my-api", "s3cret"))
//!     .issuer("https://idp.example")
//!     .audience("my-api")
//!     .build()?;
//! let jwt = JwtAuthenticator::builder("https://idp.example", "my-api")
//!     .keys(RemoteJwks::discover("https://idp.example").build()?)
//!     .build()?;
//! // JWS-shaped bearer tokens to the JWT verifier, anything else to introspection.
//! let authenticator = JwtOrOpaque::new(jwt, opaque);
//! # let _ = authenticator; Ok(()) }
//! ```

mod client;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

#[cfg(feature = "reqwest")]
pub use self::client::ReqwestIntrospectionClient;
pub use self::client::{
    ClientAuth, IntrospectionClient, IntrospectionFuture, IntrospectionRequest,
};
use crate::auth::{Authenticator, Outcome, ReadyOrBoxed};
use crate::clock::{Clock, SystemClock};
use crate::error::{AuthError, ConfigError, FailurePolicy};
use crate::extract::TokenExtractor;
use crate::head::RequestHead;
use crate::identity::{Identity, RoleModel, Source};
use crate::jwt::claims::{self, ClaimRules, strings};
use crate::jwt::jose;
use crate::jwt::{JwtAuthenticator, JwtCredential, JwtFuture, RevocationStore};

/// The default longest time an active token's answer is remembered.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// The default time an inactive token's answer is remembered.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// The default time budget of one introspection (the whole call, waiting included).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// The largest introspection response accepted, in bytes.
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

/// A remembered answer.
#[derive(Clone)]
enum Answer {
    Active { identity: Identity, until: f64 },
    Inactive { until: f64 },
}

impl Answer {
    fn until(&self) -> f64 {
        match self {
            Answer::Active { until, .. } | Answer::Inactive { until } => *until,
        }
    }
}

type Cache = quick_cache::sync::Cache<[u8; 32], Answer>;

struct Inner {
    endpoint: String,
    auth: ClientAuth,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: f64,
    subject_claims: Vec<String>,
    scope_claims: Vec<String>,
    role_claims: Vec<String>,
    tenant_claim: Option<String>,
    plan_claim: Option<String>,
    role_model: Option<RoleModel>,
    cache_ttl: f64,
    negative_ttl: f64,
    budget: Duration,
    extractor: TokenExtractor,
    clock: Arc<dyn Clock>,
    client: Arc<dyn IntrospectionClient>,
    cache: Cache,
    revocation: Option<(Arc<dyn RevocationStore>, FailurePolicy)>,
}

/// Checks opaque bearer tokens with the issuer's introspection endpoint (RFC 7662). See
/// the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct IntrospectionAuthenticator(Arc<Inner>);

impl fmt::Debug for IntrospectionAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionAuthenticator")
            .field("endpoint", &self.0.endpoint)
            .field("auth", &self.0.auth)
            .field("issuer", &self.0.issuer)
            .field("audiences", &self.0.audiences)
            .finish_non_exhaustive()
    }
}

/// Configures an [`IntrospectionAuthenticator`].
#[must_use]
pub struct IntrospectionAuthenticatorBuilder {
    endpoint: Option<String>,
    auth: Option<ClientAuth>,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: Duration,
    subject_claims: Vec<String>,
    scope_claims: Vec<String>,
    role_claims: Vec<String>,
    tenant_claim: Option<String>,
    plan_claim: Option<String>,
    role_model: Option<RoleModel>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    cache_capacity: usize,
    budget: Duration,
    extractor: TokenExtractor,
    clock: Arc<dyn Clock>,
    client: Option<Arc<dyn IntrospectionClient>>,
    revocation: Option<(Arc<dyn RevocationStore>, FailurePolicy)>,
}

impl fmt::Debug for IntrospectionAuthenticatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionAuthenticatorBuilder")
            .field("endpoint", &self.endpoint)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl IntrospectionAuthenticator {
    /// Start configuring, with the endpoint's URL.
    pub fn builder(endpoint: impl Into<String>) -> IntrospectionAuthenticatorBuilder {
        let mut builder = Self::builder_without_endpoint();
        builder.endpoint = Some(endpoint.into());
        builder
    }

    /// Start configuring for `issuer`, whose endpoint [`discover`](IntrospectionAuthenticatorBuilder::discover)
    /// finds.
    pub fn discover(issuer: impl Into<String>) -> IntrospectionAuthenticatorBuilder {
        Self::builder_without_endpoint().issuer(issuer)
    }

    fn builder_without_endpoint() -> IntrospectionAuthenticatorBuilder {
        IntrospectionAuthenticatorBuilder {
            endpoint: None,
            auth: None,
            issuer: None,
            audiences: Vec::new(),
            leeway: crate::jwt::DEFAULT_LEEWAY,
            subject_claims: strings(["sub", "client_id", "username"]),
            scope_claims: strings(["scope"]),
            role_claims: strings(["roles"]),
            tenant_claim: None,
            plan_claim: None,
            role_model: None,
            cache_ttl: DEFAULT_CACHE_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            cache_capacity: 10_000,
            budget: DEFAULT_BUDGET,
            extractor: TokenExtractor::default(),
            clock: Arc::new(SystemClock),
            client: None,
            revocation: None,
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    /// Introspect `token` outside a layer.
    ///
    /// # Errors
    /// Exactly the rejections the layer would give.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        match self.authenticate_token(token.to_owned()).await? {
            Some(identity) => Ok(identity),
            None => Err(AuthError::invalid_token("no identity")),
        }
    }

    fn rules(&self) -> ClaimRules<'_> {
        let c = &*self.0;
        ClaimRules {
            issuer: c.issuer.as_deref().unwrap_or(""),
            audiences: &c.audiences,
            leeway: c.leeway,
            max_age: None,
            required: &[],
            subject_claims: &c.subject_claims,
            scope_claims: &c.scope_claims,
            role_claims: &c.role_claims,
            tenant_claim: c.tenant_claim.as_deref(),
            plan_claim: c.plan_claim.as_deref(),
            role_model: c.role_model.as_ref(),
        }
    }

    /// A remembered answer that is still good; one lookup for
    /// `tower_api_guard_cache_requests_total`.
    fn cached(&self, key: &[u8; 32]) -> Option<Answer> {
        let answer = self.lookup(key);
        crate::metrics::cache(crate::metrics::Cache::Introspection, answer.is_some());
        answer
    }

    /// [`cached`](Self::cached), uncounted.
    fn lookup(&self, key: &[u8; 32]) -> Option<Answer> {
        let answer = self.0.cache.get(key)?;
        if answer.until() > self.0.clock.now_unix() {
            Some(answer)
        } else {
            self.0.cache.remove(key);
            None
        }
    }

    fn from_answer(answer: Answer) -> Outcome {
        match answer {
            Answer::Active { identity, .. } => Ok(Some(identity)),
            Answer::Inactive { .. } => Err(AuthError::invalid_token("token is not active")
                .with_code(crate::error::ReasonCode::Inactive)),
        }
    }

    /// Ask the endpoint, and judge its answer. Timed for
    /// `tower_api_guard_verification_seconds` (`method="introspection"`), whatever the
    /// outcome, a call cut short by the time budget included.
    async fn introspect(&self, token: &str) -> Result<Answer, AuthError> {
        let _timed = Timed(crate::metrics::Timer::start());
        let c = &*self.0;
        let request = IntrospectionRequest::new(&c.endpoint, token, &c.auth, c.budget);
        let body = c.client.introspect(request).await.map_err(|e| {
            tracing::warn!(target: "tower_api_guard::introspection", reason = %e.reason(), "introspection failed");
            unavailable()
        })?;
        let map = jose::parse_object(&body).map_err(|_| {
            tracing::warn!(target: "tower_api_guard::introspection", "introspection response is not a strict JSON object");
            unavailable()
        })?;
        self.judge(map)
    }

    /// RFC 7662 §2.2 strictly: `active` exactly `true`, then the claims.
    fn judge(&self, map: Map<String, Value>) -> Result<Answer, AuthError> {
        let c = &*self.0;
        let now = c.clock.now_unix();
        match map.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => {
                return Ok(Answer::Inactive {
                    until: now + c.negative_ttl,
                });
            }
            _ => return Err(AuthError::invalid_token("active is not the boolean true")),
        }
        let exp = claims::numeric_date(&map, "exp")?;
        if let Some(exp) = exp
            && now - c.leeway >= exp
        {
            return Err(AuthError::invalid_token("token expired")
                .with_code(crate::error::ReasonCode::Expired));
        }
        if let Some(nbf) = claims::numeric_date(&map, "nbf")?
            && now + c.leeway < nbf
        {
            return Err(AuthError::invalid_token("token not yet valid (nbf)")
                .with_code(crate::error::ReasonCode::NotYetValid));
        }
        claims::numeric_date(&map, "iat")?;
        let iss = claims::optional_string(&map, "iss")?.map(str::to_owned);
        if let Some(required) = &c.issuer
            && iss.as_deref() != Some(required.as_str())
        {
            return Err(AuthError::invalid_token("iss does not match")
                .with_code(crate::error::ReasonCode::BadIssuer));
        }
        if !c.audiences.is_empty() {
            let matches = |a: &str| c.audiences.iter().any(|x| x == a);
            let ok = match map.get("aud") {
                Some(Value::String(a)) => matches(a),
                Some(Value::Array(items)) => {
                    let mut any = false;
                    for item in items {
                        let Value::String(a) = item else {
                            return Err(AuthError::invalid_token("aud array holds a non-string"));
                        };
                        any |= matches(a);
                    }
                    any
                }
                None => return Err(AuthError::invalid_token("aud missing")),
                Some(_) => {
                    return Err(AuthError::invalid_token(
                        "aud is neither a string nor an array",
                    ));
                }
            };
            if !ok {
                return Err(AuthError::invalid_token("aud does not match")
                    .with_code(crate::error::ReasonCode::BadAudience));
            }
        }
        let identity = claims::identity_from(
            map,
            &self.rules(),
            Source::Introspection { issuer: iss },
            exp,
        )?;
        let until = match exp {
            Some(exp) => (now + c.cache_ttl).min(exp),
            None => now + c.cache_ttl,
        };
        Ok(Answer::Active { identity, until })
    }

    /// Introspect with the cache: one call per token at a time (single flight).
    async fn introspect_cached(&self, token: String, key: [u8; 32]) -> Outcome {
        let this = self.clone();
        let flight = async move {
            loop {
                match this.0.cache.get_value_or_guard_async(&key).await {
                    Ok(answer) if answer.until() > this.0.clock.now_unix() => {
                        return Self::from_answer(answer);
                    }
                    Ok(_) => {
                        // Expired while cached: drop it and ask again.
                        this.0.cache.remove(&key);
                    }
                    Err(guard) => {
                        let answer = this.introspect(&token).await?;
                        let _ = guard.insert(answer.clone());
                        #[cfg(feature = "metrics")]
                        crate::metrics::cache_entries(
                            crate::metrics::Cache::Introspection,
                            this.0.cache.len() as u64,
                        );
                        return Self::from_answer(answer);
                    }
                }
            }
        };
        match tokio::time::timeout(self.0.budget, flight).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(target: "tower_api_guard::introspection", "introspection over its time budget");
                Err(unavailable())
            }
        }
    }

    async fn check_revocation(&self, outcome: Outcome) -> Outcome {
        let (Ok(Some(identity)), Some((store, policy))) = (&outcome, &self.0.revocation) else {
            return outcome;
        };
        let facts = crate::jwt::TokenFacts {
            jti: identity.claim("jti").and_then(Value::as_str),
            subject: identity.subject(),
            issued_at: identity
                .claim("iat")
                .and_then(Value::as_f64)
                .map(|iat| std::time::UNIX_EPOCH + Duration::from_secs_f64(iat)),
        };
        match store.is_revoked(&facts).await {
            Ok(false) => outcome,
            Ok(true) => Err(AuthError::invalid_token("token revoked")
                .with_code(crate::error::ReasonCode::Revoked)),
            Err(e) => {
                tracing::warn!(target: "tower_api_guard::revocation", reason = %e.reason(), "revocation check failed");
                match policy {
                    FailurePolicy::Open => outcome,
                    _ => Err(AuthError::unavailable(
                        "revocation store failed",
                        Duration::from_secs(1),
                    )),
                }
            }
        }
    }
}

/// Records one introspection's time when dropped: at its end, or when the time budget
/// cuts it short.
struct Timed(crate::metrics::Timer);

impl Drop for Timed {
    fn drop(&mut self) {
        self.0.verification(crate::metrics::Method::Introspection);
    }
}

fn unavailable() -> AuthError {
    AuthError::unavailable("introspection unavailable", Duration::from_secs(1))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl IntrospectionAuthenticatorBuilder {
    /// How this API authenticates to the endpoint (default: none, which most servers refuse).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Require `iss` to be exactly `issuer` (also the issuer discovery looks up).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Require `aud` to hold `audience` (call again to accept several).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (default 60 s, at most 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Claims tried in order for the subject (default `sub`, `client_id`, `username`).
    pub fn subject_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subject_claims = strings(claims);
        self
    }

    /// Claims holding scopes (default `scope`), as for JWTs.
    pub fn scope_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scope_claims = strings(claims);
        self
    }

    /// Claim paths holding roles (default `roles`; Keycloak: `realm_access.roles`).
    pub fn role_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.role_claims = strings(claims);
        self
    }

    /// Claim path holding the tenant.
    pub fn tenant_claim(mut self, claim: impl Into<String>) -> Self {
        self.tenant_claim = Some(claim.into());
        self
    }

    /// Claim path holding the rate-limit plan.
    pub fn plan_claim(mut self, claim: impl Into<String>) -> Self {
        self.plan_claim = Some(claim.into());
        self
    }

    /// Expand roles through a hierarchy and grant their permissions.
    pub fn role_model(mut self, model: RoleModel) -> Self {
        self.role_model = Some(model);
        self
    }

    /// Preset for Keycloak: roles from `realm_access.roles` (and a client's), scopes from
    /// `scope`.
    pub fn keycloak(self, client: Option<&str>) -> Self {
        let mut roles = vec!["realm_access.roles".to_owned()];
        if let Some(client) = client {
            roles.push(format!("resource_access.{client}.roles"));
        }
        self.role_claims(roles).scope_claims(["scope"])
    }

    /// The longest time an active answer is remembered (default 60 s; never past `exp`;
    /// zero turns the positive cache off).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How long an inactive answer is remembered (default 5 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// How many answers the cache holds (default 10,000).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The time budget of one introspection, waiting for another request's call included
    /// (default 2 s); past it, 503.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Where tokens are read from (default `Authorization: Bearer`).
    pub fn extractor(mut self, extractor: TokenExtractor) -> Self {
        self.extractor = extractor;
        self
    }

    /// The clock (tests use [`ManualClock`](crate::clock::ManualClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The HTTP client (default [`ReqwestIntrospectionClient`] with feature `reqwest`).
    pub fn client(mut self, client: impl IntrospectionClient) -> Self {
        self.client = Some(Arc::new(client));
        self
    }

    /// Ask `store` whether each active token (cache hits included) was revoked; a store
    /// failure answers 503 unless `policy` is [`FailurePolicy::Open`].
    pub fn revocation(mut self, store: impl RevocationStore, policy: FailurePolicy) -> Self {
        self.revocation = Some((Arc::new(store), policy));
        self
    }

    /// Find the endpoint through the issuer's discovery document (OIDC, then RFC 8414):
    /// its `issuer` must equal the configured issuer exactly, and its
    /// `introspection_endpoint` is used.
    ///
    /// # Errors
    /// No issuer configured, discovery failed, the document names another issuer, or has
    /// no introspection endpoint.
    pub async fn discover(mut self) -> Result<Self, ConfigError> {
        let issuer = self
            .issuer
            .clone()
            .ok_or_else(|| ConfigError::setting("discovery needs the issuer"))?;
        let client = match &self.client {
            Some(client) => client.clone(),
            None => client::default_client()?,
        };
        let mut last = ConfigError::setting("discovery found no introspection endpoint");
        for url in crate::jwt::remote::discovery_urls(&issuer) {
            let body = match client.get(url, self.budget).await {
                Ok(body) => body,
                Err(e) => {
                    last = ConfigError::setting(format!("discovery failed: {}", e.reason()));
                    continue;
                }
            };
            let doc = jose::parse_object(&body).map_err(|_| {
                ConfigError::parse("the discovery document is not a strict JSON object")
            })?;
            if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(ConfigError::setting(
                    "the discovery document names another issuer",
                ));
            }
            let endpoint = doc
                .get("introspection_endpoint")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ConfigError::setting("the discovery document has no introspection_endpoint")
                })?;
            self.endpoint = Some(endpoint.to_owned());
            return Ok(self);
        }
        Err(last)
    }

    /// Finish.
    ///
    /// # Errors
    /// No endpoint (or one that is not an http(s) URL), no subject claim, a leeway over 5
    /// minutes, a zero budget, or no HTTP client.
    pub fn build(self) -> Result<IntrospectionAuthenticator, ConfigError> {
        let endpoint = self.endpoint.ok_or_else(|| {
            ConfigError::setting("no introspection endpoint (configure it or discover it)")
        })?;
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(ConfigError::parse(
                "the introspection endpoint is not an http(s) URL",
            ));
        }
        if self.subject_claims.is_empty() {
            return Err(ConfigError::setting("no subject claim configured"));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(ConfigError::setting("leeway over 5 minutes"));
        }
        if self.budget.is_zero() {
            return Err(ConfigError::setting("the introspection budget is zero"));
        }
        let client = match self.client {
            Some(client) => client,
            None => client::default_client()?,
        };
        Ok(IntrospectionAuthenticator(Arc::new(Inner {
            endpoint,
            auth: self.auth.unwrap_or(ClientAuth::None),
            issuer: self.issuer,
            audiences: self.audiences,
            leeway: self.leeway.as_secs_f64(),
            subject_claims: self.subject_claims,
            scope_claims: self.scope_claims,
            role_claims: self.role_claims,
            tenant_claim: self.tenant_claim,
            plan_claim: self.plan_claim,
            role_model: self.role_model,
            cache_ttl: self.cache_ttl.as_secs_f64(),
            negative_ttl: self.negative_ttl.as_secs_f64(),
            budget: self.budget,
            extractor: self.extractor,
            clock: self.clock,
            client,
            cache: Cache::new(self.cache_capacity.max(1)),
            revocation: self.revocation,
        })))
    }
}

/// The credential of an [`IntrospectionAuthenticator`]: the token, or the answer the cache
/// held for it. `Debug` never shows the token.
pub struct OpaqueCredential(Credential);

enum Credential {
    Token(String, [u8; 32]),
    Cached(Answer),
}

impl fmt::Debug for OpaqueCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Credential::Token(..) => "token",
            Credential::Cached(_) => "cached",
        };
        f.debug_tuple("OpaqueCredential").field(&kind).finish()
    }
}

impl IntrospectionAuthenticator {
    fn credential(&self, token: &str) -> OpaqueCredential {
        let key = digest(token);
        OpaqueCredential(match self.cached(&key) {
            Some(answer) => Credential::Cached(answer),
            None => Credential::Token(token.to_owned(), key),
        })
    }

    /// Check a token (or a cached answer) for the layer.
    fn run(&self, credential: OpaqueCredential) -> IntrospectionAuthFuture {
        let this = self.clone();
        let future = async move {
            let outcome = match credential.0 {
                Credential::Cached(answer) => Self::from_answer(answer),
                Credential::Token(token, key) => this.introspect_cached(token, key).await,
            };
            this.check_revocation(outcome).await
        };
        IntrospectionAuthFuture(ReadyOrBoxed::boxed(future))
    }

    /// Check `token`, for [`verify`](Self::verify).
    fn authenticate_token(&self, token: String) -> IntrospectionAuthFuture {
        let credential = self.credential(&token);
        self.run(credential)
    }
}

/// The future of [`IntrospectionAuthenticator`].
pub struct IntrospectionAuthFuture(ReadyOrBoxed);

impl fmt::Debug for IntrospectionAuthFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionAuthFuture")
            .finish_non_exhaustive()
    }
}

impl Future for IntrospectionAuthFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl Authenticator for IntrospectionAuthenticator {
    type Credential = OpaqueCredential;
    type Future = IntrospectionAuthFuture;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<OpaqueCredential>, AuthError> {
        Ok(self
            .0
            .extractor
            .extract(head.headers)?
            .map(|token| self.credential(token)))
    }

    fn authenticate(&self, credential: OpaqueCredential) -> IntrospectionAuthFuture {
        self.run(credential)
    }

    fn authenticate_now(&self, credential: OpaqueCredential) -> Result<Outcome, OpaqueCredential> {
        match credential.0 {
            Credential::Cached(answer) if self.0.revocation.is_none() => {
                Ok(Self::from_answer(answer))
            }
            other => Err(OpaqueCredential(other)),
        }
    }
}

/// Routes each bearer token by its shape: a compact JWS (three dot-separated base64url
/// segments) to the [`JwtAuthenticator`], anything else to the
/// [`IntrospectionAuthenticator`]. A JWS-shaped token that fails JWT verification is
/// refused; it never falls through to introspection.
#[derive(Clone, Debug)]
pub struct JwtOrOpaque {
    jwt: JwtAuthenticator,
    opaque: IntrospectionAuthenticator,
}

impl JwtOrOpaque {
    /// Route between `jwt` and `opaque`.
    pub fn new(jwt: JwtAuthenticator, opaque: IntrospectionAuthenticator) -> Self {
        Self { jwt, opaque }
    }
}

/// Whether `token` has the shape of a compact JWS: three dot-separated segments of
/// base64url characters, the header and signature not empty (the payload may be).
fn jws_shaped(token: &str) -> bool {
    let b64 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = token.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !s.is_empty() && b64(h) && b64(p) && b64(s)
    )
}

/// The credential of [`JwtOrOpaque`].
#[derive(Debug)]
pub enum JwtOrOpaqueCredential {
    /// A JWS-shaped token.
    Jwt(JwtCredential),
    /// Anything else.
    Opaque(OpaqueCredential),
}

/// The future of [`JwtOrOpaque`].
pub struct JwtOrOpaqueFuture(Either);

enum Either {
    Jwt(JwtFuture),
    Opaque(IntrospectionAuthFuture),
}

impl fmt::Debug for JwtOrOpaqueFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtOrOpaqueFuture").finish_non_exhaustive()
    }
}

impl Future for JwtOrOpaqueFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut self.0 {
            Either::Jwt(f) => Pin::new(f).poll(cx),
            Either::Opaque(f) => Pin::new(f).poll(cx),
        }
    }
}

impl Authenticator for JwtOrOpaque {
    type Credential = JwtOrOpaqueCredential;
    type Future = JwtOrOpaqueFuture;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<Self::Credential>, AuthError> {
        // The JWT authenticator reads its scheme(s) (Bearer, and DPoP when configured);
        // only a bearer token that is not JWS-shaped goes to introspection.
        let opaque = match self.opaque.0.extractor.extract(head.headers)? {
            Some(token) if !jws_shaped(token) => Some(self.opaque.credential(token)),
            _ => None,
        };
        match opaque {
            Some(credential) => Ok(Some(JwtOrOpaqueCredential::Opaque(credential))),
            None => Ok(self.jwt.extract(head)?.map(JwtOrOpaqueCredential::Jwt)),
        }
    }

    fn authenticate(&self, credential: Self::Credential) -> Self::Future {
        JwtOrOpaqueFuture(match credential {
            JwtOrOpaqueCredential::Jwt(c) => Either::Jwt(self.jwt.authenticate(c)),
            JwtOrOpaqueCredential::Opaque(c) => Either::Opaque(self.opaque.authenticate(c)),
        })
    }

    fn authenticate_now(&self, credential: Self::Credential) -> Result<Outcome, Self::Credential> {
        match credential {
            JwtOrOpaqueCredential::Jwt(c) => self
                .jwt
                .authenticate_now(c)
                .map_err(JwtOrOpaqueCredential::Jwt),
            JwtOrOpaqueCredential::Opaque(c) => self
                .opaque
                .authenticate_now(c)
                .map_err(JwtOrOpaqueCredential::Opaque),
        }
    }

    fn missing_credentials(&self) -> AuthError {
        self.jwt.missing_credentials()
    }

    fn response_header(&self) -> Option<crate::auth::ResponseHeader> {
        self.jwt.response_header()
    }
}
