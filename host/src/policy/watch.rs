//! Polls a policy file (and its settings) by content digest and hot-swaps on
//! change. A Kubernetes ConfigMap mount changes by an atomic symlink swap,
//! which inotify on the file misses; reading the content each time does not.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::golden::Case;
use super::source::verify_digest;
use super::{DigestPin, Error, PolicyHandle, digest_of};

/// The files a watcher follows.
#[derive(Debug, Clone)]
pub struct WatchTarget {
    pub policy: PathBuf,
    pub settings: Option<PathBuf>,
    /// Golden cases every candidate must pass.
    pub cases: Vec<Case>,
    /// The digest every candidate must have.
    pub pin: Option<DigestPin>,
}

/// The result of one poll.
#[derive(Debug)]
pub enum Poll {
    Unchanged,
    Swapped {
        digest: String,
    },
    /// The files changed but the candidate was refused; the old policy serves.
    Refused(Error),
}

pub struct PolicyWatcher {
    handle: Arc<PolicyHandle>,
    target: WatchTarget,
    last_seen: Option<String>,
}

impl PolicyWatcher {
    /// Starts from the policy the handle serves, so an unchanged file does
    /// not trigger a reload.
    pub fn new(handle: Arc<PolicyHandle>, target: WatchTarget) -> Self {
        let current = handle.current();
        let pin = target.pin.as_ref().map(DigestPin::expected);
        let last_seen = Some(content_key(current.digest(), current.settings(), pin.as_ref()));
        Self {
            handle,
            target,
            last_seen,
        }
    }

    /// Reads the files once and reloads when their content changed.
    pub fn poll_once(&mut self) -> Poll {
        let (bytes, settings) = match self.read() {
            Ok(v) => v,
            Err(e) => {
                let key = format!("unreadable: {e}");
                if self.last_seen.as_deref() != Some(key.as_str()) {
                    tracing::warn!(error = %e, "cannot read the watched policy; keeping the current one");
                    self.last_seen = Some(key);
                }
                return Poll::Refused(e);
            }
        };
        let digest = digest_of(&bytes);
        // The pin is part of what changes: a new pin alone is re-checked.
        let pin = self.target.pin.as_ref().map(DigestPin::expected);
        let key = content_key(&digest, &settings, pin.as_ref());
        if self.last_seen.as_deref() == Some(key.as_str()) {
            return Poll::Unchanged;
        }
        // Remember the content even when it is refused, so a broken file is
        // reported once rather than recompiled on every poll.
        self.last_seen = Some(key);
        if let Some(pinned) = pin
            && let Err(e) = pinned.and_then(|expected| verify_digest(&expected, &digest))
        {
            tracing::warn!(error = %e, "policy change refused; keeping the current one");
            return Poll::Refused(e);
        }
        let origin = self.target.policy.display().to_string();
        match self.handle.reload(&bytes, &origin, &settings, &self.target.cases) {
            Ok(p) => Poll::Swapped {
                digest: p.digest().to_owned(),
            },
            Err(e) => Poll::Refused(e),
        }
    }

    fn read(&self) -> Result<(Vec<u8>, String), Error> {
        let read_err = |path: &PathBuf, error| Error::Read {
            path: path.display().to_string(),
            error,
        };
        let bytes = std::fs::read(&self.target.policy).map_err(|e| read_err(&self.target.policy, e))?;
        let settings = match &self.target.settings {
            Some(p) => std::fs::read_to_string(p).map_err(|e| read_err(p, e))?,
            None => self.handle.current().settings().to_owned(),
        };
        Ok((bytes, settings))
    }

    /// Polls every `interval` on a background thread until the guard drops.
    pub fn spawn(mut self, interval: Duration) -> WatchGuard {
        let (stop, stopped) = mpsc::channel::<()>();
        // A process that cannot start a thread cannot go on: not input-shaped.
        #[allow(clippy::expect_used)]
        let thread = std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    self.poll_once();
                }
            })
            .expect("spawning the policy watcher thread");
        WatchGuard {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// What identifies a version: the component, the settings and the pin.
fn content_key(digest: &str, settings: &str, pin: Option<&Result<String, Error>>) -> String {
    let pin = match pin {
        Some(Ok(expected)) => expected.clone(),
        Some(Err(e)) => e.to_string(),
        None => String::new(),
    };
    format!("{digest}+{}+{pin}", digest_of(settings.as_bytes()))
}

/// Stops the watcher thread when dropped.
pub struct WatchGuard {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
