//! One leadership term's state, and the reconcile that every change and
//! every due time runs: read the config, progress the run in flight or
//! start one that is due, clean up. The steps live in their own modules
//! ([`super::schedule`], [`super::launch`], [`super::rollout`],
//! [`super::status`], [`super::cleanup`]); this one holds what they share.
//!
//! Reads come from the watched stores, never from polling. The stores lag
//! behind the controller's own writes: an ImageJob it has just written is
//! left alone until the store shows the write (its watch event is what
//! wakes the next reconcile), so nothing is computed from a view older than
//! what it wrote itself. And every status write carries the resourceVersion
//! it was computed from, so a view made stale by someone else ends in a 409,
//! never in an overwrite.

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

/// How long an ImageJob is left alone at most while the store does not
/// show the controller's write to it (a watch that is failing).
const PENDING_KEPT: Duration = Duration::from_secs(30);

/// A write to an ImageJob that the store does not show yet.
struct Pending {
    /// The resourceVersion the write was made over (none for a create):
    /// while the store still shows it, it has not seen the write.
    base: Option<String>,
    at: Instant,
    /// The store has had this ImageJob (at some version).
    seen: bool,
}

/// What is known of the run in flight.
pub(super) enum Active {
    Job(Arc<ImageJob>),
    /// The store has not caught up with a write to it yet; the watch event
    /// on its way wakes the next reconcile.
    Waiting(String),
    None,
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
    /// Newly vetted policies whose runs' canary nodes have not finished, by
    /// run; each becomes the last good policy once its canary succeeds.
    pub(super) canaries: HashMap<String, super::vet::VettedPolicy>,
    /// Registry policies vetted in this term, and the verdicts that stand.
    pub(super) vetted: HashMap<super::vet::VettedPolicy, std::result::Result<(), (String, bool)>>,
    /// Writes to ImageJobs the store does not show yet, by name.
    pending: BTreeMap<String, Pending>,
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
            vetted: HashMap::new(),
            canaries: HashMap::new(),
            pending: BTreeMap::new(),
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
            (Active::Job(job), _) => self.progress(&job, config.as_ref().ok(), now).await?,
            (Active::Waiting(name), _) => Tick::Running(name),
            (Active::None, Ok(loaded)) => self.maybe_start(loaded, now).await?,
            (Active::None, Err(message)) => Tick::InvalidConfig(message.clone()),
        };
        // A spec of the ImageList that no run has taken up yet waits for the
        // run in flight.
        let waiting_for = match &tick {
            Tick::Running(name) => Some(name.as_str()),
            _ => None,
        };
        self.sync_list_status(waiting_for, now).await;
        self.clean_up(now).await?;
        if !matches!(tick, Tick::Idle | Tick::InvalidConfig(_)) {
            crate::memory::release_free_memory();
        }
        Ok((tick, self.wake))
    }

    /// When to look again, in real time, whatever else happens: while an
    /// ImageJob's write is pending, the moment it would be given up on.
    pub fn recheck_after(&self) -> Option<Duration> {
        self.pending
            .values()
            .map(|p| PENDING_KEPT.saturating_sub(p.at.elapsed()) + Duration::from_millis(10))
            .min()
    }

    /// Something falls due at `t`: the loop wakes then.
    pub(super) fn wake_at(&mut self, t: Timestamp) {
        self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
    }

    /// The config from its ConfigMap, checked. An invalid one is reported
    /// once (event, metric, log) until it is fixed, and again if it breaks
    /// again.
    async fn config(&mut self, now: Timestamp) -> std::result::Result<Loaded, String> {
        const PROBLEM: &str = "invalid-config:";
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
                Some(text) => Loaded::parse(text).map_err(|e| e.to_string()),
            },
        };
        match loaded {
            Ok(loaded) => {
                self.metrics.set_config_valid(true);
                self.events.clear_except(PROBLEM, &HashSet::new());
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
                // A different error is a new problem, reported too.
                let problem = format!("{PROBLEM}{message}");
                self.events.clear_except(PROBLEM, &HashSet::from([problem.clone()]));
                if self.events.stand(&problem) {
                    tracing::error!("invalid config, no run starts until it is fixed: {message}");
                    self.events.publish(event, now).await;
                }
                Err(message)
            }
        }
    }

    /// scour's ImageJobs as the store has them, but for those it has not
    /// caught up with (see [`Reconciler::wrote`]).
    pub(super) fn jobs(&self) -> Vec<Arc<ImageJob>> {
        self.inputs
            .jobs
            .state()
            .into_iter()
            .filter(|j| !self.pending.contains_key(&j.name_any()))
            .collect()
    }

    /// The run in flight: the oldest ImageJob not yet finished.
    fn active_job(&self) -> Active {
        let mut jobs: Vec<Arc<ImageJob>> = self
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
        match (jobs.into_iter().next(), self.pending.keys().next()) {
            (Some(job), _) => Active::Job(job),
            (None, Some(name)) => Active::Waiting(name.clone()),
            (None, None) => Active::None,
        }
    }

    /// The ImageJob `name` was written over `base` (the resourceVersion the
    /// write was made against; none for a create): it is left alone until
    /// the store shows a later version.
    pub(super) fn wrote(&mut self, name: &str, base: Option<String>) {
        let seen = self.inputs.jobs.state().iter().any(|j| j.name_any() == name);
        self.pending.insert(
            name.to_owned(),
            Pending {
                base,
                at: Instant::now(),
                seen,
            },
        );
    }

    /// ImageJobs written but not yet shown by the store.
    pub(super) fn pending_jobs(&self) -> impl Iterator<Item = String> + '_ {
        self.pending.keys().cloned()
    }

    /// Forgets pending writes once the store has moved past the version
    /// they were made over (to the write, or to a later one), once the
    /// ImageJob is gone from it (deleted), or after [`PENDING_KEPT`].
    fn forget_caught_up(&mut self) {
        let stored = self.inputs.jobs.state();
        self.pending.retain(|name, p| {
            let current = stored.iter().find(|j| j.name_any() == *name);
            p.seen |= current.is_some();
            let moved_on = current.is_some_and(|j| j.resource_version() != p.base);
            let deleted = p.seen && current.is_none();
            !moved_on && !deleted && p.at.elapsed() < PENDING_KEPT
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
