//! What must survive a controller restart, in a ConfigMap: when the next
//! automatic run is due, and which ImageList version already ran. Without
//! it a restart would start a run on every node (Eraser #1169).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use super::error::{Error, Result};
use super::vet::VettedPolicy;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// When the next automatic run is due; none while automatic mode is off.
    pub next_run: Option<Timestamp>,
    /// The interval `next_run` was computed with, so a changed interval
    /// moves it.
    pub interval: Option<Duration>,
    /// `uid/generation` of the ImageList spec the last manual run was
    /// started for.
    pub imagelist: Option<String>,
    /// `manual:FINGERPRINT` or `automatic:FINGERPRINT`: that run failed
    /// closed, and is tried again once the config and exclusion ConfigMaps
    /// no longer match the fingerprint.
    pub retry: Option<String>,
}

/// The ConfigMap keys [`State`] is written to; other keys (the last good
/// policy) are kept as they are.
const STATE_KEYS: [&str; 4] = ["nextRun", "intervalSeconds", "imagelist", "retry"];
/// The last registry policy that passed vetting, run when a newer one is
/// refused; written on its own, so that no caller's older copy of
/// [`State`] can undo it.
const POLICY_KEY: &str = "lastGoodPolicy";

pub struct Store {
    api: Api<ConfigMap>,
    name: String,
    loaded: Option<(State, ConfigMap)>,
}

impl Store {
    pub fn new(api: Api<ConfigMap>, name: &str) -> Self {
        Self {
            api,
            name: name.to_owned(),
            loaded: None,
        }
    }

    /// The state as last loaded or saved; read from the API the first time.
    pub async fn get(&mut self) -> Result<State> {
        match &self.loaded {
            Some((state, _)) => Ok(state.clone()),
            None => self.load().await,
        }
    }

    async fn load(&mut self) -> Result<State> {
        let cm = self.api.get_opt(&self.name).await?.unwrap_or_else(|| ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            ..Default::default()
        });
        let data = cm.data.clone().unwrap_or_default();
        let bad = |key: &str, e: String| Error::State {
            name: self.name.clone(),
            message: format!("{key}: {e}"),
        };
        let state = State {
            next_run: data
                .get("nextRun")
                .map(|t| t.parse::<Timestamp>().map_err(|e| bad("nextRun", e.to_string())))
                .transpose()?,
            interval: data
                .get("intervalSeconds")
                .map(|t| {
                    t.parse::<u64>()
                        .map(Duration::from_secs)
                        .map_err(|e| bad("intervalSeconds", e.to_string()))
                })
                .transpose()?,
            imagelist: data.get("imagelist").cloned(),
            retry: data.get("retry").cloned(),
        };
        self.loaded = Some((state.clone(), cm));
        Ok(state)
    }

    /// Writes the state if it changed since it was read. A conflict means
    /// another writer got there first; the caller stops this reconcile and
    /// the next one reads the state again.
    pub async fn save(&mut self, state: &State) -> Result<()> {
        let Some((old, cm)) = &self.loaded else {
            return Ok(());
        };
        if old == state {
            return Ok(());
        }
        let mut data = cm.data.clone().unwrap_or_default();
        data.retain(|k, _| !STATE_KEYS.contains(&k.as_str()));
        if let Some(t) = state.next_run {
            data.insert("nextRun".to_owned(), t.to_string());
        }
        if let Some(i) = state.interval {
            data.insert("intervalSeconds".to_owned(), i.as_secs().to_string());
        }
        if let Some(l) = &state.imagelist {
            data.insert("imagelist".to_owned(), l.clone());
        }
        if let Some(r) = &state.retry {
            data.insert("retry".to_owned(), r.clone());
        }
        let mut cm = cm.clone();
        cm.data = Some(data);
        let saved = self.write(cm).await?;
        self.loaded = Some((state.clone(), saved));
        Ok(())
    }

    /// The last registry policy that passed vetting.
    pub async fn good_policy(&mut self) -> Result<Option<VettedPolicy>> {
        self.get().await?;
        let Some((_, cm)) = &self.loaded else {
            return Ok(None);
        };
        cm.data
            .as_ref()
            .and_then(|d| d.get(POLICY_KEY))
            .map(|text| {
                serde_json::from_str(text).map_err(|e| Error::State {
                    name: self.name.clone(),
                    message: format!("{POLICY_KEY}: {e}"),
                })
            })
            .transpose()
    }

    /// Records `policy` as the last good one.
    pub async fn keep_good_policy(&mut self, policy: &VettedPolicy) -> Result<()> {
        let state = self.get().await?;
        let Some((_, cm)) = &self.loaded else {
            return Ok(());
        };
        let text = serde_json::to_string(policy).map_err(|e| Error::State {
            name: self.name.clone(),
            message: format!("{POLICY_KEY}: {e}"),
        })?;
        let mut cm = cm.clone();
        cm.data.get_or_insert_default().insert(POLICY_KEY.to_owned(), text);
        let saved = self.write(cm).await?;
        self.loaded = Some((state, saved));
        Ok(())
    }

    /// Creates or replaces the ConfigMap.
    async fn write(&mut self, cm: ConfigMap) -> Result<ConfigMap> {
        let saved = if cm.metadata.resource_version.is_some() {
            self.api.replace(&self.name, &PostParams::default(), &cm).await
        } else {
            self.api.create(&PostParams::default(), &cm).await
        };
        match saved {
            Ok(saved) => Ok(saved),
            Err(e) => {
                // Another writer (a previous leader) got there first, or the
                // write may not have happened: read it again next time.
                self.loaded = None;
                Err(e.into())
            }
        }
    }
}
