//! [`BruteForceGuardLayer`]: answers 429 to clients that keep failing authentication,
//! before any signature check.
//!
//! The guard counts failed authentications per client address (and, with
//! [`credential_id`](BruteForceGuardLayer::credential_id), per credential id) and refuses a
//! client over its failure quota at once, optionally for a time that grows with each
//! lockout ([`progressive_lockout`](BruteForceGuardLayer::progressive_lockout)).
//!
//! * **In process** (the default): counters in a bounded [`MemoryStore`]. Each replica
//!   counts alone, so `N` replicas allow `N` times the failures. While no failure was
//!   recorded anywhere within the quota's horizon and no lockout runs, the store is not
//!   even asked (the usual case costs one atomic load).
//! * **Shared** (feature `redis`, [`BruteForceGuardLayer::redis`] with a
//!   [`RedisFailures`]): the counters and the lockouts live in Redis (one server or a
//!   cluster), so the replicas together enforce **one** quota per address. Every request
//!   with a client address (or a credential id) asks Redis, one read-only script call
//!   under a time limit: the in-process fast path is off, since only Redis knows whether
//!   another replica has locked an address out. A failed authentication is recorded before
//!   its response is handed back (one more script call), so the client's next request
//!   sees it, on any replica.

#[cfg(feature = "redis")]
mod shared;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response};

#[cfg(feature = "redis")]
pub use shared::RedisFailures;

use crate::client::KeyBuf;
use crate::clock::{Clock, MonotonicClock};
use crate::error::{AuthError, AuthErrorKind};
use crate::gate::{Check, Finishing, Gate, GateLayer, LayerKind, Step, Verdict};
use crate::head::RequestHead;
use crate::rate_limit::{ClientAddr, MemoryStore, Quota};

/// A brute-force guard, placed **before** authentication (feature `rate-limit`): it counts
/// failed authentications per client address (it reads the [`AuthError`] on the rejection
/// response: `invalid_token` and `invalid_request`, for JWTs and API keys alike) and, once a
/// client is over its failure quota (e.g. `20/min`), answers `429` with `Retry-After` at
/// once, so nobody can burn the server's CPU on signature checks.
///
/// Requests whose client address cannot be found (no `ConnectInfo` or `SocketAddr` in the
/// request's extensions) are not counted per address.
///
/// ```
/// use tower_api_guard::auth::BruteForceGuardLayer;
/// use tower_api_guard::rate_limit::{ClientAddr, Quota};
///
/// let guard = BruteForceGuardLayer::new(Quota::parse("20/min").unwrap())
///     .client_addr(ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap());
/// // ServiceBuilder::new().layer(guard).layer(AuthLayer::new(jwt))...
/// # let _ = guard;
/// ```
///
/// With [`progressive_lockout`](BruteForceGuardLayer::progressive_lockout), a client that
/// goes over the quota is locked out for a time that doubles with each lockout (up to a cap)
/// and starts again from the base once the client has stayed quiet for a while. With
/// [`credential_id`](BruteForceGuardLayer::credential_id), failures are also counted per
/// id the client presents, from every address. With [`redis`](BruteForceGuardLayer::redis)
/// (feature `redis`), replicas share the counters and the lockouts.
pub type BruteForceGuardLayer = GateLayer<CountFailures>;

/// The service made by [`BruteForceGuardLayer`].
pub type BruteForceGuard<S> = Gate<CountFailures, S>;

/// The check of [`BruteForceGuardLayer`].
#[derive(Clone)]
pub struct CountFailures {
    settings: Arc<Settings>,
}

