//! [`ApiKeyStore`], [`MemoryKeyStore`] and [`CachedKeyStore`].

use crate::error::Cause;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ApiKeyRecord, KeyDigest};
use crate::clock::{Clock, MonotonicClock};
use crate::identity::Identity;

/// A store failed (unreachable, timed out). The reason is for logs; the
/// [`source`](std::error::Error::source), when there is one, is the underlying error (a
/// database error), kept for diagnosis and never carrying a key or a connection URL.
#[derive(Clone)]
pub struct StoreError {
    reason: Cow<'static, str>,
    source: Cause,
}

impl StoreError {
    /// A failure with a reason (never containing keys).
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
            source: Cause::default(),
        }
    }

    /// Attach the underlying error, for diagnosis; it must not carry a secret (no key, no
    /// URL with credentials). [`source`](std::error::Error::source) returns it.
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

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API key store failed: {}", self.reason)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.get()
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.debug(f, "StoreError", &self.reason)
    }
}

/// A store's future.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// Finds key records by digest. Stores never see plaintext keys.
pub trait ApiKeyStore: Send + Sync + fmt::Debug + 'static {
    /// The record with this digest, if any (revoked and expired records included: the
    /// authenticator decides).
    fn find(&self, digest: &KeyDigest) -> StoreFuture<Option<ApiKeyRecord>>;

    /// What the store knows about `digest` from memory, without waiting: `None` means *ask
    /// [`find`](Self::find)*. Caches such as [`CachedKeyStore`] answer here, so that a hot
    /// key costs no future and no copy; the default is `None`.
    fn find_cached(&self, digest: &KeyDigest) -> Option<CachedLookup> {
        let _ = digest;
        None
    }

    /// The record with this digest together with the [`Identity`] made from it, for
    /// [`ApiKeyAuthenticator`](super::ApiKeyAuthenticator) after
    /// [`find_cached`](Self::find_cached) answered `None`. The default makes a
    /// [`ResolvedKey`] from [`find`](Self::find)'s record; [`CachedKeyStore`] answers with
    /// the one it keeps, so that the requests that hit the cache later share it.
    fn find_resolved(&self, digest: &KeyDigest) -> StoreFuture<Option<Arc<ResolvedKey>>> {
        let found = self.find(digest);
        Box::pin(async move {
            Ok(found
                .await?
                .map(|record| Arc::new(ResolvedKey::new(record))))
        })
    }
}

/// Which of an owner's keys [`ApiKeyManager::list`] returns.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_api_guard::api_key::{KeyFormat, ListFilter, NewKey};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// let (_, record) = KeyFormat::new("sk_test")
///     .unwrap()
///     .generate_at(NewKey::new("owner", "ci").expires_at(now + Duration::from_secs(60)), now)
///     .unwrap();
/// assert!(ListFilter::All.matches(&record));
/// assert!(ListFilter::ActiveAt(now).matches(&record));
/// assert!(!ListFilter::ActiveAt(now + Duration::from_secs(60)).matches(&record));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListFilter {
    /// Every key, revoked and expired ones included.
    All,
    /// The keys usable at this instant: neither revoked nor expired at it (see
    /// [`ApiKeyRecord::is_active`]).
    ActiveAt(SystemTime),
}

impl ListFilter {
    /// Whether `record` passes the filter.
    pub fn matches(&self, record: &ApiKeyRecord) -> bool {
        match self {
            Self::All => true,
            Self::ActiveAt(now) => record.is_active(*now),
        }
    }
}

/// A store's answer from memory (see [`ApiKeyStore::find_cached`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CachedLookup {
    /// A known key, with the identity made from its record.
    Found(Arc<ResolvedKey>),
    /// A digest the store recently did not know.
    Unknown,
}

/// A key record and the [`Identity`] made from it, once, shared by every request that
/// presents the key while it is cached.
#[derive(Debug)]
pub struct ResolvedKey {
    record: ApiKeyRecord,
    identity: Identity,
}

impl ResolvedKey {
    /// Make the identity of `record` (see [`ApiKeyAuthenticator`](super::ApiKeyAuthenticator)
    /// for the mapping).
    pub fn new(record: ApiKeyRecord) -> Self {
        let identity = super::identity_of(&record);
        Self { record, identity }
    }

