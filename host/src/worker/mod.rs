//! The node worker: one cleanup pass, collect → scan → decide → guard →
//! remove → report, run once or on an interval.
//!
//! Anything that makes the pass unsafe — an unreadable exclusion list, an
//! unreachable runtime, a policy that fails — stops it before removal, and
//! the report says why. Per-image problems (a failed scan, a refused removal)
//! leave the pass `degraded` but complete.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use scour_policy_sdk::{Action, Context, Image, Mode, ScanOutcome, Snapshot};
use tokio_util::sync::CancellationToken;

use crate::collect::{self, FirstSeen, ImageFsProbe, Inventory};
use crate::cri::CriClient;
use crate::exclusions::ExclusionList;
use crate::guard::Guard;
use crate::policy::{LoadedPolicy, PolicyHandle};
use crate::remove::{self, Outcome};
use crate::report::{ImageAction, ImageResult, PassReport, PolicyRef, RemovalResult, Status};
use crate::scan::{self, ScanOptions, Vulnerable};

/// Where exclusion lists come from.
#[derive(Debug, Clone, Default)]
pub struct ExclusionSources {
    /// User lists: honoured by the policy.
    pub user_files: Vec<PathBuf>,
    pub user_dirs: Vec<PathBuf>,
    /// System lists: enforced by the host, whatever the policy says.
    pub system_files: Vec<PathBuf>,
    pub system_dirs: Vec<PathBuf>,
}

/// Everything a pass needs besides the policy.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub runtime_endpoint: String,
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    pub node_name: String,
    pub node_labels: Vec<(String, String)>,
    pub exclusions: ExclusionSources,
    /// Manual mode when set: the ImageList entries.
    pub imagelist: Option<Vec<String>>,
    pub dry_run: bool,
    pub scan: ScanOptions,
    /// Which scanned images the report counts as vulnerable.
    pub vulnerable: Vulnerable,
    /// Node-local state (first-seen times, scan cache); none persists without it.
    pub state_dir: Option<PathBuf>,
    /// Always protected, besides the runtime's own sandbox image.
    pub sandbox_images: Vec<String>,
    pub remove_concurrency: usize,
    /// Writes the exact policy input here before `decide`.
    pub snapshot_out: Option<PathBuf>,
    /// Where the image filesystem's capacity is measured.
    pub image_fs: ImageFsProbe,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn policy_ref(p: &LoadedPolicy) -> PolicyRef {
    PolicyRef {
        name: p.info().name.clone(),
        version: p.info().version.clone(),
        digest: p.digest().to_owned(),
        origin: p.origin().to_owned(),
    }
}

/// Runs a policy call off the async runtime: calls are CPU-bound.
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    // Only a panic in the host's own call code lands here (a guest's faults
    // are errors, not panics); it is passed on rather than swallowed.
    #[allow(clippy::expect_used)]
    tokio::task::spawn_blocking(f).await.expect("policy call panicked")
}

/// One cleanup pass. Never panics on bad input; the report carries the
/// outcome.
pub async fn run_pass(cfg: &WorkerConfig, handle: &PolicyHandle, cancel: &CancellationToken) -> PassReport {
    let started = Instant::now();
    let now = unix_now();
    let mode = if cfg.imagelist.is_some() {
        Mode::Manual
    } else {
        Mode::Automatic
    };
    // The pass keeps this version even if a hot swap happens meanwhile.
    let policy = handle.current();
    let mut report = PassReport::new(&cfg.node_name, mode, cfg.dry_run, rfc3339(now));
    report.policy = policy_ref(&policy);
    pass(cfg, policy, cancel, now, mode, &mut report).await;
    report.record_phase("total", started.elapsed());
    report.finished_at = rfc3339(unix_now());
    report.peak_rss_bytes = crate::report::peak_rss_bytes();
    report.tally();
    tracing::info!(
        status = report.status.as_str(),
        removed = report.summary.removed,
        would_remove = report.summary.would_remove,
        kept = report.summary.kept,
        failed = report.summary.failed,
        bytes_freed = report.summary.bytes_freed,
        "pass finished"
    );
    report
}

