//! The Helm chart (deploy/helm/scour) and the plain manifests
//! (deploy/manifests), checked without a cluster: every rendered object must
//! be a Kubernetes object k8s-openapi knows and must survive a round trip
//! through its type unchanged (a misspelt or misplaced field does not), the
//! config must pass scour's own parser, the CRDs must be the ones the Rust
//! types generate, and the RBAC must be exactly what the controller needs.
//!
//! Helm comes from `just setup` (`.tools/bin/helm`), `$SCOUR_HELM` or PATH;
//! without it the tests that render print SKIPPED locally and fail in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use scour::config::Loaded;
use scour::controller::CONFIG_KEY;
use scour_policy_sdk::{ImageNames, PatternSet};
use scour_testkit::guests::workspace_root;
use scour_testkit::helm::{CHART, Helm};

const CRD_FILE: &str = "deploy/helm/scour/crds/crds.yaml";
const MANIFESTS: &str = "deploy/manifests";
const MANIFEST: &str = "deploy/manifests/scour.yaml";
const NAMESPACE: &str = "kube-system";
const CONFIG_MAP: &str = "eraser-manager-config";
const SYSTEM_EXCLUSIONS: &str = "eraser-system-exclusion";
const CONTROLLER: &str = "scour-controller";
const WORKER_SA: &str = "scour-worker";
const DEFAULT_IMAGE: &str = "ghcr.io/scour-dev/scour:0.1.0";
/// The command `just manifests` runs; the first line of scour.yaml names it.
const RENDER_ARGS: [&str; 6] = ["template", "scour", CHART, "--namespace", NAMESPACE, "--include-crds"];
const REGENERATE: &str = "run `just manifests` and commit the result";

// ------------------------------------------------------------- objects

/// Every kind the chart may render. Anything else fails the test. (Boxed:
/// the types differ a lot in size.)
#[derive(Debug, Clone)]
enum Object {
    Deployment(Box<Deployment>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
    ConfigMap(Box<ConfigMap>),
    Service(Box<Service>),
    CustomResourceDefinition(Box<CustomResourceDefinition>),
}

/// Deserialises `doc` as `T`, serialises it back, and fails if anything
/// changed: a field k8s-openapi does not know (a typo, a field at the wrong
/// level) is dropped on the way in, so it shows up as a difference.
fn strict<T: DeserializeOwned + serde::Serialize>(doc: &Value, origin: &str) -> T {
    let typed: T = serde_path_to_error::deserialize(doc.clone())
        .unwrap_or_else(|e| panic!("{origin}: does not deserialize at {}: {}", e.path(), e.inner()));
    let before = serde_json::to_value(doc).expect("YAML converts to JSON");
    let after = serde_json::to_value(&typed).expect("k8s-openapi objects serialize");
    let mut diffs = Vec::new();
    diff(&before, &after, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{origin}: changed by a round trip through its Kubernetes type (unknown or misplaced fields?):\n  {}",
        diffs.join("\n  ")
    );
    typed
}

/// Paths where two JSON values differ, `a` being the input.
fn diff(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value as J;
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            for key in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                let p = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => diff(u, v, &p, out),
                    (Some(u), None) => out.push(format!("{p}: {u} was dropped")),
                    (None, Some(v)) => out.push(format!("{p}: {v} appeared")),
                    (None, None) => {}
                }
            }
        }
        (J::Array(x), J::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff(u, v, &format!("{path}[{i}]"), out);
            }
        }
        (J::Number(x), J::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} became {b}")),
    }
}

fn kind_of(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or("<no kind>")
}

fn name_of(doc: &Value) -> &str {
    doc.get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<no name>")
}

/// Every document of a YAML stream as a typed object; empty documents (a
/// leading `---`, comments only) are skipped.
fn objects(text: &str, origin: &str) -> Vec<Object> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = Value::deserialize(de).unwrap_or_else(|e| panic!("{origin}: document {i} is not YAML: {e}"));
        if doc.is_null() {
            continue;
        }
        let at = format!("{origin}: {} {}", kind_of(&doc), name_of(&doc));
        out.push(match kind_of(&doc) {
            "Deployment" => Object::Deployment(Box::new(strict(&doc, &at))),
            "ServiceAccount" => Object::ServiceAccount(Box::new(strict(&doc, &at))),
            "ClusterRole" => Object::ClusterRole(Box::new(strict(&doc, &at))),
            "ClusterRoleBinding" => Object::ClusterRoleBinding(Box::new(strict(&doc, &at))),
            "Role" => Object::Role(Box::new(strict(&doc, &at))),
            "RoleBinding" => Object::RoleBinding(Box::new(strict(&doc, &at))),
            "ConfigMap" => Object::ConfigMap(Box::new(strict(&doc, &at))),
            "Service" => Object::Service(Box::new(strict(&doc, &at))),
            "CustomResourceDefinition" => Object::CustomResourceDefinition(Box::new(strict(&doc, &at))),
            other => panic!("{at}: kind {other:?} is not one the chart should render"),
        });
    }
    out
}

/// A rendered chart, with lookups by kind and name.
struct Rendered(Vec<Object>);

macro_rules! all_of {
    ($fn:ident, $variant:ident, $ty:ty) => {
        fn $fn(&self) -> Vec<&$ty> {
            self.0
                .iter()
                .filter_map(|o| match o {
                    Object::$variant(x) => Some(std::borrow::Borrow::<$ty>::borrow(x)),
                    _ => None,
                })
                .collect()
        }
    };
}

