//! The one bounded wait of natter's test suites.
//!
//! [`wait_until`] re-checks a condition until it holds or a time bound runs
//! out, and then fails saying what it waited for and what it saw last. It
//! is for state that offers no notification (a server's counters, a
//! process's descriptors) and for progress reported on a channel: a check
//! may await (it is itself bounded by the time left), so it can await the
//! next report instead of polling for it.
//!
//! This file is the only copy: `natter-tests` has it as `natter_tests::wait`,
//! and the integration tests of the server crate, which cannot depend on
//! `natter-tests`, include the same file with `#[path]`. It therefore uses
//! nothing but `std` and `natter-runtime`.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Pause between two checks that found the condition unmet. Short against
/// every bound, so a wait ends within 10 ms of the condition becoming true.
pub const POLL: Duration = Duration::from_millis(10);

/// The usual bound for server-side state to catch up (a closed socket
/// released, a membership dropped). On an idle machine this takes
/// milliseconds; 20 s leaves room for a 2-core machine running other test
/// binaries and builds at the same time, and still fails a hung server
/// well within a test run.
pub const SETTLE: Duration = Duration::from_secs(20);

/// Calls `check` until it returns `Ok(value)`, and returns the value.
///
/// `check` returns `Err(state)` while the condition does not hold, with
/// whatever it observed; after an `Err` the next check comes [`POLL`]
/// later. Each call of `check` is bounded by the time left, so one that
/// awaits (a channel's next report) cannot overrun the bound either.
///
/// Panics once `bound` has passed without an `Ok`, with `what` and the last
/// observed state. The number of checks is bounded too: at most one per
/// [`POLL`] of `bound`, plus one.
pub async fn wait_until<T, S: Debug>(
    what: &str,
    bound: Duration,
    mut check: impl AsyncFnMut() -> Result<T, S>,
) -> T {
    let started = Instant::now();
    let deadline = started + bound;
    let max_checks = bound.as_millis() / POLL.as_millis() + 1;
    let mut last: Option<S> = None;
    let mut checks = 0;
    while checks < max_checks {
        checks += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match natter_runtime::timeout(left, check()).await {
            Some(Ok(value)) => return value,
            Some(Err(state)) => last = Some(state),
            // The check itself was still waiting when time ran out.
            None => break,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        natter_runtime::sleep(POLL.min(left)).await;
    }
    match last {
        Some(state) => panic!(
            "gave up waiting for {what} after {:?} ({checks} checks, bound {bound:?}); \
             last observed: {state:?}",
            started.elapsed()
        ),
        None => panic!(
            "gave up waiting for {what} after {:?} (bound {bound:?}): the first check \
             did not finish",
            started.elapsed()
        ),
    }
}
