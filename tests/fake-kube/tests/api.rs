//! The fake API server exercised through real `kube::Api` clients.

use std::collections::BTreeMap;
use std::time::Instant;

use http::Method;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Event, Node, ObjectReference, Pod, PodSpec};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::response::StatusSummary;
use scour_fake_kube::FakeApi;
use serde_json::{Value, json};

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: (!labels.is_empty()).then(|| labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

fn configmap(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, &[]),
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

fn pod(namespace: &str, name: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            ..meta(name, labels)
        },
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            containers: vec![Container {
                name: "worker".into(),
                image: Some("scour:dev".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(name: &str) -> Node {
    Node {
        metadata: meta(name, &[("kubernetes.io/os", "linux")]),
        ..Default::default()
    }
}

/// The HTTP code and reason of a `kube::Error::Api`; panics on any other outcome.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn rv<K: kube::Resource>(obj: &K) -> u64 {
    obj.meta()
        .resource_version
        .as_deref()
        .expect("a resourceVersion")
        .parse()
        .expect("numeric")
}

fn names<K: kube::Resource>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    items
        .into_iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect()
}

fn image_list_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("eraser.sh", "v1", "ImageList"), "imagelists")
}

#[tokio::test]
async fn configmap_round_trip() {
    let fake = FakeApi::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client("default"), "kube-system");

    let created = api
        .create(&PostParams::default(), &configmap("scour", &[("a", "1")]))
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("kube-system"));
    assert!(created.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let first_rv = rv(&created);

    let got = api.get("scour").await.unwrap();
    assert_eq!(got, created);
    assert_eq!(names(api.list(&ListParams::default()).await.unwrap()), ["scour"]);

    let mut changed = got.clone();
    changed.data = Some(BTreeMap::from([("a".into(), "2".into())]));
    let replaced = api.replace("scour", &PostParams::default(), &changed).await.unwrap();
    assert_eq!(replaced.data.as_ref().unwrap()["a"], "2");
    assert!(rv(&replaced) > first_rv);
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(
        replaced.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );

    let patch = json!({"data": {"b": "3"}, "metadata": {"labels": {"app": "scour"}}});
    let patched = api
        .patch("scour", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap().len(), 2);
    assert_eq!(patched.metadata.labels.as_ref().unwrap()["app"], "scour");
    assert!(rv(&patched) > rv(&replaced));
    assert_eq!(
        fake.get::<ConfigMap>(Some("kube-system"), "scour"),
        Some(patched.clone())
    );

    // A no-op update leaves the resourceVersion alone, as a real API server does.
    let same = api
        .patch("scour", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&patched));

    // Deleting a configmap answers with a success Status, a pod with the object (see pod tests).
    let deleted = api.delete("scour", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status");
    assert_eq!(status.status, Some(StatusSummary::Success));
    assert_eq!(status.details.unwrap().name, "scour");
    assert_eq!(api_error(api.get("scour").await), (404, "NotFound".into()));
    assert!(api.get_opt("scour").await.unwrap().is_none());
    assert!(fake.list::<ConfigMap>().is_empty());
}