    /// The record.
    pub fn record(&self) -> &ApiKeyRecord {
        &self.record
    }

    /// The identity of the record's key.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// Key management, for stores that support it: create, look up by id, list, revoke.
/// [`KeyFormat::rotate`](super::KeyFormat::rotate) builds rotation with a grace period
/// on top of it.
pub trait ApiKeyManager: ApiKeyStore {
    /// Store a new record.
    fn create(&self, record: &ApiKeyRecord) -> StoreFuture<()>;
    /// The record with this id.
    fn find_by_id(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>>;
    /// The records of `owner`, oldest first: all of them, revoked and expired ones included
    /// (the same as [`list`](Self::list) with [`ListFilter::All`]).
    fn list_by_owner(&self, owner: &str) -> StoreFuture<Vec<ApiKeyRecord>>;
    /// The records of `owner` that pass `filter`, oldest first, each with its
    /// [`last_used_at`](ApiKeyRecord::last_used_at).
    ///
    /// The default filters [`list_by_owner`](Self::list_by_owner) in memory; the stores of
    /// this crate filter in the query.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::SystemTime;
    /// use tower_api_guard::api_key::{ApiKeyManager, KeyFormat, ListFilter, MemoryKeyStore, NewKey};
    ///
    /// let store = MemoryKeyStore::new();
    /// let format = KeyFormat::new("sk_test").unwrap();
    /// for name in ["ci", "laptop"] {
    ///     let (_, record) = format.generate(NewKey::new("owner", name)).unwrap();
    ///     store.create(&record).await.unwrap();
    /// }
    /// let laptop = store.list_by_owner("owner").await.unwrap().pop().unwrap();
    /// store.revoke(&laptop.id, SystemTime::now()).await.unwrap();
    ///
    /// let active = store.list("owner", ListFilter::ActiveAt(SystemTime::now())).await.unwrap();
    /// assert_eq!(active.len(), 1);
    /// assert_eq!(store.list("owner", ListFilter::All).await.unwrap().len(), 2);
    /// # });
    /// ```
    fn list(&self, owner: &str, filter: ListFilter) -> StoreFuture<Vec<ApiKeyRecord>> {
        let all = self.list_by_owner(owner);
        Box::pin(async move {
            let mut records = all.await?;
            records.retain(|r| filter.matches(r));
            Ok(records)
        })
    }
    /// Revoke the key `id` from `at` on; `false` when there is no such key.
    fn revoke(&self, id: &str, at: SystemTime) -> StoreFuture<bool>;
    /// Record when keys were last used, in one batch (see
    /// [`LastUsedTracker`](super::LastUsedTracker)).
    fn record_last_used(&self, batch: Vec<(String, SystemTime)>) -> StoreFuture<()>;
}

impl<S: ApiKeyStore + ?Sized> ApiKeyStore for Arc<S> {
    fn find(&self, digest: &KeyDigest) -> StoreFuture<Option<ApiKeyRecord>> {
        (**self).find(digest)
    }

    fn find_cached(&self, digest: &KeyDigest) -> Option<CachedLookup> {
        (**self).find_cached(digest)
    }

    fn find_resolved(&self, digest: &KeyDigest) -> StoreFuture<Option<Arc<ResolvedKey>>> {
        (**self).find_resolved(digest)
    }
}

/// An in-process store, for tests, examples and single-process services.
#[derive(Clone, Default)]
pub struct MemoryKeyStore {
    records: Arc<RwLock<HashMap<KeyDigest, ApiKeyRecord>>>,
    lookups: Arc<AtomicUsize>,
    batches: Arc<AtomicUsize>,
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.records.read().map_or(0, |r| r.len());
        f.debug_struct("MemoryKeyStore").field("keys", &n).finish()
    }
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a record.
    pub fn insert(&self, record: ApiKeyRecord) {
        self.records
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.digest, record);
    }

    /// Revoke the key with record id `id` from `at` on. `false` when there is no such key.
    pub fn revoke_now(&self, id: &str, at: SystemTime) -> bool {
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        match records.values_mut().find(|r| r.id == id) {
            Some(record) => {
                record.revoked_at = Some(at);
                true
            }
            None => false,
        }
    }

