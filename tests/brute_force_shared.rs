//! The brute-force guard shared through Redis (`RedisFailures`), against real servers: the
//! machine's (`REDIS_URL`, e.g. `redis://127.0.0.1:6379`), a Redis Cluster
//! (`REDIS_CLUSTER_URL`, e.g. `redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002`),
//! and a redis-server of the test's own for the failure policy.
//!
//! Without the variable a test prints a reason and passes; with it, a server that cannot
//! be reached is a failure. Each test uses its own key prefix. Time is a `ManualClock`
//! shared by the "replicas" (two layers, each with its own connection), so nothing
//! depends on sleeping.
#![cfg(all(feature = "rate-limit", feature = "redis"))]

mod common;

use common::redis::{OwnRedis, env_url, unique};

use std::convert::Infallible;
use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Response, StatusCode};
use tower::{ServiceExt, service_fn};
use tower_api_guard::auth::{BruteForceGuardLayer, RedisFailures};
use tower_api_guard::clock::ManualClock;
use tower_api_guard::rate_limit::Quota;
use tower_api_guard::{AuthError, FailurePolicy};

/// A replica's store: its own connection to `url`, keys under `prefix`.
async fn store(url: &str, prefix: &str) -> RedisFailures {
    RedisFailures::connect(url)
        .await
        .unwrap_or_else(|e| panic!("Redis at the test's URL cannot be reached: {e}"))
        .prefix(prefix)
        // Generous: the machine is shared, and a blown limit would fail open.
        .timeout(Duration::from_secs(2))
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ))
}

/// What a request got: its status, its `Retry-After` (seconds), its error's reason.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    retry: Option<u64>,
    reason: String,
}

/// One request from `from` through `layer` to a service that fails authentication when
/// `fail`; `id` goes in `x-key-id`.
async fn send(layer: &BruteForceGuardLayer, from: &str, id: Option<&str>, fail: bool) -> Got {
    let inner = service_fn(move |_: Request<()>| {
        let mut response = Response::new(String::new());
        if fail {
            let error = AuthError::invalid_token("bad key");
            *response.status_mut() = error.status();
            response.extensions_mut().insert(error);
        }
        ready(Ok::<_, Infallible>(response))
    });
    let mut request = Request::get("/");
    if let Some(id) = id {
        request = request.header("x-key-id", id);
    }
    let mut request = request.body(()).unwrap();
    request
        .extensions_mut()
        .insert(from.parse::<SocketAddr>().unwrap());
    let response = tower_layer::Layer::layer(layer, inner)
        .oneshot(request)
        .await
        .unwrap();
    Got {
        status: response.status(),
        retry: response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().unwrap()),
        reason: response
            .extensions()
            .get::<AuthError>()
            .map(|e| e.reason().to_owned())
            .unwrap_or_default(),
    }
}

/// Two replicas on one prefix: failures on A lock the address out on B, and the reverse.
async fn replicas_trip_together(url: &str) {
    let prefix = unique("test-bf-trip");
    let clock = clock();
    let quota = Quota::parse("3/min").unwrap();
    let a = BruteForceGuardLayer::new(quota)
        .clock(clock.clone())
        .redis(store(url, &prefix).await);
    let b = BruteForceGuardLayer::new(quota)
        .clock(clock.clone())
        .redis(store(url, &prefix).await);
    let attacker = "198.51.100.7:40000";
    // Successes are not counted.
    for _ in 0..4 {
        assert_eq!(send(&b, attacker, None, false).await.status, StatusCode::OK);
    }
    // Three failures, spread over both replicas: one quota, not one each.
    for layer in [&a, &b, &a] {
        let got = send(layer, attacker, None, true).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    }
    for layer in [&a, &b] {
        let got = send(layer, attacker, None, false).await;
        assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS, "{got:?}");
        assert_eq!(got.retry, Some(20));
        assert!(got.reason.contains("from this client"), "{got:?}");
    }
    // Another address is not affected.
    assert_eq!(
        send(&b, "198.51.100.8:1", None, false).await.status,
        StatusCode::OK
    );
    // One failure's spacing later (3/min: 20 s), one more attempt.
    clock.advance(Duration::from_secs(20));
    assert_eq!(send(&b, attacker, None, false).await.status, StatusCode::OK);
    assert_eq!(
        send(&b, attacker, None, true).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&a, attacker, None, false).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// The progressive lockout in Redis: 60, 120, 240, then the cap (300), whichever replica
