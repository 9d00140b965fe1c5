//! A writer for Trivy's vulnerability DB (schema v2): `db/trivy.db`, a
//! bbolt file, and `db/metadata.json`, so that the real Trivy binary can scan
//! offline against hand-made advisories.
//!
//! Buckets written: `"<family> <release>"` (e.g. `"alpine 3.12"`) → source
//! package → vuln id → advisory JSON; `"data-source"` → OS bucket name →
//! data source (ID `alpine`, `debian`, …); `"vulnerability"` → vuln id →
//! details (Title, Severity, VendorSeverity `{"nvd": n}`).
//!
//! Debian buckets are `"debian 12"` (major release only) → **source**
//! package (e.g. `glibc`, the `Source:` of `/var/lib/dpkg/status`) →
//! advisory, compared with dpkg version rules against the *source* version;
//! an advisory on `glibc` is reported against each installed binary package
//! built from it (`libc6`, `libc-bin`). See [`crate::debian`] for reading a
//! real root filesystem's packages.
//!
//! Language packages ([`Advisory::library`]) live in buckets
//! `"<ecosystem>::GitHub Security Advisory <Ecosystem>"` (e.g. `"npm::…"`,
//! `"pip::…"`; Trivy reads every bucket with the `<ecosystem>::` prefix) →
//! package name → advisory `{"PatchedVersions": [v], "VulnerableVersions":
//! ["< v"]}`, with data source ID `ghsa`.
//!
//! The bbolt layout is the simplest one bbolt opens read-only: meta pages 0
//! (txid 2) and 1 (txid 1), an empty freelist page 2, then one leaf page per
//! bucket (long leaves just use overflow pages; no branch pages), page ids
//! assigned depth-first from 3, keys sorted bytewise.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::images::write_atomic;

/// The bbolt page size written.
pub const PAGE_SIZE: usize = 4096;
/// bbolt's meta magic.
pub const BOLT_MAGIC: u32 = 0xED0C_DAED;
/// bbolt's data format version.
pub const BOLT_VERSION: u32 = 2;
pub const PAGE_BRANCH: u16 = 0x01;
pub const PAGE_LEAF: u16 = 0x02;
pub const PAGE_META: u16 = 0x04;
pub const PAGE_FREELIST: u16 = 0x10;
/// Leaf element flag of a nested bucket.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;

/// Default `UpdatedAt` / `DownloadedAt` of `metadata.json`.
pub const DEFAULT_UPDATED_AT: &str = "2024-01-01T00:00:00Z";
/// Default `NextUpdate`: far enough that Trivy never tries to download.
pub const DEFAULT_NEXT_UPDATE: &str = "2099-01-01T00:00:00Z";

/// One advisory: `vuln_id` affects source package `source_package` (apk
/// origin, Debian source package) in OS bucket `os` (e.g. `"alpine 3.12"`,
/// minor release only; `"debian 12"`, major only) below `fixed_version`, or at
/// every version when that is `None` (Trivy then reports `Status:
/// affected`). `severity` is `LOW`, `MEDIUM`, `HIGH`, `CRITICAL` or
/// `UNKNOWN`. For a language package ([`Advisory::library`]) `os` is the
/// ecosystem's bucket and `source_package` the package name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advisory {
    pub os: String,
    pub source_package: String,
    pub vuln_id: String,
    pub fixed_version: Option<String>,
    pub severity: String,
}

impl Advisory {
    /// An unfixed advisory; add a fix with [`Advisory::fixed`].
    pub fn new(os: &str, source_package: &str, vuln_id: &str, severity: &str) -> Self {
        Self {
            os: os.to_owned(),
            source_package: source_package.to_owned(),
            vuln_id: vuln_id.to_owned(),
            fixed_version: None,
            severity: severity.to_owned(),
        }
    }

    /// An unfixed advisory on language package `package` of `ecosystem`
    /// (`npm`, `pip`, `rubygems`, `go`, `cargo`, `maven`, …; as Trivy's
    /// library detector names them), in bucket [`language_bucket`]. Pip
    /// names are normalised as Trivy does (lowercase, `_`/`.` → `-`).
    pub fn library(ecosystem: &str, package: &str, vuln_id: &str, severity: &str) -> Self {
        let package = if ecosystem == "pip" {
            package.to_ascii_lowercase().replace(['_', '.'], "-")
        } else {
            package.to_owned()
        };
        Self::new(&language_bucket(ecosystem), &package, vuln_id, severity)
    }

