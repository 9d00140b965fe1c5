//! The cluster controller against a real kube-apiserver (1.20) and etcd:
//! automatic and manual runs, the rollout cap, timeouts, restarts,
//! fail-closed exclusions, config errors, leader election, status,
//! conditions, events and metrics. The controller runs as the chart's
//! ServiceAccount under the chart's RBAC, and on a clock the test moves
//! (`Cluster::advance`); the test plays the kubelet by writing worker pods'
//! status.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{NodeSpec, Pod, ResourceQuota, Taint};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use scour::controller::crd::{ImageJob, ImageList, JobPhase, NodePhase, Trigger};
use scour::controller::{CONFIG_KEY, Tick};
use scour::report::{Status, TerminationSummary};
use scour_testkit::cluster::{Cluster, NS, config_map, create, node, summary, termination};
use scour_testkit::control_plane::validating_webhook_args;

const CONFIG: &str = include_str!("data/controller/eraser-manager-config.yaml");
const SEED_IMAGELIST: &str = include_str!("data/controller/imagelist.yaml");
const SYSTEM_EXCLUSIONS: &str = r#"{"excluded": ["registry.k8s.io/pause:*", "ghcr.io/scour-dev/scour:*"]}"#;

/// A real control plane with scour installed, `nodes`, the config and the
/// system exclusion list, and one controller replica running; `None` when
/// the test skips.
async fn cluster(nodes: Vec<k8s_openapi::api::core::v1::Node>, config: &str) -> Option<Cluster> {
    let mut c = Cluster::start().await?;
    for n in &nodes {
        c.apply(n).await;
    }
    set_config(&c, config).await;
    c.apply(&config_map(
        "eraser-system-exclusion",
        "system.json",
        SYSTEM_EXCLUSIONS,
        false,
    ))
    .await;
    c.start_controller(Cluster::options("replica-a")).await;
    Some(c)
}

async fn set_config(c: &Cluster, text: &str) {
    c.apply(&config_map("eraser-manager-config", CONFIG_KEY, text, false))
        .await;
}

fn nodes(n: usize) -> Vec<k8s_openapi::api::core::v1::Node> {
    (0..n).map(|i| node(&format!("node-{i:04}"), &[])).collect()
}

/// The scenario config with automatic runs switched off
/// (`components.collector.enabled: false`): only ImageLists start runs.
fn automatic_off() -> String {
    CONFIG.replace("enabled: true\n  scanner", "enabled: false\n  scanner")
}

fn seed_imagelist() -> ImageList {
    serde_yaml::from_str(SEED_IMAGELIST).expect("the seed ImageList parses")
}

/// Waits for the first ImageJob and returns its name.
async fn first_run(c: &Cluster) -> String {
    next_run(c, &[]).await
}

/// Waits for an ImageJob not in `seen` and returns its name.
async fn next_run(c: &Cluster, seen: &[String]) -> String {
    c.eventually("a new run", || async move {
        c.jobs().await.iter().map(|j| j.name_any()).find(|n| !seen.contains(n))
    })
    .await
}

/// Waits for `count` worker pods that have not finished.
async fn pods_running(c: &Cluster, count: usize) -> Vec<Pod> {
    c.eventually(&format!("{count} worker pods"), || async move {
        let pods = c.unfinished_pods().await;
        (pods.len() == count).then_some(pods)
    })
    .await
}

/// Waits until the ImageJob `name` has finished.
async fn finished(c: &Cluster, name: &str) -> ImageJob {
    c.eventually(&format!("run {name} to finish"), || async move {
        let job = c.job(name).await;
        let phase = job.status.as_ref().and_then(|s| s.phase);
        phase.is_some_and(|p| p != JobPhase::Running).then_some(job)
    })
    .await
}

/// Ends worker pods as they start, each removing `removed` images, until
/// the run `name` finishes.
async fn run_to_completion(c: &Cluster, name: &str, removed: usize) -> ImageJob {
    c.eventually(&format!("run {name} to complete"), || async move {
        c.finish_pods(removed).await;
        let job = c.job(name).await;
        let phase = job.status.as_ref().and_then(|s| s.phase);
        phase.is_some_and(|p| p != JobPhase::Running).then_some(job)
    })
    .await
}

/// A manual run of the seed ImageList on `nodes` with automatic runs off.
async fn manual_run_started(nodes_count: usize) -> Option<(Cluster, Api<ImageList>, String)> {
    let c = cluster(nodes(nodes_count), &automatic_off()).await?;
    let lists: Api<ImageList> = Api::all(c.admin.clone());
    create(&lists, &seed_imagelist()).await;
    let name = first_run(&c).await;
    Some((c, lists, name))
}

fn args(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default()
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

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    kind: &str,
) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == kind).map(|c| c.status.as_str())
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
    let Some(c) = cluster(all, CONFIG).await else { return };

    let name = first_run(&c).await;
    // The run exists a moment before its status is written.
    let job = c
        .eventually("the run's status", || async {
            let job = c.job(&name).await;
            job.status.is_some().then_some(job)
        })
        .await;
    assert_eq!(job.spec.trigger, Trigger::Automatic);
    let status = job.status.unwrap();
    assert_eq!(
        (status.desired, status.skipped, status.phase),
        (20, 4, Some(JobPhase::Running)),
        "skipped nodes are counted from the start"
    );
    assert_eq!(condition(&status.conditions, "Running"), Some("True"));

    let mut peak = 0;
    loop {
        c.settle().await;
        let live = c.unfinished_pods().await;
        peak = peak.max(live.len());
        assert!(live.len() <= 5, "the cap is 5 pods at once, saw {}", live.len());
        for pod in c.pods().await {
            let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
            assert!(node.starts_with("node-"), "a pod landed on {node}");
        }
        if c.finish_pods(1).await == 0 {
            break;
        }
    }
    assert_eq!(peak, 5);
    let job = finished(&c, &name).await;
    let status = job.status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Completed));
    assert_eq!((status.succeeded, status.failed, status.skipped), (16, 0, 4));
    assert_eq!(status.removed, 16);
    assert_eq!(condition(&status.conditions, "Complete"), Some("True"));
    assert_eq!(condition(&status.conditions, "Running"), Some("False"));
    assert_eq!(status.observed_generation, job.metadata.generation);
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
    assert_eq!(first.summary.as_ref().unwrap().bytes_freed, 1000);
    // No kubelet serves these pods' logs: what the termination message
    // carried is kept, and says so.
    let reports = c.reports(&name).await;
    assert_eq!(reports.len(), 16);
    let report = &reports["node-0000"][0];
    assert_eq!(first.reports, [report.name_any()]);
    assert_eq!(report.spec.removed[0].reason, "vulnerable: 1 CRITICAL");
    assert!(!report.spec.complete, "{:?}", report.spec);
}

