//! A real Kubernetes control plane for integration tests: kube-apiserver
//! v1.20.2 (built from Debian's source package by `scripts/build-kube`) on its
//! own etcd 3.4, per instance, all on 127.0.0.1 free ports, ready when
//! `/readyz` says ok and the system namespaces exist, and a teardown
//! that leaves nothing behind — also after a test process was killed.
//!
//! It follows the project notes on kube-apiserver (`kube-apiserver.md`): the
//! flags, the readiness rule (`GET /readyz` answers `ok`), what 1.20 lacks.
//!
//! # What an instance has
//!
//! - etcd with its data dir in the instance dir, on a tmpfs (`/dev/shm`): this
//!   etcd 3.4 has no `--unsafe-no-fsync`, and tmpfs makes fsync free. Its WAL
//!   preallocates 2 × 64 MiB there while it runs.
//! - kube-apiserver with `--authorization-mode=RBAC`, token identities
//!   ([`User`]), an audit log of every request ([`ControlPlane::audit`]) and
//!   only the API groups scour's tests use ([`API_GROUPS`]); no
//!   kube-controller-manager, so no garbage collection of owned objects, no
//!   namespace deletion and no default ServiceAccount or its token.
//! - No admission webhooks, no API Priority and Fairness, no ServiceAccount
//!   admission (pods need no service account).
//!
//! # Sync and async
//!
//! [`ControlPlane::start`], [`ControlPlane::start_apiserver`],
//! [`ControlPlane::stop_apiserver`] and `Drop` block, and work from plain
//! `#[test]`s and from `#[tokio::test]`s alike (their HTTP calls run on a
//! helper thread with its own runtime). [`ControlPlane::client`] must be
//! called inside a tokio runtime (kube's client spawns a task).
//!
//! ```no_run
//! use scour_testkit::control_plane::{ControlPlane, User, require_control_plane};
//! use k8s_openapi::api::core::v1::ConfigMap;
//! # async fn example() {
//! if !require_control_plane() {
//!     return;
//! }
//! let cp = ControlPlane::start().unwrap();
//! let cms: kube::Api<ConfigMap> = kube::Api::namespaced(cp.client(User::Admin), "default");
//! cms.list(&Default::default()).await.unwrap();
//! let out = cp.kubectl(User::Controller).args(["auth", "can-i", "list", "nodes"]).output().unwrap();
//! assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The kube-apiserver version `scripts/build-kube` builds.
pub const KUBE_VERSION: &str = "v1.20.2";
/// The user of [`User::Admin`] (group `system:masters`: RBAC is bypassed).
pub const ADMIN_USER: &str = "scour-test-admin";
/// The ServiceAccount whose identity [`User::Controller`] has.
pub const CONTROLLER_SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "scour-controller");
/// The ServiceAccount whose identity [`User::Worker`] has.
pub const WORKER_SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "scour-worker");
/// The API group versions served (`--runtime-config=api/all=false,…`).
/// Everything else is off, which halves the apiserver's start-up CPU and RSS.
pub const API_GROUPS: &[&str] = &[
    "v1",
    "apps/v1",
    "authentication.k8s.io/v1",
    "authorization.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "coordination.k8s.io/v1",
    "events.k8s.io/v1",
    "scheduling.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "apiregistration.k8s.io/v1",
];
/// Admission plugins that are on by default in 1.20 and off here: those that
/// watch API groups that are off ([`API_GROUPS`]; their informers would never
/// sync, and the apiserver would never be ready), the webhooks, and
/// ServiceAccount (no controller-manager makes service accounts).
const DISABLED_ADMISSION: &[&str] = &[
    "ServiceAccount",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
    "DefaultStorageClass",
    "PersistentVolumeClaimResize",
    "StorageObjectInUseProtection",
    "RuntimeClass",
    "DefaultIngressClass",
    "CertificateApproval",
    "CertificateSigning",
    "CertificateSubjectRestriction",
];
/// Extra kube-apiserver flags ([`ControlPlane::start_with_args`]) that serve
/// `admissionregistration.k8s.io/v1` and run validating admission webhooks,
/// for tests that make an admission webhook fail. They replace the
/// fixture's `--runtime-config` and `--disable-admission-plugins`.
pub fn validating_webhook_args() -> Vec<String> {
    let groups: Vec<String> = API_GROUPS
        .iter()
        .map(|g| {
            if *g == "v1" {
                "api/v1=true".to_owned()
            } else {
                format!("{g}=true")
            }
        })
        .collect();
    let disabled: Vec<&str> = DISABLED_ADMISSION
        .iter()
        .copied()
        .filter(|p| *p != "ValidatingAdmissionWebhook")
        .collect();
    vec![
        format!(
            "--runtime-config=api/all=false,{},admissionregistration.k8s.io/v1=true",
            groups.join(",")
        ),
        format!("--disable-admission-plugins={}", disabled.join(",")),
    ]
}

/// The service-account issuer and audience.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The `User-Agent` of clients made by [`ControlPlane::client`] (as the audit
/// log shows it).
pub const CLIENT_USER_AGENT: &str = "scour-testkit";

/// How long [`ControlPlane::start`] waits for `/readyz` (2 cores, other tests
/// starting their own instances at the same time).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Start attempts when a port turned out to be taken.
const START_ATTEMPTS: u32 = 5;
/// How long `Drop` lets the processes exit after SIGTERM before SIGKILL (the
/// apiserver's graceful shutdown takes ~1.1 s, and everything is thrown
/// away anyway).
const DROP_GRACE: Duration = Duration::from_millis(100);
/// How long [`ControlPlane::stop_apiserver`] lets it shut down gracefully.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long the teardown waits for SIGKILLed processes to go.
const KILL_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- gate

