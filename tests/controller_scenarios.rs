//! The cluster controller against an in-memory API server (kube-rs's
//! tower-test mock pattern): automatic and manual runs, the rollout cap,
//! the Pending timeout, restarts, fail-closed exclusions, config errors and
//! leader election. Time is the test's own clock, passed to each tick.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, NodeSpec, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use scour::controller::crd::{ImageJob, ImageList, JobPhase, NodePhase, Trigger};
use scour::controller::metrics::Metrics;
use scour::controller::{Controller, Options, Tick};
use scour::report::{ImageEntry, Status, Summary, TerminationSummary};
use scour_fake_kube::FakeApi;
use scour_policy_sdk::Mode;

const NS: &str = "kube-system";
const CONFIG: &str = include_str!("data/controller/eraser-manager-config.yaml");
const SEED_IMAGELIST: &str = include_str!("data/controller/imagelist.yaml");

struct Cluster {
    fake: FakeApi,
    now: Timestamp,
    controller: Controller,
}

impl Cluster {
    async fn new(nodes: Vec<Node>, config: &str) -> Self {
        let fake = FakeApi::new();
        for n in &nodes {
            fake.seed(n);
        }
        fake.seed(&config_map(
            "eraser-manager-config",
            "controller_manager_config.yaml",
            config,
            false,
        ));
        fake.seed(&config_map(
            "eraser-system-exclusion",
            "system.json",
            r#"{"excluded": ["registry.k8s.io/pause:*", "ghcr.io/scour-dev/scour:*"]}"#,
            false,
        ));
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let controller = replica(&fake, "replica-a");
        Self { fake, now, controller }
    }

    async fn tick(&mut self) -> Tick {
        self.controller.tick(self.now).await.expect("the tick succeeds")
    }

    fn advance(&mut self, seconds: i64) {
        self.now = self.now.checked_add(SignedDuration::from_secs(seconds)).unwrap();
    }

    fn pods(&self) -> Vec<Pod> {
        self.fake.list::<Pod>()
    }

    fn unfinished_pods(&self) -> Vec<Pod> {
        self.pods()
            .into_iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect()
    }

    /// The kubelet's part: every unfinished pod ends, its worker reporting
    /// `removed` images.
    fn finish_pods(&self, removed: usize) {
        for pod in self.unfinished_pods() {
            let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
            self.fake.finish_pod(NS, &pod.name_any(), 0, &summary(&node, removed));
        }
    }

    fn job(&self, name: &str) -> ImageJob {
        self.fake.get::<ImageJob>(None, name).expect("the ImageJob exists")
    }

    fn jobs(&self) -> Vec<ImageJob> {
        self.fake.list::<ImageJob>()
    }

    fn events(&self) -> Vec<Event> {
        self.fake.list::<Event>()
    }

    fn set_config(&self, text: &str) {
        self.fake.seed(&config_map(
            "eraser-manager-config",
            "controller_manager_config.yaml",
            text,
            false,
        ));
    }

    /// Ticks, finishing pods as they start, until the run finishes.
    async fn run_to_completion(&mut self, removed: usize) -> ImageJob {
        for _ in 0..200 {
            self.advance(5);
            match self.tick().await {
                Tick::Finished(name) => return self.job(&name),
                Tick::Started(_) | Tick::Running(_) => self.finish_pods(removed),
                other => panic!("unexpected tick during a run: {other:?}"),
            }
        }
        panic!("the run did not finish");
    }

    fn client(&self) -> kube::Client {
        self.fake.client(NS)
    }
}

