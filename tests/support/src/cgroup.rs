//! A memory-limited cgroup for one test, made under this process's own
//! (cgroup v1 `memory` controller or v2), and removed on drop.

use std::path::{Path, PathBuf};

pub struct MemoryCgroup {
    dir: PathBuf,
    /// cgroup v2 (`memory.max`, `memory.events`) rather than v1.
    v2: bool,
}

impl MemoryCgroup {
    /// A new child cgroup limited to `bytes`; `None` (with the reason on
    /// stderr) where cgroups cannot be made here (not root, no memory
    /// controller).
    pub fn create(bytes: u64) -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let name = format!("scour-test-{}-{}", std::process::id(), crate::scenario::rand_suffix());
        let (dir, limit_file) = match own.lines().find_map(|l| l.strip_prefix("0::")) {
            Some(path) if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => {
                let parent = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
                // The memory controller must be on for the parent's children.
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
                (parent.join(&name), "memory.max")
            }
            _ => {
                let path = own.lines().find_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                    controllers.split(',').any(|c| c == "memory").then(|| path.to_owned())
                })?;
                let parent = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
                (parent.join(&name), "memory.limit_in_bytes")
            }
        };
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("cannot make a cgroup at {}: {e}", dir.display());
            return None;
        }
        let group = Self {
            dir,
            v2: limit_file == "memory.max",
        };
        if let Err(e) = std::fs::write(group.dir.join(limit_file), bytes.to_string()) {
            eprintln!("cannot limit {}: {e}", group.dir.display());
            return None;
        }
        Some(group)
    }

    /// How many processes in the group the kernel's OOM killer has killed
    /// (v2 `memory.events`, v1 `memory.oom_control`); `None` if the kernel
    /// does not say.
    pub fn oom_kills(&self) -> Option<u64> {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let text = std::fs::read_to_string(self.dir.join(file)).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// The group's peak memory use (v2 `memory.peak`, v1
    /// `memory.max_usage_in_bytes`), if the kernel keeps it.
    pub fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file)).ok()?.trim().parse().ok()
    }

    /// Write a PID here to move that process into the group.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// A shell script that joins the group and runs `program` with its
    /// arguments: pass it where a test takes the binary to run.
    pub fn wrap(&self, program: &Path, dir: &Path) -> PathBuf {
        let script = dir.join(format!("in-cgroup-{}", crate::scenario::rand_suffix()));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho $$ > '{}'\nexec '{}' \"$@\"\n",
                self.procs().display(),
                program.display()
            ),
        )
        .expect("writing the cgroup wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once the test's processes exited; retry briefly if not yet.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("left cgroup {} behind", self.dir.display());
    }
}
