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
//! | [`Requirement::authenticated`] | any identity |
//! | [`Requirement::predicate`] | an async check of your own over the identity and the request head |
//! | [`Requirement::check`] | a *fallible* async check of your own: allow, deny (403), or could not decide (503 with `Retry-After`, or let through if the layer [fails open](RequireLayer::on_error)), within a [time budget](RequireLayer::budget) |
//! | [`Requirement::owner`] | a path parameter (or your extractor's value) equals the caller's subject, tenant or a claim ([`Ownership`]), unless the caller has an overriding role |
//! | [`Requirement::routes`] | the requirement of the request's route in a [`RouteTable`]; deny by default for a route the table does not list |
//! | `Requirement::policy` | a policy engine (Cedar, Rego, an OPA sidecar) decides; feature `policy` |
//!
//! Matching is exact and case-sensitive: `admin` never matches `admin:read`, `notadmin` or
//! `Admin`. Wildcard grants (`posts:*`, `*`) count only when enabled with
//! [`RequireLayer::wildcards`].
//!
//! A request without an identity gets `401`; an identity that is not allowed gets `403`
//! with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` naming what was
//! required (scopes, roles, expressions, predicates), or a plain `403` for resource-level
//! denials (ownership, checks, policies, unlisted routes), or gRPC `PERMISSION_DENIED`. A
//! check that could not decide is a `503` with `Retry-After` (gRPC `UNAVAILABLE`): fail
//! closed, unless the layer was told to fail open. Every denial is a `tracing` event
//! (target `tower_api_guard::authz`). In [dry-run mode](RequireLayer::dry_run) denials and
//! errors are only logged and the request goes through, to roll out a new rule safely.
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

mod check;
mod expr;
mod owner;
pub(crate) mod routes;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

pub(crate) use check::Outcome;
pub use check::{CheckError, CheckFuture};
pub use expr::Expr;
pub use owner::Ownership;
pub use routes::{RouteMatch, RouteTable};

use crate::error::{AuthError, ConfigError, FailurePolicy};
use crate::gate::{Check, Gate, GateLayer, LayerKind, Rejection, Step, Verdict};
use crate::head::RequestHead;
use crate::identity::Identity;

/// The future of a [`Requirement::predicate`].
pub type PredicateFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

