//! How many Trivy processes the worker's container can hold at once. A
//! scan of a real image costs 100–500 MiB, so on a worker pod with a memory
//! limit the core count alone would get it OOM-killed; the CPU quota is
//! already in `available_parallelism` (std reads cgroup `cpu.max`).

use std::path::Path;

/// Memory kept for the worker itself (policy engine, CRI client, report).
const WORKER_RESERVE: u64 = 256 << 20;
/// What a Trivy process uses beyond its Go heap limit (runtime, mappings).
const SCAN_OVERHEAD: u64 = 64 << 20;
/// cgroup v1 writes "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

/// The memory limit of this process's cgroup (v2 `memory.max` or v1
/// `memory.limit_in_bytes`), the smallest along its ancestors; `None` when
/// there is none.
pub fn memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    memory_limit_in(Path::new("/sys/fs/cgroup"), &cgroups)
}

/// [`memory_limit`] with the cgroup filesystem at `root` and the text of
/// `/proc/self/cgroup`.
pub fn memory_limit_in(root: &Path, proc_cgroup: &str) -> Option<u64> {
    let mut limits = Vec::new();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (dir, file) = if controllers.is_empty() {
            (root.to_owned(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        // The path and each ancestor: a limit anywhere above applies too.
        let mut at = Some(Path::new(path.trim()));
        while let Some(p) = at {
            let rel = p.strip_prefix("/").unwrap_or(p);
            if let Some(limit) = read_limit(&dir.join(rel).join(file)) {
                limits.push(limit);
            }
            at = p.parent();
        }
    }
    limits.into_iter().min()
}

fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let n: u64 = text.trim().parse().ok()?;
    (n < V1_UNLIMITED).then_some(n)
}

/// Trivy processes at once: one per core, and no more than the memory
/// limit holds at `per_scan` (GOMEMLIMIT) each after the worker's own
/// share; at least one.
pub fn scan_concurrency(cores: usize, memory_limit: Option<u64>, per_scan: u64) -> usize {
    let by_memory = memory_limit.map_or(usize::MAX, |limit| {
        let each = per_scan.saturating_add(SCAN_OVERHEAD).max(1);
        usize::try_from(limit.saturating_sub(WORKER_RESERVE) / each).unwrap_or(usize::MAX)
    });
    cores.min(by_memory).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_limit_along_the_hierarchy_counts() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, file: &str, text: &str| {
            let dir = root.path().join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), text).unwrap();
        };
        // v2: the pod's limit is above the container's "max".
        write("kubepods/pod1", "memory.max", "1073741824\n");
        write("kubepods/pod1/ctr", "memory.max", "max\n");
        assert_eq!(memory_limit_in(root.path(), "0::/kubepods/pod1/ctr\n"), Some(1 << 30));
        // v1: the unlimited marker is no limit.
        write("memory/a", "memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(memory_limit_in(root.path(), "4:memory:/a\n1:cpu:/a\n"), None);
        write("memory/a/b", "memory.limit_in_bytes", "2147483648\n");
        assert_eq!(memory_limit_in(root.path(), "4:memory:/a/b\n"), Some(2 << 30));
        assert_eq!(memory_limit_in(root.path(), "garbage\n"), None);
    }

    #[test]
    fn concurrency_is_bounded_by_cores_and_by_memory() {
        let per_scan = 512 << 20;
        assert_eq!(scan_concurrency(8, None, per_scan), 8);
        // 2 GiB: 1.75 GiB after the worker's share, 576 MiB a scan: 3.
        assert_eq!(scan_concurrency(8, Some(2 << 30), per_scan), 3);
        assert_eq!(scan_concurrency(2, Some(2 << 30), per_scan), 2);
        assert_eq!(scan_concurrency(8, Some(300 << 20), per_scan), 1, "at least one");
        assert_eq!(scan_concurrency(0, None, per_scan), 1);
    }
}
