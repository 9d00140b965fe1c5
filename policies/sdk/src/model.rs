//! The policy's view of a node, mirroring `wit/policy.wit`, plus the snapshot
//! file format built on it (`docs/snapshot-format.md`).
//!
//! These plain types are what the host collects and what Rust policies decide
//! on. Snapshots serialise them as JSON or YAML with camelCase keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pattern::{ImageNames, PatternSet};
use crate::severity::Severity;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCount {
    pub total: u32,
    pub fixable: u32,
}

/// Finding counts per severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VulnSummary {
    pub unknown: SeverityCount,
    pub low: SeverityCount,
    pub medium: SeverityCount,
    pub high: SeverityCount,
    pub critical: SeverityCount,
}

impl VulnSummary {
    pub fn get(&self, severity: Severity) -> SeverityCount {
        match severity {
            Severity::Unknown => self.unknown,
            Severity::Low => self.low,
            Severity::Medium => self.medium,
            Severity::High => self.high,
            Severity::Critical => self.critical,
        }
    }

    fn get_mut(&mut self, severity: Severity) -> &mut SeverityCount {
        match severity {
            Severity::Unknown => &mut self.unknown,
            Severity::Low => &mut self.low,
            Severity::Medium => &mut self.medium,
            Severity::High => &mut self.high,
            Severity::Critical => &mut self.critical,
        }
    }

    pub fn from_findings(findings: &[Finding]) -> Self {
        let mut s = Self::default();
        for f in findings {
            let c = s.get_mut(f.severity);
            c.total += 1;
            c.fixable += u32::from(f.fixed.is_some());
        }
        s
    }

    /// Findings of every severity.
    pub fn total(&self) -> u32 {
        Severity::ALL.iter().map(|&s| self.get(s).total).sum()
    }
}

/// One vulnerability in one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    pub id: String,
    pub pkg: String,
    pub installed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    pub severity: Severity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsInfo {
    pub family: String,
    pub name: String,
    #[serde(default)]
    pub eol: bool,
}

/// A completed scan: counts over all findings, and the findings themselves,
/// most severe first (possibly cut short, see [`ScanReport::truncated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub os: Option<OsInfo>,
    pub summary: VulnSummary,
    pub findings: Vec<Finding>,
}

impl ScanReport {
    /// Builds a report from every finding of a scan.
    pub fn new(os: Option<OsInfo>, mut findings: Vec<Finding>) -> Self {
        findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
        let summary = VulnSummary::from_findings(&findings);
        Self { os, summary, findings }
    }

    /// The same report with at most `max` findings; the summary still
    /// counts all of them.
    pub fn truncated(&self, max: usize) -> Self {
        Self {
            os: self.os.clone(),
            summary: self.summary.clone(),
            findings: self.findings.iter().take(max).cloned().collect(),
        }
    }
}

/// What is known about an image's vulnerabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RawScan", try_from = "RawScan")]
pub enum ScanOutcome {
    #[default]
    NotScanned,
    Failed(String),
    Scanned(ScanReport),
}

impl ScanOutcome {
    pub fn status(&self) -> ScanStatus {
        match self {
            ScanOutcome::NotScanned => ScanStatus::NotScanned,
            ScanOutcome::Failed(_) => ScanStatus::Failed,
            ScanOutcome::Scanned(_) => ScanStatus::Scanned,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanStatus {
    NotScanned,
    Failed,
    Scanned,
}

/// The flat snapshot form of a scan outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScan {
    status: ScanStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    os: Option<OsInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vulns: Option<Vec<Finding>>,
}

impl From<ScanOutcome> for RawScan {
    fn from(s: ScanOutcome) -> Self {
        let status = s.status();
        let (reason, os, vulns) = match s {
            ScanOutcome::NotScanned => (None, None, None),
            ScanOutcome::Failed(reason) => (Some(reason), None, None),
            ScanOutcome::Scanned(r) => (None, r.os, Some(r.findings)),
        };
        RawScan {
            status,
            reason,
            os,
            vulns,
        }
    }
}

impl TryFrom<RawScan> for ScanOutcome {
    type Error = String;

    fn try_from(raw: RawScan) -> Result<Self, String> {
        match raw.status {
            ScanStatus::NotScanned => {
                if raw.reason.is_some() || raw.os.is_some() || raw.vulns.is_some() {
                    return Err("scan: `reason`, `os` and `vulns` need status `failed` or `scanned`".into());
                }
                Ok(ScanOutcome::NotScanned)
            }
            ScanStatus::Failed => {
                if raw.os.is_some() || raw.vulns.is_some() {
                    return Err("scan: a failed scan has no `os` or `vulns`".into());
                }
                Ok(ScanOutcome::Failed(raw.reason.unwrap_or_else(|| "unspecified".into())))
            }
            ScanStatus::Scanned => {
                if raw.reason.is_some() {
                    return Err("scan: `reason` belongs to status `failed`".into());
                }
                Ok(ScanOutcome::Scanned(ScanReport::new(
                    raw.os,
                    raw.vulns.unwrap_or_default(),
                )))
            }
        }
    }
}

/// One image on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub id: String,
    pub tags: Vec<String>,
    pub digests: Vec<String>,
    pub size: u64,
    pub pinned: bool,
    pub in_use: bool,
    /// Unix seconds.
    pub first_seen: u64,
    pub scan: ScanOutcome,
    /// The user exclusion pattern matching this image; derived by
    /// [`annotate`], not stored in snapshots.
    #[serde(skip)]
    pub excluded_by: Option<String>,
    /// Manual mode: the ImageList entry naming this image; derived by
    /// [`annotate`], not stored in snapshots.
    #[serde(skip)]
    pub listed_by: Option<String>,
}

/// What the context's patterns say about one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    pub excluded_by: Option<String>,
    pub listed_by: Option<String>,
}

