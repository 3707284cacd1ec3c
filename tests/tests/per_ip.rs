//! The per-address cap (PROTOCOL.md, Transport, "Per-address cap"), over
//! real sockets: with `--max-connections-per-ip N`, an address holding N
//! connections (handshakes in progress included) gets HTTP 429 with
//! `Retry-After`; the refused socket holds no slot; another address is not
//! limited by the first one's count; and the count comes back however a
//! connection ends.
//!
//! Clients bind to 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback on
//! Linux) to play two addresses; the witness pair connects from 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};

use async_tungstenite::tungstenite::Message;
use futures::AsyncWriteExt;
use natter_runtime::TcpStream;
use natter_tests::hostile::{Witness, WitnessOpts};
use natter_tests::serde_json::json;
use natter_tests::{
    Client, Config, HttpResponse, TestServer, bounded, read_http_head, start, upgrade_request,
};

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const WITNESS_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A TCP connection from `ip` that has sent nothing yet.
async fn tcp_from(ip: IpAddr, server: &TestServer) -> TcpStream {
    let tcp = bounded(
        "TCP connect",
        natter_runtime::connect_from(ip, server.addr()),
    )
    .await
    .expect("TCP connect");
    let _ = tcp.set_nodelay(true);
    tcp
}

/// Sends an upgrade from `ip` and reads the answer's head.
async fn upgrade_from(ip: IpAddr, server: &TestServer, nick: &str) -> (TcpStream, HttpResponse) {
    let mut tcp = tcp_from(ip, server).await;
    let req = upgrade_request(&format!("/ws?nick={nick}"), "");
    bounded("write the upgrade", tcp.write_all(req.as_bytes()))
        .await
        .expect("write the upgrade");
    let resp = read_http_head(&mut tcp).await;
    (tcp, resp)
}

/// A connected client from `ip`, welcome read.
async fn client_from(ip: IpAddr, server: &TestServer, nick: &str) -> Client {
    let mut client = Client::try_connect_from(ip, &server.url_nick(nick))
        .await
        .unwrap_or_else(|e| panic!("{nick} from {ip} was refused: {e}"));
    let welcome = client.recv().await;
    assert_eq!(welcome["nick"], nick, "{welcome}");
    client
}

/// Asserts that `ip` is at its cap: an upgrade gets 429 with a
/// `Retry-After` in seconds, and a WebSocket client is refused too.
async fn assert_429(ip: IpAddr, server: &TestServer) {
    let (_tcp, resp) = upgrade_from(ip, server, "over").await;
    assert_eq!(resp.status, 429, "{ip}: {}", resp.head);
    let retry = resp
        .header("Retry-After")
        .unwrap_or_else(|| panic!("429 without Retry-After: {}", resp.head));
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s > 0),
        "Retry-After: {retry}"
    );
    assert_eq!(resp.header("Connection"), Some("close"), "{}", resp.head);
    let refused = Client::try_connect_from(ip, &server.url_nick("over")).await;
    assert!(refused.is_err(), "{ip}: a client over the cap was accepted");
}

/// Waits until the server holds exactly `conns` slots and tasks (no refusal
/// still being answered) and `addresses` counted addresses.
async fn settle(server: &TestServer, conns: usize, addresses: usize) {
    server
        .wait_stats(
            &format!("{conns} connection(s) from {addresses} address(es)"),
            |s| s.slots_in_use == conns && s.tasks == conns && s.per_ip_addresses == addresses,
        )
        .await;
}

#[test]
fn n_connections_then_429_with_handshakes_counted_and_a_freed_one_reused() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.max_connections_per_ip = 3;
        let opts = WitnessOpts::new("w", "lobby", &config);
        let server = start(config).await;
        let handle = server.handle.clone();
        let mut witness = Witness::start(&server.url(), opts).await;
        witness.wait_said(3).await;
        settle(&server, 2, 1).await;

        // A: two connections and a handshake in progress (nothing sent).
        let mut a1 = client_from(A, &server, "a1").await;
        let a2 = client_from(A, &server, "a2").await;
        let mut pending = tcp_from(A, &server).await;
        settle(&server, 5, 2).await;
        for _ in 0..3 {
            assert_429(A, &server).await;
        }
        // The refused sockets hold no slot and no count once answered.
        settle(&server, 5, 2).await;

        // B is not limited by A's count, but by its own.
        let mut bs = Vec::new();
        for i in 0..3 {
            bs.push(client_from(B, &server, &format!("b{i}")).await);
        }
        assert_429(B, &server).await;
        // Nor is the witness's address (it holds 2 of 3).
        let local = client_from(WITNESS_IP, &server, "local").await;
        assert_429(WITNESS_IP, &server).await;
        settle(&server, 9, 3).await;

        // The handshake in progress completes: it held its place.
        let req = upgrade_request("/ws?nick=a3", "");
        bounded("write the upgrade", pending.write_all(req.as_bytes()))
            .await
            .expect("write the upgrade");
        let resp = read_http_head(&mut pending).await;
        assert_eq!(resp.status, 101, "{}", resp.head);
        let mut a3 = Client::from_upgraded(pending, resp.leftover).await;
        assert_eq!(a3.recv().await["nick"], "a3");
        assert_429(A, &server).await;

        // A's connections work, and a closed one frees its place.
        a1.join("lobby").await;
        a3.join("lobby").await;
        a1.close().await;
        settle(&server, 8, 3).await;
        let mut a4 = client_from(A, &server, "a4").await;
        a4.join("lobby").await;
        assert_429(A, &server).await;

        for c in [a2, a3, a4, local].into_iter().chain(bs) {
            c.close().await;
        }
        settle(&server, 2, 1).await;
        let report = witness.finish().await;
        // a1, a3 and a4 joined the witness's room and left it.
        for nick in ["a1", "a3", "a4"] {
            report.assert_joined_and_left(nick);
        }
        report.close().await;
        server.assert_idle().await;
        assert_eq!(server.stats().await.per_ip_addresses, 0);
        assert_eq!(server.stop().await, 0);
        assert_eq!(handle.stats().await.per_ip_addresses, 0);
    })
}

