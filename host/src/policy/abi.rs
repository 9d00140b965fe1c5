//! Borrowed views of the host's model that lower straight into a policy call.
//!
//! `bindgen!` would have us copy every string into its owned types first;
//! these mirrors of the WIT records lower from the host's data in place.
//! wasmtime type-checks them against the component's export when the
//! function is looked up, so a mismatch with `wit/policy.wit` is an error,
//! never silent.

use scour_policy_sdk as sdk;
use wasmtime::component::{ComponentType, Lower};

use super::loaded::wit;

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ContextArg<'a> {
    node: &'a str,
    #[component(name = "node-labels")]
    node_labels: &'a [(String, String)],
    now: u64,
    mode: ModeArg,
    imagelist: &'a [String],
    exclusions: &'a [String],
    #[component(name = "image-fs")]
    image_fs: Option<ImageFsArg>,
}

#[derive(ComponentType, Lower, Clone, Copy)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum ModeArg {
    #[component(name = "automatic")]
    Automatic,
    #[component(name = "manual")]
    Manual,
}

#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(crate) struct ImageFsArg {
    #[component(name = "used-bytes")]
    used_bytes: u64,
    #[component(name = "capacity-bytes")]
    capacity_bytes: Option<u64>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ImageArg<'a> {
    id: &'a str,
    tags: &'a [String],
    digests: &'a [String],
    size: u64,
    pinned: bool,
    #[component(name = "in-use")]
    in_use: bool,
    #[component(name = "first-seen")]
    first_seen: u64,
    scan: ScanArg<'a>,
    #[component(name = "excluded-by")]
    excluded_by: Option<&'a str>,
    #[component(name = "listed-by")]
    listed_by: Option<&'a str>,
}

#[derive(ComponentType, Lower)]
#[component(variant)]
pub(crate) enum ScanArg<'a> {
    #[component(name = "not-scanned")]
    NotScanned,
    #[component(name = "failed")]
    Failed(&'a str),
    #[component(name = "scanned")]
    Scanned(ReportArg<'a>),
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ReportArg<'a> {
    os: Option<OsArg<'a>>,
    summary: SummaryArg,
    findings: Vec<FindingArg<'a>>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct OsArg<'a> {
    family: &'a str,
    name: &'a str,
    eol: bool,
}

#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(crate) struct CountArg {
    total: u32,
    fixable: u32,
}

#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(crate) struct SummaryArg {
    unknown: CountArg,
    low: CountArg,
    medium: CountArg,
    high: CountArg,
    critical: CountArg,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct FindingArg<'a> {
    id: &'a str,
    pkg: &'a str,
    installed: &'a str,
    fixed: Option<&'a str>,
    severity: SeverityArg,
}

#[derive(ComponentType, Lower, Clone, Copy)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum SeverityArg {
    #[component(name = "unknown")]
    Unknown,
    #[component(name = "low")]
    Low,
    #[component(name = "medium")]
    Medium,
    #[component(name = "high")]
    High,
    #[component(name = "critical")]
    Critical,
}

pub(crate) fn context(c: &sdk::Context) -> ContextArg<'_> {
    ContextArg {
        node: &c.node,
        node_labels: &c.node_labels,
        now: c.now,
        mode: match c.mode {
            sdk::Mode::Automatic => ModeArg::Automatic,
            sdk::Mode::Manual => ModeArg::Manual,
        },
        imagelist: &c.imagelist,
        exclusions: &c.exclusions,
        image_fs: c.image_fs.map(|f| ImageFsArg {
            used_bytes: f.used_bytes,
            capacity_bytes: f.capacity_bytes,
        }),
    }
}

/// Views of the images for a call, with what the host's matcher found for
/// each. `with_scans` is false for `select`, which always sees
/// `not-scanned`; findings are cut to `max_findings`.
pub(crate) fn images<'a>(
    images: &'a [sdk::Image],
    matches: &'a [sdk::Matches],
    with_scans: bool,
    max_findings: usize,
) -> Vec<ImageArg<'a>> {
    images
        .iter()
        .zip(matches)
        .map(|(i, m)| ImageArg {
            id: &i.id,
            tags: &i.tags,
            digests: &i.digests,
            size: i.size,
            pinned: i.pinned,
            in_use: i.in_use,
            first_seen: i.first_seen,
            scan: if with_scans {
                scan(&i.scan, max_findings)
            } else {
                ScanArg::NotScanned
            },
            excluded_by: m.excluded_by.as_deref(),
            listed_by: m.listed_by.as_deref(),
        })
        .collect()
}

fn scan(s: &sdk::ScanOutcome, max_findings: usize) -> ScanArg<'_> {
    match s {
        sdk::ScanOutcome::NotScanned => ScanArg::NotScanned,
        sdk::ScanOutcome::Failed(reason) => ScanArg::Failed(reason),
        sdk::ScanOutcome::Scanned(r) => ScanArg::Scanned(ReportArg {
            os: r.os.as_ref().map(|o| OsArg {
                family: &o.family,
                name: &o.name,
                eol: o.eol,
            }),
            summary: summary(&r.summary),
            findings: r.findings.iter().take(max_findings).map(finding).collect(),
        }),
    }
}

fn count(c: sdk::SeverityCount) -> CountArg {
    CountArg {
        total: c.total,
        fixable: c.fixable,
    }
}

fn summary(s: &sdk::VulnSummary) -> SummaryArg {
    SummaryArg {
        unknown: count(s.unknown),
        low: count(s.low),
        medium: count(s.medium),
        high: count(s.high),
        critical: count(s.critical),
    }
}

fn finding(f: &sdk::Finding) -> FindingArg<'_> {
    FindingArg {
        id: &f.id,
        pkg: &f.pkg,
        installed: &f.installed,
        fixed: f.fixed.as_deref(),
        severity: match f.severity {
            sdk::Severity::Unknown => SeverityArg::Unknown,
            sdk::Severity::Low => SeverityArg::Low,
            sdk::Severity::Medium => SeverityArg::Medium,
            sdk::Severity::High => SeverityArg::High,
            sdk::Severity::Critical => SeverityArg::Critical,
        },
    }
}

pub(crate) fn action(a: wit::Action) -> sdk::Action {
    match a {
        wit::Action::Keep => sdk::Action::Keep,
        wit::Action::Remove => sdk::Action::Remove,
    }
}

/// Name and version come from the guest and end up in every log line and
/// report about it: cut short and made printable.
pub(crate) fn info(i: wit::PolicyInfo) -> sdk::PolicyInfo {
    sdk::PolicyInfo {
        name: crate::text::loggable(i.name, MAX_LABEL_BYTES),
        version: crate::text::loggable(i.version, MAX_LABEL_BYTES),
        max_findings: i.max_findings,
    }
}

const MAX_LABEL_BYTES: usize = 64;
