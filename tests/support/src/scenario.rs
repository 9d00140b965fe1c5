//! A node for worker scenarios: a private containerd holding a known set of
//! images, a generated Trivy DB, and a builder that runs the real
//! `scour worker` binary against them.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::containerd::{PrivateContainerd, block_on};
use crate::images::{BuiltImage, TestImage, alpine_like, static_pause_binary};
use crate::trivydb::{Advisory, TrivyDb};

/// The vulnerability DB every scenario scans against (from
/// `notes/trivy.md`): alpine 3.12 has four findings with the default
/// packages, alpine 3.5 and 3.99 have one on musl before the fixed version.
pub fn standard_db() -> TrivyDb {
    TrivyDb::new()
        .advisory(Advisory::new("alpine 3.12", "musl", "CVE-TEST-0001", "HIGH").fixed("1.1.24-r3"))
        .advisory(Advisory::new("alpine 3.12", "busybox", "CVE-TEST-0002", "CRITICAL").fixed("1.31.1-r20"))
        .advisory(Advisory::new("alpine 3.12", "zlib", "CVE-TEST-0003", "MEDIUM"))
        .advisory(Advisory::new("alpine 3.12", "musl", "CVE-TEST-0004", "LOW").fixed("1.1.24-r10"))
        .advisory(Advisory::new("alpine 3.5", "musl", "CVE-TEST-0001", "HIGH").fixed("1.1.15-r9"))
        .advisory(Advisory::new("alpine 3.99", "musl", "CVE-TEST-0001", "HIGH").fixed("1.2.9-r1"))
}

/// Marks an image's content with its role, so images that are otherwise
/// alike get distinct ids.
fn distinct(image: TestImage, role: &str) -> TestImage {
    image.file(&format!("/etc/scour-test-role-{role}"), 0o644, role.as_bytes().to_vec())
}

/// Vulnerable (4 findings) and end-of-life: alpine 3.12.0, default packages.
pub fn vulnerable(tag: &str, role: &str) -> TestImage {
    distinct(alpine_like(tag, "3.12.0", &[]), role)
}

/// No findings, OS not end-of-life: alpine 3.99.1 with musl already fixed.
pub fn clean(tag: &str, role: &str) -> TestImage {
    distinct(alpine_like(tag, "3.99.1", &[("musl", "1.2.9-r1")]), role)
}

/// No findings, but end-of-life: alpine 3.5.2 with musl fixed.
pub fn end_of_life(tag: &str, role: &str) -> TestImage {
    distinct(alpine_like(tag, "3.5.2", &[("musl", "1.1.15-r9")]), role)
}

/// Vulnerable, with `/pause` as its entrypoint so a container can run it.
pub fn runnable_vulnerable(tag: &str, role: &str) -> TestImage {
    vulnerable(tag, role)
        .file("/pause", 0o755, static_pause_binary())
        .entrypoint(&["/pause"])
}

/// A node: a private containerd, a scratch dir with Trivy's cache (DB
/// written), the state dir, and the images imported so far by role.
pub struct TestNode {
    pub ctd: PrivateContainerd,
    pub work: tempfile::TempDir,
    pub images: BTreeMap<String, BuiltImage>,
    pub trivy: PathBuf,
}

impl TestNode {
    /// Starts a node, or returns None when containerd or Trivy is missing
    /// locally (in CI that is a failure).
    pub fn start() -> Option<Self> {
        Self::start_logging(None)
    }

    /// [`Self::start`] with containerd logging at `level` (e.g. `trace`, to
    /// read every CRI call it served from its log; see
    /// [`PrivateContainerd::start_with_log_level`]).
    pub fn start_with_log_level(level: &str) -> Option<Self> {
        Self::start_logging(Some(level))
    }

    fn start_logging(level: Option<&str>) -> Option<Self> {
        if !crate::containerd::require_containerd() {
            return None;
        }
        let trivy = crate::gate::require_trivy()?;
        let ctd = match level {
            Some(level) => PrivateContainerd::start_with_log_level(level),
            None => PrivateContainerd::start(),
        }
        .expect("private containerd");
        let work = tempfile::tempdir().expect("scratch dir");
        standard_db().write(&work.path().join("trivy-cache")).expect("trivy db");
        Some(Self {
            ctd,
            work,
            images: BTreeMap::new(),
            trivy,
        })
    }

