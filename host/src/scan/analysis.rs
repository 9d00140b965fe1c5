//! Image analyses kept between passes, one per image id, under
//! `<state_dir>/analyses/`. An analysis depends on the image and on how it
//! was analysed (Trivy's version, `--pkg-types`), never on the
//! vulnerability DB, so after a DB update a pass matches the kept analysis
//! against the new DB (`trivy sbom`) without reading the image again.
//!
//! The first scan of an image keeps its Trivy report without findings
//! (`<id>.trivy.json`: one Trivy run, reading the image, gives both the
//! findings and the analysis). It becomes a CycloneDX SBOM (`<id>.cdx.json`,
//! `trivy convert`, no DB): in the same pass for an image of 16 MiB or more,
//! so a pass after a DB update only matches it; at its first match for a
//! smaller one (where the convert would cost as much as its scan) or when
//! the convert failed.
//!
//! Bounded on disk by the node's images: entries of images no longer on the
//! node are deleted after each pass, and a new analysis key deletes them all.
//! Without a state dir the analyses live in a temp dir for one pass.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

const DIR: &str = "analyses";
const KEY_FILE: &str = "KEY";
/// The two forms of an analysis, by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A Trivy JSON report without findings, as the first scan leaves it.
    Report,
    /// A CycloneDX SBOM, as `trivy sbom` reads it.
    Sbom,
}

impl Form {
    fn suffix(self) -> &'static str {
        match self {
            Form::Report => ".trivy.json",
            Form::Sbom => ".cdx.json",
        }
    }

    fn of(path: &Path) -> Option<Form> {
        let name = path.file_name()?.to_str()?;
        [Form::Report, Form::Sbom]
            .into_iter()
            .find(|f| name.ends_with(f.suffix()) && !name.starts_with('.'))
    }
}

#[derive(Debug)]
pub struct AnalysisStore {
    dir: PathBuf,
    /// Holds the dir of a store without a state dir until the pass ends.
    _temp: Option<tempfile::TempDir>,
}

impl AnalysisStore {
    /// Opens `<state_dir>/analyses` for `key`, emptying it when its entries
    /// were made under another key.
    pub fn open(state_dir: Option<&Path>, key: &str) -> io::Result<Self> {
        let Some(state_dir) = state_dir else {
            let temp = tempfile::Builder::new().prefix("scour-analyses-").tempdir()?;
            return Ok(Self {
                dir: temp.path().to_owned(),
                _temp: Some(temp),
            });
        };
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let key_file = dir.join(KEY_FILE);
        let current = std::fs::read_to_string(&key_file).unwrap_or_default();
        if current != key {
            if !current.is_empty() {
                tracing::info!(phase = "scan", old = %current, new = %key, "image analyses were made another way; analysing again");
            }
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.file_name().is_some_and(|n| n != KEY_FILE) {
                    remove_quietly(&path);
                }
            }
            crate::fsutil::write_atomically(&key_file, key.as_bytes())?;
        }
        Ok(Self { dir, _temp: None })
    }

    /// The store earlier passes left under `state_dir`, whatever its key:
    /// enough to prune it on a pass that scanned nothing.
    pub fn existing(state_dir: Option<&Path>) -> Option<Self> {
        let dir = state_dir?.join(DIR);
        dir.is_dir().then_some(Self { dir, _temp: None })
    }

    /// Where the analysis of image `id` in `form` lives; `None` for an id
    /// that is not `algorithm:hex` (containerd) or bare hex (CRI-O) and so
    /// cannot name a file safely.
    pub fn path(&self, id: &str, form: Form) -> Option<PathBuf> {
        Some(self.dir.join(format!("{}{}", file_stem(id)?, form.suffix())))
    }

    /// A fresh path to write an analysis to before [`AnalysisStore::keep`]
    /// moves it into place, so a half-written file is never taken for one.
    pub fn scratch(&self, id: &str) -> Option<PathBuf> {
        Some(
            self.dir
                .join(format!(".{}.{}.partial", file_stem(id)?, std::process::id())),
        )
    }

    /// Moves a finished analysis from `scratch` into place as `form`, and
    /// drops the other form.
    pub fn keep(&self, id: &str, form: Form, scratch: &Path) -> io::Result<()> {
        let (Some(done), Some(other)) = (
            self.path(id, form),
            self.path(id, if form == Form::Sbom { Form::Report } else { Form::Sbom }),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not an image id: {id}"),
            ));
        };
        std::fs::rename(scratch, done)?;
        remove_quietly(&other);
        Ok(())
    }

    /// Whether an analysis of `id` is kept, in either form.
    pub fn has(&self, id: &str) -> bool {
        [Form::Sbom, Form::Report]
            .into_iter()
            .any(|f| self.path(id, f).is_some_and(|p| p.is_file()))
    }

    /// Drops the analysis of `id` in `form`.
    pub fn discard(&self, id: &str, form: Form) {
        if let Some(p) = self.path(id, form) {
            remove_quietly(&p);
        }
    }

    /// Deletes the analyses of images not in `present`, and leftovers of
    /// interrupted writes.
    pub fn retain(&self, present: &HashSet<&str>) {
        let keep: HashSet<PathBuf> = present
            .iter()
            .flat_map(|id| [self.path(id, Form::Sbom), self.path(id, Form::Report)])
            .flatten()
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_key = path.file_name().is_some_and(|n| n == KEY_FILE);
            if !is_key && !keep.contains(&path) {
                remove_quietly(&path);
            }
        }
    }

    /// Analyses kept, and their size on disk.
    pub fn usage(&self) -> (usize, u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (0, 0);
        };
        entries
            .flatten()
            .filter(|e| Form::of(&e.path()).is_some())
            .filter_map(|e| e.metadata().ok())
            .fold((0, 0), |(n, bytes), m| (n + 1, bytes.saturating_add(m.len())))
    }
}

