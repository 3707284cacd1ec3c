//! The suites' one bounded wait, `wait_until`: it returns the value once
//! the check succeeds, and otherwise fails within its bound naming what it
//! waited for and the last state it saw.

use std::time::{Duration, Instant};

use natter_tests::wait::{POLL, wait_until};

#[test]
fn wait_until_returns_the_value_of_the_first_successful_check() {
    natter_runtime::block_on(async {
        let mut checks = 0;
        let got = wait_until("the third check", Duration::from_secs(10), async || {
            checks += 1;
            if checks == 3 {
                Ok(checks * 10)
            } else {
                Err(checks)
            }
        })
        .await;
        assert_eq!(got, 30);
        assert_eq!(checks, 3);
    })
}

#[test]
fn wait_until_gives_up_at_its_bound_naming_what_and_the_last_state() {
    let bound = Duration::from_millis(200);
    let started = Instant::now();
    let failure = std::panic::catch_unwind(|| {
        natter_runtime::block_on(wait_until(
            "a condition that never holds",
            bound,
            async || Err::<(), _>("still false"),
        ))
    })
    .expect_err("wait_until must fail once its bound has passed");
    let elapsed = started.elapsed();
    let message = failure
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        message.contains("a condition that never holds") && message.contains("still false"),
        "{message}"
    );
    // Not before the bound; and well before 10 s even on a loaded machine
    // (one POLL past the bound is the design; 10 s is a generous ceiling).
    assert!(
        elapsed >= bound,
        "gave up after {elapsed:?}, before {bound:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "gave up only after {elapsed:?} (poll {POLL:?})"
    );
}

#[test]
fn a_check_that_hangs_is_cut_off_at_the_bound() {
    let bound = Duration::from_millis(200);
    let started = Instant::now();
    let failure = std::panic::catch_unwind(|| {
        natter_runtime::block_on(wait_until(
            "a check that never returns",
            bound,
            async || futures::future::pending::<Result<(), ()>>().await,
        ))
    })
    .expect_err("wait_until must cut off a hanging check");
    let message = failure
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(message.contains("a check that never returns"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
