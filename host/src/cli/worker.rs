//! `scour worker`: one node's cleanup pass, once or on an interval.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use scour_policy_sdk::PatternSet;
use tokio_util::sync::CancellationToken;

use super::policy::{PolicyArgs, SettingsArg};
use super::{EXIT_USAGE, Output};
use crate::collect::ImageFsProbe;
use crate::config::Loaded;
use crate::policy::golden::Case;
use crate::policy::{DigestPin, PolicyHandle, PolicySource, PolicyWatcher, WatchTarget};
use crate::scan::{ScanOptions, TrivyOptions};
use crate::units::{parse_bytes, parse_duration};
use crate::worker::{self, ExclusionSources, Outputs, Schedule, WorkerConfig};

#[derive(Debug, Args)]
#[command(
    // A repeated single-value flag replaces the earlier one, so a manifest's
    // base flags can be overridden by appending.
    args_override_self = true,
    about = "Run a cleanup pass on this node: collect, scan, decide, guard, remove, report",
    long_about = "Runs a cleanup pass on this node: lists images and containers over CRI, scans the images the policy \
                  selects with Trivy, asks the policy what to remove, enforces the host's guards (in-use, pinned, \
                  sandbox and system-excluded images are never removed), removes, and reports.\n\n\
                  Exit codes: 0 the pass completed (the report says degraded when some scans or removals failed); \
                  1 the pass could not complete safely and removed nothing more; 2 usage or configuration errors."
)]
pub struct WorkerArgs {
    /// CRI socket of the container runtime, e.g. unix:///run/containerd/containerd.sock
    /// [default: manager.runtime.address from --config].
    #[arg(long, env = "SCOUR_RUNTIME_ENDPOINT", value_name = "ENDPOINT")]
    runtime_endpoint: Option<String>,

    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    settings: SettingsArg,
    /// Hot-swap the policy when the --policy or --settings file changes (by content).
    #[arg(long, env = "SCOUR_POLICY_WATCH", requires = "policy")]
    policy_watch: bool,
    /// How often --policy-watch reads the files.
    #[arg(long, env = "SCOUR_POLICY_WATCH_INTERVAL", default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    policy_watch_interval: Duration,
    /// The policy's sha256: `sha256:HEX`, or `@FILE` holding it (re-read at every load and watch poll).
    /// Other bytes are refused [default: scour.policy.sha256 from --config].
    #[arg(long, env = "SCOUR_POLICY_SHA256", value_parser = DigestPin::parse, value_name = "DIGEST|@FILE")]
    policy_sha256: Option<DigestPin>,
    /// Golden cases (files or directories) a new policy must pass before a hot swap.
    #[arg(long, env = "SCOUR_POLICY_CASES", value_name = "PATH")]
    policy_cases: Vec<PathBuf>,

