//! The error types: [`AuthError`] (why a request was rejected), [`ConfigError`] (why a
//! layer or authenticator could not be built) and [`FailurePolicy`] (what a failing
//! dependency does to a request). How an [`AuthError`] becomes a response is in
//! [`crate::render`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// What went wrong, coarsely. Decides the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No credential of any accepted kind was presented. 401 without an error code.
    MissingCredentials,
    /// The request is malformed: two credentials, an empty token, bad characters. 400.
    InvalidRequest,
    /// A credential was presented and is not valid (bad signature, expired, wrong audience, …). 401.
    InvalidToken,
    /// Authenticated, but not allowed. 403.
    InsufficientScope,
    /// Authenticated, but not allowed to touch this resource: not its owner, or a policy
    /// said no. 403 without a `WWW-Authenticate` challenge (no scope would help).
    Forbidden,
    /// Too many requests. 429.
    RateLimited,
    /// The key set or key store is unavailable. 503.
    Unavailable,
    /// The DPoP proof (RFC 9449) is missing, malformed, or does not match the request or
    /// the token. 401 with `WWW-Authenticate: DPoP error="invalid_dpop_proof"`.
    InvalidDpopProof,
    /// The DPoP proof lacks the server's current nonce (RFC 9449 §8). 401 with
    /// `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce` header.
    UseDpopNonce,
}

/// Why a request was rejected, from a fixed set: the `reason` label of the crate's
/// metrics and the `reason` field of its audit events (see [`crate::metrics`]). Never
/// credential data; [`AuthError::reason`] holds the free-text detail for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonCode {
    /// No credential was presented.
    MissingCredentials,
    /// The request or the credential is malformed (two credentials, bad characters, a
    /// token that does not parse).
    Malformed,
    /// The credential is longer than the cap.
    TooLarge,
    /// The credential is not valid, for a reason without a code of its own.
    InvalidToken,
    /// The token or key has expired.
    Expired,
    /// The token is not valid yet (`nbf`, or `iat` in the future).
    NotYetValid,
    /// The signature does not verify.
    BadSignature,
    /// The token names a key (`kid`) the key set does not hold.
    UnknownKid,
    /// The token's algorithm is `none`, unsupported, or not allowed.
    AlgorithmNotAllowed,
    /// The issuer is not the expected one.
    BadIssuer,
    /// The audience is not an expected one.
    BadAudience,
    /// The token or key has been revoked.
    Revoked,
    /// The API key is not in the store.
    UnknownKey,
    /// The API key is older than the age policy's maximum.
    KeyTooOld,
    /// The introspection endpoint answered that the token is not active.
    Inactive,
    /// The DPoP proof is missing or invalid.
    InvalidDpopProof,
    /// The DPoP proof was seen before.
    DpopReplay,
    /// The DPoP proof lacks the server's current nonce.
    UseDpopNonce,
    /// The token is bound to a key or certificate the request does not prove.
    BindingMismatch,
    /// A required scope or role is missing.
    InsufficientScope,
    /// Not allowed to touch this resource (not its owner, a check said no).
    Forbidden,
    /// A policy engine said no.
    PolicyDenied,
    /// Over a rate limit.
    RateLimited,
    /// Over an in-flight (concurrency) limit.
    ConcurrencyLimited,
    /// The client is locked out after repeated failures (brute-force guard).
    LockedOut,
    /// A dependency (key set, key store, Redis, policy engine) is unavailable.
    Unavailable,
}

impl ReasonCode {
    /// Every code, in declaration order.
    pub const ALL: [ReasonCode; 26] = [
        Self::MissingCredentials,
        Self::Malformed,
        Self::TooLarge,
        Self::InvalidToken,
        Self::Expired,
        Self::NotYetValid,
        Self::BadSignature,
        Self::UnknownKid,
        Self::AlgorithmNotAllowed,
        Self::BadIssuer,
        Self::BadAudience,
        Self::Revoked,
        Self::UnknownKey,
        Self::KeyTooOld,
        Self::Inactive,
        Self::InvalidDpopProof,
        Self::DpopReplay,
        Self::UseDpopNonce,
        Self::BindingMismatch,
        Self::InsufficientScope,
        Self::Forbidden,
        Self::PolicyDenied,
        Self::RateLimited,
        Self::ConcurrencyLimited,
        Self::LockedOut,
        Self::Unavailable,
    ];

