//! P3 on real-sized images (issue 11; root, containerd, Trivy and
//! debootstrap required; run with `just bench`). Twenty 204 MB images built
//! from a real Debian 12 root filesystem, all sharing its layer (eighteen
//! apps, the bare base, one with npm and pip packages), unused, on a private
//! containerd, with a generated DB holding an advisory on their glibc.
//!
//! Each figure is a ratio against a baseline measured in the same run:
//! - scour's first pass against an Eraser-style loop: one `trivy image`
//!   per image, one after another, memory cache, nothing kept; and, for
//!   comparison, scour's first pass reading layers through containerd's
//!   export as that loop does (`--read-layers export`);
//! - scour's pass after a DB update, and with nothing changed, against its
//!   first pass;
//! - three nodes holding the same images: the CPU time of every Trivy
//!   process (and the workers) with one shared `trivy server`, against
//!   each node scanning on its own.
//!
//! Passes are dry runs, so every pass sees the same twenty images.

use std::path::Path;
use std::time::{Duration, Instant};

use scour::scan::trivy::parse_report;
use scour_testkit::debian;
use scour_testkit::images::TestImage;
use scour_testkit::scenario::{Run, TestNode, eraser_style_scan, standard_db};
use scour_testkit::trivy_server::{TrivyServer, waited_children_cpu_time};
use scour_testkit::trivydb::TrivyDb;

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");
const APPS: usize = 18;

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn images() -> Vec<(String, TestImage)> {
    let mut out = vec![
        ("base".to_owned(), debian::base_image("localhost/real/base:12")),
        (
            "lang".to_owned(),
            debian::language_image("localhost/real/lang:1", "lang"),
        ),
    ];
    for i in 0..APPS {
        let name = format!("app-{i}");
        out.push((
            name.clone(),
            debian::variant_image(&format!("localhost/real/{name}:1"), &name),
        ));
    }
    out
}

fn db() -> TrivyDb {
    let libc = debian::rootfs().package("libc6").expect("libc6 is installed");
    standard_db().advisory(libc.fixable_advisory("CVE-REAL-0001", "HIGH"))
}

fn updated_db() -> TrivyDb {
    let zlib = debian::rootfs().package("zlib1g").expect("zlib1g is installed");
    db().advisory(zlib.fixable_advisory("CVE-REAL-0002", "CRITICAL"))
        .updated_at("2024-02-01T00:00:00Z")
}

fn node() -> TestNode {
    let mut node = TestNode::start().expect("containerd and trivy");
    let images = images();
    node.import(
        images
            .iter()
            .map(|(role, image)| (role.as_str(), image.clone()))
            .collect(),
    );
    db().write(&node.trivy_cache()).unwrap();
    node
}

/// One dry-run pass; its wall time, the CPU time of the worker and every
/// Trivy it ran, and its report.
fn pass(node: &TestNode, args: &[&str]) -> (Duration, Duration, Run) {
    let cpu = waited_children_cpu_time();
    let started = Instant::now();
    let run = node.worker(Path::new(SCOUR)).arg("--dry-run").args(args).run();
    let took = started.elapsed();
    let cpu = waited_children_cpu_time().saturating_sub(cpu);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.status(), "ok", "{}", run.stderr());
    assert_eq!(
        run.summary("wouldRemove"),
        20,
        "every image is vulnerable: {}",
        run.report()["summary"]
    );
    (took, cpu, run)
}

/// Forgets what the node's passes kept (analyses and results).
fn forget(node: &TestNode) {
    let _ = std::fs::remove_dir_all(node.state_dir());
}

/// What Eraser's scanner does: one Trivy process per image, one after
/// another, analysing every layer every time.
fn eraser_style(node: &TestNode) -> Duration {
    let started = Instant::now();
    for (role, _) in images() {
        let reference = node.images[&role].refs[0].clone();
        let out = eraser_style_scan(&node.trivy, &node.ctd.socket(), &node.trivy_cache(), &reference);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report = parse_report(&out.stdout).unwrap();
        assert!(!report.findings.is_empty(), "{reference} is vulnerable");
    }
    started.elapsed()
}

