//! An in-memory fake Kubernetes API server for testing controllers with a real [`kube::Client`].
//!
//! [`FakeApi`] holds a store of objects and hands out clients whose requests it answers like an API server would:
//! create/get/list/replace/patch/delete with resourceVersion conflicts, `generateName`, label and field selectors,
//! `limit`/`continue` paging, status subresources, generations, finalizers and dry runs. It does not serve watches
//! (a watch request gets 405), so controllers under test must poll.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube::Error> {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use scour_fake_kube::FakeApi;
//!
//! let fake = FakeApi::new();
//! let configmaps: Api<ConfigMap> = Api::namespaced(fake.client("default"), "kube-system");
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("scour".into());
//! configmaps.create(&PostParams::default(), &cm).await?;
//! assert!(fake.get::<ConfigMap>(Some("kube-system"), "scour").is_some());
//! # Ok(())
//! # }
//! ```

mod patch;
mod resources;
mod selector;
mod store;

use std::sync::{Arc, Mutex, MutexGuard};

use http::Method;
use kube::Resource;
use kube::client::Body;
use kube::core::{ApiResource, DynamicObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use store::{Reply, ResKey, Store};

/// A fake Kubernetes API server: a shared in-memory store plus the clients that talk to it.
///
/// Cloning gives another handle on the same store.
#[derive(Clone, Default)]
pub struct FakeApi {
    store: Arc<Mutex<Store>>,
}

fn key_of<K: Resource<DynamicType = ()>>() -> ResKey {
    (K::group(&()).into_owned(), K::plural(&()).into_owned())
}

fn key_of_dynamic(resource: &ApiResource) -> ResKey {
    (resource.group.clone(), resource.plural.clone())
}

fn decode<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| {
        panic!(
            "a stored object does not decode as {}: {e}: {value}",
            std::any::type_name::<T>()
        )
    })
}

