//! The gate every layer of this crate is built on.
//!
//! Every layer here is the same idea: look at the request (and the [`Identity`] that
//! authentication left on it) and answer *allow now*, *reject now*, or *wait on this
//! future*. A layer states that answer as a **check** (the crate-internal, sealed
//! `Check` trait); [`GateLayer`] and [`Gate`] turn any check into a tower layer and
//! service with one named [`ResponseFuture`], and do everything else in one place:
//!
//! * an answer known at once calls the inner service inside `call`, with no boxing and no
//!   clone of the inner service (a cached token, an in-memory rate-limit decision);
//! * only a check that waits (a signature check after a key refresh, a store lookup, a
//!   Redis decision, an async predicate) moves the ready inner service into its future
//!   (`mem::replace` with a fresh clone, as tower advises) and boxes what it keeps;
//! * every rejection is rendered in one place: with the layer's own renderer if it has
//!   one, else the renderer of the stack (left in the request's extensions by the
//!   outermost layer that has one), else [`DefaultRenderer`];
//!   the [`AuthError`] is attached to the response's extensions and one `tracing` event
//!   is emitted with the layer's target, the kind and the reason (never the credential).
//!
//! Users meet the gate only through the aliases of each module: `auth::AuthLayer<A>` is
//! `GateLayer<auth::Authenticate<A>>`, `auth::Auth<A, S>` is `Gate<auth::Authenticate<A>, S>`,
//! and so on; `new`, `layer`, `get_ref`, `get_mut`, `into_inner`, `with_renderer` and
//! `realm` work the same on every one of them.
//!
//! # Making a new layer (for contributors)
//!
//! 1. Write the check: a `Clone + Send + Sync` type holding the layer's settings (shared
//!    state behind an `Arc`, so that every clone shares it), and implement `Check`:
//!    * `Ticket`: what an admitted request keeps until its response (headers to add, a
//!      held slot; `()` for nothing); `finish` gets it back with the inner response;
//!    * `Wait`: the future of a check that cannot answer at once (a boxed future, an
//!      authenticator's future, or [`NeverWaits`] for checks that always answer at once);
//!    * `check`: answer [`Step::Allow`], [`Step::Deny`] or [`Step::Wait`] — it may change
//!      the request (authentication inserts the [`Identity`]);
//!    * `resume`: turn the waited-for output into a [`Verdict`];
//!    * `LAYER`: which `tracing` target its rejections are reported under;
//!    * `finish_later` (rarely; by default `finish` and no wait): a [`Finishing`] future
//!      the response waits on before it is handed back (the brute-force guard records a
//!      failure in Redis there, so that the client's next request sees it).
//! 2. Give the module its public names as aliases:
//!    `pub type FooLayer = GateLayer<FooCheck>; pub type Foo<S> = Gate<FooCheck, S>;`
//!    and `pub mod future { pub type ResponseFuture<S, B> = gate::ResponseFuture<FooCheck, S, B>; }`,
//!    plus an inherent `impl GateLayer<FooCheck> { pub fn new(..) }` for its settings
//!    (builder methods take `self` and go through `GateLayer::check_mut`, which is
//!    `Arc::make_mut`).
//! 3. Test it through a real stack: the inner service is never called on a rejection
//!    (`tower_test::mock`), the renderer set on an outer layer reaches its rejections.
//!
//! Nothing else: no future, no state enum, no rendering, no logging of its own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::audit::{self, Admitted};
use crate::body::ResponseBody;
use crate::error::{AuthError, AuthErrorKind};
use crate::head::RequestHead;
use crate::identity::Identity;
use crate::render::{DefaultRenderer, RenderRejection, StackRenderer, renderer_for};

pub(crate) use sealed::Check;

/// The future of a check that never waits: it never resolves, and its output cannot exist.
pub type NeverWaits = std::future::Pending<std::convert::Infallible>;

