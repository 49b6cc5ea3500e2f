//! The gateway pattern (feature `upstream`): verify the caller once at the edge, then hand
//! the services behind it an identity they can trust — [`IdentityHeadersLayer`].
//!
//! Behind authentication, on every request, the layer:
//!
//! 1. removes **every** inbound header whose name starts with the prefix (default
//!    `x-auth-`; header names are lowercase in `http`, so `X-AUTH-Subject` is caught too,
//!    and every repetition goes), authenticated or not: a client can never send its own
//!    identity headers upstream;
//! 2. sets the chosen headers from the request's [`Identity`]: subject, source, issuer,
//!    scopes and roles (space-separated), tenant, and claims by path. A value longer than the
//!    cap (default 4 KiB) or that is not valid header text is left out, with a `warn` event
//!    (target `tower_api_guard::upstream`) that names the header, never the value;
//! 3. optionally removes the caller's credential: `Authorization`, named headers (an API
//!    key), named cookies (the others stay).
//!
//! It never rejects. Put it behind authentication (and authorization), in front of the
//! proxy:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_api_guard::testing::{caller, IdentityLayer};
//! use tower_api_guard::upstream::IdentityHeadersLayer;
//!
//! let identity = caller("alice").scopes(["items:read"]).build();
//! let svc = ServiceBuilder::new()
//!     .layer(IdentityLayer::new(identity)) // authentication, in a real stack
//!     .layer(
//!         IdentityHeadersLayer::new("x-auth-").unwrap()
//!             .subject("x-auth-subject").unwrap()
//!             .scopes("x-auth-scopes").unwrap()
//!             .strip_authorization(),
//!     )
//!     .service_fn(|req: Request<()>| async move {
//!         assert_eq!(req.headers()["x-auth-subject"], "alice");
//!         assert!(!req.headers().contains_key("x-auth-admin"));
//!         assert!(!req.headers().contains_key("authorization"));
//!         Ok::<_, std::convert::Infallible>(Response::new(()))
//!     });
//! let request = Request::get("/")
//!     .header("X-Auth-Admin", "true") // spoofed by the client: removed
//!     .header("authorization", "Bearer …")
//!     .body(())
//!     .unwrap();
//! svc.oneshot(request).await.unwrap();
//! # });
//! ```

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};

use crate::error::ConfigError;
use crate::gate::{Check, Gate, GateLayer, LayerKind, NeverWaits, Step, Verdict};
use crate::identity::{Identity, Source};

/// The default cap on one identity header's value, in bytes.
pub const DEFAULT_MAX_VALUE_LEN: usize = 4 * 1024;

/// Passes the verified identity upstream as headers. See the [module docs](self).
pub type IdentityHeadersLayer = GateLayer<IdentityHeaders>;

/// The service made by [`IdentityHeadersLayer`].
pub type WithIdentityHeaders<S> = Gate<IdentityHeaders, S>;

/// What one header carries.
#[derive(Debug, Clone)]
enum Field {
    Subject,
    Source,
    Issuer,
    Scopes,
    Roles,
    Tenant,
    Claim(Box<str>),
}

/// The check of [`IdentityHeadersLayer`].
#[derive(Clone)]
pub struct IdentityHeaders(Arc<Settings>);

#[derive(Clone)]
struct Settings {
    prefix: Box<str>,
    fields: Vec<(HeaderName, Field)>,
    max_len: usize,
    strip_authorization: bool,
    strip_headers: Vec<HeaderName>,
    strip_cookies: Vec<Box<str>>,
    #[cfg(all(feature = "jwt", feature = "aws-lc-rs"))]
    internal_jwt: Option<(HeaderName, InternalJwtIssuer)>,
}

impl fmt::Debug for IdentityHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityHeaders")
            .field("prefix", &self.0.prefix)
            .field("fields", &self.0.fields)
            .finish_non_exhaustive()
    }
}

