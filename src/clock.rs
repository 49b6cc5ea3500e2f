//! Time, injectable so that tests of `exp`, `nbf`, TTLs and rate windows are exact.
//!
//! Every component that reads the time takes an [`Arc<dyn Clock>`](Clock); the
//! default is [`SystemClock`]. Tests use [`ManualClock`] and move it by hand.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use tower_api_guard::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::at_unix(1_700_000_000);
//! clock.advance(Duration::from_secs(30));
//! assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_700_000_030));
//! ```

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch, with sub-second precision (0.0 before the epoch).
    fn now_unix(&self) -> f64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock for rate limiting: the wall time when it was created plus a monotonic elapsed
/// time read from the CPU's time-stamp counter (through [`quanta`], calibrated once, with
/// a fallback to the OS's monotonic clock where the counter is unreliable).
///
/// It never goes backwards, even when the system clock is stepped, which is what a rate
/// limiter wants, and a read costs about a quarter of `SystemTime::now()`. It is the default
/// clock of the rate-limit layers; keep [`SystemClock`] for token expiry, where the
/// wall time itself matters.
///
/// ```
/// use tower_api_guard::clock::{Clock, MonotonicClock};
///
/// let clock = MonotonicClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[cfg(any(feature = "rate-limit", feature = "api-key"))]
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    anchor: SystemTime,
    start: quanta::Instant,
    clock: quanta::Clock,
}

#[cfg(any(feature = "rate-limit", feature = "api-key"))]
impl MonotonicClock {
    /// A clock anchored at the current wall time.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        Self {
            anchor: SystemTime::now(),
            start: clock.now(),
            clock,
        }
    }
}

#[cfg(any(feature = "rate-limit", feature = "api-key"))]
impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(feature = "rate-limit", feature = "api-key"))]
impl Clock for MonotonicClock {
    fn now(&self) -> SystemTime {
        self.anchor + self.clock.now().saturating_duration_since(self.start)
    }
}

/// A clock that only moves when told to. For tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock standing at `time`.
    pub fn new(time: SystemTime) -> Self {
        Self {
            now: Mutex::new(time),
        }
    }

    /// A clock standing at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Set the clock to `time`.
    pub fn set(&self, time: SystemTime) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = time;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