    /// Imports images (one OCI bundle, with repo digests) under their roles.
    pub fn import(&mut self, images: Vec<(&str, TestImage)>) {
        let (roles, images): (Vec<&str>, Vec<TestImage>) = images.into_iter().unzip();
        let built = self.ctd.import_images(images).expect("import images");
        for (role, b) in roles.into_iter().zip(built) {
            self.images.insert(role.to_owned(), b);
        }
    }

    /// The id of the image imported as `role`.
    pub fn id(&self, role: &str) -> String {
        self.images
            .get(role)
            .unwrap_or_else(|| panic!("no image with role {role}"))
            .image_id()
    }

    pub fn trivy_cache(&self) -> PathBuf {
        self.work.path().join("trivy-cache")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.work.path().join("state")
    }

    /// Writes an exclusion list file `{"excluded": [...]}` and returns its path.
    pub fn exclusions(&self, name: &str, entries: &[&str]) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, serde_json::json!({ "excluded": entries }).to_string()).unwrap();
        path
    }

    /// Writes a file in the scratch dir and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Ids of the images containerd lists now.
    pub fn image_ids(&self) -> HashSet<String> {
        block_on(async {
            let cri = self.ctd.cri_client().await.expect("cri client");
            cri.list_images().await.expect("list images")
        })
        .into_iter()
        .map(|i| i.id)
        .collect()
    }

    /// The id of the sandbox (pause) image the fixture imports.
    pub fn sandbox_id(&self) -> String {
        block_on(async {
            let cri = self.ctd.cri_client().await.expect("cri client");
            cri.image_status(crate::containerd::SANDBOX_IMAGE)
                .await
                .expect("image status")
        })
        .expect("the pause image is imported")
        .id
    }

    /// Whether the image imported as `role` is still on the node.
    pub fn has(&self, role: &str) -> bool {
        self.image_ids().contains(&self.id(role))
    }

    /// The real Trivy behind a wrapper that counts its `trivy image` runs
    /// (the ones that read an image): the wrapper's path, and the count so far.
    pub fn counting_trivy(&self) -> (PathBuf, impl Fn() -> usize + use<>) {
        let (trivy, calls) = self.recording_trivy(crate::fake_trivy::counting_trivy);
        (trivy, move || calls().len())
    }

    /// The real Trivy behind a wrapper (`fake_trivy::counting_trivy` or
    /// `layout_refusing_trivy`): its path, and the arguments of each of its
    /// `trivy image` runs so far.
    pub fn recording_trivy(&self, wrapper: fn(&Path, &Path) -> PathBuf) -> (PathBuf, impl Fn() -> Vec<String> + use<>) {
        let dir = self.work.path().join(format!("recording-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).expect("a dir for the trivy wrapper");
        let trivy = wrapper(&dir, &self.trivy);
        (trivy, move || crate::fake_trivy::trivy_image_calls(&dir))
    }

    /// `scour worker` against this node with the usual flags: real Trivy,
    /// offline with the generated DB, a per-node state dir, a JSON report.
    pub fn worker(&self, scour: &Path) -> Worker {
        let report = self.work.path().join(format!("report-{}.json", rand_suffix()));
        let mut cmd = Command::new(scour);
        cmd.arg("worker")
            .args(["--runtime-endpoint", &self.ctd.endpoint()])
            .arg("--trivy")
            .arg(&self.trivy)
            .arg("--trivy-cache-dir")
            .arg(self.trivy_cache())
            .arg("--trivy-offline")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--report")
            .arg(&report)
            .args([
                "--node-name",
                "scenario-node",
                "--termination-log",
                "/nonexistent/termination-log",
            ])
            .arg("--policy-cache-dir")
            .arg(policy_cache_dir())
            .env("SCOUR_LOG", "info")
            .env("SCOUR_LOG_FORMAT", "json");
        Worker { cmd, report }
    }
}

/// One Trivy scan the way Eraser's scanner runs it, the baseline scour's
/// benches measure against: `trivy image` on an image held by the
/// containerd at `socket`, vulnerabilities only, offline with the DB in
/// `cache`, JSON out, and Trivy's layer cache in memory, so nothing is kept
/// between scans.
pub fn eraser_style_scan(trivy: &Path, socket: &Path, cache: &Path, reference: &str) -> std::process::Output {
    Command::new(trivy)
        .args(["image", "--image-src", "containerd", "--cache-backend", "memory"])
        .args(["--format", "json", "--scanners", "vuln", "--timeout", "1h"])
        .args([
            "--skip-db-update",
            "--offline-scan",
            "--skip-version-check",
            "--disable-telemetry",
            "-q",
        ])
        .arg("--cache-dir")
        .arg(cache)
        .arg(reference)
        .env("CONTAINERD_ADDRESS", socket)
        .env("CONTAINERD_NAMESPACE", "k8s.io")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", trivy.display()))
}

/// A shared policy artifact cache, so scenarios do not recompile the policy.
pub fn policy_cache_dir() -> PathBuf {
    crate::guests::workspace_root().join("target/test-policy-cache")
}

pub(crate) fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A `scour worker` invocation being built.
pub struct Worker {
    pub cmd: Command,
    report: PathBuf,
}

impl Worker {
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Runs it to the end.
    pub fn run(mut self) -> Run {
        let output = self.cmd.output().expect("running scour worker");
        let report = std::fs::read(&self.report)
            .ok()
            .map(|b| serde_json::from_slice(&b).expect("the report is JSON"));
        Run { output, report }
    }

    /// Starts it in the background.
    pub fn spawn(mut self) -> (std::process::Child, PathBuf) {
        self.cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        (self.cmd.spawn().expect("starting scour worker"), self.report)
    }
}

impl TestNode {
    /// Runs a pass whose policy spins for `spin` loop iterations in `decide`
    /// and then removes everything, with `args` added, and calls `act` while
    /// it spins: the snapshot is written just before decide, so its
    /// appearance is the cue.
    pub fn while_deciding(
        &mut self,
        scour: &Path,
        spin: &str,
        args: &[&OsStr],
        act: impl FnOnce(&mut TestNode),
    ) -> Run {
        let snapshot = self.work.path().join("snapshot.yaml");
        let spin = self.file("spin.txt", spin);
        crate::guests::hostile_guest("slow_remove_all");
        let (child, report) = self
            .worker(scour)
            .args(args)
            .arg("--policy")
            .arg(crate::guests::hostile_guest_path("slow_remove_all"))
            .arg("--settings")
            .arg(&spin)
            .args(["--policy-timeout", "120s", "--snapshot-out"])
            .arg(&snapshot)
            .spawn();
        wait_for(&snapshot, Duration::from_secs(60));
        act(self);
        let output = child.wait_with_output().unwrap();
        Run {
            report: Some(serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()),
            output,
        }
    }
}

/// Waits for a file to appear (the worker writes its files atomically).
pub fn wait_for(path: &Path, limit: Duration) {
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < limit, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A finished worker run.
pub struct Run {
    pub output: Output,
    pub report: Option<Value>,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn report(&self) -> &Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("no report was written; stderr:\n{}", self.stderr()))
    }

    /// (action, reason) the report gives an image id.
    pub fn verdict(&self, id: &str) -> (String, String) {
        let img = self.report()["images"]
            .as_array()
            .expect("images[]")
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| {
                panic!(
                    "{id} is not in the report:\n{}",
                    serde_json::to_string_pretty(self.report()).unwrap()
                )
            });
        (
            img["action"].as_str().unwrap().to_owned(),
            img["reason"].as_str().unwrap().to_owned(),
        )
    }

    pub fn summary(&self, key: &str) -> u64 {
        self.report()["summary"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary.{key} missing"))
    }

    pub fn status(&self) -> String {
        self.report()["status"].as_str().unwrap_or_default().to_owned()
    }
}
