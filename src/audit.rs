//! The audit trail: one structured `tracing` event per decision of every layer, under the
//! stable target `tower_api_guard::audit`.
//!
//! * **Rejections** are events at `INFO` (`WARN` when a dependency was unavailable),
//!   emitted when the rejection is rendered.
//! * **Admissions** are events at `DEBUG`, emitted when the inner service has answered
//!   (so they carry its status), one per layer that let the request through.
//!
//! So `RUST_LOG=tower_api_guard::audit=info` keeps the failures, and
//! `tower_api_guard::audit=debug` adds the successes; nothing is captured for an event no
//! subscriber wants (one cached interest check per request and layer). Every field is
//! present on every event, empty (or `0`) when unknown, so that JSON consumers see one
//! schema:
//!
//! | field | what |
//! |---|---|
//! | `outcome` | `allowed` or `rejected` |
//! | `reason` | a [`ReasonCode`](crate::ReasonCode) (`expired`, `bad_signature`, `insufficient_scope`, `rate_limited`, …); `none` when allowed |
//! | `detail` | the rejection's free-text reason ([`AuthError::reason`](crate::AuthError::reason)); never credential data |
//! | `layer` | `auth`, `brute_force`, `authz` or `rate_limit` |
//! | `client` | the client address: as a trusted-proxy-aware [`ClientAddr`](crate::ClientAddr) resolved it for this request (the brute-force guard does), else the connection's peer address |
//! | `method` | the request method |
//! | `route` | the matched route template (axum's `MatchedPath`, or the route table's match) when known, else the request path |
//! | `status` | the response status |
//! | `subject` | the authenticated subject |
//! | `source` | how it authenticated: `jwt`, `api_key`, `client_certificate`, `introspection`, `custom:<name>` |
//! | `issuer` | the token's issuer (JWT, introspection) |
//! | `key_id` | the API key's record id (never the key) |
//! | `jti` | the token's `jti` claim |
//! | `asked` | what the authorization layer asked for (scopes, roles, an expression, a policy) |
//! | `policy` | the ids of the policies that decided a policy rejection |
//!
//! Never in any field: the token, the API key or its secret, a DPoP proof, a cookie, a
//! password.
//!
//! With `tracing-subscriber`'s JSON formatter each event is one JSON line; the quickstart
//! does that with `GUARD_LOG_FORMAT=json`.

use std::net::IpAddr;

use http::{Method, Request, StatusCode};

use crate::error::{AuthError, AuthErrorKind};
use crate::gate::LayerKind;
use crate::identity::{Identity, Source};

/// The `tracing` target of every audit event.
pub const TARGET: &str = "tower_api_guard::audit";

/// The client address a layer resolved for this request (behind trusted proxies), left in
/// the request's extensions for the audit events of the layers after it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResolvedClient(pub(crate) IpAddr);

/// Whether any subscriber wants audit events at `INFO` (rejections).
#[inline]
pub(crate) fn wants_rejections() -> bool {
    tracing::enabled!(target: "tower_api_guard::audit", tracing::Level::INFO)
}

/// Whether any subscriber wants audit events at `DEBUG` (admissions).
#[inline]
pub(crate) fn wants_admissions() -> bool {
    tracing::enabled!(target: "tower_api_guard::audit", tracing::Level::DEBUG)
}

/// Leave the client address a layer resolved for the audit events of this request.
#[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
pub(crate) fn note_client<B>(request: &mut Request<B>, client: IpAddr) {
    if wants_rejections() {
        request.extensions_mut().insert(ResolvedClient(client));
    }
}

/// One audit event at `$level` (the target must be a literal for `tracing`).
macro_rules! emit {
    ($level:ident, $event:expr, $message:literal) => {{
        let e = $event;
        tracing::$level!(
            target: "tower_api_guard::audit",
            outcome = e.outcome,
            reason = e.reason,
            detail = e.detail,
            layer = e.layer.as_str(),
            client = %e.client,
            method = %e.method,
            route = e.route,
            status = e.status.as_u16(),
            subject = e.who.subject,
            source = %e.who.source,
            issuer = e.who.issuer,
            key_id = e.who.key_id,
            jti = e.who.jti,
            asked = e.asked,
            policy = e.policy,
            $message
        )
    }};
}

/// What an admission keeps until the response, to report it then.
pub(crate) struct Admitted {
    layer: LayerKind,
    method: Method,
    route: String,
    client: Option<IpAddr>,
    identity: Option<Identity>,
    asked: Option<String>,
}

