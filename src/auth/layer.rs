use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::{Auth, Authenticator};
use crate::error::{DefaultRenderer, RenderRejection};

/// Applies an [`Authenticator`] to a service. See the [module docs](super).
#[must_use]
pub struct AuthLayer<A> {
    pub(crate) authenticator: Arc<A>,
    /// `None`: the default renderer (see [`DefaultRenderer`]).
    pub(crate) renderer: Option<Arc<dyn RenderRejection>>,
}

impl<A> Clone for AuthLayer<A> {
    fn clone(&self) -> Self {
        Self {
            authenticator: self.authenticator.clone(),
            renderer: self.renderer.clone(),
        }
    }
}

impl<A> fmt::Debug for AuthLayer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl<A: Authenticator> AuthLayer<A> {
    /// Authenticate with `authenticator`; rejections render with [`DefaultRenderer`]
    /// (realm `api`).
    pub fn new(authenticator: A) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
            renderer: None,
        }
    }

    /// Render rejections with `renderer` (a [`RenderRejection`] or a closure
    /// `Fn(&AuthError, &RequestHead) -> Response<Bytes>`).
    pub fn with_renderer(mut self, renderer: impl RenderRejection) -> Self {
        self.renderer = Some(Arc::new(renderer));
        self
    }

    /// Name the realm in `WWW-Authenticate` challenges (replaces the renderer with a
    /// [`DefaultRenderer`] for that realm).
    pub fn realm(self, realm: &str) -> Self {
        self.with_renderer(DefaultRenderer::new(realm))
    }
}

impl<A, S> Layer<S> for AuthLayer<A> {
    type Service = Auth<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
            renderer: self.renderer.clone(),
        }
    }
}
