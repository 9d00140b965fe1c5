//! The private OCI registry fixture (a real distribution 2.8 on loopback):
//! it answers `/v2/`, stores what is pushed, asks for credentials when told
//! to, and leaves nothing behind. Skipped with a loud line when
//! `docker-registry` is missing, failing when `CI` is set.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use scour_testkit::images::{sha256_digest, sha256_hex};
use scour_testkit::registry::{self, Registry};

/// One request, which must get an answer.
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> registry::Response {
    registry::http(addr, method, target, headers, body).expect("an answer from the registry")
}

/// What a stopped registry must not leave: its process, its port, its dir.
fn assert_gone(pid: u32, addr: SocketAddr, dir: &Path) {
    assert_ne!(pid, 0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()),
        "docker-registry {pid} still runs after the fixture was dropped"
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "something still listens on {addr}"
    );
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

#[test]
fn anonymous_registry_answers_and_stores_a_blob() {
    let Some(registry) = Registry::start() else { return };
    let (pid, addr, dir) = (registry.pid(), registry.addr(), PathBuf::from(registry.dir()));
    assert_eq!(registry.host(), format!("127.0.0.1:{}", addr.port()));
    assert_eq!(registry.url(), format!("http://127.0.0.1:{}", addr.port()));
    assert!(registry.credentials().is_none());

    let v2 = request(addr, "GET", "/v2/", &[], b"");
    assert_eq!(v2.status, 200, "GET /v2/; log:\n{}", registry.log_text());
    assert_eq!(v2.header("Docker-Distribution-Api-Version"), Some("registry/2.0"));
    assert_eq!(registry.status("/v2/", false).unwrap(), 200);

    // A blob upload (POST, then PUT with the digest) and a pull of it.
    let blob = b"scour policy artifact layer";
    let digest = sha256_digest(blob);
    let started = request(addr, "POST", "/v2/scour/probe/blobs/uploads/", &[], b"");
    assert_eq!(started.status, 202, "start upload; log:\n{}", registry.log_text());
    let location = started.header("Location").expect("upload Location").to_owned();
    let target = location.strip_prefix(&registry.url()).unwrap_or(&location);
    let sep = if target.contains('?') { '&' } else { '?' };
    let put = request(
        addr,
        "PUT",
        &format!("{target}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        blob,
    );
    assert_eq!(put.status, 201, "finish upload; log:\n{}", registry.log_text());
    let pulled = request(addr, "GET", &format!("/v2/scour/probe/blobs/{digest}"), &[], b"");
    assert_eq!(pulled.status, 200, "pull; log:\n{}", registry.log_text());
    assert_eq!(pulled.body, blob);

    // Kept in the fixture's own storage dir.
    let hex = sha256_hex(blob);
    let data = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    assert_eq!(std::fs::read(&data).expect("the blob in the storage dir"), blob);
    assert!(
        registry.log_text().contains("GET /v2/"),
        "access log:\n{}",
        registry.log_text()
    );

    drop(registry);
    assert_gone(pid, addr, &dir);
}

#[test]
fn registry_with_auth_asks_for_basic_credentials() {
    let (user, password) = ("scour", "pa55 word:with colon");
    let Some(registry) = Registry::start_with_auth(user, password) else {
        return;
    };
    let (pid, addr, dir) = (registry.pid(), registry.addr(), PathBuf::from(registry.dir()));
    assert_eq!(registry.credentials(), Some((user, password)));
    let htpasswd = std::fs::read_to_string(registry.dir().join("htpasswd")).unwrap();
    assert!(htpasswd.starts_with("scour:$2b$"), "{htpasswd}");

    let anonymous = request(addr, "GET", "/v2/", &[], b"");
    assert_eq!(anonymous.status, 401, "GET /v2/ without credentials");
    assert_eq!(
        anonymous.header("Www-Authenticate"),
        Some(format!("Basic realm=\"{}\"", registry::REALM).as_str())
    );
    let wrong = registry::basic_auth(user, "not the password");
    assert_eq!(
        request(addr, "GET", "/v2/", &[("Authorization", &wrong)], b"").status,
        401
    );

    let right = registry.basic_auth().unwrap();
    let authed = request(addr, "GET", "/v2/", &[("Authorization", &right)], b"");
    assert_eq!(
        authed.status,
        200,
        "GET /v2/ with credentials; log:\n{}",
        registry.log_text()
    );
    assert_eq!(registry.status("/v2/", false).unwrap(), 401);
    assert_eq!(registry.status("/v2/", true).unwrap(), 200);
    // A push needs them too.
    let push = request(addr, "POST", "/v2/scour/probe/blobs/uploads/", &[], b"");
    assert_eq!(push.status, 401, "anonymous upload");
    let push = request(
        addr,
        "POST",
        "/v2/scour/probe/blobs/uploads/",
        &[("Authorization", &right)],
        b"",
    );
    assert_eq!(
        push.status,
        202,
        "upload with credentials; log:\n{}",
        registry.log_text()
    );

    drop(registry);
    assert_gone(pid, addr, &dir);
}
