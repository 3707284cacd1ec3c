//! The smol runtime (feature `smol`), built on smol's small crates rather
//! than the `smol` crate itself, so that the thread count is ours to set:
//!
//! * tasks: one global `async_executor::Executor`, run by a fixed number of
//!   worker threads started on first use;
//! * I/O and timers: async-io's reactor (async-net's sockets, `Timer`);
//! * blocking work: the `blocking` crate's thread pool.
//!
//! It reproduces the async-std semantics the rest of natter relies on; the
//! differences from plain smol are noted where they are made.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};
use std::time::Duration;

use async_executor::{Executor, Task};
use futures::Stream;

pub const NAME: &str = "smol";

pub use async_net::{TcpListener, TcpStream};

/// The executor every spawned task runs on. A `static` (not a lazily made
/// value) because `Executor::new` is `const`.
static EXECUTOR: Executor<'static> = Executor::new();
static START: Once = Once::new();

/// Starts `threads` worker threads the first time it is called; later calls
/// do nothing, like async-global-executor's `init_with_config`. A thread
/// the OS refuses is reported, and the executor runs on those it got (the
/// first start must get at least one: nothing would run tasks otherwise).
fn start(threads: usize) -> io::Result<()> {
    let mut result = Ok(());
    START.call_once(|| {
        let mut started = 0;
        for _ in 0..threads {
            match std::thread::Builder::new()
                .name("natter-worker".to_owned())
                .spawn(run_worker)
            {
                Ok(_) => started += 1,
                Err(e) => result = Err(e),
            }
        }
        if started > 0 {
            result = Ok(());
        }
    });
    result
}

/// A worker: runs tasks forever, and drives async-io's reactor while it has
/// none to run (`async_io::block_on` does that).
fn run_worker() {
    loop {
        // async-executor already catches a task's panic and hands it to
        // whoever awaits the task, so this only guards against a panic in
        // the executor itself taking a worker away for good.
        let _ = std::panic::catch_unwind(|| {
            async_io::block_on(EXECUTOR.run(futures_lite::future::pending::<()>()))
        });
    }
}

/// The executor, with its threads started: as many as CPUs (async-std's
/// default) unless `set_worker_threads` said otherwise first.
fn executor() -> &'static Executor<'static> {
    if !START.is_completed()
        && let Err(e) = start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    {
        // Only tests and examples start the executor lazily (the binaries
        // call `set_worker_threads`, which reports this as an error); with
        // no thread at all, no spawned task would ever run.
        panic!("cannot start any executor thread: {e}");
    }
    &EXECUTOR
}

pub fn set_worker_threads(threads: usize) -> io::Result<()> {
    start(threads)
}

pub fn worker_threads_override() -> Option<String> {
    // Nothing here reads an environment variable of its own (the `smol`
    // crate's SMOL_THREADS belongs to its global executor, not this one).
    None
}

/// smol's `Task` cancels the task when dropped; natter's handles detach
/// instead (async-std's semantics, e.g. `drop(spawn(server.run()))`). The
/// `Option` lets `Drop` take the task out to detach it.
pub struct JoinHandle<T>(Option<Task<T>>);

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let task = self.0.as_mut().expect("the task is taken out only in drop");
        Pin::new(task).poll(cx)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.detach();
        }
    }
}

pub fn spawn<F, T>(future: F) -> JoinHandle<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    JoinHandle(Some(executor().spawn(future)))
}

pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    JoinHandle(Some(blocking::unblock(f)))
}

/// Runs the future right here, driving async-io's reactor meanwhile;
/// spawned tasks run on the worker threads.
pub fn block_on<F: Future>(future: F) -> F::Output {
    async_io::block_on(future)
}

pub async fn yield_now() {
    futures_lite::future::yield_now().await
}

pub async fn sleep(duration: Duration) {
    // A duration too long to add to now never fires (Timer::after).
    async_io::Timer::after(duration).await;
}

pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    // Whichever finishes first; the other (the future, on time-out) is
    // dropped with the `or` combinator.
    futures_lite::future::or(async { Some(future.await) }, async {
        async_io::Timer::after(duration).await;
        None
    })
    .await
}

pub fn listener_from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
    TcpListener::try_from(listener)
}

pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

pub fn stream_from_async(stream: async_io::Async<std::net::TcpStream>) -> io::Result<TcpStream> {
    Ok(TcpStream::from(stream))
}

pub fn stdin_lines() -> impl Stream<Item = io::Result<String>> + Unpin {
    use futures_lite::io::AsyncBufReadExt;
    futures_lite::io::BufReader::new(blocking::Unblock::new(std::io::stdin())).lines()
}
