//! `RequireLayer`: every requirement kind on axum routes, a tonic service with a real client,
//! role hierarchy and permissions, wildcards, the scope tricks of docs/security-cases.md row 28,
//! dry-run, and the predicate with axum's `MatchedPath`.
#![cfg(all(
    feature = "authz",
    feature = "jwt",
    feature = "testing",
    feature = "axum"
))]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::routing::get;
use http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::authz::{PredicateFuture, RequireLayer, Requirement};
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{AuthError, AuthErrorKind, RoleModel};

const ISS: &str = "https://issuer.example";

fn jwt(issuer: &TestIssuer) -> JwtAuthenticator {
    JwtAuthenticator::builder(ISS, "api")
        .keys(issuer.static_keys())
        .role_claims(["roles", "realm_access.roles"])
        .role_model(
            RoleModel::new()
                .inherit("admin", ["editor"])
                .inherit("editor", ["viewer"])
                .grant("editor", ["posts:write"])
                .grant("viewer", ["posts:read"]),
        )
        .build()
        .unwrap()
}

fn app(issuer: &TestIssuer, guard: RequireLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(guard)
        .route_layer(AuthLayer::new(jwt(issuer)))
}

async fn status(app: &Router, token: Option<&str>) -> (StatusCode, String, Option<AuthErrorKind>) {
    let mut req = Request::get("/");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let kind = res.extensions().get::<AuthError>().map(AuthError::kind);
    (res.status(), challenge, kind)
}

struct Tokens<'a>(&'a TestIssuer);

impl Tokens<'_> {
    fn scopes(&self, scope: &str) -> String {
        self.0.token().audience("api").scope(scope).mint()
    }
    fn roles(&self, roles: &[&str]) -> String {
        self.0
            .token()
            .audience("api")
            .roles(roles.iter().copied())
            .mint()
    }
}

