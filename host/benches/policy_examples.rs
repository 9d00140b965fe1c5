//! P6: the reference table for policy authors. For the default policy and
//! each example in guest-examples/: language, component size, build time
//! from a clean target dir (cargo, componentize-py or componentize-js),
//! wasmtime compile time, cached load time, and `decide` at 1 000 images.
//! Ratios compare each policy with the default policy, measured in this run.
//!
//! Run with `just bench`; the markdown table is also written to
//! target/bench/policy-reference.md for docs/writing-policies.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scour::authoring::{Toolchain, build};
use scour::policy::{ArtifactCache, Limits, LoadedPolicy, PolicyEngine};
use scour::units::format_bytes;
use scour_policy_sdk::{ImageFs, Snapshot};
use scour_testkit::gate::{require_componentize_js, require_componentize_py};
use scour_testkit::guests::workspace_root;
use scour_testkit::nodes::synthetic_node;

struct Row {
    name: &'static str,
    language: &'static str,
    size: usize,
    build: Duration,
    compile: Duration,
    cached: Duration,
    decide: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The default policy, built the way build.rs builds it, into a fresh target dir.
fn build_default(scratch: &Path) -> (PathBuf, Duration) {
    let target = scratch.join("default-target");
    let started = Instant::now();
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--quiet",
            "-p",
            "scour-default-policy",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "guest",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(workspace_root())
        .status()
        .expect("cargo");
    assert!(status.success(), "building the default policy");
    (
        target.join("wasm32-wasip2/guest/scour_default_policy.wasm"),
        started.elapsed(),
    )
}

/// An example, built with `scour policy build`'s code from a clean target dir.
fn build_example(dir: &str, scratch: &Path, tools: &Toolchain) -> (PathBuf, Duration) {
    let out = scratch.join(format!("{dir}.wasm"));
    let started = Instant::now();
    let tools = Toolchain {
        cargo_target_dir: Some(scratch.join(format!("{dir}-target"))),
        ..tools.clone()
    };
    build(&workspace_root().join("guest-examples").join(dir), Some(&out), &tools).expect("building the example");
    (out, started.elapsed())
}

fn measure(name: &'static str, language: &'static str, wasm: &Path, built_in: Duration, node: &Snapshot) -> Row {
    let bytes = std::fs::read(wasm).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::new(Limits::production(), Some(ArtifactCache::new(cache_dir.path()))).unwrap();
    let cold = LoadedPolicy::load(&engine, &bytes, name, "").unwrap();
    assert!(!cold.stats().from_cache);
    let cached = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let p = LoadedPolicy::load(&engine, &bytes, name, "").unwrap();
                let elapsed = t.elapsed();
                assert!(p.stats().from_cache);
                elapsed
            })
            .collect(),
    );
    std::hint::black_box(cold.decide(&node.context, &node.images).unwrap());
    let decide = median(
        (0..15)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(cold.decide(&node.context, &node.images).unwrap());
                t.elapsed()
            })
            .collect(),
    );
    Row {
        name,
        language,
        size: bytes.len(),
        build: built_in,
        compile: cold.stats().compile,
        cached,
        decide,
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing here takes arguments.
    let (Some(py), Some(js)) = (require_componentize_py(), require_componentize_js()) else {
        println!("P6  skipped: componentize-py and componentize-js are needed (run just setup)");
        return;
    };
    let tools = Toolchain {
        componentize_py: py,
        componentize_js: js,
        ..Toolchain::default()
    };
    println!("P6  policy reference: build from clean, wasmtime compile, cached load, decide at 1000 images");
    let scratch = tempfile::tempdir().unwrap();
    let mut node = synthetic_node(1_000);
    // Above the disk-pressure example's threshold, so it does its work too.
    node.context.image_fs = Some(ImageFs {
        used_bytes: 90 << 30,
        capacity_bytes: Some(100 << 30),
    });

    let (default, t) = build_default(scratch.path());
    let mut rows = vec![measure("default", "Rust", &default, t, &node)];
    for (dir, language) in [
        ("rust-retention", "Rust"),
        ("python-cve-allowlist", "Python"),
        ("js-disk-pressure", "JavaScript"),
    ] {
        let (wasm, t) = build_example(dir, scratch.path(), &tools);
        rows.push(measure(dir, language, &wasm, t, &node));
    }

    let base = &rows[0];
    let ratio = |a: Duration, b: Duration| format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64());
    let mut table = String::from(
        "| policy | language | .wasm size | build (clean) | compile | cached load | decide @ 1000 images | decide vs default |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {:.1} s | {} | {} | {} | {} |\n",
            r.name,
            r.language,
            format_bytes(r.size as u64),
            r.build.as_secs_f64(),
            ms(r.compile),
            ms(r.cached),
            ms(r.decide),
            ratio(r.decide, base.decide),
        ));
    }
    for r in &rows[1..] {
        println!(
            "    {:<22} size {:>7}x  compile {:>7}  cached load {:>6}  decide {:>7}  (vs default)",
            r.name,
            format!("{:.1}", r.size as f64 / base.size as f64),
            ratio(r.compile, base.compile),
            ratio(r.cached, base.cached),
            ratio(r.decide, base.decide),
        );
    }
    println!("\n{table}");
    let out = workspace_root().join("target/bench/policy-reference.md");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &table).unwrap();
    println!("    written to {}", out.display());
}
