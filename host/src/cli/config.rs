//! `scour config check`: validate an EraserConfig file before it ships.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::EXIT_USAGE;
use super::policy::PolicyArgs;
use crate::config::{Loaded, parse_concurrency};
use crate::policy::{DigestPin, PolicySource};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check an EraserConfig file (Eraser's fields and scour's `scour` section) and show what scour takes from it.
    ///
    /// The policy settings are checked by the policy itself: the built-in
    /// default policy, the registry policy scour.policy.module names (pulled
    /// here), or the component given with --policy, whose digest must then
    /// match scour.policy.sha256.
    Check {
        /// The file, e.g. eraser-manager-config's controller_manager_config.yaml.
        file: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

pub fn run(cmd: ConfigCommand) -> Result<ExitCode> {
    let ConfigCommand::Check { file, mut policy } = cmd;
    let loaded = match Loaded::from_file(&file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let c = &loaded.config;
    let custom =
        c.scour.policy.config_map.is_some() || c.scour.policy.path.is_some() || c.scour.policy.module.is_some();
    // A registry policy can be fetched: check the one the config names.
    if let (None, Some(module)) = (&policy.policy, &c.scour.policy.module) {
        policy.policy = Some(module.into());
        policy
            .registry
            .insecure_registry
            .extend(c.scour.policy.insecure_sources.iter().cloned());
    }
    let source = policy.source()?;
    if custom && matches!(source, PolicySource::Embedded) {
        // Without the bytes the settings cannot be checked; say so rather than pass.
        eprintln!(
            "note: the config names a custom policy; pass --policy FILE.wasm to check its digest and settings too"
        );
    } else {
        let settings = loaded.policy_settings(matches!(source, PolicySource::Embedded));
        let checked = policy.load(policy.limits(), &settings).and_then(|p| {
            if let Some(pin) = &c.scour.policy.sha256 {
                DigestPin::parse(pin).map_err(anyhow::Error::msg)?.check(p.digest())?;
            }
            Ok(p)
        });
        match checked {
            Ok(p) => println!(
                "ok: {} accepts these settings ({} {}, {})",
                p.origin(),
                p.info().name,
                p.info().version,
                p.digest()
            ),
            Err(e) => {
                eprintln!("error: {}: {e:#}", file.display());
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        }
    }
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
            _ if c.scour.policy.module.is_some() => format!(
                "{}, vetted by the controller before rollout",
                c.scour.policy.module.as_deref().unwrap_or_default()
            ),
            (Some(cm), _, Some(pin)) => format!("ConfigMap {cm}, pinned to {pin}"),
            (_, Some(path), Some(pin)) => format!("{path} in the worker image, pinned to {pin}"),
            _ => "the default policy built into scour".to_owned(),
        },
    );
    let settings = loaded.policy_settings(!custom);
    show(
        "policy settings",
        if settings.is_empty() {
            "(the policy's defaults)".to_owned()
        } else {
            settings
        },
    );
    if let Some(Ok(n)) = c.scour.rollout.max_concurrency.as_deref().map(parse_concurrency) {
        show("nodes at once", n.to_string());
    }
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