/// Reads a credential id off a request (see [`BruteForceGuardLayer::credential_id`]).
type IdFn = dyn Fn(&RequestHead<'_>) -> Option<String> + Send + Sync;

/// Ids are counted on their first this many bytes (a bounded key per id).
const MAX_ID_LEN: usize = 128;

#[derive(Clone)]
struct Settings {
    quota: [Quota; 1],
    store: MemoryStore,
    client: ClientAddr,
    clock: Arc<dyn Clock>,
    /// When the last failure was recorded (nanoseconds since the Unix epoch on `clock`;
    /// 0: never), shared by every clone: once a quota's horizon has passed since then,
    /// every address is back to a fresh state, and the store need not be asked.
    last_failure: Arc<AtomicU64>,
    /// Progressive lockouts, when enabled; shared by every clone.
    lockouts: Option<Arc<Lockouts>>,
    /// The per-credential-id counter, when enabled.
    credential: Option<CredentialIds>,
    /// The shared store, when set: then the in-process state above is not used.
    #[cfg(feature = "redis")]
    shared: Option<RedisFailures>,
}

/// Failures counted per credential id.
#[derive(Clone)]
struct CredentialIds {
    quota: [Quota; 1],
    id: Arc<IdFn>,
    /// In process: its own store, so that a flood of ids cannot push addresses out.
    store: MemoryStore,
}

/// Lockouts that grow: `base`, `2 × base`, `4 × base`, … up to `cap`, back to `base` once an
/// address stayed `quiet` after its last lockout ended.
struct Lockouts {
    base: Duration,
    cap: Duration,
    quiet: Duration,
    /// At most this many addresses remembered; past it, addresses whose quiet period has
    /// passed are forgotten, and a new one gets the quota's own wait only.
    capacity: usize,
    table: Mutex<HashMap<String, Locked>>,
    /// The end of the latest lockout (nanoseconds since the Unix epoch; 0: none).
    until_max: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Locked {
    /// How many lockouts in a row: the next lasts `base × 2^level`.
    level: u32,
    /// When the current lockout ends (nanoseconds since the Unix epoch).
    until: u128,
}

impl Lockouts {
    /// The time left of `key`'s lockout, if it is locked out.
    fn active(&self, key: &str, now: u128) -> Option<Duration> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let locked = table.get(key)?;
        (locked.until > now).then(|| nanos_to_duration(locked.until - now))
    }

    /// `key` went over the quota: unless it is locked out already, lock it out (longer
    /// than last time unless it stayed quiet), at least for `wait`, the quota's own wait.
    fn start(&self, key: &str, now: u128, wait: Duration) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let quiet = self.quiet.as_nanos();
        let level = match table.get(key) {
            Some(last) if last.until > now => return,
            Some(last) if now - last.until <= quiet => last.level.saturating_add(1),
            _ => 0,
        };
        let factor = 1u32.checked_shl(level).unwrap_or(u32::MAX);
        let lockout = self
            .base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
            .max(wait);
        if table.len() >= self.capacity && !table.contains_key(key) {
            table.retain(|_, locked| now.saturating_sub(locked.until) <= quiet);
            if table.len() >= self.capacity {
                return;
            }
        }
        let until = now + lockout.as_nanos();
        table.insert(key.to_owned(), Locked { level, until });
        let until = u64::try_from(until).unwrap_or(u64::MAX);
        self.until_max.fetch_max(until, Ordering::Relaxed);
        locked_out(lockout, level, false);
    }
}

/// The event of a lockout that starts (never the address).
fn locked_out(lockout: Duration, level: u32, shared: bool) {
    crate::metrics::event(crate::metrics::Event::Lockout);
    tracing::warn!(
        target: "tower_api_guard::auth",
        lockout_secs = lockout.as_secs(),
        level,
        shared,
        "client locked out after too many failed authentications"
    );
}

