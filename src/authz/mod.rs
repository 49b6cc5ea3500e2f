//! Authorization guards: [`RequireLayer`] decides what an authenticated caller may do.
//!
//! It reads only the [`Identity`] that authentication left in the request, so it works
//! the same for JWTs and API keys, under axum and tonic. Place it after the
//! [`AuthLayer`](crate::auth::AuthLayer) (with axum: inside the same `route_layer`, or on a
//! method router).
//!
//! | requirement | passes when the identity… |
//! |---|---|
//! | [`Requirement::all_scopes`] | holds every listed scope (or permission granted through a role) |
//! | [`Requirement::any_scope`] | holds at least one of them |
//! | [`Requirement::any_role`] / [`Requirement::all_roles`] | holds one / all of the roles (after the [`RoleModel`](crate::RoleModel) hierarchy) |
//! | [`Requirement::expr`] | satisfies an expression such as `items:write and (admin or support) and not suspended`, parsed once at start-up; an atom is held when it is a scope, permission or role |
//! | [`Requirement::predicate`] | an async check of your own over the identity and the request head (resource-level rules) |
//!
//! Matching is exact and case-sensitive: `admin` never matches `admin:read`, `notadmin` or
//! `Admin`. Wildcard grants (`posts:*`, `*`) count only when enabled with
//! [`RequireLayer::wildcards`].
//!
//! A request without an identity gets `401`; an identity that is not allowed gets `403`
//! with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` naming what was
//! required, or gRPC `PERMISSION_DENIED`. Every denial is a `tracing` event (target
//! `tower_api_guard::authz`). In [dry-run mode](RequireLayer::dry_run) the denial is only
//! logged and the request goes through, to roll out a new rule safely.
//!
//! # Performance
//! A scope, role or expression check is a few binary searches over the identity's sorted
//! sets: tens of nanoseconds (see the README's benchmark table).
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_api_guard::auth::AuthLayer;
//! use tower_api_guard::authz::RequireLayer;
//! use tower_api_guard::jwt::JwtAuthenticator;
//! use tower_api_guard::testing::TestIssuer;
//!
//! let issuer = TestIssuer::new("https://issuer.example");
//! let jwt = JwtAuthenticator::builder("https://issuer.example", "api")
//!     .keys(issuer.static_keys())
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(AuthLayer::new(jwt))
//!     .layer(RequireLayer::all_scopes(["items:write"]))
//!     .service_fn(|_req: Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
//!     });
//!
//! let reader = issuer.token().audience("api").scope("items:read").mint();
//! let request = Request::post("/items")
//!     .header("authorization", format!("Bearer {reader}"))
//!     .body(())
//!     .unwrap();
//! let response = svc.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::FORBIDDEN);
//! # });
//! ```

mod expr;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use expr::Expr;

use crate::body::ResponseBody;
use crate::error::{AuthError, ConfigError, DefaultRenderer, RenderRejection, RequestHead};
use crate::identity::Identity;

/// The future of a [`Requirement::predicate`].
pub type PredicateFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

type PredicateFn = dyn Fn(&Identity, &RequestHead<'_>) -> PredicateFuture + Send + Sync;

enum Kind {
    AllScopes(Vec<String>),
    AnyScope(Vec<String>),
    AnyRole(Vec<String>),
    AllRoles(Vec<String>),
    Expr(Expr),
    Predicate(Arc<PredicateFn>),
}

/// What a [`RequireLayer`] demands. See the [module docs](self).
#[derive(Clone)]
pub struct Requirement {
    kind: Arc<Kind>,
    /// What a 403 names as required (`scope="…"`).
    required: Arc<str>,
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.kind {
            Kind::AllScopes(_) => "all_scopes",
            Kind::AnyScope(_) => "any_scope",
            Kind::AnyRole(_) => "any_role",
            Kind::AllRoles(_) => "all_roles",
            Kind::Expr(_) => "expr",
            Kind::Predicate(_) => "predicate",
        };
        f.debug_struct("Requirement")
            .field("kind", &kind)
            .field("required", &self.required)
            .finish()
    }
}

fn list<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

impl Requirement {
    fn new(kind: Kind, required: String) -> Self {
        Self {
            kind: Arc::new(kind),
            required: required.into(),
        }
    }

