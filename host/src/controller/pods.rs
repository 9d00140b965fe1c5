//! The worker pod: one per selected node, pinned to it, least privileged.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HostPathVolumeSource, KeyToPath, LocalObjectReference,
    ObjectFieldSelector, Pod, PodSpec, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use sha2::{Digest, Sha256};

use super::crd::{ImageJob, Trigger};
use super::error::{Error, Result};
use super::{CONFIG_KEY, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY};
use crate::config::{Loaded, Resources};

pub const CONTAINER: &str = "worker";
/// Eraser's label on worker pods, kept so existing dashboards still match.
pub const LABEL_ERASER_TYPE: &str = "eraser.sh/type";
const ANNOTATION_IMAGELIST: &str = "scour.dev/imagelist";

const CRI_SOCKET: &str = "/run/cri/cri.sock";
const CONFIG_DIR: &str = "/etc/scour/config";
const POLICY_DIR: &str = "/etc/scour/policy";
/// The key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";
/// Each pull secret, for a registry policy: `<dir>/<secret>/.dockerconfigjson`.
const REGISTRY_AUTH_DIR: &str = "/etc/scour/registry";
const SYSTEM_EXCLUSIONS_DIR: &str = "/etc/scour/exclusions/system";
const USER_EXCLUSIONS_DIR: &str = "/etc/scour/exclusions/user";
const IMAGELIST_DIR: &str = "/etc/scour/imagelist";
const STATE_DIR: &str = "/var/lib/scour";
/// The node's runtime root, where the worker measures the image filesystem.
pub const IMAGE_FS_DIR: &str = "/host/image-fs";

