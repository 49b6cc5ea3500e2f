//! What the layers record through the `metrics` facade: each counter moves by exactly the
//! number of requests that caused it, and label values stay in their fixed sets.
#![cfg(all(
    feature = "metrics",
    feature = "jwt",
    feature = "testing",
    feature = "authz"
))]

mod common;

use std::time::Duration;

use http::{Request, StatusCode};
use tower::ServiceBuilder;
use tower_api_guard::ReasonCode;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::authz::RequireLayer;
use tower_api_guard::metrics::DECISIONS;

use common::calls::{self, Bearer};
use common::metrics::Recorded;

#[test]
fn each_decision_is_counted_once_under_its_layer_outcome_and_reason() {
    let recorded = Recorded::new();
    let (clock, issuer, jwt) = common::jwt::clocked_issuer_and_jwt();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt))
        .layer(RequireLayer::all_scopes(["read"]))
        .service_fn(calls::ok::<()>);
    let status = |token: Option<String>| {
        let svc = svc.clone();
        recorded.run(async move {
            let req = Request::builder().maybe_bearer(token.as_deref());
            calls::call(&svc, req.body(()).unwrap()).await.status()
        })
    };

    let expired = issuer
        .token()
        .subject("alice")
        .audience(common::jwt::AUD)
        .scope("read")
        .expires_in(Duration::from_secs(60))
        .mint();
    let good = issuer
        .token()
        .subject("alice")
        .audience(common::jwt::AUD)
        .scope("read")
        .expires_in(Duration::from_secs(3600))
        .mint();
    let unscoped = issuer
        .token()
        .subject("bob")
        .audience(common::jwt::AUD)
        .expires_in(Duration::from_secs(3600))
        .mint();
    clock.advance(Duration::from_secs(120));
    recorded.take();

    for _ in 0..3 {
        assert_eq!(status(Some(expired.clone())), StatusCode::UNAUTHORIZED);
    }
    let taken = recorded.take();
    let rejected = |reason: ReasonCode| {
        [
            ("layer", "auth"),
            ("outcome", "rejected"),
            ("reason", reason.as_str()),
        ]
    };
    assert_eq!(taken.counter(DECISIONS, &rejected(ReasonCode::Expired)), 3);
    assert_eq!(taken.counter(DECISIONS, &[("outcome", "allowed")]), 0);
    assert_eq!(taken.counter(DECISIONS, &[]), 3, "{taken:?}");

    for _ in 0..2 {
        assert_eq!(status(Some(good.clone())), StatusCode::OK);
    }
    assert_eq!(status(Some(unscoped)), StatusCode::FORBIDDEN);
    assert_eq!(status(None), StatusCode::UNAUTHORIZED);
    let taken = recorded.take();
    let allowed = |layer| [("layer", layer), ("outcome", "allowed"), ("reason", "none")];
    assert_eq!(taken.counter(DECISIONS, &allowed("auth")), 3);
    assert_eq!(taken.counter(DECISIONS, &allowed("authz")), 2);
    let authz_rejected = [
        ("layer", "authz"),
        ("outcome", "rejected"),
        ("reason", "insufficient_scope"),
    ];
    assert_eq!(taken.counter(DECISIONS, &authz_rejected), 1);
    assert_eq!(
        taken.counter(DECISIONS, &rejected(ReasonCode::MissingCredentials)),
        1
    );
    assert_eq!(taken.counter(DECISIONS, &[]), 7);
}
