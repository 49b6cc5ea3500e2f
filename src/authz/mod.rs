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

use http::{Request, Response};

pub use expr::Expr;

use crate::error::{AuthError, ConfigError};
use crate::gate::{Check, Gate, GateLayer, LayerKind, Rejection, Step, Verdict};
use crate::head::RequestHead;
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

/// The check of [`RequireLayer`].
#[derive(Clone)]
pub struct Authorize {
    requirement: Requirement,
    dry_run: bool,
    wildcards: bool,
}

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorize")
            .field("requirement", &self.requirement)
            .field("dry_run", &self.dry_run)
            .field("wildcards", &self.wildcards)
            .finish()
    }
}

/// Applies a [`Requirement`]. See the [module docs](self).
pub type RequireLayer = GateLayer<Authorize>;

/// The service made by [`RequireLayer`].
pub type Require<S> = Gate<Authorize, S>;

/// The futures of [`authz`](self).
pub mod future {
    /// The response future of [`Require`](super::Require).
    pub type ResponseFuture<S, ReqBody> = crate::gate::ResponseFuture<super::Authorize, S, ReqBody>;
}

impl RequireLayer {
    /// Enforce `requirement`.
    pub fn new(requirement: Requirement) -> Self {
        GateLayer::from_check(Authorize {
            requirement,
            dry_run: false,
            wildcards: false,
        })
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

    /// Log denials (`tracing`, target `tower_api_guard::authz`) but let the requests
    /// through: for rolling out a new rule.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.check_mut().dry_run = dry_run;
        self
    }

    /// Let wildcard grants count: `posts:*` grants `posts:read`, `*` grants everything.
    /// Off by default.
    pub fn wildcards(mut self, enabled: bool) -> Self {
        self.check_mut().wildcards = enabled;
        self
    }

    /// The requirement.
    pub fn requirement(&self) -> &Requirement {
        &self.check_ref().requirement
    }
}

impl<S> Require<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, requirement: Requirement) -> Self {
        tower_layer::Layer::layer(&RequireLayer::new(requirement), inner)
    }

    /// A layer; same as [`RequireLayer::new`].
    pub fn layer(requirement: Requirement) -> RequireLayer {
        RequireLayer::new(requirement)
    }
}

impl Authorize {
    /// A denial: the rejection, or `None` in a dry run (logged, let through).
    fn deny(&self, identity: Option<&Identity>) -> Option<Rejection> {
        if self.dry_run {
            tracing::warn!(
                target: "tower_api_guard::authz",
                subject = identity.map_or("", Identity::subject),
                required = %self.requirement.required(),
                dry_run = true,
                "request would be denied (dry run: let through)"
            );
            return None;
        }
        let error = match identity {
            None => AuthError::missing_credentials(),
            Some(_) => AuthError::insufficient_scope(self.requirement.required().to_owned()),
        };
        Some(error.into())
    }
}

impl Check for Authorize {
    type Ticket = ();
    type Wait = PredicateFuture;
    const LAYER: LayerKind = LayerKind::Authz;

    fn check<B>(&self, request: &mut Request<B>) -> Step<(), PredicateFuture> {
        let identity = request.extensions().get::<Identity>();
        let allowed = match identity {
            None => false,
            Some(identity) => {
                match self
                    .requirement
                    .decide(identity, &RequestHead::of(request), self.wildcards)
                {
                    Decision::Now(allowed) => allowed,
                    Decision::Pending(check) => return Step::Wait(check),
                }
            }
        };
        if allowed {
            return Step::Allow(());
        }
        match self.deny(identity) {
            Some(rejection) => Step::Deny(rejection),
            None => Step::Allow(()),
        }
    }

    fn resume<B>(&self, allowed: bool, request: &mut Request<B>) -> Verdict<()> {
        if allowed {
            return Verdict::Allow(());
        }
        match self.deny(request.extensions().get::<Identity>()) {
            Some(rejection) => Verdict::Deny(rejection),
            None => Verdict::Allow(()),
        }
    }

    fn finish<R>((): (), _response: &mut Response<R>) {}
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::error::AuthErrorKind;
    use crate::gate::support::{caller, run, with};

    #[tokio::test]
    async fn scopes_pass_a_missing_scope_is_403_and_no_identity_401() {
        let layer = RequireLayer::all_scopes(["items:read"]);
        let ok = run(&layer, with(Some(caller("a", &["items:read"], &[])))).await;
        assert_eq!(
            (ok.status, ok.subject.as_deref(), ok.calls),
            (StatusCode::OK, Some("a"), 1)
        );

        let denied = run(&layer, with(Some(caller("b", &["items:write"], &[])))).await;
        assert_eq!((denied.status, denied.calls), (StatusCode::FORBIDDEN, 0));
        assert_eq!(denied.error.unwrap().required_scope(), Some("items:read"));

        let anonymous = run(&layer, with(None)).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            anonymous.error.unwrap().kind(),
            AuthErrorKind::MissingCredentials
        );
    }

    #[tokio::test]
    async fn a_dry_run_lets_a_denial_through() {
        let layer = RequireLayer::any_role(["admin"]).dry_run(true);
        let out = run(&layer, with(Some(caller("a", &[], &["user"])))).await;
        assert_eq!((out.status, out.calls), (StatusCode::OK, 1));
    }

    #[tokio::test]
    async fn a_predicate_waits_then_decides() {
        let layer = RequireLayer::new(Requirement::predicate("owner", |identity, _head| {
            let allowed = identity.subject() == "owner";
            Box::pin(async move { allowed })
        }));
        let ok = run(&layer, with(Some(caller("owner", &[], &[])))).await;
        assert_eq!((ok.status, ok.calls), (StatusCode::OK, 1));
        let denied = run(&layer, with(Some(caller("other", &[], &[])))).await;
        assert_eq!((denied.status, denied.calls), (StatusCode::FORBIDDEN, 0));
        assert_eq!(denied.error.unwrap().required_scope(), Some("owner"));
    }

    #[tokio::test]
    async fn wildcards_count_only_when_enabled() {
        let identity = || with(Some(caller("a", &["posts:*"], &[])));
        let strict = RequireLayer::all_scopes(["posts:read"]);
        assert_eq!(run(&strict, identity()).await.status, StatusCode::FORBIDDEN);
        let wild = strict.wildcards(true);
        assert_eq!(run(&wild, identity()).await.status, StatusCode::OK);
    }
}
