//! The embedded store behind `--data-dir`: every retained room, its
//! numbering and its history, in one redb file (`DIR/natter.redb`).
//!
//! Why redb rather than a storage engine of our own, or another store:
//! it is pure Rust (no C toolchain; it builds in seconds and has no
//! dependencies), fully transactional, and its default commit costs one
//! `fsync`: the new root goes into a commit slot with a checksum, so a
//! commit torn by a crash is detected on the next open and the previous
//! one is used. It also locks its file (a second server on the same
//! directory is refused, not allowed to interleave writes) and can verify
//! the checksum of every page when it opens, which is how a damaged file
//! is caught before anything is served from it. An LSM store (fjall)
//! would write fewer bytes per message, but brings background compaction
//! threads that chat volumes do not need; SQLite (rusqlite) needs a C build
//! and a query language we would not use.
//!
//! Everything here blocks (it is file I/O with `fsync`): it runs on the
//! log's writer thread (`crate::disk_log`) or, at start, on the runtime's
//! blocking pool — never on an executor thread.
//!
//! Layout, format 1:
//! - `natter`: `"format"` → 1, so a future layout is never misread;
//! - `rooms`: room name → `(last_seq, active_ms, epoch)`; `active_ms` is
//!   when the room was created or last said into (Unix ms), which ranks the
//!   rooms for `--max-rooms` after a restart;
//! - `messages`: `(room, seq)` → the `message` event's JSON exactly as it
//!   was broadcast, at most `--history` per room (the newest).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use natter_protocol::ServerMessage;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::frame::{Frame, unix_ms};
use crate::room_log::{StoredRoom, WriteFailed};

/// The file inside `--data-dir`.
pub(crate) const FILE_NAME: &str = "natter.redb";
/// The layout this code writes and reads.
const FORMAT: u64 = 1;
/// redb's page cache. The store holds at most `--history` messages per
/// retained room, and reads happen only at start: the default (1 GiB)
/// would only ever be a ceiling, this one is a promise.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const META: TableDefinition<&str, u64> = TableDefinition::new("natter");
const ROOMS: TableDefinition<&str, (u64, u64, &str)> = TableDefinition::new("rooms");
const MESSAGES: TableDefinition<(&str, u64), &str> = TableDefinition::new("messages");

