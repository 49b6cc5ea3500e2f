//! The same suite against every API-key store: memory, SQLite, and PostgreSQL (the
//! machine's real server, with `DATABASE_URL`; migrations applied to a fresh schema).
#![cfg(all(feature = "api-key", feature = "sqlite", feature = "postgres"))]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_api_guard::api_key::{
    ApiKeyAuthenticator, ApiKeyManager, CachedKeyStore, KeyFormat, MemoryKeyStore, NewKey,
    PostgresKeyStore, SqliteKeyStore,
};

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

    // Last-used batches are accepted.
    store
        .record_last_used(vec![(new_record.id.clone(), now), (record.id.clone(), now)])
        .await
        .unwrap();
    store.record_last_used(Vec::new()).await.unwrap();

    // The cache in front of it.
    let cached = CachedKeyStore::new(store.clone());
    let auth = ApiKeyAuthenticator::new(format, cached).clock(clock);
    assert!(auth.verify(&new_key).await.is_ok());
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
