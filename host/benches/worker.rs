//! Worker benchmarks on a real private containerd (root, containerd and
//! Trivy required; run with `just bench`):
//!
//! - P3: one pass over 200 unused images (half vulnerable), against an
//!   Eraser-style baseline measured in the same run: one Trivy process per
//!   image, one after another, then RemoveImage. First pass and rerun.
//! - P4: removing 1 000 images, against a raw CRI RemoveImage loop.
//! - P5: the worker's peak RSS with 5 000 images listed by a fake CRI,
//!   scanning disabled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scour::scan::trivy::parse_report;
use scour_testkit::containerd::PrivateContainerd;
use scour_testkit::fake_cri::{FakeCri, FakeState, image};
use scour_testkit::images::{TestImage, plain};
use scour_testkit::scenario::{clean, eraser_style_scan, policy_cache_dir, standard_db, vulnerable};

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Runs `scour worker --once` and returns its wall time and JSON report.
fn worker(args: &[&str], extra: &[PathBuf]) -> (Duration, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let started = Instant::now();
    // Defaults first: a repeated flag given later by the caller wins.
    let out = Command::new(SCOUR)
        .args(["worker", "--once", "--termination-log", "/nonexistent"])
        .arg("--policy-cache-dir")
        .arg(policy_cache_dir())
        .arg("--report")
        .arg(&report)
        .args(args)
        .args(extra)
        .env("SCOUR_LOG", "warn")
        .output()
        .expect("running scour worker");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "scour worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (took, report)
}

fn node(images: Vec<TestImage>) -> (PrivateContainerd, tempfile::TempDir) {
    let ctd = PrivateContainerd::start().expect("private containerd");
    ctd.import_images(images).expect("import");
    let work = tempfile::tempdir().unwrap();
    standard_db().write(&work.path().join("trivy-cache")).unwrap();
    (ctd, work)
}