async fn pass(
    cfg: &WorkerConfig,
    policy: Arc<LoadedPolicy>,
    cancel: &CancellationToken,
    now: u64,
    mode: Mode,
    report: &mut PassReport,
) {
    // Exclusions first: without them the pass cannot be safe.
    let user = match ExclusionList::load(&cfg.exclusions.user_files, &cfg.exclusions.user_dirs) {
        Ok(l) => l,
        Err(e) => return fail(report, "collect", e),
    };
    let system = match ExclusionList::load_required(&cfg.exclusions.system_files, &cfg.exclusions.system_dirs) {
        Ok(l) => l,
        Err(e) => return fail(report, "collect", e),
    };

    // Collect.
    let t = Instant::now();
    let cri = match CriClient::connect(&cfg.runtime_endpoint, cfg.connect_timeout, cfg.call_timeout).await {
        Ok(c) => c,
        Err(e) => return fail(report, "collect", e),
    };
    let mut first_seen = FirstSeen::load(cfg.state_dir.as_deref());
    let inventory = match collect::collect(&cri, &mut first_seen, now, &cfg.image_fs).await {
        Ok(i) => i,
        Err(e) => return fail(report, "collect", e),
    };
    first_seen.save();
    report.runtime = Some(inventory.runtime.clone());
    report.image_fs = inventory.image_fs;
    report.summary.images = inventory.images.len();
    report.record_phase("collect", t.elapsed());
    tracing::info!(
        phase = "collect",
        images = inventory.images.len(),
        containers = inventory.containers.len(),
        in_use = inventory.images.iter().filter(|i| i.in_use).count(),
        sandbox_image = inventory.sandbox_image.as_deref().unwrap_or(""),
        image_fs_used = inventory.image_fs.map(|f| f.used_bytes),
        image_fs_capacity = inventory.image_fs.and_then(|f| f.capacity_bytes),
        image_fs_measured_at = inventory.image_fs_measured_at.as_ref().map(|p| p.display().to_string()),
        user_exclusions = user.entries().len(),
        system_exclusions = system.entries().len(),
        "collected"
    );
    let Inventory {
        images,
        sandbox_image,
        image_fs,
        content_store,
        ..
    } = inventory;
    let ctx = Context {
        node: cfg.node_name.clone(),
        node_labels: cfg.node_labels.clone(),
        now,
        mode,
        imagelist: cfg.imagelist.clone().unwrap_or_default(),
        exclusions: user.entries().to_vec(),
        image_fs,
    };

    // Select and scan.
    let t = Instant::now();
    let (selected, ctx, mut images) = {
        let policy = policy.clone();
        off_thread(move || (policy.select(&ctx, &images), ctx, images)).await
    };
    let selected = match selected {
        Ok(s) => s,
        Err(e) => {
            keep_all(report, &images, &format!("not decided: policy select failed: {e}"));
            return fail(report, "scan", format!("policy select failed; nothing removed: {e}"));
        }
    };
    report.summary.selected = selected.len();
    let mut kept = scan::Kept::load(cfg.state_dir.as_deref());
    let run = {
        let wanted: std::collections::HashSet<&str> = selected.iter().map(String::as_str).collect();
        let to_scan: Vec<&Image> = images.iter().filter(|i| wanted.contains(i.id.as_str())).collect();
        scan::scan(&cfg.scan, &to_scan, &mut kept, content_store, cancel).await
    };
    for img in &mut images {
        if let Some(outcome) = run.outcomes.get(&img.id) {
            img.scan = outcome.clone();
        }
    }
    kept.retain_and_save(&images.iter().map(|i| i.id.as_str()).collect());
    report.summary.scanned = images
        .iter()
        .filter(|i| matches!(i.scan, ScanOutcome::Scanned(_)))
        .count();
    report.summary.vulnerable = images.iter().filter(|i| cfg.vulnerable.matches(&i.scan)).count();
    report.summary.scan_failed = run.failed();
    report.summary.scan_cache_hits = run.cache_hits;
    report.summary.trivy_runs = run.trivy_runs;
    report.summary.layers_read_in_place = run.read_in_place;
    report.summary.analyses_reused = run.analyses_reused;
    if !run.failures.is_empty() {
        let causes: Vec<String> = run
            .failures
            .iter()
            .map(|f| format!("{} ({} images)", f.reason, f.images))
            .collect();
        report.degrade(format!("scans failed: {}", causes.join("; ")));
    }
    if let Some((id, why)) = run.corrupt_analyses.iter().next() {
        report.degrade(format!(
            "{} kept image analyses were unreadable and were made again from the images (first: {id}: {why})",
            run.corrupt_analyses.len()
        ));
    }
    report.scan_failures = run.failures;
    report.record_phase("scan", t.elapsed());
    if cancel.is_cancelled() {
        keep_all(report, &images, "not decided: scour is shutting down");
        return report.degrade("interrupted before decide; nothing removed");
    }

    if let Some(path) = &cfg.snapshot_out {
        let snapshot = Snapshot {
            context: ctx.clone(),
            images: images.clone(),
        };
        if let Err(e) = write_snapshot(path, &snapshot) {
            report.degrade(format!("cannot write snapshot {}: {e}", path.display()));
        }
    }

    // Decide.
    let t = Instant::now();
    let (decided, images) = {
        let policy = policy.clone();
        off_thread(move || (policy.decide(&ctx, &images), images)).await
    };
    report.record_phase("decide", t.elapsed());
    let decisions = match decided {
        Ok(set) => set.decisions,
        Err(e) => {
            keep_all(report, &images, &format!("not decided: policy decide failed: {e}"));
            return fail(report, "decide", format!("policy decide failed; nothing removed: {e}"));
        }
    };

    // Guard.
    let mut sandbox = cfg.sandbox_images.clone();
    sandbox.extend(sandbox_image);
    let guard = Arc::new(Guard::new(system.patterns(), &sandbox));
    let mut results = Vec::with_capacity(images.len());
    let mut targets = Vec::new();
    let mut target_reasons = Vec::new();
    for (d, img) in decisions.into_iter().zip(&images) {
        match d.action {
            Action::Keep => results.push(result(img, ImageAction::Kept, d.reason, None)),
            Action::Remove => match guard.check(img) {
                Some(veto) => {
                    let reason = format!("{} (policy said remove: {})", veto.reason(), d.reason);
                    results.push(result(img, ImageAction::Kept, reason, Some(RemovalResult::Vetoed)));
                }
                None => {
                    targets.push(img.clone());
                    target_reasons.push(d.reason);
                }
            },
        }
    }
    tracing::info!(
        phase = "decide",
        policy = %report.policy.name,
        digest = %report.policy.digest,
        to_remove = targets.len(),
        vetoed = results.iter().filter(|r| r.result == Some(RemovalResult::Vetoed)).count(),
        "decided"
    );

    // Remove.
    let t = Instant::now();
    let outcomes = remove::remove(&cri, targets, guard, cfg.dry_run, cfg.remove_concurrency, cancel).await;
    let mut unreachable = 0;
    let removed: Vec<Image> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Removed))
        .map(|(img, _)| img.clone())
        .collect();
    for ((img, outcome), reason) in outcomes.into_iter().zip(target_reasons) {
        let r = match outcome {
            Outcome::Removed => result(&img, ImageAction::Removed, reason, Some(RemovalResult::Removed)),
            Outcome::NotFound => result(
                &img,
                ImageAction::Removed,
                format!("{reason} (already gone)"),
                Some(RemovalResult::NotFound),
            ),
            Outcome::WouldRemove => result(&img, ImageAction::WouldRemove, reason, Some(RemovalResult::WouldRemove)),
            Outcome::Vetoed(veto) => result(
                &img,
                ImageAction::Kept,
                format!(
                    "{}, found just before removal (policy said remove: {reason})",
                    veto.reason()
                ),
                Some(RemovalResult::Vetoed),
            ),
            Outcome::Skipped(why) => result(
                &img,
                ImageAction::Kept,
                format!("not removed: {why}"),
                Some(RemovalResult::Skipped),
            ),
            Outcome::Failed {
                message,
                runtime_unreachable,
            } => {
                unreachable += usize::from(runtime_unreachable);
                tracing::warn!(phase = "remove", image = %img.id, error = %message, "removal failed");
                result(&img, ImageAction::Failed, message, Some(RemovalResult::Error))
            }
        };
        if r.result == Some(RemovalResult::Removed) {
            tracing::info!(phase = "remove", image = %img.id, name = img.display_name(), reason = %r.reason, "removed image");
        }
        results.push(r);
    }
    // A container created between the last check and RemoveImage is not
    // seen before; say so if one was.
    let raced = match remove::used_after_removal(&cri, &removed).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(
                phase = "remove",
                "cannot check for containers created during removal: {e}"
            );
            Vec::new()
        }
    };
    for r in results.iter_mut().filter(|r| raced.contains(&r.id)) {
        tracing::warn!(phase = "remove", image = %r.id, "a container was created on the image while it was being removed");
        r.reason = format!(
            "{}; a container was created on it during removal (CRI has no atomic in-use check): \
             it runs from its snapshot, and the image is pulled again when next needed",
            r.reason
        );
    }
    report.record_phase("remove", t.elapsed());
    let order: std::collections::HashMap<&str, usize> =
        images.iter().enumerate().map(|(i, img)| (img.id.as_str(), i)).collect();
    results.sort_by_key(|r| order.get(r.id.as_str()).copied());
    let failed = results.iter().filter(|r| r.action == ImageAction::Failed).count();
    let skipped = results
        .iter()
        .filter(|r| r.result == Some(RemovalResult::Skipped))
        .count();
    report.images = results;
    if unreachable > 0 {
        report.fail(format!(
            "the container runtime stopped answering during removal; {unreachable} removals failed and \
             {skipped} were not attempted"
        ));
    } else if failed > 0 {
        report.degrade(format!("{failed} removals failed"));
    }
    if !raced.is_empty() {
        report.degrade(format!(
            "{} images were removed while a container was being created on them",
            raced.len()
        ));
    }
    if skipped > 0 && unreachable == 0 {
        report.degrade(format!("interrupted: {skipped} removals were not attempted"));
    }
}

