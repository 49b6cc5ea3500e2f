//! The token rows of docs/security-cases.md, each through the full tower stack:
//! `AuthLayer<JwtAuthenticator>` in front of a counting inner service.
#![cfg(all(feature = "jwt", feature = "testing"))]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::{Request, Response, StatusCode};
use serde_json::json;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::clock::ManualClock;
use tower_api_guard::jwt::{
    Algorithm, JwtAuthenticator, JwtAuthenticatorBuilder, JwtKey, StaticKeys,
};
use tower_api_guard::testing::TestIssuer;

use common::calls::{Bearer, body_text, challenge, get};
use common::jwt::{ISS, NOW, clocked_issuer, trusting};

struct Harness {
    clock: Arc<ManualClock>,
    issuer: TestIssuer,
    calls: Arc<AtomicUsize>,
}

impl Harness {
    fn new() -> Self {
        let (clock, issuer) = clocked_issuer();
        Self {
            clock,
            issuer,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn builder(&self) -> JwtAuthenticatorBuilder {
        trusting(&self.issuer, "api")
            .clock(self.clock.clone())
            .token_cache(0)
    }

    fn service(
        &self,
        jwt: JwtAuthenticator,
    ) -> impl Service<
        Request<()>,
        Response = Response<impl http_body::Body<Data = bytes::Bytes, Error = Infallible>>,
        Error = BoxError,
    > + Clone {
        let calls = self.calls.clone();
        ServiceBuilder::new()
            .layer(AuthLayer::new(jwt))
            .service_fn(move |_req: Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Ok::<_, BoxError>(Response::new(
                        http_body_util::Full::new(bytes::Bytes::new()),
                    ))
                }
            })
    }

    fn token(&self) -> tower_api_guard::testing::TokenBuilder {
        self.issuer.token().audience("api")
    }
}

struct Outcome {
    status: StatusCode,
    challenge: String,
    body: String,
}

async fn send<S, B>(svc: S, req: Request<()>) -> Outcome
where
    S: Service<Request<()>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body<Data = bytes::Bytes, Error = Infallible>,
{
    let res = svc.oneshot(req).await.unwrap();
    Outcome {
        status: res.status(),
        challenge: challenge(&res),
        body: body_text(res).await,
    }
}

