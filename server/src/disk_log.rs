//! The durable room log (`--data-dir`): a writer thread that makes the
//! registry's changes durable in group commits.
//!
//! This is natter's one piece of real blocking work, and the textbook
//! shape for it (asyncio: a `Queue` feeding a worker in `to_thread`, and
//! futures the worker resolves):
//!
//! ```text
//!  registry (under its lock)        writer thread              publisher task
//!  ─────────────────────────        ─────────────              ──────────────
//!  take seq, encode ──(op, change)──▶ recv one, drain the rest
//!  (std mpsc, in lock order)          apply all: 1 transaction
//!                                     commit: 1 fsync
//!                                     ──Commit{through: op}──▶ lock the registry,
//!                                       (async channel)        broadcast, then
//!                                                              resolve each say
//! ```
//!
//! - The thread is dedicated, not borrowed from the runtime's blocking
//!   pool: it lives as long as the server, and one writer keeps the disk
//!   order equal to the order the changes were handed over.
//! - Group commit comes for free: while one commit's `fsync` runs, the
//!   changes that arrive queue up, and the next transaction takes all of
//!   them. Under load, many `say`s share one `fsync`; when idle, a lone
//!   `say` is committed at once, with no timer.
//! - The queue needs no bound of its own: every connection has at most one
//!   request in flight (it waits for the reply before reading the next), so
//!   at most one change per connection, plus room creations and evictions,
//!   can be waiting.
//! - If a commit fails (disk full, I/O error), that batch and everything
//!   after it is reported failed: after a failed `fsync` nothing can be
//!   promised about the file, so the server stops (see `crate::server`)
//!   and the next start recovers from the last good commit.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::frame::Frame;
use crate::room_log::{Commit, Op, RoomLog, StoredRoom, WriteFailed, Written};
use crate::store::{Change, Store, StoreError};

/// Most changes in one transaction: a bound on one commit's size (and
/// memory), far above what arrives during one `fsync` at chat rates.
const MAX_BATCH: usize = 4096;

/// The registry's side of the durable log.
pub(crate) struct DiskLog {
    /// Changes for the writer thread, in the order the registry made them.
    changes: Option<mpsc::Sender<(Op, Change)>>,
    /// The number of the last change handed over (changes are numbered
    /// 1, 2, 3, …; the writer reports commits by these numbers).
    last_op: Op,
    /// The writer thread, joined when the log is dropped, so the store's
    /// file lock is released by the time the drop returns.
    writer: Option<JoinHandle<()>>,
}

/// An opened durable log: the log itself, where its commits are reported,
/// and the rooms it held.
pub(crate) struct Opened {
    /// The log, for the registry.
    pub(crate) log: DiskLog,
    /// Commit reports, for the publisher.
    pub(crate) commits: async_channel::Receiver<Commit>,
    /// The rooms found in the store, least recently active first.
    pub(crate) rooms: Vec<StoredRoom>,
}

impl DiskLog {
    /// Opens the store in `dir` and starts its writer thread. Blocks (file
    /// I/O, a check of every page): call it on the blocking pool.
    pub(crate) fn open(dir: &Path, history: usize, max_rooms: usize) -> Result<Opened, StoreError> {
        let (store, rooms) = Store::open(dir, history, max_rooms)?;
        let (changes, inbox) = mpsc::channel();
        let (reports, commits) = async_channel::unbounded();
        let writer = std::thread::Builder::new()
            .name("natter-history".into())
            .spawn(move || write_loop(store, inbox, reports))
            .map_err(|e| StoreError::Open {
                file: dir.join(crate::store::FILE_NAME),
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Opened {
            log: DiskLog {
                changes: Some(changes),
                last_op: 0,
                writer: Some(writer),
            },
            commits,
            rooms,
        })
    }

    /// Hands a change to the writer thread.
    fn submit(&mut self, change: Change) -> Written {
        let Some(changes) = &self.changes else {
            return Written::Refused;
        };
        let op = self.last_op + 1;
        if changes.send((op, change)).is_err() {
            // The writer is gone (it only ends when this side hangs up).
            return Written::Refused;
        }
        self.last_op = op;
        Written::Queued(op)
    }
}

impl RoomLog for DiskLog {
    fn create(&mut self, room: &str, epoch: &str) -> Written {
        self.submit(Change::Create {
            room: room.into(),
            epoch: epoch.into(),
        })
    }

