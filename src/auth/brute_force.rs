//! [`BruteForceGuardLayer`]: answers 429 to clients that keep failing authentication,
//! before any signature check.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response};

use crate::client::KeyBuf;
use crate::clock::{Clock, MonotonicClock};
use crate::error::{AuthError, AuthErrorKind};
use crate::gate::{Check, Gate, GateLayer, LayerKind, NeverWaits, Step, Verdict};
use crate::rate_limit::{ClientAddr, MemoryStore, Quota};

/// A brute-force guard, placed **before** authentication (feature `rate-limit`): it counts
/// failed authentications per client address (it reads the [`AuthError`] on the rejection
/// response: `invalid_token` and `invalid_request`, for JWTs and API keys alike) and, once a
/// client is over its failure quota (e.g. `20/min`), answers `429` with `Retry-After` at
/// once, so nobody can burn the server's CPU on signature checks.
///
/// Requests whose client address cannot be found (no `ConnectInfo` or `SocketAddr` in the
/// request's extensions) are not counted.
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
/// and starts again from the base once the client has stayed quiet for a while.
pub type BruteForceGuardLayer = GateLayer<CountFailures>;

/// The service made by [`BruteForceGuardLayer`].
pub type BruteForceGuard<S> = Gate<CountFailures, S>;

/// The check of [`BruteForceGuardLayer`].
#[derive(Clone)]
pub struct CountFailures {
    settings: Arc<Settings>,
}

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

    /// `key` went over the quota: lock it out (longer than last time unless it stayed
    /// quiet), at least for `wait`, the quota's own wait. Returns the lockout.
    fn start(&self, key: &str, now: u128, wait: Duration) -> Duration {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let quiet = self.quiet.as_nanos();
        let level = match table.get(key) {
            Some(last) if now.saturating_sub(last.until) <= quiet => last.level.saturating_add(1),
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
                return wait;
            }
        }
        let until = now + lockout.as_nanos();
        table.insert(key.to_owned(), Locked { level, until });
        let until = u64::try_from(until).unwrap_or(u64::MAX);
        self.until_max.fetch_max(until, Ordering::Relaxed);
        tracing::warn!(
            target: "tower_api_guard::auth",
            lockout_secs = lockout.as_secs(),
            level,
            "client locked out after too many failed authentications"
        );
        lockout
    }
}

fn nanos_to_duration(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

impl Settings {
    /// How long a failure can keep an address from a fresh state: the burst, spaced at
    /// the quota's rate, and a window more.
    fn horizon_ns(&self) -> u128 {
        let quota = &self.quota[0];
        let per_request = quota.window().as_nanos() / u128::from(quota.limit().max(1));
        per_request * u128::from(quota.burst()) + quota.window().as_nanos()
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
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

impl fmt::Debug for CountFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountFailures")
            .field("quota", &self.settings.quota[0])
            .finish_non_exhaustive()
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

    /// The store (default: in process, at most 100,000 addresses).
    pub fn store(mut self, store: MemoryStore) -> Self {
        self.settings().store = store;
        self
    }

    /// The clock: [`MonotonicClock`] by default; a `ManualClock` in tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings().clock = clock;
        self
    }

    /// Progressive lockout: a client that goes over the quota is refused (`429`, with
    /// `Retry-After`) for `base`, and each further lockout lasts twice the one before, up to
    /// `cap`; a client that stays quiet for `quiet` after its last lockout ended starts again
    /// from `base`. A lockout never ends before the quota itself would let the client in.
    /// Up to 100,000 addresses are remembered.
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

/// A counted request: its client address, to record a failure against when it fails.
pub struct Counted {
    client: std::net::IpAddr,
    settings: Arc<Settings>,
}

impl Check for CountFailures {
    type Ticket = Option<Counted>;
    type Wait = NeverWaits;
    const LAYER: LayerKind = LayerKind::BruteForce;

    fn check<B>(&self, request: &mut Request<B>) -> Step<Option<Counted>, NeverWaits> {
        let s = &*self.settings;
        let Some(peer) = s.client.peer(request.extensions()) else {
            return Step::Allow(None);
        };
        let client = s.client.resolve(peer, request.headers());
        let now = s.clock.now();
        // No failure anywhere lately (the usual case): nobody can be over the quota.
        if s.quiet(now) {
            return Step::Allow(Some(Counted {
                client,
                settings: self.settings.clone(),
            }));
        }
        let mut key = KeyBuf::default();
        let key = s.client.key_in(client, &mut key);
        let locked = s.lockouts.as_ref().and_then(|l| l.active(key, nanos(now)));
        let retry = locked.or_else(|| {
            let wait = s.store.peek(key, &s.quota, 1, now).retry_after()?;
            Some(match &s.lockouts {
                Some(lockouts) => lockouts.start(key, nanos(now), wait),
                None => wait,
            })
        });
        if let Some(retry) = retry {
            let error = AuthError::rate_limited(retry)
                .with_reason("too many failed authentications from this client");
            return Step::Deny(error.into());
        }
        Step::Allow(Some(Counted {
            client,
            settings: self.settings.clone(),
        }))
    }

    fn resume<B>(
        &self,
        never: std::convert::Infallible,
        _: &mut Request<B>,
    ) -> Verdict<Self::Ticket> {
        match never {}
    }

    fn finish<R>(ticket: Option<Counted>, response: &mut Response<R>) {
        // A bad DPoP proof is a failed attempt too (it cost a signature check); a request
        // told to use the server's nonce is a normal step of DPoP, not a failure.
        let failed = response.extensions().get::<AuthError>().is_some_and(|e| {
            matches!(
                e.kind(),
                AuthErrorKind::InvalidToken
                    | AuthErrorKind::InvalidRequest
                    | AuthErrorKind::InvalidDpopProof
            )
        });
        if failed && let Some(Counted { client, settings }) = ticket {
            let mut key = KeyBuf::default();
            let key = settings.client.key_in(client, &mut key);
            let now = settings.clock.now();
            settings.store.check(key, &settings.quota, 1, now);
            let at = u64::try_from(nanos(now)).unwrap_or(u64::MAX).max(1);
            settings.last_failure.fetch_max(at, Ordering::Relaxed);
        }
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
}
