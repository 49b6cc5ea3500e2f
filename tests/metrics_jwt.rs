//! What the JWT verifier, its remote key sets and introspection record through the
//! `metrics` facade: key-set refreshes and gauges, unknown-`kid` refetches, discovery
//! failures, the verified-token and introspection caches, verification latency; and that
//! no label value ever comes from a token.
//!
//! Key sets and introspection answers come from in-memory clients (one test fetches over
//! loopback HTTP from a `TestIssuer`); time moves on a `ManualClock` only.
#![cfg(all(
    feature = "metrics",
    feature = "jwt",
    feature = "testing",
    feature = "introspection"
))]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tower::ServiceBuilder;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::introspection::{
    IntrospectionAuthenticator, IntrospectionClient, IntrospectionFuture, IntrospectionRequest,
    JwtOrOpaque,
};
use tower_api_guard::jwt::{
    Algorithm, FetchError, FetchFuture, FetchRequest, FetchResponse, JwksFetcher, JwtAuthenticator,
    RemoteJwks, RemoteJwksBuilder,
};
use tower_api_guard::metrics::{
    CACHE_ENTRIES, CACHE_REQUESTS, DECISIONS, DISCOVERY_FAILURES, JWKS_AGE_SECONDS, JWKS_KEYS,
    JWKS_LAST_SUCCESS, JWKS_REFRESHES, JWKS_STALE, JWKS_UNKNOWN_KID, VERIFICATION_SECONDS,
};
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{AuthErrorKind, ReasonCode};

use common::calls::{self, Bearer};
use common::jwt::{AUD, ISS, NOW};
use common::metrics::{Recorded, Taken};

/// Documents by URL, for [`MemFetcher`]: a body, or the reason of a failed fetch.
#[derive(Debug, Default)]
struct Docs {
    by_url: Mutex<HashMap<String, Result<String, &'static str>>>,
    fetches: AtomicUsize,
}

