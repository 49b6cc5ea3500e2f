//! Remote key sets: [`RemoteJwks`], OIDC discovery, and the [`JwksFetcher`] trait.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Shared;
use serde_json::Value;

use super::jose;
use super::keys::{KeySet, KeySetFuture, KeySource};
use crate::clock::{Clock, SystemClock};
use crate::error::{AuthError, ConfigError};

/// What a [`JwksFetcher`] is asked to get.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FetchRequest {
    /// The URL.
    pub url: String,
    /// The `ETag` of the set held now, for `If-None-Match`.
    pub etag: Option<String>,
    /// The largest body accepted, in bytes.
    pub max_body: usize,
    /// The time allowed for the whole fetch, body included.
    pub timeout: Duration,
}

/// What a [`JwksFetcher`] got.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FetchResponse {
    /// HTTP 200 with a JSON body.
    Modified {
        /// The body (at most `max_body` bytes).
        body: Bytes,
        /// The response's `ETag`.
        etag: Option<String>,
        /// `Cache-Control: max-age`, if any.
        max_age: Option<Duration>,
    },
    /// HTTP 304: the set held is still current.
    NotModified {
        /// `Cache-Control: max-age`, if any.
        max_age: Option<Duration>,
    },
}

/// A failed fetch. The reason is for logs (it never contains response bodies).
#[derive(Debug, Clone, thiserror::Error)]
#[error("key set fetch failed: {reason}")]
pub struct FetchError {
    reason: Cow<'static, str>,
}

impl FetchError {
    /// A failure with a reason.
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

/// The fetch's future.
pub type FetchFuture = Pin<Box<dyn Future<Output = Result<FetchResponse, FetchError>> + Send>>;

/// Gets key sets and discovery documents over HTTP. Implement it to bring your own client
/// (a proxy, mTLS); the default is `ReqwestFetcher` (feature `reqwest`).
///
/// An implementation must honour [`FetchRequest::timeout`] and
/// [`FetchRequest::max_body`], answer only HTTP 200 (as [`FetchResponse::Modified`]) or 304,
/// accept only a JSON content type, and never follow a redirect to another origin.
/// [`RemoteJwks`] also enforces the timeout around every call.
pub trait JwksFetcher: Send + Sync + fmt::Debug + 'static {
    /// Fetch `request.url`.
    fn fetch(&self, request: FetchRequest) -> FetchFuture;
}

/// Parse `Cache-Control` for `max-age`; `no-store` / `no-cache` count as 0.
pub fn parse_max_age(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

#[cfg(feature = "reqwest")]
pub use reqwest_fetcher::ReqwestFetcher;

#[cfg(feature = "reqwest")]
mod reqwest_fetcher {
    use super::*;
    use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

    /// The default [`JwksFetcher`]: reqwest with rustls, no cross-origin redirects, at most
    /// 3 redirects.
    #[derive(Debug, Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub struct ReqwestFetcher {
        client: reqwest::Client,
    }

    impl ReqwestFetcher {
        /// A fetcher with its own client.
        ///
        /// # Errors
        /// When the TLS backend cannot be initialised.
        pub fn new() -> Result<Self, ConfigError> {
            let policy = reqwest::redirect::Policy::custom(|attempt| {
                let same_origin = attempt.previous().first().is_some_and(|first| {
                    first.scheme() == attempt.url().scheme()
                        && first.host_str() == attempt.url().host_str()
                        && first.port_or_known_default() == attempt.url().port_or_known_default()
                });
                if attempt.previous().len() > 3 {
                    attempt.error("too many redirects")
                } else if same_origin {
                    attempt.follow()
                } else {
                    attempt.error("redirect to another origin")
                }
            });
            let client = reqwest::Client::builder()
                .redirect(policy)
                .user_agent(concat!("tower-api-guard/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ConfigError::unavailable("cannot build the HTTP client", e))?;
            Ok(Self { client })
        }

        /// A fetcher over your client (proxy, mTLS). Configure its redirect policy to stay
        /// on the same origin.
        pub fn with_client(client: reqwest::Client) -> Self {
            Self { client }
        }
    }

    impl JwksFetcher for ReqwestFetcher {
        fn fetch(&self, request: FetchRequest) -> FetchFuture {
            let client = self.client.clone();
            Box::pin(async move {
                let mut builder = client
                    .get(&request.url)
                    .timeout(request.timeout)
                    .header(ACCEPT, "application/jwk-set+json, application/json");
                if let Some(etag) = &request.etag {
                    builder = builder.header(IF_NONE_MATCH, etag);
                }
                let mut response = builder.send().await.map_err(|e| {
                    if e.is_timeout() {
                        FetchError::new("timeout")
                    } else if e.is_redirect() {
                        FetchError::new("redirect refused")
                    } else {
                        FetchError::new("connection failed")
                    }
                })?;
                let headers = response.headers();
                let max_age = headers
                    .get(CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_max_age);
                match response.status().as_u16() {
                    304 => return Ok(FetchResponse::NotModified { max_age }),
                    200 => {}
                    status => return Err(FetchError::new(format!("HTTP status {status}"))),
                }
                let is_json = headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| {
                        let essence = ct
                            .split(';')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_ascii_lowercase();
                        essence == "application/json" || essence.ends_with("+json")
                    });
                if !is_json {
                    return Err(FetchError::new("content type is not JSON"));
                }
                let declared = headers
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|len| len > request.max_body as u64) {
                    return Err(FetchError::new("body larger than the cap"));
                }
                let etag = headers
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut body = Vec::new();
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            if body.len() + chunk.len() > request.max_body {
                                return Err(FetchError::new("body larger than the cap"));
                            }
                            body.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(e) if e.is_timeout() => return Err(FetchError::new("timeout")),
                        Err(_) => return Err(FetchError::new("body read failed")),
                    }
                }
                Ok(FetchResponse::Modified {
                    body: Bytes::from(body),
                    etag,
                    max_age,
                })
            })
        }
    }
}

