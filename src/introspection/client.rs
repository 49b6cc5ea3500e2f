//! The introspection call: [`ClientAuth`], [`IntrospectionRequest`], the injectable
//! [`IntrospectionClient`] and its reqwest implementation.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::HeaderValue;

use super::MAX_RESPONSE_LEN;
use crate::error::ConfigError;
use crate::jwt::FetchError;

/// How the API authenticates to the introspection endpoint (RFC 7662 §2.1). `Debug` never
/// shows the secret.
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client authentication (few servers allow it).
    None,
    /// `client_secret_basic` (RFC 6749 §2.3.1): HTTP Basic with the form-urlencoded id and
    /// secret.
    SecretBasic {
        /// The client id.
        id: String,
        /// The client secret.
        secret: String,
    },
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    SecretPost {
        /// The client id.
        id: String,
        /// The client secret.
        secret: String,
    },
    /// A bearer credential of the API's own (`Authorization: Bearer …`).
    Bearer(String),
}

impl ClientAuth {
    /// `client_secret_basic`.
    pub fn basic(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::SecretBasic {
            id: id.into(),
            secret: secret.into(),
        }
    }

    /// `client_secret_post`.
    pub fn post(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::SecretPost {
            id: id.into(),
            secret: secret.into(),
        }
    }

    /// A bearer credential.
    pub fn bearer(token: impl Into<String>) -> Self {
        Self::Bearer(token.into())
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::SecretBasic { id, .. } => f
                .debug_struct("SecretBasic")
                .field("id", id)
                .finish_non_exhaustive(),
            Self::SecretPost { id, .. } => f
                .debug_struct("SecretPost")
                .field("id", id)
                .finish_non_exhaustive(),
            Self::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

/// `application/x-www-form-urlencoded` of one value: unreserved bytes as they are, space as
/// `+`, every other byte percent-encoded.
fn form_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// One introspection call. `Debug` shows the URL only: the form holds the token, the
/// authorization the secret.
#[derive(Clone)]
#[non_exhaustive]
pub struct IntrospectionRequest {
    /// The endpoint.
    pub url: String,
    /// The `Authorization` header, when the client authentication puts one there
    /// (marked sensitive).
    pub authorization: Option<HeaderValue>,
    /// The form body.
    pub form: String,
    /// The largest response body accepted, in bytes.
    pub max_body: usize,
    /// The time allowed for the whole call.
    pub timeout: Duration,
}

impl fmt::Debug for IntrospectionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionRequest")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl IntrospectionRequest {
    pub(crate) fn new(url: &str, token: &str, auth: &ClientAuth, timeout: Duration) -> Self {
        let mut form = String::with_capacity(token.len() + 64);
        form.push_str("token=");
        form_encode(token, &mut form);
        form.push_str("&token_type_hint=access_token");
        let authorization = match auth {
            ClientAuth::None => None,
            ClientAuth::SecretBasic { id, secret } => {
                let mut pair = String::new();
                form_encode(id, &mut pair);
                pair.push(':');
                form_encode(secret, &mut pair);
                HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(pair))).ok()
            }
            ClientAuth::SecretPost { id, secret } => {
                form.push_str("&client_id=");
                form_encode(id, &mut form);
                form.push_str("&client_secret=");
                form_encode(secret, &mut form);
                None
            }
            ClientAuth::Bearer(token) => HeaderValue::from_str(&format!("Bearer {token}")).ok(),
        };
        let authorization = authorization.map(|mut value| {
            value.set_sensitive(true);
            value
        });
        Self {
            url: url.to_owned(),
            authorization,
            form,
            max_body: MAX_RESPONSE_LEN,
            timeout,
        }
    }
}

/// The future of an [`IntrospectionClient`]: the JSON body of a 200 answer.
pub type IntrospectionFuture = Pin<Box<dyn Future<Output = Result<Bytes, FetchError>> + Send>>;

/// Makes the HTTP calls of introspection; inject your own (a proxy, mTLS, tests).
pub trait IntrospectionClient: Send + Sync + fmt::Debug + 'static {
    /// POST the form; the body of a `200` JSON answer within `max_body`, else an error
    /// (never carrying the token, the secret or the URL).
    fn introspect(&self, request: IntrospectionRequest) -> IntrospectionFuture;

    /// GET a JSON document (discovery), within the crate's response cap.
    fn get(&self, url: String, timeout: Duration) -> IntrospectionFuture;
}

