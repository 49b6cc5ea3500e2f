//! Rate limiting per identity: [`RateLimitLayer`], GCRA, quotas per plan, standard headers.
//!
//! Each verified identity (source + subject) gets its plan's quotas, or the default ones.
//! Several quotas (e.g. `20/s` and `10000/day`) are checked together: a request rejected by
//! one consumes nothing from the others. The decision is made in `call`, never in
//! `poll_ready`. Allowed responses carry the IETF draft fields `RateLimit-Policy` and
//! `RateLimit`; a rejection is `429` with `Retry-After` (gRPC `RESOURCE_EXHAUSTED`).
//!
//! The in-process store is sharded and bounded: past its maximum number of keys, idle keys
//! (whose state equals a fresh key's) are evicted first, then the keys closest to idle, so
//! a flood of distinct keys cannot exhaust memory.
//!
//! [`AuthFailureLayer`], placed before authentication, answers `429` to client addresses that
//! keep failing authentication, before any signature check. [`ClientAddr`] finds the client
//! address (trusted proxies only, IPv6 grouped by /56).
//!
//! With the `redis` feature, `RedisStore` shares the limits between replicas (a Lua script
//! on Redis server time; a process's concurrent decisions share one script call; within a
//! time budget, failing open or closed; optionally leasing a few requests per key at once,
//! never allowing more than the limit).
//!
//! Requests without an identity pass [`RateLimitLayer`] unless
//! [`anonymous`](RateLimitLayer::anonymous) gives them per-address quotas. Legacy
//! `X-RateLimit-*` fields are available with [`legacy_headers`](RateLimitLayer::legacy_headers).
//! [`ConcurrencyLimitLayer`] caps the requests in flight per identity.
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_api_guard::auth::AuthLayer;
//! use tower_api_guard::jwt::JwtAuthenticator;
//! use tower_api_guard::rate_limit::{Quota, RateLimitLayer};
//! use tower_api_guard::testing::TestIssuer;
//!
//! let issuer = TestIssuer::new("https://issuer.example");
//! let jwt = JwtAuthenticator::builder("https://issuer.example", "api")
//!     .keys(issuer.static_keys())
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(AuthLayer::new(jwt))
//!     .layer(RateLimitLayer::new([Quota::parse("2/min").unwrap()]))
//!     .service_fn(|_req: Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
//!     });
//! let token = issuer.token().audience("api").mint();
//! let call = || {
//!     let req = Request::get("/").header("authorization", format!("Bearer {token}")).body(()).unwrap();
//!     svc.clone().oneshot(req)
//! };
//! assert_eq!(call().await.unwrap().status(), StatusCode::OK);
//! assert_eq!(call().await.unwrap().status(), StatusCode::OK);
//! assert_eq!(call().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
//! # });
//! ```

mod client;
mod concurrency;
mod gcra;
mod guard;
#[cfg(feature = "redis")]
mod redis_store;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use client::ClientAddr;
pub use concurrency::{ConcurrencyFuture, ConcurrencyLimit, ConcurrencyLimitLayer};
pub use gcra::{Decision, MemoryStore, Quota};
pub use guard::{AuthFailureGuard, AuthFailureLayer, GuardFuture};
#[cfg(feature = "redis")]
pub use redis_store::{RedisFailure, RedisStore};

use crate::body::ResponseBody;
use crate::clock::{Clock, MonotonicClock};
use crate::error::{AuthError, DefaultRenderer, RenderRejection, RequestHead};
use crate::identity::Identity;

/// Where limits are kept.
#[derive(Clone, Debug)]
enum Store {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(RedisStore),
}

/// Quotas checked together, with their `RateLimit-Policy` field made once.
#[derive(Debug, Clone)]
struct Plan {
    quotas: Vec<Quota>,
    policy: HeaderValue,
}

impl Plan {
    fn new(quotas: impl IntoIterator<Item = Quota>) -> Self {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        let policy: Vec<String> = quotas
            .iter()
            .enumerate()
            .map(|(i, q)| format!("\"q{i}\";q={};w={}", q.limit(), q.window().as_secs().max(1)))
            .collect();
        let policy =
            HeaderValue::from_str(&policy.join(", ")).unwrap_or(HeaderValue::from_static(""));
        Self { quotas, policy }
    }
}

struct Shared {
    default: Plan,
    plans: HashMap<String, Plan>,
    anonymous: Option<(Plan, ClientAddr)>,
    legacy: bool,
    store: Store,
    clock: Arc<dyn Clock>,
    renderer: Arc<dyn RenderRejection>,
}

