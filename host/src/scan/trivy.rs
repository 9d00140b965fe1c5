//! Running the Trivy binary and reading its JSON report.
//!
//! Trivy's report has many optional parts: `Metadata.OS` is absent when no
//! OS is recognised, `EOSL` is absent when false, `Results` and
//! `Vulnerabilities` are absent when empty, and `FixedVersion` is absent when
//! there is no fix. All of those are optional here too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use scour_policy_sdk::{Finding, OsInfo, ScanReport, Severity};
use serde::Deserialize;
use tokio::process::Command;

/// How long past its own `--timeout` a Trivy process may run before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How to run Trivy.
#[derive(Debug, Clone)]
pub struct TrivyOptions {
    /// The binary; a bare name is looked up on PATH.
    pub binary: PathBuf,
    /// `--cache-dir`: where the vulnerability DB and layer cache live.
    pub cache_dir: Option<PathBuf>,
    /// Never download: `--skip-db-update --offline-scan`.
    pub offline: bool,
    /// `--db-repository`, for a mirror of the vulnerability DB.
    pub db_repository: Option<String>,
    /// `--pkg-types` (`os`, `library`); empty keeps Trivy's default.
    pub pkg_types: Vec<String>,
    /// `--ignore-status`, e.g. `will_not_fix`.
    pub ignore_statuses: Vec<String>,
    /// `--cache-backend` for Trivy's layer cache: `memory` (no lock shared by
    /// parallel scans; scour keeps results itself) or `fs`.
    pub cache_backend: String,
    /// Go runtime settings for each scan process: GOMAXPROCS, and GOGC=off
    /// with this soft memory limit (GOMEMLIMIT). A short-lived scan spends
    /// much of its time in the garbage collector otherwise.
    pub go_max_procs: usize,
    pub go_memory_limit: u64,
    /// The containerd socket Trivy reads images from.
    pub containerd_socket: PathBuf,
    /// The containerd namespace CRI uses.
    pub namespace: String,
    /// A shared `trivy server` that holds the DB and the layer cache; scans
    /// run as its clients (`--server`) and this node keeps no DB.
    pub server: Option<ServerUrl>,
}

