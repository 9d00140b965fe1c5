//! Hot swap: in-flight calls finish on the version they started with, a
//! broken candidate never replaces a good policy, and the watcher follows a
//! ConfigMap-style symlink swap by content.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scour::policy::{
    ArtifactCache, Limits, LoadedPolicy, PolicyEngine, PolicyHandle, PolicyWatcher, Poll, WatchTarget, digest_of,
    embedded_default_policy,
};
use scour_policy_sdk::Action;
use scour_testkit::guests::hostile_guest;
use scour_testkit::nodes::small_node;

fn handle_with_default(engine: &PolicyEngine) -> Arc<PolicyHandle> {
    let p = LoadedPolicy::load(engine, embedded_default_policy(), "default", "").unwrap();
    Arc::new(PolicyHandle::new(p))
}

#[test]
fn a_hundred_swaps_under_load_lose_no_decision() {
    let cache = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::new(Limits::production(), Some(ArtifactCache::new(cache.path()))).unwrap();
    let handle = handle_with_default(&engine);
    let default = embedded_default_policy().to_vec();
    let remove_all = hostile_guest("remove_all");
    let broken = [
        hostile_guest("panics"),
        hostile_guest("duplicate_ids"),
        b"garbage".to_vec(),
    ];
    let known = [digest_of(&default), digest_of(&remove_all)];

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (handle, stop, ok, failed, known) =
                (handle.clone(), stop.clone(), ok.clone(), failed.clone(), known.clone());
            std::thread::spawn(move || {
                let node = small_node();
                while !stop.load(Ordering::Relaxed) {
                    let policy = handle.current();
                    match policy.decide(&node.context, &node.images) {
                        Ok(set) if known.contains(&set.policy_digest) && set.decisions.len() == node.images.len() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let mut swaps = 0;
    let mut refused = 0;
    for i in 0..120 {
        let (bytes, digest) = if i % 2 == 0 {
            (&remove_all, &known[1])
        } else {
            (&default, &known[0])
        };
        let swapped = handle
            .reload(bytes, "candidate", "", &[])
            .expect("a good candidate swaps");
        assert_eq!(swapped.digest(), digest);
        assert_eq!(handle.current().digest(), digest);
        swaps += 1;
        if i % 10 == 0 {
            let before = handle.current().digest().to_owned();
            assert!(handle.reload(&broken[(i / 10) % 3], "broken", "", &[]).is_err());
            assert_eq!(handle.current().digest(), before, "a broken policy replaced a good one");
            refused += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let status = handle.status();
    assert_eq!((status.reloads, status.failed_reloads), (swaps, refused));
    assert_eq!(failed.load(Ordering::Relaxed), 0, "decisions failed during swaps");
    assert!(
        ok.load(Ordering::Relaxed) >= 100,
        "too few decisions under load: {}",
        ok.load(Ordering::Relaxed)
    );
}

#[test]
fn an_in_flight_call_finishes_on_the_old_version() {
    let engine = PolicyEngine::new(Limits::production(), None).unwrap();
    let handle = handle_with_default(&engine);
    let old = handle.current();
    handle
        .reload(&hostile_guest("remove_all"), "remove_all", "", &[])
        .unwrap();
    let node = small_node();
    let set = old.decide(&node.context, &node.images).unwrap();
    assert_eq!(set.policy_digest, digest_of(embedded_default_policy()));
    assert_eq!(
        handle
            .current()
            .decide(&node.context, &node.images)
            .unwrap()
            .policy_digest,
        digest_of(&hostile_guest("remove_all"))
    );
}

#[test]
fn golden_cases_gate_a_swap() {
    let cases = golden_case(
        "name: in-use images are kept\ncontext: {now: 1}\nimages: [{id: a, inUse: true}]\nexpect: [{image: a, action: keep}]\n",
    );
    let engine = PolicyEngine::new(Limits::production(), None).unwrap();
    let handle = handle_with_default(&engine);
    let err = handle
        .reload(&hostile_guest("remove_all"), "remove_all", "", &cases)
        .unwrap_err();
    assert_eq!(err.kind(), "case-failed");
    assert!(err.to_string().contains("in-use images are kept"), "{err}");
    assert_eq!(handle.current().digest(), digest_of(embedded_default_policy()));
    handle
        .reload(embedded_default_policy(), "default", "{}", &cases)
        .expect("the default policy passes");
}

#[test]
fn a_case_without_settings_tests_the_defaults_not_the_candidates_settings() {
    // With default settings a MEDIUM finding removes the image.
    let cases = golden_case(
        "name: a MEDIUM finding removes an image
context: {now: 1}
\
         images: [{id: a, scan: {status: scanned, vulns: [{id: CVE-1, pkg: p, installed: '1', severity: MEDIUM}]}}]\n\
         expect: [{image: a, action: remove}]\n",
    );
    let engine = PolicyEngine::new(Limits::production(), None).unwrap();
    let handle = handle_with_default(&engine);
    // The candidate's own settings would keep the image; the case still passes.
    let swapped = handle
        .reload(
            embedded_default_policy(),
            "default",
            r#"{"severities":["CRITICAL"]}"#,
            &cases,
        )
        .expect("the case runs with the policy's defaults");
    assert_eq!(swapped.settings(), r#"{"severities":["CRITICAL"]}"#);
}

/// One golden case, written to a file and loaded as the harness loads it.
fn golden_case(yaml: &str) -> Vec<scour::policy::golden::Case> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.yaml");
    std::fs::write(&path, yaml).unwrap();
    scour::policy::golden::Case::load_all(&[path]).unwrap()
}

/// Lays out a policy like a Kubernetes ConfigMap volume: the visible files
/// are symlinks through `..data`, which is swapped atomically.
fn configmap_version(dir: &Path, version: &str, policy: &[u8], settings: &str) {
    let v = dir.join(version);
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("policy.wasm"), policy).unwrap();
    std::fs::write(v.join("settings.json"), settings).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["policy.wasm", "settings.json"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

#[test]
fn the_watcher_follows_a_configmap_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configmap_version(d, "..v1", embedded_default_policy(), "{}");
    let engine = PolicyEngine::new(Limits::production(), None).unwrap();
    let first = LoadedPolicy::load(&engine, &std::fs::read(d.join("policy.wasm")).unwrap(), "cm", "{}").unwrap();
    let handle = Arc::new(PolicyHandle::new(first));
    let target = WatchTarget {
        policy: d.join("policy.wasm"),
        settings: Some(d.join("settings.json")),
        cases: Vec::new(),
        pin: None,
    };
    let mut watcher = PolicyWatcher::new(handle.clone(), target);
    assert!(matches!(watcher.poll_once(), Poll::Unchanged));

    // New settings alone are a new version.
    configmap_version(d, "..v2", embedded_default_policy(), r#"{"severities":["CRITICAL"]}"#);
    assert!(matches!(watcher.poll_once(), Poll::Swapped { .. }));
    assert_eq!(handle.current().settings(), r#"{"severities":["CRITICAL"]}"#);

    // Settings the policy rejects are refused, once, and the old ones stay.
    configmap_version(d, "..v3", embedded_default_policy(), r#"{"severity":["CRITICAL"]}"#);
    assert!(matches!(watcher.poll_once(), Poll::Refused(e) if e.kind() == "settings-rejected"));
    assert!(
        matches!(watcher.poll_once(), Poll::Unchanged),
        "a refused version is not retried"
    );
    assert_eq!(handle.current().settings(), r#"{"severities":["CRITICAL"]}"#);

    // A new component swaps in.
    let remove_all = hostile_guest("remove_all");
    configmap_version(d, "..v4", &remove_all, "");
    assert!(matches!(watcher.poll_once(), Poll::Swapped { digest } if digest == digest_of(&remove_all)));

    // A half-written file is refused and the last good policy keeps serving.
    configmap_version(d, "..v5", &remove_all[..remove_all.len() / 2], "");
    assert!(matches!(watcher.poll_once(), Poll::Refused(e) if e.kind() == "compile"));
    let node = small_node();
    let set = handle.current().decide(&node.context, &node.images).unwrap();
    assert_eq!(set.policy_digest, digest_of(&remove_all));
    assert!(set.decisions.iter().all(|d| d.action == Action::Remove));
    assert_eq!(handle.status().failed_reloads, 2);
}

#[test]
fn a_spawned_watcher_swaps_within_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configmap_version(d, "..v1", embedded_default_policy(), "");
    let engine = PolicyEngine::new(Limits::production(), None).unwrap();
    let handle = handle_with_default(&engine);
    let target = WatchTarget {
        policy: d.join("policy.wasm"),
        settings: None,
        cases: Vec::new(),
        pin: None,
    };
    let guard = PolicyWatcher::new(handle.clone(), target).spawn(Duration::from_millis(50));
    let remove_all = hostile_guest("remove_all");
    configmap_version(d, "..v2", &remove_all, "");
    let started = Instant::now();
    while handle.current().digest() != digest_of(&remove_all) {
        assert!(started.elapsed() < Duration::from_secs(10), "the watcher did not swap");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(guard);
}

#[test]
fn the_artifact_cache_serves_a_second_load_and_survives_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path().join("cache"));
    let bytes = embedded_default_policy();
    let engine = PolicyEngine::new(Limits::production(), Some(cache.clone())).unwrap();
    let cold = LoadedPolicy::load(&engine, bytes, "default", "").unwrap();
    assert!(!cold.stats().from_cache);
    let artifact = cache.path_for(cold.digest(), engine.compatibility());
    assert!(artifact.is_file());

    let engine2 = PolicyEngine::new(Limits::production(), Some(cache.clone())).unwrap();
    let warm = LoadedPolicy::load(&engine2, bytes, "default", "").unwrap();
    assert!(warm.stats().from_cache);

    // Fuel changes the engine's code, so it has its own artifact.
    let fuel = PolicyEngine::new(Limits::deterministic(1_000_000_000), Some(cache.clone())).unwrap();
    assert_ne!(fuel.compatibility(), engine.compatibility());
    assert!(
        !LoadedPolicy::load(&fuel, bytes, "default", "")
            .unwrap()
            .stats()
            .from_cache
    );

    std::fs::write(&artifact, b"corrupted artifact").unwrap();
    let engine3 = PolicyEngine::new(Limits::production(), Some(cache)).unwrap();
    let again = LoadedPolicy::load(&engine3, bytes, "default", "").unwrap();
    assert!(!again.stats().from_cache, "a corrupt artifact is recompiled");
    let node = small_node();
    assert_eq!(
        again.decide(&node.context, &node.images).unwrap().decisions.len(),
        node.images.len()
    );
}

#[test]
fn the_artifact_cache_evicts_the_least_recently_used_beyond_its_budget() {
    use std::time::SystemTime;
    let [a, b, c] = [
        embedded_default_policy().to_vec(),
        hostile_guest("remove_all"),
        hostile_guest("silent"),
    ];
    // Learn the artifacts' sizes in an unbounded cache first.
    let sizes = tempfile::tempdir().unwrap();
    let probe = ArtifactCache::with_max_bytes(sizes.path(), u64::MAX);
    let engine = PolicyEngine::new(Limits::production(), Some(probe.clone())).unwrap();
    let size = |bytes: &[u8]| {
        let policy = LoadedPolicy::load(&engine, bytes, "probe", "").unwrap();
        std::fs::metadata(probe.path_for(policy.digest(), engine.compatibility()))
            .unwrap()
            .len()
    };
    // Room for a and either of the others, not for all three.
    let budget = size(&a) + size(&b).max(size(&c));

    let dir = tempfile::tempdir().unwrap();
    let hours_ago = |h: u64| SystemTime::now() - Duration::from_secs(h * 3600);
    // Files the cache did not write, in a directory it shares.
    let foreign = dir.path().join("notes.cwasm");
    std::fs::write(&foreign, vec![0u8; budget as usize]).unwrap();
    let stale_temp = dir.path().join(".scour-tmpAbC123");
    std::fs::write(&stale_temp, b"left by a crash").unwrap();
    let set_used = |path: &Path, when: SystemTime| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap()
    };
    set_used(&foreign, hours_ago(10));
    set_used(&stale_temp, hours_ago(2));

    let cache = ArtifactCache::with_max_bytes(dir.path(), budget);
    let engine = PolicyEngine::new(Limits::production(), Some(cache.clone())).unwrap();
    let artifact = |bytes: &[u8]| cache.path_for(&digest_of(bytes), engine.compatibility());
    let load = |bytes: &[u8]| {
        LoadedPolicy::load(&engine, bytes, "policy", "")
            .unwrap()
            .stats()
            .from_cache
    };
    // a is written, then b; a is used again (a hit marks it used now); then
    // c is written and the budget has room for only one of a and b.
    assert!(!load(&a));
    set_used(&artifact(&a), hours_ago(3));
    assert!(!load(&b));
    set_used(&artifact(&b), hours_ago(2));
    assert!(load(&a), "a second load of a is a hit");
    assert!(!load(&c));
    assert!(artifact(&a).is_file(), "recently used: kept");
    assert!(artifact(&c).is_file(), "just written: kept");
    assert!(!artifact(&b).exists(), "least recently used: evicted");
    assert!(foreign.is_file(), "a file the cache did not write is never evicted");
    assert!(
        !stale_temp.exists(),
        "an hour-old temporary file is left over from a crash"
    );
    assert!(!load(&b), "an evicted policy compiles again");

    // A budget smaller than one artifact still keeps the newest.
    let tiny = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::with_max_bytes(tiny.path(), 1);
    let engine = PolicyEngine::new(Limits::production(), Some(cache.clone())).unwrap();
    for bytes in [&a, &b] {
        LoadedPolicy::load(&engine, bytes, "policy", "").unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(tiny.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left, vec![cache.path_for(&digest_of(&b), engine.compatibility())]);
}

#[test]
fn a_pinned_watcher_swaps_only_to_the_pinned_digest() {
    use scour::policy::DigestPin;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configmap_version(d, "..v1", embedded_default_policy(), "");
    let pin_file = d.join("policy.sha256");
    std::fs::write(&pin_file, digest_of(embedded_default_policy())).unwrap();
    let engine = PolicyEngine::new(Limits::production(), None).unwrap();
    let handle = handle_with_default(&engine);
    let target = WatchTarget {
        policy: d.join("policy.wasm"),
        settings: None,
        cases: Vec::new(),
        pin: Some(DigestPin::parse(&format!("@{}", pin_file.display())).unwrap()),
    };
    let mut watcher = PolicyWatcher::new(handle.clone(), target);
    let remove_all = hostile_guest("remove_all");
    // New bytes without a new pin are refused.
    configmap_version(d, "..v2", &remove_all, "");
    assert!(matches!(watcher.poll_once(), Poll::Refused(e) if e.kind() == "pin-mismatch"));
    assert_eq!(handle.current().digest(), digest_of(embedded_default_policy()));
    // The pin catches up: the same bytes now swap in.
    std::fs::write(&pin_file, digest_of(&remove_all)).unwrap();
    assert!(matches!(watcher.poll_once(), Poll::Swapped { digest } if digest == digest_of(&remove_all)));
}
