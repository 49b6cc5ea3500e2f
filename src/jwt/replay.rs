//! The `jti` replay cache of DPoP proofs (RFC 9449 §11.1): [`ReplayCache`],
//! [`MemoryReplayCache`] for one process and (feature `redis`) `RedisReplayCache` for
//! several replicas.
//!
//! A key is SHA-256 over the proof key's thumbprint and the `jti`, computed by the DPoP
//! check: fixed-size, so no text a client chose reaches a store.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use tower_api_guard::jwt::{MemoryReplayCache, ReplayAnswer, ReplayCache};
//!
//! let cache = MemoryReplayCache::new(NonZeroUsize::new(1000).unwrap());
//! let key = [7u8; 32];
//! assert!(matches!(cache.insert(&key, Duration::from_secs(120)), ReplayAnswer::Fresh));
//! assert!(matches!(cache.insert(&key, Duration::from_secs(120)), ReplayAnswer::Replayed));
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::Cause;

/// Why a replay cache could not answer (full, unreachable, timed out). The reason is for
/// logs and never holds key bytes; the [`source`](std::error::Error::source) is the
/// underlying error, when there is one.
#[derive(Clone)]
pub struct ReplayError {
    reason: Cow<'static, str>,
    source: Cause,
}

impl ReplayError {
    /// A failure with a reason.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
            source: Cause::default(),
        }
    }

    /// Attach the underlying error (it must not carry a secret).
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

impl fmt::Debug for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.debug(f, "ReplayError", &self.reason)
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.get()
    }
}

/// The future of a replay cache that must wait: `Ok(true)` when the key was new.
pub type ReplayFuture = Pin<Box<dyn Future<Output = Result<bool, ReplayError>> + Send>>;

/// The answer of a [`ReplayCache`].
pub enum ReplayAnswer {
    /// The key was new; it is remembered now.
    Fresh,
    /// The key was seen before and has not expired: a replay.
    Replayed,
    /// The cache could not answer; the configured failure policy decides.
    Failed(ReplayError),
    /// The answer needs a round trip.
    Wait(ReplayFuture),
}

impl fmt::Debug for ReplayAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fresh => f.write_str("Fresh"),
            Self::Replayed => f.write_str("Replayed"),
            Self::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            Self::Wait(_) => f.write_str("Wait"),
        }
    }
}

/// Where DPoP proof `jti`s are remembered.
pub trait ReplayCache: Send + Sync + fmt::Debug + 'static {
    /// Remember `key` for `ttl` and say whether it was new. Atomic: of two concurrent
    /// inserts of one key, exactly one is [`Fresh`](ReplayAnswer::Fresh).
    fn insert(&self, key: &[u8; 32], ttl: Duration) -> ReplayAnswer;
}

const SHARDS: usize = 16;

/// The keys are SHA-256 output already: their first bytes are their hash.
#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        // The low 64 bits: the shard was chosen by the first byte.
        self.0 = n as u64;
    }
}

type Shard = HashMap<u128, f64, BuildHasherDefault<PassThrough>>;

struct ShardState {
    entries: Shard,
    /// When this shard was last swept of expired entries (unix seconds).
    swept: f64,
}

/// A bounded in-process replay cache: sharded maps of key → expiry. When a shard is full
/// it is swept of expired entries (at most once a second); if it is still full the answer
/// is [`Failed`](ReplayAnswer::Failed) — an unexpired entry is never evicted, since that
/// would let its proof be replayed. Cheap to clone (clones share the entries).
#[derive(Clone)]
pub struct MemoryReplayCache {
    shards: Arc<[Mutex<ShardState>]>,
    per_shard: usize,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayCache")
            .field("capacity", &(self.per_shard * SHARDS))
            .field("len", &self.len())
            .finish()
    }
}

impl MemoryReplayCache {
    /// A cache for about `capacity` proofs (rounded up to a multiple of 16), on the system
    /// clock.
    pub fn new(capacity: NonZeroUsize) -> Self {
        let per_shard = capacity.get().div_ceil(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(ShardState {
                    entries: Shard::default(),
                    swept: f64::NEG_INFINITY,
                })
            })
            .collect();
        Self {
            shards,
            per_shard,
            clock: Arc::new(SystemClock),
        }
    }

    /// Use this clock (tests use [`ManualClock`](crate::clock::ManualClock)).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many keys are held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards
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
        let now = self.clock.now_unix();
        let mut id = [0u8; 16];
        id.copy_from_slice(&key[..16]);
        let id = u128::from_be_bytes(id);
        let shard = &self.shards[usize::from(key[0]) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&expiry) = shard.entries.get(&id) {
            if expiry > now {
                return ReplayAnswer::Replayed;
            }
        } else if shard.entries.len() >= self.per_shard {
            if now - shard.swept >= 1.0 {
                shard.swept = now;
                shard.entries.retain(|_, expiry| *expiry > now);
            }
            if shard.entries.len() >= self.per_shard {
                return ReplayAnswer::Failed(ReplayError::new("replay cache full"));
            }
        }
        shard.entries.insert(id, now + ttl.as_secs_f64());
        ReplayAnswer::Fresh
    }
}