/// What a response waits on after the inner service answered, before it is handed back
/// (a record in a shared store; see `Check::finish_later`).
pub type Finishing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which layer a rejection comes from: its `tracing` target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerKind {
    /// Authentication (`tower_api_guard::auth`).
    Auth,
    /// The brute-force guard (`tower_api_guard::auth`).
    BruteForce,
    /// Authorization guards (`tower_api_guard::authz`).
    Authz,
    /// Rate and in-flight limits (`tower_api_guard::rate_limit`).
    RateLimit,
}

/// A rejection: the error, and header fields to add to its response (a 429's
/// `RateLimit` fields).
#[derive(Debug)]
pub struct Rejection {
    pub(crate) error: AuthError,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl LayerKind {
    /// The layer's name in metric labels and audit events: `auth`, `brute_force`,
    /// `authz`, `rate_limit`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::BruteForce => "brute_force",
            Self::Authz => "authz",
            Self::RateLimit => "rate_limit",
        }
    }
}

impl From<AuthError> for Rejection {
    fn from(error: AuthError) -> Self {
        Self {
            error,
            headers: Vec::new(),
        }
    }
}

impl Rejection {
    /// Add header fields to the rejection's response.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn with_headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        self.headers = headers;
        self
    }
}

/// A check's answer in `call`.
pub enum Step<T, W> {
    /// Call the inner service; keep the ticket until its response.
    Allow(T),
    /// Reject now.
    Deny(Rejection),
    /// Wait on this future, then `Check::resume`.
    Wait(W),
}

/// A check's answer after waiting.
pub enum Verdict<T> {
    /// Call the inner service; keep the ticket until its response.
    Allow(T),
    /// Reject.
    Deny(Rejection),
}

mod sealed {
    use super::*;

    /// A layer's decision. Crate-internal; see the [module docs](super).
    pub trait Check: Clone + Send + Sync + 'static {
        /// What an admitted request keeps until the inner service answers.
        type Ticket: Send + 'static;
        /// The future of a check that waits.
        type Wait: Future + Send + 'static;
        /// The `tracing` target of this layer's rejections.
        const LAYER: LayerKind;

        /// Decide, or hand back a future. May change the request.
        fn check<B>(&self, request: &mut Request<B>) -> Step<Self::Ticket, Self::Wait>;

        /// Decide after waiting. May change the request.
        fn resume<B>(
            &self,
            output: <Self::Wait as Future>::Output,
            request: &mut Request<B>,
        ) -> Verdict<Self::Ticket>;

        /// What this layer asks of the request, for audit events (an authorization
        /// layer's scopes, roles, expression or policy). By default nothing.
        fn asked(&self) -> Option<&str> {
            None
        }

        /// The inner service answered: use the ticket (add headers, record, release).
        fn finish<R>(ticket: Self::Ticket, response: &mut Response<R>);

        /// The inner service answered: like [`finish`](Check::finish), but the response
        /// may first wait on the returned future (a record in a shared store, under its
        /// own time limit). By default: `finish`, and no wait.
        fn finish_later<R>(ticket: Self::Ticket, response: &mut Response<R>) -> Option<Finishing> {
            Self::finish(ticket, response);
            None
        }
    }
}

/// The settings a gate shares between its layer and its services.
#[derive(Clone)]
struct Shared<C> {
    check: C,
    /// `None`: the stack's renderer, or the default one.
    renderer: Option<Arc<dyn RenderRejection>>,
    /// `false`: the gate lets every request through unchecked (a layer of `GuardLayer`
    /// that was not asked for); it still hands its renderer on.
    enabled: bool,
}

/// The layer of every middleware of this crate; see the [module docs](self) and each
/// module's aliases (`AuthLayer`, `RequireLayer`, …).
#[must_use]
pub struct GateLayer<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for GateLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for GateLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateLayer")
            .field("check", &self.shared.check)
            .field("renderer", &self.shared.renderer.is_some())
            .finish()
    }
}