/// Where a `trivy server` listens: `http://HOST[:PORT]` (Trivy's server
/// speaks plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    url: String,
    /// `HOST:PORT`, to connect to.
    authority: String,
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("{text:?} is not an http:// URL (a Trivy server speaks plain HTTP)"))?;
        let host_port = rest.strip_suffix('/').unwrap_or(rest);
        if host_port.is_empty() || host_port.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!("{text:?}: give http://HOST[:PORT] and nothing more"));
        }
        let authority = match host_port.rsplit_once(':') {
            // `[v6]` alone has colons but no port.
            _ if host_port.ends_with(']') => format!("{host_port}:80"),
            Some((host, port)) => {
                if host.is_empty() {
                    return Err(format!("{text:?}: no host"));
                }
                port.parse::<u16>()
                    .map_err(|_| format!("{text:?}: the port {port:?} is not a number from 0 to 65535"))?;
                host_port.to_owned()
            }
            None => format!("{host_port}:80"),
        };
        Ok(Self {
            url: format!("http://{host_port}"),
            authority,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Where Trivy reads an image's layers from.
#[derive(Debug, Clone, Copy)]
pub enum ImageSource<'a> {
    /// Through containerd's export API, by tag or `repo@digest`
    /// (`--image-src containerd`): a copy of the whole image in a temp file.
    Export(&'a str),
    /// In place, from an OCI layout over containerd's content store
    /// (`--input`; see [`super::content_store`]).
    Layout(&'a Path),
}

impl std::fmt::Display for ImageSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::Export(reference) => f.write_str(reference),
            ImageSource::Layout(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// What Trivy looks for (`--scanners`).
const SCANNERS: &str = "vuln";

/// `trivy version --format json`: the binary's version and its DB's age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrivyInfo {
    pub version: String,
    /// `VulnerabilityDB.UpdatedAt`; absent when there is no DB yet.
    pub db_updated_at: Option<String>,
}

/// Why a Trivy run produced no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The binary is not there: every scan fails the same way.
    NotFound(String),
    /// It ran past its deadline and was killed.
    TimedOut(Duration),
    /// Non-zero exit or a signal; the message is Trivy's last error line.
    Failed(String),
    /// Exit 0, but stdout is not a report.
    Garbage(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::NotFound(m) | RunError::Failed(m) => f.write_str(m),
            RunError::TimedOut(d) => write!(f, "trivy timed out after {}", humantime::format_duration(*d)),
            RunError::Garbage(m) => write!(f, "unreadable trivy output: {m}"),
        }
    }
}

impl TrivyOptions {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("CONTAINERD_ADDRESS", &self.containerd_socket)
            .env("CONTAINERD_NAMESPACE", &self.namespace);
        cmd
    }

    fn cache_args(&self, cmd: &mut Command) {
        if let Some(dir) = &self.cache_dir {
            cmd.arg("--cache-dir").arg(dir);
        }
    }

    /// Asks the binary for its version, and it or the server for the DB's
    /// `UpdatedAt`.
    pub async fn info(&self, timeout: Duration) -> Result<TrivyInfo, RunError> {
        let mut cmd = self.command();
        cmd.args(["version", "--format", "json"]);
        self.cache_args(&mut cmd);
        let local = parse_version(&self.run(cmd, timeout).await?)?;
        let Some(server) = &self.server else {
            return Ok(local);
        };
        let answer = http_get(server, "/version", timeout)
            .await
            .map_err(|e| RunError::Failed(format!("the trivy server at {server} cannot be reached: {e}")))?;
        let remote = parse_version(&answer)
            .map_err(|e| RunError::Garbage(format!("the trivy server at {server} answered /version with {e}")))?;
        Ok(TrivyInfo {
            version: local.version,
            db_updated_at: remote.db_updated_at,
        })
    }

    /// Downloads the vulnerability DB before parallel scans, so they do not
    /// race to fetch it.
    pub async fn download_db(&self, timeout: Duration) -> Result<(), RunError> {
        let mut cmd = self.command();
        cmd.args([
            "image",
            "--download-db-only",
            "--skip-version-check",
            "--disable-telemetry",
            "-q",
        ]);
        self.cache_args(&mut cmd);
        if let Some(repo) = &self.db_repository {
            cmd.arg("--db-repository").arg(repo);
        }
        self.run(cmd, timeout).await.map(drop)
    }

    /// What a kept result depends on besides the image: Trivy's version,
    /// its DB, and every setting that changes what a scan finds. A result
    /// kept under another key is not reused.
    pub fn result_key(&self, info: &TrivyInfo) -> String {
        format!(
            "trivy {} db {} scanners {SCANNERS} pkg-types [{}] ignore-status [{}]",
            info.version,
            info.db_updated_at.as_deref().unwrap_or("unknown"),
            sorted(&self.pkg_types),
            sorted(&self.ignore_statuses),
        )
    }

    /// What a kept analysis depends on besides the image: how Trivy
    /// analyses it. Not the DB: an analysis outlives DB updates.
    pub fn analysis_key(&self, info: &TrivyInfo) -> String {
        format!(
            "trivy {} pkg-types [{}] offline-scan {}",
            info.version,
            sorted(&self.pkg_types),
            self.offline
        )
    }

    /// Scans one image held by containerd, reading its layers: the report,
    /// and its analysis (OS and every package, the report without its
    /// findings) for [`TrivyOptions::to_sbom`] to turn into an SBOM when
    /// the DB changes.
    pub async fn analyse(
        &self,
        source: &ImageSource<'_>,
        timeout: Duration,
    ) -> Result<(ScanReport, Vec<u8>), RunError> {
        let mut cmd = self.command();
        cmd.args([
            "image",
            "--format",
            "json",
            "--scanners",
            SCANNERS,
            "--list-all-pkgs",
            "--skip-version-check",
            "--disable-telemetry",
            "-q",
        ]);
        match &self.server {
            Some(server) => {
                cmd.arg("--server").arg(server.as_str());
            }
            None => {
                cmd.arg("--cache-backend").arg(&self.cache_backend);
                self.db_args(&mut cmd);
            }
        }
        if self.server.is_some() && self.offline {
            cmd.arg("--offline-scan");
        }
        self.common_args(&mut cmd, timeout);
        match source {
            ImageSource::Export(reference) => cmd.args(["--image-src", "containerd"]).arg(reference),
            ImageSource::Layout(dir) => cmd.arg("--input").arg(dir),
        };
        let stdout = self.run_bounded(cmd, timeout).await?;
        let report = parse_report(&stdout).map_err(RunError::Garbage)?;
        let analysis = without_findings(&stdout).map_err(RunError::Garbage)?;
        Ok((report, analysis))
    }

    /// Turns an analysis from [`TrivyOptions::analyse`] into a CycloneDX
    /// SBOM at `out` (`trivy convert`; no DB, no image).
    pub async fn to_sbom(&self, analysis: &Path, out: &Path, timeout: Duration) -> Result<(), RunError> {
        let mut cmd = self.command();
        self.go_env(&mut cmd);
        cmd.args(["convert", "--format", "cyclonedx", "-q"]);
        cmd.arg("--output").arg(out);
        cmd.arg(analysis);
        self.run_bounded(cmd, timeout).await.map(drop)
    }

    /// Matches a kept SBOM (from [`TrivyOptions::to_sbom`]) against the
    /// vulnerability DB. Reads no image.
    pub async fn match_analysis(&self, sbom: &Path, timeout: Duration) -> Result<ScanReport, RunError> {
        let mut cmd = self.command();
        cmd.args([
            "sbom",
            "--format",
            "json",
            "--scanners",
            SCANNERS,
            "--list-all-pkgs=false",
            "--skip-version-check",
            "--disable-telemetry",
            "-q",
        ]);
        match &self.server {
            // The server holds the DB and keeps it fresh.
            Some(server) => {
                cmd.arg("--server").arg(server.as_str());
            }
            None => {
                // Trivy's fs cache would only hold this SBOM, under a file
                // lock that makes parallel matches wait for each other.
                cmd.args(["--cache-backend", "memory"]);
                self.db_args(&mut cmd);
            }
        }
        self.common_args(&mut cmd, timeout);
        cmd.arg(sbom);
        let stdout = self.run_bounded(cmd, timeout).await?;
        parse_report(&stdout).map_err(RunError::Garbage)
    }

    /// Where the DB comes from, for a run that reads it itself.
    fn db_args(&self, cmd: &mut Command) {
        if self.offline {
            cmd.args(["--skip-db-update", "--offline-scan"]);
        } else if let Some(repo) = &self.db_repository {
            cmd.arg("--db-repository").arg(repo);
        }
    }

    /// The cache dir, Go runtime limits, `--pkg-types`, `--ignore-status`
    /// and Trivy's own `--timeout`, shared by the scan and the match.
    fn common_args(&self, cmd: &mut Command, timeout: Duration) {
        self.cache_args(cmd);
        self.go_env(cmd);
        if !self.pkg_types.is_empty() {
            cmd.arg("--pkg-types").arg(self.pkg_types.join(","));
        }
        if !self.ignore_statuses.is_empty() {
            cmd.arg("--ignore-status").arg(self.ignore_statuses.join(","));
        }
        cmd.arg("--timeout").arg(format!("{}s", timeout.as_secs().max(1)));
    }

    /// The Go runtime settings of a short-lived Trivy (see the fields).
    fn go_env(&self, cmd: &mut Command) {
        cmd.env("GOGC", "off")
            .env("GOMEMLIMIT", self.go_memory_limit.to_string())
            .env("GOMAXPROCS", self.go_max_procs.max(1).to_string());
    }

    /// Trivy's own timeout first; ours, a little later, kills it for good.
    async fn run_bounded(&self, cmd: Command, timeout: Duration) -> Result<Vec<u8>, RunError> {
        match self.run(cmd, timeout + KILL_GRACE).await {
            Err(RunError::TimedOut(_)) => Err(RunError::TimedOut(timeout)),
            other => other,
        }
    }

    async fn run(&self, mut cmd: Command, timeout: Duration) -> Result<Vec<u8>, RunError> {
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RunError::NotFound(format!("trivy not found at {}", self.binary.display())),
            _ => RunError::Failed(format!("cannot run {}: {e}", self.binary.display())),
        })?;
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(RunError::Failed(format!("waiting for trivy: {e}"))),
            // Dropping the future kills the process (kill_on_drop).
            Err(_) => return Err(RunError::TimedOut(timeout)),
        };
        if output.status.success() {
            return Ok(output.stdout);
        }
        let how = match output.status.code() {
            Some(code) => format!("trivy exited with status {code}"),
            None => {
                use std::os::unix::process::ExitStatusExt;
                format!("trivy was killed by signal {}", output.status.signal().unwrap_or(0))
            }
        };
        let detail = last_error_line(&output.stderr);
        Err(RunError::Failed(if detail.is_empty() {
            how
        } else {
            format!("{how}: {detail}")
        }))
    }
}

