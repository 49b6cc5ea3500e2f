//! [`RedisStore`]: GCRA shared by every replica; concurrent decisions share one script call.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Decision, Quota};
use crate::clock::{Clock, MonotonicClock};
use crate::error::{ConfigError, FailurePolicy};
use crate::redis_conn::RedisConnection;

/// GCRA over a batch of decisions, each over several quotas, on Redis server time (so
/// replicas with skewed clocks agree). Microseconds throughout (well inside Lua's exact
/// integer range). Decisions are made in order, so two for one key in one batch see each
/// other. A decision asks for `want` requests and takes as many as every quota has left,
/// up to `want`, or is rejected when that is fewer than `cost` (with `want == cost`, the
/// plain GCRA check: `cost ≤ ⌊(cap − (tat − now)) / interval⌋` is `tat + cost·interval −
/// now ≤ cap`).
///
/// The key names are arguments: in a Redis Cluster one call carries the decisions of
/// every slot one master serves (KEYS[1], one of them, routes the call), which scripts
/// without flags may touch. Every key is read before anything is written, so a key the
/// node does not serve (a slot that moved) fails the call with nothing changed.
/// KEYS: one of the keys, for routing.
/// ARGV: the number of decisions; then for each: its number of quotas, its cost, its
/// want, and the key, emission interval (µs) and burst of each quota.
/// Returns, for each decision: allowed (0/1), retry (µs), taken, then remaining and reset
/// (µs) per quota.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local call, floor, ceil, fmt = redis.call, math.floor, math.ceil, string.format
local decisions = tonumber(ARGV[1])
local tat_of = {}
local a = 2
for _ = 1, decisions do
  local nq = tonumber(ARGV[a])
  a = a + 3
  for _ = 1, nq do
    local key = ARGV[a]
    if tat_of[key] == nil then tat_of[key] = tonumber(call('GET', key) or 0) end
    a = a + 3
  end
end
local out, n = {}, 0
local tats, ints, caps, keys = {}, {}, {}, {}
a = 2
for _ = 1, decisions do
  local nq, cost, take = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  for i = 1, nq do
    local key, interval = ARGV[a], tonumber(ARGV[a + 1])
    local cap = interval * tonumber(ARGV[a + 2])
    a = a + 3
    local tat = tat_of[key]
    if tat < now then tat = now end
    keys[i], ints[i], caps[i], tats[i] = key, interval, cap, tat
    local left = floor((cap - (tat - now)) / interval)
    if left < take then take = left end
  end
  if take < cost then
    -- Rejected: nothing is consumed, so every quota is reported as it stands.
    local retry = 0
    for i = 1, nq do
      local wait = tats[i] + cost * ints[i] - now - caps[i]
      if wait > retry then retry = wait end
    end
    out[n + 1], out[n + 2], out[n + 3] = 0, retry, 0
    n = n + 3
    for i = 1, nq do
      local left = floor((caps[i] - (tats[i] - now)) / ints[i])
      if left < 0 then left = 0 end
      out[n + 1], out[n + 2] = left, tats[i] - now
      n = n + 2
    end
  else
    out[n + 1], out[n + 2], out[n + 3] = 1, 0, take
    n = n + 3
    for i = 1, nq do
      local new = tats[i] + take * ints[i]
      local ahead = new - now
      out[n + 1], out[n + 2] = floor((caps[i] - ahead) / ints[i]), ahead
      n = n + 2
      call('SET', keys[i], fmt('%.0f', new), 'PX', ceil(ahead / 1000) + 1)
      tat_of[keys[i]] = new
    end
  end
end
return out";

/// Some of one decision's keys: Redis keys `prefix:{tag}suffix:n`, one per quota.
pub(crate) struct Part<'a> {
    /// The hash tag: parts with one tag share a cluster slot.
    pub(crate) tag: &'a str,
    /// After the tag, before the quota's index (empty for an identity's own quotas).
    pub(crate) suffix: &'a str,
    pub(crate) quotas: &'a [Quota],
}

/// The answer to one decision: the decision and how many requests it took.
type Reply = Result<(Decision, u32), &'static str>;

