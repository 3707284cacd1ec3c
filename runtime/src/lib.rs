//! natter's one door to the async runtime.
//!
//! Every runtime-specific call the project makes — spawning tasks, timers,
//! TCP sockets, Unix signals, moving blocking work to a thread pool — goes
//! through this crate and nowhere else.
//!
//! Two runtimes are supported, chosen by cargo feature, exactly one at a
//! time:
//!
//! * `async-std` (the default): `src/async_std.rs`. async-std is
//!   discontinued upstream in favour of smol, but it is what natter was
//!   built and measured on.
//! * `smol`: `src/smol.rs`, on smol's small crates (async-executor,
//!   async-io, async-net, blocking, futures-lite).
//!
//! This file holds what does not depend on the choice (socket set-up via
//! socket2, signals via async-signal, which both runtimes share) and the
//! public types. `TcpStream`, `TcpListener` and `JoinHandle` are natter's
//! own thin wrappers rather than re-exports, so that the public API is the
//! same, method for method, whichever runtime is compiled in: code that
//! builds against one feature builds against the other. They implement only
//! the runtime-neutral `futures` traits that the rest of natter relies on.

#[cfg(all(feature = "async-std", feature = "smol"))]
compile_error!(
    "natter-runtime: the features `async-std` and `smol` are mutually exclusive; \
     enable exactly one (for smol: `--no-default-features --features smol`)"
);
#[cfg(not(any(feature = "async-std", feature = "smol")))]
compile_error!(
    "natter-runtime: no runtime selected; enable exactly one of the features \
     `async-std` (the default) or `smol`"
);

mod broker;
mod maybe_tls;
pub use broker::redis;
pub use maybe_tls::MaybeTls;

#[cfg(all(feature = "async-std", not(feature = "smol")))]
#[path = "async_std.rs"]
mod imp;
#[cfg(all(feature = "smol", not(feature = "async-std")))]
#[path = "smol.rs"]
mod imp;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use futures::{Stream, StreamExt};

/// The name of the runtime compiled in (`"async-std"` or `"smol"`), for
/// logs and reports.
pub const RUNTIME: &str = imp::NAME;

/// Sets how many threads run tasks. It takes effect only when called
/// before anything else in this module (the executor starts on first use),
/// so binaries call it first thing in `main`; later calls do nothing. If it
/// is never called, the executor runs one thread per available CPU. An
/// error says the OS refused every thread.
pub fn set_worker_threads(threads: usize) -> io::Result<()> {
    imp::set_worker_threads(threads.max(1))
}

/// A warning to log if something outside the program (an environment
/// variable the runtime reads on its own) overrides the thread count given
/// to [`set_worker_threads`]; `None` when nothing does. Kept here so that
/// binaries need not know which runtime's variables matter.
pub fn worker_threads_override() -> Option<String> {
    imp::worker_threads_override()
}

/// A handle to a spawned task; awaiting it gives the task's output.
///
/// Dropping the handle *detaches* the task: it keeps running to the end
/// (async-std's semantics, which natter relies on, e.g.
/// `drop(spawn(server.run()))`). If the task panics, the panic is re-raised
/// in whoever awaits the handle; a detached task's panic is only printed.
pub struct JoinHandle<T>(imp::JoinHandle<T>);

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").finish_non_exhaustive()
    }
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
    JoinHandle(imp::spawn(future))
}

/// Runs a blocking closure on a thread pool meant for blocking work
/// (asyncio's `to_thread`), so the executor threads keep serving sockets.
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    JoinHandle(imp::spawn_blocking(f))
}

/// Drives a future to completion on the current thread (asyncio's `run`).
/// Spawned tasks run meanwhile on the executor's threads.
pub fn block_on<F: Future>(future: F) -> F::Output {
    imp::block_on(future)
}

/// Lets every other runnable task go first, then resumes (asyncio's
/// `await asyncio.sleep(0)`): puts the task at the back of the run queue.
pub async fn yield_now() {
    imp::yield_now().await
}

/// Waits for a duration without blocking the executor (asyncio's `sleep`).
pub async fn sleep(duration: Duration) {
    imp::sleep(duration).await
}

/// The future's output, or `None` if it did not finish within `duration`;
/// the future is dropped (cancelled) on time-out.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    imp::timeout(duration, future).await
}

/// A TCP connection. Clones share the one socket (reads and writes from
/// several tasks); `AsyncWriteExt::close` only flushes (see `poll_close`),
/// `shutdown` sends a FIN, and the socket closes when the last clone is
/// dropped.
#[derive(Clone)]
pub struct TcpStream(imp::TcpStream);

impl TcpStream {
    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// The remote address of the connection.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay)
    }

    /// Shuts down the read side, the write side or both, for every clone.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.0.shutdown(how)
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::os::fd::AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl std::os::fd::AsFd for TcpStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read_vectored(cx, bufs)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    /// Flushes, and nothing more: the socket stays open both ways (use
    /// [`TcpStream::shutdown`] to send a FIN). That is what async-std's
    /// stream does, and natter was built on it; async-net's would shut
    /// down the write side, so the smol build must not forward to it.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
}

/// A TCP listener, made by [`bind`].
pub struct TcpListener(imp::TcpListener);

impl TcpListener {
    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((TcpStream(stream), peer))
    }

    /// The address the listener is bound to (the real port after `:0`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
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
                return imp::listener_from_std(socket.into()).map(TcpListener);
            }
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// Opens a TCP connection.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    imp::connect(addr).await.map(TcpStream)
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
    // Both runtimes sit on async-io's reactor, so waiting for the connect
    // to finish is runtime-neutral.
    let stream = async_io::Async::new(std_stream)?;
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    imp::stream_from_async(stream).map(TcpStream)
}

/// Makes closing `stream` abort the connection with a TCP reset instead of
/// a FIN (`SO_LINGER` {on, 0}): how tests play a client that vanishes.
/// Reads the option back so a caller knows the kernel took it.
pub fn reset_on_close(stream: &TcpStream) -> io::Result<()> {
    let sock = socket2::SockRef::from(stream);
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
/// (async-signal rides on async-io's reactor, which both runtimes use.)
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
    imp::stdin_lines()
}
