//! Exclusion lists: `{"excluded": [...]}` JSON files, as Eraser's labelled
//! ConfigMaps hold them.
//!
//! The **system** list is a hard guard no policy can override. **User** lists
//! are merged and given to the policy, which honours them. Unlike Eraser,
//! every `*.json` key of every mounted ConfigMap is read, not only the first.
//! Any malformed source fails the whole load, naming the file: a pass must
//! not run with half its exclusions.

use std::path::{Path, PathBuf};

use scour_policy_sdk::PatternSet;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ExclusionError {
    #[error("exclusion list {path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> ExclusionError {
    ExclusionError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExclusionFile {
    excluded: Vec<String>,
}

/// Patterns with the file each came from.
#[derive(Debug, Clone, Default)]
pub struct ExclusionList {
    entries: Vec<String>,
    sources: Vec<PathBuf>,
}

impl ExclusionList {
    /// Reads the given files and every `*.json` file below the given
    /// directories (ConfigMap mounts), in path order.
    pub fn load(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Self, ExclusionError> {
        Self::load_from(files, dirs, false)
    }

    /// Like [`load`](Self::load), but a directory without a `*.json` file is
    /// an error: for the system list, a ConfigMap whose key lacks the suffix
    /// would otherwise protect nothing, silently. (Eraser fails the same way.)
    pub fn load_required(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Self, ExclusionError> {
        Self::load_from(files, dirs, true)
    }

    fn load_from(files: &[PathBuf], dirs: &[PathBuf], json_required: bool) -> Result<Self, ExclusionError> {
        let mut all = files.to_vec();
        for dir in dirs {
            if !dir.is_dir() {
                return Err(invalid(dir, "not a directory"));
            }
            let before = all.len();
            collect_json(dir, &mut all).map_err(|e| invalid(dir, e.to_string()))?;
            if json_required && all.len() == before {
                return Err(invalid(
                    dir,
                    "no *.json file; the ConfigMap's key must end in .json, e.g. system.json",
                ));
            }
        }
        let mut list = ExclusionList::default();
        for path in &all {
            list.add_file(path)?;
        }
        Ok(list)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), ExclusionError> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e.to_string()))?;
        let entries = parse_list(&text).map_err(|e| invalid(path, e))?;
        self.entries.extend(entries);
        self.sources.push(path.to_owned());
        Ok(())
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// The entries as a matcher; they were validated on load.
    pub fn patterns(&self) -> PatternSet {
        PatternSet::parse(&self.entries).unwrap_or_default()
    }
}

/// Parses one `{"excluded": [...]}` document and checks every pattern; the
/// worker reads files with it and the controller checks ConfigMaps with it.
pub fn parse_list(text: &str) -> Result<Vec<String>, String> {
    let file: ExclusionFile =
        serde_json::from_str(text).map_err(|e| format!("expected {{\"excluded\": [...]}}: {e}"))?;
    PatternSet::parse(&file.excluded).map_err(|e| e.to_string())?;
    Ok(file.excluded.into_iter().map(|e| e.trim().to_owned()).collect())
}

/// `*.json` files below `dir`, skipping the `..data`-style entries of a
/// ConfigMap volume (the visible names are symlinks into them).
fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".."));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn every_json_key_of_every_configmap_is_read() {
        let d = tempfile::tempdir().unwrap();
        // Two ConfigMap mounts with the kubelet's ..data symlink layout.
        for (cm, keys) in [
            (
                "excluded-a",
                vec![
                    ("a.json", r#"{"excluded":["alpine:*"]}"#),
                    ("b.json", r#"{"excluded":["docker.io/library/*"]}"#),
                ],
            ),
            (
                "excluded-b",
                vec![(
                    "x.json",
                    r#"{"excluded":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}"#,
                )],
            ),
        ] {
            let real = d.path().join(cm).join("..2026_11_22");
            for (k, v) in &keys {
                write(&real, k, v);
                std::os::unix::fs::symlink(format!("..data/{k}"), d.path().join(cm).join(k)).unwrap();
            }
            write(&real, "README.txt", "not json");
            std::os::unix::fs::symlink("..2026_11_22", d.path().join(cm).join("..data")).unwrap();
        }
        let list = ExclusionList::load(&[], &[d.path().to_owned()]).unwrap();
        assert_eq!(list.entries().len(), 3, "{:?}", list.entries());
        assert_eq!(list.sources().len(), 3);
        assert!(list.entries().contains(&"docker.io/library/*".to_owned()));
    }

    #[test]
    fn malformed_sources_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        for (name, text, needle) in [
            ("not-json.json", "{", "expected {\"excluded\""),
            ("wrong-key.json", r#"{"exclude":["x"]}"#, "unknown field `exclude`"),
            ("bad-pattern.json", r#"{"excluded":["ok", "alp*ne"]}"#, "entry 1"),
        ] {
            let p = write(d.path(), name, text);
            let err = ExclusionList::load(std::slice::from_ref(&p), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&p.display().to_string()) && err.contains(needle), "{err}");
        }
        let err = ExclusionList::load(&[d.path().join("missing.json")], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
        let err = ExclusionList::load(&[], &[d.path().join("nodir")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn a_system_list_directory_without_json_fails_instead_of_protecting_nothing() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "system", r#"{"excluded":["registry.k8s.io/*"]}"#);
        assert!(
            ExclusionList::load(&[], &[d.path().to_owned()])
                .unwrap()
                .entries()
                .is_empty()
        );
        let err = ExclusionList::load_required(&[], &[d.path().to_owned()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no *.json file") && err.contains(&d.path().display().to_string()),
            "{err}"
        );
        write(d.path(), "system.json", r#"{"excluded":["registry.k8s.io/*"]}"#);
        let list = ExclusionList::load_required(&[], &[d.path().to_owned()]).unwrap();
        assert_eq!(list.entries(), ["registry.k8s.io/*"]);
    }
}
