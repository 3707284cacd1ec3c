//! Primer 10 — keep blocking calls off the executor with `spawn_blocking`.
//!
//! The classic asyncio program:
//!
//! ```python
//! async def ticker():
//!     n = 0
//!     while True:
//!         await asyncio.sleep(0.2)
//!         n += 1; print(f"tick {n}")
//!
//! async def main():
//!     t = asyncio.create_task(ticker())
//!     time.sleep(1)                             # blocks the loop: no ticks
//!     await asyncio.to_thread(time.sleep, 1)    # ~5 ticks meanwhile
//!     t.cancel()
//! ```
//!
//! Rust: a blocking call (`std::thread::sleep`, a synchronous file read, a
//! heavy computation, a blocking database driver) inside an `async fn` never
//! yields: the thread polling that future is stuck until it returns, and so is
//! every other future that thread would have polled. `natter_runtime::spawn_blocking`
//! (asyncio's `to_thread`) moves the closure to a separate pool of threads
//! meant for blocking work and gives back a `JoinHandle` to await, so the
//! executor keeps running tasks in the meantime.
//!
//! The program does both:
//!
//! 1. The ticker and an inline `std::thread::sleep` are polled by the same
//!    task (`futures::join!`), the exact analogue of asyncio's single-threaded
//!    loop: zero ticks while it blocks.
//! 2. The ticker is a spawned task and the sleep goes through
//!    `spawn_blocking`: the ticks keep coming while the blocking call runs.
//!
//! Differences worth knowing:
//!
//! * No GIL, and several executor threads: an inline blocking call in one
//!   spawned task only freezes the executor thread it happens to run on, so
//!   other tasks may carry on, for a while. With as many blocking calls as
//!   executor threads, everything stops. Don't count on the spare threads.
//! * `spawn_blocking`'s closure must be `Send + 'static` (it runs on another
//!   thread), and it cannot be cancelled: dropping the handle detaches it and
//!   the thread runs the closure to the end.
//! * A spawned task is stopped here with a flag it checks, because dropping a
//!   `JoinHandle` detaches the task rather than cancelling it.
//!
//! Run: `cargo run -p natter-server --example blocking`

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{say, secs};

/// Prints `tick N` every 0.2 tutorial seconds until `stop` is set; counts the
/// ticks in `ticks`.
async fn ticker(ticks: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    loop {
        natter_runtime::sleep(secs(0.2)).await;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let n = ticks.fetch_add(1, Ordering::SeqCst) + 1;
        say!("tick {n}");
    }
}

fn main() {
    common::start("blocking: spawn_blocking keeps the ticker ticking");
    natter_runtime::block_on(async {
        say!("-- 1. blocking call inline, in the same task as the ticker --");
        let ticks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        futures::join!(ticker(ticks.clone(), stop.clone()), async {
            let before = ticks.load(Ordering::SeqCst);
            say!("main: std::thread::sleep(1s) inline (blocks this task)");
            std::thread::sleep(secs(1.0));
            let during = ticks.load(Ordering::SeqCst) - before;
            say!("ticks during the inline blocking call: {during}");
            stop.store(true, Ordering::SeqCst);
        });

        say!("-- 2. ticker as a spawned task, blocking call on spawn_blocking --");
        let ticks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_task = natter_runtime::spawn(ticker(ticks.clone(), stop.clone()));
        let before = ticks.load(Ordering::SeqCst);
        say!("main: std::thread::sleep(1s) via spawn_blocking");
        let delay = secs(1.0);
        natter_runtime::spawn_blocking(move || std::thread::sleep(delay)).await;
        let during = ticks.load(Ordering::SeqCst) - before;
        say!("ticks during the blocking call: {during}");
        stop.store(true, Ordering::SeqCst);
        ticker_task.await;
        say!("main: ticker stopped");
    });
    common::finish();
}