impl IdentityHeadersLayer {
    /// Remove every inbound header starting with `prefix` (case-insensitive, e.g.
    /// `x-auth-`), and set none yet: add them with the methods below.
    ///
    /// # Errors
    /// An empty prefix, or one with characters a header name cannot hold.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() || HeaderName::from_bytes(prefix.as_bytes()).is_err() {
            return Err(ConfigError::setting(
                "the identity header prefix must be a non-empty header name prefix",
            ));
        }
        Ok(GateLayer::from_check(IdentityHeaders(Arc::new(Settings {
            prefix: prefix.into(),
            fields: Vec::new(),
            max_len: DEFAULT_MAX_VALUE_LEN,
            strip_authorization: false,
            strip_headers: Vec::new(),
            strip_cookies: Vec::new(),
            #[cfg(all(feature = "jwt", feature = "aws-lc-rs"))]
            internal_jwt: None,
        }))))
    }

    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.check_mut().0)
    }

    fn field(mut self, name: &str, field: Field) -> Result<Self, ConfigError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::setting("an identity header name is not a header name"))?;
        if !name.as_str().starts_with(&*self.check_ref().0.prefix) {
            return Err(ConfigError::setting(
                "an identity header must start with the prefix (else a client could send it)",
            ));
        }
        self.settings().fields.push((name, field));
        Ok(self)
    }

    /// Send the subject in header `name` (which must start with the prefix).
    ///
    /// # Errors
    /// `name` is not a header name or lacks the prefix (and so could come from a client).
    pub fn subject(self, name: &str) -> Result<Self, ConfigError> {
        self.field(name, Field::Subject)
    }

    /// Send where the identity came from (`jwt`, `api_key`, …) in header `name`.
    ///
    /// # Errors
    /// As [`subject`](Self::subject).
    pub fn source(self, name: &str) -> Result<Self, ConfigError> {
        self.field(name, Field::Source)
    }

    /// Send the token's issuer (JWT identities) in header `name`.
    ///
    /// # Errors
    /// As [`subject`](Self::subject).
    pub fn issuer(self, name: &str) -> Result<Self, ConfigError> {
        self.field(name, Field::Issuer)
    }

    /// Send the scopes, space-separated, in header `name`.
    ///
    /// # Errors
    /// As [`subject`](Self::subject).
    pub fn scopes(self, name: &str) -> Result<Self, ConfigError> {
        self.field(name, Field::Scopes)
    }

    /// Send the roles, space-separated, in header `name`.
    ///
    /// # Errors
    /// As [`subject`](Self::subject).
    pub fn roles(self, name: &str) -> Result<Self, ConfigError> {
        self.field(name, Field::Roles)
    }

    /// Send the tenant in header `name`.
    ///
    /// # Errors
    /// As [`subject`](Self::subject).
    pub fn tenant(self, name: &str) -> Result<Self, ConfigError> {
        self.field(name, Field::Tenant)
    }

    /// Send the claim at `path` (dotted, e.g. `org.id`) in header `name`: a string as it is,
    /// any other JSON value as JSON text.
    ///
    /// # Errors
    /// As [`subject`](Self::subject).
    pub fn claim(self, path: &str, name: &str) -> Result<Self, ConfigError> {
        self.field(name, Field::Claim(path.into()))
    }

    /// The cap on one value, in bytes (default 4 KiB); a longer value is left out.
    pub fn max_value_len(mut self, max: usize) -> Self {
        self.settings().max_len = max;
        self
    }

    /// Remove the caller's `Authorization` header.
    pub fn strip_authorization(mut self) -> Self {
        self.settings().strip_authorization = true;
        self
    }

    /// Remove the caller's header `name` (an API key's header).
    ///
    /// # Errors
    /// `name` is not a header name.
    pub fn strip_header(mut self, name: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::setting("a header to strip is not a header name"))?;
        self.settings().strip_headers.push(name);
        Ok(self)
    }

    /// Send a short-lived internal JWT for the identity (see [`InternalJwtIssuer`]) in
    /// `Authorization: Bearer …`, replacing the caller's credential there. Features `jwt`
    /// and `aws-lc-rs`.
    #[cfg(all(feature = "jwt", feature = "aws-lc-rs"))]
    pub fn internal_jwt(mut self, issuer: InternalJwtIssuer) -> Self {
        self.settings().internal_jwt = Some((AUTHORIZATION, issuer));
        self
    }

    /// Remove the caller's cookie `name` from `Cookie`, keeping the others.
    pub fn strip_cookie(mut self, name: &str) -> Self {
        self.settings().strip_cookies.push(name.into());
        self
    }
}

