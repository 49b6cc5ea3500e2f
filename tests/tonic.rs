//! `AuthLayer` in front of a real tonic 0.14 server (the gRPC health service), called by a
//! real tonic client over loopback TCP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::testing::TestIssuer;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "health-api";

/// The health service behind `AuthLayer`, on `127.0.0.1:0`.
struct GrpcServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    async fn start(jwt: JwtAuthenticator) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .layer(AuthLayer::new(jwt))
                .add_service(health)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = signal.await;
                }),
        );
        Self {
            addr,
            shutdown: Some(shutdown),
            task,
        }
    }

    async fn client(&self) -> HealthClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
    }

    /// Graceful shutdown; the task is aborted if it does not stop in time.
    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let abort = self.task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), &mut self.task).await {
            Ok(joined) => joined.unwrap().unwrap(),
            Err(_) => {
                abort.abort();
                panic!("the server did not shut down gracefully");
            }
        }
    }
}

fn setup() -> (TestIssuer, JwtAuthenticator) {
    let issuer = TestIssuer::new(ISSUER);
    let jwt = JwtAuthenticator::builder(ISSUER, AUDIENCE)
        .keys(issuer.static_keys())
        .build()
        .unwrap();
    (issuer, jwt)
}

fn check_request(authorization: &[String]) -> Request<HealthCheckRequest> {
    let mut request = Request::new(HealthCheckRequest {
        service: String::new(),
    });
    for value in authorization {
        request
            .metadata_mut()
            .append("authorization", value.parse().unwrap());
    }
    request
}

async fn check(
    client: &mut HealthClient<Channel>,
    authorization: &[String],
) -> Result<HealthCheckResponse, tonic::Status> {
    client
        .check(check_request(authorization))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn health_check_needs_a_valid_token() {
    let (issuer, jwt) = setup();
    let server = GrpcServer::start(jwt).await;
    let mut client = server.client().await;

    // No token.
    let status = check(&mut client, &[]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "Authentication is required.");

    // A token signed by someone else's key.
    let forged = TestIssuer::new(ISSUER).token().audience(AUDIENCE).mint();
    let status = check(&mut client, &[format!("Bearer {forged}")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "The access token is invalid.");
    assert!(!format!("{status:?}").contains(&forged));

    // An expired token from the right issuer.
    let expired = issuer
        .token()
        .audience(AUDIENCE)
        .claim("exp", 1_000.into())
        .mint();
    let status = check(&mut client, &[format!("Bearer {expired}")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Two authorization entries: ambiguous, still UNAUTHENTICATED for gRPC.
    let token = issuer.token().audience(AUDIENCE).mint();
    let status = check(
        &mut client,
        &[format!("Bearer {token}"), format!("Bearer {token}")],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "The request is malformed.");

    // A valid token reaches the service, on the same connection.
    let response = check(&mut client, &[format!("Bearer {token}")])
        .await
        .unwrap();
    assert_eq!(response.status(), ServingStatus::Serving);

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn rejections_do_not_break_the_connection() {
    let (issuer, jwt) = setup();
    let server = GrpcServer::start(jwt).await;
    let mut client = server.client().await;
    let token = issuer.token().subject("alice").audience(AUDIENCE).mint();

    for _ in 0..3 {
        let status = check(&mut client, &[]).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let response = check(&mut client, &[format!("Bearer {token}")])
            .await
            .unwrap();
        assert_eq!(response.status(), ServingStatus::Serving);
    }

    drop(client);
    server.stop().await;
}
