//! The load benchmark's issuer and servers (see `BENCHMARKS.md`; `bench/run.sh` drives it).
//!
//! ```text
//! guard-bench issuer <dir>                 # JWKS on loopback; writes tokens and API keys
//! guard-bench server <variant> <dir> <addr>
//! ```
//!
//! `issuer` mints 1,000 identities (RS256 and ES256 alternately, scope `items:read`, role
//! `auditor` for the quickstart's document policy, valid
//! for two hours), creates 1,000 API keys in `<dir>/keys.db` (SQLite), writes
//! `<dir>/jwks_url`, `<dir>/issuer`, `<dir>/audience`, `<dir>/tokens.txt`,
//! `<dir>/tokens-rs256.txt` (the first 200 RS256 identities of the pool: the quickstart's
//! load) and `<dir>/apikeys.txt`, then serves the JWKS until it is killed.
//!
//! `server` serves `GET /items` behind one variant: `bare`, `ours-jwt`, `ours-jwt-nocache`,
//! `ours-apikey`, `ours-redis` or `ours-redis-lease` (both need `REDIS_URL`); or `bare-qs`,
//! no middleware in front of the quickstart's own `GET /items` handler
//! (`examples/quickstart.rs`, `list_items`), the baseline of the `qs-*` variants.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::header;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_api_guard::api_key::{
    ApiKeyAuthenticator, ApiKeyManager, CachedKeyStore, KeyFormat, NewKey, SqliteKeyStore,
};
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::authz::RequireLayer;
use tower_api_guard::jwt::{Algorithm, JwtAuthenticator, RemoteJwks};
use tower_api_guard::rate_limit::{Quota, RateLimiterLayer, RedisStore};
use tower_api_guard::testing::TestIssuer;

type Error = Box<dyn std::error::Error + Send + Sync>;

const ISSUER: &str = "https://bench-issuer.tower-api-guard.local";
const AUDIENCE: &str = "bench-api";
const SCOPE: &str = "items:read";
const IDENTITIES: usize = 1_000;
/// The quickstart's load (`tokens-rs256.txt`): this many identities, RS256 only.
const QS_IDENTITIES: usize = 200;
/// The same body as the peer's.
const ITEMS: &str = r#"[{"id":1,"name":"widget"},{"id":2,"name":"gadget"}]"#;
/// High enough never to trip: the benchmark measures overhead, not limiting.
const QUOTA: &str = "1000000/s";
/// `ours-redis-lease`: requests a replica takes from Redis at once per identity (for one
/// second). With 1,000 identities sharing ~25,000 req/s, a tenth of the round trips.
const LEASE: u32 = 10;

async fn items() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "application/json")], ITEMS)
}

