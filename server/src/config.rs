//! Server options: the names PROTOCOL.md fixes, each also settable by env var.

use std::time::Duration;

use clap::Parser;
use natter_protocol::Limits;

/// natter-server: a WebSocket chat server.
///
/// Clients connect to ws://HOST:PORT/ws (optionally ?nick=NAME) and speak the
/// JSON protocol described in protocol/README.md; a browser opens
/// http://HOST:PORT/ for the chat page. The same port answers /healthz (503
/// once shutting down) and /metrics (Prometheus). With --broker, several
/// servers sharing one Redis serve one chat. Every option can also be
/// set through the environment variable shown beside it. Logs go to stderr
/// and are controlled by RUST_LOG (default: info); errors that stop the
/// server are one line on stderr and exit status 1.
#[derive(Debug, Clone, Parser)]
#[command(name = "natter-server", version, about, long_about)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "NATTER_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: String,

    /// Most connections served at once; the next upgrade gets HTTP 503.
    #[arg(long, env = "NATTER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Largest incoming message in bytes, all fragments together (else close 1009).
    #[arg(long, env = "NATTER_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,

    /// Largest `text` of a say or whisper, in bytes (else `text_too_long`).
    #[arg(long, env = "NATTER_MAX_TEXT_BYTES", default_value_t = 4096)]
    pub max_text_bytes: usize,

    /// Rooms one connection may be in at once (else `too_many_rooms`).
    #[arg(long, env = "NATTER_MAX_ROOMS_PER_CONNECTION", default_value_t = 32)]
    pub max_rooms_per_connection: usize,

    /// Incoming messages per second per connection; 0 turns rate limiting off.
    #[arg(long, env = "NATTER_RATE", default_value_t = 20)]
    pub rate: u32,

    /// Messages a connection may send in a burst above the rate.
    #[arg(long, env = "NATTER_BURST", default_value_t = 40)]
    pub burst: u32,

    /// Messages kept per room for history and `since` recovery.
    #[arg(long, env = "NATTER_HISTORY", default_value_t = 100)]
    pub history: usize,

    /// Outbound frames of others' events queued per connection before it
    /// counts as a slow consumer (1 to 1000000; 2 MiB of them counts too),
    /// and own replies queued before its next request waits.
    #[arg(long, env = "NATTER_QUEUE", default_value_t = 256)]
    pub queue: usize,

    /// Seconds a graceful shutdown may take before the server exits anyway.
    #[arg(long, env = "NATTER_SHUTDOWN_GRACE", default_value_t = 5.0)]
    pub shutdown_grace: f64,

    /// Rooms kept with no members (with their seq, epoch and history); past
    /// it the one emptied longest ago is forgotten; 0 forgets a room as soon
    /// as it empties. Rooms with members never count.
    #[arg(long, env = "NATTER_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: usize,

    /// A web page origin allowed to connect besides the server's own pages
    /// (an upgrade whose Origin has the host and port of its Host header);
    /// repeatable, or comma-separated in the env var. `*` allows every
    /// origin; `null` allows sandboxed pages and local files. Any other
    /// page gets HTTP 403: otherwise a web page could use its visitors'
    /// browsers to chat on a natter on their machine or intranet. Clients
    /// that send no Origin (not browsers) are always accepted.
    #[arg(
        long = "allowed-origin",
        env = "NATTER_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Connections one client address may hold at once, handshakes in
    /// progress included; the next gets HTTP 429 with Retry-After. 0 (the
    /// default) means no limit: behind a reverse proxy every client arrives
    /// from the proxy's address, so a per-address limit would cap the whole
    /// server. Set it when clients connect directly.
    #[arg(long, env = "NATTER_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Keep rooms, their numbering and history in DIR (created if missing;
    /// the file DIR/natter.redb), so they survive a restart, a crash and a
    /// power loss: a `say` is answered only once its message is on disk.
    /// Only one server may use a directory at a time. Without it, history
    /// lives in memory and a restart starts every room afresh.
    #[arg(long, env = "NATTER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Serve TLS on the port with this certificate chain (PEM; the server's
    /// certificate first): the chat endpoint is then wss://HOST:PORT/ws and
    /// the pages are https://. Needs --tls-key.
    #[arg(
        long,
        env = "NATTER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "NATTER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// Serve one chat together with every other server started with the
    /// same Redis URL (redis://HOST:PORT[/DB]): clients may connect to any
    /// of them; rooms, seqs, history, nicks and whispers span them all.
    /// The server starts only once it reaches Redis; while it later cannot,
    /// it closes its connections with 1013 and refuses upgrades (503) until
    /// Redis is back. History then lives in Redis (not with --data-dir).
    #[arg(
        long,
        env = "NATTER_BROKER",
        value_name = "URL",
        conflicts_with = "data_dir"
    )]
    pub broker: Option<String>,

    /// Seconds after which the other nodes treat this one as dead if it
    /// stops renewing its lease in the broker (a crash, a lost network):
    /// its members then leave every room. With --broker.
    #[arg(
        long,
        env = "NATTER_NODE_TIMEOUT",
        value_name = "SECS",
        default_value_t = 10.0
    )]
    pub node_timeout: f64,

    /// This node's name in the broker (letters, digits, `_ - .`; at most
    /// 64). A node restarted under the same name ends what its previous
    /// life left at once, instead of after --node-timeout. Default: a
    /// random name per start.
    #[arg(long, env = "NATTER_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,

    /// Threads that run the connection tasks. One is the fastest setting
    /// for broadcast-heavy rooms on a small machine: a broadcast runs to
    /// completion before the writers drain their queues, so each socket
    /// write carries many frames. With a second thread, writers chase the
    /// broadcaster and send one or two frames per write, which costs twice
    /// the CPU per delivery (see BENCHMARKS.md). Raise it on a machine with
    /// cores to spare and many busy rooms.
    #[arg(long, env = "NATTER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,

    /// Seconds a new socket has to complete its HTTP upgrade.
    #[arg(long, env = "NATTER_HANDSHAKE_TIMEOUT", default_value_t = 10.0)]
    pub handshake_timeout: f64,

    /// Seconds of silence from a client after which the server pings it.
    #[arg(long, env = "NATTER_PING_INTERVAL", default_value_t = 30.0)]
    pub ping_interval: f64,

    /// Seconds of silence (no frame, not even a pong) after which a client
    /// is considered gone and closed (1000, "idle timeout").
    #[arg(long, env = "NATTER_IDLE_TIMEOUT", default_value_t = 60.0)]
    pub idle_timeout: f64,

    /// Test-only fault injection: a `say` whose text is exactly this panics
    /// inside the request handler. Compiled only with the `fault-injection`
    /// feature, which only the test crate enables.
    #[cfg(feature = "fault-injection")]
    #[arg(skip)]
    pub panic_on_text: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        // The defaults live in the clap attributes; parse an empty command line.
        Config::parse_from(["natter-server"])
    }
}

