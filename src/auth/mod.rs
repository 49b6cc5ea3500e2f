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
//! With axum, put the layer on `route_layer` so that unknown routes stay `404` instead of
//! turning into `401`:
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
//! use tower_api_guard::error::RequestHead;
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

mod future;
mod layer;
mod service;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

pub use future::ResponseFuture;
pub use layer::AuthLayer;
pub use service::Auth;

use crate::error::{AuthError, RequestHead};
use crate::identity::Identity;

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
    /// [`Optional`] does that).
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
}

/// Combinators for every [`Authenticator`].
pub trait AuthenticatorExt: Authenticator + Sized {
    /// Try `self`, and `other` only when `self` finds no credential of its kind.
    fn or<B: Authenticator>(self, other: B) -> Or<Self, B> {
        Or {
            first: self,
            second: other,
        }
    }

    /// Let requests without any credential through, with no [`Identity`].
    fn optional(self) -> Optional<Self> {
        Optional { inner: self }
    }
}

impl<A: Authenticator> AuthenticatorExt for A {}

/// Either of two credentials. Made by [`AuthenticatorExt::or`].
#[derive(Debug)]
pub enum Either<A, B> {
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
}

impl<A: Authenticator, B: Authenticator> Authenticator for Or<A, B> {
    type Credential = Either<A::Credential, B::Credential>;
    type Future = OrFuture<A::Future, B::Future>;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<Self::Credential>, AuthError> {
        let first = self.first.extract(head)?;
        let second = self.second.extract(head)?;
        match (first, second) {
            (Some(_), Some(_)) => Err(AuthError::invalid_request(
                "more than one kind of credential",
            )),
            (Some(a), None) => Ok(Some(Either::First(a))),
            (None, Some(b)) => Ok(Some(Either::Second(b))),
            (None, None) => Ok(None),
        }
    }

    fn authenticate(&self, credential: Self::Credential) -> Self::Future {
        match credential {
            Either::First(a) => OrFuture {
                inner: OrInner::First {
                    fut: self.first.authenticate(a),
                },
            },
            Either::Second(b) => OrFuture {
                inner: OrInner::Second {
                    fut: self.second.authenticate(b),
                },
            },
        }
    }

    fn authenticate_now(
        &self,
        credential: Self::Credential,
    ) -> Result<Result<Option<Identity>, AuthError>, Self::Credential> {
        match credential {
            Either::First(a) => self.first.authenticate_now(a).map_err(Either::First),
            Either::Second(b) => self.second.authenticate_now(b).map_err(Either::Second),
        }
    }
}

pin_project! {
    /// The future of [`Or`].
    pub struct OrFuture<A, B> {
        #[pin]
        inner: OrInner<A, B>,
    }
}

pin_project! {
    #[project = OrProj]
    enum OrInner<A, B> {
        First { #[pin] fut: A },
        Second { #[pin] fut: B },
    }
}

impl<A, B> Future for OrFuture<A, B>
where
    A: Future<Output = Result<Option<Identity>, AuthError>>,
    B: Future<Output = Result<Option<Identity>, AuthError>>,
{
    type Output = Result<Option<Identity>, AuthError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            OrProj::First { fut } => fut.poll(cx),
            OrProj::Second { fut } => fut.poll(cx),
        }
    }
}

/// An authenticator that lets requests without a credential through.
/// Made by [`AuthenticatorExt::optional`].
#[derive(Debug, Clone)]
pub struct Optional<A> {
    inner: A,
}

impl<A: Authenticator> Authenticator for Optional<A> {
    type Credential = Option<A::Credential>;
    type Future = OptionalFuture<A::Future>;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<Self::Credential>, AuthError> {
        Ok(Some(self.inner.extract(head)?))
    }

    fn authenticate(&self, credential: Self::Credential) -> Self::Future {
        match credential {
            Some(c) => OptionalFuture {
                inner: OptionalInner::Present {
                    fut: self.inner.authenticate(c),
                },
            },
            None => OptionalFuture {
                inner: OptionalInner::Anonymous,
            },
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
}

pin_project! {
    /// The future of [`Optional`].
    pub struct OptionalFuture<F> {
        #[pin]
        inner: OptionalInner<F>,
    }
}

pin_project! {
    #[project = OptionalProj]
    enum OptionalInner<F> {
        Present { #[pin] fut: F },
        Anonymous,
    }
}

impl<F> Future for OptionalFuture<F>
where
    F: Future<Output = Result<Option<Identity>, AuthError>>,
{
    type Output = Result<Option<Identity>, AuthError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            OptionalProj::Present { fut } => fut.poll(cx),
            OptionalProj::Anonymous => Poll::Ready(Ok(None)),
        }
    }
}

/// What an authenticator's check yields.
#[cfg(any(feature = "jwt", feature = "api-key"))]
pub(crate) type Outcome = Result<Option<Identity>, AuthError>;

/// The state of an authenticator future that is usually ready at once (a cache hit) and
/// otherwise boxed (a key refresh, a store lookup). Shared by `JwtFuture` and `ApiKeyFuture`.
#[cfg(any(feature = "jwt", feature = "api-key"))]
pub(crate) enum ReadyOrBoxed {
    Ready(Option<Outcome>),
    Boxed(Pin<Box<dyn Future<Output = Outcome> + Send>>),
}

#[cfg(any(feature = "jwt", feature = "api-key"))]
impl ReadyOrBoxed {
    pub(crate) fn boxed(future: impl Future<Output = Outcome> + Send + 'static) -> Self {
        Self::Boxed(Box::pin(future))
    }
}

#[cfg(any(feature = "jwt", feature = "api-key"))]
impl Future for ReadyOrBoxed {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut *self {
            Self::Ready(outcome) => {
                Poll::Ready(outcome.take().expect("future polled after completion"))
            }
            Self::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}