    /// The records of `owner`, oldest first.
    pub fn owned_by(&self, owner: &str) -> Vec<ApiKeyRecord> {
        self.owned_by_filtered(owner, ListFilter::All)
    }

    fn owned_by_filtered(&self, owner: &str, filter: ListFilter) -> Vec<ApiKeyRecord> {
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ApiKeyRecord> = records
            .values()
            .filter(|r| r.owner == owner && filter.matches(r))
            .cloned()
            .collect();
        out.sort_by_key(|r| r.created_at);
        out
    }

    /// When the key `id` was last used, as recorded by a [`LastUsedTracker`](super::LastUsedTracker)
    /// (the record's [`last_used_at`](ApiKeyRecord::last_used_at)).
    pub fn last_used(&self, id: &str) -> Option<SystemTime> {
        self.records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|r| r.id == id)
            .and_then(|r| r.last_used_at)
    }

    /// How many last-used batches were written.
    pub fn last_used_batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }

    /// How many lookups reached this store (to prove caches and offline checks work).
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::Relaxed)
    }
}

impl ApiKeyStore for MemoryKeyStore {
    fn find(&self, digest: &KeyDigest) -> StoreFuture<Option<ApiKeyRecord>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let found = self
            .records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}

impl ApiKeyManager for MemoryKeyStore {
    fn create(&self, record: &ApiKeyRecord) -> StoreFuture<()> {
        self.insert(record.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn find_by_id(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>> {
        let found = self
            .records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|r| r.id == id)
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn list_by_owner(&self, owner: &str) -> StoreFuture<Vec<ApiKeyRecord>> {
        let list = self.owned_by(owner);
        Box::pin(std::future::ready(Ok(list)))
    }

    fn list(&self, owner: &str, filter: ListFilter) -> StoreFuture<Vec<ApiKeyRecord>> {
        let list = self.owned_by_filtered(owner, filter);
        Box::pin(std::future::ready(Ok(list)))
    }

    fn revoke(&self, id: &str, at: SystemTime) -> StoreFuture<bool> {
        let done = self.revoke_now(id, at);
        Box::pin(std::future::ready(Ok(done)))
    }

    /// Keeps the latest instant of each key, as the SQL stores do; ids of no key are ignored.
    fn record_last_used(&self, batch: Vec<(String, SystemTime)>) -> StoreFuture<()> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut latest: HashMap<String, SystemTime> = HashMap::with_capacity(batch.len());
        for (id, at) in batch {
            let seen = latest.entry(id).or_insert(at);
            *seen = (*seen).max(at);
        }
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        for record in records.values_mut() {
            if let Some(&at) = latest.get(&record.id) {
                record.last_used_at = Some(record.last_used_at.map_or(at, |seen| seen.max(at)));
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Wraps a store with a short positive cache and a bounded negative cache, so a hot key
/// costs no round trip and a flood of unknown keys never reaches the database.
///
/// Found records are kept with the [`Identity`] made from them ([`ResolvedKey`]) and
/// answered through [`ApiKeyStore::find_cached`], so a hit builds, copies and waits for
/// nothing. Both caches are quick_cache maps (sharded, no per-read bookkeeping, foldhash with
/// a random seed: a caller cannot choose a digest without a SHA-256 preimage); each entry
/// carries its deadline, checked on every read against the cache's clock.
///
/// Revocations made through this process take effect at once when followed by
/// [`invalidate`](Self::invalidate) (a revocation through [`ApiKeyManager::revoke`] on the
/// cache does it); revocations made elsewhere take effect within the positive TTL (default
/// 30 s) — unless the cache *follows* the store's change events: with PostgreSQL,
/// `PostgresKeyStore::follow` (feature `postgres`) evicts a changed key on every replica
/// within a short bound (default 1 s), whether or not the event channel is up.
///
/// A lookup that reaches the store races with invalidations: when the key is invalidated
/// while its record is being read, the (possibly stale) answer is returned but not cached.
#[derive(Clone)]
pub struct CachedKeyStore<S> {
    inner: S,
    shared: Arc<Shared>,
    ttl: (Duration, Duration),
    clock: Arc<dyn Clock>,
}

/// A positive entry: the resolved key, its deadline, and when its record was read.
#[derive(Clone)]
struct Entry {
    key: Arc<ResolvedKey>,
    until: SystemTime,
    read_at: SystemTime,
}

/// What the clones of one cache share (and what a follower holds weakly).
struct Shared {
    positive: quick_cache::sync::Cache<KeyDigest, Entry>,
    negative: quick_cache::sync::Cache<KeyDigest, SystemTime>,
    /// Until when (nanoseconds since the epoch, on the cache's clock) positive entries are
    /// served for their whole TTL: `u64::MAX` when nobody follows the store's changes, else
    /// pushed forward by the follower as long as its channel is proven up. After it, a
    /// positive entry is served only while younger than `fallback`.
    healthy_until: AtomicU64,
    /// The fallback bound, in nanoseconds.
    fallback: AtomicU64,
    /// Bumped by every invalidation, so that a lookup racing with one does not cache what it
    /// read.
    generation: AtomicU64,
}

impl Shared {
    fn invalidate(&self, digest: &KeyDigest) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.positive.remove(digest);
        self.negative.remove(digest);
    }

    fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.positive.clear();
        self.negative.clear();
    }

    /// Whether an entry read at `read_at` is young enough for the fallback mode.
    fn young(&self, read_at: SystemTime, now: SystemTime) -> bool {
        let bound = Duration::from_nanos(self.fallback.load(Ordering::Relaxed));
        now.duration_since(read_at).is_ok_and(|age| age < bound)
    }
}

/// Nanoseconds since the Unix epoch (0 before it, saturated after 2554).
pub(crate) fn epoch_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A follower's weak link to a cache: it never keeps the cache alive, and it sees the cache
/// go away (see `PostgresKeyStore::follow`).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct CacheLink {
    shared: Weak<Shared>,
    clock: Arc<dyn Clock>,
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
impl CacheLink {
    /// The cache's clock.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Whether the cache (every clone of it) is gone.
    pub(crate) fn is_gone(&self) -> bool {
        self.shared.strong_count() == 0
    }

    /// Forget `digest`; `false` when the cache is gone.
    pub(crate) fn invalidate(&self, digest: &KeyDigest) -> bool {
        self.shared
            .upgrade()
            .map(|s| s.invalidate(digest))
            .is_some()
    }

    /// Forget everything; `false` when the cache is gone.
    pub(crate) fn invalidate_all(&self) -> bool {
        self.shared.upgrade().map(|s| s.invalidate_all()).is_some()
    }

    /// Serve positive entries for their whole TTL until `until` (no earlier than what is
    /// already granted); `false` when the cache is gone.
    pub(crate) fn healthy_until(&self, until: SystemTime) -> bool {
        self.shared
            .upgrade()
            .map(|s| {
                s.healthy_until
                    .fetch_max(epoch_nanos(until), Ordering::Relaxed)
            })
            .is_some()
    }

    /// From now on serve positive entries only while younger than the fallback bound, until
    /// [`healthy_until`](Self::healthy_until) is called again; `false` when the cache is gone.
    pub(crate) fn fallback(&self) -> bool {
        self.shared
            .upgrade()
            .map(|s| s.healthy_until.store(0, Ordering::Relaxed))
            .is_some()
    }
}

impl<S: fmt::Debug> fmt::Debug for CachedKeyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedKeyStore")
            .field("inner", &self.inner)
            .field("cached", &self.shared.positive.len())
            .field("unknown", &self.shared.negative.len())
            .finish_non_exhaustive()
    }
}

/// Capacity of the positive cache.
const POSITIVE_CAPACITY: usize = 10_000;
/// Capacity of the negative cache.
const NEGATIVE_CAPACITY: usize = 100_000;

impl<S: ApiKeyStore + Clone> CachedKeyStore<S> {
    /// Cache `inner`: found records for 30 s (at most 10,000), unknown digests for 30 s (at
    /// most 100,000).
    pub fn new(inner: S) -> Self {
        Self::with_ttl(inner, Duration::from_secs(30), Duration::from_secs(30))
    }

    /// Cache with explicit TTLs.
    pub fn with_ttl(inner: S, positive: Duration, negative: Duration) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared {
                positive: quick_cache::sync::Cache::new(POSITIVE_CAPACITY),
                negative: quick_cache::sync::Cache::new(NEGATIVE_CAPACITY),
                healthy_until: AtomicU64::new(u64::MAX),
                fallback: AtomicU64::new(0),
                generation: AtomicU64::new(0),
            }),
            ttl: (positive, negative),
            clock: Arc::new(MonotonicClock::new()),
        }
    }

    /// The clock the TTLs are measured on (default: [`MonotonicClock`]; inject a
    /// [`ManualClock`](crate::clock::ManualClock) in tests).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Forget what is cached for `digest` (call it after revoking or rotating that key).
    pub fn invalidate(&self, digest: &KeyDigest) {
        self.shared.invalidate(digest);
    }

    /// Forget everything.
    pub fn invalidate_all(&self) {
        self.shared.invalidate_all();
    }

    /// A weak link for a follower, which from now on decides, with `fallback` as the bound,
    /// whether entries are served for their whole TTL. The cache starts in the fallback mode.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn link(&self, fallback: Duration) -> CacheLink {
        let nanos = u64::try_from(fallback.as_nanos()).unwrap_or(u64::MAX);
        self.shared.fallback.store(nanos, Ordering::Relaxed);
        self.shared.healthy_until.store(0, Ordering::Relaxed);
        CacheLink {
            shared: Arc::downgrade(&self.shared),
            clock: self.clock.clone(),
        }
    }

    /// A live positive entry; an expired one is removed. Past the follower's proof of
    /// freshness, only an entry younger than the fallback bound is live (an older one stays,
    /// for when the channel is back).
    fn cached_key(&self, digest: &KeyDigest, now: SystemTime) -> Option<Arc<ResolvedKey>> {
        let entry = self.shared.positive.get(digest)?;
        if now >= entry.until {
            self.shared.positive.remove(digest);
            return None;
        }
        if epoch_nanos(now) < self.shared.healthy_until.load(Ordering::Relaxed)
            || self.shared.young(entry.read_at, now)
        {
            return Some(entry.key);
        }
        None
    }

    /// Whether `digest` is cached as unknown; an expired entry is removed.
    fn cached_unknown(&self, digest: &KeyDigest, now: SystemTime) -> bool {
        match self.shared.negative.get(digest) {
            Some(until) if now < until => true,
            Some(_) => {
                self.shared.negative.remove(digest);
                false
            }
            None => false,
        }
    }

    /// The wrapped store.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Management goes to the wrapped store; a revocation made through the cache invalidates
