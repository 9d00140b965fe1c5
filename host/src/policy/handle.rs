//! The current policy, swapped atomically after a candidate passes every check.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::golden::{self, Case};
use super::{LoadedPolicy, Result};

/// Reload history, for logs, metrics and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandleStatus {
    pub reloads: u64,
    pub failed_reloads: u64,
    /// Why the latest failed reload was refused, until a reload succeeds.
    pub last_error: Option<String>,
}

/// Holds the policy that calls use. A call takes the current version with
/// [`PolicyHandle::current`] and finishes on it even if a swap happens
/// meanwhile.
pub struct PolicyHandle {
    current: ArcSwap<LoadedPolicy>,
    status: Mutex<HandleStatus>,
}

impl PolicyHandle {
    pub fn new(initial: LoadedPolicy) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            status: Mutex::new(HandleStatus::default()),
        }
    }

    pub fn current(&self) -> Arc<LoadedPolicy> {
        self.current.load_full()
    }

    pub fn status(&self) -> HandleStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Compiles, type-checks and validates a candidate on the current
    /// policy's engine, runs the probe and `cases`, and only then swaps.
    /// On any failure the current policy stays and the error says why.
    pub fn reload(&self, bytes: &[u8], origin: &str, settings: &str, cases: &[Case]) -> Result<Arc<LoadedPolicy>> {
        let old = self.current();
        let result = LoadedPolicy::load(old.engine(), bytes, origin, settings)
            .and_then(|candidate| golden::verify(&candidate, cases).map(|()| candidate));
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(candidate) => {
                let new = Arc::new(candidate);
                self.current.store(new.clone());
                status.reloads += 1;
                status.last_error = None;
                tracing::info!(
                    old = old.digest(),
                    new = new.digest(),
                    origin,
                    policy = %new.info().name,
                    "policy swapped"
                );
                Ok(new)
            }
            Err(e) => {
                status.failed_reloads += 1;
                status.last_error = Some(e.to_string());
                tracing::warn!(error = %e, kept = old.digest(), origin, "policy reload refused; keeping the last good policy");
                Err(e)
            }
        }
    }
}
