//! [`RedisFailures`]: the brute-force guard's failure counters and lockouts in Redis, shared
//! by every replica (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ConfigError, FailurePolicy};
use crate::redis_conn::RedisConnection;

/// Whether a subject (a client address or a credential id) may try now: read only.
/// KEYS[1]: its failure counter (the GCRA's theoretical arrival time, µs since the Unix
/// epoch); KEYS[2]: its lockout (a hash: `level`, `until`, µs).
/// ARGV: now (µs, the caller's clock), the quota's emission interval (µs), its burst.
/// Returns the wait (µs) before the subject may try again; 0: it may try now.
const CHECK: &str = r"
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = 0
local untl = tonumber(redis.call('HGET', KEYS[2], 'until') or '0')
if untl > now then wait = untl - now end
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local over = tat + interval - now - interval * burst
if over > wait then wait = over end
return wait";

/// Record one failed authentication of a subject, and lock it out when that puts it over
/// its quota: one atomic step.
/// KEYS: as for `CHECK`.
/// ARGV: now (µs), emission interval (µs), burst, then the lockout's base, cap and quiet
/// period (µs; a base of 0: no lockouts).
/// The failure is consumed if the quota has room, as the GCRA does. When one more failure
/// would not fit and no lockout is running, a lockout starts: `base × 2^level` up to `cap`,
/// the level one more than the last lockout's unless that one ended over `quiet` ago (then
/// 0), never shorter than the quota's own wait. Keys expire once irrelevant: the counter
/// when its arrival time passes, the lockout `quiet` after it ends.
/// Returns {the wait (µs) before the subject may try again (0: not over), the level of the
/// lockout started (-1: none)}.
const RECORD: &str = r"
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cap = interval * burst
local fmt, ceil = string.format, math.ceil
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
if tat + interval - now <= cap then
  tat = tat + interval
  redis.call('SET', KEYS[1], fmt('%.0f', tat), 'PX', ceil((tat - now) / 1000) + 1)
end
local wait = tat + interval - now - cap
if wait <= 0 then return {0, -1} end
local base = tonumber(ARGV[4])
if base <= 0 then return {wait, -1} end
local lock = redis.call('HMGET', KEYS[2], 'level', 'until')
local level, untl = tonumber(lock[1]), tonumber(lock[2])
if untl and untl > now then return {untl - now, -1} end
local longest, quiet = tonumber(ARGV[5]), tonumber(ARGV[6])
if level and untl and now - untl <= quiet then level = math.min(level + 1, 62) else level = 0 end
local lockout = base * 2 ^ level
if lockout > longest then lockout = longest end
if lockout < wait then lockout = wait end
untl = now + lockout
redis.call('HSET', KEYS[2], 'level', level, 'until', fmt('%.0f', untl))
redis.call('PEXPIRE', KEYS[2], ceil((lockout + quiet) / 1000) + 1)
return {lockout, level}";

/// The brute-force guard's store in Redis (feature `redis`), so that replicas enforce
/// **one** failure quota per client address (and per credential id) instead of one each;
/// give it to [`BruteForceGuardLayer::redis`](super::BruteForceGuardLayer::redis).
///
/// * **Atomic.** "May this address try?" and "record a failure (and start or extend its
///   progressive lockout when it goes over)" are each one Lua script call (`EVALSHA`,
///   loaded again on `NOSCRIPT`).
/// * **Redis Cluster.** Every key of one address carries one hash tag
///   (`prefix:{ip:198.51.100.7}:f`, `prefix:{ip:198.51.100.7}:lock`; a credential id's
///   `prefix:{id:…}:f`), so each script call touches one slot. The prefix must not hold
///   `{` or `}` (they are removed).
/// * **Time.** The scripts run on the guard's [clock](super::BruteForceGuardLayer::clock),
///   passed with each call (so tests can drive them with a `ManualClock`), not on Redis
///   server time: **keep the replicas' clocks in sync (NTP)**. A replica whose clock is
///   `s` behind sees lockouts last `s` longer, one ahead sees them `s` shorter.
/// * **Expiry.** A counter expires once its failures no longer count, a lockout once its
///   quiet period (see [`progressive_lockout`](super::BruteForceGuardLayer::progressive_lockout))
///   has passed after it ended.
/// * **Time limit and failures.** Each call has a time limit (default 50 ms). A Redis
///   error or a blown time limit is logged (`warn`, target `tower_api_guard::auth`, with a
///   reason, never a credential) and, when asking whether a client may try, decided by the
///   [`FailurePolicy`]: [`Open`](FailurePolicy::Open) (the default) lets the request
///   through to authentication, [`Closed`](FailurePolicy::Closed) answers `503` with
///   `Retry-After`. A failure that cannot be recorded is logged, and the response (already
///   a rejection) is left as it is.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_api_guard::ConfigError> {
/// use std::time::Duration;
/// use tower_api_guard::FailurePolicy;
/// use tower_api_guard::auth::{BruteForceGuardLayer, RedisFailures};
/// use tower_api_guard::rate_limit::Quota;
///
/// let failures = RedisFailures::connect("redis://127.0.0.1:6379")
///     .await?
///     .prefix("myapi:bf")
///     .timeout(Duration::from_millis(20))
///     .failure_policy(FailurePolicy::Closed);
/// let guard = BruteForceGuardLayer::new(Quota::parse("20/min").unwrap())
///     .progressive_lockout(
///         Duration::from_secs(60),
///         Duration::from_secs(3600),
///         Duration::from_secs(86_400),
///     )
///     .redis(failures);
/// // Or with a connection you already have: `.redis(conn)` (a `RedisConnection`).
/// # let _ = guard;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisFailures {
    conn: RedisConnection,
    prefix: Arc<str>,
    timeout: Duration,
    failure: FailurePolicy,
    scripts: Arc<Scripts>,
}