fn replica(fake: &FakeApi, identity: &str) -> Controller {
    let mut opts = Options::new(NS, identity);
    opts.worker_image = Some("ghcr.io/scour-dev/scour:fallback".into());
    Controller::new(fake.client(NS), opts, Arc::new(Metrics::default()))
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
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

fn nodes(n: usize) -> Vec<Node> {
    (0..n).map(|i| node(&format!("node-{i:04}"), &[])).collect()
}

fn config_map(name: &str, key: &str, value: &str, exclusion: bool) -> ConfigMap {
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

fn summary(node: &str, removed: usize) -> String {
    let s = TerminationSummary {
        status: Status::Ok,
        node: node.into(),
        mode: Mode::Automatic,
        dry_run: false,
        policy: "sha256:0000".into(),
        summary: Summary {
            images: 10,
            removed,
            kept: 10 - removed,
            bytes_freed: 1000 * removed as u64,
            ..Default::default()
        },
        removed: (0..removed)
            .map(|i| ImageEntry {
                id: format!("{i:012x}"),
                image: "docker.io/library/alpine:3.7.3".into(),
                reason: "vulnerable: 1 CRITICAL".into(),
            })
            .collect(),
        failed: Vec::new(),
        errors: Vec::new(),
        omitted: 0,
    };
    serde_json::to_string(&s).unwrap()
}

/// The scenario config with automatic runs switched off
/// (`components.collector.enabled: false`): only ImageLists start runs.
fn automatic_off() -> String {
    CONFIG.replace("enabled: true\n  scanner", "enabled: false\n  scanner")
}

fn seed_imagelist() -> ImageList {
    serde_yaml::from_str(SEED_IMAGELIST).expect("the seed ImageList parses")
}

/// A cluster of `nodes` with automatic runs off, where the seed ImageList
/// was just created and its manual run started: the cluster, the ImageList
/// API and the run's name.
async fn manual_run_started(nodes_count: usize) -> (Cluster, Api<ImageList>, String) {
    let mut c = Cluster::new(nodes(nodes_count), &automatic_off()).await;
    let lists: Api<ImageList> = Api::all(c.client());
    lists.create(&PostParams::default(), &seed_imagelist()).await.unwrap();
    let name = started(c.tick().await);
    (c, lists, name)
}

fn started(tick: Tick) -> String {
    match tick {
        Tick::Started(name) => name,
        other => panic!("expected a run to start, got {other:?}"),
    }
}

fn args(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_automatic_run_creates_pods_only_on_selected_nodes_within_the_concurrency_cap() {
    let mut all = nodes(16);
    all.push(node("win-0", &[("kubernetes.io/os", "windows")]));
    all.push(node("win-1", &[("kubernetes.io/os", "windows")]));
    all.push(node("filtered", &[("eraser.sh/cleanup.filter", "")]));
    let mut virtual_node = node("virtual-node-aci", &[]);
    virtual_node.spec = Some(NodeSpec {
        taints: Some(vec![Taint {
            key: "virtual-kubelet.io/provider".into(),
            effect: "NoSchedule".into(),
            value: Some("azure".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    all.push(virtual_node);
    let mut c = Cluster::new(all, CONFIG).await;

    let name = started(c.tick().await);
    let job = c.job(&name);
    assert_eq!(job.spec.trigger, Trigger::Automatic);
    let status = job.status.unwrap();
    assert_eq!((status.desired, status.phase), (20, Some(JobPhase::Running)));

    let mut peak = 0;
    for _ in 0..50 {
        c.advance(5);
        let tick = c.tick().await;
        let live = c.unfinished_pods();
        peak = peak.max(live.len());
        assert!(live.len() <= 5, "the cap is 5 pods at once, saw {}", live.len());
        for pod in c.pods() {
            let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
            assert!(node.starts_with("node-"), "a pod landed on {node}");
        }
        if let Tick::Finished(_) = tick {
            break;
        }
        c.finish_pods(1);
    }
    assert_eq!(peak, 5);
    let job = c.job(&name);
    let status = job.status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Completed));
    assert_eq!((status.succeeded, status.failed, status.skipped), (16, 0, 4));
    assert_eq!(status.removed, 16);
    let skipped: BTreeMap<&str, &str> = status
        .nodes
        .iter()
        .filter(|n| n.phase == NodePhase::Skipped)
        .map(|n| (n.name.as_str(), n.message.as_deref().unwrap()))
        .collect();
    assert_eq!(skipped["win-0"], "Windows node");
    assert_eq!(skipped["virtual-node-aci"], "virtual-kubelet node");
    assert!(skipped["filtered"].contains("eraser.sh/cleanup.filter"), "{skipped:?}");
    let first = status.nodes.iter().find(|n| n.name == "node-0000").unwrap();
    assert_eq!(first.removed[0].reason, "vulnerable: 1 CRITICAL");
    assert_eq!(first.summary.as_ref().unwrap().bytes_freed, 1000);
}

#[tokio::test]
async fn a_worker_pod_is_pinned_tolerant_least_privileged_and_mounts_what_it_needs() {
    let mut c = Cluster::new(nodes(1), CONFIG).await;
    c.fake.seed(&config_map(
        "excluded",
        "sample.json",
        r#"{"excluded": ["docker.io/library/*"]}"#,
        true,
    ));
    started(c.tick().await);
    c.advance(5);
    c.tick().await;
    let pods = c.pods();
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("node-0000"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.service_account_name.as_deref(), Some("scour-worker"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    let tolerations = spec.tolerations.as_ref().unwrap();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert!(tolerations[0].key.is_none(), "tolerates every taint");
    let container = &spec.containers[0];
    assert_eq!(container.image.as_deref(), Some("ghcr.io/scour-dev/scour:0.1.0"));
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let resources = container.resources.as_ref().unwrap();
    assert_eq!(
        resources.limits.as_ref().unwrap()["cpu"].0,
        "1500m",
        "CPU limits are applied"
    );
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "2Gi");
    let volumes = spec.volumes.as_ref().unwrap();
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.as_str()))
        .collect();
    assert_eq!(host_paths, ["/run/containerd/containerd.sock", "/var/lib/scour"]);
    let config_maps: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v.config_map.as_ref().map(|c| c.name.as_str()))
        .collect();
    assert_eq!(
        config_maps,
        ["eraser-manager-config", "eraser-system-exclusion", "excluded"]
    );
    let args = args(pod);
    for expected in [
        "worker",
        "--once",
        "--runtime-endpoint=unix:///run/cri/cri.sock",
        "--config=/etc/scour/config/controller_manager_config.yaml",
        "--system-exclusions=/etc/scour/exclusions/system",
        "--exclusions-dir=/etc/scour/exclusions/user",
        "--state-dir=/var/lib/scour",
    ] {
        assert!(args.iter().any(|a| a == expected), "missing {expected} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--imagelist")),
        "automatic runs have no list"
    );
    assert_eq!(env_value(pod, "SCOUR_LOG"), None, "no logLevel: the worker's default");
    parses_as_a_worker(pod);
}

#[tokio::test]
async fn workers_log_at_the_configured_level() {
    let config = CONFIG.replacen("manager:\n", "manager:\n  logLevel: scour=debug,warn\n", 1);
    let mut c = Cluster::new(nodes(1), &config).await;
    started(c.tick().await);
    c.advance(5);
    c.tick().await;
    let pods = c.pods();
    assert_eq!(env_value(&pods[0], "SCOUR_LOG").as_deref(), Some("scour=debug,warn"));
}

fn env_value(pod: &Pod, name: &str) -> Option<String> {
    pod.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// The pod's command line is one the real `scour worker` accepts.
fn parses_as_a_worker(pod: &Pod) {
    use clap::Parser;
    let argv = std::iter::once("scour".to_owned()).chain(args(pod));
    if let Err(e) = scour::cli::Cli::try_parse_from(argv) {
        panic!("scour worker refuses the pod's arguments {:?}: {e}", args(pod));
    }
}

#[tokio::test]
async fn a_policy_from_a_configmap_is_mounted_and_pinned() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let config = format!(
        "{CONFIG}  policy:\n    configMap: my-policy\n    sha256: \"{digest}\"\n    settings: '{{\"maxAgeDays\": 30}}'\n"
    );
    let mut c = Cluster::new(nodes(1), &config).await;
    let name = started(c.tick().await);
    assert_eq!(c.job(&name).spec.policy_sha256.as_deref(), Some(digest.as_str()));
    c.advance(5);
    c.tick().await;
    let pod = &c.pods()[0];
    let args = args(pod);
    assert!(
        args.contains(&"--policy=/etc/scour/policy/policy.wasm".to_owned()),
        "{args:?}"
    );
    assert!(args.contains(&format!("--policy-sha256={digest}")), "{args:?}");
    let volume = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "policy")
        .unwrap();
    let cm = volume.config_map.as_ref().unwrap();
    assert_eq!(cm.name, "my-policy");
    assert_eq!(cm.items.as_ref().unwrap()[0].key, "policy.wasm");
    parses_as_a_worker(pod);
}

#[tokio::test]
async fn only_the_newest_records_are_kept() {
    let mut c = Cluster::new(nodes(1), CONFIG).await;
    let mut opts = Options::new(NS, "replica-a");
    opts.history = 2;
    c.controller = Controller::new(c.fake.client(NS), opts, Arc::new(Metrics::default()));
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(started(c.tick().await));
        c.run_to_completion(0).await;
        c.advance(24 * 3600);
    }
    // This tick starts a fifth run and prunes the finished ones to two.
    let fifth = started(c.tick().await);
    let kept: Vec<String> = c.jobs().iter().map(|j| j.name_any()).collect();
    assert_eq!(kept, [names[2].clone(), names[3].clone(), fifth], "the oldest go first");
}

#[tokio::test]
async fn an_applied_imagelist_leads_to_a_run_and_then_to_its_status() {
    let mut config = automatic_off();
    config = config.replace("beginImmediately: true", "beginImmediately: false");
    let mut c = Cluster::new(nodes(3), &config).await;
    assert_eq!(c.tick().await, Tick::Idle, "no automatic run while it is disabled");

    let lists: Api<ImageList> = Api::all(c.client());
    lists.create(&PostParams::default(), &seed_imagelist()).await.unwrap();
    let name = started(c.tick().await);
    let job = c.job(&name);
    assert_eq!(job.spec.trigger, Trigger::Manual);
    assert_eq!(job.spec.images, ["docker.io/library/alpine:3.7.3"]);

    c.advance(5);
    c.tick().await;
    let pod = &c.pods()[0];
    assert!(args(pod).contains(&"--imagelist=/etc/scour/imagelist/images.json".to_owned()));
    parses_as_a_worker(pod);
    assert_eq!(
        pod.annotations()["scour.dev/imagelist"],
        r#"["docker.io/library/alpine:3.7.3"]"#,
        "the list reaches the worker through a downward-API file"
    );
    assert_eq!(pod.labels()["eraser.sh/type"], "manual");

    let job = c.run_to_completion(1).await;
    assert_eq!(job.status.as_ref().unwrap().phase, Some(JobPhase::Completed));
    let list = c.fake.get::<ImageList>(None, "imagelist").unwrap();
    let status = list.status.expect("the ImageList has a status");
    assert_eq!((status.success, status.failed, status.skipped), (3, 0, 0));
    assert_eq!(status.timestamp.unwrap().0, c.now);
    assert_eq!(status.job.as_deref(), Some(name.as_str()));
    assert_eq!(status.removed, 3);
    assert!(
        c.events()
            .iter()
            .any(|e| e.reason.as_deref() == Some("RunCompleted")
                && e.involved_object.kind.as_deref() == Some("ImageList"))
    );

    c.advance(5);
    assert_eq!(c.tick().await, Tick::Idle, "the same spec does not run twice");
}

#[tokio::test]
async fn a_spec_change_during_a_run_is_queued_and_runs_next() {
    let (mut c, lists, first) = manual_run_started(2).await;
    c.advance(5);
    c.tick().await;

    let patch = serde_json::json!({"spec": {"images": ["*"]}});
    lists
        .patch("imagelist", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    c.finish_pods(0);
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Finished(first.clone()));

    c.advance(5);
    let second = started(c.tick().await);
    assert_ne!(first, second);
    assert_eq!(c.job(&second).spec.images, ["*"]);
}

#[tokio::test]
async fn deleting_and_recreating_the_imagelist_triggers_again() {
    let (mut c, lists, first) = manual_run_started(1).await;
    c.run_to_completion(1).await;

    lists.delete("imagelist", &DeleteParams::default()).await.unwrap();
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Idle);
    lists.create(&PostParams::default(), &seed_imagelist()).await.unwrap();
    c.advance(5);
    let second = started(c.tick().await);
    assert_ne!(first, second, "the same images, a new ImageList: a new run");
}

#[tokio::test]
async fn an_imagelist_with_another_name_is_ignored_with_an_event() {
    let config = automatic_off();
    let mut c = Cluster::new(nodes(1), &config).await;
    let mut other = seed_imagelist();
    other.metadata.name = Some("my-list".into());
    Api::<ImageList>::all(c.client())
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    assert_eq!(c.tick().await, Tick::Idle);
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Idle);
    let ignored: Vec<Event> = c
        .events()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Ignored"))
        .collect();
    assert_eq!(ignored.len(), 1, "one event, not one per tick");
    assert_eq!(ignored[0].involved_object.name.as_deref(), Some("my-list"));
    assert!(c.jobs().is_empty());
}

