//! Metrics for Prometheus (or any exporter), through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`).
//!
//! The crate records into whatever recorder the application installs
//! (`metrics-exporter-prometheus`, `metrics-exporter-otel`, a test's debugging recorder);
//! it brings no exporter of its own. With no recorder installed a recording costs the
//! facade's thread-local check and one atomic load, a thread-local handle lookup and a no-op
//! call. Handles are cached per thread and per recorder, so a recording with a recorder
//! costs what the recorder's handle costs (two atomic adds for
//! `metrics-exporter-prometheus`; `BENCHMARKS.md` has the figures). Without the feature
//! nothing is recorded and nothing is compiled in.
//!
//! **Call [`enable`] once after installing the recorder**: recording is off until then, so
//! that an application without metrics pays one relaxed load per recording and nothing
//! else. `enable` also registers each metric's help text and unit ([`describe`]) with the
//! recorder, for the exporter to print.
//!
//! Every label value comes from a fixed set or from the configuration (a key set's URL, a
//! rate-limit quota's name): never a subject, a key id, a client address or a path.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `tower_api_guard_decisions_total` | counter | `layer`, `outcome`, `reason` | every decision of every layer: `layer` is `auth`, `brute_force`, `authz` or `rate_limit`; `outcome` is `allowed` or `rejected`; `reason` is a [`ReasonCode`] (`expired`, `bad_signature`, `unknown_kid`, `insufficient_scope`, `rate_limited`, …), `none` when allowed |
//! | `tower_api_guard_verification_seconds` | histogram | `method` | time to verify a credential that was not in a cache: `jwt` (signature and claims), `api_key` (store lookup and digest), `introspection` (the endpoint's answer) |
//! | `tower_api_guard_cache_requests_total` | counter | `cache`, `result` | `cache` is `token` (verified JWTs), `api_key` or `introspection`; `result` is `hit` or `miss` |
//! | `tower_api_guard_cache_entries` | gauge | `cache` | entries held (approximate, updated on misses) |
//! | `tower_api_guard_jwks_refreshes_total` | counter | `jwks`, `result` | key-set fetches: `result` is `ok` or `error`; `jwks` is the key set's URL |
//! | `tower_api_guard_jwks_keys` | gauge | `jwks` | usable keys held |
//! | `tower_api_guard_jwks_age_seconds` | gauge | `jwks` | age of the keys in use (since their last successful fetch), updated at every refresh attempt and status read |
//! | `tower_api_guard_jwks_last_success_timestamp_seconds` | gauge | `jwks` | Unix time of the last successful fetch (`time() - …` is the live age) |
//! | `tower_api_guard_jwks_stale` | gauge | `jwks` | 1 while the keys in use are past their TTL (a refresh keeps failing), else 0 |
//! | `tower_api_guard_jwks_unknown_kid_total` | counter | `action` | a token named an unknown `kid`: `refetch` (the key set was fetched again) or `cooldown` (skipped: a refetch ran recently) |
//! | `tower_api_guard_discovery_failures_total` | counter | — | OpenID discovery documents that could not be fetched or were refused |
//! | `tower_api_guard_rate_limit_decisions_total` | counter | `policy`, `outcome` | per quota (`policy` is the quota's name in `RateLimit-Policy`, `q0`, `k0`, …): `allowed` or `limited` |
//! | `tower_api_guard_store_errors_total` | counter | `layer`, `store` | a store failed to answer (`store`: `redis` for the rate limits and the brute-force guard, `api_key`, `revocation`, `replay`); the failure policy then decided |
//! | `tower_api_guard_fail_open_total` | counter | `layer` | requests let through unchecked because a store failed and the policy is fail-open |
//! | `tower_api_guard_redis_seconds` | histogram | `op` | one Redis round trip: `rate_limit`, `revocation`, `replay`, `failures` |
//! | `tower_api_guard_brute_force_lockouts_total` | counter | — | a client locked out by the brute-force guard |
//! | `tower_api_guard_api_key_age_total` | counter | `action` | API keys past the age policy: `warned` (older than the warning age) or `refused` (past the maximum) |
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "metrics")]
//! # {
//! use metrics_exporter_prometheus::PrometheusBuilder;
//!
//! // In a server: `PrometheusBuilder::new().install_recorder()?` once at start, then serve
//! // `handle.render()` at `/metrics`. Here the recorder is this thread's only.
//! let recorder = PrometheusBuilder::new().build_recorder();
//! let handle = recorder.handle();
//! metrics::with_local_recorder(&recorder, tower_api_guard::metrics::enable);
//! assert!(tower_api_guard::metrics::is_enabled());
//! assert!(handle.render().is_empty() || handle.render().starts_with('#'));
//! # }
//! ```
//!
//! [`ReasonCode`]: crate::ReasonCode

