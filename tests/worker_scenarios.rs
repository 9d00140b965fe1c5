//! `scour worker` on a real private containerd, with the real Trivy binary
//! and a generated vulnerability DB. Each scenario builds its own node.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use scour_testkit::containerd::block_on;
use scour_testkit::debian;
use scour_testkit::guests::hostile_guest_path;
use scour_testkit::scenario::{
    Run, TestNode, clean, end_of_life, runnable_vulnerable, standard_db, vulnerable, wait_for,
};
use scour_testkit::trivy_server::TrivyServer;
use scour_testkit::trivydb::Advisory;

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");

fn scour() -> &'static Path {
    Path::new(SCOUR)
}

fn hostile(name: &str) -> PathBuf {
    scour_testkit::guests::hostile_guest(name);
    hostile_guest_path(name)
}

fn assert_verdict(run: &Run, node: &TestNode, role: &str, action: &str, reason: &str) {
    let (got_action, got_reason) = run.verdict(&node.id(role));
    assert_eq!(got_action, action, "{role}: reason {got_reason:?}");
    assert!(
        got_reason.contains(reason),
        "{role}: reason {got_reason:?} lacks {reason:?}"
    );
}

/// Every image the report calls removed is gone from containerd, and every
/// other image is still there; the summary adds up.
fn assert_report_matches_node(run: &Run, node: &TestNode) {
    let present = node.image_ids();
    let mut removed = 0;
    let mut bytes = 0;
    for img in run.report()["images"].as_array().unwrap() {
        let id = img["id"].as_str().unwrap();
        match img["action"].as_str().unwrap() {
            "removed" => {
                removed += 1;
                bytes += img["sizeBytes"].as_u64().unwrap();
                assert!(!present.contains(id), "{id} is reported removed but still present");
            }
            _ => assert!(present.contains(id), "{id} is reported {} but gone", img["action"]),
        }
    }
    assert_eq!(run.summary("removed"), removed);
    assert_eq!(run.summary("bytesFreed"), bytes);
    assert_eq!(
        run.summary("images") as usize,
        run.report()["images"].as_array().unwrap().len()
    );
}

/// The standard node: images of every kind, a running and a created
/// container, and user/system exclusion files.
fn standard_node() -> Option<(TestNode, PathBuf, PathBuf)> {
    let mut node = TestNode::start()?;
    node.import(vec![
        ("vulnerable", vulnerable("docker.io/library/alpine:3.12", "vulnerable")),
        ("clean", clean("localhost/test/clean:1", "clean")),
        ("eol", end_of_life("docker.io/library/alpine:3.5", "eol")),
        ("running", runnable_vulnerable("localhost/test/running:1", "running")),
        ("created", runnable_vulnerable("localhost/test/created:1", "created")),
        ("excluded-exact", vulnerable("ghcr.io/org/tool:2", "excluded-exact")),
        (
            "excluded-prefix",
            vulnerable("localhost/excluded/app:1", "excluded-prefix"),
        ),
        (
            "excluded-repo",
            vulnerable("docker.io/library/redis:7", "excluded-repo"),
        ),
        (
            "not-excluded",
            vulnerable("docker.io/library/redis-foo:1", "not-excluded"),
        ),
        (
            "multi",
            vulnerable("localhost/test/multi:v1", "multi").tag("localhost/test/multi:latest"),
        ),
        ("system", vulnerable("registry.k8s.io/kube-proxy:v1.30.0", "system")),
    ]);
    let (running, created) = (node.id("running"), node.id("created"));
    block_on(async {
        let pod = node.ctd.run_pod("app").await.expect("pod");
        node.ctd
            .create_container(&pod, &running, "running", true)
            .await
            .expect("running container");
        node.ctd
            .create_container(&pod, &created, "created", false)
            .await
            .expect("created container");
    });
    let user = node.exclusions(
        "user.json",
        &[
            "ghcr.io/org/tool:2",
            "localhost/excluded/*",
            "docker.io/library/redis:*",
        ],
    );
    let system = node.exclusions("system.json", &["registry.k8s.io/*"]);
    Some((node, user, system))
}

