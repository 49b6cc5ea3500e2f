//! GCRA (the generic cell rate algorithm) over several quotas at once, and its
//! [`Decision`]. The stores ([`MemoryStore`](super::MemoryStore), `RedisStore`) keep the
//! theoretical arrival times it reads and writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Quota;

/// The outcome of one check over several quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Per quota: requests left and time until the quota is full again. Inline for up to
    /// four quotas, so a decision does not allocate.
    inline: [(u64, Duration); 4],
    len: usize,
    spill: Vec<(u64, Duration)>,
    pub(super) retry_after: Option<Duration>,
}

impl Decision {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_parts(
        per_quota: impl ExactSizeIterator<Item = (u64, Duration)>,
        retry_after: Option<Duration>,
    ) -> Self {
        let mut d = Self::empty(per_quota.len());
        for (i, q) in per_quota.enumerate() {
            d.set(i, q);
        }
        d.retry_after = retry_after;
        d
    }

    pub(super) fn empty(len: usize) -> Self {
        Self {
            inline: [(0, Duration::ZERO); 4],
            len,
            spill: if len > 4 {
                vec![(0, Duration::ZERO); len]
            } else {
                Vec::new()
            },
            retry_after: None,
        }
    }

    fn set(&mut self, i: usize, value: (u64, Duration)) {
        if self.len > 4 {
            self.spill[i] = value;
        } else {
            self.inline[i] = value;
        }
    }

    /// `None` when allowed; how long to wait when not.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }

    /// Per quota, in order: requests left, and time until the quota is full again.
    pub fn quotas(&self) -> &[(u64, Duration)] {
        if self.len > 4 {
            &self.spill
        } else {
            &self.inline[..self.len]
        }
    }

    /// The quota with the fewest requests left: (index, remaining, reset).
    pub fn tightest(&self) -> (usize, u64, Duration) {
        self.quotas()
            .iter()
            .enumerate()
            .min_by_key(|(_, (remaining, _))| *remaining)
            .map_or((0, 0, Duration::ZERO), |(i, (r, t))| (i, *r, *t))
    }
}

/// Nanoseconds since the Unix epoch.
pub(super) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    })
}

/// GCRA over every quota: fills `new_tats` and the per-quota results, and returns the
/// longest wait when any quota rejects (then nothing may be consumed).
pub(super) fn gcra(
    quotas: &[Quota],
    cost: u32,
    now: u64,
    stored: Option<&[u64]>,
    new_tats: &mut [u64],
    decision: &mut Decision,
) -> Option<u64> {
    let mut retry: Option<u64> = None;
    for (i, quota) in quotas.iter().enumerate() {
        let t = quota.emission_ns();
        let capacity = t.saturating_mul(u64::from(quota.burst()));
        let tat = stored.map_or(now, |s| s[i].max(now));
        let new_tat = tat.saturating_add(t.saturating_mul(u64::from(cost)));
        if new_tat - now > capacity {
            let wait = new_tat - now - capacity;
            retry = Some(retry.map_or(wait, |r| r.max(wait)));
            decision.set(
                i,
                (
                    (capacity.saturating_sub(tat - now)) / t,
                    Duration::from_nanos(tat - now),
                ),
            );
            new_tats[i] = tat;
        } else {
            decision.set(
                i,
                (
                    (capacity - (new_tat - now)) / t,
                    Duration::from_nanos(new_tat - now),
                ),
            );
            new_tats[i] = new_tat;
        }
    }
    if retry.is_some() {
        // Rejected: nothing is consumed, so report every quota as it stands.
        for (i, quota) in quotas.iter().enumerate() {
            let t = quota.emission_ns();
            let capacity = t.saturating_mul(u64::from(quota.burst()));
            let tat = stored.map_or(now, |s| s[i].max(now));
            decision.set(
                i,
                (
                    capacity.saturating_sub(tat - now) / t,
                    Duration::from_nanos(tat - now),
                ),
            );
            new_tats[i] = tat;
        }
    }
    retry
}
