//! Opening, joining and closing many connections: source addresses,
//! bounded concurrency, connect statistics, and bookkeeping of how
//! connections ended.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use natter::{Client, ClientError, CloseInfo, ConnectOptions, LeanConnection, LeanSender};
use natter_protocol::message::JoinOk;
use natter_protocol::{Reply, Request, ServerMessage, Welcome};
use serde::{Deserialize, Serialize};

use super::progress::Progress;
use super::report::{Findings, UrlCount};
use super::stats::{Hist, HistState, Percentiles, SharedHist, lock};

/// Longest a single connect (TCP + upgrade + welcome) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the server may take to answer one request of ours.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What every test shares: where to connect, how, and the run's identity.
pub struct Ctx {
    /// The server URLs connections are spread over (several for the nodes
    /// of one cluster); never empty.
    pub targets: Vec<Target>,
    pub source_ips: u8,
    /// This process's first source address is 127.0.0.(base + 1): a
    /// `--workers` run gives each worker its own addresses.
    pub source_base: u8,
    /// The connections this process opens (all of them, unless it is a
    /// worker of a `--workers` run).
    pub share: Share,
    pub in_flight: usize,
    /// The server processes to read CPU and memory of (`--server-pid`,
    /// one per node); figures are summed over them.
    pub server_pids: Vec<u32>,
    /// TLS settings for wss:// (`--ca`, or the public web roots).
    pub tls: Option<Arc<futures_rustls::rustls::ClientConfig>>,
    pub run_id: String,
    pub welcome: Welcome,
    pub progress: Progress,
    /// Set when the run must wind down (its deadline passed).
    pub stop: AtomicBool,
}

impl Ctx {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs a test's scenario under the run's hard deadline, then tells
    /// every task to wind down and closes the progress bar. `None` means
    /// the deadline cut the scenario short.
    pub async fn run_bounded<T>(
        &self,
        deadline: Duration,
        scenario: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let outcome = natter_runtime::timeout(deadline, scenario).await;
        self.stop.store(true, Ordering::Relaxed);
        self.progress.finish();
        outcome
    }

    /// Connection `i`'s options: its source address, round-robin over
    /// 127.0.0.1 … 127.0.0.N with `--source-ips N` (over this worker's
    /// own N addresses in a `--workers` run, where `i` is the connection's
    /// place among this worker's).
    pub fn options(&self, i: usize) -> ConnectOptions {
        ConnectOptions {
            source_ip: source_ip_from(self.source_base, self.source_ips, i),
            tls: self.tls.clone(),
        }
    }

    /// The URL the `n`-th connection of a kind takes: [`round_robin`] over
    /// the run's URLs, so with one URL it is always that one.
    pub fn target(&self, n: usize) -> &Target {
        &self.targets[round_robin(n, self.targets.len())]
    }

    /// How many connections went to each URL, in the order given.
    pub fn url_counts(&self) -> Vec<UrlCount> {
        self.targets.iter().map(Target::count).collect()
    }

    /// Opens connection `i` to `to` (asking for `nick` if given),
    /// recording the outcome in `stats` and in `to`'s counts.
    pub async fn connect(
        &self,
        i: usize,
        to: &Target,
        nick: Option<&str>,
        stats: &ConnectStats,
    ) -> Option<LeanConnection> {
        let url = to.url_with_nick(nick);
        to.attempted.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = natter_runtime::timeout(
            CONNECT_TIMEOUT,
            Client::connect_lean(&url, &self.options(i)),
        )
        .await;
        match result {
            Some(Ok(conn)) => {
                stats.connected(started.elapsed());
                to.connected.fetch_add(1, Ordering::Relaxed);
                Some(conn)
            }
            Some(Err(e)) => {
                stats.failed(&e);
                None
            }
            None => {
                stats.failed_with(format!(
                    "connect timed out after {} s",
                    CONNECT_TIMEOUT.as_secs()
                ));
                None
            }
        }
    }
}

/// Which of `urls` URLs the `n`-th connection of a kind takes: each in
/// turn, so connections spread evenly over the nodes of a cluster and the
/// split is known in advance (the report's per-URL counts can be checked
/// against it).
pub fn round_robin(n: usize, urls: usize) -> usize {
    n % urls.max(1)
}

/// One server URL of the run, and how many connections went to it: with
/// several URLs (the nodes of one cluster) the report shows the split, and
/// a node that refused its share shows as attempts without connections.
pub struct Target {
    pub url: String,
    attempted: AtomicU64,
    connected: AtomicU64,
}

