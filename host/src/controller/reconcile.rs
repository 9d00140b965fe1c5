//! The controller's loop body. Each `tick` (every few seconds, or driven by
//! a test with its own clock): lead or stand by; progress the active run
//! (collect finished pods, time out Pending ones, launch queued nodes within
//! the rollout cap, finish); or start a run when the ImageList changed or
//! the interval elapsed; then delete finished pods whose delay has passed.
//! Everything lives in the API (ImageJob status, a state ConfigMap, the
//! Lease), so a restarted or standby controller carries on where it stopped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use sha2::Digest;

use super::api::{delete_if_present, each_page};
use super::crd::{
    ImageJob, ImageJobSpec, ImageJobStatus, ImageList, ImageListStatus, JobPhase, NodePhase, NodeResult, RolloutSpec,
    Trigger,
};
use super::error::{Error, Result, api_code};
use super::lease::Elector;
use super::metrics::{Metrics, RunOutcome};
use super::nodes::{self, Candidate};
use super::pods::{self, CONTAINER, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, WorkerTemplate};
use super::state;
use crate::config::Loaded;
use crate::report::{Status as PassStatus, TerminationSummary};

/// The only ImageList acted on, as in Eraser.
pub const IMAGELIST_NAME: &str = "imagelist";
pub const CONFIG_KEY: &str = "controller_manager_config.yaml";
pub const EXCLUSION_LABEL: &str = "eraser.sh/exclude.list=true";
const ANNOTATION_IMAGELIST: &str = "scour.dev/imagelist-version";
/// On a run's ImageJob while it runs, so a tick reads only that one in full.
const LABEL_ACTIVE: &str = "scour.dev/active";
/// On a finished ImageJob: when its pods go, and that they are gone.
const ANNOTATION_DELETE_AFTER: &str = "scour.dev/delete-after";
const ANNOTATION_PODS_DELETED: &str = "scour.dev/pods-deleted";
/// etcd refuses objects over 1.5 MiB; per-node image lists are trimmed to
/// keep the ImageJob status under this (counts stay exact).
const STATUS_BUDGET: usize = 800 * 1024;
const FIELD_MANAGER: &str = "scour-controller";

/// Where and as whom the controller works.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    pub config_map: String,
    pub worker_image: Option<String>,
    pub identity: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub worker_service_account: String,
    pub state_config_map: String,
    pub node_state_dir: String,
    pub system_exclusion_config_map: String,
    /// Finished ImageJobs kept as records.
    pub history: usize,
}

impl Options {
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            config_map: "eraser-manager-config".into(),
            worker_image: None,
            identity: identity.to_owned(),
            lease_name: "scour-controller".into(),
            lease_duration: Duration::from_secs(15),
            worker_service_account: "scour-worker".into(),
            state_config_map: "scour-state".into(),
            node_state_dir: "/var/lib/scour".into(),
            system_exclusion_config_map: "eraser-system-exclusion".into(),
            history: 10,
        }
    }
}

/// What a tick did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Another replica holds the lease.
    Follower,
    /// Nothing to start or progress.
    Idle,
    /// The config is invalid; no run starts until it is fixed.
    InvalidConfig(String),
    Started(String),
    Running(String),
    Finished(String),
}

/// A run just created; `failed_closed` holds the inputs' fingerprint when it
/// failed closed.
struct Started {
    name: String,
    failed_closed: Option<String>,
}

/// What a run is started with; see [`Controller::prepare`].
struct Prepared {
    candidates: Vec<Candidate>,
    worker_image: Option<String>,
    plan: Result<Plan>,
}

struct Plan {
    template: WorkerTemplate,
    labels: HashMap<String, BTreeMap<String, String>>,
}

pub struct Controller {
    client: Client,
    opts: Options,
    elector: Elector,
    state: state::Store,
    metrics: Arc<Metrics>,
    plans: HashMap<String, Plan>,
    /// Warnings already raised, so a standing problem is one event, not one per tick.
    reported: HashSet<String>,
    event_seq: u64,
}

