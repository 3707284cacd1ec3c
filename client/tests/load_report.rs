//! The HTML report and the comparison of runs, through the real `natter`
//! binary: `natter load report IN.json OUT.html` and `natter load compare
//! A.json B.json`.
//!
//! The page must be something a person can open anywhere and trust, so the
//! tests parse it with a strict XML parser (a tag left open or closed out
//! of order fails, which a browser would silently repair), check it holds
//! no URL, script or external source, that every string from the JSON is
//! escaped (a `<script>` planted in the command line comes out as text),
//! and that each chart the report's series call for is drawn, titled and
//! with its legend. One report comes from a small real run against the
//! in-process server; the others from fixtures in `tests/fixtures/`:
//! runs recorded with the tester (`fanout-a`, `fanout-b`, `conns`, `ramp`)
//! and `fanout-series.json`, a recorded run with the time series,
//! command and machine added in the shape the tester writes them.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use natter_server::Config;
use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::Value;

/// Longest one `natter` child may run before it is killed.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs `natter ARGS`, killing it past [`CHILD_LIMIT`]; stdout and stderr
/// go to files in `dir` so that a chatty child cannot block on a pipe.
fn natter(dir: &Path, args: &[&str]) -> Output {
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("the natter binary starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for natter") {
            break status;
        }
        if start.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("natter {args:?} did not finish within {CHILD_LIMIT:?}; killed");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out).expect("stdout"),
        stderr: std::fs::read(&err).expect("stderr"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Renders `input` with `natter load report` and returns the page.
fn render(dir: &Path, input: &Path) -> String {
    let page = dir.join("report.html");
    let out = natter(
        dir,
        &[
            "load",
            "report",
            input.to_str().expect("UTF-8 path"),
            page.to_str().expect("UTF-8 path"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "natter load report failed: {}",
        text(&out.stderr)
    );
    std::fs::read_to_string(&page).expect("the page was written")
}

/// What the strict parse found: the charts (each SVG's accessible name)
/// and the text inside each chart.
struct Parsed {
    charts: Vec<String>,
    chart_text: Vec<String>,
}

/// Parses the page as XML: every tag closed, in order, attributes quoted
/// and unique; no script, no external reference. Panics otherwise.
fn parse(page: &str) -> Parsed {
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..80]);
    let lower = page.to_ascii_lowercase();
    for banned in [
        "http://", "https://", "src=", "href=", "<script", "url(", "@import",
    ] {
        assert!(!lower.contains(banned), "the page holds {banned:?}");
    }
    let mut reader = Reader::from_str(page);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<String> = Vec::new();
    let mut parsed = Parsed {
        charts: Vec::new(),
        chart_text: Vec::new(),
    };
    loop {
        let event = reader.read_event();
        let pos = reader.buffer_position();
        match event {
            Ok(Event::Start(e)) => {
                let name = e.name().as_ref().to_owned();
                for a in e.attributes() {
                    a.unwrap_or_else(|err| panic!("bad attribute at {pos}: {err}"));
                }
                if name == "svg" {
                    let label = e
                        .try_get_attribute("aria-label")
                        .expect("attributes parse")
                        .map(|a| a.value.into_owned())
                        .unwrap_or_default();
                    parsed.charts.push(label);
                    parsed.chart_text.push(String::new());
                }
                stack.push(name);
            }
            Ok(Event::Empty(e)) => {
                for a in e.attributes() {
                    a.unwrap_or_else(|err| panic!("bad attribute at {pos}: {err}"));
                }
            }
            Ok(Event::End(e)) => {
                let name = e.name().as_ref().to_owned();
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "at {pos}");
            }
            Ok(Event::Text(t)) => {
                if stack.iter().any(|n| n == "svg")
                    && let Some(last) = parsed.chart_text.last_mut()
                {
                    last.push_str(&t);
                    last.push('\n');
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("the page is not well-formed at {pos}: {e}"),
        }
    }
    assert!(stack.is_empty(), "tags left open: {stack:?}");
    parsed
}

/// A chart's text holds each of `words` (its legend entries, its axes).
fn assert_chart_says(parsed: &Parsed, title: &str, words: &[&str]) {
    let i = parsed
        .charts
        .iter()
        .position(|c| c == title)
        .unwrap_or_else(|| panic!("no chart {title:?} in {:?}", parsed.charts));
    for w in words {
        assert!(
            parsed.chart_text[i].contains(w),
            "chart {title:?} does not say {w:?}: {}",
            parsed.chart_text[i]
        );
    }
}

/// A small real fanout, rendered: the page is well-formed, self-contained,
/// shows the verdict and the summary, and draws the latency and delivery
/// charts when the tester records series (or says it has none).
#[test]
fn report_of_a_small_real_run_is_well_formed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = common::start_server_with(Config {
        rate: 0,
        ..Config::local()
    });
    let url = server.handle.url();
    let run = natter(
        dir.path(),
        &[
            "load",
            "fanout",
            "--subs",
            "5",
            "--pubs",
            "2",
            "--rate",
            "20",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--deadline",
            "30",
            "--json",
            "--quiet",
            &url,
        ],
    );
    server.stop();
    let json = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{json} {}", text(&run.stderr));
    let report: Value = serde_json::from_str(json.trim()).expect("one JSON report");
    let saved = dir.path().join("run.json");
    std::fs::write(&saved, &json).expect("saved");

    let page = render(dir.path(), &saved);
    let parsed = parse(&page);
    assert!(page.contains("Clean run"), "{page}");
    assert!(page.contains("deliveries per second"));
    assert!(page.contains("delivery latency"));
    assert!(page.contains(&format!(
        "<code>{}",
        report["run_id"].as_str().unwrap_or("?")
    )));
    if report.get("series").is_some() {
        assert_chart_says(
            &parsed,
            "Delivery latency per second",
            &["p50", "p99", "time (s)"],
        );
        assert_chart_says(
            &parsed,
            "Deliveries per second against the offered rate",
            &["delivered"],
        );
    } else {
        assert!(page.contains("has no time series"), "{page}");
        assert!(parsed.charts.is_empty(), "{:?}", parsed.charts);
    }
}

/// A report with every series draws every chart, each titled, with axes
/// in units and its legend; strings from the JSON are escaped.
#[test]
fn report_with_series_draws_every_chart_and_escapes_strings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = render(dir.path(), &fixture("fanout-series.json"));
    let parsed = parse(&page);
    assert_eq!(
        parsed.charts,
        [
            "Delivery latency per second",
            "Deliveries per second against the offered rate",
            "Connections over time",
            "Latency histogram (measured window)",
            "CPU over time",
        ]
    );
    assert_chart_says(
        &parsed,
        "Delivery latency per second",
        &["p50", "p99", "max", "time (s)", "latency (ms), log scale"],
    );
    assert_chart_says(
        &parsed,
        "Deliveries per second against the offered rate",
        &["delivered", "offered", "deliveries / s"],
    );
    assert_chart_says(&parsed, "Connections over time", &["open", "connections"]);
    assert_chart_says(
        &parsed,
        "Latency histogram (measured window)",
        &["deliveries", "p50", "p99", "latency (ms)"],
    );
    assert_chart_says(
        &parsed,
        "CPU over time",
        &["server", "tester", "2 cores", "CPU (cores)"],
    );
    // The command (with a planted script) and machine are shown, as text.
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;markup&lt;/b&gt; &amp; an ampersand"));
    assert!(!page.contains("<b>markup"));
    assert!(page.contains("2 CPUs · 24.00 GiB memory · Linux 6.1.0-test"));
}

