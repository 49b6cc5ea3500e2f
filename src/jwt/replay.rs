//! STUB (replaced by the h/replay branch): the DPoP `jti` replay cache.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};

/// Why a replay cache could not answer.
#[derive(Debug, Clone)]
pub struct ReplayError(&'static str);

impl ReplayError {
    /// A failure.
    pub fn new(reason: &'static str) -> Self {
        Self(reason)
    }
    /// The reason.
    pub fn reason(&self) -> &str {
        self.0
    }
}

/// The future of a replay cache.
pub type ReplayFuture = Pin<Box<dyn Future<Output = Result<bool, ReplayError>> + Send>>;

/// The answer.
pub enum ReplayAnswer {
    /// New.
    Fresh,
    /// Seen.
    Replayed,
    /// Failed.
    Failed(ReplayError),
    /// Wait.
    Wait(ReplayFuture),
}

/// A replay cache.
pub trait ReplayCache: Send + Sync + fmt::Debug + 'static {
    /// Remember.
    fn insert(&self, key: &[u8; 32], ttl: Duration) -> ReplayAnswer;
}

/// In process.
#[derive(Clone)]
pub struct MemoryReplayCache {
    map: Arc<Mutex<HashMap<[u8; 32], f64>>>,
    clock: Arc<dyn Clock>,
    cap: usize,
}

impl fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryReplayCache")
    }
}

impl MemoryReplayCache {
    /// New.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            map: Arc::default(),
            clock: Arc::new(SystemClock),
            cap: capacity.get(),
        }
    }
    /// Clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl ReplayCache for MemoryReplayCache {
    fn insert(&self, key: &[u8; 32], ttl: Duration) -> ReplayAnswer {
        let now = self.clock.now_unix();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(key).is_some_and(|&exp| exp > now) {
            return ReplayAnswer::Replayed;
        }
        if map.len() >= self.cap {
            return ReplayAnswer::Failed(ReplayError::new("replay cache full"));
        }
        map.insert(*key, now + ttl.as_secs_f64());
        ReplayAnswer::Fresh
    }
}
