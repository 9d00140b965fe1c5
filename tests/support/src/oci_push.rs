//! Puts an arbitrary artifact into a test registry with plain HTTP requests
//! (monolithic blob uploads, then the manifest), independently of scour's
//! own OCI client: for artifacts `scour policy push` would refuse to write,
//! such as a container image's layer or a policy that fails its own cases.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sha2::Digest as _;

/// One layer: media type, bytes, and an optional `org.opencontainers.image.title`.
pub struct Layer<'a> {
    pub media_type: &'a str,
    pub data: &'a [u8],
    pub title: Option<&'a str>,
}

pub fn sha256(data: &[u8]) -> String {
    let hash = sha2::Sha256::digest(data);
    format!("sha256:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
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
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#;
    let mut descriptors = Vec::new();
    for (media_type, data, title) in std::iter::once((config_media_type, &config[..], None))
        .chain(layers.iter().map(|l| (l.media_type, l.data, l.title)))
    {
        let digest = sha256(data);
        let (status, headers, _) = request(
            addr,
            authorization,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            None,
            &[],
        );
        assert_eq!(status, 202, "starting an upload to {repo}");
        let location = header(&headers, "location").expect("an upload location");
        let path = location
            .strip_prefix(&format!("http://{addr}"))
            .unwrap_or(&location)
            .to_owned();
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, _, body) = request(
            addr,
            authorization,
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            Some("application/octet-stream"),
            data,
        );
        assert_eq!(status, 201, "uploading {digest}: {body}");
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
    let (status, _, body) = request(
        addr,
        authorization,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        Some("application/vnd.oci.image.manifest.v1+json"),
        &manifest,
    );
    assert_eq!(status, 201, "putting the manifest of {repo}:{tag}: {body}");
    sha256(&manifest)
}

/// One HTTP/1.0 request; returns status, headers (lowercased names) and body.
fn request(
    addr: SocketAddr,
    authorization: Option<&str>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connecting to the registry");
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(t) = content_type {
        head.push_str(&format!("Content-Type: {t}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}
