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
//!   negative cache, so a flood of bad keys cannot reach the database.
//! * **[`ApiKeyAuthenticator`].** Reads `X-API-Key` (or another header, or
//!   `Authorization: ApiKey …`) and makes an [`Identity`] with [`Source::ApiKey`]. Revoked or
//!   expired keys are 401; a store failure is 503. `jwt.or(api_keys)` accepts either
//!   credential on one route.
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

mod last_used;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod store;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use http::HeaderName;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

pub use last_used::LastUsedTracker;
#[cfg(feature = "postgres")]
pub use sql::PostgresKeyStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteKeyStore;
pub use store::{
    ApiKeyManager, ApiKeyStore, CachedKeyStore, CachedLookup, MemoryKeyStore, ResolvedKey,
    StoreError, StoreFuture,
};

use crate::auth::{Authenticator, Outcome, ReadyOrBoxed};
use crate::clock::{Clock, SystemClock};
use crate::error::{AuthError, ConfigError};
use crate::extract::one_value;
use crate::head::RequestHead;
use crate::identity::{Identity, Source};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters in a key (62^22 > 2^130).
const RANDOM_LEN: usize = 22;
/// Checksum characters (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// The longest key accepted, in bytes, before any other work.
pub const MAX_KEY_LEN: usize = 128;

fn base62_checksum(text: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = u64::from(crc32fast::hash(text.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A key's digest: what stores keep and look up by. `Debug` shows a short prefix only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes (as read back from a store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lowercase hex, for storage.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", &self.to_hex()[..8])
    }
}

/// How digests are made.
#[derive(Clone)]
enum Hasher {
    Sha256,
    Hmac(Arc<[u8]>),
}

/// The key format: prefix, checksum and digest. See the [module docs](self).
#[derive(Clone)]
pub struct KeyFormat {
    prefix: Arc<str>,
    hasher: Hasher,
}

impl fmt::Debug for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hasher = match self.hasher {
            Hasher::Sha256 => "sha256",
            Hasher::Hmac(_) => "hmac-sha256",
        };
        f.debug_struct("KeyFormat")
            .field("prefix", &self.prefix)
            .field("digest", &hasher)
            .finish()
    }
}

/// What to record about a new key.
#[derive(Debug, Clone)]
#[must_use]
pub struct NewKey {
    owner: String,
    name: String,
    scopes: Vec<String>,
    roles: Vec<String>,
    expires_at: Option<SystemTime>,
    plan: Option<String>,
    metadata: serde_json::Value,
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
}

impl ApiKeyRecord {
    /// Whether the key may be used at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.revoked_at.is_none_or(|at| now < at) && self.expires_at.is_none_or(|at| now < at)
    }
}

/// The plaintext of a new key. Shown once; `Debug` hides it.
pub struct Plaintext(String);

impl Plaintext {
    /// The key. Give it to its owner once; it is not stored anywhere.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext(…)")
    }
}