fn main() {
    if !scour_testkit::containerd::require_containerd() || !debian::require_debian() {
        return;
    }
    println!("P3r one pass over 20 real-sized unused images (204 MB Debian 12, one shared base layer), dry run");
    let node = node();

    let baseline = eraser_style(&node);
    println!(
        "    {:<44} {:>9}",
        "Eraser-style: trivy image per image, in turn",
        secs(baseline)
    );

    let (first, first_cpu, r1) = pass(&node, &[]);
    assert_eq!(r1.summary("layersReadInPlace"), r1.summary("trivyRuns"));
    println!(
        "    {:<44} {:>9}   {:.2}x Eraser-style   (goal <= 0.5x; {} analyses, layers read in place, one per core at a time; CPU {})",
        "scour, first pass",
        secs(first),
        first.as_secs_f64() / baseline.as_secs_f64(),
        r1.summary("trivyRuns"),
        secs(first_cpu),
    );
    let kept_state = node.state_dir().with_extension("first-pass");
    std::fs::rename(node.state_dir(), &kept_state).unwrap();
    let (exported, _, _) = pass(&node, &["--read-layers", "export"]);
    forget(&node);
    std::fs::rename(&kept_state, node.state_dir()).unwrap();
    println!(
        "    {:<44} {:>9}   {:.2}x Eraser-style   (for comparison: each image copied out through containerd's export)",
        "scour, first pass, --read-layers export",
        secs(exported),
        exported.as_secs_f64() / baseline.as_secs_f64(),
    );

    updated_db().write(&node.trivy_cache()).unwrap();
    let (after_update, _, r2) = pass(&node, &[]);
    assert_eq!(r2.summary("trivyRuns"), 0, "a pass after a DB update analysed an image");
    println!(
        "    {:<44} {:>9}   {:.3}x first pass   (goal <= 0.1x; {} kept analyses matched, no image read)",
        "scour, after a DB update",
        secs(after_update),
        after_update.as_secs_f64() / first.as_secs_f64(),
        r2.summary("analysesReused"),
    );

    let (unchanged, _, r3) = pass(&node, &[]);
    assert_eq!(r3.summary("scanCacheHits"), r1.summary("scanned"));
    println!(
        "    {:<44} {:>9}   {:.3}x first pass   (goal <= 0.05x; {} results kept, no Trivy run)",
        "scour, nothing changed",
        secs(unchanged),
        unchanged.as_secs_f64() / first.as_secs_f64(),
        r3.summary("scanCacheHits"),
    );

    // The same node through a Trivy server on loopback: the base layer is
    // analysed once for all twenty images.
    forget(&node);
    let cache = tempfile::tempdir().unwrap();
    updated_db().write(cache.path()).unwrap();
    let server = TrivyServer::start(&node.trivy, cache.path());
    let (served, _, _) = pass(&node, &["--trivy-server", &server.url()]);
    drop(server);
    println!(
        "    {:<44} {:>9}   {:.2}x Eraser-style   (for comparison: layers shared through the server's cache)",
        "scour, first pass via a trivy server",
        secs(served),
        served.as_secs_f64() / baseline.as_secs_f64(),
    );
    drop(node);

    println!("P3s three nodes holding the same 20 images: Trivy CPU time, one shared trivy server vs none");
    let nodes = [self::node(), self::node(), self::node()];
    let mut alone = Duration::ZERO;
    for n in &nodes {
        alone += pass(n, &[]).1;
    }
    for n in &nodes {
        forget(n);
    }
    let cache = tempfile::tempdir().unwrap();
    db().write(cache.path()).unwrap();
    let mut server = TrivyServer::start(&nodes[0].trivy, cache.path());
    let mut clients = Duration::ZERO;
    for n in &nodes {
        clients += pass(n, &["--trivy-server", &server.url()]).1;
    }
    let server_cpu = server.cpu_time();
    server.stop();
    let shared = clients + server_cpu;
    println!("    {:<44} {:>9}", "each node on its own (3 first passes)", secs(alone));
    println!(
        "    {:<44} {:>9}   {:.2}x   (goal <= 0.5x; clients {}, server {})",
        "through one trivy server",
        secs(shared),
        shared.as_secs_f64() / alone.as_secs_f64(),
        secs(clients),
        secs(server_cpu),
    );
}
