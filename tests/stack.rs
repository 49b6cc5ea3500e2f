//! One renderer for the whole stack: set once on the outermost layer, it renders every
//! rejection behind it (401, 403, 429, 503, gRPC), unless a layer sets its own; and the
//! layers share state across clones and renderer changes.
#![cfg(all(
    feature = "jwt",
    feature = "testing",
    feature = "authz",
    feature = "rate-limit"
))]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_api_guard::auth::{AuthLayer, Authenticator, AuthenticatorExt, BruteForceGuardLayer};
use tower_api_guard::authz::RequireLayer;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::rate_limit::{InFlightLimitLayer, Quota, RateLimiterLayer};
use tower_api_guard::render::DefaultRenderer;
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{AuthError, AuthErrorKind, GuardLayer, Identity, RequestHead};

const ISS: &str = "https://issuer.example";

/// Renders every rejection as `418` with the kind in a header, gRPC included.
fn teapot(error: &AuthError, head: &RequestHead<'_>) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(b"custom"));
    *response.status_mut() = StatusCode::IM_A_TEAPOT;
    let headers = response.headers_mut();
    headers.insert("x-kind", format!("{:?}", error.kind()).parse().unwrap());
    headers.insert("x-grpc", head.is_grpc().to_string().parse().unwrap());
    response
}

/// Answers 503 when the request carries `x-down` (a dependency that is unavailable).
struct Down;

impl Authenticator for Down {
    type Credential = ();
    type Future = Ready<Result<Option<Identity>, AuthError>>;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<()>, AuthError> {
        Ok(head.headers.contains_key("x-down").then_some(()))
    }

    fn authenticate(&self, (): ()) -> Self::Future {
        ready(Err(AuthError::unavailable(
            "store down",
            Duration::from_secs(7),
        )))
    }
}

fn jwt(issuer: &TestIssuer) -> JwtAuthenticator {
    JwtAuthenticator::builder(ISS, "api")
        .keys(issuer.static_keys())
        .build()
        .unwrap()
}

fn request(token: Option<&str>) -> http::request::Builder {
    let mut builder = Request::get("/items");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder
}

fn kind(response: &Response<impl Sized>) -> &str {
    response.headers()["x-kind"].to_str().unwrap()
}

