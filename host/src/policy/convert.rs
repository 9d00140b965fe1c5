//! The host's plain model (from the SDK) to and from the WIT types that
//! `bindgen!` generates.

use scour_policy_sdk as sdk;

use super::loaded::wit;

pub(crate) fn context(c: &sdk::Context) -> wit::Context {
    wit::Context {
        node: c.node.clone(),
        node_labels: c.node_labels.clone(),
        now: c.now,
        mode: match c.mode {
            sdk::Mode::Automatic => wit::Mode::Automatic,
            sdk::Mode::Manual => wit::Mode::Manual,
        },
        imagelist: c.imagelist.clone(),
        exclusions: c.exclusions.clone(),
        image_fs: c.image_fs.map(|f| wit::ImageFs {
            used_bytes: f.used_bytes,
            capacity_bytes: f.capacity_bytes,
        }),
    }
}

/// Converts images for a call. `with_scans` is false for `select`, which
/// always sees `not-scanned`; findings are cut to the policy's `max_findings`.
pub(crate) fn images(images: &[sdk::Image], with_scans: bool, max_findings: usize) -> Vec<wit::Image> {
    images
        .iter()
        .map(|i| wit::Image {
            id: i.id.clone(),
            tags: i.tags.clone(),
            digests: i.digests.clone(),
            size: i.size,
            pinned: i.pinned,
            in_use: i.in_use,
            first_seen: i.first_seen,
            scan: if with_scans {
                scan(&i.scan, max_findings)
            } else {
                wit::ScanOutcome::NotScanned
            },
        })
        .collect()
}

fn scan(s: &sdk::ScanOutcome, max_findings: usize) -> wit::ScanOutcome {
    match s {
        sdk::ScanOutcome::NotScanned => wit::ScanOutcome::NotScanned,
        sdk::ScanOutcome::Failed(reason) => wit::ScanOutcome::Failed(reason.clone()),
        sdk::ScanOutcome::Scanned(r) => wit::ScanOutcome::Scanned(wit::ScanReport {
            os: r.os.as_ref().map(|o| wit::OsInfo {
                family: o.family.clone(),
                name: o.name.clone(),
                eol: o.eol,
            }),
            summary: summary(&r.summary),
            findings: r.findings.iter().take(max_findings).map(finding).collect(),
        }),
    }
}

fn count(c: sdk::SeverityCount) -> wit::SeverityCount {
    wit::SeverityCount {
        total: c.total,
        fixable: c.fixable,
    }
}

fn summary(s: &sdk::VulnSummary) -> wit::VulnSummary {
    wit::VulnSummary {
        unknown: count(s.unknown),
        low: count(s.low),
        medium: count(s.medium),
        high: count(s.high),
        critical: count(s.critical),
    }
}

fn finding(f: &sdk::Finding) -> wit::Finding {
    wit::Finding {
        id: f.id.clone(),
        pkg: f.pkg.clone(),
        installed: f.installed.clone(),
        fixed: f.fixed.clone(),
        severity: match f.severity {
            sdk::Severity::Unknown => wit::Severity::Unknown,
            sdk::Severity::Low => wit::Severity::Low,
            sdk::Severity::Medium => wit::Severity::Medium,
            sdk::Severity::High => wit::Severity::High,
            sdk::Severity::Critical => wit::Severity::Critical,
        },
    }
}

pub(crate) fn action(a: wit::Action) -> sdk::Action {
    match a {
        wit::Action::Keep => sdk::Action::Keep,
        wit::Action::Remove => sdk::Action::Remove,
    }
}

pub(crate) fn info(i: wit::PolicyInfo) -> sdk::PolicyInfo {
    sdk::PolicyInfo {
        name: i.name,
        version: i.version,
        max_findings: i.max_findings,
    }
}
