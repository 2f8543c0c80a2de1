//! The state file: the services as last changed through the admin API. It is a snapshot
//! (`state.yaml`, replaced atomically) plus a journal beside it (`state.yaml.journal`,
//! see [`super::journal`]) to which each change appends one fsynced record, so a change
//! costs what it changed, not what the LB holds. When the journal has grown past the
//! snapshot, the next change writes a fresh snapshot instead (compaction), which keeps
//! both reading and the amortized cost of writing proportional to the state. A crash at
//! any moment leaves the last acknowledged state readable.
use std::{
    fs::{self, File},
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use log::warn;
use serde::{Deserialize, Serialize};

use super::{
    journal::{self, Op},
    state_dir::StateDir,
};
use crate::model::config::ServiceConfig;

/// The snapshot's content.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateDoc {
    /// Which journal extends this snapshot (a journal of another generation is ignored).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// Since when (Unix seconds) the node is drained through the API (`lbctl node
    /// drain`); absent: not drained that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_since: Option<u64>,
    pub services: Vec<ServiceConfig>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path}: {message} (fix it, or remove it to start from the config file's services)")]
    Parse { path: PathBuf, message: String },
}

const HEADER: &str =
    "# lbd's desired services, written by lbd on every change made through its admin\n\
# API (with the journal beside it, state.yaml.journal, holding the latest changes).\n\
# While this file exists its services win over those of lbd's config file; remove it\n\
# and its journal (with lbd stopped) to start from the config file again.\n";

fn journal_name(path: &Path) -> String {
    format!("{}.journal", file_name(path))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into())
}

fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// The state (snapshot with its journal replayed), or `None` if there is no state file.
pub fn read(path: &Path) -> Result<Option<StateDoc>, StateFileError> {
    let parse = |message: String| StateFileError::Parse {
        path: path.into(),
        message,
    };
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    let mut doc: StateDoc = serde_yaml_ng::from_str(&text).map_err(|e| parse(e.to_string()))?;
    let journal_path = dir_of(path).join(journal_name(path));
    if let Some(text) = read_text(&journal_path)? {
        let shown = journal_path.display().to_string();
        match journal::parse(&text, doc.generation, &shown).map_err(parse)? {
            Some(ops) => {
                for op in ops {
                    journal::replay(&mut doc.services, op)
                        .map_err(|e| parse(format!("journal {shown}: {e}")))?;
                }
            }
            None => warn!(
                "state journal {shown} does not extend this state file (left over from a compaction cut short, or the state file was removed); ignoring it"
            ),
        }
    }
    Ok(Some(doc))
}

fn read_text(path: &Path) -> Result<Option<String>, StateFileError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateFileError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn snapshot_bytes(path: &Path, doc: &StateDoc) -> Result<Vec<u8>, StateFileError> {
    let yaml = serde_yaml_ng::to_string(doc).map_err(|e| StateFileError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    Ok([HEADER.as_bytes(), yaml.as_bytes()].concat())
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StateFileError + '_ {
    move |source| StateFileError::Io {
        path: path.into(),
        source,
    }
}

/// Writes `doc` as the snapshot at `path` atomically (see [`StateDir::replace`]); the
/// directory is created 0700 if missing and refused if another user may write it.
pub fn write_atomic(path: &Path, doc: &StateDoc) -> Result<(), StateFileError> {
    let dir = StateDir::open(dir_of(path)).map_err(io_error(path))?;
    let bytes = snapshot_bytes(path, doc)?;
    dir.replace(&file_name(path), &bytes)
        .map_err(io_error(path))
}

/// How to take back the last [`Store::persist`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// Cut the journal back to this length.
    Truncate(u64),
    /// A snapshot was written: write the previous state as a snapshot again.
    Snapshot,
}

/// The writer of one state file, kept for the life of the process.
pub struct Store {
    path: PathBuf,
    dir: Option<StateDir>,
    /// The journal open for appending, extending the snapshot this process wrote
    /// last; until then (and after a failed append) the next change compacts.
    journal: Option<File>,
    journal_len: u64,
    snapshot_len: u64,
    /// Device and inode of the snapshot last written.
    snapshot_id: Option<(u64, u64)>,
    bytes_written: u64,
    /// The node drain written into every snapshot (see [`StateDoc::drained_since`]).
    drained_since: Option<u64>,
}