/// One decision waiting for its batch.
struct Job {
    /// One Redis key per quota: `prefix:{tag}suffix:n` (see [`Part`]).
    keys: Vec<String>,
    /// Emission interval (µs) and burst of each quota.
    quotas: Vec<(u64, u32)>,
    cost: u32,
    /// Requests to take if every quota has them (`cost` without a lease).
    want: u32,
    /// When the caller stops waiting (in a cluster, a script call is abandoned once all
    /// of its callers have).
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Reply>,
}

impl Job {
    /// The length of this job's part of the script's reply: allowed, retry, taken, then
    /// remaining and reset per quota.
    fn reply_len(&self) -> usize {
        3 + 2 * self.quotas.len()
    }
}

/// Requests taken from Redis ahead of need, for one key (see [`RedisStore::lease`]).
struct Lease {
    quotas: Vec<Quota>,
    left: u32,
    until: SystemTime,
    /// The shared state when the requests were taken (they are counted there already).
    taken_at: Decision,
}

/// The leases of one store, bounded.
type Leases = quick_cache::sync::Cache<Box<str>, Arc<Mutex<Lease>>>;

/// Lease settings and state.
#[derive(Clone)]
struct Leasing {
    size: u32,
    ttl: Duration,
    leases: Arc<Leases>,
}

