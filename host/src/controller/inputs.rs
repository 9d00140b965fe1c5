//! What the controller watches, each kind kept current in a reflector store
//! by its own watch: the ImageLists, scour's ImageJobs and worker pods, the
//! config ConfigMap, the system exclusion ConfigMap and the user exclusion
//! lists. Every change wakes the reconcile loop; nothing is polled.
//!
//! Stores hold only what a reconcile reads: managed fields go, a finished
//! ImageJob keeps its counts but not its per-node lists, and a worker pod is
//! decoded into [`WorkerPod`]: its node, phase, container states and
//! conditions, nothing else.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ContainerState, Pod};
use kube::api::ApiResource;
use kube::core::Object;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::crd::{ImageJob, ImageList, JobPhase};
use super::{EXCLUSION_LABEL, LABEL_MANAGED_BY, MANAGED_BY, Options};

/// What the controller reads of a worker pod; the rest of a Pod is never
/// decoded.
pub type WorkerPod = Object<WorkerPodSpec, WorkerPodStatus>;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub container_statuses: Vec<WorkerContainerStatus>,
    #[serde(default)]
    pub conditions: Vec<WorkerPodCondition>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct WorkerContainerStatus {
    pub name: String,
    #[serde(default)]
    pub state: Option<ContainerState>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct WorkerPodCondition {
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

pub struct Inputs {
    pub lists: Store<ImageList>,
    pub jobs: Store<ImageJob>,
    pub pods: Store<WorkerPod>,
    pub config: Store<ConfigMap>,
    pub system: Store<ConfigMap>,
    pub user: Store<ConfigMap>,
    changed: Arc<Notify>,
    /// Watches failing now, with their last error.
    failing: Failing,
    tasks: Vec<JoinHandle<()>>,
}

type Failing = Arc<std::sync::Mutex<BTreeMap<&'static str, String>>>;

impl Inputs {
    /// Starts the watches. They run until this is dropped.
    pub fn watch(client: &Client, opts: &Options) -> Self {
        let changed = Arc::new(Notify::new());
        let failing = Failing::default();
        let mut tasks = Vec::new();
        let ns = opts.namespace.as_str();
        let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        let timeout = opts.watch_timeout;
        let config = |c: watcher::Config| c.timeout(timeout.as_secs().clamp(1, u64::from(u32::MAX)) as u32);
        let mut watch = Watch {
            tasks: &mut tasks,
            changed: &changed,
            failing: &failing,
        };
        let lists = watch.start(
            "ImageLists",
            Api::all(client.clone()),
            (),
            config(Default::default()),
            |l: &mut ImageList| {
                l.managed_fields_mut().clear();
            },
        );
        let jobs = watch.start(
            "ImageJobs",
            Api::all(client.clone()),
            (),
            config(watcher::Config::default().labels(&managed)),
            strip_job,
        );
        let pod = ApiResource::erase::<Pod>(&());
        let pods = watch.start(
            "worker pods",
            Api::namespaced_with(client.clone(), ns, &pod),
            pod.clone(),
            config(watcher::Config::default().labels(&managed)),
            |p: &mut WorkerPod| {
                p.managed_fields_mut().clear();
                p.annotations_mut().clear();
                p.metadata.owner_references = None;
            },
        );
        let by_name = |name: &str| config(watcher::Config::default().fields(&format!("metadata.name={name}")));
        let strip_config_map = |c: &mut ConfigMap| {
            c.managed_fields_mut().clear();
            c.binary_data = None;
        };
        let config_store = watch.start(
            "the config ConfigMap",
            Api::namespaced(client.clone(), ns),
            (),
            by_name(&opts.config_map),
            strip_config_map,
        );
        let system = watch.start(
            "the system exclusion ConfigMap",
            Api::namespaced(client.clone(), ns),
            (),
            by_name(&opts.system_exclusion_config_map),
            strip_config_map,
        );
        let user = watch.start(
            "user exclusion ConfigMaps",
            Api::namespaced(client.clone(), ns),
            (),
            config(watcher::Config::default().labels(EXCLUSION_LABEL)),
            strip_config_map,
        );
        Self {
            lists,
            jobs,
            pods,
            config: config_store,
            system,
            user,
            changed,
            failing,
            tasks,
        }
    }

    /// "watching X failed: why" for each watch failing now.
    pub fn failing(&self) -> Vec<String> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(what, e)| format!("watching {what} failed: {e}"))
            .collect()
    }

    /// Waits until every store holds its first complete list.
    pub async fn ready(&self) {
        let _ = futures::join!(
            self.lists.wait_until_ready(),
            self.jobs.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.config.wait_until_ready(),
            self.system.wait_until_ready(),
            self.user.wait_until_ready(),
        );
    }

    /// Resolves on the next change to anything watched (at once if one
    /// came since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Forgets changes seen so far: the reconcile about to run reads them.
    pub fn drain(&self) {
        let _ = Box::pin(self.changed.notified()).now_or_never();
    }
}

impl Drop for Inputs {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Watch<'a> {
    tasks: &'a mut Vec<JoinHandle<()>>,
    changed: &'a Arc<Notify>,
    failing: &'a Failing,
}

impl Watch<'_> {
    fn start<K>(
        &mut self,
        what: &'static str,
        api: Api<K>,
        dyntype: K::DynamicType,
        config: watcher::Config,
        strip: fn(&mut K),
    ) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
    {
        let writer = reflector::store::Writer::new(dyntype);
        let reader = writer.as_reader();
        let stream = reflector::reflector(writer, watcher(api, config).modify(strip).default_backoff());
        let changed = self.changed.clone();
        let failing = self.failing.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let mut failing = failing.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(_) => {
                        if failing.remove(what).is_some() {
                            tracing::info!("watching {what} again");
                        }
                        changed.notify_one();
                    }
                    // Retried with backoff; logged once, not on every retry.
                    Err(e) => {
                        if failing.insert(what, e.to_string()).is_none() {
                            tracing::warn!("watching {what} failed, retrying: {e}");
                        }
                    }
                }
            }
        }));
        reader
    }
}

fn strip_job(job: &mut ImageJob) {
    job.managed_fields_mut().clear();
    if let Some(status) = job.status.as_mut()
        && status.phase.is_some_and(|p| p != JobPhase::Running)
    {
        status.nodes = Vec::new();
        job.spec.images = Vec::new();
    }
}

/// How long a watch request lasts before it is renewed; kube-rs's default.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(290);
