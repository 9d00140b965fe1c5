//! Tests of the control-plane fixture against a real kube-apiserver v1.20.2
//! and etcd 3.4 (skipped with a loud line unless root with the binaries of
//! `scripts/build-kube`; failing instead when `CI` is set).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use scour_testkit::control_plane::{
    self, AuditEvent, CLIENT_USER_AGENT, ControlPlane, Footprint, User, require_control_plane, require_kubectl,
};
use serde_json::json;

fn start() -> ControlPlane {
    let started = Instant::now();
    let cp = ControlPlane::start().unwrap_or_else(|e| panic!("starting a control plane: {e}"));
    let (etcd, apiserver) = cp.pids();
    eprintln!(
        "control plane in {} ready after {:?} ({:?}; etcd rss {} MiB, apiserver rss {} MiB)",
        cp.dir().display(),
        started.elapsed(),
        cp.startup(),
        rss_mib(etcd),
        rss_mib(apiserver),
    );
    cp
}

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// Drops the fixture and asserts that nothing of it is left.
fn drop_and_assert_clean(cp: ControlPlane) -> Footprint {
    let footprint = cp.footprint();
    let started = Instant::now();
    drop(cp);
    eprintln!("teardown of {} took {:?}", footprint.dir.display(), started.elapsed());
    assert_eq!(
        footprint.leftovers(),
        Vec::<String>::new(),
        "left behind by {footprint:#?}"
    );
    footprint
}

fn api_status(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other}"),
    }
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {"key": value},
    }))
    .unwrap()
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "metadata": {"name": "widgets.test.scour.dev"},
        "spec": {
            "group": "test.scour.dev",
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                        "status": {"type": "object", "properties": {"seen": {"type": "integer"}}},
                    },
                }},
            }],
        },
    }))
    .unwrap()
}

async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let crd = crds.get(name).await.unwrap();
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(Instant::now() < deadline, "CRD {name} not Established after 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn admin_uses_the_apis_the_tests_need() {
    if !require_control_plane() {
        return;
    }
    let cp = start();
    assert!(cp.url().starts_with("https://127.0.0.1:"), "{}", cp.url());
    assert!(cp.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    let client = cp.client(User::Admin);

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, control_plane::KUBE_VERSION);

    // core/v1, with the namespaces the apiserver makes itself.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &config_map("one", "1"))
        .await
        .unwrap();
    assert_eq!(cms.get("one").await.unwrap().data.unwrap()["key"], "1");
    let namespaces: BTreeSet<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for ns in ["default", "kube-system", "kube-public"] {
        assert!(namespaces.contains(ns), "{namespaces:?}");
    }

    // A CRD with a status subresource, an object by server-side apply, its status.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd()).await.unwrap();
    wait_established(&crds, "widgets.test.scour.dev").await;
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("test.scour.dev", "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut widget = DynamicObject::new("w1", &resource);
    widget.data = json!({"spec": {"size": 3}});
    let applied = widgets
        .patch("w1", &PatchParams::apply("scour-test").force(), &Patch::Apply(&widget))
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["size"], 3);
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["scour-test"]);
    widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"seen": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(widgets.get("w1").await.unwrap().data["status"]["seen"], 7);
    // Schema validation is real.
    let mut bad = DynamicObject::new("w2", &resource);
    bad.data = json!({"spec": {"size": "big"}});
    let err = widgets.create(&PostParams::default(), &bad).await.unwrap_err();
    assert_eq!(api_status(&err), 422, "{err}");

    // coordination.k8s.io/v1, events.k8s.io/v1, apps/v1, scheduling.k8s.io/v1.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "scour-controller"},
        "spec": {"holderIdentity": "test", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    for (group, resource) in [
        ("events.k8s.io/v1", "events"),
        ("apps/v1", "deployments"),
        ("scheduling.k8s.io/v1", "priorityclasses"),
        ("rbac.authorization.k8s.io/v1", "clusterroles"),
        ("authorization.k8s.io/v1", "selfsubjectaccessreviews"),
    ] {
        let list = client.list_api_group_resources(group).await.unwrap();
        assert!(
            list.resources.iter().any(|r| r.name == resource),
            "{group} has no {resource}: {list:?}"
        );
    }
    let apps = client.list_api_group_resources("apps/v1").await.unwrap();
    assert!(apps.resources.iter().any(|r| r.name == "deployments"));
    // The system priority classes are made at start.
    let classes = client
        .request_text(
            http::Request::get("/apis/scheduling.k8s.io/v1/priorityclasses")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(classes.contains("system-node-critical"), "{classes}");
    drop_and_assert_clean(cp);
}

fn node_lister() -> (ClusterRole, ClusterRoleBinding) {
    let role = serde_json::from_value(json!({
        "metadata": {"name": "scour-test-node-lister"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}],
    }))
    .unwrap();
    let binding = serde_json::from_value(json!({
        "metadata": {"name": "scour-test-node-lister"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "scour-test-node-lister"},
        "subjects": [{"kind": "ServiceAccount", "namespace": "kube-system", "name": "scour-controller"}],
    }))
    .unwrap();
    (role, binding)
}