    /// The code as a metric label value and audit field: `snake_case`, stable.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::InvalidToken => "invalid_token",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::UnknownKid => "unknown_kid",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::BadIssuer => "bad_issuer",
            Self::BadAudience => "bad_audience",
            Self::Revoked => "revoked",
            Self::UnknownKey => "unknown_key",
            Self::KeyTooOld => "key_too_old",
            Self::Inactive => "inactive",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::DpopReplay => "dpop_replay",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::BindingMismatch => "binding_mismatch",
            Self::InsufficientScope => "insufficient_scope",
            Self::Forbidden => "forbidden",
            Self::PolicyDenied => "policy_denied",
            Self::RateLimited => "rate_limited",
            Self::ConcurrencyLimited => "concurrency_limited",
            Self::LockedOut => "locked_out",
            Self::Unavailable => "unavailable",
        }
    }

    /// The code an error of `kind` has unless a more precise one is set.
    pub const fn of_kind(kind: AuthErrorKind) -> Self {
        match kind {
            AuthErrorKind::MissingCredentials => Self::MissingCredentials,
            AuthErrorKind::InvalidRequest => Self::Malformed,
            AuthErrorKind::InvalidToken => Self::InvalidToken,
            AuthErrorKind::InsufficientScope => Self::InsufficientScope,
            AuthErrorKind::Forbidden => Self::Forbidden,
            AuthErrorKind::RateLimited => Self::RateLimited,
            AuthErrorKind::Unavailable => Self::Unavailable,
            AuthErrorKind::InvalidDpopProof => Self::InvalidDpopProof,
            AuthErrorKind::UseDpopNonce => Self::UseDpopNonce,
        }
    }

    /// The position of this code in [`ALL`](Self::ALL).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AuthErrorKind {
    /// The HTTP status for this kind.
    pub fn status(self) -> StatusCode {
        match self {
            AuthErrorKind::MissingCredentials
            | AuthErrorKind::InvalidToken
            | AuthErrorKind::InvalidDpopProof
            | AuthErrorKind::UseDpopNonce => StatusCode::UNAUTHORIZED,
            AuthErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            AuthErrorKind::InsufficientScope | AuthErrorKind::Forbidden => StatusCode::FORBIDDEN,
            AuthErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            AuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code for this kind.
    pub fn grpc_code(self) -> u8 {
        match self {
            AuthErrorKind::MissingCredentials
            | AuthErrorKind::InvalidRequest
            | AuthErrorKind::InvalidToken
            | AuthErrorKind::InvalidDpopProof
            | AuthErrorKind::UseDpopNonce => 16,
            AuthErrorKind::InsufficientScope | AuthErrorKind::Forbidden => 7,
            AuthErrorKind::RateLimited => 8,
            AuthErrorKind::Unavailable => 14,
        }
    }

    /// The RFC 6750 (or RFC 9449) error code, if this kind has one.
    pub fn oauth_error(self) -> Option<&'static str> {
        match self {
            AuthErrorKind::InvalidRequest => Some("invalid_request"),
            AuthErrorKind::InvalidToken => Some("invalid_token"),
            AuthErrorKind::InsufficientScope => Some("insufficient_scope"),
            AuthErrorKind::InvalidDpopProof => Some("invalid_dpop_proof"),
            AuthErrorKind::UseDpopNonce => Some("use_dpop_nonce"),
            _ => None,
        }
    }

    /// The fixed, public description of this kind. Never contains request data.
    pub fn description(self) -> &'static str {
        match self {
            AuthErrorKind::MissingCredentials => "Authentication is required.",
            AuthErrorKind::InvalidRequest => "The request is malformed.",
            AuthErrorKind::InvalidToken => "The access token is invalid.",
            AuthErrorKind::InsufficientScope => "The access token does not grant this request.",
            AuthErrorKind::Forbidden => "Access to this resource is not allowed.",
            AuthErrorKind::RateLimited => "Too many requests.",
            AuthErrorKind::Unavailable => "Authentication is temporarily unavailable.",
            AuthErrorKind::InvalidDpopProof => "The DPoP proof is invalid.",
            AuthErrorKind::UseDpopNonce => "A DPoP proof with the server's nonce is required.",
        }
    }
}

