//! The `jti` replay cache of DPoP proofs (RFC 9449 §11.1): [`ReplayCache`],
//! [`MemoryReplayCache`] and (feature `redis`) `RedisReplayCache`.
//!
//! A DPoP proof's `jti` must not have been seen before inside the window in which the
//! proof is accepted. The caller remembers each proof under a 32-byte key, SHA-256 over the
//! proof key's thumbprint followed by the `jti`, for as long as the proof could still be
//! accepted: keys are fixed-size, and the attacker's text never reaches the cache (or
//! Redis). [`insert`](ReplayCache::insert) is atomic: of two concurrent inserts of one key,
//! exactly one is [`Fresh`](ReplayAnswer::Fresh).
//!
//! * [`MemoryReplayCache`] is bounded and in-process, for one replica. It never evicts an
//!   unexpired entry (that would let a replay through): when it is full of unexpired
//!   entries it answers [`Failed`](ReplayAnswer::Failed), and the caller applies its
//!   [`FailurePolicy`](crate::FailurePolicy).
//! * `RedisReplayCache` shares the cache between replicas: one `SET … NX PX` per proof.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use tower_api_guard::jwt::{MemoryReplayCache, ReplayAnswer, ReplayCache};
//!
//! let cache = MemoryReplayCache::new(NonZeroUsize::new(100_000).unwrap());
//! // In the DPoP check: SHA-256(thumbprint ‖ jti).
//! let key = [7u8; 32];
//! let window = Duration::from_secs(300);
//! assert!(matches!(cache.insert(&key, window), ReplayAnswer::Fresh));
//! assert!(matches!(cache.insert(&key, window), ReplayAnswer::Replayed));
//! assert_eq!(cache.len(), 1);
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::Cause;

/// Why a replay cache could not answer (full, unreachable, timed out). The reason is for
/// logs; the [`source`](std::error::Error::source), when there is one, is the underlying
/// error (a Redis error), kept for diagnosis. Never holds key bytes.
#[derive(Clone)]
pub struct ReplayError {
    reason: Cow<'static, str>,
    source: Cause,
}

impl ReplayError {
    /// A failure with a reason (never containing keys or proofs).
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
            source: Cause::default(),
        }
    }

    /// Attach the underlying error, for diagnosis; it must not carry a secret (no key, no
    /// URL with credentials).
    /// [`source`](std::error::Error::source) returns it.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Cause::new(source);
        self
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replay cache failed: {}", self.reason)
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.get()
    }
}

impl fmt::Debug for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.debug(f, "ReplayError", &self.reason)
    }
}

/// The future of a [`ReplayCache`] that has to wait (Redis): `Ok(true)` when the key is
/// fresh, `Ok(false)` when it was seen before.
pub type ReplayFuture = Pin<Box<dyn Future<Output = Result<bool, ReplayError>> + Send>>;

/// The answer of a [`ReplayCache`].
#[must_use = "a replayed proof must be rejected"]
pub enum ReplayAnswer {
    /// The key was not seen inside its window: it is remembered now, accept the proof.
    Fresh,
    /// The key was seen before and has not expired: a replay, reject the proof.
    Replayed,
    /// The cache could not answer; the caller applies its failure policy.
    Failed(ReplayError),
    /// The answer needs a round trip: `Ok(true)` is fresh, `Ok(false)` replayed.
    Wait(ReplayFuture),
}

impl fmt::Debug for ReplayAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fresh => f.write_str("Fresh"),
            Self::Replayed => f.write_str("Replayed"),
            Self::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            Self::Wait(_) => f.write_str("Wait(..)"),
        }
    }
}

