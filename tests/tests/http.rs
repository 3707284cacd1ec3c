//! The HTTP side: every refused upgrade gets a clear status, and the `nick`
//! query parameter never refuses a connection.

use futures::{AsyncReadExt, AsyncWriteExt};
use natter_tests::serde_json::json;
use natter_tests::{Client, Config, bounded, http_exchange, start, upgrade_request};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[test]
fn other_paths_get_404() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        // Upgrades aimed at the pages' paths too: only /ws upgrades.
        for path in [
            "/",
            "/healthz",
            "/metrics",
            "/wsx",
            "/ws/",
            "/chat",
            "/WS",
            "/index.html",
            "/ws2?nick=a",
        ] {
            let resp = http_exchange(server.addr(), upgrade_request(path, "").as_bytes()).await;
            assert_eq!(resp.status, 404, "path {path}: {}", resp.head);
        }
        // A plain GET of another path, without upgrade headers.
        let resp = http_exchange(server.addr(), b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(resp.status, 404, "{}", resp.head);
        server.assert_idle().await;
    })
}

#[test]
fn broken_upgrades_on_ws_get_4xx() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let no_upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_owned();
        let no_connection = upgrade_request("/ws", "").replace("Connection: Upgrade\r\n", "");
        let no_upgrade_header = upgrade_request("/ws", "").replace("Upgrade: websocket\r\n", "");
        let wrong_version = upgrade_request("/ws", "").replace("Version: 13", "Version: 8");
        let no_version = upgrade_request("/ws", "").replace("Sec-WebSocket-Version: 13\r\n", "");
        let no_key =
            upgrade_request("/ws", "").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "");
        let bad_key = upgrade_request("/ws", "").replace(KEY, "short");
        let post = upgrade_request("/ws", "Content-Length: 0\r\n").replacen("GET", "POST", 1);
        let put = upgrade_request("/ws", "Content-Length: 0\r\n").replacen("GET", "PUT", 1);
        let http10 = upgrade_request("/ws", "").replace("HTTP/1.1", "HTTP/1.0");
        for (what, request, status) in [
            ("no upgrade headers", no_upgrade, 426),
            ("no Connection header", no_connection, 426),
            ("no Upgrade header", no_upgrade_header, 426),
            ("wrong version", wrong_version, 426),
            ("no version", no_version, 426),
            ("no key", no_key, 400),
            ("malformed key", bad_key, 400),
            ("POST", post, 405),
            ("PUT", put, 405),
            ("HTTP/1.0", http10, 505),
        ] {
            let resp = http_exchange(server.addr(), request.as_bytes()).await;
            assert_eq!(resp.status, status, "{what}: {}", resp.head);
            if status == 426 && what == "wrong version" {
                assert_eq!(
                    resp.header("Sec-WebSocket-Version"),
                    Some("13"),
                    "{}",
                    resp.head
                );
            }
        }
        server.assert_idle().await;
    })
}

#[test]
fn garbage_gets_400() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        for garbage in [
            &b"\x01\x02\x03\x04\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nBad Header Line\r\n\r\n",
            b"GET\r\n\r\n",
        ] {
            let resp = http_exchange(server.addr(), garbage).await;
            assert_eq!(resp.status, 400, "{garbage:?}: {}", resp.head);
        }
        server.assert_idle().await;
    })
}

#[test]
fn a_socket_that_never_finishes_its_handshake_is_let_go() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.handshake_timeout = 0.3;
        let server = start(config).await;
        let mut tcp = bounded("connect", natter_runtime::connect(server.addr()))
            .await
            .unwrap();
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // The server gives up on us: we read EOF (or a reset), never hang.
        let mut buf = [0u8; 256];
        let mut total = 0;
        loop {
            match bounded("the server drops a stalled handshake", tcp.read(&mut buf)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n;
                    assert!(total < 64 * 1024, "endless answer");
                }
            }
        }
        drop(tcp);
        server.assert_idle().await;
        // The server still serves others.
        let _c = server.client("alice").await;
    })
}

#[test]
fn query_nick_is_used_or_replaced_by_a_guest_nick_with_nick_error() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        // Percent-decoded.
        let (_alice, welcome) = Client::connect(&server.url_nick("al%69ce")).await;
        assert_eq!(welcome["nick"], "alice");
        assert!(welcome.get("nick_error").is_none());

        for (query, code) in [
            ("", "invalid_nick"),
            ("bad%20nick", "invalid_nick"),
            ("%D0%B0lice", "invalid_nick"),
            (&"x".repeat(33), "invalid_nick"),
            ("alice", "nick_taken"),
            ("ALICE", "nick_taken"),
        ] {
            let (_c, welcome) = Client::connect(&server.url_nick(query)).await;
            let nick = welcome["nick"].as_str().unwrap();
            assert!(nick.starts_with("guest-"), "?nick={query}: {welcome}");
            assert_eq!(welcome["nick_error"], code, "?nick={query}: {welcome}");
        }
        // The connection with the refused nick works normally.
        let (mut c, welcome) = Client::connect(&server.url_nick("")).await;
        c.join("room").await;
        let who = c.ok(json!({"type": "who", "room": "room"})).await;
        assert_eq!(who["members"], json!([welcome["nick"]]));
    })
}

#[test]
fn early_frames_sent_with_the_upgrade_are_not_lost() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut tcp = bounded("connect", natter_runtime::connect(server.addr()))
            .await
            .unwrap();
        // The upgrade request and a masked text frame in one write.
        let payload = br#"{"type":"rooms","id":42}"#;
        let mask = [1u8, 2, 3, 4];
        let mut bytes = upgrade_request("/ws", "").into_bytes();
        bytes.push(0x81);
        bytes.push(0x80 | payload.len() as u8);
        bytes.extend_from_slice(&mask);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        tcp.write_all(&bytes).await.unwrap();
        let resp = natter_tests::read_http_head(&mut tcp).await;
        assert_eq!(resp.status, 101, "{}", resp.head);
        assert_eq!(
            resp.header("Sec-WebSocket-Accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{}",
            resp.head
        );
        // Read frames (unmasked, from the server) until the reply to id 42.
        let mut buf = resp.leftover.clone();
        let mut chunk = [0u8; 4096];
        let found = bounded("the reply to the early frame", async {
            loop {
                let text = String::from_utf8_lossy(&buf);
                if let Some(reply) = text.find(r#""id":42"#) {
                    // The welcome is the first frame, even before the reply.
                    let welcome = text.find(r#""type":"welcome""#);
                    return welcome.is_some_and(|w| w < reply) && text.contains(r#""type":"ok""#);
                }
                assert!(buf.len() < 1 << 20);
                let n = tcp.read(&mut chunk).await.unwrap();
                assert!(n > 0, "EOF before the reply");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        assert!(found, "reply: {:?}", String::from_utf8_lossy(&buf));
    })
}