/// Why a request was rejected. Opaque: construct it with the functions below.
///
/// `Display` prints only the fixed [description](AuthErrorKind::description); `Debug` adds
/// the [reason](AuthError::reason), which this crate never fills with credential data.
#[derive(Clone)]
pub struct AuthError {
    kind: AuthErrorKind,
    code: ReasonCode,
    reason: Cow<'static, str>,
    scope: Option<Cow<'static, str>>,
    retry_after: Option<Duration>,
    dpop: Option<Arc<DpopChallenge>>,
    /// The policies that decided a policy rejection, for audit events.
    policies: Option<Arc<str>>,
}

/// What a rejection by an authenticator that accepts DPoP (RFC 9449) tells the client, for
/// renderers: the `DPoP` challenge with the accepted algorithms, whether a `Bearer`
/// challenge goes beside it, which of the two carries the error code, and the nonce to send
/// in `DPoP-Nonce`. [`DefaultRenderer`](crate::render::DefaultRenderer) renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopChallenge {
    algs: Arc<str>,
    bearer: bool,
    error_on_dpop: bool,
    nonce: Option<http::HeaderValue>,
}

impl DpopChallenge {
    /// A challenge naming `algs` (space-separated, e.g. `"ES256 EdDSA"`). `bearer`: bearer
    /// tokens are accepted too, so a `Bearer` challenge goes beside the `DPoP` one.
    pub fn new(algs: impl Into<Arc<str>>, bearer: bool) -> Self {
        Self {
            algs: algs.into(),
            bearer,
            error_on_dpop: true,
            nonce: None,
        }
    }

    /// Put the error code on the `Bearer` challenge (the request used `Bearer`) rather than
    /// on the `DPoP` one.
    #[must_use]
    pub fn error_on_bearer(mut self) -> Self {
        self.error_on_dpop = !self.bearer;
        self
    }

    /// Send `nonce` in a `DPoP-Nonce` header.
    #[must_use]
    pub fn with_nonce(mut self, nonce: http::HeaderValue) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// The accepted proof algorithms, space-separated.
    pub fn algs(&self) -> &str {
        &self.algs
    }

    /// Whether a `Bearer` challenge goes beside the `DPoP` one.
    pub fn bearer(&self) -> bool {
        self.bearer
    }

    /// Whether the error code belongs on the `DPoP` challenge (else on the `Bearer` one).
    pub fn error_on_dpop(&self) -> bool {
        self.error_on_dpop
    }

    /// The nonce for the `DPoP-Nonce` header.
    pub fn nonce(&self) -> Option<&http::HeaderValue> {
        self.nonce.as_ref()
    }
}

