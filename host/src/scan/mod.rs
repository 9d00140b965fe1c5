//! Scan: run Trivy on the images the policy selected, with bounded
//! concurrency, a per-image timeout and a total deadline, keeping what can
//! be kept between passes. Each image is analysed once (its OS and packages,
//! from its layers: the slow part) into an SBOM kept per image id; every
//! pass matches the kept analysis against the current DB, and a result under
//! an unchanged DB and settings is reused outright.
//!
//! Any failure — a missing binary, a crash, a hang, garbage output, a missing
//! or corrupt DB — becomes `failed(reason)` for the images it affects, and is
//! logged once per cause rather than once per image. A failed scan is a fact
//! for the policy, never a reason by itself to remove anything.

mod analysis;
mod cache;
pub mod limits;
pub mod trivy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use scour_policy_sdk::{Image, ScanOutcome, Severity};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use analysis::{AnalysisStore, Form};
use cache::ScanCache;
pub use trivy::{RunError, TrivyInfo, TrivyOptions};

/// Limits for a scan step.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub trivy: TrivyOptions,
    /// Per Trivy run.
    pub per_image_timeout: Duration,
    /// For the whole step; images not started by then fail.
    pub total_timeout: Duration,
    /// Trivy processes at once.
    pub concurrency: usize,
}

/// Which scanned images count as vulnerable, for the report and metrics:
/// a finding at one of `severities` (only fixable ones with `fixable_only`),
/// the config's `vulnerabilities.severities` and `ignoreUnfixed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vulnerable {
    pub severities: Vec<Severity>,
    pub fixable_only: bool,
}

impl Default for Vulnerable {
    /// Eraser's defaults: every known severity, fixed or not.
    fn default() -> Self {
        Self {
            severities: vec![Severity::Low, Severity::Medium, Severity::High, Severity::Critical],
            fixable_only: false,
        }
    }
}

impl Vulnerable {
    pub fn matches(&self, outcome: &ScanOutcome) -> bool {
        let ScanOutcome::Scanned(report) = outcome else {
            return false;
        };
        self.severities.iter().any(|&s| {
            let c = report.summary.get(s);
            if self.fixable_only { c.fixable > 0 } else { c.total > 0 }
        })
    }
}

/// One cause of failure and how many images it hit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureGroup {
    pub reason: String,
    pub images: usize,
}

/// What the scan step did.
#[derive(Debug, Default)]
pub struct ScanRun {
    pub outcomes: HashMap<String, ScanOutcome>,
    /// Trivy runs that read an image to analyse it.
    pub trivy_runs: usize,
    /// Kept analyses matched against the DB without reading the image.
    pub analyses_reused: usize,
    /// Kept analyses found unreadable (corrupt, truncated, replaced) and
    /// made again from their images: why, per image id.
    pub corrupt_analyses: BTreeMap<String, String>,
    pub cache_hits: usize,
    pub failures: Vec<FailureGroup>,
    pub trivy: Option<TrivyInfo>,
}

impl ScanRun {
    pub fn failed(&self) -> usize {
        self.outcomes
            .values()
            .filter(|o| matches!(o, ScanOutcome::Failed(_)))
            .count()
    }
}

/// What scanning keeps between passes under the worker's state dir: the
/// results (valid under one DB and one set of scanner settings) and the
/// image analyses (valid across DB updates).
#[derive(Debug)]
pub struct Kept {
    state_dir: Option<PathBuf>,
    results: ScanCache,
    analyses: Option<std::sync::Arc<AnalysisStore>>,
}

impl Kept {
    pub fn load(state_dir: Option<&Path>) -> Self {
        Self {
            state_dir: state_dir.map(Path::to_owned),
            results: ScanCache::load(state_dir),
            analyses: None,
        }
    }

    /// Forgets images no longer on the node, and saves the results.
    pub fn retain_and_save(&mut self, present: &HashSet<&str>) {
        self.results.retain(present);
        self.results.save();
        if let Some(store) = &self.analyses {
            store.retain(present);
            let (count, bytes) = store.usage();
            tracing::debug!(phase = "scan", analyses = count, bytes, "image analyses kept");
        }
    }

