//! Scan: run Trivy on the images the policy selected, with bounded
//! concurrency, a per-image timeout and a total deadline, keeping what can
//! be kept between passes. Each image is analysed once (its OS and packages,
//! from its layers: the slow part) into an SBOM kept per image id; every
//! pass matches the kept analysis against the current DB, and a result under
//! an unchanged DB and settings is reused outright. An image's layers are
//! read in place from containerd's content store when this process can see
//! it ([`content_store`]), through containerd's export otherwise.
//!
//! Any failure — a missing binary, a crash, a hang, garbage output, a missing
//! or corrupt DB — becomes `failed(reason)` for the images it affects, and is
//! logged once per cause rather than once per image. A failed scan is a fact
//! for the policy, never a reason by itself to remove anything.

mod analysis;
mod cache;
pub mod content_store;
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
use content_store::{ContentStore, Layouts};
pub use trivy::{ImageSource, RunError, TrivyInfo, TrivyOptions};

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
    /// Where Trivy reads image layers from.
    pub read_layers: ReadLayers,
}

/// Where Trivy reads an image's layers from (`--read-layers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReadLayers {
    /// In place from containerd's content store when this process can see
    /// it, through the export for an image it cannot.
    #[default]
    InPlace,
    /// Always through containerd's export API (`--image-src containerd`),
    /// as Eraser does: a temp copy of each image.
    Export,
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
    /// Of those, the runs that read its layers in place.
    pub read_in_place: usize,
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

    /// Forgets images no longer on the node, and saves the results. The
    /// analyses are pruned too when this pass scanned nothing (all results
    /// kept, or nothing selected): an image removed by someone else
    /// meanwhile must not leave its analysis behind.
    pub fn retain_and_save(&mut self, present: &HashSet<&str>) {
        self.results.retain(present);
        self.results.save();
        let store = self
            .analyses
            .clone()
            .or_else(|| AnalysisStore::existing(self.state_dir.as_deref()).map(std::sync::Arc::new));
        if let Some(store) = store {
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

/// Scans `images` (the policy's selection), reading layers from `content`
/// where it can (`Err`: why there is no content store to read). Never fails as a whole: every
/// image comes back with an outcome.
pub async fn scan(
    opts: &ScanOptions,
    images: &[&Image],
    kept: &mut Kept,
    content: Result<ContentStore, String>,
    cancel: &CancellationToken,
) -> ScanRun {
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
    let layouts = layouts(opts.read_layers, content, analysed < pending.len()).map(std::sync::Arc::new);
    tracing::info!(
        phase = "scan",
        selected = images.len(),
        cached = run.cache_hits,
        to_scan = pending.len(),
        analysed,
        concurrency = opts.concurrency,
        layers_from = layouts
            .as_ref()
            .map(|l| l.store().blobs().display().to_string())
            .unwrap_or("containerd's export".into()),
        "scanning"
    );

    let finished = crate::bounded::map_bounded(pending, opts.concurrency, |img| {
        let (trivy, cancel, store, layouts) = (opts.trivy.clone(), cancel.clone(), store.clone(), layouts.clone());
        let (img, per_image) = (img.clone(), opts.per_image_timeout);
        async move {
            let outcome = tokio::select! {
                o = scan_one(&trivy, &store, layouts.as_deref(), &img, per_image, deadline) => o,
                () = cancel.cancelled() => Attempt::failed("scan interrupted: scour is shutting down"),
            };
            (img.id.clone(), outcome)
        }
    })
    .await;
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (id, attempt) in finished {
        run.trivy_runs += attempt.runs;
        run.read_in_place += usize::from(attempt.in_place);
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

/// The pass's OCI layouts over the content store, when layers are to be
/// read in place and some image needs reading; why not is logged once.
fn layouts(read: ReadLayers, store: Result<ContentStore, String>, needed: bool) -> Option<Layouts> {
    if read == ReadLayers::Export || !needed {
        return None;
    }
    let made =
        store.and_then(|store| Layouts::new(store).map_err(|e| format!("cannot make a temp dir for OCI layouts: {e}")));
    match made {
        Ok(layouts) => Some(layouts),
        Err(why) => {
            tracing::info!(phase = "scan", %why, "image layers are read through containerd's export");
            None
        }
    }
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
    /// The run that read the image read its layers in place.
    in_place: bool,
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
            in_place: false,
        }
    }

    fn scanned(report: scour_policy_sdk::ScanReport, runs: usize, reused: bool) -> Self {
        Self {
            outcome: ScanOutcome::Scanned(report),
            cause: String::new(),
            runs,
            reused,
            corrupt: None,
            in_place: false,
        }
    }
}

/// Images at least this large (as CRI reports them) get their SBOM in the
/// pass that analyses them: `trivy convert` (about 40 ms) is then a few
/// percent of reading the image, where for a 16 KiB image it is as much
/// again as the whole scan.
const SBOM_AT_ANALYSIS_MIN_BYTES: u64 = 16 << 20;

const DEADLINE_PASSED: &str = "the scan step's total deadline passed before this image was scanned";

/// Matches the image's kept analysis against the DB. Without a usable one,
/// scans the image itself (reading its layers in place, or through the
/// export by each of its references in turn) and keeps the analysis that
/// scan gives. A failed match keeps the analysis: the DB or Trivy failed,
/// not the image's packages.
async fn scan_one(
    trivy: &TrivyOptions,
    store: &AnalysisStore,
    layouts: Option<&Layouts>,
    img: &Image,
    per_image: Duration,
    deadline: Instant,
) -> Attempt {
    let id = img.id.as_str();
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
        analyse(trivy, store, layouts, img, &budget).await
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
    match make_sbom(trivy, store, id, report, budget).await {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(phase = "scan", image = id, %why, "cannot turn a kept analysis into an SBOM; scanning the image again");
            store.discard(id, Form::Report);
            false
        }
    }
}

/// `trivy convert` of the kept report of `id` into its kept SBOM, which
/// then replaces the report.
async fn make_sbom(
    trivy: &TrivyOptions,
    store: &AnalysisStore,
    id: &str,
    report: &Path,
    budget: &impl Fn() -> Duration,
) -> Result<(), String> {
    let scratch = store.scratch(id).ok_or("the image id is not a digest")?;
    let made = match trivy.to_sbom(report, &scratch, budget()).await {
        Ok(()) => match analysis::check(&scratch, Form::Sbom) {
            analysis::Check::Usable => store.keep(id, Form::Sbom, &scratch).map_err(|e| e.to_string()),
            analysis::Check::Unusable(why) | analysis::Check::Missing(why) => Err(why),
        },
        Err(e) => Err(e.to_string()),
    };
    if made.is_err() {
        let _ = std::fs::remove_file(&scratch);
    }
    made
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

/// Scans the image from its layers, in place if it can and then through
/// the export by each reference in turn, and keeps its analysis.
async fn analyse(
    trivy: &TrivyOptions,
    store: &AnalysisStore,
    layouts: Option<&Layouts>,
    img: &Image,
    budget: &impl Fn() -> Duration,
) -> Attempt {
    let id = img.id.as_str();
    let refs = trivy::scan_refs(&img.digests, &img.tags);
    let layout = layouts.and_then(|l| {
        l.layout(img)
            .inspect_err(
                |why| tracing::debug!(phase = "scan", image = id, %why, "reading the image through the export"),
            )
            .ok()
    });
    let sources: Vec<ImageSource> = layout
        .as_deref()
        .map(ImageSource::Layout)
        .into_iter()
        .chain(refs.iter().map(|r| ImageSource::Export(r)))
        .collect();
    if sources.is_empty() {
        return Attempt::failed("the image has no tag or digest to scan it by");
    }
    let mut last = (String::new(), String::new());
    let mut runs = 0;
    for source in &sources {
        let remaining = budget();
        if remaining.is_zero() {
            return Attempt::failed_after(DEADLINE_PASSED.to_owned(), DEADLINE_PASSED.to_owned(), runs);
        }
        runs += 1;
        match trivy.analyse(source, remaining).await {
            Ok((report, analysis)) => {
                // A large image gets its SBOM now, so that a pass after a
                // DB update only matches it; a small one's would double its
                // first scan, and is made at its first match instead.
                if let Some(kept) = keep_report(store, id, &analysis)
                    && img.size >= SBOM_AT_ANALYSIS_MIN_BYTES
                    && let Err(why) = make_sbom(trivy, store, id, &kept, budget).await
                {
                    tracing::debug!(phase = "scan", image = id, %why, "analysis kept as a report; it becomes an SBOM at its first match");
                }
                let mut attempt = Attempt::scanned(report, runs, false);
                attempt.in_place = matches!(source, ImageSource::Layout(_));
                return attempt;
            }
            Err(e) => {
                let reason = e.to_string();
                let cause = reason.replace(&source.to_string(), "<image>");
                if let ImageSource::Layout(dir) = source {
                    tracing::warn!(phase = "scan", image = id, layout = %dir.display(), %reason, "reading the layers in place failed; trying containerd's export");
                }
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

/// Keeps a fresh analysis, and says where; one that cannot be written is
/// only a warning, since the scan itself succeeded and the next pass scans
/// again.
fn keep_report(store: &AnalysisStore, id: &str, analysis: &[u8]) -> Option<PathBuf> {
    let scratch = store.scratch(id)?;
    let kept = std::fs::write(&scratch, analysis).and_then(|()| store.keep(id, Form::Report, &scratch));
    match kept {
        Ok(()) => store.path(id, Form::Report),
        Err(e) => {
            let _ = std::fs::remove_file(&scratch);
            tracing::warn!(phase = "scan", image = id, error = %e, "cannot keep the image's analysis");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_that_scans_nothing_still_prunes_the_analyses_of_removed_images() {
        let state = tempfile::tempdir().unwrap();
        let (kept_id, gone_id) = ("sha256:aaaa", "sha256:bbbb");
        let store = AnalysisStore::open(Some(state.path()), "key").unwrap();
        for id in [kept_id, gone_id] {
            std::fs::write(store.path(id, Form::Sbom).unwrap(), b"{}").unwrap();
        }
        let (kept_file, gone_file) = (
            store.path(kept_id, Form::Sbom).unwrap(),
            store.path(gone_id, Form::Sbom).unwrap(),
        );
        drop(store);

        // A later pass whose results were all kept never opens the store.
        let mut kept = Kept::load(Some(state.path()));
        kept.retain_and_save(&HashSet::from([kept_id]));
        assert!(kept_file.is_file());
        assert!(!gone_file.exists(), "the removed image's analysis is left behind");

        // No state dir, nothing to prune, no panic.
        Kept::load(None).retain_and_save(&HashSet::new());
    }
}
