//! `natter load compare A.json B.json`: two runs' figures side by side.
//!
//! A load test's figures mean little alone and a lot against the run
//! before on the same machine: "p99 went from 4.1 ms to 6.3 ms" is a
//! finding, "p99 is 6.3 ms" is trivia. So compare takes two saved
//! `--json` reports of the same test, flattens their numeric figures
//! (`results`, `cpu`) into dotted paths, and prints each one present in
//! both with A, B, B/A and, where the direction is known, whether B is
//! better or worse. Differences in the command or the machine are said
//! first, since they make a comparison unfair.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::report::{EXIT_CLEAN, EXIT_ERROR};

/// Changes smaller than this share are called "same": run-to-run noise on
/// a shared machine is easily a couple of percent.
const SAME_WITHIN: f64 = 0.02;

/// `natter load compare A.json B.json`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The earlier run: a report saved with `natter load TEST … --json`.
    a: PathBuf,
    /// The later run, of the same test.
    b: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Reads a report saved with `--json` (`-`: stdin) and checks it is one:
/// an object with a `test` name and `results`. The error says which file
/// and why, for a usage error.
pub fn read_report(path: &Path) -> Result<Value, String> {
    let name = path.display();
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?
    };
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("{name} is not JSON ({e}); save a report with --json"))?;
    let is_report = v.get("test").is_some_and(Value::is_string)
        && v.get("results").is_some_and(Value::is_object);
    if !is_report {
        return Err(format!(
            "{name} is not a natter load report (no \"test\" and \"results\"); \
             save one with natter load TEST … --json"
        ));
    }
    Ok(v)
}