#[tokio::test]
async fn scopes_all_and_any() {
    let issuer = TestIssuer::new(ISS);
    let t = Tokens(&issuer);
    let all = app(
        &issuer,
        RequireLayer::all_scopes(["items:read", "items:write"]),
    );
    assert_eq!(
        status(&all, Some(&t.scopes("items:read items:write")))
            .await
            .0,
        StatusCode::OK
    );
    let (code, challenge, kind) = status(&all, Some(&t.scopes("items:read"))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(kind, Some(AuthErrorKind::InsufficientScope));
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"scope="items:read items:write""#),
        "{challenge}"
    );
    // No identity at all: 401 from the auth layer, before the guard.
    assert_eq!(status(&all, None).await.0, StatusCode::UNAUTHORIZED);

    let any = app(
        &issuer,
        RequireLayer::new(Requirement::any_scope(["a", "b"])),
    );
    assert_eq!(status(&any, Some(&t.scopes("b"))).await.0, StatusCode::OK);
    assert_eq!(
        status(&any, Some(&t.scopes("c"))).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn roles_with_hierarchy_and_permissions() {
    let issuer = TestIssuer::new(ISS);
    let t = Tokens(&issuer);
    let viewer_role = app(&issuer, RequireLayer::any_role(["viewer"]));
    assert_eq!(
        status(&viewer_role, Some(&t.roles(&["admin"]))).await.0,
        StatusCode::OK,
        "admin ⊇ viewer"
    );
    assert_eq!(
        status(&viewer_role, Some(&t.roles(&["guest"]))).await.0,
        StatusCode::FORBIDDEN
    );
    let all_roles = app(
        &issuer,
        RequireLayer::new(Requirement::all_roles(["editor", "viewer"])),
    );
    assert_eq!(
        status(&all_roles, Some(&t.roles(&["editor"]))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status(&all_roles, Some(&t.roles(&["viewer"]))).await.0,
        StatusCode::FORBIDDEN
    );
    // A permission granted through a role satisfies a scope requirement.
    let write = app(&issuer, RequireLayer::all_scopes(["posts:write"]));
    assert_eq!(
        status(&write, Some(&t.roles(&["admin"]))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status(&write, Some(&t.roles(&["viewer"]))).await.0,
        StatusCode::FORBIDDEN
    );
    // Keycloak's realm_access.roles.
    let kc = issuer
        .token()
        .audience("api")
        .claim("realm_access", json!({"roles": ["editor"]}))
        .mint();
    assert_eq!(status(&write, Some(&kc)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn expressions() {
    let issuer = TestIssuer::new(ISS);
    let t = Tokens(&issuer);
    let guard = RequireLayer::expr("items:write and (admin or support) and not suspended").unwrap();
    let app = app(&issuer, guard);
    let token = |scope: &str, roles: &[&str]| {
        issuer
            .token()
            .audience("api")
            .scope(scope)
            .roles(roles.iter().copied())
            .mint()
    };
    assert_eq!(
        status(&app, Some(&token("items:write", &["support"])))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, Some(&token("items:write", &["admin"])))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, Some(&token("items:write", &["guest"])))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&app, Some(&token("items:read", &["admin"]))).await.0,
        StatusCode::FORBIDDEN
    );
    let (code, challenge, _) =
        status(&app, Some(&token("items:write", &["admin", "suspended"]))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        challenge.contains(r#"scope="items:write admin support suspended""#),
        "{challenge}"
    );
    let _ = t;
    // A bad expression is a configuration error naming the position.
    let err = RequireLayer::expr("items:write and (admin or").unwrap_err();
    assert!(
        err.message().contains("25") || err.message().contains("end"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn row_28_scope_tricks_and_wildcards() {
    let issuer = TestIssuer::new(ISS);
    let t = Tokens(&issuer);
    let admin = app(&issuer, RequireLayer::all_scopes(["admin"]));
    for scope in [
        "admin:read",
        "notadmin",
        "Admin",
        "ADMIN",
        "admin2",
        "xadmin admin:*",
        "*",
    ] {
        assert_eq!(
            status(&admin, Some(&t.scopes(scope))).await.0,
            StatusCode::FORBIDDEN,
            "{scope}"
        );
    }
    // Scope claims of the wrong type are 401 at authentication: `scope` is a
    // space-delimited string (RFC 8693 §4.2, RFC 9068 §2.2.3), never a number or an array.
    for wrong in [json!(42), json!(["admin"]), json!(["admin", "b"])] {
        let token = issuer
            .token()
            .audience("api")
            .claim("scope", wrong.clone())
            .mint();
        let (code, challenge, kind) = status(&admin, Some(&token)).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "scope: {wrong}");
        assert_eq!(kind, Some(AuthErrorKind::InvalidToken), "scope: {wrong}");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }
    let arr = issuer
        .token()
        .audience("api")
        .claim("scp", json!(["other", "admin"]))
        .mint();
    assert_eq!(
        status(&admin, Some(&arr)).await.0,
        StatusCode::OK,
        "scp arrays are scopes"
    );

    // Wildcards only when enabled.
    let read = app(&issuer, RequireLayer::all_scopes(["posts:read"]));
    assert_eq!(
        status(&read, Some(&t.scopes("posts:*"))).await.0,
        StatusCode::FORBIDDEN
    );
    let wild = app(
        &issuer,
        RequireLayer::all_scopes(["posts:read"]).wildcards(true),
    );
    assert_eq!(
        status(&wild, Some(&t.scopes("posts:*"))).await.0,
        StatusCode::OK
    );
    assert_eq!(status(&wild, Some(&t.scopes("*"))).await.0, StatusCode::OK);
    assert_eq!(
        status(&wild, Some(&t.scopes("post:*"))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&wild, Some(&t.scopes("posts*"))).await.0,
        StatusCode::FORBIDDEN
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn dry_run_lets_requests_through_and_records_the_denial() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let issuer = TestIssuer::new(ISS);
    let app = app(
        &issuer,
        RequireLayer::all_scopes(["items:write"]).dry_run(true),
    );
    let token = issuer
        .token()
        .audience("api")
        .subject("dora")
        .scope("items:read")
        .mint();
    assert_eq!(status(&app, Some(&token)).await.0, StatusCode::OK);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("would be denied") && log.contains("dora") && log.contains("items:write"),
        "{log}"
    );
}

#[tokio::test]
async fn predicate_with_matched_path() {
    // "GET /users/{id}/orders": only the user themself.
    let issuer = TestIssuer::new(ISS);
    let own = Requirement::predicate("own user", |identity, head| -> PredicateFuture {
        let id = head
            .extensions
            .and_then(|e| e.get::<MatchedPath>())
            .and_then(|matched| path_param(matched.as_str(), head.uri.path(), "{id}"));
        let allowed = id.as_deref() == Some(identity.subject());
        Box::pin(async move { allowed })
    });
    let app = Router::new()
        .route("/users/{id}/orders", get(|| async { "orders" }))
        .route_layer(RequireLayer::new(own))
        .route_layer(AuthLayer::new(jwt(&issuer)));
    let alice = issuer.token().audience("api").subject("alice").mint();
    let get = |uri: &str| {
        app.clone().oneshot(
            Request::get(uri)
                .header("authorization", format!("Bearer {alice}"))
                .body(Body::empty())
                .unwrap(),
        )
    };
    assert_eq!(
        get("/users/alice/orders").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/users/bob/orders").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

/// The path segment that stands where `name` stands in the route template.
fn path_param(template: &str, path: &str, name: &str) -> Option<String> {
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == name)
        .map(|(_, value)| value.to_owned())
}

mod grpc {
    use super::*;
    use tokio::net::TcpListener;
    use tonic::Code;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    #[tokio::test]
    async fn permission_denied_with_a_real_client() {
        let issuer = TestIssuer::new(ISS);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = tokio::spawn(
            Server::builder()
                .layer(AuthLayer::new(jwt(&issuer)))
                .layer(RequireLayer::all_scopes(["health:read"]))
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let call = |token: String| {
            let mut req = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            req
        };
        let denied = client
            .check(call(issuer.token().audience("api").scope("other").mint()))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let ok = client
            .check(call(
                issuer.token().audience("api").scope("health:read").mint(),
            ))
            .await;
        assert!(ok.is_ok(), "{ok:?}");
        let unauthenticated = client
            .check(tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(unauthenticated.code(), Code::Unauthenticated);
        server.abort();
    }
}

#[tokio::test]
async fn claim_presets() {
    let issuer = TestIssuer::new(ISS);
    let base = || JwtAuthenticator::builder(ISS, "api").keys(issuer.static_keys());
    let kc = base().keycloak(Some("shop")).build().unwrap();
    let t = issuer
        .token()
        .audience("api")
        .claim("realm_access", json!({"roles": ["user"]}))
        .claim(
            "resource_access",
            json!({"shop": {"roles": ["clerk"]}, "other": {"roles": ["boss"]}}),
        )
        .mint();
    let id = kc.verify(&t).await.unwrap();
    assert!(id.has_role("user") && id.has_role("clerk") && !id.has_role("boss"));
    let wrong = issuer
        .token()
        .audience("api")
        .claim("realm_access", json!({"roles": "user"}))
        .mint();
    assert!(kc.verify(&wrong).await.is_ok(), "a string role is one role");
    let wrong = issuer
        .token()
        .audience("api")
        .claim("realm_access", json!({"roles": 5}))
        .mint();
    assert_eq!(
        kc.verify(&wrong).await.unwrap_err().kind(),
        AuthErrorKind::InvalidToken
    );

    let auth0 = base().auth0().build().unwrap();
    let t = issuer
        .token()
        .audience("api")
        .scope("openid")
        .claim("permissions", json!(["read:items"]))
        .mint();
    let id = auth0.verify(&t).await.unwrap();
    assert!(id.has_scope("openid") && id.has_scope("read:items"));

    let entra = base().entra_id().build().unwrap();
    let t = issuer
        .token()
        .audience("api")
        .without_claim("sub")
        .claim("oid", "0001".into())
        .claim("scp", "User.Read".into())
        .claim("roles", json!(["Task.Write"]))
        .claim("tid", "tenant-1".into())
        .mint();
    let id = entra.verify(&t).await.unwrap();
    assert_eq!((id.subject(), id.tenant()), ("0001", Some("tenant-1")));
    assert!(id.has_scope("User.Read") && id.has_role("Task.Write"));
}
