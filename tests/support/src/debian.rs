//! Real-sized test images from a real Debian 12 root filesystem.
//!
//! [`rootfs`] runs `debootstrap --variant=minbase bookworm DIR MIRROR` once,
//! with MIRROR taken from the machine's own apt sources (see [`mirror`]), and
//! packs the tree into one deterministic layer tar (entries sorted by path,
//! mtime [`crate::images::MTIME`], the tree's own numeric uid/gid and modes,
//! no user/group names; nothing under `dev/`, `proc/` or `sys/`), so the
//! layer digest is the same on every run from the same tree. Logs, ldconfig's
//! aux cache and the shadow password-change day are cleared first (as for the
//! official Debian images), so two bootstraps of the same package versions
//! give the same digest too. Both are cached
//! in [`cache_dir`] (`<target>/testkit/debian/`), keyed by suite and variant:
//!
//! ```text
//! debian/bookworm-minbase/        the root filesystem (~210 MB)
//! debian/bookworm-minbase.tar     its layer tar (~210 MB)
//! debian/bookworm-minbase.json    diff id, size and build times (written last)
//! debian/bookworm-minbase.tar.gz  the tar gzip-compressed (`gzip -n`, ~75 MB), on first use
//! debian/bookworm-minbase.tar.gz.sha256  its digest and size
//! debian/bookworm-minbase.lock    flock: one builder at a time, across processes
//! debian/bookworm-minbase.log     debootstrap's output
//! ```
//!
//! The cold build takes about 1.5 min (debootstrap, then the tar); every
//! later call only reads the `.json`. Builders work in temp paths beside
//! the results and rename them into place, so a killed build leaves nothing
//! that looks finished (the next builder removes its leftovers).
//!
//! The images ([`base_image`], [`variant_image`], [`language_image`]) use the
//! cached tar as a [`Layer::from_tar_file`] layer held gzip-compressed, as
//! an image pulled from a registry holds its layers (so a scan pays for
//! decompressing it, as on a real node): it is streamed from disk when an
//! image is written, never rebuilt or held in memory, and variants share it
//! (N variants = N image ids, one 200 MB layer).
//!
//! Tests gate on [`require_debian`] (root, debootstrap and a reachable
//! mirror, unless the cache is already built): it skips loudly locally and
//! fails under `CI` ([`crate::gate::skip`]).
//!
//! For advisories against real packages, [`Rootfs::packages`] reads the
//! tree's `/var/lib/dpkg/status` (binary package → source package and source
//! version), and [`DpkgPackage::fixable_advisory`] writes one in bucket
//! [`OS_BUCKET`] on the source package, fixed just above the installed
//! version (see [`crate::trivydb`] for the bucket layout).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::images::{self, HashingWriter, Layer, TarFile, TestImage};
use crate::trivydb::Advisory;

/// The Debian suite bootstrapped.
pub const SUITE: &str = "bookworm";
/// debootstrap's `--variant`.
pub const VARIANT: &str = "minbase";
/// The Trivy DB bucket of the suite's advisories.
pub const OS_BUCKET: &str = "debian 12";
/// The smallest acceptable layer tar; a minbase bookworm is ~210 MB.
pub const MIN_ROOTFS_BYTES: u64 = 150_000_000;
/// Overrides the mirror read from the apt sources.
pub const MIRROR_ENV: &str = "SCOUR_DEBIAN_MIRROR";
/// The apt sources read for the mirror, deb822 first.
pub const DEB822_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
pub const LEGACY_SOURCES: &str = "/etc/apt/sources.list";
/// npm packages of [`language_image`] (name, version), as
/// `usr/local/lib/node_modules/<name>/package.json`; Trivy's `node-pkg`
/// analyzer reports them (type `node-pkg`).
pub const NPM_PACKAGES: [(&str, &str); 2] = [("lodash", "4.17.20"), ("minimist", "1.2.5")];
/// Python packages of [`language_image`] (name, version), as
/// `usr/local/lib/python3.11/dist-packages/<name>-<version>.dist-info/METADATA`;
/// Trivy's `python-pkg` analyzer reports them (type `python-pkg`).
pub const PYTHON_PACKAGES: [(&str, &str); 1] = [("requests", "2.25.0")];

/// `<target>/testkit/debian`, where the root filesystems are cached.
pub fn cache_dir() -> PathBuf {
    images::testkit_cache_dir().join("debian")
}