    pub fn fixed(mut self, version: &str) -> Self {
        self.fixed_version = Some(version.to_owned());
        self
    }

    /// Whether this is a language-package advisory (its bucket has `::`).
    pub fn is_library(&self) -> bool {
        self.os.contains("::")
    }

    /// The advisory JSON stored under the vuln id.
    pub fn advisory_json(&self) -> serde_json::Value {
        match (&self.fixed_version, self.is_library()) {
            (Some(v), false) => json!({"FixedVersion": v}),
            (None, false) => json!({}),
            (Some(v), true) => json!({"PatchedVersions": [v], "VulnerableVersions": [format!("< {v}")]}),
            (None, true) => json!({"VulnerableVersions": [">= 0"]}),
        }
    }
}

/// `"<ecosystem>::GitHub Security Advisory <Ecosystem>"`, the GHSA bucket
/// of a language ecosystem (e.g. `"npm::GitHub Security Advisory Npm"`).
pub fn language_bucket(ecosystem: &str) -> String {
    let mut chars = ecosystem.chars();
    let title: String = chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default();
    format!("{ecosystem}::GitHub Security Advisory {title}")
}

/// The `data-source` entry of a top-level advisory bucket.
pub fn data_source(bucket: &str) -> serde_json::Value {
    if let Some((ecosystem, name)) = bucket.split_once("::") {
        return json!({
            "ID": "ghsa",
            "Name": name,
            "URL": format!("https://github.com/advisories?query=type%3Areviewed+ecosystem%3A{ecosystem}"),
        });
    }
    match bucket.split_whitespace().next().unwrap_or_default() {
        "alpine" => json!({"ID": "alpine", "Name": "Alpine Secdb", "URL": "https://secdb.alpinelinux.org/"}),
        "debian" => json!({
            "ID": "debian",
            "Name": "Debian Security Tracker",
            "URL": "https://salsa.debian.org/security-tracker-team/security-tracker",
        }),
        family => json!({"ID": family, "Name": family, "URL": ""}),
    }
}

/// Trivy's severity number: 0 UNKNOWN, 1 LOW, 2 MEDIUM, 3 HIGH, 4 CRITICAL.
pub fn severity_number(severity: &str) -> u8 {
    match severity.to_ascii_uppercase().as_str() {
        "LOW" => 1,
        "MEDIUM" => 2,
        "HIGH" => 3,
        "CRITICAL" => 4,
        _ => 0,
    }
}

/// A Trivy DB under construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrivyDb {
    advisories: Vec<Advisory>,
    updated_at: String,
    downloaded_at: String,
    next_update: String,
}

impl Default for TrivyDb {
    fn default() -> Self {
        Self::new()
    }
}

impl TrivyDb {
    pub fn new() -> Self {
        Self {
            advisories: Vec::new(),
            updated_at: DEFAULT_UPDATED_AT.to_owned(),
            downloaded_at: DEFAULT_UPDATED_AT.to_owned(),
            next_update: DEFAULT_NEXT_UPDATE.to_owned(),
        }
    }

    pub fn advisory(mut self, advisory: Advisory) -> Self {
        self.advisories.push(advisory);
        self
    }

    pub fn advisories(mut self, advisories: impl IntoIterator<Item = Advisory>) -> Self {
        self.advisories.extend(advisories);
        self
    }

    /// `UpdatedAt` of `metadata.json` (RFC 3339).
    pub fn updated_at(mut self, timestamp: &str) -> Self {
        self.updated_at = timestamp.to_owned();
        self
    }

    /// `DownloadedAt` of `metadata.json`; keep it non-zero.
    pub fn downloaded_at(mut self, timestamp: &str) -> Self {
        self.downloaded_at = timestamp.to_owned();
        self
    }

    /// `NextUpdate` of `metadata.json`.
    pub fn next_update(mut self, timestamp: &str) -> Self {
        self.next_update = timestamp.to_owned();
        self
    }

