//! Revocations pushed to every replica's cache over PostgreSQL LISTEN/NOTIFY
//! (`PostgresKeyStore::follow`), and the fallback bound when the channel is lost.
//!
//! Needs the machine's PostgreSQL server in `DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); skipped when it is not set, failed when it
//! is set and the server cannot be reached. Each test works in a fresh schema.
#![cfg(all(feature = "api-key", feature = "postgres"))]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_api_guard::api_key::{
    ApiKeyAuthenticator, ApiKeyManager, CacheFollower, CachedKeyStore, CachedLookup, FollowOptions,
    KEY_EVENTS_CHANNEL, KeyFormat, NewKey, Plaintext, PostgresKeyStore,
};
use tower_api_guard::clock::{Clock as _, ManualClock};

/// How long a test waits for something that should take well under a second.
const DEADLINE: Duration = Duration::from_secs(5);

/// The tests take turns: every schema's trigger announces on the same channel, and a
/// `TRUNCATE` in one test would empty the other tests' caches.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh schema on the server of `DATABASE_URL`, dropped by [`Db::drop_schema`].
struct Db {
    admin: PgPool,
    schema: String,
    options: PgConnectOptions,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Db {
    /// `None` (with the reason printed) when `DATABASE_URL` is not set; a panic when the
    /// server cannot be reached.
    async fn fresh(test: &str) -> Option<Self> {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!(
                "skipped {test}: DATABASE_URL is not set (CI sets it; `.ci/run` starts PostgreSQL)"
            );
            return None;
        };
        let turn = SERIAL.lock().await;
        let schema = format!(
            "tag_push_{test}_{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let admin = PgPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unreachable: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let options: PgConnectOptions = url.parse().unwrap();
        let options = options.options([("search_path", schema.as_str())]);
        Some(Self {
            admin,
            schema,
            options,
            _turn: turn,
        })
    }

    /// A store on a pool of its own (one replica).
    async fn store(&self) -> PostgresKeyStore {
        PostgresKeyStore::connect_with(self.options.clone())
            .await
            .unwrap()
    }

    /// Run plain SQL (outside the crate) on the schema's key table, `{t}` standing for it.
    async fn sql(&self, statement: &str, id: &str) -> u64 {
        let table = format!("{}.tag_api_keys", self.schema);
        sqlx::query(&statement.replace("{t}", &table))
            .bind(id)
            .execute(&self.admin)
            .await
            .unwrap()
            .rows_affected()
    }

    async fn drop_schema(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

fn format() -> KeyFormat {
    KeyFormat::new("sk_test").unwrap()
}

/// A new key, stored through `store`.
async fn new_key(store: &PostgresKeyStore, name: &str, at: SystemTime) -> (Plaintext, String) {
    let (key, record) = format()
        .generate_at(NewKey::new("owner-1", name).scopes(["items:read"]), at)
        .unwrap();
    store.create(&record).await.unwrap();
    (key, record.id)
}

fn is_cached<S: tower_api_guard::api_key::ApiKeyStore>(cache: &S, key: &Plaintext) -> bool {
    matches!(
        cache.find_cached(&format().digest(key.expose())),
        Some(CachedLookup::Found(_))
    )
}

/// Poll `check` until it holds or [`DEADLINE`] passes; how long it took, or a panic.
async fn within_deadline<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(DEADLINE, what, check).await
}

/// Like [`within_deadline`], with room for a reconnection attempt that hangs on the frozen
/// network until its timeout (5 s).
async fn within_deadline_long<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(DEADLINE * 3, what, check).await
}

/// Poll `check` until it holds or `limit` passes; how long it took, or a panic.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `auth` refuses `key` with `reason`; fails after [`DEADLINE`].
async fn refused(auth: &ApiKeyAuthenticator, key: &Plaintext, reason: &str) -> Duration {
    let took = within_deadline(reason, || async {
        match auth.verify(key.expose()).await {
            Ok(_) => false,
            Err(e) => {
                assert_eq!(e.reason(), reason);
                true
            }
        }
    })
    .await;
    eprintln!("refused ({reason}) after {took:?}");
    took
}

/// Replica B: a store on its own pool, a 30 s cache in front of it, following the table.
async fn replica(
    db: &Db,
    options: FollowOptions,
    clock: Option<Arc<ManualClock>>,
) -> (
    ApiKeyAuthenticator,
    CachedKeyStore<PostgresKeyStore>,
    CacheFollower,
) {
    let store = db.store().await;
    let mut cache = CachedKeyStore::with_ttl(
        store.clone(),
        Duration::from_secs(30),
        Duration::from_secs(30),
    );
    let mut auth = ApiKeyAuthenticator::new(format(), cache.clone());
    if let Some(clock) = clock {
        cache = cache.clock(clock.clone());
        auth = ApiKeyAuthenticator::new(format(), cache.clone()).clock(clock);
    }
    let follower = store.follow_with(&cache, options).await.unwrap();
    assert!(follower.is_connected());
    (auth, cache, follower)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_replica_is_refused_by_another_at_once() {
    let Some(db) = Db::fresh("manager").await else {
        return;
    };
    let a = db.store().await;
    a.migrate().await.unwrap();
    a.migrate().await.unwrap(); // idempotent, trigger included
    let (auth_b, cache_b, follower) = replica(&db, FollowOptions::new(), None).await;
    assert_eq!(follower.bound(), Duration::from_secs(1));

    let (key, id) = new_key(&a, "ci", SystemTime::now()).await;
    let (other, _) = new_key(&a, "laptop", SystemTime::now()).await;
    auth_b.verify(key.expose()).await.unwrap();
    auth_b.verify(other.expose()).await.unwrap();
    assert!(is_cached(&cache_b, &key), "B holds the key for 30 s");

    // Revoked through A's own store (no cache of B's involved).
    assert!(a.revoke(&id, SystemTime::now()).await.unwrap());
    refused(&auth_b, &key, "API key revoked").await;
    // The push evicted exactly that key; the channel never went down.
    assert!(is_cached(&cache_b, &other));
    auth_b.verify(other.expose()).await.unwrap();
    assert_eq!(follower.losses(), 0);
    assert!(follower.is_connected());

    // A revocation through a cache (replica A's) is pushed the same way.
    let cache_a = CachedKeyStore::new(a.clone());
    assert!(
        cache_a
            .revoke(&other_id(&a, "laptop").await, SystemTime::now())
            .await
            .unwrap()
    );
    refused(&auth_b, &other, "API key revoked").await;

    drop(follower);
    db.drop_schema().await;
}

async fn other_id(store: &PostgresKeyStore, name: &str) -> String {
    store
        .list_by_owner("owner-1")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_plain_sql_are_pushed_and_last_use_is_not() {
    let Some(db) = Db::fresh("sql").await else {
        return;
    };
    let a = db.store().await;
    a.migrate().await.unwrap();
    let (auth_b, cache_b, follower) = replica(&db, FollowOptions::new(), None).await;
    let now = SystemTime::now();
    let (revoked, revoked_id) = new_key(&a, "revoked", now).await;
    let (expired, expired_id) = new_key(&a, "expired", now).await;
    let (deleted, deleted_id) = new_key(&a, "deleted", now).await;
    let (used, used_id) = new_key(&a, "used", now).await;
    for key in [&revoked, &expired, &deleted, &used] {
        auth_b.verify(key.expose()).await.unwrap();
        assert!(is_cached(&cache_b, key));
    }

    // What the trigger announces, watched from outside.
    let mut watch = PgListener::connect_with(&db.admin).await.unwrap();
    watch.listen(KEY_EVENTS_CHANNEL).await.unwrap();

    let ms = "(extract(epoch from now()) * 1000)::bigint";
    // A last-use update changes nothing a cache holds: no announcement, still cached.
    let touch = format!("UPDATE {{t}} SET last_used_at = {ms} WHERE id = $1");
    assert_eq!(db.sql(&touch, &used_id).await, 1);
    let revoke = format!("UPDATE {{t}} SET revoked_at = {ms} WHERE id = $1");
    assert_eq!(db.sql(&revoke, &revoked_id).await, 1);
    refused(&auth_b, &revoked, "API key revoked").await;
    // Announcements arrive in commit order: the first one about our keys is the revocation.
    let digest = |key: &Plaintext| format().digest(key.expose()).to_hex();
    loop {
        let n = tokio::time::timeout(DEADLINE, watch.recv())
            .await
            .expect("the revocation is announced")
            .unwrap();
        assert_ne!(
            n.payload(),
            digest(&used),
            "a last-use update is not announced"
        );
        if n.payload() == digest(&revoked) {
            break;
        }
    }
    assert!(is_cached(&cache_b, &used));

    let expire = format!("UPDATE {{t}} SET expires_at = {ms} - 1 WHERE id = $1");
    assert_eq!(db.sql(&expire, &expired_id).await, 1);
    refused(&auth_b, &expired, "API key expired").await;

    assert_eq!(
        db.sql("DELETE FROM {t} WHERE id = $1", &deleted_id).await,
        1
    );
    refused(&auth_b, &deleted, "unknown API key").await;

    // TRUNCATE announces `*`: the whole cache goes.
    assert!(is_cached(&cache_b, &used));
    sqlx::query(&format!("TRUNCATE {}.tag_api_keys", db.schema))
        .execute(&db.admin)
        .await
        .unwrap();
    refused(&auth_b, &used, "unknown API key").await;

    assert_eq!(follower.losses(), 0);
    drop(follower);
    db.drop_schema().await;
}

/// A TCP proxy in front of PostgreSQL whose traffic the test can cut without closing
/// anything (a silently dead network): forwarded connections freeze, new ones wait. When
/// it is opened again, frozen connections are closed and waiting ones go through.
struct Proxy {
    port: u16,
    open: watch::Sender<bool>,
}

impl Proxy {
    async fn start(server: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, _) = watch::channel(true);
        let rx = open.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(Self::serve(client, server.clone(), rx.clone()));
            }
        });
        Self { port, open }
    }

    async fn serve(mut client: TcpStream, server: (String, u16), mut open: watch::Receiver<bool>) {
        if open.wait_for(|open| *open).await.is_err() {
            return;
        }
        let Ok(mut upstream) = TcpStream::connect((server.0.as_str(), server.1)).await else {
            return;
        };
        let cut = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
            _ = open.wait_for(|open| !*open) => true,
        };
        if cut {
            // Frozen: nothing passes and nothing is closed until the network is back.
            let _ = open.wait_for(|open| *open).await;
        }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_channel_cut_cached_keys_last_no_longer_than_the_bound() {
    let Some(db) = Db::fresh("cut").await else {
        return;
    };
    let a = db.store().await;
    a.migrate().await.unwrap();
    let proxy = Proxy::start((db.options.get_host().to_owned(), db.options.get_port())).await;
    // Only B's listener goes through the proxy; its store pool reaches the server directly.
    let through_proxy = db.options.clone().host("127.0.0.1").port(proxy.port);
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let bound = Duration::from_secs(1);
    let (auth_b, cache_b, follower) = replica(
        &db,
        FollowOptions::new()
            .bound(bound)
            .listener_options(through_proxy),
        Some(clock.clone()),
    )
    .await;

    let (key, id) = new_key(&a, "ci", clock.now()).await;
    let (other, _) = new_key(&a, "laptop", clock.now()).await;
    auth_b.verify(key.expose()).await.unwrap();
    assert!(is_cached(&cache_b, &key));

    // The network dies silently: no error, just no more heartbeats.
    proxy.cut();
    within_deadline("the follower notices the silence", || async {
        !follower.is_connected()
    })
    .await;
    assert_eq!(follower.losses(), 1);

    // Revoked while B cannot hear it.
    assert!(a.revoke(&id, clock.now()).await.unwrap());
    // B may still serve what it read less than the bound ago...
    assert!(is_cached(&cache_b, &key));
    auth_b.verify(key.expose()).await.unwrap();
    // ...and no longer: once the bound has passed since B read it, B reads it again.
    clock.advance(bound);
    assert!(!is_cached(&cache_b, &key));
    let refused = auth_b.verify(key.expose()).await.unwrap_err();
    assert_eq!(refused.reason(), "API key revoked");
    // A key still valid keeps working, read again from the store every bound.
    auth_b.verify(other.expose()).await.unwrap();
    clock.advance(bound);
    assert!(!is_cached(&cache_b, &other));
    auth_b.verify(other.expose()).await.unwrap();
    assert!(is_cached(&cache_b, &other));

    // The network is back: the follower connects again and empties the cache (it may have
    // missed announcements), then whole TTLs resume.
    proxy.restore();
    let took = within_deadline_long("the follower reconnects", || async {
        follower.is_connected()
    })
    .await;
    eprintln!("reconnected after {took:?}");
    assert!(!is_cached(&cache_b, &other), "emptied on reconnection");
    auth_b.verify(other.expose()).await.unwrap();
    clock.advance(bound * 5);
    // The next heartbeat (sent on the moved clock) proves the channel again: the entry,
    // older than the bound, is served for its whole TTL.
    within_deadline("an entry older than the bound is served again", || async {
        is_cached(&cache_b, &other)
    })
    .await;
    assert_eq!(follower.losses(), 1);
    assert!(follower.is_running());

    drop(follower);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_reconnects_empties_the_cache_and_pushes_again() {
    let Some(db) = Db::fresh("terminate").await else {
        return;
    };
    let a = db.store().await;
    a.migrate().await.unwrap();
    let name = db.schema.clone();
    let (auth_b, cache_b, follower) = replica(
        &db,
        FollowOptions::new().listener_options(db.options.clone().application_name(&name)),
        None,
    )
    .await;
    let (key, id) = new_key(&a, "ci", SystemTime::now()).await;
    auth_b.verify(key.expose()).await.unwrap();
    assert!(is_cached(&cache_b, &key));

    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(&name)
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(terminated, [true], "one listener");

    within_deadline("the follower reconnects", || async {
        follower.losses() == 1 && follower.is_connected()
    })
    .await;
    assert!(!is_cached(&cache_b, &key), "emptied on reconnection");
    auth_b.verify(key.expose()).await.unwrap();
    assert!(is_cached(&cache_b, &key));

    // Pushed over the new connection.
    assert!(a.revoke(&id, SystemTime::now()).await.unwrap());
    refused(&auth_b, &key, "API key revoked").await;
    assert_eq!(follower.losses(), 1);

    drop(follower);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_ends_with_the_cache_and_a_dropped_follower_leaves_the_fallback() {
    let Some(db) = Db::fresh("ends").await else {
        return;
    };
    let a = db.store().await;
    a.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let (auth_b, cache_b, follower) = replica(&db, FollowOptions::new(), Some(clock.clone())).await;
    let (key, _) = new_key(&a, "ci", clock.now()).await;
    auth_b.verify(key.expose()).await.unwrap();

    // Every clone of the cache gone: the task ends by itself.
    drop((auth_b, cache_b));
    within_deadline("the task ends", || async { !follower.is_running() }).await;
    assert!(!follower.is_connected());
    drop(follower);

    // A dropped follower: its cache keeps the bound instead of silently going back to 30 s.
    let (auth_b, cache_b, follower) = replica(&db, FollowOptions::new(), Some(clock.clone())).await;
    auth_b.verify(key.expose()).await.unwrap();
    drop(follower);
    clock.advance(Duration::from_secs(2));
    assert!(!is_cached(&cache_b, &key));
    db.drop_schema().await;
}
