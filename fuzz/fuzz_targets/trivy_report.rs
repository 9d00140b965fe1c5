//! Trivy's JSON report (`trivy image --format json`) as the worker reads it
//! (`scour::scan::trivy::parse_report`).
//!
//! Besides "never panics", a report that parses must be consistent (findings
//! most severe first, a summary that counts them, `truncated` keeping the
//! summary) and survive the snapshot format (`--snapshot-out`, golden cases)
//! in JSON and YAML unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scour::scan::trivy::parse_report;
use scour_policy_sdk::{Context, Image, ScanOutcome, Snapshot, VulnSummary};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = parse_report(data) else { return };
    assert_eq!(report.summary, VulnSummary::from_findings(&report.findings));
    assert_eq!(report.summary.total() as usize, report.findings.len());
    assert!(
        report.findings.windows(2).all(|w| w[0].severity >= w[1].severity),
        "findings are not most severe first"
    );
    assert!(report.findings.iter().all(|f| f.fixed.as_deref() != Some("")));
    for max in [0, 1, report.findings.len()] {
        let t = report.truncated(max);
        assert_eq!(t.summary, report.summary);
        assert_eq!(t.findings.len(), max.min(report.findings.len()));
    }

    let snapshot = Snapshot {
        context: Context {
            now: 1,
            ..Context::default()
        },
        images: vec![Image {
            id: "sha256:1".into(),
            first_seen: 1,
            scan: ScanOutcome::Scanned(report),
            ..Image::default()
        }],
    };
    scour_fuzz::assert_snapshot_round_trips(&snapshot);
});
