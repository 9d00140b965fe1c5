//! `scour worker` when things break: Trivy missing, hanging, crashing or
//! talking nonsense; the DB missing or corrupt; the runtime gone, dying,
//! refusing a removal, or too old; a malformed exclusion list; a policy that
//! traps. Every failure is contained and reported; nothing unsafe happens.

use std::path::Path;
use std::time::{Duration, Instant};

use scour_testkit::fake_cri::{FakeCri, FakeState, container, image};
use scour_testkit::fake_trivy::{Misbehaviour, fake_trivy, fake_trivy_calls};
use scour_testkit::scenario::{Run, TestNode, clean, standard_db, vulnerable};
use scour_testkit::trivy_server::{TrivyServer, canned_server, free_port};

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");

fn scour() -> &'static Path {
    Path::new(SCOUR)
}

/// A node with two unused vulnerable images and a clean one.
fn small_node() -> Option<TestNode> {
    let mut node = TestNode::start()?;
    node.import(vec![
        ("a", vulnerable("localhost/test/a:1", "a")),
        ("b", vulnerable("localhost/test/b:1", "b")),
        ("clean", clean("localhost/test/clean:1", "clean")),
    ]);
    Some(node)
}

/// JSON log lines on stderr whose message is `msg`.
fn log_lines(run: &Run, msg: &str) -> Vec<serde_json::Value> {
    run.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == msg)
        .collect()
}

/// Every selected image failed with `reason`, nothing was removed, the pass
/// completed degraded, and the cause was logged once.
fn assert_scans_failed(run: &Run, node: &TestNode, reason: &str) {
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.status(), "degraded");
    for role in ["a", "b", "clean"] {
        let (action, why) = run.verdict(&node.id(role));
        assert_eq!(action, "kept", "{role}");
        assert!(
            why.starts_with("scan-failed: ") && why.contains(reason),
            "{role}: {why}"
        );
        assert!(node.has(role));
    }
    assert_eq!(run.summary("removed"), 0);
    let lines: Vec<_> = log_lines(run, "scans failed")
        .into_iter()
        .chain(log_lines(run, "no image can be scanned"))
        .collect();
    assert_eq!(lines.len(), 1, "one log line per cause, got {lines:?}");
}

#[test]
fn a_missing_trivy_fails_every_scan_with_one_reason() {
    let Some(node) = small_node() else { return };
    let run = node.worker(scour()).args(["--trivy", "/nonexistent/bin/trivy"]).run();
    assert_scans_failed(&run, &node, "trivy not found at /nonexistent/bin/trivy");
}

#[test]
fn a_hanging_trivy_is_killed_at_the_per_image_timeout() {
    let Some(node) = small_node() else { return };
    let fake = tempfile::tempdir().unwrap();
    let trivy = fake_trivy(fake.path(), Misbehaviour::Hang);
    let started = Instant::now();
    let run = node
        .worker(scour())
        .arg("--trivy")
        .arg(&trivy)
        .args(["--scan-timeout", "1s", "--scan-concurrency", "4"])
        .run();
    assert_scans_failed(&run, &node, "trivy timed out after 1s");
    // Four images (with pause) at once: one timeout plus the kill grace.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_total_scan_deadline_fails_what_it_did_not_reach() {
    let Some(node) = small_node() else { return };
    let fake = tempfile::tempdir().unwrap();
    let trivy = fake_trivy(fake.path(), Misbehaviour::Hang);
    let started = Instant::now();
    let run = node
        .worker(scour())
        .arg("--trivy")
        .arg(&trivy)
        .args([
            "--scan-timeout",
            "1m",
            "--scan-total-timeout",
            "2s",
            "--scan-concurrency",
            "1",
        ])
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let reasons: Vec<String> = ["a", "b", "clean"].iter().map(|r| run.verdict(&node.id(r)).1).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("total deadline passed before this image was scanned")),
        "{reasons:?}"
    );
    assert!(reasons.iter().all(|r| r.starts_with("scan-failed: ")), "{reasons:?}");
    assert_eq!(run.summary("removed"), 0);
}

#[test]
fn a_crashing_trivy_is_a_failed_scan() {
    let Some(node) = small_node() else { return };
    let fake = tempfile::tempdir().unwrap();
    let trivy = fake_trivy(fake.path(), Misbehaviour::Crash);
    let run = node.worker(scour()).arg("--trivy").arg(&trivy).run();
    assert_scans_failed(&run, &node, "trivy was killed by signal 11");
    // Each image tries its digest, then its tag.
    assert!(fake_trivy_calls(fake.path()) >= 3);
}