fn key() -> String {
    format!("{SUITE}-{VARIANT}")
}

// ---------------------------------------------------------------- gate

/// Ok when [`rootfs`] can work: its cache is built, or it can be built
/// (root, debootstrap installed, a mirror in the apt sources that answers).
/// Otherwise a message naming everything that is missing.
pub fn available() -> Result<(), String> {
    if Paths::new(&cache_dir()).load().is_some() {
        return Ok(());
    }
    can_build()
}

/// [`available`], or a loud skip (a failure when `CI` is set).
pub fn require_debian() -> bool {
    match available() {
        Ok(()) => true,
        Err(why) => crate::gate::skip(&why),
    }
}

fn can_build() -> Result<(), String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (debootstrap must run as root)".to_owned());
    }
    if debootstrap_binary().is_none() {
        missing.push("debootstrap (run just setup, or apt-get install debootstrap)".to_owned());
    }
    match mirror() {
        Ok(url) => {
            if let Err(e) = probe_mirror(&url) {
                missing.push(e);
            }
        }
        Err(e) => missing.push(e),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cannot build the Debian {SUITE} test root filesystem in {}: missing {}",
            cache_dir().display(),
            missing.join("; ")
        ))
    }
}

fn debootstrap_binary() -> Option<PathBuf> {
    crate::gate::on_path("debootstrap").or_else(|| {
        ["/usr/sbin/debootstrap", "/sbin/debootstrap"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

/// Asks the mirror for the suite's `InRelease` (with wget, which
/// debootstrap itself uses; skipped when wget is missing).
fn probe_mirror(url: &str) -> Result<(), String> {
    let release = format!("{}/dists/{SUITE}/InRelease", url.trim_end_matches('/'));
    let Some(wget) = crate::gate::on_path("wget") else {
        return Ok(());
    };
    let status = Command::new(wget)
        .args(["-q", "--spider", "--tries=1", "--timeout=15"])
        .arg(&release)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("a reachable Debian mirror ({release} failed: wget {s})")),
        Err(e) => Err(format!("a reachable Debian mirror (running wget: {e})")),
    }
}

// ---------------------------------------------------------------- mirror

/// The Debian mirror: `$SCOUR_DEBIAN_MIRROR`, else the first `URIs:` of the
/// deb822 stanza in [`DEB822_SOURCES`] whose `Suites:` lists the main suite
/// (not `-security`/`-updates`), else the first matching `deb` line of
/// [`LEGACY_SOURCES`].
pub fn mirror() -> Result<String, String> {
    if let Some(url) = std::env::var(MIRROR_ENV).ok().filter(|v| !v.trim().is_empty()) {
        return Ok(url.trim().trim_end_matches('/').to_owned());
    }
    let deb822 = fs::read_to_string(DEB822_SOURCES).ok();
    let legacy = fs::read_to_string(LEGACY_SOURCES).ok();
    mirror_from_sources(deb822.as_deref(), legacy.as_deref()).ok_or_else(|| {
        format!(
            "a Debian mirror (no main-suite `URIs:` in {DEB822_SOURCES} and no `deb` line in {LEGACY_SOURCES}; \
             set {MIRROR_ENV})"
        )
    })
}

/// The mirror named by apt sources (see [`mirror`]): a stanza or line for
/// [`SUITE`] wins, else one for any main suite (a name without `-`, so not
/// `bookworm-security`); `cdrom:`/`file:` sources are ignored.
pub fn mirror_from_sources(deb822: Option<&str>, legacy: Option<&str>) -> Option<String> {
    // (uri, suites) of every binary source, in file order.
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    for stanza in deb822.unwrap_or_default().split("\n\n") {
        let mut fields: HashMap<String, String> = HashMap::new();
        let mut last: Option<String> = None;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(k) = &last
                    && let Some(v) = fields.get_mut(k)
                {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                fields.insert(k.clone(), v.trim().to_owned());
                last = Some(k);
            }
        }
        let enabled = fields.get("enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        let binary = fields
            .get("types")
            .is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        if let (true, true, Some(uris), Some(suites)) = (enabled, binary, fields.get("uris"), fields.get("suites")) {
            let suites: Vec<String> = suites.split_whitespace().map(str::to_owned).collect();
            for uri in uris.split_whitespace() {
                sources.push((uri.to_owned(), suites.clone()));
            }
        }
    }
    for line in legacy.unwrap_or_default().lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
            rest.drain(..=end);
        }
        if let [uri, suite, ..] = rest[..] {
            sources.push((uri.to_owned(), vec![suite.to_owned()]));
        }
    }
    sources.retain(|(uri, _)| uri.starts_with("http://") || uri.starts_with("https://"));
    let pick = |want: &dyn Fn(&str) -> bool| {
        sources
            .iter()
            .find(|(_, suites)| suites.iter().any(|s| want(s)))
            .map(|(uri, _)| uri.trim_end_matches('/').to_owned())
    };
    pick(&|s| s == SUITE).or_else(|| pick(&|s| !s.contains('-') && !s.contains('/')))
}

