//! `scour controller`: the cluster controller's process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::controller::metrics::Metrics;
use crate::controller::serve::{self, Health};
use crate::controller::{Controller, Options, SystemClock};
use crate::units::parse_duration;

/// Run the cluster controller: start worker pods on an interval or when the
/// ImageList `imagelist` changes, and record each node's results in ImageJobs.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs the cluster controller. On the config's interval (manager.scheduling.repeatInterval, \
    default 168h), or when the ImageList named `imagelist` is created or changed, it starts one worker pod per \
    selected node, at most scour.rollout.maxConcurrency at once, and records each node's removals in an ImageJob. \
    The config is read from the API (ConfigMap eraser-manager-config, key controller_manager_config.yaml) before \
    every run, so edits apply to the next run without a restart. It watches the ImageList, its ImageJobs and worker \
    pods and the config and exclusion ConfigMaps, and wakes on their changes and when something falls due; it does \
    not poll. Replicas elect a leader through a Lease; only the leader acts (and watches). Serves /healthz, /readyz \
    and /metrics on --listen."
)]
pub struct ControllerArgs {
    /// Namespace of the config, the exclusion ConfigMaps, the worker pods and the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    namespace: String,
    /// The config ConfigMap (key controller_manager_config.yaml).
    #[arg(long, env = "ERASER_CONFIGMAP_NAME", default_value = "eraser-manager-config")]
    config_map: String,
    /// Worker image when the config's components.remover.image is unset or names an Eraser image.
    #[arg(long, env = "SCOUR_WORKER_IMAGE", value_name = "IMAGE")]
    worker_image: Option<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "SCOUR_LISTEN", default_value = "0.0.0.0:8081")]
    listen: SocketAddr,
    /// Changes arriving within this long are handled together (a burst of worker pods finishing).
    #[arg(long, env = "SCOUR_DEBOUNCE", default_value = "500ms", value_parser = parse_duration, value_name = "DUR")]
    debounce: Duration,
    /// How long each watch request lasts before it is renewed.
    #[arg(long, env = "SCOUR_WATCH_TIMEOUT", default_value = "290s", value_parser = parse_duration, value_name = "DUR")]
    watch_timeout: Duration,
    /// This replica's name in the Lease [default: the host name].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The Lease replicas elect a leader with.
    #[arg(long, env = "SCOUR_LEASE_NAME", default_value = "scour-controller")]
    lease_name: String,
    /// How long a leader's lease lasts without renewal.
    #[arg(long, env = "SCOUR_LEASE_DURATION", default_value = "15s", value_parser = parse_duration, value_name = "DUR")]
    lease_duration: Duration,
    /// Service account of the worker pods (it needs no RBAC).
    #[arg(long, env = "SCOUR_WORKER_SERVICE_ACCOUNT", default_value = "scour-worker")]
    worker_service_account: String,
    /// ConfigMap where the controller keeps the next run time and the last ImageList run.
    #[arg(long, env = "SCOUR_STATE_CONFIG_MAP", default_value = "scour-state")]
    state_config_map: String,
    /// Host directory on every node for the Trivy DB, scan cache and policy cache.
    #[arg(long, env = "SCOUR_NODE_STATE_DIR", default_value = "/var/lib/scour")]
    node_state_dir: String,
    /// The system exclusion ConfigMap, enforced by every worker as a hard guard.
    #[arg(
        long,
        env = "SCOUR_SYSTEM_EXCLUSION_CONFIG_MAP",
        default_value = "eraser-system-exclusion"
    )]
    system_exclusion_config_map: String,
    /// Finished ImageJobs kept as records.
    #[arg(long, env = "SCOUR_HISTORY", default_value_t = 10)]
    history: usize,
}

impl ControllerArgs {
    fn options(&self) -> Options {
        let identity = self.identity.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "scour".into());
            format!("{host}-{}", std::process::id())
        });
        Options {
            config_map: self.config_map.clone(),
            worker_image: self.worker_image.clone(),
            lease_name: self.lease_name.clone(),
            lease_duration: self.lease_duration,
            worker_service_account: self.worker_service_account.clone(),
            state_config_map: self.state_config_map.clone(),
            node_state_dir: self.node_state_dir.clone(),
            system_exclusion_config_map: self.system_exclusion_config_map.clone(),
            history: self.history,
            debounce: self.debounce,
            watch_timeout: self.watch_timeout,
            ..Options::new(&self.namespace, &identity)
        }
    }
}

pub fn run(args: ControllerArgs) -> Result<ExitCode> {
    // One thread: the controller waits on the API, and stays small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let opts = args.options();
        let client = client(&opts.identity).await?;
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let router = serve::router(metrics.clone(), health.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("the health and metrics server stopped: {e}");
            }
        });
        let cancel = CancellationToken::new();
        super::worker::spawn_signal_handler(cancel.clone(), "stepping down and exiting");
        tracing::info!(namespace = %opts.namespace, identity = %opts.identity, listen = %args.listen, "controller starting");
        let controller = Controller::new(client, opts, Arc::new(SystemClock), metrics);
        let mut progress = controller.progress();
        tokio::spawn(async move {
            while progress.changed().await.is_ok() {
                let reached = progress.borrow().reached;
                health.ready.store(reached, Ordering::Relaxed);
            }
        });
        controller.run(cancel).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// A client from the in-cluster config or KUBECONFIG, that names itself to
/// the API server (its audit log shows `scour-controller/VERSION (IDENTITY)`).
async fn client(identity: &str) -> Result<kube::Client> {
    let mut config = kube::Config::infer()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let agent = format!("scour-controller/{} ({identity})", env!("CARGO_PKG_VERSION"));
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&agent).context("the user agent")?,
    ));
    kube::Client::try_from(config).context("building the Kubernetes client")
}
