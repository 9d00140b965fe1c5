//! Synthetic node snapshots for policy tests and benchmarks.

use scour_policy_sdk::{Context, Finding, Image, OsInfo, ScanOutcome, ScanReport, Severity, Snapshot};

/// A fixed "now" so that results do not depend on the clock.
pub const NOW: u64 = 1_767_225_600;

/// A deterministic id for image number `n`.
pub fn image_id(n: u64) -> String {
    format!("sha256:{n:064x}")
}

/// A small node: a vulnerable, a clean, an EOL, an in-use and a pinned image.
pub fn small_node() -> Snapshot {
    let scanned = |os: Option<(&str, &str, bool)>, vulns: &[(Severity, bool)]| {
        ScanOutcome::Scanned(ScanReport::new(
            os.map(|(family, name, eol)| OsInfo {
                family: family.into(),
                name: name.into(),
                eol,
            }),
            vulns
                .iter()
                .enumerate()
                .map(|(i, &(severity, fixed))| Finding {
                    id: format!("CVE-2024-{i:04}"),
                    pkg: "musl".into(),
                    installed: "1.1.24-r2".into(),
                    fixed: fixed.then(|| "1.1.24-r3".into()),
                    severity,
                })
                .collect(),
        ))
    };
    let image = |n: u64, tag: &str, scan: ScanOutcome| Image {
        id: image_id(n),
        tags: vec![tag.to_owned()],
        size: 5 << 20,
        first_seen: NOW - 86_400,
        scan,
        ..Default::default()
    };
    let mut in_use = image(
        4,
        "docker.io/library/nginx:1.25",
        scanned(None, &[(Severity::Critical, true)]),
    );
    in_use.in_use = true;
    let mut pinned = image(5, "registry.k8s.io/pause:3.9", ScanOutcome::NotScanned);
    pinned.pinned = true;
    Snapshot {
        context: Context {
            node: "node-a".into(),
            now: NOW,
            ..Context::default()
        },
        images: vec![
            image(
                1,
                "docker.io/library/alpine:3.12",
                scanned(Some(("alpine", "3.12.0", false)), &[(Severity::High, true)]),
            ),
            image(
                2,
                "docker.io/library/alpine:3.20",
                scanned(Some(("alpine", "3.20.0", false)), &[]),
            ),
            image(
                3,
                "docker.io/library/alpine:3.5",
                scanned(Some(("alpine", "3.5.2", true)), &[]),
            ),
            in_use,
            pinned,
        ],
    }
}

/// `count` unused images with 0–30 findings each, deterministically mixed:
/// about a third clean, some EOL, some failed scans.
pub fn synthetic_node(count: u64) -> Snapshot {
    let mut rng = count.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64: fast, deterministic, good enough for fixtures.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let images = (0..count)
        .map(|n| {
            let r = next();
            let findings = (r % 31) as usize;
            let scan = if r % 17 == 0 {
                ScanOutcome::Failed("trivy: context deadline exceeded".into())
            } else {
                ScanOutcome::Scanned(ScanReport::new(
                    Some(OsInfo {
                        family: "alpine".into(),
                        name: format!("3.{}.0", r % 21),
                        eol: r % 5 == 0,
                    }),
                    (0..findings)
                        .map(|i| Finding {
                            id: format!("CVE-2025-{:05}", (r as usize + i) % 100_000),
                            pkg: format!("pkg{}", i % 7),
                            installed: "1.0.0-r0".into(),
                            fixed: (i % 3 != 0).then(|| "1.0.1-r0".into()),
                            severity: Severity::ALL[(next() % 5) as usize],
                        })
                        .collect(),
                ))
            };
            Image {
                id: image_id(n),
                tags: vec![format!(
                    "registry.example.com/team{}/app{n}:v{}.{}.0",
                    n % 13,
                    r % 4,
                    r % 10
                )],
                digests: vec![format!("registry.example.com/team{}/app{n}@sha256:{:064x}", n % 13, r)],
                size: 1 << 20 | (r % (300 << 20)),
                pinned: false,
                in_use: r % 11 == 0,
                first_seen: NOW - (r % 90) * 86_400,
                scan,
                excluded_by: None,
                listed_by: None,
            }
        })
        .collect();
    Snapshot {
        context: Context {
            node: "bench-node".into(),
            now: NOW,
            exclusions: vec![
                "registry.example.com/team3/*".into(),
                "docker.io/library/alpine:*".into(),
            ],
            ..Context::default()
        },
        images,
    }
}
