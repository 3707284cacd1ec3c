//! The Redis client behind `--broker`, and why it works under either
//! runtime.
//!
//! The `redis` crate (1.x) drives each connection with a task of its own,
//! spawned on smol's executor (its feature `smol-comp`; it no longer
//! supports async-std). That is the one runtime-specific thing about it, and
//! it is settled here, where natter settles every such question:
//!
//! * under `smol`, those driver tasks run on smol's global executor, beside
//!   natter's own;
//! * under `async-std`, they run on smol's global executor too — one extra
//!   thread (`SMOL_THREADS`, default 1) that exists only while a broker is
//!   in use — and their sockets sit on async-io's reactor, the very reactor
//!   async-std's own sockets use. Nothing is bridged or polled twice: a
//!   future natter awaits (a command's reply, the next pub/sub message) is
//!   woken by a channel that the driver task fills.
//!
//! So the rest of natter uses the client's async API directly, through this
//! re-export, and never names a runtime.

pub use redis;
