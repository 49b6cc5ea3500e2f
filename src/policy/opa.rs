//! An OPA sidecar as the policy engine: [`OpaClient`] asks
//! `POST {base}/v1/data/<path>` with `{"input": …}` (OPA's Data API) for every request.
//!
//! | OPA answers | decision |
//! |---|---|
//! | `{"result": true}` | allow |
//! | `{"result": false}`, or no `result` (the rule is undefined) | deny |
//! | another `result` (a string, a number, an object…), a body that is not a JSON object, a body over 64 KiB | [`Evaluation`](PolicyErrorKind::Evaluation) error |
//! | a status other than 2xx, no connection, no answer within the timeout | [`Unavailable`](PolicyErrorKind::Unavailable) error |
//!
//! Errors name the endpoint and what went wrong, never the input (which holds the caller's
//! claims). The call needs a Tokio runtime with its time driver (for the timeout).
//!
//! ```
//! use std::time::Duration;
//! use tower_api_guard::policy::Policy;
//! use tower_api_guard::policy::opa::OpaClient;
//!
//! let opa = OpaClient::new("http://127.0.0.1:8181", "guard/allow")
//!     .unwrap()
//!     .timeout(Duration::from_millis(250));
//! let policy = Policy::new(opa);
//! assert_eq!(policy.engine_name(), "opa");
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE};
use serde::Serialize;
use serde_json::Value;

use super::{
    Evaluation, PolicyDecision, PolicyEngine, PolicyError, PolicyErrorKind, PolicyInput, truncate,
};

/// The time allowed for a decision by default (connection, request and answer): 500 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// The largest answer accepted from OPA, in bytes (64 KiB).
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

/// The longest rule path accepted, in bytes.
const MAX_PATH_LEN: usize = 512;

