//! Slowloris: many sockets trickle an upgrade request that never ends. Each
//! holds a slot only until the handshake timeout, after which the server
//! drops it; meanwhile a witness pair chats undisturbed. At a small cap the
//! trickling sockets fill every slot: real clients get 503 until the
//! timeout frees the slots, then get in again. After the upgrade, the same
//! trick (a frame trickled byte by byte) and plain silence (no frame, no
//! pong) end at the idle timeout with close 1000 "idle timeout".

use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};
use futures::{AsyncReadExt, AsyncWriteExt};
use natter_runtime::{TcpStream, spawn, timeout};
use natter_tests::hostile::{RawWs, Witness, WitnessOpts, scaled, settle};
use natter_tests::serde_json::json;
use natter_tests::{Client, Config, bounded, http_exchange, join_task, start, upgrade_request};

/// A valid-looking upgrade request without its final blank line: the
/// server can never finish reading it.
const PARTIAL: &[u8] = b"GET /ws?nick=loris HTTP/1.1\r\nHost: 127.0.0.1\r\n\
Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// One byte every 50 ms: the whole request would take over 10 s.
const TRICKLE: Duration = Duration::from_millis(50);
/// How long after connecting a trickling socket must have been dropped:
/// the handshake timeout (at most 4 s here) plus generous slack.
const DROP_BOUND: Duration = Duration::from_secs(20);

/// How the server let go of a slowloris socket.
#[derive(Debug)]
struct Dropped {
    /// Bytes of the request we had written when we noticed.
    sent: usize,
    /// "eof", "reset: …" or "write failed: …".
    how: String,
    /// Whatever the server sent before letting go.
    answer: Vec<u8>,
}

/// Connects and trickles [`PARTIAL`] until the server drops the socket,
/// which it must do within [`DROP_BOUND`].
async fn loris(addr: std::net::SocketAddr) -> Dropped {
    let tcp: TcpStream = bounded("slowloris connect", natter_runtime::connect(addr))
        .await
        .expect("slowloris connect");
    let mut reader = tcp.clone();
    let mut writer = tcp;
    let mut answer = Vec::new();
    let mut sent = 0;
    let outcome = {
        let read = pin!(async {
            let mut buf = [0u8; 1024];
            for _ in 0..1000 {
                match reader.read(&mut buf).await {
                    Ok(0) => return "eof".to_owned(),
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        assert!(answer.len() < 64 * 1024, "endless answer to a slowloris");
                    }
                    Err(e) => return format!("reset: {e}"),
                }
            }
            panic!("too many reads on a slowloris socket")
        });
        let write = pin!(async {
            for b in PARTIAL {
                if let Err(e) = writer.write_all(&[*b]).await {
                    return format!("write failed: {e}");
                }
                sent += 1;
                natter_runtime::sleep(TRICKLE).await;
            }
            // Everything but the blank line is out: just wait for the drop.
            futures::future::pending::<String>().await
        });
        match timeout(DROP_BOUND, select(read, write)).await {
            None => None,
            Some(Either::Left((how, _)) | Either::Right((how, _))) => Some(how),
        }
    };
    let how = outcome.unwrap_or_else(|| {
        panic!("a slowloris socket was still open {DROP_BOUND:?} after it connected ({sent} bytes sent)")
    });
    Dropped { sent, how, answer }
}

/// Checks what a dropped slowloris got: nothing, or an HTTP 4xx/5xx.
fn assert_dropped_cleanly(d: &Dropped) {
    assert!(
        d.sent < PARTIAL.len(),
        "the whole request went out before the drop: {d:?}"
    );
    if !d.answer.is_empty() {
        let text = String::from_utf8_lossy(&d.answer);
        assert!(
            text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5"),
            "a slowloris socket got {text:?}"
        );
    }
}

#[test]
fn slowloris_sockets_are_dropped_at_the_handshake_timeout_while_the_chat_goes_on() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.handshake_timeout = 1.0;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        let n = scaled(50);
        let lorises: Vec<_> = (0..n).map(|_| spawn(loris(server.addr()))).collect();
        // Meanwhile, newcomers get in and chat normally.
        let mut newcomer = server.client("newcomer").await;
        newcomer.join("lobby").await;
        newcomer.say("lobby", "hello through the slowloris").await;
        newcomer.close().await;
        let mut how = std::collections::BTreeMap::<String, usize>::new();
        for t in lorises {
            let d = join_task("slowloris socket", t).await;
            assert_dropped_cleanly(&d);
            let kind = d.how.split(':').next().unwrap_or_default().to_owned();
            *how.entry(kind).or_default() += 1;
        }
        eprintln!("{n} slowloris sockets dropped by the server: {how:?}");

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        assert_eq!(
            report.texts_from("newcomer"),
            ["hello through the slowloris"]
        );
        report.assert_joined_and_left("newcomer");
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}