    /// Every listed scope.
    pub fn all_scopes<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        let scopes = list(scopes);
        let required = scopes.join(" ");
        Self::new(Kind::AllScopes(scopes), required)
    }

    /// At least one listed scope.
    pub fn any_scope<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        let scopes = list(scopes);
        let required = scopes.join(" ");
        Self::new(Kind::AnyScope(scopes), required)
    }

    /// At least one listed role.
    pub fn any_role<I: IntoIterator<Item = S>, S: Into<String>>(roles: I) -> Self {
        let roles = list(roles);
        let required = roles.join(" ");
        Self::new(Kind::AnyRole(roles), required)
    }

    /// Every listed role.
    pub fn all_roles<I: IntoIterator<Item = S>, S: Into<String>>(roles: I) -> Self {
        let roles = list(roles);
        let required = roles.join(" ");
        Self::new(Kind::AllRoles(roles), required)
    }

    /// A boolean expression over scopes, permissions and roles, parsed now.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the position of the mistake.
    pub fn expr(text: &str) -> Result<Self, ConfigError> {
        let expr = Expr::parse(text)?;
        let required = expr.atoms().join(" ");
        Ok(Self::new(Kind::Expr(expr), required))
    }

    /// An async check of your own. The closure runs synchronously with the identity and
    /// the request head (method, URI, headers, extensions such as axum's `MatchedPath`);
    /// copy what the check needs into the returned future.
    ///
    /// `description` is what a 403 names as required.
    pub fn predicate<F>(description: &str, check: F) -> Self
    where
        F: Fn(&Identity, &RequestHead<'_>) -> PredicateFuture + Send + Sync + 'static,
    {
        Self::new(Kind::Predicate(Arc::new(check)), description.to_owned())
    }

    /// What a 403 names as required.
    pub fn required(&self) -> &str {
        &self.required
    }

    /// Decide at once, or hand back the predicate's future.
    fn decide(&self, identity: &Identity, head: &RequestHead<'_>, wildcards: bool) -> Decision {
        let grants = |s: &str| {
            identity.has_scope(s)
                || identity.has_permission(s)
                || (wildcards && wildcard_grants(identity, s))
        };
        let allowed = match &*self.kind {
            Kind::AllScopes(scopes) => scopes.iter().all(|s| grants(s)),
            Kind::AnyScope(scopes) => scopes.iter().any(|s| grants(s)),
            Kind::AnyRole(roles) => roles.iter().any(|r| identity.has_role(r)),
            Kind::AllRoles(roles) => roles.iter().all(|r| identity.has_role(r)),
            Kind::Expr(expr) => {
                expr.eval(&mut |atom: &str| grants(atom) || identity.has_role(atom))
            }
            Kind::Predicate(check) => return Decision::Pending(check(identity, head)),
        };
        Decision::Now(allowed)
    }
}

enum Decision {
    Now(bool),
    Pending(PredicateFuture),
}

/// Whether a wildcard grant (`*`, or `prefix:*` for a `prefix:…` requirement) covers `s`.
fn wildcard_grants(identity: &Identity, s: &str) -> bool {
    let covered = |grant: &str| {
        grant == "*"
            || grant
                .strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with(':') && s.starts_with(prefix))
    };
    identity.scopes().iter().any(covered) || identity.permissions().iter().any(covered)
}

struct Shared {
    requirement: Requirement,
    dry_run: bool,
    wildcards: bool,
    renderer: Arc<dyn RenderRejection>,
}

/// Applies a [`Requirement`]. See the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct RequireLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for RequireLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLayer")
            .field("requirement", &self.shared.requirement)
            .field("dry_run", &self.shared.dry_run)
            .field("wildcards", &self.shared.wildcards)
            .finish_non_exhaustive()
    }
}

impl RequireLayer {
    /// Enforce `requirement`.
    pub fn new(requirement: Requirement) -> Self {
        Self {
            shared: Arc::new(Shared {
                requirement,
                dry_run: false,
                wildcards: false,
                renderer: Arc::new(DefaultRenderer::default()),
            }),
        }
    }

