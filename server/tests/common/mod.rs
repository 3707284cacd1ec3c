//! What the server's binary-level tests share: the `natter-server` process
//! ([`ServerProcess`], and [`run_to_exit`] for one expected to fail), a
//! small WebSocket client ([`Ws`]), the chat requests ([`chat`]), a
//! temporary directory ([`TempDir`]) and the suites' one bounded wait
//! ([`wait::wait_until`]); for the multi-node tests, a Redis of the test's
//! own ([`redis::Redis`]) and nodes started on it ([`cluster`]).
//!
//! Each test file that uses it has `mod common;`; not every file uses every
//! item, hence `dead_code` is allowed here.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use futures::StreamExt;
use futures::channel::mpsc as mpsc_async;
use natter_runtime::{TcpStream, timeout};
use serde_json::Value;

/// The one bounded wait, shared with `natter-tests` (which this crate's
/// tests cannot depend on): the same file, not a copy.
#[path = "../../../tests/src/wait.rs"]
pub mod wait;

pub mod chat;
pub mod cluster;
pub mod redis;

/// Bound on any single step (a read, a connect, the process exiting).
pub const BOUND: Duration = Duration::from_secs(20);
pub const MAX_FRAMES: usize = 100_000;

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running `natter-server`; killed (SIGKILL, by pid) if the test ends
/// without stopping it.
pub struct ServerProcess {
    child: Option<Child>,
    pub pid: u32,
    pub url: String,
    /// Every stderr line so far (for diagnostics)...
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// ...and the same lines as they come (to await one).
    pub stderr_lines: mpsc_async::UnboundedReceiver<String>,
}

