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

use crate::metrics::MetricKey;
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
use crate::identity::{CredentialKey, Identity};

/// Limits each identity. See the [module docs](self).
pub type RateLimiterLayer = GateLayer<LimitRate>;

/// What a [`RateLimiterLayer`]'s quotas are counted against (see
/// [`RateLimiterLayer::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateKey {
    /// The caller: the issuer (or key owner) and the subject. Every key of one owner,
    /// every client of one user, share one budget. The default.
    #[default]
    Subject,
    /// The credential presented: an API key's id, a certificate's thumbprint, a token's
    /// OAuth client (`client_id`, else `azp`, with the issuer). A request whose identity
    /// names no credential (a token without a client) is counted against its subject.
    Credential,
}

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
    /// Per quota, the keys of `tower_api_guard_rate_limit_decisions_total` under its name:
    /// allowed, limited. Shared: a Redis decision clones its plan.
    metrics: Arc<[[MetricKey; 2]]>,
}

impl Plan {
    /// Quotas named `q0`, `q1`, … in the fields.
    fn new(quotas: impl IntoIterator<Item = Quota>) -> Self {
        Self::named(quotas, "q")
    }

    /// Quotas named `{name}0`, `{name}1`, … in the fields (`k` for a credential's).
    fn named(quotas: impl IntoIterator<Item = Quota>, name: &str) -> Self {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        let policy: Vec<String> = quotas
            .iter()
            .enumerate()
            .map(|(i, q)| {
                format!(
                    "\"{name}{i}\";q={};w={}",
                    q.limit(),
                    q.window().as_secs().max(1)
                )
            })
            .collect();
        let policy =
            HeaderValue::from_str(&policy.join(", ")).unwrap_or(HeaderValue::from_static(""));
        let metrics = (0..quotas.len())
            .map(|i| {
                let name = format!("{name}{i}");
                ["allowed", "limited"].map(|outcome| {
                    MetricKey::new(
                        crate::metrics::RATE_LIMIT_DECISIONS,
                        &[("policy", &name), ("outcome", outcome)],
                    )
                })
            })
            .collect();
        Self {
            quotas,
            policy,
            metrics,
        }
    }
}

