//! When scour first saw each image, kept in a small node-local file. CRI has
//! no image timestamps, and age policies need them. A missing or corrupt
//! file is recreated with a warning; it never stops a pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "first-seen.json";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// Image id to unix seconds.
    images: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct FirstSeen {
    path: Option<PathBuf>,
    images: BTreeMap<String, u64>,
}

impl FirstSeen {
    /// Loads `<state_dir>/first-seen.json`; without a state dir nothing
    /// persists and every image counts as seen now.
    pub fn load(state_dir: Option<&Path>) -> Self {
        let Some(dir) = state_dir else {
            return Self::default();
        };
        let path = dir.join(FILE);
        let images = crate::fsutil::read_state(&path, "first-seen state", VERSION, |d: &OnDisk| d.version)
            .map(|d| d.images)
            .unwrap_or_default();
        Self {
            path: Some(path),
            images,
        }
    }

    /// Records new ids as seen `now`, forgets ids that are gone, and returns
    /// each id's first-seen time in the order given.
    pub fn update<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>, now: u64) -> Vec<u64> {
        let mut kept = BTreeMap::new();
        let times = ids
            .into_iter()
            .map(|id| {
                let t = self.images.get(id).copied().unwrap_or(now);
                kept.insert(id.to_owned(), t);
                t
            })
            .collect();
        self.images = kept;
        times
    }

    /// Writes the state atomically; failures are logged, not returned.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let data = OnDisk {
            version: VERSION,
            images: self.images.clone(),
        };
        crate::fsutil::write_state(path, "first-seen state", &data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_seen_survives_passes_and_forgets_removed_images() {
        let d = tempfile::tempdir().unwrap();
        let mut s = FirstSeen::load(Some(d.path()));
        assert_eq!(s.update(["a", "b"], 100), vec![100, 100]);
        s.save();
        let mut s = FirstSeen::load(Some(d.path()));
        assert_eq!(s.update(["b", "c"], 200), vec![100, 200]);
        s.save();
        let mut s = FirstSeen::load(Some(d.path()));
        assert_eq!(
            s.update(["a", "b", "c"], 300),
            vec![300, 100, 200],
            "a was forgotten when it left"
        );
    }

    #[test]
    fn a_corrupt_state_file_is_recreated() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), b"{not json").unwrap();
        let mut s = FirstSeen::load(Some(d.path()));
        assert_eq!(s.update(["a"], 5), vec![5]);
        s.save();
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert!(text.contains("\"a\":5"), "{text}");
    }

    #[test]
    fn without_a_state_dir_everything_is_new() {
        let mut s = FirstSeen::load(None);
        assert_eq!(s.update(["a"], 7), vec![7]);
        s.save();
    }
}
