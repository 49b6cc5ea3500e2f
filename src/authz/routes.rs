//! The route table: `METHOD /path/{param}` → requirement, deny by default; route templates
//! and the path parameters of a request.

use std::fmt;
use std::sync::Arc;

use http::{Method, Request};

use super::Requirement;
use crate::error::{ConfigError, ConfigErrorKind};

/// The route a request matched and its path parameters, percent-decoded.
///
/// [`RouteTable`] inserts it into the request's extensions when it matched the request
/// itself (outside axum, or in front of axum's router); handlers and later layers can read
/// it. Under axum's `route_layer`, the route and parameters come from axum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    route: Arc<str>,
    params: Vec<(Arc<str>, String)>,
}

impl RouteMatch {
    /// A match of `route` with `params`.
    pub fn new<I, K, V>(route: &str, params: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Arc<str>>,
        V: Into<String>,
    {
        Self {
            route: route.into(),
            params: params
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The route template, e.g. `/documents/{id}`.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// A path parameter, decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every path parameter, in order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (&**k, v.as_str()))
    }
}

/// Decoded path parameters, in order.
type Params = Vec<(Arc<str>, String)>;

/// Where a request is going: its route template and path parameters, as the router (or
/// the route table) found them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    pub(crate) route: Option<Arc<str>>,
    pub(crate) params: Vec<(Arc<str>, String)>,
    /// The action name given by the route table.
    pub(crate) action: Option<Arc<str>>,
    /// Whether the route table matched the path itself (no router had).
    pub(crate) matched_here: bool,
}

impl Target {
    /// The route and parameters the router left on the request: a [`RouteMatch`], else
    /// axum's `MatchedPath` and path parameters.
    pub(crate) fn of<B>(request: &mut Request<B>) -> Self {
        if let Some(found) = request.extensions().get::<RouteMatch>() {
            return Self {
                route: Some(found.route.clone()),
                params: found.params.clone(),
                action: None,
                matched_here: false,
            };
        }
        #[cfg(feature = "axum")]
        if let Some(matched) = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| Arc::<str>::from(m.as_str()))
        {
            return Self {
                route: Some(matched),
                params: axum_params(request),
                action: None,
                matched_here: false,
            };
        }
        Self::default()
    }

