//! `scour policy check | eval | test`: the offline policy harness.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use scour_policy_sdk::{Action, Snapshot};
use serde_json::json;

use super::{EXIT_FAILURE, Output};
use crate::authoring::{Lang, Toolchain, scaffold};
use crate::output::{Table, short_id};
use crate::policy::golden::{Case, run_case};
use crate::policy::oci::{self, PolicyRef, RegistryOptions};
use crate::policy::{ArtifactCache, Budget, Limits, LoadedPolicy, PolicyEngine, PolicySource, WORLD};
use crate::units::{format_bytes, parse_bytes, parse_duration};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Compile and type-check a policy, validate its settings, and describe it.
    Check {
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        settings: SettingsArg,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run a policy on a node snapshot and show each image's verdict.
    Eval {
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        settings: SettingsArg,
        /// Snapshot file (JSON or YAML), e.g. from `scour worker --snapshot-out`.
        #[arg(long, value_name = "SNAPSHOT")]
        input: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Also write a golden case that expects exactly these verdicts, for
        /// `scour policy test`. Review it before you commit it.
        #[arg(long, value_name = "FILE")]
        record_case: Option<PathBuf>,
        /// The recorded case's name [default: the snapshot's node and file].
        #[arg(long, value_name = "NAME", requires = "record_case")]
        case_name: Option<String>,
    },
    /// Write a new policy project (Rust, Python or JavaScript) that passes its own golden case.
    New {
        /// The policy's language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Project name: lowercase letters, digits and '-'.
        name: String,
        /// Where to create the project [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Build a policy project into a component (cargo, componentize-py or componentize-js) and check it.
    Build {
        /// The project directory.
        #[arg(default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        /// Where to write the component [default: DIR/policy.wasm].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// componentize-py for Python projects.
        #[arg(
            long,
            env = "SCOUR_COMPONENTIZE_PY",
            default_value = "componentize-py",
            value_name = "PATH"
        )]
        componentize_py: PathBuf,
        /// componentize-js for JavaScript projects.
        #[arg(
            long,
            env = "SCOUR_COMPONENTIZE_JS",
            default_value = "componentize-js",
            value_name = "PATH"
        )]
        componentize_js: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Print a ConfigMap manifest holding a policy (binaryData) and its digest, for `kubectl apply -f -`.
    /// Its settings belong in eraser-manager-config (scour.policy.settings).
    Configmap {
        #[command(flatten)]
        policy: PolicyArgs,
        /// The ConfigMap's name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Its namespace: scour's.
        #[arg(long, default_value = "kube-system", value_name = "NAMESPACE")]
        namespace: String,
    },
    /// Publish a policy to an OCI registry, with its golden cases, and print
    /// the digest-pinned reference for scour.policy.module.
    ///
    /// The policy is loaded and its cases run first: only a policy that
    /// passes them is pushed. The artifact is laid out as Kubewarden and
    /// wasm-to-oci lay out Wasm: config application/vnd.wasm.config.v1+json,
    /// the component as one application/vnd.wasm.content.layer.v1+wasm
    /// layer, and each case file as an application/vnd.scour.policy.cases.v1+yaml
    /// layer, which the controller runs before it rolls the policy out.
    Push {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Where to: registry://HOST[:PORT]/REPO:TAG.
        #[arg(value_name = "registry://HOST/REPO:TAG")]
        to: String,
        /// Golden cases (files or directories) to run now and ship with the policy.
        #[arg(long, value_name = "CASE_FILE_OR_DIR")]
        cases: Vec<PathBuf>,
        /// Instruction budget per call for the cases.
        #[arg(long, env = "SCOUR_POLICY_FUEL", default_value_t = Limits::DEFAULT_FUEL)]
        fuel: u64,
    },
    /// Run golden cases against a policy; exits non-zero if any fails.
    Test {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Instruction budget per call. Fuel makes runs deterministic: a case
        /// fails the same way on every machine.
        #[arg(long, env = "SCOUR_POLICY_FUEL", default_value_t = Limits::DEFAULT_FUEL)]
        fuel: u64,
        /// Case files, or directories searched for *.yaml, *.yml and *.json.
        #[arg(required = true, value_name = "CASE_FILE_OR_DIR")]
        cases: Vec<PathBuf>,
    },
}

