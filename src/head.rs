//! [`RequestHead`]: what authenticators, checks and renderers read of a request.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Uri};

/// What an authenticator or renderer may read of a request: everything but the body.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions, when the head was borrowed from a request.
    pub extensions: Option<&'a http::Extensions>,
}

impl<'a> RequestHead<'a> {
    /// Borrow the parts of a request.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            uri,
            headers,
            extensions: None,
        }
    }

    /// Borrow from a request.
    pub fn of<B>(request: &'a http::Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: Some(request.extensions()),
        }
    }

    /// Whether this is a gRPC request (`content-type: application/grpc…`).
    pub fn is_grpc(&self) -> bool {
        is_grpc(self.headers)
    }
}

pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
