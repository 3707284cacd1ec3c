//! Primer 12 — group commit: many tasks await one writer thread, one `fsync`
//! per batch.
//!
//! The asyncio program (a worker thread that blocks on purpose, and futures
//! it resolves from that thread):
//!
//! ```python
//! def writer(inbox, loop, sizes):
//!     while (first := inbox.get()) is not None:   # blocks this thread only
//!         batch = [first]
//!         while not inbox.empty():                # take whatever queued up
//!             batch.append(inbox.get_nowait())
//!         time.sleep(0.002)                       # one fsync for all of them
//!         sizes.append(len(batch))
//!         for fut in batch:
//!             loop.call_soon_threadsafe(fut.set_result, len(sizes))
//!
//! async def say(inbox):
//!     fut = asyncio.get_running_loop().create_future()
//!     inbox.put(fut)              # hand it over: never blocks
//!     return await fut            # "ok" only once it is on disk
//!
//! async def connection(inbox, n):
//!     for _ in range(n):          # one request in flight at a time
//!         await say(inbox)
//!
//! async def main():
//!     inbox, sizes = queue.SimpleQueue(), []
//!     t = threading.Thread(target=writer,
//!                          args=(inbox, asyncio.get_running_loop(), sizes))
//!     t.start()
//!     await asyncio.gather(*(connection(inbox, 10) for _ in range(20)))
//!     inbox.put(None); t.join()
//!     print(f"200 says, {len(sizes)} fsyncs")
//! ```
//!
//! Rust, the shape of natter's `--data-dir` writer (`server/src/disk_log.rs`):
//!
//! * The worker is a dedicated `std::thread`, not `spawn_blocking`: it lives
//!   as long as the program, and the blocking pool is for calls that end.
//!   It may block as much as it likes; no task runs on it.
//! * Requests go in over `std::sync::mpsc`: `send` never blocks (the channel
//!   is unbounded) and is a plain `fn`, so an async task can call it; the
//!   worker's `recv` blocks its own thread, which is what it is for. Each
//!   request carries a `futures::channel::oneshot::Sender`, asyncio's
//!   future: the task awaits the `Receiver`.
//! * Group commit needs no timer: the worker takes one request (`recv`),
//!   then everything that queued up meanwhile (`try_recv` until empty), and
//!   pays one "fsync" for the batch. A lone request goes at once; under load,
//!   requests pile up during each fsync and share the next one.
//! * `std::thread::sleep` stands in for the fsync. That is fine here because
//!   it runs on the worker thread; in a task it would freeze the executor
//!   (the `blocking` primer).
//! * `oneshot::Sender::send` is a plain `fn` too, so the thread resolves the
//!   futures itself. (natter puts one step between: the thread reports each
//!   commit over an unbounded `async_channel`, and the publisher, on the
//!   async side, shows the messages under the registry lock, in order,
//!   before resolving the `say`s. See CONCURRENCY.md §6 and §11.)
//! * Nobody hangs: a task that gave up has dropped its `Receiver`, so the
//!   worker's `send` fails and is ignored; a request the worker drops
//!   unanswered drops its `Sender`, so the task's `Receiver` resolves to
//!   `Err(Canceled)`, which `durable_say` turns into an error instead of a
//!   wait forever.
//!
//! Run: `cargo run -p natter-server --example group_commit`

#[path = "common/mod.rs"]
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use common::{say, secs};

/// A request: its number, and where to send the number of the batch that
/// committed it.
type Request = (u32, oneshot::Sender<usize>);

/// Concurrent "connections", and `say`s each makes one after another.
const CONNECTIONS: u32 = 20;
const SAYS_EACH: u32 = 10;
/// A request the writer loses on purpose (part 3), as a bug or a crash would.
const LOST: u32 = u32::MAX;

/// The writer thread: blocks on its inbox, commits what queued up as one
/// batch with one "fsync", answers every request in it. Ends when every
/// `Sender` of the inbox is gone; returns the size of each batch.
fn writer(inbox: mpsc::Receiver<Request>, fsync: Duration) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut batch = Vec::new();
    while let Ok(first) = inbox.recv() {
        batch.push(first);
        while let Ok(next) = inbox.try_recv() {
            batch.push(next);
        }
        std::thread::sleep(fsync); // one fsync for the whole batch
        sizes.push(batch.len());
        let number = sizes.len();
        let mut nobody = 0;
        for (id, done) in batch.drain(..) {
            if id == LOST {
                continue; // `done` is dropped unanswered
            }
            // The requester may have given up; then nobody needs the answer.
            if done.send(number).is_err() {
                nobody += 1;
            }
        }
        if nobody > 0 {
            say!("writer: batch {number}: {nobody} answer(s) for nobody, ignored");
        }
    }
    sizes
}

/// A durable say: hand the request to the writer, await its batch number.
async fn durable_say(inbox: &mpsc::Sender<Request>, id: u32) -> Result<usize, &'static str> {
    let (done, waiting) = oneshot::channel();
    // Unbounded: never blocks the task. Fails only if the writer is gone.
    inbox.send((id, done)).map_err(|_| "refused")?;
    // A dropped Sender means no answer will ever come: an error, not a hang.
    waiting.await.map_err(|oneshot::Canceled| "internal")
}

fn main() {
    common::start("group_commit: one writer thread, one fsync per batch");
    let fsync = secs(0.002);
    let (inbox, requests) = mpsc::channel::<Request>();
    let thread = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer(requests, fsync))
        .expect("start the writer thread");
    natter_runtime::block_on(async {
        say!("-- 1. one say on its own --");
        let started = Instant::now();
        let batch = durable_say(&inbox, 0).await.expect("the writer answers");
        say!(
            "main: ok from batch {batch} after {:.1} ms: no timer waits for company",
            started.elapsed().as_secs_f64() * 1000.0
        );

        say!("-- 2. {CONNECTIONS} connections, {SAYS_EACH} says each, one in flight each --");
        let started = Instant::now();
        let connections: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let inbox = inbox.clone();
                natter_runtime::spawn(async move {
                    let mut batches = Vec::new();
                    for n in 0..SAYS_EACH {
                        let batch = durable_say(&inbox, 1 + c * SAYS_EACH + n).await;
                        batches.push(batch.expect("the writer answers"));
                    }
                    batches
                })
            })
            .collect();
        let per_connection = futures::future::join_all(connections).await;
        let mut batches: Vec<usize> = per_connection.into_iter().flatten().collect();
        let says = batches.len();
        batches.sort_unstable();
        batches.dedup();
        let fsyncs = batches.len();
        say!(
            "main: {says} says answered by {fsyncs} batches in {:.1} ms \
             (one fsync per say: at least {:.1} ms)",
            started.elapsed().as_secs_f64() * 1000.0,
            says as f64 * fsync.as_secs_f64() * 1000.0
        );

        say!("-- 3. nobody listening, nobody answering --");
        let (done, waiting) = oneshot::channel();
        inbox.send((0, done)).expect("the writer is running");
        drop(waiting);
        say!("main: handed over a say, then gave up on it (dropped its Receiver)");
        let lost = durable_say(&inbox, LOST).await;
        say!("main: a say the writer dropped unanswered resolves to {lost:?}");
    });
    // Hanging up ends the writer's loop once it has answered what it holds.
    drop(inbox);
    let sizes = thread.join().expect("the writer thread finished");
    let requests: usize = sizes.iter().sum();
    say!(
        "writer: {requests} requests in {} batches, largest {}",
        sizes.len(),
        sizes.iter().max().copied().unwrap_or(0)
    );
    common::finish();
}
