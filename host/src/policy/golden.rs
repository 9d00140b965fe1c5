//! Golden cases: a snapshot, settings, and the verdicts a policy must give.
//! Used by `scour policy test` and as a gate before a hot swap. The format is
//! in `docs/snapshot-format.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use scour_policy_sdk::{Action, Context, Decision, Image, Mode, OsInfo, ScanOutcome, ScanReport, Snapshot};
use serde::Deserialize;
use serde_yaml::Value;

use super::{Error, LoadedPolicy};

/// One expected verdict.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Image id.
    pub image: String,
    pub action: Action,
    /// A substring the reason must contain.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A named scenario with its expectations.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// Where the case was read from, for messages.
    pub file: Option<PathBuf>,
    /// Settings text; `None` keeps the policy's own.
    pub settings: Option<String>,
    pub snapshot: Snapshot,
    pub expect: Vec<Expectation>,
    /// The exact set of ids `select` must return, when given.
    pub expect_select: Option<BTreeSet<String>>,
    /// A substring of the error the policy must fail with (settings rejected
    /// or a call error), when given.
    pub expect_error: Option<String>,
}

/// A case file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CaseFileError {
    pub path: String,
    pub message: String,
}

impl Case {
    /// Parses a case file: one case, or a list of cases, in YAML or JSON.
    pub fn parse_file(path: &Path) -> Result<Vec<Case>, CaseFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| CaseFileError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Case::parse_text(&text, path)
    }

    /// Parses the text of a case file; `path` is where it was read from, for
    /// messages and [`Case::file`].
    pub fn parse_text(text: &str, path: &Path) -> Result<Vec<Case>, CaseFileError> {
        let err = |message: String| CaseFileError {
            path: path.display().to_string(),
            message,
        };
        let doc: Value = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
        let docs = match doc {
            Value::Sequence(items) => items,
            other => vec![other],
        };
        docs.into_iter()
            .enumerate()
            .map(|(i, d)| Case::from_value(d, Some(path)).map_err(|m| err(format!("case {}: {m}", i + 1))))
            .collect()
    }

    fn from_value(v: Value, file: Option<&Path>) -> Result<Case, String> {
        let Value::Mapping(mut map) = v else {
            return Err("a case must be a mapping with name, context, images and expect".into());
        };
        let mut take = |key: &str| map.remove(key);
        let name = match take("name") {
            Some(Value::String(s)) => s,
            Some(_) => return Err("`name` must be a string".into()),
            None => return Err("`name` is missing".into()),
        };
        let at = |m: String| format!("{name:?}: {m}");
        let settings = match take("settings") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(
                serde_json::to_string(
                    &serde_yaml::from_value::<serde_json::Value>(other).map_err(|e| at(format!("`settings`: {e}")))?,
                )
                .map_err(|e| at(e.to_string()))?,
            ),
        };
        let expect: Vec<Expectation> = match take("expect") {
            None => Vec::new(),
            Some(v) => serde_yaml::from_value(v).map_err(|e| at(format!("`expect`: {e}")))?,
        };
        let expect_select: Option<BTreeSet<String>> = match take("expectSelect") {
            None => None,
            Some(v) => Some(serde_yaml::from_value(v).map_err(|e| at(format!("`expectSelect`: {e}")))?),
        };
        let expect_error = match take("expectError") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(at("`expectError` must be a string".into())),
        };
        let snapshot: Snapshot = serde_yaml::from_value(Value::Mapping(map)).map_err(|e| at(e.to_string()))?;
        for e in &expect {
            if !snapshot.images.iter().any(|i| i.id == e.image) {
                return Err(at(format!(
                    "expect names image {:?}, which is not in `images`",
                    e.image
                )));
            }
        }
        if expect.is_empty() && expect_select.is_none() && expect_error.is_none() {
            return Err(at(
                "the case expects nothing: add `expect`, `expectSelect` or `expectError`".into(),
            ));
        }
        Ok(Case {
            name,
            file: file.map(Path::to_path_buf),
            settings,
            snapshot,
            expect,
            expect_select,
            expect_error,
        })
    }

    /// Reads every case file (`*.yaml`, `*.yml`, `*.json`) under the given
    /// files and directories, in path order.
    pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Case>, CaseFileError> {
        let mut cases = Vec::new();
        for f in Case::files(paths)? {
            cases.extend(Case::parse_file(&f)?);
        }
        Ok(cases)
    }

    /// Cases shipped with a policy as (file name, text), as a registry
    /// artifact carries them.
    pub fn parse_shipped(files: &[(String, String)]) -> Result<Vec<Case>, CaseFileError> {
        let mut cases = Vec::new();
        for (name, text) in files {
            cases.extend(Case::parse_text(text, Path::new(name))?);
        }
        Ok(cases)
    }

    /// Every case file (`*.yaml`, `*.yml`, `*.json`) under the given files
    /// and directories, in path order; none is an error.
    pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CaseFileError> {
        let mut files = Vec::new();
        for p in paths {
            collect_files(p, &mut files).map_err(|e| CaseFileError {
                path: p.display().to_string(),
                message: e.to_string(),
            })?;
        }
        if files.is_empty() {
            return Err(CaseFileError {
                path: paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                message: "no case files (*.yaml, *.yml, *.json) found".into(),
            });
        }
        Ok(files)
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for e in entries {
            if e.is_dir() {
                collect_files(&e, out)?;
            } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml" | "json")) {
                out.push(e);
            }
        }
        Ok(())
    } else if path.exists() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file or directory",
        ))
    }
}

