//! The example policies (Rust, Python, JavaScript) build from source and pass
//! their golden cases, and `scour policy new` scaffolds in every language
//! pass their own case straight away.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scour_testkit::gate::{require_componentize_js, require_componentize_py};
use scour_testkit::guests::{policy_tool, workspace_root};

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");

/// `scour` with the toolchains, a shared Rust target dir and policy cache.
fn scour(args: &[&std::ffi::OsStr], py: &Path, js: &Path) -> Output {
    policy_tool(SCOUR.as_ref(), py, js)
        .args(args)
        .output()
        .expect("running scour")
}

fn toolchains() -> Option<(PathBuf, PathBuf)> {
    Some((require_componentize_py()?, require_componentize_js()?))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Builds `dir` to `out` and runs its golden cases at `log_level`; returns
/// how many passed and what the run logged (the policy's own messages too).
fn build_and_test(dir: &Path, out: &Path, py: &Path, js: &Path, log_level: &str) -> (usize, String) {
    let built = scour(
        &[
            "policy".as_ref(),
            "build".as_ref(),
            dir.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        py,
        js,
    );
    assert!(built.status.success(), "building {}:\n{}", dir.display(), text(&built));
    assert!(text(&built).contains("built "), "{}", text(&built));
    let tested = scour(
        &[
            "--log-level".as_ref(),
            log_level.as_ref(),
            "policy".as_ref(),
            "test".as_ref(),
            "--policy".as_ref(),
            out.as_os_str(),
            dir.join("tests").as_os_str(),
        ],
        py,
        js,
    );
    let output = text(&tested);
    assert!(tested.status.success(), "cases of {}:\n{output}", dir.display());
    let summary = output
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed"))
        .expect("a summary line");
    assert!(summary.ends_with("passed, 0 failed"), "{summary}");
    let passed = summary.split(' ').next().unwrap().parse().unwrap();
    (passed, String::from_utf8_lossy(&tested.stderr).into_owned())
}

/// Builds and tests an example; returns what its case run logged at
/// `log_level`, or nothing when the toolchains are missing (outside CI).
fn example(name: &str, log_level: &str) -> Option<String> {
    let (py, js) = toolchains()?;
    let out_dir = workspace_root().join("target/policy-examples");
    std::fs::create_dir_all(&out_dir).unwrap();
    let dir = workspace_root().join("guest-examples").join(name);
    let (passed, logs) = build_and_test(&dir, &out_dir.join(format!("{name}.wasm")), &py, &js, log_level);
    assert!(passed >= 8, "{name}: only {passed} cases");
    // Invalid settings are among them, rejected with the key's name.
    let cases = std::fs::read_to_string(dir.join("tests/cases.yaml")).unwrap();
    assert!(
        cases.contains("expectError: \"unknown setting `"),
        "{name} lacks an unknown-setting case"
    );
    Some(logs)
}

#[test]
fn the_rust_retention_example_builds_and_passes_its_cases() {
    example("rust-retention", "warn");
}

#[test]
fn the_python_cve_allowlist_example_builds_and_passes_its_cases() {
    if let Some(logs) = example("python-cve-allowlist", "debug") {
        assert!(logs.contains("images to remove, allowlist of"), "{logs}");
    }
}

#[test]
fn the_js_disk_pressure_example_builds_and_passes_its_cases() {
    if let Some(logs) = example("js-disk-pressure", "info") {
        assert!(logs.contains("% used: removing "), "{logs}");
    }
}

#[test]
fn scaffolds_pass_their_own_case_in_every_language() {
    let Some((py, js)) = toolchains() else { return };
    let d = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js"] {
        let dir = d.path().join(format!("my-{lang}-policy"));
        let created = scour(
            &[
                "policy".as_ref(),
                "new".as_ref(),
                "--lang".as_ref(),
                lang.as_ref(),
                format!("my-{lang}-policy").as_ref(),
                "--dir".as_ref(),
                dir.as_os_str(),
            ],
            &py,
            &js,
        );
        assert!(created.status.success(), "{}", text(&created));
        assert!(dir.join("wit/policy.wit").is_file() && dir.join("tests/cases.yaml").is_file());
        assert_eq!(
            build_and_test(&dir, &dir.join("policy.wasm"), &py, &js, "warn").0,
            1,
            "{lang}"
        );
    }
}

#[test]
fn scaffolding_refuses_a_bad_name_and_an_existing_project() {
    let d = tempfile::tempdir().unwrap();
    let no = |args: &[&str]| {
        let o = Command::new(SCOUR).args(args).current_dir(d.path()).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(no(&["policy", "new", "--lang", "rust", "Bad_Name"]).contains("not a usable policy name"));
    std::fs::create_dir(d.path().join("taken")).unwrap();
    std::fs::write(d.path().join("taken/file"), "x").unwrap();
    assert!(no(&["policy", "new", "--lang", "js", "taken"]).contains("already exists"));
    assert!(no(&["policy", "build", "."]).contains("not a policy project"));
}
