//! [`MemoryStore`]: the in-process store of GCRA state, sharded and bounded.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::gcra::{gcra, nanos};
use super::{Decision, Quota};

/// A shard's map. foldhash with a random seed per map: a fifth of the cost of std's SipHash
/// for short keys, and without seed-independent collisions, so colliding keys cannot be
/// precomputed. (Bounded shards cap the damage even then.)
type Map = HashMap<Box<str>, Tats, foldhash::fast::RandomState>;

/// A key's theoretical arrival times, one per quota: inline for one or two quotas (no
/// second allocation, no pointer to chase), boxed beyond. 24 bytes.
#[derive(Debug)]
enum Tats {
    One([u64; 1]),
    Two([u64; 2]),
    Many(Box<[u64]>),
}

impl Tats {
    fn new(tats: &[u64]) -> Self {
        match *tats {
            [a] => Self::One([a]),
            [a, b] => Self::Two([a, b]),
            _ => Self::Many(tats.into()),
        }
    }

    fn as_slice(&self) -> &[u64] {
        match self {
            Self::One(t) => t,
            Self::Two(t) => t,
            Self::Many(t) => t,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u64] {
        match self {
            Self::One(t) => t,
            Self::Two(t) => t,
            Self::Many(t) => t,
        }
    }
}
type Shard = Mutex<Map>;

/// The in-process store: sharded (16 shards), bounded. Cheap to clone (shared).
#[derive(Clone)]
pub struct MemoryStore {
    shards: Arc<[Shard]>,
    per_shard: usize,
    spread: foldhash::fast::RandomState,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.len())
            .field("max_keys", &(self.per_shard * self.shards.len()))
            .finish()
    }
}

const SHARDS: usize = 16;

impl MemoryStore {
    /// A store holding at most `max_keys` keys (at least 16).
    pub fn new(max_keys: usize) -> Self {
        let per_shard = max_keys.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            per_shard,
            spread: foldhash::fast::RandomState::default(),
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys held.
    pub fn max_keys(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Check (and, when allowed, consume) `cost` against every quota for `key` at `now`.
    /// A rejection by one quota consumes nothing from the others.
    #[inline]
    pub fn check(&self, key: &str, quotas: &[Quota], cost: u32, now: SystemTime) -> Decision {
        self.decide(key, quotas, cost, now, true)
    }

    /// What [`check`](Self::check) would decide, without consuming anything.
    #[inline]
    pub fn peek(&self, key: &str, quotas: &[Quota], cost: u32, now: SystemTime) -> Decision {
        self.decide(key, quotas, cost, now, false)
    }

    fn decide(
        &self,
        key: &str,
        quotas: &[Quota],
        cost: u32,
        now: SystemTime,
        consume: bool,
    ) -> Decision {
        let now = nanos(now);
        let shard = &self.shards[self.shard_of(key)];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());

        // New TATs on the stack for up to 8 quotas: the hot path allocates only the
        // decision.
        let mut stack = [0u64; 8];
        let mut heap = Vec::new();
        let new_tats: &mut [u64] = if quotas.len() <= stack.len() {
            &mut stack[..quotas.len()]
        } else {
            heap.resize(quotas.len(), 0);
            &mut heap
        };
        let mut decision = Decision::empty(quotas.len());
        // One hash lookup for a known key; a second only to insert a new one.
        let retry = match map.get_mut(key) {
            Some(tats) if tats.as_slice().len() == quotas.len() => {
                let retry = gcra(
                    quotas,
                    cost,
                    now,
                    Some(tats.as_slice()),
                    new_tats,
                    &mut decision,
                );
                if consume && retry.is_none() {
                    // Update in place: no allocation for a known key.
                    tats.as_mut_slice().copy_from_slice(new_tats);
                }
                retry
            }
            _ => {
                let retry = gcra(quotas, cost, now, None, new_tats, &mut decision);
                if consume && retry.is_none() {
                    self.insert(&mut map, key, new_tats, now);
                }
                retry
            }
        };
        decision.retry_after = retry.map(Duration::from_nanos);
        decision
    }
}

impl MemoryStore {
    /// The shard that holds `key`.
    fn shard_of(&self, key: &str) -> usize {
        (self.spread.hash_one(key) as usize) % SHARDS
    }

