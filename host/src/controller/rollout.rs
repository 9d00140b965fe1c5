//! A run in flight: collect what each finished worker pod reports, time out
//! pods stuck Pending or running past the node timeout, and start queued
//! nodes' pods within the rollout cap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};

use super::api::delete_if_present;
use super::clock::add_secs;
use super::crd::{ImageJob, ImageJobStatus, NodePhase, NodeResult};
use super::error::{Result, api_code};
use super::events::Event;
use super::inputs::WorkerPod;
use super::launch::Prepared;
use super::pods::{CONTAINER, pod_name};
use super::reconcile::Reconciler;
use super::{LABEL_JOB, Tick};
use crate::config::Loaded;
use crate::report::{Status as PassStatus, TerminationSummary};

impl Reconciler {
    pub(super) async fn progress(&mut self, job: &ImageJob, loaded: Option<&Loaded>, now: Timestamp) -> Result<Tick> {
        let name = job.name_any();
        let Some(mut status) = job.status.clone().filter(|s| s.phase.is_some()) else {
            // Created, but its status never written (the controller stopped
            // in between): set it up now.
            let Some(loaded) = loaded else {
                return Ok(Tick::InvalidConfig(format!(
                    "run {name} waits for a valid config to start"
                )));
            };
            let prepared: Prepared = self.prepare(loaded, now).await?;
            self.launch(job.clone(), prepared, now).await?;
            return Ok(Tick::Started(name));
        };
        // Every change to a node changes its phase.
        let before: Vec<NodePhase> = status.nodes.iter().map(|n| n.phase).collect();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let pod_list = self.inputs.pods.state();
        let pods = pod_views(&pod_list, &name);
        let rollout = job.spec.rollout.clone();
        let mut collected = 0;
        for n in status.nodes.iter_mut().filter(|n| n.phase == NodePhase::Running) {
            let Some(pod) = pods.get(n.name.as_str()) else {
                // The store may lag behind a pod just created: ask before
                // concluding it is gone.
                let expected = n.pod.clone().unwrap_or_else(|| pod_name(&name, &n.name));
                if pods_api.get_metadata_opt(&expected).await?.is_some() {
                    continue;
                }
                fail(n, now, format!("worker pod {expected} disappeared before it finished"));
                continue;
            };
            match pod.phase {
                // A bounded number per reconcile, so that a burst of nodes
                // finishing shows in the status as it goes.
                Some("Succeeded" | "Failed") if collected >= COLLECT_PER_RECONCILE => self.wake_at(now),
                Some("Succeeded" | "Failed") => {
                    collected += 1;
                    let summary = absorb(n, pod);
                    n.reports = self.keep_results(job, &n.name, pod.name, summary.as_ref()).await?;
                    n.finished = Some(Time(now));
                    if n.status == Some(PassStatus::Degraded) {
                        let note = format!("node {}: {}", n.name, n.message.as_deref().unwrap_or("degraded"));
                        tracing::warn!(job = %name, "{note}");
                        let event = Event {
                            regarding: job.object_ref(&()),
                            warning: true,
                            reason: "NodeDegraded",
                            action: "CollectNode",
                            note,
                        };
                        self.events.publish(event, now).await;
                    }
                }
                _ if pod.deleting => {
                    fail(
                        n,
                        now,
                        format!("worker pod {} was deleted before it finished", pod.name),
                    );
                }
                phase => {
                    let started = n.started.as_ref().map(|t| t.0).unwrap_or(now);
                    let pending = matches!(phase, Some("Pending") | None);
                    let (limit, what) = if pending {
                        (rollout.pending_timeout_seconds, "stayed Pending for")
                    } else {
                        (rollout.node_timeout_seconds, "did not finish within")
                    };
                    // 0 means no limit (records written before the field existed).
                    if limit <= 0 {
                        continue;
                    }
                    let deadline = add_secs(started, limit);
                    if now < deadline {
                        self.wake_at(deadline);
                        continue;
                    }
                    delete_if_present(&pods_api, pod.name).await?;
                    let why = if pending { pod.waiting.as_ref() } else { None };
                    let message = format!(
                        "worker pod {what} {}{}; deleted it",
                        humantime::format_duration(Duration::from_secs(limit.unsigned_abs())),
                        why.map(|r| format!(" ({r})")).unwrap_or_default()
                    );
                    tracing::warn!(job = %name, node = %n.name, "{message}");
                    fail(n, now, message);
                }
            }
        }
        let transient = self.launch_queued(job, &mut status, &pods, loaded, now).await?;

        let done = status.nodes.iter().all(|n| n.phase.is_done());
        let changed = status.nodes.iter().map(|n| n.phase).ne(before.iter().copied());
        if changed || done {
            self.write_progress(job, status, now).await?;
        }
        if let Some(e) = transient {
            // What launched is recorded; the rest is retried.
            return Err(e.into());
        }
        Ok(if done {
            Tick::Finished(name)
        } else {
            Tick::Running(name)
        })
    }

