//! The end of every run: the readable summary on stdout, or with `--json`
//! one JSON object, and the exit code (0 clean, 1 the server misbehaved,
//! 2 usage or connection errors on the tester's side).

use std::fmt::Write as _;
use std::process::ExitCode;

use serde::Serialize;

use super::series::SeriesReport;
use super::sys::{CpuWindow, Machine};

/// A clean run: every check passed.
pub const EXIT_CLEAN: u8 = 0;
/// The server misbehaved (loss, duplicates, reordering, unexpected closes,
/// failed connections, missing replies, a run that hit its deadline).
pub const EXIT_MISBEHAVIOUR: u8 = 1;
/// Usage errors, or the tester could not do its job (server unreachable,
/// out of local ports or file descriptors).
pub const EXIT_ERROR: u8 = 2;

/// What a run found besides its numbers.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct Findings {
    /// Server misbehaviour; any makes the exit code 1.
    pub problems: Vec<String>,
    /// Trouble on the tester's side; makes the exit code 2 when there is no problem.
    pub errors: Vec<String>,
    /// Worth knowing, changes nothing.
    pub warnings: Vec<String>,
}

impl Findings {
    /// Server misbehaviour: makes the run exit 1.
    pub fn problem(&mut self, s: impl Into<String>) {
        self.problems.push(s.into());
    }

    /// Trouble on the tester's side: makes the run exit 2 unless the server
    /// also misbehaved.
    pub fn error(&mut self, s: impl Into<String>) {
        self.errors.push(s.into());
    }

    /// Worth knowing; leaves the exit code as it is.
    pub fn warn(&mut self, s: impl Into<String>) {
        self.warnings.push(s.into());
    }

    /// A problem worded by `says(n)` when `n` is not zero. Most of a test's
    /// judgement is this shape, a count of something a correct server never
    /// does, so every test judges its counters with it and the `> 0`
    /// guards cannot drift apart.
    pub fn problem_if(&mut self, n: u64, says: impl FnOnce(u64) -> String) {
        if n > 0 {
            self.problem(says(n));
        }
    }

    /// An error worded by `says(n)` when `n` is not zero: a count of things
    /// that went wrong on the tester's side.
    pub fn error_if(&mut self, n: u64, says: impl FnOnce(u64) -> String) {
        if n > 0 {
            self.error(says(n));
        }
    }

    /// A warning worded by `says(n)` when `n` is not zero: a count worth
    /// knowing that does not make the run fail.
    pub fn warn_if(&mut self, n: u64, says: impl FnOnce(u64) -> String) {
        if n > 0 {
            self.warn(says(n));
        }
    }

    /// The room's seq numbering as `seen_by` saw it: gaps, duplicates and
    /// reordering of the server's per-room seq. Fanout, churn and ramp all
    /// check it, with one wording.
    pub fn seq_numbering(&mut self, seen_by: &str, gaps: u64, dups: u64, late: u64) {
        self.problem_if(gaps + dups + late, |_| {
            format!(
                "room seq numbering broken as seen by {seen_by}: {gaps} missing, {dups} \
                 duplicate, {late} out of order"
            )
        });
    }

    /// 0, 1 or 2. Problems outrank errors: a misbehaving server is the
    /// finding that matters even when the tester also struggled.
    pub fn exit_code(&self) -> u8 {
        if !self.problems.is_empty() {
            EXIT_MISBEHAVIOUR
        } else if !self.errors.is_empty() {
            EXIT_ERROR
        } else {
            EXIT_CLEAN
        }
    }
}

/// Readable lines: headings and `key  value` pairs.
#[derive(Default)]
pub struct Lines(String);

impl Lines {
    pub fn head(&mut self, title: &str) {
        let _ = writeln!(self.0, "{title}");
    }

    pub fn kv(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "  {key:<26} {value}");
    }

    /// The lines so far (for tests of a summary's wording).
    #[cfg(test)]
    pub fn text(&self) -> &str {
        &self.0
    }
}

/// A subcommand's results: serializable, and printable for people.
pub trait Summary: Serialize {
    fn human(&self, out: &mut Lines);
}

