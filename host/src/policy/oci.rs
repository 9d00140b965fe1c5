//! Policies in an OCI registry, named `registry://HOST/REPO[:TAG]@sha256:…`.
//!
//! The artifact is laid out as Kubewarden and wasm-to-oci lay out a Wasm
//! module: config `application/vnd.wasm.config.v1+json`, one layer
//! `application/vnd.wasm.content.layer.v1+wasm` holding the component.
//! scour adds the policy's golden cases as layers of
//! `application/vnd.scour.policy.cases.v1+yaml`, each titled by
//! `org.opencontainers.image.title`, so that whoever runs a policy can vet it
//! against its own cases first.
//!
//! A pull is pinned: the manifest must hash to the reference's digest and
//! every blob to its descriptor's. Pulled artifacts are kept in a cache
//! directory and checked against the same digests on every use, so a node
//! downloads each policy version once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use super::{Error, Result, digest_of};

pub const SCHEME: &str = "registry://";
/// The component's layer, as Kubewarden and wasm-to-oci write it.
pub const COMPONENT_MEDIA_TYPE: &str = WASM_LAYER_MEDIA_TYPE;
pub const CONFIG_MEDIA_TYPE: &str = WASM_CONFIG_MEDIA_TYPE;
/// One golden-case file (`docs/snapshot-format.md`).
pub const CASES_MEDIA_TYPE: &str = "application/vnd.scour.policy.cases.v1+yaml";
const TITLE: &str = "org.opencontainers.image.title";

/// Larger than any policy built here (Python ~18 MiB), small enough that a
/// wrong reference cannot fill a node's disk.
const MAX_COMPONENT_BYTES: i64 = 256 << 20;
const MAX_CASES_BYTES: i64 = 8 << 20;
/// Pulled artifacts kept per cache directory; the least recently used go.
const KEEP_PULLED: usize = 4;

/// A policy's place in a registry. Pinned by digest for a pull; `push`
/// takes one without a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    reference: Reference,
}

impl PolicyRef {
    /// `registry://HOST/REPO[:TAG]@sha256:HEX`; the digest is required.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let r = Self::parse_unpinned(text)?;
        match r.reference.digest() {
            Some(d) if is_sha256(d) => Ok(r),
            Some(d) => Err(format!("{text}: {d} is not a sha256 digest")),
            None => Err(format!(
                "{text} is not pinned: name the policy by digest, {SCHEME}HOST/REPO:TAG@sha256:HEX \
                 (`scour policy push` prints it); a tag alone can change under a running cluster"
            )),
        }
    }

    /// `registry://HOST/REPO[:TAG][@sha256:HEX]`.
    pub fn parse_unpinned(text: &str) -> std::result::Result<Self, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("{text:?} is not a registry reference: it must start with {SCHEME}"))?;
        // Without an explicit host the reference would silently mean Docker Hub.
        let host = rest.split('/').next().unwrap_or_default();
        if !rest.contains('/') || !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(format!(
                "{text}: name the registry host, {SCHEME}HOST[:PORT]/REPO:TAG@sha256:HEX"
            ));
        }
        let reference = Reference::try_from(rest).map_err(|e| format!("{text}: {e}"))?;
        Ok(Self { reference })
    }

    /// `sha256:HEX`, for a pinned reference.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// `HOST[:PORT]`.
    pub fn host(&self) -> &str {
        self.reference.registry()
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The registry could not be asked, or refused.
    fn registry_error(&self, message: impl Into<String>) -> Error {
        Error::Registry {
            reference: self.to_string(),
            message: message.into(),
        }
    }

    /// What the registry holds there is not a policy.
    fn not_a_policy(&self, message: impl Into<String>) -> Error {
        Error::NotAPolicy {
            reference: self.to_string(),
            message: message.into(),
        }
    }

    /// The same place pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> Self {
        let reference = match self.reference.tag() {
            Some(tag) => Reference::with_tag_and_digest(
                self.reference.registry().to_owned(),
                self.reference.repository().to_owned(),
                tag.to_owned(),
                digest.to_owned(),
            ),
            None => Reference::with_digest(
                self.reference.registry().to_owned(),
                self.reference.repository().to_owned(),
                digest.to_owned(),
            ),
        };
        Self { reference }
    }
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{SCHEME}{}/{}",
            self.reference.registry(),
            self.reference.repository()
        )?;
        if let Some(tag) = self.reference.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.reference.digest() {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Docker config JSON documents (`.dockerconfigjson` of a pull secret,
    /// or `~/.docker/config.json`), each with where it came from.
    pub auth: Vec<(String, Vec<u8>)>,
    /// Registries (`HOST[:PORT]`) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Where pulled policies are kept; none pulls every time.
    pub cache_dir: Option<PathBuf>,
}

impl RegistryOptions {
    /// Reads Docker config files.
    pub fn read_auth_files(&mut self, files: &[PathBuf]) -> Result<()> {
        for file in files {
            let bytes = std::fs::read(file).map_err(|error| Error::Read {
                path: file.display().to_string(),
                error,
            })?;
            self.auth.push((file.display().to_string(), bytes));
        }
        Ok(())
    }

    /// The credentials for `host`: the first auth document with an entry
    /// for it, else anonymous.
    pub fn credentials(&self, host: &str) -> Result<RegistryAuth> {
        for (origin, bytes) in &self.auth {
            let unusable = |message: String| Error::Registry {
                reference: host.to_owned(),
                message: format!("registry credentials {origin}: {message}"),
            };
            let config = DockerConfig::parse(bytes).map_err(unusable)?;
            if let Some(auth) = config.for_host(host).map_err(unusable)? {
                return Ok(auth);
            }
        }
        Ok(RegistryAuth::Anonymous)
    }

    fn client(&self) -> Client {
        // reqwest's rustls needs a process-wide provider; kube brings ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::new(ClientConfig {
            protocol: if self.insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(self.insecure.clone())
            },
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        })
    }
}