impl Config {
    /// A configuration for tests: loopback, a free port, defaults otherwise.
    pub fn local() -> Self {
        Config {
            listen: "127.0.0.1:0".into(),
            ..Config::default()
        }
    }

    /// The limits announced to clients in `welcome`.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_text_bytes: self.max_text_bytes,
            rate_per_sec: self.rate,
            burst: self.burst,
            max_rooms_per_connection: self.max_rooms_per_connection,
        }
    }

    /// `--shutdown-grace` as a duration.
    pub(crate) fn shutdown_grace(&self) -> Duration {
        secs(self.shutdown_grace)
    }

    /// `--handshake-timeout` as a duration.
    pub(crate) fn handshake_timeout(&self) -> Duration {
        secs(self.handshake_timeout)
    }

    /// `--ping-interval` as a duration.
    pub(crate) fn ping_interval(&self) -> Duration {
        secs(self.ping_interval)
    }

    /// `--node-timeout` as a duration.
    pub(crate) fn node_timeout(&self) -> Duration {
        secs(self.node_timeout)
    }

    /// `--node-id`, or a random name for this start.
    pub(crate) fn node_name(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:016x}", fastrand::u64(..)))
    }

    /// `--idle-timeout` as a duration.
    pub(crate) fn idle_timeout(&self) -> Duration {
        secs(self.idle_timeout)
    }

    /// Rejects settings that would make the server unusable, with a reason.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.queue == 0 || self.queue > 1_000_000 {
            return Err("--queue must be between 1 and 1000000".into());
        }
        if self.max_message_bytes < 128 {
            return Err("--max-message-bytes must be at least 128".into());
        }
        if self.rate > 0 && self.burst == 0 {
            return Err("--burst must be at least 1 when --rate is not 0".into());
        }
        for (name, v) in [
            ("--shutdown-grace", self.shutdown_grace),
            ("--handshake-timeout", self.handshake_timeout),
            ("--ping-interval", self.ping_interval),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a number of seconds >= 0"));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if !(self.node_timeout.is_finite() && (0.2..=86_400.0).contains(&self.node_timeout)) {
            return Err("--node-timeout must be between 0.2 and 86400 seconds".into());
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)))
        {
            return Err("--node-id must be 1-64 characters of A-Z a-z 0-9 _ - .".into());
        }
        if self.broker.is_some() && self.data_dir.is_some() {
            return Err(
                "--broker and --data-dir do not go together: with a broker, history lives in Redis"
                    .into(),
            );
        }
        if self.ping_interval <= 0.0 || self.idle_timeout <= 0.0 {
            return Err("--ping-interval and --idle-timeout must be above 0".into());
        }
        Ok(())
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}