/// A rate-limit store in Redis (feature `redis`), so that replicas share one limit.
///
/// Decisions run the GCRA in a Lua script, on Redis server time. Concurrent decisions of
/// one process are batched: a background task sends whatever has queued as one `EVALSHA`
/// (at most [`max_batch`](Self::max_batch) decisions, at most
/// [`max_in_flight`](Self::max_in_flight) calls at once), so under load one round trip
/// and one script run serve many requests, and a lone request waits for nobody. The
/// decisions are exactly those of one call each: the script makes them in arrival order,
/// atomically. The script is loaded once and reloaded on `NOSCRIPT`.
///
/// Each decision has a time limit (default 50 ms) that covers its wait in the queue and
/// the round trip; a decision whose caller has given up is dropped from the queue rather
/// than consumed later. On an error, a full queue or a blown time limit the [`FailurePolicy`]
/// policy decides; the connection manager reconnects by itself.
///
/// **Redis Cluster.** Every key of one identity carries one hash tag (`prefix:{key}:n`),
/// so its quotas live in one slot and its decision is atomic. On a cluster connection
/// ([`RedisConnection::connect`] with `redis+cluster://…`), a batch is split by the master
/// that serves each decision's slot (from `CLUSTER SLOTS`, read again every 10 s): one
/// script call per master, all at once. A call that meets a key its master no longer
/// serves (slots moved) changes nothing (the script reads every key before writing any)
/// and is made again one call per slot, which the cluster client routes, following
/// `MOVED` and `ASK`. A master that fails over loads the script again on `NOSCRIPT`; a
/// master that is down fails the decisions of its slots only, by the failure policy, until
/// it (or its replica) serves again. Behind a proxy that routes by key (not a cluster
/// client), use `max_batch(1)`: one decision, one identity's keys, per call.
///
/// With [`lease`](Self::lease) (off by default), a process takes several requests from
/// the shared limit at once and spends them locally: fewer round trips for a busy
/// identity, at the price of exactness in one direction only (see there).
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_api_guard::error::ConfigError> {
/// use std::time::Duration;
/// use tower_api_guard::FailurePolicy;
/// use tower_api_guard::rate_limit::{Quota, RateLimiterLayer, RedisStore};
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379")
///     .await?
///     .prefix("myapi:rl")
///     .timeout(Duration::from_millis(20))
///     .failure_policy(FailurePolicy::Closed);
/// let layer = RateLimiterLayer::new([Quota::parse("100/min").unwrap()]).redis(store);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisStore {
    queue: mpsc::Sender<Job>,
    conn: RedisConnection,
    runtime: Handle,
    prefix: Arc<str>,
    timeout: Duration,
    failure: FailurePolicy,
    max_batch: usize,
    max_in_flight: usize,
    leasing: Option<Leasing>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .field("max_batch", &self.max_batch)
            .field("max_in_flight", &self.max_in_flight)
            .field("lease", &self.leasing.as_ref().map(|l| (l.size, l.ttl)))
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connect to `url`, and start the task that sends the batches (on the current Tokio
    /// runtime; it ends when the last clone of the store is dropped).
    ///
    /// # Errors
    /// A malformed URL or a failed first connection.
    pub async fn connect(url: &str) -> Result<Self, ConfigError> {
        Ok(Self::from_connection(RedisConnection::connect(url).await?))
    }

    /// Use a connection you already have (a [`RedisConnection`], a `ConnectionManager` or
    /// a `ClusterConnection`), and start the batching task on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn from_connection(conn: impl Into<RedisConnection>) -> Self {
        let conn = conn.into();
        let runtime = Handle::current();
        let (max_batch, max_in_flight) = (64, 4);
        Self {
            queue: start(&runtime, conn.clone(), max_batch, max_in_flight),
            conn,
            runtime,
            prefix: "tag:rl".into(),
            timeout: Duration::from_millis(50),
            failure: FailurePolicy::Open,
            max_batch,
            max_in_flight,
            leasing: None,
            clock: Arc::new(MonotonicClock::new()),
        }
    }

    /// The key prefix (default `tag:rl`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The time limit of one decision, queue and round trip (default 50 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What an error, a full queue or a blown time limit does (default
    /// [`FailurePolicy::Open`]: a rate limit that cannot be asked lets the request through,
    /// logged; [`FailurePolicy::Closed`] answers 503).
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// At most `n` decisions in one script call (default 64). A batch of 64
    /// holds Redis for a few hundred microseconds. `1` sends every decision alone; raise
    /// [`max_in_flight`](Self::max_in_flight) with it (e.g. to 256), since each call then
    /// carries one decision.
    #[must_use]
    pub fn max_batch(mut self, n: NonZeroUsize) -> Self {
        self.max_batch = n.get();
        self.restart()
    }

    /// At most `n` script calls of this store waiting for Redis at once (default 4).
    /// Decisions arriving meanwhile queue for the next batch.
    #[must_use]
    pub fn max_in_flight(mut self, n: NonZeroUsize) -> Self {
        self.max_in_flight = n.get();
        self.restart()
    }

    /// Take up to `size` requests from the shared limit whenever a key needs one, and
    /// spend the rest in this process for up to `ttl` (off by default; a `size` of 1
    /// is the same as no lease; `ttl` is capped at one hour). At most 100,000 keys hold a lease.
    ///
    /// A lease is taken from the shared limit like requests are, as many as every quota
    /// has left (at least the one needed, or the request is rejected as without a lease),
    /// so the replicas together **never allow more** than the limit. What a process has
    /// leased and not spent within `ttl` is lost, so near the limit a replica may refuse
    /// while another holds unspent requests, and a quota can briefly run short by up to
    /// `size − 1` requests per replica. On a leased request, the `RateLimit` remaining is
    /// the shared remaining when the lease was taken plus what the lease has left.
    ///
    /// Good for busy identities with quotas much larger than `size` per `ttl`, e.g.
    /// `1000/min` with `lease(NonZeroU32::new(10).unwrap(), Duration::from_secs(1))`: a tenth of the round trips.
    #[must_use]
    pub fn lease(mut self, size: NonZeroU32, ttl: Duration) -> Self {
        let size = size.get();
        self.leasing = (size > 1).then(|| Leasing {
            size,
            ttl: ttl.min(Duration::from_secs(3600)),
            leases: Arc::new(Leases::new(100_000)),
        });
        self
    }

    /// The clock that times leases (default [`MonotonicClock`]); Redis keeps the time of
    /// the limits themselves.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A new batching task with the current settings; the old one ends with its queue.
    fn restart(mut self) -> Self {
        self.queue = start(
            &self.runtime,
            self.conn.clone(),
            self.max_batch,
            self.max_in_flight,
        );
        self
    }

    /// The failure policy (see [`failure_policy`](Self::failure_policy)).
    pub(crate) fn policy(&self) -> FailurePolicy {
        self.failure
    }

    /// Decide for `key` against `quotas`, consuming `cost` when allowed.
    ///
    /// # Errors
    /// A Redis error, a full queue or a blown time limit (the reason, for logs).
    pub async fn check(
        &self,
        key: &str,
        quotas: &[Quota],
        cost: u32,
    ) -> Result<Decision, &'static str> {
        let Some(leasing) = &self.leasing else {
            return Ok(self.ask(key, quotas, cost, cost).await?.0);
        };
        if let Some(decision) = leasing.spend(key, quotas, cost, self.clock.now()) {
            return Ok(decision);
        }
        let (decision, taken) = self.ask(key, quotas, cost, leasing.size.max(cost)).await?;
        if taken <= cost {
            return Ok(decision);
        }
        let left = taken - cost;
        leasing.keep(key, quotas, left, &decision, self.clock.now());
        Ok(with_lease(&decision, left))
    }

    /// Decide for several keys at once, each against its own quotas, consuming `cost`
    /// from all of them only when every quota allows it: one script call, atomic, when
    /// the parts share a slot (always on one server). In a cluster, parts in different
    /// slots are decided one after the other, in order, and a later part's refusal leaves
    /// the earlier parts' requests counted (never more allowed than any limit). Quotas are
    /// reported in the order given. No lease.
    pub(crate) async fn check_parts(
        &self,
        parts: &[Part<'_>],
        cost: u32,
    ) -> Result<Decision, &'static str> {
        let job_keys: Vec<Vec<String>> = parts.iter().map(|p| self.keys(p)).collect();
        let one_slot = !self.conn.is_cluster() || {
            let slot = |keys: &Vec<String>| {
                keys.first()
                    .map(|k| crate::redis_conn::slot_of(k.as_bytes()))
            };
            let first = job_keys.first().and_then(slot);
            job_keys
                .iter()
                .all(|k| slot(k).is_none_or(|s| Some(s) == first))
        };
        if one_slot {
            let quotas = parts.iter().flat_map(|p| p.quotas.iter());
            let keys = job_keys.into_iter().flatten().collect();
            return Ok(self.send(keys, quotas, cost, cost).await?.0);
        }
        let mut reported = Vec::new();
        for (i, (part, keys)) in parts.iter().zip(job_keys).enumerate() {
            let (decision, _) = self.send(keys, part.quotas.iter(), cost, cost).await?;
            reported.extend_from_slice(decision.quotas());
            if let Some(retry) = decision.retry_after() {
                // The parts not asked are reported as unknown: full, no reset.
                let rest = parts[i + 1..].iter().flat_map(|p| p.quotas);
                reported.extend(rest.map(|q| (u64::from(q.burst()), Duration::ZERO)));
                return Ok(Decision::from_parts(reported.into_iter(), Some(retry)));
            }
        }
        Ok(Decision::from_parts(reported.into_iter(), None))
    }

    /// The Redis keys of `part`, one per quota.
    fn keys(&self, part: &Part<'_>) -> Vec<String> {
        // Hash tag: every key of one tag lands on one cluster slot. A `}` in the tag would
        // end it early (and let two tags' keys meet), so `%` and `}` are escaped.
        let tag: std::borrow::Cow<'_, str> = if part.tag.contains(['%', '}']) {
            part.tag.replace('%', "%25").replace('}', "%7D").into()
        } else {
            part.tag.into()
        };
        (0..part.quotas.len())
            .map(|i| format!("{}:{{{tag}}}{}:{i}", self.prefix, part.suffix))
            .collect()
    }

    /// One decision through the batching task.
    async fn ask(&self, key: &str, quotas: &[Quota], cost: u32, want: u32) -> Reply {
        let part = Part {
            tag: key,
            suffix: "",
            quotas,
        };
        self.send(self.keys(&part), quotas.iter(), cost, want).await
    }

    /// One decision over `keys` (one per quota) through the batching task.
    async fn send(
        &self,
        keys: Vec<String>,
        quotas: impl Iterator<Item = &Quota>,
        cost: u32,
        want: u32,
    ) -> Reply {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            keys,
            quotas: quotas.map(|q| (q.emission_us(), q.burst())).collect(),
            cost,
            want,
            deadline: tokio::time::Instant::now() + self.timeout,
            reply,
        };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "Redis queue full",
            mpsc::error::TrySendError::Closed(_) => "Redis batching task stopped",
        })?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err("Redis batching task stopped"),
            Err(_) => Err("Redis over its time limit"),
        }
    }
}

