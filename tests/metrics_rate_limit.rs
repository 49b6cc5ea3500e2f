//! What the rate limiter, the brute-force guard and their Redis stores record: decisions
//! per quota, store errors and fail-open passes, Redis round trips, lockouts.
#![cfg(all(
    feature = "metrics",
    feature = "jwt",
    feature = "testing",
    feature = "rate-limit",
    feature = "redis"
))]

mod common;

use std::time::Duration;

use http::{Request, StatusCode};
use tower::ServiceBuilder;
use tower_api_guard::auth::{AuthLayer, BruteForceGuardLayer};
use tower_api_guard::metrics::{
    DECISIONS, FAIL_OPEN, LOCKOUTS, RATE_LIMIT_DECISIONS, REDIS_SECONDS, STORE_ERRORS,
};
use tower_api_guard::rate_limit::{Quota, RateLimiterLayer, RedisStore};

use common::calls::{self, Bearer};
use common::metrics::Recorded;
use common::redis::OwnRedis;

fn quota(text: &str) -> Quota {
    Quota::parse(text).unwrap()
}

#[test]
fn each_decision_counts_once_under_the_quota_that_decided_it() {
    let recorded = Recorded::new();
    let (clock, issuer, jwt) = common::jwt::clocked_issuer_and_jwt();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt))
        .layer(RateLimiterLayer::new([quota("2/min"), quota("100/hour")]).clock(clock.clone()))
        .service_fn(calls::ok::<()>);
    let token = issuer.token().audience(common::jwt::AUD).mint();
    let statuses: Vec<StatusCode> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            let token = token.clone();
            recorded.run(async move {
                let req = Request::builder().maybe_bearer(Some(&token));
                calls::call(&svc, req.body(()).unwrap()).await.status()
            })
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        2,
        "{statuses:?}"
    );
    let taken = recorded.take();
    let q0 = |outcome| [("policy", "q0"), ("outcome", outcome)];
    assert_eq!(taken.counter(RATE_LIMIT_DECISIONS, &q0("allowed")), 2);
    assert_eq!(taken.counter(RATE_LIMIT_DECISIONS, &q0("limited")), 3);
    assert_eq!(taken.counter(RATE_LIMIT_DECISIONS, &[]), 5, "{taken:?}");
    let limited = [
        ("layer", "rate_limit"),
        ("outcome", "rejected"),
        ("reason", "rate_limited"),
    ];
    assert_eq!(taken.counter(DECISIONS, &limited), 3);
    assert_eq!(
        taken.label_values(RATE_LIMIT_DECISIONS, "policy"),
        vec!["q0".to_owned()]
    );
}

#[test]
fn redis_round_trips_are_timed_and_a_dead_server_counts_as_store_errors() {
    let recorded = Recorded::new();
    recorded.run(async {
        let Some(mut redis) = OwnRedis::start().await else {
            return;
        };
        // The default failure policy: fail open.
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let (_, issuer, jwt) = common::jwt::clocked_issuer_and_jwt();
        let svc = ServiceBuilder::new()
            .layer(AuthLayer::new(jwt))
            .layer(RateLimiterLayer::new([quota("2/min")]).redis(store))
            .service_fn(calls::ok::<()>);
        let token = issuer.token().audience(common::jwt::AUD).mint();
        let call = || {
            let svc = svc.clone();
            let token = token.clone();
            async move {
                let req = Request::builder().maybe_bearer(Some(&token));
                calls::call(&svc, req.body(()).unwrap()).await.status()
            }
        };
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(call().await);
        }
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
        let taken = recorded.take();
        let q0 = |outcome| [("policy", "q0"), ("outcome", outcome)];
        assert_eq!(taken.counter(RATE_LIMIT_DECISIONS, &q0("allowed")), 2);
        assert_eq!(taken.counter(RATE_LIMIT_DECISIONS, &q0("limited")), 1);
        assert_eq!(
            taken
                .histogram(REDIS_SECONDS, &[("op", "rate_limit")])
                .len(),
            3,
            "{taken:?}"
        );
        assert_eq!(taken.counter(STORE_ERRORS, &[]), 0);

        redis.stop();
        for _ in 0..2 {
            assert_eq!(call().await, StatusCode::OK, "fail open");
        }
        let taken = recorded.take();
        let redis_errors = [("layer", "rate_limit"), ("store", "redis")];
        assert_eq!(taken.counter(STORE_ERRORS, &redis_errors), 2, "{taken:?}");
        assert_eq!(taken.counter(FAIL_OPEN, &[("layer", "rate_limit")]), 2);
        assert_eq!(taken.counter(RATE_LIMIT_DECISIONS, &[]), 0);
    });
}

#[test]
fn a_lockout_counts_once_when_it_starts() {
    let recorded = Recorded::new();
    let (clock, issuer, jwt) = common::jwt::clocked_issuer_and_jwt();
    let _ = issuer;
    let svc = ServiceBuilder::new()
        .layer(
            BruteForceGuardLayer::new(quota("2/min"))
                .clock(clock.clone())
                .progressive_lockout(
                    Duration::from_secs(60),
                    Duration::from_secs(3600),
                    Duration::from_secs(3600),
                ),
        )
        .layer(AuthLayer::new(jwt))
        .service_fn(calls::ok::<()>);
    let peer: std::net::SocketAddr = "192.0.2.7:4000".parse().unwrap();
    for _ in 0..6 {
        let svc = svc.clone();
        recorded.run(async move {
            let mut req = Request::builder()
                .maybe_bearer(Some("not-a-token"))
                .body(())
                .unwrap();
            req.extensions_mut().insert(peer);
            calls::call(&svc, req).await.status()
        });
    }
    let taken = recorded.take();
    assert_eq!(taken.counter(LOCKOUTS, &[]), 1, "{taken:?}");
    let refused = [
        ("layer", "brute_force"),
        ("outcome", "rejected"),
        ("reason", "locked_out"),
    ];
    assert!(taken.counter(DECISIONS, &refused) >= 1);
}
