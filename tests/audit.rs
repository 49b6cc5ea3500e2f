//! The audit trail (`tower_api_guard::audit`): one JSON-able event per decision, every
//! field of the schema on every event, and never the credential in any field.
#![cfg(all(
    feature = "jwt",
    feature = "testing",
    feature = "axum",
    feature = "authz",
    feature = "api-key",
    feature = "rate-limit"
))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use common::events::Captured;
use http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;
use tower_api_guard::api_key::{ApiKeyAuthenticator, KeyFormat, MemoryKeyStore, NewKey};
use tower_api_guard::auth::{AuthLayer, AuthenticatorExt, BruteForceGuardLayer};
use tower_api_guard::authz::RequireLayer;
use tower_api_guard::clock::Clock;
use tower_api_guard::rate_limit::{ClientAddr, Quota};

/// Every field of the schema (see `tower_api_guard::audit`).
const FIELDS: [&str; 16] = [
    "outcome", "reason", "detail", "layer", "client", "method", "route", "status", "subject",
    "source", "issuer", "key_id", "jti", "asked", "policy", "message",
];

/// The audit events logged since the last take (as JSON objects), and the raw text of
/// every event.
fn take(lines: &Captured) -> (Vec<Value>, String) {
    let text = lines.take();
    let events = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["target"] == "tower_api_guard::audit")
        .collect();
    (events, text)
}

struct App {
    router: Router,
    issuer: tower_api_guard::testing::TestIssuer,
    key: String,
}

fn app() -> App {
    let (clock, issuer, jwt) = common::jwt::clocked_issuer_and_jwt();
    let format = KeyFormat::new("sk_test").unwrap();
    let store = MemoryKeyStore::new();
    let (key, record) = format
        .generate_at(
            NewKey::new("svc-billing", "ci").scopes(["items:read"]),
            clock.now(),
        )
        .unwrap();
    store.insert(record);
    let keys = ApiKeyAuthenticator::new(format, store).clock(clock.clone());
    let guard = BruteForceGuardLayer::new(Quota::parse("1000/min").unwrap())
        .client_addr(ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap());
    let router = Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .layer(RequireLayer::all_scopes(["items:read"]))
        .layer(AuthLayer::new(jwt.or(keys)))
        .layer(guard);
    App {
        router,
        issuer,
        key: key.expose().to_owned(),
    }
}

async fn call(router: &Router, header: Option<(&str, &str)>) -> StatusCode {
    let mut request = Request::get("/items/42").header("x-forwarded-for", "203.0.113.9");
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    router.clone().oneshot(request).await.unwrap().status()
}

fn assert_schema(event: &Value) {
    for field in FIELDS {
        assert!(event.get(field).is_some(), "{field} missing from {event}");
    }
}

