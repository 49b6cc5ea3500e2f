//! Rate limiting per identity: [`RateLimiterLayer`], GCRA, quotas per plan, standard headers.
//!
//! Each verified identity (its source, its issuer or key owner, and its subject: `alice` of
//! two issuers is two identities) gets its plan's quotas, or the default ones.
//! Several quotas (e.g. `20/s` and `10000/day`) are checked together: a request rejected by
//! one consumes nothing from the others. The decision is made in `call`, never in
//! `poll_ready`. Allowed responses carry the IETF draft fields `RateLimit-Policy` and
//! `RateLimit`; a rejection is `429` with `Retry-After` (gRPC `RESOURCE_EXHAUSTED`).
//!
//! The in-process store is sharded and bounded: past its maximum number of keys, idle keys
//! (whose state equals a fresh key's) are evicted first, then the keys closest to idle, so
//! a flood of distinct keys cannot exhaust memory.
//!
//! [`ClientAddr`] finds the client address (trusted proxies only, IPv6 grouped by /56), for
//! anonymous quotas and for the brute-force guard
//! ([`BruteForceGuardLayer`](crate::auth::BruteForceGuardLayer)).
//!
//! With the `redis` feature, `RedisStore` shares the limits between replicas (a Lua script
//! on Redis server time; a process's concurrent decisions share one script call; within a
//! time limit, failing open or closed; optionally leasing a few requests per key at once,
//! never allowing more than the limit).
//!
//! Requests without an identity pass [`RateLimiterLayer`] unless
//! [`anonymous`](RateLimiterLayer::anonymous) gives them per-address quotas. Legacy
//! `X-RateLimit-*` fields are available with [`legacy_headers`](RateLimiterLayer::legacy_headers).
//! [`InFlightLimitLayer`] caps the requests in flight per identity.
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_api_guard::auth::AuthLayer;
//! use tower_api_guard::jwt::JwtAuthenticator;
//! use tower_api_guard::rate_limit::{Quota, RateLimiterLayer};
//! use tower_api_guard::testing::TestIssuer;
//!
//! let issuer = TestIssuer::new("https://issuer.example");
//! let jwt = JwtAuthenticator::builder("https://issuer.example", "api")
//!     .keys(issuer.static_keys())
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(AuthLayer::new(jwt))
//!     .layer(RateLimiterLayer::new([Quota::parse("2/min").unwrap()]))
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

mod concurrency;
mod gcra;
mod memory_store;
mod quota;
#[cfg(feature = "redis")]
mod redis_store;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response};

pub use crate::client::ClientAddr;
pub use concurrency::{InFlightLimit, InFlightLimitLayer, LimitInFlight};
pub use gcra::Decision;
pub use memory_store::MemoryStore;
pub use quota::Quota;
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;

use crate::clock::{Clock, MonotonicClock};
use crate::error::{AuthError, FailurePolicy};
use crate::gate::{Check, Gate, GateLayer, LayerKind, Rejection, Step, Verdict};
use crate::head::RequestHead;
use crate::identity::Identity;

/// Limits each identity. See the [module docs](self).
pub type RateLimiterLayer = GateLayer<LimitRate>;

/// The service made by [`RateLimiterLayer`].
pub type RateLimiter<S> = Gate<LimitRate, S>;

/// The futures of [`rate_limit`](self).
pub mod future {
    /// The response future of [`RateLimiter`](super::RateLimiter).
    pub type ResponseFuture<S, ReqBody> = crate::gate::ResponseFuture<super::LimitRate, S, ReqBody>;

    /// The response future of [`InFlightLimit`](super::InFlightLimit).
    pub type InFlightFuture<S, ReqBody> =
        crate::gate::ResponseFuture<super::LimitInFlight, S, ReqBody>;
}

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