type PredicateFn = dyn Fn(&Identity, &RequestHead<'_>) -> PredicateFuture + Send + Sync;
type CheckFn = dyn Fn(&Identity, &RequestHead<'_>) -> CheckFuture + Send + Sync;

enum Kind {
    Authenticated,
    AllScopes(Vec<String>),
    AnyScope(Vec<String>),
    AnyRole(Vec<String>),
    AllRoles(Vec<String>),
    Expr(Expr),
    Predicate(Arc<PredicateFn>),
    Check(Arc<CheckFn>),
    Owner(Ownership),
    Routes(RouteTable),
    #[cfg(feature = "policy")]
    Policy(crate::policy::PolicyRequirement),
}

/// The future of a requirement that waits.
pub(crate) type OutcomeFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

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
            Kind::Authenticated => "authenticated",
            Kind::Check(_) => "check",
            Kind::Owner(_) => "owner",
            Kind::Routes(_) => "routes",
            #[cfg(feature = "policy")]
            Kind::Policy(_) => "policy",
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

    /// Any authenticated identity.
    pub fn authenticated() -> Self {
        Self::new(Kind::Authenticated, String::new())
    }

    /// A fallible async check of your own: `Ok(true)` allows, `Ok(false)` denies with a
    /// plain 403, `Err(CheckError)` could not decide (503 with `Retry-After`, unless the
    /// layer [fails open](RequireLayer::on_error)). The layer's
    /// [time budget](RequireLayer::budget) bounds it. The closure runs synchronously with
    /// the identity and the request head; copy what the check needs into the future.
    ///
    /// `description` is what denials are logged as requiring.
    ///
    /// ```
    /// use tower_api_guard::authz::{CheckError, RequireLayer, Requirement};
    ///
    /// let layer = RequireLayer::new(Requirement::check("active account", |identity, _head| {
    ///     let subject = identity.subject().to_owned();
    ///     Box::pin(async move {
    ///         // Ask the database; a failure is a 503, never an allow.
    ///         let active: Result<bool, std::io::Error> = Ok(subject != "suspended");
    ///         active.map_err(|e| CheckError::new(format!("account lookup: {e}")))
    ///     })
    /// }));
    /// ```
    pub fn check<F>(description: &str, check: F) -> Self
    where
        F: Fn(&Identity, &RequestHead<'_>) -> CheckFuture + Send + Sync + 'static,
    {
        Self::new(Kind::Check(Arc::new(check)), description.to_owned())
    }

    /// The caller must own the resource the request names; see [`Ownership`].
    pub fn owner(ownership: Ownership) -> Self {
        let required = ownership.describe();
        Self::new(Kind::Owner(ownership), required)
    }

    /// The requirement of the request's route in `table`; see [`RouteTable`].
    pub fn routes(table: RouteTable) -> Self {
        Self::new(Kind::Routes(table), "route table".to_owned())
    }

    /// A policy engine decides; see [`crate::policy`].
    #[cfg(feature = "policy")]
    #[cfg_attr(docsrs, doc(cfg(feature = "policy")))]
    pub fn policy(policy: crate::policy::PolicyRequirement) -> Self {
        Self::new(Kind::Policy(policy), "policy".to_owned())
    }

    /// What a 403 names as required.
    pub fn required(&self) -> &str {
        &self.required
    }

    /// Whether deciding needs the route and path parameters.
    fn needs_target(&self) -> bool {
        match &*self.kind {
            Kind::Owner(ownership) => ownership.needs_target(),
            Kind::Routes(_) => true,
            #[cfg(feature = "policy")]
            Kind::Policy(_) => true,
            _ => false,
        }
    }

    /// Decide at once, or hand back a future.
    fn decide(
        &self,
        identity: &Identity,
        head: &RequestHead<'_>,
        target: &mut routes::Target,
        wildcards: bool,
    ) -> Decision {
        let grants = |s: &str| {
            identity.has_scope(s)
                || identity.has_permission(s)
                || (wildcards && wildcard_grants(identity, s))
        };
        let allowed = match &*self.kind {
            Kind::Authenticated => true,
            Kind::AllScopes(scopes) => scopes.iter().all(|s| grants(s)),
            Kind::AnyScope(scopes) => scopes.iter().any(|s| grants(s)),
            Kind::AnyRole(roles) => roles.iter().any(|r| identity.has_role(r)),
            Kind::AllRoles(roles) => roles.iter().all(|r| identity.has_role(r)),
            Kind::Expr(expr) => {
                expr.eval(&mut |atom: &str| grants(atom) || identity.has_role(atom))
            }
            Kind::Predicate(check) => {
                let check = check(identity, head);
                let required = self.required.clone();
                return Decision::Wait {
                    future: Box::pin(async move {
                        if check.await {
                            Outcome::Allow
                        } else {
                            Outcome::Deny(AuthError::insufficient_scope(required.to_string()))
                        }
                    }),
                    budgeted: false,
                };
            }
            Kind::Check(check) => {
                let check = check(identity, head);
                return Decision::Wait {
                    future: Box::pin(async move {
                        match check.await {
                            Ok(true) => Outcome::Allow,
                            Ok(false) => Outcome::Deny(AuthError::forbidden("check denied")),
                            Err(error) => Outcome::Error(error),
                        }
                    }),
                    budgeted: true,
                };
            }
            Kind::Owner(ownership) => {
                return Decision::Now(match ownership.decide(identity, head, Some(target)) {
                    Ok(()) => Outcome::Allow,
                    Err(reason) => Outcome::Deny(AuthError::forbidden(reason)),
                });
            }
            Kind::Routes(table) => {
                return match table.select(head.method, head.uri.path(), target) {
                    Some(requirement) => requirement.decide(identity, head, target, wildcards),
                    None if table.allows_unlisted() => Decision::Now(Outcome::Allow),
                    None => {
                        tracing::warn!(
                            target: "tower_api_guard::authz",
                            method = %head.method,
                            route = target.route.as_deref().unwrap_or(""),
                            "route is not in the route table (denied)"
                        );
                        Decision::Now(Outcome::Deny(AuthError::forbidden(
                            "route is not in the route table",
                        )))
                    }
                };
            }
            #[cfg(feature = "policy")]
            Kind::Policy(policy) => {
                return match policy.decide(identity, head, target) {
                    Ok(outcome) => Decision::Now(outcome),
                    Err(future) => Decision::Wait {
                        future,
                        budgeted: true,
                    },
                };
            }
        };
        Decision::Now(if allowed {
            Outcome::Allow
        } else {
            Outcome::Deny(AuthError::insufficient_scope(self.required.to_string()))
        })
    }
}

enum Decision {
    Now(Outcome),
    /// `budgeted`: bounded by the layer's time budget (fallible checks and policies).
    Wait {
        future: OutcomeFuture,
        budgeted: bool,
    },
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
    budget: Duration,
    on_error: FailurePolicy,
    retry_after: Duration,
}

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorize")
            .field("requirement", &self.requirement)
            .field("dry_run", &self.dry_run)
            .field("wildcards", &self.wildcards)
            .field("budget", &self.budget)
            .field("on_error", &self.on_error)
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
            budget: Duration::from_secs(2),
            on_error: FailurePolicy::Closed,
            retry_after: Duration::from_secs(1),
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

    /// Ownership: `RequireLayer::new(Requirement::owner(..))`.
    pub fn owner(ownership: Ownership) -> Self {
        Self::new(Requirement::owner(ownership))
    }

    /// A route table: `RequireLayer::new(Requirement::routes(..))`.
    pub fn routes(table: RouteTable) -> Self {
        Self::new(Requirement::routes(table))
    }

    /// A policy engine: `RequireLayer::new(Requirement::policy(..))`.
    #[cfg(feature = "policy")]
    #[cfg_attr(docsrs, doc(cfg(feature = "policy")))]
    pub fn policy(policy: crate::policy::PolicyRequirement) -> Self {
        Self::new(Requirement::policy(policy))
    }

    /// Log denials and errors (`tracing`, target `tower_api_guard::authz`) but let the
    /// requests through: for rolling out a new rule.
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

    /// The time a [fallible check](Requirement::check) or a policy (with its resource
    /// loader) may take; past it the check could not decide. Default 2 s. Needs Tokio's
    /// time driver (any multi-feature runtime, `#[tokio::main]`, axum, tonic).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.check_mut().budget = budget;
        self
    }

    /// What a check that could not decide does: [`FailurePolicy::Closed`] (default: 503
    /// with `Retry-After`, gRPC `UNAVAILABLE`), or [`FailurePolicy::Open`] (let through,
    /// logged at `warn`) — only by explicit choice.
    pub fn on_error(mut self, policy: FailurePolicy) -> Self {
        self.check_mut().on_error = policy;
        self
    }

    /// The `Retry-After` of a 503 when the error does not say (default 1 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.check_mut().retry_after = retry_after;
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
    /// Turn an outcome into a rejection, or `None` to let the request through (allowed,
    /// dry run, or failing open).
    fn settle(&self, outcome: Outcome, identity: Option<&Identity>) -> Option<Rejection> {
        let subject = identity.map_or("", Identity::subject);
        match outcome {
            Outcome::Allow => None,
            Outcome::Deny(error) if self.dry_run => {
                tracing::warn!(
                    target: "tower_api_guard::authz",
                    subject,
                    required = %self.requirement.required(),
                    reason = %error.reason(),
                    dry_run = true,
                    "request would be denied (dry run: let through)"
                );
                None
            }
            Outcome::Deny(error) => Some(error.into()),
            Outcome::Error(error) if self.dry_run || self.on_error == FailurePolicy::Open => {
                tracing::warn!(
                    target: "tower_api_guard::authz",
                    subject,
                    required = %self.requirement.required(),
                    reason = %error.reason(),
                    dry_run = self.dry_run,
                    "the check could not decide (let through: dry run or failing open)"
                );
                None
            }
            Outcome::Error(error) => {
                let retry = error.retry_after_hint().unwrap_or(self.retry_after);
                Some(AuthError::unavailable(error.reason().to_owned(), retry).into())
            }
        }
    }

    fn step(&self, outcome: Outcome, identity: Option<&Identity>) -> Step<(), OutcomeFuture> {
        match self.settle(outcome, identity) {
            Some(rejection) => Step::Deny(rejection),
            None => Step::Allow(()),
        }
    }

    fn wait(&self, future: OutcomeFuture, budgeted: bool) -> Step<(), OutcomeFuture> {
        Step::Wait(if budgeted {
            self.budgeted(future)
        } else {
            future
        })
    }

    /// Bound `future` by the budget.
    fn budgeted(&self, future: OutcomeFuture) -> OutcomeFuture {
        let budget = self.budget;
        Box::pin(async move {
            match tokio::time::timeout(budget, future).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Error(CheckError::new(format!(
                    "the check took longer than its budget of {budget:?}"
                ))),
            }
        })
    }
}