#[test]
fn garbage_from_trivy_is_a_failed_scan() {
    let Some(node) = small_node() else { return };
    let fake = tempfile::tempdir().unwrap();
    let trivy = fake_trivy(fake.path(), Misbehaviour::Garbage);
    let run = node.worker(scour()).arg("--trivy").arg(&trivy).run();
    assert_scans_failed(&run, &node, "unreadable trivy output");
}

#[test]
fn a_missing_db_offline_fails_every_scan_before_running_trivy() {
    let Some(node) = small_node() else { return };
    let empty = tempfile::tempdir().unwrap();
    let run = node.worker(scour()).arg("--trivy-cache-dir").arg(empty.path()).run();
    assert_scans_failed(&run, &node, "no Trivy vulnerability DB");
    assert_eq!(run.summary("trivyRuns"), 0);
}

#[test]
fn a_corrupt_db_is_a_failed_scan_with_trivys_reason() {
    let Some(node) = small_node() else { return };
    std::fs::write(node.trivy_cache().join("db/trivy.db"), vec![0x5a; 8192]).unwrap();
    let run = node.worker(scour()).run();
    assert_scans_failed(&run, &node, "invalid database");
}

#[test]
fn kept_analyses_outlive_a_corrupt_db() {
    let Some(node) = small_node() else { return };
    // A dry run keeps every image and its analysis.
    let run = node.worker(scour()).arg("--dry-run").run();
    assert_eq!(run.status(), "ok", "{}", run.stderr());
    let kept = std::fs::read_dir(node.state_dir().join("analyses"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert!(kept >= 3, "a, b and clean were analysed: {kept}");

    // A DB update arrives corrupt: matching fails, and the analyses stay.
    standard_db()
        .updated_at("2024-02-01T00:00:00Z")
        .write(&node.trivy_cache())
        .unwrap();
    std::fs::write(node.trivy_cache().join("db/trivy.db"), vec![0x5a; 8192]).unwrap();
    let run = node.worker(scour()).run();
    assert_scans_failed(&run, &node, "invalid database");

    // Once the DB is mended, the next pass reads no image.
    standard_db()
        .updated_at("2024-03-01T00:00:00Z")
        .write(&node.trivy_cache())
        .unwrap();
    let (trivy, image_reads) = node.counting_trivy();
    let run = node.worker(scour()).arg("--trivy").arg(&trivy).run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.status(), "ok", "{}", run.stderr());
    assert_eq!(image_reads(), 0, "an image was read again");
    assert_eq!(run.summary("analysesReused"), kept as u64);
    assert!(!node.has("a") && !node.has("b") && node.has("clean"));
}

#[test]
fn a_trivy_server_that_is_down_keeps_every_image_and_degrades_the_pass() {
    let Some(node) = small_node() else { return };
    let down = free_port();
    let run = node
        .worker(scour())
        .arg("--trivy-server")
        .arg(format!("http://{down}"))
        .run();
    assert_scans_failed(
        &run,
        &node,
        &format!("the trivy server at http://{down} cannot be reached"),
    );
}

#[test]
fn a_trivy_server_answering_garbage_keeps_every_image_and_degrades_the_pass() {
    let Some(node) = small_node() else { return };
    let garbage = canned_server(b"HTTP/1.0 200 OK\r\n\r\n<html>a proxy's login page</html>");
    let run = node
        .worker(scour())
        .arg("--trivy-server")
        .arg(format!("http://{garbage}"))
        .run();
    assert_scans_failed(&run, &node, "answered /version with");
}

#[test]
fn a_trivy_server_that_stops_mid_pass_fails_the_scans_it_had_not_done() {
    let Some(node) = small_node() else { return };
    let cache = tempfile::tempdir().unwrap();
    standard_db().write(cache.path()).unwrap();
    let mut server = TrivyServer::start(&node.trivy, cache.path());
    // A Trivy that stops the server as soon as the first scan starts.
    let wrapper = tempfile::tempdir().unwrap();
    let trivy = wrapper.path().join("trivy");
    let pid_file = cache.path().join("pid");
    std::fs::write(&pid_file, server.pid().to_string()).unwrap();
    std::fs::write(
        &trivy,
        format!(
            "#!/bin/sh\nif [ \"$1\" != version ]; then kill $(cat '{}') 2>/dev/null; sleep 0.5; fi\nexec '{}' \"$@\"\n",
            pid_file.display(),
            node.trivy.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&trivy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = node
        .worker(scour())
        .arg("--trivy")
        .arg(&trivy)
        .arg("--trivy-server")
        .arg(server.url())
        .run();
    server.stop();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.status(), "degraded");
    assert_eq!(run.summary("removed"), 0);
    for role in ["a", "b", "clean"] {
        let (action, why) = run.verdict(&node.id(role));
        assert_eq!(action, "kept", "{role}");
        assert!(why.starts_with("scan-failed: "), "{role}: {why}");
        assert!(node.has(role));
    }
}

#[test]
fn a_missing_runtime_socket_fails_the_pass_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = std::process::Command::new(SCOUR)
        .args([
            "worker",
            "--runtime-endpoint",
            "unix:///nonexistent/containerd.sock",
            "--report",
        ])
        .arg(&report)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--termination-log", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["status"], "failed");
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .contains("runtime socket /nonexistent/containerd.sock does not exist"),
        "{r}"
    );
    // The policy was compiled before the runtime was tried, and the artifact
    // went to the node's state dir (a pod's root filesystem is read-only).
    let cached = std::fs::read_dir(dir.path().join("policy-cache")).map(|d| d.count());
    assert!(matches!(cached, Ok(n) if n > 0), "{cached:?}");
}

