//! Scan: run Trivy on the images the policy selected, with bounded
//! concurrency, a per-image timeout, a total deadline, and a cache.
//!
//! Any failure — a missing binary, a crash, a hang, garbage output, a missing
//! or corrupt DB — becomes `failed(reason)` for the images it affects, and is
//! logged once per cause rather than once per image. A failed scan is a fact
//! for the policy, never a reason by itself to remove anything.

mod cache;
pub mod limits;
pub mod trivy;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use scour_policy_sdk::{Image, ScanOutcome, Severity};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use cache::ScanCache;
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
    /// Trivy image scans started (cache hits excluded).
    pub trivy_runs: usize,
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

/// Scans `images` (the policy's selection). Never fails as a whole: every
/// image comes back with an outcome.
pub async fn scan(opts: &ScanOptions, images: &[&Image], cache: &mut ScanCache, cancel: &CancellationToken) -> ScanRun {
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
    run.trivy = Some(info);

    let mut pending = Vec::new();
    for img in images {
        match cache.get(&key, &img.id) {
            Some(hit) => {
                run.cache_hits += 1;
                run.outcomes.insert(img.id.clone(), hit.clone());
            }
            None => pending.push(*img),
        }
    }
    tracing::info!(
        phase = "scan",
        selected = images.len(),
        cached = run.cache_hits,
        to_scan = pending.len(),
        concurrency = opts.concurrency,
        "scanning"
    );

    let finished = crate::bounded::map_bounded(pending, opts.concurrency, |img| {
        let refs = trivy::scan_refs(&img.digests, &img.tags);
        let (id, trivy, cancel) = (img.id.clone(), opts.trivy.clone(), cancel.clone());
        let per_image = opts.per_image_timeout;
        async move {
            let outcome = tokio::select! {
                o = scan_one(&trivy, &refs, per_image, deadline) => o,
                () = cancel.cancelled() => Attempt::failed("scan interrupted: scour is shutting down"),
            };
            (id, outcome)
        }
    })
    .await;
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (id, attempt) in finished {
        run.trivy_runs += attempt.runs;
        if let ScanOutcome::Failed(_) = &attempt.outcome {
            *groups.entry(attempt.cause).or_default() += 1;
        } else {
            cache.put(&key, &id, &attempt.outcome);
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
    runs: usize,
}

impl Attempt {
    fn failed(reason: &str) -> Self {
        Self {
            outcome: ScanOutcome::Failed(reason.to_owned()),
            cause: reason.to_owned(),
            runs: 0,
        }
    }
}

async fn scan_one(trivy: &TrivyOptions, refs: &[String], per_image: Duration, deadline: Instant) -> Attempt {
    if refs.is_empty() {
        return Attempt::failed("the image has no tag or digest to scan it by");
    }
    let mut last: Option<(String, String)> = None;
    let mut runs = 0;
    for r in refs {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let reason = "the scan step's total deadline passed before this image was scanned".to_owned();
            return Attempt {
                outcome: ScanOutcome::Failed(reason.clone()),
                cause: reason,
                runs,
            };
        }
        runs += 1;
        match trivy.scan(r, per_image.min(remaining)).await {
            Ok(report) => {
                return Attempt {
                    outcome: ScanOutcome::Scanned(report),
                    cause: String::new(),
                    runs,
                };
            }
            Err(e) => {
                let reason = e.to_string();
                let cause = reason.replace(r.as_str(), "<image>");
                let fatal = matches!(e, RunError::NotFound(_));
                last = Some((reason, cause));
                if fatal {
                    break;
                }
            }
        }
    }
    let (reason, cause) = last.unwrap_or_default();
    Attempt {
        outcome: ScanOutcome::Failed(reason),
        cause,
        runs,
    }
}