#[test]
fn a_default_pass_removes_what_eraser_would_and_nothing_it_must_not() {
    let Some((node, user, system)) = standard_node() else {
        return;
    };
    let run = node
        .worker(scour())
        .arg("--exclusions")
        .arg(&user)
        .arg("--system-exclusions")
        .arg(&system)
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.status(), "ok", "{}", run.stderr());

    // A vulnerable unused image is removed, naming its findings.
    assert_verdict(
        &run,
        &node,
        "vulnerable",
        "removed",
        "vulnerable: 1 LOW, 1 MEDIUM, 1 HIGH, 1 CRITICAL",
    );
    // A clean unused image is kept.
    assert_verdict(&run, &node, "clean", "kept", "clean");
    // An end-of-life image is removed.
    assert_verdict(&run, &node, "eol", "removed", "eol: alpine 3.5.2");
    // Images used by a running or a created-but-not-started container are kept.
    assert_verdict(&run, &node, "running", "kept", "in-use");
    assert_verdict(&run, &node, "created", "kept", "in-use");
    // Exclusions: exact, prefix/*, repo:* — and repo:* does not reach redis-foo.
    assert_verdict(&run, &node, "excluded-exact", "kept", "excluded: ghcr.io/org/tool:2");
    assert_verdict(&run, &node, "excluded-prefix", "kept", "excluded: localhost/excluded/*");
    assert_verdict(
        &run,
        &node,
        "excluded-repo",
        "kept",
        "excluded: docker.io/library/redis:*",
    );
    assert_verdict(&run, &node, "not-excluded", "removed", "vulnerable");
    // A multi-tag image goes whole.
    assert_verdict(&run, &node, "multi", "removed", "vulnerable");
    // The system list is the host's: the default policy never sees it.
    assert_verdict(
        &run,
        &node,
        "system",
        "kept",
        "guard: system exclusion registry.k8s.io/*",
    );
    // The sandbox image stays.
    let pause = run.report()["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tags"][0] == "localhost/test/pause:1")
        .expect("pause image in report");
    assert_eq!(pause["action"], "kept");

    assert_report_matches_node(&run, &node);
    assert_eq!(run.summary("removed"), 4);
    // Scanned: every unused, unexcluded image (vulnerable, clean, eol,
    // not-excluded, multi, system), each once, by its repo digest. The pause
    // image is in use: the running pods' sandboxes run on it.
    assert_eq!(run.summary("trivyRuns"), 6);
    assert_eq!(run.summary("selected"), 6);
    let durations = &run.report()["durations"];
    for phase in ["collect", "scan", "decide", "remove", "total"] {
        assert!(durations[phase].is_u64(), "durations.{phase} missing");
    }
    assert!(
        run.report()["policy"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // Logs are JSON lines with a phase field.
    let phases: Vec<String> = run
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["phase"].as_str().map(str::to_owned))
        .collect();
    for phase in ["collect", "scan", "decide", "remove"] {
        assert!(phases.iter().any(|p| p == phase), "no log line with phase {phase}");
    }
}

#[test]
fn dry_run_removes_nothing_and_says_what_it_would() {
    let Some((node, user, system)) = standard_node() else {
        return;
    };
    let before = node.image_ids();
    let run = node
        .worker(scour())
        .args(["--dry-run", "--exclusions"])
        .arg(&user)
        .arg("--system-exclusions")
        .arg(&system)
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(node.image_ids(), before, "a dry run removed something");
    assert_verdict(&run, &node, "vulnerable", "would-remove", "vulnerable");
    assert_verdict(&run, &node, "running", "kept", "in-use");
    assert_eq!(run.summary("wouldRemove"), 4);
    assert_eq!(run.summary("removed"), 0);
    assert_eq!(run.summary("bytesFreed"), 0);
}

#[test]
fn a_failed_scan_is_kept_by_default_and_removed_with_delete_failed_images() {
    let Some(mut node) = TestNode::start() else { return };
    // Trivy 0.76 panics reading this image through containerd's export (a
    // history entry without `created`); read in place, it scans fine.
    node.import(vec![
        (
            "broken",
            vulnerable("localhost/test/broken:1", "broken").without_history_created(),
        ),
        ("clean", clean("localhost/test/clean:1", "clean")),
    ]);
    let run = node.worker(scour()).arg("--dry-run").run();
    assert_eq!(run.status(), "ok", "{}", run.stderr());
    assert_verdict(&run, &node, "broken", "would-remove", "vulnerable");
    let _ = std::fs::remove_dir_all(node.state_dir());

    let run = node.worker(scour()).args(["--read-layers", "export"]).run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.status(), "degraded");
    assert_verdict(&run, &node, "broken", "kept", "scan-failed: trivy exited with status 2");
    assert_eq!(run.summary("scanFailed"), 1);
    assert!(node.has("broken"));
    let failures = run.report()["scanFailures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["images"], 1);

    let settings = node.file("delete-failed.json", r#"{"deleteFailedImages": true}"#);
    let run = node
        .worker(scour())
        .args(["--read-layers", "export"])
        .arg("--settings")
        .arg(&settings)
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_verdict(&run, &node, "broken", "removed", "scan-failed");
    assert!(!node.has("broken"));
    assert_verdict(&run, &node, "clean", "kept", "clean");
}

#[test]
fn a_second_pass_does_not_rescan_unchanged_images() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("clean-a", clean("localhost/test/clean-a:1", "clean-a")),
        ("clean-b", clean("localhost/test/clean-b:1", "clean-b")),
        ("vulnerable", vulnerable("localhost/test/vulnerable:1", "vulnerable")),
    ]);
    let (trivy, calls) = node.counting_trivy();

    let first = node.worker(scour()).arg("--trivy").arg(&trivy).run();
    assert_eq!(first.code(), Some(0), "{}", first.stderr());
    let after_first = calls();
    assert!(
        after_first >= 4,
        "clean-a, clean-b, vulnerable and pause were scanned: {after_first}"
    );
    assert!(!node.has("vulnerable"));

    let second = node.worker(scour()).arg("--trivy").arg(&trivy).run();
    assert_eq!(second.code(), Some(0), "{}", second.stderr());
    assert_eq!(calls(), after_first, "the second pass ran Trivy");
    assert_eq!(second.summary("trivyRuns"), 0);
    assert_eq!(second.summary("scanCacheHits"), 3, "clean-a, clean-b and pause");
    assert_verdict(&second, &node, "clean-a", "kept", "clean");

    // A scanner setting that changes what Trivy finds makes the kept
    // results stale: each change scans again, and a repeat reuses them.
    let config = |vulnerabilities: &str| {
        node.file(
            "config.yaml",
            &format!(
                "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\ncomponents:\n  scanner:\n    config: |\n      vulnerabilities:\n{vulnerabilities}"
            ),
        )
    };
    let mut runs = Vec::new();
    for vulnerabilities in [
        "        ignoredStatuses: [will_not_fix]\n",
        "        ignoredStatuses: [will_not_fix]\n",
        "        ignoredStatuses: [will_not_fix]\n        types: [os]\n",
    ] {
        let before = calls();
        let run = node
            .worker(scour())
            .arg("--trivy")
            .arg(&trivy)
            .arg("--config")
            .arg(config(vulnerabilities))
            .run();
        assert_eq!(run.code(), Some(0), "{}", run.stderr());
        runs.push((
            calls() - before,
            run.summary("analysesReused"),
            run.summary("scanCacheHits"),
        ));
    }
    // ignoredStatuses changes what matches, not what the images hold: the
    // kept analyses are matched again. types changes the analysis itself.
    assert_eq!(
        runs,
        [(0, 3, 0), (0, 0, 3), (3, 0, 0)],
        "(image reads, analyses reused, cache hits) for: ignoredStatuses set, the same again, types set"
    );
}