#[test]
fn containerd_killed_mid_pass_fails_cleanly_with_accurate_counts() {
    let Some(mut node) = small_node() else { return };
    let run = node.while_deciding(
        scour(),
        "3000000000",
        &["--cri-timeout".as_ref(), "3s".as_ref()],
        |node| node.ctd.kill_containerd(),
    );
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    let r = run.report();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["summary"]["removed"], 0);
    // a, b and clean were targets; the pause image never was (the sandbox
    // guard kept it at decide time). Those started before the first failure
    // failed, the rest were not attempted.
    let failed = r["summary"]["failed"].as_u64().unwrap();
    let skipped = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["result"] == "skipped")
        .count();
    assert!(failed >= 1, "{r}");
    assert_eq!(failed as usize + skipped, 3, "{r}");
    assert_eq!(r["summary"]["kept"].as_u64().unwrap() as usize, 1 + skipped, "{r}");
    assert!(r["errors"].to_string().contains("stopped answering"), "{}", r["errors"]);
}

#[test]
fn once_the_runtime_stops_answering_the_remaining_removals_are_not_attempted() {
    let Some(mut node) = small_node() else { return };
    let mut killed = None;
    let args = ["--cri-timeout", "3s", "--remove-concurrency", "1"].map(std::ffi::OsStr::new);
    let run = node.while_deciding(scour(), "3000000000", &args, |node| {
        node.ctd.kill_containerd();
        killed = Some(Instant::now());
    });
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    // One removal waits out the CRI timeout; the others do not wait at all.
    let killed = killed.expect("killed while the policy decided");
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "took {:?}",
        killed.elapsed()
    );
    let r = run.report();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["summary"]["removed"], 0);
    assert_eq!(r["summary"]["failed"], 1, "{r}");
    let skipped: Vec<_> = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["result"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 2, "{r}");
    for image in skipped {
        assert_eq!(image["action"], "kept");
        assert!(
            image["reason"]
                .as_str()
                .unwrap()
                .contains("the container runtime stopped answering"),
            "{image}"
        );
    }
    assert!(
        r["errors"]
            .to_string()
            .contains("1 removals failed and 2 were not attempted"),
        "{}",
        r["errors"]
    );
}

/// A worker pass with scanning off against the fake runtime; it must exit 0.
fn scan_free_pass(fake: &FakeCri) -> Run {
    scan_free_pass_with(fake, &[])
}

/// [`scan_free_pass`] with `args` added.
fn scan_free_pass_with(fake: &FakeCri, args: &[&std::ffi::OsStr]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    std::fs::write(&settings, r#"{"scanDisabled": true}"#).unwrap();
    let report = dir.path().join("report.json");
    let out = std::process::Command::new(SCOUR)
        .args(["worker", "--runtime-endpoint", &fake.endpoint(), "--settings"])
        .arg(&settings)
        .arg("--report")
        .arg(&report)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--termination-log", "/nonexistent"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    Run {
        report: Some(serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()),
        output: out,
    }
}