/// that key's cached entry at once.
impl<S: ApiKeyManager + Clone> ApiKeyManager for CachedKeyStore<S> {
    fn create(&self, record: &ApiKeyRecord) -> StoreFuture<()> {
        self.shared.invalidate(&record.digest);
        self.inner.create(record)
    }

    fn find_by_id(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>> {
        self.inner.find_by_id(id)
    }

    fn list_by_owner(&self, owner: &str) -> StoreFuture<Vec<ApiKeyRecord>> {
        self.inner.list_by_owner(owner)
    }

    fn list(&self, owner: &str, filter: ListFilter) -> StoreFuture<Vec<ApiKeyRecord>> {
        self.inner.list(owner, filter)
    }

    fn revoke(&self, id: &str, at: SystemTime) -> StoreFuture<bool> {
        let this = self.clone();
        let id = id.to_owned();
        Box::pin(async move {
            let record = this.inner.find_by_id(&id).await?;
            let done = this.inner.revoke(&id, at).await?;
            if let Some(record) = record {
                this.invalidate(&record.digest);
            }
            Ok(done)
        })
    }

    fn record_last_used(&self, batch: Vec<(String, SystemTime)>) -> StoreFuture<()> {
        self.inner.record_last_used(batch)
    }
}

impl<S: ApiKeyStore + Clone> CachedKeyStore<S> {
    /// What memory says about `digest` (not counted).
    fn lookup(&self, digest: &KeyDigest) -> Option<CachedLookup> {
        let now = self.clock.now();
        if let Some(key) = self.cached_key(digest, now) {
            return Some(CachedLookup::Found(key));
        }
        self.cached_unknown(digest, now)
            .then_some(CachedLookup::Unknown)
    }