    /// The store for analyses made under `key`, opened once per pass.
    fn analyses(&mut self, key: &str) -> Result<std::sync::Arc<AnalysisStore>, String> {
        if let Some(store) = &self.analyses {
            return Ok(store.clone());
        }
        let store = AnalysisStore::open(self.state_dir.as_deref(), key).map_err(|e| {
            let dir = self
                .state_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or("a temp dir".into());
            format!("cannot keep image analyses under {dir}: {e}")
        })?;
        let store = std::sync::Arc::new(store);
        self.analyses = Some(store.clone());
        Ok(store)
    }
}

/// Scans `images` (the policy's selection). Never fails as a whole: every
/// image comes back with an outcome.
pub async fn scan(opts: &ScanOptions, images: &[&Image], kept: &mut Kept, cancel: &CancellationToken) -> ScanRun {
    let mut run = ScanRun::default();
    if images.is_empty() {
        return run;
    }
    let deadline = Instant::now() + opts.total_timeout;
    let info = match prepare(opts).await {
        Ok(info) => info,
        Err(reason) => {
            tracing::error!(phase = "scan", images = images.len(), %reason, "no image can be scanned");
            for img in images {
                run.outcomes.insert(img.id.clone(), ScanOutcome::Failed(reason.clone()));
            }
            run.failures.push(FailureGroup {
                reason,
                images: images.len(),
            });
            return run;
        }
    };
    let key = opts.trivy.result_key(&info);
    let analysis_key = opts.trivy.analysis_key(&info);
    run.trivy = Some(info);

    let mut pending = Vec::new();
    for img in images {
        match kept.results.get(&key, &img.id) {
            Some(hit) => {
                run.cache_hits += 1;
                run.outcomes.insert(img.id.clone(), hit.clone());
            }
            None => pending.push(*img),
        }
    }
    if pending.is_empty() {
        tracing::info!(
            phase = "scan",
            selected = images.len(),
            cached = run.cache_hits,
            "nothing to scan"
        );
        return run;
    }
    let store = match kept.analyses(&analysis_key) {
        Ok(store) => store,
        Err(reason) => {
            tracing::error!(phase = "scan", images = pending.len(), %reason, "no image can be scanned");
            for img in &pending {
                run.outcomes.insert(img.id.clone(), ScanOutcome::Failed(reason.clone()));
            }
            run.failures.push(FailureGroup {
                reason,
                images: pending.len(),
            });
            return run;
        }
    };
    let analysed = pending.iter().filter(|img| store.has(&img.id)).count();
    tracing::info!(
        phase = "scan",
        selected = images.len(),
        cached = run.cache_hits,
        to_scan = pending.len(),
        analysed,
        concurrency = opts.concurrency,
        "scanning"
    );

    let finished = crate::bounded::map_bounded(pending, opts.concurrency, |img| {
        let refs = trivy::scan_refs(&img.digests, &img.tags);
        let (id, trivy, cancel, store) = (img.id.clone(), opts.trivy.clone(), cancel.clone(), store.clone());
        let per_image = opts.per_image_timeout;
        async move {
            let outcome = tokio::select! {
                o = scan_one(&trivy, &store, &id, &refs, per_image, deadline) => o,
                () = cancel.cancelled() => Attempt::failed("scan interrupted: scour is shutting down"),
            };
            (id, outcome)
        }
    })
    .await;
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (id, attempt) in finished {
        run.trivy_runs += attempt.runs;
        run.analyses_reused += usize::from(attempt.reused);
        if let Some(why) = attempt.corrupt {
            run.corrupt_analyses.insert(id.clone(), why);
        }
        if let ScanOutcome::Failed(_) = &attempt.outcome {
            *groups.entry(attempt.cause).or_default() += 1;
        } else {
            kept.results.put(&key, &id, &attempt.outcome);
        }
        run.outcomes.insert(id, attempt.outcome);
    }
    for (reason, count) in groups {
        tracing::warn!(phase = "scan", images = count, %reason, "scans failed");
        run.failures.push(FailureGroup { reason, images: count });
    }
    run
}

