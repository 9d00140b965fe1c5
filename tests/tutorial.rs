//! docs/writing-policies.md, run as a reader would: every `sh` block in
//! order, in one scratch directory, against a private containerd with real
//! Trivy; every `LANG file=PATH` block written to PATH first; every
//! `text output` block checked against what the block before it printed.
//! Section 9's registry is a real one on loopback (`$REGISTRY`).
//! `sh cluster` blocks need Kubernetes and are not run. Any other kind of
//! block fails the test, so nothing in the tutorial escapes it.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scour_testkit::containerd::block_on;
use scour_testkit::gate::{on_path, require_componentize_js, require_componentize_py, skip};
use scour_testkit::guests::workspace_root;
use scour_testkit::scenario::{TestNode, clean, end_of_life, policy_cache_dir, runnable_vulnerable, vulnerable};

const DOC: &str = "docs/writing-policies.md";
const DAY: u64 = 86_400;

#[derive(Debug)]
struct Block {
    /// The fence's info string, e.g. `sh`, `rust file=src/lib.rs`.
    info: String,
    body: String,
    /// 1-based line of the opening fence.
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    body: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(b), _) => {
                b.body.push_str(line);
                b.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{DOC}: a code block is never closed");
    out
}

/// What a block asks of the test.
enum Step<'a> {
    Run,
    Cluster,
    Write(&'a str),
    Expect,
    Illustration,
}

fn step(block: &Block) -> Step<'_> {
    let words: Vec<&str> = block.info.split_whitespace().collect();
    match words.as_slice() {
        ["sh"] => Step::Run,
        ["sh", "cluster"] => Step::Cluster,
        ["text", "output"] => Step::Expect,
        // A Dockerfile cannot be built here; it holds no command to run.
        ["dockerfile"] => Step::Illustration,
        [_, file] if file.starts_with("file=") => Step::Write(&file["file=".len()..]),
        _ => panic!(
            "{DOC}:{}: a block marked {:?} would not be exercised; use sh, sh cluster, LANG file=PATH or text output",
            block.line, block.info
        ),
    }
}

/// Whether `output` has a line holding each `…`-separated part of `want`
/// in order, with runs of spaces collapsed on both sides.
fn printed(output: &str, want: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let parts: Vec<String> = want.split('…').map(squash).collect();
    output.lines().map(squash).any(|line| {
        let mut rest = line.as_str();
        parts.iter().all(|part| match rest.find(part.as_str()) {
            Some(at) => {
                rest = &rest[at + part.len()..];
                true
            }
            None => false,
        })
    })
}

/// Kills whatever a block left running in its process group, by PID, when
/// the test ends however it ends (the tutorial stops its own daemon).
struct Leftovers(Vec<u32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &group in &self.0 {
            for pid in members_of_group(group) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Live processes whose process group is `group` (a group id stays taken
/// while any member lives, so these are ours).
fn members_of_group(group: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // Fields after the parenthesised command: state, ppid, pgrp.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
                    == Some(group)
            })
        })
        .collect()
}

/// The node the tutorial captures: CI images old and new, a vulnerable one,
/// an excluded one, one in use, an end-of-life one; first-seen times as if
/// scour had watched the node for weeks.
fn tutorial_node() -> Option<TestNode> {
    let mut node = TestNode::start()?;
    node.import(vec![
        ("old-build", clean("registry.example.com/ci/app:build-101", "old-build")),
        (
            "new-build",
            vulnerable("registry.example.com/ci/app:build-245", "new-build"),
        ),
        ("nginx", clean("docker.io/library/nginx:1.27-alpine", "nginx")),
        ("api", runnable_vulnerable("registry.example.com/shop/api:2.4.1", "api")),
        ("alpine", end_of_life("docker.io/library/alpine:3.5", "alpine")),
    ]);
    block_on(async {
        let pod = node.ctd.run_pod("shop").await?;
        node.ctd
            .create_container(&pod, "registry.example.com/shop/api:2.4.1", "api", true)
            .await
    })
    .expect("a container on the api image");
    // Half a day of slack keeps "N days ago" stable across midnight.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let seen = |days: u64| now - days * DAY - DAY / 2;
    let images: BTreeMap<String, u64> = [
        ("old-build", seen(45)),
        ("new-build", seen(2)),
        ("nginx", seen(3)),
        ("api", seen(20)),
        ("alpine", seen(10)),
    ]
    .into_iter()
    .map(|(role, t)| (node.id(role), t))
    .collect();
    std::fs::create_dir_all(node.state_dir()).unwrap();
    std::fs::write(
        node.state_dir().join("first-seen.json"),
        serde_json::json!({"version": 1, "images": images}).to_string(),
    )
    .unwrap();
    Some(node)
}

