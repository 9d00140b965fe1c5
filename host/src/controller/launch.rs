//! Starting a run: select the nodes, check every exclusion list, build the
//! worker pod template, and create the ImageJob with every node queued or
//! skipped. A run whose exclusions or worker settings are broken is created
//! already Failed: no pod starts anywhere, and its status says why.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};

use super::crd::{
    ImageJob, ImageJobSpec, ImageJobStatus, ImageList, JobPhase, NodePhase, NodeResult, RolloutSpec, Trigger,
};
use super::error::{Error, Result, api_code};
use super::events::Event;
use super::nodes::{self, Candidate};
use super::pods::{self, WorkerTemplate};
use super::reconcile::Reconciler;
use super::schedule::list_version;
use super::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::config::Loaded;

/// On a run that keeps the last good registry policy: why the configured
/// one was refused.
pub const CONDITION_POLICY_REFUSED: &str = "PolicyRefused";

/// On a manual run's ImageJob: the ImageList version (`uid/generation`) it ran.
pub const ANNOTATION_IMAGELIST: &str = "scour.dev/imagelist-version";

/// What every worker pod of a run is made from.
pub struct Plan {
    pub template: WorkerTemplate,
    /// Each selected node's labels, for the worker's context.
    pub labels: HashMap<String, BTreeMap<String, String>>,
}

/// A run just created; `failed_closed` holds the inputs' fingerprint when it
/// failed closed.
pub struct Started {
    pub name: String,
    pub failed_closed: Option<String>,
}

/// What a run is started with; see [`Reconciler::prepare`].
pub struct Prepared {
    pub candidates: Vec<Candidate>,
    pub worker_image: Option<String>,
    pub plan: Result<Plan>,
    /// Why the configured registry policy was refused, when the run keeps
    /// the last good one.
    pub policy_refused: Option<String>,
    /// A newly vetted policy to run dry on one node first.
    pub canary: Option<super::vet::VettedPolicy>,
}

