//! Remove: CRI `RemoveImage` by id, with bounded concurrency. The image's
//! names and the containers are read again immediately before each removal,
//! because containerd removes images that containers use without a word, and
//! removing by id takes every name the image has by then.

use std::sync::Arc;

use scour_policy_sdk::Image;
use tokio_util::sync::CancellationToken;

use crate::collect::ImageIndex;
use crate::cri::{CriClient, CriError, Removal};
use crate::guard::{Guard, Veto};

/// What happened to one image the pass meant to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Removed,
    /// It was already gone.
    NotFound,
    /// `--dry-run`: it would have been removed.
    WouldRemove,
    /// A guard stopped it at the last moment (e.g. a container started).
    Vetoed(Veto),
    /// Not attempted: the pass is shutting down.
    Skipped(String),
    Failed {
        message: String,
        /// The runtime stopped answering, rather than refusing this image.
        runtime_unreachable: bool,
    },
}

fn failed(context: &str, e: CriError) -> Outcome {
    let runtime_unreachable = match &e {
        CriError::Connect { .. } | CriError::Timeout { .. } | CriError::SocketMissing(_) => true,
        CriError::Call { status, .. } => matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Cancelled),
        _ => false,
    };
    Outcome::Failed {
        message: format!("{context}{e}"),
        runtime_unreachable,
    }
}

/// Removes `targets`, re-checking the guards against a fresh container list
/// before each one.
pub async fn remove(
    cri: &CriClient,
    targets: Vec<Image>,
    guard: Arc<Guard>,
    dry_run: bool,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Vec<(Image, Outcome)> {
    // Once the runtime stops answering, the rest are not attempted: each
    // would wait out the CRI timeout, and a runtime that comes back halfway
    // would leave a pass that removed some of them after it had failed.
    let stop = cancel.child_token();
    let mut results = crate::bounded::map_bounded(targets.into_iter().enumerate(), concurrency, |(order, image)| {
        let (cri, guard, cancel, stop) = (cri.clone(), guard.clone(), cancel.clone(), stop.clone());
        async move {
            let outcome = if cancel.is_cancelled() {
                Outcome::Skipped("scour is shutting down".into())
            } else if stop.is_cancelled() {
                Outcome::Skipped("the container runtime stopped answering".into())
            } else {
                let outcome = remove_one(&cri, &image, &guard, dry_run).await;
                if matches!(
                    outcome,
                    Outcome::Failed {
                        runtime_unreachable: true,
                        ..
                    }
                ) {
                    stop.cancel();
                }
                outcome
            };
            (order, image, outcome)
        }
    })
    .await;
    results.sort_by_key(|(order, _, _)| *order);
    results
        .into_iter()
        .map(|(_, image, outcome)| (image, outcome))
        .collect()
}

/// The ids of `removed` images that a container references now: created
/// in the gap between the last check and `RemoveImage`, which CRI cannot
/// close (containerd's `RemoveImage` checks for no users). Found and
/// reported, not prevented.
pub async fn used_after_removal(cri: &CriClient, removed: &[Image]) -> Result<Vec<String>, String> {
    if removed.is_empty() {
        return Ok(Vec::new());
    }
    let containers = cri.list_containers().await.map_err(|e| e.to_string())?;
    let index = ImageIndex::new(removed);
    let mut ids: Vec<String> = index
        .used_by(&containers)
        .into_iter()
        .filter_map(|i| removed.get(i).map(|img| img.id.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

async fn remove_one(cri: &CriClient, image: &Image, guard: &Guard, dry_run: bool) -> Outcome {
    // Re-check with what is true now, not what was true at collect time: a
    // scan can take an hour, and meanwhile the image may have gained a tag
    // (a pull resolving to the same id), been pinned, or found a container.
    let fresh = match cri.image_status(&image.id).await {
        Ok(None) => return Outcome::NotFound,
        Ok(Some(fresh)) => fresh,
        Err(e) => return failed("cannot re-check the image before removal: ", e),
    };
    let containers = match cri.list_containers().await {
        Ok(c) => c,
        Err(e) => return failed("cannot re-check containers before removal: ", e),
    };
    let mut now = image.clone();
    now.tags = fresh.tags;
    now.digests = fresh.digests;
    now.pinned = fresh.pinned;
    now.in_use = !ImageIndex::new(std::slice::from_ref(&now))
        .used_by(&containers)
        .is_empty();
    if let Some(veto) = guard.check(&now) {
        return Outcome::Vetoed(veto);
    }
    if dry_run {
        return Outcome::WouldRemove;
    }
    match cri.remove_image(&image.id).await {
        Ok(Removal::Removed) => Outcome::Removed,
        Ok(Removal::NotFound) => Outcome::NotFound,
        Err(e) => failed("", e),
    }
}
