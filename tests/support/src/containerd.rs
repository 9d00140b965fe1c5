//! A private containerd 1.6 for integration tests: its own root, state,
//! socket and runc root under a temp dir (a tmpfs), CRI v1 on
//! `unix://DIR/containerd.sock`, a self-built pause image as the sandbox
//! image, hostNetwork pods (no CNI), and a teardown that leaves nothing
//! behind — also after a test panicked or containerd was killed.
//!
//! It follows the containerd fact sheet of the project notes (`containerd.md`):
//! the config, the readiness rule, what leaks outside the instance dir.
//!
//! # Sync and async
//!
//! [`PrivateContainerd::start`], [`PrivateContainerd::import`] and `Drop` are
//! blocking and work from plain `#[test]`s and from `#[tokio::test]`s alike
//! (their CRI calls run on a helper thread with its own runtime). The pod and
//! container calls are `async`, for `#[tokio::test]`; a plain `#[test]` wraps
//! them in [`block_on`]. Each async call opens its own connection, so a
//! fixture can be used from any runtime.
//!
//! ```no_run
//! use scour_testkit::containerd::{PrivateContainerd, require_containerd};
//! # async fn example() {
//! if !require_containerd() {
//!     return;
//! }
//! let ctd = PrivateContainerd::start().unwrap();
//! let pod = ctd.run_pod("web").await.unwrap();
//! let id = ctd.create_container(&pod, "localhost/test/pause:1", "app", true).await.unwrap();
//! let cri = ctd.cri_client().await.unwrap();
//! assert!(cri.list_containers().await.unwrap().iter().any(|c| c.id == id));
//! let footprint = ctd.footprint();
//! drop(ctd);
//! assert_eq!(footprint.leftovers(), Vec::<String>::new());
//! # }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::images::{self, BuiltImage, OciLayout, TestImage};

/// The sandbox (pause) image every instance imports at start.
pub const SANDBOX_IMAGE: &str = "localhost/test/pause:1";
/// The containerd namespace CRI uses.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The Kubernetes namespace of pods made by [`PrivateContainerd::run_pod`].
pub const POD_NAMESPACE: &str = "scour-test";
/// Where containerd 1.6 puts shim sockets, whatever its state dir.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// How long [`PrivateContainerd::start`] waits for CRI to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of each CRI call made by the fixture.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of each CRI call of the graceful part of the teardown.
const TEARDOWN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the teardown waits for killed processes to go.
const KILL_WAIT: Duration = Duration::from_secs(5);

const TOOLS: [&str; 4] = ["containerd", "ctr", "runc", "containerd-shim-runc-v2"];

// ---------------------------------------------------------------- gate

/// True when the private-containerd tests can run: root, with `containerd`,
/// `ctr`, `runc` and `containerd-shim-runc-v2` on `PATH`.
///
/// Otherwise, when `CI` is set (and not empty, `false` or `0`) it panics —
/// in CI these tests must run; elsewhere it writes a `SKIPPED:` line straight
/// to stderr (not captured by libtest) and returns false.
pub fn require_containerd() -> bool {
    let mut missing: Vec<&str> = Vec::new();
    if !is_root() {
        missing.push("root");
    }
    missing.extend(TOOLS.iter().copied().filter(|tool| find_on_path(tool).is_none()));
    missing.is_empty()
        || crate::gate::skip(&format!(
            "needs root and containerd/ctr/runc (run just setup as root) [missing: {}]",
            missing.join(", ")
        ))
}

fn is_root() -> bool {
    // The effective uid, the second field of `Uid:`.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    crate::gate::on_path(tool)
}

// ---------------------------------------------------------------- errors

/// A fixture failure: a message with context, and the gRPC code when CRI
/// answered with an error.
#[derive(Debug, Clone)]
pub struct Error {
    message: String,
    code: Option<tonic::Code>,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
        }
    }

    fn io(what: impl fmt::Display, e: io::Error) -> Self {
        Self::new(format!("{what}: {e}"))
    }

    fn status(call: &str, status: &tonic::Status) -> Self {
        Self {
            message: format!("CRI {call} failed: {}: {}", status.code(), status.message()),
            code: Some(status.code()),
        }
    }

    /// The gRPC code when CRI answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::other(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------- runtime helper

/// Runs `future` to completion on a fresh current-thread tokio runtime on a
/// helper thread, so it works both inside and outside a tokio runtime. For
/// calling the fixture's async methods from a plain `#[test]`.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    match run_on_helper_thread(future) {
        Ok(output) => output,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run_on_helper_thread<F>(future: F) -> thread::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    thread::scope(|scope| {
        let spawned = thread::Builder::new()
            .name("private-containerd".into())
            .spawn_scoped(scope, move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a tokio runtime")
                    .block_on(future)
            });
        match spawned {
            Ok(handle) => handle.join(),
            Err(e) => Err(Box::new(format!("spawning a helper thread: {e}")) as Box<dyn std::any::Any + Send>),
        }
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

async fn timed<T>(
    call: &'static str,
    limit: Duration,
    fut: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Error::status(call, &status)),
        Err(_) => Err(Error::new(format!("CRI {call} did not answer within {limit:?}"))),
    }
}