#[tokio::test]
async fn a_ratio_of_0_95_accepts_272_of_273_nodes_in_floating_point() {
    let config = CONFIG
        .replace("successRatio: 1.0", "successRatio: 0.95")
        .replace("maxConcurrency: 5", "maxConcurrency: 100%");
    let mut c = Cluster::new(nodes(273), &config).await;
    let name = started(c.tick().await);
    c.advance(5);
    c.tick().await;
    assert_eq!(c.unfinished_pods().len(), 273);
    let failing = c.unfinished_pods()[100].name_any();
    c.fake.finish_pod(NS, &failing, 1, "");
    c.finish_pods(0);
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Finished(name.clone()));
    let status = c.job(&name).status.unwrap();
    assert_eq!((status.succeeded, status.failed), (272, 1));
    assert_eq!(status.phase, Some(JobPhase::Completed), "272/273 = 0.996 ≥ 0.95");
    assert!((status.success_ratio.unwrap() - 272.0 / 273.0).abs() < 1e-9);
    let failed = status.nodes.iter().find(|n| n.phase == NodePhase::Failed).unwrap();
    assert!(failed.message.as_deref().unwrap().starts_with("exit 1"), "{failed:?}");
}

#[tokio::test]
async fn one_failed_node_fails_a_run_that_requires_every_node() {
    let mut c = Cluster::new(nodes(3), CONFIG).await;
    let name = started(c.tick().await);
    c.advance(5);
    c.tick().await;
    let first = c.unfinished_pods()[0].name_any();
    c.fake.finish_pod(NS, &first, 1, "");
    let job = c.run_to_completion(0).await;
    let status = job.status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Failed));
    assert!(status.message.unwrap().contains("below the required 1"), "{name}");
    // Failed runs keep their pods for delayOnFailure (10m), then delete them.
    assert_eq!(c.pods().len(), 3);
    c.advance(9 * 60);
    c.tick().await;
    assert_eq!(c.pods().len(), 3);
    c.advance(2 * 60);
    c.tick().await;
    assert!(c.pods().is_empty(), "finished pods are gone within 10 minutes");
    assert!(
        c.job(&name).status.unwrap().pods_deleted,
        "the ImageJob stays as the record"
    );
}

