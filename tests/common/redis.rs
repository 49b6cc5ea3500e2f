//! Redis for the tests: the servers `.ci/run` starts (named by `REDIS_URL` and
//! `REDIS_CLUSTER_URL`), key prefixes of a test's own, a redis-server of a test's own to
//! stop, freeze or restart mid-test, and a rate-limited service over a Redis store.

use std::convert::Infallible;
use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use tower::ServiceBuilder;
use tower::util::BoxCloneService;
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::body::ResponseBody;
use tower_api_guard::rate_limit::{Quota, RateLimiterLayer, RedisStore};
use tower_api_guard::testing::TestIssuer;

/// A service behind JWT authentication and a rate limit kept in Redis.
pub type Limited =
    BoxCloneService<Request<()>, Response<ResponseBody<ResponseBody<String>>>, Infallible>;

/// `issuer`'s tokens for audience `api`, limited to `quota` per identity in `store`.
pub fn limited(issuer: &TestIssuer, store: RedisStore, quota: &str) -> Limited {
    let jwt = super::jwt::trusting(issuer, "api").build().unwrap();
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(AuthLayer::new(jwt))
            .layer(RateLimiterLayer::new([Quota::parse(quota).unwrap()]).redis(store))
            .service_fn(super::calls::ok::<()>),
    )
}

/// The URL in `var`, or `None` with the reason printed (a laptop without the servers).
pub fn env_url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok();
    if url.is_none() {
        eprintln!("skipped: {var} is not set (`.ci/run` starts the servers and sets it)");
    }
    url
}

/// `prefix` made unique to this run and call, for keys no other test touches.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}:{nanos}")
}

/// A redis-server of the test's own on loopback; stopped when dropped.
pub struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    /// A server on a free port, or `None` (printed) without `REDIS_URL` (which CI sets
    /// where it installs redis-server).
    pub async fn start() -> Option<Self> {
        env_url("REDIS_URL")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Some(Self::start_on(port).await)
    }

    /// A server on `port` (again, after [`stop`](Self::stop)), answering when this returns.
    pub async fn start_on(port: u16) -> Self {
        Self::start_with(port, [] as [&str; 0]).await
    }

    /// A server on `port` with more settings (`--cluster-enabled yes`, …).
    pub async fn start_with<I, A>(port: u16, settings: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/run)");
        let redis = Self { child, port };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on {port}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Send `signal` (`-STOP`, `-CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