/// sees the failures; back to 60 after a quiet hour.
async fn lockouts_grow_and_reset(url: &str) {
    let prefix = unique("test-bf-lockout");
    let clock = clock();
    let layer = || {
        BruteForceGuardLayer::new(Quota::parse("2/min").unwrap())
            .clock(clock.clone())
            .progressive_lockout(
                Duration::from_secs(60),
                Duration::from_secs(300),
                Duration::from_secs(3_600),
            )
    };
    let a = layer().redis(store(url, &prefix).await);
    let b = layer().redis(store(url, &prefix).await);
    let attacker = "198.51.100.7:40000";
    for expected in [60, 120, 240, 300, 300] {
        assert_eq!(
            send(&a, attacker, None, true).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&b, attacker, None, true).await.status,
            StatusCode::UNAUTHORIZED
        );
        for layer in [&a, &b] {
            let got = send(layer, attacker, None, false).await;
            assert_eq!(
                (got.status, got.retry),
                (StatusCode::TOO_MANY_REQUESTS, Some(expected))
            );
        }
        // Still locked out a second before the end, on both; free at the end.
        clock.advance(Duration::from_secs(expected - 1));
        assert_eq!(send(&b, attacker, None, false).await.retry, Some(1));
        assert_eq!(send(&a, attacker, None, false).await.retry, Some(1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(send(&a, attacker, None, false).await.status, StatusCode::OK);
    }
    // Quiet for an hour after the last lockout: back to the base.
    clock.advance(Duration::from_secs(3_601));
    for layer in [&b, &a] {
        assert_eq!(
            send(layer, attacker, None, true).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(send(&b, attacker, None, false).await.retry, Some(60));
}

/// A credential id failing from two addresses on two replicas is refused from a third.
async fn ids_are_counted_across_addresses(url: &str) {
    let prefix = unique("test-bf-id");
    let clock = clock();
    let layer = || {
        BruteForceGuardLayer::new(Quota::parse("10/min").unwrap())
            .clock(clock.clone())
            .credential_id(Quota::parse("2/h").unwrap(), |head| {
                Some(head.headers.get("x-key-id")?.to_str().ok()?.to_owned())
            })
    };
    let a = layer().redis(store(url, &prefix).await);
    let b = layer().redis(store(url, &prefix).await);
    assert_eq!(
        send(&a, "198.51.100.1:1", Some("key-1"), true).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&b, "198.51.100.2:1", Some("key-1"), true).await.status,
        StatusCode::UNAUTHORIZED
    );
    let got = send(&a, "203.0.113.9:1", Some("key-1"), false).await;
    assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(got.retry, Some(30 * 60));
    assert!(got.reason.contains("credential id"), "{got:?}");
    // Another id, and the same addresses without an id, are not affected.
    assert_eq!(
        send(&b, "198.51.100.1:1", Some("key-2"), false)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&b, "198.51.100.1:1", None, false).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn two_replicas_share_one_failure_quota_per_address() {
    let Some(url) = env_url("REDIS_URL") else {
        return;
    };
    replicas_trip_together(&url).await;
}

#[tokio::test]
async fn the_progressive_lockout_is_shared_grows_and_resets() {
    let Some(url) = env_url("REDIS_URL") else {
        return;
    };
    lockouts_grow_and_reset(&url).await;
}

#[tokio::test]
async fn a_credential_id_is_limited_from_every_address() {
    let Some(url) = env_url("REDIS_URL") else {
        return;
    };
    ids_are_counted_across_addresses(&url).await;
}

#[tokio::test]
async fn on_a_cluster_replicas_share_counters_lockouts_and_ids() {
    let Some(url) = env_url("REDIS_CLUSTER_URL") else {
        return;
    };
    replicas_trip_together(&url).await;
    lockouts_grow_and_reset(&url).await;
    ids_are_counted_across_addresses(&url).await;
}

/// The keys of one address share a hash tag, so they live in one slot (the scripts would
/// fail with `CROSSSLOT` otherwise; this shows the names too) and expire.
#[tokio::test]
async fn the_keys_of_an_address_carry_one_hash_tag_and_expire() {
    let Some(url) = env_url("REDIS_URL") else {
        return;
    };
    let prefix = unique("test-bf-keys");
    let layer = BruteForceGuardLayer::new(Quota::parse("1/min").unwrap())
        .progressive_lockout(
            Duration::from_secs(60),
            Duration::from_secs(600),
            Duration::from_secs(3_600),
        )
        .redis(store(&url, &prefix).await);
    assert_eq!(
        send(&layer, "198.51.100.7:1", None, true).await.status,
        StatusCode::UNAUTHORIZED
    );
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{prefix}:{{ip:198.51.100.7}}:f"),
            format!("{prefix}:{{ip:198.51.100.7}}:lock"),
        ]
    );
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
}

/// A Redis that does not answer in time (paused) or at all (stopped): open lets requests
/// through to authentication, closed answers 503, each with its reason.
#[tokio::test]
async fn a_failing_redis_follows_the_failure_policy() {
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let url = redis.url();
    let guard = |store: RedisFailures| {
        BruteForceGuardLayer::new(Quota::parse("1/min").unwrap()).redis(
            store
                .prefix("test-bf-failing")
                .timeout(Duration::from_millis(50)),
        )
    };
    let open = guard(RedisFailures::connect(&url).await.unwrap());
    let closed = guard(
        RedisFailures::connect(&url)
            .await
            .unwrap()
            .failure_policy(FailurePolicy::Closed),
    );
    let from = "198.51.100.7:1";
    assert_eq!(send(&open, from, None, false).await.status, StatusCode::OK);
    assert_eq!(
        send(&closed, from, None, false).await.status,
        StatusCode::OK
    );
    let (events, _guard) = common::events::Captured::install(tracing::Level::WARN);

    // Paused: every call blows its time limit.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(send(&open, from, None, false).await.status, StatusCode::OK);
    // A failure that cannot be recorded keeps its own answer.
    assert_eq!(
        send(&open, from, None, true).await.status,
        StatusCode::UNAUTHORIZED
    );
    let got = send(&closed, from, None, false).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(got.reason.contains("time limit"), "{got:?}");
    assert_eq!(got.retry, Some(1));
    // Logged with the reason and the policy, never the address.
    let logged = events.take();
    assert!(logged.contains("brute-force store failed"), "{logged}");
    assert!(logged.contains("Redis over its time limit"), "{logged}");
    assert!(
        logged.contains("policy=Open") && logged.contains("policy=Closed"),
        "{logged}"
    );
    assert!(
        logged.contains("brute-force store failed to record a failed authentication"),
        "{logged}"
    );
    assert!(!logged.contains("198.51.100.7"), "{logged}");

    // Stopped (still paused, which no longer matters): every call is an error.
    redis.stop();
    assert_eq!(send(&open, from, None, false).await.status, StatusCode::OK);
    let got = send(&closed, from, None, false).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        got.reason.contains("brute-force store unavailable"),
        "{got:?}"
    );
}
