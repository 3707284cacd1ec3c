//! What a fanout run found and how it is judged: the results (`--json`
//! and the summary) and the verdict, made from the tally of the raw
//! numbers whichever process gathered them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::params::STALL_WINDOW;
use crate::load::net::{self, CloseCount, ConnectSummary};
use crate::load::report::{Findings, Lines, Summary, count};
use crate::load::stats::{Percentiles, ms};
use crate::load::sys::CpuWindow;

#[derive(Debug, Serialize)]
pub struct FanoutResults {
    pub subscribers: usize,
    pub publishers: usize,
    pub rooms: usize,
    pub rate_per_publisher: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub connections: ConnectSummary,
    /// Messages said, warm-up included.
    pub sent_total: u64,
    /// Messages said in the measured window.
    pub sent: u64,
    pub send_rate_per_s: f64,
    pub target_send_rate_per_s: f64,
    /// Most a publisher's send lagged behind its schedule.
    pub max_publisher_lag_ms: f64,
    pub replies_ok: u64,
    /// Says of the measured window that the server acknowledged with `ok`.
    pub says_acked: u64,
    /// `says_acked` per second of the measured window.
    pub says_per_s: f64,
    pub missing_replies: u64,
    pub reply_errors: BTreeMap<String, u64>,
    /// Messages sent in the measured window and acknowledged with `ok`,
    /// × subscribers of their room.
    pub expected_deliveries: u64,
    /// First deliveries of those messages.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// By publisher sequence, warm-up included: acknowledged messages a
    /// subscriber of the room never received.
    pub lost: u64,
    /// Acknowledged messages past the last one a subscriber received when
    /// the drain ended. Late (the server or the tester fell behind by more
    /// than --drain) when some says were still unanswered; a problem when
    /// every say had been answered.
    pub undelivered_at_end: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// By the room's seq as each subscriber saw it.
    pub seq_gaps: u64,
    pub seq_duplicates: u64,
    pub seq_reordered: u64,
    /// Messages in our rooms that this run did not send.
    pub foreign_messages: u64,
    /// Send (unix time in the text) to receipt, measured window only.
    pub latency: Option<Percentiles>,
    /// Say to its `ok` reply, measured window only: from the time the say
    /// was due on its publisher's schedule (so a publisher held back by
    /// backpressure does not hide the wait), to the reply's receipt.
    pub ok_latency: Option<Percentiles>,
    /// Closes by the server (or lost connections) before the tester closed.
    pub close_codes_seen: Vec<CloseCount>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_cpu_s_per_million_deliveries: Option<f64>,
}

/// What a run counted: the reported numbers, and the few facts only the
/// judgement needs. Kept apart from the judging so that each reads on its
/// own, and the judging can be checked without running a test.
pub(super) struct Tally {
    pub(super) results: FanoutResults,
    pub(super) cpu: Option<CpuWindow>,
    /// The subscriber that missed the most deliveries, and how many.
    pub(super) worst: Option<(usize, u64)>,
    /// Deliveries had stopped coming when the drain ended.
    pub(super) stalled: bool,
    /// Connections that got a shutdown event during the run.
    pub(super) shutdowns: u64,
}