/// Matches every image against the context's exclusions and (in manual
/// mode) ImageList with the SDK matcher. Fails on a pattern that cannot be
/// parsed.
pub fn matches(ctx: &Context, images: &[Image]) -> Result<Vec<Matches>, String> {
    let exclusions = PatternSet::parse(&ctx.exclusions).map_err(|e| format!("exclusions: {e}"))?;
    let imagelist = match ctx.mode {
        Mode::Manual => Some(PatternSet::parse(&ctx.imagelist).map_err(|e| format!("imagelist: {e}"))?),
        Mode::Automatic => None,
    };
    if exclusions.is_empty() && imagelist.as_ref().is_none_or(PatternSet::is_empty) {
        return Ok(vec![Matches::default(); images.len()]);
    }
    let prune = imagelist
        .as_ref()
        .and_then(|l| l.iter().find(|p| p.is_all()).map(|p| p.source().to_owned()));
    Ok(images
        .iter()
        .map(|img| {
            let names = img.names();
            Matches {
                excluded_by: exclusions.first_match(&names).map(|p| p.source().to_owned()),
                listed_by: imagelist
                    .as_ref()
                    .and_then(|l| l.first_named_match(&names).map(|p| p.source().to_owned()))
                    .or_else(|| prune.clone()),
            }
        })
        .collect())
}

/// Fills each image's `excluded_by` and `listed_by`: what the host passes a
/// policy, for calling a policy's logic natively.
pub fn annotate(ctx: &Context, images: &mut [Image]) -> Result<(), String> {
    let found = matches(ctx, images)?;
    for (img, m) in images.iter_mut().zip(found) {
        img.excluded_by = m.excluded_by;
        img.listed_by = m.listed_by;
    }
    Ok(())
}

impl Image {
    /// The image's names, normalised for pattern matching.
    pub fn names(&self) -> ImageNames<'_> {
        ImageNames::new(&self.id, &self.tags, &self.digests)
    }

    /// The first tag, else the first digest, else the id: how to show the
    /// image to a person.
    pub fn display_name(&self) -> &str {
        self.tags.first().or(self.digests.first()).unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Automatic,
    Manual,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Automatic => "automatic",
            Mode::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageFs {
    pub used_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
}

/// Facts about the run that hold for every image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    #[serde(default)]
    pub node: String,
    #[serde(default, with = "labels_as_map")]
    pub node_labels: Vec<(String, String)>,
    /// Unix seconds.
    #[serde(deserialize_with = "unix_seconds::deserialize")]
    pub now: u64,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub imagelist: Vec<String>,
    #[serde(default)]
    pub exclusions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<ImageFs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Remove => "remove",
        }
    }
}

/// A verdict on one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub action: Action,
    pub reason: String,
}

impl Decision {
    pub fn keep(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            action: Action::Keep,
            reason: reason.into(),
        }
    }

    pub fn remove(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            action: Action::Remove,
            reason: reason.into(),
        }
    }
}

/// What a policy says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub max_findings: u32,
}

/// A node's state as a policy sees it: the input of `select` and `decide`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSnapshot")]
pub struct Snapshot {
    pub context: Context,
    pub images: Vec<Image>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    context: Context,
    #[serde(default)]
    images: Vec<RawImage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawImage {
    id: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    digests: Vec<String>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    pinned: bool,
    #[serde(default)]
    in_use: bool,
    #[serde(default, deserialize_with = "unix_seconds::deserialize_option")]
    first_seen: Option<u64>,
    #[serde(default)]
    scan: ScanOutcome,
}

impl TryFrom<RawSnapshot> for Snapshot {
    type Error = String;

    fn try_from(raw: RawSnapshot) -> Result<Self, String> {
        let now = raw.context.now;
        let mut seen = std::collections::HashSet::new();
        let mut images = Vec::with_capacity(raw.images.len());
        for (i, r) in raw.images.into_iter().enumerate() {
            if r.id.is_empty() {
                return Err(format!("images[{i}]: `id` is empty"));
            }
            if !seen.insert(r.id.clone()) {
                return Err(format!("images[{i}]: id {} appears twice", r.id));
            }
            images.push(Image {
                id: r.id,
                tags: r.tags,
                digests: r.digests,
                size: r.size,
                pinned: r.pinned,
                in_use: r.in_use,
                first_seen: r.first_seen.unwrap_or(now),
                scan: r.scan,
                excluded_by: None,
                listed_by: None,
            });
        }
        Ok(Snapshot {
            context: raw.context,
            images,
        })
    }
}

mod labels_as_map {
    use super::*;