async fn channel(socket: &Path, limit: Duration) -> Result<Channel> {
    scour::cri::connect_channel(socket, limit)
        .await
        .map_err(|e| Error::new(e.to_string()))
}

// ---------------------------------------------------------------- the fixture

/// A hostNetwork pod sandbox made by [`PrivateContainerd::run_pod`]. `config`
/// is passed again to [`PrivateContainerd::create_container`].
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub name: String,
    pub config: cri::PodSandboxConfig,
}

/// A private containerd; see the module docs. Dropping it tears everything
/// down (see [`Footprint::leftovers`] to check).
pub struct PrivateContainerd {
    dir: PathBuf,
    tmpfs: bool,
    /// None once killed and reaped.
    child: Option<Child>,
    pid: u32,
    /// Sandboxes and containers made through the fixture (namespace k8s.io).
    ids: Mutex<BTreeSet<String>>,
    imports: AtomicU64,
    /// containerd's `--log-level`, when not the config's `info`.
    log_level: Option<String>,
}

impl fmt::Debug for PrivateContainerd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateContainerd")
            .field("dir", &self.dir)
            .field("pid", &self.pid)
            .field("tmpfs", &self.tmpfs)
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl PrivateContainerd {
    /// An instance on `dir` with no process yet; dropping it tears down
    /// whatever is there.
    fn unstarted(dir: PathBuf) -> Self {
        Self {
            dir,
            tmpfs: false,
            child: None,
            pid: 0,
            ids: Mutex::new(BTreeSet::new()),
            imports: AtomicU64::new(0),
            log_level: None,
        }
    }

    /// Creates `/tmp/scour-ctd-<pid>-<n>` (a tmpfs when root), writes the
    /// config, spawns containerd in its own process group (log in
    /// `DIR/containerd.log`), waits until CRI answers `Version` and
    /// `ListImages` ([`READY_TIMEOUT`]), and imports [`SANDBOX_IMAGE`].
    /// On failure everything made so far is torn down again.
    pub fn start() -> Result<Self> {
        Self::start_logging(None)
    }

    /// [`Self::start`] with containerd's `--log-level` set, e.g. `trace`:
    /// at trace level its CRI plugin logs every call it serves (ImageStatus,
    /// ListContainers with the containers it returns, RemoveImage,
    /// CreateContainer), with nanosecond timestamps, in `DIR/containerd.log`.
    pub fn start_with_log_level(level: &str) -> Result<Self> {
        Self::start_logging(Some(level))
    }

    fn start_logging(level: Option<&str>) -> Result<Self> {
        reap_orphans();
        note_new_cgroup_parents();
        let mut ctd = Self::unstarted(make_instance_dir()?);
        ctd.log_level = level.map(str::to_owned);
        // From here on, an early return drops `ctd`, which cleans up.
        ctd.prepare_dir()?;
        ctd.spawn()?;
        ctd.wait_ready()?;
        ctd.import_sandbox_image()?;
        Ok(ctd)
    }

    fn prepare_dir(&mut self) -> Result<()> {
        if is_root() {
            match nix::mount::mount(
                Some("tmpfs"),
                &self.dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("size=4g,mode=0755"),
            ) {
                Ok(()) => self.tmpfs = true,
                Err(e) => warn(
                    &self.dir,
                    &format!("no tmpfs on the instance dir ({e}); using /tmp as is"),
                ),
            }
        }
        for sub in ["root", "state", "cni/conf", "runc", "opt", "pods"] {
            let path = self.dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        }
        let config = config_toml(&self.dir);
        let path = self.config_path();
        fs::write(&path, config).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    fn spawn(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let log = fs::File::create(&log_path).map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(self.config_path());
        if let Some(level) = &self.log_level {
            cmd.args(["--log-level", level]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("spawning containerd", e))?;
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket();
        let Some(child) = self.child.as_mut() else {
            return Err(Error::new("containerd is not running"));
        };
        let started = Instant::now();
        let outcome = run_on_helper_thread(async move {
            let mut last: String;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("containerd exited during start-up ({status})"));
                }
                match probe(&socket).await {
                    Ok(()) => return Ok(()),
                    Err(Probe::Retry(why)) => last = why,
                    Err(Probe::Fatal(why)) => return Err(why),
                }
                if started.elapsed() >= READY_TIMEOUT {
                    return Err(format!("CRI not ready within {READY_TIMEOUT:?}; last error: {last}"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let result = match outcome {
            Ok(result) => result,
            Err(panic) => Err(panic_message(&*panic)),
        };
        result.map_err(|why| {
            Error::new(format!(
                "private containerd in {}: {why}\n--- tail of containerd.log ---\n{}",
                self.dir.display(),
                self.log_tail(30)
            ))
        })
    }

    fn import_sandbox_image(&self) -> Result<()> {
        static PAUSE_TAR: OnceLock<Vec<u8>> = OnceLock::new();
        let tar = PAUSE_TAR.get_or_init(|| OciLayout::new().image(sandbox_test_image()).digest_refs(true).tar());
        let path = self.dir.join("pause.tar");
        fs::write(&path, tar).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        let result = self.import(&path);
        let _ = fs::remove_file(&path);
        result
    }

    /// `unix://DIR/containerd.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// containerd's root, `DIR/root`: what a node keeps at
    /// `/var/lib/containerd`, on the instance's tmpfs.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `DIR/containerd.sock`.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The instance dir (gone after drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's PID (also after [`Self::kill_containerd`]).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `DIR/containerd.log`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The last `lines` lines of `containerd.log`.
    pub fn log_tail(&self, lines: usize) -> String {
        match fs::read(self.log_path()) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.log_path().display()),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Whether containerd is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) => {
                self.child = None;
                false
            }
            Some(Err(_)) => true,
            None => false,
        }
    }

    /// SIGKILLs containerd (and anything else still in its process group)
    /// and reaps it. Shims and containers survive, as on a real node; the
    /// teardown still removes them.
    pub fn kill_containerd(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The group holds containerd and short-lived helpers it spawned;
            // shims make their own groups.
            let _ = nix::sys::signal::killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = child.kill();
            if let Err(e) = child.wait() {
                warn(&self.dir, &format!("waiting for containerd (pid {}): {e}", self.pid));
            }
        }
    }

    // ------------------------------------------------------------ images

    /// `ctr -a SOCK -n k8s.io images import TAR`: a docker archive or an OCI
    /// layout tar. The error carries ctr's output.
    pub fn import(&self, tar: &Path) -> Result<()> {
        let output = self
            .ctr()
            .args(["images", "import"])
            .arg(tar)
            .output()
            .map_err(|e| Error::io("running ctr", e))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "ctr images import {} failed ({}): {}{}",
                tar.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end(),
                String::from_utf8_lossy(&output.stdout).trim_end(),
            )))
        }
    }

    /// Writes `images` as one OCI bundle with `repo@sha256:` entries (so CRI
    /// reports repoDigests) into the instance dir and imports it.
    pub fn import_images(&self, images: impl IntoIterator<Item = TestImage>) -> Result<Vec<BuiltImage>> {
        let layout = OciLayout::new().images(images).digest_refs(true);
        let path = self.scratch_path("bundle.tar");
        let built = layout
            .write_tar(&path)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        let result = self.import(&path);
        let _ = fs::remove_file(&path);
        result.map(|()| built)
    }

    /// Writes `image` as a docker archive into the instance dir and imports it.
    pub fn import_docker_archive(&self, image: &TestImage) -> Result<BuiltImage> {
        let path = self.scratch_path("docker.tar");
        let built = images::write_docker_archive(image, &path)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        let result = self.import(&path);
        let _ = fs::remove_file(&path);
        result.map(|()| built)
    }

    /// The file of a `sha256:<hex>` blob in this instance's content store.
    pub fn content_blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join("root/io.containerd.content.v1.content/blobs/sha256")
            .join(hex)
    }

    fn scratch_path(&self, name: &str) -> PathBuf {
        let n = self.imports.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("import-{n}-{name}"))
    }

    /// A `ctr` command for this instance and namespace k8s.io.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_SNAPSHOTTER")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", CRI_NAMESPACE])
            .stdin(Stdio::null());
        cmd
    }

    // ------------------------------------------------------------ CRI clients

    /// scour's own CRI client for this instance.
    pub async fn cri_client(&self) -> Result<scour::cri::CriClient> {
        scour::cri::CriClient::connect(&self.endpoint(), Duration::from_secs(5), CALL_TIMEOUT)
            .await
            .map_err(|e| Error::new(e.to_string()))
    }

    /// A raw CRI RuntimeService client (a new connection).
    pub async fn runtime_client(&self) -> Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(
            channel(&self.socket(), Duration::from_secs(5)).await?,
        ))
    }

    /// A raw CRI ImageService client (a new connection).
    pub async fn image_client(&self) -> Result<ImageServiceClient<Channel>> {
        Ok(ImageServiceClient::new(
            channel(&self.socket(), Duration::from_secs(5)).await?,
        ))
    }

    // ------------------------------------------------------------ pods

    /// The sandbox config [`Self::run_pod`] uses: metadata `{name,
    /// POD_NAMESPACE, uid-<name>, 0}`, hostNetwork, logs under `DIR/pods/`.
    pub fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        let uid = format!("uid-{name}");
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.clone(),
                namespace: POD_NAMESPACE.to_owned(),
                attempt: 0,
            }),
            log_directory: self
                .dir
                .join("pods")
                .join(format!("{POD_NAMESPACE}_{name}_{uid}"))
                .to_string_lossy()
                .into_owned(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox of a hostNetwork pod named `name` (unique per instance).
    pub async fn run_pod(&self, name: &str) -> Result<Pod> {
        let config = self.pod_config(name);
        fs::create_dir_all(&config.log_directory)
            .map_err(|e| Error::io(format!("creating {}", config.log_directory), e))?;
        let mut rt = self.runtime_client().await?;
        let request = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let response = timed("RunPodSandbox", CALL_TIMEOUT, rt.run_pod_sandbox(request)).await?;
        self.remember(&response.pod_sandbox_id);
        Ok(Pod {
            id: response.pod_sandbox_id,
            name: name.to_owned(),
            config,
        })
    }

    /// CreateContainer `name` from `image` (a tag, a digest ref or an id) in
    /// `pod`, and StartContainer when `start`. A container from an image whose
    /// entrypoint is `/pause` keeps running; any image with an entrypoint or
    /// cmd can be created without being started. Returns the container id.
    pub async fn create_container(&self, pod: &Pod, image: &str, name: &str, start: bool) -> Result<String> {
        let mut rt = self.runtime_client().await?;
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: name.to_owned(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                log_path: format!("{name}.log"),
                ..Default::default()
            }),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = timed("CreateContainer", CALL_TIMEOUT, rt.create_container(request))
            .await?
            .container_id;
        self.remember(&id);
        if start {
            let request = cri::StartContainerRequest {
                container_id: id.clone(),
            };
            timed("StartContainer", CALL_TIMEOUT, rt.start_container(request)).await?;
        }
        Ok(id)
    }

    /// StartContainer of a created container.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let mut rt = self.runtime_client().await?;
        let request = cri::StartContainerRequest {
            container_id: id.to_owned(),
        };
        timed("StartContainer", CALL_TIMEOUT, rt.start_container(request)).await?;
        Ok(())
    }

    /// StopContainer with a 10 s grace period (the pause binary exits on
    /// SIGTERM at once).
    pub async fn stop_container(&self, id: &str) -> Result<()> {
        let mut rt = self.runtime_client().await?;
        let request = cri::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: 10,
        };
        timed("StopContainer", CALL_TIMEOUT, rt.stop_container(request)).await?;
        Ok(())
    }

    /// RemoveContainer (a running container is killed first).
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let mut rt = self.runtime_client().await?;
        let request = cri::RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        timed("RemoveContainer", CALL_TIMEOUT, rt.remove_container(request)).await?;
        Ok(())
    }

    /// StopPodSandbox + RemovePodSandbox (which removes its containers).
    pub async fn remove_pod(&self, pod: &Pod) -> Result<()> {
        let mut rt = self.runtime_client().await?;
        remove_sandbox(&mut rt, &pod.id, CALL_TIMEOUT).await
    }

    fn remember(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(id.to_owned());
        }
    }

    // ------------------------------------------------------------ footprint

    /// Everything that refers to this instance now: dir, socket, PID, the
    /// (namespace, id) of every sandbox and container it knows of, and their
    /// shim sockets. Take it before dropping the fixture, then check
    /// [`Footprint::leftovers`] afterwards.
    pub fn footprint(&self) -> Footprint {
        let ids = self.known_ids();
        let socket = self.socket();
        let mut shim_sockets = recorded_shim_sockets(&self.dir);
        shim_sockets.extend(ids.iter().map(|(ns, id)| shim_socket_path(&socket, ns, id)));
        Footprint {
            dir: self.dir.clone(),
            pid: self.pid,
            ids,
            shim_sockets,
        }
    }

    /// [`Footprint::leftovers`] of [`Self::footprint`]: while the instance
    /// runs, this lists its live parts.
    pub fn leftovers(&self) -> Vec<String> {
        self.footprint().leftovers()
    }

    /// (namespace, id) of every sandbox/container made through the fixture or
    /// found in the instance's state.
    fn known_ids(&self) -> BTreeSet<(String, String)> {
        let mut ids: BTreeSet<(String, String)> = self
            .ids
            .lock()
            .map(|ids| ids.iter().map(|id| (CRI_NAMESPACE.to_owned(), id.clone())).collect())
            .unwrap_or_default();
        for base in [
            self.dir.join("runc"),
            self.dir.join("state/io.containerd.runtime.v2.task"),
        ] {
            for ns in subdirs(&base) {
                for id in subdirs(&base.join(&ns)) {
                    ids.insert((ns.clone(), id));
                }
            }
        }
        for base in ["root", "state"] {
            for kind in ["containers", "sandboxes"] {
                let dir = self.dir.join(base).join("io.containerd.grpc.v1.cri").join(kind);
                for id in subdirs(&dir) {
                    ids.insert((CRI_NAMESPACE.to_owned(), id));
                }
            }
        }
        ids
    }

    // ------------------------------------------------------------ teardown

    /// The teardown of the fact sheet (§8): graceful pod removal while
    /// containerd lives, SIGKILL containerd, `runc delete -f` leftovers,
    /// kill this instance's shims, remove their sockets and the containers'
    /// cgroups, lazily unmount everything under the dir, remove the dir.
    fn teardown(&mut self) {
        let mut ids = self.known_ids();
        let socket = self.socket();

        // 1. Graceful: remove every pod while containerd answers.
        if self.is_running() && socket.exists() {
            let sock = socket.clone();
            match run_on_helper_thread(remove_all_pods(sock)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn(&self.dir, &format!("graceful pod removal: {e}")),
                Err(panic) => warn(
                    &self.dir,
                    &format!("graceful pod removal panicked: {}", panic_message(&*panic)),
                ),
            }
        }
        self.kill_containerd();
        ids.extend(self.known_ids());

        // 2. Crash path: whatever runc still knows.
        self.runc_delete_all();

        // 3. Shims and their sockets.
        let shims: Vec<i32> = processes()
            .into_iter()
            .filter(|p| !p.zombie && is_shim_of(&p.args, &socket))
            .map(|p| p.pid)
            .collect();
        kill_and_wait(&self.dir, &shims, "shim");
        let mut sockets = recorded_shim_sockets(&self.dir);
        sockets.extend(ids.iter().map(|(ns, id)| shim_socket_path(&socket, ns, id)));
        for path in sockets {
            if path.starts_with(SHIM_SOCKET_DIR)
                && let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn(&self.dir, &format!("removing shim socket {}: {e}", path.display()));
            }
        }
        // Helpers of this instance that outlived containerd (runc, ctr, a
        // shim still starting).
        let helpers: Vec<i32> = processes()
            .into_iter()
            .filter(|p| !p.zombie && is_instance_tool(p) && p.args.iter().any(|a| mentions(a, &self.dir)))
            .map(|p| p.pid)
            .collect();
        kill_and_wait(&self.dir, &helpers, "helper process");

        // 4. cgroups of this instance's containers, then the namespace
        //    parents runc made for them, once no instance uses them.
        remove_cgroups(&self.dir, &ids);
        remove_idle_cgroup_parents();

        // 5. Mounts under the dir (deepest first), then the tmpfs on it.
        if let Err(e) = unmount_all_under(&self.dir) {
            warn(&self.dir, &e);
        }

        // 6. The dir.
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn(&self.dir, &format!("removing the instance dir: {e}"));
        }
    }

    fn runc_delete_all(&self) {
        let root = self.dir.join("runc");
        for ns in subdirs(&root) {
            let ns_root = root.join(&ns);
            let mut ids: BTreeSet<String> = subdirs(&ns_root).into_iter().collect();
            match Command::new("runc")
                .arg("--root")
                .arg(&ns_root)
                .args(["list", "-q"])
                .output()
            {
                Ok(out) if out.status.success() => {
                    ids.extend(
                        String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                }
                Ok(out) => warn(
                    &self.dir,
                    &format!("runc list in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim()),
                ),
                Err(e) => warn(&self.dir, &format!("running runc: {e}")),
            }
            for id in ids {
                match Command::new("runc")
                    .arg("--root")
                    .arg(&ns_root)
                    .args(["delete", "-f", &id])
                    .output()
                {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => {
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        if !stderr.contains("does not exist") {
                            warn(&self.dir, &format!("runc delete -f {ns}/{id}: {}", stderr.trim()));
                        }
                    }
                    Err(e) => warn(&self.dir, &format!("running runc: {e}")),
                }
            }
        }
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        // Never panic here: a panic while unwinding aborts the test binary.
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.teardown())) {
            warn(&self.dir, &format!("teardown panicked: {}", panic_message(&*panic)));
        }
    }
}