#[tokio::test]
async fn a_pod_stuck_in_pending_times_out_and_its_node_counts_as_failed() {
    let mut c = Cluster::new(nodes(2), CONFIG).await;
    let name = started(c.tick().await);
    c.advance(5);
    c.tick().await;
    let pods = c.pods();
    c.fake.set_pod_phase(NS, &pods[0].name_any(), "Pending");
    c.fake.finish_pod(NS, &pods[1].name_any(), 0, &summary("node-0001", 0));
    c.advance(9 * 60);
    assert_eq!(
        c.tick().await,
        Tick::Running(name.clone()),
        "9 minutes Pending is still within the timeout"
    );
    c.advance(60);
    assert_eq!(c.tick().await, Tick::Finished(name.clone()));
    assert!(
        c.fake.get::<Pod>(Some(NS), &pods[0].name_any()).is_none(),
        "the Pending pod was deleted"
    );
    let status = c.job(&name).status.unwrap();
    let stuck = status.nodes.iter().find(|n| n.name == "node-0000").unwrap();
    assert_eq!(stuck.phase, NodePhase::Failed);
    let message = stuck.message.as_deref().unwrap();
    assert!(
        message.contains("stayed Pending for 10m") && message.contains("ContainerCreating"),
        "{message}"
    );
    assert_eq!((status.succeeded, status.failed), (1, 1));
}

