//! The progress display on stderr (indicatif). Hidden when stderr is not a
//! terminal or with `--quiet`; the summary on stdout never depends on it.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

const COUNT_TEMPLATE: &str = "{prefix:>10.bold} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}";
const SPIN_TEMPLATE: &str = "{prefix:>10.bold} [{elapsed_precise}] {spinner} {msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr_with_hz(8)
        };
        let bar = ProgressBar::with_draw_target(None, target);
        Progress { bar }
    }

    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// A phase that counts up to `len` (connections opened, cycles run …).
    pub fn count(&self, prefix: &'static str, len: u64) {
        self.bar.reset();
        self.bar.set_style(style(COUNT_TEMPLATE));
        self.bar.set_prefix(prefix);
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.bar.set_message("");
    }

    /// A phase without a count (waiting, measuring with counters in the message).
    pub fn spin(&self, prefix: &'static str, msg: impl Into<Cow<'static, str>>) {
        self.bar.reset();
        self.bar.set_style(style(SPIN_TEMPLATE));
        self.bar.set_prefix(prefix);
        self.bar.set_message(msg);
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn set_message(&self, msg: impl Into<Cow<'static, str>>) {
        self.bar.set_message(msg);
    }

    /// Prints a line on stderr without tearing the bar.
    pub fn note(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Calls `message` every quarter second and shows its answer until the
    /// returned guard is dropped.
    pub fn ticker<F>(&self, message: F) -> Ticker
    where
        F: Fn() -> String + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        if !self.is_hidden() {
            let bar = self.bar.clone();
            let stop = stop.clone();
            natter_runtime::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    bar.set_message(message());
                    natter_runtime::sleep(Duration::from_millis(250)).await;
                }
            });
        }
        Ticker(stop)
    }

    pub fn finish(&self) {
        self.bar.disable_steady_tick();
        self.bar.finish_and_clear();
    }
}

/// Stops a [`Progress::ticker`] when dropped.
pub struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