enum Probe {
    Retry(String),
    Fatal(String),
}

/// One readiness probe: CRI Version and ListImages, 1 s each.
async fn probe(socket: &Path) -> std::result::Result<(), Probe> {
    let limit = Duration::from_secs(1);
    let channel = channel(socket, limit).await.map_err(|e| Probe::Retry(e.to_string()))?;
    let classify = |e: Error| match e.code() {
        None | Some(tonic::Code::Unavailable) => Probe::Retry(e.to_string()),
        Some(tonic::Code::Unknown) if e.message().contains("not initialized yet") => Probe::Retry(e.to_string()),
        Some(_) => Probe::Fatal(e.to_string()),
    };
    let mut rt = RuntimeServiceClient::new(channel.clone());
    timed(
        "Version",
        limit,
        rt.version(cri::VersionRequest { version: "v1".into() }),
    )
    .await
    .map_err(classify)?;
    let mut images = ImageServiceClient::new(channel);
    timed(
        "ListImages",
        limit,
        images.list_images(cri::ListImagesRequest { filter: None }),
    )
    .await
    .map_err(classify)?;
    Ok(())
}

async fn remove_sandbox(rt: &mut RuntimeServiceClient<Channel>, id: &str, limit: Duration) -> Result<()> {
    let stop = cri::StopPodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    timed("StopPodSandbox", limit, rt.stop_pod_sandbox(stop)).await?;
    let remove = cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    timed("RemovePodSandbox", limit, rt.remove_pod_sandbox(remove)).await?;
    Ok(())
}