#[tokio::test]
async fn a_worker_pod_is_pinned_tolerant_least_privileged_and_mounts_what_it_needs() {
    let Some(c) = cluster(nodes(1), CONFIG).await else {
        return;
    };
    c.apply(&config_map(
        "excluded",
        "sample.json",
        r#"{"excluded": ["docker.io/library/*"]}"#,
        true,
    ))
    .await;
    let name = first_run(&c).await;
    let pod = pods_running(&c, 1).await.remove(0);
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("node-0000"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.service_account_name.as_deref(), Some("scour-worker"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    let tolerations = spec.tolerations.as_ref().unwrap();
    assert_eq!(tolerations.len(), 1, "{tolerations:?}");
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert!(tolerations[0].key.is_none(), "tolerates every taint");
    let owner = &pod.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ImageJob", name.as_str()));
    assert_eq!(owner.controller, Some(true));
    assert_eq!(Some(owner.uid.clone()), c.job(&name).await.uid());
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
    assert_eq!(
        host_paths,
        [
            "/run/containerd/containerd.sock",
            "/var/lib/scour",
            // The runtime's root, for the image filesystem's capacity.
            "/var/lib/containerd"
        ]
    );
    let image_fs = volumes.iter().find(|v| v.name == "image-fs").unwrap();
    assert_eq!(
        image_fs.host_path.as_ref().unwrap().type_.as_deref(),
        Some("Directory"),
        "never created empty on the node's root filesystem"
    );
    let mounts = container.volume_mounts.as_ref().unwrap();
    let mounted = mounts.iter().find(|m| m.name == "image-fs").unwrap();
    assert_eq!(
        (mounted.mount_path.as_str(), mounted.read_only),
        ("/host/image-fs", Some(true))
    );
    assert!(mounted.mount_propagation.is_none(), "{mounted:?}");
    let config_maps: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v.config_map.as_ref().map(|c| c.name.as_str()))
        .collect();
    assert_eq!(
        config_maps,
        ["eraser-manager-config", "eraser-system-exclusion", "excluded"]
    );
    let args = args(&pod);
    for expected in [
        "worker",
        "--once",
        "--runtime-endpoint=unix:///run/cri/cri.sock",
        "--config=/etc/scour/config/controller_manager_config.yaml",
        "--system-exclusions=/etc/scour/exclusions/system",
        "--exclusions-dir=/etc/scour/exclusions/user",
        "--state-dir=/var/lib/scour",
        "--image-fs=/host/image-fs",
        "--image-fs-node-path=/var/lib/containerd",
    ] {
        assert!(args.iter().any(|a| a == expected), "missing {expected} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--imagelist")),
        "automatic runs have no list"
    );
    assert_eq!(env_value(&pod, "SCOUR_LOG"), None, "no logLevel: the worker's default");
    parses_as_a_worker(&pod);
}

#[tokio::test]
async fn workers_log_at_the_configured_level() {
    let config = CONFIG.replacen("manager:\n", "manager:\n  logLevel: scour=debug,warn\n", 1);
    let Some(c) = cluster(nodes(1), &config).await else {
        return;
    };
    let pod = pods_running(&c, 1).await.remove(0);
    assert_eq!(env_value(&pod, "SCOUR_LOG").as_deref(), Some("scour=debug,warn"));
}

#[tokio::test]
async fn a_policy_from_a_configmap_is_mounted_and_pinned() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let config = format!(
        "{CONFIG}  policy:\n    configMap: my-policy\n    sha256: \"{digest}\"\n    settings: '{{\"maxAgeDays\": 30}}'\n"
    );
    let Some(c) = cluster(nodes(1), &config).await else {
        return;
    };
    let name = first_run(&c).await;
    assert_eq!(c.job(&name).await.spec.policy_sha256.as_deref(), Some(digest.as_str()));
    let pod = pods_running(&c, 1).await.remove(0);
    let args = args(&pod);
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
    parses_as_a_worker(&pod);
}

#[tokio::test]
async fn only_the_newest_records_are_kept() {
    let Some(mut c) = Cluster::start().await else { return };
    c.apply(&nodes(1)[0]).await;
    set_config(&c, CONFIG).await;
    let mut opts = Cluster::options("replica-a");
    opts.history = 2;
    c.start_controller(opts).await;
    let mut names: Vec<String> = Vec::new();
    for _ in 0..4 {
        let name = next_run(&c, &names).await;
        run_to_completion(&c, &name, 0).await;
        names.push(name);
        c.advance(24 * 3600);
    }
    // The fifth run starts, and the finished ones are pruned to two.
    let fifth = next_run(&c, &names).await;
    let kept = c
        .eventually("two records kept besides the fifth run", || async {
            let kept: Vec<String> = c.jobs().await.iter().map(|j| j.name_any()).collect();
            (kept.len() == 3).then_some(kept)
        })
        .await;
    assert_eq!(kept, [names[2].clone(), names[3].clone(), fifth], "the oldest go first");
}

#[tokio::test]
async fn an_applied_imagelist_leads_to_a_run_and_then_to_its_status() {
    let config = automatic_off().replace("beginImmediately: true", "beginImmediately: false");
    let Some(c) = cluster(nodes(3), &config).await else {
        return;
    };
    c.settle().await;
    assert!(c.jobs().await.is_empty(), "no automatic run while it is disabled");

    let lists: Api<ImageList> = Api::all(c.admin.clone());
    create(&lists, &seed_imagelist()).await;
    let name = first_run(&c).await;
    let job = c.job(&name).await;
    assert_eq!(job.spec.trigger, Trigger::Manual);
    assert_eq!(job.spec.images, ["docker.io/library/alpine:3.7.3"]);
    let list = c
        .eventually("the ImageList to say its run started", || async {
            let status = c.imagelist().await?.status?;
            (status.job.as_deref() == Some(name.as_str())).then_some(status)
        })
        .await;
    assert_eq!(list.phase, Some(JobPhase::Running));
    assert_eq!(list.observed_generation, Some(1));
    assert_eq!(condition(&list.conditions, "Running"), Some("True"));

    let pod = pods_running(&c, 3).await.remove(0);
    assert!(args(&pod).contains(&"--imagelist=/etc/scour/imagelist/images.json".to_owned()));
    parses_as_a_worker(&pod);
    assert_eq!(
        pod.annotations()["scour.dev/imagelist"],
        r#"["docker.io/library/alpine:3.7.3"]"#,
        "the list reaches the worker through a downward-API file"
    );
    assert_eq!(pod.labels()["eraser.sh/type"], "manual");

    let job = run_to_completion(&c, &name, 1).await;
    assert_eq!(job.status.as_ref().unwrap().phase, Some(JobPhase::Completed));
    let status = c
        .eventually("the ImageList's final status", || async {
            let status = c.imagelist().await?.status?;
            (status.phase == Some(JobPhase::Completed)).then_some(status)
        })
        .await;
    assert_eq!((status.success, status.failed, status.skipped), (3, 0, 0));
    assert_eq!(status.timestamp.unwrap().0, c.now());
    assert_eq!(status.job.as_deref(), Some(name.as_str()));
    assert_eq!(status.removed, 3);
    assert_eq!(condition(&status.conditions, "Complete"), Some("True"));
    assert_eq!(condition(&status.conditions, "Running"), Some("False"));
    c.eventually("a RunCompleted event on the ImageList", || async {
        c.events()
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("RunCompleted")
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ImageList")
            })
            .then_some(())
    })
    .await;

    c.advance(5);
    c.settle().await;
    assert_eq!(c.jobs().await.len(), 1, "the same spec does not run twice");
}

