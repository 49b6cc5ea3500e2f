//! `RemoteJwks` against a real HTTP server that each test runs on 127.0.0.1:0 and controls.
//! Time-dependent behaviour goes through `ManualClock`.
#![cfg(all(feature = "jwt", feature = "testing", feature = "reqwest"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_api_guard::AuthErrorKind;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::jwt::{
    Algorithm, JwtAuthenticator, KeySource, RemoteJwks, RemoteJwksBuilder, ReqwestFetcher,
};
use tower_api_guard::testing::TestIssuer;

const ISS: &str = "https://issuer.example";
const START: u64 = 1_800_000_000;

#[derive(Clone)]
enum Mode {
    Serve {
        jwks: String,
        max_age: Option<u64>,
        etag: Option<&'static str>,
    },
    Status(u16),
    Garbage,
    NotJson(String),
    Huge,
    Slow(Duration),
    RedirectTo(String),
}

struct Ctl {
    mode: Mutex<Mode>,
    jwks_hits: AtomicUsize,
    not_modified: AtomicUsize,
    discovery: Mutex<Option<(String, String)>>, // (issuer, jwks_uri) for OIDC
    rfc8414: Mutex<Option<(String, String)>>,
}

struct Server {
    ctl: Arc<Ctl>,
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(mode: Mode) -> Server {
        let ctl = Arc::new(Ctl {
            mode: Mutex::new(mode),
            jwks_hits: AtomicUsize::new(0),
            not_modified: AtomicUsize::new(0),
            discovery: Mutex::new(None),
            rfc8414: Mutex::new(None),
        });
        let app = Router::new()
            .route("/jwks", get(jwks))
            .route(
                "/moved",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/jwks")]) }),
            )
            .route("/.well-known/openid-configuration", get(oidc))
            .route("/.well-known/oauth-authorization-server", get(rfc8414))
            .with_state(ctl.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { ctl, base, task }
    }

    fn url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    fn set(&self, mode: Mode) {
        *self.ctl.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.ctl.jwks_hits.load(Ordering::SeqCst)
    }
}

async fn jwks(State(ctl): State<Arc<Ctl>>, headers: HeaderMap) -> Response {
    ctl.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let mode = ctl.mode.lock().unwrap().clone();
    match mode {
        Mode::Serve {
            jwks,
            max_age,
            etag,
        } => {
            if let Some(tag) = etag
                && headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == tag)
            {
                ctl.not_modified.fetch_add(1, Ordering::SeqCst);
                return StatusCode::NOT_MODIFIED.into_response();
            }
            let mut res = ([(header::CONTENT_TYPE, "application/json")], jwks).into_response();
            if let Some(age) = max_age {
                res.headers_mut().insert(
                    header::CACHE_CONTROL,
                    format!("max-age={age}").parse().unwrap(),
                );
            }
            if let Some(tag) = etag {
                res.headers_mut().insert(header::ETAG, tag.parse().unwrap());
            }
            res
        }
        Mode::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Mode::Garbage => {
            ([(header::CONTENT_TYPE, "application/json")], "{\"keys\": [").into_response()
        }
        Mode::NotJson(body) => ([(header::CONTENT_TYPE, "text/html")], body).into_response(),
        Mode::Huge => (
            [(header::CONTENT_TYPE, "application/json")],
            format!(
                "{{\"keys\":[],\"pad\":\"{}\"}}",
                "a".repeat(2 * 1024 * 1024)
            ),
        )
            .into_response(),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        Mode::RedirectTo(url) => (StatusCode::FOUND, [(header::LOCATION, url)]).into_response(),
    }
}

