//! Custom rejection renderers, the realm, and gRPC rendering through the layer.
#![cfg(all(feature = "jwt", feature = "testing"))]

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{ServiceBuilder, ServiceExt};
use tower_api_guard::RequestHead;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{AuthError, AuthErrorKind};

use common::calls::{Bearer, body_text as body};

fn jwt(issuer: &TestIssuer) -> JwtAuthenticator {
    common::jwt::trusting(issuer, "api").build().unwrap()
}

#[tokio::test]
async fn custom_renderer_replaces_the_response_and_keeps_the_error() {
    let issuer = TestIssuer::new("https://issuer.example");
    let layer =
        AuthLayer::new(jwt(&issuer)).with_renderer(|e: &AuthError, head: &RequestHead<'_>| {
            let mut r = Response::new(Bytes::from(format!("denied {}", head.uri.path())));
            *r.status_mut() = if e.kind() == AuthErrorKind::MissingCredentials {
                StatusCode::IM_A_TEAPOT
            } else {
                StatusCode::UNAUTHORIZED
            };
            r
        });
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_r: Request<()>| async {
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::new())))
        });
    let res = svc
        .oneshot(Request::get("/x").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(
        res.extensions().get::<AuthError>().unwrap().kind(),
        AuthErrorKind::MissingCredentials
    );
    assert_eq!(body(res).await, "denied /x");
}

#[tokio::test]
async fn realm_and_grpc_rendering() {
    let issuer = TestIssuer::new("https://issuer.example");
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt(&issuer)).realm("orders"))
        .service_fn(|_r: Request<()>| async {
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::new())))
        });

    let res = svc
        .clone()
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        res.headers()["www-authenticate"],
        r#"Bearer realm="orders""#
    );

    let bad = issuer.token().audience("other").mint();
    let req = Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .bearer(&bad)
        .body(())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "16");
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(
        res.extensions().get::<AuthError>().unwrap().kind(),
        AuthErrorKind::InvalidToken
    );
    assert_eq!(body(res).await, "");
}

#[tokio::test]
async fn extractor_rejections_use_the_layers_renderer() {
    use axum::Router;
    use axum::routing::get;
    use tower_api_guard::Identity;
    use tower_api_guard::auth::AuthenticatorExt;

    let issuer = TestIssuer::new("https://issuer.example");
    // An optional layer lets anonymous requests reach a handler that requires an identity:
    // the extractor rejects, and must do so with the layer's realm.
    let app = Router::new()
        .route(
            "/me",
            get(|id: Identity| async move { id.subject().to_owned() }),
        )
        .route_layer(AuthLayer::new(jwt(&issuer).optional()).realm("orders"));
    let res = app
        .clone()
        .oneshot(Request::get("/me").body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        r#"Bearer realm="orders""#
    );
    assert_eq!(
        res.extensions().get::<AuthError>().unwrap().kind(),
        AuthErrorKind::MissingCredentials
    );

    // The same rejection for a gRPC request is a trailers-only gRPC status.
    let res = app
        .oneshot(
            Request::get("/me")
                .header("content-type", "application/grpc")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "16");
}
