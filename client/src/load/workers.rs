//! `--workers N`: one test run by N copies of the tester.
//!
//! One process may hold about 19 000 sockets (the open-files limit), so a
//! run of 100 000 connections needs several. The parent re-executes its
//! own binary N times with its own arguments plus the hidden
//! `--worker I,N,ORIGIN_US,RUN_ID`; worker I takes the connections whose
//! index is ≡ I (mod N) and binds its own source addresses. The two sides
//! talk in JSON lines: a worker writes [`WorkerLine`]s on its stdout
//! (`connected` once its share is open, `progress` four times a second,
//! `state` at the end: its full raw numbers), the parent writes
//! [`ParentLine`]s on the worker's stdin (`go` when every worker is
//! connected, `finish` when the run is over). The parent merges the
//! states exactly (histograms merged, counters summed per room and
//! publisher) and makes the one report; a worker that dies or writes
//! nonsense fails the run with its number and the end of its stderr.
//!
//! This module is the plumbing only; what the lines carry belongs to the
//! tests (`fanout`, `conns`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::load::net::Share;
use crate::load::report::EXIT_MISBEHAVIOUR;
use crate::load::stats::lock;

/// Which worker this process is: the hidden `--worker I,N,ORIGIN_US,RUN_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub share: Share,
    /// The run's origin (unix µs), from which every process counts the
    /// seconds of its series.
    pub origin_us: u64,
    /// The parent's run id: rooms and nicks are named by it.
    pub run_id: String,
}

impl FromStr for WorkerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<WorkerSpec, String> {
        let bad = || format!("--worker wants I,N,ORIGIN_US,RUN_ID, not {s:?}");
        let parts: Vec<&str> = s.split(',').collect();
        let [i, n, origin, run] = parts[..] else {
            return Err(bad());
        };
        let (index, of): (usize, usize) =
            (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if of == 0 || index >= of || run.is_empty() {
            return Err(bad());
        }
        Ok(WorkerSpec {
            share: Share { index, of },
            origin_us: origin.parse().map_err(|_| bad())?,
            run_id: run.to_owned(),
        })
    }
}

/// A worker's line to its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    /// Its share is connected (or failed to): test-specific counts.
    Connected(Value),
    /// Running counters, four times a second.
    Progress(Value),
    /// Everything it measured, raw, for the parent to merge.
    State(Value),
}

/// The parent's line to a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentLine {
    /// Every worker is connected: start (test-specific instructions).
    Go(Value),
    /// Stop, cut the series at this unix µs, and report the state.
    Finish(u64),
}

/// How long past the run's deadline a worker may take to report: it stops
/// by itself then (stuck connecting, or publishing into a stalled server)
/// and reports what it has, as one process would.
pub const WORKER_MARGIN: Duration = Duration::from_secs(5);

/// A worker's last line: everything it measured, raw, for the parent.
pub fn report_state(state: &impl Serialize) {
    match serde_json::to_value(state) {
        Ok(v) => emit(&WorkerLine::State(v)),
        Err(e) => eprintln!("natter load worker: cannot encode the state: {e}"),
    }
}

/// Writes one line to the parent. A parent gone away makes the worker's
/// stdin end too, which stops it; nothing to do here.
pub fn emit(line: &WorkerLine) {
    if let Ok(text) = serde_json::to_string(line) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// The worker's end of the link: the parent's lines, read on a thread
/// (stdin is blocking) and handed over through a channel. When stdin ends
/// (the parent died) the worker is told to finish.
pub struct Link {
    lines: async_channel::Receiver<ParentLine>,
}

impl Link {
    pub fn start() -> Link {
        let (tx, rx) = async_channel::unbounded();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<ParentLine>(&line) {
                    Ok(said) => {
                        if tx.send_blocking(said).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("natter load worker: bad line from the parent: {e}"),
                }
            }
            let _ = tx.send_blocking(ParentLine::Finish(crate::load::net::unix_micros()));
        });
        Link { lines: rx }
    }

    /// The parent's next line (`Finish` once it is gone).
    pub async fn next(&self) -> ParentLine {
        self.lines
            .recv()
            .await
            .unwrap_or_else(|_| ParentLine::Finish(crate::load::net::unix_micros()))
    }
}

/// What the parent hears from worker `i`.
#[derive(Debug)]
pub enum Heard {
    Line(WorkerLine),
    /// A line that is not a [`WorkerLine`]: the worker misbehaves.
    Garbage(String),
    /// Its stdout ended: it exited (or closed it).
    Ended,
}

