//! Primer 4 — task groups: one failure cancels the rest.
//!
//! The classic asyncio program (Python 3.11+):
//!
//! ```python
//! async def work(n, delay, fail=False):
//!     try:
//!         await asyncio.sleep(delay)
//!         if fail:
//!             print(f"task {n} failed"); raise ValueError(f"task {n} broke")
//!         print(f"task {n} finished")
//!     except asyncio.CancelledError:
//!         print(f"task {n} cancelled"); raise
//!
//! async def main():
//!     try:
//!         async with asyncio.TaskGroup() as tg:
//!             tg.create_task(work(1, 0.5))
//!             tg.create_task(work(2, 1, fail=True))
//!             tg.create_task(work(3, 2))
//!             tg.create_task(work(4, 3))
//!     except* ValueError as eg:
//!         print("group failed:", eg.exceptions)
//! ```
//!
//! Rust: `futures::future::try_join_all` is the group. It polls all the
//! futures; if one returns `Err`, it *drops* the others and returns that error.
//! Dropping a future is how Rust cancels: the future simply is never polled
//! again, stopping at whichever `.await` it was parked on, and its local
//! variables are dropped. There is no `CancelledError` thrown into the code and
//! no way to catch and ignore it, so cleanup goes in `Drop` impls — here a
//! small guard that prints `task N cancelled` if it is dropped before the task
//! marked itself done.
//!
//! Differences worth knowing:
//!
//! * Cancellation by drop is immediate and synchronous: by the time
//!   `try_join_all` returns the error, the other tasks' guards have run. But
//!   a cancelled future cannot `await` cleanup (no async `Drop`), so
//!   cancellation-safe code keeps its state consistent at every `.await`.
//! * The futures here are polled by one task (concurrent, not parallel), which
//!   is what makes "drop them" possible. Tasks made with
//!   `natter_runtime::spawn` are *detached* when their `JoinHandle` is dropped,
//!   not cancelled; a group of spawned tasks needs an explicit cancel signal
//!   (a channel or flag each task watches).
//! * Futures are lazy: building the list of futures starts nothing.
//!
//! Run: `cargo run -p natter-server --example task_group`

#[path = "common/mod.rs"]
mod common;

use common::{say, secs};

/// Prints `task N cancelled` if dropped before [`CancelGuard::done`] is
/// called: the Rust counterpart of `except asyncio.CancelledError`.
struct CancelGuard {
    task: usize,
    done: bool,
}

impl CancelGuard {
    fn new(task: usize) -> Self {
        CancelGuard { task, done: false }
    }

    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            say!("task {} cancelled", self.task);
        }
    }
}

/// One member of the group: sleeps `delay` tutorial seconds, then finishes
/// (or fails, if `fail`).
async fn work(task: usize, delay: f64, fail: bool) -> Result<usize, String> {
    let guard = CancelGuard::new(task);
    say!("task {task} started ({delay}s)");
    natter_runtime::sleep(secs(delay)).await;
    guard.done();
    if fail {
        say!("task {task} failed");
        Err(format!("task {task} broke"))
    } else {
        say!("task {task} finished");
        Ok(task)
    }
}

fn main() {
    common::start("task group: first failure cancels the others");
    natter_runtime::block_on(async {
        let group = vec![
            work(1, 0.5, false),
            work(2, 1.0, true),
            work(3, 2.0, false),
            work(4, 3.0, false),
        ];
        say!(
            "main: running {} tasks as a group (task 2 will fail)",
            group.len()
        );
        match futures::future::try_join_all(group).await {
            Ok(results) => say!("group succeeded: {results:?}"),
            // By now the unfinished tasks have been dropped: their
            // "cancelled" lines are printed above this one.
            Err(error) => say!("group failed: {error}"),
        }
    });
    common::finish();
}
