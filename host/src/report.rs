//! Report: what a pass did, as JSON (`--report`), as a table for people, and
//! as a compact summary for the controller (`/dev/termination-log`, under
//! 4 KiB).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use scour_policy_sdk::{ImageFs, Mode};
use serde::{Deserialize, Serialize};

use crate::cri::RuntimeInfo;
use crate::output::{Table, short_id};
use crate::scan::FailureGroup;
use crate::text::prefix_within;
use crate::units::format_bytes;

/// Kubernetes truncates termination messages at 4096 bytes.
pub const TERMINATION_LIMIT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The pass completed and every step succeeded.
    Ok,
    /// The pass completed, but some scans or removals failed.
    Degraded,
    /// The pass could not complete safely; nothing more was removed.
    Failed,
}

impl Status {
    /// The worker's exit code: 0 when the pass completed (even degraded),
    /// 1 when it could not complete safely.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok | Status::Degraded => 0,
            Status::Failed => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Failed => "failed",
        }
    }
}

/// What finally happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageAction {
    Removed,
    Kept,
    WouldRemove,
    Failed,
}

impl ImageAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageAction::Removed => "removed",
            ImageAction::Kept => "kept",
            ImageAction::WouldRemove => "would-remove",
            ImageAction::Failed => "failed",
        }
    }
}

/// What the removal step did with an image the pass meant to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemovalResult {
    Removed,
    /// Already gone when its turn came.
    NotFound,
    /// A guard kept it, found just before removal.
    Vetoed,
    /// Not attempted (the pass was interrupted).
    Skipped,
    Error,
    WouldRemove,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    pub id: String,
    pub tags: Vec<String>,
    pub size_bytes: u64,
    pub action: ImageAction,
    pub reason: String,
    /// For images the pass tried to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RemovalResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub origin: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub images: usize,
    /// Selected by the policy for scanning.
    pub selected: usize,
    /// Scans that completed, fresh or from the cache.
    pub scanned: usize,
    /// Scanned and found vulnerable: a finding at the configured
    /// severities (fixable ones only with `ignoreUnfixed`).
    #[serde(default)]
    pub vulnerable: usize,
    pub scan_failed: usize,
    /// Results reused: image, DB and scanner settings all unchanged.
    pub scan_cache_hits: usize,
    /// Trivy runs that read an image's layers to analyse it.
    pub trivy_runs: usize,
    /// Of `trivyRuns`, those that read the layers in place from
    /// containerd's content store; the others went through its export.
    #[serde(default)]
    pub layers_read_in_place: usize,
    /// Scans matched from a kept analysis, without reading the image
    /// (after a DB update, say).
    #[serde(default)]
    pub analyses_reused: usize,
    pub removed: usize,
    pub would_remove: usize,
    pub kept: usize,
    /// Removals that failed.
    pub failed: usize,
    /// Sum of the removed images' sizes as CRI reports them.
    pub bytes_freed: u64,
}

/// A pass's full report. The worker writes it (`--report`, stdout); the
/// controller reads it back from a worker pod's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    pub status: Status,
    pub node: String,
    pub mode: Mode,
    pub dry_run: bool,
    pub policy: PolicyRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeInfo>,
    pub started_at: String,
    pub finished_at: String,
    pub summary: Summary,
    pub images: Vec<ImageResult>,
    /// Milliseconds per phase: collect, scan, decide, remove, total.
    #[serde(default)]
    pub durations: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scan_failures: Vec<FailureGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<ImageFs>,
    /// The worker's peak resident memory so far (VmHWM), Trivy excluded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    pub errors: Vec<String>,
}

impl PassReport {
    pub fn new(node: &str, mode: Mode, dry_run: bool, started_at: String) -> Self {
        Self {
            status: Status::Ok,
            node: node.to_owned(),
            mode,
            dry_run,
            policy: PolicyRef::default(),
            runtime: None,
            finished_at: started_at.clone(),
            started_at,
            summary: Summary::default(),
            images: Vec::new(),
            durations: BTreeMap::new(),
            scan_failures: Vec::new(),
            image_fs: None,
            peak_rss_bytes: None,
            errors: Vec::new(),
        }
    }

