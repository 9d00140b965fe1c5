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
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            leading: false,
        }
    }

    /// Takes or renews the lease. Another holder's lease is taken only once
    /// it has not been renewed for its whole duration.
    pub async fn try_lead(&mut self, now: Timestamp) -> Result<bool> {
        let current = self.api.get_opt(&self.name).await?;
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        };
        let outcome = match current {
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
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Some(mut lease) => {
                let old = lease.spec.clone().unwrap_or_default();
                let ours = old.holder_identity.as_deref() == Some(self.identity.as_str());
                if !ours && !expired(&old, now) {
                    self.leading = false;
                    return Ok(false);
                }
                let transitions = old.lease_transitions.unwrap_or(0) + i32::from(!ours);
                lease.spec = Some(LeaseSpec {
                    acquire_time: if ours { old.acquire_time } else { Some(MicroTime(now)) },
                    lease_transitions: Some(transitions),
                    ..spec
                });
                // Carries the resourceVersion we read: a concurrent writer makes this 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match outcome {
            Ok(()) => {
                if !self.leading {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                }
                self.leading = true;
            }
            Err(e) if api_code(&e) == Some(409) => {
                self.leading = false;
            }
            Err(e) => {
                // Unsure whether we still hold it: act as a follower until we know.
                self.leading = false;
                return Err(e.into());
            }
        }
        Ok(self.leading)
    }

    /// Gives the lease up on shutdown so a standby takes over at once.
    pub async fn release(&mut self) {
        if !self.leading {
            return;
        }
        self.leading = false;
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

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    if spec.holder_identity.as_deref().unwrap_or("").is_empty() {
        return true;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    now.as_second() - renewed.0.as_second() >= duration
}
