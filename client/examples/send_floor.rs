//! Kernel floor of a broadcast server's CPU cost per delivered frame.
//!
//! Why this exists: natter's performance target is stated as "server CPU per
//! delivery" (µs of server CPU for each frame that reaches one subscriber).
//! Part of that cost is not natter's at all: it is the kernel's cost of
//! pushing bytes through `send()` on a TCP socket. This example measures that
//! part alone, with no natter code, no WebSocket framing, no async runtime and
//! no fan-out logic: just plain `write_all` calls on M already-connected
//! loopback TCP sockets, each write carrying K ready-made frames of B bytes.
//!
//! The sender thread's CPU time (user and system, from
//! `/proc/thread-self/stat`; precise total from `/proc/thread-self/schedstat`)
//! divided by the number of frames it delivered is the floor under *any*
//! server's "CPU per delivery" on this machine, as a function of how many
//! frames the server manages to batch into one write syscall. On loopback the
//! floor is higher than "just the syscall": `send()` on 127.0.0.1 runs the
//! whole transmit path *and* the receiving socket's TCP input processing
//! (softirq, executed in the sender's context and charged to the sender
//! thread as system time), so the sender pays for both ends of the wire,
//! exactly as a natter server talking to loopback clients does. (That holds
//! with tick-based accounting and `CONFIG_IRQ_TIME_ACCOUNTING` off, as on the
//! box this was written on; with IRQ time accounting on, softirq time is
//! carved out of the thread's time and this would under-report the floor.)
//!
//! A receiver thread drains the client ends (non-blocking reads) so that
//! send buffers never fill; its CPU is reported separately for information
//! (it includes polling overhead, so it is only an upper bound on read cost).
//! By default it drains concurrently with the sender, as loopback load-test
//! clients do; with `--phased` the two take turns (the sender writes one round
//! to every socket, then blocks until it has been drained), which keeps the
//! reader's work off the sockets while the sender is measured.
//!
//! Usage:
//!
//! ```text
//! cargo run --release -p natter --example send_floor -- \
//!     --conns 1000 --frame-bytes 90 --frames-per-write 1,2,4,8,16,32 \
//!     --deliveries 2000000
//! ```

use std::error::Error;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Clock ticks per second for `/proc/*/stat` utime/stime. This is
/// `sysconf(_SC_CLK_TCK)`, which is 100 on every mainstream Linux
/// architecture (x86, arm64); std has no portable way to query it and `libc`
/// is not a dependency of this crate, so it is hardcoded.
const CLK_TCK: f64 = 100.0;

/// Wall-clock limit of the send phase of one K setting.
const SEND_LIMIT: Duration = Duration::from_secs(20);

/// Extra time the receiver gets after the send limit to drain what was sent.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// A write that cannot make progress for this long aborts the K setting.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str = "\
send_floor: kernel floor of per-delivery CPU for a broadcast server (loopback TCP)

USAGE:
    cargo run --release -p natter --example send_floor -- [OPTIONS]

OPTIONS:
    --conns M                 TCP connections (default 1000)
    --frame-bytes B           bytes per frame (default 90, a typical natter `message` frame)
    --frames-per-write LIST   comma-separated K values, frames per write syscall
                              (default 1,2,4,8,16,32)
    --deliveries N            frames to deliver per K setting (default 2000000);
                              rounds = N / (M*K), at least 1
    --phased                  sender and receiver take turns: the sender writes one
                              round, then blocks until the receiver has drained it,
                              so reads never run concurrently with the measured
                              writes (default: receiver drains concurrently)
    -h, --help                print this help
";

struct Config {
    conns: usize,
    frame_bytes: usize,
    ks: Vec<usize>,
    deliveries: u64,
    phased: bool,
}