type CostFn = dyn Fn(&RequestHead<'_>) -> u32 + Send + Sync;

/// The check of [`RateLimiterLayer`].
#[derive(Clone)]
pub struct LimitRate {
    default: Plan,
    plans: HashMap<String, Plan>,
    anonymous: Option<(Plan, ClientAddr)>,
    legacy: bool,
    store: Store,
    clock: Arc<dyn Clock>,
    cost: Option<Arc<CostFn>>,
}

impl fmt::Debug for LimitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitRate")
            .field("default", &self.default.quotas)
            .field("plans", &self.plans.keys().collect::<Vec<_>>())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl RateLimiterLayer {
    /// Every identity gets `quotas` (checked together) unless its plan says otherwise.
    pub fn new(quotas: impl IntoIterator<Item = Quota>) -> Self {
        GateLayer::from_check(LimitRate {
            default: Plan::new(quotas),
            plans: HashMap::new(),
            anonymous: None,
            legacy: false,
            store: Store::Memory(MemoryStore::new(100_000)),
            clock: Arc::new(MonotonicClock::new()),
            cost: None,
        })
    }

    /// Identities whose plan is `plan` (from an API-key record or a JWT claim) get `quotas`.
    pub fn plan(mut self, plan: &str, quotas: impl IntoIterator<Item = Quota>) -> Self {
        self.check_mut()
            .plans
            .insert(plan.to_owned(), Plan::new(quotas));
        self
    }

    /// The store (default: in process, at most 100,000 keys).
    pub fn store(mut self, store: MemoryStore) -> Self {
        self.check_mut().store = Store::Memory(store);
        self
    }

    /// Limit requests without an identity too, per client address (found by `client`:
    /// trusted proxies only, IPv6 grouped by /56). Without this they pass this layer.
    pub fn anonymous(
        mut self,
        quotas: impl IntoIterator<Item = Quota>,
        client: ClientAddr,
    ) -> Self {
        self.check_mut().anonymous = Some((Plan::new(quotas), client));
        self
    }

    /// Also send the legacy `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
    /// `X-RateLimit-Reset` (seconds) fields, for the tightest quota.
    pub fn legacy_headers(mut self, enabled: bool) -> Self {
        self.check_mut().legacy = enabled;
        self
    }

    /// What a request costs, from its head (default: 1 for every request). A cost of 0
    /// lets the request through without consuming anything (it still gets the
    /// `RateLimit` fields); a cost above a quota's burst can never pass that quota and is
    /// answered `429`.
    ///
    /// ```
    /// use tower_api_guard::rate_limit::{Quota, RateLimiterLayer};
    ///
    /// // Writes cost 5, reads 1.
    /// let limiter = RateLimiterLayer::new([Quota::parse("100/min").unwrap()])
    ///     .cost(|head| if head.method == http::Method::GET { 1 } else { 5 });
    /// # let _ = limiter;
    /// ```
    pub fn cost<F>(mut self, cost: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> u32 + Send + Sync + 'static,
    {
        self.check_mut().cost = Some(Arc::new(cost));
        self
    }

    /// Keep the limits in Redis, shared by every replica (feature `redis`).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, store: RedisStore) -> Self {
        self.check_mut().store = Store::Redis(store);
        self
    }

    /// The clock: [`MonotonicClock`] by default; a `ManualClock` in tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.check_mut().clock = clock;
        self
    }
}

impl<S> RateLimiter<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, quotas: impl IntoIterator<Item = Quota>) -> Self {
        tower_layer::Layer::layer(&RateLimiterLayer::new(quotas), inner)
    }

    /// A layer; same as [`RateLimiterLayer::new`].
    pub fn layer(quotas: impl IntoIterator<Item = Quota>) -> RateLimiterLayer {
        RateLimiterLayer::new(quotas)
    }
}

