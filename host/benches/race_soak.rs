//! Race soak (issue 13, part 4): the promise "never remove an image a
//! container uses", measured under a real race on a real private containerd.
//! Not a timed benchmark and not part of `just bench`; run it with
//! `just soak` (root, containerd and runc required).
//!
//! Each trial runs one real `scour worker --once` pass over eight unused
//! candidate images, and creates a container on one of them (the target,
//! chosen at random, named by tag or by id) at a random moment: before the
//! pass, at a random delay after the worker starts, at a random delay after
//! the worker has taken its decision snapshot (its `collected` log line), or
//! after the pass. Half the passes run the shipped default policy in manual
//! mode with the ImageList `*` (no Trivy, a decision of a few ms), half the
//! hostile `slow_remove_all` policy spinning in `decide` for a random
//! 0–25 ms, so that creations also land while the policy decides. Half the
//! passes use the default `--remove-concurrency 4`, half remove one image at
//! a time, so that the worker's re-list for the target (the `ListContainers`
//! right after its `ImageStatus`) can be told apart from the others'.
//!
//! What happened when is read from containerd itself: the private instance
//! logs at trace level, and its CRI plugin logs every call it serves with a
//! nanosecond timestamp: `ListContainers` with the containers it returned,
//! `ImageStatus` and `RemoveImage` with the image, `CreateContainer` when it
//! starts and when it returns the new container's id (after the container is
//! in the store that `ListContainers` reads). So:
//!
//! - the *decision snapshot* is the worker's first `ListContainers` of the
//!   pass (collect); whether the container is in it is read off the list;
//! - the container *exists* from its `CreateContainer ... returns container
//!   id` line;
//! - the *removal* of the target begins at its `RemoveImage` line.
//!
//! A trial *hits the window* when its container was not in the decision
//! snapshot and existed before the worker removed the target (or before the
//! worker's re-check right before removal, which then kept it). An *in-use
//! removal* is a trial whose container was created successfully and whose
//! image is gone after the pass, unless containerd's log shows the creation
//! completing only after `RemoveImage` of that image had begun (those are
//! counted on their own line: no remover can see a container that does not
//! exist yet). The count fails closed: an image that vanished with no
//! `RemoveImage` in the log counts as an in-use removal. Before the trials,
//! a self-check creates a container and removes its image with a raw CRI
//! `RemoveImage` (no guard), and the count must see it.
//!
//! Trace logging slows containerd down a little (it formats every answer),
//! which widens the gaps between calls somewhat against a production node.
//!
//! It prints `in-use removed: X of N trials (K hit the window)` with the
//! timing distributions, and a timeline for each in-use removal; it exits 1
//! when X > 0, 2 when the teardown left something behind.
//!
//! Environment: `SOAK_TRIALS` (default 500), `SOAK_SEED` (default: the
//! clock; printed, so a run can be repeated), `SOAK_VERBOSE=1` (one line per
//! trial).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scour_testkit::containerd::{Pod, block_on};
use scour_testkit::guests::{hostile_guest, hostile_guest_path};
use scour_testkit::images::{OciLayout, TestImage, plain};
use scour_testkit::scenario::TestNode;

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");
const CANDIDATES: usize = 8;
/// How long the slow policy's `decide` spins, at most.
const MAX_SLOW_DECIDE: Duration = Duration::from_millis(25);
/// Self-check trials: an unguarded remover, which the count must catch.
const CONTROLS: usize = 3;

// ---------------------------------------------------------------- randomness

/// splitmix64: small, seedable, good enough to spread trials.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn duration(&mut self, max: Duration) -> Duration {
        max.mul_f64(self.unit())
    }
}

// ---------------------------------------------------------------- time

/// Nanoseconds since the epoch, from an RFC 3339 timestamp (containerd's
/// `time="..."`, the worker's JSON `timestamp`).
fn ns_of(ts: &str) -> Option<i128> {
    let t = humantime::parse_rfc3339(ts).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_nanos() as i128)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn ms(ns: i128) -> f64 {
    ns as f64 / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------- containerd's log

/// What containerd's CRI plugin logged, in log order.
#[derive(Debug, Clone)]
enum Ctd {
    /// `ListContainers with filter ...`: a call began.
    ListBegin,
    /// `ListContainers ... returns containers [...]`: the ids it returned.
    Listed(Vec<String>),
    ImageStatus(String),
    RemoveImage(String),
    CreateBegin(String),
    /// Container name, id.
    Created(String, String),
    /// Container name, containerd's error.
    CreateFailed(String, String),
}

/// The value of `key="..."` (with `\"` and `\\` unescaped) or `key=word`.
fn logfmt_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return Some(out),
                c => out.push(c),
            }
        }
        None
    } else {
        Some(rest.split(' ').next().unwrap_or_default().to_owned())
    }
}