fn result(img: &Image, action: ImageAction, reason: String, result: Option<RemovalResult>) -> ImageResult {
    ImageResult {
        id: img.id.clone(),
        tags: img.tags.clone(),
        size_bytes: img.size,
        action,
        reason,
        result,
    }
}

/// Records every image as kept, for a pass that stops before removal.
fn keep_all(report: &mut PassReport, images: &[Image], reason: &str) {
    report.images = images
        .iter()
        .map(|i| result(i, ImageAction::Kept, reason.to_owned(), None))
        .collect();
}

fn fail(report: &mut PassReport, phase: &'static str, error: impl std::fmt::Display) {
    tracing::error!(phase, error = %error, "pass failed; nothing removed");
    report.fail(error);
}

/// Writes a snapshot as YAML, or JSON for a `.json` path.
pub fn write_snapshot(path: &std::path::Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let text = if path.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(snapshot).map_err(std::io::Error::other)?
    } else {
        serde_yaml::to_string(snapshot).map_err(std::io::Error::other)?
    };
    crate::fsutil::write_atomically(path, text.as_bytes())
}

/// When passes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Once,
    /// A pass now, then one every interval, until SIGTERM.
    Every(Duration),
}

/// Where a finished pass's report goes.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `--report FILE`: the full JSON report.
    pub report: Option<PathBuf>,
    /// Print a table (`Some(false)`) or the JSON report (`Some(true)`) on stdout.
    pub stdout_json: Option<bool>,
    /// The compact summary for the controller, written when the path exists.
    pub termination_log: Option<PathBuf>,
}

