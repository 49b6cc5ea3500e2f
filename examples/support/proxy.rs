//! A small streaming reverse proxy, shared by the `gateway` and `quickstart` examples (and
//! `tests/gateway.rs`): forwards a request to an upstream, bodies streamed both ways,
//! hop-by-hop headers (RFC 9110 §7.6.1) dropped, `Host` set to the upstream's, and
//! `X-Forwarded-For` / `X-Forwarded-Proto` / `X-Forwarded-Host` added. The identity and the
//! credential are the layers' business, not the proxy's: put `IdentityHeadersLayer` in front.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::header::{CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The hop-by-hop fields of RFC 9110 §7.6.1 (and `Proxy-Connection`, still sent by some
/// clients). A proxy never forwards them, nor any field that `Connection` names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwards requests to one upstream (`http://host:port`), dropping `strip_prefix` from
/// the front of the path.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    strip_prefix: &'static str,
}

impl Proxy {
    /// A proxy to `upstream`, an `http://host:port` URL without a path.
    pub fn new(upstream: &str, strip_prefix: &'static str) -> Result<Self, String> {
        let uri: Uri = upstream
            .parse()
            .map_err(|e| format!("not a URL ({e}): {upstream}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(format!("not an absolute http URL: {upstream}"));
        };
        if scheme != Scheme::HTTP {
            return Err(format!("only http:// upstreams are supported: {upstream}"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "the upstream URL takes no path or query: {upstream}"
            ));
        }
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            scheme,
            authority,
            strip_prefix,
        })
    }

    /// Forward `request`; a failure to reach the upstream is a `502 Bad Gateway`.
    pub async fn forward(&self, request: Request<Body>) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path();
        let path = path.strip_prefix(self.strip_prefix).unwrap_or(path);
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let Ok(path_and_query) = path_and_query.parse::<PathAndQuery>() else {
            return status(StatusCode::BAD_REQUEST);
        };
        let Ok(uri) = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
        else {
            return status(StatusCode::BAD_REQUEST);
        };
        let original_host = parts.headers.get(HOST).cloned();
        remove_hop_by_hop(&mut parts.headers);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .or_else(|| parts.extensions.get::<SocketAddr>().copied());
        if let Some(peer) = peer {
            append_forwarded_for(&mut parts.headers, peer);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        if let Some(host) = original_host {
            parts.headers.insert("x-forwarded-host", host);
        }
        if let Ok(host) = HeaderValue::from_str(self.authority.as_str()) {
            parts.headers.insert(HOST, host);
        }
        parts.uri = uri;
        let request = Request::from_parts(parts, body);
        match self.client.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Err(error) => {
                tracing::warn!(%error, "upstream unreachable");
                status(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}

/// Drop the hop-by-hop fields and every field that `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}