impl fmt::Display for Plaintext {
    /// Prints the key: only for showing it to its owner once.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Plaintext {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

fn random_base62(len: usize) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| ConfigError::unavailable("the OS RNG failed", e))?;
        // Rejection sampling: 248 = 62 * 4, so bytes below it map uniformly.
        for &b in &buf {
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

impl KeyFormat {
    /// Keys with this prefix (letters, digits and `_`, 1–32 bytes), digested with SHA-256.
    ///
    /// # Errors
    /// An empty, over-long or ill-formed prefix.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(ConfigError::setting(
                "key prefix must be 1-32 letters, digits or '_'",
            ));
        }
        Ok(Self {
            prefix: prefix.into(),
            hasher: Hasher::Sha256,
        })
    }

    /// Digest with HMAC-SHA256 under a server-side secret (at least 32 bytes), so a leaked
    /// table of digests cannot be checked against guessed keys.
    ///
    /// # Errors
    /// A pepper shorter than 32 bytes.
    pub fn with_pepper(mut self, pepper: &[u8]) -> Result<Self, ConfigError> {
        if pepper.len() < 32 {
            return Err(ConfigError::key("pepper shorter than 32 bytes"));
        }
        self.hasher = Hasher::Hmac(pepper.into());
        Ok(self)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Make a key: the plaintext (shown once) and the record to store.
    ///
    /// # Errors
    /// When the OS RNG fails.
    pub fn generate(&self, key: NewKey) -> Result<(Plaintext, ApiKeyRecord), ConfigError> {
        self.generate_at(key, SystemTime::now())
    }

    /// [`generate`](Self::generate) with an explicit creation time (tests, clocks).
    ///
    /// # Errors
    /// When the OS RNG fails.
    pub fn generate_at(
        &self,
        key: NewKey,
        now: SystemTime,
    ) -> Result<(Plaintext, ApiKeyRecord), ConfigError> {
        let body = format!("{}_{}", self.prefix, random_base62(RANDOM_LEN)?);
        let checksum = base62_checksum(&body);
        let plaintext = format!(
            "{body}{}",
            std::str::from_utf8(&checksum).expect("base62 is ASCII")
        );
        let record = ApiKeyRecord {
            id: format!("key_{}", random_base62(16)?),
            digest: self.digest(&plaintext),
            display: format!("{}_{}…", self.prefix, &body[self.prefix.len() + 1..][..4]),
            owner: key.owner,
            name: key.name,
            scopes: key.scopes,
            roles: key.roles,
            created_at: now,
            expires_at: key.expires_at,
            revoked_at: None,
            plan: key.plan,
            metadata: key.metadata,
        };
        Ok((Plaintext(plaintext), record))
    }

    /// Rotate the key `id`: a new key with the same owner, scopes, roles, plan and metadata
    /// is created, and the old one is revoked from `now + grace` on, so clients can switch
    /// over. Returns the new key's plaintext (shown once) and record.
    ///
    /// # Errors
    /// No key with that id, or a store failure.
    pub async fn rotate(
        &self,
        store: &dyn ApiKeyManager,
        id: &str,
        now: SystemTime,
        grace: Duration,
    ) -> Result<(Plaintext, ApiKeyRecord), StoreError> {
        let old = store
            .find_by_id(id)
            .await?
            .ok_or_else(|| StoreError::new("no key with that id"))?;
        let mut new = NewKey::new(old.owner.clone(), old.name.clone())
            .scopes(old.scopes.clone())
            .roles(old.roles.clone())
            .metadata(old.metadata.clone());
        if let Some(plan) = &old.plan {
            new = new.plan(plan.clone());
        }
        if let Some(at) = old.expires_at {
            new = new.expires_at(at);
        }
        let (plaintext, record) = self
            .generate_at(new, now)
            .map_err(|_| StoreError::new("the OS RNG failed"))?;
        store.create(&record).await?;
        store.revoke(id, now + grace).await?;
        Ok((plaintext, record))
    }

    /// Check a presented key offline: length cap, prefix, alphabet and checksum.
    ///
    /// # Errors
    /// `invalid_token` (401) with the reason; no store is asked.
    pub fn check(&self, key: &str) -> Result<(), AuthError> {
        let invalid = AuthError::invalid_token;
        if key.len() > MAX_KEY_LEN {
            return Err(invalid("API key longer than the cap"));
        }
        let expected_len = self.prefix.len() + 1 + RANDOM_LEN + CHECKSUM_LEN;
        if key.len() != expected_len || !key.is_ascii() {
            return Err(invalid("API key has the wrong length"));
        }
        let Some(rest) = key
            .strip_prefix(&*self.prefix)
            .and_then(|r| r.strip_prefix('_'))
        else {
            return Err(invalid("API key has the wrong prefix"));
        };
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid("API key has characters outside base62"));
        }
        let (body, checksum) = key.split_at(key.len() - CHECKSUM_LEN);
        if base62_checksum(body).as_slice() != checksum.as_bytes() {
            return Err(invalid("API key checksum does not match"));
        }
        Ok(())
    }

    /// The digest of a key (call [`check`](Self::check) first).
    pub fn digest(&self, key: &str) -> KeyDigest {
        let bytes = &key.as_bytes()[..key.len().min(MAX_KEY_LEN)];
        match &self.hasher {
            Hasher::Sha256 => KeyDigest(Sha256::digest(bytes).into()),
            Hasher::Hmac(pepper) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper)
                    .expect("HMAC takes keys of any length");
                mac.update(bytes);
                KeyDigest(mac.finalize().into_bytes().into())
            }
        }
    }
}

/// Where an [`ApiKeyAuthenticator`] reads keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeySourceHeader {
    /// A header holding the key (default `X-API-Key`).
    Header(HeaderName),
    /// `Authorization: ApiKey <key>`.
    AuthorizationApiKey,
}

struct Inner {
    format: KeyFormat,
    store: Arc<dyn ApiKeyStore>,
    header: KeySourceHeader,
    clock: Arc<dyn Clock>,
    last_used: Option<LastUsedTracker>,
}

