//! Graceful shutdown loses nothing accepted: queued events, then one
//! `shutdown` event, then close 1001, and `run()` returns.

use async_tungstenite::tungstenite::Message;
use futures::{AsyncReadExt, AsyncWriteExt};
use natter_tests::serde_json::{Value, json};
use natter_tests::{Client, Config, bounded, start};

/// Checks that the frames read before a close end with exactly one
/// `shutdown` event, and returns the frames before it.
fn before_shutdown(frames: &[Value]) -> &[Value] {
    let (last, rest) = frames.split_last().expect("no frame before the close");
    assert_eq!(last["type"], "shutdown", "last frame: {last}");
    assert!(last["reason"].is_string(), "{last}");
    assert!(
        rest.iter().all(|f| f["type"] != "shutdown"),
        "more than one shutdown event"
    );
    rest
}

#[test]
fn members_get_everything_accepted_then_shutdown_then_1001() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        let mut server = start(config).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        alice.join("room").await;
        bob.join("room").await;
        // bob reads nothing from here on; alice's says are all ok'ed.
        let mut seqs = Vec::new();
        for i in 1..=30 {
            seqs.push(alice.say("room", &format!("m{i}")).await);
        }
        alice
            .ok(json!({"type": "whisper", "to": "bob", "text": "last words"}))
            .await;
        server.trigger_shutdown();

        let (code, reason, frames) = bob.read_until_close().await;
        assert_eq!(code, 1001, "reason {reason:?}");
        let rest = before_shutdown(&frames);
        let got: Vec<(u64, String)> = rest
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| {
                (
                    f["seq"].as_u64().unwrap(),
                    f["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want: Vec<(u64, String)> = (1..=30).map(|i| (i, format!("m{i}"))).collect();
        assert_eq!(got, want, "bob lost accepted messages");
        assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
        let whispers: Vec<_> = rest.iter().filter(|f| f["type"] == "whisper").collect();
        assert_eq!(whispers.len(), 1);
        assert_eq!(whispers[0]["text"], "last words");
        // The whisper was sent after the messages, so it comes after them;
        // only alice's leave (her connection may close first) may follow.
        let pos = rest.iter().position(|f| f["type"] == "whisper").unwrap();
        assert!(
            rest[pos + 1..]
                .iter()
                .all(|f| f["type"] == "presence" && f["event"] == "leave" && f["nick"] == "alice"),
            "{:?}",
            &rest[pos + 1..]
        );

        let (code, _, frames) = alice.read_until_close().await;
        assert_eq!(code, 1001);
        let rest = before_shutdown(&frames);
        // alice read everything of her own already; at most bob's leave
        // (bob left once his connection closed) may precede the shutdown.
        assert!(
            rest.iter()
                .all(|f| f["type"] == "presence" && f["event"] == "leave" && f["nick"] == "bob"),
            "{rest:?}"
        );
        drop(alice);
        drop(bob);

        let cut_off = server.join().await;
        assert_eq!(cut_off, 0, "connections cut off");
        let stats = server.stats().await;
        assert_eq!(
            (stats.slots_in_use, stats.tasks, stats.registry.users),
            (0, 0, 0),
            "{stats:?}"
        );
        // The listener is gone: nobody new gets in.
        assert!(Client::try_connect(&server.url()).await.is_err());
    })
}

#[test]
fn replies_in_flight_precede_the_shutdown_event() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        let mut server = start(config).await;
        let mut c = server.client("piper").await;
        c.join("room").await;
        for i in 0..200 {
            let req = json!({"type": "say", "room": "room", "text": format!("t{i}"), "id": i});
            c.feed_raw(Message::text(req.to_string())).await;
        }
        c.flush().await;
        server.trigger_shutdown();
        let (code, _, frames) = c.read_until_close().await;
        assert_eq!(code, 1001);
        let rest = before_shutdown(&frames);
        // Requests still in flight may get no reply, but the replies that
        // came are in order, each after its message echo.
        let mut next = 0;
        for f in rest {
            if f["type"] == "ok" {
                assert_eq!(f["id"], next, "{f}");
                next += 1;
            } else {
                assert_eq!(f["type"], "message", "{f}");
                assert_eq!(f["seq"], next + 1, "{f}");
            }
        }
        drop(c);
        assert_eq!(server.join().await, 0);
    })
}

#[test]
fn run_returns_promptly_without_clients() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let url = server.url();
        // Served before.
        let (c, _) = Client::connect(&url).await;
        c.close().await;
        assert_eq!(server.stop().await, 0);
        assert!(Client::try_connect(&url).await.is_err());
    })
}

#[test]
fn an_unfinished_handshake_is_refused_or_closed_at_shutdown() {
    natter_runtime::block_on(async {
        let mut server = start(Config::local()).await;
        let mut tcp = bounded("connect", natter_runtime::connect(server.addr()))
            .await
            .unwrap();
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        server
            .wait_stats("the handshake holds a slot", |s| s.slots_in_use == 1)
            .await;
        server.trigger_shutdown();
        // Either a 503 or EOF: never a hang.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match bounded("the stalled handshake is answered", tcp.read(&mut chunk)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            assert!(buf.len() < 64 * 1024);
        }
        if !buf.is_empty() {
            let text = String::from_utf8_lossy(&buf);
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        }
        drop(tcp);
        assert_eq!(server.join().await, 0);
    })
}

#[test]
fn the_grace_period_bounds_how_long_run_waits() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.queue = 8;
        config.shutdown_grace = 0.5;
        let mut server = start(config).await;
        let mut c = server.client("stuck").await;
        c.join("room").await;
        let big = "h".repeat(4000);
        for _ in 0..20 {
            c.say("room", &big).await;
        }
        // About 33 MB of join replies, never read: the connection cannot
        // finish delivering them, so shutdown has to give up on it.
        for i in 0..400 {
            let req = json!({"type": "join", "room": "room", "id": i});
            c.feed_raw(Message::text(req.to_string())).await;
        }
        c.flush().await;
        server
            .wait_stats("the client is connected", |s| s.registry.users == 1)
            .await;
        server.trigger_shutdown();
        let cut_off = server.join().await;
        assert_eq!(cut_off, 1, "run() should report the stuck connection");
        drop(c);
    })
}