/// Which policy to run, and its sandbox limits.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Policy component: a .wasm file, or registry://HOST/REPO:TAG@sha256:HEX
    /// (pulled once, checked against the digest). Without it, the built-in
    /// default policy runs.
    #[arg(long, env = "SCOUR_POLICY", value_name = "P.wasm|registry://…")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Where pulled registry policies are kept [default: pulled/ in the
    /// compiled-policy cache]; the worker keeps them in its state directory.
    #[arg(skip)]
    pub pulled_dir: Option<PathBuf>,
    /// Wall-clock deadline for each policy call.
    #[arg(long, env = "SCOUR_POLICY_TIMEOUT", default_value = "2s", value_parser = parse_duration, value_name = "DUR")]
    pub policy_timeout: Duration,
    /// Memory cap for each policy call, e.g. 64MiB.
    #[arg(long, env = "SCOUR_POLICY_MEMORY", default_value = "64MiB", value_parser = parse_bytes, value_name = "SIZE")]
    pub policy_memory: u64,
    /// Where compiled policies are cached [default: $XDG_CACHE_HOME/scour/policies;
    /// for `scour worker`, policy-cache/ in --state-dir].
    #[arg(long, env = "SCOUR_POLICY_CACHE_DIR", value_name = "DIR")]
    pub policy_cache_dir: Option<PathBuf>,
    /// Size budget of the compiled-policy cache; the least recently used ones
    /// beyond it are deleted.
    #[arg(long, env = "SCOUR_POLICY_CACHE_SIZE", default_value = "512MiB", value_parser = parse_bytes, value_name = "SIZE")]
    pub policy_cache_size: u64,
    /// Compile the policy every time instead of using the cache.
    #[arg(long, env = "SCOUR_NO_POLICY_CACHE")]
    pub no_policy_cache: bool,
}

/// How to reach the registry of a `registry://` policy.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryArgs {
    /// Registry credentials: a Docker config JSON file, such as a pull
    /// secret's .dockerconfigjson or ~/.docker/config.json (repeatable; the
    /// first with an entry for the registry's host is used).
    #[arg(long, env = "SCOUR_REGISTRY_AUTH", value_name = "FILE", value_delimiter = ',')]
    pub registry_auth: Vec<PathBuf>,
    /// A registry (HOST[:PORT]) reached over plain HTTP instead of HTTPS (repeatable).
    #[arg(long, env = "SCOUR_INSECURE_REGISTRY", value_name = "HOST", value_delimiter = ',')]
    pub insecure_registry: Vec<String>,
}

impl RegistryArgs {
    /// The options for pulls and pushes; pulled policies are kept in `cache_dir`.
    pub fn options(&self, cache_dir: Option<PathBuf>) -> Result<RegistryOptions> {
        let mut opts = RegistryOptions {
            insecure: self.insecure_registry.clone(),
            cache_dir,
            ..RegistryOptions::default()
        };
        opts.read_auth_files(&self.registry_auth)?;
        Ok(opts)
    }
}

#[derive(Debug, Clone, Args)]
pub struct SettingsArg {
    /// Policy settings file (JSON for the default policy). Without it the
    /// policy uses its defaults.
    #[arg(long, env = "SCOUR_SETTINGS", value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Policy settings as JSON text, instead of --settings FILE (how the
    /// controller hands a worker the settings it vetted).
    #[arg(long, env = "SCOUR_SETTINGS_JSON", value_name = "JSON", conflicts_with = "settings")]
    pub settings_json: Option<String>,
}

impl SettingsArg {
    /// Whether settings were given at all.
    pub fn given(&self) -> bool {
        self.settings.is_some() || self.settings_json.is_some()
    }

    pub fn read(&self) -> Result<String> {
        match (&self.settings, &self.settings_json) {
            (Some(p), _) => std::fs::read_to_string(p).with_context(|| format!("reading settings {}", p.display())),
            (None, Some(text)) => Ok(text.clone()),
            (None, None) => Ok(String::new()),
        }
    }
}

impl PolicyArgs {
    pub fn source(&self) -> Result<PolicySource> {
        Ok(PolicySource::from_option(self.policy.clone())?)
    }

    fn cache(&self) -> Option<ArtifactCache> {
        if self.no_policy_cache {
            return None;
        }
        self.cache_dir()
            .map(|dir| ArtifactCache::with_max_bytes(dir, self.policy_cache_size))
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        self.policy_cache_dir.clone().or_else(ArtifactCache::default_dir)
    }

