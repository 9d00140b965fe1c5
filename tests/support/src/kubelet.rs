//! A node agent that plays the kubelet for one Node object, for end-to-end
//! runs against a real API server where no kubelet can run.
//!
//! It watches the pods bound to its node. For each, it does what a kubelet
//! would, with files standing in for mounts: hostPath volumes become
//! directories under the node's root (the runtime socket's hostPath is the
//! node's private containerd socket), ConfigMap, Secret and downward-API
//! volumes become files written from the API, an emptyDir a fresh directory. It runs
//! the container's command, the real binary it names, with every mount path
//! (and every file of the image it was given, such as a policy baked into a
//! custom image) in the arguments and environment rewritten to its local
//! path, and
//! the termination-message file handed over through
//! `SCOUR_TERMINATION_LOG`. Then it writes the pod's status back: Running,
//! then Succeeded or Failed with the exit code and the termination message,
//! as a kubelet reports them. A pod deleted while it runs is stopped and its
//! deletion finished, as a kubelet does.
//!
//! It also serves the kubelet's container-log API over HTTPS and posts its
//! address and port in the Node's status, so the API server's
//! `pods/NAME/log` (and `kubectl logs`) reads a container's output from it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, KeyToPath,
    Pod, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Kubernetes keeps at most this much of a termination message.
const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// What stands in for one node.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// The Node object's name.
    pub node: String,
    /// Where this node's hostPaths, volumes and logs live.
    pub root: PathBuf,
    /// hostPath → local path; other hostPaths live under `root/host`.
    pub host_paths: BTreeMap<String, PathBuf>,
    /// Files of the container image → the local files that stand in for
    /// them: the container's command, and any file its arguments name (a
    /// policy baked into a custom image, for `scour.policy.path`).
    pub binaries: BTreeMap<String, PathBuf>,
    /// Environment the node adds to every container (what the image or
    /// the node's network would give it).
    pub env: Vec<(String, String)>,
}

/// One finished container, as the agent saw it.
#[derive(Debug, Clone)]
pub struct Ran {
    pub pod: String,
    pub exit: i32,
    /// stdout and stderr, as a container's log holds them.
    pub log: PathBuf,
}

/// Container logs by (namespace, pod), as the kubelet API serves them.
type Logs = Arc<Mutex<HashMap<(String, String), PathBuf>>>;

pub struct NodeAgent {
    pub setup: NodeSetup,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    ran: Arc<Mutex<Vec<Ran>>>,
}