impl Target {
    pub fn new(url: String) -> Target {
        Target {
            url,
            attempted: AtomicU64::new(0),
            connected: AtomicU64::new(0),
        }
    }

    /// The URL asking for `nick` (as given without one).
    pub fn url_with_nick(&self, nick: Option<&str>) -> Cow<'_, str> {
        let Some(nick) = nick else {
            return Cow::Borrowed(&self.url);
        };
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Cow::Owned(format!("{}{sep}nick={nick}", self.url))
    }

    fn count(&self) -> UrlCount {
        UrlCount {
            url: self.url.clone(),
            connections: self.connected.load(Ordering::Relaxed),
            attempted: self.attempted.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
pub fn source_ip(source_ips: u8, i: usize) -> Option<IpAddr> {
    source_ip_from(0, source_ips, i)
}

/// Connection `i`'s source address among 127.0.0.(base + 1) …
/// 127.0.0.(base + source_ips); `None` (the system's choice) for 0.
pub fn source_ip_from(base: u8, source_ips: u8, i: usize) -> Option<IpAddr> {
    (source_ips > 0).then(|| {
        let last = base.saturating_add(1 + (i % usize::from(source_ips)) as u8);
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    })
}

/// Runs `f(i)` for every `i` in `range`, at most `in_flight` at a time,
/// on spawned tasks; stops taking new indices once `ctx.stop` is set.
pub async fn pool<F, Fut>(ctx: &Arc<Ctx>, range: std::ops::Range<usize>, f: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(range.start));
    let workers = ctx.in_flight.clamp(1, range.len().max(1));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (f, next, ctx) = (f.clone(), next.clone(), ctx.clone());
            let end = range.end;
            natter_runtime::spawn(async move {
                while !ctx.stopped() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    f(i).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await;
    }
}

/// Connection attempts: how many succeeded, how long they took, why the
/// others failed.
#[derive(Default)]
pub struct ConnectStats {
    pub ok: AtomicU64,
    /// HTTP 503: the server is at its connection cap.
    pub refused: AtomicU64,
    /// Failures the server is answerable for (reset, timeout, bad handshake).
    pub failed: AtomicU64,
    /// Failures on the tester's side (out of ports or file descriptors).
    pub local: AtomicU64,
    /// Connected, but joining the room failed.
    pub join_failed: AtomicU64,
    times: SharedHist,
    samples: Mutex<BTreeMap<String, u64>>,
}

/// The error with its cause (the library's message omits the OS error).
pub fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { addr, source } => format!("cannot reach {addr}: {source}"),
        other => other.to_string(),
    }
}

/// errno values that mean the tester, not the server, ran out of something.
fn is_local_failure(e: &ClientError) -> bool {
    match e {
        // EMFILE, ENFILE, EADDRINUSE, EADDRNOTAVAIL, ENOBUFS
        ClientError::Unreachable { source, .. } => {
            matches!(source.raw_os_error(), Some(24 | 23 | 98 | 99 | 105))
        }
        ClientError::BadUrl { .. } => true,
        _ => false,
    }
}

impl ConnectStats {
    pub fn connected(&self, took: Duration) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.times.record_duration(took);
    }

    pub fn failed(&self, e: &ClientError) {
        if matches!(e, ClientError::ServerFull) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut text = describe(e);
        if is_local_failure(e) {
            self.local.fetch_add(1, Ordering::Relaxed);
            text.push_str(" (tester side: raise the open-files limit or use --source-ips)");
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.sample(text);
    }

    /// A failure without a `ClientError` (a connect that timed out).
    pub fn failed_with(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.sample(why);
    }

    /// Connected, but the join (or another set-up request) failed.
    pub fn join_failed(&self, why: String) {
        self.join_failed.fetch_add(1, Ordering::Relaxed);
        self.sample(why);
    }

    fn sample(&self, why: String) {
        let mut samples = lock(&self.samples);
        if samples.len() < 8 || samples.contains_key(&why) {
            *samples.entry(why).or_default() += 1;
        }
    }

    pub fn summary(&self) -> ConnectSummary {
        self.state().summary()
    }

    /// The raw counts, for a `--workers` parent to merge.
    pub fn state(&self) -> ConnectState {
        ConnectState {
            connected: self.ok.load(Ordering::Relaxed),
            refused_503: self.refused.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failed_tester_side: self.local.load(Ordering::Relaxed),
            join_failed: self.join_failed.load(Ordering::Relaxed),
            times: self.times.state(),
            reasons: lock(&self.samples).clone(),
        }
    }
}