#[tokio::test]
async fn a_restart_soon_after_a_run_starts_no_new_run() {
    let mut c = Cluster::new(nodes(3), CONFIG).await;
    let name = started(c.tick().await);
    c.advance(5);
    c.tick().await;
    assert_eq!(c.pods().len(), 3);

    // The process dies without releasing its lease; a new one takes over
    // under the same identity (same pod name after a container restart).
    c.controller = replica(&c.fake, "replica-a");
    c.advance(30);
    assert_eq!(c.tick().await, Tick::Running(name.clone()));
    assert_eq!(c.jobs().len(), 1);
    assert_eq!(c.pods().len(), 3, "no second pod per node");

    c.run_to_completion(0).await;
    c.controller = replica(&c.fake, "replica-a");
    c.advance(60);
    assert_eq!(c.tick().await, Tick::Idle, "the next run is a day away, restart or not");
    assert_eq!(c.jobs().len(), 1);
    let state = c.fake.get::<ConfigMap>(Some(NS), "scour-state").unwrap();
    assert!(state.data.unwrap().contains_key("nextRun"));

    c.advance(24 * 3600);
    let next = started(c.tick().await);
    assert_ne!(next, name);
}

#[tokio::test]
async fn a_malformed_exclusion_configmap_fails_the_run_closed() {
    let mut c = Cluster::new(nodes(3), CONFIG).await;
    c.fake.seed(&config_map(
        "team-a",
        "list.json",
        r#"{"excluded": ["docker.io/library/*"]}"#,
        true,
    ));
    c.fake
        .seed(&config_map("team-b", "list.json", r#"{"exclude": ["oops"]}"#, true));
    let name = started(c.tick().await);
    let status = c.job(&name).status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Failed));
    let message = status.message.unwrap();
    assert!(message.contains("team-b") && message.contains("list.json"), "{message}");
    assert_eq!(status.failed, 3);
    c.advance(5);
    c.tick().await;
    assert!(c.pods().is_empty(), "no worker starts anywhere");
    assert!(c.events().iter().any(|e| {
        e.reason.as_deref() == Some("RunFailed") && e.message.as_deref().unwrap_or("").contains("team-b")
    }));
}