// Each recording is used by the layers of some features only.
#![allow(dead_code)]

#[cfg(feature = "metrics")]
use std::sync::OnceLock;
#[cfg(feature = "metrics")]
use std::time::Instant;

#[cfg(feature = "metrics")]
use ::metrics::{Key, Label, Level, Metadata, Unit};

use crate::error::ReasonCode;
use crate::gate::LayerKind;

/// `tower_api_guard_decisions_total`.
pub const DECISIONS: &str = "tower_api_guard_decisions_total";
/// `tower_api_guard_verification_seconds`.
pub const VERIFICATION_SECONDS: &str = "tower_api_guard_verification_seconds";
/// `tower_api_guard_cache_requests_total`.
pub const CACHE_REQUESTS: &str = "tower_api_guard_cache_requests_total";
/// `tower_api_guard_cache_entries`.
pub const CACHE_ENTRIES: &str = "tower_api_guard_cache_entries";
/// `tower_api_guard_jwks_refreshes_total`.
pub const JWKS_REFRESHES: &str = "tower_api_guard_jwks_refreshes_total";
/// `tower_api_guard_jwks_keys`.
pub const JWKS_KEYS: &str = "tower_api_guard_jwks_keys";
/// `tower_api_guard_jwks_age_seconds`.
pub const JWKS_AGE_SECONDS: &str = "tower_api_guard_jwks_age_seconds";
/// `tower_api_guard_jwks_last_success_timestamp_seconds`.
pub const JWKS_LAST_SUCCESS: &str = "tower_api_guard_jwks_last_success_timestamp_seconds";
/// `tower_api_guard_jwks_stale`.
pub const JWKS_STALE: &str = "tower_api_guard_jwks_stale";
/// `tower_api_guard_jwks_unknown_kid_total`.
pub const JWKS_UNKNOWN_KID: &str = "tower_api_guard_jwks_unknown_kid_total";
/// `tower_api_guard_discovery_failures_total`.
pub const DISCOVERY_FAILURES: &str = "tower_api_guard_discovery_failures_total";
/// `tower_api_guard_rate_limit_decisions_total`.
pub const RATE_LIMIT_DECISIONS: &str = "tower_api_guard_rate_limit_decisions_total";
/// `tower_api_guard_store_errors_total`.
pub const STORE_ERRORS: &str = "tower_api_guard_store_errors_total";
/// `tower_api_guard_fail_open_total`.
pub const FAIL_OPEN: &str = "tower_api_guard_fail_open_total";
/// `tower_api_guard_redis_seconds`.
pub const REDIS_SECONDS: &str = "tower_api_guard_redis_seconds";
/// `tower_api_guard_brute_force_lockouts_total`.
pub const LOCKOUTS: &str = "tower_api_guard_brute_force_lockouts_total";
/// `tower_api_guard_api_key_age_total`.
pub const API_KEY_AGE: &str = "tower_api_guard_api_key_age_total";

/// Whether the crate records metrics: [`enable`] was called.
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turn recording on, for the whole process, and register every metric's description and
/// unit with the installed recorder ([`describe`]). Call it once after installing the
/// recorder; until then the crate records nothing (one relaxed load per recording).
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn enable() {
    ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
    describe();
}

