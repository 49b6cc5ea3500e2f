//! The Redis replay cache of DPoP proofs against real Redis servers: the machine's (with
//! `REDIS_URL`; in CI a missing `REDIS_URL` is a failure), and one this test starts on a
//! free port and freezes mid-test.
#![cfg(all(feature = "jwt", feature = "redis"))]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tower_api_guard::jwt::{RedisReplayCache, ReplayAnswer, ReplayCache, ReplayError};

/// `REDIS_URL`, or `None` (printed) when it is unset outside CI.
fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("REDIS_URL must be set in CI (`.ci/run` starts Redis)")
        }
        Err(_) => {
            eprintln!("skipping: REDIS_URL not set");
            None
        }
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}:{}:", nanos())
}

/// A key that differs between runs and between calls.
fn key(n: u8) -> [u8; 32] {
    let mut k = [n; 32];
    k[..16].copy_from_slice(&nanos().to_le_bytes());
    k[16] = n;
    k
}

/// The answer, waited for: `Ok(true)` fresh, `Ok(false)` replayed.
async fn resolve(answer: ReplayAnswer) -> Result<bool, ReplayError> {
    match answer {
        ReplayAnswer::Fresh => Ok(true),
        ReplayAnswer::Replayed => Ok(false),
        ReplayAnswer::Failed(e) => Err(e),
        ReplayAnswer::Wait(f) => f.await,
    }
}

/// Unpadded base64url, as the cache names its keys.
fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[test]
fn the_test_encoder_is_base64url() {
    assert_eq!(base64url(b"\xfb\xff\xbf"), "-_-_");
    assert_eq!(base64url(b"ab"), "YWI");
    assert_eq!(base64url(&[0u8; 32]).len(), 43);
}

#[tokio::test]
async fn two_replicas_share_the_cache() {
    let Some(url) = redis_url() else { return };
    let prefix = unique("tag-test:dpop");
    let a = RedisReplayCache::connect(&url)
        .await
        .unwrap()
        .prefix(&prefix);
    let client = redis::Client::open(url.as_str()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let b = RedisReplayCache::from_connection(conn).prefix(&prefix);
    let ttl = Duration::from_secs(60);

    let k1 = key(1);
    let first = a.insert(&k1, ttl);
    assert!(matches!(first, ReplayAnswer::Wait(_)), "{first:?}");
    assert!(resolve(first).await.unwrap(), "new on replica A");
    assert!(!resolve(b.insert(&k1, ttl)).await.unwrap(), "replayed on B");
    assert!(!resolve(a.insert(&k1, ttl)).await.unwrap(), "replayed on A");

    let k2 = key(2);
    assert!(
        resolve(b.insert(&k2, ttl)).await.unwrap(),
        "another key is new"
    );
    assert!(!resolve(a.insert(&k2, ttl)).await.unwrap());

    // Another prefix is another cache.
    let c = a.clone().prefix(&unique("tag-test:dpop-other"));
    assert!(resolve(c.insert(&k1, ttl)).await.unwrap());
}

#[tokio::test]
async fn concurrent_inserts_of_one_key_have_one_winner() {
    let Some(url) = redis_url() else { return };
    let prefix = unique("tag-test:dpop-race");
    let caches = [
        RedisReplayCache::connect(&url)
            .await
            .unwrap()
            .prefix(&prefix),
        RedisReplayCache::connect(&url)
            .await
            .unwrap()
            .prefix(&prefix),
    ];
    let k = key(3);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let answer = caches[i % 2].insert(&k, Duration::from_secs(60));
        tasks.spawn(resolve(answer));
    }
    let mut fresh = 0;
    while let Some(done) = tasks.join_next().await {
        fresh += usize::from(done.unwrap().unwrap());
    }
    assert_eq!(fresh, 1);
}