    /// The bucket tree. When several advisories share a vuln id, the last
    /// one sets its severity in the `vulnerability` bucket.
    pub fn buckets(&self) -> Bucket {
        let mut root = Bucket::new();
        for a in &self.advisories {
            root.bucket(&a.os)
                .bucket(&a.source_package)
                .put(&a.vuln_id, a.advisory_json().to_string());
            root.bucket("data-source").put(&a.os, data_source(&a.os).to_string());
            let details = json!({
                "Description": format!("{} in {} (scour test advisory)", a.vuln_id, a.source_package),
                "Severity": a.severity.to_ascii_uppercase(),
                "Title": format!("{}: test vulnerability in {}", a.vuln_id, a.source_package),
                "VendorSeverity": {"nvd": severity_number(&a.severity)},
            });
            root.bucket("vulnerability").put(&a.vuln_id, details.to_string());
        }
        root
    }

    /// The `trivy.db` bytes.
    pub fn bolt_bytes(&self) -> Vec<u8> {
        bolt_file(&self.buckets())
    }

    /// The `metadata.json` bytes.
    pub fn metadata_json(&self) -> Vec<u8> {
        format!(
            r#"{{"Version":2,"NextUpdate":"{}","UpdatedAt":"{}","DownloadedAt":"{}"}}"#,
            self.next_update, self.updated_at, self.downloaded_at
        )
        .into_bytes()
    }

    /// Writes `<cache_dir>/db/trivy.db`, then `<cache_dir>/db/metadata.json`
    /// (each via a temp file and rename); returns `<cache_dir>/db`.
    pub fn write(&self, cache_dir: &Path) -> io::Result<PathBuf> {
        let db = cache_dir.join("db");
        std::fs::create_dir_all(&db)?;
        write_atomic(&db.join("trivy.db"), &self.bolt_bytes())?;
        write_atomic(&db.join("metadata.json"), &self.metadata_json())?;
        Ok(db)
    }
}

/// A bbolt bucket: sorted keys, each holding a value or a nested bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    entries: BTreeMap<Vec<u8>, Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Value(Vec<u8>),
    Bucket(Bucket),
}

