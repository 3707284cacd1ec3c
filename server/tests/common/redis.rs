//! A Redis server of the test's own, for the multi-node tests (PROTOCOL.md
//! guarantee 8: nodes started with the same `--broker URL` serve one chat).
//!
//! Each test starts its own [`Redis`]: the distribution's `redis-server`
//! (Debian's package `redis-server`) on 127.0.0.1, on a port of its own,
//! with persistence off and a temporary directory as its working
//! directory. Tests run in parallel, so nothing is shared between them, and
//! nothing relies on a system Redis that may or may not be running.
//!
//! A test can stop it ([`Redis::stop`]: SIGKILL to its PID, then the child
//! is reaped) and start it again on the same port ([`Redis::restart`]), to
//! see the nodes lose their broker and get it back, and can send it
//! commands ([`Redis::command`], RESP over a plain TCP socket), e.g. to
//! kill the nodes' pub/sub connections. It is stopped when dropped.
//!
//! Only `std` is used: the harness is the same on both runtimes, and its
//! few blocking steps (start, one command) take milliseconds.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::TempDir;

/// The program started: found on `PATH`, as the distribution installs it.
pub const REDIS_SERVER: &str = "redis-server";

/// What to do when it is missing: one line, the exact package to install
/// (a test that needs Redis fails with it; it never skips).
pub const INSTALL_HINT: &str = "redis-server is not installed (not found on PATH): \
     install Debian's package with `apt-get install redis-server`";

/// Bound on Redis starting (its "ready" log line) and on one command. It
/// starts in milliseconds; 20 s leaves room for a 2-core machine busy
/// with other test binaries, like the suites' other bounds.
const BOUND: Duration = Duration::from_secs(20);

/// Ports tried when the chosen one turns out to be taken (another test's
/// Redis picked the same one between our check and Redis binding it).
const PORT_ATTEMPTS: usize = 20;

/// The line Redis logs once it accepts connections (every version since
/// 2.x says it, 7.x adds " tcp").
const READY_LINE: &str = "Ready to accept connections";

/// A running `redis-server` of this test's own; SIGKILLed (by PID) and
/// reaped when dropped.
pub struct Redis {
    /// `None` while stopped.
    child: Option<Child>,
    port: u16,
    /// Its log (stdout) of the current run, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    /// Its working directory (nothing is written there with persistence
    /// off, but a `redis-server` must have one that no one else uses).
    /// Declared last: dropped after the process is gone.
    dir: TempDir,
}

/// Why one start did not give a running server.
enum StartError {
    /// Another process holds the port: try another (only on a first start).
    PortTaken(String),
    /// Anything else: the log says what.
    Failed(String),
}

impl Redis {
    /// Starts a Redis on a free port of 127.0.0.1 and returns once it
    /// answers `PING`. Panics with [`INSTALL_HINT`] if `redis-server` is
    /// not installed.
    pub fn start() -> Redis {
        let dir = TempDir::new("redis");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn(port, &dir, &log) {
                Ok(child) => {
                    return Redis {
                        child: Some(child),
                        port,
                        log,
                        dir,
                    };
                }
                Err(StartError::PortTaken(why)) => taken.push(format!("{port}: {why}")),
                Err(StartError::Failed(why)) => panic!("{REDIS_SERVER} did not start: {why}"),
            }
        }
        panic!("{REDIS_SERVER} found no free port in {PORT_ATTEMPTS} tries: {taken:?}")
    }

    /// The port it listens on (the same across [`Redis::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL the nodes take as `--broker`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it the hard way, as a crash would: SIGKILL to its PID, then
    /// reaps it. Its clients see their connections end at once. Panics if
    /// it is not running.
    pub fn stop(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("stop: redis-server is not running");
        child.kill().expect("SIGKILL redis-server");
        child.wait().expect("reap redis-server");
    }

    /// Starts it again on the same port (empty: persistence is off) and
    /// returns once it answers `PING`. Panics if it is running.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: redis-server is running");
        self.log.lock().unwrap().clear();
        match spawn(self.port, &self.dir, &self.log) {
            Ok(child) => self.child = Some(child),
            Err(StartError::PortTaken(why) | StartError::Failed(why)) => panic!(
                "{REDIS_SERVER} did not start again on port {}: {why}",
                self.port
            ),
        }
    }

    /// Sends one command (its words as RESP bulk strings) on a fresh
    /// connection and returns the reply; an error reply is `Err`.
    pub fn command(&self, args: &[&str]) -> Result<Resp, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut tcp = TcpStream::connect_timeout(&addr, BOUND)
            .map_err(|e| format!("connect to redis at {addr}: {e}"))?;
        tcp.set_read_timeout(Some(BOUND))
            .expect("set a read timeout");
        tcp.set_write_timeout(Some(BOUND))
            .expect("set a write timeout");
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        tcp.write_all(&request)
            .map_err(|e| format!("send {args:?} to redis: {e}"))?;
        match Resp::read(&mut BufReader::new(tcp), 0)? {
            Resp::Error(e) => Err(format!("redis answered {args:?} with an error: {e}")),
            reply => Ok(reply),
        }
    }

    /// How many connections are in pub/sub mode (`CLIENT LIST TYPE
    /// pubsub`): the nodes' subscriptions.
    pub fn pubsub_clients(&self) -> usize {
        match self.command(&["CLIENT", "LIST", "TYPE", "pubsub"]) {
            Ok(Resp::Bulk(Some(list))) => String::from_utf8_lossy(&list)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count(),
            other => panic!("CLIENT LIST TYPE pubsub: {other:?}"),
        }
    }

    /// Kills every connection in pub/sub mode (`CLIENT KILL TYPE pubsub`)
    /// and returns how many there were.
    pub fn kill_pubsub_clients(&self) -> i64 {
        match self.command(&["CLIENT", "KILL", "TYPE", "pubsub"]) {
            Ok(Resp::Integer(n)) => n,
            other => panic!("CLIENT KILL TYPE pubsub: {other:?}"),
        }
    }

    /// Its log so far (this run), for a failure message.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port of 127.0.0.1 that nothing listens on now, chosen at random
