//! [`ApiKeyAuthenticator`]: reads the key from a header, checks it offline, looks its
//! digest up (from memory when the store caches, otherwise in the store), and admits the
//! record (digest in constant time, revocation, expiry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::HeaderName;

use super::{
    ApiKeyRecord, ApiKeyStore, CachedLookup, KeyDigest, KeyFormat, LastUsedTracker, identity_of,
};
use crate::auth::{Authenticator, Outcome, ReadyOrBoxed};
use crate::clock::{Clock, SystemClock};
use crate::error::AuthError;
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

struct Inner {
    format: KeyFormat,
    store: Arc<dyn ApiKeyStore>,
    header: KeySourceHeader,
    clock: Arc<dyn Clock>,
    last_used: Option<LastUsedTracker>,
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
            None => Err(AuthError::invalid_token("unknown API key")
                .with_code(crate::error::ReasonCode::UnknownKey)),
        }
    }
}

impl Inner {
    /// The checks on a found record: the digest (in constant time), revocation, expiry.
    /// Records the use when the key passes.
    fn admit(&self, record: &ApiKeyRecord, digest: &KeyDigest) -> Result<(), AuthError> {
        if !record.digest.ct_eq(digest) {
            return Err(AuthError::invalid_token("unknown API key")
                .with_code(crate::error::ReasonCode::UnknownKey));
        }
        let now = self.clock.now();
        if record.revoked_at.is_some_and(|at| now >= at) {
            return Err(AuthError::invalid_token("API key revoked")
                .with_code(crate::error::ReasonCode::Revoked));
        }
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(AuthError::invalid_token("API key expired")
                .with_code(crate::error::ReasonCode::Expired));
        }
        if let Some(tracker) = &self.last_used {
            tracker.touch(&record.id, now);
        }
        Ok(())
    }
}

/// Ask the store (the slow path: nothing in memory).
async fn check(inner: Arc<Inner>, digest: KeyDigest) -> Outcome {
    let record = match inner.store.find(&digest).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            return Err(AuthError::invalid_token("unknown API key")
                .with_code(crate::error::ReasonCode::UnknownKey));
        }
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
            Some(CachedLookup::Unknown) => Ok(Err(AuthError::invalid_token("unknown API key")
                .with_code(crate::error::ReasonCode::UnknownKey))),
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