    pub fn serialize<S: serde::Serializer>(labels: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(labels.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?.into_iter().collect())
    }
}

/// Times are unix seconds, or RFC 3339 strings such as `2026-01-02T03:04:05Z`.
mod unix_seconds {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Time {
        Seconds(u64),
        Text(String),
    }

    fn convert<E: serde::de::Error>(t: Time) -> Result<u64, E> {
        match t {
            Time::Seconds(s) => Ok(s),
            Time::Text(text) => humantime::parse_rfc3339(&text)
                .map_err(|e| E::custom(format!("time {text:?}: {e}; use unix seconds or RFC 3339")))?
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .map_err(|_| E::custom(format!("time {text:?} is before 1970"))),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        convert(Time::deserialize(d)?)
    }

    pub fn deserialize_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<Time>::deserialize(d)?.map(convert).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_snapshot_takes_defaults() {
        let s: Snapshot = serde_json::from_str(r#"{"context":{"now":100},"images":[{"id":"sha256:a"}]}"#).unwrap();
        let img = &s.images[0];
        assert_eq!(
            (img.size, img.pinned, img.in_use, img.first_seen),
            (0, false, false, 100)
        );
        assert_eq!(img.scan, ScanOutcome::NotScanned);
        assert_eq!(s.context.mode, Mode::Automatic);
    }

    #[test]
    fn scans_round_trip_and_summarise() {
        let json = r#"{"context":{"now":"2026-01-01T00:00:00Z","nodeLabels":{"b":"2","a":"1"}},"images":[
            {"id":"x","scan":{"status":"scanned","os":{"family":"alpine","name":"3.12.0","eol":true},
             "vulns":[{"id":"CVE-1","pkg":"musl","installed":"1","fixed":"2","severity":"high"},
                      {"id":"CVE-2","pkg":"zlib","installed":"1","severity":"CRITICAL"}]}},
            {"id":"y","scan":{"status":"failed","reason":"boom"}}]}"#;
        let s: Snapshot = serde_json::from_str(json).unwrap();
        assert_eq!(s.context.now, 1767225600);
        assert_eq!(s.context.node_labels[0], ("a".into(), "1".into()));
        let ScanOutcome::Scanned(r) = &s.images[0].scan else {
            panic!()
        };
        assert_eq!(r.findings[0].id, "CVE-2", "most severe first");
        assert_eq!(r.summary.high, SeverityCount { total: 1, fixable: 1 });
        assert_eq!(r.summary.critical, SeverityCount { total: 1, fixable: 0 });
        assert_eq!(r.truncated(1).summary.total(), 2);
        let again: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn annotate_names_the_matching_exclusion_and_entry() {
        let mut s: Snapshot = serde_json::from_str(
            r#"{"context":{"now":1,"mode":"manual","imagelist":["*","alpine:3"],"exclusions":["docker.io/library/redis:*"]},
                "images":[{"id":"a","tags":["docker.io/library/alpine:3"]},{"id":"r","tags":["redis:7"]},{"id":"x"}]}"#,
        )
        .unwrap();
        annotate(&s.context, &mut s.images).unwrap();
        assert_eq!(
            s.images[0].listed_by.as_deref(),
            Some("alpine:3"),
            "a named entry wins over *"
        );
        assert_eq!(s.images[1].excluded_by.as_deref(), Some("docker.io/library/redis:*"));
        assert_eq!(s.images[2].listed_by.as_deref(), Some("*"));
        assert_eq!(s.images[2].excluded_by, None);
        s.context.exclusions.push("alp*ne".into());
        assert!(
            annotate(&s.context, &mut s.images)
                .unwrap_err()
                .starts_with("exclusions: entry 1")
        );
        // Derived fields are not part of the snapshot format.
        assert!(!serde_json::to_string(&s).unwrap().contains("excludedBy"));
    }

    #[test]
    fn bad_snapshots_say_what_is_wrong() {
        let cases = [
            (r#"{"context":{"now":1},"images":[{"id":"a","inuse":true}]}"#, "inuse"),
            (r#"{"context":{"now":1},"images":[{"id":"a"},{"id":"a"}]}"#, "twice"),
            (
                r#"{"context":{"now":1},"images":[{"id":"a","scan":{"status":"done"}}]}"#,
                "done",
            ),
            (
                r#"{"context":{"now":1},"images":[{"id":"a","scan":{"status":"not-scanned","reason":"x"}}]}"#,
                "reason",
            ),
            (r#"{"context":{"now":"yesterday"}}"#, "yesterday"),
            (r#"{"context":{}}"#, "now"),
        ];
        for (json, needle) in cases {
            let err = serde_json::from_str::<Snapshot>(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
