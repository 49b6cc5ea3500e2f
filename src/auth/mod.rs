//! Authentication: the [`Authenticator`] trait and [`AuthLayer`].
//!
//! An [`Authenticator`] works in two steps. [`extract`](Authenticator::extract) reads its
//! kind of credential from the request head, synchronously:
//! `Ok(None)` means *no credential of my kind*, `Err` means *a credential of my kind is
//! there and is malformed*. [`authenticate`](Authenticator::authenticate) then checks the
//! credential and yields the [`Identity`].
//!
//! * [`AuthenticatorExt::or`]: `jwt.or(api_keys)` uses the second authenticator only when
//!   the first finds no credential of its kind. A bad JWT never falls through to the API
//!   key check, and a request carrying both kinds is rejected as ambiguous (400).
//! * [`AuthenticatorExt::optional`]: a request with no credential at all goes through with
//!   no [`Identity`] (handlers see `Option<Identity>` as `None`); a bad credential is still
//!   rejected.
//!
//! [`AuthLayer`] runs an authenticator in front of a service: on success it inserts the
//! [`Identity`] into the request's extensions and calls the inner service; on failure it
//! answers with the rendered rejection (see [`crate::error`]) and never calls the inner
//! service. Every success and every rejection emits a `tracing` event (target
//! `tower_api_guard::auth`) with the outcome and reason, never the credential.
//!
//! `BruteForceGuardLayer` (feature `rate-limit`), placed **before** authentication, answers
//! `429` to client addresses (and, optionally, credential ids) that keep failing it, before
//! any signature check; with feature `redis`, `RedisFailures` shares its counters and
//! lockouts between replicas.
//!
//! With axum, put the layer on `route_layer` so that unknown routes stay `404` instead of
//! turning into `401` (and the whole stack on one `route_layer`: see `GuardLayer`):
//!
//! ```text
//! let app = Router::new()
//!     .route("/items", get(list_items))
//!     .route_layer(AuthLayer::new(jwt));
//! ```
//!
//! # Example
//!
//! ```
//! use std::future::{ready, Ready};
//! use http::StatusCode;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_api_guard::auth::{AuthLayer, Authenticator, AuthenticatorExt};
//! use tower_api_guard::RequestHead;
//! use tower_api_guard::{AuthError, Identity, Source};
//!
//! /// Accepts the header `x-user: <name>` (a toy, for the example).
//! struct Header;
//! impl Authenticator for Header {
//!     type Credential = String;
//!     type Future = Ready<Result<Option<Identity>, AuthError>>;
//!     fn extract(&self, head: &RequestHead<'_>) -> Result<Option<String>, AuthError> {
//!         Ok(head.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned))
//!     }
//!     fn authenticate(&self, user: String) -> Self::Future {
//!         ready(Ok(Some(Identity::builder(user, Source::Custom { mechanism: "toy".into() }).build())))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(AuthLayer::new(Header.optional()))
//!     .service_fn(|req: http::Request<()>| async move {
//!         let who = req.extensions().get::<Identity>().map(|i| i.subject().to_owned());
//!         Ok::<_, std::convert::Infallible>(http::Response::new(who.unwrap_or_default()))
//!     });
//! let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK); // anonymous
//! # });
//! ```

#[cfg(feature = "rate-limit")]
mod brute_force;
pub mod future;
#[cfg(any(feature = "jwt", feature = "api-key"))]
mod ready;

use std::fmt;
use std::sync::Arc;

use http::Request;

#[cfg(all(feature = "rate-limit", feature = "redis"))]
pub use brute_force::RedisFailures;
#[cfg(feature = "rate-limit")]
pub use brute_force::{BruteForceGuard, BruteForceGuardLayer, CountFailures};
#[cfg(any(feature = "jwt", feature = "api-key"))]
pub(crate) use ready::{Outcome, ReadyOrBoxed};

use self::future::{OptionalAuthFuture, OrFuture};
use crate::error::AuthError;
use crate::gate::{Check, Gate, GateLayer, LayerKind, Step, Verdict};
use crate::head::RequestHead;
use crate::identity::Identity;

/// Applies an [`Authenticator`] to a service. See the [module docs](self).
pub type AuthLayer<A> = GateLayer<Authenticate<A>>;

/// The service made by [`AuthLayer`].
pub type Auth<A, S> = Gate<Authenticate<A>, S>;

/// The check of [`AuthLayer`]: run the authenticator, put the [`Identity`] on the request.
pub struct Authenticate<A> {
    authenticator: Arc<A>,
}

impl<A> Clone for Authenticate<A> {
    fn clone(&self) -> Self {
        Self {
            authenticator: self.authenticator.clone(),
        }
    }
}

impl<A> fmt::Debug for Authenticate<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate").finish_non_exhaustive()
    }
}

