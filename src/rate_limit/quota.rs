//! [`Quota`]: how many requests per window, and the burst; parsed from `20/s`, `1000/min`.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::error::ConfigError;

/// A quota: at most `limit` requests per `window`, with bursts of up to `burst` (default
/// `limit`) at once. GCRA spaces the rest evenly: one request every `window / limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    limit: u32,
    window: Duration,
    burst: u32,
}

impl Quota {
    /// `limit` requests per `window`.
    ///
    /// # Errors
    /// A zero limit or window, or a window under a microsecond per request.
    pub fn per(limit: u32, window: Duration) -> Result<Self, ConfigError> {
        if limit == 0 || window.is_zero() || window.as_nanos() / u128::from(limit) < 1_000 {
            return Err(ConfigError::parse(
                "a quota needs a limit and a window of at least 1 µs per request",
            ));
        }
        Ok(Self {
            limit,
            window,
            burst: limit,
        })
    }

    /// Parse `20/s`, `1000/min`, `5/h`, `10000/day` (also `sec`, `second`, `minute`,
    /// `hour`, `d`).
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::parse("a quota looks like 20/s, 1000/min, 5/h or 10000/day");
        let (limit, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let limit: u32 = limit.trim().parse().map_err(|_| bad())?;
        let window = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        Self::per(limit, window)
    }

    /// Allow bursts of `burst` requests at once.
    #[must_use]
    pub fn with_burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst.get();
        self
    }

    /// Requests per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds between requests at the steady rate.
    pub(super) fn emission_ns(&self) -> u64 {
        u64::try_from(self.window.as_nanos() / u128::from(self.limit)).unwrap_or(u64::MAX)
    }

    /// Microseconds between requests at the steady rate, at least 1: what the Redis
    /// scripts read.
    #[cfg(feature = "redis")]
    pub(crate) fn emission_us(&self) -> u64 {
        let us = self.window.as_micros() / u128::from(self.limit.max(1));
        u64::try_from(us.max(1)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_quotas() {
        assert_eq!(
            Quota::parse("20/s").unwrap(),
            Quota::per(20, Duration::from_secs(1)).unwrap()
        );
        assert_eq!(
            Quota::parse(" 1000/min ").unwrap().window(),
            Duration::from_secs(60)
        );
        assert_eq!(Quota::parse("5/h").unwrap().limit(), 5);
        assert_eq!(
            Quota::parse("10000/day").unwrap().window(),
            Duration::from_secs(86_400)
        );
        for bad in [
            "",
            "20",
            "0/s",
            "x/s",
            "20/fortnight",
            "-1/s",
            "20/",
            "/s",
            "2000000000/s",
        ] {
            assert!(Quota::parse(bad).is_err(), "{bad}");
        }
    }
}