/// `trivy version --format json`, from the binary or a server's `/version`.
fn parse_version(json: &[u8]) -> Result<TrivyInfo, RunError> {
    #[derive(Deserialize)]
    struct Version {
        #[serde(rename = "Version")]
        version: String,
        #[serde(rename = "VulnerabilityDB")]
        db: Option<Db>,
    }
    #[derive(Deserialize)]
    struct Db {
        #[serde(rename = "UpdatedAt")]
        updated_at: Option<String>,
    }
    let v: Version = serde_json::from_slice(json).map_err(|e| {
        let start: String = String::from_utf8_lossy(json).chars().take(80).collect();
        RunError::Garbage(format!("{e} in {start:?}"))
    })?;
    Ok(TrivyInfo {
        version: v.version,
        db_updated_at: v.db.and_then(|d| d.updated_at).filter(|u| !u.starts_with("0001-")),
    })
}

/// The body of a plain HTTP/1.0 GET of `path` on a Trivy server, with
/// `TRIVY_TOKEN` in `TRIVY_TOKEN_HEADER` (Trivy's own variables) if set.
async fn http_get(server: &ServerUrl, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX: u64 = 1 << 20;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&server.authority).await?;
        let mut request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: scour\r\n",
            server.authority
        );
        if let Ok(token) = std::env::var("TRIVY_TOKEN") {
            let header = std::env::var("TRIVY_TOKEN_HEADER").unwrap_or_else(|_| "Trivy-Token".into());
            request.push_str(&format!("{header}: {token}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(MAX).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
        .map_err(|e| e.to_string())?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an answer that is not HTTP")?;
    let (head, body) = answer.split_at(split);
    let status_line = String::from_utf8_lossy(head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let ok = status_line.starts_with("HTTP/1.") && status_line.split_whitespace().nth(1) == Some("200");
    if !ok {
        return Err(format!("{path} answered {status_line:?}"));
    }
    Ok(body.get(4..).unwrap_or_default().to_vec())
}

/// A setting list in a canonical order, for keys.
fn sorted(v: &[String]) -> String {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v.join(",")
}

/// The most telling line of Trivy's stderr: the FATAL line if any, else the
/// last non-empty one, trimmed to a readable length.
fn last_error_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = lines
        .iter()
        .find(|l| l.contains("FATAL") || l.starts_with("panic:"))
        .or(lines.last())
        .copied()
        .unwrap_or_default();
    // Drop the timestamp Trivy puts in front of its log lines.
    let line = line.split_once("FATAL").map(|(_, rest)| rest.trim()).unwrap_or(line);
    let mut out: String = line.chars().take(300).collect();
    if line.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[derive(Deserialize)]
struct Report {
    #[serde(rename = "SchemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "Metadata", default)]
    metadata: Metadata,
    #[serde(rename = "Results", default)]
    results: Vec<ResultEntry>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(rename = "OS")]
    os: Option<Os>,
}

#[derive(Deserialize)]
struct Os {
    #[serde(rename = "Family", default)]
    family: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "EOSL", default)]
    eosl: bool,
}