#[tokio::test]
async fn every_decision_is_one_event_with_every_field() {
    let (lines, _guard) = Captured::install_json("tower_api_guard::audit=debug");
    let app = app();

    let token = app
        .issuer
        .token()
        .subject("alice")
        .audience(common::jwt::AUD)
        .scope("items:read")
        .claim("jti", "token-7".into())
        .expires_in(Duration::from_secs(600))
        .mint();
    let bearer = format!("Bearer {token}");
    assert_eq!(
        call(&app.router, Some(("authorization", &bearer))).await,
        StatusCode::OK
    );
    let (events, text) = take(&lines);
    assert!(!text.contains(&token));
    // One admission per layer: brute-force guard, authentication, authorization.
    assert_eq!(events.len(), 3, "{events:#?}");
    for event in &events {
        assert_schema(event);
        assert_eq!(event["outcome"], "allowed");
        assert_eq!(event["reason"], "none");
        assert_eq!(event["status"], 200);
        assert_eq!(event["method"], "GET");
        assert_eq!(event["route"], "/items/{id}");
        assert_eq!(event["client"], "203.0.113.9");
        assert_eq!(event["level"], "DEBUG");
    }
    let authz = events.iter().find(|e| e["layer"] == "authz").unwrap();
    assert_eq!(authz["subject"], "alice");
    assert_eq!(authz["source"], "jwt");
    assert_eq!(authz["issuer"], common::jwt::ISS);
    assert_eq!(authz["jti"], "token-7");
    assert_eq!(authz["asked"], "items:read");

    // An API key without the scope… it has it; one that is unknown is refused.
    assert_eq!(
        call(&app.router, Some(("x-api-key", &app.key))).await,
        StatusCode::OK
    );
    let (events, text) = take(&lines);
    assert!(!text.contains(&app.key));
    let authz = events.iter().find(|e| e["layer"] == "authz").unwrap();
    assert_eq!(authz["source"], "api_key");
    assert_eq!(authz["subject"], "svc-billing");
    assert_ne!(authz["key_id"], "");

    // A token without the scope: rejected by authorization, at INFO, with what was asked.
    let unscoped = app
        .issuer
        .token()
        .subject("bob")
        .audience(common::jwt::AUD)
        .expires_in(Duration::from_secs(600))
        .mint();
    let bearer = format!("Bearer {unscoped}");
    assert_eq!(
        call(&app.router, Some(("authorization", &bearer))).await,
        StatusCode::FORBIDDEN
    );
    let (events, text) = take(&lines);
    assert!(!text.contains(&unscoped));
    let rejected: Vec<_> = events
        .iter()
        .filter(|e| e["outcome"] == "rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{events:#?}");
    let event = rejected[0];
    assert_schema(event);
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["layer"], "authz");
    assert_eq!(event["reason"], "insufficient_scope");
    assert_eq!(event["status"], 403);
    assert_eq!(event["subject"], "bob");
    assert_eq!(event["asked"], "items:read");
    assert_eq!(event["route"], "/items/{id}");

    // No credential: rejected by authentication, no subject.
    assert_eq!(call(&app.router, None).await, StatusCode::UNAUTHORIZED);
    let (events, _) = take(&lines);
    let event = events.iter().find(|e| e["outcome"] == "rejected").unwrap();
    assert_eq!(event["layer"], "auth");
    assert_eq!(event["reason"], "missing_credentials");
    assert_eq!(event["subject"], "");
    assert_eq!(event["status"], 401);
}

#[tokio::test]
async fn at_info_only_rejections_are_reported() {
    let (lines, _guard) = Captured::install_json("tower_api_guard::audit=info");
    let app = app();
    assert_eq!(
        call(&app.router, Some(("x-api-key", &app.key))).await,
        StatusCode::OK
    );
    assert!(take(&lines).0.is_empty());
    assert_eq!(
        call(&app.router, Some(("authorization", "Bearer nope"))).await,
        StatusCode::UNAUTHORIZED
    );
    let (events, _) = take(&lines);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "malformed");
}

/// Every run of 8 characters of `secret`.
fn pieces(secret: &str) -> impl Iterator<Item = &str> {
    let chars: Vec<usize> = secret.char_indices().map(|(i, _)| i).collect();
    let end = secret.len();
    (0..chars.len().saturating_sub(7)).map(move |i| {
        let stop = chars.get(i + 8).copied().unwrap_or(end);
        &secret[chars[i]..stop]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random tokens and keys, valid-looking or not: no 8-character piece of the
    /// credential appears in any field of any audit event.
    #[test]
    fn no_piece_of_a_credential_reaches_an_audit_event(
        secret in "[A-Za-z0-9_.~+/=-]{16,120}",
        as_key in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (lines, _guard) = Captured::install_json("tower_api_guard::audit=debug");
        let app = app();
        let (name, value) = if as_key {
            ("x-api-key", format!("sk_test_{secret}"))
        } else {
            ("authorization", format!("Bearer {secret}"))
        };
        let status = runtime.block_on(call(&app.router, Some((name, &value))));
        prop_assert!(status.is_client_error());
        let (events, _) = take(&lines);
        prop_assert!(!events.is_empty());
        for event in &events {
            for (field, v) in event.as_object().unwrap() {
                let Some(text) = v.as_str() else { continue };
                for piece in pieces(&secret) {
                    prop_assert!(!text.contains(piece), "{field} holds {piece:?}: {text}");
                }
            }
        }
    }
}
