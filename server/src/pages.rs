//! The server's plain HTTP pages, on the same port as the chat endpoint:
//! the browser chat client (`/`), the health check (`/healthz`) and the
//! metrics (`/metrics`).
//!
//! Each answer is complete and closes the connection: a page request holds
//! a connection slot only while it is read and answered.

use std::io;

use crate::handshake::{Answer, Page};
use crate::state::ServerState;
use crate::stream::Stream;

/// The browser client: one self-contained file (markup, style and script,
/// nothing fetched from elsewhere), built into the binary.
const INDEX_HTML: &str = include_str!("web/index.html");

/// Answers a request for `page`.
pub(crate) async fn serve(
    stream: &mut Stream,
    page: Page,
    head_only: bool,
    state: &ServerState,
) -> io::Result<()> {
    let metrics;
    let (status, reason, content_type, body): (u16, &str, &str, &[u8]) = match page {
        Page::Index => (200, "OK", "text/html; charset=utf-8", INDEX_HTML.as_bytes()),
        // A load balancer takes a node out when this turns 503; it does so
        // as soon as shutdown begins, while the node still answers.
        Page::Health if state.shutdown.is_triggered() => (
            503,
            "Service Unavailable",
            "text/plain; charset=utf-8",
            b"shutting down",
        ),
        // A node cut off from its broker refuses upgrades: the balancer
        // should send clients elsewhere until it is back.
        Page::Health if !state.chat.is_up() => (
            503,
            "Service Unavailable",
            "text/plain; charset=utf-8",
            b"broker unavailable",
        ),
        Page::Health => (200, "OK", "text/plain; charset=utf-8", b"ok"),
        Page::Metrics => {
            metrics = state.metrics.render(state.chat.counts().await);
            (200, "OK", crate::metrics::CONTENT_TYPE, metrics.as_bytes())
        }
    };
    let answer = Answer {
        status,
        reason,
        content_type,
        headers: &[("Cache-Control", "no-store")],
        body,
        head_only,
    };
    answer.write(stream).await
}