/// Authenticates requests by API key. See the [module docs](self).
#[derive(Clone)]
pub struct ApiKeyAuthenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for ApiKeyAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyAuthenticator")
            .field("format", &self.inner.format)
            .field("header", &self.inner.header)
            .finish_non_exhaustive()
    }
}

impl ApiKeyAuthenticator {
    /// Keys of `format`, looked up in `store` (wrap it in a [`CachedKeyStore`] in
    /// production), read from `X-API-Key`.
    pub fn new(format: KeyFormat, store: impl ApiKeyStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                format,
                store: Arc::new(store),
                header: KeySourceHeader::Header(HeaderName::from_static("x-api-key")),
                clock: Arc::new(SystemClock),
                last_used: None,
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| Inner {
            format: arc.format.clone(),
            store: arc.store.clone(),
            header: arc.header.clone(),
            clock: arc.clock.clone(),
            last_used: arc.last_used.clone(),
        });
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Read the key from `header` instead.
    #[must_use]
    pub fn header(self, header: KeySourceHeader) -> Self {
        self.with(|i| i.header = header)
    }

    /// Record when each key is used, in batches (see [`LastUsedTracker`]).
    #[must_use]
    pub fn last_used(self, tracker: LastUsedTracker) -> Self {
        self.with(|i| i.last_used = Some(tracker))
    }

    /// The clock for expiry and revocation instants.
    #[must_use]
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        self.with(|i| i.clock = clock)
    }

    /// Check a key outside a layer.
    ///
    /// # Errors
    /// 401 for a bad, unknown, revoked or expired key; 503 when the store fails.
    pub async fn verify(&self, key: &str) -> Result<Identity, AuthError> {
        self.inner.format.check(key)?;
        let credential = ApiKeyCredential(self.inner.format.digest(key));
        match self.authenticate(credential).await? {
            Some(identity) => Ok(identity),
            None => Err(AuthError::invalid_token("unknown API key")),
        }
    }
}

impl Inner {
    /// The checks on a found record: the digest (in constant time), revocation, expiry.
    /// Records the use when the key passes.
    fn admit(&self, record: &ApiKeyRecord, digest: &KeyDigest) -> Result<(), AuthError> {
        if !record.digest.ct_eq(digest) {
            return Err(AuthError::invalid_token("unknown API key"));
        }
        let now = self.clock.now();
        if record.revoked_at.is_some_and(|at| now >= at) {
            return Err(AuthError::invalid_token("API key revoked"));
        }
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(AuthError::invalid_token("API key expired"));
        }
        if let Some(tracker) = &self.last_used {
            tracker.touch(&record.id, now);
        }
        Ok(())
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

/// Ask the store (the slow path: nothing in memory).
async fn check(inner: Arc<Inner>, digest: KeyDigest) -> Outcome {
    let record = match inner.store.find(&digest).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(AuthError::invalid_token("unknown API key")),
        Err(e) => {
            tracing::warn!(target: "tower_api_guard::api_key", reason = %e.reason(), "API key store failed");
            return Err(AuthError::unavailable(
                "API key store failed",
                Duration::from_secs(1),
            ));
        }
    };
    inner.admit(&record, &digest)?;
    // A caching store has just kept the record with its identity: share that one.
    if let Some(CachedLookup::Found(key)) = inner.store.find_cached(&digest)
        && *key.record() == record
    {
        return Ok(Some(key.identity().clone()));
    }
    Ok(Some(identity_of(&record)))
}

/// The credential of an [`ApiKeyAuthenticator`]: the digest of a key that passed the
/// offline checks. The plaintext is dropped as soon as it is hashed; `Debug` shows only the
/// digest's first bytes.
#[derive(Debug)]
pub struct ApiKeyCredential(KeyDigest);

/// The future of [`ApiKeyAuthenticator`]: ready at once when the store answers from memory
/// (a [`CachedKeyStore`] hit), otherwise the store's lookup.
pub struct ApiKeyFuture(ReadyOrBoxed);

impl ApiKeyFuture {
    fn ready(outcome: Outcome) -> Self {
        Self(ReadyOrBoxed::Ready(Some(outcome)))
    }
}

impl fmt::Debug for ApiKeyFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyFuture").finish_non_exhaustive()
    }
}