impl<S> WithIdentityHeaders<S> {
    /// Wrap `inner` with `layer`'s settings.
    pub fn new(inner: S, layer: &IdentityHeadersLayer) -> Self {
        tower_layer::Layer::layer(layer, inner)
    }
}

impl Settings {
    fn value(&self, field: &Field, identity: &Identity) -> Option<String> {
        let join = |items: &mut dyn Iterator<Item = &str>| items.collect::<Vec<_>>().join(" ");
        match field {
            Field::Subject => Some(identity.subject().to_owned()),
            Field::Source => Some(identity.source().to_string()),
            Field::Issuer => match identity.source() {
                Source::Jwt { issuer } => Some(issuer.clone()),
                _ => None,
            },
            Field::Scopes => Some(join(&mut identity.scopes().iter())),
            Field::Roles => Some(join(&mut identity.roles().iter())),
            Field::Tenant => identity.tenant().map(str::to_owned),
            Field::Claim(path) => identity.claim(path).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        }
    }

    fn strip_cookies(&self, headers: &mut HeaderMap) {
        if self.strip_cookies.is_empty() || !headers.contains_key(COOKIE) {
            return;
        }
        let kept: Vec<String> = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|pair| {
                let name = pair.split('=').next().unwrap_or_default().trim();
                !pair.is_empty() && !self.strip_cookies.iter().any(|c| **c == *name)
            })
            .map(str::to_owned)
            .collect();
        headers.remove(COOKIE);
        if !kept.is_empty()
            && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
        {
            headers.insert(COOKIE, value);
        }
    }
}

impl Check for IdentityHeaders {
    type Ticket = ();
    type Wait = NeverWaits;
    // It stands behind authentication and never rejects.
    const LAYER: LayerKind = LayerKind::Auth;

    fn check<B>(&self, request: &mut Request<B>) -> Step<(), NeverWaits> {
        let s = &*self.0;
        let headers = request.headers_mut();
        // Every inbound header under the prefix, whoever sent it.
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(&*s.prefix))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
        if s.strip_authorization {
            headers.remove(AUTHORIZATION);
        }
        for name in &s.strip_headers {
            headers.remove(name);
        }
        s.strip_cookies(headers);
        let Some(identity) = request.extensions().get::<Identity>().cloned() else {
            return Step::Allow(());
        };
        let headers = request.headers_mut();
        for (name, field) in &s.fields {
            let Some(value) = s.value(field, &identity) else {
                continue;
            };
            if value.len() > s.max_len {
                tracing::warn!(target: "tower_api_guard::upstream", header = %name, "identity header left out: value over the cap");
                continue;
            }
            match HeaderValue::from_str(&value) {
                Ok(value) => {
                    headers.insert(name.clone(), value);
                }
                Err(_) => {
                    tracing::warn!(target: "tower_api_guard::upstream", header = %name, "identity header left out: value is not header text");
                }
            }
        }
        #[cfg(all(feature = "jwt", feature = "aws-lc-rs"))]
        if let Some((name, issuer)) = &s.internal_jwt {
            match issuer.bearer_for(&identity) {
                Some(value) => {
                    headers.insert(name.clone(), value);
                }
                None => {
                    tracing::warn!(target: "tower_api_guard::upstream", "internal JWT not minted");
                }
            }
        }
        Step::Allow(())
    }

    fn resume<B>(&self, never: Infallible, _request: &mut Request<B>) -> Verdict<()> {
        match never {}
    }

    fn finish<R>((): (), _response: &mut Response<R>) {}
}

