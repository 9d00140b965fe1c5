//! What a run reports: the ImageJob's status (per-node results, counts,
//! success ratio, conditions), the ImageList's status for a manual run,
//! events and metrics.
//!
//! Status is written with server-side apply, field manager
//! `scour-controller`, carrying the resourceVersion it was computed from: a
//! status computed from a stale view is refused with a 409 instead of
//! overwriting a newer one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::IMAGELIST_NAME;
use super::api::apply_status;
use super::clock::add_secs;
use std::collections::HashSet;
use std::sync::Arc;

use super::crd::{ImageJob, ImageJobStatus, ImageList, ImageListStatus, JobPhase, NodePhase, NodeResult};
use super::error::{Result, api_code};
use super::events::Event;
use super::launch::ANNOTATION_IMAGELIST;
use super::metrics::{NodeOutcome, RunOutcome};
use super::reconcile::Reconciler;

/// etcd refuses objects over 1.5 MiB; per-node image lists are trimmed to
/// keep the ImageJob status under this (counts stay exact).
const STATUS_BUDGET: usize = 800 * 1024;
/// Standing-problem key of an ImageList spec waiting for another run.
const QUEUED: &str = "queued:";

pub const CONDITION_RUNNING: &str = "Running";
pub const CONDITION_COMPLETE: &str = "Complete";
pub const CONDITION_FAILED: &str = "Failed";
pub const CONDITION_DEGRADED: &str = "Degraded";