/// What every worker pod of one run shares; only the node differs.
#[derive(Debug, Clone)]
pub struct WorkerTemplate {
    pub image: String,
    pub namespace: String,
    pub service_account: String,
    pub config_map: String,
    pub runtime_socket: String,
    pub node_state_dir: String,
    /// A node directory on the runtime's image filesystem, mounted
    /// read-only for its capacity (`scour.imageFsPath`).
    pub image_fs: Option<String>,
    pub system_exclusions: Option<String>,
    pub user_exclusions: Vec<String>,
    pub policy: PolicyMount,
    pub resources: ResourceRequirements,
    pub extra_labels: BTreeMap<String, String>,
    pub pull_secrets: Vec<String>,
    pub priority_class: Option<String>,
    /// `manager.logLevel`, as the worker's `SCOUR_LOG`.
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyMount {
    /// The policy built into scour.
    BuiltIn,
    /// `binaryData[key]` of a ConfigMap, pinned.
    ConfigMap { name: String, key: String, sha256: String },
    /// A file baked into the worker image, pinned.
    Path { path: String, sha256: String },
    /// A registry policy as the controller vetted it: `registry://…@sha256:…`
    /// and the settings it was vetted with.
    Registry {
        module: String,
        settings: String,
        insecure: Vec<String>,
    },
}

impl PolicyMount {
    /// The registry reference workers pull, for a registry policy.
    pub fn module(&self) -> Option<&str> {
        match self {
            PolicyMount::Registry { module, .. } => Some(module),
            _ => None,
        }
    }
}

/// The worker image from the config, unless it is unset or names one of
/// Eraser's images (an Eraser config carried over unchanged).
pub fn worker_image(loaded: &Loaded, fallback: Option<&str>, config_map: &str) -> Result<String> {
    let image = &loaded.config.components.remover.image;
    if let Some(repo) = image
        .repo
        .as_deref()
        .filter(|r| !r.is_empty() && !r.contains("eraser-dev/"))
    {
        return Ok(match image.tag.as_deref().filter(|t| !t.is_empty()) {
            Some(tag) => format!("{repo}:{tag}"),
            None => repo.to_owned(),
        });
    }
    fallback.map(str::to_owned).ok_or_else(|| Error::Config {
        config_map: config_map.to_owned(),
        message: "components.remover.image: not set to a scour image, and the controller has no --worker-image".into(),
    })
}

pub fn policy_mount(loaded: &Loaded) -> PolicyMount {
    let p = &loaded.config.scour.policy;
    if let Some(module) = &p.module {
        return PolicyMount::Registry {
            module: module.clone(),
            settings: loaded.policy_settings(false),
            insecure: p.insecure_sources.clone(),
        };
    }
    let sha256 = p.sha256.clone().unwrap_or_default();
    match (&p.config_map, &p.path) {
        (Some(name), _) => PolicyMount::ConfigMap {
            name: name.clone(),
            key: p.key.clone().unwrap_or_else(|| "policy.wasm".into()),
            sha256,
        },
        (None, Some(path)) => PolicyMount::Path {
            path: path.clone(),
            sha256,
        },
        (None, None) => PolicyMount::BuiltIn,
    }
}

/// Requests and limits: the scanner's (the worker runs Trivy) when it is
/// enabled, else the remover's; CPU limits are applied, unlike Eraser.
pub fn resources(loaded: &Loaded) -> ResourceRequirements {
    let c = &loaded.config.components;
    let scanning = c.scanner.enabled.unwrap_or(true);
    let (request, limit) = if scanning {
        (&c.scanner.request, &c.scanner.limit)
    } else {
        (&c.remover.request, &c.remover.limit)
    };
    let pick = |r: &Resources, cpu: &str, mem: &str| {
        let mut m = BTreeMap::new();
        for (key, value, default) in [("cpu", &r.cpu, cpu), ("memory", &r.mem, mem)] {
            let v = value.as_deref().unwrap_or(default);
            // Eraser's files write `cpu: 0` to mean "no limit".
            if v != "0" {
                m.insert(key.to_owned(), Quantity(v.to_owned()));
            }
        }
        m
    };
    ResourceRequirements {
        requests: Some(pick(request, "100m", "256Mi")),
        limits: Some(pick(limit, "1", "2Gi")),
        ..Default::default()
    }
}

/// A pod name that is the same for a job and node on every controller, so a
/// restarted or second controller finds the pod instead of starting another.
pub fn pod_name(job: &str, node: &str) -> String {
    let hash: String = Sha256::digest(node.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let node_part: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63 - job.len().min(40) - 10)
        .collect();
    let job_part: String = job.chars().take(40).collect();
    format!("{job_part}-{}-{hash}", node_part.trim_matches('-'))
}

impl WorkerTemplate {
    pub fn pod(&self, job: &ImageJob, node: &str, node_labels: &BTreeMap<String, String>) -> Pod {
        self.pod_dry_run(job, node, node_labels, false)
    }

