//! `just demo`: starts a private containerd with sample images (vulnerable,
//! clean, end-of-life, one used by a running container, excluded ones, a
//! multi-tag one), generates a Trivy DB, runs one `scour worker` pass with
//! the embedded default policy, prints what was removed and why, and tears
//! everything down.
//!
//! Usage: scour-demo PATH/TO/scour

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use scour_testkit::containerd::{PrivateContainerd, block_on};
use scour_testkit::scenario::{clean, end_of_life, runnable_vulnerable, standard_db, vulnerable};

fn main() -> ExitCode {
    let Some(scour) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: scour-demo PATH/TO/scour");
        return ExitCode::from(2);
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the demo starts a private containerd and needs root; run `just setup` and `just demo` as root");
        return ExitCode::from(1);
    }
    let Some(trivy) = scour_testkit::gate::find_trivy() else {
        eprintln!("trivy not found: run `just setup`");
        return ExitCode::from(1);
    };
    match run(&scour, &trivy) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(scour: &std::path::Path, trivy: &std::path::Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let started = Instant::now();
    println!("== starting a private containerd (its own root, state and socket under /tmp)");
    let ctd = PrivateContainerd::start()?;
    let work = tempfile::tempdir()?;
    println!("   socket: {}", ctd.socket().display());

    println!("== importing sample images");
    let images = vec![
        vulnerable("docker.io/library/alpine:3.12", "alpine-3.12"),
        clean("docker.io/library/nginx:1.27-alpine", "nginx"),
        end_of_life("docker.io/library/alpine:3.5", "alpine-3.5"),
        end_of_life("ghcr.io/example/legacy-tool:0.9", "legacy"),
        vulnerable("docker.io/library/redis:7-alpine", "redis"),
        runnable_vulnerable("myregistry.example.com/shop/api:2.4.1", "api"),
        vulnerable("myregistry.example.com/shop/web:1.0", "web").tag("myregistry.example.com/shop/web:latest"),
        clean("myregistry.example.com/batch/report:2025.10", "report"),
        vulnerable("registry.k8s.io/kube-proxy:v1.30.0", "kube-proxy"),
    ];
    let api = images[5].refs()[0].clone();
    let built = ctd.import_images(images)?;
    for b in &built {
        println!("   {:<48} {}", b.refs.join(", "), &b.image_id()[7..19]);
    }
    println!("   localhost/test/pause:1 (the sandbox image)");

    println!("== running a pod with a container on {api}");
    block_on(async {
        let pod = ctd.run_pod("shop").await?;
        ctd.create_container(&pod, &api, "api", true).await
    })?;

    println!("== writing a Trivy vulnerability DB and exclusion lists");
    let cache = work.path().join("trivy-cache");
    standard_db().write(&cache)?;
    let user = work.path().join("user-exclusions.json");
    std::fs::write(&user, r#"{"excluded": ["docker.io/library/redis:*"]}"#)?;
    let system = work.path().join("system-exclusions.json");
    std::fs::write(&system, r#"{"excluded": ["registry.k8s.io/*"]}"#)?;
    println!("   user exclusions:   docker.io/library/redis:*");
    println!("   system exclusions: registry.k8s.io/*");

    println!("== scour worker --once (embedded default policy, real Trivy)\n");
    let report = work.path().join("report.json");
    let status = Command::new(scour)
        .args([
            "worker",
            "--once",
            "--output",
            "table",
            "--runtime-endpoint",
            &ctd.endpoint(),
        ])
        .arg("--trivy")
        .arg(trivy)
        .arg("--trivy-cache-dir")
        .arg(&cache)
        .arg("--trivy-offline")
        .arg("--exclusions")
        .arg(&user)
        .arg("--system-exclusions")
        .arg(&system)
        .arg("--state-dir")
        .arg(work.path().join("state"))
        .arg("--report")
        .arg(&report)
        .args(["--node-name", "demo-node", "--termination-log", "/nonexistent"])
        .env("SCOUR_LOG", "warn")
        .env("SCOUR_LOG_FORMAT", "text")
        .status()?;

    let remaining = block_on(async {
        let cri = ctd.cri_client().await.map_err(|e| e.to_string())?;
        cri.list_images().await.map_err(|e| e.to_string())
    })?;
    println!("\n== images left on the node");
    for i in &remaining {
        println!("   {}", i.tags.join(", "));
    }
    let kept_report = scour_testkit::guests::workspace_root().join("target/demo-report.json");
    if std::fs::copy(&report, &kept_report).is_ok() {
        println!("\n== the full JSON report is in {}", kept_report.display());
    }
    println!("\n== tearing down (pods, containerd, mounts, temp dirs)");
    drop(ctd);
    drop(work);
    println!("   done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}