async fn remove_all_pods(socket: PathBuf) -> Result<()> {
    let mut rt = RuntimeServiceClient::new(channel(&socket, Duration::from_secs(2)).await?);
    let pods = timed(
        "ListPodSandbox",
        TEARDOWN_CALL_TIMEOUT,
        rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
    )
    .await?;
    let mut errors = Vec::new();
    for pod in pods.items {
        if let Err(e) = remove_sandbox(&mut rt, &pod.id, TEARDOWN_CALL_TIMEOUT).await {
            errors.push(format!("{}: {e}", pod.id));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::new(errors.join("; ")))
    }
}

fn sandbox_test_image() -> TestImage {
    images::pause_image(SANDBOX_IMAGE, &images::static_pause_binary())
}

/// The config.toml of an instance under `dir` (fact sheet §1).
pub fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/containerd.sock"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d}/cni/conf"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  Root = "{d}/runc"
  SystemdCgroup = false
"#
    )
}

/// Tears down, once per process, the instances of test processes that died
/// without cleaning up (SIGKILL, abort): `/tmp/scour-ctd-<pid>-<n>` whose
/// process is gone. Only its own containerd, shims, runc and ctr are ended,
/// found by the instance dir in their arguments. Call it before noting the
/// cgroup parents that exist.
fn reap_orphans() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(entries) = fs::read_dir("/tmp") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(owner) = name
                .strip_prefix("scour-ctd-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
                continue;
            }
            let dir = entry.path();
            warn(
                &dir,
                &format!("left behind by process {owner}, which is gone; tearing it down"),
            );
            // Its containers' cgroup parents were made by a fixture too.
            let mut made = cgroup_parents_we_made().lock().unwrap_or_else(|e| e.into_inner());
            made.extend(cgroup_mounts().into_iter().map(|m| m.join(CRI_NAMESPACE)));
            drop(made);
            drop(PrivateContainerd::unstarted(dir));
        }
    });
}