impl Future for ApiKeyFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl Authenticator for ApiKeyAuthenticator {
    type Credential = ApiKeyCredential;
    type Future = ApiKeyFuture;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<ApiKeyCredential>, AuthError> {
        let key = match &self.inner.header {
            KeySourceHeader::Header(name) => match one_value(head.headers, name)? {
                None => return Ok(None),
                Some(v) => v
                    .to_str()
                    .map_err(|_| AuthError::invalid_request("API key header is not ASCII"))?
                    .trim(),
            },
            KeySourceHeader::AuthorizationApiKey => {
                let Some(v) = one_value(head.headers, &http::header::AUTHORIZATION)? else {
                    return Ok(None);
                };
                let v = v
                    .to_str()
                    .map_err(|_| AuthError::invalid_request("Authorization is not ASCII"))?;
                match v.split_once(' ') {
                    Some((scheme, key)) if scheme.eq_ignore_ascii_case("apikey") => key.trim(),
                    _ => return Ok(None),
                }
            }
        };
        if key.is_empty() {
            return Err(AuthError::invalid_request("empty API key"));
        }
        // Offline checks before any store work: length cap first.
        self.inner.format.check(key)?;
        Ok(Some(ApiKeyCredential(self.inner.format.digest(key))))
    }

    fn authenticate_now(&self, credential: ApiKeyCredential) -> Result<Outcome, ApiKeyCredential> {
        let digest = &credential.0;
        match self.inner.store.find_cached(digest) {
            Some(CachedLookup::Found(key)) => Ok(self
                .inner
                .admit(key.record(), digest)
                .map(|()| Some(key.identity().clone()))),
            Some(CachedLookup::Unknown) => Ok(Err(AuthError::invalid_token("unknown API key"))),
            None => Err(credential),
        }
    }

    fn authenticate(&self, credential: ApiKeyCredential) -> ApiKeyFuture {
        match self.authenticate_now(credential) {
            Ok(outcome) => ApiKeyFuture::ready(outcome),
            Err(ApiKeyCredential(digest)) => {
                ApiKeyFuture(ReadyOrBoxed::boxed(check(self.inner.clone(), digest)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_pass_their_own_check_and_one_character_changes_fail() {
        let format = KeyFormat::new("sk_live").unwrap();
        let (key, record) = format.generate(NewKey::new("o", "n")).unwrap();
        assert!(key.starts_with("sk_live_"));
        assert_eq!(key.len(), "sk_live_".len() + RANDOM_LEN + CHECKSUM_LEN);
        format.check(&key).unwrap();
        assert_eq!(record.digest, format.digest(&key));
        assert!(record.display.starts_with("sk_live_") && record.display.ends_with('…'));
        assert!(!record.display.contains(&key[12..]));
        // Every single-character substitution is caught offline.
        let bytes = key.as_bytes();
        let mut caught = 0;
        for i in "sk_live_".len()..bytes.len() {
            for &c in BASE62 {
                if c == bytes[i] {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[i] = c;
                let changed = String::from_utf8(changed).unwrap();
                assert!(format.check(&changed).is_err(), "{i}");
                caught += 1;
            }
        }
        assert_eq!(caught, (RANDOM_LEN + CHECKSUM_LEN) * 61);
        assert!(!format!("{key:?}").contains(&key[8..]));
    }

    #[test]
    fn malformed_keys_are_rejected_offline() {
        let format = KeyFormat::new("sk_live").unwrap();
        let (key, _) = format.generate(NewKey::new("o", "n")).unwrap();
        for bad in [
            String::new(),
            "sk_live_".into(),
            key.replace("sk_live", "sk_test"),
            format!("{key}x"),
            key[..key.len() - 1].to_owned(),
            "x".repeat(10_000),
            key.replacen('_', "-", 1),
            format!("{}é", &key[..key.len() - 2]),
        ] {
            assert!(format.check(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_unique_and_digests_depend_on_the_pepper() {
        let plain = KeyFormat::new("k").unwrap();
        let peppered = KeyFormat::new("k").unwrap().with_pepper(&[7; 32]).unwrap();
        assert!(KeyFormat::new("k").unwrap().with_pepper(&[7; 31]).is_err());
        let (a, _) = plain.generate(NewKey::new("o", "n")).unwrap();
        let (b, _) = plain.generate(NewKey::new("o", "n")).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(plain.digest(&a), peppered.digest(&a));
        assert!(plain.digest(&a).ct_eq(&plain.digest(&a)));
        assert!(!plain.digest(&a).ct_eq(&plain.digest(&b)));
        for bad in ["", "has space", "dash-no", &"p".repeat(33)] {
            assert!(KeyFormat::new(bad).is_err());
        }
    }
}