#[tokio::test]
async fn a_spec_change_during_a_run_is_queued_and_runs_next() {
    let Some((c, lists, first)) = manual_run_started(2).await else {
        return;
    };
    pods_running(&c, 2).await;
    let patch = serde_json::json!({"spec": {"images": ["*"]}});
    lists
        .patch("imagelist", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    c.settle().await;
    assert_eq!(c.jobs().await.len(), 1, "one run at a time");
    run_to_completion(&c, &first, 0).await;
    let second = next_run(&c, std::slice::from_ref(&first)).await;
    assert_ne!(first, second);
    assert_eq!(c.job(&second).await.spec.images, ["*"]);
}

#[tokio::test]
async fn an_imagelist_applied_during_an_automatic_run_is_queued_visibly_and_runs_next() {
    let Some(c) = cluster(nodes(2), CONFIG).await else {
        return;
    };
    let automatic = first_run(&c).await;
    pods_running(&c, 2).await;
    let lists: Api<ImageList> = Api::all(c.admin.clone());
    create(&lists, &seed_imagelist()).await;
    let queued = c
        .eventually("the ImageList to say it is queued", || async {
            let status = c.imagelist().await?.status?;
            let running = status.conditions.iter().find(|c| c.type_ == "Running")?;
            (running.reason == "Queued").then(|| running.clone())
        })
        .await;
    assert_eq!(queued.status, "False");
    assert!(queued.message.contains(&automatic), "{}", queued.message);
    c.eventually("a Queued event on the ImageList", || async {
        c.events()
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Queued")
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ImageList")
                    && e.note.as_deref().is_some_and(|n| n.contains(&automatic))
            })
            .then_some(())
    })
    .await;
    assert_eq!(c.jobs().await.len(), 1, "the automatic run is not cut short");

    run_to_completion(&c, &automatic, 0).await;
    let manual = next_run(&c, std::slice::from_ref(&automatic)).await;
    assert_eq!(c.job(&manual).await.spec.trigger, Trigger::Manual);
    let status = c
        .eventually("the ImageList to show its own run", || async {
            let status = c.imagelist().await?.status?;
            (status.job.as_deref() == Some(manual.as_str())).then_some(status)
        })
        .await;
    assert_eq!(condition(&status.conditions, "Running"), Some("True"));
    let queued_events = c
        .events()
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Queued"))
        .count();
    assert_eq!(queued_events, 1, "said once, not on every reconcile");
}

#[tokio::test]
async fn deleting_and_recreating_the_imagelist_triggers_again() {
    let Some((c, lists, first)) = manual_run_started(1).await else {
        return;
    };
    run_to_completion(&c, &first, 1).await;

    lists.delete("imagelist", &DeleteParams::default()).await.unwrap();
    c.settle().await;
    assert_eq!(c.jobs().await.len(), 1);
    create(&lists, &seed_imagelist()).await;
    let second = next_run(&c, std::slice::from_ref(&first)).await;
    assert_ne!(first, second, "the same images, a new ImageList: a new run");
}

#[tokio::test]
async fn an_imagelist_with_another_name_is_ignored_with_an_event() {
    let Some(c) = cluster(nodes(1), &automatic_off()).await else {
        return;
    };
    let mut other = seed_imagelist();
    other.metadata.name = Some("my-list".into());
    create(&Api::<ImageList>::all(c.admin.clone()), &other).await;
    c.settle().await;
    c.advance(5);
    // Any change wakes the controller; the event stays one.
    set_config(&c, &format!("{}\n", automatic_off())).await;
    c.settle().await;
    let ignored: Vec<_> = c
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Ignored"))
        .collect();
    assert_eq!(ignored.len(), 1, "one event, not one per reconcile");
    assert_eq!(ignored[0].regarding.as_ref().unwrap().name.as_deref(), Some("my-list"));
    assert_eq!(ignored[0].series, None);
    assert!(c.jobs().await.is_empty());
}

#[tokio::test]
async fn a_ratio_of_0_95_accepts_272_of_273_nodes_in_floating_point() {
    let config = CONFIG
        .replace("successRatio: 1.0", "successRatio: 0.95")
        .replace("maxConcurrency: 5", "maxConcurrency: 100%");
    let Some(c) = cluster(nodes(273), &config).await else {
        return;
    };
    let name = first_run(&c).await;
    let pods = pods_running(&c, 273).await;
    c.finish_pod(&pods[100].name_any(), 1, "").await;
    c.finish_pods(0).await;
    let status = finished(&c, &name).await.status.unwrap();
    assert_eq!((status.succeeded, status.failed), (272, 1));
    assert_eq!(status.phase, Some(JobPhase::Completed), "272/273 = 0.996 ≥ 0.95");
    assert!((status.success_ratio.unwrap() - 272.0 / 273.0).abs() < 1e-9);
    let failed = status.nodes.iter().find(|n| n.phase == NodePhase::Failed).unwrap();
    assert!(failed.message.as_deref().unwrap().starts_with("exit 1"), "{failed:?}");
}

