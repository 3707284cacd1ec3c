//! Per-connection rate limiting: a token bucket, and the flood meter that
//! turns persistent abuse into a disconnect.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many `rate_limited` errors within [`FLOOD_WINDOW`] close a connection.
pub(crate) const FLOOD_ERRORS: usize = 50;
pub(crate) const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// A token bucket: `rate` tokens per second, holding at most `burst`.
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate == 0` switches limiting off.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Remembers when the recent `rate_limited` errors happened.
#[derive(Default)]
pub(crate) struct FloodMeter {
    recent: VecDeque<Instant>,
}

impl FloodMeter {
    /// Records one `rate_limited` error; true when the connection is flooding.
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= FLOOD_WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        self.recent.len() >= FLOOD_ERRORS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20, 40);
        assert!((0..40).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(50)));
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
    }

    #[test]
    fn rate_zero_is_off() {
        let mut b = TokenBucket::new(0, 0);
        assert!((0..10_000).all(|_| b.try_take(Instant::now())));
    }

    #[test]
    fn flood_needs_fifty_in_ten_seconds() {
        let t0 = Instant::now();
        let mut m = FloodMeter::default();
        for i in 0..49 {
            assert!(!m.record(t0 + Duration::from_millis(i)));
        }
        assert!(!m.record(t0 + Duration::from_secs(11)));
        let mut m = FloodMeter::default();
        let hits = (0..50)
            .filter(|i| m.record(t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(hits, 1);
    }
}