// ---------------------------------------------------------------- the root filesystem

/// The cached root filesystem and its layer tar; see [`rootfs`].
#[derive(Clone, Debug)]
pub struct Rootfs {
    dir: PathBuf,
    tar: TarFile,
    mirror: String,
    /// Seconds of the cold build's debootstrap and tar runs, as recorded.
    debootstrap_seconds: f64,
    tar_seconds: f64,
    /// Set when this process built it (rather than finding it cached).
    built_here: bool,
}

/// The Debian root filesystem, built on first use by any process (see the
/// module docs) and loaded from the cache afterwards; the same value for
/// every call in a process. Panics with what is missing (not root, no
/// debootstrap, no mirror or an unreachable one) when it has to build and
/// cannot.
pub fn rootfs() -> &'static Rootfs {
    static ROOTFS: OnceLock<Rootfs> = OnceLock::new();
    ROOTFS.get_or_init(|| build_or_load(&cache_dir()).unwrap_or_else(|e| panic!("{e}")))
}

impl Rootfs {
    /// The root filesystem tree.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layer tar of [`Rootfs::dir`].
    pub fn tar(&self) -> &TarFile {
        &self.tar
    }

    /// The tar as a layer held gzip-compressed, as an image pulled from a
    /// registry holds it, with `created_by` naming the debootstrap run.
    pub fn layer(&self) -> Layer {
        static GZIPPED: OnceLock<TarFile> = OnceLock::new();
        let tar = GZIPPED.get_or_init(|| {
            self.tar
                .clone()
                .gzipped()
                .unwrap_or_else(|e| panic!("compressing {}: {e}", self.tar.path.display()))
        });
        let mut layer = Layer::from_tar_file(tar.clone());
        layer.created_by = Some(format!("debootstrap --variant={VARIANT} {SUITE} / {}", self.mirror));
        layer
    }

    /// The mirror it was bootstrapped from.
    pub fn mirror(&self) -> &str {
        &self.mirror
    }

    /// How long the cold build's debootstrap and tar steps took (whichever
    /// process ran them).
    pub fn build_times(&self) -> (Duration, Duration) {
        (
            Duration::from_secs_f64(self.debootstrap_seconds),
            Duration::from_secs_f64(self.tar_seconds),
        )
    }

    /// Whether this process built it (false: it was in the cache).
    pub fn built_here(&self) -> bool {
        self.built_here
    }

    /// `/etc/debian_version`, e.g. `12.11` (what Trivy reports as the OS name).
    pub fn debian_version(&self) -> String {
        let path = self.dir.join("etc/debian_version");
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// The installed packages of `/var/lib/dpkg/status`, by name.
    pub fn packages(&self) -> Vec<DpkgPackage> {
        let path = self.dir.join("var/lib/dpkg/status");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        parse_dpkg_status(&text)
    }

    /// The installed binary package `name`.
    pub fn package(&self, name: &str) -> Option<DpkgPackage> {
        self.packages().into_iter().find(|p| p.name == name)
    }

    /// The installed binary packages built from source package `source`.
    pub fn binaries_of(&self, source: &str) -> Vec<DpkgPackage> {
        self.packages().into_iter().filter(|p| p.source == source).collect()
    }
}

/// One installed binary package of a dpkg status file. `source` and
/// `source_version` are the `Source:` field (`name` or `name (version)`),
/// defaulting to the binary's own name and version, as Trivy reads them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DpkgPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub source: String,
    pub source_version: String,
}