    fn append(&mut self, room: &str, seq: u64, message: &Frame) -> Written {
        self.submit(Change::Append {
            room: room.into(),
            seq,
            message: message.clone(),
        })
    }

    fn evict(&mut self, room: &str) -> Written {
        self.submit(Change::Evict { room: room.into() })
    }

    fn barrier(&mut self) -> Written {
        self.submit(Change::Barrier)
    }
}

impl Drop for DiskLog {
    /// Hangs up, then waits for the writer to commit what it has and close
    /// the store. Blocks: the registry drops its log on the blocking pool.
    fn drop(&mut self) {
        self.changes = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            log::error!("history writer thread panicked");
        }
    }
}

/// The writer thread: takes what is queued, commits it as one transaction,
/// reports, and repeats until the registry hangs up.
fn write_loop(
    mut store: Store,
    inbox: mpsc::Receiver<(Op, Change)>,
    reports: async_channel::Sender<Commit>,
) {
    let mut failed: Option<WriteFailed> = None;
    let mut batch: Vec<Change> = Vec::new();
    while let Ok((first, change)) = inbox.recv() {
        batch.clear();
        batch.push(change);
        let mut through = first;
        while batch.len() < MAX_BATCH {
            let Ok((op, change)) = inbox.try_recv() else {
                break;
            };
            batch.push(change);
            through = op;
        }
        let result = match &failed {
            Some(e) => Err(e.clone()),
            None => {
                // A bug in the store must fail the batch, not leave every
                // `say` waiting for a report that would never come.
                let applied = std::panic::catch_unwind(AssertUnwindSafe(|| store.apply(&batch)));
                applied.unwrap_or_else(|_| Err(WriteFailed("the store panicked".into())))
            }
        };
        if let Err(e) = &result {
            // Logged once, by the publisher, which also stops the server.
            failed = Some(e.clone());
        }
        log::trace!(
            "history: committed {} change(s) through {through}",
            batch.len()
        );
        // Unbounded: never blocks. Fails only once the publisher is gone,
        // and then nobody is waiting for the report.
        let _ = reports.try_send(Commit { through, result });
    }
}

#[cfg(test)]
mod tests {
    //! The durable log against the model it must agree with: the rooms it
    //! reads back are exactly what an in-memory log of the same changes
    //! holds — the same epochs and last seqs, the newest `--history`
    //! messages — after any mix of creations, appends, evictions and
    //! reopenings (with the history bound lowered or raised in between).

    use std::collections::{BTreeMap, VecDeque};

    use proptest::prelude::*;

    use super::*;

    /// A room as the model keeps it: epoch, last seq, the newest messages.
    type ModelRoom = (String, u64, VecDeque<(u64, String)>);