fn make_instance_dir() -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/scour-ctd-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
        }
    }
}

fn warn(dir: &Path, message: &str) {
    let _ = writeln!(io::stderr().lock(), "private containerd {}: {message}", dir.display());
}

// ---------------------------------------------------------------- footprint

/// What refers to one instance (see [`PrivateContainerd::footprint`]); it
/// outlives the fixture so that a test can check the teardown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub dir: PathBuf,
    pub pid: u32,
    /// (containerd namespace, sandbox or container id).
    pub ids: BTreeSet<(String, String)>,
    pub shim_sockets: BTreeSet<PathBuf>,
}

impl Footprint {
    /// Everything still referring to the instance, one line each; empty
    /// after a complete teardown:
    /// - live processes with the dir in their command line (containerd,
    ///   shims, runc, ctr) or in a cgroup of one of the ids;
    /// - mounts at or under the dir, or naming it (overlay options);
    /// - shim sockets in [`SHIM_SOCKET_DIR`];
    /// - cgroups `<cgroup mount>/<namespace>/<id>`;
    /// - the dir itself.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let cgroup_suffixes: Vec<String> = self.ids.iter().map(|(ns, id)| format!("/{ns}/{id}")).collect();
        for p in processes() {
            if p.zombie || p.pid == std::process::id() as i32 {
                continue;
            }
            let cmdline = p.args.join(" ");
            if p.args.iter().any(|a| mentions(a, &self.dir)) {
                found.push(format!("process {}: {cmdline}", p.pid));
            } else if p.pid as u32 == self.pid && self.pid != 0 {
                found.push(format!("process {} (containerd's pid): {cmdline}", p.pid));
            } else if !cgroup_suffixes.is_empty()
                && let Ok(cgroups) = fs::read_to_string(format!("/proc/{}/cgroup", p.pid))
                && cgroups.lines().any(|l| {
                    cgroup_suffixes
                        .iter()
                        .any(|s| l.ends_with(s.as_str()) || l.contains(&format!("{s}/")))
                })
            {
                found.push(format!("process {} in a container cgroup: {cmdline}", p.pid));
            }
        }
        for m in mounts() {
            if m.mount_point == self.dir || m.mount_point.starts_with(&self.dir) || mentions(&m.line, &self.dir) {
                found.push(format!("mount {} ({})", m.mount_point.display(), m.fstype));
            }
        }
        for socket in &self.shim_sockets {
            if socket.symlink_metadata().is_ok() {
                found.push(format!("shim socket {}", socket.display()));
            }
        }
        for mount_point in cgroup_mounts() {
            for (ns, id) in &self.ids {
                let path = mount_point.join(ns).join(id);
                if path.exists() {
                    found.push(format!("cgroup {}", path.display()));
                }
            }
        }
        if self.dir.symlink_metadata().is_ok() {
            found.push(format!("directory {}", self.dir.display()));
        }
        found
    }
}

