//! `AuthLayer` and the extractors under a real axum 0.8 `Router`, driven with `oneshot`.

mod common;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use axum::body::Body;
use axum::routing::get;
use axum::{Json, Router};
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_api_guard::RequestHead;
use tower_api_guard::auth::{AuthLayer, Authenticator, AuthenticatorExt};
use tower_api_guard::axum::Claims;
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{AuthError, AuthErrorKind, Identity, Source};

use common::calls::{Bearer, body_text};
use common::jwt::{ISS as ISSUER, issuer_and_jwt};

const AUDIENCE: &str = "orders-api";
const INVALID_TOKEN_CHALLENGE: &str = r#"Bearer realm="api", error="invalid_token", error_description="The access token is invalid.""#;
const INVALID_REQUEST_CHALLENGE: &str =
    r#"Bearer realm="api", error="invalid_request", error_description="The request is malformed.""#;

struct Setup {
    issuer: TestIssuer,
    jwt: JwtAuthenticator,
}

impl Setup {
    fn new() -> Self {
        let (issuer, jwt) = issuer_and_jwt(AUDIENCE);
        Self { issuer, jwt }
    }

    fn token(&self) -> String {
        self.issuer
            .token()
            .subject("alice")
            .audience(AUDIENCE)
            .scope("orders:read orders:write")
            .claim("email", "alice@example.com".into())
            .mint()
    }

    /// A well-formed token signed by another issuer's keys: the signature cannot verify.
    fn forged_token(&self) -> String {
        TestIssuer::new(ISSUER)
            .token()
            .subject("mallory")
            .audience(AUDIENCE)
            .mint()
    }
}

#[derive(Debug, Deserialize)]
struct EmailClaims {
    sub: String,
    email: String,
}

#[derive(Debug, Deserialize)]
struct TenantClaims {
    #[allow(dead_code)]
    tenant_id: u64,
}

async fn me(identity: Identity) -> Json<Value> {
    Json(json!({
        "sub": identity.subject(),
        "source": identity.source().to_string(),
        "scopes": identity.scopes().iter().collect::<Vec<_>>(),
    }))
}

async fn hello(identity: Option<Identity>) -> String {
    match identity {
        Some(identity) => format!("hello, {}", identity.subject()),
        None => "hello, anonymous".to_owned(),
    }
}

/// `/me` and `/email` need a valid token; `/hello` and `/strict` take anonymous callers;
/// `/tenant` wants a claim the tokens never carry.
fn app(setup: &Setup) -> Router {
    let protected = Router::new()
        .route("/me", get(me))
        .route(
            "/email",
            get(|Claims(c): Claims<EmailClaims>| async move { format!("{} <{}>", c.sub, c.email) }),
        )
        .route(
            "/tenant",
            get(|Claims(_): Claims<TenantClaims>| async { "unreachable" }),
        )
        .route_layer(AuthLayer::new(setup.jwt.clone()));
    let open = Router::new()
        .route("/hello", get(hello))
        // `Identity` (not `Option`) behind an optional layer: the extractor rejects.
        .route("/strict", get(me))
        .route_layer(AuthLayer::new(setup.jwt.clone().optional()));
    protected.merge(open)
}

fn get_req(uri: &str, token: Option<&str>) -> Request<Body> {
    Request::get(uri)
        .maybe_bearer(token)
        .body(Body::empty())
        .unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> Response<Body> {
    common::calls::call(app, request).await
}

fn auth_error(response: &Response<Body>) -> AuthError {
    response
        .extensions()
        .get::<AuthError>()
        .cloned()
        .expect("the AuthError rides in the rejection's extensions")
}

/// Status, challenge, content type, kind, and a problem+json body without the token.
async fn assert_rejection(
    response: Response<Body>,
    status: StatusCode,
    challenge: &str,
    kind: AuthErrorKind,
    token: Option<&str>,
) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["www-authenticate"], challenge);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(auth_error(&response).kind(), kind);
    let body = body_text(response).await;
    if let Some(token) = token {
        assert!(!body.contains(token));
        for segment in token.split('.') {
            assert!(!body.contains(segment), "body echoes part of the token");
        }
    }
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], status.as_u16());
    assert_eq!(problem["detail"], kind.description());
    problem
}