/// `$SCOUR_KUBE_BIN`, else `<workspace>/.tools/kube/v1.20.2/bin` (made by
/// `scripts/build-kube`, run by `just setup`), when it holds
/// `kube-apiserver` and `etcd`.
pub fn kube_bin_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SCOUR_KUBE_BIN").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.tools/kube")
            .join(KUBE_VERSION)
            .join("bin"),
    };
    ["kube-apiserver", "etcd"]
        .iter()
        .all(|b| dir.join(b).is_file())
        .then_some(dir)
}

/// kubectl: `$SCOUR_KUBECTL`, else `/usr/bin/kubectl`, else on PATH.
pub fn find_kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SCOUR_KUBECTL").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let usr = Path::new("/usr/bin/kubectl");
    if usr.is_file() {
        return Some(usr.to_owned());
    }
    crate::gate::on_path("kubectl")
}

/// True when a control plane can be started: root, and kube-apiserver and
/// etcd in [`kube_bin_dir`]. Otherwise, when `CI` is set (and not empty,
/// `false` or `0`) it panics — in CI these tests must run; elsewhere it
/// writes a `SKIPPED:` line straight to stderr and returns false.
pub fn require_control_plane() -> bool {
    let mut missing: Vec<&str> = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root");
    }
    if kube_bin_dir().is_none() {
        missing.push("kube-apiserver/etcd (scripts/build-kube)");
    }
    missing.is_empty()
        || crate::gate::skip(&format!(
            "needs root and a kube-apiserver {KUBE_VERSION} with etcd (run just setup as root) [missing: {}]",
            missing.join(", ")
        ))
}

/// True when kubectl is there ([`find_kubectl`]); otherwise a skip (a
/// failure in CI). For tests that run [`ControlPlane::kubectl`].
pub fn require_kubectl() -> bool {
    find_kubectl().is_some() || crate::gate::skip("needs kubectl (/usr/bin/kubectl or on PATH)")
}

// ---------------------------------------------------------------- errors

/// A fixture failure, with context (log tails included).
#[derive(Debug, Clone)]
pub struct Error {
    message: String,
    /// A start failed because a port was taken: worth a retry on new ports.
    port_taken: bool,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            port_taken: false,
        }
    }

    fn io(what: impl fmt::Display, e: io::Error) -> Self {
        Self::new(format!("{what}: {e}"))
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

// ---------------------------------------------------------------- identities

/// Who a client, token or kubeconfig speaks as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum User {
    /// [`ADMIN_USER`] in `system:masters`: allowed everything.
    Admin,
    /// `system:serviceaccount:kube-system:scour-controller` with the groups
    /// of a ServiceAccount, so RBAC bindings to the ServiceAccount subject
    /// `kube-system/scour-controller` apply. A bearer token.
    Controller,
    /// `system:serviceaccount:kube-system:scour-worker`, likewise.
    Worker,
    /// Any user name, authenticated by a client certificate (CN = the name,
    /// no organisation) that the fixture issues on first use; its only group
    /// is `system:authenticated`. It has no token: the apiserver reads its
    /// token file once at start.
    Custom(&'static str),
}

impl User {
    /// The user name the apiserver sees.
    pub fn name(&self) -> String {
        match self {
            User::Admin => ADMIN_USER.to_owned(),
            User::Controller => service_account_user(CONTROLLER_SERVICE_ACCOUNT),
            User::Worker => service_account_user(WORKER_SERVICE_ACCOUNT),
            User::Custom(name) => (*name).to_owned(),
        }
    }

    /// Its groups: those of the token file, or, for [`User::Custom`], only
    /// `system:authenticated`, which the apiserver adds for every
    /// authenticated user.
    pub fn groups(&self) -> Vec<String> {
        match self {
            User::Admin => vec!["system:masters".into()],
            User::Controller => service_account_groups(CONTROLLER_SERVICE_ACCOUNT.0),
            User::Worker => service_account_groups(WORKER_SERVICE_ACCOUNT.0),
            User::Custom(_) => vec!["system:authenticated".into()],
        }
    }

    /// A file-name-safe label.
    fn slug(&self) -> String {
        match self {
            User::Admin => "admin".into(),
            User::Controller => "controller".into(),
            User::Worker => "worker".into(),
            User::Custom(name) => format!(
                "custom-{}",
                name.chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
                    .collect::<String>()
            ),
        }
    }

    const TOKEN_USERS: [User; 3] = [User::Admin, User::Controller, User::Worker];
}

fn service_account_user((namespace, name): (&str, &str)) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]
}

// ---------------------------------------------------------------- audit

/// One audit event at stage `ResponseComplete` (policy level Metadata).
/// Fields the apiserver left out are empty (or 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub user: String,
    pub groups: Vec<String>,
    pub user_agent: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    pub request_uri: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
    /// The HTTP status code of the response.
    pub code: u16,
    /// When the response completed (`stageTimestamp`).
    pub time: SystemTime,
}

impl AuditEvent {
    /// Parses one line of the audit log; None for other stages and for lines
    /// that are not audit events.
    pub fn parse(line: &str) -> Option<AuditEvent> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("stage")?.as_str()? != "ResponseComplete" {
            return None;
        }
        let s = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
        let object = &v["objectRef"];
        Some(AuditEvent {
            user: s(&v["user"]["username"]),
            groups: v["user"]["groups"]
                .as_array()
                .map(|g| g.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            user_agent: s(&v["userAgent"]),
            verb: s(&v["verb"]),
            request_uri: s(&v["requestURI"]),
            api_group: s(&object["apiGroup"]),
            api_version: s(&object["apiVersion"]),
            resource: s(&object["resource"]),
            namespace: s(&object["namespace"]),
            name: s(&object["name"]),
            subresource: s(&object["subresource"]),
            code: v["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            time: v["stageTimestamp"]
                .as_str()
                .and_then(parse_rfc3339)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }
}

/// `2024-05-01T12:34:56.123456Z` (UTC, as the audit log writes it).
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
    };
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(days * 86_400 + h * 3600 + m * 60 + s, nanos as u32))
}