#[tokio::test]
async fn an_exclusion_configmap_without_a_json_key_fails_the_run_closed() {
    let mut c = Cluster::new(nodes(1), CONFIG).await;
    c.fake
        .seed(&config_map("excluded", "sample", r#"{"excluded": []}"#, true));
    let name = started(c.tick().await);
    let message = c.job(&name).status.unwrap().message.unwrap();
    assert!(message.contains("excluded") && message.contains(".json"), "{message}");
}

#[tokio::test]
async fn an_interval_out_of_range_is_rejected_and_a_fix_applies_without_a_restart() {
    let mut c = Cluster::new(nodes(1), &CONFIG.replace("repeatInterval: 24h", "repeatInterval: 1h")).await;
    match c.tick().await {
        Tick::InvalidConfig(message) => assert!(
            message.contains("manager.scheduling.repeatInterval: 1h is outside the accepted range of 24h to 2160h"),
            "{message}"
        ),
        other => panic!("expected the config to be rejected, got {other:?}"),
    }
    c.advance(5);
    c.tick().await;
    assert!(c.jobs().is_empty());
    let warnings: Vec<Event> = c
        .events()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("InvalidConfig"))
        .collect();
    assert_eq!(warnings.len(), 1, "one event for a standing problem");
    assert_eq!(
        warnings[0].involved_object.name.as_deref(),
        Some("eraser-manager-config")
    );

    c.set_config(CONFIG);
    c.advance(5);
    started(c.tick().await);
}

#[tokio::test]
async fn disabling_stops_scheduling_and_keeps_the_interval() {
    let mut c = Cluster::new(nodes(1), CONFIG).await;
    started(c.tick().await);
    c.run_to_completion(0).await;
    let disabled = automatic_off();
    c.set_config(&disabled);
    c.advance(48 * 3600);
    assert_eq!(c.tick().await, Tick::Idle, "disabled: no run however long we wait");
    // Re-enabling without values reuses the interval still in the config.
    c.set_config(CONFIG);
    c.advance(5);
    started(c.tick().await);
}

#[tokio::test]
async fn a_non_leader_does_nothing_until_the_lease_expires() {
    let mut c = Cluster::new(nodes(2), CONFIG).await;
    let mut standby = replica(&c.fake, "replica-b");
    let name = started(c.tick().await);
    for _ in 0..6 {
        c.advance(5);
        c.tick().await;
        c.fake.clear_requests();
        assert_eq!(standby.tick(c.now).await.unwrap(), Tick::Follower);
        let writes: Vec<_> = c
            .fake
            .requests()
            .into_iter()
            .filter(|(m, _)| m != http::Method::GET)
            .collect();
        assert!(writes.is_empty(), "the standby wrote {writes:?}");
    }
    assert_eq!(c.jobs().len(), 1);

    // The leader stops renewing; after the lease duration the standby leads
    // and carries on with the same run.
    c.advance(20);
    assert_eq!(standby.tick(c.now).await.unwrap(), Tick::Running(name));
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Follower, "the old leader stands down");
}

#[tokio::test]
async fn the_crd_schema_accepts_the_seed_imagelist_verbatim() {
    let crds = scour::controller::crd::crds();
    let imagelists = crds
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("imagelists.eraser.sh"))
        .unwrap();
    assert_eq!(imagelists.spec.scope, "Cluster");
    let v1 = imagelists.spec.versions.iter().find(|v| v.name == "v1").unwrap();
    assert!(v1.served && v1.storage);
    let schema = serde_json::to_value(v1.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
    let seed: serde_json::Value = serde_yaml::from_str(SEED_IMAGELIST).unwrap();
    let mut object = seed.clone();
    object.as_object_mut().unwrap().remove("apiVersion");
    object.as_object_mut().unwrap().remove("kind");
    object.as_object_mut().unwrap().remove("metadata");
    validate(&schema, &object, "").unwrap();
    assert_eq!(seed["apiVersion"], "eraser.sh/v1");
    assert_eq!(seed["metadata"]["name"], "imagelist");

    // The schema is not a rubber stamp.
    for bad in [
        serde_json::json!({"spec": {"images": "alpine"}}),
        serde_json::json!({"spec": {}}),
        serde_json::json!({"spec": {"images": [3]}}),
        serde_json::json!({"spec": {"images": [], "imagez": []}}),
    ] {
        assert!(validate(&schema, &bad, "").is_err(), "accepted {bad}");
    }
    let deprecated = imagelists.spec.versions.iter().find(|v| v.name == "v1alpha1").unwrap();
    assert!(deprecated.served && !deprecated.storage && deprecated.deprecated == Some(true));
}

