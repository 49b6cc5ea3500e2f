//! A small key-management tool over PostgreSQL or SQLite.
//!
//! ```text
//! cargo run --example api_keys -- create <owner> <name> [scope ...]   # prints the key once
//! cargo run --example api_keys -- list <owner> [--all]               # active keys; --all: revoked and expired too
//! cargo run --example api_keys -- revoke <key-id>
//! cargo run --example api_keys -- rotate <key-id> [grace-seconds]     # default 3600
//! ```
//!
//! With `DATABASE_URL` set to a PostgreSQL URL (`postgres://user@host/db`), the keys are kept
//! there (the migration, with its change trigger, is applied first): a revocation or rotation
//! made here reaches the caches of every service following the table
//! (`PostgresKeyStore::follow`) within a second. Otherwise the database is the SQLite file
//! `GUARD_KEYS_DB` (default `api-keys.db` in the current directory). The key prefix is
//! `GUARD_KEY_PREFIX` (default `sk_live`). Only digests are stored.
//!
//! `list` shows each key's age (since it was made: rotation makes a new key) and its last
//! use, as written by the services' `LastUsedTracker` (in batches, so up to its interval
//! late): pair it with `ApiKeyAuthenticator::warn_after_age` / `refuse_after_age`.

use std::time::{Duration, SystemTime};

use tower_api_guard::api_key::{
    ApiKeyManager, ApiKeyRecord, KeyFormat, ListFilter, NewKey, PostgresKeyStore, SqliteKeyStore,
};

/// A duration for people: `42s`, `5m`, `3h`, `12d`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// One line of `list`: id, display form, name, scopes, state, age, last use.
fn line(r: &ApiKeyRecord, now: SystemTime) -> String {
    let state = if r.revoked_at.is_some_and(|at| now >= at) {
        "revoked"
    } else if r.expires_at.is_some_and(|at| now >= at) {
        "expired"
    } else if r.revoked_at.is_some() {
        "active (revocation scheduled)"
    } else {
        "active"
    };
    let since = |t: SystemTime| human(now.duration_since(t).unwrap_or_default());
    let last_used = r.last_used_at().map_or_else(
        || "never used".to_owned(),
        |t| format!("used {} ago", since(t)),
    );
    format!(
        "{}  {}  {}  [{}]  {state}  age {}  {last_used}",
        r.id,
        r.display,
        r.name,
        r.scopes.join(" "),
        since(r.created_at),
    )
}

/// The store: PostgreSQL when `DATABASE_URL` names one, else SQLite; migrated.
async fn store() -> Result<Box<dyn ApiKeyManager>, Box<dyn std::error::Error>> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && (url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        let store = PostgresKeyStore::connect(&url).await?;
        store.migrate().await?;
        return Ok(Box::new(store));
    }
    let db = std::env::var("GUARD_KEYS_DB").unwrap_or_else(|_| "api-keys.db".into());
    let store = SqliteKeyStore::connect(&format!("sqlite://{db}?mode=rwc")).await?;
    store.migrate().await?;
    Ok(Box::new(store))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let prefix = std::env::var("GUARD_KEY_PREFIX").unwrap_or_else(|_| "sk_live".into());
    let store = store().await?;
    let format = KeyFormat::new(&prefix)?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["create", owner, name, scopes @ ..] => {
            let (key, record) =
                format.generate(NewKey::new(*owner, *name).scopes(scopes.iter().copied()))?;
            store.create(&record).await?;
            println!("id:  {}", record.id);
            println!("key: {key}");
            println!("(the key is shown once; only its digest is stored)");
        }
        ["list", owner] | ["list", owner, "--all"] | ["list", "--all", owner]
            if !owner.starts_with("--") =>
        {
            let now = SystemTime::now();
            let filter = if args.iter().any(|a| a == "--all") {
                ListFilter::All
            } else {
                ListFilter::ActiveAt(now)
            };
            for r in store.list(owner, filter).await? {
                println!("{}", line(&r, now));
            }
        }
        ["revoke", id] => {
            if store.revoke(id, SystemTime::now()).await? {
                println!("revoked {id}");
            } else {
                eprintln!("no key {id}");
                std::process::exit(1);
            }
        }
        ["rotate", id, rest @ ..] => {
            let grace = match rest.first() {
                Some(s) => Duration::from_secs(s.parse()?),
                None => Duration::from_secs(3600),
            };
            let (key, record) = format.rotate(&*store, id, SystemTime::now(), grace).await?;
            println!("new id:  {}", record.id);
            println!("new key: {key}");
            println!("{id} stops working in {} s", grace.as_secs());
        }
        _ => {
            eprintln!(
                "usage: api_keys create <owner> <name> [scope ...] | list <owner> [--all] | revoke <id> | rotate <id> [grace-seconds]"
            );
            std::process::exit(2);
        }
    }
    Ok(())
}
