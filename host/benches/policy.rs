//! P1: the default policy's `decide` as Wasm against the same logic native.
//! P2: reload latency (cold compile and cache hit) and 100 swaps under load.
//!
//! Run with `just bench`. Every ratio compares two measurements of this run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scour::policy::{
    ArtifactCache, Limits, LoadedPolicy, PolicyEngine, PolicyHandle, PolicyWatcher, Poll, WatchTarget,
    embedded_default_policy,
};
use scour_testkit::guests::hostile_guest;
use scour_testkit::nodes::synthetic_node;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<R>(iterations: usize, mut f: impl FnMut() -> R) -> Duration {
    // One warm-up call, then the median of the rest.
    std::hint::black_box(f());
    median(
        (0..iterations)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn p1() {
    println!(
        "P1  default policy decide: Wasm (fresh store per call, ABI both ways, answer checks) vs the same logic native"
    );
    println!("    floor: a policy that reads every image and answers nothing, the least any policy can cost");
    println!(
        "    {:<8} {:>10} {:>10} {:>7}   {:>10} {:>7}",
        "images", "native", "wasm", "ratio", "floor", "ratio"
    );
    let engine = PolicyEngine::new(Limits::production(), None).unwrap();
    let policy = LoadedPolicy::load(&engine, embedded_default_policy(), "default", "").unwrap();
    let floor_policy = LoadedPolicy::load(&engine, &hostile_guest("silent"), "silent", "").unwrap();
    for (count, iterations) in [(1_000u64, 60), (10_000, 15)] {
        let mut node = synthetic_node(count);
        // Both sides start from the same input and do the same work: match
        // the exclusion and ImageList patterns (the host does this for every
        // guest call), then decide.
        let native = time(iterations, || {
            scour_policy_sdk::annotate(&node.context, &mut node.images).unwrap();
            scour_default_policy::decide("", &node.context, &node.images).unwrap()
        });
        let wasm = time(iterations, || policy.decide(&node.context, &node.images).unwrap());
        let floor = time(iterations, || floor_policy.decide(&node.context, &node.images).unwrap());
        let a = scour_default_policy::decide("", &node.context, &node.images).unwrap();
        let b = policy.decide(&node.context, &node.images).unwrap().decisions;
        assert_eq!(a, b, "Wasm and native must agree");
        let ratio = |d: Duration| d.as_secs_f64() / native.as_secs_f64();
        println!(
            "    {:<8} {:>10} {:>10} {:>6.2}x   {:>10} {:>6.2}x   (target <= 3x)",
            count,
            ms(native),
            ms(wasm),
            ratio(wasm),
            ms(floor),
            ratio(floor),
        );
    }
}

fn p2() {
    println!(
        "P2  reload latency, file change to serving (read, hash, compile or cache hit, type-check, validate, probe, swap)"
    );
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.wasm");
    let versions = [embedded_default_policy().to_vec(), hostile_guest("remove_all")];

    let measure = |cache: Option<ArtifactCache>, rounds: usize| {
        let engine = PolicyEngine::new(Limits::production(), cache).unwrap();
        std::fs::write(&policy_path, &versions[0]).unwrap();
        let first = LoadedPolicy::load(&engine, &versions[0], "v0", "").unwrap();
        let handle = Arc::new(PolicyHandle::new(first));
        let target = WatchTarget {
            policy: policy_path.clone(),
            settings: None,
            cases: Vec::new(),
            pin: None,
        };
        let mut watcher = PolicyWatcher::new(handle, target);
        let mut times = Vec::new();
        for i in 1..=rounds {
            std::fs::write(&policy_path, &versions[i % 2]).unwrap();
            let t = Instant::now();
            assert!(matches!(watcher.poll_once(), Poll::Swapped { .. }));
            times.push(t.elapsed());
        }
        times
    };
    let cold = median(measure(None, 6));
    let cache = ArtifactCache::new(dir.path().join("cache"));
    measure(Some(cache.clone()), 2); // populate the cache
    let cached = median(measure(Some(cache), 20));
    println!("    {:<30} {:>12}   (target <= 1 s)", "cold compile", ms(cold));
    println!(
        "    {:<30} {:>12}   (target <= 50 ms; {:.1}x faster than cold)",
        "cache hit",
        ms(cached),
        cold.as_secs_f64() / cached.as_secs_f64()
    );
    println!("    plus the watcher's poll interval (default 10 s) before the change is seen");

    // 100 swaps while two threads decide on a 1 000-image node.
    let engine = PolicyEngine::new(Limits::production(), Some(ArtifactCache::new(dir.path().join("cache")))).unwrap();
    let handle = Arc::new(PolicyHandle::new(
        LoadedPolicy::load(&engine, &versions[0], "v0", "").unwrap(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (handle, stop, ok, failed) = (handle.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let node = synthetic_node(1_000);
                while !stop.load(Ordering::Relaxed) {
                    match handle.current().decide(&node.context, &node.images) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let t = Instant::now();
    for i in 1..=100 {
        handle.reload(&versions[i % 2], "swap", "", &[]).unwrap();
    }
    let swap_time = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    readers.into_iter().for_each(|r| r.join().unwrap());
    println!(
        "    100 swaps under decide load   {:>12}   failed decisions: {} of {}",
        ms(swap_time / 100),
        failed.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed)
    );
}

fn main() {
    // For `perf record` with SCOUR_POLICY_PROFILER=perfmap: only the Wasm
    // decide loop, nothing else in the profile.
    if std::env::var_os("SCOUR_BENCH_WASM_LOOP").is_some() {
        let engine = PolicyEngine::new(Limits::production(), None).unwrap();
        let policy = LoadedPolicy::load(&engine, embedded_default_policy(), "default", "").unwrap();
        let node = synthetic_node(1000);
        for _ in 0..2000 {
            std::hint::black_box(policy.decide(&node.context, &node.images).unwrap());
        }
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument selects P1 or P2.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("P1") {
        p1();
    }
    if wanted("P2") {
        p2();
    }
}
