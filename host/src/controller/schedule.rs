//! When a run is due: the ImageList `imagelist` has a spec no run has
//! covered yet (manual), a run that failed closed has new inputs (retry),
//! or the interval has elapsed (automatic). What has run is kept in the
//! state ConfigMap, so a restart starts nothing twice (Eraser #1169).

use std::collections::HashSet;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use sha2::Digest;

use super::clock::{add, sub};
use super::crd::{ImageList, Trigger};
use super::error::{Error, Result};
use super::events::Event;
use super::reconcile::Reconciler;
use super::{IMAGELIST_NAME, Tick};
use crate::config::Loaded;

/// The manual run's ImageJob name for a list's current spec.
fn manual_name(list: &ImageList) -> String {
    format!(
        "scour-manual-{}-g{}",
        list.uid().unwrap_or_default().chars().take(8).collect::<String>(),
        list.meta().generation.unwrap_or(0)
    )
}

/// `uid/generation`: a spec version of an ImageList; a re-created list is a
/// new version even with the same images.
pub fn list_version(list: &ImageList) -> String {
    format!(
        "{}/{}",
        list.uid().unwrap_or_default(),
        list.meta().generation.unwrap_or(0)
    )
}

impl Reconciler {
    pub(super) async fn maybe_start(&mut self, loaded: &Loaded, now: Timestamp) -> Result<Tick> {
        let mut state = self.state.get().await?;
        let lists = self.inputs.lists.state();
        self.ignore_misnamed(&lists, now).await;
        let list = lists
            .iter()
            .find(|l| l.name_any() == IMAGELIST_NAME && l.metadata.deletion_timestamp.is_none())
            .map(|l| (**l).clone());
        if let Some(list) = &list {
            let version = list_version(list);
            if state.imagelist.as_deref() != Some(version.as_str()) {
                let started = self
                    .start(&manual_name(list), Trigger::Manual, Some(list), loaded, now)
                    .await?;
                // Recorded after the job exists; a crash in between finds
                // the job by its name instead of starting a second one.
                state.imagelist = Some(version);
                state.retry = match &started.failed_closed {
                    Some(fp) => Some(format!("manual:{fp}")),
                    None => state.retry.filter(|r| r.starts_with("automatic:")),
                };
                self.state.save(&state).await?;
                return Ok(Tick::Started(started.name));
            }
        }
        // A run that failed closed is tried again once the config or an
        // exclusion list has changed, rather than an interval later or
        // never.
        if let Some(retry) = state.retry.clone() {
            let (trigger, old) = retry.split_once(':').unwrap_or(("", ""));
            let current = self.inputs_fingerprint();
            if current != old {
                let suffix: String = current.chars().take(6).collect();
                let started = match (trigger, &list) {
                    ("manual", Some(list)) => {
                        let name = format!("{}-r{suffix}", manual_name(list));
                        Some(self.start(&name, Trigger::Manual, Some(list), loaded, now).await?)
                    }
                    ("automatic", _) if loaded.automatic_enabled() => {
                        // Named from what is kept (the failed inputs) and what
                        // is read (the new ones): the same after a restart.
                        let failed: String = old.chars().take(6).collect();
                        let name = format!("scour-automatic-retry-{failed}-{suffix}");
                        Some(self.start(&name, Trigger::Automatic, None, loaded, now).await?)
                    }
                    _ => None,
                };
                state.retry = started
                    .as_ref()
                    .and_then(|s| s.failed_closed.as_ref())
                    .map(|fp| format!("{trigger}:{fp}"));
                self.state.save(&state).await?;
                if let Some(started) = started {
                    return Ok(Tick::Started(started.name));
                }
            }
        }
        if !loaded.automatic_enabled() {
            state.next_run = None;
            state.interval = None;
            self.state.save(&state).await?;
            return Ok(Tick::Idle);
        }
        let interval = loaded.interval().map_err(|message| Error::Config {
            config_map: self.opts.config_map.clone(),
            message: message.to_string(),
        })?;
        let due = match (state.next_run, state.interval) {
            (None, _) if loaded.begin_immediately() => now,
            (None, _) => add(now, interval),
            // A changed interval moves the pending run with it.
            (Some(t), Some(old)) if old != interval => add(sub(t, old), interval),
            (Some(t), _) => t,
        };
        state.interval = Some(interval);
        if now < due {
            state.next_run = Some(due);
            self.state.save(&state).await?;
            self.wake_at(due);
            return Ok(Tick::Idle);
        }
        // Due: kept before the run exists, so that the run's name (made
        // from it) is the same if the controller stops in between.
        if state.next_run != Some(due) {
            state.next_run = Some(due);
            self.state.save(&state).await?;
        }
        let name = format!("scour-automatic-{}", due.strftime("%Y%m%d-%H%M%S"));
        let started = self.start(&name, Trigger::Automatic, None, loaded, now).await?;
        state.next_run = Some(add(now, interval));
        state.retry = started.failed_closed.map(|fp| format!("automatic:{fp}"));
        self.state.save(&state).await?;
        Ok(Tick::Started(started.name))
    }

    /// One event per ImageList with another name, for as long as it exists.
    async fn ignore_misnamed(&mut self, lists: &[std::sync::Arc<ImageList>], now: Timestamp) {
        const PREFIX: &str = "ignored:";
        let misnamed: Vec<&ImageList> = lists
            .iter()
            .filter(|l| l.name_any() != IMAGELIST_NAME)
            .map(|l| &**l)
            .collect();
        let keys: HashSet<String> = misnamed
            .iter()
            .map(|l| format!("{PREFIX}{}", l.uid().unwrap_or_default()))
            .collect();
        self.events.clear_except(PREFIX, &keys);
        for list in misnamed {
            let message =
                format!("ignored: only the ImageList named {IMAGELIST_NAME:?} starts a run; rename this one to use it");
            let key = format!("{PREFIX}{}", list.uid().unwrap_or_default());
            if self.events.stand(&key) {
                tracing::warn!(imagelist = %list.name_any(), "{message}");
                let event = Event {
                    regarding: list.object_ref(&()),
                    warning: true,
                    reason: "Ignored",
                    action: "StartRun",
                    note: message,
                };
                self.events.publish(event, now).await;
            }
        }
    }

    /// Changes whenever the config or an exclusion ConfigMap changes: what
    /// a run that failed closed waits for before it is tried again.
    pub(super) fn inputs_fingerprint(&self) -> String {
        let version = |cm: Option<&k8s_openapi::api::core::v1::ConfigMap>| {
            cm.and_then(|c| c.metadata.resource_version.clone()).unwrap_or_default()
        };
        let config = self
            .inputs
            .config
            .state()
            .into_iter()
            .find(|c| c.name_any() == self.opts.config_map);
        let (system, user) = self.config_maps();
        let mut parts = vec![
            format!("{}={}", self.opts.config_map, version(config.as_deref())),
            format!(
                "{}={}",
                self.opts.system_exclusion_config_map,
                version(system.as_deref())
            ),
        ];
        parts.extend(user.iter().map(|c| format!("{}={}", c.name_any(), version(Some(c)))));
        let digest = sha2::Sha256::digest(parts.join("\n").as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}