impl<C: Check> GateLayer<C> {
    pub(crate) fn from_check(check: C) -> Self {
        Self {
            shared: Arc::new(Shared {
                check,
                renderer: None,
                enabled: true,
            }),
        }
    }

    /// The check, to change a setting: copy-on-write, so clones of the layer made before
    /// keep theirs, while state shared behind the check's own `Arc`s stays shared.
    #[cfg_attr(not(any(feature = "authz", feature = "rate-limit")), allow(dead_code))]
    pub(crate) fn check_mut(&mut self) -> &mut C {
        &mut Arc::make_mut(&mut self.shared).check
    }

    /// A gate that lets every request through unchecked.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn disabled(mut self) -> Self {
        Arc::make_mut(&mut self.shared).enabled = false;
        self
    }

    /// This layer's own renderer, if it has one.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn own_renderer(&self) -> Option<Arc<dyn RenderRejection>> {
        self.shared.renderer.clone()
    }

    /// Take `renderer` unless this layer has its own.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn inherit_renderer(mut self, renderer: Option<Arc<dyn RenderRejection>>) -> Self {
        if self.shared.renderer.is_none() && renderer.is_some() {
            Arc::make_mut(&mut self.shared).renderer = renderer;
        }
        self
    }

    /// Whether the gate checks requests.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn is_enabled(&self) -> bool {
        self.shared.enabled
    }

    /// The check.
    pub(crate) fn check_ref(&self) -> &C {
        &self.shared.check
    }

    /// Render this layer's rejections, and every rejection of the layers and extractors
    /// behind it that set no renderer of their own, with `renderer` (a [`RenderRejection`]
    /// or a closure `Fn(&AuthError, &RequestHead) -> Response<Bytes>`).
    ///
    /// Without one, a layer renders with the renderer of the stack in front of it, else
    /// with [`DefaultRenderer`].
    pub fn with_renderer(mut self, renderer: impl RenderRejection) -> Self {
        Arc::make_mut(&mut self.shared).renderer = Some(Arc::new(renderer));
        self
    }

    /// Name the realm of `WWW-Authenticate` challenges, for this layer and the layers
    /// behind it: the same as `with_renderer(DefaultRenderer::new(realm))`.
    pub fn realm(self, realm: &str) -> Self {
        self.with_renderer(DefaultRenderer::new(realm))
    }
}

impl<C, S> Layer<S> for GateLayer<C> {
    type Service = Gate<C, S>;

