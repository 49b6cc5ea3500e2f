//! The held key set: the snapshot read lock-free by every request, refresh (one at a
//! time, shared by every waiter), the unknown-`kid` cooldown and negative cache, backoff
//! with jitter after failures, staleness, and [`KeySourceStatus`].

use std::borrow::Cow;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::Shared;

use super::discovery::jwks_url;
use super::fetch::{FetchResponse, fetch};
use super::{Inner, JwksMetrics, RemoteJwks};
use crate::error::AuthError;
use crate::jwt::keys::{KeySet, KeySetFuture, KeySource};

/// The held state, replaced whole on every change.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) keys: Option<Arc<KeySet>>,
    pub(super) etag: Option<String>,
    pub(super) last_success: Option<SystemTime>,
    /// Keys are fresh until then.
    pub(super) expires_at: Option<SystemTime>,
    /// The next refresh may start then (80 % of the TTL, or the backoff after a failure).
    pub(super) refresh_at: SystemTime,
    pub(super) failures: u32,
    pub(super) last_error: Option<Cow<'static, str>>,
    pub(super) attempted: bool,
}

/// The state of a key source, for a readiness endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySourceStatus {
    /// Number of usable keys held.
    pub keys: usize,
    /// When the set was last fetched successfully.
    pub last_success: Option<SystemTime>,
    /// The last fetch error, if the last fetch failed.
    pub last_error: Option<String>,
    /// Whether the held keys are past their TTL (still served up to `max_stale`).
    pub stale: bool,
    /// Whether tokens can be verified now.
    pub usable: bool,
}

impl KeySourceStatus {
    /// The status of keys that never change (static keys).
    pub fn fixed(keys: usize) -> Self {
        Self {
            keys,
            last_success: None,
            last_error: None,
            stale: false,
            usable: keys > 0,
        }
    }
}

pub(super) type SharedRefresh =
    Shared<Pin<Box<dyn Future<Output = Result<Arc<KeySet>, AuthError>> + Send>>>;

impl RemoteJwks {
    /// Fetch the key set now if none is held, and wait for it (at most the fetch timeout).
    ///
    /// # Errors
    /// [`AuthError::unavailable`] when the fetch fails.
    pub async fn ready(&self) -> Result<(), AuthError> {
        if self.inner.state.load().keys.is_some() {
            return Ok(());
        }
        self.refresh().await.map(|_| ())
    }

    /// Refresh now (joining a refresh already running), bounded by the fetch timeout.
    ///
    /// # Errors
    /// [`AuthError::unavailable`] when the fetch fails; the held keys stay in place.
    pub async fn refresh(&self) -> Result<Arc<KeySet>, AuthError> {
        let refresh = self.shared_refresh();
        match tokio::time::timeout(self.inner.settings.fetch_timeout, refresh).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(&self.inner, "key set fetch timed out")),
        }
    }

    /// The state, for a readiness endpoint (same as [`KeySource::status`]).
    pub fn status(&self) -> KeySourceStatus {
        let snap = self.inner.state.load();
        let now = self.inner.clock.now();
        self.inner.metrics.observe(&snap, now);
        KeySourceStatus {
            keys: key_count(&snap),
            last_success: snap.last_success,
            last_error: snap.last_error.as_ref().map(|e| e.to_string()),
            stale: stale(&snap, now),
            usable: usable(&self.inner, &snap, now),
        }
    }

    /// The single in-flight refresh, started if none is running.
    fn shared_refresh(&self) -> SharedRefresh {
        let mut slot = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(running) = slot.as_ref() {
            return running.clone();
        }
        let inner = self.inner.clone();
        let fut: Pin<Box<dyn Future<Output = Result<Arc<KeySet>, AuthError>> + Send>> =
            Box::pin(async move {
                let result = refresh_once(&inner).await;
                *inner.inflight.lock().unwrap_or_else(|e| e.into_inner()) = None;
                result
            });
        let shared = fut.shared();
        *slot = Some(shared.clone());
        // A task drives the refresh to its end, so that it completes (and frees the slot)
        // even when every waiter gives up at its timeout.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let driver = shared.clone();
            handle.spawn(async move {
                let _ = driver.await;
            });
        }
        shared
    }

    /// Start a refresh in the background (a no-op while one runs).
    fn spawn_refresh(&self) {
        drop(self.shared_refresh());
    }
}

