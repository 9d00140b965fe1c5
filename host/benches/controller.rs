//! P5b: the real `scour controller` process over a 1 000-node run, against
//! the in-memory API server (tests/fake-kube) served over HTTP through a
//! kubeconfig. The bench plays the kubelets: it finishes each worker pod
//! with a termination summary. Baseline: the same run over 10 nodes,
//! measured in the same process.
//!
//! - plan + launch: controller start until every worker pod exists
//!   (rollout cap 100%, so the cap does not hide the cost);
//! - collect + finish: the last pod ending until the ImageJob is Completed;
//! - peak RSS of the controller (VmHWM). Target: ≤ 30 MiB at 1 000 nodes.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use scour::controller::crd::{ImageJob, JobPhase};
use scour::report::{ImageEntry, Status, Summary, TerminationSummary};
use scour_fake_kube::FakeApi;

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");
const NS: &str = "kube-system";
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

struct Row {
    nodes: usize,
    launch: Duration,
    finish: Duration,
    peak_rss: u64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<Row> = [10, 1000].into_iter().map(|n| runtime.block_on(run(n))).collect();
    let (base, big) = (&rows[0], &rows[1]);
    println!("\nP5b: scour controller, one run, rollout cap 100% (fake API over HTTP)");
    println!(
        "{:>6}  {:>14}  {:>16}  {:>14}",
        "nodes", "plan+launch", "collect+finish", "peak RSS"
    );
    for r in &rows {
        println!(
            "{:>6}  {:>12.2} s  {:>14.2} s  {:>10.1} MiB",
            r.nodes,
            r.launch.as_secs_f64(),
            r.finish.as_secs_f64(),
            r.peak_rss as f64 / 1048576.0
        );
    }
    println!(
        "ratios 1000/10 nodes: plan+launch {:.1}×, collect+finish {:.1}×, peak RSS {:.2}× (target: ≤ 30 MiB at 1 000 nodes: {})",
        big.launch.as_secs_f64() / base.launch.as_secs_f64(),
        big.finish.as_secs_f64() / base.finish.as_secs_f64(),
        big.peak_rss as f64 / base.peak_rss as f64,
        if big.peak_rss <= 30 * 1048576 { "met" } else { "MISSED" }
    );
}

async fn run(nodes: usize) -> Row {
    let fake = FakeApi::new();
    for i in 0..nodes {
        fake.seed(&Node {
            metadata: ObjectMeta {
                name: Some(format!("aks-nodepool1-12345678-vmss{i:06}")),
                labels: Some(BTreeMap::from([("kubernetes.io/os".into(), "linux".into())])),
                ..Default::default()
            },
            ..Default::default()
        });
    }
    fake.seed(&ConfigMap {
        metadata: ObjectMeta {
            name: Some("eraser-manager-config".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "controller_manager_config.yaml".into(),
            CONFIG.into(),
        )])),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = fake.clone();
    let serving = tokio::spawn(async move { server.serve_http(listener).await });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {NS}\ncurrent-context: fake\n"
        ),
    )
    .unwrap();

    let started = Instant::now();
    let mut controller = Controller::start(&kubeconfig);
    let pods = wait_for(Duration::from_secs(300), || {
        let pods = fake.list::<Pod>();
        (pods.len() == nodes).then_some(pods)
    })
    .await;
    let launch = started.elapsed();
    for pod in &pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        fake.finish_pod(NS, &pod.name_any(), 0, &summary(&node));
    }
    let ended = Instant::now();
    wait_for(Duration::from_secs(300), || {
        fake.list::<ImageJob>()
            .into_iter()
            .find(|j| j.status.as_ref().and_then(|s| s.phase) == Some(JobPhase::Completed))
    })
    .await;
    let finish = ended.elapsed();
    let peak_rss = controller.peak_rss();
    controller.stop();
    serving.abort();
    Row {
        nodes,
        launch,
        finish,
        peak_rss,
    }
}

async fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary(node: &str) -> String {
    let entry = |i: usize| ImageEntry {
        id: format!("{i:012x}"),
        image: format!("registry.example.com/team/app-{i}:1.2.3"),
        reason: "vulnerable: 2 HIGH, 1 CRITICAL".into(),
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

/// The controller process, stopped by its PID with SIGTERM.
struct Controller(Child);

impl Controller {
    fn start(kubeconfig: &std::path::Path) -> Self {
        let child = Command::new(SCOUR)
            .args([
                "controller",
                "--tick",
                "200ms",
                "--listen",
                "127.0.0.1:0",
                "--identity",
                "bench",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", NS)
            .env("SCOUR_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting scour controller");
        Self(child)
    }

    fn peak_rss(&self) -> u64 {
        scour::report::peak_rss_bytes_of(&self.0.id().to_string()).expect("VmHWM in /proc/PID/status")
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