    /// Starts queued nodes' pods while the run is under its cap. A queued
    /// node whose pod already exists (created before a restart, or before a
    /// status write that did not land) is running. A transient API error
    /// stops the launching and is handed back, to be retried after what was
    /// launched is recorded.
    async fn launch_queued(
        &mut self,
        job: &ImageJob,
        status: &mut ImageJobStatus,
        pods: &HashMap<&str, PodView<'_>>,
        loaded: Option<&Loaded>,
        now: Timestamp,
    ) -> Result<Option<kube::Error>> {
        let name = job.name_any();
        let rollout = &job.spec.rollout;
        for n in status.nodes.iter_mut().filter(|n| n.phase == NodePhase::Queued) {
            if let Some(pod) = pods.get(n.name.as_str()) {
                n.phase = NodePhase::Running;
                n.pod = Some(pod.name.to_owned());
                n.started = Some(Time(pod.created.unwrap_or(now)));
                self.wake_at(add_secs(pod.created.unwrap_or(now), rollout.pending_timeout_seconds));
            }
        }
        let running = status.nodes.iter().filter(|n| n.phase == NodePhase::Running).count();
        let cap = usize::try_from(rollout.max_concurrency.max(1)).unwrap_or(usize::MAX);
        let mut slots = cap.saturating_sub(running);
        // A canary node runs the new policy alone; the rest wait for it.
        let canary = status.canary.clone();
        let mut only = None;
        if let Some(node) = &canary {
            match status.nodes.iter().find(|n| &n.name == node).map(|n| n.phase) {
                Some(NodePhase::Succeeded) => {
                    if let Some(good) = self.canaries.remove(&name) {
                        tracing::info!(job = %name, node = %node, policy = %good.module, "the canary completed; the new policy is rolled out");
                        self.state.keep_good_policy(&good).await?;
                    }
                }
                Some(NodePhase::Queued) => only = Some(node.clone()),
                Some(NodePhase::Failed | NodePhase::Skipped) => {
                    self.canaries.remove(&name);
                    let message = format!("not started: the canary node {node} did not complete with the new policy");
                    for n in status.nodes.iter_mut().filter(|n| n.phase == NodePhase::Queued) {
                        fail(n, now, message.clone());
                    }
                    return Ok(None);
                }
                Some(NodePhase::Running) | None => slots = 0,
            }
        }
        let queued: Vec<usize> = status
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.phase == NodePhase::Queued)
            .filter(|(_, n)| only.as_ref().is_none_or(|c| &n.name == c))
            .map(|(i, _)| i)
            .take(slots)
            .collect();
        if queued.is_empty() {
            return Ok(None);
        }
        if !self.plans.contains_key(&name) {
            self.replan(job, loaded, now).await?;
        }
        let Some(plan) = self.plans.get(&name) else {
            return Ok(None);
        };
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let mut started = Vec::new();
        let mut transient = None;
        for i in queued {
            let Some(n) = status.nodes.get_mut(i) else { continue };
            let labels = plan.labels.get(&n.name).cloned().unwrap_or_default();
            let pod = plan
                .template
                .pod_dry_run(job, &n.name, &labels, canary.as_deref() == Some(n.name.as_str()));
            let pod_name = pod.name_any();
            match pods_api.create(&PostParams::default(), &pod).await {
                Ok(_) => {}
                // Created before a restart: the same name, the same pod.
                Err(e) if api_code(&e) == Some(409) => {}
                // Refused (a quota, an admission plugin): this node fails.
                // 401 (a token being rotated) and 429 are retried.
                Err(e) if matches!(api_code(&e), Some(400..=499)) && !matches!(api_code(&e), Some(401 | 429)) => {
                    fail(n, now, format!("could not create the worker pod: {e}"));
                    continue;
                }
                Err(e) => {
                    // Transient; the node stays queued.
                    tracing::warn!(job = %name, node = %n.name, "creating the worker pod failed: {e}");
                    transient = Some(e);
                    break;
                }
            }
            n.phase = NodePhase::Running;
            n.pod = Some(pod_name);
            n.started = Some(Time(now));
            started.push(add_secs(now, rollout.pending_timeout_seconds));
        }
        for deadline in started {
            self.wake_at(deadline);
        }
        Ok(transient)
    }
}