/// `{"auths": {"HOST": {"auth": base64(user:password)} | {"username", "password"}}}`,
/// or the legacy `.dockercfg` map without `auths`.
#[derive(Debug, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Debug, Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(rename = "identitytoken")]
    identity_token: Option<String>,
    #[serde(rename = "registrytoken")]
    registry_token: Option<String>,
}

impl DockerConfig {
    fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let auths = match value.get("auths") {
            Some(a) => a.clone(),
            None => value,
        };
        let auths = serde_json::from_value(auths).map_err(|e| format!("not a Docker config: {e}"))?;
        Ok(Self { auths })
    }

    fn for_host(&self, host: &str) -> std::result::Result<Option<RegistryAuth>, String> {
        let Some(entry) = self
            .auths
            .iter()
            .find(|(k, _)| registry_host(k) == host)
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        if let Some(token) = entry.registry_token.as_ref().or(entry.identity_token.as_ref()) {
            return Ok(Some(RegistryAuth::Bearer(token.clone())));
        }
        if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Some(RegistryAuth::Basic(user.clone(), password.clone())));
        }
        let Some(encoded) = &entry.auth else {
            return Err(format!(
                "the entry for {host} has neither auth nor username and password"
            ));
        };
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("the auth of {host} is not base64: {e}"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| format!("the auth of {host} is not UTF-8"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("the auth of {host} is not USER:PASSWORD"))?;
        Ok(Some(RegistryAuth::Basic(user.to_owned(), password.to_owned())))
    }
}

/// `https://host:5000/v1/` → `host:5000`, as Docker config keys vary.
fn registry_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// A pulled policy, verified against its pin.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub reference: PolicyRef,
    pub component: Vec<u8>,
    /// The golden cases shipped with it: (file name, text).
    pub cases: Vec<(String, String)>,
    /// Read from the cache directory, not the registry.
    pub from_cache: bool,
}