    /// The entries both caches hold (approximate under concurrent writes).
    fn entries(&self) -> u64 {
        (self.shared.positive.len() + self.shared.negative.len()) as u64
    }

    /// The key with this digest: from memory (a hit), or read from the wrapped store and kept
    /// (a miss). Each call is counted once, as a hit or a miss.
    fn resolve(&self, digest: &KeyDigest) -> StoreFuture<Option<Arc<ResolvedKey>>> {
        match self.lookup(digest) {
            Some(CachedLookup::Found(key)) => {
                crate::metrics::cache(crate::metrics::Cache::ApiKey, true);
                return Box::pin(std::future::ready(Ok(Some(key))));
            }
            Some(CachedLookup::Unknown) => {
                crate::metrics::cache(crate::metrics::Cache::ApiKey, true);
                return Box::pin(std::future::ready(Ok(None)));
            }
            None => crate::metrics::cache(crate::metrics::Cache::ApiKey, false),
        }
        let this = self.clone();
        let digest = *digest;
        Box::pin(async move {
            let shared = &this.shared;
            let generation = shared.generation.load(Ordering::SeqCst);
            let read_at = this.clock.now();
            let found = this
                .inner
                .find(&digest)
                .await?
                .map(|record| Arc::new(ResolvedKey::new(record)));
            if shared.generation.load(Ordering::SeqCst) != generation {
                // Invalidated while it was read: what was read may be stale.
                return Ok(found);
            }
            let now = this.clock.now();
            match &found {
                Some(key) => shared.positive.insert(
                    digest,
                    Entry {
                        key: key.clone(),
                        until: now + this.ttl.0,
                        read_at,
                    },
                ),
                None => shared.negative.insert(digest, now + this.ttl.1),
            }
            // An invalidation between the check above and the insert removes nothing: undo it.
            if shared.generation.load(Ordering::SeqCst) != generation {
                shared.positive.remove(&digest);
                shared.negative.remove(&digest);
            }
            crate::metrics::cache_entries(crate::metrics::Cache::ApiKey, this.entries());
            Ok(found)
        })
    }
}

/// With the feature `metrics`, each lookup is counted once in
/// `tower_api_guard_cache_requests_total{cache="api_key"}`, where it is answered: a
/// [`find_cached`](ApiKeyStore::find_cached) that answers is a hit (one that answers `None`
/// is not counted: the caller goes on to [`find`](ApiKeyStore::find) or
/// [`find_resolved`](ApiKeyStore::find_resolved)); a `find` or `find_resolved` is a hit when
/// memory answers and a miss when the wrapped store is asked, after which
/// `tower_api_guard_cache_entries{cache="api_key"}` is set to the entries held (found and
/// unknown keys together).
impl<S: ApiKeyStore + Clone> ApiKeyStore for CachedKeyStore<S> {
    fn find_cached(&self, digest: &KeyDigest) -> Option<CachedLookup> {
        let found = self.lookup(digest);
        if found.is_some() {
            crate::metrics::cache(crate::metrics::Cache::ApiKey, true);
        }
        found
    }

