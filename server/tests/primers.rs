//! Runs each asyncio primer in `server/examples/` and checks the *ordering*
//! its output promises (who prints what before whom, counts, bounds), not
//! exact timings. Every run uses `NATTER_PRIMER_SCALE=0.05`, so the
//! tutorial's seconds become twentieths.
//!
//! Finding the binaries: this test lives in `target/<profile>/deps/`, and
//! Cargo puts examples in `target/<profile>/examples/`. `cargo test --test
//! primers` does not build examples on its own, so the first test to run
//! builds them with `$CARGO build -p natter-server --examples` (same profile),
//! which also keeps them from being stale. Set `NATTER_PRIMERS_NO_BUILD=1` to
//! skip that step and use whatever binaries are already there.
//!
//! The examples run one at a time (a global lock): they are short, and
//! running the CPU-hungry `threads_vs_tasks` alongside the timer-driven ones
//! would only add scheduling noise.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const SCALE: &str = "0.05";
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// `target/<profile>/examples`, derived from this test binary's location.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let deps = exe.parent().expect("test binary has a parent directory");
    let profile_dir = deps.parent().expect("deps/ has a parent directory");
    profile_dir.join("examples")
}

/// Builds the examples once per test run (unless `NATTER_PRIMERS_NO_BUILD`
/// is set), with the profile this test binary was built with.
fn ensure_examples_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        if std::env::var_os("NATTER_PRIMERS_NO_BUILD").is_some() {
            return Ok(());
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
        let profile = examples_dir()
            .parent()
            .and_then(|dir| dir.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "debug".to_string());
        let mut command = Command::new(&cargo);
        command.args(["build", "-p", "natter-server", "--examples"]);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                command.arg("--release");
            }
            other => {
                command.args(["--profile", other]);
            }
        }
        let output = command
            .output()
            .map_err(|e| format!("could not run {cargo}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`cargo build -p natter-server --examples` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

/// One example's stdout, each line with its `[  0.12s] ` timestamp removed.
struct Output {
    lines: Vec<String>,
}

impl Output {
    /// Index of the first line containing `needle`; panics if there is none.
    fn find(&self, needle: &str) -> usize {
        self.position(needle)
            .unwrap_or_else(|| panic!("no line contains {needle:?} in:\n{}", self.dump()))
    }

    fn position(&self, needle: &str) -> Option<usize> {
        self.lines.iter().position(|line| line.contains(needle))
    }

    /// Indices of all lines containing `needle`.
    fn all(&self, needle: &str) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|&i| self.lines[i].contains(needle))
            .collect()
    }

    /// The text after `prefix` on the first line starting with it.
    fn value_after(&self, prefix: &str) -> &str {
        self.lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no line starts with {prefix:?} in:\n{}", self.dump()))
    }

    /// Parses `prefix 1.23s...` into 1.23.
    fn seconds_after(&self, prefix: &str) -> f64 {
        let text = self.value_after(prefix);
        let number = text.split('s').next().unwrap_or_default();
        number
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("cannot parse seconds from {prefix:?}{text:?}"))
    }

    fn dump(&self) -> String {
        self.lines.join("\n")
    }
}

/// Removes the `[  0.12s] ` prefix that `common::say!` adds.
fn strip_timestamp(line: &str) -> &str {
    match line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("s] "))
    {
        Some((stamp, body)) if stamp.trim().parse::<f64>().is_ok() => body,
        _ => line,
    }
}

/// Runs example `name` with the given scale, killing it after
/// [`RUN_TIMEOUT`]. Returns (success, stdout, stderr).
fn run_raw(name: &str, scale: &str) -> (bool, String, String) {
    ensure_examples_built();
    let path = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example binary {} is missing; build the examples first with \
         `cargo build -p natter-server --examples` (same profile as the tests)",
        path.display()
    );

    let mut child = Command::new(&path)
        .env("NATTER_PRIMER_SCALE", scale)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the example") {
            break Some(status);
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap().unwrap_or_default();
    let stderr = err_reader.join().unwrap().unwrap_or_default();
    match status {
        None => panic!(
            "example {name} did not finish within {RUN_TIMEOUT:?}; killed it.\n\
             stdout so far:\n{stdout}\nstderr:\n{stderr}"
        ),
        Some(status) => (status.success(), stdout, stderr),
    }
}

