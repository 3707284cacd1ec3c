//! The Origin rule (PROTOCOL.md, Transport, "Origin"), over real sockets:
//! an upgrade carrying `Origin` is accepted when that origin's host and
//! port are the request's `Host` (or it is listed with `--allowed-origin`),
//! else refused with 403; no `Origin` is accepted; no `Host` is 400.
//!
//! Each test runs a witness pair (which sends no Origin, like any
//! non-browser client) that must lose nothing, and ends with the server's
//! counters back to zero.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use futures::AsyncWriteExt;
use natter_tests::hostile::{Witness, WitnessOpts};
use natter_tests::{
    Client, Config, HttpResponse, TestServer, bounded, http_exchange, read_http_head, start,
};

/// An upgrade request with the given `Host` and `Origin` header values
/// (each left out when `None`).
fn upgrade(nick: &str, host: Option<&str>, origin: Option<&str>) -> String {
    let mut req = format!("GET /ws?nick={nick} HTTP/1.1\r\n");
    if let Some(host) = host {
        req.push_str(&format!("Host: {host}\r\n"));
    }
    if let Some(origin) = origin {
        req.push_str(&format!("Origin: {origin}\r\n"));
    }
    req.push_str(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    req
}

/// Upgrades with these headers, expects the 101 and the welcome, closes.
async fn assert_accepted(server: &TestServer, host: Option<&str>, origin: Option<&str>) {
    let nick = "visitor";
    let mut tcp = bounded("TCP connect", natter_runtime::connect(server.addr()))
        .await
        .expect("TCP connect");
    bounded(
        "write the upgrade",
        tcp.write_all(upgrade(nick, host, origin).as_bytes()),
    )
    .await
    .expect("write the upgrade");
    let resp = read_http_head(&mut tcp).await;
    assert_eq!(
        resp.status, 101,
        "Host {host:?}, Origin {origin:?} was refused: {}",
        resp.head
    );
    let mut client = Client::from_upgraded(tcp, resp.leftover).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["nick"], nick, "{welcome}");
    client.close().await;
}

/// Upgrades with these headers and expects `status` with a text body.
async fn assert_refused(
    server: &TestServer,
    host: Option<&str>,
    origin: Option<&str>,
    status: u16,
) -> HttpResponse {
    let req = upgrade("visitor", host, origin);
    let resp = http_exchange(server.addr(), req.as_bytes()).await;
    assert_eq!(
        resp.status, status,
        "Host {host:?}, Origin {origin:?}: {}",
        resp.head
    );
    assert_eq!(resp.header("Connection"), Some("close"), "{}", resp.head);
    assert!(
        resp.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{}",
        resp.head
    );
    resp
}

/// Starts a server and a chatting witness pair.
async fn with_witness(config: Config) -> (TestServer, Witness) {
    let opts = WitnessOpts::new("w", "lobby", &config);
    let server = start(config).await;
    let mut witness = Witness::start(&server.url(), opts).await;
    witness.wait_said(3).await;
    (server, witness)
}

/// Stops the witness (asserting it lost nothing) and checks that the
/// server holds nothing once it is gone.
async fn finish(server: TestServer, witness: Witness) {
    let report = witness.finish().await;
    assert!(report.said >= 3);
    report.close().await;
    server.assert_idle().await;
    assert_eq!(server.stats().await.per_ip_addresses, 0);
    assert_eq!(server.stop().await, 0);
}