impl Leasing {
    /// Spend `cost` from `key`'s lease, if it has them for these quotas and is current.
    fn spend(&self, key: &str, quotas: &[Quota], cost: u32, now: SystemTime) -> Option<Decision> {
        let lease = self.leases.get(key)?;
        let mut lease = lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lease.left < cost || now >= lease.until || lease.quotas != quotas {
            return None;
        }
        lease.left -= cost;
        Some(with_lease(&lease.taken_at, lease.left))
    }

    /// Keep `left` requests for `key`, on top of what its lease still holds.
    fn keep(&self, key: &str, quotas: &[Quota], left: u32, decision: &Decision, now: SystemTime) {
        let until = now.checked_add(self.ttl).unwrap_or(now);
        if let Some(lease) = self.leases.get(key) {
            let mut lease = lease
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let current = now < lease.until && lease.quotas == quotas;
            lease.left = if current {
                lease.left.saturating_add(left)
            } else {
                left
            };
            lease.quotas = quotas.to_vec();
            lease.until = until;
            lease.taken_at = decision.clone();
            return;
        }
        // Two first leases at once: one of them is lost, which only refuses more.
        self.leases.insert(
            key.into(),
            Arc::new(Mutex::new(Lease {
                quotas: quotas.to_vec(),
                left,
                until,
                taken_at: decision.clone(),
            })),
        );
    }
}