impl Rendered {
    fn parse(text: &str, origin: &str) -> Self {
        Rendered(objects(text, origin))
    }

    all_of!(deployments, Deployment, Deployment);
    all_of!(service_accounts, ServiceAccount, ServiceAccount);
    all_of!(cluster_roles, ClusterRole, ClusterRole);
    all_of!(cluster_role_bindings, ClusterRoleBinding, ClusterRoleBinding);
    all_of!(roles, Role, Role);
    all_of!(role_bindings, RoleBinding, RoleBinding);
    all_of!(config_maps, ConfigMap, ConfigMap);
    all_of!(services, Service, Service);
    all_of!(crds, CustomResourceDefinition, CustomResourceDefinition);

    fn config_map(&self, name: &str) -> &ConfigMap {
        self.config_maps()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))
    }

    /// `controller_manager_config.yaml` of `eraser-manager-config`.
    fn config_text(&self) -> String {
        let cm = self.config_map(CONFIG_MAP);
        let data = cm.data.as_ref().expect("the config ConfigMap has data");
        data.get(CONFIG_KEY)
            .unwrap_or_else(|| panic!("{CONFIG_MAP} has no key {CONFIG_KEY}"))
            .clone()
    }

    fn config(&self) -> Loaded {
        let text = self.config_text();
        Loaded::parse(&text).unwrap_or_else(|e| panic!("{CONFIG_MAP} is refused by scour's parser: {e}\n{text}"))
    }

    fn controller(&self) -> &Deployment {
        let all = self.deployments();
        assert_eq!(all.len(), 1, "exactly one Deployment");
        assert_eq!(all[0].metadata.name.as_deref(), Some(CONTROLLER));
        all[0]
    }

    fn controller_container(&self) -> &Container {
        let spec = self.controller().spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().expect("a pod spec");
        assert_eq!(pod.containers.len(), 1, "one container");
        &pod.containers[0]
    }

    /// Kind and name of every object, with its namespace.
    fn inventory(&self) -> BTreeSet<(String, String, Option<String>)> {
        self.0
            .iter()
            .map(|o| {
                let (kind, meta) = match o {
                    Object::Deployment(x) => ("Deployment", &x.metadata),
                    Object::ServiceAccount(x) => ("ServiceAccount", &x.metadata),
                    Object::ClusterRole(x) => ("ClusterRole", &x.metadata),
                    Object::ClusterRoleBinding(x) => ("ClusterRoleBinding", &x.metadata),
                    Object::Role(x) => ("Role", &x.metadata),
                    Object::RoleBinding(x) => ("RoleBinding", &x.metadata),
                    Object::ConfigMap(x) => ("ConfigMap", &x.metadata),
                    Object::Service(x) => ("Service", &x.metadata),
                    Object::CustomResourceDefinition(x) => ("CustomResourceDefinition", &x.metadata),
                };
                (
                    kind.to_owned(),
                    meta.name.clone().unwrap_or_default(),
                    meta.namespace.clone(),
                )
            })
            .collect()
    }
}

/// The labels of a Deployment's pod template.
fn pod_labels(d: &Deployment) -> &std::collections::BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .expect("the pod template has labels")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    c.env.as_ref()?.iter().find(|e| e.name == name)
}

// --------------------------------------------------------------- tests

#[test]
fn the_chart_ships_exactly_the_crds_scour_generates() {
    let dir = workspace_root().join(CHART).join("crds");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(
        files,
        vec![workspace_root().join(CRD_FILE)],
        "the chart's crds/ holds one file"
    );
    let shipped = read(CRD_FILE);
    let generated = scour::controller::crd::crds_yaml();
    assert!(
        shipped == generated,
        "{CRD_FILE} differs from `scour crd` (the Rust types changed); {REGENERATE}"
    );
    let crds = Rendered::parse(&shipped, CRD_FILE);
    let names: BTreeSet<_> = crds.crds().iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "imagejobs.eraser.sh".to_owned(),
            "imagelists.eraser.sh".to_owned(),
            "nodereports.scour.dev".to_owned()
        ])
    );
    for crd in crds.crds() {
        assert_eq!(crd.spec.scope, "Cluster");
        let versions: Vec<_> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.storage, v.deprecated.unwrap_or(false)))
            .collect();
        if crd.spec.group == "eraser.sh" {
            assert_eq!(versions, vec![("v1", true, false), ("v1alpha1", false, true)]);
        } else {
            assert_eq!(versions, vec![("v1", true, false)], "scour's own CRD has one version");
        }
    }
}