    fn find(&self, digest: &KeyDigest) -> StoreFuture<Option<ApiKeyRecord>> {
        let resolved = self.resolve(digest);
        Box::pin(async move { Ok(resolved.await?.map(|key| key.record.clone())) })
    }

    fn find_resolved(&self, digest: &KeyDigest) -> StoreFuture<Option<Arc<ResolvedKey>>> {
        self.resolve(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::{KeyFormat, NewKey};
    use crate::clock::ManualClock;
    use std::error::Error as _;
    use std::sync::OnceLock;

    fn key_in(store: &MemoryKeyStore) -> KeyDigest {
        let (_, record) = KeyFormat::new("sk_test")
            .unwrap()
            .generate(NewKey::new("owner", "ci"))
            .unwrap();
        let digest = record.digest;
        store.insert(record);
        digest
    }

    #[tokio::test]
    async fn a_followed_cache_serves_only_young_entries_until_the_channel_is_proven() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        let store = MemoryKeyStore::new();
        let digest = key_in(&store);
        let cache = CachedKeyStore::new(store.clone()).clock(clock.clone());
        // Not followed: the whole TTL.
        cache.find(&digest).await.unwrap().unwrap();
        clock.advance(Duration::from_secs(29));
        assert!(cache.find_cached(&digest).is_some());

        let link = cache.link(Duration::from_secs(1));
        // Followed, channel not proven: only entries read less than the bound ago.
        assert!(cache.find_cached(&digest).is_none(), "29 s old");
        cache.find(&digest).await.unwrap().unwrap();
        assert_eq!(store.lookups(), 2);
        assert!(cache.find_cached(&digest).is_some());
        clock.advance(Duration::from_millis(999));
        assert!(cache.find_cached(&digest).is_some());
        clock.advance(Duration::from_millis(1));
        assert!(cache.find_cached(&digest).is_none(), "as old as the bound");
        // Proven up to a second from now: the whole TTL again, even for the old entry.
        assert!(link.healthy_until(clock.now() + Duration::from_secs(1)));
        assert!(cache.find_cached(&digest).is_some());
        clock.advance(Duration::from_secs(1));
        assert!(cache.find_cached(&digest).is_none(), "the proof lapsed");
        // Lost: at once.
        assert!(link.healthy_until(clock.now() + Duration::from_secs(1)));
        assert!(link.fallback());
        assert!(cache.find_cached(&digest).is_none());
        // The TTL still ends an entry.
        assert!(link.healthy_until(clock.now() + Duration::from_secs(60)));
        clock.advance(Duration::from_secs(30));
        assert!(cache.find_cached(&digest).is_none());

        assert!(link.invalidate(&digest) && link.invalidate_all() && !link.is_gone());
        drop(cache);
        assert!(link.is_gone());
        assert!(!link.invalidate_all() && !link.fallback());
    }

    /// A store that invalidates the cache in front of it while a lookup is under way.
    #[derive(Clone)]
    struct Racing {
        inner: MemoryKeyStore,
        cache: Arc<OnceLock<CachedKeyStore<Racing>>>,
    }

    impl fmt::Debug for Racing {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Racing")
        }
    }