/// `decision` (an allowed one) as seen with `left` requests leased and unspent.
fn with_lease(decision: &Decision, left: u32) -> Decision {
    Decision::from_parts(
        decision
            .quotas()
            .iter()
            .map(|&(remaining, reset)| (remaining.saturating_add(u64::from(left)), reset)),
        None,
    )
}

/// Start a batching task; its queue holds what `max_in_flight` full batches and a margin
/// need, so a stalled server fails requests at once instead of growing memory.
fn start(
    runtime: &Handle,
    conn: RedisConnection,
    max_batch: usize,
    max_in_flight: usize,
) -> mpsc::Sender<Job> {
    let capacity = max_batch
        .saturating_mul(max_in_flight)
        .saturating_mul(4)
        .max(1024);
    let (queue, jobs) = mpsc::channel(capacity);
    runtime.spawn(batches(jobs, conn, max_batch, max_in_flight));
    queue
}

/// Take whatever has queued (up to `max_batch`) whenever fewer than `max_in_flight`
/// calls are out, and send it as one call.
async fn batches(
    mut jobs: mpsc::Receiver<Job>,
    conn: RedisConnection,
    max_batch: usize,
    max_in_flight: usize,
) {
    let script = Arc::new(redis::Script::new(GCRA));
    let owners = Arc::new(SlotOwnersCache::default());
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut taken = Vec::with_capacity(max_batch);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if jobs.recv_many(&mut taken, max_batch).await == 0 {
            return; // Every clone of the store is gone.
        }
        // A caller past its time limit has had its answer (the failure policy): its decision
        // must not consume anything now.
        let batch: Vec<Job> = taken.drain(..).filter(|j| !j.reply.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        let (conn, script, owners) = (conn.clone(), script.clone(), owners.clone());
        tokio::spawn(async move {
            if conn.is_cluster() {
                cluster_batch(&conn, &script, &owners, batch).await;
            } else {
                decide(conn, &script, batch).await;
            }
            drop(slot);
        });
    }
}

