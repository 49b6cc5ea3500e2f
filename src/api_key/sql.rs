//! API-key stores in SQLite (feature `sqlite`) and PostgreSQL (feature `postgres`), through
//! sqlx with runtime queries only (no database is needed to compile).
//!
//! The migration ships in the crate and is applied on request with `migrate()`. Keys are
//! indexed by digest (a unique index) and by owner. Times are Unix milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ApiKeyRecord, KeyDigest, StoreError};

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A database error, kept as the source: sqlx's errors at query time are I/O, protocol and
/// database errors, never the connection URL (its parse errors are not attached; see
/// `connect`).
fn db_error(e: sqlx::Error) -> StoreError {
    StoreError::new("database error").with_source(e)
}

fn split(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The columns, in the order the row decoders read them.
const COLUMNS: &str = "id, digest, display, owner, name, scopes, roles, created_at, expires_at, revoked_at, plan, metadata, last_used_at";

/// Build a record from a row's columns.
#[allow(clippy::too_many_arguments)]
fn record(
    id: String,
    digest: Vec<u8>,
    display: String,
    owner: String,
    name: String,
    scopes: String,
    roles: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    plan: Option<String>,
    metadata: String,
    last_used_at: Option<i64>,
) -> Result<ApiKeyRecord, StoreError> {
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| StoreError::new("stored digest has the wrong length"))?;
    Ok(ApiKeyRecord {
        id,
        digest: KeyDigest::from_bytes(digest),
        display,
        owner,
        name,
        scopes: split(&scopes),
        roles: split(&roles),
        created_at: time(created_at),
        expires_at: expires_at.map(time),
        revoked_at: revoked_at.map(time),
        plan,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::new("stored metadata is not JSON").with_source(e))?,
        last_used_at: last_used_at.map(time),
    })
}