/// Where the keys of seen DPoP proofs live: [`MemoryReplayCache`] for one replica,
/// `RedisReplayCache` (feature `redis`) for several.
///
/// The key is SHA-256 over the proof key's JWK thumbprint followed by the proof's `jti`;
/// the `ttl` covers the time in which the proof could still be accepted (its `iat` window
/// plus leeway).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use tower_api_guard::jwt::{MemoryReplayCache, ReplayAnswer, ReplayCache, ReplayError};
///
/// /// Whether the proof is new; an `Err` goes to the failure policy.
/// async fn is_fresh(
///     cache: &dyn ReplayCache,
///     key: &[u8; 32],
///     window: Duration,
/// ) -> Result<bool, ReplayError> {
///     match cache.insert(key, window) {
///         ReplayAnswer::Fresh => Ok(true),
///         ReplayAnswer::Replayed => Ok(false),
///         ReplayAnswer::Failed(e) => Err(e),
///         ReplayAnswer::Wait(answer) => answer.await,
///     }
/// }
///
/// let cache = MemoryReplayCache::new(NonZeroUsize::new(100_000).unwrap());
/// let key = [7u8; 32]; // SHA-256(thumbprint ‖ jti), computed by the DPoP check
/// let window = Duration::from_secs(300);
/// assert!(is_fresh(&cache, &key, window).await.unwrap());
/// assert!(!is_fresh(&cache, &key, window).await.unwrap(), "a replay");
/// # });
/// ```
pub trait ReplayCache: Send + Sync + fmt::Debug + 'static {
    /// Remember `key` for `ttl`; whether it was new. Must be atomic: of two concurrent
    /// inserts of one key, exactly one is [`Fresh`](ReplayAnswer::Fresh).
    fn insert(&self, key: &[u8; 32], ttl: Duration) -> ReplayAnswer;
}

/// The shortest time a key is remembered, also for a zero `ttl` (Redis's `PX` needs ≥ 1).
const MIN_TTL: Duration = Duration::from_millis(1);

/// How many shards a [`MemoryReplayCache`] has at most.
const SHARDS: usize = 16;

/// A full shard sweeps its expired entries at most this often (seconds).
const SWEEP_INTERVAL: f64 = 1.0;

type Seeded = foldhash::fast::RandomState;

#[derive(Debug)]
struct Shard {
    /// The first 16 bytes of each key → its expiry, Unix seconds.
    entries: HashMap<u128, f64, Seeded>,
    capacity: usize,
    /// When the next sweep may run, Unix seconds.
    next_sweep: f64,
}

impl Shard {
    fn insert(&mut self, key: u128, now: f64, expires: f64) -> ReplayAnswer {
        let full = self.entries.len() >= self.capacity;
        match self.entries.entry(key) {
            Entry::Occupied(mut seen) => {
                if now < *seen.get() {
                    return ReplayAnswer::Replayed;
                }
                seen.insert(expires);
                return ReplayAnswer::Fresh;
            }
            Entry::Vacant(slot) if !full => {
                slot.insert(expires);
                return ReplayAnswer::Fresh;
            }
            Entry::Vacant(_) => {}
        }
        // Full: make room from expired entries, at most once per interval, so that a cache
        // full of unexpired entries does not scan on every insert.
        if now >= self.next_sweep {
            self.entries.retain(|_, expiry| now < *expiry);
            self.next_sweep = now + SWEEP_INTERVAL;
        }
        if self.entries.len() >= self.capacity {
            return ReplayAnswer::Failed(ReplayError::new("replay cache full"));
        }
        self.entries.insert(key, expires);
        ReplayAnswer::Fresh
    }
}

struct Shards {
    shards: Box<[Mutex<Shard>]>,
    /// Picks a key's shard; seeded, so that keys cannot be ground to fill one shard.
    pick: Seeded,
    capacity: usize,
}