/// A case that freezes a policy's verdicts on a snapshot: every image's
/// action and exact reason. Reviewed once, it guards against regressions.
pub fn record(
    name: &str,
    settings: &str,
    snapshot: &Snapshot,
    selected: &[String],
    decisions: &[Decision],
) -> Result<String, String> {
    let mut case = serde_yaml::Mapping::new();
    case.insert("name".into(), name.into());
    if !settings.trim().is_empty() {
        // An object reads better as YAML; anything else stays text.
        let value = match serde_json::from_str::<serde_json::Value>(settings) {
            Ok(v @ serde_json::Value::Object(_)) => serde_yaml::to_value(v).map_err(|e| e.to_string())?,
            _ => Value::String(settings.to_owned()),
        };
        case.insert("settings".into(), value);
    }
    let Value::Mapping(body) = serde_yaml::to_value(snapshot).map_err(|e| e.to_string())? else {
        return Err("a snapshot serialises to a mapping".into());
    };
    case.extend(body);
    let expect: Vec<Value> = decisions
        .iter()
        .map(|d| {
            let mut e = serde_yaml::Mapping::new();
            e.insert("image".into(), d.id.clone().into());
            e.insert("action".into(), d.action.as_str().into());
            e.insert("reason".into(), d.reason.clone().into());
            Value::Mapping(e)
        })
        .collect();
    case.insert("expect".into(), Value::Sequence(expect));
    case.insert(
        "expectSelect".into(),
        Value::Sequence(selected.iter().map(|id| id.clone().into()).collect()),
    );
    serde_yaml::to_string(&vec![Value::Mapping(case)]).map_err(|e| e.to_string())
}

/// What running a case showed: empty when it passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseReport {
    pub problems: Vec<String>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs one case against a policy.
