//! The load benchmark's peer stack (see `BENCHMARKS.md`): an axum 0.7 server whose
//! `GET /items` sits behind `jwt-authorizer` (RS256 / ES256 against a JWKS URL, `iss`,
//! `aud` and `exp` checked, scope checked by its claim checker) and `tower_governor` keyed
//! by the token's subject, with a quota that never trips. The same handler and body as the
//! `bare` variant of `guard-bench`.
//!
//! Environment: `BIND` (default `127.0.0.1:3001`), `JWKS_URL`, `ISSUER`, `AUDIENCE`,
//! `SCOPE` (default `items:read`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, Request};
use axum::routing::get;
use axum::Router;
use jsonwebtoken::TokenData;
use jwt_authorizer::{Authorizer, IntoLayer, JwtAuthorizer, Validation};
use serde::Deserialize;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

const ITEMS: &str = r#"[{"id":1,"name":"widget"},{"id":2,"name":"gadget"}]"#;

#[derive(Debug, Clone, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
}

/// The rate-limit key: the subject of the verified token.
#[derive(Debug, Clone, Copy)]
struct Subject;

impl KeyExtractor for Subject {
    type Key = String;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        // jwt-authorizer keeps the verified token's data in the request extensions.
        req.extensions()
            .get::<TokenData<Claims>>()
            .map(|data| data.claims.sub.clone())
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

async fn items() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "application/json")], ITEMS)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set"))
}

#[tokio::main]
async fn main() {
    let bind: SocketAddr = std::env::var("BIND")
        .unwrap_or_else(|_| "127.0.0.1:3001".into())
        .parse()
        .expect("BIND is not a socket address");
    let (issuer, audience) = (env("ISSUER"), env("AUDIENCE"));
    let scope = std::env::var("SCOPE").unwrap_or_else(|_| "items:read".into());

    let validation = Validation::new()
        .iss(&[issuer.as_str()])
        .aud(&[audience.as_str()]);
    let auth: Authorizer<Claims> = JwtAuthorizer::from_jwks_url(&env("JWKS_URL"))
        .validation(validation)
        // A token without the scope is rejected by the claim checker (403).
        .check(move |claims: &Claims| claims.scope.split(' ').any(|s| s == scope))
        .build()
        .await
        .expect("the JWKS could not be loaded");

    // One token per nanosecond with a burst of a billion: never trips.
    let governor = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1_000_000_000)
        .key_extractor(Subject)
        .finish()
        .expect("governor configuration");
    let app = Router::new()
        .route("/items", get(items))
        .layer(GovernorLayer {
            config: Arc::new(governor),
        })
        .layer(auth.into_layer());

    let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
    println!(
        "peer-server listening on {}",
        listener.local_addr().expect("address")
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server");
}
