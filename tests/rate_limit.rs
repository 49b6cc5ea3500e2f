//! `RateLimiterLayer` through the full stack: per-identity limits, plans, standard headers,
//! 429 with Retry-After, gRPC RESOURCE_EXHAUSTED. Time through the injectable clock.
//!
//! The limiters key on the [`Identity`](tower_api_guard::Identity) on the request, whoever
//! put it there: most tests put it there directly (`testing::with_identity`,
//! `testing::IdentityLayer`); the tests of what a token decides (its issuer, its plan claim,
//! failed authentications) go through `AuthLayer` and a JWT.
#![cfg(all(feature = "rate-limit", feature = "jwt", feature = "testing"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use tower::{ServiceBuilder, ServiceExt};
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::rate_limit::{Quota, RateLimiterLayer};
use tower_api_guard::testing::{caller, with_identity};
use tower_api_guard::{AuthError, AuthErrorKind};

use common::calls::{self, Bearer};
use common::jwt::{NOW, clocked_issuer, clocked_issuer_and_jwt, trusting};

#[tokio::test]
async fn per_identity_limits_headers_and_plans() {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let svc = ServiceBuilder::new()
        .layer(
            RateLimiterLayer::new([
                Quota::parse("2/s").unwrap(),
                Quota::parse("100/day").unwrap(),
            ])
            .plan("gold", [Quota::parse("5/s").unwrap()])
            .clock(clock.clone()),
        )
        .service_fn(calls::ok::<()>);
    let alice = caller("alice").build();
    let bob = caller("bob").build();
    let gold = caller("carol").plan("gold").build();
    let call = |who: &tower_api_guard::Identity, grpc: bool| {
        let mut req = Request::post("/");
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        calls::call(&svc, with_identity(req.body(()).unwrap(), who.clone()))
    };

    let res = call(&alice, false).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["ratelimit-policy"],
        r#""q0";q=2;w=1, "q1";q=100;w=86400"#
    );
    assert_eq!(res.headers()["ratelimit"], r#""q0";r=1;t=1"#);
    assert_eq!(call(&alice, false).await.status(), StatusCode::OK);
    let res = call(&alice, false).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(
        res.extensions().get::<AuthError>().unwrap().kind(),
        AuthErrorKind::RateLimited
    );
    // gRPC: RESOURCE_EXHAUSTED.
    let res = call(&alice, true).await;
    assert_eq!(res.headers()["grpc-status"], "8");
    // Bob has his own budget; Carol's plan gives her five.
    assert_eq!(call(&bob, false).await.status(), StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(call(&gold, false).await.status(), StatusCode::OK);
    }
    assert_eq!(
        call(&gold, false).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Half a second later, Alice has one request again.
    clock.advance(Duration::from_millis(500));
    assert_eq!(call(&alice, false).await.status(), StatusCode::OK);
    assert_eq!(
        call(&alice, false).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_plan_claim_of_a_token_picks_the_plan() {
    let (clock, issuer) = clocked_issuer();
    let jwt = trusting(&issuer, "api")
        .clock(clock.clone())
        .plan_claim("plan")
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt))
        .layer(
            RateLimiterLayer::new([Quota::parse("2/s").unwrap()])
                .plan("gold", [Quota::parse("5/s").unwrap()])
                .clock(clock.clone()),
        )
        .service_fn(calls::ok::<()>);
    let call = |token: &str| calls::call(&svc, calls::get(Some(token)));
    let gold = issuer
        .token()
        .audience("api")
        .subject("carol")
        .claim("plan", "gold".into())
        .mint();
    for _ in 0..5 {
        assert_eq!(call(&gold).await.status(), StatusCode::OK);
    }
    assert_eq!(call(&gold).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Without the claim: the default quota.
    let plain = issuer.token().audience("api").subject("dave").mint();
    for _ in 0..2 {
        assert_eq!(call(&plain).await.status(), StatusCode::OK);
    }
    assert_eq!(call(&plain).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn same_subject_of_two_issuers_has_two_budgets() {
    use tower_api_guard::jwt::JwtIssuers;
    use tower_api_guard::testing::TestIssuer;
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let a = TestIssuer::new("https://a.example").clock(clock.clone());
    let b = TestIssuer::new("https://b.example").clock(clock.clone());
    let issuers = JwtIssuers::new([a.clone(), b.clone()].map(|issuer| {
        trusting(&issuer, "api")
            .clock(clock.clone())
            .build()
            .unwrap()
    }))
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(issuers))
        .layer(RateLimiterLayer::new([Quota::parse("1/min").unwrap()]).clock(clock.clone()))
        .service_fn(calls::ok::<()>);
    let call = |token: &str| calls::call(&svc, calls::get(Some(token)));
    let alice_of_a = a.token().audience("api").subject("alice").mint();
    let alice_of_b = b.token().audience("api").subject("alice").mint();

    assert_eq!(call(&alice_of_a).await.status(), StatusCode::OK);
    assert_eq!(
        call(&alice_of_a).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another issuer's alice is another caller, with her own budget.
    assert_eq!(
        call(&alice_of_b).await.status(),
        StatusCode::OK,
        "alice of issuer B must not share alice of issuer A's bucket"
    );
    assert_eq!(
        call(&alice_of_b).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn brute_force_guard_trips_before_authentication_and_resets() {
    use std::net::SocketAddr;
    use tower_api_guard::auth::BruteForceGuardLayer;
    use tower_api_guard::rate_limit::ClientAddr;
    let (clock, issuer, jwt) = clocked_issuer_and_jwt();
    let svc = ServiceBuilder::new()
        .layer(
            BruteForceGuardLayer::new(Quota::parse("3/min").unwrap())
                .client_addr(ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap())
                .clock(clock.clone()),
        )
        .layer(AuthLayer::new(jwt))
        .service_fn(calls::ok::<()>);
    let good = issuer.token().audience("api").mint();
    let call = |peer: &str, token: &str, xff: Option<&str>| {
        let mut req = Request::get("/").bearer(token);
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut()
            .insert(peer.parse::<SocketAddr>().unwrap());
        svc.clone().oneshot(req)
    };
    for _ in 0..3 {
        assert_eq!(
            call("198.51.100.1:1000", "a.b.c", None)
                .await
                .unwrap()
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Over the failure quota: 429 at once, even with a valid token (no verification runs).
    let res = call("198.51.100.1:1001", &good, None).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "20");
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let res = call("198.51.100.1:1002", &good, Some("203.0.113.99"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client is unaffected; behind a trusted proxy, the forwarded address counts.
    assert_eq!(
        call("198.51.100.2:1000", &good, None)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        call("10.0.0.5:1000", &good, Some("198.51.100.3"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for _ in 0..3 {
        call("10.0.0.5:1000", "a.b.c", Some("198.51.100.3"))
            .await
            .unwrap();
    }
    assert_eq!(
        call("10.0.0.5:1000", &good, Some("198.51.100.3"))
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        call("10.0.0.5:1000", &good, Some("198.51.100.4"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Successful and missing-credential requests do not count; time resets the budget.
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        call("198.51.100.1:1003", &good, None)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        call("198.51.100.1:1003", &good, None)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn anonymous_requests_by_address_and_legacy_headers() {
    use std::net::SocketAddr;
    use tower_api_guard::auth::AuthenticatorExt;
    use tower_api_guard::rate_limit::ClientAddr;
    let (clock, _, jwt) = clocked_issuer_and_jwt();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt.optional()))
        .layer(
            RateLimiterLayer::new([Quota::parse("10/s").unwrap()])
                .anonymous([Quota::parse("1/s").unwrap()], ClientAddr::new())
                .legacy_headers(true)
                .clock(clock.clone()),
        )
        .service_fn(calls::ok::<()>);
    let anon = |peer: &str| {
        let mut req = Request::get("/").body(()).unwrap();
        req.extensions_mut()
            .insert(peer.parse::<SocketAddr>().unwrap());
        svc.clone().oneshot(req)
    };
    let res = anon("198.51.100.1:1").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-ratelimit-limit"], "1");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(res.headers()["x-ratelimit-reset"], "1");
    assert_eq!(
        anon("198.51.100.1:2").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        anon("198.51.100.2:1").await.unwrap().status(),
        StatusCode::OK
    );
    // IPv6 neighbours in one /56 share a budget.
    assert_eq!(
        anon("[2001:db8:0:100::1]:1").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        anon("[2001:db8:0:1ff::9]:1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Without a peer address an anonymous request cannot be keyed: it passes.
    let res = svc
        .clone()
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("ratelimit").is_none());
}

#[tokio::test]
async fn concurrency_limit_per_identity() {
    use tower::Service;
    use tower_api_guard::rate_limit::InFlightLimitLayer;
    let (open, gate) = tokio::sync::watch::channel(false);
    let mut svc = ServiceBuilder::new()
        .layer(InFlightLimitLayer::per_identity(
            std::num::NonZeroUsize::new(2).unwrap(),
        ))
        .service_fn(move |_r: Request<()>| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        });
    let req = |who: &str| with_identity(Request::new(()), caller(who).build());
    // The slot is taken in `call`: two calls of "a" hold both.
    let first = svc.ready().await.unwrap().call(req("a"));
    let second = svc.ready().await.unwrap().call(req("a"));
    let third = svc.ready().await.unwrap().call(req("a")).await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "1");
    // Another identity is independent.
    let other = svc.ready().await.unwrap().call(req("b"));
    // Dropping an unfinished request frees its slot; completing one frees it too.
    drop(first);
    let again = svc.ready().await.unwrap().call(req("a"));
    open.send(true).unwrap();
    assert_eq!(second.await.unwrap().status(), StatusCode::OK);
    assert_eq!(again.await.unwrap().status(), StatusCode::OK);
    assert_eq!(other.await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call(req("a"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn grpc_resource_exhausted_with_a_real_client() {
    use common::grpc::{GrpcServer, check};
    use tonic::Code;
    use tower_api_guard::testing::IdentityLayer;
    let server = GrpcServer::start(
        ServiceBuilder::new()
            .layer(IdentityLayer::new(caller("alice").build()))
            .layer(RateLimiterLayer::new([Quota::parse("1/min").unwrap()]))
            .into_inner(),
    )
    .await;
    let mut client = server.client().await;
    assert!(check(&mut client, &[]).await.is_ok());
    let err = check(&mut client, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    drop(client);
    server.stop().await;
}
