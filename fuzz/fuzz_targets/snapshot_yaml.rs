//! Node snapshots as `scour policy eval` reads them (`read_snapshot`: JSON
//! for `*.json`, YAML otherwise, into `scour_policy_sdk::Snapshot`), then
//! matched and decided by the default policy natively.
//!
//! The input is read both ways. A snapshot that loads must survive the
//! format (written as JSON and as YAML, read back unchanged), and matching
//! and the default policy must not panic on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scour_policy_sdk::{Snapshot, annotate};

fn check(snapshot: Snapshot) {
    scour_fuzz::assert_snapshot_round_trips(&snapshot);

    let Snapshot { context, mut images } = snapshot;
    if annotate(&context, &mut images).is_err() {
        return;
    }
    for img in &images {
        let _ = img.display_name();
    }
    let selected = scour_default_policy::select("", &context, &images).expect("default settings are valid");
    assert!(selected.iter().all(|id| images.iter().any(|i| &i.id == id)));
    let decisions = scour_default_policy::decide("", &context, &images).expect("default settings are valid");
    assert_eq!(decisions.len(), images.len());
    for (d, img) in decisions.iter().zip(&images) {
        assert_eq!(d.id, img.id);
        if img.in_use || img.pinned || img.excluded_by.is_some() {
            assert_eq!(d.action, scour_policy_sdk::Action::Keep, "{img:?}: {d:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(s) = serde_yaml::from_str::<Snapshot>(text) {
        check(s);
    }
    if let Ok(s) = serde_json::from_str::<Snapshot>(text) {
        check(s);
    }
});
