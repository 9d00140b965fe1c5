//! Eraser's `EraserConfig` (`eraser.sh/v1alpha3`), the file in ConfigMap
//! `eraser-manager-config`, key `controller_manager_config.yaml`. An Eraser
//! file loads unchanged.
//!
//! The serde types below are the schema: a key none of them reads (a typo,
//! usually) is an error naming its path; a key Eraser knows and scour does
//! not implement ([`IGNORED`]) is read, and a warning names its path. The
//! scanner's settings, which Eraser keeps as a YAML string in
//! `components.scanner.config`, are checked the same way.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use crate::units::{UnitError, parse_go_duration};

pub const API_VERSION: &str = "eraser.sh/v1alpha3";
pub const KIND: &str = "EraserConfig";
const SCANNER_CONFIG: &str = "components.scanner.config";

/// Why a config was refused. Every variant about a value names the
/// field's dotted path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("config {file}: {source}")]
    File { file: String, source: Box<ConfigError> },
    #[error("{}not valid YAML: {message}", path.map(|p| format!("{p}: ")).unwrap_or_default())]
    Yaml {
        path: Option<&'static str>,
        message: String,
    },
    #[error("apiVersion: {}", match found {
        Some(v) => format!("{v:?} is not supported; scour reads {API_VERSION} (Eraser's current version)"),
        None => format!("missing; expected {API_VERSION}"),
    })]
    ApiVersion { found: Option<String> },
    #[error("kind: expected {KIND}")]
    Kind,
    #[error("unknown field{}: {}", if .0.len() > 1 { "s" } else { "" }, .0.join(", "))]
    UnknownFields(Vec<String>),
    #[error("{path}: {problem}")]
    Field { path: String, problem: FieldError },
}