/// Runs example `name` at [`SCALE`] (one example at a time) and requires it
/// to succeed.
fn run(name: &str) -> Output {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (success, stdout, stderr) = run_raw(name, SCALE);
    assert!(
        success,
        "example {name} failed.\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines: Vec<String> = stdout
        .lines()
        .map(|line| strip_timestamp(line).to_string())
        .collect();
    assert!(
        lines.iter().any(|line| line.starts_with("total elapsed: ")),
        "example {name} did not print its total elapsed time:\n{stdout}"
    );
    Output { lines }
}

#[test]
fn coroutine_does_nothing_until_awaited() {
    let out = run("coroutine");
    let created = out.find("created the future");
    let first_start = out.find("): start fetching");
    assert!(
        created < first_start,
        "the future started before it was awaited:\n{}",
        out.dump()
    );
    assert!(out.find("now awaiting it") < out.find("fetch_data(2): start fetching"));
    assert!(
        out.find("fetch_data(2): done fetching") < out.find("main: got \"data fetched after 2s\"")
    );
    // The spawned one runs and its result reaches main.
    assert!(out.find("fetch_data(1): start fetching") < out.find("main: task returned"));
}

#[test]
fn sequential_vs_concurrent_concurrent_is_faster() {
    let out = run("sequential_vs_concurrent");
    // Sequential: each fetch starts only after the previous one is done.
    assert!(out.find("fetch 1: done") < out.find("fetch 2: started"));
    assert!(out.find("fetch 2: done") < out.find("fetch 3: started"));
    let sequential = out.seconds_after("sequential elapsed: ");
    let concurrent = out.seconds_after("concurrent elapsed: ");
    // Sleeps never end early: sequential is at least the sum 1+2+3 scaled.
    assert!(sequential >= 6.0 * 0.05 - 0.01, "sequential {sequential}s");
    assert!(
        concurrent < 0.75 * sequential,
        "concurrent {concurrent}s is not well below sequential {sequential}s:\n{}",
        out.dump()
    );
}

#[test]
fn gather_returns_results_in_argument_order() {
    let out = run("gather");
    let results = out.find("results in argument order: ");
    assert!(
        out.lines[results].ends_with(r#"["result 1", "result 2", "result 3"]"#),
        "unexpected results line: {}",
        out.lines[results]
    );
    for id in 1..=3 {
        assert!(out.find(&format!("fetch {id}: started")) < results);
        assert!(out.find(&format!("fetch {id}: done")) < results);
    }
}

#[test]
fn task_group_failure_cancels_the_rest() {
    let out = run("task_group");
    let failed = out.find("task 2 failed");
    assert!(out.find("task 1 finished") < failed, "{}", out.dump());
    for task in [3, 4] {
        let cancelled = out.find(&format!("task {task} cancelled"));
        assert!(
            failed < cancelled,
            "task {task} cancelled before the failure:\n{}",
            out.dump()
        );
        assert!(
            out.position(&format!("task {task} finished")).is_none(),
            "cancelled task {task} also finished:\n{}",
            out.dump()
        );
        assert!(cancelled < out.find("group failed: task 2 broke"));
    }
    for task in [1, 2] {
        assert!(
            out.position(&format!("task {task} cancelled")).is_none(),
            "{}",
            out.dump()
        );
    }
}

#[test]
fn future_result_is_set_by_another_task() {
    let out = run("future_result");
    assert!(out.find("setter: set_result") < out.find("main: got result \"hello\""));
    assert!(out.find("quitter: giving up") < out.find("receiver says Canceled"));
}

#[test]
fn lock_prevents_lost_updates() {
    let out = run("lock");
    assert_eq!(out.value_after("final count: "), "5", "{}", out.dump());
    // While one task holds the lock, no other task gets it: "locked" and
    // "wrote" lines strictly alternate, and each reads the previous write.
    let protected: Vec<&String> = out
        .lines
        .iter()
        .filter(|line| {
            line.starts_with("task ") && (line.contains(": locked") || line.contains(": wrote"))
        })
        .collect();
    assert_eq!(protected.len(), 10, "{}", out.dump());
    for (i, pair) in protected.chunks(2).enumerate() {
        assert!(
            pair[0].contains(&format!(": locked, read {i}")),
            "{}",
            out.dump()
        );
        assert!(
            pair[1].contains(&format!(": wrote {}", i + 1)),
            "{}",
            out.dump()
        );
    }
}

#[test]
fn semaphore_never_admits_more_than_two() {
    let out = run("semaphore");
    let mut inside_now: i32 = 0;
    let mut acquired = 0;
    let mut released = 0;
    for line in &out.lines {
        if let Some((_, k)) = line.split_once(" acquired (inside: ") {
            let k: usize = k.trim_end_matches(')').parse().expect("inside count");
            assert!(k <= 2, "more than 2 inside: {line}\n{}", out.dump());
            acquired += 1;
            inside_now += 1;
        } else if line.ends_with(" released") {
            released += 1;
            inside_now -= 1;
        }
        // Counting the printed lines tells the same story as the atomic.
        assert!((0..=2).contains(&inside_now), "{}", out.dump());
    }
    assert_eq!((acquired, released), (5, 5), "{}", out.dump());
}

#[test]
fn event_waiters_wake_only_after_set() {
    let out = run("event");
    let set = out.find("setter: set");
    let woke = out.all("woke");
    assert_eq!(woke.len(), 4, "{}", out.dump());
    for line in woke {
        assert!(set < line, "a waiter woke before the set:\n{}", out.dump());
    }
    assert!(out.find("waiter 4 woke (flag was already set") > set);
}

#[test]
fn queue_processes_every_item_then_workers_exit() {
    let out = run("queue");
    let mut items: Vec<u32> = out
        .lines
        .iter()
        .filter_map(|line| line.strip_prefix("worker ")?.split_once(" got item "))
        .map(|(worker, item)| {
            assert!(worker == "1" || worker == "2", "unknown worker {worker}");
            item.parse().expect("item number")
        })
        .collect();
    items.sort_unstable();
    assert_eq!(items, (1..=10).collect::<Vec<u32>>(), "{}", out.dump());
    assert_eq!(out.value_after("total processed: "), "10");
    let closed = out.find("producer: done, closing the queue");
    let exits = out.all(" exiting: queue closed");
    assert_eq!(exits.len(), 2, "{}", out.dump());
    assert!(exits.iter().all(|&exit| exit > closed), "{}", out.dump());
}

#[test]
fn blocking_call_on_spawn_blocking_lets_ticks_continue() {
    let out = run("blocking");
    let inline: usize = out
        .value_after("ticks during the inline blocking call: ")
        .parse()
        .unwrap();
    assert_eq!(
        inline,
        0,
        "ticks while the task itself blocked:\n{}",
        out.dump()
    );
    let during: usize = out
        .value_after("ticks during the blocking call: ")
        .parse()
        .unwrap();
    assert!(
        during >= 3,
        "only {during} ticks during spawn_blocking:\n{}",
        out.dump()
    );
}

#[test]
fn threads_vs_tasks_all_modes_compute_the_same() {
    let out = run("threads_vs_tasks");
    let sequential = out.find("sequential elapsed: ");
    let threads = out.find("threads elapsed: ");
    let tasks = out.find("async tasks elapsed: ");
    assert!(sequential < threads && threads < tasks, "{}", out.dump());
    // Every run of every mode counted the same primes.
    let counts: Vec<&str> = out
        .lines
        .iter()
        .filter(|line| line.contains(" elapsed: ") && line.contains("(counts "))
        .map(|line| line.split_once("(counts ").unwrap().1)
        .collect();
    assert_eq!(counts.len(), 4, "{}", out.dump());
    assert!(counts.iter().all(|c| *c == counts[0]), "{}", out.dump());
}

#[test]
fn invalid_scale_is_rejected() {
    let (success, _stdout, stderr) = run_raw("coroutine", "fast please");
    assert!(!success, "a nonsense NATTER_PRIMER_SCALE was accepted");
    assert!(stderr.contains("NATTER_PRIMER_SCALE"), "stderr: {stderr}");
}

#[test]
fn group_commit_answers_many_says_with_few_batches() {
    let out = run("group_commit");
    // "200 says answered by N batches in …": batching, not one fsync each.
    let line = out.value_after("main: 200 says answered by ");
    let batches: usize = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no batch count in {line:?}:\n{}", out.dump()));
    assert!(
        batches < 100,
        "{batches} batches for 200 says: the writer is not batching:\n{}",
        out.dump()
    );
    out.find("ok from batch 1");
    out.find("resolves to Err(\"internal\")");
}
