//! A small key-management tool over PostgreSQL or SQLite.
//!
//! ```text
//! cargo run --example api_keys -- create <owner> <name> [scope ...]   # prints the key once
//! cargo run --example api_keys -- list <owner>
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

use std::time::{Duration, SystemTime};

use tower_api_guard::api_key::{
    ApiKeyManager, KeyFormat, NewKey, PostgresKeyStore, SqliteKeyStore,
};

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
        ["list", owner] => {
            for r in store.list_by_owner(owner).await? {
                let state = if r.is_active(SystemTime::now()) {
                    "active"
                } else {
                    "revoked/expired"
                };
                println!(
                    "{}  {}  {}  [{}]  {state}",
                    r.id,
                    r.display,
                    r.name,
                    r.scopes.join(" ")
                );
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
                "usage: api_keys create <owner> <name> [scope ...] | list <owner> | revoke <id> | rotate <id> [grace-seconds]"
            );
            std::process::exit(2);
        }
    }
    Ok(())
}
