//! The demo server: a protected API with no setup.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With no settings it starts an embedded development issuer (keys made at start, its
//! JWKS served on loopback) and an embedded API-key store (SQLite, in memory; PostgreSQL
//! with `DATABASE_URL`) holding one
//! demo key, prints ready-to-paste curl lines with sample tokens and the key, and protects
//! these routes on `GUARD_ADDR` (default `127.0.0.1:3000`), for either credential:
//!
//! | route | needs |
//! |---|---|
//! | `GET /health` | nothing; 200 while the key set is usable, else 503 (readiness) |
//! | `GET /me` | any valid identity; answers its subject, source, scopes and roles |
//! | `GET /items` | scope `items:read` |
//! | `POST /items` | scope `items:write` |
//! | `GET /admin` | role `admin` |
//! | `GET` / `PUT /documents/{id}` | the policy in `GUARD_POLICY`: the document's owner reads and writes, role `auditor` reads any; documents `1`–`3` belong to `demo-user`, `4` to `other-user` |
//! | `GET /users/{id}/orders` | subject `{id}`, or role `admin` |
//! | any method `/api/…` | with `GUARD_UPSTREAM`: any valid identity; forwarded upstream with `X-Auth-*` identity headers |
//! | `GET /.well-known/internal-jwks.json` | nothing; with `GUARD_INTERNAL_JWT=on`: the internal JWT's public keys |
//!
//! To protect the same routes with a real identity provider, set `GUARD_ISSUER` and
//! `GUARD_AUDIENCE`. Keys then come from `GUARD_JWKS_FILE` (a JWKS document on disk) if
//! set, else from `GUARD_JWKS_URL`, else from OIDC discovery on `GUARD_ISSUER`. Authenticated
//! routes are limited per identity to `GUARD_RATE` (default `50/s`), and each client address
//! to `GUARD_AUTH_FAILURE_LIMIT` failed authentications (default `20/min`, or `off`).
//! `GUARD_KEY_RATE` (e.g. `5/s`; default none) is the quota of each credential beside it:
//! each API key, each OAuth client (`client_id` or `azp`) of the tokens; both are checked
//! together, atomically, and a request must pass both.
//!
//! `DATABASE_URL` (`postgres://…`) keeps the API keys in PostgreSQL instead of the embedded
//! SQLite (the table is created if missing, the demo key added to it): keys made, listed and
//! revoked with `cargo run --example api_keys` in that database are seen at once, and a
//! revocation reaches every replica's key cache within a second (LISTEN/NOTIFY; should the
//! channel drop, cached keys are re-read after a second until it is back).
//!
//! Replicas share state through Redis: `REDIS_URL` (`redis://host:port`, or a Redis Cluster
//! as `redis+cluster://host:port,host:port,…`) or `GUARD_REDIS_CLUSTER` (a cluster's seed
//! nodes, `host:port,host:port,…`; it wins over `REDIS_URL`). The rate limits, the
//! brute-force guard's failure counts and lockouts, and DPoP proof replay then live there. Every setting
//! is read once at start; a bad value stops the server with a message naming the variable.
//! The log filter is `RUST_LOG` (default `info`: rejections; `info,tower_api_guard=debug`
//! also logs each authenticated request; `info,tower_api_guard::audit=debug` adds the audit
//! event of every admission).
//!
//! Observability: `GUARD_METRICS_ADDR` (e.g. `127.0.0.1:9464`; default off) serves the
//! crate's metrics in Prometheus text at `GET /metrics` on that address (decisions by layer,
//! outcome and reason, key-set age and refreshes, cache hits, rate-limit outcomes, latency
//! histograms; `docs/dashboard.json` is a Grafana dashboard for them).
//! `GUARD_LOG_FORMAT=json` (default `text`) writes the logs, the audit events
//! (`tower_api_guard::audit`) among them, as JSON lines on stdout; the banner and the curl
//! lines then go to stderr.
//!
//! Policies: `GUARD_POLICY` is the policy file of `/documents/{id}`, Cedar (`.cedar`, validated
//! against the `.cedarschema` file beside it, when there is one) or Rego (`.rego`, query `data.<package>.allow`);
//! default `examples/policies/documents.cedar` (`examples/policies/documents.rego` means the
//! same). The policy sees the principal (subject as `id`, roles), the action (`read` for GET,
//! `write` for PUT), the resource (type `Document`, id from the path, attribute `owner`) and
//! the context (client address, time, scopes, claims). The file is polled every second and
//! reloaded when it changes, and on `SIGHUP`; a file that does not parse or validate keeps
//! the previous policy in force (and logs why). A policy error is a 503, a denial a 403.
//!
//! Sender-constrained tokens (RFC 9449 DPoP, RFC 8705 mutual TLS) work on the same routes:
//!
//! * a token with `cnf.jkt` always needs a valid DPoP proof (`Authorization: DPoP <token>`
//!   and a `DPoP` header); `GUARD_DPOP=required` makes every JWT need one, `GUARD_DPOP=off`
//!   turns DPoP off (default `allowed`: unbound bearer tokens still pass);
//!   `GUARD_DPOP_NONCE=on` requires server nonces (`DPoP-Nonce`); `GUARD_EXTERNAL_URL` is
//!   the origin clients call, which proofs name in `htu` (default: the listen address,
//!   `http://GUARD_ADDR`, or `https://` with TLS). With the dev issuer, the server prints
//!   a DPoP-bound token and fresh proofs (single use, valid for 60 s) to try at once.
//! * `GUARD_TLS_CERT` and `GUARD_TLS_KEY` (PEM files) serve HTTPS; `GUARD_TLS_CLIENT_CA`
//!   (a PEM file) also requests client certificates signed by that CA (optional for the
//!   client). Then a token with `cnf["x5t#S256"]` passes only over a connection with that
//!   certificate, and a request with a client certificate and no other credential is
//!   authenticated as the certificate's SPIFFE ID, DNS name or common name (source
//!   `client_certificate`, no scopes or roles: `GET /me` answers it).
//!
//! Opaque tokens: `GUARD_INTROSPECTION_URL` (the issuer's RFC 7662 endpoint; or, without it,
//! discovery on `GUARD_ISSUER` when `GUARD_CLIENT_ID` is set), with `GUARD_CLIENT_ID` and
//! `GUARD_CLIENT_SECRET` (sent as `client_secret_basic`): bearer tokens that are not
//! JWS-shaped are introspected (cached, one call per token at a time), on the same routes;
//! JWS-shaped ones still go to the JWT verifier.
//!
//! The gateway pattern: `GUARD_UPSTREAM=http://host:port` forwards every authenticated
//! request under `/api/` there (any method; the path after `/api` kept, bodies streamed),
//! with the identity in `X-Auth-Subject`, `X-Auth-Source`, `X-Auth-Scopes` and
//! `X-Auth-Roles`, every `X-Auth-*` header the client sent removed, and the caller's
//! credential (`Authorization`, `X-API-Key`, `DPoP`) stripped. Unauthenticated requests
//! to `/api/` get the usual 401; an unreachable upstream is a 502. With
//! `GUARD_INTERNAL_JWT=on` the upstream also gets a short-lived internal JWT in
//! `Authorization: Bearer` (ES256, `iss` the external URL, `aud` `upstream`, 60 s), whose
//! keys are at `GET /.well-known/internal-jwks.json`; `cargo run --example upstream` is a
//! service that trusts only that token.
//!
//! The layers are stacked the fast way, as the README advises: one [`GuardLayer`] (the
//! brute-force guard, authentication, the rate limit) on one `route_layer`, and the route's
//! own `RequireLayer` on each handler.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Path;
use axum::handler::Handler;
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{Value, json};
use tower_api_guard::api_key::{
    ApiKeyAuthenticator, ApiKeyManager, ApiKeyStore, CachedKeyStore, KeyFormat, NewKey,
    PostgresKeyStore, SqliteKeyStore,
};
use tower_api_guard::auth::{Authenticator, AuthenticatorExt, BruteForceGuardLayer};
use tower_api_guard::authz::{Ownership, RequireLayer};
use tower_api_guard::introspection::{ClientAuth, IntrospectionAuthenticator, JwtOrOpaque};
use tower_api_guard::jwt::RedisReplayCache;
use tower_api_guard::jwt::{
    Algorithm, DpopConfig, DpopMode, DpopNonces, ExternalOrigin, JwtAuthenticator, KeySource,
    RemoteJwks, StaticKeys,
};
use tower_api_guard::mtls::{ClientCertAuthenticator, serve_tls_with_shutdown, server_config};
use tower_api_guard::policy::{Policy, PolicyRequirement, ResourceLoading};
use tower_api_guard::rate_limit::{Quota, RateLimiterLayer, RedisStore};
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::upstream::{IdentityHeadersLayer, InternalJwtIssuer};
use tower_api_guard::{GuardLayer, Identity, RedisConnection};

