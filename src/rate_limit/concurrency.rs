//! [`ConcurrencyLimitLayer`]: at most N requests in flight per identity.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::error::{AuthError, DefaultRenderer, RenderRejection, RequestHead};
use crate::identity::Identity;

struct Shared {
    max: usize,
    in_flight: Mutex<HashMap<String, usize>>,
    renderer: Arc<dyn RenderRejection>,
}

/// At most `max` requests of one identity in flight; past it, `429` (gRPC
/// `RESOURCE_EXHAUSTED`) at once. A slot is held until the inner service's response
/// future completes (or is dropped); streaming bodies are not counted. Requests without an
/// identity pass.
#[derive(Clone)]
#[must_use]
pub struct ConcurrencyLimitLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("max", &self.shared.max)
            .finish_non_exhaustive()
    }
}

impl ConcurrencyLimitLayer {
    /// At most `max` (at least 1) requests in flight per identity.
    pub fn per_identity(max: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                max: max.max(1),
                in_flight: Mutex::new(HashMap::new()),
                renderer: Arc::new(DefaultRenderer::default()),
            }),
        }
    }

    /// Render rejections with `renderer`.
    pub fn with_renderer(self, renderer: impl RenderRejection) -> Self {
        Self {
            shared: Arc::new(Shared {
                max: self.shared.max,
                in_flight: Mutex::new(HashMap::new()),
                renderer: Arc::new(renderer),
            }),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`ConcurrencyLimitLayer`].
#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A held slot; released on drop.
struct Slot {
    key: String,
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConcurrencyLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ConcurrencyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(identity) = request.extensions().get::<Identity>() else {
            return ConcurrencyFuture {
                state: State::Calling {
                    future: self.inner.call(request),
                },
                slot: None,
            };
        };
        let key = identity.caller_key().to_owned();
        let admitted = {
            let mut map = self
                .shared
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let n = map.entry(key.clone()).or_insert(0);
            if *n < self.shared.max {
                *n += 1;
                true
            } else {
                false
            }
        };
        if !admitted {
            tracing::info!(
                target: "tower_api_guard::rate_limit",
                subject = %identity.subject(),
                max = self.shared.max,
                "too many requests in flight"
            );
            let error = AuthError::rate_limited(Duration::from_secs(1));
            let mut response = self
                .shared
                .renderer
                .render(&error, &RequestHead::of(&request));
            response.extensions_mut().insert(error);
            return ConcurrencyFuture {
                state: State::Rejected {
                    response: Some(response),
                },
                slot: None,
            };
        }
        let slot = Slot {
            key,
            shared: self.shared.clone(),
        };
        ConcurrencyFuture {
            state: State::Calling {
                future: self.inner.call(request),
            },
            slot: Some(slot),
        }
    }
}

pin_project! {
    /// The response future of [`ConcurrencyLimit`].
    pub struct ConcurrencyFuture<F> {
        #[pin]
        state: State<F>,
        slot: Option<Slot>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<F, ResBody, E> Future for ConcurrencyFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Calling { future } => {
                let response = ready!(future.poll(cx));
                drop(this.slot.take());
                Poll::Ready(response.map(|r| r.map(ResponseBody::new)))
            }
            StateProj::Rejected { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(ResponseBody::full)))
            }
        }
    }
}
