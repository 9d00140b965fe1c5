//! The cluster controller: on an interval, or when the ImageList named
//! `imagelist` changes, it starts one worker pod per selected node and
//! records what each node removed in an ImageJob.
//!
//! The data path of a run: schedule (is a run due) → launch (select nodes,
//! check exclusions, create the ImageJob) → rollout (worker pods within the
//! cap, collect each one's termination summary, time out the stuck) →
//! status (ImageJob and ImageList status, events, metrics) → cleanup
//! (finished pods, old records).
//!
//! It is event-driven: watches keep a store of each input ([`inputs`]),
//! every change wakes one reconcile, and a timer wakes it when something
//! falls due (the next automatic run, a Pending or node timeout, a pod
//! cleanup). An idle leader asks the API server for nothing but Lease
//! renewals and the periodic renewal of its watches. Everything lives in the
//! API (ImageJob status, a state ConfigMap, the Lease), so a restarted or
//! standby controller carries on where the last one stopped.

mod api;
mod cleanup;
pub mod clock;
pub mod crd;
mod error;
mod events;
mod inputs;
mod launch;
mod lease;
pub mod metrics;
mod nodes;
pub mod pods;
mod reconcile;
mod results;
mod rollout;
mod schedule;
pub mod serve;
mod state;
mod status;
pub mod vet;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, SystemClock};
pub use error::{Error, Result};
pub use inputs::DEFAULT_WATCH_TIMEOUT;

use lease::Elector;
use metrics::Metrics;
use reconcile::Reconciler;

/// The only ImageList acted on, as in Eraser.
pub const IMAGELIST_NAME: &str = "imagelist";
/// The config's key in its ConfigMap, as in Eraser.
pub const CONFIG_KEY: &str = "controller_manager_config.yaml";
/// User exclusion lists carry this label, as in Eraser.
pub const EXCLUSION_LABEL: &str = "eraser.sh/exclude.list=true";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "scour";
/// On worker pods: the ImageJob they belong to.
pub const LABEL_JOB: &str = "scour.dev/job";
/// Field manager of the controller's writes (server-side apply).
pub const FIELD_MANAGER: &str = "scour-controller";

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
    /// Changes arriving within this long are handled by one reconcile.
    pub debounce: Duration,
    /// How long each watch request lasts before it is renewed.
    pub watch_timeout: Duration,
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
            debounce: Duration::from_millis(500),
            watch_timeout: DEFAULT_WATCH_TIMEOUT,
        }
    }
}

/// What a reconcile did, for logs and tests.
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

/// The controller's latest reconcile, published for health checks and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Reconciles so far (follower checks of the Lease included).
    pub reconciles: u64,
    /// The clock's time when the latest one ran.
    pub at: Option<Timestamp>,
    pub tick: Option<Tick>,
    /// The latest one's error, if it failed; it is retried.
    pub error: Option<String>,
    /// The API server has answered at least once.
    pub reached: bool,
}

/// Retries after a failed reconcile (API errors), doubling up to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// How long a new leader waits for its watches before it says which one
/// keeps it from reconciling.
const WATCH_PATIENCE: Duration = Duration::from_secs(10);

pub struct Controller {
    client: Client,
    opts: Options,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    progress: watch::Sender<Progress>,
}

