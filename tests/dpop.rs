//! DPoP (RFC 9449) and certificate-bound tokens (RFC 8705) through the full layer: every
//! check accepted and refused, binding rules, nonces, errors and what is logged. Rows 31 to
//! 35 of docs/security-cases.md.

mod common;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use serde_json::json;
use tower::ServiceExt;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::jwt::{
    Algorithm, DpopConfig, DpopMode, DpopNonces, ExternalOrigin, JwtAuthenticator,
};
use tower_api_guard::testing::{DpopKey, TestIssuer};
use tower_api_guard::{AuthErrorKind, ClientCertificate, Identity};

use common::calls::{body_text, challenge, error_kind};
use common::jwt::{AUD, clocked_issuer, trusting};

const ORIGIN: &str = "https://api.example.com";
const URL: &str = "https://api.example.com/items";

struct Setup {
    clock: Arc<ManualClock>,
    issuer: TestIssuer,
    client: DpopKey,
    layer: AuthLayer<JwtAuthenticator>,
}

fn config(mode: DpopMode) -> DpopConfig {
    DpopConfig::new(mode).external_origin(ExternalOrigin::parse(ORIGIN).unwrap())
}

fn setup_with(config: Option<DpopConfig>) -> Setup {
    let (clock, issuer) = clocked_issuer();
    let mut jwt = trusting(&issuer, AUD).clock(clock.clone());
    if let Some(config) = config {
        jwt = jwt.dpop(config);
    }
    let client = issuer.dpop_key(Algorithm::ES256);
    Setup {
        clock,
        issuer,
        client,
        layer: AuthLayer::new(jwt.build().unwrap()),
    }
}

fn setup(mode: DpopMode) -> Setup {
    setup_with(Some(config(mode)))
}

impl Setup {
    fn bound_token(&self) -> String {
        self.issuer
            .token()
            .subject("alice")
            .audience(AUD)
            .dpop_bound(&self.client)
            .mint()
    }

    fn plain_token(&self) -> String {
        self.issuer.token().subject("bob").audience(AUD).mint()
    }

    fn proof(&self, token: &str) -> String {
        self.client.proof("GET", URL).access_token(token).mint()
    }

    async fn send(&self, request: Request<()>) -> Response<String> {
        let svc = tower_layer::Layer::layer(
            &self.layer,
            tower::service_fn(|req: Request<()>| async move {
                let who = req
                    .extensions()
                    .get::<Identity>()
                    .map(|i| i.subject().to_owned())
                    .unwrap_or_default();
                Ok::<_, std::convert::Infallible>(Response::new(who))
            }),
        );
        let response = svc.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body_text(Response::new(body)).await;
        Response::from_parts(parts, body)
    }

    /// `GET /items` with `Authorization: DPoP <token>` and the proofs given.
    async fn dpop(&self, token: &str, proofs: &[&str]) -> Response<String> {
        let mut request = Request::get("/items").header("authorization", format!("DPoP {token}"));
        for proof in proofs {
            request = request.header("dpop", *proof);
        }
        self.send(request.body(()).unwrap()).await
    }

    async fn bearer(&self, token: &str) -> Response<String> {
        let request = Request::get("/items")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        self.send(request).await
    }
}

