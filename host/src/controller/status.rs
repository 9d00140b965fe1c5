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
use super::api::{Precondition, apply_status};
use super::clock::add_secs;
use super::crd::{ImageJob, ImageJobStatus, ImageList, ImageListStatus, JobPhase, NodePhase, Trigger};
use super::error::{Result, api_code};
use super::events::Event;
use super::launch::ANNOTATION_IMAGELIST;
use super::metrics::RunOutcome;
use super::reconcile::Reconciler;

/// etcd refuses objects over 1.5 MiB; per-node image lists are trimmed to
/// keep the ImageJob status under this (counts stay exact).
const STATUS_BUDGET: usize = 800 * 1024;

pub const CONDITION_RUNNING: &str = "Running";
pub const CONDITION_COMPLETE: &str = "Complete";
pub const CONDITION_FAILED: &str = "Failed";

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
        let precondition = Precondition::Version(job.metadata.resource_version.as_deref());
        match apply_status::<ImageJob, _>(&self.client, &name, precondition, &status).await {
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
        let automatic = job.spec.trigger == Trigger::Automatic;
        self.metrics.record_run(&RunOutcome {
            succeeded: count(status.succeeded),
            failed: count(status.failed),
            duration_seconds: now.duration_since(started).as_secs_f64().max(0.0),
            nodes: status
                .nodes
                .iter()
                .filter_map(|n| {
                    let s = n.summary.as_ref()?;
                    let flagged = if automatic {
                        s.removed + s.would_remove + s.failed
                    } else {
                        0
                    };
                    Some((n.name.as_str(), s.removed as u64, flagged as u64))
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
        let event = Event {
            regarding: job.object_ref(&()),
            warning: !completed,
            reason,
            action: "FinishRun",
            note: message.clone(),
        };
        self.events.publish(event, now).await;
        if job.spec.trigger == Trigger::Manual {
            self.list_finished(job, status, &message, now).await;
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

    /// A manual run started: the ImageList says which run covers which
    /// generation. Counts and `timestamp` stay those of the last finished
    /// run, as in Eraser.
    pub(super) async fn list_started(&mut self, list: &ImageList, job: &ImageJob, now: Timestamp) {
        let mut status = list.status.clone().unwrap_or_default();
        status.job = Some(job.name_any());
        status.phase = Some(JobPhase::Running);
        status.message = None;
        status.observed_generation = list.meta().generation;
        let generation = status.observed_generation;
        let note = format!("run {} started", job.name_any());
        set_condition(
            &mut status.conditions,
            CONDITION_RUNNING,
            true,
            "RunStarted",
            &note,
            generation,
            now,
        );
        status.conditions.retain(|c| c.type_ == CONDITION_RUNNING);
        self.apply_list_status(list, &status).await;
    }

    async fn list_finished(&mut self, job: &ImageJob, run: &ImageJobStatus, message: &str, now: Timestamp) {
        let Some(list) = self.list_of(job) else {
            return;
        };
        let completed = run.phase == Some(JobPhase::Completed);
        let mut status = ImageListStatus {
            timestamp: Some(Time(now)),
            success: run.succeeded,
            failed: run.failed,
            skipped: run.skipped,
            job: Some(job.name_any()),
            phase: run.phase,
            removed: run.removed,
            bytes_freed: run.bytes_freed,
            message: run.message.clone(),
            observed_generation: list.status.as_ref().and_then(|s| s.observed_generation),
            conditions: list.status.clone().unwrap_or_default().conditions,
        };
        let generation = status.observed_generation;
        let reason = if completed { "RunCompleted" } else { "RunFailed" };
        set_condition(
            &mut status.conditions,
            CONDITION_RUNNING,
            false,
            reason,
            message,
            generation,
            now,
        );
        set_condition(
            &mut status.conditions,
            CONDITION_COMPLETE,
            completed,
            reason,
            message,
            generation,
            now,
        );
        set_condition(
            &mut status.conditions,
            CONDITION_FAILED,
            !completed,
            reason,
            message,
            generation,
            now,
        );
        self.apply_list_status(&list, &status).await;
        let event = Event {
            regarding: list.object_ref(&()),
            warning: !completed,
            reason,
            action: "FinishRun",
            note: message.to_owned(),
        };
        self.events.publish(event, now).await;
    }

    /// Server-side apply of the ImageList's status; the uid keeps it off a
    /// list deleted and re-created since. Failures are logged: the run's
    /// record is the ImageJob.
    async fn apply_list_status(&mut self, list: &ImageList, status: &ImageListStatus) {
        let name = list.name_any();
        let precondition = Precondition::Uid(list.metadata.uid.as_deref());
        if let Err(e) = apply_status::<ImageList, _>(&self.client, &name, precondition, status).await {
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
    status.removed = summaries().map(|s| s.removed as i64).sum();
    status.bytes_freed = summaries()
        .map(|s| i64::try_from(s.bytes_freed).unwrap_or(i64::MAX))
        .fold(0, i64::saturating_add);
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

/// `Running` while nodes remain; `Complete` or `Failed` once finished.
fn job_conditions(status: &mut ImageJobStatus, generation: Option<i64>, now: Timestamp) {
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

/// Trims per-node image lists (never the counts) until the status fits.
fn fit_budget(status: &mut ImageJobStatus) {
    let size = |s: &ImageJobStatus| serde_json::to_vec(s).map(|v| v.len()).unwrap_or(0);
    if size(status) <= STATUS_BUDGET {
        return;
    }
    let nodes = status.nodes.len().max(1);
    // About 150 bytes per entry; what is left per node after its counts.
    let per_node = (STATUS_BUDGET / nodes).saturating_sub(600) / 150;
    for n in &mut status.nodes {
        for list in [&mut n.removed, &mut n.failed] {
            if list.len() > per_node {
                n.omitted += (list.len() - per_node) as u64;
                list.truncate(per_node);
            }
        }
        if n.errors.len() > 2 {
            n.omitted += (n.errors.len() - 2) as u64;
            n.errors.truncate(2);
        }
    }
    if size(status) > STATUS_BUDGET {
        for n in &mut status.nodes {
            n.omitted += (n.removed.len() + n.failed.len()) as u64;
            n.removed.clear();
            n.failed.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::NodeResult;
    use crate::report::{ImageEntry, Summary};

    #[test]
    fn a_huge_status_is_trimmed_but_keeps_its_counts() {
        let entry = ImageEntry {
            id: "0123456789ab".into(),
            image: "registry.example.com/team/app:1.2.3".into(),
            reason: "vulnerable: 2 HIGH, 1 CRITICAL".into(),
        };
        let mut status = ImageJobStatus {
            nodes: (0..2000)
                .map(|i| NodeResult {
                    phase: NodePhase::Succeeded,
                    summary: Some(Summary {
                        removed: 40,
                        ..Default::default()
                    }),
                    removed: vec![entry.clone(); 40],
                    name: format!("node-{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        fit_budget(&mut status);
        let size = serde_json::to_vec(&status).unwrap().len();
        assert!(size <= STATUS_BUDGET, "{size} bytes");
        let n = &status.nodes[0];
        assert_eq!(n.summary.as_ref().unwrap().removed, 40);
        assert_eq!(n.removed.len() as u64 + n.omitted, 40);
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