impl Bucket {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`. Panics if `key` is a nested bucket.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> &mut Self {
        let key = key.as_ref().to_vec();
        if let Some(Entry::Bucket(_)) = self.entries.get(&key) {
            panic!("bbolt key {:?} is a bucket", String::from_utf8_lossy(&key));
        }
        self.entries.insert(key, Entry::Value(value.into()));
        self
    }

    /// The nested bucket `name`, created if missing. Panics if `name` holds a value.
    pub fn bucket(&mut self, name: impl AsRef<[u8]>) -> &mut Bucket {
        let name = name.as_ref();
        match self
            .entries
            .entry(name.to_vec())
            .or_insert_with(|| Entry::Bucket(Bucket::new()))
        {
            Entry::Bucket(b) => b,
            Entry::Value(_) => panic!("bbolt key {:?} is a value", String::from_utf8_lossy(name)),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of this bucket's leaf page: header, elements, keys and values
    /// (a nested bucket's value is its 16-byte `{root, sequence}` header).
    fn leaf_size(&self) -> usize {
        16 + self
            .entries
            .iter()
            .map(|(k, e)| {
                16 + k.len()
                    + match e {
                        Entry::Value(v) => v.len(),
                        Entry::Bucket(_) => 16,
                    }
            })
            .sum::<usize>()
    }
}

/// FNV-1a 64-bit, bbolt's meta checksum.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A complete bbolt file whose root bucket holds `root`'s entries.
pub fn bolt_file(root: &Bucket) -> Vec<u8> {
    let mut next = 3u64;
    let mut leaves = Vec::new();
    let root_pgid = layout(root, &mut next, &mut leaves);
    let total = next;
    let mut file = vec![0u8; total as usize * PAGE_SIZE];
    for (txid, page) in [(2u64, 0usize), (1, 1)] {
        let at = page * PAGE_SIZE;
        file[at..at + 16].copy_from_slice(&page_header(page as u64, PAGE_META, 0, 0));
        let mut meta = Vec::with_capacity(64);
        meta.extend(BOLT_MAGIC.to_le_bytes());
        meta.extend(BOLT_VERSION.to_le_bytes());
        meta.extend((PAGE_SIZE as u32).to_le_bytes());
        meta.extend(0u32.to_le_bytes()); // flags
        meta.extend(root_pgid.to_le_bytes());
        meta.extend(0u64.to_le_bytes()); // root sequence
        meta.extend(2u64.to_le_bytes()); // freelist page
        meta.extend(total.to_le_bytes()); // high-water mark
        meta.extend(txid.to_le_bytes());
        meta.extend(fnv1a64(&meta).to_le_bytes());
        file[at + 16..at + 16 + meta.len()].copy_from_slice(&meta);
    }
    file[2 * PAGE_SIZE..2 * PAGE_SIZE + 16].copy_from_slice(&page_header(2, PAGE_FREELIST, 0, 0));
    for (pgid, bytes) in leaves {
        let at = pgid as usize * PAGE_SIZE;
        file[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    file
}

/// Assigns `bucket` its page(s) at `*next`, then its nested buckets depth
/// first; pushes each serialised leaf and returns `bucket`'s page id.
fn layout(bucket: &Bucket, next: &mut u64, leaves: &mut Vec<(u64, Vec<u8>)>) -> u64 {
    let size = bucket.leaf_size();
    let pages = size.div_ceil(PAGE_SIZE) as u64;
    let pgid = *next;
    *next += pages;
    let count = u16::try_from(bucket.entries.len()).expect("at most 65535 keys per bucket");
    let mut page = page_header(pgid, PAGE_LEAF, count, (pages - 1) as u32).to_vec();
    let mut data = Vec::new();
    let elements_end = 16 + 16 * bucket.entries.len();
    for (i, (key, entry)) in bucket.entries.iter().enumerate() {
        let (flags, value) = match entry {
            Entry::Value(v) => (0, v.clone()),
            Entry::Bucket(child) => {
                let child_pgid = layout(child, next, leaves);
                let mut header = child_pgid.to_le_bytes().to_vec();
                header.extend(0u64.to_le_bytes()); // sequence
                (BUCKET_LEAF_FLAG, header)
            }
        };
        let element_at = 16 + 16 * i;
        let pos = (elements_end + data.len() - element_at) as u32;
        page.extend(flags.to_le_bytes());
        page.extend(pos.to_le_bytes());
        page.extend((key.len() as u32).to_le_bytes());
        page.extend((value.len() as u32).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(&value);
    }
    page.extend(data);
    debug_assert_eq!(page.len(), size);
    leaves.push((pgid, page));
    pgid
}

fn page_header(id: u64, flags: u16, count: u16, overflow: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&id.to_le_bytes());
    h[8..10].copy_from_slice(&flags.to_le_bytes());
    h[10..12].copy_from_slice(&count.to_le_bytes());
    h[12..].copy_from_slice(&overflow.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_language_buckets_have_their_data_sources_and_advisory_shapes() {
        let debian = Advisory::new("debian 12", "glibc", "CVE-1", "HIGH").fixed("2.36-9+deb12u99");
        assert_eq!(debian.advisory_json(), json!({"FixedVersion": "2.36-9+deb12u99"}));
        assert_eq!(
            data_source("debian 12"),
            json!({
                "ID": "debian",
                "Name": "Debian Security Tracker",
                "URL": "https://salsa.debian.org/security-tracker-team/security-tracker",
            })
        );
        let npm = Advisory::library("npm", "lodash", "CVE-2", "HIGH").fixed("4.17.21");
        assert_eq!(npm.os, "npm::GitHub Security Advisory Npm");
        assert!(npm.is_library() && !debian.is_library());
        assert_eq!(
            npm.advisory_json(),
            json!({"PatchedVersions": ["4.17.21"], "VulnerableVersions": ["< 4.17.21"]})
        );
        assert_eq!(data_source(&npm.os)["ID"], "ghsa");
        assert_eq!(data_source(&npm.os)["Name"], "GitHub Security Advisory Npm");
        let pip = Advisory::library("pip", "Typing_Extensions", "CVE-3", "LOW");
        assert_eq!(pip.source_package, "typing-extensions");
        assert_eq!(pip.advisory_json(), json!({"VulnerableVersions": [">= 0"]}));
        let db = TrivyDb::new().advisories([debian, npm, pip]);
        let buckets = db.buckets();
        assert_eq!(
            buckets.len(),
            5,
            "debian 12, npm::…, pip::…, data-source, vulnerability"
        );
    }
}
