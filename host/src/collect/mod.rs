//! Collect: what is on the node. Every image with its names, size and
//! `pinned`; which images containers use (created, running and exited alike);
//! the sandbox image; image filesystem usage; and when each image was first
//! seen.

mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use scour_policy_sdk::reference::normalize_for_matching;
use scour_policy_sdk::{Image, ImageFs, ScanOutcome};

pub use state::FirstSeen;

use crate::cri::{CriClient, CriContainer, CriError, RuntimeInfo};
use crate::scan::content_store::ContentStore;

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
    /// Where the image filesystem's capacity was measured, when it was.
    pub image_fs_measured_at: Option<PathBuf>,
    /// containerd's content store, where the scan reads layers in place,
    /// or why this process cannot see one.
    pub content_store: Result<ContentStore, String>,
}

/// Where the image filesystem's capacity is measured. The runtime reports
/// its usage and a mountpoint (CRI `ImageFsInfo`); a worker pod does not see
/// that mountpoint, so it is given the node's runtime root as a mount.
#[derive(Debug, Clone, Default)]
pub struct ImageFsProbe {
    /// A directory on the image filesystem as this process sees it (a pod's
    /// mount of the node's runtime root). Unset: the reported mountpoint.
    pub dir: Option<PathBuf>,
    /// The node path `dir` shows. A reported mountpoint below it is measured
    /// at the same place below `dir`: an image store mounted on its own
    /// filesystem below the runtime's root shows there (hostPath mounts are
    /// recursive binds).
    pub node_path: Option<PathBuf>,
}

impl ImageFsProbe {
    /// The path to measure for a reported `mountpoint`.
    fn target(&self, mountpoint: &str) -> Option<PathBuf> {
        let Some(dir) = &self.dir else {
            return (!mountpoint.is_empty()).then(|| PathBuf::from(mountpoint));
        };
        let below = self
            .node_path
            .as_deref()
            .and_then(|node| Path::new(mountpoint).strip_prefix(node).ok())
            .map(|rel| dir.join(rel))
            .filter(|p| p.exists());
        Some(below.unwrap_or_else(|| dir.clone()))
    }
}

/// Lists images and containers, marks the images in use, and stamps
/// first-seen times.
pub async fn collect(
    cri: &CriClient,
    first_seen: &mut FirstSeen,
    now: u64,
    probe: &ImageFsProbe,
) -> Result<Inventory, CriError> {
    let runtime = cri.version().await?;
    let listed = cri.list_images().await?;
    let containers = cri.list_containers().await?;
    let sandboxes = cri.list_sandboxes().await?;
    let sandbox_image = cri.sandbox_image().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the runtime's sandbox image from its status");
        None
    });
    let fs_info = cri.image_fs_info().await;
    let content_store = match &fs_info {
        Ok(Some(fs)) => ContentStore::root_of(&fs.mountpoint).and_then(|root| {
            let seen = probe.target(&root.to_string_lossy()).unwrap_or_else(|| root.to_owned());
            ContentStore::at_root(&seen)
        }),
        Ok(None) => Err("the runtime reports no image filesystem".to_owned()),
        Err(e) => Err(format!("cannot read the runtime's image filesystem: {e}")),
    };
    let (image_fs, image_fs_measured_at) = match fs_info {
        Ok(Some(fs)) => match fs.used_bytes {
            Some(used) => {
                let measured = probe.target(&fs.mountpoint).and_then(|path| {
                    let capacity = capacity_at(&path, probe.dir.is_some())?;
                    plausible(used, capacity, &path).then_some((capacity, path))
                });
                let (capacity_bytes, at) = measured.unzip();
                (
                    Some(ImageFs {
                        used_bytes: used,
                        capacity_bytes,
                    }),
                    at,
                )
            }
            None => (None, None),
        },
        Ok(None) => (None, None),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read image filesystem usage");
            (None, None)
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
        image_fs_measured_at,
        content_store,
    })
}

/// Size of the filesystem holding `path`. A path the operator named
/// (`--image-fs`) that cannot be measured is a warning; the runtime's own
/// mountpoint is usually not visible in a pod, so that is quietly none.
fn capacity_at(path: &Path, named: bool) -> Option<u64> {
    if !named && !path.exists() {
        return None;
    }
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => Some(s.blocks() * s.fragment_size()),
        Err(e) => {
            if named {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot measure the image filesystem at {}: {e}; policies see its usage but no capacity",
                    path.display()
                );
            }
            None
        }
    }
}

/// Whether a capacity fits the usage the runtime reports. More in use than
/// the filesystem holds means `path` is on another filesystem than the
/// image store: a capacity from there would mislead a policy, so it is
/// dropped with a warning.
fn plausible(used: u64, capacity: u64, path: &Path) -> bool {
    if used <= capacity {
        return true;
    }
    tracing::warn!(
        path = %path.display(),
        used_bytes = used,
        capacity_bytes = capacity,
        "the runtime reports {used} bytes of images, more than the {capacity} bytes of the filesystem at {}: \
         it is not the image store's filesystem; policies see no capacity",
        path.display()
    );
    false
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
    fn capacity_is_measured_at_the_mount_or_below_it_where_the_store_is() {
        let mount = tempfile::tempdir().unwrap();
        std::fs::create_dir(mount.path().join("io.containerd.snapshotter.v1.overlayfs")).unwrap();
        let store = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs";
        let probe = ImageFsProbe {
            dir: Some(mount.path().to_owned()),
            node_path: Some("/var/lib/containerd".into()),
        };
        assert_eq!(
            probe.target(store),
            Some(mount.path().join("io.containerd.snapshotter.v1.overlayfs"))
        );
        // Elsewhere, or not visible below the mount: the mount itself.
        assert_eq!(probe.target("/mnt/images"), Some(mount.path().to_owned()));
        assert_eq!(
            probe.target("/var/lib/containerd/io.containerd.snapshotter.v1.stargz"),
            Some(mount.path().to_owned())
        );
        assert_eq!(probe.target(""), Some(mount.path().to_owned()));
        // No mount given: the runtime's mountpoint, as reported.
        assert_eq!(ImageFsProbe::default().target(store), Some(store.into()));
        assert_eq!(ImageFsProbe::default().target(""), None);

        assert!(capacity_at(mount.path(), true).is_some_and(|c| c > 0));
        assert_eq!(capacity_at(Path::new("/nonexistent/image-fs"), true), None);
        assert_eq!(capacity_at(Path::new("/nonexistent/image-fs"), false), None);
        assert!(plausible(10, 10, mount.path()));
        assert!(!plausible(11, 10, mount.path()));
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
