//! The connections of one `natter load fanout` process (the whole run, or
//! one worker's share): publishers on their schedule, subscribers checking
//! every delivery, and the raw numbers they keep.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use natter::{LeanReceiver, LeanSender};
use natter_protocol::{Id, Reply, ServerMessage};

use crate::load::net::{self, Alive, AliveGuard, CloseLog, ConnectStats, Ctx, FrameView};
use crate::load::report::count;
use crate::load::series::{CpuSources, Series};
use crate::load::stats::{LOCAL_BATCH, SeqTracker, SharedHist, lock};
use crate::load::sys::{CpuSnapshot, CpuWindow};

use super::params::{Params, STALL_WINDOW, due_at};
use super::state::{FanoutState, PubState, RoomState, SubState};

/// One subscriber's view, updated by its reader task.
pub(super) struct Sub {
    pub(super) joined: bool,
    pub(super) room_seq: SeqTracker,
    /// Indexed by publisher / rooms (the publishers of this room).
    pub(super) per_pub: Vec<SeqTracker>,
    /// First deliveries of messages sent in the measured window.
    pub(super) measured: u64,
    /// Latencies not yet flushed into the shared histogram.
    pub(super) latencies: Vec<u64>,
    /// (interval, latency µs) of every first delivery, warm-up included,
    /// not yet flushed into the series.
    pub(super) timed: Vec<(u32, u64)>,
    /// Messages in our room that this run did not send.
    pub(super) foreign: u64,
}

/// One publisher. Its `say` n (its sequence number, from 1) has request
/// id `first_id + n - 1`, which maps each reply back to a message.
pub(super) struct Pub {
    pub(super) sender: Mutex<Option<LeanSender>>,
    /// Connected and joined its room: it says on the schedule.
    pub(super) joined: AtomicBool,
    pub(super) first_id: AtomicI64,
    /// Sequence number of the first message of the measured window.
    pub(super) first_measured: AtomicU64,
    pub(super) sent: AtomicU64,
    pub(super) sent_measured: AtomicU64,
    pub(super) oks: AtomicU64,
    /// `error` replies: messages the server refused (never delivered).
    pub(super) rejected: AtomicU64,
    /// Highest sequence number that got a reply (replies come in order).
    pub(super) highest_replied: AtomicU64,
    pub(super) max_lag_us: AtomicU64,
    /// Ok round trips (µs) of measured says not yet flushed into
    /// [`Fanout::ok_latency`]; only this publisher's reply reader and the
    /// final tally take the lock.
    pub(super) ok_latencies: Mutex<Vec<u64>>,
}

impl Default for Pub {
    fn default() -> Self {
        Pub {
            sender: Mutex::default(),
            joined: AtomicBool::new(false),
            first_id: AtomicI64::new(i64::MAX),
            first_measured: AtomicU64::new(u64::MAX),
            sent: AtomicU64::new(0),
            sent_measured: AtomicU64::new(0),
            oks: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            highest_replied: AtomicU64::new(0),
            max_lag_us: AtomicU64::new(0),
            ok_latencies: Mutex::default(),
        }
    }
}

#[derive(Default)]
pub(super) struct Room {
    pub(super) subs_joined: AtomicU64,
    pub(super) pubs_joined: AtomicU64,
    /// Messages the server acknowledged with `ok`: each is owed to every
    /// subscriber of the room.
    pub(super) acked: AtomicU64,
    pub(super) acked_measured: AtomicU64,
    /// Highest seq an `ok` reply announced.
    pub(super) last_seq: AtomicU64,
}

pub(super) struct Fanout {
    pub(super) ctx: Arc<Ctx>,
    pub(super) p: Params,
    pub(super) room_names: Vec<String>,
    pub(super) connects: ConnectStats,
    pub(super) closes: CloseLog,
    pub(super) subs: Vec<Mutex<Sub>>,
    pub(super) pubs: Vec<Pub>,
    pub(super) rooms: Vec<Room>,
    pub(super) latency: SharedHist,
    /// Round trip of a measured `say` to its `ok`, from the time the say
    /// was due on its publisher's schedule (see [`Fanout::drain_replies`]).
    pub(super) ok_latency: SharedHist,
    /// When the publishers' schedules start (`t0`): set once, before any
    /// publisher sends, so every reply reader can compute due times.
    pub(super) schedule_start: OnceLock<Instant>,
    /// First deliveries to subscribers, warm-up included.
    pub(super) delivered: AtomicU64,
    /// Publishers still on their schedule.
    pub(super) publishing: AtomicU64,
    /// Set when the drain ended with deliveries missing and none arrived
    /// during a further [`STALL_WINDOW`]: they had stopped, not slowed.
    pub(super) stalled: AtomicBool,
    pub(super) reply_errors: Mutex<BTreeMap<String, u64>>,
    pub(super) sub_senders: Mutex<Vec<LeanSender>>,
    pub(super) alive: Arc<Alive>,
    pub(super) window: Mutex<(Option<CpuSnapshot>, Option<CpuSnapshot>)>,
    /// The per-second series.
    pub(super) series: Arc<Series>,
    /// `schedule_start` as unix µs (for the series' offered rate, and the
    /// one start every worker of a `--workers` run paces by).
    pub(super) schedule_start_us: OnceLock<u64>,
    /// Subscribers joined per room in the whole run, when this process is
    /// a worker and holds only some of them (its parent tells it): what
    /// each acknowledged say is owed to.
    pub(super) global_subs: OnceLock<Vec<u64>>,
}

