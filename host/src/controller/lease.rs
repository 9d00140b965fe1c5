//! Leader election through a `coordination.k8s.io/v1` Lease, with the API
//! server's optimistic concurrency deciding races: two replicas are safe.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use super::error::{Result, api_code};

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    leading: bool,
    /// The Lease as our last write left it: a leader renews it with one
    /// request, and a 409 says someone else wrote it since.
    ours: Option<Lease>,
    /// Another holder's record (holder, renewTime) as last seen, and when
    /// this replica first saw it: expiry is timed from that moment on this
    /// replica's clock, not from the other replica's renewTime, so clocks
    /// that disagree cannot hand the Lease over early.
    observed: Option<(Option<String>, Option<MicroTime>, Timestamp)>,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            leading: false,
            ours: None,
            observed: None,
        }
    }

    /// Takes or renews the lease. Another holder's lease is taken only once
    /// it has not been renewed for its whole duration. A leader renews with
    /// one request; if someone wrote the Lease since, it reads it again.
    pub async fn try_lead(&mut self, now: Timestamp) -> Result<bool> {
        if self.leading
            && let Some(lease) = self.ours.clone()
        {
            match self.attempt(Some(lease), now).await {
                Err(e) if api_code(&e) == Some(409) => {}
                outcome => return self.settle(outcome, now),
            }
        }
        let outcome = match self.api.get_opt(&self.name).await {
            Ok(current) => self.attempt(current, now).await,
            Err(e) => Err(e),
        };
        self.settle(outcome, now)
    }

    /// Until when our last renewal holds the lease, while we lead.
    pub fn valid_until(&self) -> Option<Timestamp> {
        let renewed = self.ours.as_ref()?.spec.as_ref()?.renew_time.as_ref()?.0;
        self.leading.then(|| super::clock::add(renewed, self.duration))
    }

    async fn attempt(&mut self, current: Option<Lease>, now: Timestamp) -> kube::Result<Option<Lease>> {
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().clamp(1, i32::MAX as u64) as i32),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        };
        match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        acquire_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..spec
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await.map(Some)
            }
            Some(mut lease) => {
                let old = lease.spec.clone().unwrap_or_default();
                let ours = old.holder_identity.as_deref() == Some(self.identity.as_str());
                if !ours && !self.expired(&old, now) {
                    return Ok(None);
                }
                let transitions = old.lease_transitions.unwrap_or(0).saturating_add(i32::from(!ours));
                lease.spec = Some(LeaseSpec {
                    acquire_time: if ours { old.acquire_time } else { Some(MicroTime(now)) },
                    lease_transitions: Some(transitions),
                    ..spec
                });
                // Carries the resourceVersion we read: a concurrent writer makes this 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(Some)
            }
        }
    }

    /// `Ok(Some)`: we hold it; `Ok(None)` or a 409: another replica does.
    /// Any other error leaves us unsure: the caller decides whether its
    /// last renewal still covers it ([`Elector::valid_until`]).
    fn settle(&mut self, outcome: kube::Result<Option<Lease>>, now: Timestamp) -> Result<bool> {
        match outcome {
            Ok(Some(lease)) => {
                if !self.leading {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                }
                self.ours = Some(lease);
                self.leading = true;
                Ok(true)
            }
            Ok(None) => {
                self.lose();
                Ok(false)
            }
            Err(e) if api_code(&e) == Some(409) => {
                self.lose();
                Ok(false)
            }
            Err(e) => {
                if self.valid_until().is_none_or(|t| t <= now) {
                    self.lose();
                }
                Err(e.into())
            }
        }
    }

    fn lose(&mut self) {
        if self.leading {
            tracing::info!(identity = %self.identity, lease = %self.name, "no longer the leader");
        }
        self.leading = false;
        self.ours = None;
    }

    /// Gives the lease up on shutdown so a standby takes over at once.
    pub async fn release(&mut self) {
        if !self.leading {
            return;
        }
        self.leading = false;
        self.ours = None;
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
        }
    }
}

impl Elector {
    /// Whether another holder's Lease has gone unrenewed for its whole
    /// duration since this replica saw its latest renewal. A released
    /// Lease (no holder) is free at once.
    fn expired(&mut self, spec: &LeaseSpec, now: Timestamp) -> bool {
        if spec.holder_identity.as_deref().unwrap_or("").is_empty() {
            return true;
        }
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let seen_at = match &self.observed {
            Some((holder, renewed, at)) if (holder, renewed) == (&record.0, &record.1) => *at,
            _ => {
                self.observed = Some((record.0, record.1, now));
                now
            }
        };
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
        now.as_second() - seen_at.as_second() >= duration
    }
}