/// Pulls a pinned policy, from the cache directory when it holds it.
pub async fn pull(r: &PolicyRef, opts: &RegistryOptions) -> Result<Pulled> {
    let pin = r
        .digest()
        .ok_or_else(|| Error::Reference(format!("{r} is not pinned by digest")))?
        .to_owned();
    if let Some(cached) = opts.cache_dir.as_deref().and_then(|dir| Cached::read(dir, &pin)) {
        return Ok(Pulled {
            reference: r.clone(),
            component: cached.component,
            cases: cached.cases,
            from_cache: true,
        });
    }
    let auth = opts.credentials(r.host())?;
    let client = opts.client();
    let accepted = [
        oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
        oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
        oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
        oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    ];
    let (manifest_bytes, _) = client
        .pull_manifest_raw(r.reference(), &auth, &accepted)
        .await
        .map_err(|e| r.registry_error(describe(&e)))?;
    let actual = digest_of(&manifest_bytes);
    if actual != pin {
        return Err(Error::PinMismatch { expected: pin, actual });
    }
    let manifest = policy_manifest(r, &manifest_bytes)?;
    let component_layer = component_layer(r, &manifest)?;
    let component = pull_blob(&client, r, component_layer, MAX_COMPONENT_BYTES).await?;
    let mut cases = Vec::new();
    for (i, layer) in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == CASES_MEDIA_TYPE)
        .enumerate()
    {
        let bytes = pull_blob(&client, r, layer, MAX_CASES_BYTES).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| r.not_a_policy(format!("golden-case layer {} is not UTF-8 text", layer.digest)))?;
        cases.push((case_title(layer, i), text));
    }
    if let Some(dir) = &opts.cache_dir {
        Cached::write(dir, &pin, &manifest_bytes, &component, &cases);
    }
    Ok(Pulled {
        reference: r.clone(),
        component,
        cases,
        from_cache: false,
    })
}

/// [`pull`] from synchronous code.
pub fn pull_blocking(r: &PolicyRef, opts: &RegistryOptions) -> Result<Pulled> {
    block_on(r, pull(r, opts))
}

/// Runs `work` on a thread of its own with its own runtime, so that it
/// works inside or outside a runtime.
fn block_on<T: Send>(r: &PolicyRef, work: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| r.registry_error(format!("cannot start an I/O runtime: {e}")))?
                    .block_on(work)
            })
            .join()
            .unwrap_or_else(|_| Err(r.registry_error("the registry thread panicked")))
    })
}

/// Publishes a component and its golden cases; returns the reference
/// pinned to the manifest's digest.
pub async fn push(
    r: &PolicyRef,
    component: &[u8],
    cases: &[(String, String)],
    annotations: BTreeMap<String, String>,
    opts: &RegistryOptions,
) -> Result<PolicyRef> {
    let mut layers = vec![ImageLayer::new(
        component.to_vec(),
        COMPONENT_MEDIA_TYPE.to_owned(),
        None,
    )];
    for (name, text) in cases {
        layers.push(ImageLayer::new(
            text.as_bytes().to_vec(),
            CASES_MEDIA_TYPE.to_owned(),
            Some(BTreeMap::from([(TITLE.to_owned(), name.clone())])),
        ));
    }
    // What wasm-to-oci writes as the config of a Wasm artifact.
    let config = Config::new(
        br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec(),
        CONFIG_MEDIA_TYPE.to_owned(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &config, (!annotations.is_empty()).then_some(annotations));
    let auth = opts.credentials(r.host())?;
    let client = opts.client();
    client
        .push(r.reference(), &layers, config, &auth, Some(manifest))
        .await
        .map_err(|e| r.registry_error(describe(&e)))?;
    let digest = client
        .fetch_manifest_digest(r.reference(), &auth)
        .await
        .map_err(|e| r.registry_error(format!("pushed, but reading back its digest failed: {}", describe(&e))))?;
    let pinned = r.pinned(&digest);
    // Read back what the registry now serves, as a worker will.
    let check = RegistryOptions {
        cache_dir: None,
        ..opts.clone()
    };
    let pulled = pull(&pinned, &check).await?;
    if pulled.component != component {
        return Err(r.registry_error("the registry serves other bytes than were pushed"));
    }
    Ok(pinned)
}

/// [`push`] from synchronous code.
pub fn push_blocking(
    r: &PolicyRef,
    component: &[u8],
    cases: &[(String, String)],
    annotations: BTreeMap<String, String>,
    opts: &RegistryOptions,
) -> Result<PolicyRef> {
    block_on(r, push(r, component, cases, annotations, opts))
}

/// The manifest, when it is an image manifest and not an index.
fn policy_manifest(r: &PolicyRef, bytes: &[u8]) -> Result<OciImageManifest> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| r.not_a_policy(format!("its manifest is not JSON: {e}")))?;
    if value.get("manifests").is_some() {
        return Err(r.not_a_policy("it is an image index (a multi-platform image), not a policy artifact"));
    }
    serde_json::from_value(value).map_err(|e| r.not_a_policy(format!("its manifest is not an OCI image manifest: {e}")))
}

