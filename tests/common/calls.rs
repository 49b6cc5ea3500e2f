//! Calling a service with a bearer token, and reading what its response says.

use std::convert::Infallible;
use std::fmt::Debug;

use bytes::Bytes;
use http::request::Builder;
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_api_guard::{AuthError, AuthErrorKind};

/// `Authorization: Bearer …` on a request being built.
pub trait Bearer: Sized {
    /// Add `Authorization: Bearer <token>`.
    fn bearer(self, token: &str) -> Self;

    /// Add `Authorization: Bearer <token>` when there is a token.
    fn maybe_bearer(self, token: Option<&str>) -> Self {
        match token {
            Some(token) => self.bearer(token),
            None => self,
        }
    }
}

impl Bearer for Builder {
    fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }
}

/// `GET /` with the token, if any.
pub fn get(token: Option<&str>) -> Request<()> {
    Request::get("/").maybe_bearer(token).body(()).unwrap()
}

/// Call a clone of `svc` once, and unwrap its answer.
pub async fn call<S, R>(svc: &S, request: R) -> S::Response
where
    S: Service<R> + Clone,
    S::Error: Debug,
{
    svc.clone().oneshot(request).await.unwrap()
}

/// The innermost service of most tests: `200 OK` with an empty body.
pub async fn ok<B>(_request: Request<B>) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::new()))
}

/// The response's body, as text.
pub async fn body_text<B>(response: Response<B>) -> String
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The `WWW-Authenticate` challenge, or `""`.
pub fn challenge<B>(response: &Response<B>) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The kind of the [`AuthError`] a rejection carries in its extensions, if any.
pub fn error_kind<B>(response: &Response<B>) -> Option<AuthErrorKind> {
    response
        .extensions()
        .get::<AuthError>()
        .map(AuthError::kind)
}
