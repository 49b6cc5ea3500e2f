//! [`GuardLayer`]: the usual stack in one layer, stacked the fast way.

use std::fmt;
#[cfg(test)]
use std::sync::Arc;

use tower_layer::Layer;

use crate::auth::{Auth, AuthLayer, Authenticator, BruteForceGuard, BruteForceGuardLayer};
use crate::rate_limit::{Quota, RateLimiter, RateLimiterLayer};
use crate::render::{DefaultRenderer, RenderRejection};

/// The usual protection of an API in one layer (feature `rate-limit`): the brute-force
/// guard per client address, then authentication, then the rate limit per identity —
/// in that order, with one renderer for all of them.
///
/// It is what stacking [`BruteForceGuardLayer`], [`AuthLayer`] and [`RateLimiterLayer`]
/// with one `tower::ServiceBuilder` gives, without a way to get the order or the speed
/// wrong: with axum, give it to **one** `route_layer` (axum boxes and clones the service of
/// every `route_layer` on each request, so three of them cost more than the three checks).
/// Route-specific guards ([`RequireLayer`](crate::authz::RequireLayer)) go on the handlers
/// or method routers behind it.
///
/// The brute-force guard and the rate limit are off until set. A renderer or realm set
/// here applies to every rejection of the stack, of the guards behind it, and of the axum
/// extractors, unless one of them sets its own.
///
/// # Example
///
/// ```
/// # #[cfg(feature = "testing")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use http::{Request, Response, StatusCode};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_api_guard::GuardLayer;
/// use tower_api_guard::jwt::JwtAuthenticator;
/// use tower_api_guard::rate_limit::{Quota, RateLimiterLayer};
/// use tower_api_guard::testing::TestIssuer;
///
/// let issuer = TestIssuer::new("https://issuer.example");
/// let jwt = JwtAuthenticator::builder("https://issuer.example", "api")
///     .keys(issuer.static_keys())
///     .build()
///     .unwrap();
/// let guard = GuardLayer::new(jwt)
///     .brute_force(Quota::parse("20/min").unwrap())
///     .rate_limit(RateLimiterLayer::new([Quota::parse("1/min").unwrap()]))
///     .realm("my-api");
/// // With axum: Router::new().route(..).route_layer(guard)
/// let svc = ServiceBuilder::new().layer(guard).service_fn(|_req: Request<()>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
/// });
///
/// let token = issuer.token().audience("api").mint();
/// let call = || {
///     let req = Request::get("/").header("authorization", format!("Bearer {token}")).body(()).unwrap();
///     svc.clone().oneshot(req)
/// };
/// assert_eq!(call().await.unwrap().status(), StatusCode::OK);
/// let limited = call().await.unwrap();
/// assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
/// let anonymous = svc.clone().oneshot(Request::new(())).await.unwrap();
/// assert_eq!(anonymous.headers()["www-authenticate"], r#"Bearer realm="my-api""#);
/// # });
/// ```
#[must_use]
pub struct GuardLayer<A> {
    brute_force: BruteForceGuardLayer,
    auth: AuthLayer<A>,
    rate_limit: RateLimiterLayer,
}

/// The service made by [`GuardLayer`].
pub type Guard<A, S> = BruteForceGuard<Auth<A, RateLimiter<S>>>;

impl<A> Clone for GuardLayer<A> {
    fn clone(&self) -> Self {
        Self {
            brute_force: self.brute_force.clone(),
            auth: self.auth.clone(),
            rate_limit: self.rate_limit.clone(),
        }
    }
}

impl<A> fmt::Debug for GuardLayer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("brute_force", &self.brute_force.is_enabled())
            .field("rate_limit", &self.rate_limit.is_enabled())
            .finish_non_exhaustive()
    }
}