#[derive(Deserialize)]
struct ResultEntry {
    #[serde(rename = "Vulnerabilities", default)]
    vulnerabilities: Vec<Vulnerability>,
}

#[derive(Deserialize)]
struct Vulnerability {
    #[serde(rename = "VulnerabilityID")]
    id: String,
    #[serde(rename = "PkgName", default)]
    pkg: String,
    #[serde(rename = "InstalledVersion", default)]
    installed: String,
    #[serde(rename = "FixedVersion")]
    fixed: Option<String>,
    #[serde(rename = "Severity", default)]
    severity: String,
}

/// A Trivy JSON report without its findings: the image's analysis, which
/// does not go stale when the DB changes.
fn without_findings(json: &[u8]) -> Result<Vec<u8>, String> {
    let mut report: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if let Some(results) = report.get_mut("Results").and_then(serde_json::Value::as_array_mut) {
        for result in results {
            if let Some(result) = result.as_object_mut() {
                result.remove("Vulnerabilities");
            }
        }
    }
    serde_json::to_vec(&report).map_err(|e| e.to_string())
}

/// Reads a Trivy JSON report into a scan report.
pub fn parse_report(json: &[u8]) -> Result<ScanReport, String> {
    let r: Report = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if r.schema_version.is_none() {
        return Err("not a Trivy report (no SchemaVersion)".into());
    }
    let os = r.metadata.os.map(|o| OsInfo {
        family: o.family,
        name: o.name,
        eol: o.eosl,
    });
    let findings = r
        .results
        .into_iter()
        .flat_map(|res| res.vulnerabilities)
        .map(|v| Finding {
            id: v.id,
            pkg: v.pkg,
            installed: v.installed,
            fixed: v.fixed.filter(|f| !f.is_empty()),
            severity: v.severity.parse().unwrap_or(Severity::Unknown),
        })
        .collect();
    Ok(ScanReport::new(os, findings))
}