impl Reconciler {
    pub(super) async fn start(
        &mut self,
        name: &str,
        trigger: Trigger,
        list: Option<&ImageList>,
        loaded: &Loaded,
        now: Timestamp,
    ) -> Result<Started> {
        let api: Api<ImageJob> = Api::all(self.client.clone());
        let carry_on = Started {
            name: name.to_owned(),
            failed_closed: None,
        };
        if api.get_metadata_opt(name).await?.is_some() {
            // Created by us before a restart, or by the previous leader.
            tracing::info!(job = name, "the run already exists; carrying on with it");
            return Ok(carry_on);
        }
        // Everything the run needs is read before its ImageJob exists: an
        // API error here creates nothing, and the next reconcile tries again.
        let prepared = self.prepare(loaded, now).await?;
        let (success_delay, failure_delay) = loaded.cleanup_delays();
        let selected = prepared.candidates.iter().filter(|c| c.skip.is_none()).count();
        let spec = ImageJobSpec {
            trigger,
            images: list.map(|l| l.spec.images.clone()).unwrap_or_default(),
            policy_sha256: loaded.config.scour.policy.sha256.clone(),
            worker_image: prepared.worker_image.clone().unwrap_or_default(),
            dry_run: loaded.dry_run(),
            rollout: RolloutSpec {
                max_concurrency: loaded.max_concurrency().of(selected) as i64,
                pending_timeout_seconds: secs(loaded.pending_timeout()),
                node_timeout_seconds: secs(loaded.node_timeout()),
                success_ratio: loaded.success_ratio(),
                delay_on_success_seconds: secs(success_delay),
                delay_on_failure_seconds: secs(failure_delay),
            },
        };
        let mut job = ImageJob::new(name, spec);
        job.metadata.labels = Some(BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned())]));
        if let Some(l) = list {
            job.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_IMAGELIST.to_owned(), list_version(l))]));
        }
        let job = match api.create(&PostParams::default(), &job).await {
            Ok(job) => job,
            Err(e) if api_code(&e) == Some(409) => return Ok(carry_on),
            Err(e) => return Err(e.into()),
        };
        self.wrote(&job.name_any(), None);
        self.launch(job, prepared, now).await
    }

    /// Sets up a created ImageJob's status: every node queued or skipped,
    /// or, when the plan failed, the whole run failed closed.
    pub(super) async fn launch(&mut self, job: ImageJob, prepared: Prepared, now: Timestamp) -> Result<Started> {
        let name = job.name_any();
        let Prepared {
            candidates,
            plan,
            policy_refused,
            canary,
            ..
        } = prepared;
        let mut status = ImageJobStatus {
            phase: Some(JobPhase::Running),
            policy: plan
                .as_ref()
                .ok()
                .and_then(|p| p.template.policy.module())
                .map(str::to_owned),
            start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            nodes: candidates
                .iter()
                .map(|c| NodeResult {
                    name: c.name.clone(),
                    phase: if c.skip.is_some() {
                        NodePhase::Skipped
                    } else {
                        NodePhase::Queued
                    },
                    message: c.skip.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let selected = candidates.iter().filter(|c| c.skip.is_none()).count();
        let mut failed_closed = None;
        if let Some(why) = policy_refused {
            let generation = job.meta().generation;
            super::status::set_condition(
                &mut status.conditions,
                CONDITION_POLICY_REFUSED,
                true,
                "PolicyRefused",
                &why,
                generation,
                now,
            );
            let event = Event {
                regarding: job.object_ref(&()),
                warning: true,
                reason: "PolicyRefused",
                action: "StartRun",
                note: why,
            };
            self.events.publish(event, now).await;
        }
        let canary_node = canary.as_ref().and_then(|_| {
            status
                .nodes
                .iter()
                .find(|n| n.phase == NodePhase::Queued)
                .map(|n| n.name.clone())
        });
        match plan {
            Ok(plan) => {
                self.plans.insert(name.clone(), plan);
                if let (Some(node), Some(vetted)) = (&canary_node, canary) {
                    tracing::info!(job = %name, node = %node, policy = %vetted.module, "a canary node runs the new policy dry first");
                    self.canaries.insert(name.clone(), vetted);
                    status.canary = Some(node.clone());
                }
                let message = format!(
                    "{}{} run started: {selected} nodes selected, {} skipped, at most {} at once",
                    if job.spec.dry_run { "dry " } else { "" },
                    job.spec.trigger.as_str(),
                    candidates.len() - selected,
                    job.spec.rollout.max_concurrency
                );
                tracing::info!(job = %name, "{message}");
                let event = Event {
                    regarding: job.object_ref(&()),
                    warning: false,
                    reason: "RunStarted",
                    action: "StartRun",
                    note: message,
                };
                self.events.publish(event, now).await;
            }
            Err(e) => {
                // Reported when the run finishes, which is at once.
                let message = format!("run failed closed, nothing was removed on any node: {e}");
                tracing::error!(job = %name, "{message}");
                for n in status.nodes.iter_mut().filter(|n| n.phase == NodePhase::Queued) {
                    n.phase = NodePhase::Failed;
                    n.message = Some("not started: the run failed closed".into());
                }
                status.message = Some(message);
                failed_closed = Some(self.inputs_fingerprint());
            }
        }
        // A run with nothing to do finishes here, as does one that failed closed.
        self.write_progress(&job, status, now).await?;
        Ok(Started { name, failed_closed })
    }

    /// Every user exclusion ConfigMap must parse before any pod starts: a
    /// run must not go ahead with half its exclusions.
    async fn exclusions(&mut self, now: Timestamp) -> Result<(Option<String>, Vec<String>)> {
        const PROBLEM: &str = "no-system-exclusions";
        let (system, user) = self.config_maps();
        let system_name = self.opts.system_exclusion_config_map.clone();
        let system = match system {
            Some(cm) => {
                self.events.clear(PROBLEM);
                check_exclusions(&cm)?;
                Some(system_name)
            }
            None => {
                let message = format!(
                    "system exclusion ConfigMap {system_name} not found; workers still protect in-use, pinned and sandbox images"
                );
                if self.events.stand(PROBLEM) {
                    tracing::warn!("{message}");
                    let event = Event {
                        regarding: self.config_map_ref(&system_name),
                        warning: true,
                        reason: "MissingSystemExclusions",
                        action: "StartRun",
                        note: message,
                    };
                    self.events.publish(event, now).await;
                }
                None
            }
        };
        let mut names = Vec::new();
        for cm in user {
            check_exclusions(&cm)?;
            names.push(cm.name_any());
        }
        Ok((system, names))
    }

    /// The nodes, the worker image and the exclusions for a run. API errors
    /// are returned; a worker image or exclusion list that cannot be used is
    /// the plan's error, which fails the run closed.
    pub(super) async fn prepare(&mut self, loaded: &Loaded, now: Timestamp) -> Result<Prepared> {
        let candidates = nodes::select(&Api::<Node>::all(self.client.clone()), loaded, &self.opts.config_map).await?;
        let image = pods::worker_image(loaded, self.opts.worker_image.as_deref(), &self.opts.config_map);
        let worker_image = image.as_ref().ok().cloned();
        let (mut policy_refused, mut canary) = (None, None);
        let plan = match image {
            Err(e) => Err(e),
            Ok(image) => match self.exclusions(now).await {
                Ok((system, user)) => match self.choose_policy(loaded, now).await? {
                    Ok(choice) => {
                        policy_refused = choice.refused;
                        canary = choice.canary;
                        let mut plan = self.plan(loaded, image, system, user, &candidates);
                        plan.template.policy = choice.mount;
                        Ok(plan)
                    }
                    Err(why) => Err(Error::Policy(why)),
                },
                Err(e @ Error::Kube(_)) => return Err(e),
                Err(e) => Err(e),
            },
        };
        Ok(Prepared {
            candidates,
            worker_image,
            plan,
            policy_refused,
            canary,
        })
    }

    fn plan(
        &self,
        loaded: &Loaded,
        image: String,
        system: Option<String>,
        user: Vec<String>,
        candidates: &[Candidate],
    ) -> Plan {
        let m = &loaded.config.manager;
        let template = WorkerTemplate {
            image,
            namespace: self.opts.namespace.clone(),
            service_account: self.opts.worker_service_account.clone(),
            config_map: self.opts.config_map.clone(),
            runtime_socket: pods::runtime_socket(loaded),
            node_state_dir: self.opts.node_state_dir.clone(),
            image_fs: loaded.image_fs_path(),
            system_exclusions: system,
            user_exclusions: user,
            policy: pods::policy_mount(loaded),
            resources: pods::resources(loaded),
            extra_labels: m.additional_pod_labels.clone(),
            pull_secrets: m.pull_secrets.clone(),
            priority_class: m.priority_class_name.clone().filter(|p| !p.is_empty()),
            log_level: m.log_level.clone().filter(|l| !l.trim().is_empty()),
        };
        Plan {
            template,
            labels: candidates
                .iter()
                .filter(|c| c.skip.is_none())
                .map(|c| (c.name.clone(), c.labels.clone()))
                .collect(),
        }
    }

    /// Rebuilds a run's worker template after a restart or a leader change,
    /// from the config and exclusions as they are now.
    pub(super) async fn replan(&mut self, job: &ImageJob, loaded: Option<&Loaded>, now: Timestamp) -> Result<()> {
        let Some(loaded) = loaded else {
            tracing::warn!(job = %job.name_any(), "queued nodes wait: the config is invalid");
            return Ok(());
        };
        let problem = format!("queued-nodes-wait:{}", job.name_any());
        match self.prepare(loaded, now).await?.plan {
            Ok(mut plan) => {
                // The run's worker image and policy pin, not today's.
                if !job.spec.worker_image.is_empty() {
                    plan.template.image = job.spec.worker_image.clone();
                }
                if let (
                    pods::PolicyMount::ConfigMap { sha256, .. } | pods::PolicyMount::Path { sha256, .. },
                    Some(pin),
                ) = (&mut plan.template.policy, &job.spec.policy_sha256)
                {
                    *sha256 = pin.clone();
                }
                if let (pods::PolicyMount::Registry { module, .. }, Some(pinned)) = (
                    &mut plan.template.policy,
                    job.status.as_ref().and_then(|s| s.policy.as_ref()),
                ) {
                    *module = pinned.clone();
                }
                self.events.clear(&problem);
                self.plans.insert(job.name_any(), plan);
            }
            Err(e) => {
                let note = format!("queued nodes wait, and start once this is fixed: {e}");
                if self.events.stand(&problem) {
                    tracing::warn!(job = %job.name_any(), "{note}");
                    let event = Event {
                        regarding: job.object_ref(&()),
                        warning: true,
                        reason: "QueuedNodesWait",
                        action: "LaunchNodes",
                        note,
                    };
                    self.events.publish(event, now).await;
                }
            }
        }
        Ok(())
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn check_exclusions(cm: &ConfigMap) -> Result<()> {
    let name = cm.name_any();
    let bad = |message: String| Error::Exclusions {
        name: name.clone(),
        message,
    };
    let data = cm.data.clone().unwrap_or_default();
    let keys: Vec<&String> = data.keys().filter(|k| k.ends_with(".json")).collect();
    if keys.is_empty() {
        return Err(bad(
            "has no key ending in .json; put {\"excluded\": [...]} under a key such as excluded.json".into(),
        ));
    }
    for (key, text) in data.iter().filter(|(k, _)| k.ends_with(".json")) {
        crate::exclusions::parse_list(text).map_err(|e| bad(format!("key {key}: {e}")))?;
    }
    Ok(())
}