/// Structural-schema validation for the subset CRDs use: type, properties,
/// required, items, nullable; unknown fields are rejected (kubectl's
/// strict field validation).
fn validate(schema: &serde_json::Value, value: &serde_json::Value, path: &str) -> Result<(), String> {
    use serde_json::Value;
    if value.is_null() && schema["nullable"] == Value::Bool(true) {
        return Ok(());
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !ok {
        return Err(format!("{path}: expected {ty}, got {value}"));
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            validate(&schema["items"], item, &format!("{path}[{i}]"))?;
        }
    }
    if let Some(fields) = value.as_object() {
        let props = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            if !fields.contains_key(required.as_str().unwrap()) {
                return Err(format!("{path}: missing required field {required}"));
            }
        }
        for (k, v) in fields {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, v, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties").is_some() => {}
                None => return Err(format!("{path}: unknown field {k:?}")),
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn deleting_the_imagelist_mid_run_lets_the_run_finish_without_writing_status() {
    let (mut c, lists, name) = manual_run_started(2).await;
    c.advance(5);
    c.tick().await;
    lists.delete("imagelist", &DeleteParams::default()).await.unwrap();
    let job = c.run_to_completion(1).await;
    assert_eq!(job.name_any(), name);
    assert_eq!(job.status.unwrap().phase, Some(JobPhase::Completed));
    assert!(
        c.fake.get::<ImageList>(None, "imagelist").is_none(),
        "nothing re-creates the list"
    );
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Idle);
}

#[tokio::test]
async fn health_readiness_and_eraser_named_metrics_are_served() {
    use scour::controller::serve::{Health, router};
    use tower::ServiceExt;
    let mut c = Cluster::new(nodes(2), CONFIG).await;
    started(c.tick().await);
    c.run_to_completion(2).await;
    let health = Arc::new(Health::default());
    let get = |path: &'static str| {
        let app = router(c.controller.metrics(), health.clone());
        async move {
            let response = app
                .oneshot(http::Request::get(path).body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            let code = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            (code, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 503, "not ready before the API has answered");
    health.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get("/readyz").await.0, 200);
    let (code, text) = get("/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "imagejob_run_total 1",
        "pods_completed_run_total 2",
        "pods_failed_run_total 0",
        "images_removed_run_total{node_name=\"node-0000\"} 2",
        "vulnerable_images_run_total{node_name=\"node-0001\"} 2",
        "scour_controller_leader 1",
        "imagejob_duration_run_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_worker_that_never_finishes_times_out_and_its_node_counts_as_failed() {
    let config = CONFIG.replace("pendingTimeout: 10m", "pendingTimeout: 10m\n    nodeTimeout: 2h");
    let mut c = Cluster::new(nodes(2), &config).await;
    let name = started(c.tick().await);
    c.advance(5);
    c.tick().await;
    let pods = c.pods();
    // The node went away with the pod still Running; nothing will end it.
    c.fake.set_pod_phase(NS, &pods[0].name_any(), "Running");
    c.fake.finish_pod(NS, &pods[1].name_any(), 0, &summary("node-0001", 0));
    c.advance(119 * 60);
    assert_eq!(c.tick().await, Tick::Running(name.clone()));
    c.advance(60);
    assert_eq!(c.tick().await, Tick::Finished(name.clone()));
    let status = c.job(&name).status.unwrap();
    let lost = status.nodes.iter().find(|n| n.name == "node-0000").unwrap();
    assert_eq!(lost.phase, NodePhase::Failed);
    assert!(
        lost.message.as_deref().unwrap().contains("did not finish within 2h"),
        "{lost:?}"
    );
    assert!(c.fake.get::<Pod>(Some(NS), &pods[0].name_any()).is_none());
}

#[tokio::test]
async fn a_transient_pod_creation_error_is_retried_and_a_refusal_fails_the_node() {
    let mut c = Cluster::new(nodes(2), CONFIG).await;
    let name = started(c.tick().await);
    c.fake.fail_next(http::Method::POST, "/pods", 503, 1);
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Running(name.clone()));
    assert!(
        c.pods().is_empty(),
        "the first create failed, so the tick stopped launching"
    );
    let status = c.job(&name).status.unwrap();
    assert!(status.nodes.iter().all(|n| n.phase == NodePhase::Queued));

    c.fake.fail_next(http::Method::POST, "/pods", 403, 1);
    c.advance(5);
    c.tick().await;
    let status = c.job(&name).status.unwrap();
    let refused = status.nodes.iter().find(|n| n.phase == NodePhase::Failed).unwrap();
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("could not create the worker pod"),
        "{refused:?}"
    );
    assert_eq!(c.pods().len(), 1, "the other node got its pod");
}

#[tokio::test]
async fn a_worker_whose_pass_failed_or_left_no_summary_fails_its_node() {
    let mut c = Cluster::new(nodes(3), CONFIG).await;
    let name = started(c.tick().await);
    c.advance(5);
    c.tick().await;
    let pods = c.pods();
    let failed_pass = TerminationSummary {
        status: Status::Failed,
        errors: vec!["exclusion list /etc/scour/exclusions/user/x/a.json: expected {\"excluded\": [...]}".into()],
        ..serde_json::from_str(&summary("node-0000", 0)).unwrap()
    };
    // The worker exits 1 when its pass could not complete safely.
    c.fake.finish_pod(
        NS,
        &pods[0].name_any(),
        1,
        &serde_json::to_string(&failed_pass).unwrap(),
    );
    c.fake.finish_pod(NS, &pods[1].name_any(), 137, "");
    c.fake.finish_pod(NS, &pods[2].name_any(), 0, &summary("node-0002", 1));
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Finished(name.clone()));
    let status = c.job(&name).status.unwrap();
    let message = |node: &str| {
        status
            .nodes
            .iter()
            .find(|n| n.name == node)
            .unwrap()
            .message
            .clone()
            .unwrap()
    };
    assert!(
        message("node-0000").contains("the worker's pass failed: exclusion list"),
        "{}",
        message("node-0000")
    );
    assert!(message("node-0001").contains("exit 137") && message("node-0001").contains("no termination summary"));
    assert_eq!((status.succeeded, status.failed), (1, 2));
    assert_eq!(status.removed, 1);
}