fn discovery_doc(entry: &Mutex<Option<(String, String)>>) -> Response {
    match entry.lock().unwrap().clone() {
        Some((issuer, jwks_uri)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "issuer": issuer, "jwks_uri": jwks_uri }).to_string(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn oidc(State(ctl): State<Arc<Ctl>>) -> Response {
    discovery_doc(&ctl.discovery)
}

async fn rfc8414(State(ctl): State<Arc<Ctl>>) -> Response {
    discovery_doc(&ctl.rfc8414)
}

fn serve(issuer: &TestIssuer, max_age: Option<u64>) -> Mode {
    Mode::Serve {
        jwks: issuer.jwks_json(),
        max_age,
        etag: None,
    }
}

fn remote(builder: RemoteJwksBuilder, clock: &Arc<ManualClock>) -> RemoteJwks {
    builder
        .fetcher(ReqwestFetcher::new().unwrap())
        .clock(clock.clone())
        .fetch_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn jwt(keys: RemoteJwks, clock: &Arc<ManualClock>) -> JwtAuthenticator {
    JwtAuthenticator::builder(ISS, "api")
        .keys(keys)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn setup() -> (Arc<ManualClock>, TestIssuer) {
    let clock = Arc::new(ManualClock::at_unix(START));
    let issuer = TestIssuer::with_algorithms(ISS, &[Algorithm::RS256]).clock(clock.clone());
    (clock, issuer)
}

fn token(issuer: &TestIssuer) -> String {
    issuer
        .token()
        .audience("api")
        .expires_in(Duration::from_secs(7 * 24 * 3600))
        .mint()
}

/// Wait (bounded) until the server has answered `n` key-set requests: background refreshes
/// run on the runtime, not in the test's own task.
async fn wait_for_hits(server: &Server, n: usize) {
    for _ in 0..500 {
        if server.hits() >= n {
            // Let the refresh task store its result.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} key-set fetches, saw {}", server.hits());
}

#[tokio::test]
async fn fetches_verifies_and_reports_status() {
    let (clock, issuer) = setup();
    let server = Server::start(serve(&issuer, Some(300))).await;
    let keys = remote(RemoteJwks::builder(server.url()), &clock);
    assert!(!keys.status().usable);
    keys.ready().await.unwrap();
    let status = keys.status();
    assert!(status.usable && !status.stale);
    assert_eq!(status.keys, 1);
    let jwt = jwt(keys.clone(), &clock);
    for _ in 0..5 {
        assert!(jwt.verify(&token(&issuer)).await.is_ok());
    }
    assert_eq!(server.hits(), 1, "verifications read the cached snapshot");
}

#[tokio::test]
async fn lazy_mode_fetches_on_first_request() {
    let (clock, issuer) = setup();
    let server = Server::start(serve(&issuer, None)).await;
    let jwt = jwt(remote(RemoteJwks::builder(server.url()), &clock), &clock);
    assert!(jwt.verify(&token(&issuer)).await.is_ok());
    assert!(
        jwt.verify(&issuer.token().audience("api").without_header("kid").mint())
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn ttl_is_clamped_and_refresh_starts_at_80_percent_in_the_background() {
    let (clock, issuer) = setup();
    // max-age=5 is clamped up to the 60 s minimum: refresh at 48 s.
    let server = Server::start(serve(&issuer, Some(5))).await;
    let keys = remote(RemoteJwks::builder(server.url()), &clock);
    keys.ready().await.unwrap();
    clock.advance(Duration::from_secs(47));
    keys.current().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.hits(), 1, "no refresh before 80 % of the TTL");
    clock.advance(Duration::from_secs(2));
    // The request that notices is served from the snapshot at once.
    assert_eq!(keys.current().unwrap().len(), 1);
    wait_for_hits(&server, 2).await;
}

#[tokio::test]
async fn etag_gives_304_and_keeps_keys() {
    let (clock, issuer) = setup();
    let server = Server::start(Mode::Serve {
        jwks: issuer.jwks_json(),
        max_age: Some(600),
        etag: Some("\"v1\""),
    })
    .await;
    let keys = remote(RemoteJwks::builder(server.url()), &clock);
    keys.ready().await.unwrap();
    keys.refresh().await.unwrap();
    assert_eq!(server.ctl.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(keys.status().keys, 1);
    assert!(jwt(keys, &clock).verify(&token(&issuer)).await.is_ok());
}

#[tokio::test]
async fn rotation_removes_old_keys_at_the_next_refresh() {
    let (clock, old) = setup();
    let new = TestIssuer::with_algorithms(ISS, &[Algorithm::ES256]).clock(clock.clone());
    let server = Server::start(serve(&old, Some(600))).await;
    let keys = remote(RemoteJwks::builder(server.url()), &clock);
    let jwt = jwt(keys.clone(), &clock);
    keys.ready().await.unwrap();
    let old_token = token(&old);
    assert!(jwt.verify(&old_token).await.is_ok());
    server.set(serve(&new, Some(600)));
    clock.advance(Duration::from_secs(481));
    keys.current().unwrap();
    wait_for_hits(&server, 2).await;
    let err = jwt.verify(&old_token).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::InvalidToken);
    assert!(jwt.verify(&token(&new)).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_cooldown_and_fails_fast() {
    let (clock, a) = setup();
    let b = TestIssuer::with_algorithms(ISS, &[Algorithm::ES256]).clock(clock.clone());
    let server = Server::start(serve(&a, Some(600))).await;
    let keys = remote(RemoteJwks::builder(server.url()), &clock);
    let jwt = jwt(keys.clone(), &clock);
    keys.ready().await.unwrap();

    // B's key is not published yet: one refetch, then 401.
    assert_eq!(
        jwt.verify(&token(&b)).await.unwrap_err().reason(),
        "unknown kid"
    );
    assert_eq!(server.hits(), 2);
    // Published now, but within the cooldown: fail fast, no fetch.
    let both = format!(
        "{{\"keys\":[{},{}]}}",
        &a.jwks_json()[9..a.jwks_json().len() - 2],
        &b.jwks_json()[9..b.jwks_json().len() - 2]
    );
    server.set(Mode::Serve {
        jwks: both,
        max_age: Some(600),
        etag: None,
    });
    assert!(jwt.verify(&token(&b)).await.is_err());
    assert_eq!(server.hits(), 2);
    // Valid tokens keep passing meanwhile.
    assert!(jwt.verify(&token(&a)).await.is_ok());

    // 10,000 concurrent requests with random unknown kids: no fetch during the cooldown.
    // Every tenth request carries a valid token, which must keep passing.
    let valid = token(&a);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let jwt = jwt.clone();
        if i % 10 == 0 {
            let t = valid.clone();
            tasks.spawn(async move { jwt.verify(&t).await.is_ok() });
        } else {
            let t = b
                .token()
                .audience("api")
                .header("kid", format!("random-{i}").into())
                .mint();
            tasks.spawn(async move { jwt.verify(&t).await.is_err() });
        }
    }
    while let Some(as_expected) = tasks.join_next().await {
        assert!(as_expected.unwrap());
    }
    assert_eq!(server.hits(), 2);
    assert!(jwt.key_status().usable);

    // After the cooldown, one refetch finds B's key.
    clock.advance(Duration::from_secs(31));
    assert!(jwt.verify(&token(&b)).await.is_ok());
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let (clock, a) = setup();
    let server = Server::start(serve(&a, Some(600))).await;
    let keys = remote(RemoteJwks::builder(server.url()), &clock);
    let jwt = jwt(keys.clone(), &clock);
    keys.ready().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1_000 {
        let jwt = jwt.clone();
        let t = a
            .token()
            .audience("api")
            .header("kid", format!("new-{i}").into())
            .mint();
        tasks.spawn(async move { jwt.verify(&t).await.is_err() });
    }
    while let Some(rejected) = tasks.join_next().await {
        assert!(rejected.unwrap());
    }
    assert_eq!(server.hits(), 2, "one initial fetch and one shared refetch");
}

#[tokio::test]
async fn outage_keeps_last_good_keys_up_to_max_stale_then_503_and_recovers() {
    let (clock, issuer) = setup();
    let server = Server::start(serve(&issuer, Some(600))).await;
    let keys = remote(
        RemoteJwks::builder(server.url()).max_stale(Duration::from_secs(3600)),
        &clock,
    );
    let jwt = jwt(keys.clone(), &clock);
    keys.ready().await.unwrap();
    server.set(Mode::Status(500));
    assert!(keys.refresh().await.is_err());
    // Past the TTL: stale, still served.
    clock.advance(Duration::from_secs(601));
    assert!(jwt.verify(&token(&issuer)).await.is_ok());
    let status = keys.status();
    assert!(status.stale && status.usable);
    assert_eq!(status.last_error.as_deref(), Some("HTTP status 500"));
    // Past TTL + max-stale: 503 with Retry-After.
    clock.advance(Duration::from_secs(3600));
    let err = jwt.verify(&token(&issuer)).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);
    assert!(err.retry_after().unwrap() >= Duration::from_secs(1));
    // Recovery.
    server.set(serve(&issuer, Some(600)));
    keys.refresh().await.unwrap();
    assert!(jwt.verify(&token(&issuer)).await.is_ok());
    assert!(keys.status().last_error.is_none());
}

#[tokio::test]
async fn bad_documents_never_replace_a_good_set() {
    let (clock, issuer) = setup();
    let server = Server::start(serve(&issuer, Some(600))).await;
    let other = Server::start(serve(&issuer, Some(600))).await;
    let keys = remote(
        RemoteJwks::builder(server.url()).max_body(64 * 1024),
        &clock,
    );
    keys.ready().await.unwrap();
    for (mode, reason) in [
        (Mode::Status(503), "HTTP status 503"),
        (Mode::Garbage, "key set document does not parse"),
        (Mode::NotJson("<html>".into()), "content type is not JSON"),
        (Mode::Huge, "body larger than the cap"),
        (
            Mode::Serve {
                jwks: "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}".into(),
                max_age: None,
                etag: None,
            },
            "key set holds no usable key",
        ),
        (Mode::RedirectTo(other.url()), "redirect refused"),
        (Mode::Slow(Duration::from_secs(3)), "timeout"),
    ] {
        server.set(mode);
        let err = keys.refresh().await.unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::Unavailable);
        assert_eq!(keys.status().last_error.as_deref(), Some(reason));
        assert_eq!(keys.status().keys, 1, "{reason}: the good set stays");
        assert!(
            jwt(keys.clone(), &clock)
                .verify(&token(&issuer))
                .await
                .is_ok()
        );
    }
    assert_eq!(other.hits(), 0, "a cross-origin redirect is never followed");
}

#[tokio::test]
async fn same_origin_redirect_is_followed_and_404_is_a_failure() {
    let (clock, issuer) = setup();
    let server = Server::start(serve(&issuer, Some(600))).await;
    let keys = remote(
        RemoteJwks::builder(format!("{}/moved", server.base)),
        &clock,
    );
    keys.ready().await.unwrap();
    assert_eq!(server.hits(), 1);
    let missing = remote(
        RemoteJwks::builder(format!("{}/missing", server.base)),
        &clock,
    );
    assert!(missing.ready().await.is_err());
    assert_eq!(
        missing.status().last_error.as_deref(),
        Some("HTTP status 404")
    );
    assert_eq!(
        missing.current().unwrap_err().kind(),
        AuthErrorKind::Unavailable
    );
}

#[tokio::test]
async fn first_fetch_failure_is_503() {
    let (clock, issuer) = setup();
    let server = Server::start(Mode::Status(500)).await;
    let jwt = jwt(remote(RemoteJwks::builder(server.url()), &clock), &clock);
    let err = jwt.verify(&token(&issuer)).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);
    // Backoff: the next request does not hammer the server.
    assert_eq!(
        jwt.verify(&token(&issuer)).await.unwrap_err().kind(),
        AuthErrorKind::Unavailable
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn discovery_oidc_and_rfc8414_and_issuer_mismatch() {
    let (clock, issuer) = setup();
    let server = Server::start(serve(&issuer, Some(600))).await;

    // OIDC discovery: the document's issuer must equal the configured one exactly.
    *server.ctl.discovery.lock().unwrap() = Some((server.base.clone(), server.url()));
    let keys = remote(RemoteJwks::discover(server.base.clone()), &clock);
    keys.ready().await.unwrap();
    assert_eq!(keys.status().keys, 1);

    let wrong = remote(RemoteJwks::discover(format!("{}/", server.base)), &clock);
    assert!(wrong.ready().await.is_err());
    assert_eq!(
        wrong.status().last_error.as_deref(),
        Some("discovery document names another issuer")
    );

    // RFC 8414 fallback when the OIDC document is missing.
    *server.ctl.discovery.lock().unwrap() = None;
    *server.ctl.rfc8414.lock().unwrap() = Some((server.base.clone(), server.url()));
    let keys = remote(RemoteJwks::discover(server.base.clone()), &clock);
    keys.ready().await.unwrap();
    assert_eq!(keys.status().keys, 1);
}

#[test]
fn configuration_errors() {
    assert!(RemoteJwks::builder("ftp://x").build().is_err());
    assert!(RemoteJwks::builder("").build().is_err());
    assert!(
        RemoteJwks::builder("https://x/jwks")
            .ttl_bounds(Duration::from_secs(10), Duration::from_secs(5))
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn several_issuers_route_by_iss_and_unknown_issuers_cost_no_fetch() {
    use tower_api_guard::jwt::JwtIssuers;
    let clock = Arc::new(ManualClock::at_unix(START));
    let staff = TestIssuer::with_algorithms("https://staff.example", &[Algorithm::RS256])
        .clock(clock.clone());
    let partners = TestIssuer::with_algorithms("https://partners.example", &[Algorithm::ES256])
        .clock(clock.clone());
    let server = Server::start(serve(&partners, Some(600))).await;
    let issuers = JwtIssuers::new([
        JwtAuthenticator::builder("https://staff.example", "staff-api")
            .keys(staff.static_keys())
            .clock(clock.clone())
            .build()
            .unwrap(),
        JwtAuthenticator::builder("https://partners.example", "partner-api")
            .keys(remote(RemoteJwks::builder(server.url()), &clock))
            .algorithms([Algorithm::ES256])
            .clock(clock.clone())
            .build()
            .unwrap(),
    ])
    .unwrap();

    // An unknown issuer is rejected before any key is fetched.
    let stranger = TestIssuer::with_algorithms("https://evil.example", &[Algorithm::ES256]);
    let t = stranger.token().audience("partner-api").mint();
    assert_eq!(
        issuers.verify(&t).await.unwrap_err().reason(),
        "issuer not configured"
    );
    assert_eq!(server.hits(), 0);

    // Each issuer with its own keys, audiences and algorithms.
    let t = staff.token().audience("staff-api").mint();
    assert_eq!(
        issuers.verify(&t).await.unwrap().source().to_string(),
        "jwt"
    );
    let t = partners.token().audience("partner-api").mint();
    assert!(issuers.verify(&t).await.is_ok());
    assert_eq!(server.hits(), 1);
    // The partner audience is not accepted for staff tokens, nor staff keys for partners.
    let t = staff.token().audience("partner-api").mint();
    assert_eq!(
        issuers.verify(&t).await.unwrap_err().reason(),
        "aud does not match"
    );
    let forged = staff
        .token()
        .issuer("https://partners.example")
        .audience("partner-api")
        .mint();
    assert!(issuers.verify(&forged).await.is_err());
    // Malformed iss.
    let t = staff
        .token()
        .audience("staff-api")
        .claim("iss", 5.into())
        .mint();
    assert_eq!(
        issuers.verify(&t).await.unwrap_err().reason(),
        "iss is not a string"
    );

    assert!(JwtIssuers::new([]).is_err());
}