fn nanos_to_duration(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// How long a failure can keep a key of `quota` from a fresh state: the burst, spaced at
/// the quota's rate, and a window more.
fn horizon_ns(quota: &Quota) -> u128 {
    let per_request = quota.window().as_nanos() / u128::from(quota.limit().max(1));
    per_request * u128::from(quota.burst()) + quota.window().as_nanos()
}

impl Settings {
    /// The longest horizon of the quotas in force.
    fn horizon_ns(&self) -> u128 {
        let ids = self
            .credential
            .as_ref()
            .map_or(0, |c| horizon_ns(&c.quota[0]));
        horizon_ns(&self.quota[0]).max(ids)
    }

    /// Whether no failure was recorded within the horizon and no lockout is running (then
    /// no address can be over).
    fn quiet(&self, now: SystemTime) -> bool {
        let last = self.last_failure.load(Ordering::Relaxed);
        let now = nanos(now);
        let locked = self
            .lockouts
            .as_ref()
            .is_some_and(|l| u128::from(l.until_max.load(Ordering::Relaxed)) > now);
        !locked && (last == 0 || now.saturating_sub(u128::from(last)) > self.horizon_ns())
    }

    /// The wait of a request from `client` presenting `id`, in process: `Some` when it is
    /// refused, with the reason.
    fn refused_in_memory(
        &self,
        client: Option<IpAddr>,
        id: Option<&str>,
        now: SystemTime,
    ) -> Option<(Duration, &'static str)> {
        if let Some(client) = client {
            let mut key = KeyBuf::default();
            let key = self.client.key_in(client, &mut key);
            let locked = self
                .lockouts
                .as_ref()
                .and_then(|l| l.active(key, nanos(now)));
            let wait = self.store.peek(key, &self.quota, 1, now).retry_after();
            if let Some(retry) = locked.max(wait) {
                return Some((retry, FROM_CLIENT));
            }
        }
        if let (Some(id), Some(ids)) = (id, &self.credential)
            && let Some(retry) = ids.store.peek(id, &ids.quota, 1, now).retry_after()
        {
            return Some((retry, FOR_ID));
        }
        None
    }

    /// Record a failure of `client` and `id` in process; lock `client` out when it goes
    /// over.
    fn record_in_memory(&self, client: Option<IpAddr>, id: Option<&str>) {
        let now = self.clock.now();
        if let Some(client) = client {
            let mut key = KeyBuf::default();
            let key = self.client.key_in(client, &mut key);
            self.store.check(key, &self.quota, 1, now);
            if let Some(lockouts) = &self.lockouts
                && let Some(wait) = self.store.peek(key, &self.quota, 1, now).retry_after()
            {
                lockouts.start(key, nanos(now), wait);
            }
        }
        if let (Some(id), Some(ids)) = (id, &self.credential) {
            ids.store.check(id, &ids.quota, 1, now);
        }
        let at = u64::try_from(nanos(now)).unwrap_or(u64::MAX).max(1);
        self.last_failure.fetch_max(at, Ordering::Relaxed);
    }
}

const FROM_CLIENT: &str = "too many failed authentications from this client";
const FOR_ID: &str = "too many failed authentications for this credential id";

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// `id`, cut to at most [`MAX_ID_LEN`] bytes on a character boundary.
fn bounded_id(mut id: String) -> String {
    if id.len() > MAX_ID_LEN {
        let mut end = MAX_ID_LEN;
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        id.truncate(end);
    }
    id
}

impl fmt::Debug for CountFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let mut d = f.debug_struct("CountFailures");
        d.field("quota", &s.quota[0]);
        d.field("credential_id", &s.credential.as_ref().map(|c| c.quota[0]));
        d.field("progressive_lockout", &s.lockouts.is_some());
        #[cfg(feature = "redis")]
        d.field("redis", &s.shared);
        d.finish_non_exhaustive()
    }
}

