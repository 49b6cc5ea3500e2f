//! The gRPC health service behind any layer, served on loopback by a real tonic server and
//! called by a real tonic client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::{BoxError, Layer, Service};

/// The health service behind a layer, on `127.0.0.1:0`.
pub struct GrpcServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    /// Serve the health service behind `layer` (several layers: a `tower::ServiceBuilder`'s
    /// `into_inner()`, the outermost first).
    pub async fn start<L, ResBody>(layer: L) -> Self
    where
        L: Layer<Routes> + Clone + Send + Sync + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<ResBody>>
            + Clone
            + Send
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send,
        <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError> + Send,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .layer(layer)
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

    /// A client connected to the server.
    pub async fn client(&self) -> HealthClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
    }

    /// Graceful shutdown (drop the clients first); the task is aborted if it does not stop
    /// in time.
    pub async fn stop(mut self) {
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

/// A health check carrying these `authorization` entries, in order.
pub fn check_request(authorization: &[String]) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    for value in authorization {
        request
            .metadata_mut()
            .append("authorization", value.parse().unwrap());
    }
    request
}

/// Call the health check with these `authorization` entries.
pub async fn check(
    client: &mut HealthClient<Channel>,
    authorization: &[String],
) -> Result<HealthCheckResponse, tonic::Status> {
    client
        .check(check_request(authorization))
        .await
        .map(tonic::Response::into_inner)
}

/// `Bearer <token>`, the value of an `authorization` entry.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