/// Assert a 401 `invalid_token` that never called the inner service and never echoed the
/// token.
async fn assert_invalid(h: &Harness, jwt: JwtAuthenticator, token: &str, case: &str) {
    let before = h.calls.load(Ordering::SeqCst);
    let out = send(h.service(jwt), get(Some(token))).await;
    assert_eq!(out.status, StatusCode::UNAUTHORIZED, "{case}");
    assert!(
        out.challenge.contains(r#"error="invalid_token""#),
        "{case}: {}",
        out.challenge
    );
    for part in token.split('.').filter(|p| p.len() > 8) {
        assert!(
            !out.body.contains(part) && !out.challenge.contains(part),
            "{case}: token echoed"
        );
    }
    assert_eq!(
        h.calls.load(Ordering::SeqCst),
        before,
        "{case}: inner service called"
    );
}

async fn assert_ok(h: &Harness, jwt: JwtAuthenticator, token: &str, case: &str) {
    let out = send(h.service(jwt), get(Some(token))).await;
    assert_eq!(out.status, StatusCode::OK, "{case}");
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

fn header_of(token: &str) -> serde_json::Value {
    serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn rows_1_to_4_credentials() {
    let h = Harness::new();
    let jwt = h.builder().build().unwrap();
    let good = h.token().mint();
    // Row 1: none, or another scheme: 401 with no error code.
    for req in [
        Request::get("/").body(()).unwrap(),
        Request::get("/")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .body(())
            .unwrap(),
    ] {
        let out = send(h.service(jwt.clone()), req).await;
        assert_eq!(out.status, StatusCode::UNAUTHORIZED);
        assert_eq!(out.challenge, r#"Bearer realm="api""#);
    }
    // Row 2: ambiguous or malformed: 400 invalid_request.
    let two = Request::get("/")
        .bearer(&good)
        .bearer(&good)
        .body(())
        .unwrap();
    let mut cases = vec![two];
    for value in [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer a\"b",
        "Bearer {\"a\":1}",
    ] {
        cases.push(
            Request::get("/")
                .header("authorization", value)
                .body(())
                .unwrap(),
        );
    }
    for req in cases {
        let out = send(h.service(jwt.clone()), req).await;
        assert_eq!(out.status, StatusCode::BAD_REQUEST);
        assert!(out.challenge.contains(r#"error="invalid_request""#));
    }
    // Row 3: the query string is never read: missing.
    let out = send(
        h.service(jwt.clone()),
        Request::get(format!("/?access_token={good}"))
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(out.status, StatusCode::UNAUTHORIZED);
    assert_eq!(out.challenge, r#"Bearer realm="api""#);
    // Row 4: an oversized token is rejected by length, before decoding.
    assert_invalid(
        &h,
        jwt.clone(),
        &format!("{good}{}", "A".repeat(100 * 1024)),
        "100 KB",
    )
    .await;
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
    assert_ok(&h, jwt, &good, "control").await;
}

#[tokio::test]
async fn rows_5_to_9_form() {
    let h = Harness::new();
    let jwt = h.builder().build().unwrap();
    // A token whose signature uses both URL-safe characters, so that the standard-alphabet
    // variant differs.
    let good = (0..100)
        .map(|i| h.token().subject(format!("s{i}")).mint())
        .find(|t| {
            let sig = t.rsplit('.').next().unwrap();
            sig.contains('-') && sig.contains('_')
        })
        .unwrap();
    let (hd, rest) = good.split_once('.').unwrap();
    let (cl, sig) = rest.split_once('.').unwrap();
    let rs = |header: &str, claims: &str| h.issuer.sign_raw(Algorithm::RS256, header, claims);
    let claims = format!(
        r#"{{"iss":"{ISS}","aud":"api","sub":"s","exp":{}}}"#,
        NOW + 300
    );
    let header = r#"{"alg":"RS256","kid":"rs256"}"#;
    let mut cases: Vec<(String, &str)> = vec![
        // Row 5
        (format!("{hd}.{cl}"), "two segments"),
        (format!("{hd}.{cl}.{sig}.{sig}"), "four segments"),
        (
            format!("{hd}.{cl}.{sig}.{sig}.{sig}"),
            "JWE-like five segments",
        ),
        (format!(".{cl}.{sig}"), "empty header"),
        (format!("{hd}..{sig}"), "empty payload"),
        (format!("{hd}.{cl}."), "empty signature"),
        // Row 6: non-canonical base64url in each segment
        (format!("{hd}=.{cl}.{sig}"), "padding in header"),
        (format!("{hd}.{cl}.{sig}=="), "padding in signature"),
        (
            format!("{hd}.{cl}.{}", sig.replace('-', "+").replace('_', "/")),
            "standard alphabet",
        ),
        (format!("{}+.{cl}.{sig}", &hd[..hd.len() - 1]), "plus sign"),
        (good.replace('.', "./"), "slashes"),
        // Row 7: not an object, invalid UTF-8
        (rs("[1]", &claims), "header is an array"),
        (rs(header, "\"claims\""), "claims is a string"),
        (rs(header, "null"), "claims is null"),
        // Row 8: duplicate member names
        (
            rs(r#"{"alg":"RS256","alg":"RS256","kid":"rs256"}"#, &claims),
            "duplicate alg",
        ),
        (
            rs(
                header,
                &claims.replace(r#""sub":"s""#, r#""sub":"s","sub":"admin""#),
            ),
            "duplicate sub",
        ),
        // Row 9: nesting and huge numbers
        (
            rs(header, &format!(r#"{{"a":{}}}"#, "[".repeat(100_000))),
            "100k [",
        ),
        (
            rs(
                header,
                &claims.replace(r#""sub":"s""#, r#""sub":"s","n":1e999"#),
            ),
            "1e999",
        ),
    ];
    // Non-zero trailing bits in the signature: flip the last character's low bits.
    let last = sig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    if sig.len() % 4 != 0 {
        let flipped = alphabet.chars().nth(idx ^ 1).unwrap();
        cases.push((
            format!("{hd}.{cl}.{}{flipped}", &sig[..sig.len() - 1]),
            "trailing bits",
        ));
    }
    // Invalid UTF-8 in the claims segment, signed.
    let bad_utf8 = {
        let input = format!("{}.{}", b64(header), B64.encode(b"{\"sub\":\"\xff\"}"));
        let signed = h.issuer.sign_raw(Algorithm::RS256, header, "x");
        let sig = signed.rsplit('.').next().unwrap().to_owned();
        format!("{input}.{sig}")
    };
    cases.push((bad_utf8, "invalid UTF-8 (wrong signature too)"));
    for (token, case) in cases {
        // Some cases carry characters outside the token alphabet: 400 is right for them.
        let out = send(h.service(jwt.clone()), get(Some(&token))).await;
        assert!(
            out.status == StatusCode::UNAUTHORIZED || out.status == StatusCode::BAD_REQUEST,
            "{case}: {}",
            out.status
        );
        if out.status == StatusCode::UNAUTHORIZED {
            assert!(out.challenge.contains("invalid_token"), "{case}");
        } else {
            assert!(
                token.contains('=') || token.contains('+') || token.contains('/'),
                "{case}"
            );
        }
    }
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
    assert_ok(
        &h,
        jwt.clone(),
        &rs(header, &claims),
        "control: sign_raw token",
    )
    .await;
}

#[tokio::test]
async fn rows_10_to_14_algorithms_and_keys() {
    let h = Harness::new();
    let jwt = h.builder().build().unwrap();
    let good = h.token().mint();
    let (_, rest) = good.split_once('.').unwrap();
    let (cl, sig) = rest.split_once('.').unwrap();
    // Row 10: alg none in any case, with and without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let hd = b64(&format!(r#"{{"alg":"{alg}","kid":"rs256"}}"#));
        assert_invalid(&h, jwt.clone(), &format!("{hd}.{cl}.{sig}"), alg).await;
        assert_invalid(&h, jwt.clone(), &format!("{hd}.{cl}."), alg).await;
    }
    // Row 11: HS256 keyed with the public key's PEM or the JWKS text.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let with_hs = h
        .builder()
        .algorithms([Algorithm::RS256, Algorithm::HS256])
        .build()
        .unwrap();
    let claims = json!({"iss": ISS, "aud": "api", "sub": "x", "exp": NOW + 300});
    for secret in [
        h.issuer.public_key_pem(Algorithm::RS256).unwrap(),
        h.issuer.jwks_json(),
    ] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("rs256".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert_invalid(
            &h,
            with_hs.clone(),
            &forged,
            "HS256 keyed with public key text",
        )
        .await;
    }
    // Row 12: outside the allow-list, or not fitting the key.
    let es_only = h.builder().algorithms([Algorithm::ES256]).build().unwrap();
    assert_invalid(&h, es_only, &good, "RS256 not allowed").await;
    let es_with_rsa_kid = h
        .token()
        .algorithm(Algorithm::ES256)
        .header("kid", "rs256".into())
        .mint();
    assert_invalid(&h, jwt.clone(), &es_with_rsa_kid, "ES256 with an RSA key").await;
    let p384 = TestIssuer::with_algorithms(ISS, &[Algorithm::ES384]).clock(h.clock.clone());
    let es384_on_p256 = p384
        .token()
        .audience("api")
        .header("kid", "es256".into())
        .mint();
    assert_invalid(&h, jwt.clone(), &es384_on_p256, "ES384 with a P-256 key").await;
    let mut restricted: serde_json::Value = serde_json::from_str(&h.issuer.jwks_json()).unwrap();
    for k in restricted["keys"].as_array_mut().unwrap() {
        if k["kid"] == "rs256" {
            k["alg"] = "RS256".into();
        }
    }
    let restricted_jwt = JwtAuthenticator::builder(ISS, "api")
        .keys(StaticKeys::from_jwks_json(restricted.to_string().as_bytes()).unwrap())
        .clock(h.clock.clone())
        .build()
        .unwrap();
    let ps = TestIssuer::with_algorithms(ISS, &[Algorithm::PS512]).clock(h.clock.clone());
    let ps512 = ps
        .token()
        .audience("api")
        .header("kid", "rs256".into())
        .mint();
    assert_invalid(
        &h,
        restricted_jwt,
        &ps512,
        "PS512 against an RS256-only key",
    )
    .await;
    // Row 13: embedded keys and key URLs are never used or fetched.
    let attacker = TestIssuer::new(ISS).clock(h.clock.clone());
    let served = attacker.serve().await.unwrap();
    let attacker_jwk: serde_json::Value = serde_json::from_str(&attacker.jwks_json()).unwrap();
    for (name, value) in [
        ("jwk", attacker_jwk["keys"][0].clone()),
        ("jku", served.jwks_url().into()),
        ("x5u", served.jwks_url().into()),
        (
            "x5c",
            json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        ),
    ] {
        let t = attacker.token().audience("api").header(name, value).mint();
        assert_invalid(&h, jwt.clone(), &t, name).await;
    }
    assert_eq!(served.requests(), 0, "no outbound request");
    // Row 14: kid injection.
    for kid in [
        json!("../../dev/null"),
        json!("' OR 1=1 --"),
        json!("|sleep 5"),
        json!(""),
        json!("k".repeat(10_000)),
        json!(null),
        json!(true),
        json!(0),
    ] {
        let t = h.token().header("kid", kid.clone()).mint();
        assert_invalid(
            &h,
            jwt.clone(),
            &t,
            &format!("kid {}", &kid.to_string()[..kid.to_string().len().min(20)]),
        )
        .await;
    }
    assert_ok(&h, jwt, &good, "control").await;
}

#[tokio::test]
async fn row_16_bad_keys_are_dropped() {
    let h = Harness::new();
    let good: serde_json::Value = serde_json::from_str(&h.issuer.jwks_json()).unwrap();
    let rsa = good["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "rs256")
        .unwrap()
        .clone();
    let es = good["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "es256")
        .unwrap()
        .clone();
    let mut enc = rsa.clone();
    enc["use"] = "enc".into();
    let mut sign_only = es.clone();
    sign_only["key_ops"] = json!(["sign"]);
    let mut with_d = es.clone();
    with_d["d"] = "AAAA".into();
    let doc = json!({"keys": [enc, sign_only, with_d, {"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}, good["keys"][2].clone()]});
    let jwt = JwtAuthenticator::builder(ISS, "api")
        .keys(StaticKeys::from_jwks_json(doc.to_string().as_bytes()).unwrap())
        .clock(h.clock.clone())
        .build()
        .unwrap();
    assert_invalid(&h, jwt.clone(), &h.token().mint(), "use enc").await;
    assert_invalid(
        &h,
        jwt.clone(),
        &h.token().algorithm(Algorithm::ES256).mint(),
        "key_ops sign / private d",
    )
    .await;
    assert_ok(
        &h,
        jwt,
        &h.token().algorithm(Algorithm::EdDSA).mint(),
        "the good key still works",
    )
    .await;
}

/// n − s for P-256, big-endian.
fn p256_negate(s: &[u8]) -> Vec<u8> {
    let n =
        hex::decode("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551").unwrap();
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = n[i] as i16 - s[i] as i16 - borrow;
        borrow = if d < 0 { 1 } else { 0 };
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

#[tokio::test]
async fn rows_18_to_21_signatures() {
    let h = Harness::new();
    let jwt = h.builder().build().unwrap();
    let token = h.token().algorithm(Algorithm::ES256).mint();
    let (head, sig) = token.rsplit_once('.').unwrap();
    let raw = B64.decode(sig).unwrap();
    assert_eq!(raw.len(), 64);
    let n =
        hex::decode("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551").unwrap();
    let with = |bytes: &[u8]| format!("{head}.{}", B64.encode(bytes));
    // Row 18: r = s = 0; r = n; s = n.
    assert_invalid(&h, jwt.clone(), &with(&[0u8; 64]), "r=s=0").await;
    assert_invalid(
        &h,
        jwt.clone(),
        &with(&[&n[..], &raw[32..]].concat()),
        "r=n",
    )
    .await;
    assert_invalid(
        &h,
        jwt.clone(),
        &with(&[&raw[..32], &n[..]].concat()),
        "s=n",
    )
    .await;
    // Row 19: DER form and wrong lengths.
    let der = {
        let int = |x: &[u8]| {
            let x: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
            let x = if x[0] & 0x80 != 0 {
                [&[0u8][..], &x].concat()
            } else {
                x
            };
            [vec![0x02, x.len() as u8], x].concat()
        };
        let body = [int(&raw[..32]), int(&raw[32..])].concat();
        [vec![0x30, body.len() as u8], body].concat()
    };
    assert_invalid(&h, jwt.clone(), &with(&der), "DER signature").await;
    assert_invalid(&h, jwt.clone(), &with(&raw[..63]), "63 bytes").await;
    assert_invalid(
        &h,
        jwt.clone(),
        &with(&[&raw[..], &[0]].concat()),
        "65 bytes",
    )
    .await;
    // Row 20: high-S is a valid ECDSA signature: accepted.
    let high_s = [&raw[..32], &p256_negate(&raw[32..])[..]].concat();
    assert_ok(&h, jwt.clone(), &with(&high_s), "high-S").await;
    // Row 21: one bit flipped in an RSA signature.
    let rs = h.token().mint();
    let (rhead, rsig) = rs.rsplit_once('.').unwrap();
    let mut bytes = B64.decode(rsig).unwrap();
    bytes[100] ^= 1;
    assert_invalid(
        &h,
        jwt.clone(),
        &format!("{rhead}.{}", B64.encode(bytes)),
        "RSA bit flip",
    )
    .await;
    assert_ok(&h, jwt, &token, "control").await;
}

#[tokio::test]
async fn rows_22_23_header_parameters() {
    let h = Harness::new();
    let jwt = h.builder().build().unwrap();
    for (name, value) in [
        ("crit", json!(["exp"])),
        ("crit", json!([])),
        ("crit", json!("x")),
        ("crit", json!(["b64"])),
        ("b64", json!(false)),
    ] {
        assert_invalid(&h, jwt.clone(), &h.token().header(name, value).mint(), name).await;
    }
    let at = h.builder().require_typ("at+jwt").build().unwrap();
    assert_invalid(
        &h,
        at.clone(),
        &h.token().without_header("typ").mint(),
        "typ missing",
    )
    .await;
    for typ in ["JWT", "dpop+jwt", "at+jwt2"] {
        assert_invalid(
            &h,
            at.clone(),
            &h.token().header("typ", typ.into()).mint(),
            typ,
        )
        .await;
    }
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        assert_ok(
            &h,
            at.clone(),
            &h.token().header("typ", typ.into()).mint(),
            typ,
        )
        .await;
    }
    assert_eq!(header_of(&h.token().mint())["typ"], "JWT");
}

#[tokio::test]
async fn rows_24_to_26_claims() {
    let h = Harness::new();
    let jwt = h.builder().build().unwrap();
    let now = NOW as i64;
    let bad: Vec<(&str, serde_json::Value)> = vec![
        ("exp", json!("never")),
        ("exp", json!(null)),
        ("exp", json!(true)),
        ("exp", json!([])),
        ("nbf", json!("9999999999")),
        ("exp", json!(now - 60)),
        ("nbf", json!(now + 61)),
        ("iat", json!(now + 61)),
        ("exp", json!(1e308)),
        ("exp", json!(18446744073709551615u64)),
        ("exp", json!(-1)),
        ("iss", json!(format!("{ISS}/"))),
        ("iss", json!(ISS.to_uppercase())),
        ("aud", json!([])),
        ("aud", json!("other")),
        ("sub", json!(42)),
        ("jti", json!({})),
    ];
    for (name, value) in bad {
        let t = h.token().claim(name, value.clone()).mint();
        assert_invalid(&h, jwt.clone(), &t, &format!("{name}={value}")).await;
    }
    for name in ["iss", "exp", "aud", "sub"] {
        assert_invalid(
            &h,
            jwt.clone(),
            &h.token().without_claim(name).mint(),
            &format!("no {name}"),
        )
        .await;
    }
    for (name, value) in [
        ("exp", json!(now - 59)),
        ("exp", json!(now as f64 + 10.5)),
        ("aud", json!(["other", "api"])),
        ("nbf", json!(now + 59)),
    ] {
        assert_ok(&h, jwt.clone(), &h.token().claim(name, value).mint(), name).await;
    }
    // Maximum age.
    let aged = h
        .builder()
        .max_age(Duration::from_secs(600))
        .build()
        .unwrap();
    assert_invalid(
        &h,
        aged.clone(),
        &h.token().claim("iat", json!(now - 661)).mint(),
        "too old",
    )
    .await;
    assert_ok(
        &h,
        aged,
        &h.token().claim("iat", json!(now - 600)).mint(),
        "old enough",
    )
    .await;
    // Subject fallback.
    let fallback = h
        .builder()
        .subject_claims(["sub", "client_id"])
        .build()
        .unwrap();
    let t = h
        .token()
        .without_claim("sub")
        .claim("client_id", "svc".into())
        .mint();
    assert_ok(&h, fallback, &t, "client_id").await;
}

#[tokio::test]
async fn hs256_only_with_an_explicit_secret() {
    let h = Harness::new();
    assert!(JwtKey::hmac_secret(&[1; 16]).is_err());
    let secret = [42u8; 32];
    let jwt = JwtAuthenticator::builder(ISS, "api")
        .keys(StaticKeys::new([JwtKey::hmac_secret(&secret)
            .unwrap()
            .with_kid("h")]))
        .algorithms([Algorithm::HS256])
        .clock(h.clock.clone())
        .build()
        .unwrap();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("h".into());
    let claims = json!({"iss": ISS, "aud": "api", "sub": "x", "exp": NOW + 300});
    let t = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert_ok(&h, jwt.clone(), &t, "HS256 with the configured secret").await;
    let wrong = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&[43; 32]),
    )
    .unwrap();
    assert_invalid(&h, jwt.clone(), &wrong, "HS256 with another secret").await;

    // What a hand-rolled `/login` usually mints: no `iss`, no `aud`. Refused on purpose
    // (README, "What the crate leaves to others"), even with the right secret.
    for (claims, what) in [
        (
            json!({"sub": "x", "exp": NOW + 300}),
            "HS256 without iss and aud",
        ),
        (
            json!({"iss": ISS, "sub": "x", "exp": NOW + 300}),
            "HS256 without aud",
        ),
        (
            json!({"aud": "api", "sub": "x", "exp": NOW + 300}),
            "HS256 without iss",
        ),
    ] {
        let t = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_invalid(&h, jwt.clone(), &t, what).await;
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    /// One issuer for all cases: key generation is the slow part.
    static H: LazyLock<Harness> = LazyLock::new(Harness::new);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn random_bearer_values_never_pass(value in "[A-Za-z0-9._~+/=-]{1,300}") {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let h = &*H;
            let jwt = h.builder().build().unwrap();
            let out = rt.block_on(send(h.service(jwt), get(Some(&value))));
            prop_assert!(out.status == StatusCode::UNAUTHORIZED || out.status == StatusCode::BAD_REQUEST);
        }

        #[test]
        fn random_signed_headers_never_panic(extra in proptest::collection::btree_map("[a-z]{1,5}", prop_oneof![Just(json!(null)), Just(json!(true)), any::<i64>().prop_map(|n| json!(n)), "[ -~]{0,12}".prop_map(|s| json!(s)), Just(json!([])), Just(json!({}))], 0..6)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let h = &*H;
            let jwt = h.builder().build().unwrap();
            let mut header = json!({"alg": "RS256", "kid": "rs256"});
            for (k, v) in &extra {
                header[k] = v.clone();
            }
            let claims = json!({"iss": ISS, "aud": "api", "sub": "s", "exp": NOW + 300});
            let t = h.issuer.sign_raw(Algorithm::RS256, &header.to_string(), &claims.to_string());
            let out = rt.block_on(send(h.service(jwt), get(Some(&t))));
            // Extra members are fine unless they are crit, b64, a bad kid/typ/cty, or change alg.
            let harmful = extra.keys().any(|k| ["crit", "b64", "kid", "typ", "cty", "alg"].contains(&k.as_str()));
            if !harmful {
                prop_assert_eq!(out.status, StatusCode::OK);
            } else {
                prop_assert!(out.status == StatusCode::OK || out.status == StatusCode::UNAUTHORIZED);
            }
        }
    }
}

/// The catalogue these tests cite ships in the repository: every citation of it under
/// `tests/` and `src/` names `docs/security-cases.md`, which holds rows 1 to 38, and every
/// row cited in this file (`Row N`, `row_N`, `rows_N_to_M`) is one of them.
#[test]
fn cited_rows_are_in_the_shipped_catalogue() {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The numbers that start a citation (`Row 12`, `row_28`, `rows_18_to_21`).
    fn cited(text: &str) -> Vec<u32> {
        let lower = text.to_lowercase();
        let mut rows = Vec::new();
        for (i, _) in lower.match_indices("row") {
            if lower[..i].ends_with(|c: char| c.is_alphanumeric()) {
                continue; // "arrow", "throw"
            }
            let rest = lower[i + 3..].trim_start_matches('s');
            let Some(rest) = rest.strip_prefix([' ', '_']) else {
                continue;
            };
            for part in rest.split("_to_").take(2) {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(n) = digits.parse() {
                    rows.push(n);
                }
            }
        }
        rows
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let catalogue = std::fs::read_to_string(root.join("docs/security-cases.md"))
        .expect("docs/security-cases.md ships with the tests that cite it");
    // Rows are the numbered items of the catalogue: `12. alg outside allowlist …`.
    let rows: Vec<u32> = catalogue
        .lines()
        .filter_map(|line| line.split_once(". ")?.0.parse().ok())
        .collect();
    assert_eq!(rows, (1..=38).collect::<Vec<_>>(), "rows 1 to 38, in order");

    let this = std::fs::read_to_string(root.join("tests/security_rows.rs")).unwrap();
    let cited = cited(&this);
    assert!(cited.len() > 20, "{cited:?}");
    for n in cited {
        assert!(
            rows.contains(&n),
            "row {n} is cited but not in the catalogue"
        );
    }

    let mut files = Vec::new();
    rust_files(&root.join("tests"), &mut files);
    rust_files(&root.join("src"), &mut files);
    // Spelled in two pieces so that this file's own search is not a citation.
    let name = concat!("security", "-cases");
    let file_name = format!("{name}.md");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap().to_lowercase();
        for (i, _) in text.match_indices(name) {
            assert!(
                text[..i].ends_with("docs/") && text[i..].starts_with(&file_name),
                "{}: cites a catalogue other than docs/security-cases.md",
                file.display()
            );
        }
    }
}
