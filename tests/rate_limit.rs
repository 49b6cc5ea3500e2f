//! `RateLimitLayer` through the full stack: per-identity limits, plans, standard headers,
//! 429 with Retry-After, gRPC RESOURCE_EXHAUSTED. Time through the injectable clock.
#![cfg(all(feature = "rate-limit", feature = "jwt", feature = "testing"))]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{ServiceBuilder, ServiceExt};
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::rate_limit::{Quota, RateLimitLayer};
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{AuthError, AuthErrorKind};

#[tokio::test]
async fn per_identity_limits_headers_and_plans() {
    let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
    let issuer = TestIssuer::new("https://issuer.example").with_clock(clock.clone());
    let jwt = JwtAuthenticator::builder("https://issuer.example", "api")
        .keys(issuer.static_keys())
        .clock(clock.clone())
        .plan_claim("plan")
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt))
        .layer(
            RateLimitLayer::new([
                Quota::parse("2/s").unwrap(),
                Quota::parse("100/day").unwrap(),
            ])
            .plan("gold", [Quota::parse("5/s").unwrap()])
            .clock(clock.clone()),
        )
        .service_fn(|_r: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    let call = |token: &str, grpc: bool| {
        let mut req = Request::post("/").header("authorization", format!("Bearer {token}"));
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        svc.clone().oneshot(req.body(()).unwrap())
    };
    let alice = issuer.token().audience("api").subject("alice").mint();
    let bob = issuer.token().audience("api").subject("bob").mint();
    let gold = issuer
        .token()
        .audience("api")
        .subject("carol")
        .claim("plan", "gold".into())
        .mint();

    let res = call(&alice, false).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["ratelimit-policy"],
        r#""q0";q=2;w=1, "q1";q=100;w=86400"#
    );
    assert_eq!(res.headers()["ratelimit"], r#""q0";r=1;t=1"#);
    assert_eq!(call(&alice, false).await.unwrap().status(), StatusCode::OK);
    let res = call(&alice, false).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(
        res.extensions().get::<AuthError>().unwrap().kind(),
        AuthErrorKind::RateLimited
    );
    // gRPC: RESOURCE_EXHAUSTED.
    let res = call(&alice, true).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "8");
    // Bob has his own budget; Carol's plan gives her five.
    assert_eq!(call(&bob, false).await.unwrap().status(), StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(call(&gold, false).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        call(&gold, false).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Half a second later, Alice has one request again.
    clock.advance(Duration::from_millis(500));
    assert_eq!(call(&alice, false).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        call(&alice, false).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}