#[tokio::test]
async fn valid_token_reaches_the_handler_with_its_identity() {
    let setup = Setup::new();
    let app = app(&setup);
    let token = setup.token();
    let response = send(&app, get_req("/me", Some(&token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.extensions().get::<AuthError>().is_none());
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(
        body,
        json!({"sub": "alice", "source": "jwt", "scopes": ["orders:read", "orders:write"]})
    );
}

#[tokio::test]
async fn missing_token_is_401_without_an_error_code() {
    let setup = Setup::new();
    let app = app(&setup);
    let response = send(&app, get_req("/me", None)).await;
    assert_rejection(
        response,
        StatusCode::UNAUTHORIZED,
        r#"Bearer realm="api""#,
        AuthErrorKind::MissingCredentials,
        None,
    )
    .await;

    // Another scheme is no bearer credential either.
    let request = Request::get("/me")
        .header("authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")
        .body(Body::empty())
        .unwrap();
    let response = send(&app, request).await;
    assert_rejection(
        response,
        StatusCode::UNAUTHORIZED,
        r#"Bearer realm="api""#,
        AuthErrorKind::MissingCredentials,
        Some("YWxpY2U6cGFzc3dvcmQ="),
    )
    .await;
}

#[tokio::test]
async fn bad_tokens_are_401_invalid_token_and_never_echoed() {
    let setup = Setup::new();
    let app = app(&setup);
    let expired = setup
        .issuer
        .token()
        .audience(AUDIENCE)
        .claim("exp", 1_000.into())
        .mint();
    let wrong_audience = setup.issuer.token().audience("other-api").mint();
    for token in [
        setup.forged_token(),
        expired,
        wrong_audience,
        "abc.def".to_owned(),
    ] {
        let response = send(&app, get_req("/me", Some(&token))).await;
        assert_rejection(
            response,
            StatusCode::UNAUTHORIZED,
            INVALID_TOKEN_CHALLENGE,
            AuthErrorKind::InvalidToken,
            Some(&token),
        )
        .await;
    }
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let setup = Setup::new();
    let app = app(&setup);
    let token = setup.token();
    let request = Request::get("/me")
        .bearer(&token)
        .bearer(&token)
        .body(Body::empty())
        .unwrap();
    let response = send(&app, request).await;
    assert_rejection(
        response,
        StatusCode::BAD_REQUEST,
        INVALID_REQUEST_CHALLENGE,
        AuthErrorKind::InvalidRequest,
        Some(&token),
    )
    .await;
}

#[tokio::test]
async fn route_layer_keeps_unknown_routes_404() {
    let setup = Setup::new();
    let app = app(&setup);
    let response = send(&app, get_req("/nowhere", None)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().get("www-authenticate").is_none());
    assert!(response.extensions().get::<AuthError>().is_none());

    // axum layers a route's 405 fallback too: a wrong method is authenticated first.
    let request = Request::delete("/me").body(Body::empty()).unwrap();
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let request = Request::delete("/me")
        .bearer(&setup.token())
        .body(Body::empty())
        .unwrap();
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn optional_identity_anonymous_identified_and_bad_token() {
    let setup = Setup::new();
    let app = app(&setup);

    let response = send(&app, get_req("/hello", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "hello, anonymous");

    let token = setup.token();
    let response = send(&app, get_req("/hello", Some(&token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "hello, alice");

    let forged = setup.forged_token();
    let response = send(&app, get_req("/hello", Some(&forged))).await;
    assert_rejection(
        response,
        StatusCode::UNAUTHORIZED,
        INVALID_TOKEN_CHALLENGE,
        AuthErrorKind::InvalidToken,
        Some(&forged),
    )
    .await;
}

#[tokio::test]
async fn identity_extractor_rejects_anonymous_requests_let_through() {
    let setup = Setup::new();
    let app = app(&setup);
    // The optional layer lets the request through; the `Identity` extractor then rejects it.
    let response = send(&app, get_req("/strict", None)).await;
    let error = auth_error(&response);
    assert_eq!(error.reason(), "no credentials");
    assert_rejection(
        response,
        StatusCode::UNAUTHORIZED,
        r#"Bearer realm="api""#,
        AuthErrorKind::MissingCredentials,
        None,
    )
    .await;

    let response = send(&app, get_req("/strict", Some(&setup.token()))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn typed_claims_happy_path_and_wrong_shape() {
    let setup = Setup::new();
    let app = app(&setup);
    let token = setup.token();

    let response = send(&app, get_req("/email", Some(&token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "alice <alice@example.com>");

    // A valid token whose claims lack `email`.
    let no_email = setup.issuer.token().audience(AUDIENCE).mint();
    let response = send(&app, get_req("/email", Some(&no_email))).await;
    let error = auth_error(&response);
    assert_eq!(
        error.reason(),
        "claims do not fit the expected type: missing field `email`"
    );
    let problem = assert_rejection(
        response,
        StatusCode::UNAUTHORIZED,
        INVALID_TOKEN_CHALLENGE,
        AuthErrorKind::InvalidToken,
        Some(&no_email),
    )
    .await;
    assert!(!problem.to_string().contains("email"));

    // `tenant_id` of the wrong type: the reason names the type, never the value.
    let wrong_type = setup
        .issuer
        .token()
        .audience(AUDIENCE)
        .claim("tenant_id", "acme-secret-tenant".into())
        .mint();
    let response = send(&app, get_req("/tenant", Some(&wrong_type))).await;
    let error = auth_error(&response);
    assert_eq!(error.kind(), AuthErrorKind::InvalidToken);
    assert!(!error.reason().contains("acme-secret-tenant"));
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// An API-key authenticator for the `or` tests: `x-api-key: good-key` is valid. Counts its
/// `authenticate` calls.
#[derive(Clone, Default)]
struct CountingKeys {
    calls: Arc<AtomicUsize>,
}

impl Authenticator for CountingKeys {
    type Credential = String;
    type Future = Ready<Result<Option<Identity>, AuthError>>;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<String>, AuthError> {
        Ok(head
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    fn authenticate(&self, key: String) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(if key == "good-key" {
            Ok(Some(
                Identity::builder(
                    "service-bot",
                    Source::ApiKey {
                        key_id: "key-1".into(),
                    },
                )
                .build(),
            ))
        } else {
            Err(AuthError::invalid_token("unknown api key"))
        })
    }
}

#[tokio::test]
async fn or_never_falls_through_and_rejects_two_credentials() {
    let setup = Setup::new();
    let keys = CountingKeys::default();
    let calls = keys.calls.clone();
    let app = Router::new()
        .route("/me", get(me))
        .route_layer(AuthLayer::new(setup.jwt.clone().or(keys)));

    // A bad JWT is rejected by the JWT authenticator; the key check is never consulted.
    let forged = setup.forged_token();
    let response = send(&app, get_req("/me", Some(&forged))).await;
    assert_rejection(
        response,
        StatusCode::UNAUTHORIZED,
        INVALID_TOKEN_CHALLENGE,
        AuthErrorKind::InvalidToken,
        Some(&forged),
    )
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // A valid JWT does not consult the key check either.
    let response = send(&app, get_req("/me", Some(&setup.token()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // Both credentials at once: ambiguous, 400, and neither is checked.
    let request = Request::get("/me")
        .bearer(&setup.token())
        .header("x-api-key", "good-key")
        .body(Body::empty())
        .unwrap();
    let response = send(&app, request).await;
    assert_rejection(
        response,
        StatusCode::BAD_REQUEST,
        INVALID_REQUEST_CHALLENGE,
        AuthErrorKind::InvalidRequest,
        Some("good-key"),
    )
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // The key alone is checked by the second authenticator.
    let request = Request::get("/me")
        .header("x-api-key", "good-key")
        .body(Body::empty())
        .unwrap();
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(body["sub"], "service-bot");
    assert_eq!(body["source"], "api_key");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn inner_service_is_never_called_on_rejection() {
    let setup = Setup::new();
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<Request<()>, Response<String>, _>(
        AuthLayer::new(setup.jwt.clone()),
    );
    handle.allow(10);

    let forged = setup.forged_token();
    for (request, status) in [
        (Request::new(()), StatusCode::UNAUTHORIZED),
        (
            Request::get("/").bearer(&forged).body(()).unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Request::get("/")
                .header("authorization", "Bearer a")
                .header("authorization", "Bearer b")
                .body(())
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert!(matches!(service.poll_ready(), Poll::Ready(Ok(()))));
        let response = service.call(request).await.unwrap();
        assert_eq!(response.status(), status);
        assert!(response.extensions().get::<AuthError>().is_some());
        assert!(
            handle.poll_request().is_pending(),
            "the inner service saw a rejected request"
        );
    }

    // The same mock does see an authenticated request, with the identity attached.
    assert!(matches!(service.poll_ready(), Poll::Ready(Ok(()))));
    let request = Request::get("/").bearer(&setup.token()).body(()).unwrap();
    let call = tokio::spawn(service.call(request));
    let (seen, respond) = handle
        .next_request()
        .await
        .expect("the request reaches the inner service");
    assert_eq!(
        seen.extensions().get::<Identity>().unwrap().subject(),
        "alice"
    );
    respond.send_response(Response::new("ok".to_owned()));
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