impl ConfigError {
    /// The field at fault, if the error is about one.
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::File { source, .. } => source.path(),
            ConfigError::Field { path, .. } => Some(path),
            ConfigError::ApiVersion { .. } => Some("apiVersion"),
            ConfigError::Kind => Some("kind"),
            ConfigError::Yaml { path, .. } => *path,
            _ => None,
        }
    }

    fn field(path: &str, problem: impl Into<FieldError>) -> Self {
        ConfigError::Field {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

/// What is wrong with one field's value.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// The value has the wrong shape for the field (serde's message).
    #[error("{0}")]
    Type(String),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("{value} is outside the accepted range of {range}")]
    OutOfRange { value: String, range: &'static str },
    #[error("{value:?} is not {what}; use {allowed}")]
    NotOneOf {
        value: String,
        what: &'static str,
        allowed: &'static str,
    },
    #[error("required with {0}; pin the digest `scour policy check` prints")]
    RequiredWith(&'static str),
    #[error("set one of module, configMap and path")]
    Exclusive,
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Concurrency(#[from] ConcurrencyError),
    /// A digest pin, severity or image pattern the policy layer refused.
    #[error("{0}")]
    Invalid(String),
}

/// Keys Eraser knows and scour reads but does not act on, with the reason
/// the operator is told. Each is a field of the types below (a test checks
/// that every path here is accepted).
pub const IGNORED: &[(&str, &str)] = &[
    (
        "manager.otlpEndpoint",
        "scour serves Prometheus /metrics instead of pushing OTLP",
    ),
    ("manager.profile", "scour has no pprof endpoint"),
    (
        "components.collector.image",
        "scour has no separate collector container",
    ),
    (
        "components.collector.request",
        "scour has no separate collector container",
    ),
    (
        "components.collector.limit",
        "scour has no separate collector container",
    ),
    (
        "components.scanner.image",
        "scour scans inside its worker; Trivy ships in the scour image",
    ),
];

/// A mapping entry whose value is null is an unset key (`manager:` with
/// nothing under it), as in Eraser.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Sequence(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Deserialises `value` as `T`, naming the failing field's path, and
/// collects every key `T` does not read into `unknown`, under `prefix`.
fn typed<T: serde::de::DeserializeOwned>(
    mut value: Value,
    prefix: &str,
    unknown: &mut Vec<String>,
) -> Result<T, ConfigError> {
    drop_nulls(&mut value);
    let join = |path: String| match (prefix.is_empty(), path.as_str()) {
        (true, p) => p.to_owned(),
        (false, "." | "") => prefix.to_owned(),
        (false, p) => format!("{prefix}.{p}"),
    };
    let mut track = serde_path_to_error::Track::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(join(path.to_string()));
    let ignored = serde_ignored::Deserializer::new(value, &mut note);
    T::deserialize(serde_path_to_error::Deserializer::new(ignored, &mut track)).map_err(|e| ConfigError::Field {
        path: join(track.path().to_string()),
        problem: FieldError::Type(e.to_string()),
    })
}

/// The value at a dotted path, if set.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EraserConfig {
    /// Checked before the rest is read.
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub manager: Manager,
    #[serde(default)]
    pub components: Components,
    #[serde(default)]
    pub scour: ScourConfig,
}

/// scour's extensions, in a top-level `scour` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScourConfig {
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub rollout: RolloutConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Images protected like the sandbox image on every node.
    #[serde(default)]
    pub sandbox_images: Vec<String>,
    /// Every run is a dry run: workers report what they would remove and
    /// remove nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// A shared `trivy server` (`http://HOST[:PORT]`) that workers scan
    /// through, instead of each node keeping its own vulnerability DB.
    pub trivy_server: Option<String>,
    /// The node's directory on the runtime's image filesystem (containerd's
    /// root, `/var/lib/containerd`), which worker pods mount read-only to
    /// learn the filesystem's capacity. Unset: the runtime's default root;
    /// empty: not mounted (policies see usage but no capacity).
    pub image_fs_path: Option<String>,
}

/// Where the policy comes from. Without `configMap` or `path` the workers run
/// the policy built into scour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConfig {
    /// ConfigMap (in scour's namespace) whose `binaryData` holds the component.
    pub config_map: Option<String>,
    /// Its key; default `policy.wasm`.
    pub key: Option<String>,
    /// A component baked into the worker image, for policies over the
    /// ConfigMap size limit (Python and JS ones).
    pub path: Option<String>,
    /// A policy in an OCI registry, `registry://HOST/REPO:TAG@sha256:HEX`
    /// (`scour policy push` prints it). The controller vets it before any
    /// node runs it; workers pull it with `manager.pullSecrets`.
    pub module: Option<String>,
    /// Registries (`HOST[:PORT]`) reached over plain HTTP.
    #[serde(default)]
    pub insecure_sources: Vec<String>,
    /// With `module`: the first node of a run with a newly vetted policy
    /// runs it dry, and the run's other nodes start only once that pass
    /// completes; a failed canary fails the run.
    #[serde(default)]
    pub canary: bool,
    /// The component's digest; workers refuse other bytes. Required with `configMap` or `path`.
    pub sha256: Option<String>,
    /// The policy's settings (JSON text).
    pub settings: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutConfig {
    /// Nodes worked on at once: a count (`5`) or a share of the nodes (`10%`).
    #[serde(default, deserialize_with = "quantity")]
    pub max_concurrency: Option<String>,
    /// How long a worker pod may stay Pending before its node counts as failed.
    pub pending_timeout: Option<String>,
    /// How long a started worker pod may take before it is deleted and its
    /// node counts as failed (a pod on a lost node never finishes).
    pub node_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleConfig {
    /// Overrides `manager.scheduling.repeatInterval`.
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manager {
    #[serde(default)]
    pub runtime: Runtime,
    pub log_level: Option<String>,
    #[serde(default)]
    pub scheduling: Scheduling,
    #[serde(default)]
    pub image_job: ImageJob,
    #[serde(default)]
    pub pull_secrets: Vec<String>,
    pub priority_class_name: Option<String>,
    #[serde(default)]
    pub additional_pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub node_filter: NodeFilter,
    /// Read and ignored ([`IGNORED`]).
    pub otlp_endpoint: Option<Value>,
    pub profile: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Runtime {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    pub repeat_interval: Option<String>,
    pub begin_immediately: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageJob {
    pub success_ratio: Option<f64>,
    #[serde(default)]
    pub cleanup: Cleanup,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cleanup {
    pub delay_on_success: Option<String>,
    pub delay_on_failure: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFilter {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub selectors: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Components {
    #[serde(default)]
    pub collector: Collector,
    #[serde(default)]
    pub scanner: Scanner,
    #[serde(default)]
    pub remover: Remover,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Collector {
    pub enabled: Option<bool>,
    /// Read and ignored ([`IGNORED`]).
    pub image: Option<Value>,
    pub request: Option<Value>,
    pub limit: Option<Value>,
}

/// A Kubernetes quantity such as `500Mi`, `1000m` or `0`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, deserialize_with = "quantity")]
    pub mem: Option<String>,
    #[serde(default, deserialize_with = "quantity")]
    pub cpu: Option<String>,
}

/// Quantities are written as strings or bare numbers (`cpu: 0`).
fn quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Q {
        Text(String),
        Int(i64),
        Float(f64),
    }
    Ok(Option::<Q>::deserialize(d)?.map(|q| match q {
        Q::Text(s) => s,
        Q::Int(n) => n.to_string(),
        Q::Float(f) => f.to_string(),
    }))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    pub repo: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scanner {
    pub enabled: Option<bool>,
    /// Read and ignored ([`IGNORED`]).
    pub image: Option<Value>,
    #[serde(default)]
    pub request: Resources,
    #[serde(default)]
    pub limit: Resources,
    /// Eraser keeps the scanner's settings as a YAML string.
    pub config: Option<String>,
    #[serde(default)]
    pub volumes: Vec<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remover {
    #[serde(default)]
    pub image: ImageRef,
    #[serde(default)]
    pub request: Resources,
    #[serde(default)]
    pub limit: Resources,
}

/// `components.scanner.config`, parsed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScannerConfig {
    pub cache_dir: Option<String>,
    pub db_repo: Option<String>,
    pub delete_failed_images: Option<bool>,
    #[serde(rename = "deleteEOLImages")]
    pub delete_eol_images: Option<bool>,
    #[serde(default)]
    pub vulnerabilities: Vulnerabilities,
    #[serde(default)]
    pub timeout: Timeouts,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vulnerabilities {
    pub ignore_unfixed: Option<bool>,
    pub types: Option<Vec<String>>,
    pub security_checks: Option<Vec<String>>,
    pub severities: Option<Vec<String>>,
    pub ignored_statuses: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    pub total: Option<String>,
    pub per_image: Option<String>,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(168 * 3600);
const MIN_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const MAX_INTERVAL: Duration = Duration::from_secs(2160 * 3600);

/// How many nodes to work on at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Concurrency {
    Nodes(u32),
    /// A share of the selected nodes, rounded up, at least one.
    Percent(f64),
}

impl Concurrency {
    pub fn of(self, nodes: usize) -> usize {
        match self {
            Concurrency::Nodes(n) => n as usize,
            Concurrency::Percent(p) => ((nodes as f64) * p / 100.0).ceil() as usize,
        }
        .max(1)
    }
}

impl std::fmt::Display for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Concurrency::Nodes(n) => write!(f, "{n} nodes"),
            Concurrency::Percent(p) => write!(f, "{p}% of the selected nodes, at least 1"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConcurrencyError {
    #[error("{0:?}: a percentage must be above 0% and at most 100%")]
    Percent(String),
    #[error("{0:?}: use a whole number of nodes (at least 1) or a percentage such as 10%")]
    Nodes(String),
}

/// `5` or `10%`.
pub fn parse_concurrency(text: &str) -> Result<Concurrency, ConcurrencyError> {
    let t = text.trim();
    match t.strip_suffix('%') {
        Some(p) => match p.trim().parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(Concurrency::Percent(p)),
            _ => Err(ConcurrencyError::Percent(t.to_owned())),
        },
        None => match t.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Concurrency::Nodes(n)),
            _ => Err(ConcurrencyError::Nodes(t.to_owned())),
        },
    }
}

/// A loaded config and what the operator should know about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: EraserConfig,
    pub scanner: ScannerConfig,
    /// Known keys scour ignores, with their paths.
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Reads and checks an `EraserConfig` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| ConfigError::File {
            file,
            source: Box::new(e),
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
            path: None,
            message: e.to_string(),
        })?;
        match value.get("apiVersion").and_then(Value::as_str) {
            Some(API_VERSION) => {}
            found => {
                return Err(ConfigError::ApiVersion {
                    found: found.map(str::to_owned),
                });
            }
        }
        if value.get("kind").and_then(Value::as_str) != Some(KIND) {
            return Err(ConfigError::Kind);
        }
        let mut warnings: Vec<String> = IGNORED
            .iter()
            .filter(|(path, _)| lookup(&value, path).is_some())
            .map(|(path, why)| format!("{path}: ignored; {why}"))
            .collect();
        let mut unknown = Vec::new();
        let config: EraserConfig = typed(value, "", &mut unknown)?;
        let scanner = match config.components.scanner.config.as_deref().map(str::trim) {
            None | Some("") => ScannerConfig::default(),
            Some(text) => {
                let v: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
                    path: Some(SCANNER_CONFIG),
                    message: e.to_string(),
                })?;
                typed(v, SCANNER_CONFIG, &mut unknown)?
            }
        };
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownFields(unknown));
        }
        warnings.sort();
        let loaded = Self {
            config,
            scanner,
            warnings,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.scanner;
        let c = &self.config;
        let scour = &c.scour;
        for (path, value) in [
            ("components.scanner.config.timeout.total", &s.timeout.total),
            ("components.scanner.config.timeout.perImage", &s.timeout.per_image),
            (
                "manager.scheduling.repeatInterval",
                &c.manager.scheduling.repeat_interval,
            ),
            (
                "manager.imageJob.cleanup.delayOnSuccess",
                &c.manager.image_job.cleanup.delay_on_success,
            ),
            (
                "manager.imageJob.cleanup.delayOnFailure",
                &c.manager.image_job.cleanup.delay_on_failure,
            ),
            ("scour.rollout.pendingTimeout", &scour.rollout.pending_timeout),
            ("scour.rollout.nodeTimeout", &scour.rollout.node_timeout),
            ("scour.schedule.interval", &scour.schedule.interval),
        ] {
            if let Some(v) = value {
                parse_go_duration(v).map_err(|e| ConfigError::field(path, e))?;
            }
        }
        if let Some(sev) = &s.vulnerabilities.severities {
            for (i, name) in sev.iter().enumerate() {
                name.parse::<scour_policy_sdk::Severity>().map_err(|e| {
                    ConfigError::field(
                        &format!("{SCANNER_CONFIG}.vulnerabilities.severities[{i}]"),
                        FieldError::Invalid(e.to_string()),
                    )
                })?;
            }
        }
        if let Some(name) = &c.manager.runtime.name
            && !matches!(name.as_str(), "" | "containerd" | "crio" | "dockershim")
        {
            return Err(ConfigError::field(
                "manager.runtime.name",
                FieldError::NotOneOf {
                    value: name.clone(),
                    what: "a runtime",
                    allowed: "containerd, crio or dockershim",
                },
            ));
        }
        if let Some(kind) = &c.manager.node_filter.kind
            && !matches!(kind.as_str(), "exclude" | "include")
        {
            return Err(ConfigError::field(
                "manager.nodeFilter.type",
                FieldError::NotOneOf {
                    value: kind.clone(),
                    what: "a filter type",
                    allowed: "exclude or include",
                },
            ));
        }
        if let Some(r) = c.manager.image_job.success_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(ConfigError::field(
                "manager.imageJob.successRatio",
                FieldError::OutOfRange {
                    value: r.to_string(),
                    range: "0.0 to 1.0",
                },
            ));
        }
        let policy = &scour.policy;
        if let Some(digest) = &policy.sha256 {
            crate::policy::DigestPin::parse(digest)
                .map_err(|e| ConfigError::field("scour.policy.sha256", FieldError::Invalid(e.to_string())))?;
        }
        let sources = [
            policy.module.is_some(),
            policy.config_map.is_some(),
            policy.path.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() > 1 {
            return Err(ConfigError::field("scour.policy", FieldError::Exclusive));
        }
        if let Some(module) = &policy.module {
            crate::policy::oci::PolicyRef::parse(module)
                .map_err(|e| ConfigError::field("scour.policy.module", FieldError::Invalid(e)))?;
            if policy.sha256.is_some() {
                return Err(ConfigError::field(
                    "scour.policy.sha256",
                    FieldError::Invalid("not used with module, whose reference carries its digest".into()),
                ));
            }
        } else if policy.canary {
            return Err(ConfigError::field(
                "scour.policy.canary",
                FieldError::Invalid("only a registry policy (scour.policy.module) is vetted and canaried".into()),
            ));
        }
        for (field, set) in [
            ("scour.policy.configMap", policy.config_map.is_some()),
            ("scour.policy.path", policy.path.is_some()),
        ] {
            if set && policy.sha256.is_none() {
                return Err(ConfigError::field(
                    "scour.policy.sha256",
                    FieldError::RequiredWith(field),
                ));
            }
        }
        if let Some(settings) = &policy.settings
            && !settings.trim().is_empty()
        {
            serde_json::from_str::<serde_json::Value>(settings)
                .map_err(|e| ConfigError::field("scour.policy.settings", FieldError::Json(e.to_string())))?;
        }
        if let Some(text) = &scour.rollout.max_concurrency {
            parse_concurrency(text).map_err(|e| ConfigError::field("scour.rollout.maxConcurrency", e))?;
        }
        scour_policy_sdk::PatternSet::parse(&scour.sandbox_images)
            .map_err(|e| ConfigError::field("scour.sandboxImages", FieldError::Invalid(e.to_string())))?;
        self.trivy_server()?;
        if let Some(path) = &scour.image_fs_path {
            check_image_fs_path(path).map_err(|e| ConfigError::field("scour.imageFsPath", FieldError::Invalid(e)))?;
        }
        self.interval()?;
        Ok(())
    }

    /// The automatic-run interval: `scour.schedule.interval`, else
    /// `manager.scheduling.repeatInterval`, else 168h (AKS's default), within
    /// AKS's bounds of 24h to 2160h.
    pub fn interval(&self) -> Result<Duration, ConfigError> {
        let (path, text) = match (
            &self.config.scour.schedule.interval,
            &self.config.manager.scheduling.repeat_interval,
        ) {
            (Some(v), _) => ("scour.schedule.interval", v.as_str()),
            (None, Some(v)) => ("manager.scheduling.repeatInterval", v.as_str()),
            (None, None) => return Ok(DEFAULT_INTERVAL),
        };
        let d = parse_go_duration(text).map_err(|e| ConfigError::field(path, e))?;
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
            return Err(ConfigError::field(
                path,
                FieldError::OutOfRange {
                    value: text.to_owned(),
                    range: "24h to 2160h (90 days)",
                },
            ));
        }
        Ok(d)
    }

    /// Whether automatic runs are scheduled (`components.collector.enabled`,
    /// default true). Manual ImageList runs happen either way.
    pub fn automatic_enabled(&self) -> bool {
        self.config.components.collector.enabled.unwrap_or(true)
    }

    /// `manager.scheduling.beginImmediately`, default true.
    pub fn begin_immediately(&self) -> bool {
        self.config.manager.scheduling.begin_immediately.unwrap_or(true)
    }

    /// `manager.imageJob.successRatio`, default 1.0.
    pub fn success_ratio(&self) -> f64 {
        self.config.manager.image_job.success_ratio.unwrap_or(1.0)
    }

    /// `manager.imageJob.cleanup.delayOnSuccess` (default 0s) and
    /// `delayOnFailure` (default 10m): how long finished worker pods stay.
    pub fn cleanup_delays(&self) -> (Duration, Duration) {
        let c = &self.config.manager.image_job.cleanup;
        (
            duration(&c.delay_on_success).unwrap_or(Duration::ZERO),
            duration(&c.delay_on_failure).unwrap_or(Duration::from_secs(600)),
        )
    }

    /// `scour.rollout.maxConcurrency`, default 10% of the selected nodes.
    pub fn max_concurrency(&self) -> Concurrency {
        self.config
            .scour
            .rollout
            .max_concurrency
            .as_deref()
            .and_then(|c| parse_concurrency(c).ok())
            .unwrap_or(Concurrency::Percent(10.0))
    }

    /// `scour.rollout.nodeTimeout`; by default the scan budget
    /// (`timeout.total`, else the worker's 1h) plus an hour for the rest.
    pub fn node_timeout(&self) -> Duration {
        duration(&self.config.scour.rollout.node_timeout).unwrap_or_else(|| {
            self.scan_total_timeout()
                .unwrap_or(Duration::from_secs(3600))
                .saturating_add(Duration::from_secs(3600))
        })
    }

    /// `scour.rollout.pendingTimeout`, default 10m.
    pub fn pending_timeout(&self) -> Duration {
        duration(&self.config.scour.rollout.pending_timeout).unwrap_or(Duration::from_secs(600))
    }

    /// `manager.runtime.address`.
    pub fn runtime_address(&self) -> Option<&str> {
        self.config.manager.runtime.address.as_deref().filter(|a| !a.is_empty())
    }

    /// The default policy's settings (JSON) that this config asks for:
    /// severities, ignoreUnfixed, deleteFailedImages, deleteEOLImages, and
    /// scanDisabled when the scanner is off. Keys the config leaves out keep
    /// the policy's defaults.
    pub fn default_policy_settings(&self) -> String {
        let s = &self.scanner;
        let mut m = serde_json::Map::new();
        if let Some(v) = &s.vulnerabilities.severities {
            m.insert("severities".into(), v.clone().into());
        }
        if let Some(v) = s.vulnerabilities.ignore_unfixed {
            m.insert("ignoreUnfixed".into(), v.into());
        }
        if let Some(v) = s.delete_eol_images {
            m.insert("deleteEOLImages".into(), v.into());
        }
        if let Some(v) = s.delete_failed_images {
            m.insert("deleteFailedImages".into(), v.into());
        }
        if self.config.components.scanner.enabled == Some(false) {
            m.insert("scanDisabled".into(), true.into());
        }
        serde_json::Value::Object(m).to_string()
    }

    /// The settings the config gives a policy: `scour.policy.settings` when
    /// set; otherwise, for the built-in default policy, the settings derived
    /// from Eraser's scanner config, and for a custom policy its own defaults.
    pub fn policy_settings(&self, built_in: bool) -> String {
        match (&self.config.scour.policy.settings, built_in) {
            (Some(s), _) => s.clone(),
            (None, true) => self.default_policy_settings(),
            (None, false) => String::new(),
        }
    }

    /// `scour.dryRun`: runs report what they would remove, and remove nothing.
    pub fn dry_run(&self) -> bool {
        self.config.scour.dry_run
    }

    /// `scour.trivyServer`: the shared Trivy server workers scan through.
    pub fn trivy_server(&self) -> Result<Option<crate::scan::trivy::ServerUrl>, ConfigError> {
        self.config
            .scour
            .trivy_server
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(crate::scan::trivy::ServerUrl::parse)
            .transpose()
            .map_err(|e| ConfigError::field("scour.trivyServer", FieldError::Invalid(e)))
    }

    /// The node path worker pods mount to measure the image filesystem:
    /// `scour.imageFsPath`, else the root of `manager.runtime.name`
    /// (containerd's `/var/lib/containerd` when unset); `None` when
    /// `scour.imageFsPath` is empty.
    pub fn image_fs_path(&self) -> Option<String> {
        if let Some(path) = &self.config.scour.image_fs_path {
            return (!path.is_empty()).then(|| path.clone());
        }
        let root = match self.config.manager.runtime.name.as_deref() {
            Some("crio") => "/var/lib/containers/storage",
            Some("dockershim") => "/var/lib/docker",
            _ => DEFAULT_IMAGE_FS_PATH,
        };
        Some(root.to_owned())
    }

    /// Which scanned images count as vulnerable: the scanner config's
    /// `vulnerabilities.severities` and `ignoreUnfixed`.
    pub fn vulnerable(&self) -> crate::scan::Vulnerable {
        let v = &self.scanner.vulnerabilities;
        let mut out = crate::scan::Vulnerable::default();
        if let Some(names) = &v.severities {
            // Checked at load: every name is a severity.
            out.severities = names.iter().filter_map(|n| n.parse().ok()).collect();
        }
        out.fixable_only = v.ignore_unfixed.unwrap_or(false);
        out
    }

    pub fn scan_total_timeout(&self) -> Option<Duration> {
        duration(&self.scanner.timeout.total)
    }

    pub fn scan_per_image_timeout(&self) -> Option<Duration> {
        duration(&self.scanner.timeout.per_image)
    }
}