// ---------------------------------------------------------------- the fixture

/// How long the last start took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Startup {
    /// From spawning etcd until its `/health` said true (zero after
    /// [`ControlPlane::start_apiserver`]).
    pub etcd: Duration,
    /// From spawning etcd (the apiserver is spawned right after it) until
    /// `/readyz` said ok and the [`SYSTEM_NAMESPACES`] existed.
    pub ready: Duration,
    /// 1, or more when ports were taken.
    pub attempts: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

/// A private etcd + kube-apiserver; see the module docs. Dropping it tears
/// everything down (see [`Footprint::leftovers`] to check).
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    ports: Ports,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    etcd_pid: u32,
    apiserver_pid: u32,
    /// Every PID this instance spawned (for the footprint).
    spawned: BTreeSet<u32>,
    ca_pem: String,
    ca: Issuer<'static, KeyPair>,
    tokens: BTreeMap<User, String>,
    startup: Startup,
    extra_args: Vec<String>,
    /// Custom users whose certificate files exist.
    certified: Mutex<BTreeSet<&'static str>>,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("dir", &self.dir)
            .field("ports", &self.ports)
            .field("etcd_pid", &self.etcd_pid)
            .field("apiserver_pid", &self.apiserver_pid)
            .field("startup", &self.startup)
            .finish()
    }
}

impl ControlPlane {
    /// Creates an instance dir under [`base_dir`], issues a CA, a serving
    /// certificate and the service-account key, writes random tokens, spawns
    /// etcd and kube-apiserver (each in its own process group, logs in the
    /// dir) on free ports, and waits until `/readyz` answers `ok` with the
    /// admin token and the [`SYSTEM_NAMESPACES`] exist ([`READY_TIMEOUT`]).
    /// A port taken between choosing and binding it means a retry on new
    /// ports. On failure everything made so far is torn down again, and the
    /// error carries the logs' last lines.
    ///
    /// First, once per process, tears down instances left behind by test
    /// processes that are gone.
    pub fn start() -> Result<Self> {
        Self::start_with_args(&[])
    }

