//! A room's ordered log: the seam between the registry, which decides each
//! room's order, and the place that order is kept.
//!
//! Three homes hold the same thing — the rooms, each with its epoch, its
//! last seq and its retained history: memory ([`MemoryLog`], the default:
//! nothing outlives the process), an embedded store on disk
//! (`crate::disk_log`, `--data-dir`), and, later, a store shared by several
//! nodes. The registry tells its log every change, in the order it decided
//! them, and the log answers how durable each one is ([`Written`]).
//!
//! The log lives *inside* the registry's locked state, and every method
//! takes `&mut self`: only code holding the registry lock can hand it a
//! change, so the order the log sees is, by construction, the order every
//! member sees. Nothing here waits; a change that needs a disk write is
//! queued and reported later, as a [`Commit`], to whoever holds the
//! receiving end (the server's publisher, see `crate::registry`).

use std::sync::Arc;

use crate::frame::Frame;

/// The number of a change handed to a log that reports commits: 1, 2, 3, …
/// in the order the changes were handed over.
pub(crate) type Op = u64;

/// How durable a change is once the log has taken it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// As durable as this log ever makes it, already (memory: at once).
    Now,
    /// Queued as change number `Op`: a [`Commit`] will say when it is on
    /// stable storage, or that it could not be written.
    Queued(Op),
    /// Not taken: the log is closed (the server is past its shutdown) or
    /// has failed. The change must not be shown to anyone.
    Refused,
}

/// A report from a log that writes in the background: every change up to
/// and including `through` has been committed — or, with an error, none
/// of the ones not reported before could be.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    /// The last change this report covers.
    pub(crate) through: Op,
    /// Whether they reached stable storage.
    pub(crate) result: Result<(), WriteFailed>,
}

/// Changes could not be made durable (disk full, an I/O error): the
/// storage's own words, shared by every change the failure covers.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot write to the history store: {0}")]
pub(crate) struct WriteFailed(pub(crate) Arc<str>);

/// A room as the log held it when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRoom {
    /// The room's name.
    pub(crate) name: String,
    /// The incarnation of its numbering, kept across restarts.
    pub(crate) epoch: String,
    /// Its last seq (0: no message yet).
    pub(crate) last_seq: u64,
    /// Its retained messages (the `message` events as broadcast), oldest
    /// first, with their seqs.
    pub(crate) history: Vec<(u64, Frame)>,
}

/// Where the registry's rooms are kept. Every method is called with the
/// registry lock held, in the order the registry decided.
pub(crate) trait RoomLog: Send {
    /// A room came into being with this epoch.
    fn create(&mut self, room: &str, epoch: &str) -> Written;
    /// Message `seq` (the next one) was said in `room`; `message` is the
    /// encoded `message` event. The log keeps the last `--history` of them.
    fn append(&mut self, room: &str, seq: u64, message: &Frame) -> Written;
    /// The room was evicted (`--max-rooms`): forget it and its history.
    fn evict(&mut self, room: &str) -> Written;
    /// Nothing new: a marker whose commit says everything before it is
    /// committed too (what a graceful shutdown waits for).
    fn barrier(&mut self) -> Written;
}

/// The log once the server is done with it: it takes nothing, so nothing
/// said after the end can look durable. (Dropping the log it replaced lets
/// go of the storage.)
pub(crate) struct ClosedLog;

impl RoomLog for ClosedLog {
    fn create(&mut self, _room: &str, _epoch: &str) -> Written {
        Written::Refused
    }

    fn append(&mut self, _room: &str, _seq: u64, _message: &Frame) -> Written {
        Written::Refused
    }

    fn evict(&mut self, _room: &str) -> Written {
        Written::Refused
    }

    fn barrier(&mut self) -> Written {
        Written::Refused
    }
}

/// History in memory only: every change is as durable as it gets at once.
pub(crate) struct MemoryLog;

impl RoomLog for MemoryLog {
    fn create(&mut self, _room: &str, _epoch: &str) -> Written {
        Written::Now
    }

    fn append(&mut self, _room: &str, _seq: u64, _message: &Frame) -> Written {
        Written::Now
    }

    fn evict(&mut self, _room: &str) -> Written {
        Written::Now
    }

    fn barrier(&mut self) -> Written {
        Written::Now
    }
}