#[derive(Serialize)]
pub struct Report<T> {
    /// `fanout`, `conns`, `ramp` or `churn`.
    pub test: &'static str,
    /// The server URL; with several, the first (all are in `urls`).
    pub url: String,
    /// Every URL given, in order, with how many connections went to each.
    pub urls: Vec<UrlCount>,
    /// The --server-pid processes whose CPU and memory the figures sum;
    /// left out with fewer than two, where there is nothing summed.
    #[serde(skip_serializing_if = "fewer_than_two")]
    pub server_pids: Vec<u32>,
    /// The server's name and version from `welcome`.
    pub server: String,
    /// Names this run's rooms and nicks.
    pub run_id: String,
    /// The command line as given (`natter load …`).
    pub command: String,
    /// The machine the tester ran on.
    pub machine: Machine,
    /// `clean`, `misbehaviour` or `error`.
    pub outcome: &'static str,
    pub exit_code: u8,
    /// The run hit its hard deadline and was cut short.
    pub stopped_by_deadline: bool,
    pub deadline_s: f64,
    pub problems: Vec<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// CPU used in the measured window (tester, and server with --server-pid).
    pub cpu: Option<CpuWindow>,
    pub results: T,
    /// One point a second over the run (see `series.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<SeriesReport>,
}

/// How many connections one URL got, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UrlCount {
    pub url: String,
    /// Connections established (upgraded and welcomed).
    pub connections: u64,
    /// Connection attempts, failed ones included.
    pub attempted: u64,
}

pub struct Header {
    pub test: &'static str,
    /// Never empty: the run connects to at least one URL.
    pub urls: Vec<UrlCount>,
    pub server_pids: Vec<u32>,
    pub server: String,
    pub run_id: String,
    pub deadline_s: f64,
    pub command: String,
    pub machine: Machine,
}

impl<T: Summary> Report<T> {
    pub fn new(
        header: Header,
        mut findings: Findings,
        cpu: Option<CpuWindow>,
        stopped_by_deadline: bool,
        results: T,
    ) -> Report<T> {
        if let Some(cpu) = &cpu {
            findings.warnings.extend(cpu.bottleneck_warnings());
        }
        if stopped_by_deadline {
            findings.problem(format!(
                "the run did not finish within its hard deadline of {:.0} s and was cut short",
                header.deadline_s
            ));
        }
        let exit_code = findings.exit_code();
        Report {
            test: header.test,
            url: header
                .urls
                .first()
                .map(|u| u.url.clone())
                .unwrap_or_default(),
            urls: header.urls,
            server_pids: header.server_pids,
            server: header.server,
            run_id: header.run_id,
            command: header.command,
            machine: header.machine,
            outcome: match exit_code {
                EXIT_CLEAN => "clean",
                EXIT_MISBEHAVIOUR => "misbehaviour",
                _ => "error",
            },
            exit_code,
            stopped_by_deadline,
            deadline_s: header.deadline_s,
            problems: findings.problems,
            errors: findings.errors,
            warnings: findings.warnings,
            cpu,
            results,
            series: None,
        }
    }

    /// The report with its time series.
    pub fn with_series(mut self, series: Option<SeriesReport>) -> Report<T> {
        self.series = series;
        self
    }

    /// Prints the report (readable or JSON) and gives the exit code.
    pub fn emit(&self, json: bool) -> ExitCode {
        if json {
            match serde_json::to_string(self) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("natter load: cannot encode the report: {e}"),
            }
        } else {
            print!("{}", self.human());
        }
        ExitCode::from(self.exit_code)
    }

    fn human(&self) -> String {
        let mut out = Lines::default();
        let urls: Vec<&str> = self.urls.iter().map(|u| u.url.as_str()).collect();
        out.head(&format!(
            "natter load {} against {} ({}), run {}",
            self.test,
            urls.join(", "),
            self.server,
            self.run_id
        ));
        self.cluster_lines(&mut out);
        self.results.human(&mut out);
        if let Some(cpu) = &self.cpu {
            for (k, v) in cpu.lines() {
                out.kv(&k, v);
            }
        }
        let mut text = out.0;
        for w in &self.warnings {
            let _ = writeln!(text, "warning: {w}");
        }
        for e in &self.errors {
            let _ = writeln!(text, "ERROR: {e}");
        }
        for p in &self.problems {
            let _ = writeln!(text, "PROBLEM: {p}");
        }
        let verdict = match self.exit_code {
            EXIT_CLEAN => "clean run",
            EXIT_MISBEHAVIOUR => "the server misbehaved",
            _ => "the tester could not do its job",
        };
        let _ = writeln!(text, "result: {verdict} (exit {})", self.exit_code);
        text
    }
}

impl<T> Report<T> {
    /// With several URLs, how the connections were split over them; with
    /// several server PIDs, that the server figures are their sums. Nothing
    /// with one of each, so a single-server report reads as it always did.
    fn cluster_lines(&self, out: &mut Lines) {
        if self.urls.len() > 1 {
            let split: Vec<String> = self.urls.iter().map(UrlCount::line).collect();
            out.kv("connections per URL", split.join(" · "));
        }
        if !fewer_than_two(&self.server_pids) {
            let pids: Vec<String> = self.server_pids.iter().map(u32::to_string).collect();
            out.kv(
                "server processes",
                format!("{}: server CPU and memory are their sums", pids.join(" + ")),
            );
        }
    }
}

