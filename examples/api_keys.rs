//! A small key-management tool over SQLite.
//!
//! ```text
//! cargo run --example api_keys -- create <owner> <name> [scope ...]   # prints the key once
//! cargo run --example api_keys -- list <owner>
//! cargo run --example api_keys -- revoke <key-id>
//! cargo run --example api_keys -- rotate <key-id> [grace-seconds]     # default 3600
//! ```
//!
//! The database is `GUARD_KEYS_DB` (default `api-keys.db` in the current directory); the
//! key prefix is `GUARD_KEY_PREFIX` (default `sk_live`). Only digests are stored.

use std::time::{Duration, SystemTime};

use tower_api_guard::api_key::{ApiKeyManager, KeyFormat, NewKey, SqliteKeyStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let db = std::env::var("GUARD_KEYS_DB").unwrap_or_else(|_| "api-keys.db".into());
    let prefix = std::env::var("GUARD_KEY_PREFIX").unwrap_or_else(|_| "sk_live".into());
    let store = SqliteKeyStore::connect(&format!("sqlite://{db}?mode=rwc")).await?;
    store.migrate().await?;
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
            let (key, record) = format.rotate(&store, id, SystemTime::now(), grace).await?;
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
