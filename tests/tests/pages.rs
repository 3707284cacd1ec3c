//! Plain HTTP on the chat port (PROTOCOL.md "Plain HTTP on the same port"):
//! the chat page, the health check, the metrics, 404/405 elsewhere, and
//! that a page request holds no connection slot once answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use futures::{AsyncReadExt, AsyncWriteExt};
use natter_runtime::timeout;
use natter_tests::{
    Client, Config, HttpResponse, RECV_TIMEOUT, bounded, http_exchange, read_http_head, start,
    upgrade_request,
};

/// Sends `request` on a fresh connection and reads the whole answer (the
/// server closes after it), bounded in time and size.
async fn fetch(addr: SocketAddr, request: &str) -> (HttpResponse, Vec<u8>) {
    let mut tcp = bounded("TCP connect", natter_runtime::connect(addr))
        .await
        .expect("TCP connect");
    bounded("write the request", tcp.write_all(request.as_bytes()))
        .await
        .expect("write the request");
    let head = read_http_head(&mut tcp).await;
    let mut body = head.leftover.clone();
    let rest = timeout(RECV_TIMEOUT, async {
        let mut chunk = [0u8; 4096];
        while body.len() < 4 * 1024 * 1024 {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        body
    })
    .await
    .expect("the server closes after its answer");
    (head, rest)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

#[test]
fn the_chat_page_is_served_whole_with_nothing_from_elsewhere() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let (head, body) = fetch(server.addr(), &get("/")).await;
        assert_eq!(head.status, 200, "{}", head.head);
        assert!(
            head.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{}",
            head.head
        );
        let length: usize = head
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("a Content-Length");
        assert_eq!(body.len(), length);
        let page = String::from_utf8(body).expect("the page is UTF-8");
        assert!(page.contains("<html"), "not an HTML page");
        // No external resources: nothing fetched from another origin.
        for external in [
            "src=\"http",
            "href=\"http",
            "src='http",
            "url(http",
            "@import",
        ] {
            assert!(!page.contains(external), "the page loads {external}…");
        }
        // HEAD: the same head, no body.
        let (head_only, body) = fetch(server.addr(), &get("/").replacen("GET", "HEAD", 1)).await;
        assert_eq!(head_only.status, 200);
        assert_eq!(
            head_only.header("content-length"),
            Some(length.to_string().as_str())
        );
        assert!(body.is_empty(), "HEAD got a body");
        server.assert_idle().await;
    })
}

#[test]
fn other_paths_and_methods_get_404_and_405() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        for path in ["/index.html", "/healthz/", "/metrics.txt", "/favicon.ico"] {
            let resp = http_exchange(server.addr(), get(path).as_bytes()).await;
            assert_eq!(resp.status, 404, "{path}: {}", resp.head);
        }
        // HEAD of a missing page: the status and headers, no body.
        let (head, body) = fetch(server.addr(), &get("/nope").replacen("GET", "HEAD", 1)).await;
        assert_eq!(head.status, 404, "{}", head.head);
        assert!(head.header("content-length").is_some(), "{}", head.head);
        assert!(body.is_empty(), "HEAD got a body: {body:?}");
        for path in ["/", "/healthz", "/metrics"] {
            let post = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
            let resp = http_exchange(server.addr(), post.as_bytes()).await;
            assert_eq!(resp.status, 405, "POST {path}: {}", resp.head);
            assert!(resp.header("allow").is_some_and(|a| a.contains("GET")));
        }
        server.assert_idle().await;
    })
}

#[test]
fn page_requests_hold_no_slot_once_answered() {
    natter_runtime::block_on(async {
        // One connection slot: the pages still answer one after another,
        // and a chat connection still gets the slot afterwards.
        let server = start(Config {
            max_connections: 1,
            ..Config::local()
        })
        .await;
        for _ in 0..5 {
            for path in ["/", "/healthz", "/metrics"] {
                let (head, _) = fetch(server.addr(), &get(path)).await;
                assert_eq!(head.status, 200, "{path}: {}", head.head);
            }
        }
        server
            .wait_stats("every page answered and let go", |s| {
                s.slots_in_use == 0 && s.tasks == 0
            })
            .await;
        let (chat, _) = Client::connect(&server.url()).await;
        // With the one slot taken, the health check is still answered (on
        // the refusal path), not refused as "full".
        let (head, body) = fetch(server.addr(), &get("/healthz")).await;
        assert_eq!((head.status, body.as_slice()), (200, &b"ok"[..]));
        chat.close().await;
        server.assert_idle().await;
    })
}