#[tokio::test]
async fn one_renderer_set_once_renders_every_rejection_of_the_stack() {
    let issuer = TestIssuer::new(ISS);
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::UNIX_EPOCH));
    let svc = ServiceBuilder::new()
        // Set once, on the outermost layer.
        .layer(BruteForceGuardLayer::new(Quota::parse("100/min").unwrap()).with_renderer(teapot))
        .layer(AuthLayer::new(jwt(&issuer).or(Down)))
        .layer(RateLimiterLayer::new([Quota::parse("2/min").unwrap()]).clock(clock.clone()))
        .layer(InFlightLimitLayer::per_identity(
            NonZeroUsize::new(8).unwrap(),
        ))
        .layer(RequireLayer::all_scopes(["items:read"]))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::from("items")))
        });

    // 401: authentication.
    let res = svc
        .clone()
        .oneshot(request(None).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(kind(&res), "MissingCredentials");
    assert_eq!(
        res.extensions().get::<AuthError>().unwrap().kind(),
        AuthErrorKind::MissingCredentials
    );

    // 503: a dependency of authentication.
    let res = svc
        .clone()
        .oneshot(request(None).header("x-down", "1").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(kind(&res), "Unavailable");

    // 403: the guard, three layers further in.
    let writer = issuer.token().audience("api").scope("items:write").mint();
    let res = svc
        .clone()
        .oneshot(request(Some(&writer)).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(kind(&res), "InsufficientScope");

    // 429: the rate limit (the 403 above consumed one of the two).
    let reader = issuer.token().audience("api").scope("items:read").mint();
    let res = svc
        .clone()
        .oneshot(request(Some(&reader)).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("ratelimit"));
    let res = svc
        .clone()
        .oneshot(request(Some(&reader)).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(kind(&res), "RateLimited");
    // The limiter's fields still ride on its rejection.
    assert!(res.headers().contains_key("ratelimit"));

    // gRPC: the same renderer, told that the request is gRPC.
    let res = svc
        .clone()
        .oneshot(
            request(Some(&reader))
                .header("content-type", "application/grpc")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(kind(&res), "RateLimited");
    assert_eq!(res.headers()["x-grpc"], "true");
}

#[tokio::test]
async fn a_layer_with_its_own_renderer_keeps_it_for_itself_and_behind_it() {
    let issuer = TestIssuer::new(ISS);
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt(&issuer)).with_renderer(teapot))
        .layer(RequireLayer::all_scopes(["items:read"]).realm("inner"))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let res = svc
        .clone()
        .oneshot(request(None).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);

    let writer = issuer.token().audience("api").scope("items:write").mint();
    let res = svc
        .oneshot(request(Some(&writer)).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with(r#"Bearer realm="inner""#)
    );
}

#[tokio::test]
async fn the_realm_reaches_every_layer_and_the_default_renderer_is_used_without_one() {
    let issuer = TestIssuer::new(ISS);
    let svc = ServiceBuilder::new()
        .layer(
            GuardLayer::new(jwt(&issuer))
                .rate_limit(RateLimiterLayer::new([Quota::parse("5/min").unwrap()]))
                .realm("shop"),
        )
        .layer(RequireLayer::all_scopes(["items:read"]))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let writer = issuer.token().audience("api").scope("items:write").mint();
    let res = svc
        .clone()
        .oneshot(request(Some(&writer)).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with(r#"Bearer realm="shop""#)
    );

    // Without any renderer: the default one, realm `api`.
    let plain = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt(&issuer)))
        .layer(RequireLayer::all_scopes(["items:read"]))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let res = plain
        .oneshot(request(Some(&writer)).body(()).unwrap())
        .await
        .unwrap();
    let expected = DefaultRenderer::default()
        .render_http(&AuthError::insufficient_scope("items:read"))
        .headers()["www-authenticate"]
        .clone();
    assert_eq!(res.headers()["www-authenticate"], expected);
}

#[tokio::test]
async fn in_flight_clones_made_before_a_renderer_change_share_the_count() {
    let issuer = TestIssuer::new(ISS);
    let layer = InFlightLimitLayer::per_identity(NonZeroUsize::new(1).unwrap());
    let before = layer.clone();
    let after = layer.with_renderer(teapot);
    // Two services: one from the layer before the renderer change, one after.
    let (mock_a, mut handle_a) = tower_test::mock::pair::<Request<()>, Response<String>>();
    let (mock_b, mut handle_b) = tower_test::mock::pair::<Request<()>, Response<String>>();
    let mut a = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt(&issuer)))
        .layer(before)
        .service(mock_a);
    let mut b = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt(&issuer)))
        .layer(after)
        .service(mock_b);
    handle_a.allow(1);
    handle_b.allow(1);
    let token = issuer.token().audience("api").mint();

    // The first request holds the identity's only slot: it has reached the inner
    // service, which has not answered yet.
    a.ready().await.unwrap();
    let held = tokio::spawn(a.call(request(Some(&token)).body(()).unwrap()));
    let (_req, send) = handle_a.next_request().await.unwrap();
    // The second, through the other clone, is over the limit: one count for both.
    b.ready().await.unwrap();
    let res = b
        .call(request(Some(&token)).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(kind(&res), "RateLimited");

    // Once the first answers, the slot is free again.
    send.send_response(Response::new(String::from("done")));
    let held = held.await.unwrap();
    assert_eq!(held.unwrap().status(), StatusCode::OK);
    handle_b.allow(1);
    b.ready().await.unwrap();
    let next = b.call(request(Some(&token)).body(()).unwrap());
    let (_req, send) = handle_b.next_request().await.unwrap();
    send.send_response(Response::new(String::new()));
    assert_eq!(next.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_brute_force_guard_counts_failures_behind_it_and_rejects_with_the_stack_renderer() {
    let issuer = TestIssuer::new(ISS);
    let svc = ServiceBuilder::new()
        .layer(
            GuardLayer::new(jwt(&issuer))
                .brute_force(Quota::parse("2/min").unwrap())
                .with_renderer(teapot),
        )
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
    let bad = |svc: &_| {
        let svc: &tower_api_guard::Guard<JwtAuthenticator, _> = svc;
        let mut req = request(Some("not.a.token")).body(()).unwrap();
        req.extensions_mut().insert(peer);
        svc.clone().oneshot(req)
    };
    for _ in 0..2 {
        let res = bad(&svc).await.unwrap();
        assert_eq!(kind(&res), "InvalidToken");
    }
    let res = bad(&svc).await.unwrap();
    assert_eq!(kind(&res), "RateLimited");
    // Another address is not affected; without an address nothing is counted.
    let good = issuer.token().audience("api").mint();
    let res = svc
        .clone()
        .oneshot(request(Some(&good)).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_costs_what_the_cost_function_says() {
    let issuer = TestIssuer::new(ISS);
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::UNIX_EPOCH));
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt(&issuer)))
        .layer(
            RateLimiterLayer::new([Quota::parse("10/min").unwrap()])
                .cost(|head| {
                    if head.method == http::Method::POST {
                        4
                    } else {
                        1
                    }
                })
                .clock(clock),
        )
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let token = issuer.token().audience("api").mint();
    let post = || {
        Request::post("/items")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
    };
    // 10 per minute: two posts (8), two gets (10), then nothing.
    for expected in [6, 2] {
        let res = svc.clone().oneshot(post()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .contains(&format!(";r={expected};")),
            "{:?}",
            res.headers()["ratelimit"]
        );
    }
    let res = svc.clone().oneshot(post()).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(request(Some(&token)).body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = svc
        .oneshot(request(Some(&token)).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}
