//! What more than one fuzz target checks.

use scour_policy_sdk::Snapshot;

/// A snapshot written as JSON and as YAML reads back unchanged.
pub fn assert_snapshot_round_trips(snapshot: &Snapshot) {
    let json = serde_json::to_string(snapshot).expect("a snapshot serialises to JSON");
    let back: Snapshot = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(&back, snapshot, "JSON round trip");
    let yaml = serde_yaml::to_string(snapshot).expect("a snapshot serialises to YAML");
    let back: Snapshot = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    assert_eq!(&back, snapshot, "YAML round trip");
}