#[tokio::test]
async fn not_found_and_conflicts_are_api_errors() {
    let fake = FakeApi::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client("default"), "default");
    assert_eq!(api_error(api.get("nope").await), (404, "NotFound".into()));
    assert_eq!(
        api_error(api.delete("nope", &DeleteParams::default()).await),
        (404, "NotFound".into())
    );
    let missing = api
        .replace("nope", &PostParams::default(), &configmap("nope", &[]))
        .await;
    assert_eq!(api_error(missing), (404, "NotFound".into()));
    let patch = Patch::Merge(json!({"data": {"a": "1"}}));
    assert_eq!(
        api_error(api.patch("nope", &PatchParams::default(), &patch).await),
        (404, "NotFound".into())
    );

    let first = api.create(&PostParams::default(), &configmap("cm", &[])).await.unwrap();
    let again = api.create(&PostParams::default(), &configmap("cm", &[])).await;
    assert_eq!(api_error(again), (409, "AlreadyExists".into()));

    // Optimistic concurrency: the first writer wins, the stale copy is refused.
    let mut a = first.clone();
    a.data = Some(BTreeMap::from([("writer".into(), "a".into())]));
    api.replace("cm", &PostParams::default(), &a).await.unwrap();
    let mut b = first.clone();
    b.data = Some(BTreeMap::from([("writer".into(), "b".into())]));
    assert_eq!(
        api_error(api.replace("cm", &PostParams::default(), &b).await),
        (409, "Conflict".into())
    );
    let stale = json!({"metadata": {"resourceVersion": first.metadata.resource_version}, "data": {"writer": "c"}});
    let stale_patch = api.patch("cm", &PatchParams::default(), &Patch::Merge(&stale)).await;
    assert_eq!(api_error(stale_patch), (409, "Conflict".into()));
    assert_eq!(
        fake.get::<ConfigMap>(Some("default"), "cm").unwrap().data.unwrap()["writer"],
        "a"
    );

    // Without a resourceVersion a replace is unconditional.
    let mut c = configmap("cm", &[("writer", "c")]);
    c.metadata.resource_version = None;
    api.replace("cm", &PostParams::default(), &c).await.unwrap();
    assert_eq!(
        fake.get::<ConfigMap>(Some("default"), "cm").unwrap().data.unwrap()["writer"],
        "c"
    );

    // A stale delete precondition is a conflict too.
    let dp = DeleteParams::default().preconditions(kube::api::Preconditions {
        resource_version: first.metadata.resource_version.clone(),
        uid: None,
    });
    assert_eq!(api_error(api.delete("cm", &dp).await), (409, "Conflict".into()));

    // Invalid names are refused like a real API server refuses them.
    let bad = api.create(&PostParams::default(), &configmap("Not_Valid", &[])).await;
    assert_eq!(api_error(bad), (422, "Invalid".into()));
}

#[tokio::test]
async fn label_selectors_support_every_operator() {
    let fake = FakeApi::new();
    for (name, labels) in [
        ("web-1", vec![("app", "web"), ("tier", "front")]),
        ("web-2", vec![("app", "web"), ("tier", "back")]),
        ("db-1", vec![("app", "db")]),
        ("bare", vec![]),
    ] {
        fake.seed(&pod("apps", name, "node-1", &labels));
    }
    let api: Api<Pod> = Api::namespaced(fake.client("apps"), "apps");
    let select = |selector: &'static str| {
        let api = api.clone();
        async move {
            let lp = ListParams::default().labels(selector);
            names(api.list(&lp).await.unwrap())
        }
    };
    assert_eq!(select("app=web").await, ["web-1", "web-2"]);
    assert_eq!(select("app==db").await, ["db-1"]);
    assert_eq!(select("app!=web").await, ["bare", "db-1"]);
    assert_eq!(select("app in (db, web),tier notin (back)").await, ["db-1", "web-1"]);
    assert_eq!(select("tier notin (front)").await, ["bare", "db-1", "web-2"]);
    assert_eq!(select("tier").await, ["web-1", "web-2"]);
    assert_eq!(select("!app").await, ["bare"]);
    assert_eq!(select("app=web,tier=back").await, ["web-2"]);
    assert!(select("app=nothing").await.is_empty());

    for malformed in ["app in (web", "=web", "app=web,", "app notin web"] {
        let result = api.list(&ListParams::default().labels(malformed)).await;
        assert_eq!(api_error(result), (400, "BadRequest".into()), "{malformed}");
    }
    let Err(kube::Error::Api(status)) = api.list(&ListParams::default().labels("app in (web")).await else {
        unreachable!()
    };
    assert!(status.message.contains("labelSelector"), "{}", status.message);
}