/// The one component layer.
fn component_layer<'a>(r: &PolicyRef, manifest: &'a OciImageManifest) -> Result<&'a OciDescriptor> {
    let mut components = manifest.layers.iter().filter(|l| l.media_type == COMPONENT_MEDIA_TYPE);
    match (components.next(), components.next()) {
        (Some(layer), None) => Ok(layer),
        (None, _) => {
            let types: Vec<&str> = manifest.layers.iter().map(|l| l.media_type.as_str()).collect();
            Err(r.not_a_policy(format!(
                "it has no {COMPONENT_MEDIA_TYPE} layer (config {}, layers {types:?}); \
                     publish policies with `scour policy push`",
                manifest.config.media_type
            )))
        }
        (Some(_), Some(_)) => Err(r.not_a_policy(format!("it has more than one {COMPONENT_MEDIA_TYPE} layer"))),
    }
}

async fn pull_blob(client: &Client, r: &PolicyRef, layer: &OciDescriptor, max: i64) -> Result<Vec<u8>> {
    if !(0..=max).contains(&layer.size) {
        return Err(r.not_a_policy(format!(
            "its {} layer is {} bytes; at most {max} are accepted",
            layer.media_type, layer.size
        )));
    }
    let mut out = Vec::with_capacity(usize::try_from(layer.size).unwrap_or_default());
    client
        .pull_blob(r.reference(), layer, &mut out)
        .await
        .map_err(|e| r.registry_error(format!("pulling layer {}: {}", layer.digest, describe(&e))))?;
    let actual = digest_of(&out);
    if actual != layer.digest {
        return Err(Error::PinMismatch {
            expected: layer.digest.clone(),
            actual,
        });
    }
    Ok(out)
}

fn case_title(layer: &OciDescriptor, index: usize) -> String {
    layer
        .annotations
        .as_ref()
        .and_then(|a| a.get(TITLE))
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .cloned()
        .unwrap_or_else(|| format!("cases-{index}.yaml"))
}

/// The error and every cause, as reqwest hides the useful part (connection
/// refused, certificate) in its sources.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// A pulled policy on disk: `<dir>/<hex>/` with `manifest.json` (written
/// last: its presence means complete), `component.wasm` and `cases.json`.
struct Cached {
    component: Vec<u8>,
    cases: Vec<(String, String)>,
}

impl Cached {
    fn entry(dir: &Path, pin: &str) -> PathBuf {
        dir.join(pin.strip_prefix("sha256:").unwrap_or(pin))
    }

    /// The cached policy, when every digest still matches.
    fn read(dir: &Path, pin: &str) -> Option<Self> {
        let entry = Self::entry(dir, pin);
        let manifest_bytes = std::fs::read(entry.join("manifest.json")).ok()?;
        if digest_of(&manifest_bytes) != pin {
            return None;
        }
        let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes).ok()?;
        let layer = manifest.layers.iter().find(|l| l.media_type == COMPONENT_MEDIA_TYPE)?;
        let component = std::fs::read(entry.join("component.wasm")).ok()?;
        if digest_of(&component) != layer.digest {
            tracing::warn!(entry = %entry.display(), "a cached policy does not match its digest; pulling it again");
            return None;
        }
        let cases: Vec<(String, String)> =
            serde_json::from_slice(&std::fs::read(entry.join("cases.json")).ok()?).ok()?;
        let expected: Vec<&str> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == CASES_MEDIA_TYPE)
            .map(|l| l.digest.as_str())
            .collect();
        let actual: Vec<String> = cases.iter().map(|(_, text)| digest_of(text.as_bytes())).collect();
        if expected != actual {
            return None;
        }
        mark_used(&entry.join("manifest.json"));
        Some(Self { component, cases })
    }

    /// Best effort: a cache that cannot be written costs a download.
    fn write(dir: &Path, pin: &str, manifest: &[u8], component: &[u8], cases: &[(String, String)]) {
        let entry = Self::entry(dir, pin);
        let written = crate::fsutil::create_private_dir(&entry)
            .and_then(|()| crate::fsutil::write_atomically(&entry.join("component.wasm"), component))
            .and_then(|()| {
                let cases = serde_json::to_vec(cases).map_err(std::io::Error::other)?;
                crate::fsutil::write_atomically(&entry.join("cases.json"), &cases)
            })
            .and_then(|()| crate::fsutil::write_atomically(&entry.join("manifest.json"), manifest));
        if let Err(e) = written {
            tracing::warn!(entry = %entry.display(), error = %e, "cannot keep the pulled policy");
            return;
        }
        evict(dir, &entry);
    }
}

