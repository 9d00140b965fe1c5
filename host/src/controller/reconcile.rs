//! One leadership term's state, and the reconcile that every change and
//! every due time runs: read the config, progress the run in flight or
//! start one that is due, clean up. The steps live in their own modules
//! ([`super::schedule`], [`super::launch`], [`super::rollout`],
//! [`super::status`], [`super::cleanup`]); this one holds what they share.
//!
//! Reads come from the watched stores, never from polling. The stores lag
//! behind the controller's own writes, so the ImageJobs it wrote last are
//! kept here and preferred over the store's copy until the store catches
//! up; every status write carries the resourceVersion it was computed
//! from, so a stale view ends in a 409 and a fresh read, never in an
//! overwrite.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, ResourceExt};

use super::crd::{ImageJob, JobPhase};
use super::error::{Error, Result};
use super::events::{Event, Recorder};
use super::inputs::Inputs;
use super::launch::Plan;
use super::metrics::Metrics;
use super::{CONFIG_KEY, Options, Tick, state};
use crate::config::Loaded;

/// How long a written ImageJob is preferred over the store's copy at most.
const WRITTEN_KEPT: Duration = Duration::from_secs(30);

struct Written {
    job: ImageJob,
    /// The resourceVersion the write was made against: while the store
    /// still shows it, the store has not seen the write.
    base: Option<String>,
    at: Instant,
    /// The store has had this ImageJob (at some version).
    seen: bool,
}

pub struct Reconciler {
    pub(super) client: Client,
    pub(super) opts: Options,
    pub(super) metrics: Arc<Metrics>,
    pub(super) inputs: Inputs,
    pub(super) state: state::Store,
    /// Worker templates of runs in flight, by ImageJob name.
    pub(super) plans: HashMap<String, Plan>,
    pub(super) events: Recorder,
    /// ImageJobs as this term last wrote them, by name.
    written: BTreeMap<String, Written>,
    /// The earliest time something falls due, gathered during a reconcile.
    wake: Option<Timestamp>,
}

impl Reconciler {
    pub fn new(client: Client, opts: Options, metrics: Arc<Metrics>) -> Self {
        let inputs = Inputs::watch(&client, &opts);
        let state = state::Store::new(Api::namespaced(client.clone(), &opts.namespace), &opts.state_config_map);
        let events = Recorder::new(client.clone(), &opts.identity);
        Self {
            client,
            opts,
            metrics,
            inputs,
            state,
            plans: HashMap::new(),
            events,
            written: BTreeMap::new(),
            wake: None,
        }
    }

    /// Returns what it did and when it next needs to run, if nothing
    /// changes before then.
    pub async fn reconcile(&mut self, now: Timestamp) -> Result<(Tick, Option<Timestamp>)> {
        self.wake = None;
        self.forget_caught_up();
        let config = self.config(now).await;
        let tick = match (self.active_job(), &config) {
            // A run in flight goes on with the rules it started with.
            (Some(job), _) => self.progress(&job, config.as_ref().ok(), now).await?,
            (None, Ok(loaded)) => self.maybe_start(loaded, now).await?,
            (None, Err(message)) => Tick::InvalidConfig(message.clone()),
        };
        self.clean_up(now).await?;
        if !matches!(tick, Tick::Idle | Tick::InvalidConfig(_)) {
            crate::memory::release_free_memory();
        }
        Ok((tick, self.wake))
    }

    /// Something falls due at `t`: the loop wakes then.
    pub(super) fn wake_at(&mut self, t: Timestamp) {
        self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
    }