/// The container name in `&ContainerMetadata{Name:NAME,Attempt:0,}`.
fn metadata_name(msg: &str) -> Option<String> {
    let start = msg.find("&ContainerMetadata{Name:")? + "&ContainerMetadata{Name:".len();
    Some(msg[start..].split(',').next()?.to_owned())
}

/// The first `"..."` after `prefix`.
fn quoted_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?;
    let rest = rest.strip_prefix('"')?;
    rest.split('"').next()
}

fn parse_ctd(text: &str) -> Vec<(i128, Ctd)> {
    let mut events = Vec::new();
    for line in text.lines() {
        let (Some(time), Some(msg)) = (logfmt_field(line, "time"), logfmt_field(line, "msg")) else {
            continue;
        };
        let Some(t) = ns_of(&time) else { continue };
        let event = if msg.starts_with("ListContainers with filter") && msg.contains(" returns containers ") {
            let ids = msg
                .split("&Container{Id:")
                .skip(1)
                .filter_map(|s| s.split(',').next())
                .map(str::to_owned)
                .collect();
            Ctd::Listed(ids)
        } else if msg.starts_with("ListContainers with filter") && !msg.contains(" returns ") {
            Ctd::ListBegin
        } else if let Some(image) = quoted_after(&msg, "ImageStatus for ")
            && msg.len() == "ImageStatus for ".len() + image.len() + 2
        {
            Ctd::ImageStatus(image.to_owned())
        } else if let Some(image) = quoted_after(&msg, "RemoveImage ")
            && msg.len() == "RemoveImage ".len() + image.len() + 2
        {
            Ctd::RemoveImage(image.to_owned())
        } else if msg.starts_with("CreateContainer within sandbox") {
            let Some(name) = metadata_name(&msg) else { continue };
            if msg.contains(" for container &ContainerMetadata") {
                Ctd::CreateBegin(name)
            } else if let Some(at) = msg.find(" returns container id \"") {
                let id = msg[at + " returns container id \"".len()..].trim_end_matches('"');
                Ctd::Created(name, id.to_owned())
            } else if msg.ends_with(" failed") {
                Ctd::CreateFailed(name, logfmt_field(line, "error").unwrap_or_default())
            } else {
                continue;
            }
        } else {
            continue;
        };
        events.push((t, event));
    }
    events
}

/// containerd's log from `offset` on.
fn read_log_from(path: &Path, offset: u64) -> String {
    let mut file = std::fs::File::open(path).expect("containerd.log");
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    text
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

// ---------------------------------------------------------------- the node

#[derive(Debug, Clone, Copy)]
enum Policy {
    /// The embedded default policy, manual mode, ImageList `["*"]`.
    Default,
    /// `slow_remove_all`, spinning this many iterations in `decide`.
    Slow(u64),
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    /// CreateContainer, then the pass.
    BeforePass,
    /// CreateContainer this long after the worker was started.
    AfterSpawn(Duration),
    /// CreateContainer this long after the worker logged `collected`.
    AfterSnapshot(Duration),
    /// The pass, then CreateContainer.
    AfterPass,
}

impl Plan {
    fn label(&self) -> &'static str {
        match self {
            Plan::BeforePass => "before the pass",
            Plan::AfterSpawn(_) => "random delay after the worker started",
            Plan::AfterSnapshot(_) => "random delay after `collected`",
            Plan::AfterPass => "after the pass",
        }
    }
}

