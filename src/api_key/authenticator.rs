//! [`ApiKeyAuthenticator`]: reads the key from a header, checks it offline, looks its
//! digest up (from memory when the store caches, otherwise in the store), and admits the
//! record (digest in constant time, revocation, expiry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use http::HeaderName;

use super::{ApiKeyRecord, ApiKeyStore, CachedLookup, KeyDigest, KeyFormat, LastUsedTracker};
use crate::auth::{Authenticator, Outcome, ReadyOrBoxed};
use crate::clock::{Clock, SystemClock};
use crate::error::{AuthError, ReasonCode};
use crate::extract::one_value;
use crate::head::RequestHead;
use crate::identity::Identity;

/// Where an [`ApiKeyAuthenticator`] reads keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeySourceHeader {
    /// A header holding the key (default `X-API-Key`).
    Header(HeaderName),
    /// `Authorization: ApiKey <key>`.
    AuthorizationApiKey,
}

/// How often, at most, the age warning is logged for one key.
const AGE_WARNING_INTERVAL: Duration = Duration::from_secs(3600);
/// How many keys the age warnings remember (a key forgotten early is warned about again).
const AGE_WARNING_KEYS: usize = 10_000;

/// The age policy: when to warn about a key, when to refuse it.
#[derive(Clone, Default)]
struct AgePolicy {
    warn_after: Option<Duration>,
    refuse_after: Option<Duration>,
    /// When each key was last warned about, on the authenticator's clock.
    warned: Option<Arc<quick_cache::sync::Cache<KeyDigest, SystemTime>>>,
}

impl AgePolicy {
    /// Refuse a key past the maximum age; warn about one past the warning age (the event at
    /// most once an hour per key, the counter on every request).
    fn check(
        &self,
        record: &ApiKeyRecord,
        digest: &KeyDigest,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        if self.warn_after.is_none() && self.refuse_after.is_none() {
            return Ok(());
        }
        // A creation time in the future (a clock step) is age zero.
        let age = now.duration_since(record.created_at).unwrap_or_default();
        if self.refuse_after.is_some_and(|max| age >= max) {
            crate::metrics::api_key_age(true);
            return Err(
                AuthError::invalid_token("API key older than the maximum age")
                    .with_code(ReasonCode::KeyTooOld),
            );
        }
        if self.warn_after.is_some_and(|warn| age >= warn) {
            crate::metrics::api_key_age(false);
            if self.first_warning_in_a_while(digest, now) {
                tracing::warn!(
                    target: "tower_api_guard::auth",
                    key_id = %record.id,
                    owner = %record.owner,
                    age_days = age.as_secs() / 86_400,
                    "API key older than the warning age: rotate it"
                );
            }
        }
        Ok(())
    }

    /// Whether the key was not warned about within the interval (and note that it is now).
    /// Two requests racing may both warn: the bound is approximate.
    fn first_warning_in_a_while(&self, digest: &KeyDigest, now: SystemTime) -> bool {
        let Some(warned) = &self.warned else {
            return true;
        };
        if let Some(last) = warned.get(digest)
            && now
                .duration_since(last)
                .is_ok_and(|d| d < AGE_WARNING_INTERVAL)
        {
            return false;
        }
        warned.insert(*digest, now);
        true
    }

    fn remember_warnings(&mut self) {
        if self.warned.is_none() {
            self.warned = Some(Arc::new(quick_cache::sync::Cache::new(AGE_WARNING_KEYS)));
        }
    }
}

struct Inner {
    format: KeyFormat,
    store: Arc<dyn ApiKeyStore>,
    header: KeySourceHeader,
    clock: Arc<dyn Clock>,
    last_used: Option<LastUsedTracker>,
    age: AgePolicy,
}

/// Authenticates requests by API key. See the [module docs](super).
#[derive(Clone)]
pub struct ApiKeyAuthenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for ApiKeyAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyAuthenticator")
            .field("format", &self.inner.format)
            .field("header", &self.inner.header)
            .field("warn_after_age", &self.inner.age.warn_after)
            .field("refuse_after_age", &self.inner.age.refuse_after)
            .finish_non_exhaustive()
    }
}

impl ApiKeyAuthenticator {
    /// Keys of `format`, looked up in `store` (wrap it in a
    /// [`CachedKeyStore`](super::CachedKeyStore) in production), read from `X-API-Key`.
    pub fn new(format: KeyFormat, store: impl ApiKeyStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                format,
                store: Arc::new(store),
                header: KeySourceHeader::Header(HeaderName::from_static("x-api-key")),
                clock: Arc::new(SystemClock),
                last_used: None,
                age: AgePolicy::default(),
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
            age: arc.age.clone(),
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

    /// The clock for expiry and revocation instants, and for keys' ages.
    #[must_use]
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        self.with(|i| i.clock = clock)
    }