impl BruteForceGuardLayer {
    /// At most `failures` failed authentications per client address.
    pub fn new(failures: Quota) -> Self {
        GateLayer::from_check(CountFailures {
            settings: Arc::new(Settings {
                quota: [failures],
                store: MemoryStore::new(100_000),
                client: ClientAddr::new(),
                clock: Arc::new(MonotonicClock::new()),
                last_failure: Arc::new(AtomicU64::new(0)),
                lockouts: None,
                credential: None,
                #[cfg(feature = "redis")]
                shared: None,
            }),
        })
    }

    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.check_mut().settings)
    }

    /// How client addresses are found (trusted proxies, IPv6 grouping).
    pub fn client_addr(mut self, client: ClientAddr) -> Self {
        self.settings().client = client;
        self
    }

    /// The in-process store (default: at most 100,000 addresses). Not used with
    /// [`redis`](Self::redis).
    pub fn store(mut self, store: MemoryStore) -> Self {
        self.settings().store = store;
        self
    }

    /// The clock: [`MonotonicClock`] by default; a `ManualClock` in tests. With
    /// [`redis`](Self::redis), its time is what the scripts compare against (keep the
    /// replicas' clocks in sync).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings().clock = clock;
        self
    }

    /// Progressive lockout: a client that goes over the quota is refused (`429`, with
    /// `Retry-After`) for `base`, and each further lockout lasts twice the one before, up to
    /// `cap`; a client that stays quiet for `quiet` after its last lockout ended starts again
    /// from `base`. A lockout never ends before the quota itself would let the client in.
    /// A lockout starts with the failure that puts the client over the quota. In process,
    /// up to 100,000 addresses are remembered; with [`redis`](Self::redis), the lockouts
    /// are kept in Redis, by the same rules. Lockouts apply to client addresses, not to
    /// [credential ids](Self::credential_id).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_api_guard::auth::BruteForceGuardLayer;
    /// use tower_api_guard::rate_limit::Quota;
    ///
    /// // 1 min, then 2, 4, 8 … up to 1 h; forgotten after a quiet day.
    /// let guard = BruteForceGuardLayer::new(Quota::parse("20/min").unwrap()).progressive_lockout(
    ///     Duration::from_secs(60),
    ///     Duration::from_secs(3600),
    ///     Duration::from_secs(86_400),
    /// );
    /// # let _ = guard;
    /// ```
    pub fn progressive_lockout(mut self, base: Duration, cap: Duration, quiet: Duration) -> Self {
        self.settings().lockouts = Some(Arc::new(Lockouts {
            base,
            cap: cap.max(base),
            quiet,
            capacity: 100_000,
            table: Mutex::new(HashMap::new()),
            until_max: AtomicU64::new(0),
        }));
        self
    }

    /// Also count failures per **credential id**: `id` reads an id off the request (e.g.
    /// the user name of `Basic` credentials whose user name is the key's id), and an id
    /// with more than `failures` failed authentications is refused (`429`, with
    /// `Retry-After`) **from every address**, so guessing the secret of one known id is
    /// limited however many addresses the guesser has. Requests without an id (`None`)
    /// are counted per address only; a request with an id and no client address is
    /// counted per id. Ids are compared on their first 128 bytes. In process the ids
    /// have their own store (at most 100,000); with [`redis`](Self::redis) they are
    /// shared like addresses (`prefix:{id:…}:f`).
    ///
    /// **Trade-off:** anyone who knows an id can lock its owner out for a while, by
    /// failing on purpose; pick a quota that slows guessing without making that cheap
    /// (e.g. `100/h`: a secret of 128 random bits is out of reach either way), and no
    /// [progressive lockout](Self::progressive_lockout) applies to ids.
    ///
    /// This crate's own API-key format carries no id (the key is looked up by its digest),
    /// so the extractor is yours, for credentials that do carry one.
    ///
    /// ```
    /// use tower_api_guard::auth::BruteForceGuardLayer;
    /// use tower_api_guard::rate_limit::Quota;
    ///
    /// // Keys presented as `X-Key-Id: <id>` and `X-Key-Secret: <secret>`.
    /// let guard = BruteForceGuardLayer::new(Quota::parse("20/min").unwrap()).credential_id(
    ///     Quota::parse("100/h").unwrap(),
    ///     |head| Some(head.headers.get("x-key-id")?.to_str().ok()?.to_owned()),
    /// );
    /// # let _ = guard;
    /// ```
    pub fn credential_id<F>(mut self, failures: Quota, id: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<String> + Send + Sync + 'static,
    {
        self.settings().credential = Some(CredentialIds {
            quota: [failures],
            id: Arc::new(id),
            store: MemoryStore::new(100_000),
        });
        self
    }

    /// Keep the counters and the lockouts in Redis (feature `redis`), so that replicas
    /// share them: one failure quota per address for all of them. Takes a
    /// [`RedisFailures`] (prefix, time limit, failure policy) or a
    /// [`RedisConnection`](crate::RedisConnection) (with the defaults). Each request with
    /// a client address or a credential id then asks Redis (the in-process fast path is
    /// off); see [`RedisFailures`].
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, store: impl Into<RedisFailures>) -> Self {
        self.settings().shared = Some(store.into());
        self
    }
}

impl<S> BruteForceGuard<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, failures: Quota) -> Self {
        tower_layer::Layer::layer(&BruteForceGuardLayer::new(failures), inner)
    }

    /// A layer; same as [`BruteForceGuardLayer::new`].
    pub fn layer(failures: Quota) -> BruteForceGuardLayer {
        BruteForceGuardLayer::new(failures)
    }
}

/// A counted request: its client address and credential id, to record a failure against
/// when it fails.
pub struct Counted {
    client: Option<IpAddr>,
    id: Option<String>,
    settings: Arc<Settings>,
}

/// Whether `response` is a failed authentication.
fn failed<R>(response: &Response<R>) -> bool {
    // A bad DPoP proof is a failed attempt too (it cost a signature check); a request
    // told to use the server's nonce is a normal step of DPoP, not a failure.
    response.extensions().get::<AuthError>().is_some_and(|e| {
        matches!(
            e.kind(),
            AuthErrorKind::InvalidToken
                | AuthErrorKind::InvalidRequest
                | AuthErrorKind::InvalidDpopProof
        )
    })
}

fn refuse(retry: Duration, reason: &'static str) -> AuthError {
    AuthError::rate_limited(retry.max(Duration::from_millis(1)))
        .with_reason(reason)
        .with_code(crate::error::ReasonCode::LockedOut)
}

impl Check for CountFailures {
    type Ticket = Option<Counted>;
    #[cfg(feature = "redis")]
    type Wait = remote::Asking;
    #[cfg(not(feature = "redis"))]
    type Wait = crate::gate::NeverWaits;
    const LAYER: LayerKind = LayerKind::BruteForce;

