//! Which real components a test needs, and what happens when one is
//! missing: in CI (`CI` set, and not `false` or `0`) the test fails; locally
//! it prints a loud SKIPPED line and returns.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether this run is CI, where real-component tests must not skip.
pub fn in_ci() -> bool {
    let ci = std::env::var("CI").unwrap_or_default();
    !matches!(ci.trim(), "" | "false" | "0")
}

/// Fails in CI; otherwise prints `SKIPPED: <test>: <reason>` and returns false.
pub fn skip(reason: &str) -> bool {
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_owned();
    if in_ci() {
        panic!("{test}: {reason}; CI is set, so this test may not skip (run `just setup` as root)");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {reason}");
    false
}

/// An executable called `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The real Trivy: `$SCOUR_TRIVY`, else `<workspace>/.tools/bin/trivy`
/// (installed by `just setup`), else `trivy` on PATH.
pub fn find_trivy() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SCOUR_TRIVY").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "SCOUR_TRIVY={} does not exist", path.display());
        return Some(path);
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/trivy");
    if tools.is_file() {
        return Some(tools);
    }
    on_path("trivy")
}

/// The real Trivy, or a skip (a failure in CI).
pub fn require_trivy() -> Option<PathBuf> {
    let found = find_trivy();
    if found.is_none() {
        skip("needs trivy (run just setup)");
    }
    found
}

/// A policy toolchain: `$env`, else `<workspace>/.tools/<rel>` (installed by
/// `just setup`), else `name` on PATH; or a skip (a failure in CI).
fn require_tool(env: &str, rel: &str, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools").join(rel);
            local.is_file().then_some(local)
        })
        .or_else(|| on_path(name));
    if found.is_none() {
        skip(&format!("needs {name} (run just setup)"));
    }
    found
}

/// componentize-py, for Python policies.
pub fn require_componentize_py() -> Option<PathBuf> {
    require_tool("SCOUR_COMPONENTIZE_PY", "venv/bin/componentize-py", "componentize-py")
}

/// componentize-js, for JavaScript policies.
pub fn require_componentize_js() -> Option<PathBuf> {
    require_tool(
        "SCOUR_COMPONENTIZE_JS",
        "node/node_modules/.bin/componentize-js",
        "componentize-js",
    )
}

/// A real OCI registry (distribution 2.8, Debian's `docker-registry`):
/// `$SCOUR_REGISTRY`, else `docker-registry` on PATH (installed by `just
/// setup`); or a skip (a failure in CI).
pub fn require_registry() -> Option<PathBuf> {
    require_tool("SCOUR_REGISTRY", "bin/docker-registry", "docker-registry")
}