    /// Warn about keys older than `age` (since their record's
    /// [`created_at`](ApiKeyRecord::created_at), on this authenticator's [`clock`](Self::clock)):
    /// they are still accepted, but each such request adds one to
    /// `tower_api_guard_api_key_age_total{action="warned"}` (feature `metrics`) and a `warn`
    /// event (target `tower_api_guard::auth`, fields `key_id`, `owner`, `age_days`; never the
    /// key) is logged at most once an hour per key, however often the key is used.
    ///
    /// Rotation ([`KeyFormat::rotate`]) makes a new record, so a rotated key is young again.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_api_guard::api_key::{ApiKeyAuthenticator, KeyFormat, MemoryKeyStore};
    ///
    /// const DAY: Duration = Duration::from_secs(86_400);
    /// let auth = ApiKeyAuthenticator::new(KeyFormat::new("sk_live").unwrap(), MemoryKeyStore::new())
    ///     .warn_after_age(90 * DAY)
    ///     .refuse_after_age(365 * DAY);
    /// ```
    #[must_use]
    pub fn warn_after_age(self, age: Duration) -> Self {
        self.with(|i| {
            i.age.warn_after = Some(age);
            i.age.remember_warnings();
        })
    }

    /// Refuse keys whose age (see [`warn_after_age`](Self::warn_after_age)) has reached
    /// `age`: 401 `invalid_token`, reason "API key older than the maximum age", code
    /// [`ReasonCode::KeyTooOld`], and one more
    /// `tower_api_guard_api_key_age_total{action="refused"}` (feature `metrics`). A revoked or
    /// expired key is refused as such first.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tower_api_guard::ReasonCode;
    /// use tower_api_guard::api_key::{ApiKeyAuthenticator, KeyFormat, MemoryKeyStore, NewKey};
    /// use tower_api_guard::clock::{Clock, ManualClock};
    ///
    /// const DAY: Duration = Duration::from_secs(86_400);
    /// let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
    /// let format = KeyFormat::new("sk_test").unwrap();
    /// let store = MemoryKeyStore::new();
    /// let (key, record) = format.generate_at(NewKey::new("owner", "ci"), clock.now()).unwrap();
    /// store.insert(record);
    /// let auth = ApiKeyAuthenticator::new(format, store)
    ///     .clock(clock.clone())
    ///     .refuse_after_age(365 * DAY);
    /// assert!(auth.verify(&key).await.is_ok());
    /// clock.advance(365 * DAY);
    /// assert_eq!(auth.verify(&key).await.unwrap_err().code(), ReasonCode::KeyTooOld);
    /// # });
    /// ```
    #[must_use]
    pub fn refuse_after_age(self, age: Duration) -> Self {
        self.with(|i| i.age.refuse_after = Some(age))
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
            None => Err(unknown()),
        }
    }
}

fn unknown() -> AuthError {
    AuthError::invalid_token("unknown API key").with_code(ReasonCode::UnknownKey)
}

impl Inner {
    /// The checks on a found record: the digest (in constant time), revocation, expiry, age.
    /// Records the use when the key passes.
    fn admit(&self, record: &ApiKeyRecord, digest: &KeyDigest) -> Result<(), AuthError> {
        if !record.digest.ct_eq(digest) {
            return Err(unknown());
        }
        let now = self.clock.now();
        if record.revoked_at.is_some_and(|at| now >= at) {
            return Err(AuthError::invalid_token("API key revoked").with_code(ReasonCode::Revoked));
        }
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(AuthError::invalid_token("API key expired").with_code(ReasonCode::Expired));
        }
        self.age.check(record, digest, now)?;
        if let Some(tracker) = &self.last_used {
            tracker.touch(&record.id, now);
        }
        Ok(())
    }
}

/// Ask the store (the slow path: nothing in memory). The lookup is timed
/// (`tower_api_guard_verification_seconds{method="api_key"}`) and a failure counted
/// (`tower_api_guard_store_errors_total{layer="auth",store="api_key"}`).
async fn check(inner: Arc<Inner>, digest: KeyDigest) -> Outcome {
    let timer = crate::metrics::Timer::start();
    // A caching store answers with the identity it keeps, shared by the hits to come.
    let key = match inner.store.find_resolved(&digest).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            timer.verification(crate::metrics::Method::ApiKey);
            return Err(unknown());
        }
        Err(e) => {
            crate::metrics::store_error(
                crate::gate::LayerKind::Auth,
                crate::metrics::Store::ApiKey,
            );
            tracing::warn!(target: "tower_api_guard::api_key", reason = %e.reason(), "API key store failed");
            return Err(AuthError::unavailable(
                "API key store failed",
                Duration::from_secs(1),
            ));
        }
    };
    timer.verification(crate::metrics::Method::ApiKey);
    inner.admit(key.record(), &digest)?;
    Ok(Some(key.identity().clone()))
}

/// The credential of an [`ApiKeyAuthenticator`]: the digest of a key that passed the
/// offline checks. The plaintext is dropped as soon as it is hashed; `Debug` shows only the
/// digest's first bytes.
#[derive(Debug)]
pub struct ApiKeyCredential(KeyDigest);

/// The future of [`ApiKeyAuthenticator`]: ready at once when the store answers from memory
/// (a [`CachedKeyStore`](super::CachedKeyStore) hit), otherwise the store's lookup.
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
            Some(CachedLookup::Unknown) => Ok(Err(unknown())),
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