fn parse_args() -> Result<Option<Config>, Box<dyn Error>> {
    let mut cfg = Config {
        conns: 1000,
        frame_bytes: 90,
        ks: vec![1, 2, 4, 8, 16, 32],
        deliveries: 2_000_000,
        phased: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || -> Result<String, Box<dyn Error>> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .ok_or_else(|| format!("missing value for {flag}").into()),
            }
        };
        if flag == "--phased" {
            cfg.phased = true;
            continue;
        }
        match flag.as_str() {
            "--conns" => cfg.conns = value()?.parse()?,
            "--frame-bytes" => cfg.frame_bytes = value()?.parse()?,
            "--deliveries" => cfg.deliveries = value()?.replace('_', "").parse()?,
            "--frames-per-write" => {
                cfg.ks = value()?
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown argument {other:?} (see --help)").into()),
        }
    }
    if cfg.conns == 0 || cfg.frame_bytes == 0 || cfg.deliveries == 0 {
        return Err("--conns, --frame-bytes and --deliveries must be positive".into());
    }
    if cfg.ks.is_empty() || cfg.ks.contains(&0) {
        return Err("--frames-per-write needs positive values".into());
    }
    Ok(Some(cfg))
}

/// CPU time of the calling thread.
#[derive(Clone, Copy)]
struct ThreadCpu {
    /// User time, seconds (tick-sampled, scaled by the kernel to sum to the
    /// precise runtime).
    user: f64,
    /// System time, seconds (includes softirq work run in this thread's
    /// context, e.g. loopback TCP receive processing).
    sys: f64,
    /// Precise on-CPU time, seconds, from schedstat.
    run: f64,
}

impl ThreadCpu {
    fn now() -> Result<Self, Box<dyn Error>> {
        let stat = fs::read_to_string("/proc/thread-self/stat")?;
        // Field 2 (comm) is parenthesised and may contain spaces: split after
        // the last ')'. The remainder starts at field 3, so field n is at
        // index n - 3.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or("malformed /proc/thread-self/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Result<f64, Box<dyn Error>> {
            let s = fields.get(n - 3).ok_or("short /proc/thread-self/stat")?;
            Ok(s.parse::<u64>()? as f64 / CLK_TCK)
        };
        let schedstat = fs::read_to_string("/proc/thread-self/schedstat")?;
        let run_ns: u64 = schedstat
            .split_whitespace()
            .next()
            .ok_or("empty /proc/thread-self/schedstat")?
            .parse()?;
        Ok(Self {
            user: field(14)?,
            sys: field(15)?,
            run: run_ns as f64 / 1e9,
        })
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
            run: self.run - earlier.run,
        }
    }
}

struct Row {
    k: usize,
    rounds: u64,
    frames: u64,
    complete: bool,
    wall: f64,
    cpu: ThreadCpu,
    rx_cpu: f64,
}

impl Row {
    fn us_per_frame(&self, secs: f64) -> f64 {
        secs * 1e6 / self.frames.max(1) as f64
    }
    fn writes(&self) -> f64 {
        self.frames as f64 / self.k as f64
    }
}

/// Message from the sender to the receiver: read until this many bytes have
/// arrived in total; `last` = no further targets will follow.
struct Target {
    bytes: u64,
    last: bool,
}