#[test]
fn an_old_pause_image_that_running_pods_still_use_is_kept_in_use() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The runtime's sandbox image moved on to pause:3.10; pods started
    // before still run on pause:3.6, which nothing else protects.
    let fake = runtime.block_on(FakeCri::start(FakeState {
        images: vec![
            image("sha256:a36", &["registry.k8s.io/pause:3.6"], 300),
            image("sha256:a310", &["registry.k8s.io/pause:3.10"], 300),
            image("sha256:bbb", &["docker.io/library/unused:1"], 200),
        ],
        sandbox_image: Some("registry.k8s.io/pause:3.10".into()),
        sandboxes: vec![("pod-1".into(), "registry.k8s.io/pause:3.6".into())],
        ..Default::default()
    }));
    let run = scan_free_pass(&fake);
    let removed = fake.state.lock().unwrap().removed.clone();
    assert_eq!(removed, ["sha256:bbb"], "only the unused image goes");
    assert_eq!(run.verdict("sha256:a36"), ("kept".to_owned(), "in-use".to_owned()));
    assert_eq!(run.verdict("sha256:a310").0, "kept");
}

#[test]
fn a_refused_removal_is_a_per_image_failure() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeCri::start(FakeState {
        images: vec![
            image("sha256:aaa", &["docker.io/library/stuck:1"], 100),
            image("sha256:bbb", &["docker.io/library/fine:1"], 200),
            image("sha256:ccc", &["docker.io/library/used:1"], 300),
        ],
        containers: vec![container(
            "c1",
            "sha256:ccc",
            k8s_cri::v1::ContainerState::ContainerExited,
        )],
        fail_remove: [("sha256:aaa".to_owned(), "image is locked by a snapshot".to_owned())].into(),
        ..Default::default()
    }));
    let run = scan_free_pass(&fake);
    assert_eq!(run.status(), "degraded");
    let (action, reason) = run.verdict("sha256:aaa");
    assert_eq!(action, "failed");
    assert!(reason.contains("image is locked by a snapshot"));
    assert_eq!(run.verdict("sha256:bbb").0, "removed");
    assert_eq!(
        run.verdict("sha256:ccc").0,
        "kept",
        "an exited container still uses its image"
    );
    assert_eq!(run.summary("failed"), 1);
    assert_eq!(run.summary("bytesFreed"), 200);
    assert_eq!(
        fake.image_ids(),
        ["sha256:aaa".to_owned(), "sha256:ccc".to_owned()].into()
    );
    // Containers were listed again before each removal attempt.
    assert!(fake.state.lock().unwrap().list_containers_calls >= 3);
}

#[test]
fn a_v1alpha2_only_runtime_is_named_as_such() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeCri::start_v1alpha2_only());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = std::process::Command::new(SCOUR)
        .args(["worker", "--runtime-endpoint", &fake.endpoint(), "--report"])
        .arg(&report)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--termination-log", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        r["errors"][0].as_str().unwrap().contains("speaks only CRI v1alpha2"),
        "{r}"
    );
}

#[test]
fn the_image_filesystem_is_measured_where_image_fs_says_and_a_missing_one_is_named() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Like a runtime seen from a pod: usage, and no mountpoint this process
    // can see.
    let fake = runtime.block_on(FakeCri::start(FakeState {
        images: vec![
            image("sha256:aaa", &["docker.io/library/a:1"], 300),
            image("sha256:bbb", &["docker.io/library/b:1"], 400),
        ],
        ..Default::default()
    }));
    let mount = tempfile::tempdir().unwrap();
    let snapshot = mount.path().join("snapshot.json");
    let fs = nix::sys::statvfs::statvfs(mount.path()).unwrap();
    let capacity = fs.blocks() * fs.fragment_size();
    let dry = std::ffi::OsStr::new("--dry-run");

    let measured = scan_free_pass_with(
        &fake,
        &[
            dry,
            "--image-fs".as_ref(),
            mount.path().as_os_str(),
            "--snapshot-out".as_ref(),
            snapshot.as_os_str(),
        ],
    );
    let expected = serde_json::json!({"usedBytes": 700, "capacityBytes": capacity});
    assert_eq!(measured.report()["imageFs"], expected);
    let seen: serde_json::Value = serde_json::from_slice(&std::fs::read(&snapshot).unwrap()).unwrap();
    assert_eq!(seen["context"]["imageFs"], expected, "the policy sees it");
    let collected = log_lines(&measured, "collected");
    assert_eq!(
        collected[0]["image_fs_measured_at"],
        mount.path().display().to_string(),
        "{collected:?}"
    );

    let unmeasured = scan_free_pass_with(&fake, &[dry]);
    assert_eq!(
        unmeasured.report()["imageFs"],
        serde_json::json!({"usedBytes": 700}),
        "no capacity where the runtime's mountpoint cannot be seen"
    );

    let missing = scan_free_pass_with(&fake, &[dry, "--image-fs=/nonexistent/image-fs".as_ref()]);
    assert_eq!(missing.report()["imageFs"], serde_json::json!({"usedBytes": 700}));
    let warned = missing.stderr();
    assert!(
        warned.contains("cannot measure the image filesystem at /nonexistent/image-fs"),
        "{warned}"
    );
    assert_eq!(fake.image_ids().len(), 2, "dry runs");
}