/// An older report, without series, still renders its summary and says
/// there is nothing to chart.
#[test]
fn report_without_series_renders_the_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = render(dir.path(), &fixture("conns.json"));
    let parsed = parse(&page);
    assert!(parsed.charts.is_empty(), "{:?}", parsed.charts);
    assert!(page.contains("has no time series"));
    assert!(page.contains("server memory per connection"));
    assert!(page.contains("3.9 KiB"), "{page}");
    assert!(page.contains("connects per second"));
}

/// Ramp's report charts its steps (from the results) and lists them.
#[test]
fn ramp_report_charts_its_steps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = render(dir.path(), &fixture("ramp.json"));
    let parsed = parse(&page);
    assert_chart_says(
        &parsed,
        "Broadcast round trip by room size",
        &["p50", "p95", "max", "limit 500.0 ms", "clients in the room"],
    );
    assert!(page.contains("<h2>Steps</h2>"));
}

/// A missing input, or a JSON file that is not a report: exit 2.
#[test]
fn report_rejects_what_is_not_a_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_page = dir.path().join("out.html");
    let out_page = out_page.to_str().expect("UTF-8 path");
    let missing = natter(
        dir.path(),
        &["load", "report", "/nonexistent.json", out_page],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read"));
    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"name": "not a report"}"#).expect("written");
    let out = natter(
        dir.path(),
        &["load", "report", other.to_str().expect("UTF-8"), out_page],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a natter load report"));
    assert!(!Path::new(out_page).exists());
}

