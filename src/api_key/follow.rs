//! Keeping a [`CachedKeyStore`] in step with the PostgreSQL key table: the migration's
//! trigger announces every change of a key on [`KEY_EVENTS_CHANNEL`], and a
//! [`CacheFollower`] evicts the key named in each announcement (see
//! [`PostgresKeyStore::follow`](super::PostgresKeyStore::follow)).
//!
//! The follower proves its channel is up with heartbeats: every `bound / 2` it notifies a
//! channel of its own (`tower_api_guard_hb_<random>`) with the time it sent the beat, and
//! each beat it receives lets the cache serve entries for their whole TTL until *sent + bound*.
//! A revocation committed before a beat is sent is delivered before that beat (PostgreSQL
//! delivers notifications in commit order on one connection), so a beat received proves the
//! cache has seen every change committed before it was sent. Without a fresh beat (channel
//! lost, connection silently dead, task starved) the cache serves only entries read less than
//! `bound` ago, and so a key changed anywhere is refused by every following replica within
//! `bound`, whether or not the channel is up. After a reconnection, notifications may have
//! been missed: the first beat received on the new connection empties the cache.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions};

use super::store::{CacheLink, epoch_nanos};
use super::{ApiKeyStore, CachedKeyStore, KeyDigest, StoreError};

/// Expands to the channel name, so that the migration can `concat!` it.
macro_rules! key_events_channel {
    () => {
        "tower_api_guard_keys"
    };
}
pub(crate) use key_events_channel;

/// The PostgreSQL channel on which the key table's trigger (installed by
/// [`PostgresKeyStore::migrate`](super::PostgresKeyStore::migrate)) announces changed keys:
/// `tower_api_guard_keys`.
///
/// The trigger fires on every change of a key that a cache could hold — `revoked_at`,
/// `expires_at`, scopes, roles, the digest, any column but `last_used_at` — and on deletes,
/// whether made through this crate or by plain SQL. The payload is the key's digest in
/// lowercase hex (64 characters; a digest, never the key), or `*` after a `TRUNCATE`.
/// Tables in other schemas of the same database announce on the same channel; a follower
/// then evicts a digest it may not hold, which costs nothing.
pub const KEY_EVENTS_CHANNEL: &str = key_events_channel!();

/// The default fallback bound.
const DEFAULT_BOUND: Duration = Duration::from_secs(1);
/// The shortest bound accepted.
const MIN_BOUND: Duration = Duration::from_millis(20);
/// The first and the longest wait between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));
/// How long one connection attempt (connect and `LISTEN`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`CacheFollower`] follows the key table's changes (see
/// [`PostgresKeyStore::follow_with`](super::PostgresKeyStore::follow_with)).
#[derive(Clone)]
pub struct FollowOptions {
    bound: Duration,
    listener: Option<PgConnectOptions>,
}

impl fmt::Debug for FollowOptions {
    // The connection options may hold a password: not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowOptions")
            .field("bound", &self.bound)
            .field("own_listener_options", &self.listener.is_some())
            .finish()
    }
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            bound: DEFAULT_BOUND,
            listener: None,
        }
    }
}

impl FollowOptions {
    /// The defaults: a 1 s bound, the store's connection options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bound (default 1 s, at least 20 ms): a key changed anywhere is refused within it;
    /// while the channel is not proven up, cached keys are re-read once they are this old.
    /// Heartbeats are sent every `bound / 2`.
    #[must_use]
    pub fn bound(mut self, bound: Duration) -> Self {
        self.bound = bound.max(MIN_BOUND);
        self
    }

    /// Connect the listener (and its heartbeats) with these options instead of the store
    /// pool's: `LISTEN` needs a session of its own, so point it past a transaction-mode
    /// connection pooler (PgBouncer) straight at the server.
    #[must_use]
    pub fn listener_options(mut self, options: PgConnectOptions) -> Self {
        self.listener = Some(options);
        self
    }
}

/// The state a follower shares with its handle.
#[derive(Debug, Default)]
struct Status {
    connected: AtomicBool,
    losses: AtomicU64,
}

/// A running follower: a task that listens on [`KEY_EVENTS_CHANNEL`] and keeps a
/// [`CachedKeyStore`] in step (see
/// [`PostgresKeyStore::follow`](super::PostgresKeyStore::follow)).
///
/// Dropping it (or [`stop`](Self::stop)) ends the task; the task also ends by itself within
/// `bound / 2` once every clone of the cache is dropped. A cache whose follower has stopped
/// stays in the fallback mode: it serves keys read less than the bound ago, so that the
/// guarantee never silently lapses.
#[must_use = "dropping the follower stops following"]
pub struct CacheFollower {
    task: tokio::task::JoinHandle<()>,
    status: Arc<Status>,
    bound: Duration,
}

impl fmt::Debug for CacheFollower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheFollower")
            .field("bound", &self.bound)
            .field("connected", &self.is_connected())
            .field("losses", &self.losses())
            .field("running", &self.is_running())
            .finish()
    }
}

