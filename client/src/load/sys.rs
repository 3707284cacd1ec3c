//! What the operating system tells about the tester and the server:
//! CPU time and threads from /proc, the server's resident memory, and the
//! tester's open-files limit.

use std::fs;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`); 100 on
/// every Linux configuration natter targets.
pub const CLK_TCK: u64 = 100;

/// What a root process may raise its hard open-files limit to.
const ROOT_NOFILE: u64 = 1_048_576;

/// Raises the open-files limit as far as allowed: the soft limit to the
/// hard one, and as root first the hard one to [`ROOT_NOFILE`] (failing
/// quietly otherwise). Returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> Option<u64> {
    use rlimit::Resource;
    if rlimit::getrlimit(Resource::NOFILE).is_ok_and(|(_, hard)| hard < ROOT_NOFILE) {
        // Only works with CAP_SYS_RESOURCE; an ordinary user keeps the hard limit.
        let _ = rlimit::setrlimit(Resource::NOFILE, ROOT_NOFILE, ROOT_NOFILE);
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    rlimit::getrlimit(Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// The fields of /proc/PID/stat after the command name (field 3 onwards).
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of a /proc stat file, in clock ticks.
fn stat_ticks(path: &str) -> Option<u64> {
    let fields = stat_fields(path)?;
    // Field 14 is utime and 15 stime; the slice starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time a process has used (user + system), in clock ticks.
pub fn process_ticks(pid: Option<u32>) -> Option<u64> {
    match pid {
        Some(pid) => stat_ticks(&format!("/proc/{pid}/stat")),
        None => stat_ticks("/proc/self/stat"),
    }
}

/// Whether a process with this id exists and can be read.
pub fn process_exists(pid: u32) -> bool {
    process_ticks(Some(pid)).is_some()
}

/// Resident memory of a process (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `read(pid)` summed over `pids` (the server processes of a cluster, one
/// per `--server-pid`). `None` when there are none, or when any one cannot
/// be read: a sum that silently left out a node would pass for the whole
/// cluster's figure.
fn sum_over(pids: &[u32], read: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| read(pid)).sum()
}

/// CPU time the server processes have used together, in clock ticks.
pub fn servers_ticks(pids: &[u32]) -> Option<u64> {
    sum_over(pids, |pid| process_ticks(Some(pid)))
}

/// Resident memory of the server processes together (VmRSS), in bytes.
pub fn servers_rss(pids: &[u32]) -> Option<u64> {
    sum_over(pids, rss_bytes)
}

/// Each thread of a process (this one for `None`): (thread id, name, CPU
/// ticks). Thread ids are unique machine-wide, so the threads of several
/// processes can share one list.
fn thread_ticks(pid: Option<u32>) -> Vec<(u32, String, u64)> {
    let base = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let Ok(dir) = fs::read_dir(format!("{base}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let ticks = stat_ticks(&format!("{base}/task/{tid}/stat"))?;
        let name = fs::read_to_string(format!("{base}/task/{tid}/comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Some((tid, name, ticks))
    })
    .collect()
}

/// CPU counters at one instant, for [`CpuSnapshot::window`].
pub struct CpuSnapshot {
    at: Instant,
    own: Option<u64>,
    threads: Vec<(u32, String, u64)>,
    server: Option<u64>,
}

impl CpuSnapshot {
    /// The tester's counters now, and the servers' summed over
    /// `server_pids` (none without `--server-pid`).
    pub fn take(server_pids: &[u32]) -> CpuSnapshot {
        CpuSnapshot::take_with(server_pids, &[])
    }

    /// [`CpuSnapshot::take`] counting `workers` (the worker processes of a
    /// `--workers` run) as part of the tester: their CPU is added to this
    /// process's and their threads are candidates for the busiest.
    pub fn take_with(server_pids: &[u32], workers: &[u32]) -> CpuSnapshot {
        let mut threads = thread_ticks(None);
        for &pid in workers {
            threads.extend(thread_ticks(Some(pid)));
        }
        let others: Option<u64> = workers.iter().map(|&p| process_ticks(Some(p))).sum();
        CpuSnapshot {
            at: Instant::now(),
            own: process_ticks(None).zip(others).map(|(a, b)| a + b),
            threads,
            server: servers_ticks(server_pids),
        }
    }

    /// CPU use between `self` (earlier) and `later`.
    pub fn window(&self, later: &CpuSnapshot) -> CpuWindow {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let secs = |ticks: u64| ticks as f64 / CLK_TCK as f64;
        let tester_cpu = match (self.own, later.own) {
            (Some(a), Some(b)) => Some(secs(b.saturating_sub(a))),
            _ => None,
        };
        let busiest = later
            .threads
            .iter()
            .map(|(tid, name, ticks)| {
                let before = self
                    .threads
                    .iter()
                    .find(|(t, _, _)| t == tid)
                    .map_or(0, |(_, _, t)| *t);
                (name, secs(ticks.saturating_sub(before)))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let server_cpu = match (self.server, later.server) {
            (Some(a), Some(b)) => Some(secs(b.saturating_sub(a))),
            _ => None,
        };
        CpuWindow {
            wall_s: wall,
            cores_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tester_cpu_s: tester_cpu,
            tester_cores: tester_cpu.map(|c| c / wall),
            busiest_thread: busiest.as_ref().map(|(name, _)| (*name).clone()),
            busiest_thread_share: busiest.map(|(_, c)| c / wall),
            server_cpu_s: server_cpu,
            server_cores: server_cpu.map(|c| c / wall),
        }
    }
}

/// The machine the run ran on, for the report (the HTML report shows it
/// next to the numbers, which mean little without it).
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    /// MemTotal of /proc/meminfo; null when unreadable.
    pub memory_bytes: Option<u64>,
    /// /proc/sys/kernel/ostype and osrelease, e.g. "Linux 6.1.0-13-amd64".
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Machine {
        let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_owned()).ok();
        let memory_bytes = read("/proc/meminfo").and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
        let kernel = match (
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease"),
        ) {
            (Some(os), Some(release)) => format!("{os} {release}"),
            (None, Some(release)) => release,
            _ => std::env::consts::OS.to_owned(),
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            kernel,
        }
    }
}

/// CPU used during a measured window, by the tester and (with
/// `--server-pid`) the server, summed over the server processes when
/// several were given. Shares are in cores (1.0 = one core busy).
#[derive(Debug, Clone, Serialize)]
pub struct CpuWindow {
    pub wall_s: f64,
    pub cores_available: usize,
    pub tester_cpu_s: Option<f64>,
    pub tester_cores: Option<f64>,
    pub busiest_thread: Option<String>,
    pub busiest_thread_share: Option<f64>,
    pub server_cpu_s: Option<f64>,
    pub server_cores: Option<f64>,
}

impl CpuWindow {
    /// Warnings for when the tester, not the server, likely set the pace.
    pub fn bottleneck_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.wall_s < 0.5 {
            return out; // too short to judge
        }
        let cores = self.cores_available as f64;
        if let (Some(share), Some(name)) = (
            self.busiest_thread_share.filter(|&s| s > 0.9),
            &self.busiest_thread,
        ) {
            out.push(format!(
                "the tester's busiest thread ({name}) used {:.0}% of a core: the tester, \
                 not the server, may be the bottleneck",
                share * 100.0
            ));
        }
        if let Some(t) = self.tester_cores.filter(|&t| t > 0.9 * cores) {
            out.push(format!(
                "the tester used {t:.2} of {cores} cores: it may be the bottleneck"
            ));
        }
        let saturated = match (self.tester_cores, self.server_cores) {
            (Some(t), Some(s)) if t + s > 0.9 * cores && t > 0.25 * cores => Some((t, s)),
            _ => None,
        };
        if let Some((t, s)) = saturated {
            out.push(format!(
                "tester ({t:.2} cores) and server ({s:.2} cores) together saturate the \
                 {cores} cores: numbers are bounded by the machine, and the tester took \
                 {:.0}% of it",
                100.0 * t / (t + s)
            ));
        }
        out
    }

    /// Readable lines for the summary.
    pub fn lines(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(cpu) = self.tester_cpu_s {
            let busiest = match (&self.busiest_thread, self.busiest_thread_share) {
                (Some(name), Some(share)) => {
                    format!("; busiest thread {name} {:.0}% of a core", share * 100.0)
                }
                _ => String::new(),
            };
            out.push((
                "tester CPU".into(),
                format!(
                    "{cpu:.2} s in {:.2} s = {:.2} of {} cores{busiest}",
                    self.wall_s,
                    cpu / self.wall_s,
                    self.cores_available
                ),
            ));
        }
        if let Some(cpu) = self.server_cpu_s {
            out.push((
                "server CPU".into(),
                format!(
                    "{cpu:.2} s in {:.2} s = {:.2} cores",
                    self.wall_s,
                    cpu / self.wall_s
                ),
            ));
        }
        out
    }
}

/// Now, as Unix microseconds (the clock payload timestamps and the series
/// use).
pub fn unix_micros() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_threads() {
        assert!(process_ticks(None).is_some());
        assert!(!thread_ticks(None).is_empty());
        assert!(!thread_ticks(Some(std::process::id())).is_empty());
        let m = Machine::this();
        assert!(m.cpus >= 1 && m.memory_bytes.unwrap() > 0 && !m.kernel.is_empty());
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        let a = CpuSnapshot::take(&[pid]);
        let b = CpuSnapshot::take(&[pid]);
        let w = a.window(&b);
        assert!(w.tester_cpu_s.is_some() && w.server_cpu_s.is_some());
    }

    /// Several `--server-pid`s: figures are summed, and one unreadable
    /// process spoils the sum rather than dropping out of it.
    #[test]
    fn server_figures_sum_over_pids() {
        let pid = std::process::id();
        let once = servers_ticks(&[pid]).unwrap();
        // CPU time only grows, so twice this process is at least twice
        // what it was a moment ago.
        assert!(servers_ticks(&[pid, pid]).unwrap() >= 2 * once);
        assert!(servers_rss(&[pid, pid]).unwrap() > 0);
        assert_eq!(servers_ticks(&[]), None);
        assert_eq!(servers_rss(&[]), None);
        // PIDs are below 2^22 on Linux: u32::MAX is never a process.
        assert_eq!(servers_ticks(&[pid, u32::MAX]), None);
        assert_eq!(servers_rss(&[pid, u32::MAX]), None);
        assert!(CpuSnapshot::take(&[]).server.is_none());
    }
}