    /// Keep `tats` for `key` as a new entry (room made first when the shard is full).
    fn insert(&self, map: &mut Map, key: &str, tats: &[u64], now: u64) {
        if !map.contains_key(key) && map.len() >= self.per_shard {
            evict(map, self.per_shard, now);
        }
        map.insert(key.into(), Tats::new(tats));
    }

    /// Check (and, when every quota of every part allows it, consume) `cost` against
    /// several keys at once, each with its own quotas, atomically: the shards concerned
    /// are locked together (in index order). Quotas are reported in the order given.
    pub(crate) fn check_parts(
        &self,
        parts: &[(&str, &[Quota])],
        cost: u32,
        now: SystemTime,
    ) -> Decision {
        let at = nanos(now);
        let shard_of = |key: &str| self.shard_of(key);
        let mut order: Vec<usize> = parts.iter().map(|(k, _)| shard_of(k)).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, std::sync::MutexGuard<'_, Map>)> = order
            .iter()
            .map(|&i| (i, self.shards[i].lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        let mut reported = Vec::new();
        let mut retry: Option<u64> = None;
        let mut updates = Vec::with_capacity(parts.len());
        for (key, quotas) in parts {
            let shard = shard_of(key);
            let map = &guards.iter().find(|(i, _)| *i == shard).expect("locked").1;
            let mut new_tats = vec![0u64; quotas.len()];
            let mut decision = Decision::empty(quotas.len());
            let existing = map
                .get(*key)
                .map(Tats::as_slice)
                .filter(|t| t.len() == quotas.len());
            if let Some(wait) = gcra(quotas, cost, at, existing, &mut new_tats, &mut decision) {
                retry = Some(retry.map_or(wait, |r| r.max(wait)));
            }
            reported.extend_from_slice(decision.quotas());
            updates.push((shard, *key, new_tats));
        }
        if retry.is_some() {
            // Rejected: nothing is consumed, so every part is reported as it stands.
            reported.clear();
            for (key, quotas) in parts {
                let map = &guards
                    .iter()
                    .find(|(i, _)| *i == shard_of(key))
                    .expect("locked")
                    .1;
                let existing = map
                    .get(*key)
                    .map(Tats::as_slice)
                    .filter(|t| t.len() == quotas.len());
                let mut scratch = vec![0u64; quotas.len()];
                let mut decision = Decision::empty(quotas.len());
                gcra(quotas, 0, at, existing, &mut scratch, &mut decision);
                reported.extend_from_slice(decision.quotas());
            }
        } else {
            for (shard, key, new_tats) in updates {
                let map = &mut guards
                    .iter_mut()
                    .find(|(i, _)| *i == shard)
                    .expect("locked")
                    .1;
                match map.get_mut(key) {
                    Some(tats) if tats.as_slice().len() == new_tats.len() => {
                        tats.as_mut_slice().copy_from_slice(&new_tats);
                    }
                    _ => self.insert(map, key, &new_tats, at),
                }
            }
        }
        Decision::from_parts(reported.into_iter(), retry.map(Duration::from_nanos))
    }
}

/// Make room: drop idle keys (their state equals a fresh key's); if none are idle, drop
/// the eighth of the shard closest to idle, so that the next inserts are cheap.
fn evict(map: &mut Map, cap: usize, now: u64) {
    map.retain(|_, tats| tats.as_slice().iter().any(|&t| t > now));
    if map.len() < cap {
        return;
    }
    let mut latest: Vec<u64> = map
        .values()
        .map(|t| t.as_slice().iter().copied().max().unwrap_or(0))
        .collect();
    let cut = (map.len() / 8).max(1);
    let (_, threshold, _) = latest.select_nth_unstable(cut - 1);
    let threshold = *threshold;
    let mut removed = 0;
    map.retain(|_, tats| {
        let idle_at = tats.as_slice().iter().copied().max().unwrap_or(0);
        if removed < cut && idle_at <= threshold {
            removed += 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const T0: u64 = 1_800_000_000;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_millis(ms)
    }

    #[test]
    fn burst_then_steady_rate_exactly() {
        let store = MemoryStore::new(100);
        let q = [Quota::parse("10/s").unwrap()]; // one every 100 ms, burst 10
        for i in 0..10 {
            let d = store.check("k", &q, 1, at(0));
            assert!(d.allowed(), "{i}");
            assert_eq!(d.quotas()[0].0, 9 - i);
        }
        let d = store.check("k", &q, 1, at(0));
        assert_eq!(d.retry_after(), Some(Duration::from_millis(100)));
        assert!(!store.check("k", &q, 1, at(99)).allowed());
        assert!(store.check("k", &q, 1, at(100)).allowed());
        assert!(!store.check("k", &q, 1, at(150)).allowed());
        assert!(store.check("k", &q, 1, at(200)).allowed());
        // Peeking consumes nothing.
        assert!(store.peek("k", &q, 1, at(300)).allowed());
        assert!(store.peek("k", &q, 1, at(300)).allowed());
        assert!(store.check("k", &q, 1, at(300)).allowed());
        assert!(!store.peek("k", &q, 1, at(300)).allowed());
        // Another key is independent.
        assert!(store.check("other", &q, 1, at(200)).allowed());
    }

    #[test]
    fn cost_and_reset() {
        let store = MemoryStore::new(100);
        let q = [Quota::parse("10/s").unwrap()];
        let d = store.check("k", &q, 4, at(0));
        assert_eq!(d.quotas()[0], (6, Duration::from_millis(400)));
        assert!(!store.check("k", &q, 7, at(0)).allowed());
        assert!(store.check("k", &q, 6, at(0)).allowed());
        assert_eq!(
            store.check("k", &q, 1, at(0)).retry_after(),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn several_quotas_reject_without_consuming() {
        let store = MemoryStore::new(100);
        let q = [Quota::parse("5/s").unwrap(), Quota::parse("7/min").unwrap()];
        for _ in 0..5 {
            assert!(store.check("k", &q, 1, at(0)).allowed());
        }
        // The per-second quota rejects: the per-minute one must not be consumed.
        for _ in 0..10 {
            assert!(!store.check("k", &q, 1, at(0)).allowed());
        }
        assert!(store.check("k", &q, 1, at(1000)).allowed());
        assert!(store.check("k", &q, 1, at(1200)).allowed());
        // 7 used of the minute now.
        let d = store.check("k", &q, 1, at(2000));
        assert!(!d.allowed());
        assert_eq!(d.tightest().0, 1);
    }

    #[test]
    fn three_quotas_are_stored_out_of_line_and_a_changed_quota_set_starts_fresh() {
        let store = MemoryStore::new(100);
        let three = [
            Quota::parse("2/s").unwrap(),
            Quota::parse("3/min").unwrap(),
            Quota::parse("100/day").unwrap(),
        ];
        assert!(store.check("k", &three, 1, at(0)).allowed());
        assert!(store.check("k", &three, 1, at(0)).allowed());
        let d = store.check("k", &three, 1, at(0));
        assert!(!d.allowed());
        assert_eq!(d.quotas().len(), 3);
        assert_eq!(d.quotas()[2].0, 98);
        assert!(store.check("k", &three, 1, at(1000)).allowed());
        // The minute quota is spent now (3 of 3).
        let d = store.check("k", &three, 1, at(2000));
        assert_eq!(d.tightest().0, 1);
        assert!(!d.allowed());
        // The same key checked against a different set of quotas starts from scratch.
        let one = [Quota::parse("1/s").unwrap()];
        assert!(store.check("k", &one, 1, at(2000)).allowed());
        assert!(!store.check("k", &one, 1, at(2000)).allowed());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_keys() {
        let store = MemoryStore::new(10_000);
        let q = [Quota::parse("10/s").unwrap()];
        for i in 0..1_000_000u32 {
            store.check(&i.to_string(), &q, 1, at(u64::from(i) / 1000));
            if i % 50_000 == 0 {
                assert!(
                    store.len() <= store.max_keys(),
                    "{} > {}",
                    store.len(),
                    store.max_keys()
                );
            }
        }
        assert!(store.len() <= store.max_keys());
        assert!(store.len() > 1_000, "the store still holds recent keys");
    }
}
