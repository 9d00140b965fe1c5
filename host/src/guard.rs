//! Guard: the host's invariants, which no policy can override. They run on
//! the policy's decisions and again just before each removal.
//!
//! Never removed: an image any container uses (running, created or exited),
//! an image the runtime reports pinned, the sandbox (pause) image, and
//! anything the system exclusion list matches.

use scour_policy_sdk::{Image, Pattern, PatternSet};

/// Why the host refuses to remove an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Veto {
    InUse,
    Pinned,
    Sandbox(String),
    SystemExcluded(String),
}

impl Veto {
    /// The reason recorded for a kept image, e.g. `guard: in-use`.
    pub fn reason(&self) -> String {
        match self {
            Veto::InUse => "guard: in-use".to_owned(),
            Veto::Pinned => "guard: pinned".to_owned(),
            Veto::Sandbox(image) => format!("guard: sandbox image {image}"),
            Veto::SystemExcluded(pattern) => format!("guard: system exclusion {pattern}"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Guard {
    system: PatternSet,
    sandbox: Vec<Pattern>,
}

impl Guard {
    /// `sandbox` holds the runtime's sandbox image and any configured ones;
    /// entries that are not valid references are ignored with a warning.
    pub fn new(system: PatternSet, sandbox: &[String]) -> Self {
        let sandbox = sandbox
            .iter()
            .filter_map(|s| match Pattern::parse(s) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(sandbox_image = %s, error = %e, "ignoring an unusable sandbox image name");
                    None
                }
            })
            .collect();
        Self { system, sandbox }
    }

    /// The first invariant that keeps `image`, if any. Standing protections
    /// come first, the most specific first, so that a pause image that pods
    /// run on reads `sandbox image`, not `in-use`.
    pub fn check(&self, image: &Image) -> Option<Veto> {
        let names = image.names();
        if let Some(p) = self.sandbox.iter().find(|p| p.matches(&names)) {
            return Some(Veto::Sandbox(p.source().to_owned()));
        }
        if let Some(p) = self.system.first_match(&names) {
            return Some(Veto::SystemExcluded(p.source().to_owned()));
        }
        if image.pinned {
            return Some(Veto::Pinned);
        }
        image.in_use.then_some(Veto::InUse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str]) -> Image {
        Image {
            id: "sha256:x".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            size: 1,
            ..Default::default()
        }
    }

    #[test]
    fn every_invariant_vetoes() {
        let guard = Guard::new(
            PatternSet::parse(&["registry.k8s.io/*"]).unwrap(),
            &["localhost/test/pause:1".into(), "not a ref!".into()],
        );
        let mut used = image(&["docker.io/library/a:1"]);
        used.in_use = true;
        assert_eq!(guard.check(&used), Some(Veto::InUse));
        let mut pinned = image(&["docker.io/library/a:1"]);
        pinned.pinned = true;
        assert_eq!(guard.check(&pinned), Some(Veto::Pinned));
        assert_eq!(
            guard.check(&image(&["localhost/test/pause:1"])),
            Some(Veto::Sandbox("localhost/test/pause:1".into()))
        );
        assert_eq!(
            guard.check(&image(&["registry.k8s.io/coredns:1"])).unwrap().reason(),
            "guard: system exclusion registry.k8s.io/*"
        );
        assert_eq!(guard.check(&image(&["docker.io/library/a:1"])), None);
        // Standing protections explain it before `in-use` does.
        let mut pause_in_use = image(&["localhost/test/pause:1"]);
        pause_in_use.in_use = true;
        pause_in_use.pinned = true;
        assert_eq!(
            guard.check(&pause_in_use).unwrap().reason(),
            "guard: sandbox image localhost/test/pause:1"
        );
    }
}
