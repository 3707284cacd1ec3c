//! Garbage instead of HTTP: random bytes, a TLS ClientHello, an HTTP/2
//! preface, NUL floods, endless header lines, too many headers each get an HTTP error
//! (400, or the status the rules fix) or a plain close — never a hang, never
//! a slot kept — and a plain GET on /ws without upgrade headers gets a 4xx.
//! A witness pair chats throughout.

// `x % n == 0` rather than `is_multiple_of` (Rust 1.87): the workspace
// declares rust-version 1.85.
#![allow(clippy::manual_is_multiple_of)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use natter_runtime::{spawn, timeout};
use natter_tests::hostile::{Rng, Witness, WitnessOpts, scaled, settle};
use natter_tests::{Config, bounded, http_exchange, join_task, start};

/// What the server did with a garbage request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// An HTTP status line with this status.
    Status(u16),
    /// The connection closed (EOF or reset) with nothing sent.
    Closed,
}

/// Writes `bytes`, half-closes (so a request the server is still waiting
/// on ends in EOF instead of the handshake timeout), and reads the answer
/// to the end, bounded.
async fn throw(addr: SocketAddr, bytes: Vec<u8>) -> Answer {
    let mut tcp = bounded("TCP connect", natter_runtime::connect(addr))
        .await
        .expect("TCP connect");
    // The server may answer (and stop reading) before all of it is written.
    let _ = bounded("write the garbage", tcp.write_all(&bytes)).await;
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    for _ in 0..10_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, tcp.read(&mut buf)).await {
            None => panic!(
                "no answer and no close within 15 s to {} garbage bytes; got {:?}",
                bytes.len(),
                String::from_utf8_lossy(&got)
            ),
            Some(Ok(0)) | Some(Err(_)) => break,
            Some(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                assert!(got.len() < 64 * 1024, "endless answer to garbage");
            }
        }
    }
    if got.is_empty() {
        return Answer::Closed;
    }
    let text = String::from_utf8_lossy(&got);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    assert!(text.contains("\r\n\r\n"), "incomplete answer: {text:?}");
    Answer::Status(status)
}

/// Whether `b` may start an HTTP method token (or is skipped as a leading
/// empty line): garbage starting with anything else is plainly malformed.
fn could_start_a_request(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~\r\n".contains(&b)
}

/// A TLS 1.2/1.3 ClientHello record, as a browser sends to an https URL
/// pointed at a plain-HTTP port.
fn client_hello(rng: &mut Rng) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend(rng.bytes(32)); // random
    body.push(32);
    body.extend(rng.bytes(32)); // session id
    body.extend([0x00, 0x04, 0x13, 0x01, 0x13, 0x02]); // cipher suites
    body.extend([0x01, 0x00]); // compression: null
    let sni = b"\x00\x00\x00\x0e\x00\x0c\x00\x00\x09localhost";
    body.extend((sni.len() as u16).to_be_bytes());
    body.extend(sni);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((body.len() as u16).to_be_bytes());
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[test]
fn garbage_gets_an_http_error_or_a_close_and_holds_no_slot() {
    natter_runtime::block_on(async {
        let config = Config::local();
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;
        let addr = server.addr();
        let mut rng = Rng::new(0x5eed_0f6a_7ba6);

        // Fixed cases with the answer the rules fix for them.
        let mut fixed: Vec<(&str, Vec<u8>, Answer)> = vec![
            (
                "TLS ClientHello",
                client_hello(&mut rng),
                Answer::Status(400),
            ),
            (
                "HTTP/2 preface",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                Answer::Status(505),
            ),
            (
                "16 KiB of NUL bytes",
                vec![0u8; 16 * 1024],
                Answer::Status(400),
            ),
            (
                "SSH banner",
                b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
                Answer::Status(400),
            ),
            (
                "an endless header line",
                {
                    let mut v = b"GET /ws HTTP/1.1\r\nX-Long: ".to_vec();
                    v.extend(std::iter::repeat_n(b'a', 20_000));
                    v
                },
                Answer::Status(431),
            ),
            (
                "a lone blank line then EOF",
                b"\r\n".to_vec(),
                Answer::Closed,
            ),
            ("nothing at all, then EOF", Vec::new(), Answer::Closed),
            (
                "65 header lines",
                {
                    let mut v = b"GET /ws HTTP/1.1\r\n".to_vec();
                    for i in 0..65 {
                        v.extend(format!("X-H{i}: v\r\n").into_bytes());
                    }
                    v.extend(b"\r\n");
                    v
                },
                Answer::Status(431),
            ),
            (
                "a 9 KiB request target",
                format!(
                    "GET /ws?nick={} HTTP/1.1\r\nHost: x\r\n\r\n",
                    "a".repeat(9 * 1024)
                )
                .into_bytes(),
                Answer::Status(431),
            ),
        ];
        // Random garbage, some with a first byte no request can start with.
        let randoms = scaled(30);
        for i in 0..randoms {
            let len = 1 + rng.below(6000) as usize;
            let mut bytes = rng.bytes(len);
            if i % 2 == 0 {
                while could_start_a_request(bytes[0]) {
                    bytes[0] = rng.next_u64() as u8;
                }
            }
            fixed.push(("random bytes", bytes, Answer::Status(0)));
        }

        // All at once.
        let tasks: Vec<_> = fixed
            .into_iter()
            .map(|(what, bytes, expected)| {
                let first = bytes.first().copied();
                spawn(async move { (what, first, expected, throw(addr, bytes).await) })
            })
            .collect();
        let mut random_answers = std::collections::BTreeMap::<String, usize>::new();
        for t in tasks {
            let (what, first, expected, got) = join_task("a garbage exchange", t).await;
            match expected {
                Answer::Status(0) => {
                    // Random: 400 when the first byte already rules out a
                    // request; otherwise any 4xx/505 or a plain close.
                    if first.is_some_and(|b| !could_start_a_request(b)) {
                        assert_eq!(got, Answer::Status(400), "{what} starting {first:?}");
                    } else if let Answer::Status(s) = got {
                        assert!((400..500).contains(&s) || s == 505, "{what}: {s}");
                    }
                    *random_answers.entry(format!("{got:?}")).or_default() += 1;
                }
                expected => assert_eq!(got, expected, "{what}"),
            }
        }
        eprintln!("answers to {randoms} random garbage requests: {random_answers:?}");

        // A plain GET on /ws, no upgrade headers: a 4xx status, not a hang.
        let resp = http_exchange(addr, b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        assert!((400..500).contains(&resp.status), "{}", resp.head);
        assert_eq!(resp.status, 426, "{}", resp.head);

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}