#[test]
fn healthz_turns_503_once_shutdown_begins_while_the_server_still_answers() {
    natter_runtime::block_on(async {
        let mut server = start(Config::local()).await;
        let (head, body) = fetch(server.addr(), &get("/healthz")).await;
        assert_eq!((head.status, body.as_slice()), (200, &b"ok"[..]));

        // Connections opened before shutdown whose requests are sent after
        // it began: a server that is shutting down still reads a request
        // that arrives within 2 s (LAST_REQUEST_WAIT) and answers it. The
        // requests here are written at once; 2 s is the generous bound.
        let mut health = bounded("connect", natter_runtime::connect(server.addr()))
            .await
            .expect("connect");
        let mut upgrade = bounded("connect", natter_runtime::connect(server.addr()))
            .await
            .expect("connect");
        server
            .wait_stats("both sockets accepted", |s| s.tasks == 2)
            .await;
        server.trigger_shutdown();
        bounded("write", health.write_all(get("/healthz").as_bytes()))
            .await
            .expect("write");
        let resp = read_http_head(&mut health).await;
        assert_eq!(resp.status, 503, "{}", resp.head);
        bounded(
            "write",
            upgrade.write_all(upgrade_request("/ws", "").as_bytes()),
        )
        .await
        .expect("write");
        let resp = read_http_head(&mut upgrade).await;
        assert_eq!(
            resp.status, 503,
            "an upgrade during shutdown: {}",
            resp.head
        );
        drop((health, upgrade));
        server.join().await;
    })
}

/// The metrics, parsed strictly as the Prometheus text format 0.0.4 (a
/// parser other than the one that wrote them): every line is a `# HELP`, a
/// `# TYPE` or a sample; names and label names are valid; label values are
/// quoted with only `\\`, `\"` and `\n` escapes; values are numbers; every
/// sample belongs to a family whose `# TYPE` came first (a histogram's
/// `_bucket`/`_sum`/`_count`, a counter's `_total`); histogram buckets
/// never decrease and the `+Inf` bucket equals `_count`. Returns
/// `name{k=v,…}` → value for every sample (`le` kept for buckets).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn number(s: &str) -> Option<f64> {
        match s {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => s.parse().ok(),
        }
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut last_bucket: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            assert!(is_name(name), "bad HELP line {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(is_name(name), "bad TYPE line {line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type in {line:?}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} twice"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        // name{labels} value
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value = number(value).unwrap_or_else(|| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("labels end with }")),
            None => (series, ""),
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let mut pairs = Vec::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
            assert!(is_name(key), "bad label name in {line:?}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            pairs.push(format!("{key}={value}"));
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|b| types.contains_key(*b)))
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("{name} has no # TYPE before it"));
        if kind == "histogram" {
            let series_key: Vec<&String> = pairs.iter().filter(|p| !p.starts_with("le=")).collect();
            let key = format!("{family}{series_key:?}");
            if name.ends_with("_bucket") {
                let previous = last_bucket.insert(key, value).unwrap_or(0.0);
                assert!(value >= previous, "buckets decrease in {line:?}");
            } else if name.ends_with("_count") {
                assert_eq!(
                    last_bucket.get(&key),
                    Some(&value),
                    "+Inf bucket != count: {line:?}"
                );
            }
        }
        samples.insert(format!("{name}{{{}}}", pairs.join(",")), value);
    }
    samples
}

async fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let (head, body) = fetch(addr, &get("/metrics")).await;
    assert_eq!(head.status, 200, "{}", head.head);
    assert!(
        head.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain") && t.contains("version=0.0.4")),
        "{}",
        head.head
    );
    let text = String::from_utf8(body).expect("UTF-8");
    let samples = parse_metrics(&text);
    (text, samples)
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[test]
fn metrics_parse_and_move_by_exactly_what_happened() {
    natter_runtime::block_on(async {
        let server = start(Config {
            rate: 0,
            ..Config::local()
        })
        .await;
        let (text, before) = scrape(server.addr()).await;
        for family in [
            "natter_connections_open",
            "natter_connections_accepted_total",
            "natter_rooms",
            "natter_messages_said_total",
            "natter_deliveries_total",
            "natter_say_to_delivery_seconds",
        ] {
            assert!(text.contains(family), "no {family} in:\n{text}");
        }

        let (mut alice, _) = Client::connect(&format!("{}?nick=alice", server.url())).await;
        let (mut bob, _) = Client::connect(&format!("{}?nick=bob", server.url())).await;
        alice.join("lobby").await;
        bob.join("lobby").await;
        for text in ["one", "two", "three"] {
            alice.say("lobby", text).await;
        }
        // A page from another origin is refused (403).
        let refused = http_exchange(
            server.addr(),
            upgrade_request("/ws", "Origin: http://elsewhere.example\r\n").as_bytes(),
        )
        .await;
        assert_eq!(refused.status, 403);
        bob.close().await;
        server
            .wait_stats("bob gone", |s| s.registry.users == 1)
            .await;

        let (text, after) = scrape(server.addr()).await;
        let delta = |key: &str| value(&after, key) - value(&before, key);
        assert_eq!(delta("natter_connections_accepted_total{}"), 2.0, "{text}");
        assert_eq!(value(&after, "natter_connections_open{}"), 1.0, "{text}");
        assert_eq!(delta("natter_messages_said_total{}"), 3.0, "{text}");
        assert_eq!(
            delta("natter_connections_refused_total{reason=origin}"),
            1.0,
            "{text}"
        );
        assert_eq!(
            delta("natter_connections_closed_total{code=peer}"),
            1.0,
            "{text}"
        );
        assert_eq!(value(&after, "natter_rooms{}"), 1.0, "{text}");
        assert_eq!(
            delta("natter_say_to_delivery_seconds_count{}"),
            3.0,
            "{text}"
        );
        // Each say reached both members, plus welcomes, replies, presence.
        assert!(delta("natter_deliveries_total{}") >= 6.0, "{text}");
        drop(alice);
        server.stop().await;
    })
}
