//! An in-memory CRI server on a unix socket, for what a real containerd will
//! not do on request: refuse a `RemoveImage`, list thousands of images
//! cheaply, or speak only v1alpha2. Everything else is tested against a real
//! private containerd.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::{ImageService, ImageServiceServer};
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// What the fake runtime holds, and what it was asked.
#[derive(Debug, Default)]
pub struct FakeState {
    pub images: Vec<cri::Image>,
    pub containers: Vec<cri::Container>,
    /// Image ids whose removal fails with this message.
    pub fail_remove: HashMap<String, String>,
    pub sandbox_image: Option<String>,
    /// Pod sandboxes as (id, the image the runtime reports they run).
    pub sandboxes: Vec<(String, String)>,
    pub removed: Vec<String>,
    pub list_containers_calls: usize,
    /// Containers that appear as the image they use is removed, as one
    /// created between a worker's last check and its RemoveImage would.
    pub created_during_removal: Vec<cri::Container>,
}

/// An image for the fake runtime.
pub fn image(id: &str, tags: &[&str], size: u64) -> cri::Image {
    cri::Image {
        id: id.to_owned(),
        repo_tags: tags.iter().map(|t| t.to_string()).collect(),
        size,
        ..Default::default()
    }
}

/// A container using `image_ref`, in the given state.
pub fn container(id: &str, image_ref: &str, state: cri::ContainerState) -> cri::Container {
    cri::Container {
        id: id.to_owned(),
        image_ref: image_ref.to_owned(),
        image: Some(cri::ImageSpec {
            image: image_ref.to_owned(),
            ..Default::default()
        }),
        state: state as i32,
        metadata: Some(cri::ContainerMetadata {
            name: id.to_owned(),
            attempt: 0,
        }),
        ..Default::default()
    }
}

/// A running fake runtime; stops when dropped.
pub struct FakeCri {
    pub state: Arc<Mutex<FakeState>>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeCri {
    /// Serves `state` on a fresh socket. Call inside a tokio runtime.
    pub async fn start(state: FakeState) -> Self {
        Self::serve(state, true).await
    }

    /// A runtime that only speaks v1alpha2: its v1 services are missing.
    pub async fn start_v1alpha2_only() -> Self {
        Self::serve(FakeState::default(), false).await
    }

    async fn serve(state: FakeState, v1: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("cri.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake CRI socket");
        let state = Arc::new(Mutex::new(state));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = Fake(state.clone());
        let router = if v1 {
            tonic::transport::Server::builder()
                .add_service(RuntimeServiceServer::new(service.clone()).max_encoding_message_size(usize::MAX))
                .add_service(ImageServiceServer::new(service).max_encoding_message_size(usize::MAX))
        } else {
            tonic::transport::Server::builder().add_routes(tonic::service::Routes::new(OldRuntime))
        };
        tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            state,
            socket,
            _dir: dir,
            stop: Some(stop),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Ids of the images still listed.
    pub fn image_ids(&self) -> HashSet<String> {
        self.state.lock().unwrap().images.iter().map(|i| i.id.clone()).collect()
    }
}

impl Drop for FakeCri {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone)]
struct Fake(Arc<Mutex<FakeState>>);

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not implemented by the fake runtime"))
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ImageService for Fake {
    async fn list_images(
        &self,
        _: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let images = self.0.lock().unwrap().images.clone();
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let wanted = r.into_inner().image.map(|i| i.image).unwrap_or_default();
        let state = self.0.lock().unwrap();
        let image = state
            .images
            .iter()
            .find(|i| i.id == wanted || i.repo_tags.contains(&wanted))
            .cloned();
        Ok(Response::new(cri::ImageStatusResponse {
            image,
            info: Default::default(),
        }))
    }

    async fn pull_image(&self, _: Request<cri::PullImageRequest>) -> Result<Response<cri::PullImageResponse>, Status> {
        unimplemented()
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let id = r.into_inner().image.map(|i| i.image).unwrap_or_default();
        let mut state = self.0.lock().unwrap();
        if let Some(message) = state.fail_remove.get(&id) {
            return Err(Status::internal(message.clone()));
        }
        // Like containerd 1.6: removing a missing image is not an error.
        state.images.retain(|i| i.id != id);
        let (racing, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut state.created_during_removal)
            .into_iter()
            .partition(|c| c.image_ref == id);
        state.created_during_removal = rest;
        state.containers.extend(racing);
        state.removed.push(id);
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let used: u64 = self.0.lock().unwrap().images.iter().map(|i| i.size).sum();
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                used_bytes: Some(cri::UInt64Value { value: used }),
                ..Default::default()
            }],
            container_filesystems: vec![],
        }))
    }
}