    /// [`Self::start`] with extra kube-apiserver flags after the fixture's
    /// (a later flag wins), also on [`Self::start_apiserver`].
    pub fn start_with_args(extra_apiserver_args: &[&str]) -> Result<Self> {
        let bin = kube_bin_dir().ok_or_else(|| {
            Error::new(format!(
                "no kube-apiserver {KUBE_VERSION} and etcd: run scripts/build-kube (or set SCOUR_KUBE_BIN)"
            ))
        })?;
        reap_orphans();
        let dir = make_instance_dir()?;
        let mut cp = match Self::prepare(dir.clone(), bin) {
            Ok(cp) => cp,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on, an early return drops `cp`, which cleans up.
        cp.extra_args = extra_apiserver_args.iter().map(|a| (*a).to_owned()).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            cp.ports = pick_ports()?;
            match cp.boot() {
                Ok(mut startup) => {
                    startup.attempts = attempt;
                    cp.startup = startup;
                    return Ok(cp);
                }
                Err(e) if e.port_taken && attempt < START_ATTEMPTS => {
                    let first = e.message().lines().next().unwrap_or_default();
                    warn(&cp.dir, &format!("a port was taken, retrying on new ports: {first}"));
                    cp.terminate(Duration::ZERO);
                    let data = cp.dir.join("etcd");
                    let _ = fs::remove_dir_all(&data);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Certificates, keys, tokens, the audit policy; no process yet.
    fn prepare(dir: PathBuf, bin: PathBuf) -> Result<Self> {
        let pki = dir.join("pki");
        fs::create_dir_all(&pki).map_err(|e| Error::io(format!("creating {}", pki.display()), e))?;
        let tls = |e: rcgen::Error| Error::new(format!("issuing certificates: {e}"));

        let ca_key = KeyPair::generate().map_err(tls)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params.distinguished_name.push(DnType::CommonName, "scour-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca_params.self_signed(&ca_key).map_err(tls)?.pem();
        let ca = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().map_err(tls)?;
        let mut serving = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).map_err(tls)?;
        serving.distinguished_name = rcgen::DistinguishedName::new();
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_pem = serving.signed_by(&serving_key, &ca).map_err(tls)?.pem();

        // ECDSA P-256; 1.20 reads public keys only from `PUBLIC KEY` blocks.
        let sa_key = KeyPair::generate().map_err(tls)?;

        let mut tokens = BTreeMap::new();
        let mut csv = String::new();
        for user in User::TOKEN_USERS {
            let token = random_hex(24)?;
            csv.push_str(&format!(
                "{token},{},uid-{},\"{}\"\n",
                user.name(),
                user.slug(),
                user.groups().join(",")
            ));
            tokens.insert(user, token);
        }

        let files: [(PathBuf, String); 7] = [
            (pki.join("ca.crt"), ca_pem.clone()),
            (pki.join("apiserver.crt"), serving_pem),
            (pki.join("apiserver.key"), serving_key.serialize_pem()),
            (pki.join("sa.key"), sa_key.serialize_pem()),
            (pki.join("sa.pub"), sa_key.public_key_pem()),
            (dir.join("tokens.csv"), csv),
            (
                dir.join("audit-policy.yaml"),
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n- level: Metadata\n"
                    .to_owned(),
            ),
        ];
        for (path, text) in files {
            write_private(&path, &text)?;
        }
        Ok(Self {
            dir,
            bin,
            ports: Ports::default(),
            etcd: None,
            apiserver: None,
            etcd_pid: 0,
            apiserver_pid: 0,
            spawned: BTreeSet::new(),
            ca_pem,
            ca,
            tokens,
            startup: Startup::default(),
            extra_args: Vec::new(),
            certified: Mutex::new(BTreeSet::new()),
        })
    }

    /// Spawns etcd and the apiserver at once (the apiserver retries etcd
    /// until it answers) and waits for both.
    fn boot(&mut self) -> Result<Startup> {
        let started = Instant::now();
        self.spawn_etcd()?;
        self.spawn_apiserver()?;
        let (etcd, ready) = self.wait_ready(started, true)?;
        Ok(Startup {
            etcd: etcd.unwrap_or_default(),
            ready,
            attempts: 1,
        })
    }

    fn spawn_etcd(&mut self) -> Result<()> {
        let p = self.ports;
        let client = format!("http://127.0.0.1:{}", p.etcd_client);
        let peer = format!("http://127.0.0.1:{}", p.etcd_peer);
        let mut cmd = Command::new(self.bin.join("etcd"));
        cmd.arg("--name=scour-test")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=scour-test={peer}"))
            // One member: no peer to wait for, so a short election (a
            // leader after ~0.1 s instead of ~0.3–1.1 s; the apiserver
            // waits for it).
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        let child = self.spawn(cmd, "etcd.log")?;
        self.etcd_pid = child.id();
        self.etcd = Some(child);
        self.record_pids()
    }

    fn spawn_apiserver(&mut self) -> Result<()> {
        let d = &self.dir;
        let pki = d.join("pki");
        let path = |p: PathBuf| p.display().to_string();
        let runtime_config = std::iter::once("api/all=false".to_owned())
            .chain(API_GROUPS.iter().map(|g| {
                if *g == "v1" {
                    "api/v1=true".to_owned()
                } else {
                    format!("{g}=true")
                }
            }))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(self.bin.join("kube-apiserver"));
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{}", self.ports.etcd_client))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.ports.apiserver))
            .arg("--insecure-port=0")
            .arg(format!("--cert-dir={}", path(pki.clone())))
            .arg(format!("--tls-cert-file={}", path(pki.join("apiserver.crt"))))
            .arg(format!("--tls-private-key-file={}", path(pki.join("apiserver.key"))))
            .arg(format!("--client-ca-file={}", path(pki.join("ca.crt"))))
            .arg(format!("--token-auth-file={}", path(d.join("tokens.csv"))))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
            .arg(format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"))
            .arg(format!("--service-account-key-file={}", path(pki.join("sa.pub"))))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path(pki.join("sa.key"))
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            // List flags add up when repeated: extra args that set one
            // replace the fixture's.
            .args(
                (!self
                    .extra_args
                    .iter()
                    .any(|a| a.starts_with("--disable-admission-plugins=")))
                .then(|| format!("--disable-admission-plugins={}", DISABLED_ADMISSION.join(","))),
            )
            .args(
                (!self.extra_args.iter().any(|a| a.starts_with("--runtime-config=")))
                    .then(|| format!("--runtime-config={runtime_config}")),
            )
            .arg("--enable-priority-and-fairness=false")
            .arg("--allow-privileged=true")
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--audit-policy-file={}", path(d.join("audit-policy.yaml"))))
            .arg(format!("--audit-log-path={}", path(d.join("audit.log"))))
            .args(&self.extra_args);
        let child = self.spawn(cmd, "apiserver.log")?;
        self.apiserver_pid = child.id();
        self.apiserver = Some(child);
        self.record_pids()
    }

    fn spawn(&mut self, mut cmd: Command, log: &str) -> Result<Child> {
        let log_path = self.dir.join(log);
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .current_dir(&self.dir)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(format!("spawning {program}"), e))?;
        self.spawned.insert(child.id());
        Ok(child)
    }

    /// Waits until `/readyz` says ok (and, when `etcd_too`, notes when etcd's
    /// `/health` first said true). Returns (etcd ready, apiserver ready),
    /// measured from `started`.
    fn wait_ready(&mut self, started: Instant, etcd_too: bool) -> Result<(Option<Duration>, Duration)> {
        let config = self.config(User::Admin, false)?;
        let etcd_port = self.ports.etcd_client;
        let (Some(etcd), Some(apiserver)) = (self.etcd.as_mut(), self.apiserver.as_mut()) else {
            return Err(Error::new("etcd or the apiserver is not running"));
        };
        let outcome = on_helper_thread(async move {
            let client = kube::Client::try_from(config).map_err(|e| ("fixture", format!("building a client: {e}")))?;
            let etcd_probe = etcd_too.then(|| {
                tokio::spawn(async move {
                    while !etcd_healthy(etcd_port).await {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    started.elapsed()
                })
            });
            let mut last: String;
            loop {
                if let Ok(Some(status)) = etcd.try_wait() {
                    return Err(("etcd", format!("etcd exited during start-up ({status})")));
                }
                if let Ok(Some(status)) = apiserver.try_wait() {
                    return Err(("apiserver", format!("kube-apiserver exited during start-up ({status})")));
                }
                match ready(&client).await {
                    Ok(()) => {
                        let ready = started.elapsed();
                        let etcd_ready = match etcd_probe {
                            Some(probe) if probe.is_finished() => probe.await.ok(),
                            Some(probe) => {
                                probe.abort();
                                None
                            }
                            None => None,
                        };
                        return Ok((etcd_ready, ready));
                    }
                    Err(why) => last = why,
                }
                if started.elapsed() >= READY_TIMEOUT {
                    let verbose = match readyz(&client, "/readyz?verbose").await {
                        Ok(()) => "ok".to_owned(),
                        Err(why) => why,
                    };
                    return Err((
                        "apiserver",
                        format!("/readyz not ok within {READY_TIMEOUT:?}; last answer: {last}\n{verbose}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .unwrap_or_else(|e| Err(("fixture", e.to_string())));
        match outcome {
            Ok(times) => Ok(times),
            Err((which, why)) => {
                let apiserver_log = self.log_tail("apiserver.log", 30);
                let etcd_log = self.log_tail("etcd.log", if which == "etcd" { 30 } else { 8 });
                let port_taken = [&apiserver_log, &etcd_log]
                    .iter()
                    .any(|log| log.contains("address already in use"));
                Err(Error {
                    message: format!(
                        "control plane in {} ({:?}): {why}\n--- tail of apiserver.log ---\n{apiserver_log}\n--- tail of etcd.log ---\n{etcd_log}",
                        self.dir.display(),
                        self.ports
                    ),
                    port_taken,
                })
            }
        }
    }

    // ------------------------------------------------------------ accessors

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The apiserver's port.
    pub fn port(&self) -> u16 {
        self.ports.apiserver
    }

    /// etcd's client URL (`http://127.0.0.1:PORT`).
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.etcd_client)
    }

    /// The CA that signed the serving certificate (and client certificates).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `DIR/pki/ca.crt`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// The bearer token of a token user. Panics for [`User::Custom`], which
    /// authenticates with a client certificate instead.
    pub fn token(&self, user: User) -> String {
        match self.tokens.get(&user) {
            Some(token) => token.clone(),
            None => panic!("{user:?} has no token: custom users authenticate with a client certificate"),
        }
    }

    /// How long the (last) start took.
    pub fn startup(&self) -> Startup {
        self.startup
    }

    /// The instance dir (gone after drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (etcd, kube-apiserver) PIDs (the last ones, also after they stopped).
    pub fn pids(&self) -> (u32, u32) {
        (self.etcd_pid, self.apiserver_pid)
    }

    /// `DIR/apiserver.log` (all runs of the apiserver, appended).
    pub fn apiserver_log(&self) -> PathBuf {
        self.dir.join("apiserver.log")
    }

    /// `DIR/etcd.log`.
    pub fn etcd_log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// `DIR/audit.log`.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The last `lines` lines of a log in the instance dir.
    pub fn log_tail(&self, log: &str, lines: usize) -> String {
        let path = self.dir.join(log);
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", path.display()),
        }
    }

    // ------------------------------------------------------------ clients

    /// A kubeconfig file for `user` (written on first use): the server, the
    /// CA, and the token (or, for [`User::Custom`], the client certificate).
    /// For kubectl and for a `scour controller` process (`KUBECONFIG`).
    pub fn kubeconfig(&self, user: User) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{}.yaml", user.slug()));
        if !path.exists() {
            let text = self.kubeconfig_text(user);
            if let Err(e) = write_private(&path, &text) {
                panic!("writing {}: {e}", path.display());
            }
        }
        path
    }

    fn kubeconfig_text(&self, user: User) -> String {
        let credentials = match user {
            User::Custom(name) => {
                let (cert, key) = self.client_certificate(name);
                format!(
                    "    client-certificate: {}\n    client-key: {}\n",
                    cert.display(),
                    key.display()
                )
            }
            _ => format!("    token: {}\n", self.token(user)),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: scour-test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {}\n  user:\n{credentials}contexts:\n- name: scour-test\n  context:\n    cluster: scour-test\n    user: {}\n    namespace: default\ncurrent-context: scour-test\n",
            self.url(),
            self.ca_path().display(),
            user.slug(),
            user.slug(),
        )
    }

    /// `DIR/pki/<user>.crt` and `.key`, issued on first use.
    fn client_certificate(&self, name: &'static str) -> (PathBuf, PathBuf) {
        let slug = User::Custom(name).slug();
        let cert = self.dir.join("pki").join(format!("{slug}.crt"));
        let key = self.dir.join("pki").join(format!("{slug}.key"));
        let mut certified = self.certified.lock().unwrap_or_else(|e| e.into_inner());
        if !certified.contains(name) {
            let issue = || -> std::result::Result<(String, String), rcgen::Error> {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                params.distinguished_name = rcgen::DistinguishedName::new();
                params.distinguished_name.push(DnType::CommonName, name);
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                Ok((params.signed_by(&key, &self.ca)?.pem(), key.serialize_pem()))
            };
            let (cert_pem, key_pem) =
                issue().unwrap_or_else(|e| panic!("issuing a client certificate for {name}: {e}"));
            for (path, text) in [(&cert, cert_pem), (&key, key_pem)] {
                if let Err(e) = write_private(path, &text) {
                    panic!("writing {}: {e}", path.display());
                }
            }
            certified.insert(name);
        }
        (cert, key)
    }

    /// A kube-rs config for `user`, read from its kubeconfig, with
    /// [`CLIENT_USER_AGENT`] as User-Agent.
    pub fn kube_config(&self, user: User) -> kube::Config {
        self.config(user, true)
            .unwrap_or_else(|e| panic!("a client config for {user:?}: {e}"))
    }

    fn config(&self, user: User, retry: bool) -> Result<kube::Config> {
        let text = self.kubeconfig_text(user);
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text)
            .map_err(|e| Error::new(format!("reading the kubeconfig of {user:?}: {e}")))?;
        let mut config =
            kube::Config::try_from(kubeconfig).map_err(|e| Error::new(format!("a client config for {user:?}: {e}")))?;
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(CLIENT_USER_AGENT),
        ));
        if !retry {
            config.default_retry = false;
            config.connect_timeout = Some(Duration::from_secs(2));
            config.read_timeout = Some(Duration::from_secs(10));
        }
        Ok(config)
    }

    /// A kube client speaking as `user`. Call it inside a tokio runtime.
    pub fn client(&self, user: User) -> kube::Client {
        kube::Client::try_from(self.kube_config(user)).unwrap_or_else(|e| panic!("a kube client for {user:?}: {e}"))
    }

    /// kubectl ([`find_kubectl`]) with `--kubeconfig` for `user` and its
    /// discovery cache in the instance dir. Check [`require_kubectl`] first.
    pub fn kubectl(&self, user: User) -> Command {
        let mut cmd = Command::new(find_kubectl().unwrap_or_else(|| PathBuf::from("kubectl")));
        cmd.env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(self.kubeconfig(user))
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"));
        cmd
    }

    // ------------------------------------------------------------ audit

    /// The audit log's `ResponseComplete` events so far, oldest first. The
    /// apiserver writes an event right after the response: one for a request
    /// that just returned may be a few milliseconds late (see
    /// [`Self::wait_for_audit`]).
    pub fn audit(&self) -> Vec<AuditEvent> {
        let Ok(text) = fs::read_to_string(self.audit_log()) else {
            return Vec::new();
        };
        text.lines().filter_map(AuditEvent::parse).collect()
    }

    /// Polls [`Self::audit`] until `done` holds for the events (up to
    /// `timeout`); returns the last events read either way. It blocks the
    /// calling thread (in a `#[tokio::test]`, the runtime's tasks wait).
    pub fn wait_for_audit(&self, timeout: Duration, done: impl Fn(&[AuditEvent]) -> bool) -> Vec<AuditEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.audit();
            if done(&events) || Instant::now() >= deadline {
                return events;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    // ------------------------------------------------------------ apiserver outage

    /// Stops the apiserver (SIGTERM; SIGKILL if it has not exited within 15 s)
    /// and reaps it. etcd keeps running with its data.
    pub fn stop_apiserver(&mut self) {
        let mut apiserver = self.apiserver.take();
        terminate(&mut [("kube-apiserver", &mut apiserver)], STOP_GRACE, |m| {
            warn(&self.dir, m)
        });
    }

    /// Whether the apiserver process is running (reaps it if it exited).
    pub fn apiserver_running(&mut self) -> bool {
        running(&mut self.apiserver)
    }

    /// Starts the apiserver again on the same port and etcd and waits until
    /// it is ready (it stops a running one first). No retry on another port:
    /// the URL stays.
    pub fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_some() {
            self.stop_apiserver();
        }
        let started = Instant::now();
        self.spawn_apiserver()?;
        let (_, ready) = self.wait_ready(started, false)?;
        self.startup = Startup {
            etcd: Duration::ZERO,
            ready,
            attempts: 1,
        };
        Ok(())
    }

    // ------------------------------------------------------------ footprint

    /// Everything that refers to this instance: its dir, the PIDs it spawned
    /// and its ports. Take it before dropping the fixture, then check
    /// [`Footprint::leftovers`] afterwards.
    pub fn footprint(&self) -> Footprint {
        let p = self.ports;
        Footprint {
            dir: self.dir.clone(),
            pids: self.spawned.clone(),
            ports: [p.etcd_client, p.etcd_peer, p.apiserver]
                .into_iter()
                .filter(|&p| p != 0)
                .collect(),
        }
    }

    // ------------------------------------------------------------ teardown

    /// SIGTERM to both, SIGKILL to what is left after `grace`, reap.
    fn terminate(&mut self, grace: Duration) {
        let mut apiserver = self.apiserver.take();
        let mut etcd = self.etcd.take();
        terminate(
            &mut [("kube-apiserver", &mut apiserver), ("etcd", &mut etcd)],
            grace,
            |m| warn(&self.dir, m),
        );
    }

    fn record_pids(&self) -> Result<()> {
        let text = format!("etcd {}\napiserver {}\n", self.etcd_pid, self.apiserver_pid);
        let path = self.dir.join("pids");
        let tmp = self.dir.join("pids.tmp");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Never panic here: a panic while unwinding aborts the test binary.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.terminate(DROP_GRACE);
            remove_instance_dir(&self.dir);
        }));
        if let Err(panic) = result {
            warn(&self.dir, &format!("teardown panicked: {}", panic_message(&*panic)));
        }
    }
}

// ---------------------------------------------------------------- footprint

/// What refers to one instance (see [`ControlPlane::footprint`]); it outlives
/// the fixture so that a test can check the teardown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub dir: PathBuf,
    pub pids: BTreeSet<u32>,
    pub ports: BTreeSet<u16>,
}

impl Footprint {
    /// Everything still referring to the instance, one line each; empty after
    /// a complete teardown: live processes it spawned or that name its dir,
    /// its ports in LISTEN state, and the dir itself.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for pid in live_pids() {
            if pid == std::process::id() {
                continue;
            }
            let args = cmdline(pid);
            // A recorded PID counts while it is still etcd or the apiserver
            // (or a dying zombie, whose command line is empty), not once an
            // unrelated process has it.
            let ours = self.pids.contains(&pid)
                && args
                    .first()
                    .is_none_or(|a| a.ends_with("/etcd") || a.ends_with("/kube-apiserver"));
            if ours || args.iter().any(|a| mentions(a, &self.dir)) {
                found.push(format!("process {pid}: {}", args.join(" ")));
            }
        }
        for port in listening_ports() {
            if self.ports.contains(&port) {
                found.push(format!("port {port} listening"));
            }
        }
        if self.dir.symlink_metadata().is_ok() {
            found.push(format!("directory {}", self.dir.display()));
        }
        found
    }
}