/// Whether [`enable`] was called.
#[inline]
pub fn is_enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Register every metric's description and unit with the installed recorder, so that the
/// exporter prints them (Prometheus `# HELP`). [`enable`] calls it; call it again for a
/// recorder installed later.
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        DECISIONS,
        "Decisions of the guard's layers, by layer, outcome and reason."
    );
    describe_histogram!(
        VERIFICATION_SECONDS,
        Unit::Seconds,
        "Time to verify a credential that was not cached, by method."
    );
    describe_counter!(
        CACHE_REQUESTS,
        "Cache lookups by cache and result (hit, miss)."
    );
    describe_gauge!(CACHE_ENTRIES, "Entries held by each cache.");
    describe_counter!(JWKS_REFRESHES, "Key-set fetches by key set and result.");
    describe_gauge!(JWKS_KEYS, "Usable keys held, by key set.");
    describe_gauge!(
        JWKS_AGE_SECONDS,
        Unit::Seconds,
        "Age of the keys in use since their last successful fetch."
    );
    describe_gauge!(
        JWKS_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the last successful key-set fetch."
    );
    describe_gauge!(JWKS_STALE, "1 while the keys in use are past their TTL.");
    describe_counter!(
        JWKS_UNKNOWN_KID,
        "Tokens naming an unknown kid: refetched, or skipped during the cooldown."
    );
    describe_counter!(
        DISCOVERY_FAILURES,
        "OpenID discovery documents that failed."
    );
    describe_counter!(
        RATE_LIMIT_DECISIONS,
        "Rate-limit decisions per quota and outcome."
    );
    describe_counter!(
        STORE_ERRORS,
        "Shared stores that failed to answer, by layer and store."
    );
    describe_counter!(
        FAIL_OPEN,
        "Requests let through because a store failed (fail-open)."
    );
    describe_histogram!(
        REDIS_SECONDS,
        Unit::Seconds,
        "Redis round trips by operation."
    );
    describe_counter!(LOCKOUTS, "Clients locked out by the brute-force guard.");
    describe_counter!(
        API_KEY_AGE,
        "API keys past the age policy: warned or refused."
    );
}

/// Metadata of every recording: the crate's target, level `INFO`.
#[cfg(feature = "metrics")]
static META: Metadata<'static> = Metadata::new("tower_api_guard", Level::INFO, None);

/// Keys built once, on first use, for metrics whose labels come from fixed sets. Keys do
/// not depend on the recorder (handles do), so a recorder installed later, or a test's
/// local recorder, sees them all the same.
#[cfg(feature = "metrics")]
struct KeyTable {
    keys: OnceLock<(usize, Box<[Key]>)>,
    build: fn() -> Box<[Key]>,
}

#[cfg(feature = "metrics")]
impl KeyTable {
    const fn new(build: fn() -> Box<[Key]>) -> Self {
        Self {
            keys: OnceLock::new(),
            build,
        }
    }

    fn get(&self, index: usize) -> Slotted<'_> {
        let (base, keys) = self.keys.get_or_init(|| {
            let keys = (self.build)();
            (handles::slots(keys.len()), keys)
        });
        Slotted {
            slot: base + index,
            key: &keys[index],
        }
    }
}

/// A key and its slot in the per-thread handle cache.
#[cfg(feature = "metrics")]
#[derive(Clone, Copy)]
struct Slotted<'a> {
    slot: usize,
    key: &'a Key,
}

/// Handles cached per thread and per recorder.
///
/// Registering a metric with a recorder costs a lookup in the recorder's registry (about
/// 150 ns with metrics-exporter-prometheus), three to six times per request; the handle
/// it returns is cheap to use. So each thread keeps the handles it registered, by slot
/// (every key has a slot of its own, for the process's life), for the recorder it
/// registered them with: when `with_recorder` hands over another recorder (one installed
/// later, a test's local recorder), the thread's handles are dropped and registered again.
/// A recorder is known by its address; a test that drops a local recorder and makes
/// another on the same thread may get the same address, so the tests' recorders live for
/// the thread's life.
#[cfg(feature = "metrics")]
mod handles {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ::metrics::{Counter, Gauge, Histogram, Recorder, with_recorder};

    use super::{META, Slotted};

    static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

    /// `n` new slots; the first one's number.
    pub(super) fn slots(n: usize) -> usize {
        NEXT_SLOT.fetch_add(n, Ordering::Relaxed)
    }

    #[derive(Default)]
    struct Handles {
        recorder: usize,
        counters: Vec<Option<Counter>>,
        gauges: Vec<Option<Gauge>>,
        histograms: Vec<Option<Histogram>>,
    }

