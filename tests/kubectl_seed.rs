//! The commands an Eraser or AKS Image Cleaner operator types, verbatim,
//! through the real kubectl against a real kube-apiserver (1.20), with the
//! real `scour controller` process running as the chart's ServiceAccount.
//! The test plays the kubelet: it ends the worker pods the runs start.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kube::ResourceExt;
use scour::controller::crd::{ImageJob, JobPhase, Trigger};
use scour_testkit::cluster::{Cluster, ControllerProcess, node};
use scour_testkit::control_plane::{User, require_kubectl};
use scour_testkit::helm::Helm;

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");

/// The seed's ImageList, as its heredoc writes it.
const SEED_IMAGELIST: &str = include_str!("data/controller/imagelist.yaml");

/// Runs `cmd`, feeding it `stdin`; fails the test unless it succeeds.
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{shown}: {e}"));
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{shown} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl's complaints, less the version-skew warning kubectl 1.32 gives
/// every command against a 1.20 API server.
fn complaints(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("version difference between client"))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn kubectl(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = c.plane.kubectl(User::Admin);
    cmd.args(args);
    cmd
}

#[tokio::test]
async fn the_crds_and_the_chart_apply_cleanly_with_kubectl() {
    let Some(c) = Cluster::bare().await else { return };
    if !require_kubectl() {
        return;
    }
    let Some(helm) = Helm::find() else { return };
    // `scour crd | kubectl apply -f -`
    let mut crd = Command::new(SCOUR);
    crd.arg("crd");
    let crds = run(crd, None);
    let out = run(kubectl(&c, &["apply", "-f", "-"]), Some(&text(&crds)));
    assert_eq!(complaints(&out), Vec::<String>::new());
    assert!(text(&out).contains("imagelists.eraser.sh created"), "{}", text(&out));
    // `helm template … | kubectl apply -f -`
    let chart = helm.template(&["--include-crds"]);
    let out = run(kubectl(&c, &["apply", "-f", "-"]), Some(&chart));
    assert_eq!(complaints(&out), Vec::<String>::new());
    for object in [
        "clusterrole.rbac.authorization.k8s.io/scour-controller created",
        "configmap/eraser-manager-config created",
        "configmap/eraser-system-exclusion created",
        "deployment.apps/scour-controller created",
    ] {
        assert!(text(&out).contains(object), "{object} missing from:\n{}", text(&out));
    }
    // The plain manifests, server-side, as docs/operations.md says.
    let manifests = scour_testkit::guests::workspace_root().join("deploy/manifests/scour.yaml");
    let out = run(
        kubectl(
            &c,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                manifests.to_str().unwrap(),
            ],
        ),
        None,
    );
    assert_eq!(complaints(&out), Vec::<String>::new());
    let out = run(
        kubectl(
            &c,
            &[
                "wait",
                "--for=condition=Established",
                "crd/imagelists.eraser.sh",
                "crd/imagejobs.eraser.sh",
            ],
        ),
        None,
    );
    assert!(text(&out).contains("condition met"), "{}", text(&out));
}

