//! A real Kubernetes control plane ([`ControlPlane`]) set up the way scour's
//! chart leaves a cluster: scour's CRDs, the chart's ServiceAccounts and
//! RBAC (from `deploy/manifests/scour.yaml`, the rendered chart), and the
//! ConfigMaps a test seeds; with scour's controller running in-process as
//! the chart's ServiceAccount (never as an admin), on a clock the test
//! moves. No kubelet runs: a test ends worker pods itself, writing their
//! status as a kubelet would ([`Cluster::finish_pod`]), or runs the node
//! agent ([`crate::kubelet`]).
//!
//! Waiting: the controller reacts to watch events on its own, so a test
//! either waits for what it expects ([`Cluster::eventually`]) or, to show
//! that nothing happens, waits until the controller has been quiet for a
//! while ([`Cluster::settle`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Node, Pod,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use scour::controller::crd::{ImageJob, ImageList, NodeReport};
use scour::controller::metrics::Metrics;
use scour::controller::{Controller, Options, Progress};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::ManualClock;
use crate::control_plane::{ControlPlane, User, require_control_plane};

/// The namespace the chart installs into.
pub const NS: &str = "kube-system";
/// Where the test clock starts.
pub const START: &str = "2026-11-23T10:00:00Z";
/// The worker image when the config names none.
pub const FALLBACK_IMAGE: &str = "ghcr.io/scour-dev/scour:fallback";
/// How long [`Cluster::eventually`] waits.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long without a reconcile counts as settled.
const QUIET: Duration = Duration::from_millis(600);
const FIELD_MANAGER: &str = "scour-test";

pub struct Cluster {
    pub plane: ControlPlane,
    pub admin: Client,
    pub clock: Arc<ManualClock>,
    controllers: Vec<Replica>,
}