/// [`ConnectStats`] as plain data: one process's, or several merged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectState {
    pub connected: u64,
    pub refused_503: u64,
    pub failed: u64,
    pub failed_tester_side: u64,
    pub join_failed: u64,
    pub times: HistState,
    pub reasons: BTreeMap<String, u64>,
}

impl ConnectState {
    /// Adds another process's counts: sums, and the connect times merged.
    pub fn merge(&mut self, other: &ConnectState) {
        self.connected += other.connected;
        self.refused_503 += other.refused_503;
        self.failed += other.failed;
        self.failed_tester_side += other.failed_tester_side;
        self.join_failed += other.join_failed;
        let mut times = Hist::new();
        times.merge(&self.times);
        times.merge(&other.times);
        self.times = times.state();
        for (why, n) in &other.reasons {
            *self.reasons.entry(why.clone()).or_default() += n;
        }
    }

    pub fn summary(&self) -> ConnectSummary {
        let mut times = Hist::new();
        times.merge(&self.times);
        ConnectSummary {
            connected: self.connected,
            refused_503: self.refused_503,
            failed: self.failed,
            failed_tester_side: self.failed_tester_side,
            join_failed: self.join_failed,
            connect_time: times.summary(),
            failure_reasons: self
                .reasons
                .iter()
                .map(|(why, n)| format!("{n} × {why}"))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectSummary {
    pub connected: u64,
    pub refused_503: u64,
    pub failed: u64,
    pub failed_tester_side: u64,
    /// Connected but could not join the room.
    pub join_failed: u64,
    /// From starting the TCP connect until the `welcome` arrived.
    pub connect_time: Option<Percentiles>,
    /// The first few distinct reasons, with counts.
    pub failure_reasons: Vec<String>,
}

impl ConnectSummary {
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} connected, {} refused (503), {} failed",
            self.connected, self.refused_503, self.failed
        );
        if self.join_failed > 0 {
            s.push_str(&format!(", {} could not join", self.join_failed));
        }
        if self.failed_tester_side > 0 {
            s.push_str(&format!(
                ", {} failed on the tester's side",
                self.failed_tester_side
            ));
        }
        s
    }

    /// Adds the failures to the findings: refusals count as a problem
    /// unless `refusals_ok`.
    pub fn judge(&self, findings: &mut Findings, refusals_ok: bool) {
        let reasons = self.failure_reasons.join("; ");
        findings.problem_if(self.failed, |n| {
            format!("{n} connection attempts failed: {reasons}")
        });
        findings.problem_if(self.join_failed, |n| {
            format!("{n} connections could not join their room: {reasons}")
        });
        if !refusals_ok {
            findings.problem_if(self.refused_503, |n| {
                format!(
                    "{n} connections were refused with 503 (server at its connection cap; \
                     start it with a larger --max-connections)"
                )
            });
        }
        findings.error_if(self.failed_tester_side, |n| {
            format!("{n} connections failed on the tester's side: {reasons}")
        });
    }
}