/// `/run/containerd/s/<sha256("<sock>/<ns>/<id>")>`, where containerd 1.6
/// puts the socket of shim `id`.
pub fn shim_socket_path(socket: &Path, ns: &str, id: &str) -> PathBuf {
    let key = format!("{}/{ns}/{id}", socket.display());
    Path::new(SHIM_SOCKET_DIR).join(format!("{:x}", Sha256::digest(key.as_bytes())))
}

/// The sockets named in `DIR/state/io.containerd.runtime.v2.task/*/*/address`.
fn recorded_shim_sockets(dir: &Path) -> BTreeSet<PathBuf> {
    let base = dir.join("state/io.containerd.runtime.v2.task");
    let mut sockets = BTreeSet::new();
    for ns in subdirs(&base) {
        for id in subdirs(&base.join(&ns)) {
            if let Ok(address) = fs::read_to_string(base.join(&ns).join(&id).join("address")) {
                let address = address.trim();
                let path = address.strip_prefix("unix://").unwrap_or(address);
                if !path.is_empty() {
                    sockets.insert(PathBuf::from(path));
                }
            }
        }
    }
    sockets
}

/// Whether `text` names `dir` or a path under it (and not merely a sibling
/// whose name starts the same, such as `…-1` vs `…-12`).
fn mentions(text: &str, dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    text.match_indices(dir.as_ref()).any(|(i, _)| {
        text[i + dir.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
    })
}

fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

// ---------------------------------------------------------------- /proc

struct Process {
    pid: i32,
    args: Vec<String>,
    comm: String,
    zombie: bool,
}

fn processes() -> Vec<Process> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let (comm, state) = proc_stat(pid)?;
            Some(Process {
                pid,
                args,
                comm,
                zombie: matches!(state, 'Z' | 'X'),
            })
        })
        .collect()
}