struct Soak {
    node: TestNode,
    pod: Pod,
    /// (id, tag) of each candidate.
    candidates: Vec<(String, String)>,
    bundle: PathBuf,
    imagelist: PathBuf,
    slow_policy: PathBuf,
    spins: PathBuf,
    state_dir: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// What one pass (with or without a racing container) left behind.
#[derive(Debug, Default)]
struct Trial {
    n: usize,
    policy: String,
    plan: &'static str,
    target: String,
    /// The container's id, when CreateContainer succeeded.
    container: Option<String>,
    create_error: Option<String>,
    /// Client side: how long CreateContainer took.
    create_call: Option<Duration>,
    // Server side, ns since the epoch.
    create_begin: Option<i128>,
    create_end: Option<i128>,
    snapshot: Option<i128>,
    in_snapshot: bool,
    decided: Option<i128>,
    recheck: Option<i128>,
    remove_begin: Option<i128>,
    /// The last ListContainers that returned before RemoveImage(target).
    last_list_before_remove: Option<i128>,
    /// `--remove-concurrency` of the pass.
    concurrency: usize,
    /// With concurrency 1 only, where the calls of one image cannot
    /// interleave with another's: the worker's re-list for the target (the
    /// first ListContainers after ImageStatus(target)), when it answered and
    /// whether it held the container.
    target_relist: Option<(i128, bool)>,
    /// The first ListContainers answered after ImageStatus(target): with
    /// concurrency 4 the target's own re-list answered between this one and
    /// `last_list_before_remove`.
    first_list_after_recheck: Option<i128>,
    /// ListContainers calls that began after CreateContainer had returned,
    /// and how many of them did not list the container (must be none, or
    /// reading the log this way is wrong).
    lists_after_create: usize,
    lists_after_create_missing: usize,
    spawned: Option<i128>,
    finished: Option<i128>,
    action: String,
    reason: String,
    target_present: bool,
    container_present: bool,
    pass_wall: Duration,
}

impl Trial {
    /// The trial's events in order, in ms relative to the decision snapshot.
    fn timeline(&self) -> String {
        let zero = self.snapshot.or(self.create_begin).unwrap_or(0);
        let mut events: Vec<(i128, &str)> = [
            (self.spawned, "worker started"),
            (self.snapshot, "decision snapshot (ListContainers)"),
            (self.decided, "`decided`"),
            (self.recheck, "re-check: ImageStatus(target)"),
            (self.last_list_before_remove, "last ListContainers answered"),
            (
                self.target_relist.map(|(t, _)| t),
                if self.target_relist.is_some_and(|(_, held)| held) {
                    "the target's re-list answered, WITH the container"
                } else {
                    "the target's re-list answered, without the container"
                },
            ),
            (self.create_begin, "CreateContainer began"),
            (self.create_end, "CreateContainer returned"),
            (self.remove_begin, "RemoveImage(target) began"),
            (self.finished, "`pass finished`"),
        ]
        .into_iter()
        .filter_map(|(t, what)| Some((t?, what)))
        .collect();
        events.sort_by_key(|(t, _)| *t);
        let events: Vec<String> = events
            .iter()
            .map(|(t, what)| format!("{:+.3} ms {what}", ms(t - zero)))
            .collect();
        format!(
            "trial {} ({}, remove concurrency {}, {}), target {}, container {}: {}; report: {} ({}); image there \
             after: {}, container there after: {}",
            self.n,
            self.policy,
            self.concurrency,
            self.plan,
            self.target,
            self.container.as_deref().unwrap_or("-"),
            events.join(", "),
            self.action,
            self.reason,
            self.target_present,
            self.container_present
        )
    }

    fn vetoed_before_removal(&self) -> bool {
        self.action == "kept" && self.reason.contains("found just before removal")
    }

    /// The container's creation completed only after RemoveImage began.
    fn created_after_remove_began(&self) -> bool {
        matches!((self.create_end, self.remove_begin), (Some(c), Some(r)) if c >= r)
    }

    /// Created successfully, image gone after the pass, and not provably
    /// created after the removal began. Fails closed: an image gone without
    /// any RemoveImage in the log counts.
    fn in_use_removed(&self) -> bool {
        self.container.is_some() && !self.target_present && !self.created_after_remove_began()
    }

    /// Not in the decision snapshot, and existing before the worker removed
    /// the target, or caught by its re-check right before removal.
    fn hit_window(&self) -> bool {
        self.container.is_some()
            && !self.in_snapshot
            && (self.vetoed_before_removal()
                || matches!((self.create_end, self.remove_begin), (Some(c), Some(r)) if c < r))
    }

    fn bucket(&self) -> &'static str {
        let Some(end) = self.create_end.filter(|_| self.container.is_some()) else {
            return "creation failed";
        };
        if self.in_snapshot || self.snapshot.is_none_or(|s| end <= s) {
            "before the decision snapshot"
        } else if self.decided.is_none_or(|d| end <= d) {
            "while the policy decided"
        } else if self.remove_begin.is_none_or(|r| end < r) {
            "after the decision, before RemoveImage"
        } else {
            "after RemoveImage began"
        }
    }
}