    pub fn record_phase(&mut self, phase: &str, took: Duration) {
        self.durations.insert(phase.to_owned(), took.as_millis() as u64);
    }

    /// Marks the pass failed with a reason; nothing after this point runs.
    pub fn fail(&mut self, error: impl std::fmt::Display) {
        self.status = Status::Failed;
        self.errors.push(error.to_string());
    }

    /// Records a per-image or partial problem; the pass goes on.
    pub fn degrade(&mut self, error: impl std::fmt::Display) {
        if self.status == Status::Ok {
            self.status = Status::Degraded;
        }
        self.errors.push(error.to_string());
    }

    /// Recounts `summary` from `images`.
    pub fn tally(&mut self) {
        let s = &mut self.summary;
        s.removed = 0;
        s.would_remove = 0;
        s.kept = 0;
        s.failed = 0;
        s.bytes_freed = 0;
        for img in &self.images {
            match img.action {
                ImageAction::Removed => {
                    s.removed += 1;
                    if img.result != Some(RemovalResult::NotFound) {
                        s.bytes_freed = s.bytes_freed.saturating_add(img.size_bytes);
                    }
                }
                ImageAction::WouldRemove => s.would_remove += 1,
                ImageAction::Kept => s.kept += 1,
                ImageAction::Failed => s.failed += 1,
            }
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A table of the images and a summary line, for people.
    pub fn to_table(&self) -> String {
        let mut t = Table::new(["IMAGE", "ID", "SIZE", "ACTION", "REASON"]);
        let mut rows: Vec<&ImageResult> = self.images.iter().collect();
        // Removals first: that is what people look for.
        rows.sort_by_key(|r| match r.action {
            ImageAction::Removed | ImageAction::WouldRemove => 0,
            ImageAction::Failed => 1,
            ImageAction::Kept => 2,
        });
        for r in rows {
            let name = r.tags.first().map(String::as_str).unwrap_or("<untagged>");
            t.row([
                name,
                short_id(&r.id),
                &format_bytes(r.size_bytes),
                r.action.as_str(),
                &r.reason,
            ]);
        }
        let s = &self.summary;
        let mut out = t.render();
        out.push_str(&format!(
            "\n{} on {}: {} images, {} removed ({} freed), {} would be removed, {} kept, {} failed; {} scanned ({} from cache, {} from kept analyses, {} failed). Policy {} {} ({}).\n",
            self.status.as_str(),
            self.node,
            s.images,
            s.removed,
            format_bytes(s.bytes_freed),
            s.would_remove,
            s.kept,
            s.failed,
            s.scanned,
            s.scan_cache_hits,
            s.analyses_reused,
            s.scan_failed,
            self.policy.name,
            self.policy.version,
            short_id(&self.policy.digest),
        ));
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        out
    }

    /// The controller's view, at most [`TERMINATION_LIMIT`] bytes of JSON:
    /// counts always, then as many removed and failed images and errors as fit.
    pub fn termination_summary(&self) -> String {
        let entry = |r: &ImageResult| {
            let mut e = ImageEntry::of(r);
            e.reason = prefix_within(&e.reason, 120).to_owned();
            e.size_bytes = 0;
            e
        };
        let removed: Vec<ImageEntry> = self
            .images
            .iter()
            .filter(|r| matches!(r.action, ImageAction::Removed | ImageAction::WouldRemove))
            .map(entry)
            .collect();
        let failed: Vec<ImageEntry> = self
            .images
            .iter()
            .filter(|r| r.action == ImageAction::Failed)
            .map(entry)
            .collect();
        let errors: Vec<String> = self.errors.iter().map(|e| prefix_within(e, 300).to_owned()).collect();
        let mut c = TerminationSummary {
            status: self.status,
            node: self.node.clone(),
            mode: self.mode,
            dry_run: self.dry_run,
            policy: self.policy.digest.clone(),
            summary: self.summary.clone(),
            removed: Vec::new(),
            failed: Vec::new(),
            errors: Vec::new(),
            omitted: removed.len() + failed.len() + errors.len(),
        };
        // Fill within budget, errors first (they explain a failed pass), then
        // failures, then removals; each entry costs its JSON plus a comma.
        let mut size = json_len(&c) + 16;
        for e in errors {
            let n = json_len(&e) + 1;
            if size + n > TERMINATION_LIMIT {
                break;
            }
            size += n;
            c.errors.push(e);
            c.omitted -= 1;
        }
        for (from, to) in [(failed, &mut c.failed), (removed, &mut c.removed)] {
            for e in from {
                let n = json_len(&e) + 1;
                if size + n > TERMINATION_LIMIT {
                    break;
                }
                size += n;
                to.push(e);
                c.omitted -= 1;
            }
        }
        let text = serde_json::to_string(&c).unwrap_or_default();
        prefix_within(&text, TERMINATION_LIMIT).to_owned()
    }
}

/// One image in the termination summary and in a node's kept results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    /// Short image id.
    pub id: String,
    /// The image's first tag, if any.
    pub image: String,
    /// The policy's reason; for a failed removal, the error.
    pub reason: String,
    /// The image's size as the runtime reports it.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub size_bytes: u64,
}

impl ImageEntry {
    pub fn of(r: &ImageResult) -> Self {
        Self {
            id: short_id(&r.id).to_owned(),
            image: r.tags.first().cloned().unwrap_or_default(),
            reason: r.reason.clone(),
            size_bytes: r.size_bytes,
        }
    }
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// What a worker pod tells the controller through its termination message
/// (at most [`TERMINATION_LIMIT`] bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminationSummary {
    pub status: Status,
    pub node: String,
    pub mode: Mode,
    pub dry_run: bool,
    /// The policy's sha256.
    pub policy: String,
    pub summary: Summary,
    pub removed: Vec<ImageEntry>,
    pub failed: Vec<ImageEntry>,
    pub errors: Vec<String>,
    /// Entries left out to fit the size limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

impl TerminationSummary {
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a scour termination summary: {e}"))
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The length of a value's JSON, for budgeting.
fn json_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_string(value).map(|t| t.len()).unwrap_or(0)
}

/// This process's peak resident set size, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    peak_rss_bytes_of("self")
}

/// A process's peak resident set size (VmHWM); `process` is a PID or `self`.
pub fn peak_rss_bytes_of(process: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: usize) -> PassReport {
        let mut r = PassReport::new("node-a", Mode::Automatic, false, "2026-01-01T00:00:00Z".into());
        for i in 0..n {
            r.images.push(ImageResult {
                id: format!("sha256:{i:064x}"),
                tags: vec![format!("registry.example.com/team/app-{i}:v1.2.3")],
                size_bytes: 1000,
                action: if i % 3 == 0 {
                    ImageAction::Kept
                } else {
                    ImageAction::Removed
                },
                reason: "vulnerable: 2 HIGH, 1 CRITICAL; eol: alpine 3.12.0".into(),
                result: None,
            });
        }
        r.summary.images = n;
        r.tally();
        r
    }

    #[test]
    fn tally_counts_actions_and_bytes() {
        let r = report(6);
        assert_eq!((r.summary.removed, r.summary.kept, r.summary.bytes_freed), (4, 2, 4000));
    }

    #[test]
    fn the_termination_summary_fits_and_keeps_counts() {
        for n in [0, 5, 200, 5000] {
            let mut r = report(n);
            r.degrade("x".repeat(1000));
            let s = r.termination_summary();
            assert!(s.len() <= TERMINATION_LIMIT, "{n}: {} bytes", s.len());
            let v = TerminationSummary::parse(&s).unwrap();
            assert_eq!(v.summary, r.summary);
            assert_eq!(v.status, Status::Degraded);
            if n == 5000 {
                assert!(v.omitted > 0);
                assert!(!v.errors.is_empty(), "errors are kept longest");
            }
        }
    }

    #[test]
    fn the_table_lists_removals_first() {
        let t = report(3).to_table();
        let first = t.lines().nth(1).unwrap();
        assert!(first.contains("removed"), "{t}");
        assert!(t.contains("ok on node-a: 3 images, 2 removed"), "{t}");
    }
}