impl ServerProcess {
    /// Starts `cmd` (the binary, or a shell that execs it), reads the
    /// listening URL from stdout, and collects stderr lines.
    pub fn spawn(mut cmd: Command) -> ServerProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start natter-server");
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, stderr_lines) = mpsc_async::unbounded();
        let stderr_reader = {
            let lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    stderr.lock().unwrap().push(line.clone());
                    let _ = lines_tx.unbounded_send(line);
                }
            })
        };
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = line_tx.send(lines.next());
            for _ in lines {}
        });
        let mut process = ServerProcess {
            child: Some(child),
            pid,
            url: String::new(),
            stderr,
            stderr_lines,
        };
        let line = match line_rx.recv_timeout(BOUND) {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => panic!("read natter-server's stdout: {e}"),
            Err(_) => panic!(
                "no stdout line from natter-server within {BOUND:?}; stderr:\n{}",
                process.stderr_text()
            ),
            // It exited without listening (a refused option, a failed
            // start): what it said is the failure's explanation. Its
            // stderr ends when it has exited.
            Ok(None) => {
                let status = process.child.take().map(|mut c| c.wait());
                let _ = stderr_reader.join();
                panic!(
                    "natter-server closed stdout without a line ({status:?}); stderr:\n{}",
                    process.stderr_text()
                )
            }
        };
        assert!(line.contains("listening on ws://127.0.0.1:"), "{line:?}");
        process.url = line
            .split_whitespace()
            .find(|w| w.starts_with("ws://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        process
    }

    /// Starts `natter-server` on 127.0.0.1, port 0, with `--threads
    /// threads` and `args`. `ASYNC_GLOBAL_EXECUTOR_THREADS` is removed from
    /// its environment, as it would override `--threads`.
    pub fn with_threads(threads: u16, args: &[&str]) -> ServerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter-server"));
        cmd.env_remove("ASYNC_GLOBAL_EXECUTOR_THREADS")
            .args(["--listen", "127.0.0.1:0", "--threads", &threads.to_string()])
            .args(args);
        ServerProcess::spawn(cmd)
    }

    /// Every stderr line so far, for a failure message.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Resident memory in KiB (VmRSS of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// File descriptors the process holds.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// Waits (bounded, [`BOUND`]) until the process holds exactly `n`
    /// descriptors (the kernel offers no notification of a close).
    pub async fn wait_fds(&self, n: usize, what: &str) {
        wait::wait_until(
            &format!("{what}: the server to hold {n} descriptors"),
            BOUND,
            async || match self.open_fds() {
                now if now == n => Ok(()),
                now => Err(format!("{now} descriptors")),
            },
        )
        .await
    }

    /// The next stderr line containing `needle` (unbounded: callers bound it).
    pub async fn stderr_line(
        lines: &mut mpsc_async::UnboundedReceiver<String>,
        needle: &str,
    ) -> String {
        loop {
            match lines.next().await {
                Some(line) if line.contains(needle) => return line,
                Some(_) => continue,
                None => futures::future::pending::<()>().await,
            }
        }
    }

    pub fn stderr_has(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits (bounded) for the server to exit by itself.
    pub fn exited(self) -> ExitStatus {
        self.wait_bounded("by itself")
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn stop(self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.wait_bounded("after SIGTERM")
    }

    /// Waits for the exit at most [`BOUND`]; past it, kills the server and
    /// fails the test.
    fn wait_bounded(mut self, how: &str) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(BOUND) {
            Ok(status) => status.expect("wait for natter-server"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status();
                panic!("natter-server did not exit within {BOUND:?} ({how})");
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// How every failure to start begins on stderr (a store that cannot be
/// used, a broker that cannot be reached).
pub const ERROR_PREFIX: &str = "natter-server: error:";

/// Sends `sig` (a name such as `KILL`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// What a server expected not to start left behind.
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Exited {
    /// The one `natter-server: error:` line on stderr, after checking that
    /// the process failed before printing its listening line.
    pub fn error_line(&self) -> &str {
        let Exited {
            status,
            stdout,
            stderr,
        } = self;
        assert!(
            !status.success(),
            "natter-server exited with {status}\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            !stdout.contains("listening on"),
            "natter-server listened before failing\nstdout: {stdout}\nstderr: {stderr}"
        );
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(ERROR_PREFIX))
            .collect();
        match lines[..] {
            [line] => line,
            _ => panic!("not one {ERROR_PREFIX:?} line on stderr:\n{stderr}"),
        }
    }
}

/// What [`run_to_exit`] hears from the process.
pub enum Heard {
    /// A line of its stdout.
    Line(String),
    /// Its exit.
    Exit(std::io::Result<ExitStatus>),
}

/// Runs `cmd`, expected to fail, to its exit, collecting stdout and
/// stderr. Fails at once if it prints its listening line (it is killed),
/// and if it has neither exited nor listened within [`BOUND`].
pub fn run_to_exit(mut cmd: Command) -> Exited {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start natter-server");
    let pid = child.id();
    let stderr = read_to_end_on_thread(child.stderr.take().expect("piped stderr"));
    let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let (tx, rx) = mpsc::channel();
    let line_tx = tx.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = line_tx.send(Heard::Line(line));
        }
    });
    std::thread::spawn(move || {
        let _ = tx.send(Heard::Exit(child.wait()));
    });

    let deadline = Instant::now() + BOUND;
    let mut stdout = String::new();
    let status = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Heard::Line(line)) if line.contains("listening on") => {
                signal(pid, "KILL");
                let stderr = stderr.recv_timeout(BOUND).unwrap_or_default();
                panic!("natter-server started instead of failing: {line:?}\nstderr: {stderr}");
            }
            Ok(Heard::Line(line)) => {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            Ok(Heard::Exit(status)) => break status.expect("wait for natter-server"),
            Err(_) => {
                signal(pid, "KILL");
                panic!("natter-server neither exited nor listened within {BOUND:?}");
            }
        }
    };
    // The rest of stdout: the channel ends once the reader has seen EOF.
    loop {
        match rx.recv_timeout(BOUND) {
            Ok(Heard::Line(line)) => {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            Ok(Heard::Exit(_)) => unreachable!("one exit"),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("stdout still open {BOUND:?} after the exit")
            }
        }
    }
    let stderr = stderr
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("stderr still open {BOUND:?} after the exit"));
    Exited {
        status,
        stdout,
        stderr,
    }
}

