//! The `scour` command line. Every flag can also be set through a `SCOUR_*`
//! environment variable.

mod config;
mod controller;
mod policy;
mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code when the work could not be done safely or a check failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "scour",
    version,
    about = "Cleans stale and vulnerable container images off Kubernetes nodes",
    long_about = "scour lists a node's images over CRI, scans the unused ones with Trivy, and removes the stale and \
                  vulnerable ones. What to remove is decided by a sandboxed WebAssembly policy (the default one has \
                  the semantics of AKS Image Cleaner and Eraser); the host enforces its own guards afterwards."
)]
pub struct Cli {
    /// Log filter, e.g. `info`, `debug` or `scour=debug,warn`.
    #[arg(long, global = true, env = "SCOUR_LOG", default_value = "info")]
    log_level: String,
    /// Log format on stderr: JSON unless stderr is a terminal.
    #[arg(long, global = true, env = "SCOUR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, evaluate and test cleanup policies offline.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    Worker(Box<worker::WorkerArgs>),
    /// Check scour's configuration (Eraser's EraserConfig, plus scour's section).
    #[command(subcommand)]
    Config(config::ConfigCommand),
    Controller(Box<controller::ControllerArgs>),
    /// Print the CustomResourceDefinitions (ImageList, ImageJob) as YAML.
    Crd,
}

/// Output for people or for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Worker(args) => worker::run(*args),
        Command::Config(cmd) => config::run(cmd),
        Command::Controller(args) => controller::run(*args),
        Command::Crd => {
            print!("{}", crate::controller::crd::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: invalid log filter {filter:?} ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
    }
}
