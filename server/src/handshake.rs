//! The HTTP side of a connection: reading the upgrade request and answering
//! it, 101 or a clear HTTP error.
//!
//! natter parses the request itself (with httparse) instead of using
//! tungstenite's handshake because the contract fixes an answer for every
//! case — 404 off `/ws`, 4xx for a broken upgrade, 505 for another HTTP
//! version, 503 at the cap — and a refused socket must get that answer, not
//! a dropped connection. Once the request is judged valid, the 101 is
//! written here and the socket is handed to async-tungstenite as a raw
//! WebSocket stream, including any bytes the client sent early.
//!
//! The request's `Host` and `Origin` are handed on with the upgrade; whether
//! that origin may connect is `crate::origin`'s rule, applied by the caller.
//!
//! The same port answers plain HTTP for the server's own pages (`/`,
//! `/healthz`, `/metrics`: [`Page`]); what each says is `crate::pages`'.

use std::io;

use crate::stream::Stream;
use futures::{AsyncReadExt, AsyncWriteExt};
use natter_protocol::CHAT_PATH;

/// Largest request head accepted (request line plus headers).
pub(crate) const MAX_HEAD_BYTES: usize = 8192;
const MAX_HEADERS: usize = 64;

/// A valid WebSocket upgrade on the chat path.
#[derive(Debug)]
pub(crate) struct Upgrade {
    pub(crate) key: String,
    /// The `nick` query parameter, percent-decoded, if given.
    pub(crate) nick: Option<String>,
    /// The `Host` header (every valid upgrade has exactly one).
    pub(crate) host: String,
    /// The `Origin` header, if the client sent one (a browser does). A
    /// value that is not UTF-8 is kept, lossily, so it is judged (and
    /// refused) rather than taken for absent.
    pub(crate) origin: Option<String>,
    /// Bytes that arrived after the request head (early WebSocket frames).
    pub(crate) leftover: Vec<u8>,
}

/// What a complete, acceptable request asks for.
#[derive(Debug)]
pub(crate) enum Head {
    /// A WebSocket upgrade on the chat path.
    Upgrade(Upgrade),
    /// One of the server's plain HTTP pages.
    Page {
        /// Which one.
        page: Page,
        /// `HEAD`: the status and headers, no body.
        head_only: bool,
    },
}

/// The plain HTTP paths the server answers besides the chat endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// `GET /`: the browser chat client.
    Index,
    /// `GET /healthz`: 200 while accepting, 503 once shutting down.
    Health,
    /// `GET /metrics`: Prometheus text format.
    Metrics,
}

impl Page {
    fn at(path: &str) -> Option<Page> {
        match path {
            "/" => Some(Page::Index),
            "/healthz" => Some(Page::Health),
            "/metrics" => Some(Page::Metrics),
            _ => None,
        }
    }
}

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpRefusal {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
    pub(crate) headers: Vec<(&'static str, &'static str)>,
    pub(crate) body: &'static str,
    /// The `reason` label of `natter_connections_refused_total`.
    pub(crate) kind: &'static str,
    /// The request was a `HEAD`: the answer carries no body (its length
    /// is still given).
    pub(crate) head_only: bool,
}

impl HttpRefusal {
    fn new(status: u16, reason: &'static str, body: &'static str) -> Self {
        HttpRefusal {
            status,
            reason,
            headers: Vec::new(),
            body,
            kind: "bad_request",
            head_only: false,
        }
    }

    fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    fn with(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The answer when every connection slot is taken.
    pub(crate) fn server_full() -> Self {
        HttpRefusal::new(
            503,
            "Service Unavailable",
            "server is full, try again later\n",
        )
        .with("Retry-After", "1")
        .kind("full")
    }

    /// The answer to a request head that did not arrive in time.
    pub(crate) fn timed_out() -> Self {
        HttpRefusal::new(
            408,
            "Request Timeout",
            "the upgrade request took too long\n",
        )
        .kind("timeout")
    }

    /// The answer to an upgrade from a web page whose origin may not connect.
    pub(crate) fn forbidden_origin() -> Self {
        HttpRefusal::new(
            403,
            "Forbidden",
            "this origin may not open a WebSocket here\n",
        )
        .kind("origin")
    }

    /// The answer to an address that already holds its share of
    /// connections. A chat connection lasts long, so retrying every second
    /// would only churn: come back in 10.
    pub(crate) fn too_many_from_address() -> Self {
        HttpRefusal::new(
            429,
            "Too Many Requests",
            "too many connections from your address, try again later\n",
        )
        .with("Retry-After", "10")
        .kind("per_address")
    }

    /// The answer to a handshake caught by shutdown.
    pub(crate) fn shutting_down() -> Self {
        HttpRefusal::new(503, "Service Unavailable", "server is shutting down\n")
            .with("Retry-After", "5")
            .kind("shutting_down")
    }

    /// The answer while this node cannot reach its broker (`--broker`): it
    /// cannot serve a chat it cannot hear; another node may.
    pub(crate) fn broker_unavailable() -> Self {
        HttpRefusal::new(
            503,
            "Service Unavailable",
            "this node cannot reach its broker, try again later\n",
        )
        .with("Retry-After", "2")
        .kind("broker")
    }
}

/// Reads the request head and judges it. `Err` is an I/O failure or EOF
/// before a full head arrived; the caller just drops the socket then.
pub(crate) async fn read_request(stream: &mut Stream) -> io::Result<Result<Head, HttpRefusal>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                // A HEAD request's refusal is its status and headers alone.
                let head_only = req.method == Some("HEAD");
                let verdict = judge(&req).map_err(|refusal| HttpRefusal {
                    head_only,
                    ..refusal
                });
                return Ok(verdict.map(|head| match head {
                    Head::Upgrade(upgrade) => Head::Upgrade(Upgrade {
                        leftover: buf[len..].to_vec(),
                        ..upgrade
                    }),
                    page => page,
                }));
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Ok(Err(too_large()));
            }
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::Version) => return Ok(Err(bad_version())),
            Err(httparse::Error::TooManyHeaders) => return Ok(Err(too_large())),
            Err(_) => {
                return Ok(Err(HttpRefusal::new(
                    400,
                    "Bad Request",
                    "malformed HTTP request\n",
                )));
            }
        }
    }
}

fn too_large() -> HttpRefusal {
    HttpRefusal::new(
        431,
        "Request Header Fields Too Large",
        "request head too large\n",
    )
}

fn bad_version() -> HttpRefusal {
    HttpRefusal::new(
        505,
        "HTTP Version Not Supported",
        "only HTTP/1.1 is supported\n",
    )
}

/// Decides what a complete request deserves, in the order a client would
/// want to learn it: version, path, method, the upgrade headers, then
/// `Host` and `Origin`. A returned upgrade has no leftover bytes yet.
fn judge(req: &httparse::Request) -> Result<Head, HttpRefusal> {
    let target = req.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    // A page is plain HTTP, 1.0 included (some health checkers still send
    // it); a WebSocket upgrade belongs on the chat path only, so one aimed
    // at a page's path is a 404 like any other path's.
    if let Some(page) = Page::at(path).filter(|_| !asks_for_websocket(req)) {
        return match req.method {
            Some("GET") => Ok(Head::Page {
                page,
                head_only: false,
            }),
            Some("HEAD") => Ok(Head::Page {
                page,
                head_only: true,
            }),
            _ => Err(HttpRefusal::new(
                405,
                "Method Not Allowed",
                "this page only answers GET and HEAD\n",
            )
            .with("Allow", "GET, HEAD")),
        };
    }
    if req.version != Some(1) {
        return Err(bad_version());
    }
    if path != CHAT_PATH {
        return Err(HttpRefusal::new(
            404,
            "Not Found",
            "no such page; the chat endpoint is /ws, the chat page /\n",
        ));
    }
    upgrade_on_chat_path(req, query).map(Head::Upgrade)
}