impl CacheFollower {
    /// Whether the channel is up: the last heartbeat came within the bound, on a connection
    /// that has delivered everything since the cache was last emptied.
    pub fn is_connected(&self) -> bool {
        self.status.connected.load(Ordering::Relaxed)
    }

    /// How many times the channel was lost (an error, a dropped connection, or no message
    /// within the bound) since the follower started.
    pub fn losses(&self) -> u64 {
        self.status.losses.load(Ordering::Relaxed)
    }

    /// Whether the task still runs: it ends when the follower is dropped or every clone of
    /// the cache is.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// The fallback bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Stop following (the same as dropping the follower).
    pub fn stop(self) {}
}

impl Drop for CacheFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Aborts a task when dropped: the heartbeat task ends with the listener task.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A channel of this follower's own for its heartbeats.
fn heartbeat_channel() -> String {
    let mut random = [0u8; 8];
    // Without the OS RNG the time still tells followers apart well enough: the name only
    // has to differ from the other followers'.
    if getrandom::fill(&mut random).is_err() {
        let nanos = epoch_nanos(SystemTime::now());
        random = nanos.to_le_bytes();
    }
    format!("tower_api_guard_hb_{}", hex(&random))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The digest a key event names (64 hex digits).
fn parse_digest(payload: &str) -> Option<KeyDigest> {
    let text = payload.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        bytes[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(KeyDigest::from_bytes(bytes))
}

/// A dedicated pool of one connection for the listener: a connection it gives back (after a
/// loss) is closed, never reused.
fn listener_pool(options: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(CONNECT_TIMEOUT)
        .after_release(|_, _| Box::pin(async { Ok(false) }))
        .connect_lazy_with(options.clone())
}

/// Connect and `LISTEN` to the key events and the heartbeats.
async fn listen(options: &PgConnectOptions, heartbeats: &str) -> Result<PgListener, sqlx::Error> {
    let attempt = async {
        let pool = listener_pool(options);
        let mut listener = PgListener::connect_with(&pool).await?;
        listener
            .listen_all([KEY_EVENTS_CHANNEL, heartbeats])
            .await?;
        Ok(listener)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// Start following: listen first (so that an unreachable server is an error here), empty the
/// cache (it may hold keys changed before), then run the task.
pub(crate) async fn start<S: ApiKeyStore + Clone>(
    store_pool: &PgPool,
    cache: &CachedKeyStore<S>,
    options: FollowOptions,
) -> Result<CacheFollower, StoreError> {
    let connect = options
        .listener
        .unwrap_or_else(|| (*store_pool.connect_options()).clone());
    let bound = options.bound;
    let heartbeats = heartbeat_channel();
    let listener = listen(&connect, &heartbeats)
        .await
        .map_err(|e| StoreError::new("cannot listen for API key changes").with_source(e))?;
    let link = cache.link(bound);
    link.invalidate_all();
    link.healthy_until(link.clock().now() + bound);
    let status = Arc::new(Status::default());
    status.connected.store(true, Ordering::Relaxed);
    tracing::info!(
        target: "tower_api_guard::api_key",
        channel = KEY_EVENTS_CHANNEL,
        bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
        "following API key changes"
    );
    let follower = Follower {
        link,
        status: status.clone(),
        bound,
        connect,
        heartbeats,
        lost: false,
    };
    let task = tokio::spawn(follower.run(listener));
    Ok(CacheFollower {
        task,
        status,
        bound,
    })
}

/// The listener task's state.
struct Follower {
    link: CacheLink,
    status: Arc<Status>,
    bound: Duration,
    connect: PgConnectOptions,
    heartbeats: String,
    /// The channel was lost and no heartbeat has come since.
    lost: bool,
}

/// What ended a wait for a message.
enum Outcome {
    /// A message.
    Message(PgNotification),
    /// The connection dropped and sqlx connected again (notifications may have been missed).
    Reconnected,
    /// An error: connect again.
    Failed(sqlx::Error),
    /// Nothing within the bound: the connection may be dead without saying so.
    Silent,
}

impl Follower {
    async fn run(mut self, mut listener: PgListener) {
        let beat = tokio::spawn(heartbeat(
            heartbeat_pool(&self.connect),
            self.heartbeats.clone(),
            self.link.clock().clone(),
            self.bound / 2,
        ));
        let _beat = AbortOnDrop(beat);
        loop {
            if self.link.is_gone() {
                break;
            }
            let outcome = match tokio::time::timeout(self.bound, listener.try_recv()).await {
                Ok(Ok(Some(message))) => Outcome::Message(message),
                Ok(Ok(None)) => Outcome::Reconnected,
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => Outcome::Silent,
            };
            match outcome {
                Outcome::Message(message) => {
                    if !self.handle(&message) {
                        break;
                    }
                }
                Outcome::Reconnected => self.lose("connection dropped; reconnected"),
                Outcome::Failed(e) => {
                    self.lose("listener failed");
                    tracing::debug!(target: "tower_api_guard::api_key", error = %e, "API key change listener error");
                    drop(listener);
                    match self.reconnect().await {
                        Some(l) => listener = l,
                        None => break,
                    }
                }
                Outcome::Silent => {
                    self.lose("no heartbeat within the bound");
                    drop(listener);
                    match self.reconnect().await {
                        Some(l) => listener = l,
                        None => break,
                    }
                }
            }
        }
        self.status.connected.store(false, Ordering::Relaxed);
        tracing::debug!(target: "tower_api_guard::api_key", "the cache is gone: stopped following API key changes");
    }

    /// Act on one message; `false` when the cache is gone.
    fn handle(&mut self, message: &PgNotification) -> bool {
        if message.channel() == self.heartbeats {
            if self.lost {
                // The first beat on a new connection: changes made while the channel was
                // down were not announced to us.
                if !self.link.invalidate_all() {
                    return false;
                }
                self.lost = false;
                self.status.connected.store(true, Ordering::Relaxed);
                tracing::info!(target: "tower_api_guard::api_key", channel = KEY_EVENTS_CHANNEL, "API key change channel restored; cache emptied");
            }
            // A beat from a previous connection or a malformed one proves nothing.
            return match message.payload().parse::<u64>() {
                Ok(sent) => self
                    .link
                    .healthy_until(UNIX_EPOCH + Duration::from_nanos(sent) + self.bound),
                Err(_) => !self.link.is_gone(),
            };
        }
        match message.payload() {
            "*" => self.link.invalidate_all(),
            payload => match parse_digest(payload) {
                Some(digest) => self.link.invalidate(&digest),
                // Not ours to understand: forgetting everything is always safe.
                None => self.link.invalidate_all(),
            },
        }
    }

    /// The channel is lost: from now on the cache serves only young entries.
    fn lose(&mut self, why: &'static str) {
        self.link.fallback();
        if !self.lost {
            self.lost = true;
            self.status.connected.store(false, Ordering::Relaxed);
            self.status.losses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "tower_api_guard::api_key",
                channel = KEY_EVENTS_CHANNEL,
                reason = why,
                "API key change channel lost; cached keys are re-read once older than the bound"
            );
        }
    }

    /// Connect again, with a growing pause between attempts; `None` when the cache is gone.
    async fn reconnect(&mut self) -> Option<PgListener> {
        let mut pause = BACKOFF.0;
        loop {
            if self.link.is_gone() {
                return None;
            }
            match listen(&self.connect, &self.heartbeats).await {
                Ok(listener) => return Some(listener),
                Err(e) => {
                    tracing::debug!(target: "tower_api_guard::api_key", error = %e, "API key change listener: reconnection failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BACKOFF.1);
                }
            }
        }
    }
}

/// The heartbeats' own pool of one connection (kept, unlike the listener's), so that a busy
/// store pool does not delay them.
fn heartbeat_pool(options: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options.clone())
}

/// Every `every`, notify `channel` with the time of sending (nanoseconds since the epoch, on
/// the cache's clock).
async fn heartbeat(
    pool: PgPool,
    channel: String,
    clock: Arc<dyn crate::clock::Clock>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = epoch_nanos(clock.now());
        let beat = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel.as_str())
            .bind(sent.to_string())
            .execute(&pool);
        match tokio::time::timeout(every.max(Duration::from_millis(100)), beat).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(target: "tower_api_guard::api_key", error = %e, "API key change heartbeat failed");
            }
            Err(_) => {
                tracing::debug!(target: "tower_api_guard::api_key", "API key change heartbeat timed out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_from_lowercase_and_uppercase_hex_only() {
        let digest = KeyDigest::from_bytes([0xab; 32]);
        assert_eq!(parse_digest(&digest.to_hex()), Some(digest));
        assert_eq!(parse_digest(&digest.to_hex().to_uppercase()), Some(digest));
        assert_eq!(parse_digest("*"), None);
        assert_eq!(parse_digest(&"zz".repeat(32)), None);
        assert_eq!(parse_digest(&"ab".repeat(31)), None);
        assert_eq!(parse_digest(&"é".repeat(32)), None);
    }

    #[test]
    fn heartbeat_channels_differ_and_are_identifiers() {
        let (a, b) = (heartbeat_channel(), heartbeat_channel());
        assert_ne!(a, b);
        assert!(a.len() < 64, "{a}");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        );
    }

    #[test]
    fn the_bound_has_a_floor_and_options_show_no_connection_details() {
        let options = FollowOptions::new().bound(Duration::ZERO);
        assert_eq!(options.bound, MIN_BOUND);
        let options =
            options.listener_options("postgres://user:hunter2@db.internal/keys".parse().unwrap());
        let shown = format!("{options:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("db.internal"),
            "{shown}"
        );
    }
}
