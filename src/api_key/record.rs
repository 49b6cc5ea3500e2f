//! What is stored about a key: [`NewKey`] (what to record about a key being made),
//! [`ApiKeyRecord`] (everything but the secret), and the identity a record stands for.

use std::time::SystemTime;

use super::KeyDigest;
use crate::identity::{Identity, Source};

/// What to record about a new key.
#[derive(Debug, Clone)]
#[must_use]
pub struct NewKey {
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) scopes: Vec<String>,
    pub(super) roles: Vec<String>,
    pub(super) expires_at: Option<SystemTime>,
    pub(super) plan: Option<String>,
    pub(super) metadata: serde_json::Value,
}

impl NewKey {
    /// A key for `owner` (the identity's subject), named `name` for its owner's eyes.
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            name: name.into(),
            scopes: Vec::new(),
            roles: Vec::new(),
            expires_at: None,
            plan: None,
            metadata: serde_json::Value::Object(Default::default()),
        }
    }

    /// Scopes the key grants.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Roles the key holds.
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// When the key expires.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The rate-limit plan.
    pub fn plan(mut self, plan: impl Into<String>) -> Self {
        self.plan = Some(plan.into());
        self
    }

    /// Free-form metadata (a JSON object), exposed as the identity's claims.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A stored key: everything but the secret.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ApiKeyRecord {
    /// The record's id (random, not secret).
    pub id: String,
    /// The digest the store looks up by.
    pub digest: KeyDigest,
    /// A short display form such as `sk_live_4f9a…`, never the secret.
    pub display: String,
    /// The owner: the identity's subject.
    pub owner: String,
    /// A name for the owner's eyes.
    pub name: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Roles held.
    pub roles: Vec<String>,
    /// When the key was made.
    pub created_at: SystemTime,
    /// When the key expires.
    pub expires_at: Option<SystemTime>,
    /// When the key was revoked.
    pub revoked_at: Option<SystemTime>,
    /// The rate-limit plan.
    pub plan: Option<String>,
    /// Free-form metadata (a JSON object).
    pub metadata: serde_json::Value,
    /// When the key was last used, as written by a [`LastUsedTracker`](super::LastUsedTracker)
    /// (see [`last_used_at`](Self::last_used_at)).
    pub(super) last_used_at: Option<SystemTime>,
}

impl ApiKeyRecord {
    /// Whether the key may be used at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.revoked_at.is_none_or(|at| now < at) && self.expires_at.is_none_or(|at| now < at)
    }

    /// When the key was last used, as of when this record was read: `None` for a key never
    /// used (or used only since the last write).
    ///
    /// Last use is not written per request: a [`LastUsedTracker`](super::LastUsedTracker)
    /// writes it in batches (every 30 s by default), and every store of this crate fills it
    /// when it reads records back ([`find`](super::ApiKeyStore::find),
    /// [`find_by_id`](super::ApiKeyManager::find_by_id), [`list`](super::ApiKeyManager::list)).
    /// A record held by a [`CachedKeyStore`](super::CachedKeyStore) keeps the value it was
    /// read with: ask the store itself for an up-to-date one.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use tower_api_guard::api_key::{ApiKeyManager, KeyFormat, MemoryKeyStore, NewKey};
    ///
    /// let store = MemoryKeyStore::new();
    /// let (_, record) = KeyFormat::new("sk_test").unwrap().generate(NewKey::new("owner", "ci")).unwrap();
    /// store.create(&record).await.unwrap();
    /// assert_eq!(record.last_used_at(), None);
    ///
    /// let used = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    /// store.record_last_used(vec![(record.id.clone(), used)]).await.unwrap();
    /// let read = store.find_by_id(&record.id).await.unwrap().unwrap();
    /// assert_eq!(read.last_used_at(), Some(used));
    /// # });
    /// ```
    pub fn last_used_at(&self) -> Option<SystemTime> {
        self.last_used_at
    }

    /// The same record with its last use set: for stores outside this crate, which fill it
    /// when they read a record back. [`ApiKeyManager::create`](super::ApiKeyManager::create)
    /// stores it as given (a new key has none).
    #[must_use]
    pub fn with_last_used_at(mut self, at: Option<SystemTime>) -> Self {
        self.last_used_at = at;
        self
    }
}

/// The identity of a key's record: subject = owner, [`Source::ApiKey`] with the key id,
/// the record's scopes, roles, plan and expiry, and its metadata as claims.
pub(crate) fn identity_of(record: &ApiKeyRecord) -> Identity {
    let mut builder = Identity::builder(
        record.owner.clone(),
        Source::ApiKey {
            key_id: record.id.clone(),
        },
    )
    .scopes(record.scopes.iter().map(String::as_str))
    .roles(record.roles.iter().map(String::as_str))
    .claims(record.metadata.clone());
    if let Some(at) = record.expires_at {
        builder = builder.expires_at(at);
    }
    if let Some(plan) = &record.plan {
        builder = builder.plan(plan.clone());
    }
    builder.build()
}