fn challenges(response: &Response<String>) -> Vec<String> {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Asserts an `invalid_dpop_proof` rejection, with its challenge.
fn assert_bad_proof(response: &Response<String>, what: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(
        error_kind(response),
        Some(AuthErrorKind::InvalidDpopProof),
        "{what}"
    );
    let dpop = challenges(response)
        .into_iter()
        .find(|c| c.starts_with("DPoP "))
        .unwrap_or_else(|| panic!("{what}: no DPoP challenge"));
    assert!(
        dpop.contains(r#"error="invalid_dpop_proof""#),
        "{what}: {dpop}"
    );
    assert!(dpop.contains(r#"algs="RS256"#), "{what}: {dpop}");
}

#[tokio::test]
async fn a_bound_token_with_its_proof_passes_and_the_same_proof_twice_does_not() {
    let s = setup(DpopMode::Allowed);
    let token = s.bound_token();
    let proof = s.proof(&token);
    let ok = s.dpop(&token, &[&proof]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body(), "alice");
    // A second proof for the same token (now a cache hit) passes too.
    let again = s.dpop(&token, &[&s.proof(&token)]).await;
    assert_eq!(again.status(), StatusCode::OK);
    // The first proof replayed.
    assert_bad_proof(&s.dpop(&token, &[&proof]).await, "replayed jti");
}

#[tokio::test]
async fn every_algorithm_of_the_allow_list_makes_proofs() {
    let s = setup(DpopMode::Allowed);
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        let client = s.issuer.dpop_key(alg);
        let token = s.issuer.token().audience(AUD).dpop_bound(&client).mint();
        let proof = client.proof("GET", URL).access_token(&token).mint();
        assert_eq!(
            s.dpop(&token, &[&proof]).await.status(),
            StatusCode::OK,
            "{alg}"
        );
    }
}

#[tokio::test]
async fn a_proof_for_another_request_is_refused() {
    let s = setup(DpopMode::Allowed);
    let token = s.bound_token();
    let cases = [
        ("POST", URL, "htm"),
        ("get", URL, "htm case"),
        ("GET", "https://api.example.com/other", "path"),
        ("GET", "https://api.example.com:8443/items", "port"),
        ("GET", "http://api.example.com/items", "scheme"),
        ("GET", "https://evil.example.com/items", "host"),
        ("GET", "https://api.example.com/items?page=2", "query"),
        ("GET", "https://api.example.com/items#top", "fragment"),
    ];
    for (method, url, what) in cases {
        let proof = s.client.proof(method, url).access_token(&token).mint();
        assert_bad_proof(&s.dpop(&token, &[&proof]).await, what);
    }
}

#[tokio::test]
async fn iat_must_lie_inside_the_window() {
    let s = setup(DpopMode::Allowed);
    let token = s
        .issuer
        .token()
        .audience(AUD)
        .dpop_bound(&s.client)
        .expires_in(Duration::from_secs(3600))
        .mint();
    for offset in [-61, 61, -100_000] {
        let proof = s
            .client
            .proof("GET", URL)
            .access_token(&token)
            .issued_at_offset(offset)
            .mint();
        assert_bad_proof(&s.dpop(&token, &[&proof]).await, &format!("iat {offset}"));
    }
    for offset in [-59, 59] {
        let proof = s
            .client
            .proof("GET", URL)
            .access_token(&token)
            .issued_at_offset(offset)
            .mint();
        assert_eq!(s.dpop(&token, &[&proof]).await.status(), StatusCode::OK);
    }
    // The window follows the authenticator's clock.
    let proof = s.proof(&token);
    s.clock.advance(Duration::from_secs(61));
    assert_bad_proof(&s.dpop(&token, &[&proof]).await, "clock moved on");
}

#[tokio::test]
async fn ath_and_jkt_must_name_this_token_and_this_key() {
    let s = setup(DpopMode::Allowed);
    let token = s.bound_token();
    let other_token = s
        .issuer
        .token()
        .subject("carol")
        .audience(AUD)
        .dpop_bound(&s.client)
        .mint();
    assert_ne!(token, other_token);
    let wrong_ath = s.client.proof("GET", URL).access_token(&other_token).mint();
    assert_bad_proof(&s.dpop(&token, &[&wrong_ath]).await, "ath of another token");
    let no_ath = s.client.proof("GET", URL).mint();
    assert_bad_proof(&s.dpop(&token, &[&no_ath]).await, "no ath");
    // A proof from another key for a token bound to the first.
    let thief = s.issuer.dpop_key(Algorithm::ES256);
    let stolen = thief.proof("GET", URL).access_token(&token).mint();
    assert_bad_proof(&s.dpop(&token, &[&stolen]).await, "jkt of another key");
}

#[tokio::test]
async fn hostile_proof_headers_are_refused() {
    let s = setup(DpopMode::Allowed);
    let token = s.bound_token();
    let base = || s.client.proof("GET", URL).access_token(&token);
    let mut private = s.client.public_jwk();
    private["d"] = json!("AAAA");
    let cases = [
        (base().header("typ", json!("JWT")).mint(), "typ JWT"),
        (base().without_header("typ").mint(), "no typ"),
        (base().header("typ", json!("DPOP+JWT")).mint(), "typ case"),
        (base().header("jwk", private).mint(), "private jwk"),
        (base().without_header("jwk").mint(), "no jwk"),
        (
            base().header("jwk", json!("not an object")).mint(),
            "jwk string",
        ),
        (
            base()
                .header("jwk", json!({"kty": "oct", "k": "AAAA"}))
                .mint(),
            "symmetric jwk",
        ),
        (base().header("alg", json!("HS256")).mint(), "HS256"),
        (base().header("alg", json!("none")).mint(), "alg none"),
        (base().header("alg", json!("ES384")).mint(), "alg mismatch"),
        (base().header("crit", json!(["x"])).mint(), "crit"),
        (base().without_claim("jti").mint(), "no jti"),
        (base().jti("").mint(), "empty jti"),
        (base().without_claim("htm").mint(), "no htm"),
        (base().claim("iat", json!("now")).mint(), "iat string"),
        ("not.a.jws".to_owned(), "garbage"),
        ("a".repeat(9000), "over the cap"),
    ];
    for (proof, what) in cases {
        assert_bad_proof(&s.dpop(&token, &[&proof]).await, what);
    }
    // An unsigned proof: the signature segment removed.
    let proof = base().mint();
    let unsigned = format!("{}.", proof.rsplit_once('.').unwrap().0);
    assert_bad_proof(&s.dpop(&token, &[&unsigned]).await, "no signature");
    // A signature by another key under this jwk.
    let other = s.issuer.dpop_key(Algorithm::ES256).proof("GET", URL).mint();
    let forged = format!(
        "{}.{}",
        proof.rsplit_once('.').unwrap().0,
        other.rsplit_once('.').unwrap().1
    );
    assert_bad_proof(&s.dpop(&token, &[&forged]).await, "signature");
}

#[tokio::test]
async fn a_proof_signed_with_the_issuers_own_key_is_refused() {
    let s = setup(DpopMode::Allowed);
    let issuer_key = s.issuer.issuer_key_as_dpop_key(Algorithm::ES256);
    let token = s
        .issuer
        .token()
        .audience(AUD)
        .dpop_bound(&issuer_key)
        .mint();
    let proof = issuer_key.proof("GET", URL).access_token(&token).mint();
    assert_bad_proof(&s.dpop(&token, &[&proof]).await, "issuer key");
}

#[tokio::test]
async fn the_dpop_header_must_be_there_once() {
    let s = setup(DpopMode::Allowed);
    let token = s.bound_token();
    assert_bad_proof(&s.dpop(&token, &[]).await, "no DPoP header");
    let two = s.dpop(&token, &[&s.proof(&token), &s.proof(&token)]).await;
    assert_eq!(two.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(&two), Some(AuthErrorKind::InvalidRequest));
}

#[tokio::test]
async fn binding_rules_allow_no_downgrade() {
    let s = setup(DpopMode::Allowed);
    // A bound token as Bearer, also once it is in the verified-token cache (after a valid
    // DPoP use) — the bearer hot path must not let it through.
    let token = s.bound_token();
    assert_eq!(
        s.dpop(&token, &[&s.proof(&token)]).await.status(),
        StatusCode::OK
    );
    for _ in 0..2 {
        assert_eq!(s.bearer(&token).await.status(), StatusCode::UNAUTHORIZED);
    }
    let bound = s.bearer(&s.bound_token()).await;
    assert_eq!(bound.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_kind(&bound), Some(AuthErrorKind::InvalidToken));
    let all = challenges(&bound);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[0].starts_with(r#"Bearer realm="api", error="invalid_token""#));
    assert!(all[1].starts_with(r#"DPoP realm="api", algs=""#) && !all[1].contains("error"));
    // An unbound token with the DPoP scheme.
    let plain = s.plain_token();
    let response = s.dpop(&plain, &[&s.proof(&plain)]).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenges(&response)[1].contains(r#"error="invalid_token""#));
    // Allowed: an unbound bearer token still passes.
    assert_eq!(s.bearer(&plain).await.status(), StatusCode::OK);
    // A cnf with a method that cannot be checked here.
    let odd = s
        .issuer
        .token()
        .audience(AUD)
        .claim("cnf", json!({"jwk": {"kty": "EC"}}))
        .mint();
    assert_eq!(s.bearer(&odd).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn required_mode_refuses_bearer_tokens() {
    let s = setup(DpopMode::Required);
    let response = s.bearer(&s.plain_token()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let all = challenges(&response);
    assert_eq!(
        all.len(),
        1,
        "no Bearer challenge when DPoP is required: {all:?}"
    );
    assert!(all[0].starts_with("DPoP ") && all[0].contains(r#"error="invalid_token""#));
    let token = s.bound_token();
    assert_eq!(
        s.dpop(&token, &[&s.proof(&token)]).await.status(),
        StatusCode::OK
    );
    // No credential at all: the challenge advertises DPoP only.
    let none = s.send(Request::get("/items").body(()).unwrap()).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenges(&none),
        vec![format!(r#"DPoP realm="api", algs="{}""#, algs())]
    );
}

fn algs() -> String {
    Algorithm::ASYMMETRIC.map(Algorithm::as_str).join(" ")
}

#[tokio::test]
async fn without_dpop_the_scheme_is_not_a_credential_and_bound_tokens_fail() {
    for config in [None, Some(config(DpopMode::Off))] {
        let s = setup_with(config);
        let token = s.bound_token();
        let response = s.dpop(&token, &[&s.proof(&token)]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            error_kind(&response),
            Some(AuthErrorKind::MissingCredentials)
        );
        assert_eq!(challenge(&response), r#"Bearer realm="api""#);
        assert_eq!(s.bearer(&token).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(s.bearer(&s.plain_token()).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_request_without_credentials_hears_of_both_schemes() {
    let s = setup(DpopMode::Allowed);
    let response = s.send(Request::get("/items").body(()).unwrap()).await;
    assert_eq!(
        challenges(&response),
        vec![
            r#"Bearer realm="api""#.to_owned(),
            format!(r#"DPoP realm="api", algs="{}""#, algs())
        ]
    );
}

#[tokio::test]
async fn server_nonces_are_required_sent_and_rotated() {
    let nonces = DpopNonces::with_secret(&[9; 32])
        .unwrap()
        .rotate_every(Duration::from_secs(60))
        .unwrap();
    let s = setup_with(Some(config(DpopMode::Allowed).nonces(nonces)));
    let token = s
        .issuer
        .token()
        .audience(AUD)
        .dpop_bound(&s.client)
        .expires_in(Duration::from_secs(3600))
        .mint();
    // No nonce: use_dpop_nonce, with the nonce to use.
    let first = s.dpop(&token, &[&s.proof(&token)]).await;
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_kind(&first), Some(AuthErrorKind::UseDpopNonce));
    assert!(challenges(&first)[1].contains(r#"error="use_dpop_nonce""#));
    let nonce = first.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    // With it: 200, and the response carries the current nonce.
    let proof = s
        .client
        .proof("GET", URL)
        .access_token(&token)
        .nonce(&nonce)
        .mint();
    let ok = s.dpop(&token, &[&proof]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["dpop-nonce"], nonce.as_str());
    // A made-up nonce.
    let proof = s
        .client
        .proof("GET", URL)
        .access_token(&token)
        .nonce("made-up")
        .mint();
    assert_eq!(
        error_kind(&s.dpop(&token, &[&proof]).await),
        Some(AuthErrorKind::UseDpopNonce)
    );
    // One period later a new nonce is current and the old one still passes.
    s.clock.advance(Duration::from_secs(60));
    let proof = s
        .client
        .proof("GET", URL)
        .access_token(&token)
        .nonce(&nonce)
        .mint();
    let later = s.dpop(&token, &[&proof]).await;
    assert_eq!(later.status(), StatusCode::OK);
    assert_ne!(later.headers()["dpop-nonce"], nonce.as_str(), "rotated");
    // Two periods later it is stale.
    s.clock.advance(Duration::from_secs(60));
    let proof = s
        .client
        .proof("GET", URL)
        .access_token(&token)
        .nonce(&nonce)
        .mint();
    let stale = s.dpop(&token, &[&proof]).await;
    assert_eq!(error_kind(&stale), Some(AuthErrorKind::UseDpopNonce));
    assert_ne!(stale.headers()["dpop-nonce"], nonce.as_str());
    // Bearer requests need no nonce, and also learn the current one.
    let plain = s.issuer.token().audience(AUD).mint();
    let bearer = s.bearer(&plain).await;
    assert_eq!(bearer.status(), StatusCode::OK);
    assert!(bearer.headers().contains_key("dpop-nonce"));
}

#[tokio::test]
async fn grpc_requests_get_unauthenticated() {
    let s = setup(DpopMode::Allowed);
    let token = s.bound_token();
    let request = Request::post("/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", "not.a.proof")
        .body(())
        .unwrap();
    let response = s.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");
}

#[tokio::test]
async fn a_certificate_bound_token_needs_its_certificate() {
    let s = setup_with(None);
    let cert = ClientCertificate::from_der(b"client certificate DER".to_vec());
    let other = ClientCertificate::from_der(b"another certificate".to_vec());
    let token = s
        .issuer
        .token()
        .subject("svc")
        .audience(AUD)
        .certificate_bound(cert.x5t_s256())
        .mint();
    let with = |c: Option<&ClientCertificate>| {
        let mut request = Request::get("/items")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        if let Some(c) = c {
            request.extensions_mut().insert(c.clone());
        }
        request
    };
    let ok = s.send(with(Some(&cert))).await;
    assert_eq!((ok.status(), ok.body().as_str()), (StatusCode::OK, "svc"));
    // Twice: the second is a verified-token cache hit, checked the same way.
    assert_eq!(s.send(with(Some(&cert))).await.status(), StatusCode::OK);
    for c in [None, Some(&other)] {
        let response = s.send(with(c)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_kind(&response), Some(AuthErrorKind::InvalidToken));
    }
    // An unbound token does not care about the certificate.
    let plain = s.issuer.token().audience(AUD).mint();
    let mut request = Request::get("/")
        .header("authorization", format!("Bearer {plain}"))
        .body(())
        .unwrap();
    request.extensions_mut().insert(other.clone());
    assert_eq!(s.send(request).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn verify_request_checks_like_the_layer() {
    let s = setup(DpopMode::Allowed);
    let jwt = s.layer.authenticator();
    let token = s.bound_token();
    let request = Request::get("/items")
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", s.proof(&token))
        .body(())
        .unwrap();
    let head = tower_api_guard::RequestHead::of(&request);
    assert_eq!(jwt.verify_request(&head).await.unwrap().subject(), "alice");
    assert_eq!(
        jwt.verify_request(&head).await.unwrap_err().kind(),
        AuthErrorKind::InvalidDpopProof,
        "replayed"
    );
    assert!(
        jwt.verify(&token).await.is_err(),
        "bound token without a proof"
    );
}

#[test]
fn bad_settings_are_refused_at_build_time() {
    let issuer = TestIssuer::new(common::jwt::ISS);
    let build = |config: DpopConfig| trusting(&issuer, AUD).dpop(config).build();
    assert!(
        build(DpopConfig::new(DpopMode::Allowed)).is_err(),
        "no origin"
    );
    assert!(build(config(DpopMode::Allowed).algorithms([Algorithm::HS256])).is_err());
    assert!(build(config(DpopMode::Allowed).algorithms([])).is_err());
    assert!(build(config(DpopMode::Allowed).window(Duration::ZERO)).is_err());
    assert!(build(config(DpopMode::Allowed).window(Duration::from_secs(301))).is_err());
    assert!(
        build(DpopConfig::new(DpopMode::Off)).is_ok(),
        "off needs no origin"
    );
    assert!(build(config(DpopMode::Required)).is_ok());
    for bad in [
        "ftp://x",
        "https://user@x",
        "https://x/path",
        "https://x?q",
        "",
    ] {
        assert!(ExternalOrigin::parse(bad).is_err(), "{bad}");
    }
}

/// Two replicas sharing Redis: a proof accepted by one is a replay at the other.
#[tokio::test]
async fn a_proof_replayed_at_another_replica_sharing_redis_is_refused() {
    use tower_api_guard::jwt::RedisReplayCache;
    let Ok(url) = std::env::var("REDIS_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must set REDIS_URL");
        eprintln!("skipping: REDIS_URL not set");
        return;
    };
    let replica = |issuer: &TestIssuer, clock: Arc<ManualClock>, cache: RedisReplayCache| {
        let jwt = trusting(issuer, AUD)
            .clock(clock)
            .dpop(config(DpopMode::Allowed).replay_cache(cache))
            .build()
            .unwrap();
        AuthLayer::new(jwt)
    };
    let mut a = setup(DpopMode::Allowed);
    let prefix = format!("test:dpop:{}:", std::process::id());
    let cache = || async {
        RedisReplayCache::connect(&url)
            .await
            .unwrap()
            .prefix(&prefix)
    };
    a.layer = replica(&a.issuer, a.clock.clone(), cache().await);
    let b = Setup {
        clock: a.clock.clone(),
        issuer: a.issuer.clone(),
        client: a.client.clone(),
        layer: replica(&a.issuer, a.clock.clone(), cache().await),
    };
    let token = a.bound_token();
    let proof = a.proof(&token);
    assert_eq!(a.dpop(&token, &[&proof]).await.status(), StatusCode::OK);
    assert_bad_proof(&b.dpop(&token, &[&proof]).await, "replayed at replica b");
    assert_eq!(
        b.dpop(&token, &[&b.proof(&token)]).await.status(),
        StatusCode::OK
    );
}

/// A replay cache that cannot answer: closed (the default) answers 503, open lets the
/// proof through.
#[tokio::test]
async fn a_failing_replay_cache_follows_the_failure_policy() {
    use tower_api_guard::FailurePolicy;
    use tower_api_guard::jwt::{ReplayAnswer, ReplayCache, ReplayError};

    #[derive(Debug)]
    struct Broken;
    impl ReplayCache for Broken {
        fn insert(&self, _key: &[u8; 32], _ttl: Duration) -> ReplayAnswer {
            ReplayAnswer::Wait(Box::pin(async { Err(ReplayError::new("down")) }))
        }
    }
    for (policy, status) in [
        (None, StatusCode::SERVICE_UNAVAILABLE),
        (Some(FailurePolicy::Closed), StatusCode::SERVICE_UNAVAILABLE),
        (Some(FailurePolicy::Open), StatusCode::OK),
    ] {
        let mut dpop = config(DpopMode::Allowed).replay_cache(Broken);
        if let Some(policy) = policy {
            dpop = dpop.replay_failure_policy(policy);
        }
        let s = setup_with(Some(dpop));
        let token = s.bound_token();
        let response = s.dpop(&token, &[&s.proof(&token)]).await;
        assert_eq!(response.status(), status, "{policy:?}");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One issuer and layer for every case (making an issuer generates an RSA key).
    static SETUP: std::sync::LazyLock<Setup> =
        std::sync::LazyLock::new(|| setup(DpopMode::Allowed));

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any change to one byte of a valid proof makes it fail; nothing panics.
        #[test]
        fn a_proof_changed_anywhere_is_refused(at in any::<prop::sample::Index>(), to in any::<u8>()) {
            let s = &*SETUP;
            let token = s.bound_token();
            let proof = s.proof(&token);
            let mut bytes = proof.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != to);
            bytes[i] = to;
            // Only bytes a header value can carry reach the layer.
            prop_assume!(http::HeaderValue::from_bytes(&bytes).is_ok());
            let changed = String::from_utf8_lossy(&bytes).into_owned();
            let response = block_on(s.dpop(&token, &[&changed]));
            prop_assert!(
                matches!(response.status(), StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST),
                "{} at {i}", response.status()
            );
            // The untouched proof still passes afterwards (the bad one burnt nothing).
            prop_assert_eq!(block_on(s.dpop(&token, &[&proof])).status(), StatusCode::OK);
        }

        /// Arbitrary header text is refused with 401 or 400, never a panic or a 500.
        #[test]
        fn arbitrary_proof_text_is_refused(text in "[ -~]{0,300}") {
            let s = &*SETUP;
            let token = s.bound_token();
            let response = block_on(s.dpop(&token, &[&text]));
            prop_assert!(matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST
            ));
        }
    }
}

/// `htu` is compared after RFC 3986 normalisation, against the configured origin or the one
/// a trusted proxy forwards, never the `Host` header (row 36 of docs/security-cases.md).
#[tokio::test]
async fn htu_origin_comes_from_configuration_or_trusted_proxies_only() {
    let proxies = tower_api_guard::ClientAddr::new()
        .trusted_proxies(["10.0.0.0/8"])
        .unwrap();
    let s = setup_with(Some(config(DpopMode::Allowed).trusted_proxies(proxies)));
    let token = s.bound_token();
    let send = |url: &str, peer: &str, headers: &[(&str, &str)]| {
        let proof = s.client.proof("GET", url).access_token(&token).mint();
        let mut request = Request::get("/items")
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(()).unwrap();
        request
            .extensions_mut()
            .insert(peer.parse::<std::net::SocketAddr>().unwrap());
        s.send(request)
    };
    // Normalised: scheme and host case, default port.
    let ok = send("HTTPS://API.Example.COM:443/items", "192.0.2.1:1", &[]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    // The Host header is never believed.
    let host = send(
        "https://evil.example/items",
        "192.0.2.1:1",
        &[("host", "evil.example")],
    );
    assert_bad_proof(&host.await, "Host header");
    // Forwarded origin: believed from a trusted proxy only.
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "edge.example:8443"),
    ];
    let url = "https://edge.example:8443/items";
    assert_eq!(
        send(url, "10.0.0.7:1", &forwarded).await.status(),
        StatusCode::OK
    );
    assert_bad_proof(
        &send(url, "192.0.2.1:1", &forwarded).await,
        "untrusted peer",
    );
    let rfc7239 = [(
        "forwarded",
        "for=192.0.2.9;proto=https;host=edge.example:8443",
    )];
    assert_eq!(
        send(url, "10.0.0.7:1", &rfc7239).await.status(),
        StatusCode::OK
    );
}
