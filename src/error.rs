//! [`AuthError`], [`ConfigError`], and how a rejection becomes a response.
//!
//! Every layer of this crate answers a rejected request with a response, never an `Err`.
//! [`DefaultRenderer`] renders it:
//!
//! | kind | HTTP | `WWW-Authenticate` | gRPC `grpc-status` |
//! |---|---|---|---|
//! | [`MissingCredentials`](AuthErrorKind::MissingCredentials) | 401 | `Bearer realm="…"` (no error code, RFC 6750 §3.1) | 16 `UNAUTHENTICATED` |
//! | [`InvalidRequest`](AuthErrorKind::InvalidRequest) | 400 | `error="invalid_request"` | 16 `UNAUTHENTICATED` |
//! | [`InvalidToken`](AuthErrorKind::InvalidToken) | 401 | `error="invalid_token"` | 16 `UNAUTHENTICATED` |
//! | [`InsufficientScope`](AuthErrorKind::InsufficientScope) | 403 | `error="insufficient_scope", scope="…"` | 7 `PERMISSION_DENIED` |
//! | [`RateLimited`](AuthErrorKind::RateLimited) | 429 + `Retry-After` | — | 8 `RESOURCE_EXHAUSTED` |
//! | [`Unavailable`](AuthErrorKind::Unavailable) | 503 + `Retry-After` | — | 14 `UNAVAILABLE` |
//!
//! HTTP bodies are small `application/problem+json` documents with a fixed description per
//! kind. gRPC requests (`content-type: application/grpc…`) get an HTTP 200 trailers-only
//! response. Nothing from the credential, and not the [reason](AuthError::reason), ever
//! reaches a response: the reason is for logs.
//!
//! The [`AuthError`] rides in the rejection response's extensions, so an outer layer can
//! read it (the brute-force guard does). Replace the rendering with your own
//! [`RenderRejection`].
//!
//! ```
//! use tower_api_guard::error::{AuthError, DefaultRenderer, RenderRejection, RequestHead};
//!
//! let renderer = DefaultRenderer::new("my-api");
//! let headers = http::HeaderMap::new();
//! let uri: http::Uri = "/".parse().unwrap();
//! let head = RequestHead::new(&http::Method::GET, &uri, &headers);
//! let response = renderer.render(&AuthError::invalid_token("expired"), &head);
//! assert_eq!(response.status(), 401);
//! assert_eq!(
//!     response.headers()["www-authenticate"],
//!     r#"Bearer realm="my-api", error="invalid_token", error_description="The access token is invalid.""#
//! );
//! assert!(!String::from_utf8_lossy(response.body()).contains("expired"));
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};

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
    /// Too many requests. 429.
    RateLimited,
    /// The key set or key store is unavailable. 503.
    Unavailable,
}

