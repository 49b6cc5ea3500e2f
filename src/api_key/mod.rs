//! API keys done properly: a checksummed key format, digests instead of secrets, a lookup
//! trait, a cached lookup, and [`ApiKeyAuthenticator`].
//!
//! * **Format.** `{prefix}_{random}{checksum}`: a configurable prefix (`sk_live`), 22 base62
//!   characters from the OS RNG (131 bits), and a 6-character base62 CRC32 of everything
//!   before it, in the style of GitHub's tokens. A mistyped or malformed key is rejected
//!   offline, before any store lookup, and secret scanners can find leaked keys.
//! * **Digests.** Stores hold only a digest: SHA-256, or HMAC-SHA256 with a server-side
//!   secret (a pepper). Lookup is by digest; the digest of the found record is compared in
//!   constant time. Keys are length-capped before hashing.
//! * **[`ApiKeyStore`].** Find a record by digest. [`MemoryKeyStore`] is the in-process
//!   store; [`CachedKeyStore`] wraps any store with a short positive TTL and a bounded
//!   negative cache, so a flood of bad keys cannot reach the database. With PostgreSQL,
//!   `PostgresKeyStore::follow` keeps every replica's cache in step with the key table
//!   (LISTEN/NOTIFY): a key revoked anywhere is refused everywhere within a second.
//! * **[`ApiKeyAuthenticator`].** Reads `X-API-Key` (or another header, or
//!   `Authorization: ApiKey …`) and makes an [`Identity`] with [`Source::ApiKey`]. Revoked or
//!   expired keys are 401; a store failure is 503. `jwt.or(api_keys)` accepts either
//!   credential on one route.
//! * **Lifecycle.** A [`LastUsedTracker`] writes when each key was last used, in batches;
//!   records read back carry it ([`ApiKeyRecord::last_used_at`]).
//!   [`ApiKeyManager::list`] lists an owner's active keys ([`ListFilter::ActiveAt`]) or all
//!   of them ([`ListFilter::All`]). An age policy on the authenticator
//!   ([`warn_after_age`](ApiKeyAuthenticator::warn_after_age),
//!   [`refuse_after_age`](ApiKeyAuthenticator::refuse_after_age)) flags keys that were not
//!   rotated, then refuses them.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tower_api_guard::api_key::{ApiKeyAuthenticator, KeyFormat, MemoryKeyStore, NewKey};
//!
//! let format = KeyFormat::new("sk_test").unwrap();
//! let store = MemoryKeyStore::new();
//! let (plaintext, record) = format.generate(NewKey::new("owner-1", "ci").scopes(["items:read"])).unwrap();
//! store.insert(record);
//! let auth = ApiKeyAuthenticator::new(format, store);
//! let identity = auth.verify(&plaintext).await.unwrap();
//! assert_eq!(identity.subject(), "owner-1");
//! assert!(identity.has_scope("items:read"));
//! # });
//! ```
//!
//! The code is split by job: `format` (key format, generation, checksum, offline checks,
//! digests), `record` (what is stored about a key), `store` (the lookup traits, the
//! memory store and the cache), `last_used` (batched last-use tracking), `sql` (SQLite and
//! PostgreSQL stores), `follow` (the PostgreSQL change follower) and `authenticator`
//! ([`ApiKeyAuthenticator`], its credential and future).
//!
//! [`Identity`]: crate::Identity
//! [`Source::ApiKey`]: crate::Source::ApiKey

mod authenticator;
#[cfg(feature = "postgres")]
mod follow;
mod format;
mod last_used;
mod record;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod store;

pub use authenticator::{ApiKeyAuthenticator, ApiKeyCredential, ApiKeyFuture, KeySourceHeader};
#[cfg(feature = "postgres")]
pub use follow::{CacheFollower, FollowOptions, KEY_EVENTS_CHANNEL};
pub use format::{KeyDigest, KeyFormat, MAX_KEY_LEN, Plaintext};
pub use last_used::LastUsedTracker;
pub(crate) use record::identity_of;
pub use record::{ApiKeyRecord, NewKey};
#[cfg(feature = "postgres")]
pub use sql::PostgresKeyStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteKeyStore;
pub use store::{
    ApiKeyManager, ApiKeyStore, CachedKeyStore, CachedLookup, ListFilter, MemoryKeyStore,
    ResolvedKey, StoreError, StoreFuture,
};