impl NodeAgent {
    /// Starts serving the kubelet API, posts the node's address, and
    /// watches the pods bound to `setup.node`, as `client` (an identity
    /// allowed to read ConfigMaps and write pod and node status).
    pub async fn start(client: Client, setup: NodeSetup) -> Self {
        let cancel = CancellationToken::new();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let logs: Logs = Arc::default();
        let port = serve_kubelet_api(logs.clone(), cancel.clone())
            .await
            .expect("the node agent's kubelet API listens");
        post_node_status(&client, &setup.node, port)
            .await
            .expect("the node agent posts its node's address");
        let agent = Agent {
            client,
            setup: setup.clone(),
            ran: ran.clone(),
            logs,
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(agent.run());
        Self {
            setup,
            cancel,
            task: Some(task),
            ran,
        }
    }

    /// The containers this agent ran to the end, in order.
    pub fn ran(&self) -> Vec<Ran> {
        self.ran.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the agent and every container it runs.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Clone)]
struct Agent {
    client: Client,
    setup: NodeSetup,
    ran: Arc<Mutex<Vec<Ran>>>,
    logs: Logs,
    cancel: CancellationToken,
}

impl Agent {
    async fn run(self) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.setup.node));
        let mut stream = std::pin::pin!(watcher(pods, config).default_backoff().applied_objects());
        let mut started: HashSet<String> = HashSet::new();
        let mut running: HashMap<String, CancellationToken> = HashMap::new();
        let mut tasks = Vec::new();
        loop {
            let pod = tokio::select! {
                _ = self.cancel.cancelled() => break,
                next = stream.next() => match next {
                    Some(Ok(pod)) => pod,
                    Some(Err(e)) => {
                        eprintln!("node agent {}: watching pods: {e}", self.setup.node);
                        continue;
                    }
                    None => break,
                },
            };
            let uid = pod.uid().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            let terminal = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
            if pod.metadata.deletion_timestamp.is_some() {
                match running.remove(&uid) {
                    // Its container stops; then the deletion is finished.
                    Some(stop) => stop.cancel(),
                    None if !terminal || !started.contains(&uid) => {
                        let _ = self.finish_deletion(&pod).await;
                    }
                    None => {}
                }
                continue;
            }
            if terminal || !started.insert(uid.clone()) {
                continue;
            }
            let stop = self.cancel.child_token();
            running.insert(uid, stop.clone());
            let agent = self.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = agent.run_pod(&pod, stop).await {
                    eprintln!("node agent {}: pod {}: {e}", agent.setup.node, pod.name_any());
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Runs a pod's only container to the end and reports it.
    async fn run_pod(&self, pod: &Pod, stop: CancellationToken) -> Result<(), String> {
        let name = pod.name_any();
        let spec = pod.spec.clone().ok_or("the pod has no spec")?;
        let container = spec.containers.first().cloned().ok_or("the pod has no container")?;
        let dir = self.setup.root.join("pods").join(pod.uid().unwrap_or_default());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mounts = self
            .mount(pod, &container, spec.volumes.as_deref().unwrap_or_default(), &dir)
            .await?;
        let termination = dir.join("termination-log");
        std::fs::write(&termination, "").map_err(|e| e.to_string())?;
        let command = container.command.clone().unwrap_or_default();
        let program = command.first().ok_or("the container has no command")?;
        let binary = self
            .setup
            .binaries
            .get(program)
            .cloned()
            .ok_or_else(|| format!("no local binary stands in for {program}"))?;
        let rewrite = |s: &str| mounts.rewrite(s);
        let args: Vec<String> = command[1..]
            .iter()
            .chain(container.args.iter().flatten())
            .map(|a| rewrite(a))
            .collect();
        let log = dir.join("container.log");
        let output = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let errors = output.try_clone().map_err(|e| e.to_string())?;
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((pod.namespace().unwrap_or_default(), name.clone()), log.clone());
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .env("SCOUR_TERMINATION_LOG", &termination)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .kill_on_drop(true);
        for e in container.env.iter().flatten() {
            let value = match (&e.value, e.value_from.as_ref().and_then(|v| v.field_ref.as_ref())) {
                (Some(v), _) => rewrite(v),
                (None, Some(field)) => field_value(pod, &field.field_path).unwrap_or_default(),
                (None, None) => String::new(),
            };
            cmd.env(&e.name, value);
        }
        for (k, v) in &self.setup.env {
            cmd.env(k, v);
        }
        let started_at = Timestamp::now();
        let mut child = cmd.spawn().map_err(|e| format!("starting {}: {e}", binary.display()))?;
        self.write_status(
            &name,
            &container.name,
            "Running",
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(started_at)),
                }),
                ..Default::default()
            },
        )
        .await?;
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| e.to_string())?,
            _ = stop.cancelled() => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                // Deleted while running: the kubelet finishes the deletion.
                return self.finish_deletion(pod).await;
            }
        };
        let exit = status.code().unwrap_or(128 + 9);
        let mut message = std::fs::read_to_string(&termination).unwrap_or_default();
        if message.len() > TERMINATION_MESSAGE_LIMIT {
            let mut cut = TERMINATION_MESSAGE_LIMIT;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let terminated = ContainerStateTerminated {
            exit_code: exit,
            reason: Some(if exit == 0 { "Completed" } else { "Error" }.into()),
            message: (!message.is_empty()).then_some(message),
            started_at: Some(Time(started_at)),
            finished_at: Some(Time(Timestamp::now())),
            ..Default::default()
        };
        let phase = if exit == 0 { "Succeeded" } else { "Failed" };
        self.write_status(
            &name,
            &container.name,
            phase,
            ContainerState {
                terminated: Some(terminated),
                ..Default::default()
            },
        )
        .await?;
        self.ran
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Ran { pod: name, exit, log });
        Ok(())
    }

    /// Makes each volume the container mounts; returns mount path → local
    /// directory or file.
    async fn mount(&self, pod: &Pod, container: &Container, volumes: &[Volume], dir: &Path) -> Result<Mounts, String> {
        let ns = pod.namespace().unwrap_or_default();
        let mut local: HashMap<String, PathBuf> = HashMap::new();
        for v in volumes {
            let path = if let Some(host) = &v.host_path {
                match self.setup.host_paths.get(&host.path) {
                    Some(p) => p.clone(),
                    None => {
                        let p = self.setup.root.join("host").join(host.path.trim_start_matches('/'));
                        if host.type_.as_deref() == Some("DirectoryOrCreate") {
                            std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                        }
                        p
                    }
                }
            } else if let Some(cm) = &v.config_map {
                let p = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                let object = api
                    .get(&cm.name)
                    .await
                    .map_err(|e| format!("ConfigMap {} for volume {}: {e}", cm.name, v.name))?;
                let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                for (k, value) in object.data.clone().unwrap_or_default() {
                    files.insert(k, value.into_bytes());
                }
                for (k, value) in object.binary_data.clone().unwrap_or_default() {
                    files.insert(k, value.0);
                }
                write_items(&p, &files, cm.items.as_deref(), &format!("ConfigMap {}", cm.name))?;
                p
            } else if let Some(secret) = &v.secret {
                let p = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                let name = secret.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let object = api
                    .get(&name)
                    .await
                    .map_err(|e| format!("Secret {name} for volume {}: {e}", v.name))?;
                let files: BTreeMap<String, Vec<u8>> = object
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                write_items(&p, &files, secret.items.as_deref(), &format!("Secret {name}"))?;
                p
            } else if let Some(downward) = &v.downward_api {
                let p = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                for item in downward.items.iter().flatten() {
                    let field = item.field_ref.as_ref().ok_or("a downward-API item without fieldRef")?;
                    let value = field_value(pod, &field.field_path)
                        .ok_or_else(|| format!("no value for {}", field.field_path))?;
                    std::fs::write(p.join(&item.path), value).map_err(|e| e.to_string())?;
                }
                p
            } else if v.empty_dir.is_some() {
                let p = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                p
            } else {
                return Err(format!("volume {}: a kind this agent does not provide", v.name));
            };
            local.insert(v.name.clone(), path);
        }
        // The container's view: each mount path a symlink to its volume,
        // under a root of its own; the directories above them are real.
        let rootfs = dir.join("rootfs");
        let mut mounts = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let base = local
                .get(&m.name)
                .ok_or_else(|| format!("mount of unknown volume {}", m.name))?;
            let target = match &m.sub_path {
                Some(sub) if !sub.is_empty() => base.join(sub),
                _ => base.clone(),
            };
            let link = rootfs.join(m.mount_path.trim_start_matches('/'));
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::os::unix::fs::symlink(&target, &link).map_err(|e| format!("mounting {}: {e}", m.mount_path))?;
            mounts.push(m.mount_path.clone());
        }
        // The image's own files, where no mount hides them.
        for (path, local) in &self.setup.binaries {
            let link = rootfs.join(path.trim_start_matches('/'));
            if link.symlink_metadata().is_ok() {
                continue;
            }
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::os::unix::fs::symlink(local, &link).map_err(|e| format!("placing {path}: {e}"))?;
            mounts.push(path.clone());
        }
        Ok(Mounts { rootfs, paths: mounts })
    }

    async fn write_status(
        &self,
        name: &str,
        container: &str,
        phase: &str,
        state: ContainerState,
    ) -> Result<(), String> {
        let status = serde_json::json!({
            "status": {
                "phase": phase,
                "containerStatuses": [ContainerStatus {
                    name: container.into(),
                    image: "scour".into(),
                    image_id: String::new(),
                    ready: phase == "Running",
                    restart_count: 0,
                    started: Some(phase == "Running"),
                    state: Some(state),
                    ..Default::default()
                }],
            }
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), super::cluster::NS);
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map(|_| ())
            .map_err(|e| format!("writing the status of pod {name}: {e}"))
    }

    /// What a kubelet does once a deleted pod's containers are gone.
    async fn finish_deletion(&self, pod: &Pod) -> Result<(), String> {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(pod.namespace().unwrap_or_default(), pod.name_any()));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        match api
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("finishing the deletion of pod {}: {e}", pod.name_any())),
        }
    }
}

