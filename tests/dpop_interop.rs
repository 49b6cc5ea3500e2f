//! DPoP proofs, bound tokens, RFC 7638 thumbprints and `ath` values made by an independent
//! implementation (Python's jwcrypto and cryptography; `tests/data/dpop/gen_interop.py`),
//! replayed through the layer: a valid case passes only if our thumbprint of the proof's
//! `jwk` equals jwcrypto's `cnf.jkt`, our `ath` equals hashlib's, and our signature checks
//! accept theirs; every invalid case is refused.
#![cfg(all(feature = "jwt", feature = "testing"))]

use std::sync::Arc;

use http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::jwt::{DpopConfig, DpopMode, ExternalOrigin, JwtAuthenticator, StaticKeys};
use tower_api_guard::{AuthError, Identity};

fn fixtures() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dpop/interop.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn proofs_from_jwcrypto_are_judged_as_jwcrypto_expects() {
    let f = fixtures();
    let clock = Arc::new(ManualClock::at_unix(f["now"].as_u64().unwrap()));
    let keys = StaticKeys::from_jwks_json(f["issuer_jwks"].to_string().as_bytes()).unwrap();
    let origin = ExternalOrigin::parse(f["origin"].as_str().unwrap()).unwrap();
    let jwt = JwtAuthenticator::builder(
        f["issuer"].as_str().unwrap(),
        f["audience"].as_str().unwrap(),
    )
    .keys(keys)
    .clock(clock)
    .dpop(DpopConfig::new(DpopMode::Allowed).external_origin(origin))
    .build()
    .unwrap();
    let layer = AuthLayer::new(jwt);
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 19, "{}", cases.len());
    let (mut valid, mut invalid) = (0, 0);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let url: http::Uri = case["url"].as_str().unwrap().parse().unwrap();
        let request = Request::builder()
            .method(case["method"].as_str().unwrap())
            .uri(url.path_and_query().unwrap().as_str())
            .header(
                "authorization",
                format!("DPoP {}", case["access_token"].as_str().unwrap()),
            )
            .header("dpop", case["dpop"].as_str().unwrap())
            .body(())
            .unwrap();
        let svc = tower_layer::Layer::layer(
            &layer,
            tower::service_fn(|req: Request<()>| async move {
                let who = req
                    .extensions()
                    .get::<Identity>()
                    .map(|i| i.subject().to_owned());
                Ok::<_, std::convert::Infallible>(http::Response::new(who.unwrap_or_default()))
            }),
        );
        let response = svc.oneshot(request).await.unwrap();
        let reason = response
            .extensions()
            .get::<AuthError>()
            .map(|e| e.reason().to_owned());
        if case["valid"].as_bool().unwrap() {
            valid += 1;
            assert_eq!(response.status(), StatusCode::OK, "{name}: {reason:?}");
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(&body[..], b"interop", "{name}");
        } else {
            invalid += 1;
            assert!(
                matches!(
                    response.status(),
                    StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST
                ),
                "{name}: {}",
                response.status()
            );
        }
    }
    assert_eq!((valid, invalid), (7, 12));
}

/// The RFC 7638 §3.1 example: jwcrypto's thumbprint (recorded in the fixtures) is the RFC's.
/// Our own computation of it is checked in the crate's unit tests (`jwt::keys`).
#[test]
fn the_fixtures_agree_with_rfc_7638() {
    let f = fixtures();
    assert_eq!(
        f["rfc7638_example"]["thumbprint"],
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}