    /// Registry options; pulled policies are kept beside the compiled ones.
    pub fn registry_options(&self) -> Result<RegistryOptions> {
        let pulled = self
            .pulled_dir
            .clone()
            .or_else(|| self.cache_dir().map(|dir| dir.join(PULLED_DIR)));
        self.registry.options(pulled)
    }

    /// The policy's bytes, pulled when it lives in a registry.
    pub fn read(&self) -> Result<std::borrow::Cow<'static, [u8]>> {
        Ok(self.source()?.read(&self.registry_options()?)?)
    }

    /// Production limits: the deadline and memory cap from the flags.
    pub fn limits(&self) -> Limits {
        Limits {
            budget: Budget::Deadline(self.policy_timeout),
            memory_bytes: self.policy_memory as usize,
        }
    }

    pub fn engine(&self, limits: Limits) -> Result<PolicyEngine> {
        Ok(PolicyEngine::new(limits, self.cache())?)
    }

    pub fn load(&self, limits: Limits, settings: &str) -> Result<LoadedPolicy> {
        let engine = self.engine(limits)?;
        let source = self.source()?;
        let bytes = source.read(&self.registry_options()?)?;
        Ok(LoadedPolicy::load(&engine, &bytes, &source.origin(), settings)?)
    }
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check {
            policy,
            settings,
            output,
        } => check(&policy, &settings, output),
        PolicyCommand::Eval {
            policy,
            settings,
            input,
            output,
            record_case,
            case_name,
        } => {
            let record = record_case.map(|file| (file, case_name));
            eval(&policy, &settings, &input, output, record)
        }
        PolicyCommand::Test { policy, fuel, cases } => test(&policy, fuel, &cases),
        PolicyCommand::Push {
            policy,
            to,
            cases,
            fuel,
        } => push(&policy, &to, &cases, fuel),
        PolicyCommand::New { lang, name, dir } => new(lang, &name, dir),
        PolicyCommand::Configmap {
            policy,
            name,
            namespace,
        } => configmap(&policy, &name, &namespace),
        PolicyCommand::Build {
            dir,
            out,
            componentize_py,
            componentize_js,
            policy,
        } => build(&dir, out.as_deref(), componentize_py, componentize_js, &policy),
    }
}

/// Pulled registry policies, under the compiled-policy cache directory.
const PULLED_DIR: &str = "pulled";

/// The key of the component in a policy ConfigMap, and of its digest.
pub const POLICY_KEY: &str = "policy.wasm";
pub const PIN_KEY: &str = "policy.sha256";
/// Kubernetes refuses a ConfigMap whose data adds up to more than 1 MiB.
const CONFIGMAP_LIMIT: usize = 1024 * 1024;

fn configmap(args: &PolicyArgs, name: &str, namespace: &str) -> Result<ExitCode> {
    use base64::Engine as _;
    // Only a policy that loads is worth shipping.
    let p = args.load(args.limits(), "")?;
    let bytes = args.read()?;
    if bytes.len() + 128 > CONFIGMAP_LIMIT {
        anyhow::bail!(
            "the policy is {} and a ConfigMap holds at most 1 MiB; publish it to a registry with `scour policy push` \
             and set scour.policy.module (see docs/writing-policies.md)",
            crate::units::format_bytes(bytes.len() as u64)
        );
    }
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "scour"},
            "annotations": {
                "scour.dev/policy": format!("{} {}", p.info().name, p.info().version),
                "scour.dev/policy-sha256": p.digest(),
            },
        },
        "binaryData": {POLICY_KEY: base64::engine::general_purpose::STANDARD.encode(&*bytes)},
        "data": {PIN_KEY: p.digest()},
    });
    println!(
        "# scour policy {} {}; pin it in eraser-manager-config:\n#   scour:\n#     policy:\n#       configMap: {name}\n#       sha256: \"{}\"",
        p.info().name,
        p.info().version,
        p.digest()
    );
    print!("{}", serde_yaml::to_string(&manifest)?);
    Ok(ExitCode::SUCCESS)
}