impl Docs {
    fn put(&self, url: &str, doc: Result<String, &'static str>) {
        self.by_url.lock().unwrap().insert(url.to_owned(), doc);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A key-set fetcher answering from [`Docs`] at once (404 for an unknown URL), with
/// `max-age=600`.
#[derive(Debug, Clone, Default)]
struct MemFetcher(Arc<Docs>);

impl JwksFetcher for MemFetcher {
    fn fetch(&self, request: FetchRequest) -> FetchFuture {
        self.0.fetches.fetch_add(1, Ordering::SeqCst);
        let doc = self.0.by_url.lock().unwrap().get(&request.url).cloned();
        Box::pin(async move {
            match doc {
                Some(Ok(body)) => Ok(FetchResponse::Modified {
                    body: Bytes::from(body),
                    etag: None,
                    max_age: Some(Duration::from_secs(600)),
                }),
                Some(Err(reason)) => Err(FetchError::new(reason)),
                None => Err(FetchError::new("HTTP status 404")),
            }
        })
    }
}

/// A configured URL with userinfo and a query string, and its label.
const JWKS_URL: &str = "https://svc:hunter2@keys.example/jwks?api_key=s3cret";
const JWKS_LABEL: &str = "https://keys.example/jwks";

fn setup() -> (Arc<ManualClock>, TestIssuer, MemFetcher) {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let issuer = TestIssuer::with_algorithms(ISS, &[Algorithm::ES256]).clock(clock.clone());
    let fetcher = MemFetcher::default();
    fetcher.0.put(JWKS_URL, Ok(issuer.jwks_json()));
    (clock, issuer, fetcher)
}

fn remote(
    builder: RemoteJwksBuilder,
    clock: &Arc<ManualClock>,
    fetcher: &MemFetcher,
) -> RemoteJwks {
    builder
        .fetcher(fetcher.clone())
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn jwt(keys: RemoteJwks, clock: &Arc<ManualClock>) -> JwtAuthenticator {
    JwtAuthenticator::builder(ISS, AUD)
        .keys(keys)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn token(issuer: &TestIssuer) -> String {
    issuer
        .token()
        .subject("alice")
        .audience(AUD)
        .expires_in(Duration::from_secs(3600))
        .mint()
}

/// The refreshes of the key set at [`JWKS_URL`] that ended with `result`.
fn refreshes(taken: &Taken, result: &str) -> u64 {
    taken.counter(JWKS_REFRESHES, &[("jwks", JWKS_LABEL), ("result", result)])
}

/// The gauge `name` of the key set at [`JWKS_URL`].
fn gauge(taken: &Taken, name: &str) -> Option<f64> {
    taken.gauge(name, &[("jwks", JWKS_LABEL)])
}

#[test]
fn key_set_refreshes_are_counted_and_its_gauges_follow_the_manual_clock() {
    let recorded = Recorded::new();
    let (clock, issuer, fetcher) = setup();
    let keys = remote(RemoteJwks::builder(JWKS_URL), &clock, &fetcher);

    recorded.run(keys.ready()).unwrap();
    let taken = recorded.take();
    assert_eq!(refreshes(&taken, "ok"), 1);
    assert_eq!(refreshes(&taken, "error"), 0);
    assert_eq!(gauge(&taken, JWKS_KEYS), Some(1.0));
    assert_eq!(gauge(&taken, JWKS_AGE_SECONDS), Some(0.0));
    assert_eq!(gauge(&taken, JWKS_LAST_SUCCESS), Some(NOW as f64));
    assert_eq!(gauge(&taken, JWKS_STALE), Some(0.0));
    // The label is the URL without its userinfo and query string.
    for name in [
        JWKS_REFRESHES,
        JWKS_KEYS,
        JWKS_AGE_SECONDS,
        JWKS_LAST_SUCCESS,
        JWKS_STALE,
    ] {
        assert_eq!(taken.label_values(name, "jwks"), [JWKS_LABEL], "{name}");
    }

    // Each explicit refresh is one attempt.
    clock.advance(Duration::from_secs(100));
    recorded.run(async {
        keys.refresh().await.unwrap();
        keys.refresh().await.unwrap();
    });
    let taken = recorded.take();
    assert_eq!(refreshes(&taken, "ok"), 2);
    assert_eq!(gauge(&taken, JWKS_LAST_SUCCESS), Some((NOW + 100) as f64));
    assert_eq!(gauge(&taken, JWKS_AGE_SECONDS), Some(0.0));

    // A failing fetch: counted as an error; the keys in use stay, not stale yet.
    fetcher.0.put(JWKS_URL, Err("HTTP status 500"));
    clock.advance(Duration::from_secs(10));
    assert!(recorded.run(keys.refresh()).is_err());
    let taken = recorded.take();
    assert_eq!(refreshes(&taken, "ok"), 0);
    assert_eq!(refreshes(&taken, "error"), 1);
    assert_eq!(gauge(&taken, JWKS_KEYS), Some(1.0));
    assert_eq!(gauge(&taken, JWKS_AGE_SECONDS), Some(10.0));
    assert_eq!(gauge(&taken, JWKS_LAST_SUCCESS), Some((NOW + 100) as f64));
    assert_eq!(gauge(&taken, JWKS_STALE), Some(0.0));

    // Past the TTL (600 s): a status read sets stale to 1 and the age, with no fetch.
    clock.advance(Duration::from_secs(591));
    let fetches = fetcher.0.fetches();
    let status = recorded.run(async { keys.status() });
    assert!(status.stale && status.usable);
    assert_eq!(fetcher.0.fetches(), fetches);
    let taken = recorded.take();
    assert_eq!(refreshes(&taken, "error"), 0);
    assert_eq!(gauge(&taken, JWKS_STALE), Some(1.0));
    assert_eq!(gauge(&taken, JWKS_AGE_SECONDS), Some(601.0));

    // Recovery: one ok, stale back to 0.
    fetcher.0.put(JWKS_URL, Ok(issuer.jwks_json()));
    recorded.run(keys.refresh()).unwrap();
    let taken = recorded.take();
    assert_eq!(refreshes(&taken, "ok"), 1);
    assert_eq!(gauge(&taken, JWKS_STALE), Some(0.0));
    assert_eq!(gauge(&taken, JWKS_AGE_SECONDS), Some(0.0));
    assert_eq!(gauge(&taken, JWKS_LAST_SUCCESS), Some((NOW + 701) as f64));
}

#[test]
fn a_first_fetch_that_fails_counts_one_error_and_holds_no_key() {
    let recorded = Recorded::new();
    let (clock, _issuer, fetcher) = setup();
    let keys = remote(
        RemoteJwks::builder("https://keys.example/missing"),
        &clock,
        &fetcher,
    );
    assert!(recorded.run(keys.ready()).is_err());
    let taken = recorded.take();
    let labels = [("jwks", "https://keys.example/missing")];
    assert_eq!(
        taken.counter(JWKS_REFRESHES, &[labels[0], ("result", "error")]),
        1
    );
    assert_eq!(taken.counter(JWKS_REFRESHES, &[("result", "ok")]), 0);
    assert_eq!(taken.gauge(JWKS_KEYS, &labels), Some(0.0));
    assert_eq!(taken.gauge(JWKS_STALE, &labels), Some(0.0));
    // Never fetched: no age, no last success.
    assert_eq!(taken.gauge(JWKS_AGE_SECONDS, &labels), None);
    assert_eq!(taken.gauge(JWKS_LAST_SUCCESS, &labels), None);
}

#[test]
fn unknown_kids_count_one_refetch_then_the_cooldown() {
    let recorded = Recorded::new();
    let (clock, issuer, fetcher) = setup();
    let keys = remote(RemoteJwks::builder(JWKS_URL), &clock, &fetcher);
    let jwt = jwt(keys, &clock);

    // Lazy mode: the first token fetches the set; that first fetch is no refetch.
    recorded.run(jwt.verify(&token(&issuer))).unwrap();
    let taken = recorded.take();
    assert_eq!(taken.counter(JWKS_UNKNOWN_KID, &[]), 0);
    assert_eq!(refreshes(&taken, "ok"), 1);

    let unknown = |kid: &str| {
        issuer
            .token()
            .audience(AUD)
            .header("kid", kid.into())
            .mint()
    };
    let rejected = |token: String| {
        let err = recorded.run(jwt.verify(&token)).unwrap_err();
        assert_eq!(err.code(), ReasonCode::UnknownKid);
    };
    // The same unknown kid twice within the cooldown: one refetch, then skipped.
    rejected(unknown("next-key"));
    rejected(unknown("next-key"));
    let taken = recorded.take();
    assert_eq!(taken.counter(JWKS_UNKNOWN_KID, &[("action", "refetch")]), 1);
    assert_eq!(
        taken.counter(JWKS_UNKNOWN_KID, &[("action", "cooldown")]),
        1
    );
    assert_eq!(refreshes(&taken, "ok"), 1, "the refetch is a refresh");
    // A token naming a key it was not checked against is not timed.
    assert!(
        taken
            .histogram(VERIFICATION_SECONDS, &[("method", "jwt")])
            .is_empty()
    );

    // Another unknown kid within the cooldown: skipped too.
    rejected(unknown("other-key"));
    let taken = recorded.take();
    assert_eq!(taken.counter(JWKS_UNKNOWN_KID, &[("action", "refetch")]), 0);
    assert_eq!(
        taken.counter(JWKS_UNKNOWN_KID, &[("action", "cooldown")]),
        1
    );
    assert_eq!(refreshes(&taken, "ok"), 0);

    // After the cooldown (30 s): a refetch again.
    clock.advance(Duration::from_secs(31));
    rejected(unknown("next-key"));
    let taken = recorded.take();
    assert_eq!(taken.counter(JWKS_UNKNOWN_KID, &[("action", "refetch")]), 1);
    assert_eq!(
        taken.counter(JWKS_UNKNOWN_KID, &[("action", "cooldown")]),
        0
    );
    assert_eq!(
        taken.label_values(JWKS_UNKNOWN_KID, "action"),
        ["cooldown", "refetch"]
    );
    assert!(taken.label_values(JWKS_UNKNOWN_KID, "kid").is_empty());
}

#[test]
fn discovery_failures_are_counted_and_a_discovered_set_is_labelled_by_its_issuer() {
    const ISSUER: &str = "https://id.example/realms/main";
    const OIDC: &str = "https://id.example/realms/main/.well-known/openid-configuration";
    const RFC8414: &str = "https://id.example/.well-known/oauth-authorization-server/realms/main";
    const KEYS: &str = "https://id.example/realms/main/certs";
    let recorded = Recorded::new();
    let (clock, issuer, fetcher) = setup();
    let keys = remote(RemoteJwks::discover(ISSUER), &clock, &fetcher);
    let by_issuer = [("jwks", ISSUER)];

    // Neither document exists: one discovery failure (not one per URL tried).
    assert!(recorded.run(keys.ready()).is_err());
    let taken = recorded.take();
    assert_eq!(taken.counter(DISCOVERY_FAILURES, &[]), 1);
    assert_eq!(
        taken.counter(JWKS_REFRESHES, &[by_issuer[0], ("result", "error")]),
        1
    );

    // A document naming another issuer is refused: another failure.
    let doc = |iss: &str| serde_json::json!({ "issuer": iss, "jwks_uri": KEYS }).to_string();
    fetcher.0.put(OIDC, Ok(doc("https://evil.example")));
    assert!(recorded.run(keys.refresh()).is_err());
    assert_eq!(recorded.take().counter(DISCOVERY_FAILURES, &[]), 1);

    // The OIDC document missing, RFC 8414's right: found through the fallback, no failure.
    fetcher.0.put(OIDC, Err("HTTP status 404"));
    fetcher.0.put(RFC8414, Ok(doc(ISSUER)));
    fetcher.0.put(KEYS, Ok(issuer.jwks_json()));
    recorded.run(keys.refresh()).unwrap();
    let taken = recorded.take();
    assert_eq!(taken.counter(DISCOVERY_FAILURES, &[]), 0);
    assert_eq!(
        taken.counter(JWKS_REFRESHES, &[by_issuer[0], ("result", "ok")]),
        1
    );
    assert_eq!(taken.gauge(JWKS_KEYS, &by_issuer), Some(1.0));
    // One series per key set: the issuer's URL, before and after discovery.
    assert_eq!(taken.label_values(JWKS_REFRESHES, "jwks"), [ISSUER]);
    assert_eq!(taken.label_values(JWKS_KEYS, "jwks"), [ISSUER]);
}

#[cfg(feature = "reqwest")]
#[test]
fn refreshes_over_http_are_counted_exactly() {
    use tower_api_guard::jwt::ReqwestFetcher;
    let recorded = Recorded::new();
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let issuer = TestIssuer::with_algorithms(ISS, &[Algorithm::ES256]).clock(clock.clone());
    recorded.run(async {
        let served = issuer.serve().await.unwrap();
        let build = |url: String| {
            RemoteJwks::builder(url)
                .fetcher(ReqwestFetcher::new().unwrap())
                .clock(clock.clone())
                .build()
                .unwrap()
        };
        let keys = build(served.jwks_url());
        keys.ready().await.unwrap();
        let jwt = jwt(keys.clone(), &clock);
        for _ in 0..5 {
            jwt.verify(&token(&issuer)).await.unwrap();
        }
        keys.refresh().await.unwrap();
        let missing = build(format!("{}/missing", served.base_url()));
        assert!(missing.ready().await.is_err());
        assert_eq!(served.requests(), 3);

        let taken = recorded.take();
        let label = served.jwks_url();
        let label = [("jwks", label.as_str())];
        assert_eq!(
            taken.counter(JWKS_REFRESHES, &[label[0], ("result", "ok")]),
            2
        );
        assert_eq!(taken.counter(JWKS_REFRESHES, &[("result", "ok")]), 2);
        assert_eq!(taken.counter(JWKS_REFRESHES, &[("result", "error")]), 1);
        assert_eq!(taken.gauge(JWKS_KEYS, &label), Some(1.0));
    });
}

#[test]
fn the_token_cache_counts_one_miss_then_hits_and_times_one_verification() {
    let recorded = Recorded::new();
    let (_clock, issuer, jwt) = common::jwt::clocked_issuer_and_jwt();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt.clone()))
        .service_fn(calls::ok::<()>);
    let token = token(&issuer);
    let status = |token: &str| {
        let svc = svc.clone();
        let req = Request::get("/").bearer(token).body(()).unwrap();
        recorded.run(async move { calls::call(&svc, req).await.status() })
    };

    // Through the layer: the hot path.
    for _ in 0..3 {
        assert_eq!(status(&token), StatusCode::OK);
    }
    let taken = recorded.take();
    let lookups = |result| taken.counter(CACHE_REQUESTS, &[("cache", "token"), ("result", result)]);
    assert_eq!(lookups("miss"), 1);
    assert_eq!(lookups("hit"), 2);
    assert_eq!(
        taken
            .histogram(VERIFICATION_SECONDS, &[("method", "jwt")])
            .len(),
        1
    );
    assert_eq!(taken.gauge(CACHE_ENTRIES, &[("cache", "token")]), Some(1.0));
    assert_eq!(taken.counter(DECISIONS, &[("outcome", "allowed")]), 3);

    // Outside a layer: the same.
    let other = issuer
        .token()
        .subject("bob")
        .audience(AUD)
        .expires_in(Duration::from_secs(3600))
        .mint();
    for _ in 0..3 {
        recorded.run(jwt.verify(&other)).unwrap();
    }
    let taken = recorded.take();
    let lookups = |result| taken.counter(CACHE_REQUESTS, &[("cache", "token"), ("result", result)]);
    assert_eq!((lookups("miss"), lookups("hit")), (1, 2));
    assert_eq!(taken.histogram(VERIFICATION_SECONDS, &[]).len(), 1);
    assert_eq!(taken.gauge(CACHE_ENTRIES, &[("cache", "token")]), Some(2.0));

    // A failed verification is timed too (and is a miss every time).
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for _ in 0..2 {
        assert_eq!(status(&forged), StatusCode::UNAUTHORIZED);
    }
    let taken = recorded.take();
    let lookups = |result| taken.counter(CACHE_REQUESTS, &[("cache", "token"), ("result", result)]);
    assert_eq!((lookups("miss"), lookups("hit")), (2, 0));
    assert_eq!(taken.histogram(VERIFICATION_SECONDS, &[]).len(), 2);
}

#[test]
fn without_the_token_cache_nothing_is_counted_as_a_lookup() {
    let recorded = Recorded::new();
    let (clock, issuer) = common::jwt::clocked_issuer();
    let jwt = common::jwt::trusting(&issuer, AUD)
        .clock(clock)
        .token_cache(0)
        .build()
        .unwrap();
    let token = token(&issuer);
    for _ in 0..3 {
        recorded.run(jwt.verify(&token)).unwrap();
    }
    let taken = recorded.take();
    assert_eq!(taken.counter(CACHE_REQUESTS, &[]), 0);
    assert_eq!(taken.gauge(CACHE_ENTRIES, &[("cache", "token")]), None);
    assert_eq!(taken.histogram(VERIFICATION_SECONDS, &[]).len(), 3);
}

/// An introspection endpoint in memory: `good` is active, `down` fails, anything else is
/// inactive. Counts its calls.
#[derive(Debug, Default, Clone)]
struct MemIntrospection(Arc<AtomicUsize>);

impl IntrospectionClient for MemIntrospection {
    fn introspect(&self, request: IntrospectionRequest) -> IntrospectionFuture {
        self.0.fetch_add(1, Ordering::SeqCst);
        let token = request
            .form
            .strip_prefix("token=")
            .and_then(|rest| rest.split('&').next())
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            let body = match token.as_str() {
                "good" => serde_json::json!({
                    "active": true, "sub": "alice", "iss": ISS, "aud": AUD, "exp": NOW + 3600,
                }),
                "down" => return Err(FetchError::new("HTTP status 503")),
                _ => serde_json::json!({ "active": false }),
            };
            Ok(Bytes::from(body.to_string()))
        })
    }