/// Whether the request carries `Upgrade: websocket`.
fn asks_for_websocket(req: &httparse::Request) -> bool {
    has_token(req, "upgrade", "websocket")
}

/// Whether a comma-separated header `name` lists `token` (both compared
/// case-insensitively, as HTTP wants).
fn has_token(req: &httparse::Request, name: &str, token: &str) -> bool {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The chat path: what a WebSocket upgrade must carry.
fn upgrade_on_chat_path(req: &httparse::Request, query: &str) -> Result<Upgrade, HttpRefusal> {
    if req.method != Some("GET") {
        return Err(
            HttpRefusal::new(405, "Method Not Allowed", "the upgrade must be a GET\n")
                .with("Allow", "GET"),
        );
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect::<Vec<_>>()
    };
    if !asks_for_websocket(req) || !has_token(req, "connection", "upgrade") {
        return Err(HttpRefusal::new(
            426,
            "Upgrade Required",
            "this endpoint only speaks WebSocket\n",
        )
        .with("Upgrade", "websocket")
        .with("Connection", "Upgrade"));
    }
    if header("sec-websocket-version").as_slice() != ["13"] {
        return Err(HttpRefusal::new(
            426,
            "Upgrade Required",
            "unsupported WebSocket version; use 13\n",
        )
        .with("Sec-WebSocket-Version", "13"));
    }
    let key = match header("sec-websocket-key").as_slice() {
        [key] if is_valid_key(key.trim()) => key.trim().to_owned(),
        _ => {
            return Err(HttpRefusal::new(
                400,
                "Bad Request",
                "missing or malformed Sec-WebSocket-Key\n",
            ));
        }
    };
    // HTTP/1.1 requires exactly one Host (RFC 9112 §3.2): it is what the
    // Origin rule compares with. Two Origins cannot be judged either.
    let raw = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
            .collect::<Vec<_>>()
    };
    let host = match <[String; 1]>::try_from(raw("host")) {
        Ok([host]) => host,
        Err(_) => {
            return Err(HttpRefusal::new(
                400,
                "Bad Request",
                "the upgrade needs exactly one Host header\n",
            ));
        }
    };
    let mut origins = raw("origin");
    if origins.len() > 1 {
        return Err(HttpRefusal::new(
            400,
            "Bad Request",
            "more than one Origin header\n",
        ));
    }
    let nick = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "nick")
        .map(|(_, value)| value.into_owned());
    Ok(Upgrade {
        key,
        nick,
        host,
        origin: origins.pop(),
        leftover: Vec::new(),
    })
}

/// A key is 16 random bytes in base64: 22 significant characters and `==`.
fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Writes the 101 that completes the upgrade.
pub(crate) async fn accept(stream: &mut Stream, key: &str) -> io::Result<()> {
    let accept = async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await
}

/// Writes an HTTP error answer; the caller then closes with a linger.
pub(crate) async fn refuse(stream: &mut Stream, refusal: &HttpRefusal) -> io::Result<()> {
    let answer = Answer {
        status: refusal.status,
        reason: refusal.reason,
        content_type: "text/plain; charset=utf-8",
        headers: &refusal.headers,
        body: refusal.body.as_bytes(),
        head_only: refusal.head_only,
    };
    answer.write(stream).await
}

/// A complete plain HTTP answer (the connection closes after it).
pub(crate) struct Answer<'a> {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
    pub(crate) content_type: &'static str,
    /// Headers beyond the content type, length and `Connection: close`.
    pub(crate) headers: &'a [(&'static str, &'static str)],
    pub(crate) body: &'a [u8],
    /// `HEAD`: the length of the body is sent, the body is not.
    pub(crate) head_only: bool,
}