    /// Every listed scope: `RequireLayer::new(Requirement::all_scopes(..))`.
    pub fn all_scopes<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self::new(Requirement::all_scopes(scopes))
    }

    /// At least one listed role: `RequireLayer::new(Requirement::any_role(..))`.
    pub fn any_role<I: IntoIterator<Item = S>, S: Into<String>>(roles: I) -> Self {
        Self::new(Requirement::any_role(roles))
    }

    /// An expression: `RequireLayer::new(Requirement::expr(..)?)`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the position of the mistake.
    pub fn expr(text: &str) -> Result<Self, ConfigError> {
        Ok(Self::new(Requirement::expr(text)?))
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|arc| Shared {
            requirement: arc.requirement.clone(),
            dry_run: arc.dry_run,
            wildcards: arc.wildcards,
            renderer: arc.renderer.clone(),
        });
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Log denials (`tracing`, target `tower_api_guard::authz`) but let the requests
    /// through: for rolling out a new rule.
    pub fn dry_run(self, dry_run: bool) -> Self {
        self.with(|s| s.dry_run = dry_run)
    }

    /// Let wildcard grants count: `posts:*` grants `posts:read`, `*` grants everything.
    /// Off by default.
    pub fn wildcards(self, enabled: bool) -> Self {
        self.with(|s| s.wildcards = enabled)
    }

    /// Render rejections with `renderer`.
    pub fn with_renderer(self, renderer: impl RenderRejection) -> Self {
        let renderer: Arc<dyn RenderRejection> = Arc::new(renderer);
        self.with(|s| s.renderer = renderer)
    }
}

impl<S> Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Require<S> {
        Require {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`RequireLayer`].
#[derive(Clone)]
pub struct Require<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Require<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Require")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Require<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn reject<B>(shared: &Shared, error: AuthError, request: &Request<B>) -> Response<Bytes> {
    let mut response = shared.renderer.render(&error, &RequestHead::of(request));
    response.extensions_mut().insert(error);
    response
}

/// Log a denial; `true` when the request must be rejected (not a dry run).
fn deny(shared: &Shared, identity: Option<&Identity>) -> bool {
    let subject = identity.map(Identity::subject).unwrap_or("");
    if shared.dry_run {
        tracing::warn!(
            target: "tower_api_guard::authz",
            subject,
            required = %shared.requirement.required(),
            dry_run = true,
            "request would be denied (dry run: let through)"
        );
        false
    } else {
        tracing::info!(
            target: "tower_api_guard::authz",
            subject,
            required = %shared.requirement.required(),
            "request denied"
        );
        true
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Require<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let Some(identity) = request.extensions().get::<Identity>() else {
            if deny(shared, None) {
                let error = AuthError::missing_credentials();
                return ResponseFuture::rejected(reject(shared, error, &request));
            }
            return ResponseFuture::calling(self.inner.call(request));
        };
        match shared
            .requirement
            .decide(identity, &RequestHead::of(&request), shared.wildcards)
        {
            Decision::Now(true) => ResponseFuture::calling(self.inner.call(request)),
            Decision::Now(false) => {
                if deny(shared, Some(identity)) {
                    let error =
                        AuthError::insufficient_scope(shared.requirement.required().to_owned());
                    ResponseFuture::rejected(reject(shared, error, &request))
                } else {
                    ResponseFuture::calling(self.inner.call(request))
                }
            }
            Decision::Pending(check) => {
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Checking { check },
                    pending: Some(Box::new((inner, request, self.shared.clone()))),
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`Require`].
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S::Future>,
        // Boxed: only a predicate that waits needs it (see the auth layer's future).
        pending: Option<Box<(S, Request<ReqBody>, Arc<Shared>)>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Checking { check: PredicateFuture },
        Calling { #[pin] future: F },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
            pending: None,
        }
    }

    fn rejected(response: Response<Bytes>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
            pending: None,
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check } => {
                    let allowed = ready!(check.as_mut().poll(cx));
                    let (mut inner, request, shared) =
                        *this.pending.take().expect("polled after completion");
                    let identity = request.extensions().get::<Identity>();
                    if allowed || !deny(&shared, identity) {
                        let future = inner.call(request);
                        this.state.set(State::Calling { future });
                    } else {
                        let error =
                            AuthError::insufficient_scope(shared.requirement.required().to_owned());
                        let response = reject(&shared, error, &request);
                        this.state.set(State::Rejected {
                            response: Some(response),
                        });
                    }
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Rejected { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            }
        }
    }
}