pub fn run_case(policy: &LoadedPolicy, case: &Case) -> CaseReport {
    let mut problems = Vec::new();
    let outcome = (|| {
        // A case without settings tests the policy's defaults, whatever
        // settings the candidate runs with.
        let settings = case.settings.as_deref().unwrap_or("");
        let p = if settings == policy.settings() {
            policy.clone()
        } else {
            policy.with_settings(settings)?
        };
        let selected = match &case.expect_select {
            Some(_) => Some(p.select(&case.snapshot.context, &case.snapshot.images)?),
            None => None,
        };
        let decided = p.decide(&case.snapshot.context, &case.snapshot.images)?;
        Ok::<_, Error>((selected, decided))
    })();
    match (outcome, &case.expect_error) {
        (Err(e), Some(want)) => {
            let got = e.to_string();
            if !got.contains(want.as_str()) {
                problems.push(format!("expected an error containing {want:?}, got: {got}"));
            }
        }
        (Err(e), None) => problems.push(e.to_string()),
        (Ok(_), Some(want)) => problems.push(format!(
            "expected an error containing {want:?}, but the policy succeeded"
        )),
        (Ok((selected, decided)), None) => {
            if let (Some(want), Some(got)) = (&case.expect_select, selected) {
                let got: BTreeSet<String> = got.into_iter().collect();
                if &got != want {
                    let missing: Vec<_> = want.difference(&got).collect();
                    let extra: Vec<_> = got.difference(want).collect();
                    problems.push(format!("select: missing {missing:?}, unexpected {extra:?}"));
                }
            }
            for e in &case.expect {
                let Some(d) = decided.decisions.iter().find(|d| d.id == e.image) else {
                    continue;
                };
                let action_ok = d.action == e.action;
                let reason_ok = e.reason.as_deref().is_none_or(|r| d.reason.contains(r));
                if !action_ok || !reason_ok {
                    let want_reason = e
                        .reason
                        .as_deref()
                        .map(|r| format!(" (reason ~ {r:?})"))
                        .unwrap_or_default();
                    problems.push(format!(
                        "{}: expected {}{want_reason}, got {} ({:?})",
                        e.image,
                        e.action.as_str(),
                        d.action.as_str(),
                        d.reason
                    ));
                }
            }
        }
    }
    CaseReport { problems }
}

/// The gate a candidate passes before it may replace a running policy: a
/// built-in probe (a small, ordinary node that every policy must answer
/// without trapping or returning garbage), then the given golden cases.
pub fn verify(policy: &LoadedPolicy, cases: &[Case]) -> Result<(), Error> {
    let probe = probe_snapshot();
    for mode in [Mode::Automatic, Mode::Manual] {
        let ctx = Context {
            mode,
            imagelist: if mode == Mode::Manual {
                vec!["docker.io/library/app:1".into()]
            } else {
                Vec::new()
            },
            ..probe.context.clone()
        };
        policy.select(&ctx, &probe.images)?;
        policy.decide(&ctx, &probe.images)?;
    }
    for case in cases {
        let report = run_case(policy, case);
        if !report.passed() {
            return Err(Error::CaseFailed {
                case: case.name.clone(),
                detail: report.problems.join("; "),
            });
        }
    }
    Ok(())
}

fn probe_snapshot() -> Snapshot {
    let image = |n: u8, tag: &str, in_use: bool, scan: ScanOutcome| Image {
        id: format!("sha256:{}", format!("{n:02x}").repeat(32)),
        tags: vec![tag.to_owned()],
        size: 10 << 20,
        in_use,
        first_seen: 1_700_000_000,
        scan,
        ..Default::default()
    };
    let clean = ScanOutcome::Scanned(ScanReport::new(
        Some(OsInfo {
            family: "alpine".into(),
            name: "3.20.0".into(),
            eol: false,
        }),
        Vec::new(),
    ));
    Snapshot {
        context: Context {
            node: "probe".into(),
            now: 1_700_100_000,
            ..Context::default()
        },
        images: vec![
            image(1, "docker.io/library/app:1", false, clean),
            image(2, "docker.io/library/web:2", true, ScanOutcome::NotScanned),
            image(3, "docker.io/library/job:3", false, ScanOutcome::Failed("probe".into())),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_text_parses_like_a_file_and_errors_name_the_path() {
        let text = "name: one\ncontext: {now: 1}\nimages: [{id: a}]\nexpect: [{image: a, action: keep}]\n";
        let cases = Case::parse_text(text, Path::new("cases/one.yaml")).unwrap();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].name, "one");
        assert_eq!(cases[0].file.as_deref(), Some(Path::new("cases/one.yaml")));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one.yaml");
        std::fs::write(&file, text).unwrap();
        assert_eq!(Case::parse_file(&file).unwrap()[0].snapshot, cases[0].snapshot);
        let err = Case::parse_text("name: two\ncontext: {now: 1}\n", Path::new("two.yaml")).unwrap_err();
        assert_eq!(err.path, "two.yaml");
        assert!(err.message.contains("expects nothing"), "{}", err.message);
    }
}
