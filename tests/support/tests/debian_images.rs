//! Real-sized images from a real Debian 12 root filesystem (debootstrap,
//! through the machine's apt mirror; cached in `target/testkit/debian`),
//! imported into a private containerd and scanned by the real Trivy with a
//! generated DB, as scour scans them (`--image-src containerd`, memory
//! cache backend). Skipped with a loud line unless root with debootstrap,
//! containerd and Trivy; failing instead when `CI` is set.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use scour_testkit::containerd::{PrivateContainerd, block_on, require_containerd};
use scour_testkit::debian::{self, DpkgPackage, OS_BUCKET, require_debian};
use scour_testkit::gate::require_trivy;
use scour_testkit::images::TestImage;
use scour_testkit::scenario::eraser_style_scan;
use scour_testkit::trivydb::{Advisory, TrivyDb};

const BASE: &str = "localhost/test/debian:12";
const APP_A: &str = "localhost/test/debian-app-a:1";
const APP_B: &str = "localhost/test/debian-app-b:1";
const LANG: &str = "localhost/test/debian-lang:1";

const GLIBC_VULN: &str = "CVE-TEST-DEB-0001";
const ZLIB_VULN: &str = "CVE-TEST-DEB-0002";
const OLD_VULN: &str = "CVE-TEST-DEB-0003";
const NPM_VULN: &str = "CVE-TEST-NPM-0001";
const NPM_OLD_VULN: &str = "CVE-TEST-NPM-0002";
const PIP_VULN: &str = "CVE-TEST-PIP-0001";

const MB: f64 = 1_000_000.0;

/// One Eraser-style Trivy scan, timed.
fn scan(trivy: &Path, ctd: &PrivateContainerd, cache: &Path, reference: &str) -> (Value, Duration) {
    let started = Instant::now();
    let out = eraser_style_scan(trivy, &ctd.socket(), cache, reference);
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "trivy {reference} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "trivy {reference}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (report, wall)
}

/// The results of `class` (`os-pkgs`, `lang-pkgs`).
fn results<'a>(report: &'a Value, class: &str) -> Vec<&'a Value> {
    report["Results"]
        .as_array()
        .map(|rs| rs.iter().filter(|r| r["Class"] == class).collect())
        .unwrap_or_default()
}

