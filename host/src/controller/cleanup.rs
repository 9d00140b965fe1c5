//! After a run: its finished worker pods go once its delay has passed
//! (`delayOnSuccess`, `delayOnFailure`), the oldest ImageJobs beyond the
//! history limit go, and so do worker pods whose ImageJob was deleted
//! (nothing else would delete them where no garbage collector runs).

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::api::delete_if_present;
use super::crd::{ImageJob, JobPhase};
use super::error::Result;
use super::reconcile::Reconciler;
use super::{FIELD_MANAGER, LABEL_JOB};

impl Reconciler {
    pub(super) async fn clean_up(&mut self, now: Timestamp) -> Result<()> {
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.opts.namespace);
        let jobs_api: Api<ImageJob> = Api::all(self.client.clone());
        let jobs = self.jobs();
        let mut finished: Vec<&Arc<ImageJob>> = jobs
            .iter()
            .filter(|j| {
                j.metadata.deletion_timestamp.is_none()
                    && j.status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .is_some_and(|p| p != JobPhase::Running)
            })
            .collect();
        finished.sort_by_key(|j| std::cmp::Reverse((j.metadata.creation_timestamp.clone(), j.name_any())));
        for (i, job) in finished.into_iter().enumerate() {
            let name = job.name_any();
            let status = job.status.clone().unwrap_or_default();
            let expired = i >= self.opts.history;
            let delete_after = status.delete_after.as_ref().map(|t| t.0);
            let due = delete_after.is_none_or(|t| t <= now);
            if !status.pods_deleted && (due || expired) {
                for pod in self.pods_of(&name) {
                    delete_if_present(&pods_api, &pod).await?;
                }
                self.plans.remove(&name);
                if !expired {
                    // A merge patch of one field: the record keeps its results.
                    let patch = Patch::Merge(json!({ "status": { "podsDeleted": true } }));
                    jobs_api
                        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER), &patch)
                        .await?;
                    self.wrote(&name, job.resource_version());
                }
            } else if !status.pods_deleted
                && let Some(t) = delete_after
            {
                self.wake_at(t);
            }
            if expired {
                self.delete_results(&name).await?;
                delete_if_present(&jobs_api, &name).await?;
            }
        }
        self.delete_orphans(&jobs, &pods_api, &jobs_api).await
    }

    /// Worker pods whose ImageJob is gone, as the API confirms (the job
    /// store may lag behind a job just created).
    async fn delete_orphans(
        &mut self,
        jobs: &[Arc<ImageJob>],
        pods_api: &Api<Pod>,
        jobs_api: &Api<ImageJob>,
    ) -> Result<()> {
        let mut known: HashSet<String> = jobs.iter().map(|j| j.name_any()).collect();
        known.extend(self.pending_jobs());
        let mut orphans: Vec<(String, String)> = self
            .inputs
            .pods
            .state()
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| Some((p.labels().get(LABEL_JOB)?.clone(), p.name_any())))
            .filter(|(job, _)| !known.contains(job))
            .collect();
        orphans.sort();
        let mut checked: Option<(String, bool)> = None;
        for (job, pod) in orphans {
            let gone = match &checked {
                Some((j, gone)) if *j == job => *gone,
                _ => {
                    let gone = jobs_api.get_metadata_opt(&job).await?.is_none();
                    checked = Some((job.clone(), gone));
                    gone
                }
            };
            if gone {
                tracing::info!(%job, %pod, "deleting a worker pod whose ImageJob is gone");
                delete_if_present(pods_api, &pod).await?;
            }
        }
        Ok(())
    }

    fn pods_of(&self, job: &str) -> Vec<String> {
        self.inputs
            .pods
            .state()
            .iter()
            .filter(|p| p.labels().get(LABEL_JOB).map(String::as_str) == Some(job))
            .map(|p| p.name_any())
            .collect()
    }
}
