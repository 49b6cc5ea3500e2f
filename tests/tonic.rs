//! `AuthLayer` in front of a real tonic 0.14 server (the gRPC health service), called by a
//! real tonic client over loopback TCP.

mod common;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::testing::TestIssuer;

use common::grpc::{GrpcServer, bearer, check};
use common::jwt::{ISS, issuer_and_jwt};

const AUDIENCE: &str = "health-api";

#[tokio::test]
async fn health_check_needs_a_valid_token() {
    let (issuer, jwt) = issuer_and_jwt(AUDIENCE);
    let server = GrpcServer::start(AuthLayer::new(jwt)).await;
    let mut client = server.client().await;

    // No token.
    let status = check(&mut client, &[]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "Authentication is required.");

    // A token signed by someone else's key.
    let forged = TestIssuer::new(ISS).token().audience(AUDIENCE).mint();
    let status = check(&mut client, &[bearer(&forged)]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "The access token is invalid.");
    assert!(!format!("{status:?}").contains(&forged));

    // An expired token from the right issuer.
    let expired = issuer
        .token()
        .audience(AUDIENCE)
        .claim("exp", 1_000.into())
        .mint();
    let status = check(&mut client, &[bearer(&expired)]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Two authorization entries: ambiguous, still UNAUTHENTICATED for gRPC.
    let token = issuer.token().audience(AUDIENCE).mint();
    let status = check(&mut client, &[bearer(&token), bearer(&token)])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "The request is malformed.");

    // A valid token reaches the service, on the same connection.
    let response = check(&mut client, &[bearer(&token)]).await.unwrap();
    assert_eq!(response.status(), ServingStatus::Serving);

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn rejections_do_not_break_the_connection() {
    let (issuer, jwt) = issuer_and_jwt(AUDIENCE);
    let server = GrpcServer::start(AuthLayer::new(jwt)).await;
    let mut client = server.client().await;
    let token = issuer.token().subject("alice").audience(AUDIENCE).mint();

    for _ in 0..3 {
        let status = check(&mut client, &[]).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let response = check(&mut client, &[bearer(&token)]).await.unwrap();
        assert_eq!(response.status(), ServingStatus::Serving);
    }

    drop(client);
    server.stop().await;
}