    /// User exclusion list, {"excluded": [...]}; honoured by the policy.
    #[arg(long, env = "SCOUR_EXCLUSIONS", value_name = "FILE.json", value_delimiter = ',')]
    exclusions: Vec<PathBuf>,
    /// System exclusion list (a file or a directory of *.json); enforced by the host whatever the policy says.
    #[arg(
        long,
        env = "SCOUR_SYSTEM_EXCLUSIONS",
        value_name = "FILE.json",
        value_delimiter = ','
    )]
    system_exclusions: Vec<PathBuf>,
    /// Directory of mounted exclusion ConfigMaps; every *.json key below it is read.
    #[arg(long, env = "SCOUR_EXCLUSIONS_DIR", value_name = "DIR", value_delimiter = ',')]
    exclusions_dir: Vec<PathBuf>,

    /// Manual mode: remove what this ImageList names (a JSON array, or an eraser.sh/v1 ImageList in YAML).
    #[arg(long, env = "SCOUR_IMAGELIST", value_name = "FILE")]
    imagelist: Option<PathBuf>,
    /// Decide and report, but remove nothing (actions show as would-remove).
    #[arg(long, env = "SCOUR_DRY_RUN")]
    dry_run: bool,
    /// Write the full JSON report here after each pass.
    #[arg(long, env = "SCOUR_REPORT", value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write the policy's exact input (snapshot format; YAML, or JSON for .json) for `scour policy eval`.
    #[arg(long, env = "SCOUR_SNAPSHOT_OUT", value_name = "FILE")]
    snapshot_out: Option<PathBuf>,
    /// What to print on stdout [default: table on a terminal, nothing otherwise].
    #[arg(long, env = "SCOUR_OUTPUT", value_enum)]
    output: Option<Output>,
    /// Where the controller reads the pass summary (written only if the path exists).
    #[arg(
        long,
        env = "SCOUR_TERMINATION_LOG",
        default_value = "/dev/termination-log",
        value_name = "PATH"
    )]
    termination_log: PathBuf,

    /// Trivy binary.
    #[arg(long, env = "SCOUR_TRIVY", default_value = "trivy", value_name = "PATH")]
    trivy: PathBuf,
    /// Trivy's cache directory (vulnerability DB and layer cache) [default: cacheDir from --config, else Trivy's].
    #[arg(long, env = "SCOUR_TRIVY_CACHE_DIR", value_name = "DIR")]
    trivy_cache_dir: Option<PathBuf>,
    /// Never download the vulnerability DB (--skip-db-update --offline-scan).
    #[arg(long, env = "SCOUR_TRIVY_OFFLINE")]
    trivy_offline: bool,
    /// Mirror of the vulnerability DB [default: dbRepo from --config].
    #[arg(long, env = "SCOUR_TRIVY_DB_REPOSITORY", value_name = "REPO")]
    trivy_db_repository: Option<String>,
    /// Deadline for one image's scan [default: timeout.perImage from --config, else 10m].
    #[arg(long, env = "SCOUR_SCAN_TIMEOUT", value_parser = parse_duration, value_name = "DUR")]
    scan_timeout: Option<Duration>,
    /// Deadline for all scans of a pass; images not scanned by then count as failed [default: timeout.total from --config, else 1h].
    #[arg(long, env = "SCOUR_SCAN_TOTAL_TIMEOUT", value_parser = parse_duration, value_name = "DUR")]
    scan_total_timeout: Option<Duration>,
    /// Trivy processes at once [default: the number of cores, fewer when the
    /// container's memory limit cannot hold that many at --trivy-memory-limit
    /// each after 256 MiB for the worker].
    #[arg(long, env = "SCOUR_SCAN_CONCURRENCY", value_name = "N")]
    scan_concurrency: Option<usize>,
    /// Soft memory limit of each Trivy process (Go's GOMEMLIMIT; garbage collection waits until then).
    #[arg(long, env = "SCOUR_TRIVY_MEMORY_LIMIT", default_value = "512MiB", value_parser = parse_bytes, value_name = "SIZE")]
    trivy_memory_limit: u64,
    /// Scan through a shared `trivy server` at http://HOST[:PORT], which holds
    /// the vulnerability DB and the layer cache; this node then needs no DB
    /// [default: scour.trivyServer from --config].
    #[arg(long, env = "SCOUR_TRIVY_SERVER", value_parser = crate::scan::trivy::ServerUrl::parse, value_name = "URL")]
    trivy_server: Option<crate::scan::trivy::ServerUrl>,
    /// Where Trivy reads image layers: in-place reads them where containerd
    /// keeps them (its content store, below --image-fs in a pod), through
    /// the export for an image it cannot; export always copies each image
    /// out through containerd's API first (--image-src containerd, as Eraser
    /// does), several times slower on real-sized images.
    #[arg(long, env = "SCOUR_READ_LAYERS", value_enum, default_value_t, value_name = "FROM")]
    read_layers: crate::scan::ReadLayers,
    /// Trivy's layer cache: memory (parallel scans share no lock; scour caches results per image itself) or fs.
    #[arg(long, env = "SCOUR_TRIVY_CACHE_BACKEND", default_value = "memory", value_parser = ["memory", "fs"], value_name = "BACKEND")]
    trivy_cache_backend: String,

    /// A directory on the runtime's image filesystem, as this process sees
    /// it: its filesystem's size is the capacity policies see [default: the
    /// mountpoint the runtime reports, when visible].
    ///
    /// Usage still comes from the runtime (CRI ImageFsInfo); only the
    /// capacity is measured here (statvfs of the filesystem holding DIR). A
    /// worker pod is given the node's runtime root (/var/lib/containerd)
    /// here, read-only, because the mountpoint the runtime reports is a node
    /// path the pod cannot see. A DIR that cannot be measured is a warning
    /// naming it, and policies then see no capacity. containerd's content
    /// store, where --read-layers in-place reads layers, is found through it
    /// too.
    #[arg(long, env = "SCOUR_IMAGE_FS", value_name = "DIR")]
    image_fs: Option<PathBuf>,
    /// The node path that --image-fs shows, e.g. /var/lib/containerd.
    ///
    /// When the mountpoint the runtime reports lies below it, the same path
    /// below --image-fs is measured instead: an image store on a filesystem
    /// of its own, mounted below the runtime's root, is then measured rather
    /// than the filesystem holding the root.
    #[arg(long, env = "SCOUR_IMAGE_FS_NODE_PATH", value_name = "PATH", requires = "image_fs")]
    image_fs_node_path: Option<PathBuf>,

    /// Node-local state: first-seen times, the scan cache and compiled
    /// policies (policy-cache/, unless --policy-cache-dir says otherwise).
    #[arg(long, env = "SCOUR_STATE_DIR", default_value = "/var/lib/scour", value_name = "DIR")]
    state_dir: PathBuf,
    /// Run one pass and exit (the default).
    #[arg(long, env = "SCOUR_ONCE", conflicts_with = "interval")]
    once: bool,
    /// Run as a daemon: a pass now, then one every DUR, until SIGTERM.
    #[arg(long, env = "SCOUR_INTERVAL", value_parser = parse_duration, value_name = "DUR")]
    interval: Option<Duration>,
    /// Eraser's EraserConfig (v1alpha3) file, e.g. the eraser-manager-config ConfigMap's controller_manager_config.yaml.
    #[arg(long, env = "SCOUR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Node name for reports [default: $NODE_NAME, else the host name].
    #[arg(long, env = "SCOUR_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// A node label the policy sees, KEY=VALUE (repeatable).
    #[arg(long = "node-label", env = "SCOUR_NODE_LABELS", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = parse_label)]
    node_labels: Vec<(String, String)>,
    /// An image always protected like the sandbox image (repeatable); the runtime's own sandbox image always is.
    #[arg(
        long = "sandbox-image",
        env = "SCOUR_SANDBOX_IMAGES",
        value_name = "REF",
        value_delimiter = ','
    )]
    sandbox_images: Vec<String>,
    /// RemoveImage calls at once.
    #[arg(long, env = "SCOUR_REMOVE_CONCURRENCY", default_value_t = 4, value_name = "N")]
    remove_concurrency: usize,
    /// Deadline for connecting to the runtime.
    #[arg(long, env = "SCOUR_CRI_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    cri_connect_timeout: Duration,
    /// Deadline for each CRI call.
    #[arg(long, env = "SCOUR_CRI_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    cri_timeout: Duration,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("invalid label {s:?}: use KEY=VALUE")),
    }
}