/// A cluster batch: one script call per master (by the slot owners last seen), all at
/// once; a call that meets a key its node does not serve (the slots moved, nothing was
/// changed) is made again one call per slot, which the cluster client routes and
/// redirects, and the slot owners are fetched again.
async fn cluster_batch(
    conn: &RedisConnection,
    script: &redis::Script,
    owners: &Arc<SlotOwnersCache>,
    batch: Vec<Job>,
) {
    let groups = match owners.current(conn) {
        Some(map) => by_node(batch, &map),
        None => by_slot(batch),
    };
    let calls = groups.into_iter().map(|group| async move {
        if let Some(moved) = try_decide(conn.clone(), script, group).await {
            owners.invalidate();
            let retries = by_slot(moved)
                .into_iter()
                .map(|group| decide(conn.clone(), script, group));
            futures_util::future::join_all(retries).await;
        }
    });
    futures_util::future::join_all(calls).await;
}

fn first_key(job: &Job) -> &str {
    job.keys.first().map_or("", String::as_str)
}

/// `batch` split by the master that serves each decision's slot.
fn by_node(batch: Vec<Job>, owners: &SlotOwners) -> Vec<Vec<Job>> {
    group(batch, |job| owners.node[usize::from(slot(job))])
}

/// `batch` split by the hash slot of each decision's keys (they share a hash tag).
fn by_slot(batch: Vec<Job>) -> Vec<Vec<Job>> {
    group(batch, slot)
}

