//! Criterion benchmarks. `cargo bench --bench guard`.
//!
//! `jwt/<alg>/ours_full_call`: the whole service call through `AuthLayer` (extract the
//! bearer token, strict parse, verify, validate claims, build the `Identity`, call the
//! inner service), against `jwt/<alg>/jsonwebtoken_decode`: plain `jsonwebtoken::decode`
//! of the same token with the same key into a `serde_json::Value`, with `iss` and `aud`
//! checked. Both run in the same criterion run, so the ratio is what matters.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use tower::{Layer, Service, service_fn};
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::jwt::{
    Algorithm, JwtAuthenticator, JwtAuthenticatorBuilder, verify_signature,
};
use tower_api_guard::testing::TestIssuer;

type Svc = tower_api_guard::auth::Auth<
    JwtAuthenticator,
    tower::util::ServiceFn<
        fn(Request<()>) -> std::future::Ready<Result<Response<String>, Infallible>>,
    >,
>;

fn inner(_req: Request<()>) -> std::future::Ready<Result<Response<String>, Infallible>> {
    std::future::ready(Ok(Response::new(String::new())))
}

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "bench-api";

/// Poll a future that must complete without waiting (static keys never wait).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked future did not complete on first poll"),
    }
}

fn jwt_benches(c: &mut Criterion) {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let issuer = TestIssuer::new(ISSUER);
    let jwks: JwkSet = serde_json::from_str(&issuer.jwks_json()).unwrap();
    // Cache off: every call verifies the signature (the comparison with decode).
    let jwt = JwtAuthenticator::builder(ISSUER, AUDIENCE)
        .keys(issuer.static_keys())
        .token_cache(0)
        .build()
        .unwrap();
    let mut service: Svc = AuthLayer::new(jwt).layer(service_fn(inner as fn(_) -> _));
    // Cache on (the default): a repeated token is a cache hit.
    let cached_jwt = JwtAuthenticator::builder(ISSUER, AUDIENCE)
        .keys(issuer.static_keys())
        .build()
        .unwrap();
    let mut cached_service: Svc = AuthLayer::new(cached_jwt).layer(service_fn(inner as fn(_) -> _));

    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let token = issuer
            .token()
            .algorithm(alg)
            .subject("bench-user")
            .audience(AUDIENCE)
            .scope("items:read items:write")
            .expires_in(Duration::from_secs(3600))
            .mint();
        let bearer = format!("Bearer {token}");
        let kid = issuer.kid(alg).unwrap();
        let key = DecodingKey::from_jwk(jwks.find(kid).unwrap()).unwrap();
        let mut validation = Validation::new(match alg {
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            _ => jsonwebtoken::Algorithm::EdDSA,
        });
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);

        let call = |service: &mut Svc, bearer: &str| {
            let request = Request::get("/items")
                .header("authorization", bearer)
                .body(())
                .unwrap();
            now(service.call(request)).unwrap()
        };
        // Sanity checks outside the timing loop.
        assert_eq!(call(&mut service, &bearer).status(), StatusCode::OK);
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'Q' } else { 'A' });
        assert_eq!(
            call(&mut service, &format!("Bearer {forged}")).status(),
            StatusCode::UNAUTHORIZED
        );
        jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();

        let mut group = c.benchmark_group(format!("jwt/{alg}"));
        group.throughput(Throughput::Elements(1));
        // The request arrives built from the server; building it is not the middleware's
        // cost, so it happens in the untimed setup.
        let request = || {
            Request::get("/items")
                .header("authorization", &bearer)
                .body(())
                .unwrap()
        };
        group.bench_function("ours_full_call", |b| {
            b.iter_batched(
                request,
                |req| black_box(now(service.call(req)).unwrap()),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("jsonwebtoken_decode", |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &key, &validation)
                        .unwrap(),
                )
            })
        });
        assert_eq!(call(&mut cached_service, &bearer).status(), StatusCode::OK);
        group.bench_function("ours_full_call_cache_hit", |b| {
            b.iter_batched(
                request,
                |req| black_box(now(cached_service.call(req)).unwrap()),
                BatchSize::SmallInput,
            )
        });
        let set = issuer.static_keys().key_set().clone();
        group.bench_function("ours_verify_signature_only", |b| {
            b.iter(|| black_box(verify_signature(black_box(&token), &set, &[alg]).unwrap()))
        });
        if alg == Algorithm::RS256 {
            let forged = format!("Bearer {forged}");
            let forged_request = || {
                Request::get("/items")
                    .header("authorization", &forged)
                    .body(())
                    .unwrap()
            };
            group.bench_function("ours_reject_bad_signature", |b| {
                b.iter_batched(
                    forged_request,
                    |req| black_box(now(service.call(req)).unwrap()),
                    BatchSize::SmallInput,
                )
            });
            group.bench_function("ours_reject_missing_credentials", |b| {
                b.iter_batched(
                    || Request::new(()),
                    |req| black_box(now(service.call(req)).unwrap()),
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

/// Uncached verification through a `RemoteJwks` (lock-free snapshot) against the same
/// through `StaticKeys`, and the memory held by 10,000 cached tokens.
fn remote_benches(c: &mut Criterion) {
    use tower_api_guard::jwt::RemoteJwks;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = TestIssuer::new(ISSUER);
    let served = rt.block_on(issuer.serve()).unwrap();
    let remote = RemoteJwks::builder(served.jwks_url()).build().unwrap();
    rt.block_on(remote.ready()).unwrap();
    let make = |keys: Box<dyn FnOnce(JwtAuthenticatorBuilder) -> JwtAuthenticatorBuilder>| {
        keys(JwtAuthenticator::builder(ISSUER, AUDIENCE).token_cache(0))
            .build()
            .unwrap()
    };
    let static_jwt = make(Box::new({
        let keys = issuer.static_keys();
        move |b| b.keys(keys)
    }));
    let remote_jwt = make(Box::new(move |b| b.keys(remote)));
    let token = issuer
        .token()
        .audience(AUDIENCE)
        .expires_in(Duration::from_secs(3600))
        .mint();
    let mut group = c.benchmark_group("keysource/RS256");
    group.throughput(Throughput::Elements(1));
    group.bench_function("static_uncached", |b| {
        b.iter(|| black_box(now(static_jwt.verify(black_box(&token))).unwrap()))
    });
    group.bench_function("remote_uncached", |b| {
        b.iter(|| black_box(now(remote_jwt.verify(black_box(&token))).unwrap()))
    });
    group.finish();

    // Memory of 10,000 cached tokens (RSS delta; printed, not timed).
    let cached = JwtAuthenticator::builder(ISSUER, AUDIENCE)
        .keys(issuer.static_keys())
        .build()
        .unwrap();
    let tokens: Vec<String> = (0..10_000)
        .map(|i| {
            issuer
                .token()
                .audience(AUDIENCE)
                .subject(format!("user-{i}"))
                .scope("items:read items:write")
                .expires_in(Duration::from_secs(3600))
                .mint()
        })
        .collect();
    let before = rss_kib();
    for t in &tokens {
        now(cached.verify(t)).unwrap();
    }
    let after = rss_kib();
    println!(
        "memory: 10,000 cached tokens ({} cached, ~{} bytes each as text) take about {} KiB of resident memory ({} bytes per token)",
        cached.cached_tokens(),
        tokens[0].len(),
        after.saturating_sub(before),
        after.saturating_sub(before) * 1024 / 10_000
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// A scope check and an expression check against a bare inner service call.
fn authz_benches(c: &mut Criterion) {
    use tower_api_guard::authz::RequireLayer;
    use tower_api_guard::{Identity, Source};
    let identity = Identity::builder(
        "bench",
        Source::Custom {
            mechanism: "bench".into(),
        },
    )
    .scopes(["items:read", "items:write", "orders:read", "profile"])
    .roles(["support", "viewer"])
    .build();
    let request = || {
        let mut req = Request::new(());
        req.extensions_mut().insert(identity.clone());
        req
    };
    type Inner = fn(Request<()>) -> std::future::Ready<Result<Response<String>, Infallible>>;
    let mut bare = service_fn(inner as Inner);
    let mut scope =
        RequireLayer::all_scopes(["items:write"]).layer(service_fn(inner as fn(_) -> _));
    let mut expr = RequireLayer::expr("items:write and (admin or support) and not suspended")
        .unwrap()
        .layer(service_fn(inner as fn(_) -> _));
    assert_eq!(now(scope.call(request())).unwrap().status(), StatusCode::OK);
    assert_eq!(now(expr.call(request())).unwrap().status(), StatusCode::OK);

    let mut group = c.benchmark_group("authz");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_inner_call", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(bare.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("scope_check", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(scope.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("expression_check", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(expr.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The quickstart's document policy (examples/policies/documents.{cedar,rego}): an engine's
/// decision alone (Cedar without and with its decision cache), and the whole `RequireLayer` call (facts, resource loader, decision, inner
/// call) against the same call guarded by a scope check, in the same run.
fn policy_benches(c: &mut Criterion) {
    use serde_json::{Map, Value};
    use tower_api_guard::authz::{RequireLayer, RouteMatch};
    use tower_api_guard::policy::cedar::CedarEngine;
    use tower_api_guard::policy::rego::RegoEngine;
    use tower_api_guard::policy::{
        Action, Evaluation, Policy, PolicyEngine, PolicyInput, PolicyRequirement, Resource,
        ResourceLoading,
    };
    use tower_api_guard::{Identity, Source};

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policies");
    let cedar = CedarEngine::from_files(
        format!("{dir}/documents.cedar").as_ref(),
        Some(format!("{dir}/documents.cedarschema").as_ref()),
    )
    .unwrap();
    let rego = RegoEngine::from_file(format!("{dir}/documents.rego").as_ref()).unwrap();
    // The evaluator itself: no decision cache.
    let uncached = CedarEngine::from_files(
        format!("{dir}/documents.cedar").as_ref(),
        Some(format!("{dir}/documents.cedarschema").as_ref()),
    )
    .unwrap()
    .decision_cache(0);
    let identity = Identity::builder(
        "demo-user",
        Source::Jwt {
            issuer: ISSUER.into(),
        },
    )
    .scopes(["items:read"])
    .build();
    let mut owner = Map::new();
    owner.insert("owner".into(), Value::from("demo-user"));
    let input = PolicyInput::new(
        &identity,
        Action::new("read", "GET", Some("/documents/{id}".into())),
        Resource::new("Document", Some("1".into())).with_attributes(owner.clone()),
        1_800_000_000,
    );
    let allowed = |e: &dyn PolicyEngine| matches!(e.evaluate(&input), Evaluation::Ready(Ok(d)) if d.is_allowed());
    assert!(allowed(&cedar) && allowed(&rego) && allowed(&uncached));

    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cedar_decision", |b| {
        b.iter(|| black_box(uncached.evaluate(black_box(&input))))
    });
    group.bench_function("cedar_decision_cached", |b| {
        b.iter(|| black_box(cedar.evaluate(black_box(&input))))
    });
    group.bench_function("rego_decision", |b| {
        b.iter(|| black_box(rego.evaluate(black_box(&input))))
    });

    let request = || {
        let mut req = Request::get("/documents/1").body(()).unwrap();
        req.extensions_mut().insert(identity.clone());
        req.extensions_mut()
            .insert(RouteMatch::new("/documents/{id}", [("id", "1")]));
        req
    };
    let guarded = |policy: Policy| {
        let owner = owner.clone();
        let requirement = PolicyRequirement::new(policy)
            .resource("Document", "id")
            .action(http::Method::GET, "read")
            .loader(move |_: &str, _: &str| ResourceLoading::Ready(Ok(owner.clone())));
        RequireLayer::policy(requirement).layer(service_fn(inner as fn(_) -> _))
    };
    let mut scope = RequireLayer::all_scopes(["items:read"]).layer(service_fn(inner as fn(_) -> _));
    let mut with_cedar = guarded(Policy::new(cedar));
    let mut with_rego = guarded(Policy::new(rego));
    assert_eq!(now(scope.call(request())).unwrap().status(), StatusCode::OK);
    assert_eq!(
        now(with_cedar.call(request())).unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        now(with_rego.call(request())).unwrap().status(),
        StatusCode::OK
    );
    group.bench_function("scope_check_call", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(scope.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("cedar_call", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(with_cedar.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("rego_call", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(with_rego.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The API-key path (extract, checksum, digest, cached lookup, identity, inner call) against a
/// bare inner call, and a miss against SQLite.
fn api_key_benches(c: &mut Criterion) {
    use tower_api_guard::api_key::{
        ApiKeyAuthenticator, ApiKeyManager, CachedKeyStore, KeyFormat, MemoryKeyStore, NewKey,
        SqliteKeyStore,
    };
    let format = KeyFormat::new("sk_live").unwrap();
    let (key, record) = format
        .generate(NewKey::new("svc", "bench").scopes(["items:read"]))
        .unwrap();
    let memory = MemoryKeyStore::new();
    memory.insert(record.clone());
    type Inner = fn(Request<()>) -> std::future::Ready<Result<Response<String>, Infallible>>;
    let mut bare = service_fn(inner as Inner);
    let mut cached = AuthLayer::new(ApiKeyAuthenticator::new(
        format.clone(),
        CachedKeyStore::new(memory),
    ))
    .layer(service_fn(inner as Inner));
    let request = || {
        Request::get("/items")
            .header("x-api-key", key.expose())
            .body(())
            .unwrap()
    };
    // Warm the cache.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(cached.call(request())).unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        now(cached.call(request())).unwrap().status(),
        StatusCode::OK
    );

    let sqlite = rt
        .block_on(SqliteKeyStore::connect("sqlite::memory:"))
        .unwrap();
    rt.block_on(sqlite.migrate()).unwrap();
    rt.block_on(sqlite.create(&record)).unwrap();
    let mut uncached =
        AuthLayer::new(ApiKeyAuthenticator::new(format, sqlite)).layer(service_fn(inner as Inner));
    assert_eq!(
        rt.block_on(uncached.call(request())).unwrap().status(),
        StatusCode::OK
    );

    let mut group = c.benchmark_group("api_key");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_inner_call", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(bare.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("cached_hit_full_call", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(cached.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("sqlite_miss_full_call", |b| {
        b.iter_batched(
            request,
            |req| black_box(rt.block_on(uncached.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The in-process GCRA check with 10,000 active keys against governor's keyed `check_key`
/// on the same keys, on one thread and on two; and memory per key.
fn rate_limit_benches(c: &mut Criterion) {
    use std::num::NonZeroU32;
    use tower_api_guard::clock::{Clock, MonotonicClock};
    use tower_api_guard::rate_limit::{MemoryStore, Quota};
    let keys: Vec<String> = (0..10_000).map(|i| format!("jwt\u{0}user-{i}")).collect();
    let quota = [Quota::parse("1000000/s").unwrap()];
    let ours = MemoryStore::new(100_000);
    let governor = governor::RateLimiter::keyed(governor::Quota::per_second(
        NonZeroU32::new(1_000_000).unwrap(),
    ));
    // The rate-limit layers' default clock, read on every check as the layer does.
    let clock = MonotonicClock::new();
    let now = clock.now();
    for k in &keys {
        ours.check(k, &quota, 1, now);
        let _ = governor.check_key(k);
    }
    let mut group = c.benchmark_group("rate_limit");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("ours_check_10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(ours.check(&keys[i], &quota, 1, clock.now()))
        })
    });
    let mut j = 0usize;
    group.bench_function("governor_check_key_10k_keys", |b| {
        b.iter(|| {
            j = (j + 1) % keys.len();
            black_box(governor.check_key(&keys[j]).is_ok())
        })
    });
    // Two threads, each doing `iters` checks over its half of the keys.
    let two_threads = |f: &(dyn Fn(&str) + Sync), iters: u64| {
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            for t in 0..2 {
                let keys = &keys;
                s.spawn(move || {
                    for n in 0..iters {
                        f(&keys[(t * 5_000 + (n as usize % 5_000)) % keys.len()]);
                    }
                });
            }
        });
        start.elapsed()
    };
    group.bench_function("ours_check_10k_keys_2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(
                &|k| {
                    black_box(ours.check(k, &quota, 1, clock.now()));
                },
                iters,
            )
        })
    });
    group.bench_function("governor_check_key_10k_keys_2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(
                &|k| {
                    black_box(governor.check_key(&k.to_owned()).is_ok());
                },
                iters,
            )
        })
    });
    group.finish();
}

/// Redis decisions per second with 64 concurrent callers, batched (the default) and one
/// decision per call, against `redis-benchmark`'s `EVALSHA` rate for a trivial script in
/// the same run; and the same load through a Redis Cluster (`REDIS_CLUSTER_URL`) against
/// one server. Needs `REDIS_URL` and `redis-benchmark`; printed, not a criterion timing.
fn redis_benches(_c: &mut Criterion) {
    use tower_api_guard::rate_limit::{Quota, RedisStore};
    let Ok(url) = std::env::var("REDIS_URL") else {
        println!("redis: skipped (REDIS_URL is not set)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = 100_000u32;
    let rate_at = |url: &str, batch: usize, in_flight: usize| {
        rt.block_on(async {
            let store = RedisStore::connect(url)
                .await
                .unwrap()
                .prefix("tag-bench")
                .max_batch(std::num::NonZeroUsize::new(batch).unwrap())
                .max_in_flight(std::num::NonZeroUsize::new(in_flight).unwrap());
            let quota = [Quota::parse("1000000/s").unwrap()];
            let start = std::time::Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..64u32 {
                let store = store.clone();
                tasks.spawn(async move {
                    for n in 0..total / 64 {
                        let key = format!("user-{}", (c * 1000 + n) % 10_000);
                        store.check(&key, &quota, 1).await.unwrap();
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            f64::from(total / 64 * 64) / start.elapsed().as_secs_f64()
        })
    };
    let rate = |batch: usize, in_flight: usize| rate_at(&url, batch, in_flight);
    // One decision per call, pipelined without limit: what the store did before batching.
    let single = rate(1, 1024);
    let ours = rate(64, 4);
    // The same load through a Redis Cluster (the defaults: batches split by slot).
    match std::env::var("REDIS_CLUSTER_URL") {
        Ok(cluster_url) => {
            let cluster = rate_at(&cluster_url, 64, 4);
            println!(
                "redis: cluster {cluster:.0} decisions/s against one server {ours:.0}/s, \
                 64 callers, the defaults; ratio {:.2}",
                cluster / ours
            );
        }
        Err(_) => println!("redis: cluster skipped (REDIS_CLUSTER_URL is not set)"),
    }
    println!(
        "redis: {ours:.0} decisions/s batched (the defaults) against {single:.0}/s one \
         decision per call (max_batch 1, max_in_flight 1024), 64 callers; ratio {:.2}",
        ours / single
    );
    let (host, port) = url
        .trim_start_matches("redis://")
        .split_once(':')
        .map(|(h, p)| (h.to_owned(), p.trim_end_matches('/').to_owned()))
        .unwrap_or(("127.0.0.1".into(), "6379".into()));
    let sha = std::process::Command::new("redis-cli")
        .args(["-h", &host, "-p", &port, "SCRIPT", "LOAD", "return 1"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let baseline = sha.and_then(|sha| {
        let out = std::process::Command::new("redis-benchmark")
            .args([
                "-h", &host, "-p", &port, "-n", "100000", "-c", "64", "-q", "EVALSHA", &sha, "0",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .zip(text.split_whitespace().skip(1))
            .find(|(_, unit)| unit.starts_with("requests"))
            .and_then(|(n, _)| n.parse::<f64>().ok())
    });
    match baseline {
        Some(base) => println!(
            "redis: {ours:.0} rate-limit decisions/s with 64 callers; redis-benchmark EVALSHA \
             (trivial script): {base:.0}/s; ratio {:.2}",
            ours / base
        ),
        None => println!("redis: {ours:.0} decisions/s (redis-benchmark not available)"),
    }
}

/// DPoP (RFC 9449): a DPoP-bound request (proof check, then the token from the verified-token
/// cache, then the binding and the replay cache) against the same kind of token as a plain
/// bearer token (a cache hit), and one bare signature check of the proof's algorithm — the
/// target is `dpop_bound_full_call - bearer_full_call < signature_only + 2 µs`. (The replay
/// cache's own insert is `replay/replay_insert_memory`.)
fn dpop_benches(c: &mut Criterion) {
    use std::num::NonZeroUsize;
    use tower_api_guard::jwt::{DpopConfig, DpopMode, ExternalOrigin, JwtKey, MemoryReplayCache};

    const URL: &str = "https://api.example.com/items";
    let issuer = TestIssuer::new(ISSUER);
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        // Room for every proof of the run: a full cache would measure rejections.
        let replay = MemoryReplayCache::new(NonZeroUsize::new(20_000_000).unwrap());
        let jwt = JwtAuthenticator::builder(ISSUER, AUDIENCE)
            .keys(issuer.static_keys())
            .dpop(
                DpopConfig::new(DpopMode::Allowed)
                    .external_origin(ExternalOrigin::parse("https://api.example.com").unwrap())
                    .replay_cache(replay),
            )
            .build()
            .unwrap();
        let mut service: Svc = AuthLayer::new(jwt).layer(service_fn(inner as fn(Request<()>) -> _));
        let client = issuer.dpop_key(alg);
        let bound = issuer.token().audience(AUDIENCE).dpop_bound(&client).mint();
        let plain = issuer.token().audience(AUDIENCE).mint();
        let dpop_auth = format!("DPoP {bound}");
        let bearer = format!("Bearer {plain}");
        let dpop_request = |proof: String| {
            Request::get("/items")
                .header("authorization", &dpop_auth)
                .header("dpop", proof)
                .body(())
                .unwrap()
        };
        let mint = || client.proof("GET", URL).access_token(&bound).mint();
        // Warm the token cache and check both paths answer 200.
        assert_eq!(
            now(service.call(dpop_request(mint()))).unwrap().status(),
            StatusCode::OK
        );
        let bearer_request = || {
            Request::get("/items")
                .header("authorization", &bearer)
                .body(())
                .unwrap()
        };
        assert_eq!(
            now(service.call(bearer_request())).unwrap().status(),
            StatusCode::OK
        );

        let mut group = c.benchmark_group(format!("dpop/{alg}"));
        group.throughput(Throughput::Elements(1));
        // Each iteration needs a new proof (a new jti); minting it is the client's cost.
        group.bench_function("dpop_bound_full_call", |b| {
            b.iter_batched(
                || dpop_request(mint()),
                |req| {
                    let res = now(service.call(req)).unwrap();
                    debug_assert_eq!(res.status(), StatusCode::OK);
                    black_box(res)
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("bearer_full_call", |b| {
            b.iter_batched(
                bearer_request,
                |req| black_box(now(service.call(req)).unwrap()),
                BatchSize::SmallInput,
            )
        });
        // One signature check of the proof's algorithm, the key already parsed, on a new
        // proof each time (minted in the untimed setup, like the full call's).
        let key = JwtKey::from_jwk_json(client.public_jwk().to_string().as_bytes()).unwrap();
        let split = |proof: String| {
            let (input, signature) = proof.rsplit_once('.').unwrap();
            (input.to_owned(), base64_url(signature))
        };
        let (input, signature) = split(mint());
        assert!(key.verify(alg, input.as_bytes(), &signature));
        group.bench_function("signature_only", |b| {
            b.iter_batched(
                || split(mint()),
                |(input, signature)| black_box(key.verify(alg, input.as_bytes(), &signature)),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

/// One insert of a fresh key into the in-process DPoP replay cache (1,000,000 keys, 16
/// shards), in steady state: the clock moves 2 s every 250,000 inserts, so full shards
/// sweep their expired keys, and that cost is in the number. The keys come from a counter
/// (the cache hashes them with a seeded hasher, so their shape does not matter).
fn replay_insert_memory(c: &mut Criterion) {
    use std::num::NonZeroUsize;
    use std::sync::Arc;
    use tower_api_guard::clock::ManualClock;
    use tower_api_guard::jwt::{MemoryReplayCache, ReplayAnswer, ReplayCache};
    let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
    let cache = MemoryReplayCache::new(NonZeroUsize::new(1_000_000).unwrap()).clock(clock.clone());
    let ttl = Duration::from_secs(1);
    let mut n = 0u64;
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(1));
    group.bench_function("replay_insert_memory", |b| {
        b.iter(|| {
            n += 1;
            if n.is_multiple_of(250_000) {
                clock.advance(Duration::from_secs(2));
            }
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&n.to_le_bytes());
            let answer = cache.insert(black_box(&key), ttl);
            assert!(matches!(answer, ReplayAnswer::Fresh), "{answer:?}");
        })
    });
    group.finish();
}

/// The gateway's identity headers: five headers from the identity (subject, source, scopes,
/// roles, tenant) with the prefix stripping on, against the same inner call without the
/// layer. Target: under 1 µs added.
fn upstream_benches(c: &mut Criterion) {
    use tower_api_guard::testing::{IdentityLayer, caller};
    use tower_api_guard::upstream::IdentityHeadersLayer;

    let identity = caller("alice")
        .scopes(["items:read", "items:write"])
        .roles(["reader"])
        .tenant("t1")
        .build();
    let inner = || service_fn(inner as fn(Request<()>) -> _);
    let mut bare = IdentityLayer::new(identity.clone()).layer(inner());
    let headers = IdentityHeadersLayer::new("x-auth-")
        .unwrap()
        .subject("x-auth-subject")
        .unwrap()
        .source("x-auth-source")
        .unwrap()
        .scopes("x-auth-scopes")
        .unwrap()
        .roles("x-auth-roles")
        .unwrap()
        .tenant("x-auth-tenant")
        .unwrap();
    let mut with = IdentityLayer::new(identity).layer(headers.layer(inner()));
    let request = || {
        Request::get("/items")
            .header("authorization", "Bearer abc")
            .header("accept", "*/*")
            .header("x-auth-subject", "spoofed")
            .body(())
            .unwrap()
    };
    let mut group = c.benchmark_group("upstream");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_inner_call", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(bare.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("identity_headers_five", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(with.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// An introspection cache hit through `AuthLayer`, against a JWT verified-token cache hit
/// through `AuthLayer` (target: within 1.5×). The endpoint is an in-process fake: only
/// hits are measured.
fn introspection_benches(c: &mut Criterion) {
    use tower_api_guard::introspection::{
        IntrospectionAuthenticator, IntrospectionClient, IntrospectionFuture, IntrospectionRequest,
    };

    #[derive(Debug)]
    struct Fixed;
    impl IntrospectionClient for Fixed {
        fn introspect(&self, _: IntrospectionRequest) -> IntrospectionFuture {
            Box::pin(async {
                Ok(bytes::Bytes::from_static(
                    br#"{"active":true,"sub":"alice","scope":"items:read","exp":4000000000}"#,
                ))
            })
        }
        fn get(&self, _: String, _: Duration) -> IntrospectionFuture {
            Box::pin(async { Ok(bytes::Bytes::new()) })
        }
    }

    let opaque = IntrospectionAuthenticator::builder("https://idp.example/introspect")
        .client(Fixed)
        .build()
        .unwrap();
    let mut opaque_service =
        AuthLayer::new(opaque).layer(service_fn(inner as fn(Request<()>) -> _));
    let issuer = TestIssuer::new(ISSUER);
    let jwt = JwtAuthenticator::builder(ISSUER, AUDIENCE)
        .keys(issuer.static_keys())
        .build()
        .unwrap();
    let mut jwt_service: Svc = AuthLayer::new(jwt).layer(service_fn(inner as fn(Request<()>) -> _));
    let token = issuer.token().audience(AUDIENCE).mint();
    let opaque_token = "2YotnFZFEjr1zCsicMWpAA-an-opaque-access-token";
    let request = |t: &str| {
        Request::get("/items")
            .header("authorization", format!("Bearer {t}"))
            .body(())
            .unwrap()
    };
    // Warm both caches (the introspection fake answers at once).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert_eq!(
        runtime
            .block_on(opaque_service.call(request(opaque_token)))
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        now(jwt_service.call(request(&token))).unwrap().status(),
        StatusCode::OK
    );
    let mut group = c.benchmark_group("introspection");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cache_hit_full_call", |b| {
        b.iter_batched(
            || request(opaque_token),
            |req| black_box(now(opaque_service.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("jwt_cache_hit_full_call", |b| {
        b.iter_batched(
            || request(&token),
            |req| black_box(now(jwt_service.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn base64_url(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The cost of the metrics (issue 18): a full call through authentication (a token-cache
/// hit), a scope guard and an in-memory rate limit, with no recorder installed and with a
/// real one (metrics-exporter-prometheus), in the same run.
fn metrics_benches(c: &mut Criterion) {
    use tower::ServiceBuilder;
    use tower_api_guard::authz::RequireLayer;
    use tower_api_guard::rate_limit::{Quota, RateLimiterLayer};

    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let issuer = TestIssuer::new(ISSUER);
    let jwt = JwtAuthenticator::builder(ISSUER, AUDIENCE)
        .keys(issuer.static_keys())
        .build()
        .unwrap();
    let mut service = ServiceBuilder::new()
        .layer(AuthLayer::new(jwt))
        .layer(RequireLayer::all_scopes(["items:read"]))
        .layer(RateLimiterLayer::new([Quota::parse("1000000/s")
            .unwrap()
            .with_burst(
                std::num::NonZeroU32::new(1_000_000_000).unwrap(),
            )]))
        .service(service_fn(inner as fn(_) -> _));
    let token = issuer
        .token()
        .algorithm(Algorithm::ES256)
        .subject("bench-user")
        .audience(AUDIENCE)
        .scope("items:read")
        .expires_in(Duration::from_secs(3600))
        .mint();
    let bearer = format!("Bearer {token}");
    let request = || {
        Request::get("/items")
            .header("authorization", &bearer)
            .body(())
            .unwrap()
    };
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    metrics::with_local_recorder(&prometheus, tower_api_guard::metrics::enable);
    metrics::with_local_recorder(&prometheus, || {
        assert_eq!(
            now(service.call(request())).unwrap().status(),
            StatusCode::OK
        );
    });
    assert!(
        handle.render().contains(
            "tower_api_guard_decisions_total{layer=\"auth\",outcome=\"allowed\",reason=\"none\"} 1"
        ),
        "{}",
        handle.render()
    );

    let mut group = c.benchmark_group("metrics");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cache_hit_stack_no_recorder", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(service.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("cache_hit_stack_prometheus_recorder", |b| {
        metrics::with_local_recorder(&prometheus, || {
            b.iter_batched(
                request,
                |req| black_box(now(service.call(req)).unwrap()),
                BatchSize::SmallInput,
            )
        })
    });
    group.finish();
}

criterion_group! { name = benches; config = config(); targets = jwt_benches, dpop_benches, remote_benches, authz_benches, policy_benches, api_key_benches, rate_limit_benches, redis_benches, replay_insert_memory, upstream_benches, introspection_benches, metrics_benches }
criterion_main!(benches);
