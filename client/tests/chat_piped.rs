//! `natter chat` as scripts use it (stdin and stdout piped), and over
//! `wss://`.
//!
//! Piped use must stay what it was before the terminal client: plain lines
//! without escape codes, exit 0 at end of input, exit 2 when the
//! connection drops (no reconnecting behind a script's back).
//!
//! The server has no TLS yet, so the wss tests put a TLS-terminating proxy
//! (futures-rustls, with a throw-away CA and certificate from rcgen) in
//! front of the real in-process server, and run the client with `--ca`.
//!
//! Each child is bounded by [`WAIT`] (killed past it) and every wait here
//! is bounded too.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::AsyncReadExt;
use futures::future::{Either, select};
use futures_rustls::TlsAcceptor;
use futures_rustls::rustls::ServerConfig;
use natter_server::{Config, Server, ServerHandle};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Longest a `natter chat` child may run.
const WAIT: Duration = Duration::from_secs(30);

struct Running {
    handle: ServerHandle,
    task: natter_runtime::JoinHandle<usize>,
}

fn start_server() -> Running {
    let config = Config {
        rate: 0,
        ..Config::local()
    };
    let server = natter_runtime::block_on(Server::bind(config)).expect("the server binds");
    let handle = server.handle();
    let task = natter_runtime::spawn(async move { server.run().await.expect("server runs") });
    Running { handle, task }
}

impl Running {
    fn stop(self) {
        self.handle.shutdown();
        let stopped = natter_runtime::block_on(natter_runtime::timeout(WAIT, self.task));
        assert!(stopped.is_some(), "the server did not stop within {WAIT:?}");
    }
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
// wss:// through a TLS-terminating proxy
// ---------------------------------------------------------------------------

/// A CA, and a certificate for 127.0.0.1 that it signed.
struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
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
        cert: cert.der().clone(),
        key: key.serialize_der(),
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

/// Listens on 127.0.0.1 (a free port), speaks TLS with `pki`'s
/// certificate, and forwards the plain bytes to `backend`. Returns the
/// proxy's `wss://` URL.
fn start_tls_proxy(pki: &Pki, backend: std::net::SocketAddr) -> String {
    #[allow(deprecated)] // ring, as in the client: no C toolchain
    let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], key)
        .expect("the proxy's certificate");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = natter_runtime::bind("127.0.0.1:0", 16).expect("the proxy binds");
    let addr = listener.local_addr().expect("the proxy's address");
    natter_runtime::spawn(async move {
        // Bounded: the tests make a handful of connections.
        for _ in 0..16 {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            natter_runtime::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return; // a client that refused our certificate
                };
                let Ok(plain) = natter_runtime::connect(backend).await else {
                    return;
                };
                let (tls_in, mut tls_out) = tls.split();
                let (plain_in, mut plain_out) = plain.split();
                let up = futures::io::copy(tls_in, &mut plain_out);
                let down = futures::io::copy(plain_in, &mut tls_out);
                let _ = match select(Box::pin(up), Box::pin(down)).await {
                    Either::Left((r, _)) | Either::Right((r, _)) => r,
                };
            });
        }
    });
    format!("wss://{addr}/ws")
}

#[test]
fn wss_with_the_right_ca_chats_and_with_a_wrong_one_fails_clearly() {
    let server = start_server();
    let pki = make_pki();
    let url = start_tls_proxy(&pki, server.handle.local_addr());
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