/// Drains the client sockets. In concurrent mode it reads continuously and
/// learns the final byte count when the sender is done; in phased mode it
/// waits for a target after each round, drains up to it and acknowledges.
/// Stops at `deadline` regardless. Returns (bytes read, receiver thread CPU
/// seconds).
fn receive(
    clients: Arc<Vec<TcpStream>>,
    phased: bool,
    targets: mpsc::Receiver<Target>,
    acks: mpsc::Sender<u64>,
    deadline: Instant,
) -> Result<(u64, f64), String> {
    let start = ThreadCpu::now().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut target = if phased { 0 } else { u64::MAX };
    let mut last = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if total >= target {
            // The sender may have given up waiting; a failed send is harmless.
            let _ = acks.send(total);
            if last {
                break;
            }
            match targets.recv_timeout(deadline - now) {
                Ok(t) => (target, last) = (t.bytes, t.last),
                Err(_) => break,
            }
            continue;
        }
        // (No let-chain here: the workspace MSRV is 1.85.)
        let update = if phased {
            None
        } else {
            targets.try_recv().ok()
        };
        if let Some(t) = update {
            (target, last) = (t.bytes, t.last);
            continue;
        }
        let mut progressed = false;
        for mut sock in clients.iter() {
            // Drain this socket until it would block.
            loop {
                match sock.read(&mut buf) {
                    Ok(0) => return Err("peer closed".into()),
                    Ok(n) => {
                        total += n as u64;
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        if !progressed {
            // Nothing pending anywhere: back off briefly rather than spin, so
            // the receiver does not steal the sender's core on a small box.
            thread::sleep(Duration::from_micros(200));
        }
    }
    let cpu = ThreadCpu::now().map_err(|e| e.to_string())?.since(start);
    Ok((total, cpu.run))
}

/// Phased mode: tells the receiver to drain up to `bytes` and blocks until it
/// reports having done so (skipping older acknowledgements). False if the
/// receiver is gone or `deadline` passes.
fn wait_drained(
    targets: &mpsc::Sender<Target>,
    acks: &mpsc::Receiver<u64>,
    bytes: u64,
    deadline: Instant,
) -> bool {
    if targets.send(Target { bytes, last: false }).is_err() {
        return false;
    }
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match acks.recv_timeout(wait) {
            Ok(got) if got >= bytes => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// Runs one K setting: `rounds` rounds of one `write_all` of K frames to each
/// server-side socket (stopping early after `SEND_LIMIT` of wall time). In
/// phased mode the sender waits (blocked, not spinning) after each round
/// until the receiver has drained it.
fn run_k(
    servers: &[TcpStream],
    clients: &Arc<Vec<TcpStream>>,
    phased: bool,
    k: usize,
    frame_bytes: usize,
    rounds: u64,
) -> Result<Row, Box<dyn Error>> {
    // K frames back to back; contents are irrelevant to the kernel, but make
    // each one look like an unmasked WebSocket text frame for good measure.
    let mut frame = vec![b'x'; frame_bytes];
    frame[0] = 0x81;
    if frame_bytes > 1 {
        frame[1] = u8::try_from(frame_bytes.saturating_sub(2)).unwrap_or(126);
    }
    let batch: Vec<u8> = frame.repeat(k);
    let round_bytes = (servers.len() * batch.len()) as u64;

    let (target_tx, target_rx) = mpsc::channel::<Target>();
    let (ack_tx, ack_rx) = mpsc::channel::<u64>();
    let started = Instant::now();
    let deadline = started + SEND_LIMIT + DRAIN_GRACE;
    let receiver = {
        let clients = Arc::clone(clients);
        thread::Builder::new()
            .name("receiver".into())
            .spawn(move || receive(clients, phased, target_rx, ack_tx, deadline))?
    };

    let cpu0 = ThreadCpu::now()?;
    let t0 = Instant::now();
    let mut done_rounds = 0u64;
    let mut failure = None;
    'rounds: while done_rounds < rounds {
        for mut sock in servers {
            if let Err(e) = sock.write_all(&batch) {
                failure = Some(format!("write failed: {e}"));
                break 'rounds;
            }
        }
        done_rounds += 1;
        if phased {
            let bytes = done_rounds * round_bytes;
            if !wait_drained(&target_tx, &ack_rx, bytes, deadline) {
                failure = Some("receiver did not drain the round".into());
                break;
            }
        }
        if t0.elapsed() >= SEND_LIMIT {
            break;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = ThreadCpu::now()?.since(cpu0);

    // Bytes handed to the kernel in full rounds (a failed round is not
    // counted, which can only overstate CPU per frame).
    let frames = done_rounds * servers.len() as u64 * k as u64;
    let sent_bytes = done_rounds * round_bytes;
    // The receiver may already be gone after a failure; that is reported below.
    let _ = target_tx.send(Target {
        bytes: sent_bytes,
        last: true,
    });
    let (received, rx_cpu) = receiver.join().map_err(|_| "receiver thread panicked")??;
    if let Some(f) = &failure {
        eprintln!("  K={k}: {f} after {done_rounds} rounds");
    }
    // After a failed write, partial bytes may arrive beyond `sent_bytes`.
    let complete = failure.is_none() && received >= sent_bytes;
    if received < sent_bytes {
        eprintln!("  K={k}: receiver got {received} of {sent_bytes} bytes before its deadline");
    }
    Ok(Row {
        k,
        rounds: done_rounds,
        frames,
        complete,
        wall,
        cpu,
        rx_cpu,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let Some(cfg) = parse_args()? else {
        print!("{USAGE}");
        return Ok(());
    };

    // Connect M pairs. Accept right after each connect so the listen backlog
    // never overflows.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut clients = Vec::with_capacity(cfg.conns);
    let mut servers = Vec::with_capacity(cfg.conns);
    for _ in 0..cfg.conns {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        server.set_write_timeout(Some(WRITE_TIMEOUT))?;
        client.set_nonblocking(true)?;
        clients.push(client);
        servers.push(server);
    }
    let clients = Arc::new(clients);

    println!(
        "send_floor: {} conns, {} B/frame, {} frames per K setting, {} mode, {} cores",
        cfg.conns,
        cfg.frame_bytes,
        cfg.deliveries,
        if cfg.phased { "phased" } else { "concurrent" },
        thread::available_parallelism().map_or(0, |n| n.get()),
    );

    // Warm-up: a few rounds at the largest K (grows socket buffers, faults in
    // pages, warms caches). Not reported.
    let kmax = cfg.ks.iter().copied().max().unwrap_or(1);
    run_k(&servers, &clients, cfg.phased, kmax, cfg.frame_bytes, 3)?;

    let mut rows = Vec::with_capacity(cfg.ks.len());
    for &k in &cfg.ks {
        let per_round = cfg.conns as u64 * k as u64;
        let rounds = (cfg.deliveries / per_round).max(1);
        let row = run_k(&servers, &clients, cfg.phased, k, cfg.frame_bytes, rounds)?;
        println!(
            "K={:<3} frames={:<9} rounds={:<6} sender CPU/frame: user {:.3} µs  sys {:.3} µs  \
             total {:.3} µs (schedstat {:.3} µs)  writes/s {:.0}  frames/s {:.0}  \
             rx CPU/frame {:.3} µs  wall {:.2} s{}",
            row.k,
            row.frames,
            row.rounds,
            row.us_per_frame(row.cpu.user),
            row.us_per_frame(row.cpu.sys),
            row.us_per_frame(row.cpu.user + row.cpu.sys),
            row.us_per_frame(row.cpu.run),
            row.writes() / row.wall,
            row.frames as f64 / row.wall,
            row.us_per_frame(row.rx_cpu),
            row.wall,
            if row.complete { "" } else { "  INCOMPLETE" },
        );
        rows.push(row);
    }

    println!();
    println!(
        "| K (frames/write) | frames | sender user µs/frame | sender sys µs/frame | \
         sender total µs/frame | schedstat µs/frame | µs/write | writes/s | frames/s | \
         rx µs/frame (incl. polling) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.0} | {:.0} | {:.3} |{}",
            row.k,
            row.frames,
            row.us_per_frame(row.cpu.user),
            row.us_per_frame(row.cpu.sys),
            row.us_per_frame(row.cpu.user + row.cpu.sys),
            row.us_per_frame(row.cpu.run),
            row.cpu.run * 1e6 / row.writes().max(1.0),
            row.writes() / row.wall,
            row.frames as f64 / row.wall,
            row.us_per_frame(row.rx_cpu),
            if row.complete { "" } else { " (incomplete)" },
        );
    }
    Ok(())
}
