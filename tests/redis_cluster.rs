//! Every Redis-backed part against a real 3-master Redis Cluster: the one `.ci/run` starts
//! (`REDIS_CLUSTER_URL`, e.g. `redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002`),
//! and one this test starts on free ports to stop a master mid-test.
//!
//! Without `REDIS_CLUSTER_URL` the tests print a reason and pass; with it, a cluster that
//! cannot be reached is a failure.
#![cfg(all(
    feature = "rate-limit",
    feature = "redis",
    feature = "jwt",
    feature = "testing"
))]

mod common;

use common::redis::{OwnRedis, env_url, limited, unique};

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response, StatusCode};
use tower::ServiceBuilder;
use tower::util::BoxCloneService;
use tower_api_guard::jwt::{RedisRevocations, RevocationStore, TokenFacts};
use tower_api_guard::rate_limit::{Quota, RateLimiterLayer, RedisStore};
use tower_api_guard::testing::TestIssuer;
use tower_api_guard::{FailurePolicy, RedisConnection};

fn cluster_url() -> Option<String> {
    env_url("REDIS_CLUSTER_URL")
}

/// The `host:port` of each seed of a `redis+cluster://` URL.
fn nodes(url: &str) -> Vec<String> {
    url.trim_start_matches("redis+cluster://")
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A plain connection to one node (not a cluster connection), to see where keys live.
async fn node(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The keys matching `pattern` on each master.
async fn keys_per_node(addrs: &[String], pattern: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for addr in addrs {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut node(addr).await)
            .await
            .unwrap();
        out.insert(addr.clone(), keys);
    }
    out
}

/// Two layer instances (two processes' worth: each its own cluster connection) share one
/// limit exactly: of 10 concurrent requests per identity, split between them, 4 pass, for
/// 16 identities whose keys are spread over all three masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit_across_all_masters() {
    let Some(url) = cluster_url() else { return };
    let issuer = TestIssuer::new("https://issuer.example");
    let prefix = unique("tag-cluster-share");
    let store = || async {
        RedisStore::connect(&url)
            .await
            .expect("REDIS_CLUSTER_URL is set but the cluster cannot be reached")
            .prefix(&prefix)
            .timeout(Duration::from_secs(2))
    };
    let a = limited(&issuer, store().await, "4/min");
    let b = limited(&issuer, store().await, "4/min");
    let mut tasks = tokio::task::JoinSet::new();
    for who in 0..16 {
        let token = issuer
            .token()
            .audience("api")
            .subject(format!("user-{who}"))
            .mint();
        for i in 0..10 {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            let token = token.clone();
            tasks.spawn(async move {
                let res = tower::ServiceExt::oneshot(svc, common::calls::get(Some(&token)))
                    .await
                    .unwrap();
                (who, res.status())
            });
        }
    }
    let mut allowed = BTreeMap::<i32, u32>::new();
    while let Some(done) = tasks.join_next().await {
        let (who, status) = done.unwrap();
        match status {
            StatusCode::OK => *allowed.entry(who).or_default() += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed.len(), 16);
    assert!(allowed.values().all(|&n| n == 4), "{allowed:?}");
    // The identities' keys landed on every master (one hash tag each).
    let placed = keys_per_node(&nodes(&url), &format!("{prefix}:*")).await;
    assert!(placed.values().all(|keys| !keys.is_empty()), "{placed:?}");
    assert_eq!(placed.values().map(Vec::len).sum::<usize>(), 16);
}

/// One store, 300 concurrent decisions for 100 keys in many slots (batches of up to 64
/// split by slot): exactly 2 of each key's 3 pass; then the script cache is flushed on
/// every master and the next decisions reload it (`NOSCRIPT`, per node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_over_many_slots_are_exact() {
    let Some(url) = cluster_url() else { return };
    let store = RedisStore::connect(&url)
        .await
        .unwrap()
        .prefix(&unique("tag-cluster-batch"))
        .timeout(Duration::from_secs(2));
    let quota = vec![Quota::parse("2/min").unwrap()];
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..3 {
        for key in 0..100 {
            let (store, quota) = (store.clone(), quota.clone());
            tasks.spawn(async move {
                let _ = round;
                let d = store.check(&format!("k{key}"), &quota, 1).await.unwrap();
                (key, d.allowed())
            });
        }
    }
    let mut allowed = BTreeMap::<i32, u32>::new();
    while let Some(done) = tasks.join_next().await {
        let (key, ok) = done.unwrap();
        *allowed.entry(key).or_default() += u32::from(ok);
    }
    assert!(allowed.values().all(|&n| n == 2), "{allowed:?}");

    for addr in nodes(&url) {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut node(&addr).await)
            .await
            .unwrap();
    }
    let fresh = unique("k-after-flush");
    for expect in [true, true, false] {
        let d = store.check(&fresh, &quota, 1).await.unwrap();
        assert_eq!(d.allowed(), expect);
    }
}