macro_rules! sql_store {
    (
        $(#[$meta:meta])*
        $name:ident, $feature:literal, $db:ty, $pool:ty, $options:ty, $pool_fn:ident,
        migration: $migration:expr,
        find: $find:expr, by_id: $by_id:expr, owner: $owner:expr, owner_active: $owner_active:expr, insert: $insert:expr, revoke: $revoke:expr, touch: $touch:expr
    ) => {
        $(#[$meta])*
        #[derive(Clone)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        pub struct $name {
            pool: $pool,
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl $name {
            /// Connect to `url`.
            ///
            /// # Errors
            /// A malformed URL or a failed connection (the message never holds the URL,
            /// which may carry a password).
            pub async fn connect(url: &str) -> Result<Self, crate::error::ConfigError> {
                let options: $options = url
                    .parse()
                    .map_err(|_| crate::error::ConfigError::parse("invalid database URL"))?;
                Self::connect_with(options).await
            }

            /// Connect with explicit options.
            ///
            /// # Errors
            /// A failed connection.
            pub async fn connect_with(options: $options) -> Result<Self, crate::error::ConfigError> {
                let pool = $pool_fn(&options)
                    .connect_with(options)
                    .await
                    .map_err(|e| crate::error::ConfigError::unavailable("cannot connect to the database", e))?;
                Ok(Self { pool })
            }

            /// Use an existing pool.
            pub fn from_pool(pool: $pool) -> Self {
                Self { pool }
            }

            /// Create the table and its indexes if they do not exist (idempotent, in one
            /// transaction).
            ///
            /// # Errors
            /// A database error.
            pub async fn migrate(&self) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db_error)?;
                for statement in $migration {
                    sqlx::query(statement).execute(&mut *tx).await.map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)
            }

            async fn fetch(&self, sql: &str, bind: Bind<'_>) -> Result<Vec<ApiKeyRecord>, StoreError> {
                use sqlx::Row as _;
                let query = sqlx::query::<$db>(sql);
                let query = match bind {
                    Bind::Bytes(b) => query.bind(b.to_vec()),
                    Bind::Text(t) => query.bind(t.to_owned()),
                    Bind::TextAt(t, at) => query.bind(t.to_owned()).bind(at),
                };
                let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
                rows.into_iter()
                    .map(|row| {
                        let get = |e: sqlx::Error| db_error(e);
                        record(
                            row.try_get("id").map_err(get)?,
                            row.try_get("digest").map_err(get)?,
                            row.try_get("display").map_err(get)?,
                            row.try_get("owner").map_err(get)?,
                            row.try_get("name").map_err(get)?,
                            row.try_get("scopes").map_err(get)?,
                            row.try_get("roles").map_err(get)?,
                            row.try_get("created_at").map_err(get)?,
                            row.try_get("expires_at").map_err(get)?,
                            row.try_get("revoked_at").map_err(get)?,
                            row.try_get("plan").map_err(get)?,
                            row.try_get("metadata").map_err(get)?,
                            row.try_get("last_used_at").map_err(get)?,
                        )
                    })
                    .collect()
            }
        }

        impl super::ApiKeyStore for $name {
            fn find(&self, digest: &KeyDigest) -> super::StoreFuture<Option<ApiKeyRecord>> {
                let this = self.clone();
                let digest = *digest;
                Box::pin(async move {
                    let sql = format!($find, COLUMNS);
                    Ok(this.fetch(&sql, Bind::Bytes(digest.as_bytes())).await?.pop())
                })
            }
        }

        impl super::ApiKeyManager for $name {
            fn create(&self, record: &ApiKeyRecord) -> super::StoreFuture<()> {
                let this = self.clone();
                let r = record.clone();
                Box::pin(async move {
                    sqlx::query($insert)
                        .bind(r.id)
                        .bind(r.digest.as_bytes().to_vec())
                        .bind(r.display)
                        .bind(r.owner)
                        .bind(r.name)
                        .bind(r.scopes.join(" "))
                        .bind(r.roles.join(" "))
                        .bind(millis(r.created_at))
                        .bind(r.expires_at.map(millis))
                        .bind(r.revoked_at.map(millis))
                        .bind(r.plan)
                        .bind(r.metadata.to_string())
                        .bind(r.last_used_at.map(millis))
                        .execute(&this.pool)
                        .await
                        .map_err(db_error)?;
                    Ok(())
                })
            }

            fn find_by_id(&self, id: &str) -> super::StoreFuture<Option<ApiKeyRecord>> {
                let this = self.clone();
                let id = id.to_owned();
                Box::pin(async move {
                    let sql = format!($by_id, COLUMNS);
                    Ok(this.fetch(&sql, Bind::Text(&id)).await?.pop())
                })
            }

            fn list_by_owner(&self, owner: &str) -> super::StoreFuture<Vec<ApiKeyRecord>> {
                let this = self.clone();
                let owner = owner.to_owned();
                Box::pin(async move {
                    let sql = format!($owner, COLUMNS);
                    this.fetch(&sql, Bind::Text(&owner)).await
                })
            }

            fn list(&self, owner: &str, filter: super::ListFilter) -> super::StoreFuture<Vec<ApiKeyRecord>> {
                let this = self.clone();
                let owner = owner.to_owned();
                Box::pin(async move {
                    match filter {
                        super::ListFilter::ActiveAt(now) => {
                            let sql = format!($owner_active, COLUMNS);
                            this.fetch(&sql, Bind::TextAt(&owner, millis(now))).await
                        }
                        // `All`, and any filter added later, filtered in memory.
                        filter => {
                            let sql = format!($owner, COLUMNS);
                            let mut records = this.fetch(&sql, Bind::Text(&owner)).await?;
                            records.retain(|r| filter.matches(r));
                            Ok(records)
                        }
                    }
                })
            }

            fn revoke(&self, id: &str, at: SystemTime) -> super::StoreFuture<bool> {
                let this = self.clone();
                let id = id.to_owned();
                Box::pin(async move {
                    let done = sqlx::query($revoke)
                        .bind(millis(at))
                        .bind(id)
                        .execute(&this.pool)
                        .await
                        .map_err(db_error)?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn record_last_used(&self, batch: Vec<(String, SystemTime)>) -> super::StoreFuture<()> {
                let this = self.clone();
                Box::pin(async move {
                    let mut tx = this.pool.begin().await.map_err(db_error)?;
                    for (id, at) in batch {
                        sqlx::query($touch)
                            .bind(millis(at))
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_error)?;
                    }
                    tx.commit().await.map_err(db_error)
                })
            }
        }
    };
}

/// An in-memory SQLite database lives in one connection: keep the pool to one.
#[cfg(feature = "sqlite")]
fn sqlite_pool(
    options: &sqlx::sqlite::SqliteConnectOptions,
) -> sqlx::pool::PoolOptions<sqlx::Sqlite> {
    let memory = options
        .get_filename()
        .to_str()
        .is_some_and(|f| f.is_empty() || f == ":memory:");
    sqlx::pool::PoolOptions::new()
        .max_connections(if memory { 1 } else { 8 })
        .acquire_timeout(Duration::from_secs(5))
}

#[cfg(feature = "postgres")]
fn postgres_pool(_: &sqlx::postgres::PgConnectOptions) -> sqlx::pool::PoolOptions<sqlx::Postgres> {
    sqlx::pool::PoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
}

enum Bind<'a> {
    Bytes(&'a [u8]),
    Text(&'a str),
    /// A text, then an instant in Unix milliseconds.
    TextAt(&'a str, i64),
}

#[cfg(feature = "sqlite")]
sql_store! {
    /// API keys in SQLite: the embedded default for examples and small services.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use tower_api_guard::api_key::{ApiKeyManager, ApiKeyStore, KeyFormat, NewKey, SqliteKeyStore};
    ///
    /// let store = SqliteKeyStore::connect("sqlite::memory:").await.unwrap();
    /// store.migrate().await.unwrap();
    /// let format = KeyFormat::new("sk_test").unwrap();
    /// let (key, record) = format.generate(NewKey::new("owner", "ci")).unwrap();
    /// store.create(&record).await.unwrap();
    /// assert!(store.find(&format.digest(&key)).await.unwrap().is_some());
    /// # });
    /// ```
    SqliteKeyStore, "sqlite", sqlx::Sqlite, sqlx::SqlitePool, sqlx::sqlite::SqliteConnectOptions, sqlite_pool,
    migration: [
        "CREATE TABLE IF NOT EXISTS tag_api_keys (id TEXT PRIMARY KEY, digest BLOB NOT NULL, display TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL, scopes TEXT NOT NULL, roles TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER, plan TEXT, metadata TEXT NOT NULL, last_used_at INTEGER)",
        "CREATE UNIQUE INDEX IF NOT EXISTS tag_api_keys_digest ON tag_api_keys (digest)",
        "CREATE INDEX IF NOT EXISTS tag_api_keys_owner ON tag_api_keys (owner)",
    ],
    find: "SELECT {} FROM tag_api_keys WHERE digest = ?",
    by_id: "SELECT {} FROM tag_api_keys WHERE id = ?",
    owner: "SELECT {} FROM tag_api_keys WHERE owner = ? ORDER BY created_at",
    // Active at ?2: the instant comes before revocation and expiry (`ApiKeyRecord::is_active`).
    owner_active: "SELECT {} FROM tag_api_keys WHERE owner = ?1 AND (revoked_at IS NULL OR ?2 < revoked_at) AND (expires_at IS NULL OR ?2 < expires_at) ORDER BY created_at",
    insert: "INSERT INTO tag_api_keys (id, digest, display, owner, name, scopes, roles, created_at, expires_at, revoked_at, plan, metadata, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    revoke: "UPDATE tag_api_keys SET revoked_at = ? WHERE id = ?",
    touch: "UPDATE tag_api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?"
}

#[cfg(feature = "postgres")]
sql_store! {
    /// API keys in PostgreSQL, for production.
    ///
    /// Besides the table and its indexes, [`migrate`](Self::migrate) installs a trigger that
    /// announces every change of a key (revocation, expiry, scopes, … — any column but
    /// `last_used_at`), every delete and every `TRUNCATE` on
    /// [`KEY_EVENTS_CHANNEL`](super::KEY_EVENTS_CHANNEL), including changes made by plain
    /// SQL; [`follow`](Self::follow) keeps a [`CachedKeyStore`](super::CachedKeyStore) in
    /// step with them. The migration holds a transaction-level advisory lock, so replicas
    /// starting together can all run it.
    PostgresKeyStore, "postgres", sqlx::Postgres, sqlx::PgPool, sqlx::postgres::PgConnectOptions, postgres_pool,
    migration: [
        // Replicas migrating at once would race on the trigger (drop, then create); the key
        // is "tag_keys" in ASCII.
        "SELECT pg_advisory_xact_lock(8386097640661940595)",
        // `IF NOT EXISTS` / `IF EXISTS` answer with notices; they are not news.
        "SET LOCAL client_min_messages TO warning",
        "CREATE TABLE IF NOT EXISTS tag_api_keys (id TEXT PRIMARY KEY, digest BYTEA NOT NULL, display TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL, scopes TEXT NOT NULL, roles TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT, revoked_at BIGINT, plan TEXT, metadata TEXT NOT NULL, last_used_at BIGINT)",
        "CREATE UNIQUE INDEX IF NOT EXISTS tag_api_keys_digest ON tag_api_keys (digest)",
        "CREATE INDEX IF NOT EXISTS tag_api_keys_owner ON tag_api_keys (owner)",
        concat!(
            "CREATE OR REPLACE FUNCTION tag_api_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$ ",
            "BEGIN ",
            "IF TG_OP = 'TRUNCATE' THEN PERFORM pg_notify('", super::follow::key_events_channel!(), "', '*'); ",
            "ELSE ",
            "IF TG_OP IN ('UPDATE', 'DELETE') THEN PERFORM pg_notify('", super::follow::key_events_channel!(), "', encode(OLD.digest, 'hex')); END IF; ",
            "IF TG_OP = 'UPDATE' AND NEW.digest IS DISTINCT FROM OLD.digest THEN ",
            "PERFORM pg_notify('", super::follow::key_events_channel!(), "', encode(NEW.digest, 'hex')); END IF; ",
            "END IF; ",
            "RETURN NULL; ",
            "END $$"
        ),
        "DROP TRIGGER IF EXISTS tag_api_keys_changed ON tag_api_keys",
        // Every column a cached record holds: a `last_used_at` update announces nothing.
        "CREATE TRIGGER tag_api_keys_changed AFTER UPDATE ON tag_api_keys FOR EACH ROW WHEN ((OLD.id, OLD.digest, OLD.display, OLD.owner, OLD.name, OLD.scopes, OLD.roles, OLD.created_at, OLD.expires_at, OLD.revoked_at, OLD.plan, OLD.metadata) IS DISTINCT FROM (NEW.id, NEW.digest, NEW.display, NEW.owner, NEW.name, NEW.scopes, NEW.roles, NEW.created_at, NEW.expires_at, NEW.revoked_at, NEW.plan, NEW.metadata)) EXECUTE FUNCTION tag_api_keys_notify()",
        "DROP TRIGGER IF EXISTS tag_api_keys_deleted ON tag_api_keys",
        "CREATE TRIGGER tag_api_keys_deleted AFTER DELETE ON tag_api_keys FOR EACH ROW EXECUTE FUNCTION tag_api_keys_notify()",
        "DROP TRIGGER IF EXISTS tag_api_keys_truncated ON tag_api_keys",
        "CREATE TRIGGER tag_api_keys_truncated AFTER TRUNCATE ON tag_api_keys FOR EACH STATEMENT EXECUTE FUNCTION tag_api_keys_notify()",
    ],
    find: "SELECT {} FROM tag_api_keys WHERE digest = $1",
    by_id: "SELECT {} FROM tag_api_keys WHERE id = $1",
    owner: "SELECT {} FROM tag_api_keys WHERE owner = $1 ORDER BY created_at",
    owner_active: "SELECT {} FROM tag_api_keys WHERE owner = $1 AND (revoked_at IS NULL OR $2 < revoked_at) AND (expires_at IS NULL OR $2 < expires_at) ORDER BY created_at",
    insert: "INSERT INTO tag_api_keys (id, digest, display, owner, name, scopes, roles, created_at, expires_at, revoked_at, plan, metadata, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    revoke: "UPDATE tag_api_keys SET revoked_at = $1 WHERE id = $2",
    touch: "UPDATE tag_api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $1) WHERE id = $2"
}

#[cfg(feature = "postgres")]
impl PostgresKeyStore {
    /// Keep `cache` in step with the key table, with the defaults of [`FollowOptions`](super::FollowOptions)
    /// (a 1 s bound): every key the migration's trigger announces as changed (revoked,
    /// expired, edited, deleted — also by plain SQL) is evicted from `cache` as soon as the
    /// announcement arrives.
    ///
    /// **Guarantee.** A key revoked anywhere is refused through `cache` within the bound,
    /// whether or not the channel is up: the follower proves the channel with heartbeats
    /// (every `bound / 2`), and while it cannot (a lost connection, a silently dead one, a
    /// starved task), `cache` re-reads a key once its record is older than the bound. After a
    /// reconnection `cache` is emptied (announcements may have been missed), and whole TTLs
    /// resume. Call [`migrate`](Self::migrate) once first (it installs the trigger).
    ///
    /// The follower holds two connections of its own (the listener and its heartbeats),
    /// opened with this store's connection options. It logs (target
    /// `tower_api_guard::api_key`) when the channel is lost (`warn`) and restored (`info`),
    /// never a key or a digest.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_api_guard::api_key::{ApiKeyAuthenticator, CachedKeyStore, KeyFormat, PostgresKeyStore};
    ///
    /// let store = PostgresKeyStore::connect("postgres://guard@db.internal/keys").await?;
    /// store.migrate().await?;
    /// let cache = CachedKeyStore::new(store.clone());
    /// // Keep the follower as long as the cache: dropping it stops following.
    /// let follower = store.follow(&cache).await?;
    /// let auth = ApiKeyAuthenticator::new(KeyFormat::new("sk_live")?, cache);
    /// # drop((auth, follower));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The listener cannot connect or `LISTEN` (later losses are handled by the follower).
    pub async fn follow<S: super::ApiKeyStore + Clone>(
        &self,
        cache: &super::CachedKeyStore<S>,
    ) -> Result<super::CacheFollower, StoreError> {
        self.follow_with(cache, super::FollowOptions::default())
            .await
    }

    /// [`follow`](Self::follow) with explicit options: the bound, and the listener's own
    /// connection options (to bypass a transaction-mode pooler, which cannot `LISTEN`).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tower_api_guard::api_key::{CachedKeyStore, FollowOptions, PostgresKeyStore};
    ///
    /// let store = PostgresKeyStore::connect("postgres://guard@pgbouncer.internal/keys").await?;
    /// let cache = CachedKeyStore::new(store.clone());
    /// let direct = "postgres://guard@db.internal/keys".parse()?;
    /// let follower = store
    ///     .follow_with(&cache, FollowOptions::new().bound(Duration::from_millis(500)).listener_options(direct))
    ///     .await?;
    /// assert!(follower.is_connected());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The listener cannot connect or `LISTEN`.
    pub async fn follow_with<S: super::ApiKeyStore + Clone>(
        &self,
        cache: &super::CachedKeyStore<S>,
        options: super::FollowOptions,
    ) -> Result<super::CacheFollower, StoreError> {
        super::follow::start(&self.pool, cache, options).await
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::api_key::{ApiKeyManager, ApiKeyStore, KeyFormat, NewKey};

    fn assert_sqlx_source(err: &StoreError) {
        assert_eq!(err.reason(), "database error");
        let source = err.source().expect("the sqlx error is kept");
        assert!(source.downcast_ref::<sqlx::Error>().is_some(), "{source:?}");
    }

    #[tokio::test]
    async fn a_missing_table_is_a_store_error_with_its_cause() {
        let store = SqliteKeyStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        sqlx::query("DROP TABLE tag_api_keys")
            .execute(&store.pool)
            .await
            .unwrap();
        let format = KeyFormat::new("sk_test").unwrap();
        let err = store.find(&format.digest("sk_test_x")).await.unwrap_err();
        assert_sqlx_source(&err);
        assert!(err.source().unwrap().to_string().contains("no such table"));
    }

    #[tokio::test]
    async fn a_closed_pool_is_a_store_error_with_its_cause() {
        let store = SqliteKeyStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        store.pool.close().await;
        let (_, record) = KeyFormat::new("sk_test")
            .unwrap()
            .generate(NewKey::new("owner", "ci"))
            .unwrap();
        let err = store.create(&record).await.unwrap_err();
        assert_sqlx_source(&err);
        assert!(matches!(
            err.source().unwrap().downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolClosed)
        ));
    }

    #[tokio::test]
    async fn unparsable_metadata_keeps_the_json_error() {
        let store = SqliteKeyStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let (_, record) = KeyFormat::new("sk_test")
            .unwrap()
            .generate(NewKey::new("owner", "ci"))
            .unwrap();
        store.create(&record).await.unwrap();
        sqlx::query("UPDATE tag_api_keys SET metadata = '{'")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.find_by_id(&record.id).await.unwrap_err();
        assert_eq!(err.reason(), "stored metadata is not JSON");
        assert!(
            err.source()
                .unwrap()
                .downcast_ref::<serde_json::Error>()
                .is_some()
        );
    }
}