    fn check<B>(&self, request: &mut Request<B>) -> Step<Option<Counted>, Self::Wait> {
        let s = &*self.settings;
        let client = s
            .client
            .peer(request.extensions())
            .map(|peer| s.client.resolve(peer, request.headers()));
        if let Some(client) = client {
            crate::audit::note_client(request, client);
        }
        let id = s
            .credential
            .as_ref()
            .and_then(|c| (c.id)(&RequestHead::of(request)))
            .map(bounded_id);
        if client.is_none() && id.is_none() {
            return Step::Allow(None);
        }
        let counted = Counted {
            client,
            id,
            settings: self.settings.clone(),
        };
        #[cfg(feature = "redis")]
        if let Some(store) = &s.shared {
            return Step::Wait(remote::ask(store.clone(), counted));
        }
        let now = s.clock.now();
        // No failure anywhere lately (the usual case): nobody can be over the quota.
        if !s.quiet(now)
            && let Some((retry, reason)) =
                s.refused_in_memory(counted.client, counted.id.as_deref(), now)
        {
            return Step::Deny(refuse(retry, reason).into());
        }
        Step::Allow(Some(counted))
    }

    #[cfg(feature = "redis")]
    fn resume<B>(&self, asked: remote::Asked, _: &mut Request<B>) -> Verdict<Self::Ticket> {
        remote::verdict(asked)
    }

    #[cfg(not(feature = "redis"))]
    fn resume<B>(
        &self,
        never: std::convert::Infallible,
        _: &mut Request<B>,
    ) -> Verdict<Self::Ticket> {
        match never {}
    }

    fn finish<R>(ticket: Option<Counted>, response: &mut Response<R>) {
        if failed(response)
            && let Some(Counted {
                client,
                id,
                settings,
            }) = ticket
        {
            settings.record_in_memory(client, id.as_deref());
        }
    }

    fn finish_later<R>(ticket: Option<Counted>, response: &mut Response<R>) -> Option<Finishing> {
        #[cfg(feature = "redis")]
        if ticket.as_ref().is_some_and(|c| c.settings.shared.is_some()) {
            return ticket.filter(|_| failed(response)).map(remote::record);
        }
        Self::finish(ticket, response);
        None
    }
}

/// The shared mode's calls to Redis, and what they decide.
#[cfg(feature = "redis")]
mod remote {
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use super::shared::{Limit, LockoutRule};
    use super::{Counted, FOR_ID, FROM_CLIENT, RedisFailures, Settings, nanos, refuse};
    use crate::client::KeyBuf;
    use crate::error::{AuthError, FailurePolicy};
    use crate::gate::{Finishing, Verdict};
    use crate::rate_limit::Quota;

    /// The wait of a request's check in Redis.
    pub type Asking = Pin<Box<dyn Future<Output = Asked> + Send>>;

    /// What Redis said about a request's address and credential id (`Ok(None)`: it may
    /// try, or nothing to ask).
    pub struct Asked {
        counted: Counted,
        client: Result<Option<Duration>, &'static str>,
        id: Result<Option<Duration>, &'static str>,
        policy: FailurePolicy,
    }

    fn limit(quota: &Quota) -> Limit {
        Limit {
            interval_us: quota.emission_us(),
            burst: quota.burst(),
        }
    }

    fn micros(d: Duration) -> u64 {
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
    }

    /// The Redis subjects of a request: `ip:…` and `id:…`.
    fn subjects(s: &Settings, counted: &Counted) -> (Option<String>, Option<String>) {
        let client = counted
            .client
            .map(|ip| s.client.key_in(ip, &mut KeyBuf::default()).to_owned());
        let id = counted.id.as_ref().map(|id| format!("id:{id}"));
        (client, id)
    }

    /// Ask whether the request's address and id may try (both at once).
    pub(super) fn ask(store: RedisFailures, counted: Counted) -> Asking {
        Box::pin(async move {
            let s = &*counted.settings;
            let now = u64::try_from(nanos(s.clock.now()) / 1_000).unwrap_or(u64::MAX);
            let (client, id) = subjects(s, &counted);
            let by_client = async {
                match &client {
                    Some(key) => store.check(key, limit(&s.quota[0]), now).await,
                    None => Ok(None),
                }
            };
            let by_id = async {
                match (&id, &s.credential) {
                    (Some(key), Some(ids)) => store.check(key, limit(&ids.quota[0]), now).await,
                    _ => Ok(None),
                }
            };
            let (client, id) = futures_util::future::join(by_client, by_id).await;
            Asked {
                counted,
                client,
                id,
                policy: store.policy(),
            }
        })
    }

