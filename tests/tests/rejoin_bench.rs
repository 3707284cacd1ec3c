//! A benchmark, not a check (ignored by default): what re-join amplification
//! costs everyone else. Seven connections re-join, at their allowed rate, a
//! room whose history holds 100 maximal, fully escaped texts (4096 control
//! characters, six bytes each once escaped: a ~2.4 MB reply), while another
//! member does `who` round trips; prints that member's round-trip p50/p99
//! quiet and under the re-joins, and the server's CPU per join.
//!
//! Against a server binary (CPU measured from its /proc entry):
//!   bench/rejoin.sh [SERVER_BINARY]
//! In process (CPU then includes the clients):
//!   cargo test --release -p natter-tests --test rejoin_bench -- --ignored --nocapture
//! Environment: NATTER_BENCH_URL (ws://…/ws), NATTER_BENCH_PID (the
//! server's pid), NATTER_BENCH_SECS (each phase, default 10).

use std::time::{Duration, Instant};

use natter_tests::hostile::RawWs;
use natter_tests::serde_json::json;
use natter_tests::{Client, Config, addr_of, join_task, start};

const REJOINERS: usize = 7;
const FILLERS: usize = 4;
const HISTORY: usize = 100;
const TEXT_CHARS: usize = 4096;
/// The re-joiners' pace: the default `--rate` (20 a second).
const REJOIN_EVERY: Duration = Duration::from_millis(50);
/// The probe's pace, under the rate limit.
const PROBE_EVERY: Duration = Duration::from_millis(60);
const ROOM: &str = "big";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The server's (user, system) CPU so far, in seconds (clock ticks of 10 ms).
fn cpu_secs(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks = |i: usize| fields[i].parse::<u64>().expect("ticks") as f64 / 100.0;
    (ticks(11), ticks(12))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(label: &str, mut rtts: Vec<Duration>) -> String {
    rtts.sort();
    format!(
        "{label}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        percentile(&rtts, 1.0)
    )
}

/// `who` round trips, one per `PROBE_EVERY`, for `secs`.
async fn probe(c: &mut Client, secs: Duration) -> Vec<Duration> {
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < secs {
        let t = Instant::now();
        c.ok(json!({"type": "who", "room": ROOM})).await;
        rtts.push(t.elapsed());
        next += PROBE_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            natter_runtime::sleep(wait).await;
        }
    }
    rtts
}

/// Sends one join (since 0: the whole history) and reads to its reply;
/// returns the reply's size and whether it was an error (rate limited).
async fn rejoin(ws: &mut RawWs, id: u64) -> (usize, bool) {
    let req = json!({"type": "join", "room": ROOM, "since": 0, "id": id}).to_string();
    ws.send(0x1, req.as_bytes()).await;
    let (mut bytes, mut is_reply, mut error) = (0, false, false);
    loop {
        let frame = ws
            .next_frame()
            .await
            .expect("the server closed a re-joiner");
        match frame.opcode {
            0x1 => {
                is_reply = frame.payload.starts_with(br#"{"type":"ok""#);
                error = frame.payload.starts_with(br#"{"type":"error""#);
                is_reply |= error;
                bytes = frame.payload.len();
            }
            0x0 => bytes += frame.payload.len(),
            _ => continue,
        }
        if frame.fin && is_reply {
            return (bytes, error);
        }
    }
}

#[test]
#[ignore = "a benchmark that prints figures: bench/rejoin.sh"]
fn rejoins_versus_another_members_round_trip() {
    natter_runtime::block_on(async {
        let secs = Duration::from_secs(
            env("NATTER_BENCH_SECS").map_or(10, |s| s.parse().expect("NATTER_BENCH_SECS")),
        );
        let pid: Option<u32> = env("NATTER_BENCH_PID").map(|p| p.parse().expect("a pid"));
        let (url, _server) = match env("NATTER_BENCH_URL") {
            Some(url) => (url, None),
            None => {
                let server = start(Config::local()).await;
                (server.url(), Some(server))
            }
        };
        let addr = addr_of(&url);

        // History: 100 texts that escape to six bytes a character, said by
        // a few fillers so each stays within its burst.
        let text = "\u{1}".repeat(TEXT_CHARS);
        let mut fillers = Vec::new();
        for i in 0..FILLERS {
            let (mut c, _) = Client::connect(&format!("{url}?nick=fill{i}")).await;
            c.join(ROOM).await;
            fillers.push(c);
        }
        for n in 0..HISTORY {
            fillers[n % FILLERS].say(ROOM, &text).await;
        }
        for c in fillers {
            c.close().await;
        }

        let (mut member, _) = Client::connect(&format!("{url}?nick=probe")).await;
        member.join(ROOM).await;
        let quiet = probe(&mut member, secs).await;

        // The re-joiners: members first, then a re-join every 50 ms each.
        let cpu_before = pid.map(cpu_secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..REJOINERS {
            tasks.push(natter_runtime::spawn(async move {
                let (mut ws, _) = RawWs::connect(addr, &format!("/ws?nick=rejoin{i}")).await;
                let (mut joins, mut limited, mut bytes) = (0u64, 0u64, 0usize);
                let start = Instant::now();
                let mut next = start;
                while start.elapsed() < secs {
                    let (size, error) = rejoin(&mut ws, joins + limited + 1).await;
                    if error {
                        limited += 1;
                    } else {
                        joins += 1;
                        bytes = bytes.max(size);
                    }
                    next += REJOIN_EVERY;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        natter_runtime::sleep(wait).await;
                    }
                }
                (joins, limited, bytes)
            }));
        }
        let loaded = probe(&mut member, secs).await;
        let (mut joins, mut limited, mut reply_bytes) = (0, 0, 0);
        for task in tasks {
            let (j, l, b) = join_task("a re-joiner", task).await;
            joins += j;
            limited += l;
            reply_bytes = reply_bytes.max(b);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = pid.map(|pid| {
            let (user, sys) = cpu_secs(pid);
            let (user0, sys0) = cpu_before.unwrap_or_default();
            (user - user0, sys - sys0)
        });
        member.close().await;

        println!("{}", summary("quiet round trip ", quiet));
        println!("{}", summary("loaded round trip", loaded));
        println!(
            "re-joins: {joins} in {elapsed:.1} s ({:.0}/s), {limited} rate limited, reply {:.2} MB",
            joins as f64 / elapsed,
            reply_bytes as f64 / 1e6
        );
        match cpu {
            Some((user, sys)) => println!(
                "server CPU: {:.2} s (user {user:.2}, system {sys:.2}) over {elapsed:.1} s \
                 ({:.0}% of a core), {:.2} ms per join",
                user + sys,
                100.0 * (user + sys) / elapsed,
                1000.0 * (user + sys) / joins.max(1) as f64
            ),
            None => println!("server CPU: not measured (set NATTER_BENCH_PID)"),
        }
    })
}
