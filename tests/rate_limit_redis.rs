//! The Redis rate-limit store against real Redis servers: the machine's (with `REDIS_URL`),
//! and one this test starts on a free port and stops mid-test.
#![cfg(all(
    feature = "rate-limit",
    feature = "redis",
    feature = "jwt",
    feature = "testing"
))]

mod common;

use common::redis::{OwnRedis, limited, unique};

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use tower_api_guard::FailurePolicy;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::rate_limit::{Quota, RedisStore};
use tower_api_guard::testing::TestIssuer;

type Svc = common::redis::Limited;

async fn status(svc: &Svc, token: &str) -> (StatusCode, bool) {
    let res = common::calls::call(svc, common::calls::get(Some(token))).await;
    (res.status(), res.headers().contains_key("ratelimit"))
}

/// A store on the machine's Redis with a prefix of its own, or `None` (printed) without
/// `REDIS_URL`.
async fn machine_store(prefix: &str) -> Option<RedisStore> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("skipped: REDIS_URL is not set (CI sets it; `.ci/run` starts Redis)");
        return None;
    };
    Some(
        RedisStore::connect(&url)
            .await
            .unwrap()
            .prefix(&unique(prefix)),
    )
}

#[tokio::test]
async fn two_instances_share_one_limit_and_survive_noscript() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("skipped: REDIS_URL is not set (CI sets it; `.ci/run` starts Redis)");
        return;
    };
    let issuer = TestIssuer::new("https://issuer.example");
    let prefix = unique("tag-rl-test");
    let a = limited(
        &issuer,
        RedisStore::connect(&url).await.unwrap().prefix(&prefix),
        "3/min",
    );
    // The second sends every decision alone: both ways of calling share the state.
    let b = limited(
        &issuer,
        RedisStore::connect(&url)
            .await
            .unwrap()
            .prefix(&prefix)
            .max_batch(NonZeroUsize::MIN),
        "3/min",
    );
    let token = issuer.token().audience("api").subject("shared").mint();
    assert_eq!(status(&a, &token).await, (StatusCode::OK, true));
    assert_eq!(status(&b, &token).await, (StatusCode::OK, true));
    // The script cache is flushed: the next call reloads it.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(status(&a, &token).await, (StatusCode::OK, true));
    assert_eq!(status(&b, &token).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Another identity is independent.
    let other = issuer.token().audience("api").subject("other").mint();
    assert_eq!(status(&a, &other).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_stopped_server_follows_the_failure_policy_and_recovery_follows() {
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let (url, port) = (redis.url(), redis.port());
    let issuer = TestIssuer::new("https://issuer.example");
    let open = limited(&issuer, RedisStore::connect(&url).await.unwrap(), "100/s");
    let closed = limited(
        &issuer,
        RedisStore::connect(&url)
            .await
            .unwrap()
            .failure_policy(FailurePolicy::Closed),
        "100/s",
    );
    let token = issuer.token().audience("api").mint();
    assert_eq!(status(&open, &token).await, (StatusCode::OK, true));
    assert_eq!(status(&closed, &token).await, (StatusCode::OK, true));

    redis.stop();
    // Fail open: through, without rate-limit headers. Fail closed: 503.
    assert_eq!(status(&open, &token).await, (StatusCode::OK, false));
    assert_eq!(
        status(&closed, &token).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Back up on the same port: decisions resume (the connection manager reconnects).
    let _redis = OwnRedis::start_on(port).await;
    let mut recovered = false;
    for _ in 0..100 {
        if status(&closed, &token).await == (StatusCode::OK, true) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the store did not recover after Redis came back");
}

/// The Redis script and the in-process store make the same decisions over several quotas,
/// and a rejection reports every quota unconsumed.
#[tokio::test]
async fn redis_and_memory_stores_agree_over_several_quotas() {
    let Some(store) = machine_store("tag-rl-agree").await else {
        return;
    };
    let memory = tower_api_guard::rate_limit::MemoryStore::new(16);
    let quotas = [
        Quota::parse("2/min").unwrap(),
        Quota::parse("100/day").unwrap(),
    ];
    // Redis reads its own clock, so both use windows far longer than the test runs.
    let now = SystemTime::now();
    for round in 0..3 {
        let r = store.check("k", &quotas, 1).await.unwrap();
        let m = memory.check("k", &quotas, 1, now);
        assert_eq!(r.allowed(), m.allowed(), "round {round}");
        let remaining = |d: &tower_api_guard::rate_limit::Decision| {
            d.quotas().iter().map(|q| q.0).collect::<Vec<_>>()
        };
        assert_eq!(remaining(&r), remaining(&m), "round {round}");
    }
    // The third request was rejected by the minute quota: the day quota shows 98 left,
    // not 97, in both stores.
    let m = memory.check("k", &quotas, 1, now);
    assert!(!m.allowed());
    assert_eq!(m.quotas()[1].0, 98);
    let r = store.check("k", &quotas, 1).await.unwrap();
    assert!(!r.allowed());
    assert_eq!(r.quotas()[1].0, 98);
    assert!(r.retry_after().unwrap() > std::time::Duration::from_secs(25));
}

/// Both Redis clients of the crate refuse a dead server quickly (two connection attempts),
/// instead of retrying with backoff for about ten seconds. Needs no Redis server: nothing
/// listens on port 1.
#[tokio::test]
async fn a_dead_redis_is_an_error_within_seconds() {
    use tower_api_guard::jwt::RedisRevocations;
    let url = "redis://127.0.0.1:1";
    let bound = Duration::from_secs(8);
    let store = tokio::time::timeout(bound, RedisStore::connect(url))
        .await
        .expect("RedisStore::connect gave up within the bound");
    assert!(store.is_err());
    let revocations = tokio::time::timeout(bound, RedisRevocations::connect(url))
        .await
        .expect("RedisRevocations::connect gave up within the bound");
    assert!(revocations.is_err());
}

/// Concurrent decisions share script calls (batches), yet each is made exactly once, in
/// order: of 120 concurrent requests for one key with 40 allowed, exactly 40 pass; keys
/// with one and with two quotas, batched together, each get their own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_decisions_are_exact_under_concurrency() {
    let Some(store) = machine_store("tag-rl-batch").await else {
        return;
    };
    let store = store
        .timeout(Duration::from_secs(5))
        .max_in_flight(NonZeroUsize::MIN);
    let one = vec![Quota::parse("40/min").unwrap()];
    let two = vec![
        Quota::parse("100/min").unwrap(),
        Quota::parse("25/day").unwrap(),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..120 {
        let (store, one, two) = (store.clone(), one.clone(), two.clone());
        tasks.spawn(async move {
            if i % 2 == 0 {
                ("one", store.check("one", &one, 1).await.unwrap())
            } else {
                ("two", store.check("two", &two, 1).await.unwrap())
            }
        });
    }
    let (mut allowed_one, mut allowed_two) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (key, decision) = done.unwrap();
        match (key, decision.allowed()) {
            ("one", true) => {
                allowed_one += 1;
                assert_eq!(decision.quotas().len(), 1);
            }
            ("two", true) => {
                allowed_two += 1;
                assert_eq!(decision.quotas().len(), 2);
            }
            (_, false) => assert!(decision.retry_after().is_some()),
            _ => unreachable!(),
        }
    }
    // 60 requests each: the first key allows 40 of its 60, the second 25 (its day quota).
    assert_eq!((allowed_one, allowed_two), (40, 25));
    let after = store.check("two", &two, 1).await.unwrap();
    assert!(!after.allowed());
    assert_eq!(
        after.quotas()[0].0,
        75,
        "the minute quota counts only what passed"
    );
    assert_eq!(after.quotas()[1].0, 0);
}

/// A decision whose caller gave up (its budget ran out while Redis stalled) is dropped
/// from the queue, not consumed when Redis answers again.
#[tokio::test]
async fn a_caller_past_its_budget_consumes_nothing_later() {
    let Some(redis) = OwnRedis::start().await else {
        return;
    };
    let store = RedisStore::connect(&redis.url())
        .await
        .unwrap()
        .timeout(Duration::from_millis(200))
        .max_in_flight(NonZeroUsize::MIN);
    let quota = [Quota::parse("3/min").unwrap()];
    redis.signal("-STOP");
    // The first decision is sent and waits for the stalled server; the next five queue
    // behind it (one call in flight at most). All six callers give up at their budget.
    assert_eq!(
        store.check("k", &quota, 1).await.unwrap_err(),
        "Redis over its time limit"
    );
    let queued: Vec<_> = (0..5).map(|_| store.check("k", &quota, 1)).collect();
    for result in futures_util::future::join_all(queued).await {
        assert_eq!(result.unwrap_err(), "Redis over its time limit");
    }
    redis.signal("-CONT");
    // The first decision reached Redis and consumed one request; the five others did not.
    let mut allowed = 0;
    for _ in 0..5 {
        let decision = store.check("k", &quota, 1).await.unwrap();
        allowed += u32::from(decision.allowed());
    }
    assert_eq!(allowed, 2);
}

/// Two replicas on the machine's Redis: the first leases 5 requests at a time for 1 s on
/// a manual clock, the second asks Redis for each request.
async fn replicas(prefix: &str) -> Option<(RedisStore, RedisStore, std::sync::Arc<ManualClock>)> {
    let b = machine_store(prefix).await?;
    let clock = std::sync::Arc::new(ManualClock::at_unix(1_700_000_000));
    let a = b
        .clone()
        .lease(NonZeroU32::new(5).unwrap(), Duration::from_secs(1))
        .clock(clock.clone());
    Some((a, b, clock))
}

/// Leases: a process takes up to `size` requests at once, as many as are left, and spends
/// them without asking Redis; the replicas together never allow more than the limit.
#[tokio::test]
async fn leases_spend_locally_and_never_exceed_the_shared_limit() {
    // `a` leases 5 at a time, `b` (same prefix: another replica) asks for each request.
    let Some((a, b, _clock)) = replicas("tag-rl-lease").await else {
        return;
    };
    let quota = [Quota::parse("11/min").unwrap()];
    let check = |store: &RedisStore| {
        let store = store.clone();
        async move {
            let d = store.check("k", &quota, 1).await.unwrap();
            (d.allowed(), d.quotas()[0].0)
        }
    };
    // a takes 5 (6 left in Redis) and spends one; it reports 6 + its 4.
    assert_eq!(check(&a).await, (true, 10));
    assert_eq!(check(&b).await, (true, 5));
    for left in (0..4).rev() {
        assert_eq!(check(&a).await, (true, 6 + left));
    }
    // a's four were spent without Redis: b sees only its own second request.
    assert_eq!(check(&b).await, (true, 4));
    // a's lease is empty: it takes what is left (4 of the 5 it wants).
    assert_eq!(check(&a).await, (true, 3));
    assert!(!check(&b).await.0);
    for _ in 0..3 {
        assert!(check(&a).await.0);
    }
    assert!(!check(&a).await.0);
    // 11 in all: a 1 + 4 + 1 + 3, b 2.
}

/// A lease ends with its time to live (what it held is not spent afterwards) and serves
/// only the quotas it was taken for.
#[tokio::test]
async fn a_lease_expires_and_serves_only_its_own_quotas() {
    let Some((a, b, clock)) = replicas("tag-rl-lease-ttl").await else {
        return;
    };
    let quota = [Quota::parse("100/min").unwrap()];
    assert!(a.check("k", &quota, 1).await.unwrap().allowed());
    clock.advance(Duration::from_millis(999));
    assert!(a.check("k", &quota, 1).await.unwrap().allowed());
    assert_eq!(b.check("k", &quota, 1).await.unwrap().quotas()[0].0, 94);
    // Past the time to live, a takes a new lease of 5; the 3 it held are lost.
    clock.advance(Duration::from_millis(1));
    assert!(a.check("k", &quota, 1).await.unwrap().allowed());
    assert_eq!(b.check("k", &quota, 1).await.unwrap().quotas()[0].0, 88);
    // A lease serves only the quotas it was taken for: another plan for the key (here with
    // a second quota) takes its own from Redis.
    let plan = [quota[0], Quota::parse("1000/day").unwrap()];
    assert!(a.check("k", &plan, 1).await.unwrap().allowed());
    assert_eq!(b.check("k", &quota, 1).await.unwrap().quotas()[0].0, 82);
}

/// An absurd lease time (here `Duration::MAX`) is capped, not a panic on the clock's sum.
#[tokio::test]
async fn an_endless_lease_time_is_capped() {
    let Some(store) = machine_store("tag-rl-lease-max").await else {
        return;
    };
    let store = store.lease(NonZeroU32::new(5).unwrap(), Duration::MAX);
    let quota = [Quota::parse("100/min").unwrap()];
    // 5 taken, 95 left in Redis; the lease holds 4, then 3: the lease is current.
    for remaining in [99, 98] {
        let decision = store.check("k", &quota, 1).await.unwrap();
        assert_eq!(decision.quotas()[0].0, remaining);
    }
}