/// (comm, state) from `/proc/<pid>/stat`; None when the process is gone.
fn proc_stat(pid: i32) -> Option<(String, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let state = stat.get(close + 1..)?.trim_start().chars().next()?;
    Some((comm, state))
}

fn is_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(_, state)| !matches!(state, 'Z' | 'X'))
}

/// `containerd-shim-runc-v2 … -address <socket> …`.
fn is_shim_of(args: &[String], socket: &Path) -> bool {
    let socket = socket.to_string_lossy();
    args.windows(2).any(|w| w[0] == "-address" && w[1] == socket)
}

/// containerd and the tools it runs (comm is cut to 15 bytes).
fn is_instance_tool(p: &Process) -> bool {
    matches!(p.comm.as_str(), "containerd" | "containerd-shim" | "runc" | "ctr")
}

fn kill_and_wait(dir: &Path, pids: &[i32], what: &str) {
    for &pid in pids {
        if let Err(e) = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL)
            && e != nix::errno::Errno::ESRCH
        {
            warn(dir, &format!("killing {what} {pid}: {e}"));
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    while pids.iter().any(|&pid| is_alive(pid)) {
        if Instant::now() >= deadline {
            let alive: Vec<i32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
            warn(
                dir,
                &format!("{what} {alive:?} still alive {KILL_WAIT:?} after SIGKILL"),
            );
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------- mounts and cgroups

struct MountEntry {
    mount_point: PathBuf,
    fstype: String,
    line: String,
}

fn mounts() -> Vec<MountEntry> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = PathBuf::from(unescape_mount(fields.get(4)?));
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = (*fields.get(dash + 1)?).to_owned();
            Some(MountEntry {
                mount_point,
                fstype,
                line: line.to_owned(),
            })
        })
        .collect()
}

/// Undoes the octal escapes (`\040` etc.) of mountinfo paths.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cgroup_mounts() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .collect()
}

/// `umount -l` every mount at or under `dir`, deepest first, until none is
/// left; an error names what is left after 8 rounds.
pub(crate) fn unmount_all_under(dir: &Path) -> Result<(), String> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let under = || -> Vec<PathBuf> {
        mounts()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&dir))
            .collect()
    };
    let mut last_error = None;
    for _round in 0..8 {
        let mut points = under();
        if points.is_empty() {
            return Ok(());
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points.dedup();
        for point in points {
            if let Err(e) = nix::mount::umount2(&point, MntFlags::MNT_DETACH)
                && e != nix::errno::Errno::EINVAL
                && e != nix::errno::Errno::ENOENT
            {
                last_error = Some(format!("umount -l {}: {e}", point.display()));
            }
        }
    }
    let left = under();
    if left.is_empty() {
        return Ok(());
    }
    Err(format!(
        "mounts remain under {} after 8 rounds of umount -l: {left:?}{}",
        dir.display(),
        last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default()
    ))
}