/// Revocations written through one instance are seen by another at once, whatever slots
/// the token's and the subject's keys fall in; a connection handed in works like a URL.
#[tokio::test]
async fn revocations_are_seen_across_instances() {
    let Some(url) = cluster_url() else { return };
    let prefix = unique("tag-cluster-revoked");
    let a = RedisRevocations::connect(&url)
        .await
        .unwrap()
        .prefix(&prefix);
    let shared = RedisConnection::connect(&url).await.unwrap();
    assert!(shared.is_cluster());
    let b = RedisRevocations::from_connection(shared).prefix(&prefix);
    let later = SystemTime::now() + Duration::from_secs(600);
    for i in 0..12 {
        let jti = format!("jti-{i}");
        let fresh = TokenFacts {
            jti: Some(&jti),
            subject: "someone",
            issued_at: None,
        };
        assert!(!b.is_revoked(&fresh).await.unwrap());
        a.revoke_token(&jti, later).await.unwrap();
        assert!(b.is_revoked(&fresh).await.unwrap());
    }
    let now = SystemTime::now();
    let old = TokenFacts {
        jti: Some("untouched"),
        subject: "bob",
        issued_at: Some(now - Duration::from_secs(60)),
    };
    assert!(!b.is_revoked(&old).await.unwrap());
    a.revoke_subject("bob", now).await.unwrap();
    assert!(b.is_revoked(&old).await.unwrap());
    let newer = TokenFacts {
        issued_at: Some(now + Duration::from_secs(1)),
        ..old
    };
    assert!(!b.is_revoked(&newer).await.unwrap());
    // The token keys went to more than one master.
    let placed = keys_per_node(&nodes(&url), &format!("{prefix}:jti:*")).await;
    assert!(
        placed.values().filter(|k| !k.is_empty()).count() > 1,
        "{placed:?}"
    );
}

/// A cluster of the test's own, on free ports, so one of its masters can be stopped.
struct OwnCluster {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    nodes: BTreeMap<u16, OwnRedis>,
}

