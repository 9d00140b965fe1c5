//! Precompiled policy artifacts on disk, keyed by the component's sha256 and
//! the engine's compatibility hash. A Python or JS policy takes ~5 s to
//! compile and ~20 ms to load from here.
//!
//! Artifacts are native code that wasmtime maps without verification, so the
//! directory must be writable only by scour. Anything unreadable is ignored
//! and rebuilt; the cache never makes a load fail.
//!
//! Every policy version and every scour upgrade adds an artifact (a Python
//! policy's is ~40 MB), and on a node the cache lives on the host's disk. So
//! the cache has a size budget: after each write, the least recently used
//! artifacts beyond it are deleted, though never the one just written. A
//! hit counts as a use. Only files named as this cache names them are
//! touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

const ARTIFACT_SUFFIX: &str = ".cwasm";
/// Temporary files older than this are left over from an interrupted write.
const STALE_TEMP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl ArtifactCache {
    /// Room for a dozen Python or JS policies, or hundreds of Rust ones.
    pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_max_bytes(dir, Self::DEFAULT_MAX_BYTES)
    }

    /// A cache that keeps at most `max_bytes` of artifacts, and always the
    /// one written last.
    pub fn with_max_bytes(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
        }
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
        self.dir.join(format!("{hex}-{compatibility}{ARTIFACT_SUFFIX}"))
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
            Ok(c) => {
                mark_used(&path);
                Some(c)
            }
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
            return;
        }
        self.evict_beyond_budget(&path);
    }

    /// Deletes the least recently used artifacts until the rest fit the
    /// budget, never `keep`, and temporary files of interrupted writes.
    fn evict_beyond_budget(&self, keep: &Path) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the policy artifact cache");
                return;
            }
        };
        let now = SystemTime::now();
        let mut artifacts = Vec::new();
        for entry in entries.flatten() {
            let (path, Ok(meta)) = (entry.path(), entry.metadata()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Only what this cache writes: the directory may be shared.
            if is_artifact_name(&name) {
                if path != keep {
                    artifacts.push((used, meta.len(), path));
                }
            } else if name.starts_with(crate::fsutil::TEMP_PREFIX)
                && now.duration_since(used).is_ok_and(|age| age > STALE_TEMP)
            {
                let _ = std::fs::remove_file(&path);
            }
        }
        let mut total = std::fs::metadata(keep).map(|m| m.len()).unwrap_or(0);
        artifacts.sort_by_key(|(used, _, _)| std::cmp::Reverse(*used));
        let (mut evicted, mut freed) = (0usize, 0u64);
        for (_, size, path) in artifacts {
            if total + size <= self.max_bytes {
                total += size;
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    evicted += 1;
                    freed += size;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot evict a cached policy artifact"),
            }
        }
        if evicted > 0 {
            tracing::info!(
                evicted,
                freed_bytes = freed,
                max_bytes = self.max_bytes,
                "evicted least recently used policy artifacts"
            );
        }
    }
}

/// `<sha256 hex>-<compatibility hex>.cwasm`, as [`ArtifactCache::path_for`] names them.
fn is_artifact_name(name: &str) -> bool {
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    name.strip_suffix(ARTIFACT_SUFFIX)
        .and_then(|stem| stem.split_once('-'))
        .is_some_and(|(digest, compatibility)| digest.len() == 64 && is_hex(digest) && is_hex(compatibility))
}

/// Records a cache hit in the artifact's mtime, which eviction goes by.
fn mark_used(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::warn!(
            path = %path.display(),
            error = %e,
            "cannot mark a cached policy artifact as used; eviction will treat it as old"
        );
    }
}