/// An editor for `kubectl edit` that changes the list to `"*"`.
fn editor(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("edit-imagelist.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nsed -i 's|- docker.io/library/alpine:3.7.3.*|- \"*\"|' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

async fn manual_runs(c: &Cluster) -> Vec<ImageJob> {
    c.jobs()
        .await
        .into_iter()
        .filter(|j| j.spec.trigger == Trigger::Manual)
        .collect()
}

/// Ends the worker pods of a manual run not in `seen` and waits for the
/// ImageList to report it; adds it to `seen`.
async fn finish_manual_run(c: &Cluster, seen: &mut Vec<String>) -> ImageJob {
    let job = c
        .eventually("a new manual run", || async {
            manual_runs(c).await.into_iter().find(|j| !seen.contains(&j.name_any()))
        })
        .await;
    seen.push(job.name_any());
    let name = job.name_any();
    // The chart's rollout cap (10%) runs one node at a time here.
    c.eventually("the ImageList status to report the run", || async {
        c.finish_pods(1).await;
        let status = c.imagelist().await?.status?;
        (status.job.as_deref() == Some(name.as_str()) && status.phase == Some(JobPhase::Completed)).then_some(())
    })
    .await;
    c.job(&name).await
}

#[tokio::test]
async fn the_seed_commands_work_verbatim() {
    let Some(c) = Cluster::bare().await else { return };
    if !require_kubectl() {
        return;
    }
    let Some(helm) = Helm::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Installed with automatic runs off, so only the ImageList starts runs.
    let chart = helm.template(&["--include-crds", "--set", "enabled=false"]);
    run(kubectl(&c, &["apply", "-f", "-"]), Some(&chart));
    for n in ["node-a", "node-b"] {
        c.apply(&node(n, &[])).await;
    }
    let mut controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "seed", &[]);

    // kubectl apply -f - <<EOF … EOF
    let out = run(kubectl(&c, &["apply", "-f", "-"]), Some(SEED_IMAGELIST));
    assert!(
        text(&out).contains("imagelist.eraser.sh/imagelist created"),
        "{}",
        text(&out)
    );
    let mut seen = Vec::new();
    let first = finish_manual_run(&c, &mut seen).await;
    assert_eq!(first.spec.images, ["docker.io/library/alpine:3.7.3"]);
    let out = run(kubectl(&c, &["get", "imagelist", "imagelist"]), None);
    let listing = text(&out);
    assert!(
        listing.contains("SUCCESS") && listing.contains(&first.name_any()),
        "{listing}"
    );

    // kubectl create configmap excluded --from-file=sample.json --namespace=kube-system
    // kubectl label configmap excluded eraser.sh/exclude.list=true -n kube-system
    std::fs::write(
        dir.path().join("sample.json"),
        r#"{"excluded": ["docker.io/library/nginx:*", "myregistry.example.com/base/*"]}"#,
    )
    .unwrap();
    let mut create = kubectl(
        &c,
        &[
            "create",
            "configmap",
            "excluded",
            "--from-file=sample.json",
            "--namespace=kube-system",
        ],
    );
    create.current_dir(dir.path());
    run(create, None);
    run(
        kubectl(
            &c,
            &[
                "label",
                "configmap",
                "excluded",
                "eraser.sh/exclude.list=true",
                "-n",
                "kube-system",
            ],
        ),
        None,
    );

    // kubectl edit ImageList imagelist: a spec change runs again, with the
    // new exclusion list mounted into every worker.
    let mut edit = kubectl(&c, &["edit", "ImageList", "imagelist"]);
    edit.env("KUBE_EDITOR", editor(dir.path()));
    let out = run(edit, None);
    assert!(text(&out).contains("edited"), "{}", text(&out));
    let pods = c
        .eventually("the edit's first worker pod", || async {
            let pods = c.unfinished_pods().await;
            (!pods.is_empty()).then_some(pods)
        })
        .await;
    let mounted: Vec<&str> = pods[0]
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.config_map.as_ref().map(|c| c.name.as_str()))
        .collect();
    assert!(mounted.contains(&"excluded"), "{mounted:?}");
    let second = finish_manual_run(&c, &mut seen).await;
    assert_eq!(second.spec.images, ["*"]);

    // kubectl delete ImageList imagelist, then the same list again.
    run(kubectl(&c, &["delete", "ImageList", "imagelist"]), None);
    run(kubectl(&c, &["apply", "-f", "-"]), Some(SEED_IMAGELIST));
    let third = finish_manual_run(&c, &mut seen).await;
    assert_ne!(third.name_any(), first.name_any(), "a new list is a new run");

    // kubectl get -n kube-system configmap eraser-system-exclusion -o yaml
    let out = run(
        kubectl(
            &c,
            &[
                "get",
                "-n",
                "kube-system",
                "configmap",
                "eraser-system-exclusion",
                "-o",
                "yaml",
            ],
        ),
        None,
    );
    let yaml = text(&out);
    assert!(
        yaml.contains("system.json") && yaml.contains("registry.k8s.io/pause"),
        "{yaml}"
    );

    // kubectl describe configmap -n kube-system eraser-manager-config | grep tag -C 3
    let describe = kubectl(
        &c,
        &["describe", "configmap", "-n", "kube-system", "eraser-manager-config"],
    );
    let described = text(&run(describe, None));
    let mut grep = Command::new("grep");
    grep.args(["tag", "-C", "3"]);
    let shown = text(&run(grep, Some(&described)));
    let version = format!("tag: \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(shown.contains(&version), "{version} not in:\n{shown}");

    assert!(controller.is_running(), "{}", controller.log_text());
    controller.stop();
}

#[tokio::test]
async fn the_worker_service_account_may_do_nothing_and_the_controller_only_what_it_needs() {
    let Some(c) = Cluster::start().await else { return };
    if !require_kubectl() {
        return;
    }
    let can_i = |user: User, verb: &str, resource: &str| {
        let mut cmd = c.plane.kubectl(user);
        cmd.args(["auth", "can-i", verb, "-n", "kube-system"]);
        match resource.split_once('/') {
            Some((resource, sub)) => cmd.args([resource, &format!("--subresource={sub}")]),
            None => cmd.arg(resource),
        };
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for (verb, resource) in [
        ("list", "pods"),
        ("get", "configmaps"),
        ("list", "nodes"),
        ("create", "events.events.k8s.io"),
        ("list", "imagelists.eraser.sh"),
    ] {
        assert!(!can_i(User::Worker, verb, resource), "the worker may {verb} {resource}");
    }
    for (verb, resource, allowed) in [
        ("create", "pods", true),
        ("watch", "configmaps", true),
        ("list", "nodes", true),
        ("create", "events.events.k8s.io", true),
        ("patch", "imagejobs.eraser.sh/status", true),
        ("get", "secrets", false),
        ("delete", "nodes", false),
        ("update", "imagelists.eraser.sh", false),
        ("patch", "configmaps", false),
    ] {
        assert_eq!(
            can_i(User::Controller, verb, resource),
            allowed,
            "controller: {verb} {resource}"
        );
    }
}
