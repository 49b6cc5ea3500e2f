//! axum extractors: [`Identity`], `Option<Identity>` and [`Claims<T>`].
//!
//! [`AuthLayer`](crate::auth::AuthLayer) authenticates the request and puts the
//! [`Identity`] into its extensions; these extractors hand it to handlers:
//!
//! | handler argument | no identity | identity |
//! |---|---|---|
//! | [`Identity`] | `401`, like missing credentials | the identity |
//! | `Option<Identity>` | `None` (never rejects) | `Some(identity)` |
//! | [`Claims<T>`] | `401`, like missing credentials | the claims as `T`; `401 invalid_token` if they do not fit `T` |
//! | `Option<Claims<T>>` | `None` | `Some(claims)`; `401 invalid_token` if they do not fit `T` |
//!
//! Rejections are [`AuthRejection`]s: the [`AuthError`] rendered by the renderer of the
//! layer that handled the request (its realm, its custom renderer, gRPC detection), or by
//! [`DefaultRenderer`] when no layer ran, with the [`AuthError`] in the response's
//! extensions. A handler may also return an [`AuthError`] itself (e.g. a 403); that renders
//! with [`DefaultRenderer::render_http`]. The reason (e.g. which field of `T` was missing) goes to a `tracing` event
//! (target `tower_api_guard::axum`), never to the response.
//!
//! Put the layer on [`route_layer`](https://docs.rs/axum/0.8/axum/struct.Router.html#method.route_layer),
//! not `layer`: `route_layer` runs only for requests that matched a route, so unknown paths
//! stay `404 Not Found` instead of turning into `401`. (A known path with a wrong method is
//! authenticated first: `401` without a token, `405` with a valid one.) To let
//! anonymous callers reach a handler that takes `Option<Identity>`, use
//! [`optional()`](crate::auth::AuthenticatorExt::optional): a request without credentials
//! goes through with no identity, a bad token is still `401`.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use serde::Deserialize;
//! use tower::ServiceExt;
//! use tower_api_guard::Identity;
//! use tower_api_guard::auth::{AuthLayer, AuthenticatorExt};
//! use tower_api_guard::axum::Claims;
//! use tower_api_guard::jwt::JwtAuthenticator;
//! use tower_api_guard::testing::TestIssuer;
//!
//! #[derive(Deserialize)]
//! struct MyClaims {
//!     sub: String,
//!     email: String,
//! }
//!
//! let issuer = TestIssuer::new("https://issuer.example");
//! let jwt = JwtAuthenticator::builder("https://issuer.example", "my-api")
//!     .keys(issuer.static_keys())
//!     .build()
//!     .unwrap();
//!
//! let app = Router::new()
//!     .route("/me", get(|id: Identity| async move { id.subject().to_owned() }))
//!     .route(
//!         "/email",
//!         get(|Claims(c): Claims<MyClaims>| async move { format!("{} <{}>", c.sub, c.email) }),
//!     )
//!     // Only matched routes are authenticated: unknown paths stay 404.
//!     .route_layer(AuthLayer::new(jwt.clone()))
//!     .merge(
//!         Router::new()
//!             .route(
//!                 "/hello",
//!                 get(|id: Option<Identity>| async move {
//!                     id.map_or("hello, stranger".to_owned(), |id| format!("hello, {}", id.subject()))
//!                 }),
//!             )
//!             // Anonymous callers pass; a bad token is still rejected.
//!             .route_layer(AuthLayer::new(jwt.optional())),
//!     );
//!
//! let token = issuer
//!     .token()
//!     .subject("alice")
//!     .audience("my-api")
//!     .claim("email", "alice@example.com".into())
//!     .mint();
//! let get = |uri: &str, token: Option<&str>| {
//!     let mut request = Request::get(uri);
//!     if let Some(token) = token {
//!         request = request.header("authorization", format!("Bearer {token}"));
//!     }
//!     request.body(Body::empty()).unwrap()
//! };
//!
//! let response = app.clone().oneshot(get("/me", Some(&token))).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let response = app.clone().oneshot(get("/email", Some(&token))).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let response = app.clone().oneshot(get("/me", None)).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! let response = app.clone().oneshot(get("/hello", None)).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let response = app.clone().oneshot(get("/hello", Some("not.a.token"))).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! let response = app.oneshot(get("/nowhere", None)).await.unwrap();
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! # });
//! ```