impl Outputs {
    pub fn emit(&self, report: &PassReport) {
        if let Some(path) = &self.report
            && let Err(e) = crate::fsutil::write_atomically(path, report.to_json().as_bytes())
        {
            tracing::error!(path = %path.display(), error = %e, "cannot write the report");
        }
        match self.stdout_json {
            // One line off a terminal: a pod's log holds it whole among
            // the log lines, for the controller to read back.
            Some(true) if !std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
                println!("{}", report.to_json_line())
            }
            Some(true) => println!("{}", report.to_json()),
            Some(false) => print!("{}", report.to_table()),
            None => {}
        }
        if let Some(path) = self.termination_log.as_deref().filter(|p| p.exists())
            && let Err(e) = std::fs::write(path, report.termination_summary())
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
        }
    }
}

/// Runs passes on `schedule` until done or cancelled, emitting each report.
/// Returns the last pass's status.
pub async fn run(
    cfg: &WorkerConfig,
    handle: &PolicyHandle,
    schedule: Schedule,
    outputs: &Outputs,
    cancel: &CancellationToken,
) -> Status {
    loop {
        let report = run_pass(cfg, handle, cancel).await;
        outputs.emit(&report);
        let status = report.status;
        drop(report);
        crate::memory::release_free_memory();
        let Schedule::Every(interval) = schedule else {
            return status;
        };
        if cancel.is_cancelled() {
            return status;
        }
        tracing::info!(next_in = %humantime::format_duration(interval), "waiting for the next pass");
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = cancel.cancelled() => return status,
        }
    }
}
