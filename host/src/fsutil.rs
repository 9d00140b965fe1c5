//! Small file helpers shared by the caches and state files.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads a versioned JSON state file. A missing file is `None`; so is one
/// that cannot be read, is corrupt, or has another version, with one warning
/// naming `what`: state files are rebuilt, never fatal.
pub fn read_state<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    version: u32,
    version_of: impl Fn(&T) -> u32,
) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the {what}; starting afresh");
            return None;
        }
    };
    match serde_json::from_slice::<T>(&bytes) {
        Ok(data) if version_of(&data) == version => Some(data),
        Ok(data) => {
            let found = version_of(&data);
            tracing::warn!(path = %path.display(), version = found, "unknown {what} version; starting afresh");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "corrupt {what}; starting afresh");
            None
        }
    }
}

/// Writes a state file atomically; a failure is logged, never fatal.
pub fn write_state<T: Serialize>(path: &Path, what: &str, data: &T) {
    let written = serde_json::to_vec(data)
        .map_err(std::io::Error::other)
        .and_then(|bytes| write_atomically(path, &bytes));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot save the {what}");
    }
}

/// Writes through a temporary file in the same directory, syncs it, and
/// renames it into place, so readers never see a partial file.
/// Names of the temporary files `write_atomically` writes and renames.
pub const TEMP_PREFIX: &str = ".scour-tmp";

pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Creates a directory (and its parents) that only the owner can read.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