impl OwnCluster {
    async fn start() -> Self {
        let dir = common::files::tempdir("redis-cluster");
        let ports = free_ports(3);
        let mut cluster = Self {
            dir,
            ports: ports.clone(),
            nodes: BTreeMap::new(),
        };
        for &port in &ports {
            cluster.start_node(port).await;
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed (see .ci/run)");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_ok().await;
        cluster
    }

    async fn start_node(&mut self, port: u16) {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let settings = [
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-node-timeout".into(),
            "1000".into(),
            // The other masters keep serving their slots while one is down.
            "--cluster-require-full-coverage".into(),
            "no".into(),
            "--cluster-config-file".into(),
            dir.join("nodes.conf").into_os_string(),
            "--dir".into(),
            dir.into_os_string(),
        ];
        let node: OwnRedis = OwnRedis::start_with(port, settings).await;
        self.nodes.insert(port, node);
    }

    fn stop_node(&mut self, port: u16) {
        self.nodes.remove(&port);
    }

    /// Until every node says `cluster_state:ok`.
    async fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &self.ports {
            loop {
                let mut conn = node(&format!("127.0.0.1:{port}")).await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ready: {info}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn url(&self) -> String {
        let addrs: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", addrs.join(","))
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for port in self.ports.clone() {
            self.stop_node(port);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` ports free now, each with its cluster-bus port (`+10000`) free too.
fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 50_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            ports.insert(port);
        }
    }
    ports.into_iter().collect()
}

/// A master stopped mid-test: the decisions of its slots follow the failure policy (fail
/// closed: an error; fail open: the layer lets the request through, unlimited), the other
/// masters' keep being decided, and when the master returns the store recovers without
/// a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_follows_the_failure_policy_and_recovers() {
    if cluster_url().is_none() {
        return;
    }
    let mut cluster = OwnCluster::start().await;
    let url = cluster.url();
    let closed = RedisStore::connect(&url)
        .await
        .unwrap()
        .timeout(Duration::from_millis(300))
        .failure_policy(FailurePolicy::Closed);
    let quota = vec![Quota::parse("1000/min").unwrap()];
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert!(closed.check(key, &quota, 1).await.unwrap().allowed());
    }
    // Where each key lives.
    let addrs = nodes(&url);
    let placed = keys_per_node(&addrs, "tag:rl:*").await;
    let victim_addr = &addrs[1];
    let victim_port: u16 = victim_addr.rsplit(':').next().unwrap().parse().unwrap();
    let on_victim: BTreeSet<String> = placed[victim_addr]
        .iter()
        .map(|k| k.split(['{', '}']).nth(1).unwrap().to_owned())
        .collect();
    assert!(!on_victim.is_empty() && on_victim.len() < keys.len());

    cluster.stop_node(victim_port);
    for key in &keys {
        let answer = closed.check(key, &quota, 1).await;
        if on_victim.contains(key) {
            assert!(answer.is_err(), "{key} lives on the stopped master");
        } else {
            assert!(answer.unwrap().allowed(), "{key} lives on a running master");
        }
    }
    // Through the layer, fail open lets the stopped master's identities through.
    let issuer = TestIssuer::new("https://issuer.example");
    let open = limited(
        &issuer,
        RedisStore::connect(&url)
            .await
            .unwrap()
            .timeout(Duration::from_millis(300)),
        "1/min",
    );
    // Some identity hashes to the stopped master: its request passes without the
    // rate-limit fields (the store was not asked), twice over a 1/min quota.
    let mut passed_unlimited = false;
    for who in 0..40 {
        let token = issuer
            .token()
            .audience("api")
            .subject(format!("user-{who}"))
            .mint();
        let first = common::calls::call(&open, common::calls::get(Some(&token))).await;
        assert_eq!(first.status(), StatusCode::OK);
        if !first.headers().contains_key("ratelimit") {
            let again = common::calls::call(&open, common::calls::get(Some(&token))).await;
            assert_eq!(again.status(), StatusCode::OK);
            passed_unlimited = true;
            break;
        }
    }
    assert!(
        passed_unlimited,
        "no identity of 40 hashed to the stopped master"
    );

    // Back on its port with its node file: it serves its slots again and the same store
    // recovers.
    cluster.start_node(victim_port).await;
    let victim_key = on_victim.iter().next().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(decision) = closed.check(victim_key, &quota, 1).await {
            assert!(decision.allowed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not recover after the master came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A service that takes its caller from the request (`x-owner`, `x-key`: an API key of
/// that owner; or `x-user`, `x-client`: a token of that OAuth client), then limits it.
type CredSvc =
    BoxCloneService<Request<()>, Response<tower_api_guard::body::ResponseBody<String>>, Infallible>;

fn credential_service(layer: RateLimiterLayer) -> CredSvc {
    use tower_api_guard::{Identity, Source};
    let identify = |mut req: Request<()>| {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let identity = match (header("x-owner"), header("x-key")) {
            (Some(owner), Some(key)) => Identity::builder(owner, Source::ApiKey { key_id: key }),
            _ => Identity::builder(
                header("x-user").unwrap(),
                Source::Jwt {
                    issuer: "https://issuer.example".into(),
                },
            )
            .claims(serde_json::json!({ "client_id": header("x-client").unwrap() })),
        }
        .build();
        req.extensions_mut().insert(identity);
        req
    };
    BoxCloneService::new(
        ServiceBuilder::new()
            .map_request(identify)
            .layer(layer)
            .service_fn(common::calls::ok::<()>),
    )
}

async fn send(svc: &CredSvc, headers: &[(&str, &str)]) -> StatusCode {
    let mut req = Request::get("/");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    common::calls::call(svc, req.body(()).unwrap())
        .await
        .status()
}

/// Limits per credential on the cluster: two keys of one owner each get their own quota,
/// the owner's quota is checked with them atomically (one slot: the owner's), and a token
/// client's quota (another slot than its users') is shared by the client's users.
#[tokio::test]
async fn per_credential_limits_on_the_cluster() {
    let Some(url) = cluster_url() else { return };
    per_credential_limits(&url).await;
}

/// The same on one server (`REDIS_URL`), where even a client's quota and its user's are
/// one script call.
#[tokio::test]
async fn per_credential_limits_on_one_server() {
    let Some(url) = env_url("REDIS_URL") else {
        return;
    };
    per_credential_limits(&url).await;
}

async fn per_credential_limits(url: &str) {
    let store = RedisStore::connect(url)
        .await
        .unwrap()
        .prefix(&unique("tag-cluster-cred"))
        .timeout(Duration::from_secs(2));
    let svc = credential_service(
        RateLimiterLayer::new([Quota::parse("3/min").unwrap()])
            .per_credential([Quota::parse("2/min").unwrap()])
            .redis(store),
    );
    let k1 = [("x-owner", "alice"), ("x-key", "k1")];
    let k2 = [("x-owner", "alice"), ("x-key", "k2")];
    assert_eq!(send(&svc, &k1).await, StatusCode::OK);
    assert_eq!(send(&svc, &k1).await, StatusCode::OK);
    assert_eq!(send(&svc, &k1).await, StatusCode::TOO_MANY_REQUESTS);
    // k1's refusal took nothing from alice: k2 gets her third request.
    assert_eq!(send(&svc, &k2).await, StatusCode::OK);
    // alice is spent: k2 is refused though its own quota has one left.
    assert_eq!(send(&svc, &k2).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        send(&svc, &[("x-owner", "bob"), ("x-key", "k1")]).await,
        StatusCode::OK
    );

    // A token client: 2/min shared by all its users, each user 3/min.
    let user = |u: &'static str| [("x-user", u), ("x-client", "mobile")];
    assert_eq!(send(&svc, &user("u1")).await, StatusCode::OK);
    assert_eq!(send(&svc, &user("u2")).await, StatusCode::OK);
    assert_eq!(send(&svc, &user("u3")).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        send(&svc, &[("x-user", "u3"), ("x-client", "web")]).await,
        StatusCode::OK
    );
}