/// A controller running in this process.
pub struct Replica {
    pub identity: String,
    pub metrics: Arc<Metrics>,
    progress: watch::Receiver<Progress>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Cluster {
    /// A control plane with scour installed; `None` (a loud skip, a failure
    /// in CI) where one cannot run.
    pub async fn start() -> Option<Self> {
        let cluster = Self::bare().await?;
        cluster.install_scour().await;
        Some(cluster)
    }

    /// A control plane with nothing of scour's installed.
    pub async fn bare() -> Option<Self> {
        Self::bare_with(Vec::new()).await
    }

    /// [`Cluster::start`] with extra kube-apiserver flags.
    pub async fn start_with(apiserver_args: Vec<String>) -> Option<Self> {
        let cluster = Self::bare_with(apiserver_args).await?;
        cluster.install_scour().await;
        Some(cluster)
    }

    async fn bare_with(apiserver_args: Vec<String>) -> Option<Self> {
        if !require_control_plane() {
            return None;
        }
        // The in-process controller's log, shown with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("SCOUR_TEST_LOG").unwrap_or_else(|_| "scour=info".into()),
            ))
            .with_test_writer()
            .try_init();
        let plane = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = apiserver_args.iter().map(String::as_str).collect();
            ControlPlane::start_with_args(&args)
        })
        .await
        .expect("the start thread")
        .expect("the control plane starts");
        let admin = plane.client(User::Admin);
        Some(Self {
            plane,
            admin,
            clock: Arc::new(ManualClock::new(START.parse().unwrap())),
            controllers: Vec::new(),
        })
    }

    /// The CRDs as `scour crd` prints them, and the chart's ServiceAccounts
    /// and RBAC exactly as the rendered chart has them.
    pub async fn install_scour(&self) {
        for crd in scour::controller::crd::crds() {
            self.apply(&crd).await;
        }
        let manifests = std::fs::read_to_string(crate::guests::workspace_root().join("deploy/manifests/scour.yaml"))
            .expect("deploy/manifests/scour.yaml");
        for doc in serde_yaml::Deserializer::from_str(&manifests) {
            let value = serde_json::Value::deserialize(doc).expect("a YAML document");
            let kind = value["kind"].as_str().unwrap_or_default();
            if matches!(
                kind,
                "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
            ) {
                self.apply_value(&value).await;
            }
        }
        let crds: Api<CustomResourceDefinition> = Api::all(self.admin.clone());
        for crd in scour::controller::crd::crds() {
            let name = crd.name_any();
            self.eventually(&format!("CRD {name} established"), || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            })
            .await;
        }
    }

    /// Creates or updates an object as the admin (server-side apply).
    pub async fn apply<K: Resource<DynamicType = ()> + Serialize>(&self, object: &K) -> DynamicObject {
        let mut value = serde_json::to_value(object).expect("serializes");
        value["apiVersion"] = K::api_version(&()).into();
        value["kind"] = K::kind(&()).into();
        self.apply_value(&value).await
    }

    async fn apply_value(&self, value: &serde_json::Value) -> DynamicObject {
        let (group, version) = match value["apiVersion"].as_str().unwrap_or_default().split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (
                String::new(),
                value["apiVersion"].as_str().unwrap_or_default().to_owned(),
            ),
        };
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let resource = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(&group, &version, &kind));
        let name = value["metadata"]["name"].as_str().expect("a name").to_owned();
        let api: Api<DynamicObject> = match value["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(self.admin.clone(), ns, &resource),
            None => Api::all_with(self.admin.clone(), &resource),
        };
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(value))
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"))
    }

    /// Options for a controller replica as the chart runs it, made fast
    /// for tests.
    pub fn options(identity: &str) -> Options {
        let mut opts = Options::new(NS, identity);
        opts.worker_image = Some(FALLBACK_IMAGE.into());
        opts.debounce = Duration::from_millis(20);
        opts
    }

    /// A client as `user`, naming itself `agent` in the audit log.
    pub fn client_as(&self, user: User, agent: &str) -> Client {
        let mut config = self.plane.kube_config(user);
        config.headers.retain(|(name, _)| name != http::header::USER_AGENT);
        config
            .headers
            .push((http::header::USER_AGENT, http::HeaderValue::from_str(agent).unwrap()));
        Client::try_from(config).expect("a client")
    }

    /// Starts a controller replica as the chart's ServiceAccount; returns its index.
    pub async fn start_controller(&mut self, opts: Options) -> usize {
        let agent = format!("scour-controller/test ({})", opts.identity);
        let client = self.client_as(User::Controller, &agent);
        let metrics = Arc::new(Metrics::default());
        let identity = opts.identity.clone();
        let controller = Controller::new(client, opts, self.clock.clone(), metrics.clone());
        let progress = controller.progress();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(controller.run(cancel.clone()));
        self.controllers.push(Replica {
            identity,
            metrics,
            progress,
            cancel,
            task: Some(task),
        });
        self.controllers.len() - 1
    }

    pub fn controller(&self, i: usize) -> &Replica {
        &self.controllers[i]
    }

    /// Stops a replica the way a killed process stops: no step-down, the
    /// Lease is left to expire.
    pub async fn crash_controller(&mut self, i: usize) {
        if let Some(task) = self.controllers[i].task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stops a replica the way SIGTERM does: it steps down first.
    pub async fn stop_controller(&mut self, i: usize) {
        self.controllers[i].cancel.cancel();
        if let Some(task) = self.controllers[i].task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("the controller stops")
                .expect("the controller task");
        }
    }

    /// Moves the test clock.
    pub fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
    }

    pub fn now(&self) -> Timestamp {
        use scour::controller::Clock;
        self.clock.now()
    }

    /// Waits until `check` returns something, polling; panics after a minute.
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                let progress: Vec<String> = self
                    .controllers
                    .iter()
                    .map(|r| format!("{}: {:?}", r.identity, *r.progress.borrow()))
                    .collect();
                panic!("timed out after {PATIENCE:?} waiting for {what}; controllers: {progress:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no running replica has reconciled for a while: whatever
    /// the last change set off has happened.
    pub async fn settle(&self) {
        let counts = || -> Vec<u64> {
            self.controllers
                .iter()
                .filter(|r| r.task.as_ref().is_some_and(|t| !t.is_finished()))
                .map(|r| r.progress.borrow().reconciles)
                .collect()
        };
        let deadline = Instant::now() + PATIENCE;
        let mut last = counts();
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = counts();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= QUIET {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not settle within {PATIENCE:?}"
            );
        }
    }

    /// The latest reconcile of replica `i`.
    pub fn progress(&self, i: usize) -> Progress {
        self.controllers[i].progress.borrow().clone()
    }

    // ------------------------------------------------------------ objects

    pub async fn list<K>(&self, api: Api<K>) -> Vec<K>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let mut items = api.list(&ListParams::default()).await.expect("a list").items;
        items.sort_by_key(|o| o.meta().name.clone());
        items
    }

    pub async fn pods(&self) -> Vec<Pod> {
        self.list(Api::namespaced(self.admin.clone(), NS)).await
    }

    /// Worker pods not yet ended (and not being deleted).
    pub async fn unfinished_pods(&self) -> Vec<Pod> {
        self.pods()
            .await
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
            })
            .collect()
    }

    /// The ImageJobs, by name (creation times have a resolution of a
    /// second: they do not order runs made within one).
    pub async fn jobs(&self) -> Vec<ImageJob> {
        self.list(Api::<ImageJob>::all(self.admin.clone())).await
    }

    pub async fn job(&self, name: &str) -> ImageJob {
        Api::<ImageJob>::all(self.admin.clone())
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("ImageJob {name}: {e}"))
    }

    /// The NodeReports of run `job`, by node, parts in order.
    pub async fn reports(&self, job: &str) -> BTreeMap<String, Vec<NodeReport>> {
        let api: Api<NodeReport> = Api::all(self.admin.clone());
        let params = ListParams::default().labels(&format!("scour.dev/job={job}"));
        let mut out: BTreeMap<String, Vec<NodeReport>> = BTreeMap::new();
        for r in api.list(&params).await.expect("listing NodeReports").items {
            out.entry(r.spec.node.clone()).or_default().push(r);
        }
        for parts in out.values_mut() {
            parts.sort_by_key(|r| r.name_any());
        }
        out
    }

    pub async fn imagelist(&self) -> Option<ImageList> {
        Api::<ImageList>::all(self.admin.clone())
            .get_opt("imagelist")
            .await
            .expect("reading the ImageList")
    }

    /// Every Event, in the order they were recorded (by event time, then
    /// by etcd revision: on the test clock, many share a time).
    pub async fn events(&self) -> Vec<Event> {
        let mut events = self.list(Api::<Event>::all(self.admin.clone())).await;
        events.sort_by_key(|e| {
            let revision: u64 = e
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (e.event_time.as_ref().map(|t| t.0), revision)
        });
        events
    }

    /// Pods created so far, as the API server's audit log counts them.
    pub fn pods_created(&self) -> usize {
        self.plane
            .audit()
            .into_iter()
            .filter(|e| e.resource == "pods" && e.verb == "create" && e.code == 201)
            .count()
    }

    pub async fn config_map(&self, name: &str) -> Option<ConfigMap> {
        Api::<ConfigMap>::namespaced(self.admin.clone(), NS)
            .get_opt(name)
            .await
            .expect("reading a ConfigMap")
    }

    // ------------------------------------------------------------ the kubelet's part

    /// Ends a worker pod as a kubelet reports it: phase, and the worker
    /// container terminated with `exit` and the termination `message`.
    pub async fn finish_pod(&self, name: &str, exit: i32, message: &str) {
        let state = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: exit,
                reason: Some(if exit == 0 { "Completed" } else { "Error" }.into()),
                message: (!message.is_empty()).then(|| message.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let phase = if exit == 0 { "Succeeded" } else { "Failed" };
        self.write_pod_status(name, phase, state).await;
    }

    /// Leaves a worker pod Pending (creating its container) or Running.
    pub async fn set_pod_phase(&self, name: &str, phase: &str) {
        let state = match phase {
            "Pending" => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            _ => ContainerState {
                running: Some(Default::default()),
                ..Default::default()
            },
        };
        self.write_pod_status(name, phase, state).await;
    }

    async fn write_pod_status(&self, name: &str, phase: &str, state: ContainerState) {
        let status = serde_json::json!({
            "status": {
                "phase": phase,
                "containerStatuses": [ContainerStatus {
                    name: scour::controller::pods::CONTAINER.into(),
                    image: "scour".into(),
                    image_id: String::new(),
                    ready: false,
                    restart_count: 0,
                    state: Some(state),
                    ..Default::default()
                }],
            }
        });
        Api::<Pod>::namespaced(self.admin.clone(), NS)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("writing pod {name}'s status: {e}"));
    }

    /// Ends every unfinished worker pod, each reporting `removed` images.
    pub async fn finish_pods(&self, removed: usize) -> usize {
        let pods = self.unfinished_pods().await;
        for pod in &pods {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            self.finish_pod(&pod.name_any(), 0, &summary(&node, removed)).await;
        }
        pods.len()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.controllers {
            if let Some(task) = r.task.take() {
                task.abort();
            }
        }
    }
}

