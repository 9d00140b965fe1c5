//! Builds the test suite's guest components (the hostile policies) with the
//! same toolchain and target directory as the host's build script.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support lives two levels below the workspace root")
        .to_path_buf()
}

/// `<target>/guests`, shared with the host's build script.
pub fn guest_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("guests")
}

/// Runs `cargo build` for a wasm32-wasip2 guest package; `extra` adds
/// arguments such as `--examples`.
pub fn cargo_build_guest(package: &str, extra: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--target",
            "wasm32-wasip2",
            "--profile",
            "guest",
        ])
        .args(extra)
        .arg("--target-dir")
        .arg(guest_target_dir());
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build -p {package} failed with {status}"))
    }
}

/// The hostile policies, each an example of `tests/guests/hostile`:
/// `infinite_loop`, `alloc_1gib`, `panics`, `unknown_ids`, `duplicate_ids`,
/// `flood`, `bad_settings`, `remove_all`, `slow_remove_all`, `silent` and
/// `chatty`.
pub fn hostile_guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| cargo_build_guest("scour-hostile-guests", &["--examples"]))
        .as_ref()
        .unwrap_or_else(|e| panic!("building the hostile guests: {e}"));
    let path = hostile_guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn hostile_guest_path(name: &str) -> PathBuf {
    guest_target_dir()
        .join("wasm32-wasip2/guest/examples")
        .join(format!("{name}.wasm"))
}

/// The default policy component, built from `policies/default` like the
/// host's build script builds it.
pub fn default_policy_path() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| cargo_build_guest("scour-default-policy", &[]))
        .as_ref()
        .unwrap_or_else(|e| panic!("building the default policy: {e}"));
    guest_target_dir().join("wasm32-wasip2/guest/scour_default_policy.wasm")
}

/// `scour` for building and testing policies: the Python and JS
/// toolchains, one Rust target dir and one compiled-policy cache for every
/// test, warnings only.
pub fn policy_tool(scour: &Path, py: &Path, js: &Path) -> Command {
    let root = workspace_root();
    let mut cmd = Command::new(scour);
    cmd.env("SCOUR_COMPONENTIZE_PY", py)
        .env("SCOUR_COMPONENTIZE_JS", js)
        .env("CARGO_TARGET_DIR", root.join("target/examples"))
        .env("SCOUR_POLICY_CACHE_DIR", root.join("target/test-policy-cache"))
        .env("SCOUR_LOG", "warn");
    cmd
}

/// A guest example (`guest-examples/NAME`) built by `scour` (`policy build`)
/// into `target/policy-examples/NAME.wasm`, once per process, one builder at
/// a time across test processes. `None` when the Python and JS toolchains
/// are missing (outside CI; in CI that fails).
pub fn example_policy(scour: &Path, name: &str) -> Option<PathBuf> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let py = crate::gate::require_componentize_py()?;
    let js = crate::gate::require_componentize_js()?;
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = built.get(name) {
        return Some(path.clone());
    }
    let root = workspace_root();
    let out_dir = root.join("target/policy-examples");
    std::fs::create_dir_all(&out_dir).unwrap();
    let lock = std::fs::File::create(out_dir.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    let out = out_dir.join(format!("{name}.wasm"));
    let o = policy_tool(scour, &py, &js)
        .args(["policy", "build"])
        .arg(root.join("guest-examples").join(name))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("running scour policy build");
    assert!(
        o.status.success(),
        "building {name}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    built.insert(name.to_owned(), out.clone());
    Some(out)
}