/// Whether logs are JSON lines on stdout (GUARD_LOG_FORMAT=json): the banner and curl
/// lines then go to stderr, so that stdout holds nothing but JSON.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `println!`, or `eprintln!` when stdout carries JSON logs.
macro_rules! say {
    ($($arg:tt)*) => {
        if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

/// Install the Prometheus recorder and serve `GET /metrics` on `addr` (GUARD_METRICS_ADDR).
async fn serve_metrics(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("GUARD_METRICS_ADDR is not a socket address: {e}"))?;
    // Latencies as histograms with buckets from 50 µs to 2.5 s (Grafana's
    // histogram_quantile), not summaries.
    let buckets = [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| format!("GUARD_METRICS_ADDR: {e}"))?
        .install_recorder()
        .map_err(|e| format!("GUARD_METRICS_ADDR: {e}"))?;
    tower_api_guard::metrics::enable();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("GUARD_METRICS_ADDR: binding {addr}: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let text = handle.render();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    say!("Prometheus metrics on http://{addr}/metrics (GUARD_METRICS_ADDR)");
    Ok(())
}

#[path = "support/proxy.rs"]
mod proxy;

const DEV_ISSUER: &str = "https://dev-issuer.tower-api-guard.local";
const DEV_AUDIENCE: &str = "quickstart-api";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs: GUARD_LOG_FORMAT=json writes JSON lines (the audit events among them).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // Rejections are logged at `info`; `RUST_LOG=info,tower_api_guard=debug` also
        // logs every authenticated request (which costs throughput), and
        // `RUST_LOG=info,tower_api_guard::audit=debug` every admission's audit event.
        .unwrap_or_else(|_| "info".into());
    match std::env::var("GUARD_LOG_FORMAT").as_deref() {
        Ok("json") => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_env_filter(filter)
                .init()
        }
        Ok("text") | Err(_) => tracing_subscriber::fmt()
            // Colours only on a terminal, not in a log file.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
        Ok(other) => {
            return Err(format!("GUARD_LOG_FORMAT (text or json): {other:?}").into());
        }
    }
    // Metrics: GUARD_METRICS_ADDR serves them in Prometheus text at /metrics.
    if let Ok(metrics_addr) = std::env::var("GUARD_METRICS_ADDR") {
        serve_metrics(&metrics_addr).await?;
    }

    let addr: SocketAddr = std::env::var("GUARD_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
        .map_err(|e| format!("GUARD_ADDR is not a socket address: {e}"))?;

    // TLS: GUARD_TLS_CERT and GUARD_TLS_KEY together; GUARD_TLS_CLIENT_CA optional.
    let read = |var: &str| -> Result<Option<Vec<u8>>, String> {
        match std::env::var(var) {
            Ok(path) => std::fs::read(&path)
                .map(Some)
                .map_err(|e| format!("{var}: reading {path}: {e}")),
            Err(_) => Ok(None),
        }
    };
    let client_ca = read("GUARD_TLS_CLIENT_CA")?;
    let tls = match (read("GUARD_TLS_CERT")?, read("GUARD_TLS_KEY")?) {
        (Some(cert), Some(key)) => Some(
            server_config(&cert, &key, client_ca.as_deref()).map_err(|e| {
                format!("GUARD_TLS_CERT / GUARD_TLS_KEY / GUARD_TLS_CLIENT_CA: {e}")
            })?,
        ),
        (None, None) if client_ca.is_none() => None,
        (None, None) => {
            return Err("GUARD_TLS_CLIENT_CA needs GUARD_TLS_CERT and GUARD_TLS_KEY".into());
        }
        _ => return Err("GUARD_TLS_CERT and GUARD_TLS_KEY go together".into()),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };

    // Shared state for replicas: GUARD_REDIS_CLUSTER (a Redis Cluster's seed nodes,
    // host:port,host:port,…) or REDIS_URL (redis://host:port, or redis+cluster://seeds).
    let redis = redis_connection().await?;

    // DPoP: GUARD_DPOP (allowed, required, off), GUARD_DPOP_NONCE (on, off),
    // GUARD_EXTERNAL_URL (default: the listen address).
    let mode = match std::env::var("GUARD_DPOP").as_deref() {
        Err(_) | Ok("allowed") => DpopMode::Allowed,
        Ok("required") => DpopMode::Required,
        Ok("off") => DpopMode::Off,
        Ok(other) => return Err(format!("GUARD_DPOP (allowed, required or off): {other:?}").into()),
    };
    let external =
        std::env::var("GUARD_EXTERNAL_URL").unwrap_or_else(|_| format!("{scheme}://{addr}"));
    let origin =
        ExternalOrigin::parse(&external).map_err(|e| format!("GUARD_EXTERNAL_URL: {e}"))?;
    let mut dpop = DpopConfig::new(mode).external_origin(origin.clone());
    if let Some(redis) = &redis {
        // A proof's jti is seen once across every replica.
        dpop = dpop.replay_cache(RedisReplayCache::from_connection(redis.clone()));
    }
    let mut nonces = false;
    match std::env::var("GUARD_DPOP_NONCE").as_deref() {
        Err(_) | Ok("off") => {}
        Ok("on") => {
            nonces = true;
            dpop = dpop.nonces(DpopNonces::new()?);
        }
        Ok(other) => return Err(format!("GUARD_DPOP_NONCE (on or off): {other:?}").into()),
    }

    // Keep the dev issuer's JWKS server alive for the life of the process.
    let mut _served = None;
    let jwt = match std::env::var("GUARD_ISSUER") {
        Ok(issuer) => {
            let audience = std::env::var("GUARD_AUDIENCE")
                .map_err(|_| "GUARD_ISSUER is set, so GUARD_AUDIENCE must be set too")?;
            let jwt = if let Ok(file) = std::env::var("GUARD_JWKS_FILE") {
                let jwks = std::fs::read(&file)
                    .map_err(|e| format!("GUARD_JWKS_FILE: reading {file}: {e}"))?;
                say!("Keys from {file}");
                let keys = StaticKeys::from_jwks_json(&jwks)
                    .map_err(|e| format!("GUARD_JWKS_FILE ({file}): {e}"))?;
                authenticator(&issuer, &audience, keys, dpop.clone())
                    .map_err(|e| format!("GUARD_ISSUER / GUARD_AUDIENCE: {e}"))?
            } else {
                let keys = match std::env::var("GUARD_JWKS_URL") {
                    Ok(url) => {
                        say!("Keys from {url}");
                        RemoteJwks::builder(url)
                            .build()
                            .map_err(|e| format!("GUARD_JWKS_URL: {e}"))?
                    }
                    Err(_) => {
                        say!("Keys through OIDC discovery on {issuer}");
                        RemoteJwks::discover(issuer.clone())
                            .build()
                            .map_err(|e| format!("GUARD_ISSUER: {e}"))?
                    }
                };
                if let Err(e) = keys.ready().await {
                    eprintln!(
                        "warning: could not fetch the key set yet ({e}); requests will answer 503 \
                         until it can be fetched: {:?}",
                        keys.status().last_error
                    );
                }
                authenticator(&issuer, &audience, keys, dpop.clone())
                    .map_err(|e| format!("GUARD_ISSUER / GUARD_AUDIENCE: {e}"))?
            };
            say!("Protecting {scheme}://{addr} for issuer {issuer}, audience {audience}");
            jwt
        }
        Err(_) => {
            let issuer = TestIssuer::new(DEV_ISSUER);
            let served = issuer.serve().await?;
            // The same path a real issuer takes: a remote, cached, refreshed key set.
            let keys = RemoteJwks::builder(served.jwks_url()).build()?;
            keys.ready().await?;
            let jwt = authenticator(DEV_ISSUER, DEV_AUDIENCE, keys, dpop.clone())?;
            print_demo(&issuer, &served.jwks_url(), addr, scheme);
            if mode != DpopMode::Off {
                print_dpop_demo(&issuer, &origin, addr, scheme, nonces);
            }
            _served = Some(served);
            jwt
        }
    };

    // Readiness: 200 while tokens can be verified, 503 otherwise.
    let health = {
        let jwt = jwt.clone();
        move || async move {
            let status = jwt.key_status();
            let code = if status.usable {
                axum::http::StatusCode::OK
            } else {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            };
            let body = json!({
                "status": if status.usable { "ok" } else { "unavailable" },
                "keys": status.keys,
                "stale": status.stale,
                "last_error": status.last_error,
            });
            (code, Json(body))
        }
    };
    // Per-identity quota: GUARD_RATE (default 50/s); per-credential quota (each API key,
    // each OAuth client): GUARD_KEY_RATE (default: none), checked with it atomically.
    let rate = Quota::parse(&std::env::var("GUARD_RATE").unwrap_or_else(|_| "50/s".into()))
        .map_err(|e| format!("GUARD_RATE: {e}"))?;
    let mut rate_limit = RateLimiterLayer::new([rate]);
    if let Ok(key_rate) = std::env::var("GUARD_KEY_RATE") {
        let key_rate = Quota::parse(&key_rate)
            .map_err(|e| format!("GUARD_KEY_RATE (a quota such as 5/s): {e}"))?;
        rate_limit = rate_limit.per_credential([key_rate]);
    }
    // With Redis, the limits are shared between replicas.
    if let Some(redis) = &redis {
        rate_limit = rate_limit.redis(RedisStore::from_connection(redis.clone()));
    }

    // The API-key store, cached, with one demo key: PostgreSQL with DATABASE_URL (every
    // replica's cache told of revocations within a second), else SQLite in memory.
    let key_format = KeyFormat::new("sk_demo")?;
    let (demo_key, record) = key_format.generate(
        NewKey::new("demo-machine", "quickstart demo key")
            .scopes(["items:read"])
            .roles(["service"]),
    )?;
    let postgres = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let store = PostgresKeyStore::connect(&url)
                .await
                .map_err(|e| format!("DATABASE_URL: {e}"))?;
            store
                .migrate()
                .await
                .map_err(|e| format!("DATABASE_URL (creating the key table): {e}"))?;
            Some(store)
        }
        Err(_) => None,
    };
    let key_store: std::sync::Arc<dyn ApiKeyStore> = match &postgres {
        Some(store) => {
            store.create(&record).await?;
            std::sync::Arc::new(store.clone())
        }
        None => {
            let store = SqliteKeyStore::connect("sqlite::memory:").await?;
            store.migrate().await?;
            store.create(&record).await?;
            std::sync::Arc::new(store)
        }
    };
    let key_cache = CachedKeyStore::new(key_store);
    // Kept for the life of the process: dropping it stops the push.
    let _key_follower = match &postgres {
        Some(store) => {
            let follower = store
                .follow(&key_cache)
                .await
                .map_err(|e| format!("DATABASE_URL (listening for revocations): {e}"))?;
            say!("API keys in PostgreSQL (DATABASE_URL); revocations reach this cache within 1 s");
            Some(follower)
        }
        None => None,
    };
    let api_keys = ApiKeyAuthenticator::new(key_format, key_cache);
    say!("# the demo API key (scope items:read), accepted on the same routes");
    say!("curl -i -H \"X-API-Key: {demo_key}\" {scheme}://{addr}/me");
    say!("curl -i -H \"X-API-Key: {demo_key}\" {scheme}://{addr}/items\n");

    // The usual stack in one layer, in the fast order: the brute-force guard per client
    // address (GUARD_AUTH_FAILURE_LIMIT, default 20/min, or `off`), then authentication
    // (a JWT or the API key), then the per-identity rate limit.
    // With GUARD_TLS_CLIENT_CA, a client certificate alone authenticates too (a token or key
    // beside it decides instead: `or_else`).
    let certificates = ClientCertAuthenticator::builder()
        .build()
        .map_err(|e| format!("client certificate identities: {e}"))?;
    let failure_limit =
        std::env::var("GUARD_AUTH_FAILURE_LIMIT").unwrap_or_else(|_| "20/min".into());
    let failures = match failure_limit.as_str() {
        "off" => None,
        limit => Some(Quota::parse(limit).map_err(|e| {
            format!("GUARD_AUTH_FAILURE_LIMIT (a quota such as 20/min, or off): {e}")
        })?),
    };
    // With Redis, the replicas count failures (and lock addresses out) together.
    let failures = failures.map(|quota| {
        let guard = BruteForceGuardLayer::new(quota);
        match &redis {
            Some(redis) => guard.redis(redis.clone()),
            None => guard,
        }
    });
    let introspection = introspection().await?;

    // GUARD_POLICY: the policy of /documents/{id}, Cedar (.cedar, with the .cedarschema
    // beside it) or Rego (.rego); reloaded when the file changes and on SIGHUP.
    let (documents, _policy_watch) = documents_policy()?;
    let protected = Router::new()
        .route("/me", get(me))
        // Each handler gets its own guard (a MethodRouter's `layer` would cover every
        // method registered so far).
        .route(
            "/items",
            get(list_items.layer(RequireLayer::all_scopes(["items:read"])))
                .post(create_item.layer(RequireLayer::all_scopes(["items:write"]))),
        )
        .route(
            "/admin",
            get(admin.layer(RequireLayer::any_role(["admin"]))),
        )
        .route(
            "/documents/{id}",
            get(read_document.layer(documents.clone())).put(write_document.layer(documents)),
        )
        // Only the user the path names, or an admin.
        .route(
            "/users/{id}/orders",
            get(orders.layer(RequireLayer::owner(
                Ownership::path_param("id").unless_role("admin"),
            ))),
        );
    // GUARD_UPSTREAM: every authenticated request under /api/ goes to the upstream (the path
    // after /api kept), with the identity in X-Auth-* headers, any X-Auth-* the client sent
    // removed, and the caller's credential stripped.
    // GUARD_INTERNAL_JWT=on: a short-lived internal JWT (ES256, a key made at start) for the
    // upstream in `Authorization: Bearer`, its JWK set at /.well-known/internal-jwks.json.
    let internal_jwt = match std::env::var("GUARD_INTERNAL_JWT").as_deref() {
        Err(_) | Ok("off") => None,
        Ok("on") if std::env::var("GUARD_UPSTREAM").is_err() => {
            return Err("GUARD_INTERNAL_JWT=on needs GUARD_UPSTREAM".into());
        }
        Ok("on") => Some(
            InternalJwtIssuer::generate(Algorithm::ES256, origin.to_string(), "upstream")
                .map_err(|e| format!("GUARD_INTERNAL_JWT: {e}"))?,
        ),
        Ok(other) => {
            return Err(format!("GUARD_INTERNAL_JWT (on or off): {other:?}").into());
        }
    };
    let protected = match std::env::var("GUARD_UPSTREAM") {
        Ok(upstream) => {
            let proxy =
                proxy::Proxy::new(&upstream, "/api").map_err(|e| format!("GUARD_UPSTREAM: {e}"))?;
            say!("# GUARD_UPSTREAM: {scheme}://{addr}/api/… is forwarded to {upstream}");
            let identity = IdentityHeadersLayer::new("x-auth-")?
                .subject("x-auth-subject")?
                .source("x-auth-source")?
                .scopes("x-auth-scopes")?
                .roles("x-auth-roles")?
                .strip_authorization()
                .strip_header("x-api-key")?
                .strip_header("dpop")?;
            let identity = match &internal_jwt {
                Some(issuer) => {
                    say!(
                        "# GUARD_INTERNAL_JWT: upstreams get an internal JWT (iss {origin}, aud upstream); \
                         keys at {scheme}://{addr}/.well-known/internal-jwks.json"
                    );
                    identity.internal_jwt(issuer.clone())
                }
                None => identity,
            };
            let forward = move |request: axum::extract::Request| {
                let proxy = proxy.clone();
                async move { proxy.forward(request).await }
            };
            let forward = any(forward).layer(identity);
            protected
                .route("/api", forward.clone())
                .route("/api/", forward.clone())
                .route("/api/{*rest}", forward)
        }
        Err(_) => protected,
    };
    // One route_layer for the whole stack (axum boxes every route_layer), so unknown routes
    // stay 404 instead of becoming 401.
    let protected = match introspection {
        // Opaque tokens too: JWS-shaped bearer tokens to the JWT verifier, others to the
        // introspection endpoint.
        Some(opaque) => protected.route_layer(guard(
            JwtOrOpaque::new(jwt.clone(), opaque)
                .or(api_keys)
                .or_else(certificates),
            rate_limit,
            failures,
        )),
        None => protected.route_layer(guard(
            jwt.clone().or(api_keys).or_else(certificates),
            rate_limit,
            failures,
        )),
    };
    let mut app = Router::new().route("/health", get(health)).merge(protected);
    if let Some(issuer) = internal_jwt {
        let jwks = issuer.jwks_json();
        app = app.route(
            "/.well-known/internal-jwks.json",
            get(move || {
                let jwks = jwks.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        jwks,
                    )
                }
            }),
        );
    }

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tls {
        Some(config) => serve_tls_with_shutdown(listener, config, app, shutdown).await?,
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await?
        }
    }
    Ok(())
}