/// *below* the kernel's ephemeral range: the nodes (port 0) and every
/// outgoing connection on the machine take their ports from that range,
/// so none of them can take a Redis port while it is stopped for a
/// restart. Only another test's Redis could collide, which [`Redis::start`]
/// survives by trying another port.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // The 10 000 ports below the range (or from 1024 on, if it starts low).
    let high = ephemeral_low.max(2048);
    let low = high.saturating_sub(10_000).max(1024);
    for _ in 0..1000 {
        let port = low + (random() % u64::from(high - low)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port of 127.0.0.1 in {low}..{high} after 1000 tries")
}

/// A random number from the standard library's randomly keyed hasher.
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Starts `redis-server` on `port` and waits (bounded) for its ready line,
/// then for a `PONG`.
fn spawn(port: u16, dir: &TempDir, log: &Arc<Mutex<Vec<String>>>) -> Result<Child, StartError> {
    let mut child = match Command::new(REDIS_SERVER)
        .current_dir(dir.path())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // Persistence off: no RDB snapshots, no append-only file. A
        // restart starts empty, as a lost broker's replacement would.
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        // The log on stdout (read below), no daemon, no unix socket.
        .args(["--daemonize", "no", "--logfile", ""])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
        Err(e) => return Err(StartError::Failed(format!("spawn {REDIS_SERVER}: {e}"))),
    };

    // Both outputs as lines on one channel (it ends when both are closed,
    // i.e. when the process has exited); every line is kept for messages.
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = child.stdout.take().expect("piped stdout");
    for out in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);

    let deadline = Instant::now() + BOUND;
    let ended = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(READY_LINE) => break None,
            Ok(_) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Some("it exited"),
            Err(mpsc::RecvTimeoutError::Timeout) => break Some("no ready line within 20 s"),
        }
    };
    if let Some(why) = ended {
        let _ = child.kill();
        let status = child.wait();
        let text = log.lock().unwrap().join("\n");
        let why = format!("{why} ({status:?}); its log:\n{text}");
        return Err(if text.contains("Address already in use") {
            StartError::PortTaken(why)
        } else {
            StartError::Failed(why)
        });
    }
    // Its log keeps coming on the threads (into `log`); the channel is
    // no longer read.
    drop(lines);

    // Ready by its own word; it must answer too.
    let redis_port = port;
    let answer = (|| {
        let addr = SocketAddr::from(([127, 0, 0, 1], redis_port));
        let mut tcp = TcpStream::connect_timeout(&addr, BOUND).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(BOUND))
            .map_err(|e| e.to_string())?;
        tcp.write_all(b"*1\r\n$4\r\nPING\r\n")
            .map_err(|e| e.to_string())?;
        Resp::read(&mut BufReader::new(tcp), 0)
    })();
    match answer {
        Ok(Resp::Simple(pong)) if pong == "PONG" => Ok(child),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(StartError::Failed(format!(
                "PING on port {port} got {other:?}; its log:\n{}",
                log.lock().unwrap().join("\n")
            )))
        }
    }
}

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// Reads one reply (nested arrays at most 8 deep, bulk strings at most
    /// 64 MiB: far beyond anything these tests ask for).
    fn read(r: &mut impl BufRead, depth: usize) -> Result<Resp, String> {
        if depth > 8 {
            return Err("RESP arrays nested too deep".into());
        }
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("read a RESP reply: {e}"))?;
        let line = line
            .strip_suffix("\r\n")
            .ok_or_else(|| format!("a RESP line without CRLF: {line:?}"))?;
        let (kind, rest) = line.split_at_checked(1).ok_or("an empty RESP line")?;
        let number = || {
            rest.parse::<i64>()
                .map_err(|e| format!("RESP length {rest:?}: {e}"))
        };
        Ok(match kind {
            "+" => Resp::Simple(rest.to_owned()),
            "-" => Resp::Error(rest.to_owned()),
            ":" => Resp::Integer(number()?),
            "$" => match number()? {
                -1 => Resp::Bulk(None),
                n @ 0..=0x400_0000 => {
                    let mut bytes = vec![0; n as usize + 2];
                    r.read_exact(&mut bytes)
                        .map_err(|e| format!("read a bulk string: {e}"))?;
                    bytes.truncate(n as usize);
                    Resp::Bulk(Some(bytes))
                }
                n => return Err(format!("a bulk string of {n} bytes")),
            },
            "*" => match number()? {
                -1 => Resp::Array(None),
                n @ 0..=0x10000 => Resp::Array(Some(
                    (0..n)
                        .map(|_| Resp::read(r, depth + 1))
                        .collect::<Result<_, _>>()?,
                )),
                n => return Err(format!("an array of {n} items")),
            },
            _ => return Err(format!("not a RESP reply: {line:?}")),
        })
    }
}