    fn get(&self, _url: String, _timeout: Duration) -> IntrospectionFuture {
        Box::pin(async { Err(FetchError::new("HTTP status 404")) })
    }
}

fn opaque(clock: &Arc<ManualClock>, client: &MemIntrospection) -> IntrospectionAuthenticator {
    IntrospectionAuthenticator::builder("https://id.example/introspect?client=x")
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .client(client.clone())
        .build()
        .unwrap()
}

#[test]
fn introspection_counts_its_cache_and_times_each_call() {
    let recorded = Recorded::new();
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let client = MemIntrospection::default();
    let opaque = opaque(&clock, &client);

    for _ in 0..3 {
        recorded.run(opaque.verify("good")).unwrap();
    }
    assert_eq!(client.0.load(Ordering::SeqCst), 1);
    let taken = recorded.take();
    let lookups = |result| {
        taken.counter(
            CACHE_REQUESTS,
            &[("cache", "introspection"), ("result", result)],
        )
    };
    assert_eq!((lookups("miss"), lookups("hit")), (1, 2));
    assert_eq!(
        taken
            .histogram(VERIFICATION_SECONDS, &[("method", "introspection")])
            .len(),
        1
    );
    assert_eq!(
        taken.gauge(CACHE_ENTRIES, &[("cache", "introspection")]),
        Some(1.0)
    );
    assert_eq!(taken.counter(CACHE_REQUESTS, &[("cache", "token")]), 0);

    // A failing endpoint: a miss and a timed call each time (failures are not cached).
    for _ in 0..2 {
        let err = recorded.run(opaque.verify("down")).unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::Unavailable);
    }
    let taken = recorded.take();
    let lookups = |result| {
        taken.counter(
            CACHE_REQUESTS,
            &[("cache", "introspection"), ("result", result)],
        )
    };
    assert_eq!((lookups("miss"), lookups("hit")), (2, 0));
    assert_eq!(taken.histogram(VERIFICATION_SECONDS, &[]).len(), 2);
}

