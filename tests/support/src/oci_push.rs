//! Puts an arbitrary artifact into a test registry with plain HTTP requests
//! (monolithic blob uploads, then the manifest), independently of scour's
//! own OCI client: for artifacts `scour policy push` would refuse to write,
//! such as a container image's layer or a policy that fails its own cases.

use std::net::SocketAddr;

use crate::images::sha256_digest as sha256;
use crate::registry::http;

/// One layer: media type, bytes, and an optional `org.opencontainers.image.title`.
pub struct Layer<'a> {
    pub media_type: &'a str,
    pub data: &'a [u8],
    pub title: Option<&'a str>,
}

/// Pushes `layers` with a config blob of `config_media_type` to
/// `repo:tag` on the registry at `addr`, as `authorization` (a header
/// value) if given. Returns the manifest's digest.
pub fn push_artifact(
    addr: SocketAddr,
    authorization: Option<&str>,
    repo: &str,
    tag: &str,
    config_media_type: &str,
    layers: &[Layer<'_>],
) -> String {
    let send = |method: &str, target: &str, content_type: Option<&str>, body: &[u8]| {
        let mut headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("Authorization", *a)).collect();
        headers.extend(content_type.map(|t| ("Content-Type", t)));
        http(addr, method, target, &headers, body).expect("an answer from the registry")
    };
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#;
    let mut descriptors = Vec::new();
    for (media_type, data, title) in std::iter::once((config_media_type, &config[..], None))
        .chain(layers.iter().map(|l| (l.media_type, l.data, l.title)))
    {
        let digest = sha256(data);
        let started = send("POST", &format!("/v2/{repo}/blobs/uploads/"), None, &[]);
        assert_eq!(started.status, 202, "starting an upload to {repo}");
        let location = started.header("location").expect("an upload location");
        let path = location.strip_prefix(&format!("http://{addr}")).unwrap_or(location);
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = send(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            Some("application/octet-stream"),
            data,
        );
        assert_eq!(
            put.status,
            201,
            "uploading {digest}: {}",
            String::from_utf8_lossy(&put.body)
        );
        let mut d = serde_json::json!({"mediaType": media_type, "digest": digest, "size": data.len()});
        if let Some(t) = title {
            d["annotations"] = serde_json::json!({"org.opencontainers.image.title": t});
        }
        descriptors.push(d);
    }
    let config = descriptors.remove(0);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": descriptors,
    }))
    .unwrap();
    let put = send(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        Some("application/vnd.oci.image.manifest.v1+json"),
        &manifest,
    );
    assert_eq!(
        put.status,
        201,
        "putting the manifest of {repo}:{tag}: {}",
        String::from_utf8_lossy(&put.body)
    );
    sha256(&manifest)
}