impl Check for Authorize {
    type Ticket = ();
    type Wait = OutcomeFuture;
    const LAYER: LayerKind = LayerKind::Authz;

    fn check<B>(&self, request: &mut Request<B>) -> Step<(), OutcomeFuture> {
        // Scopes, roles, expressions, checks: one look at the identity, no route.
        if !self.requirement.needs_target() {
            let identity = request.extensions().get::<Identity>();
            let Some(found) = identity else {
                return self.step(Outcome::Deny(AuthError::missing_credentials()), None);
            };
            let head = RequestHead::of(request);
            let mut target = routes::Target::default();
            return match self
                .requirement
                .decide(found, &head, &mut target, self.wildcards)
            {
                Decision::Now(outcome) => self.step(outcome, identity),
                Decision::Wait { future, budgeted } => self.wait(future, budgeted),
            };
        }
        if request.extensions().get::<Identity>().is_none() {
            return self.step(Outcome::Deny(AuthError::missing_credentials()), None);
        }
        // Ownership, policies, the route table: the route and its parameters first.
        let mut target = routes::Target::of(request);
        let decision = {
            let Some(identity) = request.extensions().get::<Identity>() else {
                return Step::Allow(()); // unreachable: checked above
            };
            let head = RequestHead::of(request);
            self.requirement
                .decide(identity, &head, &mut target, self.wildcards)
        };
        if target.matched_here {
            // The route table matched the request itself: handlers and later layers can
            // read what it found.
            if let Some(found) = target.route_match() {
                request.extensions_mut().insert(found);
            }
        }
        match decision {
            Decision::Now(outcome) => self.step(outcome, request.extensions().get::<Identity>()),
            Decision::Wait { future, budgeted } => self.wait(future, budgeted),
        }
    }

    fn resume<B>(&self, outcome: Outcome, request: &mut Request<B>) -> Verdict<()> {
        match self.settle(outcome, request.extensions().get::<Identity>()) {
            Some(rejection) => Verdict::Deny(rejection),
            None => Verdict::Allow(()),
        }
    }

    fn asked(&self) -> Option<&str> {
        Some(&self.requirement.required)
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
