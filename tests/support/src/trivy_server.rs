//! A real `trivy server` on a free loopback port, holding a generated DB,
//! stopped by PID when dropped.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TrivyServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub cache_dir: PathBuf,
    log: PathBuf,
}

impl TrivyServer {
    /// Starts `trivy server` on `cache_dir` (which must hold `db/`), offline,
    /// and waits until `/healthz` answers. Panics if it does not within 30 s.
    pub fn start(trivy: &Path, cache_dir: &Path) -> Self {
        let addr = free_port();
        let log = cache_dir.join("server.log");
        let out = std::fs::File::create(&log).expect("server log");
        let child = Command::new(trivy)
            .args(["server", "--skip-db-update", "--listen"])
            .arg(addr.to_string())
            .arg("--cache-dir")
            .arg(cache_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("server log"))
            .stderr(out)
            .spawn()
            .expect("starting trivy server");
        let mut server = Self {
            child: Some(child),
            addr,
            cache_dir: cache_dir.to_owned(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.healthy() {
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("trivy server exited with {status}: {}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "trivy server not healthy in 30 s: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Its PID, for a test that stops it behind scour's back.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn healthy(&self) -> bool {
        use std::io::Write;
        let Ok(mut conn) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        if conn
            .write_all(format!("GET /healthz HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes())
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.") && answer.split_whitespace().nth(1) == Some("200")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The CPU time (user + system) the server has used so far, from
    /// `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return Duration::ZERO;
        };
        process_cpu_time(pid)
    }

    /// Stops it (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(&mut self) {
        crate::control_plane::terminate(&mut [("trivy server", &mut self.child)], Duration::from_secs(5), |m| {
            eprintln!("trivy server {}: {m}", self.addr)
        });
    }
}

impl Drop for TrivyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// user + system CPU time of process `pid`, from `/proc/PID/stat`.
pub fn process_cpu_time(pid: u32) -> Duration {
    stat_cpu_time(&format!("/proc/{pid}/stat"), [11, 12])
}

/// user + system CPU time of this process's children that have been waited
/// for, theirs included (`cutime` + `cstime` of `/proc/self/stat`): a
/// `scour worker` run and every Trivy process it ran.
pub fn waited_children_cpu_time() -> Duration {
    stat_cpu_time("/proc/self/stat", [13, 14])
}

/// The sum of two clock-tick fields of a stat file, counted from the field
/// after the parenthesised command name (`state` is 0).
fn stat_cpu_time(path: &str, fields: [usize; 2]) -> Duration {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let all: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .iter()
        .filter_map(|&i| all.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A loopback address nothing listens on yet.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// A TCP server on loopback that answers every connection with the same
/// canned bytes and closes it, until the test ends: a scanner endpoint that
/// answers as told, sense or nonsense.
pub fn canned_server(answer: &'static [u8]) -> SocketAddr {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(answer);
        }
    });
    addr
}