#[test]
fn helm_lint_passes() {
    let Some(helm) = Helm::find() else { return };
    let o = helm.run(&["lint", "--strict", CHART]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "helm lint --strict {CHART}:\n{out}");
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn the_default_render_is_known_kubernetes_objects_that_survive_a_round_trip() {
    let Some(helm) = Helm::find() else { return };
    let r = Rendered::parse(&helm.template(&["--include-crds"]), "helm template (defaults)");
    let ns = Some(NAMESPACE.to_owned());
    let expected: BTreeSet<(String, String, Option<String>)> = [
        ("CustomResourceDefinition", "imagejobs.eraser.sh", None),
        ("CustomResourceDefinition", "imagelists.eraser.sh", None),
        ("CustomResourceDefinition", "nodereports.scour.dev", None),
        ("ClusterRole", CONTROLLER, None),
        ("ClusterRoleBinding", CONTROLLER, None),
        ("Role", CONTROLLER, ns.clone()),
        ("RoleBinding", CONTROLLER, ns.clone()),
        ("ServiceAccount", CONTROLLER, ns.clone()),
        ("ServiceAccount", WORKER_SA, ns.clone()),
        ("ConfigMap", CONFIG_MAP, ns.clone()),
        ("ConfigMap", SYSTEM_EXCLUSIONS, ns.clone()),
        ("Deployment", CONTROLLER, ns.clone()),
        ("Service", "scour-controller-metrics", ns.clone()),
    ]
    .into_iter()
    .map(|(k, n, ns)| (k.to_owned(), n.to_owned(), ns))
    .collect();
    assert_eq!(r.inventory(), expected);

    // The standard labels, on everything the templates render.
    for o in &r.0 {
        let meta = match o {
            Object::CustomResourceDefinition(_) => continue,
            Object::Deployment(x) => &x.metadata,
            Object::ServiceAccount(x) => &x.metadata,
            Object::ClusterRole(x) => &x.metadata,
            Object::ClusterRoleBinding(x) => &x.metadata,
            Object::Role(x) => &x.metadata,
            Object::RoleBinding(x) => &x.metadata,
            Object::ConfigMap(x) => &x.metadata,
            Object::Service(x) => &x.metadata,
        };
        let labels = meta.labels.clone().unwrap_or_default();
        for (key, value) in [
            ("app.kubernetes.io/name", "scour"),
            ("app.kubernetes.io/instance", "scour"),
            ("app.kubernetes.io/version", "0.1.0"),
            ("app.kubernetes.io/managed-by", "Helm"),
        ] {
            assert_eq!(
                labels.get(key).map(String::as_str),
                Some(value),
                "{key} on {:?}",
                meta.name
            );
        }
    }

    // The metrics Service reaches the controller's pods on 8081.
    let svc = &r.services()[0];
    let spec = svc.spec.as_ref().unwrap();
    let pod_labels = pod_labels(r.controller()).clone();
    for (k, v) in spec.selector.as_ref().unwrap() {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the Service selects the controller pods by {k}"
        );
    }
    assert_eq!(spec.ports.as_ref().unwrap()[0].port, 8081);
}

#[test]
fn every_optional_value_still_renders_objects_that_survive_a_round_trip() {
    let Some(helm) = Helm::find() else { return };
    let digest = format!("sha256:{}", "a".repeat(64));
    let text = helm.template(&[
        "--set",
        "replicas=2,priorityClassName=system-cluster-critical,imagePullSecrets={regcred}",
        "--set",
        "worker.priorityClassName=high,worker.podLabels.team=ops,podAnnotations.note=hi",
        "--set",
        "tolerations[0].operator=Exists,affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "--set",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "--set",
        &format!("policy.configMap=my-policy,policy.key=p.wasm,policy.sha256={digest},policy.settings.maxAgeDays=30"),
        "--set",
        "exclusions.user.team-a={docker.io/library/nginx:*,myregistry.example.com/base/*},exclusions.system={quay.io/mine/agent:*}",
        "--set",
        "sandboxImages={registry.k8s.io/pause:*},successRatio=0.9,nodeFilter.type=include,scanner.enabled=false",
        "--set",
        "metrics.service=false,metrics.scrapeAnnotations=false",
    ]);
    let r = Rendered::parse(&text, "helm template (every option)");
    assert!(r.services().is_empty(), "metrics.service=false drops the Service");
    let loaded = r.config();
    let c = &loaded.config;
    assert_eq!(c.scour.policy.config_map.as_deref(), Some("my-policy"));
    assert_eq!(c.scour.policy.key.as_deref(), Some("p.wasm"));
    assert_eq!(c.scour.policy.sha256.as_deref(), Some(digest.as_str()));
    let settings: serde_json::Value = serde_json::from_str(c.scour.policy.settings.as_deref().unwrap()).unwrap();
    assert_eq!(settings, serde_json::json!({"maxAgeDays": 30}));
    assert_eq!(c.scour.sandbox_images, vec!["registry.k8s.io/pause:*"]);
    assert_eq!(c.manager.image_job.success_ratio, Some(0.9));
    assert_eq!(c.manager.node_filter.kind.as_deref(), Some("include"));
    assert_eq!(c.manager.pull_secrets, vec!["regcred"]);
    assert_eq!(c.manager.priority_class_name.as_deref(), Some("high"));
    assert_eq!(
        c.manager.additional_pod_labels.get("team").map(String::as_str),
        Some("ops")
    );
    assert_eq!(c.components.scanner.enabled, Some(false));
    assert!(loaded.default_policy_settings().contains("\"scanDisabled\":true"));

    let user = r.config_map("team-a");
    assert_eq!(
        user.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("eraser.sh/exclude.list")
            .map(String::as_str),
        Some("true")
    );
    let data = user.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["team-a.json"]);
    assert_eq!(
        excluded(&data["team-a.json"], "team-a.json"),
        vec!["docker.io/library/nginx:*", "myregistry.example.com/base/*"]
    );
    let system = system_exclusions(&r);
    assert!(system.contains(&"quay.io/mine/agent:*".to_owned()));

    let pod = r.controller().spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(r.controller().spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-cluster-critical"));
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
    assert!(pod.affinity.is_some() && pod.tolerations.is_some());
}

