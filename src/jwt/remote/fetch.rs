//! Fetching: the [`JwksFetcher`] trait and its request and response types, the default
//! `ReqwestFetcher` (feature `reqwest`: timeouts, body cap, JSON content type only,
//! same-origin redirects only), and the timeout [`RemoteJwks`](super::RemoteJwks) puts
//! around every call.

use crate::error::Cause;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Inner;
use crate::error::ConfigError;

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

/// A failed fetch. The reason is for logs (it never contains response bodies); the
/// [`source`](std::error::Error::source), when there is one, is the underlying HTTP error
/// (without its URL), kept for diagnosis.
#[derive(Clone)]
pub struct FetchError {
    pub(super) reason: Cow<'static, str>,
    source: Cause,
}

impl FetchError {
    /// A failure with a reason.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
            source: Cause::default(),
        }
    }

    /// Attach the underlying error, for diagnosis; it must not carry a secret (no token,
    /// no URL: strip it first, e.g. with `reqwest::Error::without_url`).
    /// [`source`](std::error::Error::source) returns it.
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

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key set fetch failed: {}", self.reason)
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.get()
    }
}

impl fmt::Debug for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.debug(f, "FetchError", &self.reason)
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
///
/// [`RemoteJwks`]: super::RemoteJwks
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
            Ok(Self {
                client: hardened_client()?,
            })
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
                let mut response = builder.send().await.map_err(request_failed)?;
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
                let etag = headers
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = json_body(&mut response, request.max_body).await?;
                Ok(FetchResponse::Modified {
                    body,
                    etag,
                    max_age,
                })
            })
        }
    }

    /// The HTTP client of every outbound call of this crate: rustls, at most 3 redirects,
    /// none to another origin.
    /// A request that got no answer: timed out, redirected (refused), or not connected. The
    /// error is kept as the source without its URL (a URL may carry a token in its query or
    /// credentials in its authority).
    pub(crate) fn request_failed(e: reqwest::Error) -> FetchError {
        let reason = if e.is_timeout() {
            "timeout"
        } else if e.is_redirect() {
            "redirect refused"
        } else {
            "connection failed"
        };
        FetchError::new(reason).with_source(e.without_url())
    }

    pub(crate) fn hardened_client() -> Result<reqwest::Client, ConfigError> {
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
        reqwest::Client::builder()
            .redirect(policy)
            .user_agent(concat!("tower-api-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::unavailable("cannot build the HTTP client", e))
    }

    /// The body of a JSON response, read up to `max_body` bytes (a declared or actual
    /// length over it is an error). Errors keep their cause without its URL.
    pub(crate) async fn json_body(
        response: &mut reqwest::Response,
        max_body: usize,
    ) -> Result<Bytes, FetchError> {
        let headers = response.headers();
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
        if declared.is_some_and(|len| len > max_body as u64) {
            return Err(FetchError::new("body larger than the cap"));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > max_body {
                        return Err(FetchError::new("body larger than the cap"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    let reason = if e.is_timeout() {
                        "timeout"
                    } else {
                        "body read failed"
                    };
                    return Err(FetchError::new(reason).with_source(e.without_url()));
                }
            }
        }
        Ok(Bytes::from(body))
    }
}

#[cfg(all(feature = "reqwest", feature = "introspection"))]
pub(crate) use reqwest_fetcher::{hardened_client, json_body, request_failed};

#[cfg(feature = "reqwest")]
pub(super) fn default_fetcher() -> Result<Arc<dyn JwksFetcher>, ConfigError> {
    Ok(Arc::new(ReqwestFetcher::new()?))
}

#[cfg(not(feature = "reqwest"))]
pub(super) fn default_fetcher() -> Result<Arc<dyn JwksFetcher>, ConfigError> {
    Err(ConfigError::setting(
        "no JwksFetcher: enable the `reqwest` feature or call .fetcher(..)",
    ))
}

/// Fetch with the configured timeout around the fetcher.
pub(super) async fn fetch(
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
    fn source_is_none_by_default_and_kept_when_attached() {
        use std::error::Error as _;
        let plain = FetchError::new("timeout");
        assert!(plain.source().is_none());
        let err = FetchError::new("connection failed")
            .with_source(std::io::Error::other("connection refused"));
        assert_eq!(err.to_string(), "key set fetch failed: connection failed");
        assert_eq!(err.source().unwrap().to_string(), "connection refused");
        assert_eq!(
            err.clone().source().unwrap().to_string(),
            "connection refused"
        );
        assert!(format!("{err:?}").contains("connection refused"));
    }

    /// A refused connection keeps reqwest's error as the source, with neither the URL's
    /// credentials nor its query anywhere in the chain or the `Debug` output.
    #[cfg(feature = "reqwest")]
    #[tokio::test]
    async fn reqwest_failure_keeps_its_cause_without_the_url() {
        use std::error::Error as _;
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let request = FetchRequest {
            url: "http://user:hunter2@127.0.0.1:1/jwks?access_token=s3cr3t".to_owned(),
            etag: None,
            max_body: 1024,
            timeout: Duration::from_secs(5),
        };
        let err = ReqwestFetcher::new()
            .unwrap()
            .fetch(request)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "connection failed");
        let source = err.source().expect("the reqwest error is kept");
        let mut chain = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = next {
            chain.push_str(&format!("{e} / {e:?}\n"));
            next = e.source();
        }
        let debug = format!("{err:?}");
        for secret in ["hunter2", "s3cr3t", "127.0.0.1:1/jwks", "user:"] {
            assert!(!chain.contains(secret), "{secret} in the chain: {chain}");
            assert!(!debug.contains(secret), "{secret} in Debug: {debug}");
        }
    }
}
