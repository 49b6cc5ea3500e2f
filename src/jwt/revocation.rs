//! Revocation of verified tokens: [`RevocationStore`], [`MemoryRevocations`] and (feature
//! `redis`) `RedisRevocations`.
//!
//! Two kinds of revocation:
//! * one token, by its `jti`, until the token would have expired anyway;
//! * every token of a subject issued before an instant (logout everywhere, password
//!   change): tokens whose `iat` is earlier, or that carry no `iat`, are rejected.
//!
//! The authenticator asks the store after every successful verification, verified-token
//! cache hits included. A revoked token is a 401 `invalid_token`. When the store fails, the
//! configured [`FailurePolicy`](crate::FailurePolicy) decides: closed (the default) answers 503, open lets the
//! request through; both log the failure.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::{Duration, SystemTime};
//! use tower_api_guard::jwt::{MemoryRevocations, RevocationStore, TokenFacts};
//!
//! let store = MemoryRevocations::new();
//! let expires = SystemTime::now() + Duration::from_secs(3600);
//! store.revoke_token("jti-1", expires).await.unwrap();
//! let facts = TokenFacts { jti: Some("jti-1"), subject: "alice", issued_at: None };
//! assert!(store.is_revoked(&facts).await.unwrap());
//! # });
//! ```

use crate::error::Cause;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::{Clock, SystemClock};

/// What a revocation check needs to know about a verified token.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// The `jti`, if the token has one.
    pub jti: Option<&'a str>,
    /// The subject.
    pub subject: &'a str,
    /// The `iat`, if the token has one.
    pub issued_at: Option<SystemTime>,
}

/// A revocation store failed (unreachable, timed out). The reason is for logs; the
/// [`source`](std::error::Error::source), when there is one, is the underlying error (a
/// Redis error), kept for diagnosis and never carrying a token or a connection URL.
#[derive(Clone)]
pub struct RevocationError {
    reason: Cow<'static, str>,
    source: Cause,
}

impl RevocationError {
    /// A failure with a reason (never containing tokens).
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
            source: Cause::default(),
        }
    }

    /// Attach the underlying error, for diagnosis; it must not carry a secret (no token,
    /// no URL with credentials). [`source`](std::error::Error::source) returns it.
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

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "revocation store failed: {}", self.reason)
    }
}

impl std::error::Error for RevocationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.get()
    }
}

impl fmt::Debug for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.debug(f, "RevocationError", &self.reason)
    }
}

/// A revocation store's future.
pub type RevocationFuture<T> = Pin<Box<dyn Future<Output = Result<T, RevocationError>> + Send>>;

/// Where revocations live. Implementations must be cheap to ask: the authenticator asks
/// on every authenticated request.
pub trait RevocationStore: Send + Sync + fmt::Debug + 'static {
    /// Whether the token is revoked.
    fn is_revoked(&self, token: &TokenFacts<'_>) -> RevocationFuture<bool>;

    /// Revoke one token by its `jti` until `expires_at` (the token's `exp`).
    fn revoke_token(&self, jti: &str, expires_at: SystemTime) -> RevocationFuture<()>;

    /// Revoke every token of `subject` issued before `issued_before`.
    fn revoke_subject(&self, subject: &str, issued_before: SystemTime) -> RevocationFuture<()>;
}

/// The longest token lifetime assumed by default: a subject revocation is kept this long.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// An in-process [`RevocationStore`]: bounded (1,000,000 entries of each kind by default),
/// entries expire with the tokens they concern. For one process; use `RedisRevocations`
/// when the API runs on several machines.
#[derive(Clone)]
pub struct MemoryRevocations {
    jtis: moka::sync::Cache<String, SystemTime>,
    subjects: moka::sync::Cache<String, SystemTime>,
    clock: Arc<dyn Clock>,
    max_token_lifetime: Duration,
}

