//! Precompiled policy artifacts on disk, keyed by the component's sha256 and
//! the engine's compatibility hash. A Python or JS policy takes ~5 s to
//! compile and ~20 ms to load from here.
//!
//! Artifacts are native code that wasmtime maps without verification, so the
//! directory must be writable only by scour. Anything unreadable is ignored
//! and rebuilt; the cache never makes a load fail.

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$SCOUR_CACHE_DIR`, else `$XDG_CACHE_HOME/scour/policies`, else
    /// `$HOME/.cache/scour/policies`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("SCOUR_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("scour").join("policies"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_for(&self, digest: &str, compatibility: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}-{compatibility}.cwasm"))
    }

    pub(crate) fn load(&self, engine: &Engine, digest: &str, compatibility: &str) -> Option<Component> {
        let path = self.path_for(digest, compatibility);
        // Read, not mmap: a mapped artifact truncated by anyone else would
        // take the process down with SIGBUS.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read cached policy artifact");
                return None;
            }
        };
        // SAFETY: the file was written by `store` below from
        // `Component::serialize` for an engine with the same compatibility
        // key, in a directory only scour writes to. wasmtime still checks the
        // artifact's header and engine settings before using it.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached policy artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    pub(crate) fn store(&self, digest: &str, compatibility: &str, artifact: &[u8]) {
        let path = self.path_for(digest, compatibility);
        let written = crate::fsutil::create_private_dir(&self.dir)
            .and_then(|()| crate::fsutil::write_atomically(&path, artifact));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the policy artifact cache");
        }
    }
}