/// `bare-qs`: a copy of `list_items` in `examples/quickstart.rs`; keep the two the same.
async fn list_items() -> Json<Value> {
    Json(json!({ "items": [{ "id": 1, "name": "first" }] }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["issuer", dir] => issuer(Path::new(dir)).await,
        ["server", variant, dir, addr] => server(variant, Path::new(dir), addr.parse()?).await,
        _ => Err("usage: guard-bench issuer <dir> | server <variant> <dir> <addr>".into()),
    }
}

async fn issuer(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let issuer = TestIssuer::with_algorithms(ISSUER, &[Algorithm::RS256, Algorithm::ES256]);
    let served = issuer.serve().await?;
    let tokens: Vec<String> = (0..IDENTITIES)
        .map(|i| {
            let alg = if i % 2 == 0 {
                Algorithm::RS256
            } else {
                Algorithm::ES256
            };
            issuer
                .token()
                .algorithm(alg)
                .subject(format!("user-{i:04}"))
                .audience(AUDIENCE)
                .scope(SCOPE)
                // Role `auditor` lets the pool read the quickstart's policy-guarded
                // documents (`qs-doc`); no other variant reads roles.
                .roles(["auditor"])
                .expires_in(Duration::from_secs(2 * 3600))
                .mint()
        })
        .collect();

    let db = dir.join("keys.db");
    let _ = std::fs::remove_file(&db);
    let store = SqliteKeyStore::connect(&sqlite_url(&db)).await?;
    store.migrate().await?;
    let format = KeyFormat::new("sk_bench")?;
    let mut keys = Vec::with_capacity(IDENTITIES);
    for i in 0..IDENTITIES {
        let (key, record) =
            format.generate(NewKey::new(format!("machine-{i:04}"), "bench").scopes([SCOPE]))?;
        store.create(&record).await?;
        keys.push(key.expose().to_owned());
    }

    write(dir, "tokens.txt", &(tokens.join("\n") + "\n"))?;
    // Even indices are the RS256 identities.
    let rs256: Vec<&str> = tokens
        .iter()
        .step_by(2)
        .take(QS_IDENTITIES)
        .map(String::as_str)
        .collect();
    write(dir, "tokens-rs256.txt", &(rs256.join("\n") + "\n"))?;
    write(dir, "apikeys.txt", &(keys.join("\n") + "\n"))?;
    write(dir, "issuer", ISSUER)?;
    write(dir, "audience", AUDIENCE)?;
    // Written last: the driver waits for it.
    write(dir, "jwks_url", &served.jwks_url())?;
    println!("issuer serving {}", served.jwks_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join(name))
}

fn sqlite_url(db: &Path) -> String {
    format!("sqlite://{}?mode=rwc", db.display())
}

async fn jwt(dir: &Path, cache: bool) -> Result<JwtAuthenticator, Error> {
    let url = std::fs::read_to_string(dir.join("jwks_url"))?;
    let keys = RemoteJwks::builder(url.trim()).build()?;
    keys.ready().await?;
    let mut builder = JwtAuthenticator::builder(ISSUER, AUDIENCE).keys(keys);
    if !cache {
        builder = builder.token_cache(0);
    }
    Ok(builder.build()?)
}

async fn server(variant: &str, dir: &Path, addr: SocketAddr) -> Result<(), Error> {
    let dir: PathBuf = dir.to_owned();
    if variant == "bare-qs" {
        return serve(
            variant,
            Router::new().route("/items", get(list_items)),
            addr,
        )
        .await;
    }
    let routes = Router::new().route("/items", get(items));
    let guard = RequireLayer::all_scopes([SCOPE]);
    let rate = RateLimiterLayer::new([Quota::parse(QUOTA)?]);
    // One `route_layer` for the whole stack, outermost first (authenticate, then check the
    // scope, then count): axum boxes and clones each `route_layer` per request.
    let app = match variant {
        "bare" => routes,
        "ours-jwt" | "ours-jwt-nocache" => routes.route_layer(
            ServiceBuilder::new()
                .layer(AuthLayer::new(jwt(&dir, variant == "ours-jwt").await?))
                .layer(guard)
                .layer(rate),
        ),
        "ours-redis" | "ours-redis-lease" => {
            let url = std::env::var("REDIS_URL").map_err(|_| "ours-redis needs REDIS_URL")?;
            let mut store = RedisStore::connect(&url).await?.prefix("guard-bench");
            if variant == "ours-redis-lease" {
                store = store.lease(
                    std::num::NonZeroU32::new(LEASE).unwrap(),
                    Duration::from_secs(1),
                );
            }
            routes.route_layer(
                ServiceBuilder::new()
                    .layer(AuthLayer::new(jwt(&dir, true).await?))
                    .layer(guard)
                    .layer(rate.redis(store)),
            )
        }
        "ours-apikey" => {
            let store = SqliteKeyStore::connect(&sqlite_url(&dir.join("keys.db"))).await?;
            let keys =
                ApiKeyAuthenticator::new(KeyFormat::new("sk_bench")?, CachedKeyStore::new(store));
            routes.route_layer(
                ServiceBuilder::new()
                    .layer(AuthLayer::new(keys))
                    .layer(guard)
                    .layer(rate),
            )
        }
        other => return Err(format!("unknown variant {other}").into()),
    };
    serve(variant, app, addr).await
}

async fn serve(variant: &str, app: Router, addr: SocketAddr) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "guard-bench {variant} listening on {}",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
