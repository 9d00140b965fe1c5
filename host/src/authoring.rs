//! Writing policies: `scour policy new` scaffolds a project in Rust, Python
//! or JavaScript, and `scour policy build` turns one into a component with
//! that language's toolchain (cargo, componentize-py, componentize-js).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The versioned contract every scaffold carries.
pub const WIT: &str = include_str!("../../wit/policy.wit");

const RUST_CARGO: &str = include_str!("cli/scaffold/rust/Cargo.toml");
const RUST_LIB: &str = include_str!("cli/scaffold/rust/src_lib.rs");
const PYTHON_APP: &str = include_str!("cli/scaffold/python/app.py");
const JS_APP: &str = include_str!("cli/scaffold/js/app.mjs");
const CASE: &str = include_str!("cli/scaffold/case.yaml");
const GITIGNORE: &str = include_str!("cli/scaffold/gitignore");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// The language's name, for people.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    /// The project kind in `dir`, by its entry file.
    pub fn detect(dir: &Path) -> Result<Self, AuthoringError> {
        for (file, lang) in [
            ("Cargo.toml", Lang::Rust),
            ("app.py", Lang::Python),
            ("app.mjs", Lang::Js),
        ] {
            if dir.join(file).is_file() {
                return Ok(lang);
            }
        }
        Err(AuthoringError::NotAProject(dir.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    #[error("{0:?} is not a usable policy name: use lowercase letters, digits and '-', starting with a letter")]
    BadName(String),
    #[error("{} already exists and is not empty", .0.display())]
    Exists(PathBuf),
    #[error("{} is not a policy project: it has no Cargo.toml, app.py or app.mjs", .0.display())]
    NotAProject(PathBuf),
    #[error("{tool} not found{hint}")]
    ToolMissing { tool: String, hint: String },
    #[error("{tool} failed ({status}); see its output above")]
    ToolFailed { tool: String, status: String },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuthoringError + '_ {
    move |error| AuthoringError::Io {
        path: path.display().to_string(),
        error,
    }
}

fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn justfile(lang: Lang) -> String {
    format!(
        "# {} policy: `just build` writes policy.wasm, `just test` runs the golden cases.\n\n\
         build:\n    scour policy build .\n\n\
         test: build\n    scour policy test --policy policy.wasm tests\n\n\
         check: build\n    scour policy check --policy policy.wasm\n",
        lang.name()
    )
}

fn readme(name: &str, lang: Lang) -> String {
    format!(
        "# {name}\n\nA scour cleanup policy in {}. `wit/policy.wit` is the contract it implements.\n\n\
         ```sh\n\
         scour policy build .                                  # writes policy.wasm\n\
         scour policy test --policy policy.wasm tests          # runs the golden cases\n\
         scour policy eval --policy policy.wasm --input node.yaml   # on a recorded node\n\
         ```\n\n\
         See scour's docs/writing-policies.md for the whole workflow, from a snapshot to a ConfigMap.\n",
        lang.name()
    )
}

/// Writes a new project named `name` in `dir`, which must not exist or be
/// empty. Returns the files written.
pub fn scaffold(lang: Lang, name: &str, dir: &Path) -> Result<Vec<PathBuf>, AuthoringError> {
    if !valid_name(name) {
        return Err(AuthoringError::BadName(name.to_owned()));
    }
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(AuthoringError::Exists(dir.to_owned()));
    }
    let fill = |template: &str| template.replace("{{name}}", name);
    let mut files: Vec<(&str, String)> = vec![
        ("wit/policy.wit", WIT.to_owned()),
        ("tests/cases.yaml", fill(CASE)),
        ("Justfile", justfile(lang)),
        ("README.md", readme(name, lang)),
        (".gitignore", GITIGNORE.to_owned()),
    ];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml", fill(RUST_CARGO)));
            files.push(("src/lib.rs", fill(RUST_LIB)));
        }
        Lang::Python => files.push(("app.py", fill(PYTHON_APP))),
        Lang::Js => files.push(("app.mjs", fill(JS_APP))),
    }
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// Where the toolchains are; each defaults to its name on PATH.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub cargo: PathBuf,
    /// Rust builds go here instead of cargo's default (`CARGO_TARGET_DIR` still applies when unset).
    pub cargo_target_dir: Option<PathBuf>,
    pub componentize_py: PathBuf,
    pub componentize_js: PathBuf,
}

impl Toolchain {
    fn cargo(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        if let Some(dir) = &self.cargo_target_dir {
            cmd.env("CARGO_TARGET_DIR", dir);
        }
        cmd
    }
}

impl Default for Toolchain {
    fn default() -> Self {
        Self {
            cargo: std::env::var_os("CARGO").map_or_else(|| "cargo".into(), PathBuf::from),
            cargo_target_dir: None,
            componentize_py: "componentize-py".into(),
            componentize_js: "componentize-js".into(),
        }
    }
}

