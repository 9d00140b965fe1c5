//! A real OCI registry (distribution 2.8, Debian's `docker-registry`) on a
//! free loopback port, storing into its own temp dir, stopped by PID when
//! dropped: for tests that push and pull policy artifacts.
//!
//! Plain HTTP only. With [`Registry::start_with_auth`] it asks for HTTP Basic
//! credentials from an htpasswd file (bcrypt); distribution accepts those
//! over plain HTTP (its docs recommend TLS but it does not insist), so no
//! certificate is involved. Clients must treat `host()` as an insecure
//! (plain HTTP) registry.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How long the registry may take to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// SIGTERM, then SIGKILL after this long.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Fresh ports to try when another process takes the chosen one first.
const PORT_ATTEMPTS: usize = 3;
/// The bcrypt cost of the htpasswd entry: the minimum. The registry checks
/// the password on every request, and the default cost (12) takes a quarter
/// of a second each time.
const BCRYPT_COST: u32 = 4;
/// The Basic realm the registry names in its challenge.
pub const REALM: &str = "scour-test";

pub struct Registry {
    child: Option<Child>,
    addr: SocketAddr,
    credentials: Option<(String, String)>,
    log: PathBuf,
    storage: PathBuf,
    // Last: removed after Drop has stopped the process.
    dir: tempfile::TempDir,
}

impl Registry {
    /// An anonymous registry (anyone may push and pull), answering `/v2/`;
    /// `None` when `docker-registry` is missing (see
    /// [`crate::gate::require_registry`]: a skip locally, a panic in CI).
    /// Panics if it does not start.
    pub fn start() -> Option<Registry> {
        let bin = crate::gate::require_registry()?;
        Some(Self::launch(&bin, None))
    }

    /// A registry that answers 401 without the HTTP Basic credentials
    /// `user`:`password` (an htpasswd file with a bcrypt entry); `None` as
    /// for [`Registry::start`].
    pub fn start_with_auth(user: &str, password: &str) -> Option<Registry> {
        assert!(
            !user.is_empty() && !user.contains([':', '\n', '\r']),
            "registry user {user:?}: must be non-empty, without ':' or newlines"
        );
        assert!(
            !password.contains(['\n', '\r']),
            "the registry password may not contain newlines"
        );
        let bin = crate::gate::require_registry()?;
        Some(Self::launch(&bin, Some((user.to_owned(), password.to_owned()))))
    }

    fn launch(bin: &Path, credentials: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("scour-registry-")
            .tempdir()
            .expect("creating the registry's temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("creating the registry's storage dir");
        let htpasswd = credentials.as_ref().map(|(user, password)| {
            let path = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, BCRYPT_COST).expect("bcrypt hash of the registry password");
            std::fs::write(&path, format!("{user}:{hash}\n")).expect("writing the registry's htpasswd");
            path
        });
        let config = dir.path().join("config.yml");
        let log = dir.path().join("registry.log");
        let mut registry = Registry {
            child: None,
            addr: crate::trivy_server::free_port(),
            credentials,
            log,
            storage,
            dir,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            if attempt > 1 {
                registry.addr = crate::trivy_server::free_port();
            }
            let yaml = config_yaml(registry.addr, &registry.storage, htpasswd.as_deref());
            std::fs::write(&config, yaml).expect("writing the registry config");
            let out = std::fs::File::create(&registry.log).expect("registry log");
            let child = Command::new(bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("registry log"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {} serve: {e}", bin.display()));
            registry.child = Some(child);
            match registry.wait_ready() {
                Ok(()) => return registry,
                Err(status) => {
                    let text = registry.log_text();
                    if attempt < PORT_ATTEMPTS && text.contains("address already in use") {
                        registry.child = None;
                        continue;
                    }
                    panic!(
                        "docker-registry on {} exited with {status} before answering /v2/; its log:\n{text}",
                        registry.addr
                    );
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Waits until `GET /v2/` answers (200, or 401 with auth); the exit
    /// status if the process ends first; panics after [`READY_TIMEOUT`].
    fn wait_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(status);
            }
            if let Ok(status) = self.status("/v2/", false)
                && matches!(status, 200 | 401)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = self.log_text();
                self.stop();
                panic!(
                    "docker-registry on {} did not answer GET /v2/ within {READY_TIMEOUT:?}; its log:\n{log}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, the registry part of a reference
    /// (`{host}/policies/name:tag`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The user and password it asks for, if started with auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The `Authorization` header value for its credentials
    /// (`Basic base64(user:password)`), if started with auth.
    pub fn basic_auth(&self) -> Option<String> {
        self.credentials().map(|(user, password)| basic_auth(user, password))
    }

    /// Where it keeps blobs and manifests (filesystem storage driver).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The temp dir holding its config, htpasswd, log and storage.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its PID (0 once stopped), for a test that checks the teardown.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Everything it has logged so far (stdout and stderr, including its
    /// access log), for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP status of `GET path` (e.g. `/v2/`), with its credentials
    /// when `authenticated` (and it has any). One request, no redirects.
    pub fn status(&self, path: &str, authenticated: bool) -> io::Result<u16> {
        let auth = self.basic_auth().filter(|_| authenticated);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        http(self.addr, "GET", path, &headers, b"").map(|r| r.status)
    }

    /// Stops it (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(&mut self) {
        let addr = self.addr;
        crate::control_plane::terminate(&mut [("docker-registry", &mut self.child)], STOP_GRACE, |m| {
            eprintln!("docker-registry {addr}: {m}")
        });
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP answer: status, headers, body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 request to a registry (the answer ends with the
/// connection), for tests that talk to it below any OCI client.
pub fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} in {:?}", String::from_utf8_lossy(&answer)),
        )
    };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: answer[split + 4..].to_vec(),
    })
}

/// `Basic base64(user:password)`, an `Authorization` header value.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The distribution configuration: filesystem storage under `storage`
/// (deletes allowed, no background upload purging), listening on `addr`,
/// Basic auth from `htpasswd` if given.
fn config_yaml(addr: SocketAddr, storage: &Path, htpasswd: Option<&Path>) -> String {
    let mut config = serde_json::json!({
        "version": "0.1",
        "log": { "level": "info", "formatter": "text" },
        "storage": {
            "filesystem": { "rootdirectory": storage },
            "delete": { "enabled": true },
            "maintenance": { "uploadpurging": { "enabled": false } },
        },
        "http": {
            "addr": addr.to_string(),
            // Fixed, so that it does not warn about a generated one.
            "secret": "scour-testkit",
        },
    });
    if let Some(htpasswd) = htpasswd {
        config["auth"] = serde_json::json!({ "htpasswd": { "realm": REALM, "path": htpasswd } });
    }
    serde_yaml::to_string(&config).expect("registry config as YAML")
}