/// `GUARD_REDIS_CLUSTER` (seed nodes, `host:port,host:port,…`; a `redis://` URL each works
/// too) or else `REDIS_URL` (`redis://host:port`, or `redis+cluster://host:port,…`): the
/// connection every shared piece uses, or `None` without either.
async fn redis_connection() -> Result<Option<RedisConnection>, String> {
    if let Ok(nodes) = std::env::var("GUARD_REDIS_CLUSTER") {
        let seeds: Vec<String> = nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                if n.contains("://") {
                    n.to_owned()
                } else {
                    format!("redis://{n}")
                }
            })
            .collect();
        let conn = RedisConnection::cluster(seeds)
            .await
            .map_err(|e| format!("GUARD_REDIS_CLUSTER (host:port,host:port,…): {e}"))?;
        say!("Shared state in a Redis Cluster (GUARD_REDIS_CLUSTER)");
        return Ok(Some(conn));
    }
    let Ok(url) = std::env::var("REDIS_URL") else {
        return Ok(None);
    };
    let conn = RedisConnection::connect(&url)
        .await
        .map_err(|e| format!("REDIS_URL: {e}"))?;
    if conn.is_cluster() {
        say!("Shared state in a Redis Cluster (REDIS_URL)");
    } else {
        say!("Shared state in Redis (REDIS_URL)");
    }
    Ok(Some(conn))
}

