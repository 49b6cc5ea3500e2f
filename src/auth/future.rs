//! The futures of [`auth`](super): the layer's [`ResponseFuture`] and the combinators'.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::Authenticate;
use crate::error::AuthError;
use crate::identity::Identity;

/// The response future of [`Auth`](super::Auth).
pub type ResponseFuture<A, S, ReqBody> = crate::gate::ResponseFuture<Authenticate<A>, S, ReqBody>;

pin_project! {
    /// The future of [`Or`](super::Or).
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

pin_project! {
    /// The future of [`OptionalAuth`](super::OptionalAuth).
    pub struct OptionalAuthFuture<F> {
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

impl<F> Future for OptionalAuthFuture<F>
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

impl<A, B> OrFuture<A, B> {
    pub(super) fn first(fut: A) -> Self {
        Self {
            inner: OrInner::First { fut },
        }
    }

    pub(super) fn second(fut: B) -> Self {
        Self {
            inner: OrInner::Second { fut },
        }
    }
}

impl<F> OptionalAuthFuture<F> {
    pub(super) fn present(fut: F) -> Self {
        Self {
            inner: OptionalInner::Present { fut },
        }
    }

    pub(super) fn anonymous() -> Self {
        Self {
            inner: OptionalInner::Anonymous,
        }
    }
}
