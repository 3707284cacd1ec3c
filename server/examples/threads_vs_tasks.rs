//! Primer 11 — CPU-bound work: threads run it in parallel, tasks just hog.
//!
//! The classic asyncio program:
//!
//! ```python
//! def count_primes(limit): ...          # pure CPU, no awaits
//!
//! async def main():
//!     t = time.perf_counter()
//!     [count_primes(N) for _ in range(4)]                         # sequential
//!     with ThreadPoolExecutor(4) as pool:                         # threads:
//!         list(pool.map(count_primes, [N] * 4))                   # no faster (GIL)
//!     await asyncio.gather(*(async_count(N) for _ in range(4)))   # tasks: no faster,
//!                                                                 # and the loop freezes
//! ```
//!
//! In CPython the GIL lets only one thread run Python bytecode at a time, so
//! threads do not speed up CPU-bound work (you reach for processes instead),
//! and coroutines that never await simply run one after another while the
//! event loop is frozen.
//!
//! Rust has no GIL. The same work, done four times:
//!
//! 1. **sequentially** on one thread: the baseline;
//! 2. on **four `std::thread`s**: truly parallel, so on a machine with K cores
//!    it takes about 1/min(K, 4) of the sequential time;
//! 3. as **four async tasks** (`natter_runtime::spawn`) that never `.await`
//!    inside the loop: they do run, and in parallel too, because the executor
//!    has one thread per core — but each one *occupies an executor thread* for
//!    its whole run. A heartbeat task that wants to wake every 10 ms is starved
//!    meanwhile (its longest gap is printed); on a server those would be
//!    sockets nobody answers;
//! 4. bonus: the same four jobs through `natter_runtime::spawn_blocking`: just
//!    as parallel, and the heartbeat keeps its rhythm because the executor
//!    threads stay free.
//!
//! Hence the rule: CPU-heavy (or blocking) work belongs on threads —
//! `spawn_blocking`, a dedicated thread pool, or `std::thread::scope` — and
//! async tasks are for waiting on I/O and timers. (A long computation could
//! also `.await` a yield now and then, but that only shares the thread; it
//! does not add any.)
//!
//! Other differences: `spawn` and `spawn_blocking` require `Send + 'static`,
//! which the plain `u64` argument satisfies; and futures are lazy, so a task's
//! CPU work starts only once the task is spawned.
//!
//! The amount of work is fixed (it is not scaled by `NATTER_PRIMER_SCALE`,
//! which only shortens sleeps), and neither is the 10 ms heartbeat, which is a
//! measuring probe rather than a tutorial delay.
//!
//! Run: `cargo run -p natter-server --example threads_vs_tasks`

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::say;

/// Count primes below this, four times per mode: about 0.15 s per count in an
/// unoptimised (debug) build, much less in release.
const LIMIT: u64 = 150_000;
const JOBS: usize = 4;
const HEARTBEAT: Duration = Duration::from_millis(10);

/// Pure CPU work with no `.await` in it: trial division.
fn count_primes(limit: u64) -> usize {
    (2..limit)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count()
}

/// A task that tries to wake every [`HEARTBEAT`] and returns the longest gap
/// it saw between wake-ups, once `stop` is set.
fn heartbeat(stop: Arc<AtomicBool>) -> natter_runtime::JoinHandle<Duration> {
    natter_runtime::spawn(async move {
        let mut longest = Duration::ZERO;
        let mut last = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            natter_runtime::sleep(HEARTBEAT).await;
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        longest
    })
}

fn report(mode: &str, started: Instant, counts: &[usize]) -> f64 {
    let elapsed = started.elapsed().as_secs_f64();
    say!("{mode} elapsed: {elapsed:.2}s (counts {counts:?})");
    elapsed
}

fn main() {
    common::start("threads vs tasks for CPU-bound work");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    say!("this machine: {cores} core(s); each job: count_primes({LIMIT})");

    say!("-- 1. sequential: {JOBS} jobs one after another --");
    let started = Instant::now();
    let counts: Vec<usize> = (0..JOBS).map(|_| count_primes(LIMIT)).collect();
    let sequential = report("sequential", started, &counts);

    say!("-- 2. threads: {JOBS} std::threads at once (no GIL: parallel) --");
    let started = Instant::now();
    let threads: Vec<_> = (0..JOBS)
        .map(|_| std::thread::spawn(|| count_primes(LIMIT)))
        .collect();
    let counts: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let threaded = report("threads", started, &counts);

    natter_runtime::block_on(async {
        say!("-- 3. async tasks: {JOBS} spawned tasks that never await --");
        let stop = Arc::new(AtomicBool::new(false));
        let probe = heartbeat(stop.clone());
        natter_runtime::sleep(HEARTBEAT * 3).await; // let the heartbeat settle
        let started = Instant::now();
        let tasks: Vec<_> = (0..JOBS)
            .map(|_| natter_runtime::spawn(async { count_primes(LIMIT) }))
            .collect();
        let counts = futures::future::join_all(tasks).await;
        let tasks_elapsed = report("async tasks", started, &counts);
        stop.store(true, Ordering::SeqCst);
        let gap = probe.await;
        say!(
            "heartbeat during async tasks: longest gap {:.3}s (wanted {:.3}s)",
            gap.as_secs_f64(),
            HEARTBEAT.as_secs_f64()
        );

        say!("-- 4. bonus: the same jobs on spawn_blocking --");
        let stop = Arc::new(AtomicBool::new(false));
        let probe = heartbeat(stop.clone());
        natter_runtime::sleep(HEARTBEAT * 3).await;
        let started = Instant::now();
        let jobs: Vec<_> = (0..JOBS)
            .map(|_| natter_runtime::spawn_blocking(|| count_primes(LIMIT)))
            .collect();
        let counts = futures::future::join_all(jobs).await;
        report("spawn_blocking", started, &counts);
        stop.store(true, Ordering::SeqCst);
        let gap = probe.await;
        say!(
            "heartbeat during spawn_blocking: longest gap {:.3}s (wanted {:.3}s)",
            gap.as_secs_f64(),
            HEARTBEAT.as_secs_f64()
        );

        say!(
            "summary: sequential {sequential:.2}s, threads {threaded:.2}s, async tasks {tasks_elapsed:.2}s"
        );
    });
    common::finish();
}