#[test]
fn the_shared_trivy_server_is_off_by_default_and_wires_the_workers_when_on() {
    let Some(helm) = Helm::find() else { return };
    let off = Rendered::parse(&helm.template(&[]), "helm template (defaults)");
    assert_eq!(off.deployments().len(), 1, "only the controller by default");
    assert_eq!(off.config().trivy_server().unwrap(), None);

    let on = Rendered::parse(
        &helm.template(&[
            "--set",
            "trivyServer.enabled=true,trivyServer.port=5000,scanner.config.dbRepo=mirror.example.com/trivy-db",
        ]),
        "helm template (trivyServer.enabled)",
    );
    let url = on.config().trivy_server().unwrap().expect("scour.trivyServer is set");
    assert_eq!(url.as_str(), "http://scour-trivy-server.kube-system.svc:5000");
    let server = on
        .deployments()
        .into_iter()
        .find(|d| d.metadata.name.as_deref() == Some("scour-trivy-server"))
        .expect("a scour-trivy-server Deployment");
    let spec = server.spec.as_ref().unwrap();
    let server_labels = pod_labels(server);
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    let args = container.args.as_ref().unwrap();
    assert_eq!(
        container.command.as_ref().unwrap(),
        &vec!["/usr/local/bin/trivy".to_owned()]
    );
    assert!(args.contains(&"--listen=0.0.0.0:5000".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--db-repository=mirror.example.com/trivy-db".to_owned()),
        "the server downloads the DB from the config's dbRepo: {args:?}"
    );
    let service = on
        .services()
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some("scour-trivy-server"))
        .expect("a scour-trivy-server Service");
    let selector = service.spec.as_ref().unwrap().selector.as_ref().unwrap();
    assert!(
        selector.iter().all(|(k, v)| server_labels.get(k) == Some(v)),
        "the Service selects the server's pods"
    );
    let controller = on
        .deployments()
        .into_iter()
        .find(|d| d.metadata.name.as_deref() == Some(CONTROLLER))
        .unwrap();
    let controller_labels = pod_labels(controller);
    assert!(
        !selector.iter().all(|(k, v)| controller_labels.get(k) == Some(v)),
        "the Service must not select the controller"
    );
    let controller_selector = controller
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .as_ref()
        .unwrap();
    assert!(
        !controller_selector.iter().all(|(k, v)| server_labels.get(k) == Some(v)),
        "the controller's Deployment must not select the server's pods"
    );
}

#[test]
fn every_plain_manifest_is_a_known_kubernetes_object() {
    let dir = workspace_root().join(MANIFESTS);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(
        files.contains(&workspace_root().join(MANIFEST)),
        "{MANIFEST} is missing; {REGENERATE}"
    );
    for file in &files {
        let rel = file.strip_prefix(workspace_root()).unwrap().display().to_string();
        let r = Rendered::parse(&std::fs::read_to_string(file).unwrap(), &rel);
        assert!(!r.0.is_empty(), "{rel} holds no objects");
    }
    let r = Rendered::parse(&read(MANIFEST), MANIFEST);
    assert_eq!(r.crds().len(), 3, "{MANIFEST} carries the CRDs");
    r.config();
    assert_eq!(
        env_value(r.controller_container(), "SCOUR_WORKER_IMAGE").and_then(|e| e.value.as_deref()),
        Some(DEFAULT_IMAGE)
    );
}

#[test]
fn the_plain_manifests_are_a_fresh_render_of_the_chart() {
    let Some(helm) = Helm::find() else { return };
    let o = helm.run(&RENDER_ARGS);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fresh = String::from_utf8(o.stdout).unwrap();
    let committed = read(MANIFEST);
    let (header, body) = committed.split_once('\n').unwrap_or(("", ""));
    assert!(
        header.starts_with("# Generated by `just manifests`") && header.contains(&RENDER_ARGS[1..].join(" ")),
        "{MANIFEST} must start with its one-line generated header; {REGENERATE}"
    );
    if body != fresh {
        let line = body
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| body.lines().count().min(fresh.lines().count()));
        panic!(
            "{MANIFEST} is out of date with {CHART} (first difference at line {}); {REGENERATE}",
            line + 2
        );
    }
}