#[test]
fn the_policy_tutorial_runs_as_written() {
    let markdown = std::fs::read_to_string(workspace_root().join(DOC)).unwrap();
    let blocks = blocks(&markdown);
    // Parse every block before starting anything, so a bad marker fails fast.
    let steps: Vec<Step> = blocks.iter().map(step).collect();
    assert!(steps.iter().filter(|s| matches!(s, Step::Run)).count() >= 10);

    let (Some(py), Some(js)) = (require_componentize_py(), require_componentize_js()) else {
        return;
    };
    if on_path("jq").is_none() && !skip("needs jq (run just setup)") {
        return;
    }
    let Some(node) = tutorial_node() else {
        return;
    };
    // Section 9 pushes to a registry: a real one, on loopback, plain HTTP.
    let Some(registry) = scour_testkit::registry::Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let scour = PathBuf::from(env!("CARGO_BIN_EXE_scour"));
    let path = std::env::join_paths(
        std::iter::once(scour.parent().unwrap().to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let root = workspace_root();
    let env: Vec<(&str, std::ffi::OsString)> = vec![
        ("PATH", path),
        ("SCOUR_RUNTIME_ENDPOINT", node.ctd.endpoint().into()),
        ("SCOUR_TRIVY", node.trivy.clone().into()),
        ("SCOUR_TRIVY_CACHE_DIR", node.trivy_cache().into()),
        ("SCOUR_TRIVY_OFFLINE", "true".into()),
        ("SCOUR_STATE_DIR", node.state_dir().into()),
        ("SCOUR_NODE_NAME", "node-1".into()),
        ("SCOUR_TERMINATION_LOG", "/nonexistent/termination-log".into()),
        ("SCOUR_POLICY_CACHE_DIR", policy_cache_dir().into()),
        ("REGISTRY", registry.host().into()),
        ("SCOUR_INSECURE_REGISTRY", registry.host().into()),
        ("SCOUR_COMPONENTIZE_PY", py.into()),
        ("SCOUR_COMPONENTIZE_JS", js.into()),
        // One Rust target dir across runs: the tutorial's build is then incremental.
        ("CARGO_TARGET_DIR", root.join("target/tutorial").into()),
    ];

    let mut leftovers = Leftovers(Vec::new());
    let mut last_output = String::new();
    for (block, step) in blocks.iter().zip(&steps) {
        match step {
            Step::Cluster | Step::Illustration => {}
            Step::Write(rel) => {
                let dest = work.path().join(rel);
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::write(&dest, &block.body).unwrap();
            }
            Step::Run => {
                let started = std::time::Instant::now();
                let child = Command::new("bash")
                    .args(["-euo", "pipefail", "-c", &block.body])
                    .current_dir(work.path())
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .process_group(0)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("bash");
                leftovers.0.push(child.id());
                let out = child.wait_with_output().unwrap();
                last_output = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                eprintln!("{DOC}:{}: ran in {:.1} s", block.line, started.elapsed().as_secs_f64());
                assert!(
                    out.status.success(),
                    "{DOC}:{}: the block failed ({}):\n{}\n--- output:\n{last_output}",
                    block.line,
                    out.status,
                    block.body
                );
            }
            Step::Expect => {
                for want in block.body.lines().filter(|l| !l.trim().is_empty()) {
                    assert!(
                        printed(&last_output, want),
                        "{DOC}:{}: expected a line like {want:?}; the block before printed:\n{last_output}",
                        block.line
                    );
                }
            }
        }
    }
    // The daemon the tutorial started stops, as the tutorial says.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let running = loop {
        let running: Vec<i32> = leftovers.0.iter().flat_map(|g| members_of_group(*g)).collect();
        if running.is_empty() || std::time::Instant::now() > deadline {
            break running;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(running.is_empty(), "the tutorial left processes running: {running:?}");
}

#[test]
fn output_lines_match_in_order_with_gaps() {
    let out = "IMAGE   ID     ACTION  REASON\nalpine:3.5   abc  remove  stale: first seen 10 days ago\n";
    assert!(printed(out, "…alpine:3.5…remove…stale: first seen 10 days ago"));
    assert!(printed(out, "alpine:3.5 abc remove"));
    assert!(!printed(out, "…remove…alpine:3.5"), "parts must come in order");
    assert!(!printed(out, "…alpine:3.5…keep"));
}
