//! Every success and rejection emits a `tracing` event with its reason, never the token.
#![cfg(all(feature = "jwt", feature = "testing"))]

mod common;

use http::{Request, StatusCode};
use tower::ServiceBuilder;
use tower_api_guard::auth::AuthLayer;

use common::calls::{self, Bearer};
use common::events::Captured;

#[tokio::test]
async fn events_carry_reasons_but_never_tokens() {
    let (captured, _guard) = Captured::install(tracing::Level::DEBUG);

    let (issuer, jwt) = common::jwt::issuer_and_jwt("api");
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt))
        .service_fn(calls::ok::<()>);
    let call = |token: Option<String>| {
        let req = Request::builder().maybe_bearer(token.as_deref());
        let svc = svc.clone();
        async move { calls::call(&svc, req.body(()).unwrap()).await.status() }
    };

    let good = issuer.token().subject("alice").audience("api").mint();
    assert_eq!(call(Some(good.clone())).await, StatusCode::OK);
    let log = captured.take();
    assert!(log.contains("request authenticated"), "{log}");
    assert!(log.contains("alice"));
    assert!(!log.contains(&good));

    let wrong_aud = issuer.token().subject("bob").audience("other").mint();
    assert_eq!(
        call(Some(wrong_aud.clone())).await,
        StatusCode::UNAUTHORIZED
    );
    let log = captured.take();
    assert!(
        log.contains("request rejected") && log.contains("aud does not match"),
        "{log}"
    );
    for part in wrong_aud.split('.') {
        assert!(
            !log.contains(part),
            "a token segment reached the log: {log}"
        );
    }

    let mut forged = good.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(call(Some(forged.clone())).await, StatusCode::UNAUTHORIZED);
    let log = captured.take();
    assert!(log.contains("signature does not verify"), "{log}");
    assert!(!log.contains(forged.rsplit('.').next().unwrap()));

    assert_eq!(call(None).await, StatusCode::UNAUTHORIZED);
    let log = captured.take();
    assert!(
        log.contains("request rejected") && log.contains("MissingCredentials"),
        "{log}"
    );
}

/// A refused DPoP proof logs its reason (target `tower_api_guard::auth`), never the proof
/// or the token. (Here rather than in tests/dpop.rs: a thread-local subscriber in a binary
/// whose other tests log from other threads can miss events.)
#[tokio::test]
async fn a_refused_dpop_proof_logs_its_reason_and_not_the_proof() {
    use tower::ServiceExt;
    use tower_api_guard::jwt::{Algorithm, DpopConfig, DpopMode, ExternalOrigin};

    let (captured, _guard) = Captured::install(tracing::Level::DEBUG);
    let (clock, issuer) = common::jwt::clocked_issuer();
    let origin = ExternalOrigin::parse("https://api.example.com").unwrap();
    let jwt = common::jwt::trusting(&issuer, "api")
        .clock(clock)
        .dpop(DpopConfig::new(DpopMode::Allowed).external_origin(origin))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt))
        .service_fn(calls::ok::<()>);
    let client = issuer.dpop_key(Algorithm::ES256);
    let token = issuer.token().audience("api").dpop_bound(&client).mint();
    let proof = client
        .proof("POST", "https://api.example.com/items")
        .access_token(&token)
        .mint();
    let request = Request::get("/items")
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", &proof)
        .body(())
        .unwrap();
    let response = svc.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let log = captured.take();
    assert!(
        log.contains("htm does not match the request method"),
        "{log}"
    );
    assert!(
        log.contains("invalid_dpop_proof") || log.contains("InvalidDpopProof"),
        "{log}"
    );
    let signature = proof.rsplit_once('.').unwrap().1;
    assert!(
        !log.contains(signature) && !log.contains(&token[..40]),
        "{log}"
    );
}
