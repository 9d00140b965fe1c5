//! P5b: the real `scour controller` process over a 1 000-node run, against a
//! real kube-apiserver (1.20) and etcd, as the chart's ServiceAccount. The
//! bench plays the kubelets: it ends each worker pod with a termination
//! summary. Baseline: the same run over 10 nodes, measured in the same
//! process.
//!
//! - plan + launch: the run's start (the config applied) until every
//!   worker pod exists (rollout cap 100%, so the cap does not hide the cost);
//! - collect + finish: the last pod ending until the ImageJob is Completed;
//! - peak RSS of the controller (VmHWM). Target: ≤ 30 MiB at 1 000 nodes;
//! - API requests of the controller, from the API server's audit log: per
//!   run, by verb and resource, and in an idle minute after the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use scour::controller::crd::{ImageJob, JobPhase};
use scour::report::{ImageEntry, Status, Summary, TerminationSummary};
use scour_testkit::cluster::{Cluster, ControllerProcess, NS, config_map, node};
use scour_testkit::control_plane::AuditEvent;

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");
const CONFIG: &str = "apiVersion: eraser.sh/v1alpha3
kind: EraserConfig
manager:
  scheduling:
    repeatInterval: 24h
    beginImmediately: true
components:
  remover:
    image:
      repo: ghcr.io/scour-dev/scour
      tag: 0.1.0
scour:
  rollout:
    maxConcurrency: 100%
";
/// How long the idle leader is watched after the run.
const IDLE: Duration = Duration::from_secs(60);

struct Row {
    nodes: usize,
    launch: Duration,
    finish: Duration,
    peak_rss: u64,
    /// verb resource[/subresource] → count, for the whole run.
    run_requests: BTreeMap<String, usize>,
    /// The same, during the idle minute.
    idle_requests: BTreeMap<String, usize>,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<Row> = [10, 1000]
        .into_iter()
        .filter_map(|n| runtime.block_on(run(n)))
        .collect();
    if rows.len() < 2 {
        eprintln!("P5b skipped: no control plane (run `just setup`)");
        return;
    }
    let (base, big) = (&rows[0], &rows[1]);
    println!("\nP5b: scour controller, one run, rollout cap 100%, real kube-apiserver 1.20 + etcd");
    println!(
        "{:>6}  {:>14}  {:>16}  {:>14}  {:>14}",
        "nodes", "plan+launch", "collect+finish", "peak RSS", "API requests"
    );
    for r in &rows {
        println!(
            "{:>6}  {:>12.2} s  {:>14.2} s  {:>10.1} MiB  {:>14}",
            r.nodes,
            r.launch.as_secs_f64(),
            r.finish.as_secs_f64(),
            r.peak_rss as f64 / 1048576.0,
            r.run_requests.values().sum::<usize>()
        );
    }
    println!(
        "ratios 1000/10 nodes: plan+launch {:.1}×, collect+finish {:.1}×, peak RSS {:.2}× (target: ≤ 30 MiB at 1 000 nodes: {})",
        big.launch.as_secs_f64() / base.launch.as_secs_f64(),
        big.finish.as_secs_f64() / base.finish.as_secs_f64(),
        big.peak_rss as f64 / base.peak_rss as f64,
        if big.peak_rss <= 30 * 1048576 { "met" } else { "MISSED" }
    );
    for r in &rows {
        println!(
            "API requests of the {}-node run: {}",
            r.nodes,
            breakdown(&r.run_requests)
        );
    }
    for r in &rows {
        let other: usize = r
            .idle_requests
            .iter()
            .filter(|(k, _)| !k.contains("leases"))
            .map(|(_, v)| v)
            .sum();
        println!(
            "idle leader, {} s after the {}-node run: {} ({} besides the Lease; goal 0)",
            IDLE.as_secs(),
            r.nodes,
            breakdown(&r.idle_requests),
            other
        );
    }
}

fn breakdown(requests: &BTreeMap<String, usize>) -> String {
    let total: usize = requests.values().sum();
    let parts: Vec<String> = requests.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{total} ({})", parts.join(", "))
}

fn tally(events: &[AuditEvent]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events.iter().filter(|e| e.user_agent.starts_with("scour-controller")) {
        let resource = if e.subresource.is_empty() {
            e.resource.clone()
        } else {
            format!("{}/{}", e.resource, e.subresource)
        };
        *out.entry(format!("{} {resource}", e.verb)).or_default() += 1;
    }
    out
}

async fn run(nodes: usize) -> Option<Row> {
    let c = Cluster::start().await?;
    for i in 0..nodes {
        c.apply(&node(&format!("aks-nodepool1-12345678-vmss{i:06}"), &[])).await;
    }
    // The controller as the chart runs it: its default debounce (500 ms).
    let mut controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "bench", &["--debounce=500ms"]);
    // The controller is up and idle (no config yet) before the clock starts:
    // it leads, and its watches have listed what there is.
    c.eventually("the controller to lead", || async {
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.admin.clone(), NS)
            .get_opt("scour-controller")
            .await
            .ok()
            .flatten()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = c.plane.audit().len();
    let started = Instant::now();
    Api::namespaced(c.admin.clone(), NS)
        .create(
            &PostParams::default(),
            &config_map("eraser-manager-config", "controller_manager_config.yaml", CONFIG, false),
        )
        .await
        .expect("the config");
    let pods = c
        .eventually("every worker pod", || async {
            let pods: Vec<Pod> = c.pods().await;
            (pods.len() == nodes).then_some(pods)
        })
        .await;
    let launch = started.elapsed();
    for pod in &pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        c.finish_pod(&pod.name_any(), 0, &summary(&node)).await;
    }
    let ended = Instant::now();
    c.eventually("the run to complete", || async {
        c.jobs()
            .await
            .into_iter()
            .find(|j: &ImageJob| j.status.as_ref().and_then(|s| s.phase) == Some(JobPhase::Completed))
    })
    .await;
    let finish = ended.elapsed();
    // The pods' cleanup (delayOnSuccess 0s) is part of the run.
    c.eventually("the worker pods to go", || async {
        c.pods().await.is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audit = c.plane.audit();
    let run_requests = tally(&audit[before..]);
    let idle_from = audit.len();
    tokio::time::sleep(IDLE).await;
    let idle_requests = tally(&c.plane.audit()[idle_from..]);
    let peak_rss = controller.peak_rss();
    controller.stop();
    Some(Row {
        nodes,
        launch,
        finish,
        peak_rss,
        run_requests,
        idle_requests,
    })
}

fn summary(node: &str) -> String {
    let entry = |i: usize| ImageEntry {
        id: format!("{i:012x}"),
        image: format!("registry.example.com/team/app-{i}:1.2.3"),
        reason: "vulnerable: 2 HIGH, 1 CRITICAL".into(),
        size_bytes: 1 << 27,
    };
    serde_json::to_string(&TerminationSummary {
        status: Status::Ok,
        node: node.into(),
        mode: scour_policy_sdk::Mode::Automatic,
        dry_run: false,
        policy: "sha256:0".into(),
        summary: Summary {
            images: 40,
            removed: 5,
            kept: 35,
            bytes_freed: 5 << 27,
            ..Default::default()
        },
        removed: (0..5).map(entry).collect(),
        failed: Vec::new(),
        errors: Vec::new(),
        omitted: 0,
    })
    .unwrap()
}