fn unavailable(inner: &Inner, reason: &'static str) -> AuthError {
    let snap = inner.state.load();
    let retry = snap
        .refresh_at
        .duration_since(inner.clock.now())
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1));
    AuthError::unavailable(reason, retry)
}

fn key_count(snap: &Snapshot) -> usize {
    snap.keys.as_ref().map_or(0, |k| k.len())
}

/// Past the TTL ([`KeySourceStatus::stale`]).
fn stale(snap: &Snapshot, now: SystemTime) -> bool {
    snap.expires_at.is_some_and(|at| now >= at)
}

impl JwksMetrics {
    /// One fetch attempt ended.
    fn refreshed(&self, ok: bool) {
        match ok {
            true => self.refresh_ok.increment(),
            false => self.refresh_error.increment(),
        }
    }

    /// The gauges, from the state held at `now` (at every refresh attempt and status
    /// read, neither on the request path).
    fn observe(&self, snap: &Snapshot, now: SystemTime) {
        self.keys.set(key_count(snap) as f64);
        self.stale.set(if stale(snap, now) { 1.0 } else { 0.0 });
        if let Some(at) = snap.last_success {
            // A clock that went back reads as age 0.
            let age = now.duration_since(at).unwrap_or(Duration::ZERO);
            self.age.set(age.as_secs_f64());
            if let Ok(unix) = at.duration_since(std::time::UNIX_EPOCH) {
                self.last_success.set(unix.as_secs_f64());
            }
        }
    }
}

fn usable(inner: &Inner, snap: &Snapshot, now: SystemTime) -> bool {
    match (&snap.keys, snap.expires_at) {
        (Some(_), Some(expires)) => now < expires + inner.settings.max_stale,
        _ => false,
    }
}

impl KeySource for RemoteJwks {
    fn status(&self) -> KeySourceStatus {
        RemoteJwks::status(self)
    }

    fn current(&self) -> Result<Arc<KeySet>, AuthError> {
        let snap = self.inner.state.load();
        let now = self.inner.clock.now();
        if now >= snap.refresh_at && self.inner.inflight.lock().map_or(true, |s| s.is_none()) {
            self.spawn_refresh();
        }
        match &snap.keys {
            Some(keys) if usable(&self.inner, &snap, now) => Ok(keys.clone()),
            Some(_) => Err(unavailable(&self.inner, "key set older than max-stale")),
            // Never fetched (lazy mode): an empty set sends every token to the refresh path,
            // which waits for the first fetch.
            None if !snap.attempted => Ok(Arc::new(KeySet::default())),
            None => Err(unavailable(&self.inner, "no key set could be fetched")),
        }
    }

    fn refresh_for_unknown_kid(&self, kid: &str) -> Option<KeySetFuture> {
        let inner = &self.inner;
        let first_fetch = !inner.state.load().attempted;
        if !first_fetch {
            let now = inner.clock.now();
            if inner
                .unknown_kids
                .get(kid)
                .is_some_and(|seen| now < seen + inner.settings.cooldown)
            {
                crate::metrics::unknown_kid(false);
                return None;
            }
            let mut last = inner
                .last_unknown_kid_refresh
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| now < at + inner.settings.cooldown) {
                inner.unknown_kids.insert(kid.to_owned(), now);
                tracing::debug!(
                    target: "tower_api_guard::jwks",
                    "unknown kid during the refetch cooldown"
                );
                crate::metrics::unknown_kid(false);
                return None;
            }
            *last = Some(now);
            // (The first fetch of a lazy set is no refetch: not counted.)
            crate::metrics::unknown_kid(true);
        }
        let this = self.clone();
        let kid = kid.to_owned();
        Some(Box::pin(async move {
            let set = this.refresh().await?;
            if set.get(&kid).is_none() {
                let now = this.inner.clock.now();
                this.inner.unknown_kids.insert(kid, now);
            }
            Ok(set)
        }))
    }
}

fn kids(set: &KeySet) -> Vec<&str> {
    let mut kids: Vec<&str> = set.keys().iter().filter_map(|k| k.kid()).collect();
    kids.sort_unstable();
    kids
}

