//! Tests of the offline image writer and the Trivy DB writer, including real
//! Trivy scans (skipped with a loud line when Trivy is missing, failing when
//! `CI` is set).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use scour_testkit::images::{
    self, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ApkPackage, Layer, OciLayout, TestImage, alpine_exact,
    alpine_like, docker_archive, pause_image, plain, sha256_hex,
};
use scour_testkit::trivydb::{self, Advisory, PAGE_SIZE, TrivyDb};

// ---------------------------------------------------------------- helpers

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("scour-writers-")
        .tempdir()
        .expect("creating a temp dir")
}

/// Path → (entry type, mode, contents) of every entry of a tar, in order.
fn tar_entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            let mode = e.header().mode().unwrap();
            assert_eq!(e.header().mtime().unwrap(), images::MTIME, "{path}");
            assert_eq!(e.header().uid().unwrap(), 0, "{path}");
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, kind, mode, data)
        })
        .collect()
}

fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    tar_entries(bytes)
        .into_iter()
        .filter(|(_, kind, _, _)| kind.is_file())
        .map(|(p, _, _, d)| (p, d))
        .collect()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn a312() -> TestImage {
    alpine_like("docker.io/test/alpine:3.12", "3.12.0", &[])
}

// ---------------------------------------------------------------- images

#[test]
fn alpine_layer_has_os_files_and_apk_db() {
    let image = alpine_like(
        "docker.io/library/alpine:3.12",
        "3.12.0",
        &[("musl", "1.1.24-r9"), ("extra", "1-r0")],
    )
    .label("a", "b");
    let built = image.build();
    assert_eq!(built.layers.len(), 1);
    let entries = tar_entries(&built.layers[0]);
    let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    for dir in ["etc/", "etc/apk/", "lib/", "lib/apk/", "lib/apk/db/"] {
        let e = entries
            .iter()
            .find(|e| e.0 == dir)
            .unwrap_or_else(|| panic!("{dir} missing: {paths:?}"));
        assert!(e.1.is_dir());
        assert_eq!(e.2, 0o755);
    }
    // Parents come before children.
    for (i, path) in paths.iter().enumerate() {
        if let Some(parent) = path
            .trim_end_matches('/')
            .rsplit_once('/')
            .map(|(p, _)| format!("{p}/"))
        {
            assert!(paths[..i].contains(&parent.as_str()), "{path} before {parent}");
        }
    }
    let files = tar_files(&built.layers[0]);
    assert_eq!(files["etc/alpine-release"], b"3.12.0\n");
    let os_release = String::from_utf8(files["etc/os-release"].clone()).unwrap();
    for line in [
        "NAME=\"Alpine Linux\"",
        "ID=alpine",
        "VERSION_ID=3.12.0",
        "PRETTY_NAME=\"Alpine Linux v3.12\"",
    ] {
        assert!(os_release.lines().any(|l| l == line), "{line} in {os_release}");
    }
    assert!(files.contains_key("etc/apk/repositories"));
    let installed = String::from_utf8(files["lib/apk/db/installed"].clone()).unwrap();
    let stanzas: Vec<&str> = installed.split("\n\n").filter(|s| !s.is_empty()).collect();
    let pkgs: Vec<(String, String, String)> = stanzas
        .iter()
        .map(|s| {
            let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).unwrap().to_owned();
            assert_eq!(field("A:"), "x86_64");
            assert!(field("C:").starts_with("Q1"));
            (field("P:"), field("V:"), field("o:"))
        })
        .collect();
    let expect = |n: &str, v: &str| (n.to_owned(), v.to_owned(), n.to_owned());
    assert_eq!(
        pkgs,
        [
            expect("busybox", "1.31.1-r19"),
            expect("extra", "1-r0"),
            expect("musl", "1.1.24-r9"),
            expect("zlib", "1.2.11-r3"),
        ]
    );
    assert!(files.contains_key("usr/share/doc/musl/VERSION"));

    let config = json(&built.config);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], images::CREATED);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(config["config"]["Env"], serde_json::json!([images::DEFAULT_PATH]));
    assert_eq!(config["config"]["Labels"], serde_json::json!({"a": "b"}));
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(built.diff_ids()));
}