/// Every label a metric may carry, and the values it may take here.
fn allowed_values(label: &str) -> Option<Vec<String>> {
    let fixed: &[&str] = match label {
        "reason" => {
            let mut reasons: Vec<String> = ReasonCode::ALL
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect();
            reasons.push("none".into());
            return Some(reasons);
        }
        "layer" => &["auth", "brute_force", "authz", "rate_limit"],
        "outcome" => &["allowed", "rejected", "limited"],
        "cache" => &["token", "api_key", "introspection"],
        "result" => &["hit", "miss", "ok", "error"],
        "method" => &["jwt", "api_key", "introspection"],
        "action" => &["refetch", "cooldown", "warned", "refused"],
        "jwks" => &[JWKS_LABEL],
        _ => return None,
    };
    Some(fixed.iter().map(|v| (*v).to_owned()).collect())
}

/// A bearer token an attacker might send: random text, random bytes, JWS-shaped random
/// segments, or a validly signed token naming a random `kid` or carrying random claims.
fn hostile_token(issuer: &TestIssuer) -> impl Strategy<Value = Vec<u8>> + '_ {
    let b64 = "[A-Za-z0-9_-]{0,40}";
    prop_oneof![
        any::<String>().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
        (b64, b64, b64).prop_map(|(h, p, s)| format!("{h}.{p}.{s}").into_bytes()),
        ".{0,24}".prop_map(move |kid| issuer
            .token()
            .audience(AUD)
            .header("kid", kid.into())
            .mint()
            .into_bytes()),
        (".{0,24}", ".{0,24}").prop_map(move |(sub, aud)| issuer
            .token()
            .subject(sub)
            .audience(aud)
            .mint()
            .into_bytes()),
        "[a-z]{0,12}".prop_map(String::into_bytes),
        Just(b"good".to_vec()),
        Just(b"down".to_vec()),
    ]
}