#[test]
fn after_a_db_update_a_pass_matches_kept_analyses_without_reading_any_image() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("clean", clean("localhost/test/clean:1", "clean")),
        ("eol", end_of_life("localhost/test/eol:1", "eol")),
    ]);
    let (trivy, image_reads) = node.counting_trivy();
    // Keep the end-of-life image: this scenario is about findings.
    let settings = node.file("settings.json", r#"{"deleteEOLImages": false}"#);
    let pass = || {
        let run = node
            .worker(scour())
            .arg("--trivy")
            .arg(&trivy)
            .arg("--settings")
            .arg(&settings)
            .run();
        assert_eq!(run.code(), Some(0), "{}", run.stderr());
        run
    };

    // Small images keep the scan's report, turned into an SBOM at the first
    // match (a large image's is made in the same pass, see the real-sized
    // scenario).
    let first = pass();
    let after_first = image_reads();
    assert!(after_first >= 2, "clean and eol were analysed: {after_first}");
    assert_eq!(first.summary("analysesReused"), 0);
    assert_verdict(&first, &node, "clean", "kept", "clean");
    let analyses = node.state_dir().join("analyses");
    let kept = |role: &str, suffix: &str| analyses.join(format!("{}{suffix}", node.id(role).replace(':', "-")));
    assert!(
        kept("clean", ".trivy.json").is_file() && !kept("clean", ".cdx.json").exists(),
        "the first scan keeps clean's analysis in {}",
        analyses.display()
    );

    // The DB is republished, with an advisory on the musl that clean has.
    standard_db()
        .advisory(Advisory::new("alpine 3.99", "musl", "CVE-TEST-0099", "CRITICAL").fixed("1.2.9-r2"))
        .updated_at("2024-02-01T00:00:00Z")
        .write(&node.trivy_cache())
        .unwrap();
    let second = pass();
    assert_eq!(image_reads(), after_first, "the pass after the DB update read an image");
    assert_eq!(second.summary("trivyRuns"), 0);
    assert_eq!(second.summary("scanCacheHits"), 0, "results under the old DB are stale");
    assert_eq!(second.summary("analysesReused"), first.summary("trivyRuns"));
    assert_verdict(&second, &node, "clean", "removed", "vulnerable");
    assert!(!node.has("clean"));
    assert_verdict(&second, &node, "eol", "kept", "clean");
    assert!(
        kept("eol", ".cdx.json").is_file() && !kept("eol", ".trivy.json").exists(),
        "the first match turned eol's analysis into an SBOM"
    );

    // A corrupt kept analysis is made again from the image, not trusted;
    // the verdict stays right, and the pass is degraded to say so.
    std::fs::write(kept("eol", ".cdx.json"), b"{\"bomFormat\": \"CycloneDX\", \"trunc").unwrap();
    standard_db()
        .updated_at("2024-03-01T00:00:00Z")
        .write(&node.trivy_cache())
        .unwrap();
    let third = pass();
    assert_eq!(image_reads(), after_first + 1, "only eol was read again");
    assert_eq!(third.summary("scanFailed"), 0);
    assert_eq!(third.status(), "degraded");
    let errors = third.report()["errors"].to_string();
    assert!(
        errors.contains("1 kept image analyses were unreadable") && errors.contains(&node.id("eol")),
        "{errors}"
    );
    assert_verdict(&third, &node, "eol", "kept", "clean");
    assert!(
        !kept("eol", ".cdx.json").exists() && kept("eol", ".trivy.json").is_file(),
        "the corrupt analysis was replaced by a fresh one"
    );
    assert!(
        !kept("clean", ".cdx.json").exists() && !kept("clean", ".trivy.json").exists(),
        "the analysis of a removed image is deleted with it"
    );
}