/// The references to try for an image: repo digests first (they name exactly
/// this image), then tags.
pub fn scan_refs(digests: &[String], tags: &[String]) -> Vec<String> {
    digests.iter().chain(tags).cloned().collect()
}

/// Whether the binary exists, for a friendly early message.
pub fn resolve_binary(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_owned());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_report_is_read() {
        let json = br#"{"SchemaVersion":2,"ArtifactName":"x","Metadata":{"OS":{"Family":"alpine","Name":"3.12.0","EOSL":true}},
          "Results":[{"Target":"x (alpine 3.12.0)","Vulnerabilities":[
            {"VulnerabilityID":"CVE-1","PkgName":"musl","InstalledVersion":"1","FixedVersion":"2","Severity":"HIGH"},
            {"VulnerabilityID":"CVE-2","PkgName":"zlib","InstalledVersion":"1","Severity":"MEDIUM","Status":"affected"}]}]}"#;
        let r = parse_report(json).unwrap();
        assert_eq!(r.os.as_ref().unwrap().name, "3.12.0");
        assert!(r.os.as_ref().unwrap().eol);
        assert_eq!(r.summary.high.total, 1);
        assert_eq!(r.summary.high.fixable, 1);
        assert_eq!(r.summary.medium.fixable, 0);
    }

    #[test]
    fn optional_parts_may_be_absent() {
        let r = parse_report(br#"{"SchemaVersion":2,"ArtifactName":"x"}"#).unwrap();
        assert!(r.os.is_none() && r.findings.is_empty());
        let r = parse_report(
            br#"{"SchemaVersion":2,"Metadata":{"OS":{"Family":"alpine","Name":"3.99.1"}},"Results":[{"Target":"t"}]}"#,
        )
        .unwrap();
        assert!(!r.os.unwrap().eol, "absent EOSL means false");
        let r = parse_report(br#"{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"X","Severity":"WEIRD","FixedVersion":""}]}]}"#).unwrap();
        assert_eq!(r.findings[0].severity, Severity::Unknown);
        assert_eq!(r.findings[0].fixed, None);
    }

    #[test]
    fn a_server_url_is_plain_http_host_and_port() {
        for (text, authority) in [
            ("http://trivy.kube-system.svc:4954", "trivy.kube-system.svc:4954"),
            ("http://trivy.kube-system.svc:4954/", "trivy.kube-system.svc:4954"),
            ("http://10.0.0.1", "10.0.0.1:80"),
            ("http://[::1]:4954", "[::1]:4954"),
            ("http://[::1]", "[::1]:80"),
        ] {
            let url = ServerUrl::parse(text).unwrap();
            assert_eq!(url.authority, authority, "{text}");
        }
        for bad in [
            "https://trivy:4954",
            "trivy:4954",
            "http://",
            "http://trivy:99999",
            "http://trivy:port",
            "http://trivy:4954/twirp",
            "http://:4954",
            "http://user@trivy",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// An HTTP server on loopback that answers `answer` to everything.
    fn answering(answer: &'static [u8]) -> ServerUrl {
        let addr = scour_testkit::trivy_server::canned_server(answer);
        ServerUrl::parse(&format!("http://{addr}")).unwrap()
    }

    #[tokio::test]
    async fn a_server_that_answers_anything_but_its_version_is_refused() {
        let t = Duration::from_secs(5);
        let ok = answering(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Version\":\"0.76.0\",\"VulnerabilityDB\":{\"UpdatedAt\":\"2024-02-01T00:00:00Z\"}}");
        let body = http_get(&ok, "/version", t).await.unwrap();
        let info = parse_version(&body).unwrap();
        assert_eq!(info.db_updated_at.as_deref(), Some("2024-02-01T00:00:00Z"));

        let missing = answering(b"HTTP/1.0 404 Not Found\r\n\r\nno");
        let e = http_get(&missing, "/version", t).await.unwrap_err();
        assert!(e.contains("404"), "{e}");
        let not_http = answering(b"SSH-2.0-OpenSSH_9.2\r\n");
        assert!(
            http_get(&not_http, "/version", t)
                .await
                .unwrap_err()
                .contains("not HTTP")
        );
        let garbage = answering(b"HTTP/1.0 200 OK\r\n\r\n<html>hello</html>");
        let body = http_get(&garbage, "/version", t).await.unwrap();
        assert!(matches!(parse_version(&body), Err(RunError::Garbage(m)) if m.contains("<html>")));

        // Nothing listening: a clear error, not a hang.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = ServerUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(http_get(&down, "/version", t).await.unwrap_err().contains("refused"));
    }

    #[test]
    fn garbage_is_not_a_report() {
        assert!(parse_report(b"hello").is_err());
        assert!(parse_report(b"{}").unwrap_err().contains("SchemaVersion"));
        assert!(parse_report(b"").is_err());
    }

    #[test]
    fn the_fatal_line_explains_a_failure() {
        let stderr = b"2026-11-22T10:00:00Z\tINFO\tstarting\n2026-11-22T10:00:01Z\tFATAL\tFatal error\tinit error: DB error: failed to open db: invalid database\n";
        assert_eq!(
            last_error_line(stderr),
            "Fatal error\tinit error: DB error: failed to open db: invalid database"
        );
        assert_eq!(last_error_line(b"\n\n just this \n"), "just this");
        assert_eq!(last_error_line(b""), "");
    }
}