#[tokio::test]
async fn the_controller_is_forbidden_until_rbac_binds_its_service_account() {
    if !require_control_plane() {
        return;
    }
    let cp = start();
    let nodes = |user| Api::<Node>::all(cp.client(user));
    let err = nodes(User::Controller).list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_status(&err), 403, "{err}");
    assert!(
        err.to_string()
            .contains("system:serviceaccount:kube-system:scour-controller"),
        "{err}"
    );
    let err = nodes(User::Custom("nobody"))
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_status(&err), 403, "{err}");
    assert!(err.to_string().contains("\"nobody\""), "{err}");

    let admin = cp.client(User::Admin);
    let (role, binding) = node_lister();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // The authorizer reads RBAC through an informer: a moment's delay.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match nodes(User::Controller).list(&ListParams::default()).await {
            Ok(list) => {
                assert!(list.items.is_empty());
                break;
            }
            Err(e) => {
                assert_eq!(api_status(&e), 403, "{e}");
                assert!(Instant::now() < deadline, "still forbidden 10 s after the binding: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Exactly the verb granted; and the binding is not the worker's.
    let err = nodes(User::Controller).get("n1").await.unwrap_err();
    assert_eq!(api_status(&err), 403, "{err}");
    let err = nodes(User::Worker).list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_status(&err), 403, "{err}");
    drop_and_assert_clean(cp);
}