impl fmt::Debug for MemoryRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRevocations")
            .field("tokens", &self.jtis.entry_count())
            .field("subjects", &self.subjects.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryRevocations {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRevocations {
    /// A store with the default bounds and the system clock.
    pub fn new() -> Self {
        Self::with_capacity(1_000_000)
    }

    /// A store holding at most `capacity` revoked tokens and `capacity` revoked subjects.
    pub fn with_capacity(capacity: u64) -> Self {
        let cache = || {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(DEFAULT_MAX_TOKEN_LIFETIME * 2)
                .build()
        };
        Self {
            jtis: cache(),
            subjects: cache(),
            clock: Arc::new(SystemClock),
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// Use this clock (tests).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a subject revocation is kept (default 24 h): set it to your tokens'
    /// longest lifetime.
    #[must_use]
    pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = lifetime;
        self
    }

    fn check(&self, token: &TokenFacts<'_>) -> bool {
        let now = self.clock.now();
        if let Some(jti) = token.jti
            && self.jtis.get(jti).is_some_and(|until| now < until)
        {
            return true;
        }
        self.subjects.get(token.subject).is_some_and(|before| {
            now < before + self.max_token_lifetime && token.issued_at.is_none_or(|iat| iat < before)
        })
    }
}

impl RevocationStore for MemoryRevocations {
    fn is_revoked(&self, token: &TokenFacts<'_>) -> RevocationFuture<bool> {
        let revoked = self.check(token);
        Box::pin(std::future::ready(Ok(revoked)))
    }

    fn revoke_token(&self, jti: &str, expires_at: SystemTime) -> RevocationFuture<()> {
        self.jtis.insert(jti.to_owned(), expires_at);
        tracing::info!(target: "tower_api_guard::revocation", "token revoked");
        Box::pin(std::future::ready(Ok(())))
    }

    fn revoke_subject(&self, subject: &str, issued_before: SystemTime) -> RevocationFuture<()> {
        let newest = match self.subjects.get(subject) {
            Some(existing) if existing > issued_before => existing,
            _ => issued_before,
        };
        self.subjects.insert(subject.to_owned(), newest);
        tracing::info!(target: "tower_api_guard::revocation", "subject's tokens revoked");
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(feature = "redis")]
pub use redis_store::RedisRevocations;

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use crate::error::ConfigError;
    use crate::redis_conn::RedisConnection;

    /// Keeps a subject's revocation instant, only ever moving it later.
    const KEEP_LATEST: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1";

    /// A [`RevocationStore`] in Redis, so that every replica sees a revocation at once.
    /// One round trip per check (the `GET`s of the token's and the subject's keys, sent
    /// together), bounded by a timeout (default 50 ms). Keys expire with the tokens they
    /// concern. Works on one server or a Redis Cluster (see
    /// [`RedisConnection`](crate::RedisConnection)): each `GET` goes to the master of its
    /// key's slot.
    #[derive(Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub struct RedisRevocations {
        conn: RedisConnection,
        prefix: Arc<str>,
        clock: Arc<dyn Clock>,
        max_token_lifetime: Duration,
        timeout: Duration,
        script: Arc<redis::Script>,
    }

    impl fmt::Debug for RedisRevocations {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisRevocations")
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    fn millis(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    impl RedisRevocations {
        /// Connect to `url` (`redis://127.0.0.1:6379`, or a cluster:
        /// `redis+cluster://host:port,…`); keys are named `tag:revoked:…` (change with
        /// [`prefix`](Self::prefix)).
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
                prefix: "tag:revoked".into(),
                clock: Arc::new(SystemClock),
                max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
                timeout: Duration::from_millis(50),
                script: Arc::new(redis::Script::new(KEEP_LATEST)),
            }
        }

        /// The key prefix.
        #[must_use]
        pub fn prefix(mut self, prefix: &str) -> Self {
            self.prefix = prefix.into();
            self
        }

        /// The time limit of one call (default 50 ms).
        #[must_use]
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = timeout;
            self
        }

        /// Use this clock (tests).
        #[must_use]
        pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
            self.clock = clock;
            self
        }

        /// How long a subject revocation is kept (default 24 h).
        #[must_use]
        pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
            self.max_token_lifetime = lifetime;
            self
        }

        fn jti_key(&self, jti: &str) -> String {
            format!("{}:jti:{jti}", self.prefix)
        }

        fn subject_key(&self, subject: &str) -> String {
            format!("{}:sub:{subject}", self.prefix)
        }

        async fn bounded<T>(
            timeout: Duration,
            f: impl Future<Output = redis::RedisResult<T>>,
        ) -> Result<T, RevocationError> {
            match crate::redis_conn::within(timeout, crate::metrics::RedisOp::Revocation, f).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(RevocationError::new("Redis error").with_source(e)),
                Err(_) => Err(RevocationError::new("Redis timed out")),
            }
        }
    }

    impl RevocationStore for RedisRevocations {
        fn is_revoked(&self, token: &TokenFacts<'_>) -> RevocationFuture<bool> {
            let mut conn = self.conn.clone();
            let jti_key = token.jti.map(|j| self.jti_key(j));
            let sub_key = self.subject_key(token.subject);
            let iat = token.issued_at.map(millis);
            let timeout = self.timeout;
            Box::pin(async move {
                let before: Option<u64> = match jti_key {
                    Some(jti_key) => {
                        // Two commands, not a pipeline: in a cluster the keys live in
                        // different slots. The multiplexed connection sends them together.
                        let mut other = conn.clone();
                        let jti = redis::cmd("GET").arg(jti_key).to_owned();
                        let sub = redis::cmd("GET").arg(sub_key).to_owned();
                        let both = futures_util::future::try_join(
                            jti.query_async::<Option<String>>(&mut conn),
                            sub.query_async::<Option<u64>>(&mut other),
                        );
                        let (jti, before) = Self::bounded(timeout, both).await?;
                        if jti.is_some() {
                            return Ok(true);
                        }
                        before
                    }
                    None => {
                        let get = redis::cmd("GET").arg(sub_key).to_owned();
                        Self::bounded(timeout, get.query_async(&mut conn)).await?
                    }
                };
                Ok(before.is_some_and(|before| iat.is_none_or(|iat| iat < before)))
            })
        }

        fn revoke_token(&self, jti: &str, expires_at: SystemTime) -> RevocationFuture<()> {
            let mut conn = self.conn.clone();
            let key = self.jti_key(jti);
            let ttl = expires_at
                .duration_since(self.clock.now())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(1));
            let timeout = self.timeout;
            Box::pin(async move {
                let set = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .to_owned();
                Self::bounded::<()>(timeout, set.query_async(&mut conn)).await?;
                tracing::info!(target: "tower_api_guard::revocation", "token revoked");
                Ok(())
            })
        }

        fn revoke_subject(&self, subject: &str, issued_before: SystemTime) -> RevocationFuture<()> {
            let mut conn = self.conn.clone();
            let key = self.subject_key(subject);
            let keep = (issued_before + self.max_token_lifetime)
                .duration_since(self.clock.now())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(1));
            let script = self.script.clone();
            let timeout = self.timeout;
            Box::pin(async move {
                let mut invocation = script.key(&key);
                invocation
                    .arg(millis(issued_before))
                    .arg(keep.as_millis() as u64);
                Self::bounded::<i64>(timeout, invocation.invoke_async(&mut conn)).await?;
                tracing::info!(target: "tower_api_guard::revocation", "subject's tokens revoked");
                Ok(())
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::error::Error as _;

        #[tokio::test]
        async fn a_redis_error_is_kept_as_the_source() {
            let failing = async {
                Err::<(), _>(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset",
                )))
            };
            let err = RedisRevocations::bounded(Duration::from_secs(1), failing)
                .await
                .unwrap_err();
            assert_eq!(err.reason(), "Redis error");
            let source = err.source().expect("the Redis error is kept");
            assert!(source.downcast_ref::<redis::RedisError>().is_some());
            assert!(source.to_string().contains("connection reset"));

            let slow = std::future::pending::<redis::RedisResult<()>>();
            let err = RedisRevocations::bounded(Duration::from_millis(1), slow)
                .await
                .unwrap_err();
            assert_eq!(err.reason(), "Redis timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn source_is_none_by_default_and_kept_when_attached() {
        let plain = RevocationError::new("down");
        assert!(plain.source().is_none());
        assert_eq!(
            format!("{plain:?}"),
            r#"RevocationError { reason: "down" }"#
        );
        let err =
            RevocationError::new("Redis error").with_source(std::io::Error::other("broken pipe"));
        assert_eq!(err.to_string(), "revocation store failed: Redis error");
        assert_eq!(err.source().unwrap().to_string(), "broken pipe");
        assert_eq!(err.clone().source().unwrap().to_string(), "broken pipe");
        assert_eq!(
            format!("{err:?}"),
            r#"RevocationError { reason: "Redis error", source: broken pipe }"#
        );
    }
}
