//! The semantics natter relies on, checked against whichever runtime is
//! compiled in (run under both: `bash tests/run.sh`). smol's own types
//! differ on some of them (its `Task` cancels on drop), so these pin the
//! behaviour of natter-runtime's API rather than of either runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::channel::oneshot;
use futures::{AsyncReadExt, AsyncWriteExt};
use natter_runtime::{block_on, sleep, spawn, spawn_blocking, timeout};

const BOUND: Duration = Duration::from_secs(10);

#[test]
fn a_handle_gives_the_task_output() {
    assert_eq!(block_on(spawn(async { 6 * 7 })), 42);
}

#[test]
fn dropping_a_handle_detaches_the_task() {
    let (tx, rx) = oneshot::channel();
    drop(spawn(async move {
        sleep(Duration::from_millis(20)).await;
        let _ = tx.send("ran");
    }));
    assert_eq!(block_on(timeout(BOUND, rx)), Some(Ok("ran")));
}

#[test]
fn spawn_blocking_is_awaitable_like_spawn() {
    let handle: natter_runtime::JoinHandle<u32> = spawn_blocking(|| {
        std::thread::sleep(Duration::from_millis(10));
        7
    });
    assert_eq!(block_on(handle), 7);
}

#[test]
fn timeout_drops_the_future_when_it_fires() {
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = SetOnDrop(dropped.clone());
    let out = block_on(timeout(Duration::from_millis(20), async move {
        let _guard = guard;
        futures::future::pending::<()>().await
    }));
    assert_eq!(out, None);
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(block_on(timeout(BOUND, async { 1 })), Some(1));
}

#[test]
fn a_task_panic_reaches_whoever_awaits_it() {
    let caught = std::panic::catch_unwind(|| {
        block_on(spawn(async {
            panic!("expected: a test of panic propagation");
        }))
    });
    assert!(caught.is_err());
    // The executor survives it.
    assert_eq!(block_on(spawn(async { 1 })), 1);
}

#[test]
fn tcp_bind_connect_accept_clone_and_reset() {
    block_on(async {
        let listener = Arc::new(natter_runtime::bind("127.0.0.1:0", 16).unwrap());
        let addr = listener.local_addr().unwrap();
        let accept = spawn({
            let listener = listener.clone();
            async move { listener.accept().await.unwrap() }
        });
        let mut client = timeout(BOUND, natter_runtime::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let (server, peer) = timeout(BOUND, accept).await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(server.local_addr().unwrap(), client.peer_addr().unwrap());
        client.set_nodelay(true).unwrap();

        // A clone writes on the same socket.
        let mut writer = server.clone();
        writer.write_all(b"hello").await.unwrap();
        writer.flush().await.unwrap();
        let mut buf = [0; 5];
        timeout(BOUND, client.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"hello");

        // From a chosen source address.
        let local = "127.0.0.1".parse().unwrap();
        let other = timeout(BOUND, natter_runtime::connect_from(local, addr))
            .await
            .unwrap();
        // Nobody accepts it, but the listen backlog takes the connect.
        let other = other.unwrap();
        assert_eq!(other.local_addr().unwrap().ip(), local);
        natter_runtime::reset_on_close(&other).unwrap();

        // `close` only flushes (async-std's behaviour, kept under smol):
        // no end-of-stream for the peer until `shutdown`.
        drop(writer);
        let mut server = server;
        server.close().await.unwrap();
        let mut one = [0; 1];
        let early = timeout(Duration::from_millis(100), client.read(&mut one)).await;
        assert!(early.is_none(), "close sent something: {early:?}");
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        timeout(BOUND, client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    });
}