    fn layer(&self, inner: S) -> Gate<C, S> {
        Gate {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of every middleware of this crate; see the [module docs](self) and each
/// module's aliases (`Auth`, `Require`, `RateLimiter`, …).
pub struct Gate<C, S> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<C, S: Clone> Clone for Gate<C, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<C: fmt::Debug, S: fmt::Debug> fmt::Debug for Gate<C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("check", &self.shared.check)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<C, S> Gate<C, S> {
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

/// Let a request in: leave this layer's renderer for the layers behind it.
fn admit<C, B>(shared: &Shared<C>, request: &mut Request<B>) {
    if let Some(renderer) = &shared.renderer {
        request
            .extensions_mut()
            .insert(StackRenderer(renderer.clone()));
    }
}

/// The one place a rejection is rendered, attached and reported.
fn reject<C: Check, B>(
    shared: &Shared<C>,
    rejection: Rejection,
    request: &Request<B>,
) -> Response<Bytes> {
    let Rejection { error, headers } = rejection;
    crate::metrics::decision(C::LAYER, Some(error.code()));
    report(C::LAYER, &error, request.extensions().get::<Identity>());
    let renderer = renderer_for(shared.renderer.as_ref(), request.extensions());
    let mut response = renderer.render(&error, &RequestHead::of(request));
    audit::rejected(
        C::LAYER,
        &error,
        request,
        response.status(),
        shared.check.asked(),
    );
    // Each name replaces what the renderer set; a name listed twice in a row keeps both
    // (a subject's and a credential's `RateLimit-Policy`).
    let mut last: Option<HeaderName> = None;
    for (name, value) in headers {
        if last.as_ref() == Some(&name) {
            response.headers_mut().append(name, value);
        } else {
            response.headers_mut().insert(name.clone(), value);
            last = Some(name);
        }
    }
    response.extensions_mut().insert(error);
    response
}

/// One `tracing` event per rejection, under the layer's target: `warn` when a dependency
/// is unavailable, `info` otherwise. Never the credential.
fn report(layer: LayerKind, error: &AuthError, identity: Option<&Identity>) {
    macro_rules! event {
        ($level:ident, $target:literal) => {
            tracing::$level!(
                target: $target,
                layer = ?layer,
                kind = ?error.kind(),
                reason = %error.reason(),
                subject = identity.map_or("", Identity::subject),
                required = error.required_scope().unwrap_or(""),
                retry_after_ms = error.retry_after().map_or(0, |d| d.as_millis() as u64),
                "request rejected"
            )
        };
    }
    let unavailable = error.kind() == AuthErrorKind::Unavailable;
    match (layer, unavailable) {
        (LayerKind::Auth | LayerKind::BruteForce, true) => event!(warn, "tower_api_guard::auth"),
        (LayerKind::Auth | LayerKind::BruteForce, false) => event!(info, "tower_api_guard::auth"),
        (LayerKind::Authz, true) => event!(warn, "tower_api_guard::authz"),
        (LayerKind::Authz, false) => event!(info, "tower_api_guard::authz"),
        (LayerKind::RateLimit, true) => event!(warn, "tower_api_guard::rate_limit"),
        (LayerKind::RateLimit, false) => event!(info, "tower_api_guard::rate_limit"),
    }
}

impl<C, S, ReqBody, ResBody> Service<Request<ReqBody>> for Gate<C, S>
where
    C: Check,
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<C, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        if !shared.enabled {
            admit(shared, &mut request);
            return ResponseFuture::passing(self.inner.call(request));
        }
        match shared.check.check(&mut request) {
            Step::Allow(ticket) => {
                crate::metrics::decision(C::LAYER, None);
                admit(shared, &mut request);
                let audit = Admitted::capture(C::LAYER, &request, shared.check.asked());
                ResponseFuture::calling(self.inner.call(request), ticket, audit)
            }
            Step::Deny(rejection) => ResponseFuture::rejected(reject(shared, rejection, &request)),
            Step::Wait(wait) => {
                // The ready inner service goes into the future; a fresh clone stays behind.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Waiting { wait },
                    pending: Some(Box::new(Pending {
                        inner,
                        request,
                        shared: self.shared.clone(),
                    })),
                    audit: None,
                }
            }
        }
    }
}

/// What a waiting check keeps for when it is done.
struct Pending<C, S, ReqBody> {
    inner: S,
    request: Request<ReqBody>,
    shared: Arc<Shared<C>>,
}

pin_project! {
    /// The response future of every middleware of this crate ([`Gate`]).
    pub struct ResponseFuture<C, S, ReqBody>
    where
        C: Check,
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<C::Wait, S::Future, C::Ticket, S::Response>,
        // Boxed: only a check that waits needs it, and an answer known at once then moves
        // a small future instead of one that carries a whole request.
        pending: Option<Box<Pending<C, S, ReqBody>>>,
        // What the audit event of an admission says, when a subscriber wants it.
        audit: Option<Box<Admitted>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<W, F, T, R> {
        Waiting { #[pin] wait: W },
        Calling { #[pin] future: F, ticket: Option<T> },
        Finishing { finishing: Finishing, response: Option<R> },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<C, S, ReqBody> ResponseFuture<C, S, ReqBody>
where
    C: Check,
    S: Service<Request<ReqBody>>,
{
    fn calling(future: S::Future, ticket: C::Ticket, audit: Option<Box<Admitted>>) -> Self {
        Self {
            state: State::Calling {
                future,
                ticket: Some(ticket),
            },
            pending: None,
            audit,
        }
    }

    fn passing(future: S::Future) -> Self {
        Self {
            state: State::Calling {
                future,
                ticket: None,
            },
            pending: None,
            audit: None,
        }
    }

    fn rejected(response: Response<Bytes>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
            pending: None,
            audit: None,
        }
    }
}

impl<C, S, ReqBody, ResBody> Future for ResponseFuture<C, S, ReqBody>
where
    C: Check,
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { wait } => {
                    let output = ready!(wait.poll(cx));
                    let Some(pending) = this.pending.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let Pending {
                        mut inner,
                        mut request,
                        shared,
                    } = *pending;
                    match shared.check.resume(output, &mut request) {
                        Verdict::Allow(ticket) => {
                            crate::metrics::decision(C::LAYER, None);
                            admit(&shared, &mut request);
                            *this.audit =
                                Admitted::capture(C::LAYER, &request, shared.check.asked());
                            let future = inner.call(request);
                            this.state.set(State::Calling {
                                future,
                                ticket: Some(ticket),
                            });
                        }
                        Verdict::Deny(rejection) => {
                            let response = reject(&shared, rejection, &request);
                            this.state.set(State::Rejected {
                                response: Some(response),
                            });
                        }
                    }
                }
                StateProj::Calling { future, ticket } => {
                    let result = ready!(future.poll(cx));
                    // On an error too: the ticket (a held slot) is released here.
                    let ticket = ticket.take();
                    let mut response = result?;
                    if let Some(audit) = this.audit.take() {
                        audit.report(response.status());
                    }
                    if let Some(ticket) = ticket
                        && let Some(finishing) = C::finish_later(ticket, &mut response)
                    {
                        this.state.set(State::Finishing {
                            finishing,
                            response: Some(response),
                        });
                        continue;
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Finishing {
                    finishing,
                    response,
                } => {
                    ready!(finishing.as_mut().poll(cx));
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            }
        }
    }
}

/// For the layers' unit tests: run one request through a layer over an inner service that
/// counts its calls and echoes the caller's subject.
#[cfg(test)]
pub(crate) mod support {
    use std::convert::Infallible;
    use std::future::ready;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// What came back: the response's status and headers, the `AuthError` if rejected, the
    /// subject the inner service saw, and how often the inner service ran.
    pub(crate) struct Outcome {
        pub(crate) status: http::StatusCode,
        pub(crate) headers: http::HeaderMap,
        pub(crate) error: Option<AuthError>,
        pub(crate) subject: Option<String>,
        pub(crate) calls: usize,
    }

    pub(crate) async fn run<C: Check>(layer: &GateLayer<C>, request: Request<()>) -> Outcome {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let inner = tower::service_fn(move |req: Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut response = Response::new(String::new());
            if let Some(identity) = req.extensions().get::<Identity>() {
                response
                    .extensions_mut()
                    .insert(identity.subject().to_owned());
            }
            ready(Ok::<_, Infallible>(response))
        });
        let response = tower::ServiceExt::oneshot(layer.layer(inner), request)
            .await
            .unwrap();
        Outcome {
            status: response.status(),
            headers: response.headers().clone(),
            error: response.extensions().get::<AuthError>().cloned(),
            subject: response.extensions().get::<String>().cloned(),
            calls: calls.load(Ordering::SeqCst),
        }
    }

    /// A request carrying `identity`, as authentication leaves it.
    pub(crate) fn with(identity: Option<Identity>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(identity) = identity {
            request.extensions_mut().insert(identity);
        }
        request
    }

    /// `x-user: <name>`; `x-user: bad` is a bad credential; `waits` makes it wait.
    pub(crate) struct HeaderAuth {
        pub(crate) waits: bool,
    }

    impl crate::auth::Authenticator for HeaderAuth {
        type Credential = String;
        type Future = std::future::Ready<Result<Option<Identity>, AuthError>>;

        fn extract(
            &self,
            head: &crate::head::RequestHead<'_>,
        ) -> Result<Option<String>, AuthError> {
            Ok(head
                .headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned))
        }

        fn authenticate(&self, user: String) -> Self::Future {
            std::future::ready(self.outcome(user))
        }

        fn authenticate_now(
            &self,
            user: String,
        ) -> Result<Result<Option<Identity>, AuthError>, String> {
            if self.waits {
                Err(user)
            } else {
                Ok(self.outcome(user))
            }
        }
    }

    impl HeaderAuth {
        fn outcome(&self, user: String) -> Result<Option<Identity>, AuthError> {
            if user == "bad" {
                return Err(AuthError::invalid_token("bad user"));
            }
            let source = crate::identity::Source::Custom {
                mechanism: "header".into(),
            };
            Ok(Some(Identity::builder(user, source).build()))
        }
    }

    /// A custom-source identity with `scopes` and `roles`.
    pub(crate) fn caller(subject: &str, scopes: &[&str], roles: &[&str]) -> Identity {
        let source = crate::identity::Source::Custom {
            mechanism: "test".into(),
        };
        Identity::builder(subject, source)
            .scopes(scopes.iter().copied())
            .roles(roles.iter().copied())
            .build()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers from the request's `x-answer` header: `allow`, `deny`, `wait-allow`,
    /// `wait-deny`; its ticket adds `x-ticket` to the response.
    #[derive(Clone, Debug)]
    struct Toy;

    impl Check for Toy {
        type Ticket = &'static str;
        type Wait = Ready<bool>;
        const LAYER: LayerKind = LayerKind::Authz;

        fn check<B>(&self, request: &mut Request<B>) -> Step<&'static str, Ready<bool>> {
            match request.headers().get("x-answer").map(|v| v.as_bytes()) {
                Some(b"allow") => Step::Allow("now"),
                Some(b"wait-allow") => Step::Wait(ready(true)),
                Some(b"wait-deny") => Step::Wait(ready(false)),
                Some(b"allow-finish-later") => Step::Allow("finishing"),
                _ => Step::Deny(AuthError::insufficient_scope("toy").into()),
            }
        }

        fn resume<B>(&self, allowed: bool, _: &mut Request<B>) -> Verdict<&'static str> {
            if allowed {
                Verdict::Allow("later")
            } else {
                Verdict::Deny(AuthError::insufficient_scope("toy").into())
            }
        }

        fn finish<R>(ticket: &'static str, response: &mut Response<R>) {
            response
                .headers_mut()
                .insert("x-ticket", HeaderValue::from_static(ticket));
        }

        fn finish_later<R>(ticket: &'static str, response: &mut Response<R>) -> Option<Finishing> {
            Self::finish(ticket, response);
            let later = FINISHED.with(|f| f.borrow_mut().take())?;
            Some(Box::pin(async move {
                let _ = later.await;
            }))
        }
    }

