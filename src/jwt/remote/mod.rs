//! Remote key sets: [`RemoteJwks`], OIDC discovery, and the [`JwksFetcher`] trait.
//!
//! The code is split by job:
//!
//! * this file: the [`RemoteJwks`] type, its shared state and its builder;
//! * `fetch`: the [`JwksFetcher`] trait, its request and response types, the default
//!   `ReqwestFetcher`, and the timeout around every fetch;
//! * `discovery`: OIDC / RFC 8414 discovery of the JWKS URL and its issuer check;
//! * `cache`: the held key set, refresh (single-flight), unknown-`kid` cooldown,
//!   backoff and staleness, and [`KeySourceStatus`].

mod cache;
mod discovery;
mod fetch;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::metrics::{self, MetricKey};

pub use cache::KeySourceStatus;
use cache::{SharedRefresh, Snapshot};
#[cfg_attr(not(feature = "introspection"), allow(unused_imports))]
pub(crate) use discovery::discovery_urls;
#[cfg(feature = "reqwest")]
pub use fetch::ReqwestFetcher;
use fetch::default_fetcher;
pub use fetch::{FetchError, FetchFuture, FetchRequest, FetchResponse, JwksFetcher, parse_max_age};
#[cfg(all(feature = "reqwest", feature = "introspection"))]
pub(crate) use fetch::{hardened_client, json_body, request_failed};

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
    metrics: JwksMetrics,
}

/// The metrics of one key set (feature `metrics`), their keys built once at
/// [`build`](RemoteJwksBuilder::build) with the `jwks` label of [`metric_label`].
#[derive(Debug)]
struct JwksMetrics {
    refresh_ok: MetricKey,
    refresh_error: MetricKey,
    keys: MetricKey,
    age: MetricKey,
    last_success: MetricKey,
    stale: MetricKey,
}

impl JwksMetrics {
    fn new(label: &str) -> Self {
        let jwks = [("jwks", label)];
        let refresh = |result| {
            MetricKey::new(
                metrics::JWKS_REFRESHES,
                &[("jwks", label), ("result", result)],
            )
        };
        Self {
            refresh_ok: refresh("ok"),
            refresh_error: refresh("error"),
            keys: MetricKey::new(metrics::JWKS_KEYS, &jwks),
            age: MetricKey::new(metrics::JWKS_AGE_SECONDS, &jwks),
            last_success: MetricKey::new(metrics::JWKS_LAST_SUCCESS, &jwks),
            stale: MetricKey::new(metrics::JWKS_STALE, &jwks),
        }
    }
}

/// The `jwks` label of a key set: its URL (a discovered set's issuer URL) without what may
/// be secret: no userinfo (`user:password@`), no query string, no fragment. An authority
/// that is not a plain `host[:port]` (a password with a raw `/` in it, say) is replaced
/// by `invalid-host`, so that no part of it reaches the label.
fn metric_label(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // Userinfo: up to the last `@` before the path (a password may hold `?`, `#` or `@`).
    let path_at = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..path_at].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let plain_host = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    let valid = match authority.strip_prefix('[') {
        // An IPv6 literal, with an optional port.
        Some(v6) => v6.split_once(']').is_some_and(|(addr, port)| {
            addr.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                && (port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        }),
        None => match authority.split_once(':') {
            Some((host, port)) => {
                plain_host(host) && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
            }
            None => plain_host(authority),
        },
    };
    if valid {
        format!("{scheme}{authority}{path}")
    } else {
        format!("{scheme}invalid-host")
    }
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
        // A discovered set is labelled by its issuer's URL: configured, known from the
        // start, and the same before and after discovery (one series per key set).
        let metrics = JwksMetrics::new(&metric_label(url));
        Ok(RemoteJwks {
            inner: Arc::new(Inner {
                metrics,
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

#[cfg(test)]
mod tests {
    use super::metric_label;

    #[test]
    fn metric_labels_drop_userinfo_query_and_fragment() {
        for (url, label) in [
            ("https://id.example/jwks", "https://id.example/jwks"),
            (
                "http://127.0.0.1:8080/jwks.json",
                "http://127.0.0.1:8080/jwks.json",
            ),
            ("https://id.example", "https://id.example"),
            (
                "https://id.example/realms/main/",
                "https://id.example/realms/main/",
            ),
            ("https://u:p@id.example/jwks", "https://id.example/jwks"),
            (
                "https://u@id.example:8443/jwks",
                "https://id.example:8443/jwks",
            ),
            (
                "https://u:p?x#y@z@id.example/jwks",
                "https://id.example/jwks",
            ),
            (
                "https://id.example/jwks?key=s3cret&a=b",
                "https://id.example/jwks",
            ),
            (
                "https://id.example/jwks?to=a@b.example",
                "https://id.example/jwks",
            ),
            ("https://id.example/jwks#frag", "https://id.example/jwks"),
            ("https://id.example?x=1", "https://id.example"),
            ("https://[::1]:8443/jwks?x", "https://[::1]:8443/jwks"),
            ("https://u:p/ss@id.example/jwks", "https://invalid-host"),
            ("https://u:p?ss/x@id.example/jwks", "https://invalid-host"),
            ("https://id.example:port/jwks", "https://invalid-host"),
            ("https://[::1]x/jwks", "https://invalid-host"),
        ] {
            assert_eq!(metric_label(url), label, "{url}");
        }
    }
}