    thread_local! {
        static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
    }

    fn address(recorder: &dyn Recorder) -> usize {
        (recorder as *const dyn Recorder).cast::<()>() as usize
    }

    /// Run `f` with the handle of `key`, from the cache or registered now.
    fn with<H: Clone>(
        key: Slotted<'_>,
        pick: fn(&mut Handles) -> &mut Vec<Option<H>>,
        register: fn(&dyn Recorder, &::metrics::Key) -> H,
        f: impl FnOnce(&H),
    ) {
        if !super::is_enabled() {
            return;
        }
        with_recorder(|recorder| {
            let address = address(recorder);
            let mut f = Some(f);
            let done = HANDLES
                .try_with(|cell| {
                    let Ok(mut handles) = cell.try_borrow_mut() else {
                        return false;
                    };
                    if handles.recorder != address {
                        *handles = Handles {
                            recorder: address,
                            ..Handles::default()
                        };
                    }
                    let slots = pick(&mut handles);
                    if slots.len() <= key.slot {
                        slots.resize(key.slot + 1, None);
                    }
                    let handle = slots[key.slot].get_or_insert_with(|| register(recorder, key.key));
                    if let Some(f) = f.take() {
                        f(handle);
                    }
                    true
                })
                .unwrap_or(false);
            // The thread is ending, or the cache is in use: register without it.
            if !done && let Some(f) = f.take() {
                f(&register(recorder, key.key));
            }
        });
    }

    pub(super) fn increment(key: Slotted<'_>) {
        with(
            key,
            |h| &mut h.counters,
            |r, k| r.register_counter(k, &META),
            |c: &Counter| c.increment(1),
        );
    }

    pub(super) fn set(key: Slotted<'_>, value: f64) {
        with(
            key,
            |h| &mut h.gauges,
            |r, k| r.register_gauge(k, &META),
            |g: &Gauge| g.set(value),
        );
    }

    pub(super) fn record(key: Slotted<'_>, value: f64) {
        with(
            key,
            |h| &mut h.histograms,
            |r, k| r.register_histogram(k, &META),
            |h: &Histogram| h.record(value),
        );
    }
}

#[cfg(feature = "metrics")]
fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(k, v)| Label::from_static_parts(k, v))
        .collect();
    Key::from_parts(name, labels)
}

/// A key built once by its owner (a layer's settings), for labels that come from the
/// configuration. Empty without the feature.
#[derive(Clone, Debug)]
pub(crate) struct MetricKey {
    #[cfg(feature = "metrics")]
    key: Key,
    #[cfg(feature = "metrics")]
    slot: usize,
}

impl MetricKey {
    /// A key of `name` with `labels` (names static, values owned).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(name: &'static str, labels: &[(&'static str, &str)]) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            key: Key::from_parts(
                name,
                labels
                    .iter()
                    .map(|&(k, v)| Label::new(k, v.to_owned()))
                    .collect::<Vec<_>>(),
            ),
            #[cfg(feature = "metrics")]
            slot: 0,
        }
        .interned()
    }

    /// The same key, with the slot of every equal key made before: the slots stay as many
    /// as the distinct label sets, however often layers are built.
    fn interned(self) -> Self {
        #[cfg(feature = "metrics")]
        {
            static SLOTS: std::sync::Mutex<Vec<(Key, usize)>> = std::sync::Mutex::new(Vec::new());
            let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
            let slot = match slots.iter().find(|(k, _)| *k == self.key) {
                Some(&(_, slot)) => slot,
                None => {
                    let slot = handles::slots(1);
                    slots.push((self.key.clone(), slot));
                    slot
                }
            };
            Self { slot, ..self }
        }
        #[cfg(not(feature = "metrics"))]
        self
    }

    #[cfg(feature = "metrics")]
    fn slotted(&self) -> Slotted<'_> {
        Slotted {
            slot: self.slot,
            key: &self.key,
        }
    }

    /// Add one to this counter.
    #[inline]
    pub(crate) fn increment(&self) {
        #[cfg(feature = "metrics")]
        handles::increment(self.slotted());
    }

    /// Set this gauge.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        handles::set(self.slotted(), value);
    }
}