#[test]
fn same_origin_is_accepted_and_any_other_origin_gets_403() {
    natter_runtime::block_on(async {
        let (server, witness) = with_witness(Config::local()).await;
        let port = server.addr().port();
        let here = format!("127.0.0.1:{port}");

        // No Origin: not a browser, accepted (with or without a port in Host).
        assert_accepted(&server, Some(&here), None).await;
        assert_accepted(&server, Some("chat.example"), None).await;

        // Same host and port; the scheme is not compared.
        for (host, origin) in [
            (here.clone(), format!("http://127.0.0.1:{port}")),
            (here.clone(), format!("https://127.0.0.1:{port}")),
            (
                format!("localhost:{port}"),
                format!("http://LocalHost:{port}"),
            ),
            (
                format!("LOCALHOST:{port}"),
                format!("ws://localhost:{port}"),
            ),
            // A missing port is the Origin scheme's default, on both sides.
            ("chat.example".into(), "https://chat.example".into()),
            ("chat.example".into(), "https://chat.example:443".into()),
            ("chat.example:443".into(), "wss://chat.example".into()),
            ("chat.example:80".into(), "http://chat.example".into()),
            ("Chat.Example".into(), "http://chat.example:80".into()),
            // IPv6 hosts in brackets, compared as addresses.
            (format!("[::1]:{port}"), format!("http://[::1]:{port}")),
            (format!("[::1]:{port}"), format!("http://[0:0::1]:{port}")),
        ] {
            assert_accepted(&server, Some(&host), Some(&origin)).await;
        }

        // Another host, another port, another default port: 403.
        for (host, origin) in [
            (here.clone(), "http://evil.example".to_owned()),
            (here.clone(), format!("http://evil.example:{port}")),
            (here.clone(), format!("http://127.0.0.1:{}", port ^ 1)),
            (here.clone(), format!("http://localhost:{port}")),
            (here.clone(), "http://127.0.0.1".to_owned()),
            ("chat.example".into(), "http://chat.example:443".into()),
            ("chat.example".into(), "https://chat.example:80".into()),
            ("chat.example:8080".into(), "http://chat.example".into()),
            (format!("[::1]:{port}"), format!("http://[::2]:{port}")),
            (format!("[::1]:{port}"), format!("http://127.0.0.1:{port}")),
            // Not an origin, or a scheme with no default port.
            (here.clone(), format!("http://127.0.0.1:{port}/")),
            (here.clone(), format!("127.0.0.1:{port}")),
            (here.clone(), format!("file://127.0.0.1:{port}")),
            (
                "chat.example".into(),
                "chrome-extension://chat.example".into(),
            ),
            // Sandboxed pages and local files: refused unless listed.
            (here.clone(), "null".to_owned()),
        ] {
            let resp = assert_refused(&server, Some(&host), Some(&origin), 403).await;
            assert!(resp.header("Retry-After").is_none(), "{}", resp.head);
        }

        // No Host: 400, with or without an Origin.
        assert_refused(&server, None, None, 400).await;
        assert_refused(&server, None, Some("http://127.0.0.1"), 400).await;
        // Two Hosts cannot be judged either.
        let two_hosts = upgrade("visitor", Some(&here), None).replacen(
            "\r\n",
            &format!("\r\nHost: {here}\r\n"),
            1,
        );
        let resp = http_exchange(server.addr(), two_hosts.as_bytes()).await;
        assert_eq!(resp.status, 400, "{}", resp.head);

        finish(server, witness).await;
    })
}

#[test]
fn a_websocket_client_sending_an_origin_is_judged_like_a_browser() {
    natter_runtime::block_on(async {
        let (server, witness) = with_witness(Config::local()).await;
        let url = server.url_nick("page");
        let connect = async |origin: &str| {
            let mut request = url.as_str().into_client_request().unwrap();
            request
                .headers_mut()
                .insert("Origin", HeaderValue::from_str(origin).unwrap());
            let tcp = natter_runtime::connect(server.addr()).await.unwrap();
            bounded(
                "a WebSocket handshake",
                async_tungstenite::client_async(request, tcp),
            )
            .await
        };
        // tungstenite sends `Host: 127.0.0.1:PORT`.
        let (mut ws, _) = connect(&format!("http://{}", server.addr()))
            .await
            .expect("a same-origin page connects");
        futures::SinkExt::close(&mut ws).await.unwrap();
        let refused = connect("http://evil.example").await;
        match refused {
            Err(async_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403)
            }
            other => panic!("a cross-origin page was not refused with 403: {other:?}"),
        }
        finish(server, witness).await;
    })
}

#[test]
fn listed_origins_are_accepted_and_others_still_refused() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.allowed_origins = vec!["https://App.Example".into(), "null".into()];
        let (server, witness) = with_witness(config).await;
        let here = server.addr().to_string();

        for origin in [
            "https://app.example",
            "https://APP.example:443",
            "null",
            // Same-origin pages still get in.
            &format!("http://{here}"),
        ] {
            assert_accepted(&server, Some(&here), Some(origin)).await;
        }
        for origin in [
            // The scheme is part of a listed origin.
            "http://app.example",
            "https://app.example:8443",
            "https://other.example",
        ] {
            assert_refused(&server, Some(&here), Some(origin), 403).await;
        }
        assert_refused(&server, None, Some("https://app.example"), 400).await;
        finish(server, witness).await;
    })
}

#[test]
fn star_allows_every_origin_but_host_is_still_required() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.allowed_origins = vec!["*".into()];
        let (server, witness) = with_witness(config).await;
        let here = server.addr().to_string();
        for origin in [
            "http://evil.example",
            "null",
            "not an origin at all",
            "chrome-extension://abc",
        ] {
            assert_accepted(&server, Some(&here), Some(origin)).await;
        }
        assert_refused(&server, None, Some("http://evil.example"), 400).await;
        finish(server, witness).await;
    })
}

#[test]
fn a_bad_allowed_origin_stops_the_server_from_starting() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.allowed_origins = vec!["https://app.example/".into()];
        let err = match natter_tests::Server::bind(config).await {
            Ok(_) => panic!("a listed origin with a path was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("https://app.example/"), "{err}");
    })
}