/// `batch` split by `of`, in arrival order within each group, so two decisions for one
/// key still see each other.
fn group(batch: Vec<Job>, of: impl Fn(&Job) -> u16) -> Vec<Vec<Job>> {
    let mut groups: Vec<(u16, Vec<Job>)> = Vec::new();
    for job in batch {
        let at = of(&job);
        match groups.iter_mut().find(|(g, _)| *g == at) {
            Some((_, group)) => group.push(job),
            None => groups.push((at, vec![job])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// The hash slot of a decision (of its first key: they share a hash tag).
fn slot(job: &Job) -> u16 {
    crate::redis_conn::slot_of(first_key(job).as_bytes())
}

/// One script call for `batch`, and each job's answer.
async fn decide(conn: RedisConnection, script: &redis::Script, batch: Vec<Job>) {
    if let Some(batch) = try_decide(conn, script, batch).await {
        fail(batch, "Redis error");
    }
}

/// One script call for `batch`, and each job's answer; or, when the node served the call
/// but not every key (so nothing was changed), the batch back.
async fn try_decide(
    mut conn: RedisConnection,
    script: &redis::Script,
    batch: Vec<Job>,
) -> Option<Vec<Job>> {
    let mut invocation = script.prepare_invoke();
    invocation.key(batch.first().map_or("", first_key));
    invocation.arg(batch.len());
    for job in &batch {
        invocation.arg(job.quotas.len()).arg(job.cost).arg(job.want);
        for (key, (interval, burst)) in job.keys.iter().zip(&job.quotas) {
            invocation.arg(key).arg(*interval).arg(*burst);
        }
    }
    // One server: the connection's response timeout (2 s) bounds the call, which keeps
    // its batching slot meanwhile, so a stalled server holds decisions in the queue (where
    // a caller that gives up consumes nothing) rather than sending more. A cluster: a call
    // is abandoned once all of its callers have given up, so that a master that is down
    // holds no batching slot the other masters' decisions need (a request already sent
    // may still be counted there, which only ever refuses more).
    let expected: usize = batch.iter().map(Job::reply_len).sum();
    let cluster = conn.is_cluster();
    let call = invocation.invoke_async::<Vec<i64>>(&mut conn);
    let reply = match batch.iter().map(|j| j.deadline).max() {
        Some(until) if cluster => tokio::time::timeout_at(until, call).await,
        _ => Ok(call.await),
    };
    let reply: Vec<i64> = match reply {
        Ok(Ok(reply)) if reply.len() == expected => reply,
        Ok(Ok(_)) => {
            fail(batch, "unexpected reply from the rate-limit script");
            return None;
        }
        Ok(Err(e)) if cluster && not_served_here(&e) => return Some(batch),
        Ok(Err(_)) => {
            fail(batch, "Redis error");
            return None;
        }
        Err(_) => {
            fail(batch, "Redis over its time limit");
            return None;
        }
    };
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let mut rest = reply.as_slice();
    for job in batch {
        let (own, next) = rest.split_at(job.reply_len());
        rest = next;
        let per_quota = own[3..]
            .chunks(2)
            .map(|c| (u64::try_from(c[0]).unwrap_or(0), micros(c[1])));
        let retry = (own[0] == 0).then(|| micros(own[1]).max(Duration::from_micros(1)));
        let taken = u32::try_from(own[2]).unwrap_or(0).min(job.want);
        let _ = job
            .reply
            .send(Ok((Decision::from_parts(per_quota, retry), taken)));
    }
    None
}

/// Whether a script call failed because its node does not serve one of the keys (the
/// script reads every key before writing any, so nothing was changed).
fn not_served_here(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    text.contains("non local key") || text.contains("CROSSSLOT") || text.contains("same slot")
}

/// Which master serves each hash slot, as `CLUSTER SLOTS` said, and when.
struct SlotOwners {
    /// A node number per slot (16,384).
    node: Box<[u16]>,
    at: std::time::Instant,
}

/// The slot owners of one store's batching task: fetched in the background when missing,
/// older than 10 s, or found wrong.
#[derive(Default)]
struct SlotOwnersCache {
    map: Mutex<Option<Arc<SlotOwners>>>,
    fetching: std::sync::atomic::AtomicBool,
}

impl SlotOwnersCache {
    /// The owners, if known; starts a fetch when they are missing or old.
    fn current(self: &Arc<Self>, conn: &RedisConnection) -> Option<Arc<SlotOwners>> {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let fresh = map
            .as_ref()
            .is_some_and(|m| m.at.elapsed() < Duration::from_secs(10));
        if !fresh
            && !self
                .fetching
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let (cache, mut conn) = (self.clone(), conn.clone());
            tokio::spawn(async move {
                let fetched = crate::redis_conn::slot_owners(&mut conn).await;
                if let Some(node) = fetched {
                    let owners = SlotOwners {
                        node,
                        at: std::time::Instant::now(),
                    };
                    *cache
                        .map
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(Arc::new(owners));
                }
                cache
                    .fetching
                    .store(false, std::sync::atomic::Ordering::Release);
            });
        }
        map
    }

    fn invalidate(&self) {
        *self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// The same error for every job of `batch`.
fn fail(batch: Vec<Job>, reason: &'static str) {
    for job in batch {
        let _ = job.reply.send(Err(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call sent to one master with a key another master serves (slot owners gone stale)
    /// changes nothing and hands the batch back, to be made again slot by slot.
    #[tokio::test]
    async fn a_key_of_another_master_changes_nothing_and_is_handed_back() {
        let Ok(url) = std::env::var("REDIS_CLUSTER_URL") else {
            eprintln!("skipped: REDIS_CLUSTER_URL is not set (`.ci/run` starts a cluster)");
            return;
        };
        let mut conn = RedisConnection::connect(&url).await.unwrap();
        let owners = crate::redis_conn::slot_owners(&mut conn).await.unwrap();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        // Two keys served by different masters.
        let keys: Vec<String> = (0..100)
            .map(|i| format!("tag-moved:{stamp}:{{{i}}}:0"))
            .collect();
        let node = |k: &String| owners[usize::from(crate::redis_conn::slot_of(k.as_bytes()))];
        let first = keys[0].clone();
        let other = keys
            .iter()
            .find(|k| node(k) != node(&first))
            .unwrap()
            .clone();
        let make = |key: &String| {
            let (reply, answer) = oneshot::channel();
            let job = Job {
                keys: vec![key.clone()],
                quotas: vec![(1_000_000, 10)],
                cost: 1,
                want: 1,
                deadline: tokio::time::Instant::now() + Duration::from_secs(2),
                reply,
            };
            (job, answer)
        };
        let ((a, _a), (b, _b)) = (make(&first), make(&other));
        let script = redis::Script::new(GCRA);
        let back = try_decide(conn.clone(), &script, vec![a, b]).await;
        assert_eq!(back.map(|batch| batch.len()), Some(2));
        for key in [&first, &other] {
            let value: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(value, None, "{key} was written");
        }
    }
}