/// The usual stack in one layer, in the fast order: the brute-force guard per client address
/// (when `failures` is set), then authentication, then the per-identity rate limit.
fn guard<A: Authenticator>(
    authenticate: A,
    rate_limit: RateLimiterLayer,
    failures: Option<BruteForceGuardLayer>,
) -> GuardLayer<A> {
    let guard = GuardLayer::new(authenticate).rate_limit(rate_limit);
    match failures {
        Some(failures) => guard.brute_force_layer(failures),
        None => guard,
    }
}

/// `GUARD_INTROSPECTION_URL` (or discovery on `GUARD_ISSUER` when only `GUARD_CLIENT_ID` is
/// set), with `GUARD_CLIENT_ID` / `GUARD_CLIENT_SECRET` as `client_secret_basic`: opaque
/// tokens accepted on the same routes. With `GUARD_ISSUER` (and `GUARD_AUDIENCE`), the
/// answer's `iss` (and `aud`) must match.
async fn introspection() -> Result<Option<IntrospectionAuthenticator>, String> {
    let url = std::env::var("GUARD_INTROSPECTION_URL").ok();
    let id = std::env::var("GUARD_CLIENT_ID").ok();
    let issuer = std::env::var("GUARD_ISSUER").ok();
    let mut builder = match (url, &id, &issuer) {
        (Some(url), _, _) => IntrospectionAuthenticator::builder(url),
        (None, Some(_), Some(issuer)) => IntrospectionAuthenticator::discover(issuer.clone())
            .discover()
            .await
            .map_err(|e| {
                format!("GUARD_CLIENT_ID (introspection through discovery on GUARD_ISSUER): {e}")
            })?,
        (None, Some(_), None) => {
            return Err("GUARD_CLIENT_ID needs GUARD_INTROSPECTION_URL or GUARD_ISSUER".into());
        }
        (None, None, _) => return Ok(None),
    };
    if let Some(id) = id {
        let secret = std::env::var("GUARD_CLIENT_SECRET")
            .map_err(|_| "GUARD_CLIENT_ID is set, so GUARD_CLIENT_SECRET must be set too")?;
        builder = builder.client_auth(ClientAuth::basic(id, secret));
    }
    if let Some(issuer) = issuer {
        builder = builder.issuer(issuer);
        if let Ok(audience) = std::env::var("GUARD_AUDIENCE") {
            builder = builder.audience(audience);
        }
    }
    let opaque = builder
        .scope_claims(["scope", "scp"])
        .role_claims(["roles", "realm_access.roles"])
        .build()
        .map_err(|e| format!("GUARD_INTROSPECTION_URL: {e}"))?;
    say!("Opaque tokens through {}", opaque.endpoint());
    Ok(Some(opaque))
}

