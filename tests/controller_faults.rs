//! Faults on a real control plane, with the real `scour controller`
//! process (system clock, the chart's ServiceAccount): the API server killed
//! and restarted mid-run on the same etcd, the controller killed mid-run,
//! and two controller processes on one Lease. The test plays the kubelet.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use scour::controller::CONFIG_KEY;
use scour::controller::crd::{ImageJob, ImageList, JobPhase, NodePhase};
use scour_testkit::cluster::{Cluster, ControllerProcess, NS, config_map, create, node, summary};

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");
const CONFIG: &str = include_str!("data/controller/eraser-manager-config.yaml");
const SEED_IMAGELIST: &str = include_str!("data/controller/imagelist.yaml");

/// Nodes, the config, the system list; no controller yet.
async fn cluster(nodes: usize, config: &str) -> Option<Cluster> {
    let c = Cluster::start().await?;
    for i in 0..nodes {
        c.apply(&node(&format!("node-{i}"), &[])).await;
    }
    c.apply(&config_map("eraser-manager-config", CONFIG_KEY, config, false))
        .await;
    c.apply(&config_map(
        "eraser-system-exclusion",
        "system.json",
        r#"{"excluded": ["registry.k8s.io/pause:*"]}"#,
        false,
    ))
    .await;
    Some(c)
}

fn automatic_off() -> String {
    CONFIG.replace("enabled: true\n  scanner", "enabled: false\n  scanner")
}

async fn only_run(c: &Cluster) -> ImageJob {
    c.eventually("a run", || async { c.jobs().await.into_iter().next() })
        .await
}

async fn running_pods(c: &Cluster, n: usize) -> Vec<k8s_openapi::api::core::v1::Pod> {
    c.eventually(&format!("{n} worker pods"), || async {
        let pods = c.unfinished_pods().await;
        (pods.len() == n).then_some(pods)
    })
    .await
}

async fn lease_holder(c: &Cluster) -> Option<String> {
    Api::<Lease>::namespaced(c.admin.clone(), NS)
        .get_opt("scour-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test]
async fn the_api_server_killed_and_restarted_mid_run_loses_nothing_and_starts_nothing_twice() {
    let Some(mut c) = cluster(3, CONFIG).await else { return };
    let mut controller = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "a", &[]);
    let name = only_run(&c).await.name_any();
    let pods = running_pods(&c, 3).await;
    c.finish_pod(&pods[0].name_any(), 0, &summary("node-0", 1)).await;
    c.eventually("the first node recorded", || async {
        let status = c.job(&name).await.status?;
        (status.succeeded == 1).then_some(())
    })
    .await;

    c.plane.stop_apiserver();
    // The controller keeps running through the outage, retrying.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(controller.is_running(), "{}", controller.log_text());
    c.plane.start_apiserver().expect("the API server comes back");

    c.finish_pod(&pods[1].name_any(), 0, &summary("node-1", 2)).await;
    c.finish_pod(&pods[2].name_any(), 0, &summary("node-2", 3)).await;
    let status = c
        .eventually("the run to complete", || async {
            let status = c.job(&name).await.status?;
            (status.phase == Some(JobPhase::Completed)).then_some(status)
        })
        .await;
    assert_eq!((status.succeeded, status.removed), (3, 6), "no result is lost");
    assert_eq!(c.jobs().await.len(), 1, "no second run");
    assert!(controller.is_running(), "{}", controller.log_text());
    controller.stop();
}

#[tokio::test]
async fn the_controller_killed_mid_run_and_restarted_carries_on_with_the_same_run() {
    let Some(c) = cluster(3, CONFIG).await else { return };
    let mut first = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "replica", &[]);
    let name = only_run(&c).await.name_any();
    let pods = running_pods(&c, 3).await;
    c.finish_pod(&pods[0].name_any(), 0, &summary("node-0", 1)).await;
    c.eventually("the first node recorded", || async {
        (c.job(&name).await.status?.succeeded == 1).then_some(())
    })
    .await;
    first.kill();
    // Two finish while no controller runs.
    c.finish_pod(&pods[1].name_any(), 0, &summary("node-1", 1)).await;
    c.finish_pod(&pods[2].name_any(), 0, &summary("node-2", 1)).await;

    // The same pod name after a restart: the same identity, so the Lease is
    // taken back at once.
    let mut second = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "replica", &[]);
    let status = c
        .eventually("the run to complete", || async {
            let status = c.job(&name).await.status?;
            (status.phase == Some(JobPhase::Completed)).then_some(status)
        })
        .await;
    assert_eq!((status.succeeded, status.removed), (3, 3));
    assert_eq!(c.jobs().await.len(), 1, "no second run");
    let created = c.pods_created();
    assert_eq!(created, 3, "no second pod for any node");
    c.eventually("the finished pods to be cleaned up", || async {
        c.pods().await.is_empty().then_some(())
    })
    .await;
    second.stop();
}

#[tokio::test]
async fn two_controller_processes_on_one_lease_one_acts_and_the_other_takes_over_when_it_stops() {
    let Some(c) = cluster(2, &automatic_off()).await else {
        return;
    };
    let mut a = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "replica-a", &[]);
    c.eventually("replica-a to lead", || async {
        (lease_holder(&c).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut b = ControllerProcess::start(SCOUR.as_ref(), &c.plane, "replica-b", &[]);
    let lists: Api<ImageList> = Api::all(c.admin.clone());
    create(&lists, &serde_yaml::from_str(SEED_IMAGELIST).unwrap()).await;
    let first = only_run(&c).await.name_any();
    running_pods(&c, 2).await;
    c.finish_pods(1).await;
    c.eventually("the first run to complete", || async {
        (c.job(&first).await.status?.phase == Some(JobPhase::Completed)).then_some(())
    })
    .await;
    // Only the leader wrote anything.
    let writes = |identity: &str| {
        c.plane
            .audit()
            .into_iter()
            .filter(|e| e.user_agent.contains(&format!("({identity})")))
            .filter(|e| e.verb != "get" && e.verb != "list" && e.verb != "watch")
            .filter(|e| e.resource != "leases")
            .count()
    };
    assert!(writes("replica-a") > 0);
    assert_eq!(writes("replica-b"), 0, "the standby wrote something");

    // The leader stops (SIGTERM): it steps down, and the standby leads well
    // before the Lease would have expired.
    let stopped = Instant::now();
    assert!(a.stop().success(), "{}", a.log_text());
    let holder = lease_holder(&c).await;
    assert!(
        holder.as_deref().is_none_or(|h| h == "replica-b"),
        "replica-a left the Lease held: {holder:?}"
    );
    c.eventually("replica-b to lead", || async {
        (lease_holder(&c).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    // The standby reads the Lease every 5 s; released, it is free at once.
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "took {:?}",
        stopped.elapsed()
    );
    let patch = serde_json::json!({"spec": {"images": ["*"]}});
    lists
        .patch("imagelist", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let second = c
        .eventually("a second run", || async {
            c.jobs().await.into_iter().map(|j| j.name_any()).find(|n| *n != first)
        })
        .await;
    running_pods(&c, 2).await;
    c.finish_pods(0).await;
    let status = c
        .eventually("the second run to complete", || async {
            let status = c.job(&second).await.status?;
            (status.phase == Some(JobPhase::Completed)).then_some(status)
        })
        .await;
    assert!(status.nodes.iter().all(|n| n.phase == NodePhase::Succeeded));
    assert!(writes("replica-b") > 0, "the new leader did the second run");
    b.stop();
}
