//! Scan results kept between passes, keyed by image id under one Trivy
//! version and one vulnerability DB (`UpdatedAt`): an unchanged image under an
//! unchanged DB is not scanned again. Only completed scans are kept; failed
//! ones are retried on the next pass.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use scour_policy_sdk::ScanOutcome;
use serde::{Deserialize, Serialize};

const FILE: &str = "scan-cache.json";
const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// Trivy version and DB UpdatedAt the entries were scanned under.
    key: String,
    entries: BTreeMap<String, ScanOutcome>,
}

#[derive(Debug, Default)]
pub struct ScanCache {
    path: Option<PathBuf>,
    data: OnDisk,
}

impl ScanCache {
    /// Loads `<state_dir>/scan-cache.json`. Without a state dir the cache
    /// lives only for this process; a corrupt file starts afresh.
    pub fn load(state_dir: Option<&Path>) -> Self {
        let Some(dir) = state_dir else {
            return Self::default();
        };
        let path = dir.join(FILE);
        let data = crate::fsutil::read_state(&path, "scan cache", VERSION, |d: &OnDisk| d.version).unwrap_or_default();
        Self { path: Some(path), data }
    }

    pub fn get(&self, key: &str, id: &str) -> Option<&ScanOutcome> {
        (self.data.key == key).then(|| self.data.entries.get(id)).flatten()
    }

    /// Records a completed scan; a new key drops everything scanned under
    /// the old one.
    pub fn put(&mut self, key: &str, id: &str, outcome: &ScanOutcome) {
        if !matches!(outcome, ScanOutcome::Scanned(_)) {
            return;
        }
        if self.data.key != key {
            self.data.key = key.to_owned();
            self.data.entries.clear();
        }
        self.data.entries.insert(id.to_owned(), outcome.clone());
    }

    /// Forgets images no longer on the node.
    pub fn retain(&mut self, present: &HashSet<&str>) {
        self.data.entries.retain(|id, _| present.contains(id.as_str()));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.data.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.data.entries.is_empty()
    }

    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let data = OnDisk {
            version: VERSION,
            key: self.data.key.clone(),
            entries: self.data.entries.clone(),
        };
        crate::fsutil::write_state(path, "scan cache", &data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scour_policy_sdk::ScanReport;

    #[test]
    fn entries_live_under_one_key_and_persist() {
        let d = tempfile::tempdir().unwrap();
        let scanned = ScanOutcome::Scanned(ScanReport::new(None, vec![]));
        let mut c = ScanCache::load(Some(d.path()));
        c.put("k1", "a", &scanned);
        c.put("k1", "b", &ScanOutcome::Failed("x".into()));
        assert!(c.get("k1", "a").is_some());
        assert!(c.get("k1", "b").is_none(), "failures are not cached");
        c.save();
        let mut c = ScanCache::load(Some(d.path()));
        assert_eq!(c.get("k1", "a"), Some(&scanned));
        assert!(c.get("k2", "a").is_none(), "a new DB invalidates");
        c.put("k2", "c", &scanned);
        assert!(c.get("k2", "a").is_none() && c.len() == 1);
        c.retain(&HashSet::new());
        assert!(c.is_empty());
    }

    #[test]
    fn a_corrupt_cache_starts_afresh() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), b"nonsense").unwrap();
        assert!(ScanCache::load(Some(d.path())).is_empty());
    }
}