const LAYERS: [LayerKind; 4] = [
    LayerKind::Auth,
    LayerKind::BruteForce,
    LayerKind::Authz,
    LayerKind::RateLimit,
];

const fn layer_index(layer: LayerKind) -> usize {
    match layer {
        LayerKind::Auth => 0,
        LayerKind::BruteForce => 1,
        LayerKind::Authz => 2,
        LayerKind::RateLimit => 3,
    }
}

/// One decision of a layer: allowed (`None`) or rejected with `code`.
#[inline]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn decision(layer: LayerKind, code: Option<ReasonCode>) {
    #[cfg(feature = "metrics")]
    {
        const PER_LAYER: usize = ReasonCode::ALL.len() + 1;
        static KEYS: KeyTable = KeyTable::new(|| {
            let mut keys = Vec::with_capacity(LAYERS.len() * PER_LAYER);
            for layer in LAYERS {
                let layer = layer.as_str();
                keys.push(key(
                    DECISIONS,
                    &[("layer", layer), ("outcome", "allowed"), ("reason", "none")],
                ));
                for code in ReasonCode::ALL {
                    keys.push(key(
                        DECISIONS,
                        &[
                            ("layer", layer),
                            ("outcome", "rejected"),
                            ("reason", code.as_str()),
                        ],
                    ));
                }
            }
            keys.into_boxed_slice()
        });
        let index = layer_index(layer) * PER_LAYER + code.map_or(0, |c| c.index() + 1);
        let key = KEYS.get(index);
        handles::increment(key);
    }
}

/// The credential methods timed by `tower_api_guard_verification_seconds`.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub(crate) enum Method {
    Jwt,
    ApiKey,
    Introspection,
}

/// A running time measurement; empty (and free) without the feature.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timer {
    /// `None` while recording is off: no clock read.
    #[cfg(feature = "metrics")]
    started: Option<Instant>,
}

impl Timer {
    /// Start measuring.
    #[inline]
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: is_enabled().then(Instant::now),
        }
    }

    /// Record the time since `start` as one verification by `method`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn verification(self, method: Method) {
        #[cfg(feature = "metrics")]
        {
            static KEYS: KeyTable = KeyTable::new(|| {
                ["jwt", "api_key", "introspection"]
                    .into_iter()
                    .map(|m| key(VERIFICATION_SECONDS, &[("method", m)]))
                    .collect()
            });
            let key = KEYS.get(method as usize);
            let Some(started) = self.started else { return };
            let seconds = started.elapsed().as_secs_f64();
            handles::record(key, seconds);
        }
    }

    /// Record the time since `start` as one Redis round trip of `op`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn redis(self, op: RedisOp) {
        #[cfg(feature = "metrics")]
        {
            static KEYS: KeyTable = KeyTable::new(|| {
                ["rate_limit", "revocation", "replay", "failures"]
                    .into_iter()
                    .map(|op| key(REDIS_SECONDS, &[("op", op)]))
                    .collect()
            });
            let key = KEYS.get(op as usize);
            let Some(started) = self.started else { return };
            let seconds = started.elapsed().as_secs_f64();
            handles::record(key, seconds);
        }
    }
}

/// The caches counted by `tower_api_guard_cache_requests_total`.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub(crate) enum Cache {
    Token,
    ApiKey,
    Introspection,
}

const CACHES: [&str; 3] = ["token", "api_key", "introspection"];

/// One cache lookup.
#[inline]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn cache(cache: Cache, hit: bool) {
    #[cfg(feature = "metrics")]
    {
        static KEYS: KeyTable = KeyTable::new(|| {
            CACHES
                .into_iter()
                .flat_map(|c| {
                    [
                        key(CACHE_REQUESTS, &[("cache", c), ("result", "miss")]),
                        key(CACHE_REQUESTS, &[("cache", c), ("result", "hit")]),
                    ]
                })
                .collect()
        });
        let key = KEYS.get(cache as usize * 2 + usize::from(hit));
        handles::increment(key);
    }
}

/// The number of entries a cache holds.
#[inline]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn cache_entries(cache: Cache, entries: u64) {
    #[cfg(feature = "metrics")]
    {
        static KEYS: KeyTable = KeyTable::new(|| {
            CACHES
                .into_iter()
                .map(|c| key(CACHE_ENTRIES, &[("cache", c)]))
                .collect()
        });
        let key = KEYS.get(cache as usize);
        handles::set(key, entries as f64);
    }
}