/// One fetch attempt, its state update, and its metrics.
async fn refresh_once(inner: &Inner) -> Result<Arc<KeySet>, AuthError> {
    let result = fetch_and_store(inner).await;
    inner.metrics.refreshed(result.is_ok());
    inner
        .metrics
        .observe(&inner.state.load(), inner.clock.now());
    result
}

/// One fetch, and the state update that follows it.
async fn fetch_and_store(inner: &Inner) -> Result<Arc<KeySet>, AuthError> {
    let before = inner.state.load_full();
    let outcome = match jwks_url(inner).await {
        Ok(url) => {
            let etag = before.keys.as_ref().and(before.etag.clone());
            fetch(inner, url, etag).await
        }
        Err(e) => Err(e),
    };
    let now = inner.clock.now();
    let s = &inner.settings;
    let ttl_of =
        |max_age: Option<Duration>| max_age.unwrap_or(s.default_ttl).clamp(s.min_ttl, s.max_ttl);
    let failure: Cow<'static, str> = match outcome {
        Ok(FetchResponse::Modified {
            body,
            etag,
            max_age,
        }) => match KeySet::from_jwks_json(&body) {
            Ok(set) if !set.is_empty() => {
                let ttl = ttl_of(max_age);
                let set = Arc::new(set);
                let old_kids = before.keys.as_deref().map(kids).unwrap_or_default();
                let new_kids = kids(&set);
                if before.failures > 0 || before.keys.is_none() {
                    tracing::info!(target: "tower_api_guard::jwks", keys = set.len(), ttl_secs = ttl.as_secs(), "key set fetched");
                } else if old_kids != new_kids {
                    tracing::info!(target: "tower_api_guard::jwks", keys = set.len(), ?old_kids, ?new_kids, "key set rotated");
                } else {
                    tracing::debug!(target: "tower_api_guard::jwks", keys = set.len(), "key set refreshed");
                }
                inner.state.store(Arc::new(Snapshot {
                    keys: Some(set.clone()),
                    etag,
                    last_success: Some(now),
                    expires_at: Some(now + ttl),
                    refresh_at: now + ttl.mul_f64(0.8),
                    failures: 0,
                    last_error: None,
                    attempted: true,
                }));
                inner.unknown_kids.invalidate_all();
                return Ok(set);
            }
            Ok(_) => "key set holds no usable key".into(),
            Err(_) => "key set document does not parse".into(),
        },
        Ok(FetchResponse::NotModified { max_age }) => match &before.keys {
            Some(keys) => {
                let ttl = ttl_of(max_age);
                tracing::debug!(target: "tower_api_guard::jwks", "key set not modified");
                inner.state.store(Arc::new(Snapshot {
                    last_success: Some(now),
                    expires_at: Some(now + ttl),
                    refresh_at: now + ttl.mul_f64(0.8),
                    failures: 0,
                    last_error: None,
                    attempted: true,
                    ..(*before).clone()
                }));
                return Ok(keys.clone());
            }
            None => "304 without a held key set".into(),
        },
        Err(e) => e.reason,
    };
    let failures = before.failures.saturating_add(1);
    let backoff = s
        .backoff_base
        .saturating_mul(1u32 << failures.min(16).saturating_sub(1))
        .min(s.backoff_max);
    // Jitter: between half and all of the backoff.
    let frac = (inner.jitter.hash_one(now) % 1000) as f64 / 2000.0 + 0.5;
    let retry_in = backoff.mul_f64(frac);
    if before.failures == 0 && before.keys.is_some() {
        tracing::warn!(target: "tower_api_guard::jwks", reason = %failure, retry_in_ms = retry_in.as_millis() as u64, "key set fetch failed; keeping the last good keys");
    } else if before.failures == 0 {
        tracing::warn!(target: "tower_api_guard::jwks", reason = %failure, retry_in_ms = retry_in.as_millis() as u64, "key set fetch failed; no key set held");
    } else {
        tracing::debug!(target: "tower_api_guard::jwks", reason = %failure, failures, "key set fetch failed again");
    }
    inner.state.store(Arc::new(Snapshot {
        refresh_at: now + retry_in,
        failures,
        last_error: Some(failure),
        attempted: true,
        ..(*before).clone()
    }));
    Err(unavailable(inner, "key set fetch failed"))
}