#[test]
fn the_rendered_config_is_an_eraser_config_scour_accepts() {
    let Some(helm) = Helm::find() else { return };
    let r = Rendered::parse(&helm.template(&[]), "helm template (defaults)");
    let text = r.config_text();
    assert!(
        text.starts_with("apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\n"),
        "{text}"
    );
    let loaded = r.config();
    assert!(
        loaded.warnings.is_empty(),
        "the chart sets no ignored keys: {:?}",
        loaded.warnings
    );
    let c = &loaded.config;
    let m = &c.manager;
    assert_eq!(m.runtime.name.as_deref(), Some("containerd"));
    assert_eq!(loaded.runtime_address(), Some("unix:///run/containerd/containerd.sock"));
    assert_eq!(
        c.scour.image_fs_path.as_deref(),
        Some("/var/lib/containerd"),
        "worker pods mount containerd's root for the image filesystem's capacity"
    );
    assert_eq!(m.scheduling.repeat_interval.as_deref(), Some("168h"));
    assert_eq!(m.scheduling.begin_immediately, Some(true));
    assert_eq!(m.image_job.success_ratio, Some(1.0));
    assert_eq!(m.image_job.cleanup.delay_on_success.as_deref(), Some("0s"));
    assert_eq!(m.image_job.cleanup.delay_on_failure.as_deref(), Some("10m"));
    assert_eq!(m.node_filter.kind.as_deref(), Some("exclude"));
    assert_eq!(
        m.node_filter.selectors,
        vec!["eraser.sh/cleanup.filter", "kubernetes.io/os=windows"]
    );
    let comp = &c.components;
    assert_eq!(comp.collector.enabled, Some(true));
    assert_eq!(comp.scanner.enabled, Some(true));
    assert_eq!(comp.scanner.request.cpu.as_deref(), Some("100m"));
    assert_eq!(comp.scanner.request.mem.as_deref(), Some("256Mi"));
    assert_eq!(comp.scanner.limit.cpu.as_deref(), Some("1"));
    assert_eq!(comp.scanner.limit.mem.as_deref(), Some("2Gi"));
    // The worker takes the remover's resources when scanning is off.
    assert_eq!(comp.remover.request.cpu, comp.scanner.request.cpu);
    assert_eq!(comp.remover.request.mem, comp.scanner.request.mem);
    assert_eq!(comp.remover.limit.cpu, comp.scanner.limit.cpu);
    assert_eq!(comp.remover.limit.mem, comp.scanner.limit.mem);
    assert_eq!(comp.remover.image.repo.as_deref(), Some("ghcr.io/scour-dev/scour"));
    assert_eq!(comp.remover.image.tag.as_deref(), Some("0.1.0"));
    assert_eq!(
        loaded.scanner.vulnerabilities.severities.as_deref(),
        Some(&["CRITICAL".to_owned(), "HIGH".into(), "MEDIUM".into(), "LOW".into()][..])
    );
    assert_eq!(loaded.scanner.delete_failed_images, Some(false));
    assert_eq!(c.scour.rollout.max_concurrency.as_deref(), Some("10%"));
    assert_eq!(c.scour.rollout.pending_timeout.as_deref(), Some("10m"));
    assert!(
        c.scour.policy.config_map.is_none() && c.scour.policy.sha256.is_none() && c.scour.policy.settings.is_none(),
        "no policy section by default: the built-in policy runs"
    );
    assert!(!text.contains("policy:"), "{text}");

    // The operator's own check agrees, including the default policy's
    // verdict on the settings derived from scanner.config.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_scour"))
        .args(["config", "check"])
        .arg(file.path())
        .env(
            "SCOUR_POLICY_CACHE_DIR",
            workspace_root().join("target/test-policy-cache"),
        )
        .env("SCOUR_LOG", "warn")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "scour config check refuses the chart's config:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("every 168h"), "{out}");

    // `kubectl describe configmap -n kube-system eraser-manager-config | grep tag -C 3`
    // shows the version next to scour's image.
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.trim_start().starts_with("tag:")).unwrap();
    let window = lines[at.saturating_sub(3)..(at + 4).min(lines.len())].join("\n");
    assert!(
        window.contains("tag: \"0.1.0\"") && window.contains("ghcr.io/scour-dev/scour"),
        "{window}"
    );
}

#[test]
fn interval_enabled_and_concurrency_values_change_only_their_fields() {
    let Some(helm) = Helm::find() else { return };
    let base = Rendered::parse(&helm.template(&[]), "defaults");
    let changed = Rendered::parse(
        &helm.template(&["--set", "intervalHours=48,enabled=false,concurrency=5"]),
        "--set intervalHours=48,enabled=false,concurrency=5",
    );
    let loaded = changed.config();
    assert_eq!(loaded.config.manager.scheduling.repeat_interval.as_deref(), Some("48h"));
    assert_eq!(loaded.config.components.collector.enabled, Some(false));
    assert_eq!(loaded.config.scour.rollout.max_concurrency.as_deref(), Some("5"));

    let a: Value = serde_yaml::from_str(&base.config_text()).unwrap();
    let b: Value = serde_yaml::from_str(&changed.config_text()).unwrap();
    let mut diffs = Vec::new();
    diff(
        &serde_json::to_value(&a).unwrap(),
        &serde_json::to_value(&b).unwrap(),
        "",
        &mut diffs,
    );
    let paths: Vec<&str> = diffs.iter().map(|d| d.split(':').next().unwrap()).collect();
    assert_eq!(
        paths,
        vec![
            ".components.collector.enabled",
            ".manager.scheduling.repeatInterval",
            ".scour.rollout.maxConcurrency"
        ],
        "{diffs:#?}"
    );
    // Disabling keeps the interval: manual runs and a later re-enable use it.
    let off = Rendered::parse(&helm.template(&["--set", "enabled=false"]), "--set enabled=false");
    assert_eq!(
        off.config().config.manager.scheduling.repeat_interval.as_deref(),
        Some("168h")
    );
}