#[test]
fn two_nodes_scan_through_one_trivy_server_and_keep_no_db_of_their_own() {
    let images = || {
        vec![
            ("vulnerable", vulnerable("localhost/test/vulnerable:1", "vulnerable")),
            ("clean", clean("localhost/test/clean:1", "clean")),
        ]
    };
    let Some(mut a) = TestNode::start() else { return };
    let Some(mut b) = TestNode::start() else { return };
    a.import(images());
    b.import(images());
    let server_cache = tempfile::tempdir().unwrap();
    standard_db().write(server_cache.path()).unwrap();
    let server = TrivyServer::start(&a.trivy, server_cache.path());
    for node in [&a, &b] {
        std::fs::remove_dir_all(node.trivy_cache().join("db")).unwrap();
    }

    for node in [&a, &b] {
        let run = node.worker(scour()).arg("--trivy-server").arg(server.url()).run();
        assert_eq!(run.code(), Some(0), "{}", run.stderr());
        assert_eq!(run.status(), "ok", "{}", run.stderr());
        assert_verdict(&run, node, "vulnerable", "removed", "vulnerable");
        assert_verdict(&run, node, "clean", "kept", "clean");
        assert!(
            !node.trivy_cache().join("db").exists(),
            "a node fetched a DB of its own"
        );
    }
    assert!(
        server_cache.path().join("fanal").is_dir(),
        "the server keeps the layer analyses: {}",
        server.log_text()
    );

    // The DB is updated on the server only: the nodes' next passes see it
    // (results keyed by the server's DB) and read no image.
    standard_db()
        .advisory(Advisory::new("alpine 3.99", "musl", "CVE-TEST-0099", "CRITICAL").fixed("1.2.9-r2"))
        .updated_at("2024-02-01T00:00:00Z")
        .write(server_cache.path())
        .unwrap();
    drop(server);
    let server = TrivyServer::start(&a.trivy, server_cache.path());
    let run = a.worker(scour()).arg("--trivy-server").arg(server.url()).run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.summary("trivyRuns"), 0);
    assert!(run.summary("analysesReused") >= 1);
    assert_verdict(&run, &a, "clean", "removed", "vulnerable");
}

#[test]
fn real_sized_debian_images_are_analysed_once_and_rematched_after_a_db_update() {
    if !debian::require_debian() {
        return;
    }
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("base", debian::base_image("localhost/real/base:12")),
        ("app", debian::variant_image("localhost/real/app:1", "app")),
        ("lang", debian::language_image("localhost/real/lang:1", "lang")),
    ]);
    let (trivy, image_reads) = node.counting_trivy();
    let pass = || {
        let run = node.worker(scour()).arg("--trivy").arg(&trivy).run();
        assert_eq!(run.code(), Some(0), "{}", run.stderr());
        assert_eq!(run.status(), "ok", "{}", run.stderr());
        run
    };

    // The generated DB knows nothing about Debian yet: 204 MB each, and clean.
    let first = pass();
    let reads = image_reads();
    assert!(reads >= 3, "base, app and lang were analysed: {reads}");
    assert_eq!(
        first.summary("layersReadInPlace"),
        first.summary("trivyRuns"),
        "every image's layers were read where containerd keeps them"
    );
    for role in ["base", "app", "lang"] {
        assert_verdict(&first, &node, role, "kept", "clean");
    }
    // A large image's analysis is an SBOM from its first pass on.
    let kept = |suffix: &str| {
        node.state_dir()
            .join("analyses")
            .join(format!("{}{suffix}", node.id("app").replace(':', "-")))
    };
    let analysis = std::fs::read_to_string(kept(".cdx.json")).unwrap();
    assert!(
        analysis.contains("\"libc6\"") && !kept(".trivy.json").exists(),
        "the kept SBOM lists the image's Debian packages"
    );

    // The DB is republished with an advisory on the glibc these images carry.
    let libc = debian::rootfs().package("libc6").expect("libc6 is installed");
    standard_db()
        .advisory(libc.fixable_advisory("CVE-REAL-0001", "HIGH"))
        .updated_at("2024-02-01T00:00:00Z")
        .write(&node.trivy_cache())
        .unwrap();
    let second = pass();
    assert_eq!(
        image_reads(),
        reads,
        "the pass after the DB update read an image's layers"
    );
    assert_eq!(second.summary("trivyRuns"), 0);
    assert_eq!(second.summary("analysesReused"), first.summary("trivyRuns"));
    for role in ["base", "app", "lang"] {
        assert_verdict(&second, &node, role, "removed", "vulnerable");
        assert!(!node.has(role));
    }
    // Sizes as CRI reports them: content held, the base layer compressed.
    let held: u64 = ["base", "app", "lang"]
        .iter()
        .map(|role| node.images[*role].content_size())
        .sum();
    let removed = second.summary("bytesFreed");
    assert_eq!(removed, held, "three real-sized images were removed");
    assert!(held > 3 * 50_000_000, "{held} bytes");
}