/// Checks the binary and the DB once, and fetches the DB when allowed.
async fn prepare(opts: &ScanOptions) -> Result<TrivyInfo, String> {
    let probe = Duration::from_secs(60);
    let info = opts.trivy.info(probe).await.map_err(|e| e.to_string())?;
    if info.db_updated_at.is_some() {
        return Ok(info);
    }
    if let Some(server) = &opts.trivy.server {
        return Err(format!("the trivy server at {server} has no vulnerability DB yet"));
    }
    let where_ = opts
        .trivy
        .cache_dir
        .as_ref()
        .map(|d| format!(" in {}", d.join("db").display()))
        .unwrap_or_default();
    if opts.trivy.offline {
        return Err(format!(
            "no Trivy vulnerability DB{where_}, and --trivy-offline forbids downloading one"
        ));
    }
    tracing::info!(phase = "scan", "downloading the Trivy vulnerability DB");
    opts.trivy
        .download_db(opts.total_timeout.min(Duration::from_secs(900)))
        .await
        .map_err(|e| format!("no Trivy vulnerability DB{where_}, and downloading it failed: {e}"))?;
    let info = opts.trivy.info(probe).await.map_err(|e| e.to_string())?;
    if info.db_updated_at.is_none() {
        return Err(format!("no Trivy vulnerability DB{where_} after downloading it"));
    }
    Ok(info)
}

struct Attempt {
    outcome: ScanOutcome,
    /// The reason with image-specific parts removed, to group failures.
    cause: String,
    /// Trivy runs that read the image.
    runs: usize,
    /// Matched from a kept analysis, without reading the image.
    reused: bool,
    /// The kept analysis was unreadable, and why.
    corrupt: Option<String>,
}

impl Attempt {
    fn failed(reason: &str) -> Self {
        Self::failed_after(reason.to_owned(), reason.to_owned(), 0)
    }

    fn failed_after(reason: String, cause: String, runs: usize) -> Self {
        Self {
            outcome: ScanOutcome::Failed(reason),
            cause,
            runs,
            reused: false,
            corrupt: None,
        }
    }

    fn scanned(report: scour_policy_sdk::ScanReport, runs: usize, reused: bool) -> Self {
        Self {
            outcome: ScanOutcome::Scanned(report),
            cause: String::new(),
            runs,
            reused,
            corrupt: None,
        }
    }
}

const DEADLINE_PASSED: &str = "the scan step's total deadline passed before this image was scanned";

/// Matches the image's kept analysis against the DB. Without a usable one,
/// scans the image itself (reading its layers, by each of its references in
/// turn) and keeps the analysis that scan gives. A failed match keeps the
/// analysis: the DB or Trivy failed, not the image's packages.
async fn scan_one(
    trivy: &TrivyOptions,
    store: &AnalysisStore,
    id: &str,
    refs: &[String],
    per_image: Duration,
    deadline: Instant,
) -> Attempt {
    let (Some(sbom), Some(report)) = (store.path(id, Form::Sbom), store.path(id, Form::Report)) else {
        return Attempt::failed("the image id is not a digest; it cannot be scanned");
    };
    let mut corrupt = None;
    for (path, form) in [(&sbom, Form::Sbom), (&report, Form::Report)] {
        if let analysis::Check::Unusable(why) = analysis::check(path, form) {
            tracing::warn!(phase = "scan", image = id, %why, "a kept image analysis is unusable; analysing the image again");
            store.discard(id, form);
            corrupt = Some(why);
        }
    }
    // Each Trivy run gets the per-image timeout, within the step's deadline.
    let budget = || per_image.min(deadline.saturating_duration_since(Instant::now()));
    let mut attempt = if sbom.is_file() || report.is_file() && to_sbom(trivy, store, id, &report, &budget).await {
        rematch(trivy, id, &sbom, &budget).await
    } else {
        analyse(trivy, store, id, refs, &budget).await
    };
    attempt.corrupt = corrupt;
    attempt
}

