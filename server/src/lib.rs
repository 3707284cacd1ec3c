//! natter-server: a WebSocket chat server, and a tour of async concurrency.
//!
//! Outside code uses four things: [`Config`] (the options), [`Server`]
//! (bind, then run until shut down), [`ServerHandle`] (shut it down, read
//! its [`Stats`]), and the errors they name ([`ServerError`],
//! [`StoreError`], [`TlsError`], [`BrokerStartError`]). Everything else is private; where to find each part of
//! the design:
//! - accept loop, connection cap use, shutdown path: `server`; what the
//!   connection tasks share: `state`
//! - the connection task (reader half): `connection`; writer half: `writer`
//! - the room registry behind an async mutex: `registry`; one room, and the
//!   table of rooms with its `--max-rooms` eviction index: `room`
//! - the broadcast path, the one enqueue step every frame takes:
//!   `broadcast`, into each connection's queue, `outbox` (its state
//!   machine); ingest backpressure when writers fall behind: `backlog`
//! - the connection cap (a semaphore): `cap`; the per-address cap (a
//!   count per IP, released by a guard): `per_ip`
//! - which web pages may connect (the Origin rule): `origin`; logging a
//!   refusal once per minute in bounded memory: `log_limit`
//! - the shutdown signal (an event): `shutdown`; waiting for tasks: `tasks`
//! - client pings, answered or not by the reader under the rate limit:
//!   `ping_filter`
//! - requests to replies: `handler`; HTTP upgrade: `handshake`; why a
//!   connection closes: `close_reason`; letting go of a socket: `closing`
//! - where rooms and history are kept: `room_log`, the seam (the
//!   `RoomLog` trait the registry hands each change to, under its lock;
//!   `MemoryLog`, the default); with `--data-dir`, `disk_log` (the
//!   `natter-history` writer thread and its group commit: one transaction,
//!   one `fsync` per batch) over `store` (the redb file's tables, and
//!   opening it: the lock, the check of every page, the trim to
//!   `--history` and `--max-rooms`)
//! - plain HTTP on the chat port: the request judged in `handshake`, the
//!   pages (`/`, `/healthz`, `/metrics`) answered by `pages`; the browser
//!   client itself is `web/index.html`; the counters: `metrics`
//! - TLS (`--tls-cert`, `--tls-key`): the acceptor in `tls`, a socket that
//!   is plain or TLS in `stream`
//! - several nodes, one chat (`--broker`): `chat` picks the registry or
//!   the cluster for every request; `cluster` holds the node's side of it —
//!   the requests as atomic scripts in Redis (`cluster/requests.rs`,
//!   `cluster/scripts.rs`, `cluster/lua/`), the bus delivered in each
//!   room's order (`cluster/delivery.rs`, `cluster/bus.rs`,
//!   `cluster/local.rs`), leases, reaping and losing the broker
//!   (`cluster/session.rs`)
//!
//! The modules form no import circle: `server` → `connection` → `handler`
//! → `registry` → `broadcast` → `outbox` → `backlog`, each only looking
//! down; `state` sits beside `server` and `connection`, above the registry;
//! history goes `registry` (and `room`) → `room_log`, and `server` →
//! `disk_log` → `store` → `room_log`: the registry never names the disk,
//! only the server, which chooses the log, does; `frame`, `conn_id`,
//! `close_reason`, `origin`, `per_ip`, `log_limit`, `stream` and `tls`
//! are leaves; `metrics` only reads `close_reason` and the registry's
//! counts; `pages` sits beside `connection`, under `state`; `chat` sits
//! above `registry` and `cluster`, which never name each other, and inside
//! `cluster` every file looks down to `node` (the shared state), `local`,
//! `scripts` and `bus`
//! (`python3 .ci/import_graph.py server/src` prints the graph).

#![warn(missing_docs)]

mod backlog;
mod broadcast;
mod cap;
mod chat;
mod close_reason;
mod closing;
mod cluster;
mod config;
mod conn_id;
mod connection;
mod disk_log;
mod frame;
mod handler;
mod handshake;
mod log_limit;
mod metrics;
mod origin;
mod outbox;
mod pages;
mod per_ip;
mod ping_filter;
mod rate;
mod registry;
mod room;
mod room_log;
mod server;
mod shutdown;
mod state;
mod store;
mod stream;
mod tasks;
mod tls;
mod writer;

pub use cluster::BrokerStartError;
pub use config::Config;
pub use registry::RegistryCounts;
pub use server::{Server, ServerError, ServerHandle, Stats};
pub use store::StoreError;
pub use tls::TlsError;