impl AuthError {
    fn new(kind: AuthErrorKind, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            code: ReasonCode::of_kind(kind),
            reason: reason.into(),
            scope: None,
            retry_after: None,
            dpop: None,
            policies: None,
        }
    }

    /// The DPoP proof is invalid (RFC 9449 `invalid_dpop_proof`). `reason` is for logs only.
    pub fn invalid_dpop_proof(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::InvalidDpopProof, reason)
    }

    /// The DPoP proof lacks the current nonce (RFC 9449 `use_dpop_nonce`).
    pub fn use_dpop_nonce(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::UseDpopNonce, reason)
    }

    /// The same error carrying a DPoP challenge (see [`DpopChallenge`]).
    #[must_use]
    pub fn with_dpop_challenge(mut self, challenge: impl Into<Arc<DpopChallenge>>) -> Self {
        self.dpop = Some(challenge.into());
        self
    }

    /// The DPoP challenge, when an authenticator that accepts DPoP rejected the request.
    pub fn dpop_challenge(&self) -> Option<&DpopChallenge> {
        self.dpop.as_deref()
    }

    /// No credential was presented.
    pub fn missing_credentials() -> Self {
        Self::new(AuthErrorKind::MissingCredentials, "no credentials")
    }

    /// The request is malformed. `reason` is for logs only.
    pub fn invalid_request(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::InvalidRequest, reason)
    }

    /// The credential is not valid. `reason` is for logs only; never put credential data in it.
    pub fn invalid_token(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::InvalidToken, reason)
    }

    /// Authenticated but not allowed; `scope` is what was required (space-delimited scopes).
    pub fn insufficient_scope(scope: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(AuthErrorKind::InsufficientScope, "insufficient scope");
        e.scope = Some(scope.into());
        e
    }

    /// Authenticated but not allowed to touch this resource (not its owner, or a policy
    /// said no). `reason` is for logs only.
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::Forbidden, reason)
    }

    /// Too many requests; retry after `retry_after`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut e = Self::new(AuthErrorKind::RateLimited, "rate limited");
        e.retry_after = Some(retry_after);
        e
    }

    /// A dependency (key set, key store) is unavailable; retry after `retry_after`.
    pub fn unavailable(reason: impl Into<Cow<'static, str>>, retry_after: Duration) -> Self {
        let mut e = Self::new(AuthErrorKind::Unavailable, reason);
        e.retry_after = Some(retry_after);
        e
    }

    /// The same error with another reason (for logs only).
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The same error with a more precise [`ReasonCode`] (the kind, and so the status,
    /// stay). Custom authenticators and checks use it so that their rejections count under
    /// the right `reason` in metrics and audit events.
    ///
    /// ```
    /// use tower_api_guard::{AuthError, ReasonCode};
    ///
    /// let e = AuthError::invalid_token("session ended").with_code(ReasonCode::Revoked);
    /// assert_eq!(e.code(), ReasonCode::Revoked);
    /// assert_eq!(e.status(), 401);
    /// ```
    #[must_use]
    pub fn with_code(mut self, code: ReasonCode) -> Self {
        self.code = code;
        self
    }

    /// The same error naming the policies that decided it (comma-separated ids).
    #[cfg_attr(not(feature = "policy"), allow(dead_code))]
    pub(crate) fn with_policies(mut self, policies: impl Into<Arc<str>>) -> Self {
        self.policies = Some(policies.into());
        self
    }

    /// The ids of the policies that decided a policy rejection (comma-separated), for
    /// audit events.
    pub fn policies(&self) -> Option<&str> {
        self.policies.as_deref()
    }

    /// Why, from a fixed set: the `reason` of metrics and audit events.
    pub fn code(&self) -> ReasonCode {
        self.code
    }

    /// The kind.
    pub fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// Why, for logs. Never shown to the client.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The required scope, for [`InsufficientScope`](AuthErrorKind::InsufficientScope).
    pub fn required_scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// How long to wait, for [`RateLimited`](AuthErrorKind::RateLimited) and
    /// [`Unavailable`](AuthErrorKind::Unavailable).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The HTTP status this error renders with.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl fmt::Debug for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AuthError");
        d.field("kind", &self.kind)
            .field("code", &self.code)
            .field("reason", &self.reason);
        if let Some(scope) = &self.scope {
            d.field("scope", scope);
        }
        if let Some(r) = self.retry_after {
            d.field("retry_after", &r);
        }
        if let Some(dpop) = &self.dpop {
            d.field("dpop", dpop);
        }
        d.finish()
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.description())
    }
}

impl std::error::Error for AuthError {}

/// What kind of configuration mistake a [`ConfigError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A setting is out of range or inconsistent with another one.
    InvalidSetting,
    /// A text setting (a quota, an expression, a network, a URL) does not parse.
    Parse,
    /// A key, key set or secret is unusable (malformed, too weak, of the wrong type).
    InvalidKey,
    /// A service the layer needs at start (Redis, a database, an HTTP client, the OS RNG)
    /// could not be reached or set up; [`source`](std::error::Error::source) has the cause.
    Unavailable,
}

