//! A registry policy is vetted before any node runs it: the controller pulls
//! it, loads it, validates its settings and runs the golden cases shipped
//! with it (`scour policy push --cases`). A refused policy leaves the last
//! good one in place, kept in the state ConfigMap across restarts, and the
//! run says why in an event and its `PolicyRefused` condition. With no last
//! good policy the run fails closed: no pod starts.
//!
//! With `scour.policy.canary`, a newly vetted policy runs dry on the run's
//! first node before any other node starts, and becomes the last good one
//! only once that pass completes.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::events::Event;
use super::pods::{self, DOCKER_CONFIG_KEY, PolicyMount};
use super::reconcile::Reconciler;
use crate::config::Loaded;
use crate::policy::golden::{self, Case};
use crate::policy::oci::{self, PolicyRef, RegistryOptions};
use crate::policy::{ArtifactCache, Error as PolicyError, Limits, LoadedPolicy, PolicyEngine};

/// A registry policy and the settings it passed vetting with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VettedPolicy {
    pub module: String,
    pub settings: String,
}

/// What a run's workers are given.
#[derive(Debug, Clone)]
pub struct PolicyChoice {
    pub mount: PolicyMount,
    /// Why the configured policy was refused, when `mount` is the last good one.
    pub refused: Option<String>,
    /// A newly vetted policy that becomes the last good one only once a
    /// canary node has run it (`scour.policy.canary`).
    pub canary: Option<VettedPolicy>,
}

impl Reconciler {
    /// The policy a run starts with. Anything but a registry policy is
    /// passed through (a ConfigMap or baked-in policy is pinned and checked
    /// by each worker). A registry policy is vetted once per reference and
    /// settings; `Ok(Err(why))` means it was refused and no last good one
    /// exists.
    pub(super) async fn choose_policy(
        &mut self,
        loaded: &Loaded,
        now: Timestamp,
    ) -> Result<std::result::Result<PolicyChoice, String>> {
        let mount = pods::policy_mount(loaded);
        let PolicyMount::Registry {
            module,
            settings,
            insecure,
        } = &mount
        else {
            return Ok(Ok(PolicyChoice {
                mount,
                refused: None,
                canary: None,
            }));
        };
        let wanted = VettedPolicy {
            module: module.clone(),
            settings: settings.clone(),
        };
        let verdict = match self.vetted.get(&wanted) {
            Some(v) => v.clone(),
            None => {
                let verdict = self.vet(&wanted, insecure, loaded).await?;
                self.report_vetting(&wanted, &verdict, now).await;
                // An unreachable registry is tried again at the next run;
                // a policy that failed its checks is not.
                if verdict.as_ref().err().is_none_or(|(_, lasting)| *lasting) {
                    self.vetted.insert(wanted.clone(), verdict.clone());
                }
                verdict
            }
        };
        let good = self.state.good_policy().await?;
        match verdict {
            Ok(()) => {
                let new = good.as_ref() != Some(&wanted);
                let canary = (new && loaded.config.scour.policy.canary).then(|| wanted.clone());
                if new && canary.is_none() {
                    self.state.keep_good_policy(&wanted).await?;
                }
                Ok(Ok(PolicyChoice {
                    mount,
                    refused: None,
                    canary,
                }))
            }
            Err((why, _)) => match good.filter(|good| *good != wanted) {
                Some(good) => Ok(Ok(PolicyChoice {
                    mount: PolicyMount::Registry {
                        module: good.module.clone(),
                        settings: good.settings,
                        insecure: insecure.clone(),
                    },
                    refused: Some(format!(
                        "policy {} was refused, so this run keeps the last good policy {}: {why}",
                        wanted.module, good.module
                    )),
                    canary: None,
                })),
                None => Ok(Err(format!(
                    "policy {} was refused and there is no earlier good policy to run: {why}",
                    wanted.module
                ))),
            },
        }
    }

    /// Pulls and checks one policy. `Err((why, lasting))`: `lasting` is
    /// false when the registry could not be asked, which may pass.
    async fn vet(
        &self,
        wanted: &VettedPolicy,
        insecure: &[String],
        loaded: &Loaded,
    ) -> Result<std::result::Result<(), (String, bool)>> {
        let reference = match PolicyRef::parse(&wanted.module) {
            Ok(r) => r,
            Err(e) => return Ok(Err((e, true))),
        };
        let mut opts = RegistryOptions {
            insecure: insecure.to_vec(),
            ..RegistryOptions::default()
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        for name in &loaded.config.manager.pull_secrets {
            let Some(secret) = secrets.get_opt(name).await? else {
                tracing::warn!(secret = %name, "pull secret not found; the policy is pulled without it");
                continue;
            };
            if let Some(config) = secret.data.as_ref().and_then(|d| d.get(DOCKER_CONFIG_KEY)) {
                opts.auth.push((format!("secret {name}"), config.0.clone()));
            }
        }
        let pulled = match oci::pull(&reference, &opts).await {
            Ok(p) => p,
            Err(e @ PolicyError::Registry { .. }) => return Ok(Err((e.to_string(), false))),
            Err(e) => return Ok(Err((e.to_string(), true))),
        };
        let settings = wanted.settings.clone();
        let checked = tokio::task::spawn_blocking(move || check(&pulled, &settings)).await;
        Ok(match checked {
            Ok(result) => result.map_err(|why| (why, true)),
            Err(e) => Err((format!("vetting stopped: {e}"), false)),
        })
    }

    async fn report_vetting(
        &mut self,
        wanted: &VettedPolicy,
        verdict: &std::result::Result<(), (String, bool)>,
        now: Timestamp,
    ) {
        let (warning, reason, note) = match verdict {
            Ok(()) => (
                false,
                "PolicyAccepted",
                format!(
                    "policy {} passed vetting (loads, accepts its settings, passes its golden cases)",
                    wanted.module
                ),
            ),
            Err((why, _)) => (
                true,
                "PolicyRefused",
                format!("policy {} refused: {why}", wanted.module),
            ),
        };
        if warning {
            tracing::warn!(policy = %wanted.module, "{note}");
        } else {
            tracing::info!(policy = %wanted.module, "{note}");
        }
        let event = Event {
            regarding: self.config_map_ref(&self.opts.config_map.clone()),
            warning,
            reason,
            action: "VetPolicy",
            note,
        };
        self.events.publish(event, now).await;
    }
}

/// Loads the component with its settings and runs its shipped cases, with
/// the fuel budget `scour policy push` and `scour policy test` use, so that
/// a verdict is the same on every machine.
fn check(pulled: &oci::Pulled, settings: &str) -> std::result::Result<(), String> {
    let cases = Case::parse_shipped(&pulled.cases).map_err(|e| format!("its golden cases do not parse: {e}"))?;
    let cache = std::env::var_os("SCOUR_POLICY_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(ArtifactCache::default_dir)
        .map(ArtifactCache::new);
    let engine = PolicyEngine::new(Limits::deterministic(Limits::DEFAULT_FUEL), cache).map_err(|e| e.to_string())?;
    let origin = pulled.reference.to_string();
    let policy = LoadedPolicy::load(&engine, &pulled.component, &origin, settings).map_err(|e| e.to_string())?;
    golden::verify(&policy, &cases).map_err(|e| e.to_string())?;
    tracing::info!(
        policy = %origin,
        name = %policy.info().name,
        version = %policy.info().version,
        component = policy.digest(),
        cases = cases.len(),
        "policy vetted"
    );
    Ok(())
}