#[test]
fn layers_are_read_where_containerd_keeps_them_and_through_the_export_when_they_cannot_be() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("vulnerable", vulnerable("localhost/test/vulnerable:1", "vulnerable")),
        ("clean", clean("localhost/test/clean:1", "clean")),
    ]);
    // A docker archive import gives no repo digest to find a manifest by.
    let archived = node
        .ctd
        .import_docker_archive(&vulnerable("localhost/test/archived:1", "archived"))
        .unwrap();
    node.images.insert("archived".into(), archived);
    let verdicts = |run: &Run| {
        assert_eq!(run.code(), Some(0), "{}", run.stderr());
        assert_eq!(run.status(), "ok", "{}", run.stderr());
        assert_verdict(run, &node, "vulnerable", "would-remove", "vulnerable");
        assert_verdict(run, &node, "archived", "would-remove", "vulnerable");
        assert_verdict(run, &node, "clean", "kept", "clean");
    };
    let fresh_pass = |trivy: &Path, extra: &[&str]| {
        let _ = std::fs::remove_dir_all(node.state_dir());
        node.worker(scour())
            .arg("--trivy")
            .arg(trivy)
            .arg("--dry-run")
            .args(extra)
            .run()
    };
    // A fresh pass through a Trivy wrapper: the run, its `trivy image`
    // calls, and how many read in place and through the export.
    let recorded_pass = |wrapper: fn(&Path, &Path) -> PathBuf, extra: &[&str]| {
        let (trivy, calls) = node.recording_trivy(wrapper);
        let run = fresh_pass(&trivy, extra);
        let made = calls();
        let count = |flag: &str| made.iter().filter(|c| c.contains(flag)).count();
        let split = (count("--input"), count("--image-src containerd"));
        (run, made, split)
    };

    // In place for every image with a manifest in the content store (the
    // pause image too); through the export for the archived one.
    let (run, made, split) = recorded_pass(scour_testkit::fake_trivy::counting_trivy, &[]);
    verdicts(&run);
    assert_eq!(split, (3, 1), "{made:#?}");
    assert_eq!(run.summary("trivyRuns"), 4);
    assert_eq!(run.summary("layersReadInPlace"), 3);
    let archived_call = made.iter().find(|c| c.contains("--image-src")).unwrap();
    assert!(archived_call.ends_with("localhost/test/archived:1"), "{archived_call}");

    // --read-layers export: Eraser's way for every image, the same verdicts.
    let (run, made, split) = recorded_pass(scour_testkit::fake_trivy::counting_trivy, &["--read-layers", "export"]);
    verdicts(&run);
    assert_eq!(split, (0, 4), "{made:#?}");
    assert_eq!(run.summary("layersReadInPlace"), 0);

    // A layout Trivy cannot open costs a retry through the export, not the
    // scan; the reason is logged.
    let (run, made, split) = recorded_pass(scour_testkit::fake_trivy::layout_refusing_trivy, &[]);
    verdicts(&run);
    assert_eq!(split, (3, 4), "{made:#?}");
    assert_eq!(run.summary("layersReadInPlace"), 0);
    assert_eq!(run.summary("trivyRuns"), 7);
    assert!(
        run.stderr()
            .contains("reading the layers in place failed; trying containerd's export")
            && run.stderr().contains("unable to open the layout as an OCI Image"),
        "{}",
        run.stderr()
    );

    // Blobs the runtime discarded after unpacking (containerd's
    // discard_unpacked_layers): no layout for that image, the export's own
    // error, and the image kept.
    let blob = node.ctd.content_blob(&node.images["clean"].layer_blob_digest(0));
    std::fs::remove_file(&blob).unwrap();
    let (run, made, split) = recorded_pass(scour_testkit::fake_trivy::counting_trivy, &[]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.status(), "degraded", "{}", run.stderr());
    assert_eq!(
        split,
        (2, 3),
        "clean through the export by digest, then by tag: {made:#?}"
    );
    assert!(
        made.iter()
            .any(|c| c.ends_with("localhost/test/clean:1") && c.contains("--image-src")),
        "clean went through the export: {made:#?}"
    );
    assert_verdict(&run, &node, "clean", "kept", "scan failed");
    assert_verdict(&run, &node, "vulnerable", "would-remove", "vulnerable");
}

/// The worker pod's memory limit in the chart's defaults, in bytes.
fn chart_worker_memory_limit() -> u64 {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/scour/values.yaml"))
            .unwrap(),
    )
    .unwrap();
    let limit = values["resources"]["worker"]["limits"]["memory"]
        .as_str()
        .expect("a memory limit");
    let (number, unit) = limit.split_at(limit.find(|c: char| !c.is_ascii_digit()).unwrap_or(limit.len()));
    let shift = match unit {
        "Gi" => 30,
        "Mi" => 20,
        other => panic!("unit {other:?} of resources.worker.limits.memory"),
    };
    number.parse::<u64>().unwrap() << shift
}