use std::convert::Infallible;
use std::ops::{Deref, DerefMut};

use axum_core::body::Body;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use serde::de::DeserializeOwned;

use bytes::Bytes;

use crate::error::AuthError;
use crate::head::RequestHead;
use crate::identity::Identity;
use crate::render::{DefaultRenderer, RenderRejection, StackRenderer};

/// An extractor's rejection: the [`AuthError`] (also reachable through `Deref`), rendered
/// by the renderer of the [`AuthLayer`](crate::auth::AuthLayer) that handled the request, so
/// its realm, custom rendering and gRPC detection apply; [`DefaultRenderer`] when no layer
/// ran. The response carries the [`AuthError`] in its extensions.
pub struct AuthRejection {
    error: AuthError,
    response: http::Response<Bytes>,
}

impl AuthRejection {
    fn new(parts: &Parts, error: AuthError) -> Self {
        let head = RequestHead::new(&parts.method, &parts.uri, &parts.headers);
        let response = match parts.extensions.get::<StackRenderer>() {
            Some(StackRenderer(renderer)) => renderer.render(&error, &head),
            None => DefaultRenderer::default().render(&error, &head),
        };
        Self { error, response }
    }

    /// The error.
    pub fn error(&self) -> &AuthError {
        &self.error
    }

    /// Unwrap the error.
    pub fn into_error(self) -> AuthError {
        self.error
    }
}

impl Deref for AuthRejection {
    type Target = AuthError;

    fn deref(&self) -> &AuthError {
        &self.error
    }
}

impl std::fmt::Debug for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuthRejection").field(&self.error).finish()
    }
}

impl std::fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for AuthRejection {}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let mut response = self.response.map(Body::from);
        response.extensions_mut().insert(self.error);
        response
    }
}

/// Renders with [`DefaultRenderer::render_http`] (realm `api`) and puts the error into the
/// response's extensions.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let response = DefaultRenderer::default().render_http(&self);
        let mut response = response.map(Body::from);
        response.extensions_mut().insert(self);
        response
    }
}

/// Extracts the [`Identity`] that [`AuthLayer`](crate::auth::AuthLayer) put into the
/// request's extensions.
///
/// # Errors
/// A `401` [`MissingCredentials`](crate::AuthErrorKind::MissingCredentials) rejection when the
/// request has no identity (no layer, or an [`optional`](crate::auth::AuthenticatorExt::optional)
/// one let an anonymous request through).
impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        identity_of(parts).ok_or_else(|| no_identity(parts))
    }
}

/// `Option<Identity>`: `None` when the request has no identity. Never rejects.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(identity_of(parts))
    }
}

/// The identity's raw claims (a JWT's payload, an API key's metadata) deserialized into `T`.
///
/// ```
/// use serde::Deserialize;
/// use tower_api_guard::axum::Claims;
///
/// #[derive(Deserialize)]
/// struct Org {
///     org_id: String,
/// }
///
/// async fn handler(Claims(org): Claims<Org>) -> String {
///     org.org_id
/// }
/// ```
///
/// # Errors
/// A `401` [`MissingCredentials`](crate::AuthErrorKind::MissingCredentials) rejection when
/// the request has no identity, and a `401`
/// [`InvalidToken`](crate::AuthErrorKind::InvalidToken) rejection when the claims do not
/// have the shape of `T` (the response says only that the token is invalid; the reason is
/// logged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claims<T>(pub T);

impl<T> Claims<T> {
    /// Unwrap the claims.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Claims<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Claims<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<S, T> FromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let identity = identity_of(parts).ok_or_else(|| no_identity(parts))?;
        claims_of(&identity)
            .map(Claims)
            .map_err(|e| AuthRejection::new(parts, e))
    }
}

/// `Option<Claims<T>>`: `None` when the request has no identity; still a `401` when the
/// identity's claims do not have the shape of `T`.
impl<S, T> OptionalFromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match identity_of(parts) {
            Some(identity) => claims_of(&identity)
                .map(|c| Some(Claims(c)))
                .map_err(|e| AuthRejection::new(parts, e)),
            None => Ok(None),
        }
    }
}

fn identity_of(parts: &Parts) -> Option<Identity> {
    parts.extensions.get::<Identity>().cloned()
}

fn no_identity(parts: &Parts) -> AuthRejection {
    let error = AuthError::missing_credentials();
    log_rejection(&error, "no identity in the request extensions");
    AuthRejection::new(parts, error)
}