/// Lines of a worker's stderr kept for the failure message.
const STDERR_TAIL: usize = 20;

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// The parent's side: the worker processes and what they say.
pub struct Workers {
    workers: Vec<Worker>,
    heard: async_channel::Receiver<(usize, Heard)>,
}

/// A run that failed because of a worker: which one, and why (with the
/// end of its stderr). Exit 1: the run's numbers are incomplete.
#[derive(Debug)]
pub struct Failure(pub String);

impl Failure {
    pub fn exit(&self) -> ExitCode {
        eprintln!("natter load: {}", self.0);
        ExitCode::from(EXIT_MISBEHAVIOUR)
    }
}

impl Workers {
    /// Starts `n` copies of this program with this process's arguments
    /// plus `--worker I,N,ORIGIN_US,RUN_ID`.
    pub fn spawn(n: usize, origin_us: u64, run_id: &str) -> Result<Workers, Failure> {
        let exe = std::env::current_exe()
            .map_err(|e| Failure(format!("cannot find this program to start workers: {e}")))?;
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let (tx, heard) = async_channel::unbounded();
        let mut workers = Workers {
            workers: Vec::new(),
            heard,
        };
        for i in 0..n {
            let spawned = Command::new(&exe)
                .args(&args)
                .arg("--worker")
                .arg(format!("{i},{n},{origin_us},{run_id}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    workers.kill_all();
                    return Err(Failure(format!("cannot start worker {i}: {e}")));
                }
            };
            let stderr = Arc::new(Mutex::new(VecDeque::new()));
            if let Some(err) = child.stderr.take() {
                let tail = stderr.clone();
                std::thread::spawn(move || {
                    // Bytes, decoded leniently: a line that is not UTF-8
                    // must not stop the reader (the worker would then
                    // block once the pipe is full).
                    for line in BufReader::new(err).split(b'\n') {
                        let Ok(line) = line else { break };
                        let line = String::from_utf8_lossy(&line).into_owned();
                        let mut tail = lock(&tail);
                        if tail.len() == STDERR_TAIL {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                });
            }
            if let Some(out) = child.stdout.take() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        let heard = match serde_json::from_str(&line) {
                            Ok(said) => Heard::Line(said),
                            Err(_) => Heard::Garbage(line),
                        };
                        if tx.send_blocking((i, heard)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send_blocking((i, Heard::Ended));
                });
            }
            workers.workers.push(Worker {
                stdin: child.stdin.take(),
                child,
                stderr,
            });
        }
        Ok(workers)
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// The workers' process ids (their CPU counts as the tester's).
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.child.id()).collect()
    }

    /// Sends `line` to every worker.
    pub fn tell_all(&mut self, line: &ParentLine) -> Result<(), Failure> {
        let text = serde_json::to_string(line)
            .map_err(|e| Failure(format!("cannot encode a line for the workers: {e}")))?;
        for i in 0..self.workers.len() {
            let sent = match &mut self.workers[i].stdin {
                Some(stdin) => writeln!(stdin, "{text}").and_then(|()| stdin.flush()),
                None => Ok(()),
            };
            if let Err(e) = sent {
                return Err(self.failed(i, &format!("cannot be written to ({e})")));
            }
        }
        Ok(())
    }

    /// The next thing a worker said, or `None` after `limit`.
    pub async fn next(&self, limit: Duration) -> Option<(usize, Heard)> {
        natter_runtime::timeout(limit, self.heard.recv())
            .await
            .and_then(Result::ok)
    }

    /// Reads the workers' `progress` lines until `until`, keeping each
    /// worker's latest in `latest` and showing the run so far with `show`
    /// after each; any other line, a line that is not JSON, or a worker
    /// that exits fails the run.
    pub async fn listen<T: serde::de::DeserializeOwned>(
        &mut self,
        latest: &mut [T],
        until: std::time::Instant,
        mut show: impl FnMut(&[T]),
    ) -> Result<(), Failure> {
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let Some((i, heard)) = self.next(left).await else {
                return Ok(());
            };
            match heard {
                Heard::Line(WorkerLine::Progress(v)) => {
                    latest[i] = decode(self, i, v)?;
                    show(latest);
                }
                Heard::Line(other) => {
                    return Err(self.failed(i, &format!("said {other:?} out of turn")));
                }
                Heard::Garbage(line) => {
                    return Err(self.failed(i, &format!("wrote a line that is not JSON: {line}")));
                }
                Heard::Ended => return Err(self.failed(i, "exited during the run")),
            }
        }
    }

    /// Waits until every worker sent a line `pick` accepts, handing every
    /// `progress` line to `progress` meanwhile; gives up after `limit`.
    /// Returns the accepted payloads in worker order.
    pub async fn gather(
        &mut self,
        what: &str,
        limit: Duration,
        pick: impl Fn(WorkerLine) -> Result<Value, WorkerLine>,
        mut progress: impl FnMut(usize, Value),
    ) -> Result<Vec<Value>, Failure> {
        let until = std::time::Instant::now() + limit;
        let mut got: Vec<Option<Value>> = vec![None; self.workers.len()];
        while got.iter().any(Option::is_none) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let Some((i, heard)) = self.next(left).await else {
                let missing: Vec<String> = got
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| g.is_none())
                    .map(|(i, _)| i.to_string())
                    .collect();
                let i = got.iter().position(Option::is_none).unwrap_or(0);
                return Err(self.failed(
                    i,
                    &format!(
                        "did not report {what} within {} s (workers {} missing)",
                        limit.as_secs(),
                        missing.join(", ")
                    ),
                ));
            };
            match heard {
                Heard::Line(line) => match pick(line) {
                    Ok(v) => got[i] = Some(v),
                    Err(WorkerLine::Progress(p)) => progress(i, p),
                    Err(other) => {
                        return Err(
                            self.failed(i, &format!("said {other:?} while {what} was awaited"))
                        );
                    }
                },
                Heard::Garbage(line) => {
                    return Err(self.failed(i, &format!("wrote a line that is not JSON: {line}")));
                }
                // A worker that has reported may exit before the others
                // have: only an end before its report is a failure.
                Heard::Ended if got[i].is_some() => {}
                Heard::Ended => {
                    return Err(self.failed(i, &format!("exited before reporting {what}")));
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// The failure of worker `i`: kills every worker and words the reason
    /// with the end of `i`'s stderr and how it exited.
    pub fn failed(&mut self, i: usize, why: &str) -> Failure {
        // Give a worker that is exiting a moment to finish its stderr.
        std::thread::sleep(Duration::from_millis(200));
        let status = self
            .workers
            .get_mut(i)
            .and_then(|w| w.child.try_wait().ok().flatten())
            .map_or_else(String::new, |s| format!(" ({s})"));
        let tail: Vec<String> = self
            .workers
            .get(i)
            .map(|w| lock(&w.stderr).iter().cloned().collect())
            .unwrap_or_default();
        self.kill_all();
        let n = self.workers.len();
        let tail = if tail.is_empty() {
            "its stderr was empty".to_owned()
        } else {
            format!("its stderr ends:\n  {}", tail.join("\n  "))
        };
        Failure(format!("worker {i} of {n} {why}{status}; {tail}"))
    }

    /// Waits (bounded) for every worker to exit, killing those that do not.
    pub fn reap(&mut self, limit: Duration) {
        let until = std::time::Instant::now() + limit;
        for w in &mut self.workers {
            w.stdin = None;
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() >= until => {
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// Kills every worker (each by its own process handle) and reaps it.
    pub fn kill_all(&mut self) {
        for w in &mut self.workers {
            w.stdin = None;
            if let Ok(None) = w.child.try_wait() {
                let _ = w.child.kill();
            }
            let _ = w.child.wait();
        }
    }
}

impl Drop for Workers {
    /// No worker outlives its parent's run, whatever path ended it.
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Decodes a worker's payload, or fails the run naming the worker.
pub fn decode<T: serde::de::DeserializeOwned>(
    workers: &mut Workers,
    i: usize,
    value: Value,
) -> Result<T, Failure> {
    serde_json::from_value(value)
        .map_err(|e| workers.failed(i, &format!("sent a report the parent cannot read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_spec_parses_and_checks() {
        let spec: WorkerSpec = "1,3,1700000000000000,abc123".parse().unwrap();
        assert_eq!(spec.share, Share { index: 1, of: 3 });
        assert_eq!(spec.origin_us, 1_700_000_000_000_000);
        assert_eq!(spec.run_id, "abc123");
        for bad in ["", "1,3,5", "3,3,5,x", "0,0,5,x", "a,3,5,x", "0,2,5,"] {
            assert!(bad.parse::<WorkerSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_split_indices() {
        let s = Share { index: 1, of: 3 };
        assert_eq!(s.of_range(8).collect::<Vec<_>>(), [1, 4, 7]);
        assert!(s.owns(4) && !s.owns(5));
        assert_eq!(Share::ALL.of_range(3).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn lines_round_trip() {
        let text = serde_json::to_string(&ParentLine::Finish(7)).unwrap();
        assert_eq!(text, r#"{"finish":7}"#);
        let line: WorkerLine = serde_json::from_str(r#"{"progress":{"sent":3}}"#).unwrap();
        assert!(matches!(line, WorkerLine::Progress(v) if v["sent"] == 3));
    }
}
