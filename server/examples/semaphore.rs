//! Primer 7 — a semaphore limits how many tasks are inside at once.
//!
//! The classic asyncio program:
//!
//! ```python
//! sem = asyncio.Semaphore(2)
//!
//! async def worker(n):
//!     async with sem:
//!         print(f"task {n} acquired")
//!         await asyncio.sleep(1)
//!         print(f"task {n} released")
//!
//! async def main():
//!     await asyncio.gather(*(worker(n) for n in range(1, 6)))   # ~3 s
//! ```
//!
//! Rust: `async_lock::Semaphore::new(2)` shared through an `Arc`. `acquire()`
//! returns a future that resolves to a guard (a permit) once one of the two
//! permits is free; dropping the guard returns the permit. An `AtomicUsize`
//! counts how many tasks are inside so the output can show it never exceeds 2:
//! the count goes up right after acquiring and down right before releasing.
//!
//! Differences worth knowing:
//!
//! * Tasks run in parallel on several threads (no GIL), so the shared "inside"
//!   counter must be an atomic (or behind a lock). A plain `usize` shared by
//!   tasks would not compile: an `Arc<usize>` is read-only, and the compiler
//!   rejects unsynchronised mutation shared across threads.
//! * The permit is released when its guard is *dropped*, including when the
//!   task is cancelled (dropped) while holding it: no `finally` needed.
//! * Futures are lazy; `spawn` (asyncio's `create_task`) is what starts them,
//!   and it requires `Send + 'static`, hence the `Arc` clones moved in.
//!
//! Run: `cargo run -p natter-server --example semaphore`

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_lock::Semaphore;

use common::{say, secs};

const PERMITS: usize = 2;
const TASKS: usize = 5;

async fn worker(task: usize, semaphore: Arc<Semaphore>, inside: Arc<AtomicUsize>) {
    say!("task {task} waiting");
    let permit = semaphore.acquire().await;
    let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
    say!("task {task} acquired (inside: {now_inside})");
    natter_runtime::sleep(secs(1.0)).await;
    // Leave the count before giving the permit back, so the count can never
    // include a task that has already handed its permit to someone else.
    inside.fetch_sub(1, Ordering::SeqCst);
    say!("task {task} released");
    drop(permit);
}

fn main() {
    common::start("semaphore: at most 2 tasks inside at once");
    natter_runtime::block_on(async {
        let semaphore = Arc::new(Semaphore::new(PERMITS));
        let inside = Arc::new(AtomicUsize::new(0));
        say!("main: spawning {TASKS} tasks sharing {PERMITS} permits");
        let handles: Vec<_> = (1..=TASKS)
            .map(|task| natter_runtime::spawn(worker(task, semaphore.clone(), inside.clone())))
            .collect();
        futures::future::join_all(handles).await;
        say!("main: all tasks done (~ {TASKS}/{PERMITS} rounds of 1s)");
    });
    common::finish();
}
