//! Opaque tokens through introspection (RFC 7662) against a local endpoint the test runs:
//! strict answers, the cache and its single flight, failures as 503, client
//! authentication, discovery, and routing by shape.
#![cfg(all(feature = "introspection", feature = "reqwest", feature = "testing"))]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use http::{HeaderMap, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::introspection::{ClientAuth, IntrospectionAuthenticator, JwtOrOpaque};
use tower_api_guard::{AuthError, AuthErrorKind, Identity, Source};

use common::jwt::{AUD, ISS, NOW, clocked_issuer, trusting};

#[derive(Clone, Default)]
struct Seen {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    last: Arc<Mutex<Option<(HeaderMap, String)>>>,
}

impl Seen {
    fn calls(&self, token: &str) -> usize {
        self.calls.lock().unwrap().get(token).copied().unwrap_or(0)
    }
}

fn form_value<'a>(form: &'a str, name: &str) -> Option<&'a str> {
    form.split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

async fn introspect(
    State(seen): State<Seen>,
    headers: HeaderMap,
    form: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let token = form_value(&form, "token").unwrap_or_default().to_owned();
    *seen.calls.lock().unwrap().entry(token.clone()).or_default() += 1;
    *seen.last.lock().unwrap() = Some((headers, form.clone()));
    let active = |extra: Value| {
        let mut body = json!({
            "active": true, "sub": "alice", "scope": "items:read items:write",
            "iss": ISS, "aud": AUD, "exp": NOW + 3600, "client_id": "web", "roles": ["reader"],
        });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        axum::Json(body).into_response()
    };
    let raw = |status: u16, body: String| {
        (
            StatusCode::from_u16(status).unwrap(),
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    match token.as_str() {
        "inactive" => axum::Json(json!({"active": false})).into_response(),
        "missing-active" => axum::Json(json!({"sub": "alice", "exp": NOW + 60})).into_response(),
        "string-true" => active(json!({"active": "true"})),
        "wrong-iss" => active(json!({"iss": "https://other.example"})),
        "wrong-aud" => active(json!({"aud": ["other"]})),
        "expired" => active(json!({"exp": NOW - 100})),
        "short-exp" => active(json!({"exp": NOW + 10})),
        "exp-string" => active(json!({"exp": "never"})),
        "malformed" => raw(200, "{not json".into()),
        "duplicate" => raw(200, r#"{"active":true,"active":false,"sub":"a"}"#.into()),
        "not-json-type" => (StatusCode::OK, "active=true").into_response(),
        "error" => raw(500, "{}".into()),
        "huge" => raw(
            200,
            format!(
                r#"{{"active":true,"sub":"a","pad":"{}"}}"#,
                "x".repeat(100_000)
            ),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            active(json!({}))
        }
        "burst" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            active(json!({}))
        }
        _ => active(json!({})),
    }
}

async fn serve(seen: Seen, issuer_override: Option<String>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = issuer_override.unwrap_or_else(|| format!("http://{addr}"));
    let discovery = json!({
        "issuer": issuer,
        "introspection_endpoint": format!("http://{addr}/introspect"),
    });
    let app = Router::new()
        .route("/introspect", post(introspect))
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Setup {
    seen: Seen,
    clock: Arc<ManualClock>,
    layer: AuthLayer<IntrospectionAuthenticator>,
}

async fn setup_with(
    configure: impl FnOnce(
        tower_api_guard::introspection::IntrospectionAuthenticatorBuilder,
    ) -> tower_api_guard::introspection::IntrospectionAuthenticatorBuilder,
) -> Setup {
    let seen = Seen::default();
    let addr = serve(seen.clone(), None).await;
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let builder = IntrospectionAuthenticator::builder(format!("http://{addr}/introspect"))
        .client_auth(ClientAuth::basic("my-api", "s3cret"))
        .issuer(ISS)
        .audience(AUD)
        .leeway(Duration::ZERO)
        .budget(Duration::from_millis(500))
        .clock(clock.clone());
    let layer = AuthLayer::new(configure(builder).build().unwrap());
    Setup { seen, clock, layer }
}

async fn setup() -> Setup {
    setup_with(|b| b).await
}

impl Setup {
    async fn send(&self, token: &str) -> http::Response<String> {
        send(&self.layer, token).await
    }
}

async fn send<A: tower_api_guard::auth::Authenticator>(
    layer: &AuthLayer<A>,
    token: &str,
) -> http::Response<String> {
    let svc = tower_layer::Layer::layer(
        layer,
        tower::service_fn(|req: Request<()>| async move {
            let who = req
                .extensions()
                .get::<Identity>()
                .map(|i| format!("{}|{}", i.subject(), i.source()))
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(http::Response::new(who))
        }),
    );
    let request = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let response = svc.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = common::calls::body_text(http::Response::new(body)).await;
    http::Response::from_parts(parts, body)
}

fn kind(response: &http::Response<String>) -> Option<AuthErrorKind> {
    response
        .extensions()
        .get::<AuthError>()
        .map(AuthError::kind)
}

#[tokio::test]
async fn an_active_token_passes_and_is_remembered() {
    let s = setup().await;
    let ok = s.send("good").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body(), "alice|introspection");
    assert_eq!(s.send("good").await.status(), StatusCode::OK);
    assert_eq!(
        s.seen.calls("good"),
        1,
        "the second answer came from the cache"
    );
    // The identity carries what the answer said.
    let identity = s.layer.authenticator().verify("good").await.unwrap();
    assert!(identity.has_scope("items:write") && identity.has_role("reader"));
    assert_eq!(
        identity.source(),
        &Source::Introspection {
            issuer: Some(ISS.to_owned())
        }
    );
}

#[tokio::test]
async fn only_the_boolean_true_is_active_and_the_claims_are_checked() {
    let s = setup().await;
    for token in [
        "inactive",
        "missing-active",
        "string-true",
        "wrong-iss",
        "wrong-aud",
        "expired",
        "exp-string",
    ] {
        let response = s.send(token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(
            kind(&response),
            Some(AuthErrorKind::InvalidToken),
            "{token}"
        );
    }
}

#[tokio::test]
async fn an_inactive_answer_is_remembered_briefly() {
    let s = setup().await;
    assert_eq!(s.send("inactive").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.send("inactive").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.seen.calls("inactive"), 1);
    s.clock.advance(Duration::from_secs(6));
    assert_eq!(s.send("inactive").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.seen.calls("inactive"), 2);
}

#[tokio::test]
async fn an_active_answer_lives_no_longer_than_the_token() {
    let s = setup_with(|b| b.cache_ttl(Duration::from_secs(60))).await;
    assert_eq!(s.send("short-exp").await.status(), StatusCode::OK);
    s.clock.advance(Duration::from_secs(9));
    assert_eq!(s.send("short-exp").await.status(), StatusCode::OK);
    assert_eq!(s.seen.calls("short-exp"), 1);
    // Past exp (10 s): asked again, and now refused.
    s.clock.advance(Duration::from_secs(2));
    assert_eq!(s.send("short-exp").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.seen.calls("short-exp"), 2);
    // The max TTL bounds a long-lived token too.
    assert_eq!(s.send("good").await.status(), StatusCode::OK);
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(s.send("good").await.status(), StatusCode::OK);
    assert_eq!(s.seen.calls("good"), 2);
}

#[tokio::test]
async fn a_broken_endpoint_is_a_503_never_a_200_or_a_hang() {
    let s = setup().await;
    for token in [
        "malformed",
        "duplicate",
        "not-json-type",
        "error",
        "huge",
        "slow",
    ] {
        let response = s.send(token).await;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{token}"
        );
        assert!(response.headers().contains_key("retry-after"), "{token}");
    }
    // Failures are not cached: the endpoint is asked again.
    let _ = s.send("error").await;
    assert_eq!(s.seen.calls("error"), 2);
}

#[tokio::test]
async fn a_burst_of_one_new_token_makes_one_call() {
    let s = setup_with(|b| b.budget(Duration::from_secs(10))).await;
    let layer = Arc::new(s.layer.clone());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let layer = layer.clone();
            tokio::spawn(async move { send(&layer, "burst").await.status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(s.seen.calls("burst"), 1);
}

#[tokio::test]
async fn client_authentication_reaches_the_endpoint_as_configured() {
    let basic = setup().await;
    let _ = basic.send("good").await;
    let (headers, form) = basic.seen.last.lock().unwrap().clone().unwrap();
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode("my-api:s3cret");
    assert_eq!(
        headers["authorization"],
        format!("Basic {expected}").as_str()
    );
    assert_eq!(form, "token=good&token_type_hint=access_token");
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");

    let post = setup_with(|b| b.client_auth(ClientAuth::post("my-api", "s3cret"))).await;
    let _ = post.send("good").await;
    let (headers, form) = post.seen.last.lock().unwrap().clone().unwrap();
    assert!(!headers.contains_key("authorization"));
    assert_eq!(form_value(&form, "client_id"), Some("my-api"));
    assert_eq!(form_value(&form, "client_secret"), Some("s3cret"));

    let bearer = setup_with(|b| b.client_auth(ClientAuth::bearer("api-token"))).await;
    let _ = bearer.send("good").await;
    let (headers, _) = bearer.seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(headers["authorization"], "Bearer api-token");
    // Secrets stay out of Debug.
    let shown = format!("{:?}", basic.layer.authenticator());
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[tokio::test]
async fn discovery_finds_the_endpoint_of_the_named_issuer_only() {
    let seen = Seen::default();
    let addr = serve(seen.clone(), None).await;
    let found = IntrospectionAuthenticator::discover(format!("http://{addr}"))
        .discover()
        .await
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(found.endpoint(), format!("http://{addr}/introspect"));
    let liar = serve(Seen::default(), Some("https://someone-else.example".into())).await;
    assert!(
        IntrospectionAuthenticator::discover(format!("http://{liar}"))
            .discover()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn jws_shaped_tokens_go_to_the_jwt_verifier_and_never_fall_through() {
    let s = setup().await;
    let (_clock, issuer) = clocked_issuer();
    let jwt = trusting(&issuer, AUD)
        .clock(s.clock.clone())
        .build()
        .unwrap();
    let opaque = s.layer.authenticator().clone();
    let layer = AuthLayer::new(JwtOrOpaque::new(jwt, opaque));
    let token = issuer.token().subject("bob").audience(AUD).mint();
    let ok = send(&layer, &token).await;
    assert_eq!(
        (ok.status(), ok.body().as_str()),
        (StatusCode::OK, "bob|jwt")
    );
    // A bad JWT: refused by the verifier, never introspected.
    let mut forged = token.clone();
    forged.push('A');
    assert_eq!(
        send(&layer, &forged).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.seen.calls(&token), 0);
    assert_eq!(s.seen.calls(&forged), 0);
    // An opaque token: introspected.
    assert_eq!(send(&layer, "good").await.body(), "alice|introspection");
    assert_eq!(s.seen.calls("good"), 1);
}

/// A configured revocation store is asked on cache hits too.
#[tokio::test]
async fn revocations_apply_to_cache_hits() {
    use tower_api_guard::FailurePolicy;
    use tower_api_guard::jwt::{MemoryRevocations, RevocationStore};

    let revocations = MemoryRevocations::new();
    let store = revocations.clone();
    let s = setup_with(move |b| b.revocation(store, FailurePolicy::Closed)).await;
    assert_eq!(s.send("good").await.status(), StatusCode::OK);
    revocations
        .revoke_subject("alice", std::time::SystemTime::now())
        .await
        .unwrap();
    assert_eq!(s.send("good").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.seen.calls("good"),
        1,
        "refused from the cache, not asked again"
    );
}
