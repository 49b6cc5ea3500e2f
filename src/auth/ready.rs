//! A future that is usually ready at once (a cache hit) and otherwise boxed (a key refresh,
//! a store lookup): the helper any authenticator may use for its `Future`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::AuthError;
use crate::identity::Identity;

/// What an authenticator's check yields.
pub(crate) type Outcome = Result<Option<Identity>, AuthError>;

/// The state of an authenticator future that is usually ready at once (a cache hit) and
/// otherwise boxed (a key refresh, a store lookup). Shared by `JwtFuture` and `ApiKeyFuture`.
pub(crate) enum ReadyOrBoxed {
    Ready(Option<Outcome>),
    Boxed(Pin<Box<dyn Future<Output = Outcome> + Send>>),
}

impl ReadyOrBoxed {
    pub(crate) fn boxed(future: impl Future<Output = Outcome> + Send + 'static) -> Self {
        Self::Boxed(Box::pin(future))
    }
}

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
