//! Collect: what is on the node. Every image with its names, size and
//! `pinned`; which images containers use (created, running and exited alike);
//! the sandbox image; image filesystem usage; and when each image was first
//! seen.

mod state;

use std::collections::HashMap;
use std::path::Path;

use scour_policy_sdk::reference::normalize_for_matching;
use scour_policy_sdk::{Image, ImageFs, ScanOutcome};

pub use state::FirstSeen;

use crate::cri::{CriClient, CriContainer, CriError, RuntimeInfo};

/// The node as the pass sees it.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub runtime: RuntimeInfo,
    /// Every image; `scan` is `NotScanned` until the scan step.
    pub images: Vec<Image>,
    pub containers: Vec<CriContainer>,
    /// The runtime's sandbox image, when it reports one.
    pub sandbox_image: Option<String>,
    pub image_fs: Option<ImageFs>,
}

/// Lists images and containers, marks the images in use, and stamps
/// first-seen times.
pub async fn collect(cri: &CriClient, first_seen: &mut FirstSeen, now: u64) -> Result<Inventory, CriError> {
    let runtime = cri.version().await?;
    let listed = cri.list_images().await?;
    let containers = cri.list_containers().await?;
    let sandboxes = cri.list_sandboxes().await?;
    let sandbox_image = cri.sandbox_image().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the runtime's sandbox image from its status");
        None
    });
    let image_fs = match cri.image_fs_info().await {
        Ok(Some(fs)) => fs.used_bytes.map(|used| ImageFs {
            used_bytes: used,
            capacity_bytes: capacity_of(&fs.mountpoint),
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read image filesystem usage");
            None
        }
    };
    let seen = first_seen.update(listed.iter().map(|i| i.id.as_str()), now);
    let mut images: Vec<Image> = listed
        .into_iter()
        .zip(seen)
        .map(|(i, first_seen)| Image {
            id: i.id,
            tags: i.tags,
            digests: i.digests,
            size: i.size,
            pinned: i.pinned,
            in_use: false,
            first_seen,
            scan: ScanOutcome::NotScanned,
            excluded_by: None,
            listed_by: None,
        })
        .collect();
    mark_in_use(&mut images, &containers);
    mark_in_use(&mut images, &sandboxes);
    Ok(Inventory {
        runtime,
        images,
        containers,
        sandbox_image,
        image_fs,
    })
}

/// Size of the filesystem at `mountpoint`, when this process can see it.
fn capacity_of(mountpoint: &str) -> Option<u64> {
    if mountpoint.is_empty() || !Path::new(mountpoint).exists() {
        return None;
    }
    nix::sys::statvfs::statvfs(mountpoint)
        .ok()
        .map(|s| s.blocks() * s.fragment_size())
}

/// Every name an image answers to, normalised, mapped to its index.
pub struct ImageIndex {
    by_name: HashMap<String, usize>,
}

impl ImageIndex {
    pub fn new(images: &[Image]) -> Self {
        let mut by_name = HashMap::new();
        for (i, img) in images.iter().enumerate() {
            by_name.insert(img.id.clone(), i);
            by_name.insert(img.id.trim_start_matches("sha256:").to_owned(), i);
            for name in img.tags.iter().chain(&img.digests) {
                by_name.insert(normalize_for_matching(name).into_owned(), i);
                if let Some((_, digest)) = name.split_once('@') {
                    by_name.insert(digest.to_owned(), i);
                }
            }
        }
        Self { by_name }
    }

    /// The image a container reference (id, tag or digest) names.
    pub fn find(&self, reference: &str) -> Option<usize> {
        if reference.is_empty() {
            return None;
        }
        self.by_name
            .get(reference)
            .or_else(|| self.by_name.get(normalize_for_matching(reference).as_ref()))
            .copied()
    }

    /// Indexes of the images the containers use, by `imageRef` (the id the
    /// runtime resolved) or by the image they were created from.
    pub fn used_by(&self, containers: &[CriContainer]) -> Vec<usize> {
        containers
            .iter()
            .flat_map(|c| [self.find(&c.image_ref), self.find(&c.image)])
            .flatten()
            .collect()
    }
}

/// Sets `in_use` on every image a container references.
pub fn mark_in_use(images: &mut [Image], containers: &[CriContainer]) {
    let used = ImageIndex::new(images).used_by(containers);
    for i in used {
        if let Some(image) = images.get_mut(i) {
            image.in_use = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str]) -> Image {
        Image {
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    fn container(image_ref: &str, image: &str) -> CriContainer {
        CriContainer {
            id: "c".into(),
            name: "c".into(),
            image_ref: image_ref.into(),
            image: image.into(),
            state: "CONTAINER_CREATED".into(),
        }
    }

    #[test]
    fn containers_mark_images_by_id_or_by_name() {
        let a = format!("sha256:{}", "a".repeat(64));
        let mut images = vec![
            image(&a, &["docker.io/library/a:1"]),
            image("sha256:b", &["docker.io/library/dockerfmt:1"]),
            image("sha256:c", &["docker.io/library/c:1"]),
        ];
        mark_in_use(
            &mut images,
            &[
                container(&a, &a),
                container("", "dockerfmt:1"),
                container("sha256:gone", "gone:1"),
            ],
        );
        assert_eq!(
            images.iter().map(|i| i.in_use).collect::<Vec<_>>(),
            vec![true, true, false]
        );
    }
}
