//! Primer 9 — a producer and two workers around a bounded queue.
//!
//! The classic asyncio program:
//!
//! ```python
//! async def producer(queue):
//!     for i in range(1, 11):
//!         await queue.put(i)            # waits while the queue is full
//!     for _ in range(2):
//!         await queue.put(None)         # one "stop" sentinel per worker
//!
//! async def worker(w, queue):
//!     while (item := await queue.get()) is not None:
//!         print(f"worker {w} got item {item}")
//!         await asyncio.sleep(0.4)
//!
//! async def main():
//!     queue = asyncio.Queue(maxsize=3)
//!     await asyncio.gather(producer(queue), worker(1, queue), worker(2, queue))
//! ```
//!
//! Rust: `async_channel::bounded(3)` gives a `Sender` and a `Receiver`, both
//! cloneable (multi-producer, multi-consumer). `send().await` waits while
//! the channel is full (back-pressure, like `put` on a full queue);
//! `recv().await` waits while it is empty. Instead of sentinels, the producer
//! *closes* the channel by dropping its `Sender`: once the last sender is gone
//! and the buffer is drained, `recv()` returns `Err`, and each worker's loop
//! ends. (Python 3.13 added `Queue.shutdown()` for the same idea.)
//!
//! Differences worth knowing:
//!
//! * Closing is tied to ownership: the channel closes when the last `Sender`
//!   clone is dropped, so a producer that panics or is cancelled closes it
//!   too and the workers cannot hang waiting for a sentinel that never comes.
//! * Workers are spawned tasks, so they may run in parallel on several
//!   threads (no GIL); the channel is safe for that. `spawn` needs
//!   `Send + 'static`, so each worker owns a clone of the `Receiver`.
//! * Futures are lazy: nothing moves until the tasks are spawned.
//!
//! Run: `cargo run -p natter-server --example queue`

#[path = "common/mod.rs"]
mod common;

use async_channel::{Receiver, Sender};

use common::{say, secs};

const ITEMS: u32 = 10;
const WORKERS: usize = 2;
const CAPACITY: usize = 3;

async fn producer(queue: Sender<u32>) {
    for item in 1..=ITEMS {
        // Waits here whenever the queue already holds CAPACITY items.
        queue.send(item).await.expect("workers are still receiving");
        say!(
            "producer put item {item} (queue length now {})",
            queue.len()
        );
    }
    say!("producer: done, closing the queue (dropping the sender)");
    drop(queue);
}

async fn worker(w: usize, queue: Receiver<u32>) -> usize {
    let mut processed = 0;
    // recv() fails only once the channel is closed AND empty.
    while let Ok(item) = queue.recv().await {
        say!("worker {w} got item {item}");
        natter_runtime::sleep(secs(0.4)).await; // "processing"
        processed += 1;
    }
    say!("worker {w} exiting: queue closed and empty ({processed} processed)");
    processed
}

fn main() {
    common::start("queue: bounded channel, one producer, two workers");
    natter_runtime::block_on(async {
        let (sender, receiver) = async_channel::bounded(CAPACITY);
        say!("main: queue capacity {CAPACITY}, {WORKERS} workers, {ITEMS} items");
        let workers: Vec<_> = (1..=WORKERS)
            .map(|w| natter_runtime::spawn(worker(w, receiver.clone())))
            .collect();
        // Main's own receiver clone is not needed; dropping it keeps the
        // channel's lifetime in the workers' hands.
        drop(receiver);
        natter_runtime::spawn(producer(sender)).await;

        let per_worker = futures::future::join_all(workers).await;
        let total: usize = per_worker.iter().sum();
        say!("main: per worker {per_worker:?}");
        say!("total processed: {total}");
    });
    common::finish();
}