/// Reads an ImageList: a JSON array of strings, a YAML list, or an
/// `eraser.sh/v1` `ImageList` object. Entries are checked as patterns.
pub fn read_imagelist(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading ImageList {}", path.display()))?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("ImageList {} is not JSON or YAML", path.display()))?;
    let images = match &value {
        serde_yaml::Value::Sequence(_) => value.clone(),
        serde_yaml::Value::Mapping(_) => {
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            if kind != "ImageList" {
                bail!("ImageList {}: expected kind ImageList, got {kind:?}", path.display());
            }
            value
                .get("spec")
                .and_then(|s| s.get("images"))
                .cloned()
                .with_context(|| format!("ImageList {}: spec.images is missing", path.display()))?
        }
        _ => bail!(
            "ImageList {}: expected a list of images or an ImageList object",
            path.display()
        ),
    };
    let images: Vec<String> = serde_yaml::from_value(images)
        .with_context(|| format!("ImageList {}: images must be strings", path.display()))?;
    PatternSet::parse(&images).map_err(|e| anyhow::anyhow!("ImageList {}: {e}", path.display()))?;
    Ok(images)
}

fn node_name(explicit: Option<String>) -> String {
    explicit
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
        .or_else(|| nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()))
        .unwrap_or_else(|| "unknown-node".to_owned())
}