    /// The config from its ConfigMap, checked. An invalid one is reported
    /// once (event, metric, log) until it is fixed, and again if it breaks
    /// again.
    async fn config(&mut self, now: Timestamp) -> std::result::Result<Loaded, String> {
        const PROBLEM: &str = "invalid-config";
        let name = self.opts.config_map.clone();
        let cm = self
            .inputs
            .config
            .state()
            .into_iter()
            .find(|c| c.name_any() == name && c.metadata.deletion_timestamp.is_none());
        let loaded = match &cm {
            None => Err(format!("not found; the chart creates it, with key {CONFIG_KEY}")),
            Some(cm) => match cm.data.as_ref().and_then(|d| d.get(CONFIG_KEY)) {
                None => Err(format!("no key {CONFIG_KEY}")),
                Some(text) => Loaded::parse(text),
            },
        };
        match loaded {
            Ok(loaded) => {
                self.metrics.set_config_valid(true);
                self.events.clear(PROBLEM);
                // Warnings (ignored keys) are logged once while they stand.
                let warnings: HashSet<String> = loaded.warnings.iter().map(|w| format!("config-warning:{w}")).collect();
                self.events.clear_except("config-warning:", &warnings);
                for w in &loaded.warnings {
                    if self.events.stand(&format!("config-warning:{w}")) {
                        tracing::warn!(config_map = %name, "{w}");
                    }
                }
                Ok(loaded)
            }
            Err(message) => {
                self.metrics.set_config_valid(false);
                let message = Error::Config {
                    config_map: name.clone(),
                    message,
                }
                .to_string();
                let event = Event {
                    regarding: self.config_map_ref(&name),
                    warning: true,
                    reason: "InvalidConfig",
                    action: "LoadConfig",
                    note: message.clone(),
                };
                if self.events.stand(PROBLEM) {
                    tracing::error!("invalid config, no run starts until it is fixed: {message}");
                    self.events.publish(event, now).await;
                }
                Err(message)
            }
        }
    }

    /// scour's ImageJobs: the store's, with this term's own writes preferred.
    pub(super) fn jobs(&self) -> Vec<ImageJob> {
        let stored = self.inputs.jobs.state();
        let mut jobs: Vec<ImageJob> = stored
            .iter()
            .map(|j| match self.written.get(&j.name_any()) {
                Some(w) => w.job.clone(),
                None => (**j).clone(),
            })
            .collect();
        jobs.extend(
            self.written
                .values()
                .map(|w| &w.job)
                .filter(|w| stored.iter().all(|j| j.name_any() != w.name_any()))
                .cloned(),
        );
        jobs
    }

    /// The run in flight: the oldest ImageJob not yet finished.
    fn active_job(&self) -> Option<ImageJob> {
        let mut jobs: Vec<ImageJob> = self
            .jobs()
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_none_or(|p| p == JobPhase::Running)
            })
            .collect();
        jobs.sort_by_key(|j| (j.metadata.creation_timestamp.clone(), j.name_any()));
        jobs.into_iter().next()
    }

    /// Remembers an ImageJob as written over `base` (the resourceVersion
    /// it was written against; none for a create or a fresh read), for
    /// reconciles before the store sees it.
    pub(super) fn written(&mut self, job: ImageJob, base: Option<String>) {
        let seen = self.inputs.jobs.state().iter().any(|j| j.name_any() == job.name_any());
        self.written.insert(
            job.name_any(),
            Written {
                job,
                base,
                at: Instant::now(),
                seen,
            },
        );
    }

    /// Forgets a written ImageJob: after a conflict, or once deleted.
    pub(super) fn forget(&mut self, name: &str) {
        self.written.remove(name);
    }

    /// Drops written copies once the store has moved past the version they
    /// were written over (to our write, or to a later one), those the store
    /// had and no longer has (deleted), and any older than [`WRITTEN_KEPT`]:
    /// then the store is the better view.
    fn forget_caught_up(&mut self) {
        let stored = self.inputs.jobs.state();
        self.written.retain(|name, w| {
            let current = stored.iter().find(|j| j.name_any() == *name);
            w.seen |= current.is_some();
            let moved_on = current.is_some_and(|j| j.resource_version() != w.base);
            let deleted = w.seen && current.is_none();
            !moved_on && !deleted && w.at.elapsed() < WRITTEN_KEPT
        });
    }

    /// The exclusion and config ConfigMaps as the stores have them.
    pub(super) fn config_maps(&self) -> (Option<Arc<ConfigMap>>, Vec<Arc<ConfigMap>>) {
        let system = self
            .inputs
            .system
            .state()
            .into_iter()
            .find(|c| c.name_any() == self.opts.system_exclusion_config_map);
        let mut user = self.inputs.user.state();
        user.sort_by_key(|c| c.name_any());
        (system, user)
    }

    pub(super) fn config_map_ref(&self, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(name.to_owned()),
            namespace: Some(self.opts.namespace.clone()),
            ..Default::default()
        }
    }
}
