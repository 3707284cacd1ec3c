//! The server's counters, served at `GET /metrics` in the Prometheus text
//! format (version 0.0.4).
//!
//! Why prometheus-client: it is the Prometheus project's own Rust client,
//! small (no runtime, no global registry), and it writes the exposition
//! format — escaping, `_total` suffixes, histogram buckets — which is easy
//! to get subtly wrong by hand and is checked by every scraper.
//!
//! What each costs on the message path: nothing per frame under a lock. A
//! counter is one relaxed atomic add; deliveries are added once per batch a
//! writer sends (many frames per add under load), a `say` once per request.
//! The gauges (connections, rooms) are not kept up to date at all: they are
//! read from the registry when someone scrapes.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::close_reason::CloseReason;
use crate::registry::RegistryCounts;

/// The `Content-Type` of `GET /metrics`.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `reason` labels of `natter_connections_refused_total`: the kinds of
/// `HttpRefusal`, and a TLS handshake that did not complete.
const REFUSALS: [&str; 8] = [
    "full",
    "per_address",
    "origin",
    "shutting_down",
    "broker",
    "timeout",
    "bad_request",
    "tls",
];

/// The `code` labels of `natter_connections_closed_total`.
const CLOSE_CODES: [&str; 11] = [
    "peer", "none", "1000", "1001", "1002", "1003", "1007", "1008", "1009", "1011", "1013",
];

/// A label set with one label: which refusal, which close code.
type Label = [(&'static str, &'static str); 1];

/// Every metric the server exports, and the registry that names them.
pub(crate) struct Metrics {
    /// Names, help texts and the metrics themselves, for encoding.
    registry: Registry,
    /// WebSocket upgrades completed (`natter_connections_accepted_total`).
    pub(crate) accepted: Counter,
    /// Sockets refused before or at the upgrade, by why
    /// (`natter_connections_refused_total{reason}`).
    refused: Family<Label, Counter>,
    /// WebSocket connections ended, by the close code the server sent
    /// (`peer` when the client closed first, `none` when the socket died).
    closed: Family<Label, Counter>,
    /// `say`s that got their `ok` (`natter_messages_said_total`).
    said: Counter,
    /// Frames written to clients: events and replies
    /// (`natter_deliveries_total`).
    pub(crate) deliveries: Counter,
    /// From reading a `say` to its message being queued for every member
    /// of the room (with `--data-dir`, the commit included).
    say_latency: Histogram,
    /// Connections past their upgrade, read at scrape time.
    open: Gauge,
    /// Retained rooms, with or without members, read at scrape time.
    rooms: Gauge,
    /// Room memberships, read at scrape time.
    memberships: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("natter");
        let accepted = Counter::default();
        let refused = Family::<Label, Counter>::default();
        let closed = Family::<Label, Counter>::default();
        let said = Counter::default();
        let deliveries = Counter::default();
        // 50 µs to about 1.6 s, doubling: a say in memory is tens of
        // microseconds, a durable one a few milliseconds (one fsync).
        let say_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let (open, rooms, memberships) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "connections_open",
            "WebSocket connections past their upgrade",
            open.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket upgrades completed",
            accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Sockets refused before or at the upgrade, by reason",
            refused.clone(),
        );
        registry.register(
            "connections_closed",
            "WebSocket connections ended, by the close code the server sent \
             (peer: the client closed first; none: the socket failed)",
            closed.clone(),
        );
        registry.register(
            "rooms",
            "Rooms retained, with or without members",
            rooms.clone(),
        );
        registry.register(
            "room_memberships",
            "Room memberships, summed over rooms",
            memberships.clone(),
        );
        registry.register(
            "messages_said",
            "Messages said (say requests answered ok)",
            said.clone(),
        );
        registry.register(
            "deliveries",
            "Frames written to clients (events and replies)",
            deliveries.clone(),
        );
        registry.register(
            "say_to_delivery_seconds",
            "From reading a say to its message being queued for every member of the room",
            say_latency.clone(),
        );
        // Every reason and code from the start, at 0: a dashboard (or a
        // rate()) sees the series before the first event, not after.
        for reason in REFUSALS {
            drop(refused.get_or_create(&[("reason", reason)]));
        }
        for code in CLOSE_CODES {
            drop(closed.get_or_create(&[("code", code)]));
        }
        Metrics {
            registry,
            accepted,
            refused,
            closed,
            said,
            deliveries,
            say_latency,
            open,
            rooms,
            memberships,
        }
    }

    /// Counts a refused socket; `reason` is one of a few fixed words.
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&[("reason", reason)]).inc();
    }

    /// Counts an ended WebSocket connection by how it closed.
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed
            .get_or_create(&[("code", close_label(reason))])
            .inc();
    }

    /// Records how long a `say` took to reach every member's queue.
    pub(crate) fn said(&self, took: Duration) {
        self.said.inc();
        self.say_latency.observe(took.as_secs_f64());
    }

    /// The exposition, with the gauges read from `counts` now.
    pub(crate) fn render(&self, counts: RegistryCounts) -> String {
        self.open.set(gauge(counts.users));
        self.rooms.set(gauge(counts.rooms));
        self.memberships.set(gauge(counts.memberships));
        let mut text = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// The `code` label of a closed connection: the close code the server sent
/// (`CloseReason::close_frame`; the test below holds the two together),
/// `peer` when the client closed first, `none` when the socket failed.
fn close_label(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::PeerClosed => "peer",
        CloseReason::Gone => "none",
        CloseReason::Idle => "1000",
        CloseReason::Shutdown => "1001",
        CloseReason::ProtocolViolation => "1002",
        CloseReason::Binary => "1003",
        CloseReason::BadUtf8 => "1007",
        CloseReason::SlowConsumer | CloseReason::Flooding => "1008",
        CloseReason::TooBig => "1009",
        CloseReason::Internal => "1011",
        CloseReason::TryAgainLater => "1013",
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::HttpRefusal;

    #[test]
    fn close_labels_are_the_codes_the_server_sends() {
        for code in 1..=u8::MAX {
            let Some(reason) = CloseReason::from_code(code) else {
                continue;
            };
            let label = close_label(reason);
            assert!(CLOSE_CODES.contains(&label), "{label}");
            match reason.close_frame() {
                Some((sent, _)) => assert_eq!(label, sent.0.to_string(), "{reason:?}"),
                None => assert!(["peer", "none"].contains(&label), "{reason:?}"),
            }
        }
    }

    #[test]
    fn every_refusal_kind_has_its_series_from_the_start() {
        for refusal in [
            HttpRefusal::server_full(),
            HttpRefusal::timed_out(),
            HttpRefusal::forbidden_origin(),
            HttpRefusal::too_many_from_address(),
            HttpRefusal::shutting_down(),
            HttpRefusal::broker_unavailable(),
        ] {
            assert!(REFUSALS.contains(&refusal.kind), "{}", refusal.kind);
        }
        let text = Metrics::new().render(RegistryCounts {
            users: 0,
            rooms: 0,
            memberships: 0,
        });
        for reason in REFUSALS {
            let series = format!("natter_connections_refused_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }
}