#[test]
fn out_of_range_values_fail_the_render_with_a_reason() {
    let Some(helm) = Helm::find() else { return };
    for (set, needle) in [
        ("intervalHours=23", "intervalHours must be between 24 and 2160"),
        ("intervalHours=2161", "intervalHours must be between 24 and 2160"),
        ("nodeFilter.type=all", "nodeFilter.type must be exclude or include"),
        (
            "runtime.name=docker",
            "runtime.name must be containerd, crio or dockershim",
        ),
        ("successRatio=2", "successRatio must be between 0.0 and 1.0"),
        ("policy.configMap=mine", "policy.sha256 is required"),
        (
            "runtime.imageFsPath=var/lib/containerd",
            "runtime.imageFsPath must be an absolute",
        ),
        ("runtime.imageFsPath=/", "runtime.imageFsPath must be an absolute"),
        (
            "runtime.imageFsPath=/var/lib/../containerd",
            "runtime.imageFsPath must be an absolute",
        ),
    ] {
        let err = helm.template_error(&["--set", set]);
        assert!(err.contains(needle), "--set {set}: {err}");
    }
    // CRI-O's root instead, or no mount at all.
    let crio = Rendered::parse(
        &helm.template(&[
            "--set",
            "runtime.name=crio,runtime.imageFsPath=/var/lib/containers/storage",
        ]),
        "crio",
    );
    assert_eq!(
        crio.config().image_fs_path().as_deref(),
        Some("/var/lib/containers/storage")
    );
    let none = Rendered::parse(&helm.template(&["--set", "runtime.imageFsPath="]), "no image fs");
    assert_eq!(none.config().config.scour.image_fs_path.as_deref(), Some(""));
    assert_eq!(none.config().image_fs_path(), None, "empty: not mounted");
    for hours in ["24", "2160"] {
        let r = Rendered::parse(&helm.template(&["--set", &format!("intervalHours={hours}")]), "bounds");
        assert_eq!(
            r.config().config.manager.scheduling.repeat_interval,
            Some(format!("{hours}h"))
        );
    }
}

/// The patterns of one `{"excluded": [...]}` document; nothing else allowed.
fn excluded(json: &str, origin: &str) -> Vec<String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct List {
        excluded: Vec<String>,
    }
    let list: List =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{origin}: not {{\"excluded\": [...]}}: {e}"));
    PatternSet::parse(&list.excluded).unwrap_or_else(|e| panic!("{origin}: a pattern scour refuses: {e}"));
    list.excluded
}

fn system_exclusions(r: &Rendered) -> Vec<String> {
    let cm = r.config_map(SYSTEM_EXCLUSIONS);
    assert!(
        !cm.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("eraser.sh/exclude.list")),
        "the system list is not a user list"
    );
    let data = cm.data.as_ref().expect("data");
    let keys: Vec<&String> = data.keys().collect();
    assert_eq!(keys.len(), 1, "one key: {keys:?}");
    assert!(keys[0].ends_with(".json"), "{keys:?}");
    excluded(&data[keys[0]], SYSTEM_EXCLUSIONS)
}

fn matches(patterns: &PatternSet, image: &str) -> bool {
    let tags = [image];
    let none: [&str; 0] = [];
    patterns
        .first_match(&ImageNames::new("sha256:0", &tags, &none))
        .is_some()
}

#[test]
fn the_system_exclusion_list_protects_pause_control_plane_cni_and_scour_itself() {
    let Some(helm) = Helm::find() else { return };
    let r = Rendered::parse(&helm.template(&[]), "helm template (defaults)");
    let list = system_exclusions(&r);
    assert!(list.contains(&"registry.k8s.io/pause:*".to_owned()), "{list:?}");
    assert!(list.contains(&"ghcr.io/scour-dev/scour:*".to_owned()), "{list:?}");
    let patterns = PatternSet::parse(&list).unwrap();
    for image in [
        "registry.k8s.io/pause:3.10",
        "mcr.microsoft.com/oss/kubernetes/pause:3.6",
        "localhost/kubernetes/pause:0.1.0",
        "registry.k8s.io/kube-apiserver:v1.33.1",
        "registry.k8s.io/kube-proxy:v1.33.1",
        "mcr.microsoft.com/oss/kubernetes/kube-proxy:v1.31.2",
        "registry.k8s.io/etcd:3.5.21-0",
        "registry.k8s.io/coredns/coredns:v1.12.0",
        "mcr.microsoft.com/containernetworking/azure-cns:v1.6.0",
        "docker.io/calico/node:v3.29.0",
        "quay.io/cilium/cilium:v1.17.0",
        "ghcr.io/flannel-io/flannel:v0.26.0",
        "ghcr.io/scour-dev/scour:0.1.0",
    ] {
        assert!(matches(&patterns, image), "{image} is not protected");
    }
    // The system list must not protect what users clean up.
    for image in [
        "docker.io/library/alpine:3.7.3",
        "docker.io/library/nginx:1.27",
        "ghcr.io/scour-dev/scour-other:1",
    ] {
        assert!(!matches(&patterns, image), "{image} should stay removable");
    }
    assert!(
        system_exclusions(&Rendered::parse(
            &helm.template(&["--set", "image.repository=myregistry.example.com/scour"]),
            "custom image"
        ))
        .contains(&"myregistry.example.com/scour:*".to_owned()),
        "a custom image is protected too"
    );
    assert!(
        r.config_maps().iter().all(|c| !c
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("eraser.sh/exclude.list")),
        "no user exclusion lists by default"
    );
}

/// (apiGroup, resource, verb) triples a set of rules grants.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn triples(spec: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    spec.iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(move |v| (g.to_string(), r.to_string(), v.to_string())))
        .collect()
}

fn is_worker(s: &Subject) -> bool {
    s.kind == "ServiceAccount" && s.name == WORKER_SA
}