#[test]
fn a_real_sized_pass_fits_the_charts_worker_memory_limit() {
    if !debian::require_debian() {
        return;
    }
    let Some(mut node) = TestNode::start() else { return };
    let limit = chart_worker_memory_limit();
    let Some(group) = scour_testkit::cgroup::MemoryCgroup::create(limit) else {
        scour_testkit::gate::skip("cannot make a memory cgroup here");
        return;
    };
    node.import(vec![
        ("base", debian::base_image("localhost/real/base:12")),
        ("app", debian::variant_image("localhost/real/app:1", "app")),
        ("lang", debian::language_image("localhost/real/lang:1", "lang")),
        ("other", debian::variant_image("localhost/real/other:1", "other")),
    ]);
    let run = node
        .worker(&group.wrap(scour(), node.work.path()))
        .arg("--dry-run")
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.status(), "ok", "{}", run.stderr());
    assert!(run.summary("scanned") >= 4, "every image was scanned under the limit");
    assert_eq!(
        group.oom_kills().unwrap_or(0),
        0,
        "a process was OOM-killed under {limit} bytes"
    );
    if let Some(peak) = group.peak() {
        eprintln!(
            "peak memory of the worker and its Trivy processes: {} MiB of {} MiB",
            peak >> 20,
            limit >> 20
        );
        assert!(peak < limit);
    }
}

fn imagelist(node: &TestNode, entries: &[String]) -> PathBuf {
    let mut yaml =
        String::from("apiVersion: eraser.sh/v1\nkind: ImageList\nmetadata:\n  name: imagelist\nspec:\n  images:\n");
    for e in entries {
        yaml.push_str(&format!("    - \"{e}\"\n"));
    }
    node.file(&format!("imagelist-{}.yaml", entries.len()), &yaml)
}

#[test]
fn manual_mode_removes_what_the_imagelist_names_then_prunes() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        (
            "by-short-tag",
            vulnerable("docker.io/library/busybox:1.36", "by-short-tag"),
        ),
        ("by-id", clean("localhost/test/by-id:1", "by-id")),
        ("by-digest", clean("localhost/test/by-digest:1", "by-digest")),
        (
            "by-repo-digest",
            clean("localhost/test/by-repo-digest:1", "by-repo-digest"),
        ),
        (
            "multi",
            clean("localhost/test/multi:v1", "multi").tag("localhost/test/multi:latest"),
        ),
        ("unlisted", vulnerable("localhost/test/unlisted:1", "unlisted")),
        ("running", runnable_vulnerable("localhost/test/running:1", "running")),
    ]);
    let running = node.id("running");
    block_on(async {
        let pod = node.ctd.run_pod("app").await.unwrap();
        node.ctd
            .create_container(&pod, &running, "running", true)
            .await
            .unwrap();
    });
    let digest_of = |role: &str| node.images[role].manifest_digest();
    let list = imagelist(
        &node,
        &[
            "busybox:1.36".into(),
            node.id("by-id"),
            digest_of("by-digest"),
            format!("localhost/test/by-repo-digest@{}", digest_of("by-repo-digest")),
            "localhost/test/multi:v1".into(),
            "localhost/test/running:1".into(),
        ],
    );
    let run = node.worker(scour()).arg("--imagelist").arg(&list).run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.report()["mode"], "manual");
    assert_eq!(run.summary("trivyRuns"), 0, "manual mode scans nothing");
    for role in ["by-short-tag", "by-id", "by-digest", "by-repo-digest", "multi"] {
        assert_verdict(&run, &node, role, "removed", "imagelist: ");
        assert!(!node.has(role), "{role} is still there");
    }
    assert_verdict(&run, &node, "unlisted", "kept", "not-listed");
    assert_verdict(&run, &node, "running", "kept", "in-use");
    assert_report_matches_node(&run, &node);

    let prune = imagelist(&node, &["*".into()]);
    let run = node.worker(scour()).arg("--imagelist").arg(&prune).run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_verdict(&run, &node, "unlisted", "removed", "prune");
    assert_verdict(&run, &node, "running", "kept", "in-use");
    assert!(node.has("running"));
    // The sandbox image survives a prune: the running pods' sandboxes use it
    // (and the host guards it besides).
    let (action, reason) = run.verdict(&node.sandbox_id());
    assert_eq!((action.as_str(), reason.as_str()), ("kept", "in-use"));
}

#[test]
fn system_excluded_images_survive_a_policy_that_removes_everything() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        (
            "system",
            vulnerable("registry.k8s.io/coredns/coredns:v1.11.1", "system"),
        ),
        ("plain", clean("localhost/test/plain:1", "plain")),
        ("running", runnable_vulnerable("localhost/test/running:1", "running")),
    ]);
    let running = node.id("running");
    block_on(async {
        let pod = node.ctd.run_pod("app").await.unwrap();
        node.ctd
            .create_container(&pod, &running, "running", true)
            .await
            .unwrap();
    });
    let system = node.exclusions("system.json", &["registry.k8s.io/*"]);
    let run = node
        .worker(scour())
        .arg("--policy")
        .arg(hostile("remove_all"))
        .arg("--system-exclusions")
        .arg(&system)
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_verdict(
        &run,
        &node,
        "system",
        "kept",
        "guard: system exclusion registry.k8s.io/*",
    );
    assert_verdict(&run, &node, "running", "kept", "guard: in-use");
    assert_verdict(&run, &node, "plain", "removed", "hostile: remove everything");
    assert!(node.has("system") && node.has("running"));
    let (action, reason) = run.verdict(&node.sandbox_id());
    assert_eq!(
        (action.as_str(), reason.contains("guard: sandbox image")),
        ("kept", true),
        "{reason}"
    );
    assert_eq!(run.report()["policy"]["name"], "hostile-remove-all");
}

