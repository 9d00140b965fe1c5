//! `scour policy check | eval | test`, run as an operator would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scour_testkit::guests::{hostile_guest, hostile_guest_path, workspace_root};

fn scour(args: &[&str]) -> Output {
    let cache = workspace_root().join("target/test-policy-cache");
    Command::new(env!("CARGO_BIN_EXE_scour"))
        .args(args)
        .current_dir(workspace_root())
        .env("SCOUR_POLICY_CACHE_DIR", cache)
        .env("SCOUR_LOG", "warn")
        .output()
        .expect("running scour")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn data(rel: &str) -> String {
    workspace_root().join("tests/data").join(rel).display().to_string()
}

fn hostile(name: &str) -> String {
    hostile_guest(name);
    hostile_guest_path(name).display().to_string()
}

#[test]
fn check_describes_the_embedded_default_policy() {
    let o = scour(&["policy", "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "embedded:scour-default",
        "scour-default 0.1.0",
        "sha256:",
        "scour:policy/policy@0.1.0",
        "info, validate-settings, select, decide",
        "ok (policy defaults)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn check_reports_a_policy_file_as_json() {
    let path = hostile("remove_all");
    let o = scour(&["policy", "check", "--policy", &path, "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["name"], "hostile-remove-all");
    assert_eq!(v["origin"], path);
    assert_eq!(v["world"], "scour:policy/policy@0.1.0");
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(v["sizeBytes"].as_u64().unwrap() > 1000);
}

#[test]
fn check_fails_with_the_reason() {
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--settings".into(), data("settings/typo.json")],
            "unknown setting `severites`",
        ),
        (vec!["--policy".into(), hostile("bad_settings")], "`anything`"),
        (
            vec!["--policy".into(), data("settings/typo.json")],
            "not a loadable WebAssembly component",
        ),
        (
            vec!["--policy".into(), "/nonexistent/policy.wasm".into()],
            "reading policy /nonexistent/policy.wasm",
        ),
        (
            vec!["--settings".into(), "/nonexistent/settings.json".into()],
            "reading settings",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["policy", "check"];
        args.extend(extra.iter().map(String::as_str));
        let o = scour(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn eval_prints_each_images_verdict() {
    let o = scour(&["policy", "eval", "--input", &data("snapshots/node-a.yaml")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let row = |image: &str| {
        out.lines()
            .find(|l| l.starts_with(image))
            .unwrap_or_else(|| panic!("no row for {image} in\n{out}"))
            .to_owned()
    };
    assert!(
        row("docker.io/library/alpine:3.12").contains("remove  vulnerable: 1 HIGH, 1 CRITICAL; eol: alpine 3.12.0")
    );
    assert!(row("docker.io/library/alpine:3.20").contains("keep    clean"));
    assert!(row("myregistry.azurecr.io/team/api:2.4.1").contains("keep    in-use"));
    assert!(row("docker.io/library/redis:7.2").contains("excluded: docker.io/library/redis:*"));
    assert!(row("registry.k8s.io/pause:3.9").contains("keep    pinned"));
    assert!(
        out.contains("6 images: 1 to remove, 5 to keep; 3 selected for scanning"),
        "{out}"
    );
}

#[test]
fn what_a_policy_logs_reaches_stderr_bounded_and_changes_no_verdict() {
    let path = hostile("chatty");
    let input = data("snapshots/node-a.yaml");
    let run = |level: &str| {
        let o = scour(&[
            "--log-level",
            level,
            "--log-format",
            "text",
            "policy",
            "eval",
            "--policy",
            &path,
            "--input",
            &input,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("6 images: 0 to remove, 6 to keep"),
            "{}",
            stdout(&o)
        );
        stderr(&o)
    };
    let err = run("info");
    assert!(err.contains("looking at 6 images"), "{err}");
    assert!(err.contains("hostile-chatty"), "tagged with the policy's name: {err}");
    assert!(
        err.contains(&format!("{}…", "x".repeat(1024))),
        "long messages are cut: {err}"
    );
    assert!(!err.contains(&"x".repeat(1025)), "{err}");
    assert!(
        err.contains("one line\\nINFO a forged line"),
        "a newline stays an escape on one line: {err}"
    );
    assert!(!err.lines().any(|l| l.starts_with("INFO a forged line")), "{err}");
    assert!(!err.contains("detail 0"), "debug messages need --log-level debug");
    assert!(
        err.contains("dropped=403"),
        "only 100 messages per call are kept: {err}"
    );

    let err = run("debug");
    assert!(err.contains("detail 96"), "{err}");
    assert!(
        !err.contains("detail 97"),
        "the 101st message of a call is dropped: {err}"
    );
}

#[test]
fn eval_json_uses_the_settings_file() {
    let o = scour(&[
        "policy",
        "eval",
        "--input",
        &data("snapshots/node-a.yaml"),
        "--settings",
        &data("settings/critical-only.json"),
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let decisions = v["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 6);
    let alpine = decisions
        .iter()
        .find(|d| d["image"] == "docker.io/library/alpine:3.12")
        .unwrap();
    assert_eq!(alpine["action"], "remove");
    assert_eq!(
        alpine["reason"], "vulnerable: 1 CRITICAL",
        "EOL is off and HIGH does not count"
    );
    assert_eq!(v["policy"]["name"], "scour-default");
    assert_eq!(v["node"], "aks-nodepool1-12345678-vmss000000");
}

#[test]
fn eval_fails_closed_on_a_hostile_policy() {
    let o = scour(&[
        "policy",
        "eval",
        "--policy",
        &hostile("infinite_loop"),
        "--policy-timeout",
        "300ms",
        "--input",
        &data("snapshots/node-a.yaml"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ran past its deadline of 300ms"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "no verdicts are printed: {}", stdout(&o));
}

#[test]
fn eval_rejects_a_malformed_snapshot_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "context: {now: 1}\nimages: [{id: a, inuse: true}]\n").unwrap();
    let o = scour(&["policy", "eval", "--input", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.yaml") && err.contains("inuse"), "{err}");
}

#[test]
fn the_default_policys_golden_cases_pass() {
    let o = scour(&["policy", "test", "policies/default/tests"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let summary = out.lines().last().unwrap();
    let passed: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 30, "{summary}");
    assert!(summary.ends_with("passed, 0 failed"), "{summary}");
    assert!(!out.contains("FAILED"));
}

fn write_cases(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("cases.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_failing_case_shows_expected_against_actual() {
    let dir = tempfile::tempdir().unwrap();
    let cases = write_cases(
        dir.path(),
        r#"
- name: passes
  context: {now: 1}
  images: [{id: a, inUse: true}]
  expect: [{image: a, action: keep, reason: in-use}]
- name: wrong on purpose
  context: {now: 1}
  images: [{id: b, scan: {status: scanned, vulns: [{id: CVE-1, pkg: p, installed: "1", severity: HIGH}]}}]
  expect: [{image: b, action: keep, reason: clean}]
"#,
    );
    let o = scour(&["policy", "test", cases.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("ok      passes"), "{out}");
    assert!(out.contains("FAILED  wrong on purpose"), "{out}");
    assert!(
        out.contains(r#"b: expected keep (reason ~ "clean"), got remove ("vulnerable: 1 HIGH")"#),
        "{out}"
    );
    assert!(out.trim_end().ends_with("1 passed, 1 failed"), "{out}");
}

#[test]
fn a_case_whose_policy_loops_fails_with_that_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = write_cases(
        dir.path(),
        "name: loops\ncontext: {now: 1}\nimages: [{id: a}]\nexpect: [{image: a, action: keep}]\n",
    );
    let o = scour(&[
        "policy",
        "test",
        "--policy",
        &hostile("infinite_loop"),
        "--fuel",
        "10000000",
        cases.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("FAILED  loops"), "{out}");
    assert!(out.contains("policy decide ran out of fuel (10000000 units)"), "{out}");
}

#[test]
fn malformed_case_files_are_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("name: x\ncontext: {now: 1}\nimages: [{id: a}]\n", "expects nothing"),
        (
            "name: x\ncontext: {now: 1}\nimages: [{id: a}]\nexpect: [{image: zzz, action: keep}]\n",
            "\"zzz\"",
        ),
        (
            "name: x\ncontext: {now: 1}\nimages: [{id: a}]\nexpect: [{image: a, action: delete}]\n",
            "delete",
        ),
        ("context: {now: 1}\nimages: []\nexpectError: x\n", "`name` is missing"),
    ] {
        let cases = write_cases(dir.path(), text);
        let o = scour(&["policy", "test", cases.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{text}");
        assert!(
            stderr(&o).contains(needle) && stderr(&o).contains("cases.yaml"),
            "{needle}: {}",
            stderr(&o)
        );
    }
    let o = scour(&["policy", "test", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    let o = scour(&["policy", "eval"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--input"));
    let o = scour(&["policy", "check", "--policy-timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn configmap_carries_the_policy_bytes_and_their_pin() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let path = hostile("remove_all");
    let o = scour(&["policy", "configmap", "--name", "cleanup-policy", "--policy", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let bytes = std::fs::read(&path).unwrap();
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
    assert!(
        out.contains(&format!("sha256: \"{digest}\"")),
        "the comment shows the pin:\n{out}"
    );
    let cm: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "cleanup-policy");
    assert_eq!(cm["metadata"]["namespace"], "kube-system");
    assert_eq!(cm["data"]["policy.sha256"].as_str(), Some(digest.as_str()));
    let shipped = base64::engine::general_purpose::STANDARD
        .decode(cm["binaryData"]["policy.wasm"].as_str().unwrap())
        .unwrap();
    assert_eq!(shipped, bytes);
}

#[test]
fn config_check_names_the_field_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("controller_manager_config.yaml");
    let base = "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\nmanager:\n  scheduling:\n    repeatInterval: 24h\n";
    std::fs::write(&file, format!("{base}scour:\n  rollout:\n    maxConcurrency: 25%\n")).unwrap();
    let o = scour(&["config", "check", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("every 24h"), "{}", stdout(&o));
    assert!(stdout(&o).contains("25% of the selected nodes"), "{}", stdout(&o));

    for (extra, needle) in [
        (
            "scour:\n  rollout:\n    maxConcurrency: 0\n",
            "scour.rollout.maxConcurrency",
        ),
        ("scour:\n  policy:\n    configMap: p\n", "scour.policy.sha256"),
        ("scour:\n  polcy: {}\n", "scour.polcy"),
        (
            "  imageJob:\n    cleanup:\n      delayOnFailure: 99999999999999999999h\n",
            "manager.imageJob.cleanup.delayOnFailure",
        ),
    ] {
        std::fs::write(&file, format!("{base}{extra}")).unwrap();
        let o = scour(&["config", "check", file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{extra}");
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
}

#[test]
fn an_absurd_duration_is_a_usage_error_naming_the_field_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("controller_manager_config.yaml");
    std::fs::write(
        &file,
        "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\nmanager:\n  scheduling:\n    repeatInterval: 99999999999999999999h\n",
    )
    .unwrap();
    let o = scour(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("manager.scheduling.repeatInterval"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("too long"), "{}", stderr(&o));
}

#[test]
fn config_check_runs_the_settings_past_the_policy_and_its_pin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("controller_manager_config.yaml");
    let check = |text: &str, policy: Option<&str>| {
        std::fs::write(
            &file,
            format!("apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\n{text}"),
        )
        .unwrap();
        let mut args = vec!["config", "check", file.to_str().unwrap()];
        args.extend(policy.iter().flat_map(|p| ["--policy", *p]));
        scour(&args)
    };

    // Eraser's scanner settings go to the built-in default policy, which rejects a bad severity.
    let o = check(
        "components:\n  scanner:\n    config: |\n      vulnerabilities:\n        severities: [HIGH, SEVERE]\n",
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("SEVERE"), "{}", stderr(&o));

    // A custom policy: its digest must match the pin, and it must accept the settings.
    let path = hostile("remove_all");
    let digest = format!(
        "sha256:{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&path).unwrap())
    );
    let pinned = |pin: &str| format!("scour:\n  policy:\n    configMap: p\n    sha256: \"{pin}\"\n");
    let o = check(&pinned(&digest), Some(&path));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("accepts these settings"), "{}", stdout(&o));
    let o = check(&pinned(&format!("sha256:{}", "0".repeat(64))), Some(&path));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&digest),
        "the error shows the actual digest: {}",
        stderr(&o)
    );

    // Without the bytes, only the file is checked, and the output says so.
    let o = check(&pinned(&digest), None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("pass --policy"), "{}", stderr(&o));
}

#[test]
fn eval_records_its_verdicts_as_a_case_that_then_passes() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("node-a-case.yaml");
    let case_arg = case.to_str().unwrap();
    let settings = data("settings/critical-only.json");
    let snapshot = data("snapshots/node-a.yaml");
    let o = scour(&[
        "policy",
        "eval",
        "--input",
        &snapshot,
        "--settings",
        &settings,
        "--record-case",
        case_arg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&case).unwrap();
    assert!(text.contains("name: node aks-nodepool1-12345678-vmss000000, recorded from node-a.yaml"));
    assert!(text.contains("reason: 'vulnerable: 1 CRITICAL'"), "{text}");
    assert!(
        text.contains("- CRITICAL"),
        "the settings are part of the case:\n{text}"
    );

    let o = scour(&["policy", "test", case_arg]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("1 passed, 0 failed"));

    // The frozen verdicts catch a change: other settings remove more.
    let loose = text.replace("- CRITICAL", "- HIGH\n    - CRITICAL");
    std::fs::write(&case, loose).unwrap();
    let o = scour(&["policy", "test", case_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));

    // An existing file is never overwritten.
    let o = scour(&["policy", "eval", "--input", &snapshot, "--record-case", case_arg]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
}