// ---------------------------------------------------------------- helpers

/// Runs `future` on a fresh current-thread runtime on a helper thread, so it
/// works both inside and outside a tokio runtime.
fn on_helper_thread<F>(future: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name("control-plane".into())
            .spawn_scoped(scope, move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(future))
            })
            .map_err(|e| Error::io("spawning a helper thread", e))?;
        match handle.join() {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => Err(Error::io("building a tokio runtime", e)),
            Err(panic) => Err(Error::new(format!(
                "the helper thread panicked: {}",
                panic_message(&*panic)
            ))),
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

/// The namespaces a cluster has from the start. The apiserver makes them
/// itself, `default` only after `/readyz` first said ok.
pub const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Ready for tests: `/readyz` says ok and the [`SYSTEM_NAMESPACES`] exist.
async fn ready(client: &kube::Client) -> std::result::Result<(), String> {
    readyz(client, "/readyz").await?;
    for ns in SYSTEM_NAMESPACES {
        let request = http::Request::get(format!("/api/v1/namespaces/{ns}"))
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        if let Err(e) = client.request_text(request).await {
            return Err(format!("namespace {ns}: {e}"));
        }
    }
    Ok(())
}

async fn readyz(client: &kube::Client, path: &str) -> std::result::Result<(), String> {
    let request = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(text) if text.trim() == "ok" => Ok(()),
        Ok(text) => Err(format!("{path} said:\n{text}")),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// etcd's `GET /health` says `"health":"true"`.
async fn etcd_healthy(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), probe).await,
        Ok(Some(true))
    )
}