#[tokio::test]
async fn field_selectors() {
    let fake = FakeApi::new();
    fake.seed(&pod("a", "p1", "node-1", &[]));
    fake.seed(&pod("a", "p2", "node-2", &[]));
    fake.seed(&pod("b", "p3", "node-1", &[]));
    fake.seed(&pod("b", "unscheduled", "", &[]));
    fake.set_pod_phase("a", "p1", "Running");
    let all: Api<Pod> = Api::all(fake.client("default"));
    let select = |selector: &'static str| {
        let all = all.clone();
        async move { names(all.list(&ListParams::default().fields(selector)).await.unwrap()) }
    };
    assert_eq!(select("spec.nodeName=node-1").await, ["p1", "p3"]);
    assert_eq!(select("spec.nodeName==node-1,metadata.namespace=b").await, ["p3"]);
    assert_eq!(select("spec.nodeName!=node-1").await, ["p2", "unscheduled"]);
    assert_eq!(select("spec.nodeName=").await, ["unscheduled"]);
    assert_eq!(select("status.phase=Running").await, ["p1"]);
    assert_eq!(select("status.phase!=Running").await, ["p2", "p3", "unscheduled"]);
    assert_eq!(select("metadata.name=p2").await, ["p2"]);
    let unsupported = all.list(&ListParams::default().fields("spec.priority=1")).await;
    assert_eq!(api_error(unsupported), (400, "BadRequest".into()));

    let namespaced: Api<Pod> = Api::namespaced(fake.client("default"), "a");
    let lp = ListParams::default().fields("spec.nodeName=node-1").labels("");
    assert_eq!(names(namespaced.list(&lp).await.unwrap()), ["p1"]);
}

#[tokio::test]
async fn status_subresource_is_separate_from_the_main_resource() {
    let fake = FakeApi::new();
    let api: Api<Pod> = Api::namespaced(fake.client("default"), "work");
    let mut new_pod = pod("work", "job", "node-1", &[]);
    new_pod.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    let created = api.create(&PostParams::default(), &new_pod).await.unwrap();
    // The API server resets a new pod's status.
    assert_eq!(created.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(created.metadata.generation, Some(1));

    // Replacing or patching the pod does not touch its status.
    let mut replacement = created.clone();
    replacement.status = Some(serde_json::from_value(json!({"phase": "Failed"})).unwrap());
    replacement.metadata.labels = Some(BTreeMap::from([("l".into(), "1".into())]));
    let replaced = api.replace("job", &PostParams::default(), &replacement).await.unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(
        replaced.metadata.generation,
        Some(1),
        "a metadata change keeps the generation"
    );
    let patch = Patch::Merge(json!({"status": {"phase": "Failed"}}));
    let patched = api.patch("job", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(patched.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));

    // The status subresource changes the status only, and not the generation.
    let patch = Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"nodeName": "elsewhere"}}));
    let patched = api.patch_status("job", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(patched.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(patched.spec.as_ref().unwrap().node_name.as_deref(), Some("node-1"));
    assert_eq!(patched.metadata.generation, Some(1));
    let mut body = patched.clone();
    body.status.as_mut().unwrap().phase = Some("Succeeded".into());
    body.spec.as_mut().unwrap().node_name = Some("elsewhere".into());
    let replaced = api.replace_status("job", &PostParams::default(), &body).await.unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().phase.as_deref(), Some("Succeeded"));
    assert_eq!(replaced.spec.as_ref().unwrap().node_name.as_deref(), Some("node-1"));
    let stale = api.replace_status("job", &PostParams::default(), &patched).await;
    assert_eq!(api_error(stale), (409, "Conflict".into()));

    // A spec change bumps the generation.
    let patch = Patch::Merge(json!({"spec": {"activeDeadlineSeconds": 30}}));
    let patched = api.patch("job", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.status.as_ref().unwrap().phase.as_deref(), Some("Succeeded"));

    // Kinds without a status subresource have no /status.
    let cms: Api<ConfigMap> = Api::namespaced(fake.client("default"), "work");
    cms.create(&PostParams::default(), &configmap("cm", &[])).await.unwrap();
    let status_patch = cms
        .patch_status("cm", &PatchParams::default(), &Patch::Merge(json!({})))
        .await;
    assert_eq!(api_error(status_patch).0, 404);
}

