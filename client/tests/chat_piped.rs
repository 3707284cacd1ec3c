//! `natter chat` as scripts use it (stdin and stdout piped), and over
//! `wss://`.
//!
//! Piped use must stay what it was before the terminal client: plain lines
//! without escape codes, exit 0 at end of input, exit 2 when the
//! connection drops (no reconnecting behind a script's back).
//!
//! The wss tests run the real in-process server with its own TLS
//! (`--tls-cert`/`--tls-key`, a throw-away CA and certificate from rcgen)
//! and the client with `--ca`; they also check that the same port answers
//! its pages over https and refuses plain ws.
//!
//! Each child is bounded by [`WAIT`] (killed past it) and every wait here
//! is bounded too.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, start_server_with};
use futures::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsConnector;
use natter_server::Config;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::ServerName;

/// Longest a `natter chat` child may run.
const WAIT: Duration = Duration::from_secs(30);

fn start_server() -> Running {
    start_server_with(Config {
        rate: 0,
        ..Config::local()
    })
}

/// What a finished child printed and how it exited.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn chat(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_natter"))
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("natter starts")
}

/// Waits (bounded) for the child to exit and collects its output.
fn finish(mut child: Child) -> Outcome {
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for natter") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("natter chat did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).expect("reading stdout");
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("reading stderr");
    }
    Outcome {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Runs `natter chat` with `input` piped in and stdin closed after it.
fn chat_with_input(args: &[&str], input: &str) -> Outcome {
    let mut child = chat(args);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(input.as_bytes()).expect("writing stdin");
    drop(stdin);
    finish(child)
}

#[test]
fn piped_chat_prints_plain_lines_and_exits_0() {
    let server = start_server();
    let url = server.handle.url();
    let run = chat_with_input(
        &[&url, "--nick", "pipe", "--room", "lobby"],
        "hello\n/who\n",
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        !run.stdout.contains('\x1b'),
        "escape codes in piped output: {run:?}"
    );
    assert!(run.stdout.contains("-- now in #lobby with pipe"), "{run:?}");
    assert!(run.stdout.contains("#lobby <pipe> hello"), "{run:?}");
    assert!(run.stdout.contains("-- #lobby: pipe"), "{run:?}");
    server.stop();
}

#[test]
fn piped_chat_exits_2_when_the_server_goes_away_instead_of_reconnecting() {
    let server = start_server();
    let url = server.handle.url();
    let mut child = chat(&[&url, "--nick", "pipe", "--room", "lobby"]);
    let stdin = child.stdin.take().expect("stdin is piped");
    // Stdin stays open: only the server's going away can end the client.
    // It has joined once the server counts its membership.
    let stats_deadline = Instant::now() + WAIT;
    loop {
        if natter_runtime::block_on(server.handle.stats())
            .registry
            .memberships
            == 1
        {
            break;
        }
        assert!(Instant::now() < stats_deadline, "the client never joined");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let run = finish(child);
    drop(stdin);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("server shut down"), "{run:?}");
    assert!(!run.stdout.contains("reconnecting"), "{run:?}");
}

// ---------------------------------------------------------------------------
// wss:// to the server's own TLS
// ---------------------------------------------------------------------------

/// A CA, and a certificate for 127.0.0.1 that it signed, as PEM.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");
    let key = KeyPair::generate().expect("a server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca, &ca_key)
        .expect("the server certificate");
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A file in the test's own temporary directory.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("natter-chat-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writing a temp file");
    path
}

/// The in-process server with TLS on, using `pki`'s certificate.
fn start_tls_server(pki: &Pki) -> Running {
    start_server_with(Config {
        rate: 0,
        tls_cert: Some(temp_file("server.pem", &pki.cert_pem)),
        tls_key: Some(temp_file("server.key", &pki.key_pem)),
        ..Config::local()
    })
}

/// `GET path` over https, trusting `ca_pem`; returns the whole answer.
fn https_get(addr: std::net::SocketAddr, path: &str, ca: &std::path::Path) -> String {
    let config = natter::tls::client_config(Some(ca)).expect("a client TLS config");
    natter_runtime::block_on(natter_runtime::timeout(WAIT, async {
        let tcp = natter_runtime::connect(addr).await.expect("TCP connect");
        let name = ServerName::try_from("127.0.0.1").expect("a server name");
        let mut tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the server");
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        tls.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }))
    .expect("an https answer in time")
}

#[test]
fn wss_with_the_right_ca_chats_and_with_a_wrong_one_fails_clearly() {
    let pki = make_pki();
    let server = start_tls_server(&pki);
    let url = server.handle.url();
    assert!(url.starts_with("wss://"), "{url}");
    let ca = temp_file("ca.pem", &pki.ca_pem);
    let ca = ca.to_str().expect("a UTF-8 temp path");

    let run = chat_with_input(
        &[&url, "--ca", ca, "--nick", "tess", "--room", "lobby"],
        "over tls\n",
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("#lobby <tess> over tls"), "{run:?}");

    let other = make_pki();
    let wrong = temp_file("wrong-ca.pem", &other.ca_pem);
    let wrong = wrong.to_str().expect("a UTF-8 temp path");
    let run = chat_with_input(&[&url, "--ca", wrong, "--nick", "tess"], "");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("TLS handshake failed"), "{run:?}");
    assert!(run.stderr.to_lowercase().contains("certificate"), "{run:?}");

    let not_pem = temp_file("not-a-cert.pem", "hello\n");
    let not_pem = not_pem.to_str().expect("a UTF-8 temp path");
    let run = chat_with_input(&[&url, "--ca", not_pem], "");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("--ca"), "{run:?}");
    assert!(run.stderr.contains("no CERTIFICATE"), "{run:?}");
    server.stop();
}

#[test]
fn a_tls_port_serves_its_pages_over_https_and_refuses_plain_websockets() {
    let pki = make_pki();
    let server = start_tls_server(&pki);
    let addr = server.handle.local_addr();
    let ca = temp_file("page-ca.pem", &pki.ca_pem);

    let health = https_get(addr, "/healthz", &ca);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("\r\n\r\nok"), "{health}");
    let page = https_get(addr, "/", &ca);
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    assert!(page.contains("text/html"), "{page:.200}");

    // Plain HTTP (a ws:// upgrade) to the TLS port: no answer in plain
    // text, least of all a 101; the socket is closed.
    let plain = natter_runtime::block_on(natter_runtime::timeout(WAIT, async {
        let mut tcp = natter_runtime::connect(addr).await.expect("TCP connect");
        let upgrade = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let _ = tcp.write_all(upgrade.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        answer
    }))
    .expect("the server closes a plain connection to its TLS port");
    assert!(
        !String::from_utf8_lossy(&plain).contains("101"),
        "a plain upgrade was accepted: {}",
        String::from_utf8_lossy(&plain)
    );
    server.stop();
}