impl Controller {
    pub fn new(client: Client, opts: Options, metrics: Arc<Metrics>) -> Self {
        let elector = Elector::new(
            Api::namespaced(client.clone(), &opts.namespace),
            &opts.lease_name,
            &opts.identity,
            opts.lease_duration,
        );
        let state = state::Store::new(Api::namespaced(client.clone(), &opts.namespace), &opts.state_config_map);
        Self {
            client,
            opts,
            elector,
            state,
            metrics,
            plans: HashMap::new(),
            reported: HashSet::new(),
            event_seq: 0,
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Steps down, so a standby replica takes over without waiting for the
    /// lease to expire.
    pub async fn shutdown(&mut self) {
        self.elector.release().await;
        self.metrics.set_leader(false);
    }

    pub async fn tick(&mut self, now: Timestamp) -> Result<Tick> {
        let leading = self.elector.try_lead(now).await;
        self.metrics.set_leader(matches!(leading, Ok(true)));
        if !leading? {
            return Ok(Tick::Follower);
        }
        let config = match self.load_config().await {
            Ok(loaded) => {
                self.metrics.set_config_valid(true);
                Ok(loaded)
            }
            Err(Error::Config { config_map, message }) => {
                self.metrics.set_config_valid(false);
                self.report_config(&config_map, &message, now).await;
                Err(message)
            }
            Err(e) => return Err(e),
        };
        let jobs_api: Api<ImageJob> = Api::all(self.client.clone());
        let active = jobs_api
            .list(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ACTIVE}=true")))
            .await?
            .items;
        let outcome = match (active.first(), &config) {
            // A run in flight goes on with the rules it started with.
            (Some(job), _) => self.progress(job, config.as_ref().ok(), now).await?,
            (None, Ok(loaded)) => self.maybe_start(loaded, now).await?,
            (None, Err(message)) => Tick::InvalidConfig(message.clone()),
        };
        drop(active);
        self.clean_up(now).await?;
        crate::memory::release_free_memory();
        Ok(outcome)
    }

    async fn load_config(&mut self) -> Result<Loaded> {
        let bad = |message: String| Error::Config {
            config_map: self.opts.config_map.clone(),
            message,
        };
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let cm = api
            .get_opt(&self.opts.config_map)
            .await?
            .ok_or_else(|| bad("not found; the chart creates it, with key controller_manager_config.yaml".into()))?;
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(CONFIG_KEY))
            .ok_or_else(|| bad(format!("no key {CONFIG_KEY}")))?;
        let loaded = Loaded::parse(text).map_err(bad)?;
        for w in &loaded.warnings {
            if self.reported.insert(format!("warning:{w}")) {
                tracing::warn!(config_map = %self.opts.config_map, "{w}");
            }
        }
        Ok(loaded)
    }

    async fn report_config(&mut self, config_map: &str, message: &str, now: Timestamp) {
        let key = format!("config:{message}");
        if !self.reported.insert(key) {
            return;
        }
        tracing::error!(%config_map, "invalid config, no run starts until it is fixed: {message}");
        let target = self.config_map_ref(&self.opts.config_map);
        self.event(target, true, "InvalidConfig", message, now).await;
    }

    async fn maybe_start(&mut self, loaded: &Loaded, now: Timestamp) -> Result<Tick> {
        let mut state = self.state.load().await?;
        let lists: Api<ImageList> = Api::all(self.client.clone());
        let all = lists.list(&ListParams::default()).await?.items;
        for other in all.iter().filter(|l| l.name_any() != IMAGELIST_NAME) {
            let key = format!("ignored:{}", other.uid().unwrap_or_default());
            if self.reported.insert(key) {
                let message = format!(
                    "ignored: only the ImageList named {IMAGELIST_NAME:?} starts a run; rename this one to use it"
                );
                tracing::warn!(imagelist = %other.name_any(), "{message}");
                self.event(other.object_ref(&()), true, "Ignored", &message, now).await;
            }
        }
        let list = all.into_iter().find(|l| l.name_any() == IMAGELIST_NAME);
        let manual_name = |list: &ImageList| {
            format!(
                "scour-manual-{}-g{}",
                list.uid().unwrap_or_default().chars().take(8).collect::<String>(),
                list.meta().generation.unwrap_or(0)
            )
        };
        if let Some(list) = &list {
            let version = list_version(list);
            if state.imagelist.as_deref() != Some(version.as_str()) {
                let started = self
                    .start(&manual_name(list), Trigger::Manual, Some(list), loaded, now)
                    .await?;
                // Recorded after the job exists; a crash in between finds
                // the job by its name instead of starting a second one.
                state.imagelist = Some(version);
                state.retry = match &started.failed_closed {
                    Some(fp) => Some(format!("manual:{fp}")),
                    None => state.retry.filter(|r| r.starts_with("automatic:")),
                };
                self.state.save(&state).await?;
                return Ok(Tick::Started(started.name));
            }
        }
        // A run that failed closed is tried again once the config or an
        // exclusion list has changed, rather than an interval later or
        // never.
        if let Some(retry) = state.retry.clone() {
            let (trigger, old) = retry.split_once(':').unwrap_or(("", ""));
            let current = self.inputs_fingerprint().await?;
            if current != old {
                let started = match (trigger, &list) {
                    ("manual", Some(list)) => {
                        let name = format!("{}-r{}", manual_name(list), &current[..6]);
                        Some(self.start(&name, Trigger::Manual, Some(list), loaded, now).await?)
                    }
                    ("automatic", _) if loaded.automatic_enabled() => {
                        let name = format!("scour-automatic-{}-r{}", now.strftime("%Y%m%d-%H%M%S"), &current[..6]);
                        Some(self.start(&name, Trigger::Automatic, None, loaded, now).await?)
                    }
                    _ => None,
                };
                state.retry = started
                    .as_ref()
                    .and_then(|s| s.failed_closed.as_ref())
                    .map(|fp| format!("{trigger}:{fp}"));
                self.state.save(&state).await?;
                if let Some(started) = started {
                    return Ok(Tick::Started(started.name));
                }
            }
        }
        if !loaded.automatic_enabled() {
            state.next_run = None;
            state.interval = None;
            self.state.save(&state).await?;
            return Ok(Tick::Idle);
        }
        let interval = loaded.interval().map_err(|message| Error::Config {
            config_map: self.opts.config_map.clone(),
            message,
        })?;
        let due = match (state.next_run, state.interval) {
            (None, _) if loaded.begin_immediately() => now,
            (None, _) => add(now, interval),
            // A changed interval moves the pending run with it.
            (Some(t), Some(old)) if old != interval => add(sub(t, old), interval),
            (Some(t), _) => t,
        };
        state.interval = Some(interval);
        if now < due {
            state.next_run = Some(due);
            self.state.save(&state).await?;
            return Ok(Tick::Idle);
        }
        let name = format!("scour-automatic-{}", due.strftime("%Y%m%d-%H%M%S"));
        let started = self.start(&name, Trigger::Automatic, None, loaded, now).await?;
        state.next_run = Some(add(now, interval));
        state.retry = started.failed_closed.map(|fp| format!("automatic:{fp}"));
        self.state.save(&state).await?;
        Ok(Tick::Started(started.name))
    }

    /// Creates the ImageJob with every node queued or skipped. A run whose
    /// exclusions or worker settings are broken is created already Failed:
    /// no pod starts anywhere, and the status says why.
    async fn start(
        &mut self,
        name: &str,
        trigger: Trigger,
        list: Option<&ImageList>,
        loaded: &Loaded,
        now: Timestamp,
    ) -> Result<Started> {
        let api: Api<ImageJob> = Api::all(self.client.clone());
        if let Some(existing) = api.get_opt(name).await? {
            // Created by us before a restart, or by the previous leader.
            tracing::info!(job = name, "the run already exists; carrying on with it");
            return Ok(Started {
                name: existing.name_any(),
                failed_closed: None,
            });
        }
        // Everything the run needs is read before its ImageJob exists: an
        // API error here creates nothing, and the next tick tries again.
        let Prepared {
            candidates,
            worker_image,
            plan,
        } = self.prepare(loaded, now).await?;
        let (success_delay, failure_delay) = loaded.cleanup_delays();
        let selected = candidates.iter().filter(|c| c.skip.is_none()).count();
        let spec = ImageJobSpec {
            trigger,
            images: list.map(|l| l.spec.images.clone()).unwrap_or_default(),
            policy_sha256: loaded.config.scour.policy.sha256.clone(),
            worker_image: worker_image.unwrap_or_default(),
            rollout: RolloutSpec {
                max_concurrency: loaded.max_concurrency().of(selected) as i64,
                pending_timeout_seconds: loaded.pending_timeout().as_secs() as i64,
                node_timeout_seconds: loaded.node_timeout().as_secs() as i64,
                success_ratio: loaded.success_ratio(),
                delay_on_success_seconds: success_delay.as_secs() as i64,
                delay_on_failure_seconds: failure_delay.as_secs() as i64,
            },
        };
        let mut job = ImageJob::new(name, spec);
        job.metadata.labels = Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_ACTIVE.to_owned(), "true".to_owned()),
        ]));
        if let Some(l) = list {
            job.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_IMAGELIST.to_owned(), list_version(l))]));
        }
        let job = match api.create(&PostParams::default(), &job).await {
            Ok(job) => job,
            Err(e) if api_code(&e) == Some(409) => {
                return Ok(Started {
                    name: name.to_owned(),
                    failed_closed: None,
                });
            }
            Err(e) => return Err(e.into()),
        };

        let mut status = ImageJobStatus {
            phase: Some(JobPhase::Running),
            desired: candidates.len() as i64,
            start_time: Some(Time(now)),
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
        let target = job.object_ref(&());
        let mut failed_closed = None;
        match plan {
            Ok(plan) => {
                self.plans.insert(name.to_owned(), plan);
                let message = format!(
                    "{} run started: {selected} nodes selected, {} skipped, at most {} at once",
                    trigger.as_str(),
                    candidates.len() - selected,
                    job.spec.rollout.max_concurrency
                );
                tracing::info!(job = name, "{message}");
                self.event(target, false, "RunStarted", &message, now).await;
                if candidates.iter().all(|c| c.skip.is_some()) {
                    self.finish(&job, &mut status, now).await;
                }
                self.write_status(name, &mut status).await?;
            }
            Err(e) => {
                let message = format!("run failed closed, nothing was removed on any node: {e}");
                tracing::error!(job = name, "{message}");
                for n in status.nodes.iter_mut().filter(|n| n.phase == NodePhase::Queued) {
                    n.phase = NodePhase::Failed;
                    n.message = Some("not started: the run failed closed".into());
                }
                status.message = Some(message.clone());
                self.event(target, true, "RunFailed", &message, now).await;
                self.finish(&job, &mut status, now).await;
                self.write_status(name, &mut status).await?;
                failed_closed = Some(self.inputs_fingerprint().await?);
            }
        }
        Ok(Started {
            name: name.to_owned(),
            failed_closed,
        })
    }

    /// Changes whenever the config or an exclusion ConfigMap changes: what
    /// a run that failed closed waits for before it is tried again.
    async fn inputs_fingerprint(&self) -> Result<String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let mut parts = Vec::new();
        for name in [&self.opts.config_map, &self.opts.system_exclusion_config_map] {
            let version = api
                .get_metadata_opt(name)
                .await?
                .and_then(|m| m.metadata.resource_version);
            parts.push(format!("{name}={}", version.unwrap_or_default()));
        }
        let mut user: Vec<String> = api
            .list_metadata(&ListParams::default().labels(EXCLUSION_LABEL))
            .await?
            .items
            .into_iter()
            .map(|m| format!("{}={}", m.name_any(), m.metadata.resource_version.unwrap_or_default()))
            .collect();
        user.sort();
        parts.extend(user);
        let digest = sha2::Sha256::digest(parts.join("\n").as_bytes());
        Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Every user exclusion ConfigMap must parse before any pod starts: a
    /// run must not go ahead with half its exclusions.
    async fn exclusions(&mut self, now: Timestamp) -> Result<(Option<String>, Vec<String>)> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let system_name = &self.opts.system_exclusion_config_map.clone();
        let system = match api.get_opt(system_name).await? {
            Some(cm) => {
                check_exclusions(&cm)?;
                Some(system_name.clone())
            }
            None => {
                if self.reported.insert(format!("no-system:{system_name}")) {
                    let message = format!(
                        "system exclusion ConfigMap {system_name} not found; workers still protect in-use, pinned and sandbox images"
                    );
                    tracing::warn!("{message}");
                    let target = self.config_map_ref(system_name);
                    self.event(target, true, "MissingSystemExclusions", &message, now).await;
                }
                None
            }
        };
        let mut user = Vec::new();
        for cm in api.list(&ListParams::default().labels(EXCLUSION_LABEL)).await?.items {
            check_exclusions(&cm)?;
            user.push(cm.name_any());
        }
        user.sort();
        Ok((system, user))
    }

    /// The nodes, the worker image and the exclusions for a run. API errors
    /// are returned; a worker image or exclusion list that cannot be used is
    /// the plan's error, which fails the run closed.
    async fn prepare(&mut self, loaded: &Loaded, now: Timestamp) -> Result<Prepared> {
        let candidates = nodes::select(&Api::<Node>::all(self.client.clone()), loaded, &self.opts.config_map).await?;
        let image = pods::worker_image(loaded, self.opts.worker_image.as_deref(), &self.opts.config_map);
        let worker_image = image.as_ref().ok().cloned();
        let plan = match image {
            Err(e) => Err(e),
            Ok(image) => match self.exclusions(now).await {
                Ok((system, user)) => Ok(self.plan(loaded, image, system, user, &candidates)),
                Err(e @ Error::Kube(_)) => return Err(e),
                Err(e) => Err(e),
            },
        };
        Ok(Prepared {
            candidates,
            worker_image,
            plan,
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

    async fn progress(&mut self, job: &ImageJob, loaded: Option<&Loaded>, now: Timestamp) -> Result<Tick> {
        let name = job.name_any();
        let mut status = job.status.clone().unwrap_or_default();
        let rollout = &job.spec.rollout;
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let pods = self.pod_views(&pods_api, &name).await?;
        let mut changed = false;
        for n in status.nodes.iter_mut().filter(|n| n.phase == NodePhase::Running) {
            match pods.get(&n.name) {
                None => {
                    n.phase = NodePhase::Failed;
                    n.finished = Some(Time(now));
                    n.message = Some(format!(
                        "worker pod {} disappeared before it finished",
                        n.pod.as_deref().unwrap_or("?")
                    ));
                    changed = true;
                }
                Some(pod) => match pod.phase.as_deref() {
                    Some("Succeeded" | "Failed") => {
                        absorb(n, pod);
                        n.finished = Some(Time(now));
                        changed = true;
                    }
                    phase => {
                        let started = n.started.as_ref().map(|t| t.0).unwrap_or(now);
                        let waited = now.duration_since(started).as_secs();
                        let pending = matches!(phase, Some("Pending") | None);
                        let (limit, what) = if pending {
                            (rollout.pending_timeout_seconds, "stayed Pending for")
                        } else {
                            (rollout.node_timeout_seconds, "did not finish within")
                        };
                        // 0 means no limit (records written before the field existed).
                        if limit > 0 && waited >= limit {
                            delete_if_present(&pods_api, &pod.name).await?;
                            n.phase = NodePhase::Failed;
                            n.finished = Some(Time(now));
                            let why = if pending { pod.waiting.as_ref() } else { None };
                            n.message = Some(format!(
                                "worker pod {what} {}{}; deleted it",
                                humantime::format_duration(Duration::from_secs(limit as u64)),
                                why.map(|r| format!(" ({r})")).unwrap_or_default()
                            ));
                            tracing::warn!(job = %name, node = %n.name, "{}", n.message.as_deref().unwrap_or(""));
                            changed = true;
                        }
                    }
                },
            }
        }

        let running = status.nodes.iter().filter(|n| n.phase == NodePhase::Running).count();
        let slots = (rollout.max_concurrency.max(1) as usize).saturating_sub(running);
        let queued: Vec<usize> = status
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.phase == NodePhase::Queued)
            .map(|(i, _)| i)
            .take(slots)
            .collect();
        if !queued.is_empty() {
            if !self.plans.contains_key(&name) {
                self.replan(job, loaded, now).await?;
            }
            if let Some(plan) = self.plans.get(&name) {
                for i in queued {
                    let node = status.nodes[i].name.clone();
                    let labels = plan.labels.get(&node).cloned().unwrap_or_default();
                    let pod = plan.template.pod(job, &node, &labels);
                    let pod_name = pod.name_any();
                    let n = &mut status.nodes[i];
                    match pods_api.create(&PostParams::default(), &pod).await {
                        Ok(_) => {}
                        // Created before a restart: the same name, the same pod.
                        Err(e) if api_code(&e) == Some(409) => {}
                        Err(e) if matches!(api_code(&e), Some(400..=499)) && api_code(&e) != Some(429) => {
                            n.phase = NodePhase::Failed;
                            n.finished = Some(Time(now));
                            n.message = Some(format!("could not create the worker pod: {e}"));
                            changed = true;
                            continue;
                        }
                        Err(e) => {
                            // Transient; the node stays queued for the next tick.
                            tracing::warn!(job = %name, %node, "creating the worker pod failed: {e}");
                            break;
                        }
                    }
                    n.phase = NodePhase::Running;
                    n.pod = Some(pod_name);
                    n.started = Some(Time(now));
                    changed = true;
                }
            }
        }

        let done = status.nodes.iter().all(|n| n.phase.is_done());
        if done {
            self.finish(job, &mut status, now).await;
            changed = true;
        }
        if changed {
            self.write_status(&name, &mut status).await?;
        }
        Ok(if done {
            Tick::Finished(name)
        } else {
            Tick::Running(name)
        })
    }

    /// Rebuilds a run's worker template after a controller restart, from
    /// the config as it is now.
    async fn replan(&mut self, job: &ImageJob, loaded: Option<&Loaded>, now: Timestamp) -> Result<()> {
        let Some(loaded) = loaded else {
            tracing::warn!(job = %job.name_any(), "queued nodes wait: the config is invalid");
            return Ok(());
        };
        match self.prepare(loaded, now).await?.plan {
            Ok(plan) => {
                self.plans.insert(job.name_any(), plan);
            }
            Err(e) => tracing::warn!(job = %job.name_any(), "queued nodes wait: {e}"),
        }
        Ok(())
    }

    /// Counts, the success ratio (in floating point: 272 of 273 at 0.95 is
    /// Completed), cleanup time, metrics, events and the ImageList status.
    async fn finish(&mut self, job: &ImageJob, status: &mut ImageJobStatus, now: Timestamp) {
        let count = |p: NodePhase| status.nodes.iter().filter(|n| n.phase == p).count() as i64;
        status.succeeded = count(NodePhase::Succeeded);
        status.failed = count(NodePhase::Failed);
        status.skipped = count(NodePhase::Skipped);
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
        status.delete_after = Some(Time(add(now, Duration::from_secs(delay.max(0) as u64))));
        let summaries = || status.nodes.iter().filter_map(|n| n.summary.as_ref());
        status.removed = summaries().map(|s| s.removed as i64).sum();
        status.bytes_freed = summaries().map(|s| s.bytes_freed as i64).sum();

        let started = status.start_time.as_ref().map(|t| t.0).unwrap_or(now);
        let automatic = job.spec.trigger == Trigger::Automatic;
        self.metrics.record_run(&RunOutcome {
            succeeded: status.succeeded as u64,
            failed: status.failed as u64,
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
        let message = format!(
            "{}: {} of {} nodes succeeded, {} failed, {} skipped; {} images removed, {} freed",
            if completed { "completed" } else { "failed" },
            status.succeeded,
            status.desired,
            status.failed,
            status.skipped,
            status.removed,
            crate::units::format_bytes(status.bytes_freed.max(0) as u64),
        );
        tracing::info!(job = %job.name_any(), "{message}");
        let reason = if completed { "RunCompleted" } else { "RunFailed" };
        self.event(job.object_ref(&()), !completed, reason, &message, now).await;
        if job.spec.trigger == Trigger::Manual {
            self.write_imagelist_status(job, status, &message, now).await;
        }
    }

    async fn write_imagelist_status(&mut self, job: &ImageJob, status: &ImageJobStatus, message: &str, now: Timestamp) {
        let api: Api<ImageList> = Api::all(self.client.clone());
        let Ok(Some(list)) = api.get_opt(IMAGELIST_NAME).await else {
            return;
        };
        // A list deleted and re-created since gets its own run and status.
        let version = job.annotations().get(ANNOTATION_IMAGELIST).cloned().unwrap_or_default();
        if !version.starts_with(&format!("{}/", list.uid().unwrap_or_default())) {
            return;
        }
        let new = ImageListStatus {
            timestamp: Some(Time(now)),
            success: status.succeeded,
            failed: status.failed,
            skipped: status.skipped,
            job: Some(job.name_any()),
            phase: status.phase,
            removed: status.removed,
            bytes_freed: status.bytes_freed,
            message: status.message.clone(),
        };
        let patch = Patch::Merge(json!({ "status": new }));
        if let Err(e) = api
            .patch_status(IMAGELIST_NAME, &PatchParams::apply(FIELD_MANAGER), &patch)
            .await
        {
            tracing::warn!("writing the ImageList status failed: {e}");
        }
        let failed = status.phase != Some(JobPhase::Completed);
        let reason = if failed { "RunFailed" } else { "RunCompleted" };
        self.event(list.object_ref(&()), failed, reason, message, now).await;
    }

    async fn write_status(&self, name: &str, status: &mut ImageJobStatus) -> Result<()> {
        fit_budget(status);
        let api: Api<ImageJob> = Api::all(self.client.clone());
        let patch = Patch::Merge(json!({ "status": status }));
        api.patch_status(name, &PatchParams::apply(FIELD_MANAGER), &patch)
            .await?;
        if status.phase != Some(JobPhase::Running) {
            let delete_after = status.delete_after.as_ref().map(|t| t.0.to_string());
            let patch = Patch::Merge(json!({ "metadata": {
                "labels": { LABEL_ACTIVE: null },
                "annotations": { ANNOTATION_DELETE_AFTER: delete_after },
            }}));
            api.patch_metadata(name, &PatchParams::apply(FIELD_MANAGER), &patch)
                .await?;
        }
        Ok(())
    }

    /// The run's pods, a page at a time, each reduced to what the run needs.
    async fn pod_views(&self, api: &Api<Pod>, job: &str) -> Result<HashMap<String, PodView>> {
        let mut out = HashMap::new();
        let params = ListParams::default().labels(&format!("{LABEL_JOB}={job}"));
        each_page(
            params,
            |p| async move { api.list(&p).await },
            |pod| {
                if let Some((node, view)) = PodView::of(pod) {
                    out.insert(node, view);
                }
            },
        )
        .await?;
        Ok(out)
    }

    /// Deletes finished worker pods once their run's delay has passed, and
    /// the oldest records beyond the history limit. Reads only metadata.
    async fn clean_up(&mut self, now: Timestamp) -> Result<()> {
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let jobs_api: Api<ImageJob> = Api::all(self.client.clone());
        let mut finished: Vec<_> = jobs_api
            .list_metadata(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY},!{LABEL_ACTIVE}")))
            .await?
            .items;
        finished.sort_by_key(|j| std::cmp::Reverse((j.metadata.creation_timestamp.clone(), j.name_any())));
        for (i, job) in finished.iter().enumerate() {
            let name = job.name_any();
            let annotations = job.annotations();
            let expired = i >= self.opts.history;
            let due = annotations
                .get(ANNOTATION_DELETE_AFTER)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_none_or(|t| t <= now);
            if !annotations.contains_key(ANNOTATION_PODS_DELETED) && (due || expired) {
                let pods = pods_api
                    .list_metadata(&ListParams::default().labels(&format!("{LABEL_JOB}={name}")))
                    .await?;
                for pod in pods.items {
                    delete_if_present(&pods_api, &pod.name_any()).await?;
                }
                if !expired {
                    let params = PatchParams::apply(FIELD_MANAGER);
                    let status = Patch::Merge(json!({ "status": { "podsDeleted": true } }));
                    jobs_api.patch_status(&name, &params, &status).await?;
                    let meta =
                        Patch::Merge(json!({ "metadata": { "annotations": { ANNOTATION_PODS_DELETED: "true" } } }));
                    jobs_api.patch_metadata(&name, &params, &meta).await?;
                }
                self.plans.remove(&name);
            }
            if expired {
                delete_if_present(&jobs_api, &name).await?;
            }
        }
        Ok(())
    }

    fn config_map_ref(&self, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(name.to_owned()),
            namespace: Some(self.opts.namespace.clone()),
            ..Default::default()
        }
    }

    /// Records a Kubernetes Event; failures are logged, never fatal.
    async fn event(&mut self, target: ObjectReference, warning: bool, reason: &str, message: &str, now: Timestamp) {
        self.event_seq += 1;
        let object = target.name.clone().unwrap_or_default();
        // The API server files events about cluster-scoped objects (ImageList,
        // ImageJob) under `default`, and others under the object's namespace.
        let namespace = target.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{object}.{:x}{:04x}",
                    now.as_nanosecond(),
                    self.event_seq % 0x10000
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: target,
            reason: Some(reason.to_owned()),
            message: Some(message.chars().take(1024).collect()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            source: Some(EventSource {
                component: Some("scour-controller".into()),
                host: None,
            }),
            reporting_component: Some("scour.dev/controller".into()),
            reporting_instance: Some(self.opts.identity.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(%reason, "recording an event failed: {e}");
        }
    }
}

/// What a run needs of a worker pod.
struct PodView {
    name: String,
    phase: Option<String>,
    /// Exit code, reason and termination message of the worker container.
    terminated: Option<(i32, Option<String>, Option<String>)>,
    /// Why the pod is not running yet, for the Pending timeout's message.
    waiting: Option<String>,
}

impl PodView {
    fn of(pod: Pod) -> Option<(String, PodView)> {
        let node = pod.spec.as_ref()?.node_name.clone()?;
        let name = pod.name_any();
        let status = pod.status.unwrap_or_default();
        let state = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == CONTAINER)
            .and_then(|c| c.state);
        let terminated = state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| (t.exit_code, t.reason.clone(), t.message.clone()));
        let waiting = state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .map(|w| match &w.message {
                Some(m) => format!("{}: {m}", w.reason.as_deref().unwrap_or("waiting")),
                None => w.reason.clone().unwrap_or_else(|| "waiting".into()),
            })
            .or_else(|| {
                status
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.status == "False" && c.reason.is_some())
                    .map(|c| format!("{}: {}", c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
            });
        let view = PodView {
            name,
            phase: status.phase,
            terminated,
            waiting,
        };
        Some((node, view))
    }
}

/// A finished pod's outcome, from its exit and its termination summary.
fn absorb(n: &mut NodeResult, pod: &PodView) {
    let pod_succeeded = pod.phase.as_deref() == Some("Succeeded");
    let exit = pod.terminated.as_ref().map(|t| t.0);
    let summary = pod
        .terminated
        .as_ref()
        .and_then(|t| t.2.as_deref())
        .filter(|m| !m.trim().is_empty())
        .map(TerminationSummary::parse);
    let mut problem = None;
    match summary {
        Some(Ok(s)) => {
            if s.status == PassStatus::Failed {
                problem = Some(format!(
                    "the worker's pass failed: {}",
                    s.errors.first().map(String::as_str).unwrap_or("no reason given")
                ));
            }
            n.status = Some(s.status);
            n.summary = Some(s.summary);
            n.removed = s.removed;
            n.failed = s.failed;
            n.errors = s.errors;
            n.omitted = s.omitted as u64;
        }
        Some(Err(e)) => problem = Some(e),
        None => problem = Some("the worker left no termination summary".into()),
    }
    let pass_failed = problem.as_deref().is_some_and(|p| p.starts_with("the worker's pass"));
    let ok = pod_succeeded && exit == Some(0) && !pass_failed;
    n.phase = if ok { NodePhase::Succeeded } else { NodePhase::Failed };
    if !ok {
        let reason = pod
            .terminated
            .as_ref()
            .and_then(|t| t.1.clone())
            .unwrap_or_else(|| "no exit status".into());
        n.message = Some(match (exit, problem) {
            (Some(code), Some(p)) => format!("exit {code} ({reason}): {p}"),
            (Some(code), None) => format!("exit {code} ({reason})"),
            (None, Some(p)) => format!("{reason}: {p}"),
            (None, None) => reason,
        });
    } else if let Some(p) = problem {
        n.message = Some(p);
    }
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
    for key in keys {
        crate::exclusions::parse_list(&data[key]).map_err(|e| bad(format!("key {key}: {e}")))?;
    }
    Ok(())
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

/// `uid/generation`: a spec version of an ImageList; a re-created list is a
/// new version even with the same images.
fn list_version(list: &ImageList) -> String {
    format!(
        "{}/{}",
        list.uid().unwrap_or_default(),
        list.meta().generation.unwrap_or(0)
    )
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