/// A Linux node called `name` with `labels` too.
pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let mut all: BTreeMap<String, String> = BTreeMap::from([("kubernetes.io/os".into(), "linux".into())]);
    for (k, v) in labels {
        all.insert((*k).into(), (*v).into());
    }
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(all),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A ConfigMap in the chart's namespace; an exclusion list when `exclusion`.
pub fn config_map(name: &str, key: &str, value: &str, exclusion: bool) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            labels: exclusion.then(|| BTreeMap::from([("eraser.sh/exclude.list".into(), "true".into())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(key.into(), value.into())])),
        ..Default::default()
    }
}

/// A worker's termination summary: `removed` of 10 images removed.
pub fn summary(node: &str, removed: usize) -> String {
    serde_json::to_string(&termination(node, removed, 0)).expect("serializes")
}

/// A worker's termination summary: `removed` of 10 images removed, of
/// which `vulnerable` were found vulnerable.
pub fn termination(node: &str, removed: usize, vulnerable: usize) -> scour::report::TerminationSummary {
    use scour::report::{ImageEntry, Status, Summary, TerminationSummary};
    TerminationSummary {
        status: Status::Ok,
        node: node.into(),
        mode: scour_policy_sdk::Mode::Automatic,
        dry_run: false,
        policy: "sha256:0000".into(),
        summary: Summary {
            images: 10,
            scanned: 10,
            vulnerable,
            removed,
            kept: 10usize.saturating_sub(removed),
            bytes_freed: 1000 * removed as u64,
            ..Default::default()
        },
        removed: (0..removed)
            .map(|i| ImageEntry {
                id: format!("{i:012x}"),
                image: "docker.io/library/alpine:3.7.3".into(),
                reason: "vulnerable: 1 CRITICAL".into(),
                size_bytes: 1000,
            })
            .collect(),
        failed: Vec::new(),
        errors: Vec::new(),
        omitted: 0,
    }
}