impl<A: Authenticator> AuthLayer<A> {
    /// Authenticate with `authenticator`; rejections render with the stack's renderer
    /// (see [`crate::render`]), by default [`DefaultRenderer`](crate::render::DefaultRenderer)
    /// with realm `api`.
    pub fn new(authenticator: A) -> Self {
        GateLayer::from_check(Authenticate {
            authenticator: Arc::new(authenticator),
        })
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &A {
        &self.check_ref().authenticator
    }
}

impl<A: Authenticator, S> Auth<A, S> {
    /// Wrap `inner`.
    pub fn new(inner: S, authenticator: A) -> Self {
        tower_layer::Layer::layer(&AuthLayer::new(authenticator), inner)
    }

    /// A layer; same as [`AuthLayer::new`].
    pub fn layer(authenticator: A) -> AuthLayer<A> {
        AuthLayer::new(authenticator)
    }
}

/// Let an authenticated (or anonymous) request in.
fn admit<B>(request: &mut Request<B>, identity: Option<Identity>) {
    if let Some(identity) = identity {
        tracing::debug!(
            target: "tower_api_guard::auth",
            subject = %identity.subject(),
            source = %identity.source(),
            "request authenticated"
        );
        request.extensions_mut().insert(identity);
    } else {
        tracing::debug!(
            target: "tower_api_guard::auth",
            "anonymous request let through"
        );
    }
}

/// A header the authenticator adds to the responses it let through (a `DPoP-Nonce`).
pub type ResponseHeader = (http::HeaderName, http::HeaderValue);

impl<A: Authenticator> Check for Authenticate<A> {
    type Ticket = Option<ResponseHeader>;
    type Wait = A::Future;
    const LAYER: LayerKind = LayerKind::Auth;

    fn check<B>(&self, request: &mut Request<B>) -> Step<Self::Ticket, A::Future> {
        let credential = match self.authenticator.extract(&RequestHead::of(request)) {
            Ok(Some(credential)) => credential,
            Ok(None) => return Step::Deny(self.authenticator.missing_credentials().into()),
            Err(error) => return Step::Deny(error.into()),
        };
        match self.authenticator.authenticate_now(credential) {
            // Known at once (a cache hit): the gate calls the inner service now.
            Ok(Ok(identity)) => {
                admit(request, identity);
                Step::Allow(self.authenticator.response_header())
            }
            Ok(Err(error)) => Step::Deny(error.into()),
            Err(credential) => Step::Wait(self.authenticator.authenticate(credential)),
        }
    }

    fn resume<B>(
        &self,
        outcome: Result<Option<Identity>, AuthError>,
        request: &mut Request<B>,
    ) -> Verdict<Self::Ticket> {
        match outcome {
            Ok(identity) => {
                admit(request, identity);
                Verdict::Allow(self.authenticator.response_header())
            }
            Err(error) => Verdict::Deny(error.into()),
        }
    }