impl Admitted {
    /// Capture what the event will say, if anyone wants it.
    pub(crate) fn capture<B>(
        layer: LayerKind,
        request: &Request<B>,
        asked: Option<&str>,
    ) -> Option<Box<Self>> {
        if !wants_admissions() {
            return None;
        }
        Some(Box::new(Self {
            layer,
            method: request.method().clone(),
            route: route(request),
            client: client(request),
            identity: request.extensions().get::<Identity>().cloned(),
            asked: asked.map(str::to_owned),
        }))
    }

    /// The inner service answered with `status`.
    pub(crate) fn report(self, status: StatusCode) {
        let event = Event {
            outcome: "allowed",
            reason: "none",
            detail: "",
            layer: self.layer,
            client: Client(self.client),
            method: &self.method,
            route: &self.route,
            status,
            who: Who::of(self.identity.as_ref()),
            asked: self.asked.as_deref().unwrap_or(""),
            policy: "",
        };
        emit!(debug, event, "request allowed");
    }
}

/// Report a rejection by `layer`, answered with `status`.
pub(crate) fn rejected<B>(
    layer: LayerKind,
    error: &AuthError,
    request: &Request<B>,
    status: StatusCode,
    asked: Option<&str>,
) {
    if !wants_rejections() {
        return;
    }
    let route = route(request);
    let event = Event {
        outcome: "rejected",
        reason: error.code().as_str(),
        detail: error.reason(),
        layer,
        client: Client(client(request)),
        method: request.method(),
        route: &route,
        status,
        who: Who::of(request.extensions().get::<Identity>()),
        asked: error.required_scope().or(asked).unwrap_or(""),
        policy: error.policies().unwrap_or(""),
    };
    if error.kind() == AuthErrorKind::Unavailable {
        emit!(warn, event, "request rejected");
    } else {
        emit!(info, event, "request rejected");
    }
}

/// The fields of one event (the schema in the module docs).
struct Event<'a> {
    outcome: &'static str,
    reason: &'static str,
    detail: &'a str,
    layer: LayerKind,
    client: Client,
    method: &'a Method,
    route: &'a str,
    status: StatusCode,
    who: Who<'a>,
    asked: &'a str,
    policy: &'a str,
}

/// The route template when one is known, else the path.
fn route<B>(request: &Request<B>) -> String {
    #[cfg(feature = "authz")]
    if let Some(found) = request.extensions().get::<crate::authz::RouteMatch>() {
        return found.route().to_owned();
    }
    #[cfg(feature = "axum")]
    if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
        return matched.as_str().to_owned();
    }
    request.uri().path().to_owned()
}

/// The resolved client address, else the peer's.
fn client<B>(request: &Request<B>) -> Option<IpAddr> {
    if let Some(resolved) = request.extensions().get::<ResolvedClient>() {
        return Some(resolved.0);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(info.0.ip());
    }
    request
        .extensions()
        .get::<std::net::SocketAddr>()
        .map(std::net::SocketAddr::ip)
}

struct Client(Option<IpAddr>);

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}

/// The identity's fields of an event.
struct Who<'a> {
    subject: &'a str,
    source: SourceName<'a>,
    issuer: &'a str,
    key_id: &'a str,
    jti: &'a str,
}

impl<'a> Who<'a> {
    fn of(identity: Option<&'a Identity>) -> Self {
        let Some(identity) = identity else {
            return Self {
                subject: "",
                source: SourceName(None),
                issuer: "",
                key_id: "",
                jti: "",
            };
        };
        let (issuer, key_id) = match identity.source() {
            Source::Jwt { issuer } => (issuer.as_str(), ""),
            Source::Introspection { issuer } => (issuer.as_deref().unwrap_or(""), ""),
            Source::ApiKey { key_id } => ("", key_id.as_str()),
            _ => ("", ""),
        };
        Self {
            subject: identity.subject(),
            source: SourceName(Some(identity.source())),
            issuer,
            key_id,
            jti: identity
                .claims()
                .get("jti")
                .and_then(|v| v.as_str())
                .unwrap_or(""),
        }
    }
}

struct SourceName<'a>(Option<&'a Source>);

impl std::fmt::Display for SourceName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(source) => source.fmt(f),
            None => Ok(()),
        }
    }
}
