//! A CRI v1 client over a unix socket: only the calls a cleanup pass needs,
//! each with a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// Responses for nodes with thousands of images exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("invalid runtime endpoint {0:?}: expected unix:///path/to/socket")]
    BadEndpoint(String),
    #[error("runtime socket {0} does not exist")]
    SocketMissing(PathBuf),
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("{endpoint} speaks only CRI v1alpha2; scour needs CRI v1 (containerd >= 1.6, CRI-O >= 1.23)")]
    OnlyV1Alpha2 { endpoint: String },
    #[error("CRI {call} did not answer within {}", humantime::format_duration(*.after))]
    Timeout { call: &'static str, after: Duration },
    #[error("CRI {call} failed: {}: {}", .status.code(), .status.message())]
    Call { call: &'static str, status: tonic::Status },
}

impl CriError {
    /// The gRPC code when the runtime answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CriError::Call { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

pub type Result<T, E = CriError> = std::result::Result<T, E>;

/// An image as CRI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriImage {
    pub id: String,
    pub tags: Vec<String>,
    pub digests: Vec<String>,
    pub size: u64,
    pub pinned: bool,
}

impl From<cri::Image> for CriImage {
    fn from(i: cri::Image) -> Self {
        Self {
            id: i.id,
            tags: i.repo_tags,
            digests: i.repo_digests,
            size: i.size,
            pinned: i.pinned,
        }
    }
}

/// A container as CRI lists it: created, running and exited ones alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriContainer {
    pub id: String,
    pub name: String,
    /// The image id the runtime resolved (`imageRef`).
    pub image_ref: String,
    /// The image as given at creation: usually an id, sometimes a tag.
    pub image: String,
    pub state: String,
}

/// What the runtime says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeInfo {
    pub runtime_name: String,
    pub runtime_version: String,
    pub api_version: String,
}

/// Usage of the filesystem holding images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFsUsage {
    pub mountpoint: String,
    pub used_bytes: Option<u64>,
}

/// Outcome of a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The image was already gone.
    NotFound,
}

/// The socket path of a `unix://` endpoint (a bare absolute path works too).
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(CriError::BadEndpoint(endpoint.to_owned()))
    }
}