/// Compares the two reports; exit 0 when it could, 2 when a file is
/// missing, is not a report, or the two are of different tests.
pub fn run(args: CompareArgs) -> ExitCode {
    let loaded = read_report(&args.a).and_then(|a| Ok((a, read_report(&args.b)?)));
    let (a, b) = match loaded {
        Ok(ab) => ab,
        Err(e) => {
            eprintln!("natter load compare: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let c = match Comparison::new(&a, &b) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("natter load compare: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let names = (args.a.display().to_string(), args.b.display().to_string());
    if args.json {
        match serde_json::to_string(&c.json(&a, &b, &names)) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("natter load compare: cannot encode: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        }
    } else {
        print!("{}", c.table(&a, &b, &names));
    }
    ExitCode::from(EXIT_CLEAN)
}

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
    /// A setting or a count whose size says nothing good or bad.
    Unknown,
}

/// The figures of two runs of one test, paired.
struct Comparison {
    test: String,
    /// (path, A, B) for every figure in both, by path.
    rows: Vec<(String, f64, f64)>,
    only_a: Vec<String>,
    only_b: Vec<String>,
    /// What makes the two runs unlike: different commands, machines.
    notes: Vec<String>,
}

impl Comparison {
    fn new(a: &Value, b: &Value) -> Result<Comparison, String> {
        let ta = a["test"].as_str().unwrap_or("?");
        let tb = b["test"].as_str().unwrap_or("?");
        if ta != tb {
            return Err(format!(
                "A is a {ta} run and B a {tb} run: only runs of the same test compare"
            ));
        }
        let fa = figures(a);
        let mut fb: BTreeMap<String, f64> = figures(b).into_iter().collect();
        let mut rows = Vec::new();
        let mut only_a = Vec::new();
        for (path, va) in fa {
            match fb.remove(&path) {
                Some(vb) => rows.push((path, va, vb)),
                None => only_a.push(path),
            }
        }
        // B's extras in its own order (results first, then cpu).
        let only_b = figures(b)
            .into_iter()
            .filter(|(p, _)| fb.contains_key(p))
            .map(|(p, _)| p)
            .collect();
        let mut notes = Vec::new();
        if let (Some(ca), Some(cb)) = (a["command"].as_str(), b["command"].as_str())
            && ca != cb
        {
            notes.push("the commands differ: the figures may not be like for like".to_owned());
        }
        if a.get("machine").is_some() && b.get("machine").is_some() && a["machine"] != b["machine"]
        {
            notes.push(
                "the machines differ: compare runs on the same machine to judge a change"
                    .to_owned(),
            );
        }
        Ok(Comparison {
            test: ta.to_owned(),
            rows,
            only_a,
            only_b,
            notes,
        })
    }

    fn table(&self, a: &Value, b: &Value, names: &(String, String)) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "natter load compare: {} runs", self.test);
        for (tag, r, name) in [("A", a, &names.0), ("B", b, &names.1)] {
            let _ = writeln!(out, "  {tag}  {name}: {}", outcome(r));
            if let Some(c) = r["command"].as_str() {
                let _ = writeln!(out, "     {c}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let width = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            out,
            "\n{:<width$}  {:>14}  {:>14}  {:>8}",
            "figure", "A", "B", "B/A"
        );
        for (path, va, vb) in &self.rows {
            let (ratio, word) = judge(path, *va, *vb);
            let line = format!(
                "{path:<width$}  {:>14}  {:>14}  {:>8}  {word}",
                num(*va),
                num(*vb),
                ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if !self.only_a.is_empty() {
            let _ = writeln!(out, "\nonly in A: {}", self.only_a.join(", "));
        }
        if !self.only_b.is_empty() {
            let _ = writeln!(out, "only in B: {}", self.only_b.join(", "));
        }
        out
    }

    fn json(&self, a: &Value, b: &Value, names: &(String, String)) -> Value {
        let run = |r: &Value, name: &str| {
            json!({
                "file": name,
                "outcome": r.get("outcome"),
                "exit_code": r.get("exit_code"),
                "command": r.get("command"),
            })
        };
        let figures: Vec<Value> = self
            .rows
            .iter()
            .map(|(path, va, vb)| {
                let (ratio, word) = judge(path, *va, *vb);
                json!({
                    "figure": path,
                    "a": va,
                    "b": vb,
                    "ratio": ratio,
                    "verdict": if word.is_empty() { Value::Null } else { json!(word) },
                })
            })
            .collect();
        json!({
            "test": self.test,
            "a": run(a, &names.0),
            "b": run(b, &names.1),
            "notes": self.notes,
            "figures": figures,
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
        })
    }
}

fn outcome(r: &Value) -> String {
    let o = r["outcome"].as_str().unwrap_or("no outcome");
    match r["exit_code"].as_u64() {
        Some(c) => format!("{o} (exit {c})"),
        None => o.to_owned(),
    }
}

/// Every number in `results`, then `cpu`, by dotted path (each part in
/// name order). Arrays (ramp's steps, close codes, the time series) are
/// left out: their elements do not pair up between runs by position.
fn figures(r: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for top in ["results", "cpu"] {
        if let Some(v) = r.get(top) {
            flatten(top, v, &mut out);
        }
    }
    out
}

fn flatten(path: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k != "series" {
                    flatten(&format!("{path}.{k}"), v, out);
                }
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                out.push((path.to_owned(), x));
            }
        }
        _ => {}
    }
}

/// Which way is better for a figure, from its name.
fn direction(path: &str) -> Better {
    let key = path.rsplit('.').next().unwrap_or(path);
    // Sample counts of a percentile summary, the machine's size, a run's
    // own settings (ramp's limit), and raw CPU totals, which grow with the
    // work done (the per-delivery figures judge CPU).
    if [
        "count",
        "cores_available",
        "wall_s",
        "limit_ms",
        "server_cpu_s",
        "server_cores",
        "tester_cpu_s",
        "tester_cores",
    ]
    .contains(&key)
    {
        return Better::Unknown;
    }
    // Errors counted by their message: fewer is better.
    if path.contains(".reply_errors.") || path.contains(".failures.") {
        return Better::Lower;
    }
    const LOWER: &[&str] = &[
        "lost",
        "undelivered_at_end",
        "duplicates",
        "reordered",
        "missing_replies",
        "foreign_messages",
        "failed",
        "failed_tester_side",
        "join_failed",
        "refused_503",
        "cycles_failed",
        "unexpected_leaves",
        "connect_phase_s",
        "busiest_thread_share",
    ];
    const HIGHER: &[&str] = &[
        "deliveries",
        "deliveries_per_s",
        "says_acked",
        "says_per_s",
        "replies_ok",
        "send_rate_per_s",
        "connected",
        "connect_rate_per_s",
        "open_after_hold",
        "achieved_rate",
        "cycles_completed",
        "joined",
        "largest_step_under_limit",
    ];
    if LOWER.contains(&key)
        || key.ends_with("_ms")
        || key.starts_with("seq_")
        || key.starts_with("missing_")
        || key.contains("_cpu_us_per_")
        || key.contains("_cpu_s_per_")
        || key.contains("bytes_per_")
        || key.contains("rss")
    {
        Better::Lower
    } else if HIGHER.contains(&key) {
        Better::Higher
    } else {
        Better::Unknown
    }
}

/// B/A (none when A is 0 and B is not) and a word: `better`, `worse`,
/// `same` (within [`SAME_WITHIN`]), or nothing when the direction is
/// unknown.
fn judge(path: &str, a: f64, b: f64) -> (Option<f64>, &'static str) {
    let ratio = if a == 0.0 {
        (b == 0.0).then_some(1.0)
    } else {
        Some(b / a)
    };
    let dir = direction(path);
    if dir == Better::Unknown {
        return (ratio, "");
    }
    let same = match ratio {
        Some(r) => (r - 1.0).abs() <= SAME_WITHIN,
        None => false,
    };
    let word = if same {
        "same"
    } else if (b < a) == (dir == Better::Lower) {
        "better"
    } else {
        "worse"
    };
    (ratio, word)
}

/// A figure for the table: whole numbers as they are, others to four
/// significant digits, without trailing zeros.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions() {
        assert_eq!(direction("results.latency.p99_ms"), Better::Lower);
        assert_eq!(direction("results.latency.count"), Better::Unknown);
        assert_eq!(direction("results.deliveries_per_s"), Better::Higher);
        assert_eq!(
            direction("results.server_cpu_us_per_delivery"),
            Better::Lower
        );
        assert_eq!(
            direction("results.server_bytes_per_connection"),
            Better::Lower
        );
        assert_eq!(direction("results.subscribers"), Better::Unknown);
        assert_eq!(direction("results.seq_gaps"), Better::Lower);
    }

    #[test]
    fn judgement() {
        assert_eq!(judge("r.p99_ms", 2.0, 3.0), (Some(1.5), "worse"));
        assert_eq!(judge("r.p99_ms", 2.0, 1.0), (Some(0.5), "better"));
        assert_eq!(
            judge("r.deliveries_per_s", 100.0, 101.0),
            (Some(1.01), "same")
        );
        assert_eq!(judge("r.lost", 0.0, 3.0), (None, "worse"));
        assert_eq!(judge("r.lost", 0.0, 0.0), (Some(1.0), "same"));
        assert_eq!(judge("r.rooms", 1.0, 2.0), (Some(2.0), ""));
    }

    #[test]
    fn different_tests_do_not_compare() {
        let a = json!({"test": "fanout", "results": {}});
        let b = json!({"test": "conns", "results": {}});
        let e = Comparison::new(&a, &b).err().unwrap_or_default();
        assert!(e.contains("same test"), "{e}");
    }

    #[test]
    fn numbers() {
        assert_eq!(num(400.0), "400");
        assert_eq!(num(1.386), "1.386");
        assert_eq!(num(0.05500751), "0.05501");
        assert_eq!(num(1791.97), "1792");
        assert_eq!(num(0.5), "0.5");
    }
}