    fn finish<R>(ticket: Self::Ticket, response: &mut http::Response<R>) {
        if let Some((name, value)) = ticket {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Turns a request's credential into an [`Identity`]. See the [module docs](self).
pub trait Authenticator: Send + Sync + 'static {
    /// The credential read from the request, owned.
    type Credential: Send + 'static;
    /// The check's future.
    type Future: Future<Output = Result<Option<Identity>, AuthError>> + Send + 'static;

    /// Read this authenticator's kind of credential from the request head.
    ///
    /// # Errors
    /// When a credential of this kind is present but malformed or ambiguous.
    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<Self::Credential>, AuthError>;

    /// Check the credential. `Ok(None)` lets the request through anonymously (only
    /// [`OptionalAuth`] does that).
    fn authenticate(&self, credential: Self::Credential) -> Self::Future;

    /// Check the credential without waiting, when that needs no waiting (a cache hit):
    /// `Ok` holds exactly what [`authenticate`](Self::authenticate)'s future would yield,
    /// `Err` hands the credential back for [`authenticate`](Self::authenticate). The
    /// default always hands it back.
    ///
    /// [`AuthLayer`] asks this first; on `Ok` it calls the inner service at once and keeps
    /// no state for later, which is the hot path of a cached credential.
    ///
    /// # Errors
    /// `Err(credential)` when the check would have to wait.
    fn authenticate_now(
        &self,
        credential: Self::Credential,
    ) -> Result<Result<Option<Identity>, AuthError>, Self::Credential> {
        Err(credential)
    }

    /// The rejection of a request that carries no credential at all. The default is
    /// [`AuthError::missing_credentials`]; an authenticator that accepts DPoP adds its
    /// challenge (the accepted proof algorithms).
    fn missing_credentials(&self) -> AuthError {
        AuthError::missing_credentials()
    }

    /// A header to add to every response of a request this authenticator let through; the
    /// default is none. A JWT authenticator with DPoP nonces sends the current nonce
    /// (`DPoP-Nonce`, RFC 9449 §8.2).
    fn response_header(&self) -> Option<ResponseHeader> {
        None
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    type Credential = A::Credential;
    type Future = A::Future;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<Self::Credential>, AuthError> {
        (**self).extract(head)
    }

    fn authenticate(&self, credential: Self::Credential) -> Self::Future {
        (**self).authenticate(credential)
    }

    fn authenticate_now(
        &self,
        credential: Self::Credential,
    ) -> Result<Result<Option<Identity>, AuthError>, Self::Credential> {
        (**self).authenticate_now(credential)
    }

    fn missing_credentials(&self) -> AuthError {
        (**self).missing_credentials()
    }

    fn response_header(&self) -> Option<ResponseHeader> {
        (**self).response_header()
    }
}

/// Combinators for every [`Authenticator`].
pub trait AuthenticatorExt: Authenticator + Sized {
    /// Try `self`, and `other` only when `self` finds no credential of its kind.
    fn or<B: Authenticator>(self, other: B) -> Or<Self, B> {
        Or {
            first: self,
            second: other,
            fallback: false,
        }
    }

    /// Try `self`, and `other` only when `self` finds no credential of its kind; unlike
    /// [`or`](Self::or), a request carrying both kinds is `self`'s. For a credential that
    /// rides along with others, such as a TLS client certificate: a certificate-bound token
    /// comes with its certificate, and the token decides.
    fn or_else<B: Authenticator>(self, other: B) -> Or<Self, B> {
        Or {
            first: self,
            second: other,
            fallback: true,
        }
    }

    /// Let requests without any credential through, with no [`Identity`].
    fn optional(self) -> OptionalAuth<Self> {
        OptionalAuth { inner: self }
    }
}

impl<A: Authenticator> AuthenticatorExt for A {}

/// Either of two credentials. Made by [`AuthenticatorExt::or`].
#[derive(Debug)]
pub enum OrCredential<A, B> {
    /// The first authenticator's credential.
    First(A),
    /// The second authenticator's credential.
    Second(B),
}

/// Two authenticators, the second used only when the first finds no credential.
/// Made by [`AuthenticatorExt::or`].
#[derive(Debug, Clone)]
pub struct Or<A, B> {
    first: A,
    second: B,
    /// Made by `or_else`: the second is asked only when the first has no credential.
    fallback: bool,
}

impl<A: Authenticator, B: Authenticator> Authenticator for Or<A, B> {
    type Credential = OrCredential<A::Credential, B::Credential>;
    type Future = OrFuture<A::Future, B::Future>;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<Self::Credential>, AuthError> {
        let first = self.first.extract(head)?;
        if self.fallback {
            return Ok(match first {
                Some(a) => Some(OrCredential::First(a)),
                None => self.second.extract(head)?.map(OrCredential::Second),
            });
        }
        let second = self.second.extract(head)?;
        match (first, second) {
            (Some(_), Some(_)) => Err(AuthError::invalid_request(
                "more than one kind of credential",
            )),
            (Some(a), None) => Ok(Some(OrCredential::First(a))),
            (None, Some(b)) => Ok(Some(OrCredential::Second(b))),
            (None, None) => Ok(None),
        }
    }

    fn authenticate(&self, credential: Self::Credential) -> Self::Future {
        match credential {
            OrCredential::First(a) => OrFuture::first(self.first.authenticate(a)),
            OrCredential::Second(b) => OrFuture::second(self.second.authenticate(b)),
        }
    }

    fn authenticate_now(
        &self,
        credential: Self::Credential,
    ) -> Result<Result<Option<Identity>, AuthError>, Self::Credential> {
        match credential {
            OrCredential::First(a) => self.first.authenticate_now(a).map_err(OrCredential::First),
            OrCredential::Second(b) => self
                .second
                .authenticate_now(b)
                .map_err(OrCredential::Second),
        }
    }

    /// The first authenticator's rejection, unless only the second names a DPoP challenge.
    fn missing_credentials(&self) -> AuthError {
        let first = self.first.missing_credentials();
        if first.dpop_challenge().is_some() {
            return first;
        }
        let second = self.second.missing_credentials();
        if second.dpop_challenge().is_some() {
            second
        } else {
            first
        }
    }

    fn response_header(&self) -> Option<ResponseHeader> {
        self.first
            .response_header()
            .or_else(|| self.second.response_header())
    }
}

/// An authenticator that lets requests without a credential through.
/// Made by [`AuthenticatorExt::optional`].
#[derive(Debug, Clone)]
pub struct OptionalAuth<A> {
    inner: A,
}

impl<A: Authenticator> Authenticator for OptionalAuth<A> {
    type Credential = Option<A::Credential>;
    type Future = OptionalAuthFuture<A::Future>;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<Self::Credential>, AuthError> {
        Ok(Some(self.inner.extract(head)?))
    }

    fn authenticate(&self, credential: Self::Credential) -> Self::Future {
        match credential {
            Some(c) => OptionalAuthFuture::present(self.inner.authenticate(c)),
            None => OptionalAuthFuture::anonymous(),
        }
    }

    fn authenticate_now(
        &self,
        credential: Self::Credential,
    ) -> Result<Result<Option<Identity>, AuthError>, Self::Credential> {
        match credential {
            Some(c) => self.inner.authenticate_now(c).map_err(Some),
            None => Ok(Ok(None)),
        }
    }

    fn response_header(&self) -> Option<ResponseHeader> {
        self.inner.response_header()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Response, StatusCode};
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::gate::support::HeaderAuth as Header;
    use crate::identity::Source;

    /// Calls `layer` with `x-user` (and `x-key`), returning the status and the subject the
    /// inner service saw, and how often the inner service ran.
    async fn call<A: Authenticator>(
        layer: &AuthLayer<A>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let svc = tower_layer::Layer::layer(
            layer,
            service_fn(move |req: Request<()>| {
                seen.fetch_add(1, Ordering::SeqCst);
                let who = req
                    .extensions()
                    .get::<Identity>()
                    .map(|i| i.subject().to_owned());
                ready(Ok::<_, Infallible>(Response::new(who.unwrap_or_default())))
            }),
        );
        let mut req = Request::get("/");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = svc.oneshot(req.body(()).unwrap()).await.unwrap();
        let status = res.status();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        let who = (status == StatusCode::OK && !body.is_empty())
            .then(|| String::from_utf8(body.to_vec()).unwrap());
        (status, who, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn an_identity_reaches_the_inner_service_whether_known_at_once_or_awaited() {
        for waits in [false, true] {
            let layer = AuthLayer::new(Header { waits });
            let (status, who, calls) = call(&layer, &[("x-user", "alice")]).await;
            assert_eq!(
                (status, who.as_deref(), calls),
                (StatusCode::OK, Some("alice"), 1)
            );
            let (status, _, calls) = call(&layer, &[("x-user", "bad")]).await;
            assert_eq!(
                (status, calls),
                (StatusCode::UNAUTHORIZED, 0),
                "waits: {waits}"
            );
            let (status, _, calls) = call(&layer, &[]).await;
            assert_eq!((status, calls), (StatusCode::UNAUTHORIZED, 0));
        }
    }

    /// `x-key: <name>`, a second kind of credential.
    struct Key;

    impl Authenticator for Key {
        type Credential = String;
        type Future = Ready<Result<Option<Identity>, AuthError>>;

        fn extract(&self, head: &RequestHead<'_>) -> Result<Option<String>, AuthError> {
            Ok(head
                .headers
                .get("x-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned))
        }

        fn authenticate(&self, key: String) -> Self::Future {
            let source = Source::Custom {
                mechanism: "key".into(),
            };
            ready(Ok(Some(Identity::builder(key, source).build())))
        }
    }

    #[tokio::test]
    async fn or_uses_the_second_only_without_a_first_and_refuses_both() {
        let layer = AuthLayer::new(Header { waits: false }.or(Key));
        let (_, who, _) = call(&layer, &[("x-key", "svc")]).await;
        assert_eq!(who.as_deref(), Some("svc"));
        // A bad first credential never falls through to the second.
        let (status, _, _) = call(&layer, &[("x-user", "bad"), ("x-key", "svc")]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, calls) = call(&layer, &[("x-user", "bad")]).await;
        assert_eq!((status, calls), (StatusCode::UNAUTHORIZED, 0));
    }

    #[tokio::test]
    async fn or_else_gives_a_request_with_both_to_the_first() {
        let layer = AuthLayer::new(Header { waits: false }.or_else(Key));
        let (_, who, _) = call(&layer, &[("x-user", "alice"), ("x-key", "svc")]).await;
        assert_eq!(who.as_deref(), Some("alice"));
        let (_, who, _) = call(&layer, &[("x-key", "svc")]).await;
        assert_eq!(who.as_deref(), Some("svc"));
        // A bad first credential still never falls through.
        let (status, _, _) = call(&layer, &[("x-user", "bad"), ("x-key", "svc")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn optional_lets_a_request_without_credentials_through_but_not_a_bad_one() {
        let layer = AuthLayer::new(Header { waits: true }.optional());
        let (status, who, calls) = call(&layer, &[]).await;
        assert_eq!((status, who, calls), (StatusCode::OK, None, 1));
        let (status, _, calls) = call(&layer, &[("x-user", "bad")]).await;
        assert_eq!((status, calls), (StatusCode::UNAUTHORIZED, 0));
    }
}