/// Opens a gRPC channel over the unix socket at `path`.
pub async fn connect_channel(path: &Path, timeout: Duration) -> Result<Channel> {
    if !path.exists() {
        return Err(CriError::SocketMissing(path.to_owned()));
    }
    let socket = path.to_owned();
    // tonic needs a URI; the connector ignores it and dials the socket.
    let endpoint = Endpoint::from_static("http://[::]:0").connect_timeout(timeout);
    let connect = endpoint.connect_with_connector(service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
    }));
    let endpoint_name = format!("unix://{}", path.display());
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(CriError::Connect {
            endpoint: endpoint_name,
            message: error_chain(&e),
        }),
        Err(_) => Err(CriError::Connect {
            endpoint: endpoint_name,
            message: format!("no answer within {}", humantime::format_duration(timeout)),
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A CRI v1 client. Cloning shares the connection.
#[derive(Debug, Clone)]
pub struct CriClient {
    endpoint: String,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    channel: Channel,
    call_timeout: Duration,
}

impl CriClient {
    /// Connects and checks that the runtime speaks CRI v1.
    pub async fn connect(endpoint: &str, connect_timeout: Duration, call_timeout: Duration) -> Result<Self> {
        let path = socket_path(endpoint)?;
        let channel = connect_channel(&path, connect_timeout).await?;
        let client = Self {
            endpoint: endpoint.to_owned(),
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            images: ImageServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            channel,
            call_timeout,
        };
        match client.version().await {
            Ok(_) => Ok(client),
            Err(e) if e.code() == Some(tonic::Code::Unimplemented) => {
                let mut old =
                    k8s_cri::v1alpha2::runtime_service_client::RuntimeServiceClient::new(client.channel.clone());
                let v1alpha2 = tokio::time::timeout(
                    client.call_timeout,
                    old.version(k8s_cri::v1alpha2::VersionRequest::default()),
                )
                .await;
                match v1alpha2 {
                    Ok(Ok(_)) => Err(CriError::OnlyV1Alpha2 {
                        endpoint: endpoint.to_owned(),
                    }),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The shared gRPC channel, for callers that need other CRI services.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    async fn timed<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(CriError::Call { call, status }),
            Err(_) => Err(CriError::Timeout {
                call,
                after: self.call_timeout,
            }),
        }
    }

    pub async fn version(&self) -> Result<RuntimeInfo> {
        let mut rt = self.runtime.clone();
        let v = self
            .timed("Version", rt.version(cri::VersionRequest { version: "v1".into() }))
            .await?;
        Ok(RuntimeInfo {
            runtime_name: v.runtime_name,
            runtime_version: v.runtime_version,
            api_version: v.runtime_api_version,
        })
    }

    pub async fn list_images(&self) -> Result<Vec<CriImage>> {
        let mut images = self.images.clone();
        let r = self
            .timed(
                "ListImages",
                images.list_images(cri::ListImagesRequest { filter: None }),
            )
            .await?;
        Ok(r.images.into_iter().map(CriImage::from).collect())
    }

    /// The image a reference resolves to, or None when the runtime has none.
    pub async fn image_status(&self, image: &str) -> Result<Option<CriImage>> {
        let mut images = self.images.clone();
        let request = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        match self.timed("ImageStatus", images.image_status(request)).await {
            // containerd answers OK with no image for unknown references.
            Ok(r) => Ok(r.image.map(CriImage::from).filter(|i| !i.id.is_empty())),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container, whatever its state.
    pub async fn list_containers(&self) -> Result<Vec<CriContainer>> {
        let mut rt = self.runtime.clone();
        let r = self
            .timed(
                "ListContainers",
                rt.list_containers(cri::ListContainersRequest { filter: None }),
            )
            .await?;
        Ok(r.containers
            .into_iter()
            .map(|c| CriContainer {
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                image: c.image.map(|i| i.image).unwrap_or_default(),
                state: cri::ContainerState::try_from(c.state)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| c.state.to_string()),
                id: c.id,
                image_ref: c.image_ref,
            })
            .collect())
    }

    /// Removes an image by id. A missing image is `NotFound`, not an error.
    pub async fn remove_image(&self, id: &str) -> Result<Removal> {
        let mut images = self.images.clone();
        let request = cri::RemoveImageRequest {
            image: Some(image_spec(id)),
        };
        match self.timed("RemoveImage", images.remove_image(request)).await {
            Ok(_) => Ok(Removal::Removed),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(Removal::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Usage of the image filesystem, when the runtime reports it.
    pub async fn image_fs_info(&self) -> Result<Option<ImageFsUsage>> {
        let mut images = self.images.clone();
        let r = self
            .timed("ImageFsInfo", images.image_fs_info(cri::ImageFsInfoRequest {}))
            .await?;
        Ok(r.image_filesystems.into_iter().next().map(|fs| ImageFsUsage {
            mountpoint: fs.fs_id.map(|id| id.mountpoint).unwrap_or_default(),
            used_bytes: fs.used_bytes.map(|u| u.value),
        }))
    }

    /// Every pod sandbox, as a container of its sandbox (pause) image: an
    /// image a running pod was started with stays in use even after the
    /// runtime's configured sandbox image changes. The image comes from the
    /// verbose sandbox status (containerd: `info.image`); a sandbox without
    /// one is left out.
    pub async fn list_sandboxes(&self) -> Result<Vec<CriContainer>> {
        let mut rt = self.runtime.clone();
        let listed = self
            .timed(
                "ListPodSandbox",
                rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
            )
            .await?;
        let mut sandboxes = Vec::with_capacity(listed.items.len());
        for sandbox in listed.items {
            let request = cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.id.clone(),
                verbose: true,
            };
            let status = match self.timed("PodSandboxStatus", rt.pod_sandbox_status(request)).await {
                Ok(s) => s,
                // Removed since it was listed.
                Err(e) if e.code() == Some(tonic::Code::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let image = status
                .info
                .get("info")
                .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
                .and_then(|v| v.get("image").and_then(|i| i.as_str()).map(str::to_owned))
                .filter(|i| !i.is_empty());
            let Some(image) = image else {
                tracing::debug!(sandbox = %sandbox.id, "the runtime does not say which image this pod sandbox uses");
                continue;
            };
            sandboxes.push(CriContainer {
                name: sandbox
                    .metadata
                    .map(|m| format!("sandbox of {}/{}", m.namespace, m.name))
                    .unwrap_or_else(|| "pod sandbox".to_owned()),
                id: sandbox.id,
                image_ref: String::new(),
                image,
                state: cri::PodSandboxState::try_from(sandbox.state)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| sandbox.state.to_string()),
            });
        }
        Ok(sandboxes)
    }

    /// The sandbox (pause) image from the runtime's verbose status, where the
    /// runtime reports it (containerd does, in `info.config`).
    pub async fn sandbox_image(&self) -> Result<Option<String>> {
        let mut rt = self.runtime.clone();
        let r = self
            .timed("Status", rt.status(cri::StatusRequest { verbose: true }))
            .await?;
        Ok(r.info.get("config").and_then(|config| sandbox_image_in(config)))
    }
}

/// containerd 1.x reports `sandboxImage`; 2.x moved the setting to
/// `pinnedImages.sandbox`.
fn sandbox_image_in(config: &str) -> Option<String> {
    let v = serde_json::from_str::<serde_json::Value>(config).ok()?;
    [
        v.get("sandboxImage"),
        v.get("pinnedImages").and_then(|p| p.get("sandbox")),
    ]
    .into_iter()
    .flatten()
    .filter_map(|s| s.as_str())
    .find(|s| !s.is_empty())
    .map(str::to_owned)
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_image_is_found_in_containerd_1_and_2_configs() {
        let v1 = r#"{"sandboxImage":"registry.k8s.io/pause:3.9","containerd":{}}"#;
        let v2 = r#"{"pinnedImages":{"sandbox":"registry.k8s.io/pause:3.10"}}"#;
        assert_eq!(sandbox_image_in(v1).as_deref(), Some("registry.k8s.io/pause:3.9"));
        assert_eq!(sandbox_image_in(v2).as_deref(), Some("registry.k8s.io/pause:3.10"));
        assert_eq!(sandbox_image_in(r#"{"sandboxImage":""}"#), None);
        assert_eq!(sandbox_image_in("not json"), None);
    }

    #[test]
    fn endpoints_are_unix_sockets() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").unwrap(),
            Path::new("/run/containerd/containerd.sock")
        );
        assert_eq!(socket_path("/run/x.sock").unwrap(), Path::new("/run/x.sock"));
        assert!(matches!(socket_path("tcp://1.2.3.4:5"), Err(CriError::BadEndpoint(_))));
        assert!(matches!(socket_path("relative.sock"), Err(CriError::BadEndpoint(_))));
    }

    #[tokio::test]
    async fn a_missing_socket_is_named() {
        let err = CriClient::connect(
            "unix:///nonexistent/dir/cri.sock",
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(&err, CriError::SocketMissing(p) if p == Path::new("/nonexistent/dir/cri.sock")));
        assert_eq!(
            err.to_string(),
            "runtime socket /nonexistent/dir/cri.sock does not exist"
        );
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_fails_to_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = CriClient::connect(
            &format!("unix://{}", path.display()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CriError::Connect { .. }), "{err}");
    }
}