/// A bounded in-process [`ReplayCache`], for one replica (use `RedisReplayCache` when the
/// API runs on several). Clones share the cache.
///
/// Up to 16 shards, each a mutex around a map from the key's first 16 bytes (SHA-256
/// output) to its expiry, with its share of the capacity. Expired entries are overwritten
/// in place; a full shard sweeps its expired entries, at most once per second. An
/// unexpired entry is never evicted: a shard still full after its sweep answers
/// [`Failed`](ReplayAnswer::Failed) (`"replay cache full"`). Keys spread over the shards
/// at random (a seeded hash picks the shard, so keys cannot be ground to fill one), and a
/// shard is full at its share: give the capacity some headroom over the proofs accepted in
/// one window (each entry takes about 32 bytes, plus the maps' slack). Always answers at
/// once, never [`Wait`](ReplayAnswer::Wait).
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tower_api_guard::clock::ManualClock;
/// use tower_api_guard::jwt::{MemoryReplayCache, ReplayAnswer, ReplayCache};
///
/// let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
/// let cache = MemoryReplayCache::new(NonZeroUsize::new(1).unwrap()).clock(clock.clone());
/// let window = Duration::from_secs(60);
/// assert!(matches!(cache.insert(&[1; 32], window), ReplayAnswer::Fresh));
/// assert!(matches!(cache.insert(&[1; 32], window), ReplayAnswer::Replayed));
/// // Full of unexpired keys: an error, never an eviction.
/// assert!(matches!(cache.insert(&[2; 32], window), ReplayAnswer::Failed(_)));
/// clock.advance(window);
/// assert!(matches!(cache.insert(&[2; 32], window), ReplayAnswer::Fresh));
/// ```
#[derive(Clone)]
pub struct MemoryReplayCache {
    inner: Arc<Shards>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayCache")
            .field("len", &self.len())
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl MemoryReplayCache {
    /// A cache holding at most `capacity` keys, on the system clock.
    pub fn new(capacity: NonZeroUsize) -> Self {
        let capacity = capacity.get();
        let count = capacity.min(SHARDS);
        let shards = (0..count)
            .map(|i| {
                // The shares add up to `capacity` exactly.
                let share = capacity / count + usize::from(i < capacity % count);
                Mutex::new(Shard {
                    entries: HashMap::with_hasher(Seeded::default()),
                    capacity: share,
                    next_sweep: f64::NEG_INFINITY,
                })
            })
            .collect();
        Self {
            inner: Arc::new(Shards {
                shards,
                pick: Seeded::default(),
                capacity,
            }),
            clock: Arc::new(SystemClock),
        }
    }

    /// Use this clock (tests).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many keys are held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayCache for MemoryReplayCache {
    fn insert(&self, key: &[u8; 32], ttl: Duration) -> ReplayAnswer {
        let short = u128::from_le_bytes(std::array::from_fn(|i| key[i]));
        let shards = &self.inner.shards;
        let index = (self.inner.pick.hash_one(short) % shards.len() as u64) as usize;
        let Some(shard) = shards.get(index) else {
            return ReplayAnswer::Failed(ReplayError::new("replay cache has no shard"));
        };
        let now = self.clock.now_unix();
        let expires = now + ttl.max(MIN_TTL).as_secs_f64();
        shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(short, now, expires)
    }
}

#[cfg(feature = "redis")]
pub use redis_cache::RedisReplayCache;

#[cfg(feature = "redis")]
mod redis_cache {
    use super::*;
    use crate::error::ConfigError;
    use crate::redis_conn::RedisConnection;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// The longest `PX` sent: Redis rejects an expiry that overflows when added to its clock.
    const MAX_TTL_MS: u64 = i64::MAX as u64 / 2;

    /// A [`ReplayCache`] in Redis, shared by every replica of the API: one round trip per
    /// proof, `SET <prefix><base64url(key)> 1 NX PX <ttl ms>`, atomic in Redis (`OK` is
    /// fresh, nil is a replay), bounded by a timeout (default 100 ms). A Redis error or a
    /// timeout is an `Err` of the [`Wait`](ReplayAnswer::Wait) future; the caller applies
    /// its [`FailurePolicy`](crate::FailurePolicy). Keys expire by themselves.
    #[derive(Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub struct RedisReplayCache {
        conn: RedisConnection,
        prefix: Arc<str>,
        timeout: Duration,
    }