fn run(mut cmd: Command, tool: &str, hint: &str) -> Result<(), AuthoringError> {
    let status = cmd.status().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AuthoringError::ToolMissing {
            tool: tool.to_owned(),
            hint: hint.to_owned(),
        },
        _ => AuthoringError::ToolFailed {
            tool: tool.to_owned(),
            status: e.to_string(),
        },
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(AuthoringError::ToolFailed {
            tool: tool.to_owned(),
            status: status.to_string(),
        })
    }
}

/// Builds the project in `dir` into a component at `out` (default
/// `dir/policy.wasm`) and returns its path. The toolchain's own output goes
/// to the terminal.
pub fn build(dir: &Path, out: Option<&Path>, tools: &Toolchain) -> Result<PathBuf, AuthoringError> {
    // Tools run inside the project; every path handed to them is absolute.
    let dir = &dir.canonicalize().map_err(io(dir))?;
    let lang = Lang::detect(dir)?;
    let out = out.map_or_else(|| dir.join("policy.wasm"), Path::to_path_buf);
    let out = if out.is_absolute() {
        out
    } else {
        std::env::current_dir().map_err(io(dir))?.join(out)
    };
    let wit = dir.join("wit");
    match lang {
        Lang::Rust => {
            let manifest = dir.join("Cargo.toml");
            let mut cmd = tools.cargo();
            cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(&manifest);
            run(cmd, "cargo", " (install Rust, then `rustup target add wasm32-wasip2`)")?;
            let artifact = rust_artifact(&manifest, tools)?;
            std::fs::copy(&artifact, &out).map_err(io(&artifact))?;
        }
        Lang::Python => {
            let mut cmd = Command::new(&tools.componentize_py);
            cmd.current_dir(dir)
                .arg("-d")
                .arg(&wit)
                .args(["-w", "policy", "componentize", "app", "-o"])
                .arg(&out);
            run(
                cmd,
                "componentize-py",
                " (pip install componentize-py==0.25.1, or pass --componentize-py)",
            )?;
        }
        Lang::Js => {
            let mut cmd = Command::new(&tools.componentize_js);
            cmd.arg(dir.join("app.mjs"))
                .arg("--wit")
                .arg(&wit)
                .args(["--world-name", "policy", "-o"])
                .arg(&out)
                // Without these the component imports wasi:http, which the
                // sandbox does not provide.
                .args(["-d", "http", "-d", "fetch-event"]);
            run(
                cmd,
                "componentize-js",
                " (npm install @bytecodealliance/componentize-js@0.23.0, or pass --componentize-js)",
            )?;
        }
    }
    Ok(out)
}

/// The cdylib `cargo build` wrote for `manifest`, per `cargo metadata`.
fn rust_artifact(manifest: &Path, tools: &Toolchain) -> Result<PathBuf, AuthoringError> {
    let output = tools
        .cargo()
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .output()
        .map_err(io(manifest))?;
    let failed = |why: &str| AuthoringError::ToolFailed {
        tool: "cargo metadata".into(),
        status: why.to_owned(),
    };
    if !output.status.success() {
        return Err(failed(&String::from_utf8_lossy(&output.stderr)));
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| failed(&e.to_string()))?;
    let target_dir = meta
        .get("target_directory")
        .and_then(|v| v.as_str())
        .ok_or_else(|| failed("no target_directory"))?;
    let lib = meta
        .pointer("/packages/0/targets")
        .and_then(|v| v.as_array())
        .and_then(|t| {
            t.iter()
                .find(|t| t.get("crate_types").is_some_and(|c| c.to_string().contains("cdylib")))
        })
        .and_then(|t| t.get("name"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| failed("the package has no cdylib target"))?;
    Ok(Path::new(target_dir)
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", lib.replace('-', "_"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["my-policy", "retention2", "a"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "My", "9lives", "with space", "trailing-", "under_score"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn scaffolds_hold_the_contract_a_case_and_a_recipe() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path().join("p");
            let files = scaffold(lang, "demo-policy", &dir).unwrap();
            assert!(files.iter().any(|f| f.ends_with("wit/policy.wit")));
            assert_eq!(std::fs::read_to_string(dir.join("wit/policy.wit")).unwrap(), WIT);
            assert!(
                std::fs::read_to_string(dir.join("tests/cases.yaml"))
                    .unwrap()
                    .contains("demo-policy")
            );
            assert!(
                std::fs::read_to_string(dir.join("Justfile"))
                    .unwrap()
                    .contains("scour policy build .")
            );
            assert_eq!(Lang::detect(&dir).unwrap(), lang);
            assert!(matches!(
                scaffold(lang, "demo-policy", &dir),
                Err(AuthoringError::Exists(_))
            ));
        }
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(Lang::detect(d.path()), Err(AuthoringError::NotAProject(_))));
        assert!(matches!(
            scaffold(Lang::Rust, "Bad_Name", d.path()),
            Err(AuthoringError::BadName(_))
        ));
    }
}