impl DpkgPackage {
    /// An advisory in [`OS_BUCKET`] on this package's source, fixed in
    /// [`version_above`] its source version: Trivy reports it (`Status:
    /// fixed`) against every installed binary of that source.
    pub fn fixable_advisory(&self, vuln_id: &str, severity: &str) -> Advisory {
        Advisory::new(OS_BUCKET, &self.source, vuln_id, severity).fixed(&version_above(&self.source_version))
    }
}

/// The installed packages (`Status: … installed`) of a dpkg status file,
/// sorted by name.
pub fn parse_dpkg_status(text: &str) -> Vec<DpkgPackage> {
    let mut packages = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.trim(), v.trim());
            }
        }
        let (Some(name), Some(version)) = (fields.get("Package"), fields.get("Version")) else {
            continue;
        };
        let installed = fields.get("Status").and_then(|s| s.split_whitespace().last()) == Some("installed");
        if !installed {
            continue;
        }
        let (source, source_version) = match fields.get("Source") {
            Some(src) => match src.split_once('(') {
                Some((n, v)) => (n.trim(), v.trim_end_matches(')').trim()),
                None => (src.trim(), *version),
            },
            None => (*name, *version),
        };
        packages.push(DpkgPackage {
            name: name.to_string(),
            version: version.to_string(),
            architecture: fields.get("Architecture").unwrap_or(&"").to_string(),
            source: source.to_owned(),
            source_version: source_version.to_owned(),
        });
    }
    packages.sort();
    packages
}

/// A Debian version just above `version` in dpkg order (`+scour1`
/// appended: `+` sorts after the end of a version), e.g. `2.36-9+deb12u10`
/// → `2.36-9+deb12u10+scour1`.
pub fn version_above(version: &str) -> String {
    format!("{version}+scour1")
}

// ---------------------------------------------------------------- build

struct Paths {
    tree: PathBuf,
    tar: PathBuf,
    meta: PathBuf,
    lock: PathBuf,
    log: PathBuf,
    dir: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Self {
        let key = key();
        Self {
            tree: dir.join(&key),
            tar: dir.join(format!("{key}.tar")),
            meta: dir.join(format!("{key}.json")),
            lock: dir.join(format!("{key}.lock")),
            log: dir.join(format!("{key}.log")),
            dir: dir.to_owned(),
        }
    }

    /// The cached rootfs, when its record, tree and tar (of the recorded
    /// size) are all there.
    fn load(&self) -> Option<Rootfs> {
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(&self.meta).ok()?).ok()?;
        let size = meta["size"].as_u64()?;
        let diff_id = meta["diff_id"].as_str()?.to_owned();
        let tar_ok = fs::metadata(&self.tar).is_ok_and(|m| m.len() == size);
        let tree_ok = self.tree.join("var/lib/dpkg/status").is_file();
        (tar_ok && tree_ok).then(|| Rootfs {
            dir: self.tree.clone(),
            tar: TarFile {
                path: self.tar.clone(),
                size,
                diff_id,
                gzip: None,
            },
            mirror: meta["mirror"].as_str().unwrap_or_default().to_owned(),
            debootstrap_seconds: meta["debootstrap_seconds"].as_f64().unwrap_or_default(),
            tar_seconds: meta["tar_seconds"].as_f64().unwrap_or_default(),
            built_here: false,
        })
    }

    /// `.<name>.<pid>.tmp` beside the results.
    fn temp(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.{}.tmp", std::process::id()))
    }
}