/// A configuration error: reported, exit 2.
struct Usage(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Usage {
    fn from(e: E) -> Self {
        Usage(e.into())
    }
}

struct Prepared {
    cfg: WorkerConfig,
    handle: Arc<PolicyHandle>,
    watch: Option<(WatchTarget, Duration)>,
    schedule: Schedule,
    outputs: Outputs,
}

fn prepare(mut args: WorkerArgs) -> Result<Prepared, Usage> {
    let eraser = match &args.config {
        Some(path) => {
            let loaded = Loaded::from_file(path)?;
            for w in &loaded.warnings {
                tracing::warn!(config = %path.display(), "{w}");
            }
            Some(loaded)
        }
        None => None,
    };
    let runtime_endpoint = args
        .runtime_endpoint
        .clone()
        .or_else(|| eraser.as_ref().and_then(|c| c.runtime_address().map(str::to_owned)))
        .context("no runtime endpoint: pass --runtime-endpoint, or set manager.runtime.address in --config")?;
    let containerd_socket = crate::cri::socket_path(&runtime_endpoint)?;

    // Compiled policies live with the node's other state, so a pod with a
    // read-only root filesystem compiles each digest once per node.
    if args.policy.policy_cache_dir.is_none() {
        args.policy.policy_cache_dir = Some(args.state_dir.join("policy-cache"));
    }
    // A registry policy is pulled once per node and kept with its state.
    args.policy.pulled_dir = Some(args.state_dir.join("pulled-policies"));
    let source = args.policy.source()?;
    let scour_policy = eraser.as_ref().map(|c| &c.config.scour.policy);
    let settings = match (args.settings.given(), &eraser) {
        (true, _) => args.settings.read()?,
        (false, Some(cfg)) => cfg.policy_settings(matches!(source, PolicySource::Embedded)),
        (false, None) => String::new(),
    };
    let policy = args.policy.load(args.policy.limits(), &settings)?;
    let pin = match (&args.policy_sha256, scour_policy.and_then(|p| p.sha256.as_deref())) {
        (Some(pin), _) => Some(pin.clone()),
        (None, Some(digest)) => Some(DigestPin::parse(digest).map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    if let Some(pin) = &pin {
        pin.check(policy.digest())?;
    }
    tracing::info!(
        policy = %policy.info().name,
        version = %policy.info().version,
        digest = policy.digest(),
        origin = policy.origin(),
        compile_ms = policy.stats().compile.as_millis() as u64,
        cached = policy.stats().from_cache,
        "policy loaded"
    );
    crate::memory::release_free_memory();
    let handle = Arc::new(PolicyHandle::new(policy));
    let watch = match (&source, args.policy_watch) {
        (PolicySource::File(path), true) => {
            let cases = if args.policy_cases.is_empty() {
                Vec::new()
            } else {
                Case::load_all(&args.policy_cases)?
            };
            Some((
                WatchTarget {
                    policy: path.clone(),
                    settings: args.settings.settings.clone(),
                    cases,
                    pin: pin.clone(),
                },
                args.policy_watch_interval,
            ))
        }
        _ => None,
    };

    let imagelist = args.imagelist.as_deref().map(read_imagelist).transpose()?;
    let scanner = eraser.as_ref().map(|c| &c.scanner);
    let per_image = args
        .scan_timeout
        .or_else(|| eraser.as_ref().and_then(Loaded::scan_per_image_timeout))
        .unwrap_or(Duration::from_secs(600));
    let total = args
        .scan_total_timeout
        .or_else(|| eraser.as_ref().and_then(Loaded::scan_total_timeout))
        .unwrap_or(Duration::from_secs(3600));
    let trivy = TrivyOptions {
        binary: args.trivy.clone(),
        cache_dir: args
            .trivy_cache_dir
            .clone()
            .or_else(|| scanner.and_then(|s| s.cache_dir.as_ref()).map(PathBuf::from)),
        offline: args.trivy_offline,
        db_repository: args
            .trivy_db_repository
            .clone()
            .or_else(|| scanner.and_then(|s| s.db_repo.clone()))
            .filter(|r| !r.is_empty()),
        pkg_types: scanner
            .and_then(|s| s.vulnerabilities.types.clone())
            .unwrap_or_default(),
        ignore_statuses: scanner
            .and_then(|s| s.vulnerabilities.ignored_statuses.clone())
            .unwrap_or_default(),
        cache_backend: args.trivy_cache_backend.clone(),
        go_max_procs: 1,
        go_memory_limit: args.trivy_memory_limit,
        containerd_socket,
        namespace: "k8s.io".to_owned(),
        server: match &args.trivy_server {
            Some(url) => Some(url.clone()),
            None => eraser.as_ref().map(Loaded::trivy_server).transpose()?.flatten(),
        },
    };
    if let Some(checks) = scanner.and_then(|s| s.vulnerabilities.security_checks.as_ref())
        && checks.iter().any(|c| c != "vuln")
    {
        tracing::warn!(
            "components.scanner.config.vulnerabilities.securityChecks: scour scans for vulnerabilities only"
        );
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let memory_limit = crate::scan::limits::memory_limit();
    let scan_concurrency = args
        .scan_concurrency
        .unwrap_or_else(|| crate::scan::limits::scan_concurrency(cores, memory_limit, args.trivy_memory_limit))
        .max(1);
    tracing::info!(
        scan_concurrency,
        cores,
        memory_limit = memory_limit.map(crate::units::format_bytes),
        "scan concurrency {scan_concurrency} (cores {cores}, memory limit {})",
        memory_limit.map_or_else(|| "none".to_owned(), crate::units::format_bytes)
    );
    // Parallel scans share the cores rather than each claiming all of them.
    let trivy = TrivyOptions {
        go_max_procs: (cores / scan_concurrency).max(1),
        ..trivy
    };
    let cfg = WorkerConfig {
        runtime_endpoint,
        connect_timeout: args.cri_connect_timeout,
        call_timeout: args.cri_timeout,
        node_name: node_name(args.node_name),
        node_labels: args.node_labels,
        exclusions: ExclusionSources {
            user_files: args.exclusions,
            user_dirs: args.exclusions_dir,
            system_files: args.system_exclusions.iter().filter(|p| !p.is_dir()).cloned().collect(),
            system_dirs: args.system_exclusions.iter().filter(|p| p.is_dir()).cloned().collect(),
        },
        imagelist,
        dry_run: args.dry_run,
        scan: ScanOptions {
            trivy,
            per_image_timeout: per_image,
            total_timeout: total,
            concurrency: scan_concurrency,
            read_layers: args.read_layers,
        },
        vulnerable: eraser.as_ref().map(|c| c.vulnerable()).unwrap_or_default(),
        state_dir: Some(args.state_dir),
        sandbox_images: args
            .sandbox_images
            .into_iter()
            .chain(eraser.iter().flat_map(|c| c.config.scour.sandbox_images.clone()))
            .collect(),
        remove_concurrency: args.remove_concurrency.max(1),
        snapshot_out: args.snapshot_out,
        image_fs: ImageFsProbe {
            dir: args.image_fs,
            node_path: args.image_fs_node_path,
        },
    };
    let stdout_json = match args.output {
        Some(Output::Json) => Some(true),
        Some(Output::Table) => Some(false),
        None => std::io::IsTerminal::is_terminal(&std::io::stdout()).then_some(false),
    };
    Ok(Prepared {
        cfg,
        handle,
        watch,
        schedule: args.interval.map_or(Schedule::Once, Schedule::Every),
        outputs: Outputs {
            report: args.report,
            stdout_json,
            termination_log: Some(args.termination_log),
        },
    })
}

pub fn run(args: WorkerArgs) -> Result<ExitCode> {
    let prepared = match prepare(args) {
        Ok(p) => p,
        Err(Usage(e)) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let status = runtime.block_on(async move {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone(), "finishing the current removal, then exiting");
        let _watch = prepared.watch.map(|(target, interval)| {
            tracing::info!(policy = %target.policy.display(), every = %humantime::format_duration(interval), "watching the policy for changes");
            PolicyWatcher::new(prepared.handle.clone(), target).spawn(interval)
        });
        worker::run(&prepared.cfg, &prepared.handle, prepared.schedule, &prepared.outputs, &cancel).await
    });
    // Trivy children are killed on drop; do not wait on stray tasks.
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(ExitCode::from(status.exit_code()))
}

/// Cancels `cancel` on SIGTERM or SIGINT, logging what happens next.
pub(super) fn spawn_signal_handler(cancel: CancellationToken, then: &'static str) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: {then}"),
            _ = int.recv() => tracing::info!("SIGINT: {then}"),
        }
        cancel.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imagelist(text: &str) -> Result<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        std::fs::write(&path, text).unwrap();
        read_imagelist(&path)
    }

    #[test]
    fn imagelists_come_as_json_yaml_or_an_imagelist_object() {
        assert_eq!(
            imagelist(r#"["alpine:3.7.3", "*"]"#).unwrap(),
            vec!["alpine:3.7.3", "*"]
        );
        assert_eq!(
            imagelist("- nginx:1.25\n- redis:7\n").unwrap(),
            vec!["nginx:1.25", "redis:7"]
        );
        let seed = "apiVersion: eraser.sh/v1\nkind: ImageList\nmetadata:\n  name: imagelist\nspec:\n  images:\n    - docker.io/library/alpine:3.7.3\n";
        assert_eq!(imagelist(seed).unwrap(), vec!["docker.io/library/alpine:3.7.3"]);
    }

    #[test]
    fn bad_imagelists_say_why() {
        for (text, needle) in [
            ("kind: ConfigMap\n", "expected kind ImageList"),
            ("kind: ImageList\nspec: {}\n", "spec.images is missing"),
            ("[1, 2]", "images must be strings"),
            (r#"["alp*ne"]"#, "entry 0"),
            ("just text", "expected a list of images"),
        ] {
            let err = format!("{:#}", imagelist(text).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