/// Limits each identity. See the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("default", &self.shared.default.quotas)
            .field("plans", &self.shared.plans.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// Every identity gets `quotas` (checked together) unless its plan says otherwise.
    pub fn new(quotas: impl IntoIterator<Item = Quota>) -> Self {
        Self {
            shared: Arc::new(Shared {
                default: Plan::new(quotas),
                plans: HashMap::new(),
                anonymous: None,
                legacy: false,
                store: Store::Memory(MemoryStore::new(100_000)),
                clock: Arc::new(MonotonicClock::new()),
                renderer: Arc::new(DefaultRenderer::default()),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|arc| Shared {
            default: arc.default.clone(),
            plans: arc.plans.clone(),
            anonymous: arc.anonymous.clone(),
            legacy: arc.legacy,
            store: arc.store.clone(),
            clock: arc.clock.clone(),
            renderer: arc.renderer.clone(),
        });
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Identities whose plan is `plan` (from an API-key record or a JWT claim) get `quotas`.
    pub fn plan(self, plan: &str, quotas: impl IntoIterator<Item = Quota>) -> Self {
        let quotas = Plan::new(quotas);
        let plan = plan.to_owned();
        self.with(|s| {
            s.plans.insert(plan, quotas);
        })
    }

    /// The store (default: in process, at most 100,000 keys).
    pub fn store(self, store: MemoryStore) -> Self {
        self.with(|s| s.store = Store::Memory(store))
    }

    /// Limit requests without an identity too, per client address (found by `client`:
    /// trusted proxies only, IPv6 grouped by /56). Without this they pass this layer.
    pub fn anonymous(self, quotas: impl IntoIterator<Item = Quota>, client: ClientAddr) -> Self {
        let quotas = Plan::new(quotas);
        self.with(|s| s.anonymous = Some((quotas, client)))
    }

    /// Also send the legacy `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
    /// `X-RateLimit-Reset` (seconds) fields, for the tightest quota.
    pub fn legacy_headers(self, enabled: bool) -> Self {
        self.with(|s| s.legacy = enabled)
    }

    /// Keep the limits in Redis, shared by every replica (feature `redis`).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(self, store: RedisStore) -> Self {
        self.with(|s| s.store = Store::Redis(store))
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

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Response header fields to add.
type Fields = Vec<(HeaderName, HeaderValue)>;

// Built at compile time: `HeaderName::from_static` validates its text on every call.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10), plus the
/// legacy `X-RateLimit-Limit/Remaining/Reset` of the tightest quota when asked for.
fn headers(plan: &Plan, decision: &Decision, legacy: bool) -> Fields {
    let (i, remaining, reset) = decision.tightest();
    let reset = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
    // `"q{i}";r={remaining};t={reset}`, with itoa: `write!` costs more than the decision.
    let mut numbers = itoa::Buffer::new();
    let mut limit = String::with_capacity(64);
    limit.push_str("\"q");
    limit.push_str(numbers.format(i));
    limit.push_str("\";r=");
    limit.push_str(numbers.format(remaining));
    limit.push_str(";t=");
    limit.push_str(numbers.format(reset));
    let mut fields = Vec::with_capacity(if legacy { 5 } else { 2 });
    fields.push((RATELIMIT_POLICY, plan.policy.clone()));
    fields.push((
        RATELIMIT,
        HeaderValue::try_from(limit).unwrap_or(HeaderValue::from_static("")),
    ));
    if legacy {
        let limit = plan.quotas.get(i).map_or(0, Quota::limit);
        fields.push((X_RATELIMIT_LIMIT, HeaderValue::from(limit)));
        fields.push((X_RATELIMIT_REMAINING, HeaderValue::from(remaining)));
        fields.push((X_RATELIMIT_RESET, HeaderValue::from(reset)));
    }
    fields
}

/// Turn a decision into the next step: call the inner service (with the headers to add) or
/// reject. (The rejection is built once per rejected request; its size does not matter.)
#[allow(clippy::result_large_err)]
fn apply<B>(
    shared: &Shared,
    plan: &Plan,
    decision: &Decision,
    request: &Request<B>,
) -> Result<Fields, Response<Bytes>> {
    let fields = headers(plan, decision, shared.legacy);
    match decision.retry_after() {
        None => Ok(fields),
        Some(retry) => {
            let subject = request
                .extensions()
                .get::<Identity>()
                .map_or("(anonymous)", |i| i.subject());
            tracing::info!(
                target: "tower_api_guard::rate_limit",
                subject,
                retry_after_ms = retry.as_millis() as u64,
                "request rate limited"
            );
            let error = AuthError::rate_limited(retry.max(Duration::from_millis(1)));
            let mut response = shared.renderer.render(&error, &RequestHead::of(request));
            for (name, value) in fields {
                response.headers_mut().insert(name, value);
            }
            response.extensions_mut().insert(error);
            Err(response)
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let (key, quotas) = match request.extensions().get::<Identity>() {
            Some(identity) => (
                std::borrow::Cow::Borrowed(identity.caller_key()),
                identity
                    .plan()
                    .and_then(|p| shared.plans.get(p))
                    .unwrap_or(&shared.default),
            ),
            None => {
                let anonymous = shared.anonymous.as_ref().and_then(|(quotas, client)| {
                    let peer = client.peer(request.extensions())?;
                    Some((
                        std::borrow::Cow::Owned(
                            client.key(client.resolve(peer, request.headers())),
                        ),
                        quotas,
                    ))
                });
                match anonymous {
                    Some(found) => found,
                    None => return ResponseFuture::calling(self.inner.call(request), None),
                }
            }
        };
        if quotas.quotas.is_empty() {
            return ResponseFuture::calling(self.inner.call(request), None);
        }
        match &shared.store {
            Store::Memory(store) => {
                let decision = store.check(&key, &quotas.quotas, 1, shared.clock.now());
                match apply(shared, quotas, &decision, &request) {
                    Ok(fields) => ResponseFuture::calling(self.inner.call(request), Some(fields)),
                    Err(response) => ResponseFuture::rejected(response),
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis(store) => {
                let store = store.clone();
                let owned: Plan = quotas.clone();
                let key = key.into_owned();
                let decide: DecideFuture = Box::pin(async move {
                    let decision = store.check(&key, &owned.quotas, 1).await;
                    (decision, store.failure_policy(), owned)
                });
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Deciding { decide },
                    fields: None,
                    pending: Some(Box::new((inner, request, self.shared.clone()))),
                }
            }
        }
    }
}

#[cfg(feature = "redis")]
type DecideFuture =
    Pin<Box<dyn Future<Output = (Result<Decision, &'static str>, RedisFailure, Plan)> + Send>>;
#[cfg(not(feature = "redis"))]
type DecideFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pin_project! {
    /// The response future of [`RateLimit`].
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S::Future>,
        fields: Option<Fields>,
        // Boxed: only a Redis decision needs it (see the auth layer's future).
        pending: Option<Box<(S, Request<ReqBody>, Arc<Shared>)>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Deciding { decide: DecideFuture },
        Calling { #[pin] future: F },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn calling(future: S::Future, fields: Option<Fields>) -> Self {
        Self {
            state: State::Calling { future },
            fields,
            pending: None,
        }
    }

    fn rejected(response: Response<Bytes>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
            fields: None,
            pending: None,
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    // Without redis there is no asynchronous decision, so the loop never goes round.
    #[cfg_attr(not(feature = "redis"), allow(clippy::never_loop))]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                #[cfg(feature = "redis")]
                StateProj::Deciding { decide } => {
                    let (decision, policy, quotas) = ready!(decide.as_mut().poll(cx));
                    let (mut inner, request, shared) =
                        *this.pending.take().expect("polled after completion");
                    let next = match decision {
                        Ok(decision) => apply(&shared, &quotas, &decision, &request),
                        Err(reason) => {
                            tracing::warn!(target: "tower_api_guard::rate_limit", reason, ?policy, "rate-limit store failed");
                            match policy {
                                RedisFailure::Closed => {
                                    let error = AuthError::unavailable(
                                        "rate-limit store failed",
                                        Duration::from_secs(1),
                                    );
                                    let mut response =
                                        shared.renderer.render(&error, &RequestHead::of(&request));
                                    response.extensions_mut().insert(error);
                                    Err(response)
                                }
                                _ => Ok(Vec::new()),
                            }
                        }
                    };
                    match next {
                        Ok(fields) => {
                            if !fields.is_empty() {
                                *this.fields = Some(fields);
                            }
                            let future = inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(response) => this.state.set(State::Rejected {
                            response: Some(response),
                        }),
                    }
                }
                #[cfg(not(feature = "redis"))]
                StateProj::Deciding { .. } => unreachable!("no asynchronous store without redis"),
                StateProj::Calling { future } => {
                    let mut response = ready!(future.poll(cx))?;
                    for (name, value) in this.fields.take().unwrap_or_default() {
                        response.headers_mut().insert(name, value);
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Rejected { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            }
        }
    }
}
