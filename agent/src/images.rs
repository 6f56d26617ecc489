//! Images for pods through skiff-rootfs: imagePullPolicy Always/IfNotPresent/Never over the
//! node's content store, and the overlay snapshot chain of an image.

use oci_spec::image::ImageConfiguration;
use skiff_rootfs::pull::{PullOptions, pull, unpack_image};
use skiff_rootfs::reference::Reference;
use skiff_rootfs::registry::{Registry, RegistryOptions, credentials_from_auth_file};
use skiff_rootfs::snapshot::Snapshots;
use skiff_rootfs::store::{ImageRecord, Store};

/// Why an image is not there (the container waits with this reason and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// `ErrImagePull`, `ErrImageNeverPull`, `InvalidImageName`.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// A pulled image ready for containers.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The store record.
    pub record: ImageRecord,
    /// Its config.
    pub config: ImageConfiguration,
    /// The snapshot chain (layer chain ids).
    pub chain: Vec<skiff_rootfs::digest::Digest>,
    /// `repo@sha256:…`, the container status imageID.
    pub image_id: String,
}

/// The node's image store, snapshots and registry client.
#[derive(Debug)]
pub struct Images {
    /// Content store.
    pub store: Store,
    /// Overlay snapshots.
    pub snaps: Snapshots,
    registry: Registry,
    /// Registry options, for pulls with a pod's imagePullSecrets.
    opts: RegistryOptions,
    /// Pulls one at a time, as the kubelet's default `serializeImagePulls`; two pods of the
    /// same image then share one download instead of colliding on its blobs.
    pulls: std::sync::Mutex<()>,
}

/// Kubernetes' default pull policy: Always for `:latest` or no tag, else IfNotPresent.
pub fn default_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

impl Images {
    /// Opens the store and snapshots under `root`.
    pub fn open(root: &std::path::Path, insecure: Vec<String>) -> crate::Result<Images> {
        let err = |e: &dyn std::error::Error| crate::Error::Image {
            image: root.display().to_string(),
            message: crate::shim::error_chain(e),
        };
        let opts = RegistryOptions {
            insecure_registries: insecure,
            platform: format!("linux/{}", crate::node::go_arch()),
            ..RegistryOptions::default()
        };
        Ok(Images {
            store: Store::open(root).map_err(|e| err(&e))?,
            snaps: Snapshots::open(root).map_err(|e| err(&e))?,
            registry: Registry::new(opts.clone()),
            opts,
            pulls: std::sync::Mutex::new(()),
        })
    }

    /// Makes `image` present as `policy` says and unpacks it, on a blocking thread (the
    /// pull future is not `Send`; it runs there on the agent's runtime handle).
    pub async fn ensure(
        images: std::sync::Arc<Images>,
        image: String,
        policy: String,
        auths: Vec<Vec<u8>>,
    ) -> Result<Ready, ImageError> {
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            images.ensure_blocking(&handle, &image, &policy, &auths)
        })
        .await
        .map_err(|e| ImageError {
            reason: "ErrImagePull",
            message: e.to_string(),
        })?
    }

    /// The lock pulls hold; image GC takes it so that no image goes while one is pulled
    /// or unpacked for a container.
    pub fn pull_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.pulls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_blocking(
        &self,
        handle: &tokio::runtime::Handle,
        image: &str,
        policy: &str,
        auths: &[Vec<u8>],
    ) -> Result<Ready, ImageError> {
        let _one_at_a_time = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        let reference: Reference =
            image
                .parse()
                .map_err(|e: skiff_rootfs::reference::ReferenceError| ImageError {
                    reason: "InvalidImageName",
                    message: format!("Failed to apply default image tag \"{image}\": {e}"),
                })?;
        let existing = self.store.get_image(&reference.to_string()).ok().flatten();
        // the first pull secret with an entry for the image's registry, as the kubelet's
        // keyring; without one the node's own client pulls anonymously
        let creds = auths.iter().find_map(|doc| {
            credentials_from_auth_file(doc, reference.registry())
                .ok()
                .flatten()
        });
        let with_secret = creds.map(|(u, p)| {
            Registry::new(RegistryOptions {
                username: Some(u),
                password: Some(p),
                ..self.opts.clone()
            })
        });
        let registry = with_secret.as_ref().unwrap_or(&self.registry);
        let record = match (policy, existing) {
            ("Never", None) => {
                return Err(ImageError {
                    reason: "ErrImageNeverPull",
                    message: format!(
                        "Container image \"{image}\" is not present with pull policy of Never"
                    ),
                });
            }
            ("IfNotPresent" | "Never", Some(r)) => r,
            _ => handle
                .block_on(pull(
                    &self.store,
                    &self.snaps,
                    registry,
                    &reference,
                    &PullOptions {
                        progress: false,
                        ..PullOptions::default()
                    },
                ))
                .map_err(|e| ImageError {
                    reason: "ErrImagePull",
                    message: format!(
                        "failed to pull image \"{image}\": {}",
                        crate::shim::error_chain(&e)
                    ),
                })?,
        };
        let fail = |e: &dyn std::error::Error| ImageError {
            reason: "ErrImagePull",
            message: format!(
                "cannot unpack image \"{image}\": {}",
                crate::shim::error_chain(e)
            ),
        };
        let chain = unpack_image(&self.store, &self.snaps, &record).map_err(|e| fail(&e))?;
        let blob = self.store.read_blob(&record.config).map_err(|e| fail(&e))?;
        let config: ImageConfiguration = serde_json::from_slice(&blob).map_err(|e| fail(&e))?;
        let repo = record
            .name
            .rsplit_once(':')
            .map(|(r, _)| r)
            .unwrap_or(&record.name);
        let repo = repo.split('@').next().unwrap_or(repo).to_string();
        Ok(Ready {
            image_id: format!("{repo}@{}", record.manifest),
            record,
            config,
            chain,
        })
    }
}