/// Turns a kept report into a kept SBOM; false (and the report dropped, so
/// the image is scanned again) if Trivy cannot.
async fn to_sbom(
    trivy: &TrivyOptions,
    store: &AnalysisStore,
    id: &str,
    report: &Path,
    budget: &impl Fn() -> Duration,
) -> bool {
    let Some(scratch) = store.scratch(id) else { return false };
    let made = match trivy.to_sbom(report, &scratch, budget()).await {
        Ok(()) => match analysis::check(&scratch, Form::Sbom) {
            analysis::Check::Usable => store.keep(id, Form::Sbom, &scratch).map_err(|e| e.to_string()),
            analysis::Check::Unusable(why) | analysis::Check::Missing(why) => Err(why),
        },
        Err(e) => Err(e.to_string()),
    };
    match made {
        Ok(()) => true,
        Err(why) => {
            let _ = std::fs::remove_file(&scratch);
            tracing::warn!(phase = "scan", image = id, %why, "cannot turn a kept analysis into an SBOM; scanning the image again");
            store.discard(id, Form::Report);
            false
        }
    }
}

/// Matches the kept SBOM against the DB, once more if that fails for a
/// moment: a Trivy server answers "failed scan" when two clients put the
/// same analysis at once (images with the same packages).
async fn rematch(trivy: &TrivyOptions, id: &str, sbom: &Path, budget: &impl Fn() -> Duration) -> Attempt {
    if budget().is_zero() {
        return Attempt::failed_after(DEADLINE_PASSED.to_owned(), DEADLINE_PASSED.to_owned(), 0);
    }
    let mut result = trivy.match_analysis(sbom, budget()).await;
    if let Err(e) = &result
        && !matches!(e, RunError::NotFound(_) | RunError::TimedOut(_))
        && !budget().is_zero()
    {
        tracing::debug!(phase = "scan", image = id, error = %e, "matching failed; trying once more");
        result = trivy.match_analysis(sbom, budget()).await;
    }
    match result {
        Ok(report) => Attempt::scanned(report, 0, true),
        Err(e) => {
            let reason = e.to_string();
            Attempt::failed_after(reason.clone(), reason, 0)
        }
    }
}

/// Scans the image from its layers, trying each reference in turn, and
/// keeps its analysis.
async fn analyse(
    trivy: &TrivyOptions,
    store: &AnalysisStore,
    id: &str,
    refs: &[String],
    budget: &impl Fn() -> Duration,
) -> Attempt {
    if refs.is_empty() {
        return Attempt::failed("the image has no tag or digest to scan it by");
    }
    let mut last = (String::new(), String::new());
    let mut runs = 0;
    for r in refs {
        let remaining = budget();
        if remaining.is_zero() {
            return Attempt::failed_after(DEADLINE_PASSED.to_owned(), DEADLINE_PASSED.to_owned(), runs);
        }
        runs += 1;
        match trivy.analyse(r, remaining).await {
            Ok((report, analysis)) => {
                keep_report(store, id, &analysis);
                return Attempt::scanned(report, runs, false);
            }
            Err(e) => {
                let reason = e.to_string();
                let cause = reason.replace(r.as_str(), "<image>");
                let fatal = matches!(e, RunError::NotFound(_));
                last = (reason, cause);
                if fatal {
                    break;
                }
            }
        }
    }
    Attempt::failed_after(last.0, last.1, runs)
}

/// Keeps a fresh analysis; one that cannot be written is only a warning,
/// since the scan itself succeeded and the next pass scans again.
fn keep_report(store: &AnalysisStore, id: &str, analysis: &[u8]) {
    let Some(scratch) = store.scratch(id) else { return };
    let kept = std::fs::write(&scratch, analysis).and_then(|()| store.keep(id, Form::Report, &scratch));
    if let Err(e) = kept {
        let _ = std::fs::remove_file(&scratch);
        tracing::warn!(phase = "scan", image = id, error = %e, "cannot keep the image's analysis");
    }
}