fn running(child: &mut Option<Child>) -> bool {
    match child.as_mut().map(Child::try_wait) {
        Some(Ok(None)) => true,
        Some(Ok(Some(_))) => {
            *child = None;
            false
        }
        Some(Err(_)) => true,
        None => false,
    }
}

/// SIGTERM to each running child, SIGKILL to those still running after
/// `grace`, then reap them all; what goes wrong goes to `warn`.
pub(crate) fn terminate(children: &mut [(&str, &mut Option<Child>)], grace: Duration, warn: impl Fn(&str)) {
    for (what, child) in children.iter_mut() {
        if let Some(c) = child.as_mut()
            && let Ok(None) = c.try_wait()
            && let Err(e) = nix::sys::signal::kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM)
            && e != nix::errno::Errno::ESRCH
        {
            warn(&format!("SIGTERM to {what} ({}): {e}", c.id()));
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut alive = 0;
        for (_, child) in children.iter_mut() {
            if let Some(c) = child.as_mut()
                && let Ok(None) = c.try_wait()
            {
                alive += 1;
            }
        }
        if alive == 0 || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    for (what, child) in children.iter_mut() {
        if let Some(mut c) = child.take() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            if let Err(e) = c.wait() {
                warn(&format!("waiting for {what} ({}): {e}", c.id()));
            }
        }
    }
}