/// A run's pods as the store has them, by node.
fn pod_views<'a>(pods: &'a [Arc<WorkerPod>], job: &str) -> HashMap<&'a str, PodView<'a>> {
    pods.iter()
        .filter(|p| p.labels().get(LABEL_JOB).map(String::as_str) == Some(job))
        .filter_map(|p| PodView::of(p))
        .collect()
}

/// Finished pods whose results one reconcile reads and keeps at most.
const COLLECT_PER_RECONCILE: usize = 50;

fn fail(n: &mut NodeResult, now: Timestamp, message: String) {
    n.phase = NodePhase::Failed;
    n.finished = Some(Time(now));
    n.message = Some(message);
}

/// What a run needs of a worker pod.
pub struct PodView<'a> {
    name: &'a str,
    phase: Option<&'a str>,
    created: Option<Timestamp>,
    /// Being deleted: by a timeout, or by someone else.
    deleting: bool,
    /// Exit code, reason and termination message of the worker container.
    terminated: Option<(i32, Option<&'a str>, Option<&'a str>)>,
    /// Why the pod is not running yet, for the Pending timeout's message.
    waiting: Option<String>,
}

impl<'a> PodView<'a> {
    fn of(pod: &'a WorkerPod) -> Option<(&'a str, PodView<'a>)> {
        let node = pod.spec.node_name.as_deref()?;
        let status = pod.status.as_ref();
        let state = status
            .and_then(|s| s.container_statuses.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.state.as_ref());
        let terminated = state
            .and_then(|s| s.terminated.as_ref())
            .map(|t| (t.exit_code, t.reason.as_deref(), t.message.as_deref()));
        let waiting = state
            .and_then(|s| s.waiting.as_ref())
            .map(|w| match &w.message {
                Some(m) => format!("{}: {m}", w.reason.as_deref().unwrap_or("waiting")),
                None => w.reason.clone().unwrap_or_else(|| "waiting".into()),
            })
            .or_else(|| {
                status
                    .and_then(|s| s.conditions.iter().find(|c| c.status == "False" && c.reason.is_some()))
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c.reason.as_deref().unwrap_or_default(),
                            c.message.as_deref().unwrap_or_default()
                        )
                    })
            });
        let view = PodView {
            name: pod.metadata.name.as_deref()?,
            phase: status.and_then(|s| s.phase.as_deref()),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            terminated,
            waiting,
        };
        Some((node, view))
    }
}

/// A finished pod's outcome, from its exit and its termination summary.
/// Returns the termination summary, when the pod left one.
fn absorb(n: &mut NodeResult, pod: &PodView<'_>) -> Option<TerminationSummary> {
    let pod_succeeded = pod.phase == Some("Succeeded");
    let exit = pod.terminated.as_ref().map(|t| t.0);
    let summary = pod
        .terminated
        .as_ref()
        .and_then(|t| t.2)
        .filter(|m| !m.trim().is_empty())
        .map(TerminationSummary::parse);
    let mut problem = None;
    let mut pass_failed = false;
    let summary = match summary {
        Some(Ok(s)) => {
            let first_error = s.errors.first().map(String::as_str).unwrap_or("no reason given");
            match s.status {
                PassStatus::Failed => {
                    pass_failed = true;
                    problem = Some(format!("the worker's pass failed: {first_error}"));
                }
                PassStatus::Degraded => problem = Some(format!("degraded: {first_error}")),
                PassStatus::Ok => {}
            }
            n.status = Some(s.status);
            n.summary = Some(s.summary.clone());
            Some(s)
        }
        Some(Err(e)) => {
            problem = Some(e);
            None
        }
        None => {
            problem = Some("the worker left no termination summary".into());
            None
        }
    };
    let ok = pod_succeeded && exit == Some(0) && !pass_failed;
    n.phase = if ok { NodePhase::Succeeded } else { NodePhase::Failed };
    if !ok {
        let reason = pod.terminated.as_ref().and_then(|t| t.1).unwrap_or("no exit status");
        n.message = Some(match (exit, problem) {
            (Some(code), Some(p)) => format!("exit {code} ({reason}): {p}"),
            (Some(code), None) => format!("exit {code} ({reason})"),
            (None, Some(p)) => format!("{reason}: {p}"),
            (None, None) => reason.to_owned(),
        });
    } else if let Some(p) = problem {
        n.message = Some(p);
    }
    summary
}