type CostFn = dyn Fn(&RequestHead<'_>) -> u32 + Send + Sync;

/// The check of [`RateLimiterLayer`].
#[derive(Clone)]
pub struct LimitRate {
    default: Plan,
    plans: HashMap<String, Plan>,
    key: RateKey,
    /// Quotas of each credential besides the main ones (`per_credential`), and by plan.
    credential: Option<Plan>,
    credential_plans: HashMap<String, Plan>,
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
            key: RateKey::Subject,
            credential: None,
            credential_plans: HashMap::new(),
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

    /// Count the quotas of [`new`](Self::new) and [`plan`](Self::plan) against the subject
    /// ([`RateKey::Subject`], the default) or against the credential presented
    /// ([`RateKey::Credential`]: "100 requests per second per API key", so that one
    /// leaked or noisy key cannot spend its owner's whole budget).
    ///
    /// ```
    /// use tower_api_guard::rate_limit::{Quota, RateKey, RateLimiterLayer};
    ///
    /// let per_key = RateLimiterLayer::new([Quota::parse("100/s").unwrap()]).key(RateKey::Credential);
    /// # let _ = per_key;
    /// ```
    pub fn key(mut self, key: RateKey) -> Self {
        self.check_mut().key = key;
        self
    }

    /// Also give each credential (see [`RateKey::Credential`]) its own `quotas`, checked
    /// together with the subject's (with [`key`](Self::key)`(RateKey::Credential)` the
    /// main quotas are the credential's already, and these are not added): a request passes only when both allow it, and is
    /// counted in both, atomically (one lock in process, one script call in Redis; on a
    /// Redis Cluster, a JWT client's quota lives in another slot than its user's, so
    /// those two are asked one after the other: a request the second refuses stays
    /// counted in the first, which refuses more, never less). The credential's quotas
    /// appear in the fields as `k0`, `k1`, … beside the subject's `q0`, … A request whose
    /// identity names no credential gets the subject's quotas only.
    ///
    /// ```
    /// use tower_api_guard::rate_limit::{Quota, RateLimiterLayer};
    ///
    /// // 50/s per owner in all, 5/s per API key of that owner.
    /// let limiter = RateLimiterLayer::new([Quota::parse("50/s").unwrap()])
    ///     .per_credential([Quota::parse("5/s").unwrap()]);
    /// # let _ = limiter;
    /// ```
    pub fn per_credential(mut self, quotas: impl IntoIterator<Item = Quota>) -> Self {
        self.check_mut().credential = Some(Plan::named(quotas, "k"));
        self
    }

    /// Credentials whose plan is `plan` (an API-key record's own plan, or the token's
    /// plan claim) get these quotas instead of [`per_credential`](Self::per_credential)'s.
    pub fn credential_plan(mut self, plan: &str, quotas: impl IntoIterator<Item = Quota>) -> Self {
        self.check_mut()
            .credential_plans
            .insert(plan.to_owned(), Plan::named(quotas, "k"));
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
    /// The credential's `RateLimit-Policy` entries, when it has its own quotas.
    credential_policy: Option<HeaderValue>,
    limit: HeaderValue,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`, when asked for.
    legacy: Option<[HeaderValue; 3]>,
}

impl Fields {
    fn insert_into(self, headers: &mut http::HeaderMap) {
        // Empty when only the credential's quotas apply.
        if !self.policy.is_empty() {
            headers.insert(RATELIMIT_POLICY, self.policy);
        }
        if let Some(policy) = self.credential_policy {
            headers.append(RATELIMIT_POLICY, policy);
        }
        headers.insert(RATELIMIT, self.limit);
        if let Some([limit, remaining, reset]) = self.legacy {
            headers.insert(X_RATELIMIT_LIMIT, limit);
            headers.insert(X_RATELIMIT_REMAINING, remaining);
            headers.insert(X_RATELIMIT_RESET, reset);
        }
    }

    /// As a list, for a rejection's response.
    fn into_vec(self) -> Vec<(HeaderName, HeaderValue)> {
        let mut list = Vec::with_capacity(3);
        if !self.policy.is_empty() {
            list.push((RATELIMIT_POLICY, self.policy));
        }
        list.extend(self.credential_policy.map(|p| (RATELIMIT_POLICY, p)));
        list.push((RATELIMIT, self.limit));
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
/// legacy `X-RateLimit-Limit/Remaining/Reset` of the tightest quota when asked for. The
/// decision holds `plans.0`'s quotas, then `plans.1`'s (a credential's), if any.
fn headers(plans: Plans<'_>, decision: &Decision, legacy: bool) -> Fields {
    let (plan, credential) = plans;
    let (i, remaining, reset) = decision.tightest();
    let reset = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
    let (name, index, quota) = match i.checked_sub(plan.quotas.len()) {
        Some(j) => ("\"k", j, credential.and_then(|c| c.quotas.get(j))),
        None => ("\"q", i, plan.quotas.get(i)),
    };
    // `"q{i}";r={remaining};t={reset}`, with itoa: `write!` costs more than the decision.
    // Built on the stack and copied once into the header value.
    let mut numbers = itoa::Buffer::new();
    let mut text = [0u8; 80];
    let mut len = 0;
    for part in [
        name,
        numbers.format(index),
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
        credential_policy: credential.map(|c| c.policy.clone()),
        limit: HeaderValue::from_bytes(&text[..len]).unwrap_or(HeaderValue::from_static("")),
        legacy: legacy.then(|| {
            let limit = quota.map_or(0, Quota::limit);
            [
                HeaderValue::from(limit),
                HeaderValue::from(remaining),
                HeaderValue::from(reset),
            ]
        }),
    }
}

/// Count a decision once, under the quota that decided it: the tightest one (the one that
/// refused, or the one with the fewest requests left).
fn count((plan, credential): Plans<'_>, decision: &Decision) {
    let (i, _, _) = decision.tightest();
    let keys = match i.checked_sub(plan.quotas.len()) {
        Some(j) => credential.and_then(|c| c.metrics.get(j)),
        None => plan.metrics.get(i),
    };
    if let Some(keys) = keys {
        keys[usize::from(decision.retry_after().is_some())].increment();
    }
}

/// The plan of a decision, and its credential's plan when it has one.
type Plans<'a> = (&'a Plan, Option<&'a Plan>);

/// A store's answer that had to wait (Redis).
pub type StoreFuture = Pin<Box<dyn Future<Output = StoreAnswer> + Send>>;

/// A shared store's answer, with the plan it was asked about (so that nothing of the
/// request has to be looked up again).
pub struct StoreAnswer {
    decision: Result<Decision, StoreFailure>,
    plan: Plan,
    credential: Option<Plan>,
}

/// Why a shared store could not decide, and what that does to the request.
#[derive(Debug, Clone, Copy)]
pub struct StoreFailure {
    reason: &'static str,
    policy: FailurePolicy,
}

/// What one request is counted against.
struct Selection<'a> {
    /// The main key: the caller's, the credential's (`RateKey::Credential`), or the
    /// client address's.
    key: Cow<'a, str>,
    plan: &'a Plan,
    /// The credential's own quotas (`per_credential`), for an identity that names one.
    credential: Option<(&'a CredentialKey, &'a Plan)>,
}

impl LimitRate {
    /// What this request is counted against, or `None` when this layer does not limit it.
    fn select<'a, B>(&'a self, request: &'a Request<B>) -> Option<Selection<'a>> {
        let selection = match request.extensions().get::<Identity>() {
            Some(identity) => {
                let plan = identity
                    .plan()
                    .and_then(|p| self.plans.get(p))
                    .unwrap_or(&self.default);
                let credential = identity.credential_key();
                let (key, credential) = match (self.key, credential) {
                    // The main quotas are the credential's already: no second count.
                    (RateKey::Credential, Some(credential)) => (&*credential.flat, None),
                    _ => (identity.caller_key(), credential),
                };
                let credential = self.credential.as_ref().and_then(|default| {
                    let plan = identity
                        .plan()
                        .and_then(|p| self.credential_plans.get(p))
                        .unwrap_or(default);
                    Some((credential?, plan)).filter(|(_, plan)| !plan.quotas.is_empty())
                });
                Selection {
                    key: Cow::Borrowed(key),
                    plan,
                    credential,
                }
            }
            None => {
                let (plan, client) = self.anonymous.as_ref()?;
                let peer = client.peer(request.extensions())?;
                Selection {
                    key: Cow::Owned(client.key(client.resolve(peer, request.headers()))),
                    plan,
                    credential: None,
                }
            }
        };
        (!selection.plan.quotas.is_empty() || selection.credential.is_some()).then_some(selection)
    }

    fn cost<B>(&self, request: &Request<B>) -> u32 {
        self.cost
            .as_ref()
            .map_or(1, |cost| cost(&RequestHead::of(request)))
    }

    /// A decision made: the fields to add to the response, or the rejection.
    fn verdict(&self, plans: Plans<'_>, decision: &Decision) -> Verdict<Option<Fields>> {
        count(plans, decision);
        let fields = headers(plans, decision, self.legacy);
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
        let Some(Selection {
            key,
            plan,
            credential,
        }) = self.select(request)
        else {
            return Step::Allow(None);
        };
        let cost = self.cost(request);
        match &self.store {
            Store::Memory(store) => {
                let now = self.clock.now();
                let decision = match credential {
                    None => store.check(&key, &plan.quotas, cost, now),
                    Some((credential, own)) => store.check_parts(
                        &[(&key, &plan.quotas), (&credential.flat, &own.quotas)],
                        cost,
                        now,
                    ),
                };
                match self.verdict((plan, credential.map(|c| c.1)), &decision) {
                    Verdict::Allow(fields) => Step::Allow(fields),
                    Verdict::Deny(rejection) => Step::Deny(rejection),
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis(store) => {
                let store = store.clone();
                let plan = plan.clone();
                let key = key.into_owned();
                let credential =
                    credential.map(|(c, own)| ((c.tag.clone(), c.suffix.clone()), own.clone()));
                Step::Wait(Box::pin(async move {
                    let timer = crate::metrics::Timer::start();
                    let decision = match &credential {
                        None => store.check(&key, &plan.quotas, cost).await,
                        Some(((tag, suffix), own)) => {
                            let parts = [
                                redis_store::Part {
                                    tag: &key,
                                    suffix: "",
                                    quotas: &plan.quotas,
                                },
                                redis_store::Part {
                                    tag,
                                    suffix,
                                    quotas: &own.quotas,
                                },
                            ];
                            store.check_parts(&parts, cost).await
                        }
                    };
                    timer.redis(crate::metrics::RedisOp::RateLimit);
                    StoreAnswer {
                        decision: decision.map_err(|reason| StoreFailure {
                            reason,
                            policy: store.policy(),
                        }),
                        plan,
                        credential: credential.map(|(_, own)| own),
                    }
                }))
            }
        }
    }

    fn resume<B>(&self, answer: StoreAnswer, _: &mut Request<B>) -> Verdict<Option<Fields>> {
        match answer.decision {
            Ok(decision) => self.verdict((&answer.plan, answer.credential.as_ref()), &decision),
            Err(StoreFailure { reason, policy }) => {
                tracing::warn!(
                    target: "tower_api_guard::rate_limit",
                    reason,
                    ?policy,
                    "rate-limit store failed"
                );
                crate::metrics::store_failed(
                    LayerKind::RateLimit,
                    crate::metrics::Store::Redis,
                    policy,
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

    fn api_key(owner: &str, key_id: &str, plan: Option<&str>) -> Identity {
        let source = crate::identity::Source::ApiKey {
            key_id: key_id.into(),
        };
        let builder = Identity::builder(owner, source);
        match plan {
            Some(plan) => builder.plan(plan).build(),
            None => builder.build(),
        }
    }

    #[tokio::test]
    async fn per_credential_keys_give_each_api_key_of_one_owner_its_own_quota() {
        let layer = RateLimiterLayer::new([quota("2/min")])
            .key(RateKey::Credential)
            .clock(at_epoch());
        for key in ["k1", "k2"] {
            for _ in 0..2 {
                let out = run(&layer, with(Some(api_key("alice", key, None)))).await;
                assert_eq!(out.status, StatusCode::OK, "{key}");
            }
            let out = run(&layer, with(Some(api_key("alice", key, None)))).await;
            assert_eq!(out.status, StatusCode::TOO_MANY_REQUESTS, "{key}");
        }
        // An identity naming no credential is counted against its subject.
        let plain = || Some(caller("bob", &[], &[]));
        assert_eq!(run(&layer, with(plain())).await.status, StatusCode::OK);
        assert_eq!(run(&layer, with(plain())).await.status, StatusCode::OK);
        assert_eq!(
            run(&layer, with(plain())).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn subject_and_credential_quotas_are_checked_together_atomically() {
        // 3/min per owner, 2/min per key; the `gold` plan on a key record: 10/min per key.
        let layer = RateLimiterLayer::new([quota("3/min")])
            .per_credential([quota("2/min")])
            .credential_plan("gold", [quota("10/min")])
            .clock(at_epoch());
        let k1 = || with(Some(api_key("alice", "k1", None)));
        let k2 = || with(Some(api_key("alice", "k2", None)));
        let first = run(&layer, k1()).await;
        assert_eq!(first.status, StatusCode::OK);
        let policies: Vec<_> = first.headers.get_all(RATELIMIT_POLICY).iter().collect();
        assert_eq!(policies, ["\"q0\";q=3;w=60", "\"k0\";q=2;w=60"]);
        assert_eq!(first.headers[RATELIMIT], "\"k0\";r=1;t=30");
        assert_eq!(run(&layer, k1()).await.status, StatusCode::OK);
        // k1's own quota is spent; the refusal consumes nothing of alice's.
        let refused = run(&layer, k1()).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers[RATELIMIT], "\"k0\";r=0;t=60");
        assert_eq!(refused.headers.get_all(RATELIMIT_POLICY).iter().count(), 2);
        let third = run(&layer, k2()).await;
        assert_eq!(third.status, StatusCode::OK);
        assert_eq!(third.headers[RATELIMIT], "\"q0\";r=0;t=60");
        // alice's budget is spent: k2, with its own quota left, is refused, and its own
        // quota is not consumed by the refusal.
        let refused = run(&layer, k2()).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers[RATELIMIT], "\"q0\";r=0;t=60");
        let other_owner = run(&layer, with(Some(api_key("bob", "k9", None)))).await;
        assert_eq!(other_owner.status, StatusCode::OK);
        // A key whose record carries the gold plan gets the gold credential quota.
        let gold = run(&layer, with(Some(api_key("carol", "k3", Some("gold"))))).await;
        assert_eq!(gold.headers[RATELIMIT], "\"q0\";r=2;t=20");
        let policies: Vec<_> = gold.headers.get_all(RATELIMIT_POLICY).iter().collect();
        assert_eq!(policies[1], "\"k0\";q=10;w=60");
    }

    #[tokio::test]
    async fn per_credential_quotas_beside_credential_keys_do_not_count_a_key_twice() {
        // The main quotas are already per key: the key's own 2/min must not be counted
        // into the same state as well.
        let layer = RateLimiterLayer::new([quota("3/min")])
            .key(RateKey::Credential)
            .per_credential([quota("2/min")])
            .clock(at_epoch());
        let k1 = || with(Some(api_key("alice", "k1", None)));
        for _ in 0..3 {
            let out = run(&layer, k1()).await;
            assert_eq!(out.status, StatusCode::OK);
            assert_eq!(out.headers.get_all(RATELIMIT_POLICY).iter().count(), 1);
        }
        assert_eq!(
            run(&layer, k1()).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn a_token_client_is_one_credential_across_its_users() {
        let layer = RateLimiterLayer::new([quota("1/min")])
            .key(RateKey::Credential)
            .clock(at_epoch());
        let token = |sub: &str, claims: serde_json::Value| {
            Identity::builder(
                sub,
                crate::identity::Source::Jwt {
                    issuer: "https://issuer.example".into(),
                },
            )
            .claims(claims)
            .build()
        };
        let app = serde_json::json!({"client_id": "mobile"});
        assert_eq!(
            run(&layer, with(Some(token("u1", app.clone()))))
                .await
                .status,
            StatusCode::OK
        );
        // Another user of the same client shares its quota; `azp` names a client too.
        assert_eq!(
            run(&layer, with(Some(token("u2", app)))).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        let web = serde_json::json!({"azp": "web"});
        assert_eq!(
            run(&layer, with(Some(token("u2", web)))).await.status,
            StatusCode::OK
        );
    }
}