fn new(lang: Lang, name: &str, dir: Option<PathBuf>) -> Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = scaffold(lang, name, &dir)?;
    println!("created a {} policy in {}:", lang.name(), dir.display());
    for f in &files {
        println!("  {}", f.strip_prefix(&dir).unwrap_or(f).display());
    }
    println!(
        "\nnext:\n  scour policy build {0}\n  scour policy test --policy {0}/policy.wasm {0}/tests",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn build(dir: &Path, out: Option<&Path>, py: PathBuf, js: PathBuf, args: &PolicyArgs) -> Result<ExitCode> {
    let tools = Toolchain {
        componentize_py: py,
        componentize_js: js,
        ..Toolchain::default()
    };
    let started = std::time::Instant::now();
    let path = crate::authoring::build(dir, out, &tools)?;
    let built_in = started.elapsed();
    // A build is only done when scour can load what it built.
    let engine = args.engine(args.limits())?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let p = LoadedPolicy::load(&engine, &bytes, &path.display().to_string(), "")
        .with_context(|| format!("{} was built but is not a usable policy", path.display()))?;
    println!(
        "built {} ({} {}, {}, {}) in {:.1} s",
        path.display(),
        p.info().name,
        p.info().version,
        format_bytes(p.size() as u64),
        p.digest(),
        built_in.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn check(args: &PolicyArgs, settings: &SettingsArg, output: Output) -> Result<ExitCode> {
    let text = settings.read()?;
    let p = args.load(args.limits(), &text)?;
    let (exports, imports) = p.describe_component();
    let stats = p.stats();
    let settings_note = match &settings.settings {
        Some(path) => format!("ok ({})", path.display()),
        None => "ok (policy defaults)".to_owned(),
    };
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "origin": p.origin(),
                "name": p.info().name,
                "version": p.info().version,
                "digest": p.digest(),
                "sizeBytes": p.size(),
                "compileMillis": stats.compile.as_secs_f64() * 1e3,
                "fromCache": stats.from_cache,
                "world": WORLD,
                "exports": exports,
                "imports": imports,
                "maxFindings": p.info().max_findings,
                "settings": "ok",
            }))?
        ),
        Output::Table => {
            let mut t = Table::new(["FIELD", "VALUE"]);
            t.row(["policy".to_owned(), p.origin().to_owned()]);
            t.row(["name".to_owned(), format!("{} {}", p.info().name, p.info().version)]);
            t.row(["digest", p.digest()]);
            t.row([
                "size".to_owned(),
                format!("{} ({} bytes)", format_bytes(p.size() as u64), p.size()),
            ]);
            t.row([
                "compile".to_owned(),
                format!(
                    "{:.1} ms{}",
                    stats.compile.as_secs_f64() * 1e3,
                    if stats.from_cache { " (from cache)" } else { "" }
                ),
            ]);
            t.row(["world", WORLD]);
            t.row(["exports".to_owned(), exports.join(", ")]);
            t.row(["imports".to_owned(), imports.join(", ")]);
            t.row(["findings".to_owned(), format!("{} per image", p.info().max_findings)]);
            t.row(["settings".to_owned(), settings_note]);
            print!("{}", t.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a snapshot as JSON (by extension) or YAML.
pub fn read_snapshot(path: &Path) -> Result<Snapshot> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading snapshot {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(anyhow::Error::from)
    } else {
        serde_yaml::from_str(&text).map_err(anyhow::Error::from)
    };
    parsed.with_context(|| format!("snapshot {} is not valid", path.display()))
}

fn eval(
    args: &PolicyArgs,
    settings: &SettingsArg,
    input: &Path,
    output: Output,
    record: Option<(PathBuf, Option<String>)>,
) -> Result<ExitCode> {
    let snapshot = read_snapshot(input)?;
    let settings_text = settings.read()?;
    let p = args.load(args.limits(), &settings_text)?;
    let selected = p.select(&snapshot.context, &snapshot.images)?;
    let decided = p.decide(&snapshot.context, &snapshot.images)?;
    if let Some((file, name)) = record {
        if file.exists() {
            anyhow::bail!("{} exists; remove it or choose another file", file.display());
        }
        let from = input
            .file_name()
            .map_or_else(|| input.display().to_string(), |f| f.to_string_lossy().into_owned());
        let name = name.unwrap_or_else(|| match snapshot.context.node.as_str() {
            "" => format!("recorded from {from}"),
            node => format!("node {node}, recorded from {from}"),
        });
        let text = crate::policy::golden::record(&name, &settings_text, &snapshot, &selected, &decided.decisions)
            .map_err(anyhow::Error::msg)?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        eprintln!("recorded case {name:?} in {}", file.display());
    }
    let removals = decided.decisions.iter().filter(|d| d.action == Action::Remove).count();
    match output {
        Output::Json => {
            let decisions: Vec<_> = decided
                .decisions
                .iter()
                .zip(&snapshot.images)
                .map(|(d, img)| {
                    json!({
                        "id": d.id,
                        "image": img.display_name(),
                        "selected": selected.contains(&d.id),
                        "action": d.action,
                        "reason": d.reason,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "policy": {"name": p.info().name, "version": p.info().version, "digest": decided.policy_digest, "origin": p.origin()},
                    "node": snapshot.context.node,
                    "mode": snapshot.context.mode,
                    "selected": selected,
                    "decisions": decisions,
                }))?
            );
        }
        Output::Table => {
            let mut t = Table::new(["IMAGE", "ID", "SCAN", "ACTION", "REASON"]);
            for (d, img) in decided.decisions.iter().zip(&snapshot.images) {
                t.row([
                    img.display_name(),
                    short_id(&img.id),
                    if selected.contains(&img.id) { "selected" } else { "-" },
                    d.action.as_str(),
                    &d.reason,
                ]);
            }
            print!("{}", t.render());
            println!(
                "\n{} images: {removals} to remove, {} to keep; {} selected for scanning. policy {} {} ({})",
                snapshot.images.len(),
                snapshot.images.len() - removals,
                selected.len(),
                p.info().name,
                p.info().version,
                short_id(&decided.policy_digest),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn push(args: &PolicyArgs, to: &str, paths: &[PathBuf], fuel: u64) -> Result<ExitCode> {
    let to = PolicyRef::parse_unpinned(to).map_err(anyhow::Error::msg)?;
    let mut shipped = Vec::new();
    if !paths.is_empty() {
        for file in Case::files(paths)? {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if shipped.iter().any(|(n, _): &(String, String)| *n == name) {
                anyhow::bail!("two case files are named {name}; the artifact names cases by file name");
            }
            shipped.push((name, text));
        }
    }
    let cases = Case::parse_shipped(&shipped)?;
    // Only a policy that loads and passes its own cases is published, and
    // with the fuel budget the controller vets it with.
    let limits = Limits {
        budget: Budget::Fuel(fuel),
        memory_bytes: args.policy_memory as usize,
    };
    let p = args.load(limits, "")?;
    crate::policy::golden::verify(&p, &cases)?;
    let bytes = args.read()?;
    let annotations = std::collections::BTreeMap::from([
        ("org.opencontainers.image.title".to_owned(), p.info().name.clone()),
        ("org.opencontainers.image.version".to_owned(), p.info().version.clone()),
        ("dev.scour.policy.sha256".to_owned(), p.digest().to_owned()),
    ]);
    let opts = args.registry.options(None)?;
    let pinned = oci::push_blocking(&to, &bytes, &shipped, annotations, &opts)?;
    eprintln!(
        "pushed {} {} ({}, component {}) with {} golden cases",
        p.info().name,
        p.info().version,
        format_bytes(bytes.len() as u64),
        p.digest(),
        cases.len()
    );
    eprintln!("set it in eraser-manager-config:\n  scour:\n    policy:\n      module: {pinned}");
    println!("{pinned}");
    Ok(ExitCode::SUCCESS)
}

fn test(args: &PolicyArgs, fuel: u64, paths: &[PathBuf]) -> Result<ExitCode> {
    let cases = Case::load_all(paths)?;
    let limits = Limits {
        budget: Budget::Fuel(fuel),
        memory_bytes: args.policy_memory as usize,
    };
    let p = args.load(limits, "")?;
    println!(
        "testing {} {} ({}) with {} cases",
        p.info().name,
        p.info().version,
        short_id(p.digest()),
        cases.len()
    );
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &cases {
        let report = run_case(&p, case);
        let file = case
            .file
            .as_deref()
            .map(|f| format!("  ({})", f.display()))
            .unwrap_or_default();
        if report.passed() {
            passed += 1;
            println!("ok      {}{file}", case.name);
        } else {
            failed += 1;
            println!("FAILED  {}{file}", case.name);
            for problem in &report.problems {
                println!("          {problem}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}