#[test]
fn kubectl_works_with_the_kubeconfigs() {
    if !require_control_plane() || !require_kubectl() {
        return;
    }
    let cp = start();
    let run = |user: User, args: &[&str]| {
        let out = cp.kubectl(user).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(User::Admin, &["get", "ns", "-o", "name"]);
    assert!(ok, "{stderr}");
    assert!(stdout.lines().any(|l| l == "namespace/kube-system"), "{stdout}");

    // SelfSubjectAccessReview.
    let (_, stdout, stderr) = run(User::Controller, &["auth", "can-i", "list", "nodes"]);
    assert_eq!(stdout.trim(), "no", "{stderr}");
    let (ok, stdout, stderr) = run(User::Admin, &["auth", "can-i", "list", "nodes"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "yes");
    let (ok, _, stderr) = run(User::Worker, &["get", "pods", "-n", "kube-system"]);
    assert!(!ok);
    assert!(stderr.contains("Forbidden") || stderr.contains("forbidden"), "{stderr}");
    let (_, stdout, stderr) = run(User::Custom("carol"), &["auth", "can-i", "get", "pods"]);
    assert_eq!(stdout.trim(), "no", "{stderr}");

    let (ok, _, stderr) = run(
        User::Admin,
        &["create", "configmap", "from-kubectl", "--from-literal=a=b"],
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = run(
        User::Admin,
        &["get", "configmap", "from-kubectl", "-o", "jsonpath={.data.a}"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "b");

    // The kubeconfig works for other clients too (a `scour controller` process).
    let kubeconfig = std::fs::read_to_string(cp.kubeconfig(User::Controller)).unwrap();
    assert!(kubeconfig.contains(&cp.url()), "{kubeconfig}");
    assert!(kubeconfig.contains(&cp.token(User::Controller)), "{kubeconfig}");
    drop_and_assert_clean(cp);
}

#[tokio::test]
async fn restarting_the_apiserver_keeps_the_data() {
    if !require_control_plane() {
        return;
    }
    let mut cp = start();
    let url = cp.url();
    let (etcd_before, apiserver_before) = cp.pids();
    let cms: Api<ConfigMap> = Api::namespaced(cp.client(User::Admin), "default");
    cms.create(&PostParams::default(), &config_map("kept", "v"))
        .await
        .unwrap();

    let stopped = Instant::now();
    cp.stop_apiserver();
    eprintln!("graceful stop took {:?}", stopped.elapsed());
    assert!(!cp.apiserver_running());
    let probe = cp.client(User::Admin);
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        Api::<ConfigMap>::namespaced(probe, "default").get("kept"),
    )
    .await
    .expect("a request to a stopped apiserver hangs")
    .unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "{err}");

    cp.start_apiserver()
        .unwrap_or_else(|e| panic!("restarting the apiserver: {e}"));
    eprintln!("restart ready after {:?}", cp.startup().ready);
    assert!(cp.apiserver_running());
    assert_eq!(cp.url(), url);
    let (etcd_after, apiserver_after) = cp.pids();
    assert_eq!(etcd_after, etcd_before);
    assert_ne!(apiserver_after, apiserver_before);
    let cms: Api<ConfigMap> = Api::namespaced(cp.client(User::Admin), "default");
    assert_eq!(cms.get("kept").await.unwrap().data.unwrap()["key"], "v");
    drop_and_assert_clean(cp);
}

#[tokio::test]
async fn the_audit_log_shows_who_asked_what() {
    if !require_control_plane() {
        return;
    }
    let cp = start();
    let cms: Api<ConfigMap> = Api::namespaced(cp.client(User::Admin), "kube-system");
    cms.create(&PostParams::default(), &config_map("audited", "1"))
        .await
        .unwrap();
    let err = Api::<ConfigMap>::namespaced(cp.client(User::Controller), "kube-system")
        .get("audited")
        .await
        .unwrap_err();
    assert_eq!(api_status(&err), 403);

    let is_create = |e: &AuditEvent| e.verb == "create" && e.resource == "configmaps" && e.name == "audited";
    let is_denied_get = |e: &AuditEvent| e.verb == "get" && e.resource == "configmaps" && e.code == 403;
    let events = cp.wait_for_audit(Duration::from_secs(5), |events| {
        events.iter().any(is_create) && events.iter().any(is_denied_get)
    });
    let create = events
        .iter()
        .find(|e| is_create(e))
        .unwrap_or_else(|| panic!("no create in {events:#?}"));
    assert_eq!(create.user, control_plane::ADMIN_USER);
    assert!(create.groups.iter().any(|g| g == "system:masters"), "{create:?}");
    assert_eq!(create.user_agent, CLIENT_USER_AGENT);
    assert_eq!(create.namespace, "kube-system");
    assert_eq!(create.code, 201);
    assert!(
        create
            .request_uri
            .starts_with("/api/v1/namespaces/kube-system/configmaps"),
        "{create:?}"
    );
    let denied = events
        .iter()
        .find(|e| is_denied_get(e))
        .unwrap_or_else(|| panic!("no denied get in {events:#?}"));
    assert_eq!(denied.user, User::Controller.name());
    assert_eq!(denied.name, "audited");
    assert!(denied.time >= create.time);
    // The apiserver's own requests are there too, under its loopback identity.
    assert!(events.iter().any(|e| e.user == "system:apiserver"), "{events:#?}");
    drop_and_assert_clean(cp);
}

#[test]
fn drop_leaves_no_process_port_or_dir() {
    if !require_control_plane() {
        return;
    }
    let cp = start();
    let (etcd, apiserver) = cp.pids();
    let live = cp.footprint().leftovers();
    for expected in [
        format!("process {etcd}:"),
        format!("process {apiserver}:"),
        format!("port {} listening", cp.port()),
        format!("directory {}", cp.dir().display()),
    ] {
        assert!(
            live.iter().any(|l| l.starts_with(&expected)),
            "{expected} not detected in {live:#?}"
        );
    }
    let footprint = drop_and_assert_clean(cp);
    assert!(!footprint.dir.exists());
    for pid in [etcd, apiserver] {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "{pid} remains");
    }
}

#[tokio::test]
async fn instances_side_by_side_do_not_share_objects() {
    if !require_control_plane() {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(start);
        let b = s.spawn(start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.url(), b.url());
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.token(User::Admin), b.token(User::Admin));
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "only-in-a"}})).unwrap();
    Api::<Namespace>::all(a.client(User::Admin))
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let err = Api::<Namespace>::all(b.client(User::Admin))
        .get("only-in-a")
        .await
        .unwrap_err();
    assert_eq!(api_status(&err), 404, "{err}");
    // A's token means nothing to B.
    let stranger = kube::Client::try_from({
        let mut config = b.kube_config(User::Admin);
        config.auth_info.token = Some(a.token(User::Admin).into());
        config
    })
    .unwrap();
    let err = Api::<Namespace>::all(stranger)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_status(&err), 401, "{err}");
    drop_and_assert_clean(a);
    drop_and_assert_clean(b);
}