#[cfg(feature = "redis")]
pub use redis_cache::RedisReplayCache;

#[cfg(feature = "redis")]
mod redis_cache {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use redis::aio::ConnectionManager;

    use super::*;
    use crate::error::ConfigError;

    /// A replay cache in Redis, shared by every replica: one round trip per proof,
    /// `SET <prefix><key> 1 NX PX <ttl>`, bounded by a timeout (default 100 ms). A Redis
    /// error or timeout is [`Failed`](ReplayAnswer::Failed)-like: the DPoP check's failure
    /// policy decides (closed by default: 503).
    #[derive(Clone)]
    pub struct RedisReplayCache {
        conn: ConnectionManager,
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
        /// Connect to `url`; keys are named `tag:dpop:jti:<base64url key>` (change with
        /// [`prefix`](Self::prefix)).
        ///
        /// # Errors
        /// A malformed URL or a failed first connection.
        pub async fn connect(url: &str) -> Result<Self, ConfigError> {
            Ok(Self::from_connection(
                crate::redis_conn::connect(url).await?,
            ))
        }

        /// Use an existing connection.
        pub fn from_connection(conn: ConnectionManager) -> Self {
            Self {
                conn,
                prefix: "tag:dpop:jti:".into(),
                timeout: Duration::from_millis(100),
            }
        }

        /// The key prefix.
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
    }

    impl ReplayCache for RedisReplayCache {
        fn insert(&self, key: &[u8; 32], ttl: Duration) -> ReplayAnswer {
            let mut conn = self.conn.clone();
            let name = format!("{}{}", self.prefix, URL_SAFE_NO_PAD.encode(key));
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let timeout = self.timeout;
            ReplayAnswer::Wait(Box::pin(async move {
                let mut set = redis::cmd("SET");
                set.arg(name).arg(1).arg("NX").arg("PX").arg(millis);
                match tokio::time::timeout(timeout, set.query_async::<Option<String>>(&mut conn))
                    .await
                {
                    Ok(Ok(reply)) => Ok(reply.is_some()),
                    Ok(Err(e)) => Err(ReplayError::new("Redis error").with_source(e)),
                    Err(_) => Err(ReplayError::new("Redis timed out")),
                }
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn fresh(answer: ReplayAnswer) -> bool {
        match answer {
            ReplayAnswer::Fresh => true,
            ReplayAnswer::Replayed => false,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn key(n: u32) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(n.to_be_bytes()).into()
    }

    #[test]
    fn a_key_is_fresh_once_until_it_expires() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        let cache = MemoryReplayCache::new(NonZeroUsize::new(100).unwrap()).clock(clock.clone());
        let ttl = Duration::from_secs(121);
        assert!(fresh(cache.insert(&key(1), ttl)));
        assert!(!fresh(cache.insert(&key(1), ttl)));
        assert!(fresh(cache.insert(&key(2), ttl)), "keys are independent");
        clock.advance(Duration::from_secs(120));
        assert!(!fresh(cache.insert(&key(1), ttl)));
        clock.advance(Duration::from_secs(2));
        assert!(fresh(cache.insert(&key(1), ttl)), "expired");
    }

    #[test]
    fn a_full_cache_fails_rather_than_forget_and_sweeps_at_most_once_a_second() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        // 16 shards of one entry each.
        let cache = MemoryReplayCache::new(NonZeroUsize::new(16).unwrap()).clock(clock.clone());
        let ttl = Duration::from_secs(10);
        // Fill the shard of key(0) (keys land by their first byte).
        let shard_of = |k: &[u8; 32]| usize::from(k[0]) % SHARDS;
        let first = key(0);
        let same_shard: Vec<[u8; 32]> = (1..10_000)
            .map(key)
            .filter(|k| shard_of(k) == shard_of(&first))
            .take(2)
            .collect();
        assert!(fresh(cache.insert(&first, ttl)));
        assert!(matches!(
            cache.insert(&same_shard[0], ttl),
            ReplayAnswer::Failed(_)
        ));
        assert!(!fresh(cache.insert(&first, ttl)), "still remembered");
        // Expired, but the shard was swept less than a second ago: still full.
        clock.advance(Duration::from_millis(10_500));
        assert!(matches!(
            cache.insert(&same_shard[0], ttl),
            ReplayAnswer::Fresh
        ));
        assert!(matches!(
            cache.insert(&same_shard[1], ttl),
            ReplayAnswer::Failed(_)
        ));
        clock.advance(Duration::from_millis(500));
        assert!(
            matches!(cache.insert(&same_shard[1], ttl), ReplayAnswer::Failed(_)),
            "the entry inserted at +10.5 s has not expired"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn concurrent_inserts_of_one_key_have_one_winner() {
        let cache = MemoryReplayCache::new(NonZeroUsize::new(1000).unwrap());
        let wins = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| fresh(cache.insert(&key(42), Duration::from_secs(60)))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|won| *won)
                .count()
        });
        assert_eq!(wins, 1);
    }
}
