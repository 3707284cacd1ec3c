//! Primer 1 — coroutines: calling an `async fn` runs nothing.
//!
//! The classic asyncio program:
//!
//! ```python
//! async def fetch_data(delay):
//!     print("start fetching")
//!     await asyncio.sleep(delay)
//!     print("done fetching")
//!     return {"data": delay}
//!
//! async def main():
//!     coro = fetch_data(2)        # a coroutine object; nothing printed yet
//!     print("created the coroutine")
//!     result = await coro         # now it runs
//!     print(result)
//!
//! asyncio.run(main())
//! ```
//!
//! Rust: calling `fetch_data(2.0)` builds a *future*, a state machine that
//! holds the argument and does nothing until something polls it. `.await`
//! polls it from inside the current task; `natter_runtime::block_on` (asyncio's
//! `run`) polls the outermost one. So far this matches Python coroutines.
//!
//! Differences worth knowing:
//!
//! * Futures are *lazy*, always. There is no "it has been scheduled" state:
//!   a future that is created and then dropped never runs a single line, and
//!   the compiler warns (`unused_must_use`: "futures do nothing unless you
//!   `.await` or poll them") where Python would warn at garbage collection
//!   ("coroutine was never awaited").
//! * To make something run *on its own* — asyncio's `create_task` — hand it
//!   to `natter_runtime::spawn`. It starts running right away, on one of the
//!   executor's threads, whether or not you ever await the `JoinHandle`.
//!   Because it may run on another thread, `spawn` requires the future to be
//!   `Send + 'static`: it may not borrow from the caller's stack, and may not
//!   hold thread-bound things such as `Rc` across an `.await`.
//! * Cancelling a future is just dropping it; it stops at the `.await` it was
//!   parked on (a later primer, `task_group`, shows this).
//!
//! Run: `cargo run -p natter-server --example coroutine`
//! (set `NATTER_PRIMER_SCALE=0.05` to run twenty times faster).

#[path = "common/mod.rs"]
mod common;

use common::{say, secs};

/// "Fetches data": waits `delay` tutorial seconds, then returns a value.
async fn fetch_data(delay: f64) -> String {
    say!("fetch_data({delay}): start fetching");
    natter_runtime::sleep(secs(delay)).await;
    say!("fetch_data({delay}): done fetching");
    format!("data fetched after {delay}s")
}

fn main() {
    common::start("coroutine: an async fn call does nothing until awaited");
    natter_runtime::block_on(async {
        // Part 1: a plain future is inert until awaited.
        say!("main: about to call fetch_data(2)");
        let future = fetch_data(2.0);
        say!("main: created the future; nothing has run yet");
        natter_runtime::sleep(secs(0.5)).await;
        say!("main: slept 0.5s and it still has not started; now awaiting it");
        let data = future.await;
        say!("main: got {data:?}");

        // Part 2: spawn (create_task) starts it right away, before any await
        // of the handle.
        say!("main: spawning fetch_data(1) as a task (asyncio.create_task)");
        let handle = natter_runtime::spawn(fetch_data(1.0));
        say!("main: spawned; doing other work for 0.5s without awaiting the handle");
        natter_runtime::sleep(secs(0.5)).await;
        say!("main: now awaiting the task's handle");
        let data = handle.await;
        say!("main: task returned {data:?}");
    });
    common::finish();
}