    thread_local! {
        /// What the next `finish_later` of `Toy` waits on.
        static FINISHED: std::cell::RefCell<Option<tokio::sync::oneshot::Receiver<()>>> =
            const { std::cell::RefCell::new(None) };
    }

    #[test]
    fn a_response_waits_for_what_finish_later_hands_back() {
        let (mut svc, calls, _) = gate(GateLayer::from_check(Toy));
        let (done, later) = tokio::sync::oneshot::channel();
        FINISHED.with(|f| *f.borrow_mut() = Some(later));
        let mut future = std::pin::pin!(svc.call(request("allow-finish-later")));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        done.send(()).unwrap();
        let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
            panic!("the response waits no longer");
        };
        assert_eq!(response.headers()["x-ticket"], "finishing");
    }

    /// Counts its calls and its clones.
    struct Inner {
        calls: Arc<AtomicUsize>,
        clones: Arc<AtomicUsize>,
    }

    impl Clone for Inner {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::SeqCst);
            Self {
                calls: self.calls.clone(),
                clones: self.clones.clone(),
            }
        }
    }

    impl Service<Request<()>> for Inner {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            ready(Ok(Response::new(String::from("inner"))))
        }
    }

    fn gate(layer: GateLayer<Toy>) -> (Gate<Toy, Inner>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let clones = Arc::new(AtomicUsize::new(0));
        let inner = Inner {
            calls: calls.clone(),
            clones: clones.clone(),
        };
        (layer.layer(inner), calls, clones)
    }

    fn request(answer: &str) -> Request<()> {
        Request::get("/")
            .header("x-answer", answer)
            .body(())
            .unwrap()
    }

    fn run<F: Future>(future: F) -> F::Output {
        futures_util::FutureExt::now_or_never(future).expect("ready")
    }

    #[test]
    fn an_answer_known_at_once_calls_the_inner_service_without_a_clone() {
        let (mut svc, calls, clones) = gate(GateLayer::from_check(Toy));
        let response = run(svc.call(request("allow"))).unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ticket"], "now");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(clones.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_waiting_check_clones_the_inner_service_once() {
        let (mut svc, calls, clones) = gate(GateLayer::from_check(Toy));
        let response = run(svc.call(request("wait-allow"))).unwrap();
        assert_eq!(response.headers()["x-ticket"], "later");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(clones.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_rejection_never_calls_the_inner_service_and_carries_the_error() {
        let (mut svc, calls, _) = gate(GateLayer::from_check(Toy));
        for answer in ["deny", "wait-deny"] {
            let response = run(svc.call(request(answer))).unwrap();
            assert_eq!(response.status(), 403, "{answer}");
            assert!(response.headers().get("x-ticket").is_none());
            assert_eq!(
                response.extensions().get::<AuthError>().unwrap().kind(),
                AuthErrorKind::InsufficientScope
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_own_renderer_beats_the_stack_renderer_which_beats_the_default() {
        let teapot = |_: &AuthError, _: &RequestHead<'_>| {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = http::StatusCode::IM_A_TEAPOT;
            r
        };
        // The stack's renderer, left by an outer layer.
        let (mut svc, _, _) = gate(GateLayer::from_check(Toy));
        let mut req = request("deny");
        req.extensions_mut()
            .insert(StackRenderer(Arc::new(DefaultRenderer::new("outer"))));
        let response = run(svc.call(req)).unwrap();
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with(r#"Bearer realm="outer""#)
        );
        // Its own wins, and is handed on to the layers behind it.
        let (mut svc, _, _) = gate(GateLayer::from_check(Toy).with_renderer(teapot));
        let mut req = request("deny");
        req.extensions_mut()
            .insert(StackRenderer(Arc::new(DefaultRenderer::new("outer"))));
        assert_eq!(run(svc.call(req)).unwrap().status(), 418);
    }

    #[test]
    fn a_disabled_gate_lets_everything_through_and_hands_its_renderer_on() {
        #[derive(Clone)]
        struct Sees(Arc<AtomicUsize>);
        impl Service<Request<()>> for Sees {
            type Response = Response<String>;
            type Error = Infallible;
            type Future = Ready<Result<Response<String>, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, req: Request<()>) -> Self::Future {
                if req.extensions().get::<StackRenderer>().is_some() {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
                ready(Ok(Response::new(String::new())))
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let layer = GateLayer::from_check(Toy).realm("x").disabled();
        assert!(!layer.is_enabled());
        let mut svc = layer.layer(Sees(seen.clone()));
        let response = run(svc.call(request("deny"))).unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("x-ticket").is_none());
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_settings_change_leaves_earlier_clones_alone() {
        let layer = GateLayer::from_check(Toy);
        let before = layer.clone();
        let after = layer.realm("changed");
        assert!(before.own_renderer().is_none());
        assert!(after.own_renderer().is_some());
        // inherit_renderer keeps a layer's own renderer.
        let kept = after.clone().inherit_renderer(before.own_renderer());
        assert!(kept.own_renderer().is_some());
        let given = before.inherit_renderer(after.own_renderer());
        assert!(given.own_renderer().is_some());
    }
}
