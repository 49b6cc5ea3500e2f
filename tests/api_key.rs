//! API keys: offline format checks (no store call), digests, expiry and revocation, store
//! failures, the lookup cache, and JWT-or-key on one axum route.
#![cfg(all(
    feature = "api-key",
    feature = "jwt",
    feature = "testing",
    feature = "axum"
))]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_api_guard::api_key::{
    ApiKeyAuthenticator, ApiKeyManager, ApiKeyRecord, ApiKeyStore, CachedKeyStore, KeyDigest,
    KeyFormat, KeySourceHeader, MemoryKeyStore, NewKey, Plaintext, StoreError, StoreFuture,
};
use tower_api_guard::auth::{AuthLayer, AuthenticatorExt};
use tower_api_guard::clock::{Clock, ManualClock};
use tower_api_guard::{AuthErrorKind, Identity, ReasonCode, Source};

/// Why `auth` refuses `key` (it must).
async fn rejection(auth: &ApiKeyAuthenticator, key: &str) -> String {
    auth.verify(key).await.unwrap_err().reason().to_owned()
}

/// A key generated for `new` at the clock's time and kept in `store`: its plaintext and
/// its record.
fn issue(
    format: &KeyFormat,
    store: &MemoryKeyStore,
    clock: &ManualClock,
    new: NewKey,
) -> (Plaintext, ApiKeyRecord) {
    let (key, record) = format.generate_at(new, clock.now()).unwrap();
    store.insert(record.clone());
    (key, record)
}

fn setup() -> (Arc<ManualClock>, KeyFormat, MemoryKeyStore) {
    (
        Arc::new(ManualClock::at_unix(1_800_000_000)),
        KeyFormat::new("sk_test").unwrap(),
        MemoryKeyStore::new(),
    )
}

#[tokio::test]
async fn malformed_keys_never_reach_the_store() {
    let (clock, format, store) = setup();
    let (key, _) = issue(&format, &store, &clock, NewKey::new("owner", "ci"));
    let auth = ApiKeyAuthenticator::new(format, store.clone()).clock(clock.clone());
    let mut typo = key.to_string().into_bytes();
    let i = typo.len() - 10;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    for bad in [
        typo.as_str(),
        "",
        "sk_test_short",
        &"k".repeat(10_000),
        "sk_live_0000000000000000000000000000",
    ] {
        let err = auth.verify(bad).await.unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::InvalidToken, "{bad:.20}");
    }
    assert_eq!(store.lookups(), 0, "no store call for a malformed key");
    let id = auth.verify(&key).await.unwrap();
    assert_eq!(store.lookups(), 1);
    assert!(matches!(id.source(), Source::ApiKey { .. }));
}

#[tokio::test]
async fn unknown_expired_and_revoked_keys_are_401() {
    let (clock, format, store) = setup();
    let auth = ApiKeyAuthenticator::new(format.clone(), store.clone()).clock(clock.clone());
    let (unknown, _) = format.generate(NewKey::new("o", "n")).unwrap();
    assert_eq!(
        auth.verify(&unknown).await.unwrap_err().reason(),
        "unknown API key"
    );

    let (expiring, _) = issue(
        &format,
        &store,
        &clock,
        NewKey::new("o", "n").expires_at(clock.now() + Duration::from_secs(60)),
    );
    assert!(auth.verify(&expiring).await.is_ok());
    clock.advance(Duration::from_secs(60));
    assert_eq!(rejection(&auth, &expiring).await, "API key expired");

    let (revoked, record) = issue(&format, &store, &clock, NewKey::new("o", "n"));
    let id = record.id.clone();
    assert!(auth.verify(&revoked).await.is_ok());
    assert!(store.revoke_now(&id, clock.now()));
    assert_eq!(rejection(&auth, &revoked).await, "API key revoked");
    assert_eq!(store.owned_by("o").len(), 2);
}

#[derive(Debug, Clone)]
struct Down;

impl ApiKeyStore for Down {
    fn find(&self, _: &KeyDigest) -> StoreFuture<Option<ApiKeyRecord>> {
        Box::pin(async { Err(StoreError::new("connection refused")) })
    }
}

#[tokio::test]
async fn a_store_failure_is_503() {
    let (_, format, _) = setup();
    let (key, _) = format.generate(NewKey::new("o", "n")).unwrap();
    let err = ApiKeyAuthenticator::new(format, Down)
        .verify(&key)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);
}

