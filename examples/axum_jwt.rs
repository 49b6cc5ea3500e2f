//! A minimal axum API protected by bearer JWTs.
//!
//! ```text
//! cargo run --example axum_jwt   # GUARD_ADDR changes the address (default 127.0.0.1:3001)
//! ```
//!
//! Uses an embedded [`TestIssuer`] so it runs with no setup; in a real service, replace
//! `issuer.static_keys()` with your identity provider's keys
//! (`StaticKeys::from_jwks_json(...)` or a PEM via `JwtKey::from_rsa_pem`).

use axum::extract::MatchedPath;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tower_api_guard::Identity;
use tower_api_guard::RequestHead;
use tower_api_guard::auth::{AuthLayer, AuthenticatorExt};
use tower_api_guard::authz::{PredicateFuture, RequireLayer, Requirement};
use tower_api_guard::axum::Claims;
use tower_api_guard::jwt::{Algorithm, JwtAuthenticator};
use tower_api_guard::testing::TestIssuer;

#[derive(Debug, Deserialize)]
struct MyClaims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
}

/// Allowed when the `{id}` path parameter is the caller's own subject.
fn own_user(identity: &Identity, head: &RequestHead<'_>) -> PredicateFuture {
    let id = head
        .extensions
        .and_then(|e| e.get::<MatchedPath>())
        .and_then(|matched| {
            matched
                .as_str()
                .split('/')
                .zip(head.uri.path().split('/'))
                .find(|(template, _)| *template == "{id}")
                .map(|(_, value)| value.to_owned())
        });
    let allowed = id.as_deref() == Some(identity.subject());
    Box::pin(async move { allowed })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = TestIssuer::new("https://issuer.example");
    let jwt = JwtAuthenticator::builder("https://issuer.example", "orders-api")
        .keys(issuer.static_keys())
        .algorithms([Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA])
        .build()?;

    let app = Router::new()
        // Any valid token.
        .route(
            "/whoami",
            get(|id: Identity| async move { id.subject().to_owned() }),
        )
        // Typed claims.
        .route(
            "/profile",
            get(|Claims(c): Claims<MyClaims>| async move {
                Json(serde_json::json!({"sub": c.sub, "email": c.email}))
            }),
        )
        // Resource-level rule: only the user themself may read their orders. The predicate
        // reads the `{id}` path parameter through axum's `MatchedPath` template.
        .route(
            "/users/{id}/orders",
            get(|id: Identity| async move { format!("orders of {}", id.subject()) }).route_layer(
                RequireLayer::new(Requirement::predicate("own user", own_user)),
            ),
        )
        .route_layer(AuthLayer::new(jwt.clone()))
        // Public route with an optional identity: anonymous callers are let through,
        // but a bad token is still rejected.
        .merge(
            Router::new()
                .route(
                    "/hello",
                    get(|id: Option<Identity>| async move {
                        match id {
                            Some(id) => format!("hello, {}", id.subject()),
                            None => "hello, stranger".to_owned(),
                        }
                    }),
                )
                .route_layer(AuthLayer::new(jwt.optional())),
        );

    let token = issuer
        .token()
        .subject("alice")
        .audience("orders-api")
        .claim("email", "alice@example.com".into())
        .mint();
    let addr = std::env::var("GUARD_ADDR").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    println!("curl -H 'Authorization: Bearer {token}' http://{addr}/profile");
    println!("curl http://{addr}/hello");
    println!("curl -H 'Authorization: Bearer {token}' http://{addr}/users/alice/orders   # 200");
    println!("curl -H 'Authorization: Bearer {token}' http://{addr}/users/bob/orders     # 403");
    axum::serve(listener, app).await?;
    Ok(())
}