#[test]
fn subpackage_origin_is_written() {
    let built = alpine_exact(
        "localhost/test/origin:1",
        "3.12.0",
        &[ApkPackage::new("musl-utils", "1.1.24-r2").origin("musl")],
    )
    .build();
    let files = tar_files(&built.layers[0]);
    let installed = String::from_utf8(files["lib/apk/db/installed"].clone()).unwrap();
    assert!(installed.contains("P:musl-utils\nV:1.1.24-r2\n"));
    assert!(installed.contains("\no:musl\n"));
    assert!(!installed.contains("P:busybox"));
}

#[test]
fn every_history_entry_has_created_and_ids_are_predicted() {
    let image = TestImage::new("localhost/test/layers:1")
        .layer(Layer::new().file("/a", 0o644, "a"))
        .layer(Layer::new().created_by("RUN b").file("/b/c", 0o600, "b"))
        .file("/b/d", 0o755, "d")
        .entrypoint(&["/b/d"])
        .env("X=1")
        .created("2023-05-06T07:08:09Z");
    let built = image.build();
    let config = json(&built.config);
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    for entry in history {
        assert_eq!(entry["created"], "2023-05-06T07:08:09Z");
        assert!(entry["created_by"].is_string());
    }
    assert_eq!(history[1]["created_by"], "RUN b");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/b/d"]));
    assert_eq!(config["config"]["Env"][1], "X=1");
    assert!(config["config"].get("Cmd").is_none());

    let id = format!("sha256:{:x}", Sha256::digest(&built.config));
    assert_eq!(built.image_id(), id);
    assert_eq!(image.image_id(), id);
    assert_eq!(
        image.manifest_digest(),
        format!("sha256:{:x}", Sha256::digest(&built.manifest))
    );

    let manifest = json(&built.manifest);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], images::MEDIA_TYPE_MANIFEST);
    assert_eq!(manifest["config"]["digest"], id);
    assert_eq!(manifest["config"]["size"], built.config.len());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (desc, layer) in layers.iter().zip(&built.layers) {
        assert_eq!(desc["mediaType"], images::MEDIA_TYPE_LAYER);
        assert_eq!(desc["digest"], format!("sha256:{}", sha256_hex(layer)));
        assert_eq!(desc["size"], layer.len());
    }
    let files = tar_entries(&built.layers[1]);
    let modes: BTreeMap<&str, u32> = files.iter().map(|e| (e.0.as_str(), e.2)).collect();
    assert_eq!(modes, BTreeMap::from([("b/", 0o755), ("b/c", 0o600), ("b/d", 0o755)]));
    // Different content, different ids; plain images of different tags differ.
    assert_ne!(
        plain("localhost/test/a:1").image_id(),
        plain("localhost/test/b:1").image_id()
    );
}

#[test]
fn docker_archive_has_docker_save_layout() {
    let image = a312().tag("docker.io/test/alpine:latest");
    let built = image.build();
    let tar = docker_archive(&image);
    let entries = tar_entries(&tar);
    let cfg_hex = sha256_hex(&built.config);
    let layer_hex = sha256_hex(&built.layers[0]);
    let names: BTreeSet<String> = entries.iter().map(|e| e.0.clone()).collect();
    let expected: BTreeSet<String> = [
        format!("{layer_hex}/"),
        format!("{layer_hex}/layer.tar"),
        format!("{cfg_hex}.json"),
        "manifest.json".to_owned(),
    ]
    .into();
    assert_eq!(names, expected);
    let files = tar_files(&tar);
    assert_eq!(files[&format!("{cfg_hex}.json")], built.config);
    assert_eq!(files[&format!("{layer_hex}/layer.tar")], built.layers[0]);
    assert_eq!(
        json(&files["manifest.json"]),
        serde_json::json!([{
            "Config": format!("{cfg_hex}.json"),
            "RepoTags": ["docker.io/test/alpine:3.12", "docker.io/test/alpine:latest"],
            "Layers": [format!("{layer_hex}/layer.tar")],
        }])
    );
    // The predicted id is the sha256 of the config file in the archive.
    assert_eq!(image.image_id(), format!("sha256:{cfg_hex}"));
    assert_eq!(built.diff_ids(), [format!("sha256:{layer_hex}")]);
}