impl Reconciler {
    /// Writes a run's status as computed from `job`: counts and conditions
    /// are derived here, and a run whose nodes are all done is finished
    /// (ratio, phase, cleanup time) and reported. When `job` was stale (a
    /// 409), nothing is written: the next reconcile starts from the newer
    /// version the store is about to show.
    pub(super) async fn write_progress(
        &mut self,
        job: &ImageJob,
        mut status: ImageJobStatus,
        now: Timestamp,
    ) -> Result<()> {
        tally(&mut status);
        let finishing = status.phase == Some(JobPhase::Running) && status.nodes.iter().all(|n| n.phase.is_done());
        if finishing {
            finish(job, &mut status, now);
        }
        let generation = job.meta().generation;
        status.observed_generation = generation;
        job_conditions(&mut status, generation, now);
        fit_budget(&mut status);
        let name = job.name_any();
        let version = job.metadata.resource_version.as_deref();
        match apply_status::<ImageJob, _>(&self.client, &name, version, &status).await {
            Ok(()) => {}
            Err(e) if api_code(&e) == Some(404) => {
                tracing::info!(job = %name, "the ImageJob was deleted; its run ends");
                return Ok(());
            }
            Err(e) if api_code(&e) == Some(409) => {
                // Someone else wrote it since; the store will show that
                // version, and the next reconcile works from it.
                tracing::debug!(job = %name, "the ImageJob changed since it was read; redoing from the newer version");
                self.wrote(&name, job.resource_version());
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        self.wrote(&name, job.resource_version());
        if finishing {
            self.report_finished(job, &status, now).await;
        }
        Ok(())
    }

    /// Metrics, an event, and for a manual run the ImageList's status.
    async fn report_finished(&mut self, job: &ImageJob, status: &ImageJobStatus, now: Timestamp) {
        let completed = status.phase == Some(JobPhase::Completed);
        let started = status.start_time.as_ref().map(|t| t.0).unwrap_or(now);
        self.metrics.record_run(&RunOutcome {
            succeeded: count(status.succeeded),
            failed: count(status.failed),
            duration_seconds: now.duration_since(started).as_secs_f64().max(0.0),
            nodes: status
                .nodes
                .iter()
                .filter_map(|n| {
                    let s = n.summary.as_ref()?;
                    Some(NodeOutcome {
                        node: &n.name,
                        removed: s.removed as u64,
                        vulnerable: s.vulnerable as u64,
                        degraded: n.status == Some(crate::report::Status::Degraded),
                    })
                })
                .collect(),
        });
        let mut message = format!(
            "{}: {} of {} nodes succeeded, {} failed, {} skipped; {} images removed, {} freed",
            if completed { "completed" } else { "failed" },
            status.succeeded,
            status.desired,
            status.failed,
            status.skipped,
            status.removed,
            crate::units::format_bytes(count(status.bytes_freed)),
        );
        if let Some(why) = status.message.as_deref().filter(|_| !completed) {
            message = format!("{message}; {why}");
        }
        tracing::info!(job = %job.name_any(), "{message}");
        let reason = if completed { "RunCompleted" } else { "RunFailed" };
        // On the run, and for a manual run on its ImageList too.
        let list = self.list_of(job).map(|l| l.object_ref(&()));
        for regarding in std::iter::once(job.object_ref(&())).chain(list) {
            let event = Event {
                regarding,
                warning: !completed,
                reason,
                action: "FinishRun",
                note: message.clone(),
            };
            self.events.publish(event, now).await;
        }
        // Its pods go once its delay has passed.
        if let Some(t) = &status.delete_after {
            self.wake_at(t.0);
        }
    }

    /// The ImageList a manual run ran, if it still exists (a list deleted
    /// and re-created since gets its own run and status).
    pub(super) fn list_of(&self, job: &ImageJob) -> Option<ImageList> {
        let version = job.annotations().get(ANNOTATION_IMAGELIST)?;
        let list = self
            .inputs
            .lists
            .state()
            .into_iter()
            .find(|l| l.name_any() == IMAGELIST_NAME)?;
        version
            .starts_with(&format!("{}/", list.uid().unwrap_or_default()))
            .then(|| (*list).clone())
    }

    /// Brings the ImageList's status in line with its runs; called on every
    /// reconcile, so a status write that did not land (a restart, a lost
    /// Lease, a conflict) is made by a later one. It shows the run of the
    /// list's current spec (`job`, `phase`, `observedGeneration`, the
    /// `Running` condition), or that the spec waits for another run
    /// (`Running` False, reason `Queued`); and, as in Eraser, the counts
    /// and `timestamp` of the list's last finished run, with `Complete` or
    /// `Failed`.
    pub(super) async fn sync_list_status(&mut self, waiting_for: Option<&str>, now: Timestamp) {
        let Some(list) = self
            .inputs
            .lists
            .state()
            .into_iter()
            .find(|l| l.name_any() == IMAGELIST_NAME && l.metadata.deletion_timestamp.is_none())
        else {
            return;
        };
        let uid = list.uid().unwrap_or_default();
        let generation = list.meta().generation;
        // The spec already ran (its records may be pruned since): not queued.
        let version = super::schedule::list_version(&list);
        let ran = matches!(self.state.get().await, Ok(s) if s.imagelist.as_deref() == Some(version.as_str()));
        let waiting_for = waiting_for.filter(|_| !ran);
        let runs: Vec<Arc<ImageJob>> = self
            .jobs()
            .into_iter()
            .filter(|j| {
                j.annotations()
                    .get(ANNOTATION_IMAGELIST)
                    .is_some_and(|v| v.starts_with(&format!("{uid}/")))
            })
            .collect();
        let run_generation = |j: &ImageJob| {
            j.annotations()
                .get(ANNOTATION_IMAGELIST)
                .and_then(|v| v.rsplit_once('/'))
                .and_then(|(_, g)| g.parse::<i64>().ok())
        };
        let newest = |runs: &mut dyn Iterator<Item = &Arc<ImageJob>>| {
            runs.max_by_key(|j| (run_generation(j), j.metadata.creation_timestamp.clone(), j.name_any()))
                .cloned()
        };
        let current = newest(&mut runs.iter().filter(|j| run_generation(j) == generation));
        let finished = newest(&mut runs.iter().filter(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p != JobPhase::Running)
        }));
        let old = list.status.clone().unwrap_or_default();
        let mut new = old.clone();
        if let Some(done) = &finished {
            let run = done.status.clone().unwrap_or_default();
            let completed = run.phase == Some(JobPhase::Completed);
            new.timestamp = run.completion_time.clone();
            new.success = run.succeeded;
            new.failed = run.failed;
            new.skipped = run.skipped;
            new.removed = run.removed;
            new.would_remove = run.would_remove;
            new.bytes_freed = run.bytes_freed;
            new.message = run.message.clone();
            let note = run.message.clone().unwrap_or_else(|| {
                format!(
                    "run {}: {} of {} nodes succeeded",
                    done.name_any(),
                    run.succeeded,
                    run.desired
                )
            });
            let (kind, other, reason) = if completed {
                (CONDITION_COMPLETE, CONDITION_FAILED, "RunCompleted")
            } else {
                (CONDITION_FAILED, CONDITION_COMPLETE, "RunFailed")
            };
            let run_generation = run_generation(done);
            set_condition(&mut new.conditions, kind, true, reason, &note, run_generation, now);
            new.conditions.retain(|c| c.type_ != other);
        }
        match (&current, waiting_for) {
            (Some(run), _) => {
                let phase = run.status.as_ref().and_then(|s| s.phase).unwrap_or(JobPhase::Running);
                new.job = Some(run.name_any());
                new.phase = Some(phase);
                new.observed_generation = generation;
                let running = phase == JobPhase::Running;
                let (reason, note) = if running {
                    ("RunStarted", format!("run {} is in progress", run.name_any()))
                } else {
                    ("RunFinished", format!("run {} finished", run.name_any()))
                };
                set_condition(
                    &mut new.conditions,
                    CONDITION_RUNNING,
                    running,
                    reason,
                    &note,
                    generation,
                    now,
                );
            }
            (None, Some(other)) => {
                let note = format!("this spec runs once run {other} has finished");
                // Said once per spec, and again if it waits again later.
                let problem = format!("{QUEUED}{uid}/{}", generation.unwrap_or_default());
                if self.events.stand(&problem) {
                    let event = Event {
                        regarding: list.object_ref(&()),
                        warning: false,
                        reason: "Queued",
                        action: "WaitForRun",
                        note: note.clone(),
                    };
                    self.events.publish(event, now).await;
                }
                set_condition(
                    &mut new.conditions,
                    CONDITION_RUNNING,
                    false,
                    "Queued",
                    &note,
                    generation,
                    now,
                );
            }
            (None, None) => {}
        }
        if waiting_for.is_none() {
            self.events.clear_except(QUEUED, &HashSet::new());
        }
        if new != old {
            self.apply_list_status(&list, &new).await;
        }
    }