/// Serves `GET /containerLogs/{namespace}/{pod}/{container}` (with
/// `tailLines` and `limitBytes`) over HTTPS on a free loopback port, with a
/// self-signed certificate: an API server without
/// `--kubelet-certificate-authority` does not check it. Returns the port.
async fn serve_kubelet_api(logs: Logs, cancel: CancellationToken) -> std::io::Result<u16> {
    use tokio_rustls::rustls;
    let other = |e: String| std::io::Error::other(e);
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).map_err(|e| other(e.to_string()))?;
    let cert = rustls::pki_types::CertificateDer::from(key.cert.der().to_vec());
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| other(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .map_err(|e| other(e.to_string()))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let (acceptor, logs) = (acceptor.clone(), logs.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request| {
                    let logs = logs.clone();
                    async move { Ok::<_, std::convert::Infallible>(container_log(&logs, &request)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(port)
}

/// A container's log, as the kubelet answers `/containerLogs/…`.
fn container_log<B>(logs: &Logs, request: &http::Request<B>) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let respond = |code: u16, body: Vec<u8>| {
        http::Response::builder()
            .status(code)
            .header("content-type", "text/plain")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("a response")
    };
    let parts: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, _container] = parts[..] else {
        return respond(404, b"not found".to_vec());
    };
    let path = logs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(namespace.to_owned(), pod.to_owned()))
        .cloned();
    let Some(text) = path.and_then(|p| std::fs::read(p).ok()) else {
        return respond(404, format!("no log for pod {namespace}/{pod}").into_bytes());
    };
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut text = text;
    if let Some(n) = query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        text = lines[lines.len().saturating_sub(n)..].concat();
    }
    if let Some(n) = query.get("limitBytes").and_then(|n| n.parse::<usize>().ok()) {
        text.truncate(n);
    }
    respond(200, text)
}

