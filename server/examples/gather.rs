//! Primer 3 — gather: run several coroutines concurrently, results in order.
//!
//! The classic asyncio program:
//!
//! ```python
//! async def fetch_data(id, delay):
//!     await asyncio.sleep(delay)
//!     return f"result {id}"
//!
//! async def main():
//!     results = await asyncio.gather(
//!         fetch_data(1, 3), fetch_data(2, 1), fetch_data(3, 2))
//!     print(results)   # ['result 1', 'result 2', 'result 3'] after ~3 s
//! ```
//!
//! Rust: `futures::future::join_all` takes the futures and returns one future
//! that polls them all and resolves to a `Vec` of their outputs *in the order
//! given*, whatever order they finished in. (`futures::join!(a, b, c)` does the
//! same for a fixed number of futures of different types; `try_join_all` is
//! `gather` that stops at the first error.)
//!
//! Differences worth knowing:
//!
//! * Futures are lazy: building the `Vec` of futures starts nothing; the first
//!   poll of `join_all` starts them all.
//! * `join_all` does not spawn tasks. All the futures are polled by the one
//!   task that awaits it: concurrent (interleaved at `.await` points) but not
//!   parallel, and they may borrow local data because no `Send`/`'static`
//!   bound applies. asyncio's `gather` wraps coroutines in tasks instead. To
//!   get separate (possibly parallel) tasks, `spawn` each one and `join_all`
//!   the `JoinHandle`s.
//! * Dropping the `join_all` future cancels every unfinished future in it.
//!
//! Run: `cargo run -p natter-server --example gather`

#[path = "common/mod.rs"]
mod common;

use common::{say, secs};

async fn fetch_data(id: usize, delay: f64) -> String {
    say!("fetch {id}: started ({delay}s)");
    natter_runtime::sleep(secs(delay)).await;
    say!("fetch {id}: done");
    format!("result {id}")
}

fn main() {
    common::start("gather: join_all runs futures concurrently, results in order");
    natter_runtime::block_on(async {
        let delays = [3.0, 1.0, 2.0];
        let futures: Vec<_> = delays
            .iter()
            .enumerate()
            .map(|(i, &delay)| fetch_data(i + 1, delay))
            .collect();
        say!(
            "main: built {} futures (none started yet); awaiting join_all",
            futures.len()
        );
        let results = futures::future::join_all(futures).await;
        say!("main: results in argument order: {results:?}");
        say!(
            "(took ~ the longest delay, {:.2}s, not the sum)",
            secs(3.0).as_secs_f64()
        );
    });
    common::finish();
}