fn p3(trivy: &Path) {
    println!(
        "P3  one pass over 200 unused images (half vulnerable) vs Eraser-style: sequential Trivy per image, then remove"
    );
    let images = || -> Vec<TestImage> {
        (0..200)
            .map(|i| {
                if i % 2 == 0 {
                    vulnerable(&format!("localhost/bench/vuln-{i}:1"), &format!("v{i}"))
                } else {
                    clean(&format!("localhost/bench/clean-{i}:1"), &format!("c{i}"))
                }
            })
            .collect()
    };

    // Baseline: what Eraser's scanner and remover do, in one process here.
    let (ctd, work) = node(images());
    let cache = work.path().join("trivy-cache");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let cri = rt.block_on(ctd.cri_client()).unwrap();
    let listed = rt.block_on(cri.list_images()).unwrap();
    let mut removed = 0;
    for img in &listed {
        let Some(reference) = img.digests.first().or(img.tags.first()) else {
            continue;
        };
        let out = eraser_style_scan(trivy, &ctd.socket(), &cache, reference);
        let Ok(report) = parse_report(&out.stdout) else {
            continue;
        };
        let eol = report.os.as_ref().is_some_and(|o| o.eol);
        if !report.findings.is_empty() || eol {
            rt.block_on(cri.remove_image(&img.id)).unwrap();
            removed += 1;
        }
    }
    let baseline = started.elapsed();
    assert_eq!(removed, 100);
    let baseline_rerun_started = Instant::now();
    for img in rt.block_on(cri.list_images()).unwrap() {
        let reference = img.digests.first().or(img.tags.first()).unwrap().clone();
        eraser_style_scan(trivy, &ctd.socket(), &cache, &reference);
    }
    let baseline_rerun = baseline_rerun_started.elapsed();
    drop(cri);
    drop(ctd);

    // scour: the same images on a fresh node.
    let (ctd, work) = node(images());
    let args = [
        "--runtime-endpoint".to_owned(),
        ctd.endpoint(),
        "--trivy".to_owned(),
        trivy.display().to_string(),
        "--trivy-offline".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let extra = [
        PathBuf::from("--trivy-cache-dir"),
        work.path().join("trivy-cache"),
        PathBuf::from("--state-dir"),
        work.path().join("state"),
    ];
    let (first, r1) = worker(&args, &extra);
    assert_eq!(r1["summary"]["removed"], 100, "{}", r1["summary"]);
    let (rerun, r2) = worker(&args, &extra);
    assert_eq!(r2["summary"]["trivyRuns"], 0);
    println!("    {:<34} {:>10}", "baseline, first pass", secs(baseline));
    println!("    {:<34} {:>10}", "baseline, rerun (100 left)", secs(baseline_rerun));
    println!(
        "    {:<34} {:>10}   {:.2}x baseline   (target <= 0.5x; {} Trivy runs, concurrency = cores)",
        "scour, first pass",
        secs(first),
        first.as_secs_f64() / baseline.as_secs_f64(),
        r1["summary"]["trivyRuns"]
    );
    println!(
        "    {:<34} {:>10}   {:.3}x baseline rerun, {:.3}x baseline first pass   (target <= 0.05x; scan cache: {} hits, 0 Trivy runs)",
        "scour, rerun",
        secs(rerun),
        rerun.as_secs_f64() / baseline_rerun.as_secs_f64(),
        rerun.as_secs_f64() / baseline.as_secs_f64(),
        r2["summary"]["scanCacheHits"]
    );
}

fn p4() {
    println!("P4  removing 1 000 images: scour (re-checks containers before each removal) vs a raw RemoveImage loop");
    let images = || {
        (0..1000)
            .map(|i| plain(&format!("localhost/bench/rm-{i}:1")))
            .collect::<Vec<_>>()
    };

    let (ctd, _work) = node(images());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cri = rt.block_on(ctd.cri_client()).unwrap();
    let ids: Vec<String> = rt
        .block_on(cri.list_images())
        .unwrap()
        .into_iter()
        .filter(|i| !i.tags.iter().any(|t| t.contains("pause")))
        .map(|i| i.id)
        .collect();
    let started = Instant::now();
    for id in &ids {
        rt.block_on(cri.remove_image(id)).unwrap();
    }
    let raw = started.elapsed();
    drop(cri);
    drop(ctd);

    let (ctd, work) = node(images());
    let list = work.path().join("prune.json");
    std::fs::write(&list, r#"["*"]"#).unwrap();
    let endpoint = ctd.endpoint();
    let (total, report) = worker(
        &["--runtime-endpoint", &endpoint],
        &[
            PathBuf::from("--imagelist"),
            list,
            PathBuf::from("--state-dir"),
            work.path().join("state"),
        ],
    );
    let removed = report["summary"]["removed"].as_u64().unwrap();
    assert_eq!(removed, 1000);
    let remove_phase = Duration::from_millis(report["durations"]["remove"].as_u64().unwrap());
    let raw_rate = ids.len() as f64 / raw.as_secs_f64();
    let scour_rate = removed as f64 / remove_phase.as_secs_f64();
    println!(
        "    {:<34} {:>10}   {:>7.0} images/s",
        "raw RemoveImage loop",
        secs(raw),
        raw_rate
    );
    println!(
        "    {:<34} {:>10}   {:>7.0} images/s   {:.2}x raw throughput   (target >= 0.9x; whole pass {})",
        "scour remove phase",
        secs(remove_phase),
        scour_rate,
        scour_rate / raw_rate,
        secs(total)
    );
}

fn p5() {
    println!("P5  worker peak RSS, 5 000 images from a fake CRI, scanning disabled (Trivy excluded)");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let count = 5000u64;
    let images: Vec<_> = (0..count)
        .map(|i| {
            let mut img = image(
                &format!("sha256:{i:064x}"),
                &[&format!(
                    "registry.example.com/team{}/service-{i}:v1.{}.0",
                    i % 17,
                    i % 9
                )],
                (20 + i % 300) << 20,
            );
            img.repo_digests = vec![format!(
                "registry.example.com/team{}/service-{i}@sha256:{:064x}",
                i % 17,
                i * 7
            )];
            img
        })
        .collect();
    let fake = runtime.block_on(FakeCri::start(FakeState {
        images,
        ..Default::default()
    }));
    let work = tempfile::tempdir().unwrap();
    let settings = work.path().join("settings.json");
    std::fs::write(&settings, r#"{"scanDisabled": true}"#).unwrap();
    let endpoint = fake.endpoint();
    let mut peaks = Vec::new();
    for (label, cache) in [("cold policy cache (compiles)", true), ("warm policy cache", false)] {
        let cache_dir = work.path().join("policy-cache");
        if cache {
            let _ = std::fs::remove_dir_all(&cache_dir);
        }
        let (took, report) = worker(
            &["--runtime-endpoint", &endpoint, "--dry-run"],
            &[
                PathBuf::from("--settings"),
                settings.clone(),
                PathBuf::from("--state-dir"),
                work.path().join("state"),
                PathBuf::from("--policy-cache-dir"),
                cache_dir,
            ],
        );
        assert_eq!(report["summary"]["images"], count);
        let peak = report["peakRssBytes"].as_u64().unwrap();
        peaks.push(peak);
        println!(
            "    {:<34} {:>7.1} MiB   pass {}   (target <= 40 MiB)",
            label,
            peak as f64 / (1 << 20) as f64,
            secs(took)
        );
    }
    drop(fake);
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("P5") {
        p5();
    }
    let needs_node = wanted("P3") || wanted("P4");
    if !needs_node {
        return;
    }
    if !scour_testkit::containerd::require_containerd() {
        println!("P3, P4 skipped: they need root, containerd and runc");
        return;
    }
    let Some(trivy) = scour_testkit::gate::require_trivy() else {
        println!("P3 skipped: it needs Trivy (just setup)");
        return;
    };
    if wanted("P3") {
        p3(&trivy);
    }
    if wanted("P4") {
        p4();
    }
}
