//! Revocation: by `jti` and by subject, cache hits included, failure policies, and Redis
//! shared between two authenticators (with `REDIS_URL`).
#![cfg(all(feature = "jwt", feature = "testing"))]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_api_guard::clock::{Clock, ManualClock};
use tower_api_guard::jwt::{
    JwtAuthenticator, MemoryRevocations, RevocationError, RevocationFuture, RevocationStore,
    TokenFacts,
};
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{AuthErrorKind, FailurePolicy};

use common::jwt::{ISS, clocked_issuer as setup, trusting};

fn jwt(
    issuer: &TestIssuer,
    clock: &Arc<ManualClock>,
    store: impl RevocationStore,
) -> JwtAuthenticator {
    trusting(issuer, "api")
        .clock(clock.clone())
        .revocation(store)
        .build()
        .unwrap()
}

#[tokio::test]
async fn revoking_a_jti_rejects_that_token_even_from_the_cache() {
    let (clock, issuer) = setup();
    let store = MemoryRevocations::new().clock(clock.clone());
    let jwt = jwt(&issuer, &clock, store.clone());
    let t1 = issuer
        .token()
        .audience("api")
        .claim("jti", "t1".into())
        .mint();
    let t2 = issuer
        .token()
        .audience("api")
        .claim("jti", "t2".into())
        .mint();
    jwt.verify(&t1).await.unwrap();
    jwt.verify(&t1).await.unwrap(); // cached now
    store
        .revoke_token("t1", clock.now() + Duration::from_secs(300))
        .await
        .unwrap();
    let err = jwt.verify(&t1).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.reason()),
        (AuthErrorKind::InvalidToken, "token revoked")
    );
    assert!(jwt.verify(&t2).await.is_ok(), "other tokens are unaffected");
}

#[tokio::test]
async fn revoking_a_subject_rejects_its_older_tokens_only() {
    let (clock, issuer) = setup();
    let store = MemoryRevocations::new().clock(clock.clone());
    let jwt = jwt(&issuer, &clock, store.clone());
    let old = issuer.token().audience("api").subject("alice").mint();
    let bob = issuer.token().audience("api").subject("bob").mint();
    let no_iat = issuer
        .token()
        .audience("api")
        .subject("alice")
        .without_claim("iat")
        .mint();
    clock.advance(Duration::from_secs(10));
    store.revoke_subject("alice", clock.now()).await.unwrap();
    assert_eq!(
        jwt.verify(&old).await.unwrap_err().reason(),
        "token revoked"
    );
    assert_eq!(
        jwt.verify(&no_iat).await.unwrap_err().reason(),
        "token revoked"
    );
    assert!(jwt.verify(&bob).await.is_ok());
    // A token issued after the revocation instant is fine.
    let fresh = TestIssuer::new(ISS).clock(clock.clone());
    let jwt2 = trusting(&fresh, "api")
        .clock(clock.clone())
        .revocation(store.clone())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let new = fresh.token().audience("api").subject("alice").mint();
    assert!(jwt2.verify(&new).await.is_ok());
    // An earlier instant never undoes a later one.
    store.revoke_subject("alice", UNIX_EPOCH).await.unwrap();
    assert!(jwt.verify(&old).await.is_err());
}

#[tokio::test]
async fn revocations_expire_with_the_tokens() {
    let (clock, issuer) = setup();
    let store = MemoryRevocations::new().clock(clock.clone());
    let facts = TokenFacts {
        jti: Some("j"),
        subject: "s",
        issued_at: Some(clock.now()),
    };
    store
        .revoke_token("j", clock.now() + Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store.is_revoked(&facts).await.unwrap());
    clock.advance(Duration::from_secs(61));
    assert!(!store.is_revoked(&facts).await.unwrap());
    let _ = issuer;
}

#[derive(Debug)]
struct Broken;

