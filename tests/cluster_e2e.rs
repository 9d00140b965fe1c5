//! A whole cluster run, end to end: a real kube-apiserver (1.20) with the
//! chart applied through kubectl, the real `scour controller` process as the
//! chart's ServiceAccount, and for each Linux node a private containerd and
//! a node agent that plays its kubelet, running the real `scour worker` from
//! each worker pod's command line against that node's containerd.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use kube::ResourceExt;
use scour::controller::crd::{ImageJob, JobPhase, NodePhase, Trigger};
use scour_testkit::cluster::{Cluster, ControllerProcess, node};
use scour_testkit::control_plane::{User, require_kubectl};
use scour_testkit::helm::Helm;
use scour_testkit::kubelet::{NodeAgent, NodeSetup};
use scour_testkit::scenario::{TestNode, clean, end_of_life, runnable_vulnerable, standard_db, vulnerable};

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");
/// What the chart's config says the runtime socket is.
const RUNTIME_SOCKET: &str = "/run/containerd/containerd.sock";
/// What the chart's config says the runtime's root is (runtime.imageFsPath).
const IMAGE_FS_PATH: &str = "/var/lib/containerd";

/// The seed's ImageList, as its heredoc writes it.
const SEED_IMAGELIST: &str = include_str!("data/controller/imagelist.yaml");

/// A Linux node: its containerd and images, and the agent playing its kubelet.
struct Node {
    name: String,
    test: TestNode,
    agent: NodeAgent,
}

impl Node {
    /// Whether an image named `tag` is still on the node.
    fn has(&self, role: &str) -> bool {
        self.test.has(role)
    }

    /// Runs a container of `image` in a pod sandbox `pod`, keeping it in use.
    async fn keep_in_use(&self, pod: &str, image: &str) {
        let sandbox = self.test.ctd.run_pod(pod).await.expect("a pod sandbox");
        self.test
            .ctd
            .create_container(&sandbox, image, "api", true)
            .await
            .expect("a running container");
    }
}