/// What a kubelet posts in its Node's status that the API server needs to
/// reach it: an address and the kubelet's port.
async fn post_node_status(client: &Client, node: &str, port: u16) -> Result<(), kube::Error> {
    let status = serde_json::json!({
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }
    });
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map(|_| ())
}

/// A container's mounts and image files: symlinks under `rootfs` at each
/// path.
struct Mounts {
    rootfs: PathBuf,
    paths: Vec<String>,
}

impl Mounts {
    /// An argument or environment value as the container's process must
    /// see it here: an absolute path inside a mount or an image file, or
    /// above one, is moved under `rootfs`, after a `--flag=` and a
    /// `unix://` if it has them.
    fn rewrite(&self, s: &str) -> String {
        let (head, value) = match s.split_once('=') {
            Some((flag, v)) if flag.starts_with('-') => (format!("{flag}="), v),
            _ => (String::new(), s),
        };
        let (scheme, path) = match value.strip_prefix("unix://") {
            Some(p) => ("unix://", p),
            None => ("", value),
        };
        let under = |outer: &str, inner: &str| {
            inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
        };
        let ours = path.starts_with('/') && path != "/" && self.paths.iter().any(|m| under(m, path) || under(path, m));
        if ours {
            format!("{head}{scheme}{}{path}", self.rootfs.display())
        } else {
            s.to_owned()
        }
    }
}

/// A downward-API field of the pod.
/// A ConfigMap's or Secret's keys as files: `items` (key → path), or every key.
fn write_items(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    what: &str,
) -> Result<(), String> {
    let items: Vec<(String, String)> = match items {
        Some(items) => items.iter().map(|i| (i.key.clone(), i.path.clone())).collect(),
        None => files.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, rel) in items {
        let bytes = files.get(&key).ok_or_else(|| format!("{what} has no key {key}"))?;
        std::fs::write(dir.join(rel), bytes).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn field_value(pod: &Pod, path: &str) -> Option<String> {
    match path {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => pod.metadata.namespace.clone(),
        "metadata.uid" => pod.metadata.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        _ => {
            let key = path
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))?;
            pod.metadata.annotations.as_ref()?.get(key).cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_and_above_mounts_are_moved_under_the_root() {
        let mounts = Mounts {
            rootfs: PathBuf::from("/tmp/pod/rootfs"),
            paths: vec![
                "/etc/scour/config".into(),
                "/etc/scour/exclusions/user/excluded".into(),
                "/run/cri/cri.sock".into(),
                "/var/lib/scour".into(),
            ],
        };
        for (arg, seen) in [
            (
                "--config=/etc/scour/config/controller_manager_config.yaml",
                "--config=/tmp/pod/rootfs/etc/scour/config/controller_manager_config.yaml",
            ),
            (
                "--runtime-endpoint=unix:///run/cri/cri.sock",
                "--runtime-endpoint=unix:///tmp/pod/rootfs/run/cri/cri.sock",
            ),
            (
                "--exclusions-dir=/etc/scour/exclusions/user",
                "--exclusions-dir=/tmp/pod/rootfs/etc/scour/exclusions/user",
            ),
            ("/var/lib/scour/trivy", "/tmp/pod/rootfs/var/lib/scour/trivy"),
            ("--state-dir=/var/lib/scourge", "--state-dir=/var/lib/scourge"),
            ("/usr/local/bin/trivy", "/usr/local/bin/trivy"),
            ("--once", "--once"),
            ("/", "/"),
        ] {
            assert_eq!(mounts.rewrite(arg), seen, "{arg}");
        }
    }
}