/// Where the key set lives.
#[derive(Debug, Clone)]
enum Location {
    Jwks(String),
    Discovery(String),
}

/// Tunables of a [`RemoteJwks`]; see its docs for what each does.
#[derive(Debug, Clone)]
struct Settings {
    default_ttl: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    cooldown: Duration,
    fetch_timeout: Duration,
    max_body: usize,
    max_stale: Duration,
    negative_cache_size: u64,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(600),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            cooldown: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            max_body: 1024 * 1024,
            max_stale: Duration::from_secs(24 * 3600),
            negative_cache_size: 10_000,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// The held state, replaced whole on every change.
#[derive(Debug, Clone)]
struct Snapshot {
    keys: Option<Arc<KeySet>>,
    etag: Option<String>,
    last_success: Option<SystemTime>,
    /// Keys are fresh until then.
    expires_at: Option<SystemTime>,
    /// The next refresh may start then (80 % of the TTL, or the backoff after a failure).
    refresh_at: SystemTime,
    failures: u32,
    last_error: Option<Cow<'static, str>>,
    attempted: bool,
}

/// The state of a key source, for a readiness endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySourceStatus {
    /// Number of usable keys held.
    pub keys: usize,
    /// When the set was last fetched successfully.
    pub last_success: Option<SystemTime>,
    /// The last fetch error, if the last fetch failed.
    pub last_error: Option<String>,
    /// Whether the held keys are past their TTL (still served up to `max_stale`).
    pub stale: bool,
    /// Whether tokens can be verified now.
    pub usable: bool,
}

impl KeySourceStatus {
    /// The status of keys that never change (static keys).
    pub fn fixed(keys: usize) -> Self {
        Self {
            keys,
            last_success: None,
            last_error: None,
            stale: false,
            usable: keys > 0,
        }
    }
}

type SharedRefresh = Shared<Pin<Box<dyn Future<Output = Result<Arc<KeySet>, AuthError>> + Send>>>;

struct Inner {
    location: Location,
    fetcher: Arc<dyn JwksFetcher>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    state: ArcSwap<Snapshot>,
    inflight: Mutex<Option<SharedRefresh>>,
    last_unknown_kid_refresh: Mutex<Option<SystemTime>>,
    /// Unknown kids and when they were seen (judged by the injectable clock; moka's own
    /// TTL only bounds memory).
    unknown_kids: moka::sync::Cache<String, SystemTime>,
    jwks_url: Mutex<Option<String>>,
    jitter: std::collections::hash_map::RandomState,
}