impl Answer<'_> {
    /// Writes the answer.
    pub(crate) async fn write(&self, stream: &mut Stream) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        for (name, value) in self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        if !self.head_only {
            stream.write_all(self.body).await?;
        }
        stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge_head(text: &str) -> Result<Head, u16> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(text.as_bytes()) {
            Ok(httparse::Status::Complete(_)) => judge(&req).map_err(|r| r.status),
            Err(httparse::Error::Version) => Err(505),
            other => panic!("unexpected parse result {other:?}"),
        }
    }

    fn judge_text(text: &str) -> Result<Upgrade, u16> {
        match judge_head(text)? {
            Head::Upgrade(upgrade) => Ok(upgrade),
            Head::Page { page, .. } => panic!("a page ({page:?}), not an upgrade"),
        }
    }

    /// The refusal status for `text`, `None` if the upgrade is valid.
    fn status(text: &str) -> Option<u16> {
        judge_head(text).err()
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn valid_upgrade_with_nick() {
        let up = judge_text(&upgrade("/ws?x=1&nick=al%69ce&nick=bob", "")).unwrap();
        assert_eq!(up.key, KEY);
        assert_eq!(up.nick.as_deref(), Some("alice"));
        assert_eq!(up.host, "x");
        assert_eq!(up.origin, None);
    }

    #[test]
    fn host_and_origin_are_handed_on() {
        let up = judge_text(&upgrade("/ws", "Origin: http://x:1\r\n")).unwrap();
        assert_eq!(up.origin.as_deref(), Some("http://x:1"));
        let no_host = upgrade("/ws", "").replace("Host: x\r\n", "");
        assert_eq!(status(&no_host), Some(400));
        let two_hosts = upgrade("/ws", "Host: y\r\n");
        assert_eq!(status(&two_hosts), Some(400));
        let two_origins = upgrade("/ws", "Origin: http://x\r\nOrigin: http://y\r\n");
        assert_eq!(status(&two_origins), Some(400));
        // An Origin that is not UTF-8 is present, not absent.
        let mut bytes = upgrade("/ws", "Origin: http://\u{1}\r\n").into_bytes();
        let at = bytes.iter().position(|&b| b == 1).unwrap();
        bytes[at] = 0xff;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(&bytes).unwrap().is_complete());
        let Ok(Head::Upgrade(up)) = judge(&req) else {
            panic!("not an upgrade");
        };
        assert!(up.origin.is_some_and(|o| o.starts_with("http://")));
    }

    #[test]
    fn pages_answer_get_and_head_only() {
        for (path, page) in [
            ("/", Page::Index),
            ("/healthz", Page::Health),
            ("/metrics?x=1", Page::Metrics),
        ] {
            let get = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(matches!(
                judge_head(&get),
                Ok(Head::Page { page: p, head_only: false }) if p == page
            ));
            let head = get.replacen("GET", "HEAD", 1);
            assert!(matches!(
                judge_head(&head),
                Ok(Head::Page {
                    head_only: true,
                    ..
                })
            ));
            let post = get.replacen("GET", "POST", 1);
            assert_eq!(status(&post), Some(405));
            let http10 = get.replacen("HTTP/1.1", "HTTP/1.0", 1);
            assert!(matches!(judge_head(&http10), Ok(Head::Page { .. })));
            // An upgrade aimed at a page's path: 404, like any other path.
            assert_eq!(status(&upgrade(path, "")), Some(404));
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(status(&upgrade("/", "")), Some(404));
        assert_eq!(status(&upgrade("/wsx", "")), Some(404));
        assert_eq!(
            status("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(404)
        );
        assert_eq!(status("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"), Some(426));
        assert_eq!(status("GET /ws HTTP/1.0\r\n\r\n"), Some(505));
        assert_eq!(status("GET /ws HTTP/2.0\r\n\r\n"), Some(505));
        let post = upgrade("/ws", "").replacen("GET", "POST", 1);
        assert_eq!(status(&post), Some(405));
        let v8 = upgrade("/ws", "").replace("Version: 13", "Version: 8");
        assert_eq!(status(&v8), Some(426));
        let nokey = upgrade("/ws", "").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "");
        assert_eq!(status(&nokey), Some(400));
        let badkey = upgrade("/ws", "").replace(KEY, "short");
        assert_eq!(status(&badkey), Some(400));
    }
}