/// What the numbers say about the server. With `over_rate` (the run asked
/// more of a connection than the server's announced rate limit) the limit's
/// effects are the tester's error, not misbehaviour. `finished`: the drain
/// ran to its end (the deadline did not cut it).
pub(super) fn judge(t: &Tally, over_rate: bool, finished: bool, findings: &mut Findings) {
    let r = &t.results;
    r.connections.judge(findings, false);
    let is_flooding = |c: &CloseCount| c.code == 1008 && c.reason.contains("flood");
    let flooded: u64 = count_closes(&r.close_codes_seen, is_flooding);
    if over_rate && flooded > 0 {
        findings.error(format!(
            "{flooded} publishers were closed for flooding (1008): the server's rate limit \
             is below --rate"
        ));
        let others: Vec<CloseCount> = r
            .close_codes_seen
            .iter()
            .filter(|c| !is_flooding(c))
            .cloned()
            .collect();
        if !others.is_empty() {
            findings.problem(format!(
                "connections were closed by the server or lost during the run: {}",
                net::describe_closes(&others)
            ));
        }
        net::judge_shutdowns(t.shutdowns, findings);
    } else {
        net::judge_closes(&r.close_codes_seen, t.shutdowns, findings);
    }
    let worst = t.worst.map_or(String::new(), |(i, n)| {
        format!(" (worst: subscriber {i} missed {n})")
    });
    findings.problem_if(r.lost, |n| {
        format!(
            "{n} deliveries lost: messages a subscriber never received from a publisher \
             of its room{worst}"
        )
    });
    let closed: u64 = r.close_codes_seen.iter().map(|c| c.count).sum();
    if r.missing_replies == 0 && finished && t.stalled && closed == 0 {
        // Every say was answered, no connection closed, and deliveries
        // had stopped: a backlog would still be draining. (Closes are
        // reported on their own above.)
        findings.problem_if(r.undelivered_at_end, |n| {
            format!(
                "{n} acknowledged deliveries never arrived: every say was answered, every \
                 connection stayed open, and no delivery came in the last {} s",
                STALL_WINDOW.as_secs()
            )
        });
    } else {
        findings.warn_if(r.undelivered_at_end, |n| {
            format!(
                "{n} deliveries had not arrived when the drain ended: the server or the \
                 tester was more than --drain behind (not counted as lost; see latency)"
            )
        });
    }
    findings.problem_if(r.duplicates, |n| {
        format!("{n} duplicate deliveries (same publisher sequence twice)")
    });
    findings.problem_if(r.reordered, |n| {
        format!("{n} deliveries out of order (a publisher's message after a later one)")
    });
    findings.seq_numbering("subscribers", r.seq_gaps, r.seq_duplicates, r.seq_reordered);
    findings.problem_if(r.foreign_messages, |n| {
        format!(
            "{n} messages in this run's rooms that no publisher of the run sent to that \
             room"
        )
    });
    if over_rate && flooded > 0 {
        findings.error_if(r.missing_replies, |n| {
            format!(
                "{n} say requests got no reply: in flight when their publisher was closed \
                 for flooding"
            )
        });
    } else {
        // Replies come in request order on a connection that stayed open
        // (closes are judged above), so these are a tail still in flight,
        // not holes.
        findings.warn_if(r.missing_replies, |n| {
            format!(
                "{n} say requests had no reply yet when the drain ended (sent {}, ok {}, \
                 errors {}): the server was behind by more than --drain",
                r.sent_total,
                r.replies_ok,
                r.reply_errors.values().sum::<u64>()
            )
        });
    }
    let (limited, other): (Vec<_>, Vec<_>) = r
        .reply_errors
        .iter()
        .map(|(e, n)| (e, format!("{n} × {e}")))
        .partition(|(e, _)| over_rate && e.starts_with("rate_limited"));
    if !limited.is_empty() {
        let list: Vec<String> = limited.into_iter().map(|(_, s)| s).collect();
        findings.error(format!(
            "the server refused messages over its rate limit (start it with --rate 0): {}",
            list.join("; ")
        ));
    }
    if !other.is_empty() {
        let list: Vec<String> = other.into_iter().map(|(_, s)| s).collect();
        findings.problem(format!("error replies to say: {}", list.join("; ")));
    }
    if r.max_publisher_lag_ms > 100.0 {
        findings.warn(format!(
            "publishers fell up to {} behind their schedule (the server's backpressure \
             on their sends, or an overloaded tester)",
            ms(r.max_publisher_lag_ms)
        ));
    }
    if r.target_send_rate_per_s > 0.0 && r.send_rate_per_s < 0.95 * r.target_send_rate_per_s {
        findings.warn(format!(
            "publishers achieved {:.0} msg/s of the {:.0} msg/s asked for",
            r.send_rate_per_s, r.target_send_rate_per_s
        ));
    }
}

impl Summary for FanoutResults {
    fn human(&self, out: &mut Lines) {
        out.kv(
            "setup",
            format!(
                "{} subscribers, {} publishers × {} msg/s, {} rooms; warm-up {} s, measured {} s",
                self.subscribers,
                self.publishers,
                self.rate_per_publisher,
                self.rooms,
                self.warmup_s,
                self.duration_s
            ),
        );
        out.kv("connections", self.connections.line());
        if let Some(t) = &self.connections.connect_time {
            out.kv("connect time", t.line());
        }
        out.kv(
            "sent (measured)",
            format!(
                "{} ({:.1} msg/s of {:.1} asked; {} incl. warm-up)",
                count(self.sent),
                self.send_rate_per_s,
                self.target_send_rate_per_s,
                count(self.sent_total)
            ),
        );
        out.kv(
            "replies",
            format!(
                "{} ok, {} errors, {} missing",
                count(self.replies_ok),
                self.reply_errors.values().sum::<u64>(),
                self.missing_replies
            ),
        );
        out.kv(
            "says acked (measured)",
            format!("{} ({:.1}/s)", count(self.says_acked), self.says_per_s),
        );
        out.kv("expected deliveries", count(self.expected_deliveries));
        out.kv(
            "deliveries",
            format!(
                "{} ({:.0}/s)",
                count(self.deliveries),
                self.deliveries_per_s
            ),
        );
        out.kv(
            "lost / dup / reordered",
            format!(
                "{} / {} / {} (by publisher sequence)",
                self.lost, self.duplicates, self.reordered
            ),
        );
        out.kv("undelivered at end", count(self.undelivered_at_end));
        out.kv(
            "room seq gap / dup / reord",
            format!(
                "{} / {} / {}",
                self.seq_gaps, self.seq_duplicates, self.seq_reordered
            ),
        );
        match &self.latency {
            Some(l) => out.kv("latency", l.line()),
            None => out.kv("latency", "no deliveries measured"),
        }
        match &self.ok_latency {
            Some(l) => out.kv("ok round trip", l.line()),
            None => out.kv("ok round trip", "no oks measured"),
        }
        out.kv("max publisher lag", ms(self.max_publisher_lag_ms));
        out.kv(
            "close codes seen",
            super::net::describe_closes(&self.close_codes_seen),
        );
        if let Some(us) = self.server_cpu_us_per_delivery {
            out.kv(
                "server CPU per delivery",
                format!("{us:.2} µs ({us:.2} s per million deliveries)"),
            );
        }
    }
}

/// How many connections the closes matching `pick` account for.
pub(super) fn count_closes(closes: &[CloseCount], pick: impl Fn(&CloseCount) -> bool) -> u64 {
    closes.iter().filter(|c| pick(c)).map(|c| c.count).sum()
}