fn remove_instance_dir(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn(dir, &format!("removing the instance dir: {e}"));
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Three distinct free ports on 127.0.0.1, never handed out before in this
/// process (another process may still take one before etcd or the apiserver
/// binds it: the start then retries).
fn pick_ports() -> Result<Ports> {
    static GIVEN: OnceLock<Mutex<BTreeSet<u16>>> = OnceLock::new();
    let mut given = GIVEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..64 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading a local address", e))?
            .port();
        if given.insert(port) {
            ports.push(port);
            if ports.len() == 3 {
                return Ok(Ports {
                    etcd_client: ports[0],
                    etcd_peer: ports[1],
                    apiserver: ports[2],
                });
            }
        }
        // Held until the end, so that the kernel hands out distinct ports.
        listeners.push(listener);
    }
    Err(Error::new("no three unused ports on 127.0.0.1"))
}

// ---------------------------------------------------------------- instance dirs and orphans

/// Where instance dirs live: `/dev/shm/scour-control-plane` (a tmpfs, for
/// etcd), else `$TMPDIR/scour-control-plane`.
pub fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join("scour-control-plane")
    } else {
        std::env::temp_dir().join("scour-control-plane")
    }
}

/// `BASE/<pid>-<n>` with an `owner` file: this process's PID and start time.
fn make_instance_dir() -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = base_dir();
    fs::create_dir_all(&base).map_err(|e| Error::io(format!("creating {}", base.display()), e))?;
    let me = std::process::id();
    let owner = format!("{me} {}\n", start_time(me).unwrap_or_default());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{me}-{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::write(dir.join("owner"), &owner)
                    .map_err(|e| Error::io(format!("writing {}/owner", dir.display()), e))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
        }
    }
}

/// [`reap_orphans_now`], once per process ([`ControlPlane::start`] calls it).
pub fn reap_orphans() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(reap_orphans_now);
}

