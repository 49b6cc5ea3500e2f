//! [`RedisConnection`]: the one way this crate talks to Redis (feature `redis`), to one
//! server or to a Redis Cluster.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::ConfigError;

/// A connection to Redis, shared by clones: one server (a reconnecting
/// [`ConnectionManager`]) or a Redis Cluster (redis-rs's [`ClusterConnection`], which
/// follows `MOVED` and `ASK`, refreshes its slot map and reconnects by itself).
///
/// Every Redis-backed part of this crate takes one (`RedisStore`, `RedisRevocations`,
/// `RedisReplayCache`, the brute-force guard), either from a URL through
/// [`connect`](Self::connect) or from a connection you already own (`From` a
/// `ConnectionManager` or a `ClusterConnection`), so one connection can serve them all.
///
/// The keys this crate writes carry a hash tag per identity (`prefix:{identity}:…`), so
/// everything one decision touches lives in one slot and each script call stays atomic in
/// a cluster too.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_api_guard::ConfigError> {
/// use tower_api_guard::RedisConnection;
///
/// // One server:
/// let single = RedisConnection::connect("redis://127.0.0.1:6379").await?;
/// // A cluster, from any of its nodes (the others are discovered):
/// let cluster = RedisConnection::connect("redis+cluster://10.0.0.1:7000,10.0.0.2:7000").await?;
/// assert!(cluster.is_cluster());
/// # let _ = single;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisConnection(Conn);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may carry a password.
        let kind = if self.is_cluster() {
            "cluster"
        } else {
            "single"
        };
        f.debug_tuple("RedisConnection").field(&kind).finish()
    }
}

/// The first connection is tried with a 2-second timeout (a dead server is an error
/// within seconds rather than after the client's default backoff); responses time out
/// after 2 s (callers keep their own, shorter, budgets per call).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The schemes that name a cluster's seed nodes.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

impl RedisConnection {
    /// Connect to one server (`redis://host:port/db`, `redis://user:password@host`,
    /// `redis+unix:///path`) or to a cluster (`redis+cluster://host:port,host:port,…`,
    /// with optional `user:password@` before the first node; any reachable node is
    /// enough, the others are discovered). A single server is asked twice before giving
    /// up.
    ///
    /// # Errors
    /// A malformed URL or a failed first connection; the message never holds the URL.
    pub async fn connect(url: &str) -> Result<Self, ConfigError> {
        match cluster_seeds(url) {
            Some(seeds) => Self::cluster(seeds?).await,
            None => Self::single(url).await,
        }
    }

    /// Connect to a cluster through `seeds` (`redis://host:port` each; one reachable node
    /// is enough).
    ///
    /// # Errors
    /// No seed, a malformed URL or no node reachable.
    pub async fn cluster<I, S>(seeds: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let seeds: Vec<String> = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
        if seeds.is_empty() {
            return Err(ConfigError::parse(
                "a Redis Cluster needs at least one seed node",
            ));
        }
        let client = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            // A request to a failed master is retried a few times over about a second
            // (the slot map is refreshed on the way); callers' own time limits are shorter.
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()
            .map_err(|_| ConfigError::parse("invalid Redis Cluster seed URL"))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| ConfigError::unavailable("cannot connect to the Redis Cluster", e))?;
        Ok(Self(Conn::Cluster(conn)))
    }

    async fn single(url: &str) -> Result<Self, ConfigError> {
        let client =
            redis::Client::open(url).map_err(|_| ConfigError::parse("invalid Redis URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| ConfigError::unavailable("cannot connect to Redis", e))?;
        Ok(Self(Conn::Single(conn)))
    }

    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Conn::Cluster(_))
    }
}