    /// What the route table found, for the request's extensions.
    pub(crate) fn route_match(&self) -> Option<RouteMatch> {
        Some(RouteMatch {
            route: self.route.clone()?,
            params: self.params.clone(),
        })
    }

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// axum's decoded path parameters (read through its public `RawPathParams` extractor; a
/// parameter that is not UTF-8 once decoded gives none).
#[cfg(feature = "axum")]
fn axum_params<B>(request: &mut Request<B>) -> Vec<(Arc<str>, String)> {
    use axum_core::extract::FromRequestParts;
    use futures_util::FutureExt;

    // The extractor reads only the extensions: lend them to an empty head and take them back.
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.extensions = std::mem::take(request.extensions_mut());
    let params = axum::extract::RawPathParams::from_request_parts(&mut parts, &())
        .now_or_never()
        .and_then(Result::ok);
    *request.extensions_mut() = parts.extensions;
    params
        .map(|p| p.iter().map(|(k, v)| (k.into(), v.to_owned())).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(Arc<str>),
    /// `{*name}`: the rest of the path, at least one character.
    Rest(Arc<str>),
}

/// A route template in axum 0.8's syntax: `/documents/{id}`, `/files/{*path}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    text: Arc<str>,
    segments: Vec<Segment>,
}

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let error = |why: &str| {
            ConfigError::new(
                ConfigErrorKind::Parse,
                format!("route template `{text}`: {why}"),
            )
        };
        let Some(rest) = text.strip_prefix('/') else {
            return Err(error("must start with `/`"));
        };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (rest_param, name) = match inner.strip_prefix('*') {
                    Some(name) => (true, name),
                    None => (false, inner),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(error(
                        "a parameter name is letters, digits and `_` in `{…}`",
                    ));
                }
                if names.contains(&name) {
                    return Err(error("a parameter name appears twice"));
                }
                names.push(name);
                if rest_param {
                    if i + 1 != parts.len() {
                        return Err(error("`{*…}` must be the last segment"));
                    }
                    segments.push(Segment::Rest(name.into()));
                } else {
                    segments.push(Segment::Param(name.into()));
                }
            } else if part.contains(['{', '}']) {
                return Err(error("a parameter must be a whole segment, `{name}`"));
            } else if part.is_empty() && i + 1 != parts.len() {
                return Err(error("empty segment"));
            } else {
                segments.push(Segment::Literal((*part).to_owned()));
            }
        }
        Ok(Self {
            text: text.into(),
            segments,
        })
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Match a raw (percent-encoded) path; the parameters come back decoded. A parameter
    /// that decodes to invalid UTF-8 does not match.
    fn matches(&self, path: &str) -> Option<Params> {
        let rest = path.strip_prefix('/')?;
        let mut parts = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect::<Vec<_>>()
        };
        let mut params = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(i) != Some(&literal.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let raw = parts.get(i)?;
                    // As axum's router: an empty parameter matches between two slashes, not
                    // at the end of the path.
                    if raw.is_empty() && i + 1 == self.segments.len() {
                        return None;
                    }
                    params.push((name.clone(), decode(raw)?));
                }
                Segment::Rest(name) => {
                    if i >= parts.len() {
                        return None;
                    }
                    let raw = parts.split_off(i).join("/");
                    if raw.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), decode(&raw)?));
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }

    /// Literal segments rank before parameters, parameters before `{*rest}`: the most
    /// specific template wins, as in axum.
    fn rank(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::Param(_) => 1,
                Segment::Rest(_) => 2,
            })
            .collect()
    }
}

/// Percent-decode one path parameter as axum does (`%` with two hex digits is a byte; any
/// other `%` stays as it is), so that a check and the handler see the same value; `None`
/// when not UTF-8 once decoded (axum refuses those too). An empty segment is an empty
/// parameter, as in axum (ownership never matches an empty value).
fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Clone)]
struct Entry {
    method: Option<Method>,
    template: Template,
    requirement: Requirement,
    action: Option<Arc<str>>,
}

impl Entry {
    fn spec(&self) -> String {
        let method = self.method.as_ref().map_or("*", Method::as_str);
        format!("{method} {}", self.template.text())
    }

    fn serves(&self, method: &Method) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
    }
}

/// One central table of `METHOD /path/{param}` → [`Requirement`], enforced by
/// [`RequireLayer::routes`](super::RequireLayer::routes).
///
/// A request is matched on the route its router matched (axum's `MatchedPath`, under
/// `route_layer`) or, without one, on the table's own templates (axum 0.8 syntax:
/// `{param}`, `{*rest}`; the most specific template wins; `HEAD` is served by a `GET`
/// entry). An authenticated request to a route the table does not list is **denied**
/// (403) unless [`allow_unlisted`](Self::allow_unlisted) says otherwise.
///
/// axum does not expose its routes, so the start-up check takes the list you registered:
/// [`unlisted`](Self::unlisted) names the routes the table does not mention.
///
/// ```
/// use tower_api_guard::authz::{Requirement, RouteTable};
///
/// let table = RouteTable::new()
///     .route("GET /items", Requirement::all_scopes(["items:read"]))?
///     .route("POST /items", Requirement::all_scopes(["items:write"]))?
///     .route("GET /me", Requirement::authenticated())?;
/// assert_eq!(table.unlisted(["GET /items", "DELETE /items"]), ["DELETE /items"]);
/// # Ok::<(), tower_api_guard::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct RouteTable {
    entries: Arc<Vec<Entry>>,
    allow_unlisted: bool,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field(
                "routes",
                &self.entries.iter().map(Entry::spec).collect::<Vec<_>>(),
            )
            .field("allow_unlisted", &self.allow_unlisted)
            .finish()
    }
}

