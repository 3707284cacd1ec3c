//! WebSocket-level rules: binary → 1003, oversize (fragments counted
//! together) → 1009, invalid UTF-8 → 1007, pings answered with pongs.

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use natter_tests::serde_json::json;
use natter_tests::{Client, Config, TestServer, presence_of, start};

async fn small_limit() -> TestServer {
    let mut config = Config::local();
    config.max_message_bytes = 1024;
    config.rate = 0;
    start(config).await
}

/// A `who` request padded (with an ignored field) to exactly `len` bytes.
fn padded_request(len: usize, id: u32) -> String {
    let base = json!({"type": "who", "room": "r", "id": id, "pad": ""}).to_string();
    assert!(base.len() <= len);
    let pad = "p".repeat(len - base.len());
    let text = json!({"type": "who", "room": "r", "id": id, "pad": pad}).to_string();
    assert_eq!(text.len(), len);
    text
}

#[test]
fn binary_message_closes_1003_whatever_the_rate() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 1;
        config.burst = 1;
        let server = start(config).await;
        let mut watcher = server.client("watcher").await;
        watcher.join("room").await;
        let mut c = server.client("bin").await;
        c.join("room").await; // uses up the only token
        watcher.recv().await; // bin's join
        c.send_raw(Message::binary(b"{\"type\":\"rooms\"}".to_vec()))
            .await;
        let (code, reason, frames) = c.read_until_close().await;
        assert_eq!(code, 1003, "reason {reason:?}");
        assert!(
            frames.is_empty(),
            "no reply to a binary message: {frames:?}"
        );
        // The others hear that it left.
        let got = watcher.recv().await;
        assert_eq!(presence_of(&got).1, "leave");
        drop(c);
        drop(watcher);
        server.assert_idle().await;
    })
}

#[test]
fn message_over_the_limit_closes_1009_and_at_the_limit_is_served() {
    natter_runtime::block_on(async {
        let server = small_limit().await;
        let (mut c, welcome) = Client::connect(&server.url()).await;
        assert_eq!(welcome["limits"]["max_message_bytes"], 1024);
        // Exactly 1024 bytes is allowed.
        c.send_text(&padded_request(1024, 1)).await;
        let reply = c.recv().await;
        assert_eq!(
            (&reply["type"], &reply["id"]),
            (&json!("ok"), &json!(1)),
            "{reply}"
        );
        // 2000 bytes is not.
        c.send_text(&padded_request(2000, 2)).await;
        let (code, reason, frames) = c.read_until_close().await;
        assert_eq!(code, 1009, "reason {reason:?}");
        assert!(frames.is_empty(), "{frames:?}");
    })
}

#[test]
fn fragments_are_counted_together() {
    natter_runtime::block_on(async {
        let server = small_limit().await;
        // Under the limit in total: reassembled and served.
        let (mut c, _) = Client::connect(&server.url()).await;
        let text = padded_request(900, 7);
        let bytes = text.as_bytes();
        c.send_fragment(bytes[..300].to_vec(), true, false).await;
        c.send_fragment(bytes[300..600].to_vec(), false, false)
            .await;
        c.send_fragment(bytes[600..].to_vec(), false, true).await;
        let reply = c.recv().await;
        assert_eq!(
            (&reply["type"], &reply["id"]),
            (&json!("ok"), &json!(7)),
            "{reply}"
        );

        // Three fragments of 500 bytes, each under the limit, 1500 in total.
        let text = padded_request(1500, 8);
        let bytes = text.as_bytes();
        c.send_fragment(bytes[..500].to_vec(), true, false).await;
        c.send_fragment(bytes[500..1000].to_vec(), false, false)
            .await;
        // The server may close before the last fragment is read; a failed
        // send is fine, the close frame is what matters.
        let last = Frame::message(bytes[1000..].to_vec(), OpCode::Data(Data::Continue), true);
        let _ = c.try_send_raw(Message::Frame(last)).await;
        let (code, reason, frames) = c.read_until_close().await;
        assert_eq!(code, 1009, "reason {reason:?}");
        assert!(frames.is_empty(), "{frames:?}");
    })
}