    /// Server-side apply of the ImageList's status, made over the version
    /// it was computed from (a 409 otherwise, and the next reconcile works
    /// from the newer one). Failures are logged: the run's record is the
    /// ImageJob.
    async fn apply_list_status(&mut self, list: &ImageList, status: &ImageListStatus) {
        let name = list.name_any();
        let version = list.metadata.resource_version.as_deref();
        if let Err(e) = apply_status::<ImageList, _>(&self.client, &name, version, status).await {
            tracing::warn!(imagelist = %list.name_any(), "writing the ImageList status failed: {e}");
        }
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Counts from the per-node phases; `desired` lists every node, skipped
/// ones included (as Eraser counts).
pub fn tally(status: &mut ImageJobStatus) {
    let count = |p: NodePhase| status.nodes.iter().filter(|n| n.phase == p).count() as i64;
    status.desired = status.nodes.len() as i64;
    status.succeeded = count(NodePhase::Succeeded);
    status.failed = count(NodePhase::Failed);
    status.skipped = count(NodePhase::Skipped);
    let summaries = || status.nodes.iter().filter_map(|n| n.summary.as_ref());
    // A summary is whatever a worker pod wrote: saturate, never overflow.
    let total = |n: fn(&crate::report::Summary) -> u64| {
        summaries()
            .map(|s| i64::try_from(n(s)).unwrap_or(i64::MAX))
            .fold(0, i64::saturating_add)
    };
    status.removed = total(|s| s.removed as u64);
    status.would_remove = total(|s| s.would_remove as u64);
    status.degraded = status
        .nodes
        .iter()
        .filter(|n| n.status == Some(crate::report::Status::Degraded))
        .count() as i64;
    status.bytes_freed = total(|s| s.bytes_freed);
}

/// The success ratio, in floating point (272 of 273 at 0.95 is Completed),
/// the phase and when the finished pods go.
fn finish(job: &ImageJob, status: &mut ImageJobStatus, now: Timestamp) {
    let ratio = if status.desired == 0 {
        1.0
    } else {
        (status.succeeded + status.skipped) as f64 / status.desired as f64
    };
    status.success_ratio = Some(ratio);
    let rollout = &job.spec.rollout;
    let completed = status.message.is_none() && ratio + 1e-9 >= rollout.success_ratio;
    status.phase = Some(if completed {
        JobPhase::Completed
    } else {
        JobPhase::Failed
    });
    if !completed && status.message.is_none() {
        status.message = Some(format!(
            "success ratio {ratio:.4} is below the required {}",
            rollout.success_ratio
        ));
    }
    let delay = if completed {
        rollout.delay_on_success_seconds
    } else {
        rollout.delay_on_failure_seconds
    };
    status.completion_time = Some(Time(now));
    status.delete_after = Some(Time(add_secs(now, delay)));
}

/// `Running` while nodes remain; `Complete` or `Failed` once finished;
/// `Degraded` while a node's pass completed degraded.
fn job_conditions(status: &mut ImageJobStatus, generation: Option<i64>, now: Timestamp) {
    let degraded: Vec<String> = status
        .nodes
        .iter()
        .filter(|n| n.status == Some(crate::report::Status::Degraded))
        .map(|n| format!("{}: {}", n.name, n.message.as_deref().unwrap_or("degraded")))
        .collect();
    if degraded.is_empty() {
        status.conditions.retain(|c| c.type_ != CONDITION_DEGRADED);
    } else {
        let shown: Vec<&str> = degraded.iter().take(5).map(String::as_str).collect();
        let note = format!(
            "{} of {} nodes degraded (scans or removals failed): {}{}",
            degraded.len(),
            status.nodes.len(),
            shown.join("; "),
            if degraded.len() > shown.len() { "; …" } else { "" }
        );
        set_condition(
            &mut status.conditions,
            CONDITION_DEGRADED,
            true,
            "NodesDegraded",
            &note,
            generation,
            now,
        );
    }
    let done = status.nodes.iter().filter(|n| n.phase.is_done()).count();
    match status.phase {
        Some(JobPhase::Running) | None => {
            let note = format!("{done} of {} nodes done", status.nodes.len());
            set_condition(
                &mut status.conditions,
                CONDITION_RUNNING,
                true,
                "NodesRemain",
                &note,
                generation,
                now,
            );
        }
        Some(phase) => {
            let completed = phase == JobPhase::Completed;
            let reason = if completed {
                "Completed"
            } else if status
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("run failed closed"))
            {
                "FailedClosed"
            } else {
                "SuccessRatioNotMet"
            };
            let note = status
                .message
                .clone()
                .unwrap_or_else(|| format!("{} of {} nodes succeeded", status.succeeded, status.desired));
            let conditions = &mut status.conditions;
            set_condition(conditions, CONDITION_RUNNING, false, reason, &note, generation, now);
            let (kind, other) = if completed {
                (CONDITION_COMPLETE, CONDITION_FAILED)
            } else {
                (CONDITION_FAILED, CONDITION_COMPLETE)
            };
            set_condition(conditions, kind, true, reason, &note, generation, now);
            conditions.retain(|c| c.type_ != other);
        }
    }
}

/// Sets a condition; its transition time moves only when its status does.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if value { "True" } else { "False" };
    let message = crate::text::prefix_within(message, 1024).to_owned();
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
                c.status = status.into();
            }
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// Thins the per-node entries of a very big cluster's run until the
/// status fits: first the counts of nodes that succeeded (their NodeReports
/// and the run's totals keep them), then pod and report names (found by the
/// label `scour.dev/job`), then start and finish times. Names, phases and
/// messages stay.
fn fit_budget(status: &mut ImageJobStatus) {
    let size = |s: &ImageJobStatus| serde_json::to_vec(s).map(|v| v.len()).unwrap_or(0);
    let steps: [fn(&mut NodeResult); 3] = [
        |n| {
            if n.phase == NodePhase::Succeeded && n.status == Some(crate::report::Status::Ok) {
                n.summary = None;
            }
        },
        |n| {
            n.pod = None;
            n.reports.clear();
        },
        |n| {
            n.started = None;
            n.finished = None;
        },
    ];
    for step in steps {
        if size(status) <= STATUS_BUDGET {
            return;
        }
        status.nodes.iter_mut().for_each(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::NodeResult;
    use crate::report::Summary;

    #[test]
    fn a_very_big_cluster_keeps_every_node_and_the_totals_within_the_budget() {
        let t: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let mut status = ImageJobStatus {
            nodes: (0..5000)
                .map(|i| NodeResult {
                    name: format!("aks-nodepool1-12345678-vmss{i:06}"),
                    phase: if i == 7 {
                        NodePhase::Failed
                    } else {
                        NodePhase::Succeeded
                    },
                    pod: Some(format!("scour-automatic-20261123-100000-aks-nodepool1-{i:06}-0a1b2c3d")),
                    started: Some(Time(t)),
                    finished: Some(Time(t)),
                    message: (i == 7).then(|| "exit 1 (Error): the worker's pass failed".to_owned()),
                    status: Some(crate::report::Status::Ok),
                    summary: Some(Summary {
                        removed: 40,
                        ..Default::default()
                    }),
                    reports: vec![format!(
                        "scour-automatic-20261123-100000-aks-nodepool1-{i:06}-0a1b2c3d-1"
                    )],
                })
                .collect(),
            ..Default::default()
        };
        tally(&mut status);
        fit_budget(&mut status);
        let size = serde_json::to_vec(&status).unwrap().len();
        assert!(size <= STATUS_BUDGET, "{size} bytes");
        assert_eq!(status.nodes.len(), 5000);
        assert_eq!(status.removed, 200_000, "the totals were counted before");
        let failed = &status.nodes[7];
        assert_eq!(failed.phase, NodePhase::Failed);
        assert!(failed.message.is_some(), "why a node failed is kept");
    }

    /// 1 000 nodes removing 5 000 images each: the ImageJob keeps every
    /// node whole (counts, pod, NodeReport names); the images are in the
    /// NodeReports (`results::tests` fits one node's 5 000 in parts).
    #[test]
    fn a_thousand_node_run_keeps_every_node_whole() {
        let t: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let pod = |i: usize| format!("scour-automatic-20261123-100000-aks-nodepool1-{i:06}-0a1b2c3d");
        let mut status = ImageJobStatus {
            nodes: (0..1000)
                .map(|i| NodeResult {
                    name: format!("aks-nodepool1-12345678-vmss{i:06}"),
                    phase: NodePhase::Succeeded,
                    pod: Some(pod(i)),
                    started: Some(Time(t)),
                    finished: Some(Time(t)),
                    message: None,
                    status: Some(crate::report::Status::Ok),
                    summary: Some(Summary {
                        images: 6000,
                        selected: 5500,
                        scanned: 5500,
                        trivy_runs: 5500,
                        kept: 1000,
                        vulnerable: 5000,
                        removed: 5000,
                        bytes_freed: 5000 * 300_000_000,
                        ..Default::default()
                    }),
                    reports: (1..=3).map(|p| format!("{}-{p}", pod(i))).collect(),
                })
                .collect(),
            ..Default::default()
        };
        tally(&mut status);
        let before = status.nodes.clone();
        fit_budget(&mut status);
        let size = serde_json::to_vec(&status).unwrap().len();
        assert!(size <= STATUS_BUDGET, "{size} bytes");
        assert_eq!(status.nodes, before, "nothing thinned at 1 000 nodes ({size} bytes)");
        assert_eq!(status.removed, 5_000_000);
    }

    #[test]
    fn absurd_counts_from_a_worker_saturate_instead_of_overflowing() {
        let node = |name: &str| NodeResult {
            name: name.into(),
            phase: NodePhase::Succeeded,
            summary: Some(Summary {
                removed: usize::MAX,
                bytes_freed: u64::MAX,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut status = ImageJobStatus {
            nodes: vec![node("a"), node("b")],
            ..Default::default()
        };
        tally(&mut status);
        assert_eq!((status.removed, status.bytes_freed), (i64::MAX, i64::MAX));
    }

    #[test]
    fn counts_are_derived_from_the_nodes_at_every_write() {
        let node = |name: &str, phase| NodeResult {
            name: name.into(),
            phase,
            ..Default::default()
        };
        let mut status = ImageJobStatus {
            nodes: vec![
                node("w1", NodePhase::Skipped),
                node("l1", NodePhase::Queued),
                node("l2", NodePhase::Succeeded),
            ],
            ..Default::default()
        };
        tally(&mut status);
        assert_eq!(
            (status.desired, status.skipped, status.succeeded, status.failed),
            (3, 1, 1, 0),
            "a skipped node counts as skipped while the run is still going"
        );
    }

    #[test]
    fn a_condition_moves_its_transition_time_only_when_its_status_changes() {
        let t0: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-23T10:05:00Z".parse().unwrap();
        let mut c = Vec::new();
        set_condition(&mut c, "Running", true, "NodesRemain", "0 of 2", Some(1), t0);
        set_condition(&mut c, "Running", true, "NodesRemain", "1 of 2", Some(1), t1);
        assert_eq!((c[0].last_transition_time.0, c[0].message.as_str()), (t0, "1 of 2"));
        set_condition(&mut c, "Running", false, "Completed", "done", Some(1), t1);
        assert_eq!((c[0].last_transition_time.0, c[0].status.as_str()), (t1, "False"));
        assert_eq!(c.len(), 1);
    }
}
