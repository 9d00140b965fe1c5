//! Policies through a real OCI registry (distribution 2.8 on loopback):
//! `scour policy push` publishes a component with its golden cases and
//! prints a digest-pinned reference, and every command that takes `--policy`
//! pulls it, checks the digest, and keeps it for the next time. Wrong
//! digests, unreachable registries, missing credentials and artifacts that
//! are not policies each fail with a reason that says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scour_testkit::guests::{default_policy_path, hostile_guest_path, workspace_root};
use scour_testkit::oci_push::{Layer, push_artifact};
use scour_testkit::registry::Registry;

const SCOUR: &str = env!("CARGO_BIN_EXE_scour");
const WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
const WASM_CONFIG: &str = "application/vnd.wasm.config.v1+json";

struct Cli {
    cache: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Self {
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// `scour ARGS` with its own policy cache (pulled and compiled policies).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(SCOUR)
            .args(args)
            .env("SCOUR_POLICY_CACHE_DIR", self.cache.path())
            .env("SCOUR_LOG", "warn")
            .env_remove("SCOUR_REGISTRY_AUTH")
            .env_remove("SCOUR_INSECURE_REGISTRY")
            .output()
            .expect("running scour")
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn default_cases() -> PathBuf {
    workspace_root().join("policies/default/tests")
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Pushes the default policy with its cases; returns the pinned reference.
fn push_default(cli: &Cli, reg: &Registry, extra: &[&str]) -> String {
    let policy = default_policy_path();
    let cases = default_cases();
    let to = format!("registry://{}/scour/default:v1", reg.host());
    let mut args = vec![
        "policy",
        "push",
        "--policy",
        path_str(&policy),
        &to,
        "--cases",
        path_str(&cases),
        "--insecure-registry",
    ];
    let host = reg.host();
    args.push(&host);
    args.extend_from_slice(extra);
    let o = cli.run(&args);
    assert!(o.status.success(), "push:\n{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let pinned = stdout.trim().to_owned();
    assert!(pinned.starts_with(&format!("{to}@sha256:")), "{pinned}");
    assert!(text(&o).contains("golden cases"), "{}", text(&o));
    pinned
}

/// A container image's artifact (a tar layer, no Wasm) as `apps/web:v1`.
fn push_container_image(reg: &Registry) -> String {
    push_artifact(
        reg.addr(),
        None,
        "apps/web",
        "v1",
        "application/vnd.oci.image.config.v1+json",
        &[Layer {
            media_type: "application/vnd.oci.image.layer.v1.tar",
            data: &[0; 1024],
            title: None,
        }],
    )
}

#[test]
fn a_pushed_policy_is_pulled_by_digest_and_kept_for_the_next_time() {
    let Some(mut reg) = Registry::start() else { return };
    let cli = Cli::new();
    let pinned = push_default(&cli, &reg, &[]);
    let host = reg.host();
    let check = |cli: &Cli| {
        cli.run(&[
            "policy",
            "check",
            "--policy",
            &pinned,
            "--insecure-registry",
            &host,
            "--output",
            "json",
        ])
    };
    let o = check(&cli);
    assert!(o.status.success(), "check:\n{}", text(&o));
    let described: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let component = std::fs::read(default_policy_path()).unwrap();
    assert_eq!(described["digest"], scour_testkit::images::sha256_digest(&component));
    assert_eq!(described["origin"], pinned.as_str());
    // The registry's cases run from the artifact, as the controller runs them.
    let o = cli.run(&[
        "policy",
        "test",
        "--policy",
        &pinned,
        "--insecure-registry",
        &host,
        path_str(&default_cases()),
    ]);
    assert!(o.status.success(), "test:\n{}", text(&o));
    // Kept: with the registry gone, the same digest still loads.
    reg.stop();
    let o = check(&cli);
    assert!(o.status.success(), "from the pull cache:\n{}", text(&o));
    // A fresh cache must reach the registry, and says why it cannot.
    let o = check(&Cli::new());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cannot pull policy") && text(&o).contains(&pinned),
        "{}",
        text(&o)
    );
}

#[test]
fn a_wrong_digest_an_unreachable_registry_and_an_unpinned_reference_are_refused() {
    let Some(reg) = Registry::start() else { return };
    let cli = Cli::new();
    let pinned = push_default(&cli, &reg, &[]);
    let host = reg.host();
    let refused = |policy: &str, want: &[&str]| {
        let o = cli.run(&["policy", "check", "--policy", policy, "--insecure-registry", &host]);
        assert!(!o.status.success(), "{policy} was accepted");
        for w in want {
            assert!(text(&o).contains(w), "{policy}: want {w:?} in:\n{}", text(&o));
        }
    };
    let (name, _) = pinned.split_once('@').unwrap();
    let wrong = format!("{name}@sha256:{}", "0".repeat(64));
    refused(&wrong, &["cannot pull policy", &wrong, "manifest unknown"]);
    refused(name, &["not pinned", "scour policy push"]);
    let closed = scour_testkit::trivy_server::free_port().to_string();
    let nowhere = pinned.replace(&host, &closed);
    let o = cli.run(&["policy", "check", "--policy", &nowhere, "--insecure-registry", &closed]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cannot pull policy") && text(&o).to_lowercase().contains("connection refused"),
        "{}",
        text(&o)
    );
    // Plain HTTP only where asked for: the default is HTTPS.
    let o = cli.run(&["policy", "check", "--policy", &pinned]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cannot pull policy"), "{}", text(&o));
}

#[test]
fn artifacts_that_are_not_policies_are_refused_with_what_they_are() {
    let Some(reg) = Registry::start() else { return };
    let cli = Cli::new();
    let host = reg.host();
    let check = |digest: &str, repo: &str| {
        let r = format!("registry://{host}/{repo}:v1@{digest}");
        let o = cli.run(&["policy", "check", "--policy", &r, "--insecure-registry", &host]);
        assert!(!o.status.success(), "{r} was accepted");
        text(&o)
    };
    // A container image: a tar layer, no Wasm.
    let image = push_container_image(&reg);
    let out = check(&image, "apps/web");
    assert!(
        out.contains("is not a scour policy") && out.contains("application/vnd.oci.image.layer.v1.tar"),
        "{out}"
    );
    // A Wasm artifact holding a core module, not a component.
    let module = push_artifact(
        reg.addr(),
        None,
        "wasm/core",
        "v1",
        WASM_CONFIG,
        &[Layer {
            media_type: WASM_LAYER,
            data: b"\0asm\x01\0\0\0",
            title: None,
        }],
    );
    let out = check(&module, "wasm/core");
    assert!(out.contains("not a loadable WebAssembly component"), "{out}");
}

#[test]
fn a_registry_with_credentials_takes_them_from_a_docker_config() {
    let Some(reg) = Registry::start_with_auth("ci", "s3cret") else {
        return;
    };
    let cli = Cli::new();
    let host = reg.host();
    let policy = default_policy_path();
    let to = format!("registry://{host}/scour/default:v1");
    let base = [
        "policy",
        "push",
        "--policy",
        path_str(&policy),
        &to,
        "--insecure-registry",
        &host,
    ];
    let o = cli.run(&base);
    assert!(!o.status.success(), "pushed without credentials");
    assert!(
        text(&o).contains("cannot pull policy") || text(&o).contains("cannot"),
        "{}",
        text(&o)
    );
    let d = tempfile::tempdir().unwrap();
    let auth = d.path().join("config.json");
    std::fs::write(
        &auth,
        serde_json::json!({"auths": {&host: {"username": "ci", "password": "s3cret"}}}).to_string(),
    )
    .unwrap();
    let mut with_auth = base.to_vec();
    with_auth.extend(["--registry-auth", path_str(&auth)]);
    let o = cli.run(&with_auth);
    assert!(o.status.success(), "{}", text(&o));
    let pinned = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let o = Cli::new().run(&["policy", "check", "--policy", &pinned, "--insecure-registry", &host]);
    assert!(
        !o.status.success() && text(&o).to_lowercase().contains("auth"),
        "{}",
        text(&o)
    );
    let o = Cli::new().run(&[
        "policy",
        "check",
        "--policy",
        &pinned,
        "--insecure-registry",
        &host,
        "--registry-auth",
        path_str(&auth),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn push_refuses_a_policy_that_fails_its_own_cases() {
    let Some(reg) = Registry::start() else { return };
    let cli = Cli::new();
    let host = reg.host();
    let hostile = hostile_guest_path("panics");
    scour_testkit::guests::hostile_guest("panics");
    let to = format!("registry://{host}/scour/panics:v1");
    let o = cli.run(&[
        "policy",
        "push",
        "--policy",
        path_str(&hostile),
        &to,
        "--cases",
        path_str(&default_cases()),
        "--insecure-registry",
        &host,
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("trapped"), "{}", text(&o));
    assert_eq!(
        reg.status("/v2/scour/panics/tags/list", false).unwrap(),
        404,
        "nothing was pushed"
    );
}

#[test]
fn a_worker_whose_registry_policy_cannot_be_used_removes_nothing() {
    use scour_testkit::scenario::{TestNode, clean, vulnerable};
    let Some(reg) = Registry::start() else { return };
    let Some(mut node) = TestNode::start() else { return };
    node.import(vec![
        ("a", vulnerable("localhost/test/a:1", "a")),
        ("clean", clean("localhost/test/clean:1", "clean")),
    ]);
    let cli = Cli::new();
    let pinned = push_default(&cli, &reg, &[]);
    let host = reg.host();
    let (name, _) = pinned.split_once('@').unwrap();
    let image = push_container_image(&reg);
    let closed = scour_testkit::trivy_server::free_port().to_string();
    for (policy, reason) in [
        (format!("{name}@sha256:{}", "0".repeat(64)), "manifest unknown"),
        (pinned.replace(&host, &closed), "cannot pull policy"),
        (
            format!("registry://{host}/apps/web:v1@{image}"),
            "is not a scour policy",
        ),
    ] {
        let run = node
            .worker(SCOUR.as_ref())
            .args([
                "--policy",
                &policy,
                "--insecure-registry",
                &host,
                "--insecure-registry",
                &closed,
            ])
            .run();
        assert_ne!(run.code(), Some(0), "{policy}: {}", run.stderr());
        assert!(
            run.stderr().contains(reason),
            "{policy}: want {reason:?} in\n{}",
            run.stderr()
        );
        assert!(node.has("a") && node.has("clean"), "{policy} removed images");
    }
    // The same pass with the pushed policy removes the vulnerable image.
    let run = node
        .worker(SCOUR.as_ref())
        .args(["--policy", &pinned, "--insecure-registry", &host])
        .run();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(!node.has("a") && node.has("clean"), "{}", run.stderr());
}
