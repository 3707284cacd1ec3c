//! Primer 6 — a lock around a read-modify-write that spans an `.await`.
//!
//! The classic asyncio program:
//!
//! ```python
//! counter = 0
//! lock = asyncio.Lock()
//!
//! async def increment(n):
//!     global counter
//!     async with lock:
//!         value = counter            # read
//!         await asyncio.sleep(0.1)   # another task could run here...
//!         counter = value + 1        # ...so without the lock, updates get lost
//!
//! async def main():
//!     await asyncio.gather(*(increment(n) for n in range(5)))
//!     print("final count:", counter)   # 5
//! ```
//!
//! Rust: shared state lives in an `Arc<async_lock::Mutex<u32>>`; each task
//! gets its own clone of the `Arc`. `lock().await` waits (without blocking the
//! thread) until the guard is free; the guard unlocks when dropped. The program
//! runs the increment twice: once re-locking for the write (the lock is *not*
//! held across the sleep: every task reads 0, so updates are lost) and once
//! holding the guard across the sleep (final count 5).
//!
//! The rule: **don't hold a lock across an `.await` unless you mean it.**
//! While a task holds the guard and is parked at an `.await`, every other task
//! that wants the lock waits too, so the critical section's latency becomes
//! everyone's latency (here 5 × 0.1 s, serialised). Sometimes that is exactly
//! the point — the read-modify-write must be atomic — as in the second run.
//! Usually, copy what you need out of the lock, drop the guard, then await.
//!
//! Differences worth knowing:
//!
//! * Rust tasks run in *parallel* on several threads (no GIL), so even code
//!   with no `.await` between read and write needs a lock (or an atomic) to
//!   avoid lost updates; in asyncio, code between awaits is never interleaved.
//! * `std::sync::Mutex` is fine for short critical sections with no `.await`
//!   inside. Holding its guard across an `.await` makes the future `!Send`, so
//!   `natter_runtime::spawn` (which requires `Send`) rejects it at compile time
//!   — the compiler enforcing the rule above. `async_lock::Mutex`'s guard is
//!   `Send` and may be held across an `.await`, on purpose.
//! * Futures are lazy; `spawn` is what starts the five tasks.
//!
//! Run: `cargo run -p natter-server --example lock`

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use async_lock::Mutex;

use common::{say, secs};

const TASKS: usize = 5;

/// Reads the counter, sleeps, writes it back — re-locking for the write, so
/// the lock is NOT held across the sleep.
async fn increment_unprotected(task: usize, counter: Arc<Mutex<u32>>) {
    let value = *counter.lock().await; // guard dropped at the end of this line
    say!("unprotected task {task}: read {value}");
    natter_runtime::sleep(secs(0.1)).await;
    *counter.lock().await = value + 1;
    say!("unprotected task {task}: wrote {}", value + 1);
}

/// Reads, sleeps and writes while holding the guard: the whole
/// read-modify-write is one critical section.
async fn increment_locked(task: usize, counter: Arc<Mutex<u32>>) {
    let mut guard = counter.lock().await;
    let value = *guard;
    say!("task {task}: locked, read {value}");
    // Holding the guard across this await is deliberate: the read and the
    // write must not be separated by another task's update.
    natter_runtime::sleep(secs(0.1)).await;
    *guard = value + 1;
    say!("task {task}: wrote {}, unlocking", value + 1);
    drop(guard);
}

fn main() {
    common::start("lock: async_lock::Mutex prevents lost updates");
    natter_runtime::block_on(async {
        say!("-- without holding the lock across the await --");
        let counter = Arc::new(Mutex::new(0));
        let handles: Vec<_> = (1..=TASKS)
            .map(|task| natter_runtime::spawn(increment_unprotected(task, counter.clone())))
            .collect();
        futures::future::join_all(handles).await;
        let count = *counter.lock().await;
        let verdict = if count < TASKS as u32 {
            "updates were lost"
        } else {
            "lucky timing"
        };
        say!("unprotected final count: {count} (expected {TASKS}; {verdict})");

        say!("-- holding the lock for the whole read-modify-write --");
        let counter = Arc::new(Mutex::new(0));
        let handles: Vec<_> = (1..=TASKS)
            .map(|task| natter_runtime::spawn(increment_locked(task, counter.clone())))
            .collect();
        futures::future::join_all(handles).await;
        say!("final count: {}", *counter.lock().await);
    });
    common::finish();
}