fn authenticator(
    issuer: &str,
    audience: &str,
    keys: impl KeySource,
    dpop: DpopConfig,
) -> Result<JwtAuthenticator, tower_api_guard::ConfigError> {
    JwtAuthenticator::builder(issuer, audience)
        .keys(keys)
        .dpop(dpop)
        .scope_claims(["scope", "scp"])
        .role_claims(["roles", "realm_access.roles"])
        .build()
}

/// A DPoP-bound token and fresh proofs for it, minted with the crate's `testing` tools
/// (`TestIssuer::dpop_key`, `TokenBuilder::dpop_bound`, `DpopKey::proof`): each proof is
/// good once, for 60 s.
/// The demo documents: 1–3 owned by `demo-user`, 4 by `other-user`.
fn document_owner(id: &str) -> Option<&'static str> {
    match id {
        "1" | "2" | "3" => Some("demo-user"),
        "4" => Some("other-user"),
        _ => None,
    }
}

/// `GUARD_POLICY` (default `examples/policies/documents.cedar`) as the guard of
/// `/documents/{id}`: GET is the action `read`, PUT `write`, the resource a `Document` whose
/// `owner` attribute comes from [`document_owner`]. The file is polled every second and
/// reloaded on change, and on SIGHUP; a broken file keeps the previous policy.
fn documents_policy()
-> Result<(RequireLayer, tower_api_guard::policy::WatchHandle), Box<dyn std::error::Error>> {
    let path = std::env::var("GUARD_POLICY").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/policies/documents.cedar"
        )
        .into()
    });
    let policy = Policy::from_file(&path).map_err(|e| format!("GUARD_POLICY ({path}): {e}"))?;
    say!(
        "# GUARD_POLICY: /documents/{{id}} is guarded by {path} ({}), reloaded on change and on SIGHUP",
        policy.engine_name()
    );
    let watch = policy.watch(Duration::from_secs(1));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        let policy = policy.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let policy = policy.clone();
                // The outcome (reloaded, or kept the previous policy) is logged.
                let _ = tokio::task::spawn_blocking(move || policy.reload()).await;
            }
        });
    }
    let requirement = PolicyRequirement::new(policy)
        .resource("Document", "id")
        .action(axum::http::Method::GET, "read")
        .action(axum::http::Method::HEAD, "read")
        .action(axum::http::Method::PUT, "write")
        .loader(|_kind: &str, id: &str| {
            let mut attributes = serde_json::Map::new();
            if let Some(owner) = document_owner(id) {
                attributes.insert("owner".into(), owner.into());
            }
            ResourceLoading::Ready(Ok(attributes))
        });
    Ok((RequireLayer::policy(requirement), watch))
}