fn build_or_load(dir: &Path) -> Result<Rootfs, String> {
    let paths = Paths::new(dir);
    if let Some(found) = paths.load() {
        return Ok(found);
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let lock = fs::File::create(&paths.lock).map_err(|e| format!("creating {}: {e}", paths.lock.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let _ = writeln!(
                io::stderr().lock(),
                "debian: another process is building {}; waiting for it",
                paths.tree.display()
            );
            lock.lock()
                .map_err(|e| format!("locking {}: {e}", paths.lock.display()))?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(format!("locking {}: {e}", paths.lock.display())),
    }
    // Under the lock (released when `lock` is dropped): another process may
    // have finished meanwhile.
    if let Some(found) = paths.load() {
        return Ok(found);
    }
    remove_stale_temps(&paths)?;
    let mirror = mirror().map_err(|e| format!("cannot build the Debian test root filesystem: missing {e}"))?;

    let mut debootstrap_seconds = 0.0;
    let tree_ok = paths.tree.join("var/lib/dpkg/status").is_file() && paths.tree.join("etc/os-release").is_file();
    if !tree_ok {
        can_build()?;
        if paths.tree.exists() {
            remove_tree(&paths.tree)?;
        }
        let started = Instant::now();
        debootstrap(&paths, &mirror)?;
        debootstrap_seconds = started.elapsed().as_secs_f64();
    } else if let Some(old) = fs::read(&paths.meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    {
        debootstrap_seconds = old["debootstrap_seconds"].as_f64().unwrap_or_default();
    }

    let started = Instant::now();
    normalize_tree(&paths.tree).map_err(|e| format!("normalising {}: {e}", paths.tree.display()))?;
    let tmp = paths.temp(&format!("{}.tar", key()));
    let written = (|| {
        let out = BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
        let (out, diff_id, size) = tar_tree(&paths.tree, out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok::<_, io::Error>((diff_id, size))
    })();
    let (diff_id, size) = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(format!("packing {} into {}: {e}", paths.tree.display(), tmp.display()));
        }
    };
    let tar_seconds = started.elapsed().as_secs_f64();
    if size < MIN_ROOTFS_BYTES {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "the Debian root filesystem {} packs to only {size} bytes (< {MIN_ROOTFS_BYTES}); remove it to rebuild",
            paths.tree.display()
        ));
    }
    fs::rename(&tmp, &paths.tar).map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), paths.tar.display()))?;
    let meta = json!({
        "debootstrap_seconds": debootstrap_seconds,
        "diff_id": diff_id,
        "mirror": mirror,
        "size": size,
        "suite": SUITE,
        "tar_seconds": tar_seconds,
        "variant": VARIANT,
    });
    images::write_atomic(&paths.meta, meta.to_string().as_bytes())
        .map_err(|e| format!("writing {}: {e}", paths.meta.display()))?;
    let mut rootfs = paths
        .load()
        .ok_or_else(|| format!("{} was written but does not load", paths.meta.display()))?;
    rootfs.built_here = true;
    Ok(rootfs)
}

/// debootstrap into a temp dir beside the tree, then renames it into place.
fn debootstrap(paths: &Paths, mirror: &str) -> Result<(), String> {
    let binary = debootstrap_binary().ok_or("debootstrap is not installed (run just setup)")?;
    let tmp = paths.temp(&key());
    let log = fs::File::create(&paths.log).map_err(|e| format!("creating {}: {e}", paths.log.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", paths.log.display()))?;
    let _ = writeln!(
        io::stderr().lock(),
        "debian: debootstrap --variant={VARIANT} {SUITE} {} {mirror} (about a minute; log in {})",
        tmp.display(),
        paths.log.display()
    );
    // debootstrap calls chroot, mount and friends from sbin.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut full_path = OsString::from("/usr/local/sbin:/usr/sbin:/sbin:");
    full_path.push(&path);
    let status = Command::new(binary)
        .arg(format!("--variant={VARIANT}"))
        .arg(SUITE)
        .arg(&tmp)
        .arg(mirror)
        .env("PATH", full_path)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .status();
    let failure = match status {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("debootstrap failed ({s})")),
        Err(e) => Some(format!("running debootstrap: {e}")),
    };
    if let Some(failure) = failure {
        let log_text = fs::read_to_string(&paths.log).unwrap_or_default();
        let _ = remove_tree(&tmp);
        let unreachable = [
            "Failed getting release file",
            "Couldn't download",
            "unable to resolve",
            "Unable to establish",
            "Connection refused",
            "Temporary failure in name resolution",
            "Couldn't retrieve",
        ]
        .iter()
        .any(|needle| log_text.contains(needle));
        let tail: Vec<&str> = log_text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{failure}{}; last lines of {}:\n{}",
            if unreachable {
                format!(": the Debian mirror {mirror} is unreachable or incomplete")
            } else {
                String::new()
            },
            paths.log.display(),
            tail.join("\n")
        ));
    }
    crate::containerd::unmount_all_under(&tmp)?;
    fs::rename(&tmp, &paths.tree).map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), paths.tree.display()))
}