#[tokio::test]
async fn generate_name_gives_unique_names() {
    let fake = FakeApi::new();
    let api: Api<Pod> = Api::namespaced(fake.client("default"), "default");
    let mut template = pod("default", "", "", &[]);
    template.metadata.name = None;
    template.metadata.generate_name = Some("scour-worker-".into());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let created = api.create(&PostParams::default(), &template).await.unwrap();
        let name = created.metadata.name.unwrap();
        let suffix = name.strip_prefix("scour-worker-").expect("the prefix is kept");
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert!(seen.insert(name));
    }
    assert_eq!(fake.list::<Pod>().len(), 20);

    template.metadata.generate_name = None;
    let nameless = api.create(&PostParams::default(), &template).await;
    assert_eq!(api_error(nameless), (422, "Invalid".into()));
}

#[tokio::test]
async fn fail_next_injects_failures_and_requests_are_recorded() {
    let fake = FakeApi::new();
    fake.seed(&node("n1"));
    let nodes: Api<Node> = Api::all(fake.client("default"));
    fake.fail_next(Method::GET, "/api/v1/nodes/n1", 503, 2);
    fake.fail_next(Method::POST, "/nodes", 500, 1);
    assert_eq!(api_error(nodes.get("n1").await), (503, "ServiceUnavailable".into()));
    // A list does not match the path.
    assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 1);
    assert_eq!(api_error(nodes.get("n1").await), (503, "ServiceUnavailable".into()));
    assert!(nodes.get("n1").await.is_ok(), "only two failures were asked for");
    assert_eq!(
        api_error(nodes.create(&PostParams::default(), &node("n2")).await),
        (500, "InternalError".into())
    );
    nodes.create(&PostParams::default(), &node("n2")).await.unwrap();

    let requests = fake.requests();
    let seen: Vec<(Method, &str)> = requests.iter().map(|(m, p)| (m.clone(), p.as_str())).collect();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[0], (Method::GET, "/api/v1/nodes/n1"));
    assert_eq!(seen[1].0, Method::GET);
    assert!(seen[1].1.starts_with("/api/v1/nodes?"), "{}", seen[1].1);
    assert_eq!(seen[4].0, Method::POST);
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn two_clients_share_one_store() {
    let fake = FakeApi::new();
    let replica_a: Api<Lease> = Api::namespaced(fake.client("kube-system"), "kube-system");
    let replica_b: Api<Lease> = Api::namespaced(fake.client("kube-system"), "kube-system");
    let lease = Lease {
        metadata: meta("scour-leader", &[]),
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = replica_a.create(&PostParams::default(), &lease).await.unwrap();
    let seen_by_b = replica_b.get("scour-leader").await.unwrap();
    assert_eq!(seen_by_b.spec.as_ref().unwrap().holder_identity.as_deref(), Some("a"));

    // Both replicas try to take the lease from the same resourceVersion: exactly one wins.
    let mut take_a = created.clone();
    take_a.spec.as_mut().unwrap().lease_transitions = Some(1);
    let mut take_b = seen_by_b.clone();
    take_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let pp = PostParams::default();
    let (a, b) = tokio::join!(
        replica_a.replace("scour-leader", &pp, &take_a),
        replica_b.replace("scour-leader", &pp, &take_b),
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one replica must win: {a:?} / {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert_eq!(api_error(loser), (409, "Conflict".into()));
    assert_eq!(
        fake.get::<Lease>(Some("kube-system"), "scour-leader")
            .unwrap()
            .metadata
            .generation,
        Some(2)
    );
}

#[tokio::test]
async fn dynamic_custom_resources() {
    let fake = FakeApi::new();
    let resource = image_list_resource();
    let api: Api<DynamicObject> = Api::all_with(fake.client("default"), &resource);
    let list =
        DynamicObject::new("imagelist", &resource).data(json!({"spec": {"images": ["docker.io/library/alpine:3.19"]}}));
    let created = api.create(&PostParams::default(), &list).await.unwrap();
    assert_eq!(created.types.as_ref().unwrap().kind, "ImageList");
    assert_eq!(created.metadata.namespace, None);
    assert_eq!(created.data["spec"]["images"][0], "docker.io/library/alpine:3.19");

    let status = Patch::Merge(json!({"status": {"success": 3, "failed": 0}}));
    let patched = api
        .patch_status("imagelist", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["success"], 3);
    assert_eq!(patched.metadata.generation, Some(1));
    let spec = Patch::Merge(json!({"spec": {"images": ["*"]}}));
    let patched = api.patch("imagelist", &PatchParams::default(), &spec).await.unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.data["status"]["success"], 3, "status survives a spec patch");

    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].data["spec"]["images"][0], "*");
    let direct = fake.get_dynamic(&resource, None, "imagelist").unwrap();
    assert_eq!(direct.data["status"]["failed"], 0);
    assert_eq!(fake.list_dynamic(&resource).len(), 1);

    fake.set_status_dynamic(&resource, None, "imagelist", json!({"success": 4}));
    assert_eq!(
        api.get("imagelist").await.unwrap().data["status"],
        json!({"success": 4})
    );

    // ImageJobs are separate, and also cluster-scoped.
    let jobs_resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("eraser.sh", "v1", "ImageJob"), "imagejobs");
    let jobs: Api<DynamicObject> = Api::all_with(fake.client("default"), &jobs_resource);
    assert!(jobs.list(&ListParams::default()).await.unwrap().items.is_empty());

    // Seeding and removing work for dynamic objects too.
    let seeded = DynamicObject::new("seeded", &resource).data(json!({"spec": {"images": []}}));
    fake.seed(&seeded);
    assert_eq!(api.get("seeded").await.unwrap().metadata.generation, Some(1));
    assert!(fake.remove_dynamic(&resource, None, "seeded"));
    assert_eq!(api_error(api.get("seeded").await).0, 404);

    let deleted = api.delete("imagelist", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right());
    assert!(fake.list_dynamic(&resource).is_empty());
}