/// How connections ended before the tester closed them.
#[derive(Default)]
pub struct CloseLog {
    /// Set once the tester starts closing: later ends are expected.
    pub closing: AtomicBool,
    codes: Mutex<BTreeMap<u16, (u64, String)>>,
    pub shutdown_events: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CloseCount {
    pub code: u16,
    pub count: u64,
    /// The reason given with the first of them.
    pub reason: String,
}

/// "none", or "N × CODE (reason), …" for a summary line.
pub fn describe_closes(closes: &[CloseCount]) -> String {
    if closes.is_empty() {
        return "none".to_owned();
    }
    closes
        .iter()
        .map(|c| format!("{} × {} ({})", c.count, c.code, c.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CloseLog {
    /// Records how a connection ended (ignored once the tester is closing).
    /// Returns whether the end was unexpected.
    pub fn ended(&self, info: Option<&CloseInfo>) -> bool {
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        let (code, reason) = match info {
            Some(info) => (info.code, info.reason.clone()),
            None => (1006, "connection lost".to_owned()),
        };
        let mut codes = lock(&self.codes);
        let entry = codes.entry(code).or_insert((0, reason));
        entry.0 += 1;
        true
    }

    pub fn shutdown(&self) {
        self.shutdown_events.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unexpected(&self) -> u64 {
        lock(&self.codes).values().map(|(n, _)| n).sum()
    }

    pub fn summary(&self) -> Vec<CloseCount> {
        self.state().summary()
    }

    /// The raw counts, for a `--workers` parent to merge.
    pub fn state(&self) -> CloseState {
        CloseState {
            codes: lock(&self.codes).clone(),
            shutdowns: self.shutdown_events.load(Ordering::Relaxed),
        }
    }

    /// Closes by the server, and shutdown events, during the run are
    /// problems: a load test expects every connection to stay open.
    pub fn judge(&self, findings: &mut Findings) {
        judge_closes(
            &self.summary(),
            self.shutdown_events.load(Ordering::Relaxed),
            findings,
        );
    }
}

/// [`CloseLog`] as plain data: close codes with their count and first
/// reason, and shutdown events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CloseState {
    pub codes: BTreeMap<u16, (u64, String)>,
    pub shutdowns: u64,
}

impl CloseState {
    /// Adds another process's closes (a code's first reason is kept).
    pub fn merge(&mut self, other: &CloseState) {
        for (&code, (n, reason)) in &other.codes {
            self.codes.entry(code).or_insert((0, reason.clone())).0 += n;
        }
        self.shutdowns += other.shutdowns;
    }

    pub fn summary(&self) -> Vec<CloseCount> {
        self.codes
            .iter()
            .map(|(&code, (count, reason))| CloseCount {
                code,
                count: *count,
                reason: reason.clone(),
            })
            .collect()
    }
}

/// Sums per-URL counts of several processes (the same URLs, in order).
pub fn merge_url_counts(into: &mut Vec<UrlCount>, other: &[UrlCount]) {
    if into.is_empty() {
        *into = other.to_vec();
        return;
    }
    for (a, b) in into.iter_mut().zip(other) {
        a.connections += b.connections;
        a.attempted += b.attempted;
    }
}

/// "none", or "N × CODE (reason), …" leaving out an empty reason.
fn close_line(closes: &[CloseCount]) -> String {
    if closes.is_empty() {
        return "none".into();
    }
    closes
        .iter()
        .map(|c| {
            if c.reason.is_empty() {
                format!("{} × {}", c.count, c.code)
            } else {
                format!("{} × {} ({})", c.count, c.code, c.reason)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`CloseLog::judge`] over closes already summed up, for a test that
/// judges its tallied numbers rather than the live log.
pub fn judge_closes(closes: &[CloseCount], shutdowns: u64, findings: &mut Findings) {
    let n = closes.iter().map(|c| c.count).sum();
    findings.problem_if(n, |n| {
        format!(
            "{n} connections were closed by the server or lost during the run: {}",
            close_line(closes)
        )
    });
    judge_shutdowns(shutdowns, findings);
}

/// Shutdown events during the run are a problem: the server announced it
/// was going away while the test needed it.
pub fn judge_shutdowns(shutdowns: u64, findings: &mut Findings) {
    findings.problem_if(shutdowns, |n| {
        format!("{n} connections got a shutdown event during the run")
    });
}

/// Counts running reader tasks; a task holds one [`AliveGuard`].
#[derive(Default)]
pub struct Alive(AtomicUsize);

pub struct AliveGuard(Arc<Alive>);

impl Alive {
    pub fn enter(self: &Arc<Self>) -> AliveGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        AliveGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until `done()` holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        natter_runtime::sleep(Duration::from_millis(20)).await;
    }
}

/// Sleeps until `when` (at once if it has passed).
pub async fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        natter_runtime::sleep(when - now).await;
    }
}

/// Sends close frames on every connection (at most `in_flight` at once)
/// and gives up after `limit`.
pub async fn close_all(senders: Vec<LeanSender>, in_flight: usize, limit: Duration) {
    let each = Duration::from_secs(2);
    let all =
        futures::stream::iter(senders).for_each_concurrent(in_flight.max(1), |mut s| async move {
            let _ = natter_runtime::timeout(each, s.close()).await;
        });
    let _ = natter_runtime::timeout(limit, all).await;
}

/// Joins `room` and waits for the `ok`, skipping other frames.
pub async fn join(conn: &mut LeanConnection, room: &str) -> Result<JoinOk, String> {
    let request = Request::Join {
        room: room.to_owned(),
        since: None,
        epoch: None,
    };
    match request_reply(conn, request).await? {
        Reply::Join(ok) => Ok(ok),
        other => Err(format!("unexpected reply to join: {other:?}")),
    }
}

/// Sends a request and waits (bounded) for its reply, skipping other frames.
pub async fn request_reply(conn: &mut LeanConnection, request: Request) -> Result<Reply, String> {
    let kind = request.kind();
    let id = conn
        .sender
        .send(request)
        .await
        .map_err(|e| format!("{kind}: {e}"))?;
    let wait = async {
        loop {
            match conn.receiver.next().await {
                None => {
                    return Err(format!(
                        "{kind}: connection ended before the reply ({})",
                        close_text(conn.receiver.close_info())
                    ));
                }
                Some(ServerMessage::Ok(ok)) if ok.id.as_ref() == Some(&id) => return Ok(ok.reply),
                Some(ServerMessage::Error(e)) if e.id.as_ref() == Some(&id) => {
                    return Err(format!("{kind} refused: {}: {}", e.code, e.message));
                }
                Some(_) => {}
            }
        }
    };
    natter_runtime::timeout(REPLY_TIMEOUT, wait)
        .await
        .unwrap_or_else(|| {
            Err(format!(
                "{kind}: no reply within {} s",
                REPLY_TIMEOUT.as_secs()
            ))
        })
}

pub fn close_text(info: Option<&CloseInfo>) -> String {
    info.map_or_else(|| "no close frame".to_owned(), |i| i.to_string())
}

/// The `type` of a frame, read without allocating (other fields are skipped),
/// so a reader can skip frames it does not care about before decoding them
/// fully into the protocol types.
pub fn frame_type(text: &str) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    serde_json::from_str::<Kind>(text).ok().map(|k| k.kind)
}

/// The fields a subscriber needs from any frame, in one pass and without
/// allocating (unless a string has escapes): at hundreds of thousands of
/// `message` events a second, decoding each into `ServerMessage` (an
/// internally tagged enum, which serde buffers field by field before
/// picking the variant) was most of the tester's CPU.
#[derive(Deserialize)]
pub struct FrameView<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// A `message` event's room sequence number.
    pub seq: Option<u64>,
    /// A `message` event's text (empty in other frames). A bare `Cow`:
    /// serde borrows only `Cow<str>` itself, not one inside an `Option`.
    #[serde(borrow, default)]
    pub text: Cow<'a, str>,
}

impl<'a> FrameView<'a> {
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

pub use super::sys::unix_micros;

/// A short id for this run (6 lower-case letters and digits), used in room
/// names and nicks so runs never mix.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finaliser: spreads nearby times over the whole range.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^= x >> 31;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..6)
        .map(|i| DIGITS[((x >> (i * 6)) % 36) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_type_reads_only_the_type() {
        assert_eq!(
            frame_type(r#"{"room":"a","type":"presence","nick":"x"}"#).as_deref(),
            Some("presence")
        );
        assert_eq!(frame_type("nope"), None);
    }

    #[test]
    fn source_ips_round_robin() {
        assert_eq!(source_ip(0, 5), None);
        assert_eq!(source_ip(3, 0).unwrap().to_string(), "127.0.0.1");
        assert_eq!(source_ip(3, 4).unwrap().to_string(), "127.0.0.2");
        // Worker 2 of a --source-ips 3 run: 127.0.0.7 … 127.0.0.9.
        assert_eq!(source_ip_from(6, 3, 0).unwrap().to_string(), "127.0.0.7");
        assert_eq!(source_ip_from(6, 3, 5).unwrap().to_string(), "127.0.0.9");
    }

    /// Each connection takes the next URL, and one URL takes them all.
    #[test]
    fn urls_round_robin() {
        let picks: Vec<usize> = (0..7).map(|n| round_robin(n, 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert!((0..5).all(|n| round_robin(n, 1) == 0));
    }

    #[test]
    fn a_nick_is_added_to_the_query() {
        let plain = Target::new("ws://h/ws".into());
        assert_eq!(plain.url_with_nick(None), "ws://h/ws");
        assert_eq!(plain.url_with_nick(Some("al")), "ws://h/ws?nick=al");
        let query = Target::new("ws://h/ws?x=1".into());
        assert_eq!(query.url_with_nick(Some("al")), "ws://h/ws?x=1&nick=al");
    }

    #[test]
    fn run_ids_are_valid_room_and_nick_parts() {
        let id = run_id();
        assert_eq!(id.len(), 6);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
}

/// The part of a run one process does: connections with index ≡ `index`
/// (mod `of`). A lone process is `0 of 1` and does everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: usize,
    pub of: usize,
}

impl Share {
    pub const ALL: Share = Share { index: 0, of: 1 };

    pub fn owns(&self, i: usize) -> bool {
        i % self.of == self.index
    }

    /// The indices in `0..n` this share owns, in order.
    pub fn of_range(&self, n: usize) -> impl Iterator<Item = usize> + use<> {
        (self.index..n).step_by(self.of)
    }
}
