//! The examples' reverse proxy (examples/support/proxy.rs): bodies streamed both ways,
//! hop-by-hop fields dropped, the path prefix removed, 502 when the upstream is gone.
#![cfg(feature = "axum")]

#[path = "../examples/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::any;
use http::StatusCode;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// An upstream that answers with what it saw: path, headers, the body's length and hash;
/// `GET /big/<n>` answers `n` bytes.
async fn upstream() -> SocketAddr {
    let echo = any(|request: Request| async move {
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
            .collect();
        axum::Json(serde_json::json!({
            "path": parts.uri.path_and_query().map(|p| p.as_str()),
            "headers": headers,
            "len": bytes.len(),
            "sha256": hex::encode(Sha256::digest(&bytes)),
        }))
    });
    let big = axum::routing::get(
        |axum::extract::Path(n): axum::extract::Path<usize>| async move {
            let chunks = futures_util::stream::iter((0..n.div_ceil(65_536)).map(move |i| {
                let len = 65_536.min(n - i * 65_536);
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; len]))
            }));
            Body::from_stream(chunks)
        },
    );
    serve(Router::new().route("/big/{n}", big).fallback(echo)).await
}

async fn gateway(upstream: &str) -> SocketAddr {
    let proxy = proxy::Proxy::new(upstream, "/api").unwrap();
    let app = Router::new().route(
        "/api/{*rest}",
        any(move |request: Request| {
            let proxy = proxy.clone();
            async move { proxy.forward(request).await }
        }),
    );
    serve(app).await
}

type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

#[tokio::test]
async fn bodies_stream_and_hop_by_hop_fields_stay_behind() {
    let up = upstream().await;
    let gw = gateway(&format!("http://{up}")).await;
    let client = client();
    // 8 MiB up, as a stream of chunks.
    let body: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = hex::encode(Sha256::digest(&body));
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .chunks(100_000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let request = http::Request::post(format!("http://{gw}/api/items/7?x=1"))
        .header("connection", "keep-alive, x-private")
        .header("x-private", "for the next hop only")
        .header("keep-alive", "timeout=5")
        .header("x-kept", "yes")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&seen).unwrap();
    assert_eq!(seen["path"], "/items/7?x=1");
    assert_eq!(seen["len"], 8 * 1024 * 1024);
    assert_eq!(seen["sha256"], expected.as_str());
    let headers = seen["headers"].as_object().unwrap();
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(headers["host"], up.to_string().as_str());
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-host"], gw.to_string().as_str());
    for gone in ["x-private", "keep-alive", "connection"] {
        assert!(!headers.contains_key(gone), "{gone} reached the upstream");
    }
    // 16 MiB down, read frame by frame as it streams.
    let request = http::Request::get(format!("http://{gw}/api/big/16777216"))
        .body(Body::empty())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (mut total, mut frames) = (0, 0);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
            frames += 1;
        }
    }
    assert_eq!(total, 16 * 1024 * 1024);
    assert!(frames > 1, "streamed, not one buffer");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_bad_upstreams_are_refused() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = gateway(&format!("http://127.0.0.1:{port}")).await;
    let request = http::Request::get(format!("http://{gw}/api/x"))
        .body(Body::empty())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    for bad in ["ftp://h", "http://h/path", "not a url", "https://h"] {
        assert!(proxy::Proxy::new(bad, "/api").is_err(), "{bad}");
    }
}

/// The whole gateway: JWT authentication, identity headers, internal JWT, proxy. A client's
/// own `X-Auth-*` headers (any casing, repeated) never reach the upstream; its credential
/// does not either; the upstream gets the verified identity and a token it can verify.
#[cfg(all(feature = "upstream", feature = "testing"))]
#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    use tower_api_guard::auth::AuthLayer;
    use tower_api_guard::jwt::{Algorithm, JwtAuthenticator, StaticKeys};
    use tower_api_guard::testing::TestIssuer;
    use tower_api_guard::upstream::{IdentityHeadersLayer, InternalJwtIssuer};

    let up = upstream().await;
    let issuer = TestIssuer::new("https://issuer.example");
    let jwt = JwtAuthenticator::builder(issuer.issuer(), "api")
        .keys(issuer.static_keys())
        .build()
        .unwrap();
    let internal =
        InternalJwtIssuer::generate(Algorithm::EdDSA, "https://gw.example", "upstream").unwrap();
    let identity = IdentityHeadersLayer::new("x-auth-")
        .unwrap()
        .subject("x-auth-subject")
        .unwrap()
        .scopes("x-auth-scopes")
        .unwrap()
        .strip_header("x-api-key")
        .unwrap()
        .internal_jwt(internal.clone());
    let proxy = proxy::Proxy::new(&format!("http://{up}"), "/api").unwrap();
    let app = Router::new()
        .route(
            "/api/{*rest}",
            any(move |request: Request| {
                let proxy = proxy.clone();
                async move { proxy.forward(request).await }
            })
            .layer(identity),
        )
        .route_layer(AuthLayer::new(jwt));
    let gw = serve(app).await;
    let token = issuer
        .token()
        .subject("alice")
        .audience("api")
        .scope("items:read")
        .mint();
    let request = http::Request::get(format!("http://{gw}/api/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("X-AUTH-Subject", "root")
        .header("x-auth-subject", "admin")
        .header("X-Auth-Roles", "admin")
        .header("x-api-key", "sk_should_not_pass")
        .body(Body::empty())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&seen).unwrap();
    let headers = seen["headers"].as_object().unwrap();
    assert_eq!(headers["x-auth-subject"], "alice");
    assert_eq!(headers["x-auth-scopes"], "items:read");
    assert!(!headers.contains_key("x-auth-roles"));
    assert!(!headers.contains_key("x-api-key"));
    // The upstream's credential is the internal JWT, not the caller's token.
    let bearer = headers["authorization"].as_str().unwrap();
    let internal_token = bearer.strip_prefix("Bearer ").unwrap();
    assert_ne!(internal_token, token);
    let upstream_jwt = JwtAuthenticator::builder("https://gw.example", "upstream")
        .keys(StaticKeys::from_jwks_json(internal.jwks_json().as_bytes()).unwrap())
        .build()
        .unwrap();
    let verified = upstream_jwt.verify(internal_token).await.unwrap();
    assert_eq!(verified.subject(), "alice");
    // No credential: 401, nothing forwarded.
    let request = http::Request::get(format!("http://{gw}/api/x"))
        .header("x-auth-subject", "root")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        client().request(request).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