/// A configuration mistake found when building a layer, store or authenticator.
///
/// The message names the setting and never holds a secret (no URL with credentials, no
/// key material); the [`source`](std::error::Error::source), when there is one, is the
/// underlying error of a connection or set-up step, kept for diagnosis.
#[derive(Debug, Clone)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: Cow<'static, str>,
    source: Cause,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {
    /// The error inside (not its `Arc`), so that `downcast_ref` finds it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.get()
    }
}

impl ConfigError {
    /// A configuration error of `kind` with a message (never containing secrets).
    pub fn new(kind: ConfigErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Cause::default(),
        }
    }

    /// An [`InvalidSetting`](ConfigErrorKind::InvalidSetting) error.
    #[cfg_attr(
        not(any(feature = "jwt", feature = "api-key", feature = "rate-limit")),
        allow(dead_code)
    )]
    pub(crate) fn setting(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ConfigErrorKind::InvalidSetting, message)
    }

    /// A [`Parse`](ConfigErrorKind::Parse) error.
    #[cfg_attr(
        not(any(
            feature = "rate-limit",
            feature = "authz",
            feature = "redis",
            feature = "sqlite",
            feature = "postgres"
        )),
        allow(dead_code)
    )]
    pub(crate) fn parse(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ConfigErrorKind::Parse, message)
    }

    /// An [`InvalidKey`](ConfigErrorKind::InvalidKey) error.
    #[cfg_attr(not(any(feature = "jwt", feature = "api-key")), allow(dead_code))]
    pub(crate) fn key(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ConfigErrorKind::InvalidKey, message)
    }

    /// An [`Unavailable`](ConfigErrorKind::Unavailable) error caused by `source`. Only
    /// for causes that cannot carry a secret (I/O and protocol errors, not URL parsing).
    #[cfg_attr(
        not(any(
            feature = "redis",
            feature = "sqlite",
            feature = "postgres",
            feature = "reqwest",
            feature = "api-key"
        )),
        allow(dead_code)
    )]
    pub(crate) fn unavailable(
        message: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind: ConfigErrorKind::Unavailable,
            message: message.into(),
            source: Cause::new(source),
        }
    }

    /// The kind of mistake.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The cause of a failure (an underlying error), shared by the error types that keep one:
/// `source()` gives the error itself (not the `Arc` around it, so `downcast_ref` finds it),
/// and `Debug` shows its `Display` only.
#[derive(Clone, Default)]
pub(crate) struct Cause(Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>);

impl Cause {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(error)))
    }

    pub(crate) fn get(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }

    /// `Name { reason: "…", source: … }`, the source left out when there is none.
    #[cfg_attr(not(any(feature = "jwt", feature = "api-key")), allow(dead_code))]
    pub(crate) fn debug(
        &self,
        f: &mut fmt::Formatter<'_>,
        name: &str,
        reason: &str,
    ) -> fmt::Result {
        let mut d = f.debug_struct(name);
        d.field("reason", &reason);
        if let Some(source) = &self.0 {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(source) => write!(f, "Some({source})"),
            None => f.write_str("None"),
        }
    }
}

/// What a failing dependency (a rate-limit store, a revocation store) does to the request
/// it was asked about. Each setting that takes one documents its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Reject the request with 503 and `Retry-After` (gRPC `UNAVAILABLE`).
    Closed,
    /// Let the request through, logged at `warn`.
    Open,
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_config_error_keeps_its_kind_and_the_cause_itself() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = ConfigError::unavailable("cannot connect to Redis", io);
        assert_eq!(error.kind(), ConfigErrorKind::Unavailable);
        assert_eq!(
            error.to_string(),
            "invalid configuration: cannot connect to Redis"
        );
        let cause = error.source().unwrap();
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        assert!(ConfigError::setting("x").source().is_none());
        assert_eq!(ConfigError::parse("x").kind(), ConfigErrorKind::Parse);
    }
}
