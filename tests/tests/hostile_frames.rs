//! Abusive WebSocket frames, each from a member of the witness's room:
//! oversize → 1009 (also a header announcing 2^62 bytes), a fragmented
//! message whose continuations add up past the limit (a few big fragments,
//! or a thousand one-byte ones) → 1009, invalid UTF-8 → 1007, binary →
//! 1003, and frames that break RFC 6455 itself (unmasked, oversized or
//! fragmented control frames, a reserved opcode, RSV bits, a stray
//! continuation, a close frame with a forbidden code) → closed, with 1002
//! when a close frame is sent (1007 for a close reason that is not UTF-8). The witness pair sees every message and each attacker's
//! `leave`; nothing is left behind.

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use futures::AsyncWriteExt;
use natter_runtime::spawn;
use natter_tests::hostile::{Witness, WitnessOpts, client_frame, raw_upgrade, settle};
use natter_tests::serde_json::json;
use natter_tests::{Client, Config, TestServer, bounded, is_reply, join_task, start};

const LIMIT: usize = 1024;

async fn server() -> (TestServer, Config) {
    let mut config = Config::local();
    config.max_message_bytes = LIMIT;
    config.rate = 0;
    (start(config.clone()).await, config)
}

/// Connects `nick`, joins the lobby and says hello (proving it was a
/// working member before it misbehaved).
async fn member(server: &TestServer, nick: &str) -> Client {
    let mut c = server.client(nick).await;
    c.join("lobby").await;
    c.say("lobby", &format!("hello from {nick}")).await;
    c
}

/// Reads to the close frame; asserts its code and that no reply came.
async fn expect_closed(mut c: Client, what: &str, code: u16) -> String {
    let (got, reason, frames) = c.read_until_close().await;
    assert_eq!(got, code, "{what}: reason {reason:?}");
    assert!(
        !frames.iter().any(is_reply),
        "{what}: a reply to abuse: {frames:?}"
    );
    reason
}

/// Runs one witness, `attacks` concurrently (each a member of the lobby
/// that gets closed), then checks the witness and the counters.
async fn with_witness(
    server: TestServer,
    nicks: &[&str],
    attacks: Vec<natter_runtime::JoinHandle<()>>,
    witness: Witness,
) {
    for a in attacks {
        join_task("an attacker", a).await;
    }
    let report = witness.finish().await;
    assert!(report.said >= 20, "{}", report.said);
    for nick in nicks {
        report.assert_joined_and_left(nick);
        assert_eq!(report.texts_from(nick), [format!("hello from {nick}")]);
    }
    let stats = settle(&server, 2, 2).await;
    assert_eq!(stats.registry.rooms, 1, "{stats:?}");
    report.close().await;
    server.assert_idle().await;
}

