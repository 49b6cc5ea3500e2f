//! A tonic gRPC server whose every call needs a bearer JWT.
//!
//! ```text
//! cargo run --example tonic_jwt
//! ```
//!
//! Serves the standard gRPC health service (`grpc.health.v1.Health`) behind
//! [`AuthLayer`] on `GUARD_ADDR` (default `127.0.0.1:50051`), and prints a sample token and a
//! `grpcurl` command line that calls it. The health service has no reflection, so the
//! example writes its descriptor set next to the system's temp files for `grpcurl -protoset`.
//! Calls without a valid token get `UNAUTHENTICATED`.
//!
//! Uses an embedded [`TestIssuer`] so it runs with no setup; in a real service, give
//! [`JwtAuthenticator::builder`] your identity provider's keys instead of
//! `issuer.static_keys()` (`StaticKeys::from_jwks_json(...)` or a PEM via
//! `JwtKey::from_rsa_pem`).

use std::time::Duration;

use tonic::transport::Server;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::testing::TestIssuer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("GUARD_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let addr = addr.parse()?;

    let issuer = TestIssuer::new("https://issuer.example");
    let jwt = JwtAuthenticator::builder("https://issuer.example", "health-api")
        .keys(issuer.static_keys())
        .build()?;

    let (_reporter, health) = tonic_health::server::health_reporter();

    let protoset = std::env::temp_dir().join("grpc_health_v1.protoset");
    std::fs::write(&protoset, tonic_health::pb::FILE_DESCRIPTOR_SET)?;
    let token = issuer
        .token()
        .subject("alice")
        .audience("health-api")
        .expires_in(Duration::from_secs(3600))
        .mint();
    println!("gRPC health service on {addr}, behind a bearer-JWT check");
    println!("sample token (valid 1 h): {token}");
    println!(
        "grpcurl -plaintext -protoset {} -H 'authorization: Bearer {token}' {addr} grpc.health.v1.Health/Check",
        protoset.display()
    );

    Server::builder()
        // Every call through this server is authenticated; rejections are gRPC statuses.
        .layer(AuthLayer::new(jwt))
        .add_service(health)
        .serve_with_shutdown(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