/// Connection `i`'s place among its kind, which picks its URL
/// ([`Ctx::target`]): subscribers are connections 0..subs and publishers
/// the rest, and each kind takes the URLs in turn from the first,
/// independently, so publishers spread over a cluster's nodes as evenly as
/// subscribers whatever their numbers (2 URLs and 2 publishers: one
/// publisher on each node).
fn nth_of_kind(i: usize, subs: usize) -> usize {
    if i < subs { i } else { i - subs }
}

/// A warning when rooms and URLs share a factor. Both are assigned
/// round-robin, so room k's subscribers and publishers all use the URLs u
/// with u ≡ k (mod gcd(rooms, urls)): only urls / gcd of them. A cluster
/// run is for messages crossing nodes, which then happens less or, when
/// the URLs divide the rooms, not at all.
pub(super) fn rooms_urls_warning(rooms: usize, urls: usize) -> Option<String> {
    let g = gcd(rooms, urls);
    if g <= 1 {
        return None;
    }
    let reach = urls / g;
    let what = if reach == 1 {
        "all on one URL: no message crosses nodes".to_owned()
    } else {
        format!("on only {reach} of the {urls} URLs")
    };
    Some(format!(
        "with {rooms} rooms over {urls} URLs (both round-robin), each room's subscribers \
         and publishers are {what}; numbers with no common factor spread every room over \
         every URL"
    ))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// How many of `pubs` publishers land in room `k` of `rooms`.
fn pubs_in_room(pubs: usize, rooms: usize, k: usize) -> usize {
    (pubs + rooms - 1 - k) / rooms
}

impl Fanout {
    /// The run's state, its series recording from `origin_us` (CPU read
    /// only when `read_cpu`: a worker leaves that to its parent).
    pub(super) fn new(ctx: Arc<Ctx>, p: Params, origin_us: u64, read_cpu: bool) -> Arc<Fanout> {
        let alive: Arc<Alive> = Arc::default();
        let open = alive.clone();
        let series = Series::start(
            origin_us,
            move || open.count() as u64,
            CpuSources {
                enabled: read_cpu,
                server_pids: ctx.server_pids.clone(),
                other_testers: Vec::new(),
            },
        );
        let room_names = (0..p.rooms)
            .map(|k| format!("load-{}-{k}", ctx.run_id))
            .collect();
        let subs = (0..p.subs)
            .map(|i| {
                let k = i % p.rooms;
                Mutex::new(Sub {
                    joined: false,
                    room_seq: SeqTracker::new(0),
                    per_pub: (0..pubs_in_room(p.pubs, p.rooms, k))
                        .map(|_| SeqTracker::new(0))
                        .collect(),
                    measured: 0,
                    latencies: Vec::new(),
                    timed: Vec::new(),
                    foreign: 0,
                })
            })
            .collect();
        Arc::new(Fanout {
            pubs: (0..p.pubs).map(|_| Pub::default()).collect(),
            rooms: (0..p.rooms).map(|_| Room::default()).collect(),
            ctx,
            p,
            room_names,
            connects: ConnectStats::default(),
            closes: CloseLog::default(),
            subs,
            latency: SharedHist::default(),
            ok_latency: SharedHist::default(),
            schedule_start: OnceLock::new(),
            delivered: AtomicU64::new(0),
            publishing: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            reply_errors: Mutex::default(),
            sub_senders: Mutex::default(),
            alive,
            window: Mutex::default(),
            series,
            schedule_start_us: OnceLock::new(),
            global_subs: OnceLock::new(),
        })
    }

    /// When publisher `j`'s say number `n` (from 1) is due, in seconds
    /// after the schedule start ([`due_at`]).
    pub(super) fn due_at(&self, j: usize, n: u64) -> f64 {
        due_at(self.p.rate, self.p.pubs, j, n)
    }

    pub(super) fn sent(&self) -> u64 {
        self.pubs
            .iter()
            .map(|p| p.sent.load(Ordering::Relaxed))
            .sum()
    }

    pub(super) fn oks(&self) -> u64 {
        self.pubs
            .iter()
            .map(|p| p.oks.load(Ordering::Relaxed))
            .sum()
    }

    pub(super) fn rejected(&self) -> u64 {
        self.pubs
            .iter()
            .map(|p| p.rejected.load(Ordering::Relaxed))
            .sum()
    }

    /// First deliveries owed to subscribers so far, warm-up included, for
    /// the says this process's publishers got acknowledged (to every
    /// subscriber of the room, in whichever process).
    pub(super) fn expected_all(&self) -> u64 {
        let global = self.global_subs.get();
        self.rooms
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let subs = global.map_or_else(
                    || r.subs_joined.load(Ordering::Relaxed),
                    |g| g.get(k).copied().unwrap_or(0),
                );
                r.acked.load(Ordering::Relaxed) * subs
            })
            .sum()
    }

    /// The connection indices this process opens (subscribers first, then
    /// publishers): all, or a worker's share of each kind.
    pub(super) fn my_connections(&self) -> Vec<usize> {
        let share = self.ctx.share;
        let subs = share.of_range(self.p.subs);
        let pubs = share.of_range(self.p.pubs).map(|j| self.p.subs + j);
        subs.chain(pubs).collect()
    }

    /// Connects and joins connection `i` (subscribers first, then
    /// publishers), the `nth` this process opens (which picks its source
    /// address).
    pub(super) async fn open(self: Arc<Self>, nth: usize, i: usize) {
        let ctx = &self.ctx;
        let is_sub = i < self.p.subs;
        let k = if is_sub { i } else { i - self.p.subs } % self.p.rooms;
        let to = ctx.target(nth_of_kind(i, self.p.subs));
        let conn = ctx.connect(nth, to, None, &self.connects).await;
        let Some(mut conn) = conn else {
            ctx.progress.inc();
            return;
        };
        let joined = net::join(&mut conn, &self.room_names[k]).await;
        ctx.progress.inc();
        let join = match joined {
            Ok(join) => join,
            Err(why) => {
                self.connects.join_failed(why);
                return;
            }
        };
        let guard = self.alive.enter();
        if is_sub {
            {
                let mut sub = lock(&self.subs[i]);
                sub.joined = true;
                sub.room_seq = SeqTracker::new(join.seq);
            }
            self.rooms[k].subs_joined.fetch_add(1, Ordering::Relaxed);
            lock(&self.sub_senders).push(conn.sender);
            natter_runtime::spawn(self.clone().subscribe(i, k, conn.receiver, guard));
        } else {
            let j = i - self.p.subs;
            *lock(&self.pubs[j].sender) = Some(conn.sender);
            self.pubs[j].joined.store(true, Ordering::Relaxed);
            self.rooms[k].pubs_joined.fetch_add(1, Ordering::Relaxed);
            natter_runtime::spawn(self.clone().drain_replies(j, k, conn.receiver, guard));
        }
    }

    /// A subscriber's reader: checks and times every message.
    pub(super) async fn subscribe(
        self: Arc<Self>,
        i: usize,
        k: usize,
        mut receiver: LeanReceiver,
        _alive: AliveGuard,
    ) {
        let run = self.ctx.run_id.as_str();
        let (rooms, pubs) = (self.p.rooms, self.p.pubs);
        while let Some(frame) = receiver.next_text().await {
            let Some(view) = FrameView::parse(&frame) else {
                continue;
            };
            let (seq, text) = match (&*view.kind, view.seq, &view.text) {
                ("message", Some(seq), text) => (seq, text),
                ("shutdown", ..) => {
                    self.closes.shutdown();
                    continue;
                }
                _ => continue, // presence, our join's reply
            };
            let now = net::unix_micros();
            let payload = Payload::parse(text, run);
            let mut sub = lock(&self.subs[i]);
            sub.room_seq.observe(seq);
            match payload {
                Some(p) if p.publisher < pubs && p.publisher % rooms == k => {
                    let seen = sub.per_pub[p.publisher / rooms].observe(p.seq);
                    if seen.is_new() {
                        self.delivered.fetch_add(1, Ordering::Relaxed);
                        let latency = now.saturating_sub(p.micros);
                        let at = self.series.interval_of(now) as u32;
                        sub.timed.push((at, latency));
                        if p.measured {
                            sub.measured += 1;
                            sub.latencies.push(latency);
                        }
                    }
                }
                _ => sub.foreign += 1,
            }
            if sub.latencies.len() >= LOCAL_BATCH {
                self.latency.flush(&mut sub.latencies);
            }
            if sub.timed.len() >= LOCAL_BATCH {
                self.series.flush(&mut sub.timed);
            }
        }
        self.closes.ended(receiver.close_info());
    }

    /// A publisher's reader: counts `ok` replies, times them, notes errors,
    /// skips the room's messages.
    ///
    /// The ok round trip of say number `n` is measured from the time that
    /// say was *due* on the publisher's fixed schedule ([`Fanout::due_at`],
    /// the formula `publish` paces by), not from when it was actually sent.
    /// A publisher held up by the server's backpressure sends late, and
    /// timing from the actual send would leave that wait out of exactly the
    /// samples that waited longest (coordinated omission); from the due
    /// time, it is in the round trip. Only says of the measured window
    /// count, like the delivery latency.
    pub(super) async fn drain_replies(
        self: Arc<Self>,
        j: usize,
        k: usize,
        mut receiver: LeanReceiver,
        _alive: AliveGuard,
    ) {
        while let Some(frame) = receiver.next_text().await {
            match net::frame_type(&frame).as_deref() {
                Some("ok" | "error") => {}
                Some("shutdown") => {
                    self.closes.shutdown();
                    continue;
                }
                _ => continue,
            }
            let now = Instant::now();
            let me = &self.pubs[j];
            // The publisher sequence number a reply answers.
            let first_id = me.first_id.load(Ordering::Relaxed);
            let pseq = |id: &Option<Id>| match id {
                Some(Id::Int(id)) if *id >= first_id => Some((id - first_id) as u64 + 1),
                _ => None,
            };
            match serde_json::from_str(&frame) {
                Ok(ServerMessage::Ok(ok)) => {
                    let (Reply::Say { seq, .. }, Some(n)) = (&ok.reply, pseq(&ok.id)) else {
                        continue;
                    };
                    me.oks.fetch_add(1, Ordering::Relaxed);
                    me.highest_replied.fetch_max(n, Ordering::Relaxed);
                    let room = &self.rooms[k];
                    room.last_seq.fetch_max(*seq, Ordering::Relaxed);
                    room.acked.fetch_add(1, Ordering::Relaxed);
                    if n >= me.first_measured.load(Ordering::Relaxed) {
                        room.acked_measured.fetch_add(1, Ordering::Relaxed);
                        self.record_ok(j, n, now);
                    }
                }
                Ok(ServerMessage::Error(e)) => {
                    if let Some(n) = pseq(&e.id) {
                        me.rejected.fetch_add(1, Ordering::Relaxed);
                        me.highest_replied.fetch_max(n, Ordering::Relaxed);
                    }
                    let key = format!("{}: {}", e.code, e.message);
                    *lock(&self.reply_errors).entry(key).or_default() += 1;
                }
                _ => {}
            }
        }
        self.closes.ended(receiver.close_info());
    }

    /// Records the round trip of publisher `j`'s say `n`, answered at `now`.
    pub(super) fn record_ok(&self, j: usize, n: u64, now: Instant) {
        // Always set before publishers send; never otherwise.
        let Some(&t0) = self.schedule_start.get() else {
            return;
        };
        let due = t0 + Duration::from_secs_f64(self.due_at(j, n));
        let micros = now.saturating_duration_since(due).as_micros();
        let mut pending = lock(&self.pubs[j].ok_latencies);
        pending.push(u64::try_from(micros).unwrap_or(u64::MAX));
        if pending.len() >= LOCAL_BATCH {
            self.ok_latency.flush(&mut pending);
        }
    }

    /// Publisher `j` says its messages on schedule from `t0`.
    pub(super) async fn publish(
        self: Arc<Self>,
        j: usize,
        mut sender: LeanSender,
        t0: Instant,
    ) -> LeanSender {
        let k = j % self.p.rooms;
        let room = &self.room_names[k];
        let run = &self.ctx.run_id;
        let me = &self.pubs[j];
        let warm_end = self.p.warmup.as_secs_f64();
        let end = warm_end + self.p.duration.as_secs_f64();
        let pad = self.p.size;
        let mut n: u64 = 0;
        while !self.ctx.stopped() {
            // `n` says so far: the next one is number n + 1.
            let at = self.due_at(j, n + 1);
            if at >= end {
                break;
            }
            let due = t0 + Duration::from_secs_f64(at);
            net::sleep_until(due).await;
            let lag = Instant::now().saturating_duration_since(due);
            me.max_lag_us
                .fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
            n += 1;
            let measured = at >= warm_end;
            let id = sender.take_id();
            if n == 1 {
                me.first_id.store(id, Ordering::Relaxed);
            }
            if measured && me.first_measured.load(Ordering::Relaxed) == u64::MAX {
                me.first_measured.store(n, Ordering::Relaxed);
            }
            let micros = net::unix_micros();
            let mut text = String::with_capacity(96 + room.len() + pad);
            let _ = write!(
                text,
                r#"{{"type":"say","id":{id},"room":"{room}","text":"{run} {j} {n} {micros} {}"#,
                if measured { 'm' } else { 'w' }
            );
            let body_start = text.find(r#""text":""#).map_or(0, |p| p + 8);
            let body_len = text.len() - body_start;
            if body_len < pad {
                text.push(' ');
                text.extend(std::iter::repeat_n('x', pad.saturating_sub(body_len + 1)));
            }
            text.push_str("\"}");
            if sender.send_text(text).await.is_err() {
                break; // the reader records how the connection ended
            }
            me.sent.fetch_add(1, Ordering::Relaxed);
            if measured {
                me.sent_measured.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.publishing.fetch_sub(1, Ordering::Relaxed);
        sender
    }

    /// Closes every connection (bounded in time) and waits briefly for
    /// the readers to see the ends.
    pub(super) async fn close(&self) {
        self.closes.closing.store(true, Ordering::Relaxed);
        let mut senders: Vec<LeanSender> = std::mem::take(&mut *lock(&self.sub_senders));
        senders.extend(self.pubs.iter().filter_map(|p| lock(&p.sender).take()));
        net::close_all(senders, self.ctx.in_flight, Duration::from_secs(10)).await;
        let alive = self.alive.clone();
        net::wait_until(Duration::from_secs(5), || alive.count() == 0).await;
    }
}

/// Connect, warm up, measure, drain. Everything it learns lives in `f`,
/// so a run cut short by the deadline still reports.
pub(super) async fn scenario(f: Arc<Fanout>) {
    let ctx = f.ctx.clone();
    connect_all(&f).await;
    let joined_subs: u64 = f
        .rooms
        .iter()
        .map(|r| r.subs_joined.load(Ordering::Relaxed))
        .sum();
    if f.joined_pubs().is_empty() || joined_subs == 0 || ctx.stopped() {
        return;
    }

    let t0 = Instant::now() + Duration::from_millis(100);
    let t0_us = net::unix_micros() + 100_000;
    let publishers = f.start_publishers(t0, t0_us);
    let warm_end = t0 + f.p.warmup;
    let end = warm_end + f.p.duration;

    ctx.progress.spin("warm-up", "");
    let ticker = {
        let f = f.clone();
        ctx.progress.ticker(move || {
            format!(
                "sent {}  delivered {}  ok {}",
                count(f.sent()),
                count(f.delivered.load(Ordering::Relaxed)),
                count(f.oks())
            )
        })
    };
    net::sleep_until(warm_end).await;
    lock(&f.window).0 = Some(CpuSnapshot::take(&ctx.server_pids));
    ctx.progress.spin("measuring", "");
    net::sleep_until(end).await;
    lock(&f.window).1 = Some(CpuSnapshot::take(&ctx.server_pids));

    f.await_publishers(publishers).await;
    ctx.progress.spin("draining", "");
    let g = f.clone();
    let complete = net::wait_until(f.p.drain, move || {
        g.oks() + g.rejected() >= g.sent()
            && g.delivered.load(Ordering::Relaxed) >= g.expected_all()
    })
    .await;
    if !complete {
        // Late or lost? Watch a little longer: deliveries still trickling
        // in mean a backlog (the server or the tester behind); none at all,
        // with every connection open, means they are not coming.
        ctx.progress.spin("checking for a stall", "");
        let before = f.delivered.load(Ordering::Relaxed);
        natter_runtime::sleep(STALL_WINDOW).await;
        let after = f.delivered.load(Ordering::Relaxed);
        f.stalled.store(after == before, Ordering::Relaxed);
    }
    drop(ticker);
}

/// Opens this process's connections (every one, or a worker's share).
pub(super) async fn connect_all(f: &Arc<Fanout>) {
    let mine = Arc::new(f.my_connections());
    f.ctx.progress.count("connecting", mine.len() as u64);
    let opener = f.clone();
    let list = mine.clone();
    net::pool(&f.ctx, 0..mine.len(), move |nth| {
        opener.clone().open(nth, list[nth])
    })
    .await;
}

/// A publisher's task: it gives its sender back when its schedule ends.
pub(super) type Publishing = (usize, natter_runtime::JoinHandle<LeanSender>);

impl Fanout {
    /// The publishers of this process that joined their room.
    pub(super) fn joined_pubs(&self) -> Vec<usize> {
        (0..self.p.pubs)
            .filter(|&j| lock(&self.pubs[j].sender).is_some())
            .collect()
    }

    /// Starts every joined publisher on the schedule from `t0` (the same
    /// moment as `t0_us`, unix µs).
    pub(super) fn start_publishers(self: &Arc<Self>, t0: Instant, t0_us: u64) -> Vec<Publishing> {
        // Before any publisher starts, so every `ok` finds it set.
        let _ = self.schedule_start.set(t0);
        let _ = self.schedule_start_us.set(t0_us);
        self.joined_pubs()
            .into_iter()
            .filter_map(|j| {
                let sender = lock(&self.pubs[j].sender).take()?;
                self.publishing.fetch_add(1, Ordering::Relaxed);
                Some((
                    j,
                    natter_runtime::spawn(self.clone().publish(j, sender, t0)),
                ))
            })
            .collect()
    }

    /// Waits for the publishers' schedules to end and keeps their senders
    /// (to close them later).
    pub(super) async fn await_publishers(&self, publishers: Vec<Publishing>) {
        for (j, handle) in publishers {
            let sender = handle.await;
            *lock(&self.pubs[j].sender) = Some(sender);
        }
    }

    /// Tester and server CPU over the measured window.
    pub(super) fn cpu_window(&self) -> Option<CpuWindow> {
        match &*lock(&self.window) {
            (Some(a), Some(b)) => Some(a.window(b)),
            _ => None,
        }
    }

    /// Running counters for a worker's progress line (see
    /// `fanout_workers.rs`): what the parent's drain waits on.
    pub(super) fn progress_counts(&self) -> serde_json::Value {
        serde_json::json!({
            "sent": self.sent(),
            "oks": self.oks(),
            "rejected": self.rejected(),
            "delivered": self.delivered.load(Ordering::Relaxed),
            "owed": self.expected_all(),
            "publishing": self.publishing.load(Ordering::Relaxed),
        })
    }

    /// Subscribers joined per room, in this process.
    pub(super) fn subs_per_room(&self) -> Vec<u64> {
        self.rooms
            .iter()
            .map(|r| r.subs_joined.load(Ordering::Relaxed))
            .collect()
    }

    /// Everything this process measured, raw (readers' buffers flushed),
    /// its series cut at `end_us`.
    pub(super) fn state(&self, end_us: u64) -> FanoutState {
        let p = &self.p;
        let mut subs = Vec::new();
        for (i, sub) in self.subs.iter().enumerate() {
            let mut sub = lock(sub);
            self.latency.flush(&mut sub.latencies);
            self.series.flush(&mut sub.timed);
            if !sub.joined {
                continue;
            }
            subs.push(SubState {
                i,
                room_seq: sub.room_seq.state(),
                per_pub: sub.per_pub.iter().map(SeqTracker::state).collect(),
                measured: sub.measured,
                foreign: sub.foreign,
            });
        }
        for publisher in &self.pubs {
            self.ok_latency.flush(&mut lock(&publisher.ok_latencies));
        }
        let share = self.ctx.share;
        let pubs = share
            .of_range(p.pubs)
            .map(|j| {
                let me = &self.pubs[j];
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                PubState {
                    j,
                    joined: me.joined.load(Ordering::Relaxed),
                    sent: load(&me.sent),
                    sent_measured: load(&me.sent_measured),
                    oks: load(&me.oks),
                    rejected: load(&me.rejected),
                    highest_replied: load(&me.highest_replied),
                    max_lag_us: load(&me.max_lag_us),
                }
            })
            .collect();
        let rooms = self
            .rooms
            .iter()
            .map(|r| {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                RoomState {
                    subs_joined: load(&r.subs_joined),
                    pubs_joined: load(&r.pubs_joined),
                    acked: load(&r.acked),
                    acked_measured: load(&r.acked_measured),
                    last_seq: load(&r.last_seq),
                }
            })
            .collect();
        FanoutState {
            subs,
            pubs,
            rooms,
            connects: self.connects.state(),
            closes: self.closes.state(),
            latency: self.latency.state(),
            ok_latency: self.ok_latency.state(),
            reply_errors: lock(&self.reply_errors).clone(),
            urls: self.ctx.url_counts(),
            schedule_start_us: self.schedule_start_us.get().copied(),
            series: self.series.finish(end_us),
            warnings: Vec::new(),
        }
    }
}

/// What a subscriber reads out of a message text.
#[derive(Debug, PartialEq)]
struct Payload {
    publisher: usize,
    seq: u64,
    micros: u64,
    measured: bool,
}

impl Payload {
    /// `"<run> <publisher> <seq> <unix micros> <w|m>[ padding]"`; `None`
    /// for texts another run (or client) wrote.
    pub(super) fn parse(text: &str, run: &str) -> Option<Payload> {
        let mut parts = text.split(' ');
        if parts.next()? != run {
            return None;
        }
        let publisher = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let micros = parts.next()?.parse().ok()?;
        let measured = match parts.next()? {
            "m" => true,
            "w" => false,
            _ => return None,
        };
        Some(Payload {
            publisher,
            seq,
            micros,
            measured,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::load::fanout::results::{FanoutResults, Tally, judge};
    use crate::load::net::{CloseCount, ConnectSummary};
    use crate::load::report::{Findings, Lines, Summary};
    use crate::load::stats::Hist;

    #[test]
    fn payload_round_trip() {
        let p = Payload::parse("abc123 7 42 1795300000123456 m xxxxx", "abc123").unwrap();
        assert_eq!(
            p,
            Payload {
                publisher: 7,
                seq: 42,
                micros: 1795300000123456,
                measured: true
            }
        );
        assert!(Payload::parse("zzz 7 42 1 m", "abc123").is_none());
        assert!(Payload::parse("abc123 7 42 1 q", "abc123").is_none());
        assert!(Payload::parse("hello", "abc123").is_none());
    }

    /// A run where every counter is zero: nothing to judge.
    fn quiet() -> Tally {
        Tally {
            results: FanoutResults {
                subscribers: 3,
                publishers: 2,
                rooms: 1,
                rate_per_publisher: 20.0,
                warmup_s: 0.0,
                duration_s: 1.0,
                connections: ConnectSummary {
                    connected: 5,
                    refused_503: 0,
                    failed: 0,
                    failed_tester_side: 0,
                    join_failed: 0,
                    connect_time: None,
                    failure_reasons: vec![],
                },
                sent_total: 40,
                sent: 40,
                send_rate_per_s: 40.0,
                target_send_rate_per_s: 40.0,
                max_publisher_lag_ms: 0.0,
                replies_ok: 40,
                says_acked: 40,
                says_per_s: 40.0,
                missing_replies: 0,
                reply_errors: BTreeMap::new(),
                expected_deliveries: 120,
                deliveries: 120,
                deliveries_per_s: 120.0,
                lost: 0,
                undelivered_at_end: 0,
                duplicates: 0,
                reordered: 0,
                seq_gaps: 0,
                seq_duplicates: 0,
                seq_reordered: 0,
                foreign_messages: 0,
                latency: None,
                ok_latency: None,
                close_codes_seen: vec![],
                server_cpu_us_per_delivery: None,
                server_cpu_s_per_million_deliveries: None,
            },
            cpu: None,
            worst: None,
            stalled: false,
            shutdowns: 0,
        }
    }

    fn close(code: u16, count: u64, reason: &str) -> CloseCount {
        CloseCount {
            code,
            count,
            reason: reason.into(),
        }
    }

    #[test]
    fn a_quiet_run_is_clean() {
        let mut f = Findings::default();
        judge(&quiet(), false, true, &mut f);
        assert_eq!(f.exit_code(), 0);
        assert!(f.problems.is_empty() && f.errors.is_empty() && f.warnings.is_empty());
    }

    /// The wording of every delivery check, pinned: scripts and people read
    /// these lines.
    #[test]
    fn delivery_faults_are_problems() {
        let mut t = quiet();
        let r = &mut t.results;
        (r.lost, r.duplicates, r.reordered, r.foreign_messages) = (5, 1, 2, 4);
        (r.seq_gaps, r.seq_duplicates, r.seq_reordered) = (1, 0, 3);
        r.undelivered_at_end = 7;
        r.reply_errors.insert("bad_request".into(), 2);
        t.worst = Some((2, 3));
        t.stalled = true;
        let mut f = Findings::default();
        judge(&t, false, true, &mut f);
        assert_eq!(
            f.problems,
            [
                "5 deliveries lost: messages a subscriber never received from a publisher of \
                 its room (worst: subscriber 2 missed 3)",
                "7 acknowledged deliveries never arrived: every say was answered, every \
                 connection stayed open, and no delivery came in the last 1 s",
                "1 duplicate deliveries (same publisher sequence twice)",
                "2 deliveries out of order (a publisher's message after a later one)",
                "room seq numbering broken as seen by subscribers: 1 missing, 0 duplicate, 3 \
                 out of order",
                "4 messages in this run's rooms that no publisher of the run sent to that room",
                "error replies to say: 2 × bad_request",
            ]
        );
        assert!(f.errors.is_empty() && f.warnings.is_empty());
        assert_eq!(f.exit_code(), 1);
    }

    #[test]
    fn a_slow_run_only_warns() {
        let mut t = quiet();
        let r = &mut t.results;
        r.undelivered_at_end = 7;
        (r.missing_replies, r.replies_ok) = (3, 37);
        r.max_publisher_lag_ms = 250.0;
        r.send_rate_per_s = 30.0;
        let mut f = Findings::default();
        judge(&t, false, true, &mut f);
        assert_eq!(
            f.warnings,
            [
                "7 deliveries had not arrived when the drain ended: the server or the tester \
                 was more than --drain behind (not counted as lost; see latency)",
                "3 say requests had no reply yet when the drain ended (sent 40, ok 37, errors \
                 0): the server was behind by more than --drain",
                "publishers fell up to 250.0 ms behind their schedule (the server's \
                 backpressure on their sends, or an overloaded tester)",
                "publishers achieved 30 msg/s of the 40 msg/s asked for",
            ]
        );
        assert!(f.problems.is_empty() && f.errors.is_empty());
    }

    #[test]
    fn closes_are_problems() {
        let mut t = quiet();
        t.results.close_codes_seen = vec![close(1001, 2, ""), close(1011, 1, "oops")];
        t.shutdowns = 2;
        let mut f = Findings::default();
        judge(&t, false, true, &mut f);
        assert_eq!(
            f.problems,
            [
                "3 connections were closed by the server or lost during the run: 2 × 1001, \
                 1 × 1011 (oops)",
                "2 connections got a shutdown event during the run",
            ]
        );
    }

    /// Over the server's rate limit, flooding closes and rate_limited
    /// replies are the tester's error; other closes and errors still count.
    #[test]
    fn over_the_rate_limit_flooding_is_the_testers_error() {
        let mut t = quiet();
        let r = &mut t.results;
        r.close_codes_seen = vec![close(1001, 1, ""), close(1008, 2, "flooding")];
        r.missing_replies = 4;
        r.reply_errors.insert("rate_limited".into(), 3);
        r.reply_errors.insert("bad_request".into(), 1);
        t.shutdowns = 1;
        let mut f = Findings::default();
        judge(&t, true, true, &mut f);
        assert_eq!(
            f.errors,
            [
                "2 publishers were closed for flooding (1008): the server's rate limit is \
                 below --rate",
                "4 say requests got no reply: in flight when their publisher was closed for \
                 flooding",
                "the server refused messages over its rate limit (start it with --rate 0): \
                 3 × rate_limited",
            ]
        );
        assert_eq!(
            f.problems,
            [
                "connections were closed by the server or lost during the run: 1 × 1001 ()",
                "1 connections got a shutdown event during the run",
                "error replies to say: 1 × bad_request",
            ]
        );
        assert!(f.warnings.is_empty());
    }

    /// The schedule both the publishers and the ok timing use: staggered
    /// by one interval over the publishers, then every 1 / rate.
    #[test]
    fn say_schedule() {
        // 4 publishers at 10/s: each says every 100 ms, 25 ms apart.
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(due_at(10.0, 4, 0, 1), 0.0));
        assert!(close(due_at(10.0, 4, 1, 1), 0.025));
        assert!(close(due_at(10.0, 4, 3, 1), 0.075));
        assert!(close(due_at(10.0, 4, 0, 2), 0.1));
        assert!(close(due_at(10.0, 4, 2, 11), 0.05 + 1.0));
    }

    /// The report's JSON carries says per second and the ok round trip,
    /// named like the delivery latency (an object of percentiles, or null
    /// when nothing was measured).
    #[test]
    fn report_json_has_the_ok_round_trip() {
        let mut t = quiet();
        let mut h = Hist::new();
        for micros in [800, 1200, 1500, 9000] {
            h.record(micros);
        }
        t.results.ok_latency = h.summary();
        let json = serde_json::to_value(&t.results).unwrap();
        assert_eq!(json["says_acked"], 40);
        assert_eq!(json["says_per_s"], 40.0);
        let ok = &json["ok_latency"];
        assert_eq!(ok["count"], 4);
        for field in [
            "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms",
        ] {
            assert!(ok[field].as_f64().is_some(), "ok_latency.{field}: {json}");
        }
        assert!(ok["p50_ms"].as_f64() <= ok["p99_ms"].as_f64(), "{json}");
        assert!(
            (ok["max_ms"].as_f64().unwrap() - 9.0).abs() < 0.01,
            "{json}"
        );
        // Same shape as the delivery latency: null when nothing measured.
        assert_eq!(
            serde_json::to_value(&quiet().results).unwrap()["ok_latency"],
            Value::Null
        );
        let mut lines = Lines::default();
        t.results.human(&mut lines);
        let text = lines.text();
        assert!(text.contains("ok round trip"), "{text}");
        let acked = text.lines().find(|l| l.contains("says acked (measured)"));
        assert!(acked.is_some_and(|l| l.ends_with(" 40 (40.0/s)")), "{text}");
    }

    /// Subscribers and publishers each take the URLs in turn from the
    /// first, independently: 5 subscribers and 2 publishers over 2 URLs put
    /// 3 + 1 connections on the first and 2 + 1 on the second.
    #[test]
    fn subscribers_and_publishers_take_the_urls_in_turn() {
        let url = |i, urls| net::round_robin(nth_of_kind(i, 5), urls);
        let picks: Vec<usize> = (0..7).map(|i| url(i, 2)).collect();
        assert_eq!(picks, [0, 1, 0, 1, 0, /* publishers */ 0, 1]);
        let picks: Vec<usize> = (0..7).map(|i| url(i, 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, /* publishers */ 0, 1]);
        // One URL takes every connection.
        assert!((0..7).all(|i| url(i, 1) == 0));
    }

    #[test]
    fn rooms_sharing_a_factor_with_urls_warn() {
        assert_eq!(rooms_urls_warning(1, 1), None);
        assert_eq!(rooms_urls_warning(1, 3), None);
        assert_eq!(rooms_urls_warning(3, 2), None);
        let one = rooms_urls_warning(4, 2).unwrap();
        assert!(
            one.contains("all on one URL: no message crosses nodes"),
            "{one}"
        );
        let some = rooms_urls_warning(2, 4).unwrap();
        assert!(some.contains("on only 2 of the 4 URLs"), "{some}");
    }

    #[test]
    fn publishers_spread_over_rooms() {
        assert_eq!(pubs_in_room(10, 3, 0), 4);
        assert_eq!(pubs_in_room(10, 3, 1), 3);
        assert_eq!(pubs_in_room(10, 3, 2), 3);
        assert_eq!(pubs_in_room(2, 3, 2), 0);
        let total: usize = (0..7).map(|k| pubs_in_room(100, 7, k)).sum();
        assert_eq!(total, 100);
    }
}