/// The row of `figure` in compare's table: (A, B, B/A, word).
fn row<'a>(table: &'a str, figure: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(figure))
        .unwrap_or_else(|| panic!("no row {figure} in\n{table}"))
        .split_whitespace()
        .skip(1)
        .collect()
}

fn fixture_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// Two recorded fanout runs side by side: A, B and B/A of known figures,
/// and whether B is better or worse where that is known.
#[test]
fn compare_two_recorded_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (fixture("fanout-a.json"), fixture("fanout-b.json"));
    let out = natter(
        dir.path(),
        &[
            "load",
            "compare",
            a.to_str().expect("UTF-8"),
            b.to_str().expect("UTF-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with("natter load compare: fanout runs\n"),
        "{table}"
    );
    assert!(table.contains("fanout-a.json: clean (exit 0)"), "{table}");
    let (ja, jb) = (fixture_json("fanout-a.json"), fixture_json("fanout-b.json"));

    // Same settings, same counts: 300 says × 20 subscribers in both.
    assert_eq!(
        row(&table, "results.deliveries"),
        ["6000", "6000", "1.00", "same"]
    );
    // Latency: the ratio of the recorded values, judged lower-is-better.
    let p99 = |r: &Value| r["results"]["latency"]["p99_ms"].as_f64().expect("p99");
    let ratio = p99(&jb) / p99(&ja);
    let cells = row(&table, "results.latency.p99_ms");
    assert_eq!(cells[2], format!("{ratio:.2}"), "{table}");
    let word = if (ratio - 1.0).abs() <= 0.02 {
        "same"
    } else if ratio < 1.0 {
        "better"
    } else {
        "worse"
    };
    assert_eq!(cells[3], word, "{table}");
    // A setting: no judgement.
    assert_eq!(row(&table, "results.subscribers"), ["20", "20", "1.00"]);

    let out = natter(
        dir.path(),
        &[
            "load",
            "compare",
            "--json",
            a.to_str().expect("UTF-8"),
            b.to_str().expect("UTF-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let j: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let figures = j["figures"].as_array().expect("figures");
    let f = figures
        .iter()
        .find(|f| f["figure"] == "results.latency.p99_ms")
        .expect("p99 figure");
    assert_eq!(f["a"].as_f64(), Some(p99(&ja)));
    assert_eq!(f["b"].as_f64(), Some(p99(&jb)));
    assert_eq!(f["verdict"], word);
    assert!(
        figures
            .iter()
            .all(|f| !f["figure"].as_str().unwrap_or("").contains("series"))
    );
}

/// Runs of different tests, a missing file, or a file that is not a
/// report: exit 2 and a message saying which.
#[test]
fn compare_rejects_unlike_runs_and_non_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = fixture("fanout-a.json");
    let a = a.to_str().expect("UTF-8");
    let conns = fixture("conns.json");
    let out = natter(
        dir.path(),
        &["load", "compare", a, conns.to_str().expect("UTF-8")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("A is a fanout run and B a conns run"),
        "{}",
        text(&out.stderr)
    );
    let out = natter(dir.path(), &["load", "compare", a, "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent.json"));
    let not_json = dir.path().join("x.json");
    std::fs::write(&not_json, "hello").expect("written");
    let out = natter(
        dir.path(),
        &["load", "compare", a, not_json.to_str().expect("UTF-8")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not JSON"));
}

/// The checker itself: a page with a tag left open, closed out of order,
/// or holding a script or an external URL does not pass.
#[test]
fn the_checker_catches_broken_pages() {
    let fails = |page: &'static str| {
        let r = std::panic::catch_unwind(|| parse(page));
        assert!(r.is_err(), "passed: {page}");
    };
    let ok = "<!DOCTYPE html>\n<html><body><p>a &amp; b</p><br/></body></html>";
    assert!(parse(ok).charts.is_empty());
    fails("<!DOCTYPE html>\n<html><body><p>open</body></html>");
    fails("<!DOCTYPE html>\n<html><body><b><i>x</b></i></body></html>");
    fails("<!DOCTYPE html>\n<html><body><p>x</p>");
    fails("<!DOCTYPE html>\n<html><body><p a=\"1\" a=\"2\">x</p></body></html>");
    fails("<!DOCTYPE html>\n<html><body><script>x</script></body></html>");
    fails("<!DOCTYPE html>\n<html><body><img src=\"https://x/y.png\"/></body></html>");
}

/// A real ramp carries its connections over time (and CPU with
/// `--server-pid`) in `--json`, and its report draws them.
#[test]
fn a_real_ramp_reports_its_connections_over_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = common::start_server_with(Config {
        rate: 0,
        ..Config::local()
    });
    let url = server.handle.url();
    let run = natter(
        dir.path(),
        &[
            "load",
            "ramp",
            "--step",
            "10",
            "--max-clients",
            "20",
            "--limit-ms",
            "2000",
            "--deadline",
            "30",
            "--json",
            "--quiet",
            &url,
        ],
    );
    server.stop();
    let json = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{json} {}", text(&run.stderr));
    let report: Value = serde_json::from_str(json.trim()).expect("one JSON report");
    let series = &report["series"];
    let t = series["t_s"].as_array().expect("t_s");
    let connections = series["connections"].as_array().expect("connections");
    assert!(!t.is_empty(), "{series}");
    assert_eq!(connections.len(), t.len(), "{series}");
    assert_eq!(
        series["tester_cpu_cores"].as_array().map(Vec::len),
        Some(t.len())
    );
    // The last point is taken when the run ends, with the room full.
    assert_eq!(
        connections.last().and_then(Value::as_u64),
        Some(20),
        "{series}"
    );
    let saved = dir.path().join("ramp.json");
    std::fs::write(&saved, &json).expect("saved");
    let page = render(dir.path(), &saved);
    parse(&page);
    assert!(page.contains("Connections over time"), "no chart in {page}");
}

/// Values no axis can hold (a corrupt or crafted report) are left out of
/// the charts rather than hang the renderer: the page is still made.
#[test]
fn a_report_with_absurd_numbers_still_renders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut report = fixture_json("fanout-series.json");
    let n = report["series"]["t_s"].as_array().map_or(0, Vec::len);
    report["series"]["connections"] = Value::Array(vec![serde_json::json!(1.7e308); n]);
    report["series"]["latency_max_ms"] = Value::Array(vec![serde_json::json!(-1.7e308); n]);
    let saved = dir.path().join("absurd.json");
    std::fs::write(&saved, report.to_string()).expect("saved");
    let page = render(dir.path(), &saved);
    parse(&page);
}
