//! The HTML report: one self-contained page from a run's JSON report
//! (`--report FILE.html`, or `natter load report IN.json OUT.html` for a
//! report saved with `--json`).
//!
//! Why a page and not just the JSON: a load test's story is in how its
//! figures moved over the run (a latency spike at second 7, deliveries
//! falling behind the offered rate, the server's CPU hitting the cores),
//! which a table of totals hides and a chart shows at a glance.
//!
//! The page is one file with nothing outside it: inline CSS, inline SVG
//! charts drawn by plotters, no script, no web font, no URL to fetch, so it
//! opens the same offline, attached to an issue or years later. It is
//! also well-formed XML (every tag closed, `<meta/>` self-closed), which
//! `tests/load_report.rs` checks with a strict parser.
//!
//! It works from the JSON rather than the typed results so that one
//! renderer serves every test, the live run and a saved file alike, and an
//! older report (no `series`, no `command`) still renders what it has.
//! Every string taken from the JSON is HTML-escaped: a command line or a
//! server's error text is data, never markup.

use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use super::compare::read_report;
use super::report::{EXIT_CLEAN, EXIT_ERROR, bytes, count};
use super::stats::ms;

/// Width and height of every chart's SVG, in CSS pixels. 900 wide reads
/// well on a laptop screen and in a README screenshot; the CSS lets it
/// shrink on a narrower window (the SVG keeps its viewBox).
const CHART_W: u32 = 900;
const CHART_H: u32 = 340;

// Colours (Okabe-Ito, safe for colour-blind readers). Each line also has
// its own dash pattern, so the charts still read printed in grey.
const BLUE: RGBColor = RGBColor(0, 114, 178);
const VERMILLION: RGBColor = RGBColor(213, 94, 0);
const ORANGE: RGBColor = RGBColor(230, 159, 0);
const INK: RGBColor = RGBColor(40, 40, 40);
const GREY: RGBColor = RGBColor(120, 120, 120);

/// `natter load report IN.json OUT.html`: the page of a saved report.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A report saved with `natter load TEST … --json` (`-` for stdin).
    input: PathBuf,
    /// The HTML file to write (`-` for stdout).
    output: PathBuf,
}