/// A key set fetched from a JWKS URL (or found through OIDC discovery), cached, refreshed
/// in the background and rotated.
///
/// * **Reads are lock-free.** Every request reads an [`arc_swap`] snapshot of the parsed
///   keys; nothing holds a lock across I/O.
/// * **Freshness.** The TTL comes from `Cache-Control: max-age`, clamped to
///   [1 min, 24 h] (default 10 min). Once 80 % of it has passed, the next request starts a
///   refresh in the background (with `If-None-Match`), and keeps using the current keys.
/// * **Unknown `kid`.** One refetch, shared by every concurrent request that needs it
///   (single-flight), at most once per cooldown (default 30 s); during the cooldown such
///   tokens fail at once with 401, and unknown kids are remembered in a bounded negative
///   cache. A request waits at most the fetch timeout, and only for an unknown kid.
/// * **Failures.** Fetch timeout (default 5 s), body cap (default 1 MiB), HTTP 200 (or 304)
///   and a JSON content type only, no redirect to another origin. On failure the last good
///   keys are kept up to `max_stale` past their expiry (default 24 h); retries back off with
///   jitter; the state change is logged once, not per request. With no usable key the
///   verifier answers 503 with `Retry-After`. A document that does not parse, or holds no
///   usable key, never replaces a good set; single bad keys are dropped with a warning.
/// * **Rotation.** A key removed from the set stops verifying at the next refresh.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_api_guard::jwt::{JwtAuthenticator, RemoteJwks};
///
/// let keys = RemoteJwks::discover("https://login.example.com/realms/main").build()?;
/// keys.ready().await?; // optional: fetch before serving
/// let jwt = JwtAuthenticator::builder("https://login.example.com/realms/main", "my-api")
///     .keys(keys)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    inner: Arc<Inner>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("location", &self.inner.location)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Configures a [`RemoteJwks`].
#[must_use]
#[derive(Debug)]
pub struct RemoteJwksBuilder {
    location: Location,
    fetcher: Option<Arc<dyn JwksFetcher>>,
    settings: Settings,
    clock: Arc<dyn Clock>,
}

impl RemoteJwks {
    /// Keys from a JWKS URL.
    pub fn builder(jwks_url: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(Location::Jwks(jwks_url.into()))
    }

    /// Keys found through OIDC discovery: `{issuer}/.well-known/openid-configuration`,
    /// falling back to RFC 8414's `/.well-known/oauth-authorization-server`. The
    /// document's `issuer` must equal `issuer` exactly; its `jwks_uri` is used.
    pub fn discover(issuer: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(Location::Discovery(issuer.into()))
    }

    /// Fetch the key set now if none is held, and wait for it (at most the fetch timeout).
    ///
    /// # Errors
    /// [`AuthError::unavailable`] when the fetch fails.
    pub async fn ready(&self) -> Result<(), AuthError> {
        if self.inner.state.load().keys.is_some() {
            return Ok(());
        }
        self.refresh().await.map(|_| ())
    }

    /// Refresh now (joining a refresh already running), bounded by the fetch timeout.
    ///
    /// # Errors
    /// [`AuthError::unavailable`] when the fetch fails; the held keys stay in place.
    pub async fn refresh(&self) -> Result<Arc<KeySet>, AuthError> {
        let refresh = self.shared_refresh();
        match tokio::time::timeout(self.inner.settings.fetch_timeout, refresh).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(&self.inner, "key set fetch timed out")),
        }
    }

    /// The state, for a readiness endpoint (same as [`KeySource::status`]).
    pub fn status(&self) -> KeySourceStatus {
        let snap = self.inner.state.load();
        let now = self.inner.clock.now();
        KeySourceStatus {
            keys: snap.keys.as_ref().map_or(0, |k| k.len()),
            last_success: snap.last_success,
            last_error: snap.last_error.as_ref().map(|e| e.to_string()),
            stale: snap.expires_at.is_some_and(|at| now >= at),
            usable: usable(&self.inner, &snap, now),
        }
    }

    /// The single in-flight refresh, started if none is running.
    fn shared_refresh(&self) -> SharedRefresh {
        let mut slot = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(running) = slot.as_ref() {
            return running.clone();
        }
        let inner = self.inner.clone();
        let fut: Pin<Box<dyn Future<Output = Result<Arc<KeySet>, AuthError>> + Send>> =
            Box::pin(async move {
                let result = refresh_once(&inner).await;
                *inner.inflight.lock().unwrap_or_else(|e| e.into_inner()) = None;
                result
            });
        let shared = fut.shared();
        *slot = Some(shared.clone());
        // A task drives the refresh to its end, so that it completes (and frees the slot)
        // even when every waiter gives up at its timeout.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let driver = shared.clone();
            handle.spawn(async move {
                let _ = driver.await;
            });
        }
        shared
    }

    /// Start a refresh in the background (a no-op while one runs).
    fn spawn_refresh(&self) {
        drop(self.shared_refresh());
    }
}

