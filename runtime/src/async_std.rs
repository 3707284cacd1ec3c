//! The async-std runtime (feature `async-std`, the default).
//!
//! async-std is itself a layer over smol's crates (async-global-executor on
//! async-executor, async-io, blocking); this file only forwards to it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::Stream;

pub const NAME: &str = "async-std";

pub use ::async_std::net::{TcpListener, TcpStream};
pub use ::async_std::task::JoinHandle;

pub fn set_worker_threads(threads: usize) -> std::io::Result<()> {
    // async-global-executor starts its threads itself and panics if the
    // OS refuses one; there is no error to hand back here.
    async_global_executor::init_with_config(
        async_global_executor::GlobalExecutorConfig::default()
            .with_min_threads(threads)
            .with_max_threads(threads)
            .with_thread_name_fn(|| "natter-worker".to_owned()),
    );
    Ok(())
}

pub fn worker_threads_override() -> Option<String> {
    // async-global-executor reads it ahead of the configured count.
    std::env::var_os("ASYNC_GLOBAL_EXECUTOR_THREADS")
        .map(|_| "ASYNC_GLOBAL_EXECUTOR_THREADS is set and overrides the thread count".to_owned())
}

pub fn spawn<F, T>(future: F) -> JoinHandle<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    ::async_std::task::spawn(future)
}

pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    ::async_std::task::spawn_blocking(f)
}

pub fn block_on<F: Future>(future: F) -> F::Output {
    ::async_std::task::block_on(future)
}

pub async fn yield_now() {
    ::async_std::task::yield_now().await
}

pub async fn sleep(duration: Duration) {
    ::async_std::task::sleep(duration).await
}

pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    ::async_std::future::timeout(duration, future).await.ok()
}

pub fn listener_from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
    Ok(TcpListener::from(listener))
}

pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

pub fn stream_from_async(stream: async_io::Async<std::net::TcpStream>) -> io::Result<TcpStream> {
    Ok(TcpStream::from(stream.into_inner()?))
}

pub fn stdin_lines() -> impl Stream<Item = io::Result<String>> + Unpin {
    use ::async_std::io::BufReadExt;
    ::async_std::io::BufReader::new(::async_std::io::stdin()).lines()
}