/// The seed URLs of a `redis+cluster://` (or `rediss+cluster://`) URL; `None` for any
/// other URL.
fn cluster_seeds(url: &str) -> Option<Result<Vec<String>, ConfigError>> {
    let (rest, scheme) = CLUSTER_SCHEMES
        .iter()
        .find_map(|(cluster, plain)| Some((url.strip_prefix(cluster)?, *plain)))?;
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| match userinfo {
            Some(userinfo) => format!("{scheme}{userinfo}@{host}"),
            None => format!("{scheme}{host}"),
        })
        .collect();
    Some(if seeds.is_empty() || hosts.contains('/') {
        Err(ConfigError::parse(
            "a Redis Cluster URL is redis+cluster://host:port,host:port (no path)",
        ))
    } else {
        Ok(seeds)
    })
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        Self(Conn::Single(conn))
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(conn: ClusterConnection) -> Self {
        Self(Conn::Cluster(conn))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A key's hash slot (the Redis Cluster specification): CRC16-XMODEM of its hash tag (what
/// is between the first `{` and the next `}`, when not empty) or of the whole key, modulo
/// 16,384.
#[cfg(feature = "rate-limit")]
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16_384
}

/// Which master serves each slot, numbered by node, from `CLUSTER SLOTS`; `None` when the
/// answer cannot be had or read (callers then group by slot).
#[cfg(feature = "rate-limit")]
pub(crate) async fn slot_owners(conn: &mut RedisConnection) -> Option<Box<[u16]>> {
    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .ok()?;
    let mut nodes: Vec<&[redis::Value]> = Vec::new();
    let mut owner = vec![u16::MAX; 16_384].into_boxed_slice();
    for range in &ranges {
        let [start, end, master, ..] = range.as_slice() else {
            return None;
        };
        let (redis::Value::Int(start), redis::Value::Int(end)) = (start, end) else {
            return None;
        };
        // The master's address (host and port) names the node.
        let redis::Value::Array(master) = master else {
            return None;
        };
        let address = master.get(..2)?;
        let index = match nodes.iter().position(|n| *n == address) {
            Some(i) => i,
            None => {
                nodes.push(address);
                nodes.len() - 1
            }
        };
        let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
        for slot in owner.get_mut(start..=end)? {
            *slot = u16::try_from(index).ok()?;
        }
    }
    Some(owner)
}

/// One Redis call within `limit`, its time recorded as `op` in
/// `tower_api_guard_redis_seconds` however it ended: what every Redis client of the crate
/// does for each call, each then naming its errors its own way.
pub(crate) async fn within<T>(
    limit: Duration,
    op: crate::metrics::RedisOp,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<redis::RedisResult<T>, tokio::time::error::Elapsed> {
    let timer = crate::metrics::Timer::start();
    let answer = tokio::time::timeout(limit, call).await;
    timer.redis(op);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "rate-limit")]
    fn slots_agree_with_redis_rs() {
        for key in [
            "a",
            "b",
            "tag:rl:{jwt:1:x:alice}:0",
            "{}x",
            "x{}y{z}",
            "{user1000}.following",
        ] {
            let ours = slot_of(key.as_bytes());
            assert_eq!(
                redis::cluster_routing::Slot::new(ours),
                Some(redis::cluster_routing::Slot::for_key(key)),
                "{key}"
            );
        }
        // The specification's examples.
        assert_eq!(slot_of(b"a"), 15_495);
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
    }

    #[test]
    fn cluster_urls_name_their_seeds_and_other_urls_are_single_servers() {
        let seeds = |url| cluster_seeds(url).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(seeds("redis://127.0.0.1:6379"), None);
        assert_eq!(
            seeds("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/"),
            Some(Ok(vec![
                "redis://10.0.0.1:7000".to_owned(),
                "redis://10.0.0.2:7001".to_owned()
            ]))
        );
        assert_eq!(
            seeds("rediss+cluster://u:p@a:1, b:2"),
            Some(Ok(vec![
                "rediss://u:p@a:1".to_owned(),
                "rediss://u:p@b:2".to_owned()
            ]))
        );
        for bad in [
            "redis+cluster://",
            "redis+cluster://,",
            "redis+cluster://a:1/0",
        ] {
            let err = seeds(bad).unwrap().unwrap_err();
            assert!(err.contains("redis+cluster://host:port"), "{err}");
        }
    }
}
