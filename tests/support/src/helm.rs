//! The project-local Helm (`just setup` puts it in `.tools/bin/helm`), with
//! a private home, so a test never reads or writes the user's Helm
//! repositories and plugins.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::gate::{on_path, skip};
use crate::guests::workspace_root;

/// The chart, relative to the workspace root.
pub const CHART: &str = "deploy/helm/scour";

pub struct Helm {
    pub bin: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    /// `$SCOUR_HELM`, else `.tools/bin/helm` (`just setup`), else `helm` on
    /// PATH; or a skip (a failure in CI).
    pub fn find() -> Option<Helm> {
        let found = std::env::var_os("SCOUR_HELM")
            .filter(|v| !v.is_empty())
            .map(|v| {
                let path = PathBuf::from(v);
                assert!(path.is_file(), "SCOUR_HELM={} does not exist", path.display());
                path
            })
            .or_else(|| {
                let local = workspace_root().join(".tools/bin/helm");
                local.is_file().then_some(local)
            })
            .or_else(|| on_path("helm"));
        let Some(bin) = found else {
            skip("needs helm (run just setup)");
            return None;
        };
        let home = tempfile::tempdir().expect("a temporary Helm home");
        Some(Helm { bin, home })
    }

    /// Runs helm in the workspace root.
    pub fn run(&self, args: &[&str]) -> Output {
        let home = self.home.path();
        Command::new(&self.bin)
            .args(args)
            .current_dir(workspace_root())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    /// `helm template scour <chart> --namespace kube-system <extra>`; panics
    /// with Helm's error when the render fails.
    pub fn template(&self, extra: &[&str]) -> String {
        let mut args = vec!["template", "scour", CHART, "--namespace", "kube-system"];
        args.extend_from_slice(extra);
        let o = self.run(&args);
        assert!(
            o.status.success(),
            "helm {}:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).expect("helm prints UTF-8")
    }

    /// The error of a render that must fail.
    pub fn template_error(&self, extra: &[&str]) -> String {
        let mut args = vec!["template", "scour", CHART, "--namespace", "kube-system"];
        args.extend_from_slice(extra);
        let o = self.run(&args);
        assert!(!o.status.success(), "helm {} should have failed", args.join(" "));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}