#[test]
fn a_container_created_between_decide_and_remove_keeps_its_image() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("target", runnable_vulnerable("localhost/test/target:1", "target")),
        ("other", clean("localhost/test/other:1", "other")),
    ]);
    let target = node.id("target");
    let run = node.while_deciding(scour(), "4000000000", &[], |node| {
        block_on(async {
            let pod = node.ctd.run_pod("late").await.unwrap();
            node.ctd.create_container(&pod, &target, "late", false).await.unwrap();
        });
    });
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_verdict(
        &run,
        &node,
        "target",
        "kept",
        "guard: in-use, found just before removal",
    );
    assert_verdict(&run, &node, "other", "removed", "slow: remove everything");
    assert!(node.has("target"));
}

#[test]
fn an_image_that_gains_a_protected_name_while_the_policy_decides_survives() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("target", clean("localhost/test/target:1", "target")),
        ("other", clean("localhost/test/other:1", "other")),
    ]);
    let system = node.file("system.json", r#"{"excluded": ["localhost/protected/*"]}"#);
    // A pull of a protected name resolves to the same image id: removing the
    // id would take the protected name with it.
    let run = node.while_deciding(
        scour(),
        "3000000000",
        &["--system-exclusions".as_ref(), system.as_os_str()],
        |node| {
            let tagged = node
                .ctd
                .ctr()
                .args([
                    "images",
                    "tag",
                    "localhost/test/target:1",
                    "localhost/protected/target:1",
                ])
                .output()
                .unwrap();
            assert!(tagged.status.success(), "{}", String::from_utf8_lossy(&tagged.stderr));
        },
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_verdict(
        &run,
        &node,
        "target",
        "kept",
        "guard: system exclusion localhost/protected/*, found just before removal",
    );
    assert_verdict(&run, &node, "other", "removed", "slow: remove everything");
    assert!(node.has("target"));
}

#[test]
fn an_image_removed_by_someone_else_meanwhile_is_reported_not_found() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("gone", clean("localhost/test/gone:1", "gone")),
        ("other", clean("localhost/test/other:1", "other")),
    ]);
    // Someone else removes it through CRI while the policy decides.
    let gone = node.id("gone");
    let run = node.while_deciding(scour(), "3000000000", &[], |node| {
        block_on(async {
            let cri = node.ctd.cri_client().await.unwrap();
            cri.remove_image(&gone).await.unwrap();
        });
    });
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let img = run.report()["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == gone)
        .unwrap()
        .clone();
    assert_eq!(img["result"], "not-found", "{img}");
    assert!(img["reason"].as_str().unwrap().ends_with("(already gone)"));
    assert_verdict(&run, &node, "other", "removed", "slow: remove everything");
    // Only what this pass removed counts as freed.
    let other = run.report()["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == node.id("other"))
        .unwrap()
        .clone();
    assert_eq!(run.summary("bytesFreed"), other["sizeBytes"].as_u64().unwrap());
    assert_eq!(
        run.summary("removed"),
        2,
        "gone (already) and other; the sandbox guard keeps pause"
    );
}

#[test]
fn the_snapshot_replays_offline_to_the_same_verdicts() {
    let Some((node, user, system)) = standard_node() else {
        return;
    };
    let snapshot = node.work.path().join("node.json");
    let run = node
        .worker(scour())
        .args(["--dry-run", "--exclusions"])
        .arg(&user)
        .arg("--system-exclusions")
        .arg(&system)
        .arg("--snapshot-out")
        .arg(&snapshot)
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let eval = std::process::Command::new(SCOUR)
        .args(["policy", "eval", "--output", "json", "--input"])
        .arg(&snapshot)
        .arg("--policy-cache-dir")
        .arg(scour_testkit::scenario::policy_cache_dir())
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    for d in eval["decisions"].as_array().unwrap() {
        let (action, reason) = run.verdict(d["id"].as_str().unwrap());
        if reason.starts_with("guard:") {
            continue;
        }
        let expected = if d["action"] == "remove" {
            "would-remove"
        } else {
            "kept"
        };
        assert_eq!(action, expected, "{d}");
        assert_eq!(reason, d["reason"].as_str().unwrap());
    }
}

#[test]
fn an_eraser_config_drives_runtime_and_scanner_settings() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("vulnerable", vulnerable("localhost/test/vulnerable:1", "vulnerable")),
        ("eol", end_of_life("localhost/test/eol:1", "eol")),
    ]);
    let config = node.file(
        "eraser.yaml",
        &format!(
            "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\nmanager:\n  runtime:\n    name: containerd\n    address: {}\ncomponents:\n  scanner:\n    enabled: true\n    config: |\n      cacheDir: {}\n      deleteEOLImages: false\n      vulnerabilities:\n        severities: [CRITICAL]\n      timeout:\n        perImage: 30s\n        total: 10m\n",
            node.ctd.endpoint(),
            node.trivy_cache().display()
        ),
    );
    let mut worker = node.worker(scour());
    // Everything the config gives must come from it: no --runtime-endpoint
    // and no --trivy-cache-dir.
    worker.cmd = std::process::Command::new(SCOUR);
    let run = worker
        .args(["worker", "--trivy-offline", "--config"])
        .arg(&config)
        .arg("--trivy")
        .arg(&node.trivy)
        .arg("--state-dir")
        .arg(node.state_dir())
        .args(["--output", "json", "--termination-log", "/nonexistent"])
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let report: serde_json::Value =
        serde_json::from_slice(&run.output.stdout).expect("--output json prints the report");
    let find = |id: &str| {
        report["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap()
    };
    let v = find(&node.id("vulnerable"));
    assert_eq!(v["action"], "removed");
    assert_eq!(
        v["reason"], "vulnerable: 1 CRITICAL",
        "only CRITICAL counts and EOL is off"
    );
    assert_eq!(find(&node.id("eol"))["action"], "kept");
}