fn fewer_than_two(pids: &[u32]) -> bool {
    pids.len() < 2
}

impl UrlCount {
    /// `URL N`, or `URL N of M attempted` when some attempts failed.
    fn line(&self) -> String {
        if self.attempted == self.connections {
            format!("{} {}", self.url, self.connections)
        } else {
            format!(
                "{} {} of {} attempted",
                self.url, self.connections, self.attempted
            )
        }
    }
}

/// Thousands separators for big counts (12 345 678).
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    groups.join(" ")
}

/// Bytes in a readable unit.
pub fn bytes(n: f64) -> String {
    let abs = n.abs();
    if abs >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if abs >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if abs >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_rank_problems_over_errors() {
        let mut f = Findings::default();
        assert_eq!(f.exit_code(), EXIT_CLEAN);
        f.warn("w");
        assert_eq!(f.exit_code(), EXIT_CLEAN);
        f.error("e");
        assert_eq!(f.exit_code(), EXIT_ERROR);
        f.problem("p");
        assert_eq!(f.exit_code(), EXIT_MISBEHAVIOUR);
    }

    #[test]
    fn counted_checks_fire_only_on_a_count() {
        let mut f = Findings::default();
        f.problem_if(0, |n| format!("{n} lost"));
        f.error_if(0, |n| format!("{n} local"));
        f.warn_if(0, |n| format!("{n} late"));
        f.seq_numbering("x", 0, 0, 0);
        assert!(f.problems.is_empty() && f.errors.is_empty() && f.warnings.is_empty());
        f.problem_if(3, |n| format!("{n} lost"));
        f.error_if(2, |n| format!("{n} local"));
        f.warn_if(1, |n| format!("{n} late"));
        f.seq_numbering("the observer", 1, 0, 2);
        assert_eq!(
            f.problems,
            [
                "3 lost",
                "room seq numbering broken as seen by the observer: 1 missing, 0 duplicate, \
                 2 out of order"
            ]
        );
        assert_eq!(f.errors, ["2 local"]);
        assert_eq!(f.warnings, ["1 late"]);
    }

    /// Results with nothing to say, to look at the report around them.
    #[derive(Serialize)]
    struct NoResults;

    impl Summary for NoResults {
        fn human(&self, _: &mut Lines) {}
    }

    fn report(urls: &[(&str, u64, u64)], server_pids: Vec<u32>) -> Report<NoResults> {
        let header = Header {
            test: "conns",
            urls: urls
                .iter()
                .map(|&(url, connections, attempted)| UrlCount {
                    url: url.into(),
                    connections,
                    attempted,
                })
                .collect(),
            server_pids,
            server: "natter".into(),
            run_id: "abc123".into(),
            deadline_s: 10.0,
            command: "natter load conns".into(),
            machine: Machine::this(),
        };
        Report::new(header, Findings::default(), None, false, NoResults)
    }

    /// One URL and one PID: the report reads as it did before URLs and
    /// PIDs could be repeated (in JSON, `urls` is the one addition).
    #[test]
    fn a_single_server_report_is_unchanged() {
        let r = report(&[("ws://a/ws", 5, 5)], vec![7]);
        let text = r.human();
        let head = "natter load conns against ws://a/ws (natter), run abc123\n";
        assert_eq!(text, format!("{head}result: clean run (exit 0)\n"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["url"], "ws://a/ws");
        assert_eq!(json["urls"][0]["connections"], 5);
        assert!(json.get("server_pids").is_none(), "{json}");
    }

    /// Several URLs and PIDs: the split and the summing are said, in text
    /// and JSON; a URL that lost attempts shows them.
    #[test]
    fn a_cluster_report_shows_the_split_and_the_sum() {
        let r = report(&[("ws://a/ws", 3, 3), ("ws://b/ws", 1, 2)], vec![7, 8]);
        let text = r.human();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "natter load conns against ws://a/ws, ws://b/ws (natter), run abc123",
                "  connections per URL        ws://a/ws 3 · ws://b/ws 1 of 2 attempted",
                "  server processes           7 + 8: server CPU and memory are their sums",
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["url"], "ws://a/ws");
        assert_eq!(json["urls"][1]["url"], "ws://b/ws");
        assert_eq!(json["urls"][1]["attempted"], 2);
        assert_eq!(json["server_pids"], serde_json::json!([7, 8]));
    }

    #[test]
    fn formats() {
        assert_eq!(count(1234567), "1 234 567");
        assert_eq!(count(12), "12");
        assert_eq!(bytes(2048.0), "2.0 KiB");
    }
}