#[cfg(feature = "reqwest")]
pub use reqwest_client::ReqwestIntrospectionClient;

#[cfg(feature = "reqwest")]
mod reqwest_client {
    use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};

    use super::*;
    use crate::jwt::remote::{hardened_client, json_body, request_failed};

    /// The default [`IntrospectionClient`]: reqwest with rustls, no redirect to another
    /// origin, a timeout and a body cap.
    #[derive(Debug, Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub struct ReqwestIntrospectionClient {
        client: reqwest::Client,
    }

    impl ReqwestIntrospectionClient {
        /// A client of its own.
        ///
        /// # Errors
        /// When the TLS backend cannot be initialised.
        pub fn new() -> Result<Self, ConfigError> {
            Ok(Self {
                client: hardened_client()?,
            })
        }

        /// Over your client (a proxy, mTLS); keep its redirects on the same origin.
        pub fn with_client(client: reqwest::Client) -> Self {
            Self { client }
        }
    }

    async fn answer(
        response: Result<reqwest::Response, reqwest::Error>,
        max_body: usize,
    ) -> Result<Bytes, FetchError> {
        let mut response = response.map_err(request_failed)?;
        match response.status().as_u16() {
            200 => json_body(&mut response, max_body).await,
            status => Err(FetchError::new(format!("HTTP status {status}"))),
        }
    }

    impl IntrospectionClient for ReqwestIntrospectionClient {
        fn introspect(&self, request: IntrospectionRequest) -> IntrospectionFuture {
            let mut builder = self
                .client
                .post(&request.url)
                .timeout(request.timeout)
                .header(ACCEPT, "application/json")
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(request.form);
            if let Some(authorization) = request.authorization {
                builder = builder.header(AUTHORIZATION, authorization);
            }
            let max_body = request.max_body;
            Box::pin(async move { answer(builder.send().await, max_body).await })
        }

        fn get(&self, url: String, timeout: Duration) -> IntrospectionFuture {
            let builder = self
                .client
                .get(url)
                .timeout(timeout)
                .header(ACCEPT, "application/json");
            Box::pin(async move { answer(builder.send().await, MAX_RESPONSE_LEN).await })
        }
    }
}

#[cfg(feature = "reqwest")]
pub(super) fn default_client() -> Result<Arc<dyn IntrospectionClient>, ConfigError> {
    Ok(Arc::new(ReqwestIntrospectionClient::new()?))
}

#[cfg(not(feature = "reqwest"))]
pub(super) fn default_client() -> Result<Arc<dyn IntrospectionClient>, ConfigError> {
    Err(ConfigError::setting(
        "no IntrospectionClient: enable the `reqwest` feature or call .client(..)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_and_basic_credentials_are_encoded_and_secrets_stay_out_of_debug() {
        let basic = ClientAuth::basic("my client", "s3:cret/+");
        let request = IntrospectionRequest::new(
            "https://idp/introspect",
            "tok en+/=",
            &basic,
            Duration::from_secs(1),
        );
        assert_eq!(
            request.form,
            "token=tok+en%2B%2F%3D&token_type_hint=access_token"
        );
        // RFC 6749 §2.3.1: form-urlencode, then base64 of "id:secret".
        let expected = format!("Basic {}", STANDARD.encode("my+client:s3%3Acret%2F%2B"));
        assert_eq!(request.authorization.as_ref().unwrap(), expected.as_str());
        assert!(request.authorization.as_ref().unwrap().is_sensitive());
        let shown = format!("{request:?} {basic:?}");
        assert!(!shown.contains("tok") && !shown.contains("s3"), "{shown}");
        let post =
            IntrospectionRequest::new("u", "t", &ClientAuth::post("id", "pw"), Duration::ZERO);
        assert_eq!(
            post.form,
            "token=t&token_type_hint=access_token&client_id=id&client_secret=pw"
        );
        assert!(post.authorization.is_none());
        let bearer = IntrospectionRequest::new("u", "t", &ClientAuth::bearer("at"), Duration::ZERO);
        assert_eq!(bearer.authorization.unwrap(), "Bearer at");
        assert!(!format!("{:?}", ClientAuth::bearer("secret-at")).contains("secret"));
    }
}