#[test]
fn rbac_is_least_privilege_and_the_worker_has_none() {
    let Some(helm) = Helm::find() else { return };
    let r = Rendered::parse(&helm.template(&[]), "helm template (defaults)");

    let worker = r
        .service_accounts()
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some(WORKER_SA))
        .expect("the worker ServiceAccount");
    assert_eq!(worker.automount_service_account_token, Some(false));
    for b in r.role_bindings() {
        assert!(!b.subjects.iter().flatten().any(is_worker), "{b:?}");
    }
    for b in r.cluster_role_bindings() {
        assert!(!b.subjects.iter().flatten().any(is_worker), "{b:?}");
    }

    let mut all = Vec::new();
    for role in r.cluster_roles() {
        all.extend(role.rules.clone().unwrap_or_default());
    }
    for role in r.roles() {
        all.extend(role.rules.clone().unwrap_or_default());
    }
    for rule in &all {
        let words = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten());
        for w in words {
            assert!(!w.contains('*'), "wildcard {w:?} in {rule:?}");
            assert_ne!(w, "secrets", "{rule:?}");
            assert_ne!(w, "escalate", "{rule:?}");
            assert_ne!(w, "bind", "{rule:?}");
            assert_ne!(w, "impersonate", "{rule:?}");
        }
    }

    let cluster = r.cluster_roles();
    assert_eq!(cluster.len(), 1);
    assert_eq!(
        grants(cluster[0].rules.as_deref().unwrap()),
        triples(&[
            ("", "nodes", &["list"]),
            ("eraser.sh", "imagelists", &["list", "watch"]),
            ("eraser.sh", "imagelists/status", &["patch"]),
            ("eraser.sh", "imagejobs", &["create", "get", "list", "watch", "delete"]),
            ("eraser.sh", "imagejobs/status", &["patch"]),
            ("scour.dev", "nodereports", &["create", "deletecollection"]),
            ("events.k8s.io", "events", &["create", "patch"]),
        ]),
        "the ClusterRole grants exactly the cluster-scoped needs"
    );
    let roles = r.roles();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0].metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(
        grants(roles[0].rules.as_deref().unwrap()),
        triples(&[
            ("", "pods", &["create", "get", "list", "watch", "delete"]),
            ("", "pods/log", &["get"]),
            ("", "configmaps", &["get", "list", "watch", "create", "update"]),
            ("coordination.k8s.io", "leases", &["get", "create", "update"]),
        ]),
        "the Role grants exactly the namespaced needs"
    );

    // Each binding gives its role to the controller's ServiceAccount, only.
    let controller_sa = |subjects: &Option<Vec<Subject>>| {
        let s = subjects.as_deref().unwrap_or_default();
        s.len() == 1
            && s[0].kind == "ServiceAccount"
            && s[0].name == CONTROLLER
            && s[0].namespace.as_deref() == Some(NAMESPACE)
    };
    let crb = &r.cluster_role_bindings()[0];
    assert!(controller_sa(&crb.subjects), "{crb:?}");
    assert_eq!(
        (crb.role_ref.kind.as_str(), crb.role_ref.name.as_str()),
        ("ClusterRole", CONTROLLER)
    );
    let rb = &r.role_bindings()[0];
    assert!(controller_sa(&rb.subjects), "{rb:?}");
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", CONTROLLER)
    );
    assert_eq!(rb.metadata.namespace.as_deref(), Some(NAMESPACE));

    let pod = r.controller().spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(CONTROLLER));
}

#[test]
fn the_controller_runs_locked_down_with_probes_and_the_contracts_flags() {
    let Some(helm) = Helm::find() else { return };
    let r = Rendered::parse(&helm.template(&[]), "helm template (defaults)");
    let c = r.controller_container();

    let sc = c.security_context.as_ref().expect("a container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, None);
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    assert!(sc.capabilities.as_ref().unwrap().add.is_none());
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );

    let ports: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    let port_of = |p: &IntOrString| match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => *ports.get(name).unwrap_or_else(|| panic!("no port named {name}")),
    };
    for (probe, path) in [(&c.liveness_probe, "/healthz"), (&c.readiness_probe, "/readyz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("an HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(port_of(&get.port), 8081, "{path}");
    }

    assert_eq!(c.image.as_deref(), Some(DEFAULT_IMAGE));
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("controller"), "{args:?}");
    for flag in [
        "--config-map=eraser-manager-config",
        "--listen=0.0.0.0:8081",
        "--worker-service-account=scour-worker",
        "--state-config-map=scour-state",
        "--node-state-dir=/var/lib/scour",
        "--system-exclusion-config-map=eraser-system-exclusion",
    ] {
        assert!(args.iter().any(|a| a == flag), "missing {flag} in {args:?}");
    }
    assert_eq!(c.command.as_deref(), Some(&["/usr/local/bin/scour".to_owned()][..]));
    // The real command line accepts them.
    let argv = std::iter::once("scour".to_owned()).chain(args.iter().cloned());
    if let Err(e) = <scour::cli::Cli as clap::Parser>::try_parse_from(argv) {
        panic!("`scour` refuses the Deployment's args {args:?}:\n{e}");
    }
    for (name, field) in [("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name")] {
        let from = env_value(c, name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .unwrap_or_else(|| panic!("{name} from the downward API"));
        assert_eq!(from.field_path, field);
    }
    assert_eq!(
        env_value(c, "SCOUR_WORKER_IMAGE").and_then(|e| e.value.as_deref()),
        Some(DEFAULT_IMAGE)
    );

    let res = c.resources.as_ref().expect("resources");
    let q = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("10m"));
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("32Mi"));
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("128Mi"));

    let pod = r.controller().spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|n| n.get("kubernetes.io/os"))
            .map(String::as_str),
        Some("linux")
    );
    let psc = pod.security_context.as_ref().expect("a pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));

    // One image value drives the controller, the workers and the config.
    let other = Rendered::parse(
        &helm.template(&["--set", "image.repository=myregistry.example.com/scour,image.tag=9.9.9"]),
        "custom image",
    );
    let image = "myregistry.example.com/scour:9.9.9";
    assert_eq!(other.controller_container().image.as_deref(), Some(image));
    assert_eq!(
        env_value(other.controller_container(), "SCOUR_WORKER_IMAGE").and_then(|e| e.value.as_deref()),
        Some(image)
    );
    let remover = other.config().config.components.remover.image;
    assert_eq!(
        (remover.repo.as_deref(), remover.tag.as_deref()),
        (Some("myregistry.example.com/scour"), Some("9.9.9"))
    );
}