impl Soak {
    fn start() -> Option<Self> {
        let node = TestNode::start_with_log_level("trace")?;
        let images: Vec<TestImage> = (0..CANDIDATES)
            .map(|i| plain(&format!("localhost/soak/candidate-{i}:1")))
            .collect();
        let tags: Vec<String> = images.iter().map(|i| i.refs()[0].clone()).collect();
        let bundle = node.work.path().join("candidates.tar");
        let built = OciLayout::new()
            .images(images)
            .digest_refs(true)
            .write_tar(&bundle)
            .expect("writing the candidates' bundle");
        let candidates = built.iter().map(|b| b.image_id()).zip(tags).collect();
        node.ctd.import(&bundle).expect("importing the candidates");
        let pod = block_on(node.ctd.run_pod("soak")).expect("a pod for the racing containers");
        hostile_guest("slow_remove_all");
        let imagelist = node.file("imagelist.json", r#"["*"]"#);
        let spins = node.file("spins.txt", "0");
        // Node state on the instance's tmpfs: the pass writes it each time.
        let state_dir = node.ctd.dir().join("soak-state");
        Some(Self {
            pod,
            candidates,
            bundle,
            imagelist,
            slow_policy: hostile_guest_path("slow_remove_all"),
            spins,
            state_dir,
            rt: tokio::runtime::Runtime::new().unwrap(),
            node,
        })
    }

    fn image_ids(&self) -> Vec<String> {
        self.rt
            .block_on(async {
                let cri = self.node.ctd.cri_client().await.expect("cri client");
                cri.list_images().await.expect("list images")
            })
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    /// Ids and image refs of the containers there are now.
    fn containers(&self) -> Vec<(String, String)> {
        self.rt
            .block_on(async {
                let cri = self.node.ctd.cri_client().await.expect("cri client");
                cri.list_containers().await.expect("list containers")
            })
            .into_iter()
            .map(|c| (c.id, c.image_ref))
            .collect()
    }

    /// Every candidate back, and no container left.
    fn reset(&self) {
        for (id, _) in self.containers() {
            self.rt
                .block_on(self.node.ctd.remove_container(&id))
                .expect("removing the trial's container");
        }
        let present = self.image_ids();
        if self.candidates.iter().any(|(id, _)| !present.contains(id)) {
            self.node.ctd.import(&self.bundle).expect("re-importing the candidates");
        }
    }

    fn create(&self, image: &str, name: &str) -> (Result<String, String>, Duration) {
        let t = Instant::now();
        let r = self
            .rt
            .block_on(self.node.ctd.create_container(&self.pod, image, name, false))
            .map_err(|e| e.to_string());
        (r, t.elapsed())
    }

    /// One pass with `plan`'s container on candidate `target`. With
    /// `unguarded`, no worker runs: the soak removes the target itself with
    /// a raw RemoveImage after creating the container (the self-check).
    #[allow(clippy::too_many_arguments)]
    fn trial(
        &self,
        n: usize,
        policy: Policy,
        concurrency: usize,
        plan: Plan,
        target: usize,
        by_id: bool,
        unguarded: bool,
    ) -> Trial {
        let (target_id, target_tag) = &self.candidates[target];
        let image = if by_id { target_id } else { target_tag };
        let name = format!("race-{n}");
        let offset = log_len(&self.node.ctd.log_path());
        let mut trial = Trial {
            n,
            plan: plan.label(),
            target: target_id.clone(),
            concurrency,
            ..Default::default()
        };
        let mut created: Option<(Result<String, String>, Duration)> = None;
        let mut stderr_lines = Vec::new();
        let mut report = None;

        if matches!(plan, Plan::BeforePass) {
            created = Some(self.create(image, &name));
        }
        if unguarded {
            trial.policy = "none (raw RemoveImage)".into();
            self.rt
                .block_on(async {
                    let cri = self.node.ctd.cri_client().await.expect("cri client");
                    cri.remove_image(target_id).await
                })
                .expect("raw RemoveImage");
        } else {
            let mut worker = self
                .node
                .worker(Path::new(SCOUR))
                .arg("--state-dir")
                .arg(&self.state_dir)
                .args(["--remove-concurrency", &concurrency.to_string()]);
            match policy {
                Policy::Default => {
                    trial.policy = "default, ImageList *".into();
                    worker = worker.arg("--imagelist").arg(&self.imagelist);
                }
                Policy::Slow(spins) => {
                    trial.policy = "slow_remove_all".into();
                    std::fs::write(&self.spins, spins.to_string()).unwrap();
                    worker = worker
                        .arg("--policy")
                        .arg(&self.slow_policy)
                        .arg("--settings")
                        .arg(&self.spins)
                        .args(["--policy-timeout", "120s"]);
                }
            }
            trial.spawned = Some(now_ns());
            let started = Instant::now();
            let (mut child, report_path) = worker.spawn();
            let stderr = child.stderr.take().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let (cue_tx, cue_rx) = mpsc::channel::<Instant>();
            std::thread::scope(|s| {
                let reader = s.spawn(move || {
                    let mut lines = Vec::new();
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        if line.contains(r#""message":"collected""#) {
                            let _ = cue_tx.send(Instant::now());
                        }
                        lines.push(line);
                    }
                    lines
                });
                let drain = s.spawn(move || {
                    let mut sink = Vec::new();
                    let _ = stdout.read_to_end(&mut sink);
                });
                let name = name.as_str();
                let creator = s.spawn(move || match plan {
                    Plan::AfterSpawn(delay) => {
                        std::thread::sleep(delay.saturating_sub(started.elapsed()));
                        Some(self.create(image, name))
                    }
                    Plan::AfterSnapshot(delay) => {
                        let cue = cue_rx.recv_timeout(Duration::from_secs(60)).ok()?;
                        std::thread::sleep(delay.saturating_sub(cue.elapsed()));
                        Some(self.create(image, name))
                    }
                    Plan::BeforePass | Plan::AfterPass => None,
                });
                let status = child.wait().expect("waiting for the worker");
                trial.pass_wall = started.elapsed();
                stderr_lines = reader.join().unwrap();
                drain.join().unwrap();
                if let Some(c) = creator.join().unwrap() {
                    created = Some(c);
                }
                assert!(
                    status.success(),
                    "trial {n}: scour worker exited with {status}:\n{}",
                    stderr_lines.join("\n")
                );
            });
            report = std::fs::read(&report_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            let _ = std::fs::remove_file(&report_path);
        }
        if matches!(plan, Plan::AfterPass) {
            created = Some(self.create(image, &name));
        }

        // What is there now.
        trial.target_present = self.image_ids().contains(target_id);
        if let Some((result, took)) = created {
            trial.create_call = Some(took);
            match result {
                Ok(id) => trial.container = Some(id),
                Err(e) => trial.create_error = Some(e),
            }
        }
        trial.container_present = trial
            .container
            .as_ref()
            .is_some_and(|c| self.containers().iter().any(|(id, _)| id == c));

        // What the worker said.
        for line in &stderr_lines {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let t = v["timestamp"].as_str().and_then(ns_of);
            match v["message"].as_str() {
                Some("decided") => trial.decided = t,
                Some("pass finished") => trial.finished = t,
                _ => {}
            }
        }
        if let Some(report) = &report {
            let img = report["images"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["id"] == *target_id));
            if let Some(img) = img {
                trial.action = img["action"].as_str().unwrap_or_default().to_owned();
                trial.reason = img["reason"].as_str().unwrap_or_default().to_owned();
            }
        }

        // What containerd saw.
        let events = parse_ctd(&read_log_from(&self.node.ctd.log_path(), offset));
        let mut last_list = None;
        // ListContainers calls under way: (when the latest began, how many).
        let mut lists_open = (0, 0usize);
        for (t, e) in &events {
            match e {
                Ctd::ListBegin => lists_open = (*t, lists_open.1 + 1),
                Ctd::Listed(ids) => {
                    let held = trial.container.as_ref().is_some_and(|c| ids.contains(c));
                    if trial.snapshot.is_none() && !unguarded {
                        trial.snapshot = Some(*t);
                        trial.in_snapshot = held;
                    }
                    if trial.recheck.is_some()
                        && trial.remove_begin.is_none()
                        && trial.first_list_after_recheck.is_none()
                    {
                        trial.first_list_after_recheck = Some(*t);
                        if concurrency == 1 {
                            trial.target_relist = Some((*t, held));
                        }
                    }
                    // Only calls that did not overlap another: their start is known.
                    if lists_open.1 == 1
                        && let Some(created) = trial.create_end
                        && trial.container.is_some()
                        && lists_open.0 > created
                    {
                        trial.lists_after_create += 1;
                        trial.lists_after_create_missing += usize::from(!held);
                    }
                    lists_open.1 = lists_open.1.saturating_sub(1);
                    last_list = Some(*t);
                }
                Ctd::ImageStatus(id) if id == target_id && trial.recheck.is_none() && trial.snapshot.is_some() => {
                    trial.recheck = Some(*t)
                }
                Ctd::RemoveImage(id) if id == target_id && trial.remove_begin.is_none() => {
                    trial.remove_begin = Some(*t);
                    trial.last_list_before_remove = last_list;
                }
                Ctd::CreateBegin(c) if *c == name => trial.create_begin = Some(*t),
                Ctd::Created(c, id) if *c == name => {
                    assert_eq!(
                        trial.container.as_ref(),
                        Some(id),
                        "trial {n}: containerd created another id"
                    );
                    trial.create_end = Some(*t)
                }
                Ctd::CreateFailed(c, error) if *c == name => {
                    assert!(
                        trial.container.is_none(),
                        "trial {n}: containerd logged a failure: {error}"
                    );
                    trial.create_end = Some(*t)
                }
                _ => {}
            }
        }
        if trial.container.is_some() {
            assert!(
                trial.create_end.is_some(),
                "trial {n}: containerd's log does not show the creation of {name}"
            );
        }
        if trial.vetoed_before_removal() {
            assert!(
                trial.remove_begin.is_none(),
                "trial {n}: the worker kept the target but RemoveImage ran"
            );
        }
        trial
    }
}

// ---------------------------------------------------------------- main

fn main() {
    let trials: usize = std::env::var("SOAK_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ns() as u64);
    let verbose = std::env::var("SOAK_VERBOSE").is_ok_and(|v| v == "1");
    let wall = Instant::now();
    let Some(soak) = Soak::start() else {
        println!("race soak skipped: needs root with containerd, runc and Trivy (`just setup`)");
        return;
    };
    let mut rng = Rng(seed);
    println!(
        "race soak: {trials} trials, one `scour worker --once` pass each, on a private containerd 1.6 (trace log), \
         {CANDIDATES} candidate images; SOAK_SEED={seed}"
    );

    // Self-check: an unguarded remover must be counted.
    let mut caught = 0;
    for i in 0..CONTROLS {
        let t = soak.trial(1_000_000 + i, Policy::Default, 4, Plan::BeforePass, i, i % 2 == 0, true);
        caught += usize::from(t.in_use_removed());
        soak.reset();
    }
    println!(
        "self-check: a raw RemoveImage after CreateContainer (no guard) counted as an in-use removal in {caught} of \
         {CONTROLS}"
    );
    assert_eq!(caught, CONTROLS, "the in-use count cannot see an unguarded removal");

    // Calibration: passes with no container.
    let mut calib: BTreeMap<&str, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let spin_probe = 20_000_000u64;
    for i in 0..6 {
        let policy = match i % 3 {
            0 => Policy::Default,
            1 => Policy::Slow(0),
            _ => Policy::Slow(spin_probe),
        };
        let t = soak.trial(2_000_000 + i, policy, 4, Plan::AfterPass, 0, false, false);
        let (Some(s), Some(d), Some(f)) = (t.snapshot, t.decided, t.finished) else {
            panic!("calibration pass {i} logged no snapshot/decision: {t:?}");
        };
        let key = match policy {
            Policy::Default => "default",
            Policy::Slow(0) => "slow0",
            Policy::Slow(_) => "slow",
        };
        calib
            .entry(key)
            .or_default()
            .push((t.pass_wall.as_secs_f64() * 1e3, ms(d - s), ms(f - d)));
        soak.reset();
    }
    let med = |key: &str, f: fn(&(f64, f64, f64)) -> f64| median(calib[key].iter().map(f).collect());
    let pass_ms = med("default", |c| c.0).max(med("slow0", |c| c.0));
    let decide_default = med("default", |c| c.1);
    let decide_slow0 = med("slow0", |c| c.1);
    let ns_per_spin = ((med("slow", |c| c.1) - decide_slow0) * 1e6 / spin_probe as f64).max(0.01);
    let remove_ms = med("default", |c| c.2);
    let max_spins = (MAX_SLOW_DECIDE.as_nanos() as f64 / ns_per_spin) as u64;
    println!(
        "calibration: a pass {pass_ms:.0} ms (worker start to exit); decision snapshot to `decided`: default policy \
         {decide_default:.1} ms, slow_remove_all {decide_slow0:.1} ms + {ns_per_spin:.2} ns per spin; `decided` to \
         `pass finished` {remove_ms:.1} ms"
    );

    // The trials.
    let soak_started = Instant::now();
    let mut done = Vec::with_capacity(trials);
    let mut plans: BTreeMap<&str, usize> = BTreeMap::new();
    for n in 0..trials {
        let policy = if rng.below(2) == 0 {
            Policy::Default
        } else {
            Policy::Slow((max_spins as f64 * rng.unit()) as u64)
        };
        let decide = match policy {
            Policy::Default => Duration::from_secs_f64(decide_default / 1e3),
            Policy::Slow(spins) => Duration::from_nanos((spins as f64 * ns_per_spin) as u64),
        };
        let roll = rng.below(100);
        let plan = if roll < 5 {
            Plan::BeforePass
        } else if roll < 10 {
            Plan::AfterPass
        } else if roll < 30 {
            Plan::AfterSpawn(rng.duration(Duration::from_secs_f64(pass_ms * 1.1 / 1e3) + decide))
        } else {
            // CreateContainer itself takes a few ms: started anywhere from
            // the snapshot to a third into the removals, it completes from
            // inside the decision to just past the target's removal.
            Plan::AfterSnapshot(rng.duration(decide + Duration::from_secs_f64(remove_ms * 0.3 / 1e3)))
        };
        *plans.entry(plan.label()).or_default() += 1;
        let target = rng.below(CANDIDATES);
        let by_id = rng.below(2) == 0;
        // Half the passes remove one image at a time, so that the worker's
        // re-list for the target can be told apart from the others'.
        let concurrency = if rng.below(2) == 0 { 1 } else { 4 };
        let t = soak.trial(n, policy, concurrency, plan, target, by_id, false);
        if verbose {
            println!(
                "trial {n:4} {:<22} {:<40} {:<40} {:>9} {}",
                t.policy,
                t.plan,
                t.bucket(),
                t.action,
                if t.in_use_removed() { "IN-USE REMOVED" } else { "" }
            );
        }
        if t.in_use_removed() {
            println!("IN-USE REMOVAL: {}", t.timeline());
        }
        done.push(t);
        soak.reset();
    }
    let soak_time = soak_started.elapsed();

    // Report.
    let in_use_removed = done.iter().filter(|t| t.in_use_removed()).count();
    let hits: Vec<&Trial> = done.iter().filter(|t| t.hit_window()).collect();
    println!();
    println!("how the creation moment was chosen (seeded): ");
    for (label, count) in &plans {
        println!("  {count:4}  {label}");
    }
    println!(
        "when the container came to exist (containerd's `returns container id`), against the worker's pass, and \
         what became of its image:"
    );
    let buckets = [
        "before the decision snapshot",
        "while the policy decided",
        "after the decision, before RemoveImage",
        "after RemoveImage began",
        "creation failed",
    ];
    for b in buckets {
        let in_b: Vec<&Trial> = done.iter().filter(|t| t.bucket() == b).collect();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for t in &in_b {
            let o = if t.container.is_none() {
                match &t.create_error {
                    Some(e) if e.contains("not found") || e.contains("NotFound") => "image already removed".into(),
                    Some(e) => format!("error: {e}"),
                    None => "not attempted".into(),
                }
            } else if t.vetoed_before_removal() {
                "kept by the re-check before removal".into()
            } else if t.target_present {
                format!("kept ({})", t.reason.split(" (").next().unwrap_or_default())
            } else if t.created_after_remove_began() {
                "removed; the container was created on an image already being removed".into()
            } else {
                "REMOVED WHILE IN USE".into()
            };
            *outcomes.entry(o).or_default() += 1;
        }
        let detail: Vec<String> = outcomes.iter().map(|(o, c)| format!("{c} {o}")).collect();
        println!("  {:4}  {b:<40} {}", in_b.len(), detail.join("; "));
    }

    // How close the creations came to the removal of their image.
    let offsets: Vec<f64> = done
        .iter()
        .filter(|t| t.container.is_some())
        .filter_map(|t| Some(ms(t.create_end? - t.remove_begin.or(t.recheck)?)))
        .collect();
    let edges = [-50.0, -10.0, -3.0, -1.0, 0.0, 1.0, 3.0, 10.0, 50.0];
    let mut hist = vec![0usize; edges.len() + 1];
    for o in &offsets {
        hist[edges.iter().filter(|e| o >= e).count()] += 1;
    }
    let labels: Vec<String> = (0..hist.len())
        .map(|i| match i {
            0 => format!("< {}", edges[0]),
            i if i == edges.len() => format!("≥ {}", edges[i - 1]),
            i => format!("{}..{}", edges[i - 1], edges[i]),
        })
        .collect();
    println!(
        "container created minus the start of the image's removal (RemoveImage, or the re-check that kept it), ms, \
         {} trials:",
        offsets.len()
    );
    println!(
        "  {}",
        labels
            .iter()
            .zip(&hist)
            .map(|(l, c)| format!("[{l}] {c}"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    // The gap no re-check can close: from the worker's re-list for the
    // target being answered to RemoveImage(target) beginning. Exact only
    // when the pass removed one image at a time.
    let gap: Vec<f64> = done
        .iter()
        .filter_map(|t| Some(ms(t.remove_begin? - t.target_relist?.0)))
        .collect();
    let create_call: Vec<f64> = done
        .iter()
        .filter_map(|t| t.create_call.map(|d| d.as_secs_f64() * 1e3))
        .collect();
    let create_server: Vec<f64> = done
        .iter()
        .filter(|t| t.container.is_some())
        .filter_map(|t| Some(ms(t.create_end? - t.create_begin?)))
        .collect();
    println!(
        "the gap no re-check can close, the worker's re-list for the image answered to its RemoveImage begun \
         (server side, {} passes that removed one image at a time): median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms",
        gap.len(),
        median(gap.clone()),
        percentile(gap.clone(), 0.9),
        percentile(gap.clone(), 0.99),
        gap.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "CreateContainer: median {:.1} ms at the client, {:.1} ms inside containerd (CreateContainer began to \
         returned)",
        median(create_call),
        median(create_server)
    );
    let checks: usize = done.iter().map(|t| t.lists_after_create).sum();
    let missing: usize = done.iter().map(|t| t.lists_after_create_missing).sum();
    println!(
        "reading the log: of {checks} ListContainers calls that began after a CreateContainer had returned, {missing} \
         did not list its container (0 expected: a container exists for ListContainers once `returns container id` \
         is logged)"
    );
    for concurrency in [1, 4] {
        let of: Vec<&Trial> = done.iter().filter(|t| t.concurrency == concurrency).collect();
        let removed: Vec<&&Trial> = of.iter().filter(|t| t.in_use_removed()).collect();
        let hit = of.iter().filter(|t| t.hit_window()).count();
        let mut line = format!(
            "  --remove-concurrency {concurrency}: {} trials, {hit} hit the window, {} in-use removed",
            of.len(),
            removed.len()
        );
        if concurrency == 4 {
            let bound = |f: fn(&Trial) -> Option<i128>| {
                median(of.iter().filter_map(|t| Some(ms(t.remove_begin? - f(t)?))).collect())
            };
            line.push_str(&format!(
                "; the re-list for the image answered between {:.2} and {:.2} ms (medians) before its RemoveImage began",
                bound(|t| t.last_list_before_remove),
                bound(|t| t.first_list_after_recheck)
            ));
        }
        if concurrency == 1 {
            let unseen = removed
                .iter()
                .filter(|t| t.target_relist.is_some_and(|(_, held)| !held))
                .count();
            let seen = removed
                .iter()
                .filter(|t| t.target_relist.is_some_and(|(_, held)| held))
                .count();
            line.push_str(&format!(
                "; in {unseen} of them the container did not exist yet when the worker re-listed for that image \
                 (in {seen} the re-list held it: a guard bug)"
            ));
        }
        println!("{line}");
    }
    let caught_recheck = hits.iter().filter(|t| t.vetoed_before_removal()).count();
    let during_decide = hits.iter().filter(|t| t.bucket() == "while the policy decided").count();
    println!(
        "hit the window: the container was absent from the worker's decision snapshot (its first ListContainers, \
         read from containerd's trace log) and existed (CreateContainer had returned, per the same log) before \
         RemoveImage of its image began, or before the re-check that kept it: {} trials ({during_decide} created \
         while the policy decided, {} after it); the re-check right before removal kept {caught_recheck} of them",
        hits.len(),
        hits.len() - during_decide
    );
    let late = done
        .iter()
        .filter(|t| t.container.is_some() && !t.target_present && t.created_after_remove_began())
        .count();
    println!(
        "created only after RemoveImage of their image had begun (no remover can see them), image gone with the \
         container left: {late}"
    );
    println!(
        "trials took {:.1} s ({:.0} ms each: pass, container, re-import); wall time with start-up and teardown \
         follows",
        soak_time.as_secs_f64(),
        soak_time.as_secs_f64() * 1e3 / trials.max(1) as f64
    );
    println!(
        "in-use removed: {in_use_removed} of {trials} trials ({} hit the window)",
        hits.len()
    );

    let footprint = soak.node.ctd.footprint();
    drop(soak);
    let leftovers = footprint.leftovers();
    println!(
        "teardown: {}; wall time {:.1} s",
        if leftovers.is_empty() {
            "nothing left behind".to_owned()
        } else {
            format!("LEFT BEHIND: {leftovers:?}")
        },
        wall.elapsed().as_secs_f64()
    );
    if !leftovers.is_empty() {
        std::process::exit(2);
    }
    if in_use_removed > 0 {
        println!("FAILED: images were removed while a container used them; each one's timeline is printed above");
        std::process::exit(1);
    }
}