/// Creates an object, or fails the test.
pub async fn create<K>(api: &Api<K>, object: &K) -> K
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    api.create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|e| panic!("creating {:?}: {e}", object.meta().name))
}

/// The real `scour controller` process, as the chart's ServiceAccount,
/// on the system clock. Its log is kept in the control plane's dir.
pub struct ControllerProcess {
    child: std::process::Child,
    pub identity: String,
    pub log: std::path::PathBuf,
}

impl ControllerProcess {
    /// Starts `scour controller` (`scour` is the binary) with `args` added;
    /// changes are debounced for 100 ms unless `args` set `--debounce`.
    pub fn start(scour: &std::path::Path, plane: &ControlPlane, identity: &str, args: &[&str]) -> Self {
        let log = plane.dir().join(format!("controller-{identity}.log"));
        let out = std::fs::File::create(&log).expect("the controller log");
        let err = out.try_clone().expect("the controller log");
        let child = std::process::Command::new(scour)
            .args(["controller", "--listen", "127.0.0.1:0", "--identity", identity])
            .args(
                Some(["--debounce", "100ms"])
                    .filter(|_| !args.iter().any(|a| a.starts_with("--debounce")))
                    .into_iter()
                    .flatten(),
            )
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", plane.kubeconfig(User::Controller))
            .env("POD_NAMESPACE", NS)
            .env("SCOUR_LOG", "info")
            // Vetting a registry policy compiles it: share the tests' cache.
            .env("SCOUR_POLICY_CACHE_DIR", crate::scenario::policy_cache_dir())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting scour controller");
        Self {
            child,
            identity: identity.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident set size so far.
    pub fn peak_rss(&self) -> u64 {
        scour::report::peak_rss_bytes_of(&self.child.id().to_string()).expect("VmHWM in /proc/PID/status")
    }

    /// SIGTERM, as Kubernetes stops a pod: it steps down first.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("waiting for the controller")
    }

    /// SIGKILL: no step-down, the Lease is left to expire.
    pub fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill();
        }
        // A failing test shows what the controller said.
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- scour controller {} (last 60 lines)\n{}",
                self.identity,
                tail.join("\n")
            );
        }
    }
}
