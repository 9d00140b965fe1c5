//! `scour config check`: validate an EraserConfig file before it ships.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::EXIT_USAGE;
use crate::config::{Loaded, parse_concurrency};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check an EraserConfig file (Eraser's fields and scour's `scour` section) and show what scour takes from it.
    Check {
        /// The file, e.g. eraser-manager-config's controller_manager_config.yaml.
        file: PathBuf,
    },
}

pub fn run(cmd: ConfigCommand) -> Result<ExitCode> {
    let ConfigCommand::Check { file } = cmd;
    let loaded = match Loaded::from_file(&file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let c = &loaded.config;
    println!("ok: {}", file.display());
    let show = |key: &str, value: String| println!("  {key:<28} {value}");
    show("runtime", loaded.runtime_address().unwrap_or("(not set)").to_owned());
    show(
        "automatic mode",
        match c.components.collector.enabled {
            Some(false) => "off (ImageList only)".to_owned(),
            _ => format!(
                "every {}",
                c.scour
                    .schedule
                    .interval
                    .as_deref()
                    .or(c.manager.scheduling.repeat_interval.as_deref())
                    .unwrap_or("168h (default)")
            ),
        },
    );
    show(
        "policy",
        match (&c.scour.policy.config_map, &c.scour.policy.path, &c.scour.policy.sha256) {
            (Some(cm), _, Some(pin)) => format!("ConfigMap {cm}, pinned to {pin}"),
            (_, Some(path), Some(pin)) => format!("{path} in the worker image, pinned to {pin}"),
            _ => "the default policy built into scour".to_owned(),
        },
    );
    show(
        "policy settings",
        c.scour
            .policy
            .settings
            .clone()
            .unwrap_or_else(|| loaded.default_policy_settings()),
    );
    if let Some(Ok(n)) = c.scour.rollout.max_concurrency.as_deref().map(parse_concurrency) {
        show("nodes at once", n.to_string());
    }
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