/// `<cgroup mount>/k8s.io` directories that did not exist before a fixture
/// started: runc creates them as the parents of our containers' cgroups.
fn cgroup_parents_we_made() -> &'static Mutex<BTreeSet<PathBuf>> {
    static MADE: OnceLock<Mutex<BTreeSet<PathBuf>>> = OnceLock::new();
    MADE.get_or_init(|| Mutex::new(BTreeSet::new()))
}

fn note_new_cgroup_parents() {
    let mut made = cgroup_parents_we_made().lock().unwrap_or_else(|e| e.into_inner());
    for mount_point in cgroup_mounts() {
        let parent = mount_point.join(CRI_NAMESPACE);
        if !parent.exists() {
            made.insert(parent);
        }
    }
}

/// Removes the parents noted above. `rmdir` of a cgroup fails while it has
/// children, so one still used by another instance (or by anything else)
/// stays; every teardown tries again (an instance still running may make it
/// anew), so the last one removes it.
fn remove_idle_cgroup_parents() {
    let made = cgroup_parents_we_made().lock().unwrap_or_else(|e| e.into_inner());
    for parent in made.iter() {
        let _ = fs::remove_dir(parent);
    }
}

/// Kills what is left in `<cgroup mount>/<ns>/<id>` (only this instance's
/// containers) and removes those cgroups, children first.
fn remove_cgroups(dir: &Path, ids: &BTreeSet<(String, String)>) {
    let mut cgroups = Vec::new();
    for mount_point in cgroup_mounts() {
        for (ns, id) in ids {
            let path = mount_point.join(ns).join(id);
            if path.is_dir() {
                collect_cgroup_tree(&path, &mut cgroups);
            }
        }
    }
    if cgroups.is_empty() {
        return;
    }
    let mut pids: BTreeSet<i32> = BTreeSet::new();
    for cgroup in &cgroups {
        if let Ok(procs) = fs::read_to_string(cgroup.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    if !pids.is_empty() {
        kill_and_wait(dir, &pids.into_iter().collect::<Vec<_>>(), "container process");
    }
    cgroups.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for cgroup in cgroups {
        // A cgroup can take a moment to become removable after its last
        // process died.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match fs::remove_dir(&cgroup) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    warn(dir, &format!("removing cgroup {}: {e}", cgroup.display()));
                    break;
                }
            }
        }
    }
}

fn collect_cgroup_tree(path: &Path, out: &mut Vec<PathBuf>) {
    out.push(path.to_owned());
    for child in subdirs(path) {
        collect_cgroup_tree(&path.join(child), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_respects_name_boundaries() {
        let dir = Path::new("/tmp/scour-ctd-1-1");
        assert!(mentions("/tmp/scour-ctd-1-1", dir));
        assert!(mentions("/tmp/scour-ctd-1-1/containerd.sock", dir));
        assert!(mentions("lowerdir=/tmp/scour-ctd-1-1/root/x:/y", dir));
        assert!(mentions("--root /tmp/scour-ctd-1-1 x", dir));
        assert!(!mentions("/tmp/scour-ctd-1-12/containerd.sock", dir));
        assert!(!mentions("/tmp/scour-ctd-1-1.old", dir));
        assert!(!mentions("/tmp/other", dir));
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/end\\"), "/end\\");
    }

    #[test]
    fn shim_sockets_hash_socket_namespace_and_id() {
        let path = shim_socket_path(Path::new("/tmp/x/containerd.sock"), "k8s.io", "abc");
        let expected = format!("{:x}", Sha256::digest(b"/tmp/x/containerd.sock/k8s.io/abc"));
        assert_eq!(path, Path::new(SHIM_SOCKET_DIR).join(expected));
    }

    #[test]
    fn shims_are_matched_by_their_address_argument() {
        let args: Vec<String> = [
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "k8s.io",
            "-id",
            "abc",
            "-address",
            "/tmp/d/containerd.sock",
        ]
        .map(String::from)
        .to_vec();
        assert!(is_shim_of(&args, Path::new("/tmp/d/containerd.sock")));
        assert!(!is_shim_of(&args, Path::new("/tmp/d2/containerd.sock")));
    }

    #[test]
    fn config_puts_everything_under_the_dir() {
        let config = config_toml(Path::new("/tmp/D"));
        for needle in [
            "root = \"/tmp/D/root\"",
            "state = \"/tmp/D/state\"",
            "address = \"/tmp/D/containerd.sock\"",
            "Root = \"/tmp/D/runc\"",
            "SystemdCgroup = false",
            "sandbox_image = \"localhost/test/pause:1\"",
            "snapshotter = \"overlayfs\"",
        ] {
            assert!(config.contains(needle), "{needle} missing from\n{config}");
        }
    }
}