#[tokio::test]
async fn json_patch_apply_and_strategic_patch() {
    let fake = FakeApi::new();
    let client = fake.client("default");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // Server-side apply creates the object, then merges into it.
    let pp = PatchParams::apply("scour").force();
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
    let created = api.patch("cfg", &pp, &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(created.data.as_ref().unwrap()["a"], "1");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"b": "2"}});
    let updated = api.patch("cfg", &pp, &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(updated.data.as_ref().unwrap().len(), 2);

    let strategic = Patch::Strategic(json!({"data": {"a": null, "c": "3"}}));
    let updated = api.patch("cfg", &PatchParams::default(), &strategic).await.unwrap();
    assert_eq!(updated.data.as_ref().unwrap().keys().collect::<Vec<_>>(), ["b", "c"]);

    // kube's Patch::Json needs its `jsonpatch` feature, so send this one raw.
    let json_patch = |ops: Value| {
        http::Request::patch("/api/v1/namespaces/default/configmaps/cfg")
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(serde_json::to_vec(&ops).unwrap())
            .unwrap()
    };
    let ops = json!([
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "remove", "path": "/data/c"},
        {"op": "add", "path": "/metadata/labels", "value": {"app": "scour"}},
    ]);
    let patched: ConfigMap = client.request(json_patch(ops)).await.unwrap();
    assert_eq!(
        patched.data.as_ref().unwrap(),
        &BTreeMap::from([("b".into(), "20".into())])
    );
    assert_eq!(patched.metadata.labels.as_ref().unwrap()["app"], "scour");
    let failed_test = client.request::<ConfigMap>(json_patch(json!([{"op": "test", "path": "/data/b", "value": "2"}])));
    assert_eq!(api_error(failed_test.await), (422, "Invalid".into()));

    // Apply to the status of a missing object is a 404, not a create.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let result = pods
        .patch_status("ghost", &pp, &Patch::Apply(json!({"status": {}})))
        .await;
    assert_eq!(api_error(result).0, 404);
}