fn print_dpop_demo(
    issuer: &TestIssuer,
    origin: &ExternalOrigin,
    addr: SocketAddr,
    scheme: &str,
    nonces: bool,
) {
    let client = issuer.dpop_key(Algorithm::ES256);
    let token = issuer
        .token()
        .subject("dpop-user")
        .audience(DEV_AUDIENCE)
        .scope("items:read")
        .dpop_bound(&client)
        .expires_in(Duration::from_secs(3600))
        .mint();
    let proof = |path: &str| {
        client
            .proof("GET", &format!("{origin}{path}"))
            .access_token(&token)
            .mint()
    };
    say!("# DPoP: a token bound to a client key (cnf.jkt); each proof works once, within 60 s");
    say!("DPOP_TOKEN={token}");
    say!(
        "curl -i -H \"Authorization: DPoP $DPOP_TOKEN\" -H \"DPoP: {}\" {scheme}://{addr}/me",
        proof("/me")
    );
    say!(
        "curl -i -H \"Authorization: DPoP $DPOP_TOKEN\" -H \"DPoP: {}\" {scheme}://{addr}/items",
        proof("/items")
    );
    if nonces {
        say!(
            "# GUARD_DPOP_NONCE=on: these proofs carry no nonce, so they get 401 \
             use_dpop_nonce and the nonce to put in the next proof (DPoP-Nonce header)"
        );
    }
    say!("# the same token as Bearer: 401 (no downgrade)");
    say!("curl -i -H \"Authorization: Bearer $DPOP_TOKEN\" {scheme}://{addr}/me\n");
}