#[tokio::test]
async fn one_failed_node_fails_a_run_that_requires_every_node() {
    let Some(c) = cluster(nodes(3), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    let pods = pods_running(&c, 3).await;
    c.finish_pod(&pods[0].name_any(), 1, "").await;
    let job = run_to_completion(&c, &name, 0).await;
    let status = job.status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Failed));
    assert!(status.message.as_deref().unwrap().contains("below the required 1"));
    assert_eq!(condition(&status.conditions, "Failed"), Some("True"));
    assert_eq!(condition(&status.conditions, "Complete"), None);
    // Failed runs keep their pods for delayOnFailure (10m), then delete them.
    c.settle().await;
    assert_eq!(c.pods().await.len(), 3);
    c.advance(9 * 60);
    c.settle().await;
    assert_eq!(c.pods().await.len(), 3);
    c.advance(2 * 60);
    c.eventually("finished pods gone within 10 minutes", || async {
        c.pods().await.is_empty().then_some(())
    })
    .await;
    c.eventually("the ImageJob stays as the record", || async {
        c.job(&name).await.status?.pods_deleted.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pod_stuck_in_pending_times_out_and_its_node_counts_as_failed() {
    let Some(c) = cluster(nodes(2), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    let pods = pods_running(&c, 2).await;
    c.set_pod_phase(&pods[0].name_any(), "Pending").await;
    c.finish_pod(&pods[1].name_any(), 0, &summary("node-0001", 0)).await;
    c.settle().await;
    c.advance(9 * 60);
    c.settle().await;
    assert_eq!(
        c.job(&name).await.status.unwrap().phase,
        Some(JobPhase::Running),
        "9 minutes Pending is still within the timeout"
    );
    c.advance(60);
    let status = finished(&c, &name).await.status.unwrap();
    // Bound to a node, it is deleted gracefully: the kubelet finishes the
    // deletion, so it may linger, but marked for deletion.
    let stuck_pod = Api::<Pod>::namespaced(c.admin.clone(), NS)
        .get_opt(&pods[0].name_any())
        .await
        .unwrap();
    assert!(
        stuck_pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "the Pending pod was deleted"
    );
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
    let Some(mut c) = cluster(nodes(3), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    pods_running(&c, 3).await;

    // The process dies without releasing its lease; a new one takes over
    // under the same identity (same pod name after a container restart).
    c.crash_controller(0).await;
    c.advance(30);
    c.start_controller(Cluster::options("replica-a")).await;
    c.settle().await;
    assert_eq!(c.jobs().await.len(), 1);
    assert_eq!(c.pods().await.len(), 3, "no second pod per node");
    // A second pod per node that came and went would not show in a list.
    assert_eq!(c.pods_created(), 3, "pods created over the restart");

    run_to_completion(&c, &name, 0).await;
    c.crash_controller(1).await;
    c.advance(60);
    c.start_controller(Cluster::options("replica-a")).await;
    c.settle().await;
    assert_eq!(c.jobs().await.len(), 1, "the next run is a day away, restart or not");
    let state = c.config_map("scour-state").await.expect("the state ConfigMap");
    assert!(state.data.unwrap().contains_key("nextRun"));

    c.advance(24 * 3600);
    let next = next_run(&c, std::slice::from_ref(&name)).await;
    assert_ne!(next, name);
}

#[tokio::test]
async fn a_malformed_exclusion_configmap_fails_the_run_closed() {
    let Some(mut c) = Cluster::start().await else { return };
    for n in nodes(3) {
        c.apply(&n).await;
    }
    set_config(&c, CONFIG).await;
    c.apply(&config_map(
        "team-a",
        "list.json",
        r#"{"excluded": ["docker.io/library/*"]}"#,
        true,
    ))
    .await;
    c.apply(&config_map("team-b", "list.json", r#"{"exclude": ["oops"]}"#, true))
        .await;
    c.start_controller(Cluster::options("replica-a")).await;
    let name = first_run(&c).await;
    let status = finished(&c, &name).await.status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Failed));
    let message = status.message.clone().unwrap();
    assert!(message.contains("team-b") && message.contains("list.json"), "{message}");
    assert_eq!(status.failed, 3);
    let failed = status.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(failed.reason, "FailedClosed");
    c.settle().await;
    assert!(c.pods().await.is_empty(), "no worker starts anywhere");
    assert!(
        c.events().await.iter().any(|e| {
            e.reason.as_deref() == Some("RunFailed") && e.note.as_deref().unwrap_or("").contains("team-b")
        })
    );
}

#[tokio::test]
async fn an_exclusion_configmap_without_a_json_key_fails_the_run_closed() {
    let Some(c) = cluster(nodes(1), &automatic_off()).await else {
        return;
    };
    c.apply(&config_map("excluded", "sample", r#"{"excluded": []}"#, true))
        .await;
    create(&Api::<ImageList>::all(c.admin.clone()), &seed_imagelist()).await;
    let name = first_run(&c).await;
    let message = finished(&c, &name).await.status.unwrap().message.unwrap();
    assert!(message.contains("excluded") && message.contains(".json"), "{message}");
}

#[tokio::test]
async fn an_interval_out_of_range_is_rejected_and_a_fix_applies_without_a_restart() {
    let broken = CONFIG.replace("repeatInterval: 24h", "repeatInterval: 1h");
    let Some(c) = cluster(nodes(1), &broken).await else {
        return;
    };
    let invalid = |c: &Cluster| match c.progress(0).tick {
        Some(Tick::InvalidConfig(message)) => Some(message),
        _ => None,
    };
    let message = c
        .eventually("the config to be rejected", || async { invalid(&c) })
        .await;
    assert!(
        message.contains("manager.scheduling.repeatInterval: 1h is outside the accepted range of 24h to 2160h"),
        "{message}"
    );
    c.advance(5);
    set_config(&c, &format!("{broken}\n")).await;
    c.settle().await;
    assert!(c.jobs().await.is_empty());
    let warnings = |events: Vec<k8s_openapi::api::events::v1::Event>| -> Vec<_> {
        events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("InvalidConfig"))
            .collect()
    };
    let standing = warnings(c.events().await);
    assert_eq!(standing.len(), 1, "one event for a standing problem");
    assert_eq!(
        standing[0].regarding.as_ref().unwrap().name.as_deref(),
        Some("eraser-manager-config")
    );
    assert!(
        c.controller(0)
            .metrics
            .render()
            .contains("scour_controller_config_valid 0")
    );

    set_config(&c, CONFIG).await;
    first_run(&c).await;
    assert!(
        c.controller(0)
            .metrics
            .render()
            .contains("scour_controller_config_valid 1")
    );

    // The same problem again, after it cleared: reported again, not lost.
    set_config(&c, &broken).await;
    c.eventually("the problem reported again", || async {
        let again = warnings(c.events().await);
        let count = |e: &k8s_openapi::api::events::v1::Event| e.series.as_ref().map_or(1, |s| s.count);
        (again.iter().map(count).sum::<i32>() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_absurd_duration_is_a_config_error_naming_the_field_and_the_controller_keeps_running() {
    let absurd = CONFIG.replace("repeatInterval: 24h", "repeatInterval: 99999999999999999999h");
    let Some(c) = cluster(nodes(1), &absurd).await else {
        return;
    };
    let message = c
        .eventually("the config to be rejected", || async {
            match c.progress(0).tick {
                Some(Tick::InvalidConfig(message)) => Some(message),
                _ => None,
            }
        })
        .await;
    assert!(message.contains("manager.scheduling.repeatInterval"), "{message}");
    assert!(message.contains("too long"), "{message}");
    set_config(&c, CONFIG).await;
    first_run(&c).await;
}

#[tokio::test]
async fn disabling_stops_scheduling_and_keeps_the_interval() {
    let Some(c) = cluster(nodes(1), CONFIG).await else {
        return;
    };
    let first = first_run(&c).await;
    run_to_completion(&c, &first, 0).await;
    set_config(&c, &automatic_off()).await;
    c.settle().await;
    c.advance(48 * 3600);
    c.settle().await;
    assert_eq!(c.jobs().await.len(), 1, "disabled: no run however long we wait");
    // Re-enabling without values reuses the interval still in the config.
    set_config(&c, CONFIG).await;
    next_run(&c, std::slice::from_ref(&first)).await;
}

#[tokio::test]
async fn a_non_leader_does_nothing_until_the_lease_expires() {
    let Some(mut c) = cluster(nodes(2), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    let standby = c.start_controller(Cluster::options("replica-b")).await;
    for _ in 0..6 {
        c.advance(5);
        c.settle().await;
    }
    assert_eq!(c.progress(standby).tick, Some(Tick::Follower));
    let standby_requests: Vec<_> = c
        .plane
        .audit()
        .into_iter()
        .filter(|e| e.user_agent.contains("replica-b"))
        .collect();
    assert!(!standby_requests.is_empty(), "the standby checks the Lease");
    for e in &standby_requests {
        assert!(
            e.resource == "leases" && e.verb == "get",
            "the standby only reads the Lease; it made {} {}",
            e.verb,
            e.request_uri
        );
    }
    assert_eq!(c.jobs().await.len(), 1);

    // The leader stops renewing; once the standby has seen its last renewal
    // go unchanged for the lease duration (15 s on its own clock), it leads
    // and carries on with the same run.
    c.crash_controller(0).await;
    let start = c.now();
    c.eventually("the standby to lead", || async {
        c.advance(5);
        c.settle().await;
        matches!(c.progress(standby).tick, Some(Tick::Running(ref n)) if *n == name).then_some(())
    })
    .await;
    let waited = c.now().as_second() - start.as_second();
    assert!(
        (15..=30).contains(&waited),
        "the standby took over after {waited} s of its clock; the lease is 15 s"
    );
    run_to_completion(&c, &name, 1).await;
    assert_eq!(c.jobs().await.len(), 1);
}

#[tokio::test]
async fn the_api_server_validates_imagelists_against_the_generated_schema() {
    let Some(c) = Cluster::start().await else { return };
    let lists: Api<ImageList> = Api::all(c.admin.clone());
    let created = create(&lists, &seed_imagelist()).await;
    assert_eq!(created.spec.images, ["docker.io/library/alpine:3.7.3"]);
    // The schema is not a rubber stamp.
    let raw: Api<kube::api::DynamicObject> =
        Api::all_with(c.admin.clone(), &kube::api::ApiResource::erase::<ImageList>(&()));
    for (i, bad) in [
        serde_json::json!({"images": "alpine"}),
        serde_json::json!({}),
        serde_json::json!({"images": [3]}),
    ]
    .into_iter()
    .enumerate()
    {
        let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "eraser.sh/v1", "kind": "ImageList",
            "metadata": {"name": format!("bad-{i}")}, "spec": bad,
        }))
        .unwrap();
        let err = raw.create(&PostParams::default(), &object).await.unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 422),
            "accepted {bad}: {err}"
        );
    }
    // Eraser's v1alpha1 is served too; unknown fields are pruned, as a
    // structural schema does.
    let old: Api<kube::api::DynamicObject> = Api::all_with(
        c.admin.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("eraser.sh", "v1alpha1", "ImageList"),
            "imagelists",
        ),
    );
    let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "eraser.sh/v1alpha1", "kind": "ImageList",
        "metadata": {"name": "old-version"}, "spec": {"images": ["*"], "imagez": []},
    }))
    .unwrap();
    let stored = old.create(&PostParams::default(), &object).await.unwrap();
    assert!(stored.data["spec"].get("imagez").is_none(), "{:?}", stored.data);
}

#[tokio::test]
async fn deleting_the_imagelist_mid_run_lets_the_run_finish_without_writing_status() {
    let Some((c, lists, name)) = manual_run_started(2).await else {
        return;
    };
    pods_running(&c, 2).await;
    lists.delete("imagelist", &DeleteParams::default()).await.unwrap();
    let job = run_to_completion(&c, &name, 1).await;
    assert_eq!(job.status.unwrap().phase, Some(JobPhase::Completed));
    c.settle().await;
    assert!(c.imagelist().await.is_none(), "nothing re-creates the list");
    assert_eq!(c.jobs().await.len(), 1);
}

#[tokio::test]
async fn health_readiness_and_every_metric_are_served_and_match_the_run() {
    use scour::controller::serve::{Health, router};
    use tower::ServiceExt;
    let config = CONFIG.replace("successRatio: 1.0", "successRatio: 0.5");
    let Some(c) = cluster(nodes(3), &config).await else {
        return;
    };
    let name = first_run(&c).await;
    let pods = pods_running(&c, 3).await;
    c.advance(42);
    // One node clean, one degraded (scans failed), one whose worker failed.
    let ok = termination("node-0000", 2, 3);
    let mut degraded = termination("node-0001", 1, 5);
    degraded.status = Status::Degraded;
    degraded.errors = vec!["scans failed: trivy: context deadline exceeded (4 images)".into()];
    c.finish_pod(&pods[0].name_any(), 0, &serde_json::to_string(&ok).unwrap())
        .await;
    c.finish_pod(&pods[1].name_any(), 0, &serde_json::to_string(&degraded).unwrap())
        .await;
    c.finish_pod(&pods[2].name_any(), 1, "").await;
    let job = finished(&c, &name).await;
    let status = job.status.clone().unwrap();
    c.settle().await;

    let health = std::sync::Arc::new(Health::default());
    let get = |path: &'static str| {
        let app = router(c.controller(0).metrics.clone(), health.clone());
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
    // Every series, each against what the run's record says.
    let summary = |node: &str| {
        status
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.summary.clone())
            .unwrap_or_default()
    };
    let seconds = status
        .completion_time
        .as_ref()
        .unwrap()
        .0
        .duration_since(status.start_time.as_ref().unwrap().0);
    let mut expected = vec![
        "imagejob_run_total 1".to_owned(),
        format!("pods_completed_run_total {}", status.succeeded),
        format!("pods_failed_run_total {}", status.failed),
        format!("imagejob_duration_run_seconds_count 1"),
        format!("imagejob_duration_run_seconds_sum {}", seconds.as_secs_f64()),
        "imagejob_duration_run_seconds_bucket{le=\"60\"} 1".to_owned(),
        "imagejob_duration_run_seconds_bucket{le=\"30\"} 0".to_owned(),
        "scour_controller_leader 1".to_owned(),
        "scour_controller_config_valid 1".to_owned(),
        "scour_controller_watches_failing 0".to_owned(),
    ];
    for node in ["node-0000", "node-0001"] {
        let s = summary(node);
        expected.push(format!(
            "images_removed_run_total{{node_name=\"{node}\"}} {}",
            s.removed
        ));
        expected.push(format!(
            "vulnerable_images_run_total{{node_name=\"{node}\"}} {}",
            s.vulnerable
        ));
    }
    expected.push("scour_nodes_degraded_run_total{node_name=\"node-0001\"} 1".to_owned());
    for line in &expected {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // And the numbers behind them, from the run itself.
    assert_eq!((status.succeeded, status.failed, status.degraded), (2, 1, 1));
    assert_eq!(
        (summary("node-0000").vulnerable, summary("node-0001").vulnerable),
        (3, 5)
    );
    assert_eq!(seconds.as_secs(), 42);
    assert!(
        !text.contains("node-0002\"}"),
        "a node without a summary adds no series:\n{text}"
    );
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        series,
        expected.len() + 9,
        "every series is checked above (+9 other histogram buckets):\n{text}"
    );

    // Degraded shows in the run's status and as an event.
    let degraded_condition = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded_condition.status, "True");
    assert!(
        degraded_condition.message.contains("node-0001: degraded: scans failed"),
        "{degraded_condition:?}"
    );
    let node = status.nodes.iter().find(|n| n.name == "node-0001").unwrap();
    assert_eq!(node.phase, NodePhase::Succeeded, "a degraded pass still completed");
    assert!(
        node.message.as_deref().unwrap().starts_with("degraded: scans failed"),
        "{node:?}"
    );
    c.eventually("a NodeDegraded event", || async {
        c.events()
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("NodeDegraded") && e.note.as_deref().unwrap_or("").contains("node-0001")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_worker_that_never_finishes_times_out_and_its_node_counts_as_failed() {
    let config = CONFIG.replace("pendingTimeout: 10m", "pendingTimeout: 10m\n    nodeTimeout: 2h");
    let Some(c) = cluster(nodes(2), &config).await else {
        return;
    };
    let name = first_run(&c).await;
    let pods = pods_running(&c, 2).await;
    // The node went away with the pod still Running; nothing will end it.
    c.set_pod_phase(&pods[0].name_any(), "Running").await;
    c.finish_pod(&pods[1].name_any(), 0, &summary("node-0001", 0)).await;
    c.settle().await;
    c.advance(119 * 60);
    c.settle().await;
    assert_eq!(c.job(&name).await.status.unwrap().phase, Some(JobPhase::Running));
    c.advance(60);
    let status = finished(&c, &name).await.status.unwrap();
    let lost = status.nodes.iter().find(|n| n.name == "node-0000").unwrap();
    assert_eq!(lost.phase, NodePhase::Failed);
    assert!(
        lost.message.as_deref().unwrap().contains("did not finish within 2h"),
        "{lost:?}"
    );
    let pod = Api::<Pod>::namespaced(c.admin.clone(), NS)
        .get_opt(&pods[0].name_any())
        .await
        .unwrap();
    assert!(pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
}

/// A validating webhook that cannot be reached fails every worker pod
/// creation with a 500, as an admission webhook that is down does.
fn unreachable_webhook() -> ValidatingWebhookConfiguration {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "down"},
        "webhooks": [{
            "name": "down.scour.test",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 2,
            "clientConfig": {"url": "https://127.0.0.1:1/validate"},
            "objectSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "scour"}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        }],
    }))
    .unwrap()
}

#[tokio::test]
async fn a_transient_pod_creation_error_is_retried_and_a_refusal_fails_the_node() {
    let Some(mut c) = Cluster::start_with(validating_webhook_args()).await else {
        return;
    };
    for n in nodes(2) {
        c.apply(&n).await;
    }
    set_config(&c, CONFIG).await;
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(c.admin.clone());
    create(&webhooks, &unreachable_webhook()).await;
    c.start_controller(Cluster::options("replica-a")).await;
    let name = first_run(&c).await;
    let error = c
        .eventually("the failed pod creation to be reported", || async {
            c.progress(0).error.filter(|e| e.contains("webhook"))
        })
        .await;
    assert!(error.contains("down.scour.test"), "{error}");
    // Retried with a backoff (0.5 s, doubling): not given up, not a hot loop.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let refused = c
        .plane
        .audit()
        .into_iter()
        .filter(|e| e.verb == "create" && e.resource == "pods" && e.code >= 400)
        .count();
    assert!(
        (2..=10).contains(&refused),
        "{refused} pod creations refused in about 4 s"
    );
    let status = c.job(&name).await.status.unwrap();
    assert!(
        status.nodes.iter().all(|n| n.phase == NodePhase::Queued),
        "the nodes wait: {status:?}"
    );
    assert!(c.pods().await.is_empty());

    // The webhook is gone, but a quota admits one more pod only: the second
    // creation is refused (403), which fails that node for this run.
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "one-pod", "namespace": NS},
        "spec": {"hard": {"pods": "1"}},
    }))
    .unwrap();
    create(&Api::namespaced(c.admin.clone(), NS), &quota).await;
    // No quota controller runs here: the admin writes what it would.
    let used = serde_json::json!({"status": {"hard": {"pods": "1"}, "used": {"pods": "0"}}});
    Api::<ResourceQuota>::namespaced(c.admin.clone(), NS)
        .patch_status("one-pod", &PatchParams::default(), &Patch::Merge(&used))
        .await
        .unwrap();
    webhooks.delete("down", &DeleteParams::default()).await.unwrap();
    let status = c
        .eventually("one node launched and one refused", || async {
            let status = c.job(&name).await.status?;
            status
                .nodes
                .iter()
                .all(|n| n.phase != NodePhase::Queued)
                .then_some(status)
        })
        .await;
    let refused = status.nodes.iter().find(|n| n.phase == NodePhase::Failed).unwrap();
    let message = refused.message.as_deref().unwrap();
    assert!(
        message.contains("could not create the worker pod") && message.contains("quota"),
        "{message}"
    );
    assert_eq!(c.pods().await.len(), 1, "the other node got its pod");
}