impl<A: Authenticator> GuardLayer<A> {
    /// Authenticate with `authenticator`; no brute-force guard and no rate limit yet.
    pub fn new(authenticator: A) -> Self {
        // Placeholders for the layers not asked for: they let everything through.
        let unlimited = Quota::per(1, std::time::Duration::from_secs(1)).expect("a valid quota");
        Self {
            brute_force: BruteForceGuardLayer::new(unlimited).disabled(),
            auth: AuthLayer::new(authenticator),
            rate_limit: RateLimiterLayer::new([]).disabled(),
        }
    }

    /// Answer `429` to client addresses with more than `failures` failed authentications,
    /// before authenticating them (see [`BruteForceGuardLayer`]).
    pub fn brute_force(self, failures: Quota) -> Self {
        self.brute_force_layer(BruteForceGuardLayer::new(failures))
    }

    /// The brute-force guard, configured (trusted proxies, store, clock). A renderer set
    /// on this [`GuardLayer`] applies to it unless it has its own.
    pub fn brute_force_layer(mut self, layer: BruteForceGuardLayer) -> Self {
        self.brute_force = layer.inherit_renderer(self.brute_force.own_renderer());
        self
    }

    /// Limit each identity with `layer` (see [`RateLimiterLayer`]).
    pub fn rate_limit(mut self, layer: RateLimiterLayer) -> Self {
        self.rate_limit = layer;
        self
    }

    /// Render every rejection of the stack with `renderer` (see [`crate::render`]).
    pub fn with_renderer(mut self, renderer: impl RenderRejection) -> Self {
        self.brute_force = self.brute_force.with_renderer(renderer);
        self
    }

    /// Name the realm of every `WWW-Authenticate` challenge of the stack.
    pub fn realm(self, realm: &str) -> Self {
        self.with_renderer(DefaultRenderer::new(realm))
    }

    /// The authentication layer.
    pub fn auth(&self) -> &AuthLayer<A> {
        &self.auth
    }
}

impl<A, S> Layer<S> for GuardLayer<A> {
    type Service = Guard<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.brute_force
            .layer(self.auth.layer(self.rate_limit.layer(inner)))
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, StatusCode};

    use super::*;
    use crate::gate::support::{HeaderAuth, run};

    fn request(user: Option<&str>) -> Request<()> {
        let mut request = Request::get("/");
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        request.body(()).unwrap()
    }

    #[tokio::test]
    async fn layers_not_asked_for_let_everything_through() {
        let guard = GuardLayer::new(HeaderAuth { waits: false });
        let outer = guard.brute_force.clone();
        // The outer gate of the stack is a disabled brute-force guard; run it alone with
        // the authentication behind it by hand.
        assert!(!outer.is_enabled() && !guard.rate_limit.is_enabled());
        let auth = guard.auth().clone();
        let out = run(&auth, request(Some("alice"))).await;
        assert_eq!(out.subject.as_deref(), Some("alice"));
        let out = run(&auth, request(None)).await;
        assert_eq!(out.status, StatusCode::UNAUTHORIZED);
        let limited = GuardLayer::new(HeaderAuth { waits: false })
            .rate_limit(RateLimiterLayer::new([Quota::parse("1/min").unwrap()]));
        assert!(limited.rate_limit.is_enabled());
        assert!(format!("{limited:?}").contains("rate_limit: true"));
    }

    #[tokio::test]
    async fn a_renderer_given_to_the_stack_survives_a_brute_force_layer_set_later() {
        let guard = GuardLayer::new(HeaderAuth { waits: false })
            .realm("shop")
            .brute_force_layer(BruteForceGuardLayer::new(Quota::parse("5/min").unwrap()));
        assert!(guard.brute_force.is_enabled());
        assert!(guard.brute_force.own_renderer().is_some());
        // A brute-force layer with its own renderer keeps it.
        let own = BruteForceGuardLayer::new(Quota::parse("5/min").unwrap()).realm("own");
        let kept = own.own_renderer();
        let guard = GuardLayer::new(HeaderAuth { waits: false })
            .realm("shop")
            .brute_force_layer(own);
        assert!(Arc::ptr_eq(
            &guard.brute_force.own_renderer().unwrap(),
            &kept.unwrap()
        ));
    }
}
