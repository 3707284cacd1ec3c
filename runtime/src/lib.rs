//! natter's one door to the async runtime.
//!
//! Every runtime-specific call the project makes — spawning tasks, timers,
//! TCP sockets, Unix signals, moving blocking work to a thread pool — goes
//! through this file and nowhere else. Today it is async-std (itself a thin
//! layer over smol's crates: async-executor, async-io, blocking); moving to
//! smol means rewriting the bodies below and nothing outside this crate.
//!
//! The types handed out (`TcpStream`, `JoinHandle`) implement only the
//! runtime-neutral `futures` traits that the rest of natter relies on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{Stream, StreamExt};

pub use async_std::net::{TcpListener, TcpStream};
pub use async_std::task::JoinHandle;

/// Sets how many threads run tasks. It takes effect only when called
/// before anything else in this module (the executor starts on first use),
/// so binaries call it first thing in `main`; later calls do nothing.
pub fn set_worker_threads(threads: usize) {
    let threads = threads.max(1);
    async_global_executor::init_with_config(
        async_global_executor::GlobalExecutorConfig::default()
            .with_min_threads(threads)
            .with_max_threads(threads)
            .with_thread_name_fn(|| "natter-worker".to_owned()),
    );
}

/// Spawns a task onto the shared executor (asyncio's `create_task`).
///
/// The task runs whether or not the handle is awaited; dropping the handle
/// detaches it rather than cancelling it.
pub fn spawn<F, T>(future: F) -> JoinHandle<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    async_std::task::spawn(future)
}

/// Runs a blocking closure on a thread pool meant for blocking work
/// (asyncio's `to_thread`), so the executor threads keep serving sockets.
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    async_std::task::spawn_blocking(f)
}

/// Drives a future to completion on the current thread (asyncio's `run`).
pub fn block_on<F: Future>(future: F) -> F::Output {
    async_std::task::block_on(future)
}

/// Lets every other runnable task go first, then resumes (asyncio's
/// `await asyncio.sleep(0)`): puts the task at the back of the run queue.
pub async fn yield_now() {
    async_std::task::yield_now().await
}

/// Waits for a duration without blocking the executor (asyncio's `sleep`).
pub async fn sleep(duration: Duration) {
    async_std::task::sleep(duration).await
}

/// The future's output, or `None` if it did not finish within `duration`;
/// the future is dropped (cancelled) on time-out.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    async_std::future::timeout(duration, future).await.ok()
}

/// Binds a TCP listener with a listen backlog of `backlog` connections.
///
/// The default backlog of many runtimes (128) makes a burst of thousands of
/// connects wait for SYN retransmits; a chat server that expects bursts
/// asks for a deeper queue (the kernel caps it at `net.core.somaxconn`).
pub fn bind(addr: &str, backlog: i32) -> io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing");
    for addr in addr.to_socket_addrs()? {
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        match socket
            .bind(&addr.into())
            .and_then(|()| socket.listen(backlog))
        {
            Ok(()) => {
                socket.set_nonblocking(true)?;
                let std_listener: std::net::TcpListener = socket.into();
                return Ok(TcpListener::from(std_listener));
            }
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// Opens a TCP connection.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

/// Opens a TCP connection from a chosen local address, so a load test can
/// spread sockets over several loopback source addresses (127.0.0.2, …)
/// and get past one address's ephemeral-port range.
pub async fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(local, 0).into())?;
    let std_stream: std::net::TcpStream = match socket.connect(&addr.into()) {
        Ok(()) => socket.into(),
        Err(e) if e.raw_os_error() == Some(libc_einprogress()) => socket.into(),
        Err(e) => return Err(e),
    };
    let stream = async_io::Async::new(std_stream)?;
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    Ok(TcpStream::from(stream.into_inner()?))
}

/// Makes closing `stream` abort the connection with a TCP reset instead of
/// a FIN (`SO_LINGER` {on, 0}): how tests play a client that vanishes.
/// Reads the option back so a caller knows the kernel took it.
pub fn reset_on_close(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    sock.set_linger(Some(Duration::ZERO))?;
    match sock.linger()? {
        Some(d) if d.is_zero() => Ok(()),
        other => Err(io::Error::other(format!(
            "SO_LINGER read back as {other:?}"
        ))),
    }
}

fn libc_einprogress() -> i32 {
    // EINPROGRESS on Linux and the BSDs this project targets.
    if cfg!(target_os = "linux") { 115 } else { 36 }
}

/// The signals that ask natter to shut down gracefully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

/// A stream that yields each SIGINT or SIGTERM the process receives.
pub fn stop_signals() -> io::Result<impl Stream<Item = StopSignal> + Unpin> {
    use async_signal::{Signal, Signals};
    let signals = Signals::new([Signal::Int, Signal::Term])?;
    Ok(signals.filter_map(|s| {
        futures::future::ready(match s {
            Ok(Signal::Int) => Some(StopSignal::Interrupt),
            Ok(Signal::Term) => Some(StopSignal::Terminate),
            _ => None,
        })
    }))
}

/// Lines of standard input, read without blocking the executor.
pub fn stdin_lines() -> impl Stream<Item = io::Result<String>> + Unpin {
    use async_std::io::BufReadExt;
    async_std::io::BufReader::new(async_std::io::stdin()).lines()
}