    impl fmt::Debug for RedisReplayCache {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisReplayCache")
                .field("prefix", &self.prefix)
                .field("timeout", &self.timeout)
                .finish_non_exhaustive()
        }
    }

    impl RedisReplayCache {
        /// Connect to `url` (`redis://127.0.0.1:6379`, or a cluster:
        /// `redis+cluster://host:port,…`); keys are named
        /// `tag:dpop:jti:…` (change with [`prefix`](Self::prefix)).
        ///
        /// # Errors
        /// A malformed URL or a failed first connection.
        pub async fn connect(url: &str) -> Result<Self, ConfigError> {
            Ok(Self::from_connection(RedisConnection::connect(url).await?))
        }

        /// Use a connection you already have (a [`RedisConnection`], a
        /// `ConnectionManager` or a `ClusterConnection`).
        pub fn from_connection(conn: impl Into<RedisConnection>) -> Self {
            Self {
                conn: conn.into(),
                prefix: "tag:dpop:jti:".into(),
                timeout: Duration::from_millis(100),
            }
        }

        /// The key prefix (default `tag:dpop:jti:`), put before the key's base64url.
        #[must_use]
        pub fn prefix(mut self, prefix: &str) -> Self {
            self.prefix = prefix.into();
            self
        }

        /// The time limit of one insert (default 100 ms).
        #[must_use]
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = timeout;
            self
        }

        fn redis_key(&self, key: &[u8; 32]) -> String {
            let mut name = String::with_capacity(self.prefix.len() + 43);
            name.push_str(&self.prefix);
            URL_SAFE_NO_PAD.encode_string(key, &mut name);
            name
        }

        async fn bounded(
            timeout: Duration,
            f: impl Future<Output = redis::RedisResult<redis::Value>>,
        ) -> Result<bool, ReplayError> {
            match crate::redis_conn::within(timeout, crate::metrics::RedisOp::Replay, f).await {
                Ok(Ok(redis::Value::Okay)) => Ok(true),
                Ok(Ok(redis::Value::SimpleString(s))) if s == "OK" => Ok(true),
                Ok(Ok(redis::Value::Nil)) => Ok(false),
                Ok(Ok(_)) => Err(ReplayError::new("unexpected Redis reply")),
                Ok(Err(e)) => Err(ReplayError::new("Redis error").with_source(e)),
                Err(elapsed) => Err(ReplayError::new("Redis timed out").with_source(elapsed)),
            }
        }
    }

    impl ReplayCache for RedisReplayCache {
        fn insert(&self, key: &[u8; 32], ttl: Duration) -> ReplayAnswer {
            let mut conn = self.conn.clone();
            let millis = u64::try_from(ttl.max(MIN_TTL).as_millis())
                .unwrap_or(MAX_TTL_MS)
                .min(MAX_TTL_MS);
            let set = redis::cmd("SET")
                .arg(self.redis_key(key))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(millis)
                .to_owned();
            let timeout = self.timeout;
            ReplayAnswer::Wait(Box::pin(async move {
                Self::bounded(timeout, set.query_async(&mut conn)).await
            }))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::error::Error as _;

        #[tokio::test]
        async fn replies_errors_and_timeouts_are_told_apart() {
            let ok = |v: redis::Value| async move { Ok(v) };
            let t = Duration::from_secs(1);
            assert!(
                RedisReplayCache::bounded(t, ok(redis::Value::Okay))
                    .await
                    .unwrap()
            );
            let simple = redis::Value::SimpleString("OK".into());
            assert!(RedisReplayCache::bounded(t, ok(simple)).await.unwrap());
            assert!(
                !RedisReplayCache::bounded(t, ok(redis::Value::Nil))
                    .await
                    .unwrap()
            );
            let odd = RedisReplayCache::bounded(t, ok(redis::Value::Int(1)))
                .await
                .unwrap_err();
            assert_eq!(odd.reason(), "unexpected Redis reply");

            let failing = async {
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset",
                )))
            };
            let err = RedisReplayCache::bounded(t, failing).await.unwrap_err();
            assert_eq!(err.reason(), "Redis error");
            let source = err.source().expect("the Redis error is kept");
            assert!(source.downcast_ref::<redis::RedisError>().is_some());

            let slow = std::future::pending::<redis::RedisResult<redis::Value>>();
            let err = RedisReplayCache::bounded(Duration::from_millis(1), slow)
                .await
                .unwrap_err();
            assert_eq!(err.reason(), "Redis timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::error::Error as _;

    const MINUTE: Duration = Duration::from_secs(60);

    fn key(n: u64) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&n.to_le_bytes());
        k[8..16].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        k
    }

    fn new_cache(capacity: usize) -> (MemoryReplayCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
        let cache =
            MemoryReplayCache::new(NonZeroUsize::new(capacity).unwrap()).clock(clock.clone());
        (cache, clock)
    }

    fn answer(a: &ReplayAnswer) -> &'static str {
        match a {
            ReplayAnswer::Fresh => "fresh",
            ReplayAnswer::Replayed => "replayed",
            ReplayAnswer::Failed(_) => "failed",
            ReplayAnswer::Wait(_) => "wait",
        }
    }

    fn insert(cache: &MemoryReplayCache, n: u64, ttl: Duration) -> &'static str {
        answer(&cache.insert(&key(n), ttl))
    }

    #[test]
    fn replay_fresh_then_replayed() {
        let (cache, _) = new_cache(10_000);
        assert_eq!(insert(&cache, 1, MINUTE), "fresh");
        assert_eq!(insert(&cache, 1, MINUTE), "replayed");
        assert_eq!(insert(&cache, 1, MINUTE), "replayed");
        assert_eq!(cache.len(), 1);
        assert!(!cache.is_empty());
    }

    #[test]
    fn replay_different_keys_are_independent() {
        let (cache, _) = new_cache(10_000);
        for n in 0..50 {
            assert_eq!(insert(&cache, n, MINUTE), "fresh", "key {n}");
        }
        for n in 0..50 {
            assert_eq!(insert(&cache, n, MINUTE), "replayed", "key {n}");
        }
        // Keys differing only after the 16th byte are the same entry; any difference
        // within the first 16 bytes is another key.
        let mut a = key(1000);
        assert_eq!(answer(&cache.insert(&a, MINUTE)), "fresh");
        a[31] ^= 1;
        assert_eq!(answer(&cache.insert(&a, MINUTE)), "replayed");
        a[15] ^= 1;
        assert_eq!(answer(&cache.insert(&a, MINUTE)), "fresh");
        assert_eq!(cache.len(), 52);
    }

    #[test]
    fn replay_expired_key_is_fresh_again() {
        let (cache, clock) = new_cache(10_000);
        assert_eq!(insert(&cache, 1, MINUTE), "fresh");
        clock.advance(MINUTE - Duration::from_millis(1));
        assert_eq!(
            insert(&cache, 1, MINUTE),
            "replayed",
            "still inside the window"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(insert(&cache, 1, MINUTE), "fresh", "the window is over");
        assert_eq!(insert(&cache, 1, MINUTE), "replayed", "remembered again");
        assert_eq!(cache.len(), 1, "the expired entry was overwritten");
        // A zero ttl still remembers the key for a millisecond.
        assert_eq!(insert(&cache, 2, Duration::ZERO), "fresh");
        assert_eq!(insert(&cache, 2, Duration::ZERO), "replayed");
        clock.advance(Duration::from_millis(1));
        assert_eq!(insert(&cache, 2, Duration::ZERO), "fresh");
    }

    #[test]
    fn replay_full_cache_fails_until_entries_expire() {
        let (cache, clock) = new_cache(1);
        assert_eq!(insert(&cache, 1, MINUTE), "fresh");
        let full = cache.insert(&key(2), MINUTE);
        let ReplayAnswer::Failed(err) = full else {
            panic!("expected Failed, got {full:?}");
        };
        assert_eq!(err.reason(), "replay cache full");
        assert_eq!(err.to_string(), "replay cache failed: replay cache full");
        assert_eq!(insert(&cache, 1, MINUTE), "replayed", "nothing was evicted");
        assert_eq!(cache.len(), 1);

        clock.advance(MINUTE);
        assert_eq!(insert(&cache, 2, MINUTE), "fresh", "the sweep made room");
        assert_eq!(insert(&cache, 2, MINUTE), "replayed");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn replay_many_shards_never_exceed_capacity_nor_evict() {
        let (cache, clock) = new_cache(64);
        let mut fresh = Vec::new();
        for n in 0..1000 {
            match insert(&cache, n, MINUTE) {
                "fresh" => fresh.push(n),
                "failed" => {}
                other => panic!("key {n}: {other}"),
            }
        }
        assert_eq!(fresh.len(), 64, "every shard filled to its share");
        assert_eq!(cache.len(), 64);
        for &n in &fresh {
            assert_eq!(insert(&cache, n, MINUTE), "replayed", "key {n} was evicted");
        }
        clock.advance(MINUTE);
        for n in 1000..1064 {
            assert_ne!(insert(&cache, n, MINUTE), "replayed");
        }
        assert!(cache.len() <= 64);
    }

    #[test]
    fn replay_sweep_runs_at_most_once_per_second() {
        let (cache, clock) = new_cache(1);
        assert_eq!(insert(&cache, 1, Duration::from_secs(1)), "fresh");
        clock.advance(Duration::from_millis(500));
        // Full: sweeps (key 1 is unexpired) and fails; the next sweep is 1 s away.
        assert_eq!(insert(&cache, 2, MINUTE), "failed");
        clock.advance(Duration::from_millis(700));
        // Key 1 has expired, but the shard may not sweep yet.
        assert_eq!(insert(&cache, 2, MINUTE), "failed");
        clock.advance(Duration::from_millis(299));
        assert_eq!(insert(&cache, 2, MINUTE), "failed");
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            insert(&cache, 2, MINUTE),
            "fresh",
            "one second after the sweep"
        );
        // An expired key is overwritten in place, without a sweep.
        let (cache, clock) = new_cache(1);
        assert_eq!(insert(&cache, 1, Duration::from_secs(1)), "fresh");
        assert_eq!(insert(&cache, 2, MINUTE), "failed");
        clock.advance(Duration::from_secs(1));
        assert_eq!(insert(&cache, 1, MINUTE), "fresh");
    }

    #[test]
    fn replay_concurrent_inserts_of_one_key_have_one_winner() {
        let (cache, _) = new_cache(1000);
        for round in 0..20u64 {
            let threads = 8;
            let barrier = std::sync::Barrier::new(threads);
            let fresh = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        barrier.wait();
                        match cache.insert(&key(round), MINUTE) {
                            ReplayAnswer::Fresh => {
                                fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            ReplayAnswer::Replayed => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    });
                }
            });
            assert_eq!(fresh.into_inner(), 1, "round {round}");
        }
        // Clones share the cache.
        assert_eq!(insert(&cache.clone(), 0, MINUTE), "replayed");
    }

    #[test]
    fn replay_poisoned_shard_keeps_answering() {
        let (cache, _) = new_cache(1);
        assert_eq!(insert(&cache, 1, MINUTE), "fresh");
        let shards = cache.inner.clone();
        let _ = std::thread::spawn(move || {
            let _guard = shards.shards[0].lock();
            panic!("poison the shard");
        })
        .join();
        assert!(cache.inner.shards[0].is_poisoned());
        assert_eq!(insert(&cache, 1, MINUTE), "replayed");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn replay_error_keeps_its_source_and_no_key() {
        let plain = ReplayError::new("down");
        assert!(plain.source().is_none());
        assert_eq!(format!("{plain:?}"), r#"ReplayError { reason: "down" }"#);
        let err = ReplayError::new("Redis error").with_source(std::io::Error::other("broken pipe"));
        assert_eq!(err.to_string(), "replay cache failed: Redis error");
        assert_eq!(err.source().unwrap().to_string(), "broken pipe");
        assert_eq!(err.clone().reason(), "Redis error");
        assert_eq!(
            format!("{err:?}"),
            r#"ReplayError { reason: "Redis error", source: broken pipe }"#
        );
        let (cache, _) = new_cache(3);
        assert_eq!(
            format!("{cache:?}"),
            "MemoryReplayCache { len: 0, capacity: 3, .. }"
        );
        assert_eq!(format!("{:?}", ReplayAnswer::Fresh), "Fresh");
    }
}