/// Keeps the [`KEEP_PULLED`] most recently used entries and `keep`.
fn evict(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut found: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != keep && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.len() == 64))
        .map(|p| {
            let used = std::fs::metadata(p.join("manifest.json"))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (used, p)
        })
        .collect();
    found.sort_by_key(|(used, _)| std::cmp::Reverse(*used));
    for (_, path) in found.into_iter().skip(KEEP_PULLED.saturating_sub(1)) {
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(entry = %path.display(), error = %e, "cannot evict a pulled policy");
        }
    }
}

fn mark_used(path: &Path) {
    let _ = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1976f5dc680683e8abec2dd049c4baa6400d7596043a7efc4b625fd838e97d5f";

    #[test]
    fn references_must_name_a_host_and_a_digest() {
        let r = PolicyRef::parse(&format!("registry://127.0.0.1:5000/policies/mine:v1@{D}")).unwrap();
        assert_eq!(r.host(), "127.0.0.1:5000");
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.to_string(), format!("registry://127.0.0.1:5000/policies/mine:v1@{D}"));
        let unpinned = PolicyRef::parse("registry://ghcr.io/acme/policy:v1").unwrap_err();
        assert!(unpinned.contains("not pinned"), "{unpinned}");
        assert!(PolicyRef::parse(&format!("oci://ghcr.io/acme/policy@{D}")).is_err());
        let hub = PolicyRef::parse(&format!("registry://acme/policy@{D}")).unwrap_err();
        assert!(hub.contains("registry host"), "{hub}");
        assert!(PolicyRef::parse("registry://ghcr.io/acme/policy@sha256:beef").is_err());
        let pinned = PolicyRef::parse_unpinned("registry://ghcr.io/acme/policy:v2")
            .unwrap()
            .pinned(D);
        assert_eq!(pinned.to_string(), format!("registry://ghcr.io/acme/policy:v2@{D}"));
    }

    #[test]
    fn credentials_come_from_docker_config_entries_for_the_host() {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        let config = format!(
            r#"{{"auths": {{"https://other.example/v1/": {{"auth": "eDp5"}}, "reg.example:5000": {{"auth": "{auth}"}}}}}}"#
        );
        let opts = RegistryOptions {
            auth: vec![("secret/regcred".into(), config.into_bytes())],
            ..Default::default()
        };
        assert_eq!(
            opts.credentials("reg.example:5000").unwrap(),
            RegistryAuth::Basic("ci".into(), "s3cret".into())
        );
        assert_eq!(
            opts.credentials("other.example").unwrap(),
            RegistryAuth::Basic("x".into(), "y".into())
        );
        assert_eq!(opts.credentials("third.example").unwrap(), RegistryAuth::Anonymous);
        let broken = RegistryOptions {
            auth: vec![(
                "secret/bad".into(),
                br#"{"auths": {"reg.example": {"auth": "!!"}}}"#.to_vec(),
            )],
            ..Default::default()
        };
        let err = broken.credentials("reg.example").unwrap_err().to_string();
        assert!(err.contains("secret/bad") && err.contains("base64"), "{err}");
    }
}
