//! [`ApiKeyStore`], [`MemoryKeyStore`] and [`CachedKeyStore`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::{ApiKeyRecord, KeyDigest};

/// A store failed (unreachable, timed out). The reason is for logs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("API key store failed: {reason}")]
pub struct StoreError {
    reason: Cow<'static, str>,
}

impl StoreError {
    /// A failure with a reason (never containing keys).
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A store's future.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// Finds key records by digest. Stores never see plaintext keys.
pub trait ApiKeyStore: Send + Sync + fmt::Debug + 'static {
    /// The record with this digest, if any (revoked and expired records included: the
    /// authenticator decides).
    fn find(&self, digest: &KeyDigest) -> StoreFuture<Option<ApiKeyRecord>>;
}

/// Key management, for stores that support it: create, look up by id, list, revoke.
/// [`KeyFormat::rotate`](super::KeyFormat::rotate) builds rotation with a grace period
/// on top of it.
pub trait ApiKeyManager: ApiKeyStore {
    /// Store a new record.
    fn create(&self, record: &ApiKeyRecord) -> StoreFuture<()>;
    /// The record with this id.
    fn find_by_id(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>>;
    /// The records of `owner`, oldest first.
    fn list_by_owner(&self, owner: &str) -> StoreFuture<Vec<ApiKeyRecord>>;
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
}

/// An in-process store, for tests, examples and single-process services.
#[derive(Clone, Default)]
pub struct MemoryKeyStore {
    records: Arc<RwLock<HashMap<KeyDigest, ApiKeyRecord>>>,
    lookups: Arc<AtomicUsize>,
    last_used: Arc<RwLock<HashMap<String, SystemTime>>>,
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
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ApiKeyRecord> = records
            .values()
            .filter(|r| r.owner == owner)
            .cloned()
            .collect();
        out.sort_by_key(|r| r.created_at);
        out
    }

    /// When the key `id` was last used, as recorded by a [`LastUsedTracker`](super::LastUsedTracker).
    pub fn last_used(&self, id: &str) -> Option<SystemTime> {
        self.last_used
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
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

    fn revoke(&self, id: &str, at: SystemTime) -> StoreFuture<bool> {
        let done = self.revoke_now(id, at);
        Box::pin(std::future::ready(Ok(done)))
    }

    fn record_last_used(&self, batch: Vec<(String, SystemTime)>) -> StoreFuture<()> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut map = self.last_used.write().unwrap_or_else(|e| e.into_inner());
        for (id, at) in batch {
            map.insert(id, at);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Wraps a store with a short positive cache and a bounded negative cache (moka), so a hot
/// key costs no round trip and a flood of unknown keys never reaches the database.
///
/// Revocations made through this process take effect at once when followed by
/// [`invalidate`](Self::invalidate); revocations made elsewhere take effect within the
/// positive TTL (default 30 s).
#[derive(Clone)]
pub struct CachedKeyStore<S> {
    inner: S,
    positive: moka::sync::Cache<KeyDigest, ApiKeyRecord>,
    negative: moka::sync::Cache<KeyDigest, ()>,
}

impl<S: fmt::Debug> fmt::Debug for CachedKeyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedKeyStore")
            .field("inner", &self.inner)
            .field("cached", &self.positive.entry_count())
            .field("unknown", &self.negative.entry_count())
            .finish()
    }
}

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
            positive: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(positive)
                .build(),
            negative: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(negative)
                .build(),
        }
    }

    /// Forget what is cached for `digest` (call it after revoking or rotating that key).
    pub fn invalidate(&self, digest: &KeyDigest) {
        self.positive.invalidate(digest);
        self.negative.invalidate(digest);
    }

    /// Forget everything.
    pub fn invalidate_all(&self) {
        self.positive.invalidate_all();
        self.negative.invalidate_all();
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
        self.negative.invalidate(&record.digest);
        self.inner.create(record)
    }

    fn find_by_id(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>> {
        self.inner.find_by_id(id)
    }

    fn list_by_owner(&self, owner: &str) -> StoreFuture<Vec<ApiKeyRecord>> {
        self.inner.list_by_owner(owner)
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

impl<S: ApiKeyStore + Clone> ApiKeyStore for CachedKeyStore<S> {
    fn find(&self, digest: &KeyDigest) -> StoreFuture<Option<ApiKeyRecord>> {
        if let Some(record) = self.positive.get(digest) {
            return Box::pin(std::future::ready(Ok(Some(record))));
        }
        if self.negative.contains_key(digest) {
            return Box::pin(std::future::ready(Ok(None)));
        }
        let this = self.clone();
        let digest = *digest;
        Box::pin(async move {
            let found = this.inner.find(&digest).await?;
            match &found {
                Some(record) => this.positive.insert(digest, record.clone()),
                None => this.negative.insert(digest, ()),
            }
            Ok(found)
        })
    }
}