#[test]
fn oversize_fragmented_bad_utf8_and_binary_messages_get_their_close_codes() {
    natter_runtime::block_on(async {
        let (server, config) = server().await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;
        let nicks = ["oversize", "bigfrags", "tinyfrags", "badutf8", "binary"];
        let mut clients = Vec::new();
        for nick in nicks {
            clients.push(member(&server, nick).await);
        }
        let mut it = clients.into_iter();

        let mut c = it.next().unwrap();
        let oversize = spawn(async move {
            let text = json!({"type": "who", "room": "lobby", "pad": "x".repeat(4 * LIMIT)});
            c.send_text(&text.to_string()).await;
            expect_closed(c, "a single frame over the limit", 1009).await;
        });

        let mut c = it.next().unwrap();
        let bigfrags = spawn(async move {
            // Each fragment well under the limit; together far over it.
            let chunk = vec![b' '; LIMIT / 2];
            c.send_fragment(b"{\"type\":\"rooms\",\"p\":\"".to_vec(), true, false)
                .await;
            for _ in 0..16 {
                let frame = Frame::message(chunk.clone(), OpCode::Data(Data::Continue), false);
                if c.try_send_raw(Message::Frame(frame)).await.is_err() {
                    break;
                }
            }
            expect_closed(c, "big continuation frames", 1009).await;
        });

        let mut c = it.next().unwrap();
        let tinyfrags = spawn(async move {
            // A thousand and more one-byte continuations.
            c.send_fragment(b"{".to_vec(), true, false).await;
            for _ in 0..3 * LIMIT {
                let frame = Frame::message(b" ".to_vec(), OpCode::Data(Data::Continue), false);
                if c.try_send_raw(Message::Frame(frame)).await.is_err() {
                    break;
                }
            }
            expect_closed(c, "one-byte continuation frames", 1009).await;
        });

        let mut c = it.next().unwrap();
        let badutf8 = spawn(async move {
            let mut payload = br#"{"type":"say","room":"lobby","text":""#.to_vec();
            payload.extend_from_slice(&[0xed, 0xa0, 0x80]); // an encoded surrogate
            payload.extend_from_slice(br#""}"#);
            c.send_frame(Frame::message(payload, OpCode::Data(Data::Text), true))
                .await;
            expect_closed(c, "invalid UTF-8", 1007).await;
        });

        let mut c = it.next().unwrap();
        let binary = spawn(async move {
            let payload = json!({"type": "say", "room": "lobby", "text": "as binary"});
            c.send_raw(Message::binary(payload.to_string().into_bytes()))
                .await;
            expect_closed(c, "a binary message", 1003).await;
        });

        // A frame header announcing 2^62 bytes: refused from the header,
        // nothing of the sort allocated.
        let (c, mut raw) = raw_member(&server, "hugelen").await;
        let hugelen = spawn(async move {
            let mut header = vec![0x81, 0x80 | 127];
            header.extend((1u64 << 62).to_be_bytes());
            header.extend([1, 2, 3, 4]);
            header.extend([b'x'; 100]);
            let _ = bounded("write a frame header", raw.write_all(&header)).await;
            expect_closed(c, "a 2^62-byte frame header", 1009).await;
        });

        let mut nicks = nicks.to_vec();
        nicks.push("hugelen");
        with_witness(
            server,
            &nicks,
            vec![oversize, bigfrags, tinyfrags, badutf8, binary, hugelen],
            witness,
        )
        .await;
    })
}

/// A lobby member whose upgrade was done by hand, so that it can write
/// frames tungstenite would refuse to send. Returns its client (for
/// reading) and a second handle on its socket (for raw writes).
async fn raw_member(server: &TestServer, nick: &str) -> (Client, natter_runtime::TcpStream) {
    let (tcp, leftover) = raw_upgrade(server.addr(), &format!("/ws?nick={nick}")).await;
    let raw = tcp.clone();
    let mut c = Client::from_upgraded(tcp, leftover).await;
    let welcome = c.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["nick"], nick, "{welcome}");
    c.join("lobby").await;
    c.say("lobby", &format!("hello from {nick}")).await;
    (c, raw)
}

#[test]
fn frames_that_break_rfc_6455_close_the_connection() {
    natter_runtime::block_on(async {
        let (server, config) = server().await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;
        let mask = Some([0x11, 0x22, 0x33, 0x44]);
        let who = br#"{"type":"who","room":"lobby","id":99}"#;
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            // RFC 6455 5.1: a client MUST mask every frame.
            ("unmasked", client_frame(0x1, true, who, None), 1002),
            // 5.5: control frames carry at most 125 bytes and are never fragmented.
            ("bigping", client_frame(0x9, true, &[7u8; 200], mask), 1002),
            ("fragping", client_frame(0x9, false, b"hi", mask), 1002),
            // 5.2: opcodes 0x3-0x7 are reserved; RSV bits need an extension.
            ("opcode3", client_frame(0x3, true, b"x", mask), 1002),
            (
                "rsvbits",
                {
                    let mut f = client_frame(0x1, true, who, mask);
                    f[0] |= 0x40;
                    f
                },
                1002,
            ),
            // A continuation with no message to continue.
            ("straycont", client_frame(0x0, true, who, mask), 1002),
            // 7.4: close codes 1005/1006 and those under 1000 are never sent.
            (
                "closecode",
                client_frame(0x8, true, &999u16.to_be_bytes(), mask),
                1002,
            ),
            (
                "close1005",
                client_frame(0x8, true, &1005u16.to_be_bytes(), mask),
                1002,
            ),
            // 5.5.1: a close reason is UTF-8 (invalid UTF-8 is 1007 anywhere).
            (
                "closeutf8",
                client_frame(0x8, true, &[0x03, 0xe8, 0xff, 0xfe], mask),
                1007,
            ),
        ];
        let nicks: Vec<&str> = cases.iter().map(|(n, _, _)| *n).collect();
        let mut attacks = Vec::new();
        for (nick, bytes, want) in cases {
            let (mut c, mut raw) = raw_member(&server, nick).await;
            attacks.push(spawn(async move {
                bounded("write a raw frame", raw.write_all(&bytes))
                    .await
                    .expect("write");
                let (close, frames, err) = c.read_until_close_or_end().await;
                assert!(
                    !frames.iter().any(is_reply),
                    "{nick}: the server answered a broken frame: {frames:?}"
                );
                match close {
                    Some((code, reason)) => {
                        eprintln!("{nick}: closed with {code} {reason:?}");
                        assert_eq!(code, want, "{nick}: reason {reason:?}");
                    }
                    None => eprintln!("{nick}: connection ended without a close frame ({err:?})"),
                }
            }));
        }
        with_witness(server, &nicks, attacks, witness).await;
    })
}