fn parse_spec(spec: &str) -> Result<(Option<Method>, Template), ConfigError> {
    let error = |why: &str| {
        ConfigError::new(
            ConfigErrorKind::Parse,
            format!("route `{spec}`: {why} (expected `METHOD /path/{{param}}`)"),
        )
    };
    let (method, path) = spec.split_once(' ').ok_or_else(|| error("no method"))?;
    let method = match method {
        "*" | "ANY" => None,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            Some(Method::from_bytes(m.as_bytes()).map_err(|_| error("bad method"))?)
        }
        _ => return Err(error("the method must be upper case, or `*`")),
    };
    Ok((method, Template::parse(path.trim())?))
}

impl RouteTable {
    /// An empty table (which denies every route).
    pub fn new() -> Self {
        Self::default()
    }

    /// Require `requirement` on `spec`: `"GET /documents/{id}"`, or `"* /path"` for every
    /// method.
    ///
    /// # Errors
    /// A [`ConfigError`] for a malformed spec or a route listed twice.
    pub fn route(self, spec: &str, requirement: Requirement) -> Result<Self, ConfigError> {
        self.add(spec, None, requirement)
    }

    /// As [`route`](Self::route), naming the route's action for policy engines (Cedar's
    /// `Action::"read"`, Rego's `input.action.name`).
    ///
    /// # Errors
    /// As [`route`](Self::route).
    pub fn route_as(
        self,
        spec: &str,
        action: &str,
        requirement: Requirement,
    ) -> Result<Self, ConfigError> {
        self.add(spec, Some(action.into()), requirement)
    }