fn print_demo(issuer: &TestIssuer, jwks_url: &str, addr: SocketAddr, scheme: &str) {
    let mint = |scope: &str, roles: &[&str]| {
        issuer
            .token()
            .subject("demo-user")
            .audience(DEV_AUDIENCE)
            .scope(scope)
            .roles(roles.iter().copied())
            .expires_in(Duration::from_secs(3600))
            .mint()
    };
    let admin = mint("items:read items:write", &["admin"]);
    let reader = mint("items:read", &[]);
    let auditor = issuer
        .token()
        .subject("auditor-user")
        .audience(DEV_AUDIENCE)
        .roles(["auditor"])
        .expires_in(Duration::from_secs(3600))
        .mint();
    say!("tower-api-guard quickstart on {scheme}://{addr}");
    say!("Embedded dev issuer {DEV_ISSUER}, JWKS at {jwks_url}; tokens valid for 1 hour.\n");
    say!("# no credentials: 401");
    say!("curl -i {scheme}://{addr}/me\n");
    say!("# admin token (items:read items:write, role admin)");
    say!("TOKEN={admin}");
    say!("curl -i -H \"Authorization: Bearer $TOKEN\" {scheme}://{addr}/me");
    say!("curl -i -X POST -H \"Authorization: Bearer $TOKEN\" {scheme}://{addr}/items");
    say!("curl -i -H \"Authorization: Bearer $TOKEN\" {scheme}://{addr}/admin\n");
    say!("# read-only token: GET /items 200, POST /items and /admin 403");
    say!("READER={reader}");
    say!("curl -i -H \"Authorization: Bearer $READER\" {scheme}://{addr}/items");
    say!("curl -i -X POST -H \"Authorization: Bearer $READER\" {scheme}://{addr}/items\n");
    say!("# the document policy (GUARD_POLICY): demo-user owns documents 1-3, other-user 4");
    say!("curl -i -H \"Authorization: Bearer $READER\" {scheme}://{addr}/documents/1");
    say!("curl -i -X PUT -H \"Authorization: Bearer $READER\" {scheme}://{addr}/documents/1");
    say!("curl -i -H \"Authorization: Bearer $READER\" {scheme}://{addr}/documents/4   # 403");
    say!("# role auditor (subject auditor-user): reads any document, writes none");
    say!("AUDITOR={auditor}");
    say!("curl -i -H \"Authorization: Bearer $AUDITOR\" {scheme}://{addr}/documents/4");
    say!(
        "curl -i -X PUT -H \"Authorization: Bearer $AUDITOR\" {scheme}://{addr}/documents/4   # 403\n"
    );
    say!("# ownership: only the user the path names, or role admin");
    say!("curl -i -H \"Authorization: Bearer $READER\" {scheme}://{addr}/users/demo-user/orders");
    say!(
        "curl -i -H \"Authorization: Bearer $READER\" {scheme}://{addr}/users/other-user/orders   # 403"
    );
    say!("curl -i -H \"Authorization: Bearer $TOKEN\" {scheme}://{addr}/users/other-user/orders\n");
}