impl AuthErrorKind {
    /// The HTTP status for this kind.
    pub fn status(self) -> StatusCode {
        match self {
            AuthErrorKind::MissingCredentials | AuthErrorKind::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            AuthErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            AuthErrorKind::InsufficientScope => StatusCode::FORBIDDEN,
            AuthErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            AuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code for this kind.
    pub fn grpc_code(self) -> u8 {
        match self {
            AuthErrorKind::MissingCredentials
            | AuthErrorKind::InvalidRequest
            | AuthErrorKind::InvalidToken => 16,
            AuthErrorKind::InsufficientScope => 7,
            AuthErrorKind::RateLimited => 8,
            AuthErrorKind::Unavailable => 14,
        }
    }

    /// The RFC 6750 error code, if this kind has one.
    pub fn oauth_error(self) -> Option<&'static str> {
        match self {
            AuthErrorKind::InvalidRequest => Some("invalid_request"),
            AuthErrorKind::InvalidToken => Some("invalid_token"),
            AuthErrorKind::InsufficientScope => Some("insufficient_scope"),
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
            AuthErrorKind::RateLimited => "Too many requests.",
            AuthErrorKind::Unavailable => "Authentication is temporarily unavailable.",
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
    reason: Cow<'static, str>,
    scope: Option<Cow<'static, str>>,
    retry_after: Option<Duration>,
}

impl AuthError {
    fn new(kind: AuthErrorKind, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            scope: None,
            retry_after: None,
        }
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
        d.field("kind", &self.kind).field("reason", &self.reason);
        if let Some(scope) = &self.scope {
            d.field("scope", scope);
        }
        if let Some(r) = self.retry_after {
            d.field("retry_after", &r);
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

/// A configuration mistake found when building a layer or authenticator.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration: {message}")]
pub struct ConfigError {
    message: Cow<'static, str>,
}

impl ConfigError {
    /// A configuration error with a message (never containing secrets).
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What an authenticator or renderer may read of a request: everything but the body.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions, when the head was borrowed from a request.
    pub extensions: Option<&'a http::Extensions>,
}

impl<'a> RequestHead<'a> {
    /// Borrow the parts of a request.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            uri,
            headers,
            extensions: None,
        }
    }

    /// Borrow from a request.
    pub fn of<B>(request: &'a http::Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: Some(request.extensions()),
        }
    }

    /// Whether this is a gRPC request (`content-type: application/grpc…`).
    pub fn is_grpc(&self) -> bool {
        is_grpc(self.headers)
    }
}

pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The renderer of the [`AuthLayer`](crate::auth::AuthLayer) that let a request through,
/// left in the request's extensions so that extractors reject the same way.
#[derive(Clone)]
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct LayerRenderer(pub(crate) Arc<dyn RenderRejection>);

/// Turns an [`AuthError`] into a response. Implement it to change the rejection's shape;
/// pass it to a layer's `with_renderer`.
///
/// The layer adds the [`AuthError`] to the response's extensions after rendering.
pub trait RenderRejection: Send + Sync + 'static {
    /// Render the rejection of the request described by `head`.
    fn render(&self, error: &AuthError, head: &RequestHead<'_>) -> Response<Bytes>;
}

impl<F> RenderRejection for F
where
    F: Fn(&AuthError, &RequestHead<'_>) -> Response<Bytes> + Send + Sync + 'static,
{
    fn render(&self, error: &AuthError, head: &RequestHead<'_>) -> Response<Bytes> {
        self(error, head)
    }
}

/// The standard rendering: RFC 6750 challenges and problem+json for HTTP, trailers-only
/// status for gRPC. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct DefaultRenderer {
    realm: Arc<str>,
}

impl Default for DefaultRenderer {
    fn default() -> Self {
        Self::new("api")
    }
}

impl DefaultRenderer {
    /// A renderer whose challenges name `realm`. Characters outside RFC 6750's quoted-string
    /// set are dropped.
    pub fn new(realm: &str) -> Self {
        Self {
            realm: sanitize_quoted(realm).into(),
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Render as HTTP, ignoring the request's content type.
    pub fn render_http(&self, error: &AuthError) -> Response<Bytes> {
        let kind = error.kind();
        let status = kind.status();
        let body = format!(
            r#"{{"type":"about:blank","title":"{}","status":{},"detail":"{}"}}"#,
            status.canonical_reason().unwrap_or("Error"),
            status.as_u16(),
            kind.description()
        );
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = self.challenge(error) {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(retry) = error.retry_after() {
            headers.insert(RETRY_AFTER, retry_after_value(retry));
        }
        response
    }

    /// Render as a gRPC trailers-only response.
    pub fn render_grpc(&self, error: &AuthError) -> Response<Bytes> {
        let kind = error.kind();
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(kind.grpc_code())),
        );
        // Descriptions are fixed ASCII without '%', so they need no percent-encoding.
        headers.insert("grpc-message", HeaderValue::from_static(kind.description()));
        if let Some(retry) = error.retry_after() {
            headers.insert(RETRY_AFTER, retry_after_value(retry));
        }
        response
    }

    fn challenge(&self, error: &AuthError) -> Option<HeaderValue> {
        let kind = error.kind();
        let mut value = match kind {
            AuthErrorKind::MissingCredentials
            | AuthErrorKind::InvalidRequest
            | AuthErrorKind::InvalidToken
            | AuthErrorKind::InsufficientScope => format!(r#"Bearer realm="{}""#, self.realm),
            _ => return None,
        };
        if let Some(code) = kind.oauth_error() {
            value.push_str(&format!(
                r#", error="{code}", error_description="{}""#,
                kind.description()
            ));
        }
        if let Some(scope) = error.required_scope() {
            value.push_str(&format!(r#", scope="{}""#, sanitize_quoted(scope)));
        }
        HeaderValue::from_str(&value).ok()
    }
}

impl RenderRejection for DefaultRenderer {
    fn render(&self, error: &AuthError, head: &RequestHead<'_>) -> Response<Bytes> {
        if head.is_grpc() {
            self.render_grpc(error)
        } else {
            self.render_http(error)
        }
    }
}

/// Keep only RFC 6750's `%x20-21 / %x23-5B / %x5D-7E` (no `"` or `\`).
fn sanitize_quoted(s: &str) -> String {
    s.chars()
        .filter(|&c| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        .collect()
}

fn retry_after_value(d: Duration) -> HeaderValue {
    // Whole seconds, rounded up, at least 1.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(error: &AuthError, grpc: bool) -> Response<Bytes> {
        let mut headers = HeaderMap::new();
        if grpc {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/grpc+proto"),
            );
        }
        let uri: Uri = "/".parse().unwrap();
        DefaultRenderer::new("api").render(error, &RequestHead::new(&Method::GET, &uri, &headers))
    }

    #[test]
    fn missing_credentials_has_no_error_code() {
        let r = render(&AuthError::missing_credentials(), false);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], r#"Bearer realm="api""#);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn statuses_and_challenges() {
        let r = render(&AuthError::invalid_request("two headers"), false);
        assert_eq!(r.status(), 400);
        assert!(
            r.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains(r#"error="invalid_request""#)
        );

        let r = render(&AuthError::insufficient_scope("items:write \"x\\"), false);
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="api", error="insufficient_scope", error_description="The access token does not grant this request.", scope="items:write x""#
        );

        let r = render(&AuthError::rate_limited(Duration::from_millis(1500)), false);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());

        let r = render(
            &AuthError::unavailable("jwks down", Duration::from_secs(30)),
            false,
        );
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "30");
    }

    #[test]
    fn body_is_fixed_and_never_has_the_reason() {
        let r = render(&AuthError::invalid_token("kid eyJhbGciOi not found"), false);
        let body = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(!body.contains("eyJ"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], 401);
        assert_eq!(v["detail"], "The access token is invalid.");
        let e = AuthError::invalid_token("secret reason");
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn grpc_codes() {
        for (e, code) in [
            (AuthError::missing_credentials(), "16"),
            (AuthError::invalid_request("x"), "16"),
            (AuthError::invalid_token("x"), "16"),
            (AuthError::insufficient_scope("s"), "7"),
            (AuthError::rate_limited(Duration::from_secs(1)), "8"),
            (AuthError::unavailable("x", Duration::from_secs(1)), "14"),
        ] {
            let r = render(&e, true);
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["grpc-status"], code);
            assert_eq!(r.headers()[CONTENT_TYPE], "application/grpc");
            assert!(r.headers().contains_key("grpc-message"));
        }
    }
}