#[tonic::async_trait]
impl RuntimeService for Fake {
    type GetContainerEventsStream = Stream<cri::ContainerEventResponse>;

    async fn version(&self, _: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "1.0.0".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn list_containers(
        &self,
        _: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let mut state = self.0.lock().unwrap();
        state.list_containers_calls += 1;
        Ok(Response::new(cri::ListContainersResponse {
            containers: state.containers.clone(),
        }))
    }

    async fn status(&self, _: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
        let mut info = HashMap::new();
        if let Some(sandbox) = &self.0.lock().unwrap().sandbox_image {
            info.insert(
                "config".to_owned(),
                serde_json::json!({ "sandboxImage": sandbox }).to_string(),
            );
        }
        Ok(Response::new(cri::StatusResponse {
            info,
            ..Default::default()
        }))
    }

    async fn run_pod_sandbox(
        &self,
        _: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        unimplemented()
    }
    async fn stop_pod_sandbox(
        &self,
        _: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        unimplemented()
    }
    async fn remove_pod_sandbox(
        &self,
        _: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        unimplemented()
    }
    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let state = self.0.lock().unwrap();
        let (_, image) = state
            .sandboxes
            .iter()
            .find(|(s, _)| *s == id)
            .ok_or_else(|| Status::not_found(format!("sandbox {id}")))?;
        // containerd's verbose shape: the sandbox image under `info.image`.
        let info = [("info".to_owned(), serde_json::json!({ "image": image }).to_string())].into();
        Ok(Response::new(cri::PodSandboxStatusResponse {
            info,
            ..Default::default()
        }))
    }
    async fn list_pod_sandbox(
        &self,
        _: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let items = self
            .0
            .lock()
            .unwrap()
            .sandboxes
            .iter()
            .map(|(id, _)| cri::PodSandbox {
                id: id.clone(),
                state: cri::PodSandboxState::SandboxReady as i32,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }
    async fn create_container(
        &self,
        _: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        unimplemented()
    }
    async fn start_container(
        &self,
        _: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        unimplemented()
    }
    async fn stop_container(
        &self,
        _: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        unimplemented()
    }
    async fn remove_container(
        &self,
        _: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        unimplemented()
    }
    async fn container_status(
        &self,
        _: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        unimplemented()
    }
    async fn update_container_resources(
        &self,
        _: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        unimplemented()
    }
    async fn reopen_container_log(
        &self,
        _: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        unimplemented()
    }
    async fn exec_sync(&self, _: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
        unimplemented()
    }
    async fn exec(&self, _: Request<cri::ExecRequest>) -> Result<Response<cri::ExecResponse>, Status> {
        unimplemented()
    }
    async fn attach(&self, _: Request<cri::AttachRequest>) -> Result<Response<cri::AttachResponse>, Status> {
        unimplemented()
    }
    async fn port_forward(
        &self,
        _: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        unimplemented()
    }
    async fn container_stats(
        &self,
        _: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        unimplemented()
    }
    async fn list_container_stats(
        &self,
        _: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        unimplemented()
    }
    async fn pod_sandbox_stats(
        &self,
        _: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        unimplemented()
    }
    async fn list_pod_sandbox_stats(
        &self,
        _: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        unimplemented()
    }
    async fn update_runtime_config(
        &self,
        _: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        unimplemented()
    }
    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        unimplemented()
    }
    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        unimplemented()
    }
    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        unimplemented()
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        unimplemented()
    }
    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        unimplemented()
    }
}

/// A v1alpha2-only runtime: answers `runtime.v1alpha2.RuntimeService/Version`
/// and nothing else, like containerd before 1.6.
#[derive(Clone)]
struct OldRuntime;

impl tonic::server::NamedService for OldRuntime {
    const NAME: &'static str = "runtime.v1alpha2.RuntimeService";
}

impl tower::Service<http::Request<tonic::body::Body>> for OldRuntime {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != "/runtime.v1alpha2.RuntimeService/Version" {
                return Ok(Status::unimplemented("v1alpha2 only").into_http());
            }
            struct Version;
            impl tonic::server::UnaryService<k8s_cri::v1alpha2::VersionRequest> for Version {
                type Response = k8s_cri::v1alpha2::VersionResponse;
                type Future = std::future::Ready<Result<Response<Self::Response>, Status>>;
                fn call(&mut self, _: Request<k8s_cri::v1alpha2::VersionRequest>) -> Self::Future {
                    std::future::ready(Ok(Response::new(k8s_cri::v1alpha2::VersionResponse {
                        version: "0.1.0".into(),
                        runtime_name: "old".into(),
                        runtime_version: "1.5".into(),
                        runtime_api_version: "v1alpha2".into(),
                    })))
                }
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(Version, req).await)
        })
    }
}
