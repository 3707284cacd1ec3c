//! Primer 2 — sequential awaits vs concurrent tasks.
//!
//! The classic asyncio program:
//!
//! ```python
//! async def main():
//!     start = time.perf_counter()
//!     for delay in (1, 2, 3):
//!         await fetch_data(delay)          # one after another: ~6 s
//!     print(f"sequential: {time.perf_counter() - start:.2f}s")
//!
//!     start = time.perf_counter()
//!     tasks = [asyncio.create_task(fetch_data(d)) for d in (1, 2, 3)]
//!     for task in tasks:
//!         await task                       # all running at once: ~3 s
//!     print(f"concurrent: {time.perf_counter() - start:.2f}s")
//! ```
//!
//! Rust: the same shape. `.await` on a future runs it to completion before the
//! next line, so awaiting three fetches in a loop takes the *sum* of their
//! delays. `natter_runtime::spawn` (asyncio's `create_task`) starts each one
//! running immediately; awaiting the `JoinHandle`s afterwards then takes only
//! as long as the *slowest* one.
//!
//! Differences worth knowing:
//!
//! * Futures are lazy: `let f = fetch_data(1.0);` alone starts nothing (see
//!   the `coroutine` primer). Only `spawn` makes work proceed "in the
//!   background".
//! * `spawn` requires `Send + 'static`: the task may run on any executor
//!   thread and may outlive the caller, so it must own its data (here
//!   `fetch_data` takes its arguments by value, so its future owns them).
//! * Spawned tasks can run in *parallel* on several threads (there is no
//!   GIL); here they mostly sleep, so it makes no difference.
//! * Dropping a `JoinHandle` detaches the task (it keeps running); it does not
//!   cancel it.
//!
//! Run: `cargo run -p natter-server --example sequential_vs_concurrent`

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use common::{say, secs};

const DELAYS: [f64; 3] = [1.0, 2.0, 3.0];

async fn fetch_data(id: usize, delay: f64) -> String {
    say!("fetch {id}: started ({delay}s)");
    natter_runtime::sleep(secs(delay)).await;
    say!("fetch {id}: done");
    format!("data {id}")
}

fn main() {
    common::start("sequential awaits vs concurrent tasks");
    natter_runtime::block_on(async {
        say!("-- sequential: await each fetch before starting the next --");
        let started = Instant::now();
        for (i, delay) in DELAYS.into_iter().enumerate() {
            let data = fetch_data(i + 1, delay).await;
            say!("main: got {data:?}");
        }
        let sequential = started.elapsed().as_secs_f64();
        say!("sequential elapsed: {sequential:.2}s");

        say!("-- concurrent: spawn all three, then await the handles --");
        let started = Instant::now();
        let handles: Vec<_> = DELAYS
            .into_iter()
            .enumerate()
            .map(|(i, delay)| natter_runtime::spawn(fetch_data(i + 1, delay)))
            .collect();
        say!("main: spawned {} tasks; awaiting them", handles.len());
        for handle in handles {
            let data = handle.await;
            say!("main: got {data:?}");
        }
        let concurrent = started.elapsed().as_secs_f64();
        say!("concurrent elapsed: {concurrent:.2}s");
        say!(
            "(sequential ~ sum of delays = {:.2}s, concurrent ~ longest delay = {:.2}s)",
            secs(DELAYS.iter().sum()).as_secs_f64(),
            secs(3.0).as_secs_f64()
        );
    });
    common::finish();
}
