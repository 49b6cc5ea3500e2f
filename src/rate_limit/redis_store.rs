//! [`RedisStore`]: GCRA shared by every replica, one Lua script, one round trip.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{Decision, Quota};
use crate::error::ConfigError;

/// GCRA over several quotas in one script, on Redis server time (so replicas with skewed
/// clocks agree). Microseconds throughout (well inside Lua's exact integer range).
/// KEYS: one per quota. ARGV: cost, then emission interval (µs) and burst per quota.
/// Returns {allowed, retry_us, remaining_1, reset_us_1, …}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local tats, caps, new = {}, {}, {}
local retry = 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  caps[i] = interval * tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  new[i] = tat + cost * interval
  if new[i] - now > caps[i] then
    local wait = new[i] - now - caps[i]
    if wait > retry then retry = wait end
  end
end
local result
if retry > 0 then
  -- Rejected: nothing is consumed, so every quota is reported as it stands.
  result = {0, retry}
  for i = 1, #KEYS do
    local interval = tonumber(ARGV[2 * i])
    result[#result + 1] = math.max(0, math.floor((caps[i] - (tats[i] - now)) / interval))
    result[#result + 1] = tats[i] - now
  end
else
  result = {1, 0}
  for i = 1, #KEYS do
    local interval = tonumber(ARGV[2 * i])
    result[#result + 1] = math.floor((caps[i] - (new[i] - now)) / interval)
    result[#result + 1] = new[i] - now
    redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', math.ceil((new[i] - now) / 1000) + 1)
  end
end
return result";

/// What a Redis failure does to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisFailure {
    /// Let the request through, logged (the default for rate limits).
    #[default]
    Open,
    /// Reject with 503.
    Closed,
}

/// A rate-limit store in Redis (feature `redis`), so that replicas share one limit.
///
/// One `EVALSHA` per decision (the script is loaded once and reloaded on `NOSCRIPT`), on
/// Redis server time, within a time budget (default 50 ms). On an error or timeout the
/// [`RedisFailure`] policy decides; the connection manager reconnects by itself.
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisStore {
    conn: ConnectionManager,
    script: Arc<redis::Script>,
    prefix: Arc<str>,
    budget: Duration,
    failure: RedisFailure,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("budget", &self.budget)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connect to `url`.
    ///
    /// # Errors
    /// A malformed URL or a failed first connection.
    pub async fn connect(url: &str) -> Result<Self, ConfigError> {
        let conn = crate::redis_conn::connect(url).await?;
        Ok(Self {
            conn,
            script: Arc::new(redis::Script::new(GCRA)),
            prefix: "tag:rl".into(),
            budget: Duration::from_millis(50),
            failure: RedisFailure::Open,
        })
    }

    /// The key prefix (default `tag:rl`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The time budget of one decision (default 50 ms).
    #[must_use]
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// What an error or timeout does (default [`RedisFailure::Open`]).
    #[must_use]
    pub fn on_failure(mut self, failure: RedisFailure) -> Self {
        self.failure = failure;
        self
    }

    /// The failure policy.
    pub fn failure_policy(&self) -> RedisFailure {
        self.failure
    }

    /// Decide for `key` against `quotas`, consuming `cost` when allowed.
    ///
    /// # Errors
    /// A Redis error or a blown time budget (the reason, for logs).
    pub async fn check(
        &self,
        key: &str,
        quotas: &[Quota],
        cost: u32,
    ) -> Result<Decision, &'static str> {
        let mut invocation = self.script.prepare_invoke();
        for i in 0..quotas.len() {
            // Hash tag: every key of one identity lands on one cluster slot.
            invocation.key(format!("{}:{{{key}}}:{i}", self.prefix));
        }
        invocation.arg(cost);
        for q in quotas {
            let interval_us = (q.window().as_micros() / u128::from(q.limit())).max(1);
            invocation
                .arg(u64::try_from(interval_us).unwrap_or(u64::MAX))
                .arg(q.burst());
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> =
            match tokio::time::timeout(self.budget, invocation.invoke_async(&mut conn)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => return Err("Redis error"),
                Err(_) => return Err("Redis over its time budget"),
            };
        if reply.len() != 2 + 2 * quotas.len() {
            return Err("unexpected reply from the rate-limit script");
        }
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        let per_quota = reply[2..]
            .chunks(2)
            .map(|c| (u64::try_from(c[0]).unwrap_or(0), micros(c[1])))
            .collect();
        let retry = (reply[0] == 0).then(|| micros(reply[1]).max(Duration::from_micros(1)));
        Ok(Decision::from_parts(per_quota, retry))
    }
}
