//! When to reconnect, and how long to wait between tries.
//!
//! A dropped connection (network loss, a server restart: 1001, an
//! internal error: 1011, a node that lost its broker: 1013) is worth
//! retrying; a close for policy (1008: flooding, slow consumer) or for a
//! protocol mistake of ours (1002, 1003, 1007, 1009) would only happen
//! again, so it ends the client. Likewise a refusal that retrying cannot
//! change (a bad URL, a certificate we do not trust, HTTP 403/404) stops
//! at once instead of looping.

use std::time::Duration;

use natter::{ClientError, CloseInfo};

/// First wait after a drop: short, since a restart is often quick.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The waits double up to this.
const MAX_DELAY: Duration = Duration::from_secs(15);
/// Tries before giving up: 250 ms doubling to 15 s is about five minutes
/// in all, long enough for a server restart or a short network outage.
pub const MAX_ATTEMPTS: u32 = 30;

/// Whether a close by the server is worth reconnecting after.
pub fn close_is_retryable(info: Option<&CloseInfo>) -> bool {
    match info {
        // No close frame: the connection was simply lost.
        None => true,
        // 1000: a normal close (idle timeout), 1001: going away,
        // 1005/1006: no status / abnormal, 1011: internal error,
        // 1012: service restart, 1013: try again later.
        Some(info) => matches!(info.code, 1000 | 1001 | 1005 | 1006 | 1011 | 1012 | 1013),
    }
}

/// Whether a failed connection attempt is worth another try.
pub fn connect_error_is_retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. }
        | ClientError::ServerFull
        | ClientError::Handshake(_)
        | ClientError::Send(_)
        | ClientError::Protocol(_) => true,
        ClientError::Closed(info) => close_is_retryable(info.as_ref()),
        // 408 request timeout, 429 too many from this address, 5xx.
        ClientError::Refused { status } => *status == 408 || *status == 429 || *status >= 500,
        ClientError::BadUrl { .. }
        | ClientError::Certificate { .. }
        | ClientError::Tls(_)
        | ClientError::Request { .. } => false,
    }
}

/// Exponential backoff with jitter: each wait is drawn between half and
/// all of the current step, so that clients dropped together by one
/// server restart do not all come back in the same millisecond.
#[derive(Debug)]
pub struct Backoff {
    step: Duration,
    attempts: u32,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            step: FIRST_DELAY,
            attempts: 0,
        }
    }
}

impl Backoff {
    /// The wait before the next try, or `None` once the tries are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.attempts >= MAX_ATTEMPTS {
            return None;
        }
        self.attempts += 1;
        let step = self.step;
        self.step = (self.step * 2).min(MAX_DELAY);
        let half = step / 2;
        Some(half + half.mul_f64(fastrand::f64()))
    }

    /// How many tries have been made since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_stay_bounded_and_end() {
        let mut backoff = Backoff::default();
        let mut last_step = Duration::ZERO;
        let mut count = 0;
        while let Some(delay) = backoff.next_delay() {
            assert!(delay <= MAX_DELAY, "{delay:?}");
            assert!(
                delay >= last_step / 2 || delay >= MAX_DELAY / 2,
                "{delay:?}"
            );
            last_step = delay;
            count += 1;
        }
        assert_eq!(count, MAX_ATTEMPTS);
    }

    #[test]
    fn policy_closes_and_trust_failures_do_not_loop() {
        let close = |code| {
            Some(CloseInfo {
                code,
                reason: String::new(),
            })
        };
        assert!(close_is_retryable(None));
        for code in [1001, 1006, 1011, 1013] {
            assert!(close_is_retryable(close(code).as_ref()), "{code}");
        }
        for code in [1002, 1003, 1007, 1008, 1009] {
            assert!(!close_is_retryable(close(code).as_ref()), "{code}");
        }
        assert!(!connect_error_is_retryable(&ClientError::Tls("x".into())));
        assert!(!connect_error_is_retryable(&ClientError::Refused {
            status: 403
        }));
        assert!(connect_error_is_retryable(&ClientError::Refused {
            status: 503
        }));
        assert!(connect_error_is_retryable(&ClientError::ServerFull));
    }
}