/// An OPA sidecar (or server) deciding each request through its Data API.
///
/// Cheap to clone: clones share the HTTP client and its connection pool. `Debug` shows the
/// endpoint and the timeout, never the client (whose default headers may hold a token).
#[derive(Clone)]
pub struct OpaClient {
    client: reqwest::Client,
    /// `{base}/v1/data/<path>`.
    endpoint: reqwest::Url,
    /// `opa:<path>`, the id of every decision.
    id: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for OpaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn config_error(message: String) -> PolicyError {
    PolicyError::new(PolicyErrorKind::Parse, message)
}

impl OpaClient {
    /// A client of OPA at `base_url` (e.g. `http://127.0.0.1:8181`, or with a path prefix
    /// behind a proxy) for the rule at `path` (e.g. `guard/allow`, for `data.guard.allow`):
    /// each decision is `POST {base_url}/v1/data/guard/allow`.
    ///
    /// The HTTP client follows no redirect; bring your own with [`client`](Self::client)
    /// (for a token in its default headers, mTLS, a proxy).
    ///
    /// # Errors
    /// A [`Parse`](PolicyErrorKind::Parse) error for a base URL that is not `http` or
    /// `https`, has no host, carries credentials, a query or a fragment; or a path that is
    /// empty or has segments other than ASCII letters, digits, `_` and `-`. An
    /// [`Unavailable`](PolicyErrorKind::Unavailable) error when the HTTP client cannot be
    /// built (the TLS backend).
    pub fn new(base_url: &str, path: &str) -> Result<Self, PolicyError> {
        let base = reqwest::Url::parse(base_url.trim())
            .map_err(|e| config_error(format!("OPA base URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "OPA base URL: the scheme must be http or https, not {}",
                base.scheme()
            )));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(config_error("OPA base URL: no host".into()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            // Never echo the URL: it holds the credentials.
            return Err(config_error(
                "OPA base URL: credentials in the URL are refused; pass a client with \
                 default headers (.client(..))"
                    .into(),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(config_error(format!(
                "OPA base URL {}: a query or a fragment is refused",
                base.origin().ascii_serialization()
            )));
        }
        let path = path.trim().trim_matches('/');
        let valid_segment = |segment: &str| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if path.is_empty() || path.len() > MAX_PATH_LEN || !path.split('/').all(valid_segment) {
            return Err(config_error(format!(
                "OPA rule path {:?}: expected segments of ASCII letters, digits, `_` and `-` \
                 separated by `/`, e.g. guard/allow",
                truncate(path, 64)
            )));
        }
        let endpoint = format!("{}/v1/data/{path}", base.as_str().trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&endpoint)
            .map_err(|e| config_error(format!("OPA endpoint: {e}")))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tower-api-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| {
                PolicyError::new(
                    PolicyErrorKind::Unavailable,
                    "cannot build the HTTP client (TLS backend)",
                )
            })?;
        Ok(Self {
            client,
            endpoint,
            id: format!("opa:{path}").into(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The time allowed for a decision, from connecting to the end of the answer (default
    /// [`DEFAULT_TIMEOUT`], 500 ms). Past it, the decision is an
    /// [`Unavailable`](PolicyErrorKind::Unavailable) error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Use your HTTP client (a token in its default headers, mTLS, a proxy). Keep its
    /// redirects off: a redirected `POST` may lose its body or be sent elsewhere.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// The URL asked: `{base}/v1/data/<path>`.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }
}

/// The request body: `{"input": …}`.
#[derive(Serialize)]
struct Request<'a> {
    input: &'a PolicyInput,
}

impl PolicyEngine for OpaClient {
    fn evaluate(&self, input: &PolicyInput) -> Evaluation {
        let body = match serde_json::to_vec(&Request { input }) {
            Ok(body) => body,
            Err(_) => {
                return Evaluation::Ready(Err(PolicyError::new(
                    PolicyErrorKind::Evaluation,
                    "the input cannot be serialized",
                )));
            }
        };
        let request = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body);
        let endpoint = self.endpoint.clone();
        let id = Arc::clone(&self.id);
        let timeout = self.timeout;
        Evaluation::Pending(Box::pin(async move {
            let answer = tokio::time::timeout(timeout, call(request, &endpoint))
                .await
                .unwrap_or_else(|_| {
                    Err(PolicyError::new(
                        PolicyErrorKind::Unavailable,
                        format!("OPA at {endpoint}: no answer within {timeout:?}"),
                    ))
                })?;
            decide(&answer, &endpoint, &id)
        }))
    }

    fn name(&self) -> &'static str {
        "opa"
    }
}

/// Send the request and read the answer of a 2xx status, up to [`MAX_RESPONSE_LEN`].
async fn call(
    request: reqwest::RequestBuilder,
    endpoint: &reqwest::Url,
) -> Result<Vec<u8>, PolicyError> {
    let unavailable = |reason: &str| {
        PolicyError::new(
            PolicyErrorKind::Unavailable,
            format!("OPA at {endpoint}: {reason}"),
        )
    };
    let mut response = request.send().await.map_err(|e| {
        unavailable(if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        })
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(unavailable(&format!("HTTP status {}", status.as_u16())));
    }
    let too_large = || {
        PolicyError::new(
            PolicyErrorKind::Evaluation,
            format!("OPA at {endpoint}: answer larger than {MAX_RESPONSE_LEN} bytes"),
        )
    };
    if response
        .content_length()
        .is_some_and(|len| len > MAX_RESPONSE_LEN as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_LEN {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(unavailable(if e.is_timeout() {
                    "timeout"
                } else {
                    "reading the answer failed"
                }));
            }
        }
    }
}

/// The decision in an answer. Errors describe the answer's shape, never its values.
fn decide(answer: &[u8], endpoint: &reqwest::Url, id: &str) -> Result<PolicyDecision, PolicyError> {
    let invalid = |what: &str| {
        PolicyError::new(
            PolicyErrorKind::Evaluation,
            format!("OPA at {endpoint}: {what}"),
        )
    };
    let answer: Value =
        serde_json::from_slice(answer).map_err(|_| invalid("the answer is not JSON"))?;
    let Value::Object(answer) = answer else {
        return Err(invalid("the answer is not a JSON object"));
    };
    match answer.get("result") {
        Some(Value::Bool(true)) => Ok(PolicyDecision::allow([id])),
        // No `result`: the rule is undefined for this input.
        Some(Value::Bool(false)) | None => Ok(PolicyDecision::deny([id])),
        Some(other) => {
            let kind = match other {
                Value::Null => "null",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                _ => "an object",
            };
            Err(invalid(&format!("the result is {kind}, not a boolean")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use bytes::Bytes;
    use serde_json::{Map, json};

    use super::*;
    use crate::identity::{Identity, Source};
    use crate::policy::{Action, Resource};

    type Received = Arc<Mutex<Vec<Value>>>;

    fn json_answer(body: impl Into<Body>) -> Response {
        (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/json")],
            body.into(),
        )
            .into_response()
    }

    async fn answer(
        State(received): State<Received>,
        Path(name): Path<String>,
        body: Bytes,
    ) -> Response {
        if let Ok(body) = serde_json::from_slice(&body) {
            received.lock().unwrap().push(body);
        }
        match name.as_str() {
            "true" => json_answer(r#"{"result": true}"#),
            "false" => json_answer(r#"{"result": false}"#),
            "undefined" => json_answer(r#"{"warning": {"code": "api_usage_warning"}}"#),
            "yes" => json_answer(r#"{"result": "yes"}"#),
            "object" => json_answer(r#"{"result": {"allow": true}}"#),
            "garbage" => json_answer("<html>not json</html>"),
            "array" => json_answer("[true]"),
            "error" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
            "redirect" => (
                StatusCode::TEMPORARY_REDIRECT,
                [(http::header::LOCATION, "/v1/data/t/true")],
            )
                .into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                json_answer(r#"{"result": true}"#)
            }
            "big" => {
                let padding = " ".repeat(MAX_RESPONSE_LEN);
                json_answer(format!("{{\"result\": true{padding}}}"))
            }
            "streamed" => {
                // No Content-Length: the cap applies while reading.
                let mut chunks = vec![Bytes::from_static(b"{\"result\": true")];
                chunks.extend((0..20).map(|_| Bytes::from(vec![b' '; 8192])));
                chunks.push(Bytes::from_static(b"}"));
                let stream =
                    futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
                json_answer(Body::from_stream(stream))
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    async fn server() -> (String, Received) {
        let received = Received::default();
        let router = Router::new()
            .route("/v1/data/t/{name}", post(answer))
            .with_state(Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (format!("http://{addr}"), received)
    }

    fn input() -> PolicyInput {
        let identity = Identity::builder(
            "alice-subject",
            Source::Jwt {
                issuer: "https://issuer.example".into(),
            },
        )
        .roles(["auditor"])
        .build();
        let mut attributes = Map::new();
        attributes.insert("owner".into(), json!("alice-subject"));
        PolicyInput::new(
            &identity,
            Action::new("read", "GET", Some("/documents/{id}".into())),
            Resource::new("Document", Some("1".into())).with_attributes(attributes),
            0,
        )
    }

    async fn decide_at(base: &str, name: &str) -> Result<PolicyDecision, PolicyError> {
        let opa = OpaClient::new(base, &format!("t/{name}"))
            .unwrap()
            .timeout(Duration::from_millis(300));
        match opa.evaluate(&input()) {
            Evaluation::Pending(future) => future.await,
            Evaluation::Ready(_) => panic!("OPA answers later"),
        }
    }

    #[tokio::test]
    async fn opa_answers_decide_and_the_input_is_posted() {
        let (base, received) = server().await;

        let decision = decide_at(&base, "true").await.unwrap();
        assert!(decision.is_allowed());
        assert_eq!(decision.policies(), ["opa:t/true"]);
        let body = received.lock().unwrap().pop().unwrap();
        assert_eq!(body["input"]["principal"]["id"], "alice-subject");
        assert_eq!(body["input"]["principal"]["roles"], json!(["auditor"]));
        assert_eq!(body["input"]["action"]["name"], "read");
        assert_eq!(body["input"]["resource"]["type"], "Document");
        assert_eq!(
            body["input"]["resource"]["attributes"]["owner"],
            "alice-subject"
        );
        assert_eq!(body, json!({"input": input().to_json()}));

        let decision = decide_at(&base, "false").await.unwrap();
        assert!(!decision.is_allowed());
        assert_eq!(decision.policies(), ["opa:t/false"]);

        // Undefined: no `result`.
        assert!(!decide_at(&base, "undefined").await.unwrap().is_allowed());
    }

    #[tokio::test]
    async fn answers_that_are_not_booleans_are_evaluation_errors() {
        let (base, _) = server().await;
        for name in ["yes", "object", "garbage", "array", "big", "streamed"] {
            let error = decide_at(&base, name).await.unwrap_err();
            assert_eq!(error.kind(), PolicyErrorKind::Evaluation, "{name}: {error}");
            assert!(!error.message().contains("alice"), "{name}: {error}");
        }
        let error = decide_at(&base, "yes").await.unwrap_err();
        assert!(
            error.message().contains("a string, not a boolean"),
            "{error}"
        );
        assert!(!error.message().contains("\"yes\""), "{error}");
        let error = decide_at(&base, "big").await.unwrap_err();
        assert!(error.message().contains("larger than"), "{error}");
        let error = decide_at(&base, "streamed").await.unwrap_err();
        assert!(error.message().contains("larger than"), "{error}");
    }

    #[tokio::test]
    async fn errors_statuses_redirects_and_timeouts_are_unavailable() {
        let (base, _) = server().await;
        for name in ["error", "redirect", "missing-rule"] {
            let error = decide_at(&base, name).await.unwrap_err();
            assert_eq!(
                error.kind(),
                PolicyErrorKind::Unavailable,
                "{name}: {error}"
            );
            assert!(error.message().contains("HTTP status"), "{name}: {error}");
        }

        let started = std::time::Instant::now();
        let error = decide_at(&base, "slow").await.unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Unavailable, "{error}");
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert!(!error.message().contains("alice"), "{error}");

        // Nobody listening.
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        let closed = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let error = decide_at(&closed, "true").await.unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Unavailable, "{error}");
    }

    #[test]
    fn urls_and_paths_are_checked_at_construction() {
        let opa = OpaClient::new("http://127.0.0.1:8181", "guard/allow").unwrap();
        assert_eq!(opa.endpoint(), "http://127.0.0.1:8181/v1/data/guard/allow");
        assert_eq!(opa.name(), "opa");
        assert_eq!(opa.timeout, DEFAULT_TIMEOUT);
        let opa =
            OpaClient::new("https://opa.internal/prefix/", "/app-1/http_authz/allow/").unwrap();
        assert_eq!(
            opa.endpoint(),
            "https://opa.internal/prefix/v1/data/app-1/http_authz/allow"
        );
        assert_eq!(&*opa.id, "opa:app-1/http_authz/allow");

        for (base, path) in [
            ("ftp://127.0.0.1", "guard/allow"),
            ("not a url", "guard/allow"),
            ("unix:/run/opa.sock", "guard/allow"),
            ("http://127.0.0.1:8181/?x=1", "guard/allow"),
            ("http://127.0.0.1:8181/#f", "guard/allow"),
            ("http://127.0.0.1:8181", ""),
            ("http://127.0.0.1:8181", "/"),
            ("http://127.0.0.1:8181", "guard//allow"),
            ("http://127.0.0.1:8181", "guard/../allow"),
            ("http://127.0.0.1:8181", "guard/allow?x=1"),
            ("http://127.0.0.1:8181", "guard allow"),
        ] {
            let error = OpaClient::new(base, path).unwrap_err();
            assert_eq!(
                error.kind(),
                PolicyErrorKind::Parse,
                "{base} {path}: {error}"
            );
        }

        let error = OpaClient::new("http://user:s3cret@127.0.0.1:8181", "guard/allow").unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);
        assert!(!error.message().contains("s3cret"), "{error}");
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer s3cret-token"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        let opa = OpaClient::new("http://127.0.0.1:8181", "guard/allow")
            .unwrap()
            .client(client)
            .timeout(Duration::from_millis(100));
        let shown = format!("{opa:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("http://127.0.0.1:8181/v1/data/guard/allow"),
            "{shown}"
        );
        assert!(shown.contains("100ms"), "{shown}");
    }
}
