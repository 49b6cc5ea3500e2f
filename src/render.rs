//! How a rejection becomes a response: [`RenderRejection`] and [`DefaultRenderer`].
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
//! | [`Forbidden`](AuthErrorKind::Forbidden) | 403 | — | 7 `PERMISSION_DENIED` |
//! | [`RateLimited`](AuthErrorKind::RateLimited) | 429 + `Retry-After` | — | 8 `RESOURCE_EXHAUSTED` |
//! | [`Unavailable`](AuthErrorKind::Unavailable) | 503 + `Retry-After` | — | 14 `UNAVAILABLE` |
//! | [`InvalidDpopProof`](AuthErrorKind::InvalidDpopProof) | 401 | `DPoP error="invalid_dpop_proof", algs="…"` | 16 `UNAUTHENTICATED` |
//! | [`UseDpopNonce`](AuthErrorKind::UseDpopNonce) | 401 + `DPoP-Nonce` | `DPoP error="use_dpop_nonce", algs="…"` | 16 `UNAUTHENTICATED` |
//!
//! When an authenticator that accepts DPoP rejects (its [`AuthError`] carries a
//! [`DpopChallenge`]), a `DPoP realm="…", algs="…"` challenge goes
//! beside the `Bearer` one (instead of it when DPoP is required), the error code on the
//! challenge of the scheme the request used, and the server nonce, when nonces are on, in
//! `DPoP-Nonce`.
//!
//! HTTP bodies are small `application/problem+json` documents with a fixed description per
//! kind. gRPC requests (`content-type: application/grpc…`) get an HTTP 200 trailers-only
//! response. Nothing from the credential, and not the [reason](AuthError::reason), ever
//! reaches a response: the reason is for logs.
//!
//! # One renderer for the whole stack
//!
//! Set a renderer (or a realm) once, on the outermost layer: every rejection behind it —
//! the 401 of authentication, the 403 of a guard, the 429 of a limiter, a 503, gRPC
//! statuses, and the rejections of the axum extractors — renders with it, unless a layer
//! further in sets its own (which then applies to that layer and everything behind it).
//! The [`AuthError`] rides in the rejection response's extensions, so an outer layer can
//! read it (the brute-force guard does).
//!
//! ```
//! use tower_api_guard::render::{DefaultRenderer, RenderRejection};
//! use tower_api_guard::{AuthError, RequestHead};
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

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response};

use crate::error::{AuthError, AuthErrorKind, DpopChallenge};

/// The `DPoP-Nonce` response header (RFC 9449 §8).
const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");
use crate::head::RequestHead;

/// The renderer of the stack: the one set on the outermost layer that has one, left in the
/// request's extensions by that layer so that every layer and extractor behind it rejects
/// the same way.
#[derive(Clone)]
pub(crate) struct StackRenderer(pub(crate) Arc<dyn RenderRejection>);

/// The renderer for a rejection: the layer's own, else the stack's (left in the request's
/// extensions by an outer layer), else the default one.
pub(crate) fn renderer_for<'a>(
    own: Option<&'a Arc<dyn RenderRejection>>,
    extensions: &'a http::Extensions,
) -> &'a dyn RenderRejection {
    static DEFAULT: LazyLock<DefaultRenderer> = LazyLock::new(DefaultRenderer::default);
    match own.or_else(|| extensions.get::<StackRenderer>().map(|s| &s.0)) {
        Some(renderer) => &**renderer,
        None => &*DEFAULT,
    }
}

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
        self.challenges(error, headers);
        if let Some(nonce) = error.dpop_challenge().and_then(DpopChallenge::nonce) {
            headers.insert(DPOP_NONCE, nonce.clone());
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
        if let Some(nonce) = error.dpop_challenge().and_then(DpopChallenge::nonce) {
            headers.insert(DPOP_NONCE, nonce.clone());
        }
        if let Some(retry) = error.retry_after() {
            headers.insert(RETRY_AFTER, retry_after_value(retry));
        }
        response
    }

    /// The `WWW-Authenticate` challenges: `Bearer`, and `DPoP` beside (or instead of) it
    /// when the authenticator accepts DPoP. The error code goes on the challenge of the
    /// scheme the request used.
    fn challenges(&self, error: &AuthError, headers: &mut http::HeaderMap) {
        let kind = error.kind();
        if matches!(
            kind,
            AuthErrorKind::RateLimited | AuthErrorKind::Unavailable | AuthErrorKind::Forbidden
        ) {
            return;
        }
        let params = |value: &mut String| {
            if let Some(code) = kind.oauth_error() {
                value.push_str(&format!(
                    r#", error="{code}", error_description="{}""#,
                    kind.description()
                ));
            }
            if let Some(scope) = error.required_scope() {
                value.push_str(&format!(r#", scope="{}""#, sanitize_quoted(scope)));
            }
        };
        let dpop = error.dpop_challenge();
        if dpop.is_none_or(DpopChallenge::bearer) {
            let mut bearer = format!(r#"Bearer realm="{}""#, self.realm);
            if dpop.is_none_or(|d| !d.error_on_dpop()) {
                params(&mut bearer);
            }
            if let Ok(value) = HeaderValue::from_str(&bearer) {
                headers.append(WWW_AUTHENTICATE, value);
            }
        }
        if let Some(dpop) = dpop {
            let mut value = format!(
                r#"DPoP realm="{}", algs="{}""#,
                self.realm,
                sanitize_quoted(dpop.algs())
            );
            if dpop.error_on_dpop() {
                params(&mut value);
            }
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(WWW_AUTHENTICATE, value);
            }
        }
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
    use http::{HeaderMap, Method, Uri};

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