impl Store {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.into(),
            dir: None,
            journal: None,
            journal_len: 0,
            snapshot_len: 0,
            snapshot_id: None,
            bytes_written: 0,
            drained_since: None,
        }
    }

    /// The node drain as read at start (kept in every snapshot from then on).
    pub fn with_drained_since(mut self, since: Option<u64>) -> Self {
        self.drained_since = since;
        self
    }

    /// Persists a node drain (`Some(since)`) or undrain as a new snapshot of `services`
    /// (rare, so no journal record). Durable when this returns; on failure nothing
    /// changed on disk and the previous drain is kept.
    pub fn persist_drain(
        &mut self,
        services: &[ServiceConfig],
        since: Option<u64>,
    ) -> Result<(), StateFileError> {
        if let Some(dir) = &self.dir {
            dir.recheck().map_err(io_error(&self.path))?;
        }
        let previous = std::mem::replace(&mut self.drained_since, since);
        self.compact(services).inspect_err(|_| {
            self.drained_since = previous;
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every byte this store has written (snapshots and journal records), so the cost of
    /// a change can be seen without timing it.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Persists `services`, the state after a change: as journal records when `ops`
    /// describes the change and the journal is still smaller than the snapshot, else as
    /// a new snapshot. Durable when this returns.
    pub fn persist(
        &mut self,
        services: &[ServiceConfig],
        ops: Option<&[Op]>,
    ) -> Result<Undo, StateFileError> {
        if let Some(dir) = &self.dir {
            dir.recheck().map_err(io_error(&self.path))?;
        }
        let in_place = self.files_in_place();
        if let (Some(ops), Some(journal)) = (ops, self.journal.as_mut()) {
            if self.journal_len <= self.snapshot_len && in_place {
                let records: String = ops.iter().map(journal::record).collect();
                let before = self.journal_len;
                let written = journal
                    .write_all(records.as_bytes())
                    .and_then(|()| journal.sync_data());
                if let Err(e) = written {
                    // The tail may be torn: drop it, and let the next change compact.
                    let _ = journal.set_len(before);
                    self.journal = None;
                    return Err(io_error(&self.path)(e));
                }
                self.journal_len += records.len() as u64;
                self.bytes_written += records.len() as u64;
                return Ok(Undo::Truncate(before));
            }
        }
        self.compact(services)?;
        Ok(Undo::Snapshot)
    }

    /// Whether the snapshot and journal on disk are still the ones this store wrote (an
    /// operator may have removed or replaced them): else a journal record would extend
    /// a file that no start-up will read, and the next change compacts instead.
    fn files_in_place(&self) -> bool {
        let ino = |p: &Path| fs::symlink_metadata(p).map(|m| (m.dev(), m.ino())).ok();
        let journal = self.journal.as_ref().and_then(|f| f.metadata().ok());
        let journal_path = dir_of(&self.path).join(journal_name(&self.path));
        self.snapshot_id.is_some()
            && ino(&self.path) == self.snapshot_id
            && journal.is_some_and(|m| ino(&journal_path) == Some((m.dev(), m.ino())))
    }

    /// Takes back the last `persist`; `previous` is the state before it.
    pub fn undo(&mut self, undo: Undo, previous: &[ServiceConfig]) -> Result<(), StateFileError> {
        match (undo, self.journal.as_mut()) {
            (Undo::Truncate(len), Some(journal)) => {
                let cut = journal.set_len(len).and_then(|()| journal.sync_data());
                if let Err(e) = cut {
                    self.journal = None;
                    return Err(io_error(&self.path)(e));
                }
                self.journal_len = len;
                Ok(())
            }
            _ => self.compact(previous),
        }
    }

    /// A new snapshot of `services` under a new generation, then an empty journal of
    /// that generation. A crash between the two leaves the old journal, which names the
    /// old generation and is therefore ignored: the new snapshot already holds it.
    fn compact(&mut self, services: &[ServiceConfig]) -> Result<(), StateFileError> {
        self.journal = None;
        let io = io_error(&self.path);
        if self
            .dir
            .as_ref()
            .is_none_or(|d| d.path() != dir_of(&self.path))
        {
            self.dir = Some(StateDir::open(dir_of(&self.path)).map_err(&io)?);
        }
        let dir = self.dir.as_ref().expect("opened above");
        // Random, so that it never matches a journal left by an earlier process.
        let generation = fastrand::u64(1..);
        let snapshot = snapshot_bytes(
            &self.path,
            &StateDoc {
                generation,
                drained_since: self.drained_since,
                services: services.to_vec(),
            },
        )?;
        dir.replace(&file_name(&self.path), &snapshot)
            .map_err(&io)?;
        self.bytes_written += snapshot.len() as u64;
        let written = fs::symlink_metadata(&self.path).map_err(&io)?;
        self.snapshot_id = Some((written.dev(), written.ino()));
        let name = journal_name(&self.path);
        let header = journal::header(generation);
        dir.replace(&name, header.as_bytes()).map_err(&io)?;
        self.bytes_written += header.len() as u64;
        self.journal = Some(dir.open_append(&name).map_err(&io)?);
        self.snapshot_len = snapshot.len() as u64;
        self.journal_len = header.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
#[path = "state_file_tests.rs"]
mod tests;
