//! The state file: the services as last changed through the admin API, written
//! atomically so that a crash at any moment leaves either the old or the new file.
use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::config::ServiceConfig;

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateDoc {
    pub services: Vec<ServiceConfig>,
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
# API. While this file exists its services win over those of lbd's config file;\n\
# remove it (with lbd stopped) to start from the config file again.\n";

/// The state file's content, or `None` if there is no state file.
pub fn read(path: &Path) -> Result<Option<StateDoc>, StateFileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.into(),
                source,
            })
        }
    };
    serde_yaml_ng::from_str(&text)
        .map(Some)
        .map_err(|e| StateFileError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
}

/// Writes `doc` to `path` atomically: a temporary file in the same directory is written
/// and fsynced, renamed over `path`, and the directory fsynced so that the rename itself
/// survives a crash (rename(2) is atomic within one filesystem; the directory fsync makes
/// the new entry durable, see fsync(2)).
pub fn write_atomic(path: &Path, doc: &StateDoc) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    // The state names every backend of the LB: owner-only, like the admin socket.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let yaml = serde_yaml_ng::to_string(doc).map_err(|e| StateFileError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(HEADER.as_bytes())?;
        file.write_all(yaml.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(io)
}
