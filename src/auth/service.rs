use std::fmt;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use super::{AuthLayer, Authenticator, ResponseFuture};
use crate::body::ResponseBody;
use crate::error::{AuthError, DefaultRenderer, LayerRenderer, RenderRejection, RequestHead};
use crate::identity::Identity;

/// The service made by [`AuthLayer`].
pub struct Auth<A, S> {
    pub(crate) inner: S,
    pub(crate) authenticator: Arc<A>,
    /// `None`: the default renderer, which needs no request extension.
    pub(crate) renderer: Option<Arc<dyn RenderRejection>>,
}

impl<A, S: Clone> Clone for Auth<A, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            authenticator: self.authenticator.clone(),
            renderer: self.renderer.clone(),
        }
    }
}

impl<A, S: fmt::Debug> fmt::Debug for Auth<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<A: Authenticator, S> Auth<A, S> {
    /// Wrap `inner`.
    pub fn new(inner: S, authenticator: A) -> Self {
        AuthLayer::new(authenticator).layer_into(inner)
    }

    /// A layer; same as [`AuthLayer::new`].
    pub fn layer(authenticator: A) -> AuthLayer<A> {
        AuthLayer::new(authenticator)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<A> AuthLayer<A> {
    fn layer_into<S>(&self, inner: S) -> Auth<A, S> {
        tower_layer::Layer::layer(self, inner)
    }
}

impl<A, S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<A, S>
where
    A: Authenticator,
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<A::Future, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let extracted = self.authenticator.extract(&RequestHead::of(&request));
        let credential = match extracted {
            Ok(Some(credential)) => credential,
            Ok(None) => {
                return ResponseFuture::rejected(reject(
                    renderer_or_default(&self.renderer),
                    AuthError::missing_credentials(),
                    &request,
                ));
            }
            Err(error) => {
                return ResponseFuture::rejected(reject(
                    renderer_or_default(&self.renderer),
                    error,
                    &request,
                ));
            }
        };
        let credential = match self.authenticator.authenticate_now(credential) {
            // Known at once (a cache hit): call the ready inner service now, keep nothing.
            Ok(Ok(identity)) => {
                let mut request = request;
                admit(&mut request, identity, self.renderer.clone());
                return ResponseFuture::calling(self.inner.call(request));
            }
            Ok(Err(error)) => {
                return ResponseFuture::rejected(reject(
                    renderer_or_default(&self.renderer),
                    error,
                    &request,
                ));
            }
            Err(credential) => credential,
        };
        let future = self.authenticator.authenticate(credential);
        // The ready inner service goes into the future; a fresh clone stays behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::authenticating(future, inner, request, self.renderer.clone())
    }
}

/// A layer's renderer: its own, or the default one.
pub(crate) fn renderer_or_default(
    renderer: &Option<Arc<dyn RenderRejection>>,
) -> &dyn RenderRejection {
    static DEFAULT: LazyLock<DefaultRenderer> = LazyLock::new(DefaultRenderer::default);
    match renderer {
        Some(renderer) => &**renderer,
        None => &*DEFAULT,
    }
}

/// Let an authenticated (or anonymous) request in: the identity into its extensions, and
/// the layer's renderer when it is not the default one (axum's extractors render with it).
pub(crate) fn admit<B>(
    request: &mut Request<B>,
    identity: Option<Identity>,
    renderer: Option<Arc<dyn RenderRejection>>,
) {
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
    if let Some(renderer) = renderer {
        request.extensions_mut().insert(LayerRenderer(renderer));
    }
}

/// Render a rejection, attach the error, and log it.
pub(crate) fn reject<B>(
    renderer: &dyn RenderRejection,
    error: AuthError,
    request: &Request<B>,
) -> Response<Bytes> {
    log_rejection(&error);
    let mut response = renderer.render(&error, &RequestHead::of(request));
    response.extensions_mut().insert(error);
    response
}

fn log_rejection(error: &AuthError) {
    use crate::error::AuthErrorKind;
    match error.kind() {
        AuthErrorKind::Unavailable => tracing::warn!(
            target: "tower_api_guard::auth",
            kind = ?error.kind(),
            reason = %error.reason(),
            "request rejected"
        ),
        _ => tracing::info!(
            target: "tower_api_guard::auth",
            kind = ?error.kind(),
            reason = %error.reason(),
            "request rejected"
        ),
    }
}