    /// Refuse a client or id that is over, else follow the failure policy on an error.
    pub(super) fn verdict(asked: Asked) -> Verdict<Option<Counted>> {
        let Asked {
            counted,
            client,
            id,
            policy,
        } = asked;
        if let Ok(Some(retry)) = client {
            return Verdict::Deny(refuse(retry, FROM_CLIENT).into());
        }
        if let Ok(Some(retry)) = id {
            return Verdict::Deny(refuse(retry, FOR_ID).into());
        }
        let ((Err(reason), _) | (_, Err(reason))) = (client, id) else {
            return Verdict::Allow(Some(counted));
        };
        tracing::warn!(
            target: "tower_api_guard::auth",
            reason,
            ?policy,
            "brute-force store failed"
        );
        crate::metrics::store_failed(
            crate::gate::LayerKind::BruteForce,
            crate::metrics::Store::Redis,
            policy,
        );
        match policy {
            FailurePolicy::Closed => Verdict::Deny(
                AuthError::unavailable(
                    format!("brute-force store unavailable: {reason}"),
                    Duration::from_secs(1),
                )
                .into(),
            ),
            // Still counted: a failure is recorded if Redis answers by then.
            FailurePolicy::Open => Verdict::Allow(Some(counted)),
        }
    }

    /// Record a failure of the request's address (locking it out when it goes over) and
    /// id, both at once; errors are logged.
    pub(super) fn record(counted: Counted) -> Finishing {
        Box::pin(async move {
            let s = &*counted.settings;
            let Some(store) = &s.shared else { return };
            let now = u64::try_from(nanos(s.clock.now()) / 1_000).unwrap_or(u64::MAX);
            let (client, id) = subjects(s, &counted);
            let rule = s.lockouts.as_ref().map(|l| LockoutRule {
                base_us: micros(l.base).max(1),
                cap_us: micros(l.cap).max(1),
                quiet_us: micros(l.quiet),
            });
            let by_client = async {
                let Some(key) = &client else { return };
                match store.record(key, limit(&s.quota[0]), rule, now).await {
                    Ok(recorded) => {
                        if let (Some(level), Some(lockout)) = (recorded.level, recorded.wait) {
                            super::locked_out(lockout, level, true);
                        }
                    }
                    Err(reason) => failed_record(reason),
                }
            };
            let by_id = async {
                let (Some(key), Some(ids)) = (&id, &s.credential) else {
                    return;
                };
                if let Err(reason) = store.record(key, limit(&ids.quota[0]), None, now).await {
                    failed_record(reason);
                }
            };
            futures_util::future::join(by_client, by_id).await;
        })
    }