fn claims_of<T: DeserializeOwned>(identity: &Identity) -> Result<T, AuthError> {
    identity.claims_as::<T>().map_err(|e| {
        let reason = format!("claims do not fit the expected type: {}", shape_error(&e));
        let error = AuthError::invalid_token(reason);
        log_rejection(&error, error.reason());
        error
    })
}

fn log_rejection(error: &AuthError, reason: &str) {
    tracing::info!(
        target: "tower_api_guard::axum",
        kind = ?error.kind(),
        reason = %reason,
        "extractor rejected the request"
    );
}

/// serde's message without the claim's value: `invalid type: string "alice@…", expected
/// u64` becomes `invalid type, expected u64`. Field names (`missing field `email``) stay.
fn shape_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    for prefix in ["invalid type", "invalid value"] {
        if message.starts_with(prefix) {
            return match message.rfind(", expected ") {
                Some(at) => format!("{prefix}{}", &message[at..]),
                None => prefix.to_owned(),
            };
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuthErrorKind;
    use crate::identity::Source;
    use http::{Request, StatusCode};
    use serde_json::json;

    fn parts(identity: Option<Identity>) -> Parts {
        let (mut parts, ()) = Request::new(()).into_parts();
        if let Some(identity) = identity {
            parts.extensions.insert(identity);
        }
        parts
    }

    fn alice() -> Identity {
        Identity::builder(
            "alice",
            Source::Custom {
                mechanism: "test".into(),
            },
        )
        .claims(json!({"sub": "alice", "email": "alice@example.com", "n": "secret-value"}))
        .build()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures_util::FutureExt::now_or_never(f).expect("extractors never wait")
    }

    #[derive(Debug, serde::Deserialize)]
    struct Email {
        email: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Numeric {
        n: u64,
    }

    #[test]
    fn identity_present_and_missing() {
        let mut p = parts(Some(alice()));
        let id = block_on(<Identity as FromRequestParts<()>>::from_request_parts(
            &mut p,
            &(),
        ));
        assert_eq!(id.unwrap().subject(), "alice");

        let mut p = parts(None);
        let err = block_on(<Identity as FromRequestParts<()>>::from_request_parts(
            &mut p,
            &(),
        ))
        .unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::MissingCredentials);

        let opt =
            block_on(<Option<Identity> as FromRequestParts<()>>::from_request_parts(&mut p, &()));
        assert!(matches!(opt, Ok(None)));
    }

    #[test]
    fn claims_shapes() {
        let mut p = parts(Some(alice()));
        let Claims(c) = block_on(<Claims<Email> as FromRequestParts<()>>::from_request_parts(
            &mut p,
            &(),
        ))
        .unwrap();
        assert_eq!(c.email, "alice@example.com");

        let err =
            block_on(<Claims<Numeric> as FromRequestParts<()>>::from_request_parts(&mut p, &()))
                .unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::InvalidToken);
        assert!(
            err.reason().contains("invalid type, expected u64"),
            "{}",
            err.reason()
        );
        assert!(!err.reason().contains("secret-value"));

        let mut empty = parts(None);
        let none = block_on(
            <Option<Claims<Email>> as FromRequestParts<()>>::from_request_parts(&mut empty, &()),
        );
        assert!(matches!(none, Ok(None)));
        let wrong = block_on(
            <Option<Claims<Numeric>> as FromRequestParts<()>>::from_request_parts(&mut p, &()),
        );
        assert_eq!(wrong.unwrap_err().kind(), AuthErrorKind::InvalidToken);
    }

    #[test]
    fn shape_error_keeps_field_names_and_drops_values() {
        let e = serde_json::from_value::<Email>(json!({})).unwrap_err();
        assert_eq!(shape_error(&e), "missing field `email`");
        let e = serde_json::from_value::<Email>(json!({"email": 42})).unwrap_err();
        assert_eq!(shape_error(&e), "invalid type, expected a string");
    }

    #[test]
    fn into_response_renders_and_attaches_the_error() {
        let response = AuthError::invalid_token("private reason").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="api", error="invalid_token", error_description="The access token is invalid.""#
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let error = response.extensions().get::<AuthError>().unwrap();
        assert_eq!(error.kind(), AuthErrorKind::InvalidToken);
        assert_eq!(error.reason(), "private reason");
    }
}
