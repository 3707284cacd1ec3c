//! natter-server: a WebSocket chat server, and a tour of async concurrency.
//!
//! Where to find each part of the design:
//! - accept loop, connection cap use, shutdown path: [`server`]
//! - the connection task (reader half): [`connection`]; writer half: [`writer`]
//! - the room registry behind an async mutex: [`registry`], one room: [`room`]
//! - the broadcast path: [`broadcast`], into each connection's [`outbox`];
//!   ingest backpressure when writers fall behind: [`backlog`]
//! - the connection cap (a semaphore): [`cap`]
//! - the shutdown signal (an event): [`shutdown`]; waiting for tasks: [`tasks`]
//! - requests to replies: [`handler`]; HTTP upgrade: [`handshake`]

pub mod backlog;
pub mod broadcast;
pub mod cap;
pub mod closing;
pub mod config;
pub mod connection;
pub mod handler;
pub mod handshake;
pub mod outbox;
pub mod rate;
pub mod registry;
pub mod room;
pub mod server;
pub mod shutdown;
pub mod tasks;
pub mod writer;

pub use config::Config;
pub use server::{Server, ServerError, ServerHandle, Stats};

/// The `server` field of `welcome`.
pub const SERVER_NAME: &str = concat!("natter ", env!("CARGO_PKG_VERSION"));