/// The chart applied with `values`, the Node objects, and one agent per
/// Linux node over a private containerd holding `images`.
async fn cluster(
    values: &[&str],
    linux: &[&str],
    images: impl Fn(&str) -> Vec<(&'static str, scour_testkit::images::TestImage)>,
) -> Option<(Cluster, Vec<Node>)> {
    cluster_with(values, linux, images, |_| {}).await
}

/// [`cluster`], with `adjust` changing each node agent's setup.
async fn cluster_with(
    values: &[&str],
    linux: &[&str],
    images: impl Fn(&str) -> Vec<(&'static str, scour_testkit::images::TestImage)>,
    adjust: impl Fn(&mut NodeSetup),
) -> Option<(Cluster, Vec<Node>)> {
    let c = Cluster::bare().await?;
    if !require_kubectl() {
        return None;
    }
    let helm = Helm::find()?;
    let mut args = vec!["--include-crds"];
    args.extend_from_slice(values);
    apply(&c, &helm.template(&args));
    c.apply(&node("win-1", &[("kubernetes.io/os", "windows")])).await;
    let trivy_dir = scour_testkit::gate::require_trivy()?
        .parent()
        .expect("trivy's directory")
        .to_owned();
    let mut nodes = Vec::new();
    for name in linux {
        c.apply(&node(name, &[])).await;
        let mut test = TestNode::start()?;
        test.import(images(name));
        let root = test.work.path().join("node");
        let state = root.join("host/var/lib/scour");
        // The node's Trivy DB, where the worker pod's hostPath puts it.
        standard_db().write(&state.join("trivy")).expect("the Trivy DB");
        let mut setup = NodeSetup {
            node: (*name).to_owned(),
            root: root.clone(),
            host_paths: BTreeMap::from([
                (RUNTIME_SOCKET.to_owned(), test.ctd.socket()),
                // The chart's runtime.imageFsPath: containerd's root.
                (IMAGE_FS_PATH.to_owned(), test.ctd.root()),
            ]),
            binaries: BTreeMap::from([("/usr/local/bin/scour".to_owned(), PathBuf::from(SCOUR))]),
            env: vec![
                // The image puts Trivy on PATH; the test machine has no
                // route to Trivy's DB registry, so workers scan offline
                // with the DB above.
                (
                    "PATH".into(),
                    format!("{}:{}", trivy_dir.display(), std::env::var("PATH").unwrap_or_default()),
                ),
                ("SCOUR_TRIVY_OFFLINE".into(), "true".into()),
                (
                    "SCOUR_POLICY_CACHE_DIR".into(),
                    scour_testkit::scenario::policy_cache_dir().display().to_string(),
                ),
            ],
        };
        adjust(&mut setup);
        let agent = NodeAgent::start(c.admin.clone(), setup).await;
        nodes.push(Node {
            name: (*name).to_owned(),
            test,
            agent,
        });
    }
    Some((c, nodes))
}

fn apply(c: &Cluster, yaml: &str) {
    let mut child = c
        .plane
        .kubectl(User::Admin)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for the run of `trigger` number `n` to finish.
async fn finished_run(c: &Cluster, trigger: Trigger, n: usize, controller: &ControllerProcess) -> ImageJob {
    let job = c
        .eventually(&format!("{trigger:?} run {n} to finish"), || async {
            let job = c
                .jobs()
                .await
                .into_iter()
                .filter(|j| j.spec.trigger == trigger)
                .nth(n - 1)?;
            job.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p != JobPhase::Running)
                .then_some(job)
        })
        .await;
    let status = job.status.as_ref().unwrap();
    assert_eq!(
        status.phase,
        Some(JobPhase::Completed),
        "{:#?}\ncontroller log:\n{}",
        status,
        controller.log_text()
    );
    job
}

/// What a node's report removed, image → reason.
fn removed_with_reasons(report: &scour::controller::crd::NodeReportSpec) -> BTreeMap<&str, &str> {
    report
        .removed
        .iter()
        .map(|e| (e.image.as_str(), e.reason.as_str()))
        .collect()
}

fn worker_logs(nodes: &[Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        for ran in n.agent.ran() {
            out.push_str(&format!(
                "--- {} {} exit {}\n{}\n",
                n.name,
                ran.pod,
                ran.exit,
                std::fs::read_to_string(&ran.log).unwrap_or_default()
            ));
        }
    }
    out
}

#[tokio::test]
async fn the_seed_imagelist_removes_its_images_from_every_node_and_a_prune_spares_excluded_and_in_use_images() {
    let images = |node: &str| {
        let mut images = vec![
            ("victim", vulnerable("docker.io/library/alpine:3.7.3", "victim")),
            ("excluded", clean("docker.io/library/nginx:1.25", "excluded")),
            (
                "in-use",
                runnable_vulnerable("myregistry.example.com/shop/api:2.4.1", "in-use"),
            ),
            ("stale", end_of_life("ghcr.io/example/legacy-tool:0.9", "stale")),
        ];
        if node == "node-c" {
            images.extend((0..STALE_ON_C).map(|i| {
                let tag = format!("registry.example.com/build/cache-{i}:pr-{i}");
                ("stale-extra", clean(&tag, &format!("extra-{i}")))
            }));
        }
        images
    };
    let Some((c, nodes)) = cluster(&["--set", "enabled=false"], &["node-a", "node-b", "node-c"], images).await else {
        return;
    };
    // A running container keeps its image in use on every node.
    for n in &nodes {
        n.keep_in_use("web", "myregistry.example.com/shop/api:2.4.1").await;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sample.json"),
        r#"{"excluded": ["docker.io/library/nginx:*"]}"#,
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        let out = c
            .plane
            .kubectl(User::Admin)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kubectl(&[
        "create",
        "configmap",
        "excluded",
        "--from-file=sample.json",
        "--namespace=kube-system",
    ]);
    kubectl(&[
        "label",
        "configmap",
        "excluded",
        "eraser.sh/exclude.list=true",
        "-n",
        "kube-system",
    ]);
    let controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "e2e", &[]);

    apply(&c, SEED_IMAGELIST);
    let job = finished_run(&c, Trigger::Manual, 1, &controller).await;
    let logs = worker_logs(&nodes);
    for n in &nodes {
        assert!(!n.has("victim"), "alpine:3.7.3 is still on {}\n{logs}", n.name);
        for role in ["excluded", "in-use", "stale"] {
            assert!(
                n.has(role),
                "{role} was removed from {} by a list that does not name it",
                n.name
            );
        }
    }
    let status = job.status.clone().unwrap();
    assert_eq!(
        (status.succeeded, status.failed, status.skipped, status.desired),
        (3, 0, 1, 4)
    );
    let windows = status.nodes.iter().find(|n| n.name == "win-1").unwrap();
    assert_eq!(
        (windows.phase, windows.message.as_deref()),
        (NodePhase::Skipped, Some("Windows node"))
    );
    // Every node's results, in full, read from its worker's log.
    let reports = c.reports(&job.name_any()).await;
    assert_eq!(reports.len(), 3, "{reports:?}");
    for (node, parts) in &reports {
        let r = &parts[0].spec;
        assert!(r.complete, "{node}: {:?}", r.incomplete);
        assert_eq!(r.removed.len(), 1, "{node}: {r:?}");
        assert_eq!(r.removed[0].image, "docker.io/library/alpine:3.7.3");
        assert!(r.removed[0].reason.starts_with("imagelist: "), "{r:?}");
        assert!(r.removed[0].size_bytes > 0);
    }
    let list = c
        .eventually("the ImageList status", || async {
            let status = c.imagelist().await?.status?;
            (status.phase == Some(JobPhase::Completed)).then_some(status)
        })
        .await;
    assert_eq!((list.success, list.failed, list.skipped), (3, 0, 1));
    assert!(list.timestamp.is_some());

    // "*" prunes every unused image but the excluded one.
    apply(
        &c,
        &SEED_IMAGELIST.replace("- docker.io/library/alpine:3.7.3", "- \"*\""),
    );
    let job = finished_run(&c, Trigger::Manual, 2, &controller).await;
    let logs = worker_logs(&nodes);
    for n in &nodes {
        assert!(
            !n.has("stale"),
            "the stale image survived a prune on {}\n{logs}",
            n.name
        );
        assert!(
            n.has("excluded"),
            "the excluded image was removed from {}\n{logs}",
            n.name
        );
        assert!(n.has("in-use"), "the in-use image was removed from {}\n{logs}", n.name);
        assert!(
            n.test.image_ids().contains(&n.test.sandbox_id()),
            "the pause image went"
        );
    }
    let reports = c.reports(&job.name_any()).await;
    let node_a: Vec<&str> = reports["node-a"][0]
        .spec
        .removed
        .iter()
        .map(|e| e.reason.as_str())
        .collect();
    assert_eq!(node_a, ["prune"]);

    // Node C removed more than a hundred images: every one is kept, with its
    // reason, and readable with kubectl once the worker pods are gone.
    c.eventually("the worker pods to be deleted", || async {
        c.pods().await.is_empty().then_some(())
    })
    .await;
    let out = c
        .plane
        .kubectl(User::Admin)
        .args([
            "get",
            "nodereports",
            "-l",
            &format!("scour.dev/job={}", job.name_any()),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node_c: Vec<&serde_json::Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spec"]["node"] == "node-c")
        .flat_map(|r| r["spec"]["removed"].as_array().unwrap())
        .collect();
    assert_eq!(
        node_c.len(),
        STALE_ON_C + 1,
        "every image removed on node-c: {:?}",
        reports["node-c"][0].spec.summary
    );
    for e in &node_c {
        assert_eq!(e["reason"], "prune", "{e}");
        assert!(e["sizeBytes"].as_u64().unwrap() > 0, "{e}");
    }
    let out = c
        .plane
        .kubectl(User::Admin)
        .args(["get", "nodereports"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("node-c") && table.contains(&(STALE_ON_C + 1).to_string()),
        "{table}"
    );
}

/// How many more stale images node-c holds.
const STALE_ON_C: usize = 120;

#[tokio::test]
async fn an_automatic_run_scans_with_real_trivy_and_removes_what_the_default_policy_flags() {
    let images = |_: &str| {
        vec![
            ("vulnerable", vulnerable("docker.io/library/alpine:3.12", "vulnerable")),
            ("clean", clean("docker.io/library/alpine:3.99", "clean")),
            ("eol", end_of_life("docker.io/library/alpine:3.5", "eol")),
        ]
    };
    let Some((c, nodes)) = cluster(&[], &["node-a", "node-b"], images).await else {
        return;
    };
    let controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "e2e", &[]);
    let job = finished_run(&c, Trigger::Automatic, 1, &controller).await;
    let logs = worker_logs(&nodes);
    for n in &nodes {
        assert!(!n.has("vulnerable"), "{} kept the vulnerable image\n{logs}", n.name);
        assert!(!n.has("eol"), "{} kept the end-of-life image\n{logs}", n.name);
        assert!(n.has("clean"), "{} lost the clean image\n{logs}", n.name);
    }
    let status = job.status.clone().unwrap();
    assert_eq!((status.succeeded, status.skipped), (2, 1));
    assert_eq!(status.removed, 4);
    let reports = c.reports(&job.name_any()).await;
    for n in status.nodes.iter().filter(|n| n.name.starts_with("node-")) {
        let report = &reports[&n.name][0].spec;
        assert!(report.complete, "{:?}", report.incomplete);
        let reasons = removed_with_reasons(report);
        assert!(
            reasons["docker.io/library/alpine:3.12"].starts_with("vulnerable: "),
            "{reasons:?}"
        );
        assert_eq!(reasons["docker.io/library/alpine:3.5"], "eol: alpine 3.5.2");
        let summary = n.summary.as_ref().unwrap();
        // The sandbox (pause) image is scanned too: no pod runs on it here.
        assert_eq!((summary.removed, summary.scanned), (2, 4), "{summary:?}");
    }
}

#[tokio::test]
async fn a_cluster_dry_run_removes_nothing_anywhere_and_lists_what_it_would_remove() {
    let images = |_: &str| {
        vec![
            ("vulnerable", vulnerable("docker.io/library/alpine:3.12", "vulnerable")),
            ("clean", clean("docker.io/library/alpine:3.99", "clean")),
            ("eol", end_of_life("docker.io/library/alpine:3.5", "eol")),
        ]
    };
    let Some((c, nodes)) = cluster(&["--set", "dryRun=true"], &["node-a", "node-b"], images).await else {
        return;
    };
    let controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "e2e", &[]);
    let job = finished_run(&c, Trigger::Automatic, 1, &controller).await;
    assert!(job.spec.dry_run, "the run says it is dry");
    let logs = worker_logs(&nodes);
    for n in &nodes {
        for role in ["vulnerable", "clean", "eol"] {
            assert!(n.has(role), "a dry run removed {role} from {}\n{logs}", n.name);
        }
    }
    let status = job.status.clone().unwrap();
    assert_eq!((status.removed, status.would_remove, status.bytes_freed), (0, 4, 0));
    let reports = c.reports(&job.name_any()).await;
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (node, parts) in &reports {
        let r = &parts[0].spec;
        assert!(r.dry_run && r.complete, "{node}: {r:?}");
        assert!(r.removed.is_empty(), "{node}: {r:?}");
        let would: BTreeMap<&str, &str> = r
            .would_remove
            .iter()
            .map(|e| (e.image.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(would.len(), 2, "{node}: {would:?}");
        assert!(
            would["docker.io/library/alpine:3.12"].starts_with("vulnerable: "),
            "{would:?}"
        );
        assert_eq!(would["docker.io/library/alpine:3.5"], "eol: alpine 3.5.2");
    }
}

#[tokio::test]
async fn a_run_whose_scans_all_fail_is_degraded_on_every_node_and_keeps_every_image() {
    let images = |_: &str| {
        vec![
            ("vulnerable", vulnerable("docker.io/library/alpine:3.12", "vulnerable")),
            ("clean", clean("docker.io/library/alpine:3.99", "clean")),
        ]
    };
    let Some((c, nodes)) = cluster(&[], &["node-a", "node-b"], images).await else {
        return;
    };
    // Every node's Trivy DB is corrupt: every scan fails.
    for n in &nodes {
        let db = n.test.work.path().join("node/host/var/lib/scour/trivy/db/trivy.db");
        std::fs::write(db, vec![0x5a; 8192]).unwrap();
    }
    let controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "e2e", &[]);
    let job = finished_run(&c, Trigger::Automatic, 1, &controller).await;
    let logs = worker_logs(&nodes);
    for n in &nodes {
        assert!(
            n.has("vulnerable") && n.has("clean"),
            "an image was removed from {} without a scan\n{logs}",
            n.name
        );
    }
    let status = job.status.clone().unwrap();
    assert_eq!((status.degraded, status.removed), (2, 0), "{status:#?}");
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
    assert!(
        degraded.is_some_and(|c| c.status == "True" && c.message.starts_with("2 of 3 nodes degraded")),
        "{:#?}",
        status.conditions
    );
    for n in status.nodes.iter().filter(|n| n.name.starts_with("node-")) {
        let message = n.message.as_deref().unwrap_or_default();
        assert!(message.starts_with("degraded: "), "{}: {message}", n.name);
    }
    let warned: Vec<String> = c
        .eventually("a NodeDegraded event per node", || async {
            let notes: Vec<String> = c
                .events()
                .await
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("NodeDegraded"))
                .filter_map(|e| e.note)
                .collect();
            (notes.len() == 2).then_some(notes)
        })
        .await;
    for node in ["node-a", "node-b"] {
        assert!(warned.iter().any(|n| n.contains(node)), "{warned:?}");
    }
    for (node, parts) in c.reports(&job.name_any()).await {
        let r = &parts[0].spec;
        assert_eq!(r.status, scour::report::Status::Degraded, "{node}");
        assert!(r.summary.scan_failed >= 2, "{node}: {:?}", r.summary);
        assert!(!r.errors.is_empty(), "{node}: the reason is kept");
    }
}

/// Where the custom worker image of the disk-pressure scenario holds its
/// policy (`policy.path`).
const BAKED_POLICY: &str = "/usr/local/share/scour/policies/js-disk-pressure.wasm";
const MIB: u64 = 1 << 20;

/// An image of `tag` with `mib` MiB of content of its own: its size, and the
/// snapshot it unpacks to, are about that much.
fn sized(image: scour_testkit::images::TestImage, role: &str, mib: u64) -> scour_testkit::images::TestImage {
    image.file(
        &format!("/var/cache/filler-{role}"),
        0o644,
        vec![b'x'; (mib * MIB) as usize],
    )
}

/// The JSON log lines of every worker whose message is `msg`.
fn worker_log_lines(nodes: &[Node], msg: &str) -> Vec<serde_json::Value> {
    nodes
        .iter()
        .flat_map(|n| n.agent.ran())
        .flat_map(|ran| {
            std::fs::read_to_string(&ran.log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["message"] == msg)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_disk_pressure_example_removes_images_on_a_cluster() {
    // The JavaScript example is about 12 MiB, over a ConfigMap's 1 MiB: it
    // ships baked into a custom worker image (policy.path), which the node
    // agent stands in for with the built file.
    let Some(policy) = scour_testkit::guests::example_policy(SCOUR.as_ref(), "js-disk-pressure") else {
        return;
    };
    let digest = format!(
        "sha256:{}",
        hex_digest(&std::fs::read(&policy).expect("the built example"))
    );
    let images = |_: &str| {
        vec![
            // Unused: removable, largest first.
            ("big", sized(clean("ghcr.io/example/ml-base:1.0", "big"), "big", 48)),
            (
                "medium",
                sized(clean("registry.example.com/build/cache:pr-7", "medium"), "medium", 24),
            ),
            (
                "small",
                sized(clean("docker.io/library/alpine:3.99", "small"), "small", 4),
            ),
            // The largest, but a container runs it.
            (
                "in-use",
                sized(
                    runnable_vulnerable("myregistry.example.com/shop/api:2.4.1", "in-use"),
                    "in-use",
                    64,
                ),
            ),
            // Large, but on a user exclusion list.
            (
                "excluded",
                sized(clean("docker.io/library/nginx:1.25", "excluded"), "excluded", 40),
            ),
        ]
    };
    let values_dir = tempfile::tempdir().unwrap();
    let values = values_dir.path().join("values.yaml");
    let write_values = |settings: &str| {
        std::fs::write(
            &values,
            format!(
                "policy:\n  path: {BAKED_POLICY}\n  sha256: \"{digest}\"\n{settings}\
                 exclusions:\n  user:\n    web-team: [\"docker.io/library/nginx:*\"]\n"
            ),
        )
        .unwrap();
    };
    write_values("");
    let values_arg = values.display().to_string();
    let baked = policy.clone();
    let Some((c, nodes)) = cluster_with(&["-f", &values_arg], &["node-a"], images, move |setup| {
        setup.binaries.insert(BAKED_POLICY.to_owned(), baked.clone());
    })
    .await
    else {
        return;
    };
    let n = &nodes[0];
    n.keep_in_use("shop", "myregistry.example.com/shop/api:2.4.1").await;

    // What the policy will see: the image store's usage as containerd
    // counts it (its snapshot stats are refreshed every 10 s), and the
    // capacity of the filesystem holding its root, a 4 GiB tmpfs.
    let cri = n.test.ctd.cri_client().await.expect("a CRI client");
    let fillers = (48 + 24 + 4 + 64 + 40) * MIB;
    let used = c
        .eventually("containerd to count the imported images' snapshots", || async {
            let used = cri.image_fs_info().await.ok()??.used_bytes?;
            (used >= fillers).then_some(used)
        })
        .await;
    let fs = nix::sys::statvfs::statvfs(&n.test.ctd.root()).unwrap();
    let capacity = fs.blocks() * fs.fragment_size();
    // The filesystem is mostly empty, so the thresholds sit just under what
    // the images fill, in the policy's own tenths of a percent: over the
    // threshold, and freeing about 60 MiB reaches the target. Largest
    // first, that takes the big (48 MiB) and the medium (24 MiB) image and
    // leaves the small one; the in-use and excluded ones are never candidates.
    let tenths = used * 1000 / capacity;
    assert!(tenths >= 3, "{used} of {capacity} bytes is too little to work with");
    let threshold = (tenths - 1) as f64 / 10.0;
    let target = ((used - 60 * MIB) * 1000 + capacity / 2) / capacity;
    let target = target as f64 / 10.0;
    write_values(&format!(
        "  settings:\n    thresholdPercent: {threshold}\n    targetPercent: {target}\n"
    ));
    let helm = Helm::find().expect("helm, found once already");
    apply(&c, &helm.template(&["-f", &values_arg]));
    // The worker pod compiles the policy; warm the shared compile cache so
    // the run is not a first compile of 12 MiB of JavaScript engine.
    let checked = std::process::Command::new(SCOUR)
        .args(["policy", "check", "--policy"])
        .arg(&policy)
        .env("SCOUR_POLICY_CACHE_DIR", scour_testkit::scenario::policy_cache_dir())
        .env("SCOUR_LOG", "warn")
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));

    let controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "e2e", &[]);
    let job = finished_run(&c, Trigger::Automatic, 1, &controller).await;
    let logs = worker_logs(&nodes);
    for role in ["big", "medium"] {
        assert!(!n.has(role), "the {role} image survived disk pressure\n{logs}");
    }
    for role in ["small", "in-use", "excluded"] {
        assert!(n.has(role), "the {role} image was removed\n{logs}");
    }
    assert!(
        n.test.image_ids().contains(&n.test.sandbox_id()),
        "the pause image went"
    );

    // The worker measured the capacity through the pod's mount of the
    // node's /var/lib/containerd, and the policy saw it.
    let collected = worker_log_lines(&nodes, "collected");
    assert_eq!(collected.len(), 1, "{logs}");
    let measured_at = collected[0]["image_fs_measured_at"].as_str().unwrap_or_default();
    assert!(measured_at.ends_with("/rootfs/host/image-fs"), "{measured_at}\n{logs}");
    assert_eq!(collected[0]["image_fs_capacity"], capacity, "{logs}");
    assert_eq!(collected[0]["image_fs_used"], used, "{logs}");

    let reports = c.reports(&job.name_any()).await;
    let report = &reports["node-a"][0].spec;
    assert!(report.complete, "{:?}", report.incomplete);
    assert_eq!(report.policy, digest);
    let removed = removed_with_reasons(report);
    assert_eq!(
        removed.keys().copied().collect::<Vec<_>>(),
        ["ghcr.io/example/ml-base:1.0", "registry.example.com/build/cache:pr-7"],
        "{removed:?}"
    );
    let over = format!(
        "disk-pressure: {}% used, over {threshold}%; largest first",
        tenths as f64 / 10.0
    );
    for reason in removed.values() {
        assert!(reason.starts_with(&over), "{reason} (expected {over})");
    }
    let status = job.status.clone().unwrap();
    assert_eq!((status.succeeded, status.removed), (1, 2), "{status:#?}");
}

fn hex_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Pushes `component` with the case files under `cases` through `scour
/// policy push`, with the Docker config `auth`; returns the digest-pinned
/// reference it prints.
fn push_policy(
    registry: &scour_testkit::registry::Registry,
    auth: &std::path::Path,
    component: &std::path::Path,
    repo: &str,
    cases: &std::path::Path,
) -> String {
    let out = std::process::Command::new(SCOUR)
        .args(["policy", "push", "--policy"])
        .arg(component)
        .arg(format!("registry://{}/{repo}", registry.host()))
        .arg("--cases")
        .arg(cases)
        .args(["--insecure-registry", &registry.host()])
        .arg("--registry-auth")
        .arg(auth)
        .env("SCOUR_POLICY_CACHE_DIR", scour_testkit::scenario::policy_cache_dir())
        .output()
        .expect("scour policy push");
    assert!(
        out.status.success(),
        "scour policy push:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_python_policy_from_a_registry_runs_on_the_cluster_and_a_policy_that_traps_is_refused_before_rollout() {
    use scour_testkit::images::sha256_digest as sha256;
    use scour_testkit::oci_push::{Layer, push_artifact};
    let Some(registry) = scour_testkit::registry::Registry::start_with_auth("ci", "s3cret") else {
        return;
    };
    let Some(python) = scour_testkit::guests::example_policy(SCOUR.as_ref(), "python-cve-allowlist") else {
        return;
    };
    let size = std::fs::metadata(&python).unwrap().len();
    assert!(size >= 10 << 20, "the Python policy is {size} bytes");
    let host = registry.host();
    let auth_dir = tempfile::tempdir().unwrap();
    let auth = auth_dir.path().join("config.json");
    std::fs::write(
        &auth,
        serde_json::json!({"auths": {&host: {"username": "ci", "password": "s3cret"}}}).to_string(),
    )
    .unwrap();
    let examples = scour_testkit::guests::workspace_root().join("guest-examples");
    let good = push_policy(
        &registry,
        &auth,
        &python,
        "policies/cve-allowlist:v1",
        &examples.join("python-cve-allowlist/tests"),
    );
    // A policy that traps, published around `scour policy push` (which
    // would refuse it) with the Python policy's cases.
    let cases = std::fs::read(examples.join("python-cve-allowlist/tests/cases.yaml")).unwrap();
    let trap = push_artifact(
        registry.addr(),
        registry.basic_auth().as_deref(),
        "policies/cve-allowlist",
        "v2",
        "application/vnd.wasm.config.v1+json",
        &[
            Layer {
                media_type: "application/vnd.wasm.content.layer.v1+wasm",
                data: &scour_testkit::guests::hostile_guest("panics"),
                title: None,
            },
            Layer {
                media_type: "application/vnd.scour.policy.cases.v1+yaml",
                data: &cases,
                title: Some("cases.yaml"),
            },
        ],
    );
    let bad = format!("registry://{host}/policies/cve-allowlist:v2@{trap}");
    let values = |module: &str| {
        [
            "enabled=false".to_owned(),
            format!("policy.module={module}"),
            format!("policy.insecureSources={{{host}}}"),
            "imagePullSecrets={regcred}".to_owned(),
        ]
        .into_iter()
        .flat_map(|v| ["--set".to_owned(), v])
        .collect::<Vec<_>>()
    };
    let images = |_: &str| {
        vec![
            ("victim", vulnerable("docker.io/library/alpine:3.7.3", "victim")),
            ("stale", end_of_life("ghcr.io/example/legacy-tool:0.9", "stale")),
            ("clean", clean("docker.io/library/nginx:1.25", "clean")),
        ]
    };
    // The trapping policy comes first: with no earlier good policy, the run
    // fails closed and no worker pod starts.
    let first = values(&bad);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let Some((c, nodes)) = cluster(&first, &["node-a"], images).await else {
        return;
    };
    // Workers and the controller pull with the pull secret, as a kubelet
    // pulls images with it.
    let secret = c
        .plane
        .kubectl(User::Admin)
        .args(["create", "secret", "docker-registry", "regcred", "-n", "kube-system"])
        .arg(format!("--docker-server={host}"))
        .args(["--docker-username=ci", "--docker-password=s3cret"])
        .output()
        .unwrap();
    assert!(secret.status.success(), "{}", String::from_utf8_lossy(&secret.stderr));
    let controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "e2e", &[]);
    let helm = scour_testkit::helm::Helm::find().unwrap();
    let run = |n: usize, image: &'static str| {
        let c = &c;
        let controller = &controller;
        async move {
            apply(c, &SEED_IMAGELIST.replace("docker.io/library/alpine:3.7.3", image));
            c.eventually(&format!("manual run {n} to finish"), || async {
                let job = c
                    .jobs()
                    .await
                    .into_iter()
                    .filter(|j| j.spec.trigger == Trigger::Manual)
                    .nth(n - 1)?;
                job.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p != JobPhase::Running)
                    .then_some(job)
            })
            .await
            .status
            .unwrap_or_else(|| panic!("no status\n{}", controller.log_text()))
        }
    };
    let status = run(1, "docker.io/library/alpine:3.7.3").await;
    assert_eq!(status.phase, Some(JobPhase::Failed), "{status:#?}");
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains(&bad) && message.contains("no earlier good policy") && message.contains("trapped"),
        "{message}"
    );
    assert_eq!(c.pods_created(), 0, "no worker pod may start");
    assert!(nodes[0].has("victim"));

    // A good policy: vetted, rolled out, and named by the run.
    let second = values(&good);
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    apply(&c, &helm.template(&second));
    let status = run(2, "docker.io/library/alpine:3.7.3").await;
    let logs = worker_logs(&nodes);
    assert_eq!(status.phase, Some(JobPhase::Completed), "{status:#?}\n{logs}");
    assert!(!nodes[0].has("victim"), "the listed image survived\n{logs}");
    assert!(nodes[0].has("stale") && nodes[0].has("clean"), "{logs}");
    assert_eq!(
        status.policy.as_deref(),
        Some(good.as_str()),
        "the run names the policy's digest"
    );
    assert!(!status.conditions.iter().any(|c| c.type_ == "PolicyRefused"));
    let component = sha256(&std::fs::read(&python).unwrap());
    // The worker pulled it itself, with the pull secret: the registry asks
    // for credentials, and the node keeps what it pulled.
    let digest = good.rsplit_once("@sha256:").unwrap().1;
    let pulled = nodes[0]
        .agent
        .setup
        .root
        .join("host/var/lib/scour/pulled-policies")
        .join(digest)
        .join("component.wasm");
    assert_eq!(sha256(&std::fs::read(&pulled).unwrap()), component);
    let job = c
        .jobs()
        .await
        .into_iter()
        .filter(|j| j.spec.trigger == Trigger::Manual)
        .nth(1)
        .unwrap();
    let reports = c.reports(&job.name_any()).await;
    assert_eq!(
        reports["node-a"][0].spec.policy, component,
        "the worker ran the pushed component"
    );
    let pods_before = c.pods_created();

    // The trapping policy again: refused before any pod runs it, and the
    // run keeps the last good one.
    apply(&c, &helm.template(&first));
    let status = run(3, "ghcr.io/example/legacy-tool:0.9").await;
    let logs = worker_logs(&nodes);
    assert_eq!(status.phase, Some(JobPhase::Completed), "{status:#?}\n{logs}");
    assert!(!nodes[0].has("stale"), "the last good policy did not run\n{logs}");
    assert!(nodes[0].has("clean"));
    assert_eq!(status.policy.as_deref(), Some(good.as_str()));
    let refused = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PolicyRefused")
        .unwrap_or_else(|| panic!("no PolicyRefused condition: {:#?}", status.conditions));
    assert_eq!(refused.status, "True");
    assert!(
        refused.message.contains(&bad) && refused.message.contains("trapped"),
        "{}",
        refused.message
    );
    assert_eq!(c.pods_created(), pods_before + 1, "one pod, with the last good policy");
    assert!(!logs.contains(&trap), "a worker was given the refused policy:\n{logs}");
    let events = c.events().await;
    let refusals = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("PolicyRefused") && e.note.as_deref().is_some_and(|n| n.contains(&bad)))
        .count();
    assert!(
        refusals >= 2,
        "a refusal event for the policy and for the run: {events:#?}"
    );
    eprintln!("controller peak RSS {} MiB", controller.peak_rss() >> 20);
}