fn unavailable(inner: &Inner, reason: &'static str) -> AuthError {
    let snap = inner.state.load();
    let retry = snap
        .refresh_at
        .duration_since(inner.clock.now())
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1));
    AuthError::unavailable(reason, retry)
}

fn usable(inner: &Inner, snap: &Snapshot, now: SystemTime) -> bool {
    match (&snap.keys, snap.expires_at) {
        (Some(_), Some(expires)) => now < expires + inner.settings.max_stale,
        _ => false,
    }
}

impl KeySource for RemoteJwks {
    fn status(&self) -> KeySourceStatus {
        RemoteJwks::status(self)
    }

    fn current(&self) -> Result<Arc<KeySet>, AuthError> {
        let snap = self.inner.state.load();
        let now = self.inner.clock.now();
        if now >= snap.refresh_at && self.inner.inflight.lock().map_or(true, |s| s.is_none()) {
            self.spawn_refresh();
        }
        match &snap.keys {
            Some(keys) if usable(&self.inner, &snap, now) => Ok(keys.clone()),
            Some(_) => Err(unavailable(&self.inner, "key set older than max-stale")),
            // Never fetched (lazy mode): an empty set sends every token to the refresh path,
            // which waits for the first fetch.
            None if !snap.attempted => Ok(Arc::new(KeySet::default())),
            None => Err(unavailable(&self.inner, "no key set could be fetched")),
        }
    }

    fn refresh_for_unknown_kid(&self, kid: &str) -> Option<KeySetFuture> {
        let inner = &self.inner;
        let first_fetch = !inner.state.load().attempted;
        if !first_fetch {
            let now = inner.clock.now();
            if inner
                .unknown_kids
                .get(kid)
                .is_some_and(|seen| now < seen + inner.settings.cooldown)
            {
                return None;
            }
            let mut last = inner
                .last_unknown_kid_refresh
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| now < at + inner.settings.cooldown) {
                inner.unknown_kids.insert(kid.to_owned(), now);
                tracing::debug!(
                    target: "tower_api_guard::jwks",
                    "unknown kid during the refetch cooldown"
                );
                return None;
            }
            *last = Some(now);
        }
        let this = self.clone();
        let kid = kid.to_owned();
        Some(Box::pin(async move {
            let set = this.refresh().await?;
            if set.get(&kid).is_none() {
                let now = this.inner.clock.now();
                this.inner.unknown_kids.insert(kid, now);
            }
            Ok(set)
        }))
    }
}

impl RemoteJwksBuilder {
    fn new(location: Location) -> Self {
        Self {
            location,
            fetcher: None,
            settings: Settings::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The HTTP client (default: `ReqwestFetcher`, feature `reqwest`).
    pub fn fetcher(mut self, fetcher: impl JwksFetcher) -> Self {
        self.fetcher = Some(Arc::new(fetcher));
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// TTL when the response has no `Cache-Control: max-age` (default 10 min).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_ttl = ttl;
        self
    }

    /// Bounds for the TTL (default 1 min to 24 h).
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.settings.min_ttl = min;
        self.settings.max_ttl = max;
        self
    }

    /// At most one unknown-`kid` refetch per `cooldown` (default 30 s).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.settings.cooldown = cooldown;
        self
    }

    /// The time allowed for one fetch, body included (default 5 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.settings.fetch_timeout = timeout;
        self
    }

    /// The largest key-set or discovery document accepted (default 1 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.settings.max_body = bytes;
        self
    }

    /// How long past their TTL the last good keys are used while fetches fail (default 24 h).
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.settings.max_stale = max_stale;
        self
    }

    /// Retry backoff after failures: `base` doubling up to `max`, with jitter
    /// (default 1 s to 5 min).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.settings.backoff_base = base;
        self.settings.backoff_max = max;
        self
    }

    /// Finish. Nothing is fetched yet: call [`RemoteJwks::ready`] to fetch before serving,
    /// or let the first request fetch (lazy mode).
    ///
    /// # Errors
    /// An empty or non-HTTP(S) URL, inconsistent bounds, or no fetcher when the `reqwest`
    /// feature is off.
    pub fn build(self) -> Result<RemoteJwks, ConfigError> {
        let url = match &self.location {
            Location::Jwks(u) | Location::Discovery(u) => u,
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::setting(
                "key set URL or issuer is not an http(s) URL",
            ));
        }
        let s = &self.settings;
        if s.min_ttl > s.max_ttl || s.fetch_timeout.is_zero() || s.max_body == 0 {
            return Err(ConfigError::setting("inconsistent key set settings"));
        }
        let fetcher = match self.fetcher {
            Some(f) => f,
            None => default_fetcher()?,
        };
        let now = self.clock.now();
        Ok(RemoteJwks {
            inner: Arc::new(Inner {
                jwks_url: Mutex::new(match &self.location {
                    Location::Jwks(u) => Some(u.clone()),
                    Location::Discovery(_) => None,
                }),
                location: self.location,
                fetcher,
                unknown_kids: moka::sync::Cache::builder()
                    .max_capacity(self.settings.negative_cache_size)
                    .time_to_live(self.settings.cooldown.max(Duration::from_secs(1)))
                    .build(),
                settings: self.settings,
                clock: self.clock,
                state: ArcSwap::from_pointee(Snapshot {
                    keys: None,
                    etag: None,
                    last_success: None,
                    expires_at: None,
                    refresh_at: now,
                    failures: 0,
                    last_error: None,
                    attempted: false,
                }),
                inflight: Mutex::new(None),
                last_unknown_kid_refresh: Mutex::new(None),
                jitter: std::collections::hash_map::RandomState::new(),
            }),
        })
    }
}