#[tokio::test]
async fn a_key_lives_for_its_ttl_under_its_name() {
    let Some(url) = redis_url() else { return };
    let prefix = unique("tag-test:dpop-ttl");
    let cache = RedisReplayCache::connect(&url)
        .await
        .unwrap()
        .prefix(&prefix);
    let client = redis::Client::open(url.as_str()).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    let pttl = |name: String| {
        let mut raw = raw.clone();
        async move {
            redis::cmd("PTTL")
                .arg(name)
                .query_async::<i64>(&mut raw)
                .await
                .unwrap()
        }
    };

    let k = key(4);
    let name = format!("{prefix}{}", base64url(&k));
    assert!(
        resolve(cache.insert(&k, Duration::from_secs(5)))
            .await
            .unwrap()
    );
    let left = pttl(name.clone()).await;
    assert!(0 < left && left <= 5_000, "PTTL {left}");
    let value: String = redis::cmd("GET")
        .arg(&name)
        .query_async(&mut raw.clone())
        .await
        .unwrap();
    assert_eq!(value, "1");

    // A replay does not extend the key's life.
    assert!(
        !resolve(cache.insert(&k, Duration::from_secs(600)))
            .await
            .unwrap()
    );
    let left = pttl(name).await;
    assert!(0 < left && left <= 5_000, "PTTL {left} after a replay");

    // Sub-millisecond and zero ttls still set an expiry (at least 1 ms), never a
    // key without one; the key may already be gone when PTTL asks (-2), never -1.
    let k = key(5);
    assert!(resolve(cache.insert(&k, Duration::ZERO)).await.unwrap());
    let left = pttl(format!("{prefix}{}", base64url(&k))).await;
    assert!(left == -2 || (0..=1).contains(&left), "PTTL {left}");
}

#[tokio::test]
async fn the_default_prefix_names_keys() {
    let Some(url) = redis_url() else { return };
    let cache = RedisReplayCache::connect(&url).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let k = key(6);
    assert!(
        resolve(cache.insert(&k, Duration::from_secs(5)))
            .await
            .unwrap()
    );
    let name = format!("tag:dpop:jti:{}", base64url(&k));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&name)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, 1);
    let _: i64 = redis::cmd("DEL")
        .arg(&name)
        .query_async(&mut raw)
        .await
        .unwrap();
}

/// Needs no Redis server: nothing listens on port 1.
#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let started = Instant::now();
    let err = RedisReplayCache::connect("redis://127.0.0.1:1")
        .await
        .unwrap_err();
    assert_eq!(err.message(), "cannot connect to Redis");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(RedisReplayCache::connect("not a url").await.is_err());
}

/// A redis-server of the test's own; frozen (SIGSTOP) it accepts bytes but never answers.
struct OwnRedis(Child);

impl OwnRedis {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_server_that_stops_answering_fails_within_the_timeout() {
    if redis_url().is_none() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let redis = match spawned {
        Ok(child) => OwnRedis(child),
        // A Redis in a container, say: this test needs a server binary of its own.
        Err(e) if std::env::var("CI").is_err() => {
            eprintln!("skipping: cannot start a redis-server of the test's own ({e})");
            return;
        }
        Err(e) => panic!("redis-server must be installed (see .ci/run): {e}"),
    };
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "redis-server did not start on {port}");
    let url = format!("redis://127.0.0.1:{port}");
    let timeout = Duration::from_millis(200);
    let cache = RedisReplayCache::connect(&url)
        .await
        .unwrap()
        .timeout(timeout);
    assert!(
        resolve(cache.insert(&key(7), Duration::from_secs(60)))
            .await
            .unwrap()
    );

    redis.signal("-STOP");
    let k = key(8);
    let started = Instant::now();
    let err = resolve(cache.insert(&k, Duration::from_secs(60)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.reason(), "Redis timed out");
    assert!(
        timeout <= took && took < timeout + Duration::from_secs(1),
        "took {took:?}"
    );

    // Answering again: the cache answers again, and the timed-out insert did land.
    redis.signal("-CONT");
    let mut answered = None;
    for _ in 0..50 {
        match resolve(cache.insert(&k, Duration::from_secs(60))).await {
            Ok(fresh) => {
                answered = Some(fresh);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(answered, Some(false), "the server answers again");
}