    fn failed_record(reason: &'static str) {
        tracing::warn!(
            target: "tower_api_guard::auth",
            reason,
            "brute-force store failed to record a failed authentication"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::ready;
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    use http::StatusCode;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::clock::ManualClock;

    /// A guard over an inner service that fails authentication when asked (`x-fail`).
    async fn send(layer: &BruteForceGuardLayer, from: Option<&str>, fail: bool) -> StatusCode {
        send_failing(layer, from, fail.then(|| AuthError::invalid_token("bad"))).await
    }

    /// A guard over an inner service that rejects with `error`, if any.
    async fn send_failing(
        layer: &BruteForceGuardLayer,
        from: Option<&str>,
        error: Option<AuthError>,
    ) -> StatusCode {
        let fail = error.is_some();
        let inner = service_fn(move |req: Request<()>| {
            let mut response = Response::new(String::new());
            if req.headers().contains_key("x-fail")
                && let Some(error) = error.clone()
            {
                *response.status_mut() = error.status();
                response.extensions_mut().insert(error);
            }
            ready(Ok::<_, Infallible>(response))
        });
        let mut request = Request::get("/");
        if fail {
            request = request.header("x-fail", "1");
        }
        let mut request = request.body(()).unwrap();
        if let Some(from) = from {
            request
                .extensions_mut()
                .insert(from.parse::<SocketAddr>().unwrap());
        }
        let svc = tower_layer::Layer::layer(layer, inner);
        svc.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn failures_are_counted_per_address_and_lock_it_out_until_the_window_passes() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let layer = BruteForceGuardLayer::new(Quota::parse("2/min").unwrap()).clock(clock.clone());
        let attacker = Some("198.51.100.7:40000");
        // Successes are never counted.
        for _ in 0..5 {
            assert_eq!(send(&layer, attacker, false).await, StatusCode::OK);
        }
        for _ in 0..2 {
            assert_eq!(send(&layer, attacker, true).await, StatusCode::UNAUTHORIZED);
        }
        // Locked out, even with a good credential, before authentication runs.
        assert_eq!(
            send(&layer, attacker, false).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Another address, and a request without an address, are not affected.
        assert_eq!(
            send(&layer, Some("198.51.100.8:1"), false).await,
            StatusCode::OK
        );
        assert_eq!(send(&layer, None, true).await, StatusCode::UNAUTHORIZED);
        assert_eq!(send(&layer, None, false).await, StatusCode::OK);
        clock.advance(std::time::Duration::from_secs(60));
        assert_eq!(send(&layer, attacker, false).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_quiet_store_is_not_asked_but_a_failure_anywhere_makes_it_count_again() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = Arc::new(ManualClock::new(start));
        let layer = BruteForceGuardLayer::new(Quota::parse("1/min").unwrap()).clock(clock.clone());
        let settings = layer.check_ref().settings.clone();
        let from = Some("198.51.100.7:1");
        assert!(settings.quiet(clock.now()));
        assert_eq!(send(&layer, from, true).await, StatusCode::UNAUTHORIZED);
        assert!(!settings.quiet(clock.now()));
        assert_eq!(
            send(&layer, from, false).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Past the horizon (the burst at the quota's rate, plus a window) it is quiet again.
        clock.advance(Duration::from_secs(121));
        assert!(settings.quiet(clock.now()));
        assert_eq!(send(&layer, from, false).await, StatusCode::OK);
    }

    /// The `Retry-After` of a locked-out request, in seconds.
    async fn retry_after(layer: &BruteForceGuardLayer, from: Option<&str>) -> Option<u64> {
        let inner =
            service_fn(|_: Request<()>| ready(Ok::<_, Infallible>(Response::new(String::new()))));
        let mut request = Request::get("/").body(()).unwrap();
        request
            .extensions_mut()
            .insert(from.unwrap().parse::<SocketAddr>().unwrap());
        let response = tower_layer::Layer::layer(layer, inner)
            .oneshot(request)
            .await
            .unwrap();
        (response.status() == StatusCode::TOO_MANY_REQUESTS).then(|| {
            response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
    }

    #[tokio::test]
    async fn each_lockout_lasts_longer_up_to_the_cap_and_a_quiet_client_starts_over() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        ));
        let layer = BruteForceGuardLayer::new(Quota::parse("2/min").unwrap())
            .clock(clock.clone())
            .progressive_lockout(
                Duration::from_secs(60),
                Duration::from_secs(300),
                Duration::from_secs(3_600),
            );
        let attacker = Some("198.51.100.7:40000");
        let bystander = Some("198.51.100.8:1");
        // Lockouts of 60, 120, 240, then 300 s (the cap), 300 s.
        for expected in [60, 120, 240, 300, 300] {
            for _ in 0..2 {
                assert_eq!(send(&layer, attacker, true).await, StatusCode::UNAUTHORIZED);
            }
            assert_eq!(retry_after(&layer, attacker).await, Some(expected));
            // Still locked out a second before the end, even with a good credential.
            clock.advance(Duration::from_secs(expected - 1));
            assert_eq!(retry_after(&layer, attacker).await, Some(1));
            assert_eq!(retry_after(&layer, bystander).await, None);
            clock.advance(Duration::from_secs(1));
            assert_eq!(send(&layer, attacker, false).await, StatusCode::OK);
        }
        // Quiet for an hour after the last lockout: back to the base.
        clock.advance(Duration::from_secs(3_601));
        for _ in 0..2 {
            assert_eq!(send(&layer, attacker, true).await, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(retry_after(&layer, attacker).await, Some(60));
    }

    #[tokio::test]
    async fn a_bad_dpop_proof_counts_and_a_nonce_request_does_not() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let layer = BruteForceGuardLayer::new(Quota::parse("1/min").unwrap()).clock(clock);
        let from = Some("198.51.100.9:1");
        for _ in 0..3 {
            let nonce = Some(AuthError::use_dpop_nonce("no nonce"));
            assert_eq!(
                send_failing(&layer, from, nonce).await,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(send(&layer, from, false).await, StatusCode::OK);
        let proof = Some(AuthError::invalid_dpop_proof("bad signature"));
        assert_eq!(
            send_failing(&layer, from, proof).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&layer, from, false).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    /// A guard over an inner service that fails when asked (`x-fail`), for a request
    /// presenting `id` (`x-key-id`) from `from`.
    async fn send_id(
        layer: &BruteForceGuardLayer,
        from: Option<&str>,
        id: &str,
        fail: bool,
    ) -> StatusCode {
        let inner = service_fn(|req: Request<()>| {
            let mut response = Response::new(String::new());
            if req.headers().contains_key("x-fail") {
                let error = AuthError::invalid_token("bad");
                *response.status_mut() = error.status();
                response.extensions_mut().insert(error);
            }
            ready(Ok::<_, Infallible>(response))
        });
        let mut request = Request::get("/").header("x-key-id", id);
        if fail {
            request = request.header("x-fail", "1");
        }
        let mut request = request.body(()).unwrap();
        if let Some(from) = from {
            request
                .extensions_mut()
                .insert(from.parse::<SocketAddr>().unwrap());
        }
        let svc = tower_layer::Layer::layer(layer, inner);
        svc.oneshot(request).await.unwrap().status()
    }

    fn by_key_id(layer: BruteForceGuardLayer, quota: &str) -> BruteForceGuardLayer {
        layer.credential_id(Quota::parse(quota).unwrap(), |head| {
            Some(head.headers.get("x-key-id")?.to_str().ok()?.to_owned())
        })
    }

    #[tokio::test]
    async fn an_id_failing_from_many_addresses_is_refused_from_every_address() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        ));
        let layer = by_key_id(
            BruteForceGuardLayer::new(Quota::parse("10/min").unwrap()).clock(clock.clone()),
            "3/h",
        );
        // One failure each from three addresses (each far under its own quota).
        for from in ["198.51.100.1:1", "198.51.100.2:1", "198.51.100.3:1"] {
            assert_eq!(
                send_id(&layer, Some(from), "key-1", true).await,
                StatusCode::UNAUTHORIZED
            );
        }
        // The id is refused from a fourth address, and without an address.
        assert_eq!(
            send_id(&layer, Some("203.0.113.9:1"), "key-1", false).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            send_id(&layer, None, "key-1", false).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Another id from the same addresses is not.
        assert_eq!(
            send_id(&layer, Some("198.51.100.1:1"), "key-2", false).await,
            StatusCode::OK
        );
        // An hour's worth of spacing lets one more attempt in (3/h: one every 20 min).
        clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(
            send_id(&layer, Some("203.0.113.9:1"), "key-1", false).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_request_with_an_id_and_no_address_is_counted_per_id() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let layer = by_key_id(
            BruteForceGuardLayer::new(Quota::parse("10/min").unwrap()).clock(clock),
            "1/h",
        );
        assert_eq!(
            send_id(&layer, None, "key-1", true).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send_id(&layer, Some("198.51.100.1:1"), "key-1", false).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn long_ids_are_cut_on_a_character_boundary() {
        assert_eq!(bounded_id("key".into()), "key");
        let long = "é".repeat(100); // 200 bytes
        let cut = bounded_id(long);
        assert!(cut.len() <= MAX_ID_LEN && cut.len() >= MAX_ID_LEN - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn a_failure_in_flight_during_a_lockout_does_not_raise_its_level() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        ));
        let layer = BruteForceGuardLayer::new(Quota::parse("2/min").unwrap())
            .clock(clock.clone())
            .progressive_lockout(
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(3_600),
            );
        let settings = layer.check_ref().settings.clone();
        let attacker = Some("198.51.100.7:40000");
        let ip = Some("198.51.100.7".parse().unwrap());
        // The second failure puts the client over: locked out from that failure on.
        settings.record_in_memory(ip, None);
        assert_eq!(retry_after(&layer, attacker).await, None);
        settings.record_in_memory(ip, None);
        assert_eq!(retry_after(&layer, attacker).await, Some(60));
        // Failures that passed the check before the lockout and fail during it.
        settings.record_in_memory(ip, None);
        settings.record_in_memory(ip, None);
        assert_eq!(retry_after(&layer, attacker).await, Some(60));
        clock.advance(Duration::from_secs(60));
        assert_eq!(retry_after(&layer, attacker).await, None);
        // The next lockout is the second one (120 s), not a fourth.
        for _ in 0..2 {
            assert_eq!(send(&layer, attacker, true).await, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(retry_after(&layer, attacker).await, Some(120));
    }
}