/// A process whose command line names `named`, doing nothing: `tail -F`
/// follows `named`, which need not exist (`file` is made as a convenience).
fn idler(named: &std::path::Path, file: &std::path::Path) -> Child {
    std::fs::write(file, "").unwrap();
    Command::new("tail")
        .arg("-F")
        .arg(named)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn alive(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

#[test]
fn orphans_of_dead_test_processes_are_reaped_and_nothing_else() {
    if !require_control_plane() {
        return;
    }
    // The once-per-process reap has run before the stage is set.
    control_plane::reap_orphans();
    let base = control_plane::base_dir();
    std::fs::create_dir_all(&base).unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead_owner = gone.id();

    // An orphan: its owner is gone, its "etcd" names its dir. Set up under
    // a name no reaper reads (any test process may reap it once it is in
    // place), then moved there.
    let orphan = base.join(format!("{dead_owner}-reaptest"));
    let staging = base.join(format!("staging.{}", std::process::id()));
    std::fs::create_dir_all(&staging).unwrap();
    let mut orphan_process = idler(&orphan.join("marker"), &staging.join("marker"));
    // A recorded PID that no longer names the dir (a reused PID): spared.
    let mut stranger = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::write(staging.join("owner"), format!("{dead_owner} 1\n")).unwrap();
    std::fs::write(
        staging.join("pids"),
        format!("etcd {}\napiserver {}\n", orphan_process.id(), stranger.id()),
    )
    .unwrap();
    std::fs::rename(&staging, &orphan).unwrap();

    // Not an orphan: its owner runs (same PID and start time).
    let mut owner = Command::new("sleep").arg("600").spawn().unwrap();
    let owned = base.join(format!("{}-reaptest", owner.id()));
    std::fs::create_dir_all(&owned).unwrap();
    let start_time = std::fs::read_to_string(format!("/proc/{}/stat", owner.id())).unwrap();
    let start_time = start_time[start_time.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    std::fs::write(owned.join("owner"), format!("{} {start_time}\n", owner.id())).unwrap();
    let mut owned_process = idler(&owned.join("marker"), &owned.join("marker"));
    std::fs::write(
        owned.join("pids"),
        format!("etcd {}\napiserver 0\n", owned_process.id()),
    )
    .unwrap();

    control_plane::reap_orphans_now();

    let reaped = !alive(&mut orphan_process);
    let stranger_alive = alive(&mut stranger);
    let owned_alive = alive(&mut owned_process);
    let orphan_dir_left = orphan.exists();
    let owned_dir_left = owned.exists();
    for child in [&mut orphan_process, &mut stranger, &mut owner, &mut owned_process] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&orphan);
    let _ = std::fs::remove_dir_all(&owned);
    assert!(reaped, "the orphan's process survived");
    assert!(!orphan_dir_left, "the orphan's dir survived");
    assert!(stranger_alive, "a recorded PID that does not name the dir was killed");
    assert!(owned_alive, "a live owner's instance was reaped");
    assert!(owned_dir_left, "a live owner's dir was removed");
}

#[test]
fn a_failed_start_reports_the_apiserver_log_and_cleans_up() {
    if !require_control_plane() {
        return;
    }
    let started = Instant::now();
    let err = ControlPlane::start_with_args(&["--no-such-flag=1"]).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("kube-apiserver exited during start-up"), "{message}");
    assert!(message.contains("tail of apiserver.log"), "{message}");
    assert!(message.contains("unknown flag: --no-such-flag"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    // Nothing of it is left.
    let base = control_plane::base_dir().to_string_lossy().into_owned();
    let failed_dir = message
        .split_whitespace()
        .find(|w| w.starts_with(&base))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no instance dir in {message}"));
    assert!(!failed_dir.exists(), "{} left behind", failed_dir.display());
}

/// Run by [`a_killed_test_process_leaves_an_orphan_that_is_reaped`] in a
/// child process: starts an instance, writes its footprint, aborts.
#[test]
#[ignore = "a helper: run by a_killed_test_process_leaves_an_orphan_that_is_reaped"]
fn start_then_abort() {
    let Some(out) = std::env::var_os("SCOUR_TEST_ABORT_OUT") else {
        return;
    };
    let cp = ControlPlane::start().unwrap_or_else(|e| panic!("starting a control plane: {e}"));
    let footprint = cp.footprint();
    let pids: Vec<String> = footprint.pids.iter().map(u32::to_string).collect();
    let ports: Vec<String> = footprint.ports.iter().map(u16::to_string).collect();
    std::fs::write(
        &out,
        format!("{}\n{}\n{}\n", footprint.dir.display(), pids.join(" "), ports.join(" ")),
    )
    .unwrap();
    std::process::abort();
}

#[test]
fn a_killed_test_process_leaves_an_orphan_that_is_reaped() {
    if !require_control_plane() {
        return;
    }
    // The once-per-process reap has run before the orphan is made.
    control_plane::reap_orphans();
    let out = std::env::temp_dir().join(format!("scour-cp-abort-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "start_then_abort", "--nocapture"])
        .env("SCOUR_TEST_ABORT_OUT", &out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the helper did not abort");
    let written = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("the helper wrote no footprint: {e}"));
    let _ = std::fs::remove_file(&out);
    let mut lines = written.lines();
    let footprint = Footprint {
        dir: lines.next().unwrap().into(),
        pids: lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect(),
        ports: lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect(),
    };
    let orphaned = footprint.leftovers();
    assert!(
        orphaned.iter().filter(|l| l.starts_with("process ")).count() == 2,
        "the aborted process's etcd and apiserver should outlive it: {orphaned:#?}"
    );

    control_plane::reap_orphans_now();
    assert_eq!(
        footprint.leftovers(),
        Vec::<String>::new(),
        "after the reap: {footprint:#?}"
    );
}