#[tokio::test]
async fn the_cache_absorbs_hot_keys_and_floods_of_unknown_ones() {
    let (clock, format, store) = setup();
    let (key, record) = issue(&format, &store, &clock, NewKey::new("o", "n"));
    let digest = record.digest;
    let id = record.id.clone();
    let cached = CachedKeyStore::new(store.clone());
    let auth = ApiKeyAuthenticator::new(format.clone(), cached.clone()).clock(clock.clone());
    for _ in 0..100 {
        auth.verify(&key).await.unwrap();
    }
    assert_eq!(store.lookups(), 1, "a hot key costs one round trip");
    let (unknown, _) = format.generate(NewKey::new("x", "y")).unwrap();
    for _ in 0..100 {
        assert!(auth.verify(&unknown).await.is_err());
    }
    assert_eq!(store.lookups(), 2, "an unknown digest is looked up once");
    // Revocation in this process: invalidate, and it takes effect at once.
    store.revoke_now(&id, clock.now());
    cached.invalidate(&digest);
    assert_eq!(rejection(&auth, &key).await, "API key revoked");
}

/// A cached key answers from memory with the identity made once from its record, and every
/// hit still checks expiry; a revocation through the cache takes effect at once.
#[tokio::test]
async fn a_cached_key_shares_its_identity_and_is_still_checked() {
    let (clock, format, store) = setup();
    let (key, _) = issue(
        &format,
        &store,
        &clock,
        NewKey::new("svc", "n")
            .scopes(["items:read"])
            .expires_at(clock.now() + Duration::from_secs(10)),
    );
    let cached = CachedKeyStore::new(store.clone());
    let auth = ApiKeyAuthenticator::new(format.clone(), cached.clone()).clock(clock.clone());
    let first = auth.verify(&key).await.unwrap();
    let second = auth.verify(&key).await.unwrap();
    assert!(
        std::ptr::eq(first.subject().as_ptr(), second.subject().as_ptr()),
        "a hit shares the identity made when the record was cached"
    );
    assert!(second.has_scope("items:read"));
    assert_eq!(store.lookups(), 1);

    clock.advance(Duration::from_secs(10));
    assert_eq!(
        rejection(&auth, &key).await,
        "API key expired",
        "expiry is checked on every hit"
    );

    // Another key, revoked through the cache's manager: refused at once.
    let (key, record) = issue(&format, &store, &clock, NewKey::new("svc", "m"));
    let id = record.id.clone();
    auth.verify(&key).await.unwrap();
    assert!(cached.revoke(&id, clock.now()).await.unwrap());
    assert_eq!(rejection(&auth, &key).await, "API key revoked");
}

