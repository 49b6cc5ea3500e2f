//! [`AuthFailureLayer`]: answers 429 to clients that keep failing authentication, before
//! any signature check.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{ClientAddr, MemoryStore, Quota};
use crate::body::ResponseBody;
use crate::clock::{Clock, MonotonicClock};
use crate::error::{AuthError, AuthErrorKind, DefaultRenderer, RenderRejection, RequestHead};

struct Shared {
    quota: [Quota; 1],
    store: MemoryStore,
    client: ClientAddr,
    clock: Arc<dyn Clock>,
    renderer: Arc<dyn RenderRejection>,
}

/// A brute-force guard, placed **before** authentication: it counts failed
/// authentications per client address (it reads the [`AuthError`] on the rejection
/// response: `invalid_token` and `invalid_request`, for JWTs and API keys alike) and, once a
/// client is over its failure quota (e.g. `20/min`), answers `429` with `Retry-After` at
/// once, so nobody can burn the server's CPU on signature checks.
///
/// ```
/// use tower_api_guard::rate_limit::{AuthFailureLayer, ClientAddr, Quota};
///
/// let guard = AuthFailureLayer::new(Quota::parse("20/min").unwrap())
///     .client_addr(ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap());
/// // ServiceBuilder::new().layer(guard).layer(AuthLayer::new(jwt))...
/// # let _ = guard;
/// ```
#[derive(Clone)]
#[must_use]
pub struct AuthFailureLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for AuthFailureLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFailureLayer")
            .field("quota", &self.shared.quota[0])
            .finish_non_exhaustive()
    }
}

impl AuthFailureLayer {
    /// At most `failures` failed authentications per client address.
    pub fn new(failures: Quota) -> Self {
        Self {
            shared: Arc::new(Shared {
                quota: [failures],
                store: MemoryStore::new(100_000),
                client: ClientAddr::new(),
                clock: Arc::new(MonotonicClock::new()),
                renderer: Arc::new(DefaultRenderer::default()),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|arc| Shared {
            quota: arc.quota,
            store: arc.store.clone(),
            client: arc.client.clone(),
            clock: arc.clock.clone(),
            renderer: arc.renderer.clone(),
        });
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// How client addresses are found (trusted proxies, IPv6 grouping).
    pub fn client_addr(self, client: ClientAddr) -> Self {
        self.with(|s| s.client = client)
    }

    /// The store (default: in process, at most 100,000 addresses).
    pub fn store(self, store: MemoryStore) -> Self {
        self.with(|s| s.store = store)
    }

    /// The clock: [`MonotonicClock`] by default; a `ManualClock` in tests.
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        self.with(|s| s.clock = clock)
    }

    /// Render rejections with `renderer`.
    pub fn with_renderer(self, renderer: impl RenderRejection) -> Self {
        let renderer: Arc<dyn RenderRejection> = Arc::new(renderer);
        self.with(|s| s.renderer = renderer)
    }
}

impl<S> Layer<S> for AuthFailureLayer {
    type Service = AuthFailureGuard<S>;

    fn layer(&self, inner: S) -> AuthFailureGuard<S> {
        AuthFailureGuard {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`AuthFailureLayer`].
#[derive(Clone)]
pub struct AuthFailureGuard<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for AuthFailureGuard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFailureGuard")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthFailureGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let key = shared.client.peer(request.extensions()).map(|peer| {
            shared
                .client
                .key(shared.client.resolve(peer, request.headers()))
        });
        if let Some(key) = &key {
            let decision = shared.store.peek(key, &shared.quota, 1, shared.clock.now());
            if let Some(retry) = decision.retry_after() {
                tracing::info!(
                    target: "tower_api_guard::rate_limit",
                    client = %key,
                    "too many failed authentications; rejected before authentication"
                );
                let error = AuthError::rate_limited(retry);
                let mut response = shared.renderer.render(&error, &RequestHead::of(&request));
                response.extensions_mut().insert(error);
                return GuardFuture {
                    state: State::Rejected {
                        response: Some(response),
                    },
                    record: None,
                };
            }
        }
        GuardFuture {
            state: State::Calling {
                future: self.inner.call(request),
            },
            record: key.map(|key| (key, self.shared.clone())),
        }
    }
}

pin_project! {
    /// The response future of [`AuthFailureGuard`].
    pub struct GuardFuture<F> {
        #[pin]
        state: State<F>,
        record: Option<(String, Arc<Shared>)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<F, ResBody, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Calling { future } => {
                let response = ready!(future.poll(cx))?;
                let failed = response.extensions().get::<AuthError>().is_some_and(|e| {
                    matches!(
                        e.kind(),
                        AuthErrorKind::InvalidToken | AuthErrorKind::InvalidRequest
                    )
                });
                if failed && let Some((key, shared)) = this.record.take() {
                    shared
                        .store
                        .check(&key, &shared.quota, 1, shared.clock.now());
                }
                Poll::Ready(Ok(response.map(ResponseBody::new)))
            }
            StateProj::Rejected { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(ResponseBody::full)))
            }
        }
    }
}