    #[derive(Debug, Clone)]
    enum Step {
        /// Say `count` messages into room `room` (creating it first if the
        /// model has no such room).
        Say { room: u8, count: u8 },
        /// Evict room `room` if it exists.
        Evict { room: u8 },
        /// Close the log and open it again with this history bound.
        Reopen { history: u8 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..5u8, 1..12u8).prop_map(|(room, count)| Step::Say { room, count }),
            1 => (0..5u8).prop_map(|room| Step::Evict { room }),
            1 => (0..8u8).prop_map(|history| Step::Reopen { history }),
        ]
    }

    /// Waits for the commit report covering the change `written` says was
    /// queued.
    fn commit(commits: &async_channel::Receiver<Commit>, written: Written) {
        let Written::Queued(op) = written else {
            panic!("a durable log queues every change, got {written:?}");
        };
        loop {
            let report = natter_runtime::block_on(commits.recv()).expect("writer reports");
            report.result.expect("commit succeeds");
            if report.through >= op {
                return;
            }
        }
    }

    fn message(room: &str, seq: u64) -> String {
        format!(
            r#"{{"type":"message","room":"{room}","seq":{seq},"from":"a","text":"m{seq}","ts":1}}"#
        )
    }

    fn check(stored: &[StoredRoom], model: &BTreeMap<String, ModelRoom>) {
        let got: BTreeMap<String, ModelRoom> = stored
            .iter()
            .map(|r| {
                let history = r
                    .history
                    .iter()
                    .map(|(seq, frame)| (*seq, frame.as_str().to_owned()))
                    .collect();
                (r.name.clone(), (r.epoch.clone(), r.last_seq, history))
            })
            .collect();
        assert_eq!(&got, model);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn reads_back_what_a_memory_log_of_the_same_changes_holds(
            steps in proptest::collection::vec(step(), 1..40),
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut history = 5usize;
            let mut model: BTreeMap<String, ModelRoom> = BTreeMap::new();
            let mut next_epoch = 0u32;
            let Opened { mut log, mut commits, rooms } =
                DiskLog::open(dir.path(), history, 1000).expect("opens");
            prop_assert!(rooms.is_empty());
            for step in steps {
                match step {
                    Step::Say { room, count } => {
                        let name = format!("r{room}");
                        if !model.contains_key(&name) {
                            next_epoch += 1;
                            let epoch = format!("e{next_epoch}");
                            let written = log.create(&name, &epoch);
                            commit(&commits, written);
                            model.insert(name.clone(), (epoch, 0, VecDeque::new()));
                        }
                        let entry = model.get_mut(&name).expect("just made");
                        let mut last = Written::Now;
                        for _ in 0..count {
                            entry.1 += 1;
                            let text = message(&name, entry.1);
                            last = log.append(&name, entry.1, &Frame::from(text.clone()));
                            entry.2.push_back((entry.1, text));
                            while entry.2.len() > history {
                                entry.2.pop_front();
                            }
                        }
                        commit(&commits, last);
                    }
                    Step::Evict { room } => {
                        let name = format!("r{room}");
                        if model.remove(&name).is_some() {
                            let written = log.evict(&name);
                            commit(&commits, written);
                        }
                    }
                    Step::Reopen { history: h } => {
                        drop(log);
                        history = h.into();
                        for room in model.values_mut() {
                            while room.2.len() > history {
                                room.2.pop_front();
                            }
                        }
                        let opened = DiskLog::open(dir.path(), history, 1000).expect("reopens");
                        check(&opened.rooms, &model);
                        (log, commits) = (opened.log, opened.commits);
                    }
                }
            }
            drop(log);
            let opened = DiskLog::open(dir.path(), history, 1000).expect("reopens");
            check(&opened.rooms, &model);
        }
    }

    #[test]
    fn rooms_past_max_rooms_are_forgotten_least_recently_active_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let Opened {
            mut log, commits, ..
        } = DiskLog::open(dir.path(), 10, 10).expect("opens");
        for name in ["a", "b", "c"] {
            let written = log.create(name, "e");
            commit(&commits, written);
            // Distinct activity times: the store ranks by milliseconds.
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        let written = log.append("a", 1, &Frame::from(message("a", 1)));
        commit(&commits, written);
        drop(log);
        let opened = DiskLog::open(dir.path(), 10, 2).expect("reopens");
        let names: Vec<&str> = opened.rooms.iter().map(|r| r.name.as_str()).collect();
        // b was the least recently active (a was said into after c).
        assert_eq!(names, ["c", "a"]);
        drop(opened);
        let opened = DiskLog::open(dir.path(), 10, 1000).expect("reopens");
        assert_eq!(opened.rooms.len(), 2, "the eviction was written");
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_as_locked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = DiskLog::open(dir.path(), 10, 10).expect("opens");
        match DiskLog::open(dir.path(), 10, 10) {
            Err(StoreError::Locked { .. }) => {}
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second open succeeded"),
        }
        drop(first);
        DiskLog::open(dir.path(), 10, 10).expect("opens once the first is closed");
    }
}