/// The Redis operations timed by `tower_api_guard_redis_seconds`.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub(crate) enum RedisOp {
    RateLimit,
    Revocation,
    Replay,
    Failures,
}

/// The stores counted by `tower_api_guard_store_errors_total`.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub(crate) enum Store {
    Redis,
    ApiKey,
    Revocation,
    Replay,
}

const STORES: [&str; 4] = ["redis", "api_key", "revocation", "replay"];

/// A shared store failed to answer `layer`.
#[inline]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn store_error(layer: LayerKind, store: Store) {
    #[cfg(feature = "metrics")]
    {
        static KEYS: KeyTable = KeyTable::new(|| {
            LAYERS
                .into_iter()
                .flat_map(|l| {
                    STORES.map(|s| key(STORE_ERRORS, &[("layer", l.as_str()), ("store", s)]))
                })
                .collect()
        });
        let key = KEYS.get(layer_index(layer) * STORES.len() + store as usize);
        handles::increment(key);
    }
}

/// A store failed to answer `layer`, and `policy` decided: counted in `STORE_ERRORS`, and
/// in `FAIL_OPEN` when the request goes through.
#[inline]
pub(crate) fn store_failed(layer: LayerKind, store: Store, policy: crate::error::FailurePolicy) {
    store_error(layer, store);
    if policy == crate::error::FailurePolicy::Open {
        fail_open(layer);
    }
}

/// A request let through by `layer` because its store failed and the policy is fail-open.
#[inline]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn fail_open(layer: LayerKind) {
    #[cfg(feature = "metrics")]
    {
        static KEYS: KeyTable = KeyTable::new(|| {
            LAYERS
                .into_iter()
                .map(|l| key(FAIL_OPEN, &[("layer", l.as_str())]))
                .collect()
        });
        let key = KEYS.get(layer_index(layer));
        handles::increment(key);
    }
}

/// The counters without labels.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    /// `DISCOVERY_FAILURES`.
    DiscoveryFailure,
    /// `LOCKOUTS`.
    Lockout,
}

/// Count one `event`.
#[inline]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn event(event: Event) {
    #[cfg(feature = "metrics")]
    {
        static KEYS: KeyTable = KeyTable::new(|| {
            [DISCOVERY_FAILURES, LOCKOUTS]
                .map(Key::from_static_name)
                .into()
        });
        handles::increment(KEYS.get(event as usize));
    }
}

/// A token named an unknown `kid`: refetched (`true`) or skipped in the cooldown.
#[inline]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn unknown_kid(refetch: bool) {
    #[cfg(feature = "metrics")]
    {
        static KEYS: KeyTable = KeyTable::new(|| {
            ["cooldown", "refetch"]
                .into_iter()
                .map(|a| key(JWKS_UNKNOWN_KID, &[("action", a)]))
                .collect()
        });
        let key = KEYS.get(usize::from(refetch));
        handles::increment(key);
    }
}

/// An API key past the age policy: refused (`true`) or warned about.
#[inline]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn api_key_age(refused: bool) {
    #[cfg(feature = "metrics")]
    {
        static KEYS: KeyTable = KeyTable::new(|| {
            ["warned", "refused"]
                .into_iter()
                .map(|a| key(API_KEY_AGE, &[("action", a)]))
                .collect()
        });
        let key = KEYS.get(usize::from(refused));
        handles::increment(key);
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn nothing_is_recorded_until_enabled_then_each_recording_counts() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let counts = || {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(_, _, _, value)| match value {
                    DebugValue::Counter(n) => n,
                    _ => 0,
                })
                .sum::<u64>()
        };
        if !is_enabled() {
            ::metrics::with_local_recorder(&recorder, || decision(LayerKind::Auth, None));
            assert_eq!(counts(), 0);
        }
        ::metrics::with_local_recorder(&recorder, || {
            enable();
            decision(LayerKind::Auth, None);
            decision(LayerKind::Auth, Some(ReasonCode::Expired));
            cache(Cache::Token, true);
        });
        assert_eq!(counts(), 3);
    }
}
