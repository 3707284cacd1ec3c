//! Shared helpers for the asyncio primer examples.
//!
//! Each example includes this file with
//! `#[path = "common/mod.rs"] mod common;`. Because it lives in a
//! subdirectory of `examples/`, Cargo does not treat it as an example of its
//! own.
//!
//! * [`secs`] turns a tutorial delay ("sleep 2 seconds") into a `Duration`,
//!   multiplied by the `NATTER_PRIMER_SCALE` environment variable (a float;
//!   default 1.0 = the tutorial's seconds, 0.05 = twenty times faster). The
//!   integration tests in `server/tests/primers.rs` run every example with
//!   0.05.
//! * [`say!`] prints one step, prefixed with the time since [`start`], so you
//!   can see what overlaps with what.
//! * [`finish`] prints the total elapsed time.

#![allow(dead_code)] // Not every example uses every helper.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that scales every delay in the examples.
pub const SCALE_VAR: &str = "NATTER_PRIMER_SCALE";

static SCALE: OnceLock<f64> = OnceLock::new();
static START: OnceLock<Instant> = OnceLock::new();

/// The delay multiplier from `NATTER_PRIMER_SCALE` (default 1.0).
///
/// A value that is not a finite, non-negative number is a mistake worth
/// stopping for (silently running at full length would be confusing), so
/// the example exits with a message.
pub fn scale() -> f64 {
    *SCALE.get_or_init(|| match std::env::var(SCALE_VAR) {
        Err(std::env::VarError::NotPresent) => 1.0,
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(value) if value.is_finite() && value >= 0.0 => value,
            _ => {
                eprintln!(
                    "{SCALE_VAR} must be a non-negative number (like 1 or 0.05), got {text:?}"
                );
                std::process::exit(2);
            }
        },
        Err(e) => {
            eprintln!("{SCALE_VAR} is not valid: {e}");
            std::process::exit(2);
        }
    })
}

/// A tutorial delay of `seconds`, multiplied by [`scale`].
pub fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds * scale())
}

/// Starts the example's clock and prints the banner. Call first in `main`.
pub fn start(title: &str) {
    let scale = scale();
    START.get_or_init(Instant::now);
    println!("== {title} ==");
    println!("(delays scaled by {SCALE_VAR}={scale}; timestamps are seconds since start)");
}

/// Time since [`start`] (or since the first call of this function).
pub fn elapsed() -> Duration {
    START.get_or_init(Instant::now).elapsed()
}

/// Prints one line with the elapsed-time prefix. Use through [`say!`].
pub fn say_args(args: fmt::Arguments<'_>) {
    // `println!` locks stdout for the whole line, so lines printed from
    // different tasks or threads never interleave mid-line.
    println!("[{:>6.2}s] {args}", elapsed().as_secs_f64());
}

/// Prints the example's total elapsed time. Call last in `main`.
pub fn finish() {
    say_args(format_args!(
        "total elapsed: {:.2}s",
        elapsed().as_secs_f64()
    ));
}

/// `println!` with a timestamp prefix: `say!("task {n} started")`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::common::say_args(::std::format_args!($($arg)*))
    };
}
pub(crate) use say;
