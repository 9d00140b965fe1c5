//! Builds the default policy (`policies/default`) as a wasm32-wasip2
//! component and embeds it in the `scour` binary, so scour runs with no
//! policy file at all.
//!
//! The guest is built by a nested `cargo build` into `<target>/guests`, a
//! target directory of its own: no lock contention with the outer build, and
//! one build shared by `cargo build`, `test`, `clippy` and `bench`.
//! Set `SCOUR_DEFAULT_POLICY_WASM=/path/to/policy.wasm` to embed a prebuilt
//! component instead (container builds that compile the guest separately).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_PACKAGE: &str = "scour-default-policy";
const GUEST_ARTIFACT: &str = "scour_default_policy.wasm";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("default-policy.wasm");
    println!("cargo:rerun-if-env-changed=SCOUR_DEFAULT_POLICY_WASM");
    if let Some(prebuilt) = env::var_os("SCOUR_DEFAULT_POLICY_WASM") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        copy(&prebuilt, &dest);
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lives in the workspace root");
    for input in [
        "wit",
        "policies/sdk/src",
        "policies/sdk/Cargo.toml",
        "policies/guest/src",
        "policies/guest/Cargo.toml",
        "policies/default/src",
        "policies/default/Cargo.toml",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            GUEST_PACKAGE,
            "--target",
            "wasm32-wasip2",
            "--profile",
            "guest",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are for the host, not the guest: clippy's
    // wrapper, host rustflags and coverage instrumentation must not leak in.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_LLVM_COV",
        "CARGO_LLVM_COV_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the default policy: {e}"));
    if !status.success() {
        panic!(
            "building the default policy for wasm32-wasip2 failed (see above). \
             If the target is missing, run `just setup` or `rustup target add wasm32-wasip2`."
        );
    }
    copy(&target_dir.join("wasm32-wasip2/guest").join(GUEST_ARTIFACT), &dest);
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}