/// The TTLs, on an injected clock: a revocation made elsewhere (straight in the store)
/// takes effect when the positive entry expires; an unknown digest is asked again when the
/// negative entry expires.
#[tokio::test]
async fn cache_entries_expire_on_the_cache_clock() {
    let (clock, format, store) = setup();
    let (key, record) = issue(&format, &store, &clock, NewKey::new("o", "n"));
    let id = record.id.clone();
    let cached = CachedKeyStore::with_ttl(
        store.clone(),
        Duration::from_secs(30),
        Duration::from_secs(10),
    )
    .clock(clock.clone());
    let auth = ApiKeyAuthenticator::new(format.clone(), cached).clock(clock.clone());

    auth.verify(&key).await.unwrap();
    store.revoke_now(&id, clock.now());
    clock.advance(Duration::from_secs(29));
    auth.verify(&key)
        .await
        .expect("within the positive TTL the cached record answers");
    assert_eq!(store.lookups(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(rejection(&auth, &key).await, "API key revoked");
    assert_eq!(store.lookups(), 2);

    let (unknown, _) = format.generate(NewKey::new("x", "y")).unwrap();
    assert!(auth.verify(&unknown).await.is_err());
    clock.advance(Duration::from_secs(9));
    assert!(auth.verify(&unknown).await.is_err());
    assert_eq!(
        store.lookups(),
        3,
        "the negative entry answers within its TTL"
    );
    clock.advance(Duration::from_secs(1));
    assert!(auth.verify(&unknown).await.is_err());
    assert_eq!(store.lookups(), 4, "then the store is asked again");
}

#[tokio::test]
async fn identity_carries_the_record() {
    let (clock, format, store) = setup();
    let (key, record) = issue(
        &format,
        &store,
        &clock,
        NewKey::new("svc-billing", "nightly")
            .scopes(["invoices:read"])
            .roles(["service"])
            .plan("gold")
            .metadata(serde_json::json!({"team": "billing"})),
    );
    let key_id = record.id.clone();
    let id = ApiKeyAuthenticator::new(format, store)
        .clock(clock.clone())
        .verify(&key)
        .await
        .unwrap();
    assert_eq!(id.subject(), "svc-billing");
    assert_eq!(id.source(), &Source::ApiKey { key_id });
    assert!(id.has_scope("invoices:read") && id.has_role("service"));
    assert_eq!(id.plan(), Some("gold"));
    assert_eq!(id.claim("team"), Some(&serde_json::json!("billing")));
}

#[tokio::test]
async fn jwt_or_key_on_one_route() {
    let (_, format, store) = setup();
    let (key, record) = format
        .generate_at(NewKey::new("machine", "ci"), SystemTime::now())
        .unwrap();
    store.insert(record);
    let (issuer, jwt) = common::jwt::issuer_and_jwt("api");
    let keys = ApiKeyAuthenticator::new(format.clone(), store.clone());
    let app = Router::new()
        .route(
            "/me",
            get(|id: Identity| async move { id.subject().to_owned() }),
        )
        .route_layer(AuthLayer::new(jwt.or(keys)));
    let call = |headers: Vec<(&'static str, String)>| {
        let mut req = Request::get("/me");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let person = issuer.token().audience("api").subject("alice").mint();
    assert_eq!(
        call(vec![("authorization", format!("Bearer {person}"))])
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        call(vec![("x-api-key", key.to_string())])
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // A bad JWT never falls through to the key, and both at once is ambiguous.
    let lookups = store.lookups();
    assert_eq!(
        call(vec![("authorization", "Bearer a.b.c".into())])
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(vec![
            ("authorization", "Bearer a.b.c".into()),
            ("x-api-key", key.to_string())
        ])
        .await
        .unwrap()
        .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(store.lookups(), lookups, "the key store was not asked");
    // Two X-API-Key headers, or a non-ASCII one: 400.
    assert_eq!(
        call(vec![
            ("x-api-key", key.to_string()),
            ("x-api-key", key.to_string())
        ])
        .await
        .unwrap()
        .status(),
        StatusCode::BAD_REQUEST
    );
    // An empty or non-ASCII X-API-Key header: 400.
    assert_eq!(
        call(vec![("x-api-key", String::new())])
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    let non_ascii = Request::get("/me")
        .header(
            "x-api-key",
            http::HeaderValue::from_bytes(b"sk_test_\xff").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(non_ascii).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    // Authorization: ApiKey ...
    let auth_header =
        ApiKeyAuthenticator::new(format, store).header(KeySourceHeader::AuthorizationApiKey);
    let app = Router::new()
        .route(
            "/me",
            get(|id: Identity| async move { id.subject().to_owned() }),
        )
        .route_layer(AuthLayer::new(auth_header));
    let res = app
        .oneshot(
            Request::get("/me")
                .header("authorization", format!("ApiKey {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn last_used_is_written_in_batches_never_per_request() {
    use tower_api_guard::api_key::LastUsedTracker;
    let (clock, format, store) = setup();
    let (key, record) = issue(&format, &store, &clock, NewKey::new("o", "n"));
    let id = record.id.clone();
    let tracker = LastUsedTracker::new(store.clone(), Duration::from_secs(3600));
    let auth = ApiKeyAuthenticator::new(format, store.clone())
        .clock(clock.clone())
        .last_used(tracker.clone());
    for _ in 0..100 {
        auth.verify(&key).await.unwrap();
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(store.last_used_batches(), 0, "no write per request");
    assert_eq!(tracker.pending(), 1);
    tracker.flush().await;
    assert_eq!(store.last_used_batches(), 1);
    assert_eq!(
        store.last_used(&id),
        Some(clock.now() - Duration::from_secs(1))
    );
    // What is left at shutdown is written.
    auth.verify(&key).await.unwrap();
    drop(auth);
    tracker.shutdown().await;
    assert_eq!(store.last_used_batches(), 2);
    assert_eq!(store.last_used(&id), Some(clock.now()));
}

const DAY: Duration = Duration::from_secs(86_400);

/// A key past the maximum age is refused (401, `KeyTooOld`) on the authenticator's clock,
/// from memory as from the store; one past the warning age is accepted and logged about at
/// most once an hour, without its secret.
#[tokio::test]
async fn old_keys_are_warned_about_then_refused() {
    let (captured, _guard) = common::events::Captured::install(tracing::Level::WARN);
    let (clock, format, store) = setup();
    let (key, record) = issue(&format, &store, &clock, NewKey::new("svc-old", "ci"));
    let cached = CachedKeyStore::new(store.clone()).clock(clock.clone());
    let auth = ApiKeyAuthenticator::new(format.clone(), cached)
        .clock(clock.clone())
        .warn_after_age(90 * DAY)
        .refuse_after_age(365 * DAY);

    clock.advance(90 * DAY - Duration::from_secs(1));
    auth.verify(&key).await.unwrap();
    assert_eq!(captured.take(), "", "younger than the warning age");

    clock.advance(Duration::from_secs(1));
    for _ in 0..10 {
        auth.verify(&key).await.expect("old but accepted");
    }
    let logged = captured.take();
    assert_eq!(logged.lines().count(), 1, "once, not per request: {logged}");
    assert!(logged.contains("WARN tower_api_guard::auth"), "{logged}");
    assert!(
        logged.contains(&format!("key_id={}", record.id)),
        "{logged}"
    );
    assert!(logged.contains("owner=svc-old"), "{logged}");
    assert!(logged.contains("age_days=90"), "{logged}");
    assert!(!logged.contains(key.expose()), "never the key");

    clock.advance(Duration::from_secs(3599));
    auth.verify(&key).await.unwrap();
    assert_eq!(captured.take(), "", "within the hour");
    clock.advance(Duration::from_secs(1));
    auth.verify(&key).await.unwrap();
    assert!(
        captured.take().contains("age_days=90"),
        "again after an hour"
    );

    // Another old key is warned about on its own.
    let (other, _) = issue_at(
        &format,
        &store,
        clock.now() - 100 * DAY,
        NewKey::new("svc-other", "n"),
    );
    auth.verify(&other).await.unwrap();
    assert!(captured.take().contains("owner=svc-other"));

    clock.set(record.created_at + 365 * DAY);
    let err = auth.verify(&key).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::InvalidToken);
    assert_eq!(err.code(), ReasonCode::KeyTooOld);
    assert_eq!(err.reason(), "API key older than the maximum age");
    assert!(!format!("{err:?}").contains(key.expose()));
    // Straight from the store as well.
    let uncached = ApiKeyAuthenticator::new(format.clone(), store.clone())
        .clock(clock.clone())
        .refuse_after_age(365 * DAY);
    assert_eq!(
        uncached.verify(&key).await.unwrap_err().code(),
        ReasonCode::KeyTooOld
    );
    // A revoked key is refused as revoked first; a new key is accepted.
    store.revoke_now(&record.id, record.created_at);
    assert_eq!(rejection(&uncached, &key).await, "API key revoked");
    let (young, _) = issue(&format, &store, &clock, NewKey::new("svc-old", "ci"));
    uncached.verify(&young).await.unwrap();
    assert!(!captured.take().contains("older than the warning age"));
}

/// No policy: no age checks, however old the key.
#[tokio::test]
async fn without_an_age_policy_age_does_not_matter() {
    let (clock, format, store) = setup();
    let (key, _) = issue(&format, &store, &clock, NewKey::new("o", "n"));
    let auth = ApiKeyAuthenticator::new(format, store).clock(clock.clone());
    clock.advance(10_000 * DAY);
    auth.verify(&key).await.unwrap();
    // A creation time ahead of the clock is age zero, not an error.
    let (clock, format, store) = setup();
    let (key, _) = issue_at(&format, &store, clock.now() + DAY, NewKey::new("o", "n"));
    let auth = ApiKeyAuthenticator::new(format, store)
        .clock(clock)
        .refuse_after_age(DAY);
    auth.verify(&key).await.unwrap();
}

/// A key made at `at` (not the clock's time) and kept in `store`.
fn issue_at(
    format: &KeyFormat,
    store: &MemoryKeyStore,
    at: SystemTime,
    new: NewKey,
) -> (Plaintext, ApiKeyRecord) {
    let (key, record) = format.generate_at(new, at).unwrap();
    store.insert(record.clone());
    (key, record)
}

/// What the API-key authenticator and its cache record (feature `metrics`).
#[cfg(feature = "metrics")]
mod metrics {
    use super::*;
    use common::metrics::Recorded;
    use tower_api_guard::metrics::{
        API_KEY_AGE, CACHE_ENTRIES, CACHE_REQUESTS, STORE_ERRORS, VERIFICATION_SECONDS,
    };

    const API_KEY: [(&str, &str); 1] = [("cache", "api_key")];

    #[test]
    fn one_miss_then_hits_are_counted_once_each_and_only_the_miss_is_timed() {
        let recorded = Recorded::new();
        let (clock, format, store) = setup();
        let (key, _) = issue(&format, &store, &clock, NewKey::new("o", "n"));
        let cached = CachedKeyStore::new(store.clone()).clock(clock.clone());
        let auth = ApiKeyAuthenticator::new(format.clone(), cached).clock(clock.clone());
        recorded.run(async {
            auth.verify(&key).await.unwrap();
            auth.verify(&key).await.unwrap();
            auth.verify(&key).await.unwrap();
        });
        let taken = recorded.take();
        let result = |r| [API_KEY[0], ("result", r)];
        assert_eq!(
            taken.counter(CACHE_REQUESTS, &result("miss")),
            1,
            "{taken:?}"
        );
        assert_eq!(
            taken.counter(CACHE_REQUESTS, &result("hit")),
            2,
            "{taken:?}"
        );
        assert_eq!(taken.gauge(CACHE_ENTRIES, &API_KEY), Some(1.0));
        let timed = taken.histogram(VERIFICATION_SECONDS, &[("method", "api_key")]);
        assert_eq!(timed.len(), 1, "only the store lookup is timed: {timed:?}");
        assert_eq!(store.lookups(), 1);

        // An unknown key: one miss, then hits from the negative cache; both caches counted.
        let (unknown, _) = format.generate(NewKey::new("x", "y")).unwrap();
        recorded.run(async {
            for _ in 0..3 {
                assert!(auth.verify(&unknown).await.is_err());
            }
        });
        let taken = recorded.take();
        assert_eq!(taken.counter(CACHE_REQUESTS, &result("miss")), 1);
        assert_eq!(taken.counter(CACHE_REQUESTS, &result("hit")), 2);
        assert_eq!(taken.gauge(CACHE_ENTRIES, &API_KEY), Some(2.0));
        assert_eq!(
            taken
                .histogram(VERIFICATION_SECONDS, &[("method", "api_key")])
                .len(),
            1
        );
    }

    #[test]
    fn a_store_failure_is_counted_under_auth_and_api_key() {
        let recorded = Recorded::new();
        let (_, format, _) = setup();
        let (key, _) = format.generate(NewKey::new("o", "n")).unwrap();
        let auth = ApiKeyAuthenticator::new(format, CachedKeyStore::new(Down));
        recorded.run(async {
            for _ in 0..2 {
                let err = auth.verify(&key).await.unwrap_err();
                assert_eq!(err.kind(), AuthErrorKind::Unavailable);
            }
        });
        let taken = recorded.take();
        assert_eq!(
            taken.counter(STORE_ERRORS, &[("layer", "auth"), ("store", "api_key")]),
            2
        );
        assert_eq!(taken.counter(STORE_ERRORS, &[]), 2);
        assert_eq!(
            taken.counter(CACHE_REQUESTS, &[API_KEY[0], ("result", "miss")]),
            2,
            "a failure is not cached"
        );
    }

    #[test]
    fn each_refusal_and_each_warned_request_is_counted() {
        let recorded = Recorded::new();
        let (clock, format, store) = setup();
        let (key, _) = issue(&format, &store, &clock, NewKey::new("o", "n"));
        let auth =
            ApiKeyAuthenticator::new(format, CachedKeyStore::new(store).clock(clock.clone()))
                .clock(clock.clone())
                .warn_after_age(30 * DAY)
                .refuse_after_age(60 * DAY);
        let action = |a| [("action", a)];
        recorded.run(async {
            auth.verify(&key).await.unwrap();
        });
        assert_eq!(recorded.take().counter(API_KEY_AGE, &[]), 0, "young");

        clock.advance(30 * DAY);
        recorded.run(async {
            for _ in 0..4 {
                auth.verify(&key).await.unwrap();
            }
        });
        let taken = recorded.take();
        assert_eq!(
            taken.counter(API_KEY_AGE, &action("warned")),
            4,
            "every request, though logged once"
        );
        assert_eq!(taken.counter(API_KEY_AGE, &action("refused")), 0);

        clock.advance(30 * DAY);
        recorded.run(async {
            for _ in 0..3 {
                let err = auth.verify(&key).await.unwrap_err();
                assert_eq!(err.code(), ReasonCode::KeyTooOld);
            }
        });
        let taken = recorded.take();
        assert_eq!(taken.counter(API_KEY_AGE, &action("refused")), 3);
        assert_eq!(taken.counter(API_KEY_AGE, &action("warned")), 0);
    }
}