#[tokio::test]
async fn a_worker_whose_pass_failed_or_left_no_summary_fails_its_node() {
    let Some(c) = cluster(nodes(3), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    let pods = pods_running(&c, 3).await;
    let failed_pass = TerminationSummary {
        status: Status::Failed,
        errors: vec!["exclusion list /etc/scour/exclusions/user/x/a.json: expected {\"excluded\": [...]}".into()],
        ..serde_json::from_str(&summary("node-0000", 0)).unwrap()
    };
    // The worker exits 1 when its pass could not complete safely.
    c.finish_pod(&pods[0].name_any(), 1, &serde_json::to_string(&failed_pass).unwrap())
        .await;
    c.finish_pod(&pods[1].name_any(), 137, "").await;
    c.finish_pod(&pods[2].name_any(), 0, &summary("node-0002", 1)).await;
    let status = finished(&c, &name).await.status.unwrap();
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
    let Some(c) = cluster(nodes(1), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    run_to_completion(&c, &name, 0).await;
    let on_job = c
        .eventually("two events about the run", || async {
            let on_job: Vec<_> = c
                .events()
                .await
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
                .collect();
            (on_job.len() == 2).then_some(on_job)
        })
        .await;
    let reasons: Vec<&str> = on_job.iter().filter_map(|e| e.reason.as_deref()).collect();
    assert_eq!(reasons, ["RunStarted", "RunCompleted"]);
    for e in &on_job {
        // events.k8s.io/v1 on 1.20 accepts them in kube-system only.
        assert_eq!(e.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(e.reporting_controller.as_deref(), Some("scour.dev/controller"));
        assert_eq!(e.reporting_instance.as_deref(), Some("replica-a"));
    }
}

#[tokio::test]
async fn a_run_that_failed_closed_runs_again_once_the_exclusion_list_is_fixed() {
    let Some(mut c) = Cluster::start().await else { return };
    for n in nodes(2) {
        c.apply(&n).await;
    }
    set_config(&c, CONFIG).await;
    c.apply(&config_map("team-b", "list.json", r#"{"exclude": ["oops"]}"#, true))
        .await;
    c.start_controller(Cluster::options("replica-a")).await;
    let first = first_run(&c).await;
    assert_eq!(finished(&c, &first).await.status.unwrap().phase, Some(JobPhase::Failed));
    c.advance(5);
    c.settle().await;
    assert_eq!(c.jobs().await.len(), 1, "nothing changed, so nothing is retried");
    c.apply(&config_map(
        "team-b",
        "list.json",
        r#"{"excluded": ["docker.io/library/*"]}"#,
        true,
    ))
    .await;
    let second = next_run(&c, std::slice::from_ref(&first)).await;
    assert_ne!(first, second);
    let job = run_to_completion(&c, &second, 1).await;
    assert_eq!(job.status.unwrap().phase, Some(JobPhase::Completed));
    c.eventually("finished pods gone (delayOnSuccess 0s)", || async {
        c.pods().await.is_empty().then_some(())
    })
    .await;
    c.advance(5);
    c.settle().await;
    assert_eq!(
        c.jobs().await.len(),
        2,
        "the retry ran once; the next run is a day away"
    );
}

#[tokio::test]
async fn a_manual_run_that_failed_closed_runs_again_once_the_exclusion_list_is_fixed() {
    let Some(c) = cluster(nodes(1), &automatic_off()).await else {
        return;
    };
    c.apply(&config_map("excluded", "sample", r#"{"excluded": []}"#, true))
        .await;
    create(&Api::<ImageList>::all(c.admin.clone()), &seed_imagelist()).await;
    let first = first_run(&c).await;
    assert_eq!(finished(&c, &first).await.status.unwrap().phase, Some(JobPhase::Failed));
    let list = c
        .eventually("the ImageList to say why", || async {
            let status = c.imagelist().await?.status?;
            (status.phase == Some(JobPhase::Failed)).then_some(status)
        })
        .await;
    assert!(list.message.unwrap().contains("excluded"), "the ImageList says why");
    assert_eq!(condition(&list.conditions, "Failed"), Some("True"));
    c.settle().await;
    assert_eq!(c.jobs().await.len(), 1);
    c.apply(&config_map("excluded", "sample.json", r#"{"excluded": []}"#, true))
        .await;
    let second = next_run(&c, std::slice::from_ref(&first)).await;
    assert_eq!(c.job(&second).await.spec.images, ["docker.io/library/alpine:3.7.3"]);
    run_to_completion(&c, &second, 1).await;
    let list = c
        .eventually("the ImageList to show the retry", || async {
            let status = c.imagelist().await?.status?;
            (status.phase == Some(JobPhase::Completed)).then_some(status)
        })
        .await;
    assert_eq!((list.success, list.job.as_deref()), (1, Some(second.as_str())));
}

#[tokio::test]
async fn a_status_write_that_lost_a_race_is_refused_and_redone_from_a_fresh_read() {
    // A big rollout: the controller creates 60 pods before it writes the
    // run's status, and someone labels the ImageJob meanwhile.
    let config = CONFIG.replace("maxConcurrency: 5", "maxConcurrency: 100%");
    let Some(c) = cluster(nodes(60), &config).await else {
        return;
    };
    let name = first_run(&c).await;
    c.eventually("the first worker pod", || async {
        (!c.pods().await.is_empty()).then_some(())
    })
    .await;
    let jobs: Api<ImageJob> = Api::all(c.admin.clone());
    let label = serde_json::json!({"metadata": {"labels": {"team": "platform"}}});
    jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    let pods = pods_running(&c, 60).await;
    for (i, pod) in pods.iter().enumerate() {
        c.finish_pod(&pod.name_any(), 0, &summary(&format!("node-{i:04}"), 1))
            .await;
    }
    let status = finished(&c, &name).await.status.unwrap();
    assert_eq!((status.succeeded, status.removed), (60, 60), "no result is lost");
    assert!(
        status.nodes.iter().all(|n| n.pod.is_some() && n.started.is_some()),
        "every node's pod is recorded"
    );
    let conflicts = c
        .plane
        .audit()
        .into_iter()
        .filter(|e| e.user_agent.contains("replica-a") && e.resource == "imagejobs")
        .filter(|e| e.subresource == "status" && e.code == 409)
        .count();
    assert!(
        conflicts > 0,
        "the write made over the old version was refused with a 409"
    );
    assert_eq!(
        c.job(&name).await.labels()["team"],
        "platform",
        "and did not undo the other write"
    );
    let created = c.pods_created();
    assert_eq!(created, 60, "one pod per node, none twice");
}

#[tokio::test]
async fn the_controller_needs_every_verb_the_chart_grants() {
    let Some(c) = cluster(nodes(1), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    run_to_completion(&c, &name, 0).await;
    // Without `create` on imagejobs, the next run cannot start, and the
    // controller says why instead of failing silently.
    let roles: Api<ClusterRole> = Api::all(c.admin.clone());
    let mut role = roles.get("scour-controller").await.unwrap();
    for rule in role.rules.iter_mut().flatten() {
        if rule.resources.as_deref() == Some(&["imagejobs".to_owned()][..]) {
            rule.verbs.retain(|v| v != "create");
        }
    }
    roles
        .replace("scour-controller", &PostParams::default(), &role)
        .await
        .unwrap();
    c.advance(24 * 3600);
    let error = c
        .eventually("the controller to report the refusal", || async { c.progress(0).error })
        .await;
    assert!(error.contains("forbidden") || error.contains("Forbidden"), "{error}");
    assert_eq!(c.jobs().await.len(), 1);
    // Refused, it retries with a backoff rather than hammering the API server.
    let before = c.plane.audit().len();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let creates = c.plane.audit()[before..]
        .iter()
        .filter(|e| e.verb == "create" && e.resource == "imagejobs")
        .count();
    assert!(creates <= 4, "{creates} refused ImageJob creations in 3 s");
}

#[tokio::test]
async fn an_idle_leader_asks_for_nothing_but_lease_renewals() {
    let Some(c) = cluster(nodes(2), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    run_to_completion(&c, &name, 0).await;
    c.settle().await;
    let before = c.plane.audit().len();
    // A minute of the controller's time: twelve renewals at a 15 s lease.
    for _ in 0..12 {
        c.advance(5);
        c.settle().await;
    }
    let idle: Vec<_> = c.plane.audit()[before..]
        .iter()
        .filter(|e| e.user_agent.contains("replica-a"))
        .cloned()
        .collect();
    let (leases, other): (Vec<_>, Vec<_>) = idle.iter().partition(|e| e.resource == "leases");
    assert!(leases.len() >= 10, "renewals: {}", leases.len());
    assert!(
        other.is_empty(),
        "an idle leader asked for more than its Lease: {:?}",
        other
            .iter()
            .map(|e| format!("{} {}", e.verb, e.request_uri))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_deleted_run_takes_its_worker_pods_with_it() {
    let Some(c) = cluster(nodes(2), CONFIG).await else {
        return;
    };
    let name = first_run(&c).await;
    pods_running(&c, 2).await;
    Api::<ImageJob>::all(c.admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    // No garbage collector runs here; the controller deletes them itself.
    c.eventually("the orphaned pods to go", || async {
        c.pods()
            .await
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

/// `scour policy push` of the default policy with the case files `cases`
/// (different cases make a different artifact); the pinned reference.
fn push_default_policy(registry: &scour_testkit::registry::Registry, tag: &str, cases: &[&str]) -> String {
    let root = scour_testkit::guests::workspace_root();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_scour"));
    cmd.args(["policy", "push", "--policy"])
        .arg(scour_testkit::guests::default_policy_path())
        .arg(format!("registry://{}/policies/default:{tag}", registry.host()))
        .args(["--insecure-registry", &registry.host()]);
    for c in cases {
        cmd.arg("--cases").arg(root.join("policies/default/tests").join(c));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn with_registry_policy(module: &str, registry: &scour_testkit::registry::Registry) -> String {
    automatic_off().replace(
        "scour:\n",
        &format!(
            "scour:\n  policy:\n    module: {module}\n    insecureSources: [\"{}\"]\n    canary: true\n",
            registry.host()
        ),
    )
}

#[tokio::test]
async fn a_canary_node_runs_a_new_registry_policy_dry_first_and_a_failed_canary_stops_the_run() {
    let Some(registry) = scour_testkit::registry::Registry::start() else {
        return;
    };
    let v1 = push_default_policy(&registry, "v1", &["automatic.yaml", "manual.yaml"]);
    let v2 = push_default_policy(&registry, "v2", &["automatic.yaml"]);
    assert_ne!(v1, v2);
    let Some(c) = cluster(nodes(3), &with_registry_policy(&v1, &registry)).await else {
        return;
    };
    let lists: Api<ImageList> = Api::all(c.admin.clone());
    create(&lists, &seed_imagelist()).await;
    let name = first_run(&c).await;
    // The canary alone, dry, with the new policy.
    let pods = pods_running(&c, 1).await;
    let canary = pods[0].spec.as_ref().unwrap().node_name.clone().unwrap();
    let a = args(&pods[0]);
    assert!(a.contains(&"--dry-run".to_owned()), "{a:?}");
    assert!(a.contains(&format!("--policy={v1}")), "{a:?}");
    parses_as_a_worker(&pods[0]);
    let status = c.job(&name).await.status.unwrap();
    assert_eq!(status.canary.as_deref(), Some(canary.as_str()));
    assert_eq!(status.policy.as_deref(), Some(v1.as_str()));
    c.finish_pod(&pods[0].name_any(), 0, &summary(&canary, 0)).await;
    // Then the others, for real.
    let pods = pods_running(&c, 2).await;
    for p in &pods {
        assert!(!args(p).contains(&"--dry-run".to_owned()), "{:?}", args(p));
    }
    let job = run_to_completion(&c, &name, 1).await;
    assert_eq!(job.status.unwrap().phase, Some(JobPhase::Completed));

    // v2's canary fails: no other node runs it, and the run fails.
    set_config(&c, &with_registry_policy(&v2, &registry)).await;
    let images = |tag: &str| serde_json::json!({"spec": {"images": [format!("docker.io/library/busybox:{tag}")]}});
    lists
        .patch("imagelist", &PatchParams::default(), &Patch::Merge(&images("1.36")))
        .await
        .unwrap();
    let second = next_run(&c, std::slice::from_ref(&name)).await;
    let pods = pods_running(&c, 1).await;
    let a = args(&pods[0]);
    assert!(
        a.contains(&"--dry-run".to_owned()) && a.contains(&format!("--policy={v2}")),
        "{a:?}"
    );
    let canary = pods[0].spec.as_ref().unwrap().node_name.clone().unwrap();
    c.finish_pod(&pods[0].name_any(), 1, "").await;
    let job = finished(&c, &second).await;
    let status = job.status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Failed), "{status:#?}");
    for n in status.nodes.iter().filter(|n| n.name != canary) {
        assert_eq!(n.phase, NodePhase::Failed, "{n:?}");
        assert!(n.message.as_deref().unwrap_or_default().contains("canary"), "{n:?}");
        assert!(n.pod.is_none(), "{n:?} got a pod");
    }
    // v1 is still the last good policy: v2 gets a canary again next time.
    lists
        .patch("imagelist", &PatchParams::default(), &Patch::Merge(&images("1.37")))
        .await
        .unwrap();
    let third = next_run(&c, &[name.clone(), second.clone()]).await;
    let pods = pods_running(&c, 1).await;
    assert!(args(&pods[0]).contains(&"--dry-run".to_owned()));
    assert_eq!(
        c.job(&third).await.status.unwrap().canary.as_deref(),
        pods[0].spec.as_ref().unwrap().node_name.as_deref()
    );
}