impl Controller {
    pub fn new(client: Client, opts: Options, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        let (progress, _) = watch::channel(Progress {
            reconciles: 0,
            at: None,
            tick: None,
            error: None,
            reached: false,
        });
        Self {
            client,
            opts,
            clock,
            metrics,
            progress,
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Follows every reconcile.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Runs until `cancel`: stands by while another replica leads, leads
    /// when the Lease is free, and steps down (releasing the Lease, so a
    /// standby takes over at once) when cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let mut elector = Elector::new(
            kube::Api::namespaced(self.client.clone(), &self.opts.namespace),
            &self.opts.lease_name,
            &self.opts.identity,
            self.opts.lease_duration,
        );
        // A standby tries for the Lease this often; a leader renews it as often.
        let period = self.opts.lease_duration / 3;
        let mut retry = RETRY_FIRST;
        while !cancel.is_cancelled() {
            let now = self.clock.now();
            match elector.try_lead(now).await {
                Ok(true) => {
                    retry = RETRY_FIRST;
                    self.metrics.set_leader(true);
                    self.lead(&mut elector, period, &cancel).await;
                    self.metrics.set_leader(false);
                    continue;
                }
                Ok(false) => {
                    retry = RETRY_FIRST;
                    self.publish(now, Ok(Tick::Follower));
                }
                Err(e) => {
                    tracing::warn!("the Lease could not be read or taken: {e}");
                    self.publish(now, Err(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = cancel.cancelled() => {}
                    }
                    retry = (retry * 2).min(RETRY_CAP);
                    continue;
                }
            }
            tokio::select! {
                _ = self.clock.sleep_until(clock::add(now, period)) => {}
                _ = cancel.cancelled() => {}
            }
        }
        elector.release().await;
    }

    /// One leadership term: reconcile on every change and when something
    /// falls due, while the Lease is renewed alongside, so a long reconcile
    /// (thousands of pods to create) never lets it lapse. Returns when the
    /// Lease is lost, dropping whatever the reconcile was doing, or on
    /// `cancel`.
    async fn lead(&self, elector: &mut Elector, period: Duration, cancel: &CancellationToken) {
        let mut reconciler = Reconciler::new(self.client.clone(), self.opts.clone(), self.metrics.clone());
        tokio::select! {
            () = self.renew(elector, period) => {}
            () = self.serve(&mut reconciler, cancel) => {}
        }
    }

    /// Renews the Lease every `period`; returns once it is lost, or once a
    /// failed renewal leaves too little of it to be sure.
    async fn renew(&self, elector: &mut Elector, period: Duration) {
        let mut renew_at = clock::add(self.clock.now(), period);
        loop {
            self.clock.sleep_until(renew_at).await;
            let now = self.clock.now();
            match elector.try_lead(now).await {
                Ok(true) => renew_at = clock::add(now, period),
                Ok(false) => {
                    tracing::warn!("lost the Lease to another replica; standing by");
                    return;
                }
                // Our last renewal still holds the Lease for a while: try
                // again soon rather than give up the term.
                Err(e) if elector.valid_until().is_some_and(|t| clock::add(now, period) < t) => {
                    tracing::warn!("renewing the Lease failed, trying again: {e}");
                    renew_at = clock::add(now, period / 4);
                }
                Err(e) => {
                    // Unsure whether we still lead: stop acting until we know.
                    tracing::warn!("renewing the Lease failed, standing by: {e}");
                    return;
                }
            }
        }
    }

    /// Reconciles once every store holds its first list, then on every
    /// change (debounced), when something falls due, and after a failure
    /// (with backoff, in real time). Runs until cancelled.
    async fn serve(&self, reconciler: &mut Reconciler, cancel: &CancellationToken) {
        let mut ready = false;
        let mut due = false;
        let mut wake: Option<Timestamp> = None;
        // Real-time deadlines: a retry after a failure, a recheck the
        // reconcile asked for, a look at failing watches.
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut backoff = RETRY_FIRST;
        loop {
            if ready && due {
                due = false;
                reconciler.inputs.drain();
                let now = self.clock.now();
                let outcome = reconciler.reconcile(now).await;
                let recheck = reconciler.recheck_after();
                match &outcome {
                    Ok((_, next)) => {
                        wake = *next;
                        backoff = RETRY_FIRST;
                        retry_at = recheck.map(|d| tokio::time::Instant::now() + d);
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        // What was due is retried with the backoff, not at once.
                        wake = wake.filter(|w| *w > now);
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(RETRY_CAP);
                    }
                }
                let failing = reconciler.inputs.failing();
                self.metrics.set_watches_failing(failing.len());
                let outcome = match (outcome, failing.is_empty()) {
                    (Ok((tick, _)), true) => Ok(tick),
                    (Ok(_), false) => Err(failing.join("; ")),
                    (Err(e), _) => Err(e.to_string()),
                };
                self.publish(now, outcome);
            }
            let wake_sleep = async {
                match wake {
                    Some(w) => self.clock.sleep_until(w).await,
                    None => std::future::pending().await,
                }
            };
            let retry_sleep = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = reconciler.inputs.ready(), if !ready => {
                    ready = true;
                    due = true;
                }
                // Not ready yet: say which watch keeps it so.
                _ = tokio::time::sleep(WATCH_PATIENCE), if !ready => {
                    let failing = reconciler.inputs.failing();
                    self.metrics.set_watches_failing(failing.len());
                    let why = if failing.is_empty() {
                        "the watches have not listed everything yet".to_owned()
                    } else {
                        failing.join("; ")
                    };
                    tracing::warn!("not reconciling yet: {why}");
                    self.publish(self.clock.now(), Err(format!("not reconciling yet: {why}")));
                }
                _ = reconciler.inputs.changed(), if ready => {
                    // Let a burst of changes (a page of pods finishing) settle
                    // into one reconcile.
                    tokio::time::sleep(self.opts.debounce).await;
                    due = true;
                }
                _ = wake_sleep => due = true,
                _ = retry_sleep => {
                    retry_at = None;
                    due = true;
                }
                _ = cancel.cancelled() => return,
            }
        }
    }

    fn publish(&self, now: Timestamp, outcome: std::result::Result<Tick, String>) {
        self.progress.send_modify(|p| {
            p.reconciles += 1;
            p.at = Some(now);
            match outcome {
                Ok(tick) => {
                    if p.tick.as_ref() != Some(&tick) && !matches!(tick, Tick::Running(_)) {
                        tracing::debug!(?tick, "reconciled");
                    }
                    p.tick = Some(tick);
                    p.error = None;
                    p.reached = true;
                }
                Err(e) => p.error = Some(e),
            }
        });
    }
}