#[test]
fn a_malformed_exclusion_list_fails_the_pass_closed() {
    let Some(node) = small_node() else { return };
    let bad = node.file("broken.json", r#"{"excluded": ["ok:1", "alp*ne"]}"#);
    let good = node.exclusions("good.json", &["localhost/test/clean:1"]);
    let before = node.image_ids();
    let run = node
        .worker(scour())
        .arg("--exclusions")
        .arg(&good)
        .arg("--exclusions")
        .arg(&bad)
        .run();
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    assert_eq!(run.status(), "failed");
    assert!(
        run.report()["errors"][0]
            .as_str()
            .unwrap()
            .contains(&bad.display().to_string())
    );
    assert_eq!(node.image_ids(), before, "nothing may be removed");
}

#[test]
fn a_trapping_policy_removes_nothing_and_says_why() {
    let Some(node) = small_node() else { return };
    scour_testkit::guests::hostile_guest("panics");
    let before = node.image_ids();
    let run = node
        .worker(scour())
        .arg("--policy")
        .arg(scour_testkit::guests::hostile_guest_path("panics"))
        .run();
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    assert_eq!(run.status(), "failed");
    assert!(
        run.report()["errors"][0].as_str().unwrap().contains("trapped"),
        "{}",
        run.report()["errors"]
    );
    assert_eq!(node.image_ids(), before);
    assert_eq!(run.summary("removed"), 0);
}

#[test]
fn usage_and_config_errors_exit_2() {
    for args in [
        vec!["worker"],
        vec!["worker", "--runtime-endpoint", "tcp://10.0.0.1:1234"],
        vec![
            "worker",
            "--runtime-endpoint",
            "unix:///x.sock",
            "--config",
            "/nonexistent/config.yaml",
        ],
        vec![
            "worker",
            "--runtime-endpoint",
            "unix:///x.sock",
            "--imagelist",
            "/nonexistent/list.yaml",
        ],
        vec![
            "worker",
            "--runtime-endpoint",
            "unix:///x.sock",
            "--once",
            "--interval",
            "1h",
        ],
        vec![
            "worker",
            "--runtime-endpoint",
            "unix:///x.sock",
            "--scan-timeout",
            "soon",
        ],
    ] {
        let out = std::process::Command::new(SCOUR).args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn a_container_created_while_its_image_was_removed_is_reported_and_degrades_the_pass() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeCri::start(FakeState {
        images: vec![
            image("sha256:aaa", &["docker.io/library/raced:1"], 100),
            image("sha256:bbb", &["docker.io/library/unused:1"], 200),
        ],
        // Created in the gap between the worker's last check and RemoveImage.
        created_during_removal: vec![container(
            "late",
            "sha256:aaa",
            k8s_cri::v1::ContainerState::ContainerCreated,
        )],
        ..Default::default()
    }));
    let run = scan_free_pass(&fake);
    assert_eq!(run.status(), "degraded", "{}", run.stderr());
    let (action, reason) = run.verdict("sha256:aaa");
    assert_eq!(action, "removed");
    assert!(
        reason.contains("a container was created on it during removal"),
        "{reason}"
    );
    let (action, reason) = run.verdict("sha256:bbb");
    assert_eq!((action.as_str(), reason.contains("during removal")), ("removed", false));
}