    fn add(
        mut self,
        spec: &str,
        action: Option<Arc<str>>,
        requirement: Requirement,
    ) -> Result<Self, ConfigError> {
        let (method, template) = parse_spec(spec)?;
        let entry = Entry {
            method,
            template,
            requirement,
            action,
        };
        if self.entries.iter().any(|e| e.spec() == entry.spec()) {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidSetting,
                format!("route `{}` is listed twice", entry.spec()),
            ));
        }
        Arc::make_mut(&mut self.entries).push(entry);
        Ok(self)
    }

    /// Let requests to routes the table does not list through (default: deny them, 403).
    pub fn allow_unlisted(mut self, allow: bool) -> Self {
        self.allow_unlisted = allow;
        self
    }

    /// Whether unlisted routes are let through.
    pub fn allows_unlisted(&self) -> bool {
        self.allow_unlisted
    }

    /// The start-up check: of `routes` (`"METHOD /path"` as registered with the router),
    /// the ones no entry covers, each reported as a `warn` event (target
    /// `tower_api_guard::authz`).
    pub fn unlisted<'a, I>(&self, routes: I) -> Vec<String>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut missing = Vec::new();
        for route in routes {
            let covered = match parse_spec(route) {
                Ok((method, template)) => self.entries.iter().any(|e| {
                    e.template.text() == template.text()
                        && (e.method.is_none() || e.method == method)
                }),
                Err(_) => false,
            };
            if !covered {
                tracing::warn!(
                    target: "tower_api_guard::authz",
                    route,
                    deny = !self.allow_unlisted,
                    "route is not in the route table"
                );
                missing.push(route.to_owned());
            }
        }
        missing
    }

    /// The entry for a request: by the router's matched route, or by the table's own
    /// templates. Fills the target's route, parameters and action.
    pub(crate) fn select(
        &self,
        method: &Method,
        path: &str,
        target: &mut Target,
    ) -> Option<&Requirement> {
        let find = |method: &Method, target: &mut Target| -> Option<&Entry> {
            if let Some(route) = &target.route {
                return self
                    .entries
                    .iter()
                    .find(|e| e.serves(method) && e.template.text() == &**route);
            }
            let mut best: Option<(&Entry, Params, Vec<u8>)> = None;
            for entry in self.entries.iter().filter(|e| e.serves(method)) {
                if let Some(params) = entry.template.matches(path) {
                    let rank = entry.template.rank();
                    if best.as_ref().is_none_or(|(_, _, r)| rank < *r) {
                        best = Some((entry, params, rank));
                    }
                }
            }
            let (entry, params, _) = best?;
            target.route = Some(entry.template.text.clone());
            target.params = params;
            target.matched_here = true;
            Some(entry)
        };
        let entry = find(method, target).or_else(|| {
            (method == Method::HEAD)
                .then(|| find(&Method::GET, target))
                .flatten()
        })?;
        target.action = entry.action.clone();
        Some(&entry.requirement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(t)
            .unwrap()
            .matches(path)
            .map(|p| p.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[test]
    fn templates_match_whole_segments_and_decode_parameters() {
        let p = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(
            params("/users/{id}/orders", "/users/ann/orders"),
            Some(p("id", "ann"))
        );
        assert_eq!(
            params("/users/{id}/orders", "/users/a%20b/orders"),
            Some(p("id", "a b"))
        );
        // An encoded slash stays inside the parameter, as in axum; it never splits.
        assert_eq!(
            params("/users/{id}/orders", "/users/a%2Fb/orders"),
            Some(p("id", "a/b"))
        );
        assert_eq!(params("/users/{id}/orders", "/users/ann/orders/"), None);
        assert_eq!(
            params("/users/{id}/orders", "/users//orders"),
            Some(p("id", ""))
        );
        assert_eq!(params("/users/{id}/orders", "/users/ann/x/orders"), None);
        assert_eq!(params("/users/{id}/orders", "/Users/ann/orders"), None);
        assert_eq!(params("/users/{id}/orders", "/users/%ff/orders"), None);
        // A malformed escape stays as it is, as in axum.
        assert_eq!(
            params("/users/{id}/orders", "/users/%4/orders"),
            Some(p("id", "%4"))
        );
        assert_eq!(
            params("/users/{id}/orders", "/users/%+1/orders"),
            Some(p("id", "%+1"))
        );
        assert_eq!(
            params("/files/{*path}", "/files/a/b"),
            Some(p("path", "a/b"))
        );
        assert_eq!(params("/", "/"), Some(vec![]));
        assert_eq!(params("/health", "/health"), Some(vec![]));
        assert_eq!(params("/health", "/health/"), None);
    }

    #[test]
    fn malformed_templates_and_specs_are_refused() {
        for t in [
            "users",
            "/a/{",
            "/a/{}",
            "/a/x{id}",
            "/a/{*r}/b",
            "/a/{id}/{id}",
            "/a//b",
        ] {
            assert!(Template::parse(t).is_err(), "{t}");
        }
        for s in ["/a", "get /a", "GET", "GET a"] {
            assert!(parse_spec(s).is_err(), "{s}");
        }
    }

    #[test]
    fn the_most_specific_route_wins_and_head_uses_get() {
        let table = RouteTable::new()
            .route("GET /users/{id}", Requirement::any_role(["a"]))
            .unwrap()
            .route("GET /users/me", Requirement::any_role(["b"]))
            .unwrap();
        let mut target = Target::default();
        let r = table
            .select(&Method::GET, "/users/me", &mut target)
            .unwrap();
        assert_eq!(r.required(), "b");
        assert!(target.params.is_empty());
        let mut target = Target::default();
        let r = table
            .select(&Method::HEAD, "/users/x", &mut target)
            .unwrap();
        assert_eq!(r.required(), "a");
        assert_eq!(target.param("id"), Some("x"));
        let mut target = Target::default();
        assert!(
            table
                .select(&Method::POST, "/users/x", &mut target)
                .is_none()
        );
    }

    #[test]
    fn a_route_listed_twice_is_refused() {
        let table = RouteTable::new()
            .route("GET /a", Requirement::authenticated())
            .unwrap();
        assert!(table.route("GET /a", Requirement::authenticated()).is_err());
    }
}