/// What `GET /me` answers: borrowed from the identity, serialized once (no JSON tree).
#[derive(serde::Serialize)]
struct Me<'a> {
    subject: &'a str,
    source: String,
    scopes: &'a tower_api_guard::Scopes,
    roles: &'a tower_api_guard::Roles,
}

async fn me(identity: Identity) -> axum::response::Response {
    use axum::response::IntoResponse;
    Json(Me {
        subject: identity.subject(),
        source: identity.source().to_string(),
        scopes: identity.scopes(),
        roles: identity.roles(),
    })
    .into_response()
}

async fn list_items() -> Json<Value> {
    Json(json!({ "items": [{ "id": 1, "name": "first" }] }))
}

async fn create_item(identity: Identity) -> Json<Value> {
    Json(json!({ "created": { "id": 2, "by": identity.subject() } }))
}

async fn read_document(Path(id): Path<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match document_owner(&id) {
        Some(owner) => Json(json!({ "id": id, "owner": owner, "title": format!("Document {id}") }))
            .into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

async fn write_document(Path(id): Path<String>, identity: Identity) -> axum::response::Response {
    use axum::response::IntoResponse;
    match document_owner(&id) {
        Some(_) => Json(json!({ "updated": id, "by": identity.subject() })).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

async fn orders(Path(id): Path<String>) -> Json<Value> {
    Json(json!({ "user": id, "orders": [{ "id": 1, "total": 42 }] }))
}

async fn admin(identity: Identity) -> Json<Value> {
    Json(json!({ "admin": true, "subject": identity.subject() }))
}
