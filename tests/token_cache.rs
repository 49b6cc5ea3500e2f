//! The verified-token cache: a hit skips the signature check, never outlives `exp`, only
//! matches byte-identical tokens, and is bounded.
#![cfg(all(feature = "jwt", feature = "testing"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use tower_api_guard::clock::ManualClock;
use tower_api_guard::jwt::{Algorithm, JwtAuthenticator};
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{AuthErrorKind, Identity};

use common::jwt::{clocked_issuer, trusting};

fn setup(capacity: u64) -> (Arc<ManualClock>, TestIssuer, JwtAuthenticator) {
    let (clock, issuer) = clocked_issuer();
    let jwt = trusting(&issuer, "api")
        .clock(clock.clone())
        .token_cache(capacity)
        .build()
        .unwrap();
    (clock, issuer, jwt)
}

/// Same cached identity: the very same allocation.
fn same(a: &Identity, b: &Identity) -> bool {
    std::ptr::eq(a.subject().as_ptr(), b.subject().as_ptr())
}

/// `token`'s signature over other claims (same trailing text, so the same cache key).
fn splice(issuer: &TestIssuer, token: &str) -> String {
    let (_, sig) = token.rsplit_once('.').unwrap();
    let other = issuer
        .token()
        .audience("api")
        .subject("mallory")
        .algorithm(Algorithm::ES256)
        .mint();
    let (other_head, _) = other.rsplit_once('.').unwrap();
    format!("{other_head}.{sig}")
}

#[tokio::test]
async fn a_hit_returns_the_cached_identity() {
    let (_, issuer, jwt) = setup(100);
    let token = issuer.token().audience("api").mint();
    let first = jwt.verify(&token).await.unwrap();
    let second = jwt.verify(&token).await.unwrap();
    assert!(
        same(&first, &second),
        "the second verification is a cache hit"
    );
    assert_eq!(jwt.cached_tokens(), 1);

    let (_, issuer, uncached) = setup(0);
    let token = issuer.token().audience("api").mint();
    let a = uncached.verify(&token).await.unwrap();
    let b = uncached.verify(&token).await.unwrap();
    assert!(!same(&a, &b), "with the cache off every call verifies");
    assert_eq!(uncached.cached_tokens(), 0);
}

#[tokio::test]
async fn an_entry_never_outlives_exp() {
    let (clock, issuer, jwt) = setup(100);
    let token = issuer
        .token()
        .audience("api")
        .expires_in(Duration::from_secs(100))
        .mint();
    jwt.verify(&token).await.unwrap();
    clock.advance(Duration::from_secs(159)); // exp + 59 s: within the 60 s leeway
    jwt.verify(&token).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let err = jwt.verify(&token).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::InvalidToken);
    assert_eq!(err.reason(), "token expired");
}

#[tokio::test]
async fn only_byte_identical_tokens_hit() {
    let (_, issuer, jwt) = setup(100);
    let token = issuer
        .token()
        .audience("api")
        .algorithm(Algorithm::ES256)
        .mint();
    let cached = jwt.verify(&token).await.unwrap();

    // Another signature over the same header and claims: full verification, which fails.
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(86));
    assert_eq!(
        jwt.verify(&forged).await.unwrap_err().reason(),
        "signature does not verify"
    );

    // A token differing only in trailing text is not the cached one.
    assert!(jwt.verify(&format!("{token}A")).await.is_err());
    assert!(jwt.verify(&token[..token.len() - 1]).await.is_err());

    // Same signature (so the same cache key) over other claims: not a hit, rejected.
    let spliced = splice(&issuer, &token);
    assert_eq!(
        jwt.verify(&spliced).await.unwrap_err().reason(),
        "signature does not verify"
    );

    // The cached token still hits.
    assert!(same(&cached, &jwt.verify(&token).await.unwrap()));
}