/// Renders a saved report to a page; exit 0, or 2 when the input is not a
/// readable natter report or the page cannot be written.
pub fn run_report(args: ReportArgs) -> ExitCode {
    let report = match read_report(&args.input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("natter load report: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match write(&args.output, &report) {
        Ok(()) => ExitCode::from(EXIT_CLEAN),
        Err(e) => {
            eprintln!(
                "natter load report: cannot write {}: {e}",
                args.output.display()
            );
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Writes the page of `report` to `path` (`-`: stdout). For `--report`.
pub fn write(path: &Path, report: &Value) -> std::io::Result<()> {
    let page = render(report);
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(page.as_bytes())?;
        out.flush()
    } else {
        std::fs::write(path, page)
    }
}

/// The whole page for a report JSON (what `natter load … --json` prints):
/// the verdict, the run (command, machine, server), a summary table, the
/// charts of its time series, and every figure in a fold-out list.
pub fn render(report: &Value) -> String {
    let test = str_at(report, "test").unwrap_or("unknown");
    let mut p = String::with_capacity(64 * 1024);
    let _ = write!(
        p,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n\
         <title>natter load {} — {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        esc(test),
        esc(str_at(report, "outcome").unwrap_or("no outcome")),
    );
    let _ = writeln!(p, "<h1>natter load {}</h1>", esc(test));
    verdict(&mut p, report);
    headline(&mut p, test, report);
    run_table(&mut p, report);
    summary_table(&mut p, test, report);
    if test == "ramp" {
        ramp_steps(&mut p, report);
    }
    charts(&mut p, test, report);
    all_figures(&mut p, report);
    p.push_str("</main>\n</body>\n</html>\n");
    p
}

/// Plain CSS, no external font: the system's own sans-serif.
const STYLE: &str = "
body{margin:0;background:#f6f7f9;color:#1d1f23;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}
main{max-width:960px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:26px;margin:8px 0 12px}
h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #d5d8de;padding-bottom:4px}
.verdict{border-radius:6px;padding:12px 16px;margin:8px 0 16px;border:2px solid}
.verdict.clean{background:#e7f5ec;border-color:#1e7b34}
.verdict.misbehaviour{background:#fdeaea;border-color:#b3261e}
.verdict.error,.verdict.unknown{background:#fff4e0;border-color:#a15c00}
.verdict .big{font-size:20px;font-weight:700}
.verdict ul{margin:6px 0 0;padding-left:22px}
.verdict li.problem::marker{content:'✖ '}
.verdict li.error::marker{content:'! '}
.verdict li.warning::marker{content:'△ '}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 8px}
.tile{background:#fff;border:1px solid #d5d8de;border-radius:6px;padding:8px 14px;min-width:140px}
.tile .v{font-size:22px;font-weight:700}
.tile .k{font-size:13px;color:#555}
table{border-collapse:collapse;width:100%;background:#fff;font-size:14px}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #e3e5e9;vertical-align:top}
th{width:32%;font-weight:600;color:#333}
thead th{width:auto;background:#eef0f3}
td.num{font-variant-numeric:tabular-nums}
tr.bad td,tr.bad th{background:#fdeaea;color:#8a1c15}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
figure{margin:16px 0;background:#fff;border:1px solid #d5d8de;border-radius:6px;padding:6px}
figure svg{display:block;width:100%;height:auto;max-width:900px;margin:0 auto}
figcaption{font-size:13px;color:#555;padding:2px 8px 4px}
.note{background:#fff;border-left:4px solid #888;padding:8px 12px;color:#444}
details{margin-top:24px}
summary{cursor:pointer;font-weight:600}
";

// ---------------------------------------------------------------------------
// The verdict, the headline figures, the run
// ---------------------------------------------------------------------------

/// The outcome in words and colour, then every problem, error and warning.
fn verdict(p: &mut String, report: &Value) {
    let outcome = str_at(report, "outcome").unwrap_or("unknown");
    let class = match outcome {
        "clean" | "misbehaviour" | "error" => outcome,
        _ => "unknown",
    };
    let words = match outcome {
        "clean" => "Clean run: every check passed",
        "misbehaviour" => "The server misbehaved",
        "error" => "The tester could not do its job",
        _ => "No verdict recorded",
    };
    let exit = report
        .get("exit_code")
        .and_then(Value::as_u64)
        .map_or(String::new(), |c| format!(" (exit {c})"));
    let _ = write!(
        p,
        "<section class=\"verdict {class}\">\n<div class=\"big\">{}{}</div>\n",
        esc(words),
        esc(&exit)
    );
    if report.get("stopped_by_deadline").and_then(Value::as_bool) == Some(true) {
        p.push_str("<div>Stopped by its hard deadline: the figures are what it had then.</div>\n");
    }
    let mut items = String::new();
    for (key, class) in [
        ("problems", "problem"),
        ("errors", "error"),
        ("warnings", "warning"),
    ] {
        for s in strings_at(report, key) {
            let _ = writeln!(
                items,
                "<li class=\"{class}\"><b>{class}:</b> {}</li>",
                esc(s)
            );
        }
    }
    if !items.is_empty() {
        let _ = write!(p, "<ul>\n{items}</ul>\n");
    }
    p.push_str("</section>\n");
}

/// A few big numbers, the ones a reader looks for first in each test.
fn headline(p: &mut String, test: &str, report: &Value) {
    let r = &report["results"];
    let mut tiles: Vec<(String, String)> = Vec::new();
    let mut tile = |label: &str, v: Option<String>| {
        if let Some(v) = v {
            tiles.push((label.to_owned(), v));
        }
    };
    match test {
        "fanout" => {
            tile(
                "deliveries per second",
                num_at(r, "deliveries_per_s").map(rate),
            );
            tile("latency p50", num_at(r, "latency.p50_ms").map(ms));
            tile("latency p99", num_at(r, "latency.p99_ms").map(ms));
            let bad = ["lost", "duplicates", "reordered"]
                .iter()
                .map(|k| num_at(r, k))
                .collect::<Option<Vec<f64>>>();
            tile(
                "lost / duplicated / reordered",
                bad.map(|v| v.iter().map(|&n| plain(n)).collect::<Vec<_>>().join(" / ")),
            );
            tile(
                "server CPU per delivery",
                num_at(r, "server_cpu_us_per_delivery").map(|v| format!("{} µs", plain(v))),
            );
        }
        "conns" => {
            tile(
                "connections established",
                num_at(r, "connections.connected").map(plain),
            );
            tile(
                "connects per second",
                num_at(r, "connect_rate_per_s").map(rate),
            );
            tile(
                "connect time p99",
                num_at(r, "connections.connect_time.p99_ms").map(ms),
            );
            tile(
                "server memory per connection",
                num_at(r, "server_bytes_per_connection").map(bytes),
            );
        }
        "ramp" => {
            tile(
                "largest room under the limit",
                num_at(r, "largest_step_under_limit").map(|v| format!("{} clients", plain(v))),
            );
            tile("p95 limit", num_at(r, "limit_ms").map(ms));
        }
        "churn" => {
            tile("cycles per second", num_at(r, "achieved_rate").map(rate));
            tile("cycle time p99", num_at(r, "cycle_time.p99_ms").map(ms));
            tile("missing leaves", num_at(r, "missing_leaves").map(plain));
        }
        _ => {}
    }
    if tiles.is_empty() {
        return;
    }
    p.push_str("<div class=\"tiles\">\n");
    for (k, v) in tiles {
        let _ = writeln!(
            p,
            "<div class=\"tile\"><div class=\"v\">{}</div><div class=\"k\">{}</div></div>",
            esc(&v),
            esc(&k)
        );
    }
    p.push_str("</div>\n");
}

/// What ran, where, against what: command, machine, server, URLs.
fn run_table(p: &mut String, report: &Value) {
    let mut rows: Vec<(&str, String, bool)> = Vec::new();
    if let Some(t) = str_at(report, "test") {
        rows.push(("test", t.to_owned(), false));
    }
    if let Some(c) = str_at(report, "command") {
        rows.push(("command", c.to_owned(), true));
    }
    if let Some(m) = report.get("machine").filter(|m| m.is_object()) {
        let mut parts = Vec::new();
        if let Some(c) = m.get("cpus").and_then(Value::as_f64) {
            parts.push(format!("{} CPUs", plain(c)));
        }
        if let Some(b) = m.get("memory_bytes").and_then(Value::as_f64) {
            parts.push(format!("{} memory", bytes(b)));
        }
        if let Some(k) = m.get("kernel").and_then(Value::as_str) {
            parts.push(k.to_owned());
        }
        rows.push(("machine", parts.join(" · "), false));
    }
    if let Some(s) = str_at(report, "server") {
        rows.push(("server", s.to_owned(), false));
    }
    match report.get("urls").and_then(Value::as_array) {
        Some(urls) if !urls.is_empty() => {
            let split: Vec<String> = urls
                .iter()
                .map(|u| {
                    let url = u.get("url").and_then(Value::as_str).unwrap_or("?");
                    match u.get("connections").and_then(Value::as_u64) {
                        Some(n) => format!("{url} ({n} connections)"),
                        None => url.to_owned(),
                    }
                })
                .collect();
            rows.push(("URLs", split.join(", "), true));
        }
        _ => {
            if let Some(u) = str_at(report, "url") {
                rows.push(("URL", u.to_owned(), true));
            }
        }
    }
    if let Some(pids) = report.get("server_pids").and_then(Value::as_array) {
        let pids: Vec<String> = pids.iter().map(Value::to_string).collect();
        rows.push((
            "server processes",
            format!("{} (figures are their sums)", pids.join(" + ")),
            false,
        ));
    }
    if let Some(id) = str_at(report, "run_id") {
        rows.push(("run id", id.to_owned(), true));
    }
    if let Some(d) = num_at(report, "deadline_s") {
        rows.push(("hard deadline", format!("{} s", plain(d)), false));
    }
    p.push_str("<h2>The run</h2>\n<table>\n");
    for (k, v, code) in rows {
        let v = if code {
            format!("<code>{}</code>", esc(&v))
        } else {
            esc(&v)
        };
        let _ = writeln!(p, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
    p.push_str("</table>\n");
}

// ---------------------------------------------------------------------------
// The summary table
// ---------------------------------------------------------------------------

/// The summary rows of each test, in reading order: (path in `results`,
/// label). Rows whose path the report lacks are left out, so an older or
/// newer report still renders; everything else is in "every figure".
fn summary_rows(test: &str) -> &'static [(&'static str, &'static str)] {
    match test {
        "fanout" => &[
            ("connections", "connections"),
            ("connections.connect_time", "connect time"),
            ("sent", "messages said (measured window)"),
            ("send_rate_per_s", "send rate"),
            ("target_send_rate_per_s", "target send rate"),
            ("max_publisher_lag_ms", "largest publisher lag"),
            ("says_per_s", "says acknowledged per second"),
            ("ok_latency", "ok round trip (from the scheduled send)"),
            ("missing_replies", "missing replies"),
            ("reply_errors", "error replies"),
            ("expected_deliveries", "expected deliveries"),
            ("deliveries", "deliveries"),
            ("deliveries_per_s", "deliveries per second"),
            ("latency", "delivery latency"),
            ("lost", "lost"),
            ("undelivered_at_end", "undelivered at the end"),
            ("duplicates", "duplicates"),
            ("reordered", "reordered"),
            ("seq_gaps", "room seq gaps"),
            ("seq_duplicates", "room seq duplicates"),
            ("seq_reordered", "room seq out of order"),
            ("foreign_messages", "foreign messages"),
            ("close_codes_seen", "close codes seen"),
            ("server_cpu_us_per_delivery", "server CPU per delivery"),
        ],
        "conns" => &[
            ("connections", "connections"),
            ("connections.connect_time", "connect time"),
            ("connect_phase_s", "connect phase"),
            ("connect_rate_per_s", "connects per second"),
            ("open_after_hold", "open after the hold"),
            ("close_codes_seen", "close codes seen"),
            ("server_rss_before", "server memory before"),
            ("server_rss_established", "server memory, all connected"),
            ("server_rss_held", "server memory, end of hold"),
            ("server_rss_after_close", "server memory after closing"),
            (
                "server_bytes_per_connection",
                "server memory per connection",
            ),
            (
                "tester_bytes_per_connection",
                "tester memory per connection",
            ),
            ("server_cpu_us_per_connect", "server CPU per connect"),
        ],
        "ramp" => &[
            ("connections", "connections"),
            ("connections.connect_time", "connect time"),
            ("largest_step_under_limit", "largest step under the limit"),
            ("stop_reason", "stopped because"),
            ("seq_gaps", "room seq gaps"),
            ("seq_duplicates", "room seq duplicates"),
            ("seq_reordered", "room seq out of order"),
            ("close_codes_seen", "close codes seen"),
        ],
        "churn" => &[
            ("cycles_started", "cycles started"),
            ("cycles_completed", "cycles completed"),
            ("cycles_failed", "cycles failed"),
            ("achieved_rate", "cycles per second"),
            ("max_start_lag_ms", "largest start lag"),
            ("graceful_closes", "graceful closes"),
            ("abrupt_drops", "abrupt drops"),
            ("connections", "connections"),
            ("connections.connect_time", "connect time"),
            ("cycle_time", "cycle time"),
            ("failures", "failures"),
            ("joined", "joined"),
            ("missing_joins", "missing joins"),
            ("missing_messages", "missing messages"),
            ("missing_leaves", "missing leaves"),
            ("unexpected_leaves", "unexpected leaves"),
            ("seq_gaps", "room seq gaps"),
            ("seq_duplicates", "room seq duplicates"),
            ("seq_reordered", "room seq out of order"),
            ("observer_closes", "observer closes"),
            ("server_cpu_us_per_cycle", "server CPU per cycle"),
        ],
        _ => &[],
    }
}

/// Counters a correct server keeps at zero: shown red when they are not.
const ZERO_IS_RIGHT: &[&str] = &[
    "lost",
    "undelivered_at_end",
    "duplicates",
    "reordered",
    "seq_gaps",
    "seq_duplicates",
    "seq_reordered",
    "missing_replies",
    "foreign_messages",
    "cycles_failed",
    "missing_joins",
    "missing_messages",
    "missing_leaves",
    "unexpected_leaves",
];

fn summary_table(p: &mut String, test: &str, report: &Value) {
    let r = &report["results"];
    p.push_str("<h2>Summary</h2>\n<table>\n");
    if let Some(setup) = setup_line(test, r) {
        let _ = writeln!(p, "<tr><th>setup</th><td>{}</td></tr>", esc(&setup));
    }
    for &(path, label) in summary_rows(test) {
        let Some(v) = at(r, path) else { continue };
        let bad = ZERO_IS_RIGHT.contains(&path) && v.as_f64().is_some_and(|n| n != 0.0);
        let class = if bad { " class=\"bad\"" } else { "" };
        let _ = writeln!(
            p,
            "<tr{class}><th>{}</th><td class=\"num\">{}</td></tr>",
            esc(label),
            esc(&shown(path, v))
        );
    }
    if let Some(cpu) = report.get("cpu").filter(|c| c.is_object()) {
        for (label, v) in cpu_rows(cpu) {
            let _ = writeln!(
                p,
                "<tr><th>{}</th><td class=\"num\">{}</td></tr>",
                esc(label),
                esc(&v)
            );
        }
    }
    p.push_str("</table>\n");
}

/// The test's settings in one line, as the readable summary words them.
fn setup_line(test: &str, r: &Value) -> Option<String> {
    let n = |k: &str| num_at(r, k).map(plain);
    Some(match test {
        "fanout" => format!(
            "{} subscribers, {} publishers in {} room(s), {} msg/s each; warm-up {} s, measured {} s",
            n("subscribers")?,
            n("publishers")?,
            n("rooms")?,
            n("rate_per_publisher")?,
            n("warmup_s")?,
            n("duration_s")?
        ),
        "conns" => format!("{} connections, held {} s", n("requested")?, n("hold_s")?),
        "ramp" => format!(
            "steps of {} up to {} clients; {} broadcasts per step, {} at once; limit p95 {}",
            n("step")?,
            n("max_clients")?,
            n("samples_per_step")?,
            n("concurrent")?,
            ms(num_at(r, "limit_ms")?)
        ),
        "churn" => format!(
            "{} cycles/s for {} s, at most {} at once",
            n("rate")?,
            n("duration_s")?,
            n("concurrency")?
        ),
        _ => return None,
    })
}

/// The tester's and the server's CPU over the measured window.
fn cpu_rows(cpu: &Value) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    let cores = num_at(cpu, "cores_available");
    let of = |c: f64| match cores {
        Some(n) => format!("{c:.2} cores of {}", plain(n)),
        None => format!("{c:.2} cores"),
    };
    if let Some(c) = num_at(cpu, "server_cores") {
        rows.push(("server CPU", of(c)));
    }
    if let Some(c) = num_at(cpu, "tester_cores") {
        rows.push(("tester CPU", of(c)));
    }
    if let (Some(name), Some(share)) = (
        str_at(cpu, "busiest_thread"),
        num_at(cpu, "busiest_thread_share"),
    ) {
        rows.push((
            "tester's busiest thread",
            format!("{name}: {:.0}% of a core", share * 100.0),
        ));
    }
    if let Some(w) = num_at(cpu, "wall_s") {
        rows.push(("CPU measured over", format!("{w:.2} s")));
    }
    rows
}

/// Ramp's steps, one row each: its story is per step, not per second.
fn ramp_steps(p: &mut String, report: &Value) {
    let Some(steps) = report["results"].get("steps").and_then(Value::as_array) else {
        return;
    };
    if steps.is_empty() {
        return;
    }
    p.push_str(
        "<h2>Steps</h2>\n<table>\n<thead><tr><th>clients</th><th>joined in</th>\
         <th>refused</th><th>failed</th><th>samples</th><th>rtt min</th><th>p50</th>\
         <th>p95</th><th>max</th><th>under limit</th></tr></thead>\n<tbody>\n",
    );
    for s in steps {
        let n = |k: &str| num_at(s, k).map_or("–".to_owned(), plain);
        let t = |k: &str| num_at(s, k).map_or("–".to_owned(), ms);
        let under = s.get("under_limit").and_then(Value::as_bool);
        let class = if under == Some(false) {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = writeln!(
            p,
            "<tr{class}><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&n("clients")),
            esc(&num_at(s, "join_s").map_or("–".to_owned(), |v| format!("{v:.2} s"))),
            esc(&n("refused_503")),
            esc(&n("failed")),
            esc(&n("samples")),
            esc(&t("rtt_min_ms")),
            esc(&t("rtt_p50_ms")),
            esc(&t("rtt_p95_ms")),
            esc(&t("rtt_max_ms")),
            match under {
                Some(true) => "yes",
                Some(false) => "no",
                None => "–",
            }
        );
    }
    p.push_str("</tbody>\n</table>\n");
}

/// Every leaf of `results` and `cpu`, by dotted path, folded away: the
/// table above picks; this one hides nothing.
fn all_figures(p: &mut String, report: &Value) {
    let mut rows = Vec::new();
    for top in ["results", "cpu"] {
        if let Some(v) = report.get(top) {
            leaves(top, v, &mut rows);
        }
    }
    if rows.is_empty() {
        return;
    }
    p.push_str("<details>\n<summary>Every figure in the report</summary>\n<table>\n");
    for (path, v) in rows {
        let _ = writeln!(
            p,
            "<tr><th><code>{}</code></th><td class=\"num\">{}</td></tr>",
            esc(&path),
            esc(&v)
        );
    }
    p.push_str("</table>\n</details>\n");
}

/// Flattens scalars into (dotted path, text); arrays of scalars are joined
/// and arrays of objects numbered (`steps.0.clients`).
fn leaves(path: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                leaves(&format!("{path}.{k}"), v, out);
            }
        }
        Value::Array(a) if a.iter().any(|x| x.is_object() || x.is_array()) => {
            for (i, v) in a.iter().enumerate() {
                leaves(&format!("{path}.{i}"), v, out);
            }
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(scalar).collect();
            out.push((path.to_owned(), items.join(", ")));
        }
        _ => out.push((path.to_owned(), scalar(v))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".to_owned(),
        other => other.to_string(),
    }
}

/// A figure as a person reads it, by its shape and its name's unit.
fn shown(path: &str, v: &Value) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    match v {
        Value::Object(m) if m.contains_key("p50_ms") => percentiles(v),
        Value::Object(m) if m.contains_key("connected") => connect_summary(v),
        Value::Object(m) if m.is_empty() => "none".to_owned(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", scalar(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(a) if a.is_empty() => "none".to_owned(),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| format!("{k} {}", scalar(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
                other => scalar(other),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Number(n) => {
            let Some(x) = n.as_f64() else {
                return n.to_string();
            };
            if key.ends_with("_ms") {
                ms(x)
            } else if key.contains("rss") || key.contains("bytes") {
                bytes(x)
            } else if key.contains("_us_per_") {
                format!("{} µs", plain(x))
            } else if key.ends_with("_per_s") || key.ends_with("_rate") || key == "achieved_rate" {
                rate(x)
            } else if key.ends_with("_s") {
                format!("{x:.2} s")
            } else {
                plain(x)
            }
        }
        other => scalar(other),
    }
}

/// `p50 · p90 · p99 · p99.9 · max (n=…)`, like the readable summary.
fn percentiles(v: &Value) -> String {
    let g = |k: &str| num_at(v, k).map_or("–".to_owned(), ms);
    format!(
        "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} (n={})",
        g("p50_ms"),
        g("p90_ms"),
        g("p99_ms"),
        g("p999_ms"),
        g("max_ms"),
        num_at(v, "count").map_or("?".to_owned(), plain)
    )
}

fn connect_summary(v: &Value) -> String {
    let g = |k: &str| num_at(v, k).map_or("?".to_owned(), plain);
    let mut s = format!(
        "{} connected · {} refused (503) · {} failed",
        g("connected"),
        g("refused_503"),
        g("failed")
    );
    if num_at(v, "failed_tester_side").is_some_and(|n| n > 0.0) {
        let _ = write!(s, " ({} on the tester's side)", g("failed_tester_side"));
    }
    if num_at(v, "join_failed").is_some_and(|n| n > 0.0) {
        let _ = write!(s, " · {} joins failed", g("join_failed"));
    }
    s
}

// ---------------------------------------------------------------------------
// The charts
// ---------------------------------------------------------------------------

/// How a line is drawn: its colour, and a dash pattern so that it is told
/// apart from the others without colour too.
#[derive(Clone, Copy)]
struct Stroke {
    color: RGBColor,
    dash: Dash,
    width: u32,
}

#[derive(Clone, Copy)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
}

const fn stroke(color: RGBColor, dash: Dash) -> Stroke {
    Stroke {
        color,
        dash,
        width: 2,
    }
}

/// One named line; `None` values are gaps (a second with no samples).
struct Line {
    name: String,
    stroke: Stroke,
    points: Vec<(f64, Option<f64>)>,
}

/// A reference line across the chart: vertical at an x, or horizontal at a y.
struct Mark {
    name: String,
    stroke: Stroke,
    at: f64,
    vertical: bool,
}

/// One bar of a histogram: from x0 to x1, `h` high.
struct Bar {
    x0: f64,
    x1: f64,
    h: f64,
}

/// An axis: its range, and whether it is logarithmic.
#[derive(Clone)]
struct Scale {
    range: Range<f64>,
    log: bool,
}

/// Everything one chart shows.
struct Chart {
    /// Titles the SVG; also its accessible name.
    title: String,
    /// Said under the chart: how to read it.
    caption: String,
    x_desc: String,
    y_desc: String,
    x: Scale,
    y: Scale,
    lines: Vec<Line>,
    bars: Vec<Bar>,
    bar_name: String,
    marks: Vec<Mark>,
}

/// The charts: from `series` (and ramp's steps), or a note that the report
/// has no time series.
fn charts(p: &mut String, test: &str, report: &Value) {
    let mut list: Vec<Chart> = Vec::new();
    let series = report.get("series").filter(|s| s.is_object());
    if let Some(s) = series {
        let t = times(s);
        list.extend(latency_chart(s, &t));
        list.extend(deliveries_chart(s, &t));
        list.extend(connections_chart(s, &t));
        list.extend(histogram_chart(s, report));
        list.extend(cpu_chart(s, &t, report));
    }
    if test == "ramp" {
        list.extend(ramp_chart(report));
    }
    p.push_str("<h2>Charts</h2>\n");
    if series.is_none() {
        p.push_str(
            "<p class=\"note\">This report has no time series (it was recorded by a tester \
             that did not keep them), so there is nothing to chart over time; the summary \
             above is complete.</p>\n",
        );
    } else if list.is_empty() {
        p.push_str("<p class=\"note\">The time series of this report hold no samples.</p>\n");
    }
    for c in &list {
        let svg = match c.svg() {
            Ok(svg) => svg,
            Err(e) => {
                let _ = writeln!(
                    p,
                    "<p class=\"note\">{}: the chart could not be drawn ({})</p>",
                    esc(&c.title),
                    esc(&e)
                );
                continue;
            }
        };
        let _ = writeln!(
            p,
            "<figure>\n{svg}<figcaption>{}</figcaption>\n</figure>",
            esc(&c.caption)
        );
    }
}

/// The x of each sample: `t_s`, or its index × `interval_s` without it.
fn times(s: &Value) -> Vec<Option<f64>> {
    if let Some(t) = column(s, "t_s") {
        return t;
    }
    let step = num_at(s, "interval_s").unwrap_or(1.0);
    let n = [
        "latency_p50_ms",
        "deliveries_per_s",
        "connections",
        "server_cpu_cores",
        "tester_cpu_cores",
    ]
    .iter()
    .filter_map(|k| column(s, k).map(|c| c.len()))
    .max()
    .unwrap_or(0);
    (0..n).map(|i| Some(i as f64 * step)).collect()
}

/// One series as numbers, nulls kept as gaps; `None` when absent.
fn column(s: &Value, key: &str) -> Option<Vec<Option<f64>>> {
    let a = s.get(key)?.as_array()?;
    Some(
        a.iter()
            .map(|v| v.as_f64().filter(|&x| plottable(x)))
            .collect(),
    )
}

/// A named line over the run's seconds, or `None` when the series is
/// absent or holds no value at all.
fn line(s: &Value, t: &[Option<f64>], key: &str, name: &str, stroke: Stroke) -> Option<Line> {
    let ys = column(s, key)?;
    let points: Vec<(f64, Option<f64>)> = t
        .iter()
        .zip(ys)
        .filter_map(|(t, y)| t.map(|t| (t, y)))
        .collect();
    points.iter().any(|(_, y)| y.is_some()).then(|| Line {
        name: name.to_owned(),
        stroke,
        points,
    })
}

fn time_scale(lines: &[Line]) -> Scale {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (lo, hi) = min_max(xs).unwrap_or((0.0, 1.0));
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    Scale {
        range: lo..hi,
        log: false,
    }
}

/// A y axis from zero for counts and rates, a little above the largest.
fn zero_based(values: impl Iterator<Item = f64>) -> Scale {
    let hi = values.fold(0.0f64, f64::max);
    Scale {
        range: 0.0..if hi > 0.0 { hi * 1.1 } else { 1.0 },
        log: false,
    }
}

/// A y axis for latencies: logarithmic when the values span more than
/// 30×, where a linear axis would flatten p50 onto the floor under a tail.
fn latency_scale(values: impl Iterator<Item = f64>) -> Scale {
    let positive: Vec<f64> = values.filter(|v| *v > 0.0).collect();
    let Some((lo, hi)) = min_max(positive.iter().copied()) else {
        return Scale {
            range: 0.0..1.0,
            log: false,
        };
    };
    if hi / lo > 30.0 {
        Scale {
            range: lo / 1.5..hi * 1.5,
            log: true,
        }
    } else {
        Scale {
            range: 0.0..hi * 1.1,
            log: false,
        }
    }
}

fn line_values(lines: &[Line]) -> impl Iterator<Item = f64> + '_ {
    lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1))
}

fn per(s: &Value) -> String {
    match num_at(s, "interval_s") {
        Some(i) if (i - 1.0).abs() > 1e-9 => format!("per {} s", plain(i)),
        _ => "per second".to_owned(),
    }
}

fn latency_chart(s: &Value, t: &[Option<f64>]) -> Option<Chart> {
    let lines: Vec<Line> = [
        line(s, t, "latency_p50_ms", "p50", stroke(BLUE, Dash::Solid)),
        line(
            s,
            t,
            "latency_p99_ms",
            "p99",
            stroke(VERMILLION, Dash::Dashed),
        ),
        line(s, t, "latency_max_ms", "max", stroke(INK, Dash::Dotted)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if lines.is_empty() {
        return None;
    }
    let y = latency_scale(line_values(&lines));
    Some(Chart {
        title: format!("Delivery latency {}", per(s)),
        caption: "Send to receipt of each delivery, as percentiles of the deliveries in \
                  each interval; gaps are intervals with none."
            .to_owned(),
        x_desc: "time (s)".to_owned(),
        y_desc: axis_desc("latency (ms)", &y),
        x: time_scale(&lines),
        y,
        lines,
        bars: Vec::new(),
        bar_name: String::new(),
        marks: Vec::new(),
    })
}

fn deliveries_chart(s: &Value, t: &[Option<f64>]) -> Option<Chart> {
    let lines: Vec<Line> = [
        line(
            s,
            t,
            "deliveries_per_s",
            "delivered",
            stroke(BLUE, Dash::Solid),
        ),
        line(
            s,
            t,
            "offered_per_s",
            "offered",
            stroke(ORANGE, Dash::Dashed),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if lines.is_empty() {
        return None;
    }
    let y = zero_based(line_values(&lines));
    Some(Chart {
        title: "Deliveries per second against the offered rate".to_owned(),
        caption: "A delivered line under the offered one means the server (or the tester) \
                  fell behind."
            .to_owned(),
        x_desc: "time (s)".to_owned(),
        y_desc: "deliveries / s".to_owned(),
        x: time_scale(&lines),
        y,
        lines,
        bars: Vec::new(),
        bar_name: String::new(),
        marks: Vec::new(),
    })
}

fn connections_chart(s: &Value, t: &[Option<f64>]) -> Option<Chart> {
    let l = line(s, t, "connections", "open", stroke(BLUE, Dash::Solid))?;
    let lines = vec![l];
    let y = zero_based(line_values(&lines));
    Some(Chart {
        title: "Connections over time".to_owned(),
        caption: "Connections open at each sample.".to_owned(),
        x_desc: "time (s)".to_owned(),
        y_desc: "connections".to_owned(),
        x: time_scale(&lines),
        y,
        lines,
        bars: Vec::new(),
        bar_name: String::new(),
        marks: Vec::new(),
    })
}

fn cpu_chart(s: &Value, t: &[Option<f64>], report: &Value) -> Option<Chart> {
    let lines: Vec<Line> = [
        line(
            s,
            t,
            "server_cpu_cores",
            "server",
            stroke(VERMILLION, Dash::Solid),
        ),
        line(
            s,
            t,
            "tester_cpu_cores",
            "tester",
            stroke(BLUE, Dash::Dashed),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if lines.is_empty() {
        return None;
    }
    let cores = num_at(report, "machine.cpus").or_else(|| num_at(report, "cpu.cores_available"));
    let mut marks = Vec::new();
    if let Some(c) = cores {
        marks.push(Mark {
            name: format!("{} cores", plain(c)),
            stroke: Stroke {
                color: GREY,
                dash: Dash::Dotted,
                width: 2,
            },
            at: c,
            vertical: false,
        });
    }
    let y = zero_based(line_values(&lines).chain(cores));
    Some(Chart {
        title: "CPU over time".to_owned(),
        caption: "CPU time used per second of wall time, in cores (1.0 = one core busy); \
                  the server's is read from /proc for --server-pid."
            .to_owned(),
        x_desc: "time (s)".to_owned(),
        y_desc: "CPU (cores)".to_owned(),
        x: time_scale(&lines),
        y,
        lines,
        bars: Vec::new(),
        bar_name: String::new(),
        marks,
    })
}

/// The latency histogram: bars over each bucket, with p50 and p99 marked.
///
/// Buckets are `{le_ms, count}`; counts are taken as per bucket, unless
/// they never decrease and their last equals the report's latency count
/// while their sum does not (Prometheus-style cumulative buckets), in
/// which case they are turned back into per-bucket counts.
fn histogram_chart(s: &Value, report: &Value) -> Option<Chart> {
    let raw = s.get("latency_histogram")?.as_array()?;
    let mut buckets: Vec<(f64, f64)> = raw
        .iter()
        .filter_map(|b| Some((num_at(b, "le_ms")?, num_at(b, "count")?)))
        .filter(|(le, c)| le.is_finite() && c.is_finite() && *c >= 0.0)
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.is_empty() {
        return None;
    }
    let total = num_at(report, "results.latency.count");
    let sum: f64 = buckets.iter().map(|b| b.1).sum();
    let monotonic = buckets.windows(2).all(|w| w[1].1 >= w[0].1);
    let last = buckets.last().map_or(0.0, |b| b.1);
    if buckets.len() > 1 && monotonic && total == Some(last) && total != Some(sum) {
        let mut prev = 0.0;
        for b in &mut buckets {
            let c = b.1;
            b.1 -= prev;
            prev = c;
        }
    }
    if buckets.iter().all(|b| b.1 == 0.0) {
        return None;
    }
    let les: Vec<f64> = buckets.iter().map(|b| b.0).collect();
    let positive = les.iter().copied().filter(|v| *v > 0.0);
    let (lo_le, hi_le) = min_max(positive)?;
    let x_log = hi_le / lo_le > 20.0;
    let mut bars = Vec::new();
    for (i, &(le, c)) in buckets.iter().enumerate() {
        let x0 = if i > 0 {
            les[i - 1]
        } else if x_log {
            match les.get(1) {
                Some(&next) if next > le && le > 0.0 => le * le / next,
                _ => le / 2.0,
            }
        } else {
            match les.get(1) {
                Some(&next) if next > le => (2.0 * le - next).max(0.0),
                _ => 0.0,
            }
        };
        if c > 0.0 {
            bars.push(Bar { x0, x1: le, h: c });
        }
    }
    let x_lo = bars.iter().map(|b| b.x0).fold(f64::INFINITY, f64::min);
    let x_hi = bars.iter().map(|b| b.x1).fold(0.0f64, f64::max);
    let x = if x_log {
        let lo = if x_lo > 0.0 { x_lo } else { lo_le / 2.0 };
        Scale {
            range: lo / 1.2..x_hi * 1.2,
            log: true,
        }
    } else {
        Scale {
            range: 0.0..x_hi * 1.05,
            log: false,
        }
    };
    let counts = bars.iter().map(|b| b.h);
    let (c_lo, c_hi) = min_max(counts)?;
    // A long tail of a handful of deliveries next to thousands would be
    // invisible on a linear axis.
    let y = if c_hi / c_lo > 1000.0 {
        Scale {
            range: 0.5..c_hi * 2.0,
            log: true,
        }
    } else {
        Scale {
            range: 0.0..c_hi * 1.1,
            log: false,
        }
    };
    let mut marks = Vec::new();
    for (key, name, st) in [
        ("p50_ms", "p50", stroke(ORANGE, Dash::Dashed)),
        ("p99_ms", "p99", stroke(VERMILLION, Dash::Dotted)),
    ] {
        if let Some(v) = num_at(report, &format!("results.latency.{key}"))
            && v > x.range.start
            && v < x.range.end
        {
            marks.push(Mark {
                name: format!("{name} {}", ms(v)),
                stroke: st,
                at: v,
                vertical: true,
            });
        }
    }
    Some(Chart {
        title: "Latency histogram (measured window)".to_owned(),
        caption: "How many deliveries took how long; each bar spans one bucket.".to_owned(),
        x_desc: axis_desc("latency (ms)", &x),
        y_desc: axis_desc("deliveries", &y),
        x,
        y,
        lines: Vec::new(),
        bars,
        bar_name: "deliveries".to_owned(),
        marks,
    })
}

/// Ramp: the broadcast round trip at each step, against its limit.
fn ramp_chart(report: &Value) -> Option<Chart> {
    let steps = report["results"].get("steps")?.as_array()?;
    let pts = |k: &str| -> Vec<(f64, Option<f64>)> {
        steps
            .iter()
            .filter_map(|s| Some((num_at(s, "clients")?, num_at(s, k))))
            .collect()
    };
    let lines: Vec<Line> = [
        ("rtt_p50_ms", "p50", stroke(BLUE, Dash::Solid)),
        ("rtt_p95_ms", "p95", stroke(VERMILLION, Dash::Dashed)),
        ("rtt_max_ms", "max", stroke(INK, Dash::Dotted)),
    ]
    .into_iter()
    .map(|(k, name, stroke)| Line {
        name: name.to_owned(),
        stroke,
        points: pts(k),
    })
    .filter(|l| l.points.iter().any(|p| p.1.is_some()))
    .collect();
    if lines.is_empty() {
        return None;
    }
    let limit = num_at(report, "results.limit_ms");
    let y = latency_scale(line_values(&lines).chain(limit));
    let mut marks = Vec::new();
    if let Some(l) = limit {
        marks.push(Mark {
            name: format!("limit {}", ms(l)),
            stroke: Stroke {
                color: GREY,
                dash: Dash::Solid,
                width: 1,
            },
            at: l,
            vertical: false,
        });
    }
    let x = time_scale(&lines);
    Some(Chart {
        title: "Broadcast round trip by room size".to_owned(),
        caption: "Each step's round trip from a say to its last member's receipt; the ramp \
                  stops when p95 passes the limit."
            .to_owned(),
        x_desc: "clients in the room".to_owned(),
        y_desc: axis_desc("round trip (ms)", &y),
        x,
        y,
        lines,
        bars: Vec::new(),
        bar_name: String::new(),
        marks,
    })
}

fn axis_desc(base: &str, s: &Scale) -> String {
    if s.log {
        format!("{base}, log scale")
    } else {
        base.to_owned()
    }
}

impl Chart {
    /// The chart as inline SVG (no `xmlns`: inline SVG in HTML needs
    /// none, and the page then holds no URL at all).
    fn svg(&self) -> Result<String, String> {
        let mut buf = String::new();
        {
            let root = SVGBackend::with_string(&mut buf, (CHART_W, CHART_H)).into_drawing_area();
            let x = self.x.clone();
            let y = self.y.clone();
            let r = match (x.log, y.log) {
                (false, false) => self.draw(&root, x.range, y.range),
                (false, true) => self.draw(&root, x.range, y.range.log_scale()),
                (true, false) => self.draw(&root, x.range.log_scale(), y.range),
                (true, true) => self.draw(&root, x.range.log_scale(), y.range.log_scale()),
            };
            r.map_err(|e| e.to_string())?;
            root.present().map_err(|e| e.to_string())?;
        }
        let svg = buf.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
        Ok(svg.replacen(
            "<svg ",
            &format!("<svg role=\"img\" aria-label=\"{}\" ", esc(&self.title)),
            1,
        ))
    }

    fn draw<'a, XR, YR>(
        &self,
        root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
        x: XR,
        y: YR,
    ) -> Result<(), DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>>
    where
        XR: AsRangedCoord<Value = f64>,
        YR: AsRangedCoord<Value = f64>,
        XR::CoordDescType: ValueFormatter<f64>,
        YR::CoordDescType: ValueFormatter<f64>,
    {
        root.fill(&WHITE)?;
        let top = self.title_and_legend(root)?;
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .margin_top(top)
            .x_label_area_size(46)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)?;
        let fmt = |v: &f64| short(*v);
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .x_labels(10)
            .y_labels(8)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .label_style(("sans-serif", 15).into_font().color(&INK))
            .axis_desc_style(("sans-serif", 16).into_font().color(&INK))
            .bold_line_style(BLACK.mix(0.12))
            .light_line_style(BLACK.mix(0.04))
            .axis_style(BLACK.mix(0.6))
            .draw()?;
        let y_floor = self.y.range.start;
        for b in &self.bars {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(b.x0, y_floor), (b.x1, b.h)],
                BLUE.mix(0.75).filled(),
            )))?;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(b.x0, y_floor), (b.x1, b.h)],
                WHITE.stroke_width(1),
            )))?;
        }
        let clamp = |v: f64| {
            if self.y.log {
                v.max(self.y.range.start)
            } else {
                v
            }
        };
        for l in &self.lines {
            for segment in segments(&l.points) {
                let pts: Vec<(f64, f64)> = segment.iter().map(|&(x, y)| (x, clamp(y))).collect();
                path(&mut chart, pts, l.stroke)?;
            }
        }
        for m in &self.marks {
            let pts = if m.vertical {
                vec![(m.at, self.y.range.start), (m.at, self.y.range.end)]
            } else {
                vec![(self.x.range.start, m.at), (self.x.range.end, m.at)]
            };
            path(&mut chart, pts, m.stroke)?;
        }
        Ok(())
    }

    /// Draws the title (left) and the legend (right of it, or on a second
    /// row when both do not fit) above the plot, where they can never hide
    /// a line; gives the top margin the plot must leave for them.
    fn title_and_legend<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<u32, DrawingAreaErrorKind<DB::ErrorType>> {
        let title_style = ("sans-serif", 22)
            .into_font()
            .style(FontStyle::Bold)
            .color(&INK)
            .pos(Pos::new(HPos::Left, VPos::Top));
        root.draw(&Text::new(self.title.as_str(), (14, 10), title_style))?;
        let mut entries: Vec<(String, Option<Stroke>)> = Vec::new();
        if !self.bars.is_empty() {
            entries.push((self.bar_name.clone(), None));
        }
        for l in &self.lines {
            entries.push((l.name.clone(), Some(l.stroke)));
        }
        for m in &self.marks {
            entries.push((m.name.clone(), Some(m.stroke)));
        }
        // Widths are estimates: the browser sets the text, not plotters.
        let width = |s: &str| 38 + (s.chars().count() as i32 * 8) + 24;
        let legend_w: i32 = entries.iter().map(|(n, _)| width(n)).sum();
        let title_w = self.title.chars().count() as i32 * 10 + 28;
        let (row_y, top) = if title_w + legend_w + 20 < CHART_W as i32 {
            (20, 44)
        } else {
            (50, 70)
        };
        let mut x = CHART_W as i32 - 14 - legend_w;
        let label_style = ("sans-serif", 16)
            .into_font()
            .color(&INK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (name, st) in &entries {
            match st {
                None => root.draw(&Rectangle::new(
                    [(x + 6, row_y - 6), (x + 24, row_y + 6)],
                    BLUE.mix(0.75).filled(),
                ))?,
                Some(st) => {
                    for (a, b) in swatch(st.dash) {
                        root.draw(&PathElement::new(
                            vec![(x + a, row_y), (x + b, row_y)],
                            st.color.stroke_width(st.width + 1),
                        ))?;
                    }
                }
            }
            root.draw(&Text::new(
                name.as_str(),
                (x + 38, row_y),
                label_style.clone(),
            ))?;
            x += width(name);
        }
        Ok(top)
    }
}

/// The pieces of a 30-pixel legend swatch in a dash pattern.
fn swatch(dash: Dash) -> Vec<(i32, i32)> {
    match dash {
        Dash::Solid => vec![(0, 30)],
        Dash::Dashed => vec![(0, 9), (14, 23), (28, 30)],
        Dash::Dotted => (0..6).map(|i| (i * 6, i * 6 + 2)).collect(),
    }
}

/// Runs of consecutive values between gaps.
fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for &(x, y) in points {
        match y {
            Some(y) => cur.push((x, y)),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One run of a line in its stroke; a lone point (a second between two
/// gaps) as a dot, so that it shows.
fn path<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    pts: Vec<(f64, f64)>,
    st: Stroke,
) -> Result<(), DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let style = st.color.stroke_width(st.width);
    if pts.len() == 1 {
        chart.draw_series(
            pts.into_iter()
                .map(|p| Circle::new(p, 3, st.color.filled())),
        )?;
        return Ok(());
    }
    match st.dash {
        Dash::Solid => {
            chart.draw_series(LineSeries::new(pts, style))?;
        }
        Dash::Dashed => {
            chart.draw_series(DashedLineSeries::new(pts, 9, 5, style))?;
        }
        Dash::Dotted => {
            chart.draw_series(DashedLineSeries::new(pts, 2, 4, style))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// HTML-escapes text for an element's content or a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The value at a dotted path (`results.latency.p50_ms`).
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn num_at(v: &Value, path: &str) -> Option<f64> {
    at(v, path)?.as_f64().filter(|&x| plottable(x))
}

/// Whether a number from the JSON can be drawn: finite, and small enough
/// that an axis range around it (with its margin) stays finite. plotters
/// loops for ever laying out ticks on an infinite range, so a crafted or
/// corrupt report must not reach it with one; such a value is a gap.
fn plottable(x: f64) -> bool {
    x.is_finite() && x.abs() <= 1e15
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path)?.as_str()
}

fn strings_at<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A number for a table: whole numbers grouped (12 345), others with the
/// precision their size deserves.
fn plain(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        if v < 0.0 {
            format!("-{}", count(v.abs() as u64))
        } else {
            count(v as u64)
        }
    } else if v.abs() >= 1000.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        format!("{sign}{}", count(v.round().abs() as u64))
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn rate(v: f64) -> String {
    format!("{} /s", plain(v))
}

/// A tick label: short, with k and M for big numbers.
fn short(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(format!("{v:.1}"))
    } else if a >= 0.01 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.4}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn gaps_split_a_line() {
        let pts = [
            (0.0, Some(1.0)),
            (1.0, None),
            (2.0, Some(2.0)),
            (3.0, Some(3.0)),
            (4.0, None),
        ];
        assert_eq!(
            segments(&pts),
            vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]
        );
    }

    #[test]
    fn wide_latencies_get_a_log_axis() {
        assert!(latency_scale([0.5, 1.0, 80.0].into_iter()).log);
        assert!(!latency_scale([0.5, 1.0, 8.0].into_iter()).log);
        assert!(!latency_scale(std::iter::empty()).log);
    }

    #[test]
    fn cumulative_buckets_are_undone() {
        let report = json!({
            "results": {"latency": {"count": 10}},
            "series": {"latency_histogram": [
                {"le_ms": 1.0, "count": 4}, {"le_ms": 2.0, "count": 9}, {"le_ms": 4.0, "count": 10}
            ]}
        });
        let c = histogram_chart(&report["series"], &report).unwrap();
        let h: Vec<f64> = c.bars.iter().map(|b| b.h).collect();
        assert_eq!(h, [4.0, 5.0, 1.0]);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(plain(12345.0), "12 345");
        assert_eq!(plain(0.055), "0.055");
        assert_eq!(plain(17.5), "17.50");
        assert_eq!(short(20000.0), "20k");
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(2.0), "2");
    }
}