#[cfg(feature = "reqwest")]
fn default_fetcher() -> Result<Arc<dyn JwksFetcher>, ConfigError> {
    Ok(Arc::new(ReqwestFetcher::new()?))
}

#[cfg(not(feature = "reqwest"))]
fn default_fetcher() -> Result<Arc<dyn JwksFetcher>, ConfigError> {
    Err(ConfigError::setting(
        "no JwksFetcher: enable the `reqwest` feature or call .fetcher(..)",
    ))
}

/// Fetch with the configured timeout around the fetcher.
async fn fetch(
    inner: &Inner,
    url: String,
    etag: Option<String>,
) -> Result<FetchResponse, FetchError> {
    let request = FetchRequest {
        url,
        etag,
        max_body: inner.settings.max_body,
        timeout: inner.settings.fetch_timeout,
    };
    match tokio::time::timeout(inner.settings.fetch_timeout, inner.fetcher.fetch(request)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::new("timeout")),
    }
}

/// The JWKS URL, found through discovery the first time when configured so.
async fn jwks_url(inner: &Inner) -> Result<String, FetchError> {
    if let Some(url) = inner
        .jwks_url
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        return Ok(url);
    }
    let Location::Discovery(issuer) = &inner.location else {
        return Err(FetchError::new("no JWKS URL"));
    };
    let url = discover(inner, issuer).await?;
    *inner.jwks_url.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
    Ok(url)
}

/// The discovery URLs for `issuer`: OIDC first, then RFC 8414 (well-known segment inserted
/// before the issuer's path).
pub(crate) fn discovery_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = vec![format!("{trimmed}/.well-known/openid-configuration")];
    if let Some(scheme_end) = trimmed.find("://") {
        let after = &trimmed[scheme_end + 3..];
        let (host, path) = after.split_at(after.find('/').unwrap_or(after.len()));
        urls.push(format!(
            "{}://{host}/.well-known/oauth-authorization-server{path}",
            &trimmed[..scheme_end]
        ));
    }
    urls
}

async fn discover(inner: &Inner, issuer: &str) -> Result<String, FetchError> {
    let mut last = FetchError::new("discovery failed");
    for url in discovery_urls(issuer) {
        let body = match fetch(inner, url, None).await {
            Ok(FetchResponse::Modified { body, .. }) => body,
            Ok(FetchResponse::NotModified { .. }) => {
                last = FetchError::new("discovery answered 304 to a plain request");
                continue;
            }
            Err(e) => {
                last = e;
                continue;
            }
        };
        let doc = jose::parse_object(&body)
            .map_err(|_| FetchError::new("discovery document is not a strict JSON object"))?;
        match doc.get("issuer") {
            Some(Value::String(s)) if s == issuer => {}
            _ => return Err(FetchError::new("discovery document names another issuer")),
        }
        return match doc.get("jwks_uri") {
            Some(Value::String(u)) if u.starts_with("https://") || u.starts_with("http://") => {
                Ok(u.clone())
            }
            _ => Err(FetchError::new("discovery document has no usable jwks_uri")),
        };
    }
    Err(last)
}

fn kids(set: &KeySet) -> Vec<&str> {
    let mut kids: Vec<&str> = set.keys().iter().filter_map(|k| k.kid()).collect();
    kids.sort_unstable();
    kids
}