#[tokio::test]
async fn events_about_cluster_scoped_objects_are_filed_where_the_api_server_accepts_them() {
    let mut c = Cluster::new(nodes(1), CONFIG).await;
    let name = started(c.tick().await);
    c.run_to_completion(0).await;
    let events = c.events();
    let on_job: Vec<&Event> = events
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name.as_str()))
        .collect();
    let reasons: Vec<&str> = on_job.iter().filter_map(|e| e.reason.as_deref()).collect();
    assert_eq!(reasons, ["RunStarted", "RunCompleted"]);
    assert!(
        on_job
            .iter()
            .all(|e| e.metadata.namespace.as_deref() == Some("default"))
    );
    // The fake refuses what the API server refuses: an event about a
    // cluster-scoped object outside `default`.
    let mut misplaced = on_job[0].clone();
    misplaced.metadata = ObjectMeta {
        name: Some("misplaced".into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    let err = Api::<Event>::namespaced(c.client(), NS)
        .create(&PostParams::default(), &misplaced)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err}");
}

#[tokio::test]
async fn a_run_that_failed_closed_runs_again_once_the_exclusion_list_is_fixed() {
    let mut c = Cluster::new(nodes(2), CONFIG).await;
    c.fake
        .seed(&config_map("team-b", "list.json", r#"{"exclude": ["oops"]}"#, true));
    let first = started(c.tick().await);
    assert_eq!(c.job(&first).status.unwrap().phase, Some(JobPhase::Failed));
    for _ in 0..3 {
        c.advance(5);
        assert_eq!(c.tick().await, Tick::Idle, "nothing changed, so nothing is retried");
    }
    c.fake.seed(&config_map(
        "team-b",
        "list.json",
        r#"{"excluded": ["docker.io/library/*"]}"#,
        true,
    ));
    c.advance(5);
    let second = started(c.tick().await);
    assert_ne!(first, second);
    let job = c.run_to_completion(1).await;
    assert_eq!(job.status.unwrap().phase, Some(JobPhase::Completed));
    assert_eq!(c.pods().len(), 0, "finished pods are gone (delayOnSuccess 0s)");
    c.advance(5);
    assert_eq!(
        c.tick().await,
        Tick::Idle,
        "the retry ran once; the next run is a day away"
    );
}

#[tokio::test]
async fn a_manual_run_that_failed_closed_runs_again_once_the_exclusion_list_is_fixed() {
    let config = automatic_off();
    let mut c = Cluster::new(nodes(1), &config).await;
    c.fake
        .seed(&config_map("excluded", "sample", r#"{"excluded": []}"#, true));
    Api::<ImageList>::all(c.client())
        .create(&PostParams::default(), &seed_imagelist())
        .await
        .unwrap();
    let first = started(c.tick().await);
    assert_eq!(c.job(&first).status.unwrap().phase, Some(JobPhase::Failed));
    let list = c.fake.get::<ImageList>(None, "imagelist").unwrap().status.unwrap();
    assert!(list.message.unwrap().contains("excluded"), "the ImageList says why");
    c.advance(5);
    assert_eq!(c.tick().await, Tick::Idle);
    c.fake
        .seed(&config_map("excluded", "sample.json", r#"{"excluded": []}"#, true));
    c.advance(5);
    let second = started(c.tick().await);
    assert_eq!(c.job(&second).spec.images, ["docker.io/library/alpine:3.7.3"]);
    c.run_to_completion(1).await;
    let list = c.fake.get::<ImageList>(None, "imagelist").unwrap().status.unwrap();
    assert_eq!((list.success, list.job.as_deref()), (1, Some(second.as_str())));
}