/// Why the store could not be opened. Each says which file or directory
/// and what to do, because it is the one line the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created or is not a directory.
    #[error("cannot use data directory {}", dir.display())]
    Dir {
        /// `--data-dir`.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another process (another natter-server) has the store open.
    #[error(
        "data directory {} is locked: another natter-server is using it (each server needs its own --data-dir)",
        dir.display()
    )]
    Locked {
        /// `--data-dir`.
        dir: PathBuf,
    },
    /// The file is not a store natter can trust: it failed its checksums,
    /// or holds something this version cannot read. It is left untouched.
    #[error(
        "the history store {} is damaged ({detail}); it was not changed: restore it from a backup, or move it away to start with no history",
        file.display()
    )]
    Damaged {
        /// The store file.
        file: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// Opening failed for another reason (I/O, permissions).
    #[error("cannot open the history store {}: {detail}", file.display())]
    Open {
        /// The store file.
        file: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// One change, as the writer thread applies it.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A new room with this epoch.
    Create {
        /// The room.
        room: Box<str>,
        /// Its epoch.
        epoch: Box<str>,
    },
    /// Message `seq` of `room`.
    Append {
        /// The room.
        room: Box<str>,
        /// The message's seq (the room's new last seq).
        seq: u64,
        /// The encoded `message` event.
        message: Frame,
    },
    /// The room was evicted.
    Evict {
        /// The room.
        room: Box<str>,
    },
    /// Nothing to write; only its commit matters.
    Barrier,
}

/// An open store: the database and the history bound it trims to.
pub(crate) struct Store {
    /// The redb database (holds the file lock while open).
    db: Database,
    /// `--history`: messages kept per room.
    history: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir`, checks every page, and reads
    /// back every room. Rooms past `max_rooms` (least recently active
    /// first) and messages past `history` are dropped from the store in the
    /// same step, so what is returned is what the store now holds. The
    /// rooms come least recently active first.
    pub(crate) fn open(
        dir: &Path,
        history: usize,
        max_rooms: usize,
    ) -> Result<(Store, Vec<StoredRoom>), StoreError> {
        let dir_error = |source| StoreError::Dir {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        if !dir.is_dir() {
            return Err(dir_error(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        let file = dir.join(FILE_NAME);
        let damaged = |detail: String| StoreError::Damaged {
            file: file.clone(),
            detail,
        };
        // redb verifies every page's checksum here, so a damaged file is an
        // error rather than a panic later. The unwind guard is for the case
        // it does not foresee: garbage must never take the process down
        // with a backtrace instead of a sentence.
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .create(&file)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(StoreError::Locked {
                    dir: dir.to_owned(),
                });
            }
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))) => {
                return Err(StoreError::Open {
                    file,
                    detail: e.to_string(),
                });
            }
            Ok(Err(e)) => return Err(damaged(e.to_string())),
            Err(_) => return Err(damaged("it could not be read".into())),
        };
        // The file's own writes are synced by every commit; its name in the
        // directory (and the directory's in its parent, when it was just
        // made) is synced here, once, so a power loss soon after the first
        // start cannot lose the file with acknowledged messages in it.
        for entry in [Some(dir), dir.parent()].into_iter().flatten() {
            if let Err(e) = std::fs::File::open(entry).and_then(|d| d.sync_all()) {
                log::warn!("could not sync the directory {}: {e}", entry.display());
            }
        }
        let mut store = Store {
            db,
            history: history as u64,
        };
        let rooms = store.load(max_rooms).map_err(|e| match e {
            LoadError::Damaged(detail) => damaged(detail),
            LoadError::Io(detail) => StoreError::Open {
                file: file.clone(),
                detail,
            },
        })?;
        Ok((store, rooms))
    }

    /// Reads every room and message, checks that they fit together, and
    /// trims the store to the current `--history` and `--max-rooms`.
    fn load(&mut self, max_rooms: usize) -> Result<Vec<StoredRoom>, LoadError> {
        let txn = self.db.begin_write().map_err(io)?;
        let mut rooms = {
            let mut meta = txn.open_table(META).map_err(io)?;
            let format = meta.get("format").map_err(io)?.map(|v| v.value());
            let fresh = match format {
                Some(FORMAT) => false,
                Some(other) => {
                    return Err(LoadError::Damaged(format!(
                        "it has format {other}; this natter reads format {FORMAT}"
                    )));
                }
                None => true,
            };
            if fresh {
                meta.insert("format", FORMAT).map_err(io)?;
            }
            let table = txn.open_table(ROOMS).map_err(io)?;
            if fresh && !table.is_empty().map_err(io)? {
                return Err(LoadError::Damaged("it has rooms but no format".into()));
            }
            let mut rooms: HashMap<String, (StoredRoom, u64)> = HashMap::new();
            for entry in table.iter().map_err(io)? {
                let (name, value) = entry.map_err(io)?;
                let (last_seq, active, epoch) = value.value();
                let room = StoredRoom {
                    name: name.value().to_owned(),
                    epoch: epoch.to_owned(),
                    last_seq,
                    history: Vec::new(),
                };
                rooms.insert(room.name.clone(), (room, active));
            }
            rooms
        };
        let mut messages = txn.open_table(MESSAGES).map_err(io)?;
        for entry in messages.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let (name, seq) = key.value();
            let Some((room, _)) = rooms.get_mut(name) else {
                return Err(LoadError::Damaged(format!(
                    "message {seq} of room {name:?}, which it does not list"
                )));
            };
            let text = value.value();
            if seq > room.last_seq || !is_message(text, name, seq) {
                return Err(LoadError::Damaged(format!(
                    "message {seq} of room {name:?} does not fit the room"
                )));
            }
            room.history.push((seq, Frame::from(text.to_owned())));
        }
        // Least recently active first; then by name, so the order is total.
        let mut rooms: Vec<(StoredRoom, u64)> = rooms.into_values().collect();
        rooms.sort_by(|(a, a_active), (b, b_active)| {
            a_active.cmp(b_active).then_with(|| a.name.cmp(&b.name))
        });
        let evict = rooms.len().saturating_sub(max_rooms);
        let mut table = txn.open_table(ROOMS).map_err(io)?;
        for (room, _) in rooms.drain(..evict) {
            log::info!(
                "history store: forgetting room {:?} (more than --max-rooms {max_rooms} rooms)",
                room.name
            );
            table.remove(room.name.as_str()).map_err(io)?;
            remove_messages(&mut messages, &room.name, u64::MAX)?;
        }
        let mut kept = Vec::with_capacity(rooms.len());
        for (mut room, _) in rooms {
            let drop_through = room.last_seq.saturating_sub(self.history);
            if room
                .history
                .first()
                .is_some_and(|(seq, _)| *seq <= drop_through)
            {
                remove_messages(&mut messages, &room.name, drop_through)?;
                room.history.retain(|(seq, _)| *seq > drop_through);
            }
            kept.push(room);
        }
        drop(table);
        drop(messages);
        txn.commit().map_err(io)?;
        Ok(kept)
    }

    /// Applies a batch of changes in one transaction and commits it: one
    /// `fsync` for the whole batch (the group commit).
    pub(crate) fn apply(&mut self, changes: &[Change]) -> Result<(), WriteFailed> {
        self.try_apply(changes)
            .map_err(|e| WriteFailed(Arc::from(e)))
    }

    fn try_apply(&mut self, changes: &[Change]) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut rooms = txn.open_table(ROOMS).map_err(|e| e.to_string())?;
            let mut messages = txn.open_table(MESSAGES).map_err(|e| e.to_string())?;
            let now = unix_ms();
            for change in changes {
                match change {
                    Change::Create { room, epoch } => {
                        rooms
                            .insert(&**room, (0, now, &**epoch))
                            .map_err(|e| e.to_string())?;
                    }
                    Change::Append { room, seq, message } => {
                        let epoch = match rooms.get(&**room).map_err(|e| e.to_string())? {
                            Some(row) => row.value().2.to_owned(),
                            None => return Err(format!("message {seq} for unknown room {room:?}")),
                        };
                        rooms
                            .insert(&**room, (*seq, now, epoch.as_str()))
                            .map_err(|e| e.to_string())?;
                        if self.history > 0 {
                            messages
                                .insert((&**room, *seq), message.as_str())
                                .map_err(|e| e.to_string())?;
                            if *seq > self.history {
                                messages
                                    .remove((&**room, *seq - self.history))
                                    .map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    Change::Evict { room } => {
                        rooms.remove(&**room).map_err(|e| e.to_string())?;
                        remove_messages(&mut messages, room, u64::MAX).map_err(|e| match e {
                            LoadError::Damaged(s) | LoadError::Io(s) => s,
                        })?;
                    }
                    Change::Barrier => {}
                }
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

/// Why reading the store back failed.
enum LoadError {
    /// The contents do not fit together.
    Damaged(String),
    /// The storage failed.
    Io(String),
}

fn io(e: impl std::fmt::Display) -> LoadError {
    LoadError::Io(e.to_string())
}

/// Removes `room`'s messages with seq up to `through`.
fn remove_messages(
    messages: &mut redb::Table<(&str, u64), &str>,
    room: &str,
    through: u64,
) -> Result<(), LoadError> {
    messages
        .retain_in((room, 0)..=(room, through), |_, _| false)
        .map_err(io)
}

/// Whether `text` is the `message` event for `seq` in `room`.
fn is_message(text: &str, room: &str, seq: u64) -> bool {
    matches!(
        serde_json::from_str::<ServerMessage>(text),
        Ok(ServerMessage::Message(m)) if m.room == room && m.seq == seq
    )
}