#[tokio::test]
async fn core_and_events_v1_events_are_distinct() {
    let fake = FakeApi::new();
    let client = fake.client("default");
    let core: Api<Event> = Api::namespaced(client.clone(), "default");
    let v1: Api<EventV1> = Api::namespaced(client, "default");
    let event = Event {
        metadata: meta("node-1.scour", &[]),
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: Some("node-1".into()),
            ..Default::default()
        },
        reason: Some("ImagesRemoved".into()),
        type_: Some("Normal".into()),
        ..Default::default()
    };
    core.create(&PostParams::default(), &event).await.unwrap();
    let other = Event {
        metadata: meta("node-2.scour", &[]),
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: Some("node-2".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    core.create(&PostParams::default(), &other).await.unwrap();
    let lp = ListParams::default().fields("involvedObject.name=node-1,reason=ImagesRemoved");
    assert_eq!(names(core.list(&lp).await.unwrap()), ["node-1.scour"]);
    assert!(v1.list(&ListParams::default()).await.unwrap().items.is_empty());

    let event_v1 = EventV1 {
        metadata: meta("node-1.scour", &[]),
        reason: Some("ImagesRemoved".into()),
        note: Some("removed 3 images".into()),
        ..Default::default()
    };
    v1.create(&PostParams::default(), &event_v1).await.unwrap();
    let fetched = v1.get("node-1.scour").await.unwrap();
    assert_eq!(fetched.note.as_deref(), Some("removed 3 images"));
    assert_eq!(fake.list::<EventV1>().len(), 1);
    assert_eq!(fake.list::<Event>().len(), 2);
}

#[tokio::test]
async fn watches_and_unknown_paths_are_refused() {
    let fake = FakeApi::new();
    let client = fake.client("default");
    let pods: Api<Pod> = Api::all(client.clone());
    let watch = pods.watch(&kube::api::WatchParams::default(), "0").await;
    let (code, reason) = api_error(watch.map(|_| ()));
    assert_eq!((code, reason.as_str()), (405, "MethodNotAllowed"));

    let unknown = http::Request::get("/healthz/unknown").body(Vec::new()).unwrap();
    assert_eq!(api_error(client.request::<Value>(unknown).await).0, 404);
    // A namespaced kind cannot be addressed without its namespace, nor a cluster-scoped one with one.
    let bad = http::Request::get("/api/v1/pods/x").body(Vec::new()).unwrap();
    assert_eq!(api_error(client.request::<Value>(bad).await).0, 404);
    let bad = http::Request::get("/api/v1/namespaces/default/nodes")
        .body(Vec::new())
        .unwrap();
    assert_eq!(api_error(client.request::<Value>(bad).await).0, 404);
    let log = http::Request::get("/api/v1/namespaces/default/pods/p/log")
        .body(Vec::new())
        .unwrap();
    assert_eq!(api_error(client.request::<Value>(log).await).0, 404);
}

#[tokio::test]
async fn paging_with_limit_and_continue() {
    let fake = FakeApi::new();
    for i in 0..7 {
        fake.seed(&node(&format!("node-{i}")));
    }
    let nodes: Api<Node> = Api::all(fake.client("default"));
    let mut all = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = nodes.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        all.extend(names(page.items));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(all, (0..7).map(|i| format!("node-{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn pod_helpers_and_typed_reads() {
    let fake = FakeApi::new();
    fake.seed(&pod("work", "scan", "node-1", &[("app", "scour")]));
    let seeded: Pod = fake.get(Some("work"), "scan").unwrap();
    assert_eq!(seeded.metadata.generation, Some(1));
    let api: Api<Pod> = Api::namespaced(fake.client("default"), "work");

    fake.set_pod_phase("work", "scan", "Running");
    let running = api.get("scan").await.unwrap();
    let status = running.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let container = &status.container_statuses.as_ref().unwrap()[0];
    assert!(container.ready);
    assert!(container.state.as_ref().unwrap().running.is_some());

    fake.finish_pod("work", "scan", 3, "disk full");
    let finished = api.get("scan").await.unwrap();
    assert!(rv(&finished) > rv(&running));
    let status = finished.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let container = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!(container.name, "worker");
    let terminated = container.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.message.as_deref(), Some("disk full"));

    fake.finish_pod("work", "scan", 0, "");
    let ok: Pod = fake.get(Some("work"), "scan").unwrap();
    assert_eq!(ok.status.unwrap().phase.as_deref(), Some("Succeeded"));

    fake.set_status::<Pod>(Some("work"), "scan", json!({"phase": "Unknown"}));
    assert_eq!(
        api.get("scan").await.unwrap().status.unwrap().phase.as_deref(),
        Some("Unknown")
    );

    // Deleting a pod answers with the pod itself.
    let deleted = api.delete("scan", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().unwrap().metadata.name.as_deref(), Some("scan"));
    assert!(!fake.remove::<Pod>(Some("work"), "scan"));
    fake.seed(&pod("work", "again", "", &[]));
    assert!(fake.remove::<Pod>(Some("work"), "again"));
    assert!(fake.list::<Pod>().is_empty());
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let fake = FakeApi::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client("default"), "default");
    let mut cm = configmap("held", &[]);
    cm.metadata.finalizers = Some(vec!["scour.dev/cleanup".into()]);
    api.create(&PostParams::default(), &cm).await.unwrap();
    let marked = api
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the object");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(api.get("held").await.is_ok(), "still there while the finalizer is");
    let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    api.patch("held", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(api_error(api.get("held").await).0, 404);
}

#[tokio::test]
async fn metadata_lists_delete_collection_and_dry_run() {
    let fake = FakeApi::new();
    for (name, app) in [("a", "scour"), ("b", "scour"), ("c", "other")] {
        fake.seed(&pod("ns", name, "node-1", &[("app", app)]));
    }
    let api: Api<Pod> = Api::namespaced(fake.client("default"), "ns");
    let metas = api
        .list_metadata(&ListParams::default().labels("app=scour"))
        .await
        .unwrap();
    assert_eq!(names(metas.items), ["a", "b"]);

    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &pod("ns", "d", "", &[]),
        )
        .await
        .unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("d"));
    assert!(fake.get::<Pod>(Some("ns"), "d").is_none(), "a dry run stores nothing");

    let deleted = api
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=scour"))
        .await
        .unwrap();
    assert_eq!(names(deleted.left().unwrap().items), ["a", "b"]);
    assert_eq!(names(fake.list::<Pod>()), ["c"]);
}

#[tokio::test]
async fn thousands_of_objects_stay_fast() {
    let fake = FakeApi::new();
    let start = Instant::now();
    for i in 0..1000 {
        fake.seed(&node(&format!("node-{i:04}")));
    }
    let client = fake.client("default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "scour");
    for i in 0..1000 {
        let p = pod(
            "scour",
            &format!("scan-{i:04}"),
            &format!("node-{i:04}"),
            &[("app", "scour")],
        );
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let nodes: Api<Node> = Api::all(client);
    assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 1000);
    let lp = ListParams::default()
        .labels("app=scour")
        .fields("spec.nodeName=node-0500");
    assert_eq!(names(pods.list(&lp).await.unwrap()), ["scan-0500"]);
    assert_eq!(fake.list::<Pod>().len(), 1000);
    let elapsed = start.elapsed();
    // Generous even for a debug build on a loaded machine; this is typically well under a second.
    assert!(elapsed.as_secs() < 30, "took {elapsed:?}");
}