/// Whether a file holds an analysis Trivy can match.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Usable,
    Missing(String),
    /// There, but not an SBOM: corrupt, truncated or replaced.
    Unusable(String),
}

/// `algorithm-hex` for `algorithm:hex`, or the bare hex id itself.
fn file_stem(id: &str) -> Option<String> {
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    match id.split_once(':') {
        Some((algorithm, hex)) => (plain(algorithm) && plain(hex)).then(|| format!("{algorithm}-{hex}")),
        None => plain(id).then(|| id.to_owned()),
    }
}

/// Reads `path` enough to tell an analysis in `form` from anything else, so
/// that a corrupt one is made again rather than failing the image's scan
/// on every pass.
pub fn check(path: &Path, form: Form) -> Check {
    #[derive(serde::Deserialize)]
    struct Sbom {
        #[serde(rename = "bomFormat")]
        format: String,
        metadata: Metadata,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        component: Component,
    }
    #[derive(serde::Deserialize)]
    struct Component {
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(serde::Deserialize)]
    struct Report {
        #[serde(rename = "SchemaVersion")]
        schema: u32,
        #[serde(rename = "ArtifactType")]
        kind: String,
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Check::Missing("no analysis".into()),
        Err(e) => return Check::Unusable(format!("cannot read {}: {e}", path.display())),
    };
    match form {
        Form::Sbom => match serde_json::from_slice::<Sbom>(&bytes) {
            Ok(s) if s.format == "CycloneDX" && s.metadata.component.kind == "container" => Check::Usable,
            Ok(s) => Check::Unusable(format!(
                "not the SBOM of an image (bomFormat {:?}, component type {:?})",
                s.format, s.metadata.component.kind
            )),
            Err(e) => Check::Unusable(format!("not a CycloneDX SBOM: {e}")),
        },
        Form::Report => match serde_json::from_slice::<Report>(&bytes) {
            Ok(r) if r.schema == 2 && r.kind == "container_image" => Check::Usable,
            Ok(r) => Check::Unusable(format!(
                "not Trivy's report on an image (SchemaVersion {}, ArtifactType {:?})",
                r.schema, r.kind
            )),
            Err(e) => Check::Unusable(format!("not a Trivy report: {e}")),
        },
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(phase = "scan", path = %path.display(), error = %e, "cannot delete a kept image analysis");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaa";
    const B: &str = "sha256:bbbb";

    fn write(store: &AnalysisStore, id: &str, form: Form) {
        let scratch = store.scratch(id).unwrap();
        std::fs::write(&scratch, b"{}").unwrap();
        store.keep(id, form, &scratch).unwrap();
    }

    #[test]
    fn analyses_persist_under_one_key_and_a_new_key_clears_them() {
        let d = tempfile::tempdir().unwrap();
        let store = AnalysisStore::open(Some(d.path()), "trivy 1 pkg-types []").unwrap();
        write(&store, A, Form::Report);
        drop(store);
        let store = AnalysisStore::open(Some(d.path()), "trivy 1 pkg-types []").unwrap();
        assert!(store.has(A));
        assert_eq!(store.usage(), (1, 2));
        write(&store, A, Form::Sbom);
        assert_eq!(store.usage(), (1, 2), "the SBOM replaced the report");
        assert!(store.path(A, Form::Sbom).unwrap().is_file());
        let store = AnalysisStore::open(Some(d.path()), "trivy 2 pkg-types []").unwrap();
        assert!(!store.has(A), "another Trivy version analyses again");
    }

    #[test]
    fn analyses_of_images_gone_from_the_node_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let store = AnalysisStore::open(Some(d.path()), "k").unwrap();
        write(&store, A, Form::Sbom);
        write(&store, B, Form::Report);
        std::fs::write(store.scratch(A).unwrap(), b"half").unwrap();
        store.retain(&HashSet::from([B]));
        assert!(!store.has(A) && store.has(B));
        assert_eq!(store.usage().0, 1, "the interrupted write is gone too");
        assert!(d.path().join(DIR).join(KEY_FILE).is_file());
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_not_an_analysis() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.cdx.json");
        assert!(matches!(check(&p, Form::Sbom), Check::Missing(_)));
        let image = r#"{"bomFormat":"CycloneDX","specVersion":"1.7","metadata":{"component":{"type":"container","name":"x"}},"components":[]}"#;
        std::fs::write(&p, image).unwrap();
        assert_eq!(check(&p, Form::Sbom), Check::Usable);
        assert!(
            matches!(check(&p, Form::Report), Check::Unusable(_)),
            "an SBOM is not a report"
        );
        let report = r#"{"SchemaVersion":2,"ArtifactName":"x","ArtifactType":"container_image","Results":[]}"#;
        std::fs::write(&p, report).unwrap();
        assert_eq!(check(&p, Form::Report), Check::Usable);
        std::fs::write(&p, report.replace("container_image", "filesystem")).unwrap();
        assert!(matches!(check(&p, Form::Report), Check::Unusable(_)));
        for bad in [
            &image[..image.len() / 2],
            "",
            "null",
            r#"{"bomFormat":"SPDX","metadata":{"component":{"type":"container"}}}"#,
            r#"{"bomFormat":"CycloneDX","metadata":{"component":{"type":"library"}}}"#,
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(matches!(check(&p, Form::Sbom), Check::Unusable(_)), "{bad:?}");
        }
    }

    #[test]
    fn an_id_that_is_not_a_digest_names_no_file() {
        let d = tempfile::tempdir().unwrap();
        let store = AnalysisStore::open(Some(d.path()), "k").unwrap();
        assert!(
            store.path("0123abcd", Form::Sbom).is_some(),
            "CRI-O's bare hex ids are fine"
        );
        for id in [
            "../../etc/passwd",
            "sha256:",
            "sha256:../x",
            ":abc",
            "sha256:a/b",
            "",
            "a:b:c",
        ] {
            assert!(store.path(id, Form::Sbom).is_none(), "{id}");
            assert!(store.scratch(id).is_none(), "{id}");
            assert!(!store.has(id));
        }
        assert!(store.keep("x/../y", Form::Sbom, Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn without_a_state_dir_analyses_live_for_one_pass() {
        let store = AnalysisStore::open(None, "k").unwrap();
        write(&store, A, Form::Sbom);
        let dir = store.dir.clone();
        assert!(dir.is_dir());
        drop(store);
        assert!(!dir.exists());
    }
}