/// Clears what differs between two bootstraps of the same packages, as the
/// official Debian images do (debuerreotype's fixup): ldconfig's aux cache
/// (inode numbers and times) goes, logs under `var/log` are emptied, and the
/// password-change day of `etc/shadow` becomes the day of
/// [`images::MTIME`]. Idempotent; run before every packing.
fn normalize_tree(tree: &Path) -> io::Result<()> {
    match fs::remove_file(tree.join("var/cache/ldconfig/aux-cache")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut dirs = vec![tree.join("var/log")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() && entry.metadata()?.len() > 0 {
                fs::OpenOptions::new().write(true).open(entry.path())?.set_len(0)?;
            }
        }
    }
    let day = (images::MTIME / 86_400).to_string();
    for name in ["etc/shadow", "etc/shadow-"] {
        let path = tree.join(name);
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let fixed: String = text
            .lines()
            .map(|line| {
                let mut fields: Vec<&str> = line.split(':').collect();
                if fields.len() > 2 && !fields[2].is_empty() && fields[2].bytes().all(|b| b.is_ascii_digit()) {
                    fields[2] = &day;
                }
                fields.join(":") + "\n"
            })
            .collect();
        if fixed != text {
            fs::write(&path, fixed)?;
        }
    }
    Ok(())
}

/// Removes temp files and trees of killed builders (we hold the lock, so
/// no live builder owns any).
fn remove_stale_temps(paths: &Paths) -> Result<(), String> {
    let key = key();
    let Ok(entries) = fs::read_dir(&paths.dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{key}")) && name.ends_with(".tmp") {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&path)?;
            } else {
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

/// Unmounts whatever a (killed) debootstrap left mounted under `dir`
/// (`proc`, `sys`), then removes the tree; refuses while mounts remain.
fn remove_tree(dir: &Path) -> Result<(), String> {
    crate::containerd::unmount_all_under(dir)?;
    fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))
}

// ---------------------------------------------------------------- tar

/// Writes `dir` as a deterministic layer tar to `out`: entries sorted by
/// path bytes (a directory before its contents), mtime
/// [`images::MTIME`], numeric uid/gid and permission bits as in the tree,
/// no user/group names; hard links as link entries to the first path;
/// `dev/`, `proc/` and `sys/` as empty directories; sockets, fifos and
/// device nodes left out. Returns `out`, the diff id (`sha256:<hex>`) and
/// the size. Also used by tests to check that packing is reproducible
/// (`tar_tree(dir, io::sink())`).
pub fn tar_tree<W: Write>(dir: &Path, out: W) -> io::Result<(W, String, u64)> {
    let mut builder = tar::Builder::new(HashingWriter::new(out));
    builder.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(dir.to_owned(), String::new())];
    // Depth first, sorted: children are pushed in reverse order.
    while let Some((path, rel)) = stack.pop() {
        if !rel.is_empty() {
            let meta = fs::symlink_metadata(&path)?;
            append_entry(&mut builder, &path, &rel, &meta, &mut links)?;
            if !meta.is_dir() {
                continue;
            }
            if matches!(rel.as_str(), "dev/" | "proc/" | "sys/") {
                continue;
            }
        }
        let mut children: Vec<(Vec<u8>, PathBuf, bool)> = fs::read_dir(&path)?
            .map(|e| {
                let e = e?;
                let is_dir = e.file_type()?.is_dir();
                Ok((e.file_name().as_bytes().to_vec(), e.path(), is_dir))
            })
            .collect::<io::Result<_>>()?;
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, child, is_dir) in children.into_iter().rev() {
            let name = String::from_utf8(name)
                .map_err(|_| io::Error::other(format!("non-UTF-8 file name under {}", path.display())))?;
            let rel = if is_dir {
                format!("{rel}{name}/")
            } else {
                format!("{rel}{name}")
            };
            stack.push((child, rel));
        }
    }
    let (out, digest, size) = builder.into_inner()?.finish();
    Ok((out, digest, size))
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    rel: &str,
    meta: &fs::Metadata,
    links: &mut HashMap<(u64, u64), String>,
) -> io::Result<()> {
    let kind = meta.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(meta.uid() as u64);
    header.set_gid(meta.gid() as u64);
    header.set_mtime(images::MTIME);
    header.set_size(0);
    if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        builder.append_data(&mut header, rel, io::empty())
    } else if kind.is_symlink() {
        header.set_entry_type(tar::EntryType::Symlink);
        let target = fs::read_link(path)?;
        builder.append_link(&mut header, rel, target)
    } else if kind.is_file() {
        if meta.nlink() > 1 {
            let id = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&id) {
                header.set_entry_type(tar::EntryType::Link);
                return builder.append_link(&mut header, rel, first);
            }
            links.insert(id, rel.to_owned());
        }
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        let file = fs::File::open(path)?;
        builder.append_data(&mut header, rel, file.take(meta.len()))
    } else {
        // Sockets, fifos and device nodes: a container runtime provides
        // /dev, and image layers carry none of them.
        debug_assert!(kind.is_socket() || kind.is_fifo() || kind.is_char_device() || kind.is_block_device());
        Ok(())
    }
}

