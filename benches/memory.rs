//! Memory of the in-process rate-limit store, measured in a process of its own (so no
//! earlier benchmark's freed memory hides the growth): resident set size per active key,
//! and under a flood of 1,000,000 distinct keys offered to a store capped at 100,000, with
//! governor's keyed limiter on the same keys for comparison. Linux only (reads
//! `/proc/self/statm`); prints, not a criterion timing.
//!
//! `cargo bench --bench memory`

use std::num::NonZeroU32;
use tower_api_guard::clock::{Clock, MonotonicClock};
use tower_api_guard::rate_limit::{MemoryStore, Quota};

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes "memory" skips the run.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"memory".contains(&a))
    {
        return;
    }
    let Some(start) = rss_bytes() else {
        println!("memory: skipped (no /proc/self/statm)");
        return;
    };
    let clock = MonotonicClock::new();
    let quota = [Quota::parse("1000000/s").unwrap()];
    let key = |i: usize| format!("jwt\u{0}user-{i}");

    // 10,000 active keys, as in the speed benchmark.
    let ours = MemoryStore::new(100_000);
    for i in 0..10_000 {
        ours.check(&key(i), &quota, 1, clock.now());
    }
    let after_ours = rss_bytes().unwrap();
    let governor = governor::RateLimiter::keyed(governor::Quota::per_second(
        NonZeroU32::new(1_000_000).unwrap(),
    ));
    for i in 0..10_000 {
        let _ = governor.check_key(&key(i));
    }
    let after_governor = rss_bytes().unwrap();
    println!(
        "memory/10k_active_keys: ours {:.0} B/key, governor {:.0} B/key (RSS delta)",
        (after_ours - start) as f64 / 10_000.0,
        (after_governor - after_ours) as f64 / 10_000.0,
    );

    // A flood of 1,000,000 distinct keys against a store capped at 100,000. At 10/s every
    // key stays active for 100 ms, so the store must evict keys that are not yet idle.
    let slow = [Quota::parse("10/s").unwrap()];
    let capped = MemoryStore::new(100_000);
    let mut most = 0;
    for i in 0..1_000_000 {
        capped.check(&key(10_000 + i), &slow, 1, clock.now());
        most = most.max(capped.len());
    }
    let after_flood = rss_bytes().unwrap();
    assert!(most <= capped.max_keys(), "the store outgrew its cap");
    println!(
        "memory/flood_1m_keys_cap_100k: ours held at most {most} keys (cap {}), RSS +{:.1} MiB",
        capped.max_keys(),
        mib(after_flood - after_governor),
    );
    let flooded =
        governor::RateLimiter::keyed(governor::Quota::per_second(NonZeroU32::new(10).unwrap()));
    for i in 0..1_000_000 {
        let _ = flooded.check_key(&key(10_000 + i));
    }
    let after_governor_flood = rss_bytes().unwrap();
    println!(
        "memory/flood_1m_keys_governor: governor held {} keys, RSS +{:.1} MiB",
        flooded.len(),
        mib(after_governor_flood - after_flood),
    );
}
