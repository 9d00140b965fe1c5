//! Fake Trivy binaries for fault scenarios: shell scripts that answer
//! `trivy version` like the real one and then misbehave on `trivy image`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How the fake fails an image scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Never returns.
    Hang,
    /// Dies from SIGSEGV after printing a Go-style panic.
    Crash,
    /// Exits 0 with something that is not a report.
    Garbage,
    /// Exits 1 with Trivy's FATAL line for a corrupt DB.
    CorruptDb,
}

const VERSION_JSON: &str = r#"{"Version":"0.76.0","VulnerabilityDB":{"Version":2,"NextUpdate":"2099-01-01T00:00:00Z","UpdatedAt":"2024-01-01T00:00:00Z","DownloadedAt":"2024-01-01T00:00:00Z"}}"#;

/// Writes a fake `trivy` into `dir` and returns its path. Each scan it
/// starts appends a line to `<dir>/calls`.
pub fn fake_trivy(dir: &Path, how: Misbehaviour) -> PathBuf {
    let image = match how {
        Misbehaviour::Hang => "exec sleep 600".to_owned(),
        Misbehaviour::Crash => {
            "echo 'panic: runtime error: invalid memory address or nil pointer dereference' >&2\nkill -SEGV $$"
                .to_owned()
        }
        Misbehaviour::Garbage => "echo 'this is not a trivy report'\nexit 0".to_owned(),
        Misbehaviour::CorruptDb => {
            "echo '2026-01-01T00:00:00Z\tFATAL\tFatal error\tinit error: DB error: failed to open db: invalid database' >&2\nexit 1"
                .to_owned()
        }
    };
    let script = format!(
        "#!/bin/sh\n# fake trivy: {how:?}\ncase \"$1\" in\n  version) echo '{VERSION_JSON}'; exit 0 ;;\nesac\necho \"$@\" >> \"$(dirname \"$0\")/calls\"\n{image}\n"
    );
    let path = dir.join("trivy");
    std::fs::write(&path, script).expect("write the fake trivy");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod the fake trivy");
    path
}

/// How many scans a fake started.
pub fn fake_trivy_calls(dir: &Path) -> usize {
    trivy_image_calls(dir).len()
}

/// Wraps the real Trivy to count its image scans: a script that logs each
/// `trivy image` call to `<dir>/calls` and execs the real binary.
pub fn counting_trivy(dir: &Path, real: &Path) -> PathBuf {
    wrapper(dir, real, "")
}

/// Like [`counting_trivy`], but every scan that reads an image in place
/// (`--input`, an OCI layout) fails as Trivy fails on a layout it cannot
/// open; scans through containerd's export run for real.
pub fn layout_refusing_trivy(dir: &Path, real: &Path) -> PathBuf {
    wrapper(
        dir,
        real,
        "for a in \"$@\"; do if [ \"$a\" = --input ]; then echo '2026-01-01T00:00:00Z\tFATAL\tFatal error\trun error: unable to open the layout as an OCI Image' >&2; exit 1; fi; done\n",
    )
}

fn wrapper(dir: &Path, real: &Path, before: &str) -> PathBuf {
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = image ]; then echo \"$@\" >> \"$(dirname \"$0\")/calls\"; fi\n{before}exec '{}' \"$@\"\n",
        real.display()
    );
    let path = dir.join("trivy");
    std::fs::write(&path, script).expect("write the trivy wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod the trivy wrapper");
    path
}

/// The arguments of each `trivy image` run a wrapper or fake logged.
pub fn trivy_image_calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}