    impl ApiKeyStore for Racing {
        fn find(&self, digest: &KeyDigest) -> StoreFuture<Option<ApiKeyRecord>> {
            let found = self.inner.find(digest);
            if let Some(cache) = self.cache.get() {
                cache.invalidate(digest);
            }
            found
        }
    }

    #[tokio::test]
    async fn a_lookup_racing_with_an_invalidation_is_not_cached() {
        let inner = MemoryKeyStore::new();
        let digest = key_in(&inner);
        let racing = Racing {
            inner: inner.clone(),
            cache: Arc::new(OnceLock::new()),
        };
        let cache = CachedKeyStore::new(racing.clone());
        racing.cache.set(cache.clone()).unwrap();
        assert!(cache.find(&digest).await.unwrap().is_some(), "answered");
        assert!(cache.find_cached(&digest).is_none(), "but not cached");
        assert!(
            cache
                .find(&KeyDigest::from_bytes([7; 32]))
                .await
                .unwrap()
                .is_none()
        );
        assert!(cache.find_cached(&KeyDigest::from_bytes([7; 32])).is_none());
    }

    #[test]
    fn source_is_none_by_default_and_kept_when_attached() {
        let plain = StoreError::new("no key with that id");
        assert!(plain.source().is_none());
        assert_eq!(
            format!("{plain:?}"),
            r#"StoreError { reason: "no key with that id" }"#
        );
        let err =
            StoreError::new("database error").with_source(std::io::Error::other("disk I/O error"));
        assert_eq!(err.to_string(), "API key store failed: database error");
        assert_eq!(err.reason(), "database error");
        assert_eq!(err.source().unwrap().to_string(), "disk I/O error");
        assert_eq!(err.clone().source().unwrap().to_string(), "disk I/O error");
        assert_eq!(
            format!("{err:?}"),
            r#"StoreError { reason: "database error", source: disk I/O error }"#
        );
    }
}