// ---------------------------------------------------------------- images

/// The base image `reference`: the root filesystem as its one layer, `Cmd
/// ["/bin/bash"]`.
pub fn base_image(reference: &str) -> TestImage {
    TestImage::new(reference)
        .layer(rootfs().layer())
        .cmd(&["/bin/bash"])
        .label("scour.test/debian", "base")
}

/// A small app layer unique to `name`: `/opt/<name>/bin/<name>` (a shell
/// script), `/opt/<name>/VERSION` and `/etc/<name>/config.json`.
pub fn app_layer(name: &str) -> Layer {
    Layer::new()
        .created_by(&format!("COPY {name} /opt/{name}"))
        .file(
            &format!("opt/{name}/bin/{name}"),
            0o755,
            format!("#!/bin/sh\necho \"{name} running\"\nexec sleep infinity\n"),
        )
        .file(&format!("opt/{name}/VERSION"), 0o644, format!("{name} 1.0.0\n"))
        .file(
            &format!("etc/{name}/config.json"),
            0o644,
            format!("{{\"name\":\"{name}\",\"listen\":\":8080\"}}\n"),
        )
}

/// A variant `reference` of the base: the base layer (shared, the same
/// diff id) plus [`app_layer`]`(name)`, `Entrypoint ["/opt/<name>/bin/<name>"]`.
/// Variants of different names have different image ids.
pub fn variant_image(reference: &str, name: &str) -> TestImage {
    TestImage::new(reference)
        .layer(rootfs().layer())
        .layer(app_layer(name))
        .entrypoint(&[&format!("/opt/{name}/bin/{name}")])
        .label("scour.test/debian", name)
}

/// The layer of [`NPM_PACKAGES`] and [`PYTHON_PACKAGES`].
pub fn language_layer() -> Layer {
    let mut layer = Layer::new().created_by("npm install -g lodash minimist && pip install requests");
    for (name, version) in NPM_PACKAGES {
        let package = json!({
            "description": format!("{name} (scour test package)"),
            "license": "MIT",
            "main": "index.js",
            "name": name,
            "version": version,
        });
        layer = layer
            .file(
                &format!("usr/local/lib/node_modules/{name}/package.json"),
                0o644,
                format!("{package:#}\n"),
            )
            .file(
                &format!("usr/local/lib/node_modules/{name}/index.js"),
                0o644,
                "module.exports = {};\n",
            );
    }
    for (name, version) in PYTHON_PACKAGES {
        let info = format!("usr/local/lib/python3.11/dist-packages/{name}-{version}.dist-info");
        layer = layer
            .file(
                &format!("{info}/METADATA"),
                0o644,
                format!(
                    "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\
                     Summary: {name} (scour test package)\nLicense: Apache 2.0\n"
                ),
            )
            .file(&format!("{info}/INSTALLER"), 0o644, "pip\n")
            .file(
                &format!("usr/local/lib/python3.11/dist-packages/{name}/__init__.py"),
                0o644,
                format!("__version__ = \"{version}\"\n"),
            );
    }
    layer
}

/// A variant `reference` with language packages: the base layer, the app
/// layer `name`, and [`language_layer`].
pub fn language_image(reference: &str, name: &str) -> TestImage {
    variant_image(reference, name).layer(language_layer())
}

