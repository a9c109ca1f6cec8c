//! A small blocking client of the Kubernetes CRI (v1) that containerd's CRI plugin serves:
//! what a kubelet does to run a pod, for tests and the CRI benchmark.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{self as cri, NamespaceMode};
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1::{ContainerConfig, ContainerState, ContainerStatus, PodSandboxConfig};

/// A CRI call that failed.
pub type CriResult<T> = Result<T, tonic::Status>;

/// A connection to a CRI runtime service on a unix socket.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI socket (containerd's gRPC socket).
    pub fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(
                Endpoint::try_from("http://[::]:0").expect("endpoint").connect_with_connector(
                    tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }),
                ),
            )
            .expect("connect to the CRI socket");
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    /// The runtime's name and version.
    pub fn version(&mut self) -> CriResult<cri::VersionResponse> {
        let req = cri::VersionRequest { version: "v1".into() };
        Ok(self.rt.block_on(self.runtime.version(req))?.into_inner())
    }

    /// Whether the image is known (by name).
    pub fn has_image(&mut self, image: &str) -> CriResult<bool> {
        let req = cri::ImageStatusRequest { image: Some(image_spec(image)), verbose: false };
        Ok(self.rt.block_on(self.images.image_status(req))?.into_inner().image.is_some())
    }

    /// Starts a pod sandbox with `handler` ("" for the default runtime); returns its id.
    pub fn run_pod(&mut self, config: &PodSandboxConfig, handler: &str) -> CriResult<String> {
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        Ok(self.rt.block_on(self.runtime.run_pod_sandbox(req))?.into_inner().pod_sandbox_id)
    }

    /// Creates a container in a pod; returns its id.
    pub fn create_container(
        &mut self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> CriResult<String> {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        Ok(self.rt.block_on(self.runtime.create_container(req))?.into_inner().container_id)
    }

    /// Starts a created container.
    pub fn start_container(&mut self, id: &str) -> CriResult<()> {
        let req = cri::StartContainerRequest { container_id: id.into() };
        self.rt.block_on(self.runtime.start_container(req))?;
        Ok(())
    }

    /// Runs a command in a container: (stdout, stderr, exit code).
    pub fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> CriResult<(String, String, i32)> {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_secs,
        };
        let r = self.rt.block_on(self.runtime.exec_sync(req))?.into_inner();
        Ok((
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
            r.exit_code,
        ))
    }

    /// A container's status.
    pub fn container_status(&mut self, id: &str) -> CriResult<ContainerStatus> {
        let req = cri::ContainerStatusRequest { container_id: id.into(), verbose: false };
        let r = self.rt.block_on(self.runtime.container_status(req))?.into_inner();
        r.status.ok_or_else(|| tonic::Status::not_found("no status"))
    }

    /// Changes a running container's resources.
    pub fn update_resources(
        &mut self,
        id: &str,
        resources: cri::LinuxContainerResources,
    ) -> CriResult<()> {
        let req = cri::UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(resources),
            ..Default::default()
        };
        self.rt.block_on(self.runtime.update_container_resources(req))?;
        Ok(())
    }

    /// Stops a container (SIGTERM, then SIGKILL after `timeout_secs`).
    pub fn stop_container(&mut self, id: &str, timeout_secs: i64) -> CriResult<()> {
        let req = cri::StopContainerRequest { container_id: id.into(), timeout: timeout_secs };
        self.rt.block_on(self.runtime.stop_container(req))?;
        Ok(())
    }

    /// Removes a container.
    pub fn remove_container(&mut self, id: &str) -> CriResult<()> {
        let req = cri::RemoveContainerRequest { container_id: id.into() };
        self.rt.block_on(self.runtime.remove_container(req))?;
        Ok(())
    }

    /// The pod sandbox's state (`SANDBOX_READY` = 0).
    pub fn pod_state(&mut self, pod: &str) -> CriResult<i32> {
        let req = cri::PodSandboxStatusRequest { pod_sandbox_id: pod.into(), verbose: false };
        let r = self.rt.block_on(self.runtime.pod_sandbox_status(req))?.into_inner();
        Ok(r.status.map_or(-1, |s| s.state))
    }

    /// The pod's IP address (from CNI).
    pub fn pod_ip(&mut self, pod: &str) -> CriResult<String> {
        let req = cri::PodSandboxStatusRequest { pod_sandbox_id: pod.into(), verbose: false };
        let r = self.rt.block_on(self.runtime.pod_sandbox_status(req))?.into_inner();
        Ok(r.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default())
    }

    /// Stops every container of the pod and the pod.
    pub fn stop_pod(&mut self, pod: &str) -> CriResult<()> {
        let req = cri::StopPodSandboxRequest { pod_sandbox_id: pod.into() };
        self.rt.block_on(self.runtime.stop_pod_sandbox(req))?;
        Ok(())
    }

    /// Removes a stopped pod and its containers.
    pub fn remove_pod(&mut self, pod: &str) -> CriResult<()> {
        let req = cri::RemovePodSandboxRequest { pod_sandbox_id: pod.into() };
        self.rt.block_on(self.runtime.remove_pod_sandbox(req))?;
        Ok(())
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec { image: image.into(), ..Default::default() }
}

/// A pod on the host's network (no CNI needed; like a kubelet, no hostname of its own), its
/// logs under `log_dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// A pod on the CNI network (a network namespace of its own), logs under `log_dir`.
pub fn pod_config_cni(name: &str, log_dir: &Path) -> PodSandboxConfig {
    let mut c = pod_config(name, log_dir);
    let ns = c.linux.as_mut().and_then(|l| l.security_context.as_mut());
    if let Some(o) = ns.and_then(|s| s.namespace_options.as_mut()) {
        o.network = NamespaceMode::Pod as i32;
    }
    c.hostname = name.into();
    c
}

/// A container running `cmd` from `image`, logging to `<pod log dir>/<name>.log`.
pub fn container_config(name: &str, image: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(image_spec(image)),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// Where the CRI writes a container's log.
pub fn log_path(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(format!("{name}.log"))
}
