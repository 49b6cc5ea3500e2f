//! An upstream service behind the gateway: it trusts **only** the gateway's short-lived
//! internal JWT, verified like any issuer's token against the JWK set the gateway serves.
//!
//! ```text
//! cargo run --example upstream      # on 127.0.0.1:4000, trusting the gateway on :3000
//! GUARD_UPSTREAM=http://127.0.0.1:4000 GUARD_INTERNAL_JWT=on cargo run --example quickstart
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/api/whoami
//! ```
//!
//! Settings: `UPSTREAM_ADDR` (default `127.0.0.1:4000`), `GATEWAY_URL` (default
//! `http://127.0.0.1:3000`: the internal JWT's issuer, its keys at
//! `GATEWAY_URL/.well-known/internal-jwks.json`), `UPSTREAM_AUDIENCE` (default `upstream`,
//! the `aud` the gateway mints for). The identity headers (`X-Auth-*`) the gateway also sends
//! are shown but not trusted here: the internal JWT is the proof.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::any;
use tower_api_guard::Identity;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::jwt::{Algorithm, JwtAuthenticator, RemoteJwks};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("UPSTREAM_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:4000".into())
        .parse()
        .map_err(|e| format!("UPSTREAM_ADDR is not a socket address: {e}"))?;
    let gateway = std::env::var("GATEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".into());
    let audience = std::env::var("UPSTREAM_AUDIENCE").unwrap_or_else(|_| "upstream".into());
    let keys = RemoteJwks::builder(format!("{gateway}/.well-known/internal-jwks.json"))
        .build()
        .map_err(|e| format!("GATEWAY_URL: {e}"))?;
    if let Err(e) = keys.ready().await {
        eprintln!(
            "warning: the gateway's internal JWK set is not reachable yet ({e}); 503 until it is"
        );
    }
    // The gateway's key signs with ES256 or EdDSA; nothing else is accepted.
    let jwt = JwtAuthenticator::builder(gateway.as_str(), audience.as_str())
        .keys(keys)
        .algorithms([Algorithm::ES256, Algorithm::EdDSA])
        .build()
        .map_err(|e| format!("GATEWAY_URL / UPSTREAM_AUDIENCE: {e}"))?;
    let app = Router::new()
        .fallback(any(whoami))
        .layer(AuthLayer::new(jwt));
    println!(
        "upstream on http://{addr}, trusting internal JWTs from {gateway} for audience {audience}"
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn whoami(
    identity: Identity,
    request: axum::extract::Request,
) -> axum::Json<serde_json::Value> {
    let forwarded: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-auth-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").into()))
        .collect();
    axum::Json(serde_json::json!({
        "path": request.uri().path(),
        "subject": identity.subject(),
        "scopes": identity.scopes(),
        "roles": identity.roles(),
        "issuer": identity.claim("iss"),
        "identity_headers": forwarded,
    }))
}