/// The response header fields of one decision (no heap list: an allowed request, the hot
/// path, adds them from here).
pub struct Fields {
    policy: HeaderValue,
    limit: HeaderValue,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`, when asked for.
    legacy: Option<[HeaderValue; 3]>,
}

impl Fields {
    fn insert_into(self, headers: &mut http::HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy);
        headers.insert(RATELIMIT, self.limit);
        if let Some([limit, remaining, reset]) = self.legacy {
            headers.insert(X_RATELIMIT_LIMIT, limit);
            headers.insert(X_RATELIMIT_REMAINING, remaining);
            headers.insert(X_RATELIMIT_RESET, reset);
        }
    }

    /// As a list, for a rejection's response.
    fn into_vec(self) -> Vec<(HeaderName, HeaderValue)> {
        let mut list = vec![(RATELIMIT_POLICY, self.policy), (RATELIMIT, self.limit)];
        if let Some([limit, remaining, reset]) = self.legacy {
            list.extend([
                (X_RATELIMIT_LIMIT, limit),
                (X_RATELIMIT_REMAINING, remaining),
                (X_RATELIMIT_RESET, reset),
            ]);
        }
        list
    }
}

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
    // Built on the stack and copied once into the header value.
    let mut numbers = itoa::Buffer::new();
    let mut text = [0u8; 80];
    let mut len = 0;
    for part in [
        "\"q",
        numbers.format(i),
        "\";r=",
        itoa::Buffer::new().format(remaining),
        ";t=",
        itoa::Buffer::new().format(reset),
    ] {
        text[len..len + part.len()].copy_from_slice(part.as_bytes());
        len += part.len();
    }
    Fields {
        policy: plan.policy.clone(),
        limit: HeaderValue::from_bytes(&text[..len]).unwrap_or(HeaderValue::from_static("")),
        legacy: legacy.then(|| {
            let limit = plan.quotas.get(i).map_or(0, Quota::limit);
            [
                HeaderValue::from(limit),
                HeaderValue::from(remaining),
                HeaderValue::from(reset),
            ]
        }),
    }
}

/// A store's answer that had to wait (Redis).
pub type StoreFuture = Pin<Box<dyn Future<Output = StoreAnswer> + Send>>;

/// A shared store's answer, with the plan it was asked about (so that nothing of the
/// request has to be looked up again).
pub struct StoreAnswer {
    decision: Result<Decision, StoreFailure>,
    plan: Plan,
}

/// Why a shared store could not decide, and what that does to the request.
#[derive(Debug, Clone, Copy)]
pub struct StoreFailure {
    reason: &'static str,
    policy: FailurePolicy,
}

impl LimitRate {
    /// The key and plan of this request, or `None` when this layer does not limit it.
    fn select<'a, B>(&'a self, request: &'a Request<B>) -> Option<(Cow<'a, str>, &'a Plan)> {
        let (key, plan) = match request.extensions().get::<Identity>() {
            Some(identity) => (
                Cow::Borrowed(identity.caller_key()),
                identity
                    .plan()
                    .and_then(|p| self.plans.get(p))
                    .unwrap_or(&self.default),
            ),
            None => {
                let (plan, client) = self.anonymous.as_ref()?;
                let peer = client.peer(request.extensions())?;
                (
                    Cow::Owned(client.key(client.resolve(peer, request.headers()))),
                    plan,
                )
            }
        };
        (!plan.quotas.is_empty()).then_some((key, plan))
    }

    fn cost<B>(&self, request: &Request<B>) -> u32 {
        self.cost
            .as_ref()
            .map_or(1, |cost| cost(&RequestHead::of(request)))
    }

    /// A decision made: the fields to add to the response, or the rejection.
    fn verdict(&self, plan: &Plan, decision: &Decision) -> Verdict<Option<Fields>> {
        let fields = headers(plan, decision, self.legacy);
        match decision.retry_after() {
            None => Verdict::Allow(Some(fields)),
            Some(retry) => Verdict::Deny(
                Rejection::from(AuthError::rate_limited(retry.max(Duration::from_millis(1))))
                    .with_headers(fields.into_vec()),
            ),
        }
    }
}

impl Check for LimitRate {
    type Ticket = Option<Fields>;
    type Wait = StoreFuture;
    const LAYER: LayerKind = LayerKind::RateLimit;

    fn check<B>(&self, request: &mut Request<B>) -> Step<Option<Fields>, StoreFuture> {
        let Some((key, plan)) = self.select(request) else {
            return Step::Allow(None);
        };
        let cost = self.cost(request);
        match &self.store {
            Store::Memory(store) => {
                match self.verdict(
                    plan,
                    &store.check(&key, &plan.quotas, cost, self.clock.now()),
                ) {
                    Verdict::Allow(fields) => Step::Allow(fields),
                    Verdict::Deny(rejection) => Step::Deny(rejection),
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis(store) => {
                let store = store.clone();
                let plan = plan.clone();
                let key = key.into_owned();
                Step::Wait(Box::pin(async move {
                    let decision = store.check(&key, &plan.quotas, cost).await;
                    StoreAnswer {
                        decision: decision.map_err(|reason| StoreFailure {
                            reason,
                            policy: store.policy(),
                        }),
                        plan,
                    }
                }))
            }
        }
    }

    fn resume<B>(&self, answer: StoreAnswer, _: &mut Request<B>) -> Verdict<Option<Fields>> {
        match answer.decision {
            Ok(decision) => self.verdict(&answer.plan, &decision),
            Err(StoreFailure { reason, policy }) => {
                tracing::warn!(
                    target: "tower_api_guard::rate_limit",
                    reason,
                    ?policy,
                    "rate-limit store failed"
                );
                match policy {
                    FailurePolicy::Closed => {
                        Verdict::Deny(AuthError::unavailable(reason, Duration::from_secs(1)).into())
                    }
                    FailurePolicy::Open => Verdict::Allow(None),
                }
            }
        }
    }

    fn finish<R>(fields: Option<Fields>, response: &mut Response<R>) {
        if let Some(fields) = fields {
            fields.insert_into(response.headers_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::SystemTime;

    use http::StatusCode;

    use super::*;
    use crate::clock::ManualClock;
    use crate::gate::support::{caller, run, with};

    fn quota(text: &str) -> Quota {
        Quota::parse(text).unwrap()
    }

    fn at_epoch() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH))
    }

    #[tokio::test]
    async fn each_identity_has_its_own_quota_and_the_429_carries_the_fields() {
        let layer = RateLimiterLayer::new([quota("1/min")]).clock(at_epoch());
        let ok = run(&layer, with(Some(caller("a", &[], &[])))).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.headers[RATELIMIT], "\"q0\";r=0;t=60");
        assert_eq!(ok.headers[RATELIMIT_POLICY], "\"q0\";q=1;w=60");
        let limited = run(&layer, with(Some(caller("a", &[], &[])))).await;
        assert_eq!(
            (limited.status, limited.calls),
            (StatusCode::TOO_MANY_REQUESTS, 0)
        );
        assert!(limited.headers.contains_key(RATELIMIT));
        assert!(limited.headers.contains_key(http::header::RETRY_AFTER));
        let other = run(&layer, with(Some(caller("b", &[], &[])))).await;
        assert_eq!(other.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_plan_picks_its_quotas_and_legacy_fields_are_on_request() {
        let layer = RateLimiterLayer::new([quota("1/min")])
            .plan("gold", [quota("100/min")])
            .legacy_headers(true)
            .clock(at_epoch());
        let source = crate::identity::Source::Custom {
            mechanism: "test".into(),
        };
        let gold = || Identity::builder("g", source.clone()).plan("gold").build();
        for _ in 0..3 {
            let out = run(&layer, with(Some(gold()))).await;
            assert_eq!(out.status, StatusCode::OK);
            assert_eq!(out.headers[X_RATELIMIT_LIMIT], "100");
        }
    }

    #[tokio::test]
    async fn without_an_identity_a_request_passes_unless_anonymous_quotas_apply() {
        let layer = RateLimiterLayer::new([quota("1/min")]).clock(at_epoch());
        for _ in 0..2 {
            let out = run(&layer, with(None)).await;
            assert_eq!(out.status, StatusCode::OK);
            assert!(!out.headers.contains_key(RATELIMIT));
        }
        let layer = layer.anonymous([quota("1/min")], ClientAddr::new());
        let from = |addr: &str| {
            let mut request = with(None);
            request
                .extensions_mut()
                .insert(addr.parse::<SocketAddr>().unwrap());
            request
        };
        assert_eq!(
            run(&layer, from("192.0.2.1:1")).await.status,
            StatusCode::OK
        );
        assert_eq!(
            run(&layer, from("192.0.2.1:2")).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            run(&layer, from("192.0.2.2:1")).await.status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_cost_of_zero_consumes_nothing_and_a_cost_over_the_burst_never_passes() {
        let free = RateLimiterLayer::new([quota("1/min")])
            .cost(|_| 0)
            .clock(at_epoch());
        for _ in 0..3 {
            let out = run(&free, with(Some(caller("a", &[], &[])))).await;
            assert_eq!(out.status, StatusCode::OK);
        }
        let heavy = RateLimiterLayer::new([quota("5/min")])
            .cost(|_| 6)
            .clock(at_epoch());
        let out = run(&heavy, with(Some(caller("a", &[], &[])))).await;
        assert_eq!((out.status, out.calls), (StatusCode::TOO_MANY_REQUESTS, 0));
    }
}