/// Reads `r` to its end on a thread; the text arrives on the channel.
pub fn read_to_end_on_thread(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// A directory of its own under the system's temporary directory, removed
/// on drop (declare it before the servers that use it, so that they are
/// dropped, and killed, first).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "natter-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// A small WebSocket client
// ---------------------------------------------------------------------------

pub struct Ws {
    pub ws: WebSocketStream<TcpStream>,
}

impl Ws {
    /// Connects (from `local` if given) and reads the welcome, within `wait`.
    pub async fn connect(
        url: &str,
        local: Option<IpAddr>,
        wait: Duration,
    ) -> Result<(Ws, Value), String> {
        let rest = url.trim_start_matches("ws://");
        let addr: SocketAddr = rest.split('/').next().unwrap().parse().unwrap();
        let fut = async {
            let tcp = match local {
                Some(ip) => natter_runtime::connect_from(ip, addr).await,
                None => natter_runtime::connect(addr).await,
            }
            .map_err(|e| format!("TCP connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let (ws, _) = async_tungstenite::client_async(url, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let mut ws = Ws { ws };
            let welcome = ws.next().await;
            Ok::<_, String>((ws, welcome))
        };
        // Boxed: the handshake's future is tens of KiB in a debug build,
        // and a test that connects many times would otherwise carry a copy
        // on its stack for each (enough to overflow a test thread's 2 MiB).
        match timeout(wait, Box::pin(fut)).await {
            Some(r) => r,
            None => Err(format!("no welcome within {wait:?}")),
        }
    }

    pub async fn send(&mut self, v: &Value) {
        match timeout(BOUND, self.ws.send(Message::text(v.to_string()))).await {
            Some(Ok(())) => {}
            other => panic!("send failed: {other:?}"),
        }
    }

    /// The next text frame as JSON, within `wait`; `None` on time-out.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        match self.try_next_within(wait).await {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Ws::next_within`], but a close, another kind of frame or the
    /// end of the stream is returned as `Err(what came instead)`.
    pub async fn try_next_within(&mut self, wait: Duration) -> Result<Option<Value>, String> {
        let deadline = Instant::now() + wait;
        for _ in 0..MAX_FRAMES {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ws.next()).await {
                None => return Ok(None),
                Some(Some(Ok(Message::Text(t)))) => {
                    return Ok(Some(serde_json::from_str(t.as_str()).unwrap()));
                }
                Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => return Err(format!("expected a text frame, got {other:?}")),
            }
        }
        Err(format!("no text frame among {MAX_FRAMES} frames"))
    }

    pub async fn next(&mut self) -> Value {
        match self.next_within(BOUND).await {
            Some(v) => v,
            None => panic!("no frame within {BOUND:?}"),
        }
    }

    /// Sends `req` (which carries an `id`) and reads up to its reply.
    pub async fn request(&mut self, req: Value) -> (Value, Vec<Value>) {
        self.send(&req).await;
        let mut events = Vec::new();
        for _ in 0..MAX_FRAMES {
            let v = self.next().await;
            if v["type"] == "ok" || v["type"] == "error" {
                assert_eq!(v["id"], req["id"], "reply to {req}: {v}");
                return (v, events);
            }
            events.push(v);
        }
        panic!("no reply to {req}")
    }

    pub async fn ok(&mut self, req: Value) -> Value {
        let (reply, _) = self.request(req.clone()).await;
        assert_eq!(reply["type"], "ok", "{req} got {reply}");
        reply
    }

    /// Reads through text frames (returned) to a close frame and then to
    /// the end; `Some((code, reason))` for a close frame, `None` if the
    /// stream ended or failed without one. Each read is bounded by
    /// [`BOUND`], the frames by [`MAX_FRAMES`].
    pub async fn read_until_close(&mut self) -> (Option<(u16, String)>, Vec<Value>) {
        let mut texts = Vec::new();
        for _ in 0..MAX_FRAMES {
            match timeout(BOUND, self.ws.next()).await {
                None => panic!(
                    "neither a close frame nor the end within {BOUND:?} (after {} text frames)",
                    texts.len()
                ),
                Some(Some(Ok(Message::Text(t)))) => {
                    texts.push(serde_json::from_str(t.as_str()).unwrap())
                }
                Some(Some(Ok(Message::Close(frame)))) => {
                    let close = match frame {
                        Some(CloseFrame { code, reason }) => (u16::from(code), reason.to_string()),
                        None => (1005, String::new()),
                    };
                    for _ in 0..100 {
                        match timeout(BOUND, self.ws.next()).await {
                            Some(Some(Ok(_))) => continue,
                            _ => break,
                        }
                    }
                    return (Some(close), texts);
                }
                Some(Some(Ok(_))) => continue,
                Some(Some(Err(_)) | None) => return (None, texts),
            }
        }
        panic!("no close frame within {MAX_FRAMES} frames")
    }

    /// Close 1000, then read to the end (bounded).
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        let _ = timeout(BOUND, self.ws.close(Some(frame))).await;
        for _ in 0..1000 {
            match timeout(BOUND, self.ws.next()).await {
                Some(Some(Ok(_))) => continue,
                _ => return,
            }
        }
    }

    /// Vanishes with a TCP reset (SO_LINGER 0, then close).
    pub fn reset(self) {
        natter_runtime::reset_on_close(self.ws.get_ref()).expect("SO_LINGER 0");
        drop(self);
    }
}