struct Scripts {
    check: redis::Script,
    record: redis::Script,
}

impl fmt::Debug for RedisFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFailures")
            .field("conn", &self.conn)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl From<RedisConnection> for RedisFailures {
    fn from(conn: RedisConnection) -> Self {
        Self::new(conn)
    }
}

impl RedisFailures {
    /// Use a connection you already have (a [`RedisConnection`] to one server or a
    /// cluster, a `ConnectionManager` or a `ClusterConnection`). Prefix `tag:bf`, time
    /// limit 50 ms, [`FailurePolicy::Open`].
    pub fn new(conn: impl Into<RedisConnection>) -> Self {
        Self {
            conn: conn.into(),
            prefix: "tag:bf".into(),
            timeout: Duration::from_millis(50),
            failure: FailurePolicy::Open,
            scripts: Arc::new(Scripts {
                check: redis::Script::new(CHECK),
                record: redis::Script::new(RECORD),
            }),
        }
    }

    /// Connect to `url` (`redis://…` for one server, `redis+cluster://h:p,h:p` for a
    /// cluster; see [`RedisConnection::connect`]).
    ///
    /// # Errors
    /// A malformed URL or a failed first connection.
    pub async fn connect(url: &str) -> Result<Self, ConfigError> {
        Ok(Self::new(RedisConnection::connect(url).await?))
    }

    /// The key prefix (default `tag:bf`); `{` and `}` are removed, since the hash tag of
    /// each address follows it. Give replicas that must share counters the same prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.replace(['{', '}'], "").into();
        self
    }

    /// The time limit of one Redis call (default 50 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What an error or a blown time limit does to a request being checked (default
    /// [`FailurePolicy::Open`]: let it through to authentication, logged;
    /// [`FailurePolicy::Closed`]: `503` with `Retry-After`).
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    pub(super) fn policy(&self) -> FailurePolicy {
        self.failure
    }

    /// The keys of `subject` (`ip:…` or `id:…`): its counter and its lockout.
    fn keys(&self, subject: &str) -> [String; 2] {
        let base = format!("{}:{{{subject}}}", self.prefix);
        [format!("{base}:f"), format!("{base}:lock")]
    }

    /// The wait before `subject` may try again (`None`: it may now).
    pub(super) async fn check(
        &self,
        subject: &str,
        limit: Limit,
        now_us: u64,
    ) -> Result<Option<Duration>, &'static str> {
        let [counter, lock] = self.keys(subject);
        let mut invocation = self.scripts.check.prepare_invoke();
        invocation
            .key(counter)
            .key(lock)
            .arg(now_us)
            .arg(limit.interval_us)
            .arg(limit.burst);
        let mut conn = self.conn.clone();
        let wait: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok((wait > 0).then(|| micros(wait)))
    }

    /// Record a failure of `subject`; with `lockout`, lock it out when it goes over. The
    /// wait before it may try again and, when a lockout started, its level.
    pub(super) async fn record(
        &self,
        subject: &str,
        limit: Limit,
        lockout: Option<LockoutRule>,
        now_us: u64,
    ) -> Result<Recorded, &'static str> {
        let [counter, lock] = self.keys(subject);
        let rule = lockout.unwrap_or(LockoutRule {
            base_us: 0,
            cap_us: 0,
            quiet_us: 0,
        });
        let mut invocation = self.scripts.record.prepare_invoke();
        invocation
            .key(counter)
            .key(lock)
            .arg(now_us)
            .arg(limit.interval_us)
            .arg(limit.burst)
            .arg(rule.base_us)
            .arg(rule.cap_us)
            .arg(rule.quiet_us);
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        match reply[..] {
            [wait, level] => Ok(Recorded {
                wait: (wait > 0).then(|| micros(wait)),
                level: u32::try_from(level).ok(),
            }),
            _ => Err("unexpected reply from the brute-force script"),
        }
    }

    /// `call` within the time limit.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, &'static str> {
        match crate::redis_conn::within(self.timeout, crate::metrics::RedisOp::Failures, call).await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err("Redis error"),
            Err(_) => Err("Redis over its time limit"),
        }
    }
}

fn micros(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

/// A quota as the scripts read it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit {
    pub(super) interval_us: u64,
    pub(super) burst: u32,
}

/// Progressive lockout settings, in microseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct LockoutRule {
    pub(super) base_us: u64,
    pub(super) cap_us: u64,
    pub(super) quiet_us: u64,
}

/// What recording a failure found.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recorded {
    /// The wait before the subject may try again, when it is over.
    pub(super) wait: Option<Duration>,
    /// The level of the lockout this failure started.
    pub(super) level: Option<u32>,
}