impl RevocationStore for Broken {
    fn is_revoked(&self, _: &TokenFacts<'_>) -> RevocationFuture<bool> {
        Box::pin(async { Err(RevocationError::new("down")) })
    }
    fn revoke_token(&self, _: &str, _: SystemTime) -> RevocationFuture<()> {
        Box::pin(async { Err(RevocationError::new("down")) })
    }
    fn revoke_subject(&self, _: &str, _: SystemTime) -> RevocationFuture<()> {
        Box::pin(async { Err(RevocationError::new("down")) })
    }
}

#[tokio::test]
async fn a_failing_store_follows_the_policy() {
    let (clock, issuer) = setup();
    let t = issuer.token().audience("api").mint();
    let closed = jwt(&issuer, &clock, Broken);
    let err = closed.verify(&t).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);
    let open = trusting(&issuer, "api")
        .clock(clock.clone())
        .revocation_failure_policy(FailurePolicy::Open)
        .revocation(Broken)
        .build()
        .unwrap();
    assert!(open.verify(&t).await.is_ok());
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_revocations_are_shared_between_instances() {
    use tower_api_guard::jwt::RedisRevocations;
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("skipped: REDIS_URL is not set (CI sets it; `.ci/run` starts Redis)");
        return;
    };
    let (clock, issuer) = setup();
    let prefix = format!(
        "tag-test:{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let a = RedisRevocations::connect(&url)
        .await
        .unwrap()
        .prefix(&prefix)
        .clock(clock.clone());
    let b = RedisRevocations::connect(&url)
        .await
        .unwrap()
        .prefix(&prefix)
        .clock(clock.clone());
    let jwt_a = jwt(&issuer, &clock, a.clone());
    let jwt_b = jwt(&issuer, &clock, b.clone());
    let t = issuer
        .token()
        .audience("api")
        .subject("carol")
        .claim("jti", "r1".into())
        .mint();
    assert!(jwt_a.verify(&t).await.is_ok());
    assert!(jwt_b.verify(&t).await.is_ok());

    // Revoked through instance A, seen by instance B at once.
    a.revoke_token("r1", clock.now() + Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(
        jwt_b.verify(&t).await.unwrap_err().reason(),
        "token revoked"
    );

    // Subject revocation through B, seen by A.
    let other = issuer.token().audience("api").subject("dave").mint();
    assert!(jwt_a.verify(&other).await.is_ok());
    clock.advance(Duration::from_secs(5));
    b.revoke_subject("dave", clock.now()).await.unwrap();
    assert_eq!(
        jwt_a.verify(&other).await.unwrap_err().reason(),
        "token revoked"
    );
    // An earlier instant never undoes it.
    a.revoke_subject("dave", UNIX_EPOCH + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(jwt_b.verify(&other).await.is_err());
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn unreachable_redis_is_a_configuration_error() {
    use tower_api_guard::jwt::RedisRevocations;
    assert!(
        RedisRevocations::connect("redis://127.0.0.1:1")
            .await
            .is_err()
    );
    assert!(RedisRevocations::connect("not a url").await.is_err());
}

/// Through the layer, a cache hit with a revocation store configured still waits for the
/// store: a revoked token is refused on its next request.
#[tokio::test]
async fn through_the_layer_a_cached_token_is_still_checked_for_revocation() {
    use http::{Request, Response, StatusCode};
    use tower::{ServiceBuilder, ServiceExt};
    use tower_api_guard::auth::AuthLayer;

    let (clock, issuer) = setup();
    let store = MemoryRevocations::new().clock(clock.clone());
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt(&issuer, &clock, store.clone())))
        .service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(()))
        });
    let token = issuer
        .token()
        .audience("api")
        .claim("jti", "t1".into())
        .mint();
    let call = || {
        use common::calls::Bearer;
        let request = Request::builder().bearer(&token).body(()).unwrap();
        svc.clone().oneshot(request)
    };
    assert_eq!(call().await.unwrap().status(), StatusCode::OK);
    assert_eq!(call().await.unwrap().status(), StatusCode::OK); // cached now
    store
        .revoke_token("t1", clock.now() + Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(call().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