#[test]
fn invalid_utf8_closes_1007() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let (mut c, _) = Client::connect(&server.url()).await;
        let mut payload = br#"{"type":"rooms","x":""#.to_vec();
        payload.extend_from_slice(&[0xff, 0xfe, 0xc3]);
        payload.extend_from_slice(br#""}"#);
        c.send_frame(Frame::message(payload, OpCode::Data(Data::Text), true))
            .await;
        let (code, reason, frames) = c.read_until_close().await;
        assert_eq!(code, 1007, "reason {reason:?}");
        assert!(frames.is_empty(), "{frames:?}");

        // Invalid UTF-8 split across fragments too.
        let (mut c, _) = Client::connect(&server.url()).await;
        c.send_fragment(
            b"{\"type\":\"rooms\",\"x\":\"\xe2\x82".to_vec(),
            true,
            false,
        )
        .await;
        c.send_fragment(b"\"}".to_vec(), false, true).await;
        let (code, _, _) = c.read_until_close().await;
        assert_eq!(code, 1007);
    })
}

#[test]
fn ping_gets_pong_and_the_connection_goes_on() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut c = server.client("alice").await;
        for payload in [b"".to_vec(), b"hello".to_vec(), vec![0u8, 1, 2, 255]] {
            c.send_raw(Message::Ping(payload.clone().into())).await;
            let got = c.next_message().await;
            match got {
                Some(Message::Pong(p)) => assert_eq!(p.as_ref(), payload.as_slice()),
                other => panic!("expected a pong, got {other:?}"),
            }
        }
        // Pings are not requests: no reply, and the next request is served.
        let (reply, events) = c.request(json!({"type": "rooms"})).await;
        assert_eq!(reply["type"], "ok");
        assert!(events.is_empty(), "{events:?}");
    })
}

#[test]
fn client_close_is_answered_and_frees_everything() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut watcher = server.client("watcher").await;
        watcher.join("room").await;
        let mut c = server.client("leaver").await;
        c.join("room").await;
        watcher.recv().await; // leaver's join
        c.close().await;
        let got = watcher.recv().await;
        assert_eq!(
            presence_of(&got),
            ("room".into(), "leave".into(), "leaver".into(), None)
        );
        watcher.close().await;
        server.assert_idle().await;
    })
}

#[test]
fn a_ping_between_fragments_is_answered_and_a_client_pong_is_not() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut c = server.client("alice").await;
        // A pong the client sends on its own (RFC 6455 allows it as a
        // heartbeat) is not a ping: no pong comes back for it.
        c.send_raw(Message::Pong(b"heartbeat".to_vec().into()))
            .await;
        // A ping inside a fragmented message (control frames may come
        // between fragments) gets its pong, and the message is intact.
        c.send_fragment(b"{\"type\":\"rooms\",".to_vec(), true, false)
            .await;
        c.send_raw(Message::Ping(b"mid".to_vec().into())).await;
        c.send_fragment(b"\"id\":7}".to_vec(), false, true).await;
        let mut pongs = Vec::new();
        let reply = loop {
            match c.next_message().await {
                Some(Message::Pong(p)) => pongs.push(p.to_vec()),
                Some(Message::Text(t)) => {
                    break natter_tests::serde_json::from_str::<natter_tests::serde_json::Value>(
                        t.as_str(),
                    )
                    .unwrap();
                }
                other => panic!("expected a pong or the reply, got {other:?}"),
            }
        };
        assert_eq!(
            (&reply["type"], &reply["id"]),
            (&json!("ok"), &json!(7)),
            "{reply}"
        );
        assert_eq!(pongs, [b"mid".to_vec()], "one pong, for the ping only");
    })
}