/// The registry credentials of a pod's imagePullSecrets as Docker config documents
/// (`{"auths": …}`): `kubernetes.io/dockerconfigjson` as it is, the legacy
/// `kubernetes.io/dockercfg` (a bare map of registries) wrapped. Other types are skipped.
pub fn pull_auths(secrets: &[k8s_openapi::api::core::v1::Secret]) -> Vec<Vec<u8>> {
    secrets
        .iter()
        .filter_map(|s| {
            // data, or stringData when the API server kept it as written
            let get = |key: &str| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|d| d.0.clone())
                    .or_else(|| {
                        s.string_data
                            .as_ref()
                            .and_then(|d| d.get(key))
                            .map(|v| v.clone().into_bytes())
                    })
            };
            match s.type_.as_deref() {
                Some("kubernetes.io/dockerconfigjson") => get(".dockerconfigjson"),
                Some("kubernetes.io/dockercfg") => get(".dockercfg").map(|d| {
                    let mut doc = b"{\"auths\":".to_vec();
                    doc.extend_from_slice(&d);
                    doc.push(b'}');
                    doc
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_secrets_to_credentials() {
        use k8s_openapi::ByteString;
        let secret = |t: &str, key: &str, v: &str| k8s_openapi::api::core::v1::Secret {
            type_: Some(t.into()),
            data: Some([(key.to_string(), ByteString(v.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        // "dXNlcjpwYXNz" is base64("user:pass")
        let secrets = [
            secret("Opaque", "x", "{}"),
            secret(
                "kubernetes.io/dockercfg",
                ".dockercfg",
                r#"{"old.io": {"auth": "dXNlcjpwYXNz"}}"#,
            ),
            secret(
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                r#"{"auths": {"127.0.0.1:5000": {"username": "u", "password": "p"}}}"#,
            ),
        ];
        let auths = pull_auths(&secrets);
        assert_eq!(auths.len(), 2);
        let find = |reg: &str| {
            auths
                .iter()
                .find_map(|d| credentials_from_auth_file(d, reg).ok().flatten())
        };
        assert_eq!(find("old.io"), Some(("user".into(), "pass".into())));
        assert_eq!(find("127.0.0.1:5000"), Some(("u".into(), "p".into())));
        assert_eq!(find("other.io"), None);
    }

    #[test]
    fn default_pull_policy() {
        for (image, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("127.0.0.1:5000/app", "Always"),
            ("127.0.0.1:5000/app:v1", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(default_policy(image), want, "{image}");
        }
    }
}