#[test]
fn the_termination_message_summarises_the_pass() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![(
        "vulnerable",
        vulnerable("localhost/test/vulnerable:1", "vulnerable"),
    )]);
    let log = node.file("termination-log", "");
    let run = node.worker(scour()).arg("--termination-log").arg(&log).run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() <= 4096);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["node"], "scenario-node");
    assert_eq!(v["summary"]["removed"], 1);
    assert_eq!(v["removed"][0]["image"], "localhost/test/vulnerable:1");
}

#[test]
fn sigterm_ends_a_daemon_cleanly() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![("clean", clean("localhost/test/clean:1", "clean"))]);
    let (child, report) = node.worker(scour()).args(["--interval", "1h"]).spawn();
    wait_for(&report, Duration::from_secs(60));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_daemon_hot_swaps_its_policy_when_the_file_changes() {
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![("clean", clean("localhost/test/clean:1", "clean"))]);
    let policy = node.work.path().join("policy.wasm");
    std::fs::copy(scour_testkit::guests::default_policy_path(), &policy).unwrap();
    let (child, report) = node
        .worker(scour())
        .arg("--policy")
        .arg(&policy)
        .args(["--policy-watch", "--policy-watch-interval", "100ms", "--interval", "1s"])
        .spawn();
    let read = || -> Option<serde_json::Value> { serde_json::from_slice(&std::fs::read(&report).ok()?).ok() };
    let wait_until = |what: &str, done: &dyn Fn(&serde_json::Value) -> bool| {
        let started = Instant::now();
        loop {
            if read().is_some_and(|r| done(&r)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_until("a pass under the default policy", &|r| {
        r["policy"]["name"] == "scour-default"
    });
    assert!(node.has("clean"));

    // Replace the file the way a ConfigMap update does: a new file renamed in.
    let next = node.work.path().join("policy.wasm.new");
    std::fs::copy(hostile("remove_all"), &next).unwrap();
    std::fs::rename(&next, &policy).unwrap();
    let clean_id = node.id("clean");
    wait_until("a pass under the swapped policy", &|r| {
        r["policy"]["name"] == "hostile-remove-all"
            && r["images"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["id"] == clean_id && i["action"] == "removed")
    });
    assert!(!node.has("clean"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("policy swapped"), "{log}");
}

#[test]
fn under_a_memory_limit_the_worker_runs_fewer_scans_at_once_and_still_completes() {
    let Some(mut node) = TestNode::start() else { return };
    let Some(group) = scour_testkit::cgroup::MemoryCgroup::create(1 << 30) else {
        scour_testkit::gate::skip("cannot make a memory cgroup here");
        return;
    };
    node.import(vec![
        ("clean", clean("localhost/test/clean:1", "clean")),
        ("vulnerable", vulnerable("localhost/test/vulnerable:1", "vulnerable")),
    ]);
    let concurrency = |run: &Run| -> Option<u64> {
        run.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|l| l["scan_concurrency"].as_u64())
    };
    // 1 GiB: 768 MiB after the worker's share, 576 MiB per scan at the
    // default --trivy-memory-limit of 512 MiB: one Trivy at a time.
    let limited = node.worker(&group.wrap(scour(), node.work.path())).run();
    assert_eq!(limited.code(), Some(0), "{}", limited.stderr());
    assert_eq!(concurrency(&limited), Some(1), "{}", limited.stderr());
    assert!(limited.summary("scanned") >= 2, "the pass scanned under the limit");
    assert!(!node.has("vulnerable"));
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let free = node.worker(scour()).run();
    assert_eq!(concurrency(&free), Some(cores), "{}", free.stderr());
}
