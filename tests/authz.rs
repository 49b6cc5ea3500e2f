//! `RequireLayer`: every requirement kind on axum routes, a tonic service with a real client,
//! role hierarchy and permissions, wildcards, the scope tricks of docs/security-cases.md row 28,
//! dry-run, and the predicate with axum's `MatchedPath`.
//!
//! The guard reads the [`Identity`] on the request, whoever put it there: most tests put it
//! there directly (`testing::with_identity`); the tests of identities made from a token's
//! claims go through `AuthLayer` and a JWT.
#![cfg(all(
    feature = "authz",
    feature = "jwt",
    feature = "testing",
    feature = "axum"
))]

mod common;

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::routing::get;
use http::{Request, StatusCode};
use serde_json::json;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::authz::{PredicateFuture, RequireLayer, Requirement};
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::testing::{TestIssuer, caller, with_identity};
use tower_api_guard::{AuthErrorKind, Identity, RoleModel};

use common::calls::{self, Bearer};
use common::jwt::{ISS, trusting};

fn role_model() -> RoleModel {
    RoleModel::new()
        .inherit("admin", ["editor"])
        .inherit("editor", ["viewer"])
        .grant("editor", ["posts:write"])
        .grant("viewer", ["posts:read"])
}

/// `GET /` behind `guard`, with nothing in front: the test puts the identity on the request.
fn guarded(guard: RequireLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(guard)
}

/// Status, challenge and error kind of `GET /` made as `identity` (`None`: no identity).
async fn status_as(
    app: &Router,
    identity: Option<Identity>,
) -> (StatusCode, String, Option<AuthErrorKind>) {
    let mut request = Request::get("/").body(Body::empty()).unwrap();
    if let Some(identity) = identity {
        request = with_identity(request, identity);
    }
    let res = calls::call(app, request).await;
    (
        res.status(),
        calls::challenge(&res),
        calls::error_kind(&res),
    )
}

/// A caller granted these space-delimited scopes.
fn scoped(scope: &str) -> Option<Identity> {
    Some(caller("caller").scopes(scope.split_whitespace()).build())
}

/// A caller holding these roles, expanded through [`role_model`].
fn holding(roles: &[&str]) -> Option<Identity> {
    Some(
        caller("caller")
            .roles(roles.iter().copied())
            .role_model(&role_model())
            .build(),
    )
}

/// An authenticator for [`ISS`] that reads roles from `roles` and Keycloak's
/// `realm_access.roles`, expanded through [`role_model`].
fn jwt(issuer: &TestIssuer) -> JwtAuthenticator {
    trusting(issuer, "api")
        .role_claims(["roles", "realm_access.roles"])
        .role_model(role_model())
        .build()
        .unwrap()
}

/// `GET /` behind `AuthLayer` (with [`jwt`]) and `guard`.
fn app(issuer: &TestIssuer, guard: RequireLayer) -> Router {
    guarded(guard).route_layer(AuthLayer::new(jwt(issuer)))
}