/// One fetch, and the state update that follows it.
async fn refresh_once(inner: &Inner) -> Result<Arc<KeySet>, AuthError> {
    let before = inner.state.load_full();
    let outcome = match jwks_url(inner).await {
        Ok(url) => {
            let etag = before.keys.as_ref().and(before.etag.clone());
            fetch(inner, url, etag).await
        }
        Err(e) => Err(e),
    };
    let now = inner.clock.now();
    let s = &inner.settings;
    let ttl_of =
        |max_age: Option<Duration>| max_age.unwrap_or(s.default_ttl).clamp(s.min_ttl, s.max_ttl);
    let failure: Cow<'static, str> = match outcome {
        Ok(FetchResponse::Modified {
            body,
            etag,
            max_age,
        }) => match KeySet::from_jwks_json(&body) {
            Ok(set) if !set.is_empty() => {
                let ttl = ttl_of(max_age);
                let set = Arc::new(set);
                let old_kids = before.keys.as_deref().map(kids).unwrap_or_default();
                let new_kids = kids(&set);
                if before.failures > 0 || before.keys.is_none() {
                    tracing::info!(target: "tower_api_guard::jwks", keys = set.len(), ttl_secs = ttl.as_secs(), "key set fetched");
                } else if old_kids != new_kids {
                    tracing::info!(target: "tower_api_guard::jwks", keys = set.len(), ?old_kids, ?new_kids, "key set rotated");
                } else {
                    tracing::debug!(target: "tower_api_guard::jwks", keys = set.len(), "key set refreshed");
                }
                inner.state.store(Arc::new(Snapshot {
                    keys: Some(set.clone()),
                    etag,
                    last_success: Some(now),
                    expires_at: Some(now + ttl),
                    refresh_at: now + ttl.mul_f64(0.8),
                    failures: 0,
                    last_error: None,
                    attempted: true,
                }));
                inner.unknown_kids.invalidate_all();
                return Ok(set);
            }
            Ok(_) => "key set holds no usable key".into(),
            Err(_) => "key set document does not parse".into(),
        },
        Ok(FetchResponse::NotModified { max_age }) => match &before.keys {
            Some(keys) => {
                let ttl = ttl_of(max_age);
                tracing::debug!(target: "tower_api_guard::jwks", "key set not modified");
                inner.state.store(Arc::new(Snapshot {
                    last_success: Some(now),
                    expires_at: Some(now + ttl),
                    refresh_at: now + ttl.mul_f64(0.8),
                    failures: 0,
                    last_error: None,
                    attempted: true,
                    ..(*before).clone()
                }));
                return Ok(keys.clone());
            }
            None => "304 without a held key set".into(),
        },
        Err(e) => e.reason,
    };
    let failures = before.failures.saturating_add(1);
    let backoff = s
        .backoff_base
        .saturating_mul(1u32 << failures.min(16).saturating_sub(1))
        .min(s.backoff_max);
    // Jitter: between half and all of the backoff.
    let frac = (inner.jitter.hash_one(now) % 1000) as f64 / 2000.0 + 0.5;
    let retry_in = backoff.mul_f64(frac);
    if before.failures == 0 && before.keys.is_some() {
        tracing::warn!(target: "tower_api_guard::jwks", reason = %failure, retry_in_ms = retry_in.as_millis() as u64, "key set fetch failed; keeping the last good keys");
    } else if before.failures == 0 {
        tracing::warn!(target: "tower_api_guard::jwks", reason = %failure, retry_in_ms = retry_in.as_millis() as u64, "key set fetch failed; no key set held");
    } else {
        tracing::debug!(target: "tower_api_guard::jwks", reason = %failure, failures, "key set fetch failed again");
    }
    inner.state.store(Arc::new(Snapshot {
        refresh_at: now + retry_in,
        failures,
        last_error: Some(failure),
        attempted: true,
        ..(*before).clone()
    }));
    Err(unavailable(inner, "key set fetch failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(parse_max_age("max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_max_age("public, Max-Age=60, must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }

    #[test]
    fn discovery_url_forms() {
        assert_eq!(
            discovery_urls("https://id.example/realms/main/"),
            [
                "https://id.example/realms/main/.well-known/openid-configuration",
                "https://id.example/.well-known/oauth-authorization-server/realms/main",
            ]
        );
        assert_eq!(
            discovery_urls("https://id.example"),
            [
                "https://id.example/.well-known/openid-configuration",
                "https://id.example/.well-known/oauth-authorization-server",
            ]
        );
    }
}