impl FakeApi {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic elsewhere while holding the lock leaves the store usable.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new [`kube::Client`] served by this store, answering on a task spawned on the current Tokio runtime
    /// (so call it inside one). Several clients may share a store, e.g. two controller replicas.
    pub fn client(&self, default_namespace: &str) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
        // The mock admits `allow(n)` more requests, then stalls callers until allowed again; the budget starts at
        // u64::MAX, and setting it here keeps it there whatever tower-test's default becomes.
        handle.allow(u64::MAX);
        let store = self.clone();
        tokio::spawn(async move {
            // Ends when every clone of the client is dropped.
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let reply = match body.collect_bytes().await {
                    Ok(bytes) => store.lock().handle(&parts.method, &parts.uri, &parts.headers, &bytes),
                    Err(e) => Reply::status(400, "BadRequest", format!("unreadable request body: {e}"), None),
                };
                let response = http::Response::builder()
                    .status(reply.code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(reply.body))
                    .expect("status codes from the store are valid");
                send.send_response(response);
            }
        });
        kube::Client::new(service, default_namespace)
    }

    /// Serves this store over plain HTTP on `listener`, so that a real process (e.g. `scour controller` with a
    /// kubeconfig whose server is `http://<addr>`) talks to it. Runs until the returned future is dropped.
    pub async fn serve_http(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::response::IntoResponse;
        async fn answer(
            State(store): State<FakeApi>,
            method: Method,
            uri: http::Uri,
            headers: http::HeaderMap,
            body: Bytes,
        ) -> axum::response::Response {
            let reply = store.lock().handle(&method, &uri, &headers, &body);
            let code = http::StatusCode::from_u16(reply.code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            (code, [(http::header::CONTENT_TYPE, "application/json")], reply.body).into_response()
        }
        let app = axum::Router::new().fallback(answer).with_state(self.clone());
        axum::serve(listener, app).await
    }

    /// Inserts or overwrites an object as-is: any value that serializes with apiVersion, kind and metadata.name
    /// (k8s-openapi types, `#[derive(CustomResource)]` types, typed `DynamicObject`s). Fills uid, resourceVersion,
    /// creationTimestamp and generation when absent, and namespace "default" for known namespaced kinds.
    ///
    /// Panics when the object lacks apiVersion, kind or name.
    pub fn seed<T: Serialize>(&self, obj: &T) {
        let value = serde_json::to_value(obj).expect("seeded objects serialize to JSON");
        if let Err(e) = self.lock().seed(value) {
            panic!("FakeApi::seed: {e}");
        }
    }

    /// The stored object, read directly (no request is recorded). Pass `None` as namespace for cluster-scoped kinds.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<K> {
        let value = self.lock().get(&key_of::<K>(), namespace, name).cloned();
        value.map(decode)
    }

    /// Every stored object of that kind, across namespaces, sorted by namespace then name.
    pub fn list<K: Resource<DynamicType = ()> + DeserializeOwned>(&self) -> Vec<K> {
        let values = self.lock().list(&key_of::<K>());
        values.into_iter().map(decode).collect()
    }

    /// Deletes an object outright (ignoring finalizers); false if there was none.
    pub fn remove<K: Resource<DynamicType = ()>>(&self, namespace: Option<&str>, name: &str) -> bool {
        self.lock().remove(&key_of::<K>(), namespace, name)
    }

    /// Replaces an object's status, as a kubelet or another controller would, and bumps its resourceVersion.
    ///
    /// Panics if there is no such object.
    pub fn set_status<K: Resource<DynamicType = ()>>(&self, namespace: Option<&str>, name: &str, status: Value) {
        self.update(&key_of::<K>(), namespace, name, |obj| obj["status"] = status);
    }

    /// [`FakeApi::get`] for a dynamic type, e.g. a custom resource described by an [`ApiResource`].
    pub fn get_dynamic(&self, resource: &ApiResource, namespace: Option<&str>, name: &str) -> Option<DynamicObject> {
        let value = self.lock().get(&key_of_dynamic(resource), namespace, name).cloned();
        value.map(decode)
    }

    /// [`FakeApi::list`] for a dynamic type.
    pub fn list_dynamic(&self, resource: &ApiResource) -> Vec<DynamicObject> {
        let values = self.lock().list(&key_of_dynamic(resource));
        values.into_iter().map(decode).collect()
    }

    /// [`FakeApi::remove`] for a dynamic type.
    pub fn remove_dynamic(&self, resource: &ApiResource, namespace: Option<&str>, name: &str) -> bool {
        self.lock().remove(&key_of_dynamic(resource), namespace, name)
    }

    /// [`FakeApi::set_status`] for a dynamic type. Panics if there is no such object.
    pub fn set_status_dynamic(&self, resource: &ApiResource, namespace: Option<&str>, name: &str, status: Value) {
        self.update(&key_of_dynamic(resource), namespace, name, |obj| obj["status"] = status);
    }

    fn update(&self, key: &ResKey, namespace: Option<&str>, name: &str, f: impl FnOnce(&mut Value)) {
        if !self.lock().update(key, namespace, name, f) {
            let at = namespace.map_or_else(|| name.to_string(), |ns| format!("{ns}/{name}"));
            panic!("FakeApi: no {}.{} {at} in the store", key.1, key.0);
        }
    }

    /// Finishes a pod as its kubelet would: phase "Succeeded" for exit code 0, else "Failed", and every container
    /// (usually one) terminated with that exit code and termination `message`. Panics if there is no such pod.
    pub fn finish_pod(&self, namespace: &str, name: &str, exit_code: i32, message: &str) {
        let phase = if exit_code == 0 { "Succeeded" } else { "Failed" };
        let mut terminated = json!({
            "exitCode": exit_code,
            "reason": if exit_code == 0 { "Completed" } else { "Error" },
            "finishedAt": store::now(),
        });
        if !message.is_empty() {
            terminated["message"] = json!(message);
        }
        self.set_pod_state(namespace, name, phase, json!({"terminated": terminated}), false);
    }

    /// Sets a pod's phase as its kubelet would, with matching container states: "Pending" (waiting), "Running"
    /// (running and ready), "Succeeded" or "Failed" (as [`FakeApi::finish_pod`] with exit code 0 or 1 and no
    /// message); any other phase is set alone. Panics if there is no such pod.
    pub fn set_pod_phase(&self, namespace: &str, name: &str, phase: &str) {
        match phase {
            "Succeeded" => self.finish_pod(namespace, name, 0, ""),
            "Failed" => self.finish_pod(namespace, name, 1, ""),
            "Running" => {
                let state = json!({"running": {"startedAt": store::now()}});
                self.set_pod_state(namespace, name, phase, state, true);
            }
            "Pending" => {
                let state = json!({"waiting": {"reason": "ContainerCreating"}});
                self.set_pod_state(namespace, name, phase, state, false);
            }
            _ => {
                let key = key_of::<k8s_openapi::api::core::v1::Pod>();
                self.update(&key, Some(namespace), name, |pod| pod["status"]["phase"] = json!(phase));
            }
        }
    }

    fn set_pod_state(&self, namespace: &str, name: &str, phase: &str, state: Value, ready: bool) {
        let key = key_of::<k8s_openapi::api::core::v1::Pod>();
        self.update(&key, Some(namespace), name, |pod| {
            let mut containers: Vec<(Value, Value)> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| (c["name"].clone(), c.get("image").cloned().unwrap_or_else(|| json!(""))))
                .collect();
            if containers.is_empty() {
                containers.push((json!("main"), json!("")));
            }
            let statuses: Vec<Value> = containers
                .into_iter()
                .map(|(name, image)| {
                    json!({
                        "name": name,
                        "image": image,
                        "imageID": "",
                        "ready": ready,
                        "started": ready,
                        "restartCount": 0,
                        "state": state,
                    })
                })
                .collect();
            if !pod["status"].is_object() {
                pod["status"] = json!({});
            }
            let status = &mut pod["status"];
            status["phase"] = json!(phase);
            status["containerStatuses"] = json!(statuses);
            status["conditions"] = json!([{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": store::now(),
            }]);
            if status.get("startTime").is_none() && phase != "Pending" {
                status["startTime"] = json!(store::now());
            }
        });
    }

    /// Every request the clients sent, in order: method and path with query (e.g. `/api/v1/pods?&limit=5`).
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.lock().requests()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        self.lock().clear_requests();
    }

    /// Makes the next `count` requests with this method whose path and query contain `path_contains` fail with HTTP
    /// `code` and a `Status` body (so kube returns `kube::Error::Api` with that code). Failed requests are recorded.
    ///
    /// Panics unless `code` is an HTTP error code (400 to 599).
    pub fn fail_next(&self, method: Method, path_contains: &str, code: u16, count: usize) {
        assert!(
            (400..=599).contains(&code),
            "FakeApi::fail_next: {code} is not an HTTP error code"
        );
        self.lock().fail_next(method, path_contains, code, count);
    }
}