/// Status, challenge and error kind of `GET /` with the token, if any.
async fn status(app: &Router, token: Option<&str>) -> (StatusCode, String, Option<AuthErrorKind>) {
    let request = Request::get("/")
        .maybe_bearer(token)
        .body(Body::empty())
        .unwrap();
    let res = calls::call(app, request).await;
    (
        res.status(),
        calls::challenge(&res),
        calls::error_kind(&res),
    )
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
    let all = guarded(RequireLayer::all_scopes(["items:read", "items:write"]));
    assert_eq!(
        status_as(&all, scoped("items:read items:write")).await.0,
        StatusCode::OK
    );
    let (code, challenge, kind) = status_as(&all, scoped("items:read")).await;
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
    // No identity at all: the guard answers 401, not 403.
    let (code, _, kind) = status_as(&all, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(kind, Some(AuthErrorKind::MissingCredentials));

    let any = guarded(RequireLayer::new(Requirement::any_scope(["a", "b"])));
    assert_eq!(status_as(&any, scoped("b")).await.0, StatusCode::OK);
    assert_eq!(status_as(&any, scoped("c")).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn roles_with_hierarchy_and_permissions() {
    let viewer_role = guarded(RequireLayer::any_role(["viewer"]));
    assert_eq!(
        status_as(&viewer_role, holding(&["admin"])).await.0,
        StatusCode::OK,
        "admin ⊇ viewer"
    );
    assert_eq!(
        status_as(&viewer_role, holding(&["guest"])).await.0,
        StatusCode::FORBIDDEN
    );
    let all_roles = guarded(RequireLayer::new(Requirement::all_roles([
        "editor", "viewer",
    ])));
    assert_eq!(
        status_as(&all_roles, holding(&["editor"])).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status_as(&all_roles, holding(&["viewer"])).await.0,
        StatusCode::FORBIDDEN
    );
    // A permission granted through a role satisfies a scope requirement.
    let write = guarded(RequireLayer::all_scopes(["posts:write"]));
    assert_eq!(
        status_as(&write, holding(&["admin"])).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status_as(&write, holding(&["viewer"])).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn roles_from_token_claims_through_the_role_model() {
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
    let guard = RequireLayer::expr("items:write and (admin or support) and not suspended").unwrap();
    let app = guarded(guard);
    let who = |scope: &str, roles: &[&str]| {
        Some(
            caller("caller")
                .scopes([scope])
                .roles(roles.iter().copied())
                .build(),
        )
    };
    assert_eq!(
        status_as(&app, who("items:write", &["support"])).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status_as(&app, who("items:write", &["admin"])).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status_as(&app, who("items:write", &["guest"])).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_as(&app, who("items:read", &["admin"])).await.0,
        StatusCode::FORBIDDEN
    );
    let (code, challenge, _) = status_as(&app, who("items:write", &["admin", "suspended"])).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        challenge.contains(r#"scope="items:write admin support suspended""#),
        "{challenge}"
    );
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
    // No token: 401 from the auth layer, before the guard.
    assert_eq!(status(&admin, None).await.0, StatusCode::UNAUTHORIZED);
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

#[tokio::test]
async fn dry_run_lets_requests_through_and_records_the_denial() {
    let (captured, _guard) = common::events::Captured::install(tracing::Level::INFO);
    let app = guarded(RequireLayer::all_scopes(["items:write"]).dry_run(true));
    let dora = caller("dora").scopes(["items:read"]).build();
    assert_eq!(status_as(&app, Some(dora)).await.0, StatusCode::OK);
    let log = captured.take();
    assert!(
        log.contains("would be denied") && log.contains("dora") && log.contains("items:write"),
        "{log}"
    );
}

#[tokio::test]
async fn predicate_with_matched_path() {
    // "GET /users/{id}/orders": only the user themself.
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
        .route_layer(RequireLayer::new(own));
    let get = |uri: &str| {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        calls::call(&app, with_identity(request, caller("alice").build()))
    };
    assert_eq!(get("/users/alice/orders").await.status(), StatusCode::OK);
    assert_eq!(
        get("/users/bob/orders").await.status(),
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
    use common::grpc::{GrpcServer, bearer, check};
    use tonic::Code;
    use tower::ServiceBuilder;

    #[tokio::test]
    async fn permission_denied_with_a_real_client() {
        let issuer = TestIssuer::new(ISS);
        let server = GrpcServer::start(
            ServiceBuilder::new()
                .layer(AuthLayer::new(jwt(&issuer)))
                .layer(RequireLayer::all_scopes(["health:read"]))
                .into_inner(),
        )
        .await;
        let mut client = server.client().await;
        let other = issuer.token().audience("api").scope("other").mint();
        let denied = check(&mut client, &[bearer(&other)]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let health_read = issuer.token().audience("api").scope("health:read").mint();
        let ok = check(&mut client, &[bearer(&health_read)]).await;
        assert!(ok.is_ok(), "{ok:?}");
        let unauthenticated = check(&mut client, &[]).await.unwrap_err();
        assert_eq!(unauthenticated.code(), Code::Unauthenticated);
        drop(client);
        server.stop().await;
    }
}

#[tokio::test]
async fn claim_presets() {
    let issuer = TestIssuer::new(ISS);
    let base = || trusting(&issuer, "api");
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