#[test]
fn oci_bundle_dedups_blobs_and_names_every_ref() {
    let shared = Layer::new()
        .created_by("COPY pause /pause")
        .file("/pause", 0o755, b"\x7fELF not really".to_vec());
    let app = |name: &str| {
        TestImage::new(&format!("localhost/test/{name}:1.0"))
            .layer(shared.clone())
            .layer(Layer::new().file("/app", 0o644, name))
            .entrypoint(&["/pause"])
    };
    let multi = plain("localhost/test/multi:v1").tag("localhost/test/multi:latest");
    let layout = OciLayout::new()
        .image(app("app-a"))
        .image(app("app-b"))
        .image(multi)
        .digest_refs(true);
    let built = layout.built();
    let tar = layout.tar();
    let entries = tar_entries(&tar);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names[..2], ["blobs/", "blobs/sha256/"]);
    let files = tar_files(&tar);
    assert_eq!(files, layout.files());
    assert_eq!(
        json(&files["oci-layout"]),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );

    // Blobs: named by their sha256, deduplicated (the shared layer once).
    let blobs: BTreeMap<&str, &Vec<u8>> = files
        .iter()
        .filter_map(|(p, d)| p.strip_prefix("blobs/sha256/").map(|h| (h, d)))
        .collect();
    for (hex, data) in &blobs {
        assert_eq!(*hex, sha256_hex(data));
    }
    // app-a, app-b: config + 2 layers + manifest each, one layer shared; multi: 3.
    assert_eq!(blobs.len(), 4 + 3 + 3);
    assert_eq!(files.len(), blobs.len() + 2);

    let index = json(&files["index.json"]);
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], images::MEDIA_TYPE_INDEX);
    let entries: Vec<(String, String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let digest = m["digest"].as_str().unwrap();
            let manifest = blobs[digest.strip_prefix("sha256:").unwrap()];
            assert_eq!(m["size"], manifest.len());
            assert_eq!(m["mediaType"], images::MEDIA_TYPE_MANIFEST);
            let manifest = json(manifest);
            for d in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap()) {
                assert!(blobs.contains_key(d["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap()));
            }
            let a = &m["annotations"];
            (
                a[ANNOTATION_IMAGE_NAME].as_str().unwrap().to_owned(),
                a[ANNOTATION_REF_NAME].as_str().unwrap().to_owned(),
                digest.to_owned(),
            )
        })
        .collect();
    let [a, b, m] = [&built[0], &built[1], &built[2]];
    let (da, db, dm) = (a.manifest_digest(), b.manifest_digest(), m.manifest_digest());
    let e = |name: &str, refname: &str, digest: &str| (name.to_owned(), refname.to_owned(), digest.to_owned());
    assert_eq!(
        entries,
        [
            e("localhost/test/app-a:1.0", "1.0", &da),
            e(&format!("localhost/test/app-a@{da}"), &da, &da),
            e("localhost/test/app-b:1.0", "1.0", &db),
            e(&format!("localhost/test/app-b@{db}"), &db, &db),
            e("localhost/test/multi:v1", "v1", &dm),
            e("localhost/test/multi:latest", "latest", &dm),
            e(&format!("localhost/test/multi@{dm}"), &dm, &dm),
        ]
    );
    assert_eq!(m.digest_refs(), [format!("localhost/test/multi@{dm}")]);
    assert!(a.content_size() > 0);

    // Without digest refs only the tags are named.
    let plain_layout = OciLayout::new().image(app("app-a"));
    let index = json(&plain_layout.files()["index.json"]);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn outputs_are_reproducible() {
    let dir = tempdir();
    let make_layout = || {
        OciLayout::new()
            .images([
                a312(),
                plain("localhost/test/plain:1"),
                pause_image("localhost/test/pause:1", b"binary"),
            ])
            .digest_refs(true)
    };
    let docker1 = docker_archive(&a312());
    let docker2 = docker_archive(&a312());
    assert_eq!(docker1, docker2);
    assert_eq!(make_layout().tar(), make_layout().tar());

    let path = dir.path().join("a312.tar");
    let built = images::write_docker_archive(&a312(), &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), docker1);
    assert_eq!(built, a312().build());

    let oci_tar = dir.path().join("bundle.tar");
    make_layout().write_tar(&oci_tar).unwrap();
    assert_eq!(std::fs::read(&oci_tar).unwrap(), make_layout().tar());

    let oci_dir = dir.path().join("oci");
    make_layout().write_dir(&oci_dir).unwrap();
    let mut on_disk = BTreeMap::new();
    read_tree(&oci_dir, &oci_dir, &mut on_disk);
    assert_eq!(on_disk, make_layout().files());

    let db1 = TrivyDb::new().advisories(test_advisories()).bolt_bytes();
    let db2 = TrivyDb::new().advisories(test_advisories()).bolt_bytes();
    assert_eq!(db1, db2);
}

fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, std::fs::read(&path).unwrap());
        }
    }
}

// ---------------------------------------------------------------- bbolt

/// A minimal independent bbolt reader: checks both meta pages and walks
/// every bucket, asserting bytewise-sorted keys; returns path → value.
fn read_bolt(file: &[u8]) -> BTreeMap<Vec<String>, Vec<u8>> {
    let u16_at = |at: usize| u16::from_le_bytes(file[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    assert_eq!(file.len() % PAGE_SIZE, 0);
    let total = (file.len() / PAGE_SIZE) as u64;
    let mut best = None;
    for page in 0..2usize {
        let at = page * PAGE_SIZE;
        assert_eq!(u64_at(at), page as u64, "meta page id");
        assert_eq!(u16_at(at + 8), trivydb::PAGE_META);
        let m = at + 16;
        assert_eq!(u32_at(m), trivydb::BOLT_MAGIC);
        assert_eq!(u32_at(m + 4), 2, "bbolt version");
        assert_eq!(u32_at(m + 8), PAGE_SIZE as u32);
        assert_eq!(u64_at(m + 32), 2, "freelist page");
        assert_eq!(u64_at(m + 40), total, "high-water mark");
        let txid = u64_at(m + 48);
        assert_eq!(txid % 2, page as u64, "meta page = txid % 2");
        // Checksum: FNV-1a 64 of the 56 bytes before it (own implementation).
        let mut fnv: u64 = 0xcbf29ce484222325;
        for &b in &file[m..m + 56] {
            fnv = (fnv ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        assert_eq!(u64_at(m + 56), fnv, "meta {page} checksum");
        if best.is_none_or(|(t, _)| txid > t) {
            best = Some((txid, u64_at(m + 16)));
        }
    }
    let fl = 2 * PAGE_SIZE;
    assert_eq!(u16_at(fl + 8), trivydb::PAGE_FREELIST);
    assert_eq!(u16_at(fl + 10), 0);

    let mut out = BTreeMap::new();
    let mut stack = vec![(best.unwrap().1, Vec::<String>::new())];
    let mut seen = BTreeSet::new();
    while let Some((pgid, path)) = stack.pop() {
        assert!((3..total).contains(&pgid), "page {pgid} out of range");
        assert!(seen.insert(pgid), "page {pgid} used twice");
        let at = pgid as usize * PAGE_SIZE;
        assert_eq!(u64_at(at), pgid);
        assert_eq!(u16_at(at + 8), trivydb::PAGE_LEAF);
        let count = u16_at(at + 10) as usize;
        let overflow = u32_at(at + 12) as u64;
        assert!(pgid + overflow < total);
        let mut previous: Option<Vec<u8>> = None;
        for i in 0..count {
            let e = at + 16 + 16 * i;
            let (flags, pos, ksize, vsize) = (
                u32_at(e),
                u32_at(e + 4) as usize,
                u32_at(e + 8) as usize,
                u32_at(e + 12) as usize,
            );
            let key = file[e + pos..e + pos + ksize].to_vec();
            let value = &file[e + pos + ksize..e + pos + ksize + vsize];
            assert!(
                e + pos + ksize + vsize <= at + (overflow as usize + 1) * PAGE_SIZE,
                "element outside its pages"
            );
            if let Some(prev) = &previous {
                assert!(
                    prev < &key,
                    "keys not sorted: {:?} then {:?}",
                    String::from_utf8_lossy(prev),
                    String::from_utf8_lossy(&key)
                );
            }
            previous = Some(key.clone());
            let mut child = path.clone();
            child.push(String::from_utf8(key).unwrap());
            if flags == trivydb::BUCKET_LEAF_FLAG {
                assert_eq!(vsize, 16);
                stack.push((u64::from_le_bytes(value[..8].try_into().unwrap()), child));
            } else {
                assert_eq!(flags, 0);
                out.insert(child, value.to_vec());
            }
        }
    }
    out
}

fn test_advisories() -> Vec<Advisory> {
    vec![
        Advisory::new("alpine 3.12", "musl", "CVE-TEST-0001", "HIGH").fixed("1.1.24-r3"),
        Advisory::new("alpine 3.12", "busybox", "CVE-TEST-0002", "CRITICAL").fixed("1.31.1-r20"),
        Advisory::new("alpine 3.12", "zlib", "CVE-TEST-0003", "MEDIUM"),
        Advisory::new("alpine 3.12", "musl", "CVE-TEST-0004", "LOW").fixed("1.1.24-r10"),
        Advisory::new("alpine 3.12", "musl", "CVE-TEST-0005", "CRITICAL").fixed("1.1.24-r1"),
        Advisory::new("alpine 3.5", "musl", "CVE-TEST-0001", "HIGH").fixed("1.1.15-r9"),
        Advisory::new("alpine 3.99", "musl", "CVE-TEST-0001", "HIGH").fixed("1.2.9-r1"),
    ]
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bolt_file_structure() {
    let bytes = TrivyDb::new().advisories(test_advisories()).bolt_bytes();
    let values = read_bolt(&bytes);
    assert_eq!(
        json(&values[&key(&["alpine 3.12", "musl", "CVE-TEST-0001"])]),
        serde_json::json!({"FixedVersion": "1.1.24-r3"})
    );
    assert_eq!(
        json(&values[&key(&["alpine 3.12", "zlib", "CVE-TEST-0003"])]),
        serde_json::json!({})
    );
    assert_eq!(
        json(&values[&key(&["data-source", "alpine 3.12"])]),
        serde_json::json!({"ID": "alpine", "Name": "Alpine Secdb", "URL": "https://secdb.alpinelinux.org/"})
    );
    let vuln = json(&values[&key(&["vulnerability", "CVE-TEST-0002"])]);
    assert_eq!(vuln["Severity"], "CRITICAL");
    assert_eq!(vuln["VendorSeverity"], serde_json::json!({"nvd": 4}));
    // 7 advisories + 3 data sources + 5 vulnerabilities.
    assert_eq!(values.len(), 7 + 3 + 5);
    // Sorted-key order holds across OS buckets ("alpine 3.12" < "alpine 3.5" < "alpine 3.99").
    let top: Vec<&str> = values
        .keys()
        .map(|k| k[0].as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        top,
        [
            "alpine 3.12",
            "alpine 3.5",
            "alpine 3.99",
            "data-source",
            "vulnerability"
        ]
    );

    // A corrupted checksum is detectable.
    let mut broken = bytes.clone();
    broken[16 + 12] ^= 1; // meta flags: only the checksum notices
    assert!(std::panic::catch_unwind(|| read_bolt(&broken)).is_err());
}

#[test]
fn bolt_file_with_overflow_pages() {
    let db = TrivyDb::new().advisories(many_advisories(400));
    let bytes = db.bolt_bytes();
    let values = read_bolt(&bytes);
    assert_eq!(values.len(), 400 * 2 + 1);
    // The musl bucket's leaf spans several pages.
    let overflowing = (3..bytes.len() / PAGE_SIZE)
        .map(|p| p * PAGE_SIZE)
        .filter(|&at| u16::from_le_bytes([bytes[at + 8], bytes[at + 9]]) == trivydb::PAGE_LEAF)
        .map(|at| u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap()))
        .max()
        .unwrap();
    assert!(overflowing >= 2, "max overflow {overflowing}");
    assert!(values.contains_key(&key(&["alpine 3.12", "musl", "CVE-TEST-1399"])));
}

fn many_advisories(n: usize) -> Vec<Advisory> {
    (0..n)
        .map(|i| Advisory::new("alpine 3.12", "musl", &format!("CVE-TEST-{:04}", 1000 + i), "HIGH").fixed("1.1.24-r3"))
        .collect()
}

#[test]
fn db_write_creates_both_files() {
    let dir = tempdir();
    let db_dir = TrivyDb::new()
        .advisories(test_advisories())
        .updated_at("2024-02-03T04:05:06Z")
        .write(dir.path())
        .unwrap();
    assert_eq!(db_dir, dir.path().join("db"));
    let meta = json(&std::fs::read(db_dir.join("metadata.json")).unwrap());
    assert_eq!(
        meta,
        serde_json::json!({
            "Version": 2,
            "NextUpdate": "2099-01-01T00:00:00Z",
            "UpdatedAt": "2024-02-03T04:05:06Z",
            "DownloadedAt": "2024-01-01T00:00:00Z",
        })
    );
    assert_eq!(
        std::fs::read(db_dir.join("trivy.db")).unwrap(),
        TrivyDb::new().advisories(test_advisories()).bolt_bytes()
    );
    let mut names: Vec<String> = std::fs::read_dir(&db_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["metadata.json", "trivy.db"], "no temp files left");
}

// ---------------------------------------------------------------- real Trivy

fn missing(what: &str) {
    scour_testkit::gate::skip(&format!("{what} not found (run just setup)"));
}

fn trivy() -> Option<PathBuf> {
    scour_testkit::gate::require_trivy()
}

fn scan(trivy: &Path, cache: &Path, input: &Path) -> Value {
    let out = Command::new(trivy)
        .args(["image", "--input"])
        .arg(input)
        .args([
            "--format",
            "json",
            "--skip-db-update",
            "--offline-scan",
            "--skip-version-check",
        ])
        .args(["--disable-telemetry", "--scanners", "vuln", "-q", "--cache-dir"])
        .arg(cache)
        .output()
        .expect("running trivy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "trivy on {} failed ({}): {stderr}",
        input.display(),
        out.status
    );
    assert!(stderr.trim().is_empty(), "trivy -q printed: {stderr}");
    json(&out.stdout)
}

type Row = (String, String, String, Option<String>, String, String);

/// (id, package, installed, fixed, status, severity) of each finding, sorted.
fn findings(report: &Value) -> Vec<Row> {
    let results = report["Results"].as_array().expect("Results");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["Class"], "os-pkgs");
    assert_eq!(results[0]["Type"], "alpine");
    let mut rows: Vec<Row> = results[0]["Vulnerabilities"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| {
            assert_eq!(v["DataSource"]["ID"], "alpine");
            assert_eq!(v["SeveritySource"], "nvd");
            assert!(
                v["Title"]
                    .as_str()
                    .unwrap()
                    .starts_with(v["VulnerabilityID"].as_str().unwrap())
            );
            let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_owned();
            (
                s("VulnerabilityID"),
                s("PkgName"),
                s("InstalledVersion"),
                v["FixedVersion"].as_str().map(str::to_owned),
                s("Status"),
                s("Severity"),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn row(id: &str, pkg: &str, installed: &str, fixed: Option<&str>, severity: &str) -> Row {
    let status = if fixed.is_some() { "fixed" } else { "affected" };
    (
        id.into(),
        pkg.into(),
        installed.into(),
        fixed.map(Into::into),
        status.into(),
        severity.into(),
    )
}

fn expected_312() -> Vec<Row> {
    vec![
        row("CVE-TEST-0001", "musl", "1.1.24-r2", Some("1.1.24-r3"), "HIGH"),
        row("CVE-TEST-0002", "busybox", "1.31.1-r19", Some("1.31.1-r20"), "CRITICAL"),
        row("CVE-TEST-0003", "zlib", "1.2.11-r3", None, "MEDIUM"),
        row("CVE-TEST-0004", "musl", "1.1.24-r2", Some("1.1.24-r10"), "LOW"),
    ]
}

#[test]
fn trivy_scans_docker_archives() {
    let Some(trivy) = trivy() else { return };
    let dir = tempdir();
    let cache = dir.path().join("cache");
    TrivyDb::new().advisories(test_advisories()).write(&cache).unwrap();

    let cases = [
        (
            alpine_like("docker.io/test/alpine:3.12", "3.12.0", &[]),
            "3.12.0",
            Some(true),
            expected_312(),
        ),
        (
            alpine_like("docker.io/test/alpine:3.5", "3.5.2", &[("musl", "1.1.15-r6")]),
            "3.5.2",
            Some(true),
            vec![row("CVE-TEST-0001", "musl", "1.1.15-r6", Some("1.1.15-r9"), "HIGH")],
        ),
        (
            alpine_like("docker.io/test/alpine:3.99", "3.99.1", &[("musl", "1.2.9-r0")]),
            "3.99.1",
            None,
            vec![row("CVE-TEST-0001", "musl", "1.2.9-r0", Some("1.2.9-r1"), "HIGH")],
        ),
    ];
    for (image, version, eosl, expected) in cases {
        let tar = dir.path().join(format!("a{version}.tar"));
        let built = images::write_docker_archive(&image, &tar).unwrap();
        let report = scan(&trivy, &cache, &tar);
        assert_eq!(report["SchemaVersion"], 2);
        assert_eq!(report["ArtifactType"], "container_image");
        let os = &report["Metadata"]["OS"];
        assert_eq!(os["Family"], "alpine", "{version}");
        assert_eq!(os["Name"], version);
        assert_eq!(os.get("EOSL").and_then(Value::as_bool), eosl, "EOSL of {version}");
        assert_eq!(report["Metadata"]["ImageID"], built.image_id());
        assert_eq!(report["Metadata"]["RepoTags"], serde_json::json!(built.refs));
        assert_eq!(report["Metadata"]["DiffIDs"], serde_json::json!(built.diff_ids()));
        assert_eq!(findings(&report), expected, "findings for {version}");
    }

    // No OS files: no OS, no Results.
    let tar = dir.path().join("plain.tar");
    images::write_docker_archive(&plain("localhost/test/plain:1"), &tar).unwrap();
    let report = scan(&trivy, &cache, &tar);
    assert!(report["Metadata"].get("OS").is_none(), "{report}");
    assert!(report.get("Results").is_none(), "{report}");
}

#[test]
fn trivy_scans_oci_layout_directory() {
    let Some(trivy) = trivy() else { return };
    let dir = tempdir();
    let cache = dir.path().join("cache");
    TrivyDb::new().advisories(test_advisories()).write(&cache).unwrap();
    let image = alpine_like("localhost/test/alpine:3.12-oci", "3.12.0", &[]);
    let oci = dir.path().join("a312-oci");
    let built = OciLayout::new().image(image).digest_refs(true).write_dir(&oci).unwrap();
    let report = scan(&trivy, &cache, &oci);
    assert_eq!(report["Metadata"]["OS"]["Name"], "3.12.0");
    assert_eq!(report["Metadata"]["ImageID"], built[0].image_id());
    assert!(report["Metadata"].get("RepoTags").is_none(), "{report}");
    assert_eq!(findings(&report), expected_312());

    // Several images in one layout: Trivy takes the first index entry, or
    // the one whose ref.name annotation matches `DIR@<tag>`.
    let multi = dir.path().join("multi-oci");
    let built = OciLayout::new()
        .image(alpine_like("localhost/test/alpine:3.12-oci", "3.12.0", &[]))
        .image(alpine_like(
            "localhost/test/alpine:3.99-oci",
            "3.99.1",
            &[("musl", "1.2.9-r0")],
        ))
        .write_dir(&multi)
        .unwrap();
    let first = scan(&trivy, &cache, &multi);
    assert_eq!(first["Metadata"]["ImageID"], built[0].image_id());
    let mut tagged = multi.into_os_string();
    tagged.push("@3.99-oci");
    let second = scan(&trivy, &cache, Path::new(&tagged));
    assert_eq!(second["Metadata"]["ImageID"], built[1].image_id());
    assert_eq!(
        findings(&second),
        [row("CVE-TEST-0001", "musl", "1.2.9-r0", Some("1.2.9-r1"), "HIGH")]
    );
}

#[test]
fn trivy_reads_db_with_overflow_pages() {
    let Some(trivy) = trivy() else { return };
    let dir = tempdir();
    let cache = dir.path().join("cache");
    TrivyDb::new()
        .advisories(test_advisories())
        .advisories(many_advisories(400))
        .write(&cache)
        .unwrap();
    let tar = dir.path().join("a312.tar");
    images::write_docker_archive(&a312(), &tar).unwrap();
    let rows = findings(&scan(&trivy, &cache, &tar));
    assert_eq!(rows.len(), 4 + 400);
    for r in expected_312() {
        assert!(rows.contains(&r), "{r:?}");
    }
    assert!(rows.contains(&row("CVE-TEST-1399", "musl", "1.1.24-r2", Some("1.1.24-r3"), "HIGH")));
    assert!(!rows.iter().any(|r| r.0 == "CVE-TEST-0005"));
}

#[test]
fn trivy_sees_regenerated_db_and_updated_at() {
    let Some(trivy) = trivy() else { return };
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let tar = dir.path().join("a312.tar");
    images::write_docker_archive(&a312(), &tar).unwrap();
    TrivyDb::new().advisories(test_advisories()).write(&cache).unwrap();
    assert_eq!(findings(&scan(&trivy, &cache, &tar)).len(), 4);
    // Rewritten in place with one advisory and a new UpdatedAt.
    TrivyDb::new()
        .advisory(Advisory::new("alpine 3.12", "zlib", "CVE-TEST-0009", "LOW"))
        .updated_at("2025-06-01T00:00:00Z")
        .write(&cache)
        .unwrap();
    assert_eq!(
        findings(&scan(&trivy, &cache, &tar)),
        [row("CVE-TEST-0009", "zlib", "1.2.11-r3", None, "LOW")]
    );
    let out = Command::new(&trivy)
        .args(["version", "--format", "json", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(out.status.success());
    let version = json(&out.stdout);
    assert_eq!(version["VulnerabilityDB"]["Version"], 2);
    assert_eq!(version["VulnerabilityDB"]["UpdatedAt"], "2025-06-01T00:00:00Z");
}

// ---------------------------------------------------------------- pause

/// `p_type` of each ELF64 program header.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    assert!(count > 0);
    (0..count)
        .map(|i| u32::from_le_bytes(elf[phoff + i * size..phoff + i * size + 4].try_into().unwrap()))
        .collect()
}

#[test]
fn static_pause_builds_once_and_exits_on_sigterm() {
    if scour_testkit::gate::on_path("gcc").is_none() {
        return missing("gcc");
    }
    let dir = tempdir();
    let path = images::build_static_pause(dir.path());
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(images::build_static_pause(dir.path()), path, "cached");
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified,
        "not rebuilt"
    );
    let binary = std::fs::read(&path).unwrap();
    assert_eq!(&binary[..4], b"\x7fELF");
    assert!(!program_header_types(&binary).contains(&3), "static: no PT_INTERP");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the binary is left");

    let mut child = Command::new(&path).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(child.try_wait().unwrap().is_none(), "pause keeps running");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");

    let image = pause_image("localhost/test/pause:1", &binary).build();
    let files = tar_entries(&image.layers[0]);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "pause");
    assert_eq!(files[0].2, 0o755);
    assert_eq!(files[0].3, binary);
    assert_eq!(
        json(&image.config)["config"]["Entrypoint"],
        serde_json::json!(["/pause"])
    );
}