/// containerd's root: the default `scour.imageFsPath`.
pub const DEFAULT_IMAGE_FS_PATH: &str = "/var/lib/containerd";

/// A hostPath worker pods can mount: absolute, without `.` or `..`, and not
/// the node's whole root.
fn check_image_fs_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path.split('/').any(|part| part == "." || part == "..") {
        return Err(format!("{path:?}: name the directory without . or .."));
    }
    if path.trim_end_matches('/').is_empty() {
        return Err(
            "\"/\" would mount the node's whole filesystem; name the runtime's root, e.g. /var/lib/containerd".into(),
        );
    }
    Ok(())
}

/// An optional Go duration from the config. Loading checked every one, so
/// a value that does not parse here was never accepted.
fn duration(value: &Option<String>) -> Option<Duration> {
    value.as_deref().and_then(|t| parse_go_duration(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped Eraser v1.4 chart's config, verbatim in shape.
    pub const ERASER_DEFAULT: &str = r#"
apiVersion: eraser.sh/v1alpha3
kind: EraserConfig
manager:
  runtime:
    name: containerd
    address: unix:///run/containerd/containerd.sock
  otlpEndpoint: ""
  logLevel: info
  scheduling:
    repeatInterval: 24h
    beginImmediately: true
  profile:
    enabled: false
    port: 6060
  imageJob:
    successRatio: 1.0
    cleanup:
      delayOnSuccess: 0s
      delayOnFailure: 24h
  pullSecrets: []
  priorityClassName: ""
  additionalPodLabels: {}
  nodeFilter:
    type: exclude
    selectors:
      - eraser.sh/cleanup.filter
      - kubernetes.io/os=windows
components:
  collector:
    enabled: true
    image:
      tag: v1.4.1
    request:
      mem: 25Mi
      cpu: 7m
    limit:
      mem: 500Mi
      cpu: 0
  scanner:
    enabled: true
    image:
      tag: v1.4.1
    request:
      mem: 500Mi
      cpu: 1000m
    limit:
      mem: 2Gi
      cpu: 0
    config: |
      cacheDir: /var/lib/trivy
      dbRepo: ghcr.io/aquasecurity/trivy-db
      deleteFailedImages: true
      deleteEOLImages: true
      vulnerabilities:
        ignoreUnfixed: true
        types:
          - os
          - library
        securityChecks:
          - vuln
        severities:
          - CRITICAL
          - HIGH
          - MEDIUM
          - LOW
        ignoredStatuses:
      timeout:
        total: 23h
        perImage: 1h
    volumes: []
  remover:
    image:
      tag: v1.4.1
    request:
      mem: 25Mi
      cpu: 0
    limit:
      mem: 30Mi
      cpu: 0
"#;

    #[test]
    fn an_eraser_config_loads_unchanged() {
        let l = Loaded::parse(ERASER_DEFAULT).unwrap();
        assert_eq!(l.runtime_address(), Some("unix:///run/containerd/containerd.sock"));
        assert_eq!(l.scan_total_timeout(), Some(Duration::from_secs(23 * 3600)));
        assert_eq!(l.scan_per_image_timeout(), Some(Duration::from_secs(3600)));
        let settings: serde_json::Value = serde_json::from_str(&l.default_policy_settings()).unwrap();
        assert_eq!(settings["ignoreUnfixed"], true);
        assert_eq!(settings["deleteFailedImages"], true);
        assert_eq!(settings["severities"][0], "CRITICAL");
        assert!(settings.get("scanDisabled").is_none());
        assert!(
            l.warnings.iter().any(|w| w.starts_with("manager.profile: ignored")),
            "{:?}",
            l.warnings
        );
        assert!(l.warnings.iter().any(|w| w.starts_with("components.collector.image")));
    }

    #[test]
    fn an_absurd_duration_is_a_typed_error_naming_the_field() {
        let text = ERASER_DEFAULT.replace("repeatInterval: 24h", "repeatInterval: 99999999999999999999h");
        let err = Loaded::parse(&text).unwrap_err();
        assert_eq!(err.path(), Some("manager.scheduling.repeatInterval"));
        assert!(
            matches!(
                &err,
                ConfigError::Field {
                    problem: FieldError::Unit(UnitError::TooLong(_)),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// Found by the eraser_config fuzz target: this loaded, and the node
    /// timeout (the scan budget plus an hour) then overflowed.
    #[test]
    fn a_scan_budget_near_2_pow_64_seconds_is_refused_at_load() {
        let text = "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\ncomponents:\n  scanner:\n    config: |\n      timeout:\n        total: 18446744073709549568s\n";
        let err = Loaded::parse(text).unwrap_err();
        assert_eq!(err.path(), Some("components.scanner.config.timeout.total"), "{err}");
        let l = Loaded::parse(&text.replace("18446744073709549568s", "876000h")).unwrap();
        assert!(l.node_timeout() > Duration::from_secs(876_000 * 3600));
    }

    #[test]
    fn every_ignored_key_is_read_by_the_types_and_warned_about() {
        let mut merged = serde_yaml::Mapping::new();
        for (path, _) in IGNORED {
            let mut v = Value::Mapping(serde_yaml::Mapping::from_iter([(
                Value::from("anything"),
                Value::from(vec![1, 2]),
            )]));
            for key in path.split('.').rev() {
                v = Value::Mapping(serde_yaml::Mapping::from_iter([(Value::from(key), v)]));
            }
            merge(&mut merged, v);
        }
        merged.insert("apiVersion".into(), API_VERSION.into());
        merged.insert("kind".into(), KIND.into());
        let l = Loaded::parse(&serde_yaml::to_string(&merged).unwrap()).unwrap();
        let warned: Vec<&str> = l
            .warnings
            .iter()
            .filter_map(|w| w.split_once(": ignored"))
            .map(|(p, _)| p)
            .collect();
        let mut expected: Vec<&str> = IGNORED.iter().map(|(p, _)| *p).collect();
        expected.sort();
        assert_eq!(warned, expected);
    }

    fn merge(into: &mut serde_yaml::Mapping, from: Value) {
        let Value::Mapping(from) = from else { return };
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(Value::Mapping(existing)), v @ Value::Mapping(_)) => merge(existing, v),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }

    #[test]
    fn an_empty_section_is_an_unset_one() {
        let text = "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\nmanager:\ncomponents:\n  scanner:\nscour:\n";
        let l = Loaded::parse(text).unwrap();
        assert!(l.automatic_enabled());
        let err = Loaded::parse("apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\nmanager: 3\n").unwrap_err();
        assert_eq!(err.path(), Some("manager"), "{err}");
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let text = ERASER_DEFAULT
            .replace("    beginImmediately: true", "    beginImmediatly: true")
            .replace("      deleteEOLImages: true", "      deleteEOLImage: true");
        let err = Loaded::parse(&text).unwrap_err().to_string();
        assert!(err.contains("manager.scheduling.beginImmediatly"), "{err}");
        assert!(err.contains("components.scanner.config.deleteEOLImage"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_with_their_path() {
        for (from, to, needle) in [
            (
                "perImage: 1h",
                "perImage: 1 hour",
                "components.scanner.config.timeout.perImage",
            ),
            ("          - LOW", "          - SEVERE", "severities[3]"),
            ("name: containerd", "name: docker", "manager.runtime.name"),
            (
                "successRatio: 1.0",
                "successRatio: 1.5",
                "manager.imageJob.successRatio",
            ),
            (
                "apiVersion: eraser.sh/v1alpha3",
                "apiVersion: eraser.sh/v1alpha2",
                "apiVersion",
            ),
            (
                "beginImmediately: true",
                "beginImmediately: sometimes",
                "manager.scheduling.beginImmediately: invalid type",
            ),
            (
                "repeatInterval: 24h",
                "repeatInterval: 1h",
                "manager.scheduling.repeatInterval: 1h is outside the accepted range of 24h to 2160h",
            ),
            (
                "repeatInterval: 24h",
                "repeatInterval: 2161h",
                "manager.scheduling.repeatInterval: 2161h is outside",
            ),
            ("type: exclude", "type: everything", "manager.nodeFilter.type"),
        ] {
            let err = Loaded::parse(&ERASER_DEFAULT.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn the_interval_defaults_to_a_week_and_accepts_the_bounds() {
        let base = "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\n";
        assert_eq!(
            Loaded::parse(base).unwrap().interval().unwrap(),
            Duration::from_secs(168 * 3600)
        );
        for (text, hours) in [("24h", 24), ("2160h", 2160), ("36h30m", 36)] {
            let l = Loaded::parse(&format!("{base}manager:\n  scheduling:\n    repeatInterval: {text}\n")).unwrap();
            assert_eq!(l.interval().unwrap().as_secs() / 3600, hours, "{text}");
        }
        let err = Loaded::parse(&format!("{base}scour:\n  schedule:\n    interval: 23h\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scour.schedule.interval: 23h is outside"), "{err}");
    }

    #[test]
    fn a_disabled_scanner_means_scan_disabled() {
        let text = ERASER_DEFAULT.replacen(
            "    enabled: true\n    image:\n      tag: v1.4.1\n    request:\n      mem: 500Mi",
            "    enabled: false\n    image:\n      tag: v1.4.1\n    request:\n      mem: 500Mi",
            1,
        );
        let l = Loaded::parse(&text).unwrap();
        assert!(l.default_policy_settings().contains("\"scanDisabled\":true"));
    }

    #[test]
    fn scour_extensions_are_documented_fields_checked_by_path() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let good = format!(
            "{ERASER_DEFAULT}scour:\n  policy:\n    configMap: my-policy\n    sha256: \"{digest}\"\n    settings: '{{\"maxAgeDays\": 30}}'\n  rollout:\n    maxConcurrency: 10%\n    pendingTimeout: 10m\n  schedule:\n    interval: 168h\n  sandboxImages: [\"registry.k8s.io/pause:*\"]\n  trivyServer: http://trivy.scour.svc:4954\n"
        );
        let l = Loaded::parse(&good).unwrap();
        assert_eq!(l.config.scour.policy.config_map.as_deref(), Some("my-policy"));
        assert_eq!(
            l.trivy_server().unwrap().map(|u| u.to_string()).as_deref(),
            Some("http://trivy.scour.svc:4954")
        );
        assert_eq!(parse_concurrency("10%").unwrap().of(273), 28);
        assert_eq!(parse_concurrency("10%").unwrap().of(3), 1);
        assert_eq!(parse_concurrency("5").unwrap().of(3), 5);
        for (from, to, needle) in [
            (digest.as_str(), "sha256:beef", "scour.policy.sha256"),
            (
                "maxConcurrency: 10%",
                "maxConcurrency: 0",
                "scour.rollout.maxConcurrency",
            ),
            (
                "maxConcurrency: 10%",
                "maxConcurrency: 150%",
                "scour.rollout.maxConcurrency",
            ),
            (
                "pendingTimeout: 10m",
                "pendingTimeout: ten",
                "scour.rollout.pendingTimeout",
            ),
            ("interval: 168h", "intervals: 168h", "scour.schedule.intervals"),
            ("maxAgeDays\": 30}'", "maxAgeDays\": }'", "scour.policy.settings"),
            (
                "http://trivy.scour.svc:4954",
                "https://trivy.scour.svc:4954",
                "scour.trivyServer",
            ),
            (
                "http://trivy.scour.svc:4954",
                "http://trivy.scour.svc:port",
                "scour.trivyServer",
            ),
        ] {
            let err = Loaded::parse(&good.replace(from, to)).unwrap_err().to_string();
            assert!(err.contains(needle), "{to}: {err}");
        }
        let unpinned = good.replace(&format!("    sha256: \"{digest}\"\n"), "");
        assert!(
            Loaded::parse(&unpinned)
                .unwrap_err()
                .to_string()
                .contains("required with scour.policy.configMap")
        );
        let baked = unpinned.replace("configMap: my-policy", "path: /policies/mine.wasm");
        assert!(
            Loaded::parse(&baked)
                .unwrap_err()
                .to_string()
                .contains("required with scour.policy.path")
        );
        let both = good.replace("configMap: my-policy", "configMap: my-policy\n    path: /p.wasm");
        assert!(
            Loaded::parse(&both)
                .unwrap_err()
                .to_string()
                .contains("one of module, configMap and path")
        );
        let module = good
            .replace(
                "configMap: my-policy",
                &format!("module: registry://127.0.0.1:5000/p/mine:v1@{digest}"),
            )
            .replace(&format!("    sha256: \"{digest}\"\n"), "");
        let l = Loaded::parse(&module).unwrap();
        assert!(
            l.config
                .scour
                .policy
                .module
                .as_deref()
                .is_some_and(|m| m.ends_with(&digest))
        );
        for (bad, field) in [
            (module.replace(&format!("@{digest}"), ""), "not pinned"),
            (module.replace("registry://", "oci://"), "must start with registry://"),
            (
                module.replace("module:", "path: /p.wasm\n    module:"),
                "one of module, configMap and path",
            ),
        ] {
            let err = Loaded::parse(&bad).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains("scour.policy"), "{err}");
        }
        assert!(Loaded::parse(&module.replace("module:", "canary: true\n    module:")).is_ok());
        let err = Loaded::parse(&good.replace("configMap: my-policy", "configMap: my-policy\n    canary: true"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scour.policy.canary"), "{err}");
    }

    #[test]
    fn a_minimal_config_uses_defaults() {
        let l = Loaded::parse("apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\n").unwrap();
        assert_eq!(l.default_policy_settings(), "{}");
        assert!(l.runtime_address().is_none());
        assert_eq!(l.image_fs_path().as_deref(), Some("/var/lib/containerd"));
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn the_image_fs_path_defaults_to_the_runtimes_root_and_is_checked() {
        let base = "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\n";
        let path = |text: &str| Loaded::parse(&format!("{base}{text}")).map(|l| l.image_fs_path());
        assert_eq!(
            path("manager:\n  runtime:\n    name: containerd\n").unwrap().as_deref(),
            Some("/var/lib/containerd")
        );
        assert_eq!(
            path("manager:\n  runtime:\n    name: crio\n").unwrap().as_deref(),
            Some("/var/lib/containers/storage")
        );
        assert_eq!(
            path("scour:\n  imageFsPath: /mnt/containerd\n").unwrap().as_deref(),
            Some("/mnt/containerd")
        );
        assert_eq!(
            path("scour:\n  imageFsPath: \"\"\n").unwrap(),
            None,
            "empty: not mounted"
        );
        for bad in ["var/lib/containerd", "/", "/var/lib/../lib/containerd"] {
            let err = path(&format!("scour:\n  imageFsPath: {bad:?}\n")).unwrap_err();
            assert_eq!(err.path(), Some("scour.imageFsPath"), "{bad}: {err}");
        }
    }
}