#[test]
fn slowloris_at_a_small_cap_gets_real_clients_503_until_the_timeout_frees_the_slots() {
    natter_runtime::block_on(async {
        let lorises_n = scaled(6);
        let mut config = Config::local();
        // Long enough that the 503 checks below certainly happen while the
        // slowloris sockets still hold their slots (they take milliseconds).
        config.handshake_timeout = 4.0;
        config.max_connections = 2 + lorises_n;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        let lorises: Vec<_> = (0..lorises_n)
            .map(|_| spawn(loris(server.addr())))
            .collect();
        let cap = config.max_connections;
        server
            .wait_stats("the slowloris sockets fill every slot", |s| {
                s.slots_in_use == cap
            })
            .await;

        // Full: real clients are refused with 503 and Retry-After.
        let resp = http_exchange(
            server.addr(),
            upgrade_request("/ws?nick=real", "").as_bytes(),
        )
        .await;
        assert_eq!(resp.status, 503, "{}", resp.head);
        let retry = resp
            .header("Retry-After")
            .unwrap_or_else(|| panic!("no Retry-After: {}", resp.head));
        assert!(retry.parse::<u64>().is_ok(), "Retry-After: {retry}");
        let refused = Client::try_connect(&server.url_nick("real")).await;
        match refused {
            Ok(_) => panic!("a client got in while slowloris held every slot"),
            Err(e) => assert!(e.contains("503"), "{e}"),
        }

        // The handshake timeout frees the slots.
        for t in lorises {
            let d = join_task("slowloris socket", t).await;
            assert_dropped_cleanly(&d);
        }
        settle(&server, 2, 2).await;
        let mut real = server.client("real").await;
        real.join("lobby").await;
        real.say("lobby", "made it").await;
        let who = real.ok(json!({"type": "who", "room": "lobby"})).await;
        assert_eq!(who["members"], json!(["real", "wit-l", "wit-s"]));
        real.close().await;

        let report = witness.finish().await;
        assert_eq!(report.texts_from("real"), ["made it"]);
        report.assert_joined_and_left("real");
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}

#[test]
fn upgraded_clients_that_trickle_a_frame_or_go_silent_are_closed_at_the_idle_timeout() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        // Pinged after 0.5 s of silence, closed after 3 s of it. The
        // witness listener (which only reads) answers the pings.
        config.ping_interval = 0.5;
        config.idle_timeout = 3.0;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        let n = scaled(8);
        let mut tasks = Vec::new();
        for i in 0..2 * n {
            let trickle = i % 2 == 0;
            let nick = if trickle {
                format!("trickle{i}")
            } else {
                format!("silent{i}")
            };
            let (mut ws, welcome) =
                RawWs::connect(server.addr(), &format!("/ws?nick={nick}")).await;
            assert_eq!(welcome["nick"], nick.as_str(), "{welcome}");
            let reply = ws
                .request(json!({"type": "join", "room": "lobby", "id": 1}))
                .await;
            assert_eq!(reply["type"], "ok", "{reply}");
            tasks.push(spawn(async move {
                let mut writer = ws.tcp.clone();
                let write = pin!(async {
                    if !trickle {
                        // Silent: no frame, no pong, ever.
                        return futures::future::pending::<usize>().await;
                    }
                    // A masked 200-byte text frame, one byte per 50 ms.
                    let mut bytes = vec![0x81, 0x80 | 126, 0, 200, 1, 2, 3, 4];
                    bytes.extend(std::iter::repeat_n(b' ' ^ 1, 200));
                    for (k, b) in bytes.iter().enumerate() {
                        if writer.write_all(&[*b]).await.is_err() {
                            return k;
                        }
                        natter_runtime::sleep(TRICKLE).await;
                    }
                    futures::future::pending::<usize>().await
                });
                let read = pin!(ws.read_to_close());
                let (close, pings) = match select(read, write).await {
                    Either::Left((closed, _)) => closed,
                    Either::Right((k, _)) => {
                        panic!("{nick}: writing failed after {k} bytes, before any close")
                    }
                };
                assert_eq!(
                    close,
                    Some((1000, "idle timeout".to_owned())),
                    "{nick} (after {pings} unanswered pings)"
                );
                assert!(pings >= 1, "{nick}: never pinged before the idle close");
                nick
            }));
        }
        let mut closed = Vec::new();
        for t in tasks {
            closed.push(join_task("an idle client", t).await);
        }

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        for nick in &closed {
            report.assert_joined_and_left(nick);
        }
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}