/// (vuln id, package name) of every finding of `result`.
fn findings(result: &Value) -> BTreeSet<(String, String)> {
    result["Vulnerabilities"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    (
                        v["VulnerabilityID"].as_str().unwrap_or_default().to_owned(),
                        v["PkgName"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn package<'a>(packages: &'a [DpkgPackage], name: &str) -> &'a DpkgPackage {
    packages
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is not installed in the Debian rootfs"))
}

/// [`debian::rootfs`], with its build or load time printed.
fn rootfs() -> &'static debian::Rootfs {
    let started = Instant::now();
    let rootfs = debian::rootfs();
    let took = started.elapsed();
    let (debootstrap_time, tar_time) = rootfs.build_times();
    eprintln!(
        "debian rootfs {} ({}): {:.1} MB layer {}; {} in {took:.2?} (cold build: debootstrap {debootstrap_time:.1?}, tar {tar_time:.1?})",
        rootfs.dir().display(),
        rootfs.mirror(),
        rootfs.tar().size as f64 / MB,
        rootfs.tar().diff_id,
        if rootfs.built_here() {
            "built"
        } else {
            "loaded from the cache"
        },
    );
    rootfs
}

#[test]
fn debian_rootfs_is_real_cached_and_packs_reproducibly() {
    if !require_debian() {
        return;
    }
    let rootfs = rootfs();
    assert!(rootfs.tar().size >= debian::MIN_ROOTFS_BYTES, "{rootfs:?}");
    assert_eq!(std::fs::metadata(&rootfs.tar().path).unwrap().len(), rootfs.tar().size);
    let version = rootfs.debian_version();
    assert!(version.starts_with("12."), "/etc/debian_version is {version}");
    let os_release = std::fs::read_to_string(rootfs.dir().join("etc/os-release")).unwrap();
    assert!(os_release.contains("VERSION_ID=\"12\""), "{os_release}");
    let packages = rootfs.packages();
    assert!(packages.len() >= 50, "only {} packages: {packages:#?}", packages.len());
    assert!(
        packages
            .iter()
            .all(|p| !p.source.is_empty() && !p.source_version.is_empty())
    );
    assert_eq!(package(&packages, "libc6").source, "glibc");
    // Packing the same tree again gives the same bytes. Hashing 200 MB
    // takes ~8 s in a debug build, so only right after a build.
    if rootfs.built_here() {
        let started = Instant::now();
        let (_, digest, size) = debian::tar_tree(rootfs.dir(), io::sink()).unwrap();
        eprintln!("re-packing the tree (hash only) took {:.2?}", started.elapsed());
        assert_eq!(
            (digest.as_str(), size),
            (rootfs.tar().diff_id.as_str(), rootfs.tar().size),
            "packing the tree again gives the same layer"
        );
    }
    // A second call in the same process is the same value, from memory.
    let started = Instant::now();
    assert!(std::ptr::eq(rootfs, debian::rootfs()));
    assert!(started.elapsed() < Duration::from_millis(50));
}

#[test]
fn debian_images_import_into_containerd_and_scan_with_real_trivy() {
    if !require_debian() || !require_containerd() {
        return;
    }
    let Some(trivy) = require_trivy() else {
        return;
    };
    let rootfs = rootfs();
    let version = rootfs.debian_version();
    let packages = rootfs.packages();
    let libc6 = package(&packages, "libc6");
    let glibc_binaries = debian::binaries_of(&packages, "glibc");
    assert!(glibc_binaries.contains("libc-bin"), "{glibc_binaries:?}");
    let zlib = package(&packages, "zlib1g");
    let zlib_binaries = debian::binaries_of(&packages, &zlib.source);
    let bash = package(&packages, "bash");
    eprintln!(
        "{} packages; libc6 {} (source {} {}), zlib1g {} (source {})",
        packages.len(),
        libc6.version,
        libc6.source,
        libc6.source_version,
        zlib.version,
        zlib.source
    );

    // Images: the base, two variants sharing its layer, one with language packages.
    let base = debian::base_image(BASE);
    let app_a = debian::variant_image(APP_A, "app-a");
    let app_b = debian::variant_image(APP_B, "app-b");
    let lang = debian::language_image(LANG, "app-lang");
    let all: Vec<TestImage> = vec![base.clone(), app_a.clone(), app_b.clone(), lang.clone()];
    let ids: BTreeSet<String> = all.iter().map(TestImage::image_id).collect();
    assert_eq!(ids.len(), 4, "distinct image ids: {ids:?}");
    for image in &all {
        let built = image.build();
        assert_eq!(
            built.layer_digest(0),
            rootfs.tar().diff_id,
            "every image shares the base layer"
        );
        assert!(
            built.layers.iter().map(Vec::len).sum::<usize>() < 64 * 1024,
            "small own layers"
        );
    }

    let ctd = PrivateContainerd::start().unwrap_or_else(|e| panic!("starting a private containerd: {e}"));
    let started = Instant::now();
    let built = ctd
        .import_images(all.clone())
        .unwrap_or_else(|e| panic!("importing the Debian images: {e}"));
    eprintln!(
        "import of 4 images (one OCI bundle, the base layer once) took {:.2?}",
        started.elapsed()
    );
    let listed = block_on(async { ctd.cri_client().await.unwrap().list_images().await.unwrap() });
    for (image, built) in all.iter().zip(&built) {
        let found = listed
            .iter()
            .find(|i| i.id == image.image_id())
            .unwrap_or_else(|| panic!("{} not in ListImages: {listed:#?}", image.refs()[0]));
        assert_eq!(found.size, built.content_size(), "{found:#?}");
        eprintln!(
            "{}: {} layers, {:.1} MB, id {}",
            image.refs()[0],
            built.layers.len(),
            found.size as f64 / MB,
            &found.id[..19]
        );
    }

    // A DB with advisories on real packages: fixed above the installed
    // glibc (fixable), unfixed on zlib, fixed long ago on bash (not
    // reported), and on the language packages.
    let cache = tempfile::Builder::new().prefix("scour-debian-db-").tempdir().unwrap();
    TrivyDb::new()
        .advisory(libc6.fixable_advisory(GLIBC_VULN, "HIGH"))
        .advisory(Advisory::new(OS_BUCKET, &zlib.source, ZLIB_VULN, "MEDIUM"))
        .advisory(Advisory::new(OS_BUCKET, &bash.source, OLD_VULN, "CRITICAL").fixed("1.0-1"))
        .advisory(Advisory::library("npm", "lodash", NPM_VULN, "HIGH").fixed("4.17.21"))
        .advisory(Advisory::library("npm", "minimist", NPM_OLD_VULN, "LOW").fixed("1.2.0"))
        .advisory(Advisory::library("pip", "requests", PIP_VULN, "MEDIUM").fixed("2.31.0"))
        .write(cache.path())
        .unwrap();

    let mut expected_os: BTreeSet<(String, String)> = BTreeSet::new();
    for name in &glibc_binaries {
        expected_os.insert((GLIBC_VULN.to_owned(), name.clone()));
    }
    for name in &zlib_binaries {
        expected_os.insert((ZLIB_VULN.to_owned(), name.clone()));
    }
    let mut walls = Vec::new();
    for reference in [BASE, APP_A, APP_B, LANG, BASE] {
        let (report, wall) = scan(&trivy, &ctd, cache.path(), reference);
        eprintln!("trivy scan of {reference}: {wall:.2?} wall");
        walls.push(wall);
        assert_eq!(report["Metadata"]["OS"]["Family"], "debian", "{:#}", report["Metadata"]);
        assert_eq!(report["Metadata"]["OS"]["Name"], version.as_str());
        let os = results(&report, "os-pkgs");
        assert_eq!(os.len(), 1, "{report:#}");
        assert_eq!(os[0]["Type"], "debian");
        assert_eq!(
            os[0]["Packages"].as_array().map(Vec::len),
            Some(packages.len()),
            "Trivy lists every dpkg package"
        );
        assert_eq!(findings(os[0]), expected_os, "{:#}", os[0]["Vulnerabilities"]);
        for v in os[0]["Vulnerabilities"].as_array().unwrap() {
            assert_eq!(v["DataSource"]["ID"], "debian", "{v:#}");
            assert_eq!(v["DataSource"]["Name"], "Debian Security Tracker", "{v:#}");
            if v["VulnerabilityID"] == GLIBC_VULN {
                assert_eq!(v["Status"], "fixed", "{v:#}");
                assert_eq!(v["Severity"], "HIGH", "{v:#}");
                assert_eq!(v["InstalledVersion"], libc6.version.as_str(), "{v:#}");
                assert_eq!(
                    v["FixedVersion"],
                    debian::version_above(&libc6.source_version).as_str(),
                    "{v:#}"
                );
            } else {
                assert_eq!(v["Status"], "affected", "{v:#}");
                assert!(v.get("FixedVersion").is_none(), "{v:#}");
            }
        }
        let lang_results = results(&report, "lang-pkgs");
        if reference == LANG {
            let types: BTreeSet<&str> = lang_results.iter().filter_map(|r| r["Type"].as_str()).collect();
            assert_eq!(types, BTreeSet::from(["node-pkg", "python-pkg"]), "{report:#}");
            let found: BTreeSet<(String, String)> = lang_results.iter().flat_map(|r| findings(r)).collect();
            let expected: BTreeSet<(String, String)> = [(NPM_VULN, "lodash"), (PIP_VULN, "requests")]
                .map(|(v, p)| (v.to_owned(), p.to_owned()))
                .into();
            assert_eq!(found, expected, "{report:#}");
            for r in &lang_results {
                for v in r["Vulnerabilities"].as_array().unwrap() {
                    assert_eq!(v["DataSource"]["ID"], "ghsa", "{v:#}");
                    assert_eq!(v["Status"], "fixed", "{v:#}");
                }
            }
        } else {
            assert!(
                lang_results.is_empty(),
                "{reference} has no language packages: {report:#}"
            );
        }
    }
    let mean = walls.iter().sum::<Duration>() / walls.len() as u32;
    eprintln!(
        "{} scans of ~{:.0} MB images: mean {mean:.2?}, the base again {:.2?} (memory cache: nothing kept)",
        walls.len(),
        rootfs.tar().size as f64 / MB,
        walls[4]
    );

    let footprint = ctd.footprint();
    drop(ctd);
    assert_eq!(
        footprint.leftovers(),
        Vec::<String>::new(),
        "left behind: {footprint:#?}"
    );
}