/// Tears down the instances of test processes that are gone (SIGKILL,
/// abort): an instance dir whose `owner` process no longer runs (or is
/// another process with a reused PID). Its recorded etcd and apiserver PIDs
/// are killed only when their command line still names the dir, so a reused
/// PID is never killed.
pub fn reap_orphans_now() {
    let Ok(entries) = fs::read_dir(base_dir()) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = fs::read_to_string(dir.join("owner")).ok();
        let (pid, started) = match owner
            .as_deref()
            .map(str::split_whitespace)
            .map(|mut w| (w.next(), w.next()))
        {
            Some((Some(pid), started)) => (
                pid.parse::<u32>().ok(),
                started.and_then(|s| s.parse::<u64>().ok()).filter(|&s| s != 0),
            ),
            _ => (name.split('-').next().and_then(|p| p.parse().ok()), None),
        };
        let Some(pid) = pid else { continue };
        if pid == me {
            continue;
        }
        let alive = match (start_time(pid), started) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if alive {
            continue;
        }
        warn(
            &dir,
            &format!("left behind by process {pid}, which is gone; tearing it down"),
        );
        let recorded: Vec<u32> = fs::read_to_string(dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .filter(|&p| p != 0)
            .collect();
        let ours: Vec<u32> = recorded
            .into_iter()
            .filter(|&p| cmdline(p).iter().any(|a| mentions(a, &dir)))
            .collect();
        kill_and_wait(&dir, &ours);
        remove_instance_dir(&dir);
    }
}

fn kill_and_wait(dir: &Path, pids: &[u32]) {
    for &pid in pids {
        if let Err(e) = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
            && e != nix::errno::Errno::ESRCH
        {
            warn(dir, &format!("killing {pid}: {e}"));
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    while pids.iter().any(|&pid| is_alive(pid)) {
        if Instant::now() >= deadline {
            warn(dir, &format!("{pids:?} still alive {KILL_WAIT:?} after SIGKILL"));
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn warn(dir: &Path, message: &str) {
    let _ = writeln!(io::stderr().lock(), "control plane {}: {message}", dir.display());
}

// ---------------------------------------------------------------- /proc

fn live_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| is_alive(pid))
        .collect()
}

fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    Some(stat.get(close + 1..)?.split_whitespace().map(str::to_owned).collect())
}

/// Running, or a zombie whose other threads still exit (a killed Go program's
/// main thread turns zombie before the rest of it has closed its sockets).
fn is_alive(pid: u32) -> bool {
    match stat_fields(pid).and_then(|f| f.into_iter().next()) {
        None => false,
        Some(state) if matches!(state.as_str(), "Z" | "X") => {
            fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| tasks.count() > 1)
        }
        Some(_) => true,
    }
}

/// The start time of a process (clock ticks since boot), to tell a reused PID.
fn start_time(pid: u32) -> Option<u64> {
    // Field 22 of stat; fields after the name start at field 3.
    stat_fields(pid)?.get(19)?.parse().ok()
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

/// Local ports in LISTEN state (IPv4 and IPv6).
fn listening_ports() -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A")
                && let Some(port) = fields
                    .get(1)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_timestamps_parse_as_utc() {
        let t = parse_rfc3339("2021-01-13T13:20:00.123456Z").unwrap();
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since.as_secs(), 1_610_544_000);
        assert_eq!(since.subsec_micros(), 123_456);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(SystemTime::UNIX_EPOCH));
        assert_eq!(parse_rfc3339("2021-01-13 13:20:00"), None);
    }

    #[test]
    fn audit_lines_parse_response_complete_only() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/configmaps/a","verb":"get","user":{"username":"scour-test-admin","groups":["system:masters","system:authenticated"]},"sourceIPs":["127.0.0.1"],"userAgent":"scour-testkit","objectRef":{"resource":"configmaps","namespace":"default","name":"a","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":404},"requestReceivedTimestamp":"2021-01-13T13:20:00.000000Z","stageTimestamp":"2021-01-13T13:20:00.001000Z"}"#;
        let event = AuditEvent::parse(line).unwrap();
        assert_eq!(event.user, "scour-test-admin");
        assert_eq!(event.groups, ["system:masters", "system:authenticated"]);
        assert_eq!(event.user_agent, "scour-testkit");
        assert_eq!(event.verb, "get");
        assert_eq!(event.resource, "configmaps");
        assert_eq!(event.namespace, "default");
        assert_eq!(event.name, "a");
        assert_eq!(event.api_group, "");
        assert_eq!(event.subresource, "");
        assert_eq!(event.code, 404);
        assert!(AuditEvent::parse(&line.replace("ResponseComplete", "ResponseStarted")).is_none());
        assert!(AuditEvent::parse("not json").is_none());
    }

    #[test]
    fn mentions_respects_name_boundaries() {
        let dir = Path::new("/dev/shm/scour-control-plane/12-1");
        assert!(mentions("--data-dir=/dev/shm/scour-control-plane/12-1/etcd", dir));
        assert!(!mentions("--data-dir=/dev/shm/scour-control-plane/12-10/etcd", dir));
    }

    #[test]
    fn users_have_service_account_identities() {
        assert_eq!(
            User::Controller.name(),
            "system:serviceaccount:kube-system:scour-controller"
        );
        assert_eq!(
            User::Worker.groups(),
            [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated"
            ]
        );
        assert_eq!(User::Custom("a b").slug(), "custom-a_b");
    }

    #[test]
    fn picked_ports_are_distinct_and_never_repeat() {
        let a = pick_ports().unwrap();
        let b = pick_ports().unwrap();
        let all: BTreeSet<u16> = [
            a.etcd_client,
            a.etcd_peer,
            a.apiserver,
            b.etcd_client,
            b.etcd_peer,
            b.apiserver,
        ]
        .into_iter()
        .collect();
        assert_eq!(all.len(), 6);
    }
}
