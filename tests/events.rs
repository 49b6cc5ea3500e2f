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