/// Every key of values.yaml with its dotted path and line number; list
/// items and comments are not keys.
fn value_paths(values: &str) -> Vec<(String, usize, usize)> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    for (i, line) in values.lines().enumerate() {
        let key = line.trim_start();
        if key.is_empty() || key.starts_with('#') || key.starts_with('-') {
            continue;
        }
        let Some((name, _)) = key.split_once(':') else { continue };
        let indent = line.len() - key.len();
        while stack.last().is_some_and(|(at, _)| *at >= indent) {
            stack.pop();
        }
        stack.push((indent, name.to_owned()));
        let path: Vec<&str> = stack.iter().map(|(_, n)| n.as_str()).collect();
        out.push((path.join("."), indent, i));
    }
    out
}

#[test]
fn the_chart_is_documented_value_by_value() {
    let values = read(&format!("{CHART}/values.yaml"));
    let readme = read(&format!("{CHART}/README.md"));
    let lines: Vec<&str> = values.lines().collect();
    let paths = value_paths(&values);
    assert!(paths.len() > 40, "{paths:?}");
    for (path, indent, line) in &paths {
        // Below a value documented as a whole (a map such as nodeSelector)
        // keys are data, not values.
        let mut parents = path.match_indices('.').map(|(at, _)| &path[..at]);
        if parents.any(|p| readme.contains(&format!("`{p}`"))) {
            continue;
        }
        // Documented itself, or as the parent of documented values.
        assert!(
            readme.contains(&format!("`{path}`")) || readme.contains(&format!("`{path}.")),
            "value {path} (values.yaml line {}) is not in the chart README's table",
            line + 1
        );
        if *indent == 0 {
            assert!(
                *line > 0 && lines[line - 1].starts_with('#'),
                "top-level value {path} has no comment above it"
            );
        }
    }
    let notes = read(&format!("{CHART}/templates/NOTES.txt"));
    for needle in [
        "kind: ImageList",
        "kubectl get imagejobs",
        "kubectl get imagejob <name> -o yaml",
    ] {
        assert!(notes.contains(needle), "NOTES.txt lacks {needle:?}");
    }
}

#[test]
fn a_registry_policy_gives_the_controller_room_to_vet_it_and_read_only_the_pull_secrets() {
    let Some(helm) = Helm::find() else { return };
    let module = format!(
        "registry://registry.example.com:5000/policies/p:v1@sha256:{}",
        "ab".repeat(32)
    );
    let r = Rendered::parse(
        &helm.template(&[
            "--set",
            &format!("policy.module={module}"),
            "--set",
            "policy.insecureSources={registry.example.com:5000}",
            "--set",
            "imagePullSecrets={regcred}",
        ]),
        "helm template (policy.module)",
    );
    let config = r.config();
    let policy = &config.config.scour.policy;
    assert_eq!(policy.module.as_deref(), Some(module.as_str()));
    assert_eq!(policy.insecure_sources, ["registry.example.com:5000"]);
    let controller = r
        .deployments()
        .into_iter()
        .find(|d| d.metadata.name.as_deref() == Some(CONTROLLER))
        .unwrap();
    let pod = controller.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let limits = container.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["memory"].0, "768Mi", "vetting compiles the policy");
    let env = container.env.as_ref().unwrap();
    let cache = env
        .iter()
        .find(|e| e.name == "SCOUR_POLICY_CACHE_DIR")
        .and_then(|e| e.value.clone())
        .expect("a compile cache for vetting");
    assert!(
        container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == cache),
        "the cache is a writable volume under a read-only root"
    );
    let rendered = helm.template(&[
        "--set",
        &format!("policy.module={module}"),
        "--set",
        "imagePullSecrets={regcred}",
    ]);
    let secrets_rule = rendered
        .split("\n---")
        .find(|doc| doc.contains("kind: Role\n") && doc.contains("secrets"))
        .expect("the controller's Role reads the pull secrets");
    assert!(
        secrets_rule.contains("resourceNames: [\"regcred\"]") && secrets_rule.contains("verbs: [\"get\"]"),
        "{secrets_rule}"
    );
    // Without a registry policy, no Secret is readable.
    assert!(
        !helm
            .template(&["--set", "imagePullSecrets={regcred}"])
            .contains("\"secrets\"")
    );
}