/// The names of the binary packages of a dpkg status file that come from
/// `source` (e.g. `glibc` → `libc-bin`, `libc6`).
pub fn binaries_of(packages: &[DpkgPackage], source: &str) -> BTreeSet<String> {
    packages
        .iter()
        .filter(|p| p.source == source)
        .map(|p| p.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\n\
Architecture: amd64\nMulti-Arch: same\nSource: glibc\nVersion: 2.36-9+deb12u10\n\
Description: GNU C Library: Shared libraries\n Contains the standard libraries.\n\n\
Package: libc-bin\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\n\
Version: 2.36-9+deb12u10\n\n\
Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b7\n\n\
Package: libgcc-s1\nStatus: install ok installed\nArchitecture: amd64\nSource: gcc-12 (12.2.0-14)\n\
Version: 12.2.0-14+deb12u1\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n";

    #[test]
    fn dpkg_status_names_source_packages_and_versions() {
        let packages = parse_dpkg_status(STATUS);
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "libc-bin", "libc6", "libgcc-s1"]);
        let libc6 = &packages[2];
        assert_eq!(libc6.source, "glibc");
        assert_eq!(libc6.source_version, "2.36-9+deb12u10");
        assert_eq!(libc6.architecture, "amd64");
        assert_eq!(
            (packages[0].source.as_str(), packages[0].source_version.as_str()),
            ("bash", "5.2.15-2+b7")
        );
        assert_eq!(
            (packages[3].source.as_str(), packages[3].source_version.as_str()),
            ("gcc-12", "12.2.0-14")
        );
        assert_eq!(
            binaries_of(&packages, "glibc"),
            BTreeSet::from(["libc-bin".to_owned(), "libc6".to_owned()])
        );
        let advisory = libc6.fixable_advisory("CVE-TEST-1", "HIGH");
        assert_eq!(advisory.os, "debian 12");
        assert_eq!(advisory.source_package, "glibc");
        assert_eq!(advisory.fixed_version.as_deref(), Some("2.36-9+deb12u10+scour1"));
    }

    #[test]
    fn mirror_comes_from_the_main_suite() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_from_sources(Some(deb822), None).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        // Security first in the file: still the main suite's mirror.
        let reordered = "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n\
Types: deb-src deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n";
        assert_eq!(
            mirror_from_sources(Some(reordered), None).as_deref(),
            Some("http://mirror.example/debian")
        );
        let legacy = "# comment\ndeb http://security.example/debian-security bookworm-security main\n\
deb [arch=amd64 signed-by=/x.gpg] http://legacy.example/debian bookworm main contrib\n";
        assert_eq!(
            mirror_from_sources(None, Some(legacy)).as_deref(),
            Some("http://legacy.example/debian")
        );
        // Another main suite's mirror serves bookworm too.
        assert_eq!(
            mirror_from_sources(
                Some("Types: deb\nURIs: http://t.example/debian\nSuites: trixie\n"),
                None
            )
            .as_deref(),
            Some("http://t.example/debian")
        );
        assert_eq!(
            mirror_from_sources(Some("Types: deb-src\nURIs: http://x/\nSuites: bookworm\n"), None),
            None
        );
        assert_eq!(mirror_from_sources(None, None), None);
    }

    #[test]
    fn versions_above_sort_after_the_original() {
        assert_eq!(version_above("2.36-9+deb12u10"), "2.36-9+deb12u10+scour1");
        assert_eq!(version_above("1:1.2.13.dfsg-1"), "1:1.2.13.dfsg-1+scour1");
    }

    #[test]
    fn tar_tree_is_sorted_deterministic_and_skips_special_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["b/c", "a", "dev", "proc"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("b/c/file"), "hello").unwrap();
        fs::write(root.join("a/z"), "zz").unwrap();
        fs::hard_link(root.join("a/z"), root.join("b/hard")).unwrap();
        std::os::unix::fs::symlink("../a/z", root.join("b/link")).unwrap();
        fs::write(root.join("dev/null-ish"), "").unwrap();
        fs::write(root.join("proc/x"), "").unwrap();
        let (bytes, digest, size) = tar_tree(root, Vec::new()).unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(digest, images::sha256_digest(&bytes));
        let (_, again, _) = tar_tree(root, io::sink()).unwrap();
        assert_eq!(again, digest, "packing is reproducible");
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().mtime().unwrap(), images::MTIME);
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "a/", "a/z", "b/", "b/c/", "b/c/file", "b/hard", "b/link", "dev/", "proc/"
            ]
        );
        assert_eq!(entries[5].1, tar::EntryType::Link);
        assert_eq!(entries[6].1, tar::EntryType::Symlink);
    }

    #[test]
    fn language_layer_holds_package_manifests() {
        let layer = language_layer();
        let paths: Vec<&str> = layer.files.iter().map(|f| f.path.as_str()).collect();
        assert!(
            paths.contains(&"usr/local/lib/node_modules/lodash/package.json"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"usr/local/lib/python3.11/dist-packages/requests-2.25.0.dist-info/METADATA"),
            "{paths:?}"
        );
    }
}