#[tokio::test]
async fn max_age_is_rechecked_on_a_hit() {
    let (clock, issuer) = clocked_issuer();
    let jwt = trusting(&issuer, "api")
        .clock(clock.clone())
        .max_age(Duration::from_secs(600))
        .build()
        .unwrap();
    let token = issuer
        .token()
        .audience("api")
        .expires_in(Duration::from_secs(7200))
        .mint();
    jwt.verify(&token).await.unwrap();
    clock.advance(Duration::from_secs(661));
    assert_eq!(
        jwt.verify(&token).await.unwrap_err().reason(),
        "token older than the maximum age"
    );
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let (_, issuer, jwt) = setup(50);
    for i in 0..500 {
        let t = issuer
            .token()
            .audience("api")
            .subject(format!("user-{i}"))
            .mint();
        jwt.verify(&t).await.unwrap();
    }
    assert!(jwt.cached_tokens() <= 50, "{}", jwt.cached_tokens());
}

/// Through the layer the cache is asked while the credential is read, before any copy of
/// the token: the same rules hold there.
#[tokio::test]
async fn the_layer_path_hits_and_stays_strict() {
    use common::calls::Bearer;
    use http::{Request, Response, StatusCode};
    use tower::ServiceBuilder;
    use tower_api_guard::auth::AuthLayer;

    let (clock, issuer, jwt) = setup(100);
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt.clone()))
        .service_fn(|req: Request<()>| async move {
            let mut res = Response::new(());
            if let Some(identity) = req.extensions().get::<Identity>() {
                res.extensions_mut().insert(identity.clone());
            }
            Ok::<_, std::convert::Infallible>(res)
        });
    let call = |token: String| {
        let svc = svc.clone();
        async move {
            let req = Request::builder().bearer(&token).body(()).unwrap();
            common::calls::call(&svc, req).await
        }
    };
    let token = issuer
        .token()
        .audience("api")
        .algorithm(Algorithm::ES256)
        .expires_in(Duration::from_secs(300))
        .mint();
    let identity = |res: Response<_>| res.extensions().get::<Identity>().cloned().unwrap();
    let first = identity(call(token.clone()).await);
    let second = identity(call(token.clone()).await);
    assert!(same(&first, &second), "the second request is a cache hit");

    // Same trailing signature text over other claims: not a hit.
    let spliced = call(splice(&issuer, &token)).await;
    assert_eq!(spliced.status(), StatusCode::UNAUTHORIZED);

    // A hit never outlives `exp` (plus the leeway).
    clock.advance(Duration::from_secs(300 + 61));
    assert_eq!(call(token).await.status(), StatusCode::UNAUTHORIZED);
}

/// A cached token is matched before its header is scanned again: every malformed or
/// ambiguous way of presenting the same bytes must still get the full checks.
#[tokio::test]
async fn a_cached_token_in_a_malformed_request_is_still_rejected() {
    use http::{Request, Response, StatusCode};
    use tower::{ServiceBuilder, ServiceExt};
    use tower_api_guard::auth::AuthLayer;

    let (_clock, issuer, jwt) = setup(100);
    let token = issuer.token().audience("api").mint();
    let svc =
        ServiceBuilder::new()
            .layer(AuthLayer::new(jwt))
            .service_fn(|_req: Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(String::new()))
            });
    let send = |values: Vec<String>| {
        let mut req = Request::get("/");
        for value in values {
            req = req.header("authorization", value);
        }
        svc.clone().oneshot(req.body(()).unwrap())
    };
    // Cached now.
    let ok = send(vec![format!("Bearer {token}")]).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let ok = send(vec![format!("bearer {token}")]).await.unwrap();
    assert_eq!(
        ok.status(),
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
    let ok = send(vec![format!("Bearer  {token}")]).await.unwrap();
    assert_eq!(
        ok.status(),
        StatusCode::OK,
        "RFC 6750: 1*SP after the scheme"
    );

    for (values, status) in [
        (
            vec![format!("Bearer {token}"), format!("Bearer {token}")],
            StatusCode::BAD_REQUEST,
        ),
        (vec![format!("Bearer {token} ")], StatusCode::BAD_REQUEST),
        (vec![format!("Basic {token}")], StatusCode::UNAUTHORIZED),
        (vec![format!("Bearer {token}=")], StatusCode::UNAUTHORIZED),
    ] {
        let res = send(values.clone()).await.unwrap();
        assert_eq!(res.status(), status, "{:?}", &values[0][..12]);
    }
}