#[test]
fn random_tokens_only_ever_produce_label_values_from_the_fixed_sets() {
    let recorded = Recorded::new();
    let (clock, issuer, fetcher) = setup();
    let keys = remote(RemoteJwks::builder(JWKS_URL), &clock, &fetcher);
    let client = MemIntrospection::default();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(JwtOrOpaque::new(
            jwt(keys, &clock),
            opaque(&clock, &client),
        )))
        .service_fn(calls::ok::<()>);

    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let sent = AtomicUsize::new(0);
    runner
        .run(&hostile_token(&issuer), |token| {
            let Ok(request) = Request::get("/")
                .header("authorization", [b"Bearer ".as_slice(), &token].concat())
                .body(())
            else {
                return Ok(());
            };
            sent.fetch_add(1, Ordering::SeqCst);
            let svc = svc.clone();
            recorded.run(async move { calls::call(&svc, request).await });
            // Now and then past the cooldown, so that unknown kids refetch again.
            clock.advance(Duration::from_secs(7));
            Ok(())
        })
        .unwrap();

    let taken = recorded.take();
    let sent = sent.load(Ordering::SeqCst) as u64;
    assert!(sent > 100, "only {sent} requests could be built");
    assert_eq!(
        taken.counter(DECISIONS, &[]),
        sent,
        "one decision per request"
    );
    for metric in &taken.0 {
        for (label, value) in &metric.labels {
            let allowed = allowed_values(label)
                .unwrap_or_else(|| panic!("{}: unexpected label {label}", metric.name));
            assert!(
                allowed.contains(value),
                "{}: {label}={value:?} is not in the fixed set",
                metric.name
            );
        }
    }
    // The label helper agrees, metric by metric.
    for (name, label) in [
        (DECISIONS, "reason"),
        (DECISIONS, "layer"),
        (DECISIONS, "outcome"),
        (CACHE_REQUESTS, "cache"),
        (CACHE_REQUESTS, "result"),
        (VERIFICATION_SECONDS, "method"),
        (JWKS_REFRESHES, "result"),
        (JWKS_REFRESHES, "jwks"),
        (JWKS_UNKNOWN_KID, "action"),
    ] {
        let allowed = allowed_values(label).unwrap();
        for value in taken.label_values(name, label) {
            assert!(allowed.contains(&value), "{name}: {label}={value:?}");
        }
    }
    // Both verifiers and the key set were exercised.
    assert!(taken.counter(CACHE_REQUESTS, &[("cache", "token")]) > 0);
    assert!(taken.counter(CACHE_REQUESTS, &[("cache", "introspection")]) > 0);
    assert!(taken.counter(JWKS_REFRESHES, &[]) > 0);
}
