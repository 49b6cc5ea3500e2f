//! The same suite against every API-key store: memory, SQLite, and PostgreSQL (the
//! machine's real server, with `DATABASE_URL`; migrations applied to a fresh schema).
#![cfg(all(feature = "api-key", feature = "sqlite", feature = "postgres"))]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_api_guard::api_key::{
    ApiKeyAuthenticator, ApiKeyManager, ApiKeyRecord, CachedKeyStore, KeyFormat, LastUsedTracker,
    ListFilter, MemoryKeyStore, NewKey, PostgresKeyStore, SqliteKeyStore,
};
use tower_api_guard::clock::{Clock, ManualClock};

fn names(records: Vec<ApiKeyRecord>) -> Vec<String> {
    records.into_iter().map(|r| r.name).collect()
}

/// The last use of the key `id`, as `store` reads it back.
async fn last_used<S: ApiKeyManager>(store: &S, id: &str) -> Option<SystemTime> {
    store.find_by_id(id).await.unwrap().unwrap().last_used_at()
}

async fn suite<S: ApiKeyManager + Clone>(store: S) {
    let format = KeyFormat::new("sk_test")
        .unwrap()
        .with_pepper(&[9; 32])
        .unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (key, record) = format
        .generate_at(
            NewKey::new("owner-1", "ci")
                .scopes(["a:read", "a:write"])
                .roles(["svc"])
                .plan("gold")
                .metadata(serde_json::json!({"team": "x"})),
            now,
        )
        .unwrap();
    store.create(&record).await.unwrap();

    // Found by digest, identical to what was stored.
    let found = store.find(&format.digest(&key)).await.unwrap().unwrap();
    assert_eq!(found, record);
    assert!(
        store
            .find(&KeyFormat::new("sk_test").unwrap().digest(&key))
            .await
            .unwrap()
            .is_none(),
        "pepper matters"
    );
    assert_eq!(
        store.find_by_id(&record.id).await.unwrap().unwrap().id,
        record.id
    );
    assert!(store.find_by_id("nope").await.unwrap().is_none());

    // Listing and revocation.
    let (_, second) = format
        .generate_at(
            NewKey::new("owner-1", "laptop"),
            now + Duration::from_secs(1),
        )
        .unwrap();
    store.create(&second).await.unwrap();
    let (_, other) = format
        .generate_at(NewKey::new("owner-2", "x"), now)
        .unwrap();
    store.create(&other).await.unwrap();
    let listed: Vec<String> = store
        .list_by_owner("owner-1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(listed, ["ci", "laptop"]);
    assert!(store.revoke(&second.id, now).await.unwrap());
    assert!(!store.revoke("missing", now).await.unwrap());
    let revoked = store.find_by_id(&second.id).await.unwrap().unwrap();
    assert!(!revoked.is_active(now));

    // Rotation with a grace period: both keys work until the old one's revocation instant.
    let (new_key, new_record) = format
        .rotate(&store, &record.id, now, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(new_record.owner, "owner-1");
    assert_eq!(new_record.scopes, record.scopes);
    let clock = std::sync::Arc::new(tower_api_guard::clock::ManualClock::new(now));
    let auth = ApiKeyAuthenticator::new(format.clone(), store.clone()).clock(clock.clone());
    assert!(auth.verify(&key).await.is_ok());
    assert!(auth.verify(&new_key).await.is_ok());
    clock.advance(Duration::from_secs(300));
    assert_eq!(
        auth.verify(&key).await.unwrap_err().reason(),
        "API key revoked"
    );
    assert!(auth.verify(&new_key).await.is_ok());

    // Last-used batches are accepted, and read back on every record.
    assert_eq!(found.last_used_at(), None, "never used");
    store
        .record_last_used(vec![(new_record.id.clone(), now), (record.id.clone(), now)])
        .await
        .unwrap();
    store.record_last_used(Vec::new()).await.unwrap();
    assert_eq!(last_used(&store, &record.id).await, Some(now));
    // An older instant does not move it back.
    store
        .record_last_used(vec![(record.id.clone(), now - Duration::from_secs(5))])
        .await
        .unwrap();
    assert_eq!(
        store
            .find(&format.digest(&key))
            .await
            .unwrap()
            .unwrap()
            .last_used_at(),
        Some(now)
    );

    // The cache in front of it.
    let cached = CachedKeyStore::new(store.clone());
    let auth = ApiKeyAuthenticator::new(format.clone(), cached.clone()).clock(clock.clone());
    assert!(auth.verify(&new_key).await.is_ok());
    assert_eq!(
        names(cached.list("owner-1", ListFilter::All).await.unwrap()),
        names(store.list_by_owner("owner-1").await.unwrap()),
        "listing goes to the store"
    );

    last_use_is_read_back_after_the_batched_write(&store, &format, &clock).await;
    active_and_all_keys(&store, &format, now).await;
}

/// Last use, written by the tracker's batch (flushed by hand: no waiting), is on the
/// records read back by digest, by id and by listing.
async fn last_use_is_read_back_after_the_batched_write<S: ApiKeyManager + Clone>(
    store: &S,
    format: &KeyFormat,
    clock: &std::sync::Arc<ManualClock>,
) {
    let (key, record) = format
        .generate_at(NewKey::new("owner-3", "used"), clock.now())
        .unwrap();
    store.create(&record).await.unwrap();
    let tracker = LastUsedTracker::new(store.clone(), Duration::from_secs(3600));
    let auth = ApiKeyAuthenticator::new(format.clone(), store.clone())
        .clock(clock.clone())
        .last_used(tracker.clone());
    clock.advance(Duration::from_secs(60));
    auth.verify(&key).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let used_at = clock.now();
    auth.verify(&key).await.unwrap();
    assert_eq!(
        last_used(store, &record.id).await,
        None,
        "not written per request"
    );
    tracker.flush().await;
    assert_eq!(tracker.pending(), 0);
    assert_eq!(last_used(store, &record.id).await, Some(used_at));
    let by_digest = store.find(&format.digest(&key)).await.unwrap().unwrap();
    assert_eq!(by_digest.last_used_at(), Some(used_at));
    for filter in [ListFilter::All, ListFilter::ActiveAt(clock.now())] {
        let listed = store.list("owner-3", filter).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_used_at(), Some(used_at), "{filter:?}");
    }
    assert_eq!(
        store.list_by_owner("owner-3").await.unwrap()[0].last_used_at(),
        Some(used_at)
    );
    drop(auth);
    tracker.shutdown().await;
}

/// Active keys (neither revoked nor expired at the instant) and all keys, oldest first.
async fn active_and_all_keys<S: ApiKeyManager + Clone>(
    store: &S,
    format: &KeyFormat,
    now: SystemTime,
) {
    let owner = "owner-4";
    let minute = Duration::from_secs(60);
    let make = |at: SystemTime, new: NewKey| format.generate_at(new, at).unwrap().1;
    let plain = make(now, NewKey::new(owner, "plain"));
    let expiring = make(
        now + Duration::from_secs(1),
        NewKey::new(owner, "expiring").expires_at(now + 2 * minute),
    );
    let revoked = make(now + Duration::from_secs(2), NewKey::new(owner, "revoked"));
    let expired = make(
        now + Duration::from_secs(3),
        NewKey::new(owner, "expired").expires_at(now),
    );
    let later_revoked = make(now + Duration::from_secs(4), NewKey::new(owner, "later"));
    for r in [&plain, &expiring, &revoked, &expired, &later_revoked] {
        store.create(r).await.unwrap();
    }
    assert!(store.revoke(&revoked.id, now).await.unwrap());
    assert!(store.revoke(&later_revoked.id, now + minute).await.unwrap());

    let all = ["plain", "expiring", "revoked", "expired", "later"];
    assert_eq!(
        names(store.list(owner, ListFilter::All).await.unwrap()),
        all
    );
    assert_eq!(names(store.list_by_owner(owner).await.unwrap()), all);
    let active =
        |at| async move { names(store.list(owner, ListFilter::ActiveAt(at)).await.unwrap()) };
    assert_eq!(
        active(now).await,
        ["plain", "expiring", "later"],
        "revoked and expired at the instant itself are not active"
    );
    assert_eq!(
        active(now - Duration::from_millis(1)).await,
        ["plain", "expiring", "revoked", "expired", "later"]
    );
    assert_eq!(active(now + minute).await, ["plain", "expiring"]);
    assert_eq!(active(now + 2 * minute).await, ["plain"]);
    // The store's answer is the records' own notion of active.
    for at in [now, now + minute, now + 2 * minute] {
        let listed = store.list(owner, ListFilter::ActiveAt(at)).await.unwrap();
        assert!(listed.iter().all(|r| r.is_active(at)));
    }
    assert!(
        store
            .list("nobody", ListFilter::All)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn memory_store() {
    suite(MemoryKeyStore::new()).await;
}

#[tokio::test]
async fn sqlite_store() {
    let dir = std::env::temp_dir().join(format!(
        "tag-keys-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("keys.db").display());
    let store = SqliteKeyStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    suite(store).await;
    let memory = SqliteKeyStore::connect("sqlite::memory:").await.unwrap();
    memory.migrate().await.unwrap();
    suite(memory).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn postgres_store() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL is not set (CI sets it; `.ci/run` starts PostgreSQL)");
        return;
    };
    // A fresh schema for this run, so the migration is applied from scratch.
    let schema = format!(
        "tag_test_{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let store = PostgresKeyStore::connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    suite(store).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_urls_are_configuration_errors() {
    assert!(SqliteKeyStore::connect("not a url").await.is_err());
    assert!(
        PostgresKeyStore::connect("postgres://127.0.0.1:1/none")
            .await
            .is_err()
    );
}

/// A store failure keeps its cause (`Error::source`) for diagnosis, and shows no key.
#[tokio::test]
async fn a_store_failure_keeps_its_cause() {
    use std::error::Error as _;
    use tower_api_guard::api_key::ApiKeyStore as _;
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect("sqlite::memory:")
        .await
        .unwrap();
    // No migration: the table is missing, so every lookup fails in the database.
    let store = SqliteKeyStore::from_pool(pool);
    let format = KeyFormat::new("sk_test").unwrap();
    let (key, _) = format.generate(NewKey::new("owner", "ci")).unwrap();
    let error = store.find(&format.digest(&key)).await.unwrap_err();
    assert_eq!(error.reason(), "database error");
    let cause = error.source().expect("the sqlx error is kept");
    assert!(cause.to_string().contains("no such table"), "{cause}");
    assert!(!format!("{error:?}").contains(key.expose()));
}