    /// [`WorkerTemplate::pod`], dry whatever the run is when `dry_run` (a
    /// canary node).
    pub fn pod_dry_run(
        &self,
        job: &ImageJob,
        node: &str,
        node_labels: &BTreeMap<String, String>,
        dry_run: bool,
    ) -> Pod {
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let mut labels = self.extra_labels.clone();
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        labels.insert(LABEL_JOB.into(), job_name.clone());
        let kind = match job.spec.trigger {
            Trigger::Automatic => "collector",
            Trigger::Manual => "manual",
        };
        labels.insert(LABEL_ERASER_TYPE.into(), kind.into());
        let mut annotations = BTreeMap::new();

        let mut args = vec![
            "worker".to_owned(),
            "--once".into(),
            format!("--runtime-endpoint=unix://{CRI_SOCKET}"),
            format!("--config={CONFIG_DIR}/{CONFIG_KEY}"),
            format!("--state-dir={STATE_DIR}"),
            format!("--trivy-cache-dir={STATE_DIR}/trivy"),
            "--output=json".into(),
        ];
        if job.spec.dry_run || dry_run {
            args.push("--dry-run".into());
        }
        let mut volumes = vec![
            host_path("cri-socket", &self.runtime_socket, "Socket"),
            host_path("state", &self.node_state_dir, "DirectoryOrCreate"),
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: self.config_map.clone(),
                    items: Some(vec![KeyToPath {
                        key: CONFIG_KEY.into(),
                        path: CONFIG_KEY.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ];
        let mut mounts = vec![
            mount("cri-socket", CRI_SOCKET, false),
            mount("state", STATE_DIR, false),
            mount("config", CONFIG_DIR, true),
            mount("tmp", "/tmp", false),
        ];
        match &self.policy {
            PolicyMount::BuiltIn => {}
            PolicyMount::ConfigMap { name, key, sha256 } => {
                volumes.push(config_map_volume("policy", name, Some((key, "policy.wasm"))));
                mounts.push(mount("policy", POLICY_DIR, true));
                args.push(format!("--policy={POLICY_DIR}/policy.wasm"));
                args.push(format!("--policy-sha256={sha256}"));
            }
            PolicyMount::Path { path, sha256 } => {
                args.push(format!("--policy={path}"));
                args.push(format!("--policy-sha256={sha256}"));
            }
            PolicyMount::Registry {
                module,
                settings,
                insecure,
            } => {
                args.push(format!("--policy={module}"));
                if !settings.trim().is_empty() {
                    args.push(format!("--settings-json={settings}"));
                }
                for host in insecure {
                    args.push(format!("--insecure-registry={host}"));
                }
                // The pull secrets that let the kubelet pull the worker image
                // let the worker pull the policy.
                for (i, secret) in self.pull_secrets.iter().enumerate() {
                    let volume = format!("registry-auth-{i}");
                    let dir = format!("{REGISTRY_AUTH_DIR}/{secret}");
                    volumes.push(Volume {
                        name: volume.clone(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(secret.clone()),
                            items: Some(vec![KeyToPath {
                                key: DOCKER_CONFIG_KEY.into(),
                                path: DOCKER_CONFIG_KEY.into(),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                    mounts.push(mount(&volume, &dir, true));
                    args.push(format!("--registry-auth={dir}/{DOCKER_CONFIG_KEY}"));
                }
            }
        }
        if let Some(name) = &self.system_exclusions {
            volumes.push(config_map_volume("system-exclusions", name, None));
            mounts.push(mount("system-exclusions", SYSTEM_EXCLUSIONS_DIR, true));
            args.push(format!("--system-exclusions={SYSTEM_EXCLUSIONS_DIR}"));
        }
        for (i, name) in self.user_exclusions.iter().enumerate() {
            let volume = format!("exclusions-{i}");
            volumes.push(config_map_volume(&volume, name, None));
            mounts.push(mount(&volume, &format!("{USER_EXCLUSIONS_DIR}/{name}"), true));
        }
        if !self.user_exclusions.is_empty() {
            args.push(format!("--exclusions-dir={USER_EXCLUSIONS_DIR}"));
        }
        if job.spec.trigger == Trigger::Manual {
            // The list travels in an annotation, shown to the pod as a file:
            // no extra object to create and clean up.
            annotations.insert(
                ANNOTATION_IMAGELIST.into(),
                serde_json::to_string(&job.spec.images).unwrap_or_default(),
            );
            volumes.push(Volume {
                name: "imagelist".into(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "images.json".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: format!("metadata.annotations['{ANNOTATION_IMAGELIST}']"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(mount("imagelist", IMAGELIST_DIR, true));
            args.push(format!("--imagelist={IMAGELIST_DIR}/images.json"));
        }
        if let Some(path) = &self.image_fs {
            // Must exist: a hostPath the runtime creates would be an empty
            // directory on the node's root filesystem, the wrong capacity.
            volumes.push(host_path("image-fs", path, "Directory"));
            mounts.push(mount("image-fs", IMAGE_FS_DIR, true));
            args.push(format!("--image-fs={IMAGE_FS_DIR}"));
            args.push(format!("--image-fs-node-path={path}"));
        }
        let node_labels: Vec<String> = node_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut env = vec![
            EnvVar {
                name: "NODE_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.nodeName".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EnvVar {
                name: "SCOUR_NODE_LABELS".into(),
                value: Some(node_labels.join(",")),
                ..Default::default()
            },
            EnvVar {
                name: "TMPDIR".into(),
                value: Some("/tmp".into()),
                ..Default::default()
            },
        ];
        if let Some(level) = &self.log_level {
            env.push(EnvVar {
                name: "SCOUR_LOG".into(),
                value: Some(level.clone()),
                ..Default::default()
            });
        }

        Pod {
            metadata: ObjectMeta {
                name: Some(pod_name(&job_name, node)),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                // Garbage-collected with its ImageJob where a garbage collector runs.
                owner_references: job.controller_owner_ref(&()).map(|r| vec![r]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.to_owned()),
                restart_policy: Some("Never".into()),
                service_account_name: Some(self.service_account.clone()),
                automount_service_account_token: Some(false),
                tolerations: Some(vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]),
                priority_class_name: self.priority_class.clone(),
                image_pull_secrets: (!self.pull_secrets.is_empty()).then(|| {
                    self.pull_secrets
                        .iter()
                        .map(|name| LocalObjectReference { name: name.clone() })
                        .collect()
                }),
                containers: vec![Container {
                    name: CONTAINER.into(),
                    image: Some(self.image.clone()),
                    command: Some(vec!["/usr/local/bin/scour".into()]),
                    args: Some(args),
                    env: Some(env),
                    resources: Some(self.resources.clone()),
                    volume_mounts: Some(mounts),
                    termination_message_policy: Some("File".into()),
                    security_context: Some(SecurityContext {
                        // Root for the runtime socket, but with no capabilities.
                        run_as_user: Some(0),
                        allow_privilege_escalation: Some(false),
                        read_only_root_filesystem: Some(true),
                        capabilities: Some(Capabilities {
                            drop: Some(vec!["ALL".into()]),
                            ..Default::default()
                        }),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn host_path(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    }
}

fn config_map_volume(volume: &str, name: &str, item: Option<(&str, &str)>) -> Volume {
    Volume {
        name: volume.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.into(),
            items: item.map(|(key, path)| {
                vec![KeyToPath {
                    key: key.into(),
                    path: path.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The CRI socket's path on the node, from `manager.runtime.address`.
pub fn runtime_socket(loaded: &Loaded) -> String {
    let address = loaded
        .runtime_address()
        .unwrap_or("unix:///run/containerd/containerd.sock");
    address.strip_prefix("unix://").unwrap_or(address).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_are_stable_short_and_distinct() {
        let a = pod_name("scour-automatic-20261123-101500", "aks-nodepool1-12345678-vmss000000");
        assert_eq!(
            a,
            pod_name("scour-automatic-20261123-101500", "aks-nodepool1-12345678-vmss000000")
        );
        assert!(a.len() <= 63, "{a}");
        let long = "n".repeat(253);
        assert!(pod_name("scour-automatic-20261123-101500", &long).len() <= 63);
        assert_ne!(pod_name("j", "node.a"), pod_name("j", "node-a"));
    }

    #[test]
    fn eraser_images_are_not_used_as_workers() {
        let text = "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\ncomponents:\n  remover:\n    image:\n      repo: ghcr.io/eraser-dev/remover\n      tag: v1.4.1\n";
        let loaded = Loaded::parse(text).unwrap();
        assert_eq!(worker_image(&loaded, Some("scour:1"), "cm").unwrap(), "scour:1");
        assert!(worker_image(&loaded, None, "cm").is_err());
        let ours = Loaded::parse(&text.replace("ghcr.io/eraser-dev/remover", "ghcr.io/scour-dev/scour")).unwrap();
        assert_eq!(
            worker_image(&ours, Some("x"), "cm").unwrap(),
            "ghcr.io/scour-dev/scour:v1.4.1"
        );
    }

    fn template(image_fs: Option<&str>) -> WorkerTemplate {
        WorkerTemplate {
            image: "scour:1".into(),
            namespace: "kube-system".into(),
            service_account: "scour-worker".into(),
            config_map: "eraser-manager-config".into(),
            runtime_socket: "/run/containerd/containerd.sock".into(),
            node_state_dir: "/var/lib/scour".into(),
            image_fs: image_fs.map(str::to_owned),
            system_exclusions: None,
            user_exclusions: Vec::new(),
            policy: PolicyMount::BuiltIn,
            resources: ResourceRequirements::default(),
            extra_labels: BTreeMap::new(),
            pull_secrets: Vec::new(),
            priority_class: None,
            log_level: None,
        }
    }

    fn job() -> ImageJob {
        let spec = serde_json::json!({
            "trigger": "automatic",
            "workerImage": "scour:1",
            "rollout": {
                "maxConcurrency": 1,
                "pendingTimeoutSeconds": 600,
                "successRatio": 1.0,
                "delayOnSuccessSeconds": 0,
                "delayOnFailureSeconds": 600,
            },
        });
        ImageJob::new("scour-automatic-1", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn the_image_filesystem_is_mounted_read_only_and_named_to_the_worker() {
        let pod = template(Some("/var/lib/containerd")).pod(&job(), "node-a", &BTreeMap::new());
        let spec = pod.spec.unwrap();
        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "image-fs")
            .unwrap();
        let host = volume.host_path.unwrap();
        assert_eq!(
            (host.path.as_str(), host.type_.as_deref()),
            ("/var/lib/containerd", Some("Directory"))
        );
        let container = &spec.containers[0];
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "image-fs")
            .unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (IMAGE_FS_DIR, Some(true)));
        let args = container.args.clone().unwrap();
        assert!(args.contains(&format!("--image-fs={IMAGE_FS_DIR}")), "{args:?}");
        assert!(
            args.contains(&"--image-fs-node-path=/var/lib/containerd".to_owned()),
            "{args:?}"
        );

        // `scour.imageFsPath: ""`: no mount, no flag.
        let pod = template(None).pod(&job(), "node-a", &BTreeMap::new());
        let spec = pod.spec.unwrap();
        assert!(!spec.volumes.unwrap().iter().any(|v| v.name == "image-fs"));
        let args = spec.containers[0].args.clone().unwrap();
        assert!(!args.iter().any(|a| a.starts_with("--image-fs")), "{args:?}");
    }

    #[test]
    fn a_registry_policy_is_pulled_by_the_worker_with_the_pull_secrets() {
        let module = format!("registry://r.example/p:v1@sha256:{}", "ab".repeat(32));
        let mut t = template(None);
        t.policy = PolicyMount::Registry {
            module: module.clone(),
            settings: r#"{"maxAgeDays": 14}"#.into(),
            insecure: vec!["r.example".into()],
        };
        t.pull_secrets = vec!["regcred".into()];
        let spec = t.pod(&job(), "node-a", &BTreeMap::new()).spec.unwrap();
        let container = &spec.containers[0];
        let args = container.args.clone().unwrap();
        for want in [
            format!("--policy={module}"),
            r#"--settings-json={"maxAgeDays": 14}"#.to_owned(),
            "--insecure-registry=r.example".to_owned(),
            format!("--registry-auth={REGISTRY_AUTH_DIR}/regcred/{DOCKER_CONFIG_KEY}"),
        ] {
            assert!(args.contains(&want), "{want} not in {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--policy-sha256")), "{args:?}");
        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.secret.is_some())
            .expect("the pull secret as a volume");
        assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some("regcred"));
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
            .unwrap();
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn cpu_limits_are_applied_and_zero_means_none() {
        let text = "apiVersion: eraser.sh/v1alpha3\nkind: EraserConfig\ncomponents:\n  scanner:\n    enabled: true\n    request:\n      cpu: 200m\n      mem: 500Mi\n    limit:\n      cpu: 1500m\n      mem: 2Gi\n";
        let r = resources(&Loaded::parse(text).unwrap());
        assert_eq!(r.limits.as_ref().unwrap()["cpu"], Quantity("1500m".into()));
        assert_eq!(r.requests.as_ref().unwrap()["memory"], Quantity("500Mi".into()));
        let r = resources(&Loaded::parse(&text.replace("cpu: 1500m", "cpu: 0")).unwrap());
        assert!(!r.limits.as_ref().unwrap().contains_key("cpu"));
    }
}
