//! What each node did, kept in full. When a worker pod ends, the controller
//! reads the worker's pass report back from the pod's log (the worker
//! prints it as one line of JSON, last) and keeps every removed,
//! would-remove and failed image, with reason and size, in NodeReports
//! owned by the run's ImageJob. They stay readable with kubectl after the
//! pod is deleted, and go with the ImageJob. The worker needs no API access
//! for this; the controller needs `pods/log`.
//!
//! Where the log cannot be read (the kubelet unreachable, the log rotated
//! away), the report holds what the termination message carried and says
//! it is incomplete.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Resource, ResourceExt};

use super::crd::{ImageJob, NodeReport, NodeReportSpec};
use super::error::{Result, api_code};
use super::pods::{CONTAINER, pod_name};
use super::reconcile::Reconciler;
use super::{LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY};
use crate::report::{ImageAction, ImageEntry, PassReport, TerminationSummary};

/// Each NodeReport stays under this; etcd refuses objects over 1.5 MiB.
pub const PART_BUDGET: usize = 900 * 1024;
/// A worker's log is read up to this much (a report of 5 000 images is
/// about 2 MiB).
const LOG_LIMIT: i64 = 64 << 20;

/// Where a node's results come from.
pub enum Source<'a> {
    /// The worker's full report, from its log.
    Report(&'a PassReport),
    /// Only the termination summary; why the report could not be read.
    Summary(&'a TerminationSummary, String),
}

impl Reconciler {
    /// Reads the report of `pod` (on `node`) and keeps it in NodeReports;
    /// returns their names. `summary` is the pod's termination summary, the
    /// fallback.
    pub(super) async fn keep_results(
        &self,
        job: &ImageJob,
        node: &str,
        pod: &str,
        summary: Option<&TerminationSummary>,
    ) -> Result<Vec<String>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let params = LogParams {
            container: Some(CONTAINER.into()),
            limit_bytes: Some(LOG_LIMIT),
            ..Default::default()
        };
        let log = pods.logs(pod, &params).await;
        let report = match &log {
            Ok(text) => last_report(text).ok_or_else(|| "the worker's log holds no report".to_owned()),
            Err(e) => Err(format!("the worker's log could not be read: {e}")),
        };
        let specs = match (&report, summary) {
            (Ok(report), _) => parts(&job.name_any(), node, Source::Report(report)),
            (Err(why), Some(summary)) => parts(&job.name_any(), node, Source::Summary(summary, why.clone())),
            (Err(why), None) => {
                tracing::warn!(job = %job.name_any(), %node, "no results kept: {why}, and no termination summary");
                return Ok(Vec::new());
            }
        };
        drop(log);
        if let Err(why) = &report {
            tracing::warn!(job = %job.name_any(), %node, "keeping only the termination summary's results: {why}");
        }
        let api: Api<NodeReport> = Api::all(self.client.clone());
        let base = pod_name(&job.name_any(), node);
        let mut names = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let name = format!("{base}-{}", i + 1);
            let mut object = NodeReport::new(&name, spec);
            object.metadata.labels = Some(
                [
                    (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                    (LABEL_JOB.to_owned(), job.name_any()),
                ]
                .into(),
            );
            object.metadata.owner_references = job.controller_owner_ref(&()).map(|r| vec![r]);
            match api.create(&PostParams::default(), &object).await {
                // Kept before: a reconcile that did not finish.
                Ok(_) => {}
                Err(e) if api_code(&e) == Some(409) => {}
                Err(e) => return Err(e.into()),
            }
            names.push(name);
        }
        Ok(names)
    }

    /// Deletes a run's NodeReports (where no garbage collector would).
    pub(super) async fn delete_results(&self, job: &str) -> Result<()> {
        let api: Api<NodeReport> = Api::all(self.client.clone());
        let params = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB}={job}"));
        match api.delete_collection(&DeleteParams::default(), &params).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The last line of a worker's log that is its pass report.
pub fn last_report(log: &str) -> Option<PassReport> {
    log.lines()
        .rev()
        .filter(|l| l.starts_with('{') && l.contains("\"images\""))
        .find_map(|l| serde_json::from_str::<PassReport>(l).ok())
}

/// A node's results as NodeReport specs, each under [`PART_BUDGET`]
/// serialized: one unless the node had very many images.
pub fn parts(job: &str, node: &str, source: Source<'_>) -> Vec<NodeReportSpec> {
    let mut head = NodeReportSpec {
        job: job.to_owned(),
        node: node.to_owned(),
        part_of: String::new(),
        status: crate::report::Status::Ok,
        dry_run: false,
        policy: String::new(),
        complete: true,
        incomplete: None,
        summary: Default::default(),
        removed: Vec::new(),
        would_remove: Vec::new(),
        failed: Vec::new(),
        errors: Vec::new(),
    };
    // (which list, entry) in the order they are kept.
    let mut entries: Vec<(ImageAction, ImageEntry)> = Vec::new();
    match source {
        Source::Report(r) => {
            head.status = r.status;
            head.dry_run = r.dry_run;
            head.policy = r.policy.digest.clone();
            head.summary = r.summary.clone();
            head.errors = r.errors.clone();
            entries.extend(
                r.images
                    .iter()
                    .filter(|i| i.action != ImageAction::Kept)
                    .map(|i| (i.action, ImageEntry::of(i))),
            );
        }
        Source::Summary(s, why) => {
            head.status = s.status;
            head.dry_run = s.dry_run;
            head.policy = s.policy.clone();
            head.summary = s.summary.clone();
            head.errors = s.errors.clone();
            head.complete = false;
            head.incomplete = Some(format!(
                "{why}; {} entries the termination message had no room for are missing",
                s.omitted
            ));
            let done = if s.dry_run {
                ImageAction::WouldRemove
            } else {
                ImageAction::Removed
            };
            entries.extend(s.removed.iter().map(|e| (done, e.clone())));
            entries.extend(s.failed.iter().map(|e| (ImageAction::Failed, e.clone())));
        }
    }
    let size = |e: &ImageEntry| serde_json::to_vec(e).map(|v| v.len() + 1).unwrap_or(0);
    let base = serde_json::to_vec(&head).map(|v| v.len()).unwrap_or(0) + 64;
    let mut out: Vec<NodeReportSpec> = Vec::new();
    let mut current = head.clone();
    let mut used = base;
    for (action, entry) in entries {
        let n = size(&entry);
        if used + n > PART_BUDGET && used > base {
            let full = std::mem::replace(&mut current, head.clone());
            current.errors = Vec::new();
            out.push(full);
            used = base;
        }
        used += n;
        match action {
            ImageAction::Removed => current.removed.push(entry),
            ImageAction::WouldRemove => current.would_remove.push(entry),
            ImageAction::Failed => current.failed.push(entry),
            ImageAction::Kept => {}
        }
    }
    out.push(current);
    let total = out.len();
    for (i, part) in out.iter_mut().enumerate() {
        part.part_of = format!("{}/{total}", i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ImageResult, RemovalResult, Status, Summary};
    use scour_policy_sdk::Mode;

    fn report(n: usize) -> PassReport {
        let mut r = PassReport::new("node-a", Mode::Automatic, false, "2026-11-23T10:00:00Z".into());
        r.images = (0..n)
            .map(|i| ImageResult {
                id: format!("sha256:{i:064x}"),
                tags: vec![format!("registry.example.com/team-{}/service-{i}:1.2.{i}", i % 17)],
                size_bytes: 100_000_000 + i as u64,
                action: match i % 5 {
                    0 => ImageAction::Kept,
                    1 => ImageAction::Failed,
                    _ => ImageAction::Removed,
                },
                reason: "vulnerable: 2 HIGH, 1 CRITICAL; eol: alpine 3.12.0".into(),
                result: Some(RemovalResult::Removed),
            })
            .collect();
        r.tally();
        r
    }

    #[test]
    fn the_report_is_read_back_from_the_last_report_line_of_a_log() {
        let r = report(3);
        let log = format!(
            "{{\"level\":\"INFO\",\"message\":\"decided\"}}\n{}\n{{\"level\":\"INFO\",\"message\":\"done\"}}\n",
            r.to_json_line()
        );
        let back = last_report(&log).expect("the report line");
        assert_eq!(back.summary, r.summary);
        assert_eq!(back.images.len(), 3);
        assert!(last_report("no report here\n{\"images\": 3}\n").is_none());
    }

    #[test]
    fn five_thousand_images_are_kept_whole_in_parts_under_the_budget() {
        let r = report(5000);
        let specs = parts("job", "node-a", Source::Report(&r));
        let kept: usize = specs
            .iter()
            .map(|s| s.removed.len() + s.failed.len() + s.would_remove.len())
            .sum();
        assert_eq!(kept, 4000, "every image but the kept ones");
        for s in &specs {
            let size = serde_json::to_vec(s).unwrap().len();
            assert!(size <= PART_BUDGET, "{} bytes", size);
            assert!(s.complete);
        }
        assert_eq!(specs.last().unwrap().part_of, format!("{0}/{0}", specs.len()));
        assert_eq!(
            specs[0].failed[0].reason,
            "vulnerable: 2 HIGH, 1 CRITICAL; eol: alpine 3.12.0"
        );
        assert_eq!(specs[0].removed[0].size_bytes, 100_000_002);
    }

    #[test]
    fn without_the_log_the_summary_is_kept_and_says_it_is_incomplete() {
        let summary = TerminationSummary {
            status: Status::Degraded,
            node: "node-a".into(),
            mode: Mode::Automatic,
            dry_run: true,
            policy: "sha256:0".into(),
            summary: Summary {
                would_remove: 30,
                ..Default::default()
            },
            removed: vec![ImageEntry {
                id: "0123456789ab".into(),
                image: "alpine:3.12".into(),
                reason: "eol: alpine 3.12.0".into(),
                size_bytes: 0,
            }],
            failed: Vec::new(),
            errors: vec!["scans failed".into()],
            omitted: 29,
        };
        let specs = parts("job", "node-a", Source::Summary(&summary, "the log is gone".into()));
        assert_eq!(specs.len(), 1);
        let s = &specs[0];
        assert!(!s.complete);
        assert!(
            s.incomplete.as_deref().unwrap().contains("29 entries"),
            "{:?}",
            s.incomplete
        );
        assert_eq!(s.would_remove.len(), 1, "a dry run's entries would be removed");
        assert_eq!(s.status, Status::Degraded);
    }
}