#[test]
fn the_count_comes_back_however_a_connection_ends() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.max_connections_per_ip = 2;
        config.handshake_timeout = 0.5;
        config.panic_on_text = Some("boom".into());
        let opts = WitnessOpts::new("w", "lobby", &config);
        let server = start(config).await;
        let handle = server.handle.clone();
        let mut witness = Witness::start(&server.url(), opts).await;
        witness.wait_said(3).await;
        settle(&server, 2, 1).await;

        // Each round fills A's two places, checks the cap, ends both one
        // way, and checks that A holds nothing any more.
        let rounds = [
            "closed by the client",
            "reset by the client",
            "closed by the server after a panic (1011)",
            "refused at the handshake (403, 404)",
            "handshake abandoned (EOF) or timed out (408)",
        ];
        for (round, how) in rounds.iter().enumerate() {
            match round {
                0 => {
                    let c1 = client_from(A, &server, "c1").await;
                    let c2 = client_from(A, &server, "c2").await;
                    assert_429(A, &server).await;
                    c1.close().await;
                    c2.close().await;
                }
                1 => {
                    let c1 = client_from(A, &server, "c1").await;
                    let c2 = client_from(A, &server, "c2").await;
                    assert_429(A, &server).await;
                    c1.reset();
                    c2.reset();
                }
                2 => {
                    let mut bombers = Vec::new();
                    for nick in ["c1", "c2"] {
                        let mut c = client_from(A, &server, nick).await;
                        c.join("elsewhere").await;
                        bombers.push(c);
                    }
                    assert_429(A, &server).await;
                    for mut c in bombers {
                        let boom = json!({"type": "say", "room": "elsewhere", "text": "boom"});
                        c.send_raw(Message::text(boom.to_string())).await;
                        let (code, _, _) = c.read_until_close().await;
                        assert_eq!(code, 1011);
                    }
                }
                3 => {
                    // Two sockets wait in their handshakes, then are refused.
                    let mut t1 = tcp_from(A, &server).await;
                    let mut t2 = tcp_from(A, &server).await;
                    settle(&server, 4, 2).await;
                    assert_429(A, &server).await;
                    let port = server.addr().port();
                    let cross =
                        upgrade_request("/ws", &format!("Origin: http://evil.example:{port}\r\n"));
                    t1.write_all(cross.as_bytes()).await.unwrap();
                    assert_eq!(read_http_head(&mut t1).await.status, 403);
                    t2.write_all(upgrade_request("/nope", "").as_bytes())
                        .await
                        .unwrap();
                    assert_eq!(read_http_head(&mut t2).await.status, 404);
                }
                _ => {
                    let t1 = tcp_from(A, &server).await;
                    let mut t2 = tcp_from(A, &server).await;
                    settle(&server, 4, 2).await;
                    assert_429(A, &server).await;
                    drop(t1);
                    // Nothing sent: the handshake timeout answers 408.
                    assert_eq!(read_http_head(&mut t2).await.status, 408);
                }
            }
            let what = format!("round {round}: connections {how}");
            server
                .wait_stats(&what, |s| {
                    s.slots_in_use == 2 && s.tasks == 2 && s.per_ip_addresses == 1
                })
                .await;
        }

        // Both places are free again, and a connection still held at
        // shutdown gives its count back too.
        let mut server = server;
        let c1 = client_from(A, &server, "c1").await;
        let c2 = client_from(A, &server, "c2").await;
        settle(&server, 4, 2).await;
        let report = witness.finish().await;
        report.close().await;
        server.trigger_shutdown();
        for mut c in [c1, c2] {
            assert_eq!(c.expect_close().await.0, 1001);
        }
        assert_eq!(server.join().await, 0);
        let stats = handle.stats().await;
        assert_eq!(
            (stats.slots_in_use, stats.tasks, stats.per_ip_addresses),
            (0, 0, 0),
            "{stats:?}"
        );
    })
}

#[test]
fn off_by_default_one_address_may_hold_many() {
    natter_runtime::block_on(async {
        let config = Config::local();
        assert_eq!(config.max_connections_per_ip, 0);
        let opts = WitnessOpts::new("w", "lobby", &config);
        let server = start(config).await;
        let mut witness = Witness::start(&server.url(), opts).await;
        witness.wait_said(3).await;
        let mut clients = Vec::new();
        for i in 0..20 {
            clients.push(client_from(A, &server, &format!("m{i}")).await);
        }
        let stats = server.stats().await;
        assert_eq!(stats.slots_in_use, 22, "{stats:?}");
        assert_eq!(stats.per_ip_addresses, 0, "nothing is counted when off");
        for c in clients {
            c.close().await;
        }
        let report = witness.finish().await;
        report.close().await;
        server.assert_idle().await;
        assert_eq!(server.stop().await, 0);
    })
}