#[cfg(all(feature = "jwt", feature = "aws-lc-rs"))]
mod internal_jwt;
#[cfg(all(feature = "jwt", feature = "aws-lc-rs"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "jwt", feature = "aws-lc-rs"))))]
pub use internal_jwt::{DEFAULT_INTERNAL_JWT_LIFETIME, InternalJwtIssuer};

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::testing::caller;

    /// The headers the inner service saw.
    async fn seen(layer: &IdentityHeadersLayer, request: Request<()>) -> HeaderMap {
        let seen = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
        let out = seen.clone();
        let svc = tower_layer::Layer::layer(
            layer,
            service_fn(move |req: Request<()>| {
                *out.lock().unwrap() = req.headers().clone();
                async { Ok::<_, Infallible>(Response::new(())) }
            }),
        );
        let response = svc.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        seen.lock().unwrap().clone()
    }

    fn layer() -> IdentityHeadersLayer {
        IdentityHeadersLayer::new("X-Auth-")
            .unwrap()
            .subject("x-auth-subject")
            .unwrap()
            .source("x-auth-source")
            .unwrap()
            .scopes("x-auth-scopes")
            .unwrap()
            .roles("x-auth-roles")
            .unwrap()
            .tenant("x-auth-tenant")
            .unwrap()
            .claim("org.id", "x-auth-org")
            .unwrap()
    }

    fn spoofed(identity: Option<Identity>) -> Request<()> {
        let mut request = Request::get("/")
            .header("X-Auth-Subject", "admin")
            .header("x-auth-subject", "root")
            .header("X-AUTH-ROLES", "admin")
            .header("x-auth-other", "anything")
            .header("x-kept", "yes")
            .body(())
            .unwrap();
        if let Some(identity) = identity {
            request.extensions_mut().insert(identity);
        }
        request
    }

    #[tokio::test]
    async fn spoofed_identity_headers_never_pass_with_or_without_an_identity() {
        let anonymous = seen(&layer(), spoofed(None)).await;
        assert!(anonymous.keys().all(|k| !k.as_str().starts_with("x-auth-")));
        assert_eq!(anonymous["x-kept"], "yes");
        let alice = caller("alice")
            .scopes(["items:read", "items:write"])
            .roles(["reader"])
            .tenant("t1")
            .claims(serde_json::json!({"org": {"id": 42}}))
            .build();
        let headers = seen(&layer(), spoofed(Some(alice))).await;
        assert_eq!(headers.get_all("x-auth-subject").iter().count(), 1);
        assert_eq!(headers["x-auth-subject"], "alice");
        assert_eq!(headers["x-auth-source"], "custom:test");
        assert_eq!(headers["x-auth-scopes"], "items:read items:write");
        assert_eq!(headers["x-auth-roles"], "reader");
        assert_eq!(headers["x-auth-tenant"], "t1");
        assert_eq!(headers["x-auth-org"], "42");
        assert!(!headers.contains_key("x-auth-other"));
    }

    #[tokio::test]
    async fn values_that_are_too_long_or_not_header_text_are_left_out() {
        let capped = layer().max_value_len(8);
        let long = caller("a-subject-longer-than-eight").build();
        assert!(
            !seen(&capped, spoofed(Some(long)))
                .await
                .contains_key("x-auth-subject")
        );
        let newline = caller("alice\r\nx-evil: 1").build();
        let headers = seen(&layer(), spoofed(Some(newline))).await;
        assert!(!headers.contains_key("x-auth-subject"));
        assert!(!headers.contains_key("x-evil"));
    }

    #[tokio::test]
    async fn the_callers_credential_can_be_stripped() {
        let layer = layer()
            .strip_authorization()
            .strip_header("x-api-key")
            .unwrap()
            .strip_cookie("session");
        let request = Request::get("/")
            .header("authorization", "Bearer secret")
            .header("x-api-key", "sk_secret")
            .header("cookie", "theme=dark; session=secret")
            .header("cookie", "session=again; lang=en")
            .body(())
            .unwrap();
        let headers = seen(&layer, request).await;
        assert!(!headers.contains_key("authorization"));
        assert!(!headers.contains_key("x-api-key"));
        assert_eq!(headers["cookie"], "theme=dark; lang=en");
        // Only the session cookie: the header goes.
        let request = Request::get("/")
            .header("cookie", "session=secret")
            .body(())
            .unwrap();
        assert!(!seen(&layer, request).await.contains_key("cookie"));
    }

    #[test]
    fn settings_that_would_let_a_client_through_are_refused() {
        assert!(IdentityHeadersLayer::new("").is_err());
        assert!(IdentityHeadersLayer::new("x auth").is_err());
        let ok = || IdentityHeadersLayer::new("x-auth-").unwrap();
        assert!(ok().subject("x-user").is_err(), "outside the prefix");
        assert!(ok().subject("x-auth-bad name").is_err());
        assert!(ok().subject("X-Auth-Subject").is_ok());
        assert!(ok().strip_header("bad name").is_err());
    }
}
